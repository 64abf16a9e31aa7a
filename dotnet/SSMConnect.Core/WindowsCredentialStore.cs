using System;
using System.ComponentModel;
using System.Runtime.InteropServices;
using System.Runtime.Versioning;
using System.Security;

namespace SSMConnect
{
    /// <summary>
    /// The Windows credential store, for handing a login to the Remote Desktop client for one
    /// connection: what <c>cmdkey /generic:TERMSRV/host /user:… /pass:…</c> stores, written
    /// through the API so that the password is on no command line, kept for this logon session
    /// only, and removed afterwards.
    /// </summary>
    [SupportedOSPlatform("windows")]
    public static class WindowsCredentialStore
    {
        private const uint CredTypeGeneric = 1;
        private const uint CredPersistSession = 1;

        /// <summary>Stores <paramref name="user"/> and <paramref name="password"/> for <paramref name="target"/> (e.g. <c>TERMSRV/127.0.0.1</c>).</summary>
        /// <exception cref="Win32Exception">The store refused it.</exception>
        public static void Write(string target, string user, SecureString password)
        {
            if (password is null)
            {
                throw new ArgumentNullException(nameof(password));
            }
            var blob = Marshal.SecureStringToGlobalAllocUnicode(password);
            try
            {
                var credential = new Credential
                {
                    Type = CredTypeGeneric,
                    TargetName = target,
                    UserName = user,
                    CredentialBlob = blob,
                    CredentialBlobSize = (uint)(password.Length * 2),
                    Persist = CredPersistSession,
                };
                if (!CredWriteW(ref credential, 0))
                {
                    throw new Win32Exception(Marshal.GetLastWin32Error());
                }
            }
            finally
            {
                Marshal.ZeroFreeGlobalAllocUnicode(blob);
            }
        }

        /// <summary>Removes what <see cref="Write"/> stored for <paramref name="target"/>; nothing there is fine.</summary>
        public static void Delete(string target) => CredDeleteW(target, CredTypeGeneric, 0);

        [StructLayout(LayoutKind.Sequential, CharSet = CharSet.Unicode)]
        private struct Credential
        {
            public uint Flags;
            public uint Type;
            public string TargetName;
            public string? Comment;
            public System.Runtime.InteropServices.ComTypes.FILETIME LastWritten;
            public uint CredentialBlobSize;
            public IntPtr CredentialBlob;
            public uint Persist;
            public uint AttributeCount;
            public IntPtr Attributes;
            public string? TargetAlias;
            public string UserName;
        }

        [DllImport("advapi32.dll", CharSet = CharSet.Unicode, SetLastError = true)]
        [return: MarshalAs(UnmanagedType.Bool)]
        private static extern bool CredWriteW(ref Credential credential, uint flags);

        [DllImport("advapi32.dll", CharSet = CharSet.Unicode, SetLastError = true)]
        [return: MarshalAs(UnmanagedType.Bool)]
        private static extern bool CredDeleteW(string target, uint type, uint flags);
    }
}
