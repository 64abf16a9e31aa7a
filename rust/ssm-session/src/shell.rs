//! Shell sessions (§6): the local terminal in raw mode, keystrokes sent at once, output written as
//! it arrives, the size sent at start and on every change, and the terminal restored on every
//! exit path. With stdin not a terminal, stdin streams to the remote shell and EOF ends it; the
//! size is still sent once at start (the remote pty has none until then, §6.4).
//!
//! The agent reports no exit code for pty shells (`Standard_Stream`, `InteractiveCommands`); only
//! NonInteractiveCommands with separate output streams sends one (§6.5), so
//! [`ShellOutcome::exit_code`] is usually `None`.

use std::collections::HashMap;
use std::io::{IsTerminal, Write};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use ssm_proto::{PayloadType, SessionType, TerminalSize};
use tokio::sync::mpsc;

use crate::aws::{SharedControl, SsmApi};
use crate::driver::{ChannelOptions, DataChannel, End};
use crate::error::{Error, Result};

/// How a shell session ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShellOutcome {
    /// Exit code reported by the agent (`PayloadType` 12), if it sent one. `None` is the
    /// normal end of a pty shell: the agent never sends one there (§6.5).
    pub exit_code: Option<i32>,
    /// How the data channel ended.
    pub end: End,
}

/// What to start.
#[derive(Debug, Clone, Default)]
pub struct ShellOptions {
    /// Document; `None` is the account's default shell document.
    pub document: Option<String>,
    /// Document parameters.
    pub parameters: HashMap<String, Vec<String>>,
    /// Data-channel tunables.
    pub channel: ChannelOptions,
}

/// Starts a shell session on `target` and waits until it runs.
pub async fn start(api: &SsmApi, target: &str, opts: ShellOptions) -> Result<DataChannel> {
    let started = api
        .start_session(target, opts.document.as_deref(), &opts.parameters)
        .await?;
    let control: SharedControl = Arc::new(api.clone());
    let dc = DataChannel::open(started, control, opts.channel).await?;
    match dc.start.session_type {
        SessionType::StandardStream | SessionType::InteractiveCommands | SessionType::NonInteractiveCommands => Ok(dc),
        SessionType::Port => {
            let _ = dc.end().await;
            Err(Error::Config("the document started a port session, not a shell".into()))
        }
    }
}

/// Restores the terminal when dropped, also during a panic (the hook runs before unwinding).
struct RawMode {
    active: Arc<AtomicBool>,
}

impl RawMode {
    fn enable() -> Result<Self> {
        crossterm::terminal::enable_raw_mode().map_err(Error::Io)?;
        let active = Arc::new(AtomicBool::new(true));
        let flag = active.clone();
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if flag.swap(false, Ordering::SeqCst) {
                let _ = crossterm::terminal::disable_raw_mode();
            }
            previous(info);
        }));
        Ok(Self { active })
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        if self.active.swap(false, Ordering::SeqCst) {
            let _ = crossterm::terminal::disable_raw_mode();
        }
    }
}

/// What the official client sends when stdout has no size (§6.4).
const FALLBACK_SIZE: TerminalSize = TerminalSize { cols: 300, rows: 100 };

/// The size of stdout as §6.4 has it, or [`FALLBACK_SIZE`] when stdout is not a terminal or
/// reports 0×0 (a pty nobody sized).
#[cfg(unix)]
fn terminal_size() -> TerminalSize {
    let mut ws = libc::winsize {
        ws_row: 0,
        ws_col: 0,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCGWINSZ writes one `winsize` through the valid pointer.
    let ok = unsafe { libc::ioctl(libc::STDOUT_FILENO, libc::TIOCGWINSZ, &mut ws) } == 0;
    if ok && ws.ws_col > 0 && ws.ws_row > 0 {
        TerminalSize {
            cols: u32::from(ws.ws_col),
            rows: u32::from(ws.ws_row),
        }
    } else {
        FALLBACK_SIZE
    }
}

/// The console's size, or [`FALLBACK_SIZE`] without one (§6.4).
#[cfg(not(unix))]
fn terminal_size() -> TerminalSize {
    match crossterm::terminal::size() {
        Ok((cols, rows)) if cols > 0 && rows > 0 => TerminalSize {
            cols: u32::from(cols),
            rows: u32::from(rows),
        },
        _ => FALLBACK_SIZE,
    }
}

/// Local input for the session: keystrokes or stdin bytes, and terminal size changes.
enum Local {
    Bytes(Vec<u8>),
    Resize(TerminalSize),
    Eof,
}

/// Runs `dc` on this process's terminal (or stdin/stdout when stdin is not a terminal).
pub async fn run_on_terminal(dc: DataChannel) -> Result<ShellOutcome> {
    // §5.4: the agent's CustomerMessage (e.g. "This session is encrypted using AWS KMS."), as
    // the plugin prints it, before the terminal goes raw.
    if !dc.start.customer_message.is_empty() {
        eprintln!("{}", dc.start.customer_message);
    }
    let interactive = std::io::stdin().is_terminal();
    let _raw = if interactive { Some(RawMode::enable()?) } else { None };
    let (tx, rx) = mpsc::channel::<Local>(64);
    // Both stop when dropped, also when this future is dropped half-way (cancellation).
    let _input = input::spawn(tx.clone(), interactive);
    let _resize = if interactive {
        Some(AbortOnDrop(tokio::spawn(watch_resize(tx))))
    } else {
        None
    };
    pump(dc, rx, interactive).await
}

struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

async fn pump(dc: DataChannel, mut local: mpsc::Receiver<Local>, interactive: bool) -> Result<ShellOutcome> {
    let (sender, mut rx, driver) = dc.into_parts();
    // Always, also for piped stdin: the agent starts the pty without a size (§6.4), and
    // programs there would see 0 columns. Later changes come only from a terminal.
    // A send fails only once the driver has ended (a command that exits at once can end the
    // session first): input stops, and the driver's result below says how the session ended.
    let mut input_open = sender.send(PayloadType::Size, terminal_size().to_json()).await.is_ok();
    let mut exit_code = None;
    let mut stdout = std::io::stdout();
    let mut stderr = std::io::stderr();
    loop {
        tokio::select! {
            msg = rx.recv() => match msg {
                Some((PayloadType::Output, data)) => {
                    stdout.write_all(&data)?;
                    stdout.flush()?;
                }
                Some((PayloadType::StdErr, data)) => {
                    stderr.write_all(&data)?;
                    stderr.flush()?;
                }
                Some((PayloadType::ExitCode, data)) => exit_code = ssm_proto::payload::parse_exit_code(&data),
                Some(_) => {}
                None => break,
            },
            ev = local.recv(), if input_open => match ev {
                Some(Local::Bytes(mut bytes)) => {
                    // §6.2, §9 item 18: the LF→CR rewrite is for keyboard input only.
                    if interactive && bytes == b"\n" {
                        bytes = b"\r".to_vec();
                    }
                    input_open = sender.send(PayloadType::Output, bytes).await.is_ok();
                }
                Some(Local::Resize(size)) => input_open = sender.send(PayloadType::Size, size.to_json()).await.is_ok(),
                Some(Local::Eof) | None => {
                    input_open = false;
                    if !interactive {
                        // End of the script: Ctrl+D at the remote shell's prompt ends it.
                        let _ = sender.send(PayloadType::Output, vec![0x04]).await;
                    }
                }
            },
        }
    }
    drop(sender);
    let end = driver
        .await
        .map_err(|e| Error::Connect(format!("driver failed: {e}")))??;
    Ok(ShellOutcome { exit_code, end })
}

#[cfg(unix)]
async fn watch_resize(tx: mpsc::Sender<Local>) {
    use tokio::signal::unix::{SignalKind, signal};
    // §9 item 16: SIGWINCH, never polling.
    let Ok(mut winch) = signal(SignalKind::window_change()) else {
        return;
    };
    let mut last = terminal_size();
    while winch.recv().await.is_some() {
        let size = terminal_size();
        if size != last {
            last = size;
            if tx.send(Local::Resize(size)).await.is_err() {
                return;
            }
        }
    }
}

#[cfg(not(unix))]
async fn watch_resize(_tx: mpsc::Sender<Local>) {
    // On Windows resize events arrive with the console input events (see `input`).
}

#[cfg(unix)]
mod input {
    //! Reads fd 0 on a thread that polls with a timeout, so it stops reading the moment the
    //! session ends and never swallows a keystroke meant for the caller afterwards.

    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};

    use tokio::sync::mpsc;

    use super::Local;

    pub(super) struct Reader(Option<std::thread::JoinHandle<()>>, Arc<AtomicBool>);

    impl Drop for Reader {
        fn drop(&mut self) {
            // The thread sees the stop flag within one poll period.
            self.1.store(true, Ordering::SeqCst);
            if let Some(h) = self.0.take() {
                let _ = h.join();
            }
        }
    }

    pub(super) fn spawn(tx: mpsc::Sender<Local>, _interactive: bool) -> Reader {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        Reader(
            Some(std::thread::spawn(move || {
                let mut buf = vec![0u8; 16 << 10];
                while !stop.load(Ordering::SeqCst) {
                    let mut fds = libc::pollfd {
                        fd: 0,
                        events: libc::POLLIN,
                        revents: 0,
                    };
                    // SAFETY: one valid pollfd for the duration of the call.
                    let ready = unsafe { libc::poll(&mut fds, 1, 50) };
                    if ready < 0 {
                        if std::io::Error::last_os_error().kind() == std::io::ErrorKind::Interrupted {
                            continue;
                        }
                        let _ = tx.blocking_send(Local::Eof);
                        return;
                    }
                    if ready == 0 {
                        continue;
                    }
                    // SAFETY: `buf` is valid for `buf.len()` bytes.
                    let n = unsafe { libc::read(0, buf.as_mut_ptr().cast(), buf.len()) };
                    if n < 0 {
                        if std::io::Error::last_os_error().kind() == std::io::ErrorKind::Interrupted {
                            continue;
                        }
                        let _ = tx.blocking_send(Local::Eof);
                        return;
                    }
                    if n == 0 {
                        let _ = tx.blocking_send(Local::Eof);
                        return;
                    }
                    let data = buf.get(..n as usize).unwrap_or_default().to_vec();
                    if tx.blocking_send(Local::Bytes(data)).is_err() {
                        return;
                    }
                }
            })),
            flag,
        )
    }
}

#[cfg(not(unix))]
mod input {
    //! Windows: console key events through crossterm, mapped to the VT sequences the remote
    //! terminal expects (§6.2), and console resize events.

    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::time::Duration;

    use crossterm::event::{self, Event, KeyCode, KeyEvent, KeyEventKind, KeyModifiers};
    use std::io::Read;
    use tokio::sync::mpsc;

    use super::{Local, terminal_size};

    pub(super) struct Reader(Option<std::thread::JoinHandle<()>>, Arc<AtomicBool>, bool);

    impl Drop for Reader {
        fn drop(&mut self) {
            self.1.store(true, Ordering::SeqCst);
            // A blocking read of redirected stdin cannot be interrupted; that thread is left to
            // end with the process. The console event loop sees the flag within 50 ms.
            if let Some(h) = self.0.take() {
                if self.2 || h.is_finished() {
                    let _ = h.join();
                }
            }
        }
    }

    fn key_bytes(k: KeyEvent) -> Option<Vec<u8>> {
        let esc = |s: &str| Some(s.as_bytes().to_vec());
        match k.code {
            KeyCode::Char(c) if k.modifiers.contains(KeyModifiers::CONTROL) => {
                let b = (c.to_ascii_lowercase() as u8).wrapping_sub(b'a').wrapping_add(1);
                Some(vec![b])
            }
            KeyCode::Char(c) => Some(c.to_string().into_bytes()),
            KeyCode::Enter => Some(vec![b'\r']),
            KeyCode::Tab => Some(vec![b'\t']),
            KeyCode::Backspace => Some(vec![0x7f]),
            KeyCode::Esc => Some(vec![0x1b]),
            KeyCode::Up => esc("\x1bOA"),
            KeyCode::Down => esc("\x1bOB"),
            KeyCode::Right => esc("\x1bOC"),
            KeyCode::Left => esc("\x1bOD"),
            KeyCode::Home => esc("\x1b[H"),
            KeyCode::End => esc("\x1b[F"),
            KeyCode::Insert => esc("\x1b[2~"),
            KeyCode::Delete => esc("\x1b[3~"),
            KeyCode::PageUp => esc("\x1b[5~"),
            KeyCode::PageDown => esc("\x1b[6~"),
            KeyCode::F(n) => match n {
                1 => esc("\x1bOP"),
                2 => esc("\x1bOQ"),
                3 => esc("\x1bOR"),
                4 => esc("\x1bOS"),
                5 => esc("\x1b[15~"),
                6 => esc("\x1b[17~"),
                7 => esc("\x1b[18~"),
                8 => esc("\x1b[19~"),
                9 => esc("\x1b[20~"),
                10 => esc("\x1b[21~"),
                11 => esc("\x1b[23~"),
                12 => esc("\x1b[24~"),
                _ => None,
            },
            _ => None,
        }
    }

    pub(super) fn spawn(tx: mpsc::Sender<Local>, interactive: bool) -> Reader {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        Reader(
            Some(std::thread::spawn(move || {
                if !interactive {
                    let mut stdin = std::io::stdin();
                    let mut buf = vec![0u8; 16 << 10];
                    loop {
                        match stdin.read(&mut buf) {
                            Ok(0) | Err(_) => {
                                let _ = tx.blocking_send(Local::Eof);
                                return;
                            }
                            Ok(n) => {
                                if tx.blocking_send(Local::Bytes(buf[..n].to_vec())).is_err() {
                                    return;
                                }
                            }
                        }
                    }
                }
                while !stop.load(Ordering::SeqCst) {
                    match event::poll(Duration::from_millis(50)) {
                        Ok(true) => {}
                        Ok(false) => continue,
                        Err(_) => return,
                    }
                    let msg = match event::read() {
                        Ok(Event::Key(k)) if k.kind != KeyEventKind::Release => key_bytes(k).map(Local::Bytes),
                        Ok(Event::Resize(..)) => Some(Local::Resize(terminal_size())),
                        Ok(Event::Paste(s)) => Some(Local::Bytes(s.into_bytes())),
                        Ok(_) => None,
                        Err(_) => return,
                    };
                    if let Some(m) = msg {
                        if tx.blocking_send(m).is_err() {
                            return;
                        }
                    }
                }
            })),
            flag,
            interactive,
        )
    }
}
