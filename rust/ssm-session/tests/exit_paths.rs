//! Every way a session can end leaves nothing open at the service (issue 12 item 5): a data
//! channel that cannot be opened, a start that times out, a HandshakeRequest that cannot be
//! read or asks for what we refuse (KMS), the socket lost while finishing, and reconnecting that
//! gives up. A session left open counts against the user's quotas and stays in their audit;
//! each test checks that the emulator saw exactly one `TerminateSession` for it.
//!
//! The emulator would end each of these sessions by itself only much later (its handshake
//! timeout, its reconnect grace), and that is not counted as a `TerminateSession` call.

mod common;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use common::*;
use ssm_emulator::{Config, Emulator, Faults, Pacing};
use ssm_proto::PayloadType;
use ssm_session::aws::SharedControl;
use ssm_session::shell::ShellOptions;
use ssm_session::{ChannelOptions, DataChannel, Error, ForwardOptions, PortForward, SsmApi};

/// Waits until the emulator has seen `TerminateSession` for the only session it knows, then
/// checks that it saw it once.
async fn terminated_once(emu: &Emulator) {
    let calls = || emu.sessions().first().map_or(0, |s| s.terminate_calls);
    assert!(
        wait_until(Duration::from_secs(10), || calls() > 0).await,
        "no TerminateSession within 10 s: {:?}",
        emu.sessions()
    );
    // A second call would come from the same end; give it a moment to show.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(calls(), 1, "TerminateSession calls: {:?}", emu.sessions());
    assert_eq!(emu.sessions().len(), 1, "{:?}", emu.sessions());
}

/// Starts an `AWS-StartSSHSession` (stdio mode) to `port` and opens its data channel.
async fn open_stdio(api: &SsmApi, port: u16, opts: ChannelOptions) -> ssm_session::Result<DataChannel> {
    let mut params = HashMap::new();
    params.insert("portNumber".to_owned(), vec![port.to_string()]);
    let started = api.start_session(TARGET, Some("AWS-StartSSHSession"), &params).await?;
    let control: SharedControl = Arc::new(api.clone());
    DataChannel::open(started, control, opts).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_data_channel_that_cannot_be_opened_is_terminated() {
    let emu = emulator(Config {
        faults: Faults {
            refuse_websocket_upgrade: true,
            ..Faults::default()
        },
        ..Config::default()
    })
    .await;
    let api = api(&emu.endpoint()).await;
    let dest = destination().await;
    let result = within(
        60,
        "a forward whose data channel is refused",
        PortForward::start(&api, ForwardOptions::new(TARGET, dest.port)),
    )
    .await;
    let err = match result {
        Ok(_) => panic!("a forward started over a refused data channel"),
        Err(e) => e,
    };
    assert!(err.to_string().contains("cannot open"), "{err}");
    assert!(emu.stats().connections_refused > 0, "{:?}", emu.stats());
    terminated_once(&emu).await;
    emu.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_start_that_times_out_is_terminated() {
    // The shell says nothing for a minute: the client's 1 s start deadline passes first.
    let emu = emulator(Config {
        shell_start_delay_ms: 60_000,
        ..Config::default()
    })
    .await;
    let api = api(&emu.endpoint()).await;
    let mut so = ShellOptions::default();
    so.channel.start_timeout = Duration::from_secs(1);
    let err = match within(
        30,
        "a shell that never starts",
        ssm_session::shell::start(&api, TARGET, so),
    )
    .await
    {
        Ok(_) => panic!("a silent shell started"),
        Err(e) => e,
    };
    assert!(err.to_string().contains("timed out"), "{err}");
    terminated_once(&emu).await;
    emu.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unparseable_handshake_request_is_terminated() {
    let emu = emulator(Config {
        faults: Faults {
            garbled_handshake_request: true,
            ..Faults::default()
        },
        ..Config::default()
    })
    .await;
    let api = api(&emu.endpoint()).await;
    let dest = destination().await;
    let mut opts = ForwardOptions::new(TARGET, dest.port);
    opts.channel.start_timeout = Duration::from_secs(20);
    let err = match within(30, "a forward with a garbled handshake", PortForward::start(&api, opts)).await {
        Ok(_) => panic!("a forward started on a garbled HandshakeRequest"),
        Err(e) => e,
    };
    assert!(err.to_string().contains("HandshakeRequest"), "{err}");
    terminated_once(&emu).await;
    emu.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_kms_handshake_is_terminated() {
    // KMS encryption is on in the preferences: shells handshake and ask for it; no data key can
    // be made (no KMS is reachable), so the client answers with the failure.
    let emu = emulator(Config {
        kms_key_id: Some("arn:aws:kms:us-east-1:111122223333:key/exit-paths".into()),
        ..Config::default()
    })
    .await;
    let api = api(&emu.endpoint()).await;
    let err = match within(
        30,
        "a shell that asks for KMS",
        ssm_session::shell::start(&api, TARGET, ShellOptions::default()),
    )
    .await
    {
        Ok(_) => panic!("a shell started although KMS encryption was refused"),
        Err(e) => e,
    };
    assert!(err.to_string().contains("GenerateDataKey"), "{err}");
    terminated_once(&emu).await;
    emu.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn losing_the_socket_while_finishing_terminates() {
    // Unpaced 1024-byte messages from a destination that never stops; we read nothing, so what
    // arrives waits in the driver and finishing waits for it to be delivered.
    let emu = emulator(Config {
        pacing: Pacing::Unpaced { chunk: 1024 },
        ..Config::default()
    })
    .await;
    let api = api(&emu.endpoint()).await;
    let port = pattern_destination(7, None).await;
    let opts = ChannelOptions {
        inbound_high_water: 64 << 10,
        drain_timeout: Duration::from_secs(30),
        ..ChannelOptions::default()
    };
    let dc = within(30, "the stdio session", open_stdio(&api, port, opts))
        .await
        .expect("open");
    let (sender, rx, driver) = dc.into_parts();
    // The session kind's queue is full: what comes now stays in the driver.
    let capacity = rx.max_capacity();
    assert!(
        wait_until(Duration::from_secs(30), || rx.len() == capacity).await,
        "the inbox never filled: {} of {capacity}",
        rx.len()
    );
    sender.finish(true).await;
    // The next frame to the client is followed by a cut, and no reconnect gets through: a
    // session finishing with nothing unacked is over for us, whatever the socket does.
    emu.set_faults(Faults {
        cut_after_frames: Some(1),
        max_cuts: Some(1000),
        ..Faults::default()
    });
    // The session kind reads again, slowly: the driver, which does not read its socket while
    // its own queue is full (back-pressure), reads again and meets the cut.
    let mut rx = rx;
    let reader = tokio::spawn(async move {
        while rx.recv().await.is_some() {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    });
    terminated_once(&emu).await;
    reader.abort();
    drop(sender);
    let end = within(40, "the driver's end", driver).await.expect("driver task");
    eprintln!("finishing with a lost socket → {end:?}");
    emu.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconnecting_that_gives_up_terminates() {
    let emu = emulator(Config::default()).await;
    let api = api(&emu.endpoint()).await;
    let echo = greeting_echo_server(b"hello\n").await;
    let opts = ChannelOptions {
        reconnect_for: Duration::from_secs(2),
        ..ChannelOptions::default()
    };
    let dc = within(30, "the stdio session", open_stdio(&api, echo, opts))
        .await
        .expect("open");
    let (sender, mut rx, driver) = dc.into_parts();
    let greeting = within(20, "the greeting", rx.recv()).await;
    assert_eq!(greeting, Some((PayloadType::Output, b"hello\n".to_vec())));
    // Cut at the next frame and refuse every reconnect: the network is gone for good.
    emu.set_faults(Faults {
        cut_after_frames: Some(1),
        max_cuts: Some(1000),
        expire_tokens: true,
        ..Faults::default()
    });
    sender
        .send(PayloadType::Output, b"echo me\n".to_vec())
        .await
        .expect("send");
    let end = within(60, "the driver giving up", driver).await.expect("driver task");
    match end {
        Err(Error::Connect(text)) => assert!(text.contains("could not be restored"), "{text}"),
        other => panic!("expected the give-up error, got {other:?}"),
    }
    terminated_once(&emu).await;
    emu.stop().await;
}
