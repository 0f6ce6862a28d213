//! Rendering one frame to an 8-bit JPEG or PNG.
//!
//! Monochrome: stored value → Modality LUT (Rescale Slope/Intercept, top level or functional
//! groups) → VOI (requested window with LINEAR; else the object's first window with its VOI LUT
//! Function; else its first VOI LUT Sequence item; else min/max of the frame) → 0..255, inverted for
//! MONOCHROME1. Colour: RGB as is (16-bit samples keep their top 8 stored bits), YBR_FULL converted
//! to RGB, PALETTE COLOR looked up in its (non-segmented) palette.

use dicom_core::Tag;
use dicom_core::header::HasLength;
use dicom_dictionary_std::tags;
use dicom_object::{DefaultDicomObject, InMemDicomObject};
use dicom_pixeldata::{VoiLutFunction, WindowLevel, WindowLevelTransform};
use image::codecs::jpeg::JpegEncoder;
use image::codecs::png::PngEncoder;
use image::imageops::FilterType;
use image::{DynamicImage, GrayImage, RgbImage};

use crate::pixels::{ImageInfo, check_frame, decode_frames, get_str, image_info};
use crate::transcode::ybr_full_to_rgb;
use crate::{CodecError, ImageFormat, RenderOptions};

pub(crate) fn render_obj(
    obj: &DefaultDicomObject,
    opts: &RenderOptions,
) -> Result<Vec<u8>, CodecError> {
    let info = image_info(obj)?;
    check_frame(&info, opts.frame)?;
    let idx = opts.frame - 1;
    let (mut data, pi) = decode_frames(obj, &info, idx, 1)?;
    let (w, h) = (u32::from(info.cols), u32::from(info.rows));
    let bad = || CodecError::Invalid("decoded frame has the wrong size".into());
    let img = match pi.as_str() {
        "MONOCHROME1" | "MONOCHROME2" => {
            let grey = monochrome(obj, &info, idx, &data, opts.window, pi == "MONOCHROME1")?;
            DynamicImage::ImageLuma8(GrayImage::from_raw(w, h, grey).ok_or_else(bad)?)
        }
        "RGB" | "YBR_FULL" => {
            if info.bits_allocated > 8 {
                data = to_8bit(&info, &data);
            }
            if pi == "YBR_FULL" {
                ybr_full_to_rgb(&mut data);
            }
            DynamicImage::ImageRgb8(RgbImage::from_raw(w, h, data).ok_or_else(bad)?)
        }
        "PALETTE COLOR" => {
            let rgb = palette(obj, &info, &data)?;
            DynamicImage::ImageRgb8(RgbImage::from_raw(w, h, rgb).ok_or_else(bad)?)
        }
        other => {
            return Err(CodecError::Unsupported(format!(
                "rendering photometric interpretation {other}"
            )));
        }
    };
    let img = match opts.viewport {
        Some(viewport) => {
            let (nw, nh) = fit((w, h), viewport);
            if (nw, nh) == (w, h) {
                img
            } else {
                img.resize_exact(nw, nh, FilterType::Triangle)
            }
        }
        None => img,
    };
    encode(&img, opts.format, opts.quality)
}

/// The largest size within `viewport` keeping the aspect ratio; never scales up. A zero bound
/// leaves that dimension unconstrained.
pub(crate) fn fit((w, h): (u32, u32), (mw, mh): (u32, u32)) -> (u32, u32) {
    let mw = if mw == 0 { w } else { mw };
    let mh = if mh == 0 { h } else { mh };
    if w <= mw && h <= mh {
        return (w, h);
    }
    let s = f64::min(f64::from(mw) / f64::from(w), f64::from(mh) / f64::from(h));
    let nw = ((f64::from(w) * s).round() as u32).clamp(1, mw);
    let nh = ((f64::from(h) * s).round() as u32).clamp(1, mh);
    (nw, nh)
}

fn encode(img: &DynamicImage, format: ImageFormat, quality: u8) -> Result<Vec<u8>, CodecError> {
    let mut out = Vec::new();
    let res = match format {
        ImageFormat::Jpeg => img.write_with_encoder(JpegEncoder::new_with_quality(
            &mut out,
            quality.clamp(1, 100),
        )),
        ImageFormat::Png => img.write_with_encoder(PngEncoder::new(&mut out)),
    };
    res.map_err(|e| CodecError::Io(std::io::Error::other(format!("image encoding: {e}"))))?;
    Ok(out)
}

/// Sample values of a canonical monochrome or palette frame.
fn samples(info: &ImageInfo, data: &[u8]) -> Vec<f64> {
    match info.bits_allocated {
        16 => data
            .chunks_exact(2)
            .map(|c| {
                let v = u16::from_le_bytes([c[0], c[1]]);
                if info.signed {
                    f64::from(v as i16)
                } else {
                    f64::from(v)
                }
            })
            .collect(),
        32 => data
            .chunks_exact(4)
            .map(|c| {
                let v = u32::from_le_bytes([c[0], c[1], c[2], c[3]]);
                if info.signed {
                    f64::from(v as i32)
                } else {
                    f64::from(v)
                }
            })
            .collect(),
        _ => data
            .iter()
            .map(|&v| {
                if info.signed && info.bits_allocated == 8 {
                    f64::from(v as i8)
                } else {
                    f64::from(v)
                }
            })
            .collect(),
    }
}

/// Colour samples of more than 8 bits: keep the top 8 stored bits.
fn to_8bit(info: &ImageInfo, data: &[u8]) -> Vec<u8> {
    let shift = info.bits_stored.saturating_sub(8);
    samples(info, data)
        .into_iter()
        .map(|v| ((v.max(0.0) as u64) >> shift).min(255) as u8)
        .collect()
}

/// The item of a functional group macro `seq` for frame `idx`: per-frame first, then shared.
fn functional_group(obj: &InMemDicomObject, idx: u32, seq: Tag) -> Option<&InMemDicomObject> {
    let per_frame = obj
        .get(tags::PER_FRAME_FUNCTIONAL_GROUPS_SEQUENCE)
        .and_then(|e| e.items())
        .and_then(|items| items.get(idx as usize))
        .and_then(|item| item.get(seq))
        .and_then(|e| e.items())
        .and_then(|items| items.first());
    per_frame.or_else(|| {
        obj.get(tags::SHARED_FUNCTIONAL_GROUPS_SEQUENCE)
            .and_then(|e| e.items())
            .and_then(|items| items.first())
            .and_then(|item| item.get(seq))
            .and_then(|e| e.items())
            .and_then(|items| items.first())
    })
}

fn float(obj: &InMemDicomObject, tag: Tag) -> Option<f64> {
    obj.get(tag)
        .filter(|e| !e.is_empty())
        .and_then(|e| e.to_multi_float64().ok())
        .and_then(|v| v.first().copied())
        .filter(|v| v.is_finite())
}

/// Rescale slope and intercept for frame `idx`.
fn rescale(obj: &InMemDicomObject, idx: u32) -> (f64, f64) {
    let from = |o: &InMemDicomObject| {
        float(o, tags::RESCALE_SLOPE).map(|s| (s, float(o, tags::RESCALE_INTERCEPT).unwrap_or(0.0)))
    };
    from(obj)
        .or_else(|| {
            functional_group(obj, idx, tags::PIXEL_VALUE_TRANSFORMATION_SEQUENCE).and_then(from)
        })
        .filter(|(s, _)| *s != 0.0)
        .unwrap_or((1.0, 0.0))
}

/// The object's first window for frame `idx`, with its VOI LUT function.
fn object_window(obj: &InMemDicomObject, idx: u32) -> Option<WindowLevelTransform> {
    let from = |o: &InMemDicomObject| {
        let center = float(o, tags::WINDOW_CENTER)?;
        let width = float(o, tags::WINDOW_WIDTH)?;
        let function = get_str(o, tags::VOILUT_FUNCTION)
            .and_then(|f| VoiLutFunction::try_from(f.as_str()).ok())
            .unwrap_or_default();
        Some(WindowLevelTransform::new(
            function,
            WindowLevel { center, width },
        ))
    };
    from(obj).or_else(|| functional_group(obj, idx, tags::FRAME_VOILUT_SEQUENCE).and_then(from))
}

/// A VOI LUT from the first item of the VOI LUT Sequence.
struct VoiLut {
    first: f64,
    table: Vec<f64>,
    max: f64,
}

impl VoiLut {
    fn from_obj(obj: &InMemDicomObject) -> Option<VoiLut> {
        let item = obj.get(tags::VOILUT_SEQUENCE)?.items()?.first()?;
        let desc: Vec<i64> = item.get(tags::LUT_DESCRIPTOR)?.to_multi_int().ok()?;
        let (n, first, bits) = (*desc.first()?, *desc.get(1)?, *desc.get(2)?);
        let n = if n == 0 { 65536 } else { n as usize };
        let data = item.get(tags::LUT_DATA)?;
        let table: Vec<f64> = match data.to_multi_int::<u16>() {
            Ok(v) if v.len() >= n => v[..n].iter().map(|&x| f64::from(x)).collect(),
            _ => return None,
        };
        let declared = if (1..=16).contains(&bits) {
            f64::from((1u32 << bits) - 1)
        } else {
            65535.0
        };
        let actual = table.iter().copied().fold(0.0, f64::max);
        Some(VoiLut {
            first: first as f64,
            max: declared.max(actual).max(1.0),
            table,
        })
    }

    fn apply(&self, v: f64) -> f64 {
        let i = (v - self.first)
            .round()
            .clamp(0.0, (self.table.len() - 1) as f64) as usize;
        self.table[i] / self.max * 255.0
    }
}

fn monochrome(
    obj: &InMemDicomObject,
    info: &ImageInfo,
    idx: u32,
    data: &[u8],
    window: Option<(f64, f64)>,
    invert: bool,
) -> Result<Vec<u8>, CodecError> {
    let (slope, intercept) = rescale(obj, idx);
    let values: Vec<f64> = samples(info, data)
        .into_iter()
        .map(|v| v * slope + intercept)
        .collect();
    let voi: Box<dyn Fn(f64) -> f64> = if let Some((center, width)) = window {
        if !center.is_finite() || !width.is_finite() || width <= 0.0 {
            return Err(CodecError::Unsupported(format!(
                "window center {center} / width {width}"
            )));
        }
        let t = WindowLevelTransform::linear(WindowLevel { center, width });
        Box::new(move |v| t.apply(v, 255.0))
    } else if let Some(t) = object_window(obj, idx) {
        Box::new(move |v| t.apply(v, 255.0))
    } else if let Some(lut) = VoiLut::from_obj(obj) {
        Box::new(move |v| lut.apply(v))
    } else {
        let (min, max) = values
            .iter()
            .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), &v| {
                (lo.min(v), hi.max(v))
            });
        let t = WindowLevelTransform::new(
            VoiLutFunction::LinearExact,
            WindowLevel {
                center: (min + max) / 2.0,
                width: max - min,
            },
        );
        Box::new(move |v| t.apply(v, 255.0))
    };
    Ok(values
        .into_iter()
        .map(|v| {
            let y = voi(v).round().clamp(0.0, 255.0) as u8;
            if invert { 255 - y } else { y }
        })
        .collect())
}

fn palette(obj: &InMemDicomObject, info: &ImageInfo, data: &[u8]) -> Result<Vec<u8>, CodecError> {
    if obj
        .get(tags::SEGMENTED_RED_PALETTE_COLOR_LOOKUP_TABLE_DATA)
        .is_some()
    {
        return Err(CodecError::Unsupported(
            "segmented palette colour lookup tables".into(),
        ));
    }
    let channel = |desc_tag: Tag, data_tag: Tag| -> Result<(i64, Vec<u8>), CodecError> {
        let bad = || CodecError::Invalid(format!("bad palette colour lookup table {data_tag}"));
        let desc: Vec<i64> = obj
            .get(desc_tag)
            .and_then(|e| e.to_multi_int().ok())
            .ok_or_else(bad)?;
        let (n, first, bits) = match desc[..] {
            [n, first, bits, ..] => (n, first, bits),
            _ => return Err(bad()),
        };
        let n = if n == 0 { 65536 } else { n as usize };
        let bytes = obj
            .get(data_tag)
            .and_then(|e| e.to_bytes().ok())
            .ok_or_else(bad)?;
        let table: Vec<u8> = if bytes.len() >= 2 * n {
            bytes
                .chunks_exact(2)
                .take(n)
                .map(|c| {
                    let w = u16::from_ne_bytes([c[0], c[1]]);
                    if bits > 8 { (w >> 8) as u8 } else { w as u8 }
                })
                .collect()
        } else if bytes.len() >= n {
            // 8-bit entries packed two per word by some writers
            bytes[..n].to_vec()
        } else {
            return Err(bad());
        };
        Ok((first, table))
    };
    let (rf, r) = channel(
        tags::RED_PALETTE_COLOR_LOOKUP_TABLE_DESCRIPTOR,
        tags::RED_PALETTE_COLOR_LOOKUP_TABLE_DATA,
    )?;
    let (gf, g) = channel(
        tags::GREEN_PALETTE_COLOR_LOOKUP_TABLE_DESCRIPTOR,
        tags::GREEN_PALETTE_COLOR_LOOKUP_TABLE_DATA,
    )?;
    let (bf, b) = channel(
        tags::BLUE_PALETTE_COLOR_LOOKUP_TABLE_DESCRIPTOR,
        tags::BLUE_PALETTE_COLOR_LOOKUP_TABLE_DATA,
    )?;
    let look = |t: &[u8], first: i64, v: f64| {
        let i = (v as i64 - first).clamp(0, t.len() as i64 - 1) as usize;
        t[i]
    };
    let mut out = Vec::with_capacity(info.pixels() * 3);
    for v in samples(info, data) {
        out.extend_from_slice(&[look(&r, rf, v), look(&g, gf, v), look(&b, bf, v)]);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn viewport_fit_keeps_aspect_and_never_enlarges() {
        assert_eq!(fit((64, 64), (32, 32)), (32, 32));
        assert_eq!(fit((64, 32), (32, 32)), (32, 16));
        assert_eq!(fit((64, 32), (100, 8)), (16, 8));
        assert_eq!(fit((64, 64), (128, 128)), (64, 64));
        assert_eq!(fit((64, 64), (0, 16)), (16, 16));
        assert_eq!(fit((1000, 1), (10, 10)), (10, 1));
    }
}
