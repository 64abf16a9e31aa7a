using System;
using System.Diagnostics;

namespace SSMConnect.Tests
{
    /// <summary>The one way the tests run a helper program to its end, and stop a process they started.</summary>
    internal static class Processes
    {
        /// <summary>
        /// Runs <paramref name="file"/> with <paramref name="args"/> (in <paramref name="workingDirectory"/>
        /// when given) to its end and returns its standard output; throws with its standard error when it fails.
        /// </summary>
        internal static string Run(string file, string? workingDirectory, params string[] args)
        {
            var psi = new ProcessStartInfo(file)
            {
                UseShellExecute = false,
                RedirectStandardOutput = true,
                RedirectStandardError = true,
                WorkingDirectory = workingDirectory ?? string.Empty,
            };
            foreach (var a in args)
            {
                psi.ArgumentList.Add(a);
            }
            using var p = Process.Start(psi) ?? throw new InvalidOperationException($"cannot start {file}");
            var stderr = p.StandardError.ReadToEndAsync();
            var stdout = p.StandardOutput.ReadToEnd();
            p.WaitForExit();
            if (p.ExitCode != 0)
            {
                throw new InvalidOperationException($"{file} {string.Join(' ', args)} failed ({p.ExitCode}): {stderr.Result}");
            }
            return stdout;
        }

        /// <summary>Kills <paramref name="p"/> and what it started unless it has exited, waits for it, and disposes it.</summary>
        internal static void Stop(Process? p, int waitMilliseconds = 5000)
        {
            if (p is null)
            {
                return;
            }
            try
            {
                if (!p.HasExited)
                {
                    p.Kill(true);
                    p.WaitForExit(waitMilliseconds);
                }
            }
            catch (InvalidOperationException)
            {
                // It was never started or has gone already.
            }
            p.Dispose();
        }
    }
}
