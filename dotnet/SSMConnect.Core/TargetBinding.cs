using System;
using System.Collections;
using System.Collections.Generic;
using System.Reflection;

namespace SSMConnect
{
    /// <summary>
    /// Turns what a user or a pipeline hands to <c>-Target</c> into target strings: strings as
    /// they are; objects with an <c>InstanceId</c> property (an EC2 <c>Instance</c>, what
    /// <c>Select-Object -ExpandProperty Instances</c> emits); objects with an <c>Instances</c>
    /// property (an EC2 <c>Reservation</c>, what <c>Get-EC2Instance</c> emits), each instance
    /// becoming one target; dictionaries with those keys; and collections of any of these.
    /// </summary>
    /// <remarks>
    /// PowerShell objects are read through the caller's <see cref="Adapter"/> (this assembly has
    /// no PowerShell reference); anything else by reflection.
    /// </remarks>
    public static class TargetBinding
    {
        /// <summary>The property naming one instance.</summary>
        public const string InstanceIdProperty = "InstanceId";

        /// <summary>The property holding a reservation's instances.</summary>
        public const string InstancesProperty = "Instances";

        private const int MaxDepth = 8;

        /// <summary>How to see through wrapper objects (PowerShell's PSObject) and read their properties.</summary>
        public sealed class Adapter
        {
            /// <summary>Returns the object a wrapper stands for (or the object itself).</summary>
            public Func<object, object>? Unwrap { get; set; }

            /// <summary>Reads a property by name, case-insensitively; false when it has none.</summary>
            public Func<object, string, (bool Found, object? Value)>? ReadProperty { get; set; }
        }

        /// <summary>The target strings in <paramref name="input"/>, in order.</summary>
        /// <exception cref="ArgumentException">Some part of the input holds no target; the message says which.</exception>
        public static IReadOnlyList<string> Expand(object? input, Adapter? adapter = null)
        {
            var targets = new List<string>();
            Collect(input, adapter, targets, 0);
            return targets;
        }

        private static void Collect(object? input, Adapter? adapter, List<string> targets, int depth)
        {
            if (depth > MaxDepth)
            {
                throw new ArgumentException("the target object is nested too deeply");
            }
            if (input is not null && adapter?.Unwrap is not null)
            {
                input = adapter.Unwrap(input);
            }
            switch (input)
            {
                case null:
                    throw new ArgumentException("the target is empty (null)");
                case string s:
                    var t = s.Trim();
                    if (t.Length == 0)
                    {
                        throw new ArgumentException("the target is an empty string");
                    }
                    targets.Add(t);
                    return;
                case IDictionary dict:
                    if (TryDictionary(dict, InstanceIdProperty, out var idValue))
                    {
                        CollectId(idValue, adapter, targets, depth);
                        return;
                    }
                    if (TryDictionary(dict, InstancesProperty, out var instances))
                    {
                        CollectInstances(instances, adapter, targets, depth);
                        return;
                    }
                    throw NoTarget(input);
            }
            if (TryProperty(input, InstanceIdProperty, adapter, out var id))
            {
                CollectId(id, adapter, targets, depth);
                return;
            }
            if (TryProperty(input, InstancesProperty, adapter, out var list))
            {
                CollectInstances(list, adapter, targets, depth);
                return;
            }
            if (input is IEnumerable items)
            {
                foreach (var item in items)
                {
                    Collect(item, adapter, targets, depth + 1);
                }
                return;
            }
            throw NoTarget(input);
        }

        private static void CollectId(object? value, Adapter? adapter, List<string> targets, int depth)
        {
            if (value is not null && adapter?.Unwrap is not null)
            {
                value = adapter.Unwrap(value);
            }
            // InstanceId is a string in the AWS SDK; anything else (an enum, a wrapper) by its text.
            var text = value switch
            {
                null => null,
                string s => s,
                IEnumerable and not string => null,
                _ => value.ToString(),
            };
            if (text is null)
            {
                if (value is IEnumerable many)
                {
                    foreach (var v in many)
                    {
                        CollectId(v, adapter, targets, depth + 1);
                    }
                    return;
                }
                throw new ArgumentException("the object's InstanceId is empty");
            }
            Collect(text, adapter, targets, depth + 1);
        }

        private static void CollectInstances(object? value, Adapter? adapter, List<string> targets, int depth)
        {
            if (value is not null && adapter?.Unwrap is not null)
            {
                value = adapter.Unwrap(value);
            }
            if (value is null || value is string || value is not IEnumerable items)
            {
                throw new ArgumentException("the object's Instances property is not a list of instances");
            }
            var before = targets.Count;
            foreach (var item in items)
            {
                Collect(item, adapter, targets, depth + 1);
            }
            if (targets.Count == before)
            {
                throw new ArgumentException("the object's Instances list is empty");
            }
        }

        private static bool TryDictionary(IDictionary dict, string key, out object? value)
        {
            foreach (DictionaryEntry e in dict)
            {
                if (e.Key is string k && string.Equals(k, key, StringComparison.OrdinalIgnoreCase))
                {
                    value = e.Value;
                    return true;
                }
            }
            value = null;
            return false;
        }

        private static bool TryProperty(object obj, string name, Adapter? adapter, out object? value)
        {
            if (adapter?.ReadProperty is not null)
            {
                var (found, v) = adapter.ReadProperty(obj, name);
                if (found)
                {
                    value = v;
                    return true;
                }
            }
            var prop = obj.GetType().GetProperty(name, BindingFlags.Public | BindingFlags.Instance | BindingFlags.IgnoreCase);
            if (prop is not null && prop.GetIndexParameters().Length == 0)
            {
                value = prop.GetValue(obj);
                return true;
            }
            value = null;
            return false;
        }

        private static ArgumentException NoTarget(object input) =>
            new ArgumentException(
                $"a {input.GetType().Name} is not a target: give an instance id, tag, address or DNS name, " +
                "or an object with an InstanceId or Instances property (Get-EC2Instance output)");
    }
}
