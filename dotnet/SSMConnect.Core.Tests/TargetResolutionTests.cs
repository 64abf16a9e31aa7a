using System;
using System.Threading;
using System.Threading.Tasks;
using Xunit;

namespace SSMConnect.Tests
{
    /// <summary>
    /// Targets other than instance ids are resolved by the native library with EC2
    /// DescribeInstances, here at the emulator's inventory (AWS_ENDPOINT_URL_EC2).
    /// </summary>
    [Collection(NativeCollection.Name)]
    public class TargetResolutionTests
    {
        private static readonly object Inventory = new
        {
            inventory = new object[]
            {
                new { instance_id = "i-0aaaaaaaaaaaaaaa1", tags = new { Name = "web" } },
                new { instance_id = "i-0aaaaaaaaaaaaaaa2", tags = new { Name = "web" } },
                new { instance_id = "i-0ccccccccccccccc3", tags = new { Name = "db" } },
            },
        };

        [Fact]
        public async Task A_tag_resolves_to_its_one_instance_which_the_forward_reports()
        {
            using var emu = Emulator.Start(Inventory);
            using var env = NativeEnvironment.Set("AWS_ENDPOINT_URL_EC2", emu.Endpoint);
            using var echo = new EchoServer();
            using var client = new SsmClient(emu.ClientOptions());
            using var cts = new CancellationTokenSource(TimeSpan.FromSeconds(60));
            var stages = new System.Collections.Generic.List<string>();
            using var op = client.BeginForward(new ForwardRequest { Target = "Name:db", RemotePort = (ushort)echo.Port });
            await op.WaitAsync(cts.Token, stages.Add);
            var forward = op.TakeForward();
            try
            {
                Assert.Equal("Name:db", forward.Target);
                Assert.Equal("i-0ccccccccccccccc3", forward.InstanceId);
                // Stages come and go faster than a poll may see them; the last one is always seen.
                Assert.Contains(stages, s => s.Contains("i-0ccccccccccccccc3", StringComparison.Ordinal) || s == "Forwarding");
                var data = new byte[] { 1, 2, 3, 4 };
                Assert.Equal(data, await Loopback.RoundTrip(forward.LocalPort, data, cts.Token));
                var sessions = await emu.Sessions();
                Assert.Contains(sessions, s => s.Id == forward.SessionId && s.Target == "i-0ccccccccccccccc3");
            }
            finally
            {
                forward.Stop();
            }
        }

        [Fact]
        public async Task A_tag_several_instances_carry_is_ambiguous_and_lists_them()
        {
            using var emu = Emulator.Start(Inventory);
            using var env = NativeEnvironment.Set("AWS_ENDPOINT_URL_EC2", emu.Endpoint);
            using var client = new SsmClient(emu.ClientOptions());
            var e = await Assert.ThrowsAsync<SsmException>(() => client.StartForwardAsync(new ForwardRequest { Target = "Name:web", RemotePort = 22 }));
            Assert.Equal(SsmErrorKind.AmbiguousTarget, e.Kind);
            Assert.Equal("SSMConnect.AmbiguousTarget", e.ErrorId);
            Assert.Contains("i-0aaaaaaaaaaaaaaa1", e.Message, StringComparison.Ordinal);
            Assert.Contains("i-0aaaaaaaaaaaaaaa2", e.Message, StringComparison.Ordinal);
            Assert.Empty(await emu.Sessions());
        }

        [Fact]
        public async Task A_tag_no_instance_carries_is_not_found()
        {
            using var emu = Emulator.Start(Inventory);
            using var env = NativeEnvironment.Set("AWS_ENDPOINT_URL_EC2", emu.Endpoint);
            using var client = new SsmClient(emu.ClientOptions());
            var port = Loopback.FreePort();
            var e = await Assert.ThrowsAsync<SsmException>(() =>
                client.StartForwardAsync(new ForwardRequest { Target = "Name:nothing", RemotePort = 22, LocalPort = (ushort)port }));
            Assert.Equal(SsmErrorKind.TargetNotFound, e.Kind);
            Assert.Equal("SSMConnect.TargetNotFound", e.ErrorId);
            Assert.Equal("ObjectNotFound", e.CategoryName);
            await Loopback.AssertNothingListens(port);
        }

        [Fact]
        public async Task A_dns_name_resolves_through_the_one_type_a_resolver_answers()
        {
            // A small internal resolver: A answered, AAAA and TXT refused.
            using var dns = Dnsmasq.StartRefusing("--address=/web.test/10.0.0.10");
            using var emu = Emulator.Start(new
            {
                inventory = new object[] { new { instance_id = "i-0ddddddddddddddd4", private_ip = "10.0.0.10" } },
            });
            using var env = NativeEnvironment.Set("AWS_ENDPOINT_URL_EC2", emu.Endpoint);
            var options = emu.ClientOptions();
            options.DnsServer = dns.Address;
            using var client = new SsmClient(options);
            var forward = await client.StartForwardAsync(new ForwardRequest { Target = "web.test", RemotePort = 22 });
            try
            {
                Assert.Equal("i-0ddddddddddddddd4", forward.InstanceId);
            }
            finally
            {
                forward.Stop();
            }
        }

        [Fact]
        public async Task A_variable_set_only_in_the_managed_environment_reaches_the_native_library()
        {
            using var emu = Emulator.Start(new
            {
                inventory = new object[] { new { instance_id = "i-0ddddddddddddddd4", private_ip = "10.0.0.10" } },
            });
            // What `$env:AWS_ENDPOINT_URL_EC2 = ...` does in PowerShell on Unix: native getenv
            // never sees it, so only the handed-over environment can carry it.
            Environment.SetEnvironmentVariable("AWS_ENDPOINT_URL_EC2", emu.Endpoint);
            try
            {
                using var client = new SsmClient(emu.ClientOptions().WithAwsEnvironment());
                var forward = await client.StartForwardAsync(new ForwardRequest { Target = "10.0.0.10", RemotePort = 22 });
                Assert.Equal("i-0ddddddddddddddd4", forward.InstanceId);
                forward.Stop();
            }
            finally
            {
                Environment.SetEnvironmentVariable("AWS_ENDPOINT_URL_EC2", null);
            }
        }

        [Fact]
        public async Task A_dns_name_nothing_answers_for_lists_each_type()
        {
            using var dns = Dnsmasq.StartRefusing("--address=/web.test/10.0.0.10");
            using var emu = Emulator.Start(Inventory);
            using var env = NativeEnvironment.Set("AWS_ENDPOINT_URL_EC2", emu.Endpoint);
            var options = emu.ClientOptions();
            options.DnsServer = dns.Address;
            using var client = new SsmClient(options);
            var e = await Assert.ThrowsAsync<SsmException>(() =>
                client.StartForwardAsync(new ForwardRequest { Target = "nothing.test", RemotePort = 22 }));
            Assert.Equal(SsmErrorKind.ConnectionFailed, e.Kind);
            Assert.Equal("SSMConnect.ConnectionFailed", e.ErrorId);
            Assert.Equal("DNS lookup of nothing.test found nothing usable: A: refused, AAAA: refused, TXT: refused", e.Message);
            Assert.Empty(await emu.Sessions());
        }

        [Fact]
        public async Task A_malformed_dns_server_is_refused_at_once()
        {
            using var emu = Emulator.Start();
            var options = emu.ClientOptions();
            options.DnsServer = "not-an-address";
            var e = Assert.Throws<SsmException>(() => new SsmClient(options));
            Assert.Equal(SsmErrorKind.InvalidArgument, e.Kind);
            Assert.Contains("not-an-address", e.Message, StringComparison.Ordinal);
            // A well-formed one is accepted (instance ids are not looked up).
            options.DnsServer = "127.0.0.1";
            using var client = new SsmClient(options);
            var forward = await client.StartForwardAsync(new ForwardRequest { Target = "i-0123456789abcdef0", RemotePort = 22 });
            forward.Stop();
        }
    }
}
