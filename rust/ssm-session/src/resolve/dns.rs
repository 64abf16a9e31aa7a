//! DNS-name targets: A, AAAA and TXT looked up together through hickory (form 4 of the module
//! documentation of [`super`]), and the `ADDR[:PORT]` syntax of a DNS server setting.

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use hickory_resolver::config::{NameServerConfig, ResolveHosts, ResolverConfig};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::net::{DnsError, NetError};
use hickory_resolver::proto::op::ResponseCode;
use hickory_resolver::proto::rr::{RData, RecordType};
use hickory_resolver::{Resolver, TokioResolver};

use super::target::txt_id;
use crate::error::{Error, Result};

/// How long one query (one record type) to an explicit DNS server may take: one attempt, so an
/// unreachable server fails in this time, not a multiple of it.
const DNS_QUERY_TIMEOUT: Duration = Duration::from_secs(3);

/// How long the lookup of a name may take in all, whatever the resolver configuration allows
/// (the system's may list several servers and attempts, each with its own timeout).
const DNS_LOOKUP_DEADLINE: Duration = Duration::from_secs(5);

/// A DNS server setting: `ADDR` (port 53) or `ADDR:PORT`, IPv6 addresses bracketed when a port
/// follows (`[fd00::53]:5353`).
pub fn parse_dns_server(s: &str) -> Result<SocketAddr> {
    let text = s.trim();
    let bare = text.strip_prefix('[').and_then(|r| r.strip_suffix(']')).unwrap_or(text);
    let parsed = match (bare.parse::<IpAddr>(), text.parse::<SocketAddr>()) {
        (Ok(ip), _) => Some(SocketAddr::new(ip, 53)),
        (_, Ok(addr)) if addr.port() != 0 => Some(addr),
        _ => None,
    };
    parsed.ok_or_else(|| {
        Error::Config(format!(
            "the DNS server {s} is not ADDR or ADDR:PORT with an IP address"
        ))
    })
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
pub(super) struct DnsAnswer {
    pub(super) addrs: Vec<IpAddr>,
    pub(super) ids: Vec<String>,
    /// Each type's outcome in words, in query order (`A: refused`), for messages.
    pub(super) outcomes: Vec<String>,
    /// Whether any type failed rather than answering.
    pub(super) failed: bool,
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
pub(super) async fn lookup_name(server: Option<SocketAddr>, name: &str) -> Result<DnsAnswer> {
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

pub(super) fn list_or_none(items: impl IntoIterator<Item = String>) -> String {
    let v: Vec<String> = items.into_iter().collect();
    if v.is_empty() { "none".into() } else { v.join(", ") }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dns_servers_parse() {
        let p = |s: &str| parse_dns_server(s).unwrap();
        assert_eq!(p("10.0.0.2"), "10.0.0.2:53".parse().unwrap());
        assert_eq!(p("10.0.0.2:5353"), "10.0.0.2:5353".parse().unwrap());
        assert_eq!(p("fd00::53"), "[fd00::53]:53".parse().unwrap());
        assert_eq!(p("[fd00::53]"), "[fd00::53]:53".parse().unwrap());
        assert_eq!(p("[fd00::53]:5353"), "[fd00::53]:5353".parse().unwrap());
        for bad in [
            "",
            "dns.example",
            "10.0.0.2:x",
            "10.0.0.2:70000",
            "10.0.0.2:0",
            "[fd00::53",
        ] {
            assert!(matches!(parse_dns_server(bad), Err(Error::Config(_))), "{bad:?}");
        }
    }
}
