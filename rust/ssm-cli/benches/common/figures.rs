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
    /// Why there is no value (not run, failed); empty when measured.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub not_run: Option<String>,
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
            (None, Some(m)) => format!("{} (n={})", number(m), self.runs.len()),
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
    let mut out = String::from(
        "| figure | ssmconnect | plugin | ratio ssmconnect / plugin |\n|---|---:|---:|---:|\n",
    );
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_of_odd_and_even_counts() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(&[4.0, 1.0, 3.0, 2.0]), Some(2.5));
        assert_eq!(median(&[7.0]), Some(7.0));
        assert_eq!(median(&[]), None);
        assert_eq!(median(&[1.0, f64::NAN]), None);
        // Not the mean: an outlier does not move it.
        assert_eq!(median(&[1.0, 2.0, 1000.0]), Some(2.0));
    }

    #[test]
    fn ratio_needs_both_and_a_plugin_figure_above_zero() {
        assert_eq!(ratio(Some(3.0), Some(2.0)), Some(1.5));
        assert_eq!(ratio(Some(3.0), None), None);
        assert_eq!(ratio(None, Some(2.0)), None);
        assert_eq!(ratio(Some(3.0), Some(0.0)), None);
    }

    #[test]
    fn the_check_rejects_a_short_or_different_transfer() {
        let sent = b"the bytes that were sent".to_vec();
        let want = Expected::of(&sent);
        assert_eq!(want.check(sent.len() as u64, &sha256_hex(&sent)), Ok(()));
        // One byte short.
        let short = &sent[..sent.len() - 1];
        assert!(want.check(short.len() as u64, &sha256_hex(short)).is_err());
        // The same length, one byte different.
        let mut changed = sent.clone();
        changed[3] ^= 1;
        let err = want.check(changed.len() as u64, &sha256_hex(&changed)).unwrap_err();
        assert!(err.contains("SHA-256"), "{err}");
        // The digest of the empty string is the known one.
        assert_eq!(
            sha256_hex(b""),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
    }

    #[test]
    fn proc_fields_parse() {
        let status = "Name:\tssmconnect\nVmPeak:\t  20000 kB\nVmHWM:\t   15324 kB\nVmRSS:\t   14888 kB\n";
        assert_eq!(parse_status_kib(status, "VmHWM"), Some(15324));
        assert_eq!(parse_status_kib(status, "VmRSS"), Some(14888));
        assert_eq!(parse_status_kib(status, "VmSwap"), None);
        // A name with a space and a parenthesis; utime 250 and stime 50 ticks.
        let stat = "4242 (a b) c) S 1 4242 4242 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 3 0 99 1000 200";
        assert_eq!(parse_stat_cpu_ticks(stat), Some(300));
        assert_eq!(parse_stat_cpu_ticks("4242 (x) S 1"), None);
    }

    #[test]
    fn numbers_keep_three_significant_digits() {
        assert_eq!(number(1234.5), "1,235");
        assert_eq!(number(1_234_567.0), "1,234,567");
        assert_eq!(number(56.78), "56.8");
        assert_eq!(number(5.678), "5.68");
        assert_eq!(number(0.1234), "0.123");
        assert_eq!(number(0.001234), "0.00123");
        assert_eq!(number(0.0), "0");
        assert_eq!(number(-1500.0), "-1,500");
    }

    #[test]
    fn the_table_has_medians_run_counts_ratios_and_reasons() {
        let rows = vec![
            Row {
                figure: "download (MB/s)".into(),
                better: Better::Higher,
                ssmconnect: Side {
                    runs: vec![10.0, 30.0, 20.0],
                    not_run: None,
                },
                plugin: Side {
                    runs: vec![5.0, 10.0, 15.0],
                    not_run: None,
                },
            },
            Row {
                figure: "echo (ms)".into(),
                better: Better::Lower,
                ssmconnect: Side {
                    runs: vec![1.0, 1.0, 1.0],
                    not_run: None,
                },
                plugin: Side {
                    runs: vec![],
                    not_run: Some("no plugin given".into()),
                },
            },
            Row {
                figure: "latency (ms)".into(),
                better: Better::Lower,
                ssmconnect: Side {
                    runs: vec![4.0, 4.0, 4.0],
                    not_run: None,
                },
                plugin: Side {
                    runs: vec![2.0, 2.0, 2.0],
                    not_run: None,
                },
            },
        ];
        let table = markdown_table(&rows);
        let lines: Vec<&str> = table.lines().collect();
        assert_eq!(lines.len(), 5, "{table}");
        assert_eq!(lines[0], "| figure | ssmconnect | plugin | ratio ssmconnect / plugin |");
        assert_eq!(
            lines[2],
            "| download (MB/s) | 20.0 (n=3) | 10.0 (n=3) | 2.00 (ssmconnect better) |"
        );
        assert_eq!(lines[3], "| echo (ms) | 1.00 (n=3) | not run (no plugin given) | – |");
        assert_eq!(lines[4], "| latency (ms) | 4.00 (n=3) | 2.00 (n=3) | 2.00 (plugin better) |");
    }
}
