using System;
using System.Reflection;

namespace SSMConnect
{
    /// <summary>
    /// The credential sources AWS Tools for PowerShell users pass, applied in the order AWS Tools
    /// searches them: literal keys, then <c>-Credential</c>, then <c>-ProfileName</c> /
    /// <c>-ProfileLocation</c>, then the session's <c>$StoredAWSCredentials</c>
    /// (<c>Set-AWSCredential</c>). When none is given the native library follows the AWS SDK
    /// chain (environment, default profile, SSO, instance role).
    /// </summary>
    /// <remarks>
    /// <c>Amazon.Runtime.AWSCredentials</c> objects are read by reflection (their
    /// <c>GetCredentials()</c> method), so this assembly needs no AWS SDK reference and works with
    /// whichever AWSSDK.Core version the session loaded.
    /// </remarks>
    public static class AwsToolsCredentials
    {
        /// <summary>The AWS Tools variable <c>Set-AWSCredential</c> leaves in the session.</summary>
        public const string StoredCredentialsVariable = "StoredAWSCredentials";

        /// <summary>What the caller gave; every member is optional.</summary>
        public sealed class Sources
        {
            /// <summary><c>-AccessKey</c>.</summary>
            public string? AccessKey { get; set; }

            /// <summary><c>-SecretKey</c>.</summary>
            public string? SecretKey { get; set; }

            /// <summary><c>-SessionToken</c>.</summary>
            public string? SessionToken { get; set; }

            /// <summary><c>-Credential</c>: an <c>Amazon.Runtime.AWSCredentials</c>.</summary>
            public object? Credential { get; set; }

            /// <summary><c>-ProfileName</c>.</summary>
            public string? ProfileName { get; set; }

            /// <summary><c>-ProfileLocation</c>, an absolute path of a shared credentials file.</summary>
            public string? ProfileLocation { get; set; }

            /// <summary>The value of <c>$StoredAWSCredentials</c> (unwrapped from any PSObject).</summary>
            public object? Stored { get; set; }
        }

        /// <summary>Sets the credential members of <paramref name="options"/> from the first source given.</summary>
        /// <exception cref="ArgumentException">A source is given but unusable (keys without their
        /// other half, a profile location that is no file, an object that is no AWS credentials,
        /// credentials that cannot be read).</exception>
        public static SsmClientOptions Apply(SsmClientOptions options, Sources given)
        {
            if (options is null)
            {
                throw new ArgumentNullException(nameof(options));
            }
            if (given is null)
            {
                throw new ArgumentNullException(nameof(given));
            }
            if (!string.IsNullOrEmpty(given.AccessKey) || !string.IsNullOrEmpty(given.SecretKey))
            {
                if (string.IsNullOrEmpty(given.AccessKey) || string.IsNullOrEmpty(given.SecretKey))
                {
                    throw new ArgumentException("-AccessKey and -SecretKey go together");
                }
                return SetKeys(options, given.AccessKey!, given.SecretKey!, given.SessionToken);
            }
            if (given.Credential is not null)
            {
                return FromCredentialsObject(options, given.Credential, "-Credential");
            }
            if (!string.IsNullOrEmpty(given.ProfileName) || !string.IsNullOrEmpty(given.ProfileLocation))
            {
                if (!string.IsNullOrEmpty(given.ProfileLocation) && !System.IO.File.Exists(given.ProfileLocation))
                {
                    throw new ArgumentException($"-ProfileLocation {given.ProfileLocation} is not a file");
                }
                options.Profile = string.IsNullOrEmpty(given.ProfileName) ? null : given.ProfileName;
                options.CredentialsFile = string.IsNullOrEmpty(given.ProfileLocation) ? null : given.ProfileLocation;
                return options;
            }
            switch (given.Stored)
            {
                case null:
                    return options;
                case string profile when !string.IsNullOrWhiteSpace(profile):
                    options.Profile = profile.Trim();
                    return options;
                default:
                    // AWS Tools keeps an AWSPSCredentials there: its Credentials property holds the
                    // AWSCredentials. A bare AWSCredentials is taken too.
                    var inner = ReadProperty(given.Stored, "Credentials") ?? given.Stored;
                    return FromCredentialsObject(options, inner, "$" + StoredCredentialsVariable);
            }
        }

        private static SsmClientOptions SetKeys(SsmClientOptions options, string accessKey, string secretKey, string? sessionToken)
        {
            options.AccessKey = accessKey;
            options.SecretKey = secretKey;
            options.SessionToken = string.IsNullOrEmpty(sessionToken) ? null : sessionToken;
            options.Profile = null;
            return options;
        }

        private static SsmClientOptions FromCredentialsObject(SsmClientOptions options, object value, string what)
        {
            var get = value.GetType().GetMethod("GetCredentials", BindingFlags.Public | BindingFlags.Instance, null, Type.EmptyTypes, null);
            if (get is null)
            {
                throw new ArgumentException($"{what} is a {value.GetType().FullName}, not an Amazon.Runtime.AWSCredentials");
            }
            object? immutable;
            try
            {
                immutable = get.Invoke(value, null);
            }
            catch (TargetInvocationException e) when (e.InnerException is not null)
            {
                throw new ArgumentException($"{what} could not give credentials: {e.InnerException.Message}", e.InnerException);
            }
            var accessKey = ReadProperty(immutable, "AccessKey") as string;
            var secretKey = ReadProperty(immutable, "SecretKey") as string;
            if (string.IsNullOrEmpty(accessKey) || string.IsNullOrEmpty(secretKey))
            {
                throw new ArgumentException($"{what} gave no access key and secret key");
            }
            return SetKeys(options, accessKey!, secretKey!, ReadProperty(immutable, "Token") as string);
        }

        private static object? ReadProperty(object? o, string name) =>
            o?.GetType().GetProperty(name, BindingFlags.Public | BindingFlags.Instance)?.GetValue(o);
    }
}
