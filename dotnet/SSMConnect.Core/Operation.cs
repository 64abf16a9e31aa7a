using System;
using System.Threading;
using System.Threading.Tasks;
using SSMConnect.Native;

namespace SSMConnect
{
    /// <summary>
    /// Work running on the native library's runtime (connecting, running a shell), waited for on
    /// the caller's thread so it can show progress and logs as they come, and cancelled from any
    /// thread. Disposing cancels work still running.
    /// </summary>
    /// <remarks>
    /// Reads of strings from the native operation are serialised (each is valid until the next
    /// read); the wait holds no lock, so that <see cref="Cancel"/> can wake it.
    /// </remarks>
    public class Operation : IDisposable
    {
        private readonly OperationHandle handle;

        internal Operation(OperationHandle handle, string target)
        {
            this.handle = handle;
            Target = target;
        }

        /// <summary>The target the operation was started for.</summary>
        public string Target { get; }

        /// <summary>Serialises native reads on this operation.</summary>
        protected object Gate { get; } = new object();

        /// <summary>The current state.</summary>
        public OperationState State => (OperationState)(uint)Read(NativeMethods.ssmc_operation_state);

        /// <summary>What the operation is doing now, for progress display.</summary>
        public string Stage => Read(h => NativeText.Borrowed(NativeMethods.ssmc_operation_stage(h)));

        /// <summary>The error once the operation failed or was cancelled; null otherwise.</summary>
        public SsmException? Error => Read(h => (SsmErrorKind)(uint)NativeMethods.ssmc_operation_error_kind(h) is var kind && kind != SsmErrorKind.None
            ? new SsmException(kind, NativeText.Borrowed(NativeMethods.ssmc_operation_error_message(h)))
            : null);

        /// <summary>
        /// Exit code of a finished shell; null when the agent reported none, which is how every
        /// pty shell (the default shell, AWS-StartInteractiveCommand) ends: the agent sends exit
        /// codes only for NonInteractiveCommands.
        /// </summary>
        public int? ExitCode => Read(h => NativeMethods.ssmc_operation_exit_code(h, out var code) != 0 ? code : (int?)null);

        /// <summary>
        /// The instance (or managed node) id the target resolved to, once the session is being
        /// started; null before.
        /// </summary>
        public string? InstanceId => Read(h => NativeText.Borrowed(NativeMethods.ssmc_operation_instance_id(h)) is { Length: > 0 } id ? id : null);

        /// <summary>The native handle, for subclasses.</summary>
        protected OperationHandle Handle => handle;

        private T Read<T>(Func<IntPtr, T> read)
        {
            lock (Gate)
            {
                return handle.Use(read);
            }
        }

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
        /// Blocks until something changed (the state left Running, the stage changed, a native log
        /// line was captured) or <paramref name="timeout"/> passed, and returns the state then.
        /// <see cref="Cancel"/> from another thread wakes it at once.
        /// </summary>
        public OperationState WaitForChange(TimeSpan timeout) =>
            (OperationState)(uint)handle.Use(h => NativeMethods.ssmc_operation_wait(h, NativeWait.Milliseconds(timeout)));

        /// <summary>
        /// Blocks until the operation finishes, reporting each new stage. Cancelling the token
        /// cancels the operation.
        /// </summary>
        /// <param name="cancellationToken">Cancels the operation and ends the wait.</param>
        /// <param name="onStage">Called with each new stage.</param>
        /// <param name="onWake">Called after every wake-up (for draining <see cref="NativeLog"/>).</param>
        /// <exception cref="OperationCanceledException">The token was cancelled.</exception>
        /// <exception cref="SsmException">The operation failed.</exception>
        public void Wait(CancellationToken cancellationToken = default, Action<string>? onStage = null, Action? onWake = null)
        {
            string? last = null;
            NativeWait.Until(
                WaitForChange,
                state =>
                {
                    if (onStage is not null && Stage is var stage && !string.Equals(stage, last, StringComparison.Ordinal))
                    {
                        last = stage;
                        onStage(stage);
                    }
                    onWake?.Invoke();
                    return state switch
                    {
                        OperationState.Running => false,
                        OperationState.Succeeded => true,
                        _ => throw Error ?? new SsmException(
                            state == OperationState.Cancelled ? SsmErrorKind.Cancelled : SsmErrorKind.Internal,
                            state == OperationState.Cancelled ? "cancelled" : "the operation failed without an error"),
                    };
                },
                Cancel,
                cancellationToken);
        }

        /// <summary>As <see cref="Wait"/>, on a thread of its own (the native wait blocks it).</summary>
        /// <exception cref="OperationCanceledException">The token was cancelled.</exception>
        /// <exception cref="SsmException">The operation failed.</exception>
        public Task WaitAsync(CancellationToken cancellationToken = default, Action<string>? onStage = null) =>
            Task.Factory.StartNew(() => Wait(cancellationToken, onStage), CancellationToken.None, TaskCreationOptions.LongRunning, TaskScheduler.Default);

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
                // Wakes a waiter on another thread, whose reference keeps the handle alive.
                Cancel();
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

    /// <summary>Which stream a piece of command output came on.</summary>
    public enum ExecStream
    {
        /// <summary>Standard output (and the combined output of documents without separate streams).</summary>
        Stdout = 1,

        /// <summary>Standard error (only from documents with <c>separateOutputStream</c>).</summary>
        Stderr = 2,
    }

    /// <summary>A command session (<see cref="SsmClient.BeginExec"/>): its output is taken piece by piece.</summary>
    public sealed class ExecOperation : Operation
    {
        internal ExecOperation(OperationHandle handle, string target)
            : base(handle, target)
        {
        }

        /// <summary>
        /// Takes the next piece of output, in the order the agent sent it; false when none is
        /// waiting now. Once <see cref="Operation.State"/> is not Running, false means there is no more.
        /// </summary>
        public bool TryTakeOutput(out ExecStream stream, out byte[] data)
        {
            lock (Gate)
            {
                if (Handle.IsClosed)
                {
                    stream = ExecStream.Stdout;
                    data = Array.Empty<byte>();
                    return false;
                }
                var (kind, bytes) = Handle.Use(h =>
                {
                    var p = NativeMethods.ssmc_operation_next_output(h, out var s, out var len);
                    if (p == IntPtr.Zero)
                    {
                        return (0u, (byte[]?)null);
                    }
                    // Owned by the operation until the next call: copied under the lock.
                    var copy = new byte[checked((int)len)];
                    System.Runtime.InteropServices.Marshal.Copy(p, copy, 0, copy.Length);
                    return (s, copy);
                });
                stream = kind == 2 ? ExecStream.Stderr : ExecStream.Stdout;
                data = bytes ?? Array.Empty<byte>();
                return bytes is not null;
            }
        }

        /// <summary>
        /// Passes Ctrl+C to the running command (the agent sends it SIGINT and then reports exit
        /// code 1). False when no command runs (not started yet, or ended).
        /// </summary>
        public bool Interrupt()
        {
            lock (Gate)
            {
                return !Handle.IsClosed && Handle.Use(NativeMethods.ssmc_operation_interrupt) != 0;
            }
        }
    }
}
