using System;
using System.Collections.Generic;
using Xunit;

namespace SSMConnect.Tests
{
    public class OptionsTests
    {
        private static Func<string, string?> Env(Dictionary<string, string> vars) => name => vars.TryGetValue(name, out var v) ? v : null;

        [Fact]
        public void Unset_options_come_from_the_callers_environment_in_sdk_order()
        {
            var o = new SsmClientOptions().WithEnvironmentDefaults(Env(new Dictionary<string, string>
            {
                ["AWS_PROFILE"] = "dev",
                ["AWS_DEFAULT_REGION"] = "eu-west-1",
                ["AWS_ENDPOINT_URL"] = "http://127.0.0.1:1",
                ["AWS_ENDPOINT_URL_SSM"] = "http://127.0.0.1:2",
                ["AWS_ACCESS_KEY_ID"] = "AKID",
                ["AWS_SECRET_ACCESS_KEY"] = "secret",
                ["AWS_SESSION_TOKEN"] = "token",
            }));
            Assert.Equal("dev", o.Profile);
            Assert.Equal("eu-west-1", o.Region);
            Assert.Equal("http://127.0.0.1:2", o.EndpointUrl);
            Assert.Equal("AKID", o.AccessKey);
            Assert.Equal("secret", o.SecretKey);
            Assert.Equal("token", o.SessionToken);

            var r = new SsmClientOptions().WithEnvironmentDefaults(Env(new Dictionary<string, string> { ["AWS_REGION"] = "us-west-2", ["AWS_DEFAULT_REGION"] = "eu-west-1" }));
            Assert.Equal("us-west-2", r.Region);
            Assert.Null(r.AccessKey);
        }

        [Fact]
        public void Parameters_win_over_the_environment()
        {
            var vars = new Dictionary<string, string>
            {
                ["AWS_PROFILE"] = "dev",
                ["AWS_REGION"] = "eu-west-1",
                ["AWS_ENDPOINT_URL_SSM"] = "http://127.0.0.1:2",
                ["AWS_ACCESS_KEY_ID"] = "AKID",
                ["AWS_SECRET_ACCESS_KEY"] = "secret",
            };
            var o = new SsmClientOptions { Profile = "prod", Region = "us-east-1", EndpointUrl = "https://ssm.example" }.WithEnvironmentDefaults(Env(vars));
            Assert.Equal("prod", o.Profile);
            Assert.Equal("us-east-1", o.Region);
            Assert.Equal("https://ssm.example", o.EndpointUrl);
            // A profile given as a parameter is not overridden by keys from the environment.
            Assert.Null(o.AccessKey);

            var keys = new SsmClientOptions { AccessKey = "MINE", SecretKey = "mine" }.WithEnvironmentDefaults(Env(vars));
            Assert.Equal("MINE", keys.AccessKey);
            Assert.Equal("mine", keys.SecretKey);
        }

        [Fact]
        public void Configured_endpoints_can_be_ignored_as_the_sdk_allows()
        {
            var o = new SsmClientOptions().WithEnvironmentDefaults(Env(new Dictionary<string, string>
            {
                ["AWS_ENDPOINT_URL_SSM"] = "http://127.0.0.1:2",
                ["AWS_IGNORE_CONFIGURED_ENDPOINT_URLS"] = "true",
            }));
            Assert.Null(o.EndpointUrl);
        }

        [Theory]
        [InlineData("10.0.0.2", "10.0.0.2:53")]
        [InlineData(" 10.0.0.2:5353 ", "10.0.0.2:5353")]
        [InlineData("::1", "[::1]:53")]
        [InlineData("[::1]", "[::1]:53")]
        [InlineData("[fd00::2]:5353", "[fd00::2]:5353")]
        public void Dns_servers_become_address_and_port(string given, string expected)
        {
            Assert.Equal(expected, DnsServerAddress.Normalize(given));
        }

        [Theory]
        [InlineData("dns.example")]
        [InlineData("10.0.0.2:")]
        [InlineData("10.0.0.2:99999")]
        public void Dns_servers_that_are_no_address_are_refused(string given)
        {
            Assert.Throws<ArgumentException>(() => DnsServerAddress.Normalize(given));
        }

        [Fact]
        public void No_dns_server_stays_none()
        {
            Assert.Null(DnsServerAddress.Normalize(null));
            Assert.Null(DnsServerAddress.Normalize("  "));
        }

        [Fact]
        public void The_helper_gets_the_dns_server()
        {
            var inv = SshInvocation.Build(
                new SshOptions { HelperPath = "/x/ssmconnect", Target = "web.internal", DnsServer = "10.0.0.2:53" },
                windows: false);
            Assert.Equal("/x/ssmconnect --dns-server 10.0.0.2:53 ssh-proxy %r@%h:%p", inv.ProxyCommand);
        }
    }
}
