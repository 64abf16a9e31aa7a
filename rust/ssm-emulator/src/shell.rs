//! The agent's shell plugins (§6): `Standard_Stream` and `InteractiveCommands` run a real
//! program in a pseudo-terminal (portable-pty), with the agent's behaviours: no handshake, a
//! pause before the first read, reads of at most 1024 bytes that never split a UTF-8 sequence
//! (so a message carries up to 1027), a pty without a size until a `Size` message sets one, and
//! the end of the program closing the session without an exit code.

use std::io::{Read, Write};
use std::sync::Arc;
use std::time::Duration;

use portable_pty::{CommandBuilder, MasterPty, PtySize, native_pty_system};

use crate::port::{DestEvent, DestQueues, Handled};
use crate::state::Shared;

/// Id used for shell output in [`DestEvent::Data`].
pub(crate) const SHELL_STREAM: u32 = 0;

pub(crate) struct ShellPlugin {
    master: Box<dyn MasterPty + Send>,
    input: std::sync::mpsc::Sender<(Vec<u8>, i64)>,
    killer: Box<dyn portable_pty::ChildKiller + Send + Sync>,
}

/// How many bytes at the end of `buf` start a UTF-8 sequence that is not complete yet (§6.5:
/// the agent holds back up to 3 such bytes). Invalid bytes are not held.
pub(crate) fn incomplete_utf8_tail(buf: &[u8]) -> usize {
    for back in 1..=buf.len().min(3) {
        let Some(&b) = buf.get(buf.len() - back) else { break };
        if b & 0b1100_0000 == 0b1000_0000 {
            continue; // continuation byte: keep looking for the lead byte
        }
        let need = match b {
            0xC0..=0xDF => 2,
            0xE0..=0xEF => 3,
            0xF0..=0xF7 => 4,
            _ => return 0,
        };
        return if back < need { back } else { 0 };
    }
    0
}

/// Reads `reader` until its end the way the agent's writePump and processStdoutData do
/// (agent/session/shell/shell.go): each read takes up to `chunk` bytes, the bytes held back from
/// the read before go in front of them, and an incomplete UTF-8 sequence at the end is held
/// back again. A message therefore carries up to `chunk` + 3 bytes. `send` returns false to stop.
pub(crate) fn pump_output(
    reader: &mut dyn Read,
    chunk: usize,
    pause: Option<Duration>,
    mut send: impl FnMut(Vec<u8>) -> bool,
) {
    let mut buf = vec![0u8; chunk.max(1)];
    let mut held: Vec<u8> = Vec::new();
    loop {
        let n = match reader.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        let mut out = std::mem::take(&mut held);
        out.extend_from_slice(buf.get(..n).unwrap_or_default());
        let keep = incomplete_utf8_tail(&out);
        held = out.split_off(out.len() - keep);
        if !out.is_empty() && !send(out) {
            return;
        }
        if let Some(p) = pause {
            std::thread::sleep(p);
        }
    }
    if !held.is_empty() {
        send(held);
    }
}

impl ShellPlugin {
    /// Starts `command` (the configured shell, or `sh -c <command>` for InteractiveCommands).
    pub(crate) fn start(shared: &Arc<Shared>, command: Option<&str>, queues: DestQueues) -> Result<Self, String> {
        let DestQueues { data: events, done } = queues;
        let cfg = &shared.config;
        // The agent starts the pty without a size (`pty.Start` in StartCommandExecutor,
        // agent/session/shell/shell_unix.go): 0×0 until the client's first Size message.
        let pty = native_pty_system()
            .openpty(PtySize {
                rows: 0,
                cols: 0,
                pixel_width: 0,
                pixel_height: 0,
            })
            .map_err(|e| format!("cannot open a pty: {e}"))?;
        let mut cmd = match command {
            Some(c) => {
                let mut b = CommandBuilder::new("sh");
                b.args(["-c", c]);
                b
            }
            None => {
                let mut argv = cfg.shell.iter();
                let mut b = CommandBuilder::new(argv.next().map_or("sh", String::as_str));
                b.args(argv);
                b
            }
        };
        // §6.5: the agent's shell environment.
        cmd.env("TERM", "xterm-256color");
        if std::env::var_os("LANG").is_none() {
            cmd.env("LANG", "C.UTF-8");
        }
        if let Some(dir) = &cfg.shell_dir {
            cmd.cwd(dir);
        }
        let mut child = pty
            .slave
            .spawn_command(cmd)
            .map_err(|e| format!("cannot start the shell: {e}"))?;
        // Only the child holds the slave now, so reads end when it exits.
        drop(pty.slave);
        let killer = child.clone_killer();
        let mut reader = pty.master.try_clone_reader().map_err(|e| format!("pty reader: {e}"))?;
        let mut writer = pty.master.take_writer().map_err(|e| format!("pty writer: {e}"))?;
        let (input, input_rx) = std::sync::mpsc::channel::<(Vec<u8>, i64)>();
        // shell.go InputStreamMessageHandler writes each payload to the pty before the data
        // channel acks it, so a pty that does not drain delays the acks.
        std::thread::spawn(move || {
            while let Ok((buf, seq)) = input_rx.recv() {
                let ok = writer.write_all(&buf).and_then(|()| writer.flush()).is_ok();
                if done.send(DestEvent::Written(seq, ok)).is_err() {
                    return;
                }
            }
        });
        let delay = Duration::from_millis(cfg.shell_start_delay_ms);
        let chunk = cfg.pacing.chunk();
        let pause = cfg.pacing.pause();
        std::thread::spawn(move || {
            // §6.1: the agent waits before its first read so queued input can run first.
            std::thread::sleep(delay);
            pump_output(&mut reader, chunk, pause, |data| {
                events.blocking_send(DestEvent::Data(SHELL_STREAM, data.into())).is_ok()
            });
            let code = child.wait().map(|s| s.exit_code() as i32).unwrap_or(-1);
            let _ = events.blocking_send(DestEvent::Exited(code));
        });
        Ok(Self {
            master: pty.master,
            input,
            killer,
        })
    }

    /// Writes client message `seq` to the pty; a [`DestEvent::Written`] reports the outcome.
    pub(crate) fn write(&self, data: Vec<u8>, seq: i64) -> Handled {
        match self.input.send((data, seq)) {
            Ok(()) => Handled::Pending,
            Err(_) => Handled::Done(false),
        }
    }

    pub(crate) fn resize(&self, cols: u32, rows: u32) {
        // SetSize in agent/session/shell/shell_unix.go: `uint16(...)` casts, no clamping.
        let _ = self.master.resize(PtySize {
            rows: rows as u16,
            cols: cols as u16,
            pixel_width: 0,
            pixel_height: 0,
        });
    }

    pub(crate) fn kill(&mut self) {
        let _ = self.killer.kill();
    }
}

impl Drop for ShellPlugin {
    fn drop(&mut self) {
        self.kill();
    }
}

#[cfg(test)]
mod tests {
    use super::{incomplete_utf8_tail, pump_output};

    /// Hands out `data` in reads of at most `step` bytes, like a pty with output waiting.
    struct Steps<'a> {
        data: &'a [u8],
        step: usize,
    }

    impl std::io::Read for Steps<'_> {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            let n = self.data.len().min(buf.len()).min(self.step);
            let (head, rest) = self.data.split_at(n);
            buf[..n].copy_from_slice(head);
            self.data = rest;
            Ok(n)
        }
    }

    fn pumped(data: &[u8], step: usize) -> Vec<Vec<u8>> {
        let mut messages = Vec::new();
        pump_output(&mut Steps { data, step }, 1024, None, |m| {
            messages.push(m);
            true
        });
        messages
    }

    #[test]
    fn held_bytes_come_on_top_of_a_full_read() {
        // 1024 = 3 × 341 + 1: reads end one, then two bytes into a '€', and the third read's
        // 1024 bytes go out behind the two held ones: 1023, 1023, 1026, …
        let text = "€".repeat(3000);
        let messages = pumped(text.as_bytes(), usize::MAX);
        let sizes: Vec<usize> = messages.iter().map(Vec::len).collect();
        assert_eq!(sizes[..3], [1023, 1023, 1026]);
        assert!(sizes.iter().all(|&n| n <= 1027), "{sizes:?}");
        for m in &messages {
            assert!(std::str::from_utf8(m).is_ok(), "a message splits a character");
        }
        assert_eq!(messages.concat(), text.as_bytes());
    }

    #[test]
    fn four_byte_sequences_never_exceed_1027() {
        let text = "😀a".repeat(3000);
        for step in [1, 7, 1023, 1024, 4096] {
            let messages = pumped(text.as_bytes(), step);
            assert!(
                messages
                    .iter()
                    .all(|m| m.len() <= 1027 && std::str::from_utf8(m).is_ok())
            );
            assert_eq!(messages.concat(), text.as_bytes(), "reads of {step}");
        }
    }

    #[test]
    fn an_incomplete_sequence_at_the_end_is_still_sent() {
        let mut data = b"abc".to_vec();
        data.extend_from_slice(&"€".as_bytes()[..2]);
        assert_eq!(pumped(&data, 1024), vec![b"abc".to_vec(), "€".as_bytes()[..2].to_vec()]);
    }

    #[test]
    fn holds_back_only_incomplete_sequences() {
        assert_eq!(incomplete_utf8_tail(b"abc"), 0);
        assert_eq!(incomplete_utf8_tail("é".as_bytes()), 0);
        assert_eq!(incomplete_utf8_tail(&"é".as_bytes()[..1]), 1);
        assert_eq!(incomplete_utf8_tail(&"€".as_bytes()[..2]), 2);
        assert_eq!(incomplete_utf8_tail(&"😀".as_bytes()[..3]), 3);
        assert_eq!(incomplete_utf8_tail("😀".as_bytes()), 0);
        assert_eq!(incomplete_utf8_tail(&[b'a', 0xff]), 0);
    }
}
