//! smux v1 (xtaci/smux as vendored by plugin and agent), sans-IO (§7.4).
//!
//! Frame layout, integers **little-endian**:
//!
//! | offset | size | field     | meaning                                    |
//! |-------:|-----:|-----------|--------------------------------------------|
//! | 0      | 1    | version   | always 1                                   |
//! | 1      | 1    | cmd       | 0 SYN, 1 FIN, 2 PSH, 3 NOP                 |
//! | 2      | 2    | length    | data length (PSH only)                     |
//! | 4      | 4    | stream id | odd ids from 3 for the client side; NOP 0  |
//! | 8      | n    | data      |                                            |
//!
//! [`Mux`] holds one session's state: the byte stream it reads from the data channel (frames may
//! be split across or packed into data-channel messages freely), the bytes it wants written, and
//! the set of open streams. Per-stream buffering and back-pressure belong to the caller, so one
//! slow local reader does not stall the others (§9 item 21).

use std::borrow::Cow;
use std::collections::{BTreeSet, VecDeque};
use std::time::{Duration, Instant};

use bytes::{Buf, Bytes};

use crate::error::SmuxError;

/// smux protocol version spoken here.
pub const VERSION: u8 = 1;
/// Header size.
pub const HEADER_LEN: usize = 8;
/// Largest PSH payload written (smux `MaxFrameSize`).
pub const MAX_FRAME_SIZE: usize = 32768;
/// NOP interval when keepalive is on (smux `DefaultConfig`).
pub const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(10);
/// Silence after which a keepalive session is declared dead (smux `DefaultConfig`).
pub const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(30);

/// Keepalive timing of a session that has keepalive on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Keepalive {
    /// How often a NOP is sent.
    pub interval: Duration,
    /// Silence from the peer after which the session is closed.
    pub timeout: Duration,
}

impl Default for Keepalive {
    /// smux's `DefaultConfig`: 10 s and 30 s, as agent and plugin use it (§7.4).
    fn default() -> Self {
        Self {
            interval: KEEPALIVE_INTERVAL,
            timeout: KEEPALIVE_TIMEOUT,
        }
    }
}

/// smux commands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cmd {
    /// 0: open a stream.
    Syn,
    /// 1: close a stream.
    Fin,
    /// 2: data.
    Psh,
    /// 3: keepalive.
    Nop,
}

impl Cmd {
    fn to_u8(self) -> u8 {
        match self {
            Self::Syn => 0,
            Self::Fin => 1,
            Self::Psh => 2,
            Self::Nop => 3,
        }
    }

    fn from_u8(b: u8) -> Result<Self, SmuxError> {
        Ok(match b {
            0 => Self::Syn,
            1 => Self::Fin,
            2 => Self::Psh,
            3 => Self::Nop,
            other => return Err(SmuxError::Command(other)),
        })
    }
}

/// Appends one frame to `out`. `data` must be at most `u16::MAX` bytes.
pub fn encode_frame(out: &mut Vec<u8>, cmd: Cmd, stream_id: u32, data: &[u8]) {
    let (header, body) = frame_parts(cmd, stream_id, data);
    out.extend_from_slice(&header);
    out.extend_from_slice(body);
}

/// A frame's header and the part of `data` it carries (at most `u16::MAX` bytes).
fn frame_parts(cmd: Cmd, stream_id: u32, data: &[u8]) -> ([u8; HEADER_LEN], &[u8]) {
    let len = u16::try_from(data.len()).unwrap_or(u16::MAX);
    let [l0, l1] = len.to_le_bytes();
    let [i0, i1, i2, i3] = stream_id.to_le_bytes();
    let header = [VERSION, cmd.to_u8(), l0, l1, i0, i1, i2, i3];
    (header, data.get(..usize::from(len)).unwrap_or(data))
}

/// Which end of the smux session this is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// Opens streams (odd ids from 3); the client (plugin) side.
    Client,
    /// Accepts streams; the agent side.
    Server,
}

/// What happened on the session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MuxEvent {
    /// The peer opened a stream (server side).
    Opened(u32),
    /// Data for an open stream.
    Data(u32, Vec<u8>),
    /// The peer closed a stream; no more data follows for it.
    Closed(u32),
}

/// One smux session.
#[derive(Debug)]
pub struct Mux {
    side: Side,
    next_id: u32,
    streams: BTreeSet<u32>,
    inbuf: Vec<u8>,
    /// Output in pieces (frame headers, and the data written, shared rather than copied),
    /// `out_len` bytes in all.
    out: VecDeque<Bytes>,
    out_len: usize,
    events: VecDeque<MuxEvent>,
    keepalive: Option<Keepalive>,
    next_nop: Option<Instant>,
    last_heard: Instant,
    next_check: Option<Instant>,
    closed: bool,
}

impl Mux {
    /// A session on `side`; `keepalive` turns on NOPs and the dead-peer check (§7.4) with
    /// smux's default timing.
    pub fn new(side: Side, keepalive: bool, now: Instant) -> Self {
        Self::with_keepalive(side, keepalive.then(Keepalive::default), now)
    }

    /// A session on `side` with keepalive on at the given timing, or off (`None`).
    pub fn with_keepalive(side: Side, keepalive: Option<Keepalive>, now: Instant) -> Self {
        Self {
            side,
            next_id: 1,
            streams: BTreeSet::new(),
            inbuf: Vec::new(),
            out: VecDeque::new(),
            out_len: 0,
            events: VecDeque::new(),
            keepalive,
            // A timing past the clock's range means "never" rather than a panic.
            next_nop: keepalive.and_then(|k| now.checked_add(k.interval)),
            last_heard: now,
            next_check: keepalive.and_then(|k| now.checked_add(k.timeout)),
            closed: false,
        }
    }

    /// Number of open streams.
    pub fn open_streams(&self) -> usize {
        self.streams.len()
    }

    /// Whether `id` is open.
    pub fn is_open(&self, id: u32) -> bool {
        self.streams.contains(&id)
    }

    /// Opens a stream (client side): queues SYN and returns the new id (3, 5, 7, …).
    pub fn open_stream(&mut self) -> Result<u32, SmuxError> {
        if self.closed {
            return Err(SmuxError::Closed);
        }
        self.next_id = self.next_id.wrapping_add(2);
        let id = self.next_id;
        self.streams.insert(id);
        self.push_frame(Cmd::Syn, id, Bytes::new());
        Ok(id)
    }

    /// Queues `data` for stream `id`, split into PSH frames of at most [`MAX_FRAME_SIZE`].
    pub fn write(&mut self, id: u32, data: &[u8]) -> Result<(), SmuxError> {
        self.write_bytes(id, Bytes::copy_from_slice(data))
    }

    /// [`Mux::write`] for data the caller already holds as `Bytes`: the frames carry it without
    /// a copy until [`Mux::poll_output_with`] lends it out.
    pub fn write_bytes(&mut self, id: u32, mut data: Bytes) -> Result<(), SmuxError> {
        if self.closed {
            return Err(SmuxError::Closed);
        }
        if !self.streams.contains(&id) {
            return Err(SmuxError::UnknownStream(id));
        }
        while !data.is_empty() {
            let chunk = data.split_to(MAX_FRAME_SIZE.min(data.len()));
            self.push_frame(Cmd::Psh, id, chunk);
        }
        Ok(())
    }

    /// Closes stream `id` (FIN) and forgets it; there is no half-close in smux v1.
    pub fn close_stream(&mut self, id: u32) {
        if self.streams.remove(&id) && !self.closed {
            self.push_frame(Cmd::Fin, id, Bytes::new());
        }
    }

    /// Sends FIN for stream `id` after the peer's FIN has closed it here: a smux stream that
    /// reads EOF and is then closed locally sends its own FIN, as the agent's streams do.
    pub fn answer_fin(&mut self, id: u32) {
        if !self.closed && !self.streams.contains(&id) {
            self.push_frame(Cmd::Fin, id, Bytes::new());
        }
    }

    fn push_frame(&mut self, cmd: Cmd, id: u32, mut data: Bytes) {
        // The header is queued apart and the body as it is: copying frames into one buffer
        // was most of the emulator's copying in an unpaced download.
        let (header, body) = frame_parts(cmd, id, &data);
        let len = body.len();
        data.truncate(len);
        self.out.push_back(Bytes::copy_from_slice(&header));
        if !data.is_empty() {
            self.out.push_back(data);
        }
        self.out_len += HEADER_LEN + len;
    }

    /// Feeds bytes read from the data channel. A protocol error closes the session.
    pub fn handle_input(&mut self, now: Instant, bytes: &[u8]) -> Result<(), SmuxError> {
        if self.closed {
            return Err(SmuxError::Closed);
        }
        self.inbuf.extend_from_slice(bytes);
        let mut at = 0usize;
        let result = loop {
            let Some(header) = self.inbuf.get(at..at + HEADER_LEN) else {
                break Ok(());
            };
            let (version, cmd, len, id) = match header {
                [v, c, l0, l1, i0, i1, i2, i3] => (
                    *v,
                    *c,
                    usize::from(u16::from_le_bytes([*l0, *l1])),
                    u32::from_le_bytes([*i0, *i1, *i2, *i3]),
                ),
                _ => break Ok(()),
            };
            if version != VERSION {
                break Err(SmuxError::Version(version));
            }
            let cmd = match Cmd::from_u8(cmd) {
                Ok(c) => c,
                Err(e) => break Err(e),
            };
            let body_len = if cmd == Cmd::Psh { len } else { 0 };
            let Some(body) = self.inbuf.get(at + HEADER_LEN..at + HEADER_LEN + body_len) else {
                break Ok(());
            };
            let body = body.to_vec();
            at += HEADER_LEN + body_len;
            self.last_heard = now;
            match cmd {
                Cmd::Syn => {
                    if self.side == Side::Server && self.streams.insert(id) {
                        self.events.push_back(MuxEvent::Opened(id));
                    }
                }
                Cmd::Fin => {
                    if self.streams.remove(&id) {
                        self.events.push_back(MuxEvent::Closed(id));
                    }
                }
                Cmd::Psh => {
                    if !body.is_empty() && self.streams.contains(&id) {
                        self.events.push_back(MuxEvent::Data(id, body));
                    }
                }
                Cmd::Nop => {}
            }
        };
        self.inbuf.drain(..at.min(self.inbuf.len()));
        if result.is_err() {
            self.shutdown();
        }
        result
    }

    fn shutdown(&mut self) {
        self.closed = true;
        // A closed session reads nothing more: drop what followed the failing frame.
        self.inbuf = Vec::new();
        for id in std::mem::take(&mut self.streams) {
            self.events.push_back(MuxEvent::Closed(id));
        }
    }

    /// Input from the peer is waiting that the caller has not read yet (its queue towards us is
    /// full, or it paused reading): the peer counts as alive now. smux v1 does the same: its
    /// keepalive never closes a session while the receive budget is exhausted and the reader is
    /// blocked, since the silence is then ours (`session.go` keepalive, `bucket > 0` check).
    pub fn input_waiting(&mut self, now: Instant) {
        if now > self.last_heard {
            self.last_heard = now;
        }
    }

    /// Whether the session has ended (protocol error or keepalive timeout).
    pub fn is_closed(&self) -> bool {
        self.closed
    }

    /// Next event.
    pub fn poll_event(&mut self) -> Option<MuxEvent> {
        self.events.pop_front()
    }

    /// Bytes waiting to be written to the data channel.
    pub fn pending_output(&self) -> usize {
        self.out_len
    }

    /// Received bytes held back as the start of an incomplete frame between calls to
    /// [`Mux::handle_input`]: less than one header plus the largest PSH body
    /// (`HEADER_LEN + u16::MAX`) whatever the peer sends, and none once the session is closed.
    pub fn buffered_input(&self) -> usize {
        self.inbuf.len()
    }

    /// Up to `max` bytes to carry in one data-channel message.
    pub fn poll_output(&mut self, max: usize) -> Option<Vec<u8>> {
        self.take_output(max, |bytes| bytes.into_owned())
    }

    /// Up to `max` bytes to carry in one data-channel message, lent to `f` and then dropped
    /// from the output: for a caller that frames them at once, without a copy of its own.
    /// Copied here only where they span pieces of the output (a frame's header and body).
    pub fn poll_output_with<R>(&mut self, max: usize, f: impl FnOnce(&[u8]) -> R) -> Option<R> {
        self.take_output(max, |bytes| f(&bytes))
    }

    /// Hands `f` up to `max` bytes of output, borrowed from one piece or gathered from several
    /// (so that [`Mux::poll_output`] copies each byte once either way), then drops them.
    fn take_output<R>(&mut self, max: usize, f: impl FnOnce(Cow<'_, [u8]>) -> R) -> Option<R> {
        if self.out_len == 0 || max == 0 {
            return None;
        }
        let n = max.min(self.out_len);
        let taken = match self.out.front().and_then(|front| front.get(..n)) {
            Some(whole) => f(Cow::Borrowed(whole)),
            None => {
                let mut chunk = Vec::with_capacity(n);
                for piece in &self.out {
                    let want = n - chunk.len();
                    if want == 0 {
                        break;
                    }
                    chunk.extend_from_slice(piece.get(..want).unwrap_or(piece));
                }
                f(Cow::Owned(chunk))
            }
        };
        self.consume_output(n);
        Some(taken)
    }

    /// Drops the first `n` bytes of the output (at most all of it).
    fn consume_output(&mut self, mut n: usize) {
        self.out_len -= n.min(self.out_len);
        while n > 0 {
            let Some(front) = self.out.front_mut() else { break };
            if front.len() > n {
                front.advance(n);
                break;
            }
            n -= front.len();
            self.out.pop_front();
        }
    }

    /// When [`Mux::handle_timeout`] wants to run next (keepalive only).
    pub fn poll_timeout(&self) -> Option<Instant> {
        match (self.next_nop, self.next_check) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Sends NOPs and checks for a silent peer (§7.4).
    pub fn handle_timeout(&mut self, now: Instant) -> Result<(), SmuxError> {
        let Some(keepalive) = self.keepalive.filter(|_| !self.closed) else {
            return Ok(());
        };
        if self.next_nop.is_some_and(|t| now >= t) {
            self.push_frame(Cmd::Nop, 0, Bytes::new());
            self.next_nop = now.checked_add(keepalive.interval);
        }
        if self.next_check.is_some_and(|t| now >= t) {
            if now.saturating_duration_since(self.last_heard) >= keepalive.timeout {
                self.shutdown();
                return Err(SmuxError::Timeout);
            }
            self.next_check = now.checked_add(keepalive.timeout);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_frames_match_the_spec() {
        // §7.4 test frames.
        let mut f = Vec::new();
        encode_frame(&mut f, Cmd::Syn, 3, &[]);
        assert_eq!(f, [1, 0, 0, 0, 3, 0, 0, 0]);
        f.clear();
        encode_frame(&mut f, Cmd::Psh, 3, b"hi");
        assert_eq!(f, [1, 2, 2, 0, 3, 0, 0, 0, 0x68, 0x69]);
        f.clear();
        encode_frame(&mut f, Cmd::Fin, 3, &[]);
        assert_eq!(f, [1, 1, 0, 0, 3, 0, 0, 0]);
        f.clear();
        encode_frame(&mut f, Cmd::Nop, 0, &[]);
        assert_eq!(f, [1, 3, 0, 0, 0, 0, 0, 0]);
    }

    #[test]
    fn client_and_server_exchange_across_split_messages() {
        let now = Instant::now();
        let mut c = Mux::new(Side::Client, false, now);
        let mut s = Mux::new(Side::Server, false, now);
        let a = c.open_stream().unwrap();
        let b = c.open_stream().unwrap();
        assert_eq!((a, b), (3, 5));
        c.write(a, b"hello").unwrap();
        c.write(b, &vec![7u8; 70_000]).unwrap();
        c.close_stream(a);
        // Carry the byte stream in 3-byte pieces to exercise frame reassembly.
        while let Some(chunk) = c.poll_output(3) {
            s.handle_input(now, &chunk).unwrap();
        }
        let mut got_b = 0;
        let mut events = vec![];
        while let Some(e) = s.poll_event() {
            match e {
                MuxEvent::Data(id, d) if id == b => got_b += d.len(),
                other => events.push(other),
            }
        }
        assert_eq!(got_b, 70_000);
        assert_eq!(
            events,
            vec![
                MuxEvent::Opened(3),
                MuxEvent::Opened(5),
                MuxEvent::Data(3, b"hello".to_vec()),
                MuxEvent::Closed(3)
            ]
        );
    }

    /// Output taken in pieces while more is written, some from within one piece of the output
    /// and some across pieces: every byte still comes out once and in order.
    #[test]
    fn output_taken_while_written_keeps_every_byte_in_order() {
        let now = Instant::now();
        let mut c = Mux::new(Side::Client, false, now);
        let mut s = Mux::new(Side::Server, false, now);
        let id = c.open_stream().unwrap();
        let sent: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
        let mut got = Vec::new();
        let (mut lent, mut gathered) = (false, false);
        for (i, piece) in sent.chunks(1_500).enumerate() {
            c.write(id, piece).unwrap();
            // Take less than was written, in sizes that straddle the pieces' ends.
            for _ in 0..(i % 3) {
                let whole = c.out.front().is_some_and(|f| f.len() >= 1_021.min(c.out_len));
                lent |= whole;
                gathered |= !whole;
                if let Some(chunk) = c.poll_output(1_021) {
                    s.handle_input(now, &chunk).unwrap();
                }
            }
            while let Some(e) = s.poll_event() {
                if let MuxEvent::Data(_, d) = e {
                    got.extend_from_slice(&d);
                }
            }
        }
        while let Some(chunk) = c.poll_output(977) {
            s.handle_input(now, &chunk).unwrap();
        }
        while let Some(e) = s.poll_event() {
            if let MuxEvent::Data(_, d) = e {
                got.extend_from_slice(&d);
            }
        }
        assert!(
            lent && gathered,
            "output not taken both from one piece and across pieces: the test proves nothing"
        );
        assert_eq!(c.pending_output(), 0);
        assert_eq!(got.len(), sent.len());
        assert!(got == sent, "bytes out of order or changed");
    }

    #[test]
    fn bad_version_closes_session() {
        let now = Instant::now();
        let mut s = Mux::new(Side::Server, false, now);
        s.handle_input(now, &[1, 0, 0, 0, 3, 0, 0, 0]).unwrap();
        assert_eq!(
            s.handle_input(now, &[2, 0, 0, 0, 5, 0, 0, 0]),
            Err(SmuxError::Version(2))
        );
        assert!(s.is_closed());
        assert_eq!(s.poll_event(), Some(MuxEvent::Opened(3)));
        assert_eq!(s.poll_event(), Some(MuxEvent::Closed(3)));
    }

    /// The bound `buffered_input` documents held only while the session was open: a protocol
    /// error kept the rest of the failing piece (anything the peer sent after the bad frame).
    #[test]
    fn a_closed_session_holds_no_input() {
        let now = Instant::now();
        let mut s = Mux::new(Side::Server, false, now);
        let mut piece = vec![2, 0, 0, 0, 5, 0, 0, 0];
        piece.extend(std::iter::repeat_n(0u8, 100_000));
        assert_eq!(s.handle_input(now, &piece), Err(SmuxError::Version(2)));
        assert_eq!(s.buffered_input(), 0);
        assert_eq!(s.handle_input(now, &piece), Err(SmuxError::Closed));
        assert_eq!(s.buffered_input(), 0);
    }

    #[test]
    fn keepalive_sends_nop_and_detects_silence() {
        let now = Instant::now();
        let mut c = Mux::new(Side::Client, true, now);
        c.handle_timeout(now + KEEPALIVE_INTERVAL).unwrap();
        assert_eq!(c.poll_output(64), Some(vec![1, 3, 0, 0, 0, 0, 0, 0]));
        assert_eq!(c.handle_timeout(now + KEEPALIVE_TIMEOUT), Err(SmuxError::Timeout));
    }

    #[test]
    fn keepalive_timing_is_configurable() {
        let now = Instant::now();
        let k = Keepalive {
            interval: Duration::from_millis(100),
            timeout: Duration::from_millis(300),
        };
        let mut c = Mux::with_keepalive(Side::Client, Some(k), now);
        assert_eq!(c.poll_timeout(), Some(now + k.interval));
        c.handle_timeout(now + k.interval).unwrap();
        assert_eq!(c.poll_output(64), Some(vec![1, 3, 0, 0, 0, 0, 0, 0]));
        assert_eq!(c.handle_timeout(now + k.timeout), Err(SmuxError::Timeout));
        assert!(c.is_closed());
    }

    #[test]
    fn waiting_input_keeps_the_session_alive() {
        // We are the ones not reading: silence from the peer is ours, so no timeout.
        let now = Instant::now();
        let mut c = Mux::new(Side::Client, true, now);
        c.input_waiting(now + KEEPALIVE_TIMEOUT - Duration::from_secs(1));
        assert_eq!(c.handle_timeout(now + KEEPALIVE_TIMEOUT), Ok(()));
        // Once nothing waits and nothing arrives for a whole timeout, the peer is dead.
        assert_eq!(c.handle_timeout(now + 2 * KEEPALIVE_TIMEOUT), Err(SmuxError::Timeout));
    }

    #[test]
    fn frames_keep_the_session_alive() {
        let now = Instant::now();
        let mut c = Mux::new(Side::Client, true, now);
        c.handle_input(
            now + KEEPALIVE_TIMEOUT - Duration::from_secs(1),
            &[1, 3, 0, 0, 0, 0, 0, 0],
        )
        .unwrap();
        assert_eq!(c.handle_timeout(now + KEEPALIVE_TIMEOUT), Ok(()));
    }
}
