//! Deterministic seed mixing and UID derivation.
//!
//! Everything random in this crate flows from the user's seed through these functions, so the same
//! seed always produces the same bytes. The mixing is not cryptographic; it only has to spread
//! labels and seeds well enough that distinct objects never share a UID in practice.

/// One step of SplitMix64 (Steele, Lea, Flood 2014): a bijective, well-mixing 64-bit finaliser.
pub(crate) fn splitmix64(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Mixes a seed with a textual label into a new 64-bit seed.
pub(crate) fn mix(seed: u64, label: &str) -> u64 {
    let mut h = splitmix64(seed ^ 0x5645_5341_4C49_5553); // "VESALIUS"
    for &b in label.as_bytes() {
        h = splitmix64(h ^ u64::from(b));
    }
    splitmix64(h ^ label.len() as u64)
}

/// A 128-bit hash of `(seed, label)`, built from two independently keyed 64-bit lanes.
pub(crate) fn hash128(seed: u64, label: &str) -> u128 {
    let hi = mix(seed, label);
    let lo = mix(seed ^ 0xA5A5_A5A5_A5A5_A5A5, label);
    (u128::from(hi) << 64) | u128::from(lo)
}

/// A DICOM UID under the `2.25` root (PS3.5 B.2): the decimal form of a 128-bit value.
///
/// The value is shaped like an RFC 9562 version-8 ("custom") UUID so that tools which convert
/// `2.25` UIDs back to UUIDs see a well-formed one. The result is at most 44 characters, has no
/// leading zeros in any component and therefore satisfies the 64-character UI limit.
pub(crate) fn uid(seed: u64, label: &str) -> String {
    let mut v = hash128(seed, label);
    v = (v & !(0xF_u128 << 76)) | (0x8_u128 << 76); // version 8
    v = (v & !(0x3_u128 << 62)) | (0x2_u128 << 62); // RFC variant `10`
    format!("2.25.{v}")
}

/// A decimal string of `digits` digits (leading zeros allowed) derived from `(seed, label)`.
pub(crate) fn digits(seed: u64, label: &str, digits: u32) -> String {
    let modulus = 10_u64.pow(digits);
    format!(
        "{:0width$}",
        mix(seed, label) % modulus,
        width = digits as usize
    )
}

/// Picks an element of `items` deterministically from `(seed, label)`.
pub(crate) fn pick<'a, T>(seed: u64, label: &str, items: &'a [T]) -> &'a T {
    &items[(mix(seed, label) % items.len() as u64) as usize]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uids_are_valid_and_distinct() {
        let a = uid(1, "study");
        let b = uid(1, "series");
        let c = uid(2, "study");
        assert_ne!(a, b);
        assert_ne!(a, c);
        assert_eq!(a, uid(1, "study"));
        for u in [&a, &b, &c] {
            assert!(u.len() <= 64, "{u}");
            assert!(u.starts_with("2.25."));
            let last = &u[5..];
            assert!(last.bytes().all(|b| b.is_ascii_digit()));
            assert!(!last.starts_with('0'));
        }
    }

    #[test]
    fn digits_have_fixed_width() {
        for s in 0..50 {
            assert_eq!(digits(s, "x", 8).len(), 8);
        }
    }
}
