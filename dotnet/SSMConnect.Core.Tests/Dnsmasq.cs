using System;
using System.Diagnostics;
using System.IO;
using System.Net;
using System.Net.Sockets;
using System.Threading;

namespace SSMConnect.Tests
{
    /// <summary>
    /// dnsmasq on 127.0.0.1 as a small internal resolver: the given records, no upstream and no
    /// <c>--local</c>, so every name and type it has no record for is answered REFUSED
    /// (<c>--address=/web.test/10.0.0.10</c> answers A and refuses AAAA and TXT).
    /// </summary>
    internal sealed class Dnsmasq : IDisposable
    {
        private static readonly string[] Paths = { "/usr/sbin/dnsmasq", "/usr/bin/dnsmasq" };
        private readonly Process process;

        private Dnsmasq(Process process, int port)
        {
            this.process = process;
            Port = port;
        }

        internal int Port { get; }

        /// <summary>The server as <c>-DnsServer</c> takes it.</summary>
        internal string Address => $"127.0.0.1:{Port}";

        internal static Dnsmasq StartRefusing(params string[] records)
        {
            var exe = Array.Find(Paths, File.Exists)
                ?? throw new FileNotFoundException("dnsmasq is missing: install dnsmasq (.ci/run does)");
            var last = string.Empty;
            for (var attempt = 0; attempt < 3; attempt++)
            {
                var port = PortForwardTests.FreePort();
                var psi = new ProcessStartInfo(exe) { UseShellExecute = false, RedirectStandardError = true, RedirectStandardOutput = true };
                foreach (var a in new[]
                {
                    "--no-daemon", $"--port={port}", "--listen-address=127.0.0.1", "--bind-interfaces", "--no-resolv",
                    "--no-hosts", "--no-poll", "--conf-file=/dev/null", "--cache-size=0",
                })
                {
                    psi.ArgumentList.Add(a);
                }
                // As root it would switch to `nobody`; staying root changes nothing it reads.
                if (Environment.UserName == "root")
                {
                    psi.ArgumentList.Add("--user=root");
                }
                foreach (var r in records)
                {
                    psi.ArgumentList.Add(r);
                }
                var p = Process.Start(psi) ?? throw new InvalidOperationException("cannot start dnsmasq");
                var watch = Stopwatch.StartNew();
                while (watch.Elapsed < TimeSpan.FromSeconds(10) && !p.HasExited)
                {
                    if (Answers(port))
                    {
                        return new Dnsmasq(p, port);
                    }
                    Thread.Sleep(50);
                }
                last = p.HasExited ? p.StandardError.ReadToEnd() : "(no answer within 10 s)";
                Stop(p);
            }
            throw new InvalidOperationException("dnsmasq did not start: " + last);
        }

        /// <summary>Whether anything answers a query for <c>ready.test</c> A (REFUSED will do).</summary>
        private static bool Answers(int port)
        {
            using var udp = new UdpClient(AddressFamily.InterNetwork);
            udp.Client.ReceiveTimeout = 200;
            var query = new byte[] { 0x12, 0x34, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0, 5, (byte)'r', (byte)'e', (byte)'a', (byte)'d', (byte)'y', 4, (byte)'t', (byte)'e', (byte)'s', (byte)'t', 0, 0, 1, 0, 1 };
            try
            {
                udp.Send(query, query.Length, new IPEndPoint(IPAddress.Loopback, port));
                IPEndPoint? from = null;
                var reply = udp.Receive(ref from);
                return reply.Length >= 12 && reply[0] == 0x12 && reply[1] == 0x34;
            }
            catch (SocketException)
            {
                return false;
            }
        }

        private static void Stop(Process p)
        {
            try
            {
                if (!p.HasExited)
                {
                    p.Kill();
                    p.WaitForExit(5000);
                }
            }
            catch (InvalidOperationException)
            {
            }
            p.Dispose();
        }

        public void Dispose() => Stop(process);
    }
}
