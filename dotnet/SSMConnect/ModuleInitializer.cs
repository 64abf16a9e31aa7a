using System.Management.Automation;
using SSMConnect.Native;

namespace SSMConnect
{
    /// <summary>
    /// Runs when PowerShell imports the module: loads the native library from
    /// <c>bin/runtimes/&lt;rid&gt;/native/</c> (or <c>SSMCONNECT_NATIVE_PATH</c>) at once, so a
    /// missing library fails <c>Import-Module</c> with the list of paths tried.
    /// </summary>
    public sealed class ModuleInitializer : IModuleAssemblyInitializer, IModuleAssemblyCleanup
    {
        /// <inheritdoc />
        public void OnImport() => NativeLibraryLoader.Load();

        /// <summary>Stops the forwards still running when the module is removed.</summary>
        public void OnRemove(PSModuleInfo psModuleInfo)
        {
            foreach (var f in ForwardRegistry.All)
            {
                f.Stop(System.TimeSpan.FromSeconds(2));
            }
        }
    }
}
