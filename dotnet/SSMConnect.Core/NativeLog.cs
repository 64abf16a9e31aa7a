using System;
using SSMConnect.Native;

namespace SSMConnect
{
    /// <summary>Level of a native log line (the library's numbering).</summary>
    public enum NativeLogLevel
    {
        /// <summary>Capture nothing.</summary>
        Off = 0,

        /// <summary>Errors.</summary>
        Error = 1,

        /// <summary>Warnings.</summary>
        Warn = 2,

        /// <summary>Informational lines.</summary>
        Info = 3,

        /// <summary>Debugging detail.</summary>
        Debug = 4,

        /// <summary>Per-frame detail.</summary>
        Trace = 5,
    }

    /// <summary>
    /// The native library's log lines. Capture is process-wide; the caller drains the queue on
    /// its own thread (PowerShell may write verbose and debug output only from the pipeline thread).
    /// </summary>
    public static class NativeLog
    {
        private static int installed;

        /// <summary>Captures lines up to <paramref name="maxLevel"/> from now on (Off stops capturing).</summary>
        /// <remarks>
        /// The first call with a level other than Off installs the library's capture; until then
        /// Off costs nothing, so it is not passed on. Once installed, only events at the level
        /// asked for are formatted.
        /// </remarks>
        public static void Enable(NativeLogLevel maxLevel)
        {
            if (maxLevel == NativeLogLevel.Off && System.Threading.Volatile.Read(ref installed) == 0)
            {
                return;
            }
            NativeLibraryLoader.Register();
            NativeMethods.ssmc_log_enable((uint)maxLevel);
            if (maxLevel != NativeLogLevel.Off)
            {
                System.Threading.Volatile.Write(ref installed, 1);
            }
        }

        /// <summary>Hands every queued line to <paramref name="sink"/>, oldest first.</summary>
        /// <returns>How many lines were drained.</returns>
        public static int Drain(Action<NativeLogLevel, string> sink)
        {
            if (sink is null)
            {
                throw new ArgumentNullException(nameof(sink));
            }
            NativeLibraryLoader.Register();
            var n = 0;
            while (true)
            {
                var line = NativeText.Owned(NativeMethods.ssmc_log_next(out var level));
                if (line is null)
                {
                    return n;
                }
                n++;
                sink((NativeLogLevel)level, line);
            }
        }
    }
}
