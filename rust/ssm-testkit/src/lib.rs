//! What the Rust test suites of SSMConnect share, so that each suite keeps only what is its own:
//! the in-process emulator, loopback TCP servers and free ports, bounded waits, child processes
//! killed on drop, data to move and check, and the real daemons the tests run on loopback
//! (OpenSSH's sshd, dnsmasq, moto). Used only as a dev-dependency.
//!
//! Everything runs on loopback, on ports the OS picks; every wait is bounded. A program a test
//! needs and cannot find fails the test with what to install: nothing is skipped.

mod daemons;
mod data;
mod net;
mod proc;
mod time;

pub use daemons::{Dnsmasq, Moto, Sshd, ssh_keygen};
pub use data::{Pattern, random_bytes, sha256_hex};
pub use net::{aws_call, echo_server, free_port, free_port_on, greeting_echo_server, http_server, loopbacks};
pub use proc::{Proc, current_user, read_all, require, run_ok, which};
pub use time::{wait_until, within};

use ssm_emulator::{Config, Emulator};

/// A target id the default emulator accepts (it takes any `i-…` or `mi-…` id).
pub const TARGET: &str = "i-0123456789abcdef0";

/// The region every test signs for.
pub const REGION: &str = "us-east-1";

/// A made-up access key id (the emulator records it and checks nothing).
pub const ACCESS_KEY: &str = "AKIDEXAMPLE";

/// The secret key that goes with [`ACCESS_KEY`].
pub const SECRET_KEY: &str = "secret";

/// The environment of a child process that talks to the emulator: the test credentials and
/// region, and no instance metadata lookups.
pub fn aws_env() -> [(&'static str, &'static str); 4] {
    [
        ("AWS_ACCESS_KEY_ID", ACCESS_KEY),
        ("AWS_SECRET_ACCESS_KEY", SECRET_KEY),
        ("AWS_REGION", REGION),
        ("AWS_EC2_METADATA_DISABLED", "true"),
    ]
}

/// Starts the emulator with `config` on a loopback port the OS picks.
pub async fn emulator(config: Config) -> Emulator {
    Emulator::start(config).await.expect("start the emulator")
}

/// Starts the emulator serving TLS, as AWS does (`https://` API, `wss://` stream URLs), and
/// writes its test CA to a PEM file for the client to be given (`AWS_CA_BUNDLE`, `--ca-bundle`).
pub async fn tls_emulator(config: Config) -> (Emulator, CaFile) {
    let emu = emulator(Config { tls: true, ..config }).await;
    let pem = emu.ca_pem().expect("a TLS emulator has a CA").to_owned();
    let ca = CaFile::new("emulator-ca.pem", pem.as_bytes());
    (emu, ca)
}

/// A file in a directory of its own, removed on drop: a CA bundle (or something posing as one).
pub struct CaFile {
    _dir: tempfile::TempDir,
    path: std::path::PathBuf,
}

impl CaFile {
    /// Writes `contents` to a new file called `name`.
    pub fn new(name: &str, contents: &[u8]) -> Self {
        let dir = tempfile::Builder::new()
            .prefix("ssmconnect-ca-")
            .tempdir()
            .expect("create a temp dir");
        let path = dir.path().join(name);
        std::fs::write(&path, contents).expect("write the CA file");
        Self { _dir: dir, path }
    }

    /// Where the file is.
    pub fn path(&self) -> &std::path::Path {
        &self.path
    }

    /// The path as text, for arguments and environment variables.
    pub fn as_str(&self) -> &str {
        self.path.to_str().expect("temp paths are UTF-8")
    }
}
