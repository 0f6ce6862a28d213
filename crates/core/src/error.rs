//! Errors of the core crate and the [`ErrorKind`] every crate maps its errors onto.
//!
//! The kind is `Copy`, carries the stable kebab-case code clients see, and is mapped to an HTTP
//! status (in `dicomweb`/`api`) and a DIMSE status (in `dimse`) in exactly one place each.

use std::fmt;

/// What kind of failure happened; decides the wire status and whether a retry can help.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    /// The object or resource does not exist.
    NotFound,
    /// The input is not valid DICOM (or not valid for the operation).
    InvalidDicom,
    /// The request itself is malformed (bad query, bad parameter).
    BadRequest,
    /// The input exceeds a configured limit.
    PayloadTooLarge,
    /// The data set does not match the SOP class or lacks required attributes.
    DataSetMismatch,
    /// The client asked for a representation we cannot produce.
    NotAcceptable,
    /// The media type of the request is not supported.
    UnsupportedMediaType,
    /// Storage is full or below its low-watermark.
    InsufficientStorage,
    /// Authentication is missing or wrong.
    Unauthorized,
    /// Authenticated but not allowed.
    Forbidden,
    /// Too many attempts: throttled or locked out for a while (login, link passcodes).
    TooManyRequests,
    /// Conflicts with the current state.
    Conflict,
    /// A dependency (disk, database) is temporarily unavailable.
    Unavailable,
    /// Another site (a peer) this request is relayed to could not be reached or did not answer
    /// in time (RFC 9110 15.6.3 Bad Gateway).
    PeerUnavailable,
    /// A bug or an unexpected failure.
    Internal,
}

impl ErrorKind {
    /// The stable kebab-case code shown to clients.
    pub fn code(self) -> &'static str {
        match self {
            ErrorKind::NotFound => "not-found",
            ErrorKind::InvalidDicom => "invalid-dicom",
            ErrorKind::BadRequest => "bad-request",
            ErrorKind::PayloadTooLarge => "payload-too-large",
            ErrorKind::DataSetMismatch => "data-set-mismatch",
            ErrorKind::NotAcceptable => "not-acceptable",
            ErrorKind::UnsupportedMediaType => "unsupported-media-type",
            ErrorKind::InsufficientStorage => "insufficient-storage",
            ErrorKind::Unauthorized => "unauthorized",
            ErrorKind::Forbidden => "forbidden",
            ErrorKind::TooManyRequests => "too-many-requests",
            ErrorKind::Conflict => "conflict",
            ErrorKind::Unavailable => "unavailable",
            ErrorKind::PeerUnavailable => "peer-unavailable",
            ErrorKind::Internal => "internal",
        }
    }

    /// The HTTP status for this kind (PS3.18 and RFC 9110).
    pub fn http_status(self) -> u16 {
        match self {
            ErrorKind::NotFound => 404,
            ErrorKind::InvalidDicom | ErrorKind::BadRequest | ErrorKind::DataSetMismatch => 400,
            ErrorKind::PayloadTooLarge => 413,
            ErrorKind::NotAcceptable => 406,
            ErrorKind::UnsupportedMediaType => 415,
            ErrorKind::InsufficientStorage => 507,
            ErrorKind::Unauthorized => 401,
            ErrorKind::Forbidden => 403,
            ErrorKind::TooManyRequests => 429,
            ErrorKind::Conflict => 409,
            ErrorKind::Unavailable => 503,
            ErrorKind::PeerUnavailable => 502,
            ErrorKind::Internal => 500,
        }
    }

    /// The C-STORE response status for a failure of this kind (PS3.4 B.2.3, PS3.7 C).
    pub fn store_status(self) -> u16 {
        match self {
            // 0xA700 Refused: Out of Resources.
            ErrorKind::InsufficientStorage | ErrorKind::PayloadTooLarge => 0xA700,
            // 0xA900 Error: Data Set does not match SOP Class.
            ErrorKind::DataSetMismatch => 0xA900,
            // 0xC000 Error: Cannot understand.
            ErrorKind::InvalidDicom | ErrorKind::BadRequest | ErrorKind::NotAcceptable => 0xC000,
            ErrorKind::UnsupportedMediaType => 0xC000,
            // 0x0124 Refused: Not Authorized.
            ErrorKind::Unauthorized | ErrorKind::Forbidden => 0x0124,
            // 0xA700 for resource trouble, 0x0110 Processing failure otherwise.
            ErrorKind::Unavailable | ErrorKind::PeerUnavailable => 0xA700,
            // Throttling is a resource limit of the sender, not a refusal of the object.
            ErrorKind::TooManyRequests => 0xA700,
            ErrorKind::NotFound | ErrorKind::Conflict | ErrorKind::Internal => 0x0110,
        }
    }
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.code())
    }
}

/// Errors raised while reading DICOM data.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Reading the underlying bytes failed.
    #[error("i/o error: {0}")]
    Io(#[from] std::io::Error),
    /// The bytes end before a declared structure does.
    #[error("truncated data at offset {offset}: {what}")]
    Truncated {
        /// Byte offset in the stream.
        offset: u64,
        /// What was being read.
        what: &'static str,
    },
    /// A declared length is larger than what remains or than a limit.
    #[error("element {tag} at offset {offset} declares length {length}, beyond {limit}")]
    LengthExceeded {
        /// Tag as `(gggg,eeee)`.
        tag: String,
        /// Byte offset in the stream.
        offset: u64,
        /// The declared length.
        length: u64,
        /// What bounded it.
        limit: &'static str,
    },
    /// The structure is not valid DICOM.
    #[error("malformed DICOM at offset {offset}: {reason}")]
    Malformed {
        /// Byte offset in the stream.
        offset: u64,
        /// Why.
        reason: String,
    },
    /// A required attribute is missing or empty.
    #[error("missing required attribute {0}")]
    MissingAttribute(&'static str),
    /// A limit on the whole object was exceeded.
    #[error("{0}")]
    TooLarge(String),
    /// The transfer syntax is not known.
    #[error("unsupported transfer syntax {0}")]
    UnsupportedTransferSyntax(String),
}

impl Error {
    /// The kind of this error.
    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::Io(_) => ErrorKind::Internal,
            Error::Truncated { .. } | Error::Malformed { .. } => ErrorKind::InvalidDicom,
            Error::LengthExceeded { limit, .. } if limit.starts_with("limit") => {
                ErrorKind::PayloadTooLarge
            }
            Error::LengthExceeded { .. } => ErrorKind::InvalidDicom,
            Error::MissingAttribute(_) => ErrorKind::DataSetMismatch,
            Error::TooLarge(_) => ErrorKind::PayloadTooLarge,
            Error::UnsupportedTransferSyntax(_) => ErrorKind::InvalidDicom,
        }
    }
}

/// Result with the core [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
