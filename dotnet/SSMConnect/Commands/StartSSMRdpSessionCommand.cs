using System;
using System.Collections.Generic;
using System.ComponentModel;
using System.Diagnostics;
using System.Globalization;
using System.Management.Automation;
using System.Net;

namespace SSMConnect.Commands
{
    /// <summary>
    /// <para type="synopsis">Opens Remote Desktop to a Windows instance: a local port forwarded to its RDP port, the RDP client started on it, and the forward stopped when the client exits.</para>
    /// </summary>
    [Cmdlet(VerbsLifecycle.Start, "SSMRdpSession", SupportsShouldProcess = true)]
    [OutputType(typeof(PortForward), typeof(PSCredential), typeof(int))]
    public sealed class StartSSMRdpSessionCommand : SSMConnectCmdletBase
    {
        /// <summary>How long GetPasswordData may take.</summary>
        private static readonly TimeSpan PasswordTimeout = TimeSpan.FromSeconds(30);

        /// <summary>Instance id, tag (key:value), IP address or DNS name; or objects with InstanceId / Instances.</summary>
        [Parameter(Mandatory = true, Position = 0, ValueFromPipeline = true, ValueFromPipelineByPropertyName = true)]
        [Alias("InstanceId")]
        [ValidateNotNull]
        [ArgumentCompleter(typeof(Completers.TargetCompleter))]
        public object[] Target { get; set; } = Array.Empty<object>();

        /// <summary>Local port; 0 (the default) picks a free one.</summary>
        [Parameter]
        [ValidateRange(0, 65535)]
        public int LocalPort { get; set; }

        /// <summary>The instance's RDP port.</summary>
        [Parameter]
        [ValidateRange(1, 65535)]
        public int RemotePort { get; set; } = 3389;

        /// <summary>The key pair's private key file (.pem): the Administrator password is fetched (EC2 GetPasswordData) and decrypted with it.</summary>
        [Parameter]
        [Alias("KeyFile")]
        [ValidateNotNullOrEmpty]
        public string? PemFile { get; set; }

        /// <summary>The user the password is for.</summary>
        [Parameter]
        [ValidateNotNullOrEmpty]
        public string UserName { get; set; } = "Administrator";

        /// <summary>The RDP client to start (default: mstsc.exe on Windows; none elsewhere).</summary>
        [Parameter]
        [ValidateNotNullOrEmpty]
        public string? RdpClient { get; set; }

        /// <summary>The client's arguments; {Host}, {Port} and {User} are replaced (default for mstsc: /v:{Host}:{Port}; for others: {Host}:{Port}).</summary>
        [Parameter]
        [ValidateNotNull]
        public string[]? RdpClientArgument { get; set; }

        /// <summary>Start no client: write the forward (and, with -PemFile, the credential) and leave the forward running.</summary>
        [Parameter]
        public SwitchParameter NoClient { get; set; }

        /// <summary>Session document of type Port (default AWS-StartPortForwardingSession).</summary>
        [Parameter]
        [ValidateNotNullOrEmpty]
        public string? DocumentName { get; set; }

        /// <inheritdoc />
        protected override void ProcessRecord()
        {
            var targets = ExpandTargets(Target);
            if (targets.Count == 0)
            {
                return;
            }
            var program = NoClient ? null : RdpClient ?? (OperatingSystem.IsWindows() ? "mstsc.exe" : null);
            var keyFile = PemFile is null ? null : ResolveFilePath(PemFile);
            using var client = CreateClient();
            foreach (var target in targets)
            {
                var action = program is null ? $"Forward a local port to RDP port {RemotePort}" : $"Forward a local port to RDP port {RemotePort} and start {program}";
                if (!ShouldProcess(target, action))
                {
                    continue;
                }
                PSCredential? credential = null;
                if (keyFile is not null)
                {
                    try
                    {
                        var login = client.WindowsPassword(target, keyFile, PasswordTimeout);
                        credential = new PSCredential(UserName, login.Password);
                    }
                    catch (SsmException e)
                    {
                        WriteSsmError(e, target);
                        continue;
                    }
                }
                PortForward forward;
                try
                {
                    using var op = client.BeginForward(new ForwardRequest
                    {
                        Target = target,
                        RemotePort = (ushort)RemotePort,
                        LocalAddress = IPAddress.Loopback.ToString(),
                        LocalPort = (ushort)LocalPort,
                        Document = DocumentName,
                    });
                    WaitFor(op, $"Start-SSMRdpSession {target}");
                    forward = op.TakeForward();
                }
                catch (SsmException e)
                {
                    WriteSsmError(e, target);
                    continue;
                }
                if (program is null)
                {
                    WriteInformation(new InformationRecord(
                        string.Format(CultureInfo.InvariantCulture, "Connect your RDP client to {0} as {1}; Stop-SSMPortForward -Id {2} ends the forward.", forward.LocalEndpoint, UserName, forward.Id),
                        "Start-SSMRdpSession"));
                    WriteObject(forward);
                    if (credential is not null)
                    {
                        WriteObject(credential);
                    }
                    continue;
                }
                RunClient(program, forward, credential, target);
            }
        }

        /// <summary>Runs the client on the forward until it exits, then stops the forward; the stored login is removed.</summary>
        private void RunClient(string program, PortForward forward, PSCredential? credential, string target)
        {
            var host = IPAddress.Loopback.ToString();
            var port = forward.LocalPort.ToString(CultureInfo.InvariantCulture);
            var mstsc = string.Equals(System.IO.Path.GetFileNameWithoutExtension(program), "mstsc", StringComparison.OrdinalIgnoreCase);
            var psi = new ProcessStartInfo(program) { UseShellExecute = false };
            foreach (var a in RdpClientArgument ?? (mstsc ? new[] { "/v:{Host}:{Port}" } : new[] { "{Host}:{Port}" }))
            {
                psi.ArgumentList.Add(a.Replace("{Host}", host, StringComparison.Ordinal).Replace("{Port}", port, StringComparison.Ordinal).Replace("{User}", UserName, StringComparison.Ordinal));
            }
            // The login reaches the client for this connection only, never on a command line:
            // mstsc through the Windows credential store (as cmdkey /generic:TERMSRV/host does),
            // removed when the client exits; another client through its environment.
            var stored = credential is not null && mstsc && OperatingSystem.IsWindows() ? "TERMSRV/" + host : null;
            try
            {
                if (stored is not null && OperatingSystem.IsWindows())
                {
                    WindowsCredentialStore.Write(stored, credential!.UserName, credential.Password);
                }
                else if (credential is not null)
                {
                    psi.Environment["SSMCONNECT_RDP_USER"] = credential.UserName;
                    psi.Environment["SSMCONNECT_RDP_PASSWORD"] = credential.GetNetworkCredential().Password;
                }
                Process process;
                try
                {
                    process = Process.Start(psi) ?? throw new Win32Exception("Process.Start returned nothing");
                }
                catch (Win32Exception e)
                {
                    WriteError(new ErrorRecord(e, ErrorCatalog.RdpClientNotFound, ErrorCategory.ObjectNotFound, program));
                    return;
                }
                using (process)
                {
                    WriteVerbose($"{program} on {forward.LocalEndpoint} (forward {forward.Id} to {target})");
                    while (!process.WaitForExit(200))
                    {
                        DrainLogs();
                        if (StopToken.IsCancellationRequested)
                        {
                            throw new PipelineStoppedException();
                        }
                    }
                    process.WaitForExit();
                    SetLastExitCode(process.ExitCode);
                }
            }
            finally
            {
                forward.Stop();
                if (stored is not null && OperatingSystem.IsWindows())
                {
                    WindowsCredentialStore.Delete(stored);
                }
            }
        }
    }
}
