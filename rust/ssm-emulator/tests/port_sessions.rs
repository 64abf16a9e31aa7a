//! The emulator serves port sessions (§7) to real loopback TCP destinations.

mod common;

use std::time::Duration;

use common::*;
use ssm_emulator::{Config, Faults, Pacing, faults::DirectionFaults};
use ssm_proto::smux::{Mux, MuxEvent, Side};
use ssm_proto::{PayloadType, PortFlag, PortMode};

#[tokio::test]
async fn basic_mode_echoes_through_a_real_destination() {
    let emu = emulator(Config::default()).await;
    // A client below 1.1.70 gets basic mode from the agent (§7.1).
    let EchoSession {
        session_id: sid,
        client: mut c,
        handshake: hs,
        echo_port: echo,
        ..
    } = echo_session(&emu, "1.0.0.0").await;
    assert_eq!(hs.agent_version, "3.3.2299.0");
    let props: ssm_proto::PortProperties = serde_json::from_value(hs.properties).unwrap();
    assert_eq!(props.kind.as_deref(), Some("LocalPortForwarding"));
    assert_eq!(props.port_number, echo.to_string());

    let data = random_bytes(100_000, 1);
    for chunk in data.chunks(1024) {
        c.send(PayloadType::Output, chunk.to_vec());
    }
    c.run_until(Duration::from_secs(20), |c| c.output_len() >= data.len())
        .await;
    assert_eq!(c.take_output(), data);
    let info = emu.sessions().into_iter().find(|s| s.session_id == sid).unwrap();
    assert_eq!(info.port_mode, format!("{:?}", PortMode::Basic));

    // TerminateSession flag ends the session with channel_closed (§7.2, §4.8).
    c.send(PayloadType::Flag, PortFlag::TerminateSession.to_bytes().to_vec());
    c.run_until(Duration::from_secs(10), |c| c.closed.is_some()).await;
    assert_eq!(c.closed.as_ref().unwrap().session_id, sid);
}

/// Unpaced, a basic session's destination is read ahead and cut into messages of `chunk`
/// bytes at most: everything arrives, in order, and no message is larger.
#[tokio::test]
async fn unpaced_output_is_cut_into_messages_of_at_most_the_chunk() {
    let emu = emulator(Config {
        pacing: Pacing::Unpaced { chunk: 1000 },
        ..Config::default()
    })
    .await;
    let EchoSession { client: mut c, .. } = echo_session(&emu, "1.0.0.0").await;
    let data = random_bytes(200_000, 2);
    for chunk in data.chunks(1024) {
        c.send(PayloadType::Output, chunk.to_vec());
    }
    c.run_until(Duration::from_secs(20), |c| c.output_len() >= data.len())
        .await;
    let sizes: Vec<usize> = c.outputs().map(<[u8]>::len).collect();
    assert_eq!(c.take_output(), data);
    let largest = sizes.iter().copied().max().unwrap_or(0);
    assert!(largest <= 1000, "a message of {largest} bytes (chunk 1000)");
    assert!(
        sizes.iter().filter(|&&n| n == 1000).count() * 2 >= sizes.len(),
        "mostly short messages for bytes that came in 1024-byte writes: {sizes:?}"
    );
}

#[tokio::test]
async fn smux_mode_carries_concurrent_streams() {
    let emu = emulator(Config {
        pacing: Pacing::Unpaced { chunk: 1024 },
        ..Config::default()
    })
    .await;
    let EchoSession {
        session_id: sid,
        client: mut c,
        handshake: hs,
        ..
    } = echo_session(&emu, "1.2.650.0").await;
    let props: ssm_proto::PortProperties = serde_json::from_value(hs.properties).unwrap();
    assert_eq!(
        PortMode::for_client(props.kind.as_deref(), &hs.agent_version),
        PortMode::Mux { keepalive: false }
    );

    let now = std::time::Instant::now();
    let mut mux = Mux::new(Side::Client, false, now);
    let streams: Vec<u32> = (0..4).map(|_| mux.open_stream().unwrap()).collect();
    let payloads: Vec<Vec<u8>> = streams.iter().map(|id| random_bytes(50_000, u64::from(*id))).collect();
    for (id, p) in streams.iter().zip(&payloads) {
        mux.write(*id, p).unwrap();
    }
    while let Some(chunk) = mux.poll_output(1024) {
        c.send(PayloadType::Output, chunk);
    }
    let mut got: std::collections::HashMap<u32, Vec<u8>> = Default::default();
    let total: usize = payloads.iter().map(Vec::len).sum();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while got.values().map(Vec::len).sum::<usize>() < total {
        assert!(tokio::time::Instant::now() < deadline, "echo incomplete");
        c.run_until(Duration::from_secs(30), |c| c.output_len() > 0).await;
        mux.handle_input(now, &c.take_output()).unwrap();
        while let Some(ev) = mux.poll_event() {
            if let MuxEvent::Data(id, d) = ev {
                got.entry(id).or_default().extend(d);
            }
        }
    }
    for (id, p) in streams.iter().zip(&payloads) {
        assert_eq!(got.get(id), Some(p), "stream {id}");
    }
    let info = emu.sessions().into_iter().find(|s| s.session_id == sid).unwrap();
    assert_eq!(info.port_mode, format!("{:?}", PortMode::Mux { keepalive: false }));
    assert_eq!(info.client_version, "1.2.650.0");
}

#[tokio::test]
async fn smux_stream_to_closed_port_gets_connect_error_flag() {
    let emu = emulator(Config::default()).await;
    // A port nothing listens on: bind, note, close.
    let port = free_port();
    let (_, token, url) = start_port_session(emu.addr(), "AWS-StartPortForwardingSession", port).await;
    let mut c = TestClient::connect(&url, &token, "1.2.650.0").await;
    c.handshake("1.2.650.0").await;
    let now = std::time::Instant::now();
    let mut mux = Mux::new(Side::Client, false, now);
    let id = mux.open_stream().unwrap();
    c.send(PayloadType::Output, mux.poll_output(1024).unwrap());
    c.run_until(Duration::from_secs(10), |c| {
        c.received.iter().any(|(t, _)| *t == PayloadType::Flag)
    })
    .await;
    let flag = c.received.iter().find(|(t, _)| *t == PayloadType::Flag).unwrap();
    assert_eq!(PortFlag::parse(&flag.1).unwrap(), PortFlag::ConnectToPortError);
    c.run_until(Duration::from_secs(10), |c| c.output_len() > 0).await;
    mux.handle_input(now, &c.take_output()).unwrap();
    assert_eq!(mux.poll_event(), Some(MuxEvent::Closed(id)));
}

#[tokio::test]
async fn ssh_document_is_stdio_and_ends_when_the_destination_closes() {
    let emu = emulator(Config::default()).await;
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = l.local_addr().unwrap().port();
    tokio::spawn(async move {
        use tokio::io::AsyncWriteExt;
        let (mut s, _) = l.accept().await.unwrap();
        s.write_all(b"SSH-2.0-Fake\r\n").await.unwrap();
    });
    let (sid, token, url) = start_port_session(emu.addr(), "AWS-StartSSHSession", port).await;
    let mut c = TestClient::connect(&url, &token, "1.2.650.0").await;
    let hs = c.handshake("1.2.650.0").await;
    let props: ssm_proto::PortProperties = serde_json::from_value(hs.properties).unwrap();
    assert_eq!(props.kind, None, "SSH sessions carry no type (§1.2)");
    c.run_until(Duration::from_secs(10), |c| c.closed.is_some()).await;
    assert_eq!(c.take_output(), b"SSH-2.0-Fake\r\n");
    assert_eq!(c.closed.as_ref().unwrap().session_id, sid);
}

#[tokio::test]
async fn lossy_network_still_delivers_everything() {
    let lossy = DirectionFaults {
        drop: 0.1,
        duplicate: 0.1,
        reorder: 0.1,
        delay_ms: 5,
    };
    let faults = Faults {
        to_client: lossy.clone(),
        to_agent: lossy,
        ..Faults::default()
    };
    let emu = emulator(Config {
        faults,
        pacing: Pacing::Unpaced { chunk: 1024 },
        ..Config::default()
    })
    .await;
    let EchoSession { client: mut c, .. } = echo_session(&emu, "1.0.0.0").await;
    let data = random_bytes(256 * 1024, 9);
    for chunk in data.chunks(1024) {
        c.send(PayloadType::Output, chunk.to_vec());
    }
    c.run_until(Duration::from_secs(60), |c| c.output_len() >= data.len())
        .await;
    assert_eq!(c.take_output(), data);
    let stats = emu.stats();
    assert!(stats.frames_dropped > 0 && stats.frames_duplicated > 0, "{stats:?}");
    assert!(stats.agent_retransmissions > 0, "{stats:?}");
}

#[tokio::test]
async fn cut_socket_resumes_with_a_fresh_token_and_keeps_sequence_state() {
    let faults = Faults {
        cut_after_frames: Some(40),
        ..Faults::default()
    };
    let emu = emulator(Config {
        faults,
        ..Config::default()
    })
    .await;
    let EchoSession {
        session_id: sid,
        token,
        url,
        client: mut c,
        ..
    } = echo_session(&emu, "1.0.0.0").await;
    let data = random_bytes(64 * 1024, 3);
    for chunk in data.chunks(1024) {
        c.send(PayloadType::Output, chunk.to_vec());
    }
    // Runs until the emulator cuts the socket.
    assert!(
        !c.run_until_or_end(Duration::from_secs(20), |_| false).await,
        "expected the socket to be cut"
    );
    assert_eq!(emu.stats().sockets_cut, 1);

    // The old token is spent; ResumeSession gives a new one (§8.2).
    let (status, body) = aws_call(emu.addr(), "ResumeSession", serde_json::json!({"SessionId": sid})).await;
    assert_eq!(status, 200, "{body}");
    let fresh = body["TokenValue"].as_str().unwrap();
    assert_ne!(fresh, token);
    let (ws, _) = tokio_tungstenite::connect_async(&url).await.unwrap();
    c.ws = ws;
    let open = ssm_proto::OpenDataChannel {
        message_schema_version: "1.0".into(),
        request_id: "00000000-0000-4000-8000-000000000003".into(),
        token_value: fresh.into(),
        client_id: "00000000-0000-4000-8000-000000000002".into(),
        client_version: "1.0.0.0".into(),
    };
    use futures_util::SinkExt;
    c.ws.send(tokio_tungstenite::tungstenite::Message::text(open.to_json()))
        .await
        .unwrap();
    c.channel.reset_transport(std::time::Instant::now());
    c.run_until(Duration::from_secs(30), |c| c.output_len() >= data.len())
        .await;
    assert_eq!(c.take_output(), data);
}
