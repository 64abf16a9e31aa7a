//! Clear failures and the small fixed outputs: exit codes, one-line messages, help, version.

mod common;

use common::*;
use ssm_emulator::Config;

/// Runs a command to completion (bounded) and returns (code, stdout, stderr).
async fn run(cmd: &mut tokio::process::Command, name: &str) -> (i32, String, String) {
    let mut proc = Proc::spawn(cmd, name);
    let stdout = tokio::spawn(read_all(proc.take_stdout(), 30));
    let stderr = tokio::spawn(read_all(proc.take_stderr(), 30));
    let code = proc.exit_code(20).await;
    let stdout = String::from_utf8(stdout.await.unwrap()).expect("utf-8 stdout");
    let stderr = String::from_utf8(stderr.await.unwrap()).expect("utf-8 stderr");
    (code, stdout, stderr)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_target_exits_4_naming_target_not_connected() {
    let home = Home::new();
    let emu = emulator(Config {
        targets: vec!["i-0fedcba9876543210".into()],
        ..Config::default()
    })
    .await;
    // The endpoint comes from the environment here (the other tests pass --endpoint-url).
    let mut cmd = ssmconnect(&home);
    cmd.env("AWS_ENDPOINT_URL_SSM", emu.endpoint())
        .args(["forward", TARGET, "80", "--local-port", "0"]);
    let (code, stdout, stderr) = run(&mut cmd, "ssmconnect forward (unknown target)").await;
    assert_eq!(code, 4, "exit code; stderr: {stderr}");
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), 1, "one line on stderr: {stderr:?}");
    assert!(lines[0].contains("TargetNotConnected"), "{stderr:?}");
    // What to check: the agent, its role, its network, the region.
    assert!(
        lines[0].contains("AmazonSSMManagedInstanceCore") && lines[0].contains("--region"),
        "{stderr:?}"
    );
    assert!(stdout.is_empty(), "nothing on stdout: {stdout:?}");
    assert_eq!(emu.stats().sessions_started, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_target_through_ssh_proxy_exits_4() {
    let home = Home::new();
    let emu = emulator(Config {
        targets: vec!["i-0fedcba9876543210".into()],
        ..Config::default()
    })
    .await;
    let mut cmd = ssmconnect(&home);
    cmd.arg("--endpoint-url")
        .arg(emu.endpoint())
        .args(["ssh-proxy", &format!("root@{TARGET}:22")]);
    let (code, stdout, stderr) = run(&mut cmd, "ssmconnect ssh-proxy (unknown target)").await;
    assert_eq!(code, 4, "exit code; stderr: {stderr}");
    assert_eq!(stderr.lines().count(), 1, "one line on stderr: {stderr:?}");
    assert!(stderr.contains("TargetNotConnected"), "{stderr:?}");
    assert!(stdout.is_empty(), "nothing on stdout: {stdout:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_region_exits_3_and_says_how_to_set_one() {
    let home = Home::new();
    let emu = emulator(Config::default()).await;
    let mut cmd = command(SSMCONNECT, &home, false);
    cmd.arg("--endpoint-url")
        .arg(emu.endpoint())
        .args(["forward", TARGET, "80", "--local-port", "0"]);
    let (code, stdout, stderr) = run(&mut cmd, "ssmconnect forward (no region)").await;
    assert_eq!(code, 3, "exit code; stderr: {stderr}");
    assert_eq!(stderr.lines().count(), 1, "one line on stderr: {stderr:?}");
    assert!(
        stderr.contains("--region") && stderr.contains("AWS_REGION"),
        "the message says how to set a region: {stderr:?}"
    );
    assert!(stdout.is_empty(), "nothing on stdout: {stdout:?}");
    assert_eq!(emu.stats().sessions_started, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plain_http_ssm_endpoint_from_the_profile_file_is_refused() {
    // The SDK also takes endpoints from the shared config file; a session token must not
    // travel over plain HTTP to a non-loopback host whichever source named it.
    for config in [
        "[default]\nendpoint_url = http://ssm.example.com\n",
        "[default]\nservices = remote\n\n[services remote]\nssm =\n  endpoint_url = http://10.1.2.3:80\n",
    ] {
        let home = Home::new();
        let aws_dir = home.path().join(".aws");
        std::fs::create_dir_all(&aws_dir).unwrap();
        std::fs::write(aws_dir.join("config"), config).unwrap();
        let mut cmd = ssmconnect(&home);
        cmd.env("AWS_CONFIG_FILE", aws_dir.join("config"))
            .args(["forward", TARGET, "80", "--local-port", "0"]);
        let (code, _, stderr) = run(&mut cmd, "ssmconnect forward (profile endpoint)").await;
        assert_eq!(code, 3, "exit code; stderr: {stderr}");
        assert!(stderr.contains("only for loopback"), "{stderr:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn help_shows_the_ssh_config_example() {
    let home = Home::new();
    let mut cmd = ssmconnect(&home);
    cmd.arg("--help");
    let (code, stdout, _) = run(&mut cmd, "ssmconnect --help").await;
    assert_eq!(code, 0);
    assert!(stdout.contains("~/.ssh/config"), "{stdout}");
    assert!(
        stdout.contains("ProxyCommand ssmconnect ssh-proxy %r@%h:%p"),
        "{stdout}"
    );
    assert!(stdout.contains("session-manager-plugin"), "{stdout}");
    assert!(stdout.contains("10   ended, remote exit code unknown"), "{stdout}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn as_session_manager_plugin_reports_its_version() {
    let home = Home::new();
    let plugin = home.plugin_dir().join("session-manager-plugin");
    let mut cmd = command(&plugin, &home, true);
    cmd.arg("--version");
    let (code, stdout, stderr) = run(&mut cmd, "session-manager-plugin --version").await;
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(stdout, "1.2.650.0\n");

    // No arguments: the "installed" message, as the official plugin prints one.
    let mut cmd = command(&plugin, &home, true);
    let (code, stdout, _) = run(&mut cmd, "session-manager-plugin").await;
    assert_eq!(code, 0);
    assert!(stdout.contains("installed"), "{stdout:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plugin_mode_rejects_other_operations() {
    let home = Home::new();
    let mut cmd = ssmconnect(&home);
    cmd.args([
        r#"{"SessionId":"s","TokenValue":"t","StreamUrl":"ws://127.0.0.1:1/x"}"#,
        "us-east-1",
        "TerminateSession",
        "",
        r#"{"Target":"i-0123456789abcdef0"}"#,
        "http://127.0.0.1:1",
    ]);
    let (code, stdout, stderr) = run(&mut cmd, "ssmconnect (plugin, bad operation)").await;
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("Invalid Operation"), "{stderr:?}");
    assert!(!stderr.contains("\"t\""), "{stderr:?}");
    assert!(stdout.is_empty(), "{stdout:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logs_on_a_pipe_carry_no_colour_codes() {
    let home = Home::new();
    let emu = emulator(Config {
        targets: vec!["i-0fedcba9876543210".into()],
        ..Config::default()
    })
    .await;
    let mut cmd = ssmconnect(&home);
    // Everything at debug level, the AWS SDK included, so that there is plenty to log.
    cmd.env("SSMCONNECT_LOG", "debug")
        .arg("--endpoint-url")
        .arg(emu.endpoint())
        .args(["forward", TARGET, "80"]);
    let (code, _, stderr) = run(&mut cmd, "ssmconnect forward (debug logs)").await;
    assert_eq!(code, 4, "{stderr}");
    assert!(stderr.lines().count() > 1, "debug logs: {stderr:?}");
    assert!(
        !stderr.contains('\u{1b}'),
        "escape codes on a non-terminal: {:?}",
        stderr.lines().next()
    );
    assert!(
        stderr
            .lines()
            .last()
            .is_some_and(|l| l.starts_with("ssmconnect: ") && l.contains("TargetNotConnected")),
        "the failure is the last line: {stderr:?}"
    );
}

/// `ssmconnect` with the test's HOME and region but no credentials in the environment, and no
/// instance role to find (IMDS off, as on a workstation).
fn without_credentials(home: &Home) -> tokio::process::Command {
    let mut cmd = ssmconnect(home);
    cmd.env_remove("AWS_ACCESS_KEY_ID")
        .env_remove("AWS_SECRET_ACCESS_KEY")
        .env_remove("AWS_SESSION_TOKEN")
        .env("AWS_EC2_METADATA_DISABLED", "true");
    cmd
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_credentials_anywhere_says_where_it_looked_and_how_to_fix_it() {
    let emu = emulator(Config::default()).await;
    // An instance id (StartSession) and a tag (DescribeInstances first): the same answer.
    for target in [TARGET, "Name:demo"] {
        let home = Home::new();
        let mut cmd = without_credentials(&home);
        cmd.env("AWS_ENDPOINT_URL_EC2", emu.endpoint())
            .arg("--endpoint-url")
            .arg(emu.endpoint())
            .args(["shell", target]);
        let (code, stdout, stderr) = run(&mut cmd, "ssmconnect shell (no credentials)").await;
        assert_eq!(code, 3, "exit code; stderr: {stderr}");
        let lines: Vec<&str> = stderr.lines().collect();
        assert_eq!(lines.len(), 1, "one line, no SDK dump: {stderr:?}");
        for needle in [
            "no AWS credentials found",
            "AWS_ACCESS_KEY_ID",
            "~/.aws/credentials",
            "aws sso login",
            "instance role",
        ] {
            assert!(lines[0].contains(needle), "{needle:?} missing: {stderr:?}");
        }
        assert!(stdout.is_empty(), "{stdout:?}");
    }
    assert_eq!(emu.stats().sessions_started, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_sso_login_says_to_log_in_again() {
    let home = Home::new();
    let aws = home.path().join(".aws");
    std::fs::create_dir_all(aws.join("sso/cache")).unwrap();
    std::fs::write(
        aws.join("config"),
        "[profile dev]\nsso_session = corp\nsso_account_id = 123456789012\nsso_role_name = Admin\n\
         region = us-east-1\n\n[sso-session corp]\nsso_start_url = https://corp.awsapps.com/start\n\
         sso_region = us-east-1\n",
    )
    .unwrap();
    // The token `aws sso login` cached (named by the SHA-1 of the session name), long expired
    // and without what a refresh needs.
    let token = "expired-sso-access-token-value";
    std::fs::write(
        aws.join("sso/cache/ee0bfd2552fbd840c02cc48b6e823320543c450f.json"),
        format!(r#"{{"accessToken":"{token}","expiresAt":"2020-01-01T00:00:00Z","region":"us-east-1","startUrl":"https://corp.awsapps.com/start"}}"#),
    )
    .unwrap();
    let emu = emulator(Config::default()).await;
    let mut cmd = without_credentials(&home);
    cmd.env("AWS_PROFILE", "dev")
        .arg("--endpoint-url")
        .arg(emu.endpoint())
        .args(["shell", TARGET]);
    let (code, _, stderr) = run(&mut cmd, "ssmconnect shell (expired SSO)").await;
    assert_eq!(code, 3, "exit code; stderr: {stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr:?}");
    assert!(
        stderr.contains("SSO") && stderr.contains("expired") && stderr.contains("aws sso login --profile"),
        "{stderr:?}"
    );
    assert!(!stderr.contains(token), "the token was printed: {stderr:?}");
    assert_eq!(emu.stats().sessions_started, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_endpoint_that_refuses_connections_is_named_as_unreachable() {
    let home = Home::new();
    // A port nothing listens on.
    let endpoint = format!("http://127.0.0.1:{}", free_port());
    let mut cmd = ssmconnect(&home);
    cmd.args(["--endpoint-url", &endpoint, "shell", TARGET]);
    let (code, _, stderr) = run(&mut cmd, "ssmconnect shell (refused endpoint)").await;
    assert_eq!(code, 4, "exit code; stderr: {stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr:?}");
    assert!(
        stderr.contains("StartSession failed: cannot reach the AWS endpoint")
            && stderr.to_ascii_lowercase().contains("refused")
            && stderr.contains("--endpoint-url"),
        "{stderr:?}"
    );
}
