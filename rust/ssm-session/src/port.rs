//! Port forwarding (§7): a local TCP listener whose connections reach a port on the target, or
//! a host behind it, in basic or smux mode as the agent version dictates (§7.1).

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use ssm_proto::smux::{Mux, MuxEvent, Side};
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
}

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
}

/// A running forward. Dropping it stops the listener and the session task.
pub struct PortForward {
    local_addr: SocketAddr,
    session_id: String,
    mode: PortMode,
    stats: Arc<ForwardStats>,
    stop_tx: watch::Sender<bool>,
    task: Option<JoinHandle<Result<End>>>,
}

impl PortForward {
    /// Binds the local port first (so a port in use fails at once and nothing is started),
    /// then starts the session and waits for its handshake.
    pub async fn start(api: &SsmApi, opts: ForwardOptions) -> Result<Self> {
        let listener = bind(opts.local_addr).await?;
        let local_addr = listener.local_addr()?;
        let mut params = HashMap::new();
        params.insert("portNumber".to_owned(), vec![opts.remote_port.to_string()]);
        params.insert("localPortNumber".to_owned(), vec![local_addr.port().to_string()]);
        let document = match &opts.remote_host {
            Some(h) => {
                params.insert("host".to_owned(), vec![h.clone()]);
                "AWS-StartPortForwardingSessionToRemoteHost"
            }
            None => "AWS-StartPortForwardingSession",
        };
        let started = api.start_session(&opts.target, Some(document), &params).await?;
        let control: SharedControl = Arc::new(api.clone());
        Self::attach(started, control, listener, opts.payload_size, opts.channel).await
    }

    /// Runs a session someone else started (the plugin-compatible mode, §1.3) on `listener`.
    pub async fn attach(
        started: StartedSession,
        control: SharedControl,
        listener: TcpListener,
        payload_size: usize,
        channel: ChannelOptions,
    ) -> Result<Self> {
        let dc = DataChannel::open(started, control, channel).await?;
        Self::from_channel(dc, listener, payload_size).await
    }

    /// Runs port forwarding over an open data channel whose handshake announced a `Port`
    /// session.
    pub async fn from_channel(dc: DataChannel, listener: TcpListener, payload_size: usize) -> Result<Self> {
        let local_addr = listener.local_addr()?;
        let Some(mode) = dc.start.port.as_ref().map(|p| p.mode) else {
            let (sender, _, _) = dc.into_parts();
            sender.finish(true).await;
            return Err(Error::Config("the agent did not start a port session".into()));
        };
        let session_id = dc.start.session_id.clone();
        let agent_version = dc.start.agent_version.clone();
        let stats = Arc::new(ForwardStats::default());
        let (stop_tx, stop_rx) = watch::channel(false);
        let task = match mode {
            PortMode::Mux { keepalive } => {
                tokio::spawn(run_mux(listener, dc, keepalive, payload_size, stats.clone(), stop_rx))
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
            stats,
            stop_tx,
            task: Some(task),
        })
    }

    /// The address connections are accepted on.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Session id.
    pub fn session_id(&self) -> &str {
        &self.session_id
    }

    /// Mode agreed with the agent.
    pub fn mode(&self) -> PortMode {
        self.mode
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

/// Bytes queued towards one local connection before the session stops reading the channel.
const LOCAL_QUEUE_LIMIT: usize = 32 << 20;
/// smux output waiting for the channel before local reads pause.
const MUX_OUTPUT_LIMIT: usize = 1 << 20;
const LOCAL_READ_SIZE: usize = 32 << 10;

enum LocalEvent {
    Data(u32, Vec<u8>),
    Eof(u32),
}

/// Writer side of one local connection: an unbounded queue with a byte count, so one slow
/// local reader never stalls the others (§9 item 21) until it holds `LOCAL_QUEUE_LIMIT`.
struct LocalConn {
    tx: mpsc::UnboundedSender<Vec<u8>>,
    queued: Arc<AtomicUsize>,
    reader: JoinHandle<()>,
}

/// Wakes a session loop that stopped reading the channel because a local connection was
/// [`LocalConn::full`]: the connection's writer signals it each time it hands bytes to the
/// local reader. Without it, nothing would wake the loop once the reader caught up.
type Drained = Arc<tokio::sync::Notify>;

impl LocalConn {
    fn spawn(
        stream: TcpStream,
        id: u32,
        events: mpsc::Sender<LocalEvent>,
        drained: Drained,
        stats: Arc<ForwardStats>,
    ) -> Self {
        let _ = stream.set_nodelay(true);
        let (rd, wr) = stream.into_split();
        let (tx, rx) = mpsc::unbounded_channel();
        let queued = Arc::new(AtomicUsize::new(0));
        tokio::spawn(write_local(wr, rx, queued.clone(), drained, stats.clone()));
        let reader = tokio::spawn(read_local(rd, id, events, stats.clone()));
        stats.connections_total.fetch_add(1, Ordering::Relaxed);
        stats.connections_active.fetch_add(1, Ordering::Relaxed);
        Self { tx, queued, reader }
    }

    fn write(&self, data: Vec<u8>) {
        self.queued.fetch_add(data.len(), Ordering::Relaxed);
        let _ = self.tx.send(data);
    }

    fn full(&self) -> bool {
        self.queued.load(Ordering::Relaxed) >= LOCAL_QUEUE_LIMIT
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
    queued: Arc<AtomicUsize>,
    drained: Drained,
    stats: Arc<ForwardStats>,
) {
    while let Some(buf) = rx.recv().await {
        let res = wr.write_all(&buf).await;
        queued.fetch_sub(buf.len(), Ordering::Relaxed);
        drained.notify_one();
        if res.is_err() {
            break;
        }
        stats.bytes_from_target.fetch_add(buf.len() as u64, Ordering::Relaxed);
    }
    let _ = wr.shutdown().await;
    stats.connections_active.fetch_sub(1, Ordering::Relaxed);
}

/// Sends `TerminateSession` as a flag (§7.2) and asks the driver to drain and terminate.
async fn terminate(sender: &DataSender, flag: bool) {
    if flag {
        let _ = sender
            .send(PayloadType::Flag, PortFlag::TerminateSession.to_bytes().to_vec())
            .await;
    }
    sender.finish(true).await;
}

/// smux mode (§7.4) with smux in-process: each local connection is one stream.
async fn run_mux(
    listener: TcpListener,
    dc: DataChannel,
    keepalive: bool,
    payload_size: usize,
    stats: Arc<ForwardStats>,
    mut stop: watch::Receiver<bool>,
) -> Result<End> {
    let (sender, mut rx, driver) = dc.into_parts();
    let mut mux = Mux::new(Side::Client, keepalive, Instant::now());
    let (local_tx, mut local_rx) = mpsc::channel::<LocalEvent>(256);
    let mut conns: HashMap<u32, LocalConn> = HashMap::new();
    let mut listener = Acceptor::new(listener);
    let drained = Drained::default();
    let mut outcome: Result<()> = Ok(());
    loop {
        let local_full = conns.values().any(LocalConn::full);
        let mux_full = mux.pending_output() >= MUX_OUTPUT_LIMIT;
        let timer = mux.poll_timeout();
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
                conns.insert(id, LocalConn::spawn(stream, id, local_tx.clone(), drained.clone(), stats.clone()));
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
            () = drained.notified(), if local_full => {}
            msg = rx.recv(), if !local_full => match msg {
                Some((PayloadType::Output, bytes)) => {
                    if let Err(e) = mux.handle_input(Instant::now(), &bytes) {
                        outcome = Err(Error::Connect(format!("smux: {e}")));
                        break;
                    }
                    while let Some(ev) = mux.poll_event() {
                        match ev {
                            MuxEvent::Data(id, d) => if let Some(c) = conns.get(&id) { c.write(d) },
                            MuxEvent::Closed(id) => { conns.remove(&id); }
                            MuxEvent::Opened(_) => {}
                        }
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
                if let Err(e) = mux.handle_timeout(Instant::now()) {
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

/// Basic mode (§7.3): one local connection at a time; the next waits in the accept backlog.
async fn run_basic(
    listener: TcpListener,
    dc: DataChannel,
    payload_size: usize,
    stats: Arc<ForwardStats>,
    mut stop: watch::Receiver<bool>,
    agent_version: String,
) -> Result<End> {
    let (sender, mut rx, driver) = dc.into_parts();
    let (local_tx, mut local_rx) = mpsc::channel::<LocalEvent>(64);
    let mut conn: Option<(u32, LocalConn)> = None;
    let mut next_id = 0u32;
    let mut pending: VecDeque<Vec<u8>> = VecDeque::new();
    // Output that arrives while no connection is open waits for the next one.
    let mut early: Vec<Vec<u8>> = Vec::new();
    let mut listener = Acceptor::new(listener);
    let drained = Drained::default();
    let flag_ok = ssm_proto::version::compare(&agent_version, ssm_proto::version::AGENT_TERMINATE_FLAG_AFTER)
        == std::cmp::Ordering::Greater;
    loop {
        let local_full = conn.as_ref().is_some_and(|(_, c)| c.full());
        tokio::select! {
            permit = sender.reserve(), if !pending.is_empty() => {
                let Ok(permit) = permit else { break };
                if let Some(chunk) = pending.pop_front() {
                    permit.send(PayloadType::Output, chunk);
                }
            }
            accepted = listener.accept(), if conn.is_none() => if let Some((stream, peer)) = accepted {
                next_id += 1;
                tracing::debug!(%peer, "connection accepted");
                let c = LocalConn::spawn(stream, next_id, local_tx.clone(), drained.clone(), stats.clone());
                for d in early.drain(..) {
                    c.write(d);
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
                }
                _ => {}
            },
            () = drained.notified(), if local_full => {}
            msg = rx.recv(), if !local_full => match msg {
                Some((PayloadType::Output, bytes)) => match &conn {
                    Some((_, c)) => c.write(bytes),
                    None => early.push(bytes),
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

/// Binds a listener; the error names the address (a port in use fails here, at once).
pub async fn bind(addr: SocketAddr) -> Result<TcpListener> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| Error::Listen { addr, source })
}

/// Pause after a failed accept. Errors such as EMFILE (no descriptor left) persist while the
/// connection waits in the backlog; retrying at once would spin a core.
const ACCEPT_RETRY: Duration = Duration::from_millis(100);

/// The local listener (`None` once stopped: accepts nothing), with a pause after each failed
/// accept and one warning per burst of failures rather than one per failure.
struct Acceptor {
    listener: Option<TcpListener>,
    retry_at: Option<tokio::time::Instant>,
    failures: u64,
}

impl Acceptor {
    fn new(listener: TcpListener) -> Self {
        Self {
            listener: Some(listener),
            retry_at: None,
            failures: 0,
        }
    }

    /// The next connection; `None` after a failure (already logged). Cancel-safe: the pause
    /// is kept across calls.
    async fn accept(&mut self) -> Option<(TcpStream, SocketAddr)> {
        let Some(listener) = self.listener.as_ref() else {
            return std::future::pending().await;
        };
        if let Some(t) = self.retry_at {
            tokio::time::sleep_until(t).await;
        }
        let accepted = listener.accept().await;
        self.retry_at = None;
        match accepted {
            Ok(conn) => {
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

async fn sleep_until_opt(t: Option<Instant>) {
    match t {
        Some(t) => tokio::time::sleep_until(tokio::time::Instant::from_std(t)).await,
        None => std::future::pending().await,
    }
}
