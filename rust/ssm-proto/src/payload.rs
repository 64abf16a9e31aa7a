//! Payloads carried inside frames: acknowledgements (§4.2), channel_closed (§4.8), terminal size
//! (§3.4, §6.4) and port flags (§7.2).

use std::borrow::Cow;
use std::io::Write as _;

use serde::{Deserialize, Serialize};

use crate::error::PayloadError;
use crate::frame::MessageId;

/// `acknowledge` payload (§4.2). Field order is the one Go emits (vector B in §3.7).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Acknowledge {
    /// Type of the acked message.
    #[serde(rename = "AcknowledgedMessageType")]
    pub message_type: String,
    /// Hyphenated id of the acked message.
    #[serde(rename = "AcknowledgedMessageId")]
    pub message_id: String,
    /// Sequence number of the acked message; the only field used for matching.
    #[serde(rename = "AcknowledgedMessageSequenceNumber")]
    pub sequence_number: i64,
    /// Always true.
    #[serde(rename = "IsSequentialMessage", default = "yes")]
    pub is_sequential: bool,
}

fn yes() -> bool {
    true
}

/// [`Acknowledge`] with its strings borrowed from the payload where they have no escapes.
#[derive(Deserialize)]
struct AckNumber<'a> {
    #[serde(rename = "AcknowledgedMessageType", borrow)]
    _message_type: Cow<'a, str>,
    #[serde(rename = "AcknowledgedMessageId", borrow)]
    _message_id: Cow<'a, str>,
    #[serde(rename = "AcknowledgedMessageSequenceNumber")]
    sequence_number: i64,
    #[serde(rename = "IsSequentialMessage", default)]
    _is_sequential: bool,
}

impl Acknowledge {
    /// Compact JSON bytes.
    pub fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// Parses the JSON payload.
    pub fn parse(bytes: &[u8]) -> Result<Self, PayloadError> {
        serde_json::from_slice(bytes).map_err(|e| PayloadError::json("acknowledge", &e))
    }

    /// The sequence number of an ack payload, accepted and refused exactly as [`Acknowledge::parse`]
    /// accepts and refuses it, without copying its strings: the channel uses only the number, and
    /// with two owned strings per ack, parsing took a tenth of the emulator's time in a fast
    /// download.
    pub fn parse_sequence_number(bytes: &[u8]) -> Result<i64, PayloadError> {
        serde_json::from_slice::<AckNumber<'_>>(bytes)
            .map(|a| a.sequence_number)
            .map_err(|e| PayloadError::json("acknowledge", &e))
    }

    /// The bytes [`Acknowledge::to_json`] gives for an ack of this message, written straight
    /// into one buffer: every message received is acked, and building the struct (two strings)
    /// and serializing it took about a twentieth of the client's time in a fast download.
    pub fn json_for(message_type: &str, message_id: &MessageId, sequence_number: i64) -> Vec<u8> {
        let mut out = Vec::with_capacity(160);
        out.extend_from_slice(br#"{"AcknowledgedMessageType":"#);
        // The type comes from the peer's frame: escaped as serde_json escapes it.
        if serde_json::to_writer(&mut out, message_type).is_err() {
            out.extend_from_slice(b"\"\"");
        }
        out.extend_from_slice(br#","AcknowledgedMessageId":""#);
        out.extend_from_slice(&message_id.hyphenated());
        out.extend_from_slice(br#"","AcknowledgedMessageSequenceNumber":"#);
        // Into the buffer, not through a String of its own (writing to a Vec cannot fail).
        let _ = write!(out, "{sequence_number}");
        out.extend_from_slice(br#","IsSequentialMessage":true}"#);
        out
    }
}

/// `channel_closed` payload (§4.8). Every field is optional on receipt.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct ChannelClosed {
    /// Id of this message.
    #[serde(rename = "MessageId", default)]
    pub message_id: String,
    /// Creation date as a string (format unknown, §12).
    #[serde(rename = "CreatedDate", default)]
    pub created_date: String,
    /// Target of the session.
    #[serde(rename = "DestinationId", default)]
    pub destination_id: String,
    /// Session id.
    #[serde(rename = "SessionId", default)]
    pub session_id: String,
    /// Always `channel_closed`.
    #[serde(rename = "MessageType", default)]
    pub message_type: String,
    /// Schema version, 1.
    #[serde(rename = "SchemaVersion", default)]
    pub schema_version: i64,
    /// Optional human-readable reason.
    #[serde(rename = "Output", default)]
    pub output: String,
}

impl ChannelClosed {
    /// Lenient parse: an unreadable payload still closes the channel, with no reason text.
    pub fn parse_lenient(bytes: &[u8]) -> Self {
        serde_json::from_slice(bytes).unwrap_or_default()
    }

    /// Compact JSON bytes.
    pub fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }
}

/// Terminal size (`PayloadType` 3), key order cols then rows as the plugin writes it (§6.4).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct TerminalSize {
    /// Columns.
    pub cols: u32,
    /// Rows.
    pub rows: u32,
}

impl TerminalSize {
    /// Compact JSON bytes, e.g. `{"cols":80,"rows":24}`.
    pub fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// Parses the JSON payload.
    pub fn parse(bytes: &[u8]) -> Result<Self, PayloadError> {
        serde_json::from_slice(bytes).map_err(|e| PayloadError::json("size", &e))
    }
}

/// Flag payload values (`PayloadType` 10, 4-byte big-endian, §7.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PortFlag {
    /// 1: the local TCP connection closed (basic mode).
    DisconnectToPort,
    /// 2: end the session.
    TerminateSession,
    /// 3: the agent could not dial the destination (mux mode).
    ConnectToPortError,
    /// Any other value.
    Unknown(u32),
}

impl PortFlag {
    /// The 4-byte wire payload.
    pub fn to_bytes(self) -> [u8; 4] {
        let v = match self {
            Self::DisconnectToPort => 1,
            Self::TerminateSession => 2,
            Self::ConnectToPortError => 3,
            Self::Unknown(v) => v,
        };
        u32::to_be_bytes(v)
    }

    /// Parses the 4-byte payload.
    pub fn parse(bytes: &[u8]) -> Result<Self, PayloadError> {
        let b: [u8; 4] = bytes.try_into().map_err(|_| PayloadError {
            what: "flag",
            reason: format!("{} bytes instead of 4", bytes.len()),
        })?;
        Ok(match u32::from_be_bytes(b) {
            1 => Self::DisconnectToPort,
            2 => Self::TerminateSession,
            3 => Self::ConnectToPortError,
            v => Self::Unknown(v),
        })
    }
}

/// Parses `EXIT_CODE: <n>` (`PayloadType` 12, §6.5).
pub fn parse_exit_code(bytes: &[u8]) -> Option<i32> {
    let text = std::str::from_utf8(bytes).ok()?.trim();
    text.strip_prefix("EXIT_CODE:")?.trim().parse().ok()
}

/// The text frame a client sends right after the WebSocket upgrade (§2.2).
///
/// `Debug` leaves the token out: tokens never reach logs.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OpenDataChannel {
    /// `"1.0"`.
    #[serde(rename = "MessageSchemaVersion")]
    pub message_schema_version: String,
    /// Fresh UUID v4 per (re)open.
    #[serde(rename = "RequestId")]
    pub request_id: String,
    /// Token from StartSession or ResumeSession.
    #[serde(rename = "TokenValue")]
    pub token_value: String,
    /// UUID v4 fixed for the process.
    #[serde(rename = "ClientId", default, skip_serializing_if = "String::is_empty")]
    pub client_id: String,
    /// Client version (§5.5).
    #[serde(rename = "ClientVersion", default, skip_serializing_if = "String::is_empty")]
    pub client_version: String,
}

impl std::fmt::Debug for OpenDataChannel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OpenDataChannel")
            .field("request_id", &self.request_id)
            .field("client_id", &self.client_id)
            .field("client_version", &self.client_version)
            .finish_non_exhaustive()
    }
}

impl OpenDataChannel {
    /// Compact JSON text.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }

    /// Parses the JSON text.
    pub fn parse(text: &str) -> Result<Self, PayloadError> {
        serde_json::from_str(text).map_err(|e| PayloadError::json("open data channel", &e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_ack_written_directly_is_the_serialized_struct() {
        let id = MessageId::parse("dd01e56b-ff48-483e-a508-b5f073f31b16").unwrap();
        for (message_type, seq) in [
            ("input_stream_data", 0),
            ("output_stream_data", i64::MAX),
            ("odd \"type\"\\ \u{1}é", -1),
            ("", 42),
        ] {
            let slow = Acknowledge {
                message_type: message_type.to_owned(),
                message_id: id.to_string(),
                sequence_number: seq,
                is_sequential: true,
            }
            .to_json();
            assert_eq!(
                String::from_utf8(Acknowledge::json_for(message_type, &id, seq)).unwrap(),
                String::from_utf8(slow).unwrap()
            );
        }
    }

    #[test]
    fn the_sequence_number_is_read_as_the_full_parse_reads_it() {
        let cases: &[&str] = &[
            r#"{"AcknowledgedMessageType":"output_stream_data","AcknowledgedMessageId":"dd01e56b-ff48-483e-a508-b5f073f31b16","AcknowledgedMessageSequenceNumber":7,"IsSequentialMessage":true}"#,
            r#"{"AcknowledgedMessageType":"a\"b\u00e9","AcknowledgedMessageId":"x","AcknowledgedMessageSequenceNumber":-3}"#,
            r#"{"AcknowledgedMessageSequenceNumber":9223372036854775807,"AcknowledgedMessageId":"","AcknowledgedMessageType":"","Extra":[1,{"a":null}]}"#,
            // Refused by both: a field missing, a field of the wrong type, not JSON, not an object.
            r#"{"AcknowledgedMessageType":"t","AcknowledgedMessageSequenceNumber":1}"#,
            r#"{"AcknowledgedMessageType":"t","AcknowledgedMessageId":"i"}"#,
            r#"{"AcknowledgedMessageType":1,"AcknowledgedMessageId":"i","AcknowledgedMessageSequenceNumber":1}"#,
            r#"{"AcknowledgedMessageType":"t","AcknowledgedMessageId":"i","AcknowledgedMessageSequenceNumber":"1"}"#,
            r#"{"AcknowledgedMessageType":"t","AcknowledgedMessageId":"i","AcknowledgedMessageSequenceNumber":1.5}"#,
            r#"{"AcknowledgedMessageType":"t","AcknowledgedMessageId":"i","AcknowledgedMessageSequenceNumber":1,"IsSequentialMessage":"yes"}"#,
            r#"{"AcknowledgedMessageType":"t","AcknowledgedMessageId":"i","AcknowledgedMessageSequenceNumber":1"#,
            "[1,2]",
            "",
        ];
        let mut refused = 0;
        for case in cases {
            let full = Acknowledge::parse(case.as_bytes()).map(|a| a.sequence_number).ok();
            assert_eq!(Acknowledge::parse_sequence_number(case.as_bytes()).ok(), full, "{case}");
            refused += usize::from(full.is_none());
        }
        assert_eq!(refused, 9);
        // Not valid UTF-8 inside a string: refused by both.
        let bad = b"{\"AcknowledgedMessageType\":\"\xff\",\"AcknowledgedMessageId\":\"i\",\"AcknowledgedMessageSequenceNumber\":1}";
        assert!(Acknowledge::parse(bad).is_err());
        assert!(Acknowledge::parse_sequence_number(bad).is_err());
    }
}
