//! Reading a Part 10 file safely.
//!
//! dicom-rs reserves the length an element declares before reading its value, so a damaged or
//! hostile header could make it allocate gigabytes. Before handing the bytes to dicom-object,
//! [`open_bytes`] walks the file meta group and the whole data set (sequences, items and Pixel Data
//! fragments included) and checks every declared length against the bytes that really remain in
//! its container. Deflated data sets are first inflated here (at most [`MAX_INFLATED`] bytes) and
//! the inflated data set is checked the same way.
//!
//! dicom-rs may also panic on malformed input; [`guard`] turns a panic into
//! [`CodecError::Invalid`].

use std::panic::{AssertUnwindSafe, catch_unwind};

use dicom_core::Tag;
use dicom_core::VR;
use dicom_core::dictionary::{DataDictionary, DataDictionaryEntry, VirtualVr};
use dicom_dictionary_std::StandardDataDictionary;
use dicom_encoding::transfer_syntax::{Codec, Endianness, TransferSyntax, TransferSyntaxIndex};
use dicom_object::file::ReadPreamble;
use dicom_object::meta::FileMetaTable;
use dicom_object::{DefaultDicomObject, OpenFileOptions};
use dicom_transfer_syntax_registry::TransferSyntaxRegistry;

use crate::CodecError;

/// Deepest sequence nesting accepted.
const MAX_DEPTH: u32 = 64;
/// Largest inflated size accepted for a deflated data set.
pub(crate) const MAX_INFLATED: u64 = 1 << 30;

const UNDEFINED: u32 = 0xFFFF_FFFF;
const ITEM: (u16, u16) = (0xFFFE, 0xE000);
const ITEM_DELIMITER: (u16, u16) = (0xFFFE, 0xE00D);
const SEQUENCE_DELIMITER: (u16, u16) = (0xFFFE, 0xE0DD);
const PIXEL_DATA: (u16, u16) = (0x7FE0, 0x0010);

/// Runs `f`, turning a panic inside dicom-rs into [`CodecError::Invalid`].
pub(crate) fn guard<T>(f: impl FnOnce() -> Result<T, CodecError>) -> Result<T, CodecError> {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(r) => r,
        Err(panic) => {
            let msg = panic
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "unknown panic".into());
            Err(CodecError::Invalid(format!(
                "the DICOM library panicked on this object: {msg}"
            )))
        }
    }
}

/// Trims the padding a UID may carry.
pub(crate) fn trim_uid(uid: &str) -> &str {
    uid.trim_matches(|c: char| c.is_whitespace() || c == '\0')
}

/// Where the `DICM` magic code starts (after a 128-byte preamble, or at 0 without one).
fn magic_offset(bytes: &[u8]) -> Result<usize, CodecError> {
    if bytes.len() >= 132 && &bytes[128..132] == b"DICM" {
        Ok(128)
    } else if bytes.len() >= 4 && &bytes[..4] == b"DICM" {
        Ok(0)
    } else {
        Err(CodecError::Invalid(
            "not a DICOM Part 10 file (no DICM magic code)".into(),
        ))
    }
}

/// Checks the file meta group and parses it. Returns the table, the offset of the `DICM`
/// magic code in `bytes` and the offset where the data set starts.
pub(crate) fn read_meta(bytes: &[u8]) -> Result<(FileMetaTable, usize, usize), CodecError> {
    let magic = magic_offset(bytes)?;
    let start = magic + 4;
    // the meta group is explicit VR little endian; it ends where group 0002 ends
    let scan = Scanner { buf: bytes };
    let mut pos = start;
    while pos + 8 <= bytes.len() && scan.u16(pos, false) == 0x0002 {
        let (len, hdr) = scan.explicit_header(pos, false, bytes.len())?;
        if len == UNDEFINED {
            return Err(invalid(pos, "undefined length in the file meta group"));
        }
        pos += hdr;
        scan.check_len(pos, len, bytes.len())?;
        pos += len as usize;
    }
    let meta = FileMetaTable::from_reader(&bytes[magic..])
        .map_err(|e| CodecError::Invalid(format!("bad file meta group: {}", chain(&e))))?;
    // dicom-object reads the meta group by its declared length: it must match the elements
    if start + 12 + meta.information_group_length as usize != pos {
        return Err(CodecError::Invalid(
            "file meta group length does not match its elements".into(),
        ));
    }
    Ok((meta, magic, pos))
}

/// Looks up a transfer syntax in the registry.
pub(crate) fn lookup_ts(uid: &str) -> Option<&'static TransferSyntax> {
    TransferSyntaxRegistry.get(trim_uid(uid))
}

/// Checks every declared length of the Part 10 file in `bytes`, then parses it with dicom-object.
pub(crate) fn open_bytes(bytes: &[u8]) -> Result<DefaultDicomObject, CodecError> {
    let (meta, magic, start) = read_meta(bytes)?;
    let ts_uid = meta.transfer_syntax();
    let ts = lookup_ts(ts_uid)
        .ok_or_else(|| CodecError::Unsupported(format!("unknown transfer syntax {ts_uid}")))?;
    match ts.codec() {
        Codec::Dataset(Some(_)) => {
            // deflated explicit VR little endian (raw deflate, RFC 1951)
            use std::io::Read;
            let mut inflated = Vec::new();
            flate2::read::DeflateDecoder::new(&bytes[start..])
                .take(MAX_INFLATED + 1)
                .read_to_end(&mut inflated)
                .map_err(|e| CodecError::Invalid(format!("bad deflated data set: {e}")))?;
            if inflated.len() as u64 > MAX_INFLATED {
                return Err(CodecError::Unsupported(format!(
                    "deflated data sets inflating to more than {MAX_INFLATED} bytes"
                )));
            }
            let scan = Scanner { buf: &inflated };
            scan.dataset(0, inflated.len(), true, false, 0, false)?;
        }
        Codec::Dataset(None) => {
            return Err(CodecError::Unsupported(format!(
                "reading transfer syntax {} ({ts_uid})",
                ts.name()
            )));
        }
        _ => {
            let scan = Scanner { buf: bytes };
            let be = ts.endianness() == Endianness::Big;
            // Implicit VR Little Endian is the only implicit VR syntax in the registry
            let explicit = ts.uid() != dicom_dictionary_std::uids::IMPLICIT_VR_LITTLE_ENDIAN;
            scan.dataset(start, bytes.len(), explicit, be, 0, false)?;
        }
    }
    OpenFileOptions::new()
        .read_preamble(ReadPreamble::Never)
        .from_reader(&bytes[magic..])
        .map_err(|e| CodecError::Invalid(format!("cannot parse the data set: {}", chain(&e))))
}

/// Formats an error with its chain of sources.
pub(crate) fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(src) = cur {
        let next = src.to_string();
        if !s.ends_with(&next) {
            s.push_str(": ");
            s.push_str(&next);
        }
        cur = src.source();
    }
    s
}

fn invalid(pos: usize, what: &str) -> CodecError {
    CodecError::Invalid(format!("{what} at byte offset {pos}"))
}

/// Walks encoded elements, checking lengths; never allocates.
struct Scanner<'a> {
    buf: &'a [u8],
}

impl Scanner<'_> {
    fn u16(&self, pos: usize, be: bool) -> u16 {
        let b = [self.buf[pos], self.buf[pos + 1]];
        if be {
            u16::from_be_bytes(b)
        } else {
            u16::from_le_bytes(b)
        }
    }

    fn u32(&self, pos: usize, be: bool) -> u32 {
        let b = [
            self.buf[pos],
            self.buf[pos + 1],
            self.buf[pos + 2],
            self.buf[pos + 3],
        ];
        if be {
            u32::from_be_bytes(b)
        } else {
            u32::from_le_bytes(b)
        }
    }

    fn need(&self, pos: usize, n: usize, end: usize) -> Result<(), CodecError> {
        if end.saturating_sub(pos) < n {
            Err(invalid(pos, "truncated element header"))
        } else {
            Ok(())
        }
    }

    fn check_len(&self, pos: usize, len: u32, end: usize) -> Result<(), CodecError> {
        if len as usize > end.saturating_sub(pos) {
            Err(CodecError::Invalid(format!(
                "value at byte offset {pos} declares {len} bytes but only {} remain",
                end.saturating_sub(pos)
            )))
        } else {
            Ok(())
        }
    }

    fn tag(&self, pos: usize, be: bool) -> (u16, u16) {
        (self.u16(pos, be), self.u16(pos + 2, be))
    }

    /// Length and header size of an explicit VR element header at `pos`.
    fn explicit_header(
        &self,
        pos: usize,
        be: bool,
        end: usize,
    ) -> Result<(u32, usize), CodecError> {
        self.need(pos, 8, end)?;
        let vr = [self.buf[pos + 4], self.buf[pos + 5]];
        if long_length_vr(vr) {
            self.need(pos, 12, end)?;
            Ok((self.u32(pos + 8, be), 12))
        } else {
            Ok((u32::from(self.u16(pos + 6, be)), 8))
        }
    }

    /// Checks the elements in `pos..end`. With `in_item`, stops after an item delimiter.
    fn dataset(
        &self,
        mut pos: usize,
        end: usize,
        explicit: bool,
        be: bool,
        depth: u32,
        in_item: bool,
    ) -> Result<usize, CodecError> {
        if depth > MAX_DEPTH {
            return Err(invalid(pos, "sequences nested too deeply"));
        }
        while pos < end {
            self.need(pos, 8, end)?;
            let tag = self.tag(pos, be);
            if tag.0 == 0xFFFE {
                if tag == ITEM_DELIMITER && in_item {
                    return Ok(pos + 8);
                }
                return Err(invalid(pos, "unexpected item or delimiter"));
            }
            let (vr, len, hdr) = if explicit {
                let vr = [self.buf[pos + 4], self.buf[pos + 5]];
                let (len, hdr) = self.explicit_header(pos, be, end)?;
                (Some(vr), len, hdr)
            } else {
                (None, self.u32(pos + 4, be), 8)
            };
            let elem_pos = pos;
            pos += hdr;
            let is_sq = match vr {
                Some(vr) => &vr == b"SQ",
                None => implicit_is_sq(tag),
            };
            if len == UNDEFINED {
                match vr {
                    // encapsulated Pixel Data: fragments
                    Some(vr) if tag == PIXEL_DATA && &vr != b"SQ" => {
                        pos = self.items(pos, end, explicit, be, depth + 1, true)?;
                    }
                    // UN of undefined length holds implicit VR little endian content
                    Some(vr) if &vr == b"UN" => {
                        pos = self.items(pos, end, false, false, depth + 1, false)?;
                    }
                    Some(vr) if &vr == b"SQ" => {
                        pos = self.items(pos, end, explicit, be, depth + 1, false)?;
                    }
                    Some(_) => return Err(invalid(elem_pos, "undefined length on a non-sequence")),
                    // implicit VR: undefined length means a sequence (or, for Pixel Data,
                    // fragments, which have the same item structure)
                    None => {
                        pos = self.items(pos, end, false, be, depth + 1, tag == PIXEL_DATA)?;
                    }
                }
            } else {
                self.check_len(pos, len, end)?;
                let value_end = pos + len as usize;
                if is_sq {
                    self.defined_items(pos, value_end, explicit, be, depth + 1)?;
                }
                pos = value_end;
            }
        }
        if in_item {
            Err(invalid(pos, "missing item delimiter"))
        } else {
            Ok(pos)
        }
    }

    /// Items of an undefined-length sequence (or fragments), up to the sequence delimiter.
    fn items(
        &self,
        mut pos: usize,
        end: usize,
        explicit: bool,
        be: bool,
        depth: u32,
        fragments: bool,
    ) -> Result<usize, CodecError> {
        loop {
            self.need(pos, 8, end)?;
            let tag = self.tag(pos, be);
            let len = self.u32(pos + 4, be);
            let item_pos = pos;
            pos += 8;
            if tag == SEQUENCE_DELIMITER {
                return Ok(pos);
            }
            if tag != ITEM {
                return Err(invalid(item_pos, "expected an item"));
            }
            if len == UNDEFINED {
                if fragments {
                    return Err(invalid(item_pos, "fragment of undefined length"));
                }
                pos = self.dataset(pos, end, explicit, be, depth, true)?;
            } else {
                self.check_len(pos, len, end)?;
                if !fragments {
                    self.dataset(pos, pos + len as usize, explicit, be, depth, false)?;
                }
                pos += len as usize;
            }
        }
    }

    /// Items of a defined-length sequence occupying `pos..end`.
    fn defined_items(
        &self,
        mut pos: usize,
        end: usize,
        explicit: bool,
        be: bool,
        depth: u32,
    ) -> Result<(), CodecError> {
        if depth > MAX_DEPTH {
            return Err(invalid(pos, "sequences nested too deeply"));
        }
        while pos < end {
            self.need(pos, 8, end)?;
            let tag = self.tag(pos, be);
            let len = self.u32(pos + 4, be);
            let item_pos = pos;
            pos += 8;
            if tag != ITEM {
                return Err(invalid(item_pos, "expected an item"));
            }
            if len == UNDEFINED {
                pos = self.dataset(pos, end, explicit, be, depth, true)?;
            } else {
                self.check_len(pos, len, end)?;
                self.dataset(pos, pos + len as usize, explicit, be, depth, false)?;
                pos += len as usize;
            }
        }
        Ok(())
    }
}

/// VRs with a 2-byte reserved field and a 4-byte length in explicit VR encoding.
fn long_length_vr(vr: [u8; 2]) -> bool {
    matches!(
        &vr,
        b"OB"
            | b"OD"
            | b"OF"
            | b"OL"
            | b"OV"
            | b"OW"
            | b"SQ"
            | b"SV"
            | b"UC"
            | b"UN"
            | b"UR"
            | b"UT"
            | b"UV"
    )
}

fn implicit_is_sq(tag: (u16, u16)) -> bool {
    StandardDataDictionary
        .by_tag(Tag(tag.0, tag.1))
        .map(|e| matches!(e.vr(), VirtualVr::Exact(VR::SQ)))
        .unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn el(tag: (u16, u16), vr: &[u8; 2], value: &[u8]) -> Vec<u8> {
        let mut v = Vec::new();
        v.extend_from_slice(&tag.0.to_le_bytes());
        v.extend_from_slice(&tag.1.to_le_bytes());
        v.extend_from_slice(vr);
        if long_length_vr(*vr) {
            v.extend_from_slice(&[0, 0]);
            v.extend_from_slice(&(value.len() as u32).to_le_bytes());
        } else {
            v.extend_from_slice(&(value.len() as u16).to_le_bytes());
        }
        v.extend_from_slice(value);
        v
    }

    #[test]
    fn rejects_lengths_beyond_the_buffer() {
        let mut buf = el((0x0010, 0x0010), b"PN", b"DOE^JOHN");
        // OB claiming 4 GB
        buf.extend_from_slice(&[0x09, 0x00, 0x10, 0x00, b'O', b'B', 0, 0]);
        buf.extend_from_slice(&0xFFFF_FFF0u32.to_le_bytes());
        buf.extend_from_slice(&[1, 2, 3, 4]);
        let s = Scanner { buf: &buf };
        let err = s.dataset(0, buf.len(), true, false, 0, false).unwrap_err();
        assert!(matches!(err, CodecError::Invalid(_)), "{err}");
    }

    #[test]
    fn accepts_nested_sequences_and_fragments() {
        let inner = el((0x0008, 0x0100), b"SH", b"CODE");
        let mut item = vec![0xFE, 0xFF, 0x00, 0xE0];
        item.extend_from_slice(&(inner.len() as u32).to_le_bytes());
        item.extend_from_slice(&inner);
        let mut buf = el((0x0008, 0x1032), b"SQ", &item);
        // encapsulated pixel data: empty offset table + one fragment
        buf.extend_from_slice(&[
            0xE0, 0x7F, 0x10, 0x00, b'O', b'B', 0, 0, 0xFF, 0xFF, 0xFF, 0xFF,
        ]);
        buf.extend_from_slice(&[0xFE, 0xFF, 0x00, 0xE0, 0, 0, 0, 0]);
        buf.extend_from_slice(&[0xFE, 0xFF, 0x00, 0xE0, 4, 0, 0, 0, 1, 2, 3, 4]);
        buf.extend_from_slice(&[0xFE, 0xFF, 0xDD, 0xE0, 0, 0, 0, 0]);
        let s = Scanner { buf: &buf };
        assert_eq!(
            s.dataset(0, buf.len(), true, false, 0, false).unwrap(),
            buf.len()
        );

        // a nested element lying about its length inside the item
        let mut bad_inner = el((0x0008, 0x0100), b"UT", b"CODE");
        bad_inner[8..12].copy_from_slice(&1000u32.to_le_bytes());
        let mut item = vec![0xFE, 0xFF, 0x00, 0xE0];
        item.extend_from_slice(&(bad_inner.len() as u32).to_le_bytes());
        item.extend_from_slice(&bad_inner);
        let buf = el((0x0008, 0x1032), b"SQ", &item);
        let s = Scanner { buf: &buf };
        assert!(s.dataset(0, buf.len(), true, false, 0, false).is_err());
    }

    #[test]
    fn rejects_truncated_fragments() {
        let mut buf = vec![
            0xE0, 0x7F, 0x10, 0x00, b'O', b'B', 0, 0, 0xFF, 0xFF, 0xFF, 0xFF,
        ];
        buf.extend_from_slice(&[0xFE, 0xFF, 0x00, 0xE0, 0, 0, 0, 0]);
        buf.extend_from_slice(&[0xFE, 0xFF, 0x00, 0xE0, 0xFF, 0, 0, 0x10, 1, 2]);
        let s = Scanner { buf: &buf };
        assert!(s.dataset(0, buf.len(), true, false, 0, false).is_err());
    }
}
