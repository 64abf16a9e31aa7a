//! The client's side of KMS session encryption (§5.6): the data key from KMS
//! `GenerateDataKey`, and what can go wrong with it, each failure its own [`KmsError`].
//!
//! The key is 64 bytes, made under the key the agent names, with the encryption context the
//! agent decrypts it with (agent/session/crypto/blockcipher.go UpdateEncryptionKey): the session
//! id, the target's instance id and, when the agent sent one, its random challenge, which the
//! response then acknowledges. The plaintext lives in a buffer that is wiped when dropped.

use std::collections::HashMap;

use aws_config::SdkConfig;
use aws_sdk_kms::primitives::Blob;
use zeroize::Zeroizing;

use crate::aws::{api_error, service_endpoint};
use crate::error::{Error, Result};

/// Encryption-context key of the session id.
pub const CONTEXT_SESSION_ID: &str = "aws:ssm:SessionId";
/// Encryption-context key of the target's instance id.
pub const CONTEXT_TARGET_ID: &str = "aws:ssm:TargetId";
/// Encryption-context key of the agent's random challenge.
pub const CONTEXT_CHALLENGE: &str = "aws:ssm:RandomChallenge";

/// What an encrypted session needs a data key for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DataKeyRequest {
    /// The key the agent named (`KMSKeyId`).
    pub key_id: String,
    /// The session.
    pub session_id: String,
    /// The instance the session runs on.
    pub target_id: String,
    /// The agent's random challenge, if it sent one.
    pub challenge: Option<String>,
}

impl DataKeyRequest {
    /// The encryption context the agent decrypts the key with.
    pub fn context(&self) -> HashMap<String, String> {
        let mut c = HashMap::from([
            (CONTEXT_SESSION_ID.to_owned(), self.session_id.clone()),
            (CONTEXT_TARGET_ID.to_owned(), self.target_id.clone()),
        ]);
        if let Some(challenge) = &self.challenge {
            c.insert(CONTEXT_CHALLENGE.to_owned(), challenge.clone());
        }
        c
    }
}

/// A data key: the plaintext (wiped on drop) and the `CiphertextBlob` the agent decrypts.
pub struct DataKey {
    /// The 64 plaintext bytes.
    pub plaintext: Zeroizing<Vec<u8>>,
    /// What KMS encrypted them to.
    pub ciphertext: Vec<u8>,
}

impl std::fmt::Debug for DataKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DataKey")
            .field("plaintext", &"<redacted>")
            .field("ciphertext_len", &self.ciphertext.len())
            .finish()
    }
}

/// Why an encrypted session could not be set up or went on no longer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KmsError {
    /// KMS refused `GenerateDataKey` to these credentials.
    #[error(
        "KMS refused GenerateDataKey on key {key_id} ({message}): the session is encrypted with that key (Session Manager preferences), so these credentials need kms:GenerateDataKey on it"
    )]
    AccessDenied {
        /// The key.
        key_id: String,
        /// KMS's message.
        message: String,
    },
    /// The key does not exist, is disabled, pending deletion or not for encryption.
    #[error(
        "KMS key {key_id} cannot make a data key ({code}: {message}): check the key named in the Session Manager preferences exists in this region and is enabled"
    )]
    KeyUnavailable {
        /// The key.
        key_id: String,
        /// KMS's error code, e.g. `NotFoundException`, `DisabledException`.
        code: String,
        /// KMS's message.
        message: String,
    },
    /// The agent's encryption challenge did not open with the data key: the agent and this
    /// client do not share the key.
    #[error("the agent's encryption challenge did not decrypt with the session's data key; the session was ended")]
    ChallengeMismatch,
    /// A payload from the agent failed authentication: altered on the way, or not sealed by the
    /// agent. Nothing of it was passed on.
    #[error(
        "an encrypted message from the agent failed authentication (altered or not from the agent); the session was ended and nothing of that message was passed on"
    )]
    Tampered,
    /// The agent asked for a challenge round or sent encrypted data without an agreed key.
    #[error("the agent sent {0} before KMS encryption was agreed")]
    OutOfOrder(&'static str),
}

/// The classification of a KMS service error code. An HTTP 403 without a code the KMS client
/// can read (an IAM check in front of the service answering in another protocol, as moto's
/// does) is a refusal too.
pub(crate) fn classify(key_id: &str, code: Option<&str>, status: Option<u16>, message: String) -> Error {
    match code {
        Some("AccessDeniedException" | "AccessDenied") => Error::Kms(KmsError::AccessDenied {
            key_id: key_id.to_owned(),
            message,
        }),
        None if status == Some(403) => Error::Kms(KmsError::AccessDenied {
            key_id: key_id.to_owned(),
            message: "HTTP 403 Forbidden".to_owned(),
        }),
        Some(
            c @ ("NotFoundException"
            | "DisabledException"
            | "KMSInvalidStateException"
            | "InvalidKeyUsageException"
            | "KeyUnavailableException"),
        ) => Error::Kms(KmsError::KeyUnavailable {
            key_id: key_id.to_owned(),
            code: c.to_owned(),
            message,
        }),
        _ => Error::Api {
            operation: "GenerateDataKey",
            code: code.map(str::to_owned),
            message,
        },
    }
}

/// The KMS calls of encrypted sessions.
#[derive(Clone, Debug)]
pub struct KmsApi {
    client: aws_sdk_kms::Client,
}

impl KmsApi {
    /// A client from loaded configuration, with an optional endpoint override, checked as
    /// [`service_endpoint`] describes.
    pub fn new(config: &SdkConfig, endpoint_url: Option<&str>) -> Result<Self> {
        let mut b = aws_sdk_kms::config::Builder::from(config);
        if let Some(url) = service_endpoint(config, "KMS", endpoint_url)? {
            b = b.endpoint_url(url);
        }
        Ok(Self {
            client: aws_sdk_kms::Client::from_conf(b.build()),
        })
    }

    /// `GenerateDataKey` of 64 bytes for `request`.
    pub async fn generate_data_key(&self, request: &DataKeyRequest) -> Result<DataKey> {
        let mut call = self
            .client
            .generate_data_key()
            .key_id(&request.key_id)
            .number_of_bytes(ssm_proto::crypto::DATA_KEY_BYTES as i32);
        for (k, v) in request.context() {
            call = call.encryption_context(k, v);
        }
        let out = call.send().await.map_err(|e| {
            let status = e.raw_response().map(|r| r.status().as_u16());
            match api_error("GenerateDataKey", e) {
                Error::Api { code, message, .. } => classify(&request.key_id, code.as_deref(), status, message),
                other => other,
            }
        })?;
        let plaintext = Zeroizing::new(out.plaintext.map(Blob::into_inner).unwrap_or_default());
        let ciphertext = out.ciphertext_blob.map(Blob::into_inner).unwrap_or_default();
        if plaintext.len() != ssm_proto::crypto::DATA_KEY_BYTES || ciphertext.is_empty() {
            return Err(Error::Api {
                operation: "GenerateDataKey",
                code: None,
                message: format!(
                    "KMS returned {} plaintext bytes (64 asked for) and {} ciphertext bytes",
                    plaintext.len(),
                    ciphertext.len()
                ),
            });
        }
        Ok(DataKey { plaintext, ciphertext })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ErrorKind;

    #[test]
    fn the_context_is_the_agents() {
        let mut r = DataKeyRequest {
            key_id: "k".into(),
            session_id: "s-1".into(),
            target_id: "i-1".into(),
            challenge: None,
        };
        assert_eq!(
            r.context(),
            HashMap::from([
                ("aws:ssm:SessionId".to_owned(), "s-1".to_owned()),
                ("aws:ssm:TargetId".to_owned(), "i-1".to_owned())
            ])
        );
        r.challenge = Some("Y2g=".into());
        assert_eq!(r.context()["aws:ssm:RandomChallenge"], "Y2g=");
    }

    #[test]
    fn service_errors_are_told_apart() {
        let kind = |code: &str| classify("k", Some(code), Some(400), "m".into()).kind();
        assert_eq!(kind("AccessDeniedException"), ErrorKind::KmsAccessDenied);
        assert_eq!(
            classify("k", None, Some(403), "m".into()).kind(),
            ErrorKind::KmsAccessDenied
        );
        assert_eq!(classify("k", None, Some(500), "m".into()).kind(), ErrorKind::Api);
        for code in ["NotFoundException", "DisabledException", "KMSInvalidStateException"] {
            assert_eq!(kind(code), ErrorKind::KmsKeyUnavailable, "{code}");
        }
        assert_eq!(kind("ThrottlingException"), ErrorKind::Api);
        assert_eq!(classify("k", None, None, "m".into()).kind(), ErrorKind::Api);
        let text = classify(
            "alias/ssm",
            Some("DisabledException"),
            Some(400),
            "key is disabled".into(),
        )
        .to_string();
        assert!(
            text.contains("alias/ssm") && text.contains("DisabledException") && text.contains("enabled"),
            "{text}"
        );
    }
}
