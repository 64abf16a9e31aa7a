//! What the wall-time benchmarks (soak, compare) share: the emulator binary and the helper as
//! child processes killed with their group, the emulator's control routes, a loopback echo
//! server, and what /proc says about a process (RSS, peak RSS, CPU time).
#![allow(dead_code)]

pub mod figures;

use figures::{cpu_seconds_between, parse_schedstat_ns, parse_stat_cpu_ticks, parse_status_kib};

use std::ffi::OsStr;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::process::{ChildStdin, Command};

/// The target every bench session goes to (the emulator takes any `i-…` id).
pub const TARGET: &str = "i-0123456789abcdef0";

/// Whether this process was started by `cargo bench` (which passes `--bench`); under
/// `cargo test` a bench target is run too, and must then return at once.
pub fn under_cargo_bench() -> bool {
    std::env::args().any(|a| a == "--bench")
}

/// A bench target's `main`: under `cargo test` it says how to run it (`hint`) and returns;
/// under `cargo bench` it parses its arguments and runs `run` on a two-worker runtime.
pub fn bench_main<A, F>(hint: &str, run: impl FnOnce(A) -> F) -> Result<()>
where
    A: clap::Parser,
    F: std::future::Future<Output = Result<()>>,
{
    if !under_cargo_bench() {
        eprintln!("{hint}");
        return Ok(());
    }
    let args = A::parse();
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?
        .block_on(run(args))
}

/// The release helper cargo built beside this bench, or `path`.
pub fn helper_path(path: Option<PathBuf>) -> PathBuf {
    path.unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_ssmconnect")))
}

/// The emulator binary: `path`, or `ssm-emulator` beside the helper; fails when it is not there.
pub fn emulator_path(path: Option<PathBuf>, helper: &Path) -> Result<PathBuf> {
    let p = path.unwrap_or_else(|| helper.with_file_name("ssm-emulator"));
    if !p.is_file() {
        bail!(
            "no emulator at {} (build it: cargo build --release -p ssm-emulator)",
            p.display()
        );
    }
    Ok(p)
}

/// A child in its own process group, killed with its group when dropped.
pub struct Child {
    /// The child itself.
    pub child: tokio::process::Child,
    /// Its process id.
    pub pid: u32,
}

impl Child {
    /// Starts `cmd` as the leader of a new process group.
    pub fn spawn(cmd: &mut Command, what: &str) -> Result<Self> {
        cmd.process_group(0).kill_on_drop(true);
        let child = cmd.spawn().with_context(|| format!("starting {what}"))?;
        let pid = child.id().context("child pid")?;
        Ok(Self { child, pid })
    }

    /// Sends `sig` to the child.
    pub fn signal(&self, sig: i32) {
        // SAFETY: kill(2) has no memory effects; the pid is our own child.
        unsafe { libc::kill(self.pid as i32, sig) };
    }
}

impl Drop for Child {
    fn drop(&mut self) {
        // SAFETY: as above; a negative pid addresses the group this child leads.
        unsafe { libc::kill(-(self.pid as i32), libc::SIGKILL) };
    }
}

/// The emulator binary running: where it listens, and its process.
pub struct EmulatorProc {
    /// The process; it exits when its stdin closes.
    pub proc: Child,
    /// Closing it stops the emulator.
    pub stdin: Option<ChildStdin>,
    /// The SSM API endpoint (`http://127.0.0.1:port`).
    pub endpoint: String,
    /// The API's address, for the control routes.
    pub api: SocketAddr,
}

impl EmulatorProc {
    /// Starts `bin` with `args`; waits for the JSON line with its endpoints.
    pub async fn start(bin: &Path, args: &[&str]) -> Result<Self> {
        let mut cmd = Command::new(bin);
        cmd.args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        let mut proc = Child::spawn(&mut cmd, "the emulator")?;
        let stdin = proc.child.stdin.take();
        let mut lines = BufReader::new(proc.child.stdout.take().context("emulator stdout")?).lines();
        let first = tokio::time::timeout(Duration::from_secs(30), lines.next_line())
            .await
            .context("the emulator did not start")??
            .context("the emulator exited")?;
        let info: serde_json::Value = serde_json::from_str(&first)?;
        let port = info["port"].as_u64().context("emulator port")? as u16;
        let endpoint = info["endpoint"].as_str().context("emulator endpoint")?.to_owned();
        Ok(Self {
            proc,
            stdin,
            endpoint,
            api: SocketAddr::from(([127, 0, 0, 1], port)),
        })
    }

    /// Its counters (`GET /_emulator/stats`).
    pub async fn stats(&self) -> Result<serde_json::Value> {
        emulator_stats(self.api).await
    }

    /// Closes its stdin and waits (10 s at most) for it to exit.
    pub async fn stop(mut self) {
        drop(self.stdin.take());
        let _ = tokio::time::timeout(Duration::from_secs(10), self.proc.child.wait()).await;
    }
}

/// Whether `bin --help` (or `bin <sub> --help`) mentions `flag`: for options other branches add.
pub fn supports_flag(bin: &Path, sub: &[&str], flag: &str) -> bool {
    std::process::Command::new(bin)
        .args(sub)
        .arg("--help")
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .is_ok_and(|o| {
            String::from_utf8_lossy(&o.stdout)
                .split(|c: char| c.is_whitespace() || c == ',' || c == '=')
                .any(|w| w == flag)
        })
}

/// A command with no inherited AWS or SSMConnect settings, the given HOME and the emulator's
/// dummy credentials and region.
pub fn clean_command(program: impl AsRef<OsStr>, home: &Path) -> Command {
    let mut cmd = Command::new(program);
    for (name, _) in std::env::vars_os() {
        let n = name.to_string_lossy();
        if n.starts_with("AWS_") || n.starts_with("SSMCONNECT_") {
            cmd.env_remove(&name);
        }
    }
    cmd.env("HOME", home)
        .env("AWS_ACCESS_KEY_ID", "AKIDEXAMPLE")
        .env("AWS_SECRET_ACCESS_KEY", "secret")
        .env("AWS_REGION", "us-east-1")
        .env("AWS_DEFAULT_REGION", "us-east-1")
        .env("AWS_EC2_METADATA_DISABLED", "true");
    cmd
}

/// One request to the emulator's control routes over plain HTTP; returns the body.
pub async fn control(addr: SocketAddr, method: &str, path: &str, body: &str) -> Result<String> {
    let mut s = TcpStream::connect(addr).await?;
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\
         Connection: close\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).await?;
    let mut resp = String::new();
    tokio::time::timeout(Duration::from_secs(10), s.read_to_string(&mut resp)).await??;
    let (head, body) = resp.split_once("\r\n\r\n").context("not an HTTP response")?;
    if !head.starts_with("HTTP/1.1 2") {
        bail!("{method} {path}: {head}");
    }
    Ok(body.to_owned())
}

/// The emulator's counters.
pub async fn emulator_stats(addr: SocketAddr) -> Result<serde_json::Value> {
    Ok(serde_json::from_str(
        &control(addr, "GET", "/_emulator/stats", "").await?,
    )?)
}

/// A loopback echo server (TCP_NODELAY on each connection), the forward's destination.
pub async fn echo_server() -> Result<u16> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let port = listener.local_addr()?.port();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            let _ = s.set_nodelay(true);
            tokio::spawn(async move {
                let (mut r, mut w) = s.split();
                let _ = tokio::io::copy(&mut r, &mut w).await;
            });
        }
    });
    Ok(port)
}

/// A field of /proc/<pid>/status in KiB (`VmRSS`, `VmHWM`); `None` when the process is gone
/// or /proc is not there.
pub fn status_kib(pid: u32, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    parse_status_kib(&status, field)
}

/// Resident set size of `pid` in KiB (Linux); 0 where /proc is not there.
pub fn rss_kib(pid: u32) -> u64 {
    status_kib(pid, "VmRSS").unwrap_or(0)
}

/// Seconds per clock tick of /proc/<pid>/stat.
fn tick_seconds() -> f64 {
    // SAFETY: sysconf has no memory effects.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    1.0 / ticks.max(1.0)
}

/// CPU seconds (user + system) `pid` has used so far (/proc/<pid>/stat, in clock ticks);
/// `None` when gone.
pub fn cpu_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    parse_stat_cpu_ticks(&stat).map(|t| t as f64 * tick_seconds())
}

/// What a process has run so far, to take the CPU time of a stretch of its work
/// ([`CpuSample::seconds_since`]): its utime + stime and each thread's run time in ns.
#[derive(Debug, Clone)]
pub struct CpuSample {
    ticks_s: f64,
    threads: std::collections::BTreeMap<u32, u64>,
}

impl CpuSample {
    /// `None` when the process is gone.
    pub fn take(pid: u32) -> Option<Self> {
        let mut threads = std::collections::BTreeMap::new();
        if let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/task")) {
            for e in dir.flatten() {
                let Some(tid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
                    continue;
                };
                // A thread that ends between the listing and the read is left out; the
                // ticks then decide (cpu_seconds_between).
                if let Some(ns) = std::fs::read_to_string(e.path().join("schedstat"))
                    .ok()
                    .as_deref()
                    .and_then(parse_schedstat_ns)
                {
                    threads.insert(tid, ns);
                }
            }
        }
        Some(Self {
            ticks_s: cpu_seconds(pid)?,
            threads,
        })
    }

    /// CPU seconds used from `earlier` to this sample: to the nanosecond from its threads' run
    /// times when they account for it, else in clock ticks (see `cpu_seconds_between`).
    pub fn seconds_since(&self, earlier: &Self) -> f64 {
        cpu_seconds_between(
            (earlier.ticks_s, &earlier.threads),
            (self.ticks_s, &self.threads),
            tick_seconds(),
        )
    }
}

/// The parent pid of `pid` (field 4 of /proc/<pid>/stat).
pub fn parent_pid(pid: u32) -> Option<u32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after = &stat[stat.rfind(')')? + 1..];
    after.split_whitespace().nth(1)?.parse().ok()
}

/// A process below `ancestor` whose executable's file name is `name` (the plugin under the
/// AWS CLI); `None` when there is none yet.
pub fn descendant_named(ancestor: u32, name: &str) -> Option<u32> {
    let entries = std::fs::read_dir("/proc").ok()?;
    for e in entries.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        let exe = std::fs::read_link(format!("/proc/{pid}/exe")).ok();
        if exe.as_deref().and_then(Path::file_name) != Some(OsStr::new(name)) {
            continue;
        }
        let mut p = pid;
        for _ in 0..16 {
            match parent_pid(p) {
                Some(pp) if pp == ancestor => return Some(pid),
                Some(pp) if pp > 1 => p = pp,
                _ => break,
            }
        }
    }
    None
}
