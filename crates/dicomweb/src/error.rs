//! The one error type of the DICOMweb services and its mapping to HTTP.
//!
//! Every handler returns [`DicomWebError`]; [`IntoResponse`] maps its [`ErrorKind`] to the HTTP
//! status with [`ErrorKind::http_status`] — the only place this crate does so — and answers
//! `{"error": "<kebab-case code>", "message": "..."}` (PS3.18 8.6 leaves the body of error
//! responses to the origin server). Internal errors are logged here, once; their message is still
//! sent because it names only what failed (a blob key, an index operation), never secrets.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::json;
use vesalius_codec::CodecError;
use vesalius_core::ErrorKind;

/// A failed DICOMweb request: what kind of failure (status and code) and a human-readable detail.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DicomWebError {
    /// The kind; decides the HTTP status and the `error` code of the body.
    pub kind: ErrorKind,
    /// Detail for the client.
    pub message: String,
}

impl DicomWebError {
    /// An error of `kind`.
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        DicomWebError {
            kind,
            message: message.into(),
        }
    }

    /// 400: the request is malformed.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::BadRequest, message)
    }

    /// 401: no (valid) credentials.
    pub fn unauthorized(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Unauthorized, message)
    }

    /// 403: the caller may not do this.
    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Forbidden, message)
    }

    /// 404: nothing matches.
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::NotFound, message)
    }

    /// 406: no acceptable representation can be produced.
    pub fn not_acceptable(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::NotAcceptable, message)
    }

    /// 500: something that should not happen.
    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Internal, message)
    }

    /// The HTTP status of this error.
    pub fn status(&self) -> StatusCode {
        StatusCode::from_u16(self.kind.http_status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
    }
}

impl std::fmt::Display for DicomWebError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.kind.code(), self.message)
    }
}

impl std::error::Error for DicomWebError {}

impl From<vesalius_store::Error> for DicomWebError {
    fn from(e: vesalius_store::Error) -> Self {
        DicomWebError::new(e.kind(), e.to_string())
    }
}

impl From<CodecError> for DicomWebError {
    fn from(e: CodecError) -> Self {
        DicomWebError::new(e.kind(), e.to_string())
    }
}

impl From<tokio::task::JoinError> for DicomWebError {
    fn from(e: tokio::task::JoinError) -> Self {
        DicomWebError::internal(format!("worker task: {e}"))
    }
}

impl IntoResponse for DicomWebError {
    fn into_response(self) -> Response {
        let status = self.status();
        if status.is_server_error() {
            tracing::error!(code = self.kind.code(), message = %self.message, "DICOMweb request failed");
        } else {
            tracing::debug!(code = self.kind.code(), message = %self.message, "DICOMweb request refused");
        }
        (
            status,
            Json(json!({"error": self.kind.code(), "message": self.message})),
        )
            .into_response()
    }
}

/// Result with [`DicomWebError`].
pub type Result<T, E = DicomWebError> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_map_to_statuses_and_codes() {
        let e: DicomWebError = vesalius_store::Error::NotFound("study 1.2".into()).into();
        assert_eq!(e.status(), StatusCode::NOT_FOUND);
        assert_eq!(e.kind.code(), "not-found");
        let e: DicomWebError = CodecError::Unsupported("JPEG 2000 encoding".into()).into();
        assert_eq!(e.status(), StatusCode::NOT_ACCEPTABLE);
        assert_eq!(
            DicomWebError::new(ErrorKind::PayloadTooLarge, "x").status(),
            StatusCode::PAYLOAD_TOO_LARGE
        );
    }
}
