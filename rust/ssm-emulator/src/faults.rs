//! Fault injection on data-channel frames (§11.4).
//!
//! Faults act where the emulated MGS meets the WebSocket, on whole frames, in each direction
//! separately. Probabilities are per frame.

use std::time::Duration;

use rand::Rng;
use serde::{Deserialize, Serialize};

/// Faults for one direction.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DirectionFaults {
    /// Probability that a frame is dropped.
    pub drop: f64,
    /// Probability that a frame is delivered twice.
    pub duplicate: f64,
    /// Probability that a frame is held back and delivered after its successor.
    pub reorder: f64,
    /// Every frame is delayed by a random 0..=`delay_ms` milliseconds.
    pub delay_ms: u64,
}

impl DirectionFaults {
    fn active(&self) -> bool {
        self.drop > 0.0 || self.duplicate > 0.0 || self.reorder > 0.0 || self.delay_ms > 0
    }
}

/// All fault settings.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Faults {
    /// Frames from the agent to the client.
    pub to_client: DirectionFaults,
    /// Frames from the client to the agent (applied before the agent sees them).
    pub to_agent: DirectionFaults,
    /// Probability that an ack the agent writes is never sent (the client must retransmit).
    pub withhold_acks: f64,
    /// Cut each session's socket abruptly (no close frame) after this many frames to the
    /// client; counted per connection, so every connection is cut once it reaches it.
    pub cut_after_frames: Option<u64>,
    /// Cut at most this many times per session (default: once).
    pub max_cuts: Option<u64>,
    /// After this many frames to the client, send `pause_publication`, hold all output for
    /// `pause_ms`, then send `start_publication` (§4.7). Once per session.
    pub pause_after_frames: Option<u64>,
    /// Length of the pause.
    pub pause_ms: u64,
    /// Probability that a frame to the client has its digest corrupted (§3.6).
    pub corrupt_digest: f64,
    /// Pad message types with NULs on the left instead of spaces (§3.6, §11.4).
    pub nul_padded_types: bool,
    /// Send `channel_closed` with `HeaderLength` 112 (§3.6).
    pub short_channel_closed: bool,
    /// Never let a token be used (every open is refused): models expired tokens.
    pub expire_tokens: bool,
}

/// What to do with one frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// Drop it.
    Drop,
    /// Deliver it `copies` times after `delay`; `hold` means swap it with its successor.
    Deliver { copies: u8, delay: Duration, hold: bool },
}

pub(crate) fn decide(f: &DirectionFaults, rng: &mut impl Rng) -> Verdict {
    if !f.active() {
        return Verdict::Deliver {
            copies: 1,
            delay: Duration::ZERO,
            hold: false,
        };
    }
    if f.drop > 0.0 && rng.random_bool(f.drop.clamp(0.0, 1.0)) {
        return Verdict::Drop;
    }
    let copies = if f.duplicate > 0.0 && rng.random_bool(f.duplicate.clamp(0.0, 1.0)) {
        2
    } else {
        1
    };
    let delay = if f.delay_ms > 0 {
        Duration::from_millis(rng.random_range(0..=f.delay_ms))
    } else {
        Duration::ZERO
    };
    let hold = f.reorder > 0.0 && rng.random_bool(f.reorder.clamp(0.0, 1.0));
    Verdict::Deliver { copies, delay, hold }
}

/// Rewrites the type field of an encoded frame from space padding to left NUL padding.
pub(crate) fn nul_pad_type(frame: &mut [u8]) {
    let Some(field) = frame.get_mut(4..36) else {
        return;
    };
    let name: Vec<u8> = field.iter().copied().filter(|b| *b != b' ').collect();
    let pad = field.len().saturating_sub(name.len());
    for (i, slot) in field.iter_mut().enumerate() {
        *slot = if i < pad {
            0
        } else {
            name.get(i - pad).copied().unwrap_or(0)
        };
    }
}

/// Flips one bit of the digest of an encoded frame.
pub(crate) fn corrupt_digest(frame: &mut [u8]) {
    if let Some(b) = frame.get_mut(80) {
        *b ^= 0x01;
    }
}

/// Re-encodes a frame with `HeaderLength` 112 (no `PayloadType` field), as SSC reports MGS does
/// for `channel_closed`.
pub(crate) fn shorten_header(frame: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(frame.len().saturating_sub(4));
    out.extend_from_slice(&112u32.to_be_bytes());
    out.extend_from_slice(frame.get(4..112).unwrap_or_default());
    out.extend_from_slice(frame.get(116..).unwrap_or_default());
    out
}
