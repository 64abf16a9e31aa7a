//! EC2 Instance Connect `SendSSHPublicKey` (awsJson1.1,
//! `X-Amz-Target: AWSEC2InstanceConnectService.SendSSHPublicKey`).
//!
//! A pushed key is written to the authorized_keys file the emulator manages
//! ([`Config::authorized_keys`]) and removed from it when its time is up
//! ([`Config::instance_connect_ttl_ms`], 60 s as in EC2), so a real sshd pointed at that
//! file behaves like an instance with EC2 Instance Connect.

use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::{Duration, Instant};

use axum::response::Response;
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::config::Config;
use crate::ec2::InstanceState;
use crate::reply;

/// A key pushed through Instance Connect that is still valid.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PushedKey {
    /// Instance it was pushed to.
    pub instance_id: String,
    /// OS user it is valid for.
    pub os_user: String,
    /// The key, one OpenSSH line as written to the file.
    pub public_key: String,
    /// The file it was written to, when one is configured.
    pub file: Option<PathBuf>,
    /// Milliseconds until it is removed.
    pub expires_in_ms: u64,
}

struct Entry {
    instance_id: String,
    os_user: String,
    line: String,
    file: Option<PathBuf>,
    expires: Instant,
}

/// The live keys.
#[derive(Default)]
pub(crate) struct Keys {
    entries: Mutex<Vec<Entry>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Keys {
    pub(crate) fn list(&self) -> Vec<PushedKey> {
        let now = Instant::now();
        lock(&self.entries)
            .iter()
            .filter(|e| e.expires > now)
            .map(|e| PushedKey {
                instance_id: e.instance_id.clone(),
                os_user: e.os_user.clone(),
                public_key: e.line.clone(),
                file: e.file.clone(),
                expires_in_ms: e.expires.saturating_duration_since(now).as_millis() as u64,
            })
            .collect()
    }

    /// Drops expired keys and rewrites the files they were in.
    fn expire(&self) {
        let now = Instant::now();
        let mut entries = lock(&self.entries);
        let mut touched: Vec<PathBuf> = Vec::new();
        entries.retain(|e| {
            let live = e.expires > now;
            if !live
                && let Some(f) = &e.file
                && !touched.contains(f)
            {
                touched.push(f.clone());
            }
            live
        });
        for f in touched {
            write_file(&entries, &f);
        }
    }

    /// Empties every file that holds keys (the emulator is going away).
    pub(crate) fn clear(&self) {
        let mut entries = lock(&self.entries);
        let files: Vec<PathBuf> = entries.iter().filter_map(|e| e.file.clone()).collect();
        entries.clear();
        for f in files {
            write_file(&entries, &f);
        }
    }
}

/// Writes the live keys for `file` (replacing it atomically, owner-only).
fn write_file(entries: &[Entry], file: &PathBuf) {
    let now = Instant::now();
    let mut text = String::new();
    for e in entries
        .iter()
        .filter(|e| e.file.as_ref() == Some(file) && e.expires > now)
    {
        text.push_str(&e.line);
        text.push('\n');
    }
    let tmp = file.with_extension(format!("tmp-{}", std::process::id()));
    let result = (|| -> std::io::Result<()> {
        if let Some(dir) = file.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)?;
        }
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create(true).truncate(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        let mut f = options.open(&tmp)?;
        std::io::Write::write_all(&mut f, text.as_bytes())?;
        f.sync_all()?;
        std::fs::rename(&tmp, file)
    })();
    if let Err(e) = result {
        tracing::error!("writing {}: {e}", file.display());
        let _ = std::fs::remove_file(&tmp);
    }
}

#[derive(Deserialize)]
struct SendRequest {
    #[serde(rename = "InstanceId")]
    instance_id: String,
    #[serde(rename = "InstanceOSUser")]
    os_user: String,
    #[serde(rename = "SSHPublicKey")]
    public_key: String,
    #[serde(rename = "AvailabilityZone", default)]
    availability_zone: Option<String>,
}

/// The service's rule for OS user names (1–32 characters).
fn valid_user(u: &str) -> bool {
    let b = u.as_bytes();
    let Some((&first, rest)) = b.split_first() else {
        return false;
    };
    let middle_ok = |c: u8| c.is_ascii_alphanumeric() || matches!(c, b'@' | b'.' | b'_' | b'-');
    let last_ok = |c: u8| c.is_ascii_alphanumeric() || matches!(c, b'$' | b'_' | b'-');
    b.len() <= 32
        && (first.is_ascii_alphabetic() || first == b'_')
        && match rest.split_last() {
            None => true,
            Some((&last, mid)) => mid.iter().all(|&c| middle_ok(c)) && (middle_ok(last) || last_ok(last)),
        }
}

const INVALID_ARGS: &str = "InvalidArgsException";

fn invalid(message: impl AsRef<str>) -> Response {
    reply::json_error(INVALID_ARGS, message.as_ref())
}

/// Handles a request body: checks the instance, user and key, then installs the key in `keys`.
pub(crate) fn send_ssh_public_key(config: &Config, keys: &Arc<Keys>, body: &[u8]) -> Response {
    reply::with_json(body, INVALID_ARGS, |req| send(config, keys, req))
}

fn send(config: &Config, keys: &Arc<Keys>, req: SendRequest) -> Response {
    let Some(instance) = config.instance(&req.instance_id) else {
        return reply::json_error(
            "EC2InstanceNotFoundException",
            &format!("Instance {} not found", req.instance_id),
        );
    };
    if instance.state != InstanceState::Running {
        return reply::json_error(
            "EC2InstanceStateInvalidException",
            &format!(
                "Instance {} is not in a valid state ({}); it must be running",
                req.instance_id,
                instance.state.name()
            ),
        );
    }
    if let Some(az) = &req.availability_zone
        && az != &instance.availability_zone
    {
        return invalid(format!("Instance {} is not in availability zone {az}", req.instance_id));
    }
    if !valid_user(&req.os_user) {
        return invalid(format!("InstanceOSUser {:?} is not a valid user name", req.os_user));
    }
    let key = match ssh_key::PublicKey::from_openssh(req.public_key.trim()) {
        Ok(k)
            if matches!(
                k.algorithm(),
                ssh_key::Algorithm::Ed25519 | ssh_key::Algorithm::Rsa { .. }
            ) =>
        {
            k
        }
        Ok(k) => return invalid(format!("{} keys are not supported; use RSA or ED25519", k.algorithm())),
        Err(_) => return invalid("SSHPublicKey is not an OpenSSH public key"),
    };
    // Re-encoding (rather than copying the text) keeps options and extra lines out of the file.
    let line = match key.to_openssh() {
        Ok(l) => l,
        Err(e) => return invalid(format!("SSHPublicKey cannot be encoded: {e}")),
    };
    let file = config.authorized_keys.as_ref().map(|p| {
        PathBuf::from(
            p.to_string_lossy()
                .replace("%u", &req.os_user)
                .replace("%i", &req.instance_id),
        )
    });
    let ttl = Duration::from_millis(config.instance_connect_ttl_ms);
    {
        let mut entries = lock(&keys.entries);
        entries.push(Entry {
            instance_id: req.instance_id.clone(),
            os_user: req.os_user.clone(),
            line,
            file: file.clone(),
            expires: Instant::now() + ttl,
        });
        if let Some(f) = &file {
            write_file(&entries, f);
        }
    }
    let weak: Weak<Keys> = Arc::downgrade(keys);
    tokio::spawn(async move {
        tokio::time::sleep(ttl + Duration::from_millis(1)).await;
        if let Some(keys) = weak.upgrade() {
            keys.expire();
        }
    });
    tracing::debug!(instance = %req.instance_id, user = %req.os_user, "instance connect key installed");
    reply::json(json!({ "RequestId": reply::random_hex(16), "Success": true }))
}

#[cfg(test)]
mod tests {
    use super::valid_user;

    #[test]
    fn users() {
        for ok in ["ec2-user", "root", "_x", "a", "user@corp", "name$"] {
            assert!(valid_user(ok), "{ok}");
        }
        for bad in ["", "1abc", "-x", "a/b", "..", ".x", "a b", &"x".repeat(33)] {
            assert!(!valid_user(bad), "{bad}");
        }
    }
}
