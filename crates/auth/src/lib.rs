//! Access control of Vesalius: who is asking ([`principal`]), whether they may
//! ([`policy`]), how they proved it ([`authenticator`], [`password`], [`token`], [`secret`]),
//! and the tamper-evident record of what they did ([`audit_chain`], [`dedupe`], [`fhir`],
//! [`dicom_audit`]).
//!
//! - [`password`]: argon2id hashing and the password policy.
//! - [`secret`]: random secrets, SHA-256 and constant-time comparison.
//! - [`token`]: API tokens `vsl_<id>_<secret>`, issued once, stored hashed.
//! - [`principal`]: the authenticated party a request acts as.
//! - [`policy`]: the one decision function, [`policy::authorize`], and the query filter,
//!   [`policy::access`]. Every entry point (DICOMweb, DIMSE, JSON API, CLI) calls them.
//! - [`authenticator`]: turns credentials (login, session cookie, bearer token, calling AE title,
//!   peer-site token, share and upload links, first-start setup) into a [`Principal`], with
//!   throttling, lockout and audit; break-glass; the privacy-officer report.
//! - [`oidc`]: OpenID Connect login (authorization code + PKCE) and identity-to-user mapping.
//! - [`peer`]: site-to-site authentication: the site's peer key, signed request tokens
//!   (`Authorization: Vesalius-Peer …`) and signed answers.
//! - [`audit_chain`]: the site key, signed checkpoints and verification of the hash chain.
//! - [`caller`]: a principal resolved for one request, as front ends carry it.
//! - [`cookie`]: the session cookie and header parsing, as plain strings.
//! - [`net`]: source-address allow-lists (IPs and CIDR blocks).
//! - [`dedupe`]: one audit event per study access per user per few minutes, not one per frame.
//! - [`fhir`]: audit records as FHIR R4 `AuditEvent` resources.
//! - [`dicom_audit`]: audit records as DICOM audit messages (PS3.15 A.5) in RFC 5424 syslog
//!   messages.
//!
//! This crate depends on `vesalius-core` and the traits of `vesalius-store` only (DESIGN.md:
//! auth → core, store traits), plus crypto crates. It knows no HTTP framework: headers and
//! cookies are plain strings, and the axum/DIMSE integration lives in the protocol crates.
#![deny(unsafe_code)]
#![warn(missing_docs)]

pub mod audit_chain;
pub mod authenticator;
pub mod caller;
pub mod cookie;
pub mod dedupe;
pub mod dicom_audit;
pub mod error;
pub mod fhir;
pub mod net;
pub mod oidc;
pub mod password;
pub mod peer;
pub mod policy;
pub mod principal;
pub mod secret;
pub mod token;

pub use authenticator::{
    AuthOptions, Authenticator, DEFAULT_AUDIT_READ_BATCH_MS, LinkKey, Origin, ShareLinkOptions,
    parse_upload_token, upload_token,
};
pub use caller::Caller;

/// Milliseconds since the Unix epoch from the system clock (what [`authenticator::Clock::system`]
/// reads), for callers outside an [`Authenticator`].
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}
pub use dicom_audit::{AuditSource, SyslogOptions};
pub use error::{Error, Result};
pub use policy::{Action, Decision, Resource, access, authorize};
pub use principal::{Principal, PrincipalKind};
