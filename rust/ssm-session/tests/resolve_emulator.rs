//! Target resolution against the emulator's EC2 endpoint: the same checks as against moto, and
//! what moto cannot show (IPv6, paging, EC2's errors, Instance Connect validation).

mod common;

use std::net::Ipv4Addr;

use common::emulator;
use common::resolve::{Node, World, resolve, test_config};
use ssm_emulator::{Config as EmuConfig, Emulator, Instance, InstanceState};
use ssm_session::resolve::Via;
use ssm_session::{Error, ResolveOptions};

fn node(id: &str, name: &str, last: u8, az: &str) -> Node {
    Node {
        id: id.into(),
        name: name.into(),
        private_ip: Ipv4Addr::new(10, 0, 0, last),
        public_ip: Ipv4Addr::new(203, 0, 113, last),
        az: az.into(),
    }
}

fn world() -> World {
    World {
        web1: node("i-0000000000000000a", "web-1", 11, "us-east-1a"),
        web2: node("i-0000000000000000b", "web-2", 12, "us-east-1b"),
        db: node("i-0000000000000000c", "db", 13, "us-east-1c"),
        old: node("i-0000000000000000d", "old", 14, "us-east-1a"),
    }
}

fn instance(n: &Node, role: &str) -> Instance {
    Instance::running(&n.id)
        .tag("Name", &n.name)
        .tag("Role", role)
        .private_ip(n.private_ip)
        .public_ip(n.public_ip)
        .availability_zone(&n.az)
}

fn inventory(w: &World) -> Vec<Instance> {
    vec![
        instance(&w.web1, "web").ipv6("fd00::11".parse().unwrap()),
        instance(&w.web2, "web"),
        instance(&w.db, "db").ipv6("fd00::13".parse().unwrap()),
        instance(&w.old, "old").state(InstanceState::Stopped),
    ]
}

async fn setup_with(inventory: Vec<Instance>) -> (Emulator, ssm_session::aws::Config, ResolveOptions) {
    let emu = emulator(EmuConfig {
        inventory,
        ..EmuConfig::default()
    })
    .await;
    let ro = ResolveOptions {
        ec2_endpoint_url: Some(emu.endpoint()),
        ..ResolveOptions::default()
    };
    (emu, test_config().await, ro)
}

#[tokio::test]
async fn emulator_resolves_id_tag_private_and_public_ip() {
    let w = world();
    let (_emu, cfg, ro) = setup_with(inventory(&w)).await;
    common::resolve::check_id_tag_and_addresses(&cfg, &ro, &w).await;
}

#[tokio::test]
async fn emulator_ambiguous_tag_lists_every_candidate() {
    let w = world();
    let (_emu, cfg, ro) = setup_with(inventory(&w)).await;
    common::resolve::check_ambiguous(&cfg, &ro, &w).await;
}

#[tokio::test]
async fn emulator_stopped_instance_does_not_count() {
    let w = world();
    let (_emu, cfg, ro) = setup_with(inventory(&w)).await;
    common::resolve::check_stopped(&cfg, &ro, &w).await;
}

#[tokio::test]
async fn emulator_resolves_ipv6_addresses() {
    let w = world();
    let (_emu, cfg, ro) = setup_with(inventory(&w)).await;
    for spec in ["fd00::13", "[fd00::13]", "fd00:0:0:0:0:0:0:13"] {
        let r = resolve(&cfg, &ro, spec).await.expect(spec);
        assert_eq!(r.instance_id, w.db.id, "{spec}");
        assert_eq!(r.ipv6, vec!["fd00::13".parse::<std::net::Ipv6Addr>().unwrap()]);
        assert_eq!(r.via, Via::Address("fd00::13".parse().unwrap()));
    }
    let e = resolve(&cfg, &ro, "fd00::99").await.unwrap_err();
    assert!(e.to_string().contains("IPv6 address fd00::99"), "{e}");
}

#[tokio::test]
async fn managed_node_ids_pass_through_without_ec2() {
    // No inventory at all: an EC2 lookup would fail, a managed node needs none.
    let (_emu, cfg, ro) = setup_with(Vec::new()).await;
    let r = resolve(&cfg, &ro, "mi-0123456789abcdef0").await.unwrap();
    assert_eq!(r.instance_id, "mi-0123456789abcdef0");
    assert_eq!(r.via, Via::ManagedNode);
    assert_eq!(r.state, None);
    // And resolve_session_target passes plain instance ids through too.
    let r = ssm_session::resolve_session_target(&cfg, "i-0abc", &ro).await.unwrap();
    assert_eq!((r.instance_id.as_str(), r.via), ("i-0abc", Via::Unchecked));
}

#[tokio::test]
async fn ecs_task_targets_pass_through_to_start_session_unchanged() {
    // No inventory: an EC2 lookup would find nothing. `ecs:` is no tag key here.
    let (emu, cfg, ro) = setup_with(Vec::new()).await;
    let target = "ecs:prod_0123456789abcdef0123456789abcdef_0123456789abcdef0123456789abcdef-3681984407";
    let r = resolve(&cfg, &ro, target).await.unwrap();
    assert_eq!((r.instance_id.as_str(), r.via), (target, Via::EcsTask));
    let r = ssm_session::resolve_session_target(&cfg, target, &ro).await.unwrap();
    assert_eq!((r.instance_id.as_str(), &r.via), (target, &Via::Unchecked));
    let api = ssm_session::SsmApi::new(&cfg, Some(&emu.endpoint())).unwrap();
    let started = api
        .start_session(&r.instance_id, None, &std::collections::HashMap::new())
        .await
        .unwrap();
    let info = emu
        .sessions()
        .into_iter()
        .find(|s| s.session_id == started.session_id)
        .unwrap();
    assert_eq!(info.target, target);
}

#[tokio::test]
async fn ambiguity_is_found_across_pages_and_capped() {
    // 25 instances share a tag; pages of 5 are followed until the list is long enough.
    let inv: Vec<Instance> = (0..25)
        .map(|n| {
            Instance::running(format!("i-{n:017x}"))
                .tag("Name", format!("fleet-{n}"))
                .tag("Fleet", "big")
        })
        .chain([Instance::running("i-00000000000000fff").tag("Fleet", "small")])
        .collect();
    let (_emu, cfg, mut ro) = setup_with(inv).await;
    ro.page_size = Some(5);
    let e = resolve(&cfg, &ro, "Fleet:big").await.unwrap_err();
    let Error::AmbiguousTarget { candidates, more, .. } = &e else {
        panic!("expected AmbiguousTarget, got {e:?}");
    };
    assert_eq!(candidates.len(), ssm_session::resolve::MAX_CANDIDATES);
    assert!(more);
    assert!(e.to_string().contains("or more"), "{e}");
    // The single match on the last page is found through every page before it.
    ro.page_size = Some(5);
    let r = resolve(&cfg, &ro, "Fleet:small").await.unwrap();
    assert_eq!(r.instance_id, "i-00000000000000fff");
    assert_eq!(r.name, None);
}

#[tokio::test]
async fn emulator_answers_like_ec2_on_bad_requests() {
    let w = world();
    let (emu, cfg, _ro) = setup_with(inventory(&w)).await;
    let ec2 = ssm_session::resolve::ec2_client(&cfg, Some(&emu.endpoint())).unwrap();
    let code = |e: aws_sdk_ec2::error::SdkError<aws_sdk_ec2::operation::describe_instances::DescribeInstancesError>| {
        aws_sdk_ec2::error::ProvideErrorMetadata::code(&e).map(str::to_owned)
    };
    let bad_filter = aws_sdk_ec2::types::Filter::builder()
        .name("no-such-filter")
        .values("x")
        .build();
    let e = ec2.describe_instances().filters(bad_filter).send().await.unwrap_err();
    assert_eq!(code(e).as_deref(), Some("InvalidParameterValue"));
    let e = ec2
        .describe_instances()
        .instance_ids("i-0ffffffffffffffff")
        .send()
        .await
        .unwrap_err();
    assert_eq!(code(e).as_deref(), Some("InvalidInstanceID.NotFound"));
    let e = ec2.describe_instances().max_results(2).send().await.unwrap_err();
    assert_eq!(code(e).as_deref(), Some("InvalidParameterValue"));
    // Lookup by InstanceId.N works as well as by filter.
    let out = ec2.describe_instances().instance_ids(&w.db.id).send().await.unwrap();
    let ids: Vec<&str> = out
        .reservations()
        .iter()
        .flat_map(|r| r.instances())
        .filter_map(|i| i.instance_id())
        .collect();
    assert_eq!(ids, vec![w.db.id.as_str()]);
}

#[tokio::test]
async fn plain_http_endpoints_must_be_loopback() {
    let cfg = test_config().await;
    let ro = ResolveOptions {
        ec2_endpoint_url: Some("http://ec2.example.com".into()),
        ..ResolveOptions::default()
    };
    let e = resolve(&cfg, &ro, "Name:web").await.unwrap_err();
    assert!(matches!(e, Error::Config(_)), "{e:?}");
    assert!(e.to_string().contains("allowed only for loopback"), "{e}");
    let e = ssm_session::ec2ic::InstanceConnect::new(&cfg, Some("http://10.1.2.3:80")).unwrap_err();
    assert!(e.to_string().contains("allowed only for loopback"), "{e}");
}

#[tokio::test]
async fn a_missing_region_says_how_to_set_one() {
    let cfg = ssm_session::aws::Config::builder().build();
    let e = resolve(&cfg, &ResolveOptions::default(), "Name:web").await.unwrap_err();
    assert!(matches!(e, Error::NoRegion), "{e:?}");
    assert!(e.to_string().contains("AWS_REGION"), "{e}");
}

#[tokio::test]
async fn instance_connect_checks_instance_state_and_zone() {
    let w = world();
    let (emu, cfg, ro) = setup_with(inventory(&w)).await;
    let ic = ssm_session::ec2ic::InstanceConnect::new(&cfg, Some(&emu.endpoint())).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let key = ssm_session::ec2ic::generate_ephemeral_key(dir.path()).unwrap();

    let mut db = resolve(&cfg, &ro, "Name:db").await.unwrap();
    ic.push_key(&db, "ec2-user", key.public_key_openssh()).await.unwrap();
    let pushed = emu.instance_connect_keys();
    assert_eq!(pushed.len(), 1);
    assert_eq!(pushed[0].instance_id, w.db.id);
    assert_eq!(pushed[0].os_user, "ec2-user");
    assert_eq!(pushed[0].public_key, key.public_key_openssh());

    let code = |e: Error| e.api_code().map(str::to_owned);
    db.availability_zone = Some("us-east-1f".into());
    let e = ic
        .push_key(&db, "ec2-user", key.public_key_openssh())
        .await
        .unwrap_err();
    assert_eq!(code(e).as_deref(), Some("InvalidArgsException"));

    let mut old = db.clone();
    old.instance_id = w.old.id.clone();
    old.availability_zone = Some(w.old.az.clone());
    let e = ic
        .push_key(&old, "ec2-user", key.public_key_openssh())
        .await
        .unwrap_err();
    assert_eq!(code(e).as_deref(), Some("EC2InstanceStateInvalidException"));

    let mut ghost = old.clone();
    ghost.instance_id = "i-0999999999999999f".into();
    let e = ic
        .push_key(&ghost, "ec2-user", key.public_key_openssh())
        .await
        .unwrap_err();
    assert_eq!(code(e).as_deref(), Some("EC2InstanceNotFoundException"));

    let e = ic.push_key(&old, "ec2-user", "not a key").await.unwrap_err();
    assert!(matches!(e, Error::Config(_)), "{e:?}");
}

#[tokio::test]
async fn sessions_to_stopped_inventory_instances_are_refused() {
    let w = world();
    let (emu, cfg, _ro) = setup_with(inventory(&w)).await;
    let api = ssm_session::SsmApi::new(&cfg, Some(&emu.endpoint())).unwrap();
    let params = std::collections::HashMap::new();
    let e = api.start_session(&w.old.id, None, &params).await.unwrap_err();
    assert_eq!(e.api_code(), Some("TargetNotConnected"));
    api.start_session(&w.db.id, None, &params).await.unwrap();
    // Instances outside the inventory keep the emulator's old rule (any i-/mi- id).
    api.start_session("i-0123456789abcdef0", None, &params).await.unwrap();
}
