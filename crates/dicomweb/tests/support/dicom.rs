//! A small Part 10 writer for tests (explicit VR little endian, or implicit VR little endian),
//! so each test states exactly the attributes it needs. Shared by the unit tests (`src/tests.rs`)
//! and the integration tests.
#![allow(dead_code)]

use std::collections::BTreeMap;

/// Secondary Capture Image Storage.
pub const SC: &str = "1.2.840.10008.5.1.4.1.1.7";
/// CT Image Storage.
pub const CT: &str = "1.2.840.10008.5.1.4.1.1.2";
/// Explicit VR Little Endian.
pub const EXPLICIT_LE: &str = "1.2.840.10008.1.2.1";
/// Implicit VR Little Endian.
pub const IMPLICIT_LE: &str = "1.2.840.10008.1.2";

/// A data set being built.
#[derive(Debug, Clone)]
pub struct Obj {
    elements: BTreeMap<u32, (&'static str, Vec<u8>)>,
    pub transfer_syntax: &'static str,
}

fn long_vr(vr: &str) -> bool {
    matches!(
        vr,
        "OB" | "OW" | "OF" | "OD" | "OL" | "OV" | "SQ" | "UT" | "UN" | "UC" | "UR" | "SV" | "UV"
    )
}

pub fn element(out: &mut Vec<u8>, tag: u32, vr: &str, value: &[u8], explicit: bool) {
    let mut v = value.to_vec();
    if v.len() % 2 == 1 {
        v.push(if vr == "UI" || long_vr(vr) { 0 } else { b' ' });
    }
    out.extend_from_slice(&((tag >> 16) as u16).to_le_bytes());
    out.extend_from_slice(&((tag & 0xFFFF) as u16).to_le_bytes());
    if !explicit {
        out.extend_from_slice(&(v.len() as u32).to_le_bytes());
    } else if long_vr(vr) {
        out.extend_from_slice(vr.as_bytes());
        out.extend_from_slice(&[0, 0]);
        out.extend_from_slice(&(v.len() as u32).to_le_bytes());
    } else {
        out.extend_from_slice(vr.as_bytes());
        out.extend_from_slice(&(v.len() as u16).to_le_bytes());
    }
    out.extend_from_slice(&v);
}

impl Obj {
    /// An instance of `sop_class` with its UIDs and a patient.
    pub fn new(study: &str, series: &str, sop: &str) -> Self {
        Obj {
            elements: BTreeMap::new(),
            transfer_syntax: EXPLICIT_LE,
        }
        .text(0x0008_0016, "UI", SC)
        .text(0x0008_0018, "UI", sop)
        .text(0x0020_000D, "UI", study)
        .text(0x0020_000E, "UI", series)
        .text(0x0008_0060, "CS", "OT")
        .text(0x0010_0010, "PN", "Doe^Jane")
        .text(0x0010_0020, "LO", "PID1")
        .text(0x0008_0020, "DA", "20240101")
    }

    /// Sets a text attribute.
    pub fn text(mut self, tag: u32, vr: &'static str, value: &str) -> Self {
        self.elements.insert(tag, (vr, value.as_bytes().to_vec()));
        self
    }

    /// Sets an US attribute.
    pub fn us(mut self, tag: u32, value: u16) -> Self {
        self.elements
            .insert(tag, ("US", value.to_le_bytes().to_vec()));
        self
    }

    /// Sets a binary attribute.
    pub fn bytes(mut self, tag: u32, vr: &'static str, value: Vec<u8>) -> Self {
        self.elements.insert(tag, (vr, value));
        self
    }

    /// Removes an attribute.
    pub fn without(mut self, tag: u32) -> Self {
        self.elements.remove(&tag);
        self
    }

    /// Encodes with this transfer syntax.
    pub fn syntax(mut self, ts: &'static str) -> Self {
        self.transfer_syntax = ts;
        self
    }

    /// Native MONOCHROME2 pixels: `frames` frames of `rows` × `cols`, 16-bit, values from
    /// [`pixel_value`].
    pub fn pixels(self, rows: u16, cols: u16, frames: u32) -> Self {
        let data = native_frames(rows, cols, frames);
        let mut o = self
            .us(0x0028_0002, 1)
            .text(0x0028_0004, "CS", "MONOCHROME2")
            .us(0x0028_0010, rows)
            .us(0x0028_0011, cols)
            .us(0x0028_0100, 16)
            .us(0x0028_0101, 12)
            .us(0x0028_0102, 11)
            .us(0x0028_0103, 0)
            .bytes(0x7FE0_0010, "OW", data);
        if frames > 1 {
            o = o.text(0x0028_0008, "IS", &frames.to_string());
        }
        o
    }

    /// The Part 10 bytes.
    pub fn encode(&self) -> Vec<u8> {
        let get = |t: u32| {
            self.elements
                .get(&t)
                .map(|(_, v)| String::from_utf8_lossy(v).into_owned())
                .unwrap_or_default()
        };
        let mut meta = Vec::new();
        element(&mut meta, 0x0002_0001, "OB", &[0, 1], true);
        element(
            &mut meta,
            0x0002_0002,
            "UI",
            get(0x0008_0016).as_bytes(),
            true,
        );
        element(
            &mut meta,
            0x0002_0003,
            "UI",
            get(0x0008_0018).as_bytes(),
            true,
        );
        element(
            &mut meta,
            0x0002_0010,
            "UI",
            self.transfer_syntax.as_bytes(),
            true,
        );
        element(&mut meta, 0x0002_0012, "UI", b"1.2.3.4.5", true);
        let mut out = vec![0u8; 128];
        out.extend_from_slice(b"DICM");
        element(
            &mut out,
            0x0002_0000,
            "UL",
            &(meta.len() as u32).to_le_bytes(),
            true,
        );
        out.extend_from_slice(&meta);
        let explicit = self.transfer_syntax != IMPLICIT_LE;
        for (tag, (vr, v)) in &self.elements {
            element(&mut out, *tag, vr, v, explicit);
        }
        out
    }
}

/// The value of pixel (`r`, `c`) of frame `f` (0-based) written by [`Obj::pixels`].
pub fn pixel_value(f: u32, r: u16, c: u16) -> u16 {
    ((u32::from(r) * 16 + u32::from(c) * 3 + f * 500) % 4096) as u16
}

/// The native bytes of `frames` frames.
pub fn native_frames(rows: u16, cols: u16, frames: u32) -> Vec<u8> {
    let mut data = Vec::with_capacity(rows as usize * cols as usize * 2 * frames as usize);
    for f in 0..frames {
        for r in 0..rows {
            for c in 0..cols {
                data.extend_from_slice(&pixel_value(f, r, c).to_le_bytes());
            }
        }
    }
    data
}

/// A `multipart/related; type="application/dicom"` body of `parts`, and its content type.
pub fn multipart(parts: &[Vec<u8>], boundary: &str) -> (Vec<u8>, String) {
    let mut body = Vec::new();
    for p in parts {
        body.extend_from_slice(
            format!("--{boundary}\r\nContent-Type: application/dicom\r\n\r\n").as_bytes(),
        );
        body.extend_from_slice(p);
        body.extend_from_slice(b"\r\n");
    }
    body.extend_from_slice(format!("--{boundary}--\r\n").as_bytes());
    (
        body,
        format!("multipart/related; type=\"application/dicom\"; boundary={boundary}"),
    )
}

/// Splits a multipart body into (part headers, part bytes) using the boundary of `content_type`.
pub fn split_multipart(content_type: &str, body: &[u8]) -> Vec<(String, Vec<u8>)> {
    let boundary = content_type
        .split(';')
        .find_map(|p| p.trim().strip_prefix("boundary="))
        .expect("boundary")
        .trim_matches('"');
    let delim = format!("--{boundary}").into_bytes();
    let mut parts = Vec::new();
    let mut pos = find(body, &delim, 0).expect("first delimiter") + delim.len();
    loop {
        if body[pos..].starts_with(b"--") {
            break;
        }
        pos += 2; // CRLF after the delimiter
        let hdr_end = find(body, b"\r\n\r\n", pos).expect("part headers");
        let headers = String::from_utf8_lossy(&body[pos..hdr_end]).into_owned();
        let start = hdr_end + 4;
        let mut next_delim = Vec::from(&b"\r\n"[..]);
        next_delim.extend_from_slice(&delim);
        let end = find(body, &next_delim, start).expect("next delimiter");
        parts.push((headers, body[start..end].to_vec()));
        pos = end + next_delim.len();
    }
    parts
}

fn find(hay: &[u8], needle: &[u8], from: usize) -> Option<usize> {
    hay[from..]
        .windows(needle.len())
        .position(|w| w == needle)
        .map(|p| p + from)
}
