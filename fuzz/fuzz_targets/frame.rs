//! Frame codec (§3): `Frame::decode` on arbitrary bytes never panics, and whatever it accepts
//! survives a round trip through the writer: encode, decode again, same frame. Frames without a
//! payload type also survive the short-header form MGS writes (§3.6).
#![no_main]

use libfuzzer_sys::fuzz_target;
use ssm_proto::frame::MessageId;
use ssm_proto::{Frame, PayloadType};

fuzz_target!(|data: &[u8]| {
    // Ack payloads carry ids as text (§4.2): whatever parses prints back to the same id.
    if let Some(id) = std::str::from_utf8(data).ok().and_then(MessageId::parse) {
        assert_eq!(MessageId::parse(&id.to_string()), Some(id));
        assert_eq!(MessageId::from_wire(id.to_wire()), id);
    }

    // The agent's decoding (no digest check) never panics either, and refuses nothing that
    // passes the digest check; where both accept, they agree.
    let unverified = Frame::decode_with(data, false);
    let Ok(frame) = Frame::decode(data) else {
        return;
    };
    assert_eq!(unverified.as_ref(), Ok(&frame), "the unverified decode differs");
    let encoded = frame.encode();
    let again = Frame::decode(&encoded).unwrap_or_else(|e| panic!("re-encoded frame refused: {e}"));
    assert_eq!(again, frame, "encode/decode round trip changed the frame");

    let mut appended = b"prefix".to_vec();
    frame.encode_into(&mut appended);
    assert_eq!(
        appended.get(6..),
        Some(encoded.as_slice()),
        "encode_into differs from encode"
    );

    if frame.payload_type == PayloadType::Null {
        let short =
            Frame::decode(&frame.encode_short_header()).unwrap_or_else(|e| panic!("short-header frame refused: {e}"));
        assert_eq!(short, frame, "short-header round trip changed the frame");
    }
});
