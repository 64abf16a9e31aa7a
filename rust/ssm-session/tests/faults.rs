//! Transfers through a port forward while the emulated MGS misbehaves (design §7): frames dropped,
//! duplicated, reordered and delayed in both directions plus one WebSocket cut mid-stream
//! (recovered with ResumeSession, §8.2), and a pause_publication/start_publication pair mid-transfer
//! (§4.7). No byte may be lost or repeated: lengths and SHA-256 are checked at both ends.
//!
//! The emulator runs unpaced (`Pacing::Unpaced { chunk: 1024 }`); the agent's 1 ms pacing would
//! only slow the transfers down (§9 item 1), the faults are what is under test.

mod common;

use std::time::{Duration, Instant};

use common::*;
use ssm_emulator::faults::DirectionFaults;
use ssm_emulator::{Config, Faults, Pacing};

const MIB: u64 = 1 << 20;

fn lossy() -> DirectionFaults {
    DirectionFaults {
        drop: 0.05,
        duplicate: 0.05,
        reorder: 0.05,
        delay_ms: 2,
    }
}

fn unpaced(faults: Faults) -> Config {
    Config {
        pacing: Pacing::Unpaced { chunk: 1024 },
        faults,
        ..Config::default()
    }
}

/// Sizes of the faulted transfer: client→target 64 MiB, like the clean transfers;
/// target→client 2 MiB.
///
/// The difference is the agent's, not the client's. The client retransmits every lost message on
/// its own timer, so 64 MiB go up through 5 % loss in seconds. The emulated agent, like the real
/// one (§4.5), retransmits only its oldest unacked message, at most once per 100 ms tick; every
/// agent frame dropped on the way to the client, and every client ack dropped on the way to the
/// agent, holds the downstream for at least one tick (about 40 KiB/s here). Once the client's
/// out-of-order store is full (32 MiB by default; it was 10 000 messages, the plugin's size, when
/// the figures below were taken) it gets worse: the surplus is dropped unacked, and each of those
/// messages costs a tick of its own. Measured in
/// a debug build: 64 MiB up alone 5 s; 1 MiB down 20–30 s; 4 MiB each way 95 s; 12 MiB down
/// 4 MiB in the first 100 s; 16 MiB down not done after 18 minutes. This test (64 MiB up, 2 MiB
/// down, cut after 20 000 frames) takes 10–65 s with the emulator's named kinder option
/// `redeliver_on_reconnect` (everything unacked resent when the client comes back). Without it,
/// as with the real agent, every message the unpaced agent sent while the client was away costs
/// a 100 ms tick, and the 2 MiB took over 240 s; `a_cut_mid_download_recovers_against_the_agents_one_message_per_tick`
/// covers the cut with the agent's own behaviour. `SSM_TEST_FAULTED_UP_KIB` and `SSM_TEST_FAULTED_DOWN_KIB` override the
/// sizes for such measurements; `faults_both_ways.rs` covers 64 MiB both ways with an agent that
/// retransmits per message.
const FAULTED_UP: u64 = 64 * MIB;
const FAULTED_DOWN: u64 = 2 * MIB;

/// `default`, or KiB from the environment variable `name`.
fn faulted_size(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse::<u64>().ok())
        .map_or(default, |kib| kib * 1024)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lossy_frames_and_a_cut_socket_lose_nothing() {
    let emu = emulator(Config {
        // Named kinder-than-AWS option (see FAULTED_UP): keeps this lossy transfer within CI time.
        redeliver_on_reconnect: true,
        ..unpaced(Faults {
            to_client: lossy(),
            to_agent: lossy(),
            // Frames to the client on the first socket, data and acks: the 64 MiB upload alone is
            // acked with 65 536 of them, so the cut lands well inside the transfer.
            cut_after_frames: Some(20_000),
            max_cuts: Some(1),
            ..Faults::default()
        })
    })
    .await;
    let recorder = ApiRecorder::start(emu.addr()).await;
    let api = api(&recorder.endpoint).await;
    let mut dest = destination().await;
    let fwd = forward(&api, dest.port, |_| {}).await;

    let up = faulted_size("SSM_TEST_FAULTED_UP_KIB", FAULTED_UP);
    let down = faulted_size("SSM_TEST_FAULTED_DOWN_KIB", FAULTED_DOWN);
    let started = Instant::now();
    // A bound against hangs, not a performance target: about 25 s per MiB is typical downstream.
    let limit = Duration::from_secs(120 + 60 * down.div_ceil(MIB));
    let client = exchange(fwd.local_addr(), 1, up, down, limit).await;
    let mut pending = Vec::new();
    let server = report_for(&mut dest, 1, &mut pending).await;
    check_exchange(&client, &server, up, down);
    let stats = emu.stats();
    eprintln!(
        "faulted: {} KiB up and {} KiB down in {:.2?}; {stats:?}",
        up / 1024,
        down / 1024,
        started.elapsed(),
    );
    assert!(stats.frames_dropped > 0, "{stats:?}");
    assert!(stats.frames_duplicated > 0, "{stats:?}");
    assert!(stats.agent_retransmissions > 0, "{stats:?}");
    assert_eq!(stats.sockets_cut, 1, "{stats:?}");
    assert_eq!(
        stats.connections, 2,
        "one reconnect with a ResumeSession token: {stats:?}"
    );
    assert_eq!(stats.connections_refused, 0, "{stats:?}");
    assert_eq!(recorder.calls(), ["StartSession", "ResumeSession"]);

    // The resumed session still forwards, still under the same loss (the one cut is spent).
    let client = exchange(fwd.local_addr(), 2, 64 << 10, 64 << 10, Duration::from_secs(60)).await;
    let server = report_for(&mut dest, 2, &mut pending).await;
    check_exchange(&client, &server, 64 << 10, 64 << 10);
    assert_eq!(emu.stats().connections, 2);
    assert!(!session_info(&emu, fwd.session_id()).ended);

    tokio::time::timeout(Duration::from_secs(30), fwd.stop())
        .await
        .expect("stop within 30 s")
        .expect("stop");
    emu.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pause_and_start_publication_mid_transfer_lose_nothing() {
    const SIZE: u64 = 8 * MIB;
    const PAUSE: Duration = Duration::from_millis(300);
    let emu = emulator(unpaced(Faults {
        // About 16 000 frames go to the client in this transfer (data plus acks of the upload).
        pause_after_frames: Some(4000),
        pause_ms: PAUSE.as_millis() as u64,
        ..Faults::default()
    }))
    .await;
    let api = api(&emu.endpoint()).await;
    let mut dest = destination().await;
    let fwd = forward(&api, dest.port, |_| {}).await;

    let client = exchange(fwd.local_addr(), 1, SIZE, SIZE, Duration::from_secs(120)).await;
    let server = report_for(&mut dest, 1, &mut Vec::new()).await;
    check_exchange(&client, &server, SIZE, SIZE);
    eprintln!(
        "paused: {} MiB each way in {:.2?}, longest stall {:.2?}; {:?}",
        SIZE / MIB,
        client.elapsed,
        client.max_stall,
        emu.stats()
    );
    let stats = emu.stats();
    // Mid-transfer by construction: the pause came after 4000 of the ~16 000 frames.
    assert_eq!(stats.publication_pauses, 1, "{stats:?}");
    assert_eq!(stats.connections, 1, "a pause is not a reconnect: {stats:?}");

    tokio::time::timeout(Duration::from_secs(30), fwd.stop())
        .await
        .expect("stop within 30 s")
        .expect("stop");
    emu.stop().await;
}

/// A clean socket cut in the middle of a 1 MiB download from the agent-paced emulator, with the
/// agent's recovery as it is: it is never told that the client came back, and resends only its
/// oldest unacked message once per 100 ms, so every message lost with the old socket costs a
/// tick. The client's part is to come back at once (each millisecond away loses about one more
/// message at the agent's 1 KiB/ms). The time is printed for the record, not asserted. The
/// reconnect limit is the largest there is: "never give up" must not overflow the clock.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cut_mid_download_recovers_against_the_agents_one_message_per_tick() {
    let emu = emulator(Config {
        faults: Faults {
            cut_after_frames: Some(300),
            max_cuts: Some(1),
            ..Faults::default()
        },
        ..Config::default()
    })
    .await;
    let api = api(&emu.endpoint()).await;
    let mut dest = destination().await;
    let fwd = forward(&api, dest.port, |o| o.channel.reconnect_for = Duration::MAX).await;
    let started = Instant::now();
    let client = exchange(fwd.local_addr(), 1, 1024, MIB, Duration::from_secs(300)).await;
    let server = report_for(&mut dest, 1, &mut Vec::new()).await;
    check_exchange(&client, &server, 1024, MIB);
    let stats = emu.stats();
    eprintln!(
        "1 MiB down through one cut: {:.2?}; agent retransmissions {}",
        started.elapsed(),
        stats.agent_retransmissions
    );
    assert_eq!(stats.sockets_cut, 1, "{stats:?}");
    assert_eq!(stats.connections, 2, "{stats:?}");
    fwd.stop().await.expect("stop");
}
