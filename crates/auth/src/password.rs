//! Password hashing (argon2id) and the password policy.
//!
//! Hashes are PHC strings (`$argon2id$v=19$m=19456,t=2,p=1$salt$hash`) made with the OWASP
//! Password Storage Cheat Sheet's argon2id parameters: 19 MiB of memory, 2 passes, 1 lane.
//! The parameters are part of each string, so raising them later still verifies old hashes
//! ([`needs_rehash`] tells when to upgrade one at the next successful login).
//!
//! The policy is deliberately minimal (NIST SP 800-63B 5.1.1.2: length over composition rules):
//! at least [`MIN_LEN`] characters, at most [`MAX_LEN`] bytes (argon2 input is unbounded, a
//! hostile megabyte "password" is not), and not the username.

use argon2::password_hash::rand_core::OsRng;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};

use crate::error::{Error, Result};

/// Fewest characters a password may have.
pub const MIN_LEN: usize = 12;
/// Most bytes a password may have.
pub const MAX_LEN: usize = 1024;

/// argon2id cost parameters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PasswordParams {
    /// Memory in KiB.
    pub m_cost: u32,
    /// Passes.
    pub t_cost: u32,
    /// Lanes.
    pub p_cost: u32,
}

impl PasswordParams {
    /// OWASP's recommendation: m = 19456 KiB, t = 2, p = 1.
    pub const OWASP: PasswordParams = PasswordParams {
        m_cost: 19_456,
        t_cost: 2,
        p_cost: 1,
    };

    /// Cheap parameters for tests only (hashes made with them are weak).
    pub const INSECURE_FOR_TESTS: PasswordParams = PasswordParams {
        m_cost: 64,
        t_cost: 1,
        p_cost: 1,
    };

    fn argon2(self) -> Result<Argon2<'static>> {
        let params = Params::new(self.m_cost, self.t_cost, self.p_cost, None)
            .map_err(|e| Error::Hash(e.to_string()))?;
        Ok(Argon2::new(Algorithm::Argon2id, Version::V0x13, params))
    }
}

impl Default for PasswordParams {
    fn default() -> Self {
        PasswordParams::OWASP
    }
}

/// Hashes a password with argon2id and a fresh random salt; returns the PHC string.
pub fn hash(password: &str, params: PasswordParams) -> Result<String> {
    let salt = SaltString::generate(&mut OsRng);
    params
        .argon2()?
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| Error::Hash(e.to_string()))
}

/// Whether `password` matches the PHC string `phc` (with the parameters recorded in it).
/// A malformed or non-argon2id hash never matches.
pub fn verify(password: &str, phc: &str) -> bool {
    if password.len() > MAX_LEN {
        return false;
    }
    let Ok(parsed) = PasswordHash::new(phc) else {
        return false;
    };
    if parsed.algorithm.as_str() != "argon2id" {
        return false;
    }
    Argon2::default()
        .verify_password(password.as_bytes(), &parsed)
        .is_ok()
}

/// Spends the time of one verification without a stored hash, so that a login for an unknown
/// user takes as long as one with a wrong password (no username probing by timing).
pub fn dummy_verify(password: &str, params: PasswordParams) {
    // A fixed salt is fine: the result is thrown away.
    if let (Ok(a), Ok(salt)) = (params.argon2(), SaltString::from_b64("dmVzYWxpdXNkdW1teQ")) {
        let _ = a.hash_password(password.as_bytes(), &salt);
    }
}

/// Whether a stored hash was made with other parameters than `params` (rehash it at the next
/// successful login).
pub fn needs_rehash(phc: &str, params: PasswordParams) -> bool {
    let Ok(parsed) = PasswordHash::new(phc) else {
        return true;
    };
    let Ok(p) = Params::try_from(&parsed) else {
        return true;
    };
    parsed.algorithm.as_str() != "argon2id"
        || (p.m_cost(), p.t_cost(), p.p_cost()) != (params.m_cost, params.t_cost, params.p_cost)
}

/// Checks a new password against the policy: at least [`MIN_LEN`] characters, at most
/// [`MAX_LEN`] bytes, not the username (ignoring case and surrounding spaces).
pub fn check_policy(password: &str, username: &str) -> Result<()> {
    if password.chars().count() < MIN_LEN {
        return Err(Error::WeakPassword("shorter than 12 characters"));
    }
    if password.len() > MAX_LEN {
        return Err(Error::WeakPassword("longer than 1024 bytes"));
    }
    if password.trim().to_lowercase() == username.trim().to_lowercase() {
        return Err(Error::WeakPassword("equal to the username"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn owasp_hash_round_trip() {
        let h = hash("correct horse battery", PasswordParams::OWASP).unwrap();
        assert!(h.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "{h}");
        assert!(verify("correct horse battery", &h));
        assert!(!verify("correct horse batterY", &h));
        assert!(!needs_rehash(&h, PasswordParams::OWASP));
        assert!(needs_rehash(&h, PasswordParams::INSECURE_FOR_TESTS));
    }

    #[test]
    fn salts_differ() {
        let p = PasswordParams::INSECURE_FOR_TESTS;
        let a = hash("same password here", p).unwrap();
        let b = hash("same password here", p).unwrap();
        assert_ne!(a, b);
        assert!(verify("same password here", &a) && verify("same password here", &b));
    }

    #[test]
    fn malformed_and_foreign_hashes_never_match() {
        assert!(!verify("x", ""));
        assert!(!verify("x", "plaintext"));
        // An argon2i hash (not argon2id) of "password" is refused even if it would verify.
        let a2i = Argon2::new(
            Algorithm::Argon2i,
            Version::V0x13,
            Params::new(64, 1, 1, None).unwrap(),
        )
        .hash_password(b"password", &SaltString::generate(&mut OsRng))
        .unwrap()
        .to_string();
        assert!(!verify("password", &a2i));
        dummy_verify("anything", PasswordParams::INSECURE_FOR_TESTS);
    }

    #[test]
    fn policy() {
        assert!(check_policy("short", "bob").is_err());
        assert!(check_policy("elevenchars", "bob").is_err());
        assert!(check_policy("twelve chars", "bob").is_ok());
        assert!(check_policy("Administrator", "administrator").is_err());
        assert!(check_policy(&"x".repeat(MAX_LEN + 1), "bob").is_err());
        // Characters, not bytes: 12 accented letters pass.
        assert!(check_policy("éééééééééééé", "bob").is_ok());
    }
}
