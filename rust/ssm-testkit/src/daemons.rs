//! Real daemons on loopback, each on a port it is told (a free one; retried when another
//! process takes it first), each stopped and cleaned up on drop: OpenSSH's sshd, dnsmasq and
//! moto.

use std::net::{IpAddr, Ipv4Addr, SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Command;

use crate::net::{free_port, free_port_on};
use crate::proc::{Proc, require, run_ok};
use crate::time::within;

const SSHD: &str = "/usr/sbin/sshd";

/// A private sshd on 127.0.0.1 with a host key of its own, in a temporary directory. It trusts
/// either a client key made for it ([`Sshd::start`]) or only the files `<keys dir>/<user>`
/// someone else writes, such as the emulator's EC2 Instance Connect
/// ([`Sshd::with_keys_per_user`]). Its log (sshd `-e`, LogLevel VERBOSE) is kept for messages.
pub struct Sshd {
    /// The port it listens on.
    pub port: u16,
    client_key: Option<PathBuf>,
    keys_dir: Option<PathBuf>,
    log: Arc<Mutex<Vec<String>>>,
    _proc: Proc,
    // Last: removed once sshd is gone.
    _dir: tempfile::TempDir,
}

impl Sshd {
    /// An sshd that accepts [`Sshd::client_key`].
    pub async fn start() -> Self {
        Self::spawn(false).await
    }

    /// An sshd whose only authorized keys are in [`Sshd::keys_file`] (`AuthorizedKeysFile
    /// <keys dir>/%u`); the directory does not exist until someone writes a key.
    pub async fn with_keys_per_user() -> Self {
        Self::spawn(true).await
    }

    /// The private key this sshd accepts (from [`Sshd::start`]).
    pub fn client_key(&self) -> &Path {
        self.client_key
            .as_deref()
            .expect("Sshd::start makes a client key; Sshd::with_keys_per_user does not")
    }

    /// The directory holding one authorized_keys file per user (from
    /// [`Sshd::with_keys_per_user`]).
    pub fn keys_dir(&self) -> &Path {
        self.keys_dir
            .as_deref()
            .expect("Sshd::with_keys_per_user reads keys per user; Sshd::start does not")
    }

    /// The authorized_keys file sshd reads for `user`.
    pub fn keys_file(&self, user: &str) -> PathBuf {
        self.keys_dir().join(user)
    }

    /// What sshd logged so far.
    pub fn log(&self) -> String {
        self.log.lock().expect("log lock").join("\n")
    }

    async fn spawn(keys_per_user: bool) -> Self {
        assert!(
            Path::new(SSHD).exists(),
            "{SSHD} is missing: install openssh-server (.ci/run does)"
        );
        // sshd refuses to start without its privilege-separation directory.
        if !Path::new("/run/sshd").exists() {
            std::fs::create_dir_all("/run/sshd").expect("create /run/sshd");
        }
        let dir = tempfile::Builder::new()
            .prefix("ssmconnect-sshd-")
            .tempdir()
            .expect("a temp dir for sshd");
        let host_key = dir.path().join("host_ed25519");
        ssh_keygen(&host_key).await;
        let (client_key, keys_dir, authorized) = if keys_per_user {
            let keys_dir = dir.path().join("instance-connect");
            let authorized = keys_dir.join("%u");
            (None, Some(keys_dir), authorized)
        } else {
            let client_key = dir.path().join("id_ed25519");
            ssh_keygen(&client_key).await;
            let authorized = dir.path().join("authorized_keys");
            std::fs::copy(client_key.with_extension("pub"), &authorized).expect("authorized_keys");
            (Some(client_key), None, authorized)
        };

        // sshd cannot be told to pick a port itself, so take a free one and retry on a clash.
        let mut last_log = Vec::new();
        for _attempt in 0..5 {
            let port = free_port();
            let cfg = dir.path().join("sshd_config");
            std::fs::write(
                &cfg,
                format!(
                    "ListenAddress 127.0.0.1\nPort {port}\nHostKey {hk}\nPidFile {pid}\n\
                     AuthorizedKeysFile {ak}\nStrictModes no\nUsePAM no\n\
                     PasswordAuthentication no\nKbdInteractiveAuthentication no\n\
                     PermitRootLogin prohibit-password\nSubsystem sftp internal-sftp\n\
                     LogLevel VERBOSE\n",
                    hk = host_key.display(),
                    pid = dir.path().join("sshd.pid").display(),
                    ak = authorized.display(),
                ),
            )
            .expect("write sshd_config");
            let mut cmd = Command::new(SSHD);
            cmd.args(["-D", "-e", "-f"])
                .arg(&cfg)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::piped());
            let mut proc = Proc::spawn(&mut cmd, "sshd");
            let mut lines = BufReader::new(proc.take_stderr()).lines();
            let ready = within(20, "sshd to listen", async {
                while let Ok(Some(line)) = lines.next_line().await {
                    let ok = line.contains("Server listening on");
                    last_log.push(line);
                    if ok {
                        return true;
                    }
                }
                false
            })
            .await;
            if !ready {
                // It exited: most likely the port was taken in the meantime.
                let _ = proc.wait(5).await;
                continue;
            }
            let log = Arc::new(Mutex::new(std::mem::take(&mut last_log)));
            let sink = log.clone();
            tokio::spawn(async move {
                while let Ok(Some(line)) = lines.next_line().await {
                    sink.lock().expect("log lock").push(line);
                }
            });
            return Self {
                port,
                client_key,
                keys_dir,
                log,
                _proc: proc,
                _dir: dir,
            };
        }
        panic!("sshd did not start: {last_log:?}");
    }
}

/// Makes a new ed25519 key pair without a passphrase: `path` and `path.pub`.
pub async fn ssh_keygen(path: &Path) {
    run_ok(
        Command::new("ssh-keygen")
            .args(["-q", "-t", "ed25519", "-N", "", "-f"])
            .arg(path),
        "ssh-keygen",
    )
    .await;
}

/// `python3 -m moto.server` (EC2, EC2 Instance Connect, KMS, … as AWS answers them, written by
/// others) on a free loopback port.
pub struct Moto {
    /// `http://127.0.0.1:<port>`.
    pub endpoint: String,
    _proc: Proc,
}

impl Moto {
    /// Starts moto and waits (up to 60 s) until it accepts connections. It checks no
    /// credentials.
    pub async fn start() -> Moto {
        Self::spawn(None).await
    }

    /// Starts moto checking every request after the first `free_requests` as AWS does: signed
    /// by an access key of one of its IAM users, and allowed by that user's policies (moto's
    /// `INITIAL_NO_AUTH_ACTION_COUNT`). The free requests set the world up (a key, a user).
    pub async fn start_enforcing_iam(free_requests: u32) -> Moto {
        Self::spawn(Some(free_requests)).await
    }

    async fn spawn(free_requests: Option<u32>) -> Moto {
        require(
            "python3",
            &["-c", "import moto.server"],
            "these tests need Python 3 with moto[server] (pip install 'moto[server]'); CI has it",
        );
        for _attempt in 0..3 {
            let port = free_port();
            let mut cmd = Command::new("python3");
            cmd.args(["-m", "moto.server", "-H", "127.0.0.1", "-p", &port.to_string()])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null());
            if let Some(n) = free_requests {
                cmd.env("INITIAL_NO_AUTH_ACTION_COUNT", n.to_string());
            }
            let mut proc = Proc::spawn(&mut cmd, "moto");
            let deadline = Instant::now() + Duration::from_secs(60);
            while Instant::now() < deadline {
                if proc.has_exited() {
                    break; // lost the port race: try another
                }
                if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                    return Moto {
                        endpoint: format!("http://127.0.0.1:{port}"),
                        _proc: proc,
                    };
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
        panic!("moto.server did not start listening within 60 s");
    }

    /// Where it listens.
    pub fn addr(&self) -> SocketAddr {
        self.endpoint
            .trim_start_matches("http://")
            .parse()
            .expect("moto's endpoint is an address")
    }

    /// A new symmetric KMS key (in the test region); its key id.
    pub async fn create_kms_key(&self) -> String {
        let (status, body) = crate::net::json_call_for(
            self.addr(),
            "TrentService.CreateKey",
            Some("kms"),
            serde_json::json!({"Description": "SSMConnect session encryption (test)"}),
        )
        .await;
        assert_eq!(status, 200, "CreateKey: {body}");
        body["KeyMetadata"]["KeyId"]
            .as_str()
            .unwrap_or_else(|| panic!("CreateKey returned no KeyId: {body}"))
            .to_owned()
    }

    /// An IAM user `name` whose only policy is `policy` (a policy document); its access key id
    /// and secret. Three requests.
    pub async fn iam_user(&self, name: &str, policy: serde_json::Value) -> (String, String) {
        let call = |params: Vec<(&'static str, String)>| async move {
            let pairs: Vec<(&str, &str)> = params.iter().map(|(k, v)| (*k, v.as_str())).collect();
            let (status, body) = crate::net::query_call_for(self.addr(), "iam", &pairs).await;
            assert_eq!(status, 200, "{}: {body}", params[0].1);
            body
        };
        let v = |s: &str| s.to_owned();
        call(vec![
            ("Action", v("CreateUser")),
            ("Version", v("2010-05-08")),
            ("UserName", v(name)),
        ])
        .await;
        call(vec![
            ("Action", v("PutUserPolicy")),
            ("Version", v("2010-05-08")),
            ("UserName", v(name)),
            ("PolicyName", v("only")),
            ("PolicyDocument", policy.to_string()),
        ])
        .await;
        let body = call(vec![
            ("Action", v("CreateAccessKey")),
            ("Version", v("2010-05-08")),
            ("UserName", v(name)),
        ])
        .await;
        let element = |tag: &str| {
            let open = format!("<{tag}>");
            let start = body.find(&open).map(|i| i + open.len());
            let end = body.find(&format!("</{tag}>"));
            match (start, end) {
                (Some(s), Some(e)) if s <= e => body[s..e].to_owned(),
                _ => panic!("CreateAccessKey returned no {tag}: {body}"),
            }
        };
        (element("AccessKeyId"), element("SecretAccessKey"))
    }
}

/// dnsmasq answering only from the given records: authoritative for `.test`
/// ([`Dnsmasq::start`]), or, like a small internal resolver without an upstream, refusing every
/// query it has no record of that type for ([`Dnsmasq::refusing`]).
pub struct Dnsmasq {
    /// Where it answers (UDP and TCP).
    pub addr: SocketAddr,
    _proc: Proc,
    // Last: removed once dnsmasq is gone.
    _dir: tempfile::TempDir,
}

impl Dnsmasq {
    /// On 127.0.0.1, authoritative for `.test`. `records` are dnsmasq options such as
    /// `--host-record=web.test,10.0.0.5` or `--txt-record=web.test,i-0123456789abcdef0`.
    pub async fn start(records: &[String]) -> Dnsmasq {
        Self::spawn(records, IpAddr::V4(Ipv4Addr::LOCALHOST), true).await
    }

    /// On `listen` (a loopback address), with no upstream and no `--local`: a name and type with
    /// no record is answered REFUSED, not NXDOMAIN or NODATA. `--address=/web.test/10.0.0.5`
    /// thus answers A and refuses AAAA and TXT.
    pub async fn refusing(records: &[String], listen: IpAddr) -> Dnsmasq {
        Self::spawn(records, listen, false).await
    }

    async fn spawn(records: &[String], listen: IpAddr, authoritative: bool) -> Dnsmasq {
        let dnsmasq = ["/usr/sbin/dnsmasq", "/usr/bin/dnsmasq"]
            .into_iter()
            .find(|p| Path::new(p).exists())
            .unwrap_or_else(|| panic!("dnsmasq is not installed: apt-get install dnsmasq (.ci/run does)"));
        let dir = tempfile::Builder::new()
            .prefix("ssmconnect-dnsmasq-")
            .tempdir()
            .expect("a temp dir for dnsmasq");
        for _attempt in 0..3 {
            let port = free_port_on(listen);
            let mut cmd = Command::new(dnsmasq);
            cmd.args([
                "--no-daemon",
                &format!("--port={port}"),
                &format!("--listen-address={listen}"),
                "--bind-interfaces",
                "--no-resolv",
                "--no-hosts",
                "--no-poll",
                "--conf-file=/dev/null",
                "--cache-size=0",
                &format!("--pid-file={}", dir.path().join("pid").display()),
            ]);
            if authoritative {
                cmd.arg("--local=/test/");
            }
            // As root it would switch to `nobody`, which may not read the temp directory.
            // SAFETY: geteuid has no preconditions.
            if unsafe { libc::geteuid() } == 0 {
                cmd.arg("--user=root");
            }
            cmd.args(records)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null());
            let mut proc = Proc::spawn(&mut cmd, "dnsmasq");
            let addr = SocketAddr::new(listen, port);
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline {
                if proc.has_exited() {
                    break;
                }
                if dns_answers(addr) {
                    return Dnsmasq {
                        addr,
                        _proc: proc,
                        _dir: dir,
                    };
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        panic!("dnsmasq did not start answering within 10 s");
    }
}

/// Whether a DNS server answers at `addr` (a raw query for `ready.test` A; any answer, REFUSED
/// included, will do).
fn dns_answers(addr: SocketAddr) -> bool {
    let sock = UdpSocket::bind(SocketAddr::new(addr.ip(), 0)).expect("bind udp");
    sock.set_read_timeout(Some(Duration::from_millis(200)))
        .expect("udp read timeout");
    let mut q = vec![0x12, 0x34, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0];
    for label in ["ready", "test"] {
        q.push(label.len() as u8);
        q.extend_from_slice(label.as_bytes());
    }
    q.extend_from_slice(&[0, 0, 1, 0, 1]);
    if sock.send_to(&q, addr).is_err() {
        return false;
    }
    let mut buf = [0u8; 512];
    matches!(sock.recv_from(&mut buf), Ok((n, _)) if n >= 12 && buf[0] == 0x12 && buf[1] == 0x34)
}
