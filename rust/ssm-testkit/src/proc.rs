//! Child processes that never outlive a test, and the programs tests need.

use std::path::PathBuf;
use std::process::{ExitStatus, Output, Stdio};

use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::process::{Child, ChildStderr, ChildStdin, ChildStdout, Command};

use crate::time::within;

/// A child process in its own process group; the whole group is killed when this is dropped,
/// so a failing assertion never leaves a program (or what it started) behind.
pub struct Proc {
    /// The child itself.
    pub child: Child,
    /// What it is, for messages.
    pub name: String,
    pid: i32,
}

impl Proc {
    /// Spawns `cmd` as the leader of a new process group; fails the test when it cannot.
    pub fn spawn(cmd: &mut Command, name: &str) -> Self {
        cmd.process_group(0).kill_on_drop(true);
        let child = cmd.spawn().unwrap_or_else(|e| panic!("cannot start {name}: {e}"));
        let pid = child.id().expect("child pid") as i32;
        Self {
            child,
            name: name.to_owned(),
            pid,
        }
    }

    /// The leader's process id.
    pub fn pid(&self) -> i32 {
        self.pid
    }

    /// Sends `sig` to the leader only.
    pub fn signal(&self, sig: i32) {
        // SAFETY: kill(2) has no memory effects; the pid is our own child.
        unsafe { libc::kill(self.pid, sig) };
    }

    /// Sends `sig` to the whole process group.
    pub fn signal_group(&self, sig: i32) {
        // SAFETY: as above; a negative pid addresses the group this child leads.
        unsafe { libc::kill(-self.pid, sig) };
    }

    /// The child's stdout (it must be piped).
    pub fn take_stdout(&mut self) -> ChildStdout {
        self.child.stdout.take().expect("stdout is piped")
    }

    /// The child's stderr (it must be piped).
    pub fn take_stderr(&mut self) -> ChildStderr {
        self.child.stderr.take().expect("stderr is piped")
    }

    /// The child's stdin (it must be piped).
    pub fn take_stdin(&mut self) -> ChildStdin {
        self.child.stdin.take().expect("stdin is piped")
    }

    /// Whether it has exited (without waiting).
    pub fn has_exited(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(Some(_)))
    }

    /// Waits for the exit, failing the test after `secs`.
    pub async fn wait(&mut self, secs: u64) -> ExitStatus {
        let what = format!("{} to exit", self.name);
        within(secs, &what, self.child.wait()).await.expect("wait for child")
    }

    /// Exit code, failing on death by signal.
    pub async fn exit_code(&mut self, secs: u64) -> i32 {
        let status = self.wait(secs).await;
        status
            .code()
            .unwrap_or_else(|| panic!("{} died by a signal: {status:?}", self.name))
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        // Kill the group even if the leader has exited: its children (the plugin under `aws`,
        // the ProxyCommand under `ssh`) may still run. A stale group id is harmless here.
        self.signal_group(libc::SIGKILL);
        let _ = self.child.start_kill();
        let _ = self.child.try_wait();
    }
}

/// Reads everything from `r` (bounded by `secs`).
pub async fn read_all(mut r: impl AsyncRead + Unpin, secs: u64) -> Vec<u8> {
    let mut out = Vec::new();
    within(secs, "the end of output", r.read_to_end(&mut out))
        .await
        .expect("read output");
    out
}

/// Runs a short helper program to completion (bounded by 30 s), failing on a non-zero exit.
pub async fn run_ok(cmd: &mut Command, name: &str) -> Output {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let out = within(30, name, cmd.output())
        .await
        .unwrap_or_else(|e| panic!("cannot run {name}: {e}"));
    assert!(
        out.status.success(),
        "{name} failed: {:?}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// Resolves `program` on PATH.
pub fn which(program: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(program))
        .find(|p| p.is_file())
}

/// Fails the test, saying what to install (`hint`), when `program args` does not run and succeed.
pub fn require(program: &str, args: &[&str], hint: &str) {
    let ok = std::process::Command::new(program)
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    assert!(ok, "`{program} {}` does not work here: {hint}", args.join(" "));
}

/// The name of the user running the tests (ssh logs in as this user).
pub fn current_user() -> String {
    let out = std::process::Command::new("id")
        .arg("-un")
        .output()
        .expect("run id -un");
    assert!(out.status.success(), "id -un failed");
    String::from_utf8(out.stdout)
        .expect("utf-8 user name")
        .trim()
        .to_owned()
}
