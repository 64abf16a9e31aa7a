//! Byte-exact checks against the test vectors of `ssm-protocol.md` §3.7, plus decoder rejection
//! rules of §3.6.

use sha2::{Digest, Sha256};
use ssm_proto::frame::{FLAGS_ACK, HEADER_LENGTH};
use ssm_proto::{Acknowledge, DecodeError, Frame, MessageId, MessageType, PayloadType, PortFlag, TerminalSize};

/// Parses a hexdump in the spec's layout (`0000: aa bb …`), ignoring offsets.
fn from_dump(dump: &str) -> Vec<u8> {
    let mut out = Vec::new();
    for line in dump.lines() {
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        let (_, bytes) = line.split_once(':').expect("offset prefix");
        for b in bytes.split_whitespace() {
            out.push(u8::from_str_radix(b, 16).expect("hex byte"));
        }
    }
    out
}

const VECTOR_A: &str = "
0000: 00 00 00 74 69 6e 70 75 74 5f 73 74 72 65 61 6d
0010: 5f 64 61 74 61 20 20 20 20 20 20 20 20 20 20 20
0020: 20 20 20 20 00 00 00 01 00 00 01 5e 0b aa 78 84
0030: 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00
0040: a5 08 b5 f0 73 f3 1b 16 dd 01 e5 6b ff 48 48 3e
0050: 2c f2 4d ba 5f b0 a3 0e 26 e8 3b 2a c5 b9 e2 9e
0060: 1b 16 1e 5c 1f a7 42 5e 73 04 33 62 93 8b 98 24
0070: 00 00 00 01 00 00 00 05 68 65 6c 6c 6f
";

/// First 120 bytes of vector B (header and `PayloadLength`).
const VECTOR_B_HEAD: &str = "
0000: 00 00 00 74 61 63 6b 6e 6f 77 6c 65 64 67 65 20
0010: 20 20 20 20 20 20 20 20 20 20 20 20 20 20 20 20
0020: 20 20 20 20 00 00 00 01 00 00 01 5e 0b aa 78 b8
0030: 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 03
0040: 99 aa bb cc dd ee ff 00 11 22 33 44 55 66 77 88
0050: 77 da 25 ed 45 7f 36 d5 ef 42 71 e0 23 d9 64 ca
0060: 11 f6 9a 55 64 46 bb 34 11 c3 b0 e9 c4 3e d8 91
0070: 00 00 00 00 00 00 00 af
";

const VECTOR_B_JSON: &str = r#"{"AcknowledgedMessageType":"input_stream_data","AcknowledgedMessageId":"dd01e56b-ff48-483e-a508-b5f073f31b16","AcknowledgedMessageSequenceNumber":0,"IsSequentialMessage":true}"#;

fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

fn vector_a_frame() -> Frame {
    Frame {
        message_type: MessageType::InputStreamData,
        schema_version: 1,
        created_date: 1_503_434_274_948,
        sequence_number: 0,
        flags: 0,
        message_id: MessageId::parse("dd01e56b-ff48-483e-a508-b5f073f31b16").unwrap(),
        payload_type: PayloadType::Output,
        payload: b"hello".to_vec(),
    }
}

fn vector_b_frame() -> Frame {
    let ack = Acknowledge {
        message_type: "input_stream_data".to_owned(),
        message_id: "dd01e56b-ff48-483e-a508-b5f073f31b16".to_owned(),
        sequence_number: 0,
        is_sequential: true,
    };
    Frame {
        message_type: MessageType::Acknowledge,
        schema_version: 1,
        created_date: 1_503_434_275_000,
        sequence_number: 0,
        flags: FLAGS_ACK,
        message_id: MessageId::parse("11223344-5566-7788-99aa-bbccddeeff00").unwrap(),
        payload_type: PayloadType::Null,
        payload: ack.to_json(),
    }
}

#[test]
fn vector_a_decodes_to_the_stated_fields() {
    let wire = from_dump(VECTOR_A);
    assert_eq!(wire.len(), 125);
    let f = Frame::decode(&wire).expect("vector A decodes");
    assert_eq!(f.message_type, MessageType::InputStreamData);
    assert_eq!(f.message_type.as_str(), "input_stream_data");
    assert_eq!(f.schema_version, 1);
    assert_eq!(f.created_date, 1_503_434_274_948);
    assert_eq!(f.created_date, 0x0000_015E_0BAA_7884);
    assert_eq!(f.sequence_number, 0);
    assert_eq!(f.flags, 0);
    assert_eq!(f.message_id.to_string(), "dd01e56b-ff48-483e-a508-b5f073f31b16");
    assert_eq!(f.payload_type, PayloadType::Output);
    assert_eq!(f.payload_type.to_u32(), 1);
    assert_eq!(f.payload, b"hello");
    assert_eq!(
        sha256_hex(&f.payload),
        "2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824"
    );
    // The digest field on the wire is that SHA-256.
    assert_eq!(hex::encode(&wire[80..112]), sha256_hex(b"hello"));
    assert_eq!(f, vector_a_frame());
}

#[test]
fn vector_a_re_encodes_byte_for_byte() {
    let wire = from_dump(VECTOR_A);
    let decoded = Frame::decode(&wire).unwrap();
    assert_eq!(decoded.encode(), wire);
    assert_eq!(vector_a_frame().encode(), wire);
    // encode_into appends.
    let mut buf = vec![0xEE];
    vector_a_frame().encode_into(&mut buf);
    assert_eq!(buf[0], 0xEE);
    assert_eq!(&buf[1..], &wire[..]);
}

#[test]
fn vector_a_message_id_halves_are_swapped_on_the_wire() {
    let wire = from_dump(VECTOR_A);
    let id = vector_a_frame().message_id;
    assert_eq!(hex::encode(id.0), "dd01e56bff48483ea508b5f073f31b16");
    assert_eq!(&wire[64..72], &id.0[8..16]);
    assert_eq!(&wire[72..80], &id.0[0..8]);
    assert_eq!(id.to_wire().as_slice(), &wire[64..80]);
}

#[test]
fn vector_b_ack_payload_is_the_spec_text() {
    let json = vector_b_frame().payload;
    assert_eq!(json.len(), 175);
    assert_eq!(std::str::from_utf8(&json).unwrap(), VECTOR_B_JSON);
    assert_eq!(
        sha256_hex(&json),
        "77da25ed457f36d5ef4271e023d964ca11f69a556446bb3411c3b0e9c43ed891"
    );
    let parsed = Acknowledge::parse(&json).unwrap();
    assert_eq!(parsed.sequence_number, 0);
    assert_eq!(parsed.message_type, "input_stream_data");
    assert_eq!(parsed.message_id, "dd01e56b-ff48-483e-a508-b5f073f31b16");
    assert!(parsed.is_sequential);
}

#[test]
fn vector_b_header_matches_and_decodes_back() {
    let head = from_dump(VECTOR_B_HEAD);
    assert_eq!(head.len(), 120);
    let wire = vector_b_frame().encode();
    assert_eq!(wire.len(), 120 + 175);
    assert_eq!(hex::encode(&wire[..120]), hex::encode(&head));
    assert_eq!(&wire[120..], VECTOR_B_JSON.as_bytes());

    let f = Frame::decode(&wire).unwrap();
    assert_eq!(f, vector_b_frame());
    assert_eq!(f.message_type, MessageType::Acknowledge);
    assert_eq!(f.created_date, 1_503_434_275_000);
    assert_eq!(f.sequence_number, 0);
    assert_eq!(f.flags, 3);
    assert_eq!(f.message_id.to_string(), "11223344-5566-7788-99aa-bbccddeeff00");
    assert_eq!(f.payload_type, PayloadType::Null);
    let ack = Acknowledge::parse(&f.payload).unwrap();
    assert_eq!(ack.message_id, "dd01e56b-ff48-483e-a508-b5f073f31b16");
}

fn assert_digest_prefix_suffix(bytes: &[u8], prefix: &str, suffix: &str) {
    let h = sha256_hex(bytes);
    assert_eq!(h.len(), 64);
    assert!(h.starts_with(prefix), "{h} should start with {prefix}");
    assert!(h.ends_with(suffix), "{h} should end with {suffix}");
}

#[test]
fn size_payload_json_and_digest() {
    let size = TerminalSize { cols: 80, rows: 24 };
    let json = size.to_json();
    assert_eq!(json, br#"{"cols":80,"rows":24}"#);
    assert_digest_prefix_suffix(&json, "d53ca1ea", "1cba");
    assert_eq!(TerminalSize::parse(&json).unwrap(), size);
}

#[test]
fn terminate_session_flag_bytes_and_digest() {
    let bytes = PortFlag::TerminateSession.to_bytes();
    assert_eq!(bytes, [0, 0, 0, 2]);
    assert_digest_prefix_suffix(&bytes, "433ebf5b", "cf1a");
    assert_eq!(PortFlag::parse(&bytes).unwrap(), PortFlag::TerminateSession);
    assert_eq!(PortFlag::DisconnectToPort.to_bytes(), [0, 0, 0, 1]);
    assert_eq!(PortFlag::ConnectToPortError.to_bytes(), [0, 0, 0, 3]);
}

#[test]
fn empty_payload_digest_is_sha256_of_nothing() {
    let mut f = vector_a_frame();
    f.payload.clear();
    let wire = f.encode();
    assert_eq!(wire.len(), 120);
    assert!(hex::encode(&wire[80..112]).starts_with("e3b0c442"));
    assert!(hex::encode(&wire[80..112]).ends_with("b855"));
    assert_eq!(Frame::decode(&wire).unwrap(), f);
}

#[test]
fn digest_mismatch_is_rejected() {
    let mut wire = from_dump(VECTOR_A);
    // Corrupt the payload.
    wire[124] ^= 0x01;
    assert_eq!(Frame::decode(&wire), Err(DecodeError::DigestMismatch));
    // Corrupt the digest instead.
    let mut wire = from_dump(VECTOR_A);
    wire[80] ^= 0x80;
    assert_eq!(Frame::decode(&wire), Err(DecodeError::DigestMismatch));
    // The same applies to acks.
    let mut wire = vector_b_frame().encode();
    let last = wire.len() - 1;
    wire[last] = b' ';
    assert_eq!(Frame::decode(&wire), Err(DecodeError::DigestMismatch));
}

#[test]
fn every_truncation_of_vector_a_is_rejected() {
    let wire = from_dump(VECTOR_A);
    for len in 0..wire.len() {
        let r = Frame::decode(&wire[..len]);
        assert!(
            matches!(r, Err(DecodeError::Truncated { len: l }) if l == len),
            "prefix of {len} bytes: {r:?}"
        );
    }
    assert!(Frame::decode(&wire).is_ok());
}

#[test]
fn every_truncation_of_vector_b_is_rejected() {
    let wire = vector_b_frame().encode();
    for len in 0..wire.len() {
        let r = Frame::decode(&wire[..len]);
        assert!(
            matches!(r, Err(DecodeError::Truncated { .. })),
            "prefix of {len} bytes: {r:?}"
        );
    }
}

#[test]
fn header_length_below_112_is_rejected() {
    let mut wire = from_dump(VECTOR_A);
    wire[..4].copy_from_slice(&111u32.to_be_bytes());
    assert_eq!(Frame::decode(&wire), Err(DecodeError::HeaderLength(111)));
    wire[..4].copy_from_slice(&0u32.to_be_bytes());
    assert_eq!(Frame::decode(&wire), Err(DecodeError::HeaderLength(0)));
    // A header length pointing past the end is a truncation.
    wire[..4].copy_from_slice(&200u32.to_be_bytes());
    assert!(matches!(Frame::decode(&wire), Err(DecodeError::Truncated { len: 125 })));
    wire[..4].copy_from_slice(&u32::MAX.to_be_bytes());
    assert!(matches!(Frame::decode(&wire), Err(DecodeError::Truncated { .. })));
}

#[test]
fn zero_created_date_and_empty_type_are_rejected() {
    let mut f = vector_a_frame();
    f.created_date = 0;
    assert_eq!(Frame::decode(&f.encode()), Err(DecodeError::ZeroCreatedDate));

    let mut wire = from_dump(VECTOR_A);
    wire[4..36].fill(b' ');
    assert_eq!(Frame::decode(&wire), Err(DecodeError::EmptyMessageType));
    wire[4..36].fill(0);
    assert_eq!(Frame::decode(&wire), Err(DecodeError::EmptyMessageType));
    wire[4] = 0xFF;
    assert_eq!(Frame::decode(&wire), Err(DecodeError::MessageTypeNotUtf8));
}

fn publication(message_type: MessageType) -> Frame {
    Frame {
        message_type,
        schema_version: 0,
        created_date: 0,
        sequence_number: 0,
        flags: 0,
        message_id: MessageId::default(),
        payload_type: PayloadType::Null,
        payload: Vec::new(),
    }
}

#[test]
fn publication_messages_are_accepted_without_checks() {
    for t in [MessageType::StartPublication, MessageType::PausePublication] {
        // created_date 0 and schema 0 would be rejected for any other type.
        let f = publication(t.clone());
        assert_eq!(Frame::decode(&f.encode()).unwrap(), f);

        // Payload that does not match its digest: still accepted (the plugin does not check).
        let mut g = publication(t.clone());
        g.payload = b"whatever".to_vec();
        let mut wire = g.encode();
        wire[80..112].fill(0);
        let d = Frame::decode(&wire).unwrap();
        assert_eq!(d.message_type, t);
        assert_eq!(d.payload, b"whatever");
        assert_eq!(d.created_date, 0);

        // NUL-padded on the left, as the JS client once captured.
        let mut wire = publication(t.clone()).encode();
        let name = t.as_str().as_bytes();
        let mut field = [0u8; 32];
        field[32 - name.len()..].copy_from_slice(name);
        wire[4..36].copy_from_slice(&field);
        assert_eq!(Frame::decode(&wire).unwrap().message_type, t);
    }
    // Control: the same frame with another type is refused.
    let f = publication(MessageType::ChannelClosed);
    assert_eq!(Frame::decode(&f.encode()), Err(DecodeError::ZeroCreatedDate));
}

#[test]
fn writer_rules_header_length_and_padding() {
    let wire = vector_b_frame().encode();
    assert_eq!(&wire[..4], &HEADER_LENGTH.to_be_bytes());
    assert_eq!(HEADER_LENGTH, 116);
    assert!(wire[4 + "acknowledge".len()..36].iter().all(|b| *b == b' '));
}

#[test]
fn declared_length_larger_than_remainder_uses_remainder_when_digest_matches() {
    // §3.6 step 4: the remainder is shorter than PayloadLength; its digest is what was sent
    // (a writer that got the length wrong), so the frame is kept with the remainder.
    let mut wire = from_dump(VECTOR_A);
    wire[116..120].copy_from_slice(&9u32.to_be_bytes());
    let f = Frame::decode(&wire).unwrap();
    assert_eq!(f.payload, b"hello");
}

#[test]
fn trailing_bytes_beyond_declared_length_are_not_payload() {
    let mut wire = from_dump(VECTOR_A);
    wire.extend_from_slice(b" trailing");
    let f = Frame::decode(&wire).unwrap();
    assert_eq!(f.payload, b"hello");
    assert_eq!(f.encode(), from_dump(VECTOR_A));
}

#[test]
fn header_only_frame_with_nonzero_length_is_truncated_not_empty() {
    // Regression: a frame cut right after PayloadLength (5) used to decode as a valid frame
    // with an empty payload because the digest check was skipped for empty payloads. The
    // plugin checks the digest whenever PayloadLength != 0 (§3.6).
    let wire = from_dump(VECTOR_A);
    assert_eq!(Frame::decode(&wire[..120]), Err(DecodeError::Truncated { len: 120 }));
    let wire = vector_b_frame().encode();
    assert_eq!(Frame::decode(&wire[..120]), Err(DecodeError::Truncated { len: 120 }));
}

#[test]
fn zero_length_payload_is_not_digest_checked() {
    // PayloadLength 0 and no payload: the plugin skips the digest check (§3.6), so a writer
    // that leaves the digest zeroed is still accepted.
    let mut f = vector_a_frame();
    f.payload.clear();
    let mut wire = f.encode();
    wire[80..112].fill(0);
    assert_eq!(Frame::decode(&wire).unwrap(), f);
}
