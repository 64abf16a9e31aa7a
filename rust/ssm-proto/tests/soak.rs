//! Soak in simulated time (issue 12): a multiplexed port forward held for 30 simulated minutes.
//!
//! A client [`Channel`] (`Config::client()`) and an agent [`Channel`] (`Config::agent()`: the
//! real agent's head-only resend, one message per 100 ms tick, §4.5) carry an smux session
//! (§7.4) through the simulated network of `common`: light loss, duplication and reordering,
//! busy and idle periods, and a socket cut every few minutes. A cut loses every frame in flight
//! and every frame written until the reconnect; the client then resends what is unacked
//! (`reset_transport`, §8.2) while the agent is never told (it learns nothing of a client's
//! reconnect: agent/session/datachannel/datachannel.go, ResendStreamDataMessageScheduler), so
//! what it lost comes back one message per tick.
//!
//! On top, 200 slots each open an smux stream, write pattern data at a modest pace, read the
//! agent's echo and close, over and over; a quarter of the streams are closed by the agent's
//! side instead (a destination that hangs up). Every byte is compared with the pattern at its
//! offset on arrival and every stream's SHA-256 is compared at its close, both ways. Memory is
//! checked all along: unacked messages within the send windows, out-of-order messages held
//! within the receive buffers (counted from the acks each side writes for messages ahead of
//! the one it expects, which is exactly what it keeps), smux output bounded by what the
//! streams may have outstanding, and every stream closed on both sides at the end.
//!
//! Wall time is a few seconds; run with `--nocapture` for the figures.

mod common;

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, HashMap};
use std::time::{Duration, Instant};

use common::*;
use sha2::{Digest, Sha256};
use ssm_proto::smux::{HEADER_LEN, Mux, MuxEvent, Side};
use ssm_proto::{Acknowledge, Channel, Config, Event, Frame, PayloadType};

/// Streams open at once.
const SLOTS: usize = 200;
/// How long streams keep being opened; the soak then lets the last ones finish.
const SOAK: Duration = Duration::from_secs(30 * 60);
/// Longest stream, in bytes each way.
const MAX_STREAM_LEN: usize = 4 * 1024;
/// Largest single write of a stream.
const MAX_WRITE: usize = 1024;
/// Bytes a stream may have written and not yet seen echoed (an application that waits for
/// replies). It bounds what all streams together can have in flight.
const STREAM_WINDOW: usize = 2 * 1024;
/// The agent moves smux output into its channel one read of up to 1024 bytes per millisecond
/// (agent/session/plugins/port/port_mux.go over the 1 KiB, 1 ms paced reader, §6.5).
const AGENT_PACE: Duration = Duration::from_millis(1);
/// The random block that stream data is cut from.
const PATTERN_LEN: usize = 1 << 20;

/// The network of a long-lived WebSocket: frames rarely lost (only MGS drops them), reordered
/// by up to 40 ms.
const SOAK_NET: NetConfig = NetConfig {
    drop: 0.005,
    duplicate: 0.005,
    max_delay: Duration::from_millis(40),
};

// ---------------------------------------------------------------------------------------------
// The streams' data and plan.

/// Stream data: stream `id`'s bytes are a window of one random block, so that both ends can
/// check any byte at its offset without keeping what was sent.
struct Patterns {
    block: Vec<u8>,
}

impl Patterns {
    fn new(seed: u64) -> Self {
        Self {
            block: Rng(seed ^ 0xB10C).bytes(PATTERN_LEN + MAX_STREAM_LEN),
        }
    }

    fn of(&self, id: u32, offset: usize, len: usize) -> &[u8] {
        let start = (id as usize).wrapping_mul(7919) % PATTERN_LEN + offset;
        &self.block[start..start + len]
    }
}

/// What stream `id` will carry, and whether the agent's side closes it: the same on both ends.
#[derive(Debug, Clone, Copy)]
struct Plan {
    len: usize,
    agent_closes: bool,
}

fn plan(seed: u64, id: u32) -> Plan {
    let mut rng = Rng(seed ^ u64::from(id).wrapping_mul(0x9E37_79B9));
    Plan {
        len: 1 + rng.below(MAX_STREAM_LEN as u64) as usize,
        agent_closes: rng.chance(0.25),
    }
}

/// One stream as the client's application sees it.
struct ClientStream {
    id: u32,
    plan: Plan,
    written: usize,
    echoed: usize,
    sent: Sha256,
    received: Sha256,
}

/// One stream as the agent's destination (an echo server) sees it.
struct AgentStream {
    plan: Plan,
    received: usize,
    digest: Sha256,
}

/// One of the 200 connection slots: at most one stream at a time, and when it next acts.
struct Slot {
    stream: Option<ClientStream>,
    wake: Instant,
}

// ---------------------------------------------------------------------------------------------
// Memory accounting of the out-of-order stores.

/// What one side holds out of order, reconstructed from outside: every message it acks ahead
/// of the one it expects is one it keeps (§4.3) until the gap before it is filled. (Once the
/// channel reports this itself, the two counts can be compared.)
#[derive(Default)]
struct Held {
    /// Sequence number → payload bytes of the messages held.
    seqs: BTreeMap<i64, usize>,
    bytes: usize,
    max_messages: usize,
    max_bytes: usize,
}

impl Held {
    fn acked(&mut self, seq: i64, expected: i64, sizes: &BTreeMap<i64, usize>) {
        if seq < expected || self.seqs.contains_key(&seq) {
            return;
        }
        let size = *sizes
            .get(&seq)
            .expect("a message acked ahead was sent and not yet delivered");
        self.seqs.insert(seq, size);
        self.bytes += size;
        self.max_messages = self.max_messages.max(self.seqs.len());
        self.max_bytes = self.max_bytes.max(self.bytes);
    }

    fn delivered_up_to(&mut self, expected: i64) {
        while let Some(entry) = self.seqs.first_entry() {
            if *entry.key() >= expected {
                break;
            }
            self.bytes -= entry.remove();
        }
    }
}

/// Forgets the sizes of messages the peer has delivered.
fn forget_below(sizes: &mut BTreeMap<i64, usize>, expected: i64) {
    while let Some(entry) = sizes.first_entry() {
        if *entry.key() >= expected {
            break;
        }
        entry.remove();
    }
}

/// The sequence number of an `acknowledge` frame, if `bytes` is one.
fn acked_seq(bytes: &[u8]) -> Option<i64> {
    if bytes.get(4..15) != Some(b"acknowledge".as_slice()) {
        return None;
    }
    let frame = Frame::decode(bytes).expect("we only write valid frames");
    Some(Acknowledge::parse(&frame.payload).expect("valid ack").sequence_number)
}

// ---------------------------------------------------------------------------------------------
// The two ends.

/// A channel with its smux session.
struct End {
    name: &'static str,
    ch: Channel,
    mux: Mux,
    /// Payload sizes of our messages the peer has not delivered yet, by sequence number.
    sizes: BTreeMap<i64, usize>,
    /// What the peer holds of ours out of order.
    held_by_peer: Held,
    max_unacked: usize,
    max_mux_output: usize,
    payload_bytes_sent: u64,
}

impl End {
    fn new(name: &'static str, config: Config, side: Side, keepalive: bool, now: Instant, seed: u64) -> Self {
        Self {
            name,
            ch: Channel::new(config, now, UNIX_MS, seed),
            mux: Mux::new(side, keepalive, now),
            sizes: BTreeMap::new(),
            held_by_peer: Held::default(),
            max_unacked: 0,
            max_mux_output: 0,
            payload_bytes_sent: 0,
        }
    }

    /// Moves one smux chunk into the channel.
    fn send_chunk(&mut self, now: Instant) -> bool {
        if !self.ch.can_send() {
            return false;
        }
        let Some(chunk) = self.mux.poll_output(CHUNK) else {
            return false;
        };
        let len = chunk.len();
        let seq = self
            .ch
            .send(now, PayloadType::Output, chunk)
            .unwrap_or_else(|e| panic!("{}: send refused with room in the window: {e}", self.name));
        self.sizes.insert(seq, len);
        self.payload_bytes_sent += len as u64;
        self.max_unacked = self.max_unacked.max(self.ch.unacked());
        true
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Scheduled {
    Cut,
    Reconnect,
}

#[derive(Default, Debug)]
struct Figures {
    streams_opened: u64,
    streams_closed_by_client: u64,
    streams_closed_by_agent: u64,
    bytes_up: u64,
    bytes_down: u64,
    cuts: u64,
    frames_in_flight_at_cuts: u64,
    downtime: Duration,
    busy: Duration,
    idle: Duration,
    iterations: u64,
}

struct Soak {
    seed: u64,
    start: Instant,
    now: Instant,
    net: Network,
    client: End,
    agent: End,
    patterns: Patterns,
    slots: Vec<Slot>,
    wakeups: BinaryHeap<Reverse<(Instant, usize)>>,
    by_id: HashMap<u32, usize>,
    agent_streams: HashMap<u32, AgentStream>,
    /// When the agent may move its next chunk of smux output into its channel.
    agent_next_read: Instant,
    /// Busy periods as (start, end); the time between them is idle.
    busy: Vec<(Instant, Instant)>,
    /// Cuts and reconnects, earliest last.
    script: Vec<(Instant, Scheduled)>,
    rng: Rng,
    figures: Figures,
}

impl Soak {
    fn new(seed: u64, keepalive: bool) -> Self {
        let start = Instant::now();
        let mut rng = Rng(seed);
        // Busy 1–4 minutes, idle 20 s – 3 minutes (well under MGS's 20-minute idle timeout).
        let mut busy = Vec::new();
        let mut t = start;
        let end = start + SOAK;
        let mut figures = Figures::default();
        while t < end {
            let b = Duration::from_secs(60 + rng.below(180));
            let until = (t + b).min(end);
            figures.busy += until - t;
            busy.push((t, until));
            let idle = Duration::from_secs(20 + rng.below(160));
            figures.idle += (until + idle).min(end) - until;
            t = until + idle;
        }
        // A cut every 2–4 minutes; the client is back 0.3–3 s later (ResumeSession, §8).
        let mut script = Vec::new();
        let mut t = start + Duration::from_secs(60 + rng.below(120));
        while t < end {
            let down = Duration::from_millis(300 + rng.below(2700));
            script.push((t, Scheduled::Cut));
            script.push((t + down, Scheduled::Reconnect));
            figures.downtime += down;
            t += Duration::from_secs(120 + rng.below(120));
        }
        script.sort_by_key(|e| Reverse(*e));
        let mut wakeups = BinaryHeap::new();
        let slots = (0..SLOTS)
            .map(|i| {
                let wake = start + Duration::from_millis(rng.below(5_000));
                wakeups.push(Reverse((wake, i)));
                Slot { stream: None, wake }
            })
            .collect();
        Self {
            seed,
            start,
            now: start,
            net: Network::new(SOAK_NET, seed),
            client: End::new("client", Config::client(), Side::Client, keepalive, start, seed + 1),
            agent: End::new("agent", Config::agent(), Side::Server, keepalive, start, seed + 2),
            patterns: Patterns::new(seed),
            slots,
            wakeups,
            by_id: HashMap::new(),
            agent_streams: HashMap::new(),
            agent_next_read: start,
            busy,
            script,
            rng,
            figures,
        }
    }

    fn elapsed(&self) -> Duration {
        self.now - self.start
    }

    /// When the current busy period ends, or `None` while idle (then: when the next begins).
    fn busy_until(&self) -> Result<Instant, Option<Instant>> {
        for &(from, to) in &self.busy {
            if self.now < from {
                return Err(Some(from));
            }
            if self.now < to {
                return Ok(to);
            }
        }
        Err(None)
    }

    fn wake(&mut self, slot: usize, at: Instant) {
        self.slots[slot].wake = at;
        self.wakeups.push(Reverse((at, slot)));
    }

    // --- the client's application -----------------------------------------------------------

    /// A slot's turn: open a stream, or write the next piece of its data.
    fn slot_turn(&mut self, i: usize) {
        match self.busy_until() {
            Ok(_) => {}
            // Idle: streams stay open and silent until the next busy period.
            Err(Some(next)) => {
                let at = next + Duration::from_millis(self.rng.below(5_000));
                self.wake(i, at);
                return;
            }
            // The soak is over: no new streams; the open ones finish.
            Err(None) if self.slots[i].stream.is_none() => return,
            Err(None) => {}
        }
        let Some(stream) = self.slots[i].stream.as_mut() else {
            let id = self
                .client
                .mux
                .open_stream()
                .expect("the client's smux session is open");
            self.figures.streams_opened += 1;
            self.by_id.insert(id, i);
            self.slots[i].stream = Some(ClientStream {
                id,
                plan: plan(self.seed, id),
                written: 0,
                echoed: 0,
                sent: Sha256::new(),
                received: Sha256::new(),
            });
            let at = self.now + Duration::from_millis(self.rng.below(300));
            self.wake(i, at);
            return;
        };
        let room = STREAM_WINDOW - (stream.written - stream.echoed);
        let left = stream.plan.len - stream.written;
        if left > 0 && room > 0 {
            let n = (1 + self.rng.below(MAX_WRITE as u64) as usize).min(left).min(room);
            let data = self.patterns.of(stream.id, stream.written, n);
            stream.sent.update(data);
            self.client
                .mux
                .write(stream.id, data)
                .expect("writes go to open streams");
            stream.written += n;
            self.figures.bytes_up += n as u64;
        }
        if stream.written < stream.plan.len {
            let at = self.now + Duration::from_millis(1_000 + self.rng.below(8_000));
            self.wake(i, at);
        }
    }

    /// Echo data for the client's stream `id`.
    fn client_data(&mut self, id: u32, data: &[u8]) {
        let i = *self
            .by_id
            .get(&id)
            .unwrap_or_else(|| panic!("data for stream {id}, which the client has closed"));
        let stream = self.slots[i]
            .stream
            .as_mut()
            .expect("a slot with a known id has a stream");
        assert!(
            stream.echoed + data.len() <= stream.written,
            "stream {id}: {} bytes echoed back of {} written (repeated data)",
            stream.echoed + data.len(),
            stream.written
        );
        assert_eq!(
            data,
            self.patterns.of(id, stream.echoed, data.len()),
            "stream {id}: echo differs at offset {}",
            stream.echoed
        );
        stream.received.update(data);
        stream.echoed += data.len();
        self.figures.bytes_down += data.len() as u64;
        if stream.echoed == stream.plan.len && !stream.plan.agent_closes {
            self.client.mux.close_stream(id);
            self.finish(i, false);
        }
    }

    /// The agent's side closed stream `id`: everything must have arrived before its FIN.
    fn client_closed(&mut self, id: u32) {
        let i = self
            .by_id
            .get(&id)
            .copied()
            .unwrap_or_else(|| panic!("FIN for stream {id}, unknown to the client"));
        let stream = self.slots[i]
            .stream
            .as_ref()
            .expect("a slot with a known id has a stream");
        assert!(
            stream.plan.agent_closes,
            "stream {id}: closed by the agent's side unasked"
        );
        self.finish(i, true);
    }

    fn finish(&mut self, i: usize, by_agent: bool) {
        let stream = self.slots[i].stream.take().expect("finishing an open stream");
        let id = stream.id;
        self.by_id.remove(&id);
        assert_eq!(
            stream.written, stream.plan.len,
            "stream {id}: closed before all was written"
        );
        assert_eq!(
            stream.echoed, stream.plan.len,
            "stream {id}: {} of {} bytes came back (lost data)",
            stream.echoed, stream.plan.len
        );
        assert_eq!(
            stream.sent.finalize(),
            stream.received.finalize(),
            "stream {id}: SHA-256 of the echo differs"
        );
        if by_agent {
            self.figures.streams_closed_by_agent += 1;
        } else {
            self.figures.streams_closed_by_client += 1;
        }
        let at = self.now + Duration::from_millis(self.rng.below(2_000));
        self.wake(i, at);
    }

    // --- the agent's destinations: echo servers ----------------------------------------------

    fn agent_event(&mut self, ev: MuxEvent) {
        match ev {
            MuxEvent::Opened(id) => {
                let fresh = self
                    .agent_streams
                    .insert(
                        id,
                        AgentStream {
                            plan: plan(self.seed, id),
                            received: 0,
                            digest: Sha256::new(),
                        },
                    )
                    .is_none();
                assert!(fresh, "stream {id} opened twice");
            }
            MuxEvent::Data(id, data) => {
                let s = self
                    .agent_streams
                    .get_mut(&id)
                    .unwrap_or_else(|| panic!("agent: data for unknown stream {id}"));
                assert!(
                    s.received + data.len() <= s.plan.len,
                    "agent: stream {id} got {} bytes of {} (repeated data)",
                    s.received + data.len(),
                    s.plan.len
                );
                assert_eq!(
                    data,
                    self.patterns.of(id, s.received, data.len()),
                    "agent: stream {id} differs at offset {}",
                    s.received
                );
                s.received += data.len();
                s.digest.update(&data);
                self.agent.mux.write(id, &data).expect("echo to an open stream");
                if s.received == s.plan.len && s.plan.agent_closes {
                    self.agent_done(id);
                    self.agent.mux.close_stream(id);
                }
            }
            MuxEvent::Closed(id) => {
                // The client's FIN; answered with ours, as the agent's streams do.
                self.agent_done(id);
                self.agent.mux.answer_fin(id);
            }
        }
    }

    fn agent_done(&mut self, id: u32) {
        let s = self
            .agent_streams
            .remove(&id)
            .unwrap_or_else(|| panic!("agent: stream {id} closed twice"));
        assert_eq!(
            s.received, s.plan.len,
            "agent: stream {id} closed after {} of {} bytes (lost data)",
            s.received, s.plan.len
        );
        let want = Sha256::digest(self.patterns.of(id, 0, s.plan.len));
        assert_eq!(s.digest.finalize(), want, "agent: stream {id}: SHA-256 differs");
    }

    // --- moving frames -----------------------------------------------------------------------

    /// Delivers what each channel has for its smux session, and its smux events.
    fn drain(&mut self) {
        while let Some(ev) = self.client.ch.poll_event() {
            match ev {
                Event::Stream { payload, .. } => {
                    self.client
                        .mux
                        .handle_input(self.now, &payload)
                        .unwrap_or_else(|e| panic!("client smux: {e}"));
                }
                other => panic!("client: unexpected event {other:?}"),
            }
            while let Some(ev) = self.client.mux.poll_event() {
                match ev {
                    MuxEvent::Data(id, data) => self.client_data(id, &data),
                    MuxEvent::Closed(id) => self.client_closed(id),
                    MuxEvent::Opened(id) => panic!("client: the agent opened stream {id}"),
                }
            }
        }
        self.agent
            .held_by_peer
            .delivered_up_to(self.client.ch.expected_sequence_number());
        while let Some(ev) = self.agent.ch.poll_event() {
            match ev {
                Event::Stream {
                    payload,
                    sequence_number,
                    ..
                } => {
                    self.agent
                        .mux
                        .handle_input(self.now, &payload)
                        .unwrap_or_else(|e| panic!("agent smux: {e}"));
                    while let Some(ev) = self.agent.mux.poll_event() {
                        self.agent_event(ev);
                    }
                    // Written to the destinations: now the agent acks it.
                    self.agent.ch.processed(self.now, sequence_number, true);
                }
                other => panic!("agent: unexpected event {other:?}"),
            }
        }
        self.client
            .held_by_peer
            .delivered_up_to(self.agent.ch.expected_sequence_number());
        forget_below(&mut self.agent.sizes, self.client.ch.expected_sequence_number());
        forget_below(&mut self.client.sizes, self.agent.ch.expected_sequence_number());
    }

    /// Moves smux output into the channels (the agent's paced) and frames onto the network.
    fn flush(&mut self) {
        while self.client.send_chunk(self.now) {}
        if self.agent.mux.pending_output() > 0 && self.agent_next_read <= self.now && self.agent.send_chunk(self.now) {
            self.agent_next_read = self.now + AGENT_PACE;
        }
        for end in [&mut self.client, &mut self.agent] {
            end.max_mux_output = end.max_mux_output.max(end.mux.pending_output());
        }
        while let Some(bytes) = self.client.ch.poll_transmit() {
            if let Some(seq) = acked_seq(&bytes) {
                let expected = self.client.ch.expected_sequence_number();
                self.agent.held_by_peer.acked(seq, expected, &self.agent.sizes);
            }
            self.net.send(self.now, Dir::ToAgent, bytes.into());
        }
        while let Some(bytes) = self.agent.ch.poll_transmit() {
            if let Some(seq) = acked_seq(&bytes) {
                let expected = self.agent.ch.expected_sequence_number();
                self.client.held_by_peer.acked(seq, expected, &self.client.sizes);
            }
            self.net.send(self.now, Dir::ToClient, bytes.into());
        }
    }

    fn next_instant(&mut self) -> Option<Instant> {
        let agent_read = (self.agent.mux.pending_output() > 0).then_some(self.agent_next_read.max(self.now));
        let slot = loop {
            match self.wakeups.peek() {
                Some(Reverse((at, i))) if self.slots[*i].wake != *at => {
                    self.wakeups.pop();
                }
                Some(Reverse((at, _))) => break Some(*at),
                None => break None,
            }
        };
        [
            self.net.next_arrival(),
            self.client.ch.poll_timeout(),
            self.agent.ch.poll_timeout(),
            self.client.mux.poll_timeout(),
            self.agent.mux.poll_timeout(),
            self.script.last().map(|(at, _)| *at),
            agent_read,
            slot,
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// One event: advance the clock to the next instant anything happens and do all that is due.
    fn step(&mut self) {
        self.figures.iterations += 1;
        let next = self
            .next_instant()
            .expect("the smux sessions always have something pending");
        self.now = self.now.max(next);
        let now = self.now;
        while self.script.last().is_some_and(|(at, _)| *at <= now) {
            let (_, what) = self.script.pop().expect("checked");
            match what {
                Scheduled::Cut => {
                    self.figures.cuts += 1;
                    self.figures.frames_in_flight_at_cuts += self.net.cut();
                }
                Scheduled::Reconnect => {
                    self.net.reconnect();
                    // Only the client knows of the new socket.
                    self.client.ch.reset_transport(now);
                }
            }
        }
        while let Some((dir, bytes)) = self.net.pop_due(now) {
            let end = match dir {
                Dir::ToAgent => &mut self.agent,
                Dir::ToClient => &mut self.client,
            };
            end.ch
                .handle_frame(now, &bytes)
                .unwrap_or_else(|e| panic!("{}: valid frame rejected: {e}", end.name));
            self.drain();
            self.flush();
        }
        for end in [&mut self.client, &mut self.agent] {
            if end.ch.poll_timeout().is_some_and(|t| t <= now) {
                end.ch.handle_timeout(now);
            }
            if end.mux.poll_timeout().is_some_and(|t| t <= now) {
                end.mux
                    .handle_timeout(now)
                    .unwrap_or_else(|e| panic!("{}: smux session ended at {:?}: {e}", end.name, now - self.start));
            }
        }
        while let Some(&Reverse((at, i))) = self.wakeups.peek() {
            if at > now {
                break;
            }
            self.wakeups.pop();
            if self.slots[i].wake == at {
                self.slot_turn(i);
            }
        }
        self.flush();
        self.check_bounds();
    }

    fn check_bounds(&self) {
        for (end, peer) in [(&self.client, &self.agent), (&self.agent, &self.client)] {
            assert!(end.ch.unacked() <= end.ch.config().send_window);
            assert!(
                end.held_by_peer.seqs.len() <= peer.ch.config().receive_buffer,
                "{} holds {} messages out of order, more than its buffer",
                peer.name,
                end.held_by_peer.seqs.len()
            );
        }
        // smux output can only be what the streams have outstanding, with frame headers.
        let bound = SLOTS * (STREAM_WINDOW * (1 + HEADER_LEN) + 3 * HEADER_LEN);
        assert!(self.client.mux.pending_output() <= bound);
        assert!(self.agent.mux.pending_output() <= bound);
        assert!(self.client.mux.open_streams() <= SLOTS);
        assert!(self.agent.mux.open_streams() <= SLOTS);
    }

    fn quiet(&self) -> bool {
        self.now >= self.start + SOAK
            && self.script.is_empty()
            && self.slots.iter().all(|s| s.stream.is_none())
            && self.agent_streams.is_empty()
            && self.client.ch.unacked() == 0
            && self.agent.ch.unacked() == 0
            && self.client.mux.pending_output() == 0
            && self.agent.mux.pending_output() == 0
    }

    fn run(&mut self) {
        // The last streams need a few minutes at most after the soak; the head-only agent may
        // still be recovering from the last cut.
        let limit = SOAK + Duration::from_secs(15 * 60);
        while !self.quiet() {
            self.step();
            assert!(
                self.elapsed() <= limit,
                "not finished {limit:?} into the soak: {} streams open, client unacked {}, agent \
                 unacked {}",
                self.slots.iter().filter(|s| s.stream.is_some()).count(),
                self.client.ch.unacked(),
                self.agent.ch.unacked(),
            );
        }
    }

    fn report(&self, label: &str, wall: Duration) {
        let f = &self.figures;
        let (c, a) = (self.client.ch.stats(), self.agent.ch.stats());
        eprintln!(
            "[{label}] {:.1?} simulated ({:?} busy, {:?} idle, {:?} down) in {wall:.2?} wall, {} \
             iterations\n  streams: {} opened, {} closed by the client, {} by the agent; \
             {} B up, {} B down (payload of the channel: {} B up, {} B down)\n  cuts: {}, {} \
             frames in flight lost, {} written while down; network: {} frames, {} dropped, {} \
             duplicated\n  client: {} msgs sent, {} retransmissions, max unacked {}; agent held \
             of it out of order at most {} msgs / {} B\n  agent:  {} msgs sent, {} \
             retransmissions, max unacked {}; client held of it out of order at most {} msgs / \
             {} B\n  smux output waiting at most: client {} B, agent {} B",
            self.elapsed(),
            f.busy,
            f.idle,
            f.downtime,
            f.iterations,
            f.streams_opened,
            f.streams_closed_by_client,
            f.streams_closed_by_agent,
            f.bytes_up,
            f.bytes_down,
            self.client.payload_bytes_sent,
            self.agent.payload_bytes_sent,
            f.cuts,
            f.frames_in_flight_at_cuts,
            self.net.lost_to_cuts - f.frames_in_flight_at_cuts,
            self.net.sent,
            self.net.dropped,
            self.net.duplicated,
            c.messages_sent,
            c.retransmissions,
            self.client.max_unacked,
            self.client.held_by_peer.max_messages,
            self.client.held_by_peer.max_bytes,
            a.messages_sent,
            a.retransmissions,
            self.agent.max_unacked,
            self.agent.held_by_peer.max_messages,
            self.agent.held_by_peer.max_bytes,
            self.client.max_mux_output,
            self.agent.max_mux_output,
        );
    }
}

fn soak(seed: u64, keepalive: bool, label: &str) {
    let wall = Instant::now();
    let mut sim = Soak::new(seed, keepalive);
    sim.run();
    sim.report(label, wall.elapsed());
    let f = &sim.figures;
    // Every stream opened was closed on both ends, with all its bytes.
    assert_eq!(f.streams_opened, f.streams_closed_by_client + f.streams_closed_by_agent);
    assert!(sim.by_id.is_empty() && sim.agent_streams.is_empty());
    assert_eq!(sim.client.mux.open_streams(), 0);
    assert_eq!(sim.agent.mux.open_streams(), 0);
    assert!(!sim.client.mux.is_closed() && !sim.agent.mux.is_closed());
    assert_eq!(f.bytes_up, f.bytes_down);
    // Nothing held out of order once all is delivered.
    assert!(sim.client.held_by_peer.seqs.is_empty() && sim.agent.held_by_peer.seqs.is_empty());
    assert_eq!(sim.client.ch.stats().frames_rejected, 0);
    assert_eq!(sim.agent.ch.stats().frames_rejected, 0);
    // The soak really was one: long, churning, cut, and recovering.
    assert!(sim.elapsed() >= SOAK);
    assert!(f.cuts >= 7, "only {} cuts", f.cuts);
    assert!(f.frames_in_flight_at_cuts > 0);
    assert!(f.streams_opened > 5 * SLOTS as u64, "only {} streams", f.streams_opened);
    assert!(f.streams_closed_by_agent > 0 && f.streams_closed_by_client > 0);
    assert!(sim.agent.ch.stats().retransmissions > 0 && sim.client.ch.stats().retransmissions > 0);
    assert!(f.idle >= Duration::from_secs(5 * 60), "idle only {:?}", f.idle);
}

#[test]
fn soak_30_minutes_200_streams_cuts_keepalive_off() {
    soak(0x50A4_0001, false, "soak, keepalive off");
}

#[test]
fn soak_30_minutes_200_streams_cuts_keepalive_on() {
    // Agents 3.0.196.0 < v <= 3.1.1511.0 run smux with keepalive (§5.5, §7.4): NOPs every 10 s
    // both ways, and 30 s without a frame ends the session, across idle periods and cuts alike.
    soak(0x50A4_0002, true, "soak, keepalive on");
}
