//! DNS-name targets against a real DNS server: dnsmasq on a loopback port serves A, AAAA and
//! TXT records; EC2 is the emulator (fixed addresses) and, once, moto.
//!
//! The rules under test (see `ssm_session::resolve`): a TXT record on the name itself holding an
//! instance id names the target and wins over A/AAAA; otherwise the addresses are searched as
//! private, public and IPv6 addresses of running instances. Each type stands on its own: servers
//! that refuse (dnsmasq without an upstream), fail (SERVFAIL) or never answer one type, over IPv4
//! and IPv6 loopback, still resolve names through the types they answer.

mod resolve_common;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use hickory_resolver::proto::rr::RecordType;
use resolve_common::{Dnsmasq, FakeDns, Reply, a, aaaa, loopbacks, resolve, test_config, txt};
use ssm_emulator::{Config as EmuConfig, Emulator, Instance, InstanceState};
use ssm_session::resolve::Via;
use ssm_session::{Error, ResolveOptions};

const WEB: &str = "i-0aaaaaaaaaaaaaaa1";
const DB: &str = "i-0aaaaaaaaaaaaaaa2";
const OLD: &str = "i-0aaaaaaaaaaaaaaa3";
const NODE: &str = "mi-0123456789abcdef0";

fn inventory() -> Vec<Instance> {
    vec![
        Instance::running(WEB)
            .tag("Name", "web")
            .private_ip(Ipv4Addr::new(10, 0, 0, 5))
            .public_ip(Ipv4Addr::new(203, 0, 113, 5))
            .ipv6("fd00::5".parse().unwrap()),
        Instance::running(DB)
            .tag("Name", "db")
            .private_ip(Ipv4Addr::new(10, 0, 0, 6)),
        Instance::running(OLD)
            .tag("Name", "old")
            .private_ip(Ipv4Addr::new(10, 0, 0, 7))
            .state(InstanceState::Stopped),
    ]
}

fn records() -> Vec<String> {
    [
        "--host-record=web.test,10.0.0.5",
        "--host-record=public.test,203.0.113.5",
        "--host-record=web6.test,fd00::5",
        "--txt-record=alias.test,ssm-target=i-0aaaaaaaaaaaaaaa2",
        // Both kinds on one name: the TXT record wins.
        "--host-record=both.test,10.0.0.5",
        "--txt-record=both.test,i-0aaaaaaaaaaaaaaa2",
        // Unrelated TXT text is ignored.
        "--host-record=spf.test,10.0.0.6",
        "--txt-record=spf.test,v=spf1 -all",
        "--txt-record=node.test,mi-0123456789abcdef0",
        "--host-record=orphan.test,10.9.9.9",
        "--host-record=stopped.test,10.0.0.7",
        "--host-record=multi.test,10.0.0.5",
        "--host-record=multi.test,10.0.0.6",
        "--txt-record=twoids.test,i-0aaaaaaaaaaaaaaa1 i-0aaaaaaaaaaaaaaa2",
    ]
    .iter()
    .map(|s| (*s).to_owned())
    .collect()
}

struct Setup {
    _emu: Emulator,
    _dns: Dnsmasq,
    cfg: ssm_session::aws::Config,
    ro: ResolveOptions,
}

async fn setup() -> Setup {
    let emu = Emulator::start(EmuConfig {
        inventory: inventory(),
        ..EmuConfig::default()
    })
    .await
    .unwrap();
    let dns = Dnsmasq::start(&records()).await;
    let ro = ResolveOptions {
        dns_server: Some(dns.addr),
        ec2_endpoint_url: Some(emu.endpoint()),
        ..ResolveOptions::default()
    };
    Setup {
        _emu: emu,
        _dns: dns,
        cfg: test_config().await,
        ro,
    }
}

fn dns_address(name: &str, ip: &str) -> Via {
    Via::DnsAddress {
        name: name.into(),
        address: ip.parse::<IpAddr>().unwrap(),
    }
}

#[tokio::test]
async fn a_record_finds_the_instance_by_private_ip() {
    let s = setup().await;
    let r = resolve(&s.cfg, &s.ro, "web.test").await.unwrap();
    assert_eq!(r.instance_id, WEB);
    assert_eq!(r.via, dns_address("web.test", "10.0.0.5"));
    // A trailing dot (fully qualified) is the same name.
    assert_eq!(resolve(&s.cfg, &s.ro, "web.test.").await.unwrap().instance_id, WEB);
}

#[tokio::test]
async fn a_record_finds_the_instance_by_public_ip() {
    let s = setup().await;
    let r = resolve(&s.cfg, &s.ro, "public.test").await.unwrap();
    assert_eq!(r.instance_id, WEB);
    assert_eq!(r.via, dns_address("public.test", "203.0.113.5"));
}

#[tokio::test]
async fn aaaa_record_finds_the_instance_by_ipv6() {
    let s = setup().await;
    let r = resolve(&s.cfg, &s.ro, "web6.test").await.unwrap();
    assert_eq!(r.instance_id, WEB);
    assert_eq!(r.via, dns_address("web6.test", "fd00::5"));
}

#[tokio::test]
async fn txt_record_names_the_instance() {
    let s = setup().await;
    let r = resolve(&s.cfg, &s.ro, "alias.test").await.unwrap();
    assert_eq!(r.instance_id, DB);
    assert_eq!(r.name.as_deref(), Some("db"));
    assert_eq!(r.state.as_deref(), Some("running"));
    assert_eq!(
        r.via,
        Via::DnsTxt {
            name: "alias.test".into()
        }
    );
}

#[tokio::test]
async fn txt_record_wins_over_address_records() {
    let s = setup().await;
    // both.test has A 10.0.0.5 (web) and TXT naming db.
    let r = resolve(&s.cfg, &s.ro, "both.test").await.unwrap();
    assert_eq!(r.instance_id, DB);
}

#[tokio::test]
async fn txt_record_may_name_a_managed_node() {
    let s = setup().await;
    let r = resolve(&s.cfg, &s.ro, "node.test").await.unwrap();
    assert_eq!(r.instance_id, NODE);
    assert_eq!(
        r.via,
        Via::DnsTxt {
            name: "node.test".into()
        }
    );
}

#[tokio::test]
async fn unrelated_txt_text_is_ignored() {
    let s = setup().await;
    let r = resolve(&s.cfg, &s.ro, "spf.test").await.unwrap();
    assert_eq!(r.instance_id, DB);
    assert_eq!(r.via, dns_address("spf.test", "10.0.0.6"));
}

#[tokio::test]
async fn names_without_a_running_instance_are_not_found() {
    let s = setup().await;
    let e = resolve(&s.cfg, &s.ro, "nosuchname.test").await.unwrap_err();
    assert!(matches!(e, Error::TargetNotFound { .. }), "{e:?}");
    assert!(e.to_string().contains("no address and no TXT record"), "{e}");

    let e = resolve(&s.cfg, &s.ro, "orphan.test").await.unwrap_err();
    assert!(matches!(e, Error::TargetNotFound { .. }), "{e:?}");
    assert!(e.to_string().contains("A/AAAA: 10.9.9.9"), "{e}");

    let e = resolve(&s.cfg, &s.ro, "stopped.test").await.unwrap_err();
    assert!(e.to_string().contains(&format!("{OLD} (Name=old, stopped)")), "{e}");
}

#[tokio::test]
async fn names_meaning_two_instances_are_ambiguous() {
    let s = setup().await;
    for name in ["multi.test", "twoids.test"] {
        let e = resolve(&s.cfg, &s.ro, name).await.unwrap_err();
        let Error::AmbiguousTarget { candidates, .. } = &e else {
            panic!("{name}: expected AmbiguousTarget, got {e:?}");
        };
        let mut ids: Vec<&str> = candidates.iter().map(|c| c.instance_id.as_str()).collect();
        ids.sort();
        assert_eq!(ids, vec![WEB, DB], "{name}");
        assert!(e.to_string().contains("(Name=web, running)"), "{e}");
    }
}

#[tokio::test]
async fn an_unreachable_dns_server_is_a_dns_error_within_one_query_timeout() {
    let s = setup().await;
    // A UDP port nobody listens on.
    let sock = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let dead = sock.local_addr().unwrap();
    drop(sock);
    let ro = ResolveOptions {
        dns_server: Some(dead),
        ..s.ro.clone()
    };
    let started = Instant::now();
    let e = resolve(&s.cfg, &ro, "web.test").await.unwrap_err();
    assert!(matches!(e, Error::Dns { .. }), "{e:?}");
    // Each query may take 3 s; the lookup must not take two of them.
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "took {:?}",
        started.elapsed()
    );
}

/// The emulator with [`inventory`] and options pointing at `dns`.
async fn emulator_and_options(dns: SocketAddr) -> (Emulator, ResolveOptions) {
    let emu = Emulator::start(EmuConfig {
        inventory: inventory(),
        ..EmuConfig::default()
    })
    .await
    .unwrap();
    let ro = ResolveOptions {
        dns_server: Some(dns),
        ec2_endpoint_url: Some(emu.endpoint()),
        ..ResolveOptions::default()
    };
    (emu, ro)
}

/// One target per record type, each on a name that has only that type: A and AAAA point at
/// [`WEB`], TXT names [`DB`].
async fn check_one_type_each(cfg: &ssm_session::aws::Config, ro: &ResolveOptions, server: &str) {
    let (by_a, by_aaaa, by_txt) = tokio::join!(
        resolve(cfg, ro, "a.test"),
        resolve(cfg, ro, "aaaa.test"),
        resolve(cfg, ro, "txt.test")
    );
    let r = by_a.unwrap_or_else(|e| panic!("{server}: a.test: {e}"));
    assert_eq!(r.instance_id, WEB, "{server}");
    assert_eq!(r.via, dns_address("a.test", "10.0.0.5"), "{server}");
    let r = by_aaaa.unwrap_or_else(|e| panic!("{server}: aaaa.test: {e}"));
    assert_eq!(r.instance_id, WEB, "{server}");
    assert_eq!(r.via, dns_address("aaaa.test", "fd00::5"), "{server}");
    let r = by_txt.unwrap_or_else(|e| panic!("{server}: txt.test: {e}"));
    assert_eq!(r.instance_id, DB, "{server}");
    assert_eq!(
        r.via,
        Via::DnsTxt {
            name: "txt.test".into()
        },
        "{server}"
    );
}

/// The resolver: dnsmasq with records and no upstream refuses the types it has none of.
#[tokio::test]
async fn a_refused_record_type_does_not_sink_the_others() {
    let cfg = test_config().await;
    for ip in loopbacks() {
        let dns = Dnsmasq::refusing(
            &[
                "--address=/a.test/10.0.0.5".to_owned(),
                "--address=/aaaa.test/fd00::5".to_owned(),
                "--txt-record=txt.test,i-0aaaaaaaaaaaaaaa2".to_owned(),
                "--address=/orphan.test/10.9.9.9".to_owned(),
            ],
            ip,
        )
        .await;
        let (_emu, ro) = emulator_and_options(dns.addr).await;
        let server = format!("dnsmasq at {}", dns.addr);
        check_one_type_each(&cfg, &ro, &server).await;

        // Nothing anywhere: every type is listed with what it got.
        let e = resolve(&cfg, &ro, "nothing.test").await.unwrap_err();
        assert!(matches!(e, Error::Dns { .. }), "{server}: {e:?}");
        assert_eq!(
            e.to_string(),
            "DNS lookup of nothing.test found nothing usable: A: refused, AAAA: refused, TXT: refused",
            "{server}"
        );

        // An answer that matches no instance: not found, and the refused types are named.
        let e = resolve(&cfg, &ro, "orphan.test").await.unwrap_err();
        assert!(matches!(e, Error::TargetNotFound { .. }), "{server}: {e:?}");
        let text = e.to_string();
        assert!(
            text.contains("A: 10.9.9.9, AAAA: refused, TXT: refused"),
            "{server}: {text}"
        );
    }
}

/// A resolver whose upstream fails for some types answers SERVFAIL for them.
#[tokio::test]
async fn a_servfail_record_type_does_not_sink_the_others() {
    let cfg = test_config().await;
    for ip in loopbacks() {
        let dns = FakeDns::start(
            ip,
            &[
                ("a.test", RecordType::A, Reply::Records(vec![a("10.0.0.5")])),
                ("aaaa.test", RecordType::AAAA, Reply::Records(vec![aaaa("fd00::5")])),
                (
                    "txt.test",
                    RecordType::TXT,
                    Reply::Records(vec![txt("i-0aaaaaaaaaaaaaaa2")]),
                ),
                ("mixed.test", RecordType::A, Reply::Refused),
                ("mixed.test", RecordType::AAAA, Reply::ServFail),
                ("mixed.test", RecordType::TXT, Reply::NoData),
            ],
            Reply::ServFail,
        );
        let (_emu, ro) = emulator_and_options(dns.addr).await;
        let server = format!("a SERVFAIL server at {}", dns.addr);
        check_one_type_each(&cfg, &ro, &server).await;

        let e = resolve(&cfg, &ro, "nothing.test").await.unwrap_err();
        assert!(matches!(e, Error::Dns { .. }), "{server}: {e:?}");
        assert_eq!(
            e.to_string(),
            "DNS lookup of nothing.test found nothing usable: A: server failure (SERVFAIL), \
             AAAA: server failure (SERVFAIL), TXT: server failure (SERVFAIL)",
            "{server}"
        );
        let e = resolve(&cfg, &ro, "mixed.test").await.unwrap_err();
        assert_eq!(
            e.to_string(),
            "DNS lookup of mixed.test found nothing usable: A: refused, AAAA: server failure (SERVFAIL), TXT: none",
            "{server}"
        );
    }
}

/// A slow upstream for some types: they time out, the others' answers are used.
#[tokio::test]
async fn a_timed_out_record_type_does_not_sink_the_others() {
    let cfg = test_config().await;
    for ip in loopbacks() {
        let dns = FakeDns::start(
            ip,
            &[
                ("a.test", RecordType::A, Reply::Records(vec![a("10.0.0.5")])),
                ("aaaa.test", RecordType::AAAA, Reply::Records(vec![aaaa("fd00::5")])),
                (
                    "txt.test",
                    RecordType::TXT,
                    Reply::Records(vec![txt("i-0aaaaaaaaaaaaaaa2")]),
                ),
                ("mixed.test", RecordType::A, Reply::Refused),
                ("mixed.test", RecordType::TXT, Reply::NoData),
            ],
            Reply::Silent,
        );
        let (_emu, ro) = emulator_and_options(dns.addr).await;
        let server = format!("a server silent on some types at {}", dns.addr);
        let started = Instant::now();
        check_one_type_each(&cfg, &ro, &server).await;
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "{server}: took {:?}",
            started.elapsed()
        );

        let e = resolve(&cfg, &ro, "mixed.test").await.unwrap_err();
        assert!(matches!(e, Error::Dns { .. }), "{server}: {e:?}");
        assert_eq!(
            e.to_string(),
            "DNS lookup of mixed.test found nothing usable: A: refused, AAAA: timed out after 3 s, TXT: none",
            "{server}"
        );
    }
}

/// A server that reads every query and never answers: the lookup ends after one query
/// timeout, not two, and says so for each type.
#[tokio::test]
async fn a_silent_dns_server_fails_within_one_query_timeout() {
    let cfg = test_config().await;
    for ip in loopbacks() {
        let dns = FakeDns::start(ip, &[], Reply::Silent);
        let (_emu, ro) = emulator_and_options(dns.addr).await;
        let started = Instant::now();
        let e = resolve(&cfg, &ro, "web.test").await.unwrap_err();
        let took = started.elapsed();
        assert!(matches!(e, Error::Dns { .. }), "{}: {e:?}", dns.addr);
        assert_eq!(
            e.to_string(),
            "DNS lookup of web.test found nothing usable: A: timed out after 3 s, AAAA: timed out after 3 s, \
             TXT: timed out after 3 s",
            "{}",
            dns.addr
        );
        assert!(took < Duration::from_secs(5), "{}: took {took:?}", dns.addr);
    }
}

#[tokio::test]
async fn a_record_resolves_against_moto() {
    // The same DNS form, with EC2 played by moto: the record is made from the address moto gave.
    let moto = resolve_common::Moto::start().await;
    let cfg = test_config().await;
    let ec2 = ssm_session::resolve::ec2_client(&cfg, Some(&moto.endpoint)).unwrap();
    let tag = aws_sdk_ec2::types::TagSpecification::builder()
        .resource_type(aws_sdk_ec2::types::ResourceType::Instance)
        .tags(aws_sdk_ec2::types::Tag::builder().key("Name").value("dns-web").build())
        .build();
    let out = ec2
        .run_instances()
        .image_id("ami-12c6146b")
        .min_count(1)
        .max_count(1)
        .tag_specifications(tag)
        .send()
        .await
        .expect("RunInstances on moto");
    let i = &out.instances()[0];
    let id = i.instance_id().unwrap().to_owned();
    let ip = i.private_ip_address().unwrap().to_owned();
    let dns = Dnsmasq::start(&[
        format!("--host-record=moto-web.test,{ip}"),
        format!("--txt-record=moto-alias.test,{id}"),
    ])
    .await;
    let ro = ResolveOptions {
        dns_server: Some(dns.addr),
        ec2_endpoint_url: Some(moto.endpoint.clone()),
        ..ResolveOptions::default()
    };
    let r = resolve(&cfg, &ro, "moto-web.test").await.unwrap();
    assert_eq!(r.instance_id, id);
    assert_eq!(r.name.as_deref(), Some("dns-web"));
    assert_eq!(resolve(&cfg, &ro, "moto-alias.test").await.unwrap().instance_id, id);
}
