//! The emulator's defaults are the agent's and the service's behaviour, not kinder: each test
//! pins one of them (and, where a kinder behaviour exists as a named option, shows the
//! difference).

mod common;

use std::time::{Duration, Instant};

use common::*;
use ssm_emulator::{Config, Faults, Pacing};
use ssm_proto::smux::{Cmd, HEADER_LEN, Mux, MuxEvent, Side};
use ssm_proto::{MessageType, PayloadType, PortFlag};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// A destination that sends `len` bytes to each connection, then keeps it open.
async fn source_server(len: usize) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            tokio::spawn(async move {
                let _ = s.write_all(&random_bytes(len, 11)).await;
                let mut sink = [0u8; 1024];
                while matches!(s.read(&mut sink).await, Ok(n) if n > 0) {}
            });
        }
    });
    port
}

/// Starts a session of `document` with `parameters` and connects a client to it.
async fn session(emu: &ssm_emulator::Emulator, document: &str, port: u16) -> (String, TestClient) {
    let (sid, token, url) = start_port_session(emu.addr(), document, port).await;
    (sid, TestClient::connect(&url, &token, "1.2.650.0").await)
}

/// Cuts the socket of a download after 40 frames, reconnects, and returns how many
/// retransmissions the agent made in the 500 ms after the client came back, and how long the
/// rest of the download took.
async fn redelivery_after_cut(redeliver_on_reconnect: bool) -> (u64, Duration) {
    const LEN: usize = 400 * 1024;
    let emu = emulator(Config {
        faults: Faults {
            cut_after_frames: Some(40),
            ..Faults::default()
        },
        pacing: Pacing::Unpaced { chunk: 1024 },
        redeliver_on_reconnect,
        ..Config::default()
    })
    .await;
    let port = source_server(LEN).await;
    let (sid, token, url) = start_port_session(emu.addr(), "AWS-StartPortForwardingSession", port).await;
    let mut c = TestClient::connect(&url, &token, "1.0.0.0").await;
    c.handshake("1.0.0.0").await;
    c.send(PayloadType::Output, b"go".to_vec());
    assert!(
        !c.run_until_or_end(Duration::from_secs(20), |_| false).await,
        "expected a cut"
    );
    // Let the agent run on without a client for a moment, as a real reconnect takes.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (status, body) = aws_call(emu.addr(), "ResumeSession", serde_json::json!({"SessionId": sid})).await;
    assert_eq!(status, 200, "{body}");
    let before = emu.stats().agent_retransmissions;
    let back = Instant::now();
    c.reconnect(&url, body["TokenValue"].as_str().unwrap(), "1.0.0.0").await;
    let _ = tokio::time::timeout(
        Duration::from_millis(500),
        c.run_until_or_end(Duration::from_secs(60), |_| false),
    )
    .await;
    let burst = emu.stats().agent_retransmissions - before;
    c.run_until(Duration::from_secs(120), |c| c.output_len() >= LEN).await;
    let took = back.elapsed();
    assert_eq!(c.take_output(), random_bytes(LEN, 11));
    let _ = token;
    (burst, took)
}

#[tokio::test]
async fn after_a_reconnect_the_agent_resends_one_message_per_tick() {
    // datachannel.go ResendStreamDataMessageScheduler: the oldest unacked message, every 100 ms.
    let (burst, took) = redelivery_after_cut(false).await;
    eprintln!("agent default: {burst} retransmissions in the first 500 ms; rest of download {took:?}");
    assert!(
        burst <= 7,
        "{burst} retransmissions in 500 ms: more than one per 100 ms tick"
    );
    // The named kinder option resends everything unacked at once.
    let (burst, took) = redelivery_after_cut(true).await;
    eprintln!("redeliver_on_reconnect: {burst} retransmissions in the first 500 ms; rest {took:?}");
    assert!(burst > 20, "{burst}");
}

#[tokio::test]
async fn acks_wait_until_the_destination_takes_the_data() {
    // datachannel.go handleStreamDataMessage: the payload is written to the port, then acked;
    // while a write blocks, nothing more is read or acked.
    const LEN: usize = 16 << 20;
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(64 * 1024).unwrap();
    socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let listener = socket.listen(4).unwrap();
    let port = listener.local_addr().unwrap().port();
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let reader = tokio::spawn(async move {
        let (mut s, _) = listener.accept().await.unwrap();
        let _ = rx.await; // does not read until told
        let mut got = Vec::new();
        let mut buf = vec![0u8; 64 * 1024];
        while got.len() < LEN {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => got.extend_from_slice(&buf[..n]),
            }
        }
        got
    });
    let emu = emulator(Config::default()).await;
    let (_, mut c) = session(&emu, "AWS-StartPortForwardingSession", port).await;
    c.handshake("1.0.0.0").await;
    let data = random_bytes(LEN, 5);
    let mut chunks = data.chunks(1024).peekable();
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(4) {
        while c.channel.can_send()
            && let Some(chunk) = chunks.next()
        {
            c.send(PayloadType::Output, chunk.to_vec());
        }
        let _ = tokio::time::timeout(
            Duration::from_millis(200),
            c.run_until_or_end(Duration::from_secs(60), |_| false),
        )
        .await;
    }
    let sent = LEN - chunks.clone().map(<[u8]>::len).sum::<usize>();
    let acked = sent - c.channel.unacked() * 1024;
    eprintln!("destination not reading: {acked} of {LEN} bytes acked after 4 s");
    assert!(acked < LEN / 2, "the agent acked data its destination never took");
    tx.send(()).unwrap();
    let start = Instant::now();
    while chunks.peek().is_some() || c.channel.unacked() > 0 {
        assert!(start.elapsed() < Duration::from_secs(120), "transfer stalled");
        while c.channel.can_send()
            && let Some(chunk) = chunks.next()
        {
            c.send(PayloadType::Output, chunk.to_vec());
        }
        let _ = tokio::time::timeout(
            Duration::from_millis(100),
            c.run_until_or_end(Duration::from_secs(60), |_| false),
        )
        .await;
    }
    assert!(reader.await.unwrap() == data, "the destination got other bytes");
}

#[tokio::test]
async fn the_handshake_clock_runs_from_dispatch_not_from_the_connection() {
    let emu = emulator(Config {
        handshake_timeout_ms: 1500,
        ..Config::default()
    })
    .await;
    let echo = echo_server().await;
    // A client that connects late but within the agent's clock still gets its session.
    let (_, token, url) = start_port_session(emu.addr(), "AWS-StartPortForwardingSession", echo).await;
    tokio::time::sleep(Duration::from_millis(700)).await;
    let mut c = TestClient::connect(&url, &token, "1.2.650.0").await;
    c.handshake("1.2.650.0").await;
    // One that connects after the clock ran out finds the session over.
    let (sid, token, url) = start_port_session(emu.addr(), "AWS-StartPortForwardingSession", echo).await;
    // 1.5 s, then the agent's ≤ 2 s drain of its unacked HandshakeRequest.
    tokio::time::sleep(Duration::from_millis(4500)).await;
    let info = emu.sessions().into_iter().find(|s| s.session_id == sid).unwrap();
    assert!(
        info.ended,
        "the agent waited for a client that never answered the handshake"
    );
    let mut late = TestClient::connect(&url, &token, "1.2.650.0").await;
    let ended = !late
        .run_until_or_end(Duration::from_secs(5), |c| c.closed.is_some())
        .await
        || late.closed.is_some();
    assert!(ended);
    assert!(!late.received.iter().any(|(t, _)| *t == PayloadType::HandshakeComplete));
}

#[tokio::test]
async fn a_shell_starts_on_dispatch_and_its_first_output_waits_for_the_client() {
    let emu = emulator(Config {
        shell_start_delay_ms: 1000,
        ..Config::default()
    })
    .await;
    let (status, body) = aws_call(emu.addr(), "StartSession", serde_json::json!({"Target": TARGET})).await;
    assert_eq!(status, 200, "{body}");
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let mut c = TestClient::connect(
        body["StreamUrl"].as_str().unwrap(),
        body["TokenValue"].as_str().unwrap(),
        "1.2.650.0",
    )
    .await;
    let connected = Instant::now();
    c.send(PayloadType::Output, b"echo ready-$((6*7))\n".to_vec());
    c.run_until(Duration::from_secs(10), |c| {
        c.received.iter().any(|(t, _)| *t == PayloadType::Output)
    })
    .await;
    // The 1 s start delay ran from dispatch, 2.5 s ago: output held for the client is there
    // at once rather than a second after connecting.
    let first = connected.elapsed();
    eprintln!("first shell output {first:?} after connecting");
    assert!(first < Duration::from_millis(800), "{first:?}");
    c.run_until(Duration::from_secs(10), |c| {
        c.received
            .iter()
            .filter(|(t, _)| *t == PayloadType::Output)
            .any(|(_, p)| String::from_utf8_lossy(p).contains("ready-42"))
    })
    .await;
}

#[tokio::test]
async fn an_idle_session_is_closed_by_the_service_and_traffic_keeps_it_open() {
    let emu = emulator(Config {
        idle_timeout_ms: 1500,
        ..Config::default()
    })
    .await;
    let EchoSession { client: mut busy, .. } = echo_session(&emu, "1.0.0.0").await;
    let EchoSession { client: mut idle, .. } = echo_session(&emu, "1.0.0.0").await;
    // Input every 400 ms for 3 s keeps one open; the other, silent, is closed.
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(3) {
        busy.send(PayloadType::Output, b"k".to_vec());
        let _ = tokio::time::timeout(
            Duration::from_millis(400),
            busy.run_until_or_end(Duration::from_secs(5), |_| false),
        )
        .await;
        assert!(busy.closed.is_none(), "closed although the client kept typing");
    }
    idle.run_until(Duration::from_secs(5), |c| c.closed.is_some()).await;
    let closed = idle.closed.as_ref().unwrap();
    assert!(closed.output.contains("inactivity"), "{closed:?}");
    assert_eq!(idle.closed_header_length, Some(112), "MGS's channel_closed header");
}

#[tokio::test]
async fn the_maximum_session_duration_ends_even_a_busy_session() {
    let emu = emulator(Config {
        max_session_duration_ms: Some(1500),
        ..Config::default()
    })
    .await;
    let EchoSession { client: mut c, .. } = echo_session(&emu, "1.0.0.0").await;
    let start = Instant::now();
    while c.closed.is_none() && start.elapsed() < Duration::from_secs(6) {
        c.send(PayloadType::Output, b"k".to_vec());
        let _ = tokio::time::timeout(
            Duration::from_millis(300),
            c.run_until_or_end(Duration::from_secs(5), |_| false),
        )
        .await;
    }
    let closed = c.closed.as_ref().expect("closed at the maximum duration");
    assert!(closed.output.contains("maximum duration"), "{closed:?}");
}

#[tokio::test]
async fn the_agent_session_state_reaches_the_client() {
    // sessionplugin.go / datachannel.go SendAgentSessionStateMessage; clients must ignore it.
    let emu = emulator(Config::default()).await;
    let EchoSession { client: mut c, .. } = echo_session(&emu, "1.2.650.0").await;
    c.send(PayloadType::Flag, PortFlag::TerminateSession.to_bytes().to_vec());
    c.run_until(Duration::from_secs(10), |c| c.closed.is_some()).await;
    let states = c
        .ignored
        .iter()
        .filter(|t| **t == MessageType::AgentSessionState)
        .count();
    assert_eq!(states, 2, "Connected and Terminating: {:?}", c.ignored);
}

#[tokio::test]
async fn basic_mode_ends_the_session_when_the_redial_fails() {
    // port_basic.go HandleStreamMessage: a failed re-dial fails the message; the session ends.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let emu = emulator(Config::default()).await;
    let (_, mut c) = session(&emu, "AWS-StartPortForwardingSession", port).await;
    c.handshake("1.0.0.0").await;
    let (mut dest, _) = listener.accept().await.unwrap();
    drop(listener); // nothing listens any more
    c.send(PayloadType::Output, b"one".to_vec());
    c.run_until(Duration::from_secs(5), |c| c.channel.unacked() == 0).await;
    let mut buf = [0u8; 3];
    dest.read_exact(&mut buf).await.unwrap();
    c.send(PayloadType::Flag, PortFlag::DisconnectToPort.to_bytes().to_vec());
    c.run_until(Duration::from_secs(5), |c| c.channel.unacked() == 0).await;
    c.send(PayloadType::Output, b"two".to_vec());
    c.run_until(Duration::from_secs(10), |c| c.closed.is_some()).await;
    let closed = c.closed.as_ref().unwrap();
    assert!(closed.output.contains("Unable to connect"), "{closed:?}");
    assert_eq!(
        c.channel.unacked(),
        1,
        "the message that needed the re-dial is not acked"
    );
}

#[tokio::test]
async fn ssh_mode_ends_the_session_on_disconnect_to_port() {
    // port_basic.go: DisconnectToPort closes the connection; in SSH mode the read error ends it.
    let emu = emulator(Config::default()).await;
    let echo = echo_server().await;
    let (_, mut c) = session(&emu, "AWS-StartSSHSession", echo).await;
    c.handshake("1.2.650.0").await;
    c.send(PayloadType::Output, b"ping".to_vec());
    c.run_until(Duration::from_secs(5), |c| c.output_len() >= 4).await;
    c.send(PayloadType::Flag, PortFlag::DisconnectToPort.to_bytes().to_vec());
    c.run_until(Duration::from_secs(10), |c| c.closed.is_some()).await;
}

/// smux frames in a byte stream: (cmd, stream id, body length).
fn smux_frames(mut bytes: &[u8]) -> Vec<(u8, u32, usize)> {
    let mut out = Vec::new();
    while bytes.len() >= HEADER_LEN {
        let cmd = bytes[1];
        let len = usize::from(u16::from_le_bytes([bytes[2], bytes[3]]));
        let id = u32::from_le_bytes([bytes[4], bytes[5], bytes[6], bytes[7]]);
        let body = if cmd == Cmd::Psh as u8 { len } else { 0 };
        if bytes.len() < HEADER_LEN + body {
            break;
        }
        out.push((cmd, id, body));
        bytes = &bytes[HEADER_LEN + body..];
    }
    out
}

#[tokio::test]
async fn smux_carries_32_kib_frames_over_1_kib_messages_and_answers_fin() {
    // port_mux.go handleDataTransfer: io.Copy's 32 KiB reads become PSH frames that the
    // 1 KiB-per-message pump splits; a client FIN is answered with the agent's own.
    const LEN: usize = 200 * 1024;
    let emu = emulator(Config::default()).await;
    let port = source_server(LEN).await;
    let (_, mut c) = session(&emu, "AWS-StartPortForwardingSession", port).await;
    c.handshake("1.2.650.0").await;
    let mut mux = Mux::new(Side::Client, false, Instant::now());
    let id = mux.open_stream().unwrap();
    while let Some(b) = mux.poll_output(1024) {
        c.send(PayloadType::Output, b);
    }
    let carried = |c: &TestClient| -> usize {
        let stream: Vec<u8> = c
            .received
            .iter()
            .filter(|(t, _)| *t == PayloadType::Output)
            .flat_map(|(_, p)| p.iter().copied())
            .collect();
        smux_frames(&stream).iter().map(|(.., n)| *n).sum()
    };
    c.run_until(Duration::from_secs(60), |c| carried(c) >= LEN).await;
    let messages: Vec<usize> = c
        .received
        .iter()
        .filter(|(t, _)| *t == PayloadType::Output)
        .map(|(_, p)| p.len())
        .collect();
    assert!(messages.iter().all(|n| *n <= 1024), "a message above 1024 bytes");
    let stream = c.take_output();
    let frames = smux_frames(&stream);
    let largest = frames
        .iter()
        .filter(|(cmd, ..)| *cmd == Cmd::Psh as u8)
        .map(|(.., n)| *n)
        .max();
    assert_eq!(largest, Some(32 * 1024), "{frames:?}");
    mux.handle_input(Instant::now(), &stream).unwrap();
    let mut got = Vec::new();
    while let Some(ev) = mux.poll_event() {
        if let MuxEvent::Data(_, d) = ev {
            got.extend_from_slice(&d);
        }
    }
    assert_eq!(got, random_bytes(LEN, 11));
    // The client closes its stream; the agent answers with FIN.
    mux.close_stream(id);
    while let Some(b) = mux.poll_output(1024) {
        c.send(PayloadType::Output, b);
    }
    c.run_until(Duration::from_secs(10), |c| {
        c.received.iter().any(|(t, p)| {
            *t == PayloadType::Output
                && smux_frames(p)
                    .iter()
                    .any(|(cmd, sid, _)| *cmd == Cmd::Fin as u8 && *sid == id)
        })
    })
    .await;
}
