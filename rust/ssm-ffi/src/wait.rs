//! Blocking waits for the caller: one process-wide lock and condition variable, signalled after
//! every change a waiter may be waiting for (an operation's state or stage, a forward's end or a
//! stop request, a captured log line, a cancel).
//!
//! A waiter evaluates its condition with the lock held, and every change is made before
//! [`notify`] takes the lock, so no wake-up is lost between the check and the sleep. Conditions
//! must never call [`notify`] nor take a lock that is held while [`notify`] is called.

use std::sync::{Condvar, Mutex};
use std::time::{Duration, Instant};

static EVENTS: Mutex<()> = Mutex::new(());
static CHANGED: Condvar = Condvar::new();

/// Wakes every waiter to look at its condition again. Call it after the change, with no lock held.
pub(crate) fn notify() {
    let _held = EVENTS.lock().unwrap_or_else(|p| p.into_inner());
    CHANGED.notify_all();
}

/// Blocks until `ready` holds or `timeout_ms` milliseconds passed.
pub(crate) fn until(timeout_ms: u32, mut ready: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_millis(timeout_ms.into());
    let mut held = EVENTS.lock().unwrap_or_else(|p| p.into_inner());
    while !ready() {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return;
        }
        held = CHANGED.wait_timeout(held, left).unwrap_or_else(|p| p.into_inner()).0;
    }
}

/// What a handle's waiter has seen: the sum of its event counters (stage changes, stop requests,
/// captured log lines) when its previous wait returned. The counters only grow, so a different
/// sum means something happened since.
pub(crate) struct Seen(std::sync::atomic::AtomicU64);

impl Seen {
    /// What a new handle has seen: the log lines captured before it existed (its own counters
    /// start at zero), so that they do not end its first wait.
    pub(crate) fn now() -> Self {
        Self(crate::logs::captured().into())
    }

    /// Waits until `running()` is false or `pulse()` differs from what the previous wait saw.
    pub(crate) fn wait(&self, timeout_ms: u32, mut running: impl FnMut() -> bool, pulse: impl Fn() -> u64) {
        use std::sync::atomic::Ordering::Relaxed;
        until(timeout_ms, || {
            let now = pulse();
            let changed = now != self.0.swap(now, Relaxed);
            changed || !running()
        });
    }
}
