using System;
using System.Collections.Generic;
using System.IO;
using System.Linq;
using System.Reflection;
using System.Runtime.InteropServices;
using System.Text.RegularExpressions;
using System.Xml.Linq;
using Xunit;

namespace SSMConnect.Tests
{
    /// <summary>
    /// The module's parts agree with each other: the cmdlets compiled into SSMConnect.dll, the
    /// manifest's explicit exports, the MAML help (every parameter, parameter set and example) and
    /// the format view. The assembly is only inspected (MetadataLoadContext), so this runs where no
    /// PowerShell engine exists; the Pester suite checks the same module inside pwsh.
    /// </summary>
    public sealed class ModuleSurfaceTests : IDisposable
    {
        private const string AllSets = "__AllParameterSets";
        private static readonly string[] ShouldProcessParameters = { "WhatIf", "Confirm" };

        private readonly MetadataLoadContext context;
        private readonly List<CmdletShape> cmdlets;
        private readonly string moduleDir;

        public ModuleSurfaceTests()
        {
            var outDir = AppContext.BaseDirectory;
            var paths = Directory.GetFiles(outDir, "*.dll")
                .Concat(Directory.GetFiles(RuntimeEnvironment.GetRuntimeDirectory(), "*.dll"))
                .GroupBy(Path.GetFileName, StringComparer.OrdinalIgnoreCase)
                .Select(g => g.First());
            context = new MetadataLoadContext(new PathAssemblyResolver(paths));
            var module = context.LoadFromAssemblyPath(Path.Combine(outDir, "SSMConnect.dll"));
            cmdlets = module.GetTypes()
                .Where(t => t.IsPublic && !t.IsAbstract)
                .Select(CmdletShape.From)
                .Where(c => c is not null)
                .Select(c => c!)
                .OrderBy(c => c.Name, StringComparer.Ordinal)
                .ToList();
            moduleDir = Path.Combine(TestEnvironment.RepoRoot, "module");
        }

        public void Dispose() => context.Dispose();

        [Fact]
        public void The_module_has_the_eight_cmdlets_of_the_design()
        {
            Assert.Equal(
                new[] { "Get-SSMConnectHelperPath", "Get-SSMPortForward", "Invoke-SSMSessionCommand", "Start-SSMPortForward", "Start-SSMRdpSession", "Start-SSMShellSession", "Start-SSMSshSession", "Stop-SSMPortForward" },
                cmdlets.Select(c => c.Name));
        }

        [Fact]
        public void Cmdlets_that_start_sessions_support_ShouldProcess_and_take_the_AWS_parameters()
        {
            foreach (var name in new[] { "Invoke-SSMSessionCommand", "Start-SSMPortForward", "Start-SSMRdpSession", "Start-SSMShellSession", "Start-SSMSshSession" })
            {
                var c = cmdlets.Single(x => x.Name == name);
                Assert.True(c.SupportsShouldProcess, name);
                foreach (var p in new[] { "Target", "ProfileName", "Region", "AccessKey", "SecretKey", "SessionToken", "EndpointUrl", "Reason" })
                {
                    Assert.True(c.Parameters.ContainsKey(p), $"{name} has no -{p}");
                }
                var target = c.Parameters["Target"].Single();
                Assert.True(target.FromPipeline && target.FromPipelineByPropertyName && target.Mandatory && target.Position == 0, $"{name} -Target binding");
                Assert.Contains("InstanceId", c.Aliases["Target"]);
            }
            Assert.True(cmdlets.Single(x => x.Name == "Stop-SSMPortForward").SupportsShouldProcess);
        }

        [Fact]
        public void The_manifest_exports_exactly_the_cmdlets_with_no_wildcards()
        {
            var text = File.ReadAllText(Path.Combine(moduleDir, "SSMConnect.psd1"));
            Assert.Matches(@"PowerShellVersion\s*=\s*'7\.4'", text);
            Assert.Matches(@"RootModule\s*=\s*'bin/SSMConnect\.dll'", text);
            Assert.DoesNotContain("*", Regex.Replace(text, "#.*", string.Empty), StringComparison.Ordinal);
            var exports = Regex.Match(text, @"CmdletsToExport\s*=\s*@\(([^)]*)\)", RegexOptions.Singleline);
            Assert.True(exports.Success, "no CmdletsToExport list");
            var names = Regex.Matches(exports.Groups[1].Value, "'([^']+)'").Select(m => m.Groups[1].Value).OrderBy(n => n, StringComparer.Ordinal);
            Assert.Equal(cmdlets.Select(c => c.Name), names);
            foreach (var empty in new[] { "FunctionsToExport", "VariablesToExport", "AliasesToExport" })
            {
                Assert.Matches(empty + @"\s*=\s*@\(\)", text);
            }
        }

        [Fact]
        public void The_help_documents_every_cmdlet_parameter_set_and_parameter_with_examples()
        {
            var maml = XDocument.Load(Path.Combine(moduleDir, "en-US", "SSMConnect.dll-Help.xml"));
            XNamespace command = "http://schemas.microsoft.com/maml/dev/command/2004/10";
            XNamespace m = "http://schemas.microsoft.com/maml/2004/10";
            XNamespace dev = "http://schemas.microsoft.com/maml/dev/2004/10";
            var helpByName = maml.Root!.Elements(command + "command")
                .ToDictionary(e => e.Element(command + "details")!.Element(command + "name")!.Value);
            Assert.Equal(cmdlets.Select(c => c.Name), helpByName.Keys.OrderBy(k => k, StringComparer.Ordinal));

            foreach (var c in cmdlets)
            {
                var help = helpByName[c.Name];
                Assert.False(string.IsNullOrWhiteSpace(help.Element(command + "details")!.Element(m + "description")?.Value), $"{c.Name}: no synopsis");
                var examples = help.Element(command + "examples")!.Elements(command + "example").ToList();
                Assert.True(examples.Count >= 1, $"{c.Name}: no example");
                Assert.All(examples, e => Assert.Contains(c.Name, e.Element(dev + "code")!.Value, StringComparison.Ordinal));

                // Parameter sets: each syntax item is one of the cmdlet's sets, and all are there.
                var extra = c.SupportsShouldProcess ? ShouldProcessParameters : Array.Empty<string>();
                var expectedSets = c.ParameterSets()
                    .Select(s => string.Join(",", s.Select(p => p.Name).Concat(extra).OrderBy(n => n, StringComparer.Ordinal)))
                    .OrderBy(s => s, StringComparer.Ordinal)
                    .ToList();
                var syntax = help.Element(command + "syntax")!.Elements(command + "syntaxItem").ToList();
                var documentedSets = syntax
                    .Select(i => string.Join(",", i.Elements(command + "parameter").Select(p => p.Element(m + "name")!.Value).OrderBy(n => n, StringComparer.Ordinal)))
                    .OrderBy(s => s, StringComparer.Ordinal)
                    .ToList();
                Assert.Equal(expectedSets, documentedSets);

                // Required and position as the attributes say, set by set.
                foreach (var item in syntax)
                {
                    var names = item.Elements(command + "parameter").Select(p => p.Element(m + "name")!.Value).ToHashSet();
                    var set = c.ParameterSets().Single(s => s.Select(p => p.Name).Concat(extra).ToHashSet().SetEquals(names));
                    foreach (var p in item.Elements(command + "parameter"))
                    {
                        var name = p.Element(m + "name")!.Value;
                        var actual = set.SingleOrDefault(x => x.Name == name);
                        if (actual is null)
                        {
                            continue; // WhatIf / Confirm
                        }
                        Assert.True(actual.Mandatory == (p.Attribute("required")!.Value == "true"), $"{c.Name} -{name}: required");
                        var position = actual.Position < 0 ? "named" : actual.Position.ToString(System.Globalization.CultureInfo.InvariantCulture);
                        Assert.True(position == p.Attribute("position")!.Value, $"{c.Name} -{name}: position {position} vs {p.Attribute("position")!.Value}");
                    }
                }

                // The parameter list has each parameter once, with its type and aliases.
                var documented = help.Element(command + "parameters")!.Elements(command + "parameter").ToList();
                var documentedNames = documented.Select(p => p.Element(m + "name")!.Value).OrderBy(n => n, StringComparer.Ordinal);
                Assert.Equal(c.Parameters.Keys.Concat(extra).OrderBy(n => n, StringComparer.Ordinal), documentedNames);
                foreach (var p in documented)
                {
                    var name = p.Element(m + "name")!.Value;
                    Assert.False(string.IsNullOrWhiteSpace(p.Element(m + "description")?.Value), $"{c.Name} -{name}: no description");
                    if (!c.Parameters.ContainsKey(name))
                    {
                        continue;
                    }
                    Assert.Equal(c.Types[name], p.Element(dev + "type")!.Element(m + "name")!.Value);
                    var aliases = p.Attribute("aliases")!.Value;
                    var expectedAliases = c.Aliases.TryGetValue(name, out var a) && a.Count > 0 ? string.Join(", ", a) : "none";
                    Assert.True(expectedAliases == aliases, $"{c.Name} -{name}: aliases {expectedAliases} vs {aliases}");
                }
            }

            var sshExamples = string.Join("\n", helpByName["Start-SSMSshSession"].Descendants(dev + "code").Select(e => e.Value));
            Assert.Contains(
                "Get-EC2Instance -Filter @{Name='tag:Name';Values='web'} | Select-Object -ExpandProperty Instances | Start-SSMSshSession -User ec2-user -IdentityFile ~/.ssh/web.pem",
                sshExamples,
                StringComparison.Ordinal);
        }

        [Fact]
        public void The_format_view_is_for_the_forward_type_and_names_its_properties()
        {
            var format = XDocument.Load(Path.Combine(moduleDir, "SSMConnect.Format.ps1xml"));
            Assert.Equal(typeof(PortForward).FullName, format.Descendants("TypeName").Single().Value);
            var properties = typeof(PortForward).GetProperties().Select(p => p.Name).ToHashSet();
            foreach (var name in format.Descendants("PropertyName").Select(e => e.Value))
            {
                Assert.Contains(name, properties);
            }
            var headers = format.Descendants("TableColumnHeader").Count();
            var items = format.Descendants("TableColumnItem").Count();
            Assert.Equal(headers, items);
        }

        [Fact]
        public void About_help_exists_and_names_every_cmdlet_and_error_id()
        {
            var text = File.ReadAllText(Path.Combine(moduleDir, "en-US", "about_SSMConnect.help.txt"));
            Assert.StartsWith("TOPIC", text, StringComparison.Ordinal);
            foreach (var c in cmdlets)
            {
                Assert.Contains(c.Name, text, StringComparison.Ordinal);
            }
            foreach (var kind in ErrorCatalog.Kinds)
            {
                Assert.Contains(ErrorCatalog.ErrorId(kind), text, StringComparison.Ordinal);
            }
        }

        /// <summary>A cmdlet as its attributes describe it.</summary>
        private sealed class CmdletShape
        {
            public string Name { get; private set; } = string.Empty;
            public bool SupportsShouldProcess { get; private set; }
            public Dictionary<string, List<ParameterShape>> Parameters { get; } = new Dictionary<string, List<ParameterShape>>();
            public Dictionary<string, List<string>> Aliases { get; } = new Dictionary<string, List<string>>();
            public Dictionary<string, string> Types { get; } = new Dictionary<string, string>();

            public static CmdletShape? From(Type t)
            {
                var attr = t.GetCustomAttributesData().FirstOrDefault(a => a.AttributeType.FullName == "System.Management.Automation.CmdletAttribute");
                if (attr is null)
                {
                    return null;
                }
                var shape = new CmdletShape
                {
                    Name = $"{attr.ConstructorArguments[0].Value}-{attr.ConstructorArguments[1].Value}",
                    SupportsShouldProcess = attr.NamedArguments.Any(n => n.MemberName == "SupportsShouldProcess" && (bool)n.TypedValue.Value!),
                };
                foreach (var prop in t.GetProperties(BindingFlags.Public | BindingFlags.Instance))
                {
                    var parameterAttrs = prop.GetCustomAttributesData().Where(a => a.AttributeType.FullName == "System.Management.Automation.ParameterAttribute").ToList();
                    if (parameterAttrs.Count == 0)
                    {
                        continue;
                    }
                    shape.Parameters[prop.Name] = parameterAttrs.Select(a => ParameterShape.From(prop.Name, a)).ToList();
                    shape.Types[prop.Name] = TypeName(prop.PropertyType);
                    var alias = prop.GetCustomAttributesData().FirstOrDefault(a => a.AttributeType.FullName == "System.Management.Automation.AliasAttribute");
                    shape.Aliases[prop.Name] = alias is null
                        ? new List<string>()
                        : ((IEnumerable<CustomAttributeTypedArgument>)alias.ConstructorArguments[0].Value!).Select(v => (string)v.Value!).ToList();
                }
                return shape;
            }

            /// <summary>Each parameter set as the parameters in it (with their per-set attributes).</summary>
            public List<List<ParameterShape>> ParameterSets()
            {
                var named = Parameters.Values.SelectMany(v => v).Select(p => p.Set).Where(s => s != AllSets).Distinct().OrderBy(s => s, StringComparer.Ordinal).ToList();
                if (named.Count == 0)
                {
                    named.Add(AllSets);
                }
                return named
                    .Select(set => Parameters.Values
                        .Select(v => v.FirstOrDefault(p => p.Set == set) ?? v.FirstOrDefault(p => p.Set == AllSets))
                        .Where(p => p is not null)
                        .Select(p => p!)
                        .ToList())
                    .ToList();
            }

            private static string TypeName(Type t)
            {
                if (t.IsGenericType && t.GetGenericTypeDefinition().FullName == "System.Nullable`1")
                {
                    return TypeName(t.GetGenericArguments()[0]);
                }
                return t.FullName!;
            }
        }

        private sealed class ParameterShape
        {
            public string Name { get; private set; } = string.Empty;
            public string Set { get; private set; } = AllSets;
            public bool Mandatory { get; private set; }
            public int Position { get; private set; } = int.MinValue;
            public bool FromPipeline { get; private set; }
            public bool FromPipelineByPropertyName { get; private set; }

            public static ParameterShape From(string name, CustomAttributeData a)
            {
                var p = new ParameterShape { Name = name };
                foreach (var n in a.NamedArguments)
                {
                    switch (n.MemberName)
                    {
                        case "ParameterSetName":
                            p.Set = (string)n.TypedValue.Value!;
                            break;
                        case "Mandatory":
                            p.Mandatory = (bool)n.TypedValue.Value!;
                            break;
                        case "Position":
                            p.Position = (int)n.TypedValue.Value!;
                            break;
                        case "ValueFromPipeline":
                            p.FromPipeline = (bool)n.TypedValue.Value!;
                            break;
                        case "ValueFromPipelineByPropertyName":
                            p.FromPipelineByPropertyName = (bool)n.TypedValue.Value!;
                            break;
                    }
                }
                return p;
            }
        }
    }
}
