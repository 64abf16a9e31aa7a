using Xunit;

namespace SSMConnect.Tests
{
    /// <summary>Loads the native library once; a failure fails every test of the collection.</summary>
    public sealed class NativeFixture
    {
        public NativeFixture() => TestEnvironment.EnsureNativeLibrary();
    }

    /// <summary>
    /// Tests that use the native library and the emulator. One collection, so they run one
    /// after another: the log queue and the forward registry are process-wide.
    /// </summary>
    [CollectionDefinition(Name)]
    public sealed class NativeCollection : ICollectionFixture<NativeFixture>
    {
        public const string Name = "native";
    }
}
