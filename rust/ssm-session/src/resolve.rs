//! Target resolution: from what a user types to exactly one running instance (design §4,
//! `-Target`).
//!
//! Accepted forms, tried in this order:
//!
//! 1. an instance id (`i-` and hex digits) or a managed-node id (`mi-` and hex digits). Managed
//!    nodes have no EC2 record and are passed through unchanged;
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

use std::collections::BTreeSet;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::{Duration, Instant};

use aws_config::SdkConfig;
use aws_sdk_ec2::types::{Filter, Instance};
use hickory_resolver::config::{NameServerConfig, ResolveHosts, ResolverConfig};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::net::{DnsError, NetError};
use hickory_resolver::proto::op::ResponseCode;
use hickory_resolver::proto::rr::{RData, RecordType};
use hickory_resolver::{Resolver, TokioResolver};

use crate::aws::{api_error, service_endpoint};
use crate::error::{Candidate, Error, Result};

/// Most candidates an ambiguity error lists; the search stops paging once it has more.
pub const MAX_CANDIDATES: usize = 20;

/// How long one query (one record type) to an explicit DNS server may take: one attempt, so an
/// unreachable server fails in this time, not a multiple of it.
const DNS_QUERY_TIMEOUT: Duration = Duration::from_secs(3);

/// How long the lookup of a name may take in all, whatever the resolver configuration allows
/// (the system's may list several servers and attempts, each with its own timeout).
const DNS_LOOKUP_DEADLINE: Duration = Duration::from_secs(5);

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

/// What the user typed, classified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TargetSpec {
    /// `i-…`.
    InstanceId(String),
    /// `mi-…`.
    ManagedNode(String),
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
fn txt_id(token: &str) -> Option<&str> {
    let ok = |prefix: &str, lens: &[usize]| {
        token.strip_prefix(prefix).is_some_and(|rest| {
            lens.contains(&rest.len()) && rest.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        })
    };
    (ok("i-", &[8, 17]) || ok("mi-", &[17])).then_some(token)
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
            Self::InstanceId(id) | Self::ManagedNode(id) => Some(id),
            _ => None,
        }
    }
}

/// How a target was found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Via {
    /// An instance id, looked up in EC2.
    InstanceId,
    /// A managed-node id, passed through.
    ManagedNode,
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
    fn bare(id: &str, via: Via) -> Self {
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

    fn from_instance(i: &Instance, via: Via) -> Self {
        let mut ipv6: Vec<Ipv6Addr> = i
            .network_interfaces()
            .iter()
            .flat_map(|n| n.ipv6_addresses())
            .filter_map(|a| a.ipv6_address()?.parse().ok())
            .chain(i.ipv6_address().and_then(|a| a.parse().ok()))
            .collect();
        ipv6.sort();
        ipv6.dedup();
        Self {
            instance_id: i.instance_id().unwrap_or_default().to_owned(),
            name: name_tag(i),
            state: i.state().and_then(|s| s.name()).map(|n| n.as_str().to_owned()),
            availability_zone: i.placement().and_then(|p| p.availability_zone()).map(str::to_owned),
            private_ip: i.private_ip_address().and_then(|a| a.parse().ok()),
            public_ip: i.public_ip_address().and_then(|a| a.parse().ok()),
            ipv6,
            via,
        }
    }

    fn addresses(&self) -> impl Iterator<Item = IpAddr> + '_ {
        self.private_ip
            .map(IpAddr::V4)
            .into_iter()
            .chain(self.public_ip.map(IpAddr::V4))
            .chain(self.ipv6.iter().copied().map(IpAddr::V6))
    }
}

fn name_tag(i: &Instance) -> Option<String> {
    i.tags()
        .iter()
        .find(|t| t.key() == Some("Name"))
        .and_then(|t| t.value())
        .map(str::to_owned)
}

fn candidate(i: &Instance) -> Candidate {
    Candidate {
        instance_id: i.instance_id().unwrap_or_default().to_owned(),
        name: name_tag(i),
        state: i
            .state()
            .and_then(|s| s.name())
            .map_or_else(|| "unknown".to_owned(), |n| n.as_str().to_owned()),
    }
}

/// An EC2 client for `config`, with the endpoint checked as [`service_endpoint`] describes.
pub fn ec2_client(config: &SdkConfig, endpoint_url: Option<&str>) -> Result<aws_sdk_ec2::Client> {
    if config.region().is_none() {
        return Err(Error::NoRegion);
    }
    let mut b = aws_sdk_ec2::config::Builder::from(config);
    if let Some(url) = service_endpoint(config, "EC2", endpoint_url)? {
        b = b.endpoint_url(url);
    }
    Ok(aws_sdk_ec2::Client::from_conf(b.build()))
}

fn filter(name: &str, values: impl IntoIterator<Item = String>) -> Filter {
    Filter::builder()
        .name(name)
        .set_values(Some(values.into_iter().collect()))
        .build()
}

/// One EC2 search: filters ANDed, described for error messages.
struct Query {
    filters: Vec<Filter>,
}

struct Found {
    /// Running instances, de-duplicated, in the order EC2 listed them.
    running: Vec<Instance>,
    /// Whether paging stopped early with more than [`MAX_CANDIDATES`].
    more: bool,
}

struct Ec2Search {
    client: aws_sdk_ec2::Client,
    page_size: Option<i32>,
}

impl Ec2Search {
    /// Instances matching any of `queries` (each query's filters ANDed), in the given states.
    async fn find(&self, queries: &[Query], running_only: bool) -> Result<Found> {
        let searches = queries.iter().map(|q| self.one(q, running_only));
        let results = futures_util::future::try_join_all(searches).await?;
        let mut seen = BTreeSet::new();
        let mut running = Vec::new();
        let mut more = false;
        for (list, m) in results {
            more |= m;
            for i in list {
                if seen.insert(i.instance_id().unwrap_or_default().to_owned()) {
                    running.push(i);
                }
            }
        }
        if running.len() > MAX_CANDIDATES {
            running.truncate(MAX_CANDIDATES);
            more = true;
        }
        Ok(Found { running, more })
    }

    async fn one(&self, q: &Query, running_only: bool) -> Result<(Vec<Instance>, bool)> {
        let mut filters = q.filters.clone();
        if running_only {
            filters.push(filter("instance-state-name", ["running".to_owned()]));
        }
        let mut pages = self
            .client
            .describe_instances()
            .set_filters(Some(filters))
            .set_max_results(self.page_size)
            .into_paginator()
            .send();
        let mut out = Vec::new();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| api_error("DescribeInstances", e))?;
            out.extend(
                page.reservations
                    .unwrap_or_default()
                    .into_iter()
                    .flat_map(|r| r.instances.unwrap_or_default()),
            );
            if out.len() > MAX_CANDIDATES {
                return Ok((out, true));
            }
        }
        Ok((out, false))
    }

    /// Picks the one running instance, or says why not. On no match, searches again without
    /// the state filter so that the error can name instances that exist but are not running.
    async fn pick(
        &self,
        target: &str,
        queries: &[Query],
        searched: String,
        via: impl Fn(&Instance) -> Via,
    ) -> Result<ResolvedTarget> {
        let found = self.find(queries, true).await?;
        match found.running.as_slice() {
            [one] => Ok(ResolvedTarget::from_instance(one, via(one))),
            [] => {
                let others = self.find(queries, false).await.map(|f| f.running).unwrap_or_default();
                Err(not_found(target, searched, &others))
            }
            many => Err(Error::AmbiguousTarget {
                target: target.to_owned(),
                candidates: many.iter().map(candidate).collect(),
                more: found.more,
            }),
        }
    }
}

fn not_found(target: &str, mut searched: String, not_running: &[Instance]) -> Error {
    if !not_running.is_empty() {
        let list: Vec<String> = not_running
            .iter()
            .map(candidate)
            .map(|c| match c.name {
                Some(n) => format!("{} (Name={n}, {})", c.instance_id, c.state),
                None => format!("{} ({})", c.instance_id, c.state),
            })
            .collect();
        searched.push_str(&format!("; matched but not running: {}", list.join(", ")));
    }
    Error::TargetNotFound {
        target: target.to_owned(),
        searched,
    }
}

/// Queries that find instances owning any of `addrs`, and a description of them.
fn address_queries(addrs: &[IpAddr]) -> (Vec<Query>, String) {
    let v4: Vec<String> = addrs.iter().filter(|a| a.is_ipv4()).map(ToString::to_string).collect();
    let v6: Vec<String> = addrs.iter().filter(|a| a.is_ipv6()).map(ToString::to_string).collect();
    let mut queries = Vec::new();
    let mut what = Vec::new();
    if !v4.is_empty() {
        queries.push(Query {
            filters: vec![filter("private-ip-address", v4.clone())],
        });
        queries.push(Query {
            filters: vec![filter("ip-address", v4.clone())],
        });
        what.push(format!("private or public IPv4 address {}", v4.join(" or ")));
    }
    if !v6.is_empty() {
        queries.push(Query {
            filters: vec![filter("network-interface.ipv6-addresses.ipv6-address", v6.clone())],
        });
        what.push(format!("IPv6 address {}", v6.join(" or ")));
    }
    (queries, format!("running EC2 instances with {}", what.join(" or ")))
}

/// Which of `addrs` the instance owns (the first), for reporting.
fn matched_address(i: &Instance, addrs: &[IpAddr]) -> Option<IpAddr> {
    let r = ResolvedTarget::from_instance(i, Via::InstanceId);
    r.addresses().find(|a| addrs.contains(a))
}

fn dns_resolver(server: Option<SocketAddr>) -> Result<TokioResolver> {
    let dns_err = |e: NetError| Error::Config(format!("cannot set up DNS resolution: {e}"));
    match server {
        Some(addr) => {
            let mut ns = NameServerConfig::udp_and_tcp(addr.ip());
            for c in &mut ns.connections {
                c.port = addr.port();
            }
            let mut b = Resolver::builder_with_config(
                ResolverConfig::from_name_servers(vec![ns]),
                TokioRuntimeProvider::default(),
            );
            let o = b.options_mut();
            o.timeout = DNS_QUERY_TIMEOUT;
            o.attempts = 1;
            // An explicit server is the whole truth (split-horizon DNS): no hosts file.
            o.use_hosts_file = ResolveHosts::Never;
            b.build().map_err(dns_err)
        }
        None => TokioResolver::builder_tokio().and_then(|b| b.build()).map_err(dns_err),
    }
}

/// How one record type's query ended.
#[derive(Debug)]
enum Outcome {
    /// Records came back (possibly none of the wanted type, e.g. only a CNAME).
    Answered(Vec<RData>),
    /// NXDOMAIN or NODATA: the name has no record of this type.
    NoRecords,
    /// Refused, SERVFAIL, a timeout or a transport error: nothing is known about this type.
    Failed(String),
}

/// What DNS says about a name.
#[derive(Debug, Default)]
struct DnsAnswer {
    addrs: Vec<IpAddr>,
    ids: Vec<String>,
    /// Each type's outcome in words, in query order (`A: refused`), for messages.
    outcomes: Vec<String>,
    /// Whether any type failed rather than answering.
    failed: bool,
}

impl DnsAnswer {
    fn usable(&self) -> bool {
        !self.addrs.is_empty() || !self.ids.is_empty()
    }
}

/// Why a query failed, in a few words; response codes by their name (RFC 1035 §4.1.1).
fn failure_text(e: &NetError, waited: Duration) -> String {
    match e {
        NetError::Dns(DnsError::ResponseCode(ResponseCode::Refused)) => "refused".into(),
        NetError::Dns(DnsError::ResponseCode(ResponseCode::ServFail)) => "server failure (SERVFAIL)".into(),
        NetError::Dns(DnsError::ResponseCode(code)) => format!("error response {code}"),
        NetError::Timeout => timed_out(waited),
        other => other.to_string(),
    }
}

fn timed_out(waited: Duration) -> String {
    format!("timed out after {} s", waited.as_secs_f64().round())
}

/// Looks up A, AAAA and TXT together. Each type stands on its own: real resolvers refuse, fail
/// or time out on one type while answering another (split-horizon and filtering resolvers,
/// dnsmasq without an upstream), so one type's failure never discards another's answer.
async fn lookup_name(server: Option<SocketAddr>, name: &str) -> Result<DnsAnswer> {
    let resolver = dns_resolver(server)?;
    let started = Instant::now();
    let deadline = started + DNS_LOOKUP_DEADLINE;
    // An explicit server gets one attempt per type, so its timeout bounds each type; the system
    // configuration brings its own timeouts and attempts, which only the deadline bounds.
    let per_query = if server.is_some() {
        DNS_QUERY_TIMEOUT
    } else {
        DNS_LOOKUP_DEADLINE
    };
    let query = |rt: RecordType| {
        let resolver = &resolver;
        async move {
            let until = deadline.min(started + per_query);
            let outcome = match tokio::time::timeout_at(until.into(), resolver.lookup(name, rt)).await {
                Ok(Ok(lookup)) => Outcome::Answered(lookup.answers().iter().map(|r| r.data.clone()).collect()),
                Ok(Err(e)) if e.is_no_records_found() || e.is_nx_domain() => Outcome::NoRecords,
                Ok(Err(e)) => Outcome::Failed(failure_text(&e, started.elapsed())),
                Err(_) => Outcome::Failed(timed_out(started.elapsed())),
            };
            (rt, outcome)
        }
    };
    let (a, aaaa, txt) = tokio::join!(query(RecordType::A), query(RecordType::AAAA), query(RecordType::TXT));
    let mut answer = DnsAnswer::default();
    for (rt, outcome) in [a, aaaa, txt] {
        let text = match outcome {
            Outcome::NoRecords => "none".to_owned(),
            Outcome::Failed(why) => {
                answer.failed = true;
                why
            }
            Outcome::Answered(data) if rt == RecordType::TXT => {
                let before = answer.ids.len();
                for data in &data {
                    let RData::TXT(txt) = data else { continue };
                    for part in txt.txt_data.iter() {
                        let text = String::from_utf8_lossy(part);
                        for token in text.split(|c: char| !(c.is_ascii_alphanumeric() || c == '-')) {
                            if let Some(id) = txt_id(token)
                                && !answer.ids.iter().any(|x| x == id)
                            {
                                answer.ids.push(id.to_owned());
                            }
                        }
                    }
                }
                if answer.ids.len() > before {
                    answer.ids[before..].join(" ")
                } else {
                    "no instance id".to_owned()
                }
            }
            Outcome::Answered(data) => {
                let mut found = Vec::new();
                for data in data {
                    let ip = match data {
                        RData::A(a) => IpAddr::V4(a.0),
                        RData::AAAA(a) => IpAddr::V6(a.0),
                        _ => continue,
                    };
                    if !found.contains(&ip) {
                        found.push(ip);
                    }
                }
                for ip in &found {
                    if !answer.addrs.contains(ip) {
                        answer.addrs.push(*ip);
                    }
                }
                list_or_none(found.iter().map(ToString::to_string))
            }
        };
        answer.outcomes.push(format!("{rt}: {text}"));
    }
    if answer.failed {
        tracing::debug!(name, outcomes = answer.outcomes.join(", "), "DNS lookup partly failed");
    }
    if !answer.usable() && answer.failed {
        return Err(Error::Dns {
            name: name.to_owned(),
            outcomes: answer.outcomes.join(", "),
        });
    }
    Ok(answer)
}

fn list_or_none(items: impl IntoIterator<Item = String>) -> String {
    let v: Vec<String> = items.into_iter().collect();
    if v.is_empty() { "none".into() } else { v.join(", ") }
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
