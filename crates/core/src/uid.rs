//! UIDs: transfer syntaxes (PS3.5 Section 10 and Annex A), storage SOP classes and UID checks.

#[path = "storage_classes.rs"]
mod storage_classes;
pub use storage_classes::STORAGE_SOP_CLASSES;

/// Implicit VR Little Endian, the default transfer syntax (PS3.5 A.1).
pub const IMPLICIT_VR_LE: &str = "1.2.840.10008.1.2";
/// Explicit VR Little Endian (PS3.5 A.2).
pub const EXPLICIT_VR_LE: &str = "1.2.840.10008.1.2.1";
/// Deflated Explicit VR Little Endian (PS3.5 A.5).
pub const DEFLATED_EXPLICIT_VR_LE: &str = "1.2.840.10008.1.2.1.99";
/// Explicit VR Big Endian, retired (PS3.5 A.3).
pub const EXPLICIT_VR_BE: &str = "1.2.840.10008.1.2.2";
/// JPEG Baseline (Process 1).
pub const JPEG_BASELINE: &str = "1.2.840.10008.1.2.4.50";
/// JPEG Extended (Process 2 & 4).
pub const JPEG_EXTENDED: &str = "1.2.840.10008.1.2.4.51";
/// JPEG Lossless, Non-Hierarchical (Process 14).
pub const JPEG_LOSSLESS: &str = "1.2.840.10008.1.2.4.57";
/// JPEG Lossless, Non-Hierarchical, First-Order Prediction (Process 14 SV1).
pub const JPEG_LOSSLESS_SV1: &str = "1.2.840.10008.1.2.4.70";
/// JPEG-LS Lossless.
pub const JPEG_LS_LOSSLESS: &str = "1.2.840.10008.1.2.4.80";
/// JPEG-LS Lossy (Near-Lossless).
pub const JPEG_LS_NEAR_LOSSLESS: &str = "1.2.840.10008.1.2.4.81";
/// JPEG 2000 Lossless Only.
pub const JPEG_2000_LOSSLESS: &str = "1.2.840.10008.1.2.4.90";
/// JPEG 2000.
pub const JPEG_2000: &str = "1.2.840.10008.1.2.4.91";
/// High-Throughput JPEG 2000 Lossless Only.
pub const HTJ2K_LOSSLESS: &str = "1.2.840.10008.1.2.4.201";
/// High-Throughput JPEG 2000 with RPCL Options Lossless Only.
pub const HTJ2K_LOSSLESS_RPCL: &str = "1.2.840.10008.1.2.4.202";
/// High-Throughput JPEG 2000.
pub const HTJ2K: &str = "1.2.840.10008.1.2.4.203";
/// RLE Lossless.
pub const RLE_LOSSLESS: &str = "1.2.840.10008.1.2.5";

/// Every transfer syntax the archive accepts and stores unchanged.
pub const ACCEPTED_TRANSFER_SYNTAXES: &[&str] = &[
    EXPLICIT_VR_LE,
    IMPLICIT_VR_LE,
    DEFLATED_EXPLICIT_VR_LE,
    EXPLICIT_VR_BE,
    JPEG_BASELINE,
    JPEG_EXTENDED,
    JPEG_LOSSLESS,
    JPEG_LOSSLESS_SV1,
    JPEG_LS_LOSSLESS,
    JPEG_LS_NEAR_LOSSLESS,
    JPEG_2000_LOSSLESS,
    JPEG_2000,
    HTJ2K_LOSSLESS,
    HTJ2K_LOSSLESS_RPCL,
    HTJ2K,
    RLE_LOSSLESS,
    "1.2.840.10008.1.2.4.100", // MPEG2 Main Profile / Main Level
    "1.2.840.10008.1.2.4.102", // MPEG-4 AVC/H.264 High Profile
    "1.2.840.10008.1.2.4.110", // JPEG XL Lossless
    "1.2.840.10008.1.2.4.112", // JPEG XL
];

/// How the data set of a transfer syntax is encoded on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Encoding {
    /// VR written explicitly (false: implicit VR, looked up in the dictionary).
    pub explicit_vr: bool,
    /// Big endian byte order (only the retired Explicit VR Big Endian).
    pub big_endian: bool,
    /// Data set deflated (RFC 1951) after the file meta information.
    pub deflated: bool,
    /// Pixel data encapsulated (compressed) per PS3.5 A.4.
    pub encapsulated: bool,
}

/// The encoding of a transfer syntax, or `None` when the UID is not a transfer syntax we know.
/// Unknown UIDs under the DICOM root that look like compressed syntaxes are treated as
/// explicit little endian with encapsulated pixel data, as PS3.5 A.4 requires of them.
pub fn encoding_of(ts: &str) -> Option<Encoding> {
    let ts = trim_uid(ts);
    let plain = Encoding {
        explicit_vr: true,
        big_endian: false,
        deflated: false,
        encapsulated: false,
    };
    Some(match ts {
        IMPLICIT_VR_LE => Encoding {
            explicit_vr: false,
            ..plain
        },
        EXPLICIT_VR_LE => plain,
        DEFLATED_EXPLICIT_VR_LE => Encoding {
            deflated: true,
            ..plain
        },
        EXPLICIT_VR_BE => Encoding {
            big_endian: true,
            ..plain
        },
        _ if ts.starts_with("1.2.840.10008.1.2.4.") || ts == RLE_LOSSLESS => Encoding {
            encapsulated: true,
            ..plain
        },
        _ => return None,
    })
}

/// Strips the trailing NUL/space padding UIDs carry on the wire (PS3.5 9.1).
pub fn trim_uid(uid: &str) -> &str {
    uid.trim_end_matches(['\0', ' '])
}

/// True when `uid` is a syntactically valid UID (PS3.5 9.1): at most 64 characters, dot-separated
/// numeric components, no leading zero in a multi-digit component.
pub fn is_valid_uid(uid: &str) -> bool {
    if uid.is_empty() || uid.len() > 64 {
        return false;
    }
    uid.split('.').all(|c| {
        !c.is_empty()
            && c.bytes().all(|b| b.is_ascii_digit())
            && !(c.len() > 1 && c.starts_with('0'))
    })
}

/// True when the SOP class is one of the standard storage SOP classes.
pub fn is_storage_sop_class(uid: &str) -> bool {
    let uid = trim_uid(uid);
    STORAGE_SOP_CLASSES.iter().any(|(u, _)| *u == uid)
}

/// The Key Object Selection Document Storage SOP class, used for IOCM rejection notes.
pub const KEY_OBJECT_SELECTION_DOCUMENT: &str = "1.2.840.10008.5.1.4.1.1.88.59";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uid_validity() {
        assert!(is_valid_uid("1.2.840.10008.1.2"));
        assert!(!is_valid_uid("1.02.3"));
        assert!(!is_valid_uid("1..2"));
        assert!(!is_valid_uid(&"1.".repeat(40)));
        assert!(is_storage_sop_class("1.2.840.10008.5.1.4.1.1.2\0"));
        assert!(!is_storage_sop_class("1.2.840.10008.1.1"));
    }

    #[test]
    fn encodings() {
        assert!(!encoding_of(IMPLICIT_VR_LE).unwrap().explicit_vr);
        assert!(encoding_of(JPEG_2000).unwrap().encapsulated);
        assert!(encoding_of(DEFLATED_EXPLICIT_VR_LE).unwrap().deflated);
        assert!(encoding_of("1.2.3").is_none());
    }
}
