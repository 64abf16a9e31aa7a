//! EC2 Instance Connect end to end: a real sshd on a loopback port whose only authorized keys
//! are the ones the emulator's Instance Connect wrote, the system ssh with `ssmconnect ssh-proxy
//! --ec2ic` as its ProxyCommand, targets given as tags and DNS names. Also what the CLI says
//! about targets it cannot resolve.
//!
//! EC2 keeps a pushed key for 60 seconds; the emulator's TTL is configurable so the expiry test
//! waits 4 s instead, and `default_ttl_is_sixty_seconds` checks the real default without
//! sitting through it.

mod common;

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::*;
use ssm_emulator::{Config, Emulator, Instance};
use tokio::io::AsyncReadExt;

const BOX: &str = "i-0e2c00000000000b0";
const OTHER: &str = "i-0e2c00000000000b1";

/// An emulator whose inventory holds `box` (port 22 is the test sshd) and `other` (both
/// `Role=web`), writing Instance Connect keys where the sshd looks for them.
async fn emulator_for(sshd: &Sshd, ttl_ms: u64) -> Emulator {
    let config = Config {
        inventory: vec![
            Instance::running(BOX)
                .tag("Name", "box")
                .tag("Role", "web")
                .private_ip(Ipv4Addr::new(10, 0, 0, 9))
                .availability_zone("us-east-1b")
                .map_port(22, sshd.port),
            Instance::running(OTHER)
                .tag("Name", "other")
                .tag("Role", "web")
                .private_ip(Ipv4Addr::new(10, 0, 0, 10)),
        ],
        authorized_keys: Some(sshd.keys_dir().join("%u")),
        instance_connect_ttl_ms: ttl_ms,
        ..Config::default()
    };
    emulator(config).await
}

/// Points every service at the emulator through the service-specific variables only; the
/// global `AWS_ENDPOINT_URL` leads nowhere, so ignoring a specific one fails the test.
fn endpoints(cmd: &mut tokio::process::Command, emu: &Emulator) {
    cmd.env("AWS_ENDPOINT_URL", "http://127.0.0.1:9")
        .env("AWS_ENDPOINT_URL_SSM", emu.endpoint())
        .env("AWS_ENDPOINT_URL_EC2", emu.endpoint())
        .env("AWS_ENDPOINT_URL_EC2_INSTANCE_CONNECT", emu.endpoint());
}

async fn user_key(home: &Home) -> PathBuf {
    let key = home.path().join("id_ed25519");
    ssh_keygen(&key).await;
    key
}

/// The base64 body of an OpenSSH public key line.
fn key_body(public_key: &str) -> String {
    public_key.split_whitespace().nth(1).expect("key body").to_owned()
}

/// `ssh -i key user@dest remote` through `proxy_command`; returns (exit code, stdout, stderr).
async fn run_ssh(
    home: &Home,
    emu: &Emulator,
    key: &Path,
    proxy_command: &str,
    dest: &str,
    remote: &str,
) -> (i32, String, String) {
    let mut cmd = command("ssh", home, true);
    endpoints(&mut cmd, emu);
    cmd.args(["-F", "/dev/null"])
        .args(["-o", "StrictHostKeyChecking=no"])
        .args(["-o", "UserKnownHostsFile=/dev/null"])
        .args(["-o", "BatchMode=yes"])
        .args(["-o", "IdentitiesOnly=yes"])
        .args(["-o", "LogLevel=ERROR"])
        .args(["-o", "ConnectTimeout=30"])
        .arg("-i")
        .arg(key)
        .args(["-o", &format!("ProxyCommand={proxy_command}")])
        .args(["-l", &current_user()])
        .arg(dest)
        .arg(remote);
    let mut proc = Proc::spawn(&mut cmd, "ssh");
    let mut out = proc.take_stdout();
    let mut err = proc.take_stderr();
    let (mut o, mut e) = (String::new(), String::new());
    let (code, _, _) = within(60, "ssh", async {
        tokio::join!(
            proc.exit_code(60),
            out.read_to_string(&mut o),
            err.read_to_string(&mut e)
        )
    })
    .await;
    (code, o, e)
}

#[tokio::test]
async fn ec2ic_key_logs_in_then_expires() {
    let home = Home::new();
    let sshd = Sshd::with_keys_per_user().await;
    // Long enough that the ssh login, and the checks of the pushed key after it, finish within
    // it on a loaded machine (4 s was not: the key expired before it was looked at).
    let ttl = Duration::from_secs(20);
    let emu = emulator_for(&sshd, ttl.as_millis() as u64).await;
    let key = user_key(&home).await;
    let public = std::fs::read_to_string(key.with_extension("pub")).unwrap();
    let keys_file = sshd.keys_file(&current_user());
    assert!(!keys_file.exists(), "nothing is authorized before the push");

    let started = Instant::now();
    let proxy = format!(
        "{SSMCONNECT} -vv ssh-proxy --ec2ic --public-key {} %r@%h:%p",
        key.with_extension("pub").display()
    );
    let (code, out, err) = run_ssh(&home, &emu, &key, &proxy, "Name:box", "echo ec2ic-ok").await;
    assert_eq!(code, 0, "ssh failed: {err}\nsshd: {}", sshd.log());
    assert_eq!(out, "ec2ic-ok\n");
    assert!(
        err.contains("target Name:box is i-0e2c00000000000b0 (box; tag Name=box)"),
        "{err}"
    );
    let pushed = emu.instance_connect_keys();
    assert_eq!(pushed.len(), 1);
    assert_eq!(pushed[0].instance_id, BOX);
    assert_eq!(key_body(&pushed[0].public_key), key_body(&public));
    assert!(
        std::fs::read_to_string(&keys_file)
            .unwrap()
            .contains(&key_body(&public))
    );
    assert!(sshd.log().contains("Accepted publickey"), "{}", sshd.log());

    // The key leaves the file when its time is up, and not before.
    let deadline = started + ttl + Duration::from_secs(5);
    while std::fs::read_to_string(&keys_file)
        .unwrap_or_default()
        .contains(&key_body(&public))
    {
        assert!(Instant::now() < deadline, "the key is still authorized after {ttl:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        started.elapsed() >= ttl,
        "the key went away early: {:?}",
        started.elapsed()
    );
    assert!(emu.instance_connect_keys().is_empty());

    // Without a new push the same key no longer logs in.
    let proxy = format!("{SSMCONNECT} ssh-proxy %r@%h:%p");
    let (code, out, err) = run_ssh(&home, &emu, &key, &proxy, "Name:box", "echo should-not-run").await;
    assert_eq!(code, 255, "ssh should be refused: {out} {err}");
    assert!(err.contains("Permission denied"), "{err}");
    assert!(out.is_empty());
}

#[tokio::test]
async fn ec2ic_with_a_fresh_in_memory_key_from_the_library() {
    let home = Home::new();
    let sshd = Sshd::with_keys_per_user().await;
    let emu = emulator_for(&sshd, 60_000).await;
    let cfg = ssm_session::aws::load_config(&ssm_session::AwsOptions {
        region: Some(REGION.into()),
        access_key: Some(ACCESS_KEY.into()),
        secret_key: Some(SECRET_KEY.into()),
        ..Default::default()
    })
    .await
    .unwrap();
    let ro = ssm_session::ResolveOptions {
        ec2_endpoint_url: Some(emu.endpoint()),
        ..Default::default()
    };
    let target = ssm_session::resolve_target(&cfg, "10.0.0.9", &ro).await.unwrap();
    assert_eq!(target.instance_id, BOX);
    assert_eq!(target.availability_zone.as_deref(), Some("us-east-1b"));

    let key = ssm_session::ec2ic::generate_ephemeral_key(home.path()).unwrap();
    let private = key.private_key_path().to_owned();
    ssm_session::ec2ic::push_key(
        &cfg,
        Some(&emu.endpoint()),
        &target,
        &current_user(),
        key.public_key_openssh(),
    )
    .await
    .unwrap();
    let proxy = format!("{SSMCONNECT} ssh-proxy %r@%h:%p");
    let (code, out, err) = run_ssh(&home, &emu, &private, &proxy, BOX, "echo fresh-key-ok").await;
    assert_eq!(code, 0, "ssh failed: {err}\nsshd: {}", sshd.log());
    assert_eq!(out, "fresh-key-ok\n");
    drop(key);
    assert!(!private.exists(), "the private key file outlived its EphemeralKey");
}

#[tokio::test]
async fn ec2ic_over_a_dns_name_with_an_explicit_dns_server() {
    let home = Home::new();
    let sshd = Sshd::with_keys_per_user().await;
    let emu = emulator_for(&sshd, 60_000).await;
    let dns = Dnsmasq::start(&["--host-record=box.test,10.0.0.9".to_owned()]).await;
    let key = user_key(&home).await;
    let proxy = format!(
        "{SSMCONNECT} -v --dns-server {} ssh-proxy --ec2ic --public-key {} %r@%h:%p",
        dns.addr,
        key.with_extension("pub").display()
    );
    let (code, out, err) = run_ssh(&home, &emu, &key, &proxy, "box.test", "echo dns-ok").await;
    assert_eq!(code, 0, "ssh failed: {err}\nsshd: {}", sshd.log());
    assert_eq!(out, "dns-ok\n");
    assert!(err.contains("DNS box.test -> 10.0.0.9"), "{err}");
}

#[tokio::test]
async fn default_ttl_is_sixty_seconds() {
    // The real semantics: EC2 honours a pushed key for 60 s. Checked without waiting them out.
    assert_eq!(Config::default().instance_connect_ttl_ms, 60_000);
    let home = Home::new();
    let keys_dir = home.path().join("keys");
    let emu = emulator(Config {
        inventory: vec![Instance::running(BOX).tag("Name", "box")],
        authorized_keys: Some(keys_dir.join("%u")),
        ..Config::default()
    })
    .await;
    let key = user_key(&home).await;
    let mut cmd = ssmconnect(&home);
    endpoints(&mut cmd, &emu);
    // ssh-proxy pushes the key, then its session fails at once (no sshd behind port 22).
    cmd.args(["ssh-proxy", "--ec2ic", "--public-key"])
        .arg(key.with_extension("pub"))
        .arg("ec2-user@Name:box:22");
    let mut p = Proc::spawn(&mut cmd, "ssmconnect");
    let _ = p.wait(30).await;
    let pushed = emu.instance_connect_keys();
    assert_eq!(pushed.len(), 1, "the key was not pushed");
    assert!(
        (55_000..=60_000).contains(&pushed[0].expires_in_ms),
        "expires in {} ms",
        pushed[0].expires_in_ms
    );
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let file = std::fs::read_to_string(keys_dir.join("ec2-user")).unwrap();
    assert!(file.contains(&key_body(&pushed[0].public_key)), "gone too soon");
    // Stopping the emulator withdraws what it authorized.
    emu.stop().await;
    assert_eq!(std::fs::read_to_string(keys_dir.join("ec2-user")).unwrap(), "");
}

#[tokio::test]
async fn forward_resolves_a_tag_target() {
    let home = Home::new();
    let sshd = Sshd::with_keys_per_user().await;
    let emu = emulator_for(&sshd, 60_000).await;
    let mut cmd = ssmconnect(&home);
    endpoints(&mut cmd, &emu);
    cmd.args(["forward", "Name:box", "22"]);
    let mut p = Proc::spawn(&mut cmd, "ssmconnect forward");
    let mut lines = Lines::new(p.take_stdout());
    let line = lines.until(30, |l| l.starts_with("Port ")).await;
    let port: u16 = line.split_whitespace().nth(1).unwrap().parse().unwrap();
    let mut s = within(10, "connect", tokio::net::TcpStream::connect(("127.0.0.1", port)))
        .await
        .unwrap();
    let mut banner = [0u8; 8];
    within(20, "the sshd banner", s.read_exact(&mut banner)).await.unwrap();
    assert_eq!(&banner, b"SSH-2.0-");
    assert_eq!(emu.sessions()[0].target, BOX);
}

/// Runs ssmconnect against `emu` and returns (exit code, stderr).
async fn ssmconnect_fails(home: &Home, emu: &Emulator, args: &[&str], extra_env: &[(&str, &str)]) -> (i32, String) {
    let mut cmd = ssmconnect(home);
    endpoints(&mut cmd, emu);
    for (k, v) in extra_env {
        cmd.env(k, v);
    }
    cmd.args(args);
    let mut p = Proc::spawn(&mut cmd, "ssmconnect");
    let mut err = String::new();
    let mut stderr = p.take_stderr();
    let (code, _) = tokio::join!(p.exit_code(30), stderr.read_to_string(&mut err));
    (code, err)
}

#[tokio::test]
async fn unresolvable_targets_fail_clearly() {
    let home = Home::new();
    let emu = emulator(Config {
        inventory: vec![
            Instance::running(BOX).tag("Name", "box").tag("Role", "web"),
            Instance::running(OTHER).tag("Name", "other").tag("Role", "web"),
        ],
        ..Config::default()
    })
    .await;

    let (code, err) = ssmconnect_fails(&home, &emu, &["forward", "Role:web", "22"], &[]).await;
    assert_eq!(code, 9, "{err}");
    assert!(
        err.contains(&format!("{BOX} (Name=box, running)")) && err.contains(&format!("{OTHER} (Name=other, running)")),
        "{err}"
    );
    let (code, err) = ssmconnect_fails(&home, &emu, &["shell", "Name:nope"], &[]).await;
    assert_eq!(code, 9, "{err}");
    assert!(err.contains("no running instance matches \"Name:nope\""), "{err}");
    // The region it searched, and how to search another.
    assert!(err.contains(" in us-east-1") && err.contains("--region"), "{err}");

    let (code, err) = ssmconnect_fails(&home, &emu, &["ssh-proxy", "--ec2ic", "u@Name:box:22"], &[]).await;
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("--public-key"), "{err}");
    let (code, err) = ssmconnect_fails(
        &home,
        &emu,
        &[
            "ssh-proxy",
            "--ec2ic",
            "--public-key",
            "/nonexistent.pub",
            "Name:box:22",
        ],
        &[],
    )
    .await;
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("needs the OS user"), "{err}");

    let (code, err) = ssmconnect_fails(
        &home,
        &emu,
        &["forward", "Name:box", "22"],
        &[("AWS_ENDPOINT_URL_EC2", "http://ec2.example.com")],
    )
    .await;
    assert_eq!(code, 3, "{err}");
    assert!(
        err.contains("AWS_ENDPOINT_URL_EC2") && err.contains("only for loopback"),
        "{err}"
    );

    // No region anywhere: the error says how to set one.
    let mut cmd = command(SSMCONNECT, &home, false);
    cmd.args(["forward", "Name:box", "22"]);
    let mut p = Proc::spawn(&mut cmd, "ssmconnect");
    let mut err = String::new();
    let mut stderr = p.take_stderr();
    let (code, _) = tokio::join!(p.exit_code(30), stderr.read_to_string(&mut err));
    assert_eq!(code, 3, "{err}");
    assert!(err.contains("AWS_REGION"), "{err}");
}
