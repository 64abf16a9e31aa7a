//! The agent's `Port` plugin (§7): basic mode, smux mode, and the stdio mode of
//! `AWS-StartSSHSession`, dialling real TCP destinations as the agent does
//! (agent/session/plugins/port/port.go, port_basic.go, port_mux.go).

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bytes::{BufMut, Bytes, BytesMut};
use ssm_proto::smux::{Keepalive, Mux, MuxEvent, Side};
use ssm_proto::{Channel, PayloadType, PortFlag, PortMode, PortProperties};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::config::Pacing;
use crate::state::Shared;

/// Bytes smux buffers for its streams before its reader blocks: smux's default
/// `MaxReceiveBuffer` (4 MiB), which the agent uses (port_mux.go: `smux.DefaultConfig()`).
const MUX_RECEIVE_BUFFER: usize = 4 << 20;
/// smux output waiting for the data channel before destination reads pause (the agent's unix
/// socket between smux and its 1 KiB-per-ms reader pushes back the same way).
const MUX_OUTPUT_LIMIT: usize = 256 << 10;
/// Read size of the agent's copy from a destination into an smux stream: `io.Copy`'s 32 KiB
/// buffer (port_mux.go handleDataTransfer), so PSH frames of up to 32 KiB span many messages.
const MUX_COPY_BUFFER: usize = 32 << 10;

/// Unpaced (an emulator option, not the agent), a basic connection's reader takes up to this
/// much from the socket at once and cuts it into messages of the agent's size: the messages
/// are those the agent's reads of 1024 would make of the bytes waiting, for one system call
/// instead of one per message, so that the emulator is not what limits a client it measures.
const UNPACED_READ_AHEAD: usize = 64 << 10;

/// What destination tasks report to the agent. `Data` and `Eof` arrive on the paced queue
/// (held while the data channel cannot take more); the rest on the completion queue.
pub(crate) enum DestEvent {
    /// Bytes read from destination `id`.
    Data(u32, Bytes),
    /// Destination `id` reached EOF or failed.
    Eof(u32),
    /// A write that processes client message `seq` finished (`ok`: it reached the socket/pty).
    Written(i64, bool),
    /// Dial for smux stream `id` finished.
    Dialed(u32, std::io::Result<TcpStream>),
    /// Dial of the basic/stdio destination finished; `pending` is the client message that
    /// triggered a re-dial (its sequence number and payload), written once connected.
    BasicDialed(Option<(i64, Vec<u8>)>, std::io::Result<TcpStream>),
    /// The shell program exited with this code.
    Exited(i32),
    /// A NonInteractiveCommands command has exited and is reaped (completion queue).
    CommandReaped,
    /// The exit code a NonInteractiveCommands plugin sends (`EXIT_CODE: n`, type 12).
    CommandExitCode(i32),
    /// A NonInteractiveCommands plugin is done: its output is queued, the session ends.
    CommandEnded,
}

/// Senders for the two queues of [`DestEvent`].
#[derive(Clone)]
pub(crate) struct DestQueues {
    pub(crate) data: mpsc::Sender<DestEvent>,
    pub(crate) done: mpsc::UnboundedSender<DestEvent>,
}

/// How the agent's handler dealt with one client message (its ack waits for this).
pub(crate) enum Handled {
    /// Processed now; `false` means it failed (not acked, so the client retransmits it).
    Done(bool),
    /// A [`DestEvent::Written`] (or a dial) will tell.
    Pending,
    /// Processed, and the session must end with this output.
    End(String),
}

struct DestConn {
    tx: mpsc::UnboundedSender<(Vec<u8>, Option<i64>)>,
    queued: Arc<AtomicUsize>,
    reader: JoinHandle<()>,
}

impl DestConn {
    /// Reads of up to `read_size` bytes (at least `chunk`), each sent on as messages of up to
    /// `chunk` bytes; `pause` after each read.
    fn spawn(
        stream: TcpStream,
        id: u32,
        queues: DestQueues,
        (chunk, read_size): (usize, usize),
        pause: Option<Duration>,
    ) -> Self {
        // The agent dials destinations with Go's `net.Dial` (agent/session/plugins/port/port.go
        // DialCall), and Go sets TCP_NODELAY on every TCP connection it makes: Nagle is off.
        let _ = stream.set_nodelay(true);
        let (mut rd, mut wr) = stream.into_split();
        let (tx, mut rx) = mpsc::unbounded_channel::<(Vec<u8>, Option<i64>)>();
        let queued = Arc::new(AtomicUsize::new(0));
        let q = queued.clone();
        let done = queues.done.clone();
        tokio::spawn(async move {
            let mut failed = false;
            while let Some((buf, seq)) = rx.recv().await {
                let ok = !failed && wr.write_all(&buf).await.is_ok();
                failed = !ok;
                q.fetch_sub(buf.len(), Ordering::Relaxed);
                if let Some(seq) = seq {
                    let _ = done.send(DestEvent::Written(seq, ok));
                }
            }
            if !failed {
                let _ = wr.shutdown().await;
            }
        });
        let events = queues.data;
        let reader = tokio::spawn(async move {
            let chunk = chunk.max(1);
            let size = read_size.max(chunk);
            let mut buf = BytesMut::with_capacity(size);
            let timer = pause.map(|_| crate::timer::PreciseTimer::new());
            loop {
                buf.reserve(size);
                match rd.read_buf(&mut (&mut buf).limit(size)).await {
                    Ok(0) | Err(_) => {
                        let _ = events.send(DestEvent::Eof(id)).await;
                        return;
                    }
                    Ok(n) => {
                        // Read into memory its messages then share: no copy of it here, and
                        // none in smux (Mux::write_bytes).
                        let read = buf.split().freeze();
                        for start in (0..n).step_by(chunk) {
                            let piece = read.slice(start..n.min(start + chunk));
                            if events.send(DestEvent::Data(id, piece)).await.is_err() {
                                return;
                            }
                        }
                    }
                }
                if let (Some(p), Some(timer)) = (pause, &timer) {
                    timer.sleep_until(std::time::Instant::now() + p, true).await;
                }
            }
        });
        Self { tx, queued, reader }
    }

    /// Queues `data`; with `seq`, a [`DestEvent::Written`] reports when it reached the socket.
    fn write(&self, data: Vec<u8>, seq: Option<i64>) {
        self.queued.fetch_add(data.len(), Ordering::Relaxed);
        let _ = self.tx.send((data, seq));
    }

    fn queued(&self) -> usize {
        self.queued.load(Ordering::Relaxed)
    }
}

impl Drop for DestConn {
    fn drop(&mut self) {
        self.reader.abort();
    }
}

struct Slot {
    conn: Option<DestConn>,
    pending: Vec<Vec<u8>>,
}

/// The basic/stdio destination connection's state (port_basic.go).
enum Basic {
    /// The first dial is running; client data is refused until it ends (port.go
    /// InputStreamMessageHandler: ErrHandlerNotReady while no connection is available).
    Dialing,
    /// Connected; `u32` is the generation, so events of a replaced connection are ignored.
    Open(u32, DestConn),
    /// The connection was closed; the next client data re-dials (`reconnectToPort`).
    Reconnect,
    /// A re-dial for the client message being processed is running.
    Redialing,
}

pub(crate) struct PortPlugin {
    shared: Arc<Shared>,
    target: String,
    mode: PortMode,
    props: PortProperties,
    queues: DestQueues,
    pacing: Pacing,
    basic: Basic,
    generation: u32,
    mux: Option<Mux>,
    dialer: Option<mpsc::UnboundedSender<u32>>,
    slots: HashMap<u32, Slot>,
    pump_at: Option<Instant>,
}

/// Dials `host:port` as the agent does: `net.Dial` without a timeout of its own (port.go
/// DialCall), so only the operating system gives up.
async fn dial(dest: Result<(String, u16), String>) -> std::io::Result<TcpStream> {
    let (host, port) = dest.map_err(std::io::Error::other)?;
    TcpStream::connect((host.as_str(), port)).await
}

impl PortPlugin {
    pub(crate) fn new(
        shared: Arc<Shared>,
        target: &str,
        mode: PortMode,
        props: PortProperties,
        queues: DestQueues,
        now: Instant,
    ) -> Self {
        // port_mux.go: `smux.Server` with smux's default config, keepalive as `mode` says.
        let timing = Keepalive {
            interval: Duration::from_millis(shared.config.smux_keepalive_interval_ms),
            timeout: Duration::from_millis(shared.config.smux_keepalive_timeout_ms),
        };
        let mux = match mode {
            PortMode::Mux { keepalive } => Some(Mux::with_keepalive(Side::Server, keepalive.then_some(timing), now)),
            _ => None,
        };
        let pacing = shared.config.pacing;
        Self {
            shared,
            target: target.to_owned(),
            mode,
            props,
            queues,
            pacing,
            basic: Basic::Dialing,
            generation: 0,
            mux,
            dialer: None,
            slots: HashMap::new(),
            pump_at: None,
        }
    }

    fn destination(&self) -> Result<(String, u16), String> {
        let port: u16 = self
            .props
            .port_number
            .parse()
            .map_err(|_| format!("invalid portNumber {:?}", self.props.port_number))?;
        let (instance_host, port) = self.shared.destination(&self.target, port);
        let host = match self.props.host.as_deref() {
            Some(h) if !h.is_empty() => h.to_owned(),
            _ => instance_host,
        };
        Ok((host, port))
    }

    /// The agent's refusal of a remote host it must not forward to (port.go
    /// validateParameters, run when the plugin starts, after the handshake): `host` is looked
    /// up (`net.LookupHost`; a name that does not resolve is not refused here, its dial fails
    /// later) and any of its addresses in the agent's default deny list
    /// (agent/appconfig/constants.go `DefaultDeniedPortForwardingRemoteIPs`: instance metadata,
    /// the Amazon DNS server, time sync and the other link-local services) refuses the session.
    /// The agent also refuses its VPC's DNS addresses, which a loopback emulator has none of.
    fn forbidden(&self) -> Option<String> {
        const DENIED: [&str; 9] = [
            "169.254.169.254",
            "fd00:ec2::254",
            "169.254.169.253",
            "fd00:ec2::253",
            "169.254.169.123",
            "fd00:ec2::123",
            "169.254.169.250",
            "169.254.169.251",
            "fd00:ec2::240",
        ];
        let host = self.props.host.as_deref().filter(|h| !h.is_empty())?;
        let addresses: Vec<IpAddr> = match host.parse::<IpAddr>() {
            Ok(ip) => vec![ip],
            // Blocking, as the agent's lookup is; it runs once per session start.
            Err(_) => std::net::ToSocketAddrs::to_socket_addrs(&(host, 0))
                .map(|it| it.map(|a| a.ip()).collect())
                .unwrap_or_default(),
        };
        let denied = addresses.iter().any(|ip| {
            DENIED
                .iter()
                .any(|d| d.parse::<IpAddr>().is_ok_and(|d| d == ip.to_canonical()))
        });
        // port.go: "Forwarding to IP address %s is forbidden." with the host as given.
        denied.then(|| format!("Forwarding to IP address {host} is forbidden."))
    }

    fn dial_failed(&self, e: &std::io::Error) -> String {
        let dest = self.destination().map(|(h, p)| format!("{h}:{p}")).unwrap_or_default();
        // port.go InitializeSession: "Unable to connect to specified port: <dial error>".
        format!("Unable to connect to specified port: dial tcp {dest}: {e}")
    }

    fn reader_pause(&self) -> Option<Duration> {
        match self.mode {
            // In mux mode the agent paces the pipe into the data channel instead (see `pump`).
            PortMode::Mux { .. } => None,
            _ => self.pacing.pause(),
        }
    }

    /// Takes `stream` as the basic/stdio connection; `pending` (a client message that waited
    /// for a re-dial) is written to it first.
    fn open_basic(&mut self, stream: TcpStream, pending: Option<(i64, Vec<u8>)>) {
        self.generation += 1;
        let chunk = self.pacing.chunk();
        // Paced, one read per message as the agent's (port_basic.go reads StreamDataPayloadSize
        // at a time, then sleeps); unpaced, read ahead (see UNPACED_READ_AHEAD).
        let read_size = match self.pacing {
            Pacing::Unpaced { .. } => UNPACED_READ_AHEAD,
            Pacing::Agent => chunk,
        };
        let conn = DestConn::spawn(
            stream,
            self.generation,
            self.queues.clone(),
            (chunk, read_size),
            self.reader_pause(),
        );
        if let Some((seq, payload)) = pending {
            conn.write(payload, Some(seq));
        }
        self.basic = Basic::Open(self.generation, conn);
    }

    fn spawn_basic_dial(&self, pending: Option<(i64, Vec<u8>)>) {
        let dest = self.destination();
        let done = self.queues.done.clone();
        tokio::spawn(async move {
            let res = dial(dest).await;
            let _ = done.send(DestEvent::BasicDialed(pending, res));
        });
    }

    /// Starts the plugin after HandshakeComplete has gone out (sessionplugin.go runs the
    /// plugin after the handshake): a forbidden remote host ends the session first (see
    /// `forbidden`); basic and stdio dial in the background (port.go
    /// InitializeSession; a failure ends the session), smux starts its one-at-a-time dialer.
    pub(crate) fn start(&mut self) -> Result<(), String> {
        if let Some(refusal) = self.forbidden() {
            return Err(refusal);
        }
        if self.mux.is_some() {
            self.destination()?;
            let (tx, mut rx) = mpsc::unbounded_channel::<u32>();
            let dest = self.destination();
            let done = self.queues.done.clone();
            // port_mux.go handleServerConnections: AcceptStream, then DialCall, in one loop.
            tokio::spawn(async move {
                while let Some(id) = rx.recv().await {
                    let res = dial(dest.clone()).await;
                    if done.send(DestEvent::Dialed(id, res)).is_err() {
                        return;
                    }
                }
            });
            self.dialer = Some(tx);
            return Ok(());
        }
        self.spawn_basic_dial(None);
        Ok(())
    }

    /// Whether the agent may take more destination data (smux output not piling up).
    pub(crate) fn accepting_dest(&self) -> bool {
        self.mux.as_ref().is_none_or(|m| m.pending_output() < MUX_OUTPUT_LIMIT)
    }

    /// Whether the handler takes client data now. The agent's handler answers
    /// ErrHandlerNotReady (no ack; the client retransmits) while no connection is available
    /// (port.go InputStreamMessageHandler); smux's reader stops while its streams hold
    /// `MUX_RECEIVE_BUFFER` bytes.
    pub(crate) fn ready(&self) -> bool {
        if self.mux.is_some() {
            let queued: usize = self
                .slots
                .values()
                .map(|s| s.conn.as_ref().map_or(0, DestConn::queued) + s.pending.iter().map(Vec::len).sum::<usize>())
                .sum();
            return queued < MUX_RECEIVE_BUFFER;
        }
        !matches!(self.basic, Basic::Dialing)
    }

    /// Client stream message `seq`.
    pub(crate) fn on_client(&mut self, now: Instant, seq: i64, payload_type: PayloadType, payload: Vec<u8>) -> Handled {
        match payload_type {
            PayloadType::Flag => match PortFlag::parse(&payload) {
                // Agents up to 2.3.722.0 do not know this flag (§5.5) and ignore it.
                Ok(PortFlag::TerminateSession)
                    if ssm_proto::version::compare(
                        &self.shared.config.agent_version,
                        ssm_proto::version::AGENT_TERMINATE_FLAG_AFTER,
                    ) == std::cmp::Ordering::Greater =>
                {
                    return Handled::End(String::new());
                }
                Ok(PortFlag::DisconnectToPort) if self.mux.is_none() => {
                    // port_basic.go: DisconnectToPort closes the connection. With
                    // LocalPortForwarding the failed read then arms a re-dial on the next
                    // data; in SSH mode (no type) the read error ends the session.
                    if self.mode == PortMode::Stdio {
                        return Handled::End(String::new());
                    }
                    self.basic = Basic::Reconnect;
                }
                _ => {}
            },
            PayloadType::Output => {
                if let Some(mux) = self.mux.as_mut() {
                    if let Err(e) = mux.handle_input(now, &payload) {
                        return Handled::End(format!("smux: {e}"));
                    }
                    self.drain_mux_events();
                    return Handled::Done(true);
                }
                match &self.basic {
                    Basic::Open(_, c) => {
                        c.write(payload, Some(seq));
                        return Handled::Pending;
                    }
                    // port_basic.go HandleStreamMessage: re-dial before writing; a failed
                    // re-dial fails the message and ends the session.
                    Basic::Reconnect => {
                        self.basic = Basic::Redialing;
                        self.spawn_basic_dial(Some((seq, payload)));
                        return Handled::Pending;
                    }
                    Basic::Dialing | Basic::Redialing => return Handled::Done(false),
                }
            }
            _ => {}
        }
        Handled::Done(true)
    }

    fn drain_mux_events(&mut self) {
        let Some(mux) = self.mux.as_mut() else { return };
        while let Some(ev) = mux.poll_event() {
            match ev {
                MuxEvent::Opened(id) => {
                    self.slots.insert(
                        id,
                        Slot {
                            conn: None,
                            pending: Vec::new(),
                        },
                    );
                    if let Some(dialer) = &self.dialer {
                        let _ = dialer.send(id);
                    }
                }
                MuxEvent::Data(id, data) => {
                    if let Some(slot) = self.slots.get_mut(&id) {
                        match &slot.conn {
                            Some(c) => c.write(data, None),
                            None => slot.pending.push(data),
                        }
                    }
                }
                MuxEvent::Closed(id) => {
                    // port_mux.go handleDataTransfer: the stream's EOF ends the copy to the
                    // destination, which closes the connection; the copy from it then fails
                    // and closes the stream, so the agent answers the client's FIN with its own.
                    if self.slots.remove(&id).is_some() {
                        mux.answer_fin(id);
                    }
                }
            }
        }
    }

    /// Destination events. Returns `Some(reason)` when the session must end.
    pub(crate) fn on_dest(&mut self, ev: DestEvent, channel: &mut Channel) -> Option<String> {
        let now = Instant::now();
        match ev {
            DestEvent::Data(id, data) => {
                if let Some(mux) = self.mux.as_mut() {
                    if mux.is_open(id) {
                        let _ = mux.write_bytes(id, data);
                    }
                } else if matches!(&self.basic, Basic::Open(g, _) if *g == id) {
                    let _ = channel.send(now, PayloadType::Output, data);
                }
            }
            DestEvent::Eof(id) => {
                if let Some(mux) = self.mux.as_mut() {
                    mux.close_stream(id);
                    self.slots.remove(&id);
                } else if matches!(&self.basic, Basic::Open(g, _) if *g == id) {
                    match self.mode {
                        // port_basic.go handlePortError: with LocalPortForwarding the agent
                        // re-dials on the next data.
                        PortMode::Basic => self.basic = Basic::Reconnect,
                        // handleSSHDPortError: in SSH mode the destination closing ends it.
                        _ => return Some(String::new()),
                    }
                }
            }
            DestEvent::Dialed(id, res) => {
                let chunk = MUX_COPY_BUFFER.max(self.pacing.chunk());
                let queues = self.queues.clone();
                let slot = self.slots.get_mut(&id)?;
                match res {
                    Ok(stream) => {
                        let conn = DestConn::spawn(stream, id, queues, (chunk, chunk), None);
                        for p in slot.pending.drain(..) {
                            conn.write(p, None);
                        }
                        slot.conn = Some(conn);
                    }
                    Err(e) => {
                        tracing::debug!("mux stream {id}: dial failed: {e}");
                        self.slots.remove(&id);
                        let _ = channel.send(now, PayloadType::Flag, PortFlag::ConnectToPortError.to_bytes());
                        if let Some(mux) = self.mux.as_mut() {
                            mux.close_stream(id);
                        }
                    }
                }
            }
            DestEvent::BasicDialed(..)
            | DestEvent::Written(..)
            | DestEvent::Exited(_)
            | DestEvent::CommandReaped
            | DestEvent::CommandExitCode(_)
            | DestEvent::CommandEnded => {}
        }
        None
    }

    /// A basic/stdio dial finished. For a re-dial, returns how the pending client message
    /// went; `Err(output)` ends the session.
    pub(crate) fn on_basic_dialed(
        &mut self,
        pending: Option<(i64, Vec<u8>)>,
        res: std::io::Result<TcpStream>,
    ) -> Result<(), String> {
        match res {
            Ok(stream) => {
                self.open_basic(stream, pending);
                Ok(())
            }
            Err(e) => Err(self.dial_failed(&e)),
        }
    }

    /// Moves smux output into the channel, one paced chunk per millisecond like the agent's
    /// pipe pump, or all that fits when unpaced.
    pub(crate) fn pump(&mut self, now: Instant, channel: &mut Channel) {
        let chunk = self.pacing.chunk();
        let pause = self.pacing.pause();
        let Some(mux) = self.mux.as_mut() else { return };
        while mux.pending_output() > 0 && channel.can_send() {
            if let Some(p) = pause {
                if self.pump_at.is_some_and(|t| now < t) {
                    return;
                }
                self.pump_at = Some(now + p);
            }
            // Framed straight from smux's output (Channel::send copies the payload into the
            // frame it encodes).
            if mux
                .poll_output_with(chunk, |bytes| channel.send(now, PayloadType::Output, bytes))
                .is_none()
            {
                break;
            }
            if pause.is_some() {
                return;
            }
        }
    }

    pub(crate) fn poll_timeout(&self) -> Option<Instant> {
        let mux = self.mux.as_ref()?;
        match (mux.poll_timeout(), self.pump_deadline()) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// When the paced pump may send its next chunk, while it has output waiting: the one
    /// deadline here that must end on time (see `PreciseTimer`).
    pub(crate) fn pump_deadline(&self) -> Option<Instant> {
        self.mux.as_ref().filter(|m| m.pending_output() > 0).and(self.pump_at)
    }

    pub(crate) fn on_timeout(&mut self, now: Instant) -> Option<String> {
        // smux's keepalive does not close the session while its receive budget is exhausted
        // (vendored smux session.go keepalive: the close needs `bucket > 0`): the client's
        // frames are then waiting on us, not missing.
        let blocked = self.mux.is_some() && !self.ready();
        let mux = self.mux.as_mut()?;
        if blocked {
            mux.input_waiting(now);
        }
        match mux.handle_timeout(now) {
            Ok(()) => None,
            Err(e) => Some(format!("smux: {e}")),
        }
    }

    pub(crate) fn shutdown(&mut self) {
        self.basic = Basic::Reconnect;
        self.dialer = None;
        self.slots.clear();
    }
}
