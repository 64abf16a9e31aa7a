using System;
using System.Collections;
using System.Collections.Generic;
using System.Management.Automation;
using System.Management.Automation.Language;

namespace SSMConnect.Completers
{
    /// <summary>Completes <c>-Region</c> with the AWS Regions' names.</summary>
    public sealed class RegionCompleter : IArgumentCompleter
    {
        /// <inheritdoc />
        public IEnumerable<CompletionResult> CompleteArgument(string commandName, string parameterName, string wordToComplete, CommandAst commandAst, IDictionary fakeBoundParameters)
        {
            var word = CompletionText.Unquote(wordToComplete);
            foreach (var region in AwsRegions.Names)
            {
                if (region.StartsWith(word, StringComparison.OrdinalIgnoreCase))
                {
                    yield return new CompletionResult(region, region, CompletionResultType.ParameterValue, region);
                }
            }
        }
    }
}
