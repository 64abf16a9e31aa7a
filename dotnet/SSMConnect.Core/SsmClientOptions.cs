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

        /// <summary>
        /// Fills what is unset from the caller's view of the environment: <c>AWS_PROFILE</c>,
        /// <c>AWS_REGION</c>/<c>AWS_DEFAULT_REGION</c>, <c>AWS_ENDPOINT_URL_SSM</c>, <c>AWS_ENDPOINT_URL_EC2</c>
        /// (each falling back to <c>AWS_ENDPOINT_URL</c>), <c>AWS_SHARED_CREDENTIALS_FILE</c>, <c>AWS_CONFIG_FILE</c>,
        /// and the <c>AWS_ACCESS_KEY_ID</c> set when neither keys nor a profile were given.
        /// </summary>
        /// <remarks>
        /// On Linux and macOS, .NET keeps its own copy of the environment: a variable set in the
        /// process after it started (<c>$env:AWS_REGION = ...</c> in PowerShell) is seen by
        /// managed code and child processes but never by the native library's <c>getenv</c>. The
        /// values are therefore handed over explicitly, in the same order the AWS SDK reads them.
        /// </remarks>
        public SsmClientOptions WithEnvironmentDefaults(System.Func<string, string?> getenv)
        {
            if (getenv is null)
            {
                throw new System.ArgumentNullException(nameof(getenv));
            }
            string? Env(string name)
            {
                var v = getenv(name);
                return string.IsNullOrWhiteSpace(v) ? null : v.Trim();
            }
            var explicitCredentials = !string.IsNullOrEmpty(AccessKey) || !string.IsNullOrEmpty(Profile) || !string.IsNullOrEmpty(CredentialsFile);
            Profile ??= Env("AWS_PROFILE");
            CredentialsFile ??= Env("AWS_SHARED_CREDENTIALS_FILE");
            ConfigFile ??= Env("AWS_CONFIG_FILE");
            Region ??= Env("AWS_REGION") ?? Env("AWS_DEFAULT_REGION");
            if (!string.Equals(Env("AWS_IGNORE_CONFIGURED_ENDPOINT_URLS"), "true", System.StringComparison.OrdinalIgnoreCase))
            {
                EndpointUrl ??= Env("AWS_ENDPOINT_URL_SSM") ?? Env("AWS_ENDPOINT_URL");
                Ec2EndpointUrl ??= Env("AWS_ENDPOINT_URL_EC2") ?? Env("AWS_ENDPOINT_URL");
            }
            if (!explicitCredentials && Env("AWS_ACCESS_KEY_ID") is string key && Env("AWS_SECRET_ACCESS_KEY") is string secret)
            {
                AccessKey = key;
                SecretKey = secret;
                SessionToken ??= Env("AWS_SESSION_TOKEN");
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

        /// <summary>Port on the target (or on <see cref="RemoteHost"/>).</summary>
        [JsonPropertyName("remote_port")]
        public ushort RemotePort { get; set; }

        /// <summary>A host reached through the target instead of the target itself.</summary>
        [JsonPropertyName("remote_host")]
        public string? RemoteHost { get; set; }

        /// <summary>Local address to listen on; null means 127.0.0.1.</summary>
        [JsonPropertyName("local_address")]
        public string? LocalAddress { get; set; }

        /// <summary>Local port; 0 picks a free one.</summary>
        [JsonPropertyName("local_port")]
        public ushort LocalPort { get; set; }

        /// <summary>DNS server (<c>ADDR:PORT</c>) for DNS-name targets; null for the system resolver.</summary>
        [JsonPropertyName("dns_server")]
        public string? DnsServer { get; set; }
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

        /// <summary>DNS server (<c>ADDR:PORT</c>) for DNS-name targets; null for the system resolver.</summary>
        [JsonPropertyName("dns_server")]
        public string? DnsServer { get; set; }
    }
}
