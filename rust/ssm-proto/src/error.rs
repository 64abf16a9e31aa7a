//! Typed errors of the protocol core.

/// Why a received frame was rejected (§3.6). Rejected frames are dropped without an ack.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// The frame is shorter than its header says.
    #[error("frame truncated ({len} bytes)")]
    Truncated {
        /// Length of the received frame.
        len: usize,
    },
    /// `HeaderLength` below 112.
    #[error("header length {0} is below 112")]
    HeaderLength(u32),
    /// The `MessageType` field is not text.
    #[error("message type is not UTF-8")]
    MessageTypeNotUtf8,
    /// The `MessageType` field is empty.
    #[error("message type is empty")]
    EmptyMessageType,
    /// `CreatedDate` is zero.
    #[error("created date is zero")]
    ZeroCreatedDate,
    /// SHA-256 of the payload differs from `PayloadDigest`.
    #[error("payload digest mismatch")]
    DigestMismatch,
}

/// A payload that does not parse as the JSON or binary form its type demands.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("bad {what} payload: {reason}")]
pub struct PayloadError {
    /// Which payload.
    pub what: &'static str,
    /// Parser message.
    pub reason: String,
}

impl PayloadError {
    pub(crate) fn json(what: &'static str, e: &serde_json::Error) -> Self {
        Self {
            what,
            reason: e.to_string(),
        }
    }
}

/// Sending refused by the reliable channel.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SendError {
    /// The send window is full; wait for acks ([`crate::channel::Channel::can_send`]).
    #[error("send window full")]
    WindowFull,
    /// The channel was closed.
    #[error("channel closed")]
    Closed,
}

/// Handshake failures (§5).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HandshakeError {
    /// A payload did not parse.
    #[error(transparent)]
    Payload(#[from] PayloadError),
    /// The agent announced a session type this client does not know.
    #[error("unknown session type {0:?}")]
    UnknownSessionType(String),
    /// The handshake ended without a session type (§5.4).
    #[error("unable to determine the session type")]
    NoSessionType,
    /// The peer reported failed actions.
    #[error("handshake failed: {0}")]
    Failed(String),
}

/// smux protocol violations (§7.4); each ends the smux session.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SmuxError {
    /// Version byte other than 1.
    #[error("smux version {0} is not 1")]
    Version(u8),
    /// Command byte outside 0..=3.
    #[error("unknown smux command {0}")]
    Command(u8),
    /// Keepalive saw no frame within the timeout.
    #[error("smux peer silent for too long")]
    Timeout,
    /// The session is closed.
    #[error("smux session closed")]
    Closed,
    /// No such stream.
    #[error("unknown smux stream {0}")]
    UnknownStream(u32),
}
