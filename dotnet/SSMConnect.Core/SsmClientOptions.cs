using System.Text.Json.Serialization;

namespace SSMConnect
{
    /// <summary>
    /// Credentials, region and endpoint for a <see cref="SsmClient"/>. Unset values fall back to
    /// the AWS SDK default chain in the native library (environment, profiles, SSO,
    /// credential_process, instance metadata) and to <c>AWS_ENDPOINT_URL_*</c>.
    /// </summary>
    public sealed class SsmClientOptions
    {
        /// <summary>Named profile.</summary>
        [JsonPropertyName("profile")]
        public string? Profile { get; set; }

        /// <summary>Region, e.g. <c>eu-west-1</c>.</summary>
        [JsonPropertyName("region")]
        public string? Region { get; set; }

        /// <summary>SSM endpoint override (plain <c>http://</c> only for loopback).</summary>
        [JsonPropertyName("endpoint_url")]
        public string? EndpointUrl { get; set; }

        /// <summary>EC2 endpoint override for target resolution (plain <c>http://</c> only for loopback).</summary>
        [JsonPropertyName("ec2_endpoint_url")]
        public string? Ec2EndpointUrl { get; set; }

        /// <summary>Explicit access key id (with <see cref="SecretKey"/>).</summary>
        [JsonPropertyName("access_key")]
        public string? AccessKey { get; set; }

        /// <summary>Explicit secret access key.</summary>
        [JsonPropertyName("secret_key")]
        public string? SecretKey { get; set; }

        /// <summary>Explicit session token.</summary>
        [JsonPropertyName("session_token")]
        public string? SessionToken { get; set; }

        /// <summary>Shared credentials file in place of <c>~/.aws/credentials</c>.</summary>
        [JsonPropertyName("credentials_file")]
        public string? CredentialsFile { get; set; }

        /// <summary>Shared config file in place of <c>~/.aws/config</c>.</summary>
        [JsonPropertyName("config_file")]
        public string? ConfigFile { get; set; }

        /// <summary>DNS server for DNS-name targets, <c>ADDR</c> or <c>ADDR:PORT</c> as the user typed it; the native library parses it (a malformed one makes the client fail with InvalidArgument). Null for the system resolver.</summary>
        [JsonPropertyName("dns_server")]
        public string? DnsServer { get; set; }

        /// <summary>Why the sessions are started: sent as StartSession's <c>Reason</c> (1 to 256 characters, no line breaks), kept in the session's audit trail. Null for none.</summary>
        [JsonPropertyName("reason")]
        public string? Reason { get; set; }

        /// <summary>
        /// The caller's <c>AWS_*</c> variables, as-is. The native library reads them as the AWS SDK
        /// reads the environment and fills from them what the other options leave unset.
        /// </summary>
        /// <remarks>
        /// On Linux and macOS, .NET keeps its own copy of the environment: a variable set in the
        /// process after it started (<c>$env:AWS_REGION = ...</c> in PowerShell) is seen by
        /// managed code and child processes but never by the native library's <c>getenv</c>.
        /// </remarks>
        [JsonPropertyName("environment")]
        public System.Collections.Generic.Dictionary<string, string>? Environment { get; set; }

        /// <summary>Sets <see cref="Environment"/> to every <c>AWS_*</c> variable of this process's (managed) environment.</summary>
        public SsmClientOptions WithAwsEnvironment()
        {
            Environment = new System.Collections.Generic.Dictionary<string, string>(System.StringComparer.Ordinal);
            foreach (System.Collections.DictionaryEntry e in System.Environment.GetEnvironmentVariables())
            {
                if (e.Key is string name && name.StartsWith("AWS_", System.StringComparison.Ordinal) && e.Value is string value)
                {
                    Environment[name] = value;
                }
            }
            return this;
        }
    }

    /// <summary>What <see cref="SsmClient.BeginForward"/> forwards.</summary>
    public sealed class ForwardRequest
    {
        /// <summary>Instance id, <c>key:value</c> tag, IP address or DNS name.</summary>
        [JsonPropertyName("target")]
        public string Target { get; set; } = string.Empty;

        /// <summary>Port on the target (or on <see cref="RemoteHost"/>); required unless <see cref="Socks"/>.</summary>
        [JsonPropertyName("remote_port")]
        public ushort? RemotePort { get; set; }

        /// <summary>A host reached through the target instead of the target itself.</summary>
        [JsonPropertyName("remote_host")]
        public string? RemoteHost { get; set; }

        /// <summary>Local address to listen on; null means 127.0.0.1.</summary>
        [JsonPropertyName("local_address")]
        public string? LocalAddress { get; set; }

        /// <summary>Local port; 0 picks a free one.</summary>
        [JsonPropertyName("local_port")]
        public ushort LocalPort { get; set; }

        /// <summary>A session of its own for each local connection, terminated when the connection ends.</summary>
        [JsonPropertyName("session_per_connection")]
        public bool SessionPerConnection { get; set; }

        /// <summary>Sessions started ahead with <see cref="SessionPerConnection"/>; null means the native default (1).</summary>
        [JsonPropertyName("warm_sessions")]
        public int? WarmSessions { get; set; }

        /// <summary>Session document of a port session; null for <c>AWS-StartPortForwardingSession</c> (or <c>...ToRemoteHost</c> with <see cref="RemoteHost"/>).</summary>
        [JsonPropertyName("document")]
        public string? Document { get; set; }

        /// <summary>A SOCKS5 proxy (dynamic forwarding): each connection gets a session of its own to the host and port it asks for; no <see cref="RemotePort"/>, <see cref="RemoteHost"/> or session-per-connection settings.</summary>
        [JsonPropertyName("socks")]
        public bool Socks { get; set; }
    }

    /// <summary>What <see cref="SsmClient.BeginShell"/> opens.</summary>
    public sealed class ShellRequest
    {
        /// <summary>Instance id, <c>key:value</c> tag, IP address or DNS name.</summary>
        [JsonPropertyName("target")]
        public string Target { get; set; } = string.Empty;

        /// <summary>Session document; null for the account's shell preferences.</summary>
        [JsonPropertyName("document")]
        public string? Document { get; set; }

        /// <summary>Document parameters.</summary>
        [JsonPropertyName("parameters")]
        public System.Collections.Generic.Dictionary<string, string[]>? Parameters { get; set; }
    }

    /// <summary>What <see cref="SsmClient.BeginExec"/> runs.</summary>
    public sealed class ExecRequest
    {
        /// <summary>Instance id, <c>key:value</c> tag, IP address or DNS name.</summary>
        [JsonPropertyName("target")]
        public string Target { get; set; } = string.Empty;

        /// <summary>The command line; the agent splits it shell-style and runs it without a shell.</summary>
        [JsonPropertyName("command")]
        public string Command { get; set; } = string.Empty;

        /// <summary>Session document of type NonInteractiveCommands; null for <c>AWS-StartNonInteractiveCommand</c>.</summary>
        [JsonPropertyName("document")]
        public string? Document { get; set; }

        /// <summary>Document parameters besides <c>command</c>.</summary>
        [JsonPropertyName("parameters")]
        public System.Collections.Generic.Dictionary<string, string[]>? Parameters { get; set; }
    }
}
