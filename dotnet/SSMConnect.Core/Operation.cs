using System;
using System.Threading;
using System.Threading.Tasks;
using SSMConnect.Native;

namespace SSMConnect
{
    /// <summary>
    /// Work running on the native library's runtime (connecting, running a shell), polled from
    /// the caller's thread so it can show progress and logs and cancel. Disposing cancels work
    /// still running.
    /// </summary>
    /// <remarks>Native calls on one operation are serialised: the C ABI wants one thread at a time.</remarks>
    public class Operation : IDisposable
    {
        /// <summary>How often the wait helpers poll.</summary>
        public static readonly TimeSpan DefaultPollInterval = TimeSpan.FromMilliseconds(50);

        private readonly OperationHandle handle;

        internal Operation(OperationHandle handle, string target)
        {
            this.handle = handle;
            Target = target;
        }

        /// <summary>The target the operation was started for.</summary>
        public string Target { get; }

        /// <summary>Serialises native calls on this operation.</summary>
        protected object Gate { get; } = new object();

        /// <summary>The current state.</summary>
        public OperationState State
        {
            get
            {
                lock (Gate)
                {
                    return (OperationState)(uint)handle.Use(NativeMethods.ssmc_operation_state);
                }
            }
        }

        /// <summary>What the operation is doing now, for progress display.</summary>
        public string Stage
        {
            get
            {
                lock (Gate)
                {
                    return handle.Use(h => NativeText.Borrowed(NativeMethods.ssmc_operation_stage(h)));
                }
            }
        }

        /// <summary>The error once the operation failed or was cancelled; null otherwise.</summary>
        public SsmException? Error
        {
            get
            {
                lock (Gate)
                {
                    return handle.Use(h =>
                    {
                        var kind = (SsmErrorKind)(uint)NativeMethods.ssmc_operation_error_kind(h);
                        if (kind == SsmErrorKind.None)
                        {
                            return null;
                        }
                        return new SsmException(kind, NativeText.Borrowed(NativeMethods.ssmc_operation_error_message(h)));
                    });
                }
            }
        }

        /// <summary>Exit code of a finished shell (0 when the agent reported none).</summary>
        public int ExitCode
        {
            get
            {
                lock (Gate)
                {
                    return handle.Use(NativeMethods.ssmc_operation_exit_code);
                }
            }
        }

        /// <summary>The native handle, for subclasses.</summary>
        protected OperationHandle Handle => handle;

        /// <summary>
        /// Cancels the work: a half-started session is terminated, a bound port released, the
        /// terminal restored. No effect once finished.
        /// </summary>
        public void Cancel()
        {
            lock (Gate)
            {
                if (!handle.IsClosed)
                {
                    handle.Use(NativeMethods.ssmc_operation_cancel);
                }
            }
        }

        /// <summary>
        /// Blocks until the operation finishes, reporting each new stage. Cancelling the token
        /// cancels the operation.
        /// </summary>
        /// <exception cref="OperationCanceledException">The token was cancelled.</exception>
        /// <exception cref="SsmException">The operation failed.</exception>
        public void Wait(CancellationToken cancellationToken = default, Action<string>? onStage = null, TimeSpan? pollInterval = null)
        {
            var interval = pollInterval ?? DefaultPollInterval;
            string? last = null;
            while (true)
            {
                if (cancellationToken.IsCancellationRequested)
                {
                    Cancel();
                    cancellationToken.ThrowIfCancellationRequested();
                }
                if (Poll(onStage, ref last))
                {
                    return;
                }
                cancellationToken.WaitHandle.WaitOne(interval);
            }
        }

        /// <summary>As <see cref="Wait"/>, without blocking a thread.</summary>
        /// <exception cref="OperationCanceledException">The token was cancelled.</exception>
        /// <exception cref="SsmException">The operation failed.</exception>
        public async Task WaitAsync(CancellationToken cancellationToken = default, Action<string>? onStage = null, TimeSpan? pollInterval = null)
        {
            var interval = pollInterval ?? DefaultPollInterval;
            string? last = null;
            while (true)
            {
                if (cancellationToken.IsCancellationRequested)
                {
                    Cancel();
                    cancellationToken.ThrowIfCancellationRequested();
                }
                if (Poll(onStage, ref last))
                {
                    return;
                }
                try
                {
                    await Task.Delay(interval, cancellationToken).ConfigureAwait(false);
                }
                catch (OperationCanceledException)
                {
                    // Handled at the top of the loop: cancel the native work first, then throw.
                }
            }
        }

        /// <summary>
        /// One step of a wait loop: reports a changed stage, and returns true once the operation
        /// finished successfully.
        /// </summary>
        /// <exception cref="SsmException">The operation failed or was cancelled.</exception>
        public bool Poll(Action<string>? onStage, ref string? lastStage)
        {
            var state = State;
            if (onStage is not null)
            {
                var stage = Stage;
                if (!string.Equals(stage, lastStage, StringComparison.Ordinal))
                {
                    lastStage = stage;
                    onStage(stage);
                }
            }
            switch (state)
            {
                case OperationState.Running:
                    return false;
                case OperationState.Succeeded:
                    return true;
                default:
                    throw Error ?? new SsmException(
                        state == OperationState.Cancelled ? SsmErrorKind.Cancelled : SsmErrorKind.Internal,
                        state == OperationState.Cancelled ? "cancelled" : "the operation failed without an error");
            }
        }

        /// <summary>Frees the operation, cancelling it if it still runs.</summary>
        public void Dispose()
        {
            Dispose(true);
            GC.SuppressFinalize(this);
        }

        /// <summary>Frees the native operation.</summary>
        protected virtual void Dispose(bool disposing)
        {
            if (disposing)
            {
                lock (Gate)
                {
                    handle.Dispose();
                }
            }
        }
    }

    /// <summary>An operation that ends with a listening <see cref="PortForward"/>.</summary>
    public sealed class ForwardOperation : Operation
    {
        private readonly ForwardRequest request;

        internal ForwardOperation(OperationHandle handle, ForwardRequest request)
            : base(handle, request.Target)
        {
            this.request = request;
        }

        /// <summary>
        /// Hands over the forward of a succeeded operation, registered in <see cref="ForwardRegistry"/>.
        /// </summary>
        /// <exception cref="InvalidOperationException">The operation has not succeeded, or the forward was taken already.</exception>
        public PortForward TakeForward()
        {
            var forward = new ForwardHandle();
            lock (Gate)
            {
                var raw = Handle.Use(NativeMethods.ssmc_operation_take_forward);
                if (raw == IntPtr.Zero)
                {
                    forward.Dispose();
                    throw new InvalidOperationException("the operation has no forward to hand over (not succeeded, or already taken)");
                }
                forward.Adopt(raw);
            }
            var pf = new PortForward(forward, request);
            ForwardRegistry.Add(pf);
            return pf;
        }
    }
}
