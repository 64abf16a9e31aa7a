using System;
using System.Linq;
using System.Management.Automation;

namespace SSMConnect.Commands
{
    /// <summary>
    /// <para type="synopsis">Lists the port forwards started in this session and not stopped yet.</para>
    /// </summary>
    [Cmdlet(VerbsCommon.Get, "SSMPortForward", DefaultParameterSetName = AllSet)]
    [OutputType(typeof(PortForward))]
    public sealed class GetSSMPortForwardCommand : PSCmdlet
    {
        private const string AllSet = "All";
        private const string IdSet = "Id";

        /// <summary>Forward ids (the Id property).</summary>
        [Parameter(Mandatory = true, Position = 0, ParameterSetName = IdSet, ValueFromPipelineByPropertyName = true)]
        [ValidateNotNullOrEmpty]
        [ArgumentCompleter(typeof(Completers.ForwardIdCompleter))]
        public int[] Id { get; set; } = Array.Empty<int>();

        /// <summary>Only forwards whose target matches one of these wildcard patterns.</summary>
        [Parameter(ParameterSetName = AllSet)]
        [SupportsWildcards]
        [ValidateNotNullOrEmpty]
        public string[]? Target { get; set; }

        /// <inheritdoc />
        protected override void ProcessRecord()
        {
            if (ParameterSetName == IdSet)
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
                    WriteObject(f);
                }
                return;
            }
            var patterns = Target?.Select(t => new WildcardPattern(t, WildcardOptions.IgnoreCase)).ToList();
            foreach (var f in ForwardRegistry.All)
            {
                if (patterns is null || patterns.Any(p => p.IsMatch(f.Target)))
                {
                    WriteObject(f);
                }
            }
        }
    }
}
