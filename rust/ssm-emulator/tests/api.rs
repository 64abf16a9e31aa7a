//! The SSM API surface (§1.1, §11.1), tokens, and the binary's contract.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use common::*;
use futures_util::StreamExt;
use ssm_emulator::{Config, Faults, ResumeEnded};
use ssm_proto::{PayloadType, PortFlag};
use tokio_tungstenite::tungstenite::Message;

#[tokio::test]
async fn start_session_validates_target_and_document() {
    let emu = emulator(Config {
        targets: vec!["i-0aaaaaaaaaaaaaaaa".into()],
        ..Config::default()
    })
    .await;
    let (status, body) = aws_call(
        emu.addr(),
        "StartSession",
        serde_json::json!({"Target":"i-0bbbbbbbbbbbbbbbb"}),
    )
    .await;
    assert_eq!(status, 400);
    assert_eq!(body["__type"], "TargetNotConnected");
    let (status, body) = aws_call(
        emu.addr(),
        "StartSession",
        serde_json::json!({"Target":"i-0aaaaaaaaaaaaaaaa","DocumentName":"AWS-NoSuchDocument"}),
    )
    .await;
    assert_eq!(status, 400);
    assert_eq!(body["__type"], "InvalidDocument");
    let (status, body) = aws_call(emu.addr(), "StartSession", serde_json::json!({"Nope":1})).await;
    assert_eq!(status, 400);
    assert_eq!(body["__type"], "ValidationException");
    let (status, body) = aws_call(emu.addr(), "DescribeSessions", serde_json::json!({})).await;
    assert_eq!(status, 400, "{body}");

    let (status, body) = aws_call(
        emu.addr(),
        "StartSession",
        serde_json::json!({"Target":"i-0aaaaaaaaaaaaaaaa","DocumentName":"AWS-StartSSHSession"}),
    )
    .await;
    assert_eq!(status, 200);
    let sid = body["SessionId"].as_str().unwrap();
    assert!(
        sid.starts_with("emulator-") && sid.len() == "emulator-".len() + 17,
        "{sid}"
    );
    let url = body["StreamUrl"].as_str().unwrap();
    assert_eq!(
        url,
        format!("ws://{}/v1/data-channel/{sid}?role=publish_subscribe", emu.addr())
    );
    assert!(!body["TokenValue"].as_str().unwrap().is_empty());
}

/// StartSession with `body`; (status, `__type`, message).
async fn start(emu: &ssm_emulator::Emulator, body: serde_json::Value) -> (u16, String, String) {
    let (status, reply) = aws_call(emu.addr(), "StartSession", body).await;
    let text = |k: &str| reply[k].as_str().unwrap_or_default().to_owned();
    (status, text("__type"), text("message"))
}

/// A `ValidationException` whose message reports exactly `violations` in AWS's words.
fn assert_validation(got: (u16, String, String), violations: &[&str]) {
    let (status, kind, message) = got;
    assert_eq!((status, kind.as_str()), (400, "ValidationException"), "{message}");
    let n = violations.len();
    let head = format!("{n} validation error{} detected: ", if n == 1 { "" } else { "s" });
    assert!(message.starts_with(&head), "{message}");
    for v in violations {
        assert!(message.contains(v), "{message:?} lacks {v:?}");
    }
    assert_eq!(message.matches("failed to satisfy constraint").count(), n, "{message}");
}

#[tokio::test]
async fn start_session_checks_the_request_as_the_api_model_declares() {
    let emu = emulator(Config::default()).await;
    let ok = |v: serde_json::Value| {
        let emu = &emu;
        async move {
            let (status, kind, message) = start(emu, v).await;
            assert_eq!(status, 200, "{kind}: {message}");
        }
    };
    // Target: required, `SessionTarget` 1..400.
    assert_validation(
        start(&emu, serde_json::json!({"DocumentName": "AWS-StartSSHSession"})).await,
        &["Value null at 'target' failed to satisfy constraint: Member must not be null"],
    );
    assert_validation(
        start(&emu, serde_json::json!({"Target": ""})).await,
        &["Value '' at 'target' failed to satisfy constraint: Member must have length greater than or equal to 1"],
    );
    let long = format!("i-{}", "0".repeat(399));
    assert_validation(
        start(&emu, serde_json::json!({"Target": long})).await,
        &["at 'target' failed to satisfy constraint: Member must have length less than or equal to 400"],
    );
    // DocumentName: `DocumentARN`'s pattern, which bounds the length too.
    for bad in ["a b c", "AB", &"A".repeat(129), "AWS-Start*"] {
        assert_validation(
            start(&emu, serde_json::json!({"Target": TARGET, "DocumentName": bad})).await,
            &[format!(
                "Value '{bad}' at 'documentName' failed to satisfy constraint: Member must satisfy regular \
                 expression pattern: ^[a-zA-Z0-9_\\-.:/]{{3,128}}$"
            )
            .as_str()],
        );
    }
    // A well-formed name of no document is the modelled `InvalidDocument`.
    let (status, kind, message) = start(
        &emu,
        serde_json::json!({"Target": TARGET, "DocumentName": "AWS-NoSuchDocument"}),
    )
    .await;
    assert_eq!((status, kind.as_str()), (400, "InvalidDocument"), "{message}");
    assert!(message.contains("AWS-NoSuchDocument"), "{message}");
    // A document ARN names the document.
    ok(serde_json::json!({"Target": TARGET, "DocumentName": "arn:aws:ssm:us-east-1:123456789012:document/AWS-StartSSHSession", "Parameters": {"portNumber": ["22"]}})).await;
    // Reason: `SessionReason`, 1..256 and one line.
    assert_validation(
        start(&emu, serde_json::json!({"Target": TARGET, "Reason": ""})).await,
        &["at 'reason' failed to satisfy constraint: Member must have length greater than or equal to 1"],
    );
    assert_validation(
        start(&emu, serde_json::json!({"Target": TARGET, "Reason": "x".repeat(257)})).await,
        &["at 'reason' failed to satisfy constraint: Member must have length less than or equal to 256"],
    );
    assert_validation(
        start(&emu, serde_json::json!({"Target": TARGET, "Reason": "two\nlines"})).await,
        &["at 'reason' failed to satisfy constraint: Member must satisfy regular expression pattern: ^.{1,256}$"],
    );
    ok(serde_json::json!({"Target": TARGET, "Reason": "ticket 42: database maintenance"})).await;
    // Parameters: names 1..255, values 1..65535.
    assert_validation(
        start(&emu, serde_json::json!({"Target": TARGET, "Parameters": {"": ["22"]}})).await,
        &["Value '{=[22]}' at 'parameters' failed to satisfy constraint: Map keys must satisfy constraint"],
    );
    assert_validation(
        start(
            &emu,
            serde_json::json!({"Target": TARGET, "Parameters": {"portNumber": [""]}}),
        )
        .await,
        &["at 'parameters' failed to satisfy constraint: Map value must satisfy constraint"],
    );
    // Everything wrong is reported at once.
    assert_validation(
        start(
            &emu,
            serde_json::json!({"Target": "", "DocumentName": "no way", "Reason": ""}),
        )
        .await,
        &["at 'target'", "at 'documentName'", "at 'reason'"],
    );
    assert_eq!(
        emu.stats().sessions_started,
        2,
        "only the two valid requests started sessions"
    );
}

#[tokio::test]
async fn ecs_task_targets_take_sessions_like_instance_ids() {
    let emu = emulator(Config::default()).await;
    // `ecs:<cluster>_<task-id>_<runtime-id>`, the agent's own id in an ECS task.
    for target in [
        "ecs:prod_0123456789abcdef0123456789abcdef_0123456789abcdef0123456789abcdef-3681984407",
        "ecs:my_cluster_9781c248-0edd-4cdb-9a93-f63cb662a5d3_1234567890",
    ] {
        let (status, reply) = aws_call(emu.addr(), "StartSession", serde_json::json!({"Target": target})).await;
        assert_eq!(status, 200, "{target}: {reply}");
        let sid = reply["SessionId"].as_str().unwrap();
        let info = emu.sessions().into_iter().find(|s| s.session_id == sid).unwrap();
        assert_eq!(info.target, target);
    }
    for target in ["ecs:prod", "ecs:prod_task", "ecs:_task_runtime", "web-1"] {
        let (status, kind, message) = start(&emu, serde_json::json!({"Target": target})).await;
        assert_eq!(
            (status, kind.as_str()),
            (400, "TargetNotConnected"),
            "{target}: {message}"
        );
        assert_eq!(message, format!("{target} is not connected."));
    }
}

async fn refused_close_code(url: &str, token: &str) -> Option<u16> {
    let mut c = TestClient::connect(url, token, "1.2.650.0").await;
    match tokio::time::timeout(Duration::from_secs(5), c.ws.next()).await.ok()? {
        Some(Ok(Message::Close(Some(frame)))) => Some(frame.code.into()),
        _ => None,
    }
}

#[tokio::test]
async fn tokens_are_single_use_and_can_expire() {
    let emu = emulator(Config::default()).await;
    let EchoSession {
        session_id: sid,
        token,
        url,
        client: _client,
        ..
    } = echo_session(&emu, "1.2.650.0").await;
    assert_eq!(
        refused_close_code(&url, &token).await,
        Some(1008),
        "a used token is refused"
    );
    assert_eq!(refused_close_code(&url, "made-up").await, Some(1008));

    emu.set_faults(Faults {
        expire_tokens: true,
        ..Faults::default()
    });
    let (_, body) = aws_call(emu.addr(), "ResumeSession", serde_json::json!({"SessionId": sid})).await;
    let fresh = body["TokenValue"].as_str().unwrap().to_owned();
    assert_eq!(
        refused_close_code(&url, &fresh).await,
        Some(1008),
        "expired token refused"
    );
    assert_eq!(emu.stats().connections_refused, 3);
}

#[tokio::test]
async fn terminate_session_closes_the_channel_and_resume_then_fails() {
    let emu = emulator(Config::default()).await;
    let EchoSession {
        session_id: sid,
        client: mut c,
        ..
    } = echo_session(&emu, "1.2.650.0").await;
    let (status, _) = aws_call(emu.addr(), "TerminateSession", serde_json::json!({"SessionId": sid})).await;
    assert_eq!(status, 200);
    c.run_until(Duration::from_secs(10), |c| c.closed.is_some()).await;
    let (status, body) = aws_call(emu.addr(), "ResumeSession", serde_json::json!({"SessionId": sid})).await;
    assert_eq!((status, body["__type"].as_str()), (400, Some("DoesNotExistException")));
    let (status, body) = aws_call(emu.addr(), "ResumeSession", serde_json::json!({"SessionId": "nope"})).await;
    assert_eq!((status, body["__type"].as_str()), (400, Some("DoesNotExistException")));
}

#[tokio::test]
async fn resume_of_an_ended_session_can_answer_without_token() {
    let emu = emulator(Config {
        resume_ended: ResumeEnded::NoToken,
        ..Config::default()
    })
    .await;
    let EchoSession {
        session_id: sid,
        client: mut c,
        ..
    } = echo_session(&emu, "1.2.650.0").await;
    c.send(PayloadType::Flag, PortFlag::TerminateSession.to_bytes().to_vec());
    c.run_until(Duration::from_secs(10), |c| c.closed.is_some()).await;
    // The agent records the end as it closes; wait for that rather than guess a delay.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !emu.sessions().iter().any(|s| s.session_id == sid && s.ended) {
        assert!(tokio::time::Instant::now() < deadline, "session never marked ended");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let (status, body) = aws_call(emu.addr(), "ResumeSession", serde_json::json!({"SessionId": sid})).await;
    assert_eq!(status, 200);
    assert!(body.get("TokenValue").is_none(), "{body}");
}

#[tokio::test]
async fn unusual_frames_from_mgs_are_produced_on_request() {
    // §3.6/§11.4: NUL-padded types still decode (channel_closed has a 112-byte header always).
    let faults = Faults {
        nul_padded_types: true,
        ..Faults::default()
    };
    let emu = emulator(Config {
        faults,
        ..Config::default()
    })
    .await;
    let EchoSession { client: mut c, .. } = echo_session(&emu, "1.2.650.0").await;
    c.send(PayloadType::Flag, PortFlag::TerminateSession.to_bytes().to_vec());
    c.run_until(Duration::from_secs(10), |c| c.closed.is_some()).await;
    assert_eq!(c.closed_header_length, Some(112));
    // The handshake, HandshakeComplete and acks all came NUL-padded, and still decoded.
    assert!(c.nul_padded_frames >= 3, "{}", c.nul_padded_frames);
}

#[tokio::test]
async fn pause_publication_then_start_loses_nothing() {
    let faults = Faults {
        pause_after_frames: Some(5),
        pause_ms: 300,
        ..Faults::default()
    };
    let emu = emulator(Config {
        faults,
        ..Config::default()
    })
    .await;
    let EchoSession { client: mut c, .. } = echo_session(&emu, "1.0.0.0").await;
    let data: Vec<u8> = (0..64 * 1024).map(|i| (i % 251) as u8).collect();
    for chunk in data.chunks(1024) {
        c.send(PayloadType::Output, chunk.to_vec());
    }
    c.run_until(Duration::from_secs(30), |c| c.output_len() >= data.len())
        .await;
    assert_eq!(c.take_output(), data);
    assert!(
        c.pauses >= 1 && c.resumes >= 1,
        "pauses {} resumes {}",
        c.pauses,
        c.resumes
    );
}

#[test]
fn binary_prints_endpoints_and_exits_when_stdin_closes() {
    let mut child = Command::new(env!("CARGO_BIN_EXE_ssm-emulator"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let v: serde_json::Value = serde_json::from_str(&line).unwrap();
    let endpoint = v["endpoint"].as_str().unwrap();
    assert!(endpoint.starts_with("http://127.0.0.1:"), "{endpoint}");
    assert!(v["ca_pem"].is_null(), "plain HTTP has no CA: {v}");
    let port = v["port"].as_u64().unwrap() as u16;
    assert!(std::net::TcpStream::connect(("127.0.0.1", port)).is_ok());
    drop(child.stdin.take());
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            assert!(status.success());
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "emulator did not exit after stdin closed"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(
        std::net::TcpStream::connect(("127.0.0.1", port)).is_err(),
        "nothing left listening"
    );
}

#[test]
fn binary_with_tls_serves_https_and_writes_its_ca() {
    // A file of the test kit's, written over by the emulator.
    let placeholder = CaFile::new("ca.pem", b"");
    let ca_file = placeholder.path();
    let mut child = Command::new(env!("CARGO_BIN_EXE_ssm-emulator"))
        .args(["--tls", "--ca-file"])
        .arg(ca_file)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    drop(child.stdin.take());
    let v: serde_json::Value = serde_json::from_str(&line).unwrap();
    let endpoint = v["endpoint"].as_str().unwrap();
    assert!(endpoint.starts_with("https://127.0.0.1:"), "{endpoint}");
    let pem = v["ca_pem"].as_str().unwrap();
    assert!(pem.starts_with("-----BEGIN CERTIFICATE-----"), "{pem}");
    assert_eq!(std::fs::read_to_string(ca_file).unwrap(), pem);
    assert!(child.wait().unwrap().success());
}

#[tokio::test]
async fn with_tls_the_endpoint_is_https_and_the_ca_is_handed_out() {
    // The TLS dial itself is the client's tests' (ssm-session and ssm-cli `tls`).
    let (emu, ca) = tls_emulator(Config::default()).await;
    assert_eq!(emu.endpoint(), format!("https://{}", emu.addr()));
    assert_eq!(std::fs::read_to_string(ca.path()).unwrap(), emu.ca_pem().unwrap());
    assert!(emulator(Config::default()).await.ca_pem().is_none());
    assert_eq!(emu.stats().sessions_started, 0);
}

#[tokio::test]
async fn a_ping_before_the_open_message_is_tolerated() {
    // The official plugin's pinger can win the race with its token message.
    use futures_util::SinkExt;
    let emu = emulator(Config::default()).await;
    let echo = echo_server().await;
    let (_, token, url) = start_port_session(emu.addr(), "AWS-StartPortForwardingSession", echo).await;
    let (mut ws, _) = tokio_tungstenite::connect_async(&url).await.unwrap();
    ws.send(Message::Ping(b"keepalive".to_vec().into())).await.unwrap();
    let open = ssm_proto::OpenDataChannel {
        message_schema_version: "1.0".into(),
        request_id: "00000000-0000-4000-8000-000000000009".into(),
        token_value: token,
        client_id: String::new(),
        client_version: "1.2.650.0".into(),
    };
    ws.send(Message::text(open.to_json())).await.unwrap();
    // The first stream message, past pongs and the agent's session state (§4.9).
    let frame = loop {
        let next = tokio::time::timeout(Duration::from_secs(10), ws.next()).await.unwrap();
        match next {
            Some(Ok(Message::Pong(_))) => continue,
            Some(Ok(Message::Binary(bytes))) => {
                let frame = ssm_proto::Frame::decode(&bytes).unwrap();
                if frame.message_type == ssm_proto::MessageType::AgentSessionState {
                    continue;
                }
                break frame;
            }
            other => panic!("expected the handshake request, got {other:?}"),
        }
    };
    assert_eq!(frame.payload_type, PayloadType::HandshakeRequest);
    assert_eq!(emu.stats().connections_refused, 0);
}

/// `mgs_nodelay` decides `TCP_NODELAY` on every socket the listener accepts, plain and TLS;
/// off (Nagle on, the less kind peer) by default.
#[tokio::test]
async fn mgs_nodelay_decides_nagle_on_accepted_sockets() {
    for tls in [false, true] {
        for nodelay in [None, Some(false), Some(true)] {
            let mut config = Config {
                tls,
                ..Config::default()
            };
            if let Some(on) = nodelay {
                config.mgs_nodelay = on;
            }
            let emu = emulator(config).await;
            let _conn = tokio::net::TcpStream::connect(emu.addr()).await.unwrap();
            let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
            let stats = loop {
                let stats = emu.stats();
                if stats.accepted_nodelay + stats.accepted_nagle > 0 {
                    break stats;
                }
                assert!(tokio::time::Instant::now() < deadline, "tls {tls}: no accept counted");
                tokio::time::sleep(Duration::from_millis(10)).await;
            };
            let want = nodelay.unwrap_or(false);
            assert_eq!(
                (stats.accepted_nodelay, stats.accepted_nagle),
                (u64::from(want), u64::from(!want)),
                "tls {tls}, mgs_nodelay {nodelay:?}"
            );
        }
    }
}

#[tokio::test]
async fn throttled_start_sessions_answer_as_the_service_and_count_down() {
    let emu = emulator(ssm_emulator::Config {
        faults: ssm_emulator::Faults {
            throttle_start_sessions: 2,
            ..Default::default()
        },
        ..Default::default()
    })
    .await;
    let req = serde_json::json!({"Target": TARGET, "DocumentName": "AWS-StartPortForwardingSession"});
    for _ in 0..2 {
        let (status, body) = aws_call(emu.addr(), "StartSession", req.clone()).await;
        assert_eq!(status, 400, "{body}");
        assert_eq!(body["__type"], "ThrottlingException", "{body}");
        assert_eq!(body["message"], "Rate exceeded", "{body}");
    }
    assert!(emu.sessions().is_empty(), "a throttled call starts nothing");
    let (status, body) = aws_call(emu.addr(), "StartSession", req.clone()).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(emu.stats().start_sessions_throttled, 2);
    assert_eq!(emu.stats().sessions_started, 1);

    // Set again through the control API, and read back.
    let body = r#"{"throttle_start_sessions":1}"#;
    let post = format!(
        "POST /_emulator/faults HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        emu.addr(),
        body.len()
    );
    let mut s = tokio::net::TcpStream::connect(emu.addr()).await.expect("connect");
    tokio::io::AsyncWriteExt::write_all(&mut s, post.as_bytes())
        .await
        .expect("post");
    let answer = String::from_utf8(read_all(s, 10).await).expect("utf-8");
    assert!(answer.starts_with("HTTP/1.1 204"), "{answer}");
    let (status, body) = aws_call(emu.addr(), "StartSession", req.clone()).await;
    assert_eq!((status, body["__type"].as_str()), (400, Some("ThrottlingException")));
    let (status, _) = aws_call(emu.addr(), "StartSession", req).await;
    assert_eq!(status, 200);
    emu.stop().await;
}
