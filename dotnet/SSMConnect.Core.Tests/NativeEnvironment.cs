using System;
using System.Runtime.InteropServices;

namespace SSMConnect.Tests
{
    /// <summary>
    /// Sets a variable where the native library sees it. On Unix, .NET's own
    /// Environment.SetEnvironmentVariable changes only a managed copy that native getenv never
    /// reads; libc's setenv changes the real one. Only for tests that run one at a time.
    /// </summary>
    internal static class NativeEnvironment
    {
        internal static IDisposable Set(string name, string value)
        {
            var before = Environment.GetEnvironmentVariable(name);
            Apply(name, value);
            return new Restore(name, before);
        }

        private static void Apply(string name, string? value)
        {
            Environment.SetEnvironmentVariable(name, value);
            if (OperatingSystem.IsWindows())
            {
                return; // SetEnvironmentVariableW is what native code reads there.
            }
            var rc = value is null ? unsetenv(name) : setenv(name, value, 1);
            if (rc != 0)
            {
                throw new InvalidOperationException($"setenv({name}) failed");
            }
        }

        [DllImport("libc", SetLastError = true)]
        private static extern int setenv(string name, string value, int overwrite);

        [DllImport("libc", SetLastError = true)]
        private static extern int unsetenv(string name);

        private sealed class Restore : IDisposable
        {
            private readonly string name;
            private readonly string? value;

            internal Restore(string name, string? value)
            {
                this.name = name;
                this.value = value;
            }

            public void Dispose() => Apply(name, value);
        }
    }
}
