//! The format of a token entry in Redis (ADR 0008).
//!
//! Every entry is ASCII text starting with a version tag:
//!
//! - `v1:aes256gcm:` + base64(nonce (12 bytes) ‖ ciphertext ‖ tag (16 bytes)),
//!   AES-256-GCM with a random nonce per entry and the entry's Redis key as
//!   associated data (an entry copied under another key fails authentication);
//! - `v1:plain:` + the JSON itself, only when encryption is explicitly
//!   disabled (`CacheEncryptionKey: "none"`).
//!
//! The plaintext is the JSON object `{"token": "…", "expires_at_unix": N}`.
//! A store with a key accepts only encrypted entries (a clear entry written
//! by someone with access to Redis is not a way around the encryption), and
//! a store without one only clear entries.

use super::EncryptionKey;
use crate::secret::Secret;
use aes_gcm::aead::{Aead, Payload};
use aes_gcm::{Aes256Gcm, KeyInit, Nonce};
use base64::Engine as _;
use rand::RngCore;
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

const ENCRYPTED_TAG: &str = "v1:aes256gcm:";
const PLAIN_TAG: &str = "v1:plain:";
const NONCE_LEN: usize = 12;
const TAG_LEN: usize = 16;

/// Why an entry read from Redis was not used (logged; the caller refetches).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Rejection {
    /// Not a format this version knows (or not text).
    UnknownFormat,
    /// Too short, bad base64, or the AEAD tag did not verify: tampered with,
    /// truncated, written with another key or under another Redis key.
    Unauthentic,
    /// A clear entry while encryption is on.
    NotEncrypted,
    /// An encrypted entry while encryption is off.
    Encrypted,
    /// Authentic (or clear) but not the expected JSON.
    BadContent,
}

impl Rejection {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Rejection::UnknownFormat => "unknown entry format",
            Rejection::Unauthentic => {
                "entry failed authentication (tampered with, truncated, written with another key or under another name)"
            }
            Rejection::NotEncrypted => "entry is stored in clear but CacheEncryptionKey is set",
            Rejection::Encrypted => "entry is encrypted but CacheEncryptionKey is \"none\"",
            Rejection::BadContent => "entry content is not a token record",
        }
    }
}

#[derive(Serialize)]
struct RecordRef<'a> {
    token: &'a str,
    expires_at_unix: u64,
}

#[derive(Deserialize)]
struct Record {
    token: String,
    expires_at_unix: u64,
}

/// Encrypts (or, without a cipher, only versions) token entries.
pub(crate) struct Codec {
    cipher: Option<Aes256Gcm>,
}

impl Codec {
    pub(crate) fn new(key: Option<&EncryptionKey>) -> Codec {
        Codec {
            cipher: key.map(|k| Aes256Gcm::new(k.bytes().into())),
        }
    }

    pub(crate) fn encrypts(&self) -> bool {
        self.cipher.is_some()
    }

    /// The stored form of a token under the Redis key `aad`.
    pub(crate) fn encode(&self, aad: &str, token: &Secret, expires_at_unix: u64) -> String {
        let json = Zeroizing::new(
            serde_json::to_vec(&RecordRef {
                token: token.expose(),
                expires_at_unix,
            })
            .expect("a struct of a string and a number serializes"),
        );
        let Some(cipher) = &self.cipher else {
            let text = std::str::from_utf8(&json).expect("serde_json writes UTF-8");
            return format!("{PLAIN_TAG}{text}");
        };
        let mut nonce = [0u8; NONCE_LEN];
        rand::rng().fill_bytes(&mut nonce);
        let sealed = cipher
            .encrypt(
                &Nonce::from(nonce),
                Payload {
                    msg: &json,
                    aad: aad.as_bytes(),
                },
            )
            .expect("AES-GCM encrypts any message shorter than 64 GiB");
        let mut blob = Vec::with_capacity(NONCE_LEN + sealed.len());
        blob.extend_from_slice(&nonce);
        blob.extend_from_slice(&sealed);
        format!(
            "{ENCRYPTED_TAG}{}",
            base64::engine::general_purpose::STANDARD.encode(blob)
        )
    }

    /// The token and its expiry from a stored entry read under the Redis key `aad`.
    pub(crate) fn decode(&self, aad: &str, stored: &[u8]) -> Result<(Secret, u64), Rejection> {
        let json: Zeroizing<Vec<u8>> =
            if let Some(rest) = stored.strip_prefix(ENCRYPTED_TAG.as_bytes()) {
                let cipher = self.cipher.as_ref().ok_or(Rejection::Encrypted)?;
                let blob = base64::engine::general_purpose::STANDARD
                    .decode(rest)
                    .map_err(|_| Rejection::Unauthentic)?;
                if blob.len() < NONCE_LEN + TAG_LEN {
                    return Err(Rejection::Unauthentic);
                }
                let (nonce, sealed) = blob.split_at(NONCE_LEN);
                let nonce: [u8; NONCE_LEN] = nonce.try_into().expect("split at NONCE_LEN");
                Zeroizing::new(
                    cipher
                        .decrypt(
                            &Nonce::from(nonce),
                            Payload {
                                msg: sealed,
                                aad: aad.as_bytes(),
                            },
                        )
                        .map_err(|_| Rejection::Unauthentic)?,
                )
            } else if let Some(rest) = stored.strip_prefix(PLAIN_TAG.as_bytes()) {
                if self.cipher.is_some() {
                    return Err(Rejection::NotEncrypted);
                }
                Zeroizing::new(rest.to_vec())
            } else {
                return Err(Rejection::UnknownFormat);
            };
        let record: Record = serde_json::from_slice(&json).map_err(|_| Rejection::BadContent)?;
        if record.token.is_empty() {
            return Err(Rejection::BadContent);
        }
        Ok((Secret::new(record.token), record.expires_at_unix))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TOKEN: &str = "eyJ.header.payload-AT-codec-1234";

    fn key(byte: u8) -> EncryptionKey {
        EncryptionKey::from_bytes([byte; 32])
    }

    #[test]
    fn round_trip_encrypted_hides_the_token() {
        let codec = Codec::new(Some(&key(7)));
        let stored = codec.encode("p:token:a", &Secret::new(TOKEN), 1_900_000_000);
        assert!(stored.starts_with(ENCRYPTED_TAG));
        assert!(!stored.contains(TOKEN) && !stored.contains("AT-codec"));
        let (token, exp) = codec.decode("p:token:a", stored.as_bytes()).unwrap();
        assert_eq!(token.expose(), TOKEN);
        assert_eq!(exp, 1_900_000_000);
        // A fresh nonce each time.
        let again = codec.encode("p:token:a", &Secret::new(TOKEN), 1_900_000_000);
        assert_ne!(stored, again);
    }

    #[test]
    fn rejects_other_key_other_name_tampering_and_truncation() {
        let codec = Codec::new(Some(&key(7)));
        let stored = codec.encode("p:token:a", &Secret::new(TOKEN), 1);
        let other = Codec::new(Some(&key(8)));
        assert_eq!(
            other.decode("p:token:a", stored.as_bytes()).unwrap_err(),
            Rejection::Unauthentic
        );
        assert_eq!(
            codec.decode("p:token:b", stored.as_bytes()).unwrap_err(),
            Rejection::Unauthentic
        );
        // Flip one bit in each byte of the decoded blob in turn.
        let blob = base64::engine::general_purpose::STANDARD
            .decode(&stored[ENCRYPTED_TAG.len()..])
            .unwrap();
        for i in 0..blob.len() {
            let mut bad = blob.clone();
            bad[i] ^= 0x01;
            let text = format!(
                "{ENCRYPTED_TAG}{}",
                base64::engine::general_purpose::STANDARD.encode(&bad)
            );
            assert_eq!(
                codec.decode("p:token:a", text.as_bytes()).unwrap_err(),
                Rejection::Unauthentic,
                "byte {i}"
            );
        }
        for len in 0..stored.len() {
            assert!(codec
                .decode("p:token:a", &stored.as_bytes()[..len])
                .is_err());
        }
        assert_eq!(
            codec.decode("p:token:a", b"\xff\xfe garbage").unwrap_err(),
            Rejection::UnknownFormat
        );
    }

    #[test]
    fn clear_entries_only_without_a_key() {
        let clear = Codec::new(None);
        let stored = clear.encode("k", &Secret::new(TOKEN), 5);
        assert_eq!(
            stored,
            format!("v1:plain:{{\"token\":\"{TOKEN}\",\"expires_at_unix\":5}}")
        );
        assert_eq!(clear.decode("k", stored.as_bytes()).unwrap().1, 5);
        let encrypted = Codec::new(Some(&key(1)));
        assert_eq!(
            encrypted.decode("k", stored.as_bytes()).unwrap_err(),
            Rejection::NotEncrypted
        );
        let sealed = encrypted.encode("k", &Secret::new(TOKEN), 5);
        assert_eq!(
            clear.decode("k", sealed.as_bytes()).unwrap_err(),
            Rejection::Encrypted
        );
        assert_eq!(
            clear
                .decode("k", b"v1:plain:{\"token\":\"\",\"expires_at_unix\":5}")
                .unwrap_err(),
            Rejection::BadContent
        );
        assert_eq!(
            clear.decode("k", b"v1:plain:[1]").unwrap_err(),
            Rejection::BadContent
        );
    }
}
