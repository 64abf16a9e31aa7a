//! Log capture for the caller: tracing events become lines in a bounded queue that the caller
//! drains on its own thread (PowerShell may write verbose output only from the pipeline thread).

use std::collections::VecDeque;
use std::io::Write;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Mutex, Once};

use tracing::Level;
use tracing_subscriber::fmt::MakeWriter;

/// Lines kept before the oldest are dropped.
const CAPACITY: usize = 10_000;

static MAX_LEVEL: AtomicU32 = AtomicU32::new(0);
static QUEUE: Mutex<VecDeque<(u32, String)>> = Mutex::new(VecDeque::new());
static INSTALL: Once = Once::new();
/// Lines queued so far; waits return when it moved (see `wait::Seen`).
static CAPTURED: AtomicU64 = AtomicU64::new(0);

fn level_number(level: &Level) -> u32 {
    match *level {
        Level::ERROR => 1,
        Level::WARN => 2,
        Level::INFO => 3,
        Level::DEBUG => 4,
        Level::TRACE => 5,
    }
}

pub(crate) fn enable(max_level: u32) {
    MAX_LEVEL.store(max_level.min(5), Ordering::Relaxed);
    INSTALL.call_once(|| {
        use tracing_subscriber::layer::SubscriberExt;
        use tracing_subscriber::util::SubscriberInitExt;
        use tracing_subscriber::{filter, fmt, Layer};
        // Our crates at any level; the AWS SDK's own events only from warnings up, its credential
        // chain's only from errors up (what it failed to find is the error reported).
        let targets =
            filter::EnvFilter::new("warn,aws_config=error,ssm_session=trace,ssm_proto=trace,ssmconnect_native=trace");
        // Only events at the level asked for now are formatted at all: capturing warnings (which
        // the cmdlets always do) must not make every per-frame trace event pay for a line.
        let wanted = filter::filter_fn(|meta| level_number(meta.level()) <= MAX_LEVEL.load(Ordering::Relaxed));
        let lines = fmt::layer()
            .with_writer(Capture)
            .with_ansi(false)
            .without_time()
            .with_target(false)
            .with_level(false)
            .with_filter(wanted);
        let _ = tracing_subscriber::registry().with(targets).with(lines).try_init();
    });
}

pub(crate) fn captured() -> u64 {
    CAPTURED.load(Ordering::Relaxed)
}

pub(crate) fn next() -> Option<(u32, String)> {
    QUEUE.lock().unwrap_or_else(|p| p.into_inner()).pop_front()
}

struct Capture;

/// Buffers one formatted event and queues it when dropped.
pub(crate) struct Line {
    level: u32,
    buf: Vec<u8>,
}

impl Write for Line {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        self.buf.extend_from_slice(data);
        Ok(data.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Drop for Line {
    fn drop(&mut self) {
        if self.level == 0 || self.level > MAX_LEVEL.load(Ordering::Relaxed) {
            return;
        }
        let text = String::from_utf8_lossy(&self.buf).trim_end().to_owned();
        if text.is_empty() {
            return;
        }
        let mut q = QUEUE.lock().unwrap_or_else(|p| p.into_inner());
        if q.len() >= CAPACITY {
            q.pop_front();
        }
        q.push_back((self.level, text));
        drop(q);
        CAPTURED.fetch_add(1, Ordering::Relaxed);
        crate::wait::notify();
    }
}

impl<'a> MakeWriter<'a> for Capture {
    type Writer = Line;

    fn make_writer(&'a self) -> Self::Writer {
        Line {
            level: 0,
            buf: Vec::new(),
        }
    }

    fn make_writer_for(&'a self, meta: &tracing::Metadata<'_>) -> Self::Writer {
        Line {
            level: level_number(meta.level()),
            buf: Vec::new(),
        }
    }
}
