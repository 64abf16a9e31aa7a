using System;
using System.Collections.Generic;
using System.Security.Cryptography;
using System.Text;

namespace SSMConnect
{
    /// <summary>
    /// What <c>-Target</c> completes to: the ids and <c>Name:</c> tags of running instances, from
    /// DescribeInstances with the credentials and region already typed, kept for a short while
    /// so that pressing Tab again does not ask EC2 again.
    /// </summary>
    public static class TargetCompletion
    {
        /// <summary>How long one answer is reused.</summary>
        public static readonly TimeSpan CacheFor = TimeSpan.FromSeconds(60);

        /// <summary>How long completion waits for DescribeInstances.</summary>
        public static readonly TimeSpan Timeout = TimeSpan.FromSeconds(5);

        /// <summary>Instances listed at most.</summary>
        public const int Limit = 1000;

        private static readonly object Gate = new object();
        private static readonly Dictionary<string, (DateTime At, IReadOnlyList<InstanceSummary> Instances)> Cache = new Dictionary<string, (DateTime, IReadOnlyList<InstanceSummary>)>(StringComparer.Ordinal);

        /// <summary>
        /// Completions for <paramref name="word"/> (as typed, quotes removed): instance ids and
        /// <c>Name:value</c> targets that start with it, or whose Name starts with it. Nothing
        /// when EC2 cannot be asked (no credentials, no region, an error): completion never fails.
        /// </summary>
        /// <returns>Pairs of the target text and a description (Name and id).</returns>
        public static IReadOnlyList<(string Text, string Description)> Complete(SsmClientOptions options, string word)
        {
            if (options is null)
            {
                throw new ArgumentNullException(nameof(options));
            }
            word ??= string.Empty;
            IReadOnlyList<InstanceSummary> instances;
            try
            {
                instances = Instances(options);
            }
            catch (SsmException)
            {
                return Array.Empty<(string, string)>();
            }
            catch (DllNotFoundException)
            {
                return Array.Empty<(string, string)>();
            }
            var ids = new List<(string, string)>();
            var names = new List<(string, string)>();
            var seenNames = new HashSet<string>(StringComparer.Ordinal);
            foreach (var i in instances)
            {
                var description = i.Name is null ? i.InstanceId : $"{i.Name} ({i.InstanceId})";
                if (i.InstanceId.StartsWith(word, StringComparison.OrdinalIgnoreCase))
                {
                    ids.Add((i.InstanceId, description));
                }
                if (i.Name is not null)
                {
                    var tag = "Name:" + i.Name;
                    if ((tag.StartsWith(word, StringComparison.OrdinalIgnoreCase) || i.Name.StartsWith(word, StringComparison.OrdinalIgnoreCase))
                        && seenNames.Add(tag))
                    {
                        names.Add((tag, description));
                    }
                }
            }
            names.Sort((a, b) => string.CompareOrdinal(a.Item1, b.Item1));
            ids.Sort((a, b) => string.CompareOrdinal(a.Item1, b.Item1));
            names.AddRange(ids);
            return names;
        }

        /// <summary>Forgets every cached answer.</summary>
        public static void ClearCache()
        {
            lock (Gate)
            {
                Cache.Clear();
            }
        }

        private static IReadOnlyList<InstanceSummary> Instances(SsmClientOptions options)
        {
            // Keyed by a digest of the settings, so that secrets are not kept as keys.
            var key = Convert.ToBase64String(SHA256.HashData(Encoding.UTF8.GetBytes(RequestJson.Serialize(options))));
            lock (Gate)
            {
                if (Cache.TryGetValue(key, out var hit) && DateTime.UtcNow - hit.At < CacheFor)
                {
                    return hit.Instances;
                }
            }
            using var client = new SsmClient(options);
            var listed = client.RunningInstances(Limit, Timeout);
            lock (Gate)
            {
                Cache[key] = (DateTime.UtcNow, listed);
            }
            return listed;
        }
    }
}
