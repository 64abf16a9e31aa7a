using System;
using System.Collections;
using System.Collections.Generic;
using Xunit;

namespace SSMConnect.Tests
{
    public class TargetBindingTests
    {
        // Shaped like Amazon.EC2.Model.Instance and Reservation.
        public sealed class Instance
        {
            public string? InstanceId { get; set; }
            public string PrivateIpAddress { get; set; } = "10.0.0.1";
        }

        public sealed class Reservation
        {
            public string ReservationId { get; set; } = "r-1";
            public List<Instance> Instances { get; set; } = new List<Instance>();
        }

        // Stands in for PowerShell's PSObject: a wrapper the adapter sees through.
        private sealed class Wrapper
        {
            public Wrapper(object inner) => Inner = inner;
            public object Inner { get; }
        }

        // Stands in for a PSCustomObject: properties only the adapter can read.
        private sealed class Bag
        {
            public Dictionary<string, object?> Props { get; } = new Dictionary<string, object?>(StringComparer.OrdinalIgnoreCase);
        }

        private static readonly TargetBinding.Adapter Adapter = new TargetBinding.Adapter
        {
            Unwrap = o => o is Wrapper w ? w.Inner : o,
            ReadProperty = (o, name) => o is Bag b && b.Props.TryGetValue(name, out var v) ? (true, v) : (false, null),
        };

        [Fact]
        public void A_string_is_a_target()
        {
            Assert.Equal(new[] { "i-0123456789abcdef0" }, TargetBinding.Expand("  i-0123456789abcdef0 "));
            Assert.Equal(new[] { "Name:web" }, TargetBinding.Expand("Name:web"));
        }

        [Fact]
        public void An_object_with_InstanceId_binds_by_property()
        {
            Assert.Equal(new[] { "i-1" }, TargetBinding.Expand(new Instance { InstanceId = "i-1" }));
            Assert.Equal(new[] { "i-2" }, TargetBinding.Expand(new { InstanceId = "i-2", Other = 5 }));
            Assert.Equal(new[] { "i-3" }, TargetBinding.Expand(new { instanceid = "i-3" }));
        }

        [Fact]
        public void Each_instance_of_a_reservation_becomes_a_target()
        {
            var r = new Reservation
            {
                Instances = { new Instance { InstanceId = "i-a" }, new Instance { InstanceId = "i-b" } },
            };
            Assert.Equal(new[] { "i-a", "i-b" }, TargetBinding.Expand(r));
            Assert.Equal(new[] { "i-a", "i-b", "i-c" }, TargetBinding.Expand(new object[] { r, "i-c" }));
        }

        [Fact]
        public void Dictionaries_with_those_keys_bind()
        {
            Assert.Equal(new[] { "i-h" }, TargetBinding.Expand(new Hashtable { ["instanceId"] = "i-h" }));
            var reservation = new Dictionary<string, object>
            {
                ["Instances"] = new List<object> { new Dictionary<string, object> { ["InstanceId"] = "i-x" }, new Instance { InstanceId = "i-y" } },
            };
            Assert.Equal(new[] { "i-x", "i-y" }, TargetBinding.Expand(reservation));
        }

        [Fact]
        public void Wrapped_objects_go_through_the_adapter()
        {
            var bag = new Bag();
            bag.Props["InstanceId"] = new Wrapper("i-wrapped");
            Assert.Equal(new[] { "i-wrapped" }, TargetBinding.Expand(new Wrapper(bag), Adapter));
            var res = new Bag();
            res.Props["Instances"] = new Wrapper(new object[] { new Wrapper(new Instance { InstanceId = "i-1" }), new Wrapper("i-2") });
            Assert.Equal(new[] { "i-1", "i-2" }, TargetBinding.Expand(new Wrapper(res), Adapter));
        }

        [Fact]
        public void Objects_without_a_target_are_refused_with_a_reason()
        {
            var e = Assert.Throws<ArgumentException>(() => TargetBinding.Expand(new { Name = "web" }));
            Assert.Contains("InstanceId", e.Message, StringComparison.Ordinal);
            Assert.Throws<ArgumentException>(() => TargetBinding.Expand(null));
            Assert.Throws<ArgumentException>(() => TargetBinding.Expand("   "));
            Assert.Throws<ArgumentException>(() => TargetBinding.Expand(new Reservation()));
            Assert.Throws<ArgumentException>(() => TargetBinding.Expand(new Instance { InstanceId = null }));
            Assert.Throws<ArgumentException>(() => TargetBinding.Expand(42));
        }

        [Fact]
        public void Region_comes_from_the_parameter_then_the_stored_region_then_nowhere()
        {
            Assert.Equal("eu-west-1", RegionResolver.Resolve("eu-west-1", "us-east-1"));
            Assert.Equal("us-east-1", RegionResolver.Resolve(null, "us-east-1"));
            Assert.Equal("us-east-1", RegionResolver.Resolve("  ", " us-east-1 "));
            Assert.Null(RegionResolver.Resolve(null, null));
            Assert.Null(RegionResolver.Resolve(string.Empty, string.Empty));
        }
    }
}
