//! SIGTERM and SIGHUP to `ssmconnect` in every mode end the session at the service
//! (TerminateSession) and exit with 128 + the signal number (issue 12 item 5). Without handlers
//! the process died at once and the session stayed open, counting against the user's quotas
//! until the service timed it out.

mod common;

use std::process::Stdio;
use std::time::Duration;

use common::*;
use ssm_emulator::{Config, Emulator};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// An emulator whose lost clients keep their sessions for a minute: only TerminateSession
/// ends them sooner.
async fn patient_emulator() -> Emulator {
    emulator(Config {
        reconnect_grace_ms: 60_000,
        shell_start_delay_ms: 200,
        ..Config::default()
    })
    .await
}

/// Waits until the emulator saw exactly one TerminateSession for its only session.
async fn terminated_once(emu: &Emulator, stderr: &str) {
    let calls = || emu.sessions().first().map_or(0, |s| s.terminate_calls);
    assert!(
        wait_until(Duration::from_secs(10), || calls() > 0).await,
        "no TerminateSession within 10 s: {:?}\nstderr: {stderr}",
        emu.sessions()
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(calls(), 1, "TerminateSession calls: {:?}", emu.sessions());
    assert_eq!(emu.sessions().len(), 1, "{:?}", emu.sessions());
}

/// `ssmconnect shell` with stdin piped: runs until the remote shell answered, then gets `sig`.
async fn shell_gets(sig: i32) {
    let home = Home::new();
    let emu = patient_emulator().await;
    let mut cmd = ssmconnect(&home);
    cmd.arg("--endpoint-url")
        .arg(emu.endpoint())
        .args(["shell", TARGET])
        .stdin(Stdio::piped());
    let mut proc = Proc::spawn(&mut cmd, "ssmconnect shell");
    let mut stdin = proc.take_stdin();
    let mut out = Lines::new(proc.take_stdout());
    let stderr = tokio::spawn(read_all(proc.take_stderr(), 60));
    stdin.write_all(b"echo ready-$((6*7))\n").await.expect("write stdin");
    out.until(30, |l| l.contains("ready-42") && !l.contains("$((")).await;
    proc.signal(sig);
    let code = proc.exit_code(30).await;
    let stderr = String::from_utf8_lossy(&within(10, "stderr", stderr).await.unwrap()).into_owned();
    assert_eq!(code, 128 + sig, "exit code after signal {sig}; stderr: {stderr}");
    terminated_once(&emu, &stderr).await;
    drop(stdin);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_to_a_shell_terminates_the_session() {
    shell_gets(libc::SIGTERM).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_to_a_shell_terminates_the_session() {
    shell_gets(libc::SIGHUP).await;
}

/// `ssmconnect forward`: runs until it listens, then gets `sig`.
async fn forward_gets(sig: i32) {
    let home = Home::new();
    let emu = patient_emulator().await;
    let echo = echo_server().await;
    let mut cmd = ssmconnect(&home);
    cmd.arg("--endpoint-url")
        .arg(emu.endpoint())
        .args(["forward", TARGET, &echo.to_string(), "--local-port", "0"]);
    let mut proc = Proc::spawn(&mut cmd, "ssmconnect forward");
    let mut out = Lines::new(proc.take_stdout());
    let stderr = tokio::spawn(read_all(proc.take_stderr(), 60));
    let line = out.until(30, |l| l.starts_with("Port ")).await;
    let port: u16 = line
        .split_whitespace()
        .nth(1)
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("unexpected line {line:?}"));
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    assert_eq!(echo_through(addr, b"ping".to_vec()).await, b"ping");
    proc.signal(sig);
    let code = proc.exit_code(30).await;
    let stderr = String::from_utf8_lossy(&within(10, "stderr", stderr).await.unwrap()).into_owned();
    assert_eq!(code, 128 + sig, "exit code after signal {sig}; stderr: {stderr}");
    assert_closed(addr, 5).await;
    terminated_once(&emu, &stderr).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_to_a_forward_terminates_the_session() {
    forward_gets(libc::SIGTERM).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_to_a_forward_terminates_the_session() {
    forward_gets(libc::SIGHUP).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_to_ssh_proxy_terminates_the_session() {
    let home = Home::new();
    let emu = patient_emulator().await;
    let server = greeting_echo_server(b"SSH-2.0-Test\r\n").await;
    let mut cmd = ssmconnect(&home);
    cmd.arg("--endpoint-url")
        .arg(emu.endpoint())
        .args(["ssh-proxy", &format!("{TARGET}:{server}")])
        .stdin(Stdio::piped());
    let mut proc = Proc::spawn(&mut cmd, "ssmconnect ssh-proxy");
    let _stdin = proc.take_stdin();
    let mut stdout = proc.take_stdout();
    let stderr = tokio::spawn(read_all(proc.take_stderr(), 60));
    let mut first = [0u8; 14];
    within(20, "the banner", stdout.read_exact(&mut first))
        .await
        .expect("read banner");
    proc.signal(libc::SIGTERM);
    let code = proc.exit_code(30).await;
    let stderr = String::from_utf8_lossy(&within(10, "stderr", stderr).await.unwrap()).into_owned();
    assert_eq!(code, 128 + libc::SIGTERM, "stderr: {stderr}");
    terminated_once(&emu, &stderr).await;
}

/// The six-argument plugin contract for a session the test started with `document` and
/// `parameters`; returns the process, with stdin piped.
async fn plugin(home: &Home, emu: &Emulator, document: &str, parameters: serde_json::Value) -> Proc {
    let response = start_session_raw(emu.addr(), document, parameters.clone()).await;
    let json = serde_json::json!({
        "SessionId": response["SessionId"],
        "TokenValue": response["TokenValue"],
        "StreamUrl": response["StreamUrl"],
    })
    .to_string();
    let request = serde_json::json!({ "Target": TARGET, "Parameters": parameters }).to_string();
    let mut cmd = ssmconnect(home);
    cmd.arg(&json)
        .args(["us-east-1", "StartSession", "", &request, &emu.endpoint()])
        .stdin(Stdio::piped());
    Proc::spawn(&mut cmd, "ssmconnect (plugin mode)")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_to_the_plugin_in_a_stream_session_terminates_it() {
    let home = Home::new();
    let emu = patient_emulator().await;
    let server = greeting_echo_server(b"SSH-2.0-Test\r\n").await;
    let params = serde_json::json!({ "portNumber": [server.to_string()] });
    let mut proc = plugin(&home, &emu, "AWS-StartSSHSession", params).await;
    let _stdin = proc.take_stdin();
    let mut stdout = proc.take_stdout();
    let stderr = tokio::spawn(read_all(proc.take_stderr(), 60));
    let mut first = [0u8; 14];
    within(20, "the banner", stdout.read_exact(&mut first))
        .await
        .expect("read banner");
    proc.signal(libc::SIGTERM);
    let code = proc.exit_code(30).await;
    let stderr = String::from_utf8_lossy(&within(10, "stderr", stderr).await.unwrap()).into_owned();
    assert_eq!(code, 128 + libc::SIGTERM, "stderr: {stderr}");
    terminated_once(&emu, &stderr).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_to_the_plugin_in_a_port_session_terminates_it() {
    let home = Home::new();
    let emu = patient_emulator().await;
    let echo = echo_server().await;
    let local = free_port();
    let params = serde_json::json!({
        "portNumber": [echo.to_string()],
        "localPortNumber": [local.to_string()],
    });
    let mut proc = plugin(&home, &emu, "AWS-StartPortForwardingSession", params).await;
    let mut out = Lines::new(proc.take_stdout());
    let stderr = tokio::spawn(read_all(proc.take_stderr(), 60));
    out.until(30, |l| l == "Waiting for connections...").await;
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], local));
    assert_eq!(echo_through(addr, b"ping".to_vec()).await, b"ping");
    proc.signal(libc::SIGHUP);
    let code = proc.exit_code(30).await;
    let stderr = String::from_utf8_lossy(&within(10, "stderr", stderr).await.unwrap()).into_owned();
    assert_eq!(code, 128 + libc::SIGHUP, "stderr: {stderr}");
    assert_closed(addr, 5).await;
    terminated_once(&emu, &stderr).await;
}
