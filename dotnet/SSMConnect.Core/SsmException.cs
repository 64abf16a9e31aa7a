using System;

namespace SSMConnect
{
    /// <summary>A failure reported by the native library, or found before calling it.</summary>
    public sealed class SsmException : Exception
    {
        /// <summary>Creates an exception of <paramref name="kind"/>.</summary>
        public SsmException(SsmErrorKind kind, string message)
            : this(kind, message, null)
        {
        }

        /// <summary>Creates an exception of <paramref name="kind"/> with a cause.</summary>
        public SsmException(SsmErrorKind kind, string message, Exception? inner)
            : base(message, inner)
        {
            Kind = kind;
        }

        /// <summary>Why it failed.</summary>
        public SsmErrorKind Kind { get; }

        /// <summary>The stable error id, e.g. <c>SSMConnect.PortInUse</c>.</summary>
        public string ErrorId => ErrorCatalog.ErrorId(Kind);

        /// <summary>The name of the PowerShell <c>ErrorCategory</c>, e.g. <c>ResourceUnavailable</c>.</summary>
        public string CategoryName => ErrorCatalog.CategoryName(Kind);
    }
}
