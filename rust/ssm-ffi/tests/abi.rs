//! The C ABI driven the way a foreign caller drives it: raw pointers, blocking waits, explicit frees.

use std::ffi::{CStr, CString};
use std::io::{Read, Write};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use interoptopus::patterns::string::AsciiPointer;
use ssm_emulator::{Config, Emulator, Faults};
use ssm_testkit::{echo_server, emulator, ACCESS_KEY, REGION, SECRET_KEY, TARGET};
use ssmconnect_native::*;

fn ascii(s: &CString) -> AsciiPointer<'_> {
    AsciiPointer::from_slice_with_nul(s.as_bytes_with_nul()).unwrap()
}

fn text(p: *const std::ffi::c_char) -> String {
    assert!(!p.is_null());
    unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned()
}

/// Tests that enable log capture (which wakes every waiter per line) and tests that time a wait
/// take turns.
static LOGS: Mutex<()> = Mutex::new(());

/// Takes the log turn with capture off: once a test turned capture on it stays installed for the
/// process, and a captured line would wake a timed waiter early.
fn quiet() -> std::sync::MutexGuard<'static, ()> {
    let turn = LOGS.lock().unwrap_or_else(|p| p.into_inner());
    ssmc_log_enable(0);
    turn
}

fn wait_op(op: *mut SsmcOperation) -> SsmcState {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let s = ssmc_operation_wait(op, 1000);
        if s != SsmcState::Running {
            return s;
        }
        assert!(
            Instant::now() < deadline,
            "operation still running at stage {}",
            text(ssmc_operation_stage(op))
        );
    }
}

fn client(endpoint: &str) -> *mut SsmcClient {
    let cfg = CString::new(format!(
        r#"{{"region":"{REGION}","endpoint_url":"{endpoint}","access_key":"{ACCESS_KEY}","secret_key":"{SECRET_KEY}"}}"#
    ))
    .unwrap();
    let c = ssmc_client_new(ascii(&cfg));
    assert!(!c.is_null(), "{}", text(ssmc_last_error_message()));
    c
}

#[test]
fn bad_input_is_refused_with_a_kind_and_a_message() {
    let bad = CString::new("{not json").unwrap();
    assert!(ssmc_client_new(ascii(&bad)).is_null());
    assert_eq!(ssmc_last_error_kind(), SsmcErrorKind::InvalidArgument);
    assert!(text(ssmc_last_error_message()).contains("bad request"));
    assert_eq!(ssmc_operation_state(std::ptr::null()), SsmcState::Failed);
    assert_eq!(ssmc_last_error_kind(), SsmcErrorKind::InvalidArgument);
    assert_eq!(ssmc_forward_local_port(std::ptr::null_mut()), 0);
    let mut code = 42;
    assert_eq!(ssmc_operation_exit_code(std::ptr::null(), &mut code), 0);
    assert_eq!(ssmc_last_error_kind(), SsmcErrorKind::InvalidArgument);
    assert_eq!(code, 42);
    let req = CString::new(r#"{"target":"i-0123456789abcdef0"}"#).unwrap();
    assert!(ssmc_forward_begin(std::ptr::null(), ascii(&req)).is_null());
    ssmc_operation_free(std::ptr::null_mut());
    ssmc_forward_free(std::ptr::null_mut());
    ssmc_string_free(std::ptr::null_mut());
    assert!(!text(ssmc_version()).is_empty());
}

#[test]
fn a_forward_runs_reports_and_stops_through_the_abi() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let emu = rt.block_on(emulator(Config::default()));
    // The echo server runs on the runtime's worker threads while the test thread calls the ABI.
    let echo = rt.block_on(echo_server());
    let _logs = LOGS.lock().unwrap_or_else(|p| p.into_inner());
    ssmc_log_enable(4);
    let c = client(&emu.endpoint());
    let req = CString::new(format!(r#"{{"target":"{TARGET}","remote_port":{echo}}}"#)).unwrap();
    let op = ssmc_forward_begin(c, ascii(&req));
    assert!(!op.is_null());
    assert_eq!(
        wait_op(op),
        SsmcState::Succeeded,
        "{}",
        text(ssmc_operation_error_message(op))
    );
    let f = ssmc_operation_take_forward(op);
    assert!(!f.is_null());
    assert!(ssmc_operation_take_forward(op).is_null(), "handed over once");
    let mut code = 42;
    assert_eq!(ssmc_operation_exit_code(op, &mut code), 0, "a forward has no exit code");
    assert_eq!(code, 42);
    ssmc_operation_free(op);

    let port = ssmc_forward_local_port(f);
    assert_ne!(port, 0);
    assert_eq!(text(ssmc_forward_local_address(f)), "127.0.0.1");
    assert_eq!(text(ssmc_forward_instance_id(f)), "i-0123456789abcdef0");
    assert!(text(ssmc_forward_session_id(f)).starts_with("emulator-"));
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.write_all(b"through the abi").unwrap();
    let mut buf = [0u8; 15];
    s.read_exact(&mut buf).unwrap();
    assert_eq!(&buf, b"through the abi");
    drop(s);
    assert_eq!(ssmc_forward_bytes_sent(f), 15);
    assert_eq!(ssmc_forward_connections(f), 1);
    assert_eq!(ssmc_forward_state(f), SsmcState::Running);

    ssmc_forward_stop(f);
    let deadline = Instant::now() + Duration::from_secs(15);
    while ssmc_forward_wait(f, 1000) == SsmcState::Running {
        assert!(Instant::now() < deadline, "forward did not stop");
    }
    assert_eq!(
        ssmc_forward_state(f),
        SsmcState::Succeeded,
        "{}",
        text(ssmc_forward_error_message(f))
    );
    assert!(
        std::net::TcpStream::connect(("127.0.0.1", port)).is_err(),
        "nothing left listening"
    );
    ssmc_forward_free(f);

    let mut lines = 0;
    let mut level = 0u32;
    loop {
        let line = ssmc_log_next(&mut level);
        if line.is_null() {
            break;
        }
        assert!((1..=4).contains(&level));
        ssmc_string_free(line.cast());
        lines += 1;
    }
    ssmc_log_enable(0);
    assert!(lines > 0, "the forward logged nothing at debug level");
    ssmc_client_free(c);
}

/// The captured lines, oldest first, with their levels.
fn drain_logs() -> Vec<(u32, String)> {
    let mut out = Vec::new();
    let mut level = 0u32;
    loop {
        let line = ssmc_log_next(&mut level);
        if line.is_null() {
            return out;
        }
        out.push((level, text(line)));
        ssmc_string_free(line.cast());
    }
}

#[test]
fn a_listener_on_every_interface_is_warned_about_in_the_captured_log() {
    // The cmdlets capture warnings always and show them as PowerShell warnings.
    let rt = tokio::runtime::Runtime::new().unwrap();
    let emu = rt.block_on(emulator(Config::default()));
    let echo = rt.block_on(echo_server());
    let _logs = LOGS.lock().unwrap_or_else(|p| p.into_inner());
    ssmc_log_enable(0);
    drain_logs();
    ssmc_log_enable(2);
    let c = client(&emu.endpoint());
    let req = CString::new(format!(
        r#"{{"target":"{TARGET}","remote_port":{echo},"local_address":"0.0.0.0"}}"#
    ))
    .unwrap();
    let op = ssmc_forward_begin(c, ascii(&req));
    assert_eq!(
        wait_op(op),
        SsmcState::Succeeded,
        "{}",
        text(ssmc_operation_error_message(op))
    );
    let f = ssmc_operation_take_forward(op);
    ssmc_operation_free(op);
    assert_eq!(text(ssmc_forward_local_address(f)), "0.0.0.0");
    ssmc_forward_stop(f);
    let deadline = Instant::now() + Duration::from_secs(15);
    while ssmc_forward_wait(f, 1000) == SsmcState::Running {
        assert!(Instant::now() < deadline, "forward did not stop");
    }
    ssmc_forward_free(f);
    let lines = drain_logs();
    ssmc_log_enable(0);
    ssmc_client_free(c);
    assert!(lines.iter().all(|(level, _)| (1..=2).contains(level)), "{lines:?}");
    let warnings: Vec<_> = lines
        .iter()
        .filter(|(_, l)| l.contains("listening on 0.0.0.0"))
        .collect();
    assert_eq!(warnings.len(), 1, "one warning about the listener: {lines:?}");
    assert_eq!(warnings[0].0, 2, "at warning level");
}

/// Runs `AWS-StartInteractiveCommand` with `command` through the ABI and returns what
/// `ssmc_operation_exit_code` says: `None` for 0, the code for 1.
fn shell_exit_code(invent_shell_exit_code: bool, command: &str) -> Option<i32> {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let emu = rt.block_on(emulator(Config {
        shell_start_delay_ms: 0,
        invent_shell_exit_code,
        ..Config::default()
    }));
    let c = client(&emu.endpoint());
    let req = CString::new(format!(
        r#"{{"target":"{TARGET}","document":"AWS-StartInteractiveCommand","parameters":{{"command":["{command}"]}}}}"#
    ))
    .unwrap();
    let op = ssmc_shell_begin(c, ascii(&req));
    assert!(!op.is_null());
    assert_eq!(
        wait_op(op),
        SsmcState::Succeeded,
        "{}",
        text(ssmc_operation_error_message(op))
    );
    let mut code = -42;
    let known = ssmc_operation_exit_code(op, &mut code);
    assert_eq!(ssmc_operation_exit_code(op, std::ptr::null_mut()), known);
    ssmc_operation_free(op);
    ssmc_client_free(c);
    match known {
        0 => {
            assert_eq!(code, -42, "left alone when unknown");
            None
        }
        1 => Some(code),
        other => panic!("ssmc_operation_exit_code returned {other}"),
    }
}

/// Set in the child process that runs the shell test.
const SHELL_CHILD: &str = "SSMC_ABI_TEST_SHELL_CHILD";

#[test]
fn a_shell_exit_code_is_unknown_unless_the_agent_reports_one() {
    // The shell runs on this process's stdin and stdout: in a child of this test binary whose
    // stdin is empty and stdout a pipe, never on the terminal cargo test may have.
    if std::env::var_os(SHELL_CHILD).is_none() {
        let name = "a_shell_exit_code_is_unknown_unless_the_agent_reports_one";
        let out = std::process::Command::new(std::env::current_exe().unwrap())
            .args([name, "--exact", "--test-threads=1"])
            .env(SHELL_CHILD, "1")
            .stdin(std::process::Stdio::null())
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success() && stdout.contains("1 passed"),
            "{stdout}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        return;
    }
    // The agent sends no exit code for pty shells; the emulator invents one only when asked.
    // (The commands print first: the client learns that the session is a shell from output.)
    assert_eq!(shell_exit_code(false, "echo ran; exit 5"), None);
    assert_eq!(shell_exit_code(true, "echo ran; exit 5"), Some(5));
    assert_eq!(shell_exit_code(true, "echo ran; exit 0"), Some(0));
}

#[test]
fn port_in_use_and_unknown_targets_have_their_kinds() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let emu = rt
        .block_on(Emulator::start(Config {
            targets: vec!["i-0aaaaaaaaaaaaaaaa".into()],
            ..Config::default()
        }))
        .unwrap();
    let c = client(&emu.endpoint());
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let req = CString::new(format!(
        r#"{{"target":"i-0aaaaaaaaaaaaaaaa","remote_port":80,"local_port":{port}}}"#
    ))
    .unwrap();
    let op = ssmc_forward_begin(c, ascii(&req));
    assert_eq!(wait_op(op), SsmcState::Failed);
    assert_eq!(ssmc_operation_error_kind(op), SsmcErrorKind::PortInUse);
    assert!(text(ssmc_operation_error_message(op)).contains(&port.to_string()));
    ssmc_operation_free(op);
    assert_eq!(emu.stats().sessions_started, 0);

    let req = CString::new(r#"{"target":"i-0bbbbbbbbbbbbbbbb","remote_port":80}"#).unwrap();
    let op = ssmc_forward_begin(c, ascii(&req));
    assert_eq!(wait_op(op), SsmcState::Failed);
    assert_eq!(ssmc_operation_error_kind(op), SsmcErrorKind::TargetNotConnected);
    assert!(text(ssmc_operation_error_message(op)).contains("TargetNotConnected"));
    ssmc_operation_free(op);
    ssmc_client_free(c);
}

/// An emulator whose frames to the client are all lost: a session never completes its handshake,
/// so a forward operation stays Running at its last stage until cancelled.
fn emulator_that_never_answers(rt: &tokio::runtime::Runtime) -> Emulator {
    let mut faults = Faults::default();
    faults.to_client.drop = 1.0;
    rt.block_on(Emulator::start(Config {
        faults,
        ..Config::default()
    }))
    .unwrap()
}

/// A forward operation against [`emulator_that_never_answers`], waited for (with returns for
/// each stage) until it reaches its last stage before the handshake, from where nothing changes
/// on its own.
fn stalled_forward(rt: &tokio::runtime::Runtime) -> (Emulator, *mut SsmcClient, *mut SsmcOperation) {
    let emu = emulator_that_never_answers(rt);
    let c = client(&emu.endpoint());
    let req = CString::new(format!(r#"{{"target":"{TARGET}","remote_port":80}}"#)).unwrap();
    let op = ssmc_forward_begin(c, ascii(&req));
    let deadline = Instant::now() + Duration::from_secs(30);
    while !text(ssmc_operation_stage(op)).starts_with("Starting a session") {
        assert_eq!(ssmc_operation_wait(op, 1000), SsmcState::Running);
        assert!(Instant::now() < deadline, "stuck at {}", text(ssmc_operation_stage(op)));
    }
    (emu, c, op)
}

#[test]
fn a_wait_returns_promptly_when_the_state_changes() {
    let _logs = quiet();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let emu = rt.block_on(emulator(Config::default()));
    let c = client(&emu.endpoint());
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let req = CString::new(format!(
        r#"{{"target":"i-0123456789abcdef0","remote_port":80,"local_port":{port}}}"#
    ))
    .unwrap();
    let started = Instant::now();
    let op = ssmc_forward_begin(c, ascii(&req));
    let mut stages = vec![];
    let mut returns = 0;
    let state = loop {
        let s = ssmc_operation_wait(op, 60_000);
        returns += 1;
        stages.push(text(ssmc_operation_stage(op)));
        if s != SsmcState::Running {
            break s;
        }
        assert!(returns < 50, "the wait keeps returning with nothing new: {stages:?}");
    };
    assert_eq!(state, SsmcState::Failed);
    assert_eq!(ssmc_operation_error_kind(op), SsmcErrorKind::PortInUse);
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "the waits took {:?} for a failure that comes at once: {stages:?}",
        started.elapsed()
    );
    assert_eq!(
        ssmc_operation_wait(op, 60_000),
        SsmcState::Failed,
        "a finished operation returns at once"
    );
    assert!(started.elapsed() < Duration::from_secs(20));
    ssmc_operation_free(op);
    ssmc_client_free(c);
}

#[test]
fn a_wait_returns_on_its_timeout_while_the_work_still_runs() {
    let _logs = quiet();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let (_emu, c, op) = stalled_forward(&rt);
    // Whatever woke the previous wait has been seen; nothing new comes now.
    ssmc_operation_wait(op, 0);
    let started = Instant::now();
    assert_eq!(ssmc_operation_wait(op, 400), SsmcState::Running);
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(400) && waited < Duration::from_secs(5),
        "waited {waited:?} for a 400 ms timeout"
    );
    ssmc_operation_cancel(op);
    assert_eq!(ssmc_operation_wait(op, 0), SsmcState::Cancelled);
    ssmc_operation_free(op);
    ssmc_client_free(c);
}

/// Runs `wait` on this thread while another thread does `act` 300 ms later, and checks that the
/// wait returned after `act`, and within 500 ms of it. Returns what the wait returned. A wait
/// that returns `Running` before `act` (other things wake waits too, e.g. a log line the work
/// writes) is simply waited again.
fn woken_by_another_thread(
    what: &str,
    mut wait: impl FnMut() -> SsmcState,
    act: impl FnOnce() + Send + 'static,
) -> SsmcState {
    let acted = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flag = acted.clone();
    let actor = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(300));
        let at = Instant::now();
        flag.store(true, std::sync::atomic::Ordering::SeqCst);
        act();
        at
    });
    let state = loop {
        let state = wait();
        if state != SsmcState::Running || acted.load(std::sync::atomic::Ordering::SeqCst) {
            break state;
        }
    };
    let woken = Instant::now();
    let acted_at = actor.join().unwrap();
    assert!(woken >= acted_at, "the waiter returned ({state:?}) before the {what}");
    assert!(
        woken - acted_at < Duration::from_millis(500),
        "the waiter woke {:?} after the {what}",
        woken - acted_at
    );
    state
}

#[test]
fn a_cancel_from_another_thread_wakes_the_waiter_at_once() {
    let _logs = quiet();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let (_emu, c, op) = stalled_forward(&rt);

    let shared = op as usize;
    let state = woken_by_another_thread(
        "cancel",
        || ssmc_operation_wait(op, 60_000),
        move || ssmc_operation_cancel(shared as *mut SsmcOperation),
    );
    assert_eq!(state, SsmcState::Cancelled);
    assert_eq!(ssmc_operation_error_kind(op), SsmcErrorKind::Cancelled);
    ssmc_operation_free(op);
    ssmc_client_free(c);
}

#[test]
fn a_stop_from_another_thread_wakes_a_forward_waiter_at_once() {
    let _logs = quiet();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let emu = rt.block_on(emulator(Config::default()));
    let c = client(&emu.endpoint());
    let req = CString::new(format!(
        r#"{{"target":"{TARGET}","remote_port":{}}}"#,
        rt.block_on(echo_server())
    ))
    .unwrap();
    let op = ssmc_forward_begin(c, ascii(&req));
    assert_eq!(
        wait_op(op),
        SsmcState::Succeeded,
        "{}",
        text(ssmc_operation_error_message(op))
    );
    let f = ssmc_operation_take_forward(op);
    ssmc_operation_free(op);

    let shared = f as usize;
    woken_by_another_thread(
        "stop",
        || ssmc_forward_wait(f, 60_000),
        move || ssmc_forward_stop(shared as *mut SsmcForward),
    );
    let deadline = Instant::now() + Duration::from_secs(15);
    while ssmc_forward_wait(f, 1000) == SsmcState::Running {
        assert!(Instant::now() < deadline, "the forward did not end after the stop");
    }
    assert_eq!(ssmc_forward_state(f), SsmcState::Succeeded);
    assert_eq!(ssmc_forward_wait(std::ptr::null(), 0), SsmcState::Failed);
    assert_eq!(ssmc_last_error_kind(), SsmcErrorKind::InvalidArgument);
    ssmc_forward_free(f);
    ssmc_client_free(c);
}

/// Starts a forward to `remote_port` that listens on `local_port` (so that the port is known
/// before the operation succeeds).
fn begin_forward(c: *mut SsmcClient, remote_port: u16, local_port: u16) -> *mut SsmcOperation {
    let req = CString::new(format!(
        r#"{{"target":"{TARGET}","remote_port":{remote_port},"local_port":{local_port}}}"#
    ))
    .unwrap();
    let op = ssmc_forward_begin(c, ascii(&req));
    assert!(!op.is_null(), "{}", text(ssmc_last_error_message()));
    op
}

/// A forward begun and waited for until it forwards; its operation and the forward taken from it.
fn started_forward(c: *mut SsmcClient, remote_port: u16, local_port: u16) -> (*mut SsmcOperation, *mut SsmcForward) {
    let op = begin_forward(c, remote_port, local_port);
    assert_eq!(
        wait_op(op),
        SsmcState::Succeeded,
        "{}",
        text(ssmc_operation_error_message(op))
    );
    let f = ssmc_operation_take_forward(op);
    assert!(!f.is_null());
    (op, f)
}

fn accepts(port: u16) -> bool {
    std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
}

/// Checks, within a few seconds, that nothing listens on `port` any more and that the emulator
/// has seen every session end (`sessions` of them at least).
fn all_stopped(rt: &tokio::runtime::Runtime, emu: &Emulator, port: u16, sessions: usize, what: &str) {
    let closed = rt.block_on(ssm_testkit::wait_until(Duration::from_secs(5), || !accepts(port)));
    assert!(closed, "{what}: port {port} still accepts connections");
    let ended = rt.block_on(ssm_testkit::wait_until(Duration::from_secs(5), || {
        let s = emu.sessions();
        s.len() >= sessions && s.iter().all(|s| s.ended)
    }));
    assert!(ended, "{what}: the sessions did not all end: {:?}", emu.sessions());
}

/// Sends a few bytes through the forward on `port` and reads them back from the echo server.
fn echoes(port: u16) {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(b"still here").unwrap();
    let mut buf = [0u8; 10];
    s.read_exact(&mut buf).unwrap();
    assert_eq!(&buf, b"still here");
}

#[test]
fn freeing_any_handle_in_any_state_stops_what_it_owns() {
    let _logs = quiet();
    let rt = tokio::runtime::Runtime::new().unwrap();

    // A forward operation freed while it runs, before it succeeds: its listener is bound and its
    // session started, the handshake never completes.
    let stalled = emulator_that_never_answers(&rt);
    let c = client(&stalled.endpoint());
    let port = ssm_testkit::free_port();
    let op = begin_forward(c, 80, port);
    let deadline = Instant::now() + Duration::from_secs(30);
    while !text(ssmc_operation_stage(op)).starts_with("Starting a session") || stalled.sessions().is_empty() {
        assert_eq!(ssmc_operation_wait(op, 200), SsmcState::Running);
        assert!(Instant::now() < deadline, "stuck at {}", text(ssmc_operation_stage(op)));
    }
    assert!(accepts(port), "the running operation has its listener bound");
    ssmc_operation_free(op);
    all_stopped(&rt, &stalled, port, 1, "operation freed while running");
    ssmc_client_free(c);

    let emu = rt.block_on(emulator(Config::default()));
    let echo = rt.block_on(echo_server());
    let c = client(&emu.endpoint());

    // A forward operation that succeeded, freed without its forward being taken.
    let port = ssm_testkit::free_port();
    let op = begin_forward(c, echo, port);
    assert_eq!(
        wait_op(op),
        SsmcState::Succeeded,
        "{}",
        text(ssmc_operation_error_message(op))
    );
    echoes(port);
    ssmc_operation_free(op);
    all_stopped(&rt, &emu, port, 1, "succeeded operation freed with its forward untaken");

    // A forward operation cancelled while it runs, then freed.
    let port = ssm_testkit::free_port();
    let op = begin_forward(c, echo, port);
    ssmc_operation_cancel(op);
    assert_eq!(ssmc_operation_state(op), SsmcState::Cancelled);
    ssmc_operation_free(op);
    all_stopped(&rt, &emu, port, 1, "operation cancelled, then freed");

    // A forward handle freed while it forwards (its operation freed before).
    let port = ssm_testkit::free_port();
    let (op, f) = started_forward(c, echo, port);
    ssmc_operation_free(op);
    echoes(port);
    assert_eq!(ssmc_forward_state(f), SsmcState::Running);
    let sessions = emu.sessions().len();
    ssmc_forward_free(f);
    all_stopped(&rt, &emu, port, sessions, "forward freed while running");

    // A forward handle freed after it was stopped and ended, its operation freed after it.
    let port = ssm_testkit::free_port();
    let (op, f) = started_forward(c, echo, port);
    echoes(port);
    ssmc_forward_stop(f);
    let deadline = Instant::now() + Duration::from_secs(15);
    while ssmc_forward_wait(f, 1000) == SsmcState::Running {
        assert!(Instant::now() < deadline, "the forward did not end after the stop");
    }
    let sessions = emu.sessions().len();
    ssmc_forward_free(f);
    ssmc_operation_free(op);
    all_stopped(&rt, &emu, port, sessions, "forward freed after stop");

    // Freed from another thread than the one that started it.
    let port = ssm_testkit::free_port();
    let op = begin_forward(c, echo, port);
    assert_eq!(
        wait_op(op),
        SsmcState::Succeeded,
        "{}",
        text(ssmc_operation_error_message(op))
    );
    let f = ssmc_operation_take_forward(op) as usize;
    let op = op as usize;
    std::thread::spawn(move || {
        ssmc_forward_free(f as *mut SsmcForward);
        ssmc_operation_free(op as *mut SsmcOperation);
    })
    .join()
    .unwrap();
    let sessions = emu.sessions().len();
    all_stopped(&rt, &emu, port, sessions, "handles freed on another thread");
    ssmc_client_free(c);
}

#[test]
fn a_cancel_racing_with_success_never_becomes_success() {
    let _logs = LOGS.lock().unwrap_or_else(|p| p.into_inner());
    let rt = tokio::runtime::Runtime::new().unwrap();
    let emu = rt.block_on(emulator(Config::default()));
    let echo = rt.block_on(echo_server());
    let c = client(&emu.endpoint());
    // The forward logs "port forward ready" as the last thing before the operation succeeds;
    // cancelling the moment that line is seen lands the cancel in the middle of the success.
    ssmc_log_enable(3);
    let mut level = 0u32;
    let mut drain = || {
        let mut lines = vec![];
        loop {
            let line = ssmc_log_next(&mut level);
            if line.is_null() {
                return lines;
            }
            lines.push(text(line));
            ssmc_string_free(line.cast());
        }
    };
    drain();
    let (mut cancelled, mut succeeded) = (0, 0);
    for i in 0..40 {
        let port = ssm_testkit::free_port();
        let op = begin_forward(c, echo, port);
        if i % 8 != 0 {
            let ready = format!("127.0.0.1:{port}");
            let deadline = Instant::now() + Duration::from_secs(30);
            'spin: while ssmc_operation_state(op) == SsmcState::Running {
                for line in drain() {
                    if line.contains("port forward ready") && line.contains(&ready) {
                        break 'spin;
                    }
                }
                assert!(
                    Instant::now() < deadline,
                    "no forward ready at {}",
                    text(ssmc_operation_stage(op))
                );
                std::hint::spin_loop();
            }
        }
        ssmc_operation_cancel(op);
        let state = ssmc_operation_state(op);
        match state {
            SsmcState::Cancelled => {
                cancelled += 1;
                // Whatever the task still does, it must not change the state any more.
                std::thread::sleep(Duration::from_millis(50));
                assert_eq!(ssmc_operation_state(op), SsmcState::Cancelled, "iteration {i}");
                assert_eq!(ssmc_operation_error_kind(op), SsmcErrorKind::Cancelled);
                assert!(ssmc_operation_take_forward(op).is_null(), "iteration {i}");
                ssmc_operation_free(op);
            }
            SsmcState::Succeeded => {
                succeeded += 1;
                let f = ssmc_operation_take_forward(op);
                assert!(!f.is_null(), "iteration {i}");
                ssmc_operation_free(op);
                echoes(port);
                assert_eq!(ssmc_forward_state(f), SsmcState::Running);
                ssmc_forward_free(f);
            }
            other => panic!(
                "iteration {i}: {other:?} after a cancel: {}",
                text(ssmc_operation_error_message(op))
            ),
        }
        drain();
        // A cancel that came early enough started no session at all.
        let started = if state == SsmcState::Succeeded { 1 } else { 0 };
        all_stopped(&rt, &emu, port, started, &format!("iteration {i} ({state:?})"));
    }
    ssmc_log_enable(0);
    drain();
    eprintln!("cancel raced with success: {cancelled} cancelled, {succeeded} succeeded");
    assert!(cancelled > 0);
    ssmc_client_free(c);
}

#[test]
fn freeing_a_session_per_connection_forward_terminates_every_session() {
    let _turn = quiet();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let emu = rt.block_on(emulator(Config::default()));
    let echo = rt.block_on(echo_server());
    let c = client(&emu.endpoint());
    let req = CString::new(format!(
        r#"{{"target":"{TARGET}","remote_port":{echo},"session_per_connection":true,"warm_sessions":2}}"#
    ))
    .unwrap();
    let op = ssmc_forward_begin(c, ascii(&req));
    assert!(!op.is_null(), "{}", text(ssmc_last_error_message()));
    assert_eq!(
        wait_op(op),
        SsmcState::Succeeded,
        "{}",
        text(ssmc_operation_error_message(op))
    );
    let f = ssmc_operation_take_forward(op);
    assert!(!f.is_null());
    ssmc_operation_free(op);
    assert_eq!(text(ssmc_forward_mode(f)), "SessionPerConnection");
    assert_eq!(text(ssmc_forward_session_id(f)), "");
    let port = ssmc_forward_local_port(f);

    // Two connections left open (each on a session of its own), and warm sessions waiting.
    let mut open = Vec::new();
    for i in 0..2u8 {
        let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
        let msg = [b'a' + i; 7];
        s.write_all(&msg).unwrap();
        let mut buf = [0u8; 7];
        s.read_exact(&mut buf).unwrap();
        assert_eq!(buf, msg);
        open.push(s);
    }
    let running = |emu: &Emulator| emu.sessions().iter().filter(|s| !s.ended).count();
    let deadline = Instant::now() + Duration::from_secs(30);
    while running(&emu) < 4 {
        assert!(Instant::now() < deadline, "sessions: {:?}", emu.sessions());
        std::thread::sleep(Duration::from_millis(50));
    }

    ssmc_forward_free(f);
    let deadline = Instant::now() + Duration::from_secs(30);
    // Each ends (TerminateSession flag) and is terminated through the API.
    let terminated = |emu: &Emulator| emu.sessions().iter().all(|s| s.ended && s.terminate_calls > 0);
    while !terminated(&emu) {
        assert!(
            Instant::now() < deadline,
            "sessions left running or not terminated after the handle was freed: {:?}",
            emu.sessions()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(emu.sessions().len(), 4, "{:?}", emu.sessions());
    ssmc_client_free(c);
    rt.block_on(emu.stop());
}

/// What an exec operation handed out: stdout, stderr, the exit code, and how many pieces.
struct ExecRun {
    stdout: Vec<u8>,
    stderr: Vec<u8>,
    exit_code: Option<i32>,
    pieces: usize,
}

/// Takes every piece of output waiting now.
fn take_output(op: *mut SsmcOperation, run: &mut ExecRun) -> usize {
    let mut taken = 0;
    loop {
        let (mut stream, mut len) = (0u32, 0u64);
        let p = ssmc_operation_next_output(op, &mut stream, &mut len);
        if p.is_null() {
            return taken;
        }
        let bytes = unsafe { std::slice::from_raw_parts(p, usize::try_from(len).unwrap()) };
        match stream {
            1 => run.stdout.extend_from_slice(bytes),
            2 => run.stderr.extend_from_slice(bytes),
            other => panic!("stream {other}"),
        }
        taken += 1;
        run.pieces += 1;
    }
}

/// Runs `request` (JSON) through `ssmc_exec_begin`, pulling output as a foreign caller does:
/// wait, take what is waiting, until the operation ended and nothing is left. `on_running` is
/// called once, with the operation, after the first piece of output.
fn exec_through_abi(c: *mut SsmcClient, request: &str, mut on_running: impl FnMut(*mut SsmcOperation)) -> ExecRun {
    let req = CString::new(request).unwrap();
    let op = ssmc_exec_begin(c, ascii(&req));
    assert!(!op.is_null(), "{}", text(ssmc_last_error_message()));
    let mut run = ExecRun {
        stdout: Vec::new(),
        stderr: Vec::new(),
        exit_code: None,
        pieces: 0,
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut called = false;
    let state = loop {
        let state = ssmc_operation_wait(op, 1000);
        take_output(op, &mut run);
        if !called && run.pieces > 0 {
            called = true;
            on_running(op);
        }
        if state != SsmcState::Running {
            // What was queued before the end is still there.
            take_output(op, &mut run);
            break state;
        }
        assert!(Instant::now() < deadline, "exec still running");
    };
    assert_eq!(
        state,
        SsmcState::Succeeded,
        "{}",
        text(ssmc_operation_error_message(op))
    );
    let mut code = -42;
    if ssmc_operation_exit_code(op, &mut code) == 1 {
        run.exit_code = Some(code);
    }
    ssmc_operation_free(op);
    run
}

#[test]
fn exec_hands_out_stdout_stderr_and_the_exit_code_through_the_abi() {
    let _turn = quiet();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let emu = rt.block_on(emulator(Config {
        command_document: Some("Own-RunCommand".into()),
        ..Config::default()
    }));
    let c = client(&emu.endpoint());
    // Separate output streams: apart, in order, then the exit code.
    let run = exec_through_abi(
        c,
        &format!(
            r#"{{"target":"{TARGET}","document":"Own-RunCommand","command":["sh","-c","echo out; echo err >&2; exit 3"]}}"#
        ),
        |_| {},
    );
    assert_eq!(run.stdout, b"out\n");
    assert_eq!(run.stderr, b"err\n");
    assert_eq!(run.exit_code, Some(3));
    // A command line as one string: split by the agent.
    let run = exec_through_abi(
        c,
        &format!(r#"{{"target":"{TARGET}","document":"Own-RunCommand","command":"printf '%s|' 'a b' c"}}"#),
        |_| {},
    );
    assert_eq!(run.stdout, b"a b|c|");
    assert_eq!(run.exit_code, Some(0));
    // AWS-StartNonInteractiveCommand: combined, no exit code.
    let run = exec_through_abi(
        c,
        &format!(r#"{{"target":"{TARGET}","command":["sh","-c","echo out; echo err >&2; exit 3"]}}"#),
        |_| {},
    );
    assert_eq!(run.stdout, b"out\nerr\n");
    assert!(run.stderr.is_empty());
    assert_eq!(run.exit_code, None);
    // Ctrl+C reaches the command (its trap prints); the agent then reports 1.
    let run = exec_through_abi(
        c,
        &format!(
            r#"{{"target":"{TARGET}","document":"Own-RunCommand","command":["sh","-c","trap 'echo got-int; exit 7' INT; echo ready; while :; do sleep 0.1; done"]}}"#
        ),
        |op| assert_eq!(ssmc_operation_interrupt(op), 1),
    );
    assert_eq!(String::from_utf8_lossy(&run.stdout), "ready\ngot-int\n");
    assert_eq!(run.exit_code, Some(1), "the agent's handler reaped the command itself");
    // Not an exec operation: no output, no interrupt.
    assert!(ssmc_operation_next_output(std::ptr::null_mut(), std::ptr::null_mut(), std::ptr::null_mut()).is_null());
    assert_eq!(ssmc_operation_interrupt(std::ptr::null_mut()), 0);
    ssmc_client_free(c);
    rt.block_on(emu.stop());
}

#[test]
fn a_caller_that_takes_output_slowly_still_gets_all_of_it() {
    let _turn = quiet();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let emu = rt.block_on(emulator(Config {
        command_document: Some("Own-RunCommand".into()),
        pacing: ssm_emulator::Pacing::Unpaced { chunk: 16 << 10 },
        ..Config::default()
    }));
    let c = client(&emu.endpoint());
    // 4 MiB of text (base64 lines), far more than the operation queues for its caller.
    let req = CString::new(format!(
        r#"{{"target":"{TARGET}","document":"Own-RunCommand","command":["sh","-c","head -c 3145728 /dev/zero | base64"]}}"#
    ))
    .unwrap();
    let op = ssmc_exec_begin(c, ascii(&req));
    assert!(!op.is_null());
    let mut run = ExecRun {
        stdout: Vec::new(),
        stderr: Vec::new(),
        exit_code: None,
        pieces: 0,
    };
    // Not taking anything for a while: the operation must wait for its caller, not drop output.
    std::thread::sleep(Duration::from_secs(2));
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let state = ssmc_operation_wait(op, 1000);
        take_output(op, &mut run);
        if state != SsmcState::Running {
            take_output(op, &mut run);
            assert_eq!(
                state,
                SsmcState::Succeeded,
                "{}",
                text(ssmc_operation_error_message(op))
            );
            break;
        }
        assert!(Instant::now() < deadline, "still running");
    }
    let mut code = -42;
    assert_eq!(ssmc_operation_exit_code(op, &mut code), 1);
    assert_eq!(code, 0);
    // base64 of 3 MiB of zeros: 76-column lines of "A".
    let encoded: usize = 3145728 / 3 * 4;
    let expected_len = encoded + encoded.div_ceil(76);
    assert_eq!(run.stdout.len(), expected_len);
    assert!(run.stdout.iter().all(|b| *b == b'A' || *b == b'\n'));
    ssmc_operation_free(op);
    ssmc_client_free(c);
    rt.block_on(emu.stop());
}

#[test]
fn running_instances_the_resolved_instance_and_the_reason_are_reported() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let config: Config = serde_json::from_value(serde_json::json!({
        "inventory": [
            { "instance_id": "i-0123456789abcdef0", "tags": { "Name": "web" } },
            { "instance_id": "i-0aaaaaaaaaaaaaaa1" },
            { "instance_id": "i-0ccccccccccccccc3", "state": "stopped", "tags": { "Name": "old" } }
        ]
    }))
    .unwrap();
    let emu = rt.block_on(Emulator::start(config)).unwrap();
    let e = emu.endpoint();
    let cfg = CString::new(format!(
        r#"{{"region":"{REGION}","endpoint_url":"{e}","ec2_endpoint_url":"{e}","access_key":"{ACCESS_KEY}","secret_key":"{SECRET_KEY}","reason":"CHG-1 abi"}}"#
    ))
    .unwrap();
    let c = ssmc_client_new(ascii(&cfg));
    assert!(!c.is_null(), "{}", text(ssmc_last_error_message()));

    let listed = |limit: u32| {
        let p = ssmc_client_running_instances(c, limit, 10_000);
        assert!(!p.is_null(), "{}", text(ssmc_last_error_message()));
        let v: serde_json::Value = serde_json::from_str(&text(p)).unwrap();
        ssmc_string_free(p.cast());
        v
    };
    assert_eq!(
        listed(100),
        serde_json::json!([
            { "instance_id": "i-0123456789abcdef0", "name": "web" },
            { "instance_id": "i-0aaaaaaaaaaaaaaa1", "name": null }
        ]),
        "running instances only"
    );
    assert_eq!(listed(1).as_array().map(Vec::len), Some(1));
    assert!(ssmc_client_running_instances(std::ptr::null(), 10, 1000).is_null());
    assert_eq!(ssmc_last_error_kind(), SsmcErrorKind::InvalidArgument);

    let req = CString::new(r#"{"target":"Name:web","remote_port":9}"#).unwrap();
    let op = ssmc_forward_begin(c, ascii(&req));
    assert!(!op.is_null());
    assert_eq!(
        wait_op(op),
        SsmcState::Succeeded,
        "{}",
        text(ssmc_operation_error_message(op))
    );
    assert_eq!(text(ssmc_operation_instance_id(op)), "i-0123456789abcdef0");
    let sessions = emu.sessions();
    assert_eq!(sessions.len(), 1);
    assert_eq!(sessions[0].reason.as_deref(), Some("CHG-1 abi"));
    assert!(ssmc_operation_instance_id(std::ptr::null_mut()).is_null());
    ssmc_operation_free(op);
    ssmc_client_free(c);
}
