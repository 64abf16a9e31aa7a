//! Command sessions (`NonInteractiveCommands`, §6.5): one remote command, no pty, no stdin; its
//! stdout, its stderr and its exit code.
//!
//! What the agent sends depends on the document (agent/session/shell/shell.go):
//! - with `separateOutputStream` (an account's own document), stdout as payload type 1 and
//!   stderr as type 11 while the command runs, then one `EXIT_CODE: n` (type 12);
//! - without it (`AWS-StartNonInteractiveCommand`), stdout and stderr combined as type 1, all
//!   of it after the command ended, and no exit code: [`CommandOutcome::exit_code`] is `None`.
//!
//! The only input the agent honours is 0x03 (SIGINT to the command) and 0x1C (SIGQUIT); see
//! [`CommandSession::interrupt`]. The agent's handler for it reaps the command itself, so the
//! exit code it sends afterwards is 1 whatever the command's status was.
//!
//! The command line reaches the agent as the document's `command` parameter, which the agent
//! splits shell-style and runs without a shell; [`quote_argv`] builds one that splits back
//! into the given arguments.

use std::collections::HashMap;
use std::sync::Arc;

use ssm_proto::{PayloadType, SessionType};
use tokio::task::JoinHandle;

use crate::aws::{SharedControl, SsmApi};
use crate::driver::{ChannelOptions, DataChannel, DataSender, End, Inbox};
use crate::error::{Error, Result};

/// The AWS-managed document that runs one command (combined output, no exit code).
pub const DEFAULT_DOCUMENT: &str = "AWS-StartNonInteractiveCommand";

/// What to start.
#[derive(Debug, Clone)]
pub struct CommandOptions {
    /// Document of session type `NonInteractiveCommands`; an account's own one with
    /// `separateOutputStream: true` gives stderr apart and the exit code.
    pub document: String,
    /// Document parameters besides `command`.
    pub parameters: HashMap<String, Vec<String>>,
    /// The command line, as the document's `command` parameter (see [`quote_argv`]).
    pub command: String,
    /// Data-channel tunables.
    pub channel: ChannelOptions,
}

impl Default for CommandOptions {
    fn default() -> Self {
        Self {
            document: DEFAULT_DOCUMENT.to_owned(),
            parameters: HashMap::new(),
            command: String::new(),
            channel: ChannelOptions::default(),
        }
    }
}

/// One piece of the command's output, in the order the agent sent it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Output {
    /// stdout (without separate output streams: stdout and stderr combined).
    Stdout(Vec<u8>),
    /// stderr (separate output streams; also the agent's own errors starting the command).
    Stderr(Vec<u8>),
}

/// How a command session ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommandOutcome {
    /// `EXIT_CODE: n` from the agent: only with separate output streams; -1 when the command
    /// died by a signal, 1 after an [`CommandSession::interrupt`] reached it. `None`: the
    /// agent sent none.
    pub exit_code: Option<i32>,
    /// How the data channel ended.
    pub end: End,
}

/// Joins `argv` into a command line that the agent's shell-style split (google/shlex, §6.5)
/// and a POSIX shell both turn back into exactly these arguments: words of plain characters
/// stay as they are, anything else is single-quoted (a `'` inside as `'\''`).
pub fn quote_argv<S: AsRef<str>>(argv: &[S]) -> String {
    let plain = |c: char| c.is_ascii_alphanumeric() || "_-+=.,/:@%".contains(c);
    argv.iter()
        .map(|a| {
            let a = a.as_ref();
            if !a.is_empty() && a.chars().all(plain) {
                a.to_owned()
            } else {
                format!("'{}'", a.replace('\'', r"'\''"))
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// Starts a command session on `target` (an instance id) and waits until it runs (after the
/// handshake, which NonInteractiveCommands always performs, §5.1). A document of another
/// session type is ended at once and refused.
pub async fn start(api: &SsmApi, target: &str, opts: CommandOptions) -> Result<CommandSession> {
    let mut parameters = opts.parameters;
    parameters.insert("command".to_owned(), vec![opts.command]);
    let started = api.start_session(target, Some(&opts.document), &parameters).await?;
    let control: SharedControl = Arc::new(api.clone());
    let dc = DataChannel::open(started, control, opts.channel).await?;
    if dc.start.session_type == SessionType::NonInteractiveCommands {
        return Ok(CommandSession::new(dc));
    }
    let kind = dc.start.session_type.as_str().to_owned();
    let _ = dc.end().await;
    Err(Error::Config(format!(
        "the document {} started a {kind} session, not NonInteractiveCommands",
        opts.document
    )))
}

/// A running command: pull its output with [`CommandSession::next`], then take the outcome
/// with [`CommandSession::finish`]. Dropping it before the end leaves the driver to end the
/// session (drained, terminated).
pub struct CommandSession {
    session_id: String,
    sender: DataSender,
    inbox: Inbox,
    driver: JoinHandle<Result<End>>,
    exit_code: Option<i32>,
}

impl CommandSession {
    /// Wraps an open `NonInteractiveCommands` data channel.
    pub fn new(dc: DataChannel) -> Self {
        let session_id = dc.start.session_id.clone();
        let (sender, inbox, driver) = dc.into_parts();
        Self {
            session_id,
            sender,
            inbox,
            driver,
            exit_code: None,
        }
    }

    /// The session id.
    pub fn session_id(&self) -> &str {
        &self.session_id
    }

    /// A sender for the session, to interrupt it ([`interrupt`]) or end it
    /// ([`DataSender::finish`]) from elsewhere while this is being read.
    pub fn sender(&self) -> DataSender {
        self.sender.clone()
    }

    /// Asks the agent to interrupt the command (0x03, which it turns into SIGINT).
    pub async fn interrupt(&self) -> Result<()> {
        interrupt(&self.sender).await
    }

    /// The next piece of output; `None` once the session has ended (then call
    /// [`CommandSession::finish`]).
    pub async fn next(&mut self) -> Option<Output> {
        loop {
            let (payload_type, data) = self.inbox.recv().await?;
            match payload_type {
                // The agent sends empty pieces when a read held back everything (§6.5).
                PayloadType::Output | PayloadType::StdErr if data.is_empty() => {}
                PayloadType::Output => return Some(Output::Stdout(data)),
                PayloadType::StdErr => return Some(Output::Stderr(data)),
                PayloadType::ExitCode => {
                    self.exit_code = ssm_proto::payload::parse_exit_code(&data);
                    if self.exit_code.is_none() {
                        tracing::warn!("unreadable exit code message ({} bytes)", data.len());
                    }
                }
                other => tracing::debug!("ignoring a {other:?} payload in a command session"),
            }
        }
    }

    /// Waits for the session to end (the rest of the output, if any, is discarded) and
    /// returns how it ended.
    pub async fn finish(self) -> Result<CommandOutcome> {
        let Self {
            sender,
            inbox,
            driver,
            exit_code,
            ..
        } = self;
        // A receiver that is gone tells the driver nobody reads any more: it ends the session.
        drop(inbox);
        drop(sender);
        let end = driver
            .await
            .map_err(|e| Error::Connect(format!("driver failed: {e}")))??;
        Ok(CommandOutcome { exit_code, end })
    }
}

/// Asks the agent to interrupt the command: 0x03, which it turns into SIGINT (§6.5).
pub async fn interrupt(sender: &DataSender) -> Result<()> {
    sender.send(PayloadType::Output, vec![0x03]).await
}

/// Runs `session` to its end, handing each piece of output to `sink` in order. An error from
/// `sink` ends the session (drained, terminated) and is returned.
pub async fn run<F>(mut session: CommandSession, mut sink: F) -> Result<CommandOutcome>
where
    F: FnMut(&Output) -> std::io::Result<()>,
{
    while let Some(out) = session.next().await {
        if let Err(e) = sink(&out) {
            session.sender.finish(true).await;
            let _ = session.finish().await;
            return Err(Error::Io(e));
        }
    }
    session.finish().await
}

#[cfg(test)]
mod tests {
    use super::quote_argv;

    #[test]
    fn quoted_argv_splits_back_into_the_same_words() {
        let cases: &[&[&str]] = &[
            &["echo", "plain"],
            &["sh", "-c", "echo out; echo err >&2; exit 3"],
            &[
                "printf",
                "%s|",
                "it's",
                "",
                "a  b",
                "#not-a-comment",
                "$HOME",
                "tab\there",
                "line\nbreak",
            ],
            &["caf\u{e9}", "\"double\"", "back\\slash"],
        ];
        for argv in cases {
            let line = quote_argv(argv);
            let back = shlex::split(&line).unwrap_or_default();
            assert_eq!(back, argv.to_vec(), "{line}");
        }
        assert_eq!(quote_argv(&["ls", "-l", "/tmp"]), "ls -l /tmp");
    }
}
