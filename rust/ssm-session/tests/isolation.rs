//! One connection's trouble stays its own, and keepalive never ends a live session: a local
//! reader that stops reading in smux mode, idle smux sessions with keepalive on (agents after
//! 3.0.196.0 up to 3.1.1511.0, §5.5), a destination that stops reading, and output of a closed
//! basic-mode connection that must not reach the next one.
//!
//! Keepalive runs at 1 s / 4 s instead of smux's 10 s / 30 s, set alike in the emulator's agent
//! and the client, so crossing the timeout takes seconds.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use common::*;
use ssm_emulator::{Config, Pacing};
use ssm_proto::PortMode;
use ssm_proto::smux::Keepalive;
use ssm_session::{ForwardOptions, PortForward};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const MIB: u64 = 1 << 20;
const KEEPALIVE: Keepalive = Keepalive {
    interval: Duration::from_secs(1),
    timeout: Duration::from_secs(4),
};

/// The emulator as agent `agent_version` with keepalive at [`KEEPALIVE`], unpaced.
fn config(agent_version: &str) -> Config {
    Config {
        pacing: Pacing::Unpaced { chunk: 1024 },
        ..paced(agent_version)
    }
}

/// The same at the real agent's pace (1 KiB per millisecond from the destination).
fn paced(agent_version: &str) -> Config {
    Config {
        agent_version: agent_version.into(),
        pacing: Pacing::Agent,
        smux_keepalive_interval_ms: KEEPALIVE.interval.as_millis() as u64,
        smux_keepalive_timeout_ms: KEEPALIVE.timeout.as_millis() as u64,
        ..Config::default()
    }
}

fn short_keepalive(o: &mut ForwardOptions) {
    o.mux.keepalive = KEEPALIVE;
}

/// Waits a while longer than two keepalive timeouts, then checks that the forward and the
/// emulator's session are both still there.
async fn outlive_keepalive(fwd: &PortForward, emu: &ssm_emulator::Emulator) {
    tokio::time::sleep(2 * KEEPALIVE.timeout + KEEPALIVE.interval).await;
    assert!(
        !fwd.is_finished(),
        "the forward ended within {:?} of silence",
        2 * KEEPALIVE.timeout
    );
    assert!(
        !session_info(emu, fwd.session_id()).ended,
        "the agent ended the session"
    );
}

/// A connection that asks the destination for `down` bytes and then reads nothing. Its small
/// receive buffer makes the forward's queue for it grow soon.
async fn stalled_connection(addr: std::net::SocketAddr, tag: u64, down: u64) -> TcpStream {
    let socket = tokio::net::TcpSocket::new_v4().expect("socket");
    socket.set_recv_buffer_size(16 << 10).expect("SO_RCVBUF");
    let mut s = socket.connect(addr).await.expect("connect to the forward");
    let mut header = Vec::with_capacity(32);
    for v in [tag, 0, down, tag] {
        header.extend_from_slice(&v.to_le_bytes());
    }
    s.write_all(&header).await.expect("header");
    s
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_mux_connection_stalls_only_itself_and_the_session_outlives_keepalive() {
    // At the agent's real pace; the forward lets a connection fall 256 KiB behind.
    let emu = emulator(paced("3.1.1511.0")).await;
    let api = api(&emu.endpoint()).await;
    let mut dest = destination().await;
    let fwd = forward(&api, dest.port, |o| {
        short_keepalive(o);
        o.mux.stream_buffer = 256 << 10;
    })
    .await;
    assert_eq!(fwd.mode(), PortMode::Mux { keepalive: true });
    let stats = fwd.stats();
    let addr = fwd.local_addr();

    // One local program asks for far more than any buffer holds and never reads; another
    // moves 512 KiB each way at the same time. A third stays open and idle throughout: while
    // the session is shared, the one behind is reset (alone, it would hold the agent back
    // instead: backpressure.rs).
    const EACH: u64 = 512 << 10;
    let mut stalled = stalled_connection(addr, 100, 1 << 30).await;
    let bystander = TcpStream::connect(addr).await.expect("connect to the forward");
    let healthy = exchange(addr, 1, EACH, EACH, Duration::from_secs(120)).await;
    check_exchange(&healthy, &report_for(&mut dest, 1, &mut Vec::new()).await, EACH, EACH);

    // The stalled connection is the one that pays: reset once it is too far behind.
    assert!(
        wait_until(Duration::from_secs(60), || stats
            .connections_reset
            .load(Ordering::Relaxed)
            == 1)
        .await,
        "the stalled connection was not reset (forward finished: {})",
        fwd.is_finished()
    );
    let mut buf = vec![0u8; 64 << 10];
    let mut got = 0u64;
    let end = within(30, "the stalled connection ends", async {
        loop {
            match stalled.read(&mut buf).await {
                Ok(0) => break None,
                Ok(n) => got += n as u64,
                Err(e) => break Some(e.kind()),
            }
        }
    })
    .await;
    assert_eq!(
        end,
        Some(std::io::ErrorKind::ConnectionReset),
        "a truncated connection ends in a reset, not a clean end ({got} bytes read)"
    );
    // What was queued for it when it was reset was dropped, and is counted so.
    assert!(
        stats.bytes_discarded.load(Ordering::Relaxed) > 0,
        "the reset connection's queued bytes were not counted as discarded"
    );

    drop(bystander);
    // Silence from here on is longer than the keepalive timeout; the session must not mind.
    outlive_keepalive(&fwd, &emu).await;
    let after = exchange(addr, 2, EACH, EACH, Duration::from_secs(60)).await;
    check_exchange(&after, &report_for(&mut dest, 2, &mut Vec::new()).await, EACH, EACH);
    assert_eq!(stats.connections_reset.load(Ordering::Relaxed), 1);

    within(20, "stop", fwd.stop()).await.expect("stop");
    emu.stop().await;
}

/// An idle smux session with keepalive on (both sides) outlives the keepalive timeout.
async fn idle_session_survives(agent_version: &str, expect: PortMode) {
    let emu = emulator(config(agent_version)).await;
    let api = api(&emu.endpoint()).await;
    let mut dest = destination().await;
    let fwd = forward(&api, dest.port, short_keepalive).await;
    assert_eq!(fwd.mode(), expect, "the client's mode for agent {agent_version}");
    assert_eq!(
        session_info(&emu, fwd.session_id()).port_mode,
        format!("{expect:?}"),
        "the agent's mode must match the client's"
    );
    let addr = fwd.local_addr();
    let first = exchange(addr, 1, MIB, MIB, Duration::from_secs(60)).await;
    check_exchange(&first, &report_for(&mut dest, 1, &mut Vec::new()).await, MIB, MIB);

    outlive_keepalive(&fwd, &emu).await;
    let after = exchange(addr, 2, MIB, MIB, Duration::from_secs(60)).await;
    check_exchange(&after, &report_for(&mut dest, 2, &mut Vec::new()).await, MIB, MIB);

    within(20, "stop", fwd.stop()).await.expect("stop");
    emu.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_mux_sessions_with_keepalive_outlive_its_timeout() {
    // port_mux.go up to 3.1.1511.0: `smux.Server(conn, nil)`, smux's defaults, keepalive on.
    for agent in ["3.0.197.0", "3.1.1511.0"] {
        idle_session_survives(agent, PortMode::Mux { keepalive: true }).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_mux_session_with_agent_3_1_1446_outlives_the_keepalive_timeout() {
    // The one release in that range whose smux has keepalive off for every client: no NOP ever
    // comes, so a client with keepalive on would end every idle tunnel.
    idle_session_survives("3.1.1446.0", PortMode::Mux { keepalive: false }).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upload_to_a_destination_that_pauses_outlives_the_agents_keepalive() {
    // The destination reads nothing for longer than the keepalive timeout, so the agent's smux
    // holds its whole receive budget and stops reading the session; smux does not time out the
    // client then (session.go keepalive), so the session survives and every byte arrives.
    let emu = emulator(config("3.1.1511.0")).await;
    let api = api(&emu.endpoint()).await;
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let fwd = forward(&api, port, short_keepalive).await;
    assert_eq!(fwd.mode(), PortMode::Mux { keepalive: true });

    let data = random_bytes(32 << 20, 7);
    let want = sha256_hex(&data);
    let mut client = TcpStream::connect(fwd.local_addr()).await.expect("connect");
    let upload = tokio::spawn(async move {
        client.write_all(&data).await.expect("upload");
        client
    });
    let (mut server, _) = within(30, "the agent dials the destination", listener.accept())
        .await
        .expect("accept");
    // Silent: nothing read until well past the keepalive timeout.
    outlive_keepalive(&fwd, &emu).await;
    let mut got = vec![0u8; 32 << 20];
    within(60, "the upload arrives", server.read_exact(&mut got))
        .await
        .expect("read the upload");
    assert_eq!(sha256_hex(&got), want, "the upload arrived intact");
    let _client = within(30, "the upload finishes", upload).await.expect("upload task");

    within(20, "stop", fwd.stop()).await.expect("stop");
    emu.stop().await;
}

/// A destination whose first connection (dialled at session start) pushes `A`s without end and
/// whose later connections answer two bytes with `reply` bytes of `B`.
async fn per_connection_destination(reply: usize) -> (u16, Arc<AtomicU64>, AbortOnDrop<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let accepted = Arc::new(AtomicU64::new(0));
    let count = accepted.clone();
    let task = tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            let n = count.fetch_add(1, Ordering::Relaxed);
            tokio::spawn(async move {
                if n == 0 {
                    let chunk = vec![b'A'; 64 << 10];
                    while s.write_all(&chunk).await.is_ok() {}
                } else {
                    let mut hi = [0u8; 2];
                    if s.read_exact(&mut hi).await.is_ok() {
                        let _ = s.write_all(&vec![b'B'; reply]).await;
                        // Stay open: a close would not reach the local connection in basic mode.
                        let _ = s.read(&mut hi).await;
                    }
                }
            });
        }
    });
    (port, accepted, AbortOnDrop(task))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn basic_mode_never_hands_a_closed_connections_output_to_the_next() {
    const REPLY: usize = 1 << 20;
    // Basic on both sides: agent up to 3.0.196.0, client below 1.1.70 (§7.1).
    let emu = emulator(config("3.0.196.0")).await;
    let api = api(&emu.endpoint()).await;
    let (port, accepted, _server) = per_connection_destination(REPLY).await;
    let fwd = forward(&api, port, |o| o.channel.client_version = "1.1.0".into()).await;
    assert_eq!(fwd.mode(), PortMode::Basic);
    let addr = fwd.local_addr();

    // The first connection reads part of an endless push and leaves mid-way.
    let mut first = TcpStream::connect(addr).await.expect("connect");
    let mut part = vec![0u8; 256 << 10];
    within(30, "the first connection's data", first.read_exact(&mut part))
        .await
        .expect("read");
    assert!(part.iter().all(|b| *b == b'A'));
    drop(first);

    // The next one asks for its own data at once; none of the first one's may reach it.
    let mut second = TcpStream::connect(addr).await.expect("connect");
    second.write_all(b"hi").await.expect("write");
    let mut got = vec![0u8; REPLY];
    within(60, "the second connection's reply", second.read_exact(&mut got))
        .await
        .expect("read the reply");
    let stale = got.iter().filter(|b| **b != b'B').count();
    assert_eq!(stale, 0, "bytes of the first connection reached the second");
    assert_eq!(accepted.load(Ordering::Relaxed), 2, "the agent dialled twice");
    assert!(
        fwd.stats().bytes_discarded.load(Ordering::Relaxed) > 0,
        "the first connection's late output was discarded"
    );

    within(20, "stop", fwd.stop()).await.expect("stop");
    emu.stop().await;
}
