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

#[derive(Deserialize)]
struct StartSessionRequest {
    #[serde(rename = "Target")]
    target: String,
    #[serde(rename = "DocumentName", default)]
    document_name: Option<String>,
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

fn start_session(shared: &Arc<Shared>, req: StartSessionRequest, signer: Signer) -> Response {
    if req.target.is_empty() || req.target.len() > 400 {
        return reply::json_error(VALIDATION, "Target must be 1..400 characters");
    }
    let document = req.document_name.unwrap_or_default();
    if !document.is_empty() && !DOCUMENTS.contains(&document.as_str()) {
        return reply::json_error("InvalidDocument", &format!("document {document} is not emulated"));
    }
    if !shared.target_known(&req.target) {
        return reply::json_error("TargetNotConnected", &format!("{} is not connected.", req.target));
    }
    let (session_id, token) = shared.create_session(&req.target, &document, req.parameters, signer);
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

async fn data_channel(
    State(shared): State<Arc<Shared>>,
    Path(session_id): Path<String>,
    ws: WebSocketUpgrade,
) -> Response {
    ws.on_upgrade(move |socket| open_data_channel(shared, session_id, socket))
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
    axum::Json(shared.faults()).into_response()
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
