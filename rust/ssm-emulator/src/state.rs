//! Sessions, tokens and counters shared by the API handlers and the agent tasks, and the
//! commands the API side sends a session's agent.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use axum::extract::ws::WebSocket;
use rand::Rng;
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

use crate::config::Config;
use crate::ec2::InstanceState;
use crate::faults::Faults;
use crate::instance_connect::Keys;

/// Who signed an API request: the access key id and region of its SigV4 credential scope.
#[derive(Debug, Clone, Default)]
pub(crate) struct Signer {
    pub(crate) access_key_id: String,
    pub(crate) region: String,
}

impl Signer {
    /// Reads `Authorization: AWS4-HMAC-SHA256 Credential=AKID/DATE/REGION/SERVICE/aws4_request, ...`.
    /// Anything else (unsigned, another scheme) gives empty fields.
    pub(crate) fn from_authorization(value: Option<&str>) -> Self {
        let scope = value
            .and_then(|v| v.strip_prefix("AWS4-HMAC-SHA256"))
            .and_then(|v| v.split(',').find_map(|part| part.trim().strip_prefix("Credential=")))
            .unwrap_or_default();
        let mut fields = scope.split('/');
        let access_key_id = fields.next().unwrap_or_default().to_owned();
        let region = fields.nth(1).unwrap_or_default().to_owned();
        Self { access_key_id, region }
    }
}

/// What a session needs to know about how it was started.
#[derive(Debug, Clone)]
pub(crate) struct SessionSpec {
    pub(crate) session_id: String,
    pub(crate) target: String,
    pub(crate) document: String,
    pub(crate) parameters: HashMap<String, Vec<String>>,
    /// The region StartSession was signed for: the instance's, where its agent calls KMS.
    pub(crate) region: String,
}

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

struct TokenEntry {
    session_id: String,
    issued: Instant,
}

pub(crate) struct SessionEntry {
    pub(crate) spec: Arc<SessionSpec>,
    pub(crate) agent: Option<mpsc::UnboundedSender<AgentCommand>>,
    pub(crate) info: SessionInfo,
}

#[derive(Default)]
pub(crate) struct Counters {
    pub(crate) sessions_started: AtomicU64,
    pub(crate) connections: AtomicU64,
    pub(crate) connections_refused: AtomicU64,
    pub(crate) frames_dropped: AtomicU64,
    pub(crate) frames_duplicated: AtomicU64,
    pub(crate) sockets_cut: AtomicU64,
    pub(crate) sockets_frozen: AtomicU64,
    pub(crate) agent_retransmissions: AtomicU64,
    pub(crate) publication_pauses: AtomicU64,
    pub(crate) accepted_nodelay: AtomicU64,
    pub(crate) accepted_nagle: AtomicU64,
    pub(crate) start_sessions_throttled: AtomicU64,
}

impl Counters {
    pub(crate) fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }
}

pub(crate) struct Shared {
    pub(crate) config: Config,
    pub(crate) addr: SocketAddr,
    /// Shared, not copied: the agent and the links read them for every frame.
    faults: Mutex<Arc<Faults>>,
    sessions: Mutex<HashMap<String, SessionEntry>>,
    tokens: Mutex<HashMap<String, TokenEntry>>,
    pub(crate) counters: Counters,
    pub(crate) instance_connect: Arc<Keys>,
}

/// Why a WebSocket open was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum OpenRefused {
    UnknownToken,
    Expired,
    SessionEnded,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Shared {
    pub(crate) fn new(config: Config, addr: SocketAddr) -> Self {
        Self {
            faults: Mutex::new(Arc::new(config.faults.clone())),
            config,
            addr,
            sessions: Mutex::new(HashMap::new()),
            tokens: Mutex::new(HashMap::new()),
            counters: Counters::default(),
            instance_connect: Default::default(),
        }
    }

    pub(crate) fn faults(&self) -> Arc<Faults> {
        lock(&self.faults).clone()
    }

    pub(crate) fn set_faults(&self, faults: Faults) {
        *lock(&self.faults) = Arc::new(faults);
    }

    /// Whether this `StartSession` call is throttled ([`Faults::throttle_start_sessions`]);
    /// counts the fault down.
    pub(crate) fn take_start_throttle(&self) -> bool {
        let mut f = lock(&self.faults);
        if f.throttle_start_sessions == 0 {
            return false;
        }
        Arc::make_mut(&mut f).throttle_start_sessions -= 1;
        Counters::add(&self.counters.start_sessions_throttled, 1);
        true
    }

    pub(crate) fn stats(&self) -> EmulatorStats {
        let c = &self.counters;
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        EmulatorStats {
            sessions_started: get(&c.sessions_started),
            connections: get(&c.connections),
            connections_refused: get(&c.connections_refused),
            frames_dropped: get(&c.frames_dropped),
            frames_duplicated: get(&c.frames_duplicated),
            sockets_cut: get(&c.sockets_cut),
            sockets_frozen: get(&c.sockets_frozen),
            agent_retransmissions: get(&c.agent_retransmissions),
            publication_pauses: get(&c.publication_pauses),
            accepted_nodelay: get(&c.accepted_nodelay),
            accepted_nagle: get(&c.accepted_nagle),
            start_sessions_throttled: get(&c.start_sessions_throttled),
        }
    }

    /// The `StreamUrl` of `StartSession` and `ResumeSession`: AWS's form
    /// (`wss://ssmmessages.<region>.amazonaws.com/v1/data-channel/<id>?role=publish_subscribe`,
    /// §1.1) on this listener, `ws://` when not serving TLS.
    pub(crate) fn stream_url(&self, session_id: &str) -> String {
        let scheme = if self.config.tls { "wss" } else { "ws" };
        format!(
            "{scheme}://{}/v1/data-channel/{session_id}?role=publish_subscribe",
            self.addr
        )
    }

    fn new_token(&self, session_id: &str) -> String {
        let mut bytes = [0u8; 24];
        rand::rng().fill(&mut bytes);
        let token: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
        lock(&self.tokens).insert(
            token.clone(),
            TokenEntry {
                session_id: session_id.to_owned(),
                issued: Instant::now(),
            },
        );
        token
    }

    /// Registers a new session and returns its first token.
    pub(crate) fn create_session(
        &self,
        target: &str,
        document: &str,
        parameters: HashMap<String, Vec<String>>,
        reason: Option<String>,
        signer: Signer,
    ) -> (String, String) {
        let mut suffix = [0u8; 9];
        rand::rng().fill(&mut suffix);
        let hex: String = suffix.iter().map(|b| format!("{b:02x}")).collect();
        let session_id = format!("emulator-{}", hex.get(..17).unwrap_or(&hex));
        let spec = Arc::new(SessionSpec {
            session_id: session_id.clone(),
            target: target.to_owned(),
            document: document.to_owned(),
            parameters,
            region: signer.region.clone(),
        });
        let info = SessionInfo {
            session_id: session_id.clone(),
            target: target.to_owned(),
            document: document.to_owned(),
            client_version: String::new(),
            port_mode: String::new(),
            ended: false,
            terminate_calls: 0,
            terminal_size: None,
            access_key_id: signer.access_key_id,
            signing_region: signer.region,
            encrypted: false,
            reason,
            parameters: spec.parameters.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
        };
        lock(&self.sessions).insert(
            session_id.clone(),
            SessionEntry {
                spec,
                agent: None,
                info,
            },
        );
        Counters::add(&self.counters.sessions_started, 1);
        let token = self.new_token(&session_id);
        (session_id, token)
    }

    /// A fresh token for a live session; `None` when it does not exist, `Some(None)` when ended.
    pub(crate) fn resume(&self, session_id: &str) -> Option<Option<String>> {
        let ended = lock(&self.sessions).get(session_id)?.info.ended;
        if ended {
            return Some(None);
        }
        Some(Some(self.new_token(session_id)))
    }

    /// Ends a session: tells its agent to close the channel. Returns false if unknown.
    pub(crate) fn terminate(&self, session_id: &str) -> bool {
        let mut sessions = lock(&self.sessions);
        let Some(entry) = sessions.get_mut(session_id) else {
            return false;
        };
        if let Some(agent) = &entry.agent {
            let _ = agent.send(AgentCommand::Terminate);
        }
        entry.info.ended = true;
        entry.info.terminate_calls += 1;
        true
    }

    pub(crate) fn terminate_all(&self) {
        let mut sessions = lock(&self.sessions);
        for entry in sessions.values_mut() {
            if let Some(agent) = entry.agent.take() {
                let _ = agent.send(AgentCommand::Terminate);
            }
            entry.info.ended = true;
        }
    }

    /// Validates and consumes a token (single use).
    pub(crate) fn redeem(
        &self,
        token: &str,
        session_id: &str,
        expire_all: bool,
    ) -> Result<Arc<SessionSpec>, OpenRefused> {
        let entry = lock(&self.tokens).remove(token).ok_or(OpenRefused::UnknownToken)?;
        if entry.session_id != session_id {
            return Err(OpenRefused::UnknownToken);
        }
        if expire_all || entry.issued.elapsed() > Duration::from_millis(self.config.token_ttl_ms) {
            return Err(OpenRefused::Expired);
        }
        let sessions = lock(&self.sessions);
        let s = sessions.get(session_id).ok_or(OpenRefused::UnknownToken)?;
        if s.info.ended {
            return Err(OpenRefused::SessionEnded);
        }
        Ok(s.spec.clone())
    }

    /// Gives a new session its agent's command queue; returns the session and the receiving
    /// end for the caller to run the agent on (once per session).
    pub(crate) fn install_agent(
        &self,
        session_id: &str,
    ) -> Option<(Arc<SessionSpec>, mpsc::UnboundedReceiver<AgentCommand>)> {
        let mut sessions = lock(&self.sessions);
        let entry = sessions.get_mut(session_id)?;
        if entry.agent.is_some() || entry.info.ended {
            return None;
        }
        let (tx, rx) = mpsc::unbounded_channel();
        entry.agent = Some(tx);
        Some((entry.spec.clone(), rx))
    }

    /// Hands a connection to the session's agent. If the agent is gone (the session ended),
    /// the connection is simply dropped.
    pub(crate) fn attach(&self, spec: &SessionSpec, conn: Connection) {
        if let Some(agent) = lock(&self.sessions)
            .get(&spec.session_id)
            .and_then(|e| e.agent.as_ref())
        {
            let _ = agent.send(AgentCommand::Attach(Box::new(conn)));
        }
    }

    pub(crate) fn update_info(&self, session_id: &str, f: impl FnOnce(&mut SessionInfo)) {
        if let Some(entry) = lock(&self.sessions).get_mut(session_id) {
            f(&mut entry.info);
        }
    }

    pub(crate) fn mark_ended(&self, session_id: &str) {
        if let Some(entry) = lock(&self.sessions).get_mut(session_id) {
            entry.info.ended = true;
            entry.agent = None;
        }
    }

    pub(crate) fn session_infos(&self) -> Vec<SessionInfo> {
        let mut v: Vec<SessionInfo> = lock(&self.sessions).values().map(|e| e.info.clone()).collect();
        v.sort_by(|a, b| a.session_id.cmp(&b.session_id));
        v
    }

    pub(crate) fn target_known(&self, target: &str) -> bool {
        // Inventory instances are EC2's truth: only running ones take sessions.
        if let Some(i) = self.config.instance(target) {
            return i.state == InstanceState::Running;
        }
        if self.config.targets.is_empty() {
            return target.starts_with("i-") || target.starts_with("mi-") || ecs_target(target);
        }
        self.config.targets.iter().any(|t| t == target)
    }

    /// Where a port session on `target` dials `port`: the instance's own host and port map
    /// first, then the emulator-wide ones.
    pub(crate) fn destination(&self, target: &str, port: u16) -> (String, u16) {
        let inst = self.config.instance(target);
        let port = inst
            .and_then(|i| i.port_map.get(&port))
            .or_else(|| self.config.port_map.get(&port))
            .copied()
            .unwrap_or(port);
        let host = inst
            .and_then(|i| i.host.clone())
            .unwrap_or_else(|| self.config.instance_host.clone());
        (host, port)
    }
}

/// An ECS task container as the agent inside it names itself,
/// `ecs:<cluster>_<task-id>_<container-runtime-id>` (`InstanceID` in
/// `common/identity/availableidentities/ecs/ecs_identity.go` of aws/amazon-ssm-agent), which is
/// what ECS Exec starts sessions with. Cluster names may hold `_` themselves, so the ids are
/// taken from the right.
pub(crate) fn ecs_target(target: &str) -> bool {
    let Some(rest) = target.strip_prefix("ecs:") else {
        return false;
    };
    let mut parts = rest.rsplitn(3, '_');
    let (Some(runtime), Some(task), Some(cluster)) = (parts.next(), parts.next(), parts.next()) else {
        return false;
    };
    let id = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-');
    id(runtime) && id(task) && id(cluster.replace('_', "-").as_str())
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
    /// Sockets frozen by fault injection (`freeze_after_frames`).
    pub sockets_frozen: u64,
    /// Frames the agent retransmitted.
    pub agent_retransmissions: u64,
    /// Publication pauses injected (`pause_after_frames`), each ended by `start_publication`.
    pub publication_pauses: u64,
    /// Connections accepted by the listener whose socket has `TCP_NODELAY` (as read back from
    /// the socket; see [`crate::Config::mgs_nodelay`]).
    pub accepted_nodelay: u64,
    /// Connections accepted by the listener whose socket has Nagle on.
    pub accepted_nagle: u64,
    /// `StartSession` calls answered with `ThrottlingException` (`throttle_start_sessions`).
    #[serde(default)]
    pub start_sessions_throttled: u64,
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
    /// How many times `TerminateSession` was called for it (an ended session is ended by
    /// the agent, by MGS or by this call; only this count tells a client's call apart).
    pub terminate_calls: u64,
    /// Last terminal size received (cols, rows).
    pub terminal_size: Option<(u32, u32)>,
    /// The access key id StartSession was signed with (SigV4 credential scope; empty if unsigned).
    pub access_key_id: String,
    /// The region StartSession was signed for (SigV4 credential scope; empty if unsigned).
    pub signing_region: String,
    /// Whether the handshake set up KMS encryption (the challenge verified, §5.6).
    pub encrypted: bool,
    /// StartSession's `Reason`, when the caller gave one.
    #[serde(default)]
    pub reason: Option<String>,
    /// StartSession's document `Parameters`, as sent.
    #[serde(default)]
    pub parameters: std::collections::BTreeMap<String, Vec<String>>,
}

#[cfg(test)]
mod tests {
    use super::Signer;

    #[test]
    fn signer_comes_from_the_sigv4_credential_scope() {
        let s = Signer::from_authorization(Some(
            "AWS4-HMAC-SHA256 Credential=AKIDPROFILE/20261130/eu-west-1/ssm/aws4_request, \
             SignedHeaders=content-type;host;x-amz-date, Signature=abc",
        ));
        assert_eq!(
            (s.access_key_id.as_str(), s.region.as_str()),
            ("AKIDPROFILE", "eu-west-1")
        );
    }

    #[test]
    fn ecs_targets_are_cluster_task_and_runtime_ids() {
        for ok in [
            "ecs:prod_0123456789abcdef0123456789abcdef_0123456789abcdef0123456789abcdef-1234567890",
            "ecs:my_cluster_9781c248-0edd-4cdb-9a93-f63cb662a5d3_1234567890",
        ] {
            assert!(super::ecs_target(ok), "{ok}");
        }
        for bad in [
            "ecs:",
            "ecs:prod",
            "ecs:prod_task",
            "ecs:_task_runtime",
            "ecs:prod_task_",
            "ecs:a b_t_r",
            "i-0123",
        ] {
            assert!(!super::ecs_target(bad), "{bad}");
        }
    }

    #[test]
    fn unsigned_or_unknown_schemes_give_empty_fields() {
        for v in [
            None,
            Some("Bearer x"),
            Some("AWS4-HMAC-SHA256 SignedHeaders=host"),
            Some(""),
        ] {
            let s = Signer::from_authorization(v);
            assert!(s.access_key_id.is_empty() && s.region.is_empty(), "{v:?}");
        }
    }
}
