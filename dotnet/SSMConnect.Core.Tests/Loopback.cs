using System;
using System.Collections.Generic;
using System.Diagnostics;
using System.IO;
using System.Net;
using System.Net.Sockets;
using System.Threading;
using System.Threading.Tasks;
using Xunit;

namespace SSMConnect.Tests
{
    /// <summary>Loopback ports, and traffic through a forward.</summary>
    internal static class Loopback
    {
        internal static async Task<byte[]> RoundTrip(int port, byte[] data, CancellationToken ct)
        {
            using var tcp = new TcpClient();
            await tcp.ConnectAsync(IPAddress.Loopback, port, ct);
            var stream = tcp.GetStream();
            var writer = Task.Run(
                async () =>
                {
                    for (var off = 0; off < data.Length; off += 64 * 1024)
                    {
                        await stream.WriteAsync(data.AsMemory(off, Math.Min(64 * 1024, data.Length - off)), ct);
                    }
                },
                ct);
            var back = new MemoryStream(data.Length);
            var buf = new byte[64 * 1024];
            while (back.Length < data.Length)
            {
                var n = await stream.ReadAsync(buf, ct);
                if (n == 0)
                {
                    break;
                }
                back.Write(buf, 0, n);
            }
            await writer;
            return back.ToArray();
        }

        internal static int FreePort()
        {
            var l = new TcpListener(IPAddress.Loopback, 0);
            l.Start();
            var port = ((IPEndPoint)l.LocalEndpoint).Port;
            l.Stop();
            return port;
        }

        internal static async Task<bool> Listens(int port)
        {
            using var tcp = new TcpClient();
            try
            {
                await tcp.ConnectAsync(IPAddress.Loopback, port);
                return true;
            }
            catch (SocketException)
            {
                return false;
            }
        }

        /// <summary>Connections to the port are refused (allowing the listener a moment to close).</summary>
        internal static async Task AssertNothingListens(int port)
        {
            var watch = Stopwatch.StartNew();
            while (await Listens(port))
            {
                Assert.True(watch.Elapsed < TimeSpan.FromSeconds(5), $"something still listens on 127.0.0.1:{port}");
                await Task.Delay(50);
            }
            // And the port can be bound again.
            var l = new TcpListener(IPAddress.Loopback, port);
            l.Start();
            l.Stop();
        }
    }

    /// <summary>A loopback TCP echo server on a port the OS picks.</summary>
    internal sealed class EchoServer : IDisposable
    {
        private readonly System.Net.Sockets.TcpListener listener;
        private readonly List<System.Net.Sockets.TcpClient> clients = new List<System.Net.Sockets.TcpClient>();

        internal EchoServer()
        {
            listener = new System.Net.Sockets.TcpListener(System.Net.IPAddress.Loopback, 0);
            listener.Start();
            Port = ((System.Net.IPEndPoint)listener.LocalEndpoint).Port;
            _ = AcceptLoop();
        }

        internal int Port { get; }

        private async Task AcceptLoop()
        {
            while (true)
            {
                System.Net.Sockets.TcpClient c;
                try
                {
                    c = await listener.AcceptTcpClientAsync().ConfigureAwait(false);
                }
                catch (Exception e) when (e is ObjectDisposedException || e is System.Net.Sockets.SocketException || e is InvalidOperationException)
                {
                    return;
                }
                lock (clients)
                {
                    clients.Add(c);
                }
                _ = Echo(c);
            }
        }

        private static async Task Echo(System.Net.Sockets.TcpClient c)
        {
            try
            {
                var s = c.GetStream();
                var buf = new byte[64 * 1024];
                int n;
                while ((n = await s.ReadAsync(buf).ConfigureAwait(false)) > 0)
                {
                    await s.WriteAsync(buf.AsMemory(0, n)).ConfigureAwait(false);
                }
                c.Client.Shutdown(System.Net.Sockets.SocketShutdown.Send);
            }
            catch (Exception e) when (e is IOException || e is System.Net.Sockets.SocketException || e is ObjectDisposedException)
            {
            }
        }

        public void Dispose()
        {
            listener.Stop();
            lock (clients)
            {
                foreach (var c in clients)
                {
                    c.Dispose();
                }
            }
        }
    }
}
