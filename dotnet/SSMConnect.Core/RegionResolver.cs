namespace SSMConnect
{
    /// <summary>
    /// The region a cmdlet asks for: <c>-Region</c>, then the <c>$StoredAWSRegion</c> that AWS
    /// Tools' <c>Set-DefaultAWSRegion</c> sets, then none (the native library then follows the
    /// AWS SDK chain: environment, profile).
    /// </summary>
    public static class RegionResolver
    {
        /// <summary>The name of the AWS Tools variable holding the default region.</summary>
        public const string StoredRegionVariable = "StoredAWSRegion";

        /// <summary>The region to send, or null for the SDK chain.</summary>
        /// <param name="explicitRegion">The <c>-Region</c> argument.</param>
        /// <param name="storedRegion">The value of <c>$StoredAWSRegion</c> (a string, or an object whose text is the region).</param>
        public static string? Resolve(string? explicitRegion, object? storedRegion)
        {
            if (!string.IsNullOrWhiteSpace(explicitRegion))
            {
                return explicitRegion.Trim();
            }
            var stored = storedRegion?.ToString();
            return string.IsNullOrWhiteSpace(stored) ? null : stored.Trim();
        }
    }
}
