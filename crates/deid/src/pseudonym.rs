//! Keyed pseudonyms: everything that replaces an identifier is an HMAC-SHA256 of the original
//! under the project key, so it is deterministic per key and unlinkable without it.
//!
//! | What | HMAC input | Output |
//! |---|---|---|
//! | UID (action U) | the UID, trailing padding removed | `2.25.` + decimal of the first 16 bytes as a version-8 UUID (PS3.5 B.2, RFC 9562) |
//! | Patient ID and Name | `vesalius-deid:patient\0` + patient identity | `{prefix}-` + 20 upper-case hex digits |
//! | AE title (action C) | `vesalius-deid:ae\0` + AE title | `DEID` + 12 upper-case hex digits |
//! | Date shift | `vesalius-deid:date-shift\0` + patient identity | 1..=max days back |
//!
//! The patient identity is Issuer of Patient ID + `\` + Patient ID, or, when the Patient ID
//! is empty, `name:` + Patient's Name + `\` + Patient's Birth Date.

use hmac::{Hmac, Mac};
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

/// The DICOM UID root of well-known UIDs (SOP classes, transfer syntaxes, coding schemes,
/// the Talairach frame of reference…): structural, never replaced (PS3.15 E.3.9 note 4).
pub const WELL_KNOWN_ROOT: &str = "1.2.840.10008.";

fn mac(key: &[u8], parts: &[&[u8]]) -> [u8; 32] {
    // HMAC accepts keys of any length; `new_from_slice` cannot fail for HMAC.
    let mut m = HmacSha256::new_from_slice(key).expect("HMAC takes keys of any length");
    for p in parts {
        m.update(p);
    }
    m.finalize().into_bytes().into()
}

fn hex_upper(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02X}")).collect()
}

/// The UID that replaces `uid` under `key`: `2.25.` followed by the decimal value of a
/// version-8 (custom) UUID whose other 122 bits are the first bytes of HMAC-SHA256(key, uid).
/// At most 44 characters. Well-known UIDs (under `1.2.840.10008.`) and empty values are
/// returned unchanged.
pub fn pseudonymous_uid(key: &[u8], uid: &str) -> String {
    let uid = uid.trim_end_matches(['\0', ' ']).trim_start();
    if uid.is_empty() || uid.starts_with(WELL_KNOWN_ROOT) {
        return uid.to_string();
    }
    let h = mac(key, &[uid.as_bytes()]);
    let mut b = [0u8; 16];
    b.copy_from_slice(&h[..16]);
    // RFC 9562: version 8 in the high nibble of octet 6, variant 10 in the top bits of octet 8.
    b[6] = (b[6] & 0x0F) | 0x80;
    b[8] = (b[8] & 0x3F) | 0x80;
    format!("2.25.{}", u128::from_be_bytes(b))
}

/// The pseudonym of a patient: `{prefix}-{20 hex digits}`.
pub(crate) fn patient_pseudonym(key: &[u8], prefix: &str, identity: &str) -> String {
    let h = mac(key, &[b"vesalius-deid:patient\0", identity.as_bytes()]);
    if prefix.is_empty() {
        hex_upper(&h[..10])
    } else {
        format!("{prefix}-{}", hex_upper(&h[..10]))
    }
}

/// The AE title that replaces `ae` (16 characters, the AE maximum).
pub(crate) fn ae_pseudonym(key: &[u8], ae: &str) -> String {
    let h = mac(key, &[b"vesalius-deid:ae\0", ae.trim().as_bytes()]);
    format!("DEID{}", hex_upper(&h[..6]))
}

/// The number of days (negative: into the past) every date of the patient moves.
pub(crate) fn date_shift_days(key: &[u8], identity: &str, max_days: u32) -> i64 {
    let h = mac(key, &[b"vesalius-deid:date-shift\0", identity.as_bytes()]);
    let mut b = [0u8; 8];
    b.copy_from_slice(&h[..8]);
    -(1 + (u64::from_be_bytes(b) % u64::from(max_days.max(1))) as i64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uids_are_deterministic_keyed_and_valid() {
        let a = pseudonymous_uid(b"k1", "1.2.3.4");
        assert_eq!(a, pseudonymous_uid(b"k1", "1.2.3.4\0"));
        assert_ne!(a, pseudonymous_uid(b"k2", "1.2.3.4"));
        assert_ne!(a, pseudonymous_uid(b"k1", "1.2.3.5"));
        assert!(a.starts_with("2.25.") && a.len() <= 64, "{a}");
        let n: u128 = a[5..].parse().unwrap();
        assert_eq!((n >> 76) & 0xF, 8, "UUID version 8");
        assert_eq!((n >> 62) & 0x3, 2, "RFC variant");
        assert!(!a[5..].starts_with('0'));
    }

    #[test]
    fn well_known_uids_stay() {
        let ct = "1.2.840.10008.5.1.4.1.1.2";
        assert_eq!(pseudonymous_uid(b"k", ct), ct);
        assert_eq!(pseudonymous_uid(b"k", ""), "");
    }

    #[test]
    fn other_pseudonyms_fit_their_vr() {
        let p = patient_pseudonym(b"k", "ANON", "\\PAT1");
        assert_eq!(p.len(), 25);
        assert!(p.starts_with("ANON-"));
        assert_eq!(ae_pseudonym(b"k", "CT01 ").len(), 16);
        assert_eq!(ae_pseudonym(b"k", "CT01"), ae_pseudonym(b"k", "CT01 "));
        for id in ["a", "b", "c", "d"] {
            let d = date_shift_days(b"k", id, 30);
            assert!((-30..=-1).contains(&d), "{d}");
        }
        assert_eq!(
            date_shift_days(b"k", "a", 30),
            date_shift_days(b"k", "a", 30)
        );
    }
}
