//! Fault injection on data-channel frames (§11.4).
//!
//! Faults act where the emulated MGS meets the WebSocket, on whole frames, in each direction
//! separately. Probabilities are per frame. The link applies [`DirectionFaults`]; the agent
//! applies the rest to the frames it writes.

use std::time::Duration;

use bytes::Bytes;
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
    pub(crate) fn active(&self) -> bool {
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
    /// Freeze a session's socket after this many frames to the client on it: from then on
    /// nothing is read from it or written to it and it stays open (a blackholed path; §8.2).
    /// Once per session; the client's next connection works.
    pub freeze_after_frames: Option<u64>,
    /// After this many frames to the client, send `pause_publication`, hold all output for
    /// `pause_ms`, then send `start_publication` (§4.7). Once per session.
    pub pause_after_frames: Option<u64>,
    /// Length of the pause.
    pub pause_ms: u64,
    /// Probability that a frame to the client has its digest corrupted (§3.6).
    pub corrupt_digest: f64,
    /// Pad message types with NULs on the left instead of spaces (§3.6, §11.4).
    pub nul_padded_types: bool,
    /// Never let a token be used (every open is refused): models expired tokens.
    pub expire_tokens: bool,
    /// Misbehaving agent: a port session sends a HandshakeComplete before its
    /// HandshakeRequest (§5). Default off; only for tests of the client's handshake checks.
    pub handshake_complete_first: bool,
    /// Misbehaving agent: once a port session's handshake is complete (HandshakeComplete
    /// sent), send a second HandshakeRequest. The session goes on; a response to it is
    /// consumed. Default off; only for tests of the client's handshake checks.
    pub repeat_handshake_request: bool,
    /// The data-channel route answers every WebSocket upgrade with HTTP 403 instead of
    /// switching protocols: the data channel cannot be opened at all (a proxy that blocks
    /// WebSockets, a service that refuses the client). ResumeSession and TerminateSession still
    /// work. Default off; for tests of what a client does when it cannot open the channel.
    pub refuse_websocket_upgrade: bool,
    /// Misbehaving agent: a port session's HandshakeRequest payload is not JSON (the agent
    /// marshals a `HandshakeRequestPayload`, agent/session/datachannel/datachannel.go
    /// sendHandshakeRequest, so this never comes from a working agent). Default off; for tests
    /// of how a client fails such a start.
    pub garbled_handshake_request: bool,
    /// Answer the next this-many `StartSession` calls as the service does when a caller exceeds
    /// its API rate: HTTP 400 with `{"__type":"ThrottlingException","message":"Rate exceeded"}`
    /// (awsJson1.1; the SDK reads the code from `__type` and its standard retry classifies it as
    /// a throttling error). Each throttled call counts one down and starts nothing; the counter
    /// is read back by `GET /_emulator/faults`. Default 0 (off); for tests of how a client
    /// waits out throttling.
    pub throttle_start_sessions: u64,
    /// Tampering on the path: the this-many-th encrypted payload the agent sends (1 = the
    /// first) has one ciphertext byte flipped before it is framed, so its digest matches and
    /// only the AES-GCM tag can tell (§5.6). Default off; for tests of a client's refusal.
    pub tamper_encrypted_output: Option<u64>,
    /// Misbehaving agent: the encryption challenge is sealed under a key of its own instead of
    /// the session's data key, as an agent that decrypted another key would hold (§5.6).
    /// Default off; for tests of a client's challenge check.
    pub wrong_challenge_key: bool,
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

/// The faults on one frame the agent writes (`withhold_acks`, `nul_padded_types`,
/// `corrupt_digest`); `None` when it is withheld.
pub(crate) fn outgoing(f: &Faults, frame: Bytes) -> Option<Bytes> {
    let is_ack = frame.get(4..15) == Some(b"acknowledge".as_slice());
    if is_ack && f.withhold_acks > 0.0 && rand::random_bool(f.withhold_acks.clamp(0.0, 1.0)) {
        return None;
    }
    let corrupt = f.corrupt_digest > 0.0 && !is_ack && rand::random_bool(f.corrupt_digest.clamp(0.0, 1.0));
    if !f.nul_padded_types && !corrupt {
        return Some(frame);
    }
    // Altered on this transmission only: the channel keeps the frame as it was encoded.
    let mut frame = Vec::from(frame);
    if f.nul_padded_types {
        nul_pad_type(&mut frame);
    }
    if corrupt {
        corrupt_digest(&mut frame);
    }
    Some(frame.into())
}

/// What `cut_after_frames` or `pause_after_frames` asks for after a frame.
pub(crate) enum Interrupt {
    /// Cut the socket.
    Cut,
    /// Freeze the socket.
    Freeze,
    /// Pause publication for this long.
    Pause(Duration),
}

/// One session's counts behind `cut_after_frames`, `max_cuts` and `pause_after_frames`.
#[derive(Default)]
pub(crate) struct Interruptions {
    cuts: u64,
    frames: u64,
    paused: bool,
    frozen: bool,
}

impl Interruptions {
    /// Counts a frame written to a socket that has now carried `on_socket` frames.
    pub(crate) fn after_frame(&mut self, f: &Faults, on_socket: u64) -> Option<Interrupt> {
        self.frames += 1;
        if let Some(n) = f.cut_after_frames
            && on_socket >= n
            && self.cuts < f.max_cuts.unwrap_or(1)
        {
            self.cuts += 1;
            return Some(Interrupt::Cut);
        }
        if let Some(n) = f.freeze_after_frames
            && on_socket >= n
            && !self.frozen
        {
            self.frozen = true;
            return Some(Interrupt::Freeze);
        }
        if let Some(n) = f.pause_after_frames
            && !self.paused
            && self.frames >= n
        {
            self.paused = true;
            return Some(Interrupt::Pause(Duration::from_millis(f.pause_ms)));
        }
        None
    }
}

/// Rewrites the type field of an encoded frame from space padding to left NUL padding.
fn nul_pad_type(frame: &mut [u8]) {
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
fn corrupt_digest(frame: &mut [u8]) {
    if let Some(b) = frame.get_mut(80) {
        *b ^= 0x01;
    }
}
