namespace SSMConnect
{
    /// <summary>
    /// Why an SSMConnect operation failed. The values mirror the native <c>SsmcErrorKind</c>
    /// one for one (a unit test keeps them in step); <see cref="ErrorCatalog"/> maps each to a
    /// stable error id and a PowerShell error category.
    /// </summary>
    public enum SsmErrorKind : uint
    {
        /// <summary>No error.</summary>
        None = 0,

        /// <summary>A malformed request or argument.</summary>
        InvalidArgument = 1,

        /// <summary>Configuration: no region, bad endpoint, conflicting credentials.</summary>
        Configuration = 2,

        /// <summary>No instance matched the target.</summary>
        TargetNotFound = 3,

        /// <summary>Several instances matched the target.</summary>
        AmbiguousTarget = 4,

        /// <summary>An AWS API call failed (access denied, target not connected, …).</summary>
        Api = 5,

        /// <summary>The local port could not be bound (in use, no permission).</summary>
        PortInUse = 6,

        /// <summary>The data channel could not be opened or was lost for good.</summary>
        ConnectionFailed = 7,

        /// <summary>The session could not start (handshake, unsupported feature).</summary>
        SessionFailed = 8,

        /// <summary>A deadline passed.</summary>
        TimedOut = 9,

        /// <summary>The operation was cancelled.</summary>
        Cancelled = 10,

        /// <summary>A bug: panic or unexpected state.</summary>
        Internal = 11,

        /// <summary>KMS refused the session's data key to these credentials (no <c>kms:GenerateDataKey</c>).</summary>
        KmsAccessDenied = 12,

        /// <summary>The session's KMS key is missing, disabled or unusable.</summary>
        KmsKeyUnavailable = 13,

        /// <summary>The agent's encryption challenge did not verify.</summary>
        KmsChallengeFailed = 14,

        /// <summary>An encrypted message from the agent failed authentication (tampered).</summary>
        KmsTampered = 15,

        /// <summary>No AWS credentials were found anywhere the SDK looks.</summary>
        NoCredentials = 16,

        /// <summary>The AWS credentials (an SSO login, a session token) have expired.</summary>
        CredentialsExpired = 17,

        /// <summary>The AWS endpoint could not be reached (refused, no route, unknown name, timed out).</summary>
        EndpointUnreachable = 18,

        /// <summary>The target has no SSM agent connected to Session Manager (<c>TargetNotConnected</c>).</summary>
        TargetNotConnected = 19,
    }
}
