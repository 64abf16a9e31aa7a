using System;
using System.Collections.Generic;
using System.Diagnostics;
using System.IO;
using System.Text;
using System.Text.Json;
using System.Threading.Tasks;

namespace SSMConnect.Tests
{
    /// <summary>
    /// The ssm-emulator binary on a loopback port. It prints one JSON line with its endpoint and
    /// exits when its stdin closes, which <see cref="Dispose"/> does.
    /// </summary>
    internal sealed class Emulator : IDisposable
    {
        internal const string AccessKey = "AKIDEXAMPLE";
        internal const string SecretKey = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY";
        internal const string Region = "us-east-1";

        private readonly Process process;
        private readonly StringBuilder stderr = new StringBuilder();
        private readonly string? configFile;

        private Emulator(Process process, string endpoint, string? configFile)
        {
            this.process = process;
            Endpoint = endpoint;
            this.configFile = configFile;
        }

        internal string Endpoint { get; }

        internal string Log
        {
            get
            {
                lock (stderr)
                {
                    return stderr.ToString();
                }
            }
        }

        /// <summary>Starts the emulator with <paramref name="args"/>, and with a <c>--config</c> file holding <paramref name="config"/> when given.</summary>
        internal static Emulator Start(object? config = null, params string[] args)
        {
            string? configFile = null;
            var psi = new ProcessStartInfo(TestEnvironment.EmulatorPath)
            {
                RedirectStandardInput = true,
                RedirectStandardOutput = true,
                RedirectStandardError = true,
                UseShellExecute = false,
            };
            if (config is not null)
            {
                configFile = Path.Combine(Path.GetTempPath(), $"ssmc-emu-{Guid.NewGuid():N}.json");
                File.WriteAllText(configFile, JsonSerializer.Serialize(config));
                psi.ArgumentList.Add("--config");
                psi.ArgumentList.Add(configFile);
            }
            foreach (var a in args)
            {
                psi.ArgumentList.Add(a);
            }
            var p = Process.Start(psi) ?? throw new InvalidOperationException("cannot start the emulator");
            var lineTask = p.StandardOutput.ReadLineAsync();
            if (!lineTask.Wait(TimeSpan.FromSeconds(30)) || lineTask.Result is null)
            {
                var err = p.HasExited ? p.StandardError.ReadToEnd() : "(still running)";
                Processes.Stop(p);
                throw new InvalidOperationException($"the emulator printed no endpoint line; stderr: {err}");
            }
            using var doc = JsonDocument.Parse(lineTask.Result);
            var endpoint = doc.RootElement.GetProperty("endpoint").GetString() ?? throw new InvalidOperationException("no endpoint");
            var emu = new Emulator(p, endpoint, configFile);
            p.ErrorDataReceived += (_, e) =>
            {
                if (e.Data is not null)
                {
                    lock (emu.stderr)
                    {
                        emu.stderr.AppendLine(e.Data);
                    }
                }
            };
            p.BeginErrorReadLine();
            return emu;
        }

        /// <summary>The sessions the emulator has seen: (session id, target, ended).</summary>
        internal async Task<List<(string Id, string Target, bool Ended)>> Sessions()
        {
            using var http = new System.Net.Http.HttpClient();
            var json = await http.GetStringAsync(Endpoint.TrimEnd('/') + "/_emulator/sessions").ConfigureAwait(false);
            using var doc = JsonDocument.Parse(json);
            var list = new List<(string, string, bool)>();
            foreach (var s in doc.RootElement.EnumerateArray())
            {
                list.Add((s.GetProperty("session_id").GetString() ?? string.Empty, s.GetProperty("target").GetString() ?? string.Empty, s.GetProperty("ended").GetBoolean()));
            }
            return list;
        }

        /// <summary>Waits up to 10 s for every session the emulator has seen to have ended.</summary>
        internal async Task<bool> AllSessionsEnded()
        {
            var watch = Stopwatch.StartNew();
            while (watch.Elapsed < TimeSpan.FromSeconds(10))
            {
                var sessions = await Sessions().ConfigureAwait(false);
                if (sessions.TrueForAll(s => s.Ended))
                {
                    return true;
                }
                await Task.Delay(100).ConfigureAwait(false);
            }
            return false;
        }

        internal SsmClientOptions ClientOptions() => new SsmClientOptions
        {
            EndpointUrl = Endpoint,
            Region = Region,
            AccessKey = AccessKey,
            SecretKey = SecretKey,
        };

        public void Dispose()
        {
            // It exits when its stdin closes; killed only when it does not.
            try
            {
                process.StandardInput.Close();
                process.WaitForExit(10_000);
            }
            catch (InvalidOperationException)
            {
            }
            catch (IOException)
            {
            }
            Processes.Stop(process);
            if (configFile is not null)
            {
                File.Delete(configFile);
            }
        }
    }
}
