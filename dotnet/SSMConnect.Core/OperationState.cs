namespace SSMConnect
{
    /// <summary>State of an <see cref="Operation"/> or a <see cref="PortForward"/> (mirrors the native <c>SsmcState</c>).</summary>
    public enum OperationState : uint
    {
        /// <summary>Still working; for a forward, forwarding.</summary>
        Running = 0,

        /// <summary>Finished successfully; for a forward, stopped or closed by the service.</summary>
        Succeeded = 1,

        /// <summary>Finished with an error.</summary>
        Failed = 2,

        /// <summary>Cancelled by the caller.</summary>
        Cancelled = 3,
    }
}
