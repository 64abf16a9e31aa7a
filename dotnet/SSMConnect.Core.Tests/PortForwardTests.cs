using System;
using System.Diagnostics;
using System.Net;
using System.Net.Sockets;
using System.Security.Cryptography;
using System.Threading;
using System.Threading.Tasks;
using Xunit;

namespace SSMConnect.Tests
{
    /// <summary>Port forwards through the real native library to the emulator.</summary>
    [Collection(NativeCollection.Name)]
    public class PortForwardTests
    {
        private const string Instance = "i-0123456789abcdef0";
        private static readonly TimeSpan Deadline = TimeSpan.FromSeconds(60);

        [Fact]
        public void The_native_library_reports_its_version()
        {
            Assert.Matches(@"^\d+\.\d+\.\d+", SsmClient.NativeVersion);
        }

        [Fact]
        public async Task A_forward_listens_on_the_chosen_port_moves_16_MiB_intact_and_stop_frees_the_port()
        {
            using var emu = Emulator.Start(null, "--unpaced");
            using var echo = new EchoServer();
            using var client = new SsmClient(emu.ClientOptions());
            using var cts = new CancellationTokenSource(Deadline);

            var forward = await client.StartForwardAsync(new ForwardRequest { Target = Instance, RemotePort = (ushort)echo.Port }, cts.Token);
            try
            {
                Assert.NotEqual(0, forward.LocalPort);
                Assert.Equal("127.0.0.1", forward.LocalAddress);
                Assert.Equal($"127.0.0.1:{forward.LocalPort}", forward.LocalEndpoint);
                Assert.Equal(Instance, forward.Target);
                Assert.Equal(Instance, forward.InstanceId);
                Assert.Equal(echo.Port, forward.RemotePort);
                Assert.False(string.IsNullOrEmpty(forward.SessionId), "no session id");
                Assert.Contains(forward.Mode, new[] { "Basic", "Multiplexed" });
                Assert.Equal(OperationState.Running, forward.State);
                Assert.Same(forward, ForwardRegistry.Get(forward.Id));
                Assert.Contains(forward, ForwardRegistry.All);

                var data = RandomNumberGenerator.GetBytes(16 * 1024 * 1024);
                var back = await Loopback.RoundTrip(forward.LocalPort, data, cts.Token);
                Assert.Equal(data.Length, back.Length);
                Assert.Equal(Convert.ToHexString(SHA256.HashData(data)), Convert.ToHexString(SHA256.HashData(back)));

                Assert.True(forward.BytesSent >= data.Length, $"BytesSent {forward.BytesSent}");
                Assert.True(forward.BytesReceived >= data.Length, $"BytesReceived {forward.BytesReceived}");
                Assert.True(forward.Connections >= 1, $"Connections {forward.Connections}");
            }
            finally
            {
                Assert.True(forward.Stop(), "the forward did not finish within the stop timeout");
            }

            Assert.NotEqual(OperationState.Running, forward.State);
            Assert.Null(ForwardRegistry.Get(forward.Id));
            Assert.DoesNotContain(forward, ForwardRegistry.All);
            await Loopback.AssertNothingListens(forward.LocalPort);
            var sessions = await emu.Sessions();
            Assert.Contains(sessions, s => s.Id == forward.SessionId);
            Assert.True(await emu.AllSessionsEnded(), "the session was not terminated");
            // The last values stay readable after the handle is gone.
            Assert.True(forward.BytesSent >= 16 * 1024 * 1024);
        }

        [Fact]
        public async Task Ids_increase_and_several_forwards_coexist()
        {
            using var emu = Emulator.Start();
            using var echo = new EchoServer();
            using var client = new SsmClient(emu.ClientOptions());
            using var cts = new CancellationTokenSource(Deadline);
            var a = await client.StartForwardAsync(new ForwardRequest { Target = Instance, RemotePort = (ushort)echo.Port }, cts.Token);
            var b = await client.StartForwardAsync(new ForwardRequest { Target = Instance, RemotePort = (ushort)echo.Port }, cts.Token);
            try
            {
                Assert.True(b.Id > a.Id);
                Assert.NotEqual(a.LocalPort, b.LocalPort);
                var small = RandomNumberGenerator.GetBytes(4096);
                Assert.Equal(small, await Loopback.RoundTrip(b.LocalPort, small, cts.Token));
            }
            finally
            {
                a.Stop();
                b.Stop();
            }
        }

        [Fact]
        public async Task A_port_in_use_fails_at_once_with_PortInUse()
        {
            using var emu = Emulator.Start();
            using var client = new SsmClient(emu.ClientOptions());
            var busy = new TcpListener(IPAddress.Loopback, 0);
            busy.Start();
            try
            {
                var port = ((IPEndPoint)busy.LocalEndpoint).Port;
                var before = ForwardRegistry.All.Count;
                var watch = Stopwatch.StartNew();
                var e = await Assert.ThrowsAsync<SsmException>(() =>
                    client.StartForwardAsync(new ForwardRequest { Target = Instance, RemotePort = 22, LocalPort = (ushort)port }));
                Assert.Equal(SsmErrorKind.PortInUse, e.Kind);
                Assert.Equal("SSMConnect.PortInUse", e.ErrorId);
                Assert.Equal("ResourceUnavailable", e.CategoryName);
                Assert.Contains(port.ToString(System.Globalization.CultureInfo.InvariantCulture), e.Message, StringComparison.Ordinal);
                Assert.True(watch.Elapsed < TimeSpan.FromSeconds(10), $"took {watch.Elapsed}");
                Assert.Equal(before, ForwardRegistry.All.Count);
            }
            finally
            {
                busy.Stop();
            }
        }

        [Fact]
        public async Task A_target_the_service_does_not_know_is_not_connected()
        {
            using var emu = Emulator.Start(new { targets = new[] { "i-0aaaaaaaaaaaaaaa1" } });
            using var client = new SsmClient(emu.ClientOptions());
            var e = await Assert.ThrowsAsync<SsmException>(() =>
                client.StartForwardAsync(new ForwardRequest { Target = "i-0bbbbbbbbbbbbbbb2", RemotePort = 22 }));
            Assert.Equal(SsmErrorKind.TargetNotConnected, e.Kind);
            Assert.Equal("SSMConnect.TargetNotConnected", e.ErrorId);
            Assert.Contains("i-0bbbbbbbbbbbbbbb2", e.Message, StringComparison.Ordinal);
            Assert.Contains("AmazonSSMManagedInstanceCore", e.Message, StringComparison.Ordinal);
        }

        [Fact]
        public async Task A_plain_http_endpoint_off_loopback_is_a_configuration_error()
        {
            using var client = new SsmClient(new SsmClientOptions
            {
                EndpointUrl = "http://192.0.2.1:4566",
                Region = Emulator.Region,
                AccessKey = Emulator.AccessKey,
                SecretKey = Emulator.SecretKey,
            });
            var e = await Assert.ThrowsAsync<SsmException>(() =>
                client.StartForwardAsync(new ForwardRequest { Target = Instance, RemotePort = 22 }));
            Assert.Equal(SsmErrorKind.Configuration, e.Kind);
            Assert.Equal("SSMConnect.Configuration", e.ErrorId);
        }

        [Fact]
        public async Task Cancelling_during_connect_leaves_nothing_listening()
        {
            // Every frame to the client is lost, so the handshake never completes.
            using var emu = Emulator.Start(null, "--faults", "{\"to_client\":{\"drop\":1.0}}");
            using var client = new SsmClient(emu.ClientOptions());
            var port = Loopback.FreePort();
            using var op = client.BeginForward(new ForwardRequest { Target = Instance, RemotePort = 22, LocalPort = (ushort)port });

            // The port is bound before the session starts; wait until the work got that far.
            var watch = Stopwatch.StartNew();
            while (!await Loopback.Listens(port))
            {
                Assert.Equal(OperationState.Running, op.State);
                Assert.True(watch.Elapsed < TimeSpan.FromSeconds(20), "the forward never bound its port");
                await Task.Delay(20);
            }
            Assert.Equal(OperationState.Running, op.State);

            using var cts = new CancellationTokenSource();
            var stages = new System.Collections.Generic.List<string>();
            var wait = op.WaitAsync(cts.Token, stages.Add);
            await Task.Delay(200);
            cts.Cancel();
            await Assert.ThrowsAnyAsync<OperationCanceledException>(() => wait);

            Assert.Equal(OperationState.Cancelled, op.State);
            Assert.Equal(SsmErrorKind.Cancelled, op.Error?.Kind);
            Assert.NotEmpty(stages);
            Assert.Throws<InvalidOperationException>(() => op.TakeForward());
            await Loopback.AssertNothingListens(port);
            Assert.True(await emu.AllSessionsEnded(), "a session was left open after the cancel");
        }

        [Fact]
        public async Task Native_log_lines_can_be_drained()
        {
            NativeLog.Enable(NativeLogLevel.Trace);
            try
            {
                using var emu = Emulator.Start();
                using var echo = new EchoServer();
                using var client = new SsmClient(emu.ClientOptions());
                var forward = await client.StartForwardAsync(new ForwardRequest { Target = Instance, RemotePort = (ushort)echo.Port });
                await Loopback.RoundTrip(forward.LocalPort, new byte[] { 1, 2, 3 }, CancellationToken.None);
                forward.Stop();
                var lines = new System.Collections.Generic.List<(NativeLogLevel, string)>();
                NativeLog.Drain((level, line) => lines.Add((level, line)));
                Assert.NotEmpty(lines);
                Assert.All(lines, l => Assert.InRange((int)l.Item1, 1, 5));
                Assert.Equal(0, NativeLog.Drain((_, _) => { }));
            }
            finally
            {
                NativeLog.Enable(NativeLogLevel.Off);
                NativeLog.Drain((_, _) => { });
            }
        }
    }
}
