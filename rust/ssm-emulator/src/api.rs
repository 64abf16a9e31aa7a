//! HTTP surface: the SSM API over awsJson1.1 (§1.1, §11.1), the data-channel WebSocket route
//! (§11.2), and `/_emulator/*` control routes for tests.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Deserialize;
use serde_json::json;

use crate::config::ResumeEnded;
use crate::faults::Faults;
use crate::state::{Connection, Counters, OpenRefused, Shared, Signer};
use crate::{agent, ec2, instance_connect, reply};

pub(crate) fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/", post(aws_api))
        .route("/v1/data-channel/{session_id}", get(data_channel))
        .route("/_emulator/faults", post(set_faults).get(get_faults))
        .route("/_emulator/sessions", get(sessions))
        .route("/_emulator/stats", get(stats))
        .route("/_emulator/instance-connect", get(instance_connect_keys))
        .with_state(shared)
}

/// `StartSessionRequest` of the botocore SSM model (2014-11-06). Every member is optional
/// here so that a missing `Target` gets the service's answer, not a parse error.
#[derive(Deserialize)]
struct StartSessionRequest {
    #[serde(rename = "Target", default)]
    target: Option<String>,
    #[serde(rename = "DocumentName", default)]
    document_name: Option<String>,
    #[serde(rename = "Reason", default)]
    reason: Option<String>,
    #[serde(rename = "Parameters", default)]
    parameters: HashMap<String, Vec<String>>,
}

#[derive(Deserialize)]
struct SessionIdRequest {
    #[serde(rename = "SessionId")]
    session_id: String,
}

/// Documents this emulator can run (§1.2).
const DOCUMENTS: &[&str] = &[
    "SSM-SessionManagerRunShell",
    "AWS-StartPortForwardingSession",
    "AWS-StartPortForwardingSessionToRemoteHost",
    "AWS-StartSSHSession",
    "AWS-StartInteractiveCommand",
    "AWS-StartNonInteractiveCommand",
];

async fn aws_api(State(shared): State<Arc<Shared>>, headers: HeaderMap, body: Bytes) -> Response {
    let target = headers
        .get("x-amz-target")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    match target.as_str() {
        "AmazonSSM.StartSession" => {
            let signer = Signer::from_authorization(headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()));
            reply::with_json(&body, VALIDATION, |req| start_session(&shared, req, signer))
        }
        "AmazonSSM.ResumeSession" => reply::with_json(&body, VALIDATION, |req| resume_session(&shared, req)),
        "AmazonSSM.TerminateSession" => reply::with_json(&body, VALIDATION, |req| terminate_session(&shared, req)),
        "AWSEC2InstanceConnectService.SendSSHPublicKey" => {
            instance_connect::send_ssh_public_key(&shared.config, &shared.instance_connect, &body)
        }
        // EC2 speaks the query protocol: a form body and no X-Amz-Target.
        "" if headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("application/x-www-form-urlencoded")) =>
        {
            ec2::query(&shared.config.inventory, &body)
        }
        "" => reply::json_error("MissingAction", "no X-Amz-Target header"),
        other => reply::json_error(
            "UnknownOperationException",
            &format!("operation {other} is not emulated"),
        ),
    }
}

const VALIDATION: &str = "ValidationException";

/// A constraint violation as AWS words it in a `ValidationException`:
/// `Value 'x' at 'member' failed to satisfy constraint: Member must …`.
fn violation(value: Option<&str>, member: &str, constraint: &str) -> String {
    match value {
        Some(v) => format!("Value '{v}' at '{member}' failed to satisfy constraint: {constraint}"),
        None => format!("Value null at '{member}' failed to satisfy constraint: {constraint}"),
    }
}

/// The length constraint of a model string shape (`min`, `max`), if `value` breaks it.
fn length_violation(value: &str, min: usize, max: usize) -> Option<String> {
    let n = value.chars().count();
    if n < min {
        Some(format!("Member must have length greater than or equal to {min}"))
    } else if n > max {
        Some(format!("Member must have length less than or equal to {max}"))
    } else {
        None
    }
}

/// `DocumentARN`: `^[a-zA-Z0-9_\-.:/]{3,128}$`.
const DOCUMENT_PATTERN: &str = r"^[a-zA-Z0-9_\-.:/]{3,128}$";

fn document_name_matches(name: &str) -> bool {
    (3..=128).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.' | b':' | b'/'))
}

/// The members' constraints of `StartSessionRequest` in the botocore SSM model, checked the way
/// the service checks them before anything else: all at once, reported together.
fn start_session_violations(req: &StartSessionRequest) -> Vec<String> {
    let mut out = Vec::new();
    // `Target`: required, shape `SessionTarget` (length 1..400, no pattern).
    match req.target.as_deref() {
        None => out.push(violation(None, "target", "Member must not be null")),
        Some(t) => out.extend(length_violation(t, 1, 400).map(|c| violation(Some(t), "target", &c))),
    }
    // `DocumentName`: shape `DocumentARN`, a pattern that also bounds the length.
    if let Some(d) = req.document_name.as_deref()
        && !document_name_matches(d)
    {
        let c = format!("Member must satisfy regular expression pattern: {DOCUMENT_PATTERN}");
        out.push(violation(Some(d), "documentName", &c));
    }
    // `Reason`: shape `SessionReason`, length 1..256 and pattern `^.{1,256}$` (`.` is no line
    // terminator).
    if let Some(r) = req.reason.as_deref() {
        if let Some(c) = length_violation(r, 1, 256) {
            out.push(violation(Some(r), "reason", &c));
        } else if r.contains(['\n', '\r', '\u{85}', '\u{2028}', '\u{2029}']) {
            out.push(violation(
                Some(r),
                "reason",
                "Member must satisfy regular expression pattern: ^.{1,256}$",
            ));
        }
    }
    // `Parameters`: `SessionManagerParameters`, keys `SessionManagerParameterName` (1..255),
    // values lists of `SessionManagerParameterValue` (1..65535).
    let keys_bad = req.parameters.keys().any(|k| length_violation(k, 1, 255).is_some());
    let values_bad = req
        .parameters
        .values()
        .flatten()
        .any(|v| length_violation(v, 1, 65535).is_some());
    if keys_bad || values_bad {
        let mut entries: Vec<String> = req
            .parameters
            .iter()
            .map(|(k, v)| format!("{k}=[{}]", v.join(", ")))
            .collect();
        entries.sort();
        let shown = format!("{{{}}}", entries.join(", "));
        if keys_bad {
            out.push(violation(
                Some(&shown),
                "parameters",
                "Map keys must satisfy constraint: [Member must have length less than or equal to 255, \
                 Member must have length greater than or equal to 1]",
            ));
        }
        if values_bad {
            out.push(violation(
                Some(&shown),
                "parameters",
                "Map value must satisfy constraint: [Member must satisfy constraint: [Member must have \
                 length less than or equal to 65535, Member must have length greater than or equal to 1]]",
            ));
        }
    }
    out
}

/// `N validation error(s) detected: …; …`, the service's `ValidationException`.
fn validation_error(violations: &[String]) -> Response {
    let n = violations.len();
    let plural = if n == 1 { "" } else { "s" };
    reply::json_error(
        VALIDATION,
        &format!("{n} validation error{plural} detected: {}", violations.join("; ")),
    )
}

/// The document a `DocumentName` means: a name, or the ARN of one
/// (`arn:<partition>:ssm:<region>:<account>:document/<name>`, which `DocumentARN` allows).
fn document_of(name: &str) -> &str {
    match name.strip_prefix("arn:") {
        Some(rest) if rest.contains(":ssm:") => rest.rsplit_once(":document/").map_or(name, |(_, n)| n),
        _ => name,
    }
}

fn start_session(shared: &Arc<Shared>, req: StartSessionRequest, signer: Signer) -> Response {
    // The fault `throttle_start_sessions`: the service's answer to a caller over its API rate
    // limit, awsJson1.1 `ThrottlingException` "Rate exceeded" with HTTP 400; the request is not
    // looked at (the emulator's choice of order).
    if shared.take_start_throttle() {
        return reply::json_error("ThrottlingException", "Rate exceeded");
    }
    let violations = start_session_violations(&req);
    if !violations.is_empty() {
        return validation_error(&violations);
    }
    let target = req.target.unwrap_or_default();
    let document = req
        .document_name
        .as_deref()
        .map(document_of)
        .unwrap_or_default()
        .to_owned();
    let own = shared.config.command_document.as_deref() == Some(document.as_str());
    if !document.is_empty() && !DOCUMENTS.contains(&document.as_str()) && !own {
        // `InvalidDocument` ("The specified SSM document doesn't exist.", botocore model).
        return reply::json_error("InvalidDocument", &format!("Document {document} does not exist."));
    }
    if !shared.target_known(&target) {
        // `TargetNotConnected`, the service's answer for any target without a connected agent.
        return reply::json_error("TargetNotConnected", &format!("{target} is not connected."));
    }
    let (session_id, token) = shared.create_session(&target, &document, req.parameters, req.reason, signer);
    // The agent starts on dispatch, before the client connects (its clocks run from here).
    agent::dispatch(shared, &session_id);
    reply::json(json!({
        "SessionId": session_id,
        "TokenValue": token,
        "StreamUrl": shared.stream_url(&session_id),
    }))
}

fn resume_session(shared: &Shared, req: SessionIdRequest) -> Response {
    match shared.resume(&req.session_id) {
        Some(Some(token)) => reply::json(json!({
            "SessionId": req.session_id,
            "TokenValue": token,
            "StreamUrl": shared.stream_url(&req.session_id),
        })),
        Some(None) if shared.config.resume_ended == ResumeEnded::NoToken => {
            reply::json(json!({ "SessionId": req.session_id }))
        }
        _ => reply::json_error(
            "DoesNotExistException",
            &format!("Session {} does not exist or has ended.", req.session_id),
        ),
    }
}

fn terminate_session(shared: &Shared, req: SessionIdRequest) -> Response {
    // Like the real service, terminating an unknown or ended session is not an error.
    shared.terminate(&req.session_id);
    reply::json(json!({ "SessionId": req.session_id }))
}

/// Bytes asked of the data channel's socket per read (a dozen of the agent's 1 KiB messages).
const READ_BUFFER: usize = 16 << 10;

async fn data_channel(
    State(shared): State<Arc<Shared>>,
    Path(session_id): Path<String>,
    ws: WebSocketUpgrade,
) -> Response {
    if shared.faults().refuse_websocket_upgrade {
        Counters::add(&shared.counters.connections_refused, 1);
        return (StatusCode::FORBIDDEN, "the data channel is refused (fault injection)").into_response();
    }
    // tungstenite zeroes its read size of buffer before every read, also the one that finds the
    // socket empty: at its default (128 KiB), twice 128 KiB for every ack that comes alone (the
    // client's dial asks for the same 16 KiB, ssm-session's driver.rs).
    ws.read_buffer_size(READ_BUFFER)
        .on_upgrade(move |socket| open_data_channel(shared, session_id, socket))
}

/// §11.2 step 1: the first message must be the open text frame with a valid token.
async fn open_data_channel(shared: Arc<Shared>, session_id: String, mut socket: WebSocket) {
    // The official plugin may ping before it sends the token (its pinger starts with the
    // socket), so control frames are skipped while waiting for the open message.
    let first = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match socket.recv().await {
                Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
                other => return other,
            }
        }
    })
    .await;
    let text = match first {
        Ok(Some(Ok(Message::Text(t)))) => t.to_string(),
        Ok(Some(Ok(Message::Binary(b)))) => String::from_utf8_lossy(&b).into_owned(),
        _ => {
            refuse(&shared, socket, "expected the open data channel message").await;
            return;
        }
    };
    let open = match ssm_proto::OpenDataChannel::parse(&text) {
        Ok(o) => o,
        Err(_) => {
            refuse(&shared, socket, "malformed open data channel message").await;
            return;
        }
    };
    let expire_all = shared.faults().expire_tokens;
    match shared.redeem(&open.token_value, &session_id, expire_all) {
        Ok(spec) => {
            Counters::add(&shared.counters.connections, 1);
            tracing::debug!(session = %session_id, client_version = %open.client_version, "data channel opened");
            agent::attach(
                &shared,
                spec,
                Connection {
                    socket,
                    client_version: open.client_version,
                },
            );
        }
        Err(why) => {
            let reason = match why {
                OpenRefused::UnknownToken => "invalid token",
                OpenRefused::Expired => "token expired",
                OpenRefused::SessionEnded => "session ended",
            };
            refuse(&shared, socket, reason).await;
        }
    }
}

async fn refuse(shared: &Shared, mut socket: WebSocket, reason: &'static str) {
    Counters::add(&shared.counters.connections_refused, 1);
    let _ = socket
        .send(Message::Close(Some(CloseFrame {
            code: 1008,
            reason: reason.into(),
        })))
        .await;
}

async fn set_faults(State(shared): State<Arc<Shared>>, body: Bytes) -> Response {
    match serde_json::from_slice::<Faults>(&body) {
        Ok(f) => {
            shared.set_faults(f);
            StatusCode::NO_CONTENT.into_response()
        }
        Err(e) => (StatusCode::BAD_REQUEST, format!("bad faults: {e}")).into_response(),
    }
}

async fn get_faults(State(shared): State<Arc<Shared>>) -> Response {
    axum::Json(&*shared.faults()).into_response()
}

async fn sessions(State(shared): State<Arc<Shared>>) -> Response {
    axum::Json(shared.session_infos()).into_response()
}

async fn stats(State(shared): State<Arc<Shared>>) -> Response {
    axum::Json(shared.stats()).into_response()
}

async fn instance_connect_keys(State(shared): State<Arc<Shared>>) -> Response {
    axum::Json(shared.instance_connect.list()).into_response()
}
