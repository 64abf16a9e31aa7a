//! What only the `ssmconnect` end-to-end tests need: the binary, a clean environment and HOME
//! per test (with `session-manager-plugin` on PATH), line-by-line output, traffic through a
//! forward. The rest (emulator, child processes killed with their group, loopback servers,
//! bounded waits, sshd) is `ssm_testkit`'s, re-exported here.
#![allow(dead_code)]

use std::ffi::OsStr;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use ssm_emulator::Emulator;
pub use ssm_testkit::*;
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::process::Command;

/// The binary under test.
pub const SSMCONNECT: &str = env!("CARGO_BIN_EXE_ssmconnect");

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

    /// A directory holding `session-manager-plugin` as a symlink to `ssmconnect`, or to the
    /// program `SSMCONNECT_TEST_PLUGIN` names (to run these tests against another plugin).
    pub fn plugin_dir(&self) -> PathBuf {
        let bin = self.path().join("bin");
        if !bin.exists() {
            std::fs::create_dir_all(&bin).expect("create bin dir");
            let plugin =
                std::env::var_os("SSMCONNECT_TEST_PLUGIN").map_or_else(|| PathBuf::from(SSMCONNECT), PathBuf::from);
            std::os::unix::fs::symlink(plugin, bin.join("session-manager-plugin"))
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

/// A command with the test environment: no inherited AWS settings, HOME in `home`, the test
/// credentials, and (when `region` is true) the test region.
pub fn command(program: impl AsRef<OsStr>, home: &Home, region: bool) -> Command {
    let mut cmd = Command::new(program);
    for (name, _) in std::env::vars_os() {
        if leaks(&name) {
            cmd.env_remove(name);
        }
    }
    cmd.env("HOME", home.path());
    for (name, value) in aws_env() {
        if region || name != "AWS_REGION" {
            cmd.env(name, value);
        }
    }
    cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
    cmd
}

/// `ssmconnect` with the test environment.
pub fn ssmconnect(home: &Home) -> Command {
    command(SSMCONNECT, home, true)
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

/// StartSession over raw HTTP (awsJson1.1) as the AWS CLI would send it; returns the body.
pub async fn start_session_raw(addr: SocketAddr, document: &str, parameters: serde_json::Value) -> serde_json::Value {
    let (status, body) = aws_call(
        addr,
        "StartSession",
        serde_json::json!({
            "Target": TARGET,
            "DocumentName": document,
            "Parameters": parameters,
        }),
    )
    .await;
    assert_eq!(status, 200, "StartSession failed: {body}");
    assert!(body.is_object(), "StartSession answered no JSON object: {body}");
    body
}

/// Whether every session the emulator has seen ends within `secs`.
pub async fn sessions_end(emu: &Emulator, secs: u64) -> bool {
    wait_until(Duration::from_secs(secs), || emu.sessions().iter().all(|s| s.ended)).await
}
