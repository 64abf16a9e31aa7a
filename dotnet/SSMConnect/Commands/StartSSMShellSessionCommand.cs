using System;
using System.Collections;
using System.Management.Automation;

namespace SSMConnect.Commands
{
    /// <summary>
    /// <para type="synopsis">Opens a shell on an instance in this terminal (non-interactive when stdin is redirected).</para>
    /// </summary>
    [Cmdlet(VerbsLifecycle.Start, "SSMShellSession", SupportsShouldProcess = true)]
    [OutputType(typeof(int))]
    public sealed class StartSSMShellSessionCommand : SSMConnectCmdletBase
    {
        /// <summary>The stage the native library reports once the remote shell owns the terminal.</summary>
        private const string RunningStage = "Running";

        /// <summary>Instance id, tag (key:value), IP address or DNS name; or objects with InstanceId / Instances.</summary>
        [Parameter(Mandatory = true, Position = 0, ValueFromPipeline = true, ValueFromPipelineByPropertyName = true)]
        [Alias("InstanceId")]
        [ValidateNotNull]
        [ArgumentCompleter(typeof(Completers.TargetCompleter))]
        public object[] Target { get; set; } = Array.Empty<object>();

        /// <summary>Session document (default: the account's shell preferences).</summary>
        [Parameter]
        [ValidateNotNullOrEmpty]
        public string? DocumentName { get; set; }

        /// <summary>Document parameters: names to a value or an array of values.</summary>
        [Parameter]
        public Hashtable? Parameter { get; set; }

        /// <summary>Write the remote exit code, or $null when the agent reported none.</summary>
        [Parameter]
        public SwitchParameter PassThru { get; set; }

        /// <summary>
        /// $LASTEXITCODE when the agent reported no exit code (always for pty shells), the same
        /// status as the helper's `ssmconnect shell`.
        /// </summary>
        public const int NoExitCode = 10;

        /// <inheritdoc />
        protected override void ProcessRecord()
        {
            var targets = ExpandTargets(Target);
            if (targets.Count == 0)
            {
                return;
            }
            var parameters = DocumentParameters(Parameter);
            using var client = CreateClient();
            foreach (var target in targets)
            {
                if (!ShouldProcess(target, "Start a shell session"))
                {
                    continue;
                }
                try
                {
                    using var op = client.BeginShell(new ShellRequest { Target = target, Document = DocumentName, Parameters = parameters });
                    // The remote shell writes to this terminal: no progress bar whose late erasing
                    // would take its first prompt with it.
                    WaitFor(op, $"Start-SSMShellSession {target}", quietWhen: RunningStage, showProgress: false);
                    var code = op.ExitCode;
                    if (code is null)
                    {
                        WriteVerbose($"The agent reported no exit code for the session on {target}; $LASTEXITCODE is {NoExitCode}.");
                    }
                    SetLastExitCode(code ?? NoExitCode);
                    if (PassThru)
                    {
                        WriteObject(code);
                    }
                }
                catch (SsmException e)
                {
                    WriteSsmError(e, target);
                }
            }
        }
    }
}
