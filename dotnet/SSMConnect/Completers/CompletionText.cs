using System.Linq;

namespace SSMConnect.Completers
{
    /// <summary>The word being completed, as typed, and completions as they must be typed.</summary>
    internal static class CompletionText
    {
        private static readonly char[] NeedsQuotes = { ' ', '\t', '\'', '"', '$', '`', ';', '(', ')', '{', '}', '@', '#', '&', '|', ',', '<', '>' };

        /// <summary>The word without its surrounding quotes.</summary>
        internal static string Unquote(string? word)
        {
            var w = word ?? string.Empty;
            if (w.Length > 0 && (w[0] == '\'' || w[0] == '"'))
            {
                w = w.Substring(1);
                if (w.Length > 0 && (w[w.Length - 1] == '\'' || w[w.Length - 1] == '"'))
                {
                    w = w.Substring(0, w.Length - 1);
                }
            }
            return w;
        }

        /// <summary>The text in single quotes when PowerShell would read it otherwise.</summary>
        internal static string Quote(string text) =>
            text.Length > 0 && !text.Any(c => NeedsQuotes.Contains(c)) ? text : "'" + text.Replace("'", "''") + "'";
    }
}
