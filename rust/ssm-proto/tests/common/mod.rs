//! What the simulated-time suites share: seeded randomness and a simulated network (drops,
//! duplicates, reordering delays, cuts) between a client and an agent, driven by a manual clock.
//! Nothing here sleeps or reads the time.
#![allow(dead_code)]

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::time::{Duration, Instant};

use ssm_proto::{Frame, MessageId, MessageType, PayloadType};

/// One mebibyte.
pub const MIB: usize = 1024 * 1024;
/// The payload size of one stream message (§3.4): what clients and the agent write per message.
pub const CHUNK: usize = ssm_proto::DEFAULT_PAYLOAD_SIZE;
/// Wall-clock milliseconds the simulated clocks start at.
pub const UNIX_MS: u64 = 1_700_000_000_000;

// ---------------------------------------------------------------------------------------------
// Deterministic randomness.

/// splitmix64: tiny, seedable, good enough for fault injection.
#[derive(Debug, Clone)]
pub struct Rng(pub u64);

impl Rng {
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// True with probability `p`.
    pub fn chance(&mut self, p: f64) -> bool {
        ((self.next_u64() >> 11) as f64 / (1u64 << 53) as f64) < p
    }

    /// Uniform in `0..n` (n > 0; the modulo bias is irrelevant here).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }

    pub fn bytes(&mut self, len: usize) -> Vec<u8> {
        let mut v = Vec::with_capacity(len + 8);
        while v.len() < len {
            v.extend_from_slice(&self.next_u64().to_le_bytes());
        }
        v.truncate(len);
        v
    }
}

// ---------------------------------------------------------------------------------------------
// The network.

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Dir {
    ToAgent,
    ToClient,
}

#[derive(Debug, Clone, Copy)]
pub struct NetConfig {
    pub drop: f64,
    pub duplicate: f64,
    pub max_delay: Duration,
}

impl NetConfig {
    pub const LOSSY: Self = Self {
        drop: 0.10,
        duplicate: 0.10,
        max_delay: Duration::from_millis(50),
    };
}

/// A frame in flight: arrival time, unique counter (deterministic ties), direction, bytes.
pub type InFlight = (Instant, u64, Dir, Vec<u8>);

/// Frames in flight, earliest arrival first.
#[derive(Debug)]
pub struct Network {
    pub cfg: NetConfig,
    pub rng: Rng,
    queue: BinaryHeap<Reverse<InFlight>>,
    counter: u64,
    pub sent: u64,
    pub dropped: u64,
    pub duplicated: u64,
    /// Frames lost to cuts: in flight when the socket went, or written while it was down.
    pub lost_to_cuts: u64,
    /// Whether the socket is down (between a cut and the reconnect).
    down: bool,
}

impl Network {
    pub fn new(cfg: NetConfig, seed: u64) -> Self {
        Self {
            cfg,
            rng: Rng(seed),
            queue: BinaryHeap::new(),
            counter: 0,
            sent: 0,
            dropped: 0,
            duplicated: 0,
            lost_to_cuts: 0,
            down: false,
        }
    }

    /// A random delay up to the configured maximum.
    pub fn delay(&mut self) -> Duration {
        let max = self.cfg.max_delay.as_micros() as u64;
        Duration::from_micros(if max == 0 { 0 } else { self.rng.below(max) })
    }

    fn push(&mut self, at: Instant, dir: Dir, bytes: Vec<u8>) {
        self.counter += 1;
        self.queue.push(Reverse((at, self.counter, dir, bytes)));
    }

    /// A frame written by one side: maybe lost, maybe duplicated, always delayed.
    pub fn send(&mut self, now: Instant, dir: Dir, bytes: Vec<u8>) {
        self.sent += 1;
        if self.down {
            self.lost_to_cuts += 1;
            return;
        }
        if self.rng.chance(self.cfg.drop) {
            self.dropped += 1;
            return;
        }
        if self.rng.chance(self.cfg.duplicate) {
            self.duplicated += 1;
            let at = now + self.delay();
            self.push(at, dir, bytes.clone());
        }
        let at = now + self.delay();
        self.push(at, dir, bytes);
    }

    /// A frame from the service itself (pause/start publication): delayed, never lost.
    pub fn inject(&mut self, now: Instant, dir: Dir, bytes: Vec<u8>) {
        let at = now + self.delay();
        self.push(at, dir, bytes);
    }

    /// The socket is cut: every frame in flight is lost, and so is every frame written until
    /// [`Network::reconnect`]. Returns how many were in flight.
    pub fn cut(&mut self) -> u64 {
        let lost = self.queue.len() as u64;
        self.queue.clear();
        self.lost_to_cuts += lost;
        self.down = true;
        lost
    }

    /// A new socket: frames travel again.
    pub fn reconnect(&mut self) {
        self.down = false;
    }

    /// Whether the socket is down.
    pub fn is_down(&self) -> bool {
        self.down
    }

    /// Frames in flight.
    pub fn in_flight(&self) -> usize {
        self.queue.len()
    }

    /// When the next frame arrives, if any is in flight.
    pub fn next_arrival(&self) -> Option<Instant> {
        self.queue.peek().map(|Reverse((t, ..))| *t)
    }

    /// The next frame that has arrived by `now`.
    pub fn pop_due(&mut self, now: Instant) -> Option<(Dir, Vec<u8>)> {
        if self.next_arrival()? > now {
            return None;
        }
        self.queue.pop().map(|Reverse((_, _, dir, bytes))| (dir, bytes))
    }
}

/// A frame from the service itself (pause/start publication, §4.7).
pub fn publication(kind: MessageType) -> Vec<u8> {
    Frame {
        message_type: kind,
        schema_version: 1,
        created_date: UNIX_MS,
        sequence_number: 0,
        flags: 0,
        message_id: MessageId([0x42; 16]),
        payload_type: PayloadType::Null,
        payload: Vec::new(),
    }
    .encode()
}
