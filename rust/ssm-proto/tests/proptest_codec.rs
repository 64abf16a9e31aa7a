//! Property tests of the frame codec (§3), the smux v1 parser (§7.4) and the channel's frame
//! intake (§4): round trips, and no panic whatever the input.

use std::time::{Duration, Instant};

use proptest::collection::vec;
use proptest::prelude::*;
use sha2::{Digest, Sha256};
use ssm_proto::smux::{Mux, MuxEvent, Side};
use ssm_proto::{Acknowledge, Channel, Config, Event, Frame, MessageId, MessageType, PayloadType, SmuxError};

const CASES: u32 = 10_000;

const KNOWN_TYPES: [&str; 7] = [
    "input_stream_data",
    "output_stream_data",
    "acknowledge",
    "channel_closed",
    "start_publication",
    "pause_publication",
    "agent_session_state",
];

fn message_type() -> impl Strategy<Value = MessageType> {
    prop_oneof![
        Just(MessageType::InputStreamData),
        Just(MessageType::OutputStreamData),
        Just(MessageType::Acknowledge),
        Just(MessageType::ChannelClosed),
        Just(MessageType::StartPublication),
        Just(MessageType::PausePublication),
        Just(MessageType::AgentSessionState),
        // Printable ASCII without space (0x21..=0x7e): nothing a reader trims.
        "[!-~]{1,32}"
            .prop_filter("a known name parses to its own variant", |s| {
                !KNOWN_TYPES.contains(&s.as_str())
            })
            .prop_map(MessageType::Other),
    ]
}

fn valid_frame() -> impl Strategy<Value = Frame> {
    (
        message_type(),
        1u64..,
        any::<i64>(),
        any::<u64>(),
        any::<[u8; 16]>(),
        any::<u32>(),
        vec(any::<u8>(), 0..2048),
    )
        .prop_map(|(message_type, created_date, seq, flags, id, pt, payload)| Frame {
            message_type,
            schema_version: 1,
            created_date,
            sequence_number: seq,
            flags,
            message_id: MessageId(id),
            payload_type: PayloadType::from_u32(pt),
            payload,
        })
}

/// What any successfully decoded frame must satisfy: it re-encodes to something that decodes
/// to itself, and its payload came from inside the input.
fn check_decoded(input: &[u8], f: &Frame) -> Result<(), TestCaseError> {
    prop_assert!(input.len() >= 116);
    prop_assert!(f.payload.len() <= input.len() - 116);
    let again = Frame::decode(&f.encode());
    prop_assert_eq!(again.as_ref(), Ok(f));
    Ok(())
}

/// A header that looks right (writer or MGS header length) followed by random bytes, sometimes
/// with a real type name, a matching digest and a consistent `PayloadLength`.
fn plausible_frame() -> impl Strategy<Value = Vec<u8>> {
    (
        prop_oneof![Just(116u32), Just(112u32)],
        prop_oneof![1 => vec(any::<u8>(), 0..116), 4 => vec(any::<u8>(), 108..640)],
        any::<bool>(),
        0usize..KNOWN_TYPES.len(),
        any::<bool>(),
        any::<bool>(),
    )
        .prop_map(|(hl, mut rest, name_it, name, fix_len, fix_digest)| {
            let mut bytes = hl.to_be_bytes().to_vec();
            bytes.append(&mut rest);
            if name_it && bytes.len() >= 36 {
                let n = KNOWN_TYPES[name].as_bytes();
                bytes[4..36].fill(b' ');
                bytes[4..4 + n.len()].copy_from_slice(n);
            }
            let hl = hl as usize;
            if bytes.len() >= hl + 4 {
                let payload_len = bytes.len() - hl - 4;
                if fix_len {
                    bytes[hl..hl + 4].copy_from_slice(&(payload_len as u32).to_be_bytes());
                }
                if fix_digest {
                    let d = Sha256::digest(&bytes[hl + 4..]);
                    bytes[80..112].copy_from_slice(&d);
                }
            }
            bytes
        })
}

/// Bytes that are mostly well-formed smux v1 frames, with occasional bad versions, unknown
/// commands (4 is v2's UPD) and lengths that do not match the data that follows.
fn smux_bytes() -> impl Strategy<Value = Vec<u8>> {
    let frame = (
        prop_oneof![9 => Just(1u8), 1 => any::<u8>()],
        prop_oneof![9 => 0u8..4, 1 => any::<u8>()],
        0u32..8,
        vec(any::<u8>(), 0..48),
        prop_oneof![9 => Just(None), 1 => any::<u16>().prop_map(Some)],
    )
        .prop_map(|(version, cmd, id, data, bad_len)| {
            let len = bad_len.unwrap_or(if cmd == 2 { data.len() as u16 } else { 0 });
            let mut f = vec![version, cmd];
            f.extend_from_slice(&len.to_le_bytes());
            f.extend_from_slice(&id.to_le_bytes());
            if cmd == 2 || bad_len.is_some() {
                f.extend_from_slice(&data);
            }
            f
        });
    prop_oneof![
        1 => vec(any::<u8>(), 0..512),
        3 => vec(frame, 0..24).prop_map(|fs| fs.concat()),
    ]
}

fn feed_mux(side: Side, chunks: &[&[u8]]) -> Result<(Vec<MuxEvent>, bool), TestCaseError> {
    let now = Instant::now();
    let mut m = Mux::new(side, false, now);
    let mut failed = false;
    for chunk in chunks {
        let r = m.handle_input(now, chunk);
        if failed {
            // Once a protocol error closed the session, everything else is refused.
            prop_assert_eq!(r, Err(SmuxError::Closed));
        } else if r.is_err() {
            prop_assert!(!matches!(r, Err(SmuxError::Closed)));
            failed = true;
        }
        prop_assert_eq!(m.is_closed(), failed);
    }
    let mut events = Vec::new();
    while let Some(e) = m.poll_event() {
        events.push(e);
    }
    if m.is_closed() {
        prop_assert_eq!(m.open_streams(), 0);
    }
    Ok((events, failed))
}

fn split_at_sizes<'a>(bytes: &'a [u8], sizes: &[usize]) -> Vec<&'a [u8]> {
    let mut out = Vec::new();
    let mut rest = bytes;
    let mut i = 0;
    while !rest.is_empty() {
        let n = sizes.get(i % sizes.len().max(1)).copied().unwrap_or(1).min(rest.len());
        let (a, b) = rest.split_at(n);
        out.push(a);
        rest = b;
        i += 1;
    }
    out
}

/// Frames a channel may meet: valid stream data (small sequence numbers so some are in order),
/// acks with sensible or garbage payloads, control messages, or random bytes.
fn channel_input() -> impl Strategy<Value = Vec<u8>> {
    let stream = (
        prop_oneof![Just(MessageType::InputStreamData), Just(MessageType::OutputStreamData)],
        -2i64..12,
        any::<u32>(),
        vec(any::<u8>(), 0..16),
    )
        .prop_map(|(t, seq, pt, payload)| frame(t, seq, PayloadType::from_u32(pt % 14), payload).encode());
    let ack = (-2i64..12, any::<bool>(), vec(any::<u8>(), 0..64)).prop_map(|(seq, good, garbage)| {
        let payload = if good {
            Acknowledge {
                message_type: "input_stream_data".into(),
                message_id: "dd01e56b-ff48-483e-a508-b5f073f31b16".into(),
                sequence_number: seq,
                is_sequential: true,
            }
            .to_json()
        } else {
            garbage
        };
        frame(MessageType::Acknowledge, 0, PayloadType::Null, payload).encode()
    });
    let control = (
        prop_oneof![
            Just(MessageType::ChannelClosed),
            Just(MessageType::StartPublication),
            Just(MessageType::PausePublication),
            Just(MessageType::AgentSessionState),
            Just(MessageType::Other("interactive_shell".into())),
        ],
        vec(any::<u8>(), 0..64),
    )
        .prop_map(|(t, payload)| frame(t, 0, PayloadType::Null, payload).encode());
    prop_oneof![
        4 => stream,
        2 => ack,
        1 => control,
        1 => vec(any::<u8>(), 0..300),
        1 => plausible_frame(),
    ]
}

fn frame(message_type: MessageType, seq: i64, pt: PayloadType, payload: Vec<u8>) -> Frame {
    Frame {
        message_type,
        schema_version: 1,
        created_date: 1_700_000_000_000,
        sequence_number: seq,
        flags: 0,
        message_id: MessageId([9; 16]),
        payload_type: pt,
        payload,
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(CASES))]

    #[test]
    fn valid_frames_round_trip(f in valid_frame()) {
        let wire = f.encode();
        prop_assert_eq!(wire.len(), 120 + f.payload.len());
        prop_assert_eq!(&wire[..4], &116u32.to_be_bytes()[..]);
        let d = Frame::decode(&wire);
        prop_assert_eq!(d.as_ref(), Ok(&f));
        prop_assert_eq!(d.unwrap().encode(), wire);
    }

    #[test]
    fn random_bytes_never_panic_decode(bytes in vec(any::<u8>(), 0..512)) {
        if let Ok(f) = Frame::decode(&bytes) {
            check_decoded(&bytes, &f)?;
        }
    }

    #[test]
    fn plausible_headers_never_panic_decode(bytes in plausible_frame()) {
        match Frame::decode(&bytes) {
            Ok(f) => check_decoded(&bytes, &f)?,
            Err(e) => {
                // An error must carry a printable reason; decoding is deterministic.
                prop_assert!(!e.to_string().is_empty());
                prop_assert_eq!(Frame::decode(&bytes), Err(e));
            }
        }
    }

    #[test]
    fn smux_input_never_panics_and_chunking_does_not_matter(
        bytes in smux_bytes(),
        sizes in vec(1usize..80, 1..16),
        server in any::<bool>(),
    ) {
        let side = if server { Side::Server } else { Side::Client };
        let whole = feed_mux(side, &[&bytes])?;
        let chunked = feed_mux(side, &split_at_sizes(&bytes, &sizes))?;
        prop_assert_eq!(&whole, &chunked);
        // Byte at a time too.
        let single: Vec<&[u8]> = bytes.chunks(1).collect();
        prop_assert_eq!(&whole, &feed_mux(side, &single)?);
    }

    #[test]
    fn channel_never_panics_on_any_input(
        inputs in vec(channel_input(), 0..24),
        agent in any::<bool>(),
        ready_flips in any::<u32>(),
    ) {
        let start = Instant::now();
        let config = if agent { Config::agent() } else { Config::client() };
        let verify = config.verify_digest;
        let mut ch = Channel::new(config, start, 1_700_000_000_000, 7);
        // Something of ours in flight so acks have something to match.
        for _ in 0..4 {
            ch.send(start, PayloadType::Output, b"x").unwrap();
        }
        let mut now = start;
        let mut delivered = 0i64;
        let mut rejected = 0u64;
        for (i, bytes) in inputs.iter().enumerate() {
            now += Duration::from_millis(7);
            ch.set_receive_ready(ready_flips & (1 << (i % 32)) == 0);
            let expected_before = ch.expected_sequence_number();
            let r = ch.handle_frame(now, bytes);
            prop_assert_eq!(r.is_ok(), Frame::decode_with(bytes, verify).is_ok());
            if r.is_err() {
                rejected += 1;
            }
            prop_assert!(ch.expected_sequence_number() >= expected_before);
            if let Some(t) = ch.poll_timeout()
                && t <= now {
                    ch.handle_timeout(now);
                }
            while let Some(out) = ch.poll_transmit() {
                // Everything we emit must itself be a valid frame.
                prop_assert!(Frame::decode(&out).is_ok());
            }
            while let Some(e) = ch.poll_event() {
                if let Event::Stream { sequence_number, .. } = e {
                    prop_assert_eq!(sequence_number, delivered);
                    delivered += 1;
                    ch.processed(now, sequence_number, true);
                }
            }
        }
        prop_assert_eq!(ch.expected_sequence_number(), delivered);
        prop_assert!(ch.stats().frames_rejected >= rejected);
        prop_assert!(ch.unacked() <= 4);
    }
}
