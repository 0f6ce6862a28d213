//! Vesalius core: the DICOM fundamentals every other crate shares.
//!
//! - [`tag`]: the attribute tags and UIDs the archive indexes, named after PS3.6.
//! - [`parse`]: a bounded DICOM data set parser. Every declared length is checked against the bytes
//!   really left and the configured [`parse::ParseLimits`] *before* anything is allocated, so a
//!   hostile header cannot make the process reserve gigabytes (dicom-rs pre-allocates what a header
//!   declares, which is why this parser exists).
//! - [`json`]: the DICOM JSON model (PS3.18 F.2) with BulkDataURIs for large binary values.
//! - [`charset`]: Specific Character Set (0008,0005) decoding, ISO 2022 code extensions included.
//! - [`error`]: the shared error kinds and their stable kebab-case codes.
//!
//! This crate must not depend on any storage, protocol or runtime crate.
#![deny(unsafe_code)]
#![warn(missing_docs)]

pub mod ae;
pub mod charset;
pub mod error;
pub mod json;
pub mod lru;
pub mod parse;
pub mod tag;
pub mod uid;

pub use error::{Error, ErrorKind, Result};
