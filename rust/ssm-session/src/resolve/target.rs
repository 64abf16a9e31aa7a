//! The target grammar: what a user types, classified (forms 1–4 of the module documentation
//! of [`super`]).

use std::net::IpAddr;

use crate::error::{Error, Result};

/// What the user typed, classified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TargetSpec {
    /// `i-…`.
    InstanceId(String),
    /// `mi-…`.
    ManagedNode(String),
    /// `ecs:<cluster>_<task-id>_<runtime-id>`: a container of an ECS task, as its agent
    /// registers itself and as ECS Exec starts sessions with it (§1.1).
    EcsTask(String),
    /// `key:value`.
    Tag {
        /// Tag key.
        key: String,
        /// Tag value (EC2 wildcards allowed).
        value: String,
    },
    /// An IP address.
    Address(IpAddr),
    /// A DNS name.
    DnsName(String),
}

fn hex_id(s: &str, prefix: &str) -> bool {
    s.strip_prefix(prefix)
        .is_some_and(|rest| !rest.is_empty() && rest.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// An id as found in TXT records: the real lengths only, to keep stray text from matching.
pub(super) fn txt_id(token: &str) -> Option<&str> {
    let ok = |prefix: &str, lens: &[usize]| {
        token.strip_prefix(prefix).is_some_and(|rest| {
            lens.contains(&rest.len()) && rest.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        })
    };
    (ok("i-", &[8, 17]) || ok("mi-", &[17])).then_some(token)
}

/// `ecs:` + cluster + `_` + task id + `_` + container runtime id, the id the agent in an ECS
/// task gives itself. Cluster names may contain `_`, so the two ids are taken from the right;
/// each part is letters, digits and `-` (and `_` in the cluster name).
fn ecs_task(s: &str) -> bool {
    let Some(rest) = s.strip_prefix("ecs:") else {
        return false;
    };
    let mut parts = rest.rsplitn(3, '_');
    let (Some(runtime), Some(task), Some(cluster)) = (parts.next(), parts.next(), parts.next()) else {
        return false;
    };
    let id =
        |p: &str, extra: u8| !p.is_empty() && p.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == extra);
    id(runtime, b'-') && id(task, b'-') && id(cluster, b'_')
}

fn valid_dns_name(s: &str) -> bool {
    let name = s.strip_suffix('.').unwrap_or(s);
    !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
}

impl TargetSpec {
    /// Classifies `spec`; see the module documentation for the rules.
    pub fn parse(spec: &str) -> Result<Self> {
        let s = spec.trim();
        let invalid = |reason: &str| Error::InvalidTarget {
            target: spec.to_owned(),
            reason: reason.to_owned(),
        };
        if s.is_empty() {
            return Err(invalid("it is empty"));
        }
        if hex_id(s, "i-") {
            return Ok(Self::InstanceId(s.to_owned()));
        }
        if hex_id(s, "mi-") {
            return Ok(Self::ManagedNode(s.to_owned()));
        }
        // Before `key:value`: an ECS task id is no tag named `ecs`.
        if ecs_task(s) {
            return Ok(Self::EcsTask(s.to_owned()));
        }
        let unbracketed = s.strip_prefix('[').and_then(|r| r.strip_suffix(']')).unwrap_or(s);
        if let Ok(ip) = unbracketed.parse::<IpAddr>() {
            return Ok(Self::Address(ip));
        }
        if let Some((key, value)) = s.split_once(':') {
            if key.is_empty() {
                return Err(invalid("the tag key before ':' is empty"));
            }
            if value.is_empty() {
                return Err(invalid("the tag value after ':' is empty (write key:value)"));
            }
            return Ok(Self::Tag {
                key: key.to_owned(),
                value: value.to_owned(),
            });
        }
        if valid_dns_name(s) {
            return Ok(Self::DnsName(s.to_owned()));
        }
        Err(invalid(
            "expected an instance id (i-…), a managed node id (mi-…), key:value, an IP address or a DNS name",
        ))
    }

    /// Whether this is an id that a session can use as it is.
    pub fn id(&self) -> Option<&str> {
        match self {
            Self::InstanceId(id) | Self::ManagedNode(id) | Self::EcsTask(id) => Some(id),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forms_parse() {
        use TargetSpec::*;
        let p = |s: &str| TargetSpec::parse(s).unwrap();
        assert_eq!(p("i-0123456789abcdef0"), InstanceId("i-0123456789abcdef0".into()));
        assert_eq!(p("i-0abc"), InstanceId("i-0abc".into()));
        assert_eq!(p("mi-0123456789abcdef0"), ManagedNode("mi-0123456789abcdef0".into()));
        assert_eq!(p("10.0.0.5"), Address("10.0.0.5".parse().unwrap()));
        assert_eq!(p("fd00::5"), Address("fd00::5".parse().unwrap()));
        assert_eq!(p("[fd00::5]"), Address("fd00::5".parse().unwrap()));
        assert_eq!(p("::ffff:10.0.0.5"), Address("::ffff:10.0.0.5".parse().unwrap()));
        assert_eq!(
            p("Name:web"),
            Tag {
                key: "Name".into(),
                value: "web".into()
            }
        );
        assert_eq!(
            p("url:https://x"),
            Tag {
                key: "url".into(),
                value: "https://x".into()
            }
        );
        let ecs = "ecs:prod_0123456789abcdef0123456789abcdef_0123456789abcdef0123456789abcdef-3681984407";
        assert_eq!(p(ecs), EcsTask(ecs.into()));
        assert_eq!(p(ecs).id(), Some(ecs));
        assert_eq!(p("ecs:my_cluster_t1_r1"), EcsTask("ecs:my_cluster_t1_r1".into()));
        // Not three ids: still a tag named `ecs`.
        assert_eq!(
            p("ecs:web"),
            Tag {
                key: "ecs".into(),
                value: "web".into()
            }
        );
        assert_eq!(p("ecs:a_b").id(), None);
        assert_eq!(p("web.example.com"), DnsName("web.example.com".into()));
        assert_eq!(p("web.example.com."), DnsName("web.example.com.".into()));
        assert_eq!(p("i-notanid.example"), DnsName("i-notanid.example".into()));
        assert_eq!(p("i-xyz"), DnsName("i-xyz".into()));
        for bad in ["", "  ", ":web", "Name:", "a b", "web..example", "x/y"] {
            assert!(
                matches!(TargetSpec::parse(bad), Err(Error::InvalidTarget { .. })),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn txt_tokens() {
        assert_eq!(txt_id("i-0123456789abcdef0"), Some("i-0123456789abcdef0"));
        assert_eq!(txt_id("i-01234567"), Some("i-01234567"));
        assert_eq!(txt_id("mi-0123456789abcdef0"), Some("mi-0123456789abcdef0"));
        assert_eq!(txt_id("i-0abc"), None);
        assert_eq!(txt_id("i-0123456789ABCDEF0"), None);
        assert_eq!(txt_id("v"), None);
    }
}
