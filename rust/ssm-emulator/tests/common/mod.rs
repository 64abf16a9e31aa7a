//! A minimal data-channel client for exercising the emulator: raw HTTP for the API
//! (`ssm_testkit::aws_call`), a tokio-tungstenite socket, and an `ssm_proto::Channel`. The
//! product client lives elsewhere; this one only needs to be obviously correct.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use ssm_proto::{Channel, Config, Event, OpenDataChannel, PayloadType};
pub use ssm_testkit::*;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;

pub type Ws = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<TcpStream>>;

pub struct TestClient {
    pub ws: Ws,
    pub channel: Channel,
    pub received: Vec<(PayloadType, Vec<u8>)>,
    pub closed: Option<ssm_proto::ChannelClosed>,
    pub pauses: usize,
    pub resumes: usize,
    /// Message types the channel passed over (e.g. `agent_session_state`).
    pub ignored: Vec<ssm_proto::MessageType>,
    /// `HeaderLength` of the `channel_closed` frame, as it came off the wire.
    pub closed_header_length: Option<u32>,
    /// Frames whose message type came padded with NULs on the left.
    pub nul_padded_frames: usize,
}

impl TestClient {
    pub async fn connect(url: &str, token: &str, client_version: &str) -> Self {
        let (mut ws, _) = tokio_tungstenite::connect_async(url).await.unwrap();
        let open = OpenDataChannel {
            message_schema_version: "1.0".into(),
            request_id: "00000000-0000-4000-8000-000000000001".into(),
            token_value: token.into(),
            client_id: "00000000-0000-4000-8000-000000000002".into(),
            client_version: client_version.into(),
        };
        ws.send(Message::text(open.to_json())).await.unwrap();
        let channel = Channel::new(Config::client(), Instant::now(), 1_700_000_000_000, 7);
        Self {
            ws,
            channel,
            received: Vec::new(),
            closed: None,
            pauses: 0,
            resumes: 0,
            ignored: Vec::new(),
            closed_header_length: None,
            nul_padded_frames: 0,
        }
    }

    /// Replaces the socket with a new one opened with `token` (after ResumeSession), keeping
    /// the channel's sequence state; like the agent, this client does not resend on its own.
    pub async fn reconnect(&mut self, url: &str, token: &str, client_version: &str) {
        let fresh = Self::connect(url, token, client_version).await;
        self.ws = fresh.ws;
    }

    /// Writes what the channel queued; false when the socket is gone.
    async fn flush(&mut self) -> bool {
        while let Some(f) = self.channel.poll_transmit() {
            if self.ws.send(Message::binary(f)).await.is_err() {
                return false;
            }
        }
        true
    }

    /// Processes socket traffic until `done` says so or `limit` passes; panics on timeout and
    /// when the socket ends first.
    pub async fn run_until(&mut self, limit: Duration, done: impl FnMut(&Self) -> bool) {
        assert!(
            self.run_until_or_end(limit, done).await,
            "socket ended before the condition held"
        );
    }

    /// Like `run_until`, but returns false when the socket ends first.
    pub async fn run_until_or_end(&mut self, limit: Duration, mut done: impl FnMut(&Self) -> bool) -> bool {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let open = self.flush().await;
            if done(self) {
                return true;
            }
            if !open {
                return false;
            }
            let timer = self.channel.poll_timeout().map(tokio::time::Instant::from_std);
            tokio::select! {
                msg = self.ws.next() => match msg {
                    Some(Ok(Message::Binary(b))) => {
                        if b.get(4) == Some(&0) {
                            self.nul_padded_frames += 1;
                        }
                        if b.get(4..18) == Some(b"channel_closed".as_slice()) {
                            self.closed_header_length = b.get(..4).map(|h| u32::from_be_bytes([h[0], h[1], h[2], h[3]]));
                        }
                        let _ = self.channel.handle_frame(Instant::now(), &b);
                        while let Some(ev) = self.channel.poll_event() {
                            match ev {
                                Event::Stream { payload_type, payload, .. } => self.received.push((payload_type, payload)),
                                Event::ChannelClosed(c) => self.closed = Some(c),
                                Event::Paused => self.pauses += 1,
                                Event::Resumed => self.resumes += 1,
                                Event::Ignored(t) => self.ignored.push(t),
                            }
                        }
                    }
                    Some(Ok(_)) => {}
                    Some(Err(_)) | None => return done(self),
                },
                _ = tokio::time::sleep_until(timer.unwrap_or(deadline)) => {
                    self.channel.handle_timeout(Instant::now());
                }
                _ = tokio::time::sleep_until(deadline) => panic!("condition not met within {limit:?}"),
            }
        }
    }

    pub fn send(&mut self, payload_type: PayloadType, data: Vec<u8>) {
        self.channel.send(Instant::now(), payload_type, data).unwrap();
    }

    /// Answers the HandshakeRequest and waits for HandshakeComplete.
    pub async fn handshake(&mut self, client_version: &str) -> ssm_proto::handshake::ClientHandshake {
        self.run_until(Duration::from_secs(10), |c| {
            c.received.iter().any(|(t, _)| *t == PayloadType::HandshakeRequest)
        })
        .await;
        let (_, req) = self.received.remove(0);
        let (hs, response) = ssm_proto::handshake::client_respond(&req, client_version).unwrap();
        self.send(PayloadType::HandshakeResponse, response);
        self.run_until(Duration::from_secs(10), |c| {
            c.received.iter().any(|(t, _)| *t == PayloadType::HandshakeComplete)
        })
        .await;
        self.received.retain(|(t, _)| *t != PayloadType::HandshakeComplete);
        hs
    }

    /// Concatenated type-1 payloads received so far (removing them).
    pub fn take_output(&mut self) -> Vec<u8> {
        let mut out = Vec::new();
        self.received.retain(|(t, p)| {
            if *t == PayloadType::Output {
                out.extend_from_slice(p);
                false
            } else {
                true
            }
        });
        out
    }

    /// The type-1 payloads received so far, each as it came.
    pub fn outputs(&self) -> impl Iterator<Item = &[u8]> {
        self.received
            .iter()
            .filter(|(t, _)| *t == PayloadType::Output)
            .map(|(_, p)| p.as_slice())
    }

    pub fn output_len(&self) -> usize {
        self.outputs().map(<[u8]>::len).sum()
    }
}

/// StartSession for a port forward to `port`; returns (session id, token, stream url).
pub async fn start_port_session(addr: SocketAddr, document: &str, port: u16) -> (String, String, String) {
    let (status, body) = aws_call(
        addr,
        "StartSession",
        serde_json::json!({"Target":TARGET,"DocumentName":document,
            "Parameters":{"portNumber":[port.to_string()],"localPortNumber":["0"]}}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    (
        body["SessionId"].as_str().unwrap().to_owned(),
        body["TokenValue"].as_str().unwrap().to_owned(),
        body["StreamUrl"].as_str().unwrap().to_owned(),
    )
}

/// A port-forwarding session to a fresh echo server, its client connected as `client_version`
/// and past the handshake.
pub struct EchoSession {
    pub session_id: String,
    pub token: String,
    pub url: String,
    pub client: TestClient,
    pub handshake: ssm_proto::handshake::ClientHandshake,
    pub echo_port: u16,
}

pub async fn echo_session(emu: &ssm_emulator::Emulator, client_version: &str) -> EchoSession {
    let echo_port = echo_server().await;
    let (session_id, token, url) = start_port_session(emu.addr(), "AWS-StartPortForwardingSession", echo_port).await;
    let mut client = TestClient::connect(&url, &token, client_version).await;
    let handshake = client.handshake(client_version).await;
    EchoSession {
        session_id,
        token,
        url,
        client,
        handshake,
        echo_port,
    }
}
