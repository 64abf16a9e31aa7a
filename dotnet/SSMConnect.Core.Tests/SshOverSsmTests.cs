using System;
using System.Diagnostics;
using System.IO;
using System.Threading.Tasks;
using Xunit;

namespace SSMConnect.Tests
{
    /// <summary>
    /// The invocation Start-SSMSshSession builds, run for real: the system ssh, the helper from a
    /// directory whose name has a space as ProxyCommand, the emulator, and a private sshd.
    /// </summary>
    [Collection(NativeCollection.Name)]
    public class SshOverSsmTests
    {
        [Fact]
        public async Task Ssh_through_the_helper_runs_the_command_and_returns_its_exit_code()
        {
            if (OperatingSystem.IsWindows())
            {
                return; // The loopback sshd of this test is Unix-only; the Pester suite covers Windows.
            }
            using var sshd = Sshd.Start();
            using var emu = Emulator.Start(null, "--port-map", $"22={sshd.Port}");
            var options = Options(sshd, emu, "echo hello-from-sshd; exit 7");
            var (code, stdout, diag) = await Run(options, sshd, emu);
            Assert.True(stdout == "hello-from-sshd\n", $"stdout: {stdout}\n{diag}");
            Assert.True(code == 7, $"exit {code}\n{diag}");
        }

        [Fact]
        public async Task Instance_Connect_pushes_the_key_that_sshd_then_accepts()
        {
            if (OperatingSystem.IsWindows())
            {
                return;
            }
            var keys = Path.Combine(Path.GetTempPath(), $"ssmc-ec2ic-{Guid.NewGuid():N}");
            try
            {
                // sshd accepts only what the emulator's EC2 Instance Connect wrote for this login.
                using var sshd = Sshd.Start(authorizedKeysFile: keys);
                var config = new
                {
                    inventory = new[]
                    {
                        new { instance_id = "i-0123456789abcdef0", port_map = new System.Collections.Generic.Dictionary<string, int> { ["22"] = sshd.Port } },
                    },
                    authorized_keys = keys,
                };
                using var emu = Emulator.Start(config);
                var options = Options(sshd, emu, "exit 5");
                options.UseInstanceConnect = true;
                var (code, _, diag) = await Run(options, sshd, emu, new System.Collections.Generic.Dictionary<string, string>
                {
                    ["AWS_ENDPOINT_URL_EC2"] = emu.Endpoint,
                    ["AWS_ENDPOINT_URL_EC2_INSTANCE_CONNECT"] = emu.Endpoint,
                });
                Assert.True(code == 5, $"exit {code}\n{diag}");
            }
            finally
            {
                File.Delete(keys);
            }
        }

        [System.Runtime.Versioning.UnsupportedOSPlatform("windows")]
        private static SshOptions Options(Sshd sshd, Emulator emu, string command)
        {
            var helperDir = Path.Combine(sshd.Directory, "helper dir");
            Directory.CreateDirectory(helperDir);
            var helper = Path.Combine(helperDir, "ssmconnect");
            if (!File.Exists(helper))
            {
                File.Copy(TestEnvironment.HelperPath, helper);
                File.SetUnixFileMode(helper, File.GetUnixFileMode(TestEnvironment.HelperPath));
            }
            var options = new SshOptions
            {
                SshPath = SshInvocation.FindSsh() ?? throw new FileNotFoundException("no ssh on PATH: install openssh-client"),
                HelperPath = helper,
                Target = "i-0123456789abcdef0",
                User = Environment.UserName,
                IdentityFile = sshd.ClientKey,
                Command = command,
                Region = Emulator.Region,
                EndpointUrl = emu.Endpoint,
                AccessKey = Emulator.AccessKey,
                SecretKey = Emulator.SecretKey,
            };
            foreach (var a in new[]
            {
                "-n", "-F", "/dev/null", "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
                "-o", "BatchMode=yes", "-o", "IdentitiesOnly=yes", "-o", "LogLevel=ERROR",
            })
            {
                options.SshArguments.Add(a);
            }
            return options;
        }

        private static async Task<(int Code, string Stdout, string Diagnostics)> Run(
            SshOptions options, Sshd sshd, Emulator emu, System.Collections.Generic.IDictionary<string, string>? env = null)
        {
            var psi = SshInvocation.Build(options).ToStartInfo();
            psi.RedirectStandardOutput = true;
            psi.RedirectStandardError = true;
            foreach (var kv in env ?? new System.Collections.Generic.Dictionary<string, string>())
            {
                psi.Environment[kv.Key] = kv.Value;
            }
            using var p = Process.Start(psi)!;
            var stderrTask = p.StandardError.ReadToEndAsync();
            var stdout = await p.StandardOutput.ReadToEndAsync();
            using var cts = new System.Threading.CancellationTokenSource(TimeSpan.FromSeconds(60));
            await p.WaitForExitAsync(cts.Token);
            var diag = $"stderr: {await stderrTask}\nsshd: {sshd.Log}\nemulator: {emu.Log}";
            return (p.ExitCode, stdout, diag);
        }
    }
}
