using System;
using System.Collections.Generic;
using System.IO;
using System.Reflection;
using System.Runtime.InteropServices;
using System.Text;

namespace SSMConnect.Native
{
    /// <summary>
    /// Finds and loads the native library <c>ssmconnect_native</c> for the P/Invoke declarations in
    /// <see cref="NativeMethods"/>, from the places a build or the module layout puts it.
    /// </summary>
    /// <remarks>
    /// Search order: the file or directory named by <see cref="OverrideVariable"/> (and nothing
    /// else when it is set, so a wrong override is reported rather than silently bypassed);
    /// <c>&lt;assembly dir&gt;/runtimes/&lt;rid&gt;/native/</c>;
    /// <c>&lt;assembly dir&gt;/../runtimes/&lt;rid&gt;/native/</c>;
    /// <c>&lt;assembly dir&gt;</c>; then the runtime's default probing. A failure throws
    /// <see cref="DllNotFoundException"/> listing every path tried and why each failed.
    /// </remarks>
    public static class NativeLibraryLoader
    {
        /// <summary>Environment variable naming the native library file, or a directory holding it.</summary>
        public const string OverrideVariable = "SSMCONNECT_NATIVE_PATH";

        /// <summary>The library name the P/Invoke declarations use.</summary>
        public const string LibraryName = NativeMethods.NativeLib;

        private static readonly object Gate = new object();
        private static bool registered;
        private static IntPtr loaded;

        /// <summary>The runtime identifier of this process: <c>linux-x64</c>, <c>osx-arm64</c>, <c>win-x64</c>, …</summary>
        public static string CurrentRid => RidFor(CurrentOs(), RuntimeInformation.ProcessArchitecture);

        /// <summary>The native library's file name on this operating system.</summary>
        public static string CurrentFileName => FileNameFor(CurrentOs());

        /// <summary>
        /// Installs the resolver for <see cref="LibraryName"/> on the assembly holding
        /// <see cref="NativeMethods"/>. Idempotent and cheap; every entry point of this assembly
        /// calls it before its first native call.
        /// </summary>
        public static void Register()
        {
            lock (Gate)
            {
                if (registered)
                {
                    return;
                }
                NativeLibrary.SetDllImportResolver(typeof(NativeMethods).Assembly, Resolve);
                registered = true;
            }
        }

        /// <summary>
        /// Registers the resolver and loads the library now, so that a missing or broken library
        /// is reported at module import rather than at the first cmdlet.
        /// </summary>
        /// <returns>The path the library was loaded from ("default search" when the runtime found it).</returns>
        /// <exception cref="DllNotFoundException">No candidate loaded; the message lists them all.</exception>
        public static string Load()
        {
            Register();
            lock (Gate)
            {
                if (loaded == IntPtr.Zero)
                {
                    loaded = LoadFrom(CandidatePaths(
                        Environment.GetEnvironmentVariable(OverrideVariable),
                        AssemblyDirectory(),
                        CurrentRid,
                        CurrentFileName), out var from);
                    LoadedFrom = from;
                }
                return LoadedFrom ?? "default search";
            }
        }

        /// <summary>Where the library was loaded from, once it was.</summary>
        public static string? LoadedFrom { get; private set; }

        private static IntPtr Resolve(string libraryName, Assembly assembly, DllImportSearchPath? searchPath)
        {
            if (!string.Equals(libraryName, LibraryName, StringComparison.Ordinal))
            {
                return IntPtr.Zero;
            }
            Load();
            return loaded;
        }

        private static string AssemblyDirectory()
        {
            var location = typeof(NativeLibraryLoader).Assembly.Location;
            return string.IsNullOrEmpty(location)
                ? AppContext.BaseDirectory
                : Path.GetDirectoryName(location) ?? AppContext.BaseDirectory;
        }

        /// <summary>
        /// The files to try, in order. <c>null</c> stands for the runtime's default search.
        /// </summary>
        /// <param name="overrideValue">Value of <see cref="OverrideVariable"/>, or null/empty when unset.</param>
        /// <param name="assemblyDirectory">Directory of the managed assembly.</param>
        /// <param name="rid">Runtime identifier, e.g. <c>linux-x64</c>.</param>
        /// <param name="fileName">Library file name, e.g. <c>libssmconnect_native.so</c>.</param>
        public static IReadOnlyList<string?> CandidatePaths(string? overrideValue, string assemblyDirectory, string rid, string fileName)
        {
            if (!string.IsNullOrWhiteSpace(overrideValue))
            {
                var full = Path.GetFullPath(overrideValue);
                return new string?[] { Directory.Exists(full) ? Path.Combine(full, fileName) : full };
            }
            var dir = Path.GetFullPath(assemblyDirectory);
            var parent = Path.GetDirectoryName(dir.TrimEnd(Path.DirectorySeparatorChar, Path.AltDirectorySeparatorChar)) ?? dir;
            return new string?[]
            {
                Path.Combine(dir, "runtimes", rid, "native", fileName),
                Path.Combine(parent, "runtimes", rid, "native", fileName),
                Path.Combine(dir, fileName),
                null,
            };
        }

        /// <summary>
        /// Loads the first candidate that loads.
        /// </summary>
        /// <param name="candidates">From <see cref="CandidatePaths"/>.</param>
        /// <param name="loadedFrom">The path that loaded; null for the default search.</param>
        /// <exception cref="DllNotFoundException">None loaded; the message lists each with the reason.</exception>
        public static IntPtr LoadFrom(IReadOnlyList<string?> candidates, out string? loadedFrom)
        {
            var tried = new StringBuilder();
            foreach (var path in candidates)
            {
                if (path is null)
                {
                    if (NativeLibrary.TryLoad(LibraryName, typeof(NativeMethods).Assembly, null, out var found))
                    {
                        loadedFrom = null;
                        return found;
                    }
                    tried.Append("\n  (default search for \"").Append(LibraryName).Append("\"): not found");
                    continue;
                }
                if (!File.Exists(path))
                {
                    tried.Append("\n  ").Append(path).Append(": no such file");
                    continue;
                }
                try
                {
                    var handle = NativeLibrary.Load(path);
                    loadedFrom = path;
                    return handle;
                }
                catch (Exception e) when (e is DllNotFoundException || e is BadImageFormatException)
                {
                    tried.Append("\n  ").Append(path).Append(": ").Append(e.Message);
                }
            }
            throw new DllNotFoundException(
                $"SSMConnect could not load its native library ({FileNameFor(CurrentOs())}, {CurrentRid}). " +
                $"Paths tried:{tried}\nSet {OverrideVariable} to the library file or its directory to use another copy.");
        }

        internal enum Os
        {
            Linux,
            MacOs,
            Windows,
        }

        internal static Os CurrentOs()
        {
            if (RuntimeInformation.IsOSPlatform(OSPlatform.Windows))
            {
                return Os.Windows;
            }
            if (RuntimeInformation.IsOSPlatform(OSPlatform.OSX))
            {
                return Os.MacOs;
            }
            return Os.Linux;
        }

        internal static string RidFor(Os os, Architecture arch)
        {
            var prefix = os switch
            {
                Os.Windows => "win",
                Os.MacOs => "osx",
                _ => "linux",
            };
            var suffix = arch switch
            {
                Architecture.X64 => "x64",
                Architecture.Arm64 => "arm64",
                Architecture.X86 => "x86",
                Architecture.Arm => "arm",
                _ => arch.ToString().ToLowerInvariant(),
            };
            return prefix + "-" + suffix;
        }

        internal static string FileNameFor(Os os) => os switch
        {
            Os.Windows => "ssmconnect_native.dll",
            Os.MacOs => "libssmconnect_native.dylib",
            _ => "libssmconnect_native.so",
        };
    }
}
