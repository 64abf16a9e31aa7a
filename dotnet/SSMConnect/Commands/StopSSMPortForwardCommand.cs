using System;
using System.Collections.Generic;
using System.Globalization;
using System.Management.Automation;

namespace SSMConnect.Commands
{
    /// <summary>
    /// <para type="synopsis">Stops port forwards: closes the local listener and its connections and ends the session.</para>
    /// </summary>
    [Cmdlet(VerbsLifecycle.Stop, "SSMPortForward", SupportsShouldProcess = true, DefaultParameterSetName = IdSet)]
    [OutputType(typeof(PortForward))]
    public sealed class StopSSMPortForwardCommand : PSCmdlet
    {
        private const string IdSet = "Id";
        private const string InputObjectSet = "InputObject";
        private const string AllSet = "All";

        /// <summary>Forward ids. Not bound from the pipeline: a forward object piped in binds
        /// -InputObject, so that stopping it again is not an unknown id.</summary>
        [Parameter(Mandatory = true, Position = 0, ParameterSetName = IdSet)]
        [ValidateNotNullOrEmpty]
        [ArgumentCompleter(typeof(Completers.ForwardIdCompleter))]
        public int[] Id { get; set; } = Array.Empty<int>();

        /// <summary>Forward objects (from Start- or Get-SSMPortForward).</summary>
        [Parameter(Mandatory = true, ParameterSetName = InputObjectSet, ValueFromPipeline = true)]
        [ValidateNotNullOrEmpty]
        public PortForward[] InputObject { get; set; } = Array.Empty<PortForward>();

        /// <summary>Every forward of this session.</summary>
        [Parameter(Mandatory = true, ParameterSetName = AllSet)]
        public SwitchParameter All { get; set; }

        /// <summary>Write the stopped forwards.</summary>
        [Parameter]
        public SwitchParameter PassThru { get; set; }

        /// <inheritdoc />
        protected override void ProcessRecord()
        {
            IEnumerable<PortForward> chosen = ParameterSetName switch
            {
                InputObjectSet => InputObject,
                AllSet => ForwardRegistry.All,
                _ => ById(),
            };
            foreach (var f in chosen)
            {
                var what = f.Mode == "Socks"
                    ? string.Format(CultureInfo.InvariantCulture, "forward {0}: SOCKS5 proxy {1} via {2}", f.Id, f.LocalEndpoint, f.Target)
                    : string.Format(CultureInfo.InvariantCulture, "forward {0}: {1} -> {2}:{3}", f.Id, f.LocalEndpoint, f.RemoteHost ?? f.Target, f.RemotePort);
                if (!ShouldProcess(what, "Stop"))
                {
                    continue;
                }
                if (!f.Stop())
                {
                    WriteWarning($"forward {f.Id} did not confirm its end in time; it was freed anyway");
                }
                if (PassThru)
                {
                    WriteObject(f);
                }
            }
        }

        private IEnumerable<PortForward> ById()
        {
            foreach (var id in Id)
            {
                var f = ForwardRegistry.Get(id);
                if (f is null)
                {
                    WriteError(new ErrorRecord(
                        new ItemNotFoundException($"there is no port forward with id {id}"),
                        ErrorCatalog.ForwardNotFound,
                        ErrorCategory.ObjectNotFound,
                        id));
                    continue;
                }
                yield return f;
            }
        }
    }
}
