using System;
using System.Collections.Generic;
using System.IO;
using System.Linq;
using System.Net;
using System.Net.Sockets;

namespace SSMConnect.Tests
{
    /// <summary>
    /// dnsmasq on 127.0.0.1 as a small internal resolver: the given records, no upstream and no
    /// <c>--local</c>, so every name and type it has no record for is answered REFUSED
    /// (<c>--address=/web.test/10.0.0.10</c> answers A and refuses AAAA and TXT).
    /// </summary>
    internal sealed class Dnsmasq : LoopbackDaemon
    {
        private readonly string[] records;

        private Dnsmasq(string[] records)
            : base("dnsmasq")
        {
            this.records = records;
        }

        /// <summary>The server as <c>-DnsServer</c> takes it.</summary>
        internal string Address => $"127.0.0.1:{Port}";

        protected override string Program { get; } =
            new[] { "/usr/sbin/dnsmasq", "/usr/bin/dnsmasq" }.FirstOrDefault(File.Exists) ?? "/usr/sbin/dnsmasq";

        protected override TimeSpan ReadyTimeout => TimeSpan.FromSeconds(10);

        /// <summary>Starts dnsmasq with <paramref name="records"/>, given as options (<c>--address=…</c>, <c>--txt-record=…</c>).</summary>
        internal static Dnsmasq StartRefusing(params string[] records) => Launch(new Dnsmasq(records));

        protected override IEnumerable<string> Configure(int port)
        {
            var lines = new List<string>
            {
                $"port={port}", "listen-address=127.0.0.1", "bind-interfaces", "no-resolv", "no-hosts", "no-poll",
                "cache-size=0", $"pid-file={Path.Combine(Directory, "dnsmasq.pid")}",
            };
            // As root it would switch to `nobody`; staying root changes nothing it reads.
            if (Environment.UserName == "root")
            {
                lines.Add("user=root");
            }
            lines.AddRange(records.Select(r => r.TrimStart('-')));
            var conf = Path.Combine(Directory, "dnsmasq.conf");
            File.WriteAllLines(conf, lines);
            return new[] { "--no-daemon", $"--conf-file={conf}" };
        }

        /// <summary>Whether anything answers a query for <c>ready.test</c> A (REFUSED will do).</summary>
        protected override bool IsReady(int port, string log)
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
    }
}
