using System;
using System.Collections.Generic;
using System.Globalization;
using System.Linq;
using System.Management.Automation;

namespace SSMConnect.Commands
{
    /// <summary>
    /// <para type="synopsis">Forwards a local port to a port on an instance, or to a host reached through it; or, with -Socks, runs a local SOCKS5 proxy through the instance.</para>
    /// </summary>
    [Cmdlet(VerbsLifecycle.Start, "SSMPortForward", SupportsShouldProcess = true, DefaultParameterSetName = PortSet)]
    [OutputType(typeof(PortForward))]
    public sealed class StartSSMPortForwardCommand : SSMConnectCmdletBase
    {
        private const string PortSet = "Port";
        private const string SocksSet = "Socks";
        private const string MapSet = "Map";

        private readonly List<PortForward> started = new List<PortForward>();

        /// <summary>Instance id, tag (key:value), IP address or DNS name; or objects with InstanceId / Instances.</summary>
        [Parameter(Mandatory = true, Position = 0, ValueFromPipeline = true, ValueFromPipelineByPropertyName = true)]
        [Alias("InstanceId")]
        [ValidateNotNull]
        [ArgumentCompleter(typeof(Completers.TargetCompleter))]
        public object[] Target { get; set; } = Array.Empty<object>();

        /// <summary>Port on the target (or on -RemoteHost); several ports start one forward each.</summary>
        [Parameter(Mandatory = true, Position = 1, ParameterSetName = PortSet)]
        [ValidateNotNullOrEmpty]
        [ValidateRange(1, 65535)]
        public int[] RemotePort { get; set; } = Array.Empty<int>();

        /// <summary>Local port to remote port, one forward each (e.g. @{ 15432 = 5432; 18443 = 443 }; [ordered] keeps the order); a local port of 0 picks a free one.</summary>
        [Parameter(Mandatory = true, ParameterSetName = MapSet)]
        [ValidateNotNullOrEmpty]
        public System.Collections.IDictionary? PortMap { get; set; }

        /// <summary>A SOCKS5 proxy (dynamic forwarding) instead of one destination: each connection gets a session of its own to the host and port it asks for.</summary>
        [Parameter(Mandatory = true, ParameterSetName = SocksSet)]
        public SwitchParameter Socks { get; set; }

        /// <summary>Local port for each -RemotePort, in the same order; 0 (the default) picks a free one.</summary>
        [Parameter(ParameterSetName = PortSet)]
        [Parameter(ParameterSetName = SocksSet)]
        [ValidateNotNullOrEmpty]
        [ValidateRange(0, 65535)]
        public int[]? LocalPort { get; set; }

        /// <summary>Local address to listen on.</summary>
        [Parameter]
        [ValidateNotNullOrEmpty]
        public string LocalAddress { get; set; } = "127.0.0.1";

        /// <summary>A host reached through the target (a database, an internal service).</summary>
        [Parameter(ParameterSetName = PortSet)]
        [Parameter(ParameterSetName = MapSet)]
        [ValidateNotNullOrEmpty]
        public string? RemoteHost { get; set; }

        /// <summary>Session document of type Port (default AWS-StartPortForwardingSession, or AWS-StartPortForwardingSessionToRemoteHost with -RemoteHost).</summary>
        [Parameter]
        [ValidateNotNullOrEmpty]
        public string? DocumentName { get; set; }

        /// <summary>A session of its own for each local connection (parallel downloads are not limited to one session's pace).</summary>
        [Parameter(ParameterSetName = PortSet)]
        [Parameter(ParameterSetName = MapSet)]
        public SwitchParameter SessionPerConnection { get; set; }

        /// <summary>Sessions started ahead with -SessionPerConnection, so a new connection does not wait for one to start.</summary>
        [Parameter(ParameterSetName = PortSet)]
        [Parameter(ParameterSetName = MapSet)]
        [ValidateRange(0, 64)]
        public int WarmSessions { get; set; } = 1;

        /// <summary>Block until the forward ends; Ctrl+C stops it.</summary>
        [Parameter]
        public SwitchParameter Wait { get; set; }

        /// <inheritdoc />
        protected override void ProcessRecord()
        {
            if (MyInvocation.BoundParameters.ContainsKey(nameof(WarmSessions)) && !SessionPerConnection)
            {
                ThrowTerminatingError(new ErrorRecord(
                    new ArgumentException("-WarmSessions applies only with -SessionPerConnection."),
                    "SSMConnect.InvalidArgument",
                    ErrorCategory.InvalidArgument,
                    WarmSessions));
            }
            if (Socks)
            {
                StartSocksProxies();
                return;
            }
            var pairs = PortMap is null ? null : PortPairs(PortMap);
            if (pairs is null && LocalPort is not null && LocalPort.Length != RemotePort.Length)
            {
                ThrowTerminatingError(new ErrorRecord(
                    new ArgumentException($"-LocalPort has {LocalPort.Length} port(s) and -RemotePort {RemotePort.Length}: give one local port for each remote port, in the same order (or no -LocalPort for free ports)."),
                    ErrorCatalog.PortCountMismatch,
                    ErrorCategory.InvalidArgument,
                    LocalPort));
            }
            var targets = ExpandTargets(Target);
            if (targets.Count == 0)
            {
                return;
            }
            pairs ??= RemotePort.Select((remote, i) => (LocalPort is null ? 0 : LocalPort[i], remote)).ToList();
            using var client = CreateClient();
            foreach (var target in targets)
            {
                foreach (var (local, remote) in pairs)
                {
                    Start(client, target, local, remote);
                }
            }
        }

        /// <summary>-PortMap as (local, remote) pairs in its order; a key or value that is no port is a terminating error.</summary>
        private List<(int Local, int Remote)> PortPairs(System.Collections.IDictionary map)
        {
            var pairs = new List<(int Local, int Remote)>();
            foreach (System.Collections.DictionaryEntry e in map)
            {
                var isLocal = TryPort(e.Key, 0, out var local);
                var isRemote = TryPort(e.Value, 1, out var remote);
                if (!isLocal || !isRemote)
                {
                    ThrowTerminatingError(new ErrorRecord(
                        new ArgumentException($"-PortMap entry {e.Key} = {e.Value}: give local port = remote port, e.g. @{{ 15432 = 5432 }} (local 0 to 65535, 0 for a free one; remote 1 to 65535)."),
                        ErrorCatalog.ErrorId(SsmErrorKind.InvalidArgument),
                        ErrorCategory.InvalidArgument,
                        map));
                }
                pairs.Add((local, remote));
            }
            return pairs;
        }

        private static bool TryPort(object? value, int min, out int port)
        {
            port = 0;
            try
            {
                port = LanguagePrimitives.ConvertTo<int>(value);
            }
            catch (PSInvalidCastException)
            {
                return false;
            }
            return port >= min && port <= 65535;
        }

        /// <summary>-Socks: one proxy for each target and local port (a free one without -LocalPort).</summary>
        private void StartSocksProxies()
        {
            var targets = ExpandTargets(Target);
            if (targets.Count == 0)
            {
                return;
            }
            using var client = CreateClient();
            foreach (var target in targets)
            {
                foreach (var localPort in LocalPort ?? new[] { 0 })
                {
                    var local = localPort == 0 ? $"{LocalAddress}:<free port>" : $"{LocalAddress}:{localPort}";
                    if (!ShouldProcess(target, $"Run a SOCKS5 proxy on {local}, a session through the instance for each connection"))
                    {
                        continue;
                    }
                    var request = new ForwardRequest
                    {
                        Target = target,
                        LocalAddress = LocalAddress,
                        LocalPort = (ushort)localPort,
                        Socks = true,
                        Document = DocumentName,
                    };
                    Begin(client, target, request, "a SOCKS5 proxy, a session for each connection");
                }
            }
        }

        private void Start(SsmClient client, string target, int localPort, int remotePort)
        {
            var local = localPort == 0 ? $"{LocalAddress}:<free port>" : $"{LocalAddress}:{localPort}";
            var action = string.Format(CultureInfo.InvariantCulture, "Forward {0} to {1}:{2}", local, RemoteHost ?? "the instance", remotePort);
            if (!ShouldProcess(target, action))
            {
                return;
            }
            var request = new ForwardRequest
            {
                Target = target,
                RemotePort = (ushort)remotePort,
                RemoteHost = RemoteHost,
                LocalAddress = LocalAddress,
                LocalPort = (ushort)localPort,
                SessionPerConnection = SessionPerConnection,
                WarmSessions = SessionPerConnection ? WarmSessions : (int?)null,
                Document = DocumentName,
            };
            var destination = $"{RemoteHost ?? "the instance"}:{remotePort}";
            Begin(client, target, request, SessionPerConnection ? $"{destination}, a session per connection" : destination);
        }

        /// <summary>Starts one forward (or proxy) and writes it to the pipeline; <paramref name="what"/> says what it reaches, for -Verbose.</summary>
        private void Begin(SsmClient client, string target, ForwardRequest request, string what)
        {
            try
            {
                using var op = client.BeginForward(request);
                WaitFor(op, $"Start-SSMPortForward {target}");
                var forward = op.TakeForward();
                started.Add(forward);
                var session = string.IsNullOrEmpty(forward.SessionId) ? string.Empty : $", session {forward.SessionId}";
                WriteVerbose($"Forwarding {forward.LocalEndpoint} to {what} via {forward.InstanceId} (forward {forward.Id}{session})");
                WriteObject(forward);
            }
            catch (SsmException e)
            {
                WriteSsmError(e, target);
            }
        }

        /// <inheritdoc />
        protected override void EndProcessing()
        {
            if (!Wait || started.Count == 0)
            {
                return;
            }
            var progress = new ProgressRecord(ProgressId, "Start-SSMPortForward -Wait", "Forwarding; Ctrl+C stops");
            var nextUpdate = DateTime.MinValue;
            void OnWake()
            {
                if (DateTime.UtcNow >= nextUpdate)
                {
                    progress.StatusDescription = string.Join(
                        "; ",
                        started.Select(f => string.Format(
                            CultureInfo.InvariantCulture,
                            "{0} -> {1}: {2} connection(s), {3:N0} bytes sent, {4:N0} received",
                            f.LocalEndpoint,
                            f.Target,
                            f.Connections,
                            f.BytesSent,
                            f.BytesReceived)));
                    WriteProgress(progress);
                    nextUpdate = DateTime.UtcNow.AddSeconds(1);
                }
                DrainLogs();
            }
            try
            {
                // Done when every forward has ended. Ctrl+C stops the one waited for, which wakes
                // the wait at once; the others are stopped below.
                foreach (var forward in started)
                {
                    forward.WaitForExit(StopToken, OnWake, tick: TimeSpan.FromSeconds(1));
                }
                progress.RecordType = ProgressRecordType.Completed;
                WriteProgress(progress);
                foreach (var f in started.Where(f => f.State == OperationState.Failed))
                {
                    WriteSsmError(new SsmException(SsmErrorKind.ConnectionFailed, $"forward {f.Id} to {f.Target} failed: {f.Error}"), f);
                }
            }
            catch (OperationCanceledException) when (StopToken.IsCancellationRequested)
            {
                throw new PipelineStoppedException();
            }
            finally
            {
                // -Wait means the forwards live as long as the command: stopped or not, they end here.
                foreach (var f in started)
                {
                    f.Stop();
                }
            }
        }
    }
}
