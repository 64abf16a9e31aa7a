//! The data-channel driver: one tokio task per session that owns the WebSocket and the
//! `ssm_proto::Channel`, runs the handshake, keeps the connection alive, reconnects with
//! `ResumeSession`, and exchanges payloads with the session kind through bounded queues.
//!
//! Fixes over the official client (§9): inbound data goes to a local queue and is acked at once,
//! so a slow local sink does not hold acks until that queue is full; then the socket is not read
//! and TCP pushes back on the agent (items 6, 9); every socket write has a deadline; writes while disconnected are numbered and
//! buffered and go out after the reconnect (item 10); one task owns one socket (item 11); pings
//! every 30 s and a dead-connection timeout (item 12); a failed first open is an error, not a hang
//! (item 13).

use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use futures_util::{SinkExt, StreamExt};
use ssm_proto::crypto::{SessionCipher, Side, is_encrypted};
use ssm_proto::handshake::{ClientHandshake, EncChallenge, HandshakeComplete, KmsAnswer};
use ssm_proto::{Channel, Event, OpenDataChannel, PayloadType, PortMode, PortProperties, SessionType};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use crate::aws::{SharedControl, StartedSession, Token, check_endpoint};
use crate::error::{Error, Result};
use crate::kms::{DataKey, DataKeyRequest, KmsError};
use crate::socket::Socket;
use crate::tls::{self, Trust};

type Ws = WebSocketStream<MaybeTlsStream<Socket>>;

/// The TCP socket under the WebSocket (and its TLS).
fn socket(ws: &mut Ws) -> Option<&mut Socket> {
    match ws.get_mut() {
        MaybeTlsStream::Plain(s) => Some(s),
        MaybeTlsStream::Rustls(tls) => Some(tls.get_mut().0),
        _ => None,
    }
}

/// Tunables of a data channel.
#[derive(Debug, Clone)]
pub struct ChannelOptions {
    /// Version reported to the agent (§5.5).
    pub client_version: String,
    /// Longest wait for the session type (handshake or first output).
    pub start_timeout: Duration,
    /// WebSocket ping interval.
    pub ping_interval: Duration,
    /// Silence after which the connection is presumed dead and reopened.
    pub dead_after: Duration,
    /// How long to keep trying to reconnect after a loss.
    pub reconnect_for: Duration,
    /// Inbound bytes held locally before the socket is no longer read (back-pressure: TCP
    /// then holds the agent's writes, and with them its reading of the destination).
    pub inbound_high_water: usize,
    /// Longest wait for our data to be acked when finishing.
    pub drain_timeout: Duration,
    /// Longest a write to the socket may take before the link is presumed dead and reopened
    /// (a blackholed link fills the socket buffer and would otherwise block for as long as the
    /// kernel keeps retrying).
    pub write_timeout: Duration,
    /// Longest the agent may leave our data unacknowledged, retransmissions notwithstanding,
    /// while we read what it sends, before the session is given up (as TCP gives up a
    /// connection whose data is never acknowledged).
    pub unacked_limit: Duration,
    /// Payload bytes held out of order (behind a lost message) before further messages are
    /// dropped unacked. The agent keeps no send window and resends only its oldest unacked
    /// message, once per 100 ms (§4.5), so every message dropped here costs a tick: on a lossy
    /// link the store must hold what the agent sends while a hole waits for its resend.
    pub reorder_buffer_bytes: usize,
    /// How long the socket is left unread between reads, while what arrives is a slow trickle
    /// of full messages (the agent paces a session at 1 KiB each millisecond): each read then
    /// takes that many messages at once, with one write of their acks and one local write,
    /// instead of waking for each. The reads keep a steady beat; on Linux the
    /// socket's receive low-water mark stays raised while the trickle lasts, so the kernel does
    /// not wake the runtime for each message either, and each read asks the socket directly.
    /// Only a stream of full messages below [`TRICKLE_MAX_RATE`] bytes/s that has lasted
    /// [`TRICKLE_AFTER`] is held, so keystrokes, short replies and fast transfers are never
    /// delayed; zero turns it off. The acks of a held message go out up to this much later
    /// (up to twice, when the service's Nagle holds its messages until our acks carry TCP's
    /// ACK), which the agent's RTT estimate takes in: its RTO stays at least 10 ms, or four mean
    /// deviations, above the smoothed RTT (§4.5), and so above the longest ack delay for holds
    /// under 20 ms, so it does not resend them.
    pub read_coalesce: Duration,
}

impl Default for ChannelOptions {
    fn default() -> Self {
        Self {
            client_version: ssm_proto::version::CLIENT_VERSION.to_owned(),
            start_timeout: Duration::from_secs(60),
            ping_interval: Duration::from_secs(30),
            dead_after: Duration::from_secs(90),
            reconnect_for: Duration::from_secs(120),
            inbound_high_water: 128 << 10,
            drain_timeout: Duration::from_secs(5),
            write_timeout: Duration::from_secs(30),
            unacked_limit: Duration::from_secs(600),
            reorder_buffer_bytes: ssm_proto::Config::client().receive_buffer_bytes,
            read_coalesce: Duration::from_millis(16),
        }
    }
}

/// What the session turned out to be.
#[derive(Debug, Clone)]
pub struct SessionStart {
    /// Session id.
    pub session_id: String,
    /// Session type announced by the agent, or `Standard_Stream` without a handshake (§5.1).
    pub session_type: SessionType,
    /// For a `Port` session: the mode the client runs it in and the properties it was
    /// announced with (§7.1), read once from the handshake.
    pub port: Option<PortStart>,
    /// Agent version from the handshake (empty without one).
    pub agent_version: String,
    /// `CustomerMessage` from HandshakeComplete.
    pub customer_message: String,
}

/// How a `Port` session is to be run, as its handshake announced it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortStart {
    /// Basic, multiplexed or stream (§7.1).
    pub mode: PortMode,
    /// The handshake's port properties (`portNumber`, `type`, `localPortNumber`, `host`).
    pub properties: PortProperties,
}

impl PortStart {
    fn from_handshake(session_type: &SessionType, properties: &serde_json::Value, agent_version: &str) -> Option<Self> {
        if *session_type != SessionType::Port {
            return None;
        }
        let properties: PortProperties = serde_json::from_value(properties.clone()).unwrap_or_default();
        Some(Self {
            mode: PortMode::for_client(properties.kind.as_deref(), agent_version),
            properties,
        })
    }
}

/// How a session ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum End {
    /// `channel_closed` arrived; its text, if any.
    Closed(String),
    /// We finished it ourselves.
    Finished,
}

enum Command {
    Send(PayloadType, Vec<u8>),
    /// `last` goes out first, in the same step: whatever the agent answers to it (an ack, then
    /// `channel_closed` for a TerminateSession flag) finds the driver already finishing.
    Finish {
        terminate: bool,
        last: Option<(PayloadType, Vec<u8>)>,
    },
}

/// Sends payloads into a session. Cheap to clone.
#[derive(Clone)]
pub struct DataSender {
    tx: mpsc::Sender<Command>,
}

impl DataSender {
    /// Queues one stream message; waits while the send window is full.
    pub async fn send(&self, payload_type: PayloadType, data: Vec<u8>) -> Result<()> {
        self.tx
            .send(Command::Send(payload_type, data))
            .await
            .map_err(|_| Error::Connect("session has ended".into()))
    }

    /// Waits for room for one message; lets callers `select!` on sending without blocking
    /// their other work (a send that blocks while inbound data waits could deadlock, §4.6).
    pub async fn reserve(&self) -> Result<SendPermit<'_>> {
        self.tx
            .reserve()
            .await
            .map(SendPermit)
            .map_err(|_| Error::Connect("session has ended".into()))
    }

    /// Asks the driver to drain what is unacked (bounded) and end; with `terminate` it also calls
    /// `TerminateSession` (§9 item 22).
    pub async fn finish(&self, terminate: bool) {
        let _ = self.tx.send(Command::Finish { terminate, last: None }).await;
    }

    /// [`DataSender::finish`], sending one last message first. Not the same as `send` and then
    /// `finish`: between those two the agent's answer to the message can arrive, and a
    /// `channel_closed` read before the driver is finishing ends the session as the service's
    /// doing (no TerminateSession call).
    pub async fn finish_with(&self, payload_type: PayloadType, data: Vec<u8>, terminate: bool) {
        let last = Some((payload_type, data));
        let _ = self.tx.send(Command::Finish { terminate, last }).await;
    }
}

/// Room for one message, from [`DataSender::reserve`].
pub struct SendPermit<'a>(mpsc::Permit<'a, Command>);

impl SendPermit<'_> {
    /// Queues the message.
    pub fn send(self, payload_type: PayloadType, data: Vec<u8>) {
        self.0.send(Command::Send(payload_type, data));
    }
}

/// Payloads from the agent, in order.
pub type Inbox = mpsc::Receiver<(PayloadType, Vec<u8>)>;

/// An open session's data channel.
pub struct DataChannel {
    /// What the session is.
    pub start: SessionStart,
    sender: DataSender,
    rx: mpsc::Receiver<(PayloadType, Vec<u8>)>,
    task: JoinHandle<Result<End>>,
    counters: Arc<ReadCounters>,
}

impl DataChannel {
    /// Opens the WebSocket, sends the open frame (§2.2) and waits until the session type is known
    /// (§5, §11.5).
    pub async fn open(started: StartedSession, control: SharedControl, opts: ChannelOptions) -> Result<Self> {
        crate::install_crypto_provider();
        let client_id = uuid::Uuid::new_v4().to_string();
        let trust = control.trust();
        let (cmd_tx, cmd_rx) = mpsc::channel(256);
        let (in_tx, in_rx) = mpsc::channel(DELIVERY_QUEUE);
        let (start_tx, start_rx) = oneshot::channel();
        let counters = Arc::new(ReadCounters::default());
        let now = Instant::now();
        let unix_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(1);
        let ending = Arc::new(Ending {
            control: control.clone(),
            session_id: started.session_id.clone(),
            done: AtomicBool::new(false),
        });
        let driver = Driver {
            session_id: started.session_id.clone(),
            target_id: started.target_id.clone(),
            cipher: None,
            data_key: None,
            stream_url: started.stream_url,
            trust,
            client_id,
            control,
            ending: ending.clone(),
            channel: Channel::new(
                ssm_proto::Config {
                    receive_buffer_bytes: opts.reorder_buffer_bytes,
                    ..ssm_proto::Config::client()
                },
                now,
                unix_ms,
                rand::random(),
            ),
            ws: None,
            start: StartState::Waiting(Some(start_tx)),
            start_deadline: saturating_add(now, opts.start_timeout),
            inbound: VecDeque::new(),
            inbound_bytes: 0,
            in_tx,
            cmd_rx,
            last_rx: now,
            ack_wait: (None, now),
            next_ping: now,
            finishing: None,
            closed: None,
            lost_since: None,
            cadence: Cadence::default(),
            tick_read: false,
            trickle: Trickle::default(),
            this_wake: (0, 0, true),
            handed_over: false,
            wake: Box::pin(tokio::time::sleep_until(tokio::time::Instant::from_std(now))),
            counters: counters.clone(),
            opts,
        };
        // The session exists from here on: abandoning this future (a cancel) terminates it. The
        // driver dials the data channel itself, so that a failed dial ends like any other start.
        let mut pending = PendingSession {
            task: Some(tokio::spawn(driver.run(started.token))),
            ending,
        };
        let start = match start_rx.await {
            Ok(Ok(s)) => s,
            failed => {
                // The driver is ending by itself: it still sends what it queued (e.g. a refusing
                // HandshakeResponse) and ends the session at the service. Wait for that (it is
                // bounded), so that a caller who exits next leaves nothing open.
                let Some(task) = pending.task.take() else {
                    return Err(Error::Cancelled);
                };
                let ended = tokio::time::timeout(END_WAIT, task).await;
                return Err(match (failed, ended) {
                    (Ok(Err(e)), _) => e,
                    (_, Ok(Ok(Err(e)))) => e,
                    (_, Ok(Ok(Ok(End::Closed(reason))))) => Error::Closed {
                        session_id: started.session_id,
                        reason,
                    },
                    _ => Error::Connect("the session ended before it started".into()),
                });
            }
        };
        let Some(task) = pending.task.take() else {
            return Err(Error::Cancelled);
        };
        Ok(Self {
            start,
            sender: DataSender { tx: cmd_tx },
            rx: in_rx,
            task,
            counters,
        })
    }

    /// What the driver has read so far (live counts).
    pub fn read_counters(&self) -> Arc<ReadCounters> {
        self.counters.clone()
    }

    /// A sender for this session.
    pub fn sender(&self) -> DataSender {
        self.sender.clone()
    }

    /// Next payload from the agent; `None` once the session has ended.
    pub async fn recv(&mut self) -> Option<(PayloadType, Vec<u8>)> {
        self.rx.recv().await
    }

    /// Ends the session without using it (it turned out to be the wrong kind): drains what is
    /// unacked (bounded), terminates it and waits for the driver.
    pub async fn end(self) -> Result<End> {
        let (sender, rx, task) = self.into_parts();
        drop(rx);
        sender.finish(true).await;
        drop(sender);
        task.await.map_err(|e| Error::Connect(format!("driver failed: {e}")))?
    }

    /// Splits into sender, receiver and the driver's completion.
    pub fn into_parts(self) -> (DataSender, Inbox, JoinHandle<Result<End>>) {
        (self.sender, self.rx, self.task)
    }
}

/// A session whose data channel is being dialed or whose start is being awaited. If that is
/// abandoned (the caller's future is dropped: cancellation), the driver is stopped and the
/// session terminated, so nothing stays open.
struct PendingSession {
    task: Option<JoinHandle<Result<End>>>,
    ending: Arc<Ending>,
}

impl Drop for PendingSession {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
            self.ending.clone().terminate_detached();
        }
    }
}

/// Longest wait for `TerminateSession`: a session's end is never held longer by the API.
pub const TERMINATE_WAIT: Duration = Duration::from_secs(5);

/// Longest wait of [`DataChannel::open`] for a driver that failed the start to end the session.
const END_WAIT: Duration = Duration::from_secs(10);

/// Ends one session at the service, at most once: `TerminateSession` (bounded by
/// [`TERMINATE_WAIT`]) unless the service has said that the session is over. The driver's end
/// goes through it, and so does the cancel of a pending start (issue 12 item 5).
struct Ending {
    control: SharedControl,
    session_id: String,
    /// `TerminateSession` was sent, or the service said that the session is over
    /// (`channel_closed`, ResumeSession finding it ended).
    done: AtomicBool,
}

impl Ending {
    /// The service has ended the session: nothing more to do.
    fn service_ended(&self) {
        self.done.store(true, Ordering::SeqCst);
    }

    /// `TerminateSession`, unless it was sent or the session is over.
    async fn terminate(&self) {
        if self.done.swap(true, Ordering::SeqCst) {
            return;
        }
        let id = &self.session_id;
        match tokio::time::timeout(TERMINATE_WAIT, self.control.terminate(id)).await {
            Ok(Ok(())) => tracing::debug!(session = %id, "TerminateSession"),
            Ok(Err(e)) => tracing::warn!(session = %id, "TerminateSession: {e}"),
            Err(_) => tracing::warn!(session = %id, "TerminateSession: no answer within {TERMINATE_WAIT:?}"),
        }
    }

    /// [`Ending::terminate`] on a task of its own (from `Drop`).
    fn terminate_detached(self: Arc<Self>) {
        crate::aws::spawn_detached(async move { self.terminate().await });
    }
}

/// Messages handed to the session kind that it has not taken yet. What waits beyond them stays
/// in the driver's own queue, bounded in bytes by [`ChannelOptions::inbound_high_water`]; a
/// queue bounded only in messages (it was 1024) held up to 1.2 MiB of an unpaced download's
/// 1 KiB messages whenever the session kind fell behind, an eighth of the helper's peak RSS
/// (issue 13). 64 is four holds' worth of a paced stream (§4.5) and a handful of reads' worth
/// of an unpaced one.
const DELIVERY_QUEUE: usize = 64;

/// Largest WebSocket message accepted from the service.
const MAX_MESSAGE: usize = 4 << 20;
/// Bytes asked of the socket per read. tungstenite zeroes this much of its buffer before every
/// read, including the one that finds the socket empty, so at its default (128 KiB) a paced
/// message, which comes alone, cost two 128 KiB `memset`s: a tenth of the helper's CPU in a paced
/// download (issue 13). 16 KiB still holds a dozen of the agent's 1 KiB data messages.
const READ_BUFFER: usize = 16 << 10;

/// Dials the stream URL (`wss://` trusting what `trust` trusts) and sends the open frame.
async fn dial(url: &str, trust: &Trust, token: &Token, client_id: &str, client_version: &str) -> Result<Ws> {
    check_endpoint(url, "stream URL")?;
    let connector = tokio_tungstenite::Connector::Rustls(trust.client_config()?);
    // Frames are small (§3.1: the agent's payloads are at most a few KiB); a peer's message
    // may not make us hold more than this.
    let config = tokio_tungstenite::tungstenite::protocol::WebSocketConfig::default()
        .max_message_size(Some(MAX_MESSAGE))
        .max_frame_size(Some(MAX_MESSAGE))
        .read_buffer_size(READ_BUFFER);
    let connect = async {
        use tokio_tungstenite::tungstenite::client::IntoClientRequest;
        let request = url.into_client_request()?;
        let uri = request.uri();
        let host = uri.host().unwrap_or_default();
        let host = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')).unwrap_or(host);
        let port = uri
            .port_u16()
            .unwrap_or(if uri.scheme_str() == Some("wss") { 443 } else { 80 });
        let tcp = TcpStream::connect((host, port)).await?;
        // TCP_NODELAY: Go, which the plugin and the agent are written in, sets it on every TCP
        // connection; with Nagle on, a small frame (a keystroke, an ack) waits behind the
        // peer's delayed ACK (§4, issue 13).
        tcp.set_nodelay(true)?;
        tokio_tungstenite::client_async_tls_with_config(request, Socket::new(tcp), Some(config), Some(connector)).await
    };
    let (mut ws, _) = match tokio::time::timeout(Duration::from_secs(30), connect).await {
        Ok(Ok(ok)) => ok,
        Ok(Err(tokio_tungstenite::tungstenite::Error::Tls(
            tokio_tungstenite::tungstenite::error::TlsError::Rustls(e),
        ))) => {
            return Err(Error::Connect(format!(
                "cannot open {}: {}",
                redact_url(url),
                tls::describe(&e)
            )));
        }
        Ok(Err(e)) => {
            let text = std::error::Error::source(&e)
                .and_then(tls::tls_failure)
                .unwrap_or_else(|| e.to_string());
            return Err(Error::Connect(format!("cannot open {}: {text}", redact_url(url))));
        }
        Err(_) => return Err(Error::DeadlinePassed("opening the data channel")),
    };
    let open = OpenDataChannel {
        message_schema_version: "1.0".into(),
        request_id: uuid::Uuid::new_v4().to_string(),
        token_value: token.expose().to_owned(),
        client_id: client_id.to_owned(),
        client_version: client_version.to_owned(),
    };
    ws.send(Message::text(open.to_json()))
        .await
        .map_err(|e| Error::Connect(format!("cannot send the open message: {e}")))?;
    Ok(ws)
}

/// The URL without its query string (which may carry parameters we do not want in logs).
fn redact_url(url: &str) -> String {
    url.split('?').next().unwrap_or(url).to_owned()
}

/// `t + d`, or the latest instant the clock can hold when that is out of its range: a limit
/// of "practically forever" from a caller must not panic. Durations are capped at 100 years so
/// that every platform's clock and the timer wheel agree on what "far" is.
pub(crate) fn saturating_add(t: Instant, d: Duration) -> Instant {
    const FAR: Duration = Duration::from_secs(100 * 365 * 24 * 3600);
    let d = d.min(FAR);
    t.checked_add(d)
        .or_else(|| t.checked_add(d / 1000))
        .or_else(|| t.checked_add(Duration::from_secs(24 * 3600)))
        .unwrap_or(t)
}

/// Messages handled in one go when more have already arrived (see [`Driver::read_ready`]).
const READ_BATCH: usize = 64;

/// A frame at least this long is a full message: the agent reads its destination (or shell)
/// 1 KiB at a time (agent/session/config: `StreamDataPayloadSize`), and the frame adds its
/// header (§3.1).
const FULL_FRAME: usize = 1024;

/// Fastest inbound stream held by [`ChannelOptions::read_coalesce`], in bytes/s. A faster one
/// fills the socket between wakes by itself; holding it would only back it up.
pub const TRICKLE_MAX_RATE: f64 = 4e6;

/// How long a trickle of full messages must have lasted before reading is held: a short reply
/// is never held.
pub const TRICKLE_AFTER: Duration = Duration::from_millis(50);

/// What the driver has read, for diagnostics and tests.
#[derive(Debug, Default)]
pub struct ReadCounters {
    /// Data channel frames read from the socket.
    pub frames: AtomicU64,
    /// Times the driver woke to read the socket and found frames.
    pub wakes: AtomicU64,
    /// Wakes after which TCP's ACK was sent at once, as nothing of ours answered the frames
    /// read (see `Socket::quick_ack`).
    pub quick_acks: AtomicU64,
}

/// Decides when reading is held for [`ChannelOptions::read_coalesce`].
#[derive(Debug, Default)]
struct Trickle {
    /// When the current run of slow wakes that read only full frames began.
    since: Option<Instant>,
    /// The previous wake that read frames.
    last: Option<Instant>,
}

impl Trickle {
    /// After a wake at `now` that read `frames` frames of `bytes` bytes in all (`all_full`: each
    /// at least [`FULL_FRAME`]): whether reads are held from here, and until when the first
    /// hold would last (the driver then keeps a steady beat, [`Cadence`]).
    fn after_wake(
        &mut self,
        now: Instant,
        frames: usize,
        bytes: usize,
        all_full: bool,
        hold: Duration,
    ) -> Option<Instant> {
        if frames == 0 {
            return None;
        }
        let last = self.last.replace(now);
        let slow =
            last.is_none_or(|l| bytes as f64 <= TRICKLE_MAX_RATE * now.saturating_duration_since(l).as_secs_f64());
        if hold.is_zero() || !all_full || !slow {
            self.since = None;
            return None;
        }
        let since = *self.since.get_or_insert(now);
        (now.saturating_duration_since(since) >= TRICKLE_AFTER).then(|| saturating_add(now, hold))
    }
}

/// The ends of holds while a trickle lasts (see [`ChannelOptions::read_coalesce`]): a tick each
/// period, from two timers that take turns, each set two periods ahead when it fires. The
/// runtime wakes its event loop afresh whenever a timer is set sooner than every other one it
/// holds (tokio's `reregister`: a write to its wake-up descriptor, and one more turn of the loop
/// before it sleeps); with the other timer always due a period sooner, setting one never is. A
/// single timer set anew after each read paid that twice per hold.
#[derive(Default)]
struct Cadence {
    timers: Option<[Pin<Box<tokio::time::Sleep>>; 2]>,
    period: Duration,
}

impl Cadence {
    fn running(&self) -> bool {
        self.timers.is_some()
    }

    /// Ticks from `now`, each `period`, unless already ticking.
    fn start(&mut self, now: Instant, period: Duration) {
        if self.timers.is_none() {
            let now = tokio::time::Instant::from_std(now);
            self.period = period;
            self.timers = Some([
                Box::pin(tokio::time::sleep_until(now + period)),
                Box::pin(tokio::time::sleep_until(now + 2 * period)),
            ]);
        }
    }

    fn stop(&mut self) {
        self.timers = None;
    }

    /// The next tick (never, when not ticking).
    async fn tick(&mut self) {
        let Some([a, b]) = self.timers.as_mut() else {
            return std::future::pending().await;
        };
        let next = if a.deadline() <= b.deadline() { a } else { b };
        next.as_mut().await;
        let now = tokio::time::Instant::now();
        let due = (next.deadline() + 2 * self.period).max(now + self.period / 2);
        next.as_mut().reset(due);
    }
}

enum Step {
    Message(Option<Result<Message, tokio_tungstenite::tungstenite::Error>>),
    DataKey(std::result::Result<Result<DataKey>, tokio::task::JoinError>),
    Command(Option<Command>),
    Delivered,
    Timer,
    /// A hold is over ([`Cadence`]).
    Tick,
}

enum StartState {
    Waiting(Option<oneshot::Sender<Result<SessionStart>>>),
    Handshaking(Option<oneshot::Sender<Result<SessionStart>>>, ClientHandshake),
    Started,
}

struct Driver {
    session_id: String,
    /// The instance, for the KMS encryption context (§5.6).
    target_id: String,
    /// The session's keys once KMS encryption is agreed (§5.6).
    cipher: Option<SessionCipher>,
    /// The KMS data key being made for the handshake's `KMSEncryption` action.
    data_key: Option<JoinHandle<Result<DataKey>>>,
    stream_url: String,
    /// What the stream URL's certificate is checked against, the API client's (§2.1).
    trust: Trust,
    client_id: String,
    control: SharedControl,
    ending: Arc<Ending>,
    opts: ChannelOptions,
    channel: Channel,
    ws: Option<Ws>,
    start: StartState,
    start_deadline: Instant,
    inbound: VecDeque<(PayloadType, Vec<u8>)>,
    inbound_bytes: usize,
    in_tx: mpsc::Sender<(PayloadType, Vec<u8>)>,
    cmd_rx: mpsc::Receiver<Command>,
    last_rx: Instant,
    /// The oldest unacked message's first send time as last seen, and since when it has
    /// stayed so while we were reading (for [`ChannelOptions::unacked_limit`]).
    ack_wait: (Option<Instant>, Instant),
    next_ping: Instant,
    finishing: Option<(Instant, bool)>,
    closed: Option<String>,
    /// When the connection was first lost, until a frame arrives on a new one: a reopened
    /// socket that the service closes again at once does not restart the clock.
    lost_since: Option<Instant>,
    /// While a trickle lasts, the socket is read once per tick ([`ChannelOptions::read_coalesce`]).
    cadence: Cadence,
    /// The last tick's read has not yet ended a message: then the next tick ends the hold
    /// ([`Step::Tick`]).
    tick_read: bool,
    trickle: Trickle,
    /// Frames, bytes and whether all were full, read since the current wake began.
    this_wake: (usize, usize, bool),
    /// Messages went to the session kind since the last flush: it writes them out before the
    /// acks for them are written, so that a reply's bytes never wait behind our ack's write.
    handed_over: bool,
    /// The loop's one timer, due at [`Driver::next_wake`]. It lives across turns and is set
    /// only when that changes: a timer made afresh each turn was one the runtime no longer
    /// held, and so was "sooner than every other" (see [`Cadence`]) after each of its sleeps.
    wake: Pin<Box<tokio::time::Sleep>>,
    counters: Arc<ReadCounters>,
}

impl Driver {
    fn started(&self) -> bool {
        matches!(self.start, StartState::Started)
    }

    fn fail_start(&mut self, e: Error) -> Error {
        if let Some(tx) = self.take_start() {
            // KMS failures keep their kind: each has its own error id for the caller.
            let told = match &e {
                Error::Kms(k) => Error::Kms(k.clone()),
                other => Error::Connect(other.to_string()),
            };
            let _ = tx.send(Err(told));
        }
        e
    }

    /// Whether the socket is read: not while the session kind has `inbound_high_water` bytes
    /// waiting. Then TCP pushes back on the agent, which blocks in its socket write and stops
    /// reading the destination (agent/session/datachannel/datachannel.go SendMessage writes
    /// synchronously), as with the official client; reading on and refusing would make the agent,
    /// which keeps no send window, retransmit each refused message at one per 100 ms (§4.5).
    fn reading(&self) -> bool {
        self.inbound_bytes < self.opts.inbound_high_water
    }

    fn take_start(&mut self) -> Option<oneshot::Sender<Result<SessionStart>>> {
        match &mut self.start {
            StartState::Waiting(tx) | StartState::Handshaking(tx, _) => tx.take(),
            StartState::Started => None,
        }
    }

    /// Dials the data channel (§2.2); a failure fails the start with the dial's own error.
    async fn dial_first(&mut self, token: &Token) -> Result<()> {
        match dial(
            &self.stream_url,
            &self.trust,
            token,
            &self.client_id,
            &self.opts.client_version,
        )
        .await
        {
            Ok(ws) => {
                let now = Instant::now();
                self.ws = Some(ws);
                self.last_rx = now;
                self.next_ping = now;
                self.start_deadline = saturating_add(now, self.opts.start_timeout);
                Ok(())
            }
            Err(e) => {
                let text = e.to_string();
                if let Some(tx) = self.take_start() {
                    let _ = tx.send(Err(e));
                }
                Err(Error::Connect(text))
            }
        }
    }

    /// The one way out of a session: whatever ended it, it is ended at the service too (unless
    /// the service said that it is over, or the caller asked to leave it), and what arrived
    /// and was acked is handed to the session kind, for the agent never sends it again.
    async fn run(mut self, token: Token) -> Result<End> {
        let result = match self.dial_first(&token).await {
            Ok(()) => self.run_inner().await,
            Err(e) => Err(e),
        };
        if let Err(e) = &result {
            tracing::debug!(session = %self.session_id, "data channel ended: {e}");
            // Whatever was queued last (e.g. a refusing HandshakeResponse) still goes out.
            self.flush().await;
        }
        if !matches!(self.finishing, Some((_, false))) {
            self.ending.terminate().await;
        }
        if let Some(mut ws) = self.ws.take() {
            let _ = tokio::time::timeout(Duration::from_secs(2), ws.close(None)).await;
        }
        self.deliver_rest().await;
        result
    }

    /// Hands what is still held to the session kind, until the finishing deadline (or
    /// `drain_timeout` from now, when not finishing). A session kind that stopped listening
    /// gets nothing more.
    async fn deliver_rest(&mut self) {
        let deadline = match self.finishing {
            Some((deadline, _)) => deadline,
            None => saturating_add(Instant::now(), self.opts.drain_timeout),
        };
        let deadline = tokio::time::Instant::from_std(deadline);
        while let Some(item) = self.inbound.pop_front() {
            match tokio::time::timeout_at(deadline, self.in_tx.reserve()).await {
                Ok(Ok(permit)) => permit.send(item),
                Ok(Err(_)) => break,
                Err(_) => {
                    tracing::debug!(
                        session = %self.session_id,
                        "{} message(s) not delivered by the deadline",
                        self.inbound.len() + 1
                    );
                    break;
                }
            }
        }
        self.inbound.clear();
        self.inbound_bytes = 0;
    }

    async fn run_inner(&mut self) -> Result<End> {
        loop {
            if std::mem::take(&mut self.handed_over) {
                // The session kind's turn first (its write is the latency a user sees); the
                // acks follow in the same wake.
                tokio::task::yield_now().await;
            }
            self.flush().await;
            if self.ws.is_none() {
                if let Some(end) = self.reconnect().await? {
                    return Ok(end);
                }
                continue;
            }
            if let Some(reason) = &self.closed
                && self.inbound.is_empty()
            {
                return Ok(End::Closed(reason.clone()));
            }
            // Finished once ours is acked and theirs delivered (or at the deadline); `run`
            // ends the session at the service.
            if let Some((deadline, _)) = self.finishing
                && ((self.channel.unacked() == 0 && self.inbound.is_empty()) || Instant::now() >= deadline)
            {
                return Ok(End::Finished);
            }
            let reading = self.reading();
            let now = Instant::now();
            if !reading {
                // Silence we cause is no sign of a dead link, nor of an agent that does not ack.
                self.last_rx = now;
                self.ack_wait.1 = now;
            }
            let oldest = self.channel.oldest_unacked_since();
            if oldest != self.ack_wait.0 {
                self.ack_wait = (oldest, now);
            }
            let wake = tokio::time::Instant::from_std(self.next_wake());
            if self.wake.deadline() != wake {
                self.wake.as_mut().reset(wake);
            }
            let can_send = self.started() && self.channel.can_send() && self.finishing.is_none();
            if self.finishing.is_some() && self.cadence.running() {
                // Finishing reads at once: lowering the mark makes what waits readable.
                self.hold_reads(now, false);
            }
            let Some(ws) = self.ws.as_mut() else { continue };
            let held = self.cadence.running() && !self.tick_read;
            let making_key = self.data_key.is_some();
            let step = tokio::select! {
                msg = ws.next(), if reading && !held => Step::Message(msg),
                key = async {
                    match self.data_key.as_mut() {
                        Some(task) => task.await,
                        None => std::future::pending().await,
                    }
                }, if making_key => Step::DataKey(key),
                cmd = self.cmd_rx.recv(), if can_send => Step::Command(cmd),
                // Room (or a closed queue) for what is held: `deliver_ready` hands it over.
                permit = self.in_tx.reserve(), if !self.inbound.is_empty() => {
                    drop(permit);
                    Step::Delivered
                }
                () = self.wake.as_mut() => Step::Timer,
                // Also after a read that ended no message: the next tick ends the hold.
                () = self.cadence.tick(), if self.cadence.running() => Step::Tick,
            };
            match step {
                Step::Message(msg) => {
                    self.this_wake = (0, 0, true);
                    self.on_message(msg)?;
                    self.read_ready()?;
                    self.deliver_ready();
                    let (frames, bytes, all_full) = self.this_wake;
                    if frames > 0 {
                        self.counters.wakes.fetch_add(1, Ordering::Relaxed);
                        self.counters.frames.fetch_add(frames as u64, Ordering::Relaxed);
                        // Nothing of ours to write in reply (the agent's acks of our input,
                        // typically): TCP's ACK goes now, or the agent's next small write (a
                        // keystroke's echo) waits for it behind Nagle's algorithm.
                        if self.channel.pending_transmit() == 0
                            && let Some(sock) = self.ws.as_mut().and_then(socket)
                        {
                            sock.quick_ack();
                            self.counters.quick_acks.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    let now = Instant::now();
                    let trickle = self
                        .trickle
                        .after_wake(now, frames, bytes, all_full, self.opts.read_coalesce)
                        .is_some()
                        && self.finishing.is_none();
                    if frames > 0 {
                        self.tick_read = false;
                    }
                    // The mark stays up while the trickle lasts; the end of each hold reads
                    // below it (`Step::Tick`).
                    self.hold_reads(now, trickle);
                }
                Step::DataKey(key) => {
                    self.data_key = None;
                    let key =
                        key.unwrap_or_else(|e| Err(Error::Connect(format!("making the KMS data key failed: {e}"))));
                    self.on_data_key(key)?;
                }
                Step::Command(Some(Command::Send(t, data))) => self.send(t, data),
                Step::Command(Some(Command::Finish { terminate, last })) => {
                    if let Some((t, data)) = last {
                        self.send(t, data);
                    }
                    self.finishing = Some((saturating_add(Instant::now(), self.opts.drain_timeout), terminate));
                }
                // Every sender is gone: nobody will send or finish; end the session.
                Step::Command(None) => {
                    self.finishing = Some((saturating_add(Instant::now(), self.opts.drain_timeout), true))
                }
                Step::Delivered => self.deliver_ready(),
                Step::Timer => self.on_timer()?,
                Step::Tick => {
                    if self.tick_read {
                        // A whole period since the last tick's read and still no message: the
                        // trickle has paused, or that read took only the start of a message,
                        // whose rest arrives below the mark and would wake nothing. The hold
                        // ends; lowering the mark makes what waits readable at once (Linux),
                        // and the next message starts a new one.
                        self.hold_reads(Instant::now(), false);
                    } else {
                        self.tick_read = true;
                        if let Some(sock) = self.ws.as_mut().and_then(socket) {
                            sock.read_now();
                        }
                    }
                }
            }
        }
    }

    /// One message of the session kind's into the channel, sealed when KMS encryption is on.
    fn send(&mut self, t: PayloadType, data: Vec<u8>) {
        let data = match &self.cipher {
            Some(cipher) if is_encrypted(Side::Client, t) => cipher.seal(rand::random(), &data),
            _ => data,
        };
        let _ = self.channel.send(Instant::now(), t, data);
    }

    /// Handles the messages that have already arrived (up to [`READ_BATCH`]) without waiting,
    /// so that the next flush writes all their acks at once instead of one write per message.
    fn read_ready(&mut self) -> Result<()> {
        for _ in 1..READ_BATCH {
            // Finishing, one message at a time: the loop must see the last ack before whatever
            // follows it (the agent's `channel_closed` would otherwise spare the
            // `TerminateSession` the finish asked for).
            if !self.reading() || self.finishing.is_some() || self.closed.is_some() {
                break;
            }
            let Some(ws) = self.ws.as_mut() else { break };
            match futures_util::FutureExt::now_or_never(ws.next()) {
                Some(msg) => self.on_message(msg)?,
                None => break,
            }
        }
        Ok(())
    }

    /// Hands the session kind what it has room for now, without a trip round the loop each.
    fn deliver_ready(&mut self) {
        while !self.inbound.is_empty() {
            match self.in_tx.try_reserve() {
                Ok(permit) => {
                    if let Some((t, data)) = self.inbound.pop_front() {
                        self.inbound_bytes -= data.len();
                        permit.send((t, data));
                        self.handed_over = true;
                    }
                }
                Err(mpsc::error::TrySendError::Full(())) => break,
                // The session kind stopped listening; drop what it will never read.
                Err(mpsc::error::TrySendError::Closed(())) => {
                    self.inbound.clear();
                    self.inbound_bytes = 0;
                }
            }
        }
    }

    /// Starts holding reads (a tick each `read_coalesce`, the socket's mark up) or ends the
    /// holds (no ticks, the mark down, so that what waits is readable at once).
    fn hold_reads(&mut self, now: Instant, held: bool) {
        if held {
            self.cadence.start(now, self.opts.read_coalesce);
        } else {
            self.cadence.stop();
        }
        if let Some(sock) = self.ws.as_mut().and_then(socket) {
            sock.hold(held);
        }
    }

    fn next_wake(&mut self) -> Instant {
        let mut wake = self.next_ping.min(saturating_add(self.last_rx, self.opts.dead_after));
        if self.ack_wait.0.is_some() {
            wake = wake.min(saturating_add(self.ack_wait.1, self.opts.unacked_limit));
        }
        if let Some(t) = self.channel.poll_timeout() {
            wake = wake.min(t);
        }
        if !self.started() {
            wake = wake.min(self.start_deadline);
        }
        if let Some((deadline, _)) = self.finishing {
            wake = wake.min(deadline);
        }
        wake
    }

    fn on_timer(&mut self) -> Result<()> {
        let now = Instant::now();
        self.channel.handle_timeout(now);
        if !self.started() && now >= self.start_deadline {
            return Err(self.fail_start(Error::DeadlinePassed("waiting for the session to start")));
        }
        if self.ack_wait.0.is_some() && now >= saturating_add(self.ack_wait.1, self.opts.unacked_limit) {
            return Err(Error::Connect(format!(
                "the agent has not acknowledged our data for {:?}; giving up",
                self.opts.unacked_limit
            )));
        }
        if self.reading() && now >= saturating_add(self.last_rx, self.opts.dead_after) {
            tracing::info!(session = %self.session_id, "no traffic for {:?}; reconnecting", self.opts.dead_after);
            self.ws = None;
            return Ok(());
        }
        if now >= self.next_ping {
            self.next_ping = saturating_add(now, self.opts.ping_interval);
            if let Some(ws) = self.ws.as_mut() {
                // Queued now, written by the next flush.
                let _ = futures_util::FutureExt::now_or_never(ws.feed(Message::Ping(b"keepalive".to_vec().into())));
            }
        }
        Ok(())
    }

    fn on_message(&mut self, msg: Option<Result<Message, tokio_tungstenite::tungstenite::Error>>) -> Result<()> {
        let bytes = match msg {
            Some(Ok(Message::Binary(b))) => b,
            Some(Ok(Message::Text(t))) => t.as_bytes().to_vec().into(),
            Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_))) => {
                self.last_rx = Instant::now();
                return Ok(());
            }
            Some(Ok(Message::Close(_))) | Some(Err(_)) | None => {
                tracing::debug!(session = %self.session_id, "WebSocket lost");
                self.ws = None;
                return Ok(());
            }
        };
        let now = Instant::now();
        self.last_rx = now;
        let (frames, total, all_full) = self.this_wake;
        self.this_wake = (frames + 1, total + bytes.len(), all_full && bytes.len() >= FULL_FRAME);
        match self.channel.handle_frame(now, &bytes) {
            Ok(()) => self.lost_since = None,
            Err(e) => tracing::debug!(session = %self.session_id, "dropped frame: {e}"),
        }
        while let Some(ev) = self.channel.poll_event() {
            self.on_event(now, ev)?;
        }
        Ok(())
    }

    fn on_event(&mut self, now: Instant, ev: Event) -> Result<()> {
        match ev {
            Event::Stream {
                payload_type, payload, ..
            } => match payload_type {
                PayloadType::HandshakeRequest => {
                    if self.started() {
                        // The session is running: answering would restart nothing the agent
                        // needs, and resetting our state would kill a live session.
                        tracing::debug!(session = %self.session_id, "ignored a HandshakeRequest after the session started");
                        return Ok(());
                    }
                    let hs = ClientHandshake::process(&payload).map_err(|e| self.fail_start(Error::Handshake(e)))?;
                    match (&hs.error, &hs.kms) {
                        (Some(e), _) => {
                            let e = e.clone();
                            let response = hs.response(&self.opts.client_version, None);
                            let _ = self.channel.send(now, PayloadType::HandshakeResponse, response);
                            self.finishing = Some((saturating_add(now, self.opts.drain_timeout), true));
                            return Err(self.fail_start(Error::Handshake(e)));
                        }
                        // §5.6: the response waits for the data key, made on a task of its own
                        // while the driver goes on acking and keeping the link alive.
                        (None, Some(kms)) => {
                            let request = DataKeyRequest {
                                key_id: kms.key_id.clone(),
                                session_id: self.session_id.clone(),
                                target_id: self.target_id.clone(),
                                challenge: kms.challenge.clone(),
                            };
                            let control = self.control.clone();
                            self.cipher = None;
                            if let Some(old) = self
                                .data_key
                                .replace(tokio::spawn(async move { control.data_key(request).await }))
                            {
                                old.abort();
                            }
                        }
                        (None, None) => {
                            let response = hs.response(&self.opts.client_version, None);
                            let _ = self.channel.send(now, PayloadType::HandshakeResponse, response);
                        }
                    }
                    // A repeated request before the completion replaces the first one; whoever
                    // waits for the start keeps waiting, under the same deadline.
                    let tx = match &mut self.start {
                        StartState::Waiting(tx) | StartState::Handshaking(tx, _) => tx.take(),
                        StartState::Started => None,
                    };
                    self.start = StartState::Handshaking(tx, hs);
                }
                PayloadType::HandshakeComplete => {
                    let complete = HandshakeComplete::parse(&payload).unwrap_or(HandshakeComplete {
                        handshake_time_to_complete: 0,
                        customer_message: String::new(),
                    });
                    match std::mem::replace(&mut self.start, StartState::Started) {
                        StartState::Handshaking(tx, hs) => {
                            if hs.kms.is_some() && self.cipher.is_none() {
                                self.start = StartState::Handshaking(tx, hs);
                                return Err(self.fail_start(Error::Kms(KmsError::OutOfOrder("HandshakeComplete"))));
                            }
                            let Some(session_type) = hs.session_type else {
                                self.start = StartState::Handshaking(tx, hs);
                                return Err(self.fail_start(Error::Handshake(ssm_proto::HandshakeError::NoSessionType)));
                            };
                            let start = SessionStart {
                                session_id: self.session_id.clone(),
                                port: PortStart::from_handshake(&session_type, &hs.properties, &hs.agent_version),
                                session_type,
                                agent_version: hs.agent_version,
                                customer_message: complete.customer_message,
                            };
                            if let Some(tx) = tx {
                                let _ = tx.send(Ok(start));
                            }
                        }
                        StartState::Waiting(tx) => {
                            // Out of order (§5): nothing was negotiated, so nothing can start.
                            self.start = StartState::Waiting(tx);
                            return Err(self.fail_start(Error::Handshake(ssm_proto::HandshakeError::Failed(
                                "the agent sent HandshakeComplete before any HandshakeRequest".to_owned(),
                            ))));
                        }
                        StartState::Started => {
                            tracing::debug!(session = %self.session_id, "ignored a HandshakeComplete after the session started");
                        }
                    }
                }
                PayloadType::EncChallengeRequest => {
                    if self.started() {
                        tracing::debug!(session = %self.session_id, "ignored an encryption challenge after the session started");
                        return Ok(());
                    }
                    self.answer_challenge(now, &payload)?;
                }
                _ => {
                    let payload = match &self.cipher {
                        Some(cipher) if is_encrypted(Side::Agent, payload_type) => match cipher.open(&payload) {
                            Ok(plain) => plain,
                            Err(e) => {
                                tracing::debug!(session = %self.session_id, "{payload_type:?} from the agent: {e}");
                                return Err(self.fail_start(Error::Kms(KmsError::Tampered)));
                            }
                        },
                        _ => payload,
                    };
                    if let StartState::Waiting(tx) = &mut self.start {
                        // §5.1: no handshake; the first output means a shell.
                        let start = SessionStart {
                            session_id: self.session_id.clone(),
                            session_type: SessionType::StandardStream,
                            port: None,
                            agent_version: String::new(),
                            customer_message: String::new(),
                        };
                        if let Some(tx) = tx.take() {
                            let _ = tx.send(Ok(start));
                        }
                        self.start = StartState::Started;
                    }
                    self.inbound_bytes += payload.len();
                    self.inbound.push_back((payload_type, payload));
                }
            },
            Event::ChannelClosed(c) => {
                self.ending.service_ended();
                if !self.started() {
                    let reason = if c.output.is_empty() {
                        "the session was closed".to_owned()
                    } else {
                        c.output.clone()
                    };
                    return Err(self.fail_start(Error::Closed {
                        session_id: self.session_id.clone(),
                        reason,
                    }));
                }
                self.closed = Some(c.output);
            }
            Event::Paused => tracing::debug!(session = %self.session_id, "publication paused"),
            Event::Resumed => tracing::debug!(session = %self.session_id, "publication resumed"),
            Event::Ignored(t) => tracing::trace!(session = %self.session_id, "ignored {t}"),
        }
        Ok(())
    }

    /// The data key for the handshake's `KMSEncryption` action is made (or not): the
    /// HandshakeResponse goes out with it, or with the failure, which ends the session (§5.6).
    fn on_data_key(&mut self, key: Result<DataKey>) -> Result<()> {
        let now = Instant::now();
        let StartState::Handshaking(_, hs) = &self.start else {
            return Ok(());
        };
        let acknowledged = hs.kms.as_ref().is_some_and(|k| k.challenge.is_some());
        let cipher = key.and_then(|key| {
            let cipher = SessionCipher::new(Side::Client, &key.plaintext).map_err(|e| Error::Api {
                operation: "GenerateDataKey",
                code: None,
                message: e.to_string(),
            })?;
            Ok((cipher, key.ciphertext))
        });
        match cipher {
            Ok((cipher, ciphertext)) => {
                let answer = KmsAnswer::Key {
                    ciphertext,
                    challenge_acknowledged: acknowledged,
                };
                let response = hs.response(&self.opts.client_version, Some(&answer));
                self.cipher = Some(cipher);
                let _ = self.channel.send(now, PayloadType::HandshakeResponse, response);
                Ok(())
            }
            Err(e) => {
                let answer = KmsAnswer::Failed(format!("Failed to process action KMSEncryption: {e}"));
                let response = hs.response(&self.opts.client_version, Some(&answer));
                let _ = self.channel.send(now, PayloadType::HandshakeResponse, response);
                self.finishing = Some((saturating_add(now, self.opts.drain_timeout), true));
                Err(self.fail_start(e))
            }
        }
    }

    /// The agent's encryption challenge (§5.6): opened with the agent→client key, sealed again
    /// with the client→agent key and sent back. A challenge that does not open means the two
    /// ends do not share the key: the session ends.
    fn answer_challenge(&mut self, now: Instant, payload: &[u8]) -> Result<()> {
        let request = EncChallenge::parse(payload).map_err(|e| self.fail_start(Error::Handshake(e.into())))?;
        let Some(cipher) = &self.cipher else {
            return Err(self.fail_start(Error::Kms(KmsError::OutOfOrder("an encryption challenge"))));
        };
        let Ok(plain) = cipher.open_secret(&request.challenge) else {
            return Err(self.fail_start(Error::Kms(KmsError::ChallengeMismatch)));
        };
        let answer = EncChallenge {
            challenge: cipher.seal(rand::random(), &plain),
        };
        let _ = self
            .channel
            .send(now, PayloadType::EncChallengeResponse, answer.to_json());
        Ok(())
    }

    /// Writes what the channel wants sent. Without a socket the frames are dropped here; they
    /// stay unacked in the channel and are resent after the reconnect. A write that takes
    /// longer than `write_timeout` (a link that has stopped taking data without closing)
    /// drops the socket, which leads to ResumeSession.
    async fn flush(&mut self) {
        let Some(ws) = self.ws.as_mut() else {
            while self.channel.poll_transmit().is_some() {}
            return;
        };
        // The deadline is on each step, not on the whole batch: a slow peer that keeps taking
        // data is alive; one that takes nothing for `write_timeout` is not.
        let limit = self.opts.write_timeout;
        let mut outcome: std::result::Result<std::result::Result<(), _>, tokio::time::error::Elapsed> = Ok(Ok(()));
        while let Some(frame) = self.channel.poll_transmit() {
            outcome = tokio::time::timeout(limit, ws.feed(Message::binary(frame))).await;
            if !matches!(outcome, Ok(Ok(()))) {
                break;
            }
        }
        if matches!(outcome, Ok(Ok(()))) {
            outcome = tokio::time::timeout(limit, ws.flush()).await;
        }
        match outcome {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                tracing::debug!(session = %self.session_id, "WebSocket write failed: {e}");
                self.ws = None;
            }
            Err(_) => {
                tracing::info!(session = %self.session_id, "the socket took nothing for {limit:?}; reconnecting");
                self.ws = None;
            }
        }
    }

    /// §8.2 with a bounded, backed-off retry: ResumeSession for a fresh token, reopen the same
    /// StreamUrl, resend everything unacked. `Ok(Some(end))` when the service says it is over.
    async fn reconnect(&mut self) -> Result<Option<End>> {
        if let Some(reason) = &self.closed {
            return Ok(Some(End::Closed(reason.clone())));
        }
        if self.finishing.is_some() && self.channel.unacked() == 0 {
            return Ok(Some(End::Finished));
        }
        // A limit too far ahead for the clock to represent means "never give up".
        let give_up = self
            .lost_since
            .get_or_insert_with(Instant::now)
            .checked_add(self.opts.reconnect_for);
        let mut attempt: u32 = 0;
        loop {
            if give_up.is_some_and(|t| Instant::now() >= t) {
                return Err(Error::Connect(format!(
                    "the connection was lost and could not be restored within {:?}",
                    self.opts.reconnect_for
                )));
            }
            // The first attempt goes at once: the agent is not told that we left and goes on
            // sending into the void, and it recovers each lost message only at one per 100 ms
            // (its ResendStreamDataMessageScheduler), so each millisecond away costs a tick.
            // Later attempts back off.
            if attempt > 0 {
                let delay = Duration::from_millis(100u64 << (attempt - 1).min(6)).min(Duration::from_secs(5));
                let jitter = Duration::from_millis(rand::random::<u64>() % 100);
                tokio::time::sleep(delay + jitter).await;
            }
            attempt += 1;
            match self.control.resume(&self.session_id).await {
                Ok(Some(token)) => {
                    match dial(
                        &self.stream_url,
                        &self.trust,
                        &token,
                        &self.client_id,
                        &self.opts.client_version,
                    )
                    .await
                    {
                        Ok(ws) => {
                            tracing::info!(session = %self.session_id, "reconnected after {attempt} attempt(s)");
                            self.ws = Some(ws);
                            // A new socket starts unheld: its first messages are read at once.
                            self.cadence.stop();
                            let now = Instant::now();
                            self.last_rx = now;
                            self.ack_wait.1 = now;
                            self.channel.reset_transport(now);
                            return Ok(None);
                        }
                        Err(e) => tracing::debug!(session = %self.session_id, "reconnect: {e}"),
                    }
                }
                // We were ending the session and the service says it has ended: that is the
                // end we asked for, even though the socket went before `channel_closed` arrived.
                Ok(None) if self.finishing.is_some() => {
                    self.ending.service_ended();
                    return Ok(Some(End::Finished));
                }
                Err(e) if self.finishing.is_some() && e.api_code() == Some("DoesNotExistException") => {
                    tracing::debug!(session = %self.session_id, "ended while finishing: {e}");
                    self.ending.service_ended();
                    return Ok(Some(End::Finished));
                }
                Ok(None) => {
                    self.ending.service_ended();
                    return Err(Error::SessionExpired(self.session_id.clone()));
                }
                Err(e) if e.api_code() == Some("DoesNotExistException") => {
                    self.ending.service_ended();
                    return Err(Error::Closed {
                        session_id: self.session_id.clone(),
                        reason: e.to_string(),
                    });
                }
                Err(e) => tracing::debug!(session = %self.session_id, "ResumeSession: {e}"),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOLD: Duration = Duration::from_millis(8);
    const FULL: usize = 1144;

    /// Feeds `trickle` one wake per `gap` of `frames` full frames each, for `wakes` wakes from
    /// `t`; returns the time after them and what the last wake decided.
    fn feed(trickle: &mut Trickle, t: &mut Instant, gap: Duration, wakes: usize, frames: usize) -> Option<Instant> {
        let mut held = None;
        for _ in 0..wakes {
            *t += gap;
            held = trickle.after_wake(*t, frames, frames * FULL, true, HOLD);
        }
        held
    }

    /// The paced agent's trickle (one full message each millisecond) is held once it has lasted
    /// [`TRICKLE_AFTER`], and not before: a reply shorter than that is never delayed.
    #[test]
    fn a_lasting_trickle_of_full_messages_is_held() {
        let mut trickle = Trickle::default();
        let mut t = Instant::now();
        let first = feed(&mut trickle, &mut t, Duration::from_millis(1), 1, 1);
        assert_eq!(first, None, "the first message is not held");
        let early = feed(&mut trickle, &mut t, Duration::from_millis(1), 40, 1);
        assert_eq!(early, None, "held after 41 ms of trickle");
        let later = feed(&mut trickle, &mut t, Duration::from_millis(1), 10, 1);
        assert_eq!(later, Some(t + HOLD));
        // Held, the next wake finds the messages of the hold at once: still a trickle.
        let next = feed(&mut trickle, &mut t, HOLD, 1, 8);
        assert_eq!(next, Some(t + HOLD));
    }

    /// Anything but full frames (a keystroke, an ack, the last part of a reply) ends the
    /// trickle and is never held, nor is what follows it until a new trickle has lasted.
    #[test]
    fn a_short_frame_ends_the_trickle() {
        let mut trickle = Trickle::default();
        let mut t = Instant::now();
        assert!(feed(&mut trickle, &mut t, Duration::from_millis(1), 60, 1).is_some());
        t += Duration::from_millis(1);
        assert_eq!(trickle.after_wake(t, 2, FULL + 120, false, HOLD), None);
        assert_eq!(feed(&mut trickle, &mut t, Duration::from_millis(1), 10, 1), None);
    }

    /// A stream faster than [`TRICKLE_MAX_RATE`] is never held (the socket batches it anyway),
    /// and a zero `read_coalesce` holds nothing.
    #[test]
    fn fast_streams_and_a_zero_hold_are_not_held() {
        let mut trickle = Trickle::default();
        let mut t = Instant::now();
        // 64 full frames each 2 ms: 37 MB/s.
        assert_eq!(feed(&mut trickle, &mut t, Duration::from_millis(2), 100, 64), None);
        let mut off = Trickle::default();
        for _ in 0..100 {
            t += Duration::from_millis(1);
            assert_eq!(off.after_wake(t, 1, FULL, true, Duration::ZERO), None);
        }
        // A wake that read nothing (a pong) decides nothing.
        assert_eq!(trickle.after_wake(t, 0, 0, true, HOLD), None);
    }

    /// The data channel's socket has `TCP_NODELAY`, as Go sets on every TCP connection: a small
    /// frame (a keystroke, an ack) must not wait behind Nagle for the peer's delayed ACK.
    #[tokio::test]
    async fn dialled_websocket_has_nodelay() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(async move {
            let (tcp, _) = listener.accept().await.unwrap();
            let mut ws = tokio_tungstenite::accept_async(tcp).await.unwrap();
            // The open frame; then hold the socket until the client is done.
            let _ = ws.next().await;
            let _ = ws.next().await;
        });
        let url = format!("ws://{addr}/v1/data-channel/s-1?role=publish_subscribe");
        let ws = tokio::time::timeout(
            Duration::from_secs(30),
            dial(&url, &Trust::default(), &Token::new("t"), "c", "1.0"),
        )
        .await
        .expect("dialled in time")
        .expect("dialled");
        let tcp = match ws.get_ref() {
            MaybeTlsStream::Plain(sock) => sock.tcp(),
            _ => panic!("a ws:// URL gives a plain stream"),
        };
        assert!(tcp.nodelay().unwrap(), "the WebSocket's socket has Nagle on");
        drop(ws);
        server.await.unwrap();
    }

    #[test]
    fn saturating_add_never_panics_and_keeps_order() {
        let now = Instant::now();
        assert_eq!(
            saturating_add(now, Duration::from_secs(5)),
            now + Duration::from_secs(5)
        );
        for d in [
            Duration::MAX,
            Duration::from_secs(u64::MAX / 2),
            Duration::new(u64::MAX, 999_999_999),
        ] {
            let far = saturating_add(now, d);
            assert!(
                far >= now + Duration::from_secs(50 * 365 * 24 * 3600),
                "{d:?} → only {:?}",
                far - now
            );
            // Later still works from there (the driver compares such deadlines with now).
            let _ = saturating_add(far, d);
        }
    }
}
