using System;
using System.Collections.Generic;
using Xunit;

namespace SSMConnect.Tests
{
    [Collection(NativeCollection.Name)]
    public class OptionsTests
    {
        [Fact]
        public void The_aws_environment_is_handed_over_as_it_is()
        {
            using var region = NativeEnvironment.Set("AWS_REGION", " eu-west-1 ");
            using var other = NativeEnvironment.Set("NOT_AWS_REGION", "x");
            var o = new SsmClientOptions().WithAwsEnvironment();
            Assert.NotNull(o.Environment);
            Assert.Equal(" eu-west-1 ", o.Environment!["AWS_REGION"]);
            Assert.False(o.Environment.ContainsKey("NOT_AWS_REGION"));
            Assert.Contains("\"environment\":{", RequestJson.Serialize(o), StringComparison.Ordinal);
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
