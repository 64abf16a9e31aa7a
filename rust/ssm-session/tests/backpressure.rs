//! The data channel under a slow local reader, a link that stops moving without closing, and an
//! agent that never acknowledges (issue: never lose, stall or leak).
//!
//! The emulated agent here is the real one's shape (§4.5): head-only retransmission once per
//! 100 ms, no send window, and a socket write that blocks when the client does not read.

mod common;

use std::time::{Duration, Instant};

use common::*;
use ssm_emulator::{Config, Faults, Pacing};
use ssm_proto::PortMode;

const MIB: u64 = 1 << 20;

fn unpaced(faults: Faults) -> Config {
    Config {
        pacing: Pacing::Unpaced { chunk: 1024 },
        faults,
        ..Config::default()
    }
}

/// A local reader that reads nothing for 6 s while 80 MiB are pushed at it, through a forward
/// whose mode is `mode`; `adjust` sets the client up for it. Every byte must arrive, in order,
/// over the one WebSocket (no reconnect), and the connection must not be reset.
async fn stalled_reader_gets_everything(
    agent_version: &str,
    mode: PortMode,
    adjust: impl FnOnce(&mut ssm_session::ForwardOptions),
) {
    let emu = emulator(Config {
        agent_version: agent_version.into(),
        ..unpaced(Faults::default())
    })
    .await;
    let api = api(&emu.endpoint()).await;
    let mut dest = destination().await;
    let fwd = forward(&api, dest.port, adjust).await;
    assert_eq!(fwd.mode(), mode);
    let down = 80 * MIB;
    let started = Instant::now();
    let client = exchange_reading_after(
        fwd.local_addr(),
        1,
        0,
        down,
        Duration::from_secs(6),
        Duration::from_secs(120),
    )
    .await;
    let mut pending = Vec::new();
    let server = report_for(&mut dest, 1, &mut pending).await;
    check_exchange(&client, &server, 0, down);
    let stats = emu.stats();
    eprintln!(
        "80 MiB to a reader stalled for 6 s in {:.2?}; {stats:?}",
        started.elapsed()
    );
    assert_eq!(stats.connections, 1, "no reconnect: {stats:?}");
    assert_eq!(
        fwd.stats().connections_reset.load(std::sync::atomic::Ordering::Relaxed),
        0,
        "the connection was reset"
    );
    tokio::time::timeout(Duration::from_secs(30), fwd.stop())
        .await
        .expect("stop within 30 s")
        .expect("stop");
    emu.stop().await;
}

/// The forward's queues fill (the connection's 1 MiB, then the data channel's 1 MiB); from then
/// on the client must stop reading the WebSocket so that TCP holds the agent's writes. Reading
/// on and refusing what does not fit made the agent, which keeps no window and resends only its
/// oldest message once per 100 ms, deliver the surplus at one message per tick: about 6 000
/// ticks, ten minutes, here.
///
/// Basic mode (agent up to 3.0.196.0, client below 1.1.70, §7.1): there the connection is the
/// whole session, so its full queue stops the session loop reading the channel.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_local_reader_holds_the_agent_back_instead_of_losing_its_messages() {
    stalled_reader_gets_everything("3.0.196.0", PortMode::Basic, |o| {
        o.channel.client_version = "1.1.0".into()
    })
    .await;
}

/// smux mode with a single local connection: nobody else shares the session, so a connection
/// that falls behind holds the agent back as in basic mode, instead of being queued for up to
/// its stream buffer and then reset (the rule while several connections share the session,
/// isolation.rs). Its stream buffer here is far below what the reader falls behind.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sole_stalled_mux_connection_holds_the_agent_back_instead_of_being_reset() {
    stalled_reader_gets_everything(
        &Config::default().agent_version,
        PortMode::Mux { keepalive: false },
        |o| o.mux.stream_buffer = 256 << 10,
    )
    .await;
}

/// The emulator freezes the socket mid-upload: it stays open and nothing more is read from it
/// or written to it. The client's writes fill the socket buffer; they must time out, the link
/// be given up and the session resumed on a new socket, without losing a byte.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_link_is_given_up_within_the_write_timeout_and_the_session_resumed() {
    let emu = emulator(unpaced(Faults {
        freeze_after_frames: Some(2_000),
        ..Faults::default()
    }))
    .await;
    let recorder = ApiRecorder::start(emu.addr()).await;
    let api = api(&recorder.endpoint).await;
    let mut dest = destination().await;
    let fwd = forward(&api, dest.port, |o| {
        o.channel.write_timeout = Duration::from_secs(3);
        o.channel.dead_after = Duration::from_secs(5);
    })
    .await;
    let up = 48 * MIB;
    let started = Instant::now();
    let client = exchange(fwd.local_addr(), 1, up, 64 << 10, Duration::from_secs(90)).await;
    let mut pending = Vec::new();
    let server = report_for(&mut dest, 1, &mut pending).await;
    check_exchange(&client, &server, up, 64 << 10);
    let stats = emu.stats();
    eprintln!("48 MiB up across a frozen link in {:.2?}; {stats:?}", started.elapsed());
    assert_eq!(stats.sockets_frozen, 1, "{stats:?}");
    assert_eq!(stats.connections, 2, "one resume: {stats:?}");
    assert_eq!(recorder.calls(), ["StartSession", "ResumeSession"]);
    tokio::time::timeout(Duration::from_secs(30), fwd.stop())
        .await
        .expect("stop within 30 s")
        .expect("stop");
    emu.stop().await;
}

/// An agent that reads our data but never acknowledges it: the client retransmits, and after
/// `unacked_limit` gives the session up with an error that says so, instead of retransmitting
/// for ever.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn data_never_acknowledged_is_given_up_after_the_limit() {
    let emu = emulator(unpaced(Faults {
        withhold_acks: 1.0,
        ..Faults::default()
    }))
    .await;
    let api = api(&emu.endpoint()).await;
    // A destination that only reads: nothing comes back, so the client keeps reading its socket
    // and the silence is the agent's alone.
    let sink = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind sink");
    let sink_port = sink.local_addr().expect("sink addr").port();
    let _sink = tokio::spawn(async move {
        while let Ok((mut s, _)) = sink.accept().await {
            tokio::spawn(async move {
                let _ = tokio::io::copy(&mut s, &mut tokio::io::sink()).await;
            });
        }
    });
    let mut fwd = forward(&api, sink_port, |o| {
        o.channel.unacked_limit = Duration::from_secs(3);
    })
    .await;
    let mut conn = tokio::net::TcpStream::connect(fwd.local_addr()).await.expect("connect");
    tokio::io::AsyncWriteExt::write_all(&mut conn, &[7u8; 4096])
        .await
        .expect("write");
    let started = Instant::now();
    let end = tokio::time::timeout(Duration::from_secs(60), fwd.wait())
        .await
        .expect("the forward gives up within 60 s");
    let err = end.expect_err("the forward ends with an error").to_string();
    eprintln!("gave up after {:.2?}: {err}", started.elapsed());
    assert!(err.contains("not acknowledged"), "{err}");
    emu.stop().await;
}
