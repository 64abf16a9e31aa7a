using System;
using System.Collections.Generic;
using System.IO;
using SSMConnect.Native;

namespace SSMConnect
{
    /// <summary>
    /// Finds the bundled helper executable <c>ssmconnect</c>, which the module ships beside the
    /// native library (<c>bin/runtimes/&lt;rid&gt;/native/</c>) and which ssh runs as its ProxyCommand.
    /// </summary>
    public static class HelperLocator
    {
        /// <summary>Environment variable naming the helper executable, overriding the search.</summary>
        public const string OverrideVariable = "SSMCONNECT_HELPER_PATH";

        /// <summary>The helper's file name on this operating system.</summary>
        public static string FileName => OperatingSystem.IsWindows() ? "ssmconnect.exe" : "ssmconnect";

        /// <summary>The helper's full path.</summary>
        /// <exception cref="FileNotFoundException">Not found; the message lists the paths tried.</exception>
        public static string Find()
        {
            var tried = new List<string>();
            foreach (var candidate in Candidates())
            {
                tried.Add(candidate);
                if (File.Exists(candidate))
                {
                    return Path.GetFullPath(candidate);
                }
            }
            throw new FileNotFoundException(
                $"the SSMConnect helper {FileName} was not found. Paths tried:\n  {string.Join("\n  ", tried)}\n" +
                $"Set {OverrideVariable} to its path to use another copy.");
        }

        private static IEnumerable<string> Candidates()
        {
            var overridePath = Environment.GetEnvironmentVariable(OverrideVariable);
            if (!string.IsNullOrWhiteSpace(overridePath))
            {
                yield return Directory.Exists(overridePath) ? Path.Combine(overridePath, FileName) : overridePath;
                yield break;
            }
            if (NativeLibraryLoader.LoadedFrom is string lib && Path.GetDirectoryName(lib) is string libDir)
            {
                yield return Path.Combine(libDir, FileName);
            }
            var native = Environment.GetEnvironmentVariable(NativeLibraryLoader.OverrideVariable);
            if (!string.IsNullOrWhiteSpace(native))
            {
                var dir = Directory.Exists(native) ? native : Path.GetDirectoryName(Path.GetFullPath(native));
                if (dir is not null)
                {
                    yield return Path.Combine(dir, FileName);
                }
            }
            var asmDir = Path.GetDirectoryName(typeof(HelperLocator).Assembly.Location) ?? AppContext.BaseDirectory;
            var rid = NativeLibraryLoader.CurrentRid;
            yield return Path.Combine(asmDir, "runtimes", rid, "native", FileName);
            yield return Path.Combine(asmDir, "..", "runtimes", rid, "native", FileName);
            yield return Path.Combine(asmDir, FileName);
        }
    }
}
