//! `ssm-emulator`: runs the emulator on 127.0.0.1, prints its endpoints as one JSON line on
//! stdout, and exits when stdin closes, so tests in any language can drive it.

use std::io::Write;

use anyhow::Context;
use clap::Parser;
use ssm_emulator::{Config, Emulator, Faults, Pacing};
use tokio::io::AsyncReadExt;

// Every message the agent sends or takes allocates its payload, frame and socket buffers; the
// system allocator took about a sixth of the emulator's time in an unpaced transfer (perf), the
// cost of the other end, not of the client under test.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

// mimalloc's own options (mimalloc.h). libmimalloc-sys declares them only with its `extended`
// feature, which needs a crate this build does not have; the functions are in the library it
// links either way.
unsafe extern "C" {
    #[cfg(test)]
    fn mi_option_get(option: std::ffi::c_int) -> std::ffi::c_long;
    fn mi_option_set(option: std::ffi::c_int, value: std::ffi::c_long);
}
/// `mi_option_purge_delay` in mimalloc.h's `mi_option_t` (the v3 library this build links).
const MI_OPTION_PURGE_DELAY: std::ffi::c_int = 15;

/// Keeps freed pages mapped. mimalloc hands pages that stayed free for its purge delay (1 s)
/// back to the kernel, which zeroes them again when new frames land on them: 6–10 % of the
/// emulator's time in a long unpaced download (perf: clear_page under `Channel::send`), about a
/// fifth of its throughput. The emulator is a test process; its peak is what it keeps. An
/// explicit `MIMALLOC_PURGE_DELAY` in the environment is left as it is.
fn keep_freed_pages() {
    if std::env::var_os("MIMALLOC_PURGE_DELAY").is_none() {
        // SAFETY: mi_option_set only stores the value; the option index is in range.
        unsafe { mi_option_set(MI_OPTION_PURGE_DELAY, -1) };
    }
}

/// Loopback stand-in for the SSM API and the Session Manager data channel.
#[derive(Parser, Debug)]
#[command(
    version,
    about,
    after_help = "Example:\n  ssm-emulator --agent-version 3.0.196.0 --faults '{\"to_client\":{\"drop\":0.05}}'"
)]
struct Args {
    /// JSON file with the full configuration (fields as in the library's Config).
    #[arg(long)]
    config: Option<std::path::PathBuf>,
    /// Agent version announced in the handshake.
    #[arg(long)]
    agent_version: Option<String>,
    /// No 1 ms pause between destination reads; messages of up to --chunk bytes.
    #[arg(long)]
    unpaced: bool,
    /// Largest message in unpaced mode (shell output: plus up to 3 bytes of a UTF-8 sequence
    /// held back from the read before).
    #[arg(long, default_value_t = 1024)]
    chunk: usize,
    /// TCP_NODELAY on the listener's sockets (the API and the data channel's WebSocket), for
    /// comparing clients against a service that sends small frames at once. Off by default:
    /// whether MGS disables Nagle is not known, and Nagle on is the less kind peer.
    #[arg(long)]
    mgs_nodelay: bool,
    /// Fault injection settings as JSON.
    #[arg(long)]
    faults: Option<String>,
    /// Map a remote port to a local one, e.g. 22=2222 (repeatable).
    #[arg(long = "port-map", value_parser = parse_port_map)]
    port_map: Vec<(u16, u16)>,
    /// Name of an account-owned NonInteractiveCommands document with `separateOutputStream`
    /// (stdout and stderr apart, then the exit code); AWS-StartNonInteractiveCommand has none.
    #[arg(long, value_name = "NAME")]
    command_document: Option<String>,
    /// Session Manager preferences `kmsKeyId`: encrypt every session but port sessions with this
    /// KMS key, as the agent does (needs --kms-endpoint).
    #[arg(long, value_name = "KEY", requires = "kms_endpoint")]
    kms_key_id: Option<String>,
    /// The KMS endpoint the emulated agent decrypts data keys at (e.g. a moto server).
    #[arg(long, value_name = "URL")]
    kms_endpoint: Option<String>,
    /// EC2 inventory: a JSON array of instances (fields as in the library's Instance).
    #[arg(long)]
    inventory: Option<std::path::PathBuf>,
    /// authorized_keys file for EC2 Instance Connect keys (`%u`: OS user, `%i`: instance id).
    #[arg(long)]
    authorized_keys: Option<std::path::PathBuf>,
    /// How long a pushed EC2 Instance Connect key stays valid, in milliseconds.
    #[arg(long)]
    instance_connect_ttl_ms: Option<u64>,
    /// Serve HTTPS and wss:// stream URLs, as AWS does, with a certificate from a test CA made
    /// at start; its PEM is in the JSON line (`ca_pem`) and, with --ca-file, in that file.
    #[arg(long)]
    tls: bool,
    /// With --tls: write the test CA's certificate (PEM) to this file, for AWS_CA_BUNDLE.
    #[arg(long, value_name = "FILE", requires = "tls")]
    ca_file: Option<std::path::PathBuf>,
    /// Address to listen on (loopback only unless you mean it).
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: std::net::SocketAddr,
    /// Log level filter (also RUST_LOG).
    #[arg(long, default_value = "warn")]
    log: String,
}

fn parse_port_map(s: &str) -> Result<(u16, u16), String> {
    let (a, b) = s.split_once('=').ok_or("expected REMOTE=LOCAL")?;
    Ok((
        a.parse().map_err(|e| format!("{e}"))?,
        b.parse().map_err(|e| format!("{e}"))?,
    ))
}

// One thread: the agent, its socket's reader and writer hand each other every message, and on
// one thread that costs no thread wake-ups (the pty and command readers have threads of their
// own). The tests that run the emulator in their own process use their own runtime.
#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    keep_freed_pages();
    let args = Args::parse();
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(&args.log));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();

    let mut config = match &args.config {
        Some(path) => {
            let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
            serde_json::from_str::<Config>(&text).with_context(|| format!("parsing {}", path.display()))?
        }
        None => Config::default(),
    };
    if let Some(v) = args.agent_version {
        config.agent_version = v;
    }
    if args.unpaced {
        config.pacing = Pacing::Unpaced { chunk: args.chunk };
    }
    if args.mgs_nodelay {
        config.mgs_nodelay = true;
    }
    if let Some(f) = &args.faults {
        config.faults = serde_json::from_str::<Faults>(f).context("parsing --faults")?;
    }
    config.port_map.extend(args.port_map);
    if let Some(d) = args.command_document {
        config.command_document = Some(d);
    }
    if let Some(k) = args.kms_key_id {
        config.kms_key_id = Some(k);
    }
    if let Some(e) = args.kms_endpoint {
        config.kms_endpoint = Some(e);
    }
    if let Some(path) = &args.inventory {
        let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        let instances: Vec<ssm_emulator::Instance> =
            serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))?;
        config.inventory.extend(instances);
    }
    if let Some(p) = args.authorized_keys {
        config.authorized_keys = Some(p);
    }
    if let Some(ms) = args.instance_connect_ttl_ms {
        config.instance_connect_ttl_ms = ms;
    }
    if args.tls {
        config.tls = true;
    }

    let emulator = Emulator::bind(config, args.listen)
        .await
        .context("binding the listener")?;
    if let (Some(path), Some(pem)) = (&args.ca_file, emulator.ca_pem()) {
        std::fs::write(path, pem).with_context(|| format!("writing {}", path.display()))?;
    }
    let line = serde_json::json!({
        "endpoint": emulator.endpoint(),
        "port": emulator.addr().port(),
        "pid": std::process::id(),
        "ca_pem": emulator.ca_pem(),
    });
    {
        let mut out = std::io::stdout().lock();
        writeln!(out, "{line}")?;
        out.flush()?;
    }
    // Run until stdin closes (the parent went away) or Ctrl+C.
    let mut stdin = tokio::io::stdin();
    let mut buf = [0u8; 256];
    tokio::select! {
        _ = async { while matches!(stdin.read(&mut buf).await, Ok(n) if n > 0) {} } => {}
        _ = tokio::signal::ctrl_c() => {}
    }
    emulator.stop().await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The index names the purge delay: its default (1000 ms) is no other option's in that part
    /// of the table, and setting it reads back.
    #[test]
    fn the_purge_delay_option_is_the_one_set() {
        if std::env::var_os("MIMALLOC_PURGE_DELAY").is_some() {
            return;
        }
        // SAFETY: as in keep_freed_pages; the tests of this binary read the option only here.
        unsafe {
            assert_eq!(mi_option_get(MI_OPTION_PURGE_DELAY), 1000);
            keep_freed_pages();
            assert_eq!(mi_option_get(MI_OPTION_PURGE_DELAY), -1);
        }
    }
}
