using System.Collections.Generic;
using System.Linq;
using System.Text.Json;
using Xunit;

namespace SSMConnect.Tests
{
    public class RequestJsonTests
    {
        [Fact]
        public void Non_ascii_values_are_escaped_so_the_text_is_ascii()
        {
            var target = "Name:caf\u00e9-\U0001F600-\u4e2d";
            var json = RequestJson.Serialize(new ForwardRequest { Target = target, RemotePort = 22 });
            Assert.All(json, c => Assert.True(c < 0x80, $"non-ASCII char U+{(int)c:X4} in {json}"));
            using var doc = JsonDocument.Parse(json);
            Assert.Equal(target, doc.RootElement.GetProperty("target").GetString());
        }

        [Fact]
        public void Names_are_snake_case_and_nulls_are_left_out()
        {
            var json = RequestJson.Serialize(new SsmClientOptions { Region = "us-east-1", EndpointUrl = "http://127.0.0.1:1", AccessKey = "a", SecretKey = "s" });
            using var doc = JsonDocument.Parse(json);
            var names = doc.RootElement.EnumerateObject().Select(p => p.Name).OrderBy(n => n).ToArray();
            Assert.Equal(new[] { "access_key", "endpoint_url", "region", "secret_key" }, names);

            var fwd = RequestJson.Serialize(new ForwardRequest { Target = "i-1", RemotePort = 5432, LocalPort = 15432, RemoteHost = "db" });
            using var f = JsonDocument.Parse(fwd);
            Assert.Equal(5432, f.RootElement.GetProperty("remote_port").GetInt32());
            Assert.Equal(15432, f.RootElement.GetProperty("local_port").GetInt32());
            Assert.Equal("db", f.RootElement.GetProperty("remote_host").GetString());
            Assert.False(f.RootElement.TryGetProperty("local_address", out _));

            var shell = RequestJson.Serialize(new ShellRequest
            {
                Target = "i-1",
                Parameters = new Dictionary<string, string[]> { ["commands"] = new[] { "echo hi" } },
            });
            using var s = JsonDocument.Parse(shell);
            Assert.Equal("echo hi", s.RootElement.GetProperty("parameters").GetProperty("commands")[0].GetString());
        }
    }
}
