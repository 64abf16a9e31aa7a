//! The handshake (§5) against an agent that sends its messages out of order or twice, and
//! channel limits too large for the clock. The emulator's named fault knobs
//! (`handshake_complete_first`, `repeat_handshake_request`, both off by default) play the
//! misbehaving agent.
//!
//! Decisions: a HandshakeComplete before any HandshakeRequest fails the start at once, with a
//! message naming what arrived (nothing was negotiated, so there is nothing to start); a
//! HandshakeRequest after the session started is ignored (logged at debug) and the session
//! goes on.

mod common;

use std::time::{Duration, Instant};

use common::*;
use ssm_emulator::{Config, Faults};
use ssm_session::{ForwardOptions, PortForward};

fn misbehaving(faults: Faults) -> Config {
    Config {
        faults,
        ..Config::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handshake_complete_before_the_request_fails_the_start_clearly() {
    let emu = emulator(misbehaving(Faults {
        handshake_complete_first: true,
        ..Faults::default()
    }))
    .await;
    let api = api(&emu.endpoint()).await;
    let dest = destination().await;
    let mut opts = ForwardOptions::new(TARGET, dest.port);
    opts.channel.start_timeout = Duration::from_secs(5);
    let started = Instant::now();
    let result = tokio::time::timeout(Duration::from_secs(20), PortForward::start(&api, opts))
        .await
        .expect("the start must end (within its 5 s deadline), not hang");
    let err = match result {
        Ok(f) => panic!(
            "a session whose handshake completed before it began started: {:?}",
            f.mode()
        ),
        Err(e) => e,
    };
    let text = err.to_string();
    assert!(
        text.contains("HandshakeComplete") && text.contains("HandshakeRequest"),
        "the error names what arrived out of order: {text}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "failed only after {:?}: at the deadline, not on the message",
        started.elapsed()
    );
    // A failed start is ended at the service, not left open (issue 12 item 5).
    let calls = || emu.sessions().first().map_or(0, |s| s.terminate_calls);
    assert!(
        wait_until(Duration::from_secs(10), || calls() > 0).await,
        "no TerminateSession: {:?}",
        emu.sessions()
    );
    emu.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_repeated_handshake_request_leaves_the_running_session_alone() {
    let emu = emulator(misbehaving(Faults {
        repeat_handshake_request: true,
        ..Faults::default()
    }))
    .await;
    let api = api(&emu.endpoint()).await;
    let mut dest = destination().await;
    // A short start deadline: a session put back into "starting" would be killed by it.
    let fwd = forward(&api, dest.port, |o| o.channel.start_timeout = Duration::from_secs(2)).await;
    let addr = fwd.local_addr();
    let mut pending = Vec::new();
    let c = exchange(addr, 1, 200_000, 200_000, Duration::from_secs(20)).await;
    let s = report_for(&mut dest, 1, &mut pending).await;
    check_exchange(&c, &s, 200_000, 200_000);
    // Past the start deadline, the session still carries data.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let c = exchange(addr, 2, 200_000, 200_000, Duration::from_secs(20)).await;
    let s = report_for(&mut dest, 2, &mut pending).await;
    check_exchange(&c, &s, 200_000, 200_000);
    tokio::time::timeout(Duration::from_secs(15), fwd.stop())
        .await
        .expect("stop within 15 s")
        .expect("stop succeeds");
    emu.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn channel_limits_past_the_clocks_range_do_not_panic() {
    let emu = emulator(Config::default()).await;
    let api = api(&emu.endpoint()).await;
    let mut dest = destination().await;
    let fwd = forward(&api, dest.port, |o| {
        o.channel.start_timeout = Duration::MAX;
        o.channel.ping_interval = Duration::MAX;
        o.channel.dead_after = Duration::MAX;
        o.channel.reconnect_for = Duration::MAX;
        o.channel.drain_timeout = Duration::MAX;
    })
    .await;
    let c = exchange(fwd.local_addr(), 1, 100_000, 100_000, Duration::from_secs(20)).await;
    let s = report_for(&mut dest, 1, &mut Vec::new()).await;
    check_exchange(&c, &s, 100_000, 100_000);
    tokio::time::timeout(Duration::from_secs(15), fwd.stop())
        .await
        .expect("stop within 15 s")
        .expect("stop succeeds");
    emu.stop().await;
}
