//! Session per connection (issue 13) against the in-process emulator: each local connection is
//! carried by a session of its own, terminated when the connection ends; warm sessions are
//! started ahead, replaced when MGS ends them idle, and terminated on stop; a throttled
//! StartSession makes a connection wait, never fails it. Every wait is event-based and bounded
//! generously.

mod common;

use std::collections::HashSet;
use std::time::Duration;

use common::*;
use ssm_emulator::{Config, Emulator, Faults, SessionInfo};
use ssm_session::{ForwardOptions, PerConnection};

const DOC: &str = "AWS-StartPortForwardingSession";

fn per_connection(warm_sessions: usize) -> impl FnOnce(&mut ForwardOptions) {
    move |o| o.per_connection = Some(PerConnection { warm_sessions })
}

fn port_sessions(emu: &Emulator) -> Vec<SessionInfo> {
    emu.sessions().into_iter().filter(|s| s.document == DOC).collect()
}

/// Runs `n` exchanges through `addr` at once and checks every byte both ways.
async fn exchanges(addr: std::net::SocketAddr, dest: &mut Destination, n: u64, up: u64, down: u64) {
    let mut set = tokio::task::JoinSet::new();
    for tag in 1..=n {
        set.spawn(exchange(addr, tag, up, down, Duration::from_secs(120)));
    }
    let mut clients = Vec::new();
    while let Some(c) = set.join_next().await {
        clients.push(c.expect("exchange task"));
    }
    let mut pending = Vec::new();
    for c in &clients {
        let s = report_for(dest, c.tag, &mut pending).await;
        check_exchange(c, &s, up, down);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eight_concurrent_connections_get_eight_sessions_each_terminated_when_its_connection_closes() {
    let emu = emulator(Config::default()).await;
    let recorder = ApiRecorder::start(emu.addr()).await;
    let api = api(&recorder.endpoint).await;
    let mut dest = destination().await;
    let fwd = forward(&api, dest.port, per_connection(0)).await;
    assert!(fwd.per_connection());
    assert!(port_sessions(&emu).is_empty(), "no warm session was asked for");

    exchanges(fwd.local_addr(), &mut dest, 8, 64 << 10, 256 << 10).await;

    let sessions = port_sessions(&emu);
    let ids: HashSet<_> = sessions.iter().map(|s| s.session_id.clone()).collect();
    assert_eq!(ids.len(), 8, "one session per connection: {sessions:?}");
    // Every session ends when its connection has closed, while the forward goes on.
    assert!(
        wait_until(Duration::from_secs(30), || port_sessions(&emu).iter().all(|s| s.ended)).await,
        "sessions still running after their connections closed: {:?}",
        port_sessions(&emu)
    );
    assert!(
        wait_until(Duration::from_secs(15), || recorder.count("TerminateSession") == 8).await,
        "calls: {:?}",
        recorder.calls()
    );
    assert!(!fwd.is_finished(), "the forward goes on");
    assert_eq!(recorder.count("StartSession"), 8, "{:?}", recorder.calls());

    // It still serves, with a new session, after all that.
    exchanges(fwd.local_addr(), &mut dest, 1, 1000, 1000).await;
    assert_eq!(port_sessions(&emu).len(), 9);
    tokio::time::timeout(Duration::from_secs(30), fwd.stop())
        .await
        .expect("stop within 30 s")
        .expect("stop");
    assert!(
        wait_until(Duration::from_secs(15), || port_sessions(&emu).iter().all(|s| s.ended)).await,
        "{:?}",
        port_sessions(&emu)
    );
    emu.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_warm_session_waits_before_any_connection_is_used_by_the_first_and_is_terminated_on_stop() {
    let emu = emulator(Config::default()).await;
    let recorder = ApiRecorder::start(emu.addr()).await;
    let api = api(&recorder.endpoint).await;
    let mut dest = destination().await;
    let fwd = forward(&api, dest.port, per_connection(1)).await;

    // Started with the forward, before any connection.
    let warm = port_sessions(&emu);
    assert_eq!(warm.len(), 1, "{warm:?}");
    assert!(!warm[0].ended);
    let first = warm[0].session_id.clone();

    // The first connection is carried by it; another warm session takes its place.
    exchanges(fwd.local_addr(), &mut dest, 1, 10_000, 10_000).await;
    assert!(
        wait_until(Duration::from_secs(20), || session_info(&emu, &first).ended).await,
        "the warm session that carried the connection ends with it"
    );
    assert!(
        wait_until(Duration::from_secs(20), || port_sessions(&emu)
            .iter()
            .any(|s| s.session_id != first && !s.ended))
        .await,
        "a new warm session waits: {:?}",
        port_sessions(&emu)
    );
    let sessions = port_sessions(&emu);
    assert_eq!(sessions.len(), 2, "{sessions:?}");

    tokio::time::timeout(Duration::from_secs(30), fwd.stop())
        .await
        .expect("stop within 30 s")
        .expect("stop");
    assert!(
        wait_until(Duration::from_secs(15), || port_sessions(&emu).iter().all(|s| s.ended)).await,
        "the warm session is terminated on stop: {:?}",
        port_sessions(&emu)
    );
    assert!(
        wait_until(Duration::from_secs(15), || recorder.count("TerminateSession") == 2).await,
        "calls: {:?}",
        recorder.calls()
    );
    emu.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_warm_session_mgs_ended_idle_is_replaced_and_the_connection_still_works() {
    // MGS ends a session without client data after its idle timeout; here 2 s.
    let emu = emulator(Config {
        idle_timeout_ms: 2000,
        ..Config::default()
    })
    .await;
    let api = api(&emu.endpoint()).await;
    let mut dest = destination().await;
    let fwd = forward(&api, dest.port, per_connection(1)).await;
    let first = port_sessions(&emu)[0].session_id.clone();
    assert!(
        wait_until(Duration::from_secs(30), || {
            let s = port_sessions(&emu);
            s.iter().any(|s| s.session_id == first && s.ended) && s.iter().any(|s| !s.ended)
        })
        .await,
        "the idle warm session ended and another replaced it: {:?}",
        port_sessions(&emu)
    );
    exchanges(fwd.local_addr(), &mut dest, 1, 10_000, 10_000).await;
    drop(fwd);
    assert!(
        wait_until(Duration::from_secs(15), || port_sessions(&emu).iter().all(|s| s.ended)).await,
        "dropping the forward terminates every session: {:?}",
        port_sessions(&emu)
    );
    emu.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_throttled_start_session_makes_the_connection_wait_then_succeed() {
    let emu = emulator(Config::default()).await;
    let api = api(&emu.endpoint()).await;
    let mut dest = destination().await;
    let fwd = forward(&api, dest.port, per_connection(0)).await;
    // More throttled calls in a row than the SDK's own retries (3 attempts) absorb.
    emu.set_faults(Faults {
        throttle_start_sessions: 5,
        ..Faults::default()
    });
    exchanges(fwd.local_addr(), &mut dest, 1, 20_000, 20_000).await;
    assert_eq!(emu.stats().start_sessions_throttled, 5, "{:?}", emu.stats());
    assert_eq!(port_sessions(&emu).len(), 1);
    tokio::time::timeout(Duration::from_secs(30), fwd.stop())
        .await
        .expect("stop within 30 s")
        .expect("stop");
    emu.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sdk_reads_the_emulated_throttling_as_a_throttling_exception() {
    let emu = emulator(Config {
        faults: Faults {
            throttle_start_sessions: 100,
            ..Faults::default()
        },
        ..Config::default()
    })
    .await;
    let api = api(&emu.endpoint()).await;
    let err = api
        .start_session(TARGET, Some(DOC), &Default::default())
        .await
        .expect_err("throttled");
    match &err {
        ssm_session::Error::Api { code, .. } => assert_eq!(code.as_deref(), Some("ThrottlingException"), "{err}"),
        other => panic!("expected an API error, got {other:?}"),
    }
    assert!(err.to_string().contains("Rate exceeded"), "{err}");
    // The SDK's standard retry mode retries throttling errors: 3 attempts in all.
    assert_eq!(emu.stats().start_sessions_throttled, 3, "{:?}", emu.stats());
    emu.stop().await;
}
