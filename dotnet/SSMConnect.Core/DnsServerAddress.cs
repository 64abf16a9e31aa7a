using System;
using System.Globalization;
using System.Net;
using System.Net.Sockets;

namespace SSMConnect
{
    /// <summary>The DNS server given for DNS-name targets, as the native library wants it: <c>ADDR:PORT</c>.</summary>
    public static class DnsServerAddress
    {
        /// <summary>The default DNS port.</summary>
        public const int DefaultPort = 53;

        /// <summary>
        /// <c>ADDR</c>, <c>ADDR:PORT</c>, <c>[V6]</c> or <c>[V6]:PORT</c> as <c>ADDR:PORT</c>
        /// (IPv6 in brackets); null stays null.
        /// </summary>
        /// <exception cref="ArgumentException">Not an IP address with an optional port.</exception>
        public static string? Normalize(string? value)
        {
            if (string.IsNullOrWhiteSpace(value))
            {
                return null;
            }
            var text = value.Trim();
            var bare = text.StartsWith("[", StringComparison.Ordinal) && text.EndsWith("]", StringComparison.Ordinal) ? text[1..^1] : text;
            if (IPAddress.TryParse(bare, out var address) && !bare.Contains('[', StringComparison.Ordinal))
            {
                return Format(address, DefaultPort);
            }
            if (IPEndPoint.TryParse(text, out var endpoint) && endpoint.Port != 0)
            {
                return Format(endpoint.Address, endpoint.Port);
            }
            throw new ArgumentException($"the DNS server {value} is not ADDR or ADDR:PORT with an IP address");
        }

        private static string Format(IPAddress address, int port) =>
            address.AddressFamily == AddressFamily.InterNetworkV6
                ? $"[{address}]:{port.ToString(CultureInfo.InvariantCulture)}"
                : $"{address}:{port.ToString(CultureInfo.InvariantCulture)}";
    }
}
