//! Small data sets carried by DIMSE messages: C-FIND/C-GET/C-MOVE identifiers and the
//! N-ACTION/N-EVENT-REPORT information of Storage Commitment.
//!
//! Reading goes through the bounded parser of `vesalius-core` (every declared length checked
//! before anything is allocated). Writing uses [`DataSetWriter`], which encodes in Implicit or
//! Explicit VR Little Endian (the only syntaxes negotiated for non-storage contexts, see
//! `server`), sequences and items with undefined length and delimiters (PS3.5 7.5).

use std::collections::BTreeMap;
use std::io::Cursor;

use dicom_core::VR;
use vesalius_core::parse::{self, DataSet, ParseLimits, SeekSource};
use vesalius_core::uid;

use crate::error::{Error, Result};

/// The largest identifier or action information accepted from a peer.
pub const MAX_IDENTIFIER_BYTES: usize = 4 << 20;

/// Parses a small data set received in `ts` (an identifier, an action information).
pub fn read(bytes: &[u8], ts: &str) -> Result<DataSet> {
    let limits = ParseLimits {
        // Identifiers are small: keep binary values in memory rather than as locations.
        bulk_threshold: u32::MAX,
        max_kept_bytes: MAX_IDENTIFIER_BYTES as u64,
        ..ParseLimits::default()
    };
    let mut src = SeekSource(Cursor::new(bytes));
    parse::parse_dataset(&mut src, 0, bytes.len() as u64, ts, &limits)
        .map(|(ds, _)| ds)
        .map_err(|e| Error::Protocol(format!("malformed data set: {e}")))
}

/// True when `ts` encodes data sets with explicit VRs.
pub fn is_explicit(ts: &str) -> bool {
    uid::trim_uid(ts) != uid::IMPLICIT_VR_LE
}

#[derive(Debug, Clone, PartialEq)]
enum Val {
    Bytes(Vec<u8>),
    Items(Vec<DataSetWriter>),
}

/// Builds a small data set and encodes it in Implicit or Explicit VR Little Endian.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct DataSetWriter {
    elements: BTreeMap<u32, (VR, Val)>,
}

impl DataSetWriter {
    /// An empty data set.
    pub fn new() -> Self {
        Self::default()
    }

    /// True when nothing was put.
    pub fn is_empty(&self) -> bool {
        self.elements.is_empty()
    }

    /// True when `tag` was put.
    pub fn contains(&self, tag: u32) -> bool {
        self.elements.contains_key(&tag)
    }

    /// Puts a text value (already joined with `\` for several values), padded to even length
    /// (NUL for UI, space otherwise, PS3.5 6.2).
    pub fn put_str(&mut self, tag: u32, vr: VR, value: &str) {
        let mut b = value.as_bytes().to_vec();
        if b.len() % 2 == 1 {
            b.push(if vr == VR::UI { 0 } else { b' ' });
        }
        self.elements.insert(tag, (vr, Val::Bytes(b)));
    }

    /// Puts raw little endian value bytes (padded with NUL to even length).
    pub fn put_bytes(&mut self, tag: u32, vr: VR, value: Vec<u8>) {
        let mut b = value;
        if b.len() % 2 == 1 {
            b.push(0);
        }
        self.elements.insert(tag, (vr, Val::Bytes(b)));
    }

    /// Puts a US value.
    pub fn put_u16(&mut self, tag: u32, v: u16) {
        self.put_bytes(tag, VR::US, v.to_le_bytes().to_vec());
    }

    /// Puts a sequence.
    pub fn put_items(&mut self, tag: u32, items: Vec<DataSetWriter>) {
        self.elements.insert(tag, (VR::SQ, Val::Items(items)));
    }

    /// Encodes the data set.
    pub fn encode(&self, explicit: bool) -> Vec<u8> {
        let mut out = Vec::with_capacity(256);
        self.encode_into(&mut out, explicit);
        out
    }

    fn encode_into(&self, out: &mut Vec<u8>, explicit: bool) {
        for (tag, (vr, val)) in &self.elements {
            match val {
                Val::Bytes(b) => header(out, *tag, *vr, b.len() as u32, explicit),
                Val::Items(_) => header(out, *tag, VR::SQ, u32::MAX, explicit),
            }
            match val {
                Val::Bytes(b) => out.extend_from_slice(b),
                Val::Items(items) => {
                    for item in items {
                        raw_tag(out, 0xFFFE_E000, u32::MAX);
                        item.encode_into(out, explicit);
                        raw_tag(out, 0xFFFE_E00D, 0);
                    }
                    raw_tag(out, 0xFFFE_E0DD, 0);
                }
            }
        }
    }
}

/// Converts DICOM JSON (PS3.18 F.2) back to data set values, for query answers.
pub mod from_json {
    use dicom_core::VR;
    use serde_json::{Map, Value as Json};

    use super::DataSetWriter;

    /// The VR named in a JSON element.
    pub fn vr_of(el: &Json) -> Option<VR> {
        el.get("vr")?.as_str()?.parse().ok()
    }

    fn text_of(v: &Json) -> Option<String> {
        match v {
            Json::String(s) => Some(s.clone()),
            Json::Number(n) => Some(n.to_string()),
            Json::Bool(b) => Some(b.to_string()),
            _ => None,
        }
    }

    fn person_name(v: &Json) -> String {
        let group = |k: &str| v.get(k).and_then(Json::as_str).unwrap_or("").to_owned();
        let mut s = [group("Alphabetic"), group("Ideographic"), group("Phonetic")].join("=");
        while s.ends_with('=') {
            s.pop();
        }
        s
    }

    /// Puts the value of JSON element `el` (absent: an empty value) as `vr` under `tag`; items of
    /// a sequence keep only `item_keys` when given. Returns true when some text is not ASCII.
    pub fn put(
        w: &mut DataSetWriter,
        tag: u32,
        vr: VR,
        el: Option<&Json>,
        item_keys: Option<&[(u32, VR)]>,
    ) -> bool {
        let values: &[Json] = el
            .and_then(|e| e.get("Value"))
            .and_then(Json::as_array)
            .map(Vec::as_slice)
            .unwrap_or(&[]);
        match vr {
            VR::SQ => {
                let mut non_ascii = false;
                let items = values
                    .iter()
                    .filter_map(Json::as_object)
                    .map(|o| {
                        let (item, n) = object(o, item_keys);
                        non_ascii |= n;
                        item
                    })
                    .collect();
                w.put_items(tag, items);
                non_ascii
            }
            VR::US | VR::SS | VR::UL | VR::SL | VR::FL | VR::FD | VR::SV | VR::UV => {
                let mut b = Vec::new();
                for v in values {
                    let Some(n) = v.as_f64() else { continue };
                    match vr {
                        VR::US => b.extend_from_slice(&(n as u16).to_le_bytes()),
                        VR::SS => b.extend_from_slice(&(n as i16).to_le_bytes()),
                        VR::UL => b.extend_from_slice(&(n as u32).to_le_bytes()),
                        VR::SL => b.extend_from_slice(&(n as i32).to_le_bytes()),
                        VR::FL => b.extend_from_slice(&(n as f32).to_le_bytes()),
                        VR::FD => b.extend_from_slice(&n.to_le_bytes()),
                        VR::SV => {
                            b.extend_from_slice(&v.as_i64().unwrap_or(n as i64).to_le_bytes())
                        }
                        _ => b.extend_from_slice(&v.as_u64().unwrap_or(n as u64).to_le_bytes()),
                    }
                }
                w.put_bytes(tag, vr, b);
                false
            }
            VR::AT => {
                let mut b = Vec::new();
                for v in values.iter().filter_map(Json::as_str) {
                    if let Ok(t) = u32::from_str_radix(v, 16) {
                        b.extend_from_slice(&((t >> 16) as u16).to_le_bytes());
                        b.extend_from_slice(&((t & 0xFFFF) as u16).to_le_bytes());
                    }
                }
                w.put_bytes(tag, vr, b);
                false
            }
            // Binary values are not returned in query answers.
            VR::OB | VR::OD | VR::OF | VR::OL | VR::OV | VR::OW | VR::UN => {
                w.put_bytes(tag, vr, Vec::new());
                false
            }
            _ => {
                let text: Vec<String> = values
                    .iter()
                    .map(|v| {
                        if vr == VR::PN {
                            person_name(v)
                        } else {
                            text_of(v).unwrap_or_default()
                        }
                    })
                    .collect();
                let joined = text.join("\\");
                let non_ascii = !joined.is_ascii();
                w.put_str(tag, vr, &joined);
                non_ascii
            }
        }
    }

    /// Converts a JSON object (a sequence item), keeping only `keys` when given.
    pub fn object(o: &Map<String, Json>, keys: Option<&[(u32, VR)]>) -> (DataSetWriter, bool) {
        let mut w = DataSetWriter::new();
        let mut non_ascii = false;
        match keys {
            Some(keys) if !keys.is_empty() => {
                for (tag, vr) in keys {
                    let el = o.get(&format!("{tag:08X}"));
                    let vr = el.and_then(vr_of).filter(|_| *vr == VR::UN).unwrap_or(*vr);
                    non_ascii |= put(&mut w, *tag, vr, el, None);
                }
            }
            _ => {
                for (k, el) in o {
                    let (Ok(tag), Some(vr)) = (u32::from_str_radix(k, 16), vr_of(el)) else {
                        continue;
                    };
                    non_ascii |= put(&mut w, tag, vr, Some(el), None);
                }
            }
        }
        (w, non_ascii)
    }
}

fn raw_tag(out: &mut Vec<u8>, tag: u32, len: u32) {
    out.extend_from_slice(&((tag >> 16) as u16).to_le_bytes());
    out.extend_from_slice(&((tag & 0xFFFF) as u16).to_le_bytes());
    out.extend_from_slice(&len.to_le_bytes());
}

fn header(out: &mut Vec<u8>, tag: u32, vr: VR, len: u32, explicit: bool) {
    if !explicit {
        raw_tag(out, tag, len);
        return;
    }
    out.extend_from_slice(&((tag >> 16) as u16).to_le_bytes());
    out.extend_from_slice(&((tag & 0xFFFF) as u16).to_le_bytes());
    out.extend_from_slice(&vr.to_bytes());
    // PS3.5 7.1.2: these VRs have a 2-byte reserved field and a 4-byte length.
    let long = vesalius_core::parse::has_long_length(vr);
    if long {
        out.extend_from_slice(&[0, 0]);
        out.extend_from_slice(&len.to_le_bytes());
    } else {
        out.extend_from_slice(&(len.min(0xFFFF) as u16).to_le_bytes());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use vesalius_core::tag;

    #[test]
    fn writes_what_the_parser_reads() {
        for ts in [uid::IMPLICIT_VR_LE, uid::EXPLICIT_VR_LE] {
            let mut w = DataSetWriter::new();
            w.put_str(tag::QUERY_RETRIEVE_LEVEL, VR::CS, "STUDY");
            w.put_str(tag::STUDY_INSTANCE_UID, VR::UI, "1.2.3");
            w.put_str(tag::PATIENT_NAME, VR::PN, "");
            let mut item = DataSetWriter::new();
            item.put_str(tag::REFERENCED_SOP_CLASS_UID, VR::UI, "1.2");
            item.put_u16(tag::FAILURE_REASON, 0x0112);
            w.put_items(tag::FAILED_SOP_SEQUENCE, vec![item.clone(), item]);
            let bytes = w.encode(is_explicit(ts));
            let ds = read(&bytes, ts).unwrap();
            assert_eq!(ds.str(tag::QUERY_RETRIEVE_LEVEL), Some("STUDY"));
            assert_eq!(ds.str(tag::STUDY_INSTANCE_UID), Some("1.2.3"));
            assert!(ds.get(tag::PATIENT_NAME).is_some());
            let items = ds.items(tag::FAILED_SOP_SEQUENCE).unwrap();
            assert_eq!(items.len(), 2);
            assert_eq!(items[1].u16(tag::FAILURE_REASON), Some(0x0112));
        }
    }

    #[test]
    fn json_values_come_back_as_dicom() {
        let answer: serde_json::Map<String, serde_json::Value> = serde_json::from_str(
            r#"{"00100010":{"vr":"PN","Value":[{"Alphabetic":"Müller^Hans"}]},
                "00201208":{"vr":"IS","Value":[12]},
                "00280010":{"vr":"US","Value":[512]},
                "00080061":{"vr":"CS","Value":["CT","MR"]}}"#,
        )
        .unwrap();
        let keys = [
            (tag::PATIENT_NAME, VR::PN),
            (tag::NUMBER_OF_STUDY_RELATED_INSTANCES, VR::IS),
            (tag::ROWS, VR::US),
            (tag::MODALITIES_IN_STUDY, VR::CS),
            (tag::STUDY_DESCRIPTION, VR::LO),
        ];
        let (w, non_ascii) = from_json::object(&answer, Some(&keys));
        assert!(non_ascii);
        let ds = read(&w.encode(true), uid::EXPLICIT_VR_LE).unwrap();
        assert_eq!(ds.bytes(tag::PATIENT_NAME), Some("Müller^Hans".as_bytes()));
        assert_eq!(ds.int(tag::NUMBER_OF_STUDY_RELATED_INSTANCES), Some(12));
        assert_eq!(ds.u16(tag::ROWS), Some(512));
        assert_eq!(ds.str(tag::MODALITIES_IN_STUDY), Some("CT\\MR"));
        assert_eq!(ds.bytes(tag::STUDY_DESCRIPTION), Some(&b""[..]));
    }

    #[test]
    fn hostile_identifier_is_an_error() {
        // (0010,0010) declaring 4 GiB in 10 bytes.
        let bytes = [0x10, 0, 0x10, 0, 0xFF, 0xFF, 0xFF, 0x7F, b'a', b'b'];
        assert!(read(&bytes, uid::IMPLICIT_VR_LE).is_err());
    }
}
