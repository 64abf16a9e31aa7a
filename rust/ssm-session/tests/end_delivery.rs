//! What arrived before a session ends reaches the session kind (issue 12 item 7): data the
//! driver acked is never sent again by the agent, so dropping it at the end loses it for good.
//! Finishing waits (bounded) until it is delivered; so does an end by `channel_closed` whose
//! socket goes at once; and stdio mode keeps writing the agent's output after its input ended,
//! until the session ends (a half-close must not cut the server's last bytes).

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::*;
use ssm_emulator::{Config, Emulator, Pacing};
use ssm_session::aws::SharedControl;
use ssm_session::{ChannelOptions, End};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

fn unpaced() -> Config {
    Config {
        pacing: Pacing::Unpaced { chunk: 1024 },
        ..Config::default()
    }
}

/// The agent's retransmissions so far (it resends its oldest unacked message once per tick).
fn retransmissions(emu: &Emulator) -> u64 {
    emu.stats().agent_retransmissions
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn finishing_delivers_what_arrived_before_it_ends() {
    let emu = emulator(unpaced()).await;
    let api = api(&emu.endpoint()).await;
    let port = pattern_destination(11, None).await;
    let opts = ChannelOptions {
        inbound_high_water: 64 << 10,
        ..ChannelOptions::default()
    };
    let dc = open_stdio(&api, port, opts).await;
    let (sender, mut rx, driver) = dc.into_parts();
    // Read nothing until the session kind's queue is full and the agent has been left unacked
    // for a few of its ticks: by then the driver holds acked data that is not delivered yet.
    let capacity = rx.max_capacity();
    assert!(
        wait_until(Duration::from_secs(30), || rx.len() == capacity).await,
        "the inbox never filled: {} of {capacity}",
        rx.len()
    );
    let before = retransmissions(&emu);
    assert!(
        wait_until(Duration::from_secs(30), || retransmissions(&emu) >= before + 3).await,
        "the agent never had to resend: {:?}",
        emu.stats()
    );
    sender.finish(true).await;
    drop(sender);
    let (got, messages) = drain(&mut rx).await;
    let end = within(30, "the driver's end", driver).await.expect("driver task");
    assert_eq!(end.expect("the session finishes"), End::Finished);
    assert!(
        is_pattern_prefix(&got, 11),
        "the delivered bytes are not the stream's start"
    );
    // The queue held `capacity` messages; the driver held at least 64 more of at most 1024
    // bytes (it refuses new data only once it holds 64 KiB), all acked.
    assert!(
        messages >= capacity + 64,
        "only {messages} messages ({} bytes) delivered, the queue holds {capacity}: what the \
         driver held was dropped",
        got.len()
    );
    emu.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_closed_session_delivers_everything_to_a_slow_reader() {
    // 2 MiB, then the destination closes: the agent ends the session once all is acked, and
    // closes the socket right after `channel_closed`.
    const LEN: usize = 2 << 20;
    let emu = emulator(unpaced()).await;
    let api = api(&emu.endpoint()).await;
    let port = pattern_destination(12, Some(LEN)).await;
    let dc = open_stdio(&api, port, ChannelOptions::default()).await;
    let (sender, mut rx, driver) = dc.into_parts();
    assert!(
        wait_until(Duration::from_secs(30), || emu.sessions().iter().all(|s| s.ended)).await,
        "the session did not end: {:?}",
        emu.sessions()
    );
    let (got, _) = drain(&mut rx).await;
    drop(sender);
    let end = within(30, "the driver's end", driver).await.expect("driver task");
    assert!(matches!(end, Ok(End::Closed(_))), "{end:?}");
    assert_eq!(got.len(), LEN, "bytes delivered of {LEN}");
    assert!(
        is_pattern_prefix(&got, 12),
        "the delivered bytes differ from what was sent"
    );
    emu.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stdio_keeps_writing_output_after_its_input_ends() {
    // A server that answers a request only after a pause (think: it computes), then closes.
    const REQUEST: &[u8] = b"what is the answer?\n";
    const LEN: usize = 300_000;
    let emu = emulator(Config::default()).await;
    let api = api(&emu.endpoint()).await;
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let server = tokio::spawn(async move {
        let (mut s, _) = listener.accept().await.expect("accept");
        let mut req = vec![0u8; REQUEST.len()];
        s.read_exact(&mut req).await.expect("read the request");
        tokio::time::sleep(Duration::from_millis(500)).await;
        s.write_all(&random_bytes(LEN, 13)).await.expect("answer");
        req
    });
    let started = start_stdio(&api, port).await;
    let control: SharedControl = Arc::new(api.clone());
    // The request, then end of input: a half-close, as `printf … | ssmconnect ssh-proxy` makes.
    let mut input: &[u8] = REQUEST;
    let mut output: Vec<u8> = Vec::new();
    let end = within(
        60,
        "the stdio session",
        ssm_session::stdio::pipe_started(started, control, ChannelOptions::default(), &mut input, &mut output),
    )
    .await;
    let req = within(10, "the server", server).await.expect("server task");
    assert_eq!(req, REQUEST);
    assert!(matches!(end, Ok(End::Closed(_))), "{end:?}");
    assert_eq!(output.len(), LEN, "bytes of the answer written");
    assert!(output == random_bytes(LEN, 13), "the answer differs");
    emu.stop().await;
}
