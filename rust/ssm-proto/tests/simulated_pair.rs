//! A client [`Channel`] and an agent [`Channel`] talking through a simulated lossy network
//! (drops, duplicates, reordering delays) with a manual clock: nothing here sleeps or reads the
//! time after the first `Instant::now()`. Every random choice comes from a seeded splitmix64, so
//! a failure reproduces exactly from its seed.
//!
//! Run with `--nocapture` to see per-run statistics (simulated time, retransmissions, …).

use std::cmp::Reverse;
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};
use ssm_proto::{Acknowledge, Channel, Config, Event, Frame, MessageType, PayloadType, RetransmitPolicy, SendError};

mod common;

use common::*;

// ---------------------------------------------------------------------------------------------
// One endpoint: the channel, the application writing into it and the sink reading out of it.

#[derive(Debug)]
struct Peer {
    name: &'static str,
    ch: Channel,
    /// Everything the application will write.
    data: Vec<u8>,
    /// How much of `data` the channel accepted so far.
    offset: usize,
    /// How often `send` refused with `WindowFull`.
    window_full: u64,
    /// Application write rate in bytes per second; `None` writes everything at once.
    rate: Option<u64>,
    /// When the application started writing (for `rate`).
    start: Instant,
    /// Messages accepted by `send` while the channel was paused (held back, §4.7).
    sent_during_pause: u64,
    /// SHA-256 of every payload delivered to this side, in order.
    received: Sha256,
    received_len: usize,
    next_seq: i64,
    paused_events: u64,
    resumed_events: u64,
    /// Stream frames of ours written while the channel said it was paused (must stay 0).
    sent_while_paused: u64,
}

impl Peer {
    fn new(name: &'static str, config: Config, now: Instant, seed: u64, data: Vec<u8>) -> Self {
        Self {
            name,
            ch: Channel::new(config, now, UNIX_MS, seed),
            data,
            offset: 0,
            window_full: 0,
            rate: None,
            start: now,
            sent_during_pause: 0,
            received: Sha256::new(),
            received_len: 0,
            next_seq: 0,
            paused_events: 0,
            resumed_events: 0,
            sent_while_paused: 0,
        }
    }

    fn all_sent(&self) -> bool {
        self.offset == self.data.len()
    }

    /// How much of `data` the application has produced by `now`.
    fn available(&self, now: Instant) -> usize {
        match self.rate {
            None => self.data.len(),
            Some(rate) => {
                let micros = (now - self.start).as_micros() as u64;
                let produced = rate.saturating_mul(micros) / 1_000_000;
                (produced as usize).min(self.data.len())
            }
        }
    }

    /// Whether a whole 1024-byte chunk (or the short last one) is ready to be written.
    fn has_chunk(&self, available: usize) -> bool {
        self.offset + CHUNK <= available || (self.offset < available && available == self.data.len())
    }

    /// When the application next has a chunk to write, if it is rate-limited and waiting.
    fn next_write(&self, now: Instant) -> Option<Instant> {
        let rate = self.rate?;
        if self.all_sent() || self.has_chunk(self.available(now)) {
            return None;
        }
        let want = (self.offset + CHUNK).min(self.data.len()) as u64;
        Some(self.start + Duration::from_micros((want * 1_000_000).div_ceil(rate)))
    }

    /// The application writes as much as the channel takes, 1024 bytes per message. On
    /// `WindowFull` it keeps its data and tries again at the next event.
    fn write(&mut self, now: Instant, net: &mut Network, dir: Dir) {
        let available = self.available(now);
        // Whole 1024-byte chunks only; a shorter one only at the very end of the data.
        while self.has_chunk(available) {
            let end = (self.offset + CHUNK).min(available);
            let chunk = self.data[self.offset..end].to_vec();
            let seq_before = self.ch.next_sequence_number();
            let unacked_before = self.ch.unacked();
            let stats_before = self.ch.stats();
            let paused = self.ch.is_paused();
            match self.ch.send(now, PayloadType::Output, chunk) {
                Ok(seq) => {
                    assert_eq!(seq, seq_before, "{}: sequence numbers are consecutive", self.name);
                    self.offset = end;
                    if paused {
                        self.sent_during_pause += 1;
                    }
                }
                Err(SendError::WindowFull) => {
                    // Refused means untouched: nothing numbered, buffered, queued or counted.
                    assert_eq!(self.ch.next_sequence_number(), seq_before);
                    assert_eq!(self.ch.unacked(), unacked_before);
                    assert_eq!(self.ch.unacked(), self.ch.config().send_window);
                    assert_eq!(self.ch.stats(), stats_before);
                    assert!(!self.ch.can_send());
                    self.window_full += 1;
                    break;
                }
                Err(e) => panic!("{}: unexpected send error {e}", self.name),
            }
            self.flush(now, net, dir);
        }
        self.flush(now, net, dir);
    }

    /// Moves what the channel wants written onto the network, checking that nothing but acks
    /// leaves a paused channel (§4.7).
    fn flush(&mut self, now: Instant, net: &mut Network, dir: Dir) {
        while let Some(bytes) = self.ch.poll_transmit() {
            if self.ch.is_paused() {
                let f = Frame::decode(&bytes).expect("we only write valid frames");
                if f.message_type.is_stream_data() {
                    self.sent_while_paused += 1;
                }
            }
            net.send(now, dir, bytes.into());
        }
    }

    fn drain_events(&mut self, now: Instant) {
        while let Some(e) = self.ch.poll_event() {
            match e {
                Event::Stream {
                    payload_type,
                    payload,
                    sequence_number,
                } => {
                    assert_eq!(
                        sequence_number, self.next_seq,
                        "{}: stream messages must arrive strictly consecutive",
                        self.name
                    );
                    assert_eq!(payload_type, PayloadType::Output);
                    assert!(!payload.is_empty() && payload.len() <= CHUNK);
                    self.next_seq += 1;
                    self.received_len += payload.len();
                    self.received.update(&payload);
                    // The agent acks only once a message is processed; this one is.
                    self.ch.processed(now, sequence_number, true);
                }
                Event::Paused => self.paused_events += 1,
                Event::Resumed => self.resumed_events += 1,
                other => panic!("{}: unexpected event {other:?}", self.name),
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The simulation.

/// Scripted publication frames from the service (§4.7): at `at`, deliver `kind` to one side.
#[derive(Debug, Clone)]
struct Injection {
    at: Instant,
    dir: Dir,
    kind: MessageType,
}

#[derive(Debug)]
struct Sim {
    start: Instant,
    now: Instant,
    net: Network,
    client: Peer,
    agent: Peer,
    /// Sorted by time, earliest last (popped from the end).
    injections: Vec<Injection>,
    iterations: u64,
}

#[derive(Debug, Clone, Copy)]
struct Limits {
    sim_time: Duration,
    iterations: u64,
}

impl Sim {
    fn new(client_cfg: Config, agent_cfg: Config, net: NetConfig, seed: u64, up: usize, down: usize) -> Self {
        let mut data_rng = Rng(seed ^ 0xDA7A);
        let start = Instant::now();
        Self {
            start,
            now: start,
            net: Network::new(net, seed),
            client: Peer::new("client", client_cfg, start, seed.wrapping_add(1), data_rng.bytes(up)),
            agent: Peer::new("agent", agent_cfg, start, seed.wrapping_add(2), data_rng.bytes(down)),
            injections: Vec::new(),
            iterations: 0,
        }
    }

    fn elapsed(&self) -> Duration {
        self.now - self.start
    }

    fn schedule(&mut self, mut injections: Vec<Injection>) {
        injections.sort_by_key(|i| Reverse(i.at));
        self.injections = injections;
    }

    /// Lets both applications write and moves everything queued onto the network.
    fn write(&mut self) {
        self.client.write(self.now, &mut self.net, Dir::ToAgent);
        self.agent.write(self.now, &mut self.net, Dir::ToClient);
    }

    /// Next instant anything can happen, if any.
    fn next_instant(&mut self) -> Option<Instant> {
        [
            self.net.next_arrival(),
            self.client.ch.poll_timeout(),
            self.agent.ch.poll_timeout(),
            self.injections.last().map(|i| i.at),
            self.client.next_write(self.now),
            self.agent.next_write(self.now),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// One event step: write, advance the clock to the next interesting instant, deliver what
    /// has arrived, fire due timers. Returns false when nothing at all is pending.
    fn step(&mut self, limits: Limits) -> bool {
        self.iterations += 1;
        assert!(
            self.iterations <= limits.iterations,
            "iteration cap {} hit at {:?} simulated; client {}/{} B received, agent {}/{} B",
            limits.iterations,
            self.elapsed(),
            self.client.received_len,
            self.agent.data.len(),
            self.agent.received_len,
            self.client.data.len(),
        );
        self.write();
        let Some(next) = self.next_instant() else {
            return false;
        };
        self.now = self.now.max(next);
        assert!(
            self.elapsed() <= limits.sim_time,
            "simulated-time limit {:?} exceeded; client {}/{} B received, agent {}/{} B \
             (client unacked {}, agent unacked {})",
            limits.sim_time,
            self.client.received_len,
            self.agent.data.len(),
            self.agent.received_len,
            self.client.data.len(),
            self.client.ch.unacked(),
            self.agent.ch.unacked(),
        );
        let now = self.now;
        while self.injections.last().is_some_and(|i| i.at <= now) {
            let i = self.injections.pop().expect("checked");
            self.net.inject(now, i.dir, publication(i.kind));
        }
        while let Some((dir, bytes)) = self.net.pop_due(now) {
            let (peer, back) = match dir {
                Dir::ToAgent => (&mut self.agent, Dir::ToClient),
                Dir::ToClient => (&mut self.client, Dir::ToAgent),
            };
            peer.ch
                .handle_frame(now, &bytes)
                .unwrap_or_else(|e| panic!("{}: valid frame rejected: {e}", peer.name));
            peer.drain_events(now);
            peer.flush(now, &mut self.net, back);
        }
        for (peer, dir) in [(&mut self.client, Dir::ToAgent), (&mut self.agent, Dir::ToClient)] {
            if peer.ch.poll_timeout().is_some_and(|t| t <= now) {
                peer.ch.handle_timeout(now);
                peer.flush(now, &mut self.net, dir);
            }
        }
        true
    }

    fn transfer_done(&self) -> bool {
        self.client.all_sent()
            && self.agent.all_sent()
            && self.agent.received_len == self.client.data.len()
            && self.client.received_len == self.agent.data.len()
    }

    /// Runs until both transfers are complete and both sides hold no unacked message.
    fn run_to_completion(&mut self, limits: Limits) {
        while !(self.transfer_done()
            && self.client.ch.unacked() == 0
            && self.agent.ch.unacked() == 0
            && self.injections.is_empty())
        {
            assert!(
                self.step(limits),
                "stalled at {:?}: nothing in flight, no timer, transfer incomplete",
                self.elapsed()
            );
        }
    }

    /// Checks both byte streams arrived complete, in order and unaltered.
    fn check_streams(&self) {
        for (sender, receiver) in [(&self.client, &self.agent), (&self.agent, &self.client)] {
            assert_eq!(
                receiver.received_len,
                sender.data.len(),
                "{} received the wrong number of bytes",
                receiver.name
            );
            let want: [u8; 32] = Sha256::digest(&sender.data).into();
            let got: [u8; 32] = receiver.received.clone().finalize().into();
            assert_eq!(got, want, "{}: SHA-256 of received bytes differs", receiver.name);
            let messages = sender.data.len().div_ceil(CHUNK) as i64;
            assert_eq!(receiver.next_seq, messages);
            assert_eq!(receiver.ch.expected_sequence_number(), messages);
            assert_eq!(sender.ch.next_sequence_number(), messages);
            assert_eq!(sender.ch.stats().messages_sent, messages as u64);
            assert_eq!(receiver.ch.stats().messages_received, messages as u64);
            assert_eq!(receiver.ch.stats().frames_rejected, 0);
            assert_eq!(sender.sent_while_paused, 0, "{} sent data while paused", sender.name);
        }
    }

    fn report(&self, label: &str) {
        let c = self.client.ch.stats();
        let a = self.agent.ch.stats();
        eprintln!(
            "[{label}] simulated {:.1?} in {} iterations; network: {} frames, {} dropped, {} \
             duplicated\n  client: {} msgs sent ({} while paused), {} retransmissions, window \
             full {}x, {} dups received, rto {:?}\n  agent:  {} msgs sent ({} while paused), {} \
             retransmissions, window full {}x, {} dups received, rto {:?}",
            self.elapsed(),
            self.iterations,
            self.net.sent,
            self.net.dropped,
            self.net.duplicated,
            c.messages_sent,
            self.client.sent_during_pause,
            c.retransmissions,
            self.client.window_full,
            c.duplicates_received,
            self.client.ch.rto(),
            a.messages_sent,
            self.agent.sent_during_pause,
            a.retransmissions,
            self.agent.window_full,
            a.duplicates_received,
            self.agent.ch.rto(),
        );
    }
}

fn agent_per_message() -> Config {
    Config {
        retransmit: RetransmitPolicy::PerMessage,
        ..Config::agent()
    }
}

// ---------------------------------------------------------------------------------------------
// 10 MiB each way through the lossy network.

fn ten_mib_each_way(agent_cfg: Config, seed: u64, label: &str, limits: Limits) {
    let wall = Instant::now();
    let mut sim = Sim::new(Config::client(), agent_cfg, NetConfig::LOSSY, seed, 10 * MIB, 10 * MIB);
    sim.run_to_completion(limits);
    sim.report(label);
    eprintln!("[{label}] wall time {:.2?}", wall.elapsed());
    sim.check_streams();
    // The network really was hostile, and the channels really had to work for it.
    assert!(sim.net.dropped > 1_000 && sim.net.duplicated > 1_000);
    assert!(sim.client.ch.stats().retransmissions > 0);
    assert!(sim.agent.ch.stats().retransmissions > 0);
    assert!(sim.client.ch.stats().duplicates_received > 0);
    assert!(sim.agent.ch.stats().duplicates_received > 0);
    // The client's window (4096) is smaller than 10 MiB of 1 KiB messages: back-pressure hit.
    assert!(sim.client.window_full > 0);
}

#[test]
fn ten_mib_each_way_lossy_agent_head_only() {
    // Config::agent(): head-only retransmission on a 100 ms tick (§4.5), as the real agent.
    // Every lost agent frame costs at least one tick, so this needs minutes of simulated time.
    assert_eq!(
        Config::agent().retransmit,
        RetransmitPolicy::HeadOnly {
            tick: Duration::from_millis(100)
        }
    );
    ten_mib_each_way(
        Config::agent(),
        0x5EED_0001,
        "head-only agent",
        Limits {
            sim_time: Duration::from_secs(900),
            iterations: 2_000_000,
        },
    );
}

#[test]
fn ten_mib_each_way_lossy_agent_per_message() {
    ten_mib_each_way(
        agent_per_message(),
        0x5EED_0002,
        "per-message agent",
        Limits {
            sim_time: Duration::from_secs(120),
            iterations: 2_000_000,
        },
    );
}

#[test]
fn lossy_transfer_other_seeds() {
    // Smaller transfers over several seeds, both retransmission policies.
    for seed in 10..16u64 {
        let agent = if seed % 2 == 0 {
            Config::agent()
        } else {
            agent_per_message()
        };
        let mut sim = Sim::new(
            Config::client(),
            agent,
            NetConfig::LOSSY,
            seed,
            256 * 1024 + 17,
            300 * 1024 + 1,
        );
        sim.run_to_completion(Limits {
            sim_time: Duration::from_secs(300),
            iterations: 500_000,
        });
        sim.check_streams();
    }
}

// ---------------------------------------------------------------------------------------------
// Back-pressure.

#[test]
fn never_drops_data_when_the_window_is_full() {
    let limits = Limits {
        sim_time: Duration::from_secs(600),
        iterations: 1_000_000,
    };
    let mut client = Config::client();
    client.send_window = 8;
    let mut agent = Config::agent();
    // With the default (100 000) the agent would ack and buffer every out-of-order message even
    // while not ready (§4.4), so the client's window would never fill. A small buffer makes
    // "not ready" stop all acks once it is full.
    agent.receive_buffer = 4;
    let lossless = NetConfig {
        drop: 0.0,
        duplicate: 0.0,
        max_delay: Duration::from_millis(20),
    };
    let mut sim = Sim::new(client, agent, lossless, 99, 64 * CHUNK + 100, 0);
    sim.agent.ch.set_receive_ready(false);

    // Phase 1: not ready. The client fills its window and then stays blocked.
    let blocked_until = sim.start + Duration::from_secs(20);
    while sim.now < blocked_until {
        assert!(sim.step(limits), "stalled while blocked");
    }
    assert!(sim.client.window_full > 0, "send never refused");
    assert_eq!(sim.client.ch.unacked(), 8);
    assert!(!sim.client.ch.can_send());
    assert_eq!(sim.client.ch.send_capacity(), 0);
    assert_eq!(
        sim.client.ch.send(sim.now, PayloadType::Output, vec![1]),
        Err(SendError::WindowFull)
    );
    // 8 numbered and unacked, plus the 4 the agent acked into its out-of-order buffer.
    assert_eq!(sim.client.offset, 12 * CHUNK);
    assert_eq!(sim.client.ch.next_sequence_number(), 12);
    assert_eq!(sim.agent.received_len, 0, "nothing delivered while not ready");
    assert_eq!(sim.agent.ch.expected_sequence_number(), 0);
    assert!(sim.agent.ch.stats().refused_not_ready > 0);
    assert!(
        sim.client.ch.stats().retransmissions > 0,
        "unacked messages are retransmitted while blocked"
    );

    // Phase 2: ready. Everything arrives, intact and in order.
    sim.agent.ch.set_receive_ready(true);
    sim.agent.ch.poll_ready();
    sim.run_to_completion(limits);
    sim.check_streams();
    sim.report("window full");
}

#[test]
fn never_drops_data_when_the_window_is_full_lossy() {
    // Same, with loss and reordering, and the receiver flipping readiness on and off.
    let limits = Limits {
        sim_time: Duration::from_secs(900),
        iterations: 2_000_000,
    };
    let mut client = Config::client();
    client.send_window = 8;
    let mut agent = Config::agent();
    agent.send_window = 8;
    // The refusing window on both sides (the real agent sends past its buffer untracked).
    agent.untracked_beyond_window = false;
    agent.receive_buffer = 4;
    client.receive_buffer = 4;
    let mut sim = Sim::new(client, agent, NetConfig::LOSSY, 1234, 200 * CHUNK, 150 * CHUNK + 5);
    let mut flips = Rng(77);
    let mut blocked_agent = 0u64;
    let mut blocked_client = 0u64;
    while !(sim.transfer_done() && sim.client.ch.unacked() == 0 && sim.agent.ch.unacked() == 0) {
        if sim.iterations.is_multiple_of(50) {
            sim.agent.ch.set_receive_ready(flips.chance(0.6));
            sim.client.ch.set_receive_ready(flips.chance(0.6));
            sim.agent.ch.poll_ready();
            sim.client.ch.poll_ready();
        }
        if sim.iterations % 500 == 499 {
            // Never leave a side not ready for good.
            sim.agent.ch.set_receive_ready(true);
            sim.client.ch.set_receive_ready(true);
        }
        assert!(sim.step(limits), "stalled");
        blocked_agent = blocked_agent.max(sim.agent.window_full);
        blocked_client = blocked_client.max(sim.client.window_full);
    }
    sim.check_streams();
    assert!(blocked_agent > 0 && blocked_client > 0);
    assert!(sim.agent.ch.stats().refused_not_ready > 0);
    assert!(sim.client.ch.stats().refused_not_ready > 0);
    sim.report("window full, lossy");
}

// ---------------------------------------------------------------------------------------------
// pause_publication / start_publication (§4.7).

/// Drains and decodes what a channel wants written.
fn take_frames(ch: &mut Channel) -> Vec<Frame> {
    std::iter::from_fn(|| ch.poll_transmit())
        .map(|b| Frame::decode(&b).unwrap())
        .collect()
}

#[test]
fn pause_holds_sends_and_retransmissions_until_start() {
    let limits = Limits {
        sim_time: Duration::from_secs(300),
        iterations: 500_000,
    };
    let mut sim = Sim::new(Config::client(), Config::agent(), NetConfig::LOSSY, 4242, 0, 0);
    // A first part of the transfer, then quiet.
    let mut rng = Rng(5);
    let part1 = rng.bytes(40 * CHUNK);
    sim.client.data.clone_from(&part1);
    sim.run_to_completion(limits);
    assert_eq!(sim.agent.received_len, part1.len());

    // One more message is sent and lost on the way: it must wait for retransmission.
    let now = sim.now;
    let lost = rng.bytes(CHUNK);
    assert_eq!(sim.client.ch.send(now, PayloadType::Output, lost.clone()), Ok(40));
    let frames = take_frames(&mut sim.client.ch);
    assert_eq!(frames.len(), 1);

    // pause_publication arrives.
    sim.client
        .ch
        .handle_frame(now, &publication(MessageType::PausePublication))
        .unwrap();
    assert_eq!(sim.client.ch.poll_event(), Some(Event::Paused));
    assert!(sim.client.ch.is_paused());
    // A second pause changes nothing and reports nothing.
    sim.client
        .ch
        .handle_frame(now, &publication(MessageType::PausePublication))
        .unwrap();
    assert_eq!(sim.client.ch.poll_event(), None);

    // The application keeps writing: accepted, numbered, held back.
    let held = rng.bytes(30 * CHUNK);
    for (i, chunk) in held.chunks(CHUNK).enumerate() {
        assert_eq!(sim.client.ch.send(now, PayloadType::Output, chunk), Ok(41 + i as i64));
    }
    assert_eq!(sim.client.ch.pending_transmit(), 0, "nothing written while paused");
    assert_eq!(sim.client.ch.unacked(), 31);
    assert_eq!(
        sim.client.ch.poll_timeout(),
        None,
        "no retransmission timer while paused"
    );
    // Time passes well beyond any RTO: still nothing, not even the lost message.
    let retransmissions_before = sim.client.ch.stats().retransmissions;
    for s in 1..=10 {
        sim.client.ch.handle_timeout(now + Duration::from_secs(s));
    }
    assert_eq!(sim.client.ch.pending_transmit(), 0);
    assert_eq!(sim.client.ch.stats().retransmissions, retransmissions_before);
    sim.now = now + Duration::from_secs(10);

    // start_publication: the held messages go out at once, in order.
    let now = sim.now;
    sim.client
        .ch
        .handle_frame(now, &publication(MessageType::StartPublication))
        .unwrap();
    assert_eq!(sim.client.ch.poll_event(), Some(Event::Resumed));
    assert!(!sim.client.ch.is_paused());
    let seqs: Vec<i64> = take_frames(&mut sim.client.ch)
        .iter()
        .map(|f| f.sequence_number)
        .collect();
    assert_eq!(seqs, (41..71).collect::<Vec<i64>>());
    // The lost one is overdue: its timer fires at once.
    let t = sim.client.ch.poll_timeout().expect("timer for the lost message");
    assert!(t <= now);
    sim.client.ch.handle_timeout(now);
    let resent = take_frames(&mut sim.client.ch);
    assert_eq!(resent.len(), 1);
    assert_eq!(resent[0].sequence_number, 40);
    assert_eq!(resent[0].payload, lost);

    // The held frames were taken off the channel above without reaching the network, i.e.
    // lost too; the channel must recover all of them through the lossy network.
    let mut all = part1;
    all.extend_from_slice(&lost);
    all.extend_from_slice(&held);
    sim.client.offset = all.len();
    sim.client.data = all;
    sim.run_to_completion(limits);
    sim.check_streams();
}

#[test]
fn pause_is_lifted_by_peer_traffic() {
    // §4.7: any stream data or ack from the peer clears "paused", like start_publication.
    let now = Instant::now();
    let mut c = Channel::new(Config::client(), now, UNIX_MS, 1);
    let mut a = Channel::new(Config::agent(), now, UNIX_MS, 2);
    c.send(now, PayloadType::Output, b"one").unwrap();
    let one = c.poll_transmit().unwrap();
    c.handle_frame(now, &publication(MessageType::PausePublication))
        .unwrap();
    assert_eq!(c.poll_event(), Some(Event::Paused));
    c.send(now, PayloadType::Output, b"two").unwrap();
    assert_eq!(c.poll_transmit(), None);
    a.handle_frame(now, &one).unwrap();
    a.processed(now, 0, true);
    let ack = a.poll_transmit().unwrap();
    assert_eq!(
        Acknowledge::parse(&Frame::decode(&ack).unwrap().payload)
            .unwrap()
            .sequence_number,
        0
    );
    c.handle_frame(now, &ack).unwrap();
    assert_eq!(c.poll_event(), Some(Event::Resumed));
    let two = take_frames(&mut c);
    assert_eq!(two.len(), 1);
    assert_eq!(two[0].sequence_number, 1);
    assert_eq!(two[0].payload, b"two");
}

#[test]
fn pause_and_start_injected_mid_transfer_lose_nothing() {
    for (seed, agent_cfg) in [(31u64, Config::agent()), (32, agent_per_message())] {
        let limits = Limits {
            sim_time: Duration::from_secs(600),
            iterations: 2_000_000,
        };
        let mut sim = Sim::new(Config::client(), agent_cfg, NetConfig::LOSSY, seed, MIB, MIB + 333);
        // Both applications write throughout (~100 KiB/s), so some writes meet a paused channel.
        sim.client.rate = Some(100 * 1024);
        sim.agent.rate = Some(120 * 1024);
        // The service pauses and restarts each side at random moments of the first 20 s.
        let mut rng = Rng(seed * 7);
        let mut script = Vec::new();
        for _ in 0..200 {
            let at = sim.start + Duration::from_micros(rng.below(20_000_000));
            let dir = if rng.chance(0.5) { Dir::ToAgent } else { Dir::ToClient };
            script.push(Injection {
                at,
                dir,
                kind: MessageType::PausePublication,
            });
            let resume = at + Duration::from_micros(rng.below(400_000));
            script.push(Injection {
                at: resume,
                dir,
                kind: MessageType::StartPublication,
            });
        }
        sim.schedule(script);
        sim.run_to_completion(limits);
        sim.check_streams();
        for peer in [&sim.client, &sim.agent] {
            assert!(peer.paused_events > 10, "{} was barely paused", peer.name);
            assert!(peer.resumed_events > 10);
            assert!(
                peer.sent_during_pause > 0,
                "{}: no write ever met a paused channel",
                peer.name
            );
        }
        sim.report(&format!("pause/start seed {seed}"));
    }
}

/// 24 MiB down from the real agent's pacing (1 KiB per ms) and head-only resend through 5 % loss
/// and duplication. The agent runs ahead of every hole by up to a tick's worth of messages per
/// hole, so the client's out-of-order store fills; whatever it drops costs a tick of its own.
/// With the store bounded by a count of 10,000 messages (10 MiB of 1 KiB payloads, a third of
/// its byte bound) this took 1,620 s simulated; bounded by bytes, 264 s.
#[test]
fn head_only_download_through_loss_is_bounded_by_the_store_bytes_not_a_message_count() {
    let net = NetConfig {
        drop: 0.05,
        duplicate: 0.05,
        max_delay: Duration::from_millis(2),
    };
    let mut sim = Sim::new(Config::client(), Config::agent(), net, 77, 1024, 24 * MIB);
    sim.agent.rate = Some(1_024_000);
    sim.run_to_completion(Limits {
        sim_time: Duration::from_secs(600),
        iterations: 1_000_000,
    });
    sim.report("24 MiB head-only, paced");
    sim.check_streams();
    assert!(sim.net.dropped > 1_000, "the link really lost messages");
}
