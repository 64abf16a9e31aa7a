//! smux v1 decoder (§7.4): an arbitrary byte stream from the peer, cut into arbitrary pieces,
//! never panics; what it yields does not depend on the cuts (same events, same first error as
//! one piece); the open-stream set always matches the Opened/Closed events; and the bytes held
//! back between calls stay below one header plus the largest body, none once closed.
#![no_main]

use std::collections::BTreeSet;
use std::time::Instant;

use libfuzzer_sys::fuzz_target;
use ssm_proto::SmuxError;
use ssm_proto::smux::{HEADER_LEN, Mux, MuxEvent, Side};

/// The input, laid out so seeds are easy to write by hand: byte 0 picks the side (bit 0:
/// server) and how many streams the client side opens first (bits 1-3); byte 1 is the number
/// of piece sizes that follow (u16 little-endian each, used in turn, 0 counting as 1; none:
/// one byte at a time); the rest is the peer's byte stream.
#[derive(Debug)]
struct Input<'a> {
    server: bool,
    opens: u8,
    cuts: Vec<usize>,
    stream: &'a [u8],
}

impl<'a> Input<'a> {
    fn parse(data: &'a [u8]) -> Option<Self> {
        let (&mode, rest) = data.split_first()?;
        let (&n, mut rest) = rest.split_first()?;
        let mut cuts = Vec::new();
        for _ in 0..n {
            let (cut, tail) = rest.split_first_chunk::<2>()?;
            cuts.push(usize::from(u16::from_le_bytes(*cut)).max(1));
            rest = tail;
        }
        Some(Self {
            server: mode & 1 == 1,
            opens: (mode >> 1) & 7,
            cuts,
            stream: rest,
        })
    }
}

struct Run {
    mux: Mux,
    events: Vec<MuxEvent>,
    open: BTreeSet<u32>,
    first_error: Option<SmuxError>,
}

impl Run {
    fn new(input: &Input, now: Instant) -> Self {
        let side = if input.server { Side::Server } else { Side::Client };
        let mut mux = Mux::new(side, false, now);
        let mut open = BTreeSet::new();
        if !input.server {
            for _ in 0..input.opens {
                let id = mux.open_stream().unwrap_or_else(|e| panic!("open_stream: {e}"));
                open.insert(id);
            }
        }
        Self {
            mux,
            events: Vec::new(),
            open,
            first_error: None,
        }
    }

    fn feed(&mut self, now: Instant, piece: &[u8]) {
        match self.mux.handle_input(now, piece) {
            Ok(()) => assert!(self.first_error.is_none(), "input accepted after an error"),
            Err(e) => {
                assert!(self.mux.is_closed(), "an error leaves the session open: {e}");
                if self.first_error.is_none() {
                    self.first_error = Some(e);
                } else {
                    assert_eq!(e, SmuxError::Closed);
                }
            }
        }
        let held = self.mux.buffered_input();
        assert!(held < HEADER_LEN + usize::from(u16::MAX), "{held} bytes held back");
        assert!(
            held == 0 || !self.mux.is_closed(),
            "a closed session holds {held} bytes"
        );
        while let Some(event) = self.mux.poll_event() {
            match &event {
                MuxEvent::Opened(id) => assert!(self.open.insert(*id), "stream {id} opened twice"),
                MuxEvent::Closed(id) => assert!(self.open.remove(id), "stream {id} closed while not open"),
                MuxEvent::Data(id, data) => {
                    assert!(self.open.contains(id), "data for stream {id} that is not open");
                    assert!(!data.is_empty(), "empty data event");
                }
            }
            self.events.push(event);
        }
        assert_eq!(self.mux.open_streams(), self.open.len());
    }

    fn finish(&self) {
        assert!(
            self.open.iter().all(|id| self.mux.is_open(*id)),
            "open streams differ from the events"
        );
    }
}

fuzz_target!(|data: &[u8]| {
    let Some(input) = Input::parse(data) else {
        return;
    };
    let now = Instant::now();

    let mut whole = Run::new(&input, now);
    whole.feed(now, input.stream);

    let mut pieces = Run::new(&input, now);
    let mut rest = input.stream;
    let mut cuts = input.cuts.iter().cycle();
    while !rest.is_empty() {
        let n = cuts.next().map_or(1, |c| *c).min(rest.len());
        let (piece, tail) = rest.split_at(n);
        pieces.feed(now, piece);
        rest = tail;
    }

    whole.finish();
    pieces.finish();
    assert_eq!(pieces.events, whole.events, "events depend on how the stream was cut");
    assert_eq!(pieces.first_error, whole.first_error);
    assert_eq!(pieces.mux.is_closed(), whole.mux.is_closed());
});
