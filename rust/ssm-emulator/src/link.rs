//! The emulated MGS between a session's agent and one client WebSocket: a reader and a writer
//! task whose shapers drop, duplicate, delay and reorder frames in each direction (§11.4).

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::ws::{Message, WebSocket};
use bytes::Bytes;
use futures_util::stream::SplitStream;
use futures_util::{SinkExt, StreamExt};
use tokio::sync::{Semaphore, mpsc};
use tokio::task::JoinHandle;
use tokio::time::{Instant, sleep_until};

use crate::faults::{self, DirectionFaults, Verdict};
use crate::state::{Counters, Shared};

/// What a link's reader hands the agent.
pub(crate) enum Inbound {
    /// A frame from the client on link `id`.
    Frame(u64, Bytes),
    /// Link `id` is closed.
    Closed(u64),
}

/// Bytes of client frames read ahead of the agent's processing. The agent reads a frame only
/// after it has handled the one before (agent/session/communicator/websocketchannel.go:
/// `ReadMessage`, then `OnMessage` on it), through gorilla/websocket's buffered reader (its
/// default 4 KiB: the agent's dialer sets none, websocketutil/websocketutil.go there), so what
/// it holds read but unhandled is bounded in bytes, not frames: a few data frames, or many
/// more of the small acks. The bound is larger than that buffer: each time the queue runs dry
/// the agent's loop takes a turn (timers, output, the socket), and with room for only 16
/// frames, a turn per 16 acks, an unpaced download ran at about two thirds of its rate with
/// this bound. A stalled agent still stops reading: what a client can write ahead of it is the
/// TCP buffers (MiBs once the kernel has grown them) and at most these 64 KiB.
const INBOUND_BYTES: usize = 64 * 1024;

/// What a frame takes of [`INBOUND_BYTES`]; a larger frame takes all of it.
fn inbound_cost(frame: &Bytes) -> u32 {
    frame.len().clamp(1, INBOUND_BYTES) as u32
}

/// The queue from a session's link readers to its agent, bounded by [`INBOUND_BYTES`].
pub(crate) fn inbound_queue() -> (InboundTx, InboundRx) {
    let (tx, rx) = mpsc::unbounded_channel();
    let room = Arc::new(Semaphore::new(INBOUND_BYTES));
    (InboundTx { tx, room: room.clone() }, InboundRx { rx, room })
}

/// A link reader's end of [`inbound_queue`].
#[derive(Clone)]
pub(crate) struct InboundTx {
    tx: mpsc::UnboundedSender<Inbound>,
    room: Arc<Semaphore>,
}

impl InboundTx {
    /// Waits for room, then queues `msg`; `Err` once the agent has gone.
    async fn send(&self, msg: Inbound) -> Result<(), ()> {
        if let Inbound::Frame(_, frame) = &msg {
            self.room
                .acquire_many(inbound_cost(frame))
                .await
                .map_err(|_| ())?
                .forget();
        }
        self.tx.send(msg).map_err(|_| ())
    }
}

/// The agent's end of [`inbound_queue`]; dropping it releases a reader waiting for room.
pub(crate) struct InboundRx {
    rx: mpsc::UnboundedReceiver<Inbound>,
    room: Arc<Semaphore>,
}

impl InboundRx {
    pub(crate) async fn recv(&mut self) -> Option<Inbound> {
        let msg = self.rx.recv().await;
        self.taken(msg)
    }

    pub(crate) fn try_recv(&mut self) -> Option<Inbound> {
        let msg = self.rx.try_recv().ok();
        self.taken(msg)
    }

    /// A frame taken off the queue makes room for the reader.
    fn taken(&self, msg: Option<Inbound>) -> Option<Inbound> {
        if let Some(Inbound::Frame(_, frame)) = &msg {
            self.room.add_permits(inbound_cost(frame) as usize);
        }
        msg
    }
}

impl Drop for InboundRx {
    fn drop(&mut self) {
        self.room.close();
    }
}

/// Frames queued for one socket beyond what its buffers hold. The agent writes to its
/// WebSocket synchronously (agent/session/datachannel/datachannel.go SendMessage →
/// wsChannel.SendMessage under a write lock), so a client that stops reading blocks the agent's
/// writer once TCP and this small queue are full.
const WRITE_QUEUE: usize = 64;
/// Most frames taken from that queue for one socket write.
const WRITE_BATCH: usize = 16;

/// What MGS does to the socket, ahead of queued frames.
enum LinkCtl {
    /// A frame MGS writes itself, ahead of the agent's (publication control).
    Frame(Bytes),
    /// Drop the socket abruptly.
    Cut,
    /// Stop reading and writing the socket without closing it: a blackholed link.
    Freeze,
    /// Write what is queued, then these frames, then a close frame.
    Close(Vec<Bytes>),
}

/// Result of [`Link::try_send`].
pub(crate) enum Sent {
    /// Queued for the socket.
    Queued,
    /// The socket has gone; the frame is lost.
    Gone,
    /// The socket is backed up: the agent's write would block. The frame comes back.
    Blocked(Bytes),
}

/// The agent's handle on one socket.
pub(crate) struct Link {
    pub(crate) id: u64,
    out: mpsc::Sender<Bytes>,
    ctl: mpsc::UnboundedSender<LinkCtl>,
    /// Frames written to this socket so far.
    pub(crate) frames_sent: u64,
}

impl Link {
    /// Queues a frame for the client unless the socket is backed up. `counted` frames count
    /// in `frames_sent` (unnumbered control frames do not).
    pub(crate) fn try_send(&mut self, frame: Bytes, counted: bool) -> Sent {
        match self.out.try_send(frame) {
            Ok(()) => {
                self.frames_sent += u64::from(counted);
                Sent::Queued
            }
            Err(mpsc::error::TrySendError::Full(frame)) => Sent::Blocked(frame),
            Err(mpsc::error::TrySendError::Closed(_)) => Sent::Gone,
        }
    }

    /// Waits until a frame can be queued again (or the socket has gone).
    pub(crate) async fn writable(&self) {
        drop(self.out.reserve().await);
    }

    /// Sends a frame MGS generates itself at once, ahead of anything queued.
    pub(crate) fn send_now(&self, frame: Bytes) {
        let _ = self.ctl.send(LinkCtl::Frame(frame));
    }

    /// Drops the socket abruptly: no close frame.
    pub(crate) fn cut(self) {
        let _ = self.ctl.send(LinkCtl::Cut);
    }

    /// Freezes the socket: nothing more is read or written, and it stays open.
    pub(crate) fn freeze(self) {
        let _ = self.ctl.send(LinkCtl::Freeze);
    }

    /// Writes what is still queued, then `last`, then a close frame.
    pub(crate) fn close(self, last: Vec<Bytes>) {
        let _ = self.ctl.send(LinkCtl::Close(last));
    }
}

/// Delays, duplicates and reorders frames of one direction (§11.4).
struct Shaper {
    heap: BinaryHeap<Reverse<(Instant, u64, Bytes)>>,
    counter: u64,
    held: Option<Bytes>,
}

impl Shaper {
    fn new() -> Self {
        Self {
            heap: BinaryHeap::new(),
            counter: 0,
            held: None,
        }
    }

    /// Applies `f` to `frame`; returns frames due now, in order.
    fn push(&mut self, shared: &Shared, f: &DirectionFaults, frame: Bytes) -> Vec<Bytes> {
        // No faults and nothing held back: the frame goes as it is (what the rest would decide,
        // without a clock read and a random draw for every frame).
        if !f.active() && self.heap.is_empty() && self.held.is_none() {
            return vec![frame];
        }
        let verdict = faults::decide(f, &mut rand::rng());
        let now = Instant::now();
        let mut ready = Vec::new();
        match verdict {
            Verdict::Drop => Counters::add(&shared.counters.frames_dropped, 1),
            Verdict::Deliver { copies, delay, hold } => {
                if copies > 1 {
                    Counters::add(&shared.counters.frames_duplicated, 1);
                }
                let mut batch = Vec::new();
                for _ in 0..copies {
                    batch.push(frame.clone());
                }
                if hold && self.held.is_none() {
                    self.held = batch.pop();
                } else if let Some(h) = self.held.take() {
                    batch.push(h);
                }
                for b in batch {
                    if delay.is_zero() && self.heap.is_empty() {
                        ready.push(b);
                    } else {
                        self.counter += 1;
                        self.heap.push(Reverse((now + delay, self.counter, b)));
                    }
                }
            }
        }
        ready.extend(self.pop_due(now));
        ready
    }

    fn pop_due(&mut self, now: Instant) -> Vec<Bytes> {
        let mut out = Vec::new();
        while let Some(Reverse((at, _, _))) = self.heap.peek() {
            if *at > now {
                break;
            }
            if let Some(Reverse((_, _, b))) = self.heap.pop() {
                out.push(b);
            }
        }
        out
    }

    fn next_due(&self) -> Option<Instant> {
        self.heap.peek().map(|Reverse((at, _, _))| *at)
    }

    fn drain_all(&mut self) -> Vec<Bytes> {
        let mut out: Vec<Bytes> = std::iter::from_fn(|| self.heap.pop().map(|Reverse((_, _, b))| b)).collect();
        out.extend(self.held.take());
        out
    }
}

/// How long a frozen socket is held open.
const FROZEN_FOR: Duration = Duration::from_secs(120);

/// How long a socket is still read after its agent has finished.
const CLOSE_LINGER: Duration = Duration::from_secs(5);

/// The agent has finished: keep reading (and discarding) until the client closes its side or
/// `CLOSE_LINGER` passes. Dropping the socket with unread frames in its receive buffer makes the
/// kernel reset the connection, and a reset destroys what is still in flight to the client:
/// acks, `channel_closed` and the close frame.
async fn linger(stream: &mut SplitStream<WebSocket>) {
    let _ = tokio::time::timeout(CLOSE_LINGER, async { while let Some(Ok(_)) = stream.next().await {} }).await;
}

/// Starts the reader and writer tasks of `socket`; client frames go to `inbound` as link `id`.
pub(crate) fn spawn(shared: Arc<Shared>, socket: WebSocket, id: u64, inbound: InboundTx) -> Link {
    let (mut sink, mut stream) = socket.split();
    let (out_tx, mut out_rx) = mpsc::channel::<Bytes>(WRITE_QUEUE);
    let (ctl_tx, mut ctl_rx) = mpsc::unbounded_channel::<LinkCtl>();
    let (freeze_tx, mut freeze_rx) = tokio::sync::oneshot::channel::<()>();
    let reader_shared = shared.clone();
    let reader: JoinHandle<()> = tokio::spawn(async move {
        let mut shaper = Shaper::new();
        let mut writer_gone = false;
        loop {
            let due = shaper.next_due();
            let frames = tokio::select! {
                frozen = &mut freeze_rx, if !writer_gone => {
                    if frozen.is_ok() {
                        // Frozen: the socket stays open and unread until the writer drops it.
                        std::future::pending::<()>().await;
                    }
                    writer_gone = true;
                    continue;
                }
                msg = stream.next() => {
                    let bytes = match msg {
                        Some(Ok(Message::Binary(b))) => b,
                        // §2.3: text frames are parsed as binary messages too.
                        Some(Ok(Message::Text(t))) => Bytes::from(t),
                        Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
                        Some(Ok(Message::Close(_))) | Some(Err(_)) | None => break,
                    };
                    let f = reader_shared.faults();
                    shaper.push(&reader_shared, &f.to_agent, bytes)
                }
                _ = sleep_until(due.unwrap_or_else(Instant::now)), if due.is_some() => shaper.pop_due(Instant::now()),
            };
            for frame in frames {
                if inbound.send(Inbound::Frame(id, frame)).await.is_err() {
                    linger(&mut stream).await;
                    return;
                }
            }
        }
        for frame in shaper.drain_all() {
            let _ = inbound.send(Inbound::Frame(id, frame)).await;
        }
        let _ = inbound.send(Inbound::Closed(id)).await;
    });
    tokio::spawn(async move {
        let mut shaper = Shaper::new();
        loop {
            let due = shaper.next_due();
            let frames = tokio::select! {
                biased;
                cmd = ctl_rx.recv() => match cmd {
                    Some(LinkCtl::Frame(bytes)) => vec![bytes],
                    Some(LinkCtl::Cut) => {
                        // Abrupt: no close frame; dropping both halves closes the TCP connection.
                        Counters::add(&shared.counters.sockets_cut, 1);
                        reader.abort();
                        return;
                    }
                    Some(LinkCtl::Freeze) => {
                        // Neither half is dropped, so the client sees an open socket on which
                        // nothing moves, as on a blackholed path; it is closed after FROZEN_FOR
                        // (as a kernel eventually gives up on one).
                        let _ = freeze_tx.send(());
                        Counters::add(&shared.counters.sockets_frozen, 1);
                        drop(out_rx);
                        tokio::time::sleep(FROZEN_FOR).await;
                        reader.abort();
                        return;
                    }
                    Some(LinkCtl::Close(last)) => {
                        let mut rest: Vec<Bytes> = std::iter::from_fn(|| out_rx.try_recv().ok()).collect();
                        rest.extend(shaper.drain_all());
                        rest.extend(last);
                        for frame in rest {
                            let _ = sink.send(Message::Binary(frame)).await;
                        }
                        let _ = sink.send(Message::Close(None)).await;
                        let _ = tokio::time::timeout(Duration::from_secs(2), reader).await;
                        return;
                    }
                    None => {
                        for frame in shaper.drain_all() {
                            let _ = sink.send(Message::Binary(frame)).await;
                        }
                        let _ = sink.send(Message::Close(None)).await;
                        let _ = tokio::time::timeout(Duration::from_secs(2), reader).await;
                        return;
                    }
                },
                Some(bytes) = out_rx.recv() => {
                    let f = shared.faults();
                    let mut frames = shaper.push(&shared, &f.to_client, bytes);
                    // Frames the agent has queued already go out in one socket write: the
                    // frames and their order are the same, only TCP carries them in fewer
                    // segments (the emulator's cost per message, not the client's, otherwise
                    // limits an unpaced transfer).
                    for _ in 1..WRITE_BATCH {
                        match out_rx.try_recv() {
                            Ok(bytes) => frames.extend(shaper.push(&shared, &f.to_client, bytes)),
                            Err(_) => break,
                        }
                    }
                    frames
                }
                _ = sleep_until(due.unwrap_or_else(Instant::now)), if due.is_some() => shaper.pop_due(Instant::now()),
            };
            let mut written = Ok(());
            for frame in frames {
                written = sink.feed(Message::Binary(frame)).await;
                if written.is_err() {
                    break;
                }
            }
            if written.is_err() || sink.flush().await.is_err() {
                reader.abort();
                return;
            }
        }
    });
    Link {
        id,
        out: out_tx,
        ctl: ctl_tx,
        frames_sent: 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(len: usize) -> Inbound {
        Inbound::Frame(1, Bytes::from(vec![0u8; len]))
    }

    /// Read-ahead is bounded in bytes: many small frames fit where few large ones do, a reader
    /// waits for the agent to take frames, and it is let go once the agent has gone.
    #[tokio::test]
    async fn inbound_queue_is_bounded_in_bytes() {
        let (tx, mut rx) = inbound_queue();
        let ack = 256;
        let acks = INBOUND_BYTES / ack;
        for _ in 0..acks {
            tx.send(frame(ack)).await.expect("room for the acks");
        }
        let more = tx.clone();
        let mut waiting = tokio::spawn(async move { more.send(frame(1100)).await });
        tokio::task::yield_now().await;
        assert!(!waiting.is_finished(), "a frame past the budget waits");
        // Four acks' room is not enough for it; a fifth's is.
        for _ in 0..4 {
            assert!(matches!(rx.try_recv(), Some(Inbound::Frame(_, b)) if b.len() == ack));
        }
        tokio::task::yield_now().await;
        assert!(!waiting.is_finished(), "a frame went in with less room than it takes");
        assert!(matches!(rx.try_recv(), Some(Inbound::Frame(_, b)) if b.len() == ack));
        tokio::time::timeout(Duration::from_secs(5), &mut waiting)
            .await
            .expect("the reader goes on once frames are taken")
            .unwrap()
            .expect("queued");
        // A frame larger than the whole budget takes all of it and still goes through.
        while rx.try_recv().is_some() {}
        tx.send(frame(3 * INBOUND_BYTES)).await.expect("a large frame");
        let blocked = tx.clone();
        let waiting = tokio::spawn(async move { blocked.send(frame(1)).await });
        tokio::task::yield_now().await;
        assert!(!waiting.is_finished(), "nothing else fits beside it");
        drop(rx);
        let sent = tokio::time::timeout(Duration::from_secs(5), waiting)
            .await
            .expect("let go")
            .unwrap();
        assert!(sent.is_err(), "the agent has gone");
        // Closing the link needs no room.
        assert!(tx.send(Inbound::Closed(1)).await.is_err());
    }
}
