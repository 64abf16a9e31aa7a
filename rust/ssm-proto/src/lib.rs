//! Sans-IO core of the AWS Systems Manager Session Manager data-channel protocol.
//!
//! What it is: the byte-exact frame codec (§3 of `ssm-protocol.md`), the reliable channel with
//! acks, reordering, RTO retransmission and pause/start publication (§4), the session handshake
//! (§5) with KMS encryption (§5.6), and smux v1 framing and stream state for multiplexed port forwarding (§7.4).
//!
//! What it is not: it opens no sockets, spawns no tasks, reads no clock and no entropy. Callers
//! pass the current [`std::time::Instant`] into every `handle_*`/`send` call, drain
//! `poll_transmit`/`poll_event`, and arm a timer from `poll_timeout`. The tokio runtime that does
//! this over a WebSocket lives in `ssm-session` (client) and `ssm-emulator` (service side).
//!
//! Every parser here returns typed errors; no input can make it panic.
#![cfg_attr(
    not(test),
    deny(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing, clippy::panic)
)]

pub mod channel;
pub mod crypto;
pub mod error;
pub mod frame;
pub mod handshake;
pub mod payload;
pub mod smux;
pub mod version;

pub use channel::{Channel, Config, Event, RetransmitPolicy, Role, Stats};
pub use error::{DecodeError, HandshakeError, PayloadError, SendError, SmuxError};
pub use frame::{Frame, MessageId, MessageType, PayloadType};
pub use handshake::{PortMode, PortProperties, SessionType};
pub use payload::{Acknowledge, ChannelClosed, OpenDataChannel, PortFlag, TerminalSize};

/// Payload size the official client and the agent use for stream data (§4.5).
pub const DEFAULT_PAYLOAD_SIZE: usize = 1024;
