using System;
using System.Collections;
using System.Collections.Generic;
using System.Management.Automation;

namespace SSMConnect.Commands
{
    /// <summary>
    /// <para type="synopsis">Runs a command on one or many instances in a NonInteractiveCommands session; stdout comes back as objects.</para>
    /// </summary>
    [Cmdlet(VerbsLifecycle.Invoke, "SSMSessionCommand", SupportsShouldProcess = true)]
    [OutputType(typeof(string), typeof(byte[]), typeof(CommandResult))]
    public sealed class InvokeSSMSessionCommandCommand : SSMConnectCmdletBase
    {
        /// <summary>How long Ctrl+C waits for the interrupted commands to end before their sessions are ended.</summary>
        private static readonly TimeSpan InterruptGrace = TimeSpan.FromSeconds(3);

        private readonly List<ExecRequest> requests = new List<ExecRequest>();

        /// <summary>Instance id, tag (key:value), IP address or DNS name; or objects with InstanceId / Instances.</summary>
        [Parameter(Mandatory = true, Position = 0, ValueFromPipeline = true, ValueFromPipelineByPropertyName = true)]
        [Alias("InstanceId")]
        [ValidateNotNull]
        [ArgumentCompleter(typeof(Completers.TargetCompleter))]
        public object[] Target { get; set; } = Array.Empty<object>();

        /// <summary>The command line; the agent splits it shell-style and runs it without a shell (use sh -c '…' for shell syntax).</summary>
        [Parameter(Mandatory = true, Position = 1)]
        [ValidateNotNullOrEmpty]
        public string Command { get; set; } = string.Empty;

        /// <summary>Session document of type NonInteractiveCommands (default AWS-StartNonInteractiveCommand).</summary>
        [Parameter]
        [ValidateNotNullOrEmpty]
        public string? DocumentName { get; set; }

        /// <summary>Document parameters besides command: names to a value or an array of values.</summary>
        [Parameter]
        public Hashtable? Parameter { get; set; }

        /// <summary>Sessions at most at one time.</summary>
        [Parameter]
        [ValidateRange(1, 1024)]
        public int ThrottleLimit { get; set; } = 32;

        /// <summary>Stdout as one byte array per target instead of lines of text.</summary>
        [Parameter]
        public SwitchParameter Raw { get; set; }

        /// <summary>Also write a result object per target (Target, InstanceId, Status, ExitCode).</summary>
        [Parameter]
        public SwitchParameter PassThru { get; set; }

        /// <inheritdoc />
        protected override void ProcessRecord()
        {
            var parameters = DocumentParameters(Parameter);
            foreach (var target in ExpandTargets(Target))
            {
                if (!ShouldProcess(target, $"Run: {Command}"))
                {
                    continue;
                }
                requests.Add(new ExecRequest { Target = target, Command = Command, Document = DocumentName, Parameters = parameters });
            }
        }

        /// <inheritdoc />
        protected override void EndProcessing()
        {
            if (requests.Count == 0)
            {
                return;
            }
            using var client = CreateClient();
            using var runner = new CommandRunner(client, requests, ThrottleLimit, Raw);
            while (true)
            {
                CommandEvent? next;
                bool finished;
                try
                {
                    if (!runner.TryNext(TimeSpan.FromMilliseconds(250), StopToken, out next, out finished))
                    {
                        DrainLogs();
                        if (finished)
                        {
                            break;
                        }
                        continue;
                    }
                }
                catch (OperationCanceledException) when (StopToken.IsCancellationRequested)
                {
                    // Ctrl+C: the commands get it first; sessions still running after a moment end.
                    runner.Interrupt();
                    if (!runner.WaitAll(InterruptGrace))
                    {
                        runner.Cancel();
                    }
                    throw new PipelineStoppedException();
                }
                Write(next!);
            }
            DrainLogs();
        }

        private void Write(CommandEvent e)
        {
            switch (e.Kind)
            {
                case CommandEventKind.Stage:
                    WriteVerbose($"{e.Target}: {e.Text}");
                    break;
                case CommandEventKind.Output:
                    WriteObject(Tagged(e.Text ?? string.Empty, e));
                    break;
                case CommandEventKind.Error:
                    WriteError(new ErrorRecord(
                        new RemoteStderrException(e.Text ?? string.Empty),
                        ErrorCatalog.RemoteStderr,
                        ErrorCategory.NotSpecified,
                        e.InstanceId ?? e.Target));
                    break;
                case CommandEventKind.Done:
                    DrainLogs();
                    var result = e.Result!;
                    if (result.Status == CommandStatus.Failed)
                    {
                        WriteSsmError(result.Error!, result.Target);
                    }
                    else
                    {
                        if (e.Data is byte[] data)
                        {
                            WriteObject(Tagged(data, e));
                        }
                        if (result.Status == CommandStatus.NoExitCode)
                        {
                            WriteVerbose($"{result.Target}: the agent reported no exit code (the document has no separate output streams, or the command was killed by a signal); $LASTEXITCODE is {CommandResult.UnknownExitCode}.");
                        }
                        SetLastExitCode(result.ExitCode ?? CommandResult.UnknownExitCode);
                    }
                    if (PassThru)
                    {
                        WriteObject(result);
                    }
                    break;
            }
        }

        private static PSObject Tagged(object value, CommandEvent e)
        {
            var o = new PSObject(value);
            o.Properties.Add(new PSNoteProperty("InstanceId", e.InstanceId));
            o.Properties.Add(new PSNoteProperty("Target", e.Target));
            return o;
        }
    }
}
