using System;
using System.Collections.Generic;
using System.Linq;
using SSMConnect.Native;
using Xunit;

namespace SSMConnect.Tests
{
    public class ErrorCatalogTests
    {
        // The members of System.Management.Automation.ErrorCategory (this project has no PowerShell).
        private static readonly HashSet<string> Categories = new HashSet<string>
        {
            "NotSpecified", "OpenError", "CloseError", "DeviceError", "DeadlockDetected", "InvalidArgument",
            "InvalidData", "InvalidOperation", "InvalidResult", "InvalidType", "MetadataError", "NotImplemented",
            "NotInstalled", "ObjectNotFound", "OperationStopped", "OperationTimeout", "SyntaxError", "ParserError",
            "PermissionDenied", "ResourceBusy", "ResourceExists", "ResourceUnavailable", "ReadError", "WriteError",
            "FromStdErr", "SecurityError", "ProtocolError", "ConnectionError", "AuthenticationError",
            "LimitsExceeded", "QuotaExceeded", "NotEnabled",
        };

        [Theory]
        [InlineData(SsmErrorKind.TargetNotFound, "SSMConnect.TargetNotFound", "ObjectNotFound")]
        [InlineData(SsmErrorKind.AmbiguousTarget, "SSMConnect.AmbiguousTarget", "InvalidArgument")]
        [InlineData(SsmErrorKind.PortInUse, "SSMConnect.PortInUse", "ResourceUnavailable")]
        [InlineData(SsmErrorKind.Api, "SSMConnect.ApiError", "InvalidOperation")]
        [InlineData(SsmErrorKind.ConnectionFailed, "SSMConnect.ConnectionFailed", "ConnectionError")]
        [InlineData(SsmErrorKind.SessionFailed, "SSMConnect.SessionFailed", "ProtocolError")]
        [InlineData(SsmErrorKind.Configuration, "SSMConnect.Configuration", "InvalidOperation")]
        [InlineData(SsmErrorKind.TimedOut, "SSMConnect.TimedOut", "OperationTimeout")]
        [InlineData(SsmErrorKind.Cancelled, "SSMConnect.Cancelled", "OperationStopped")]
        [InlineData(SsmErrorKind.InvalidArgument, "SSMConnect.InvalidArgument", "InvalidArgument")]
        [InlineData(SsmErrorKind.Internal, "SSMConnect.Internal", "NotSpecified")]
        [InlineData(SsmErrorKind.NoCredentials, "SSMConnect.NoCredentials", "AuthenticationError")]
        [InlineData(SsmErrorKind.CredentialsExpired, "SSMConnect.CredentialsExpired", "AuthenticationError")]
        [InlineData(SsmErrorKind.EndpointUnreachable, "SSMConnect.EndpointUnreachable", "ConnectionError")]
        [InlineData(SsmErrorKind.TargetNotConnected, "SSMConnect.TargetNotConnected", "ResourceUnavailable")]
        public void Kinds_map_to_stable_ids_and_categories(SsmErrorKind kind, string id, string category)
        {
            Assert.Equal(id, ErrorCatalog.ErrorId(kind));
            Assert.Equal(category, ErrorCatalog.CategoryName(kind));
            var e = new SsmException(kind, "x");
            Assert.Equal(id, e.ErrorId);
            Assert.Equal(category, e.CategoryName);
        }

        [Fact]
        public void Every_kind_but_none_has_a_unique_id_and_a_real_category()
        {
            var kinds = Enum.GetValues<SsmErrorKind>().Where(k => k != SsmErrorKind.None).ToList();
            Assert.Equal(kinds.OrderBy(k => k), ErrorCatalog.Kinds.OrderBy(k => k));
            Assert.Equal(kinds.Count, kinds.Select(ErrorCatalog.ErrorId).Distinct().Count());
            foreach (var k in kinds)
            {
                Assert.StartsWith("SSMConnect.", ErrorCatalog.ErrorId(k), StringComparison.Ordinal);
                Assert.Contains(ErrorCatalog.CategoryName(k), Categories);
            }
        }

        [Fact]
        public void Managed_enums_mirror_the_generated_ones()
        {
            foreach (var v in Enum.GetValues<SsmcErrorKind>())
            {
                Assert.Equal(v.ToString(), ((SsmErrorKind)(uint)v).ToString());
            }
            Assert.Equal(Enum.GetValues<SsmcErrorKind>().Length, Enum.GetValues<SsmErrorKind>().Length);
            foreach (var v in Enum.GetValues<SsmcState>())
            {
                Assert.Equal(v.ToString(), ((OperationState)(uint)v).ToString());
            }
            Assert.Equal(Enum.GetValues<SsmcState>().Length, Enum.GetValues<OperationState>().Length);
        }
    }
}
