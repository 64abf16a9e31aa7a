//! `ssmconnect` against an emulator that serves TLS as AWS does (`https://`, `wss://`): the CA
//! is trusted when given with `--ca-bundle` or `AWS_CA_BUNDLE`, and not otherwise.

mod common;

use std::net::SocketAddr;

use common::*;
use ssm_emulator::Config;

/// Runs a command to completion (bounded) and returns (code, stdout, stderr).
async fn run(cmd: &mut tokio::process::Command, name: &str) -> (i32, String, String) {
    let mut proc = Proc::spawn(cmd, name);
    let stdout = tokio::spawn(read_all(proc.take_stdout(), 60));
    let stderr = tokio::spawn(read_all(proc.take_stderr(), 60));
    let code = proc.exit_code(45).await;
    let stdout = String::from_utf8(stdout.await.unwrap()).expect("utf-8 stdout");
    let stderr = String::from_utf8(stderr.await.unwrap()).expect("utf-8 stderr");
    (code, stdout, stderr)
}

/// `ssmconnect forward` with `setup` applied; checks that data goes through, then stops it.
async fn forward_works(emu: &ssm_emulator::Emulator, setup: impl FnOnce(&mut tokio::process::Command)) {
    let home = Home::new();
    let echo = echo_server().await;
    let mut cmd = ssmconnect(&home);
    setup(&mut cmd);
    cmd.arg("--endpoint-url")
        .arg(emu.endpoint())
        .args(["forward", TARGET, &echo.to_string(), "--local-port", "0"]);
    let mut proc = Proc::spawn(&mut cmd, "ssmconnect forward (TLS)");
    let mut out = Lines::new(proc.take_stdout());
    let stderr_task = tokio::spawn(read_all(proc.take_stderr(), 60));
    let line = out.until(30, |l| l.starts_with("Port ")).await;
    let port: u16 = line
        .strip_prefix("Port ")
        .and_then(|r| r.split_once(' '))
        .and_then(|(p, _)| p.parse().ok())
        .unwrap_or_else(|| panic!("unexpected line {line:?}"));
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let data = random_bytes(64 << 10, 3);
    let back = within(30, "echo through the forward", echo_through(addr, data.clone())).await;
    assert_eq!(sha256_hex(&back), sha256_hex(&data));
    proc.signal(libc::SIGINT);
    let code = proc.exit_code(10).await;
    let stderr = String::from_utf8_lossy(&within(10, "stderr", stderr_task).await.unwrap()).into_owned();
    assert_eq!(code, 0, "exit code after SIGINT; stderr: {stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forward_over_tls_trusts_the_ca_from_the_flag_or_the_environment() {
    let (emu, ca) = tls_emulator(Config::default()).await;
    assert!(emu.endpoint().starts_with("https://"));
    forward_works(&emu, |cmd| {
        cmd.arg("--ca-bundle").arg(ca.path());
    })
    .await;
    forward_works(&emu, |cmd| {
        cmd.env("AWS_CA_BUNDLE", ca.path());
    })
    .await;
    assert_eq!(emu.stats().sessions_started, 2);
    assert!(emu.stats().connections >= 2, "{:?}", emu.stats());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_the_ca_or_with_garbage_the_helper_exits_with_one_clear_line() {
    let (emu, _ca) = tls_emulator(Config::default()).await;
    let home = Home::new();

    let mut cmd = ssmconnect(&home);
    cmd.arg("--endpoint-url")
        .arg(emu.endpoint())
        .args(["forward", TARGET, "80", "--local-port", "0"]);
    let (code, stdout, stderr) = run(&mut cmd, "ssmconnect forward (untrusted)").await;
    assert_eq!(code, 4, "an API call failed; stderr: {stderr}");
    assert_eq!(stderr.lines().count(), 1, "one line on stderr: {stderr:?}");
    assert!(stderr.contains("TLS: ") && stderr.contains("certificate"), "{stderr:?}");
    assert!(stderr.contains("--ca-bundle"), "says what to do: {stderr:?}");
    assert!(stdout.is_empty(), "{stdout:?}");

    let garbage = CaFile::new("garbage.pem", b"not a certificate\n");
    let mut cmd = ssmconnect(&home);
    cmd.arg("--endpoint-url")
        .arg(emu.endpoint())
        .arg("--ca-bundle")
        .arg(garbage.path())
        .args(["forward", TARGET, "80", "--local-port", "0"]);
    let (code, _stdout, stderr) = run(&mut cmd, "ssmconnect forward (garbage CA bundle)").await;
    assert_eq!(code, 3, "a configuration error; stderr: {stderr}");
    assert_eq!(stderr.lines().count(), 1, "one line on stderr: {stderr:?}");
    assert!(stderr.contains(garbage.as_str()), "names the file: {stderr:?}");
    assert_eq!(emu.stats().sessions_started, 0);
}
