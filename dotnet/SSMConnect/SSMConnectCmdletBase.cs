using System;
using System.Collections;
using System.Collections.Generic;
using System.Linq;
using System.Management.Automation;
using System.Threading;

namespace SSMConnect
{
    /// <summary>
    /// Shared parameters (the AWS Tools ones) and the machinery every session-starting cmdlet
    /// needs: a client from those parameters, a wait on the pipeline thread that writes
    /// progress and native log lines (warnings always, as PowerShell warnings; the rest with
    /// -Verbose / -Debug) and cancels native work when the pipeline stops (Ctrl+C), and
    /// ErrorRecords with stable ids.
    /// </summary>
    public abstract class SSMConnectCmdletBase : PSCmdlet, IDisposable
    {
        private readonly CancellationTokenSource stopping = new CancellationTokenSource();
        private NativeLogLevel logLevel = NativeLogLevel.Off;
        private SsmClientOptions? clientOptions;
        private bool disposed;

        /// <summary>Named profile from the shared AWS config and credentials files.</summary>
        [Parameter]
        [Alias("StoredCredentials", "AWSProfileName", "Profile")]
        [ValidateNotNullOrEmpty]
        public string? ProfileName { get; set; }

        /// <summary>A shared credentials file to read the profile from (default: ~/.aws/credentials).</summary>
        [Parameter]
        [Alias("AWSProfilesLocation", "ProfilesLocation")]
        [ValidateNotNullOrEmpty]
        public string? ProfileLocation { get; set; }

        /// <summary>Region; else <c>$StoredAWSRegion</c>, else the AWS SDK chain.</summary>
        [Parameter]
        [ValidateNotNullOrEmpty]
        [ArgumentCompleter(typeof(Completers.RegionCompleter))]
        public string? Region { get; set; }

        /// <summary>Access key id (with -SecretKey).</summary>
        [Parameter]
        [Alias("AK")]
        [ValidateNotNullOrEmpty]
        public string? AccessKey { get; set; }

        /// <summary>Secret access key.</summary>
        [Parameter]
        [Alias("SK", "SecretAccessKey")]
        [ValidateNotNullOrEmpty]
        public string? SecretKey { get; set; }

        /// <summary>Session token for temporary credentials.</summary>
        [Parameter]
        [Alias("ST")]
        [ValidateNotNullOrEmpty]
        public string? SessionToken { get; set; }

        /// <summary>An <c>Amazon.Runtime.AWSCredentials</c> object (AWS Tools' -Credential).</summary>
        [Parameter]
        [Alias("AWSCredential")]
        [ValidateNotNull]
        public object? Credential { get; set; }

        /// <summary>SSM endpoint (e.g. a VPC endpoint, or the emulator in tests).</summary>
        [Parameter]
        [ValidateNotNullOrEmpty]
        public string? EndpointUrl { get; set; }

        /// <summary>DNS server for DNS-name targets, ADDR or ADDR:PORT (default: the system's resolver).</summary>
        [Parameter]
        [ValidateNotNullOrEmpty]
        public string? DnsServer { get; set; }

        /// <summary>Why the session is started: StartSession's Reason, kept in the session's audit trail (CloudTrail, Session Manager history).</summary>
        [Parameter]
        [ValidateLength(1, 256)]
        public string? Reason { get; set; }

        /// <summary>Cancelled when the pipeline stops.</summary>
        protected CancellationToken StopToken => stopping.Token;

        /// <summary>The id for this cmdlet's progress records.</summary>
        protected virtual int ProgressId => 4711;

        /// <inheritdoc />
        protected override void BeginProcessing()
        {
            // Native warnings (e.g. a listener other hosts can reach) are shown whatever the
            // preferences; finer lines only when asked for.
            logLevel = WantedLogLevel();
            if (logLevel < NativeLogLevel.Warn)
            {
                logLevel = NativeLogLevel.Warn;
            }
            NativeLog.Enable(logLevel);
            // Lines left from earlier work (a forward still running) belong to nobody now.
            NativeLog.Drain((_, _) => { });
            clientOptions = ResolveClientOptions();
        }

        /// <inheritdoc />
        protected override void StopProcessing() => stopping.Cancel();

        /// <summary>Client settings from the shared parameters, resolved once when the cmdlet starts.</summary>
        protected SsmClientOptions ClientOptions() => clientOptions ??= ResolveClientOptions();

        /// <summary>
        /// Credentials in AWS Tools' order (<see cref="AwsToolsCredentials"/>), region, endpoint,
        /// completed from the session's environment (which the native library cannot see on Unix
        /// when it changed after start). Unusable credentials are a terminating error.
        /// </summary>
        private SsmClientOptions ResolveClientOptions()
        {
            try
            {
                return BuildClientOptions(
                    new ClientParameters
                    {
                        ProfileName = ProfileName,
                        ProfileLocation = ProfileLocation,
                        Region = Region,
                        AccessKey = AccessKey,
                        SecretKey = SecretKey,
                        SessionToken = SessionToken,
                        Credential = Credential,
                        EndpointUrl = EndpointUrl,
                        DnsServer = DnsServer,
                        Reason = Reason,
                    },
                    name => SessionState.PSVariable.GetValue(name),
                    ResolveFilePath);
            }
            catch (ArgumentException e)
            {
                ThrowTerminatingError(new ErrorRecord(e, ErrorCatalog.ErrorId(SsmErrorKind.InvalidArgument), ErrorCategory.InvalidArgument, null));
                throw;
            }
        }

        /// <summary>The shared parameters as given, for <see cref="BuildClientOptions"/>.</summary>
        internal sealed class ClientParameters
        {
            public string? ProfileName { get; set; }

            public string? ProfileLocation { get; set; }

            public string? Region { get; set; }

            public string? AccessKey { get; set; }

            public string? SecretKey { get; set; }

            public string? SessionToken { get; set; }

            public object? Credential { get; set; }

            public string? EndpointUrl { get; set; }

            public string? DnsServer { get; set; }

            public string? Reason { get; set; }
        }

        /// <summary>
        /// Client settings from the shared parameters: credentials in AWS Tools' order
        /// (<see cref="AwsToolsCredentials"/>), region (then <c>$StoredAWSRegion</c>), endpoint,
        /// completed from the session's environment. Used by the cmdlets and by completers
        /// (with the parameters typed so far).
        /// </summary>
        /// <exception cref="ArgumentException">Unusable credentials.</exception>
        internal static SsmClientOptions BuildClientOptions(ClientParameters given, Func<string, object?> variable, Func<string, string> resolvePath)
        {
            var options = new SsmClientOptions
            {
                Region = RegionResolver.Resolve(given.Region, variable(RegionResolver.StoredRegionVariable)),
                EndpointUrl = given.EndpointUrl,
                DnsServer = given.DnsServer,
                Reason = given.Reason,
            };
            AwsToolsCredentials.Apply(options, new AwsToolsCredentials.Sources
            {
                AccessKey = given.AccessKey,
                SecretKey = given.SecretKey,
                SessionToken = given.SessionToken,
                Credential = Unwrap(given.Credential),
                ProfileName = given.ProfileName,
                ProfileLocation = given.ProfileLocation is null ? null : resolvePath(given.ProfileLocation),
                Stored = Unwrap(variable(AwsToolsCredentials.StoredCredentialsVariable)),
            });
            return options.WithAwsEnvironment();
        }

        private static object? Unwrap(object? value) => value is PSObject p && p.BaseObject is not PSCustomObject ? p.BaseObject : value;

        /// <summary>A native client from the shared parameters; a refusal is a terminating error.</summary>
        protected SsmClient CreateClient()
        {
            try
            {
                return new SsmClient(ClientOptions());
            }
            catch (SsmException e)
            {
                ThrowTerminatingError(ToErrorRecord(e, null));
                throw;
            }
            catch (DllNotFoundException e)
            {
                ThrowTerminatingError(new ErrorRecord(e, ErrorCatalog.NativeLibraryNotFound, ErrorCategory.ResourceUnavailable, null));
                throw;
            }
        }

        /// <summary>-Region, then <c>$StoredAWSRegion</c>, then null (the SDK chain).</summary>
        protected string? ResolvedRegion() =>
            RegionResolver.Resolve(Region, SessionState.PSVariable.GetValue(RegionResolver.StoredRegionVariable));

        /// <summary>
        /// The targets in one <c>-Target</c> value; writes a <c>SSMConnect.NoTarget</c> error and
        /// returns nothing when it holds none.
        /// </summary>
        protected IReadOnlyList<string> ExpandTargets(object?[] values)
        {
            var all = new List<string>();
            foreach (var value in values)
            {
                try
                {
                    all.AddRange(TargetBinding.Expand(value, PowerShellAdapter));
                }
                catch (ArgumentException e)
                {
                    WriteError(new ErrorRecord(e, ErrorCatalog.NoTarget, ErrorCategory.InvalidArgument, value));
                }
            }
            return all;
        }

        /// <summary>
        /// Waits on the pipeline thread for <paramref name="op"/> to finish, writing its stages as
        /// progress and native log lines as verbose/debug output as they come. When the pipeline
        /// stops (Ctrl+C), the operation is cancelled, which wakes the wait at once, and
        /// <see cref="PipelineStoppedException"/> thrown.
        /// </summary>
        /// <param name="op">The operation.</param>
        /// <param name="activity">Progress activity text.</param>
        /// <param name="quietWhen">A stage from which on nothing more is written to the console
        /// (the interactive shell owns it then); log lines wait until the end.</param>
        /// <param name="showProgress">False: stages go to the verbose stream instead of progress
        /// records. The console host erases a progress bar lazily, after the cmdlet completed it,
        /// and so would erase what the native side already wrote to the terminal (a shell's
        /// first prompt).</param>
        /// <exception cref="SsmException">The operation failed.</exception>
        protected void WaitFor(Operation op, string activity, string? quietWhen = null, bool showProgress = true)
        {
            var progress = new ProgressRecord(ProgressId, activity, "Starting");
            var quiet = false;
            try
            {
                op.Wait(
                    StopToken,
                    stage =>
                    {
                        if (quiet)
                        {
                            return;
                        }
                        if (quietWhen is not null && string.Equals(stage, quietWhen, StringComparison.Ordinal))
                        {
                            quiet = true;
                            if (showProgress)
                            {
                                CompleteProgress(progress);
                            }
                            return;
                        }
                        progress.StatusDescription = stage.Length == 0 ? "Working" : stage;
                        if (showProgress)
                        {
                            WriteProgress(progress);
                        }
                        else
                        {
                            WriteVerbose($"{activity}: {progress.StatusDescription}");
                        }
                    },
                    () =>
                    {
                        if (!quiet)
                        {
                            DrainLogs();
                        }
                    });
            }
            catch (OperationCanceledException) when (StopToken.IsCancellationRequested)
            {
                throw new PipelineStoppedException();
            }
            finally
            {
                // Once the pipeline stops, nothing more may be written.
                if (!StopToken.IsCancellationRequested)
                {
                    if (!quiet && showProgress)
                    {
                        CompleteProgress(progress);
                    }
                    DrainLogs();
                }
            }
        }

        /// <summary>Writes the queued native log lines: errors and warnings as warnings (a failure
        /// that ends the work comes as an error of its own), info as verbose, finer as debug.</summary>
        protected void DrainLogs()
        {
            if (logLevel == NativeLogLevel.Off)
            {
                return;
            }
            NativeLog.Drain((level, line) =>
            {
                if (level <= NativeLogLevel.Warn)
                {
                    WriteWarning(line);
                }
                else if (level == NativeLogLevel.Info)
                {
                    WriteVerbose(line);
                }
                else
                {
                    WriteDebug(line);
                }
            });
        }

        /// <summary>Writes a non-terminating error for a failure of the native library.</summary>
        protected void WriteSsmError(SsmException e, object? target) => WriteError(ToErrorRecord(e, target));

        /// <summary>An ErrorRecord with the kind's stable id and category.</summary>
        protected static ErrorRecord ToErrorRecord(SsmException e, object? target)
        {
            if (!Enum.TryParse<ErrorCategory>(e.CategoryName, out var category))
            {
                category = ErrorCategory.NotSpecified;
            }
            return new ErrorRecord(e, e.ErrorId, category, target);
        }

        /// <summary>Document parameters from a hashtable: names to a value or an array of values; null when empty.</summary>
        protected static Dictionary<string, string[]>? DocumentParameters(Hashtable? parameter)
        {
            if (parameter is null || parameter.Count == 0)
            {
                return null;
            }
            var result = new Dictionary<string, string[]>(StringComparer.Ordinal);
            foreach (DictionaryEntry e in parameter)
            {
                var name = e.Key?.ToString();
                if (string.IsNullOrEmpty(name))
                {
                    continue;
                }
                var value = e.Value is PSObject p ? p.BaseObject : e.Value;
                result[name!] = value switch
                {
                    null => Array.Empty<string>(),
                    string s => new[] { s },
                    IEnumerable many => many.Cast<object?>().Select(v => (v is PSObject pv ? pv.BaseObject : v)?.ToString() ?? string.Empty).ToArray(),
                    _ => new[] { value.ToString() ?? string.Empty },
                };
            }
            return result;
        }

        /// <summary>Sets <c>$global:LASTEXITCODE</c>, as a native command would.</summary>
        protected void SetLastExitCode(int code) => SessionState.PSVariable.Set("global:LASTEXITCODE", code);

        /// <summary>An absolute file system path for a path the user typed (<c>~</c>, relative, PSDrive).</summary>
        protected string ResolveFilePath(string path) => SessionState.Path.GetUnresolvedProviderPathFromPSPath(path);

        /// <summary>The native log level for -Verbose / -Debug (parameters or preference variables).</summary>
        private NativeLogLevel WantedLogLevel()
        {
            if (MyInvocation.BoundParameters.TryGetValue("Debug", out var d) && d is SwitchParameter ds && ds.IsPresent)
            {
                return NativeLogLevel.Debug;
            }
            if (Enabled(GetVariableValue("DebugPreference")))
            {
                return NativeLogLevel.Debug;
            }
            if (MyInvocation.BoundParameters.TryGetValue("Verbose", out var v) && v is SwitchParameter vs && vs.IsPresent)
            {
                return NativeLogLevel.Info;
            }
            return Enabled(GetVariableValue("VerbosePreference")) ? NativeLogLevel.Info : NativeLogLevel.Off;
        }

        private static bool Enabled(object? preference)
        {
            var p = preference is PSObject ps ? ps.BaseObject : preference;
            return p is ActionPreference a
                ? a != ActionPreference.SilentlyContinue && a != ActionPreference.Ignore
                : p is string s && !string.IsNullOrEmpty(s) && !s.Equals("SilentlyContinue", StringComparison.OrdinalIgnoreCase) && !s.Equals("Ignore", StringComparison.OrdinalIgnoreCase);
        }

        private void CompleteProgress(ProgressRecord progress)
        {
            progress.RecordType = ProgressRecordType.Completed;
            WriteProgress(progress);
        }

        /// <summary>How <see cref="TargetBinding"/> sees PowerShell objects.</summary>
        internal static readonly TargetBinding.Adapter PowerShellAdapter = new TargetBinding.Adapter
        {
            // A PSCustomObject has only note properties, so the wrapper itself is kept for it.
            Unwrap = o => o is PSObject p && p.BaseObject is not PSCustomObject ? p.BaseObject : o,
            ReadProperty = (o, name) =>
            {
                try
                {
                    var prop = PSObject.AsPSObject(o).Properties[name];
                    return prop is null ? (false, null) : (true, prop.Value);
                }
                catch (GetValueException)
                {
                    return (false, null);
                }
            },
        };

        /// <summary>Frees what the cmdlet holds.</summary>
        public void Dispose()
        {
            Dispose(true);
            GC.SuppressFinalize(this);
        }

        /// <summary>Frees what the cmdlet holds.</summary>
        protected virtual void Dispose(bool disposing)
        {
            if (!disposed && disposing)
            {
                stopping.Dispose();
            }
            disposed = true;
        }
    }
}
