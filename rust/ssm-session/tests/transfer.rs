//! Bulk transfers through a port forward against the in-process emulator: 64 MiB each way at
//! the same time in basic and in smux mode, and 16 concurrent connections in smux mode, every
//! byte checked by length and SHA-256 at both ends.
//!
//! The emulator runs unpaced (`Pacing::Unpaced { chunk: 1024 }`): the real agent's pacing (one
//! 1024-byte read per millisecond, §9 item 1) caps target→client at about 1 MiB/s, so 64 MiB would
//! take over a minute per direction; the 1024-byte chunks keep the message sizes the agent sends.

mod common;

use std::time::{Duration, Instant};

use common::*;
use ssm_emulator::{Config, Pacing};
use ssm_proto::PortMode;

const MIB: u64 = 1 << 20;

fn unpaced(agent_version: &str) -> Config {
    Config {
        agent_version: agent_version.into(),
        pacing: Pacing::Unpaced { chunk: 1024 },
        ..Config::default()
    }
}

/// One connection, `size` bytes each way concurrently; checks hashes and the agreed mode.
async fn bulk(config: Config, client_version: Option<&str>, expect: PortMode, size: u64) {
    let emu = emulator(config).await;
    let api = api(&emu.endpoint()).await;
    let mut dest = destination().await;
    let fwd = forward(&api, dest.port, |o| {
        if let Some(v) = client_version {
            o.channel.client_version = v.into();
        }
    })
    .await;
    assert_eq!(fwd.mode(), expect, "the client's mode");
    let info = session_info(&emu, fwd.session_id());
    assert_eq!(
        info.port_mode,
        format!("{:?}", fwd.mode()),
        "the agent's mode must match the client's"
    );

    let client = exchange(fwd.local_addr(), 1, size, size, Duration::from_secs(200)).await;
    let server = report_for(&mut dest, 1, &mut Vec::new()).await;
    check_exchange(&client, &server, size, size);
    eprintln!(
        "{expect:?}: {} MiB each way in {:.2?}: {:.1} MiB/s per direction, {:.1} MiB/s total",
        size / MIB,
        client.elapsed,
        mib_per_s(size, client.elapsed),
        mib_per_s(2 * size, client.elapsed),
    );
    let stats = fwd.stats();
    assert_eq!(
        stats.bytes_to_target.load(std::sync::atomic::Ordering::Relaxed),
        size + 32,
        "forward's count of client→target bytes (32-byte header included)"
    );

    tokio::time::timeout(Duration::from_secs(20), fwd.stop())
        .await
        .expect("stop within 20 s")
        .expect("stop");
    emu.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn basic_mode_64_mib_each_way() {
    // The client picks basic for agents up to 3.0.196.0; the agent picks basic for clients below
    // 1.1.70 (§7.1). Announcing 1.1.0 makes both sides agree, as a real basic-only client would.
    bulk(unpaced("3.0.196.0"), Some("1.1.0"), PortMode::Basic, 64 * MIB).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mux_mode_64_mib_each_way() {
    bulk(
        unpaced("3.3.2299.0"),
        None,
        PortMode::Mux { keepalive: false },
        64 * MIB,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mux_mode_16_concurrent_connections() {
    const CONNS: u64 = 16;
    const EACH: u64 = 2 * MIB;
    let emu = emulator(unpaced("3.3.2299.0")).await;
    let api = api(&emu.endpoint()).await;
    let mut dest = destination().await;
    let fwd = forward(&api, dest.port, |_| {}).await;
    assert!(matches!(fwd.mode(), PortMode::Mux { .. }), "{:?}", fwd.mode());

    let started = Instant::now();
    let addr = fwd.local_addr();
    let mut tasks = tokio::task::JoinSet::new();
    for tag in 1..=CONNS {
        tasks.spawn(exchange(addr, tag, EACH, EACH, Duration::from_secs(120)));
    }
    let mut clients = Vec::new();
    while let Some(r) = tasks.join_next().await {
        clients.push(r.expect("connection task"));
    }
    let elapsed = started.elapsed();
    let mut pending = Vec::new();
    for c in &clients {
        let s = report_for(&mut dest, c.tag, &mut pending).await;
        check_exchange(c, &s, EACH, EACH);
    }
    // Distinct data per connection: a stream delivered to the wrong connection cannot pass.
    let mut hashes: Vec<_> = clients.iter().map(|c| c.received_sha).collect();
    hashes.sort();
    hashes.dedup();
    assert_eq!(hashes.len(), CONNS as usize);
    eprintln!(
        "{CONNS} connections x {} MiB each way in {elapsed:.2?}: {:.1} MiB/s total",
        EACH / MIB,
        mib_per_s(2 * CONNS * EACH, elapsed)
    );
    let stats = fwd.stats();
    assert_eq!(
        stats.connections_total.load(std::sync::atomic::Ordering::Relaxed),
        CONNS
    );
    assert!(
        wait_until(Duration::from_secs(10), || stats
            .connections_active
            .load(std::sync::atomic::Ordering::Relaxed)
            == 0)
        .await,
        "every local connection closed after its stream ended"
    );

    tokio::time::timeout(Duration::from_secs(20), fwd.stop())
        .await
        .expect("stop within 20 s")
        .expect("stop");
    emu.stop().await;
}
