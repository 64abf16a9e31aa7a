using System.Collections.Generic;

namespace SSMConnect
{
    /// <summary>
    /// Stable error ids and PowerShell error categories. The ids are the first part of every
    /// ErrorRecord's FullyQualifiedErrorId and are asserted by the Pester suite: never rename one.
    /// </summary>
    /// <remarks>
    /// Categories are given by name (the members of <c>System.Management.Automation.ErrorCategory</c>)
    /// so that this assembly needs no PowerShell reference.
    /// </remarks>
    public static class ErrorCatalog
    {
        /// <summary>Id for errors the library reported without a kind we know.</summary>
        public const string Unknown = "SSMConnect.Internal";

        /// <summary>The native library could not be loaded.</summary>
        public const string NativeLibraryNotFound = "SSMConnect.NativeLibraryNotFound";

        /// <summary>A pipeline object held no target (no string, <c>InstanceId</c> or <c>Instances</c>).</summary>
        public const string NoTarget = "SSMConnect.NoTarget";

        /// <summary>No port forward has the given id.</summary>
        public const string ForwardNotFound = "SSMConnect.ForwardNotFound";

        /// <summary>The ssh client could not be found or started.</summary>
        public const string SshNotFound = "SSMConnect.SshNotFound";

        /// <summary>The bundled helper executable could not be found.</summary>
        public const string HelperNotFound = "SSMConnect.HelperNotFound";

        /// <summary>A line the remote command wrote to its stderr (Invoke-SSMSessionCommand).</summary>
        public const string RemoteStderr = "SSMConnect.RemoteStderr";

        /// <summary>-LocalPort and -RemotePort hold different numbers of ports.</summary>
        public const string PortCountMismatch = "SSMConnect.PortCountMismatch";

        /// <summary>The RDP client program could not be started.</summary>
        public const string RdpClientNotFound = "SSMConnect.RdpClientNotFound";

        private static readonly Dictionary<SsmErrorKind, (string Id, string Category)> Map = new()
        {
            [SsmErrorKind.InvalidArgument] = ("SSMConnect.InvalidArgument", "InvalidArgument"),
            [SsmErrorKind.Configuration] = ("SSMConnect.Configuration", "InvalidOperation"),
            [SsmErrorKind.TargetNotFound] = ("SSMConnect.TargetNotFound", "ObjectNotFound"),
            [SsmErrorKind.AmbiguousTarget] = ("SSMConnect.AmbiguousTarget", "InvalidArgument"),
            [SsmErrorKind.Api] = ("SSMConnect.ApiError", "InvalidOperation"),
            [SsmErrorKind.PortInUse] = ("SSMConnect.PortInUse", "ResourceUnavailable"),
            [SsmErrorKind.ConnectionFailed] = ("SSMConnect.ConnectionFailed", "ConnectionError"),
            [SsmErrorKind.SessionFailed] = ("SSMConnect.SessionFailed", "ProtocolError"),
            [SsmErrorKind.TimedOut] = ("SSMConnect.TimedOut", "OperationTimeout"),
            [SsmErrorKind.Cancelled] = ("SSMConnect.Cancelled", "OperationStopped"),
            [SsmErrorKind.Internal] = ("SSMConnect.Internal", "NotSpecified"),
            [SsmErrorKind.KmsAccessDenied] = ("SSMConnect.KmsAccessDenied", "PermissionDenied"),
            [SsmErrorKind.KmsKeyUnavailable] = ("SSMConnect.KmsKeyUnavailable", "ResourceUnavailable"),
            [SsmErrorKind.KmsChallengeFailed] = ("SSMConnect.KmsChallengeFailed", "SecurityError"),
            [SsmErrorKind.KmsTampered] = ("SSMConnect.KmsTampered", "SecurityError"),
            [SsmErrorKind.NoCredentials] = ("SSMConnect.NoCredentials", "AuthenticationError"),
            [SsmErrorKind.CredentialsExpired] = ("SSMConnect.CredentialsExpired", "AuthenticationError"),
            [SsmErrorKind.EndpointUnreachable] = ("SSMConnect.EndpointUnreachable", "ConnectionError"),
            [SsmErrorKind.TargetNotConnected] = ("SSMConnect.TargetNotConnected", "ResourceUnavailable"),
        };

        /// <summary>The error id for <paramref name="kind"/>, e.g. <c>SSMConnect.TargetNotFound</c>.</summary>
        public static string ErrorId(SsmErrorKind kind) => Map.TryGetValue(kind, out var e) ? e.Id : Unknown;

        /// <summary>The <c>ErrorCategory</c> member name for <paramref name="kind"/>.</summary>
        public static string CategoryName(SsmErrorKind kind) => Map.TryGetValue(kind, out var e) ? e.Category : "NotSpecified";

        /// <summary>Every kind that has an entry (all but <see cref="SsmErrorKind.None"/>).</summary>
        public static IEnumerable<SsmErrorKind> Kinds => Map.Keys;
    }
}
