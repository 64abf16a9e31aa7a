using System;
using System.Collections.Generic;
using System.Linq;
using System.Text;
using Xunit;

namespace SSMConnect.Tests
{
    public class SshInvocationTests
    {
        private static SshOptions Options(string helper) => new SshOptions
        {
            SshPath = "/usr/bin/ssh",
            HelperPath = helper,
            Target = "i-0123456789abcdef0",
            User = "ec2-user",
            Port = 2222,
            IdentityFile = "/home/me/my keys/web.pem",
            Command = "uname -a; exit 3",
            Region = "us-east-1",
            Profile = "dev ops",
            EndpointUrl = "http://127.0.0.1:4566/",
            AccessKey = "AKIDEXAMPLE",
            SecretKey = "secret",
            SessionToken = "token-value",
        };

        [Fact]
        public void Arguments_are_an_array_with_each_value_whole()
        {
            var o = Options("/opt/ssm connect/bin/ssmconnect");
            o.SshArguments.Add("-o");
            o.SshArguments.Add("StrictHostKeyChecking=no");
            var inv = SshInvocation.Build(o, windows: false);

            Assert.Equal("/usr/bin/ssh", inv.FileName);
            Assert.Equal(
                new[]
                {
                    "-o", "ProxyCommand=" + inv.ProxyCommand,
                    "-l", "ec2-user",
                    "-p", "2222",
                    "-i", "/home/me/my keys/web.pem",
                    "-o", "StrictHostKeyChecking=no",
                    "i-0123456789abcdef0",
                    "uname -a; exit 3",
                },
                inv.Arguments);
            Assert.Equal(
                "'/opt/ssm connect/bin/ssmconnect' --endpoint-url http://127.0.0.1:4566/ --region us-east-1 --profile 'dev ops' ssh-proxy %r@%h:%p",
                inv.ProxyCommand);
        }

        [Fact]
        public void Shared_files_from_profile_location_reach_the_helper_through_its_environment()
        {
            var o = Options("/x/ssmconnect");
            o.CredentialsFile = "/home/u/creds";
            o.ConfigFile = "/home/u/config";
            var inv = SshInvocation.Build(o, windows: false);
            Assert.Equal("/home/u/creds", inv.Environment["AWS_SHARED_CREDENTIALS_FILE"]);
            Assert.Equal("/home/u/config", inv.Environment["AWS_CONFIG_FILE"]);
            Assert.False(SshInvocation.Build(Options("/x/ssmconnect"), windows: false).Environment.ContainsKey("AWS_SHARED_CREDENTIALS_FILE"));
        }

        [Fact]
        public void Credentials_go_to_the_environment_never_the_arguments()
        {
            var inv = SshInvocation.Build(Options("/x/ssmconnect"), windows: false);
            Assert.Equal("AKIDEXAMPLE", inv.Environment["AWS_ACCESS_KEY_ID"]);
            Assert.Equal("secret", inv.Environment["AWS_SECRET_ACCESS_KEY"]);
            Assert.Equal("token-value", inv.Environment["AWS_SESSION_TOKEN"]);
            Assert.DoesNotContain(inv.Arguments, a => a.Contains("secret", StringComparison.Ordinal) || a.Contains("token-value", StringComparison.Ordinal));
            var psi = inv.ToStartInfo();
            Assert.False(psi.UseShellExecute);
            Assert.Equal(inv.Arguments, psi.ArgumentList);
            Assert.Equal(string.Empty, psi.Arguments);
            Assert.Equal("token-value", psi.Environment["AWS_SESSION_TOKEN"]);
        }

        [Fact]
        public void Windows_quoting_uses_double_quotes()
        {
            var o = Options(@"C:\Program Files\PowerShell\Modules\SSMConnect\0.1.0\bin\runtimes\win-x64\native\ssmconnect.exe");
            o.Profile = null;
            o.EndpointUrl = null;
            var inv = SshInvocation.Build(o, windows: true);
            Assert.Equal(
                "\"C:\\Program Files\\PowerShell\\Modules\\SSMConnect\\0.1.0\\bin\\runtimes\\win-x64\\native\\ssmconnect.exe\" --region us-east-1 ssh-proxy %r@%h:%p",
                inv.ProxyCommand);
            Assert.Equal("\"a\\\\b c\\\\\"", SshInvocation.QuoteWindows("a\\\\b c\\"));
            Assert.Equal("\"say \\\"hi\\\"\"", SshInvocation.QuoteWindows("say \"hi\""));
        }

        [Fact]
        public void Percent_signs_are_doubled_for_ssh()
        {
            var o = Options("/tmp/100%/ssmconnect");
            o.Profile = null;
            o.EndpointUrl = null;
            var inv = SshInvocation.Build(o, windows: false);
            Assert.StartsWith("/tmp/100%%/ssmconnect ", inv.ProxyCommand, StringComparison.Ordinal);
        }

        [Fact]
        public void Instance_Connect_pushes_the_public_half_of_the_identity()
        {
            var o = Options("/x/ssmconnect");
            o.UseInstanceConnect = true;
            var inv = SshInvocation.Build(o, windows: false);
            Assert.Contains("ssh-proxy --ec2ic --public-key '/home/me/my keys/web.pem.pub' %r@%h:%p", inv.ProxyCommand, StringComparison.Ordinal);
            o.IdentityFile = null;
            Assert.Throws<ArgumentException>(() => SshInvocation.Build(o, windows: false));
        }

        [Fact]
        public void Bad_values_are_refused()
        {
            var o = Options("/x/ssmconnect");
            o.Target = "-oProxyCommand=evil";
            Assert.Throws<ArgumentException>(() => SshInvocation.Build(o, windows: false));
            o = Options("/x/ssmconnect");
            o.Port = 70000;
            Assert.Throws<ArgumentException>(() => SshInvocation.Build(o, windows: false));
            o = Options(string.Empty);
            Assert.Throws<ArgumentException>(() => SshInvocation.Build(o, windows: false));
        }

        [Fact]
        public void A_shell_reads_the_proxy_command_back_as_the_intended_words()
        {
            if (OperatingSystem.IsWindows())
            {
                return; // The POSIX quoting is checked by sh; Windows quoting by the cases above.
            }
            var o = Options("/opt/it's a \"dir\"/$HOME/`x`/ssmconnect");
            o.Profile = "p;rm -rf /";
            var inv = SshInvocation.Build(o, windows: false);
            // What ssh does before handing the command to the shell: expand %-tokens.
            var expanded = ExpandPercent(inv.ProxyCommand, "ec2-user", "i-0123456789abcdef0", "2222");
            var words = Processes.Run("/bin/sh", null, "-c", "printf '%s\\n' " + expanded).Split('\n', StringSplitOptions.RemoveEmptyEntries);
            Assert.Equal(
                new[]
                {
                    "/opt/it's a \"dir\"/$HOME/`x`/ssmconnect", "--endpoint-url", "http://127.0.0.1:4566/", "--region", "us-east-1",
                    "--profile", "p;rm -rf /", "ssh-proxy", "ec2-user@i-0123456789abcdef0:2222",
                },
                words);
        }

        private static string ExpandPercent(string s, string r, string h, string p)
        {
            var sb = new StringBuilder();
            for (var i = 0; i < s.Length; i++)
            {
                if (s[i] != '%' || i + 1 >= s.Length)
                {
                    sb.Append(s[i]);
                    continue;
                }
                var c = s[++i];
                sb.Append(c switch
                {
                    '%' => "%",
                    'r' => r,
                    'h' => h,
                    'p' => p,
                    _ => throw new InvalidOperationException("unexpected %" + c),
                });
            }
            return sb.ToString();
        }
    }
}
