//! Exit codes and the mapping from errors to them. One line on stderr per failure.

use ssm_session::{Error, ErrorKind};

/// Distinct exit codes, stable for scripts.
pub mod code {
    /// Bad arguments.
    pub const USAGE: i32 = 2;
    /// Configuration problem (no region, bad endpoint, conflicting credentials).
    pub const CONFIG: i32 = 3;
    /// An AWS API call failed (unknown target, access denied, …).
    pub const API: i32 = 4;
    /// The data channel could not be opened or was lost for good.
    pub const CONNECT: i32 = 5;
    /// The local port could not be bound.
    pub const LISTEN: i32 = 6;
    /// The session could not start (handshake, unsupported feature).
    pub const SESSION: i32 = 7;
    /// The session timed out.
    pub const TIMEOUT: i32 = 8;
    /// The target matched no running instance, or several, or DNS failed while resolving it.
    pub const TARGET: i32 = 9;
    /// A shell session ended normally but the agent reported no exit code. Always the case for
    /// the default shell and AWS-StartInteractiveCommand: the agent's pty path sends none
    /// (§6.5); a remote status of 10 itself is told apart only by the documents that report one.
    pub const NO_EXIT_CODE: i32 = 10;
    /// Local I/O or runtime failure.
    pub const INTERNAL: i32 = 70;
}

/// A failure to report: message and exit code.
#[derive(Debug)]
pub struct Failure {
    pub code: i32,
    pub message: String,
}

impl Failure {
    pub fn usage(message: impl Into<String>) -> Self {
        Self {
            code: code::USAGE,
            message: message.into(),
        }
    }
}

impl From<Error> for Failure {
    fn from(e: Error) -> Self {
        let code = match e.kind() {
            ErrorKind::Config => code::CONFIG,
            ErrorKind::Api => code::API,
            ErrorKind::Listen => code::LISTEN,
            ErrorKind::Connection => code::CONNECT,
            ErrorKind::Session => code::SESSION,
            ErrorKind::TimedOut => code::TIMEOUT,
            ErrorKind::Io => code::INTERNAL,
            ErrorKind::Cancelled => 130,
            ErrorKind::InvalidTarget => code::USAGE,
            ErrorKind::TargetNotFound | ErrorKind::AmbiguousTarget | ErrorKind::TargetLookup => code::TARGET,
        };
        Self {
            code,
            message: e.to_string(),
        }
    }
}

/// Sets up log output on stderr: `SSMCONNECT_LOG` if set, else `filter` (an `EnvFilter`).
pub fn init_logging(filter: &str) {
    let filter = std::env::var("SSMCONNECT_LOG").unwrap_or_else(|_| filter.to_owned());
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
        .with_writer(std::io::stderr)
        // No colour codes when stderr is a file or a pipe (logs, ssh's stderr, CI).
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_target(false)
        .try_init();
}

/// Runs `work` on a new runtime and turns its outcome into the exit code, with one line on
/// stderr for a failure.
pub fn run(work: impl std::future::Future<Output = Result<i32, Failure>>) -> i32 {
    let outcome = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| Failure {
            code: code::INTERNAL,
            message: format!("cannot start the runtime: {e}"),
        })
        .and_then(|runtime| {
            let outcome = runtime.block_on(work);
            runtime.shutdown_timeout(std::time::Duration::from_secs(1));
            outcome
        });
    outcome.unwrap_or_else(|f| {
        eprintln!("ssmconnect: {}", f.message);
        f.code
    })
}

/// Resolves on Ctrl+C, and on SIGTERM/SIGHUP on Unix.
pub async fn interrupted() {
    let mut signals = Signals::new();
    std::future::poll_fn(|cx| signals.poll_any(cx)).await;
}

/// Longest wait for a stream session to drain and be terminated after a signal.
pub const STOP_GRACE: std::time::Duration = std::time::Duration::from_secs(8);

/// The terminating signals of [`interrupted`], registered when this is created: a signal that
/// arrives after `new` is never missed, however late the first poll comes.
pub struct Signals {
    #[cfg(unix)]
    streams: Vec<tokio::signal::unix::Signal>,
    #[cfg(not(unix))]
    ctrl_c: std::pin::Pin<Box<dyn std::future::Future<Output = std::io::Result<()>> + Send>>,
}

impl Signals {
    /// Registers the handlers (inside a runtime).
    pub fn new() -> Self {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{SignalKind, signal};
            let streams = [SignalKind::interrupt(), SignalKind::terminate(), SignalKind::hangup()]
                .into_iter()
                .filter_map(|k| signal(k).ok())
                .collect();
            Self { streams }
        }
        #[cfg(not(unix))]
        {
            Self {
                ctrl_c: Box::pin(tokio::signal::ctrl_c()),
            }
        }
    }

    /// Ready once any of the signals has arrived since `new`.
    pub fn poll_any(&mut self, cx: &mut std::task::Context<'_>) -> std::task::Poll<()> {
        #[cfg(unix)]
        {
            for s in &mut self.streams {
                if s.poll_recv(cx).is_ready() {
                    return std::task::Poll::Ready(());
                }
            }
            std::task::Poll::Pending
        }
        #[cfg(not(unix))]
        {
            self.ctrl_c.as_mut().poll(cx).map(|_| ())
        }
    }
}

/// Reads from `inner` until a terminating signal arrives, then reports end of input. A stream
/// session (ssh `ProxyCommand`) then ends as it does at EOF: what was read is delivered and the
/// session is terminated, instead of being left open on the service when ssh hangs up on its
/// proxy (ssh sends SIGHUP to it when it exits). Signals count from `new` on.
pub struct EofOnSignal<R> {
    inner: R,
    signals: Signals,
    hit: bool,
}

impl<R> EofOnSignal<R> {
    pub fn new(inner: R) -> Self {
        Self {
            inner,
            signals: Signals::new(),
            hit: false,
        }
    }
}

impl<R: tokio::io::AsyncRead + Unpin> tokio::io::AsyncRead for EofOnSignal<R> {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        if !self.hit && self.signals.poll_any(cx).is_ready() {
            self.hit = true;
        }
        if self.hit {
            return std::task::Poll::Ready(Ok(()));
        }
        std::pin::Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

/// Resolves [`STOP_GRACE`] after a terminating signal: the bound on a clean stop.
pub async fn interrupted_and_grace() {
    interrupted().await;
    tokio::time::sleep(STOP_GRACE).await;
}
