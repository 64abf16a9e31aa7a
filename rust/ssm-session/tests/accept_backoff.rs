//! A forward whose accept keeps failing (EMFILE: no descriptor left while a connection waits
//! in the backlog) pauses between attempts instead of spinning a core. Linux only: it lowers
//! this test process's descriptor limit, which is why it has a test binary (a process) of its
//! own.
#![cfg(target_os = "linux")]

mod common;

use std::io::Write;
use std::process::{Command, Stdio};
use std::sync::atomic::Ordering;
use std::time::Duration;

use common::*;
use ssm_emulator::Config;

fn cpu_time() -> Duration {
    // SAFETY: getrusage writes into the struct it is given and needs no descriptor.
    let mut u: libc::rusage = unsafe { std::mem::zeroed() };
    let rc = unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut u) };
    assert_eq!(rc, 0, "getrusage");
    let tv = |t: libc::timeval| Duration::from_secs(t.tv_sec as u64) + Duration::from_micros(t.tv_usec as u64);
    tv(u.ru_utime) + tv(u.ru_stime)
}

fn set_nofile(limit: libc::rlimit) {
    // SAFETY: plain system call on a struct we own.
    let rc = unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &limit) };
    assert_eq!(rc, 0, "setrlimit");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_accepts_back_off_instead_of_spinning() {
    let emu = emulator(Config::default()).await;
    let api = api(&emu.endpoint()).await;
    let mut dest = destination().await;
    let fwd = forward(&api, dest.port, |_| {}).await;
    let addr = fwd.local_addr();
    let stats = fwd.stats();

    // The connecting client is another process, with descriptors of its own; it connects
    // when told to, after this process has none left to accept with.
    let mut client = Command::new("bash")
        .arg("-c")
        .arg(format!("read _; exec 3<>/dev/tcp/127.0.0.1/{}; sleep 10", addr.port()))
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("bash");
    let mut go = client.stdin.take().expect("stdin");

    let mut saved: libc::rlimit = unsafe { std::mem::zeroed() };
    // SAFETY: plain system call on a struct we own.
    assert_eq!(unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut saved) }, 0);
    set_nofile(libc::rlimit {
        rlim_cur: 0,
        rlim_max: saved.rlim_max,
    });
    let _ = go.write_all(b"go\n");
    let _ = go.flush();
    // Let the connection land in the backlog and the failures begin, then measure.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let before = cpu_time();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let spent = cpu_time() - before;
    let accepted_while_starved = stats.connections_total.load(Ordering::Relaxed);
    set_nofile(saved);

    eprintln!("CPU time over 1.5 s of failing accepts: {spent:?}");
    assert_eq!(
        accepted_while_starved, 0,
        "nothing can be accepted without a descriptor"
    );
    assert!(
        spent < Duration::from_millis(300),
        "the forward spun on accept errors: {spent:?} of CPU in 1.5 s"
    );

    // With descriptors back, the waiting connection is taken and the forward still works.
    assert!(
        wait_until(Duration::from_secs(5), || stats
            .connections_total
            .load(Ordering::Relaxed)
            == 1)
        .await,
        "the waiting connection was not accepted once descriptors were back"
    );
    let _ = client.kill();
    let _ = client.wait();
    let c = exchange(addr, 1, 50_000, 50_000, Duration::from_secs(20)).await;
    let s = report_for(&mut dest, 1, &mut Vec::new()).await;
    check_exchange(&c, &s, 50_000, 50_000);

    let _ = tokio::time::timeout(Duration::from_secs(15), fwd.stop()).await;
    emu.stop().await;
}
