//! The unit tests of the benchmarks' pure parts (medians, ratios, the transfer check, the
//! table, /proc parsing): a bench target has no test harness, so they run from here.

#[path = "../benches/common/figures.rs"]
mod figures;

use figures::*;

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
fn cpu_time_comes_from_the_threads_run_times_when_they_account_for_it() {
    use std::collections::BTreeMap;
    assert_eq!(parse_schedstat_ns("183000421 52000 97\n"), Some(183_000_421));
    assert_eq!(parse_schedstat_ns(""), None);
    let tick = 0.01;
    let before = BTreeMap::from([(10, 1_000_000_000), (11, 500_000_000)]);
    // 0.183 s and 0.002 s run since, and a thread started since with 0.004 s: 0.189 s, where
    // the ticks said 0.18 (or 0.19, 0.20: rounding at both ends).
    let after = BTreeMap::from([(10, 1_183_000_000), (11, 502_000_000), (12, 4_000_000)]);
    let exact = cpu_seconds_between((1.50, &before), (1.68, &after), tick);
    assert!((exact - 0.189).abs() < 1e-9, "{exact}");
    // A thread of the first sample has ended, taking its time with it: the ticks decide.
    let ended = BTreeMap::from([(10, 1_183_000_000)]);
    let ticks = cpu_seconds_between((1.50, &before), (1.70, &ended), tick);
    assert!((ticks - 0.20).abs() < 1e-9, "{ticks}");
    // The threads' sum far below the ticks (a thread came and went between the samples): the
    // ticks decide; within two ticks of them, the sum stands.
    let far = cpu_seconds_between((1.50, &before), (1.90, &after), tick);
    assert!((far - 0.40).abs() < 1e-9, "{far}");
    let near = cpu_seconds_between((1.50, &before), (1.70, &after), tick);
    assert!((near - 0.189).abs() < 1e-9, "{near}");
}

#[test]
fn numbers_keep_three_significant_digits() {
    assert_eq!(number(1234.6), "1,235");
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
                failed: vec![],
            },
            plugin: Side {
                runs: vec![5.0, 10.0, 15.0],
                not_run: None,
                failed: vec![],
            },
        },
        Row {
            figure: "echo (ms)".into(),
            better: Better::Lower,
            ssmconnect: Side {
                runs: vec![1.0, 1.0, 1.0],
                not_run: None,
                failed: vec![],
            },
            plugin: Side {
                runs: vec![],
                not_run: Some("no plugin given".into()),
                failed: vec![],
            },
        },
        Row {
            figure: "latency (ms)".into(),
            better: Better::Lower,
            ssmconnect: Side {
                runs: vec![4.0, 4.0, 4.0],
                not_run: None,
                failed: vec![],
            },
            plugin: Side {
                runs: vec![2.0, 2.0, 2.0],
                not_run: None,
                failed: vec![],
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
    assert_eq!(
        lines[4],
        "| latency (ms) | 4.00 (n=3) | 2.00 (n=3) | 2.00 (plugin better) |"
    );
}

#[test]
fn a_failed_run_is_left_out_of_the_median_and_counted() {
    let side = Side {
        runs: vec![2.0, 4.0],
        not_run: None,
        failed: vec!["no echo within 90 s".into()],
    };
    assert_eq!(side.median(), Some(3.0));
    assert_eq!(side.cell(), "3.00 (n=2; 1 failed)");
    let all_failed = Side {
        runs: vec![],
        not_run: None,
        failed: vec!["a".into(), "b".into()],
    };
    assert_eq!(all_failed.cell(), "failed (2)");
}
