using System;
using System.IO;
using System.Text.Json;
using SSMConnect.Native;

namespace SSMConnect.Tests
{
    /// <summary>
    /// Where the cargo-built binaries are. Anything missing throws, so the tests that need it fail
    /// with a message saying what to build; nothing is skipped.
    /// </summary>
    internal static class TestEnvironment
    {
        private static readonly Lazy<string> RepoRootLazy = new Lazy<string>(FindRepoRoot);
        private static readonly Lazy<string> TargetDirLazy = new Lazy<string>(FindTargetDir);
        private static readonly object Gate = new object();

        internal static string RepoRoot => RepoRootLazy.Value;

        /// <summary>cargo's debug output directory.</summary>
        internal static string CargoDebugDir => Path.Combine(TargetDirLazy.Value, "debug");

        internal static string Exe(string name) => OperatingSystem.IsWindows() ? name + ".exe" : name;

        /// <summary>The ssm-emulator binary: SSMCONNECT_EMULATOR, else cargo's debug build.</summary>
        internal static string EmulatorPath
        {
            get
            {
                var path = Environment.GetEnvironmentVariable("SSMCONNECT_EMULATOR");
                if (string.IsNullOrWhiteSpace(path))
                {
                    path = Path.Combine(CargoDebugDir, Exe("ssm-emulator"));
                }
                Require(path, "the emulator", "cargo build -p ssm-emulator (or set SSMCONNECT_EMULATOR)");
                return path;
            }
        }

        /// <summary>The helper: SSMCONNECT_HELPER_PATH, else cargo's debug build.</summary>
        internal static string HelperPath
        {
            get
            {
                var path = Environment.GetEnvironmentVariable(HelperLocator.OverrideVariable);
                if (string.IsNullOrWhiteSpace(path))
                {
                    path = Path.Combine(CargoDebugDir, Exe("ssmconnect"));
                }
                Require(path, "the ssmconnect helper", "cargo build -p ssm-cli (or set SSMCONNECT_HELPER_PATH)");
                return path;
            }
        }

        /// <summary>
        /// Points the loader at cargo's build of the native library unless SSMCONNECT_NATIVE_PATH
        /// already names one, and loads it; throws when it cannot.
        /// </summary>
        internal static void EnsureNativeLibrary()
        {
            lock (Gate)
            {
                var current = Environment.GetEnvironmentVariable(NativeLibraryLoader.OverrideVariable);
                if (string.IsNullOrWhiteSpace(current))
                {
                    var lib = Path.Combine(CargoDebugDir, NativeLibraryLoader.CurrentFileName);
                    Require(lib, "the native library", "cargo build -p ssm-ffi (or set SSMCONNECT_NATIVE_PATH)");
                    Environment.SetEnvironmentVariable(NativeLibraryLoader.OverrideVariable, lib);
                }
                NativeLibraryLoader.Load();
            }
        }

        private static void Require(string path, string what, string howToGet)
        {
            if (!File.Exists(path))
            {
                throw new FileNotFoundException($"{what} is not at {path}: run `{howToGet}` first", path);
            }
        }

        private static string FindRepoRoot()
        {
            var dir = new DirectoryInfo(AppContext.BaseDirectory);
            while (dir is not null)
            {
                if (File.Exists(Path.Combine(dir.FullName, "Cargo.toml")) && Directory.Exists(Path.Combine(dir.FullName, "dotnet")))
                {
                    return dir.FullName;
                }
                dir = dir.Parent;
            }
            throw new DirectoryNotFoundException($"no repository root (Cargo.toml beside dotnet/) above {AppContext.BaseDirectory}");
        }

        private static string FindTargetDir()
        {
            var env = Environment.GetEnvironmentVariable("CARGO_TARGET_DIR");
            if (!string.IsNullOrWhiteSpace(env))
            {
                return Path.GetFullPath(env, RepoRoot);
            }
            string stdout;
            try
            {
                stdout = Processes.Run("cargo", RepoRoot, "metadata", "--format-version", "1", "--no-deps", "--offline");
            }
            catch (InvalidOperationException e)
            {
                throw new InvalidOperationException($"{e.Message}; set CARGO_TARGET_DIR", e);
            }
            using var doc = JsonDocument.Parse(stdout);
            return doc.RootElement.GetProperty("target_directory").GetString()
                ?? throw new InvalidOperationException("`cargo metadata` gave no target_directory");
        }
    }
}
