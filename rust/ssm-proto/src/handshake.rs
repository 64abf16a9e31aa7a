//! The session handshake (§5): `HandshakeRequest` (type 5), `HandshakeResponse` (type 6) and
//! `HandshakeComplete` (type 7), for both ends.

use std::cmp::Ordering;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;

use crate::error::{HandshakeError, PayloadError};
use crate::version;

/// Session types the agent announces (§1.2).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SessionType {
    /// Interactive shell.
    StandardStream,
    /// `AWS-StartInteractiveCommand`.
    InteractiveCommands,
    /// `AWS-StartNonInteractiveCommand`.
    NonInteractiveCommands,
    /// Port forwarding and SSH.
    Port,
}

impl SessionType {
    /// Wire name.
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::StandardStream => "Standard_Stream",
            Self::InteractiveCommands => "InteractiveCommands",
            Self::NonInteractiveCommands => "NonInteractiveCommands",
            Self::Port => "Port",
        }
    }

    /// Parses a wire name.
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "Standard_Stream" => Self::StandardStream,
            "InteractiveCommands" => Self::InteractiveCommands,
            "NonInteractiveCommands" => Self::NonInteractiveCommands,
            "Port" => Self::Port,
            _ => return None,
        })
    }
}

/// One requested action of a [`HandshakeRequest`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RequestedAction {
    /// `SessionType` or `KMSEncryption`.
    #[serde(rename = "ActionType")]
    pub action_type: String,
    /// Action-specific parameters.
    #[serde(rename = "ActionParameters", default)]
    pub action_parameters: Value,
}

/// Agent → client handshake request (§5.2).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HandshakeRequest {
    /// Agent version, e.g. `3.3.40.0`.
    #[serde(rename = "AgentVersion", default)]
    pub agent_version: String,
    /// Actions, `SessionType` first.
    #[serde(rename = "RequestedClientActions", default)]
    pub requested_client_actions: Vec<RequestedAction>,
}

impl HandshakeRequest {
    /// A request announcing `session_type` with `properties` (the agent side, §11.3).
    pub fn new(agent_version: &str, session_type: &SessionType, properties: Value) -> Self {
        Self {
            agent_version: agent_version.to_owned(),
            requested_client_actions: vec![RequestedAction {
                action_type: "SessionType".into(),
                action_parameters: serde_json::json!({
                    "SessionType": session_type.as_str(),
                    "Properties": properties,
                }),
            }],
        }
    }

    /// Parses the JSON payload.
    pub fn parse(bytes: &[u8]) -> Result<Self, PayloadError> {
        serde_json::from_slice(bytes).map_err(|e| PayloadError::json("HandshakeRequest", &e))
    }

    /// Compact JSON bytes.
    pub fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }
}

/// Status of a processed action (§5.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ActionStatus {
    /// 1.
    Success,
    /// 2.
    Failed,
    /// 3.
    Unsupported,
}

impl ActionStatus {
    fn code(self) -> i32 {
        match self {
            Self::Success => 1,
            Self::Failed => 2,
            Self::Unsupported => 3,
        }
    }
}

/// One processed action of a [`HandshakeResponse`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProcessedAction {
    /// Echo of the requested action type.
    #[serde(rename = "ActionType")]
    pub action_type: String,
    /// 1 success, 2 failed, 3 unsupported.
    #[serde(rename = "ActionStatus")]
    pub action_status: i32,
    /// Action-specific result.
    #[serde(rename = "ActionResult", default)]
    pub action_result: Value,
    /// Error text, empty on success.
    #[serde(rename = "Error", default)]
    pub error: String,
}

/// Client → agent handshake response (§5.3).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HandshakeResponse {
    /// Our version (§5.5).
    #[serde(rename = "ClientVersion", default)]
    pub client_version: String,
    /// One entry per requested action, in order.
    #[serde(rename = "ProcessedClientActions", default)]
    pub processed_client_actions: Vec<ProcessedAction>,
    /// Error strings, or null when none.
    #[serde(rename = "Errors", default)]
    pub errors: Option<Vec<String>>,
}

impl HandshakeResponse {
    /// Parses the JSON payload.
    pub fn parse(bytes: &[u8]) -> Result<Self, PayloadError> {
        serde_json::from_slice(bytes).map_err(|e| PayloadError::json("HandshakeResponse", &e))
    }

    /// Compact JSON bytes.
    pub fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// The agent's check (§5.3): every action must have succeeded.
    pub fn check(&self) -> Result<(), HandshakeError> {
        let failed: Vec<String> = self
            .processed_client_actions
            .iter()
            .filter(|a| a.action_status != 1)
            .map(|a| format!("{} (status {}): {}", a.action_type, a.action_status, a.error))
            .collect();
        if failed.is_empty() {
            Ok(())
        } else {
            Err(HandshakeError::Failed(failed.join("; ")))
        }
    }
}

/// Agent → client handshake completion (§5.4).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HandshakeComplete {
    /// Handshake duration in nanoseconds.
    #[serde(rename = "HandshakeTimeToComplete", default)]
    pub handshake_time_to_complete: i64,
    /// Text to show the user when non-empty.
    #[serde(rename = "CustomerMessage", default)]
    pub customer_message: String,
}

impl HandshakeComplete {
    /// Parses the JSON payload.
    pub fn parse(bytes: &[u8]) -> Result<Self, PayloadError> {
        serde_json::from_slice(bytes).map_err(|e| PayloadError::json("HandshakeComplete", &e))
    }

    /// Compact JSON bytes.
    pub fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }
}

/// Properties of a `Port` session (§1.2).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortProperties {
    /// Destination port.
    #[serde(rename = "portNumber", default)]
    pub port_number: String,
    /// `LocalPortForwarding`, or absent/empty for SSH (stdio).
    #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    /// Local port the user asked for.
    #[serde(rename = "localPortNumber", default, skip_serializing_if = "Option::is_none")]
    pub local_port_number: Option<String>,
    /// Remote host (`AWS-StartPortForwardingSessionToRemoteHost`).
    #[serde(rename = "host", default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
}

/// How a port session moves bytes (§7.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PortMode {
    /// One local connection at a time, raw bytes.
    Basic,
    /// smux v1 over the data channel.
    Mux {
        /// smux keepalive (NOP every 10 s) on.
        keepalive: bool,
    },
    /// stdin/stdout (ssh ProxyCommand).
    Stdio,
}

impl PortMode {
    /// The client's choice from the announced `type` and the agent version (§7.1).
    pub fn for_client(kind: Option<&str>, agent_version: &str) -> Self {
        if kind != Some("LocalPortForwarding") {
            return Self::Stdio;
        }
        if version::compare(agent_version, version::AGENT_MUX_AFTER) == Ordering::Greater {
            // The plugin keeps keepalive on up to 3.1.1511.0 (§5.5). Against 3.1.1446.0, whose
            // smux never sends a NOP, its dead-peer check would end every idle tunnel after 30 s;
            // both sides off is what that agent runs.
            let keepalive = version::compare(agent_version, version::AGENT_NO_KEEPALIVE_AFTER) != Ordering::Greater
                && version::compare(agent_version, version::AGENT_KEEPALIVE_OFF_RELEASE) != Ordering::Equal;
            Self::Mux { keepalive }
        } else {
            Self::Basic
        }
    }

    /// The choice of an agent of `agent_version` from the announced `type` and the client
    /// version (§7.1): agents up to 3.0.196.0 have no smux, and up to 3.1.1511.0 keep smux
    /// keepalive on (agent/session/plugins/port/port_mux.go: `smux.Server(conn, nil)`, smux's
    /// default config) except 3.1.1446.0, which turns it off for everyone; later ones turn it
    /// off for clients after 1.2.331.0 (`muxKeepAliveDisabledAfterThisClientVersion`).
    pub fn for_agent(kind: Option<&str>, agent_version: &str, client_version: &str) -> Self {
        if kind != Some("LocalPortForwarding") {
            return Self::Stdio;
        }
        let agent_has_mux = version::compare(agent_version, version::AGENT_MUX_AFTER) == Ordering::Greater;
        if agent_has_mux && version::compare(client_version, version::CLIENT_MUX_FROM) != Ordering::Less {
            let agent_can_drop_keepalive =
                version::compare(agent_version, version::AGENT_NO_KEEPALIVE_AFTER) == Ordering::Greater;
            let client_wants_none =
                version::compare(client_version, version::CLIENT_NO_KEEPALIVE_AFTER) == Ordering::Greater;
            let always_off = version::compare(agent_version, version::AGENT_KEEPALIVE_OFF_RELEASE) == Ordering::Equal;
            Self::Mux {
                keepalive: !(always_off || agent_can_drop_keepalive && client_wants_none),
            }
        } else {
            Self::Basic
        }
    }
}

/// A `KMSEncryption` action's parameters (§5.2, §5.6).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KmsRequest {
    /// The key the agent's session preferences name (`KMSKeyId`).
    pub key_id: String,
    /// The random challenge (`Challenge`), to put into the encryption context verbatim; older
    /// agents send none.
    pub challenge: Option<String>,
}

/// The client's outcome for a [`KmsRequest`], put into the `HandshakeResponse`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KmsAnswer {
    /// A data key was made: its KMS `CiphertextBlob`, and whether the challenge went into its
    /// encryption context (`ChallengeAcknowledgement`).
    Key {
        /// The encrypted data key, sent base64-encoded as `KMSCipherTextKey`.
        ciphertext: Vec<u8>,
        /// Whether `aws:ssm:RandomChallenge` is in the encryption context.
        challenge_acknowledged: bool,
    },
    /// No data key: the action fails with this text, and the agent ends the session.
    Failed(String),
}

/// `EncChallengeRequest` (type 8) and `EncChallengeResponse` (type 9) (§5.6): a sealed blob,
/// base64 in JSON as Go encodes `[]byte` (agent/session/contracts/model.go).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EncChallenge {
    /// The sealed challenge.
    pub challenge: Vec<u8>,
}

impl EncChallenge {
    /// Parses the JSON payload.
    pub fn parse(bytes: &[u8]) -> Result<Self, PayloadError> {
        #[derive(Deserialize)]
        struct Wire {
            #[serde(rename = "Challenge", default)]
            challenge: Option<String>,
        }
        let wire: Wire = serde_json::from_slice(bytes).map_err(|e| PayloadError::json("EncChallenge", &e))?;
        let text = wire.challenge.unwrap_or_default();
        let challenge = BASE64.decode(text.as_bytes()).map_err(|e| PayloadError {
            what: "EncChallenge",
            reason: format!("Challenge is not base64: {e}"),
        })?;
        Ok(Self { challenge })
    }

    /// Compact JSON bytes.
    pub fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec(&serde_json::json!({ "Challenge": BASE64.encode(&self.challenge) })).unwrap_or_default()
    }
}

/// What the client learned from a [`HandshakeRequest`]; [`ClientHandshake::response`] makes the
/// answer once any KMS data key has been made.
#[derive(Debug, Clone, PartialEq)]
pub struct ClientHandshake {
    /// Agent version from the request.
    pub agent_version: String,
    /// Announced session type.
    pub session_type: Option<SessionType>,
    /// Announced properties (`null` for shells).
    pub properties: Value,
    /// Encryption the agent asks for, if it does (§5.6).
    pub kms: Option<KmsRequest>,
    /// Why we cannot go on, if we cannot; the response is still sent so that the agent ends
    /// the session cleanly.
    pub error: Option<HandshakeError>,
    actions: Vec<String>,
}

impl ClientHandshake {
    /// Reads a `HandshakeRequest` payload the client way (§5.3).
    pub fn process(request: &[u8]) -> Result<Self, HandshakeError> {
        let request = HandshakeRequest::parse(request)?;
        let mut out = ClientHandshake {
            agent_version: request.agent_version.clone(),
            session_type: None,
            properties: Value::Null,
            kms: None,
            error: None,
            actions: Vec::new(),
        };
        for action in &request.requested_client_actions {
            let params = &action.action_parameters;
            match action.action_type.as_str() {
                "SessionType" => {
                    let name = params.get("SessionType").and_then(Value::as_str).unwrap_or_default();
                    match SessionType::parse(name) {
                        Some(t) => {
                            out.session_type = Some(t);
                            out.properties = params.get("Properties").cloned().unwrap_or(Value::Null);
                        }
                        None => {
                            out.error
                                .get_or_insert(HandshakeError::UnknownSessionType(name.to_owned()));
                        }
                    }
                }
                "KMSEncryption" => {
                    let text = |k: &str| params.get(k).and_then(Value::as_str).map(str::to_owned);
                    out.kms = Some(KmsRequest {
                        key_id: text("KMSKeyId").unwrap_or_default(),
                        challenge: text("Challenge").filter(|c| !c.is_empty()),
                    });
                }
                _ => {}
            }
            out.actions.push(action.action_type.clone());
        }
        if out.session_type.is_none() && out.error.is_none() {
            out.error = Some(HandshakeError::NoSessionType);
        }
        Ok(out)
    }

    /// The `HandshakeResponse` payload (type 6): one processed action per requested one, in
    /// order. `kms` is the outcome of the `KMSEncryption` action; without one that action
    /// fails.
    pub fn response(&self, client_version: &str, kms: Option<&KmsAnswer>) -> Vec<u8> {
        let mut processed = Vec::new();
        let mut errors = Vec::new();
        for action_type in &self.actions {
            let (status, result, error) = match action_type.as_str() {
                "SessionType" => match (&self.session_type, &self.error) {
                    (Some(_), _) => (ActionStatus::Success, Value::Null, String::new()),
                    (None, Some(HandshakeError::UnknownSessionType(name))) => (
                        ActionStatus::Failed,
                        Value::Null,
                        format!("Failed to process action SessionType: Unknown session type {name}"),
                    ),
                    (None, _) => (
                        ActionStatus::Failed,
                        Value::Null,
                        "Failed to process action SessionType".to_owned(),
                    ),
                },
                "KMSEncryption" => match kms {
                    Some(KmsAnswer::Key {
                        ciphertext,
                        challenge_acknowledged,
                    }) => (
                        ActionStatus::Success,
                        serde_json::json!({
                            "KMSCipherTextKey": BASE64.encode(ciphertext),
                            "KMSCipherTextHash": null,
                            "ChallengeAcknowledgement": challenge_acknowledged,
                        }),
                        String::new(),
                    ),
                    Some(KmsAnswer::Failed(e)) => (ActionStatus::Failed, Value::Null, e.clone()),
                    None => (
                        ActionStatus::Failed,
                        Value::Null,
                        "Failed to process action KMSEncryption: no data key".to_owned(),
                    ),
                },
                other => (
                    ActionStatus::Unsupported,
                    Value::Null,
                    format!("Unsupported action {other}"),
                ),
            };
            if !error.is_empty() {
                errors.push(error.clone());
            }
            processed.push(ProcessedAction {
                action_type: action_type.clone(),
                action_status: status.code(),
                action_result: result,
                error,
            });
        }
        HandshakeResponse {
            client_version: client_version.to_owned(),
            processed_client_actions: processed,
            errors: if errors.is_empty() { None } else { Some(errors) },
        }
        .to_json()
    }
}

/// The agent's reading of a successful `KMSEncryption` action result (§5.6;
/// agent/session/datachannel/datachannel.go finalizeKMSEncryption).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KmsActionResult {
    /// The encrypted data key (`KMSCipherTextKey`).
    pub ciphertext: Vec<u8>,
    /// `ChallengeAcknowledgement`.
    pub challenge_acknowledged: bool,
}

impl KmsActionResult {
    /// Reads the `ActionResult` of a `KMSEncryption` processed action.
    pub fn parse(result: &Value) -> Result<Self, PayloadError> {
        let key = result
            .get("KMSCipherTextKey")
            .and_then(Value::as_str)
            .unwrap_or_default();
        let ciphertext = BASE64.decode(key.as_bytes()).map_err(|e| PayloadError {
            what: "KMSEncryption ActionResult",
            reason: format!("KMSCipherTextKey is not base64: {e}"),
        })?;
        Ok(Self {
            ciphertext,
            challenge_acknowledged: result
                .get("ChallengeAcknowledgement")
                .and_then(Value::as_bool)
                .unwrap_or(false),
        })
    }
}

/// Processes a `HandshakeRequest` payload and answers it at once (§5.3): what a client that
/// makes no KMS data key sends. A `KMSEncryption` action is answered as failed.
pub fn client_respond(request: &[u8], client_version: &str) -> Result<(ClientHandshake, Vec<u8>), HandshakeError> {
    let hs = ClientHandshake::process(request)?;
    let response = hs.response(client_version, None);
    Ok((hs, response))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn port_request_is_answered_with_success() {
        let req = HandshakeRequest::new(
            "3.3.40.0",
            &SessionType::Port,
            serde_json::json!({"portNumber":"22","type":"LocalPortForwarding","localPortNumber":"0"}),
        );
        let (hs, response) = client_respond(&req.to_json(), version::CLIENT_VERSION).unwrap();
        assert_eq!(hs.session_type, Some(SessionType::Port));
        assert!(hs.error.is_none() && hs.kms.is_none());
        let resp = HandshakeResponse::parse(&response).unwrap();
        assert!(resp.check().is_ok());
        assert_eq!(resp.errors, None);
        let props: PortProperties = serde_json::from_value(hs.properties).unwrap();
        assert_eq!(
            PortMode::for_client(props.kind.as_deref(), &hs.agent_version),
            PortMode::Mux { keepalive: false }
        );
    }

    fn kms_request(challenge: serde_json::Value) -> Vec<u8> {
        let mut req = HandshakeRequest::new("3.3.40.0", &SessionType::StandardStream, Value::Null);
        req.requested_client_actions.push(RequestedAction {
            action_type: "KMSEncryption".into(),
            action_parameters: serde_json::json!({"KMSKeyId":"arn:aws:kms:us-east-1:1:key/k","Challenge":challenge}),
        });
        req.to_json()
    }

    #[test]
    fn a_kms_request_is_answered_with_the_data_key_or_its_failure() {
        let hs = ClientHandshake::process(&kms_request("Y2hhbGxlbmdl".into())).unwrap();
        assert!(hs.error.is_none());
        assert_eq!(
            hs.kms,
            Some(KmsRequest {
                key_id: "arn:aws:kms:us-east-1:1:key/k".into(),
                challenge: Some("Y2hhbGxlbmdl".into()),
            })
        );
        let key = KmsAnswer::Key {
            ciphertext: vec![1, 2, 3, 250],
            challenge_acknowledged: true,
        };
        let resp = HandshakeResponse::parse(&hs.response("1.2.650.0", Some(&key))).unwrap();
        assert!(resp.check().is_ok());
        let result = &resp.processed_client_actions[1].action_result;
        assert_eq!(result["KMSCipherTextKey"], "AQID+g==");
        assert_eq!(
            KmsActionResult::parse(result).unwrap(),
            KmsActionResult {
                ciphertext: vec![1, 2, 3, 250],
                challenge_acknowledged: true
            }
        );
        let failed = KmsAnswer::Failed("no permission".into());
        let resp = HandshakeResponse::parse(&hs.response("1.2.650.0", Some(&failed))).unwrap();
        assert_eq!(resp.processed_client_actions[1].action_status, 2);
        assert_eq!(resp.errors, Some(vec!["no permission".to_owned()]));
        // Answered without a key (client_respond): the action fails and the agent ends it.
        let (_, response) = client_respond(&kms_request(Value::Null), "1.2.650.0").unwrap();
        assert!(HandshakeResponse::parse(&response).unwrap().check().is_err());
        let older = ClientHandshake::process(&kms_request(Value::Null)).unwrap();
        assert_eq!(older.kms.unwrap().challenge, None);
    }

    #[test]
    fn challenges_travel_as_base64_and_bad_ones_are_errors() {
        let c = EncChallenge {
            challenge: vec![0xff, 0, 7],
        };
        assert_eq!(c.to_json(), br#"{"Challenge":"/wAH"}"#);
        assert_eq!(EncChallenge::parse(&c.to_json()).unwrap(), c);
        assert!(EncChallenge::parse(br#"{"Challenge":"not base64!"}"#).is_err());
        assert!(EncChallenge::parse(b"7").is_err());
        assert!(KmsActionResult::parse(&serde_json::json!({"KMSCipherTextKey": "%%"})).is_err());
    }

    #[test]
    fn unknown_action_is_status_3() {
        let mut req = HandshakeRequest::new("3.3.40.0", &SessionType::Port, Value::Null);
        req.requested_client_actions.push(RequestedAction {
            action_type: "Teleport".into(),
            action_parameters: Value::Null,
        });
        let (_, response) = client_respond(&req.to_json(), "1.2.650.0").unwrap();
        let resp = HandshakeResponse::parse(&response).unwrap();
        assert_eq!(resp.processed_client_actions[1].action_status, 3);
    }

    #[test]
    fn an_unknown_session_type_fails_its_action() {
        let req = HandshakeRequest {
            agent_version: "3.3.40.0".into(),
            requested_client_actions: vec![RequestedAction {
                action_type: "SessionType".into(),
                action_parameters: serde_json::json!({"SessionType":"Teleport"}),
            }],
        };
        let (hs, response) = client_respond(&req.to_json(), "1.2.650.0").unwrap();
        assert_eq!(hs.error, Some(HandshakeError::UnknownSessionType("Teleport".into())));
        let resp = HandshakeResponse::parse(&response).unwrap();
        assert_eq!(resp.processed_client_actions[0].action_status, 2);
        assert!(
            resp.processed_client_actions[0]
                .error
                .contains("Unknown session type Teleport")
        );
    }

    #[test]
    fn mode_thresholds() {
        let lpf = Some("LocalPortForwarding");
        assert_eq!(PortMode::for_client(lpf, "3.0.196.0"), PortMode::Basic);
        assert_eq!(
            PortMode::for_client(lpf, "3.0.197.0"),
            PortMode::Mux { keepalive: true }
        );
        assert_eq!(
            PortMode::for_client(lpf, "3.1.1511.0"),
            PortMode::Mux { keepalive: true }
        );
        assert_eq!(PortMode::for_client(None, "3.3.40.0"), PortMode::Stdio);
        let agent = "3.3.2299.0";
        assert_eq!(PortMode::for_agent(lpf, agent, "0.0.1"), PortMode::Basic);
        assert_eq!(
            PortMode::for_agent(lpf, agent, "1.1.70"),
            PortMode::Mux { keepalive: true }
        );
        assert_eq!(
            PortMode::for_agent(lpf, agent, "1.2.650.0"),
            PortMode::Mux { keepalive: false }
        );
        // 3.1.1446.0 alone among the agents up to 3.1.1511.0 has keepalive off, for every client.
        assert_eq!(
            PortMode::for_agent(lpf, "3.1.1446.0", "1.1.70"),
            PortMode::Mux { keepalive: false }
        );
        assert_eq!(
            PortMode::for_client(lpf, "3.1.1446.0"),
            PortMode::Mux { keepalive: false }
        );
        assert_eq!(
            PortMode::for_client(lpf, "3.1.1476.0"),
            PortMode::Mux { keepalive: true }
        );
        // Both sides agree for every pairing of thresholds.
        for agent in [
            "2.3.722.0",
            "3.0.196.0",
            "3.0.197.0",
            "3.1.1446.0",
            "3.1.1511.0",
            "3.1.1512.0",
        ] {
            for client in ["1.2.332.0", "1.2.650.0"] {
                assert_eq!(
                    PortMode::for_agent(lpf, agent, client),
                    PortMode::for_client(lpf, agent),
                    "agent {agent}, client {client}"
                );
            }
        }
    }
}
