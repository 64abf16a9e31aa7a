using System;
using System.Diagnostics;
using System.IO;
using System.Text;
using System.Threading;

namespace SSMConnect.Tests
{
    /// <summary>A private OpenSSH server on 127.0.0.1 and a client key it accepts.</summary>
    internal sealed class Sshd : IDisposable
    {
        private const string SshdPath = "/usr/sbin/sshd";
        private readonly Process process;
        private readonly StringBuilder log;

        private Sshd(Process process, int port, string clientKey, string dir, StringBuilder log)
        {
            this.process = process;
            Port = port;
            ClientKey = clientKey;
            Directory = dir;
            this.log = log;
        }

        internal int Port { get; }

        internal string ClientKey { get; }

        internal string Directory { get; }

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

        internal static Sshd Start(string? authorizedKeysFile = null)
        {
            if (!File.Exists(SshdPath))
            {
                throw new FileNotFoundException($"{SshdPath} is missing: install openssh-server (.ci/run does)");
            }
            // sshd refuses to start without its privilege-separation directory.
            System.IO.Directory.CreateDirectory("/run/sshd");
            var dir = System.IO.Directory.CreateTempSubdirectory("ssmc-sshd").FullName;
            var hostKey = Path.Combine(dir, "host_ed25519");
            var clientKey = Path.Combine(dir, "id_ed25519");
            foreach (var key in new[] { hostKey, clientKey })
            {
                Run("ssh-keygen", "-q", "-t", "ed25519", "-N", string.Empty, "-f", key);
            }
            var authorized = authorizedKeysFile;
            if (authorized is null)
            {
                authorized = Path.Combine(dir, "authorized_keys");
                File.Copy(clientKey + ".pub", authorized);
            }

            string last = string.Empty;
            for (var attempt = 0; attempt < 5; attempt++)
            {
                var port = PortForwardTests.FreePort();
                var cfg = Path.Combine(dir, "sshd_config");
                File.WriteAllText(
                    cfg,
                    $"ListenAddress 127.0.0.1\nPort {port}\nHostKey {hostKey}\nPidFile {Path.Combine(dir, "sshd.pid")}\n" +
                    $"AuthorizedKeysFile {authorized}\nStrictModes no\nUsePAM no\nPasswordAuthentication no\n" +
                    "KbdInteractiveAuthentication no\nPermitRootLogin prohibit-password\n");
                var psi = new ProcessStartInfo(SshdPath) { RedirectStandardError = true, RedirectStandardInput = true, UseShellExecute = false };
                foreach (var a in new[] { "-D", "-e", "-f", cfg })
                {
                    psi.ArgumentList.Add(a);
                }
                var p = Process.Start(psi)!;
                var log = new StringBuilder();
                using var ready = new ManualResetEventSlim();
                p.ErrorDataReceived += (_, e) =>
                {
                    if (e.Data is null)
                    {
                        ready.Set();
                        return;
                    }
                    lock (log)
                    {
                        log.AppendLine(e.Data);
                    }
                    if (e.Data.Contains("Server listening on", StringComparison.Ordinal))
                    {
                        ready.Set();
                    }
                };
                p.BeginErrorReadLine();
                ready.Wait(TimeSpan.FromSeconds(20));
                if (!p.HasExited && log.ToString().Contains("Server listening on", StringComparison.Ordinal))
                {
                    return new Sshd(p, port, clientKey, dir, log);
                }
                last = log.ToString();
                if (!p.HasExited)
                {
                    p.Kill();
                }
                p.Dispose();
            }
            throw new InvalidOperationException("sshd did not start: " + last);
        }

        private static void Run(string file, params string[] args)
        {
            var psi = new ProcessStartInfo(file) { UseShellExecute = false, RedirectStandardError = true };
            foreach (var a in args)
            {
                psi.ArgumentList.Add(a);
            }
            using var p = Process.Start(psi)!;
            var err = p.StandardError.ReadToEnd();
            p.WaitForExit();
            if (p.ExitCode != 0)
            {
                throw new InvalidOperationException($"{file} failed ({p.ExitCode}): {err}");
            }
        }

        public void Dispose()
        {
            try
            {
                if (!process.HasExited)
                {
                    process.Kill();
                    process.WaitForExit(5000);
                }
            }
            catch (InvalidOperationException)
            {
            }
            process.Dispose();
            try
            {
                System.IO.Directory.Delete(Directory, true);
            }
            catch (IOException)
            {
            }
        }
    }
}
