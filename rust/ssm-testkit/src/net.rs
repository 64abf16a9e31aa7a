//! Loopback ports and servers, and the SSM API spoken by hand.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener, UdpSocket};

use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use crate::proc::read_all;

/// A port free for both TCP and UDP on 127.0.0.1 right now: for programs that must be told a
/// port number (and for a port nothing listens on).
pub fn free_port() -> u16 {
    free_port_on(IpAddr::V4(Ipv4Addr::LOCALHOST))
}

/// A port free for both TCP and UDP on `ip` right now.
pub fn free_port_on(ip: IpAddr) -> u16 {
    for _ in 0..50 {
        let udp = UdpSocket::bind((ip, 0)).expect("bind udp for a free port");
        let port = udp.local_addr().expect("udp addr").port();
        if TcpListener::bind((ip, port)).is_ok() {
            return port;
        }
    }
    panic!("no port free for both TCP and UDP on {ip}");
}

/// The loopback addresses to run a test on: 127.0.0.1, and ::1 when this machine has it (the
/// test says so on stderr when it has not).
pub fn loopbacks() -> Vec<IpAddr> {
    let mut out = vec![IpAddr::V4(Ipv4Addr::LOCALHOST)];
    if UdpSocket::bind((Ipv6Addr::LOCALHOST, 0)).is_ok() {
        out.push(IpAddr::V6(Ipv6Addr::LOCALHOST));
    } else {
        eprintln!("::1 is not available here: IPv6 loopback is not tested");
    }
    out
}

/// A loopback TCP echo server; returns its port. It runs as long as the test's runtime.
pub async fn echo_server() -> u16 {
    greeting_echo_server(b"").await
}

/// A loopback TCP server that first sends `greeting` on each connection (as sshd sends its
/// identification, `SSH-2.0-…\r\n`), then echoes; returns its port.
pub async fn greeting_echo_server(greeting: &'static [u8]) -> u16 {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind an echo server");
    let port = listener.local_addr().expect("echo server addr").port();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            tokio::spawn(async move {
                if !greeting.is_empty() && s.write_all(greeting).await.is_err() {
                    return;
                }
                let (mut r, mut w) = s.split();
                let _ = tokio::io::copy(&mut r, &mut w).await;
            });
        }
    });
    port
}

/// A loopback HTTP server on `ip` (a port the OS picks) answering every request with `body`
/// (status 200, `Connection: close`); returns its address, or `None` when `ip` cannot be bound
/// here (127.0.0.2 on systems where only 127.0.0.1 is loopback). It runs as long as the test's
/// runtime.
pub async fn http_server(ip: IpAddr, body: &'static str) -> Option<SocketAddr> {
    let listener = tokio::net::TcpListener::bind((ip, 0)).await.ok()?;
    let addr = listener.local_addr().ok()?;
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            tokio::spawn(async move {
                // The request head only: what a GET sends (curl sends no body).
                let mut head = Vec::new();
                let mut buf = [0u8; 1024];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match tokio::io::AsyncReadExt::read(&mut s, &mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(buf.get(..n).unwrap_or_default()),
                    }
                }
                let reply = format!(
                    "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = s.write_all(reply.as_bytes()).await;
                let _ = s.shutdown().await;
            });
        }
    });
    Some(addr)
}

/// One awsJson1.1 call (`X-Amz-Target: AmazonSSM.<operation>`) over raw HTTP, as the AWS CLI
/// sends it, bounded by 10 s; returns the status and the body (`Null` when it is not JSON).
pub async fn aws_call(addr: SocketAddr, operation: &str, body: serde_json::Value) -> (u16, serde_json::Value) {
    json_call(addr, &format!("AmazonSSM.{operation}"), body).await
}

/// One unsigned awsJson1.1 call, `target` as in `X-Amz-Target` (e.g. `TrentService.CreateKey`),
/// to the service at `addr`: its status and JSON body.
pub async fn json_call(addr: SocketAddr, target: &str, body: serde_json::Value) -> (u16, serde_json::Value) {
    json_call_for(addr, target, None, body).await
}

/// [`json_call`] with a SigV4-shaped `Authorization` header naming `service` (not a valid
/// signature): what a server hosting many services (moto) routes by.
pub async fn json_call_for(
    addr: SocketAddr,
    target: &str,
    service: Option<&str>,
    body: serde_json::Value,
) -> (u16, serde_json::Value) {
    let headers = format!("Content-Type: application/x-amz-json-1.1\r\nX-Amz-Target: {target}\r\n");
    let (status, body) = post(addr, target, service, &headers, &body.to_string()).await;
    (status, serde_json::from_str(&body).unwrap_or(serde_json::Value::Null))
}

/// One query-protocol call (IAM, STS: a form of `Action`, `Version` and parameters) to the
/// `service` at `addr`, signed as [`json_call_for`] signs: its status and body (XML).
pub async fn query_call_for(addr: SocketAddr, service: &str, params: &[(&str, &str)]) -> (u16, String) {
    let form = url::form_urlencoded::Serializer::new(String::new())
        .extend_pairs(params)
        .finish();
    let action = params
        .iter()
        .find(|(k, _)| *k == "Action")
        .map_or("query call", |(_, v)| *v);
    post(
        addr,
        action,
        Some(service),
        "Content-Type: application/x-www-form-urlencoded; charset=utf-8\r\n",
        &form,
    )
    .await
}

/// A POST of `body` with `headers` (each ending in CRLF) over raw HTTP, bounded by 10 s; with
/// a SigV4-shaped `Authorization` header naming `service` when given. Its status and body.
async fn post(addr: SocketAddr, operation: &str, service: Option<&str>, headers: &str, body: &str) -> (u16, String) {
    let auth = service
        .map(|s| {
            format!(
                "Authorization: AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20260101/us-east-1/{s}/aws4_request, \
                 SignedHeaders=host, Signature=0\r\n"
            )
        })
        .unwrap_or_default();
    let req = format!(
        "POST / HTTP/1.1\r\nHost: {addr}\r\n{headers}{auth}Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let mut s = TcpStream::connect(addr).await.expect("connect to the API");
    s.write_all(req.as_bytes()).await.expect("send the request");
    let resp = read_all(s, 10).await;
    let text = String::from_utf8(resp).expect("utf-8 response");
    let (head, body) = text
        .split_once("\r\n\r\n")
        .unwrap_or_else(|| panic!("{operation}: not an HTTP response: {text:?}"));
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("{operation}: no status in {head:?}"));
    (status, body.to_owned())
}
