using System;
using System.Collections;
using System.Collections.Generic;
using System.Globalization;
using System.Management.Automation;
using System.Management.Automation.Language;

namespace SSMConnect.Completers
{
    /// <summary>Completes <c>-Id</c> of Get-/Stop-SSMPortForward with the forwards of this session.</summary>
    public sealed class ForwardIdCompleter : IArgumentCompleter
    {
        /// <inheritdoc />
        public IEnumerable<CompletionResult> CompleteArgument(string commandName, string parameterName, string wordToComplete, CommandAst commandAst, IDictionary fakeBoundParameters)
        {
            var word = CompletionText.Unquote(wordToComplete);
            foreach (var f in ForwardRegistry.All)
            {
                var id = f.Id.ToString(CultureInfo.InvariantCulture);
                if (id.StartsWith(word, StringComparison.Ordinal))
                {
                    var description = $"{f.LocalEndpoint} -> {f.RemoteHost ?? f.Target}:{f.RemotePort}";
                    yield return new CompletionResult(id, $"{id}  {description}", CompletionResultType.ParameterValue, description);
                }
            }
        }
    }
}
