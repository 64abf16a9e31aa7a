//! A loopback stand-in for the AWS side of Session Manager, for tests and the demo.
//!
//! What it is: one HTTP server on 127.0.0.1 that answers the SSM API calls a client makes
//! (`StartSession`, `ResumeSession`, `TerminateSession` over awsJson1.1, §1.1, §11.1) and serves
//! the data-channel WebSocket playing MGS and the SSM Agent together (§11.2, §11.3): the
//! handshake with a configurable agent version, port sessions in basic and smux mode chosen as the
//! real agent chooses (§7.1), `AWS-StartSSHSession` stdio mode, the agent's pacing (1024-byte
//! reads with a 1 ms pause, §9) or none, and fault injection on frames in both directions (§11.4).
//! Port sessions dial real TCP destinations on this machine. With an inventory, it also answers
//! EC2 `DescribeInstances` (query protocol, with EC2's filters and paging) and EC2 Instance
//! Connect `SendSSHPublicKey`, writing pushed keys to an authorized_keys file it manages for a
//! real sshd, for as long as EC2 would honour them.
//!
//! What it is not: a security boundary or a model of IAM. Signatures are not checked; any
//! credentials work. Tokens are still single-use and can expire, because clients must cope.

mod agent;
mod api;
mod ec2;
pub mod faults;
mod instance_connect;
mod port;
mod shell;
mod state;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::net::TcpListener;

pub use ec2::{Instance, InstanceState};
pub use faults::Faults;
pub use instance_connect::PushedKey;
use state::Shared;

/// How the emulated agent reads from its destination (§9 item 1, §6.5).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Pacing {
    /// The real agent: reads of at most 1024 bytes with a 1 ms pause after each.
    Agent,
    /// No pause; reads of up to `chunk` bytes, each one message. For measuring clients.
    Unpaced {
        /// Largest payload per message.
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
    /// Fault injection (changeable at run time through `POST /_emulator/faults`).
    pub faults: Faults,
    /// Lifetime of a token before it must be used.
    pub token_ttl_ms: u64,
    /// How long a session waits for its client to come back after the socket is lost.
    pub reconnect_grace_ms: u64,
    /// `ResumeSession` for an ended session.
    pub resume_ended: ResumeEnded,
    /// Remote port → local port, for destinations of port sessions (e.g. 22 → a test sshd).
    pub port_map: std::collections::BTreeMap<u16, u16>,
    /// Targets accepted by `StartSession`; empty accepts any `i-…`/`mi-…` id.
    pub targets: Vec<String>,
    /// Host that destinations without an explicit `host` are dialled on (the "instance").
    pub instance_host: String,
    /// Program and arguments of shell sessions (§6.5: `sh`).
    pub shell: Vec<String>,
    /// Working directory of shell sessions (default: the emulator's).
    pub shell_dir: Option<std::path::PathBuf>,
    /// Pause before the first read of shell output (§6.1: 1 s in the agent).
    pub shell_start_delay_ms: u64,
    /// Send `EXIT_CODE: n` (payload type 12) when a shell ends, before `channel_closed`.
    /// The agent does this for NonInteractiveCommands (§6.5); doing it for shells too is an
    /// emulator choice that lets clients report the remote exit status.
    pub shell_exit_code: bool,
    /// How the agent retransmits. The default is the real agent's: only the oldest unacked
    /// message, once per 100 ms tick (§4.5), which makes recovery from lost frames slow.
    /// `per_message` retransmits every lost message on its own timer, for tests that put
    /// large volumes through lossy links in both directions.
    pub agent_retransmit: AgentRetransmit,
    /// EC2 instances: answers `DescribeInstances`, EC2 Instance Connect, and decides which
    /// targets take sessions (inventory instances only when running; others as `targets` says).
    pub inventory: Vec<Instance>,
    /// The authorized_keys file EC2 Instance Connect keys are written to (point sshd's
    /// `AuthorizedKeysFile` at it). `%u` is replaced by the OS user and `%i` by the instance id,
    /// as sshd expands `%u`, for one file per user. `None`: keys are only recorded.
    pub authorized_keys: Option<std::path::PathBuf>,
    /// How long a pushed key stays in the file: 60 000 ms as in EC2 Instance Connect.
    pub instance_connect_ttl_ms: u64,
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
            shell_exit_code: true,
            agent_retransmit: AgentRetransmit::default(),
            inventory: Vec::new(),
            authorized_keys: None,
            instance_connect_ttl_ms: 60_000,
        }
    }
}

/// A running emulator. Dropping it stops the server and every session.
pub struct Emulator {
    addr: SocketAddr,
    shared: Arc<Shared>,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl Emulator {
    /// Binds 127.0.0.1 on a port the OS picks and starts serving.
    pub async fn start(config: Config) -> std::io::Result<Self> {
        Self::bind(config, SocketAddr::from(([127, 0, 0, 1], 0))).await
    }

    /// Binds `addr` and starts serving.
    pub async fn bind(config: Config, addr: SocketAddr) -> std::io::Result<Self> {
        let listener = TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared::new(config, addr));
        let app = api::router(shared.clone());
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            let serve = axum::serve(listener, app).with_graceful_shutdown(async {
                let _ = rx.await;
            });
            if let Err(e) = serve.await {
                tracing::error!("emulator server stopped: {e}");
            }
        });
        Ok(Self {
            addr,
            shared,
            shutdown: Some(tx),
            task: Some(task),
        })
    }

    /// Address the server listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Base URL of the API endpoints (SSM and the control routes).
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Replaces the fault settings for frames from now on.
    pub fn set_faults(&self, faults: Faults) {
        self.shared.set_faults(faults);
    }

    /// Counters of what the emulator saw.
    pub fn stats(&self) -> EmulatorStats {
        self.shared.stats()
    }

    /// EC2 Instance Connect keys that are still valid.
    pub fn instance_connect_keys(&self) -> Vec<PushedKey> {
        self.shared.instance_connect.list()
    }

    /// A description of every session so far.
    pub fn sessions(&self) -> Vec<SessionInfo> {
        self.shared.session_infos()
    }

    /// Stops the server and ends all sessions.
    pub async fn stop(mut self) {
        self.stop_inner().await;
    }

    async fn stop_inner(&mut self) {
        self.shared.terminate_all();
        self.shared.instance_connect.clear();
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(task) = self.task.take() {
            task.abort();
            let _ = task.await;
        }
    }
}

impl Drop for Emulator {
    fn drop(&mut self) {
        self.shared.terminate_all();
        self.shared.instance_connect.clear();
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

/// Counters over the emulator's life.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct EmulatorStats {
    /// Sessions started.
    pub sessions_started: u64,
    /// WebSocket connections accepted with a valid token.
    pub connections: u64,
    /// Connections refused (bad or expired token).
    pub connections_refused: u64,
    /// Frames dropped by fault injection.
    pub frames_dropped: u64,
    /// Frames duplicated by fault injection.
    pub frames_duplicated: u64,
    /// Sockets cut by fault injection.
    pub sockets_cut: u64,
    /// Frames the agent retransmitted.
    pub agent_retransmissions: u64,
    /// Publication pauses injected (`pause_after_frames`), each ended by `start_publication`.
    pub publication_pauses: u64,
}

/// One session as the emulator sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionInfo {
    /// Session id.
    pub session_id: String,
    /// Target.
    pub target: String,
    /// Document name (empty for the default shell).
    pub document: String,
    /// Client version from the open frame / handshake.
    pub client_version: String,
    /// Port mode chosen, when a port session.
    pub port_mode: String,
    /// Whether the session ended.
    pub ended: bool,
    /// Last terminal size received (cols, rows).
    pub terminal_size: Option<(u32, u32)>,
    /// The access key id StartSession was signed with (SigV4 credential scope; empty if unsigned).
    pub access_key_id: String,
    /// The region StartSession was signed for (SigV4 credential scope; empty if unsigned).
    pub signing_region: String,
}
