using System;
using System.Threading;
using SSMConnect.Native;

namespace SSMConnect
{
    /// <summary>
    /// A running (or finished) port forward. Properties are read live from the native forward
    /// until it is stopped; after <see cref="Stop"/> they keep their last values.
    /// </summary>
    /// <remarks>
    /// The native forward runs on the library's runtime in the background; this object owns its
    /// handle. Native reads are serialised; waits hold no lock, so that a stop wakes them.
    /// </remarks>
    public sealed class PortForward : IDisposable
    {
        private static int lastId;

        private readonly object gate = new object();
        private ForwardHandle? handle;
        private Snapshot last;

        internal PortForward(ForwardHandle handle, ForwardRequest request)
        {
            this.handle = handle;
            Id = Interlocked.Increment(ref lastId);
            RemoteHost = request.RemoteHost;
            RemotePort = request.RemotePort ?? 0;
            StartTime = DateTime.Now;
            last = handle.Use(h => new Snapshot
            {
                Target = NativeText.Borrowed(NativeMethods.ssmc_forward_target(h)),
                InstanceId = NativeText.Borrowed(NativeMethods.ssmc_forward_instance_id(h)),
                LocalAddress = NativeText.Borrowed(NativeMethods.ssmc_forward_local_address(h)),
                LocalPort = NativeMethods.ssmc_forward_local_port(h),
                SessionId = NativeText.Borrowed(NativeMethods.ssmc_forward_session_id(h)),
                Mode = NativeText.Borrowed(NativeMethods.ssmc_forward_mode(h)),
                State = OperationState.Running,
                Error = string.Empty,
            });
        }

        /// <summary>Process-wide increasing number, for <c>Get-SSMPortForward -Id</c>.</summary>
        public int Id { get; }

        /// <summary>The target as given (instance id, tag, address or DNS name).</summary>
        public string Target => last.Target;

        /// <summary>The instance (or managed node) id the target resolved to.</summary>
        public string InstanceId => last.InstanceId;

        /// <summary>Local address listened on.</summary>
        public string LocalAddress => last.LocalAddress;

        /// <summary>Local port listened on (the chosen one when 0 was asked for).</summary>
        public int LocalPort => last.LocalPort;

        /// <summary><c>address:port</c> to connect to (IPv6 in brackets).</summary>
        public string LocalEndpoint => LocalAddress.Contains(':') ? $"[{LocalAddress}]:{LocalPort}" : $"{LocalAddress}:{LocalPort}";

        /// <summary>Host reached through the target, or null for the target itself.</summary>
        public string? RemoteHost { get; }

        /// <summary>Port on the target (or on <see cref="RemoteHost"/>); 0 for a SOCKS5 proxy, whose connections each name their own.</summary>
        public int RemotePort { get; }

        /// <summary>Session Manager session id.</summary>
        public string SessionId => last.SessionId;

        /// <summary><c>Basic</c> or <c>Multiplexed</c>; <c>SessionPerConnection</c>; or <c>Socks</c> (a SOCKS5 proxy, a session for each connection to the destination it asks for).</summary>
        public string Mode => last.Mode;

        /// <summary>When the forward started listening (local time).</summary>
        public DateTime StartTime { get; }

        /// <summary>Running while forwarding; Succeeded once stopped or closed by the service; Failed with <see cref="Error"/>.</summary>
        public OperationState State => Refresh().State;

        /// <summary>Why the forward failed; empty otherwise.</summary>
        public string Error => Refresh().Error;

        /// <summary>Bytes sent to the target.</summary>
        public long BytesSent => Refresh().BytesSent;

        /// <summary>Bytes received from the target.</summary>
        public long BytesReceived => Refresh().BytesReceived;

        /// <summary>Connections accepted so far.</summary>
        public long Connections => Refresh().Connections;

        /// <summary>Connections open now.</summary>
        public long ActiveConnections => Refresh().ActiveConnections;

        /// <summary>
        /// Stops the forward: the listener and its connections close and the session is
        /// terminated. Waits up to <paramref name="timeout"/> (default 10 s) for it to finish, then
        /// frees the native forward and removes it from <see cref="ForwardRegistry"/>.
        /// </summary>
        /// <returns>True when the forward had finished within the timeout.</returns>
        public bool Stop(TimeSpan? timeout = null)
        {
            RequestStop();
            var finished = NativeWait.Until(WaitForChange, state => state != OperationState.Running, timeout: timeout ?? TimeSpan.FromSeconds(10));
            lock (gate)
            {
                if (!finished)
                {
                    // Freeing stops it too; the state shown from now on is what it would become.
                    last.State = OperationState.Succeeded;
                }
                handle?.Dispose();
                handle = null;
            }
            ForwardRegistry.Remove(this);
            return finished;
        }

        /// <summary>Asks the forward to stop and returns at once; a thread waiting on it wakes.</summary>
        public void RequestStop()
        {
            lock (gate)
            {
                handle?.Use(NativeMethods.ssmc_forward_stop);
            }
        }

        /// <summary>
        /// Blocks until the forward ends (stopped elsewhere, closed by the service, failed).
        /// Cancelling the token stops the forward and ends the wait.
        /// </summary>
        /// <param name="cancellationToken">Stops the forward and ends the wait.</param>
        /// <param name="onWake">Called after every wake-up (a native log line, <paramref name="tick"/>).</param>
        /// <param name="tick">Longest time between calls of <paramref name="onWake"/>.</param>
        /// <returns>The final state.</returns>
        /// <exception cref="OperationCanceledException">The token was cancelled.</exception>
        public OperationState WaitForExit(CancellationToken cancellationToken, Action? onWake = null, TimeSpan? tick = null)
        {
            NativeWait.Until(
                WaitForChange,
                state =>
                {
                    onWake?.Invoke();
                    return state != OperationState.Running;
                },
                RequestStop,
                cancellationToken,
                tick: tick);
            return State;
        }

        /// <summary>
        /// Blocks until something changed (the forward ended, a stop was asked for, a native log
        /// line was captured) or <paramref name="timeout"/> passed, and returns the state then.
        /// </summary>
        public OperationState WaitForChange(TimeSpan timeout)
        {
            ForwardHandle? h;
            lock (gate)
            {
                h = handle;
            }
            try
            {
                // No lock held while blocked, so that a stop from another thread can wake it; the
                // reference taken by Use keeps the native forward alive meanwhile.
                h?.Use(raw => NativeMethods.ssmc_forward_wait(raw, NativeWait.Milliseconds(timeout)));
            }
            catch (ObjectDisposedException)
            {
                // Stopped and freed meanwhile: the last values stand.
            }
            return Refresh().State;
        }

        /// <summary>Stops and frees the forward.</summary>
        public void Dispose() => Stop(TimeSpan.Zero);

        /// <inheritdoc />
        public override string ToString() => Mode == "Socks"
            ? $"{InstanceId} {LocalEndpoint} -> SOCKS5"
            : $"{InstanceId} {LocalEndpoint} -> {RemoteHost ?? InstanceId}:{RemotePort}";

        private Snapshot Refresh()
        {
            lock (gate)
            {
                if (handle is not null && !handle.IsClosed)
                {
                    handle.Use(h =>
                    {
                        last.State = (OperationState)(uint)NativeMethods.ssmc_forward_state(h);
                        last.Error = NativeText.Borrowed(NativeMethods.ssmc_forward_error_message(h));
                        last.BytesSent = ToLong(NativeMethods.ssmc_forward_bytes_sent(h));
                        last.BytesReceived = ToLong(NativeMethods.ssmc_forward_bytes_received(h));
                        last.Connections = ToLong(NativeMethods.ssmc_forward_connections(h));
                        last.ActiveConnections = ToLong(NativeMethods.ssmc_forward_active_connections(h));
                    });
                }
                return last;
            }
        }

        private static long ToLong(ulong v) => v > long.MaxValue ? long.MaxValue : (long)v;

        private struct Snapshot
        {
            public string Target;
            public string InstanceId;
            public string LocalAddress;
            public int LocalPort;
            public string SessionId;
            public string Mode;
            public OperationState State;
            public string Error;
            public long BytesSent;
            public long BytesReceived;
            public long Connections;
            public long ActiveConnections;
        }
    }
}
