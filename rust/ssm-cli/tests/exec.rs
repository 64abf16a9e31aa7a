//! `ssmconnect exec`: one remote command through a NonInteractiveCommands session (§6.5), its
//! stdout and stderr apart and its exit code as the process's own, against the emulated agent
//! (agent/session/shell/shell.go).

mod common;

use std::process::Stdio;
use std::time::{Duration, Instant};

use common::*;
use ssm_emulator::{Config, Emulator, Faults, Pacing};

/// The custom document with `separateOutputStream: true` the emulator's account holds.
const SEPARATE: &str = "SSMConnect-RunCommand";

async fn command_emulator(pacing: Pacing) -> Emulator {
    emulator(Config {
        command_document: Some(SEPARATE.into()),
        pacing,
        ..Config::default()
    })
    .await
}

struct Run {
    code: i32,
    stdout: Vec<u8>,
    stderr: String,
}

/// Runs `ssmconnect exec TARGET [--document doc] -- argv…` to its end.
async fn exec(emu: &Emulator, document: Option<&str>, argv: &[&str]) -> Run {
    exec_with(emu, &[], document, argv).await
}

/// [`exec`] with more environment variables.
async fn exec_with(emu: &Emulator, env: &[(&str, &str)], document: Option<&str>, argv: &[&str]) -> Run {
    let home = Home::new();
    let mut cmd = ssmconnect(&home);
    cmd.envs(env.iter().copied());
    cmd.arg("--endpoint-url").arg(emu.endpoint()).args(["exec", TARGET]);
    if let Some(d) = document {
        cmd.args(["--document", d]);
    }
    cmd.arg("--").args(argv).stdin(Stdio::null());
    let mut proc = Proc::spawn(&mut cmd, "ssmconnect exec");
    let stdout = tokio::spawn(read_all(proc.take_stdout(), 90));
    let stderr = tokio::spawn(read_all(proc.take_stderr(), 90));
    let code = proc.exit_code(90).await;
    let stdout = within(10, "stdout", stdout).await.unwrap();
    let stderr = String::from_utf8_lossy(&within(10, "stderr", stderr).await.unwrap()).into_owned();
    Run { code, stdout, stderr }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn separate_streams_give_the_exit_code_and_stderr_apart() {
    let emu = command_emulator(Pacing::Agent).await;
    for code in [0, 3, 255] {
        let script = format!("echo out-{code}; echo err-{code} >&2; exit {code}");
        let run = exec(&emu, Some(SEPARATE), &["sh", "-c", &script]).await;
        assert_eq!(run.code, code, "exit code; stderr: {}", run.stderr);
        assert_eq!(String::from_utf8_lossy(&run.stdout), format!("out-{code}\n"), "stdout");
        assert_eq!(run.stderr, format!("err-{code}\n"), "stderr");
    }
    assert!(sessions_end(&emu, 10).await, "{:?}", emu.sessions());
    // The agent ended each session (channel_closed); the client had no reason to terminate it.
    assert!(
        emu.sessions().iter().all(|s| s.terminate_calls == 0),
        "{:?}",
        emu.sessions()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn combined_output_has_no_exit_code() {
    let emu = command_emulator(Pacing::Agent).await;
    for code in [0, 3, 255] {
        let script = format!("echo one; echo two >&2; echo three; exit {code}");
        // AWS-StartNonInteractiveCommand (the default): combined output, and no exit code.
        let run = exec(&emu, None, &["sh", "-c", &script]).await;
        assert_eq!(
            run.code, 10,
            "exit status for an unknown remote code; stderr: {}",
            run.stderr
        );
        assert_eq!(String::from_utf8_lossy(&run.stdout), "one\ntwo\nthree\n");
        assert!(!run.stderr.contains("two"), "stderr: {}", run.stderr);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn arguments_reach_the_remote_program_as_they_are() {
    let emu = command_emulator(Pacing::Agent).await;
    let args = ["it's", "", "a  b", "#hash", "$HOME", "back\\slash", "\"q\""];
    let mut argv = vec!["printf", "[%s]"];
    argv.extend(args);
    let run = exec(&emu, Some(SEPARATE), &argv).await;
    assert_eq!(run.code, 0, "stderr: {}", run.stderr);
    let expected: String = args.iter().map(|a| format!("[{a}]")).collect();
    assert_eq!(String::from_utf8_lossy(&run.stdout), expected);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_program_gives_exit_code_1_and_the_agents_error() {
    let emu = command_emulator(Pacing::Agent).await;
    let run = exec(&emu, Some(SEPARATE), &["no-such-program-here"]).await;
    assert_eq!(run.code, 1);
    assert!(run.stdout.is_empty());
    assert!(
        run.stderr.contains("executable file not found"),
        "stderr: {}",
        run.stderr
    );
}

/// `len` random bytes without 0xEF and ending in ASCII: the agent's processStdoutData cuts a
/// real U+FFFD (EF BF BD) to its first byte and drops invalid bytes left at the very end of a
/// stream (§6.5), so only such data can arrive unchanged through any client.
fn agent_safe_bytes(len: usize, seed: u64) -> Vec<u8> {
    let mut data = random_bytes(len, seed);
    for b in &mut data {
        if *b == 0xEF {
            *b = b'.';
        }
    }
    let n = data.len();
    data[n - 4..].copy_from_slice(b"end\n");
    data
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn megabytes_of_stdout_arrive_intact() {
    let emu = command_emulator(Pacing::Unpaced { chunk: 16 << 10 }).await;
    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join("data");
    let data = agent_safe_bytes(6 << 20, 14);
    std::fs::write(&file, &data).expect("write data");
    let started = Instant::now();
    let script = format!("cat {}; echo done >&2", file.display());
    let run = exec(&emu, Some(SEPARATE), &["sh", "-c", &script]).await;
    assert_eq!(run.code, 0, "stderr: {}", run.stderr);
    assert_eq!(run.stderr, "done\n");
    assert_eq!(run.stdout.len(), data.len());
    assert_eq!(sha256_hex(&run.stdout), sha256_hex(&data));
    eprintln!("6 MiB of stdout in {:?}", started.elapsed());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ctrl_c_reaches_the_remote_command() {
    let emu = command_emulator(Pacing::Agent).await;
    let home = Home::new();
    let mut cmd = ssmconnect(&home);
    let script = "trap 'echo got-int; exit 7' INT; echo started; while :; do sleep 0.1; done";
    cmd.arg("--endpoint-url")
        .arg(emu.endpoint())
        .args(["exec", TARGET, "--document", SEPARATE, "--", "sh", "-c", script])
        .stdin(Stdio::null());
    let mut proc = Proc::spawn(&mut cmd, "ssmconnect exec");
    let mut out = Lines::new(proc.take_stdout());
    let stderr = tokio::spawn(read_all(proc.take_stderr(), 60));
    out.until(30, |l| l.contains("started")).await;
    let interrupted = Instant::now();
    proc.signal(libc::SIGINT);
    // The remote trap ran: the 0x03 became SIGINT at the command.
    out.until(20, |l| l.contains("got-int")).await;
    let code = proc.exit_code(30).await;
    let stderr = String::from_utf8_lossy(&within(10, "stderr", stderr).await.unwrap()).into_owned();
    assert_eq!(code, 130, "stderr: {stderr}");
    // The command ended by itself, so the agent ended the session; no TerminateSession.
    assert!(sessions_end(&emu, 10).await, "{:?}", emu.sessions());
    assert!(
        interrupted.elapsed() < Duration::from_secs(20),
        "ended after {:?}",
        interrupted.elapsed()
    );
    assert!(
        emu.sessions().iter().all(|s| s.terminate_calls == 0),
        "{:?}; stderr: {stderr}",
        emu.sessions()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_ctrl_c_ends_a_command_that_ignores_the_first() {
    let emu = command_emulator(Pacing::Agent).await;
    let home = Home::new();
    let mut cmd = ssmconnect(&home);
    let script = "trap 'echo ignored' INT; echo started; while :; do sleep 0.1; done";
    cmd.arg("--endpoint-url")
        .arg(emu.endpoint())
        .args(["exec", TARGET, "--document", SEPARATE, "--", "sh", "-c", script])
        .stdin(Stdio::null());
    let mut proc = Proc::spawn(&mut cmd, "ssmconnect exec");
    let mut out = Lines::new(proc.take_stdout());
    let stderr = tokio::spawn(read_all(proc.take_stderr(), 60));
    out.until(30, |l| l.contains("started")).await;
    proc.signal(libc::SIGINT);
    out.until(20, |l| l.contains("ignored")).await;
    proc.signal(libc::SIGINT);
    let code = proc.exit_code(30).await;
    let stderr = String::from_utf8_lossy(&within(10, "stderr", stderr).await.unwrap()).into_owned();
    assert_eq!(code, 130, "stderr: {stderr}");
    // The second Ctrl+C ended the session at the service, which killed the command.
    assert!(sessions_end(&emu, 10).await, "{:?}", emu.sessions());
    assert!(
        emu.sessions().iter().any(|s| s.terminate_calls > 0),
        "{:?}; stderr: {stderr}",
        emu.sessions()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_document_of_another_type_is_refused() {
    let emu = command_emulator(Pacing::Agent).await;
    let run = exec(&emu, Some("AWS-StartPortForwardingSession"), &["true"]).await;
    assert_eq!(run.code, 3, "stderr: {}", run.stderr);
    assert!(
        run.stderr.contains("not NonInteractiveCommands"),
        "stderr: {}",
        run.stderr
    );
    assert!(sessions_end(&emu, 10).await, "{:?}", emu.sessions());
}

/// A KMS key in moto and an emulator whose Session Manager preferences encrypt sessions with it
/// (its agent decrypting data keys at that moto), as in an account with KMS encryption on.
struct KmsWorld {
    moto: Moto,
    emu: Emulator,
    /// The client's credentials, when not the default ones.
    credentials: Option<(String, String)>,
}

impl KmsWorld {
    async fn start(pacing: Pacing, faults: Faults, key: Option<&str>) -> Self {
        let moto = Moto::start().await;
        let key = match key {
            Some(k) => k.to_owned(),
            None => moto.create_kms_key().await,
        };
        Self::on(moto, key, pacing, faults).await
    }

    async fn on(moto: Moto, key: String, pacing: Pacing, faults: Faults) -> Self {
        let emu = emulator(Config {
            command_document: Some(SEPARATE.into()),
            pacing,
            faults,
            kms_key_id: Some(key),
            kms_endpoint: Some(moto.endpoint.clone()),
            ..Config::default()
        })
        .await;
        Self {
            moto,
            emu,
            credentials: None,
        }
    }

    async fn exec(&self, document: Option<&str>, argv: &[&str]) -> Run {
        let mut env = vec![("AWS_ENDPOINT_URL_KMS", self.moto.endpoint.as_str())];
        if let Some((id, secret)) = &self.credentials {
            env.extend([
                ("AWS_ACCESS_KEY_ID", id.as_str()),
                ("AWS_SECRET_ACCESS_KEY", secret.as_str()),
            ]);
        }
        exec_with(&self.emu, &env, document, argv).await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kms_encrypted_commands_give_their_exit_codes_in_both_output_modes() {
    let kms = KmsWorld::start(Pacing::Agent, Faults::default(), None).await;
    for code in [0, 3, 255] {
        let script = format!("echo out-{code}; echo err-{code} >&2; exit {code}");
        let run = kms.exec(Some(SEPARATE), &["sh", "-c", &script]).await;
        assert_eq!(run.code, code, "exit code; stderr: {}", run.stderr);
        assert_eq!(String::from_utf8_lossy(&run.stdout), format!("out-{code}\n"));
        assert_eq!(run.stderr, format!("err-{code}\n"));
        let combined = kms.exec(None, &["sh", "-c", &script]).await;
        assert_eq!(combined.code, 10, "stderr: {}", combined.stderr);
        assert_eq!(
            String::from_utf8_lossy(&combined.stdout),
            format!("out-{code}\nerr-{code}\n")
        );
    }
    assert!(sessions_end(&kms.emu, 10).await, "{:?}", kms.emu.sessions());
    let sessions = kms.emu.sessions();
    assert_eq!(sessions.len(), 6);
    assert!(sessions.iter().all(|s| s.encrypted), "{sessions:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sixteen_mib_of_kms_encrypted_stdout_arrive_intact_and_stderr_apart() {
    let kms = KmsWorld::start(Pacing::Unpaced { chunk: 16 << 10 }, Faults::default(), None).await;
    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join("data");
    let data = agent_safe_bytes(16 << 20, 16);
    std::fs::write(&file, &data).expect("write data");
    let started = Instant::now();
    let script = format!("echo begin >&2; cat {}; echo done >&2", file.display());
    let run = kms.exec(Some(SEPARATE), &["sh", "-c", &script]).await;
    assert_eq!(run.code, 0, "stderr: {}", run.stderr);
    assert_eq!(run.stderr, "begin\ndone\n");
    assert_eq!(run.stdout.len(), data.len());
    assert_eq!(sha256_hex(&run.stdout), sha256_hex(&data));
    assert!(kms.emu.sessions().iter().all(|s| s.encrypted));
    eprintln!("16 MiB of KMS-encrypted stdout in {:?}", started.elapsed());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tampered_message_ends_the_session_and_none_of_it_is_written() {
    let faults = Faults {
        tamper_encrypted_output: Some(1),
        ..Faults::default()
    };
    let kms = KmsWorld::start(Pacing::Agent, faults, None).await;
    let run = kms
        .exec(Some(SEPARATE), &["sh", "-c", "echo secret-output; sleep 5"])
        .await;
    assert_eq!(run.code, 11, "stderr: {}", run.stderr);
    assert!(run.stderr.contains("failed authentication"), "stderr: {}", run.stderr);
    assert!(
        run.stdout.is_empty(),
        "stdout: {:?}",
        String::from_utf8_lossy(&run.stdout)
    );
    // The client ended the session at the service.
    assert!(sessions_end(&kms.emu, 10).await, "{:?}", kms.emu.sessions());
    assert!(kms.emu.sessions().iter().all(|s| s.terminate_calls > 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_challenge_sealed_under_another_key_is_refused() {
    let faults = Faults {
        wrong_challenge_key: true,
        ..Faults::default()
    };
    let kms = KmsWorld::start(Pacing::Agent, faults, None).await;
    let run = kms.exec(Some(SEPARATE), &["echo", "never"]).await;
    assert_eq!(run.code, 11, "stderr: {}", run.stderr);
    assert!(run.stderr.contains("challenge"), "stderr: {}", run.stderr);
    assert!(run.stdout.is_empty());
    assert!(sessions_end(&kms.emu, 10).await, "{:?}", kms.emu.sessions());
    assert!(kms.emu.sessions().iter().all(|s| !s.encrypted));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_that_kms_does_not_have_is_named_in_the_error() {
    let missing = "arn:aws:kms:us-east-1:123456789012:key/00000000-0000-0000-0000-000000000000";
    let kms = KmsWorld::start(Pacing::Agent, Faults::default(), Some(missing)).await;
    let run = kms.exec(Some(SEPARATE), &["echo", "never"]).await;
    assert_eq!(run.code, 11, "stderr: {}", run.stderr);
    assert!(
        run.stderr.contains("NotFoundException") && run.stderr.contains(missing),
        "stderr: {}",
        run.stderr
    );
    // The refusing HandshakeResponse ended the session at the agent, and the client ended it
    // at the service.
    assert!(sessions_end(&kms.emu, 10).await, "{:?}", kms.emu.sessions());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credentials_without_generate_data_key_permission_are_told_so() {
    // moto checks these credentials against their IAM policy as AWS does: they may use the key
    // (Decrypt, DescribeKey) but not make data keys with it.
    let moto = Moto::start_enforcing_iam(4).await;
    let key = moto.create_kms_key().await;
    let policy = serde_json::json!({
        "Version": "2012-10-17",
        "Statement": [{"Effect": "Allow", "Action": ["kms:Decrypt", "kms:DescribeKey"], "Resource": "*"}]
    });
    let credentials = moto.iam_user("operator", policy).await;
    let mut kms = KmsWorld::on(moto, key.clone(), Pacing::Agent, Faults::default()).await;
    kms.credentials = Some(credentials.clone());
    let run = kms.exec(Some(SEPARATE), &["echo", "never"]).await;
    assert_eq!(run.code, 11, "stderr: {}", run.stderr);
    assert!(
        run.stderr.contains("KMS refused GenerateDataKey")
            && run.stderr.contains("need kms:GenerateDataKey")
            && run.stderr.contains(&key),
        "stderr: {}",
        run.stderr
    );
    assert!(!run.stderr.contains(&credentials.1), "the secret key was printed");
    assert!(run.stdout.is_empty());
    assert!(sessions_end(&kms.emu, 10).await, "{:?}", kms.emu.sessions());
    assert!(kms.emu.sessions().iter().all(|s| !s.encrypted));
}
