using System;
using System.Runtime.InteropServices;

namespace SSMConnect.Native
{
    /// <summary>
    /// Base of the owners of <c>ssmc_*</c> handles: zero is invalid, and every native call goes
    /// through <see cref="Use{T}"/> so the handle cannot be freed while the call runs.
    /// </summary>
    public abstract class NativeHandle : SafeHandle
    {
        /// <summary>Creates an owner of no handle yet.</summary>
        protected NativeHandle()
            : base(IntPtr.Zero, ownsHandle: true)
        {
        }

        /// <inheritdoc />
        public override bool IsInvalid => handle == IntPtr.Zero;

        /// <summary>Takes ownership of <paramref name="raw"/>.</summary>
        internal void Adopt(IntPtr raw) => SetHandle(raw);

        /// <summary>Calls <paramref name="call"/> with the raw handle, which stays alive meanwhile.</summary>
        /// <exception cref="ObjectDisposedException">The handle was freed.</exception>
        public T Use<T>(Func<IntPtr, T> call)
        {
            var added = false;
            try
            {
                DangerousAddRef(ref added);
                return call(handle);
            }
            finally
            {
                if (added)
                {
                    DangerousRelease();
                }
            }
        }

        /// <summary>As <see cref="Use{T}"/>, without a result.</summary>
        public void Use(Action<IntPtr> call) => Use<bool>(h =>
        {
            call(h);
            return true;
        });
    }

    /// <summary>Owns an <c>SsmcClient*</c> from <c>ssmc_client_new</c>.</summary>
    public sealed class ClientHandle : NativeHandle
    {
        /// <inheritdoc />
        protected override bool ReleaseHandle()
        {
            NativeMethods.ssmc_client_free(handle);
            return true;
        }
    }

    /// <summary>Owns an <c>SsmcOperation*</c> from <c>ssmc_*_begin</c>; freeing cancels it.</summary>
    public sealed class OperationHandle : NativeHandle
    {
        /// <inheritdoc />
        protected override bool ReleaseHandle()
        {
            NativeMethods.ssmc_operation_free(handle);
            return true;
        }
    }

    /// <summary>Owns an <c>SsmcForward*</c> from <c>ssmc_operation_take_forward</c>; freeing stops it.</summary>
    public sealed class ForwardHandle : NativeHandle
    {
        /// <inheritdoc />
        protected override bool ReleaseHandle()
        {
            NativeMethods.ssmc_forward_free(handle);
            return true;
        }
    }

    /// <summary>Strings coming out of the library (UTF-8).</summary>
    internal static class NativeText
    {
        /// <summary>A string the library still owns (copied, never freed here).</summary>
        internal static string Borrowed(IntPtr p) => p == IntPtr.Zero ? string.Empty : Marshal.PtrToStringUTF8(p) ?? string.Empty;

        /// <summary>A string handed over with ownership: copied, then freed with <c>ssmc_string_free</c>.</summary>
        internal static string? Owned(IntPtr p)
        {
            if (p == IntPtr.Zero)
            {
                return null;
            }
            try
            {
                return Marshal.PtrToStringUTF8(p) ?? string.Empty;
            }
            finally
            {
                NativeMethods.ssmc_string_free(p);
            }
        }

        /// <summary>The calling thread's last error, as an exception.</summary>
        internal static SsmException LastError(string what)
        {
            var kind = (SsmErrorKind)(uint)NativeMethods.ssmc_last_error_kind();
            var message = Borrowed(NativeMethods.ssmc_last_error_message());
            if (kind == SsmErrorKind.None)
            {
                kind = SsmErrorKind.Internal;
            }
            if (message.Length == 0)
            {
                message = what + " failed";
            }
            return new SsmException(kind, message);
        }
    }
}
