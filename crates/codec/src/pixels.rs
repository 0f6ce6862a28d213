//! Image attributes and frame decoding into canonical native form.
//!
//! Canonical form: little endian samples, interleaved (planar configuration 0), 1-bit samples
//! expanded to one byte (0 or 1), unused high bits cleared (unsigned) or filled with the sign
//! (signed), native YBR_FULL_422 expanded to YBR_FULL, and the photometric interpretation naming
//! the colour space the samples really are in after the codec (the JPEG lossy decoder converts to
//! RGB, JPEG 2000 converts YBR_ICT/YBR_RCT to RGB, RLE / JPEG-LS / JPEG lossless keep the stored
//! colour space; JPEG-LS streams coded colour-by-plane are re-interleaved).

use std::borrow::Cow;

use dicom_core::Tag;
use dicom_core::header::HasLength;
use dicom_dictionary_std::{tags, uids};
use dicom_encoding::transfer_syntax::{Codec, TransferSyntax};
use dicom_object::{DefaultDicomObject, InMemDicomObject};
use dicom_pixeldata::PixelDecoder;

use crate::open::{chain, lookup_ts};
use crate::{CodecError, DecodedFrame};

/// The image pixel attributes of an object.
#[derive(Debug, Clone)]
pub(crate) struct ImageInfo {
    pub rows: u16,
    pub cols: u16,
    pub spp: u16,
    pub bits_allocated: u16,
    pub bits_stored: u16,
    pub signed: bool,
    /// Planar configuration 1 (colour-by-plane).
    pub planar: bool,
    pub photometric: String,
    pub frames: u32,
}

fn get(obj: &InMemDicomObject, tag: Tag) -> Option<&dicom_object::mem::InMemElement> {
    obj.get(tag).filter(|e| !e.is_empty())
}

fn get_u16(obj: &InMemDicomObject, tag: Tag) -> Result<Option<u16>, CodecError> {
    match get(obj, tag) {
        None => Ok(None),
        Some(e) => e.to_int::<u16>().map(Some).map_err(|_| {
            CodecError::Invalid(format!("attribute {tag} is not a valid unsigned short"))
        }),
    }
}

fn req_u16(obj: &InMemDicomObject, tag: Tag, name: &str) -> Result<u16, CodecError> {
    get_u16(obj, tag)?.ok_or_else(|| CodecError::Invalid(format!("missing {name} {tag}")))
}

pub(crate) fn get_str(obj: &InMemDicomObject, tag: Tag) -> Option<String> {
    get(obj, tag).and_then(|e| e.to_str().ok()).map(|s| {
        s.trim_matches(|c: char| c.is_whitespace() || c == '\0')
            .to_string()
    })
}

/// Reads and checks the image pixel module of `obj`.
pub(crate) fn image_info(obj: &InMemDicomObject) -> Result<ImageInfo, CodecError> {
    if obj.get(tags::PIXEL_DATA).is_none() {
        if obj.get(tags::FLOAT_PIXEL_DATA).is_some()
            || obj.get(tags::DOUBLE_FLOAT_PIXEL_DATA).is_some()
        {
            return Err(CodecError::Unsupported(
                "float pixel data (7FE0,0008/0009)".into(),
            ));
        }
        return Err(CodecError::Invalid("the object has no Pixel Data".into()));
    }
    let rows = req_u16(obj, tags::ROWS, "Rows")?;
    let cols = req_u16(obj, tags::COLUMNS, "Columns")?;
    let spp = get_u16(obj, tags::SAMPLES_PER_PIXEL)?.unwrap_or(1);
    let bits_allocated = req_u16(obj, tags::BITS_ALLOCATED, "BitsAllocated")?;
    let bits_stored = get_u16(obj, tags::BITS_STORED)?.unwrap_or(bits_allocated);
    let signed = get_u16(obj, tags::PIXEL_REPRESENTATION)?.unwrap_or(0) == 1;
    let planar = get_u16(obj, tags::PLANAR_CONFIGURATION)?.unwrap_or(0) == 1;
    let photometric = get_str(obj, tags::PHOTOMETRIC_INTERPRETATION)
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| {
            if spp == 3 {
                "RGB".into()
            } else {
                "MONOCHROME2".into()
            }
        });
    let frames = match get(obj, tags::NUMBER_OF_FRAMES) {
        None => 1,
        Some(e) => match e.to_int::<i64>() {
            Ok(n) if n >= 1 && n <= i64::from(u32::MAX) => n as u32,
            _ => return Err(CodecError::Invalid("bad NumberOfFrames".into())),
        },
    };
    if rows == 0 || cols == 0 {
        return Err(CodecError::Invalid("Rows or Columns is zero".into()));
    }
    if spp != 1 && spp != 3 {
        return Err(CodecError::Unsupported(format!("SamplesPerPixel {spp}")));
    }
    if !matches!(bits_allocated, 1 | 8 | 16 | 32) {
        return Err(CodecError::Unsupported(format!(
            "BitsAllocated {bits_allocated}"
        )));
    }
    if bits_stored == 0 || bits_stored > bits_allocated {
        return Err(CodecError::Invalid(format!(
            "BitsStored {bits_stored} with BitsAllocated {bits_allocated}"
        )));
    }
    if bits_allocated == 1 && spp != 1 {
        return Err(CodecError::Invalid("1-bit colour pixel data".into()));
    }
    Ok(ImageInfo {
        rows,
        cols,
        spp,
        bits_allocated,
        bits_stored,
        signed,
        planar,
        photometric,
        frames,
    })
}

impl ImageInfo {
    pub fn pixels(&self) -> usize {
        self.rows as usize * self.cols as usize
    }

    /// Bytes per sample after decoding (1-bit samples are expanded to a byte).
    pub fn bytes_per_sample(&self) -> usize {
        (self.bits_allocated as usize).div_ceil(8)
    }

    /// Bytes of one decoded frame.
    pub fn frame_len(&self) -> usize {
        self.pixels() * self.spp as usize * self.bytes_per_sample()
    }
}

/// Checks that `frame` (1-based) exists.
pub(crate) fn check_frame(info: &ImageInfo, frame: u32) -> Result<(), CodecError> {
    if frame == 0 || frame > info.frames {
        return Err(CodecError::Invalid(format!(
            "frame {frame} out of range: the object has {} frame(s), numbered from 1",
            info.frames
        )));
    }
    Ok(())
}

/// Transfer syntaxes whose decoders convert YCbCr samples to RGB.
fn decoder_converts_to_rgb(ts_uid: &str, photometric: &str) -> bool {
    match photometric {
        "YBR_ICT" | "YBR_RCT" => true,
        _ => matches!(ts_uid, uids::JPEG_BASELINE8_BIT | uids::JPEG_EXTENDED12_BIT),
    }
}

/// The transfer syntax of `obj`, checked to be decodable.
pub(crate) fn source_ts(obj: &DefaultDicomObject) -> Result<&'static TransferSyntax, CodecError> {
    let uid = obj.meta().transfer_syntax();
    let ts = lookup_ts(uid)
        .ok_or_else(|| CodecError::Unsupported(format!("unknown transfer syntax {uid}")))?;
    match ts.codec() {
        Codec::EncapsulatedPixelData(None, _) => Err(CodecError::Unsupported(format!(
            "decoding pixel data in {} ({uid})",
            ts.name()
        ))),
        Codec::Dataset(None) => Err(CodecError::Unsupported(format!(
            "reading {} ({uid})",
            ts.name()
        ))),
        _ => Ok(ts),
    }
}

/// Decodes frames `first..first + count` (0-based) into canonical form, concatenated.
/// Returns the samples and the photometric interpretation they are in.
pub(crate) fn decode_frames(
    obj: &DefaultDicomObject,
    info: &ImageInfo,
    first: u32,
    count: u32,
) -> Result<(Vec<u8>, String), CodecError> {
    let ts = source_ts(obj)?;
    let mut out = Vec::new();
    out.try_reserve_exact(info.frame_len().saturating_mul(count as usize))
        .map_err(|_| CodecError::Invalid("pixel data too large to decode".into()))?;
    let photometric;
    if ts.is_encapsulated_pixel_data() {
        if info.bits_allocated == 1 {
            return Err(CodecError::Unsupported(
                "encapsulated 1-bit pixel data".into(),
            ));
        }
        photometric = if info.spp == 3 && decoder_converts_to_rgb(ts.uid(), &info.photometric) {
            "RGB".to_string()
        } else if info.photometric == "YBR_FULL_422" {
            // codecs return full resolution chroma
            "YBR_FULL".to_string()
        } else {
            info.photometric.clone()
        };
        // CharLS returns the samples in the layout of the stream: planar when the scan is not
        // interleaved (ILV 0, one component per scan), which dicom-rs does not undo
        let jpegls_planar = info.spp == 3
            && is_jpeg_ls(ts.uid())
            && first_fragment(obj, first, info.frames).is_some_and(jpegls_not_interleaved);
        for idx in first..first + count {
            let decoded = obj.decode_pixel_data_frame(idx).map_err(|e| {
                CodecError::Unsupported(format!(
                    "cannot decode frame {} of pixel data in {}: {}",
                    idx + 1,
                    ts.name(),
                    chain(&e)
                ))
            })?;
            let data = decoded.data();
            let want = info.frame_len();
            if data.len() < want {
                return Err(CodecError::Invalid(format!(
                    "frame {} decodes to {} bytes, expected {want}",
                    idx + 1,
                    data.len()
                )));
            }
            // codecs return samples in native byte order
            let start = out.len();
            if jpegls_planar {
                interleave(info, &data[..want], &mut out);
            } else {
                out.extend_from_slice(&data[..want]);
            }
            finish_frame(info, &mut out[start..]);
        }
    } else {
        let elem = obj
            .element(tags::PIXEL_DATA)
            .map_err(|e| CodecError::Invalid(format!("no Pixel Data: {e}")))?;
        let raw: Cow<'_, [u8]> = elem
            .to_bytes()
            .map_err(|e| CodecError::Invalid(format!("Pixel Data is not binary: {e}")))?;
        photometric = if info.photometric == "YBR_FULL_422" {
            "YBR_FULL".to_string()
        } else {
            info.photometric.clone()
        };
        for idx in first..first + count {
            let start = out.len();
            native_frame(info, &raw, idx, &mut out)?;
            finish_frame(info, &mut out[start..]);
        }
    }
    Ok((out, photometric))
}

fn too_short(idx: u32) -> CodecError {
    CodecError::Invalid(format!("Pixel Data too short for frame {}", idx + 1))
}

/// Appends native frame `idx` to `out`, interleaved, in native byte order.
fn native_frame(
    info: &ImageInfo,
    raw: &[u8],
    idx: u32,
    out: &mut Vec<u8>,
) -> Result<(), CodecError> {
    let pixels = info.pixels();
    if info.bits_allocated == 1 {
        // frames are packed contiguously at the bit level, least significant bit first
        let start_bit = idx as usize * pixels;
        let end_bit = start_bit + pixels;
        if end_bit.div_ceil(8) > raw.len() {
            return Err(too_short(idx));
        }
        out.extend((start_bit..end_bit).map(|b| (raw[b / 8] >> (b % 8)) & 1));
        return Ok(());
    }
    if info.photometric == "YBR_FULL_422" && info.spp == 3 && !info.planar {
        if info.bits_allocated != 8 {
            return Err(CodecError::Unsupported(
                "native YBR_FULL_422 with more than 8 bits".into(),
            ));
        }
        // two pixels in four bytes: Y1 Y2 Cb Cr
        let pairs = pixels.div_ceil(2);
        let len = pairs * 4;
        let frame = raw
            .get(idx as usize * len..(idx as usize + 1) * len)
            .ok_or_else(|| too_short(idx))?;
        let mut written = 0;
        for q in frame.chunks_exact(4) {
            for y in [q[0], q[1]] {
                if written < pixels {
                    out.extend_from_slice(&[y, q[2], q[3]]);
                    written += 1;
                }
            }
        }
        return Ok(());
    }
    let len = info.frame_len();
    let frame = raw
        .get(idx as usize * len..(idx as usize + 1) * len)
        .ok_or_else(|| too_short(idx))?;
    if info.spp > 1 && info.planar {
        interleave(info, frame, out);
    } else {
        out.extend_from_slice(frame);
    }
    Ok(())
}

/// Appends a colour-by-plane frame to `out` as colour-by-pixel.
fn interleave(info: &ImageInfo, frame: &[u8], out: &mut Vec<u8>) {
    let bps = info.bytes_per_sample();
    let pixels = info.pixels();
    let plane = pixels * bps;
    for p in 0..pixels {
        for s in 0..info.spp as usize {
            let at = s * plane + p * bps;
            out.extend_from_slice(&frame[at..at + bps]);
        }
    }
}

/// Reorders colour-by-pixel frames to colour-by-plane, in place.
pub(crate) fn to_planar(info: &ImageInfo, data: &mut [u8]) {
    let bps = info.bytes_per_sample();
    let pixels = info.pixels();
    let spp = info.spp as usize;
    let frame_len = info.frame_len();
    let mut tmp = vec![0u8; frame_len];
    for frame in data.chunks_exact_mut(frame_len) {
        for p in 0..pixels {
            for s in 0..spp {
                let from = (p * spp + s) * bps;
                let to = s * pixels * bps + p * bps;
                tmp[to..to + bps].copy_from_slice(&frame[from..from + bps]);
            }
        }
        frame.copy_from_slice(&tmp);
    }
}

pub(crate) fn is_jpeg_ls(ts_uid: &str) -> bool {
    matches!(ts_uid, uids::JPEGLS_LOSSLESS | uids::JPEGLS_NEAR_LOSSLESS)
}

/// The first fragment holding frame `idx` (or the first fragment when frames span fragments).
fn first_fragment(obj: &DefaultDicomObject, idx: u32, frames: u32) -> Option<&[u8]> {
    let elem = obj.get(tags::PIXEL_DATA)?;
    let fragments = elem.fragments()?;
    let f = if fragments.len() == frames as usize {
        fragments.get(idx as usize)?
    } else {
        fragments.first()?
    };
    Some(f.as_slice())
}

/// True when the first scan of a JPEG-LS stream is not interleaved (ILV 0).
pub(crate) fn jpegls_not_interleaved(data: &[u8]) -> bool {
    if data.len() < 4 || data[..2] != [0xFF, 0xD8] {
        return false;
    }
    let mut pos = 2;
    while pos + 4 <= data.len() {
        if data[pos] != 0xFF {
            return false;
        }
        let marker = data[pos + 1];
        if marker == 0xFF {
            pos += 1;
            continue;
        }
        let len = u16::from_be_bytes([data[pos + 2], data[pos + 3]]) as usize;
        if marker == 0xDA {
            // SOS: Ls, Ns, Ns × (Ci, Tmi), NEAR, ILV
            let Some(&ns) = data.get(pos + 4) else {
                return false;
            };
            let ilv = data.get(pos + 4 + 1 + 2 * ns as usize + 1).copied();
            return ns == 1 || ilv == Some(0);
        }
        pos += 2 + len;
    }
    false
}

/// Converts one frame in native byte order to little endian and clears/sign-extends the bits
/// above BitsStored.
fn finish_frame(info: &ImageInfo, frame: &mut [u8]) {
    let bs = u32::from(info.bits_stored);
    match info.bits_allocated {
        8 if bs < 8 => {
            for v in frame.iter_mut() {
                *v = fix_bits(u32::from(*v), bs, info.signed) as u8;
            }
        }
        16 => {
            for c in frame.chunks_exact_mut(2) {
                let v = u32::from(u16::from_ne_bytes([c[0], c[1]]));
                let v = if bs < 16 {
                    fix_bits(v, bs, info.signed)
                } else {
                    v
                };
                c.copy_from_slice(&(v as u16).to_le_bytes());
            }
        }
        32 => {
            for c in frame.chunks_exact_mut(4) {
                let v = u32::from_ne_bytes([c[0], c[1], c[2], c[3]]);
                let v = if bs < 32 {
                    fix_bits(v, bs, info.signed)
                } else {
                    v
                };
                c.copy_from_slice(&v.to_le_bytes());
            }
        }
        _ => {}
    }
}

fn fix_bits(v: u32, bs: u32, signed: bool) -> u32 {
    let mask = (1u32 << bs) - 1;
    let v = v & mask;
    if signed && v & (1 << (bs - 1)) != 0 {
        v | !mask
    } else {
        v
    }
}

/// Decodes one frame (1-based) of `obj`.
pub(crate) fn decode_one(obj: &DefaultDicomObject, frame: u32) -> Result<DecodedFrame, CodecError> {
    let info = image_info(obj)?;
    check_frame(&info, frame)?;
    let (data, photometric) = decode_frames(obj, &info, frame - 1, 1)?;
    Ok(DecodedFrame {
        rows: info.rows,
        columns: info.cols,
        samples_per_pixel: info.spp,
        bits_allocated: if info.bits_allocated == 1 {
            8
        } else {
            info.bits_allocated
        },
        photometric,
        data,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(spp: u16, ba: u16, bs: u16, signed: bool, planar: bool, pi: &str) -> ImageInfo {
        ImageInfo {
            rows: 2,
            cols: 2,
            spp,
            bits_allocated: ba,
            bits_stored: bs,
            signed,
            planar,
            photometric: pi.into(),
            frames: 2,
        }
    }

    #[test]
    fn planar_is_interleaved() {
        let i = info(3, 8, 8, false, true, "RGB");
        let raw: Vec<u8> = (0..24).collect();
        let mut out = Vec::new();
        native_frame(&i, &raw, 1, &mut out).unwrap();
        assert_eq!(out[..6], [12, 16, 20, 13, 17, 21]);
    }

    #[test]
    fn one_bit_frames_are_bit_packed() {
        let i = info(1, 1, 1, false, false, "MONOCHROME2");
        // frame 1 = bits 0..4, frame 2 = bits 4..8
        let raw = [0b1010_0110u8];
        let mut out = Vec::new();
        native_frame(&i, &raw, 0, &mut out).unwrap();
        native_frame(&i, &raw, 1, &mut out).unwrap();
        assert_eq!(out, [0, 1, 1, 0, 0, 1, 0, 1]);
    }

    #[test]
    fn ybr_422_is_expanded() {
        let i = info(3, 8, 8, false, false, "YBR_FULL_422");
        let raw = [10, 11, 100, 200, 12, 13, 101, 201];
        let mut out = Vec::new();
        native_frame(&i, &raw, 0, &mut out).unwrap();
        assert_eq!(
            out,
            [10, 100, 200, 11, 100, 200, 12, 101, 201, 13, 101, 201]
        );
        assert!(native_frame(&i, &raw, 1, &mut out).is_err());
    }

    #[test]
    fn high_bits_are_cleared_or_sign_extended() {
        assert_eq!(fix_bits(0xF800, 12, false), 0x800);
        assert_eq!(fix_bits(0x0800, 12, true) as u16, 0xF800);
        assert_eq!(fix_bits(0x07FF, 12, true), 0x07FF);
        let i = info(1, 16, 12, true, false, "MONOCHROME2");
        let mut f = 0x0FFFu16.to_ne_bytes().to_vec();
        finish_frame(&i, &mut f);
        assert_eq!(i16::from_le_bytes([f[0], f[1]]), -1);
    }
}
