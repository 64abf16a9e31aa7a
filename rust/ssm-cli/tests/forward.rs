//! `ssmconnect forward` end to end against the in-process emulator.

mod common;

use std::net::SocketAddr;

use common::*;
use ssm_emulator::Config;

/// Parses `Port N opened for sessionId X.`.
fn opened_port(line: &str) -> Option<(u16, String)> {
    let rest = line.strip_prefix("Port ")?;
    let (port, rest) = rest.split_once(" opened for sessionId ")?;
    Some((port.parse().ok()?, rest.strip_suffix('.')?.to_owned()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forward_moves_data_over_concurrent_connections_and_stops_on_sigint() {
    let home = Home::new();
    let emu = emulator(Config::default()).await;
    let echo = echo_server().await;

    let mut cmd = ssmconnect(&home);
    cmd.env("SSMCONNECT_LOG", "ssm_session=debug,ssmconnect=debug,warn");
    cmd.arg("--endpoint-url")
        .arg(emu.endpoint())
        .args(["forward", TARGET, &echo.to_string(), "--local-port", "0"]);
    let mut proc = Proc::spawn(&mut cmd, "ssmconnect forward");
    let mut out = Lines::new(proc.take_stdout());
    let stderr = proc.take_stderr();
    let stderr_task = tokio::spawn(read_all(stderr, 120));

    let line = out.until(20, |l| l.starts_with("Port ")).await;
    let (port, session_id) = opened_port(&line).unwrap_or_else(|| panic!("unexpected line {line:?}"));
    assert_ne!(port, 0);
    assert!(!session_id.is_empty());
    assert_eq!(out.next(10).await.as_deref(), Some("Waiting for connections..."));
    let addr = SocketAddr::from(([127, 0, 0, 1], port));

    // 4 MiB in all, through 4 connections at once; every echo is checked by digest.
    let tasks: Vec<_> = (0..4u64)
        .map(|i| {
            let data = random_bytes(1 << 20, i + 1);
            let want = sha256_hex(&data);
            tokio::spawn(async move {
                let back = echo_through(addr, data).await;
                assert_eq!(sha256_hex(&back), want, "connection {i} echo differs");
            })
        })
        .collect();
    within(120, "4 MiB through 4 connections", async {
        for t in tasks {
            t.await.expect("transfer task");
        }
    })
    .await;

    let info = emu
        .sessions()
        .into_iter()
        .find(|s| s.session_id == session_id)
        .expect("the emulator knows the session");
    assert_eq!(info.target, TARGET);
    assert_eq!(info.document, "AWS-StartPortForwardingSession");

    proc.signal(libc::SIGINT);
    let code = proc.exit_code(10).await;
    let stderr = String::from_utf8_lossy(&within(10, "stderr", stderr_task).await.unwrap()).into_owned();
    assert_eq!(code, 0, "exit code after SIGINT; stderr: {stderr}");
    assert!(
        !stderr.contains("listening on"),
        "no exposure warning for a loopback listener: {stderr}"
    );
    assert_closed(addr, 5).await;
    // The session is terminated, not left to time out.
    assert!(
        sessions_end(&emu, 10).await,
        "the session is still open 10s after ssmconnect exited: {:?}\nstderr: {stderr}",
        emu.sessions()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn port_in_use_fails_at_once_without_starting_a_session() {
    let home = Home::new();
    let emu = emulator(Config::default()).await;
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = taken.local_addr().expect("addr").port();

    let mut cmd = ssmconnect(&home);
    cmd.arg("--endpoint-url")
        .arg(emu.endpoint())
        .args(["forward", TARGET, "80", "--local-port", &port.to_string()]);
    let started = std::time::Instant::now();
    let mut proc = Proc::spawn(&mut cmd, "ssmconnect forward (port in use)");
    let stdout = tokio::spawn(read_all(proc.take_stdout(), 20));
    let stderr = tokio::spawn(read_all(proc.take_stderr(), 20));
    let code = proc.exit_code(10).await;
    let elapsed = started.elapsed();
    let stdout = String::from_utf8(stdout.await.unwrap()).unwrap();
    let stderr = String::from_utf8(stderr.await.unwrap()).unwrap();

    assert_eq!(code, 6, "exit code; stderr: {stderr}");
    assert!(elapsed < std::time::Duration::from_secs(5), "took {elapsed:?} to fail");
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), 1, "exactly one line on stderr: {stderr:?}");
    assert!(
        lines[0].contains(&port.to_string()),
        "the message names the port: {stderr:?}"
    );
    assert!(stdout.is_empty(), "nothing on stdout: {stdout:?}");
    assert_eq!(emu.stats().sessions_started, 0, "no session was started");
    drop(taken);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_listener_on_every_interface_is_warned_about_once() {
    let home = Home::new();
    let emu = emulator(Config::default()).await;
    let echo = echo_server().await;

    let mut cmd = ssmconnect(&home);
    cmd.arg("--endpoint-url").arg(emu.endpoint()).args([
        "forward",
        TARGET,
        &echo.to_string(),
        "--local-address",
        "0.0.0.0",
        "--local-port",
        "0",
    ]);
    let mut proc = Proc::spawn(&mut cmd, "ssmconnect forward on 0.0.0.0");
    let mut out = Lines::new(proc.take_stdout());
    let stderr_task = tokio::spawn(read_all(proc.take_stderr(), 60));
    let line = out.until(20, |l| l.starts_with("Port ")).await;
    let (port, _) = opened_port(&line).unwrap_or_else(|| panic!("unexpected line {line:?}"));
    // Two connections: the warning is about the listener, not about each connection.
    for i in 0..2u64 {
        let data = random_bytes(4096, i);
        let back = echo_through(SocketAddr::from(([127, 0, 0, 1], port)), data.clone()).await;
        assert_eq!(back, data, "echo {i}");
    }
    proc.signal(libc::SIGINT);
    let code = proc.exit_code(10).await;
    let stderr = String::from_utf8_lossy(&within(10, "stderr", stderr_task).await.unwrap()).into_owned();
    assert_eq!(code, 0, "exit code after SIGINT; stderr: {stderr}");
    let warnings: Vec<&str> = stderr.lines().filter(|l| l.contains("listening on 0.0.0.0")).collect();
    assert_eq!(warnings.len(), 1, "one warning about the listener: {stderr}");
    assert!(
        warnings[0].contains("WARN") && warnings[0].contains("every network interface"),
        "{}",
        warnings[0]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn port_sessions_of_a_kms_encrypting_account_stay_unencrypted() {
    // The agent never encrypts port sessions (sessionplugin.go isEncryptionEnabled): with KMS
    // on in the preferences, a forward needs no KMS at all (the client is given none here).
    let home = Home::new();
    let moto = Moto::start().await;
    let key = moto.create_kms_key().await;
    let emu = emulator(Config {
        kms_key_id: Some(key),
        kms_endpoint: Some(moto.endpoint.clone()),
        ..Config::default()
    })
    .await;
    let echo = echo_server().await;
    let mut cmd = ssmconnect(&home);
    cmd.env("AWS_ENDPOINT_URL_KMS", "http://127.0.0.1:9");
    cmd.arg("--endpoint-url")
        .arg(emu.endpoint())
        .args(["forward", TARGET, &echo.to_string(), "--local-port", "0"]);
    let mut proc = Proc::spawn(&mut cmd, "ssmconnect forward (KMS account)");
    let mut out = Lines::new(proc.take_stdout());
    let stderr_task = tokio::spawn(read_all(proc.take_stderr(), 60));
    let line = out.until(20, |l| l.starts_with("Port ")).await;
    let (port, _) = opened_port(&line).unwrap_or_else(|| panic!("unexpected line {line:?}"));
    let data = random_bytes(1 << 20, 9);
    let back = echo_through(SocketAddr::from(([127, 0, 0, 1], port)), data.clone()).await;
    assert_eq!(sha256_hex(&back), sha256_hex(&data));
    proc.signal(libc::SIGINT);
    let code = proc.exit_code(10).await;
    let stderr = String::from_utf8_lossy(&within(10, "stderr", stderr_task).await.unwrap()).into_owned();
    assert_eq!(code, 0, "stderr: {stderr}");
    let sessions = emu.sessions();
    assert_eq!(sessions.len(), 1);
    assert!(!sessions[0].encrypted, "{sessions:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forward_starts_its_session_with_document_and_reason() {
    let home = Home::new();
    let emu = emulator(Config::default()).await;
    let echo = echo_server().await;

    let mut cmd = ssmconnect(&home);
    cmd.arg("--endpoint-url")
        .arg(emu.endpoint())
        .args(["--reason", "CHG-1234 check"])
        .args(["forward", TARGET, &echo.to_string()])
        .args([
            "--document",
            "AWS-StartPortForwardingSession",
            "--remote-host",
            "127.0.0.1",
        ]);
    let mut proc = Proc::spawn(&mut cmd, "ssmconnect forward --document --reason");
    let mut out = Lines::new(proc.take_stdout());
    let line = out.until(20, |l| l.starts_with("Port ")).await;
    let (port, session_id) = opened_port(&line).unwrap_or_else(|| panic!("unexpected line {line:?}"));
    let data = random_bytes(4096, 7);
    let back = echo_through(SocketAddr::from(([127, 0, 0, 1], port)), data.clone()).await;
    assert_eq!(sha256_hex(&back), sha256_hex(&data));
    let info = emu
        .sessions()
        .into_iter()
        .find(|s| s.session_id == session_id)
        .expect("the emulator knows the session");
    // Not the ...ToRemoteHost document --remote-host would choose: the one given.
    assert_eq!(info.document, "AWS-StartPortForwardingSession");
    assert_eq!(info.reason.as_deref(), Some("CHG-1234 check"));
    proc.signal(libc::SIGINT);
    assert_eq!(proc.exit_code(10).await, 0);

    // A document the account does not have is the service's error, exit status 4.
    let mut cmd = ssmconnect(&home);
    cmd.arg("--endpoint-url").arg(emu.endpoint()).args([
        "forward",
        TARGET,
        &echo.to_string(),
        "--document",
        "NoSuchPortDocument",
    ]);
    let mut proc = Proc::spawn(&mut cmd, "ssmconnect forward --document NoSuchPortDocument");
    let stderr = proc.take_stderr();
    let stderr_task = tokio::spawn(read_all(stderr, 20));
    assert_eq!(proc.exit_code(20).await, 4);
    let stderr = String::from_utf8_lossy(&within(10, "stderr", stderr_task).await.unwrap()).into_owned();
    assert!(stderr.contains("NoSuchPortDocument"), "{stderr}");
}
