//! Storage errors, each with its [`ErrorKind`].

use vesalius_core::ErrorKind;

/// What went wrong in storage or ingest.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The object is not valid DICOM or fails a limit.
    #[error("{0}")]
    Dicom(#[from] vesalius_core::Error),
    /// Reading or writing a blob failed.
    #[error("blob {key}: {source}")]
    Blob {
        /// The blob key.
        key: String,
        /// The cause.
        source: std::io::Error,
    },
    /// The index database failed.
    #[error("index: {0}")]
    Index(String),
    /// Local spool file trouble.
    #[error("spool: {0}")]
    Spool(#[source] std::io::Error),
    /// Nothing matches.
    #[error("{0} not found")]
    NotFound(String),
    /// The data set does not match what the request said (e.g. SOP UIDs differ).
    #[error("{0}")]
    Mismatch(String),
    /// The object is larger than allowed.
    #[error("{0}")]
    TooLarge(String),
    /// The disk is below its free-space watermark.
    #[error("storage below its free-space watermark: {0}")]
    InsufficientStorage(String),
    /// The store is shutting down or temporarily unavailable.
    #[error("unavailable: {0}")]
    Unavailable(String),
    /// A request parameter is wrong.
    #[error("{0}")]
    BadRequest(String),
    /// The sender may not store this object (a rejection note it may not make: issue 6).
    #[error("{0}")]
    Forbidden(String),
}

impl Error {
    /// The kind of this error.
    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::Dicom(e) => e.kind(),
            Error::Blob { .. } | Error::Index(_) | Error::Spool(_) => ErrorKind::Internal,
            Error::NotFound(_) => ErrorKind::NotFound,
            Error::Mismatch(_) => ErrorKind::DataSetMismatch,
            Error::TooLarge(_) => ErrorKind::PayloadTooLarge,
            Error::InsufficientStorage(_) => ErrorKind::InsufficientStorage,
            Error::Unavailable(_) => ErrorKind::Unavailable,
            Error::BadRequest(_) => ErrorKind::BadRequest,
            Error::Forbidden(_) => ErrorKind::Forbidden,
        }
    }

    /// Wraps a blob I/O error with its key.
    pub fn blob(key: impl Into<String>, source: std::io::Error) -> Self {
        Error::Blob {
            key: key.into(),
            source,
        }
    }
}

/// Result with the store [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
