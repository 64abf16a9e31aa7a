using System;
using System.Diagnostics;
using System.Threading;

namespace SSMConnect
{
    /// <summary>
    /// The one way SSMConnect waits for native work. The thread blocks in the library's wait
    /// (<c>ssmc_operation_wait</c>, <c>ssmc_forward_wait</c>), which returns when the state leaves
    /// Running, the stage changes, a log line is captured, or the work is cancelled or stopped, and
    /// the caller reacts between waits. Nothing polls: with nothing happening the thread sleeps.
    /// </summary>
    public static class NativeWait
    {
        /// <summary>
        /// Calls <paramref name="step"/> with the current state, then again after every return of
        /// <paramref name="wait"/>, until it returns true.
        /// </summary>
        /// <param name="wait">One native wait of at most the given time; returns the state then.</param>
        /// <param name="step">Reacts to what happened (progress, log lines); true ends the wait.</param>
        /// <param name="wake">Cancels or stops the work, which wakes the native wait at once; run
        /// (on the cancelling thread) when <paramref name="cancellationToken"/> is cancelled.</param>
        /// <param name="cancellationToken">Ends the wait with <see cref="OperationCanceledException"/>.</param>
        /// <param name="timeout">Overall limit (default none).</param>
        /// <param name="tick">Longest single wait, for callers that refresh a display periodically.</param>
        /// <returns>True when <paramref name="step"/> ended the wait, false when the timeout passed first.</returns>
        /// <exception cref="OperationCanceledException">The token was cancelled (after <paramref name="wake"/> ran).</exception>
        public static bool Until(
            Func<TimeSpan, OperationState> wait,
            Func<OperationState, bool> step,
            Action? wake = null,
            CancellationToken cancellationToken = default,
            TimeSpan? timeout = null,
            TimeSpan? tick = null)
        {
            if (wait is null || step is null)
            {
                throw new ArgumentNullException(wait is null ? nameof(wait) : nameof(step));
            }
            var watch = Stopwatch.StartNew();
            var limit = timeout ?? TimeSpan.MaxValue;
            using var registration = wake is null ? default : cancellationToken.Register(wake);
            var state = wait(TimeSpan.Zero);
            while (true)
            {
                cancellationToken.ThrowIfCancellationRequested();
                if (step(state))
                {
                    return true;
                }
                var left = limit == TimeSpan.MaxValue ? limit : limit - watch.Elapsed;
                if (left <= TimeSpan.Zero)
                {
                    return false;
                }
                state = wait(tick is TimeSpan t && t < left ? t : left);
            }
        }

        /// <summary>A wait time as the C ABI takes it: whole milliseconds, saturated at <c>u32::MAX</c>.</summary>
        internal static uint Milliseconds(TimeSpan t) =>
            t <= TimeSpan.Zero ? 0u : t.TotalMilliseconds >= uint.MaxValue ? uint.MaxValue : (uint)Math.Ceiling(t.TotalMilliseconds);
    }
}
