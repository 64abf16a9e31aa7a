//! The paced agent sends a full message each millisecond (§4.6); a client that wakes for each
//! one spends its CPU on waking. Once such a trickle has lasted, the driver leaves the socket
//! unread for `ChannelOptions::read_coalesce` after each wake and then takes what arrived in one
//! go (one write of acks, one hand-over). Nothing is lost or reordered by it.

mod common;

use std::sync::atomic::Ordering;

use common::*;
use ssm_emulator::Config;
use ssm_session::ChannelOptions;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paced_download_is_read_several_messages_per_wake() {
    // About a second at the agent's pace.
    const LEN: usize = 1 << 20;
    let emu = emulator(Config::default()).await;
    let api = api(&emu.endpoint()).await;
    let port = pattern_destination(21, Some(LEN)).await;
    let dc = open_stdio(&api, port, ChannelOptions::default()).await;
    let counters = dc.read_counters();
    let (sender, mut rx, driver) = dc.into_parts();
    let (got, _) = drain(&mut rx).await;
    drop(sender);
    let _ = within(30, "the driver's end", driver).await;
    assert_eq!(got.len(), LEN, "bytes delivered of {LEN}");
    assert!(
        is_pattern_prefix(&got, 21),
        "the delivered bytes differ from what was sent"
    );

    let frames = counters.frames.load(Ordering::Relaxed);
    let wakes = counters.wakes.load(Ordering::Relaxed);
    eprintln!(
        "{frames} frames in {wakes} wakes; agent retransmissions {}",
        emu.stats().agent_retransmissions
    );
    assert!(frames >= (LEN / 1024) as u64, "{frames} frames for {LEN} bytes");
    // One message a millisecond, each wake held 8 ms after the first 50 ms: about six a wake.
    // Without the hold, an idle machine reads one per wake.
    assert!(
        frames >= 3 * wakes,
        "{frames} frames in {wakes} wakes: the trickle was not coalesced"
    );
    emu.stop().await;
}
