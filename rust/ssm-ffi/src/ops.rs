//! Operations (started, polled, cancelled) and port-forward handles.

use std::ffi::{c_char, CString};
use std::net::{IpAddr, SocketAddr};
use std::ptr::null_mut;
use std::sync::{Arc, Mutex, MutexGuard};

use interoptopus::patterns::string::AsciiPointer;
use interoptopus::{ffi_function, ffi_type};
use ssm_session::{Connector, ForwardSpec, ForwardStats, PortForward, ShellOptions, Stage};
use tokio::sync::watch;

use crate::{
    guard, parse_request, runtime, set_last_error, to_cstring, FfiError, SsmcClient, SsmcErrorKind, SsmcState,
};

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

struct Progress {
    state: SsmcState,
    stage: String,
    error: Option<FfiError>,
    exit_code: i32,
    forward: Option<Box<SsmcForward>>,
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

/// A piece of work running on the library's runtime. Poll [`ssmc_operation_state`]; free with
/// [`ssmc_operation_free`].
#[ffi_type(opaque)]
pub struct SsmcOperation {
    progress: Arc<Mutex<Progress>>,
    task: Option<tokio::task::JoinHandle<()>>,
    stage_c: CString,
    error_c: CString,
}

impl SsmcOperation {
    fn spawn<F>(work: impl FnOnce(Arc<Mutex<Progress>>) -> F) -> *mut SsmcOperation
    where
        F: std::future::Future<Output = ()> + Send + 'static,
    {
        let progress = Arc::new(Mutex::new(Progress {
            state: SsmcState::Running,
            stage: "Starting".into(),
            error: None,
            exit_code: 0,
            forward: None,
        }));
        let task = runtime().spawn(work(progress.clone()));
        Box::into_raw(Box::new(SsmcOperation {
            progress,
            task: Some(task),
            stage_c: CString::default(),
            error_c: CString::default(),
        }))
    }
}

fn stage(progress: &Mutex<Progress>, text: &str) {
    lock(progress).stage = text.to_owned();
}

#[derive(serde::Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
struct ForwardRequest {
    target: String,
    remote_port: u16,
    #[serde(default)]
    remote_host: Option<String>,
    #[serde(default)]
    local_address: Option<IpAddr>,
    #[serde(default)]
    local_port: u16,
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
    SsmcOperation::spawn(move |progress| {
        let work = work(connector, req, progress.clone());
        async move {
            let result = work.await;
            let mut p = lock(&progress);
            match result {
                Ok(value) => {
                    done(&mut p, value);
                    p.state = SsmcState::Succeeded;
                }
                Err(e) => p.fail(e.into()),
            }
        }
    })
}

/// A stage callback that shows each stage as the operation's stage text.
fn stages(progress: Arc<Mutex<Progress>>) -> impl Fn(Stage<'_>) + Send + Sync {
    move |s| stage(&progress, &s.to_string())
}

/// Starts a port forward described by a JSON request: `target`, `remote_port`, optional
/// `remote_host`, `local_address` (default 127.0.0.1) and `local_port` (0: a free one). Returns
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
                let spec = ForwardSpec {
                    remote_port: req.remote_port,
                    remote_host: req.remote_host,
                    local_addr: SocketAddr::new(
                        req.local_address.unwrap_or(IpAddr::from([127, 0, 0, 1])),
                        req.local_port,
                    ),
                };
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
/// optional `document` and `parameters`. The operation ends when the remote shell does; its
/// exit code is then in [`ssmc_operation_exit_code`].
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
                Ok(outcome.exit_code.unwrap_or(0))
            },
            |p, code| p.exit_code = code,
        )
    })
}

fn null_handle<T>(what: &str) -> Option<T> {
    set_last_error(&FfiError::new(
        SsmcErrorKind::InvalidArgument,
        format!("the {what} handle is null"),
    ));
    None
}

fn with_op<T>(op: *const SsmcOperation, fallback: T, f: impl FnOnce(&SsmcOperation) -> T) -> T {
    guard(None, || {
        if op.is_null() {
            return null_handle("operation");
        }
        // SAFETY: non-null and, by contract, a live operation.
        Some(f(unsafe { &*op }))
    })
    .unwrap_or(fallback)
}

fn with_op_mut<T>(op: *mut SsmcOperation, fallback: T, f: impl FnOnce(&mut SsmcOperation) -> T) -> T {
    guard(None, || {
        if op.is_null() {
            return null_handle("operation");
        }
        // SAFETY: non-null and, by contract, a live operation used from one thread at a time.
        Some(f(unsafe { &mut *op }))
    })
    .unwrap_or(fallback)
}

/// The operation's state.
#[ffi_function]
#[no_mangle]
pub extern "C" fn ssmc_operation_state(op: *const SsmcOperation) -> SsmcState {
    with_op(op, SsmcState::Failed, |o| lock(&o.progress).state)
}

/// What the operation is doing now (for progress display). Owned by the operation; valid until
/// the next call of this function on it.
#[ffi_function]
#[no_mangle]
pub extern "C" fn ssmc_operation_stage(op: *mut SsmcOperation) -> *const c_char {
    with_op_mut(op, std::ptr::null(), |o| {
        o.stage_c = to_cstring(&lock(&o.progress).stage);
        o.stage_c.as_ptr()
    })
}

/// Kind of the operation's error ([`SsmcErrorKind::None`] while running or after success).
#[ffi_function]
#[no_mangle]
pub extern "C" fn ssmc_operation_error_kind(op: *const SsmcOperation) -> SsmcErrorKind {
    with_op(op, SsmcErrorKind::InvalidArgument, |o| {
        lock(&o.progress).error.as_ref().map_or(SsmcErrorKind::None, |e| e.kind)
    })
}

/// Message of the operation's error (empty when none). Owned by the operation; valid until the
/// next call of this function on it.
#[ffi_function]
#[no_mangle]
pub extern "C" fn ssmc_operation_error_message(op: *mut SsmcOperation) -> *const c_char {
    with_op_mut(op, std::ptr::null(), |o| {
        let text = lock(&o.progress)
            .error
            .as_ref()
            .map(|e| e.message.clone())
            .unwrap_or_default();
        o.error_c = to_cstring(&text);
        o.error_c.as_ptr()
    })
}

/// Exit code of a finished shell operation (0 when the agent reported none).
#[ffi_function]
#[no_mangle]
pub extern "C" fn ssmc_operation_exit_code(op: *const SsmcOperation) -> i32 {
    with_op(op, -1, |o| lock(&o.progress).exit_code)
}

/// Cancels a running operation: its work stops, a half-started session is terminated and the
/// terminal restored. The state becomes Cancelled. No effect on a finished operation.
#[ffi_function]
#[no_mangle]
pub extern "C" fn ssmc_operation_cancel(op: *mut SsmcOperation) {
    with_op_mut(op, (), |o| {
        let mut p = lock(&o.progress);
        if p.state == SsmcState::Running {
            if let Some(task) = &o.task {
                task.abort();
            }
            p.fail(FfiError::new(SsmcErrorKind::Cancelled, "cancelled"));
        }
    });
}

/// Hands over the forward of a succeeded forward operation (once; null otherwise). Free it with
/// [`ssmc_forward_free`].
#[ffi_function]
#[no_mangle]
pub extern "C" fn ssmc_operation_take_forward(op: *mut SsmcOperation) -> *mut SsmcForward {
    with_op_mut(op, null_mut(), |o| {
        lock(&o.progress).forward.take().map_or(null_mut(), Box::into_raw)
    })
}

/// Frees an operation, cancelling it if it still runs. Null is ignored.
#[ffi_function]
#[no_mangle]
pub extern "C" fn ssmc_operation_free(op: *mut SsmcOperation) {
    guard((), || {
        if op.is_null() {
            return;
        }
        // SAFETY: from `*_begin`, freed once (the contract).
        let o = unsafe { Box::from_raw(op) };
        if let Some(task) = &o.task {
            task.abort();
        }
    });
}

/// A running port forward.
#[ffi_type(opaque)]
pub struct SsmcForward {
    local_port: u16,
    local_address_c: CString,
    session_id_c: CString,
    target_c: CString,
    instance_id_c: CString,
    mode_c: CString,
    error_c: CString,
    stats: Arc<ForwardStats>,
    stopper: watch::Sender<bool>,
    outcome: Arc<Mutex<Option<Result<(), FfiError>>>>,
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
                ssm_proto::PortMode::Basic => "Basic",
                ssm_proto::PortMode::Mux { .. } => "Multiplexed",
                ssm_proto::PortMode::Stdio => "Stream",
            }),
            error_c: CString::default(),
            stats: forward.stats(),
            stopper: forward.stopper(),
            outcome,
        });
        runtime().spawn(async move {
            let result = forward.wait().await.map(|_| ()).map_err(FfiError::from);
            *lock(&done) = Some(result);
        });
        f
    }
}

fn with_forward<T>(f: *mut SsmcForward, fallback: T, body: impl FnOnce(&mut SsmcForward) -> T) -> T {
    guard(None, || {
        if f.is_null() {
            return null_handle("forward");
        }
        // SAFETY: non-null and, by contract, a live forward used from one thread at a time.
        Some(body(unsafe { &mut *f }))
    })
    .unwrap_or(fallback)
}

/// Local port the forward listens on.
#[ffi_function]
#[no_mangle]
pub extern "C" fn ssmc_forward_local_port(f: *mut SsmcForward) -> u16 {
    with_forward(f, 0, |f| f.local_port)
}

/// Local address the forward listens on. Owned by the forward.
#[ffi_function]
#[no_mangle]
pub extern "C" fn ssmc_forward_local_address(f: *mut SsmcForward) -> *const c_char {
    with_forward(f, std::ptr::null(), |f| f.local_address_c.as_ptr())
}

/// Session id. Owned by the forward.
#[ffi_function]
#[no_mangle]
pub extern "C" fn ssmc_forward_session_id(f: *mut SsmcForward) -> *const c_char {
    with_forward(f, std::ptr::null(), |f| f.session_id_c.as_ptr())
}

/// Target the session was started with. Owned by the forward.
#[ffi_function]
#[no_mangle]
pub extern "C" fn ssmc_forward_target(f: *mut SsmcForward) -> *const c_char {
    with_forward(f, std::ptr::null(), |f| f.target_c.as_ptr())
}

/// Instance id the target resolved to. Owned by the forward.
#[ffi_function]
#[no_mangle]
pub extern "C" fn ssmc_forward_instance_id(f: *mut SsmcForward) -> *const c_char {
    with_forward(f, std::ptr::null(), |f| f.instance_id_c.as_ptr())
}

/// `Basic` or `Multiplexed` (§7.1). Owned by the forward.
#[ffi_function]
#[no_mangle]
pub extern "C" fn ssmc_forward_mode(f: *mut SsmcForward) -> *const c_char {
    with_forward(f, std::ptr::null(), |f| f.mode_c.as_ptr())
}

/// Bytes sent to the target so far.
#[ffi_function]
#[no_mangle]
pub extern "C" fn ssmc_forward_bytes_sent(f: *mut SsmcForward) -> u64 {
    with_forward(f, 0, |f| {
        f.stats.bytes_to_target.load(std::sync::atomic::Ordering::Relaxed)
    })
}

/// Bytes received from the target so far.
#[ffi_function]
#[no_mangle]
pub extern "C" fn ssmc_forward_bytes_received(f: *mut SsmcForward) -> u64 {
    with_forward(f, 0, |f| {
        f.stats.bytes_from_target.load(std::sync::atomic::Ordering::Relaxed)
    })
}

/// Connections accepted so far.
#[ffi_function]
#[no_mangle]
pub extern "C" fn ssmc_forward_connections(f: *mut SsmcForward) -> u64 {
    with_forward(f, 0, |f| {
        f.stats.connections_total.load(std::sync::atomic::Ordering::Relaxed)
    })
}

/// Connections open now.
#[ffi_function]
#[no_mangle]
pub extern "C" fn ssmc_forward_active_connections(f: *mut SsmcForward) -> u64 {
    with_forward(f, 0, |f| {
        f.stats.connections_active.load(std::sync::atomic::Ordering::Relaxed)
    })
}

/// Running while forwarding; Succeeded once it ended normally (stopped, or closed by the
/// service); Failed when it ended with an error ([`ssmc_forward_error_message`]).
#[ffi_function]
#[no_mangle]
pub extern "C" fn ssmc_forward_state(f: *mut SsmcForward) -> SsmcState {
    with_forward(f, SsmcState::Failed, |f| match &*lock(&f.outcome) {
        None => SsmcState::Running,
        Some(Ok(())) => SsmcState::Succeeded,
        Some(Err(_)) => SsmcState::Failed,
    })
}

/// Why the forward failed (empty otherwise). Owned by the forward; valid until the next call.
#[ffi_function]
#[no_mangle]
pub extern "C" fn ssmc_forward_error_message(f: *mut SsmcForward) -> *const c_char {
    with_forward(f, std::ptr::null(), |f| {
        let text = match &*lock(&f.outcome) {
            Some(Err(e)) => e.message.clone(),
            _ => String::new(),
        };
        f.error_c = to_cstring(&text);
        f.error_c.as_ptr()
    })
}

/// Asks the forward to stop: the listener closes, connections close, the session is terminated.
/// Returns at once; poll [`ssmc_forward_state`] to see it finish.
#[ffi_function]
#[no_mangle]
pub extern "C" fn ssmc_forward_stop(f: *mut SsmcForward) {
    with_forward(f, (), |f| {
        let _ = f.stopper.send(true);
    });
}

/// Stops (if needed) and frees a forward. Null is ignored.
#[ffi_function]
#[no_mangle]
pub extern "C" fn ssmc_forward_free(f: *mut SsmcForward) {
    guard((), || {
        if f.is_null() {
            return;
        }
        // SAFETY: from `ssmc_operation_take_forward`, freed once (the contract).
        let f = unsafe { Box::from_raw(f) };
        let _ = f.stopper.send(true);
    });
}
