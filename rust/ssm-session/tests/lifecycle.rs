//! Starting and stopping a port forward against the in-process emulator: a local port already in
//! use fails at once and starts nothing (design §7); `stop` closes the listener and the open
//! connections and ends the session with the TerminateSession flag and API call (§7.2, §9 item 22).

mod common;

use std::time::Duration;

use common::*;
use ssm_emulator::Config;
use ssm_proto::PortMode;
use ssm_session::{Error, ForwardOptions, PortForward};
use tokio::io::AsyncReadExt;
use tokio::net::{TcpListener, TcpStream};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn port_in_use_fails_at_once_and_starts_nothing() {
    let emu = emulator(Config::default()).await;
    let api = api(&emu.endpoint()).await;
    let taken = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = taken.local_addr().expect("addr");

    let mut opts = ForwardOptions::new(TARGET, 22);
    opts.local_addr = addr;
    let started = std::time::Instant::now();
    let result = tokio::time::timeout(Duration::from_secs(5), PortForward::start(&api, opts))
        .await
        .expect("a port in use must fail at once, not hang");
    let err = match result {
        Ok(_) => panic!("binding {addr} twice succeeded"),
        Err(e) => e,
    };
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "took {:?}",
        started.elapsed()
    );
    match &err {
        Error::Listen { addr: a, source } => {
            assert_eq!(*a, addr);
            assert_eq!(source.kind(), std::io::ErrorKind::AddrInUse, "{source}");
        }
        other => panic!("expected Error::Listen, got {other:?}"),
    }
    let text = err.to_string();
    assert!(
        text.contains(&addr.port().to_string()),
        "the message names the port: {text}"
    );

    // Nothing started on the service side, nothing left listening here.
    assert_eq!(emu.stats().sessions_started, 0, "{:?}", emu.stats());
    assert!(emu.sessions().is_empty());
    drop(taken);
    let again = TcpListener::bind(addr).await;
    assert!(again.is_ok(), "the port is free once its owner lets go: {again:?}");
    emu.stop().await;
}

/// Stops a forward with a connection open; checks the listener, the connection, the session
/// and the API call.
async fn stop_ends_everything(config: Config, client_version: Option<&str>, expect: PortMode) {
    let emu = emulator(config).await;
    let recorder = ApiRecorder::start(emu.addr()).await;
    // The client talks to the API through the recorder; the data channel goes to the emulator.
    let api = api(&recorder.endpoint).await;
    let mut dest = destination().await;
    let fwd = forward(&api, dest.port, |o| {
        if let Some(v) = client_version {
            o.channel.client_version = v.into();
        }
    })
    .await;
    assert_eq!(fwd.mode(), expect);
    let addr = fwd.local_addr();
    let id = fwd.session_id().to_owned();
    assert_eq!(recorder.calls(), ["StartSession"]);

    // A connection that works, then one left open across the stop.
    let c = exchange(addr, 1, 100_000, 100_000, Duration::from_secs(30)).await;
    let s = report_for(&mut dest, 1, &mut Vec::new()).await;
    check_exchange(&c, &s, 100_000, 100_000);
    let mut open = TcpStream::connect(addr).await.expect("connect before stop");
    // Give the forward a moment to accept it (basic mode: after the first one has gone).
    tokio::time::sleep(Duration::from_millis(200)).await;

    let end = tokio::time::timeout(Duration::from_secs(15), fwd.stop())
        .await
        .expect("stop within 15 s")
        .expect("stop succeeds");
    eprintln!("{expect:?}: stop → {end:?}");

    // The listener is gone...
    let refused = tokio::time::timeout(Duration::from_secs(5), TcpStream::connect(addr))
        .await
        .expect("connect attempt bounded");
    assert!(refused.is_err(), "{addr} still accepts connections after stop");
    // ...and so is the connection that was open: it reads EOF (or a reset), never hangs.
    let mut buf = [0u8; 16];
    let read = tokio::time::timeout(Duration::from_secs(5), open.read(&mut buf))
        .await
        .expect("the open connection is closed by stop");
    assert!(matches!(read, Ok(0) | Err(_)), "{read:?}");

    // The session ended at the service, and the driver called TerminateSession.
    assert!(
        wait_until(Duration::from_secs(10), || session_info(&emu, &id).ended).await,
        "the emulator still has session {id} running"
    );
    assert!(
        wait_until(Duration::from_secs(5), || recorder.count("TerminateSession") == 1).await,
        "TerminateSession calls: {:?}",
        recorder.calls()
    );
    assert_eq!(recorder.count("StartSession"), 1);
    assert_eq!(recorder.count("ResumeSession"), 0, "{:?}", recorder.calls());
    emu.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stop_in_mux_mode_closes_the_port_and_terminates() {
    stop_ends_everything(Config::default(), None, PortMode::Mux { keepalive: false }).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stop_in_basic_mode_closes_the_port_and_terminates() {
    let config = Config {
        agent_version: "3.0.196.0".into(),
        ..Config::default()
    };
    stop_ends_everything(config, Some("1.1.0"), PortMode::Basic).await;
}
