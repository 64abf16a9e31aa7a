//! The agent's side of KMS session encryption (§5.6): `Decrypt` of the client's data key at a
//! real KMS (a moto server in tests) with the encryption context the agent uses, as
//! agent/session/crypto/kmsservice.go and blockcipher.go UpdateEncryptionKey do.

use std::collections::HashMap;

use aws_sdk_kms::config::{BehaviorVersion, Credentials, Region};
use aws_sdk_kms::error::ProvideErrorMetadata;
use aws_sdk_kms::primitives::Blob;
use zeroize::Zeroizing;

/// Decrypts `ciphertext` under `key_id` at `endpoint` in `region`, with the session id, the
/// instance id and, when the client acknowledged it, the random challenge as context.
pub(crate) async fn decrypt_data_key(
    endpoint: &str,
    region: &str,
    key_id: &str,
    ciphertext: Vec<u8>,
    context: HashMap<String, String>,
) -> Result<Zeroizing<Vec<u8>>, String> {
    let config = aws_sdk_kms::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new(if region.is_empty() {
            "us-east-1".to_owned()
        } else {
            region.to_owned()
        }))
        // The agent signs with its instance role; a moto server takes any key.
        .credentials_provider(Credentials::new(
            "emulated-agent",
            "emulated-agent",
            None,
            None,
            "ssm-emulator",
        ))
        .endpoint_url(endpoint)
        .http_client(aws_smithy_http_client::Builder::new().build_http())
        .build();
    let client = aws_sdk_kms::Client::from_conf(config);
    let mut call = client.decrypt().key_id(key_id).ciphertext_blob(Blob::new(ciphertext));
    for (k, v) in context {
        call = call.encryption_context(k, v);
    }
    // kmsservice.go Decrypt: "Error when decrypting data key %s".
    let out = call.send().await.map_err(|e| {
        format!(
            "Error when decrypting data key {}: {}",
            e.code().unwrap_or("no code"),
            e.message().unwrap_or("no message")
        )
    })?;
    Ok(Zeroizing::new(out.plaintext.map(Blob::into_inner).unwrap_or_default()))
}
