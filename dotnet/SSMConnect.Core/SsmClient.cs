using System;
using System.Threading;
using System.Threading.Tasks;
using SSMConnect.Native;

namespace SSMConnect
{
    /// <summary>
    /// A native client: settings and connections to AWS (or an emulator) shared by the operations
    /// started from it. Operations and forwards stay valid after the client is disposed.
    /// </summary>
    public sealed class SsmClient : IDisposable
    {
        private readonly ClientHandle handle;

        /// <summary>Creates a client.</summary>
        /// <exception cref="SsmException">The library refused the settings.</exception>
        /// <exception cref="DllNotFoundException">The native library could not be loaded.</exception>
        public SsmClient(SsmClientOptions options)
        {
            if (options is null)
            {
                throw new ArgumentNullException(nameof(options));
            }
            NativeLibraryLoader.Register();
            var json = RequestJson.Serialize(options);
            handle = new ClientHandle();
            var raw = NativeMethods.ssmc_client_new(json);
            if (raw == IntPtr.Zero)
            {
                handle.Dispose();
                throw NativeText.LastError("creating the client");
            }
            handle.Adopt(raw);
        }

        /// <summary>The native library's version, e.g. <c>0.1.0</c>.</summary>
        public static string NativeVersion
        {
            get
            {
                NativeLibraryLoader.Register();
                return NativeText.Borrowed(NativeMethods.ssmc_version());
            }
        }

        /// <summary>Starts a port forward; poll or wait on the returned operation, then <see cref="ForwardOperation.TakeForward"/>.</summary>
        /// <exception cref="SsmException">The request was refused at once (malformed).</exception>
        public ForwardOperation BeginForward(ForwardRequest request)
        {
            if (request is null)
            {
                throw new ArgumentNullException(nameof(request));
            }
            var json = RequestJson.Serialize(request);
            var op = new OperationHandle();
            var raw = handle.Use(c => NativeMethods.ssmc_forward_begin(c, json));
            if (raw == IntPtr.Zero)
            {
                op.Dispose();
                throw NativeText.LastError("starting the port forward");
            }
            op.Adopt(raw);
            return new ForwardOperation(op, request);
        }

        /// <summary>
        /// Starts an interactive shell on this process's terminal (non-interactive when stdin is
        /// redirected). The operation ends with the remote shell; see <see cref="Operation.ExitCode"/>.
        /// </summary>
        /// <exception cref="SsmException">The request was refused at once (malformed).</exception>
        public Operation BeginShell(ShellRequest request)
        {
            if (request is null)
            {
                throw new ArgumentNullException(nameof(request));
            }
            var json = RequestJson.Serialize(request);
            var op = new OperationHandle();
            var raw = handle.Use(c => NativeMethods.ssmc_shell_begin(c, json));
            if (raw == IntPtr.Zero)
            {
                op.Dispose();
                throw NativeText.LastError("starting the shell session");
            }
            op.Adopt(raw);
            return new Operation(op, request.Target);
        }

        /// <summary>Starts a port forward and waits for it to listen; the forward is registered in <see cref="ForwardRegistry"/>.</summary>
        /// <exception cref="SsmException">It failed.</exception>
        /// <exception cref="OperationCanceledException"><paramref name="cancellationToken"/> was cancelled; nothing is left listening.</exception>
        public async Task<PortForward> StartForwardAsync(ForwardRequest request, CancellationToken cancellationToken = default)
        {
            using var op = BeginForward(request);
            await op.WaitAsync(cancellationToken).ConfigureAwait(false);
            return op.TakeForward();
        }

        /// <summary>Frees the native client.</summary>
        public void Dispose() => handle.Dispose();
    }
}
