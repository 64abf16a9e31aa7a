using System;
using System.Collections.Concurrent;
using System.ComponentModel;
using System.Diagnostics;
using System.IO;
using System.Management.Automation;

namespace SSMConnect.Commands
{
    /// <summary>
    /// <para type="synopsis">Runs the system ssh to an instance with the bundled helper as its ProxyCommand.</para>
    /// </summary>
    [Cmdlet(VerbsLifecycle.Start, "SSMSshSession", SupportsShouldProcess = true)]
    [OutputType(typeof(int), typeof(string))]
    public sealed class StartSSMSshSessionCommand : SSMConnectCmdletBase
    {
        /// <summary>Instance id, tag (key:value), IP address or DNS name; or objects with InstanceId / Instances.</summary>
        [Parameter(Mandatory = true, Position = 0, ValueFromPipeline = true, ValueFromPipelineByPropertyName = true)]
        [Alias("InstanceId")]
        [ValidateNotNull]
        [ArgumentCompleter(typeof(Completers.TargetCompleter))]
        public object[] Target { get; set; } = Array.Empty<object>();

        /// <summary>Remote user (ssh -l).</summary>
        [Parameter]
        [Alias("UserName", "SshUser")]
        [ValidateNotNullOrEmpty]
        public string? User { get; set; }

        /// <summary>Private key file (ssh -i).</summary>
        [Parameter]
        [ValidateNotNullOrEmpty]
        public string? IdentityFile { get; set; }

        /// <summary>OpenSSH certificate for the key (ssh's CertificateFile), e.g. one signed by your SSH CA.</summary>
        [Parameter]
        [Alias("CertPath")]
        [ValidateNotNullOrEmpty]
        public string? CertificateFile { get; set; }

        /// <summary>Session document of type Port for the SSH session (default AWS-StartSSHSession).</summary>
        [Parameter]
        [ValidateNotNullOrEmpty]
        public string? DocumentName { get; set; }

        /// <summary>SSH port on the instance (ssh -p; default 22).</summary>
        [Parameter]
        [ValidateRange(1, 65535)]
        public int Port { get; set; }

        /// <summary>Push the public half of -IdentityFile (the .pub beside it) with EC2 Instance Connect first.</summary>
        [Parameter]
        public SwitchParameter UseInstanceConnect { get; set; }

        /// <summary>Remote command; an interactive login when absent.</summary>
        [Parameter(Position = 1)]
        [ValidateNotNullOrEmpty]
        public string? Command { get; set; }

        /// <summary>More ssh arguments, each one array element (e.g. '-o','StrictHostKeyChecking=no').</summary>
        [Parameter]
        [ValidateNotNull]
        public string[]? SshArgument { get; set; }

        /// <summary>
        /// With -Command: the remote stdout into the pipeline as lines of text (each tagged with
        /// its Target), stderr lines to the error stream (SSMConnect.RemoteStderr), as
        /// Invoke-SSMSessionCommand does; stdin is not read.
        /// </summary>
        [Parameter]
        public SwitchParameter CaptureOutput { get; set; }

        /// <summary>Write ssh's exit code (it is always in $LASTEXITCODE).</summary>
        [Parameter]
        public SwitchParameter PassThru { get; set; }

        /// <inheritdoc />
        protected override void ProcessRecord()
        {
            var targets = ExpandTargets(Target);
            if (targets.Count == 0)
            {
                return;
            }
            var ssh = SshInvocation.FindSsh();
            if (ssh is null)
            {
                ThrowTerminatingError(new ErrorRecord(
                    new FileNotFoundException("the ssh client was not found on PATH (on Windows: install the OpenSSH Client feature)"),
                    ErrorCatalog.SshNotFound,
                    ErrorCategory.ObjectNotFound,
                    null));
            }
            string helper;
            try
            {
                helper = HelperLocator.Find();
            }
            catch (FileNotFoundException e)
            {
                ThrowTerminatingError(new ErrorRecord(e, ErrorCatalog.HelperNotFound, ErrorCategory.ObjectNotFound, null));
                throw;
            }
            if (CaptureOutput && Command is null)
            {
                ThrowTerminatingError(new ErrorRecord(
                    new ArgumentException("-CaptureOutput needs -Command: an interactive login has no output to capture"),
                    ErrorCatalog.ErrorId(SsmErrorKind.InvalidArgument),
                    ErrorCategory.InvalidArgument,
                    null));
            }
            var identity = IdentityFile is null ? null : ResolveFilePath(IdentityFile);
            var certificate = CertificateFile is null ? null : ResolveFilePath(CertificateFile);
            if (certificate is not null && !File.Exists(certificate))
            {
                ThrowTerminatingError(new ErrorRecord(
                    new FileNotFoundException($"the certificate file {certificate} does not exist", certificate),
                    ErrorCatalog.ErrorId(SsmErrorKind.InvalidArgument),
                    ErrorCategory.ObjectNotFound,
                    certificate));
            }
            // The settings are checked as the other cmdlets check them (a malformed -DnsServer,
            // unusable credentials) before ssh starts.
            using (CreateClient())
            {
            }
            // The helper runs as a child process, which sees this session's environment; only
            // what was given as parameters goes on its command line, credentials go through its
            // environment.
            var aws = ClientOptions();
            if (UseInstanceConnect)
            {
                CheckInstanceConnect(identity);
            }

            foreach (var target in targets)
            {
                var options = new SshOptions
                {
                    SshPath = ssh!,
                    HelperPath = helper,
                    Target = target,
                    User = User,
                    Port = Port == 0 ? null : Port,
                    IdentityFile = identity,
                    CertificateFile = certificate,
                    Document = DocumentName,
                    Reason = Reason,
                    UseInstanceConnect = UseInstanceConnect,
                    Command = Command,
                    Region = aws.Region,
                    Profile = aws.Profile,
                    EndpointUrl = EndpointUrl,
                    DnsServer = DnsServer,
                    AccessKey = aws.AccessKey,
                    SecretKey = aws.SecretKey,
                    SessionToken = aws.SessionToken,
                    CredentialsFile = aws.CredentialsFile,
                    ConfigFile = aws.ConfigFile,
                };
                foreach (var a in SshArgument ?? Array.Empty<string>())
                {
                    options.SshArguments.Add(a);
                }
                SshInvocation invocation;
                try
                {
                    invocation = SshInvocation.Build(options);
                }
                catch (ArgumentException e)
                {
                    WriteError(new ErrorRecord(e, ErrorCatalog.ErrorId(SsmErrorKind.InvalidArgument), ErrorCategory.InvalidArgument, target));
                    continue;
                }
                var action = Command is null ? $"ssh as {User ?? "the default user"}" : $"ssh as {User ?? "the default user"}, running: {Command}";
                if (!ShouldProcess(target, action))
                {
                    continue;
                }
                WriteVerbose($"{invocation.FileName} {string.Join(" ", invocation.Arguments)}");
                var code = Run(invocation, target);
                if (code is int c)
                {
                    SetLastExitCode(c);
                    if (PassThru)
                    {
                        WriteObject(c);
                    }
                }
            }
        }

        private void CheckInstanceConnect(string? identity)
        {
            if (string.IsNullOrEmpty(User))
            {
                ThrowTerminatingError(new ErrorRecord(
                    new ArgumentException("-UseInstanceConnect needs -User: the key is pushed for that user"),
                    ErrorCatalog.ErrorId(SsmErrorKind.InvalidArgument),
                    ErrorCategory.InvalidArgument,
                    null));
            }
            if (identity is null || !File.Exists(identity + ".pub"))
            {
                ThrowTerminatingError(new ErrorRecord(
                    new FileNotFoundException($"-UseInstanceConnect pushes the public key beside -IdentityFile, and {(identity ?? "<no -IdentityFile>") + ".pub"} does not exist"),
                    ErrorCatalog.ErrorId(SsmErrorKind.InvalidArgument),
                    ErrorCategory.InvalidArgument,
                    identity));
            }
        }

        /// <summary>
        /// Runs ssh on this console (with -CaptureOutput: its output into the pipeline) and
        /// returns its exit code (null when stopped or not started).
        /// </summary>
        private int? Run(SshInvocation invocation, string target)
        {
            var psi = invocation.ToStartInfo();
            var helperVerbosity = WantedHelperVerbosity();
            if (helperVerbosity is not null)
            {
                // The helper logs to ssh's stderr, the console; -Verbose/-Debug turn it up.
                psi.Environment["SSMCONNECT_LOG"] = $"warn,aws_config=error,ssm_session={helperVerbosity},ssm_proto={helperVerbosity},ssmconnect={helperVerbosity}";
            }
            // Captured: both streams read line by line on their own threads, written from here.
            using var lines = CaptureOutput ? new BlockingCollection<(bool Error, string Text)>() : null;
            if (lines is not null)
            {
                psi.RedirectStandardInput = true;
                psi.RedirectStandardOutput = true;
                psi.RedirectStandardError = true;
                psi.StandardOutputEncoding = System.Text.Encoding.UTF8;
                psi.StandardErrorEncoding = System.Text.Encoding.UTF8;
            }
            Process process;
            try
            {
                process = Process.Start(psi) ?? throw new Win32Exception("Process.Start returned nothing");
            }
            catch (Win32Exception e)
            {
                WriteError(new ErrorRecord(e, ErrorCatalog.SshNotFound, ErrorCategory.ObjectNotFound, target));
                return null;
            }
            using (process)
            {
                var readers = 0;
                if (lines is not null)
                {
                    process.StandardInput.Close();
                    readers = 2;
                    void Add(bool error, string? line)
                    {
                        if (line is not null)
                        {
                            lines.Add((error, line));
                        }
                        else if (System.Threading.Interlocked.Decrement(ref readers) == 0)
                        {
                            lines.CompleteAdding();
                        }
                    }
                    process.OutputDataReceived += (_, e) => Add(false, e.Data);
                    process.ErrorDataReceived += (_, e) => Add(true, e.Data);
                    process.BeginOutputReadLine();
                    process.BeginErrorReadLine();
                }
                // Until ssh has exited and, when captured, both of its streams have ended.
                while (!Ended(process, lines, target))
                {
                    if (StopToken.IsCancellationRequested)
                    {
                        // ssh got the same Ctrl+C when it shares the console; give it a moment to end itself.
                        if (!process.WaitForExit(2000))
                        {
                            process.Kill(entireProcessTree: true);
                            process.WaitForExit();
                        }
                        throw new PipelineStoppedException();
                    }
                }
                process.WaitForExit();
                return process.ExitCode;
            }
        }

        /// <summary>Waits up to 100 ms for ssh to end, writing the captured lines that arrive meanwhile.</summary>
        private bool Ended(Process process, BlockingCollection<(bool Error, string Text)>? lines, string target)
        {
            if (lines is null || lines.IsCompleted)
            {
                return process.WaitForExit(100);
            }
            if (lines.TryTake(out var line, 100))
            {
                WriteLine(line.Error, line.Text, target);
                return false;
            }
            return false;
        }

        /// <summary>One captured line: stdout into the pipeline, stderr as an error record.</summary>
        private void WriteLine(bool error, string text, string target)
        {
            if (error)
            {
                WriteError(new ErrorRecord(new RemoteStderrException(text), ErrorCatalog.RemoteStderr, ErrorCategory.NotSpecified, target));
                return;
            }
            var o = new PSObject(text);
            o.Properties.Add(new PSNoteProperty("Target", target));
            WriteObject(o);
        }

        private string? WantedHelperVerbosity()
        {
            if (MyInvocation.BoundParameters.ContainsKey("Debug"))
            {
                return "debug";
            }
            return MyInvocation.BoundParameters.ContainsKey("Verbose") ? "info" : null;
        }
    }
}
