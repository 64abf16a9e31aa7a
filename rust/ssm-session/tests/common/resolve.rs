//! Shared by the target-resolution tests: a scripted DNS server for the failures dnsmasq cannot
//! be told to give, the AWS configuration they need, instances made on moto, and the checks every
//! EC2 implementation must pass, so the same assertions run against moto and the emulator.
//! (moto and dnsmasq themselves are `ssm_testkit`'s.)

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, UdpSocket};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use hickory_resolver::proto::op::{Message, ResponseCode};
use hickory_resolver::proto::rr::{RData, Record, RecordType, rdata};
use ssm_session::aws::Config;
use ssm_session::resolve::Via;
use ssm_session::{Error, ResolveOptions, resolve_target};

/// How [`FakeDns`] treats a query for one name and type.
#[derive(Debug, Clone)]
pub enum Reply {
    /// These records, as an authoritative answer.
    Records(Vec<RData>),
    /// NOERROR with no records (NODATA).
    NoData,
    /// REFUSED.
    Refused,
    /// SERVFAIL, as a resolver whose upstream failed answers.
    ServFail,
    /// Nothing at all: the query times out.
    Silent,
}

/// A DNS server on a loopback UDP port (no TCP) that answers each name and type as told, every
/// other query with the default: SERVFAIL and silence on demand, which dnsmasq gives only
/// through an upstream's failures. Built from hickory-proto's message types.
pub struct FakeDns {
    pub addr: SocketAddr,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl FakeDns {
    /// `replies` by (lower-case name without the final dot, type); `default` for the rest.
    pub fn start(listen: IpAddr, replies: &[(&str, RecordType, Reply)], default: Reply) -> FakeDns {
        let sock = UdpSocket::bind((listen, 0)).expect("bind the fake DNS server");
        sock.set_read_timeout(Some(Duration::from_millis(50))).unwrap();
        let addr = sock.local_addr().unwrap();
        let replies: HashMap<(String, RecordType), Reply> = replies
            .iter()
            .map(|(name, rt, reply)| ((name.to_ascii_lowercase(), *rt), reply.clone()))
            .collect();
        let stop = Arc::new(AtomicBool::new(false));
        let stopping = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut buf = [0u8; 1500];
            while !stopping.load(Ordering::Relaxed) {
                let Ok((n, peer)) = sock.recv_from(&mut buf) else {
                    continue;
                };
                let Ok(query) = Message::from_vec(&buf[..n]) else {
                    continue;
                };
                let Some(q) = query.queries.first() else { continue };
                let name = q.name().to_ascii().trim_end_matches('.').to_ascii_lowercase();
                let reply = replies.get(&(name, q.query_type())).unwrap_or(&default);
                let mut response = Message::response(query.metadata.id, query.metadata.op_code);
                response.metadata.recursion_desired = query.metadata.recursion_desired;
                response.add_query(q.clone());
                match reply {
                    Reply::Silent => continue,
                    Reply::Refused => response.metadata.response_code = ResponseCode::Refused,
                    Reply::ServFail => response.metadata.response_code = ResponseCode::ServFail,
                    Reply::NoData => response.metadata.authoritative = true,
                    Reply::Records(data) => {
                        response.metadata.authoritative = true;
                        for d in data {
                            response.add_answer(Record::from_rdata(q.name().clone(), 60, d.clone()));
                        }
                    }
                }
                if let Ok(bytes) = response.to_vec() {
                    let _ = sock.send_to(&bytes, peer);
                }
            }
        });
        FakeDns {
            addr,
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for FakeDns {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// An A record's data.
pub fn a(ip: &str) -> RData {
    RData::A(rdata::A(ip.parse().unwrap()))
}

/// An AAAA record's data.
pub fn aaaa(ip: &str) -> RData {
    RData::AAAA(rdata::AAAA(ip.parse().unwrap()))
}

/// A TXT record's data (one string).
pub fn txt(text: &str) -> RData {
    RData::TXT(rdata::TXT::new(vec![text.to_owned()]))
}

/// Configuration for a loopback test service: fixed test credentials and region, no profile.
pub async fn test_config() -> Config {
    ssm_session::aws::load_config(&super::credentials())
        .await
        .expect("loading the test configuration")
}

/// An AMI moto knows by default.
pub const MOTO_AMI: &str = "ami-12c6146b";

/// Runs one t3.micro instance on moto (`ec2` points there) with `tags`; moto assigns its
/// addresses and zone.
pub async fn moto_run_instance(ec2: &aws_sdk_ec2::Client, tags: &[(&str, &str)]) -> aws_sdk_ec2::types::Instance {
    use aws_sdk_ec2::types::{InstanceType, ResourceType, Tag, TagSpecification};
    let spec = tags
        .iter()
        .fold(
            TagSpecification::builder().resource_type(ResourceType::Instance),
            |b, (k, v)| b.tags(Tag::builder().key(*k).value(*v).build()),
        )
        .build();
    let out = ec2
        .run_instances()
        .image_id(MOTO_AMI)
        .instance_type(InstanceType::T3Micro)
        .min_count(1)
        .max_count(1)
        .tag_specifications(spec)
        .send()
        .await
        .expect("RunInstances on moto");
    out.instances().first().expect("moto ran an instance").clone()
}

/// One instance of the test world, as the EC2 implementation made it.
#[derive(Debug, Clone)]
pub struct Node {
    pub id: String,
    pub name: String,
    pub private_ip: Ipv4Addr,
    pub public_ip: Ipv4Addr,
    pub az: String,
}

/// The world every EC2 implementation is tested with: `web-1` and `web-2` (tag `Role=web`),
/// `db` (`Role=db`), and `old` (`Role=old`, stopped).
#[derive(Debug, Clone)]
pub struct World {
    pub web1: Node,
    pub web2: Node,
    pub db: Node,
    pub old: Node,
}

pub async fn resolve(
    cfg: &Config,
    ro: &ResolveOptions,
    spec: &str,
) -> ssm_session::Result<ssm_session::ResolvedTarget> {
    tokio::time::timeout(Duration::from_secs(30), resolve_target(cfg, spec, ro))
        .await
        .unwrap_or_else(|_| panic!("resolving {spec} took more than 30 s"))
}

fn assert_is(r: &ssm_session::ResolvedTarget, n: &Node, via: Via) {
    assert_eq!(r.instance_id, n.id);
    assert_eq!(r.name.as_deref(), Some(n.name.as_str()));
    assert_eq!(r.state.as_deref(), Some("running"));
    assert_eq!(r.availability_zone.as_deref(), Some(n.az.as_str()));
    assert_eq!(r.private_ip, Some(n.private_ip));
    assert_eq!(r.public_ip, Some(n.public_ip));
    assert_eq!(r.via, via);
}

/// Id, tag, private IP and public IP each find exactly the instance they name.
pub async fn check_id_tag_and_addresses(cfg: &Config, ro: &ResolveOptions, w: &World) {
    let r = resolve(cfg, ro, &w.db.id).await.expect("by id");
    assert_is(&r, &w.db, Via::InstanceId);

    let r = resolve(cfg, ro, "Name:web-1").await.expect("by Name tag");
    assert_is(
        &r,
        &w.web1,
        Via::Tag {
            key: "Name".into(),
            value: "web-1".into(),
        },
    );
    let r = resolve(cfg, ro, "Role:db").await.expect("by another tag");
    assert_eq!(r.instance_id, w.db.id);

    let r = resolve(cfg, ro, &w.web2.private_ip.to_string())
        .await
        .expect("by private IP");
    assert_is(&r, &w.web2, Via::Address(w.web2.private_ip.into()));

    let r = resolve(cfg, ro, &w.web1.public_ip.to_string())
        .await
        .expect("by public IP");
    assert_is(&r, &w.web1, Via::Address(w.web1.public_ip.into()));

    let e = resolve(cfg, ro, "Name:nothing-here").await.unwrap_err();
    match &e {
        Error::TargetNotFound { target, searched } => {
            assert_eq!(target, "Name:nothing-here");
            assert!(searched.contains("tag Name=nothing-here"), "{e}");
        }
        other => panic!("expected TargetNotFound, got {other:?}"),
    }
    let e = resolve(cfg, ro, "10.255.255.254").await.unwrap_err();
    assert!(matches!(e, Error::TargetNotFound { .. }), "{e}");
    assert!(
        e.to_string().contains("private or public IPv4 address 10.255.255.254"),
        "{e}"
    );
}

/// A tag on two running instances is an error listing both, with Name tag and state.
pub async fn check_ambiguous(cfg: &Config, ro: &ResolveOptions, w: &World) {
    let e = resolve(cfg, ro, "Role:web").await.unwrap_err();
    let Error::AmbiguousTarget {
        target,
        candidates,
        more,
    } = &e
    else {
        panic!("expected AmbiguousTarget, got {e:?}");
    };
    assert_eq!(target, "Role:web");
    assert!(!more);
    let mut got: Vec<(String, Option<String>, String)> = candidates
        .iter()
        .map(|c| (c.instance_id.clone(), c.name.clone(), c.state.clone()))
        .collect();
    got.sort();
    let mut want = vec![
        (w.web1.id.clone(), Some("web-1".to_owned()), "running".to_owned()),
        (w.web2.id.clone(), Some("web-2".to_owned()), "running".to_owned()),
    ];
    want.sort();
    assert_eq!(got, want);
    let text = e.to_string();
    for n in [&w.web1, &w.web2] {
        assert!(text.contains(&format!("{} (Name={}, running)", n.id, n.name)), "{text}");
    }
    // Wildcards are EC2's: web-* is just as ambiguous.
    assert!(matches!(
        resolve(cfg, ro, "Name:web-*").await,
        Err(Error::AmbiguousTarget { .. })
    ));
}

/// A stopped instance is found by none of its forms, and the error says it is stopped.
pub async fn check_stopped(cfg: &Config, ro: &ResolveOptions, w: &World) {
    for spec in [
        w.old.id.clone(),
        "Name:old".to_owned(),
        "Role:old".to_owned(),
        w.old.private_ip.to_string(),
    ] {
        let e = resolve(cfg, ro, &spec).await.unwrap_err();
        let Error::TargetNotFound { searched, .. } = &e else {
            panic!("{spec}: expected TargetNotFound, got {e:?}");
        };
        assert!(
            searched.contains(&format!("matched but not running: {} (Name=old, stopped)", w.old.id)),
            "{spec}: {e}"
        );
    }
}
