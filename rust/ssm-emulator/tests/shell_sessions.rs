//! Shell sessions (§6): a real shell in a pty, no handshake, resize, exit code.

mod common;

use std::time::Duration;

use common::*;
use ssm_emulator::{Config, Emulator};
use ssm_proto::{PayloadType, TerminalSize};

fn text(c: &TestClient) -> String {
    let bytes: Vec<u8> = c
        .received
        .iter()
        .filter(|(t, _)| *t == PayloadType::Output)
        .flat_map(|(_, p)| p.clone())
        .collect();
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

#[tokio::test]
async fn shell_runs_commands_resizes_and_reports_the_exit_code() {
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
    let code = c
        .received
        .iter()
        .find(|(t, _)| *t == PayloadType::ExitCode)
        .map(|(_, p)| p.clone());
    assert_eq!(code.as_deref(), Some(b"EXIT_CODE: 3".as_slice()));
    let info = emu.sessions().pop().unwrap();
    assert_eq!(info.terminal_size, Some((132, 43)));
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
async fn interactive_command_runs_once_and_closes() {
    let emu = emulator(Config {
        shell_start_delay_ms: 0,
        ..Config::default()
    })
    .await;
    let (status, body) = aws_call(
        emu.addr(),
        "StartSession",
        serde_json::json!({"Target":"i-0123456789abcdef0","DocumentName":"AWS-StartInteractiveCommand",
            "Parameters":{"command":["printf 'caf\\303\\251\\n'; exit 5"]}}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let mut c = TestClient::connect(
        body["StreamUrl"].as_str().unwrap(),
        body["TokenValue"].as_str().unwrap(),
        "1.2.650.0",
    )
    .await;
    c.run_until(Duration::from_secs(10), |c| c.closed.is_some()).await;
    assert!(text(&c).contains("café"), "{}", text(&c));
    let code = c
        .received
        .iter()
        .find(|(t, _)| *t == PayloadType::ExitCode)
        .map(|(_, p)| p.clone());
    assert_eq!(code.as_deref(), Some(b"EXIT_CODE: 5".as_slice()));
}
