//! Pixel data codecs: transcoding between transfer syntaxes, frame decoding and rendering.
//!
//! Built on dicom-rs (`dicom-object`, `dicom-pixeldata`, `dicom-transfer-syntax-registry`) with
//! the native codecs, CharLS (JPEG-LS, built with cmake) and a bundled OpenJPEG (JPEG 2000 and
//! HTJ2K, built with `cc`). Nothing is downloaded at build time.
//!
//! # Transfer syntaxes
//!
//! | Transfer syntax | read / decode | encode (transcode target) |
//! |---|---|---|
//! | Implicit VR LE, Explicit VR LE, Explicit VR BE | yes | yes |
//! | Deflated Explicit VR LE (`1.2.840.10008.1.2.1.99`) | yes (inflated ≤ 1 GiB) | yes |
//! | Encapsulated Uncompressed (`.1.2.1.98`), Deflated Image Frame (`.1.2.8.1`) | yes | yes |
//! | JPEG Baseline (`.4.50`) | yes | yes, lossy: 8-bit, or unsigned 9–16-bit narrowed to 8 bits |
//! | JPEG Extended (`.4.51`) | 8-bit only (no 12-bit DCT in `jpeg-decoder`) | no |
//! | JPEG Lossless (`.4.57`, `.4.70`) | yes (2–16 bits) | no |
//! | JPEG-LS Lossless / Near-lossless (`.4.80`, `.4.81`) | yes | yes (8/16-bit; lossless) |
//! | JPEG 2000 (`.4.90`, `.4.91`), HTJ2K (`.4.201`–`.4.203`) | yes | no |
//! | RLE Lossless (`.5`) | yes | no |
//! | JPIP, MPEG-2/4, HEVC, JPEG XL | no | no |
//!
//! [`can_transcode`] answers from this table (per transfer syntax, not per object): a readable
//! source can always become an uncompressed syntax; an encapsulated target needs an encoder. A
//! particular object may still be refused (12-bit JPEG Extended sources; 32-bit samples or
//! signed samples to JPEG baseline); [`transcode_file`] then fails with
//! [`CodecError::Unsupported`], which callers should treat like "not acceptable" and fall back to
//! the stored syntax.
//!
//! # Safety against hostile input
//!
//! Every declared length in the file (meta group, data set, sequences, items, fragments) is
//! checked against the bytes really present before dicom-rs sees the file, because dicom-rs
//! allocates what a header declares. Panics inside dicom-rs are caught and reported as
//! [`CodecError::Invalid`]. All functions are blocking and CPU-bound: call them from
//! `spawn_blocking` in async code.
//!
//! # Pixel form
//!
//! [`decode_frame`] returns little endian, interleaved samples; 1-bit samples are expanded to one
//! byte each (0 or 1, `bits_allocated` 8); bits above Bits Stored are cleared (unsigned) or
//! sign-extended (signed); native YBR_FULL_422 is expanded to YBR_FULL. `photometric` names the
//! colour space the samples are really in: the JPEG lossy decoder outputs RGB, JPEG 2000 turns
//! YBR_ICT/YBR_RCT into RGB, RLE, JPEG-LS and JPEG lossless keep the stored colour space (e.g.
//! YBR_FULL). JPEG-LS streams coded without interleave (colour-by-plane) are re-interleaved.
#![warn(missing_docs)]
#![deny(unsafe_code)]

mod open;
mod pixels;
mod render;
mod transcode;

use std::path::Path;

use vesalius_core::ErrorKind;

/// Errors of the codec crate.
#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    /// The transfer syntax or operation is not supported.
    #[error("unsupported: {0}")]
    Unsupported(String),
    /// The input is not valid DICOM or its pixel data is malformed.
    #[error("invalid: {0}")]
    Invalid(String),
    /// An I/O error.
    #[error("i/o error: {0}")]
    Io(#[from] std::io::Error),
}

impl CodecError {
    /// The kind of failure, for mapping to the wire.
    pub fn kind(&self) -> ErrorKind {
        match self {
            CodecError::Unsupported(_) => ErrorKind::NotAcceptable,
            CodecError::Invalid(_) => ErrorKind::InvalidDicom,
            CodecError::Io(_) => ErrorKind::Internal,
        }
    }
}

/// True when `transcode` can convert an object stored in `from` into `to`.
///
/// Same syntax is always possible (the bytes are returned unchanged). UIDs may carry trailing
/// padding (space or NUL).
pub fn can_transcode(from: &str, to: &str) -> bool {
    transcode::can_transcode(from, to)
}

/// Reads the Part 10 file at `path` and returns a complete Part 10 file (meta + data set) in
/// transfer syntax `to`. Pixel data is decoded/encoded as needed; all other attributes are kept.
/// Same syntax → the bytes unchanged.
///
/// The file meta group keeps its attributes with the new Transfer Syntax UID (and a recomputed
/// group length); the preamble is rewritten as zeros. Decoding an encapsulated object also sets
/// Photometric Interpretation to the decoded colour space, Planar Configuration to 0 and removes
/// Encapsulated Pixel Data Value Total Length. Lossy targets set Lossy Image Compression to "01"
/// (kept from lossy sources). Narrowing 9–16-bit samples to JPEG baseline multiplies Rescale Slope
/// by 2^(BitsStored − 8) (or, without one, divides Window Center/Width) so values keep their
/// meaning.
pub fn transcode_file(path: &Path, to: &str) -> Result<Vec<u8>, CodecError> {
    let bytes = std::fs::read(path)?;
    open::guard(|| transcode::transcode_bytes(bytes, to))
}

/// Decoded pixels of one frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecodedFrame {
    /// Number of rows.
    pub rows: u16,
    /// Number of columns.
    pub columns: u16,
    /// Samples per pixel (1 or 3).
    pub samples_per_pixel: u16,
    /// Bits allocated per sample (8 or 16).
    pub bits_allocated: u16,
    /// Photometric interpretation of `data`.
    pub photometric: String,
    /// Little endian, interleaved (planar configuration 0).
    pub data: Vec<u8>,
}

/// Decoded pixels of one frame (1-based `frame`); see the crate documentation for the form.
///
/// A frame number of 0 or beyond Number of Frames is [`CodecError::Invalid`].
pub fn decode_frame(path: &Path, frame: u32) -> Result<DecodedFrame, CodecError> {
    let bytes = std::fs::read(path)?;
    open::guard(|| {
        let obj = open::open_bytes(&bytes)?;
        pixels::decode_one(&obj, frame)
    })
}

/// Output image format of [`render`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ImageFormat {
    /// JPEG (lossy, `quality` applies).
    Jpeg,
    /// PNG (lossless).
    Png,
}

/// Options of [`render`].
#[derive(Debug, Clone, PartialEq)]
pub struct RenderOptions {
    /// 1-based frame number.
    pub frame: u32,
    /// Window (center, width); `None`: from the object (WindowCenter/Width, else min/max).
    pub window: Option<(f64, f64)>,
    /// Maximum (width, height): scale down keeping aspect.
    pub viewport: Option<(u32, u32)>,
    /// Output format.
    pub format: ImageFormat,
    /// JPEG quality 1–100.
    pub quality: u8,
}

impl Default for RenderOptions {
    fn default() -> Self {
        RenderOptions {
            frame: 1,
            window: None,
            viewport: None,
            format: ImageFormat::Jpeg,
            quality: 90,
        }
    }
}

/// Renders a frame to JPEG/PNG bytes with Modality LUT (rescale) and VOI windowing applied,
/// MONOCHROME1 inverted, RGB/YBR converted to RGB.
///
/// The output is 8-bit greyscale for monochrome objects and 8-bit RGB otherwise. The VOI applied
/// is, in order: `opts.window` (LINEAR function), the object's first Window Center/Width (with its
/// VOI LUT Function; top level or Frame VOI LUT functional group), its first VOI LUT Sequence
/// item, else the min/max of the frame's modality values. PALETTE COLOR is looked up in its
/// palette (segmented palettes are unsupported). Viewport scaling never enlarges; a 0 bound leaves
/// that dimension free. JPEG `quality` is clamped to 1–100; PNG ignores it.
pub fn render(path: &Path, opts: &RenderOptions) -> Result<Vec<u8>, CodecError> {
    let bytes = std::fs::read(path)?;
    open::guard(|| {
        let obj = open::open_bytes(&bytes)?;
        render::render_obj(&obj, opts)
    })
}
