//! The reliable channel (§4), client and agent configurations, driven by an arbitrary sequence
//! of operations: stream messages from the peer with any sequence number (built with the
//! crate's own frame writer), acks of our messages, control frames, raw and corrupted bytes,
//! sends, time passing, processing outcomes and receiver readiness.
//!
//! The peer is modelled as a consistent sender: the first copy of sequence number n it sends
//! fixes n's id, type and payload, and later copies (retransmissions, duplicates) repeat it.
//! Checked after every operation:
//! - nothing panics, every frame we write decodes;
//! - the delivered stream (`Event::Stream`) is gap-free and in order, delivers each number once
//!   (again only after a failed `processed`), and n's payload is what the peer sent as n;
//! - acks name a message the peer sent, with its id and type, and with ack-after-processing
//!   the message being processed is acked only by a successful `processed`;
//! - nothing is delivered while a message is being processed;
//! - our transmissions carry what we sent, never after the peer acked it, never while paused;
//! - memory: out-of-order store ≤ `receive_buffer` messages and `receive_buffer_bytes`, unacked
//!   ≤ `send_window`.
//!
//! At the end the peer fills every gap up to the last message the channel acked, retransmitting
//! only what was not acked (as a real peer does): every acked message must then be delivered
//! (an acked message dropped is data lost for good) and the out-of-order store must be empty.
#![no_main]

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use ssm_proto::frame::{FLAG_SYN, FLAGS_ACK};
use ssm_proto::{Acknowledge, Channel, Config, Event, Frame, MessageId, MessageType, PayloadType, Role};

#[derive(Debug, Arbitrary)]
struct Input {
    agent: bool,
    /// `None`: the role's defaults. `Some((r, s))`: receive buffer `r % 16` and send window
    /// `s % 16`, so the fuzzer reaches the limits.
    limits: Option<(u8, u8)>,
    ops: Vec<Op>,
}

#[derive(Debug, Arbitrary)]
enum Seq {
    /// Relative to the next number the model expects to see delivered: `d % 16 - 4`.
    Near(u8),
    /// Any number at all (negative, far future).
    Any(i64),
}

#[derive(Debug, Arbitrary)]
enum Op {
    /// A stream message from the peer.
    Data {
        seq: Seq,
        payload_type: u8,
        payload: Vec<u8>,
        short_header: bool,
    },
    /// The peer resends, in order, what it sent from 4 below the next expected number on,
    /// skipping what we acked unless `acked_too` (acks lost with a dropped connection, §8.2).
    Resend {
        acked_too: bool,
    },
    /// The peer acks one of our messages (`Some`: index among those sent) or any number.
    Ack {
        pick: Option<u16>,
        any: i64,
    },
    /// A frame of another type.
    Control {
        kind: u8,
        payload: Vec<u8>,
    },
    /// Raw bytes as one WebSocket message.
    Garbage(Vec<u8>),
    /// A well-formed stream message with one byte changed.
    Corrupt {
        seq: Seq,
        at: u16,
        xor: u8,
    },
    /// We send a message.
    Send {
        payload_type: u8,
        len: u8,
    },
    /// Time passes, then the timers run.
    Advance {
        ms: u16,
    },
    /// Time jumps to the channel's next deadline, then the timers run.
    FireTimer,
    /// Outcome of processing (`None`: the message being processed, `Some`: a near number).
    Processed {
        ok: bool,
        seq: Option<u8>,
    },
    SetReady(bool),
    PollReady,
    ResetTransport,
    Close,
}

/// What the peer sent as one sequence number.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Sent {
    id: MessageId,
    payload_type: PayloadType,
    payload: Vec<u8>,
}

struct Harness {
    ch: Channel,
    incoming: MessageType,
    outgoing: MessageType,
    ack_after_processing: bool,
    now: Instant,
    /// The peer's messages by sequence number (first copy wins).
    peer_sent: BTreeMap<i64, Sent>,
    /// Peer messages the channel acked.
    acked_by_us: BTreeSet<i64>,
    /// The next number the delivered stream must carry.
    next_delivery: i64,
    /// Our messages by sequence number.
    our_sent: BTreeMap<i64, (PayloadType, Vec<u8>)>,
    /// Our messages transmitted at least once.
    transmitted: BTreeSet<i64>,
    /// Our messages the peer acked.
    acked_by_peer: BTreeSet<i64>,
    /// Our messages sent past the send window without a copy (the agent's
    /// `untracked_beyond_window`): never retransmitted, and an ack for them changes nothing.
    untracked: BTreeSet<i64>,
    /// Acks, in the current operation, of our messages never transmitted before: a hostile
    /// peer's. The channel may still transmit such a message while handling the ack (resuming
    /// publication comes first); it counts as acked once the operation is over.
    bogus_acks: Vec<i64>,
}

/// A number close to `base`: from 4 below to 11 above, where reordering and duplicates happen.
fn near(base: i64, d: u8) -> i64 {
    base.saturating_add(i64::from(d % 16) - 4)
}

fn message_id(seq: i64, salt: u8) -> MessageId {
    let mut b = [salt; 16];
    b[..8].copy_from_slice(&seq.to_be_bytes());
    MessageId(b)
}

impl Harness {
    fn new(config: Config, now: Instant) -> Self {
        let (incoming, outgoing) = match config.role {
            Role::Client => (MessageType::OutputStreamData, MessageType::InputStreamData),
            Role::Agent => (MessageType::InputStreamData, MessageType::OutputStreamData),
        };
        let ack_after_processing = config.ack_after_processing;
        Self {
            ch: Channel::new(config, now, 1_700_000_000_000, 7),
            incoming,
            outgoing,
            ack_after_processing,
            now,
            peer_sent: BTreeMap::new(),
            acked_by_us: BTreeSet::new(),
            next_delivery: 0,
            our_sent: BTreeMap::new(),
            transmitted: BTreeSet::new(),
            acked_by_peer: BTreeSet::new(),
            untracked: BTreeSet::new(),
            bogus_acks: Vec::new(),
        }
    }

    fn seq(&self, seq: &Seq) -> i64 {
        match *seq {
            Seq::Near(d) => near(self.next_delivery, d),
            Seq::Any(s) => s,
        }
    }

    /// The peer's frame for `seq`: the recorded copy, or a new message with `payload`.
    fn peer_frame(&mut self, seq: i64, payload_type: PayloadType, payload: Vec<u8>) -> Frame {
        let sent = self.peer_sent.entry(seq).or_insert_with(|| Sent {
            id: message_id(seq, 0x5a),
            payload_type,
            payload,
        });
        Frame {
            message_type: self.incoming.clone(),
            schema_version: 1,
            created_date: 1_700_000_000_000,
            sequence_number: seq,
            flags: if seq == 0 { FLAG_SYN } else { 0 },
            message_id: sent.id,
            payload_type: sent.payload_type,
            payload: sent.payload.clone(),
        }
    }

    fn control(&self, message_type: MessageType, flags: u64, payload: Vec<u8>) -> Frame {
        Frame {
            message_type,
            schema_version: 1,
            created_date: 1_700_000_000_000,
            sequence_number: 0,
            flags,
            message_id: message_id(-1, 0xc3),
            payload_type: PayloadType::Null,
            payload,
        }
    }

    /// Hands one WebSocket message from the peer to the channel, keeping the model in step.
    /// A decodable stream message that contradicts what the peer sent before under its number
    /// is not sent: the model's peer is consistent.
    fn receive(&mut self, bytes: &[u8]) {
        // The agent's channel takes a wrong digest, as the agent does (Config::verify_digest).
        let decoded = Frame::decode_with(bytes, self.ch.config().verify_digest);
        if let Ok(frame) = &decoded {
            if frame.message_type == self.incoming {
                let sent = Sent {
                    id: frame.message_id,
                    payload_type: frame.payload_type,
                    payload: frame.payload.clone(),
                };
                match self.peer_sent.get(&frame.sequence_number) {
                    Some(first) if *first != sent => return,
                    Some(_) => {}
                    None => {
                        self.peer_sent.insert(frame.sequence_number, sent);
                    }
                }
            }
            if frame.message_type == MessageType::Acknowledge
                && let Ok(ack) = Acknowledge::parse(&frame.payload)
                && self.our_sent.contains_key(&ack.sequence_number)
                && !self.untracked.contains(&ack.sequence_number)
            {
                if self.transmitted.contains(&ack.sequence_number) {
                    self.acked_by_peer.insert(ack.sequence_number);
                } else {
                    self.bogus_acks.push(ack.sequence_number);
                }
            }
        }
        let result = self.ch.handle_frame(self.now, bytes);
        assert_eq!(
            result.is_ok(),
            decoded.is_ok(),
            "handle_frame disagrees with Frame::decode_with"
        );
    }

    fn op(&mut self, op: Op) {
        let processing_before = self.ch.processing();
        let mut processed_ok = None;
        match op {
            Op::Data {
                seq,
                payload_type,
                payload,
                short_header,
            } => {
                let seq = self.seq(&seq);
                let frame = self.peer_frame(seq, PayloadType::from_u32(payload_type.into()), payload);
                // The short form has no payload type (§3.6): only for messages without one.
                let bytes = if short_header && frame.payload_type == PayloadType::Null {
                    frame.encode_short_header()
                } else {
                    frame.encode()
                };
                self.receive(&bytes);
            }
            Op::Resend { acked_too } => {
                let from = self.next_delivery.saturating_sub(4);
                let seqs: Vec<i64> = self
                    .peer_sent
                    .range(from..)
                    .map(|(s, _)| *s)
                    .filter(|s| acked_too || !self.acked_by_us.contains(s))
                    .take(64)
                    .collect();
                for seq in seqs {
                    let frame = self.peer_frame(seq, PayloadType::Null, Vec::new());
                    self.receive(&frame.encode());
                }
            }
            Op::Ack { pick, any } => {
                let seq = match pick {
                    Some(i) if !self.our_sent.is_empty() => {
                        let i = usize::from(i) % self.our_sent.len();
                        self.our_sent.keys().nth(i).copied().unwrap_or(any)
                    }
                    _ => any,
                };
                let payload = Acknowledge {
                    message_type: self.outgoing.as_str().to_owned(),
                    message_id: message_id(seq, 0x11).to_string(),
                    sequence_number: seq,
                    is_sequential: true,
                }
                .to_json();
                let frame = self.control(MessageType::Acknowledge, FLAGS_ACK, payload);
                self.receive(&frame.encode());
            }
            Op::Control { kind, payload } => {
                let (message_type, flags) = match kind % 7 {
                    0 => (MessageType::PausePublication, 0),
                    1 => (MessageType::StartPublication, 0),
                    2 => (MessageType::ChannelClosed, 0),
                    3 => (MessageType::AgentSessionState, FLAGS_ACK),
                    4 => (self.outgoing.clone(), 0),
                    5 => (MessageType::Acknowledge, FLAGS_ACK),
                    _ => (MessageType::Other("interactive_command".into()), 0),
                };
                let frame = self.control(message_type, flags, payload);
                self.receive(&frame.encode());
            }
            Op::Garbage(bytes) => self.receive(&bytes),
            Op::Corrupt { seq, at, xor } => {
                let seq = self.seq(&seq);
                let mut bytes = self
                    .peer_frame(seq, PayloadType::Output, b"corrupt me".to_vec())
                    .encode();
                let at = usize::from(at) % bytes.len();
                if let Some(b) = bytes.get_mut(at) {
                    *b ^= xor;
                }
                self.receive(&bytes);
            }
            Op::Send { payload_type, len } => {
                let payload_type = PayloadType::from_u32(payload_type.into());
                let payload = vec![len; usize::from(len)];
                let could = self.ch.can_send();
                let untracked_before = self.ch.stats().sent_untracked;
                match self.ch.send(self.now, payload_type, payload.clone()) {
                    Ok(seq) => {
                        assert!(could, "send accepted while can_send was false");
                        let expected = i64::try_from(self.our_sent.len()).unwrap_or(i64::MAX);
                        assert_eq!(seq, expected, "our numbering has a gap");
                        self.our_sent.insert(seq, (payload_type, payload));
                        if self.ch.stats().sent_untracked > untracked_before {
                            assert!(
                                self.ch.config().untracked_beyond_window,
                                "sent {seq} untracked, which this role never does"
                            );
                            self.untracked.insert(seq);
                        }
                    }
                    Err(_) => assert!(!could, "send refused while can_send was true"),
                }
            }
            Op::Advance { ms } => {
                self.now += Duration::from_millis(ms.into());
                self.ch.handle_timeout(self.now);
            }
            Op::FireTimer => {
                if let Some(at) = self.ch.poll_timeout() {
                    self.now = self.now.max(at);
                }
                self.ch.handle_timeout(self.now);
            }
            Op::Processed { ok, seq } => {
                let seq = match seq {
                    None => processing_before.unwrap_or(self.next_delivery),
                    Some(d) => near(self.next_delivery, d),
                };
                self.ch.processed(self.now, seq, ok);
                if processing_before == Some(seq) {
                    processed_ok = Some(ok);
                    if !ok {
                        // A failed message is expected again (the peer retransmits it).
                        self.next_delivery = seq;
                    }
                }
            }
            Op::SetReady(ready) => self.ch.set_receive_ready(ready),
            Op::PollReady => self.ch.poll_ready(),
            Op::ResetTransport => self.ch.reset_transport(self.now),
            Op::Close => self.ch.close(),
        }
        self.check(processing_before, processed_ok);
    }

    /// Drains what the channel wrote and reported, checking both against the model.
    fn check(&mut self, processing_before: Option<i64>, processed_ok: Option<bool>) {
        let mut acks = BTreeSet::new();
        let mut data_sent = false;
        while let Some(bytes) = self.ch.poll_transmit() {
            let frame = Frame::decode(&bytes).unwrap_or_else(|e| panic!("we wrote a frame that does not decode: {e}"));
            if frame.message_type == MessageType::Acknowledge {
                let ack = Acknowledge::parse(&frame.payload).unwrap_or_else(|e| panic!("our ack does not parse: {e}"));
                let seq = ack.sequence_number;
                let sent = self
                    .peer_sent
                    .get(&seq)
                    .unwrap_or_else(|| panic!("ack for {seq}, which the peer never sent"));
                assert_eq!(ack.message_id, sent.id.to_string(), "ack for {seq} names another id");
                assert_eq!(ack.message_type, self.incoming.as_str());
                assert_eq!(frame.flags, FLAGS_ACK);
                acks.insert(seq);
            } else {
                assert_eq!(frame.message_type, self.outgoing, "we wrote an unexpected frame");
                let seq = frame.sequence_number;
                let (payload_type, payload) = self
                    .our_sent
                    .get(&seq)
                    .unwrap_or_else(|| panic!("we transmitted {seq}, which we never sent"));
                assert_eq!(frame.payload_type, *payload_type);
                assert_eq!(&frame.payload, payload, "our message {seq} changed in transit");
                assert!(!self.acked_by_peer.contains(&seq), "{seq} transmitted after its ack");
                self.transmitted.insert(seq);
                data_sent = true;
            }
        }
        assert!(
            !(data_sent && self.ch.is_paused()),
            "stream data transmitted while paused"
        );
        if self.ack_after_processing
            && let Some(p) = processing_before
        {
            assert!(
                !acks.contains(&p) || processed_ok == Some(true),
                "message {p} acked before it was processed"
            );
            if processed_ok == Some(true) {
                assert!(acks.contains(&p), "message {p} processed but not acked");
            }
        }
        self.acked_by_us.extend(acks);
        self.acked_by_peer.extend(self.bogus_acks.drain(..));

        let mut delivered = Vec::new();
        while let Some(event) = self.ch.poll_event() {
            if let Event::Stream {
                payload_type,
                payload,
                sequence_number,
            } = event
            {
                let seq = sequence_number;
                assert_eq!(seq, self.next_delivery, "delivered out of order or twice");
                let sent = self
                    .peer_sent
                    .get(&seq)
                    .unwrap_or_else(|| panic!("delivered {seq}, which the peer never sent"));
                assert_eq!(payload, sent.payload, "payload of {seq} is not what the peer sent");
                assert_eq!(payload_type, sent.payload_type);
                self.next_delivery += 1;
                delivered.push(seq);
            }
        }
        assert_eq!(self.ch.expected_sequence_number(), self.next_delivery);
        let processing = self.ch.processing();
        if self.ack_after_processing {
            if let Some(p) = processing_before
                && processed_ok.is_none()
            {
                assert!(
                    delivered.is_empty(),
                    "delivered {delivered:?} while {p} was being processed"
                );
                assert_eq!(processing, Some(p));
            }
            if processed_ok == Some(false) {
                assert!(delivered.is_empty(), "delivered {delivered:?} after a failed message");
                assert_eq!(processing, None);
            }
            if let Some(p) = processing
                && processing != processing_before
            {
                assert_eq!(
                    delivered.last(),
                    Some(&p),
                    "processing {p}, which was not just delivered"
                );
            }
        } else {
            assert_eq!(processing, None);
        }

        let config = self.ch.config();
        let (held, held_bytes) = self.ch.out_of_order_held();
        assert!(held <= config.receive_buffer, "out-of-order store past its bound");
        assert!(
            held_bytes <= config.receive_buffer_bytes,
            "out-of-order store past its byte bound"
        );
        // What the store must hold: the messages acked ahead of the delivered stream (in-order
        // messages are acked only once delivered, out-of-order ones when stored).
        let ahead = self.acked_by_us.range(self.next_delivery..).count();
        assert_eq!(
            self.ch.out_of_order_held().0,
            ahead,
            "out-of-order store holds other messages than those acked ahead"
        );
        assert!(self.ch.unacked() <= config.send_window, "unacked past the send window");
        assert_eq!(
            self.ch.unacked(),
            self.our_sent.len() - self.untracked.len() - self.acked_by_peer.len()
        );
        assert!(self.ch.rto() <= config.max_rto);
    }

    /// The peer fills every gap up to the last message the channel acked, retransmitting only
    /// what was not acked; everything must then be delivered.
    fn finish(&mut self) {
        let Some(&last) = self.acked_by_us.last() else {
            return;
        };
        // Long gaps (default limits with far numbers) would make one input slow; the
        // per-operation checks still ran on them.
        if last.saturating_sub(self.next_delivery) > 512 {
            return;
        }
        self.ch.set_receive_ready(true);
        self.ch.poll_ready();
        self.check(self.ch.processing(), None);
        while self.next_delivery <= last {
            if let Some(p) = self.ch.processing() {
                self.ch.processed(self.now, p, true);
                self.check(Some(p), Some(true));
                continue;
            }
            let seq = self.next_delivery;
            assert!(
                !self.acked_by_us.contains(&seq),
                "message {seq} was acked but is not delivered"
            );
            let frame = self.peer_frame(seq, PayloadType::Output, b"fill".to_vec());
            self.receive(&frame.encode());
            self.check(None, None);
            assert!(
                self.next_delivery > seq,
                "in-order message {seq} not delivered to a ready receiver"
            );
        }
        if let Some(p) = self.ch.processing() {
            self.ch.processed(self.now, p, true);
            self.check(Some(p), Some(true));
        }
        assert_eq!(
            self.ch.out_of_order_held().0,
            0,
            "out-of-order store keeps entries after the gaps were filled"
        );
    }
}

fuzz_target!(|input: Input| {
    let mut config = if input.agent { Config::agent() } else { Config::client() };
    if let Some((receive, send)) = input.limits {
        config.receive_buffer = usize::from(receive % 16);
        config.send_window = usize::from(send % 16);
    }
    let mut h = Harness::new(config, Instant::now());
    for op in input.ops {
        h.op(op);
    }
    h.finish();
});
