//! Shared pieces of the session tests. Here: an SSM client for the emulator, a destination
//! server that checks what it receives and sends a stream of its own, a client that drives one
//! connection through a forward, a stdio session's data channel opened directly, and a
//! recorder of the SSM API calls the client makes; in
//! [`resolve`], what the target-resolution tests share. What other crates' tests use too (the
//! emulator, bounded waits, moto, dnsmasq, ports) is `ssm_testkit`'s, re-exported here.
//!
//! Everything runs on loopback, on ports the OS picks; every wait is bounded.
#![allow(dead_code)]

pub mod resolve;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};
use ssm_emulator::{Emulator, SessionInfo};
use ssm_session::aws::SharedControl;
use ssm_session::driver::Inbox;
use ssm_session::{
    AwsOptions, ChannelOptions, Connector, DataChannel, Endpoints, ForwardOptions, PortForward, Settings, SsmApi,
};
pub use ssm_testkit::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

/// The test credentials and region: explicit, so no credential chain, profile or instance
/// metadata is consulted.
pub fn credentials() -> AwsOptions {
    AwsOptions {
        region: Some(REGION.into()),
        access_key: Some(ACCESS_KEY.into()),
        secret_key: Some(SECRET_KEY.into()),
        ..AwsOptions::default()
    }
}

/// Settings for an emulator (or anything else) at `endpoint`, with [`credentials`].
pub fn settings(endpoint: &str) -> Settings {
    Settings {
        aws: credentials(),
        endpoints: Endpoints {
            ssm: Some(endpoint.to_owned()),
            ..Endpoints::default()
        },
        ..Settings::default()
    }
}

/// An SSM client for `endpoint`.
pub async fn api(endpoint: &str) -> SsmApi {
    Connector::new(settings(endpoint))
        .api()
        .await
        .expect("SSM client")
        .clone()
}

/// Starts a forward to `remote_port` with `opts` adjusted by `adjust`, bounded.
pub async fn forward(api: &SsmApi, remote_port: u16, adjust: impl FnOnce(&mut ForwardOptions)) -> PortForward {
    let mut opts = ForwardOptions::new(TARGET, remote_port);
    adjust(&mut opts);
    tokio::time::timeout(Duration::from_secs(30), PortForward::start(api, opts))
        .await
        .expect("forward starts within 30 s")
        .expect("forward starts")
}

/// The emulator's record of session `id`.
pub fn session_info(emu: &Emulator, id: &str) -> SessionInfo {
    emu.sessions()
        .into_iter()
        .find(|s| s.session_id == id)
        .unwrap_or_else(|| panic!("the emulator knows no session {id}"))
}

/// Aborts a task when dropped, so a failing test leaves nothing running.
pub struct AbortOnDrop<T>(pub JoinHandle<T>);

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

const IO_CHUNK: usize = 64 << 10;

/// Writes `len` bytes of `Pattern::new(seed)`; returns their SHA-256.
async fn write_pattern(w: &mut (impl AsyncWriteExt + Unpin), seed: u64, len: u64) -> std::io::Result<[u8; 32]> {
    let mut pattern = Pattern::new(seed);
    let mut hash = Sha256::new();
    let mut buf = vec![0u8; IO_CHUNK];
    let mut left = len;
    while left > 0 {
        let n = usize::try_from(left.min(IO_CHUNK as u64)).unwrap_or(IO_CHUNK);
        let chunk = &mut buf[..n];
        pattern.fill(chunk);
        hash.update(&*chunk);
        w.write_all(chunk).await?;
        left -= n as u64;
    }
    w.flush().await?;
    Ok(hash.finalize().into())
}

/// Reads exactly `len` bytes; returns their SHA-256, how many arrived (fewer on early EOF) and
/// the longest wait between two reads once data had started to flow.
async fn read_exact_hashed(
    r: &mut (impl AsyncReadExt + Unpin),
    len: u64,
) -> std::io::Result<([u8; 32], u64, Duration)> {
    let mut hash = Sha256::new();
    let mut buf = vec![0u8; IO_CHUNK];
    let mut got = 0u64;
    let mut last: Option<Instant> = None;
    let mut stall = Duration::ZERO;
    while got < len {
        let want = usize::try_from((len - got).min(IO_CHUNK as u64)).unwrap_or(IO_CHUNK);
        let n = r.read(&mut buf[..want]).await?;
        if n == 0 {
            break;
        }
        let now = Instant::now();
        if let Some(t) = last {
            stall = stall.max(now - t);
        }
        last = Some(now);
        hash.update(&buf[..n]);
        got += n as u64;
    }
    Ok((hash.finalize().into(), got, stall))
}

/// What the destination saw on one connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerReport {
    /// The id the client put in its header.
    pub tag: u64,
    /// Bytes received after the header.
    pub received: u64,
    /// SHA-256 of those bytes.
    pub received_sha: [u8; 32],
    /// SHA-256 of what it sent back.
    pub sent_sha: [u8; 32],
    /// Bytes it received beyond what the header announced (must be 0).
    pub extra: u64,
}

/// The destination "on the instance": for each connection it reads a 32-byte header
/// `(tag, upload length, download length, download seed)`, then at the same time receives the
/// upload (hashing it) and sends `download length` bytes of `Pattern::new(download seed)`.
/// When both are done it checks for surplus bytes briefly, reports, and closes.
///
/// Unlike an echo server, the two directions carry independent data, so a byte lost or repeated
/// in either direction shows up on its own.
pub struct Destination {
    pub port: u16,
    pub reports: mpsc::UnboundedReceiver<ServerReport>,
    _task: AbortOnDrop<()>,
}

pub async fn destination() -> Destination {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind dest");
    let port = listener.local_addr().expect("dest addr").port();
    let (tx, reports) = mpsc::unbounded_channel();
    let task = tokio::spawn(async move {
        let mut conns = tokio::task::JoinSet::new();
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let tx = tx.clone();
            conns.spawn(async move {
                if let Ok(report) = serve(stream).await {
                    let _ = tx.send(report);
                }
            });
        }
    });
    Destination {
        port,
        reports,
        _task: AbortOnDrop(task),
    }
}

async fn serve(stream: TcpStream) -> std::io::Result<ServerReport> {
    let _ = stream.set_nodelay(true);
    let (mut rd, mut wr) = stream.into_split();
    let mut header = [0u8; 32];
    rd.read_exact(&mut header).await?;
    let field = |i: usize| {
        let mut b = [0u8; 8];
        b.copy_from_slice(&header[i * 8..i * 8 + 8]);
        u64::from_le_bytes(b)
    };
    let (tag, up, down, seed) = (field(0), field(1), field(2), field(3));
    let writer = tokio::spawn(async move {
        let sha = write_pattern(&mut wr, seed, down).await;
        (sha, wr)
    });
    let (received_sha, received, _) = read_exact_hashed(&mut rd, up).await?;
    let (sent_sha, _wr) = writer.await.map_err(std::io::Error::other)?;
    let sent_sha = sent_sha?;
    // Anything more is a repeated or invented byte; the client sends nothing after its upload.
    let mut extra_buf = [0u8; 4096];
    let extra = match tokio::time::timeout(Duration::from_millis(100), rd.read(&mut extra_buf)).await {
        Ok(Ok(n)) => n as u64,
        _ => 0,
    };
    Ok(ServerReport {
        tag,
        received,
        received_sha,
        sent_sha,
        extra,
    })
}

/// What the client saw on one connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientReport {
    pub tag: u64,
    pub sent_sha: [u8; 32],
    pub received: u64,
    pub received_sha: [u8; 32],
    /// Bytes that arrived after the announced download (must be 0).
    pub extra: u64,
    pub elapsed: Duration,
    /// Longest gap between two reads of the download.
    pub max_stall: Duration,
}

/// Opens one connection through the forward at `addr`, uploads `up` bytes and downloads `down`
/// bytes at the same time (writer and reader on separate tasks), bounded by `limit`.
pub async fn exchange(addr: SocketAddr, tag: u64, up: u64, down: u64, limit: Duration) -> ClientReport {
    exchange_reading_after(addr, tag, up, down, Duration::ZERO, limit).await
}

/// [`exchange`] with a local reader that reads nothing for `stall` first (a slow local sink).
pub async fn exchange_reading_after(
    addr: SocketAddr,
    tag: u64,
    up: u64,
    down: u64,
    stall: Duration,
    limit: Duration,
) -> ClientReport {
    tokio::time::timeout(limit, exchange_inner(addr, tag, up, down, stall))
        .await
        .unwrap_or_else(|_| panic!("connection {tag}: {up}/{down} bytes not exchanged within {limit:?}"))
}

async fn exchange_inner(addr: SocketAddr, tag: u64, up: u64, down: u64, stall: Duration) -> ClientReport {
    let started = Instant::now();
    let stream = TcpStream::connect(addr).await.expect("connect to the forward");
    let _ = stream.set_nodelay(true);
    let (mut rd, mut wr) = stream.into_split();
    let down_seed = tag.wrapping_mul(0x2545_f491_4f6c_dd1d) ^ 0xd0d0;
    let up_seed = tag.wrapping_mul(0x9e37_79b9) ^ 0x0bad;
    let mut header = Vec::with_capacity(32);
    for v in [tag, up, down, down_seed] {
        header.extend_from_slice(&v.to_le_bytes());
    }
    let writer = tokio::spawn(async move {
        wr.write_all(&header).await.expect("write header");
        let sha = write_pattern(&mut wr, up_seed, up).await.expect("upload");
        // Keep the write half open: in smux mode a half-close ends the whole stream (§7.4).
        (sha, wr)
    });
    let reader = tokio::spawn(async move {
        tokio::time::sleep(stall).await;
        let (sha, got, stall) = read_exact_hashed(&mut rd, down).await.expect("download");
        let mut extra_buf = [0u8; 4096];
        let extra = match tokio::time::timeout(Duration::from_millis(100), rd.read(&mut extra_buf)).await {
            Ok(Ok(n)) => n as u64,
            _ => 0,
        };
        (sha, got, extra, stall)
    });
    let (received_sha, received, extra, max_stall) = reader.await.expect("reader task");
    let (sent_sha, _wr) = writer.await.expect("writer task");
    ClientReport {
        tag,
        sent_sha,
        received,
        received_sha,
        extra,
        elapsed: started.elapsed(),
        max_stall,
    }
}

/// Asserts that both ends saw exactly what the other sent.
pub fn check_exchange(client: &ClientReport, server: &ServerReport, up: u64, down: u64) {
    let tag = client.tag;
    assert_eq!(server.tag, tag);
    assert_eq!(server.received, up, "connection {tag}: bytes that reached the target");
    assert_eq!(server.extra, 0, "connection {tag}: surplus bytes at the target");
    assert_eq!(
        server.received_sha, client.sent_sha,
        "connection {tag}: SHA-256 of client→target data"
    );
    assert_eq!(client.received, down, "connection {tag}: bytes that reached the client");
    assert_eq!(client.extra, 0, "connection {tag}: surplus bytes at the client");
    assert_eq!(
        client.received_sha, server.sent_sha,
        "connection {tag}: SHA-256 of target→client data"
    );
}

/// Waits for the destination's report of connection `tag` (reports of others are kept).
pub async fn report_for(dest: &mut Destination, tag: u64, pending: &mut Vec<ServerReport>) -> ServerReport {
    if let Some(i) = pending.iter().position(|r| r.tag == tag) {
        return pending.swap_remove(i);
    }
    loop {
        let r = tokio::time::timeout(Duration::from_secs(30), dest.reports.recv())
            .await
            .unwrap_or_else(|_| panic!("no report from the destination for connection {tag}"))
            .expect("destination running");
        if r.tag == tag {
            return r;
        }
        pending.push(r);
    }
}

/// MiB/s for `bytes` in `elapsed`.
pub fn mib_per_s(bytes: u64, elapsed: Duration) -> f64 {
    bytes as f64 / (1024.0 * 1024.0) / elapsed.as_secs_f64().max(1e-9)
}

/// A transparent TCP proxy in front of the emulator's API endpoint that records the operation of
/// every SSM call passing through (`X-Amz-Target: AmazonSSM.<Operation>`). The data channel does
/// not pass through it (the emulator's StreamUrl names the emulator itself).
pub struct ApiRecorder {
    pub endpoint: String,
    calls: Arc<Mutex<Vec<String>>>,
    _task: AbortOnDrop<()>,
}

impl ApiRecorder {
    pub async fn start(upstream: SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
        let endpoint = format!("http://{}", listener.local_addr().expect("proxy addr"));
        let calls = Arc::new(Mutex::new(Vec::new()));
        let record = calls.clone();
        let task = tokio::spawn(async move {
            let mut conns = tokio::task::JoinSet::new();
            loop {
                let Ok((client, _)) = listener.accept().await else {
                    return;
                };
                let record = record.clone();
                conns.spawn(async move {
                    let Ok(server) = TcpStream::connect(upstream).await else {
                        return;
                    };
                    let (mut cr, mut cw) = client.into_split();
                    let (mut sr, mut sw) = server.into_split();
                    let back = tokio::spawn(async move {
                        let _ = tokio::io::copy(&mut sr, &mut cw).await;
                        let _ = cw.shutdown().await;
                    });
                    let mut seen: Vec<u8> = Vec::new();
                    let mut buf = vec![0u8; 16 << 10];
                    loop {
                        let n = match cr.read(&mut buf).await {
                            Ok(0) | Err(_) => break,
                            Ok(n) => n,
                        };
                        seen.extend_from_slice(&buf[..n]);
                        scan_operations(&mut seen, &record);
                        if sw.write_all(&buf[..n]).await.is_err() {
                            break;
                        }
                    }
                    let _ = sw.shutdown().await;
                    let _ = back.await;
                });
            }
        });
        Self {
            endpoint,
            calls,
            _task: AbortOnDrop(task),
        }
    }

    /// Operations seen so far, in order.
    pub fn calls(&self) -> Vec<String> {
        self.calls.lock().map(|c| c.clone()).unwrap_or_default()
    }

    pub fn count(&self, operation: &str) -> usize {
        self.calls().iter().filter(|c| *c == operation).count()
    }
}

/// Moves every complete `AmazonSSM.<Op>\r\n` found in `seen` into `record`, keeping a short tail
/// for a marker split across reads.
fn scan_operations(seen: &mut Vec<u8>, record: &Mutex<Vec<String>>) {
    const MARK: &[u8] = b"amazonssm.";
    loop {
        let lower = seen.to_ascii_lowercase();
        let Some(at) = lower.windows(MARK.len()).position(|w| w == MARK) else {
            let keep = seen.len().saturating_sub(MARK.len());
            seen.drain(..keep);
            return;
        };
        let start = at + MARK.len();
        let Some(len) = seen[start..].windows(2).position(|w| w == b"\r\n") else {
            seen.drain(..at);
            return;
        };
        let op = String::from_utf8_lossy(&seen[start..start + len]).into_owned();
        if let Ok(mut r) = record.lock() {
            r.push(op);
        }
        seen.drain(..start + len);
    }
}

/// Starts an `AWS-StartSSHSession` (stdio mode) to `port`.
pub async fn start_stdio(api: &SsmApi, port: u16) -> ssm_session::StartedSession {
    let mut params = HashMap::new();
    params.insert("portNumber".to_owned(), vec![port.to_string()]);
    within(
        20,
        "StartSession",
        api.start_session(TARGET, Some("AWS-StartSSHSession"), &params),
    )
    .await
    .expect("StartSession")
}

/// Opens the data channel of a stdio session to `port`.
pub async fn open_stdio(api: &SsmApi, port: u16, opts: ChannelOptions) -> DataChannel {
    open_started(api, start_stdio(api, port).await, opts).await
}

/// Opens the data channel of a session StartSession has returned.
pub async fn open_started(api: &SsmApi, started: ssm_session::StartedSession, opts: ChannelOptions) -> DataChannel {
    let control: SharedControl = Arc::new(api.clone());
    within(30, "the data channel", DataChannel::open(started, control, opts))
        .await
        .expect("open")
}

/// Points the session's stream URL at `to` (a proxy); returns the host and port it named.
pub fn redirect_stream(started: &mut ssm_session::StartedSession, to: SocketAddr) -> String {
    let authority = started
        .stream_url
        .split("://")
        .nth(1)
        .and_then(|rest| rest.split('/').next())
        .expect("the stream URL's host and port")
        .to_owned();
    started.stream_url = started.stream_url.replacen(&authority, &to.to_string(), 1);
    authority
}

/// A destination that sends `Pattern::new(seed)` to every connection: `len` bytes and then
/// closes, or without end when `len` is `None`.
pub async fn pattern_destination(seed: u64, len: Option<usize>) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = listener.local_addr().expect("addr").port();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut pattern = Pattern::new(seed);
                let mut buf = vec![0u8; 64 << 10];
                let mut left = len.unwrap_or(usize::MAX);
                while left > 0 {
                    pattern.fill(&mut buf);
                    let n = left.min(buf.len());
                    if s.write_all(&buf[..n]).await.is_err() {
                        return;
                    }
                    left -= n;
                }
            });
        }
    });
    port
}

/// Everything left in `rx` until the session ends, and in how many messages.
pub async fn drain(rx: &mut Inbox) -> (Vec<u8>, usize) {
    let mut got = Vec::new();
    let mut messages = 0;
    within(60, "the end of the inbox", async {
        while let Some((_, data)) = rx.recv().await {
            got.extend_from_slice(&data);
            messages += 1;
        }
    })
    .await;
    (got, messages)
}

/// Whether `got` is the start of `Pattern::new(seed)`.
pub fn is_pattern_prefix(got: &[u8], seed: u64) -> bool {
    let mut want = vec![0u8; got.len().next_multiple_of(8)];
    Pattern::new(seed).fill(&mut want);
    got == &want[..got.len()]
}
