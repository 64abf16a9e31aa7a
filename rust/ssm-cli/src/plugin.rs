//! The plugin-compatible mode: the six-argument contract by which the AWS CLI runs
//! `session-manager-plugin` (§1.3). Every session type the AWS CLI starts: shells and
//! interactive commands on the terminal, non-interactive commands with their streams apart,
//! port forwards printing the texts wrappers look for, and stream (SSH) sessions writing nothing
//! but tunnel bytes to stdout. KMS-encrypted sessions too (the data key from KMS as
//! `ssmconnect` makes it).

use std::collections::HashMap;
use std::ffi::OsString;
use std::net::SocketAddr;
use std::sync::Arc;

use serde::Deserialize;
use ssm_proto::{PortMode, PortProperties};
use ssm_session::aws::SharedControl;
use ssm_session::{AwsOptions, Connector, DataChannel, End, Endpoints, PortForward, Settings, StartedSession, Token};

use crate::exit::{self, Ended, Failure, code};

const RESPONSE_ENV: &str = "AWS_SSM_START_SESSION_RESPONSE";

/// How the process was asked to behave like the plugin.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// `--version` under the plugin's name.
    Version,
    /// No arguments under the plugin's name.
    Installed,
    /// The session contract.
    Run,
}

/// Whether `args` call for plugin behaviour: the program is named `session-manager-plugin`, or
/// its first argument is a StartSession response (JSON or the environment variable's name).
pub fn detect(args: &[OsString]) -> Option<Mode> {
    let as_plugin = args
        .first()
        .and_then(|a| {
            std::path::Path::new(a)
                .file_stem()
                .map(|s| s.to_string_lossy().into_owned())
        })
        .is_some_and(|s| s.starts_with("session-manager-plugin"));
    let first = args.get(1).map(|a| a.to_string_lossy().into_owned());
    match first.as_deref() {
        None if as_plugin => Some(Mode::Installed),
        Some("--version") if as_plugin && args.len() == 2 => Some(Mode::Version),
        Some(a) if a.trim_start().starts_with('{') || a.starts_with(RESPONSE_ENV) => Some(Mode::Run),
        Some(_) if as_plugin => Some(Mode::Run),
        _ => None,
    }
}

#[derive(Deserialize)]
struct Response {
    #[serde(rename = "SessionId")]
    session_id: String,
    #[serde(rename = "TokenValue")]
    token_value: String,
    #[serde(rename = "StreamUrl")]
    stream_url: String,
}

#[derive(Deserialize, Default)]
struct Request {
    #[serde(rename = "Target", default)]
    target: String,
    #[serde(rename = "Parameters", default)]
    parameters: HashMap<String, Vec<String>>,
}

/// Runs plugin mode; returns the exit code.
pub fn main(mode: Mode, args: Vec<OsString>) -> i32 {
    match mode {
        Mode::Version => {
            println!("{}", ssm_proto::version::CLIENT_VERSION);
            0
        }
        Mode::Installed => {
            println!("\nssmconnect is installed as the Session Manager plugin. Use the AWS CLI to start a session.\n");
            0
        }
        Mode::Run => {
            exit::init_logging("warn");
            let args: Vec<String> = args.iter().skip(1).map(|a| a.to_string_lossy().into_owned()).collect();
            // Before the runtime: reading the response may remove a variable from the environment.
            match prepare(&args) {
                Ok(prepared) => exit::run(run(prepared)),
                Err(f) => {
                    eprintln!("ssmconnect: {}", f.message);
                    f.code
                }
            }
        }
    }
}

struct Prepared {
    started: StartedSession,
    request: Request,
    settings: Settings,
}

/// Reads the arguments (and the response variable, which is then removed, as the plugin does).
fn prepare(args: &[String]) -> Result<Prepared, Failure> {
    if args.len() < 3 {
        return Err(Failure::usage(
            "Unknown operation: expected the StartSession response, region and operation",
        ));
    }
    let raw = args.first().map(String::as_str).unwrap_or_default();
    let json = if raw.starts_with(RESPONSE_ENV) {
        let value = std::env::var(raw).map_err(|_| Failure::usage(format!("environment variable {raw} is not set")))?;
        // SAFETY: single-threaded at this point: no runtime or other thread exists yet.
        unsafe { std::env::remove_var(raw) };
        value
    } else {
        raw.to_owned()
    };
    let response: Response = serde_json::from_str(&json)
        .map_err(|e| Failure::usage(format!("cannot read the StartSession response: {e}")))?;
    let region = args.get(1).cloned().filter(|r| !r.is_empty());
    let operation = args.get(2).map(String::as_str).unwrap_or_default();
    if operation != "StartSession" {
        return Err(Failure::usage("Invalid Operation"));
    }
    let profile = args.get(3).cloned().filter(|p| !p.is_empty());
    let request: Request = match args.get(4) {
        Some(p) if !p.is_empty() => serde_json::from_str(p)
            .map_err(|e| Failure::usage(format!("cannot read the StartSession parameters: {e}")))?,
        _ => Request::default(),
    };
    let endpoint_url = args.get(5).cloned().filter(|e| !e.is_empty());
    Ok(Prepared {
        started: StartedSession {
            session_id: response.session_id,
            target_id: request.target.clone(),
            token: Token::new(response.token_value),
            stream_url: response.stream_url,
        },
        request,
        settings: Settings {
            aws: AwsOptions {
                profile,
                region,
                // The AWS CLI's own environment, which it hands down: the CLI trusted the bundle
                // for StartSession, and the stream URL it got is dialled trusting it too.
                ca_bundle: std::env::var_os("AWS_CA_BUNDLE")
                    .filter(|v| !v.is_empty())
                    .map(Into::into),
                ..AwsOptions::default()
            },
            endpoints: Endpoints {
                ssm: endpoint_url,
                ..Endpoints::default()
            },
            ..Settings::default()
        },
    })
}

async fn run(p: Prepared) -> Result<i32, Failure> {
    // From here on signals no longer kill the process: the session is ended first.
    let mut signals = exit::Signals::new();
    let connector = Connector::new(p.settings);
    let control: SharedControl = Arc::new(connector.api().await?.clone());
    let session_id = p.started.session_id.clone();
    tracing::info!(session = %session_id, target = %p.request.target, "starting");
    let opened = DataChannel::open(p.started, control, connector.settings().channel.clone());
    let dc = match exit::unless_signalled(&mut signals, opened).await {
        Ended::Done(dc) => dc?,
        Ended::Signalled(sig) => return Ok(sig.exit_code()),
    };
    match dc.start.port.clone() {
        Some(port) => {
            // Shells print the agent's message themselves (shell.rs).
            if !dc.start.customer_message.is_empty() {
                eprintln!("{}", dc.start.customer_message);
            }
            match port.mode {
                PortMode::Stdio => exit::pipe_stdio_until_signalled(&mut signals, dc).await,
                _ => forward(dc, &port.properties, &p.request, &session_id, &mut signals).await,
            }
        }
        None => stream(dc, &session_id, &mut signals).await,
    }
}

/// Shells and commands, as the plugin runs them: `Standard_Stream` and `InteractiveCommands` on
/// the terminal as `ssmconnect shell` runs them, `NonInteractiveCommands` as `ssmconnect exec`
/// (stdout and stderr apart, Ctrl+C passed on). Like the plugin (session.go, streaming.go), the
/// session is announced and its end told on stdout, and the status is 0 when the session ended by
/// itself: the AWS CLI reports any other status of its plugin as its own failure.
async fn stream(dc: DataChannel, session_id: &str, signals: &mut exit::Signals) -> Result<i32, Failure> {
    use ssm_proto::SessionType;
    let kind = dc.start.session_type.clone();
    println!("\nStarting session with SessionId: {session_id}");
    let end = match kind {
        SessionType::StandardStream | SessionType::InteractiveCommands => {
            match exit::shell_until_signalled(signals, dc).await? {
                Ended::Done(outcome) => outcome.end,
                Ended::Signalled(sig) => return Ok(sig.exit_code()),
            }
        }
        SessionType::NonInteractiveCommands => {
            match exit::command_until_signalled(signals, ssm_session::CommandSession::new(dc)).await? {
                Ended::Done(ran) => ran.outcome.end,
                Ended::Signalled(sig) => return Ok(sig.exit_code()),
            }
        }
        SessionType::Port => {
            // A port session has port properties and never comes here.
            let _ = dc.end().await;
            return Err(Failure {
                code: code::SESSION,
                message: "a Port session without port properties".into(),
            });
        }
    };
    print_end(session_id, &end);
    Ok(0)
}

/// The plugin's last line (streaming.go `HandleChannelClosedMessage`).
fn print_end(session_id: &str, end: &End) {
    match end {
        End::Closed(reason) if !reason.is_empty() => println!("\n\nSessionId: {session_id} : {reason}\n"),
        _ => println!("\n\nExiting session with sessionId: {session_id}.\n"),
    }
}

async fn forward(
    dc: DataChannel,
    props: &PortProperties,
    request: &Request,
    session_id: &str,
    signals: &mut exit::Signals,
) -> Result<i32, Failure> {
    let port = props
        .local_port_number
        .clone()
        .or_else(|| {
            request
                .parameters
                .get("localPortNumber")
                .and_then(|v| v.first().cloned())
        })
        .and_then(|p| p.parse::<u16>().ok())
        .unwrap_or(0);
    let listener = match ssm_session::port::bind(SocketAddr::from(([127, 0, 0, 1], port))).await {
        Ok(l) => l,
        Err(e) => {
            let _ = dc.end().await;
            return Err(e.into());
        }
    };
    println!("\nStarting session with SessionId: {session_id}");
    let mut forward = PortForward::from_channel(dc, listener, ssm_proto::DEFAULT_PAYLOAD_SIZE).await?;
    println!(
        "Port {} opened for sessionId {session_id}.",
        forward.local_addr().port()
    );
    println!("Waiting for connections...");
    let stopper = forward.stopper();
    let stop = |_| async move {
        println!("Terminate signal received, exiting.");
        let _ = stopper.send(true);
    };
    let (end, code) = match exit::until_signalled(signals, forward.wait(), stop).await {
        Ended::Done(end) => (end?, 0),
        // Ctrl+C is how the plugin's forwards end, with 0 (§7.4); other signals give 128 + N.
        Ended::Signalled(sig) if sig.is_interrupt() => (End::Finished, 0),
        Ended::Signalled(sig) => return Ok(sig.exit_code()),
    };
    print_end(session_id, &end);
    Ok(code)
}
