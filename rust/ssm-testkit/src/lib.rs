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
pub use net::{aws_call, echo_server, free_port, free_port_on, greeting_echo_server, loopbacks};
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
