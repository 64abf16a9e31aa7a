//! AWS responses: awsJson1.1 replies and errors (SSM, EC2 Instance Connect) and EC2
//! query-protocol XML replies and errors. Every error is HTTP 400.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use rand::Rng;
use serde::de::DeserializeOwned;
use serde_json::json;

const AWS_JSON: &str = "application/x-amz-json-1.1";

fn with_type(status: StatusCode, body: String, content_type: &'static str) -> Response {
    let mut r = (status, body).into_response();
    r.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    r
}

/// An awsJson1.1 success.
pub(crate) fn json(body: serde_json::Value) -> Response {
    with_type(StatusCode::OK, body.to_string(), AWS_JSON)
}

/// An awsJson1.1 error: `{"__type": code, "message": ...}` and `x-amzn-errortype`.
pub(crate) fn json_error(code: &str, message: &str) -> Response {
    let body = json!({ "__type": code, "message": message }).to_string();
    let mut r = with_type(StatusCode::BAD_REQUEST, body, AWS_JSON);
    if let Ok(v) = HeaderValue::from_str(code) {
        r.headers_mut().insert("x-amzn-errortype", v);
    }
    r
}

/// Answers an awsJson1.1 request with `handle(body)`, or with the error `code` when the body
/// does not parse.
pub(crate) fn with_json<T: DeserializeOwned>(body: &[u8], code: &str, handle: impl FnOnce(T) -> Response) -> Response {
    match serde_json::from_slice(body) {
        Ok(req) => handle(req),
        Err(e) => json_error(code, &format!("bad request body: {e}")),
    }
}

/// A query-protocol success (the XML document is the caller's).
pub(crate) fn xml(body: String) -> Response {
    with_type(StatusCode::OK, body, "text/xml;charset=UTF-8")
}

/// A query-protocol error: `<Response><Errors><Error>...</Errors><RequestID/></Response>`.
pub(crate) fn xml_error(code: &str, message: &str) -> Response {
    with_type(
        StatusCode::BAD_REQUEST,
        format!(
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Response><Errors><Error><Code>{}</Code><Message>{}</Message></Error></Errors><RequestID>{}</RequestID></Response>",
            code,
            escape(message),
            request_id()
        ),
        "text/xml;charset=UTF-8",
    )
}

/// XML text escaping.
pub(crate) fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            c => out.push(c),
        }
    }
    out
}

/// `n` random bytes in lowercase hex.
pub(crate) fn random_hex(n: usize) -> String {
    let mut bytes = vec![0u8; n];
    rand::rng().fill(bytes.as_mut_slice());
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A request id in EC2's form (a random UUID).
pub(crate) fn request_id() -> String {
    let h = random_hex(16);
    format!("{}-{}-{}-{}-{}", &h[..8], &h[8..12], &h[12..16], &h[16..20], &h[20..])
}
