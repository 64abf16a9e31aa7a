//! The C ABI driven the way a foreign caller drives it: raw pointers, polling, explicit frees.

use std::ffi::{CStr, CString};
use std::io::{Read, Write};
use std::time::{Duration, Instant};

use interoptopus::patterns::string::AsciiPointer;
use ssm_emulator::Config;
use ssm_testkit::{echo_server, emulator, ACCESS_KEY, REGION, SECRET_KEY, TARGET};
use ssmconnect::*;

fn ascii(s: &CString) -> AsciiPointer<'_> {
    AsciiPointer::from_slice_with_nul(s.as_bytes_with_nul()).unwrap()
}

fn text(p: *const std::ffi::c_char) -> String {
    assert!(!p.is_null());
    unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned()
}

fn wait_op(op: *mut SsmcOperation) -> SsmcState {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let s = ssmc_operation_state(op);
        if s != SsmcState::Running {
            return s;
        }
        assert!(
            Instant::now() < deadline,
            "operation still running at stage {}",
            text(ssmc_operation_stage(op))
        );
        std::thread::sleep(Duration::from_millis(20));
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
    ssmc_operation_free(op);

    let port = ssmc_forward_local_port(f);
    assert_ne!(port, 0);
    assert_eq!(text(ssmc_forward_local_address(f)), "127.0.0.1");
    assert_eq!(text(ssmc_forward_instance_id(f)), TARGET);
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
    while ssmc_forward_state(f) == SsmcState::Running {
        assert!(Instant::now() < deadline, "forward did not stop");
        std::thread::sleep(Duration::from_millis(20));
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
    assert!(lines > 0, "the forward logged nothing at debug level");
    ssmc_client_free(c);
}

#[test]
fn port_in_use_and_unknown_targets_have_their_kinds() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let emu = rt.block_on(emulator(Config {
        targets: vec!["i-0aaaaaaaaaaaaaaaa".into()],
        ..Config::default()
    }));
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
    assert_eq!(ssmc_operation_error_kind(op), SsmcErrorKind::Api);
    assert!(text(ssmc_operation_error_message(op)).contains("TargetNotConnected"));
    ssmc_operation_free(op);
    ssmc_client_free(c);
}
