//! Emulator settings: [`Config`] and the choices it is made of.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::ec2::Instance;
use crate::faults::Faults;

/// How the emulated agent reads from its destination (§9 item 1, §6.5).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Pacing {
    /// The real agent: reads of at most 1024 bytes with a 1 ms pause after each.
    Agent,
    /// No pause; messages of up to `chunk` bytes (shell output: plus up to 3 bytes of a UTF-8
    /// sequence held back from the read before, as with the agent's 1024). A port session's
    /// destination is read ahead, 64 KiB at a time, and cut into such messages. For measuring
    /// clients.
    Unpaced {
        /// Largest message.
        chunk: usize,
    },
}

impl Pacing {
    pub(crate) fn chunk(self) -> usize {
        match self {
            Pacing::Agent => ssm_proto::DEFAULT_PAYLOAD_SIZE,
            Pacing::Unpaced { chunk } => chunk.max(1),
        }
    }

    pub(crate) fn pause(self) -> Option<Duration> {
        match self {
            Pacing::Agent => Some(Duration::from_millis(1)),
            Pacing::Unpaced { .. } => None,
        }
    }
}

/// The emulated agent's retransmission strategy (see [`Config::agent_retransmit`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AgentRetransmit {
    /// Oldest unacked message only, every 100 ms, like the real agent.
    #[default]
    HeadOnly,
    /// Every expired message on its own timer.
    PerMessage,
}

/// What `ResumeSession` answers for a session that has ended (§11.1, emulator choice).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ResumeEnded {
    /// HTTP 400 `DoesNotExistException`.
    #[default]
    DoesNotExist,
    /// A response without `TokenValue` (the plugin prints "timed out" and exits 0).
    NoToken,
}

/// Emulator settings. Every field has a default; see [`Config::default`].
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Agent version announced in the handshake (§5.5 thresholds decide modes).
    pub agent_version: String,
    /// Agent read pacing.
    pub pacing: Pacing,
    /// Fault injection (changeable at run time through `POST /_emulator/faults`). Among them,
    /// off by default: `throttle_start_sessions: K`, the next K `StartSession` calls answered
    /// with the service's `ThrottlingException` ("Rate exceeded"), see [`Faults`].
    pub faults: Faults,
    /// Lifetime of a token before it must be used.
    pub token_ttl_ms: u64,
    /// How long a session waits for its client to come back after the socket is lost.
    pub reconnect_grace_ms: u64,
    /// `ResumeSession` for an ended session.
    pub resume_ended: ResumeEnded,
    /// Remote port → local port, for destinations of port sessions (e.g. 22 → a test sshd).
    pub port_map: std::collections::BTreeMap<u16, u16>,
    /// Targets accepted by `StartSession`; empty accepts any id the agent can register with:
    /// `i-…`, `mi-…` and ECS tasks' `ecs:<cluster>_<task-id>_<runtime-id>`.
    pub targets: Vec<String>,
    /// Host that destinations without an explicit `host` are dialled on (the "instance").
    pub instance_host: String,
    /// Program and arguments of shell sessions (§6.5: `sh`).
    pub shell: Vec<String>,
    /// Working directory of shell sessions (default: the emulator's).
    pub shell_dir: Option<std::path::PathBuf>,
    /// Pause before the first read of shell output (§6.1: 1 s in the agent).
    pub shell_start_delay_ms: u64,
    /// Send `EXIT_CODE: n` (payload type 12) when a pty shell (`Standard_Stream`,
    /// `InteractiveCommands`) ends, before `channel_closed`. NOT agent behaviour, hence off by
    /// default: the agent's pty path never sends an exit code; only the separate-output-stream
    /// path of NonInteractiveCommands does (`sendExitCode` in agent/session/shell/shell.go, §6.5,
    /// §11.3). For tests of a client's exit-code plumbing.
    pub invent_shell_exit_code: bool,
    /// Name of a custom session document (account-owned, so unknown to AWS's list) of session
    /// type `NonInteractiveCommands` whose Linux properties are
    /// `{"commands": "{{command}}", "separateOutputStream": true}`: the one way on AWS to get a
    /// command's stderr apart and its exit code (agent/session/shell/shell.go
    /// processCommandsWithOutputStreamSeparate). `AWS-StartNonInteractiveCommand` has no such
    /// property, so its output comes combined after the command ends, with no exit code.
    /// `None` (the default): the account has no such document.
    pub command_document: Option<String>,
    /// How the agent retransmits. The default is the real agent's: only the oldest unacked
    /// message, once per 100 ms tick (§4.5), which makes recovery from lost frames slow.
    /// `per_message` retransmits every lost message on its own timer, for tests that put
    /// large volumes through lossy links in both directions.
    pub agent_retransmit: AgentRetransmit,
    /// Resend every unacked message at once when a client reconnects. NOT what AWS does: the
    /// agent is never told of a client reconnect and keeps resending only its oldest unacked
    /// message once per 100 ms (agent/session/datachannel/datachannel.go,
    /// ResendStreamDataMessageScheduler). Off by default; for tests that need the kinder peer.
    pub redeliver_on_reconnect: bool,
    /// How long the agent waits for the HandshakeResponse, counted from session dispatch, not
    /// from the client's connection (agent/session/datachannel/datachannel.go: handshakeTimeout
    /// = 15 s in PerformHandshake).
    pub handshake_timeout_ms: u64,
    /// MGS's idle-session timeout: no stream data from the client for this long ends the
    /// session with `channel_closed` (Session Manager preferences `idleSessionTimeout`, 20 min
    /// by default).
    pub idle_timeout_ms: u64,
    /// MGS's maximum session duration (preferences `maxSessionDuration`; unset by default).
    pub max_session_duration_ms: Option<u64>,
    /// Pass the agent's `agent_session_state` messages (`Connected`, `Terminating`) on to the
    /// client. Whether MGS forwards them is not known (§4.9, §12); clients must ignore them, so
    /// the emulator sends them unless a test turns this off.
    pub forward_agent_session_state: bool,
    /// Session Manager preferences `kmsKeyId`: KMS encryption of session data with this key
    /// (an inventory instance's own `kms_key_id` wins). As in the agent, it applies to every
    /// session but port sessions (agent/session/plugins/sessionplugin/sessionplugin.go
    /// isEncryptionEnabled): the agent then handshakes even for shells, asks for
    /// `KMSEncryption` with the key and a random challenge, decrypts the client's data key
    /// through KMS at [`Config::kms_endpoint`], runs the challenge round and encrypts what it
    /// sends (agent/session/datachannel/datachannel.go, agent/session/crypto/). A client that
    /// does not take it has the session ended (handleHandshakeResponse).
    pub kms_key_id: Option<String>,
    /// The KMS endpoint the agent decrypts data keys at (the agent's `Kms.Endpoint` setting,
    /// agent/session/crypto/kmsservice.go), e.g. a moto server. Without it an encrypted session
    /// ends at the handshake: the emulator reaches no real KMS.
    pub kms_endpoint: Option<String>,
    /// The agent's `Kms.RequireKMSChallengeResponse` (default false, as in the agent's
    /// appconfig): refuse clients that do not put the random challenge into the data key's
    /// encryption context (datachannel.go finalizeKMSEncryption).
    pub require_kms_challenge_response: bool,
    /// EC2 instances: answers `DescribeInstances`, EC2 Instance Connect, and decides which
    /// targets take sessions (inventory instances only when running; others as `targets` says).
    pub inventory: Vec<Instance>,
    /// The authorized_keys file EC2 Instance Connect keys are written to (point sshd's
    /// `AuthorizedKeysFile` at it). `%u` is replaced by the OS user and `%i` by the instance id,
    /// as sshd expands `%u`, for one file per user. `None`: keys are only recorded.
    pub authorized_keys: Option<std::path::PathBuf>,
    /// How long a pushed key stays in the file: 60 000 ms as in EC2 Instance Connect.
    pub instance_connect_ttl_ms: u64,
    /// Serve TLS as AWS does: the API at `https://`, `StreamUrl`s as `wss://` (§1.1), with a
    /// certificate from a test CA made at start ([`crate::Emulator::ca_pem`]).
    ///
    /// Off by default, unlike AWS, for one reason: every suite that is not about TLS (the Rust
    /// tests, the C ABI tests and Pester, which start the emulator binary) would otherwise have to
    /// hand each client the CA. Plain `http://`/`ws://` reaches no client path that AWS would not:
    /// the client accepts plain URLs for loopback hosts only (design §7), and the TLS dial of both
    /// the SDK and the data channel is what the TLS end-to-end tests run against this option.
    pub tls: bool,
    /// NOP interval of the agent's smux server when its keepalive is on: smux's `DefaultConfig`
    /// (10 s), which agent/session/plugins/port/port_mux.go uses. Shorter values let tests cross
    /// keepalive timeouts in seconds; a client must be given the same timing.
    pub smux_keepalive_interval_ms: u64,
    /// Silence after which the agent's smux server closes the session when its keepalive is on:
    /// smux's `DefaultConfig` (30 s).
    pub smux_keepalive_timeout_ms: u64,
    /// Set `TCP_NODELAY` on the sockets of the emulator's listener (the API and the MGS
    /// WebSocket). Off by default: whether MGS disables Nagle on its side of the data channel is
    /// not known, and Nagle on is the less kind peer for a client (a small frame from the
    /// service may wait behind the client's delayed ACK). The emulated agent's own connections
    /// to destinations always have it, as Go sets it on every TCP connection
    /// (agent/session/plugins/port/port.go DialCall: `net.Dial`). For benchmarks that compare clients
    /// against a service that sends promptly (`--mgs-nodelay`).
    pub mgs_nodelay: bool,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            agent_version: "3.3.2299.0".into(),
            pacing: Pacing::Agent,
            faults: Faults::default(),
            token_ttl_ms: 60_000,
            reconnect_grace_ms: 30_000,
            resume_ended: ResumeEnded::default(),
            port_map: Default::default(),
            targets: Vec::new(),
            instance_host: "127.0.0.1".into(),
            shell: vec!["sh".into()],
            shell_dir: None,
            shell_start_delay_ms: 1000,
            invent_shell_exit_code: false,
            command_document: None,
            agent_retransmit: AgentRetransmit::default(),
            redeliver_on_reconnect: false,
            handshake_timeout_ms: 15_000,
            idle_timeout_ms: 20 * 60 * 1000,
            max_session_duration_ms: None,
            forward_agent_session_state: true,
            kms_key_id: None,
            kms_endpoint: None,
            require_kms_challenge_response: false,
            inventory: Vec::new(),
            authorized_keys: None,
            instance_connect_ttl_ms: 60_000,
            tls: false,
            smux_keepalive_interval_ms: 10_000,
            smux_keepalive_timeout_ms: 30_000,
            mgs_nodelay: false,
        }
    }
}

impl Config {
    /// The inventory entry for `instance_id`.
    pub(crate) fn instance(&self, instance_id: &str) -> Option<&Instance> {
        self.inventory.iter().find(|i| i.instance_id == instance_id)
    }
}
