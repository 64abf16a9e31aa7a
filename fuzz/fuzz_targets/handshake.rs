//! Handshake and other JSON payloads (§4.2, §4.8, §5, §6.4, §7.2): every parser on arbitrary
//! bytes never panics; the client's answer to any request it accepts is valid JSON, a
//! `HandshakeResponse` with one processed action per requested action, with or without a KMS
//! data key; sealed payloads and challenges (§5.6) of any bytes are refused, never a panic; and
//! whatever parses survives its own writer; the ack's sequence number is read alike by both ack
//! parsers.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ssm_proto::crypto::{SessionCipher, Side};
use ssm_proto::handshake::{
    ClientHandshake, EncChallenge, HandshakeComplete, HandshakeRequest, HandshakeResponse, KmsActionResult, KmsAnswer,
};
use ssm_proto::payload::{self, Acknowledge, ChannelClosed, OpenDataChannel, PortFlag, TerminalSize};
use ssm_proto::version::{self, CLIENT_VERSION};
use ssm_proto::{PortMode, PortProperties};

fuzz_target!(|data: &[u8]| {
    if let Ok(hs) = ClientHandshake::process(data) {
        let key = KmsAnswer::Key {
            ciphertext: data.to_vec(),
            challenge_acknowledged: true,
        };
        let answer = match data.first() {
            Some(b) if b % 3 == 0 => None,
            Some(b) if b % 3 == 1 => Some(&key),
            _ => Some(&KmsAnswer::Failed("no".into())),
        };
        let bytes = hs.response(CLIENT_VERSION, answer);
        serde_json::from_slice::<serde_json::Value>(&bytes).unwrap_or_else(|e| panic!("response is not JSON: {e}"));
        let response = HandshakeResponse::parse(&bytes).unwrap_or_else(|e| panic!("response does not parse: {e}"));
        let request = HandshakeRequest::parse(data).unwrap_or_else(|e| panic!("accepted request does not parse: {e}"));
        assert_eq!(response.client_version, CLIENT_VERSION);
        assert_eq!(
            response.processed_client_actions.len(),
            request.requested_client_actions.len()
        );
        for (done, asked) in response
            .processed_client_actions
            .iter()
            .zip(&request.requested_client_actions)
        {
            assert_eq!(done.action_type, asked.action_type);
            assert!((1..=3).contains(&done.action_status));
        }
        assert!(
            hs.session_type.is_some() || hs.error.is_some(),
            "no session type and no error"
        );
        let _ = response.check();
        if let Ok(props) = serde_json::from_value::<PortProperties>(hs.properties.clone()) {
            let _ = PortMode::for_client(props.kind.as_deref(), &hs.agent_version);
            let _ = PortMode::for_agent(props.kind.as_deref(), &hs.agent_version, CLIENT_VERSION);
        }
    }

    let cipher = SessionCipher::new(Side::Client, &[7u8; 64]).unwrap_or_else(|e| panic!("{e}"));
    assert!(cipher.open(data).is_err(), "bytes sealed by nobody opened");
    if let Ok(challenge) = EncChallenge::parse(data) {
        assert!(cipher.open(&challenge.challenge).is_err());
        assert_eq!(EncChallenge::parse(&challenge.to_json()).ok(), Some(challenge));
    }
    if let Ok(value) = serde_json::from_slice::<serde_json::Value>(data) {
        let _ = KmsActionResult::parse(&value);
    }
    if let Ok(request) = HandshakeRequest::parse(data) {
        assert_eq!(HandshakeRequest::parse(&request.to_json()).ok(), Some(request));
    }
    if let Ok(response) = HandshakeResponse::parse(data) {
        let _ = response.check();
        assert_eq!(HandshakeResponse::parse(&response.to_json()).ok(), Some(response));
    }
    if let Ok(complete) = HandshakeComplete::parse(data) {
        assert_eq!(HandshakeComplete::parse(&complete.to_json()).ok(), Some(complete));
    }
    // The channel reads acks with the parser that borrows and keeps only the number: it takes and
    // refuses exactly what the full parser does.
    assert_eq!(
        Acknowledge::parse_sequence_number(data).ok(),
        Acknowledge::parse(data).ok().map(|a| a.sequence_number)
    );
    if let Ok(ack) = Acknowledge::parse(data) {
        assert_eq!(Acknowledge::parse(&ack.to_json()).ok(), Some(ack));
    }
    let closed = ChannelClosed::parse_lenient(data);
    assert_eq!(ChannelClosed::parse_lenient(&closed.to_json()), closed);
    if let Ok(size) = TerminalSize::parse(data) {
        assert_eq!(TerminalSize::parse(&size.to_json()).ok(), Some(size));
    }
    if let Ok(flag) = PortFlag::parse(data) {
        assert_eq!(PortFlag::parse(&flag.to_bytes()).ok(), Some(flag));
    }
    let _ = payload::parse_exit_code(data);
    if let Ok(text) = std::str::from_utf8(data) {
        if let Ok(open) = OpenDataChannel::parse(text) {
            assert_eq!(OpenDataChannel::parse(&open.to_json()).ok(), Some(open));
        }
        // Version strings come from the peer's handshake (§5.5): any pair compares, both ways.
        let (a, b) = text.split_once('\n').unwrap_or((text, CLIENT_VERSION));
        assert_eq!(version::compare(a, b), version::compare(b, a).reverse());
    }
});
