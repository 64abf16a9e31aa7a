using System;
using System.Collections.Generic;
using System.Diagnostics;
using System.IO;
using System.Text;
using System.Threading;

namespace SSMConnect.Tests
{
    /// <summary>
    /// A test daemon on loopback, started from a config file in a temporary directory of its own
    /// on a free port (tried again on another one when something else takes the port first);
    /// killed, and its directory removed, on <see cref="Dispose"/>. Its stdout and stderr are kept
    /// in <see cref="Log"/>.
    /// </summary>
    internal abstract class LoopbackDaemon : IDisposable
    {
        private const int Attempts = 5;
        private readonly StringBuilder log = new StringBuilder();
        private readonly string name;
        private Process? process;

        protected LoopbackDaemon(string name)
        {
            this.name = name;
            Directory = System.IO.Directory.CreateTempSubdirectory($"ssmc-{name}-").FullName;
        }

        /// <summary>The daemon's own temporary directory (its config file, keys, pid file).</summary>
        internal string Directory { get; }

        internal int Port { get; private set; }

        /// <summary>What the daemon wrote on stdout and stderr so far.</summary>
        internal string Log
        {
            get
            {
                lock (log)
                {
                    return log.ToString();
                }
            }
        }

        /// <summary>The program to run.</summary>
        protected abstract string Program { get; }

        /// <summary>How long it may take to get ready.</summary>
        protected virtual TimeSpan ReadyTimeout => TimeSpan.FromSeconds(20);

        public void Dispose()
        {
            Processes.Stop(process);
            process = null;
            try
            {
                System.IO.Directory.Delete(Directory, true);
            }
            catch (IOException)
            {
            }
            catch (UnauthorizedAccessException)
            {
            }
        }

        /// <summary>Starts <paramref name="daemon"/>; disposes it (and throws) when it does not get ready.</summary>
        protected static T Launch<T>(T daemon)
            where T : LoopbackDaemon
        {
            try
            {
                if (!File.Exists(daemon.Program))
                {
                    throw new FileNotFoundException($"{daemon.Program} is missing: install {daemon.name} (.ci/run does)", daemon.Program);
                }
                daemon.Prepare();
                daemon.StartOnFreePort();
                return daemon;
            }
            catch
            {
                daemon.Dispose();
                throw;
            }
        }

        /// <summary>Writes the config file for <paramref name="port"/> into <see cref="Directory"/>; returns the arguments that run the daemon in the foreground from it.</summary>
        protected abstract IEnumerable<string> Configure(int port);

        /// <summary>Whether the daemon started on <paramref name="port"/> is ready to serve, judged from its <paramref name="log"/> or by asking it.</summary>
        protected abstract bool IsReady(int port, string log);

        /// <summary>Makes what every attempt uses (keys, say) in <see cref="Directory"/>, once.</summary>
        protected virtual void Prepare()
        {
        }

        private void StartOnFreePort()
        {
            for (var attempt = 0; attempt < Attempts; attempt++)
            {
                var port = Loopback.FreePort();
                var psi = new ProcessStartInfo(Program)
                {
                    UseShellExecute = false,
                    RedirectStandardInput = true,
                    RedirectStandardOutput = true,
                    RedirectStandardError = true,
                };
                foreach (var a in Configure(port))
                {
                    psi.ArgumentList.Add(a);
                }
                var p = Process.Start(psi) ?? throw new InvalidOperationException($"cannot start {Program}");
                p.OutputDataReceived += (_, e) => Append(e.Data);
                p.ErrorDataReceived += (_, e) => Append(e.Data);
                p.BeginOutputReadLine();
                p.BeginErrorReadLine();
                var watch = Stopwatch.StartNew();
                while (watch.Elapsed < ReadyTimeout && !p.HasExited)
                {
                    if (IsReady(port, Log))
                    {
                        Port = port;
                        process = p;
                        return;
                    }
                    Thread.Sleep(50);
                }
                // Most likely it lost the port to another process: try another one.
                Processes.Stop(p);
                Append($"(attempt {attempt + 1} on port {port}: {(watch.Elapsed < ReadyTimeout ? "exited" : "not ready in time")})");
            }
            throw new InvalidOperationException($"{name} did not start: {Log}");
        }

        private void Append(string? line)
        {
            if (line is null)
            {
                return;
            }
            lock (log)
            {
                log.AppendLine(line);
            }
        }
    }
}
