//! DICOM RLE Lossless (transfer syntax 1.2.840.10008.1.2.5, PS3.5 Annex G).
//!
//! A frame is split into byte segments: for each sample (in order) one segment per byte of the
//! sample, most significant byte first, each segment holding that byte of every pixel in raster
//! order (G.2). Each segment is compressed with PackBits (G.3.1), one row at a time so that no run
//! crosses a row boundary, and padded to even length. The frame starts with a 64-byte header:
//! the number of segments followed by fifteen 32-bit little-endian segment offsets (G.5).
//!
//! Both directions are public so that tests elsewhere can check decoded pixels against the
//! generators without a DICOM toolkit.

use thiserror::Error;

/// Maximum number of segments in one RLE frame (G.5).
pub const MAX_SEGMENTS: usize = 15;

/// Layout of one uncompressed frame, as stored in native little-endian pixel data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameLayout {
    /// (0028,0010) Rows.
    pub rows: u16,
    /// (0028,0011) Columns.
    pub cols: u16,
    /// (0028,0002) Samples per Pixel; samples are interleaved (Planar Configuration 0).
    pub samples_per_pixel: u8,
    /// (0028,0100) Bits Allocated divided by 8.
    pub bytes_per_sample: u8,
}

impl FrameLayout {
    fn pixels(&self) -> usize {
        usize::from(self.rows) * usize::from(self.cols)
    }

    fn segments(&self) -> usize {
        usize::from(self.samples_per_pixel) * usize::from(self.bytes_per_sample)
    }

    /// Size in bytes of the native frame.
    pub fn frame_len(&self) -> usize {
        self.pixels() * self.segments()
    }
}

/// Why an RLE frame could not be decoded.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum DecodeError {
    /// The frame is shorter than the 64-byte header.
    #[error("RLE frame of {len} bytes is shorter than its 64-byte header")]
    TruncatedHeader {
        /// Length of the frame.
        len: usize,
    },
    /// The header names a different number of segments than the layout needs.
    #[error("RLE header has {found} segments, the image layout needs {expected}")]
    SegmentCount {
        /// Segments needed by the layout.
        expected: usize,
        /// Segments in the header.
        found: usize,
    },
    /// A segment offset lies outside the frame or before the previous one.
    #[error("RLE segment {segment} has an invalid offset")]
    SegmentOffset {
        /// Zero-based segment index.
        segment: usize,
    },
    /// A segment ended before producing one byte per pixel.
    #[error("RLE segment {segment} decodes to too few bytes")]
    ShortSegment {
        /// Zero-based segment index.
        segment: usize,
    },
}

/// Encodes one native little-endian frame as an RLE frame (header plus segments, even length).
///
/// # Panics
///
/// If `native.len()` differs from `layout.frame_len()` or the layout needs more than 15 segments.
pub fn encode_frame(native: &[u8], layout: FrameLayout) -> Vec<u8> {
    assert_eq!(native.len(), layout.frame_len(), "frame size mismatch");
    let n_seg = layout.segments();
    assert!(n_seg <= MAX_SEGMENTS, "too many RLE segments");
    let bps = usize::from(layout.bytes_per_sample);
    let cols = usize::from(layout.cols);

    let mut out = vec![0_u8; 64];
    out[0..4].copy_from_slice(&(n_seg as u32).to_le_bytes());
    let mut plane = vec![0_u8; layout.pixels()];
    for seg in 0..n_seg {
        let offset = out.len() as u32;
        out[4 + 4 * seg..8 + 4 * seg].copy_from_slice(&offset.to_le_bytes());
        // Segment order: sample by sample, most significant byte first (G.2).
        let sample = seg / bps;
        let byte = bps - 1 - seg % bps;
        let stride = n_seg;
        for (p, dst) in plane.iter_mut().enumerate() {
            *dst = native[p * stride + sample * bps + byte];
        }
        for row in plane.chunks(cols) {
            packbits(row, &mut out);
        }
        if out.len() % 2 == 1 {
            out.push(0);
        }
    }
    out
}

/// PackBits-encodes one row (G.3.1): runs of 3 or more equal bytes become replicate runs,
/// everything else literal runs; runs never exceed 128 bytes.
fn packbits(row: &[u8], out: &mut Vec<u8>) {
    let mut i = 0;
    let mut literal_start = 0;
    while i < row.len() {
        let mut run = 1;
        while i + run < row.len() && run < 128 && row[i + run] == row[i] {
            run += 1;
        }
        if run >= 3 {
            flush_literal(&row[literal_start..i], out);
            out.push((257 - run) as u8);
            out.push(row[i]);
            i += run;
            literal_start = i;
        } else {
            i += run;
        }
    }
    flush_literal(&row[literal_start..], out);
}

fn flush_literal(bytes: &[u8], out: &mut Vec<u8>) {
    for chunk in bytes.chunks(128) {
        out.push((chunk.len() - 1) as u8);
        out.extend_from_slice(chunk);
    }
}

/// Decodes one RLE frame back to native little-endian pixel bytes.
pub fn decode_frame(frame: &[u8], layout: FrameLayout) -> Result<Vec<u8>, DecodeError> {
    if frame.len() < 64 {
        return Err(DecodeError::TruncatedHeader { len: frame.len() });
    }
    let word = |i: usize| u32::from_le_bytes(frame[4 * i..4 * i + 4].try_into().unwrap()) as usize;
    let n_seg = layout.segments();
    if word(0) != n_seg {
        return Err(DecodeError::SegmentCount {
            expected: n_seg,
            found: word(0),
        });
    }
    let bps = usize::from(layout.bytes_per_sample);
    let pixels = layout.pixels();
    let mut native = vec![0_u8; layout.frame_len()];
    let mut plane = Vec::with_capacity(pixels);
    for seg in 0..n_seg {
        let start = word(1 + seg);
        let end = if seg + 1 < n_seg {
            word(2 + seg)
        } else {
            frame.len()
        };
        if start < 64 || start > end || end > frame.len() {
            return Err(DecodeError::SegmentOffset { segment: seg });
        }
        unpackbits(&frame[start..end], pixels, &mut plane);
        if plane.len() < pixels {
            return Err(DecodeError::ShortSegment { segment: seg });
        }
        let sample = seg / bps;
        let byte = bps - 1 - seg % bps;
        for (p, &v) in plane.iter().enumerate() {
            native[p * n_seg + sample * bps + byte] = v;
        }
    }
    Ok(native)
}

/// Decodes PackBits until `want` bytes are produced or input ends (trailing padding is ignored).
fn unpackbits(src: &[u8], want: usize, out: &mut Vec<u8>) {
    out.clear();
    let mut i = 0;
    while i < src.len() && out.len() < want {
        let n = src[i] as i8;
        i += 1;
        if n >= 0 {
            let len = n as usize + 1;
            let end = (i + len).min(src.len());
            out.extend_from_slice(&src[i..end]);
            i = end;
        } else if n != -128 {
            let len = 1 - n as isize;
            if let Some(&b) = src.get(i) {
                out.extend(std::iter::repeat_n(b, len as usize));
            }
            i += 1;
        }
    }
    out.truncate(want);
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng, rngs::StdRng};

    fn roundtrip(native: &[u8], layout: FrameLayout) -> Vec<u8> {
        let enc = encode_frame(native, layout);
        assert_eq!(enc.len() % 2, 0);
        let dec = decode_frame(&enc, layout).unwrap();
        assert_eq!(dec, native);
        enc
    }

    #[test]
    fn packbits_runs() {
        let mut out = Vec::new();
        packbits(&[7, 7, 7, 7, 1, 2, 2, 3], &mut out);
        assert_eq!(out, vec![0xFD, 7, 3, 1, 2, 2, 3]);
        out.clear();
        packbits(&[9; 300], &mut out);
        assert_eq!(out, vec![0x81, 9, 0x81, 9, 0xD5, 9]);
    }

    #[test]
    fn roundtrip_random_and_flat() {
        let mut rng = StdRng::seed_from_u64(7);
        let layout = FrameLayout {
            rows: 17,
            cols: 259,
            samples_per_pixel: 3,
            bytes_per_sample: 1,
        };
        let random: Vec<u8> = (0..layout.frame_len()).map(|_| rng.r#gen()).collect();
        roundtrip(&random, layout);
        // Mostly flat with occasional changes exercises run/literal switching.
        let blocky: Vec<u8> = (0..layout.frame_len())
            .map(|i| {
                if rng.gen_ratio(1, 9) {
                    rng.r#gen()
                } else {
                    (i / 50) as u8
                }
            })
            .collect();
        let enc = roundtrip(&blocky, layout);
        assert!(enc.len() < blocky.len());
    }

    #[test]
    fn roundtrip_ct_slice() {
        let hu = crate::ct_head_slice(3, 150, 300, 128, 128);
        let native: Vec<u8> = hu.iter().flat_map(|&v| (v + 1024).to_le_bytes()).collect();
        let layout = FrameLayout {
            rows: 128,
            cols: 128,
            samples_per_pixel: 1,
            bytes_per_sample: 2,
        };
        let enc = roundtrip(&native, layout);
        // Two segments, the high bytes first.
        assert_eq!(&enc[0..8], &[2, 0, 0, 0, 64, 0, 0, 0]);
    }

    #[test]
    fn rejects_bad_headers() {
        let layout = FrameLayout {
            rows: 2,
            cols: 2,
            samples_per_pixel: 1,
            bytes_per_sample: 1,
        };
        assert_eq!(
            decode_frame(&[0; 10], layout),
            Err(DecodeError::TruncatedHeader { len: 10 })
        );
        let mut enc = encode_frame(&[1, 2, 3, 4], layout);
        enc[0] = 2;
        assert!(matches!(
            decode_frame(&enc, layout),
            Err(DecodeError::SegmentCount { .. })
        ));
    }
}
