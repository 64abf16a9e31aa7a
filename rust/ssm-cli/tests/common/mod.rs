//! Shared pieces of the `ssmconnect` end-to-end tests: child processes that are always killed,
//! a clean environment per test, an in-process emulator, loopback servers, bounded waits.
//!
//! Every child runs in its own process group and [`Proc`] kills the whole group when dropped,
//! so a failing assertion never leaves `ssmconnect`, `aws`, `ssh` or `sshd` behind.
#![allow(dead_code)]

use std::ffi::OsStr;
use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use sha2::{Digest, Sha256};
use ssm_emulator::{Config, Emulator};
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::process::{Child, ChildStderr, ChildStdin, ChildStdout, Command};

/// The binary under test.
pub const SSMCONNECT: &str = env!("CARGO_BIN_EXE_ssmconnect");

/// A target id the default emulator accepts.
pub const TARGET: &str = "i-0123456789abcdef0";

/// Runs `fut`, failing the test with `what` if it takes longer than `secs`.
pub async fn within<T>(secs: u64, what: &str, fut: impl Future<Output = T>) -> T {
    match tokio::time::timeout(Duration::from_secs(secs), fut).await {
        Ok(v) => v,
        Err(_) => panic!("timed out after {secs}s: {what}"),
    }
}

/// A private HOME (and scratch space) for one test; removed on drop.
pub struct Home {
    dir: tempfile::TempDir,
}

impl Home {
    pub fn new() -> Self {
        let dir = tempfile::Builder::new()
            .prefix("ssmconnect-cli-test-")
            .tempdir_in(std::env::temp_dir())
            .expect("create a temp dir");
        Self { dir }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// A directory holding `session-manager-plugin` as a symlink to `ssmconnect`.
    pub fn plugin_dir(&self) -> PathBuf {
        let bin = self.path().join("bin");
        if !bin.exists() {
            std::fs::create_dir_all(&bin).expect("create bin dir");
            std::os::unix::fs::symlink(SSMCONNECT, bin.join("session-manager-plugin"))
                .expect("symlink session-manager-plugin");
        }
        bin
    }

    /// `PATH` with the plugin directory first.
    pub fn path_with_plugin(&self) -> std::ffi::OsString {
        let mut parts = vec![self.plugin_dir()];
        if let Some(p) = std::env::var_os("PATH") {
            parts.extend(std::env::split_paths(&p));
        }
        std::env::join_paths(parts).expect("join PATH")
    }
}

/// Environment variables of ours that must not leak into a child from the test's own environment.
fn leaks(name: &OsStr) -> bool {
    let n = name.to_string_lossy();
    n.starts_with("AWS_") || n.starts_with("SSMCONNECT_")
}

/// A command with the test environment: no inherited AWS settings, HOME in `home`, fake
/// credentials, and (when `region` is true) `AWS_REGION=us-east-1`.
pub fn command(program: impl AsRef<OsStr>, home: &Home, region: bool) -> Command {
    let mut cmd = Command::new(program);
    for (name, _) in std::env::vars_os() {
        if leaks(&name) {
            cmd.env_remove(name);
        }
    }
    cmd.env("HOME", home.path())
        .env("AWS_ACCESS_KEY_ID", "AKIDEXAMPLE")
        .env("AWS_SECRET_ACCESS_KEY", "secret")
        .env("AWS_EC2_METADATA_DISABLED", "true");
    if region {
        cmd.env("AWS_REGION", "us-east-1");
    }
    cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
    cmd
}

/// `ssmconnect` with the test environment.
pub fn ssmconnect(home: &Home) -> Command {
    command(SSMCONNECT, home, true)
}

/// A child process in its own process group; the group is killed when this is dropped.
pub struct Proc {
    pub child: Child,
    pub name: String,
    pid: i32,
}

impl Proc {
    /// Spawns `cmd` as the leader of a new process group.
    pub fn spawn(cmd: &mut Command, name: &str) -> Self {
        cmd.process_group(0).kill_on_drop(true);
        let child = cmd.spawn().unwrap_or_else(|e| panic!("cannot start {name}: {e}"));
        let pid = child.id().expect("child pid") as i32;
        Self {
            child,
            name: name.to_owned(),
            pid,
        }
    }

    pub fn pid(&self) -> i32 {
        self.pid
    }

    /// Sends `sig` to the leader only.
    pub fn signal(&self, sig: i32) {
        // SAFETY: kill(2) has no memory effects; the pid is our own child.
        unsafe { libc::kill(self.pid, sig) };
    }

    /// Sends `sig` to the whole process group.
    pub fn signal_group(&self, sig: i32) {
        // SAFETY: as above; a negative pid addresses the group this child leads.
        unsafe { libc::kill(-self.pid, sig) };
    }

    pub fn take_stdout(&mut self) -> ChildStdout {
        self.child.stdout.take().expect("stdout is piped")
    }

    pub fn take_stderr(&mut self) -> ChildStderr {
        self.child.stderr.take().expect("stderr is piped")
    }

    pub fn take_stdin(&mut self) -> ChildStdin {
        self.child.stdin.take().expect("stdin is piped")
    }

    /// Waits for the exit, failing the test after `secs`.
    pub async fn wait(&mut self, secs: u64) -> ExitStatus {
        let what = format!("{} to exit", self.name);
        within(secs, &what, self.child.wait()).await.expect("wait for child")
    }

    /// Exit code, failing on death by signal.
    pub async fn exit_code(&mut self, secs: u64) -> i32 {
        let status = self.wait(secs).await;
        status
            .code()
            .unwrap_or_else(|| panic!("{} died by a signal: {status:?}", self.name))
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        // Kill the group even if the leader has exited: its children (the plugin under `aws`,
        // the ProxyCommand under `ssh`) may still run. A stale group id is harmless here.
        self.signal_group(libc::SIGKILL);
        let _ = self.child.start_kill();
        let _ = self.child.try_wait();
    }
}

/// Reads a child's output line by line, keeping everything it read.
pub struct Lines<R> {
    reader: BufReader<R>,
    pub seen: Vec<String>,
}

impl<R: AsyncRead + Unpin> Lines<R> {
    pub fn new(r: R) -> Self {
        Self {
            reader: BufReader::new(r),
            seen: Vec::new(),
        }
    }

    /// Next line (without the newline); `None` at EOF. Fails after `secs`.
    pub async fn next(&mut self, secs: u64) -> Option<String> {
        let mut line = String::new();
        let n = within(secs, "a line of output", self.reader.read_line(&mut line))
            .await
            .expect("read output");
        if n == 0 {
            return None;
        }
        let line = line.trim_end_matches(['\r', '\n']).to_owned();
        self.seen.push(line.clone());
        Some(line)
    }

    /// Reads until a line satisfies `pred` and returns it; fails at EOF or after `secs` in all.
    pub async fn until(&mut self, secs: u64, pred: impl Fn(&str) -> bool) -> String {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            let mut line = String::new();
            let n = match tokio::time::timeout(left, self.reader.read_line(&mut line)).await {
                Ok(r) => r.expect("read output"),
                Err(_) => panic!("no matching line within {secs}s; saw {:?}", self.seen),
            };
            if n == 0 {
                panic!("output ended before a matching line; saw {:?}", self.seen);
            }
            let line = line.trim_end_matches(['\r', '\n']).to_owned();
            self.seen.push(line.clone());
            if pred(&line) {
                return line;
            }
        }
    }

    /// The rest of the output up to EOF, as lines; fails after `secs`.
    pub async fn rest(&mut self, secs: u64) -> Vec<String> {
        let mut text = String::new();
        within(secs, "the end of output", self.reader.read_to_string(&mut text))
            .await
            .expect("read output");
        let lines: Vec<String> = text.lines().map(str::to_owned).collect();
        self.seen.extend(lines.iter().cloned());
        lines
    }
}

/// Reads everything from `r` (bounded by `secs`).
pub async fn read_all(mut r: impl AsyncRead + Unpin, secs: u64) -> Vec<u8> {
    let mut out = Vec::new();
    within(secs, "the end of output", r.read_to_end(&mut out))
        .await
        .expect("read output");
    out
}

/// Starts the emulator with `config` on a loopback port the OS picks.
pub async fn emulator(config: Config) -> Emulator {
    Emulator::start(config).await.expect("start the emulator")
}

/// A loopback echo server; returns its port. It stops with the test's runtime.
pub async fn echo_server() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").await.expect("bind echo");
    let port = l.local_addr().expect("echo addr").port();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            tokio::spawn(async move {
                let (mut r, mut w) = s.split();
                let _ = tokio::io::copy(&mut r, &mut w).await;
            });
        }
    });
    port
}

/// A port the OS just handed out and released (for programs that must be told a number).
pub fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind for a free port");
    l.local_addr().expect("addr").port()
}

/// Deterministic pseudo-random bytes (xorshift), different per `seed`.
pub fn random_bytes(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(len);
    out
}

pub fn sha256_hex(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

/// Sends `data` through a connection to `addr` and returns what comes back (the whole echo).
pub async fn echo_through(addr: SocketAddr, data: Vec<u8>) -> Vec<u8> {
    let stream = TcpStream::connect(addr).await.expect("connect to forward");
    let (mut r, mut w) = stream.into_split();
    let len = data.len();
    let writer = tokio::spawn(async move {
        w.write_all(&data).await.expect("write to forward");
        w
    });
    let mut back = vec![0u8; len];
    r.read_exact(&mut back).await.expect("read the echo");
    // Keep the write half alive until everything came back (a half-close is not needed).
    drop(writer.await.expect("writer task"));
    back
}

/// Waits until nothing accepts on `addr` any more; fails after `secs`.
pub async fn assert_closed(addr: SocketAddr, secs: u64) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
    loop {
        // Refused is what we wait for; a connection or a hang means something still listens.
        if let Ok(Err(_)) = tokio::time::timeout(Duration::from_millis(500), TcpStream::connect(addr)).await {
            return;
        }
        if tokio::time::Instant::now() >= deadline {
            panic!("{addr} still accepts connections {secs}s after the process was stopped");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Resolves `program` on PATH.
pub fn which(program: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(program))
        .find(|p| p.is_file())
}

/// The name of the user running the tests (ssh logs in as this user).
pub fn current_user() -> String {
    let out = std::process::Command::new("id")
        .arg("-un")
        .output()
        .expect("run id -un");
    assert!(out.status.success(), "id -un failed");
    String::from_utf8(out.stdout)
        .expect("utf-8 user name")
        .trim()
        .to_owned()
}

/// Runs a short helper program to completion (bounded), failing on a non-zero exit.
pub async fn run_ok(cmd: &mut Command, name: &str) -> std::process::Output {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let out = within(30, name, cmd.output())
        .await
        .unwrap_or_else(|e| panic!("cannot run {name}: {e}"));
    assert!(
        out.status.success(),
        "{name} failed: {:?}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// StartSession over raw HTTP (awsJson1.1) as the AWS CLI would send it; returns the body.
pub async fn start_session_raw(addr: SocketAddr, document: &str, parameters: serde_json::Value) -> serde_json::Value {
    let body = serde_json::json!({
        "Target": TARGET,
        "DocumentName": document,
        "Parameters": parameters,
    })
    .to_string();
    let req = format!(
        "POST / HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/x-amz-json-1.1\r\nX-Amz-Target: AmazonSSM.StartSession\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let mut s = TcpStream::connect(addr).await.expect("connect to emulator");
    s.write_all(req.as_bytes()).await.expect("send request");
    let resp = read_all(s, 10).await;
    let text = String::from_utf8(resp).expect("utf-8 response");
    let (head, body) = text.split_once("\r\n\r\n").expect("HTTP response");
    assert!(head.starts_with("HTTP/1.1 200"), "StartSession failed: {text}");
    serde_json::from_str(body).expect("JSON body")
}

/// Whether every session the emulator has seen ends within `secs`.
pub async fn sessions_end(emu: &Emulator, secs: u64) -> bool {
    tokio::time::timeout(Duration::from_secs(secs), async {
        while !emu.sessions().iter().all(|s| s.ended) {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .is_ok()
}
