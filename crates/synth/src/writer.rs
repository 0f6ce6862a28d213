//! A minimal DICOM Part 10 writer (PS3.10 §7.1, PS3.5 §7).
//!
//! Writing the bytes directly keeps every byte under this crate's control: text values of the
//! charset-variety files are stored exactly as pre-encoded (Latin-1, ISO-8859-5, ISO 2022 escape
//! sequences) instead of being re-encoded by a toolkit, element order and padding are fixed, and
//! output is byte-identical across toolkit upgrades. The tests read the files back with
//! `dicom-object` and DCMTK.
//!
//! Invariants of the output:
//! - 128-byte zero preamble, `DICM`, then the group 0002 file meta information in explicit VR
//!   little endian with a correct (0002,0000) group length;
//! - the data set follows in the transfer syntax named in the meta group, elements in ascending
//!   tag order, every value padded to even length (UI and OB with NUL, text with space);
//! - encapsulated pixel data (PS3.5 A.4) is OB with undefined length, a basic offset table item
//!   with one offset per frame, one fragment per frame, and a sequence delimitation item.

use std::collections::BTreeMap;

use dicom_core::{Tag, VR};
use dicom_dictionary_std::{tags, uids};

/// (0002,0013) Implementation Version Name of this writer (SH, at most 16 characters).
pub(crate) const IMPLEMENTATION_VERSION_NAME: &str = "VESALIUS_SYNTH";

/// Transfer syntaxes this writer can produce.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TransferSyntax {
    /// 1.2.840.10008.1.2
    ImplicitVrLittleEndian,
    /// 1.2.840.10008.1.2.1
    ExplicitVrLittleEndian,
    /// 1.2.840.10008.1.2.5: explicit VR little endian with RLE-encapsulated pixel data.
    RleLossless,
}

impl TransferSyntax {
    /// The transfer syntax UID.
    pub fn uid(self) -> &'static str {
        match self {
            Self::ImplicitVrLittleEndian => uids::IMPLICIT_VR_LITTLE_ENDIAN,
            Self::ExplicitVrLittleEndian => uids::EXPLICIT_VR_LITTLE_ENDIAN,
            Self::RleLossless => uids::RLE_LOSSLESS,
        }
    }

    fn explicit_vr(self) -> bool {
        !matches!(self, Self::ImplicitVrLittleEndian)
    }
}

#[derive(Debug, Clone)]
enum Value {
    Bytes(Vec<u8>),
    /// One fragment per frame.
    Encapsulated(Vec<Vec<u8>>),
}

#[derive(Debug, Clone)]
struct Element {
    vr: VR,
    value: Value,
}

/// A flat data set (no sequences are needed by the synthetic IODs) kept in tag order.
#[derive(Debug, Clone, Default)]
pub(crate) struct DataSet {
    elements: BTreeMap<Tag, Element>,
}

impl DataSet {
    /// An empty data set.
    pub fn new() -> Self {
        Self::default()
    }

    /// Puts already-encoded value bytes, padding them to even length as `vr` requires.
    pub fn bytes(&mut self, tag: Tag, vr: VR, mut bytes: Vec<u8>) {
        if bytes.len() % 2 == 1 {
            bytes.push(padding(vr));
        }
        self.elements.insert(
            tag,
            Element {
                vr,
                value: Value::Bytes(bytes),
            },
        );
    }

    /// Puts a text value of the default repertoire (ASCII).
    pub fn text(&mut self, tag: Tag, vr: VR, value: &str) {
        debug_assert!(
            value.is_ascii(),
            "{tag}: non-ASCII text must be pre-encoded"
        );
        self.bytes(tag, vr, value.as_bytes().to_vec());
    }

    /// Puts a multi-valued text value (values joined with backslash).
    pub fn texts(&mut self, tag: Tag, vr: VR, values: &[&str]) {
        self.text(tag, vr, &values.join("\\"));
    }

    /// Puts a UI value.
    pub fn uid(&mut self, tag: Tag, uid: &str) {
        debug_assert!(uid.len() <= 64);
        self.text(tag, VR::UI, uid);
    }

    /// Puts a US value (possibly multi-valued).
    pub fn us(&mut self, tag: Tag, values: &[u16]) {
        let b = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        self.bytes(tag, VR::US, b);
    }

    /// Puts an AT value.
    pub fn at(&mut self, tag: Tag, value: Tag) {
        let mut b = value.0.to_le_bytes().to_vec();
        b.extend_from_slice(&value.1.to_le_bytes());
        self.bytes(tag, VR::AT, b);
    }

    /// Puts a DS value (decimal strings, at most 16 characters each).
    pub fn ds(&mut self, tag: Tag, values: &[f64]) {
        let v: Vec<String> = values.iter().map(|&v| format_ds(v)).collect();
        self.text(tag, VR::DS, &v.join("\\"));
    }

    /// Puts an IS value.
    pub fn is(&mut self, tag: Tag, value: i64) {
        self.text(tag, VR::IS, &value.to_string());
    }

    /// Puts native (uncompressed) pixel data.
    pub fn native_pixels(&mut self, vr: VR, bytes: Vec<u8>) {
        self.bytes(tags::PIXEL_DATA, vr, bytes);
    }

    /// Puts encapsulated pixel data, one fragment per frame; fragments must have even length.
    pub fn encapsulated_pixels(&mut self, frames: Vec<Vec<u8>>) {
        debug_assert!(frames.iter().all(|f| f.len() % 2 == 0));
        self.elements.insert(
            tags::PIXEL_DATA,
            Element {
                vr: VR::OB,
                value: Value::Encapsulated(frames),
            },
        );
    }

    /// Encodes the data set (without preamble and meta group) into `out`.
    fn encode(&self, ts: TransferSyntax, out: &mut Vec<u8>) {
        for (&tag, el) in &self.elements {
            match &el.value {
                Value::Bytes(b) => {
                    header(out, tag, el.vr, b.len() as u32, ts.explicit_vr());
                    out.extend_from_slice(b);
                }
                Value::Encapsulated(frames) => {
                    debug_assert!(ts.explicit_vr());
                    header(out, tag, VR::OB, u32::MAX, true);
                    // PS3.5 A.4: the basic offset table holds the offset of each frame's first
                    // fragment, measured from the first byte of the first fragment's item tag.
                    item(out, 0xE000, (frames.len() * 4) as u32);
                    let mut offset = 0_u32;
                    for f in frames {
                        out.extend_from_slice(&offset.to_le_bytes());
                        offset += 8 + f.len() as u32;
                    }
                    for f in frames {
                        item(out, 0xE000, f.len() as u32);
                        out.extend_from_slice(f);
                    }
                    item(out, 0xE0DD, 0);
                }
            }
        }
    }
}

/// Everything the file meta information group needs besides the constants.
pub(crate) struct FileMeta<'a> {
    /// (0002,0002) Media Storage SOP Class UID.
    pub sop_class_uid: &'a str,
    /// (0002,0003) Media Storage SOP Instance UID.
    pub sop_instance_uid: &'a str,
    /// (0002,0010) Transfer Syntax UID.
    pub transfer_syntax: TransferSyntax,
}

/// The Implementation Class UID written to (0002,0012).
pub(crate) fn implementation_class_uid() -> String {
    crate::hash::uid(0, "vesalius-synth implementation class")
}

/// Encodes a complete Part 10 file.
pub(crate) fn encode_file(meta: &FileMeta<'_>, ds: &DataSet) -> Vec<u8> {
    let mut group = DataSet::new();
    group.bytes(tags::FILE_META_INFORMATION_VERSION, VR::OB, vec![0, 1]);
    group.uid(tags::MEDIA_STORAGE_SOP_CLASS_UID, meta.sop_class_uid);
    group.uid(tags::MEDIA_STORAGE_SOP_INSTANCE_UID, meta.sop_instance_uid);
    group.uid(tags::TRANSFER_SYNTAX_UID, meta.transfer_syntax.uid());
    group.uid(tags::IMPLEMENTATION_CLASS_UID, &implementation_class_uid());
    group.text(
        tags::IMPLEMENTATION_VERSION_NAME,
        VR::SH,
        IMPLEMENTATION_VERSION_NAME,
    );
    let mut meta_bytes = Vec::with_capacity(256);
    group.encode(TransferSyntax::ExplicitVrLittleEndian, &mut meta_bytes);

    let mut out = Vec::with_capacity(132 + 12 + meta_bytes.len() + 4096);
    out.resize(128, 0);
    out.extend_from_slice(b"DICM");
    header(
        &mut out,
        tags::FILE_META_INFORMATION_GROUP_LENGTH,
        VR::UL,
        4,
        true,
    );
    out.extend_from_slice(&(meta_bytes.len() as u32).to_le_bytes());
    out.extend_from_slice(&meta_bytes);
    ds.encode(meta.transfer_syntax, &mut out);
    out
}

fn header(out: &mut Vec<u8>, tag: Tag, vr: VR, len: u32, explicit: bool) {
    out.extend_from_slice(&tag.0.to_le_bytes());
    out.extend_from_slice(&tag.1.to_le_bytes());
    if !explicit {
        out.extend_from_slice(&len.to_le_bytes());
        return;
    }
    out.extend_from_slice(&vr.to_bytes());
    // PS3.5 Table 7.1-1: these VRs have 2 reserved bytes and a 32-bit length.
    if vesalius_core::parse::has_long_length(vr) {
        out.extend_from_slice(&[0, 0]);
        out.extend_from_slice(&len.to_le_bytes());
    } else {
        debug_assert!(len <= u32::from(u16::MAX), "{tag} value too long");
        out.extend_from_slice(&(len as u16).to_le_bytes());
    }
}

fn item(out: &mut Vec<u8>, element: u16, len: u32) {
    out.extend_from_slice(&0xFFFE_u16.to_le_bytes());
    out.extend_from_slice(&element.to_le_bytes());
    out.extend_from_slice(&len.to_le_bytes());
}

fn padding(vr: VR) -> u8 {
    match vr {
        VR::UI | VR::OB | VR::UN => 0,
        _ => b' ',
    }
}

/// Formats a DS value: shortest reasonable decimal, never more than 16 characters.
pub(crate) fn format_ds(v: f64) -> String {
    for decimals in (0..=8).rev() {
        let mut s = format!("{v:.decimals$}");
        if s.contains('.') {
            s = s.trim_end_matches('0').trim_end_matches('.').to_string();
        }
        if s == "-0" {
            s = "0".into();
        }
        if s.len() <= 16 {
            return s;
        }
    }
    format!("{v:.0}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ds_formatting() {
        assert_eq!(format_ds(1.0), "1");
        assert_eq!(format_ds(-1024.0), "-1024");
        assert_eq!(format_ds(0.48828125), "0.48828125");
        assert_eq!(format_ds(-124.755859375), "-124.75585938");
        assert_eq!(format_ds(-0.0000000001), "0");
        assert_eq!(format_ds(-0.0000001), "-0.0000001");
        assert_eq!(format_ds(33.333333333333), "33.33333333");
        assert!(format_ds(-123456.123456789).len() <= 16);
    }

    #[test]
    fn explicit_and_implicit_headers() {
        let mut ds = DataSet::new();
        ds.text(tags::PATIENT_ID, VR::LO, "ABC");
        let mut e = Vec::new();
        ds.encode(TransferSyntax::ExplicitVrLittleEndian, &mut e);
        assert_eq!(e, b"\x10\x00\x20\x00LO\x04\x00ABC ");
        let mut i = Vec::new();
        ds.encode(TransferSyntax::ImplicitVrLittleEndian, &mut i);
        assert_eq!(i, b"\x10\x00\x20\x00\x04\x00\x00\x00ABC ");
    }

    #[test]
    fn encapsulated_layout() {
        let mut ds = DataSet::new();
        ds.encapsulated_pixels(vec![vec![1, 2], vec![3, 4, 5, 6]]);
        let mut e = Vec::new();
        ds.encode(TransferSyntax::RleLossless, &mut e);
        let expected: Vec<u8> = [
            &b"\xE0\x7F\x10\x00OB\x00\x00\xFF\xFF\xFF\xFF"[..],
            b"\xFE\xFF\x00\xE0\x08\x00\x00\x00",
            b"\x00\x00\x00\x00\x0A\x00\x00\x00",
            b"\xFE\xFF\x00\xE0\x02\x00\x00\x00\x01\x02",
            b"\xFE\xFF\x00\xE0\x04\x00\x00\x00\x03\x04\x05\x06",
            b"\xFE\xFF\xDD\xE0\x00\x00\x00\x00",
        ]
        .concat();
        assert_eq!(e, expected);
    }
}
