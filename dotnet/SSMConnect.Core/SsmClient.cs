using System;
using System.Collections.Generic;
using System.Text.Json;
using System.Text.Json.Serialization;
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

        /// <summary>Starts a port forward; wait on the returned operation, then <see cref="ForwardOperation.TakeForward"/>.</summary>
        /// <exception cref="SsmException">The request was refused at once (malformed).</exception>
        public ForwardOperation BeginForward(ForwardRequest request) =>
            new ForwardOperation(Begin(request ?? throw new ArgumentNullException(nameof(request)), NativeMethods.ssmc_forward_begin, "starting the port forward"), request);

        /// <summary>
        /// Starts an interactive shell on this process's terminal (non-interactive when stdin is
        /// redirected). The operation ends with the remote shell; see <see cref="Operation.ExitCode"/>.
        /// </summary>
        /// <exception cref="SsmException">The request was refused at once (malformed).</exception>
        public Operation BeginShell(ShellRequest request) =>
            new Operation(Begin(request ?? throw new ArgumentNullException(nameof(request)), NativeMethods.ssmc_shell_begin, "starting the shell session"), request.Target);

        /// <summary>
        /// Runs one command in a NonInteractiveCommands session. Nothing goes to the console: take
        /// the output with <see cref="ExecOperation.TryTakeOutput"/> while and after it runs; the
        /// exit code, when the agent reported one, is then in <see cref="Operation.ExitCode"/>.
        /// </summary>
        /// <exception cref="SsmException">The request was refused at once (malformed).</exception>
        public ExecOperation BeginExec(ExecRequest request) =>
            new ExecOperation(Begin(request ?? throw new ArgumentNullException(nameof(request)), NativeMethods.ssmc_exec_begin, "starting the command session"), request.Target);

        /// <summary>
        /// Running EC2 instances (id and Name tag), at most <paramref name="limit"/>, waiting up
        /// to <paramref name="timeout"/> for DescribeInstances (for completing targets).
        /// </summary>
        /// <exception cref="SsmException">The call failed or timed out.</exception>
        public IReadOnlyList<InstanceSummary> RunningInstances(int limit, TimeSpan timeout)
        {
            var raw = handle.Use(c => NativeMethods.ssmc_client_running_instances(c, (uint)Math.Max(0, limit), NativeWait.Milliseconds(timeout)));
            if (raw == IntPtr.Zero)
            {
                throw NativeText.LastError("listing running instances");
            }
            var json = NativeText.Owned(raw) ?? "[]";
            return JsonSerializer.Deserialize<List<InstanceSummary>>(json) ?? new List<InstanceSummary>();
        }

        /// <summary>
        /// The Windows Administrator password of <paramref name="target"/>: EC2 GetPasswordData,
        /// decrypted with the key pair's private key in <paramref name="keyFile"/> (PEM), waiting
        /// up to <paramref name="timeout"/>.
        /// </summary>
        /// <exception cref="SsmException">The file is not the key, EC2 has no password yet, or the call failed.</exception>
        public NetworkLogin WindowsPassword(string target, string keyFile, TimeSpan timeout)
        {
            var json = RequestJson.Serialize(new PasswordRequest { Target = target, KeyFile = keyFile });
            var raw = handle.Use(c => NativeMethods.ssmc_client_windows_password(c, json, NativeWait.Milliseconds(timeout)));
            if (raw == IntPtr.Zero)
            {
                throw NativeText.LastError("getting the Windows password");
            }
            using var answer = JsonDocument.Parse(NativeText.Owned(raw) ?? "{}");
            var password = new System.Security.SecureString();
            foreach (var c in answer.RootElement.GetProperty("password").GetString() ?? string.Empty)
            {
                password.AppendChar(c);
            }
            password.MakeReadOnly();
            return new NetworkLogin(answer.RootElement.GetProperty("instance_id").GetString() ?? target, password);
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

        private OperationHandle Begin<T>(T request, Func<IntPtr, string, IntPtr> begin, string what)
        {
            var json = RequestJson.Serialize(request);
            var op = new OperationHandle();
            var raw = handle.Use(c => begin(c, json));
            if (raw == IntPtr.Zero)
            {
                op.Dispose();
                throw NativeText.LastError(what);
            }
            op.Adopt(raw);
            return op;
        }

        /// <summary>Frees the native client.</summary>
        public void Dispose() => handle.Dispose();
    }

    /// <summary>A Windows login for an instance: its id and the Administrator password.</summary>
    public sealed class NetworkLogin
    {
        internal NetworkLogin(string instanceId, System.Security.SecureString password)
        {
            InstanceId = instanceId;
            Password = password;
        }

        /// <summary>The instance the password belongs to.</summary>
        public string InstanceId { get; }

        /// <summary>The password (read-only).</summary>
        public System.Security.SecureString Password { get; }
    }

    internal sealed class PasswordRequest
    {
        [JsonPropertyName("target")]
        public string Target { get; set; } = string.Empty;

        [JsonPropertyName("key_file")]
        public string KeyFile { get; set; } = string.Empty;
    }

    /// <summary>A running instance as DescribeInstances lists it.</summary>
    public sealed class InstanceSummary
    {
        /// <summary>Instance id.</summary>
        [JsonPropertyName("instance_id")]
        public string InstanceId { get; set; } = string.Empty;

        /// <summary>The Name tag, or null.</summary>
        [JsonPropertyName("name")]
        public string? Name { get; set; }
    }
}
