//! Exit codes and the mapping from errors to them. One line on stderr per failure.

use ssm_session::{Error, ErrorKind};

/// Distinct exit codes, stable for scripts.
pub mod code {
    /// Bad arguments.
    pub const USAGE: i32 = 2;
    /// Configuration problem (no region, bad endpoint, conflicting credentials, no credentials,
    /// expired credentials).
    pub const CONFIG: i32 = 3;
    /// An AWS API call failed (target not connected, access denied, endpoint unreachable, …).
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
    /// A session ended normally but the agent reported no exit code. Always the case for the
    /// default shell and AWS-StartInteractiveCommand (the agent's pty path sends none) and for
    /// `exec` with AWS-StartNonInteractiveCommand (combined output, no exit code, §6.5); also
    /// `exec` when the agent reports -1 (the command was killed by a signal). A remote status
    /// of 10 itself is told apart only by the documents that report one.
    pub const NO_EXIT_CODE: i32 = 10;
    /// KMS encryption of the session failed: no `kms:GenerateDataKey` permission, the key
    /// missing or disabled, the agent's challenge not verifying, or a tampered message (§5.6).
    pub const KMS: i32 = 11;
    /// `exec` after Ctrl+C was passed on to the remote command: the agent's reported code is
    /// then 1 whatever the command did (its handler reaps the command itself, §6.5).
    pub const INTERRUPTED: i32 = 130;
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
            ErrorKind::Config | ErrorKind::NoCredentials | ErrorKind::CredentialsExpired => code::CONFIG,
            ErrorKind::Api | ErrorKind::EndpointUnreachable | ErrorKind::TargetNotConnected => code::API,
            ErrorKind::Listen => code::LISTEN,
            ErrorKind::Connection => code::CONNECT,
            ErrorKind::Session => code::SESSION,
            ErrorKind::KmsAccessDenied
            | ErrorKind::KmsKeyUnavailable
            | ErrorKind::KmsChallengeFailed
            | ErrorKind::KmsTampered => code::KMS,
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
///
/// The runtime has one thread: a session's driver and its local copies hand every message to
/// each other, and on one thread that is a function call instead of a thread wake-up (the
/// multi-threaded runtime spent a fifth of the helper's CPU switching threads in an unpaced
/// download). Blocking work (stdin, files) still runs on tokio's blocking pool.
pub fn run(work: impl std::future::Future<Output = Result<i32, Failure>>) -> i32 {
    let outcome = tokio::runtime::Builder::new_current_thread()
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

/// A terminating signal that arrived (on Windows: a console control event).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Signal {
    /// Its name, for messages.
    pub name: &'static str,
    number: i32,
}

impl Signal {
    const INTERRUPT: i32 = 2;

    /// 128 + the signal number, the code a shell reports for a death by it.
    pub fn exit_code(self) -> i32 {
        128 + self.number
    }

    /// Ctrl+C (SIGINT).
    pub fn is_interrupt(self) -> bool {
        self.number == Self::INTERRUPT
    }
}

/// Longest wait, after a signal, for a session to end at the service: draining what we sent
/// (`drain_timeout`, 5 s) and TerminateSession (5 s at most), with some room.
pub const STOP_GRACE: std::time::Duration = std::time::Duration::from_secs(12);

/// Longest wait, after a start abandoned on a signal, for the TerminateSession calls it left.
const ABANDON_GRACE: std::time::Duration = std::time::Duration::from_secs(6);

/// The terminating signals (SIGINT, SIGTERM and SIGHUP on Unix; Ctrl+C, Ctrl+Break and closing
/// the console on Windows), registered when this is created: from then on they no longer kill
/// the process, and one that arrives is never missed, however late the first poll comes.
pub struct Signals {
    #[cfg(unix)]
    streams: Vec<(Signal, tokio::signal::unix::Signal)>,
    #[cfg(not(unix))]
    ctrl_c: Option<tokio::signal::windows::CtrlC>,
    #[cfg(not(unix))]
    ctrl_break: Option<tokio::signal::windows::CtrlBreak>,
    #[cfg(not(unix))]
    ctrl_close: Option<tokio::signal::windows::CtrlClose>,
}

impl Signals {
    /// Registers the handlers (inside a runtime).
    pub fn new() -> Self {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{SignalKind, signal};
            let streams = [
                ("SIGINT", SignalKind::interrupt()),
                ("SIGTERM", SignalKind::terminate()),
                ("SIGHUP", SignalKind::hangup()),
            ]
            .into_iter()
            .filter_map(|(name, kind)| {
                let number = kind.as_raw_value();
                signal(kind).ok().map(|s| (Signal { name, number }, s))
            })
            .collect();
            Self { streams }
        }
        #[cfg(not(unix))]
        {
            use tokio::signal::windows;
            Self {
                ctrl_c: windows::ctrl_c().ok(),
                ctrl_break: windows::ctrl_break().ok(),
                ctrl_close: windows::ctrl_close().ok(),
            }
        }
    }

    /// Ready once any of the signals has arrived since `new` (or since the last one it
    /// reported).
    pub fn poll_any(&mut self, cx: &mut std::task::Context<'_>) -> std::task::Poll<Signal> {
        use std::task::Poll;
        #[cfg(unix)]
        {
            for (sig, stream) in &mut self.streams {
                if stream.poll_recv(cx).is_ready() {
                    return Poll::Ready(*sig);
                }
            }
            Poll::Pending
        }
        #[cfg(not(unix))]
        {
            // The C runtime's numbers: SIGINT 2, SIGBREAK 21; a closed console is a hang-up.
            if let Some(s) = self.ctrl_c.as_mut()
                && s.poll_recv(cx).is_ready()
            {
                return Poll::Ready(Signal {
                    name: "Ctrl+C",
                    number: 2,
                });
            }
            if let Some(s) = self.ctrl_break.as_mut()
                && s.poll_recv(cx).is_ready()
            {
                return Poll::Ready(Signal {
                    name: "Ctrl+Break",
                    number: 21,
                });
            }
            if let Some(s) = self.ctrl_close.as_mut()
                && s.poll_recv(cx).is_ready()
            {
                return Poll::Ready(Signal {
                    name: "console closed",
                    number: 1,
                });
            }
            Poll::Pending
        }
    }

    /// The next signal.
    pub async fn next(&mut self) -> Signal {
        std::future::poll_fn(|cx| self.poll_any(cx)).await
    }
}

/// How a piece of work under [`Signals`] ended.
pub enum Ended<T> {
    /// It ended by itself.
    Done(T),
    /// A signal arrived first; the session was ended (or its end given its time).
    Signalled(Signal),
}

/// Runs `work`, which starts a session. On a signal it is abandoned: dropping it ends at the
/// service what it started (on tasks of its own, waited for here, bounded).
pub async fn unless_signalled<T>(signals: &mut Signals, work: impl std::future::Future<Output = T>) -> Ended<T> {
    let sig = tokio::select! {
        // The work first: what its first poll begins (a pending session) is ended on drop.
        biased;
        out = work => return Ended::Done(out),
        sig = signals.next() => sig,
    };
    tracing::info!("{} received while starting; abandoning the start", sig.name);
    settle_abandoned().await;
    Ended::Signalled(sig)
}

/// Waits (bounded) for the TerminateSession calls that abandoned work left running.
async fn settle_abandoned() {
    if !ssm_session::aws::detached_calls_done(ABANDON_GRACE).await {
        tracing::warn!("TerminateSession for an abandoned session did not finish within {ABANDON_GRACE:?}");
    }
}

/// Runs `work`, which runs a session until it ends. On a signal, `stop` is called (it asks
/// the session to end: drain, TerminateSession) and `work` is given [`STOP_GRACE`] to end; a
/// second signal stops waiting. This is the one way every mode handles signals (issue 12
/// item 5); the caller exits with [`Signal::exit_code`] once this returns, when `work` has
/// ended or been dropped (and the terminal with it restored).
pub async fn until_signalled<T, S>(
    signals: &mut Signals,
    work: impl std::future::Future<Output = T>,
    stop: impl FnOnce(Signal) -> S,
) -> Ended<T>
where
    S: std::future::Future<Output = ()>,
{
    let mut work = Box::pin(work);
    let sig = tokio::select! {
        biased;
        out = &mut work => return Ended::Done(out),
        sig = signals.next() => sig,
    };
    end_after_signal(signals, work, stop, sig).await
}

/// What [`until_signalled`] does once `sig` has arrived: `stop`, then [`STOP_GRACE`] for `work`
/// to end (a second signal stops waiting). For modes that react to a first signal otherwise
/// (exec passes Ctrl+C on to the remote command) and end the session on a later one.
pub async fn end_after_signal<T, S>(
    signals: &mut Signals,
    mut work: std::pin::Pin<Box<impl std::future::Future<Output = T>>>,
    stop: impl FnOnce(Signal) -> S,
    sig: Signal,
) -> Ended<T>
where
    S: std::future::Future<Output = ()>,
{
    tracing::info!("{} received; ending the session", sig.name);
    let ended = async {
        stop(sig).await;
        let _ = (&mut work).await;
    };
    let done = tokio::select! {
        r = tokio::time::timeout(STOP_GRACE, ended) => {
            if r.is_err() {
                tracing::warn!("the session did not end within {STOP_GRACE:?} of {}", sig.name);
            }
            r.is_ok()
        }
        again = signals.next() => {
            tracing::info!("{} received again; not waiting for the session", again.name);
            false
        }
    };
    if !done {
        drop(work);
        settle_abandoned().await;
    }
    Ended::Signalled(sig)
}

/// Pipes stdin and stdout through a stream session (ssh-proxy and the plugin's stdio port
/// sessions) until it ends; a signal ends the session through its sender. The exit code: 0, or
/// 128 + the signal.
pub async fn pipe_stdio_until_signalled(signals: &mut Signals, dc: ssm_session::DataChannel) -> Result<i32, Failure> {
    let sender = dc.sender();
    let stop = |_| async move { sender.finish(true).await };
    let (mut stdin, mut stdout) = (tokio::io::stdin(), tokio::io::stdout());
    let work = ssm_session::stdio::pipe(dc, ssm_proto::DEFAULT_PAYLOAD_SIZE, &mut stdin, &mut stdout);
    match until_signalled(signals, work, stop).await {
        Ended::Done(end) => {
            end?;
            Ok(0)
        }
        Ended::Signalled(sig) => Ok(sig.exit_code()),
    }
}

/// Runs a shell session on this terminal (raw mode, resize, as `ssmconnect shell` and the
/// plugin-compatible mode both do) until it ends; a signal ends the session through its sender.
/// When this returns the terminal is restored.
pub async fn shell_until_signalled(
    signals: &mut Signals,
    dc: ssm_session::DataChannel,
) -> Result<Ended<ssm_session::ShellOutcome>, Failure> {
    let sender = dc.sender();
    let stop = |_| async move { sender.finish(true).await };
    Ok(
        match until_signalled(signals, ssm_session::shell::run_on_terminal(dc), stop).await {
            Ended::Done(outcome) => Ended::Done(outcome?),
            Ended::Signalled(sig) => Ended::Signalled(sig),
        },
    )
}

/// How a command session ended by itself.
pub struct CommandRan {
    /// What the agent reported.
    pub outcome: ssm_session::CommandOutcome,
    /// Whether a Ctrl+C was passed on to the remote command.
    pub interrupted: bool,
}

/// Runs a command session to its end, its output to stdout and stderr. The first Ctrl+C goes to
/// the remote command as 0x03; a second one, or any other terminating signal, ends the session
/// as in every other mode.
pub async fn command_until_signalled(
    signals: &mut Signals,
    session: ssm_session::CommandSession,
) -> Result<Ended<CommandRan>, Failure> {
    use std::io::Write;
    let sender = session.sender();
    let (mut stdout, mut stderr) = (std::io::stdout(), std::io::stderr());
    let work = ssm_session::command::run(session, move |out| match out {
        ssm_session::Output::Stdout(data) => stdout.write_all(data).and_then(|()| stdout.flush()),
        ssm_session::Output::Stderr(data) => stderr.write_all(data).and_then(|()| stderr.flush()),
    });
    let mut work = Box::pin(work);
    let mut interrupted = false;
    let outcome = loop {
        let sig = tokio::select! {
            biased;
            outcome = &mut work => break outcome?,
            sig = signals.next() => sig,
        };
        if sig.is_interrupt() && !interrupted {
            interrupted = true;
            tracing::info!("{} passed on to the remote command; again ends the session", sig.name);
            if ssm_session::command::interrupt(&sender).await.is_ok() {
                continue;
            }
        }
        let stop = |_| async move { sender.finish(true).await };
        let _ = end_after_signal(signals, work, stop, sig).await;
        return Ok(Ended::Signalled(sig));
    };
    Ok(Ended::Done(CommandRan { outcome, interrupted }))
}
