using System;
using System.Collections.Generic;
using System.IO;

namespace SSMConnect.Tests
{
    /// <summary>A private OpenSSH server on 127.0.0.1 and a client key it accepts.</summary>
    internal sealed class Sshd : LoopbackDaemon
    {
        private readonly string hostKey;
        private readonly string authorized;

        private readonly bool ownAuthorizedKeys;

        private Sshd(string? authorizedKeysFile)
            : base("sshd")
        {
            hostKey = Path.Combine(Directory, "host_ed25519");
            ClientKey = Path.Combine(Directory, "id_ed25519");
            ownAuthorizedKeys = authorizedKeysFile is null;
            authorized = authorizedKeysFile ?? Path.Combine(Directory, "authorized_keys");
        }

        internal string ClientKey { get; }

        protected override string Program => "/usr/sbin/sshd";

        /// <summary>Starts sshd trusting <see cref="ClientKey"/>, or only the keys in <paramref name="authorizedKeysFile"/>.</summary>
        internal static Sshd Start(string? authorizedKeysFile = null) => Launch(new Sshd(authorizedKeysFile));

        protected override void Prepare()
        {
            // sshd refuses to start without its privilege-separation directory.
            System.IO.Directory.CreateDirectory("/run/sshd");
            foreach (var key in new[] { hostKey, ClientKey })
            {
                Processes.Run("ssh-keygen", null, "-q", "-t", "ed25519", "-N", string.Empty, "-f", key);
            }
            if (ownAuthorizedKeys)
            {
                File.Copy(ClientKey + ".pub", authorized);
            }
        }

        protected override IEnumerable<string> Configure(int port)
        {
            var cfg = Path.Combine(Directory, "sshd_config");
            File.WriteAllText(
                cfg,
                $"ListenAddress 127.0.0.1\nPort {port}\nHostKey {hostKey}\nPidFile {Path.Combine(Directory, "sshd.pid")}\n" +
                $"AuthorizedKeysFile {authorized}\nStrictModes no\nUsePAM no\nPasswordAuthentication no\n" +
                "KbdInteractiveAuthentication no\nPermitRootLogin prohibit-password\n");
            return new[] { "-D", "-e", "-f", cfg };
        }

        protected override bool IsReady(int port, string log) => log.Contains("Server listening on", StringComparison.Ordinal);
    }
}
