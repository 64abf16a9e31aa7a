//! The agent's `NonInteractiveCommands` plugin (§6.5, §11.3): one command, run without a pty
//! and without stdin. Read from the agent's public source (aws/amazon-ssm-agent):
//! agent/session/plugins/noninteractivecommands/noninteractivecommands.go (RequireHandshake is
//! true, the rest is the shell plugin's), agent/session/shell/shell.go (execute,
//! executeCommandsWithExec, processCommandsWithOutputStreamSeparate, processCommandsWithExec,
//! setupRoutineToWriteCmdPipelineOutput, sendExitCode, writePump, sendErrorToDataChannel) and
//! agent/session/shell/shell_unix.go (StartCommandExecutor, InputStreamMessageHandler).
//!
//! - `commands` is split shell-style (google/shlex) and executed directly, not through
//!   `sh -c`; blank commands run `sh`, which without stdin ends at once.
//! - With `separateOutputStream`, stdout and stderr are read from pipes as they come (reads of
//!   1024 bytes less the prefix, no pause), stdout as payload type 1 and stderr as type 11,
//!   each optionally prefixed; once both pipes are closed and the command reaped, one
//!   `EXIT_CODE: n` (type 12).
//! - Without it, both go to one file, which is read and sent as type 1 only after the command
//!   ended (writePump: 1024-byte reads, 1 ms apart); no exit code follows.
//! - Input is scanned only for 0x03 (SIGINT) and 0x1C (SIGQUIT), sent to the command's own
//!   process; everything else is dropped. After sending the signal the handler itself waits for
//!   the command (a deferred `execCmd.Wait()`), so that message is acked only once the command
//!   has exited, and the agent reads nothing more meanwhile. That early wait reaps the process,
//!   so the plugin's own `Wait` fails ("Wait was already called") and the exit code sent is
//!   then 1, whatever the command's status was.
//!
//! A command that dies by a signal has no exit status; Go's `ExitError.ExitCode()` is -1, and
//! so is what the agent sends.

use std::io::Read;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::mpsc;

use crate::port::{DestEvent, DestQueues};
use crate::state::Shared;

/// Stream id of stdout (and of the combined output) in [`DestEvent::Data`].
pub(crate) const STDOUT_STREAM: u32 = 0;
/// Stream id of stderr in [`DestEvent::Data`].
pub(crate) const STDERR_STREAM: u32 = 1;

/// appconfig.ErrorExitCode: what the agent reports when it has no status to give.
const ERROR_EXIT_CODE: i32 = 1;

/// How often the waiter looks whether the command has exited. Polling (rather than a blocking
/// wait) keeps the process unreaped until the waiter holds the lock, so a signal sent under the
/// same lock never reaches a reused pid.
const EXIT_POLL: Duration = Duration::from_millis(5);

/// shell.go separateOutputStreamPrefixRegex: `^[0-9a-zA-Z\r\n_:-]{0,30}$`.
fn valid_prefix(prefix: &str) -> bool {
    prefix.len() <= 30
        && prefix
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'\r' | b'\n' | b'_' | b':' | b'-'))
}

/// The document properties the plugin reads (mgsContracts.ShellProperties, Linux part).
#[derive(Debug, Clone, Default)]
pub(crate) struct CommandProperties {
    pub(crate) commands: String,
    /// `separateOutputStream`: a bool or a string that parses as one.
    pub(crate) separate_output: Option<serde_json::Value>,
    pub(crate) stdout_prefix: String,
    pub(crate) stderr_prefix: String,
}

/// constants.GetSeparateOutputStream: a JSON bool, or a string `strconv.ParseBool` accepts;
/// absent is false.
fn convert_to_bool(v: Option<&serde_json::Value>) -> Result<bool, String> {
    match v {
        None | Some(serde_json::Value::Null) => Ok(false),
        Some(serde_json::Value::Bool(b)) => Ok(*b),
        Some(serde_json::Value::String(s)) => match s.as_str() {
            "1" | "t" | "T" | "TRUE" | "true" | "True" => Ok(true),
            "0" | "f" | "F" | "FALSE" | "false" | "False" => Ok(false),
            other => Err(format!(
                "fail to get separateOutPutStream property: {other:?} is not a bool"
            )),
        },
        Some(other) => Err(format!("fail to get separateOutPutStream property: {other}")),
    }
}

/// What happened to a control byte from the client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Input {
    /// No 0x03 or 0x1C in it: dropped, acked at once.
    Ignored,
    /// A signal went to the command; the message is acked once the command is reaped
    /// ([`DestEvent::CommandReaped`]).
    Signalled,
    /// The command was gone: the handler's error leaves the message unacked.
    Failed,
}

/// The running command: its pid stays valid while `state` is locked and holds no status.
struct Process {
    pid: u32,
    state: Mutex<(Child, Option<ExitStatus>)>,
    /// A control byte was turned into a signal (the input handler then reaps it).
    signalled: AtomicBool,
}

impl Process {
    fn lock(&self) -> std::sync::MutexGuard<'_, (Child, Option<ExitStatus>)> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Sends `sig` unless the command has been reaped.
    fn signal(&self, sig: i32) -> bool {
        let mut state = self.lock();
        if state.1.is_none()
            && let Ok(Some(status)) = state.0.try_wait()
        {
            state.1 = Some(status);
        }
        if state.1.is_some() {
            return false;
        }
        send_signal(self.pid, sig)
    }

    /// execCmd.Kill: SIGKILL to the command (not to what it started).
    fn kill(&self) {
        let mut state = self.lock();
        if state.1.is_none() {
            let _ = state.0.kill();
        }
    }

    /// Blocks until the command has exited and returns its status.
    fn wait(&self) -> Option<ExitStatus> {
        loop {
            {
                let mut state = self.lock();
                if state.1.is_none() {
                    match state.0.try_wait() {
                        Ok(Some(status)) => state.1 = Some(status),
                        Ok(None) => {}
                        Err(_) => return None,
                    }
                }
                if let Some(status) = state.1 {
                    return Some(status);
                }
            }
            std::thread::sleep(EXIT_POLL);
        }
    }
}

/// The agent runs as a service (packaging/linux/amazon-ssm-agent.service), so the commands it
/// starts begin with every signal at its default action. The emulator may itself have been
/// started with SIGINT and SIGQUIT ignored (a shell starts background jobs so), and exec keeps
/// an ignored signal ignored: a command would then never see the 0x03 or 0x1C it is sent, and a
/// shell's `trap ... INT` would silently do nothing.
#[cfg(unix)]
fn default_signals(cmd: &mut Command) {
    use std::os::unix::process::CommandExt;
    // SAFETY: runs in the child between fork and exec; signal(2) is async-signal-safe and
    // touches no memory of ours.
    unsafe {
        cmd.pre_exec(|| {
            for sig in [libc::SIGINT, libc::SIGQUIT] {
                if libc::signal(sig, libc::SIG_DFL) == libc::SIG_ERR {
                    return Err(std::io::Error::last_os_error());
                }
            }
            Ok(())
        });
    }
}

#[cfg(not(unix))]
fn default_signals(_cmd: &mut Command) {}

#[cfg(unix)]
fn send_signal(pid: u32, sig: i32) -> bool {
    let Ok(pid) = libc::pid_t::try_from(pid) else {
        return false;
    };
    // SAFETY: kill(2) touches no memory of ours; the caller holds the lock that keeps `pid` an
    // unreaped child of this process.
    unsafe { libc::kill(pid, sig) == 0 }
}

#[cfg(not(unix))]
fn send_signal(_pid: u32, _sig: i32) -> bool {
    // Go's Process.Signal supports only Kill on Windows; the agent's handler fails.
    false
}

#[cfg(unix)]
const SIGINT: i32 = libc::SIGINT;
#[cfg(unix)]
const SIGQUIT: i32 = libc::SIGQUIT;
#[cfg(not(unix))]
const SIGINT: i32 = 2;
#[cfg(not(unix))]
const SIGQUIT: i32 = 3;

/// The plugin of one session. Dropping it (the session was cancelled: TerminateSession, the
/// client gone) kills the command, as the agent's `cancelled` branch does.
pub(crate) struct CommandPlugin {
    process: Option<Arc<Process>>,
}

impl CommandPlugin {
    /// Starts the command; what it produces, its exit code and its end arrive as
    /// [`DestEvent`]s. An `Err` fails the plugin before anything runs (its text ends the
    /// session).
    pub(crate) fn start(shared: &Arc<Shared>, props: &CommandProperties, queues: DestQueues) -> Result<Self, String> {
        let separate = convert_to_bool(props.separate_output.as_ref())?;
        let (stdout_prefix, stderr_prefix) = if separate {
            // setSeparateOutputStreamProperties: an invalid prefix fails the plugin.
            if !valid_prefix(&props.stdout_prefix) {
                return Err(format!("invalid stdoutSeparatorPrefix {}", props.stdout_prefix));
            }
            if !valid_prefix(&props.stderr_prefix) {
                return Err(format!("invalid stderrSeparatorPrefix {}", props.stderr_prefix));
            }
            (props.stdout_prefix.clone(), props.stderr_prefix.clone())
        } else {
            (String::new(), String::new())
        };
        let DestQueues { data: events, done } = queues;
        let argv = if props.commands.trim().is_empty() {
            vec!["sh".to_owned()]
        } else {
            match shlex::split(&props.commands) {
                Some(v) if !v.is_empty() => v,
                _ => {
                    // getCommandExecutor failed: 2 s, then the error as stderr (after the 1 s
                    // of sendErrorToDataChannel); no exit code in either mode.
                    let text = "Unable to start command: Failed to parse commands input: \
                                EOF found when expecting closing quote\n\n";
                    fail_later(events, None, text.to_owned(), Duration::from_secs(2));
                    return Ok(Self { process: None });
                }
            }
        };
        let program = argv.first().map_or("sh", String::as_str);
        let mut cmd = Command::new(program);
        cmd.args(argv.iter().skip(1));
        // StartCommandExecutor: the agent's environment plus TERM, and LANG when unset.
        cmd.env("TERM", "xterm-256color");
        if std::env::var_os("LANG").is_none() {
            cmd.env("LANG", "C.UTF-8");
        }
        if let Some(dir) = &shared.config.shell_dir {
            cmd.current_dir(dir);
        }
        cmd.stdin(Stdio::null());
        default_signals(&mut cmd);
        let chunk = shared.config.pacing.chunk();
        let output_file = if separate {
            cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
            None
        } else {
            // ExecOutputFileName in the orchestration directory: stdout and stderr share it.
            let path = std::env::temp_dir().join(format!(
                "ssm-emulator-output-{}-{:016x}",
                std::process::id(),
                rand::random::<u64>()
            ));
            let open_error =
                |e: std::io::Error| format!("Failed to open file for writing command output. error: {e}\n");
            let file = std::fs::File::create(&path).map_err(open_error)?;
            let err_file = file.try_clone().map_err(open_error)?;
            cmd.stdout(file).stderr(err_file);
            Some(path)
        };
        let mut child = match cmd.spawn() {
            Ok(c) => c,
            Err(e) => {
                if let Some(path) = &output_file {
                    let _ = std::fs::remove_file(path);
                }
                // execCmd.Start failed: separate mode sends EXIT_CODE 1 at once; both modes then
                // send Go's error text as stderr after a second.
                let code = separate.then_some(ERROR_EXIT_CODE);
                fail_later(events, code, start_error(program, &e), Duration::ZERO);
                return Ok(Self { process: None });
            }
        };
        let readers = [
            (
                child.stdout.take().map(|p| Box::new(p) as Box<dyn Read + Send>),
                STDOUT_STREAM,
                stdout_prefix,
            ),
            (
                child.stderr.take().map(|p| Box::new(p) as Box<dyn Read + Send>),
                STDERR_STREAM,
                stderr_prefix,
            ),
        ]
        .into_iter()
        .filter_map(|(pipe, stream, prefix)| {
            let pipe = pipe?;
            let tx = events.clone();
            Some(std::thread::spawn(move || {
                pipe_reader(pipe, stream, &prefix, chunk, &tx)
            }))
        })
        .collect::<Vec<_>>();
        let process = Arc::new(Process {
            pid: child.id(),
            state: Mutex::new((child, None)),
            signalled: AtomicBool::new(false),
        });
        let waited = process.clone();
        let pause = shared.config.pacing.pause();
        std::thread::spawn(move || {
            let status = waited.wait();
            // The handler that sent a signal was waiting for this: its message is acked now.
            let _ = done.send(DestEvent::CommandReaped);
            match output_file {
                None => {
                    for r in readers {
                        let _ = r.join();
                    }
                    let code = if waited.signalled.load(Ordering::SeqCst) {
                        ERROR_EXIT_CODE
                    } else {
                        // ExitError.ExitCode(): -1 for a death by signal.
                        status.and_then(|s| s.code()).unwrap_or(-1)
                    };
                    let _ = events.blocking_send(DestEvent::CommandExitCode(code));
                }
                Some(path) => {
                    // writePump, no initial wait: the file in 1024-byte reads, 1 ms apart.
                    if let Ok(f) = std::fs::File::open(&path) {
                        file_pump(f, chunk, pause, &events);
                    }
                    // cleanupOutputFile
                    let _ = std::fs::remove_file(&path);
                }
            }
            let _ = events.blocking_send(DestEvent::CommandEnded);
        });
        Ok(Self { process: Some(process) })
    }

    /// InputStreamMessageHandler for type 1 input: the first 0x03 or 0x1C in the payload goes
    /// to the command as SIGINT or SIGQUIT; nothing else reaches it.
    pub(crate) fn input(&self, payload: &[u8]) -> Input {
        let Some(sig) = payload.iter().find_map(|b| match b {
            0x03 => Some(SIGINT),
            0x1c => Some(SIGQUIT),
            _ => None,
        }) else {
            return Input::Ignored;
        };
        let Some(process) = &self.process else {
            // execCmd.Signal: "the command execution has not started yet".
            return Input::Failed;
        };
        if process.signal(sig) {
            process.signalled.store(true, Ordering::SeqCst);
            Input::Signalled
        } else {
            Input::Failed
        }
    }
}

impl Drop for CommandPlugin {
    fn drop(&mut self) {
        if let Some(p) = &self.process {
            p.kill();
        }
    }
}

/// Go's error text for a failed `exec.Cmd.Start` (what sendErrorToDataChannel sends).
fn start_error(program: &str, e: &std::io::Error) -> String {
    match e.kind() {
        std::io::ErrorKind::NotFound if !program.contains('/') => {
            format!("exec: {program:?}: executable file not found in $PATH")
        }
        std::io::ErrorKind::NotFound => format!("fork/exec {program}: no such file or directory"),
        std::io::ErrorKind::PermissionDenied => format!("fork/exec {program}: permission denied"),
        _ => format!("fork/exec {program}: {e}"),
    }
}

/// A start that failed: the exit code (separate mode) at once, then after `delay` plus
/// sendErrorToDataChannel's 1 s the text as stderr, then the end.
fn fail_later(events: mpsc::Sender<DestEvent>, code: Option<i32>, text: String, delay: Duration) {
    std::thread::spawn(move || {
        std::thread::sleep(delay);
        if let Some(code) = code {
            let _ = events.blocking_send(DestEvent::CommandExitCode(code));
        }
        std::thread::sleep(Duration::from_secs(1));
        let _ = events.blocking_send(DestEvent::Data(STDERR_STREAM, text.into()));
        let _ = events.blocking_send(DestEvent::CommandEnded);
    });
}

/// processStdoutData, byte for byte: `held` (what the read before left) and `data` are
/// decoded rune by rune as Go's bufio.Reader.ReadRune does; a `utf8.RuneError` in the last 3
/// bytes stops the loop and those bytes are held for the next read, one further back is sent as
/// its first byte only, and the decoder moves on by the rune's length. So invalid bytes pass
/// one at a time, but a genuine U+FFFD (EF BF BD) loses its last two bytes, and whatever is
/// held when the stream ends is never sent (the readers stop at EOF). Returns what to send.
fn process_stdout_data(held: &mut Vec<u8>, data: &[u8]) -> Vec<u8> {
    let mut buf = std::mem::take(held);
    buf.extend_from_slice(data);
    let mut out = Vec::with_capacity(buf.len());
    let mut i = 0;
    while let Some(rest) = buf.get(i..).filter(|r| !r.is_empty()) {
        let (rune, len) = decode_rune(rest);
        if rune == char::REPLACEMENT_CHARACTER {
            if rest.len() < 4 {
                *held = rest.to_vec();
                break;
            }
            out.push(rest[0]);
        } else {
            out.extend_from_slice(rest.get(..len).unwrap_or(rest));
        }
        i += len;
    }
    out
}

/// utf8.DecodeRune: the first rune of `b` and its length; (U+FFFD, 1) when `b` does not start
/// with a complete, valid encoding.
fn decode_rune(b: &[u8]) -> (char, usize) {
    let head = b.get(..b.len().min(4)).unwrap_or(b);
    let valid = match std::str::from_utf8(head) {
        Ok(s) => s,
        Err(e) => std::str::from_utf8(head.get(..e.valid_up_to()).unwrap_or_default()).unwrap_or_default(),
    };
    match valid.chars().next() {
        Some(c) => (c, c.len_utf8()),
        None => (char::REPLACEMENT_CHARACTER, 1),
    }
}

/// setupRoutineToWriteCmdPipelineOutput: reads of `chunk` less the prefix, no pause. The prefix
/// goes in front of the first non-empty read and of every read after one that ended in a
/// newline (after the bytes held back from the read before: the agent appends it to that
/// buffer).
fn pipe_reader(
    mut pipe: Box<dyn Read + Send>,
    stream: u32,
    prefix: &str,
    chunk: usize,
    events: &mpsc::Sender<DestEvent>,
) {
    let mut buf = vec![0u8; chunk.saturating_sub(prefix.len()).max(1)];
    let mut held: Vec<u8> = Vec::new();
    let mut need_prefix = true;
    loop {
        let n = match pipe.read(&mut buf) {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        let data = buf.get(..n).unwrap_or_default();
        if need_prefix {
            held.extend_from_slice(prefix.as_bytes());
        }
        need_prefix = data.last() == Some(&b'\n');
        // Sent even when empty (everything held back), as the agent does.
        let out = process_stdout_data(&mut held, data);
        if events.blocking_send(DestEvent::Data(stream, out.into())).is_err() {
            return;
        }
    }
}

/// writePump over the output file: reads of `chunk` bytes with `pause` after each, until EOF.
fn file_pump(mut file: impl Read, chunk: usize, pause: Option<Duration>, events: &mpsc::Sender<DestEvent>) {
    let mut buf = vec![0u8; chunk.max(1)];
    let mut held: Vec<u8> = Vec::new();
    loop {
        let n = match file.read(&mut buf) {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        let out = process_stdout_data(&mut held, buf.get(..n).unwrap_or_default());
        if events
            .blocking_send(DestEvent::Data(STDOUT_STREAM, out.into()))
            .is_err()
        {
            return;
        }
        if let Some(p) = pause {
            std::thread::sleep(p);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{convert_to_bool, process_stdout_data, valid_prefix};

    /// Feeds `reads` through processStdoutData; returns what was sent and what stays held.
    fn feed(reads: &[&[u8]]) -> (Vec<u8>, Vec<u8>) {
        let mut held = Vec::new();
        let mut sent = Vec::new();
        for r in reads {
            sent.extend(process_stdout_data(&mut held, r));
        }
        (sent, held)
    }

    #[test]
    fn utf8_split_across_reads_is_joined() {
        assert_eq!(
            feed(&["caf\u{e9}".as_bytes()[..4].as_ref(), b"\xa9!"]),
            (b"caf\xc3\xa9!".to_vec(), vec![])
        );
        assert_eq!(feed(&[b"ab\xe2\x82"]), (b"ab".to_vec(), b"\xe2\x82".to_vec()));
    }

    #[test]
    fn invalid_bytes_pass_one_by_one_but_a_real_replacement_character_is_cut() {
        assert_eq!(feed(&[b"\xff\xfeabcd"]).0, b"\xff\xfeabcd".to_vec());
        // Go's check `rune == utf8.RuneError` cannot tell U+FFFD from an invalid byte.
        assert_eq!(feed(&["x\u{fffd}abcd".as_bytes()]).0, b"x\xefabcd".to_vec());
        // Any invalid byte among the last three is held, and lost if the stream ends there.
        assert_eq!(feed(&[b"abcd\xff\n"]), (b"abcd".to_vec(), b"\xff\n".to_vec()));
    }

    #[test]
    fn separate_output_stream_takes_bools_and_bool_strings() {
        assert_eq!(convert_to_bool(None), Ok(false));
        assert_eq!(convert_to_bool(Some(&serde_json::json!(true))), Ok(true));
        assert_eq!(convert_to_bool(Some(&serde_json::json!("true"))), Ok(true));
        assert_eq!(convert_to_bool(Some(&serde_json::json!("0"))), Ok(false));
        assert!(convert_to_bool(Some(&serde_json::json!("yes"))).is_err());
        assert!(convert_to_bool(Some(&serde_json::json!(1))).is_err());
    }

    #[test]
    fn prefixes_follow_the_agents_pattern() {
        assert!(valid_prefix(""));
        assert!(valid_prefix("OUT:\n"));
        assert!(!valid_prefix("a b"));
        assert!(!valid_prefix(&"a".repeat(31)));
    }
}
