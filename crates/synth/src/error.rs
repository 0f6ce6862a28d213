//! The error type of this crate.

use std::path::PathBuf;

use thiserror::Error;

/// Why [`crate::write_studies`] failed.
#[derive(Debug, Error)]
pub enum SynthError {
    /// The options cannot produce valid studies.
    #[error("invalid synthesis options: {reason}")]
    InvalidOptions {
        /// What is wrong.
        reason: String,
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
    /// A DICOM file could not be written.
    #[error("cannot write {}", path.display())]
    WriteFile {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
}
