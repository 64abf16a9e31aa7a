using System.Collections.Generic;
using System.Linq;

namespace SSMConnect
{
    /// <summary>
    /// The port forwards started in this process and not stopped yet, for
    /// <c>Get-SSMPortForward</c> and <c>Stop-SSMPortForward</c>. Thread-safe.
    /// </summary>
    public static class ForwardRegistry
    {
        private static readonly object Gate = new object();
        private static readonly SortedDictionary<int, PortForward> Forwards = new SortedDictionary<int, PortForward>();

        /// <summary>All registered forwards, by increasing id.</summary>
        public static IReadOnlyList<PortForward> All
        {
            get
            {
                lock (Gate)
                {
                    return Forwards.Values.ToList();
                }
            }
        }

        /// <summary>The forward with <paramref name="id"/>, or null.</summary>
        public static PortForward? Get(int id)
        {
            lock (Gate)
            {
                return Forwards.TryGetValue(id, out var f) ? f : null;
            }
        }

        internal static void Add(PortForward forward)
        {
            lock (Gate)
            {
                Forwards[forward.Id] = forward;
            }
        }

        internal static void Remove(PortForward forward)
        {
            lock (Gate)
            {
                Forwards.Remove(forward.Id);
            }
        }
    }
}
