//! Exit codes and the mapping from errors to them. One line on stderr per failure.

use ssm_session::Error;

/// Distinct exit codes, stable for scripts.
pub mod code {
    /// Bad arguments.
    pub const USAGE: i32 = 2;
    /// Configuration problem (no region, bad endpoint, conflicting credentials).
    pub const CONFIG: i32 = 3;
    /// An AWS API call failed (unknown target, access denied, …).
    pub const API: i32 = 4;
    /// The data channel could not be opened or was lost for good.
    pub const CONNECT: i32 = 5;
    /// The local port could not be bound.
    pub const LISTEN: i32 = 6;
    /// The session could not start (handshake, unsupported feature).
    pub const SESSION: i32 = 7;
    /// The session timed out.
    pub const TIMEOUT: i32 = 8;
    /// Local I/O or runtime failure.
    pub const INTERNAL: i32 = 70;
}

/// A failure to report: message and exit code.
#[derive(Debug)]
pub struct Failure {
    pub code: i32,
    pub message: String,
}

impl Failure {
    pub fn usage(message: impl Into<String>) -> Self {
        Self {
            code: code::USAGE,
            message: message.into(),
        }
    }
}

impl From<Error> for Failure {
    fn from(e: Error) -> Self {
        let code = match &e {
            Error::NoRegion | Error::Config(_) => code::CONFIG,
            Error::Api { .. } => code::API,
            Error::Listen { .. } => code::LISTEN,
            Error::Connect(_) | Error::Closed { .. } => code::CONNECT,
            Error::Handshake(_) => code::SESSION,
            Error::TimedOut(_) | Error::Timeout(_) => code::TIMEOUT,
            Error::Io(_) => code::INTERNAL,
            Error::Cancelled => 130,
        };
        Self {
            code,
            message: e.to_string(),
        }
    }
}

/// Resolves on Ctrl+C, and on SIGTERM/SIGHUP on Unix.
pub async fn interrupted() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let mut term = signal(SignalKind::terminate()).ok();
        let mut hup = signal(SignalKind::hangup()).ok();
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = async { match term.as_mut() { Some(s) => { s.recv().await; } None => std::future::pending().await } } => {}
            _ = async { match hup.as_mut() { Some(s) => { s.recv().await; } None => std::future::pending().await } } => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
