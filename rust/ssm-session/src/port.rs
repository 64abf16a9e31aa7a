//! Port forwarding (§7): a local TCP listener whose connections reach a port on the target, or
//! a host behind it, in basic or smux mode as the agent version dictates (§7.1).

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use ssm_proto::smux::{Keepalive, Mux, MuxEvent, Side};
use ssm_proto::{PayloadType, PortFlag, PortMode};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

use crate::aws::{SharedControl, SsmApi, StartedSession};
use crate::driver::{ChannelOptions, DataChannel, DataSender, End};
use crate::error::{Error, Result};

/// What to forward.
#[derive(Debug, Clone)]
pub struct ForwardOptions {
    /// Instance or managed node id.
    pub target: String,
    /// Port on the target (or on `remote_host`).
    pub remote_port: u16,
    /// Host reached through the target (`AWS-StartPortForwardingSessionToRemoteHost`).
    pub remote_host: Option<String>,
    /// Where to listen; port 0 picks a free one.
    pub local_addr: SocketAddr,
    /// Largest payload per data-channel message (1024 like the official client, §9 item 1).
    pub payload_size: usize,
    /// Data-channel tunables.
    pub channel: ChannelOptions,
    /// smux-mode tunables.
    pub mux: MuxOptions,
    /// One session per local connection instead of one session for all
    /// ([`crate::per_connection`]); `None`: one session.
    pub per_connection: Option<PerConnection>,
    /// Session document in place of the AWS-managed one `remote_host` chooses (an account's
    /// own of type Port, taking the same parameters).
    pub document: Option<String>,
    /// Dynamic forwarding: the listener is a SOCKS5 proxy ([`crate::socks`]) and each
    /// connection gets a session of its own to the host and port it asks for, as `remote_host`
    /// and `remote_port` (which are not used otherwise). Sessions are never started ahead.
    pub socks: bool,
}

/// Session-per-connection mode: each accepted local connection gets a session of its own, so
/// connections do not share one session's pace (the agent reads its destination 1 KiB per
/// millisecond, §9 item 1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PerConnection {
    /// Sessions started ahead of connections, so a new connection does not wait for a
    /// StartSession round trip.
    pub warm_sessions: usize,
}

impl Default for PerConnection {
    fn default() -> Self {
        Self {
            warm_sessions: DEFAULT_WARM_SESSIONS,
        }
    }
}

/// Warm sessions when none is asked for: one (see the issue-13 figures in the design notes of
/// [`crate::per_connection`]).
pub const DEFAULT_WARM_SESSIONS: usize = 1;

impl ForwardOptions {
    /// Defaults: 127.0.0.1, a free port, 1024-byte payloads.
    pub fn new(target: impl Into<String>, remote_port: u16) -> Self {
        Self {
            target: target.into(),
            remote_port,
            remote_host: None,
            local_addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            payload_size: ssm_proto::DEFAULT_PAYLOAD_SIZE,
            channel: ChannelOptions::default(),
            mux: MuxOptions::default(),
            per_connection: None,
            document: None,
            socks: false,
        }
    }
}

/// Tunables of smux mode (§7.4).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MuxOptions {
    /// Keepalive timing when the agent version calls for keepalive. It must match the agent's:
    /// smux's default (NOP every 10 s, 30 s dead-peer timeout) unless a test changes both.
    pub keepalive: Keepalive,
    /// Bytes one local connection may fall behind (queued from the target, not yet taken by
    /// its local reader) before its stream is reset; see [`run_mux`] for why a reset.
    pub stream_buffer: usize,
    /// Bytes all local connections together may have queued; past it, the connection furthest
    /// behind is reset.
    pub session_buffer: usize,
}

impl Default for MuxOptions {
    fn default() -> Self {
        Self {
            keepalive: Keepalive::default(),
            stream_buffer: 16 << 20,
            session_buffer: 64 << 20,
        }
    }
}

/// Live counters of a forward.
#[derive(Debug, Default)]
pub struct ForwardStats {
    /// Bytes read from local connections and sent to the target.
    pub bytes_to_target: AtomicU64,
    /// Bytes received from the target and written to local connections.
    pub bytes_from_target: AtomicU64,
    /// Connections accepted so far.
    pub connections_total: AtomicU64,
    /// Connections open now.
    pub connections_active: AtomicU64,
    /// Connections reset because their local reader fell too far behind (smux mode).
    pub connections_reset: AtomicU64,
    /// Bytes from the target dropped because the local connection they belonged to had closed
    /// or was reset before they were written to it.
    pub bytes_discarded: AtomicU64,
}

/// A running forward. Dropping it stops the listener and the session task.
pub struct PortForward {
    local_addr: SocketAddr,
    session_id: String,
    mode: PortMode,
    per_connection: bool,
    socks: bool,
    stats: Arc<ForwardStats>,
    stop_tx: watch::Sender<bool>,
    task: Option<JoinHandle<Result<End>>>,
}

impl PortForward {
    /// Binds the local port first (so a port in use fails at once and nothing is started),
    /// then starts the session and waits for its handshake.
    ///
    /// With [`ForwardOptions::per_connection`], each connection gets a session of its own
    /// instead ([`crate::per_connection`]); the warm sessions asked for are started here, and
    /// the first one must start for the forward to.
    ///
    /// With [`ForwardOptions::socks`], the listener is a SOCKS5 proxy: no session is started
    /// here, each connection's is started for the destination it asks for.
    pub async fn start(api: &SsmApi, opts: ForwardOptions) -> Result<Self> {
        let listener = bind(opts.local_addr).await?;
        if opts.socks {
            let pc = PerConnection { warm_sessions: 0 };
            return crate::per_connection::start(api.clone(), opts, pc, listener).await;
        }
        if let Some(pc) = opts.per_connection {
            return crate::per_connection::start(api.clone(), opts, pc, listener).await;
        }
        let stats = Arc::new(ForwardStats::default());
        let local_port = listener.local_addr()?.port();
        open_session(api, &opts, local_port, Source::Listener(listener), stats).await
    }

    /// A forward whose task `task` runs something other than one session (session per
    /// connection, SOCKS when `socks`).
    pub(crate) fn managed(
        local_addr: SocketAddr,
        mode: PortMode,
        stats: Arc<ForwardStats>,
        stop_tx: watch::Sender<bool>,
        task: JoinHandle<Result<End>>,
        socks: bool,
    ) -> Self {
        Self {
            local_addr,
            session_id: String::new(),
            mode,
            per_connection: true,
            socks,
            stats,
            stop_tx,
            task: Some(task),
        }
    }

    /// Runs a session someone else started (the plugin-compatible mode, §1.3) on `listener`,
    /// with the payload size, channel and smux tunables of `opts`.
    pub async fn attach(
        started: StartedSession,
        control: SharedControl,
        listener: TcpListener,
        opts: &ForwardOptions,
    ) -> Result<Self> {
        let dc = DataChannel::open(started, control, opts.channel.clone()).await?;
        Self::from_channel_with(dc, listener, opts.payload_size, opts.mux).await
    }

    /// Runs port forwarding over an open data channel whose handshake announced a `Port`
    /// session.
    pub async fn from_channel(dc: DataChannel, listener: TcpListener, payload_size: usize) -> Result<Self> {
        Self::from_channel_with(dc, listener, payload_size, MuxOptions::default()).await
    }

    /// [`PortForward::from_channel`] with smux tunables.
    pub async fn from_channel_with(
        dc: DataChannel,
        listener: TcpListener,
        payload_size: usize,
        mux: MuxOptions,
    ) -> Result<Self> {
        let local_addr = listener.local_addr()?;
        let stats = Arc::new(ForwardStats::default());
        Self::run_channel(dc, Source::Listener(listener), local_addr, payload_size, mux, stats).await
    }

    /// Runs port forwarding over `dc` for the connections `source` yields, counting in `stats`.
    pub(crate) async fn run_channel(
        dc: DataChannel,
        source: Source,
        local_addr: SocketAddr,
        payload_size: usize,
        mux: MuxOptions,
        stats: Arc<ForwardStats>,
    ) -> Result<Self> {
        let Some(mode) = dc.start.port.as_ref().map(|p| p.mode) else {
            let (sender, _, _) = dc.into_parts();
            sender.finish(true).await;
            return Err(Error::Config("the agent did not start a port session".into()));
        };
        let session_id = dc.start.session_id.clone();
        let agent_version = dc.start.agent_version.clone();
        let (stop_tx, stop_rx) = watch::channel(false);
        let listener = Acceptor::new(source);
        let task = match mode {
            PortMode::Mux { keepalive } => {
                let keepalive = keepalive.then_some(mux.keepalive);
                tokio::spawn(run_mux(
                    listener,
                    dc,
                    keepalive,
                    payload_size,
                    mux,
                    stats.clone(),
                    stop_rx,
                ))
            }
            PortMode::Basic => tokio::spawn(run_basic(
                listener,
                dc,
                payload_size,
                stats.clone(),
                stop_rx,
                agent_version,
            )),
            PortMode::Stdio => {
                let (sender, _, _) = dc.into_parts();
                sender.finish(true).await;
                return Err(Error::Config(
                    "the agent offered an SSH (stdio) session, not port forwarding".into(),
                ));
            }
        };
        tracing::info!(session = %session_id, %local_addr, ?mode, "port forward ready");
        Ok(Self {
            local_addr,
            session_id,
            mode,
            per_connection: false,
            socks: false,
            stats,
            stop_tx,
            task: Some(task),
        })
    }

    /// The address connections are accepted on.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Session id; empty in session-per-connection mode (one session per connection).
    pub fn session_id(&self) -> &str {
        &self.session_id
    }

    /// Mode agreed with the agent. In session-per-connection mode, the mode of the first warm
    /// session (each session's is the agent's choice; `Basic` when no session was started ahead).
    pub fn mode(&self) -> PortMode {
        self.mode
    }

    /// Whether each connection gets a session of its own ([`ForwardOptions::per_connection`]).
    pub fn per_connection(&self) -> bool {
        self.per_connection
    }

    /// Whether this is a SOCKS5 proxy whose connections each name their destination
    /// ([`ForwardOptions::socks`]); such a forward is also [`PortForward::per_connection`].
    pub fn socks(&self) -> bool {
        self.socks
    }

    /// Live counters.
    pub fn stats(&self) -> Arc<ForwardStats> {
        self.stats.clone()
    }

    /// Whether the session has ended.
    pub fn is_finished(&self) -> bool {
        self.task.as_ref().is_none_or(JoinHandle::is_finished)
    }

    /// Waits until the session ends by itself (or [`PortForward::stop`] from elsewhere).
    /// Cancel-safe: dropping this future (e.g. a losing `select!` arm) keeps the task, so a
    /// later `wait` still waits for the end (TerminateSession included).
    pub async fn wait(&mut self) -> Result<End> {
        let Some(t) = self.task.as_mut() else {
            return Ok(End::Finished);
        };
        let result = t.await;
        self.task = None;
        result.map_err(|e| Error::Connect(format!("forward task failed: {e}")))?
    }

    /// A handle that can stop this forward from another task.
    pub fn stopper(&self) -> watch::Sender<bool> {
        self.stop_tx.clone()
    }

    /// Stops listening, closes connections, ends the session (TerminateSession flag and API).
    pub async fn stop(mut self) -> Result<End> {
        let _ = self.stop_tx.send(true);
        self.wait().await
    }
}

impl Drop for PortForward {
    fn drop(&mut self) {
        let _ = self.stop_tx.send(true);
    }
}

/// The document and parameters of a port session (§1.2): the same for a forward's one session
/// and for each session of a session-per-connection forward.
fn port_document(opts: &ForwardOptions, local_port: u16) -> (&str, HashMap<String, Vec<String>>) {
    let mut params = HashMap::new();
    params.insert("portNumber".to_owned(), vec![opts.remote_port.to_string()]);
    params.insert("localPortNumber".to_owned(), vec![local_port.to_string()]);
    let document = match &opts.remote_host {
        Some(h) => {
            params.insert("host".to_owned(), vec![h.clone()]);
            "AWS-StartPortForwardingSessionToRemoteHost"
        }
        None => "AWS-StartPortForwardingSession",
    };
    (opts.document.as_deref().unwrap_or(document), params)
}

/// Opens one port session (StartSession, waiting out throttling; data channel; handshake) and
/// runs it for the connections `source` yields. The only place a forward's sessions are opened.
pub(crate) async fn open_session(
    api: &SsmApi,
    opts: &ForwardOptions,
    local_port: u16,
    source: Source,
    stats: Arc<ForwardStats>,
) -> Result<PortForward> {
    let (document, params) = port_document(opts, local_port);
    let started = start_session_patiently(api, &opts.target, document, &params).await?;
    let control: SharedControl = Arc::new(api.clone());
    let local_addr = source.local_addr()?;
    let dc = DataChannel::open(started, control, opts.channel.clone()).await?;
    PortForward::run_channel(dc, source, local_addr, opts.payload_size, opts.mux, stats).await
}

/// Error codes AWS answers a caller over its request rate with: the throttling codes the SDK's
/// standard retry classifies as such (aws-smithy-runtime `THROTTLING_ERRORS`), which it has
/// already retried a few times when one reaches here.
const THROTTLING_CODES: &[&str] = &[
    "ThrottlingException",
    "Throttling",
    "ThrottledException",
    "RequestThrottledException",
    "TooManyRequestsException",
    "RequestLimitExceeded",
    "RequestThrottled",
    "LimitExceededException",
    "SlowDown",
];

/// Whether `e` says StartSession was throttled (a retry later can succeed).
pub(crate) fn is_throttling(e: &Error) -> bool {
    matches!(e, Error::Api { code: Some(c), .. } if THROTTLING_CODES.contains(&c.as_str()))
}

/// First pause after a throttled StartSession, doubled each time up to [`THROTTLE_MAX_WAIT`].
const THROTTLE_FIRST_WAIT: Duration = Duration::from_secs(1);
const THROTTLE_MAX_WAIT: Duration = Duration::from_secs(20);

/// StartSession, waiting and trying again (with backoff and jitter, a warning each time) while
/// the service throttles it: a throttled start is late, never failed. Every other error is
/// returned. Cancel-safe (dropping it drops the call in flight, whose session is terminated).
async fn start_session_patiently(
    api: &SsmApi,
    target: &str,
    document: &str,
    params: &HashMap<String, Vec<String>>,
) -> Result<StartedSession> {
    let mut wait = THROTTLE_FIRST_WAIT;
    loop {
        match api.start_session(target, Some(document), params).await {
            Err(e) if is_throttling(&e) => {
                // Jitter: sessions throttled together do not all come back together.
                let jitter = Duration::from_millis(rand::random_range(0..=wait.as_millis() as u64 / 2));
                let pause = wait + jitter;
                tracing::warn!(
                    "StartSession was throttled by the service ({e}); waiting {:.1} s and trying again",
                    pause.as_secs_f64()
                );
                tokio::time::sleep(pause).await;
                wait = (wait * 2).min(THROTTLE_MAX_WAIT);
            }
            other => return other,
        }
    }
}

/// Bytes queued towards the local connection in basic mode before the session stops reading
/// the channel (one connection: stalling the channel stalls nobody else). Beyond what keeps the
/// local write busy it is only memory: TCP then holds the agent, which is the point. At 1 MiB
/// this and the driver's [`ChannelOptions::inbound_high_water`] added 2 MiB to the helper's peak
/// RSS in an unpaced download, for no more speed than at 256 KiB (1.6 ms of data at 160 MB/s).
///
/// [`ChannelOptions::inbound_high_water`]: crate::driver::ChannelOptions::inbound_high_water
const LOCAL_QUEUE_LIMIT: usize = 256 << 10;
/// In smux mode with a single local connection: bytes queued for it before the session stops
/// reading the channel, as in basic mode. With one connection nobody else is stalled, so the
/// agent is held back instead of the queue growing to [`MuxOptions::stream_buffer`].
const SOLE_STREAM_PAUSE: usize = LOCAL_QUEUE_LIMIT;
/// smux output waiting for the channel before local reads pause. The channel's send window
/// (1024 messages) is the buffer that keeps the link busy; at 1 MiB this one added as much to the
/// helper's peak RSS in an upload, whenever the agent was slower than the local program. At
/// 256 KiB, one more read took its queue past 256 KiB and its capacity doubled to 512 KiB; at
/// 64 KiB it stays below 128 KiB.
const MUX_OUTPUT_LIMIT: usize = 64 << 10;
const LOCAL_READ_SIZE: usize = 32 << 10;
/// Bytes gathered from a connection's queue into one local write.
const LOCAL_WRITE_BATCH: usize = 64 << 10;
/// Local reads (of up to [`LOCAL_READ_SIZE`]) queued for the session loop, all connections
/// together. Read-ahead beyond what the channel's send window takes is memory, not speed: at
/// 256 an upload held 8 MiB here and the helper's peak RSS doubled (16 to 34 MiB); at 16, up
/// to 512 KiB.
const LOCAL_EVENTS: usize = 4;

enum LocalEvent {
    Data(u32, Vec<u8>),
    Eof(u32),
}

/// Writer side of one local connection: an unbounded queue with a byte count, which the session
/// bounds (smux: [`MuxOptions`]; basic: `LOCAL_QUEUE_LIMIT`), so one slow local reader never
/// stalls the others (§9 item 21).
struct LocalConn {
    tx: mpsc::UnboundedSender<Vec<u8>>,
    queued: Arc<AtomicUsize>,
    reset: watch::Sender<bool>,
    reader: JoinHandle<()>,
    stats: Arc<ForwardStats>,
}

/// Wakes a session loop that stopped reading the channel because a local connection was
/// [`LocalConn::full`] (basic mode): the connection's writer signals it each time it hands bytes
/// to the local reader. Without it, nothing would wake the loop once the reader caught up. smux
/// mode never stops reading the channel for one connection, so it passes none.
type Drained = Arc<tokio::sync::Notify>;

impl LocalConn {
    fn spawn(
        stream: TcpStream,
        id: u32,
        events: mpsc::Sender<LocalEvent>,
        drained: Option<Drained>,
        stats: Arc<ForwardStats>,
    ) -> Self {
        let _ = stream.set_nodelay(true);
        let (rd, wr) = stream.into_split();
        let (tx, rx) = mpsc::unbounded_channel();
        let (reset_tx, reset_rx) = watch::channel(false);
        let queued = Arc::new(AtomicUsize::new(0));
        tokio::spawn(write_local(wr, rx, reset_rx, queued.clone(), drained, stats.clone()));
        let reader = tokio::spawn(read_local(rd, id, events, stats.clone()));
        stats.connections_total.fetch_add(1, Ordering::Relaxed);
        stats.connections_active.fetch_add(1, Ordering::Relaxed);
        Self {
            tx,
            queued,
            reset: reset_tx,
            reader,
            stats,
        }
    }

    fn write(&self, data: Vec<u8>) {
        let len = data.len();
        self.queued.fetch_add(len, Ordering::Relaxed);
        if self.tx.send(data).is_err() {
            // The writer has ended (see `write_local`): the bytes are dropped, and nothing is
            // queued. Saturating: the writer may have cleared the count between the add and the
            // send.
            self.stats.bytes_discarded.fetch_add(len as u64, Ordering::Relaxed);
            let _ = self
                .queued
                .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |q| Some(q.saturating_sub(len)));
        }
    }

    /// Bytes written here that the local reader has not taken yet.
    fn queued(&self) -> usize {
        self.queued.load(Ordering::Relaxed)
    }

    fn full(&self) -> bool {
        self.queued() >= LOCAL_QUEUE_LIMIT
    }

    /// Drops what is queued and resets the connection (TCP RST, not FIN), so the local program
    /// sees an error instead of an end of data that looks complete.
    fn reset(self) {
        let _ = self.reset.send(true);
    }
}

impl Drop for LocalConn {
    fn drop(&mut self) {
        self.reader.abort();
    }
}

async fn read_local(mut rd: OwnedReadHalf, id: u32, events: mpsc::Sender<LocalEvent>, stats: Arc<ForwardStats>) {
    let mut buf = vec![0u8; LOCAL_READ_SIZE];
    loop {
        match rd.read(&mut buf).await {
            Ok(0) | Err(_) => {
                let _ = events.send(LocalEvent::Eof(id)).await;
                return;
            }
            Ok(n) => {
                stats.bytes_to_target.fetch_add(n as u64, Ordering::Relaxed);
                let data = buf.get(..n).unwrap_or_default().to_vec();
                if events.send(LocalEvent::Data(id, data)).await.is_err() {
                    return;
                }
            }
        }
    }
}

async fn write_local(
    mut wr: OwnedWriteHalf,
    mut rx: mpsc::UnboundedReceiver<Vec<u8>>,
    mut reset: watch::Receiver<bool>,
    queued: Arc<AtomicUsize>,
    drained: Option<Drained>,
    stats: Arc<ForwardStats>,
) {
    let reset_now = loop {
        // A reset must not wait for a write the local reader is not taking.
        let buf = tokio::select! {
            biased;
            () = reset_requested(&mut reset) => break true,
            buf = rx.recv() => match buf {
                Some(mut b) => {
                    // What else is queued already goes out in the same write: one system call
                    // for many of the agent's 1 KiB messages.
                    while b.len() < LOCAL_WRITE_BATCH {
                        match rx.try_recv() {
                            Ok(more) => {
                                // Room for the whole batch at once (a no-op once there is),
                                // not a regrowth and copy every few chunks.
                                b.reserve(LOCAL_WRITE_BATCH.saturating_sub(b.len()).max(more.len()));
                                b.extend_from_slice(&more);
                            }
                            Err(_) => break,
                        }
                    }
                    b
                }
                None => break false,
            },
        };
        let res = tokio::select! {
            biased;
            () = reset_requested(&mut reset) => {
                stats.bytes_discarded.fetch_add(buf.len() as u64, Ordering::Relaxed);
                break true;
            }
            res = wr.write_all(&buf) => res,
        };
        queued.fetch_sub(buf.len(), Ordering::Relaxed);
        if let Some(d) = &drained {
            d.notify_one();
        }
        if res.is_err() {
            // Not known to have reached the local reader.
            stats.bytes_discarded.fetch_add(buf.len() as u64, Ordering::Relaxed);
            break false;
        }
        stats.bytes_from_target.fetch_add(buf.len() as u64, Ordering::Relaxed);
    };
    // Nothing more is taken: what is still queued is discarded, and no longer counts as queued
    // (a sole connection's queue must not hold its session for data that will never be written).
    rx.close();
    let mut dropped = 0;
    while let Ok(b) = rx.try_recv() {
        dropped += b.len();
    }
    stats.bytes_discarded.fetch_add(dropped as u64, Ordering::Relaxed);
    drop(rx);
    queued.store(0, Ordering::Relaxed);
    if let Some(d) = &drained {
        d.notify_one();
    }
    if reset_now {
        // RST: no linger on close, and no FIN from this half first (`forget` leaves the close to
        // the read half, dropped when its task is aborted).
        let _ = wr.as_ref().set_zero_linger();
        wr.forget();
    } else {
        let _ = wr.shutdown().await;
    }
    stats.connections_active.fetch_sub(1, Ordering::Relaxed);
}

/// Completes when a reset is asked for; never when the connection is dropped without one (its
/// queue is then written out and closed normally).
async fn reset_requested(reset: &mut watch::Receiver<bool>) {
    if reset.wait_for(|r| *r).await.is_err() {
        std::future::pending::<()>().await;
    }
}

/// Sends `TerminateSession` as a flag (§7.2) and asks the driver to drain and terminate.
async fn terminate(sender: &DataSender, flag: bool) {
    if flag {
        let flag = PortFlag::TerminateSession.to_bytes().to_vec();
        sender.finish_with(PayloadType::Flag, flag, true).await;
    } else {
        sender.finish(true).await;
    }
}

/// Resets stream `id`: FIN to the agent (smux v1 has no other way to end a stream; the agent
/// then closes its destination connection, port_mux.go handleDataTransfer) and RST locally.
fn reset_stream(mux: &mut Mux, conns: &mut HashMap<u32, LocalConn>, id: u32, stats: &ForwardStats, why: &str) {
    mux.close_stream(id);
    if let Some(c) = conns.remove(&id) {
        tracing::warn!(
            stream = id,
            "local connection reset: {why} ({} bytes queued); smux v1 has no per-stream flow control, so holding more would stall every connection",
            c.queued()
        );
        stats.connections_reset.fetch_add(1, Ordering::Relaxed);
        c.reset();
    }
}

/// smux mode (§7.4) with smux in-process: each local connection is one stream.
///
/// smux v1 has no per-stream flow control: the agent's smux sends whatever its destination
/// produces, and the only brake is the receiver not reading the session at all (smux's
/// session-wide `MaxReceiveBuffer`, which stalls every stream, §9 item 21). So this loop always
/// reads the session and queues per connection, within [`MuxOptions::stream_buffer`] per
/// connection and [`MuxOptions::session_buffer`] in all. A connection past its bound is
/// reset (FIN to the agent, RST to the local program): its bytes cannot all be kept without
/// either unbounded memory or stopping every other stream, and a reset never hands a byte to the
/// wrong place or passes a truncated stream off as complete. The other streams and the session
/// carry on; the keepalive still hears the agent because the session is always read.
///
/// A single local connection has nobody to stall: once it is [`SOLE_STREAM_PAUSE`] behind, the
/// session is not read until it catches up, and TCP holds the agent back as in basic mode (the
/// keepalive counts the waiting input as the agent's sign of life).
async fn run_mux(
    mut listener: Acceptor,
    dc: DataChannel,
    keepalive: Option<Keepalive>,
    payload_size: usize,
    opts: MuxOptions,
    stats: Arc<ForwardStats>,
    mut stop: watch::Receiver<bool>,
) -> Result<End> {
    let (sender, mut rx, driver) = dc.into_parts();
    let mut mux = Mux::with_keepalive(Side::Client, keepalive, Instant::now());
    let (local_tx, mut local_rx) = mpsc::channel::<LocalEvent>(LOCAL_EVENTS);
    let mut conns: HashMap<u32, LocalConn> = HashMap::new();
    let mut outcome: Result<()> = Ok(());
    let drained = Drained::default();
    loop {
        if listener.served(conns.len()) {
            // Session per connection: its connection is gone, and so goes the session. What the
            // connection sent (and its stream's FIN) goes out first.
            while let Some(chunk) = mux.poll_output(payload_size) {
                if sender.send(PayloadType::Output, chunk).await.is_err() {
                    break;
                }
            }
            terminate(&sender, true).await;
            break;
        }
        let mux_full = mux.pending_output() >= MUX_OUTPUT_LIMIT;
        let timer = mux.poll_timeout();
        // A sole connection that is behind holds the session (see SOLE_STREAM_PAUSE); with
        // several, the session is always read and the one behind is reset past its bound.
        // Below the stream buffer, or the connection would be reset before the pause.
        let pause_at = SOLE_STREAM_PAUSE.min(opts.stream_buffer / 2);
        let sole_behind = conns.len() == 1 && conns.values().all(|c| c.queued() >= pause_at);
        tokio::select! {
            permit = sender.reserve(), if mux.pending_output() > 0 => {
                let Ok(permit) = permit else { break };
                if let Some(chunk) = mux.poll_output(payload_size) {
                    permit.send(PayloadType::Output, chunk);
                }
            }
            accepted = listener.accept() => if let Some((stream, peer)) = accepted {
                let id = match mux.open_stream() {
                    Ok(id) => id,
                    Err(e) => { outcome = Err(Error::Connect(format!("smux: {e}"))); break; }
                };
                tracing::debug!(%peer, stream = id, "connection accepted");
                conns.insert(id, LocalConn::spawn(stream, id, local_tx.clone(), Some(drained.clone()), stats.clone()));
            },
            ev = local_rx.recv(), if !mux_full => match ev {
                Some(LocalEvent::Data(id, data)) => { let _ = mux.write(id, &data); }
                Some(LocalEvent::Eof(id)) => {
                    // smux v1 has no half-close (§7.4): the stream ends both ways.
                    mux.close_stream(id);
                    conns.remove(&id);
                }
                None => {}
            },
            () = drained.notified(), if sole_behind => {}
            msg = rx.recv(), if !sole_behind => match msg {
                Some((PayloadType::Output, bytes)) => {
                    if let Err(e) = mux.handle_input(Instant::now(), &bytes) {
                        outcome = Err(Error::Connect(format!("smux: {e}")));
                        break;
                    }
                    while let Some(ev) = mux.poll_event() {
                        match ev {
                            MuxEvent::Data(id, d) => {
                                let behind = conns.get(&id).map(|c| c.queued().saturating_add(d.len()));
                                match behind {
                                    Some(n) if n > opts.stream_buffer => reset_stream(
                                        &mut mux, &mut conns, id, &stats, "its reader fell too far behind",
                                    ),
                                    Some(_) => if let Some(c) = conns.get(&id) { c.write(d) },
                                    None => {}
                                }
                            }
                            MuxEvent::Closed(id) => { conns.remove(&id); }
                            MuxEvent::Opened(_) => {}
                        }
                    }
                    // All connections together: the one furthest behind goes first.
                    while conns.values().map(LocalConn::queued).sum::<usize>() > opts.session_buffer {
                        let Some(id) = conns.iter().max_by_key(|(_, c)| c.queued()).map(|(id, _)| *id) else { break };
                        reset_stream(&mut mux, &mut conns, id, &stats, "the forward holds too much for slow readers");
                    }
                }
                Some((PayloadType::Flag, bytes)) => {
                    if PortFlag::parse(&bytes) == Ok(PortFlag::ConnectToPortError) {
                        tracing::warn!("Connection to destination port failed, check SSM Agent logs.");
                    }
                }
                Some(_) => {}
                None => break,
            },
            _ = stop.changed() => {
                listener.listener = None;
                conns.clear();
                terminate(&sender, true).await;
                break;
            }
            _ = sleep_until_opt(timer) => {
                let now = Instant::now();
                if !rx.is_empty() {
                    // Input from the agent is waiting on us: it is alive (smux v1 skips the
                    // keepalive close while its own reader is blocked, §7.4).
                    mux.input_waiting(now);
                }
                if let Err(e) = mux.handle_timeout(now) {
                    outcome = Err(Error::Connect(format!("smux: {e}")));
                    break;
                }
            }
        }
    }
    drop(listener);
    drop(conns);
    if outcome.is_err() {
        terminate(&sender, true).await;
    }
    drop(sender);
    let end = driver
        .await
        .map_err(|e| Error::Connect(format!("driver failed: {e}")))?;
    outcome.and(end)
}

/// How long the agent's output must have been quiet after our `DisconnectToPort` before the
/// next connection's first bytes go out (see [`Route::Stale`]). It covers output in flight and
/// one retransmission by the agent (its retransmission timeout is capped at 1 s and checked
/// every 100 ms: agent/session/config/config.go `MaxTransmissionTimeout`,
/// `ResendSleepInterval`).
const BASIC_QUIET: Duration = Duration::from_millis(1200);

/// Whose the agent's output is in basic mode. Agent output carries no connection identity, so
/// the boundary comes from what the agent does (agent/session/plugins/port/port_basic.go):
/// it dials its destination at session start; on `DisconnectToPort` it closes that connection,
/// and its reader then blocks (`handlePortError`) until the next client data, which re-dials
/// first. So nothing the agent sends between our `DisconnectToPort` and our next data can be
/// the next connection's.
#[derive(Clone, Copy)]
enum Route {
    /// No local connection yet: output is from the destination dialled at session start and
    /// waits for the first connection, as the official client's (which leaves it unacked
    /// until a connection is open, §7.1). Bounded by `LOCAL_QUEUE_LIMIT`, then the channel is
    /// not read.
    First,
    /// To the open connection.
    Live,
    /// From our `DisconnectToPort` until the next connection's first bytes go out: output is
    /// the closed connection's, and is discarded. The official client writes it to whatever
    /// connection is open when it is processed (the agent retransmits what failed to write), so
    /// one user's data can reach the next; this client does not. The next connection's first
    /// bytes are held until output has been quiet for [`BASIC_QUIET`], so output still in
    /// flight lands here instead of after them. Left: output delayed longer than that (a
    /// reconnect in between) could still reach the next connection.
    Stale { quiet_until: tokio::time::Instant },
}

/// Basic mode (§7.3): one local connection at a time; the next waits in the accept backlog.
async fn run_basic(
    mut listener: Acceptor,
    dc: DataChannel,
    payload_size: usize,
    stats: Arc<ForwardStats>,
    mut stop: watch::Receiver<bool>,
    agent_version: String,
) -> Result<End> {
    let (sender, mut rx, driver) = dc.into_parts();
    let (local_tx, mut local_rx) = mpsc::channel::<LocalEvent>(LOCAL_EVENTS);
    let mut conn: Option<(u32, LocalConn)> = None;
    let mut next_id = 0u32;
    let mut pending: VecDeque<Vec<u8>> = VecDeque::new();
    let mut route = Route::First;
    let mut early: Vec<Vec<u8>> = Vec::new();
    let mut early_bytes = 0usize;
    let drained = Drained::default();
    let flag_ok = ssm_proto::version::compare(&agent_version, ssm_proto::version::AGENT_TERMINATE_FLAG_AFTER)
        == std::cmp::Ordering::Greater;
    loop {
        if listener.served(usize::from(conn.is_some())) {
            // Session per connection: its connection is gone (its data and DisconnectToPort
            // are sent), and so goes the session; flag or API call as on stop (§7.3).
            terminate(&sender, flag_ok).await;
            break;
        }
        let local_full = match route {
            Route::First => early_bytes >= LOCAL_QUEUE_LIMIT,
            _ => conn.as_ref().is_some_and(|(_, c)| c.full()),
        };
        let held_until = match route {
            Route::Stale { quiet_until } if tokio::time::Instant::now() < quiet_until => Some(quiet_until),
            _ => None,
        };
        tokio::select! {
            permit = sender.reserve(), if !pending.is_empty() && held_until.is_none() => {
                let Ok(permit) = permit else { break };
                if let Some(chunk) = pending.pop_front() {
                    permit.send(PayloadType::Output, chunk);
                    // The agent re-dials on this; what it sends from now on is this connection's.
                    route = Route::Live;
                }
            }
            _ = sleep_until_opt_tokio(held_until), if !pending.is_empty() => {}
            accepted = listener.accept(), if conn.is_none() => if let Some((stream, peer)) = accepted {
                next_id += 1;
                tracing::debug!(%peer, "connection accepted");
                let c = LocalConn::spawn(stream, next_id, local_tx.clone(), Some(drained.clone()), stats.clone());
                if matches!(route, Route::First) {
                    for d in early.drain(..) {
                        c.write(d);
                    }
                    early_bytes = 0;
                    route = Route::Live;
                }
                conn = Some((next_id, c));
            },
            ev = local_rx.recv(), if pending.len() < 64 => match ev {
                Some(LocalEvent::Data(id, data)) if conn.as_ref().is_some_and(|(c, _)| *c == id) => {
                    pending.extend(data.chunks(payload_size.max(1)).map(<[u8]>::to_vec));
                }
                Some(LocalEvent::Eof(id)) if conn.as_ref().is_some_and(|(c, _)| *c == id) => {
                    // Everything read before EOF goes first, then the flag.
                    for chunk in pending.drain(..) {
                        let _ = sender.send(PayloadType::Output, chunk).await;
                    }
                    let _ = sender.send(PayloadType::Flag, PortFlag::DisconnectToPort.to_bytes().to_vec()).await;
                    conn = None;
                    route = Route::Stale { quiet_until: tokio::time::Instant::now() + BASIC_QUIET };
                }
                _ => {}
            },
            () = drained.notified(), if local_full => {}
            msg = rx.recv(), if !local_full => match msg {
                Some((PayloadType::Output, bytes)) => match (route, &conn) {
                    (Route::First, _) => {
                        early_bytes += bytes.len();
                        early.push(bytes);
                    }
                    (Route::Live, Some((_, c))) => c.write(bytes),
                    (Route::Stale { .. } | Route::Live, _) => {
                        tracing::trace!("{} bytes of a closed connection's output discarded", bytes.len());
                        stats.bytes_discarded.fetch_add(bytes.len() as u64, Ordering::Relaxed);
                        route = Route::Stale { quiet_until: tokio::time::Instant::now() + BASIC_QUIET };
                    }
                },
                Some(_) => {}
                None => break,
            },
            _ = stop.changed() => {
                listener.listener = None;
                conn = None;
                // Agents up to 2.3.722.0 know no TerminateSession flag in basic mode (§7.3); the
                // API call the driver makes on finishing ends those sessions.
                terminate(&sender, flag_ok).await;
                break;
            }
        }
    }
    drop(listener);
    drop(conn);
    drop(sender);
    driver
        .await
        .map_err(|e| Error::Connect(format!("driver failed: {e}")))?
}

/// Binds a listener; the error names the address (a port in use fails here, at once). Every
/// forward's listener is bound here, so this is where a listener other hosts can reach is
/// warned about, once per forward.
pub async fn bind(addr: SocketAddr) -> Result<TcpListener> {
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|source| Error::Listen { addr, source })?;
    if let Some(warning) = exposure_warning(addr) {
        tracing::warn!("{warning}");
    }
    Ok(listener)
}

/// The warning for listening on `addr`, when it is not a loopback address.
fn exposure_warning(addr: SocketAddr) -> Option<String> {
    let ip = addr.ip();
    if ip.to_canonical().is_loopback() {
        return None;
    }
    let which = if ip.is_unspecified() {
        "every network interface"
    } else {
        "not a loopback address"
    };
    Some(format!(
        "listening on {ip} ({which}): anyone who can reach this host can use the forward to reach \
         the target; listen on 127.0.0.1 unless that is intended"
    ))
}

/// Pause after a failed accept. Errors such as EMFILE (no descriptor left) persist while the
/// connection waits in the backlog; retrying at once would spin a core.
const ACCEPT_RETRY: Duration = Duration::from_millis(100);

/// Where a session's local connections come from.
pub(crate) enum Source {
    /// A listener of its own: every connection it accepts.
    Listener(TcpListener),
    /// One connection, handed over by a session-per-connection forward; the session ends when
    /// that connection does.
    Handoff(Handoff),
}

impl Source {
    fn local_addr(&self) -> Result<SocketAddr> {
        match self {
            Source::Listener(l) => Ok(l.local_addr()?),
            Source::Handoff(h) => Ok(h.local_addr),
        }
    }
}

/// The receiving end of one connection handed to a session. Dropped with the connection still
/// in it (the session ended or failed to start before taking it), it gives the connection back
/// through `back`, when there is one, so a dead warm session never costs a connection.
pub(crate) struct Handoff {
    pub(crate) rx: tokio::sync::oneshot::Receiver<TcpStream>,
    pub(crate) back: Option<mpsc::UnboundedSender<TcpStream>>,
    pub(crate) local_addr: SocketAddr,
}

impl Drop for Handoff {
    fn drop(&mut self) {
        self.rx.close();
        if let (Ok(stream), Some(back)) = (self.rx.try_recv(), self.back.as_ref()) {
            let _ = back.send(stream);
        }
    }
}

/// The local listener (`None` once stopped: accepts nothing), with a pause after each failed
/// accept and one warning per burst of failures rather than one per failure.
pub(crate) struct Acceptor {
    listener: Option<Source>,
    retry_at: Option<tokio::time::Instant>,
    failures: u64,
    /// A [`Source::Handoff`]: the session serves one connection.
    one_shot: bool,
    /// Connections accepted.
    accepted: u64,
}

impl Acceptor {
    pub(crate) fn new(source: Source) -> Self {
        Self {
            one_shot: matches!(source, Source::Handoff(_)),
            listener: Some(source),
            retry_at: None,
            failures: 0,
            accepted: 0,
        }
    }

    /// Whether this session served its one connection and that connection is gone (`open` is
    /// how many of its connections are open).
    fn served(&self, open: usize) -> bool {
        self.one_shot && self.accepted > 0 && open == 0
    }

    /// The next connection; `None` after a failure (already logged). Cancel-safe: the pause
    /// is kept across calls.
    pub(crate) async fn accept(&mut self) -> Option<(TcpStream, SocketAddr)> {
        let listener = match self.listener.as_mut() {
            None => return std::future::pending().await,
            Some(Source::Handoff(h)) => {
                // One connection, then nothing; a handoff dropped unsent (the forward is
                // stopping) yields nothing either.
                let got = (&mut h.rx).await;
                self.listener = None;
                let stream = got.ok()?;
                let peer = stream.peer_addr().unwrap_or(h_local_unspecified());
                self.accepted += 1;
                return Some((stream, peer));
            }
            Some(Source::Listener(l)) => &*l,
        };
        if let Some(t) = self.retry_at {
            tokio::time::sleep_until(t).await;
        }
        let accepted = listener.accept().await;
        self.retry_at = None;
        match accepted {
            Ok(conn) => {
                // A keystroke must not wait behind Nagle for the peer's delayed ACK.
                let _ = conn.0.set_nodelay(true);
                self.accepted += 1;
                if self.failures > 0 {
                    tracing::info!("accepting connections again after {} failed attempt(s)", self.failures);
                    self.failures = 0;
                }
                Some(conn)
            }
            Err(e) => {
                if self.failures == 0 {
                    tracing::warn!("accept failed: {e}; retrying every {ACCEPT_RETRY:?}");
                } else {
                    tracing::trace!("accept failed again: {e}");
                }
                self.failures += 1;
                self.retry_at = Some(tokio::time::Instant::now() + ACCEPT_RETRY);
                None
            }
        }
    }
}

/// The peer address of a handed-over connection whose address is unknown (only logged).
fn h_local_unspecified() -> SocketAddr {
    SocketAddr::from(([0, 0, 0, 0], 0))
}

async fn sleep_until_opt_tokio(t: Option<tokio::time::Instant>) {
    match t {
        Some(t) => tokio::time::sleep_until(t).await,
        None => std::future::pending().await,
    }
}

async fn sleep_until_opt(t: Option<Instant>) {
    match t {
        Some(t) => tokio::time::sleep_until(tokio::time::Instant::from_std(t)).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A keystroke from a local connection must not wait behind Nagle for the peer's delayed
    /// ACK: every accepted connection comes with `TCP_NODELAY` set.
    #[tokio::test]
    async fn accepted_connections_have_nodelay() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let mut acceptor = Acceptor::new(Source::Listener(listener));
        let _client = TcpStream::connect(addr).await.unwrap();
        let (stream, _) = tokio::time::timeout(Duration::from_secs(30), acceptor.accept())
            .await
            .expect("accepted in time")
            .expect("accepted");
        assert!(stream.nodelay().unwrap(), "accepted connection has Nagle on");
    }

    #[test]
    fn only_non_loopback_listeners_are_warned_about() {
        for quiet in ["127.0.0.1:0", "127.0.0.2:8080", "[::1]:0", "[::ffff:127.0.0.1]:22"] {
            assert_eq!(exposure_warning(quiet.parse().unwrap()), None, "{quiet}");
        }
        let any = exposure_warning("0.0.0.0:5432".parse().unwrap()).expect("0.0.0.0 is warned about");
        assert!(
            any.contains("0.0.0.0") && any.contains("every network interface"),
            "{any}"
        );
        let any6 = exposure_warning("[::]:5432".parse().unwrap()).expect(":: is warned about");
        assert!(any6.contains("every network interface"), "{any6}");
        let lan = exposure_warning("192.168.1.10:5432".parse().unwrap()).expect("a LAN address is warned about");
        assert!(
            lan.contains("192.168.1.10") && lan.contains("not a loopback address"),
            "{lan}"
        );
    }
}
