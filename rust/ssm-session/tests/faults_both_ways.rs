//! Faults in both directions at volume: 8 MiB each way through 5 % dropped, duplicated and
//! reordered frames and one WebSocket cut, against an emulated agent that retransmits every lost
//! message on its own timer. `faults.rs` runs the same faults against the real agent's head-only
//! retransmission (§4.5), which carries only a few MiB downstream in test time — the agent's
//! limit, not the client's.
//!
//! Measured here (debug build): 8 MiB each way in about 6 s. Against the head-only agent larger
//! downloads slow down more than linearly: the agent may have 100 000 messages unacked, the
//! client holds at most its reorder store (32 MiB by default) out of order and leaves the rest
//! unacked, so each of those waits for its own resend.

mod common;

use std::time::{Duration, Instant};

use common::*;
use ssm_emulator::faults::DirectionFaults;
use ssm_emulator::{AgentRetransmit, Config, Faults, Pacing};

const MIB: u64 = 1 << 20;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eight_mib_each_way_through_loss_duplication_reordering_and_a_cut() {
    let lossy = DirectionFaults {
        drop: 0.05,
        duplicate: 0.05,
        reorder: 0.05,
        delay_ms: 2,
    };
    let emu = emulator(Config {
        pacing: Pacing::Unpaced { chunk: 1024 },
        agent_retransmit: AgentRetransmit::PerMessage,
        faults: Faults {
            to_client: lossy.clone(),
            to_agent: lossy,
            cut_after_frames: Some(8_000),
            max_cuts: Some(1),
            ..Faults::default()
        },
        ..Config::default()
    })
    .await;
    let api = api(&emu.endpoint()).await;
    let mut dest = destination().await;
    let fwd = forward(&api, dest.port, |_| {}).await;
    let started = Instant::now();
    let size = 8 * MIB;
    let client = exchange(fwd.local_addr(), 1, size, size, Duration::from_secs(240)).await;
    let mut pending = Vec::new();
    let server = report_for(&mut dest, 1, &mut pending).await;
    check_exchange(&client, &server, size, size);
    let stats = emu.stats();
    eprintln!("8 MiB each way under faults in {:.2?}; {stats:?}", started.elapsed());
    assert!(stats.frames_dropped > 0 && stats.frames_duplicated > 0, "{stats:?}");
    assert!(stats.agent_retransmissions > 0, "{stats:?}");
    assert_eq!(stats.sockets_cut, 1, "{stats:?}");
    assert_eq!(stats.connections, 2, "one reconnect: {stats:?}");
    tokio::time::timeout(Duration::from_secs(30), fwd.stop())
        .await
        .expect("stop within 30 s")
        .expect("stop");
    emu.stop().await;
}

/// 64 MiB each way through 5 % dropped, duplicated and reordered frames and one cut, with the
/// real agent's pacing (1 KiB reads, 1 ms apart) and retransmission `retransmit`. Minutes, not
/// seconds, against the head-only agent, so these run by hand (`--ignored`); the figures are in
/// bench/README.md. The head-only agent keeps reading its destination while a lost message waits
/// for its resend, one per 100 ms (§4.5), so the client holds up to the whole download out of
/// order: its reorder store is raised to 96 MiB (`--reorder-buffer-mib 96`). With the default
/// 32 MiB, every message beyond it waits for a resend of its own, and the download outlasts
/// MGS's 20-minute idle timeout, which starts once the upload has finished.
async fn sixty_four_mib_each_way(retransmit: AgentRetransmit) {
    let lossy = DirectionFaults {
        drop: 0.05,
        duplicate: 0.05,
        reorder: 0.05,
        delay_ms: 2,
    };
    let emu = emulator(Config {
        agent_retransmit: retransmit,
        faults: Faults {
            to_client: lossy.clone(),
            to_agent: lossy,
            cut_after_frames: Some(40_000),
            max_cuts: Some(1),
            ..Faults::default()
        },
        ..Config::default()
    })
    .await;
    let api = api(&emu.endpoint()).await;
    let mut dest = destination().await;
    let fwd = forward(&api, dest.port, |o| o.channel.reorder_buffer_bytes = 96 << 20).await;
    let started = Instant::now();
    let size = 64 * MIB;
    let mut fwd = fwd;
    let client = exchange(fwd.local_addr(), 1, size, size, Duration::from_secs(3600)).await;
    if client.received != size {
        // Say why the download ended short: the forward's end, if it ended.
        let end = tokio::time::timeout(Duration::from_secs(5), fwd.wait()).await;
        eprintln!(
            "download ended after {} of {size} bytes, {:.2?} in: forward {end:?}; {:?}; {:?}",
            client.received,
            started.elapsed(),
            emu.stats(),
            emu.sessions()
        );
    }
    let mut pending = Vec::new();
    let server = report_for(&mut dest, 1, &mut pending).await;
    check_exchange(&client, &server, size, size);
    let stats = emu.stats();
    eprintln!(
        "64 MiB each way under faults, {retransmit:?} agent: {:.2?} (SHA-256 equal both ways: {:x?}…, {:x?}…); {stats:?}",
        started.elapsed(),
        client.sent_sha.get(..4),
        client.received_sha.get(..4),
    );
    assert!(stats.frames_dropped > 0 && stats.frames_duplicated > 0, "{stats:?}");
    assert_eq!(stats.sockets_cut, 1, "{stats:?}");
    assert_eq!(stats.connections, 2, "one reconnect: {stats:?}");
    tokio::time::timeout(Duration::from_secs(30), fwd.stop())
        .await
        .expect("stop within 30 s")
        .expect("stop");
    emu.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "minutes; run by hand for the figures in bench/README.md"]
async fn sixty_four_mib_each_way_against_the_per_message_agent() {
    sixty_four_mib_each_way(AgentRetransmit::PerMessage).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "minutes; run by hand for the figures in bench/README.md"]
async fn sixty_four_mib_each_way_against_the_head_only_agent() {
    sixty_four_mib_each_way(AgentRetransmit::HeadOnly).await;
}
