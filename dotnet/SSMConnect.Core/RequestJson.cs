using System;
using System.Text.Json;
using System.Text.Json.Serialization;

namespace SSMConnect
{
    /// <summary>
    /// Requests to the native library are JSON in ASCII (the C ABI takes ASCII strings). The
    /// default System.Text.Json encoder escapes every non-ASCII character as <c>\uXXXX</c>, so
    /// the text is ASCII whatever the values hold; <see cref="Serialize{T}"/> checks it anyway.
    /// </summary>
    public static class RequestJson
    {
        private static readonly JsonSerializerOptions Options = new JsonSerializerOptions
        {
            DefaultIgnoreCondition = JsonIgnoreCondition.WhenWritingNull,
        };

        /// <summary>The request as ASCII JSON.</summary>
        /// <exception cref="InvalidOperationException">The encoder produced non-ASCII text (never expected).</exception>
        public static string Serialize<T>(T request)
        {
            var json = JsonSerializer.Serialize(request, Options);
            foreach (var c in json)
            {
                if (c > 0x7f)
                {
                    throw new InvalidOperationException("internal error: request JSON is not ASCII");
                }
            }
            return json;
        }
    }
}
