//! KMS session encryption (§5.6): AES-256-GCM under the two halves of a 64-byte KMS data key,
//! for both ends.
//!
//! Wire format of an encrypted payload: `nonce (12) || ciphertext || tag (16)`, no associated
//! data. Bytes 0..32 of the data key are the agent→client key, bytes 32..64 the client→agent
//! key (agent/session/crypto/blockcipher.go UpdateEncryptionKey). Nonces come from the caller:
//! the client draws a random one per message; the agent counts ([`AgentNonces`]). Keys are
//! zeroised when a [`SessionCipher`] is dropped (the `zeroize` features of `aes` and `ghash`).

use aes_gcm::aead::{Aead, KeyInit};
use aes_gcm::{Aes256Gcm, Nonce};
use zeroize::Zeroizing;

use crate::PayloadType;

/// Bytes of the KMS data key a session is encrypted with (`NumberOfBytes` of GenerateDataKey).
pub const DATA_KEY_BYTES: usize = 64;
/// Bytes of a GCM nonce, at the start of every encrypted payload.
pub const NONCE_BYTES: usize = 12;
/// Bytes of the GCM tag, at the end of every encrypted payload.
pub const TAG_BYTES: usize = 16;
/// Bytes of the random plaintext the agent encrypts as its challenge (datachannel.go
/// sendEncryptionChallenge).
pub const CHALLENGE_BYTES: usize = 64;

/// Which end a [`SessionCipher`] works for: it seals with its own direction's key and opens
/// with the other's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// The client (plugin, SSMConnect): seals with bytes 32..64, opens with bytes 0..32.
    Client,
    /// The agent: seals with bytes 0..32, opens with bytes 32..64.
    Agent,
}

/// Why encryption could not be set up or a payload not opened.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CryptoError {
    /// The data key is not 64 bytes.
    #[error("the KMS data key has {0} bytes, not 64")]
    KeyLength(usize),
    /// The payload is shorter than a nonce and a tag.
    #[error("an encrypted payload of {0} bytes is shorter than its nonce and tag")]
    Short(usize),
    /// The tag did not verify: the payload was altered or sealed under another key.
    #[error("an encrypted payload failed authentication (altered, or sealed under another key)")]
    Authentication,
}

/// The two AES-256-GCM keys of an encrypted session, seen from one [`Side`].
pub struct SessionCipher {
    seal: Aes256Gcm,
    open: Aes256Gcm,
}

impl std::fmt::Debug for SessionCipher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SessionCipher { .. }")
    }
}

impl SessionCipher {
    /// The ciphers of `side` from the 64-byte plaintext data key.
    pub fn new(side: Side, data_key: &[u8]) -> Result<Self, CryptoError> {
        if data_key.len() != DATA_KEY_BYTES {
            return Err(CryptoError::KeyLength(data_key.len()));
        }
        let (to_client, to_agent) = data_key.split_at(DATA_KEY_BYTES / 2);
        let cipher = |k: &[u8]| Aes256Gcm::new_from_slice(k).map_err(|_| CryptoError::KeyLength(data_key.len()));
        let (seal, open) = match side {
            Side::Client => (cipher(to_agent)?, cipher(to_client)?),
            Side::Agent => (cipher(to_client)?, cipher(to_agent)?),
        };
        Ok(Self { seal, open })
    }

    /// `nonce || ciphertext || tag` of `plaintext`. The nonce must never repeat under one key.
    pub fn seal(&self, nonce: [u8; NONCE_BYTES], plaintext: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(NONCE_BYTES + plaintext.len() + TAG_BYTES);
        out.extend_from_slice(&nonce);
        // Encryption fails only for plaintexts beyond GCM's 64 GiB limit, far above any payload.
        if let Ok(sealed) = self.seal.encrypt(Nonce::from_slice(&nonce), plaintext) {
            out.extend_from_slice(&sealed);
        }
        out
    }

    /// The plaintext of a payload sealed by the other side.
    pub fn open(&self, payload: &[u8]) -> Result<Vec<u8>, CryptoError> {
        if payload.len() < NONCE_BYTES + TAG_BYTES {
            return Err(CryptoError::Short(payload.len()));
        }
        let (nonce, sealed) = payload.split_at(NONCE_BYTES);
        self.open
            .decrypt(Nonce::from_slice(nonce), sealed)
            .map_err(|_| CryptoError::Authentication)
    }

    /// [`SessionCipher::open`] into a buffer that is wiped when dropped (for key material such
    /// as the challenge).
    pub fn open_secret(&self, payload: &[u8]) -> Result<Zeroizing<Vec<u8>>, CryptoError> {
        self.open(payload).map(Zeroizing::new)
    }
}

/// Whether a payload of `payload_type` sent by `sender` travels encrypted once the handshake
/// has set up encryption (§5.6): keystrokes (type 1) from the client; output, stderr and the
/// exit code (types 1, 11, 12) from the agent (datachannel.go SendStreamDataMessage and
/// processStreamDataMessage).
pub fn is_encrypted(sender: Side, payload_type: PayloadType) -> bool {
    match sender {
        Side::Client => payload_type == PayloadType::Output,
        Side::Agent => matches!(
            payload_type,
            PayloadType::Output | PayloadType::StdErr | PayloadType::ExitCode
        ),
    }
}

/// The agent's nonces: a 96-bit counter held as three little-endian u32 words, starting from a
/// random value, written little-endian and incremented with carry from word 0 after each use
/// (agent/session/crypto/nonce.go).
#[derive(Debug, Clone)]
pub struct AgentNonces {
    state: [u32; 3],
}

impl AgentNonces {
    /// A counter starting at `initial` (random in the agent).
    pub fn new(initial: [u32; 3]) -> Self {
        Self { state: initial }
    }

    /// The next nonce.
    pub fn next_nonce(&mut self) -> [u8; NONCE_BYTES] {
        let mut out = [0u8; NONCE_BYTES];
        for (chunk, word) in out.chunks_exact_mut(4).zip(self.state) {
            chunk.copy_from_slice(&word.to_le_bytes());
        }
        for word in &mut self.state {
            *word = word.wrapping_add(1);
            if *word != 0 {
                break;
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data_key() -> Vec<u8> {
        (0u8..64).collect()
    }

    fn nonce() -> [u8; 12] {
        std::array::from_fn(|i| 0xa0 + i as u8)
    }

    #[test]
    fn sealing_matches_the_vectors_of_the_protocol_notes() {
        // §5.6 test vectors: `hello` under each half of the key 0x00..0x3f with nonce a0..ab.
        let client = SessionCipher::new(Side::Client, &data_key()).unwrap();
        assert_eq!(
            hex::encode(client.seal(nonce(), b"hello")),
            "a0a1a2a3a4a5a6a7a8a9aaab1659c858ab7deaefe99d3e7855cb5ab5dfc6a5fa41"
        );
        let agent = SessionCipher::new(Side::Agent, &data_key()).unwrap();
        assert_eq!(
            hex::encode(agent.seal(nonce(), b"hello")),
            "a0a1a2a3a4a5a6a7a8a9aaab8e7d10412ab469edeb6fa84bae4731a07dbf70c564"
        );
    }

    #[test]
    fn each_side_opens_what_the_other_sealed_and_nothing_altered() {
        let client = SessionCipher::new(Side::Client, &data_key()).unwrap();
        let agent = SessionCipher::new(Side::Agent, &data_key()).unwrap();
        let up = client.seal(nonce(), b"keystrokes");
        assert_eq!(agent.open(&up).unwrap(), b"keystrokes");
        let down = agent.seal(nonce(), b"output");
        assert_eq!(client.open(&down).unwrap(), b"output");
        // A side cannot open its own direction: the keys differ.
        assert_eq!(client.open(&up), Err(CryptoError::Authentication));
        for i in 0..down.len() {
            let mut altered = down.clone();
            altered[i] ^= 0x01;
            assert_eq!(client.open(&altered), Err(CryptoError::Authentication), "byte {i}");
        }
        assert_eq!(client.open(&down[..27]), Err(CryptoError::Short(27)));
        assert_eq!(client.open(&[]), Err(CryptoError::Short(0)));
        let other: Vec<u8> = (64u8..128).collect();
        let stranger = SessionCipher::new(Side::Client, &other).unwrap();
        assert_eq!(stranger.open(&down), Err(CryptoError::Authentication));
    }

    #[test]
    fn keys_must_be_64_bytes() {
        assert_eq!(
            SessionCipher::new(Side::Client, &[0; 32]).unwrap_err(),
            CryptoError::KeyLength(32)
        );
    }

    #[test]
    fn agent_nonces_count_little_endian_with_carry() {
        let mut n = AgentNonces::new([0xffff_ffff, 1, 0]);
        assert_eq!(hex::encode(n.next_nonce()), "ffffffff0100000000000000");
        assert_eq!(hex::encode(n.next_nonce()), "000000000200000000000000");
        let mut wrap = AgentNonces::new([u32::MAX; 3]);
        wrap.next_nonce();
        assert_eq!(wrap.next_nonce(), [0; 12]);
    }

    #[test]
    fn what_travels_encrypted() {
        assert!(is_encrypted(Side::Client, PayloadType::Output));
        assert!(!is_encrypted(Side::Client, PayloadType::Size));
        assert!(!is_encrypted(Side::Client, PayloadType::EncChallengeResponse));
        for t in [PayloadType::Output, PayloadType::StdErr, PayloadType::ExitCode] {
            assert!(is_encrypted(Side::Agent, t));
        }
        assert!(!is_encrypted(Side::Agent, PayloadType::HandshakeComplete));
        assert!(!is_encrypted(Side::Agent, PayloadType::Flag));
    }
}
