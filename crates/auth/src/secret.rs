//! Random secrets, SHA-256 and constant-time comparison.
//!
//! Every secret handed out (session cookies, API tokens, link tokens, the setup token, CSRF
//! tokens) is 32 bytes from the operating system's CSPRNG, written as unpadded base64url (43
//! characters). Only `sha256_hex` of a secret is ever stored: a secret has 256 bits of entropy,
//! so a fast hash is enough (passwords, which have little entropy, use argon2id instead, see
//! [`crate::password`]). Comparisons of secrets and hashes go through [`constant_time_eq`] so
//! that response timing does not reveal how many leading characters matched.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use rand::rngs::OsRng;
use rand::{Rng, RngCore};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// Bytes of entropy in every generated secret.
pub const SECRET_BYTES: usize = 32;

/// A fresh random secret: 32 bytes from the OS CSPRNG, unpadded base64url (43 characters).
pub fn random_secret() -> String {
    let mut bytes = [0u8; SECRET_BYTES];
    OsRng.fill_bytes(&mut bytes);
    URL_SAFE_NO_PAD.encode(bytes)
}

/// A random identifier of `len` lowercase letters and digits (public ids of tokens and links;
/// not secret, but unguessable enough not to enumerate).
pub fn random_id(len: usize) -> String {
    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
    let mut rng = OsRng;
    (0..len)
        .map(|_| ALPHABET[rng.gen_range(0..ALPHABET.len())] as char)
        .collect()
}

/// SHA-256 of `data`, lowercase hex: how secrets are stored (`*_hash` fields of the directory).
pub fn sha256_hex(data: impl AsRef<[u8]>) -> String {
    hex::encode(Sha256::digest(data.as_ref()))
}

/// Whether `a == b`, in time that depends only on the lengths (lengths are not secret here:
/// every compared value has a fixed, public length).
pub fn constant_time_eq(a: impl AsRef<[u8]>, b: impl AsRef<[u8]>) -> bool {
    a.as_ref().ct_eq(b.as_ref()).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_long_distinct_and_url_safe() {
        let a = random_secret();
        let b = random_secret();
        assert_eq!(a.len(), 43);
        assert_ne!(a, b);
        assert!(
            a.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        );
        assert_eq!(URL_SAFE_NO_PAD.decode(&a).unwrap().len(), SECRET_BYTES);
    }

    #[test]
    fn ids_use_the_alphabet() {
        let id = random_id(12);
        assert_eq!(id.len(), 12);
        assert!(
            id.chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
        );
    }

    #[test]
    fn sha256_known_answer() {
        assert_eq!(
            sha256_hex("abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn constant_time_comparison() {
        assert!(constant_time_eq("abc", "abc"));
        assert!(!constant_time_eq("abc", "abd"));
        assert!(!constant_time_eq("abc", "ab"));
        assert!(constant_time_eq("", ""));
    }
}
