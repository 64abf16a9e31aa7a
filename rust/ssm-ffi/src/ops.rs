//! Operations (started, waited for, cancelled) and port-forward handles.

use std::ffi::{c_char, CString};
use std::net::{IpAddr, SocketAddr};
use std::ptr::null_mut;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use interoptopus::patterns::string::AsciiPointer;
use interoptopus::{ffi_function, ffi_type};
use ssm_session::{
    CommandOptions, Connector, DataSender, ForwardSpec, ForwardStats, Output, PortForward, ShellOptions, SocksSpec,
    Stage,
};
use tokio::sync::{mpsc, watch};

use crate::wait::{self, Seen};
use crate::{
    guard, logs, parse_request, runtime, set_last_error, to_cstring, FfiError, SsmcClient, SsmcErrorKind, SsmcState,
};

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Shared by an operation's task and its handle. Whoever holds the lock neither logs nor calls
/// `wait::notify` (waiters take this lock inside the wait lock).
struct Progress {
    state: SsmcState,
    stage: String,
    stage_changes: u64,
    error: Option<FfiError>,
    exit_code: Option<i32>,
    forward: Option<Box<SsmcForward>>,
    /// An exec operation's output, not yet taken by the caller.
    output: Option<mpsc::Receiver<Output>>,
    /// Pieces of output queued so far (wakes [`ssmc_operation_wait`]).
    outputs: u64,
    /// Sends into a running exec operation's session (its interrupt).
    sender: Option<DataSender>,
    /// The instance the target resolved to, once a session is being started with it.
    instance_id: String,
}

impl Progress {
    fn fail(&mut self, e: FfiError) {
        self.state = if e.kind == SsmcErrorKind::Cancelled {
            SsmcState::Cancelled
        } else {
            SsmcState::Failed
        };
        self.error = Some(e);
    }
}

/// A piece of work running on the library's runtime. Wait with [`ssmc_operation_wait`]; free with
/// [`ssmc_operation_free`].
#[ffi_type(opaque)]
pub struct SsmcOperation {
    progress: Arc<Mutex<Progress>>,
    task: tokio::task::JoinHandle<()>,
    stage_c: Mutex<CString>,
    error_c: Mutex<CString>,
    instance_c: Mutex<CString>,
    /// The piece of output lent by [`ssmc_operation_next_output`].
    output_c: Mutex<Vec<u8>>,
    seen: Seen,
}

fn stage(progress: &Mutex<Progress>, text: &str) {
    {
        let mut p = lock(progress);
        p.stage = text.to_owned();
        p.stage_changes += 1;
    }
    wait::notify();
}

#[derive(serde::Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
struct ForwardRequest {
    target: String,
    /// Required, except with `socks` (which takes none).
    #[serde(default)]
    remote_port: Option<u16>,
    #[serde(default)]
    remote_host: Option<String>,
    #[serde(default)]
    local_address: Option<IpAddr>,
    #[serde(default)]
    local_port: u16,
    /// A session of its own for each connection.
    #[serde(default)]
    session_per_connection: bool,
    /// Sessions started ahead in session-per-connection mode (default
    /// [`ssm_session::DEFAULT_WARM_SESSIONS`]); only with `session_per_connection`.
    #[serde(default)]
    warm_sessions: Option<usize>,
    /// A session document of type Port in place of the AWS-managed one.
    #[serde(default)]
    document: Option<String>,
    /// A SOCKS5 proxy (dynamic forwarding): each connection gets a session of its own to the
    /// destination it asks for. Takes no `remote_port`, `remote_host`, `session_per_connection`
    /// or `warm_sessions`.
    #[serde(default)]
    socks: bool,
}

#[derive(serde::Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
struct ShellRequest {
    target: String,
    #[serde(default)]
    document: Option<String>,
    #[serde(default)]
    parameters: std::collections::HashMap<String, Vec<String>>,
}

/// Starts an operation: the client and the request are read here (a null client or a malformed
/// request sets the last error and returns null), `work` runs on the runtime with the connector
/// and a stage callback, and `done` records its result.
fn begin<R, T, F>(
    client: *const SsmcClient,
    request_json: &AsciiPointer,
    work: impl FnOnce(Arc<Connector>, R, Arc<Mutex<Progress>>) -> F,
    done: fn(&mut Progress, T),
) -> *mut SsmcOperation
where
    R: serde::de::DeserializeOwned,
    F: std::future::Future<Output = Result<T, ssm_session::Error>> + Send + 'static,
    T: Send + 'static,
{
    let connector = if client.is_null() {
        Err(FfiError::new(
            SsmcErrorKind::InvalidArgument,
            "the client handle is null",
        ))
    } else {
        // SAFETY: non-null and, by contract, a live client from `ssmc_client_new`.
        Ok(unsafe { &*client }.connector.clone())
    };
    let (connector, req) = match connector.and_then(|c| Ok((c, parse_request::<R>(request_json)?))) {
        Ok(p) => p,
        Err(e) => {
            set_last_error(&e);
            return null_mut();
        }
    };
    let progress = Arc::new(Mutex::new(Progress {
        state: SsmcState::Running,
        stage: "Starting".into(),
        stage_changes: 0,
        error: None,
        exit_code: None,
        forward: None,
        output: None,
        outputs: 0,
        sender: None,
        instance_id: String::new(),
    }));
    let work = work(connector, req, progress.clone());
    let shared = progress.clone();
    let task = runtime().spawn(async move {
        let result = work.await;
        // The state leaves Running once, under the lock: a cancel (or free) that came first wins,
        // and what the work produced anyway is dropped here, which stops it (a forward ends).
        let unwanted = {
            let mut p = lock(&shared);
            if p.state == SsmcState::Running {
                match result {
                    Ok(value) => {
                        done(&mut p, value);
                        p.state = SsmcState::Succeeded;
                    }
                    Err(e) => p.fail(e.into()),
                }
                None
            } else {
                Some(result)
            }
        };
        drop(unwanted);
        wait::notify();
    });
    Box::into_raw(Box::new(SsmcOperation {
        progress,
        task,
        stage_c: Mutex::default(),
        error_c: Mutex::default(),
        instance_c: Mutex::default(),
        output_c: Mutex::default(),
        seen: Seen::now(),
    }))
}

/// A stage callback that shows each stage as the operation's stage text and keeps the
/// instance a session is started with.
fn stages(progress: Arc<Mutex<Progress>>) -> impl Fn(Stage<'_>) + Send + Sync {
    move |s| {
        if let Stage::Starting(id) = s {
            id.clone_into(&mut lock(&progress).instance_id);
        }
        stage(&progress, &s.to_string());
    }
}

/// Starts a port forward described by a JSON request: `target`, `remote_port`, optional
/// `remote_host`, `local_address` (default 127.0.0.1), `local_port` (0: a free one),
/// `session_per_connection` (a session of its own for each connection; every one is terminated
/// when its connection ends and when the forward is stopped or freed), `warm_sessions`
/// (sessions started ahead in that mode, default 1) and `document` (a session document of type
/// Port in place of `AWS-StartPortForwardingSession` or `…ToRemoteHost`); or, with `socks`
/// true and no remote port, a SOCKS5 proxy whose connections each get a session of their own to
/// the destination they ask for (mode `Socks`). Returns
/// an operation, or null with the last error set when the request is malformed. When the
/// operation succeeds, [`ssmc_operation_take_forward`] hands over the forward.
#[ffi_function]
#[no_mangle]
pub extern "C" fn ssmc_forward_begin(client: *const SsmcClient, request_json: AsciiPointer) -> *mut SsmcOperation {
    guard(null_mut(), || {
        begin(
            client,
            &request_json,
            |connector, req: ForwardRequest, progress| async move {
                let local_addr = SocketAddr::new(
                    req.local_address.unwrap_or(IpAddr::from([127, 0, 0, 1])),
                    req.local_port,
                );
                if req.socks {
                    if req.remote_port.is_some()
                        || req.remote_host.is_some()
                        || req.session_per_connection
                        || req.warm_sessions.is_some()
                    {
                        return Err(ssm_session::Error::Config(
                            "socks takes no remote_port, remote_host, session_per_connection or warm_sessions".into(),
                        ));
                    }
                    let spec = SocksSpec {
                        local_addr,
                        document: req.document,
                    };
                    let c = connector.socks(&req.target, spec, &stages(progress)).await?;
                    return Ok(SsmcForward::new(c.session, &req.target, &c.target.instance_id));
                }
                let Some(remote_port) = req.remote_port else {
                    return Err(ssm_session::Error::Config("remote_port is required".into()));
                };
                let spec = ForwardSpec {
                    remote_port,
                    remote_host: req.remote_host,
                    local_addr,
                    per_connection: req.session_per_connection.then(|| ssm_session::PerConnection {
                        warm_sessions: req.warm_sessions.unwrap_or(ssm_session::DEFAULT_WARM_SESSIONS),
                    }),
                    document: req.document,
                };
                if req.warm_sessions.is_some() && !req.session_per_connection {
                    return Err(ssm_session::Error::Config(
                        "warm_sessions needs session_per_connection".into(),
                    ));
                }
                let c = connector.forward(&req.target, spec, &stages(progress)).await?;
                Ok(SsmcForward::new(c.session, &req.target, &c.target.instance_id))
            },
            |p, forward| {
                p.forward = Some(forward);
                p.stage = "Forwarding".into();
            },
        )
    })
}

/// Starts a shell session on this process's terminal, described by a JSON request: `target`,
/// optional `document` and `parameters`. The operation ends when the remote shell does; the
/// exit code, when the agent reported one, is then in [`ssmc_operation_exit_code`].
#[ffi_function]
#[no_mangle]
pub extern "C" fn ssmc_shell_begin(client: *const SsmcClient, request_json: AsciiPointer) -> *mut SsmcOperation {
    guard(null_mut(), || {
        begin(
            client,
            &request_json,
            |connector, req: ShellRequest, progress| async move {
                let options = ShellOptions {
                    document: req.document,
                    parameters: req.parameters,
                    ..Default::default()
                };
                let dc = connector
                    .shell(&req.target, options, &stages(progress.clone()))
                    .await?
                    .session;
                stage(&progress, "Running");
                let outcome = ssm_session::shell::run_on_terminal(dc).await?;
                Ok(outcome.exit_code)
            },
            |p, code| p.exit_code = code,
        )
    })
}

#[derive(serde::Deserialize)]
#[serde(untagged)]
enum CommandLine {
    /// A command line, split by the agent as it is.
    Line(String),
    /// A program and its arguments, each reaching the program as it is.
    Argv(Vec<String>),
}

#[derive(serde::Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
struct ExecRequest {
    target: String,
    command: CommandLine,
    #[serde(default)]
    document: Option<String>,
    #[serde(default)]
    parameters: std::collections::HashMap<String, Vec<String>>,
}

/// Pieces of exec output queued for the caller before the session stops reading (and so the
/// agent stops sending): about 256 KiB at the agent's 1 KiB per piece.
const EXEC_OUTPUT_QUEUE: usize = 256;

/// Runs one command on a target (a NonInteractiveCommands session, §6.5), described by a JSON
/// request: `target`, `command` (an array: the program and its arguments, each reaching it as
/// it is; or a string: a command line the agent splits shell-style and runs without a shell),
/// optional `document` (default `AWS-StartNonInteractiveCommand`, whose output comes combined,
/// after the command ended, without an exit code; an account's own NonInteractiveCommands
/// document with `"separateOutputStream": true` gives stderr apart and the exit code) and
/// `parameters`. Nothing goes to this process's console: take the output with
/// [`ssmc_operation_next_output`] while the operation runs (a caller that stops taking it
/// stops the session's reading, which holds the command's output back at the agent) and after
/// it ended, until that returns null; the exit code, when the agent reported one, is then in
/// [`ssmc_operation_exit_code`]. [`ssmc_operation_interrupt`] passes Ctrl+C to the command;
/// [`ssmc_operation_cancel`] ends the session.
#[ffi_function]
#[no_mangle]
pub extern "C" fn ssmc_exec_begin(client: *const SsmcClient, request_json: AsciiPointer) -> *mut SsmcOperation {
    guard(null_mut(), || {
        begin(
            client,
            &request_json,
            |connector, req: ExecRequest, progress| {
                let (tx, rx) = mpsc::channel(EXEC_OUTPUT_QUEUE);
                lock(&progress).output = Some(rx);
                async move {
                    let mut options = CommandOptions {
                        command: match req.command {
                            CommandLine::Line(line) => line,
                            CommandLine::Argv(argv) => ssm_session::command::quote_argv(&argv),
                        },
                        parameters: req.parameters,
                        ..CommandOptions::default()
                    };
                    if let Some(document) = req.document {
                        options.document = document;
                    }
                    let mut session = connector
                        .command(&req.target, options, &stages(progress.clone()))
                        .await?
                        .session;
                    lock(&progress).sender = Some(session.sender());
                    stage(&progress, "Running");
                    while let Some(out) = session.next().await {
                        if tx.send(out).await.is_err() {
                            break;
                        }
                        lock(&progress).outputs += 1;
                        wait::notify();
                    }
                    lock(&progress).sender = None;
                    Ok(session.finish().await?.exit_code)
                }
            },
            |p, code| p.exit_code = code,
        )
    })
}

/// Takes the next piece of an exec operation's output, in the order the agent sent it. Returns
/// a pointer to its bytes, writes their number to `len` and the stream to `stream` (1 stdout,
/// 2 stderr; without separate output streams everything is stdout), each when not null; or
/// returns null (writing nothing) when no output is waiting now. The bytes are owned by the
/// operation and valid until the next call of this function on it or until it is freed. Once
/// the operation's state is not Running, a null return means there is no more output. Null for
/// operations that are not exec operations.
#[ffi_function]
#[no_mangle]
pub extern "C" fn ssmc_operation_next_output(op: *mut SsmcOperation, stream: *mut u32, len: *mut u64) -> *const u8 {
    with(op, "operation", std::ptr::null(), |o| {
        let next = lock(&o.progress).output.as_mut().and_then(|rx| rx.try_recv().ok());
        let Some(out) = next else {
            return std::ptr::null();
        };
        let (kind, data) = match out {
            Output::Stdout(d) => (1, d),
            Output::Stderr(d) => (2, d),
        };
        let mut slot = lock(&o.output_c);
        *slot = data;
        if !stream.is_null() {
            // SAFETY: non-null and, by contract, pointing at a u32 the caller owns.
            unsafe { *stream = kind };
        }
        if !len.is_null() {
            // SAFETY: as above, a u64.
            unsafe { *len = slot.len() as u64 };
        }
        slot.as_ptr()
    })
}

/// Passes Ctrl+C to a running exec operation's command: 0x03, which the agent turns into SIGINT
/// (it then reports exit code 1, whatever the command did). Returns 1 when it was queued, 0 when
/// there is no running command (not started yet, ended, or not an exec operation). Returns at
/// once; may be called from any thread, also while another one waits.
#[ffi_function]
#[no_mangle]
pub extern "C" fn ssmc_operation_interrupt(op: *mut SsmcOperation) -> u32 {
    with(op, "operation", 0, |o| {
        let Some(sender) = lock(&o.progress).sender.clone() else {
            return 0;
        };
        runtime().spawn(async move {
            let _ = ssm_session::command::interrupt(&sender).await;
        });
        1
    })
}

/// Runs `f` on a live handle; a null one sets an InvalidArgument last error and gives `fallback`.
fn with<H, T>(handle: *const H, what: &str, fallback: T, f: impl FnOnce(&H) -> T) -> T {
    guard(None, || {
        if handle.is_null() {
            let message = format!("the {what} handle is null");
            set_last_error(&FfiError::new(SsmcErrorKind::InvalidArgument, message));
            return None;
        }
        // SAFETY: non-null and, by contract, a live handle (shared between threads: see the crate docs).
        Some(f(unsafe { &*handle }))
    })
    .unwrap_or(fallback)
}

/// Keeps `text` in `slot` and lends it out, valid until the slot is next written.
fn lend(slot: &Mutex<CString>, text: &str) -> *const c_char {
    let mut c = lock(slot);
    *c = to_cstring(text);
    c.as_ptr()
}

/// The operation's state.
#[ffi_function]
#[no_mangle]
pub extern "C" fn ssmc_operation_state(op: *const SsmcOperation) -> SsmcState {
    with(op, "operation", SsmcState::Failed, |o| lock(&o.progress).state)
}

/// What the operation is doing now (for progress display). Owned by the operation; valid until
/// the next call of this function on it.
#[ffi_function]
#[no_mangle]
pub extern "C" fn ssmc_operation_stage(op: *mut SsmcOperation) -> *const c_char {
    with(op, "operation", std::ptr::null(), |o| {
        let text = lock(&o.progress).stage.clone();
        lend(&o.stage_c, &text)
    })
}

/// The instance (or managed node) id the operation's target resolved to, once a session is
/// being started with it; empty before. Owned by the operation; valid until the next call of
/// this function on it.
#[ffi_function]
#[no_mangle]
pub extern "C" fn ssmc_operation_instance_id(op: *mut SsmcOperation) -> *const c_char {
    with(op, "operation", std::ptr::null(), |o| {
        let text = lock(&o.progress).instance_id.clone();
        lend(&o.instance_c, &text)
    })
}

/// Kind of the operation's error ([`SsmcErrorKind::None`] while running or after success).
#[ffi_function]
#[no_mangle]
pub extern "C" fn ssmc_operation_error_kind(op: *const SsmcOperation) -> SsmcErrorKind {
    with(op, "operation", SsmcErrorKind::InvalidArgument, |o| {
        lock(&o.progress).error.as_ref().map_or(SsmcErrorKind::None, |e| e.kind)
    })
}

/// Message of the operation's error (empty when none). Owned by the operation; valid until the
/// next call of this function on it.
#[ffi_function]
#[no_mangle]
pub extern "C" fn ssmc_operation_error_message(op: *mut SsmcOperation) -> *const c_char {
    with(op, "operation", std::ptr::null(), |o| {
        let text = lock(&o.progress)
            .error
            .as_ref()
            .map(|e| e.message.clone())
            .unwrap_or_default();
        lend(&o.error_c, &text)
    })
}

/// Exit code of a finished shell or exec operation: returns 1 and writes it to `code` (when not
/// null) if the agent reported one; returns 0 and leaves `code` alone if it did not, which is
/// the normal end of a pty shell and of an exec with `AWS-StartNonInteractiveCommand` (the
/// agent sends exit codes only for NonInteractiveCommands with separate output streams, §6.5),
/// and for operations that are not finished shells or execs.
#[ffi_function]
#[no_mangle]
pub extern "C" fn ssmc_operation_exit_code(op: *const SsmcOperation, code: *mut i32) -> u32 {
    with(op, "operation", 0, |o| match lock(&o.progress).exit_code {
        Some(c) => {
            if !code.is_null() {
                // SAFETY: non-null and, by contract, pointing at an i32 the caller owns.
                unsafe { *code = c };
            }
            1
        }
        None => 0,
    })
}

/// Cancels a running operation: its work stops, a half-started session is terminated and the
/// terminal restored. The state becomes Cancelled at once, which wakes a thread blocked in
/// [`ssmc_operation_wait`], and stays Cancelled: work that completes at the same moment has its
/// result discarded (a forward it opened is stopped). No effect on a finished operation. May be
/// called from any thread, also while another one waits.
#[ffi_function]
#[no_mangle]
pub extern "C" fn ssmc_operation_cancel(op: *mut SsmcOperation) {
    with(op, "operation", (), |o| {
        {
            let mut p = lock(&o.progress);
            if p.state != SsmcState::Running {
                return;
            }
            o.task.abort();
            p.fail(FfiError::new(SsmcErrorKind::Cancelled, "cancelled"));
        }
        wait::notify();
    });
}

/// Blocks the calling thread, without spinning, until the caller has something to react to or
/// `timeout_ms` milliseconds passed (`u32::MAX`, about 49 days, for no practical limit), and
/// returns the state then. It returns as soon as
/// - the state is not Running (at once when it already is not; a cancel from another thread
///   makes it Cancelled and so wakes the waiter at once), or
/// - since the previous wait on this operation returned (or since it began, for the first wait)
///   the stage changed ([`ssmc_operation_stage`]), a log line was captured for
///   `ssmc_log_next`, or an exec operation queued output ([`ssmc_operation_next_output`]).
///
/// A return with Running therefore means: read the stage, drain the log lines (and the output),
/// wait again. Waits
/// on one operation from several threads are safe, but a stage change or log line returns only
/// the first to see it. A null handle returns Failed with the last error set.
#[ffi_function]
#[no_mangle]
pub extern "C" fn ssmc_operation_wait(op: *const SsmcOperation, timeout_ms: u32) -> SsmcState {
    with(op, "operation", SsmcState::Failed, |o| {
        let pulse = || {
            let p = lock(&o.progress);
            p.stage_changes + p.outputs + logs::captured()
        };
        o.seen
            .wait(timeout_ms, || lock(&o.progress).state == SsmcState::Running, pulse);
        lock(&o.progress).state
    })
}

/// Hands over the forward of a succeeded forward operation (once; null otherwise). Free it with
/// [`ssmc_forward_free`].
#[ffi_function]
#[no_mangle]
pub extern "C" fn ssmc_operation_take_forward(op: *mut SsmcOperation) -> *mut SsmcForward {
    with(op, "operation", null_mut(), |o| {
        lock(&o.progress).forward.take().map_or(null_mut(), Box::into_raw)
    })
}

/// Frees an operation and stops everything it owns: a running operation is cancelled (its work
/// stops, a half-started session is terminated), and a forward it produced that was not taken
/// with [`ssmc_operation_take_forward`] is stopped (listener closed, session terminated). Returns
/// at once; the session is terminated in the background. Null is ignored. May be called from any
/// thread (but not while another thread still uses the handle).
#[ffi_function]
#[no_mangle]
pub extern "C" fn ssmc_operation_free(op: *mut SsmcOperation) {
    guard((), || {
        if op.is_null() {
            return;
        }
        // SAFETY: from `*_begin`, freed once (the contract).
        let op = unsafe { Box::from_raw(op) };
        let untaken = {
            let mut p = lock(&op.progress);
            if p.state == SsmcState::Running {
                // The task, should it finish after all, then drops what it made.
                p.fail(FfiError::new(
                    SsmcErrorKind::Cancelled,
                    "cancelled: the operation was freed",
                ));
            }
            p.forward.take()
        };
        op.task.abort();
        // Dropping the forward stops it.
        drop(untaken);
    });
}

/// A running port forward. Dropping it (freeing the handle, or freeing an operation whose
/// forward was never taken) stops the forward.
#[ffi_type(opaque)]
pub struct SsmcForward {
    local_port: u16,
    local_address_c: CString,
    session_id_c: CString,
    target_c: CString,
    instance_id_c: CString,
    mode_c: CString,
    error_c: Mutex<CString>,
    stats: Arc<ForwardStats>,
    stopper: watch::Sender<bool>,
    outcome: Arc<Mutex<Option<Result<(), FfiError>>>>,
    stop_requests: AtomicU64,
    seen: Seen,
}

impl SsmcForward {
    fn new(mut forward: PortForward, target: &str, instance_id: &str) -> Box<Self> {
        let outcome = Arc::new(Mutex::new(None));
        let done = outcome.clone();
        let f = Box::new(SsmcForward {
            local_port: forward.local_addr().port(),
            local_address_c: to_cstring(&forward.local_addr().ip().to_string()),
            session_id_c: to_cstring(forward.session_id()),
            target_c: to_cstring(target),
            instance_id_c: to_cstring(instance_id),
            mode_c: to_cstring(match forward.mode() {
                _ if forward.socks() => "Socks",
                _ if forward.per_connection() => "SessionPerConnection",
                ssm_proto::PortMode::Basic => "Basic",
                ssm_proto::PortMode::Mux { .. } => "Multiplexed",
                ssm_proto::PortMode::Stdio => "Stream",
            }),
            error_c: Mutex::default(),
            stats: forward.stats(),
            stopper: forward.stopper(),
            outcome,
            stop_requests: AtomicU64::new(0),
            seen: Seen::now(),
        });
        runtime().spawn(async move {
            let result = forward.wait().await.map(|_| ()).map_err(FfiError::from);
            *lock(&done) = Some(result);
            wait::notify();
        });
        f
    }
}

impl Drop for SsmcForward {
    fn drop(&mut self) {
        // The forward's own task holds the `PortForward` (and its stop sender) until the forward
        // ends, so without this stop request the listener and the session would run on unowned.
        let _ = self.stopper.send(true);
    }
}

/// Local port the forward listens on.
#[ffi_function]
#[no_mangle]
pub extern "C" fn ssmc_forward_local_port(f: *mut SsmcForward) -> u16 {
    with(f, "forward", 0, |f| f.local_port)
}

/// Local address the forward listens on. Owned by the forward.
#[ffi_function]
#[no_mangle]
pub extern "C" fn ssmc_forward_local_address(f: *mut SsmcForward) -> *const c_char {
    with(f, "forward", std::ptr::null(), |f| f.local_address_c.as_ptr())
}

/// Session id (empty in session-per-connection mode). Owned by the forward.
#[ffi_function]
#[no_mangle]
pub extern "C" fn ssmc_forward_session_id(f: *mut SsmcForward) -> *const c_char {
    with(f, "forward", std::ptr::null(), |f| f.session_id_c.as_ptr())
}

/// Target the session was started with. Owned by the forward.
#[ffi_function]
#[no_mangle]
pub extern "C" fn ssmc_forward_target(f: *mut SsmcForward) -> *const c_char {
    with(f, "forward", std::ptr::null(), |f| f.target_c.as_ptr())
}

/// Instance id the target resolved to. Owned by the forward.
#[ffi_function]
#[no_mangle]
pub extern "C" fn ssmc_forward_instance_id(f: *mut SsmcForward) -> *const c_char {
    with(f, "forward", std::ptr::null(), |f| f.instance_id_c.as_ptr())
}

/// `Basic` or `Multiplexed` (§7.1), `SessionPerConnection` (each connection has a session of
/// its own, whose mode the agent chooses), or `Socks` (a SOCKS5 proxy: each connection has a
/// session of its own to the destination it asked for). Owned by the forward.
#[ffi_function]
#[no_mangle]
pub extern "C" fn ssmc_forward_mode(f: *mut SsmcForward) -> *const c_char {
    with(f, "forward", std::ptr::null(), |f| f.mode_c.as_ptr())
}

/// Bytes sent to the target so far.
#[ffi_function]
#[no_mangle]
pub extern "C" fn ssmc_forward_bytes_sent(f: *mut SsmcForward) -> u64 {
    with(f, "forward", 0, |f| f.stats.bytes_to_target.load(Ordering::Relaxed))
}

/// Bytes received from the target so far.
#[ffi_function]
#[no_mangle]
pub extern "C" fn ssmc_forward_bytes_received(f: *mut SsmcForward) -> u64 {
    with(f, "forward", 0, |f| f.stats.bytes_from_target.load(Ordering::Relaxed))
}

/// Connections accepted so far.
#[ffi_function]
#[no_mangle]
pub extern "C" fn ssmc_forward_connections(f: *mut SsmcForward) -> u64 {
    with(f, "forward", 0, |f| f.stats.connections_total.load(Ordering::Relaxed))
}

/// Connections open now.
#[ffi_function]
#[no_mangle]
pub extern "C" fn ssmc_forward_active_connections(f: *mut SsmcForward) -> u64 {
    with(f, "forward", 0, |f| f.stats.connections_active.load(Ordering::Relaxed))
}

/// Running while forwarding; Succeeded once it ended normally (stopped, or closed by the
/// service); Failed when it ended with an error ([`ssmc_forward_error_message`]).
#[ffi_function]
#[no_mangle]
pub extern "C" fn ssmc_forward_state(f: *mut SsmcForward) -> SsmcState {
    with(f, "forward", SsmcState::Failed, forward_state)
}

fn forward_state(f: &SsmcForward) -> SsmcState {
    match &*lock(&f.outcome) {
        None => SsmcState::Running,
        Some(Ok(())) => SsmcState::Succeeded,
        Some(Err(_)) => SsmcState::Failed,
    }
}

/// Why the forward failed (empty otherwise). Owned by the forward; valid until the next call.
#[ffi_function]
#[no_mangle]
pub extern "C" fn ssmc_forward_error_message(f: *mut SsmcForward) -> *const c_char {
    with(f, "forward", std::ptr::null(), |f| {
        let text = match &*lock(&f.outcome) {
            Some(Err(e)) => e.message.clone(),
            _ => String::new(),
        };
        lend(&f.error_c, &text)
    })
}

/// Asks the forward to stop: the listener closes, connections close, the session is terminated.
/// Returns at once and wakes a thread blocked in [`ssmc_forward_wait`]; wait again to see the
/// forward finish. May be called from any thread, also while another one waits.
#[ffi_function]
#[no_mangle]
pub extern "C" fn ssmc_forward_stop(f: *mut SsmcForward) {
    with(f, "forward", (), |f| {
        let _ = f.stopper.send(true);
        f.stop_requests.fetch_add(1, Ordering::Relaxed);
        wait::notify();
    });
}

/// Blocks the calling thread, without spinning, until the caller has something to react to or
/// `timeout_ms` milliseconds passed (`u32::MAX`, about 49 days, for no practical limit), and
/// returns the state then ([`ssmc_forward_state`]). It returns as soon as
/// - the forward has ended (state not Running; at once when it already has), or
/// - since the previous wait on this forward returned (or since it was handed over, for the
///   first wait) [`ssmc_forward_stop`] was called (from any thread: it wakes the waiter at once)
///   or a log line was captured for `ssmc_log_next`.
///
/// Waits on one forward from several threads are safe, but a stop request or log line returns
/// only the first to see it. A null handle returns Failed with the last error set.
#[ffi_function]
#[no_mangle]
pub extern "C" fn ssmc_forward_wait(f: *const SsmcForward, timeout_ms: u32) -> SsmcState {
    with(f, "forward", SsmcState::Failed, |f| {
        let pulse = || f.stop_requests.load(Ordering::Relaxed) + logs::captured();
        f.seen.wait(timeout_ms, || lock(&f.outcome).is_none(), pulse);
        forward_state(f)
    })
}

/// Stops (if needed) and frees a forward: the listener closes, connections close and the session
/// is terminated in the background. Returns at once. Null is ignored. May be called from any
/// thread (but not while another thread still uses the handle).
#[ffi_function]
#[no_mangle]
pub extern "C" fn ssmc_forward_free(f: *mut SsmcForward) {
    guard((), || {
        if f.is_null() {
            return;
        }
        // SAFETY: from `ssmc_operation_take_forward`, freed once (the contract). Dropping it
        // stops it.
        drop(unsafe { Box::from_raw(f) });
    });
}
