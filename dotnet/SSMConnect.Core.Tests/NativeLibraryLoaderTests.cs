using System;
using System.IO;
using System.Runtime.InteropServices;
using SSMConnect.Native;
using Xunit;

namespace SSMConnect.Tests
{
    public class NativeLibraryLoaderTests
    {
        [Fact]
        public void Module_layout_paths_come_in_order()
        {
            var asm = Path.Combine(Path.GetTempPath(), "mod", "bin");
            var list = NativeLibraryLoader.CandidatePaths(null, asm, "linux-x64", "libssmconnect_native.so");
            Assert.Equal(
                new string?[]
                {
                    Path.Combine(asm, "runtimes", "linux-x64", "native", "libssmconnect_native.so"),
                    Path.Combine(Path.GetTempPath(), "mod", "runtimes", "linux-x64", "native", "libssmconnect_native.so"),
                    Path.Combine(asm, "libssmconnect_native.so"),
                    null,
                },
                list);
        }

        [Fact]
        public void An_override_is_the_only_candidate_and_may_name_a_directory_or_a_file()
        {
            var dir = Directory.CreateTempSubdirectory("ssmc-loader").FullName;
            try
            {
                Assert.Equal(new string?[] { Path.Combine(dir, "ssmconnect_native.dll") }, NativeLibraryLoader.CandidatePaths(dir, "/x", "win-x64", "ssmconnect_native.dll"));
                var file = Path.Combine(dir, "custom.so");
                Assert.Equal(new string?[] { file }, NativeLibraryLoader.CandidatePaths(file, "/x", "linux-x64", "libssmconnect_native.so"));
            }
            finally
            {
                Directory.Delete(dir, true);
            }
        }

        [Fact]
        public void A_failure_lists_every_path_tried_and_why()
        {
            var dir = Directory.CreateTempSubdirectory("ssmc-loader").FullName;
            try
            {
                var notALibrary = Path.Combine(dir, "runtimes", "linux-x64", "native", "libssmconnect_native.so");
                Directory.CreateDirectory(Path.GetDirectoryName(notALibrary)!);
                File.WriteAllText(notALibrary, "not a shared library");
                var missing = Path.Combine(dir, "nothing-here.so");
                var e = Assert.Throws<DllNotFoundException>(() => NativeLibraryLoader.LoadFrom(new[] { missing, notALibrary }, out _));
                Assert.Contains(missing + ": no such file", e.Message, StringComparison.Ordinal);
                Assert.Contains(notALibrary + ": ", e.Message, StringComparison.Ordinal);
                Assert.Contains(NativeLibraryLoader.OverrideVariable, e.Message, StringComparison.Ordinal);
            }
            finally
            {
                Directory.Delete(dir, true);
            }
        }

        [Fact]
        public void Runtime_ids_and_file_names_follow_the_platform()
        {
            Assert.Equal("linux-x64", NativeLibraryLoader.RidFor(NativeLibraryLoader.Os.Linux, Architecture.X64));
            Assert.Equal("linux-arm64", NativeLibraryLoader.RidFor(NativeLibraryLoader.Os.Linux, Architecture.Arm64));
            Assert.Equal("osx-arm64", NativeLibraryLoader.RidFor(NativeLibraryLoader.Os.MacOs, Architecture.Arm64));
            Assert.Equal("osx-x64", NativeLibraryLoader.RidFor(NativeLibraryLoader.Os.MacOs, Architecture.X64));
            Assert.Equal("win-x64", NativeLibraryLoader.RidFor(NativeLibraryLoader.Os.Windows, Architecture.X64));
            Assert.Equal("win-arm64", NativeLibraryLoader.RidFor(NativeLibraryLoader.Os.Windows, Architecture.Arm64));
            Assert.Equal("libssmconnect_native.so", NativeLibraryLoader.FileNameFor(NativeLibraryLoader.Os.Linux));
            Assert.Equal("libssmconnect_native.dylib", NativeLibraryLoader.FileNameFor(NativeLibraryLoader.Os.MacOs));
            Assert.Equal("ssmconnect_native.dll", NativeLibraryLoader.FileNameFor(NativeLibraryLoader.Os.Windows));
        }
    }
}
