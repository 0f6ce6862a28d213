//! Transcoding a Part 10 file to another transfer syntax.
//!
//! Encapsulated sources are decoded by this crate into canonical native pixel data first (so
//! planar configuration, native YBR_FULL_422 and the colour space the codec really returns are
//! handled once, in [`crate::pixels`]); dicom-pixeldata's [`Transcode`] then changes the transfer
//! syntax and encodes when the target is encapsulated.

use dicom_core::{DataElement, Length, PrimitiveValue, VR};
use dicom_dictionary_std::{tags, uids};
use dicom_encoding::transfer_syntax::Codec;
use dicom_object::DefaultDicomObject;
use dicom_pixeldata::Transcode;
use dicom_transfer_syntax_registry::entries::EXPLICIT_VR_LITTLE_ENDIAN;

use crate::CodecError;
use crate::open::{chain, lookup_ts, open_bytes, read_meta, trim_uid};
use crate::pixels::{ImageInfo, decode_frames, image_info, is_jpeg_ls, to_planar};

/// Syntaxes whose pixel data lives elsewhere (JPIP): never converted.
fn is_jpip(uid: &str) -> bool {
    matches!(
        uid,
        uids::JPIP_REFERENCED
            | uids::JPIP_REFERENCED_DEFLATE
            | uids::JPIPHTJ2K_REFERENCED
            | uids::JPIPHTJ2K_REFERENCED_DEFLATE
    )
}

pub(crate) fn can_transcode(from: &str, to: &str) -> bool {
    let (from, to) = (trim_uid(from), trim_uid(to));
    if from.is_empty() || to.is_empty() {
        return false;
    }
    if from == to {
        return true;
    }
    if is_jpip(from) || is_jpip(to) {
        return false;
    }
    let (Some(src), Some(dst)) = (lookup_ts(from), lookup_ts(to)) else {
        return false;
    };
    let readable = matches!(
        src.codec(),
        Codec::None | Codec::Dataset(Some(_)) | Codec::EncapsulatedPixelData(Some(_), _)
    );
    let writable = matches!(
        dst.codec(),
        Codec::None | Codec::Dataset(Some(_)) | Codec::EncapsulatedPixelData(_, Some(_))
    );
    readable && writable
}

pub(crate) fn transcode_bytes(bytes: Vec<u8>, to: &str) -> Result<Vec<u8>, CodecError> {
    let to = trim_uid(to);
    let (meta, _, _) = read_meta(&bytes)?;
    let from = trim_uid(meta.transfer_syntax()).to_string();
    if from == to {
        return Ok(bytes);
    }
    if !can_transcode(&from, to) {
        return Err(CodecError::Unsupported(format!(
            "transcoding from transfer syntax {from} to {to}"
        )));
    }
    let target = lookup_ts(to).expect("checked by can_transcode");
    let mut obj = open_bytes(&bytes)?;
    drop(bytes);

    if obj.get(tags::PIXEL_DATA).is_none() {
        // nothing to decode: only the encoding of the data set changes
        obj.update_meta(|m| m.set_transfer_syntax(target));
    } else {
        let info = image_info(&obj)?;
        let src_encapsulated = lookup_ts(&from).is_some_and(|t| t.is_encapsulated_pixel_data());
        let dst_encapsulated = target.is_encapsulated_pixel_data();
        let to_jpeg_baseline = to == uids::JPEG_BASELINE8_BIT;
        if dst_encapsulated {
            check_encodable(&info, to_jpeg_baseline, target.name())?;
        }

        // decode to canonical native pixel data ourselves where dicom-rs would get it wrong
        let mut restore_pi = None;
        // dicom-rs hands colour-by-pixel samples to CharLS in its default non-interleaved
        // (colour-by-plane) mode: give it planes so the stream is standard
        let to_jpeg_ls_colour = is_jpeg_ls(to) && info.spp == 3;
        let colour_needs_care = info.spp == 3 && (info.planar || info.photometric != "RGB");
        if src_encapsulated || (dst_encapsulated && colour_needs_care) || to_jpeg_ls_colour {
            let (mut data, mut pi) = decode_frames(&obj, &info, 0, info.frames)?;
            if to_jpeg_baseline && info.spp == 3 && pi == "YBR_FULL" {
                // the JPEG encoder expects RGB input and converts it to YCbCr itself
                ybr_full_to_rgb(&mut data);
                pi = "RGB".into();
            }
            if to_jpeg_ls_colour {
                to_planar(&info, &mut data);
            }
            put_native_pixels(&mut obj, &info, data, &pi);
            if info.spp == 3 && pi != "RGB" {
                // dicom-rs labels every decoded colour image RGB; the samples are not converted
                restore_pi = Some(pi);
            }
        }

        let had_frames = obj.get(tags::NUMBER_OF_FRAMES).is_some();
        obj.transcode(target).map_err(|e| {
            CodecError::Unsupported(format!(
                "transcoding to {} failed: {}",
                target.name(),
                chain(&e)
            ))
        })?;

        if let Some(pi) = restore_pi {
            obj.put(DataElement::new(
                tags::PHOTOMETRIC_INTERPRETATION,
                VR::CS,
                PrimitiveValue::from(pi),
            ));
        }
        if to_jpeg_baseline && info.bits_stored > 8 {
            keep_values_after_narrowing(&mut obj, info.bits_stored - 8);
        }
        if !dst_encapsulated {
            obj.remove_element(tags::ENCAPSULATED_PIXEL_DATA_VALUE_TOTAL_LENGTH);
        }
        if !had_frames && info.frames == 1 {
            // dicom-rs adds Number of Frames when encoding; not every IOD has it
            obj.remove_element(tags::NUMBER_OF_FRAMES);
        }
    }

    let mut out = Vec::new();
    obj.write_all(&mut out).map_err(|e| {
        CodecError::Invalid(format!("cannot write the transcoded object: {}", chain(&e)))
    })?;
    Ok(out)
}

/// The encoders of dicom-rs take 8- or 16-bit samples only; the JPEG baseline encoder narrows
/// unsigned samples to 8 bits by shifting.
fn check_encodable(info: &ImageInfo, jpeg_baseline: bool, name: &str) -> Result<(), CodecError> {
    if !matches!(info.bits_allocated, 8 | 16) {
        return Err(CodecError::Unsupported(format!(
            "encoding {}-bit samples to {name}",
            info.bits_allocated
        )));
    }
    if jpeg_baseline {
        if info.signed {
            return Err(CodecError::Unsupported(format!(
                "encoding signed samples to {name}"
            )));
        }
        if info.bits_stored < 8 {
            return Err(CodecError::Unsupported(format!(
                "encoding {}-bit samples to {name}",
                info.bits_stored
            )));
        }
        if info.spp == 1 && !info.photometric.starts_with("MONOCHROME") {
            return Err(CodecError::Unsupported(format!(
                "encoding {} to {name}",
                info.photometric
            )));
        }
    }
    Ok(())
}

/// Replaces the pixel data with canonical native samples and makes the object a consistent
/// Explicit VR Little Endian object.
fn put_native_pixels(obj: &mut DefaultDicomObject, info: &ImageInfo, mut data: Vec<u8>, pi: &str) {
    let element = if info.bits_allocated == 16 {
        let words: Vec<u16> = data
            .chunks_exact(2)
            .map(|c| u16::from_le_bytes([c[0], c[1]]))
            .collect();
        let len = words.len() as u32 * 2;
        DataElement::new_with_len(
            tags::PIXEL_DATA,
            VR::OW,
            Length::defined(len),
            PrimitiveValue::U16(words.into()),
        )
    } else {
        if data.len() % 2 == 1 {
            data.push(0);
        }
        let len = data.len() as u32;
        DataElement::new_with_len(
            tags::PIXEL_DATA,
            VR::OB,
            Length::defined(len),
            PrimitiveValue::from(data),
        )
    };
    obj.put(element);
    obj.put(DataElement::new(
        tags::PHOTOMETRIC_INTERPRETATION,
        VR::CS,
        PrimitiveValue::from(pi),
    ));
    if info.spp > 1 {
        obj.put(DataElement::new(
            tags::PLANAR_CONFIGURATION,
            VR::US,
            PrimitiveValue::from(0u16),
        ));
    }
    if info.bits_allocated == 1 {
        obj.put(DataElement::new(
            tags::BITS_ALLOCATED,
            VR::US,
            PrimitiveValue::from(8u16),
        ));
    }
    obj.remove_element(tags::ENCAPSULATED_PIXEL_DATA_VALUE_TOTAL_LENGTH);
    obj.update_meta(|m| m.set_transfer_syntax(&EXPLICIT_VR_LITTLE_ENDIAN));
}

/// YBR_FULL to RGB (PS3.3 C.7.6.3.1.2), 8-bit interleaved samples, in place.
pub(crate) fn ybr_full_to_rgb(data: &mut [u8]) {
    for px in data.chunks_exact_mut(3) {
        let [r, g, b] = ybr_to_rgb(px[0], px[1], px[2]);
        px.copy_from_slice(&[r, g, b]);
    }
}

pub(crate) fn ybr_to_rgb(y: u8, cb: u8, cr: u8) -> [u8; 3] {
    let (y, cb, cr) = (f64::from(y), f64::from(cb) - 128.0, f64::from(cr) - 128.0);
    let c = |v: f64| v.round().clamp(0.0, 255.0) as u8;
    [
        c(y + 1.402 * cr),
        c(y - 0.344_136 * cb - 0.714_136 * cr),
        c(y + 1.772 * cb),
    ]
}

/// The JPEG baseline encoder keeps the top 8 of `bits_stored` bits (`v >> shift`). Scale the
/// Rescale Slope (or, without one, the stored-value window) so modality values and windows keep
/// their meaning.
fn keep_values_after_narrowing(obj: &mut DefaultDicomObject, shift: u16) {
    let factor = f64::from(1u32 << shift);
    let slope = obj
        .get(tags::RESCALE_SLOPE)
        .and_then(|e| e.to_float64().ok());
    if let Some(slope) = slope {
        obj.put(DataElement::new(
            tags::RESCALE_SLOPE,
            VR::DS,
            PrimitiveValue::from(ds(slope * factor)),
        ));
        return;
    }
    for tag in [tags::WINDOW_CENTER, tags::WINDOW_WIDTH] {
        let values = obj.get(tag).and_then(|e| e.to_multi_float64().ok());
        if let Some(values) = values {
            let strs: Vec<String> = values.iter().map(|v| ds(v / factor)).collect();
            obj.put(DataElement::new(
                tag,
                VR::DS,
                PrimitiveValue::Strs(strs.into()),
            ));
        }
    }
}

/// Formats a Decimal String value (at most 16 characters).
fn ds(v: f64) -> String {
    let s = format!("{v}");
    if s.len() <= 16 {
        return s;
    }
    for p in (0..=10).rev() {
        let s = format!("{v:.p$}");
        let s = if s.contains('.') {
            s.trim_end_matches('0').trim_end_matches('.').to_string()
        } else {
            s
        };
        if s.len() <= 16 {
            return s;
        }
    }
    format!("{v:.6e}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use vesalius_core::uid;

    #[test]
    fn can_transcode_is_truthful() {
        // decodable sources to uncompressed
        for from in [
            uid::EXPLICIT_VR_LE,
            uid::IMPLICIT_VR_LE,
            uid::DEFLATED_EXPLICIT_VR_LE,
            uid::EXPLICIT_VR_BE,
            uid::JPEG_BASELINE,
            uid::JPEG_EXTENDED,
            uid::JPEG_LOSSLESS,
            uid::JPEG_LOSSLESS_SV1,
            uid::JPEG_LS_LOSSLESS,
            uid::JPEG_LS_NEAR_LOSSLESS,
            uid::JPEG_2000_LOSSLESS,
            uid::JPEG_2000,
            uid::HTJ2K_LOSSLESS,
            uid::HTJ2K_LOSSLESS_RPCL,
            uid::HTJ2K,
            uid::RLE_LOSSLESS,
        ] {
            assert!(can_transcode(from, uid::EXPLICIT_VR_LE), "{from}");
            assert!(can_transcode(from, uid::IMPLICIT_VR_LE), "{from}");
            assert!(can_transcode(from, uid::JPEG_BASELINE), "{from}");
            assert!(can_transcode(from, uid::JPEG_LS_LOSSLESS), "{from}");
            assert!(can_transcode(from, uid::DEFLATED_EXPLICIT_VR_LE), "{from}");
        }
        // no encoders
        for to in [
            uid::RLE_LOSSLESS,
            uid::JPEG_LOSSLESS_SV1,
            uid::JPEG_LOSSLESS,
            uid::JPEG_EXTENDED,
            uid::JPEG_2000_LOSSLESS,
            uid::JPEG_2000,
            uid::HTJ2K_LOSSLESS,
            uid::HTJ2K,
        ] {
            assert!(!can_transcode(uid::EXPLICIT_VR_LE, to), "{to}");
        }
        assert!(can_transcode(uid::RLE_LOSSLESS, uid::RLE_LOSSLESS));
        assert!(can_transcode("1.2.840.10008.1.2.1\0", uid::IMPLICIT_VR_LE));
        assert!(!can_transcode("1.2.3.4", uid::EXPLICIT_VR_LE));
        assert!(!can_transcode(uid::EXPLICIT_VR_LE, "1.2.3.4"));
        assert!(!can_transcode(
            uid::EXPLICIT_VR_LE,
            uids::JPIP_REFERENCED_DEFLATE
        ));
        // MPEG-2: known, not decodable
        assert!(!can_transcode(
            "1.2.840.10008.1.2.4.100",
            uid::EXPLICIT_VR_LE
        ));
    }

    #[test]
    fn decimal_strings_fit() {
        assert_eq!(ds(16.0), "16");
        assert_eq!(ds(0.5), "0.5");
        assert!(ds(1.0 / 3.0).len() <= 16);
        assert!(ds(123_456_789.123_456_78).len() <= 16);
    }

    #[test]
    fn ybr_grey_stays_grey() {
        assert_eq!(ybr_to_rgb(100, 128, 128), [100, 100, 100]);
        let [r, g, b] = ybr_to_rgb(76, 85, 255);
        assert!(r >= 253 && g <= 1 && b <= 1, "{r} {g} {b}");
    }
}
