//! Target resolution: from what a user types to exactly one running instance (design §4,
//! `-Target`).
//!
//! Accepted forms, tried in this order:
//!
//! 1. an instance id (`i-` and hex digits) or a managed-node id (`mi-` and hex digits). Managed
//!    nodes have no EC2 record and are passed through unchanged; so are ECS task containers,
//!    `ecs:<cluster>_<task-id>_<runtime-id>` (what ECS Exec starts sessions with);
//! 2. an IPv4 or IPv6 address (`[…]` brackets allowed): running instances whose primary private
//!    IPv4 address (`private-ip-address`), public IPv4 address (`ip-address`) or IPv6 address
//!    (`network-interface.ipv6-addresses.ipv6-address`) it is;
//! 3. `key:value`, split at the first `:`: running instances with that tag. EC2 filter wildcards
//!    (`*`, `?`) work in the value. Keys that contain `:` themselves (`aws:…`) cannot be written
//!    this way;
//! 4. anything else is a DNS name. Its A, AAAA and TXT records are looked up together. A TXT
//!    record *on the name itself* that contains an instance or managed-node id as a token
//!    (`i-` with 8 or 17 hex digits, `mi-` with 17; tokens are separated by anything but letters,
//!    digits and `-`, so `ssm-target=i-0123456789abcdef0` works and SPF text is ignored) names
//!    the target, and then wins over the addresses: it is the DNS owner saying which instance
//!    the name means, and it works for managed nodes, which have no EC2 address. Without such a
//!    TXT record, the A and AAAA addresses are searched as in form 2.
//!
//!    Each record type stands on its own: one that is refused, fails (SERVFAIL) or times out
//!    counts as absent when another answered. The lookup is [`Error::Dns`], listing every
//!    type's outcome, only when nothing usable came back and some type failed; when every type
//!    says "no such record" it is [`Error::TargetNotFound`]. With an explicit DNS server each
//!    type gets one query of at most 3 s; the whole lookup never takes more than 5 s.
//!
//! Only running instances count (`instance-state-name=running` is always a server-side filter).
//! No match is [`Error::TargetNotFound`] saying what was searched (and naming instances that
//! matched but were not running); several are [`Error::AmbiguousTarget`] listing them. Nothing
//! is ever picked silently.

mod dns;
mod ec2;
mod target;

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use aws_config::SdkConfig;

pub use dns::parse_dns_server;
pub use ec2::ec2_client;
pub use target::TargetSpec;

use crate::error::{Candidate, Error, Result};
use dns::{list_or_none, lookup_name};
use ec2::{Ec2Search, Query, address_queries, candidate, filter, matched_address, not_found};

/// Most candidates an ambiguity error lists; the search stops paging once it has more.
pub const MAX_CANDIDATES: usize = 20;

/// Where resolution looks besides the loaded AWS configuration.
#[derive(Debug, Clone, Default)]
pub struct ResolveOptions {
    /// DNS server for name targets (split-horizon DNS, tests). `None`: the system configuration
    /// (`/etc/resolv.conf`, the registry on Windows), including its hosts file.
    pub dns_server: Option<SocketAddr>,
    /// EC2 endpoint override. Otherwise `AWS_ENDPOINT_URL_EC2`, the profile, `AWS_ENDPOINT_URL`,
    /// then the regional endpoint; plain `http://` only for loopback in every case.
    pub ec2_endpoint_url: Option<String>,
    /// `MaxResults` for each `DescribeInstances` page (5..=1000); `None` lets EC2 choose.
    pub page_size: Option<i32>,
}

/// How a target was found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Via {
    /// An instance id, looked up in EC2.
    InstanceId,
    /// A managed-node id, passed through.
    ManagedNode,
    /// An ECS task container id (`ecs:…`), passed through.
    EcsTask,
    /// An id passed through without any lookup ([`resolve_session_target`]).
    Unchecked,
    /// A `key:value` tag.
    Tag {
        /// Tag key.
        key: String,
        /// Tag value.
        value: String,
    },
    /// An IP address.
    Address(IpAddr),
    /// A DNS name's A or AAAA record.
    DnsAddress {
        /// The name.
        name: String,
        /// The address that matched.
        address: IpAddr,
    },
    /// A DNS name's TXT record.
    DnsTxt {
        /// The name.
        name: String,
    },
}

impl fmt::Display for Via {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Via::InstanceId => f.write_str("instance id"),
            Via::ManagedNode => f.write_str("managed node id"),
            Via::EcsTask => f.write_str("ECS task id"),
            Via::Unchecked => f.write_str("id, not looked up"),
            Via::Tag { key, value } => write!(f, "tag {key}={value}"),
            Via::Address(ip) => write!(f, "address {ip}"),
            Via::DnsAddress { name, address } => write!(f, "DNS {name} -> {address}"),
            Via::DnsTxt { name } => write!(f, "DNS TXT of {name}"),
        }
    }
}

/// The one instance a target means.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolvedTarget {
    /// Instance or managed-node id: what `StartSession` takes.
    pub instance_id: String,
    /// The `Name` tag.
    pub name: Option<String>,
    /// Instance state (`running`); `None` when not looked up (managed nodes, unchecked ids).
    pub state: Option<String>,
    /// Availability zone, which EC2 Instance Connect needs.
    pub availability_zone: Option<String>,
    /// Primary private IPv4 address.
    pub private_ip: Option<Ipv4Addr>,
    /// Public IPv4 address.
    pub public_ip: Option<Ipv4Addr>,
    /// IPv6 addresses.
    pub ipv6: Vec<Ipv6Addr>,
    /// How it was found.
    pub via: Via,
}

impl ResolvedTarget {
    pub(super) fn bare(id: &str, via: Via) -> Self {
        Self {
            instance_id: id.to_owned(),
            name: None,
            state: None,
            availability_zone: None,
            private_ip: None,
            public_ip: None,
            ipv6: Vec::new(),
            via,
        }
    }

    pub(super) fn addresses(&self) -> impl Iterator<Item = IpAddr> + '_ {
        self.private_ip
            .map(IpAddr::V4)
            .into_iter()
            .chain(self.public_ip.map(IpAddr::V4))
            .chain(self.ipv6.iter().copied().map(IpAddr::V6))
    }
}
/// Resolves `spec` to one running instance (or a managed node). See the module documentation.
pub async fn resolve_target(config: &SdkConfig, spec: &str, opts: &ResolveOptions) -> Result<ResolvedTarget> {
    let parsed = TargetSpec::parse(spec)?;
    resolve_parsed(config, spec, parsed, opts).await
}

/// What a session needs: literal ids are passed through without any EC2 or DNS call (so that
/// permission to start sessions suffices), every other form is resolved by [`resolve_target`].
pub async fn resolve_session_target(config: &SdkConfig, spec: &str, opts: &ResolveOptions) -> Result<ResolvedTarget> {
    let parsed = TargetSpec::parse(spec)?;
    if let Some(id) = parsed.id() {
        return Ok(ResolvedTarget::bare(id, Via::Unchecked));
    }
    resolve_parsed(config, spec, parsed, opts).await
}

/// Running EC2 instances (id, `Name` tag, state), in the order EC2 lists them, at most
/// `limit`: what a shell completing `-Target` offers.
pub async fn running_instances(config: &SdkConfig, opts: &ResolveOptions, limit: usize) -> Result<Vec<Candidate>> {
    let search = Ec2Search {
        client: ec2_client(config, opts.ec2_endpoint_url.as_deref())?,
        page_size: opts.page_size,
    };
    Ok(search.running(limit).await?.iter().map(candidate).collect())
}

async fn resolve_parsed(
    config: &SdkConfig,
    spec: &str,
    parsed: TargetSpec,
    opts: &ResolveOptions,
) -> Result<ResolvedTarget> {
    let ec2 = || -> Result<Ec2Search> {
        Ok(Ec2Search {
            client: ec2_client(config, opts.ec2_endpoint_url.as_deref())?,
            page_size: opts.page_size,
        })
    };
    match parsed {
        TargetSpec::ManagedNode(id) => Ok(ResolvedTarget::bare(&id, Via::ManagedNode)),
        TargetSpec::EcsTask(id) => Ok(ResolvedTarget::bare(&id, Via::EcsTask)),
        TargetSpec::InstanceId(id) => {
            let q = [Query {
                filters: vec![filter("instance-id", [id.clone()])],
            }];
            ec2()?
                .pick(spec, &q, format!("running EC2 instances with instance-id {id}"), |_| {
                    Via::InstanceId
                })
                .await
        }
        TargetSpec::Tag { key, value } => {
            let q = [Query {
                filters: vec![filter(&format!("tag:{key}"), [value.clone()])],
            }];
            let searched = format!("running EC2 instances with tag {key}={value}");
            ec2()?
                .pick(spec, &q, searched, |_| Via::Tag {
                    key: key.clone(),
                    value: value.clone(),
                })
                .await
        }
        TargetSpec::Address(ip) => {
            let (q, searched) = address_queries(&[ip]);
            ec2()?.pick(spec, &q, searched, |_| Via::Address(ip)).await
        }
        TargetSpec::DnsName(name) => {
            let answer = lookup_name(opts.dns_server, &name).await?;
            // Failed types are named: the instance may hide behind the record that failed.
            let dns_seen = if answer.failed {
                format!("DNS for {name} ({})", answer.outcomes.join(", "))
            } else {
                format!(
                    "DNS for {name} (A/AAAA: {}; TXT instance ids: {})",
                    list_or_none(answer.addrs.iter().map(ToString::to_string)),
                    list_or_none(answer.ids.iter().cloned())
                )
            };
            if !answer.ids.is_empty() {
                return resolve_txt_ids(ec2, spec, &name, &answer.ids, dns_seen).await;
            }
            if answer.addrs.is_empty() {
                return Err(Error::TargetNotFound {
                    target: spec.to_owned(),
                    searched: format!("{dns_seen}: the name has no address and no TXT record with an instance id"),
                });
            }
            let (q, what) = address_queries(&answer.addrs);
            let addrs = answer.addrs.clone();
            ec2()?
                .pick(spec, &q, format!("{dns_seen}, then {what}"), |i| Via::DnsAddress {
                    name: name.clone(),
                    address: matched_address(i, &addrs).unwrap_or(addrs[0]),
                })
                .await
        }
    }
}

/// TXT named ids: managed nodes count as they are, instances only when running.
async fn resolve_txt_ids(
    ec2: impl Fn() -> Result<Ec2Search>,
    spec: &str,
    name: &str,
    ids: &[String],
    dns_seen: String,
) -> Result<ResolvedTarget> {
    let via = || Via::DnsTxt { name: name.to_owned() };
    let (managed, instances): (Vec<&String>, Vec<&String>) = ids.iter().partition(|id| id.starts_with("mi-"));
    let mut candidates: Vec<Candidate> = managed
        .iter()
        .map(|id| Candidate {
            instance_id: (*id).clone(),
            name: None,
            state: "managed node".into(),
        })
        .collect();
    let mut found = Vec::new();
    let mut not_running = Vec::new();
    if !instances.is_empty() {
        let search = ec2()?;
        let q = [Query {
            filters: vec![filter("instance-id", instances.iter().map(|s| (*s).clone()))],
        }];
        found = search.find(&q, true).await?.running;
        if found.is_empty() && managed.is_empty() {
            not_running = search.find(&q, false).await.map(|f| f.running).unwrap_or_default();
        }
        candidates.extend(found.iter().map(candidate));
    }
    match (managed.as_slice(), found.as_slice()) {
        ([m], []) => Ok(ResolvedTarget::bare(m, via())),
        ([], [one]) => Ok(ResolvedTarget::from_instance(one, via())),
        ([], []) => Err(not_found(
            spec,
            format!(
                "{dns_seen}, then running EC2 instances with instance-id {}",
                instances.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(" or ")
            ),
            &not_running,
        )),
        _ => Err(Error::AmbiguousTarget {
            target: spec.to_owned(),
            candidates,
            more: false,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_read_well() {
        let e = Error::AmbiguousTarget {
            target: "Role:web".into(),
            candidates: vec![
                Candidate {
                    instance_id: "i-1".into(),
                    name: Some("web-1".into()),
                    state: "running".into(),
                },
                Candidate {
                    instance_id: "i-2".into(),
                    name: None,
                    state: "running".into(),
                },
            ],
            more: false,
        };
        assert_eq!(
            e.to_string(),
            "\"Role:web\" matches 2 running instances: i-1 (Name=web-1, running), i-2 (no Name tag, running); \
             use an instance id or a more specific target"
        );
    }
}
