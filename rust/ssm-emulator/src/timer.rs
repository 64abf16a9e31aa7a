//! Waits that end on time to the tens of microseconds, for the agent's pacing.
//!
//! The agent pauses its reader with Go's `time.Sleep(time.Millisecond)` after each message it
//! sends from a destination (agent/session/plugins/port/port_mux.go `transferDataToMgs`,
//! port_basic.go `WritePump`), and that sleep ends barely over a millisecond later. tokio's
//! timer counts whole milliseconds and rounds every deadline up to the next one, so the same
//! pause lasted 1 to 2 ms here: a paced session moved about half of what the agent moves, and
//! an echo that came back within the pause waited up to a millisecond longer than behind the
//! agent. On Linux a `timerfd` ends the pause when it is due; elsewhere tokio's timer is used.

use std::time::Instant;

/// One reusable timer. Dropping a pending [`PreciseTimer::sleep_until`] is fine; the next call
/// sets the timer again.
pub(crate) struct PreciseTimer {
    #[cfg(target_os = "linux")]
    fd: Option<tokio::io::unix::AsyncFd<linux::Fd>>,
}

impl PreciseTimer {
    /// A timer; where no `timerfd` can be had, waits fall back to tokio's timer.
    pub(crate) fn new() -> Self {
        Self {
            #[cfg(target_os = "linux")]
            fd: linux::Fd::new().and_then(linux::register).ok(),
        }
    }

    /// Completes at `deadline` (at once if it has passed); with `precise`, on time rather than
    /// at tokio's next whole millisecond.
    pub(crate) async fn sleep_until(&self, deadline: Instant, precise: bool) {
        #[cfg(target_os = "linux")]
        if let Some(fd) = &self.fd
            && precise
            && deadline.saturating_duration_since(Instant::now()) <= PRECISE_WITHIN
            && linux::wait(fd, deadline).await.is_ok()
        {
            return;
        }
        tokio::time::sleep_until(tokio::time::Instant::from_std(deadline)).await;
    }
}

/// Deadlines further off are left to tokio's timer: its rounding up to the next millisecond
/// matters for the agent's 1 ms pauses, not for a timeout seconds away, and arming the timerfd
/// costs a system call on every turn of the agent's loop (most turns wait for the idle timeout).
#[cfg(target_os = "linux")]
const PRECISE_WITHIN: std::time::Duration = std::time::Duration::from_millis(20);

#[cfg(target_os = "linux")]
mod linux {
    use std::os::fd::{AsFd, AsRawFd, RawFd};
    use std::time::Instant;

    use nix::sys::time::TimeSpec;
    use nix::sys::timerfd::{ClockId, Expiration, TimerFd, TimerFlags, TimerSetTimeFlags};
    use tokio::io::unix::AsyncFd;

    /// A non-blocking `timerfd` on the monotonic clock (the clock `Instant` reads).
    pub(super) struct Fd(TimerFd);

    impl Fd {
        pub(super) fn new() -> std::io::Result<Self> {
            TimerFd::new(
                ClockId::CLOCK_MONOTONIC,
                TimerFlags::TFD_NONBLOCK | TimerFlags::TFD_CLOEXEC,
            )
            .map(Self)
            .map_err(std::io::Error::from)
        }
    }

    impl AsRawFd for Fd {
        fn as_raw_fd(&self) -> RawFd {
            self.0.as_fd().as_raw_fd()
        }
    }

    /// Registers the timer with the runtime's reactor (readable when it expires).
    pub(super) fn register(fd: Fd) -> std::io::Result<AsyncFd<Fd>> {
        // SAFETY: `Fd` owns its descriptor (the TimerFd closes it on drop) and `as_raw_fd`
        // always returns that one; the AsyncFd owns the `Fd`, so the descriptor stays open
        // and the same for the AsyncFd's whole life.
        unsafe { AsyncFd::register_with_interest(fd, tokio::io::Interest::READABLE) }.map_err(std::io::Error::from)
    }

    pub(super) async fn wait(fd: &AsyncFd<Fd>, deadline: Instant) -> std::io::Result<()> {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Ok(());
        }
        fd.get_ref()
            .0
            .set(
                Expiration::OneShot(TimeSpec::from_duration(left)),
                TimerSetTimeFlags::empty(),
            )
            .map_err(std::io::Error::from)?;
        loop {
            let mut ready = fd.readable().await?;
            // Reading takes the expiration; EAGAIN means it has not expired yet.
            match ready.get_inner().0.wait() {
                Ok(()) => return Ok(()),
                Err(nix::errno::Errno::EAGAIN) => ready.clear_ready(),
                Err(e) => return Err(e.into()),
            }
            if Instant::now() >= deadline {
                return Ok(());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use super::PreciseTimer;

    #[tokio::test]
    async fn a_wait_never_ends_before_its_deadline_even_after_an_abandoned_one() {
        let timer = PreciseTimer::new();
        #[cfg(target_os = "linux")]
        assert!(
            timer.fd.is_some(),
            "no timerfd: the pacing would fall back to whole milliseconds"
        );
        // A wait given up early (the agent's loop drops its timer whenever another event wins)
        // must not end a later, shorter or longer, wait early.
        let abandoned = timer.sleep_until(Instant::now() + Duration::from_millis(30), true);
        assert!(tokio::time::timeout(Duration::from_millis(2), abandoned).await.is_err());
        for micros in [0, 300, 1_000, 2_500, 40_000] {
            let deadline = Instant::now() + Duration::from_micros(micros);
            timer.sleep_until(deadline, true).await;
            let now = Instant::now();
            assert!(now >= deadline, "a {micros} µs wait ended {:?} early", deadline - now);
        }
    }
}
