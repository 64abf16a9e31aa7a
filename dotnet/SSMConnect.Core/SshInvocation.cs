using System;
using System.Collections.Generic;
using System.Diagnostics;
using System.IO;
using System.Text;

namespace SSMConnect
{
    /// <summary>What <c>Start-SSMSshSession</c> runs ssh with.</summary>
    public sealed class SshOptions
    {
        /// <summary>The ssh client (<c>ssh</c>, <c>ssh.exe</c> or a full path).</summary>
        public string SshPath { get; set; } = "ssh";

        /// <summary>Full path of the bundled helper <c>ssmconnect</c>, used as the ProxyCommand.</summary>
        public string HelperPath { get; set; } = string.Empty;

        /// <summary>Instance id, tag, address or DNS name; ssh's host name (<c>%h</c>).</summary>
        public string Target { get; set; } = string.Empty;

        /// <summary>Remote user (<c>-l</c>); ssh's default when null.</summary>
        public string? User { get; set; }

        /// <summary>SSH port on the target (<c>-p</c>); ssh's default (22) when null.</summary>
        public int? Port { get; set; }

        /// <summary>Private key (<c>-i</c>).</summary>
        public string? IdentityFile { get; set; }

        /// <summary>OpenSSH certificate for the key (ssh's <c>CertificateFile</c>).</summary>
        public string? CertificateFile { get; set; }

        /// <summary>Session document of the SSH session; the helper's default (<c>AWS-StartSSHSession</c>) when null.</summary>
        public string? Document { get; set; }

        /// <summary>StartSession's Reason for the helper's session.</summary>
        public string? Reason { get; set; }

        /// <summary>Push the public half of <see cref="IdentityFile"/> with EC2 Instance Connect first.</summary>
        public bool UseInstanceConnect { get; set; }

        /// <summary>The public key pushed with Instance Connect; default <see cref="IdentityFile"/> + <c>.pub</c>.</summary>
        public string? PublicKeyFile { get; set; }

        /// <summary>Remote command; an interactive login when null.</summary>
        public string? Command { get; set; }

        /// <summary>More ssh arguments, placed before the host name (e.g. <c>-o</c>, <c>StrictHostKeyChecking=no</c>).</summary>
        public IList<string> SshArguments { get; } = new List<string>();

        /// <summary>AWS region for the helper.</summary>
        public string? Region { get; set; }

        /// <summary>AWS profile for the helper.</summary>
        public string? Profile { get; set; }

        /// <summary>SSM endpoint for the helper.</summary>
        public string? EndpointUrl { get; set; }

        /// <summary>DNS server (<c>ADDR:PORT</c>) the helper resolves DNS-name targets with.</summary>
        public string? DnsServer { get; set; }

        /// <summary>Explicit credentials; given to the helper through its environment, never its arguments.</summary>
        public string? AccessKey { get; set; }

        /// <summary>Explicit secret key (environment only).</summary>
        public string? SecretKey { get; set; }

        /// <summary>Explicit session token (environment only).</summary>
        public string? SessionToken { get; set; }

        /// <summary>Shared credentials file for the helper (<c>AWS_SHARED_CREDENTIALS_FILE</c>).</summary>
        public string? CredentialsFile { get; set; }

        /// <summary>Shared config file for the helper (<c>AWS_CONFIG_FILE</c>).</summary>
        public string? ConfigFile { get; set; }
    }

    /// <summary>
    /// The ssh process to start: a file name, an argument array (never one escaped command line;
    /// it goes to <see cref="ProcessStartInfo.ArgumentList"/>) and environment additions.
    /// </summary>
    /// <remarks>
    /// The one string that is parsed again is the ProxyCommand value, which ssh runs through the
    /// user's shell on Unix (<c>exec …</c>) and splits like a Windows command line on Windows; the
    /// helper path and every value in it are quoted for that, and <c>%</c> is doubled because ssh
    /// expands <c>%</c> tokens in it.
    /// </remarks>
    public sealed class SshInvocation
    {
        private SshInvocation(string fileName, IReadOnlyList<string> arguments, IReadOnlyDictionary<string, string> environment, string proxyCommand)
        {
            FileName = fileName;
            Arguments = arguments;
            Environment = environment;
            ProxyCommand = proxyCommand;
        }

        /// <summary>The ssh executable.</summary>
        public string FileName { get; }

        /// <summary>ssh's arguments, one element each.</summary>
        public IReadOnlyList<string> Arguments { get; }

        /// <summary>Variables to add to ssh's environment (ssh passes them on to the ProxyCommand).</summary>
        public IReadOnlyDictionary<string, string> Environment { get; }

        /// <summary>The ProxyCommand value given to ssh.</summary>
        public string ProxyCommand { get; }

        /// <summary>Builds the invocation for this operating system.</summary>
        /// <exception cref="ArgumentException">A required value is missing or unusable.</exception>
        public static SshInvocation Build(SshOptions options) => Build(options, OperatingSystem.IsWindows());

        /// <summary>Builds the invocation, quoting the ProxyCommand for Windows or for a Unix shell.</summary>
        /// <exception cref="ArgumentException">A required value is missing or unusable.</exception>
        public static SshInvocation Build(SshOptions options, bool windows)
        {
            if (options is null)
            {
                throw new ArgumentNullException(nameof(options));
            }
            if (string.IsNullOrWhiteSpace(options.Target))
            {
                throw new ArgumentException("no target", nameof(options));
            }
            if (options.Target.StartsWith("-", StringComparison.Ordinal))
            {
                throw new ArgumentException($"the target {options.Target} looks like an option", nameof(options));
            }
            if (string.IsNullOrWhiteSpace(options.HelperPath))
            {
                throw new ArgumentException("no helper path", nameof(options));
            }
            if (options.Port is int p && (p < 1 || p > 65535))
            {
                throw new ArgumentException($"port {p} is out of range", nameof(options));
            }

            var proxy = new List<string> { options.HelperPath };
            AddPair(proxy, "--endpoint-url", options.EndpointUrl);
            AddPair(proxy, "--region", options.Region);
            AddPair(proxy, "--profile", options.Profile);
            AddPair(proxy, "--dns-server", options.DnsServer);
            AddPair(proxy, "--reason", options.Reason);
            proxy.Add("ssh-proxy");
            AddPair(proxy, "--document", options.Document);
            if (options.UseInstanceConnect)
            {
                var pub = options.PublicKeyFile;
                if (string.IsNullOrWhiteSpace(pub))
                {
                    if (string.IsNullOrWhiteSpace(options.IdentityFile))
                    {
                        throw new ArgumentException("EC2 Instance Connect needs an identity file (its public half is pushed)", nameof(options));
                    }
                    pub = options.IdentityFile + ".pub";
                }
                proxy.Add("--ec2ic");
                proxy.Add("--public-key");
                proxy.Add(pub!);
            }

            var command = new StringBuilder();
            foreach (var word in proxy)
            {
                command.Append(windows ? QuoteWindows(EscapePercent(word)) : QuotePosix(EscapePercent(word))).Append(' ');
            }
            // ssh fills in the user, host and port; they stay unquoted so that ssh expands them.
            command.Append("%r@%h:%p");
            var proxyCommand = command.ToString();

            var args = new List<string> { "-o", "ProxyCommand=" + proxyCommand };
            if (!string.IsNullOrWhiteSpace(options.User))
            {
                args.Add("-l");
                args.Add(options.User!);
            }
            if (options.Port is int port)
            {
                args.Add("-p");
                args.Add(port.ToString(System.Globalization.CultureInfo.InvariantCulture));
            }
            if (!string.IsNullOrWhiteSpace(options.IdentityFile))
            {
                args.Add("-i");
                args.Add(options.IdentityFile!);
            }
            if (!string.IsNullOrWhiteSpace(options.CertificateFile))
            {
                if (options.CertificateFile!.IndexOf('"') >= 0)
                {
                    throw new ArgumentException($"the certificate file name {options.CertificateFile} holds a double quote, which an ssh option value cannot carry", nameof(options));
                }
                // ssh parses an -o value as a config line: a path with blanks goes in double quotes.
                var cert = options.CertificateFile.IndexOfAny(new[] { ' ', '\t' }) >= 0 ? "\"" + options.CertificateFile + "\"" : options.CertificateFile;
                args.Add("-o");
                args.Add("CertificateFile=" + cert);
            }
            args.AddRange(options.SshArguments);
            args.Add(options.Target);
            if (!string.IsNullOrEmpty(options.Command))
            {
                args.Add(options.Command!);
            }

            var env = new Dictionary<string, string>(StringComparer.Ordinal);
            AddEnv(env, "AWS_ACCESS_KEY_ID", options.AccessKey);
            AddEnv(env, "AWS_SECRET_ACCESS_KEY", options.SecretKey);
            AddEnv(env, "AWS_SESSION_TOKEN", options.SessionToken);
            AddEnv(env, "AWS_SHARED_CREDENTIALS_FILE", options.CredentialsFile);
            AddEnv(env, "AWS_CONFIG_FILE", options.ConfigFile);
            return new SshInvocation(options.SshPath, args, env, proxyCommand);
        }

        /// <summary>A start info with <see cref="ProcessStartInfo.ArgumentList"/> filled in and no shell.</summary>
        public ProcessStartInfo ToStartInfo()
        {
            var psi = new ProcessStartInfo(FileName) { UseShellExecute = false };
            foreach (var a in Arguments)
            {
                psi.ArgumentList.Add(a);
            }
            foreach (var kv in Environment)
            {
                psi.Environment[kv.Key] = kv.Value;
            }
            return psi;
        }

        /// <summary>
        /// The ssh client to run: <paramref name="explicitPath"/> when given, else the first
        /// <c>ssh</c> (<c>ssh.exe</c> on Windows) on PATH, else Windows' own OpenSSH.
        /// </summary>
        /// <returns>The path, or null when there is none.</returns>
        public static string? FindSsh(string? explicitPath = null)
        {
            if (!string.IsNullOrWhiteSpace(explicitPath))
            {
                return File.Exists(explicitPath) ? Path.GetFullPath(explicitPath) : null;
            }
            var name = OperatingSystem.IsWindows() ? "ssh.exe" : "ssh";
            var path = System.Environment.GetEnvironmentVariable("PATH") ?? string.Empty;
            foreach (var dir in path.Split(Path.PathSeparator, StringSplitOptions.RemoveEmptyEntries))
            {
                var candidate = Path.Combine(dir.Trim('"'), name);
                if (File.Exists(candidate))
                {
                    return candidate;
                }
            }
            if (OperatingSystem.IsWindows())
            {
                var system = System.Environment.GetFolderPath(System.Environment.SpecialFolder.System);
                var builtIn = Path.Combine(system, "OpenSSH", "ssh.exe");
                if (File.Exists(builtIn))
                {
                    return builtIn;
                }
            }
            return null;
        }

        /// <summary>Quotes a word for a POSIX shell: bare when safe, else in single quotes.</summary>
        public static string QuotePosix(string word)
        {
            if (word.Length > 0 && IsSafe(word))
            {
                return word;
            }
            return "'" + word.Replace("'", "'\\''") + "'";
        }

        /// <summary>Quotes a word for a Windows command line (the CommandLineToArgvW rules).</summary>
        public static string QuoteWindows(string word)
        {
            if (word.Length > 0 && word.IndexOfAny(new[] { ' ', '\t', '"' }) < 0)
            {
                return word;
            }
            var sb = new StringBuilder("\"");
            var backslashes = 0;
            foreach (var c in word)
            {
                if (c == '\\')
                {
                    backslashes++;
                    continue;
                }
                if (c == '"')
                {
                    sb.Append('\\', backslashes * 2 + 1).Append('"');
                }
                else
                {
                    sb.Append('\\', backslashes).Append(c);
                }
                backslashes = 0;
            }
            sb.Append('\\', backslashes * 2).Append('"');
            return sb.ToString();
        }

        private static string EscapePercent(string word) => word.Replace("%", "%%");

        private static bool IsSafe(string word)
        {
            foreach (var c in word)
            {
                var ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9')
                    || c == '-' || c == '_' || c == '.' || c == '/' || c == ':' || c == '=' || c == '@' || c == '%' || c == '+' || c == ',';
                if (!ok)
                {
                    return false;
                }
            }
            return true;
        }

        private static void AddPair(List<string> list, string flag, string? value)
        {
            if (!string.IsNullOrWhiteSpace(value))
            {
                list.Add(flag);
                list.Add(value!);
            }
        }

        private static void AddEnv(Dictionary<string, string> env, string name, string? value)
        {
            if (!string.IsNullOrEmpty(value))
            {
                env[name] = value!;
            }
        }
    }
}
