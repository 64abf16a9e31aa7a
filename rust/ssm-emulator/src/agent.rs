//! One emulated agent per session: the agent's reliable channel (§4.4, §4.5), the handshake
//! (§5, §11.3), the session plugin, and the MGS-side faults on the socket (§11.4).

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::extract::ws::{Message, WebSocket};
use futures_util::{SinkExt, StreamExt};
use ssm_proto::handshake::{HandshakeComplete, HandshakeRequest, HandshakeResponse};
use ssm_proto::{Channel, ChannelClosed, Event, MessageType, PayloadType, SessionType};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::sleep_until;

use crate::faults::{self, DirectionFaults, Verdict};
use crate::port::{DestEvent, PortPlugin};
use crate::shell::ShellPlugin;
use crate::state::{Counters, SessionSpec, Shared};

/// Commands from the API side to a session's agent.
pub(crate) enum AgentCommand {
    /// A client connected with a valid token.
    Attach(Box<Connection>),
    /// `TerminateSession` was called.
    Terminate,
}

/// An accepted data-channel WebSocket.
pub(crate) struct Connection {
    pub(crate) socket: WebSocket,
    pub(crate) client_version: String,
}

/// How long the agent waits for the handshake response (§5.3).
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(15);
/// How long the agent waits for its output to be acked before closing (§4.9, §6.6).
const CLOSE_DRAIN: Duration = Duration::from_secs(2);

enum LinkOut {
    Frame(Vec<u8>),
    Cut,
    Close,
}

enum Inbound {
    Frame(u64, Vec<u8>),
    Closed(u64),
}

struct Link {
    id: u64,
    out: mpsc::UnboundedSender<LinkOut>,
    frames_sent: u64,
}

/// Delays, duplicates and reorders frames of one direction (§11.4).
struct Shaper {
    heap: BinaryHeap<Reverse<(tokio::time::Instant, u64, Vec<u8>)>>,
    counter: u64,
    held: Option<Vec<u8>>,
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
    fn push(&mut self, shared: &Shared, f: &DirectionFaults, frame: Vec<u8>) -> Vec<Vec<u8>> {
        let verdict = faults::decide(f, &mut rand::rng());
        let now = tokio::time::Instant::now();
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

    fn pop_due(&mut self, now: tokio::time::Instant) -> Vec<Vec<u8>> {
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

    fn next_due(&self) -> Option<tokio::time::Instant> {
        self.heap.peek().map(|Reverse((at, _, _))| *at)
    }

    fn drain_all(&mut self) -> Vec<Vec<u8>> {
        let mut out: Vec<Vec<u8>> = std::iter::from_fn(|| self.heap.pop().map(|Reverse((_, _, b))| b)).collect();
        out.extend(self.held.take());
        out
    }
}

/// How long a socket is still read after its agent has finished.
const CLOSE_LINGER: Duration = Duration::from_secs(5);

/// The agent has finished: keep reading (and discarding) until the client closes its side or
/// `CLOSE_LINGER` passes. Dropping the socket with unread frames in its receive buffer makes the
/// kernel reset the connection, and a reset destroys what is still in flight to the client:
/// acks, `channel_closed` and the close frame.
async fn linger(stream: &mut futures_util::stream::SplitStream<WebSocket>) {
    let _ = tokio::time::timeout(CLOSE_LINGER, async { while let Some(Ok(_)) = stream.next().await {} }).await;
}

fn spawn_link(shared: Arc<Shared>, socket: WebSocket, id: u64, inbound: mpsc::UnboundedSender<Inbound>) -> Link {
    let (mut sink, mut stream) = socket.split();
    let (out_tx, mut out_rx) = mpsc::unbounded_channel::<LinkOut>();
    let reader_shared = shared.clone();
    let reader: JoinHandle<()> = tokio::spawn(async move {
        let mut shaper = Shaper::new();
        loop {
            let due = shaper.next_due();
            tokio::select! {
                msg = stream.next() => {
                    let bytes = match msg {
                        Some(Ok(Message::Binary(b))) => b.to_vec(),
                        // §2.3: text frames are parsed as binary messages too.
                        Some(Ok(Message::Text(t))) => t.as_bytes().to_vec(),
                        Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
                        Some(Ok(Message::Close(_))) | Some(Err(_)) | None => break,
                    };
                    let f = reader_shared.faults().to_agent;
                    for frame in shaper.push(&reader_shared, &f, bytes) {
                        if inbound.send(Inbound::Frame(id, frame)).is_err() {
                            linger(&mut stream).await;
                            return;
                        }
                    }
                }
                _ = sleep_until(due.unwrap_or_else(tokio::time::Instant::now)), if due.is_some() => {
                    for frame in shaper.pop_due(tokio::time::Instant::now()) {
                        if inbound.send(Inbound::Frame(id, frame)).is_err() {
                            linger(&mut stream).await;
                            return;
                        }
                    }
                }
            }
        }
        for frame in shaper.drain_all() {
            let _ = inbound.send(Inbound::Frame(id, frame));
        }
        let _ = inbound.send(Inbound::Closed(id));
    });
    tokio::spawn(async move {
        let mut shaper = Shaper::new();
        loop {
            let due = shaper.next_due();
            tokio::select! {
                cmd = out_rx.recv() => match cmd {
                    Some(LinkOut::Frame(bytes)) => {
                        let f = shared.faults().to_client;
                        for frame in shaper.push(&shared, &f, bytes) {
                            if sink.send(Message::Binary(frame.into())).await.is_err() {
                                reader.abort();
                                return;
                            }
                        }
                    }
                    Some(LinkOut::Cut) => {
                        // Abrupt: no close frame; dropping both halves closes the TCP connection.
                        Counters::add(&shared.counters.sockets_cut, 1);
                        reader.abort();
                        return;
                    }
                    Some(LinkOut::Close) | None => {
                        for frame in shaper.drain_all() {
                            let _ = sink.send(Message::Binary(frame.into())).await;
                        }
                        let _ = sink.send(Message::Close(None)).await;
                        let _ = tokio::time::timeout(Duration::from_secs(2), reader).await;
                        return;
                    }
                },
                _ = sleep_until(due.unwrap_or_else(tokio::time::Instant::now)), if due.is_some() => {
                    for frame in shaper.pop_due(tokio::time::Instant::now()) {
                        if sink.send(Message::Binary(frame.into())).await.is_err() {
                            reader.abort();
                            return;
                        }
                    }
                }
            }
        }
    });
    Link {
        id,
        out: out_tx,
        frames_sent: 0,
    }
}

enum Stage {
    /// No client has connected yet.
    Idle,
    /// HandshakeRequest sent; waiting for the response.
    Handshake { deadline: Instant },
    /// The session plugin runs.
    Running,
    /// Draining output before `channel_closed`.
    Closing { deadline: Instant, output: String },
}

struct Agent {
    shared: Arc<Shared>,
    spec: Arc<SessionSpec>,
    channel: Channel,
    link: Option<Link>,
    next_link_id: u64,
    link_lost_at: Option<Instant>,
    cuts: u64,
    frames_to_client: u64,
    pause_until: Option<Instant>,
    pause_done: bool,
    inbound_tx: mpsc::UnboundedSender<Inbound>,
    stage: Stage,
    session_type: SessionType,
    properties: serde_json::Value,
    port: Option<PortPlugin>,
    shell: Option<ShellPlugin>,
    dest_tx: mpsc::Sender<DestEvent>,
    reported_retransmissions: u64,
    finished: bool,
}

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(1)
}

/// Session type and handshake properties for a document (§1.2).
fn document_session(spec: &SessionSpec) -> (SessionType, serde_json::Value) {
    let param = |name: &str, default: &str| -> String {
        spec.parameters
            .get(name)
            .and_then(|v| v.first())
            .cloned()
            .unwrap_or_else(|| default.to_owned())
    };
    match spec.document.as_str() {
        "AWS-StartPortForwardingSession" => (
            SessionType::Port,
            serde_json::json!({
                "portNumber": param("portNumber", "80"),
                "type": "LocalPortForwarding",
                "localPortNumber": param("localPortNumber", "0"),
            }),
        ),
        "AWS-StartPortForwardingSessionToRemoteHost" => (
            SessionType::Port,
            serde_json::json!({
                "portNumber": param("portNumber", "80"),
                "type": "LocalPortForwarding",
                "localPortNumber": param("localPortNumber", "0"),
                "host": param("host", ""),
            }),
        ),
        "AWS-StartSSHSession" => (
            SessionType::Port,
            serde_json::json!({ "portNumber": param("portNumber", "22") }),
        ),
        "AWS-StartInteractiveCommand" => (
            SessionType::InteractiveCommands,
            serde_json::json!({ "commands": param("command", "") }),
        ),
        _ => (SessionType::StandardStream, serde_json::Value::Null),
    }
}

fn agent_channel_config(config: &crate::Config) -> ssm_proto::Config {
    let mut c = ssm_proto::Config::agent();
    if config.agent_retransmit == crate::AgentRetransmit::PerMessage {
        c.retransmit = ssm_proto::RetransmitPolicy::PerMessage;
    }
    c
}

pub(crate) async fn run(
    shared: Arc<Shared>,
    spec: Arc<SessionSpec>,
    mut commands: mpsc::UnboundedReceiver<AgentCommand>,
) {
    let (inbound_tx, mut inbound_rx) = mpsc::unbounded_channel();
    let (dest_tx, mut dest_rx) = mpsc::channel(64);
    let now = Instant::now();
    let seed = rand::random::<u64>();
    let (session_type, properties) = document_session(&spec);
    let mut agent = Agent {
        channel: Channel::new(agent_channel_config(&shared.config), now, unix_ms(), seed),
        shared: shared.clone(),
        spec: spec.clone(),
        link: None,
        next_link_id: 0,
        link_lost_at: None,
        cuts: 0,
        frames_to_client: 0,
        pause_until: None,
        pause_done: false,
        inbound_tx,
        stage: Stage::Idle,
        session_type,
        properties,
        port: None,
        shell: None,
        dest_tx,
        reported_retransmissions: 0,
        finished: false,
    };
    let grace = Duration::from_millis(shared.config.reconnect_grace_ms);
    while !agent.finished {
        let wake = agent.next_wake(grace);
        let can_take_dest = agent.channel.can_send()
            && !agent.channel.is_paused()
            && agent.pause_until.is_none()
            && agent.port.as_ref().is_none_or(PortPlugin::accepting_dest);
        tokio::select! {
            cmd = commands.recv() => match cmd {
                Some(AgentCommand::Attach(conn)) => agent.attach(*conn).await,
                Some(AgentCommand::Terminate) | None => agent.begin_close(String::new()),
            },
            Some(msg) = inbound_rx.recv() => match msg {
                Inbound::Frame(id, bytes) => agent.on_frame(id, &bytes).await,
                Inbound::Closed(id) => agent.on_link_closed(id),
            },
            Some(ev) = dest_rx.recv(), if can_take_dest => agent.on_dest(ev).await,
            _ = sleep_until(tokio::time::Instant::from_std(wake.unwrap_or_else(Instant::now))), if wake.is_some() => {
                agent.on_timer(grace).await;
            }
        }
        agent.pump();
        agent.flush();
    }
    if let Some(link) = agent.link.take() {
        let _ = link.out.send(LinkOut::Close);
    }
    if let Some(port) = agent.port.as_mut() {
        port.shutdown();
    }
    agent.report_stats();
    shared.mark_ended(&spec.session_id);
}

impl Agent {
    fn next_wake(&mut self, grace: Duration) -> Option<Instant> {
        let mut wake = self.channel.poll_timeout();
        let mut consider = |t: Option<Instant>| {
            if let Some(t) = t {
                wake = Some(wake.map_or(t, |w| w.min(t)));
            }
        };
        consider(self.pause_until);
        consider(self.link_lost_at.map(|t| t + grace));
        match &self.stage {
            Stage::Handshake { deadline } => consider(Some(*deadline)),
            Stage::Closing { deadline, .. } => consider(Some(*deadline)),
            _ => {}
        }
        if let Some(port) = &self.port {
            consider(port.poll_timeout());
        }
        wake
    }

    async fn attach(&mut self, conn: Connection) {
        let now = Instant::now();
        if let Some(old) = self.link.take() {
            let _ = old.out.send(LinkOut::Close);
        }
        self.next_link_id += 1;
        self.link = Some(spawn_link(
            self.shared.clone(),
            conn.socket,
            self.next_link_id,
            self.inbound_tx.clone(),
        ));
        self.link_lost_at = None;
        if !conn.client_version.is_empty() {
            let v = conn.client_version.clone();
            self.shared.update_info(&self.spec.session_id, |i| i.client_version = v);
        }
        match self.stage {
            Stage::Idle => self.start(now, &conn.client_version).await,
            // §11.2 step 2: keep all sequence state; MGS redelivers what the old socket lost.
            _ => self.channel.reset_transport(now),
        }
    }

    async fn start(&mut self, now: Instant, open_client_version: &str) {
        match self.session_type {
            SessionType::Port => {
                let req = HandshakeRequest::new(
                    &self.shared.config.agent_version,
                    &SessionType::Port,
                    self.properties.clone(),
                );
                let _ = self.channel.send(now, PayloadType::HandshakeRequest, req.to_json());
                self.stage = Stage::Handshake {
                    deadline: now + HANDSHAKE_TIMEOUT,
                };
            }
            _ => {
                let _ = open_client_version;
                // §5.1, §6.1: no handshake; the first output tells the client it is a shell.
                let command = self
                    .properties
                    .get("commands")
                    .and_then(|c| c.as_str())
                    .map(str::to_owned);
                match ShellPlugin::start(&self.shared, command.as_deref(), self.dest_tx.clone()) {
                    Ok(shell) => {
                        self.shell = Some(shell);
                        self.stage = Stage::Running;
                    }
                    Err(e) => {
                        self.stage = Stage::Running;
                        self.begin_close(e);
                    }
                }
            }
        }
    }

    async fn on_frame(&mut self, link_id: u64, bytes: &[u8]) {
        if self.link.as_ref().map(|l| l.id) != Some(link_id) {
            return; // late frame from a replaced socket
        }
        let now = Instant::now();
        if self.pause_until.is_some() {
            // Observed MGS behaviour while paused (§4.7): client stream data is answered with
            // another pause and goes nowhere; acks still reach the agent.
            if let Ok(frame) = ssm_proto::Frame::decode(bytes)
                && frame.message_type.is_stream_data()
            {
                self.control_now(now, MessageType::PausePublication);
                return;
            }
        }
        let ready = self.port.as_ref().is_none_or(|p| p.ready());
        self.channel.set_receive_ready(ready);
        if let Err(e) = self.channel.handle_frame(now, bytes) {
            tracing::debug!(session = %self.spec.session_id, "dropped frame: {e}");
        }
        while let Some(ev) = self.channel.poll_event() {
            self.on_event(now, ev).await;
        }
    }

    async fn on_event(&mut self, now: Instant, ev: Event) {
        let Event::Stream {
            payload_type, payload, ..
        } = ev
        else {
            return;
        };
        match (&self.stage, payload_type) {
            (Stage::Handshake { .. }, PayloadType::HandshakeResponse) => {
                self.on_handshake_response(now, &payload).await
            }
            // §4.4: anything else before the handshake completes is consumed and acked.
            (Stage::Handshake { .. } | Stage::Idle, _) => {}
            (Stage::Running, PayloadType::Size) => {
                if let Ok(size) = ssm_proto::TerminalSize::parse(&payload) {
                    self.shared.update_info(&self.spec.session_id, |i| {
                        i.terminal_size = Some((size.cols, size.rows))
                    });
                    if let Some(shell) = &self.shell {
                        shell.resize(size.cols, size.rows);
                    }
                }
            }
            (Stage::Running, PayloadType::Output) if self.shell.is_some() => {
                if let Some(shell) = &self.shell {
                    shell.write(payload);
                }
            }
            (Stage::Running, _) => {
                if let Some(port) = self.port.as_mut()
                    && let Some(reason) = port.on_client(now, payload_type, payload).await
                {
                    self.begin_close(reason);
                }
            }
            (Stage::Closing { .. }, _) => {}
        }
    }

    async fn on_handshake_response(&mut self, now: Instant, payload: &[u8]) {
        let resp = match HandshakeResponse::parse(payload) {
            Ok(r) => r,
            Err(e) => {
                self.begin_close(format!("Handshake failed: {e}"));
                return;
            }
        };
        if let Err(e) = resp.check() {
            self.begin_close(format!("{e}"));
            return;
        }
        let started = match &self.stage {
            Stage::Handshake { deadline } => *deadline - HANDSHAKE_TIMEOUT,
            _ => now,
        };
        let complete = HandshakeComplete {
            handshake_time_to_complete: i64::try_from(now.saturating_duration_since(started).as_nanos())
                .unwrap_or(i64::MAX),
            customer_message: String::new(),
        };
        let _ = self
            .channel
            .send(now, PayloadType::HandshakeComplete, complete.to_json());
        let client_version = resp.client_version.clone();
        self.shared
            .update_info(&self.spec.session_id, |i| i.client_version = client_version.clone());
        let props: ssm_proto::PortProperties = serde_json::from_value(self.properties.clone()).unwrap_or_default();
        let mode = ssm_proto::PortMode::for_agent(props.kind.as_deref(), &client_version);
        self.shared
            .update_info(&self.spec.session_id, |i| i.port_mode = format!("{mode:?}"));
        let mut plugin = PortPlugin::new(
            self.shared.clone(),
            &self.spec.target,
            mode,
            props,
            self.dest_tx.clone(),
            now,
        );
        match plugin.start().await {
            Ok(()) => {
                self.port = Some(plugin);
                self.stage = Stage::Running;
            }
            Err(reason) => {
                self.stage = Stage::Running;
                self.begin_close(reason);
            }
        }
    }

    async fn on_dest(&mut self, ev: DestEvent) {
        let now = Instant::now();
        if self.shell.is_some() {
            match ev {
                DestEvent::Data(_, data) => {
                    let _ = self.channel.send(now, PayloadType::Output, data);
                }
                DestEvent::Exited(code) => {
                    if self.shared.config.shell_exit_code {
                        let _ =
                            self.channel
                                .send(now, PayloadType::ExitCode, format!("EXIT_CODE: {code}").into_bytes());
                    }
                    self.begin_close(String::new());
                }
                _ => {}
            }
            return;
        }
        if let Some(port) = self.port.as_mut()
            && let Some(reason) = port.on_dest(now, ev, &mut self.channel).await
        {
            self.begin_close(reason);
        }
    }

    async fn on_timer(&mut self, grace: Duration) {
        let now = Instant::now();
        self.channel.handle_timeout(now);
        if let Some(until) = self.pause_until
            && now >= until
        {
            self.pause_until = None;
            // Ahead of the output held during the pause, which the next flush sends.
            self.control_now(now, MessageType::StartPublication);
        }
        if let Some(lost) = self.link_lost_at
            && now >= lost + grace
        {
            tracing::info!(session = %self.spec.session_id, "client did not come back; ending session");
            self.finished = true;
        }
        match &self.stage {
            Stage::Handshake { deadline } if now >= *deadline => {
                self.begin_close(
                    "Handshake timed out. Please ensure that you have the latest version of the session manager plugin."
                        .into(),
                );
            }
            Stage::Closing { deadline, .. } if now >= *deadline => self.finish_close(now),
            _ => {}
        }
        if let Some(port) = self.port.as_mut()
            && let Some(reason) = port.on_timeout(now)
        {
            self.begin_close(reason);
        }
    }

    fn on_link_closed(&mut self, id: u64) {
        if self.link.as_ref().map(|l| l.id) == Some(id) {
            self.link = None;
            self.link_lost_at = Some(Instant::now());
        }
    }

    fn begin_close(&mut self, output: String) {
        if matches!(self.stage, Stage::Closing { .. }) {
            return;
        }
        if let Some(port) = self.port.as_mut() {
            port.shutdown();
        }
        self.shell = None;
        self.stage = Stage::Closing {
            deadline: Instant::now() + CLOSE_DRAIN,
            output,
        };
        if self.channel.unacked() == 0 {
            self.finish_close(Instant::now());
        }
    }

    fn finish_close(&mut self, now: Instant) {
        let output = match &self.stage {
            Stage::Closing { output, .. } => output.clone(),
            _ => String::new(),
        };
        let id = self.channel.new_message_id().to_string();
        let closed = ChannelClosed {
            message_id: id,
            created_date: self.channel.unix_ms(now).to_string(),
            destination_id: self.spec.target.clone(),
            session_id: self.spec.session_id.clone(),
            message_type: "channel_closed".into(),
            schema_version: 1,
            output,
        };
        self.channel
            .send_control(now, MessageType::ChannelClosed, closed.to_json());
        self.channel.close();
        // A pause in progress must not hold back `channel_closed`.
        self.pause_until = None;
        self.flush();
        self.finished = true;
    }

    /// Moves output the plugin produced into the channel.
    fn pump(&mut self) {
        let now = Instant::now();
        if let Some(port) = self.port.as_mut() {
            port.pump(now, &mut self.channel);
        }
        if matches!(self.stage, Stage::Closing { .. }) && self.channel.unacked() == 0 && !self.finished {
            self.finish_close(now);
        }
    }

    /// Writes queued frames to the socket, applying the per-frame faults.
    fn flush(&mut self) {
        let now = Instant::now();
        let faults = self.shared.faults();
        // While publication is paused (§4.7) every frame waits in the channel, acks included.
        while self.pause_until.is_none()
            && let Some(mut frame) = self.channel.poll_transmit()
        {
            let Some(link) = self.link.as_mut() else {
                continue;
            };
            let is_ack = frame.get(4..15) == Some(b"acknowledge".as_slice());
            if is_ack && faults.withhold_acks > 0.0 && rand::random_bool(faults.withhold_acks.clamp(0.0, 1.0)) {
                continue;
            }
            if frame.get(4..18) == Some(b"channel_closed".as_slice()) && faults.short_channel_closed {
                frame = faults::shorten_header(&frame);
            }
            if faults.nul_padded_types {
                faults::nul_pad_type(&mut frame);
            }
            if faults.corrupt_digest > 0.0 && !is_ack && rand::random_bool(faults.corrupt_digest.clamp(0.0, 1.0)) {
                faults::corrupt_digest(&mut frame);
            }
            if link.out.send(LinkOut::Frame(frame)).is_err() {
                continue;
            }
            link.frames_sent += 1;
            self.frames_to_client += 1;
            if let Some(n) = faults.cut_after_frames
                && link.frames_sent >= n
                && self.cuts < faults.max_cuts.unwrap_or(1)
            {
                self.cuts += 1;
                let _ = link.out.send(LinkOut::Cut);
                self.link = None;
                self.link_lost_at = Some(now);
                continue;
            }
            if let Some(n) = faults.pause_after_frames
                && !self.pause_done
                && self.frames_to_client >= n
            {
                self.pause_done = true;
                self.pause_until = Some(now + Duration::from_millis(faults.pause_ms));
                Counters::add(&self.shared.counters.publication_pauses, 1);
                self.control_now(now, MessageType::PausePublication);
            }
        }
        self.report_stats();
    }

    /// Sends an unnumbered publication message at once, ahead of anything the channel holds.
    fn control_now(&mut self, now: Instant, message_type: MessageType) {
        let frame = ssm_proto::Frame {
            message_type,
            schema_version: 1,
            created_date: self.channel.unix_ms(now),
            sequence_number: 0,
            flags: 0,
            message_id: self.channel.new_message_id(),
            payload_type: PayloadType::Null,
            payload: Vec::new(),
        };
        if let Some(link) = &self.link {
            let _ = link.out.send(LinkOut::Frame(frame.encode()));
        }
    }

    fn report_stats(&mut self) {
        let r = self.channel.stats().retransmissions;
        if r > self.reported_retransmissions {
            Counters::add(
                &self.shared.counters.agent_retransmissions,
                r - self.reported_retransmissions,
            );
            self.reported_retransmissions = r;
        }
    }
}
