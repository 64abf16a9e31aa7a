//! A loopback stand-in for the AWS side of Session Manager, for tests and the demo.
//!
//! What it is: one HTTP server on 127.0.0.1 (HTTPS with [`Config::tls`]) that answers the SSM API calls a client makes
//! (`StartSession`, `ResumeSession`, `TerminateSession` over awsJson1.1, §1.1, §11.1) and serves
//! the data-channel WebSocket playing MGS and the SSM Agent together (§11.2, §11.3): the
//! handshake with a configurable agent version, port sessions in basic and smux mode chosen as the
//! real agent chooses (§7.1), `AWS-StartSSHSession` stdio mode, the agent's pacing (1024-byte
//! reads with a 1 ms pause, §9) or none, and fault injection on frames in both directions (§11.4).
//! Port sessions dial real TCP destinations on this machine. With an inventory, it also answers
//! EC2 `DescribeInstances` (query protocol, with EC2's filters and paging) and EC2 Instance
//! Connect `SendSSHPublicKey`, writing pushed keys to an authorized_keys file it manages for a
//! real sshd, for as long as EC2 would honour them.
//!
//! What it is not: a security boundary or a model of IAM. Signatures are not checked; any
//! credentials work. Tokens are still single-use and can expire, because clients must cope.

mod agent;
mod api;
mod command;
mod config;
mod ec2;
pub mod faults;
mod instance_connect;
mod kms;
mod link;
mod port;
mod reply;
mod shell;
mod state;
mod timer;
mod tls;

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio::task::JoinHandle;

pub use config::{AgentRetransmit, Config, Pacing, ResumeEnded};
pub use ec2::{Instance, InstanceState};
pub use faults::Faults;
pub use instance_connect::PushedKey;
use state::Shared;
pub use state::{EmulatorStats, SessionInfo};

/// What the listener does to each socket it accepts, before TLS and HTTP: `TCP_NODELAY` as
/// [`Config::mgs_nodelay`] says, and the outcome counted in [`EmulatorStats`].
#[derive(Clone)]
struct MgsSocket(Arc<Shared>);

impl MgsSocket {
    fn configure(&self, tcp: &tokio::net::TcpStream) {
        if let Err(e) = tcp.set_nodelay(self.0.config.mgs_nodelay) {
            tracing::debug!("accepted socket: cannot set TCP_NODELAY: {e}");
        }
        let counters = &self.0.counters;
        match tcp.nodelay() {
            Ok(true) => state::Counters::add(&counters.accepted_nodelay, 1),
            Ok(false) => state::Counters::add(&counters.accepted_nagle, 1),
            Err(e) => tracing::debug!("accepted socket: TCP_NODELAY unknown: {e}"),
        }
    }
}

impl<S> axum_server::accept::Accept<tokio::net::TcpStream, S> for MgsSocket {
    type Stream = tokio::net::TcpStream;
    type Service = S;
    type Future = std::future::Ready<std::io::Result<(Self::Stream, Self::Service)>>;

    fn accept(&self, stream: tokio::net::TcpStream, service: S) -> Self::Future {
        self.configure(&stream);
        std::future::ready(Ok((stream, service)))
    }
}

/// A running emulator. Dropping it stops the server and every session.
pub struct Emulator {
    addr: SocketAddr,
    shared: Arc<Shared>,
    ca_pem: Option<String>,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
}

impl Emulator {
    /// Binds 127.0.0.1 on a port the OS picks and starts serving.
    pub async fn start(config: Config) -> std::io::Result<Self> {
        Self::bind(config, SocketAddr::from(([127, 0, 0, 1], 0))).await
    }

    /// Binds `addr` and starts serving.
    pub async fn bind(config: Config, addr: SocketAddr) -> std::io::Result<Self> {
        let listener = TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let pki = if config.tls { Some(tls::issue(addr.ip())?) } else { None };
        let shared = Arc::new(Shared::new(config, addr));
        let app = api::router(shared.clone());
        let shared_accept = shared.clone();
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let ca_pem = pki.as_ref().map(|p| p.ca_pem.clone());
        let task = match pki {
            None => tokio::spawn(async move {
                let accepted = MgsSocket(shared_accept);
                let listener = axum::serve::ListenerExt::tap_io(listener, move |tcp| accepted.configure(tcp));
                let serve = axum::serve(listener, app).with_graceful_shutdown(async {
                    let _ = rx.await;
                });
                if let Err(e) = serve.await {
                    tracing::error!("emulator server stopped: {e}");
                }
            }),
            Some(pki) => {
                let config = axum_server::tls_rustls::RustlsConfig::from_config(pki.server);
                let handle = axum_server::Handle::new();
                let server = axum_server::tls_rustls::from_tcp_rustls(listener.into_std()?, config)?
                    .map(|tls| tls.acceptor(MgsSocket(shared_accept)))
                    .handle(handle.clone());
                tokio::spawn(async move {
                    let serve = server.serve(app.into_make_service());
                    tokio::pin!(serve);
                    let outcome = tokio::select! {
                        outcome = &mut serve => outcome,
                        _ = rx => {
                            handle.graceful_shutdown(None);
                            serve.await
                        }
                    };
                    if let Err(e) = outcome {
                        tracing::error!("emulator server stopped: {e}");
                    }
                })
            }
        };
        Ok(Self {
            addr,
            shared,
            ca_pem,
            shutdown: Some(tx),
            task: Some(task),
        })
    }

    /// Address the server listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Base URL of the API endpoints (SSM and the control routes): `https://` with
    /// [`Config::tls`], else `http://`.
    pub fn endpoint(&self) -> String {
        let scheme = if self.ca_pem.is_some() { "https" } else { "http" };
        format!("{scheme}://{}", self.addr)
    }

    /// With [`Config::tls`]: the PEM certificate of the test CA that signed the server's
    /// certificate, for clients to trust (as `AWS_CA_BUNDLE`). `None` when serving plain HTTP.
    pub fn ca_pem(&self) -> Option<&str> {
        self.ca_pem.as_deref()
    }

    /// Replaces the fault settings for frames from now on.
    pub fn set_faults(&self, faults: Faults) {
        self.shared.set_faults(faults);
    }

    /// Counters of what the emulator saw.
    pub fn stats(&self) -> EmulatorStats {
        self.shared.stats()
    }

    /// EC2 Instance Connect keys that are still valid.
    pub fn instance_connect_keys(&self) -> Vec<PushedKey> {
        self.shared.instance_connect.list()
    }

    /// A description of every session so far.
    pub fn sessions(&self) -> Vec<SessionInfo> {
        self.shared.session_infos()
    }

    /// Stops the server and ends all sessions.
    pub async fn stop(mut self) {
        if let Some(task) = self.halt() {
            let _ = task.await;
        }
    }

    /// Ends all sessions, empties the key files and aborts the server; returns its task.
    fn halt(&mut self) -> Option<JoinHandle<()>> {
        self.shared.terminate_all();
        self.shared.instance_connect.clear();
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        let task = self.task.take()?;
        task.abort();
        Some(task)
    }
}

impl Drop for Emulator {
    fn drop(&mut self) {
        self.halt();
    }
}
