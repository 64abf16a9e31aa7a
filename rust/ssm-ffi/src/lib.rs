//! The C ABI of SSMConnect: the shared library `ssmconnect_native` that the PowerShell module
//! loads (named apart from the helper executable `ssmconnect`, whose debug files would collide).
//!
//! What it is: a thin layer of `extern "C"` functions, all prefixed `ssmc_`, over `ssm-session`.
//! Long work (resolving, connecting, running a shell) runs on a tokio runtime owned by the library
//! and is exposed as an *operation* the caller waits on ([`ssmc_operation_wait`] blocks until the
//! stage or state changes or a log line is captured), so the caller's thread reports progress and
//! logs as they happen and stays free to cancel. Port forwards live on as handles after their
//! operation ([`ssmc_forward_wait`]); an exec operation hands out its command's output as it
//! comes ([`ssmc_operation_next_output`]).
//!
//! What it is not: a place for logic. Anything beyond marshalling belongs in `ssm-session`.
//!
//! Contract for every export:
//! - null handles and malformed arguments are refused with [`SsmcErrorKind::InvalidArgument`];
//! - panics never cross the boundary (`catch_unwind`), they become [`SsmcErrorKind::Internal`];
//! - strings going in are NUL-terminated ASCII (callers escape anything else, requests are JSON);
//!   strings coming out are UTF-8, owned by the handle they came from and valid until the next
//!   call on that handle or until it is freed, unless the export says the caller frees them with
//!   [`ssmc_string_free`];
//! - failures of functions that return a handle are described by [`ssmc_last_error_kind`] and
//!   [`ssmc_last_error_message`] on the calling thread;
//! - a handle may be used from several threads (a cancel or stop typically comes from another
//!   thread while one waits), but a string borrowed from it is only valid until the next call of
//!   the same function on it, so callers serialise those;
//! - freeing a handle stops everything it owns (a running operation is cancelled, a forward, also
//!   one never taken from its operation, stops listening and its session is terminated), returns
//!   without waiting for the network, and may happen on any thread once no other thread uses it.
//!
//! Tokens never cross this boundary and never appear in messages.
// `extern "C"` functions take raw pointers by design; each one checks for null before use.
#![allow(clippy::not_unsafe_ptr_arg_deref)]

mod logs;
mod ops;
mod wait;

use std::cell::RefCell;
use std::ffi::{c_char, c_void, CString};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::ptr::null_mut;
use std::sync::OnceLock;

use interoptopus::patterns::string::AsciiPointer;
use interoptopus::{ffi_function, ffi_type, function, Inventory, InventoryBuilder};

pub use ops::{SsmcForward, SsmcOperation};

/// Stable error kinds; the PowerShell layer maps each to an error id and category.
#[ffi_type]
#[repr(u32)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SsmcErrorKind {
    /// No error.
    None = 0,
    /// A null handle or a malformed request.
    InvalidArgument = 1,
    /// Configuration: no region, bad endpoint, conflicting credentials.
    Configuration = 2,
    /// No instance matched the target.
    TargetNotFound = 3,
    /// Several instances matched the target.
    AmbiguousTarget = 4,
    /// An AWS API call failed (access denied, target not connected, …).
    Api = 5,
    /// The local port could not be bound (in use, no permission).
    PortInUse = 6,
    /// The data channel could not be opened or was lost for good.
    ConnectionFailed = 7,
    /// The session could not start (handshake, unsupported feature).
    SessionFailed = 8,
    /// A deadline passed.
    TimedOut = 9,
    /// The operation was cancelled.
    Cancelled = 10,
    /// A bug: panic or unexpected state.
    Internal = 11,
    /// KMS refused the session's data key to these credentials (no `kms:GenerateDataKey`).
    KmsAccessDenied = 12,
    /// The session's KMS key is missing, disabled or unusable.
    KmsKeyUnavailable = 13,
    /// The agent's encryption challenge did not verify.
    KmsChallengeFailed = 14,
    /// An encrypted message from the agent failed authentication (tampered).
    KmsTampered = 15,
    /// No AWS credentials were found anywhere the SDK looks.
    NoCredentials = 16,
    /// The AWS credentials (an SSO login, a session token) have expired.
    CredentialsExpired = 17,
    /// The AWS endpoint could not be reached (refused, no route, unknown name, timed out).
    EndpointUnreachable = 18,
    /// The target has no SSM agent connected to Session Manager (`TargetNotConnected`).
    TargetNotConnected = 19,
}

/// State of an operation or a forward.
#[ffi_type]
#[repr(u32)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SsmcState {
    /// Still working (or, for a forward, forwarding).
    Running = 0,
    /// Finished successfully.
    Succeeded = 1,
    /// Finished with an error.
    Failed = 2,
    /// Cancelled by the caller.
    Cancelled = 3,
}

/// An error as reported across the boundary.
#[derive(Debug, Clone)]
pub(crate) struct FfiError {
    pub(crate) kind: SsmcErrorKind,
    pub(crate) message: String,
}

impl FfiError {
    pub(crate) fn new(kind: SsmcErrorKind, message: impl Into<String>) -> Self {
        Self {
            kind,
            message: message.into(),
        }
    }
}

impl From<ssm_session::Error> for FfiError {
    fn from(e: ssm_session::Error) -> Self {
        use ssm_session::ErrorKind as K;
        let kind = match e.kind() {
            K::Config => SsmcErrorKind::Configuration,
            K::InvalidTarget => SsmcErrorKind::InvalidArgument,
            K::TargetNotFound => SsmcErrorKind::TargetNotFound,
            K::AmbiguousTarget => SsmcErrorKind::AmbiguousTarget,
            K::Api => SsmcErrorKind::Api,
            K::Listen => SsmcErrorKind::PortInUse,
            K::Connection | K::TargetLookup => SsmcErrorKind::ConnectionFailed,
            K::Session => SsmcErrorKind::SessionFailed,
            K::KmsAccessDenied => SsmcErrorKind::KmsAccessDenied,
            K::KmsKeyUnavailable => SsmcErrorKind::KmsKeyUnavailable,
            K::KmsChallengeFailed => SsmcErrorKind::KmsChallengeFailed,
            K::KmsTampered => SsmcErrorKind::KmsTampered,
            K::NoCredentials => SsmcErrorKind::NoCredentials,
            K::CredentialsExpired => SsmcErrorKind::CredentialsExpired,
            K::EndpointUnreachable => SsmcErrorKind::EndpointUnreachable,
            K::TargetNotConnected => SsmcErrorKind::TargetNotConnected,
            K::TimedOut => SsmcErrorKind::TimedOut,
            K::Cancelled => SsmcErrorKind::Cancelled,
            K::Io => SsmcErrorKind::Internal,
        };
        Self {
            kind,
            message: e.to_string(),
        }
    }
}

thread_local! {
    static LAST_ERROR: RefCell<(SsmcErrorKind, CString)> = RefCell::new((SsmcErrorKind::None, CString::default()));
}

pub(crate) fn set_last_error(e: &FfiError) {
    LAST_ERROR.with(|cell| *cell.borrow_mut() = (e.kind, to_cstring(&e.message)));
}

fn clear_last_error() {
    LAST_ERROR.with(|cell| *cell.borrow_mut() = (SsmcErrorKind::None, CString::default()));
}

/// Text as a C string; interior NULs (never expected) are replaced.
pub(crate) fn to_cstring(s: &str) -> CString {
    CString::new(s.replace('\0', "\u{FFFD}")).unwrap_or_default()
}

/// Runs `f`, turning a panic into `fallback` and an `Internal` last error.
pub(crate) fn guard<T>(fallback: T, f: impl FnOnce() -> T) -> T {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(v) => v,
        Err(_) => {
            set_last_error(&FfiError::new(
                SsmcErrorKind::Internal,
                "internal error (panic) in ssmconnect_native",
            ));
            fallback
        }
    }
}

pub(crate) fn runtime() -> &'static tokio::runtime::Runtime {
    static RT: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RT.get_or_init(|| {
        match tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("ssmconnect")
            .enable_all()
            .build()
        {
            Ok(rt) => rt,
            Err(e) => {
                // Without a runtime nothing in this library can work; never expected in practice.
                eprintln!("ssmconnect_native: cannot start its runtime: {e}");
                std::process::abort()
            }
        }
    })
}

pub(crate) fn parse_request<T: serde::de::DeserializeOwned>(json: &AsciiPointer) -> Result<T, FfiError> {
    let text = json.as_str().map_err(|_| {
        FfiError::new(
            SsmcErrorKind::InvalidArgument,
            "the request is not a valid ASCII string",
        )
    })?;
    serde_json::from_str(text).map_err(|e| FfiError::new(SsmcErrorKind::InvalidArgument, format!("bad request: {e}")))
}

/// The library version, e.g. `0.1.0`. Static; never freed.
#[ffi_function]
#[no_mangle]
pub extern "C" fn ssmc_version() -> *const c_char {
    static V: OnceLock<CString> = OnceLock::new();
    V.get_or_init(|| to_cstring(env!("CARGO_PKG_VERSION"))).as_ptr()
}

/// Kind of the last error on this thread from a function that returned a null handle.
#[ffi_function]
#[no_mangle]
pub extern "C" fn ssmc_last_error_kind() -> SsmcErrorKind {
    LAST_ERROR.with(|cell| cell.borrow().0)
}

/// Message of the last error on this thread; valid until the next failing call on this thread.
#[ffi_function]
#[no_mangle]
pub extern "C" fn ssmc_last_error_message() -> *const c_char {
    LAST_ERROR.with(|cell| cell.borrow().1.as_ptr())
}

/// Frees a string this library handed over with ownership (see each export). Null is ignored.
#[ffi_function]
#[no_mangle]
pub extern "C" fn ssmc_string_free(s: *mut c_void) {
    guard((), || {
        if !s.is_null() {
            // SAFETY: `s` came from `CString::into_raw` in this library (the export's contract).
            drop(unsafe { CString::from_raw(s.cast::<c_char>()) });
        }
    });
}

/// Client settings and connections to AWS (or to an emulator); shared by the operations.
#[ffi_type(opaque)]
pub struct SsmcClient {
    pub(crate) connector: std::sync::Arc<ssm_session::Connector>,
}

#[derive(serde::Deserialize, Default)]
#[serde(default, rename_all = "snake_case", deny_unknown_fields)]
struct ClientRequest {
    profile: Option<String>,
    region: Option<String>,
    endpoint_url: Option<String>,
    ec2_endpoint_url: Option<String>,
    ec2_instance_connect_endpoint_url: Option<String>,
    kms_endpoint_url: Option<String>,
    access_key: Option<String>,
    secret_key: Option<String>,
    session_token: Option<String>,
    credentials_file: Option<String>,
    config_file: Option<String>,
    /// A PEM file of CA certificates trusted besides the system's, by the AWS calls and the data
    /// channel (else `AWS_CA_BUNDLE` from `environment`). Not in the export's documentation,
    /// which the generated bindings copy.
    ca_bundle: Option<String>,
    dns_server: Option<String>,
    environment: Option<std::collections::HashMap<String, String>>,
    reason: Option<String>,
}

impl ClientRequest {
    fn into_settings(self) -> Result<ssm_session::Settings, FfiError> {
        let dns_server = (self.dns_server.as_deref().map(str::trim).filter(|s| !s.is_empty()))
            .map(ssm_session::parse_dns_server)
            .transpose()
            .map_err(|e| FfiError::new(SsmcErrorKind::InvalidArgument, e.to_string()))?;
        let settings = ssm_session::Settings {
            aws: ssm_session::AwsOptions {
                profile: self.profile,
                region: self.region,
                access_key: self.access_key,
                secret_key: self.secret_key,
                session_token: self.session_token,
                credentials_file: self.credentials_file.map(Into::into),
                config_file: self.config_file.map(Into::into),
                ca_bundle: self.ca_bundle.map(Into::into),
            },
            endpoints: ssm_session::Endpoints {
                ssm: self.endpoint_url,
                ec2: self.ec2_endpoint_url,
                ec2_instance_connect: self.ec2_instance_connect_endpoint_url,
                kms: self.kms_endpoint_url,
            },
            dns_server,
            reason: self.reason,
            ..ssm_session::Settings::default()
        };
        Ok(match &self.environment {
            Some(env) => settings.with_environment(env),
            None => settings,
        })
    }
}

/// Creates a client from a JSON object with optional `profile`, `region`, `endpoint_url` (SSM),
/// `ec2_endpoint_url` (target resolution), `ec2_instance_connect_endpoint_url`,
/// `kms_endpoint_url` (data keys of KMS-encrypted sessions), `access_key`,
/// `secret_key`, `session_token`, `credentials_file` and `config_file` (the shared AWS files, in
/// place of the defaults), `dns_server` (`ADDR` or `ADDR:PORT` for DNS-name targets; default the
/// system resolver), `reason` (StartSession's `Reason` for every session started from the
/// client, kept in the session's audit trail) and `environment` (an object of `AWS_*` variables as the caller sees them:
/// what they set fills what the other fields leave unset, read as the AWS SDK reads the
/// environment; callers whose environment copy differs from the process's, .NET on Unix, pass
/// theirs here). The process environment is read by the SDK too. Returns null on error (see last
/// error). Free with [`ssmc_client_free`].
#[ffi_function]
#[no_mangle]
pub extern "C" fn ssmc_client_new(config_json: AsciiPointer) -> *mut SsmcClient {
    guard(null_mut(), || {
        clear_last_error();
        match parse_request::<ClientRequest>(&config_json).and_then(ClientRequest::into_settings) {
            Ok(settings) => Box::into_raw(Box::new(SsmcClient {
                connector: std::sync::Arc::new(ssm_session::Connector::new(settings)),
            })),
            Err(e) => {
                set_last_error(&e);
                null_mut()
            }
        }
    })
}

/// Frees a client. Operations and forwards made from it stay valid. Null is ignored.
#[ffi_function]
#[no_mangle]
pub extern "C" fn ssmc_client_free(client: *mut SsmcClient) {
    guard((), || {
        if !client.is_null() {
            // SAFETY: `client` came from `ssmc_client_new` and is freed once (the contract).
            drop(unsafe { Box::from_raw(client) });
        }
    });
}

/// Lists running EC2 instances, for completing targets as they are typed: a JSON array of
/// objects with `instance_id` and `name` (the `Name` tag, or null), in the order EC2 lists them,
/// at most `limit` of them. Blocks the calling thread until the answer comes or `timeout_ms`
/// milliseconds passed (then null with a TimedOut last error); must not be called from a thread
/// of this library's runtime. Returns the text, which the caller frees with
/// [`ssmc_string_free`], or null with the last error set.
#[ffi_function]
#[no_mangle]
pub extern "C" fn ssmc_client_running_instances(client: *const SsmcClient, limit: u32, timeout_ms: u32) -> *mut c_char {
    guard(null_mut(), || {
        clear_last_error();
        let limit = usize::try_from(limit).unwrap_or(usize::MAX);
        let listed = block_on_client(client, timeout_ms, "DescribeInstances", |connector| async move {
            connector.running_instances(limit).await
        });
        match listed {
            Ok(list) => {
                let items: Vec<serde_json::Value> = list
                    .iter()
                    .map(|c| serde_json::json!({ "instance_id": c.instance_id, "name": c.name }))
                    .collect();
                to_cstring(&serde_json::Value::Array(items).to_string()).into_raw()
            }
            Err(e) => {
                set_last_error(&e);
                null_mut()
            }
        }
    })
}

/// Runs `work` on the connector of `client` on this library's runtime, blocking the calling
/// thread until it ends or `timeout_ms` milliseconds passed (then a TimedOut error saying that
/// `operation` did not answer). A null client is an InvalidArgument error.
fn block_on_client<T, F, Fut>(
    client: *const SsmcClient,
    timeout_ms: u32,
    operation: &str,
    work: F,
) -> Result<T, FfiError>
where
    F: FnOnce(std::sync::Arc<ssm_session::Connector>) -> Fut,
    Fut: std::future::Future<Output = ssm_session::Result<T>>,
{
    if client.is_null() {
        return Err(FfiError::new(
            SsmcErrorKind::InvalidArgument,
            "the client handle is null",
        ));
    }
    // SAFETY: non-null and, by contract, a live client from `ssmc_client_new`.
    let connector = unsafe { &*client }.connector.clone();
    let deadline = std::time::Duration::from_millis(u64::from(timeout_ms));
    // The timer is made inside the runtime: it needs its reactor.
    match runtime().block_on(async move { tokio::time::timeout(deadline, work(connector)).await }) {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(e)) => Err(FfiError::from(e)),
        Err(_) => Err(FfiError::new(
            SsmcErrorKind::TimedOut,
            format!("{operation} did not answer within {timeout_ms} ms"),
        )),
    }
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct PasswordRequest {
    target: String,
    /// The key pair's private key file (PEM).
    key_file: std::path::PathBuf,
}

/// The Windows Administrator password of an instance, for an RDP login: `request_json` holds
/// `target` and `key_file` (the key pair's private key, PEM, as EC2 gave it out); EC2
/// `GetPasswordData` gives the password encrypted to that key pair, and it is decrypted with the
/// file. Blocks the calling thread as [`ssmc_client_running_instances`] does. Returns a JSON
/// object with `instance_id` and `password`, which the caller frees with [`ssmc_string_free`]
/// (and should not keep), or null with the last error set.
#[ffi_function]
#[no_mangle]
pub extern "C" fn ssmc_client_windows_password(
    client: *const SsmcClient,
    request_json: AsciiPointer,
    timeout_ms: u32,
) -> *mut c_char {
    guard(null_mut(), || {
        clear_last_error();
        let result = parse_request::<PasswordRequest>(&request_json).and_then(|req| {
            let pem = zeroize::Zeroizing::new(std::fs::read_to_string(&req.key_file).map_err(|e| {
                FfiError::new(
                    SsmcErrorKind::InvalidArgument,
                    format!("cannot read the key pair file {}: {e}", req.key_file.display()),
                )
            })?);
            block_on_client(client, timeout_ms, "GetPasswordData", |connector| async move {
                connector
                    .windows_password(&req.target, &pem, &ssm_session::no_stages)
                    .await
            })
        });
        match result {
            Ok((target, password)) => {
                #[derive(serde::Serialize)]
                struct Answer<'a> {
                    instance_id: &'a str,
                    password: &'a str,
                }
                let answer = Answer {
                    instance_id: &target.instance_id,
                    password: &password,
                };
                // One copy of the password besides the caller's, wiped when dropped.
                match serde_json::to_string(&answer) {
                    Ok(json) => to_cstring(&zeroize::Zeroizing::new(json)).into_raw(),
                    Err(_) => null_mut(),
                }
            }
            Err(e) => {
                set_last_error(&e);
                null_mut()
            }
        }
    })
}

/// Starts capturing the library's log lines at `max_level` (0 off, 1 error, 2 warn, 3 info,
/// 4 debug, 5 trace) for [`ssmc_log_next`]. The first call installs the capture.
#[ffi_function]
#[no_mangle]
pub extern "C" fn ssmc_log_enable(max_level: u32) {
    guard((), || logs::enable(max_level));
}

/// The oldest captured log line, or null when there is none; its level (1 error … 5 trace) goes
/// to `level` when not null. The caller frees the line with [`ssmc_string_free`].
#[ffi_function]
#[no_mangle]
pub extern "C" fn ssmc_log_next(level: *mut u32) -> *mut c_char {
    guard(null_mut(), || match logs::next() {
        Some((lvl, line)) => {
            if !level.is_null() {
                // SAFETY: non-null and, by contract, pointing at a u32 the caller owns.
                unsafe { *level = lvl };
            }
            to_cstring(&line).into_raw()
        }
        None => null_mut(),
    })
}

pub use ops::*;

/// Everything exported, for the C# generator.
pub fn ffi_inventory() -> Inventory {
    InventoryBuilder::new()
        .register(function!(ssmc_version))
        .register(function!(ssmc_last_error_kind))
        .register(function!(ssmc_last_error_message))
        .register(function!(ssmc_string_free))
        .register(function!(ssmc_client_new))
        .register(function!(ssmc_client_free))
        .register(function!(ssmc_client_running_instances))
        .register(function!(ssmc_client_windows_password))
        .register(function!(ssmc_log_enable))
        .register(function!(ssmc_log_next))
        .register(function!(ssmc_forward_begin))
        .register(function!(ssmc_shell_begin))
        .register(function!(ssmc_exec_begin))
        .register(function!(ssmc_operation_state))
        .register(function!(ssmc_operation_stage))
        .register(function!(ssmc_operation_instance_id))
        .register(function!(ssmc_operation_error_kind))
        .register(function!(ssmc_operation_error_message))
        .register(function!(ssmc_operation_exit_code))
        .register(function!(ssmc_operation_next_output))
        .register(function!(ssmc_operation_interrupt))
        .register(function!(ssmc_operation_cancel))
        .register(function!(ssmc_operation_wait))
        .register(function!(ssmc_operation_take_forward))
        .register(function!(ssmc_operation_free))
        .register(function!(ssmc_forward_local_port))
        .register(function!(ssmc_forward_local_address))
        .register(function!(ssmc_forward_session_id))
        .register(function!(ssmc_forward_target))
        .register(function!(ssmc_forward_instance_id))
        .register(function!(ssmc_forward_mode))
        .register(function!(ssmc_forward_bytes_sent))
        .register(function!(ssmc_forward_bytes_received))
        .register(function!(ssmc_forward_connections))
        .register(function!(ssmc_forward_active_connections))
        .register(function!(ssmc_forward_state))
        .register(function!(ssmc_forward_error_message))
        .register(function!(ssmc_forward_stop))
        .register(function!(ssmc_forward_wait))
        .register(function!(ssmc_forward_free))
        .inventory()
}
