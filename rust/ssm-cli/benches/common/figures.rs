//! The pure parts of the benchmarks: medians, ratios, the check of a transfer, the markdown
//! table. Unit-tested through `tests/bench_figures.rs` (a bench target has no test harness).
#![allow(dead_code)]

use sha2::{Digest, Sha256};

/// The median of `values` (the mean of the middle two for an even count); `None` when empty or
/// when a value is not a number.
pub fn median(values: &[f64]) -> Option<f64> {
    if values.is_empty() || values.iter().any(|v| v.is_nan()) {
        return None;
    }
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    let mid = v.len() / 2;
    Some(if v.len() % 2 == 1 {
        v[mid]
    } else {
        (v[mid - 1] + v[mid]) / 2.0
    })
}

/// ssmconnect's figure over the plugin's; `None` when either is missing or the plugin's is 0.
pub fn ratio(ssmconnect: Option<f64>, plugin: Option<f64>) -> Option<f64> {
    match (ssmconnect, plugin) {
        (Some(a), Some(b)) if b != 0.0 && a.is_finite() && b.is_finite() => Some(a / b),
        _ => None,
    }
}

/// SHA-256 as lower-case hex.
pub fn sha256_hex(data: &[u8]) -> String {
    let digest = Sha256::digest(data);
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

/// What a transfer must deliver: its length and SHA-256.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Expected {
    /// Bytes.
    pub len: u64,
    /// SHA-256, lower-case hex.
    pub sha256: String,
}

impl Expected {
    /// What `data` is.
    pub fn of(data: &[u8]) -> Self {
        Self {
            len: data.len() as u64,
            sha256: sha256_hex(data),
        }
    }

    /// Fails unless what arrived (`len` bytes hashing to `sha256`) is what was sent.
    pub fn check(&self, len: u64, sha256: &str) -> Result<(), String> {
        if len != self.len {
            return Err(format!("{len} bytes arrived, {} were sent", self.len));
        }
        if !sha256.eq_ignore_ascii_case(&self.sha256) {
            return Err(format!(
                "SHA-256 {sha256} arrived, {} was sent ({len} bytes each)",
                self.sha256
            ));
        }
        Ok(())
    }
}

/// How a figure is read: higher or lower is better.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Better {
    /// Throughput.
    Higher,
    /// Latency, CPU, memory.
    Lower,
}

/// One row of the comparison: a figure, each client's runs, or why it was not measured.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Row {
    /// What is measured, with its unit.
    pub figure: String,
    /// Which way is better.
    pub better: Better,
    /// ssmconnect's value of every run.
    pub ssmconnect: Side,
    /// The plugin's value of every run.
    pub plugin: Side,
}

/// One client's values of a figure.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Side {
    /// One value per run.
    pub runs: Vec<f64>,
    /// Why there is no value (not run); empty when measured.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub not_run: Option<String>,
    /// Runs that failed, and why; their values are not in `runs`.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub failed: Vec<String>,
}

impl Side {
    /// The median of the runs.
    pub fn median(&self) -> Option<f64> {
        if self.not_run.is_some() {
            return None;
        }
        median(&self.runs)
    }

    /// The table cell: the median and the run count, or why there is none.
    pub fn cell(&self) -> String {
        match (&self.not_run, self.median()) {
            (Some(why), _) => format!("not run ({why})"),
            (None, Some(m)) if self.failed.is_empty() => format!("{} (n={})", number(m), self.runs.len()),
            (None, Some(m)) => format!("{} (n={}; {} failed)", number(m), self.runs.len(), self.failed.len()),
            (None, None) if !self.failed.is_empty() => format!("failed ({})", self.failed.len()),
            (None, None) => "–".to_owned(),
        }
    }
}

impl Row {
    /// ssmconnect's median over the plugin's.
    pub fn ratio(&self) -> Option<f64> {
        ratio(self.ssmconnect.median(), self.plugin.median())
    }
}

/// A figure with three significant digits (at least one decimal under 100), thousands apart.
pub fn number(v: f64) -> String {
    let a = v.abs();
    let decimals = if a == 0.0 || a >= 100.0 {
        0
    } else if a >= 10.0 {
        1
    } else if a >= 1.0 {
        2
    } else {
        // Three significant digits below 1.
        (2 - a.log10().floor() as i32).clamp(2, 6) as usize
    };
    let s = format!("{v:.decimals$}");
    let (int, frac) = s.split_once('.').map_or((s.as_str(), None), |(i, f)| (i, Some(f)));
    let (sign, digits) = int.strip_prefix('-').map_or(("", int), |d| ("-", d));
    let mut grouped = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            grouped.push(',');
        }
        grouped.push(c);
    }
    match frac {
        Some(f) => format!("{sign}{grouped}.{f}"),
        None => format!("{sign}{grouped}"),
    }
}

/// The comparison as a markdown table: figure, ssmconnect, plugin, ratio (ssmconnect / plugin,
/// with whether that is better for ssmconnect).
pub fn markdown_table(rows: &[Row]) -> String {
    let mut out = String::from("| figure | ssmconnect | plugin | ratio ssmconnect / plugin |\n|---|---:|---:|---:|\n");
    for row in rows {
        let ratio = match row.ratio() {
            Some(r) => {
                let better = match row.better {
                    Better::Higher => r > 1.0,
                    Better::Lower => r < 1.0,
                };
                let verdict = if (r - 1.0).abs() < 0.05 {
                    "about even"
                } else if better {
                    "ssmconnect better"
                } else {
                    "plugin better"
                };
                format!("{} ({verdict})", number(r))
            }
            None => "–".to_owned(),
        };
        out.push_str(&format!(
            "| {} | {} | {} | {} |\n",
            row.figure.replace('|', "\\|"),
            row.ssmconnect.cell(),
            row.plugin.cell(),
            ratio
        ));
    }
    out
}

/// The value of `field` (`VmRSS`, `VmHWM`, …) in a /proc/<pid>/status text, in KiB.
pub fn parse_status_kib(status: &str, field: &str) -> Option<u64> {
    status.lines().find_map(|l| {
        let rest = l.strip_prefix(field)?.strip_prefix(':')?;
        rest.trim().trim_end_matches("kB").trim().parse().ok()
    })
}

/// The time a thread has run, in nanoseconds: the first field of /proc/<pid>/task/<tid>/schedstat
/// (the scheduler's `sum_exec_runtime`, which utime + stime are derived from, but not rounded to
/// clock ticks).
pub fn parse_schedstat_ns(schedstat: &str) -> Option<u64> {
    schedstat.split_whitespace().next()?.parse().ok()
}

/// CPU seconds a process used between two samples of it: `ticks_s` its utime + stime
/// (/proc/<pid>/stat, in seconds, counted in clock ticks: 10 ms at the usual 100 Hz, so a
/// difference can be off by two of them), `threads` the run time of each of its threads then,
/// by thread id, in ns. The threads' sum is exact and is used while it can be trusted: every
/// thread of the first sample still there in the second (a thread that ended took its time with
/// it) and the sum not below the ticks' figure by more than their rounding (a thread that came
/// and went between the samples). Otherwise the ticks' figure.
pub fn cpu_seconds_between(
    before: (f64, &std::collections::BTreeMap<u32, u64>),
    after: (f64, &std::collections::BTreeMap<u32, u64>),
    tick_s: f64,
) -> f64 {
    let ticks = after.0 - before.0;
    if before.1.keys().any(|tid| !after.1.contains_key(tid)) {
        return ticks;
    }
    let ns: u64 = after
        .1
        .iter()
        .map(|(tid, &t)| t.saturating_sub(before.1.get(tid).copied().unwrap_or(0)))
        .sum();
    let exact = ns as f64 / 1e9;
    if exact < ticks - 2.0 * tick_s { ticks } else { exact }
}

/// utime + stime (fields 14 and 15, in clock ticks) of a /proc/<pid>/stat line; the command
/// name in parentheses may hold spaces and parentheses itself.
pub fn parse_stat_cpu_ticks(stat: &str) -> Option<u64> {
    let after = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = after.split_whitespace().collect();
    // After the name: field 3 (state) is fields[0], so field n is fields[n - 3].
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(utime + stime)
}
