using System;
using Xunit;

namespace SSMConnect.Tests
{
    public class AwsToolsCredentialsTests
    {
        // The shapes of Amazon.Runtime.AWSCredentials / ImmutableCredentials and AWS Tools'
        // AWSPSCredentials, which the resolver reads by reflection.
        public sealed class Immutable
        {
            public string? AccessKey { get; set; }
            public string? SecretKey { get; set; }
            public string? Token { get; set; }
        }

        public sealed class FakeCredentials
        {
            private readonly Immutable value;
            public FakeCredentials(string key, string? token = null) => value = new Immutable { AccessKey = key, SecretKey = "secret-" + key, Token = token };
            public Immutable GetCredentials() => value;
        }

        public sealed class FailingCredentials
        {
            public Immutable GetCredentials() => throw new InvalidOperationException("the SSO token has expired");
        }

        public sealed class StoredCredentials
        {
            public object? Credentials { get; set; }
            public string? Name { get; set; }
        }

        private static SsmClientOptions Resolve(AwsToolsCredentials.Sources s) => AwsToolsCredentials.Apply(new SsmClientOptions(), s);

        [Fact]
        public void Literal_keys_win_over_everything_else()
        {
            var o = Resolve(new AwsToolsCredentials.Sources
            {
                AccessKey = "AKIDLITERAL",
                SecretKey = "s",
                SessionToken = "t",
                Credential = new FakeCredentials("AKIDOBJECT"),
                ProfileName = "ops",
                Stored = new StoredCredentials { Credentials = new FakeCredentials("AKIDSTORED") },
            });
            Assert.Equal(("AKIDLITERAL", "s", "t"), (o.AccessKey, o.SecretKey, o.SessionToken));
            Assert.Null(o.Profile);
        }

        [Fact]
        public void A_credentials_object_wins_over_profiles_and_the_session_variable()
        {
            var o = Resolve(new AwsToolsCredentials.Sources
            {
                Credential = new FakeCredentials("AKIDOBJECT", "tok"),
                ProfileName = "ops",
                Stored = new StoredCredentials { Credentials = new FakeCredentials("AKIDSTORED") },
            });
            Assert.Equal(("AKIDOBJECT", "secret-AKIDOBJECT", "tok"), (o.AccessKey, o.SecretKey, o.SessionToken));
            Assert.Null(o.Profile);
        }

        [Fact]
        public void A_profile_or_profile_location_wins_over_the_session_variable()
        {
            var file = System.IO.Path.GetTempFileName();
            try
            {
                var o = Resolve(new AwsToolsCredentials.Sources
                {
                    ProfileLocation = file,
                    Stored = new StoredCredentials { Credentials = new FakeCredentials("AKIDSTORED") },
                });
                Assert.Equal((null, file, null), (o.Profile, o.CredentialsFile, o.AccessKey));
            }
            finally
            {
                System.IO.File.Delete(file);
            }
            var named = Resolve(new AwsToolsCredentials.Sources { ProfileName = "ops" });
            Assert.Equal(("ops", null), (named.Profile, named.CredentialsFile));
        }

        [Fact]
        public void The_session_variable_is_read_as_aws_tools_leaves_it_or_as_a_bare_object()
        {
            Assert.Equal("AKIDSTORED", Resolve(new AwsToolsCredentials.Sources { Stored = new StoredCredentials { Credentials = new FakeCredentials("AKIDSTORED") } }).AccessKey);
            Assert.Equal("AKIDBARE", Resolve(new AwsToolsCredentials.Sources { Stored = new FakeCredentials("AKIDBARE") }).AccessKey);
            Assert.Equal("dev", Resolve(new AwsToolsCredentials.Sources { Stored = "dev" }).Profile);
        }

        [Fact]
        public void Nothing_given_leaves_the_sdk_chain()
        {
            var o = Resolve(new AwsToolsCredentials.Sources());
            Assert.Equal((null, null, null, null), (o.AccessKey, o.SecretKey, o.Profile, o.CredentialsFile));
        }

        [Fact]
        public void A_profile_location_that_is_no_file_is_refused()
        {
            var e = Assert.Throws<ArgumentException>(() => Resolve(new AwsToolsCredentials.Sources { ProfileLocation = "/no/such/credentials" }));
            Assert.Contains("/no/such/credentials", e.Message);
        }

        [Theory]
        [InlineData("AKID", null)]
        [InlineData(null, "secret")]
        public void Half_a_key_pair_is_refused(string? key, string? secret)
        {
            var e = Assert.Throws<ArgumentException>(() => Resolve(new AwsToolsCredentials.Sources { AccessKey = key, SecretKey = secret }));
            Assert.Contains("-AccessKey and -SecretKey", e.Message);
        }

        [Fact]
        public void Objects_that_are_no_credentials_or_cannot_give_them_are_refused_with_the_reason()
        {
            Assert.Contains("not an Amazon.Runtime.AWSCredentials", Assert.Throws<ArgumentException>(() => Resolve(new AwsToolsCredentials.Sources { Credential = "AKID" })).Message);
            Assert.Contains("the SSO token has expired", Assert.Throws<ArgumentException>(() => Resolve(new AwsToolsCredentials.Sources { Credential = new FailingCredentials() })).Message);
            Assert.Contains("$StoredAWSCredentials", Assert.Throws<ArgumentException>(() => Resolve(new AwsToolsCredentials.Sources { Stored = new StoredCredentials { Credentials = 42 } })).Message);
        }
    }
}
