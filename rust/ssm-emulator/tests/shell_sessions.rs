//! Shell sessions (§6): a real shell in a pty, no handshake, no size before the first Size
//! message, resize, messages of up to 1027 bytes, and no exit code unless one is invented.

mod common;

use std::time::Duration;

use common::*;
use ssm_emulator::{Config, Emulator};
use ssm_proto::{PayloadType, TerminalSize};

fn text(c: &TestClient) -> String {
    let bytes: Vec<u8> = c.outputs().flatten().copied().collect();
    String::from_utf8_lossy(&bytes).into_owned()
}

async fn start_shell(emu: &Emulator) -> TestClient {
    let (status, body) = aws_call(
        emu.addr(),
        "StartSession",
        serde_json::json!({"Target":"i-0123456789abcdef0"}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    TestClient::connect(
        body["StreamUrl"].as_str().unwrap(),
        body["TokenValue"].as_str().unwrap(),
        "1.2.650.0",
    )
    .await
}

fn exit_code(c: &TestClient) -> Option<Vec<u8>> {
    c.received
        .iter()
        .find(|(t, _)| *t == PayloadType::ExitCode)
        .map(|(_, p)| p.clone())
}

async fn start_command(emu: &Emulator, command: &str) -> TestClient {
    let (status, body) = aws_call(
        emu.addr(),
        "StartSession",
        serde_json::json!({"Target":"i-0123456789abcdef0","DocumentName":"AWS-StartInteractiveCommand",
            "Parameters":{"command":[command]}}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    TestClient::connect(
        body["StreamUrl"].as_str().unwrap(),
        body["TokenValue"].as_str().unwrap(),
        "1.2.650.0",
    )
    .await
}

#[tokio::test]
async fn shell_runs_commands_resizes_and_ends_without_an_exit_code() {
    let emu = emulator(Config {
        shell_start_delay_ms: 100,
        ..Config::default()
    })
    .await;
    let mut c = start_shell(&emu).await;
    // No handshake (§5.1): the first message from the agent is output, sequence 0.
    c.run_until(Duration::from_secs(10), |c| !c.received.is_empty()).await;
    assert_eq!(c.received[0].0, PayloadType::Output);

    c.send(PayloadType::Size, TerminalSize { cols: 132, rows: 43 }.to_json());
    c.send(PayloadType::Output, b"echo hi-$((40+2)); stty size\n".to_vec());
    c.run_until(Duration::from_secs(10), |c| text(c).contains("43 132"))
        .await;
    assert!(text(&c).contains("hi-42"), "{}", text(&c));

    c.send(PayloadType::Output, b"exit 3\n".to_vec());
    c.run_until(Duration::from_secs(10), |c| c.closed.is_some()).await;
    // The agent's pty path has no exit code (agent/session/shell/shell.go).
    assert_eq!(exit_code(&c), None);
    let info = emu.sessions().pop().unwrap();
    assert_eq!(info.terminal_size, Some((132, 43)));
}

#[tokio::test]
async fn a_shell_without_a_size_message_has_zero_columns() {
    let emu = emulator(Config {
        shell_start_delay_ms: 0,
        ..Config::default()
    })
    .await;
    let mut c = start_shell(&emu).await;
    c.send(PayloadType::Output, b"echo size-$(stty size | tr ' ' x)-end\n".to_vec());
    // The echoed command line has "size-$(", the answer digits.
    c.run_until(Duration::from_secs(10), |c| {
        text(c)
            .split("size-")
            .skip(1)
            .any(|r| r.starts_with(|ch: char| ch.is_ascii_digit()))
    })
    .await;
    assert!(text(&c).contains("size-0x0-end"), "{}", text(&c));
    // The first Size message gives the pty its size.
    c.send(PayloadType::Size, TerminalSize { cols: 90, rows: 20 }.to_json());
    c.send(PayloadType::Output, b"echo size-$(stty size | tr ' ' x)-now\n".to_vec());
    c.run_until(Duration::from_secs(10), |c| text(c).contains("size-20x90-now"))
        .await;
    assert_eq!(emu.sessions().pop().unwrap().terminal_size, Some((90, 20)));
}

#[tokio::test]
async fn a_size_message_sent_at_once_sizes_the_pty() {
    let emu = emulator(Config {
        shell_start_delay_ms: 200,
        ..Config::default()
    })
    .await;
    let mut c = start_shell(&emu).await;
    // As a client with piped stdin does: the size first, then the input, before any output.
    c.send(PayloadType::Size, TerminalSize { cols: 300, rows: 100 }.to_json());
    c.send(PayloadType::Output, b"echo size-$(stty size | tr ' ' x)-now\n".to_vec());
    c.run_until(Duration::from_secs(10), |c| {
        text(c)
            .split("size-")
            .skip(1)
            .any(|r| r.starts_with(|ch: char| ch.is_ascii_digit()))
    })
    .await;
    assert!(text(&c).contains("size-100x300-now"), "{}", text(&c));
}

#[tokio::test]
async fn multibyte_output_gives_messages_over_1024_bytes() {
    let emu = emulator(Config {
        shell_start_delay_ms: 100,
        ..Config::default()
    })
    .await;
    // 3-byte characters: reads of 1024 bytes end inside one, which then goes in front of the
    // next read's 1024 bytes.
    let mut c = start_command(&emu, "printf '\u{20ac}%.0s' $(seq 1 20000)").await;
    c.run_until(Duration::from_secs(30), |c| c.closed.is_some()).await;
    let sizes: Vec<usize> = c
        .received
        .iter()
        .filter(|(t, _)| *t == PayloadType::Output)
        .map(|(_, p)| p.len())
        .collect();
    let longest = sizes.iter().copied().max().unwrap_or(0);
    assert!((1025..=1027).contains(&longest), "message sizes {sizes:?}");
    assert_eq!(text(&c), "\u{20ac}".repeat(20000));
}

#[tokio::test]
async fn a_megabyte_of_output_arrives_intact() {
    let emu = emulator(Config {
        shell_start_delay_ms: 0,
        pacing: ssm_emulator::Pacing::Unpaced { chunk: 1024 },
        ..Config::default()
    })
    .await;
    let mut c = start_shell(&emu).await;
    c.send(PayloadType::Output, b"stty -echo; seq 1 200000; exit\n".to_vec());
    c.run_until(Duration::from_secs(60), |c| c.closed.is_some()).await;
    let out = text(&c).replace('\r', "");
    let expected: String = (1..=200000).map(|i| format!("{i}\n")).collect();
    assert!(expected.len() > 1 << 20);
    assert!(
        out.contains(&expected),
        "output of {} bytes does not hold the sequence",
        out.len()
    );
}

#[tokio::test]
async fn interactive_command_runs_once_and_closes_without_an_exit_code() {
    let emu = emulator(Config {
        shell_start_delay_ms: 0,
        ..Config::default()
    })
    .await;
    let mut c = start_command(&emu, "printf 'caf\\303\\251\\n'; exit 5").await;
    c.run_until(Duration::from_secs(10), |c| c.closed.is_some()).await;
    assert!(text(&c).contains("café"), "{}", text(&c));
    assert_eq!(exit_code(&c), None);
}

#[tokio::test]
async fn an_invented_exit_code_comes_only_when_asked_for() {
    let emu = emulator(Config {
        shell_start_delay_ms: 0,
        invent_shell_exit_code: true,
        ..Config::default()
    })
    .await;
    let mut c = start_command(&emu, "exit 5").await;
    c.run_until(Duration::from_secs(10), |c| c.closed.is_some()).await;
    assert_eq!(exit_code(&c).as_deref(), Some(b"EXIT_CODE: 5".as_slice()));
}
