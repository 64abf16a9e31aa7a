//! One emulated agent per session, started by its first connection: the agent's reliable
//! channel (§4.4, §4.5), the handshake (§5, §11.3) and the session plugin, with the frame faults,
//! publication pauses and socket cuts of MGS applied to what it writes (§4.7, §11.4).

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use ssm_proto::handshake::{HandshakeComplete, HandshakeRequest, HandshakeResponse};
use ssm_proto::{Channel, ChannelClosed, Event, MessageType, PayloadType, SessionType};
use tokio::sync::mpsc;
use tokio::time::sleep_until;

use crate::config::{AgentRetransmit, Config};
use crate::faults::{self, Interrupt, Interruptions};
use crate::link::{self, Inbound, Link};
use crate::port::{DestEvent, PortPlugin};
use crate::shell::ShellPlugin;
use crate::state::{AgentCommand, Connection, Counters, SessionSpec, Shared};

/// How long the agent waits for the handshake response (§5.3).
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(15);
/// How long the agent waits for its output to be acked before closing (§4.9, §6.6).
const CLOSE_DRAIN: Duration = Duration::from_secs(2);

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
    interruptions: Interruptions,
    pause_until: Option<Instant>,
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

fn agent_channel_config(config: &Config) -> ssm_proto::Config {
    let mut c = ssm_proto::Config::agent();
    if config.agent_retransmit == AgentRetransmit::PerMessage {
        c.retransmit = ssm_proto::RetransmitPolicy::PerMessage;
    }
    c
}

/// Hands a connection to the session's agent, starting the agent on first use.
pub(crate) fn attach(shared: &Arc<Shared>, spec: Arc<SessionSpec>, conn: Connection) {
    if let Some(commands) = shared.attach(&spec, conn) {
        tokio::spawn(run(shared.clone(), spec, commands));
    }
}

async fn run(shared: Arc<Shared>, spec: Arc<SessionSpec>, mut commands: mpsc::UnboundedReceiver<AgentCommand>) {
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
        interruptions: Interruptions::default(),
        pause_until: None,
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
        link.close();
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
            old.close();
        }
        self.next_link_id += 1;
        self.link = Some(link::spawn(
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
                    if self.shared.config.invent_shell_exit_code {
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
            && let Some(frame) = self.channel.poll_transmit()
        {
            let Some(link) = self.link.as_mut() else {
                continue;
            };
            let Some(frame) = faults::outgoing(&faults, frame) else {
                continue;
            };
            if !link.send(frame) {
                continue;
            }
            match self.interruptions.after_frame(&faults, link.frames_sent) {
                Some(Interrupt::Cut) => {
                    if let Some(link) = self.link.take() {
                        link.cut();
                    }
                    self.link_lost_at = Some(now);
                }
                Some(Interrupt::Pause(length)) => {
                    self.pause_until = Some(now + length);
                    Counters::add(&self.shared.counters.publication_pauses, 1);
                    self.control_now(now, MessageType::PausePublication);
                }
                None => {}
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
            link.send_control(frame.encode());
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
