//! The reliable delivery layer (§4), sans-IO.
//!
//! Each side numbers its own stream messages from 0, the receiver acks every one of them
//! individually, and the sender keeps unacked messages for retransmission. The caller drives a
//! [`Channel`] with the frames it receives ([`Channel::handle_frame`]) and the passage of time
//! ([`Channel::handle_timeout`]), and drains what to send ([`Channel::poll_transmit`]) and what
//! happened ([`Channel::poll_event`]). Time is always passed in; nothing here reads a clock.
//!
//! Differences from the official client, each a fix of a §9 weak point:
//! - unacked messages live in a map keyed by sequence number (item 8);
//! - every expired message is resent, each on its own timer with exponential backoff, and RTT
//!   samples skip retransmitted messages (Karn's rule; items 2 and 3);
//! - a full send window refuses new data instead of evicting unacked messages (item 4);
//! - duplicates are re-acked (item 5);
//! - pause/start publication are honoured as the agent does (item 14, §4.7).

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::{Duration, Instant};

use bytes::Bytes;

use crate::error::{DecodeError, SendError};
use crate::frame::{FLAG_SYN, FLAGS_ACK, Frame, MessageId, MessageType, PayloadType};
use crate::payload::{Acknowledge, ChannelClosed};

/// Which end of the data channel this is; it decides which message type is ours (§3.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Sends `input_stream_data`, receives `output_stream_data`.
    Client,
    /// Sends `output_stream_data`, receives `input_stream_data` (the emulator).
    Agent,
}

impl Role {
    fn outgoing(self) -> MessageType {
        match self {
            Role::Client => MessageType::InputStreamData,
            Role::Agent => MessageType::OutputStreamData,
        }
    }

    fn incoming(self) -> MessageType {
        match self {
            Role::Client => MessageType::OutputStreamData,
            Role::Agent => MessageType::InputStreamData,
        }
    }
}

/// How unacked messages are retransmitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RetransmitPolicy {
    /// Every message on its own timer (RTO doubled per attempt, capped): ours.
    PerMessage,
    /// Only the oldest unacked message, checked on a fixed tick: the agent's way (§4.5), kept
    /// so the emulator can behave like the real thing.
    HeadOnly {
        /// Scheduler tick (100 ms in the agent).
        tick: Duration,
    },
}

/// Tunables of a [`Channel`]. [`Config::client`] and [`Config::agent`] give the defaults.
#[derive(Debug, Clone)]
pub struct Config {
    /// Our side.
    pub role: Role,
    /// Most unacked messages at once; beyond it [`Channel::send`] refuses (back-pressure).
    pub send_window: usize,
    /// Most out-of-order messages buffered; beyond it they are dropped unacked (§4.3).
    pub receive_buffer: usize,
    /// Most payload bytes buffered out of order; beyond it they are dropped unacked. A message
    /// that was acked is never dropped: it is acked only once it is kept.
    pub receive_buffer_bytes: usize,
    /// With the send window full, send anyway without keeping a copy for retransmission
    /// instead of refusing: the agent's way (agent/session/datachannel/datachannel.go,
    /// AddDataToOutgoingMessageBuffer returns when the buffer is at capacity; the message was
    /// already written). Such a message is lost for good if the link loses it.
    pub untracked_beyond_window: bool,
    /// Initial smoothed RTT (§4.5: 100 ms).
    pub initial_rtt: Duration,
    /// Initial retransmission timeout (§4.5: 200 ms).
    pub initial_rto: Duration,
    /// Upper bound of the retransmission timeout (§4.5: 1 s).
    pub max_rto: Duration,
    /// Clock granularity G (§4.5: 10 ms).
    pub clock_granularity: Duration,
    /// Retransmission strategy.
    pub retransmit: RetransmitPolicy,
    /// Set SYN on our sequence-0 message, as the agent does (§3.5).
    pub syn_on_first: bool,
    /// Ack an in-order message only once the caller has processed it ([`Channel::processed`]),
    /// and deliver nothing after it until then: the agent's way (it writes the payload to the
    /// pty or socket, then acks; a failed write is not acked and the peer retransmits it).
    /// Out-of-order messages are still acked on arrival, as the agent does.
    pub ack_after_processing: bool,
    /// Refuse a frame whose payload does not match its `PayloadDigest` (§3.6): the plugin
    /// does. The agent does not: its `Validate` checks only the header length, the message
    /// type and the created date (agent/session/contracts/agentmessage.go).
    pub verify_digest: bool,
}

impl Config {
    /// Client defaults.
    pub fn client() -> Self {
        Self {
            role: Role::Client,
            // 1 MiB of 1 KiB messages in flight: 10 MB/s at a 100 ms round trip, over ten times
            // the plugin's upload. Each kept copy is memory, and an upload to an agent that acks
            // slower than it is fed fills the window: at 2048 that was 3.3 MiB on the helper's
            // peak RSS, at 4096 more still, and neither went faster against the emulator.
            send_window: 1024,
            // The byte bound decides; the count only bounds the per-message overhead of tiny
            // payloads. It matches the agent's OutgoingMessageBufferCapacity
            // (agent/session/config/config.go): the agent tracks no more than that, so keeping
            // more would not spare a resend. At 10,000 the count bound dropped 1 KiB messages
            // long before the byte bound, and against the head-only agent (§4.5) every
            // dropped message costs a 100 ms tick: 24 MiB through 5 % loss took 1,620 s
            // simulated instead of 264 s (simulated_pair.rs).
            receive_buffer: 100_000,
            receive_buffer_bytes: 32 << 20,
            untracked_beyond_window: false,
            initial_rtt: Duration::from_millis(100),
            initial_rto: Duration::from_millis(200),
            max_rto: Duration::from_secs(1),
            clock_granularity: Duration::from_millis(10),
            retransmit: RetransmitPolicy::PerMessage,
            syn_on_first: false,
            ack_after_processing: false,
            verify_digest: true,
        }
    }

    /// Agent defaults, as §4.4/§4.5 describe the real agent (head-only resend every 100 ms).
    pub fn agent() -> Self {
        Self {
            role: Role::Agent,
            // agent/session/config/config.go: OutgoingMessageBufferCapacity and
            // IncomingMessageBufferCapacity; no byte limit.
            send_window: 100_000,
            receive_buffer: 100_000,
            receive_buffer_bytes: usize::MAX,
            untracked_beyond_window: true,
            retransmit: RetransmitPolicy::HeadOnly {
                tick: Duration::from_millis(100),
            },
            syn_on_first: true,
            // agent/session/datachannel/datachannel.go handleStreamDataMessage: process, then
            // SendAcknowledgeMessage; an error returns before the ack.
            ack_after_processing: true,
            verify_digest: false,
            ..Self::client()
        }
    }
}

/// Something the caller must act on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// An in-order stream message from the peer, already acked.
    Stream {
        /// Payload type (§3.4).
        payload_type: PayloadType,
        /// Payload bytes.
        payload: Vec<u8>,
        /// Its sequence number.
        sequence_number: i64,
    },
    /// The service closed the channel (§4.8).
    ChannelClosed(ChannelClosed),
    /// `pause_publication` received: we hold new data and retransmissions (§4.7).
    Paused,
    /// Publication resumed (`start_publication`, or any stream data/ack from the peer).
    Resumed,
    /// A message type we do not handle (logged by callers).
    Ignored(MessageType),
}

/// Counters for diagnostics and benchmarks.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    /// Stream messages handed to [`Channel::send`].
    pub messages_sent: u64,
    /// Retransmitted frames.
    pub retransmissions: u64,
    /// Stream messages delivered in order.
    pub messages_received: u64,
    /// Duplicates received (and re-acked).
    pub duplicates_received: u64,
    /// Frames rejected by the decoder.
    pub frames_rejected: u64,
    /// In-order messages refused because the receiver was not ready (left unacked).
    pub refused_not_ready: u64,
    /// Messages sent past a full window without a copy for retransmission
    /// ([`Config::untracked_beyond_window`]).
    pub sent_untracked: u64,
}

#[derive(Debug)]
struct Outgoing {
    /// The encoded frame, shared with the transmit queue (each transmission is a reference,
    /// not a copy).
    frame: Bytes,
    /// When it first went out (kept across retransmissions).
    first_sent: Option<Instant>,
    last_sent: Option<Instant>,
    deadline: Option<Instant>,
    attempts: u32,
}

/// RTT estimator of §4.5 (RFC 6298 shape, the protocol's constants).
#[derive(Debug, Clone)]
struct RttEstimator {
    srtt: Duration,
    rttvar: Duration,
    rto: Duration,
    granularity: Duration,
    max: Duration,
}

impl RttEstimator {
    fn sample(&mut self, r: Duration) {
        let diff = self.srtt.abs_diff(r);
        // RFC 6298 weights, in integer nanoseconds (one sample per ack; no float conversions).
        self.rttvar = (self.rttvar.saturating_mul(3) / 4).saturating_add(diff / 4);
        self.srtt = (self.srtt.saturating_mul(7) / 8).saturating_add(r / 8);
        self.rto = (self.srtt + self.granularity.max(self.rttvar * 4)).min(self.max);
    }
}

/// Deterministic id source seeded by the caller (splitmix64), so the core reads no entropy.
#[derive(Debug, Clone)]
pub(crate) struct IdSource(u64);

impl IdSource {
    pub(crate) fn new(seed: u64) -> Self {
        Self(seed)
    }

    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A random-looking UUID v4.
    pub(crate) fn uuid(&mut self) -> MessageId {
        let mut b = [0u8; 16];
        b[..8].copy_from_slice(&self.next_u64().to_be_bytes());
        b[8..].copy_from_slice(&self.next_u64().to_be_bytes());
        b[6] = (b[6] & 0x0f) | 0x40;
        b[8] = (b[8] & 0x3f) | 0x80;
        MessageId(b)
    }
}

/// One end of the reliable data channel.
#[derive(Debug)]
pub struct Channel {
    config: Config,
    epoch: Instant,
    epoch_unix_ms: u64,
    ids: IdSource,
    next_seq: i64,
    unacked: BTreeMap<i64, Outgoing>,
    timers: BTreeSet<(Instant, i64)>,
    head_tick: Option<Instant>,
    rtt: RttEstimator,
    expected: i64,
    out_of_order: BTreeMap<i64, Frame>,
    /// Payload bytes held in `out_of_order`.
    out_of_order_bytes: usize,
    /// The in-order message handed out and not yet [`Channel::processed`] (with
    /// `ack_after_processing`): its sequence number, type and id, for the ack.
    processing: Option<(i64, MessageType, MessageId)>,
    receive_ready: bool,
    paused: bool,
    closed: bool,
    transmit: VecDeque<Bytes>,
    events: VecDeque<Event>,
    stats: Stats,
}

impl Channel {
    /// A channel whose clock starts at `now`, which corresponds to `unix_ms` wall-clock
    /// milliseconds (used for `CreatedDate`); `seed` feeds message ids.
    pub fn new(config: Config, now: Instant, unix_ms: u64, seed: u64) -> Self {
        let rtt = RttEstimator {
            srtt: config.initial_rtt,
            rttvar: Duration::ZERO,
            rto: config.initial_rto,
            granularity: config.clock_granularity,
            max: config.max_rto,
        };
        Self {
            config,
            epoch: now,
            epoch_unix_ms: unix_ms.max(1),
            ids: IdSource::new(seed),
            next_seq: 0,
            unacked: BTreeMap::new(),
            timers: BTreeSet::new(),
            head_tick: None,
            rtt,
            expected: 0,
            out_of_order: BTreeMap::new(),
            out_of_order_bytes: 0,
            processing: None,
            receive_ready: true,
            paused: false,
            closed: false,
            transmit: VecDeque::new(),
            events: VecDeque::new(),
            stats: Stats::default(),
        }
    }

    /// The configuration in force.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Counters so far.
    pub fn stats(&self) -> Stats {
        self.stats
    }

    /// Current retransmission timeout.
    pub fn rto(&self) -> Duration {
        self.rtt.rto
    }

    /// Whether `pause_publication` is in force.
    pub fn is_paused(&self) -> bool {
        self.paused
    }

    /// Whether the channel was closed (locally or by `channel_closed`).
    pub fn is_closed(&self) -> bool {
        self.closed
    }

    /// Number of our messages not acked yet.
    pub fn unacked(&self) -> usize {
        self.unacked.len()
    }

    /// Whether [`Channel::send`] would accept a message now.
    pub fn can_send(&self) -> bool {
        !self.closed && (self.config.untracked_beyond_window || self.unacked.len() < self.config.send_window)
    }

    /// When the oldest message still unacked first went out, if one did: how long the peer
    /// has left our data unacknowledged despite retransmissions.
    pub fn oldest_unacked_since(&self) -> Option<Instant> {
        self.unacked.values().find_map(|e| e.first_sent)
    }

    /// Out-of-order messages held, and their payload bytes.
    pub fn out_of_order_held(&self) -> (usize, usize) {
        (self.out_of_order.len(), self.out_of_order_bytes)
    }

    /// Room left in the send window.
    pub fn send_capacity(&self) -> usize {
        self.config.send_window.saturating_sub(self.unacked.len())
    }

    /// The sequence number the next [`Channel::send`] will use.
    pub fn next_sequence_number(&self) -> i64 {
        self.next_seq
    }

    /// The next in-order sequence number expected from the peer.
    pub fn expected_sequence_number(&self) -> i64 {
        self.expected
    }

    /// Whether the receiver accepts in-order messages. When false they are dropped unacked and
    /// the peer retransmits them later: the agent's "handler not ready" rule (§4.4), and our
    /// back-pressure when the local sink is full (§9 item 9).
    pub fn set_receive_ready(&mut self, ready: bool) {
        self.receive_ready = ready;
    }

    fn created_date(&self, now: Instant) -> u64 {
        let elapsed = now.saturating_duration_since(self.epoch).as_millis();
        self.epoch_unix_ms
            .saturating_add(u64::try_from(elapsed).unwrap_or(u64::MAX))
    }

    /// Numbers, buffers and (unless paused) transmits one stream message. Returns its sequence
    /// number. Empty payloads are accepted (flags and size messages are never empty anyway).
    /// The payload is read once, into the frame.
    pub fn send(
        &mut self,
        now: Instant,
        payload_type: PayloadType,
        payload: impl AsRef<[u8]>,
    ) -> Result<i64, SendError> {
        if self.closed {
            return Err(SendError::Closed);
        }
        let untracked = self.unacked.len() >= self.config.send_window;
        if untracked && !self.config.untracked_beyond_window {
            return Err(SendError::WindowFull);
        }
        let seq = self.next_seq;
        self.next_seq += 1;
        let flags = if seq == 0 && self.config.syn_on_first {
            FLAG_SYN
        } else {
            0
        };
        let frame = Frame {
            message_type: self.config.role.outgoing(),
            schema_version: 1,
            created_date: self.created_date(now),
            sequence_number: seq,
            flags,
            message_id: self.ids.uuid(),
            payload_type,
            payload: Vec::new(),
        }
        .encode_with_payload(payload.as_ref());
        let frame = Bytes::from(frame);
        if untracked {
            self.stats.messages_sent += 1;
            self.stats.sent_untracked += 1;
            if !self.paused {
                self.transmit.push_back(frame);
            }
            return Ok(seq);
        }
        self.unacked.insert(
            seq,
            Outgoing {
                frame,
                first_sent: None,
                last_sent: None,
                deadline: None,
                attempts: 0,
            },
        );
        self.stats.messages_sent += 1;
        if !self.paused {
            self.transmit_entry(now, seq);
        }
        Ok(seq)
    }

    fn transmit_entry(&mut self, now: Instant, seq: i64) {
        let rto = self.rtt.rto;
        let max = self.config.max_rto;
        let per_message = matches!(self.config.retransmit, RetransmitPolicy::PerMessage);
        let Some(entry) = self.unacked.get_mut(&seq) else {
            return;
        };
        if entry.last_sent.is_some() {
            entry.attempts += 1;
            self.stats.retransmissions += 1;
        }
        entry.last_sent = Some(now);
        entry.first_sent.get_or_insert(now);
        if let Some(old) = entry.deadline.take() {
            self.timers.remove(&(old, seq));
        }
        if per_message {
            let backoff = rto.saturating_mul(1u32 << entry.attempts.min(6)).min(max);
            let deadline = now + backoff;
            entry.deadline = Some(deadline);
            self.timers.insert((deadline, seq));
        }
        self.transmit.push_back(entry.frame.clone());
    }

    /// An unnumbered frame (§3.3: `acknowledge`, `channel_closed`, publication control,
    /// `agent_session_state`): sequence 0, payload type 0, never retransmitted. `flags` is 0
    /// except for acks and session state (3).
    pub fn unnumbered(&mut self, now: Instant, message_type: MessageType, flags: u64, payload: Vec<u8>) -> Frame {
        Frame {
            message_type,
            schema_version: 1,
            created_date: self.created_date(now),
            sequence_number: 0,
            flags,
            message_id: self.ids.uuid(),
            payload_type: PayloadType::Null,
            payload,
        }
    }

    /// A fresh UUID v4 from the channel's id source (for payloads that carry their own id).
    pub fn new_message_id(&mut self) -> MessageId {
        self.ids.uuid()
    }

    /// Wall-clock milliseconds corresponding to `now`.
    pub fn unix_ms(&self, now: Instant) -> u64 {
        self.created_date(now)
    }

    /// Sends an acknowledgement of message `seq` of `message_type` with id `message_id` (§4.2).
    fn ack(&mut self, now: Instant, message_type: &MessageType, message_id: MessageId, seq: i64) {
        let payload = Acknowledge::json_for(message_type.as_str(), &message_id, seq);
        let ack = self.unnumbered(now, MessageType::Acknowledge, FLAGS_ACK, payload);
        self.transmit.push_back(ack.encode().into());
    }

    /// Handles one received WebSocket message (text or binary, §2.3).
    ///
    /// A frame that fails validation is dropped without an ack and its error returned for
    /// logging; nothing in it can panic this code.
    pub fn handle_frame(&mut self, now: Instant, bytes: &[u8]) -> Result<(), DecodeError> {
        let frame = match Frame::decode_with(bytes, self.config.verify_digest) {
            Ok(f) => f,
            Err(e) => {
                self.stats.frames_rejected += 1;
                return Err(e);
            }
        };
        self.handle_decoded(now, frame);
        Ok(())
    }

    /// Handles an already decoded frame.
    pub fn handle_decoded(&mut self, now: Instant, frame: Frame) {
        match &frame.message_type {
            t if *t == self.config.role.incoming() => {
                self.resume_if_paused(now);
                self.handle_stream(now, frame);
            }
            MessageType::Acknowledge => {
                self.resume_if_paused(now);
                match Acknowledge::parse_sequence_number(&frame.payload) {
                    Ok(seq) => self.handle_ack(now, seq),
                    Err(_) => self.stats.frames_rejected += 1,
                }
            }
            MessageType::PausePublication => {
                if !self.paused {
                    self.paused = true;
                    self.events.push_back(Event::Paused);
                }
            }
            MessageType::StartPublication => self.resume_if_paused(now),
            MessageType::ChannelClosed => {
                self.closed = true;
                self.events
                    .push_back(Event::ChannelClosed(ChannelClosed::parse_lenient(&frame.payload)));
            }
            other => self.events.push_back(Event::Ignored(other.clone())),
        }
    }

    fn resume_if_paused(&mut self, now: Instant) {
        if !self.paused {
            return;
        }
        self.paused = false;
        self.events.push_back(Event::Resumed);
        // Messages numbered while paused were never sent; send them now, in order.
        let never_sent: Vec<i64> = self
            .unacked
            .iter()
            .filter(|(_, e)| e.last_sent.is_none())
            .map(|(s, _)| *s)
            .collect();
        for seq in never_sent {
            self.transmit_entry(now, seq);
        }
    }

    fn handle_stream(&mut self, now: Instant, frame: Frame) {
        let seq = frame.sequence_number;
        if self.processing() == Some(seq) {
            return; // still being processed: acked (or not) when that ends
        }
        if seq < self.expected {
            // §4.4: the agent re-acks duplicates; the plugin does not (§9 item 5).
            self.stats.duplicates_received += 1;
            self.ack(now, &frame.message_type, frame.message_id, frame.sequence_number);
            return;
        }
        if seq > self.expected {
            // Beyond the receive window (e.g. a far-future number from a broken or hostile
            // peer): neither acked nor kept, so memory stays bounded by the window.
            let window = i64::try_from(self.config.receive_buffer).unwrap_or(i64::MAX);
            if seq - self.expected > window {
                self.stats.refused_not_ready += 1;
                return;
            }
            if self.out_of_order.contains_key(&seq) {
                self.stats.duplicates_received += 1;
                self.ack(now, &frame.message_type, frame.message_id, frame.sequence_number);
            } else if self.out_of_order.len() < self.config.receive_buffer
                && self.out_of_order_bytes.saturating_add(frame.payload.len()) <= self.config.receive_buffer_bytes
            {
                // Acked only once kept: an acked message is never dropped.
                self.ack(now, &frame.message_type, frame.message_id, frame.sequence_number);
                self.out_of_order_bytes += frame.payload.len();
                self.out_of_order.insert(seq, frame);
            } else {
                self.stats.refused_not_ready += 1;
            }
            return;
        }
        if self.out_of_order.contains_key(&seq) {
            // Next in order but already buffered (acked on arrival, held back while the receiver
            // was not ready): the peer's retransmission, our ack still in flight. Re-ack it like
            // any duplicate and deliver the buffered copy, so it never outlives its delivery.
            self.stats.duplicates_received += 1;
            self.ack(now, &frame.message_type, frame.message_id, frame.sequence_number);
            self.poll_ready();
            return;
        }
        if !self.receive_ready || self.processing.is_some() {
            self.stats.refused_not_ready += 1;
            return;
        }
        if self.config.ack_after_processing {
            self.processing = Some((seq, frame.message_type.clone(), frame.message_id));
            self.deliver(frame);
            return;
        }
        self.ack(now, &frame.message_type, frame.message_id, frame.sequence_number);
        self.deliver(frame);
        // Buffered successors were acked on arrival; deliver them in order (§9 item 7: same
        // path as in-order delivery).
        while self.receive_ready {
            let Some(next) = self.out_of_order.remove(&self.expected) else {
                break;
            };
            self.out_of_order_bytes -= next.payload.len();
            self.deliver(next);
        }
    }

    fn deliver(&mut self, frame: Frame) {
        self.expected += 1;
        self.stats.messages_received += 1;
        self.events.push_back(Event::Stream {
            payload_type: frame.payload_type,
            payload: frame.payload,
            sequence_number: frame.sequence_number,
        });
    }

    fn handle_ack(&mut self, now: Instant, seq: i64) {
        let Some(entry) = self.unacked.remove(&seq) else {
            return;
        };
        if let Some(deadline) = entry.deadline {
            self.timers.remove(&(deadline, seq));
        }
        // Karn's rule: a retransmitted message's ack cannot tell which copy it answers.
        if entry.attempts == 0
            && let Some(sent) = entry.last_sent
        {
            self.rtt.sample(now.saturating_duration_since(sent));
        }
    }

    /// The in-order message delivered and waiting for [`Channel::processed`], if any.
    pub fn processing(&self) -> Option<i64> {
        self.processing.as_ref().map(|(seq, _, _)| *seq)
    }

    /// Reports the outcome of processing message `seq` (with `ack_after_processing`). Success
    /// acks it and delivers the buffered messages after it; failure leaves it unacked and
    /// expected again, so the peer's retransmission is processed anew. Any other `seq` (a
    /// message that was acked on arrival) is ignored.
    pub fn processed(&mut self, now: Instant, seq: i64, ok: bool) {
        let Some((current, message_type, message_id)) = self.processing.take_if(|(s, _, _)| *s == seq) else {
            return;
        };
        if !ok {
            self.expected = current;
            self.stats.messages_received = self.stats.messages_received.saturating_sub(1);
            return;
        }
        self.ack(now, &message_type, message_id, current);
        self.poll_ready();
    }

    /// Resumes in-order delivery of messages buffered while the receiver was not ready.
    pub fn poll_ready(&mut self) {
        while self.receive_ready && self.processing.is_none() {
            let Some(next) = self.out_of_order.remove(&self.expected) else {
                break;
            };
            self.out_of_order_bytes -= next.payload.len();
            self.deliver(next);
        }
    }

    /// When [`Channel::handle_timeout`] wants to be called next, if ever.
    pub fn poll_timeout(&mut self) -> Option<Instant> {
        if self.paused || self.closed || self.unacked.is_empty() {
            return None;
        }
        match self.config.retransmit {
            RetransmitPolicy::PerMessage => self.timers.first().map(|(t, _)| *t),
            RetransmitPolicy::HeadOnly { .. } => self.next_round(),
        }
    }

    /// With the head-only policy, when its next round is due, also while nothing is unacked
    /// (the agent's resend scheduler is a loop that wakes every round whether or not there is
    /// anything to resend: agent/session/datachannel/datachannel.go
    /// `ResendStreamDataMessageScheduler`); [`Channel::handle_timeout`] at or after it starts
    /// the round after. `None` with the per-message policy, while paused and once closed.
    pub fn next_round(&mut self) -> Option<Instant> {
        match self.config.retransmit {
            RetransmitPolicy::HeadOnly { tick } if !self.paused && !self.closed => {
                Some(*self.head_tick.get_or_insert_with(|| self.epoch + tick))
            }
            _ => None,
        }
    }

    /// Retransmits what has expired by `now`.
    pub fn handle_timeout(&mut self, now: Instant) {
        if self.paused || self.closed {
            return;
        }
        match self.config.retransmit {
            RetransmitPolicy::PerMessage => {
                while let Some(&(deadline, seq)) = self.timers.first() {
                    if deadline > now {
                        break;
                    }
                    self.timers.pop_first();
                    if let Some(e) = self.unacked.get_mut(&seq) {
                        e.deadline = None;
                    }
                    self.transmit_entry(now, seq);
                }
            }
            RetransmitPolicy::HeadOnly { tick } => {
                let due = *self.head_tick.get_or_insert(now);
                if now < due {
                    return;
                }
                self.head_tick = Some(now + tick);
                let rto = self.rtt.rto;
                let Some((&seq, head)) = self.unacked.iter().next() else {
                    return;
                };
                let expired = head.last_sent.is_none_or(|t| now.saturating_duration_since(t) > rto);
                if expired {
                    self.transmit_entry(now, seq);
                }
            }
        }
    }

    /// After a reconnect (§8.2): forget frames queued for the old socket and resend every
    /// unacked message at once, in order. Sequence state is kept.
    pub fn reset_transport(&mut self, now: Instant) {
        self.transmit.clear();
        self.paused = false;
        let seqs: Vec<i64> = self.unacked.keys().copied().collect();
        for seq in seqs {
            self.transmit_entry(now, seq);
        }
    }

    /// Next frame to write to the WebSocket, as one binary message.
    pub fn poll_transmit(&mut self) -> Option<Bytes> {
        self.transmit.pop_front()
    }

    /// Number of frames waiting in [`Channel::poll_transmit`].
    pub fn pending_transmit(&self) -> usize {
        self.transmit.len()
    }

    /// Next event for the caller.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// Marks the channel closed locally; further sends fail.
    pub fn close(&mut self) {
        self.closed = true;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pair() -> (Channel, Channel, Instant) {
        let now = Instant::now();
        (
            Channel::new(Config::client(), now, 1_700_000_000_000, 1),
            Channel::new(Config::agent(), now, 1_700_000_000_000, 2),
            now,
        )
    }

    fn pump(from: &mut Channel, to: &mut Channel, now: Instant) -> usize {
        let mut n = 0;
        while let Some(f) = from.poll_transmit() {
            to.handle_frame(now, &f).unwrap();
            n += 1;
        }
        n
    }

    #[test]
    fn the_agent_takes_a_wrong_digest_and_the_client_refuses_it() {
        let (mut c, mut a, now) = pair();
        c.send(now, PayloadType::Output, b"hi").unwrap();
        let mut wire = Vec::from(c.poll_transmit().unwrap());
        wire[80] ^= 0x80;
        // agentmessage.go Validate: no digest check.
        a.handle_frame(now, &wire).unwrap();
        assert!(matches!(a.poll_event(), Some(Event::Stream { sequence_number: 0, .. })));
        // The plugin's Validate checks it (§3.6), and so do we.
        let mut c2 = Channel::new(Config::client(), now, 1_700_000_000_000, 3);
        assert_eq!(c2.handle_frame(now, &wire), Err(DecodeError::DigestMismatch));
        assert_eq!(c2.stats().frames_rejected, 1);
        assert_eq!(c2.poll_event(), None);
    }

    #[test]
    fn send_ack_round_trip_samples_rtt() {
        let (mut c, mut a, now) = pair();
        c.send(now, PayloadType::Output, b"hi").unwrap();
        pump(&mut c, &mut a, now);
        assert_eq!(
            a.poll_event(),
            Some(Event::Stream {
                payload_type: PayloadType::Output,
                payload: b"hi".to_vec(),
                sequence_number: 0
            })
        );
        assert_eq!(a.pending_transmit(), 0, "the agent acks only once it has processed");
        a.processed(now + Duration::from_millis(20), 0, true);
        pump(&mut a, &mut c, now + Duration::from_millis(20));
        assert_eq!(c.unacked(), 0);
        assert!(c.rto() < Duration::from_millis(200));
    }

    #[test]
    fn ack_after_processing_holds_successors_and_failure_means_retransmission() {
        let (mut c, mut a, now) = pair();
        for b in [b"0", b"1", b"2"] {
            c.send(now, PayloadType::Output, b).unwrap();
        }
        let frames: Vec<Vec<u8>> = std::iter::from_fn(|| c.poll_transmit().map(Vec::from)).collect();
        a.handle_frame(now, &frames[0]).unwrap();
        a.handle_frame(now, &frames[2]).unwrap(); // out of order: acked on arrival
        a.handle_frame(now, &frames[1]).unwrap(); // in order, but 0 is still being processed
        assert!(matches!(a.poll_event(), Some(Event::Stream { sequence_number: 0, .. })));
        assert_eq!(a.poll_event(), None, "nothing after a message still being processed");
        assert_eq!(a.processing(), Some(0));
        a.handle_frame(now, &frames[0]).unwrap(); // its retransmission: neither acked nor delivered
        a.processed(now, 0, false);
        pump(&mut a, &mut c, now);
        assert_eq!(c.unacked(), 2, "only the out-of-order message was acked");
        // The peer retransmits 0 (and 1); this time processing succeeds.
        a.handle_frame(now, &frames[0]).unwrap();
        assert!(matches!(a.poll_event(), Some(Event::Stream { sequence_number: 0, .. })));
        a.processed(now, 0, true);
        a.handle_frame(now, &frames[1]).unwrap();
        assert!(matches!(a.poll_event(), Some(Event::Stream { sequence_number: 1, .. })));
        a.processed(now, 1, true);
        assert!(matches!(a.poll_event(), Some(Event::Stream { sequence_number: 2, .. })));
        a.processed(now, 2, true); // acked on arrival already: nothing more
        pump(&mut a, &mut c, now);
        assert_eq!(c.unacked(), 0);
        assert_eq!(a.expected_sequence_number(), 3);
    }

    #[test]
    fn far_future_sequence_numbers_are_neither_acked_nor_kept() {
        let (_, mut a, now) = pair();
        let frame = |seq: i64| Frame {
            message_type: MessageType::InputStreamData,
            schema_version: 1,
            created_date: 1,
            sequence_number: seq,
            flags: 0,
            message_id: MessageId([7; 16]),
            payload_type: PayloadType::Output,
            payload: b"x".to_vec(),
        };
        let window = i64::try_from(a.config().receive_buffer).unwrap();
        for seq in [window + 1, i64::MAX / 2, i64::MAX] {
            a.handle_frame(now, &frame(seq).encode()).unwrap();
        }
        assert_eq!(a.pending_transmit(), 0, "no acks for messages beyond the window");
        assert!(a.out_of_order.is_empty());
        a.handle_frame(now, &frame(window).encode()).unwrap();
        assert_eq!(a.pending_transmit(), 1, "the window's last slot is acked and kept");
        assert_eq!(a.out_of_order.len(), 1);
    }

    #[test]
    fn the_out_of_order_store_is_bounded_in_bytes_and_keeps_what_it_acked() {
        let now = Instant::now();
        let mut cfg = Config::client();
        cfg.receive_buffer_bytes = 10_000;
        let mut c = Channel::new(cfg, now, 1, 1);
        let frame = |seq: i64, len: usize| {
            Frame {
                message_type: MessageType::OutputStreamData,
                schema_version: 1,
                created_date: 1,
                sequence_number: seq,
                flags: 0,
                message_id: MessageId([seq as u8; 16]),
                payload_type: PayloadType::Output,
                payload: vec![seq as u8; len],
            }
            .encode()
        };
        // 0 is lost; 1..=20 of 1,000 bytes each arrive: ten fit, the rest are refused unacked.
        for seq in 1..=20 {
            c.handle_frame(now, &frame(seq, 1_000)).unwrap();
        }
        assert_eq!(c.out_of_order_held(), (10, 10_000));
        assert_eq!(c.pending_transmit(), 10, "only the kept messages are acked");
        // One huge message cannot push the store past its bound either.
        c.handle_frame(now, &frame(25, 1 << 20)).unwrap();
        assert_eq!(c.out_of_order_held(), (10, 10_000));
        // The gap fills: everything kept is delivered, in order, and the store is empty.
        c.handle_frame(now, &frame(0, 1_000)).unwrap();
        let delivered: Vec<i64> = std::iter::from_fn(|| c.poll_event())
            .filter_map(|e| match e {
                Event::Stream { sequence_number, .. } => Some(sequence_number),
                _ => None,
            })
            .collect();
        assert_eq!(delivered, (0..=10).collect::<Vec<_>>());
        assert_eq!(c.out_of_order_held(), (0, 0));
        // What was refused comes again (the peer still holds it) and is taken now.
        c.handle_frame(now, &frame(11, 1_000)).unwrap();
        assert!(matches!(
            c.poll_event(),
            Some(Event::Stream {
                sequence_number: 11,
                ..
            })
        ));
    }

    #[test]
    fn the_agent_sends_past_its_window_without_tracking_and_the_client_refuses() {
        let now = Instant::now();
        let mut agent_cfg = Config::agent();
        agent_cfg.send_window = 3;
        let mut a = Channel::new(agent_cfg, now, 1, 1);
        for i in 0..5u8 {
            assert!(a.can_send());
            a.send(now, PayloadType::Output, vec![i]).unwrap();
        }
        assert_eq!(a.pending_transmit(), 5, "all five are written");
        assert_eq!(a.unacked(), 3, "only three are kept for retransmission");
        assert_eq!(a.stats().sent_untracked, 2);
        let mut client_cfg = Config::client();
        client_cfg.send_window = 1;
        let mut c = Channel::new(client_cfg, now, 1, 2);
        c.send(now, PayloadType::Output, b"x").unwrap();
        assert!(!c.can_send());
        assert_eq!(c.send(now, PayloadType::Output, b"y"), Err(SendError::WindowFull));
    }

    #[test]
    fn the_oldest_unacked_message_keeps_its_first_send_time_across_retransmissions() {
        let (mut c, mut a, now) = pair();
        assert_eq!(c.oldest_unacked_since(), None);
        c.send(now, PayloadType::Output, b"x").unwrap();
        c.send(now, PayloadType::Output, b"y").unwrap();
        assert_eq!(c.oldest_unacked_since(), Some(now));
        let later = now + Duration::from_secs(5);
        c.handle_timeout(later);
        assert!(c.stats().retransmissions > 0);
        assert_eq!(
            c.oldest_unacked_since(),
            Some(now),
            "a retransmission does not reset it"
        );
        while let Some(f) = c.poll_transmit() {
            a.handle_frame(later, &f).unwrap();
            while let Some(ev) = a.poll_event() {
                if let Event::Stream { sequence_number, .. } = ev {
                    a.processed(later, sequence_number, true);
                }
            }
        }
        pump(&mut a, &mut c, later);
        assert_eq!(c.oldest_unacked_since(), None);
    }

    #[test]
    fn duplicate_is_reacked() {
        let (mut c, mut a, now) = pair();
        c.send(now, PayloadType::Output, b"x").unwrap();
        let f = c.poll_transmit().unwrap();
        a.handle_frame(now, &f).unwrap();
        a.processed(now, 0, true);
        a.handle_frame(now, &f).unwrap();
        assert_eq!(
            a.pending_transmit(),
            2,
            "an ack for the original and one for the duplicate"
        );
        assert_eq!(a.stats().duplicates_received, 1);
    }

    #[test]
    fn window_full_refuses_without_dropping() {
        let now = Instant::now();
        let mut cfg = Config::client();
        cfg.send_window = 2;
        let mut c = Channel::new(cfg, now, 1, 1);
        c.send(now, PayloadType::Output, vec![1]).unwrap();
        c.send(now, PayloadType::Output, vec![2]).unwrap();
        assert_eq!(c.send(now, PayloadType::Output, vec![3]), Err(SendError::WindowFull));
        assert_eq!(c.unacked(), 2);
    }

    /// The head-only policy's rounds go on while nothing is unacked (the agent's scheduler
    /// wakes every round), stop while paused and once closed; poll_timeout still wants no
    /// call while nothing is unacked.
    #[test]
    fn head_only_rounds_go_on_while_nothing_is_unacked() {
        let (mut c, mut a, now) = pair();
        let tick = Duration::from_millis(100);
        assert_eq!(c.next_round(), None, "the client resends per message: no rounds");
        assert_eq!(a.poll_timeout(), None);
        assert_eq!(a.next_round(), Some(now + tick));
        let later = now + tick + Duration::from_millis(7);
        a.handle_timeout(later);
        assert_eq!(
            a.next_round(),
            Some(later + tick),
            "a round at its time starts the next"
        );
        assert_eq!(a.poll_transmit(), None, "nothing to resend");
        a.send(later, PayloadType::Output, b"x").unwrap();
        assert_eq!(a.poll_timeout(), Some(later + tick), "the same rounds look at the head");
        a.handle_frame(later, &publication(MessageType::PausePublication))
            .unwrap();
        assert_eq!(a.next_round(), None, "paused");
        a.handle_frame(later, &publication(MessageType::StartPublication))
            .unwrap();
        assert_eq!(a.next_round(), Some(later + tick));
        a.close();
        assert_eq!(a.next_round(), None, "closed");
        assert_eq!(c.poll_transmit(), None);
    }

    /// An encoded publication control frame (§4.7).
    fn publication(message_type: MessageType) -> Vec<u8> {
        Frame {
            message_type,
            schema_version: 1,
            created_date: 1,
            sequence_number: 0,
            flags: 0,
            message_id: MessageId::default(),
            payload_type: PayloadType::Null,
            payload: vec![],
        }
        .encode()
    }

    #[test]
    fn paused_holds_new_data_and_resends_on_start() {
        let (mut c, mut a, now) = pair();
        c.handle_frame(now, &publication(MessageType::PausePublication))
            .unwrap();
        assert_eq!(c.poll_event(), Some(Event::Paused));
        c.send(now, PayloadType::Output, b"held").unwrap();
        assert_eq!(c.poll_transmit(), None);
        assert_eq!(c.poll_timeout(), None);
        c.handle_frame(now, &publication(MessageType::StartPublication))
            .unwrap();
        assert_eq!(c.poll_event(), Some(Event::Resumed));
        assert_eq!(pump(&mut c, &mut a, now), 1);
        assert!(matches!(a.poll_event(), Some(Event::Stream { .. })));
    }

    #[test]
    fn not_ready_leaves_message_unacked_then_accepts_retransmission() {
        let (mut c, mut a, now) = pair();
        a.set_receive_ready(false);
        c.send(now, PayloadType::Output, b"later").unwrap();
        pump(&mut c, &mut a, now);
        assert_eq!(a.pending_transmit(), 0);
        assert_eq!(a.poll_event(), None);
        a.set_receive_ready(true);
        let later = now + Duration::from_millis(250);
        c.handle_timeout(later);
        pump(&mut c, &mut a, later);
        assert!(matches!(a.poll_event(), Some(Event::Stream { sequence_number: 0, .. })));
    }

    #[test]
    fn head_only_policy_resends_oldest_per_tick() {
        let (mut c, mut a, now) = pair();
        a.send(now, PayloadType::Output, b"1").unwrap();
        a.send(now, PayloadType::Output, b"2").unwrap();
        while a.poll_transmit().is_some() {}
        let mut t = now;
        for _ in 0..5 {
            t += Duration::from_millis(100);
            a.handle_timeout(t);
        }
        let mut seqs = vec![];
        while let Some(f) = a.poll_transmit() {
            seqs.push(Frame::decode(&f).unwrap().sequence_number);
        }
        assert!(!seqs.is_empty());
        assert!(seqs.iter().all(|s| *s == 0), "only the head is resent: {seqs:?}");
        let _ = c.poll_event();
    }

    /// Found by the `channel` fuzz target: a message acked out of order and retransmitted by
    /// the peer (our ack still in flight) once it is next in order, before the caller called
    /// `poll_ready`, was delivered from the retransmission while the stored copy stayed in the
    /// out-of-order store for good, taking a slot of `receive_buffer`.
    #[test]
    fn retransmitted_copy_of_a_buffered_message_leaves_no_stale_entry() {
        let (mut c, mut a, now) = pair();
        for b in [b"0", b"1", b"2"] {
            c.send(now, PayloadType::Output, b).unwrap();
        }
        let frames: Vec<Vec<u8>> = std::iter::from_fn(|| c.poll_transmit().map(Vec::from)).collect();
        a.handle_frame(now, &frames[1]).unwrap(); // out of order: acked and stored
        a.handle_frame(now, &frames[0]).unwrap(); // in order: being processed
        a.set_receive_ready(false);
        a.processed(now, 0, true); // not ready: 1 stays stored
        a.set_receive_ready(true);
        a.handle_frame(now, &frames[1]).unwrap(); // the peer's retransmission of 1
        a.processed(now, 1, true);
        a.handle_frame(now, &frames[2]).unwrap();
        a.processed(now, 2, true);
        let delivered: Vec<i64> = std::iter::from_fn(|| a.poll_event())
            .filter_map(|e| match e {
                Event::Stream { sequence_number, .. } => Some(sequence_number),
                _ => None,
            })
            .collect();
        assert_eq!(delivered, [0, 1, 2]);
        assert_eq!(a.expected_sequence_number(), 3);
        assert_eq!(a.out_of_order_held().0, 0, "a delivered message is still buffered");
    }
}
