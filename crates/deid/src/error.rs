//! The error type of this crate.

use std::path::PathBuf;

use thiserror::Error;
use vesalius_core::ErrorKind;

use crate::options::ProfileOption;

/// Why a de-identification failed.
#[derive(Debug, Error)]
pub enum Error {
    /// The project key is empty.
    #[error("the de-identification key is empty")]
    EmptyKey,
    /// An option that this de-identifier does not implement was asked for.
    #[error("the {option} option is not implemented")]
    UnsupportedOption {
        /// The option.
        option: ProfileOption,
    },
    /// A file could not be read as DICOM.
    #[error("cannot read {} as DICOM", path.display())]
    OpenFile {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: Box<dicom_object::ReadError>,
    },
    /// An output directory could not be created.
    #[error("cannot create directory {}", path.display())]
    CreateDir {
        /// The directory.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// The de-identified file could not be written.
    #[error("cannot write {}", path.display())]
    WriteFile {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: Box<dicom_object::WriteError>,
    },
    /// Bytes in memory could not be read as a DICOM file.
    #[error("cannot read the object as DICOM")]
    ReadBytes {
        /// The underlying error.
        #[source]
        source: Box<dicom_object::ReadError>,
    },
    /// An object could not be written to memory.
    #[error("cannot write the object")]
    WriteBytes {
        /// The underlying error.
        #[source]
        source: Box<dicom_object::WriteError>,
    },
}

impl Error {
    /// The kind of failure, for retry decisions and the wire.
    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::EmptyKey | Error::UnsupportedOption { .. } => ErrorKind::BadRequest,
            Error::OpenFile { .. } | Error::ReadBytes { .. } => ErrorKind::InvalidDicom,
            Error::WriteBytes { .. } => ErrorKind::Internal,
            Error::CreateDir { .. } | Error::WriteFile { .. } => ErrorKind::Unavailable,
        }
    }
}
