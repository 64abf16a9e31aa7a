//! `ssmconnect`: the SSMConnect helper executable.
//!
//! Subcommands open shells and port forwards, run one command with its exit code, and serve as
//! an ssh `ProxyCommand`. Called the way the AWS CLI
//! calls `session-manager-plugin` (§1.3 of `ssm-protocol.md`), it takes that role instead.

mod exit;
mod plugin;

use std::net::{IpAddr, SocketAddr};

use clap::{Args, Parser, Subcommand};
use ssm_session::{
    AwsOptions, ChannelOptions, Connector, Endpoints, ForwardSpec, KeyPush, PerConnection, Settings, SocksSpec,
    no_stages,
};

use crate::exit::{Ended, Failure};

const EXAMPLES: &str = "\
Examples:
  ssmconnect shell i-0123456789abcdef0
  ssmconnect shell i-0123456789abcdef0 < script.sh
  ssmconnect forward i-0123456789abcdef0 5432 --local-port 15432
  ssmconnect forward i-0123456789abcdef0 443 --remote-host db.internal --local-port 8443
  ssmconnect forward i-0123456789abcdef0 80 --local-port 8080 --session-per-connection
  ssmconnect socks i-0123456789abcdef0 --local-port 1080
      then: curl --socks5-hostname 127.0.0.1:1080 http://internal.example/
  ssmconnect --region eu-west-1 ssh-proxy ec2-user@i-0123456789abcdef0:22
  ssmconnect forward Name:db 5432                    (a tag; exactly one running instance)
  ssmconnect shell web.internal --dns-server 10.0.0.2:53
  ssmconnect exec i-0123456789abcdef0 --document MyCommandDocument -- sh -c 'df -h; exit 3'
  ssmconnect exec i-0123456789abcdef0 -- uname -a    (AWS-StartNonInteractiveCommand)

Targets: an instance id (i-…) or managed node id (mi-…), key:value (a tag), a private or public
IP address, or a DNS name: its TXT record naming an instance id wins, else its A/AAAA addresses
are looked up in EC2. Only running instances count; several matches are an error listing them.

ssh configuration (~/.ssh/config):
  Host i-*
      ProxyCommand ssmconnect ssh-proxy %r@%h:%p

  With EC2 Instance Connect (push the public half of the -i key for 60 seconds first):
      ProxyCommand ssmconnect ssh-proxy --ec2ic --public-key ~/.ssh/id_ed25519.pub %r@%h:%p

As the AWS CLI's plugin: put ssmconnect on PATH as session-manager-plugin.

socks is dynamic forwarding: a SOCKS5 proxy (CONNECT, no authentication; IPv4, IPv6 and
domain names, which the target resolves) where each connection gets a session of its own
(AWS-StartPortForwardingSessionToRemoteHost) to the host and port it asks for. A session that
cannot start gets a SOCKS failure reply and a warning; BIND and UDP ASSOCIATE are refused.

exec runs one command (no remote shell: each argument after -- reaches the program as it
is; use sh -c '...' for shell syntax). Only a document of session type NonInteractiveCommands
with separateOutputStream set to true (one your account owns) gives stderr apart and the exit code;
AWS-StartNonInteractiveCommand sends stdout and stderr combined, after the command ended, and
no exit code. Ctrl+C is passed on to the command (SIGINT); a second Ctrl+C ends the session.

Exit status:
  0    done (shell: the remote exit code, when the agent reports one)
  N    exec: the remote command's exit code, when the document reports one
  2    bad arguments               3  configuration      4  AWS API call failed
  5    connection failed or lost   6  cannot listen      7  session could not start
  8    timed out                   9  target not found, ambiguous, or DNS failed
  10   ended, remote exit code unknown: the agent reports none for shells (the default
       shell document and AWS-StartInteractiveCommand) nor for exec with
       AWS-StartNonInteractiveCommand, and -1 for a command killed by a signal; only
       NonInteractiveCommands documents with separate output streams report one
  70   local failure
  130  exec: Ctrl+C was passed on to the remote command (the agent then reports 1,
       whatever the command did)
  128+N  ended by signal N (130 Ctrl+C, 129 SIGHUP, 143 SIGTERM) after ending the
       session at the service; a forward ended by Ctrl+C exits 0, as the plugin does";

/// Reach AWS instances over Systems Manager Session Manager, natively.
#[derive(Parser, Debug)]
#[command(name = "ssmconnect", version, about, after_help = EXAMPLES)]
struct Cli {
    #[command(flatten)]
    aws: AwsArgs,
    /// Seconds to keep trying to restore a lost connection before giving up.
    #[arg(long, global = true, default_value_t = 120, value_name = "SECONDS")]
    reconnect_timeout: u64,
    /// MiB of data held out of order behind a lost message. On a lossy link the agent resends
    /// only its oldest unacknowledged message, once per 100 ms, so data beyond this waits for
    /// a resend of its own; raise it for large transfers over a link that loses messages.
    #[arg(long, global = true, default_value_t = 32, value_name = "MIB", value_parser = clap::value_parser!(u16).range(1..=4096))]
    reorder_buffer_mib: u16,
    /// Milliseconds the session's socket is left unread after each read while a slow stream of
    /// full 1 KiB messages arrives (the agent's pace): fewer wake-ups, less CPU. Keystrokes,
    /// short replies and fast streams are never held; 0 turns it off. At most 20: a held
    /// message's ack waits up to a hold (two when the service's Nagle holds its messages), and
    /// the agent's retransmission timeout stays only 10 ms or more above its smoothed round trip
    /// (protocol notes §4.5), so longer holds could make it resend what we have.
    #[arg(long, global = true, default_value_t = ChannelOptions::default().read_coalesce.as_millis() as u64, value_name = "MS", value_parser = clap::value_parser!(u64).range(0..=20))]
    read_coalesce_ms: u64,
    /// More log output on stderr (-v info, -vv debug, -vvv trace).
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    verbose: u8,
    #[command(subcommand)]
    command: Command,
}

#[derive(Args, Debug)]
struct AwsArgs {
    /// AWS profile name.
    #[arg(long, global = true, env = "AWS_PROFILE", hide_env_values = true)]
    profile: Option<String>,
    /// AWS region.
    #[arg(long, global = true)]
    region: Option<String>,
    /// SSM endpoint URL (AWS_ENDPOINT_URL_SSM is honoured too; EC2, EC2 Instance Connect and KMS
    /// follow AWS_ENDPOINT_URL_EC2, AWS_ENDPOINT_URL_EC2_INSTANCE_CONNECT and
    /// AWS_ENDPOINT_URL_KMS).
    #[arg(long, global = true)]
    endpoint_url: Option<String>,
    /// PEM file of CA certificates to trust besides the system's, for the AWS API calls and the
    /// session's WebSocket alike (a private CA, a TLS-inspecting proxy).
    #[arg(long, global = true, value_name = "FILE", env = "AWS_CA_BUNDLE")]
    ca_bundle: Option<std::path::PathBuf>,
    /// DNS server for DNS-name targets, ADDR or ADDR:PORT (default: the system's resolver).
    #[arg(long, global = true, value_name = "ADDR:PORT", value_parser = |s: &str| ssm_session::parse_dns_server(s).map_err(|e| e.to_string()))]
    dns_server: Option<SocketAddr>,
    /// Why the session is started: StartSession's Reason, kept in the session's audit trail
    /// (1 to 256 characters, no line breaks).
    #[arg(long, global = true, value_name = "TEXT")]
    reason: Option<String>,
}

impl Cli {
    fn settings(&self) -> Settings {
        Settings {
            aws: AwsOptions {
                profile: self.aws.profile.clone(),
                region: self.aws.region.clone(),
                ca_bundle: self.aws.ca_bundle.clone(),
                ..AwsOptions::default()
            },
            endpoints: Endpoints {
                ssm: self.aws.endpoint_url.clone(),
                ..Endpoints::default()
            },
            dns_server: self.aws.dns_server,
            reason: self.aws.reason.clone(),
            channel: ChannelOptions {
                reconnect_for: std::time::Duration::from_secs(self.reconnect_timeout),
                reorder_buffer_bytes: usize::from(self.reorder_buffer_mib) << 20,
                read_coalesce: std::time::Duration::from_millis(self.read_coalesce_ms),
                ..ChannelOptions::default()
            },
        }
    }
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Forward a local port to a port on the target (or on a host behind it).
    Forward {
        /// Instance or managed node id, key:value tag, IP address or DNS name.
        target: String,
        /// Port on the target.
        remote_port: u16,
        /// Local port; 0 picks a free one.
        #[arg(long, default_value_t = 0)]
        local_port: u16,
        /// Local address to listen on.
        #[arg(long, default_value = "127.0.0.1")]
        local_address: IpAddr,
        /// Reach this host through the target instead of the target itself.
        #[arg(long)]
        remote_host: Option<String>,
        /// Give each local connection a session of its own (terminated when the connection
        /// ends). The agent paces each session to about 1 MB/s towards the client, shared by
        /// all connections of a session; separate sessions lift that for parallel downloads.
        #[arg(long)]
        session_per_connection: bool,
        /// Sessions started ahead with --session-per-connection, so a new connection does not
        /// wait for one to start [default: 1].
        #[arg(long, value_name = "N", requires = "session_per_connection")]
        warm_sessions: Option<usize>,
        /// Session document of type Port in place of AWS-StartPortForwardingSession (or
        /// AWS-StartPortForwardingSessionToRemoteHost with --remote-host).
        #[arg(long)]
        document: Option<String>,
    },
    /// A SOCKS5 proxy through the target (dynamic forwarding): each connection gets a session of
    /// its own to the host and port it asks for (AWS-StartPortForwardingSessionToRemoteHost),
    /// terminated when the connection ends.
    Socks {
        /// Instance or managed node id, key:value tag, IP address or DNS name.
        target: String,
        /// Local port; 0 picks a free one.
        #[arg(long, default_value_t = 0)]
        local_port: u16,
        /// Local address to listen on.
        #[arg(
            long,
            visible_alias = "local-address",
            value_name = "ADDR",
            default_value = "127.0.0.1"
        )]
        bind: IpAddr,
        /// Session document of type Port taking `host` and `portNumber`, in place of
        /// AWS-StartPortForwardingSessionToRemoteHost.
        #[arg(long)]
        document: Option<String>,
    },
    /// Open an interactive shell on the target. With stdin not a terminal, stdin is sent to the
    /// remote shell and its end ends the session (`ssmconnect shell i-… < script.sh`).
    /// The agent reports no exit code for shells, so a shell that ends exits with 10 (unknown);
    /// a document that reports the remote exit code (NonInteractiveCommands) exits with it.
    Shell {
        /// Instance or managed node id, key:value tag, IP address or DNS name.
        target: String,
        /// Session document (default: the account's shell preferences).
        #[arg(long)]
        document: Option<String>,
        /// Document parameter NAME=VALUE (repeatable).
        #[arg(long = "parameter", value_parser = parse_parameter)]
        parameters: Vec<(String, String)>,
    },
    /// Run one command on the target (a NonInteractiveCommands session): its stdout to stdout,
    /// its stderr to stderr, its exit code as this process's own. stdin is not read. Without
    /// an exit code from the agent (AWS-StartNonInteractiveCommand) the status is 10.
    Exec {
        /// Instance or managed node id, key:value tag, IP address or DNS name.
        target: String,
        /// Session document of type NonInteractiveCommands; one with
        /// "separateOutputStream": true gives stderr apart and the exit code.
        #[arg(long, default_value = ssm_session::command::DEFAULT_DOCUMENT)]
        document: String,
        /// Document parameter NAME=VALUE besides `command` (repeatable).
        #[arg(long = "parameter", value_parser = parse_parameter)]
        parameters: Vec<(String, String)>,
        /// The program and its arguments, after `--`.
        #[arg(last = true, required = true, num_args = 1.., value_name = "COMMAND")]
        command: Vec<String>,
    },
    /// Carry an SSH connection over stdin/stdout: `ProxyCommand ssmconnect ssh-proxy %r@%h:%p`.
    SshProxy {
        /// `user@target:port`; port defaults to 22, an IPv6 target may be bracketed. The user
        /// matters only with --ec2ic.
        destination: String,
        /// Push a public key with EC2 Instance Connect first, for the destination's user.
        #[arg(long, requires = "public_key")]
        ec2ic: bool,
        /// The public key to push (the half of the key ssh's -i uses).
        #[arg(long, value_name = "FILE", requires = "ec2ic")]
        public_key: Option<std::path::PathBuf>,
        /// Session document of type Port taking `portNumber`, in place of AWS-StartSSHSession.
        #[arg(long)]
        document: Option<String>,
    },
}

fn init_logging(verbose: u8) {
    let level = match verbose {
        0 => "warn",
        1 => "info",
        2 => "debug",
        _ => "trace",
    };
    // Our crates at the chosen level; the AWS SDK's own chatter only from warnings up, and its
    // credential chain's only from errors up: what it failed to find is the error we report.
    exit::init_logging(&format!(
        "warn,aws_config=error,ssm_session={level},ssm_proto={level},ssmconnect={level}"
    ));
}

fn parse_parameter(s: &str) -> Result<(String, String), String> {
    let (k, v) = s.split_once('=').ok_or("expected NAME=VALUE")?;
    Ok((k.to_owned(), v.to_owned()))
}

/// Splits `user@target:port` into the user (empty when absent), target and port.
fn parse_destination(s: &str) -> Result<(String, String, u16), Failure> {
    let (user, host) = s.rsplit_once('@').unwrap_or(("", s));
    if let Some(rest) = host.strip_prefix('[') {
        let (ip, after) = rest
            .split_once(']')
            .ok_or_else(|| Failure::usage(format!("unclosed [ in {s:?}")))?;
        let port = match after.strip_prefix(':') {
            Some(p) => p
                .parse::<u16>()
                .map_err(|_| Failure::usage(format!("bad port in {s:?}")))?,
            None if after.is_empty() => 22,
            None => return Err(Failure::usage(format!("unexpected {after:?} after ] in {s:?}"))),
        };
        return Ok((user.to_owned(), ip.to_owned(), port));
    }
    let (target, port) = match host.rsplit_once(':') {
        Some((t, p)) => (
            t,
            p.parse::<u16>()
                .map_err(|_| Failure::usage(format!("bad port in {s:?}")))?,
        ),
        None => (host, 22),
    };
    if target.is_empty() {
        return Err(Failure::usage(format!("no target in {s:?}")));
    }
    Ok((user.to_owned(), target.to_owned(), port))
}

/// The exit code of a forward ended by `sig`: Ctrl+C is how a forward is meant to end, and
/// exits 0 as the plugin does (§7.4); other signals give 128 + their number.
fn forward_exit_code(sig: exit::Signal) -> i32 {
    if sig.is_interrupt() { 0 } else { sig.exit_code() }
}

async fn run(cli: Cli) -> Result<i32, Failure> {
    // From here on SIGINT, SIGTERM and SIGHUP no longer kill the process: each mode ends its
    // session at the service first (issue 12 item 5).
    let mut signals = exit::Signals::new();
    let connector = Connector::new(cli.settings());
    match cli.command {
        Command::Forward {
            target,
            remote_port,
            local_port,
            local_address,
            remote_host,
            session_per_connection,
            warm_sessions,
            document,
        } => {
            let spec = ForwardSpec {
                remote_port,
                remote_host,
                local_addr: SocketAddr::new(local_address, local_port),
                per_connection: session_per_connection.then(|| PerConnection {
                    warm_sessions: warm_sessions.unwrap_or(ssm_session::DEFAULT_WARM_SESSIONS),
                }),
                document,
            };
            let started = exit::unless_signalled(&mut signals, connector.forward(&target, spec, &no_stages)).await;
            let forward = match started {
                Ended::Done(f) => f?.session,
                Ended::Signalled(sig) => return Ok(forward_exit_code(sig)),
            };
            if forward.per_connection() {
                println!(
                    "Port {} opened, a session for each connection.",
                    forward.local_addr().port()
                );
            } else {
                println!(
                    "Port {} opened for sessionId {}.",
                    forward.local_addr().port(),
                    forward.session_id()
                );
            }
            println!("Waiting for connections...");
            run_forward(&mut signals, forward).await
        }
        Command::Socks {
            target,
            local_port,
            bind,
            document,
        } => {
            let spec = SocksSpec {
                local_addr: SocketAddr::new(bind, local_port),
                document,
            };
            let started = exit::unless_signalled(&mut signals, connector.socks(&target, spec, &no_stages)).await;
            let forward = match started {
                Ended::Done(f) => f?.session,
                Ended::Signalled(sig) => return Ok(forward_exit_code(sig)),
            };
            println!(
                "SOCKS5 proxy on {}, a session for each connection.",
                forward.local_addr()
            );
            println!("Waiting for connections...");
            run_forward(&mut signals, forward).await
        }
        Command::Shell {
            target,
            document,
            parameters,
        } => {
            let mut so = ssm_session::ShellOptions {
                document,
                ..Default::default()
            };
            for (k, v) in parameters {
                so.parameters.entry(k).or_default().push(v);
            }
            let dc = match exit::unless_signalled(&mut signals, connector.shell(&target, so, &no_stages)).await {
                Ended::Done(dc) => dc?.session,
                Ended::Signalled(sig) => return Ok(sig.exit_code()),
            };
            let outcome = match exit::shell_until_signalled(&mut signals, dc).await? {
                Ended::Done(outcome) => outcome,
                // The terminal is restored by now (the shell's future has ended or was dropped).
                Ended::Signalled(sig) => return Ok(sig.exit_code()),
            };
            Ok(outcome.exit_code.unwrap_or_else(|| {
                tracing::info!(
                    "the agent reported no exit code; exiting with {}",
                    exit::code::NO_EXIT_CODE
                );
                exit::code::NO_EXIT_CODE
            }))
        }
        Command::Exec {
            target,
            document,
            parameters,
            command,
        } => {
            let mut options = ssm_session::CommandOptions {
                document,
                command: ssm_session::command::quote_argv(&command),
                ..Default::default()
            };
            for (k, v) in parameters {
                options.parameters.entry(k).or_default().push(v);
            }
            let started = connector.command(&target, options, &no_stages);
            let session = match exit::unless_signalled(&mut signals, started).await {
                Ended::Done(s) => s?.session,
                Ended::Signalled(sig) => return Ok(sig.exit_code()),
            };
            match exit::command_until_signalled(&mut signals, session).await? {
                Ended::Done(ran) => {
                    if let ssm_session::End::Closed(reason) = &ran.outcome.end
                        && !reason.is_empty()
                    {
                        tracing::warn!("the session was closed: {reason}");
                    }
                    Ok(exec_exit_code(ran.interrupted, ran.outcome.exit_code))
                }
                Ended::Signalled(sig) => Ok(sig.exit_code()),
            }
        }
        Command::SshProxy {
            destination,
            ec2ic,
            public_key,
            document,
        } => {
            let (user, target, port) = parse_destination(&destination)?;
            let key = match (ec2ic, public_key) {
                (true, Some(path)) => {
                    if user.is_empty() {
                        return Err(Failure::usage(
                            "--ec2ic needs the OS user: user@target:port (ProxyCommand: %r@%h:%p)",
                        ));
                    }
                    let public_key = std::fs::read_to_string(&path)
                        .map_err(|e| Failure::usage(format!("cannot read {}: {e}", path.display())))?;
                    Some(KeyPush {
                        os_user: user,
                        public_key,
                    })
                }
                (true, None) => return Err(Failure::usage("--ec2ic needs --public-key FILE")),
                (false, _) => None,
            };
            let opened = connector.ssh_channel_with(&target, port, key, document.as_deref(), &no_stages);
            let dc = match exit::unless_signalled(&mut signals, opened).await {
                Ended::Done(dc) => dc?.session,
                Ended::Signalled(sig) => return Ok(sig.exit_code()),
            };
            exit::pipe_stdio_until_signalled(&mut signals, dc).await
        }
    }
}

/// Runs a started forward until it ends or a signal stops it.
async fn run_forward(signals: &mut exit::Signals, mut forward: ssm_session::PortForward) -> Result<i32, Failure> {
    let stopper = forward.stopper();
    let stop = |_| async move {
        eprintln!("Terminate signal received, exiting.");
        let _ = stopper.send(true);
    };
    match exit::until_signalled(signals, forward.wait(), stop).await {
        Ended::Done(end) => {
            end?;
            Ok(0)
        }
        Ended::Signalled(sig) => Ok(forward_exit_code(sig)),
    }
}

/// The exit status of `exec`: 130 after Ctrl+C was passed on, else the remote exit code when the
/// agent reported one in 0..=255, else [`exit::code::NO_EXIT_CODE`].
fn exec_exit_code(interrupted: bool, remote: Option<i32>) -> i32 {
    match remote {
        _ if interrupted => exit::code::INTERRUPTED,
        Some(code) if (0..=255).contains(&code) => code,
        Some(code) => {
            tracing::warn!(
                "the agent reported exit code {code} (-1: the command was killed by a signal); exiting with {}",
                exit::code::NO_EXIT_CODE
            );
            exit::code::NO_EXIT_CODE
        }
        None => {
            tracing::info!(
                "the document reports no exit code; exiting with {}",
                exit::code::NO_EXIT_CODE
            );
            exit::code::NO_EXIT_CODE
        }
    }
}

fn main() {
    let args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    if let Some(mode) = plugin::detect(&args) {
        std::process::exit(plugin::main(mode, args));
    }
    let cli = Cli::parse();
    init_logging(cli.verbose);
    std::process::exit(exit::run(run(cli)));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn destinations_parse() {
        let d = |s: &str| parse_destination(s).map_err(|f| f.message).unwrap();
        let t = |u: &str, h: &str, p: u16| (u.to_owned(), h.to_owned(), p);
        assert_eq!(d("ec2-user@i-0abc:2222"), t("ec2-user", "i-0abc", 2222));
        assert_eq!(d("i-0abc"), t("", "i-0abc", 22));
        assert_eq!(d("a@b@i-0abc:22"), t("a@b", "i-0abc", 22));
        assert_eq!(d("u@Name:web:22"), t("u", "Name:web", 22));
        assert_eq!(d("u@[fd00::5]:2222"), t("u", "fd00::5", 2222));
        assert_eq!(d("u@[fd00::5]"), t("u", "fd00::5", 22));
        assert_eq!(d("u@fd00::5:22"), t("u", "fd00::5", 22));
        assert!(parse_destination("u@[fd00::5").is_err());
        assert!(parse_destination("u@:22").is_err());
        assert!(parse_destination("u@i-1:notaport").is_err());
    }

    #[test]
    fn exec_exit_codes() {
        assert_eq!(exec_exit_code(false, Some(0)), 0);
        assert_eq!(exec_exit_code(false, Some(255)), 255);
        assert_eq!(exec_exit_code(false, Some(-1)), exit::code::NO_EXIT_CODE);
        assert_eq!(exec_exit_code(false, Some(256)), exit::code::NO_EXIT_CODE);
        assert_eq!(exec_exit_code(false, None), exit::code::NO_EXIT_CODE);
        assert_eq!(exec_exit_code(true, Some(1)), 130);
    }

    #[test]
    fn exec_needs_a_command_after_the_separator() {
        use clap::Parser;
        let parsed = Cli::try_parse_from(["ssmconnect", "exec", "i-1", "--", "ls", "-l", "--", "x"]).unwrap();
        match parsed.command {
            Command::Exec { command, document, .. } => {
                assert_eq!(command, ["ls", "-l", "--", "x"]);
                assert_eq!(document, "AWS-StartNonInteractiveCommand");
            }
            other => panic!("{other:?}"),
        }
        assert!(Cli::try_parse_from(["ssmconnect", "exec", "i-1"]).is_err());
        assert!(Cli::try_parse_from(["ssmconnect", "exec", "i-1", "ls"]).is_err());
    }

    #[test]
    fn read_holds_are_bounded_by_the_agents_retransmission_margin() {
        use clap::Parser;
        let hold = |ms: &str| Cli::try_parse_from(["ssmconnect", "--read-coalesce-ms", ms, "exec", "i-1", "--", "ls"]);
        assert_eq!(hold("20").unwrap().read_coalesce_ms, 20);
        assert_eq!(hold("0").unwrap().read_coalesce_ms, 0);
        assert!(hold("21").is_err());
        let default = Cli::try_parse_from(["ssmconnect", "exec", "i-1", "--", "ls"]).unwrap();
        assert_eq!(default.read_coalesce_ms, 16);
    }

    #[test]
    fn cli_definition_is_consistent() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }
}
