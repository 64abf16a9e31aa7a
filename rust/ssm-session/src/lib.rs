//! The SSMConnect client runtime: everything between a target id and bytes flowing.
//!
//! The way in is [`Connector`]: built once from [`Settings`], it resolves a target and starts a
//! forward, a SOCKS5 proxy (dynamic forwarding, [`socks`]), a shell or an ssh stream session
//! with it.
//!
//! What it is: AWS configuration and the SSM calls (`StartSession`, `ResumeSession`,
//! `TerminateSession`, §1.1 of `ssm-protocol.md`), the data-channel driver that runs
//! `ssm-proto` over a tokio-tungstenite WebSocket with reconnects (§2, §8), and the session kinds
//! built on it: port forwarding in basic and smux mode (§7.3, §7.4) the stdio mode behind
//! ssh `ProxyCommand` (§7.5), shell sessions on the local terminal (§6), and command sessions
//! with their stdout, stderr and exit code ([`command`], §6.5), any of them KMS-encrypted when
//! the agent asks ([`kms`], §5.6). Also target
//! resolution (instance ids, tags, IP addresses and DNS names to one running instance, through
//! EC2 `DescribeInstances` and hickory DNS, in [`resolve`]), EC2 Instance Connect key pushes
//! ([`ec2ic`]) and Windows passwords for RDP ([`windows`]).
//!
//! What it is not: a terminal UI or a command line; the `ssmconnect` helper and the C ABI wrap
//! it. Tokens never appear in its logs, errors or `Debug` output.

pub mod aws;
pub mod command;
pub mod connect;
pub mod driver;
pub mod ec2ic;
pub mod error;
pub mod kms;
pub mod per_connection;
pub mod port;
pub mod resolve;
pub mod shell;
mod socket;
pub mod socks;
pub mod stdio;
pub mod tls;
pub mod windows;

pub use aws::{AwsOptions, SsmApi, StartedSession, Token};
pub use command::{CommandOptions, CommandOutcome, CommandSession, Output};
pub use connect::{
    Connected, Connector, Endpoints, ForwardSpec, KeyPush, Settings, SocksSpec, Stage, StageFn, no_stages,
};
pub use driver::{ChannelOptions, DataChannel, DataSender, End, PortStart, SessionStart};
pub use error::{Candidate, Error, ErrorKind, Result};
pub use port::{DEFAULT_WARM_SESSIONS, ForwardOptions, ForwardStats, PerConnection, PortForward};
pub use resolve::{ResolveOptions, ResolvedTarget, parse_dns_server, resolve_session_target, resolve_target};
pub use shell::{ShellOptions, ShellOutcome};
pub use tls::Trust;

/// Makes ring the process-wide rustls provider (idempotent).
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}
