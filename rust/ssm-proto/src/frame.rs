//! The binary data-channel message (ssm-protocol.md §3).
//!
//! Layout, all integers big-endian (§3.1):
//!
//! | offset | size | field            | meaning                                              |
//! |-------:|-----:|------------------|------------------------------------------------------|
//! | 0      | 4    | `HeaderLength`   | offset of `PayloadLength`; writers put 116           |
//! | 4      | 32   | `MessageType`    | ASCII, space padded (§3.3)                           |
//! | 36     | 4    | `SchemaVersion`  | always 1                                             |
//! | 40     | 8    | `CreatedDate`    | Unix epoch milliseconds                              |
//! | 48     | 8    | `SequenceNumber` | i64, per-direction stream counter (§4.1)             |
//! | 56     | 8    | `Flags`          | bit 0 SYN, bit 1 FIN (§3.5)                          |
//! | 64     | 16   | `MessageId`      | UUID with its 8-byte halves swapped (§3.2)           |
//! | 80     | 32   | `PayloadDigest`  | SHA-256 of the payload as sent                       |
//! | 112    | 4    | `PayloadType`    | §3.4; absent when `HeaderLength` is 112 (§3.6)       |
//! | 116    | 4    | `PayloadLength`  | byte length of the payload                           |
//! | 120    | n    | `Payload`        |                                                      |

use sha2::{Digest, Sha256};

use crate::error::DecodeError;

/// Header length every writer puts at offset 0 (§3.1).
pub const HEADER_LENGTH: u32 = 116;
/// Smallest header length a reader accepts: MGS-made frames without `PayloadType` (§3.6).
pub const MIN_HEADER_LENGTH: u32 = 112;
/// Size of the fixed part of a frame written by [`Frame::encode`].
pub const FRAME_OVERHEAD: usize = HEADER_LENGTH as usize + 4;
/// Width of the `MessageType` field.
const TYPE_WIDTH: usize = 32;

/// Flag bit marking the first message of a stream (§3.5).
pub const FLAG_SYN: u64 = 1;
/// Flag bit marking the last message of a stream (§3.5).
pub const FLAG_FIN: u64 = 2;
/// Flags carried by acknowledge messages (§4.2).
pub const FLAGS_ACK: u64 = 3;

/// The `MessageType` field (§3.3).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum MessageType {
    /// Client → agent stream data.
    InputStreamData,
    /// Agent → client stream data.
    OutputStreamData,
    /// Acknowledgement of one stream message (§4.2).
    Acknowledge,
    /// The service ended the session (§4.8).
    ChannelClosed,
    /// The service asks the receiver to resume sending (§4.7).
    StartPublication,
    /// The service asks the receiver to hold back stream data (§4.7).
    PausePublication,
    /// Agent → MGS session state; never meant for clients (§4.9).
    AgentSessionState,
    /// Any other type, kept verbatim (trimmed).
    Other(String),
}

impl MessageType {
    /// The wire spelling of this type.
    pub fn as_str(&self) -> &str {
        match self {
            Self::InputStreamData => "input_stream_data",
            Self::OutputStreamData => "output_stream_data",
            Self::Acknowledge => "acknowledge",
            Self::ChannelClosed => "channel_closed",
            Self::StartPublication => "start_publication",
            Self::PausePublication => "pause_publication",
            Self::AgentSessionState => "agent_session_state",
            Self::Other(s) => s,
        }
    }

    /// Parses a trimmed wire spelling.
    pub fn parse(s: &str) -> Self {
        match s {
            "input_stream_data" => Self::InputStreamData,
            "output_stream_data" => Self::OutputStreamData,
            "acknowledge" => Self::Acknowledge,
            "channel_closed" => Self::ChannelClosed,
            "start_publication" => Self::StartPublication,
            "pause_publication" => Self::PausePublication,
            "agent_session_state" => Self::AgentSessionState,
            other => Self::Other(other.to_owned()),
        }
    }

    /// Whether this type carries a sequence-numbered stream message (§4.1).
    pub fn is_stream_data(&self) -> bool {
        matches!(self, Self::InputStreamData | Self::OutputStreamData)
    }
}

impl std::fmt::Display for MessageType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// `PayloadType` values (§3.4).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PayloadType {
    /// 0: no payload type (acks, publication messages).
    Null,
    /// 1: raw stream bytes.
    Output,
    /// 2: defined, unused.
    Error,
    /// 3: terminal size JSON.
    Size,
    /// 4: defined, unused.
    Parameter,
    /// 5: agent's handshake request.
    HandshakeRequest,
    /// 6: client's handshake response.
    HandshakeResponse,
    /// 7: agent's handshake completion.
    HandshakeComplete,
    /// 8: KMS challenge request.
    EncChallengeRequest,
    /// 9: KMS challenge response.
    EncChallengeResponse,
    /// 10: 4-byte big-endian flag (§7.2).
    Flag,
    /// 11: stderr bytes.
    StdErr,
    /// 12: `EXIT_CODE: n` text.
    ExitCode,
    /// Any other value, kept verbatim.
    Unknown(u32),
}

impl PayloadType {
    /// Wire value.
    pub fn to_u32(self) -> u32 {
        match self {
            Self::Null => 0,
            Self::Output => 1,
            Self::Error => 2,
            Self::Size => 3,
            Self::Parameter => 4,
            Self::HandshakeRequest => 5,
            Self::HandshakeResponse => 6,
            Self::HandshakeComplete => 7,
            Self::EncChallengeRequest => 8,
            Self::EncChallengeResponse => 9,
            Self::Flag => 10,
            Self::StdErr => 11,
            Self::ExitCode => 12,
            Self::Unknown(v) => v,
        }
    }

    /// Parses a wire value.
    pub fn from_u32(v: u32) -> Self {
        match v {
            0 => Self::Null,
            1 => Self::Output,
            2 => Self::Error,
            3 => Self::Size,
            4 => Self::Parameter,
            5 => Self::HandshakeRequest,
            6 => Self::HandshakeResponse,
            7 => Self::HandshakeComplete,
            8 => Self::EncChallengeRequest,
            9 => Self::EncChallengeResponse,
            10 => Self::Flag,
            11 => Self::StdErr,
            12 => Self::ExitCode,
            other => Self::Unknown(other),
        }
    }
}

/// A message id in RFC 4122 byte order (the order of its canonical text).
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct MessageId(pub [u8; 16]);

impl MessageId {
    /// Reads the wire form, whose two 8-byte halves are swapped (§3.2).
    pub fn from_wire(wire: [u8; 16]) -> Self {
        let mut u = [0u8; 16];
        u[..8].copy_from_slice(&wire[8..]);
        u[8..].copy_from_slice(&wire[..8]);
        Self(u)
    }

    /// The wire form (§3.2).
    pub fn to_wire(self) -> [u8; 16] {
        let mut w = [0u8; 16];
        w[..8].copy_from_slice(&self.0[8..]);
        w[8..].copy_from_slice(&self.0[..8]);
        w
    }

    /// Parses the hyphenated text form used in ack payloads.
    pub fn parse(text: &str) -> Option<Self> {
        let hex: Vec<u8> = text.bytes().filter(|b| *b != b'-').collect();
        if hex.len() != 32 {
            return None;
        }
        let mut out = [0u8; 16];
        for (slot, pair) in out.iter_mut().zip(hex.chunks_exact(2)) {
            let s = std::str::from_utf8(pair).ok()?;
            *slot = u8::from_str_radix(s, 16).ok()?;
        }
        Some(Self(out))
    }

    /// The hyphenated lower-case text, as [`std::fmt::Display`] writes it.
    pub fn hyphenated(&self) -> [u8; 36] {
        fn digit(n: u8) -> u8 {
            if n < 10 { b'0' + n } else { b'a' + n - 10 }
        }
        let mut text = [b'-'; 36];
        let mut slots = text.iter_mut();
        for (i, &b) in self.0.iter().enumerate() {
            if matches!(i, 4 | 6 | 8 | 10) {
                slots.next();
            }
            for n in [b >> 4, b & 0x0f] {
                if let Some(slot) = slots.next() {
                    *slot = digit(n);
                }
            }
        }
        text
    }
}

impl std::fmt::Display for MessageId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Every ack carries one: written into a buffer and out in one piece.
        f.write_str(std::str::from_utf8(&self.hyphenated()).unwrap_or_default())
    }
}

impl std::fmt::Debug for MessageId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Display::fmt(self, f)
    }
}

/// One decoded or to-be-encoded data-channel message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    /// `MessageType` (§3.3).
    pub message_type: MessageType,
    /// `SchemaVersion`, 1 for every writer.
    pub schema_version: u32,
    /// `CreatedDate` in Unix epoch milliseconds.
    pub created_date: u64,
    /// `SequenceNumber` (§4.1).
    pub sequence_number: i64,
    /// `Flags` (§3.5).
    pub flags: u64,
    /// `MessageId` in RFC 4122 order.
    pub message_id: MessageId,
    /// `PayloadType` (§3.4).
    pub payload_type: PayloadType,
    /// The payload bytes.
    pub payload: Vec<u8>,
}

impl Frame {
    /// Encodes with the writer rules of §3.6: header length 116, space padding, schema 1 as
    /// given, digest always filled. One pre-sized buffer (§9 item 24).
    pub fn encode(&self) -> Vec<u8> {
        self.encode_with_payload(&self.payload)
    }

    /// [`Frame::encode`] with `payload` in place of the frame's own (which is not read): a
    /// sender whose payload is a slice of a larger buffer frames it without copying it into a
    /// `Vec` of its own first.
    pub(crate) fn encode_with_payload(&self, payload: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(FRAME_OVERHEAD + payload.len());
        self.encode_parts(payload, &mut out);
        out
    }

    /// Appends the encoding to `out`.
    pub fn encode_into(&self, out: &mut Vec<u8>) {
        self.encode_parts(&self.payload, out);
    }

    fn encode_parts(&self, payload: &[u8], out: &mut Vec<u8>) {
        out.extend_from_slice(&HEADER_LENGTH.to_be_bytes());
        let name = self.message_type.as_str().as_bytes();
        let name = name.get(..TYPE_WIDTH).unwrap_or(name);
        out.extend_from_slice(name);
        out.extend(std::iter::repeat_n(b' ', TYPE_WIDTH - name.len()));
        out.extend_from_slice(&self.schema_version.to_be_bytes());
        out.extend_from_slice(&self.created_date.to_be_bytes());
        out.extend_from_slice(&self.sequence_number.to_be_bytes());
        out.extend_from_slice(&self.flags.to_be_bytes());
        out.extend_from_slice(&self.message_id.to_wire());
        out.extend_from_slice(&Sha256::digest(payload));
        out.extend_from_slice(&self.payload_type.to_u32().to_be_bytes());
        // A payload never reaches 4 GiB: the channel limits message sizes far below that.
        let len = u32::try_from(payload.len()).unwrap_or(u32::MAX);
        out.extend_from_slice(&len.to_be_bytes());
        out.extend_from_slice(payload);
    }

    /// Encodes with `HeaderLength` 112: no `PayloadType` field, `PayloadLength` at offset 112.
    /// This is how MGS-generated `channel_closed` frames are reported to look (§3.6); the
    /// emulator writes them so, and readers must accept both forms.
    pub fn encode_short_header(&self) -> Vec<u8> {
        let mut out = self.encode();
        out.splice(..4, MIN_HEADER_LENGTH.to_be_bytes());
        out.drain(MIN_HEADER_LENGTH as usize..HEADER_LENGTH as usize);
        out
    }

    /// Decodes and validates per §3.6 (the robust superset of plugin and agent rules).
    ///
    /// Never panics, whatever the input.
    pub fn decode(bytes: &[u8]) -> Result<Frame, DecodeError> {
        Self::decode_with(bytes, true)
    }

    /// [`Frame::decode`], checking the payload digest only if `verify_digest` (the agent does
    /// not check it; [`crate::Config::verify_digest`]).
    pub fn decode_with(bytes: &[u8], verify_digest: bool) -> Result<Frame, DecodeError> {
        let hl = read_u32(bytes, 0).ok_or(DecodeError::Truncated { len: bytes.len() })?;
        if hl < MIN_HEADER_LENGTH {
            return Err(DecodeError::HeaderLength(hl));
        }
        let hl_usize = hl as usize;
        let payload_start = hl_usize
            .checked_add(4)
            .filter(|end| *end <= bytes.len())
            .ok_or(DecodeError::Truncated { len: bytes.len() })?;
        let raw_type = bytes.get(4..36).ok_or(DecodeError::Truncated { len: bytes.len() })?;
        let type_text = std::str::from_utf8(raw_type)
            .map_err(|_| DecodeError::MessageTypeNotUtf8)?
            .trim_matches(|c: char| c == '\0' || c.is_ascii_whitespace());
        let message_type = MessageType::parse(type_text);
        let schema_version = read_u32(bytes, 36).ok_or(DecodeError::Truncated { len: bytes.len() })?;
        let created_date = read_u64(bytes, 40).ok_or(DecodeError::Truncated { len: bytes.len() })?;
        let sequence_number = read_u64(bytes, 48).ok_or(DecodeError::Truncated { len: bytes.len() })? as i64;
        let flags = read_u64(bytes, 56).ok_or(DecodeError::Truncated { len: bytes.len() })?;
        let mut wire_id = [0u8; 16];
        wire_id.copy_from_slice(bytes.get(64..80).ok_or(DecodeError::Truncated { len: bytes.len() })?);
        let mut digest = [0u8; 32];
        digest.copy_from_slice(bytes.get(80..112).ok_or(DecodeError::Truncated { len: bytes.len() })?);
        let payload_type = if hl >= HEADER_LENGTH {
            PayloadType::from_u32(read_u32(bytes, 112).ok_or(DecodeError::Truncated { len: bytes.len() })?)
        } else {
            PayloadType::Null
        };
        let declared = read_u32(bytes, hl_usize).ok_or(DecodeError::Truncated { len: bytes.len() })? as usize;
        let rest = bytes.get(payload_start..).unwrap_or(&[]);
        // §3.6 step 4: the plugin uses the remainder; we take the smaller of the two so a
        // declared length never reads past the frame and trailing garbage is not payload.
        let payload = rest.get(..declared.min(rest.len())).unwrap_or(rest).to_vec();

        let publication = matches!(
            message_type,
            MessageType::StartPublication | MessageType::PausePublication
        );
        if !publication {
            if type_text.is_empty() {
                return Err(DecodeError::EmptyMessageType);
            }
            if created_date == 0 {
                return Err(DecodeError::ZeroCreatedDate);
            }
            // The plugin checks the digest whenever `PayloadLength != 0` (§3.6), so a frame cut
            // right after its header (declared length > 0, no payload bytes) is refused rather
            // than accepted with an empty payload.
            let must_check = verify_digest && (declared != 0 || !payload.is_empty());
            if must_check && Sha256::digest(&payload).as_slice() != digest {
                // A payload shorter than declared whose digest fails is a truncated frame.
                if declared > rest.len() {
                    return Err(DecodeError::Truncated { len: bytes.len() });
                }
                return Err(DecodeError::DigestMismatch);
            }
        }
        Ok(Frame {
            message_type,
            schema_version,
            created_date,
            sequence_number,
            flags,
            message_id: MessageId::from_wire(wire_id),
            payload_type,
            payload,
        })
    }
}

fn read_u32(bytes: &[u8], at: usize) -> Option<u32> {
    let b: [u8; 4] = bytes.get(at..at.checked_add(4)?)?.try_into().ok()?;
    Some(u32::from_be_bytes(b))
}

fn read_u64(bytes: &[u8], at: usize) -> Option<u64> {
    let b: [u8; 8] = bytes.get(at..at.checked_add(8)?)?.try_into().ok()?;
    Some(u64::from_be_bytes(b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn message_id_text_round_trip() {
        let id = MessageId::parse("dd01e56b-ff48-483e-a508-b5f073f31b16").unwrap();
        assert_eq!(id.to_string(), "dd01e56b-ff48-483e-a508-b5f073f31b16");
        assert_eq!(MessageId::from_wire(id.to_wire()), id);
        assert!(MessageId::parse("not-an-id").is_none());
    }

    #[test]
    fn short_header_length_reads_payload_after_it() {
        // §3.6: MGS channel_closed with HeaderLength 112, PayloadLength at 112.
        let payload = br#"{"Output":""}"#;
        let f = Frame {
            message_type: MessageType::ChannelClosed,
            schema_version: 1,
            created_date: 5,
            sequence_number: 0,
            flags: 0,
            message_id: MessageId([7; 16]),
            payload_type: PayloadType::Null,
            payload: payload.to_vec(),
        }
        .encode_short_header();
        assert_eq!(&f[..4], &112u32.to_be_bytes());
        assert_eq!(f.len(), 112 + 4 + payload.len());
        assert_eq!(&f[112..116], &(payload.len() as u32).to_be_bytes());
        let d = Frame::decode(&f).unwrap();
        assert_eq!(d.message_type, MessageType::ChannelClosed);
        assert_eq!(d.payload, payload);
    }

    #[test]
    fn nul_padded_type_is_trimmed() {
        let mut f = Frame {
            message_type: MessageType::Acknowledge,
            schema_version: 1,
            created_date: 5,
            sequence_number: 0,
            flags: 3,
            message_id: MessageId([1; 16]),
            payload_type: PayloadType::Null,
            payload: vec![],
        }
        .encode();
        let mut field = [0u8; 32];
        field[32 - 11..].copy_from_slice(b"acknowledge");
        f[4..36].copy_from_slice(&field);
        assert_eq!(Frame::decode(&f).unwrap().message_type, MessageType::Acknowledge);
    }
}
