//! Errors of the DIMSE crate, each with its [`ErrorKind`].
//!
//! Protocol-level failures (a malformed PDU, an unexpected PDU, a peer abort) end the association
//! they happened on and nothing else; operation-level failures of one message are answered with a
//! DIMSE status instead and never surface as an [`Error`] on the server side.

use std::path::PathBuf;

use vesalius_core::ErrorKind;

/// What went wrong on an association or in a DIMSE operation.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Dialling the peer failed.
    #[error("cannot connect to {addr}: {source}")]
    Connect {
        /// The address dialled.
        addr: String,
        /// The cause.
        source: std::io::Error,
    },
    /// Reading or writing the socket failed.
    #[error("network error: {0}")]
    Network(#[from] std::io::Error),
    /// A read or write did not complete in time.
    #[error("timed out {0}")]
    Timeout(&'static str),
    /// The peer broke the protocol (malformed or unexpected PDU or message).
    #[error("protocol violation: {0}")]
    Protocol(String),
    /// The peer rejected the association request.
    #[error("association rejected: {0}")]
    Rejected(String),
    /// The peer aborted the association (A-ABORT) or closed the connection.
    #[error("association aborted by the peer")]
    Aborted,
    /// No presentation context was accepted for what we need to send.
    #[error("no accepted presentation context for {0}")]
    NoPresentationContext(String),
    /// The peer answered an operation with a failure status.
    #[error("{operation} failed with status 0x{status:04X}{}", comment.as_deref().map(|c| format!(": {c}")).unwrap_or_default())]
    Status {
        /// The operation, e.g. "C-ECHO".
        operation: &'static str,
        /// The DIMSE status.
        status: u16,
        /// The Error Comment (0000,0902), if any.
        comment: Option<String>,
    },
    /// Reading a local file failed.
    #[error("{}: {source}", path.display())]
    File {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// A local file is not a DICOM Part 10 file we can send.
    #[error("{}: {reason}", path.display())]
    InvalidFile {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// The archive's storage failed.
    #[error("{0}")]
    Store(#[from] vesalius_store::Error),
    /// Transcoding failed.
    #[error("{0}")]
    Codec(#[from] vesalius_codec::CodecError),
}

impl Error {
    /// The kind of this error.
    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::Connect { .. } | Error::Network(_) | Error::Timeout(_) | Error::Aborted => {
                ErrorKind::Unavailable
            }
            Error::Protocol(_) => ErrorKind::BadRequest,
            Error::Rejected(_) => ErrorKind::Forbidden,
            Error::NoPresentationContext(_) => ErrorKind::NotAcceptable,
            Error::Status { status, .. } => match *status {
                0xA700..=0xA7FF => ErrorKind::InsufficientStorage,
                0xA900..=0xA9FF => ErrorKind::DataSetMismatch,
                0xA801 => ErrorKind::NotFound,
                0x0124 => ErrorKind::Forbidden,
                0xC000..=0xCFFF => ErrorKind::InvalidDicom,
                _ => ErrorKind::Internal,
            },
            Error::File { source, .. } if source.kind() == std::io::ErrorKind::NotFound => {
                ErrorKind::NotFound
            }
            Error::File { .. } => ErrorKind::Internal,
            Error::InvalidFile { .. } => ErrorKind::InvalidDicom,
            Error::Store(e) => e.kind(),
            Error::Codec(e) => e.kind(),
        }
    }

    /// True when the association this error happened on can no longer be used.
    pub fn ends_association(&self) -> bool {
        matches!(
            self,
            Error::Network(_) | Error::Timeout(_) | Error::Protocol(_) | Error::Aborted
        )
    }
}

/// Result with the DIMSE [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
