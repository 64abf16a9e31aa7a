//! One emulated agent per session, started when the session is dispatched (StartSession), not
//! when the client connects: the agent's reliable channel (§4.4, §4.5), the handshake (§5,
//! §11.3) and the session plugin, with what MGS does between agent and client applied to what
//! it writes: frame faults, publication pauses, socket cuts (§4.7, §11.4), the idle and
//! maximum-duration limits, and `channel_closed`.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use ssm_proto::crypto::{AgentNonces, CHALLENGE_BYTES, SessionCipher, Side, is_encrypted};
use ssm_proto::handshake::{
    EncChallenge, HandshakeComplete, HandshakeRequest, HandshakeResponse, KmsActionResult, RequestedAction,
};
use ssm_proto::{Channel, ChannelClosed, Event, MessageType, PayloadType, SessionType};
use tokio::sync::mpsc;

use crate::command::{CommandPlugin, CommandProperties, Input, STDERR_STREAM};
use crate::config::{AgentRetransmit, Config};
use crate::faults::{self, Interrupt, Interruptions};
use crate::link::{self, Inbound, InboundTx, Link, Sent};
use crate::port::{DestEvent, DestQueues, Handled, PortPlugin};
use crate::shell::ShellPlugin;
use crate::state::{AgentCommand, Connection, Counters, SessionSpec, Shared};

/// Most queued client frames handled in one turn of the agent's loop.
const INBOUND_TURN: usize = 256;
/// How long the agent waits for its output to be acked before closing (§4.9, §6.6).
const CLOSE_DRAIN: Duration = Duration::from_secs(2);
/// `channel_closed` output when MGS ends an idle session. The service's exact text is not
/// known (§12); this is the console's wording.
const IDLE_OUTPUT: &str = "Your session timed out due to inactivity and has been terminated.";
/// `channel_closed` output when the maximum session duration has passed (wording as above).
const MAX_DURATION_OUTPUT: &str = "Your session has reached its maximum duration and has been terminated.";

enum Stage {
    /// HandshakeRequest sent; waiting for the response.
    Handshake { deadline: Instant },
    /// EncChallengeRequest sent; waiting for the client's answer (§5.6).
    Challenge { deadline: Instant },
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
    inbound_tx: InboundTx,
    stage: Stage,
    dispatched: Instant,
    last_input: Instant,
    session_type: SessionType,
    properties: serde_json::Value,
    port: Option<PortPlugin>,
    shell: Option<ShellPlugin>,
    command: Option<CommandPlugin>,
    /// The client message whose 0x03/0x1C went to the command as a signal: its handler waits
    /// for the command to exit before it returns (shell_unix.go InputStreamMessageHandler).
    signal_message: Option<i64>,
    queues: DestQueues,
    /// The client message whose processing (a write, a dial) has not finished: the agent reads
    /// nothing more from the socket until it has (datachannel.go processes each message in its
    /// listener before reading the next).
    processing: Option<i64>,
    /// Unnumbered frames for the client (publication control, session state, `channel_closed`).
    control: VecDeque<Bytes>,
    /// The frame whose write is blocked because the socket is backed up, and whether it counts
    /// as a data frame: until it is written the agent takes nothing from the destination.
    blocked: Option<(Bytes, bool)>,
    reported_retransmissions: u64,
    finished: bool,
    /// KMS encryption of this session (§5.6), when the preferences ask for it.
    kms: Option<Encryption>,
    /// The client's version from its HandshakeResponse.
    client_version: String,
}

/// The agent's encryption state (agent/session/crypto/blockcipher.go BlockCipher).
struct Encryption {
    key_id: String,
    /// The random challenge of the KMSEncryption request, base64 as sent.
    random_challenge: String,
    /// Set once the client's data key is decrypted.
    cipher: Option<SessionCipher>,
    nonces: AgentNonces,
    /// The plaintext of the challenge sent, until the client's answer is checked.
    challenge: Option<zeroize::Zeroizing<Vec<u8>>>,
    /// Encrypted payloads sent so far (for the tampering fault).
    sealed: u64,
}

/// Waits until `link` can take a frame again; never, without a link.
async fn writable(link: Option<&Link>) {
    match link {
        Some(link) => link.writable().await,
        None => std::future::pending().await,
    }
}

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(1)
}

/// The random challenge of a KMSEncryption request: 16 random bytes in standard base64
/// (agent/session/crypto/blockcipher.go NewBlockCipher).
fn random_challenge() -> String {
    use base64::Engine as _;
    let bytes: [u8; 16] = rand::random();
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// Session type and the document's (Linux) properties, with its parameters in place (§1.2).
fn document_session(spec: &SessionSpec, config: &Config) -> (SessionType, serde_json::Value) {
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
        // The AWS-managed document: `commands` and `runAsElevated` only, so combined output.
        "AWS-StartNonInteractiveCommand" => (
            SessionType::NonInteractiveCommands,
            serde_json::json!({ "commands": param("command", ""), "runAsElevated": false }),
        ),
        doc if config.command_document.as_deref() == Some(doc) => (
            SessionType::NonInteractiveCommands,
            serde_json::json!({
                "commands": param("command", ""),
                "runAsElevated": false,
                "separateOutputStream": true,
            }),
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

/// Whether a raw frame is client stream data (MGS's idle clock counts only that), read from
/// the `MessageType` field without decoding the rest.
fn is_client_data(bytes: &[u8]) -> bool {
    bytes
        .get(4..36)
        .and_then(|t| std::str::from_utf8(t).ok())
        .is_some_and(|t| t.trim_matches(|c: char| c == '\0' || c.is_whitespace()) == "input_stream_data")
}

/// Starts the agent of a session that StartSession has just created.
pub(crate) fn dispatch(shared: &Arc<Shared>, session_id: &str) {
    if let Some((spec, commands)) = shared.install_agent(session_id) {
        tokio::spawn(run(shared.clone(), spec, commands));
    }
}

/// Hands a client connection to the session's agent.
pub(crate) fn attach(shared: &Arc<Shared>, spec: Arc<SessionSpec>, conn: Connection) {
    shared.attach(&spec, conn);
}

async fn run(shared: Arc<Shared>, spec: Arc<SessionSpec>, mut commands: mpsc::UnboundedReceiver<AgentCommand>) {
    // Small (link::INBOUND_BYTES): while the agent processes a message it reads nothing more
    // from its socket (datachannel.go), so frames back up to the client's TCP connection.
    let (inbound_tx, mut inbound_rx) = link::inbound_queue();
    let (data_tx, mut data_rx) = mpsc::channel(64);
    let (done_tx, mut done_rx) = mpsc::unbounded_channel();
    let now = Instant::now();
    let seed = rand::random::<u64>();
    let (session_type, properties) = document_session(&spec, &shared.config);
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
        stage: Stage::Running,
        dispatched: now,
        last_input: now,
        session_type,
        properties,
        port: None,
        shell: None,
        command: None,
        signal_message: None,
        queues: DestQueues {
            data: data_tx,
            done: done_tx,
        },
        processing: None,
        control: VecDeque::new(),
        blocked: None,
        reported_retransmissions: 0,
        finished: false,
        kms: None,
        client_version: String::new(),
    };
    agent.start(now);
    let grace = Duration::from_millis(shared.config.reconnect_grace_ms);
    // The pump's 1 ms pauses must end on time (see PreciseTimer). Other deadlines
    // (retransmission, keepalive, idle) are left to tokio's timer, which may end a wait up to a
    // millisecond late: arming the precise one is a system call, which an unpaced session
    // would make on nearly every turn. So it is armed only when the pump's deadline is the
    // next one, or within the millisecond after it.
    let timer = crate::timer::PreciseTimer::new();
    while !agent.finished {
        let wake = agent.next_wake(grace);
        let pump = agent.port.as_ref().and_then(PortPlugin::pump_deadline);
        let precise = matches!((wake, pump), (Some(w), Some(p)) if p <= w + Duration::from_millis(1));
        // No send window (Config::agent: untracked past its buffer); what stops the agent
        // reading the destination is a write blocked on the socket.
        let can_take_dest = agent.channel.can_send()
            && agent.blocked.is_none()
            && !agent.channel.is_paused()
            && agent.pause_until.is_none()
            && agent.port.as_ref().is_none_or(PortPlugin::accepting_dest);
        let reading = agent.processing.is_none();
        // While publication is paused nothing is written, so a blocked write waits for the end
        // of the pause (a timer), not for room on the socket.
        let write_blocked = agent.blocked.is_some() && agent.pause_until.is_none();
        tokio::select! {
            _ = writable(agent.link.as_ref()), if write_blocked => {}
            cmd = commands.recv() => match cmd {
                Some(AgentCommand::Attach(conn)) => agent.attach(*conn),
                Some(AgentCommand::Terminate) | None => agent.begin_close(String::new()),
            },
            Some(msg) = inbound_rx.recv(), if reading => {
                agent.on_inbound(msg).await;
                // Frames already read are handled in the same turn, one after another as the
                // agent's reader handles them (agent/session/communicator/websocketchannel.go:
                // its read loop calls OnMessage, datachannel.go's handler, on each frame, acks
                // included, before it reads the next); output and timers are looked at after
                // them. A turn of this loop per ack otherwise
                // costs an unpaced transfer more than the acks do.
                for _ in 1..INBOUND_TURN {
                    if agent.processing.is_some() || agent.finished {
                        break;
                    }
                    match inbound_rx.try_recv() {
                        Some(msg) => agent.on_inbound(msg).await,
                        None => break,
                    }
                }
            }
            Some(ev) = done_rx.recv() => agent.on_done(ev).await,
            Some(ev) = data_rx.recv(), if can_take_dest => agent.on_dest(ev),
            () = timer.sleep_until(wake.unwrap_or_else(Instant::now), precise), if wake.is_some() => {
                agent.on_timer(grace);
            }
        }
        agent.pump();
        agent.flush();
    }
    if let Some(link) = agent.link.take() {
        // What could not be written yet (the last data, `channel_closed`) goes before the close.
        let last = agent
            .blocked
            .take()
            .map(|(f, _)| f)
            .into_iter()
            .chain(agent.control.drain(..))
            .collect();
        link.close(last);
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
        // The agent's resend rounds, also while nothing is unacked, as its scheduler wakes:
        // otherwise the loop's timer would move sooner whenever output is sent (and tokio's
        // timer then writes its wake-up descriptor before the output is written).
        consider(self.channel.next_round());
        consider(self.link_lost_at.map(|t| t + grace));
        consider(Some(self.idle_deadline()));
        consider(self.max_deadline());
        match &self.stage {
            Stage::Handshake { deadline } | Stage::Challenge { deadline } => consider(Some(*deadline)),
            Stage::Closing { deadline, .. } => consider(Some(*deadline)),
            Stage::Running => {}
        }
        if let Some(port) = &self.port {
            consider(port.poll_timeout());
        }
        wake
    }

    fn idle_deadline(&self) -> Instant {
        self.last_input + Duration::from_millis(self.shared.config.idle_timeout_ms)
    }

    fn max_deadline(&self) -> Option<Instant> {
        let max = self.shared.config.max_session_duration_ms?;
        Some(self.dispatched + Duration::from_millis(max))
    }

    fn attach(&mut self, conn: Connection) {
        let now = Instant::now();
        let reconnect = self.next_link_id > 0;
        if let Some(old) = self.link.take() {
            old.close(Vec::new());
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
        // §11.2 step 2: sequence state is kept. The agent is not told that its client came
        // back: it goes on resending its oldest unacked message once per tick, so what the
        // old socket lost comes back one message at a time.
        if reconnect && self.shared.config.redeliver_on_reconnect {
            self.channel.reset_transport(now);
        }
    }

    /// Starts the session as the agent does on dispatch (sessionplugin.go Execute): the
    /// handshake when the plugin needs one (port; NonInteractiveCommands, whose RequireHandshake
    /// is true in plugins/noninteractivecommands) or KMS encryption is on, else the plugin at
    /// once.
    fn start(&mut self, now: Instant) {
        // datachannel.go SendAgentSessionStateMessage(Connected) once the agent's data
        // channel is open.
        self.session_state("Connected");
        let kms_key_id = self.kms_key_id();
        let needs_handshake = matches!(
            self.session_type,
            SessionType::Port | SessionType::NonInteractiveCommands
        );
        if needs_handshake || kms_key_id.is_some() {
            // GetPluginParameters: the port plugin hands its properties to the client; the
            // single-command and shell plugins return nil (plugins/singlecommand) (§5.2).
            let client_properties = if self.session_type == SessionType::Port {
                self.properties.clone()
            } else {
                serde_json::Value::Null
            };
            let mut req =
                HandshakeRequest::new(&self.shared.config.agent_version, &self.session_type, client_properties);
            if let Some(key) = kms_key_id {
                let encryption = Encryption {
                    key_id: key,
                    random_challenge: random_challenge(),
                    cipher: None,
                    nonces: AgentNonces::new(rand::random()),
                    challenge: None,
                    sealed: 0,
                };
                req.requested_client_actions.push(RequestedAction {
                    action_type: "KMSEncryption".into(),
                    action_parameters: serde_json::json!({
                        "KMSKeyId": encryption.key_id,
                        "Challenge": encryption.random_challenge,
                    }),
                });
                self.kms = Some(encryption);
            }
            let faults = self.shared.faults();
            if faults.handshake_complete_first {
                // Fault injection: the completion goes out before the request.
                let early = HandshakeComplete {
                    handshake_time_to_complete: 0,
                    customer_message: String::new(),
                };
                let _ = self.channel.send(now, PayloadType::HandshakeComplete, early.to_json());
            }
            let payload = if faults.garbled_handshake_request {
                // Fault injection: not the JSON the agent marshals.
                b"{\"AgentVersion\": garbled".to_vec()
            } else {
                req.to_json()
            };
            let _ = self.channel.send(now, PayloadType::HandshakeRequest, payload);
            self.stage = Stage::Handshake {
                deadline: now + Duration::from_millis(self.shared.config.handshake_timeout_ms),
            };
            return;
        }
        // §5.1, §6.1: no handshake; the first output tells the client it is a shell.
        self.start_shell();
    }

    /// The KMS key sessions of this type are encrypted with: none for port sessions
    /// (sessionplugin.go isEncryptionEnabled); the instance's own, else the preferences'.
    fn kms_key_id(&self) -> Option<String> {
        if self.session_type == SessionType::Port {
            return None;
        }
        let config = &self.shared.config;
        config
            .instance(&self.spec.target)
            .and_then(|i| i.kms_key_id.clone())
            .or_else(|| config.kms_key_id.clone())
            .filter(|k| !k.is_empty())
    }

    /// Sends a payload of the plugin's, encrypted when the session is (datachannel.go
    /// SendStreamDataMessage: output, stderr and the exit code).
    fn send_output(&mut self, now: Instant, payload_type: PayloadType, data: Bytes) {
        let data = match self.kms.as_mut() {
            Some(Encryption {
                cipher: Some(cipher),
                nonces,
                sealed,
                ..
            }) if is_encrypted(Side::Agent, payload_type) => {
                let mut out = cipher.seal(nonces.next_nonce(), &data);
                *sealed += 1;
                if self.shared.faults().tamper_encrypted_output == Some(*sealed)
                    && let Some(b) = out.get_mut(ssm_proto::crypto::NONCE_BYTES)
                {
                    // Fault injection: altered before framing, so the digest still matches.
                    *b ^= 0x01;
                }
                out.into()
            }
            _ => data,
        };
        let _ = self.channel.send(now, payload_type, data);
    }

    fn start_shell(&mut self) {
        let command = self
            .properties
            .get("commands")
            .and_then(|c| c.as_str())
            .map(str::to_owned);
        match ShellPlugin::start(&self.shared, command.as_deref(), self.queues.clone()) {
            Ok(shell) => self.shell = Some(shell),
            Err(e) => self.begin_close(e),
        }
    }

    fn start_command(&mut self) {
        let text = |k: &str| {
            self.properties
                .get(k)
                .and_then(|v| v.as_str())
                .unwrap_or_default()
                .to_owned()
        };
        let props = CommandProperties {
            commands: text("commands"),
            separate_output: self.properties.get("separateOutputStream").cloned(),
            stdout_prefix: text("stdOutSeparatorPrefix"),
            stderr_prefix: text("stdErrSeparatorPrefix"),
        };
        match CommandPlugin::start(&self.shared, &props, self.queues.clone()) {
            Ok(command) => self.command = Some(command),
            Err(e) => self.begin_close(e),
        }
    }

    /// Queues an `agent_session_state` message (§4.9) when the emulator forwards them.
    fn session_state(&mut self, state: &str) {
        if !self.shared.config.forward_agent_session_state {
            return;
        }
        let payload = serde_json::json!({
            "SchemaVersion": 1,
            "SessionState": state,
            "SessionId": self.spec.session_id,
        });
        let frame = self.channel.unnumbered(
            Instant::now(),
            MessageType::AgentSessionState,
            ssm_proto::frame::FLAGS_ACK,
            payload.to_string().into_bytes(),
        );
        self.control.push_back(frame.encode().into());
    }

    async fn on_inbound(&mut self, msg: Inbound) {
        match msg {
            Inbound::Frame(id, bytes) => self.on_frame(id, &bytes).await,
            Inbound::Closed(id) => self.on_link_closed(id),
        }
    }

    async fn on_frame(&mut self, link_id: u64, bytes: &[u8]) {
        if self.link.as_ref().map(|l| l.id) != Some(link_id) {
            return; // late frame from a replaced socket
        }
        let now = Instant::now();
        let client_data = is_client_data(bytes);
        if client_data {
            self.last_input = now;
        }
        if self.pause_until.is_some() && client_data {
            // Observed MGS behaviour while paused (§4.7): client stream data is answered with
            // another pause and goes nowhere; acks still reach the agent.
            self.control_now(now, MessageType::PausePublication);
            return;
        }
        let ready = self.port.as_ref().is_none_or(PortPlugin::ready);
        self.channel.set_receive_ready(ready);
        if let Err(e) = self.channel.handle_frame(now, bytes) {
            tracing::debug!(session = %self.spec.session_id, "dropped frame: {e}");
        }
        self.drain_events(now).await;
    }

    /// Handles what the channel delivered, stopping at a message whose processing is pending.
    async fn drain_events(&mut self, now: Instant) {
        while self.processing.is_none()
            && let Some(ev) = self.channel.poll_event()
        {
            let Event::Stream {
                payload_type,
                payload,
                sequence_number,
            } = ev
            else {
                continue;
            };
            let handled = self.on_stream(now, sequence_number, payload_type, payload).await;
            let awaited = self.channel.processing() == Some(sequence_number);
            match handled {
                Handled::Done(ok) => self.channel.processed(now, sequence_number, ok),
                Handled::Pending if awaited => self.processing = Some(sequence_number),
                Handled::Pending => {}
                Handled::End(output) => {
                    self.channel.processed(now, sequence_number, true);
                    self.begin_close(output);
                }
            }
        }
    }

    async fn on_stream(&mut self, now: Instant, seq: i64, payload_type: PayloadType, payload: Vec<u8>) -> Handled {
        match (&self.stage, payload_type) {
            (Stage::Handshake { .. }, PayloadType::HandshakeResponse) => {
                self.on_handshake_response(now, &payload).await;
                Handled::Done(true)
            }
            (Stage::Challenge { .. }, PayloadType::EncChallengeResponse) => {
                self.on_challenge_response(now, &payload);
                Handled::Done(true)
            }
            // §4.4: anything else before the handshake completes is consumed and acked.
            (Stage::Handshake { .. } | Stage::Challenge { .. } | Stage::Closing { .. }, _) => Handled::Done(true),
            // datachannel.go processStreamDataMessage: input is decrypted first; input that does
            // not decrypt is an error, and the message is neither processed nor acked.
            (Stage::Running, PayloadType::Output) if self.kms.as_ref().is_some_and(|k| k.cipher.is_some()) => {
                let opened = self
                    .kms
                    .as_ref()
                    .and_then(|k| k.cipher.as_ref())
                    .map(|c| c.open(&payload));
                match opened {
                    Some(Ok(plain)) => self.on_running_input(now, seq, plain),
                    Some(Err(e)) => {
                        tracing::warn!(session = %self.spec.session_id, "Error decrypting stream data message sequence {seq}, err: {e}");
                        Handled::Done(false)
                    }
                    None => Handled::Done(false),
                }
            }
            (Stage::Running, PayloadType::Output) => self.on_running_input(now, seq, payload),
            (Stage::Running, PayloadType::Size) => {
                if let Ok(size) = ssm_proto::TerminalSize::parse(&payload) {
                    self.shared.update_info(&self.spec.session_id, |i| {
                        i.terminal_size = Some((size.cols, size.rows))
                    });
                    if let Some(shell) = &self.shell {
                        shell.resize(size.cols, size.rows);
                    }
                }
                Handled::Done(true)
            }
            (Stage::Running, _) if self.command.is_some() || self.shell.is_some() => Handled::Done(true),
            (Stage::Running, _) => match self.port.as_mut() {
                Some(port) => port.on_client(now, seq, payload_type, payload),
                None => Handled::Done(true),
            },
        }
    }

    /// Stream input (type 1, decrypted when the session is encrypted) for the running plugin.
    fn on_running_input(&mut self, now: Instant, seq: i64, payload: Vec<u8>) -> Handled {
        if let Some(command) = &self.command {
            // shell_unix.go InputStreamMessageHandler: a control byte becomes a signal and the
            // handler waits for the command to exit; the rest (and Size) is dropped.
            return match command.input(&payload) {
                Input::Signalled => {
                    self.signal_message = Some(seq);
                    Handled::Pending
                }
                Input::Failed => Handled::Done(false),
                Input::Ignored => Handled::Done(true),
            };
        }
        if let Some(shell) = &self.shell {
            return shell.write(payload, seq);
        }
        match self.port.as_mut() {
            Some(port) => port.on_client(now, seq, PayloadType::Output, payload),
            None => Handled::Done(true),
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
        self.client_version = resp.client_version.clone();
        if self.kms.is_some() {
            // datachannel.go handleHandshakeResponse → finalizeKMSEncryption, then
            // PerformHandshake sends the encryption challenge.
            let result = resp
                .processed_client_actions
                .iter()
                .find(|a| a.action_type == "KMSEncryption")
                .map(|a| a.action_result.clone());
            if let Err(e) = self.finalize_kms(result).await {
                self.begin_close(format!("Handshake failed: {e}"));
                return;
            }
            self.send_challenge(now);
            return;
        }
        self.complete_handshake(now);
    }

    /// datachannel.go finalizeKMSEncryption and blockcipher.go UpdateEncryptionKey: the data
    /// key decrypted through KMS with the agent's encryption context, its halves the keys.
    async fn finalize_kms(&mut self, result: Option<serde_json::Value>) -> Result<(), String> {
        let Some(kms) = self.kms.as_ref() else {
            return Ok(());
        };
        let result = KmsActionResult::parse(&result.unwrap_or_default())
            .map_err(|e| format!("Unmarshalling of KMSEncryptionResponse failed, {e}"))?;
        let config = &self.shared.config;
        if config.require_kms_challenge_response && !result.challenge_acknowledged {
            return Err("client does not support required encryption context random challenge".into());
        }
        let Some(endpoint) = config.kms_endpoint.clone() else {
            return Err("Unable to retrieve data key, the emulator has no kms_endpoint to reach KMS at".into());
        };
        let mut context = std::collections::HashMap::from([
            ("aws:ssm:SessionId".to_owned(), self.spec.session_id.clone()),
            ("aws:ssm:TargetId".to_owned(), self.spec.target.clone()),
        ]);
        if result.challenge_acknowledged {
            context.insert("aws:ssm:RandomChallenge".to_owned(), kms.random_challenge.clone());
        }
        let key = crate::kms::decrypt_data_key(&endpoint, &self.spec.region, &kms.key_id, result.ciphertext, context)
            .await
            .map_err(|e| format!("Unable to retrieve data key, {e}"))?;
        let cipher = SessionCipher::new(Side::Agent, &key).map_err(|e| e.to_string())?;
        if let Some(kms) = self.kms.as_mut() {
            kms.cipher = Some(cipher);
        }
        Ok(())
    }

    /// datachannel.go sendEncryptionChallenge: 64 random bytes, sealed, as type 8; the answer
    /// is awaited for the handshake timeout ("Timed out waiting for encryption challenge.").
    fn send_challenge(&mut self, now: Instant) {
        let wrong_key = self.shared.faults().wrong_challenge_key;
        let Some(kms) = self.kms.as_mut() else { return };
        let Some(cipher) = kms.cipher.as_ref() else { return };
        let plain = zeroize::Zeroizing::new((0..CHALLENGE_BYTES).map(|_| rand::random::<u8>()).collect::<Vec<u8>>());
        let sealed = if wrong_key {
            let other: [u8; ssm_proto::crypto::DATA_KEY_BYTES] = std::array::from_fn(|_| rand::random());
            match SessionCipher::new(Side::Agent, &other) {
                Ok(c) => c.seal(kms.nonces.next_nonce(), &plain),
                Err(_) => return,
            }
        } else {
            cipher.seal(kms.nonces.next_nonce(), &plain)
        };
        kms.challenge = Some(plain);
        let request = EncChallenge { challenge: sealed };
        let _ = self
            .channel
            .send(now, PayloadType::EncChallengeRequest, request.to_json());
        self.stage = Stage::Challenge {
            deadline: now + Duration::from_millis(self.shared.config.handshake_timeout_ms),
        };
    }

    /// datachannel.go handleEncryptionChallengeResponse: the answer must open to the challenge.
    fn on_challenge_response(&mut self, now: Instant, payload: &[u8]) {
        let verdict = match (EncChallenge::parse(payload), self.kms.as_mut()) {
            (Ok(answer), Some(kms)) => {
                let expected = kms.challenge.take();
                match kms.cipher.as_ref().map(|c| c.open(&answer.challenge)) {
                    Some(Ok(plain)) if expected.as_deref() == Some(&plain) => Ok(()),
                    Some(Ok(_)) => Err("Encryption challenge does not match!".to_owned()),
                    Some(Err(e)) => Err(format!("Error decrypting encrypted text, {e}")),
                    None => Err("no encryption key".to_owned()),
                }
            }
            (Err(e), _) => Err(format!(
                "Unmarshalling of EncryptionChallengeResponse message failed, {e}"
            )),
            (_, None) => Ok(()),
        };
        match verdict {
            Ok(()) => self.complete_handshake(now),
            Err(e) => self.begin_close(format!(
                "Handshake failed: processing of EncryptionChallengeReponse message failed, {e}"
            )),
        }
    }

    /// HandshakeComplete, then the plugin (datachannel.go PerformHandshake,
    /// buildHandshakeCompletePayload).
    fn complete_handshake(&mut self, now: Instant) {
        let customer_message = if self.kms.is_some() {
            self.shared.update_info(&self.spec.session_id, |i| i.encrypted = true);
            "This session is encrypted using AWS KMS.".to_owned()
        } else {
            String::new()
        };
        let complete = HandshakeComplete {
            handshake_time_to_complete: i64::try_from(now.saturating_duration_since(self.dispatched).as_nanos())
                .unwrap_or(i64::MAX),
            customer_message,
        };
        let _ = self
            .channel
            .send(now, PayloadType::HandshakeComplete, complete.to_json());
        if self.shared.faults().repeat_handshake_request {
            // Fault injection: a second request once the session is under way.
            let again = HandshakeRequest::new(
                &self.shared.config.agent_version,
                &SessionType::Port,
                self.properties.clone(),
            );
            let _ = self.channel.send(now, PayloadType::HandshakeRequest, again.to_json());
        }
        // HandshakeComplete goes out before the plugin starts (and dials).
        self.flush();
        let client_version = self.client_version.clone();
        self.shared
            .update_info(&self.spec.session_id, |i| i.client_version = client_version.clone());
        match self.session_type {
            SessionType::NonInteractiveCommands => {
                self.stage = Stage::Running;
                self.start_command();
                return;
            }
            // A shell handshakes only when encrypted (sessionplugin.go); its plugin starts now.
            SessionType::StandardStream | SessionType::InteractiveCommands => {
                self.stage = Stage::Running;
                self.start_shell();
                return;
            }
            SessionType::Port => {}
        }
        let props: ssm_proto::PortProperties = serde_json::from_value(self.properties.clone()).unwrap_or_default();
        let mode = ssm_proto::PortMode::for_agent(
            props.kind.as_deref(),
            &self.shared.config.agent_version,
            &client_version,
        );
        self.shared
            .update_info(&self.spec.session_id, |i| i.port_mode = format!("{mode:?}"));
        let mut plugin = PortPlugin::new(
            self.shared.clone(),
            &self.spec.target,
            mode,
            props,
            self.queues.clone(),
            now,
        );
        self.stage = Stage::Running;
        match plugin.start() {
            Ok(()) => self.port = Some(plugin),
            Err(reason) => self.begin_close(reason),
        }
    }

    /// Completions: writes, dials, the shell's exit.
    async fn on_done(&mut self, ev: DestEvent) {
        let now = Instant::now();
        match ev {
            DestEvent::Written(seq, ok) => self.finish_processing(now, seq, ok).await,
            DestEvent::BasicDialed(pending, res) => {
                let seq = pending.as_ref().map(|(s, _)| *s);
                let Some(port) = self.port.as_mut() else { return };
                if let Err(output) = port.on_basic_dialed(pending, res) {
                    if let Some(seq) = seq {
                        self.finish_processing(now, seq, false).await;
                    }
                    self.begin_close(output);
                }
            }
            DestEvent::CommandReaped => {
                if let Some(seq) = self.signal_message.take() {
                    self.finish_processing(now, seq, true).await;
                }
            }
            ev => self.on_dest(ev),
        }
    }

    async fn finish_processing(&mut self, now: Instant, seq: i64, ok: bool) {
        self.channel.processed(now, seq, ok);
        if self.processing == Some(seq) {
            self.processing = None;
            self.drain_events(now).await;
        }
    }

    fn on_dest(&mut self, ev: DestEvent) {
        let now = Instant::now();
        if self.command.is_some() {
            match ev {
                DestEvent::Data(STDERR_STREAM, data) => self.send_output(now, PayloadType::StdErr, data),
                DestEvent::Data(_, data) => self.send_output(now, PayloadType::Output, data),
                // sendExitCode
                DestEvent::CommandExitCode(code) => {
                    self.send_output(now, PayloadType::ExitCode, format!("EXIT_CODE: {code}").into())
                }
                // PrepareToCloseChannel, then Terminating.
                DestEvent::CommandEnded => self.begin_close(String::new()),
                _ => {}
            }
            return;
        }
        if self.shell.is_some() {
            match ev {
                DestEvent::Data(_, data) => self.send_output(now, PayloadType::Output, data),
                DestEvent::Exited(code) => {
                    if self.shared.config.invent_shell_exit_code {
                        self.send_output(now, PayloadType::ExitCode, format!("EXIT_CODE: {code}").into());
                    }
                    self.begin_close(String::new());
                }
                _ => {}
            }
            return;
        }
        if let Some(port) = self.port.as_mut()
            && let Some(reason) = port.on_dest(ev, &mut self.channel)
        {
            self.begin_close(reason);
        }
    }

    fn on_timer(&mut self, grace: Duration) {
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
        if now >= self.idle_deadline() {
            self.mgs_close(now, IDLE_OUTPUT);
            return;
        }
        if self.max_deadline().is_some_and(|t| now >= t) {
            self.mgs_close(now, MAX_DURATION_OUTPUT);
            return;
        }
        match &self.stage {
            Stage::Handshake { deadline } if now >= *deadline => {
                self.begin_close(
                    "Handshake timed out. Please ensure that you have the latest version of the session manager plugin."
                        .into(),
                );
            }
            Stage::Challenge { deadline } if now >= *deadline => {
                self.begin_close("Timed out waiting for encryption challenge.".into());
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

    /// The plugin has ended: drain output (≤ 2 s), then `channel_closed` (§4.9, §6.6).
    fn begin_close(&mut self, output: String) {
        if matches!(self.stage, Stage::Closing { .. }) {
            return;
        }
        if let Some(port) = self.port.as_mut() {
            port.shutdown();
        }
        self.shell = None;
        self.command = None;
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
        // shell.go / sessionplugin.go: Terminating once the plugin is done.
        self.session_state("Terminating");
        self.mgs_close(now, &output);
    }

    /// MGS ends the session: `channel_closed` to the client at once, ahead of anything the
    /// channel still holds.
    fn mgs_close(&mut self, now: Instant, output: &str) {
        if let Some(port) = self.port.as_mut() {
            port.shutdown();
        }
        self.shell = None;
        self.command = None;
        let closed = ChannelClosed {
            message_id: self.channel.new_message_id().to_string(),
            created_date: self.channel.unix_ms(now).to_string(),
            destination_id: self.spec.target.clone(),
            session_id: self.spec.session_id.clone(),
            message_type: "channel_closed".into(),
            schema_version: 1,
            output: output.to_owned(),
        };
        let frame = self
            .channel
            .unnumbered(now, MessageType::ChannelClosed, 0, closed.to_json());
        // MGS-generated: HeaderLength 112, no PayloadType field (§3.6).
        self.control.push_back(frame.encode_short_header().into());
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

    /// Writes queued frames to the socket, applying the per-frame faults. Until the client
    /// first connects, MGS holds what the agent sends; while a client that had connected is
    /// away, what the agent sends is lost (and only its retransmissions recover it).
    fn flush(&mut self) {
        let now = Instant::now();
        if self.link.is_none() && self.next_link_id == 0 {
            return;
        }
        let faults = self.shared.faults();
        // While publication is paused (§4.7) every frame waits in the channel, acks included.
        // A write the socket cannot take blocks the agent's writer: nothing more goes out (or
        // is taken from the destination) until it can.
        while self.pause_until.is_none() {
            let frame = match self.blocked.take() {
                Some((frame, true)) => frame,
                Some((frame, false)) => {
                    self.blocked = Some((frame, false));
                    break;
                }
                None => {
                    let Some(frame) = self.channel.poll_transmit() else {
                        break;
                    };
                    let Some(frame) = faults::outgoing(&faults, frame) else {
                        continue;
                    };
                    frame
                }
            };
            let Some(link) = self.link.as_mut() else {
                continue;
            };
            match link.try_send(frame, true) {
                Sent::Queued => {}
                Sent::Gone => continue,
                Sent::Blocked(frame) => {
                    self.blocked = Some((frame, true));
                    break;
                }
            }
            match self.interruptions.after_frame(&faults, link.frames_sent) {
                Some(Interrupt::Cut) => {
                    if let Some(link) = self.link.take() {
                        link.cut();
                    }
                    self.link_lost_at = Some(now);
                }
                Some(Interrupt::Freeze) => {
                    if let Some(link) = self.link.take() {
                        link.freeze();
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
        // Session state and `channel_closed` follow what the agent sent before them.
        if self.pause_until.is_none() {
            if let Some((frame, _)) = self.blocked.take_if(|(_, counted)| !*counted) {
                self.control.push_front(frame);
            }
            while self.blocked.is_none()
                && let Some(frame) = self.control.pop_front()
            {
                if let Some(link) = self.link.as_mut()
                    && let Sent::Blocked(frame) = link.try_send(frame, false)
                {
                    self.blocked = Some((frame, false));
                }
            }
        }
        self.report_stats();
    }

    /// Sends an unnumbered publication message at once, ahead of anything the channel holds.
    fn control_now(&mut self, now: Instant, message_type: MessageType) {
        let frame = self.channel.unnumbered(now, message_type, 0, Vec::new());
        if let Some(link) = &self.link {
            link.send_now(frame.encode().into());
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
