using System;

namespace SSMConnect
{
    /// <summary>A line the remote command wrote to its stderr.</summary>
    public sealed class RemoteStderrException : Exception
    {
        /// <summary>Creates one for <paramref name="line"/>.</summary>
        public RemoteStderrException(string line)
            : base(line)
        {
        }

        /// <summary>Creates one without a line.</summary>
        public RemoteStderrException()
        {
        }

        /// <summary>Creates one with a cause.</summary>
        public RemoteStderrException(string line, Exception inner)
            : base(line, inner)
        {
        }
    }
}
