//! The paced agent sends a full message each millisecond (§4.6); a client that wakes for each
//! one spends its CPU on waking. Once such a trickle has lasted, the driver reads the socket
//! once per `ChannelOptions::read_coalesce` and takes what arrived in one go (one write of acks,
//! one hand-over). Nothing is lost or reordered by it.

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
    // One message a millisecond, read each 16 ms after the first 50 ms: several a wake (about
    // five in a debug build beside the emulator).
    // Without the hold, an idle machine reads one per wake.
    assert!(
        frames >= 3 * wakes,
        "{frames} frames in {wakes} wakes: the trickle was not coalesced"
    );
    // Every data message is answered with an ack, which carries TCP's ACK: no extra system
    // call per wake for it.
    let quick = counters.quick_acks.load(Ordering::Relaxed);
    assert!(quick <= 5, "{quick} immediate TCP ACKs in a download of {wakes} wakes");
    emu.stop().await;
}

/// The emulator runs Nagle's algorithm (its default, as MGS may): after acking a keystroke it
/// holds the keystroke's echo until TCP has acknowledged that ack, and a client whose kernel
/// delays its ACK (up to 40 ms, expecting a reply) adds that to every keystroke. The agent's
/// acks of our input need no reply, so the driver has the kernel ACK them at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_agents_acks_of_keystrokes_are_acknowledged_at_once() {
    use ssm_proto::PayloadType;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let echo = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = echo.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = echo.accept().await {
            tokio::spawn(async move {
                let mut buf = [0u8; 256];
                while let Ok(n @ 1..) = s.read(&mut buf).await {
                    if s.write_all(&buf[..n]).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    let emu = emulator(Config::default()).await;
    let api = api(&emu.endpoint()).await;
    let dc = open_stdio(&api, port, ChannelOptions::default()).await;
    let counters = dc.read_counters();
    let (sender, mut rx, driver) = dc.into_parts();
    const KEYS: u8 = 10;
    for key in 0..KEYS {
        sender
            .send(PayloadType::Output, vec![b'a' + key])
            .await
            .expect("keystroke sent");
        let (_, echoed) = within(10, "the keystroke's echo", rx.recv()).await.expect("an echo");
        assert_eq!(echoed, vec![b'a' + key]);
    }
    let quick = counters.quick_acks.load(Ordering::Relaxed);
    assert!(quick >= 1, "no immediate TCP ACK after {KEYS} acked keystrokes");
    eprintln!("{quick} immediate TCP ACKs for {KEYS} keystrokes");
    drop(sender);
    let _ = within(30, "the driver's end", driver).await;
    emu.stop().await;
}

/// The length of the server's WebSocket frame at the start of `buf` (unmasked, RFC 6455 §5.2),
/// once its header is there.
fn frame_len(buf: &[u8]) -> Option<usize> {
    let short = usize::from(*buf.get(1)? & 0x7f);
    let (header, len) = match short {
        126 => (4, usize::from(u16::from_be_bytes(buf.get(2..4)?.try_into().ok()?))),
        127 => (
            10,
            usize::try_from(u64::from_be_bytes(buf.get(2..10)?.try_into().ok()?)).ok()?,
        ),
        n => (2, n),
    };
    Some(header + len)
}

/// A hold can end with only the start of a message read: its rest then arrives below the
/// socket's low-water mark, which wakes nothing. The driver must still read it when it comes,
/// not when the mark's worth of further messages has piled up behind it (here: never, as a
/// proxy on the data channel holds them back).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_split_across_a_hold_is_read_when_its_rest_arrives() {
    use std::time::{Duration, Instant};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::{TcpListener, TcpStream};
    use tokio::sync::mpsc;

    let emu = emulator(Config::default()).await;
    let api = api(&emu.endpoint()).await;
    let port = pattern_destination(22, None).await;
    let mut started = start_stdio(&api, port).await;
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let authority = redirect_stream(&mut started, listener.local_addr().unwrap());

    // The proxy: the client's bytes go through as they come, each read of them reported (after
    // a held read the driver writes its acks at once); the agent's are cut into WebSocket
    // frames that the scenario below lets through.
    let (frames_tx, mut frames) = mpsc::unbounded_channel::<Vec<u8>>();
    let (acks_tx, mut acks) = mpsc::unbounded_channel::<()>();
    let scenario = tokio::spawn(async move {
        let (client, _) = listener.accept().await.unwrap();
        let upstream = TcpStream::connect(&authority).await.unwrap();
        client.set_nodelay(true).unwrap();
        upstream.set_nodelay(true).unwrap();
        let (mut cr, mut cw) = client.into_split();
        let (mut ur, mut uw) = upstream.into_split();
        tokio::spawn(async move {
            let mut buf = vec![0u8; 64 << 10];
            while let Ok(n @ 1..) = cr.read(&mut buf).await {
                if uw.write_all(&buf[..n]).await.is_err() || acks_tx.send(()).is_err() {
                    return;
                }
            }
        });
        tokio::spawn(async move {
            let mut pending = Vec::new();
            let mut upgraded = false;
            let mut buf = vec![0u8; 64 << 10];
            while let Ok(n @ 1..) = ur.read(&mut buf).await {
                pending.extend_from_slice(&buf[..n]);
                if !upgraded {
                    // The HTTP upgrade's response, whole, as one piece.
                    let Some(end) = pending.windows(4).position(|w| w == b"\r\n\r\n") else {
                        continue;
                    };
                    let _ = frames_tx.send(pending.drain(..end + 4).collect());
                    upgraded = true;
                }
                while let Some(len) = frame_len(&pending).filter(|&len| len <= pending.len()) {
                    if frames_tx.send(pending.drain(..len).collect()).is_err() {
                        return;
                    }
                }
            }
        });
        // The paced stream goes through as it comes, long enough to be held (TRICKLE_AFTER).
        let mut until = None;
        loop {
            let f = frames.recv().await.expect("the agent's frames");
            cw.write_all(&f).await.unwrap();
            let until = *until.get_or_insert_with(|| Instant::now() + Duration::from_millis(600));
            if Instant::now() >= until {
                break;
            }
        }
        // Up to the end of a hold: the acks the driver writes after a held read.
        while acks.try_recv().is_ok() {}
        loop {
            tokio::select! {
                f = frames.recv() => cw.write_all(&f.expect("the agent's frames")).await.unwrap(),
                _ = acks.recv() => break,
            }
        }
        // The next message's first half, alone, for several holds; then its rest, and nothing
        // after it.
        let f = frames.recv().await.expect("the agent's frames");
        let half = f.len() / 2;
        cw.write_all(&f[..half]).await.unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
        while acks.try_recv().is_ok() {}
        cw.write_all(&f[half..]).await.unwrap();
        let rest = Instant::now();
        let acked = tokio::time::timeout(Duration::from_secs(2), acks.recv()).await;
        (acked.is_ok().then(|| rest.elapsed()), cw, frames)
    });
    let dc = open_started(&api, started, ChannelOptions::default()).await;
    let (sender, mut rx, driver) = dc.into_parts();
    let reader = tokio::spawn(async move { while rx.recv().await.is_some() {} });
    let (acked, _cw, _frames) = within(30, "the split message", scenario).await.unwrap();
    // Read (and acked) as soon as it is whole; held, its ack would wait for 256 KiB more.
    let acked = acked.expect("the message whose rest arrived was not read within 2 s");
    assert!(
        acked < Duration::from_millis(500),
        "the message was read {acked:?} after its rest arrived"
    );
    drop(sender);
    driver.abort();
    reader.abort();
    emu.stop().await;
}

/// The first bytes of the client's masked WebSocket frame at the start of `buf`, unmasked
/// (RFC 6455 §5.3): enough for a message's type (§3.1, bytes 4..36).
fn unmasked_start(buf: &[u8]) -> Option<Vec<u8>> {
    let (header, len) = match *buf.get(1)? & 0x7f {
        126 => (4, usize::from(u16::from_be_bytes(buf.get(2..4)?.try_into().ok()?))),
        127 => return None,
        n => (2, usize::from(n)),
    };
    let key = buf.get(header..header + 4)?;
    let body = buf.get(header + 4..)?;
    Some(body.iter().take(len).enumerate().map(|(i, b)| b ^ key[i % 4]).collect())
}

/// A reply's bytes go to the session kind before the ack for them is written: on the
/// runtime's one thread the session kind writes them out (what the user waits for) and the
/// driver writes the ack after it, never the other way round.
#[tokio::test(flavor = "current_thread")]
async fn a_message_reaches_the_session_kind_before_its_ack_is_written() {
    use std::io::{ErrorKind, Read, Write};
    use std::sync::Arc;
    use std::sync::atomic::AtomicBool;
    use std::time::{Duration, Instant};

    let emu = emulator(Config::default()).await;
    let api = api(&emu.endpoint()).await;

    // The destination: says "hello" when told, then holds the connection until told again.
    let dest = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dest_port = dest.local_addr().unwrap().port();
    let (say, said) = std::sync::mpsc::channel::<()>();
    std::thread::spawn(move || {
        let (mut c, _) = dest.accept().unwrap();
        c.set_nodelay(true).unwrap();
        if said.recv().is_ok() {
            let _ = c.write_all(b"hello");
        }
        let _ = said.recv();
    });

    // A proxy on the data channel (plain threads, off the runtime): the agent's bytes go
    // through as they come; the client's only while the gate is open, so that with it shut
    // what the driver writes stays in the proxy's socket, where a peek sees it.
    let mut started = start_stdio(&api, dest_port).await;
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let authority = redirect_stream(&mut started, listener.local_addr().unwrap());
    let gate = Arc::new(AtomicBool::new(true));
    let (side_tx, side_rx) = std::sync::mpsc::channel::<std::net::TcpStream>();
    let open = gate.clone();
    std::thread::spawn(move || {
        let (client, _) = listener.accept().unwrap();
        let upstream = std::net::TcpStream::connect(&authority).unwrap();
        client.set_nodelay(true).unwrap();
        upstream.set_nodelay(true).unwrap();
        // Reads of the client's side give up after 5 ms, so that a shut gate is seen soon;
        // the peeks below share the setting.
        client.set_read_timeout(Some(Duration::from_millis(5))).unwrap();
        side_tx.send(client.try_clone().unwrap()).unwrap();
        let (mut ur, mut cw) = (upstream.try_clone().unwrap(), client.try_clone().unwrap());
        std::thread::spawn(move || {
            let _ = std::io::copy(&mut ur, &mut cw);
        });
        let (mut cr, mut uw) = (client, upstream);
        let mut buf = vec![0u8; 64 << 10];
        loop {
            if !open.load(Ordering::SeqCst) {
                std::thread::sleep(Duration::from_millis(1));
                continue;
            }
            match cr.read(&mut buf) {
                Ok(0) => return,
                Ok(n) => {
                    if uw.write_all(&buf[..n]).is_err() {
                        return;
                    }
                }
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
                Err(_) => return,
            }
        }
    });

    let dc = open_started(&api, started, ChannelOptions::default()).await;
    let (sender, mut rx, driver) = dc.into_parts();
    let side = side_rx
        .recv_timeout(Duration::from_secs(5))
        .expect("the proxy's client side");
    // What the client writes: the bytes waiting in the proxy's socket (a peek waits up to the
    // 5 ms read timeout, the runtime's thread with it, so nothing is written meanwhile).
    let waiting = |side: &std::net::TcpStream| -> Vec<u8> {
        let mut buf = vec![0u8; 4096];
        match side.peek(&mut buf) {
            Ok(n) => buf[..n].to_vec(),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => Vec::new(),
            Err(e) => panic!("peek: {e}"),
        }
    };

    // Quiet after the start; then the gate shuts, and once the proxy's last read is over,
    // nothing of the client's is waiting.
    tokio::time::sleep(Duration::from_millis(300)).await;
    gate.store(false, Ordering::SeqCst);
    std::thread::sleep(Duration::from_millis(20));
    assert!(
        waiting(&side).is_empty(),
        "the client wrote something after a quiet start"
    );

    say.send(()).unwrap();
    let (_, data) = within(10, "the destination's bytes", rx.recv())
        .await
        .expect("a message");
    assert_eq!(data, b"hello");
    let early = waiting(&side);
    assert!(
        early.is_empty(),
        "the ack ({} bytes) was written before the session kind had the message",
        early.len()
    );

    // The ack follows in the same turn of the driver.
    let until = Instant::now() + Duration::from_secs(5);
    let ack = loop {
        tokio::time::sleep(Duration::from_millis(2)).await;
        let got = waiting(&side);
        if !got.is_empty() {
            break got;
        }
        assert!(Instant::now() < until, "no ack was written within 5 s");
    };
    let start = unmasked_start(&ack).expect("a whole WebSocket frame header");
    let message_type = start.get(4..36).map(|t| String::from_utf8_lossy(t).trim().to_owned());
    assert_eq!(
        message_type.as_deref(),
        Some("acknowledge"),
        "the frame written after the message"
    );

    gate.store(true, Ordering::SeqCst);
    let _ = say.send(());
    drop(sender);
    let _ = within(30, "the driver's end", driver).await;
    emu.stop().await;
}
