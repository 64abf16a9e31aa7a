//! `ssmconnect shell NAME --dns-server ADDR` against a small internal resolver: dnsmasq with
//! records and no upstream, which refuses every type it has no record of. The type it answers
//! must reach the instance; a name it refuses everything for fails with each type's outcome.

mod common;

use std::net::Ipv4Addr;
use std::process::Stdio;

use common::*;
use ssm_emulator::{Config, Instance};

const WEB: &str = "i-0123456789abcdef0";
const DB: &str = "i-0fedcba9876543210";

async fn emulator_with_inventory() -> ssm_emulator::Emulator {
    emulator(Config {
        inventory: vec![
            Instance::running(WEB)
                .tag("Name", "web")
                .private_ip(Ipv4Addr::new(10, 0, 0, 10))
                .ipv6("fd00::10".parse().unwrap()),
            Instance::running(DB)
                .tag("Name", "db")
                .private_ip(Ipv4Addr::new(10, 0, 0, 20)),
        ],
        ..Config::default()
    })
    .await
}

/// `ssmconnect --dns-server DNS shell NAME` with `script` on stdin: (code, stdout, stderr).
async fn shell(
    home: &Home,
    emu: &ssm_emulator::Emulator,
    dns: &str,
    name: &str,
    script: &str,
) -> (i32, String, String) {
    use tokio::io::AsyncWriteExt;
    let mut cmd = ssmconnect(home);
    cmd.env("AWS_ENDPOINT_URL", emu.endpoint())
        .args(["--dns-server", dns, "shell", name])
        .stdin(Stdio::piped());
    let mut proc = Proc::spawn(&mut cmd, &format!("ssmconnect shell {name}"));
    let mut stdin = proc.take_stdin();
    stdin.write_all(script.as_bytes()).await.unwrap();
    drop(stdin);
    let stdout = tokio::spawn(read_all(proc.take_stdout(), 30));
    let stderr = tokio::spawn(read_all(proc.take_stderr(), 30));
    let code = proc.exit_code(30).await;
    let stdout = String::from_utf8(stdout.await.unwrap()).expect("utf-8 stdout");
    let stderr = String::from_utf8(stderr.await.unwrap()).expect("utf-8 stderr");
    (code, stdout, stderr)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_record_type_reaches_its_instance_through_a_refusing_resolver() {
    let home = Home::new();
    for ip in loopbacks() {
        let emu = emulator_with_inventory().await;
        let dns = Dnsmasq::refusing(
            &[
                "--address=/web.test/10.0.0.10".to_owned(),
                "--address=/web6.test/fd00::10".to_owned(),
                "--txt-record=db.test,i-0fedcba9876543210".to_owned(),
            ],
            ip,
        )
        .await;
        let server = dns.addr.to_string();
        for (name, word, want) in [
            ("web.test", "via-A", WEB),
            ("web6.test", "via-AAAA", WEB),
            ("db.test", "via-TXT", DB),
        ] {
            let before: Vec<String> = emu.sessions().into_iter().map(|s| s.session_id).collect();
            let (code, stdout, stderr) = shell(&home, &emu, &server, name, &format!("echo {word}\n")).await;
            // 10: the shell ended and, as with the agent, no exit code came.
            assert_eq!(code, 10, "{name} via {server}: stderr: {stderr}");
            assert!(stdout.contains(word), "{name} via {server}: {stdout:?}");
            let new: Vec<String> = emu
                .sessions()
                .into_iter()
                .filter(|s| !before.contains(&s.session_id))
                .map(|s| s.target)
                .collect();
            assert_eq!(new, vec![want.to_owned()], "{name} via {server}");
        }

        let (code, stdout, stderr) = shell(&home, &emu, &server, "nothing.test", "echo never\n").await;
        assert_eq!(code, 9, "nothing.test via {server}: stderr: {stderr}");
        assert!(stdout.is_empty(), "{stdout:?}");
        assert_eq!(
            stderr.trim_end(),
            "ssmconnect: DNS lookup of nothing.test found nothing usable: A: refused, AAAA: refused, TXT: refused",
            "via {server}"
        );
    }
}
