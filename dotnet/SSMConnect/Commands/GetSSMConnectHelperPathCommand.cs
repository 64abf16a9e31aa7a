using System.IO;
using System.Management.Automation;

namespace SSMConnect.Commands
{
    /// <summary>
    /// <para type="synopsis">Writes the full path of the bundled helper executable, for a ProxyCommand line in ~/.ssh/config.</para>
    /// </summary>
    [Cmdlet(VerbsCommon.Get, "SSMConnectHelperPath")]
    [OutputType(typeof(string))]
    public sealed class GetSSMConnectHelperPathCommand : PSCmdlet
    {
        /// <inheritdoc />
        protected override void EndProcessing()
        {
            try
            {
                WriteObject(HelperLocator.Find());
            }
            catch (FileNotFoundException e)
            {
                ThrowTerminatingError(new ErrorRecord(e, ErrorCatalog.HelperNotFound, ErrorCategory.ObjectNotFound, null));
            }
        }
    }
}
