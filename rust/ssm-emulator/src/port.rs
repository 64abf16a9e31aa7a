//! The agent's `Port` plugin (§7): basic mode, smux mode, and the stdio mode of
//! `AWS-StartSSHSession`, dialling real TCP destinations.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use ssm_proto::smux::{Mux, MuxEvent, Side};
use ssm_proto::{Channel, PayloadType, PortFlag, PortMode, PortProperties};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::config::Pacing;
use crate::state::Shared;

/// Bytes queued towards one destination before the agent stops acking client data (§4.4
/// "handler not ready"), so a slow destination pushes back on the client.
const DEST_QUEUE_LIMIT: usize = 4 << 20;
/// smux output waiting for the data channel before destination reads pause.
const MUX_OUTPUT_LIMIT: usize = 256 << 10;
const DIAL_TIMEOUT: Duration = Duration::from_secs(5);

/// What destination tasks report to the agent.
pub(crate) enum DestEvent {
    /// Bytes read from destination `id`.
    Data(u32, Vec<u8>),
    /// Destination `id` reached EOF or failed.
    Eof(u32),
    /// Dial for smux stream `id` finished.
    Dialed(u32, std::io::Result<TcpStream>),
    /// The shell program exited with this code.
    Exited(i32),
}

struct DestConn {
    tx: mpsc::UnboundedSender<Vec<u8>>,
    queued: Arc<AtomicUsize>,
    reader: JoinHandle<()>,
}

impl DestConn {
    fn spawn(
        stream: TcpStream,
        id: u32,
        events: mpsc::Sender<DestEvent>,
        chunk: usize,
        pause: Option<Duration>,
    ) -> Self {
        let _ = stream.set_nodelay(true);
        let (mut rd, mut wr) = stream.into_split();
        let (tx, mut rx) = mpsc::unbounded_channel::<Vec<u8>>();
        let queued = Arc::new(AtomicUsize::new(0));
        let q = queued.clone();
        tokio::spawn(async move {
            while let Some(buf) = rx.recv().await {
                let res = wr.write_all(&buf).await;
                q.fetch_sub(buf.len(), Ordering::Relaxed);
                if res.is_err() {
                    return;
                }
            }
            let _ = wr.shutdown().await;
        });
        let reader = tokio::spawn(async move {
            let mut buf = vec![0u8; chunk];
            loop {
                match rd.read(&mut buf).await {
                    Ok(0) | Err(_) => {
                        let _ = events.send(DestEvent::Eof(id)).await;
                        return;
                    }
                    Ok(n) => {
                        let data = buf.get(..n).unwrap_or_default().to_vec();
                        if events.send(DestEvent::Data(id, data)).await.is_err() {
                            return;
                        }
                    }
                }
                if let Some(p) = pause {
                    tokio::time::sleep(p).await;
                }
            }
        });
        Self { tx, queued, reader }
    }

    fn write(&self, data: Vec<u8>) {
        self.queued.fetch_add(data.len(), Ordering::Relaxed);
        let _ = self.tx.send(data);
    }

    fn is_ready(&self) -> bool {
        self.queued.load(Ordering::Relaxed) < DEST_QUEUE_LIMIT
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

pub(crate) struct PortPlugin {
    shared: Arc<Shared>,
    target: String,
    mode: PortMode,
    props: PortProperties,
    events: mpsc::Sender<DestEvent>,
    pacing: Pacing,
    conn: Option<(u32, DestConn)>,
    generation: u32,
    reconnect: bool,
    mux: Option<Mux>,
    slots: HashMap<u32, Slot>,
    pump_at: Option<Instant>,
}

impl PortPlugin {
    pub(crate) fn new(
        shared: Arc<Shared>,
        target: &str,
        mode: PortMode,
        props: PortProperties,
        events: mpsc::Sender<DestEvent>,
        now: Instant,
    ) -> Self {
        let mux = match mode {
            PortMode::Mux { keepalive } => Some(Mux::new(Side::Server, keepalive, now)),
            _ => None,
        };
        let pacing = shared.config.pacing;
        Self {
            shared,
            target: target.to_owned(),
            mode,
            props,
            events,
            pacing,
            conn: None,
            generation: 0,
            reconnect: false,
            mux,
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
        // The agent refuses instance metadata as a remote host (§1.2).
        if let Ok(ip) = host.parse::<IpAddr>() {
            let denied: [IpAddr; 2] = [
                [169, 254, 169, 254].into(),
                [0xfd00, 0xec2, 0, 0, 0, 0, 0, 0x254].into(),
            ];
            if denied.contains(&ip) {
                return Err(format!("host {host} is not allowed"));
            }
        }
        Ok((host, port))
    }

    async fn dial(&self) -> Result<TcpStream, String> {
        let (host, port) = self.destination()?;
        match tokio::time::timeout(DIAL_TIMEOUT, TcpStream::connect((host.as_str(), port))).await {
            Ok(Ok(s)) => Ok(s),
            Ok(Err(e)) => Err(format!(
                "Unable to start the port session: connect to {host}:{port}: {e}"
            )),
            Err(_) => Err(format!(
                "Unable to start the port session: connect to {host}:{port} timed out"
            )),
        }
    }

    fn reader_pause(&self) -> Option<Duration> {
        match self.mode {
            // In mux mode the agent paces the pipe into the data channel instead (see `pump`).
            PortMode::Mux { .. } => None,
            _ => self.pacing.pause(),
        }
    }

    fn open_basic(&mut self, stream: TcpStream) {
        self.generation += 1;
        let id = self.generation;
        let conn = DestConn::spawn(
            stream,
            id,
            self.events.clone(),
            self.pacing.chunk(),
            self.reader_pause(),
        );
        self.conn = Some((id, conn));
        self.reconnect = false;
    }

    /// Basic and stdio modes dial at session start (§7.3); smux waits for streams.
    pub(crate) async fn start(&mut self) -> Result<(), String> {
        if self.mux.is_some() {
            self.destination()?;
            return Ok(());
        }
        let stream = self.dial().await?;
        self.open_basic(stream);
        Ok(())
    }

    /// Whether the agent may take more destination data (smux output not piling up).
    pub(crate) fn accepting_dest(&self) -> bool {
        self.mux.as_ref().is_none_or(|m| m.pending_output() < MUX_OUTPUT_LIMIT)
    }

    pub(crate) fn ready(&self) -> bool {
        self.conn.as_ref().is_none_or(|(_, c)| c.is_ready())
            && self
                .slots
                .values()
                .all(|s| s.conn.as_ref().is_none_or(DestConn::is_ready))
    }

    /// Client stream data. Returns `Some(reason)` when the session must end.
    pub(crate) async fn on_client(
        &mut self,
        now: Instant,
        payload_type: PayloadType,
        payload: Vec<u8>,
    ) -> Option<String> {
        match payload_type {
            PayloadType::Flag => match PortFlag::parse(&payload) {
                Ok(PortFlag::TerminateSession) => return Some(String::new()),
                Ok(PortFlag::DisconnectToPort) if self.mux.is_none() => {
                    self.conn = None;
                    self.reconnect = true;
                }
                _ => {}
            },
            PayloadType::Output => {
                if let Some(mux) = self.mux.as_mut() {
                    if let Err(e) = mux.handle_input(now, &payload) {
                        return Some(format!("smux: {e}"));
                    }
                    self.drain_mux_events();
                } else {
                    if self.conn.is_none() {
                        match self.dial().await {
                            Ok(s) => self.open_basic(s),
                            Err(e) => {
                                tracing::warn!("{e}");
                                return None;
                            }
                        }
                    }
                    if let Some((_, c)) = &self.conn {
                        c.write(payload);
                    }
                }
            }
            _ => {}
        }
        None
    }

    fn drain_mux_events(&mut self) {
        let dest = self.destination();
        let Some(mux) = self.mux.as_mut() else { return };
        while let Some(ev) = mux.poll_event() {
            match ev {
                MuxEvent::Opened(id) => {
                    let dest = dest.clone();
                    self.slots.insert(
                        id,
                        Slot {
                            conn: None,
                            pending: Vec::new(),
                        },
                    );
                    let events = self.events.clone();
                    tokio::spawn(async move {
                        let res = match dest {
                            Ok((host, port)) => {
                                match tokio::time::timeout(DIAL_TIMEOUT, TcpStream::connect((host.as_str(), port)))
                                    .await
                                {
                                    Ok(r) => r,
                                    Err(_) => Err(std::io::Error::new(std::io::ErrorKind::TimedOut, "dial timed out")),
                                }
                            }
                            Err(e) => Err(std::io::Error::other(e)),
                        };
                        let _ = events.send(DestEvent::Dialed(id, res)).await;
                    });
                }
                MuxEvent::Data(id, data) => {
                    if let Some(slot) = self.slots.get_mut(&id) {
                        match &slot.conn {
                            Some(c) => c.write(data),
                            None => slot.pending.push(data),
                        }
                    }
                }
                MuxEvent::Closed(id) => {
                    self.slots.remove(&id);
                }
            }
        }
    }

    /// Destination events. Returns `Some(reason)` when the session must end.
    pub(crate) async fn on_dest(&mut self, _now: Instant, ev: DestEvent, channel: &mut Channel) -> Option<String> {
        let now = Instant::now();
        match ev {
            DestEvent::Data(id, data) => {
                if let Some(mux) = self.mux.as_mut() {
                    if mux.is_open(id) {
                        let _ = mux.write(id, &data);
                    }
                } else if self.conn.as_ref().is_some_and(|(g, _)| *g == id) {
                    let _ = channel.send(now, PayloadType::Output, data);
                }
            }
            DestEvent::Eof(id) => {
                if let Some(mux) = self.mux.as_mut() {
                    mux.close_stream(id);
                    self.slots.remove(&id);
                } else if self.conn.as_ref().is_some_and(|(g, _)| *g == id) {
                    self.conn = None;
                    match self.mode {
                        // §7.3: with LocalPortForwarding the agent re-dials on the next data.
                        PortMode::Basic => self.reconnect = true,
                        // SSH: the destination closing ends the session.
                        _ => return Some(String::new()),
                    }
                }
            }
            DestEvent::Exited(_) => {}
            DestEvent::Dialed(id, res) => {
                let chunk = self.pacing.chunk();
                let pause = self.reader_pause();
                let slot = self.slots.get_mut(&id)?;
                match res {
                    Ok(stream) => {
                        let conn = DestConn::spawn(stream, id, self.events.clone(), chunk, pause);
                        for p in slot.pending.drain(..) {
                            conn.write(p);
                        }
                        slot.conn = Some(conn);
                    }
                    Err(e) => {
                        tracing::debug!("mux stream {id}: dial failed: {e}");
                        self.slots.remove(&id);
                        let _ = channel.send(now, PayloadType::Flag, PortFlag::ConnectToPortError.to_bytes().to_vec());
                        if let Some(mux) = self.mux.as_mut() {
                            mux.close_stream(id);
                        }
                    }
                }
            }
        }
        None
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
            let Some(bytes) = mux.poll_output(chunk) else {
                break;
            };
            let _ = channel.send(now, PayloadType::Output, bytes);
            if pause.is_some() {
                return;
            }
        }
    }

    pub(crate) fn poll_timeout(&self) -> Option<Instant> {
        let mux = self.mux.as_ref()?;
        let pump = if mux.pending_output() > 0 { self.pump_at } else { None };
        match (mux.poll_timeout(), pump) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    pub(crate) fn on_timeout(&mut self, now: Instant) -> Option<String> {
        let mux = self.mux.as_mut()?;
        match mux.handle_timeout(now) {
            Ok(()) => None,
            Err(e) => Some(format!("smux: {e}")),
        }
    }

    pub(crate) fn shutdown(&mut self) {
        self.conn = None;
        self.slots.clear();
    }
}
