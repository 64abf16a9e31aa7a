//! EC2 Instance Connect: push an SSH public key to an instance before an SSH session.
//!
//! `SendSSHPublicKey` makes the instance accept the key for one OS user for 60 seconds, long
//! enough for ssh to log in. The key is the user's own (`ssmconnect ssh-proxy --ec2ic
//! --public-key FILE`, where ssh's `-i` holds the private half), or a fresh ed25519 pair made in
//! memory by [`generate_ephemeral_key`], whose private half lives in a 0600 file only as long
//! as the [`EphemeralKey`] does.

use std::fmt;
use std::path::{Path, PathBuf};

use aws_config::SdkConfig;
use rand::Rng;

use crate::aws::{api_error, service_endpoint};
use crate::error::{Error, Result};
use crate::resolve::ResolvedTarget;

/// An EC2 Instance Connect client.
#[derive(Debug, Clone)]
pub struct InstanceConnect {
    client: aws_sdk_ec2instanceconnect::Client,
}

impl InstanceConnect {
    /// A client for `config`. The endpoint is `endpoint_url`, else
    /// `AWS_ENDPOINT_URL_EC2_INSTANCE_CONNECT`, the profile or `AWS_ENDPOINT_URL`, else the
    /// regional one; plain `http://` only for loopback.
    pub fn new(config: &SdkConfig, endpoint_url: Option<&str>) -> Result<Self> {
        if config.region().is_none() {
            return Err(Error::NoRegion);
        }
        let mut b = aws_sdk_ec2instanceconnect::config::Builder::from(config);
        if let Some(url) = service_endpoint(config, "EC2 Instance Connect", endpoint_url)? {
            b = b.endpoint_url(url);
        }
        Ok(Self {
            client: aws_sdk_ec2instanceconnect::Client::from_conf(b.build()),
        })
    }

    /// Pushes `public_key` (one OpenSSH line, e.g. `ssh-ed25519 AAAA… comment`) for `os_user` on
    /// the instance. The availability zone is the instance's, as resolved.
    pub async fn push_key(&self, target: &ResolvedTarget, os_user: &str, public_key: &str) -> Result<()> {
        if !target.instance_id.starts_with("i-") {
            return Err(Error::InvalidTarget {
                target: target.instance_id.clone(),
                reason: "EC2 Instance Connect works with EC2 instances only, not managed nodes".into(),
            });
        }
        if os_user.is_empty() {
            return Err(Error::Config(
                "EC2 Instance Connect needs the OS user to log in as (user@target)".into(),
            ));
        }
        let key = ssh_key::PublicKey::from_openssh(public_key.trim())
            .map_err(|e| Error::Config(format!("the public key is not in OpenSSH format: {e}")))?;
        let line = key
            .to_openssh()
            .map_err(|e| Error::Config(format!("the public key cannot be encoded: {e}")))?;
        let out = self
            .client
            .send_ssh_public_key()
            .instance_id(&target.instance_id)
            .instance_os_user(os_user)
            .ssh_public_key(line)
            .set_availability_zone(target.availability_zone.clone())
            .send()
            .await
            .map_err(|e| api_error("SendSSHPublicKey", e))?;
        if !out.success {
            return Err(Error::Api {
                operation: "SendSSHPublicKey",
                code: None,
                message: format!(
                    "the service did not accept the key (request {})",
                    out.request_id.unwrap_or_default()
                ),
            });
        }
        tracing::info!(instance = %target.instance_id, user = os_user, "EC2 Instance Connect key pushed (valid 60 s)");
        Ok(())
    }
}

/// Pushes `public_key` for `os_user` on `target` with a client built from `config`
/// ([`InstanceConnect::new`] then [`InstanceConnect::push_key`]).
pub async fn push_key(
    config: &SdkConfig,
    endpoint_url: Option<&str>,
    target: &ResolvedTarget,
    os_user: &str,
    public_key: &str,
) -> Result<()> {
    InstanceConnect::new(config, endpoint_url)?
        .push_key(target, os_user, public_key)
        .await
}

/// A fresh ed25519 key pair whose private half is in a file only ssh reads. The file is
/// created owner-only (0600 on Unix; on Windows it inherits the directory's ACL, so use a
/// directory only the user can read) and is deleted when this value is dropped.
pub struct EphemeralKey {
    private_key_path: PathBuf,
    public_key_openssh: String,
}

impl EphemeralKey {
    /// The private key file, for ssh's `-i`.
    pub fn private_key_path(&self) -> &Path {
        &self.private_key_path
    }

    /// The public key as one OpenSSH line, for [`InstanceConnect::push_key`].
    pub fn public_key_openssh(&self) -> &str {
        &self.public_key_openssh
    }
}

impl fmt::Debug for EphemeralKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EphemeralKey")
            .field("private_key_path", &self.private_key_path)
            .field("public_key_openssh", &self.public_key_openssh)
            .finish()
    }
}

impl Drop for EphemeralKey {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.private_key_path);
    }
}

/// Makes an ed25519 key pair in memory and writes its private half, in OpenSSH format, to a new
/// owner-only file in `dir`.
pub fn generate_ephemeral_key(dir: &Path) -> Result<EphemeralKey> {
    let mut seed = [0u8; 32];
    rand::rng().fill(&mut seed);
    let pair = ssh_key::private::Ed25519Keypair::from_seed(&seed);
    seed.fill(0);
    let mut private = ssh_key::PrivateKey::from(pair);
    private.set_comment("ssmconnect-ec2-instance-connect");
    let pem = private
        .to_openssh(ssh_key::LineEnding::LF)
        .map_err(|e| Error::Config(format!("encoding the key: {e}")))?;
    let public_key_openssh = private
        .public_key()
        .to_openssh()
        .map_err(|e| Error::Config(format!("encoding the key: {e}")))?;
    let mut suffix = [0u8; 8];
    rand::rng().fill(&mut suffix);
    let name: String = suffix.iter().map(|b| format!("{b:02x}")).collect();
    let private_key_path = dir.join(format!("ssmconnect-ec2ic-{name}"));
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let key = EphemeralKey {
        private_key_path,
        public_key_openssh,
    };
    let mut file = options.open(&key.private_key_path)?;
    std::io::Write::write_all(&mut file, pem.as_bytes())?;
    file.sync_all()?;
    Ok(key)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ephemeral_key_is_private_and_goes_away() {
        let dir = tempfile::tempdir().unwrap();
        let key = generate_ephemeral_key(dir.path()).unwrap();
        let path = key.private_key_path().to_owned();
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.starts_with("-----BEGIN OPENSSH PRIVATE KEY-----"));
        assert!(key.public_key_openssh().starts_with("ssh-ed25519 AAAA"));
        let parsed = ssh_key::PrivateKey::from_openssh(&text).unwrap();
        assert_eq!(parsed.public_key().to_openssh().unwrap(), key.public_key_openssh());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        }
        drop(key);
        assert!(!path.exists());
    }
}
