using System;
using System.Collections;
using System.Collections.Generic;
using System.Management.Automation;
using System.Management.Automation.Language;
using System.Management.Automation.Runspaces;

namespace SSMConnect.Completers
{
    /// <summary>
    /// Completes <c>-Target</c> with the ids and <c>Name:</c> tags of running instances
    /// (<see cref="TargetCompletion"/>), asking EC2 with the credential, region and endpoint
    /// parameters already typed on the line, then the session's AWS Tools defaults.
    /// </summary>
    public sealed class TargetCompleter : IArgumentCompleter
    {
        /// <inheritdoc />
        public IEnumerable<CompletionResult> CompleteArgument(string commandName, string parameterName, string wordToComplete, CommandAst commandAst, IDictionary fakeBoundParameters)
        {
            var word = CompletionText.Unquote(wordToComplete);
            SsmClientOptions options;
            try
            {
                options = SSMConnectCmdletBase.BuildClientOptions(Typed(fakeBoundParameters), Variable, ResolvePath);
            }
            catch (ArgumentException)
            {
                yield break;
            }
            foreach (var (text, description) in TargetCompletion.Complete(options, word))
            {
                yield return new CompletionResult(CompletionText.Quote(text), text, CompletionResultType.ParameterValue, description);
            }
        }

        private static SSMConnectCmdletBase.ClientParameters Typed(IDictionary bound) => new SSMConnectCmdletBase.ClientParameters
        {
            ProfileName = Text(bound, "ProfileName"),
            ProfileLocation = Text(bound, "ProfileLocation"),
            Region = Text(bound, "Region"),
            AccessKey = Text(bound, "AccessKey"),
            SecretKey = Text(bound, "SecretKey"),
            SessionToken = Text(bound, "SessionToken"),
            Credential = bound?["Credential"],
            EndpointUrl = Text(bound, "EndpointUrl"),
            DnsServer = Text(bound, "DnsServer"),
        };

        private static string? Text(IDictionary? bound, string name)
        {
            var value = bound?[name];
            var text = (value is PSObject p ? p.BaseObject : value)?.ToString();
            return string.IsNullOrWhiteSpace(text) ? null : text;
        }

        private static object? Variable(string name)
        {
            try
            {
                return Runspace.DefaultRunspace?.SessionStateProxy.PSVariable.GetValue(name);
            }
            catch (PSInvalidOperationException)
            {
                return null;
            }
        }

        private static string ResolvePath(string path)
        {
            try
            {
                return Runspace.DefaultRunspace?.SessionStateProxy.Path.GetUnresolvedProviderPathFromPSPath(path) ?? path;
            }
            catch (PSInvalidOperationException)
            {
                return path;
            }
        }
    }
}
