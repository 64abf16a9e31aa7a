//! ssmconnect against the official `session-manager-plugin` (issue 13), both against the
//! emulator binary, in the same run, alternating the clients run by run.
//!
//! Each run of a client starts its own emulators (the paced agent; `--unpaced`; with
//! `--mgs-nodelay` when the emulator has it) and forwards to a loopback server that echoes,
//! sends (download) or takes (upload) data; every transfer is checked by length and SHA-256.
//! ssmconnect is `ssmconnect forward` and `ssmconnect shell` (release); the plugin is driven by
//! the AWS CLI (`aws ssm start-session --endpoint-url <emulator> …`) with the given binary first
//! on PATH as `session-manager-plugin`, and its CPU time and memory are the plugin process's,
//! not the CLI's.
//!
//! Output: a markdown table (stderr and `compare-<time>.md`), the runs as JSON
//! (`compare-<time>.json`) and a chart (`compare-<time>.svg`), each also as `compare-latest.*`,
//! in `--out-dir`. bench/compare.sh (or `build.ps1 -Task Bench`) builds and runs it.

mod common;

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::Parser;
use common::figures::{Better, Expected, Row, Side, markdown_table, number};
use common::{Child, CpuSample, EmulatorProc, TARGET, clean_command, descendant_named, status_kib};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const MIB: u64 = 1 << 20;
/// The data every transfer cycles through: a prime-ish length, so a shifted or lost piece
/// changes the hash even where whole blocks repeat.
const BLOCK_LEN: usize = (1 << 20) + 7;
/// The plugin's file name under the AWS CLI.
const PLUGIN_NAME: &str = "session-manager-plugin";

/// ssmconnect against the official plugin, against the emulator.
#[derive(Parser, Debug, Clone)]
struct Args {
    /// The official session-manager-plugin binary to compare with (none: ssmconnect alone).
    #[arg(long, env = "SSMCONNECT_BENCH_PLUGIN")]
    plugin: Option<PathBuf>,
    /// Runs of each client (at least 3 for a median worth the name).
    #[arg(long, default_value_t = 3)]
    runs: usize,
    /// 1-byte echoes per run.
    #[arg(long, default_value_t = 200)]
    echoes: usize,
    /// Shell keystrokes per run.
    #[arg(long, default_value_t = 100)]
    keystrokes: usize,
    /// MiB of each paced download (shared among its connections).
    #[arg(long, default_value_t = 16)]
    paced_mib: u64,
    /// MiB of the unpaced download.
    #[arg(long, default_value_t = 100)]
    unpaced_mib: u64,
    /// MiB of the upload.
    #[arg(long, default_value_t = 32)]
    upload_mib: u64,
    /// Skip the shell keystroke figure.
    #[arg(long)]
    no_shell: bool,
    /// The emulator binary (default: `ssm-emulator` beside the helper).
    #[arg(long)]
    emulator: Option<PathBuf>,
    /// The helper binary (default: the release `ssmconnect` cargo built for this bench).
    #[arg(long)]
    ssmconnect: Option<PathBuf>,
    /// Where the table, JSON and chart go.
    #[arg(long, default_value = concat!(env!("CARGO_MANIFEST_DIR"), "/../../bench/results"))]
    out_dir: PathBuf,
    /// Passed by `cargo bench`; without it (under `cargo test`) nothing runs.
    #[arg(long, hide = true)]
    bench: bool,
}

fn main() -> Result<()> {
    // The floor's relays are this program too (see `relay`).
    let argv: Vec<String> = std::env::args().collect();
    if let [_, flag, port] = argv.as_slice()
        && flag == RELAY_FLAG
    {
        return relay(port.parse().context("relay: the port to relay to")?);
    }
    // `cargo test` runs this target too, with its own arguments (filters, --nocapture).
    common::bench_main::<Args, _>("compare: a wall-time benchmark; run it with bench/compare.sh", run)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Client {
    Ssmconnect,
    Plugin,
}

impl Client {
    fn name(self) -> &'static str {
        match self {
            Client::Ssmconnect => "ssmconnect",
            Client::Plugin => "plugin",
        }
    }
}

/// What one figure of one run came to.
#[derive(Debug, Clone)]
enum Outcome {
    Value(f64),
    /// Not measured, and not a failure (a flag not there yet, no plugin).
    NotRun(String),
    /// Measured and failed (a transfer that did not check out, a client that did not start).
    Failed(String),
}

/// Everything the bench needs in every run.
struct Ctx {
    args: Args,
    helper: PathBuf,
    emulator: PathBuf,
    /// A directory with `session-manager-plugin` linked to the given plugin.
    plugin_dir: Option<tempfile::TempDir>,
    /// The plugin's executable file name as /proc shows it.
    plugin_exe_name: String,
    aws: Option<PathBuf>,
    server: u16,
    block: Arc<Vec<u8>>,
    expected: BTreeMap<u64, Expected>,
    nodelay: bool,
    per_connection: bool,
}

type Figures = BTreeMap<&'static str, Outcome>;

/// The figures, in table order: key, label, which way is better.
const FIGURES: &[(&str, &str, Better)] = &[
    (
        "echo_nagle_on",
        "1-byte echo round trip, emulator Nagle on (ms)",
        Better::Lower,
    ),
    (
        "echo_nagle_off",
        "1-byte echo round trip, emulator Nagle off (ms)",
        Better::Lower,
    ),
    (
        "echo_nagle_off_b2b",
        "… back to back, each byte sent when the last came back (ms)",
        Better::Lower,
    ),
    (
        "echo_floor_direct",
        "… floor: the same echo straight to the loopback server (ms)",
        Better::Lower,
    ),
    (
        "echo_floor_relays",
        "… floor: through two plain TCP relays in place of client and agent (ms)",
        Better::Lower,
    ),
    (
        "port_ready",
        "process start to first echo through the local port (s)",
        Better::Lower,
    ),
    ("dl_paced_1", "download paced, 1 connection (MB/s)", Better::Higher),
    ("dl_paced_1_cpu", "… client CPU s per 100 MiB", Better::Lower),
    ("dl_paced_1_emu", "… emulator CPU share (% of a core)", Better::Lower),
    (
        "dl_paced_floor_cpu",
        "… floor: CPU s per 100 MiB of a relay that only copies 1 KiB each ms",
        Better::Lower,
    ),
    (
        "dl_paced_4",
        "download paced, 4 connections at once (MB/s)",
        Better::Higher,
    ),
    ("dl_paced_4_cpu", "… client CPU s per 100 MiB", Better::Lower),
    ("dl_paced_4_emu", "… emulator CPU share (% of a core)", Better::Lower),
    (
        "dl_paced_8",
        "download paced, 8 connections at once; ssmconnect: a session per connection (MB/s)",
        Better::Higher,
    ),
    ("dl_paced_8_cpu", "… client CPU s per 100 MiB", Better::Lower),
    ("dl_paced_8_emu", "… emulator CPU share (% of a core)", Better::Lower),
    ("dl_unpaced_1", "download unpaced, 1 connection (MB/s)", Better::Higher),
    ("dl_unpaced_1_cpu", "… client CPU s per 100 MiB", Better::Lower),
    ("dl_unpaced_1_emu", "… emulator CPU share (% of a core)", Better::Lower),
    ("ul_1", "upload, 1 connection (MB/s)", Better::Higher),
    ("ul_1_cpu", "… client CPU s per 100 MiB", Better::Lower),
    ("ul_1_emu", "… emulator CPU share (% of a core)", Better::Lower),
    (
        "peak_rss",
        "peak RSS of the forwarding process (MiB, VmHWM)",
        Better::Lower,
    ),
    (
        "shell_keystroke",
        "shell keystroke echo through a pty (ms)",
        Better::Lower,
    ),
];

async fn run(args: Args) -> Result<()> {
    if args.runs == 0 || args.echoes == 0 || args.keystrokes == 0 {
        bail!("--runs, --echoes and --keystrokes must be at least 1");
    }
    let started = Instant::now();
    let helper = common::helper_path(args.ssmconnect.clone());
    let emulator = common::emulator_path(args.emulator.clone(), &helper)?;
    let nodelay = common::supports_flag(&emulator, &[], "--mgs-nodelay");
    let per_connection = common::supports_flag(&helper, &["forward"], "--session-per-connection")
        && common::supports_flag(&helper, &["forward"], "--warm-sessions");

    let (plugin_dir, plugin_exe_name, aws) = match &args.plugin {
        Some(p) => {
            let p = std::fs::canonicalize(p).with_context(|| format!("no plugin at {}", p.display()))?;
            let aws = which("aws").context("the plugin is driven by the AWS CLI, and `aws` is not on PATH")?;
            let dir = tempfile::Builder::new().prefix("ssmconnect-bench-plugin-").tempdir()?;
            std::os::unix::fs::symlink(&p, dir.path().join(PLUGIN_NAME))?;
            let name = p
                .file_name()
                .context("plugin file name")?
                .to_string_lossy()
                .into_owned();
            (Some(dir), name, Some(aws))
        }
        None => (None, String::new(), None),
    };

    let mut block = vec![0u8; BLOCK_LEN];
    let mut rng = 0x5eed_u64;
    for chunk in block.chunks_mut(8) {
        rng = rng.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = rng;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        chunk.copy_from_slice(&z.to_le_bytes()[..chunk.len()]);
    }
    let block = Arc::new(block);
    let mut expected = BTreeMap::new();
    for mib in [args.paced_mib, args.unpaced_mib, args.upload_mib] {
        for conns in [1, 4, 8] {
            let len = mib * MIB / conns;
            expected.entry(len).or_insert_with(|| expected_of(&block, len));
        }
    }
    let server = data_server(block.clone()).await?;

    let ctx = Ctx {
        args: args.clone(),
        helper,
        emulator,
        plugin_dir,
        plugin_exe_name,
        aws,
        server,
        block,
        expected,
        nodelay,
        per_connection,
    };
    let clients: Vec<Client> = if ctx.plugin_dir.is_some() {
        vec![Client::Ssmconnect, Client::Plugin]
    } else {
        vec![Client::Ssmconnect]
    };
    eprintln!(
        "compare: {} runs of {}; emulator --mgs-nodelay: {}; forward --session-per-connection: {}",
        args.runs,
        clients.iter().map(|c| c.name()).collect::<Vec<_>>().join(" and "),
        if nodelay { "yes" } else { "not yet" },
        if per_connection { "yes" } else { "not yet" },
    );

    let mut results: BTreeMap<&'static str, Vec<Figures>> = BTreeMap::new();
    for run in 0..args.runs {
        // Alternate which client goes first, so neither always runs on a cooler machine.
        let mut order = clients.clone();
        if run % 2 == 1 {
            order.reverse();
        }
        for client in order {
            let t = Instant::now();
            eprintln!("compare: run {} of {}: {}", run + 1, args.runs, client.name());
            let figures = client_run(&ctx, client).await;
            for (k, v) in &figures {
                eprintln!("compare:   {k}: {v:?}");
            }
            eprintln!("compare:   {:.0} s", t.elapsed().as_secs_f64());
            results.entry(client.name()).or_default().push(figures);
        }
    }

    let rows: Vec<Row> = FIGURES
        .iter()
        .map(|(key, label, better)| Row {
            figure: label.to_string(),
            better: *better,
            ssmconnect: side(results.get("ssmconnect"), key, "–"),
            plugin: side(results.get("plugin"), key, "no plugin given"),
        })
        .collect();
    let failures: Vec<String> = results
        .iter()
        .flat_map(|(client, runs)| {
            runs.iter().flat_map(move |f| {
                f.iter().filter_map(move |(k, o)| match o {
                    Outcome::Failed(why) => Some(format!("{client} {k}: {why}")),
                    _ => None,
                })
            })
        })
        .collect();

    let table = markdown_table(&rows);
    let elapsed = started.elapsed().as_secs_f64();
    let stamp = utc_stamp();
    let notes = notes(&ctx, elapsed);
    eprintln!("\n{table}\n{notes}");
    std::fs::create_dir_all(&ctx.args.out_dir)?;
    let out = |ext: &str| ctx.args.out_dir.join(format!("compare-{stamp}.{ext}"));
    let json = serde_json::json!({
        "date_utc": stamp,
        "wall_time_s": elapsed,
        "machine": { "cpus": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
                     "kernel": std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default().trim() },
        "settings": {
            "runs": args.runs, "echoes": args.echoes, "keystrokes": args.keystrokes,
            "paced_mib": args.paced_mib, "unpaced_mib": args.unpaced_mib, "upload_mib": args.upload_mib,
            "plugin": ctx.plugin_dir.is_some(),
            "emulator_mgs_nodelay": nodelay, "forward_session_per_connection": per_connection,
        },
        "units": { "MB": "10^6 bytes", "MiB": "2^20 bytes" },
        "rows": rows,
        "failures": failures,
    });
    let md = format!("{table}\n{notes}\n");
    for (ext, text) in [
        ("json", format!("{}\n", serde_json::to_string_pretty(&json)?)),
        ("md", md),
    ] {
        std::fs::write(out(ext), &text)?;
        std::fs::write(ctx.args.out_dir.join(format!("compare-latest.{ext}")), &text)?;
    }
    chart(&out("svg"), &rows, &stamp)?;
    std::fs::copy(out("svg"), ctx.args.out_dir.join("compare-latest.svg"))?;
    eprintln!("compare: {} (and compare-latest.*)", out("json").display());
    if !failures.is_empty() {
        bail!("{} measurements failed:\n{}", failures.len(), failures.join("\n"));
    }
    Ok(())
}

/// One client's values of `key` over the runs.
fn side(runs: Option<&Vec<Figures>>, key: &str, absent: &str) -> Side {
    let Some(runs) = runs else {
        return Side {
            runs: vec![],
            not_run: Some(absent.to_owned()),
            failed: vec![],
        };
    };
    let mut s = Side::default();
    for f in runs {
        match f.get(key) {
            Some(Outcome::Value(v)) => s.runs.push(*v),
            Some(Outcome::NotRun(why)) => s.not_run = Some(why.clone()),
            Some(Outcome::Failed(why)) => s.failed.push(why.clone()),
            None => s.not_run = Some("not measured".to_owned()),
        }
    }
    s
}

fn notes(ctx: &Ctx, elapsed: f64) -> String {
    let a = &ctx.args;
    format!(
        "Medians over {} runs per client (n = runs measured); echo: median of {} round trips per run, {} ms apart (back to back: none); \
         keystroke: median of {} per run. Paced download: {} MiB per run, split evenly among its connections; \
         unpaced download {} MiB; upload {} MiB. MB/s = 10^6 bytes/s. CPU: the forwarding process's \
         run time during the transfer, its threads' to the nanosecond (for the plugin the session-manager-plugin process, not the AWS CLI), \
         per 100 MiB moved; its floor is a relay process's CPU carrying half the paced download's bytes, \
         1 KiB each millisecond. Port ready includes the AWS CLI's own start for the plugin. Wall time {:.0} s.",
        a.runs,
        a.echoes,
        KEYSTROKE_GAP.as_millis(),
        a.keystrokes,
        a.paced_mib,
        a.unpaced_mib,
        a.upload_mib,
        elapsed
    )
}

fn expected_of(block: &[u8], len: u64) -> Expected {
    let mut h = Sha256::new();
    let mut left = len as usize;
    while left > 0 {
        let n = left.min(block.len());
        h.update(&block[..n]);
        left -= n;
    }
    Expected {
        len,
        sha256: hex(&h.finalize()),
    }
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|b| format!("{b:02x}")).collect()
}

fn which(program: &str) -> Option<PathBuf> {
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|d| d.join(program))
        .find(|p| p.is_file())
}

/// `YYYYmmddTHHMMSSZ`, from the system clock.
fn utc_stamp() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0) as i64;
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}{m:02}{d:02}T{:02}{:02}{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

// ---------------------------------------------------------------------------------------------
// The destination: one loopback server for all figures. The first byte says what a connection
// is for: `E` echoes (the `E` too), `D` + u64 length sends that many bytes of the block cycle,
// `U` + u64 length takes that many and answers with their SHA-256 and count.

async fn data_server(block: Arc<Vec<u8>>) -> Result<u16> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let port = listener.local_addr()?.port();
    tokio::spawn(async move {
        while let Ok((s, _)) = listener.accept().await {
            let _ = s.set_nodelay(true);
            let block = block.clone();
            tokio::spawn(async move {
                let _ = serve(s, &block).await;
            });
        }
    });
    Ok(port)
}

async fn serve(mut s: TcpStream, block: &[u8]) -> Result<()> {
    let op = s.read_u8().await?;
    match op {
        b'E' => {
            s.write_all(b"E").await?;
            let (mut r, mut w) = s.split();
            tokio::io::copy(&mut r, &mut w).await?;
        }
        b'D' => {
            let mut left = s.read_u64().await? as usize;
            while left > 0 {
                let n = left.min(block.len());
                s.write_all(&block[..n]).await?;
                left -= n;
            }
            s.flush().await?;
            // Let the client close first: an early close could cut the tail in some clients.
            let mut rest = [0u8; 64];
            let _ = tokio::time::timeout(Duration::from_secs(60), s.read(&mut rest)).await;
        }
        b'U' => {
            let len = s.read_u64().await?;
            let mut h = Sha256::new();
            let mut got = 0u64;
            let mut buf = vec![0u8; 256 * 1024];
            while got < len {
                let want = buf.len().min((len - got) as usize);
                let n = s.read(&mut buf[..want]).await?;
                if n == 0 {
                    break;
                }
                h.update(&buf[..n]);
                got += n as u64;
            }
            s.write_all(&h.finalize()).await?;
            s.write_u64(got).await?;
            let mut rest = [0u8; 64];
            let _ = tokio::time::timeout(Duration::from_secs(60), s.read(&mut rest)).await;
        }
        _ => bail!("unknown op {op}"),
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// The echo's floor: relays that copy bytes and do nothing else, each a process of its own like a
// client and an agent, with blocking sockets (a thread per direction: the least work a wake-up
// can cost).

/// `compare --relay-to PORT` relays every connection to 127.0.0.1:PORT and prints its own port.
const RELAY_FLAG: &str = "--relay-to";

fn relay(to: u16) -> Result<()> {
    use std::io::Write;
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    println!("{}", listener.local_addr()?.port());
    std::io::stdout().flush()?;
    // Ends with the bench: its stdin is the bench's pipe.
    std::thread::spawn(|| {
        let _ = std::io::copy(&mut std::io::stdin(), &mut std::io::sink());
        std::process::exit(0);
    });
    for near in listener.incoming() {
        let near = near?;
        let far = std::net::TcpStream::connect(("127.0.0.1", to))?;
        for s in [&near, &far] {
            s.set_nodelay(true)?;
        }
        for (mut from, mut to) in [(near.try_clone()?, far.try_clone()?), (far, near)] {
            std::thread::spawn(move || {
                let _ = std::io::copy(&mut from, &mut to);
                let _ = to.shutdown(std::net::Shutdown::Write);
            });
        }
    }
    Ok(())
}

/// Starts a relay to `to`; returns it and the port it listens on.
async fn start_relay(to: u16) -> Result<(Child, u16)> {
    let mut cmd = tokio::process::Command::new(std::env::current_exe()?);
    cmd.args([RELAY_FLAG, &to.to_string()])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped());
    let mut proc = Child::spawn(&mut cmd, "a relay")?;
    let out = proc.child.stdout.take().context("relay stdout")?;
    let mut line = String::new();
    tokio::io::AsyncBufReadExt::read_line(&mut tokio::io::BufReader::new(out), &mut line).await?;
    let port = line.trim().parse().with_context(|| format!("relay said {line:?}"))?;
    Ok((proc, port))
}

/// The floor under a paced download's CPU: what a relay process (see `relay`) spends per
/// 100 MiB carrying `len` bytes that arrive as the paced agent sends them, 1 KiB and then a
/// millisecond's pause. Like a client, it wakes for every piece, reads it and writes it on; it
/// does nothing else (no frames, no digests, no acks).
async fn paced_floor_cpu(ctx: &Ctx, len: u64) -> Result<f64> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    let source_port = listener.local_addr()?.port();
    let block = ctx.block.clone();
    // A thread of its own: std's sleep ends within tens of microseconds of a millisecond, where
    // tokio's timer rounds up to the next whole millisecond.
    let source = std::thread::spawn(move || -> std::io::Result<()> {
        let (mut s, _) = listener.accept()?;
        s.set_nodelay(true)?;
        let mut op = [0u8; 9];
        s.read_exact(&mut op)?;
        let [b'D', n @ ..] = op else {
            return Err(std::io::Error::other("the paced source takes downloads only"));
        };
        let mut left = u64::from_be_bytes(n) as usize;
        let mut at = 0;
        while left > 0 {
            let n = left.min(PACED_PIECE).min(block.len() - at);
            s.write_all(&block[at..at + n])?;
            at = (at + n) % block.len();
            left -= n;
            std::thread::sleep(Duration::from_millis(1));
        }
        // The reader closes first (as with `serve`).
        let _ = s.read(&mut op);
        Ok(())
    });
    let (relay, port) = start_relay(source_port).await?;
    let cpu0 = CpuSample::take(relay.pid).context("the relay is gone")?;
    let moved = transfer(port, false, expected_of(&ctx.block, len), ctx.block.clone()).await;
    let cpu = CpuSample::take(relay.pid)
        .context("the relay is gone")?
        .seconds_since(&cpu0);
    drop(relay);
    // Not joined after a failure: the source may still wait for a connection that never came
    // (it ends with the bench). After a success it has sent everything and sees the close.
    moved?;
    tokio::task::spawn_blocking(move || source.join())
        .await?
        .map_err(|_| anyhow::anyhow!("the paced source panicked"))??;
    Ok(cpu / (len as f64 / (100.0 * MIB as f64)))
}

/// What the paced agent reads from its destination and sends at a time, a millisecond apart
/// (as the emulator does; see its crate documentation).
const PACED_PIECE: usize = 1024;

// ---------------------------------------------------------------------------------------------
// Forwards.

/// A running forward: its process (the AWS CLI for the plugin) and the process that forwards.
struct Forward {
    _proc: Child,
    _home: tempfile::TempDir,
    /// The forwarding process: ssmconnect, or the plugin under the CLI.
    pid: u32,
    port: u16,
    /// Seconds from spawning to the first echo through the local port.
    ready_s: f64,
}

fn free_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

fn plugin_path_env(ctx: &Ctx) -> Result<std::ffi::OsString> {
    let dir = ctx.plugin_dir.as_ref().context("no plugin")?;
    let mut parts = vec![dir.path().to_path_buf()];
    if let Some(p) = std::env::var_os("PATH") {
        parts.extend(std::env::split_paths(&p));
    }
    Ok(std::env::join_paths(parts)?)
}

async fn start_forward(ctx: &Ctx, client: Client, emu: &EmulatorProc, extra: &[&str]) -> Result<Forward> {
    let home = tempfile::Builder::new().prefix("ssmconnect-bench-").tempdir()?;
    let local = free_port()?;
    let mut cmd = match client {
        Client::Ssmconnect => {
            let mut cmd = clean_command(&ctx.helper, home.path());
            cmd.args(["--endpoint-url", &emu.endpoint, "forward", TARGET])
                .arg(ctx.server.to_string())
                .args(["--local-port", &local.to_string()])
                .args(extra);
            cmd
        }
        Client::Plugin => {
            let mut cmd = clean_command(ctx.aws.as_ref().context("no aws")?, home.path());
            cmd.env("PATH", plugin_path_env(ctx)?).args([
                "ssm",
                "start-session",
                "--endpoint-url",
                &emu.endpoint,
                "--target",
                TARGET,
                "--document-name",
                "AWS-StartPortForwardingSession",
                "--parameters",
                &format!("portNumber={},localPortNumber={local}", ctx.server),
            ]);
            cmd
        }
    };
    cmd.stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::inherit());
    let t0 = Instant::now();
    let mut proc = Child::spawn(&mut cmd, client.name())?;
    let addr = SocketAddr::from(([127, 0, 0, 1], local));
    let ready_s = loop {
        if t0.elapsed() > Duration::from_secs(90) {
            bail!("{}: no echo through port {local} within 90 s", client.name());
        }
        if let Some(status) = proc.child.try_wait()? {
            bail!("{} exited with {status} before its port was ready", client.name());
        }
        if first_echo(addr).await.is_ok() {
            break t0.elapsed().as_secs_f64();
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    let pid = match client {
        Client::Ssmconnect => proc.pid,
        Client::Plugin => descendant_named(proc.pid, &ctx.plugin_exe_name)
            .with_context(|| format!("no {PLUGIN_NAME} process under the AWS CLI"))?,
    };
    Ok(Forward {
        _proc: proc,
        _home: home,
        pid,
        port: local,
        ready_s,
    })
}

/// Connects and gets one byte echoed.
async fn first_echo(addr: SocketAddr) -> Result<TcpStream> {
    let mut s = TcpStream::connect(addr).await?;
    s.set_nodelay(true)?;
    s.write_all(b"E").await?;
    let mut b = [0u8; 1];
    tokio::time::timeout(Duration::from_secs(10), s.read_exact(&mut b)).await??;
    if b[0] != b'E' {
        bail!("echoed {:?}", b[0]);
    }
    Ok(s)
}

/// Time between keystrokes: the echo figures and the shell's keystrokes are typed this far apart.
/// Back to back, a round trip measures the agent's own 1 ms pause after every message it sends
/// (port_mux.go `transferDataToMgs`), not the clients: the echoed byte waits for it to end.
const KEYSTROKE_GAP: Duration = Duration::from_millis(20);

/// Median 1-byte round trip in ms over `n` (after 10 not counted), `gap` apart.
async fn echo_ms(port: u16, n: usize, gap: Duration) -> Result<f64> {
    let mut s = first_echo(SocketAddr::from(([127, 0, 0, 1], port))).await?;
    let mut times = Vec::with_capacity(n);
    for i in 0..n + 10 {
        let byte = [(i % 251) as u8];
        let t = Instant::now();
        s.write_all(&byte).await?;
        let mut b = [0u8; 1];
        tokio::time::timeout(Duration::from_secs(10), s.read_exact(&mut b))
            .await
            .context("echo timed out")??;
        if b != byte {
            bail!("echo {i}: sent {byte:?}, got {b:?}");
        }
        if i >= 10 {
            times.push(t.elapsed().as_secs_f64() * 1000.0);
        }
        if !gap.is_zero() {
            tokio::time::sleep(gap).await;
        }
    }
    common::figures::median(&times).context("no echoes")
}

/// One direction of a transfer through the forward, checked by length and SHA-256.
async fn transfer(port: u16, upload: bool, want: Expected, block: Arc<Vec<u8>>) -> Result<()> {
    let mut s = TcpStream::connect(SocketAddr::from(([127, 0, 0, 1], port))).await?;
    s.set_nodelay(true)?;
    s.write_all(if upload { b"U" } else { b"D" }).await?;
    s.write_u64(want.len).await?;
    if upload {
        let (mut r, mut w) = s.into_split();
        let sender = tokio::spawn(async move {
            let mut left = want.len as usize;
            while left > 0 {
                let n = left.min(block.len());
                w.write_all(&block[..n]).await?;
                left -= n;
            }
            Ok::<_, std::io::Error>(w)
        });
        let mut digest = [0u8; 32];
        r.read_exact(&mut digest).await.context("reading the digest")?;
        let got = r.read_u64().await?;
        let _w = sender.await??;
        want.check(got, &hex(&digest)).map_err(anyhow::Error::msg)
    } else {
        let mut h = Sha256::new();
        let mut got = 0u64;
        let mut buf = vec![0u8; 256 * 1024];
        while got < want.len {
            let n = s.read(&mut buf).await?;
            if n == 0 {
                break;
            }
            h.update(&buf[..n]);
            got += n as u64;
        }
        want.check(got, &hex(&h.finalize())).map_err(anyhow::Error::msg)
    }
}

/// Throughput figures of one transfer of `total` bytes over `conns` connections at once:
/// MB/s, the client's CPU seconds per 100 MiB, the emulator's CPU share in % of a core.
async fn measure_transfer(
    ctx: &Ctx,
    fwd: &Forward,
    emu: &EmulatorProc,
    conns: u64,
    total: u64,
    upload: bool,
) -> Result<(f64, f64, f64)> {
    let each = total / conns;
    let want = ctx.expected.get(&each).cloned().context("no expected digest")?;
    let cpu0 = CpuSample::take(fwd.pid).context("the forwarding process is gone")?;
    let emu0 = CpuSample::take(emu.proc.pid).context("the emulator is gone")?;
    let t0 = Instant::now();
    let mut set = tokio::task::JoinSet::new();
    for _ in 0..conns {
        set.spawn(transfer(fwd.port, upload, want.clone(), ctx.block.clone()));
    }
    let all = async {
        while let Some(r) = set.join_next().await {
            r??;
        }
        Ok::<_, anyhow::Error>(())
    };
    tokio::time::timeout(Duration::from_secs(900), all)
        .await
        .context("the transfer took over 900 s")??;
    let secs = t0.elapsed().as_secs_f64();
    let cpu = CpuSample::take(fwd.pid)
        .context("the forwarding process is gone")?
        .seconds_since(&cpu0);
    let emu_cpu = CpuSample::take(emu.proc.pid)
        .context("the emulator is gone")?
        .seconds_since(&emu0);
    let moved = (each * conns) as f64;
    Ok((
        moved / secs / 1e6,
        cpu / (moved / (100.0 * MIB as f64)),
        emu_cpu / secs * 100.0,
    ))
}

fn put(f: &mut Figures, key: &'static str, r: Result<f64>) {
    f.insert(
        key,
        match r {
            Ok(v) => Outcome::Value(v),
            Err(e) => Outcome::Failed(format!("{e:#}")),
        },
    );
}

fn put_transfer(f: &mut Figures, key: &'static str, r: Result<(f64, f64, f64)>) {
    let [cpu, emu] = sub_keys(key);
    match r {
        Ok((mbs, c, e)) => {
            f.insert(key, Outcome::Value(mbs));
            f.insert(cpu, Outcome::Value(c));
            f.insert(emu, Outcome::Value(e));
        }
        Err(e) => {
            let why = format!("{e:#}");
            f.insert(key, Outcome::Failed(why.clone()));
            f.insert(cpu, Outcome::Failed(why.clone()));
            f.insert(emu, Outcome::Failed(why));
        }
    }
}

/// `key` (and its CPU and emulator figures, for a transfer) failed with `why`.
fn put_transfer_or(f: &mut Figures, key: &'static str, why: &str) {
    f.insert(key, Outcome::Failed(why.to_owned()));
    if key.starts_with("dl_") || key.starts_with("ul_") {
        for k in sub_keys(key) {
            f.insert(k, Outcome::Failed(why.to_owned()));
        }
    }
}

fn not_run(f: &mut Figures, key: &'static str, why: &str) {
    f.insert(key, Outcome::NotRun(why.to_owned()));
    if key.starts_with("dl_") || key.starts_with("ul_") {
        for k in sub_keys(key) {
            f.insert(k, Outcome::NotRun(why.to_owned()));
        }
    }
}

/// The CPU and emulator keys of a throughput figure.
fn sub_keys(key: &'static str) -> [&'static str; 2] {
    let find = |suffix: &str| {
        FIGURES
            .iter()
            .map(|(k, _, _)| *k)
            .find(|k| k.strip_prefix(key).is_some_and(|s| s == suffix))
            .unwrap_or(key)
    };
    [find("_cpu"), find("_emu")]
}

/// Every figure for one client, with fresh emulators and processes.
async fn client_run(ctx: &Ctx, client: Client) -> Figures {
    let mut f = Figures::new();
    if let Err(e) = client_run_inner(ctx, client, &mut f).await {
        for (k, _, _) in FIGURES {
            f.entry(k).or_insert_with(|| Outcome::Failed(format!("{e:#}")));
        }
    }
    f
}

async fn client_run_inner(ctx: &Ctx, client: Client, f: &mut Figures) -> Result<()> {
    let a = &ctx.args;
    let mut peak_kib = 0u64;

    // The paced agent (the default): echo, port ready, paced downloads, upload.
    let emu = EmulatorProc::start(&ctx.emulator, &[]).await?;
    let fwd = start_forward(ctx, client, &emu, &[]).await;
    match fwd {
        Ok(fwd) => {
            f.insert("port_ready", Outcome::Value(fwd.ready_s));
            put(f, "echo_nagle_on", echo_ms(fwd.port, a.echoes, KEYSTROKE_GAP).await);
            put_transfer(
                f,
                "dl_paced_1",
                measure_transfer(ctx, &fwd, &emu, 1, a.paced_mib * MIB, false).await,
            );
            put_transfer(
                f,
                "dl_paced_4",
                measure_transfer(ctx, &fwd, &emu, 4, a.paced_mib * MIB, false).await,
            );
            if client == Client::Plugin {
                // The plugin has no session per connection: 8 connections through its one session.
                put_transfer(
                    f,
                    "dl_paced_8",
                    measure_transfer(ctx, &fwd, &emu, 8, a.paced_mib * MIB, false).await,
                );
            }
            put_transfer(
                f,
                "ul_1",
                measure_transfer(ctx, &fwd, &emu, 1, a.upload_mib * MIB, true).await,
            );
            peak_kib = peak_kib.max(status_kib(fwd.pid, "VmHWM").unwrap_or(0));
        }
        Err(e) => {
            let why = format!("{e:#}");
            for k in [
                "port_ready",
                "echo_nagle_on",
                "dl_paced_1",
                "dl_paced_4",
                "dl_paced_8",
                "ul_1",
            ] {
                if client == Client::Plugin || k != "dl_paced_8" {
                    put_transfer_or(f, k, &why);
                }
            }
        }
    }
    if client == Client::Ssmconnect {
        if ctx.per_connection {
            let r = async {
                let fwd =
                    start_forward(ctx, client, &emu, &["--session-per-connection", "--warm-sessions", "1"]).await?;
                let r = measure_transfer(ctx, &fwd, &emu, 8, a.paced_mib * MIB, false).await;
                Ok::<_, anyhow::Error>((r?, status_kib(fwd.pid, "VmHWM").unwrap_or(0)))
            }
            .await;
            match r {
                Ok((t, kib)) => {
                    peak_kib = peak_kib.max(kib);
                    put_transfer(f, "dl_paced_8", Ok(t));
                }
                Err(e) => put_transfer(f, "dl_paced_8", Err(e)),
            }
        } else {
            not_run(f, "dl_paced_8", "this ssmconnect has no --session-per-connection");
        }
    }

    // The shell, on the paced agent as well.
    if a.no_shell {
        not_run(f, "shell_keystroke", "--no-shell");
    } else {
        put(f, "shell_keystroke", shell_keystroke_ms(ctx, client, &emu).await);
    }
    emu.stop().await;

    // The emulator's WebSocket side with TCP_NODELAY.
    if ctx.nodelay {
        let r = async {
            let emu = EmulatorProc::start(&ctx.emulator, &["--mgs-nodelay"]).await?;
            let fwd = start_forward(ctx, client, &emu, &[]).await?;
            let spaced = echo_ms(fwd.port, a.echoes, KEYSTROKE_GAP).await;
            let b2b = echo_ms(fwd.port, a.echoes, Duration::ZERO).await;
            drop(fwd);
            emu.stop().await;
            Ok::<_, anyhow::Error>((spaced, b2b))
        }
        .await;
        match r {
            Ok((spaced, b2b)) => {
                put(f, "echo_nagle_off", spaced);
                put(f, "echo_nagle_off_b2b", b2b);
            }
            Err(e) => {
                let why = format!("{e:#}");
                put_transfer_or(f, "echo_nagle_off", &why);
                put_transfer_or(f, "echo_nagle_off_b2b", &why);
            }
        }
    } else {
        for k in ["echo_nagle_off", "echo_nagle_off_b2b"] {
            not_run(f, k, "this emulator has no --mgs-nodelay");
        }
    }

    // The floor under the Nagle-off echo: the same echo with no client and no agent, straight to
    // the server, and through two relay processes that only copy bytes.
    put(
        f,
        "echo_floor_direct",
        echo_ms(ctx.server, a.echoes, KEYSTROKE_GAP).await,
    );
    let floor = async {
        // Both relays live until the echo is measured (dropping one kills it).
        let (_far, far_port) = start_relay(ctx.server).await?;
        let (_near, near_port) = start_relay(far_port).await?;
        echo_ms(near_port, a.echoes, KEYSTROKE_GAP).await
    };
    put(f, "echo_floor_relays", floor.await);
    // The floor under a paced download's CPU.
    put(
        f,
        "dl_paced_floor_cpu",
        paced_floor_cpu(ctx, a.paced_mib * MIB / 2).await,
    );

    // The unpaced agent.
    let r = async {
        let emu = EmulatorProc::start(&ctx.emulator, &["--unpaced"]).await?;
        let fwd = start_forward(ctx, client, &emu, &[]).await?;
        let r = measure_transfer(ctx, &fwd, &emu, 1, a.unpaced_mib * MIB, false).await;
        let kib = status_kib(fwd.pid, "VmHWM").unwrap_or(0);
        drop(fwd);
        emu.stop().await;
        Ok::<_, anyhow::Error>((r?, kib))
    }
    .await;
    match r {
        Ok((t, kib)) => {
            peak_kib = peak_kib.max(kib);
            put_transfer(f, "dl_unpaced_1", Ok(t));
        }
        Err(e) => put_transfer(f, "dl_unpaced_1", Err(e)),
    }
    if peak_kib > 0 {
        f.insert("peak_rss", Outcome::Value(peak_kib as f64 / 1024.0));
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// The shell through a pty.

async fn shell_keystroke_ms(ctx: &Ctx, client: Client, emu: &EmulatorProc) -> Result<f64> {
    let home = tempfile::Builder::new().prefix("ssmconnect-bench-shell-").tempdir()?;
    let mut cmd = match client {
        Client::Ssmconnect => {
            let mut c = portable_pty::CommandBuilder::new(&ctx.helper);
            c.args(["--endpoint-url", &emu.endpoint, "shell", TARGET]);
            c
        }
        Client::Plugin => {
            let mut c = portable_pty::CommandBuilder::new(ctx.aws.as_ref().context("no aws")?);
            c.args([
                "ssm",
                "start-session",
                "--endpoint-url",
                &emu.endpoint,
                "--target",
                TARGET,
            ]);
            c.env("PATH", plugin_path_env(ctx)?);
            c
        }
    };
    for (name, _) in std::env::vars_os() {
        let n = name.to_string_lossy();
        if n.starts_with("AWS_") || n.starts_with("SSMCONNECT_") {
            cmd.env_remove(&name);
        }
    }
    for (k, v) in [
        ("HOME", home.path().to_str().context("temp path")?),
        ("AWS_ACCESS_KEY_ID", "AKIDEXAMPLE"),
        ("AWS_SECRET_ACCESS_KEY", "secret"),
        ("AWS_REGION", "us-east-1"),
        ("AWS_DEFAULT_REGION", "us-east-1"),
        ("AWS_EC2_METADATA_DISABLED", "true"),
        ("TERM", "xterm"),
    ] {
        cmd.env(k, v);
    }
    cmd.cwd(home.path());
    let n = ctx.args.keystrokes;
    tokio::task::spawn_blocking(move || keystrokes(cmd, n))
        .await
        .context("the pty task")?
}

fn keystrokes(cmd: portable_pty::CommandBuilder, n: usize) -> Result<f64> {
    use portable_pty::{PtySize, native_pty_system};
    let pair = native_pty_system()
        .openpty(PtySize {
            rows: 40,
            cols: 250,
            pixel_width: 0,
            pixel_height: 0,
        })
        .map_err(|e| anyhow::anyhow!("openpty: {e}"))?;
    let mut child = pair
        .slave
        .spawn_command(cmd)
        .map_err(|e| anyhow::anyhow!("spawning the shell client: {e}"))?;
    drop(pair.slave);
    let leader = child.process_id();
    // Whatever happens below, the client and its children go.
    struct Kill(Option<u32>);
    impl Drop for Kill {
        fn drop(&mut self) {
            if let Some(pid) = self.0 {
                // SAFETY: kill(2) has no memory effects; the group is the pty child's session.
                unsafe { libc::kill(-(pid as i32), libc::SIGKILL) };
            }
        }
    }
    let _kill = Kill(leader);
    let mut reader = pair.master.try_clone_reader().map_err(|e| anyhow::anyhow!("{e}"))?;
    let mut writer = pair.master.take_writer().map_err(|e| anyhow::anyhow!("{e}"))?;
    let (tx, rx) = std::sync::mpsc::channel::<Vec<u8>>();
    std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        while let Ok(n) = reader.read(&mut buf) {
            if n == 0 || tx.send(buf[..n].to_vec()).is_err() {
                break;
            }
        }
    });
    let fd = pair.master.as_raw_fd().context("the pty has no fd")?;
    let local_echo = || {
        // SAFETY: termios is plain data; fd is the pty master we hold open.
        let mut t: libc::termios = unsafe { std::mem::zeroed() };
        (unsafe { libc::tcgetattr(fd, &mut t) } == 0) && t.c_lflag & libc::ECHO != 0
    };

    // The prompt: output, then 1.5 s of quiet, with the client's terminal in raw mode (no local
    // echo, which would answer every keystroke by itself).
    let start = Instant::now();
    let mut seen = Vec::new();
    loop {
        if start.elapsed() > Duration::from_secs(90) {
            bail!(
                "no shell prompt within 90 s; output: {:?}",
                String::from_utf8_lossy(&seen)
            );
        }
        if let Ok(Some(status)) = child.try_wait() {
            bail!(
                "the shell client exited ({status:?}): {:?}",
                String::from_utf8_lossy(&seen)
            );
        }
        match rx.recv_timeout(Duration::from_millis(1500)) {
            Ok(b) => seen.extend(b),
            Err(_) if !seen.is_empty() && !local_echo() => break,
            Err(_) => {}
        }
    }
    let mut times = Vec::with_capacity(n);
    for i in 0..n + 5 {
        while rx.try_recv().is_ok() {}
        let t = Instant::now();
        writer.write_all(b"x")?;
        writer.flush()?;
        loop {
            let b = rx
                .recv_timeout(Duration::from_secs(10))
                .context("no echo of a keystroke within 10 s")?;
            if b.contains(&b'x') {
                break;
            }
        }
        if i >= 5 {
            times.push(t.elapsed().as_secs_f64() * 1000.0);
        }
        std::thread::sleep(KEYSTROKE_GAP);
    }
    // Clear the line and leave.
    let _ = writer.write_all(b"\x15exit\r");
    let _ = writer.flush();
    std::thread::sleep(Duration::from_millis(300));
    let _ = child.kill();
    common::figures::median(&times).context("no keystrokes")
}

// ---------------------------------------------------------------------------------------------
// The chart: one panel per figure, a bar per client (its median), the value beside it.

fn chart(path: &Path, rows: &[Row], stamp: &str) -> Result<()> {
    use plotters::prelude::*;
    let row_h = 46i32;
    let top = 70i32;
    let width = 1100i32;
    let label_w = 560i32;
    let bar_max = width - label_w - 150;
    let height = top + row_h * rows.len() as i32 + 20;
    let root = SVGBackend::new(path, (width as u32, height as u32)).into_drawing_area();
    let err = |e: DrawingAreaErrorKind<_>| anyhow::anyhow!("drawing the chart: {e:?}");
    root.fill(&WHITE).map_err(err)?;
    let title = format!("ssmconnect and session-manager-plugin against the emulator ({stamp}; medians)");
    root.draw(&Text::new(title, (10, 12), ("sans-serif", 18).into_font()))
        .map_err(err)?;
    let blue = RGBColor(31, 119, 180);
    let orange = RGBColor(255, 127, 14);
    for (j, (name, color)) in [("ssmconnect", blue), ("session-manager-plugin", orange)]
        .into_iter()
        .enumerate()
    {
        let x = 10 + j as i32 * 220;
        root.draw(&Rectangle::new([(x, 42), (x + 14, 54)], color.filled()))
            .map_err(err)?;
        root.draw(&Text::new(name, (x + 20, 42), ("sans-serif", 13).into_font()))
            .map_err(err)?;
    }
    for (i, row) in rows.iter().enumerate() {
        let y = top + i as i32 * row_h;
        let shade = if i % 2 == 0 { RGBColor(245, 245, 245) } else { WHITE };
        root.draw(&Rectangle::new([(0, y - 4), (width, y + row_h - 6)], shade.filled()))
            .map_err(err)?;
        let better = match row.better {
            Better::Higher => "higher is better",
            Better::Lower => "lower is better",
        };
        root.draw(&Text::new(
            row.figure.clone(),
            (10, y + 4),
            ("sans-serif", 13).into_font(),
        ))
        .map_err(err)?;
        root.draw(&Text::new(
            better,
            (10, y + 20),
            ("sans-serif", 11).into_font().color(&RGBColor(110, 110, 110)),
        ))
        .map_err(err)?;
        let values = [row.ssmconnect.median(), row.plugin.median()];
        let max = values.iter().flatten().cloned().fold(0.0f64, f64::max);
        for (j, (v, color)) in values.iter().zip([blue, orange]).enumerate() {
            let by = y + j as i32 * 18;
            match v {
                Some(v) => {
                    let w = if max > 0.0 {
                        (v / max * bar_max as f64) as i32
                    } else {
                        0
                    };
                    root.draw(&Rectangle::new(
                        [(label_w, by), (label_w + w.max(1), by + 14)],
                        color.filled(),
                    ))
                    .map_err(err)?;
                    root.draw(&Text::new(
                        number(*v),
                        (label_w + w + 6, by),
                        ("sans-serif", 12).into_font(),
                    ))
                    .map_err(err)?;
                }
                None => {
                    root.draw(&Text::new("not run", (label_w, by), ("sans-serif", 12).into_font()))
                        .map_err(err)?;
                }
            }
        }
    }
    root.present().map_err(err)?;
    Ok(())
}
