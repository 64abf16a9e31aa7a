//! ssmconnect as the AWS CLI's `session-manager-plugin` (§1.3 of ssm-protocol.md): driven by
//! the real `aws ssm start-session`, and driven directly with the six-argument contract.

mod common;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Stdio;

use common::*;
use ssm_emulator::Config;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn aws_cli() -> PathBuf {
    which("aws").unwrap_or_else(|| {
        panic!(
            "the AWS CLI (`aws`) is not on PATH; CI has it preinstalled and these tests need it \
             to check ssmconnect as session-manager-plugin"
        )
    })
}

/// `aws ssm start-session` (the AWS CLI itself) to [`TARGET`] at the emulator with `document`
/// and `parameters` (the CLI's shorthand or JSON), ssmconnect first on PATH as its plugin.
fn aws_start_session(
    home: &Home,
    emu: &ssm_emulator::Emulator,
    document: &str,
    parameters: &str,
) -> tokio::process::Command {
    let mut cmd = command(aws_cli(), home, false);
    cmd.env("PATH", home.path_with_plugin()).args([
        "ssm",
        "start-session",
        "--target",
        TARGET,
        "--document-name",
        document,
        "--parameters",
        parameters,
        "--endpoint-url",
        &emu.endpoint(),
        "--region",
        "us-east-1",
    ]);
    cmd
}

/// Ctrl+C as a terminal sends it: to the whole foreground group. The CLI ignores it while its
/// plugin runs; the plugin must handle it (an inherited "ignore" must not stick). The AWS CLI
/// exits 0 and the local port at `addr` is closed; returns the CLI's stderr.
async fn interrupt_forward(proc: &mut Proc, stderr: tokio::task::JoinHandle<Vec<u8>>, addr: SocketAddr) -> String {
    proc.signal_group(libc::SIGINT);
    let code = proc.exit_code(15).await;
    let stderr = String::from_utf8_lossy(&within(10, "aws stderr", stderr).await.unwrap()).into_owned();
    assert_eq!(code, 0, "aws exit code; stderr: {stderr}");
    assert_closed(addr, 5).await;
    stderr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aws_cli_port_forwarding_with_ssm_connect_as_its_plugin() {
    let home = Home::new();
    let emu = emulator(Config::default()).await;
    let echo = echo_server().await;
    let local = free_port();

    let mut cmd = aws_start_session(
        &home,
        &emu,
        "AWS-StartPortForwardingSession",
        &format!("portNumber={echo},localPortNumber={local}"),
    );
    let mut proc = Proc::spawn(&mut cmd, "aws ssm start-session");
    let mut out = Lines::new(proc.take_stdout());
    let stderr = tokio::spawn(read_all(proc.take_stderr(), 120));

    // The AWS CLI is slow to start (Python); the plugin prints its lines once listening.
    let opened = out.until(60, |l| l.starts_with("Port ")).await;
    assert_eq!(
        opened,
        format!("Port {local} opened for sessionId {}.", emu.sessions()[0].session_id)
    );
    out.until(10, |l| l == "Waiting for connections...").await;
    assert!(
        out.seen
            .iter()
            .any(|l| l.starts_with("Starting session with SessionId: ")),
        "{:?}",
        out.seen
    );

    let addr = SocketAddr::from(([127, 0, 0, 1], local));
    let data = random_bytes(1 << 20, 7);
    let want = sha256_hex(&data);
    let back = within(60, "1 MiB echo through the plugin", echo_through(addr, data)).await;
    assert_eq!(sha256_hex(&back), want);

    let stderr = interrupt_forward(&mut proc, stderr, addr).await;
    let rest = out.rest(5).await;
    assert!(
        rest.iter().any(|l| l.starts_with("Exiting session with sessionId")),
        "{:?}",
        out.seen
    );
    // The session is terminated, not left open on the service.
    assert!(
        sessions_end(&emu, 10).await,
        "the session is still open after the plugin exited: {:?}\nstderr: {stderr}",
        emu.sessions()
    );
    // The plugin saw the response through AWS_SSM_START_SESSION_RESPONSE (we report a version
    // above 1.2.497.0) and announced itself with our version.
    let sessions = emu.sessions();
    assert_eq!(sessions.len(), 1, "{sessions:?}");
    assert_eq!(sessions[0].client_version, "1.2.650.0");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aws_cli_port_forwarding_to_a_remote_host_with_ssm_connect_as_its_plugin() {
    let home = Home::new();
    let emu = emulator(Config::default()).await;
    let echo = echo_server().await;
    let local = free_port();

    let mut cmd = aws_start_session(
        &home,
        &emu,
        "AWS-StartPortForwardingSessionToRemoteHost",
        &format!("host=127.0.0.1,portNumber={echo},localPortNumber={local}"),
    );
    let mut proc = Proc::spawn(&mut cmd, "aws ssm start-session (remote host)");
    let mut out = Lines::new(proc.take_stdout());
    let stderr = tokio::spawn(read_all(proc.take_stderr(), 120));
    out.until(60, |l| l == "Waiting for connections...").await;

    let addr = SocketAddr::from(([127, 0, 0, 1], local));
    let data = random_bytes(64 << 10, 11);
    let back = within(
        60,
        "64 KiB echo through the remote host",
        echo_through(addr, data.clone()),
    )
    .await;
    assert_eq!(sha256_hex(&back), sha256_hex(&data));

    interrupt_forward(&mut proc, stderr, addr).await;
    assert!(sessions_end(&emu, 10).await, "{:?}", emu.sessions());
    let sessions = emu.sessions();
    assert_eq!(sessions.len(), 1, "{sessions:?}");
    assert_eq!(sessions[0].document, "AWS-StartPortForwardingSessionToRemoteHost");
    assert_eq!(sessions[0].parameters.get("host"), Some(&vec!["127.0.0.1".to_owned()]));
}

/// Runs ssmconnect with the six-argument contract for an `AWS-StartSSHSession` the test started
/// itself, with the response in argv[1] or (`via_env`) in AWS_SSM_START_SESSION_RESPONSE.
async fn plugin_stream_session(via_env: bool) {
    let home = Home::new();
    let emu = emulator(Config::default()).await;
    let server = greeting_echo_server(b"SSH-2.0-Test\r\n").await;
    let response = start_session_raw(
        emu.addr(),
        "AWS-StartSSHSession",
        serde_json::json!({ "portNumber": [server.to_string()] }),
    )
    .await;
    let session_id = response["SessionId"].as_str().expect("SessionId").to_owned();
    let json = serde_json::json!({
        "SessionId": response["SessionId"],
        "TokenValue": response["TokenValue"],
        "StreamUrl": response["StreamUrl"],
    })
    .to_string();

    let mut cmd = ssmconnect(&home);
    if via_env {
        cmd.env("AWS_SSM_START_SESSION_RESPONSE", &json)
            .arg("AWS_SSM_START_SESSION_RESPONSE");
    } else {
        cmd.arg(&json);
    }
    cmd.args([
        "us-east-1",
        "StartSession",
        "",
        &format!(r#"{{"Target":"{TARGET}"}}"#),
        &emu.endpoint(),
    ])
    .stdin(Stdio::piped());
    let mut proc = Proc::spawn(&mut cmd, "ssmconnect (plugin mode)");
    let mut stdin = proc.take_stdin();
    let mut stdout = proc.take_stdout();
    let stderr = tokio::spawn(read_all(proc.take_stderr(), 60));

    // The server speaks first; nothing but its bytes may come out, before any input is sent.
    let banner = b"SSH-2.0-Test\r\n";
    let mut first = vec![0u8; banner.len()];
    within(20, "the server's identification", stdout.read_exact(&mut first))
        .await
        .expect("read stdout");
    assert_eq!(
        String::from_utf8_lossy(&first),
        String::from_utf8_lossy(banner),
        "stdout must start with the tunnel's first bytes"
    );

    // Then a round trip larger than one message, with the input closed right after it: end of
    // input is a half-close (the protocol has none to pass on), and what the server sends
    // afterwards still comes out whole.
    let data = random_bytes(200_000, 3);
    let want = data.clone();
    let writer = tokio::spawn(async move {
        stdin.write_all(&data).await.expect("write stdin");
        stdin.shutdown().await.expect("close stdin");
    });
    let mut echoed = vec![0u8; want.len()];
    within(30, "the echo", stdout.read_exact(&mut echoed))
        .await
        .expect("read echo");
    assert!(echoed == want, "the echo differs");
    within(10, "stdin writer", writer).await.expect("writer");
    // ssh sends SIGHUP to its ProxyCommand when it exits: the session ends at the service.
    proc.signal(libc::SIGHUP);
    let code = proc.exit_code(15).await;
    let tail = read_all(stdout, 5).await;
    let stderr = String::from_utf8_lossy(&within(10, "stderr", stderr).await.unwrap()).into_owned();
    assert_eq!(code, 128 + libc::SIGHUP, "stderr: {stderr}");
    assert!(tail.is_empty(), "nothing after the tunnel bytes: {tail:?}");
    assert!(
        !stderr.contains(response["TokenValue"].as_str().unwrap_or("?")),
        "the token leaked: {stderr}"
    );
    // Terminated (§9 item 22) rather than left open.
    assert!(sessions_end(&emu, 10).await, "{:?}\nstderr: {stderr}", emu.sessions());
    assert_eq!(emu.sessions().len(), 1);
    assert_eq!(emu.sessions()[0].session_id, session_id);
    assert_eq!(emu.sessions()[0].terminate_calls, 1, "{:?}", emu.sessions());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plugin_contract_stream_session_writes_only_tunnel_bytes() {
    plugin_stream_session(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plugin_contract_reads_the_response_from_the_environment() {
    plugin_stream_session(true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ssh_proxy_terminates_the_session_when_ssh_hangs_up() {
    let home = Home::new();
    // A lost client would keep the session for a minute: only TerminateSession ends it sooner.
    let emu = emulator(Config {
        reconnect_grace_ms: 60_000,
        ..Config::default()
    })
    .await;
    let server = greeting_echo_server(b"SSH-2.0-Test\r\n").await;
    let mut cmd = ssmconnect(&home);
    cmd.arg("--endpoint-url")
        .arg(emu.endpoint())
        .args(["ssh-proxy", &format!("{TARGET}:{server}")])
        .stdin(Stdio::piped());
    let mut proc = Proc::spawn(&mut cmd, "ssmconnect ssh-proxy");
    let _stdin = proc.take_stdin();
    let mut stdout = proc.take_stdout();
    let mut first = [0u8; 14];
    within(20, "the banner", stdout.read_exact(&mut first))
        .await
        .expect("read banner");
    assert_eq!(&first, b"SSH-2.0-Test\r\n");
    // ssh sends SIGHUP to its ProxyCommand when it exits.
    proc.signal(libc::SIGHUP);
    let code = proc.exit_code(20).await;
    assert_eq!(code, 128 + libc::SIGHUP);
    assert!(
        sessions_end(&emu, 10).await,
        "ssh-proxy left the session open after SIGHUP: {:?}",
        emu.sessions()
    );
    assert_eq!(emu.sessions()[0].terminate_calls, 1, "{:?}", emu.sessions());
}

/// `aws ssm start-session --document-name DOC --parameters command=…` with ssmconnect as the
/// plugin and stdin not a terminal, to its end: (status, stdout, stderr).
async fn aws_cli_command(emu: &ssm_emulator::Emulator, document: &str, command_text: &str) -> (i32, String, String) {
    let home = Home::new();
    let parameters = serde_json::json!({ "command": [command_text] }).to_string();
    let mut cmd = aws_start_session(&home, emu, document, &parameters);
    let mut proc = Proc::spawn(&mut cmd, "aws ssm start-session");
    let stdout = tokio::spawn(read_all(proc.take_stdout(), 120));
    let stderr = tokio::spawn(read_all(proc.take_stderr(), 120));
    let code = proc.exit_code(120).await;
    let text = |b: Vec<u8>| String::from_utf8_lossy(&b).into_owned();
    let stdout = text(within(10, "aws stdout", stdout).await.unwrap());
    let stderr = text(within(10, "aws stderr", stderr).await.unwrap());
    (code, stdout, stderr)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aws_cli_commands_of_every_session_type_with_ssm_connect_as_its_plugin() {
    let emu = emulator(Config {
        command_document: Some("SSMConnect-RunCommand".into()),
        ..Config::default()
    })
    .await;
    // The agent splits the command shell-style and runs it without a shell (§6.5).
    let script = "sh -c 'echo out-$((40+2)); echo err-7 >&2; exit 3'";

    // NonInteractiveCommands with separate streams: stderr apart, and the CLI's status 0 (it
    // reports any other status of its plugin as its own failure).
    let (code, stdout, stderr) = aws_cli_command(&emu, "SSMConnect-RunCommand", script).await;
    assert_eq!(code, 0, "stdout: {stdout}\nstderr: {stderr}");
    assert!(stdout.contains("Starting session with SessionId: "), "{stdout}");
    assert!(stdout.contains("out-42\n"), "{stdout}");
    assert!(!stdout.contains("err-7"), "stderr reached stdout: {stdout}");
    assert!(stderr.contains("err-7"), "{stderr}");

    // AWS-StartNonInteractiveCommand: combined output, after the command.
    let (code, stdout, stderr) = aws_cli_command(&emu, "AWS-StartNonInteractiveCommand", script).await;
    assert_eq!(code, 0, "stderr: {stderr}");
    assert!(stdout.contains("out-42\nerr-7\n"), "{stdout}");

    // InteractiveCommands: a pty on the instance; its output on stdout.
    let (code, stdout, stderr) =
        aws_cli_command(&emu, "AWS-StartInteractiveCommand", "sh -c 'echo pty-$((6*7))'").await;
    assert_eq!(code, 0, "stderr: {stderr}");
    assert!(stdout.contains("pty-42"), "{stdout}");
    assert!(stdout.contains("Exiting session with sessionId: "), "{stdout}");

    assert!(sessions_end(&emu, 10).await, "{:?}", emu.sessions());
    let sessions = emu.sessions();
    assert_eq!(sessions.len(), 3, "{sessions:?}");
}
