//! NonInteractiveCommands sessions (§6.5, §11.3) as the agent runs them
//! (agent/session/shell/shell.go, shell_unix.go): always a handshake, no pty, stdout and stderr
//! apart with an exit code only for documents with `separateOutputStream`, and input reduced
//! to 0x03/0x1C, whose handler waits for the command before the message is acked.

mod common;

use std::time::{Duration, Instant};

use common::*;
use ssm_emulator::{Config, Emulator};
use ssm_proto::PayloadType;

const SEPARATE: &str = "Own-RunCommand";

async fn command_emulator() -> Emulator {
    emulator(Config {
        command_document: Some(SEPARATE.into()),
        ..Config::default()
    })
    .await
}

/// Starts `command` with `document` and completes the handshake, checking what the agent asked.
async fn start(emu: &Emulator, document: &str, command: &str) -> TestClient {
    let (status, body) = aws_call(
        emu.addr(),
        "StartSession",
        serde_json::json!({"Target": TARGET, "DocumentName": document, "Parameters": {"command": [command]}}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let mut c = TestClient::connect(
        body["StreamUrl"].as_str().unwrap(),
        body["TokenValue"].as_str().unwrap(),
        "1.2.650.0",
    )
    .await;
    c.run_until(Duration::from_secs(10), |c| !c.received.is_empty()).await;
    let (t, req) = &c.received[0];
    assert_eq!(*t, PayloadType::HandshakeRequest, "a handshake first, always");
    let req: serde_json::Value = serde_json::from_slice(req).unwrap();
    assert_eq!(
        req["RequestedClientActions"][0]["ActionParameters"]["SessionType"],
        "NonInteractiveCommands"
    );
    // GetPluginParameters of the single-command plugins is nil.
    assert!(
        req["RequestedClientActions"][0]["ActionParameters"]["Properties"].is_null(),
        "{req}"
    );
    c.handshake("1.2.650.0").await;
    c
}

fn stream(c: &TestClient, t: PayloadType) -> String {
    let bytes: Vec<u8> = c
        .received
        .iter()
        .filter(|(pt, _)| *pt == t)
        .flat_map(|(_, p)| p.clone())
        .collect();
    String::from_utf8_lossy(&bytes).into_owned()
}

#[tokio::test]
async fn separate_streams_then_one_exit_code_then_the_close() {
    let emu = command_emulator().await;
    let mut c = start(&emu, SEPARATE, "sh -c 'echo out; echo err >&2; exit 3'").await;
    c.run_until(Duration::from_secs(10), |c| c.closed.is_some()).await;
    assert_eq!(stream(&c, PayloadType::Output), "out\n");
    assert_eq!(stream(&c, PayloadType::StdErr), "err\n");
    let codes: Vec<_> = c.received.iter().filter(|(t, _)| *t == PayloadType::ExitCode).collect();
    assert_eq!(codes.len(), 1);
    assert_eq!(codes[0].1, b"EXIT_CODE: 3");
    assert_eq!(
        c.received.last().map(|(t, _)| *t),
        Some(PayloadType::ExitCode),
        "the exit code comes last"
    );
}

#[tokio::test]
async fn combined_output_comes_after_the_command_without_an_exit_code() {
    let emu = command_emulator().await;
    let started = Instant::now();
    let mut c = start(
        &emu,
        "AWS-StartNonInteractiveCommand",
        "sh -c 'echo one; echo two >&2; sleep 1; echo three; exit 3'",
    )
    .await;
    c.run_until(Duration::from_secs(10), |c| {
        !c.received.is_empty() || c.closed.is_some()
    })
    .await;
    assert!(
        started.elapsed() >= Duration::from_secs(1),
        "nothing before the command ended"
    );
    c.run_until(Duration::from_secs(10), |c| c.closed.is_some()).await;
    assert_eq!(stream(&c, PayloadType::Output), "one\ntwo\nthree\n");
    assert!(
        c.received.iter().all(|(t, _)| *t == PayloadType::Output),
        "{:?}",
        c.received
    );
}

#[tokio::test]
async fn other_input_is_dropped_and_ctrl_c_is_acked_only_once_the_command_exits() {
    let emu = command_emulator().await;
    let mut c = start(
        &emu,
        SEPARATE,
        "sh -c \"trap 'sleep 1; echo got-int; exit 5' INT; echo ready; read x; echo read-returned; while :; do sleep 0.1; done\"",
    )
    .await;
    c.run_until(Duration::from_secs(10), |c| {
        stream(c, PayloadType::Output).contains("ready")
    })
    .await;
    // Keystrokes never reach the command (it has no stdin: `read` returned at once).
    c.send(PayloadType::Output, b"typed\n".to_vec());
    c.run_until(Duration::from_secs(5), |c| c.channel.unacked() == 0).await;
    c.send(PayloadType::Output, vec![b'x', 0x03]);
    let sent = Instant::now();
    c.run_until(Duration::from_secs(10), |c| c.channel.unacked() == 0).await;
    assert!(
        sent.elapsed() >= Duration::from_millis(900),
        "the 0x03 was acked after {:?}, before the trap's second ended",
        sent.elapsed()
    );
    c.run_until(Duration::from_secs(10), |c| c.closed.is_some()).await;
    let out = stream(&c, PayloadType::Output);
    assert!(
        out.contains("read-returned") && out.contains("got-int") && !out.contains("typed"),
        "{out}"
    );
    // The handler's own Wait reaped the command, so the plugin reports 1, not 5.
    assert_eq!(stream(&c, PayloadType::ExitCode), "EXIT_CODE: 1");
}

/// The agent runs as a service, so its commands start with SIGINT at its default action. An
/// emulator started with SIGINT ignored (as a shell starts background jobs) must not pass that
/// on: the command would never see the 0x03.
#[cfg(unix)]
#[tokio::test]
async fn ctrl_c_reaches_a_command_even_when_the_emulator_ignores_sigint() {
    // SAFETY: sets this test process's disposition of SIGINT; nothing here handles it.
    let previous = unsafe { libc::signal(libc::SIGINT, libc::SIG_IGN) };
    assert_ne!(previous, libc::SIG_ERR);
    let emu = command_emulator().await;
    let mut c = start(&emu, SEPARATE, "sh -c \"echo ready; while :; do sleep 0.1; done\"").await;
    c.run_until(Duration::from_secs(10), |c| {
        stream(c, PayloadType::Output).contains("ready")
    })
    .await;
    c.send(PayloadType::Output, vec![0x03]);
    c.run_until(Duration::from_secs(10), |c| c.closed.is_some()).await;
    assert!(c.closed.is_some(), "the interrupted command did not end the session");
    assert_eq!(stream(&c, PayloadType::ExitCode), "EXIT_CODE: 1");
}

#[tokio::test]
async fn a_program_that_cannot_start_reports_1_then_the_error() {
    let emu = command_emulator().await;
    let mut c = start(&emu, SEPARATE, "no-such-program-here --flag").await;
    c.run_until(Duration::from_secs(10), |c| c.closed.is_some()).await;
    assert_eq!(stream(&c, PayloadType::ExitCode), "EXIT_CODE: 1");
    assert_eq!(
        stream(&c, PayloadType::StdErr),
        "exec: \"no-such-program-here\": executable file not found in $PATH"
    );
}
