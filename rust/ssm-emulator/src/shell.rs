//! The agent's shell plugins (§6): `Standard_Stream` and `InteractiveCommands` run a real
//! program in a pseudo-terminal (portable-pty), with the agent's behaviours: no handshake, a
//! pause before the first read, reads of at most 1024 bytes that never split a UTF-8 sequence,
//! `Size` messages applied to the pty, and the end of the program closing the session.

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

impl ShellPlugin {
    /// Starts `command` (the configured shell, or `sh -c <command>` for InteractiveCommands).
    pub(crate) fn start(
        shared: &Arc<Shared>,
        command: Option<&str>,
        queues: DestQueues,
    ) -> Result<Self, String> {
        let DestQueues { data: events, done } = queues;
        let cfg = &shared.config;
        let pty = native_pty_system()
            .openpty(PtySize {
                rows: 24,
                cols: 80,
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
            let mut buf = vec![0u8; chunk];
            let mut held: Vec<u8> = Vec::new();
            loop {
                let start = held.len();
                let room = chunk.saturating_sub(start).max(1);
                buf.truncate(0);
                buf.extend_from_slice(&held);
                buf.resize(start + room, 0);
                let n = match reader.read(buf.get_mut(start..).unwrap_or_default()) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => n,
                };
                buf.truncate(start + n);
                let keep = incomplete_utf8_tail(&buf);
                held = buf.split_off(buf.len() - keep);
                if !buf.is_empty()
                    && events
                        .blocking_send(DestEvent::Data(SHELL_STREAM, buf.clone()))
                        .is_err()
                {
                    return;
                }
                if let Some(p) = pause {
                    std::thread::sleep(p);
                }
            }
            if !held.is_empty() {
                let _ = events.blocking_send(DestEvent::Data(SHELL_STREAM, held));
            }
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
        let clamp = |v: u32| u16::try_from(v).unwrap_or(u16::MAX).max(1);
        let _ = self.master.resize(PtySize {
            rows: clamp(rows),
            cols: clamp(cols),
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
    use super::incomplete_utf8_tail;

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
