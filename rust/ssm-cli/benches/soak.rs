//! Wall-time soak of `ssmconnect forward` in smux mode (issue 12), against the emulator binary.
//!
//! It starts an echo server, the emulator (`ssm-emulator`, agent pacing as the real agent's
//! unless `--unpaced`) and a release `ssmconnect forward` to the echo server through it. Then,
//! for `--duration` seconds, busy and idle periods alternate; in busy periods `--connections`
//! workers each open a connection through the forward, send a random amount of pattern data in
//! random pieces (each once the one before is echoed), check every byte of the echo at its
//! offset, close, and start over. A
//! connection caught by an idle period stays open and silent until the next busy one. Every
//! `--cut-every` seconds the emulator cuts the session's socket (no close frame), so the helper
//! resumes the session (ResumeSession) with connections open. `--keepalive` announces agent
//! 3.1.1511.0, whose smux runs keepalive (NOPs every 10 s, §7.4); otherwise a current agent
//! without it.
//!
//! Reported: bytes moved, connections, errors (a connect failure, a short or differing echo,
//! 180 s without progress), the emulator's connections and cuts (resumes = connections - 1),
//! and the helper's RSS (VmRSS, Linux) at the start, at the end of every busy period and at
//! the end; as a table on stderr and as JSON with `--out`.
//!
//! Not a test: `cargo test` runs this target and it returns at once; `bench/soak.sh` or
//! `cargo bench -p ssm-cli --bench soak -- --duration 300` runs it (after
//! `cargo build --release -p ssm-emulator`).

mod common;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::Parser;
use common::{Child, EmulatorProc, TARGET, clean_command, control, echo_server, rss_kib};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::sync::watch;

/// An agent version whose smux runs keepalive (3.0.196.0 < v <= 3.1.1511.0, §5.5).
const KEEPALIVE_AGENT: &str = "3.1.1511.0";
/// A current agent: smux without keepalive.
const CURRENT_AGENT: &str = "3.3.2299.0";
/// The random block connection data is cut from.
const PATTERN_LEN: usize = 4 << 20;
/// A connection that moves nothing for this long (outside idle periods) counts as an error.
const STALL: Duration = Duration::from_secs(180);

/// Soak of a multiplexed port forward against the emulator.
#[derive(Parser, Debug, Clone)]
struct Args {
    /// Seconds of load (busy and idle periods); the last connections then finish.
    #[arg(long, default_value_t = 1800)]
    duration: u64,
    /// Concurrent connections in busy periods.
    #[arg(long, default_value_t = 200)]
    connections: usize,
    /// Seconds of each busy period.
    #[arg(long, default_value_t = 150)]
    busy: u64,
    /// Seconds of each idle period.
    #[arg(long, default_value_t = 90)]
    idle: u64,
    /// Seconds between socket cuts (0: none).
    #[arg(long, default_value_t = 180)]
    cut_every: u64,
    /// Largest amount one connection sends (and gets back).
    #[arg(long, default_value_t = 256 * 1024)]
    max_connection_bytes: usize,
    /// smux keepalive on (agent 3.1.1511.0); off otherwise (a current agent).
    #[arg(long)]
    keepalive: bool,
    /// Emulator agent without the real agent's 1 KiB-per-millisecond pacing.
    #[arg(long)]
    unpaced: bool,
    /// The emulator binary (default: `ssm-emulator` beside the helper being measured).
    #[arg(long)]
    emulator: Option<PathBuf>,
    /// The helper binary (default: the release `ssmconnect` cargo built for this bench).
    #[arg(long)]
    ssmconnect: Option<PathBuf>,
    /// Write the figures as JSON to this file.
    #[arg(long)]
    out: Option<PathBuf>,
    /// Seed of the connections' sizes and timings.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Passed by `cargo bench`; without it (under `cargo test`) nothing runs.
    #[arg(long, hide = true)]
    bench: bool,
}

/// Counters shared by the workers.
#[derive(Default)]
struct Counters {
    connections: AtomicU64,
    bytes_sent: AtomicU64,
    bytes_echoed: AtomicU64,
    errors: AtomicU64,
    held_over_idle: AtomicU64,
}

fn main() -> Result<()> {
    // `cargo test` runs this target too, with its own arguments (filters, --nocapture).
    common::bench_main::<Args, _>(
        "soak: a wall-time benchmark; run it with `cargo bench -p ssm-cli --bench soak` or bench/soak.sh",
        run,
    )
}

/// splitmix64, for sizes and timings.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

/// Waits while the load is in an idle period; false once the soak is over.
async fn await_busy(phase: &mut watch::Receiver<Phase>) -> bool {
    match phase.wait_for(|p| *p != Phase::Idle).await {
        Ok(p) => *p == Phase::Busy,
        Err(_) => false,
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Busy,
    Idle,
    Over,
}

/// One connection: `len` bytes of the pattern from `start`, sent in random pieces, each once the
/// one before is back, the echo checked at every offset. Writing pauses in idle periods, with
/// the connection left open.
async fn connection(
    addr: SocketAddr,
    pattern: Arc<Vec<u8>>,
    start: usize,
    len: usize,
    rng: &mut Rng,
    phase: &mut watch::Receiver<Phase>,
    counters: &Counters,
) -> Result<()> {
    let stream = tokio::time::timeout(Duration::from_secs(30), TcpStream::connect(addr))
        .await
        .context("connect timed out")??;
    stream.set_nodelay(true)?;
    counters.connections.fetch_add(1, Ordering::Relaxed);
    let (mut r, mut w) = stream.into_split();
    let reader_pattern = pattern.clone();
    let progress = Arc::new(AtomicU64::new(0));
    let reader_progress = progress.clone();
    let echoed = Arc::new(tokio::sync::Notify::new());
    let reader_echoed = echoed.clone();
    let reader = async move {
        let want = &reader_pattern[start..start + len];
        let mut got = 0usize;
        let mut buf = vec![0u8; 64 * 1024];
        while got < len {
            let n = r.read(&mut buf).await.context("reading the echo")?;
            if n == 0 {
                bail!("echo ended after {got} of {len} bytes");
            }
            if got + n > len {
                bail!("{} bytes echoed for {len} sent", got + n);
            }
            if buf[..n] != want[got..got + n] {
                bail!("echo differs within bytes {got}..{}", got + n);
            }
            got += n;
            reader_progress.store(got as u64, Ordering::Relaxed);
            reader_echoed.notify_one();
        }
        Ok::<_, anyhow::Error>(got)
    };
    let mut sizes: Vec<usize> = Vec::new();
    let mut left = len;
    while left > 0 {
        let n = (1 + rng.below(16 * 1024) as usize).min(left);
        sizes.push(n);
        left -= n;
    }
    let watch_phase = phase.clone();
    let writer = async {
        let mut off = start;
        let mut held = false;
        for n in sizes {
            // An idle period holds the connection open and silent; the soak's end does not.
            held |= *phase.borrow() == Phase::Idle;
            let _ = await_busy(phase).await;
            w.write_all(&pattern[off..off + n]).await.context("writing")?;
            counters.bytes_sent.fetch_add(n as u64, Ordering::Relaxed);
            off += n;
            // Request and response: the next piece once this one is back, so connections stay
            // open for a while (and some across idle periods and cuts).
            while progress.load(Ordering::Relaxed) < (off - start) as u64 {
                echoed.notified().await;
            }
        }
        if held {
            counters.held_over_idle.fetch_add(1, Ordering::Relaxed);
        }
        Ok::<_, anyhow::Error>(w)
    };
    // A stall is counted only while data is due: idle periods do not count against it.
    let watchdog = async {
        let mut last = (0u64, Instant::now());
        loop {
            tokio::time::sleep(Duration::from_secs(5)).await;
            let now = progress.load(Ordering::Relaxed);
            if now != last.0 || *watch_phase.borrow() == Phase::Idle {
                last = (now, Instant::now());
            } else if last.1.elapsed() > STALL {
                return now;
            }
        }
    };
    let (w, got) = tokio::select! {
        r = async { tokio::try_join!(writer, reader) } => r?,
        at = watchdog => bail!("no progress for {STALL:?} at {at} of {len} bytes"),
    };
    counters.bytes_echoed.fetch_add(got as u64, Ordering::Relaxed);
    drop(w);
    Ok(())
}

async fn worker(
    addr: SocketAddr,
    pattern: Arc<Vec<u8>>,
    seed: u64,
    max_len: usize,
    mut phase: watch::Receiver<Phase>,
    counters: Arc<Counters>,
) {
    let mut rng = Rng(seed);
    loop {
        if !await_busy(&mut phase).await {
            return;
        }
        let len = 1 + rng.below(max_len as u64) as usize;
        let start = rng.below((PATTERN_LEN - max_len) as u64) as usize;
        if let Err(e) = connection(addr, pattern.clone(), start, len, &mut rng, &mut phase, &counters).await {
            counters.errors.fetch_add(1, Ordering::Relaxed);
            eprintln!("soak: connection error: {e:#}");
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        tokio::time::sleep(Duration::from_millis(rng.below(500))).await;
    }
}

async fn run(args: Args) -> Result<()> {
    if args.max_connection_bytes == 0 || args.max_connection_bytes > PATTERN_LEN / 2 {
        bail!("--max-connection-bytes must be 1..={}", PATTERN_LEN / 2);
    }
    let helper = common::helper_path(args.ssmconnect.clone());
    let emulator_bin = common::emulator_path(args.emulator.clone(), &helper)?;
    let echo_port = echo_server().await?;

    // The emulator: its first stdout line says where it listens; it exits when stdin closes.
    let mut emu_args = vec![
        "--agent-version",
        if args.keepalive { KEEPALIVE_AGENT } else { CURRENT_AGENT },
    ];
    if args.unpaced {
        emu_args.push("--unpaced");
    }
    let emulator = EmulatorProc::start(&emulator_bin, &emu_args).await?;
    let api = emulator.api;
    let endpoint = emulator.endpoint.clone();

    // The helper, with test credentials and a HOME of its own.
    let home = tempfile::Builder::new().prefix("ssmconnect-soak-").tempdir()?;
    let mut cmd = clean_command(&helper, home.path());
    cmd.args(["--endpoint-url", &endpoint, "forward", TARGET])
        .arg(echo_port.to_string())
        .args(["--local-port", "0"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    let mut forward = Child::spawn(&mut cmd, "ssmconnect forward")?;
    let mut out = BufReader::new(forward.child.stdout.take().context("helper stdout")?).lines();
    let opened = tokio::time::timeout(Duration::from_secs(60), out.next_line())
        .await
        .context("the forward did not open")??
        .context("the helper exited")?;
    let port: u16 = opened
        .strip_prefix("Port ")
        .and_then(|r| r.split_once(' '))
        .and_then(|(p, _)| p.parse().ok())
        .with_context(|| format!("unexpected first line {opened:?}"))?;
    tokio::spawn(async move { while let Ok(Some(_)) = out.next_line().await {} });
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let pid = forward.pid;

    let mut pattern = vec![0u8; PATTERN_LEN];
    let mut rng = Rng(args.seed);
    for chunk in pattern.chunks_mut(8) {
        let v = rng.next().to_le_bytes();
        chunk.copy_from_slice(&v[..chunk.len()]);
    }
    let pattern = Arc::new(pattern);
    let counters = Arc::new(Counters::default());
    let (phase_tx, phase_rx) = watch::channel(Phase::Busy);

    let rss_start = rss_kib(pid);
    let started = Instant::now();
    eprintln!(
        "soak: {} s, {} connections, busy {} s / idle {} s, a cut every {} s, keepalive {}, helper pid {pid}, \
         RSS {rss_start} KiB",
        args.duration,
        args.connections,
        args.busy,
        args.idle,
        args.cut_every,
        if args.keepalive { "on" } else { "off" }
    );
    let workers: Vec<_> = (0..args.connections)
        .map(|i| {
            tokio::spawn(worker(
                addr,
                pattern.clone(),
                args.seed.wrapping_mul(1000).wrapping_add(i as u64),
                args.max_connection_bytes,
                phase_rx.clone(),
                counters.clone(),
            ))
        })
        .collect();

    // Cuts: each arms exactly one more (the emulator cuts a session at most max_cuts times, at
    // the next frame to the client once the socket has carried cut_after_frames).
    let cutter = (args.cut_every > 0).then(|| {
        let every = Duration::from_secs(args.cut_every);
        tokio::spawn(async move {
            let mut k = 0u64;
            loop {
                tokio::time::sleep(every).await;
                k += 1;
                let faults = format!("{{\"cut_after_frames\":1,\"max_cuts\":{k}}}");
                if let Err(e) = control(api, "POST", "/_emulator/faults", &faults).await {
                    eprintln!("soak: arming cut {k}: {e:#}");
                }
            }
        })
    });

    // Busy and idle periods; RSS sampled every 5 s and at the end of every busy period.
    let mut rss_after_busy = Vec::new();
    let mut rss_max = rss_start;
    let end = started + Duration::from_secs(args.duration);
    let mut busy = true;
    let mut phase_end = started + Duration::from_secs(args.busy);
    let mut last_print = Instant::now();
    while Instant::now() < end {
        tokio::time::sleep(Duration::from_secs(5).min(end.saturating_duration_since(Instant::now()))).await;
        rss_max = rss_max.max(rss_kib(pid));
        if Instant::now() >= phase_end.min(end) {
            if busy {
                rss_after_busy.push(rss_kib(pid));
            }
            busy = !busy;
            phase_end = Instant::now() + Duration::from_secs(if busy { args.busy } else { args.idle });
            let _ = phase_tx.send(if busy { Phase::Busy } else { Phase::Idle });
        }
        if last_print.elapsed() >= Duration::from_secs(60) {
            last_print = Instant::now();
            let stats = common::emulator_stats(api).await.unwrap_or_default();
            eprintln!(
                "soak: {:>5} s  {} connections  {} B echoed  {} errors  {} cuts  RSS {} KiB",
                started.elapsed().as_secs(),
                counters.connections.load(Ordering::Relaxed),
                counters.bytes_echoed.load(Ordering::Relaxed),
                counters.errors.load(Ordering::Relaxed),
                stats["sockets_cut"],
                rss_kib(pid)
            );
        }
    }
    if let Some(c) = cutter {
        c.abort();
    }
    // The end: no new connections; the open ones finish.
    let _ = phase_tx.send(Phase::Over);
    let drain = tokio::time::timeout(Duration::from_secs(600), async {
        for w in workers {
            let _ = w.await;
        }
    })
    .await;
    let load_secs = started.elapsed().as_secs_f64();
    let rss_end = rss_kib(pid);
    let stats = emulator.stats().await?;
    let helper_alive = forward.child.try_wait()?.is_none();

    // The helper stops on SIGINT with exit 0 and ends the session.
    forward.signal(libc::SIGINT);
    let exit = tokio::time::timeout(Duration::from_secs(30), forward.child.wait()).await;
    let exit_code = match exit {
        Ok(Ok(s)) => s.code(),
        _ => None,
    };
    emulator.stop().await;

    let c = &counters;
    let figures = serde_json::json!({
        "duration_s": args.duration,
        "load_s": load_secs,
        "keepalive": args.keepalive,
        "agent_version": if args.keepalive { KEEPALIVE_AGENT } else { CURRENT_AGENT },
        "paced_agent": !args.unpaced,
        "concurrent_connections": args.connections,
        "busy_s": args.busy,
        "idle_s": args.idle,
        "cut_every_s": args.cut_every,
        "connections": c.connections.load(Ordering::Relaxed),
        "connections_held_open_over_idle": c.held_over_idle.load(Ordering::Relaxed),
        "bytes_sent": c.bytes_sent.load(Ordering::Relaxed),
        "bytes_echoed": c.bytes_echoed.load(Ordering::Relaxed),
        "errors": c.errors.load(Ordering::Relaxed),
        "workers_finished": drain.is_ok(),
        "emulator": stats,
        "resumes": stats["connections"].as_u64().unwrap_or(1).saturating_sub(1),
        "rss_kib": { "start": rss_start, "after_busy_periods": rss_after_busy, "max": rss_max, "end": rss_end },
        "helper_alive_at_end": helper_alive,
        "helper_exit_code_after_sigint": exit_code,
    });
    eprintln!("{}", serde_json::to_string_pretty(&figures)?);
    if let Some(path) = &args.out {
        std::fs::write(path, format!("{}\n", serde_json::to_string_pretty(&figures)?))
            .with_context(|| format!("writing {}", path.display()))?;
    }
    let failed = c.errors.load(Ordering::Relaxed) > 0
        || drain.is_err()
        || !helper_alive
        || exit_code != Some(0)
        || c.bytes_sent.load(Ordering::Relaxed) != c.bytes_echoed.load(Ordering::Relaxed);
    if failed {
        bail!("the soak saw errors (figures above)");
    }
    Ok(())
}
