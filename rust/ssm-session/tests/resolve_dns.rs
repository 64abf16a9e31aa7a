//! DNS-name targets against a real DNS server: dnsmasq on a loopback port serves A, AAAA and
//! TXT records; EC2 is the emulator (fixed addresses) and, once, moto.
//!
//! The rules under test (see `ssm_session::resolve`): a TXT record on the name itself holding an
//! instance id names the target and wins over A/AAAA; otherwise the addresses are searched as
//! private, public and IPv6 addresses of running instances. Each type stands on its own: servers
//! that refuse (dnsmasq without an upstream), fail (SERVFAIL) or never answer one type, over IPv4
//! and IPv6 loopback, still resolve names through the types they answer.
//!
//! Table-driven: the names that resolve are rows of `dns_name_resolves!`, one test per row; each
//! kind of server is one test whose rows are what its lookups must fail with.

mod common;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use common::resolve::{FakeDns, Reply, a, aaaa, moto_run_instance, resolve, test_config, txt};
use common::{Dnsmasq, Moto, emulator, loopbacks};
use hickory_resolver::proto::rr::RecordType;
use ssm_emulator::{Config as EmuConfig, Emulator, Instance, InstanceState};
use ssm_session::resolve::Via;
use ssm_session::{Error, ResolveOptions};

const WEB: &str = "i-0aaaaaaaaaaaaaaa1";
const DB: &str = "i-0aaaaaaaaaaaaaaa2";
const OLD: &str = "i-0aaaaaaaaaaaaaaa3";
const NODE: &str = "mi-0123456789abcdef0";

/// No answer may take two query timeouts (3 s each).
const ONE_QUERY_TIMEOUT: Duration = Duration::from_secs(5);

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

/// The emulator with [`inventory`] and options pointing at `dns`.
async fn emulator_and_options(dns: SocketAddr) -> (Emulator, ResolveOptions) {
    let emu = emulator(EmuConfig {
        inventory: inventory(),
        ..EmuConfig::default()
    })
    .await;
    let ro = ResolveOptions {
        dns_server: Some(dns),
        ec2_endpoint_url: Some(emu.endpoint()),
        ..ResolveOptions::default()
    };
    (emu, ro)
}

struct Setup {
    _emu: Emulator,
    _dns: Dnsmasq,
    cfg: ssm_session::aws::Config,
    ro: ResolveOptions,
}

/// dnsmasq with [`records`], the emulator with [`inventory`].
async fn setup() -> Setup {
    let dns = Dnsmasq::start(&records()).await;
    let (emu, ro) = emulator_and_options(dns.addr).await;
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

fn dns_txt(name: &str) -> Via {
    Via::DnsTxt { name: name.into() }
}

/// One test per row `test: "name" => instance, via[, then |setup, target| { more checks }];`:
/// against [`setup`], the name resolves to the instance, found the way `via` says.
macro_rules! dns_name_resolves {
    ($($(#[$attr:meta])* $test:ident: $name:literal => $id:expr, $via:expr $(, then |$s:ident, $r:ident| $more:block)?;)*) => {$(
        $(#[$attr])*
        #[tokio::test]
        async fn $test() {
            let s = setup().await;
            let r = resolve(&s.cfg, &s.ro, $name)
                .await
                .unwrap_or_else(|e| panic!("{}: {e:?}", $name));
            assert_eq!(r.instance_id, $id, "{}: the instance", $name);
            assert_eq!(r.via, $via, "{}: how it was found", $name);
            $(let ($s, $r) = (&s, &r); $more)?
        }
    )*};
}

dns_name_resolves! {
    a_record_finds_the_instance_by_private_ip: "web.test" => WEB, dns_address("web.test", "10.0.0.5"), then |s, _r| {
        // A trailing dot (fully qualified) is the same name.
        assert_eq!(resolve(&s.cfg, &s.ro, "web.test.").await.unwrap().instance_id, WEB);
    };
    a_record_finds_the_instance_by_public_ip: "public.test" => WEB, dns_address("public.test", "203.0.113.5");
    aaaa_record_finds_the_instance_by_ipv6: "web6.test" => WEB, dns_address("web6.test", "fd00::5");
    txt_record_names_the_instance: "alias.test" => DB, dns_txt("alias.test"), then |_s, r| {
        assert_eq!(r.name.as_deref(), Some("db"));
        assert_eq!(r.state.as_deref(), Some("running"));
    };
    /// both.test has A 10.0.0.5 (web) and a TXT record naming db.
    txt_record_wins_over_address_records: "both.test" => DB, dns_txt("both.test");
    txt_record_may_name_a_managed_node: "node.test" => NODE, dns_txt("node.test");
    unrelated_txt_text_is_ignored: "spf.test" => DB, dns_address("spf.test", "10.0.0.6");
}

#[tokio::test]
async fn names_without_a_running_instance_are_not_found() {
    let s = setup().await;
    for (name, says) in [
        ("nosuchname.test", "no address and no TXT record".to_owned()),
        ("orphan.test", "A/AAAA: 10.9.9.9".to_owned()),
        ("stopped.test", format!("{OLD} (Name=old, stopped)")),
    ] {
        let e = resolve(&s.cfg, &s.ro, name).await.unwrap_err();
        assert!(matches!(e, Error::TargetNotFound { .. }), "{name}: {e:?}");
        assert!(e.to_string().contains(&says), "{name}: {e}");
    }
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
    let dead = SocketAddr::from(([127, 0, 0, 1], common::free_port()));
    let ro = ResolveOptions {
        dns_server: Some(dead),
        ..s.ro.clone()
    };
    let started = Instant::now();
    let e = resolve(&s.cfg, &ro, "web.test").await.unwrap_err();
    assert!(matches!(e, Error::Dns { .. }), "{e:?}");
    assert!(started.elapsed() < ONE_QUERY_TIMEOUT, "took {:?}", started.elapsed());
}

/// What a lookup must fail with.
enum Fails {
    /// A DNS error with exactly this message.
    Dns(&'static str),
    /// Not found, the message holding this.
    NotFound(&'static str),
}

/// The checks of one DNS server at `dns` (called `server` in messages), with the emulator and
/// [`inventory`] behind it. When `one_type_each`, it serves `a.test` A and `aaaa.test` AAAA
/// (both [`WEB`]) and `txt.test` TXT (naming [`DB`]), and each of them must resolve although
/// the server does not answer the other types. Every name of `fails` must fail as its row says.
/// No lookup may take two query timeouts.
async fn check_server(server: &str, dns: SocketAddr, one_type_each: bool, fails: &[(&str, Fails)]) {
    let cfg = test_config().await;
    let (_emu, ro) = emulator_and_options(dns).await;
    if one_type_each {
        let started = Instant::now();
        let (by_a, by_aaaa, by_txt) = tokio::join!(
            resolve(&cfg, &ro, "a.test"),
            resolve(&cfg, &ro, "aaaa.test"),
            resolve(&cfg, &ro, "txt.test")
        );
        for (name, got, id, via) in [
            ("a.test", by_a, WEB, dns_address("a.test", "10.0.0.5")),
            ("aaaa.test", by_aaaa, WEB, dns_address("aaaa.test", "fd00::5")),
            ("txt.test", by_txt, DB, dns_txt("txt.test")),
        ] {
            let r = got.unwrap_or_else(|e| panic!("{server}: {name}: {e}"));
            assert_eq!(r.instance_id, id, "{server}: {name}");
            assert_eq!(r.via, via, "{server}: {name}");
        }
        let took = started.elapsed();
        assert!(
            took < ONE_QUERY_TIMEOUT,
            "{server}: a.test, aaaa.test, txt.test took {took:?}"
        );
    }
    for (name, fails) in fails {
        let started = Instant::now();
        let e = resolve(&cfg, &ro, name).await.unwrap_err();
        let took = started.elapsed();
        match fails {
            Fails::Dns(message) => {
                assert!(matches!(e, Error::Dns { .. }), "{server}: {name}: {e:?}");
                assert_eq!(e.to_string(), *message, "{server}: {name}");
            }
            Fails::NotFound(part) => {
                assert!(matches!(e, Error::TargetNotFound { .. }), "{server}: {name}: {e:?}");
                assert!(e.to_string().contains(part), "{server}: {name}: {e}");
            }
        }
        assert!(took < ONE_QUERY_TIMEOUT, "{server}: {name} took {took:?}");
    }
}

/// A [`FakeDns`] on `ip` with the records of `check_server`'s `one_type_each`, and `mixed.test`
/// answered REFUSED for A and NODATA for TXT; everything else (mixed.test AAAA included) gets
/// `default`.
fn fake_one_type_each(ip: IpAddr, default: Reply) -> FakeDns {
    FakeDns::start(
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
        default,
    )
}

/// The resolver: dnsmasq with records and no upstream refuses the types it has none of.
#[tokio::test]
async fn a_refused_record_type_does_not_sink_the_others() {
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
        check_server(
            &format!("dnsmasq at {}", dns.addr),
            dns.addr,
            true,
            &[
                // Nothing anywhere: every type is listed with what it got.
                (
                    "nothing.test",
                    Fails::Dns(
                        "DNS lookup of nothing.test found nothing usable: A: refused, AAAA: refused, TXT: refused",
                    ),
                ),
                // An answer that matches no instance: not found, and the refused types are named.
                (
                    "orphan.test",
                    Fails::NotFound("A: 10.9.9.9, AAAA: refused, TXT: refused"),
                ),
            ],
        )
        .await;
    }
}

/// A resolver whose upstream fails for some types answers SERVFAIL for them.
#[tokio::test]
async fn a_servfail_record_type_does_not_sink_the_others() {
    for ip in loopbacks() {
        let dns = fake_one_type_each(ip, Reply::ServFail);
        check_server(
            &format!("a SERVFAIL server at {}", dns.addr),
            dns.addr,
            true,
            &[
                (
                    "nothing.test",
                    Fails::Dns(
                        "DNS lookup of nothing.test found nothing usable: A: server failure (SERVFAIL), \
                         AAAA: server failure (SERVFAIL), TXT: server failure (SERVFAIL)",
                    ),
                ),
                (
                    "mixed.test",
                    Fails::Dns(
                        "DNS lookup of mixed.test found nothing usable: A: refused, AAAA: server failure (SERVFAIL), \
                         TXT: none",
                    ),
                ),
            ],
        )
        .await;
    }
}

/// A slow upstream for some types: they time out, the others' answers are used.
#[tokio::test]
async fn a_timed_out_record_type_does_not_sink_the_others() {
    for ip in loopbacks() {
        let dns = fake_one_type_each(ip, Reply::Silent);
        check_server(
            &format!("a server silent on some types at {}", dns.addr),
            dns.addr,
            true,
            &[(
                "mixed.test",
                Fails::Dns(
                    "DNS lookup of mixed.test found nothing usable: A: refused, AAAA: timed out after 3 s, TXT: none",
                ),
            )],
        )
        .await;
    }
}

/// A server that reads every query and never answers: the lookup ends after one query
/// timeout, not two, and says so for each type.
#[tokio::test]
async fn a_silent_dns_server_fails_within_one_query_timeout() {
    for ip in loopbacks() {
        let dns = FakeDns::start(ip, &[], Reply::Silent);
        check_server(
            &format!("a silent server at {}", dns.addr),
            dns.addr,
            false,
            &[(
                "web.test",
                Fails::Dns(
                    "DNS lookup of web.test found nothing usable: A: timed out after 3 s, AAAA: timed out after 3 s, \
                     TXT: timed out after 3 s",
                ),
            )],
        )
        .await;
    }
}

#[tokio::test]
async fn a_record_resolves_against_moto() {
    // The same DNS form, with EC2 played by moto: the record is made from the address moto gave.
    let moto = Moto::start().await;
    let cfg = test_config().await;
    let ec2 = ssm_session::resolve::ec2_client(&cfg, Some(&moto.endpoint)).unwrap();
    let i = moto_run_instance(&ec2, &[("Name", "dns-web")]).await;
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
