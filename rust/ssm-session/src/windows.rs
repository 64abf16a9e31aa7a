//! The Windows Administrator password of an instance, for an RDP login: EC2 `GetPasswordData`
//! gives what EC2Launch encrypted to the public half of the instance's key pair, and it is
//! decrypted here with the private half (RSA PKCS#1 v1.5, through the `rsa` crate). The
//! password is wiped from memory when dropped and appears in no log or error.

use base64::Engine as _;
use rsa::pkcs1::DecodeRsaPrivateKey as _;
use rsa::pkcs8::DecodePrivateKey as _;
use zeroize::Zeroizing;

use crate::aws::api_error;
use crate::error::{Error, Result};

/// The Administrator password of `instance_id`, decrypted with `private_key_pem` (the key pair
/// file as EC2 gives it out: `BEGIN RSA PRIVATE KEY`, or PKCS#8 `BEGIN PRIVATE KEY`).
pub async fn password(
    client: &aws_sdk_ec2::Client,
    instance_id: &str,
    private_key_pem: &str,
) -> Result<Zeroizing<String>> {
    // The key first: a wrong file is said so before any call.
    let key = rsa::RsaPrivateKey::from_pkcs1_pem(private_key_pem)
        .or_else(|_| rsa::RsaPrivateKey::from_pkcs8_pem(private_key_pem))
        .map_err(|_| {
            Error::Config(
                "the key pair file is not an unencrypted RSA private key in PEM (the .pem file EC2 gave out \
                 when the key pair was created)"
                    .into(),
            )
        })?;
    let out = client
        .get_password_data()
        .instance_id(instance_id)
        .send()
        .await
        .map_err(|e| api_error("GetPasswordData", e))?;
    let data = out.password_data().unwrap_or_default().trim();
    if data.is_empty() {
        return Err(Error::Api {
            operation: "GetPasswordData",
            code: None,
            message: format!(
                "EC2 has no password for {instance_id}: it is not a Windows instance, it was launched \
                 without a key pair, or it started less than a few minutes ago (EC2Launch sets the \
                 password then)"
            ),
        });
    }
    let sealed = base64::engine::general_purpose::STANDARD
        .decode(data)
        .map_err(|_| Error::Api {
            operation: "GetPasswordData",
            code: None,
            message: "the password data is not base64".into(),
        })?;
    // Timing of a local decryption is nobody else's to observe (the Marvin attack on PKCS#1
    // v1.5 needs a decryption oracle).
    let plain = Zeroizing::new(key.decrypt(rsa::Pkcs1v15Encrypt, &sealed).map_err(|_| {
        Error::Config(format!(
            "the password of {instance_id} does not decrypt with this key pair file: it is not the key \
             pair the instance was launched with"
        ))
    })?);
    let text = std::str::from_utf8(&plain).map_err(|_| Error::Config("the decrypted password is not text".into()))?;
    Ok(Zeroizing::new(text.to_owned()))
}
