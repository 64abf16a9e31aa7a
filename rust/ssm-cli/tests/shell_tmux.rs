//! `ssmconnect shell` in a real terminal (tmux) and with stdin redirected, against the emulator.
//! The emulator, like the agent, reports no exit code for shells: they end with status 10
//! (unknown) unless a test has it invent one to check the plumbing.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use ssm_emulator::{Config, Emulator, Faults};
use ssm_testkit::{ACCESS_KEY, REGION, SECRET_KEY, aws_call, aws_env};

const BIN: &str = env!("CARGO_BIN_EXE_ssmconnect");

/// `ssmconnect shell`'s status when the agent reported no exit code.
const NO_EXIT_CODE: i32 = 10;

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("ssmconnect-shell-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A tmux server of our own (its own socket), killed on drop.
struct Tmux {
    socket: String,
}

impl Tmux {
    fn start(name: &str, dir: &Path, endpoint: &str) -> Self {
        let socket = format!("ssmc-{name}-{}", std::process::id());
        let t = Self { socket };
        // A plain bash with the emulator's endpoint and dummy credentials in its environment.
        let init = dir.join("init.sh");
        std::fs::write(
            &init,
            format!(
                "export AWS_ACCESS_KEY_ID={ACCESS_KEY} AWS_SECRET_ACCESS_KEY={SECRET_KEY} AWS_REGION={REGION} \
                 AWS_EC2_METADATA_DISABLED=true HOME={home} PS1='local$ '\n",
                home = dir.display()
            ),
        )
        .unwrap();
        let out = t
            .tmux(&[
                "new-session",
                "-d",
                "-s",
                "main",
                "-x",
                "100",
                "-y",
                "30",
                "bash",
                "--noprofile",
                "--rcfile",
            ])
            .arg(&init)
            .output()
            .unwrap();
        assert!(out.status.success(), "tmux: {}", String::from_utf8_lossy(&out.stderr));
        let _ = endpoint;
        t.wait_for("local$", Duration::from_secs(10));
        t
    }

    fn tmux(&self, args: &[&str]) -> Command {
        let mut c = Command::new("tmux");
        c.args(["-L", &self.socket, "-f", "/dev/null"]).args(args);
        c
    }

    fn send(&self, keys: &str) {
        let ok = self
            .tmux(&["send-keys", "-t", "main", "-l", keys])
            .status()
            .unwrap()
            .success();
        assert!(ok);
    }

    fn key(&self, key: &str) {
        assert!(self.tmux(&["send-keys", "-t", "main", key]).status().unwrap().success());
    }

    fn screen(&self) -> String {
        let out = self
            .tmux(&["capture-pane", "-p", "-t", "main", "-S", "-200"])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn wait_for(&self, needle: &str, limit: Duration) -> String {
        self.wait_until(needle, limit, |s| s.contains(needle))
    }

    /// Waits for the remote shell's prompt: a line that is `#` (tmux trims the space after it).
    fn wait_prompt(&self, limit: Duration) -> String {
        self.wait_until("remote prompt", limit, |s| s.lines().any(|l| l.trim_end() == "#"))
    }

    fn wait_until(&self, needle: &str, limit: Duration, done: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + limit;
        loop {
            let s = self.screen();
            if done(&s) {
                return s;
            }
            assert!(Instant::now() < deadline, "{needle:?} did not appear; screen:\n{s}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn resize(&self, cols: u16, rows: u16) {
        let ok = self
            .tmux(&[
                "resize-window",
                "-t",
                "main",
                "-x",
                &cols.to_string(),
                "-y",
                &rows.to_string(),
            ])
            .status()
            .unwrap()
            .success();
        assert!(ok);
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = self.tmux(&["kill-server"]).status();
    }
}

fn wait_file(path: &Path, limit: Duration) -> String {
    let deadline = Instant::now() + limit;
    loop {
        if let Ok(s) = std::fs::read_to_string(path)
            && s.ends_with('\n')
        {
            return s;
        }
        assert!(Instant::now() < deadline, "{} never written", path.display());
        std::thread::sleep(Duration::from_millis(50));
    }
}

async fn emulator() -> Emulator {
    ssm_testkit::emulator(Config {
        shell_start_delay_ms: 200,
        ..Config::default()
    })
    .await
}

/// An emulator that sends `EXIT_CODE` at the end of shells, which the agent never does.
async fn emulator_inventing_exit_codes() -> Emulator {
    ssm_testkit::emulator(Config {
        shell_start_delay_ms: 200,
        invent_shell_exit_code: true,
        ..Config::default()
    })
    .await
}

/// Starts `ssmconnect shell` in the pane after saving the terminal settings; afterwards the
/// exit code and the settings land in files.
fn run_shell_in(t: &Tmux, dir: &Path, endpoint: &str, extra: &str) {
    let cmd = format!(
        "stty -g > {d}/before; {BIN} --endpoint-url {endpoint} {extra} shell i-0123456789abcdef0; \
         echo $? > {d}/rc; stty -g > {d}/after\n",
        d = dir.display()
    );
    t.send(&cmd);
}

fn assert_terminal_restored(dir: &Path) {
    let before = std::fs::read_to_string(dir.join("before")).unwrap();
    let after = wait_file(&dir.join("after"), Duration::from_secs(10));
    assert_eq!(before, after, "stty -g differs after the session");
}

#[tokio::test(flavor = "multi_thread")]
async fn interactive_shell_types_resizes_and_exits_with_unknown_status() {
    let emu = emulator().await;
    let dir = scratch("interactive");
    let t = Tmux::start("interactive", &dir, &emu.endpoint());
    run_shell_in(&t, &dir, &emu.endpoint(), "");
    t.wait_prompt(Duration::from_secs(15));
    t.send("echo hi-$((40+2))\r");
    t.wait_for("hi-42", Duration::from_secs(10));

    // Ctrl+C is a byte for the remote shell, not a signal for us: the session goes on.
    t.send("sleep 30");
    t.key("Enter");
    t.wait_for("sleep 30", Duration::from_secs(10));
    t.key("C-c");
    // The interrupted shell prints a fresh prompt after the ^C; type only then, as a person would.
    t.wait_until("prompt after ^C", Duration::from_secs(10), |s| {
        s.split("^C")
            .nth(1)
            .is_some_and(|after| after.lines().any(|l| l.trim_end() == "#"))
    });
    t.send("echo still-$((1+1))\r");
    t.wait_for("still-2", Duration::from_secs(10));

    t.resize(120, 40);
    t.send("stty size\r");
    t.wait_for("40 120", Duration::from_secs(10));
    let info = emu.sessions().pop().unwrap();
    assert_eq!(info.terminal_size, Some((120, 40)));

    t.send("exit 3\r");
    assert_eq!(
        wait_file(&dir.join("rc"), Duration::from_secs(15)).trim(),
        NO_EXIT_CODE.to_string()
    );
    assert_terminal_restored(&dir);
}

#[tokio::test(flavor = "multi_thread")]
async fn interactive_shell_exits_with_a_reported_code() {
    let emu = emulator_inventing_exit_codes().await;
    let dir = scratch("reported");
    let t = Tmux::start("reported", &dir, &emu.endpoint());
    run_shell_in(&t, &dir, &emu.endpoint(), "");
    t.wait_prompt(Duration::from_secs(15));
    t.send("exit 3\r");
    assert_eq!(wait_file(&dir.join("rc"), Duration::from_secs(15)).trim(), "3");
    assert_terminal_restored(&dir);
}

#[tokio::test(flavor = "multi_thread")]
async fn far_end_closing_restores_the_terminal() {
    let emu = emulator().await;
    let dir = scratch("farend");
    let t = Tmux::start("farend", &dir, &emu.endpoint());
    run_shell_in(&t, &dir, &emu.endpoint(), "");
    t.wait_prompt(Duration::from_secs(15));
    let sid = emu.sessions().pop().unwrap().session_id;
    let (status, body) = aws_call(emu.addr(), "TerminateSession", serde_json::json!({ "SessionId": sid })).await;
    assert_eq!(status, 200, "{body}");
    // Ended from outside: no exit code, yet no failure either.
    assert_eq!(
        wait_file(&dir.join("rc"), Duration::from_secs(15)).trim(),
        NO_EXIT_CODE.to_string()
    );
    assert_terminal_restored(&dir);
}

#[tokio::test(flavor = "multi_thread")]
async fn network_lost_for_good_restores_the_terminal() {
    let emu = emulator().await;
    let endpoint = emu.endpoint();
    let dir = scratch("netlost");
    let t = Tmux::start("netlost", &dir, &endpoint);
    run_shell_in(&t, &dir, &endpoint, "--reconnect-timeout 2");
    t.wait_prompt(Duration::from_secs(15));
    // Cut the socket at the next frame and refuse every reconnect: the network is gone for good.
    emu.set_faults(Faults {
        cut_after_frames: Some(1),
        max_cuts: Some(1000),
        expire_tokens: true,
        ..Faults::default()
    });
    t.send("echo trigger\r");
    let rc = wait_file(&dir.join("rc"), Duration::from_secs(30));
    assert_ne!(rc.trim(), "0", "losing the service for good is a failure");
    assert_ne!(rc.trim(), NO_EXIT_CODE.to_string(), "a failure, not a shell that ended");
    assert_terminal_restored(&dir);
}

fn run_piped(endpoint: &str, script: &[u8]) -> Output {
    use std::io::Write;
    let mut child = Command::new(BIN)
        .args(["--endpoint-url", endpoint, "shell", "i-0123456789abcdef0"])
        .envs(aws_env())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(script).unwrap();
    // Collect output on a thread (a full pipe would stall the child) and bound the wait.
    let pid = child.id();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(Duration::from_secs(60)) {
        Ok(out) => out.unwrap(),
        Err(_) => {
            let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
            panic!("ssmconnect shell did not finish");
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_script_on_stdin_runs_and_ends_with_unknown_status() {
    let emu = emulator().await;
    let endpoint = emu.endpoint();
    let out = tokio::task::spawn_blocking(move || run_piped(&endpoint, b"echo from-script-$((2*21))\nexit 7\n"))
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("from-script-42"), "{stdout}");
    assert_eq!(
        out.status.code(),
        Some(NO_EXIT_CODE),
        "stderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_script_on_stdin_returns_a_reported_code() {
    let emu = emulator_inventing_exit_codes().await;
    let endpoint = emu.endpoint();
    let out = tokio::task::spawn_blocking(move || run_piped(&endpoint, b"exit 7\n"))
        .await
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(7),
        "stderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_script_on_stdin_sees_a_terminal_size() {
    let emu = emulator().await;
    let endpoint = emu.endpoint();
    // stdout is a pipe, so the size is the official client's fallback, 300×100 (§6.4); without
    // a Size message the remote pty would have 0×0.
    let out = tokio::task::spawn_blocking(move || run_piped(&endpoint, b"echo size-$(stty size | tr ' ' x)-end\n"))
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("size-100x300-end"), "{stdout}");
    assert_eq!(emu.sessions().pop().unwrap().terminal_size, Some((300, 100)));
}

#[tokio::test(flavor = "multi_thread")]
async fn multibyte_output_in_messages_over_1024_bytes_arrives_intact() {
    // The agent's pacing: reads of 1024 bytes end inside 3-byte characters, whose held-back
    // bytes go out in front of the next read, in messages of up to 1027 bytes (§6.5).
    let emu = emulator().await;
    let endpoint = emu.endpoint();
    let out = tokio::task::spawn_blocking(move || {
        run_piped(
            &endpoint,
            b"stty -echo; printf 'begin\\n'; printf '\\342\\202\\254%.0s' $(seq 1 20000); printf '\\nend\\n'\n",
        )
    })
    .await
    .unwrap();
    let stdout = String::from_utf8(out.stdout).expect("the output is whole UTF-8");
    let expected = format!("begin\r\n{}\r\nend", "\u{20ac}".repeat(20000));
    assert!(
        stdout.contains(&expected),
        "{} bytes of output lack the text",
        stdout.len()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_megabyte_of_output_arrives_intact_and_eof_ends_the_session() {
    let emu = ssm_testkit::emulator(Config {
        shell_start_delay_ms: 0,
        pacing: ssm_emulator::Pacing::Unpaced { chunk: 1024 },
        ..Config::default()
    })
    .await;
    let endpoint = emu.endpoint();
    // No `exit`: the end of stdin ends the session.
    let out = tokio::task::spawn_blocking(move || run_piped(&endpoint, b"stty -echo; seq 1 200000\n"))
        .await
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(NO_EXIT_CODE),
        "stderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout).replace('\r', "");
    let expected: String = (1..=200_000).map(|i| format!("{i}\n")).collect();
    assert!(expected.len() > 1 << 20);
    assert!(
        stdout.contains(&expected),
        "output of {} bytes lacks the sequence",
        stdout.len()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_restores_the_terminal_and_terminates_the_session() {
    // A lost client keeps its session for a minute here: only TerminateSession ends it sooner.
    let emu = ssm_testkit::emulator(Config {
        shell_start_delay_ms: 200,
        reconnect_grace_ms: 60_000,
        ..Config::default()
    })
    .await;
    let dir = scratch("sigterm");
    let t = Tmux::start("sigterm", &dir, &emu.endpoint());
    // `exec` keeps the pid the shell wrote, so that the test can signal ssmconnect itself.
    t.send(&format!(
        "stty -g > {d}/before; sh -c 'echo $$ > {d}/pid; exec {BIN} --endpoint-url {endpoint} shell \
         i-0123456789abcdef0'; echo $? > {d}/rc; stty -g > {d}/after\n",
        d = dir.display(),
        endpoint = emu.endpoint()
    ));
    t.wait_prompt(Duration::from_secs(15));
    let pid: i32 = wait_file(&dir.join("pid"), Duration::from_secs(10))
        .trim()
        .parse()
        .expect("a pid");
    // SAFETY: kill(2) has no memory effects; the pid is the ssmconnect this test started.
    unsafe { libc::kill(pid, libc::SIGTERM) };
    assert_eq!(
        wait_file(&dir.join("rc"), Duration::from_secs(30)).trim(),
        (128 + libc::SIGTERM).to_string()
    );
    assert_terminal_restored(&dir);
    let calls = || emu.sessions().first().map_or(0, |s| s.terminate_calls);
    assert!(
        ssm_testkit::wait_until(Duration::from_secs(10), || calls() > 0).await,
        "no TerminateSession within 10 s: {:?}",
        emu.sessions()
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(calls(), 1, "{:?}", emu.sessions());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_kms_encrypted_shell_runs_a_command_and_exits() {
    let moto = ssm_testkit::Moto::start().await;
    let key = moto.create_kms_key().await;
    let emu = ssm_testkit::emulator(Config {
        shell_start_delay_ms: 200,
        kms_key_id: Some(key),
        kms_endpoint: Some(moto.endpoint.clone()),
        ..Config::default()
    })
    .await;
    let dir = scratch("kms");
    let t = Tmux::start("kms", &dir, &emu.endpoint());
    t.send(&format!("export AWS_ENDPOINT_URL_KMS={}\n", moto.endpoint));
    run_shell_in(&t, &dir, &emu.endpoint(), "");
    // The agent's CustomerMessage, then the shell.
    t.wait_for("This session is encrypted using AWS KMS.", Duration::from_secs(20));
    t.wait_prompt(Duration::from_secs(15));
    t.send("echo kms-$((6*7))\r");
    t.wait_for("kms-42", Duration::from_secs(10));
    let info = emu.sessions().pop().unwrap();
    assert!(info.encrypted, "{info:?}");
    t.send("exit\r");
    assert_eq!(
        wait_file(&dir.join("rc"), Duration::from_secs(15)).trim(),
        NO_EXIT_CODE.to_string()
    );
    assert_terminal_restored(&dir);
}

/// Runs `aws ssm start-session` (the AWS CLI itself) in the pane with ssmconnect on PATH as its
/// `session-manager-plugin`; afterwards the exit code and the terminal settings land in files.
fn run_aws_cli_shell_in(t: &Tmux, dir: &Path, endpoint: &str) {
    let bin = dir.join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    std::os::unix::fs::symlink(BIN, bin.join("session-manager-plugin")).unwrap();
    let aws = ssm_testkit::which("aws").expect("the AWS CLI (`aws`) on PATH; CI has it preinstalled");
    t.send(&format!(
        "stty -g > {d}/before; PATH={bin}:$PATH {aws} ssm start-session --target i-0123456789abcdef0 \
         --endpoint-url {endpoint} --region {REGION}; echo $? > {d}/rc; stty -g > {d}/after\n",
        d = dir.display(),
        bin = bin.display(),
        aws = aws.display(),
    ));
}

/// A shell through the AWS CLI with ssmconnect as its plugin: announced, typed into, resized,
/// exited; the CLI's status 0 and the plugin's last line, as with AWS's plugin. With `kms`, in
/// an account whose preferences encrypt sessions with a key in that moto.
async fn aws_cli_shell(kms: Option<&ssm_testkit::Moto>) {
    let key = match kms {
        Some(moto) => Some(moto.create_kms_key().await),
        None => None,
    };
    let emu = ssm_testkit::emulator(Config {
        shell_start_delay_ms: 200,
        kms_endpoint: kms.map(|m| m.endpoint.clone()),
        kms_key_id: key,
        ..Config::default()
    })
    .await;
    let name = if kms.is_some() { "plugin-kms" } else { "plugin" };
    let dir = scratch(name);
    let t = Tmux::start(name, &dir, &emu.endpoint());
    if let Some(moto) = kms {
        t.send(&format!("export AWS_ENDPOINT_URL_KMS={}\n", moto.endpoint));
    }
    run_aws_cli_shell_in(&t, &dir, &emu.endpoint());
    // The AWS CLI (Python) is slow to start.
    t.wait_for("Starting session with SessionId: ", Duration::from_secs(60));
    if kms.is_some() {
        t.wait_for("This session is encrypted using AWS KMS.", Duration::from_secs(20));
    }
    t.wait_prompt(Duration::from_secs(20));
    t.send("echo plugin-$((6*7))\r");
    t.wait_for("plugin-42", Duration::from_secs(10));
    t.resize(120, 40);
    t.send("stty size\r");
    t.wait_for("40 120", Duration::from_secs(10));
    let info = emu.sessions().pop().unwrap();
    assert_eq!(info.encrypted, kms.is_some(), "{info:?}");
    t.send("exit\r");
    assert_eq!(wait_file(&dir.join("rc"), Duration::from_secs(20)).trim(), "0");
    let screen = t.wait_for("Exiting session with sessionId: ", Duration::from_secs(5));
    assert!(screen.contains(&info.session_id), "{screen}");
    assert_terminal_restored(&dir);
    assert!(
        ssm_testkit::wait_until(Duration::from_secs(10), || emu.sessions().iter().all(|s| s.ended)).await,
        "{:?}",
        emu.sessions()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn the_aws_cli_opens_a_shell_with_ssmconnect_as_its_plugin() {
    aws_cli_shell(None).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn the_aws_cli_opens_a_kms_encrypted_shell_with_ssmconnect_as_its_plugin() {
    let moto = ssm_testkit::Moto::start().await;
    aws_cli_shell(Some(&moto)).await;
}
