//! Errors of the client runtime. Messages never contain tokens.

use std::net::SocketAddr;

/// Everything that can go wrong starting or running a session.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// No region was configured.
    #[error("no AWS region is set: pass --region (or -Region), set AWS_REGION, or set `region` in the profile")]
    NoRegion,
    /// The configuration is unusable (bad endpoint URL, conflicting options, …).
    #[error("{0}")]
    Config(String),
    /// An AWS API call failed.
    #[error("{operation} failed: {message}")]
    Api {
        /// Operation name, e.g. `StartSession`.
        operation: &'static str,
        /// Service error code, when the service sent one (e.g. `TargetNotConnected`).
        code: Option<String>,
        /// Human-readable message.
        message: String,
    },
    /// The local port could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        /// Address asked for.
        addr: SocketAddr,
        /// OS error.
        source: std::io::Error,
    },
    /// The WebSocket could not be opened or was lost for good.
    #[error("data channel: {0}")]
    Connect(String),
    /// The session did not start properly (handshake failures, unsupported features).
    #[error("session could not start: {0}")]
    Handshake(#[from] ssm_proto::HandshakeError),
    /// The service ended the session.
    #[error("session {session_id} ended by the service{}", if .reason.is_empty() { String::new() } else { format!(": {}", .reason) })]
    Closed {
        /// Session id.
        session_id: String,
        /// Text from `channel_closed`, if any.
        reason: String,
    },
    /// `ResumeSession` returned no token: the session timed out (§1.4).
    #[error("session {0} timed out")]
    TimedOut(String),
    /// A deadline passed.
    #[error("{0} timed out")]
    Timeout(&'static str),
    /// Local I/O failed.
    #[error("{0}")]
    Io(#[from] std::io::Error),
    /// The operation was cancelled by the caller.
    #[error("cancelled")]
    Cancelled,
}

impl Error {
    /// The AWS error code, when this is an API error that carried one.
    pub fn api_code(&self) -> Option<&str> {
        match self {
            Error::Api { code, .. } => code.as_deref(),
            _ => None,
        }
    }
}

/// Result alias.
pub type Result<T, E = Error> = std::result::Result<T, E>;
