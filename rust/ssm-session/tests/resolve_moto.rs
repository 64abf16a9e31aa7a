//! Target resolution against moto, an EC2 implementation no one here wrote: instances made with
//! `RunInstances` (moto assigns their addresses and zones) resolve by id, tag, private IP and
//! public IP; an ambiguous tag lists its candidates; a stopped instance does not count.

mod common;

use common::Moto;
use common::resolve::{Node, World, moto_run_instance, test_config};
use ssm_session::ResolveOptions;
use ssm_session::aws::Config;

async fn run_instance(ec2: &aws_sdk_ec2::Client, name: &str, role: &str) -> Node {
    let i = moto_run_instance(ec2, &[("Name", name), ("Role", role)]).await;
    Node {
        id: i.instance_id().unwrap().to_owned(),
        name: name.to_owned(),
        private_ip: i
            .private_ip_address()
            .expect("moto assigns a private IP")
            .parse()
            .unwrap(),
        public_ip: i
            .public_ip_address()
            .expect("moto assigns a public IP")
            .parse()
            .unwrap(),
        az: i.placement().and_then(|p| p.availability_zone()).unwrap().to_owned(),
    }
}

/// Makes the test world on moto; `old` is stopped.
async fn world(cfg: &Config, moto: &Moto) -> World {
    let ec2 = ssm_session::resolve::ec2_client(cfg, Some(&moto.endpoint)).unwrap();
    let w = World {
        web1: run_instance(&ec2, "web-1", "web").await,
        web2: run_instance(&ec2, "web-2", "web").await,
        db: run_instance(&ec2, "db", "db").await,
        old: run_instance(&ec2, "old", "old").await,
    };
    ec2.stop_instances()
        .instance_ids(&w.old.id)
        .send()
        .await
        .expect("StopInstances on moto");
    w
}

async fn setup() -> (Moto, Config, ResolveOptions, World) {
    let moto = Moto::start().await;
    let cfg = test_config().await;
    let ro = ResolveOptions {
        ec2_endpoint_url: Some(moto.endpoint.clone()),
        ..ResolveOptions::default()
    };
    let w = world(&cfg, &moto).await;
    (moto, cfg, ro, w)
}

#[tokio::test]
async fn moto_resolves_id_tag_private_and_public_ip() {
    let (_moto, cfg, ro, w) = setup().await;
    common::resolve::check_id_tag_and_addresses(&cfg, &ro, &w).await;
}

#[tokio::test]
async fn moto_ambiguous_tag_lists_every_candidate() {
    let (_moto, cfg, ro, w) = setup().await;
    common::resolve::check_ambiguous(&cfg, &ro, &w).await;
}

#[tokio::test]
async fn moto_stopped_instance_does_not_count() {
    let (_moto, cfg, ro, w) = setup().await;
    common::resolve::check_stopped(&cfg, &ro, &w).await;
}

#[tokio::test]
async fn moto_accepts_an_instance_connect_key_for_the_resolved_instance() {
    let (moto, cfg, ro, _w) = setup().await;
    let target = common::resolve::resolve(&cfg, &ro, "Name:db").await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let key = ssm_session::ec2ic::generate_ephemeral_key(dir.path()).unwrap();
    ssm_session::ec2ic::push_key(
        &cfg,
        Some(&moto.endpoint),
        &target,
        "ec2-user",
        key.public_key_openssh(),
    )
    .await
    .expect("SendSSHPublicKey on moto");
}
