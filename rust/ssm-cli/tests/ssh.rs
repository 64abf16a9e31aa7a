//! Real OpenSSH over SSM: Debian's `sshd` on a loopback port behind the emulator, the system
//! `ssh` client with `ssmconnect ssh-proxy` (or `aws ssm start-session` with ssmconnect as its
//! plugin) as the `ProxyCommand`.

mod common;

use std::process::Stdio;

use common::*;
use ssm_emulator::{Config, Emulator};
use tokio::io::AsyncWriteExt;

/// An emulator whose port 22 is the test sshd.
async fn emulator_for(sshd: &Sshd) -> Emulator {
    let mut config = Config::default();
    config.port_map.insert(22, sshd.port);
    emulator(config).await
}

/// `ssh` to `TARGET` as the current user through `proxy_command`, running `remote`; feeds
/// `input` on stdin. Returns (exit code, stdout, stderr).
async fn run_ssh(
    home: &Home,
    sshd: &Sshd,
    proxy_command: &str,
    remote: &str,
    input: Option<Vec<u8>>,
) -> (i32, Vec<u8>, String) {
    let mut cmd = command("ssh", home, true);
    cmd.env("PATH", home.path_with_plugin())
        .args(["-F", "/dev/null"])
        .args(["-o", "StrictHostKeyChecking=no"])
        .args(["-o", "UserKnownHostsFile=/dev/null"])
        .args(["-o", "BatchMode=yes"])
        .args(["-o", "IdentitiesOnly=yes"])
        .args(["-o", "LogLevel=ERROR"])
        .args(["-o", "ConnectTimeout=30"])
        .arg("-i")
        .arg(sshd.client_key())
        .arg("-o")
        .arg(format!("ProxyCommand={proxy_command}"))
        .arg(format!("{}@{TARGET}", current_user()))
        .arg(remote);
    if input.is_some() {
        cmd.stdin(Stdio::piped());
    }
    let mut proc = Proc::spawn(&mut cmd, "ssh");
    let writer = input.map(|data| {
        let mut stdin = proc.take_stdin();
        tokio::spawn(async move {
            stdin.write_all(&data).await.expect("write to ssh");
            stdin.shutdown().await.expect("close ssh stdin");
        })
    });
    let stdout = tokio::spawn(read_all(proc.take_stdout(), 120));
    let stderr = tokio::spawn(read_all(proc.take_stderr(), 120));
    let status = proc.wait(90).await;
    if let Some(w) = writer {
        within(10, "ssh stdin writer", w).await.expect("writer");
    }
    let stdout = within(10, "ssh stdout", stdout).await.expect("stdout");
    let stderr = String::from_utf8_lossy(&within(10, "ssh stderr", stderr).await.expect("stderr")).into_owned();
    let code = status.code().unwrap_or_else(|| {
        panic!(
            "ssh died by a signal: {status:?}\nstderr: {stderr}\nsshd: {}",
            sshd.log()
        )
    });
    (code, stdout, stderr)
}

fn ssh_proxy_command(emu: &Emulator) -> String {
    format!("{SSMCONNECT} --endpoint-url {} ssh-proxy %r@%h:%p", emu.endpoint())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openssh_runs_a_command_through_ssm_connect_proxy() {
    let home = Home::new();
    let sshd = Sshd::start().await;
    let emu = emulator_for(&sshd).await;
    let (code, stdout, stderr) = run_ssh(
        &home,
        &sshd,
        &ssh_proxy_command(&emu),
        "echo hello-from-sshd; exit 7",
        None,
    )
    .await;
    let stdout = String::from_utf8_lossy(&stdout);
    assert!(
        stdout.contains("hello-from-sshd"),
        "stdout: {stdout:?}\nstderr: {stderr}\nsshd: {}",
        sshd.log()
    );
    assert_eq!(code, 7, "stderr: {stderr}\nsshd: {}", sshd.log());
    let sessions = emu.sessions();
    assert_eq!(sessions.len(), 1, "{sessions:?}");
    assert_eq!(sessions[0].document, "AWS-StartSSHSession");
    assert_eq!(sessions[0].target, TARGET);
    // When ssh is done the session is terminated, not left open on the service.
    session_ends(&emu).await;
}

/// Waits until every session the emulator saw has ended.
async fn session_ends(emu: &Emulator) {
    assert!(
        sessions_end(emu, 10).await,
        "sessions still open 10s after ssh exited: {:?}",
        emu.sessions()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openssh_moves_a_mebibyte_through_ssm_connect_proxy() {
    let home = Home::new();
    let sshd = Sshd::start().await;
    let emu = emulator_for(&sshd).await;
    let data = random_bytes(1 << 20, 42);
    let want = sha256_hex(&data);
    let (code, stdout, stderr) = run_ssh(&home, &sshd, &ssh_proxy_command(&emu), "sha256sum", Some(data)).await;
    assert_eq!(code, 0, "stderr: {stderr}\nsshd: {}", sshd.log());
    let stdout = String::from_utf8_lossy(&stdout);
    assert_eq!(
        stdout.split_whitespace().next(),
        Some(want.as_str()),
        "stdout: {stdout:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openssh_through_aws_cli_with_ssm_connect_as_its_plugin() {
    let aws = which("aws")
        .unwrap_or_else(|| panic!("the AWS CLI (`aws`) is not on PATH; CI has it preinstalled and this test needs it"));
    let home = Home::new();
    let sshd = Sshd::start().await;
    let emu = emulator_for(&sshd).await;
    let proxy = format!(
        "{} ssm start-session --target %h --document-name AWS-StartSSHSession \
         --parameters portNumber=%p --endpoint-url {} --region us-east-1",
        aws.display(),
        emu.endpoint()
    );
    let (code, stdout, stderr) = run_ssh(&home, &sshd, &proxy, "echo hello-from-sshd; exit 7", None).await;
    let stdout = String::from_utf8_lossy(&stdout);
    assert_eq!(stdout, "hello-from-sshd\n", "stderr: {stderr}\nsshd: {}", sshd.log());
    assert_eq!(code, 7, "stderr: {stderr}");
    // ssh tolerates text lines before the server's identification, so it would notice a
    // plugin banner on stdout only loosely; the exact check (stdout starts with the tunnel's
    // first byte) is `plugin_contract_stream_session_writes_only_tunnel_bytes` in plugin.rs.
    assert!(!stderr.contains("Starting session"), "stderr: {stderr}");
    let sessions = emu.sessions();
    assert_eq!(sessions.len(), 1, "{sessions:?}");
    assert_eq!(sessions[0].document, "AWS-StartSSHSession");
    assert_eq!(sessions[0].client_version, "1.2.650.0");
}
