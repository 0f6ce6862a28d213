//! The regional exchange network (issue 5, docs/exchange.md): routes turn arriving instances into
//! outbox jobs inside the ingest transaction ([`observer`]), workers drain the outbox to peers
//! (signed STOW-RS plus manifests and receipts) and to DICOM nodes (C-STORE SCU) ([`worker`]),
//! DICOM nodes are queried and retrieved from, and priors prefetched (C-FIND, C-MOVE SCU,
//! [`priors`]), and the receiving side answers manifests and pings ([`http`]).
//!
//! Depends on core, the store traits, auth (site identity, signing), dimse (C-STORE, C-FIND and
//! C-MOVE SCU), deid
//! and codec; never on a storage backend, and neither dicomweb nor dimse depends on it.

#![deny(unsafe_code)]
#![warn(missing_docs)]

pub mod api;
pub mod check;
pub mod client;
pub mod federation;
pub mod http;
pub mod job;
pub mod manifest;
mod node;
pub mod observer;
pub mod priors;
pub mod remote;
pub mod route;
pub mod route_test;
pub mod spec;
pub mod worker;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

pub use client::PeerClient;
pub use observer::RouteObserver;
pub use worker::{Exchange, ExchangeOptions};

/// What went wrong talking to another site or node.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The peer is misconfigured or answered something unusable.
    #[error("{0}")]
    Peer(String),
    /// The peer or node could not be reached (connection, timeout): retried.
    #[error("{0}")]
    Unreachable(String),
    /// The peer answered with an error status.
    #[error("refused with HTTP {status}: {body}")]
    Refused {
        /// HTTP status.
        status: u16,
        /// The start of the answer's body.
        body: String,
    },
    /// A DICOM node failed.
    #[error("{0}")]
    Dimse(String),
    /// Local storage failed.
    #[error(transparent)]
    Store(#[from] vesalius_store::Error),
}

/// An event of the exchange, for live views (the web app's server-sent events) and tests.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "kebab-case")]
pub enum ExchangeEvent {
    /// Receiver side: a peer's final manifest was satisfied; the study is complete here.
    StudyComplete {
        /// The local organisation holding it.
        org: String,
        /// The study.
        study_uid: String,
        /// The sending peer.
        from_peer: String,
        /// The transfer's priority.
        priority: i32,
        /// Instances in the manifest.
        instances: u64,
    },
    /// Sender side: instances delivered to a destination.
    Delivered {
        /// The sending organisation (the delivered jobs' owner).
        org: String,
        /// The destination queue.
        queue: String,
        /// The study.
        study_uid: String,
        /// How many in this step.
        instances: u64,
    },
    /// Sender side: the destination confirmed the whole study (study receipt); for a
    /// retrieval, the study arrived here.
    TransferComplete {
        /// The sending organisation (for a retrieval: the one it was for).
        org: String,
        /// The destination queue.
        queue: String,
        /// The study.
        study_uid: String,
        /// Instances confirmed.
        instances: u64,
    },
    /// Sender side: a job was parked after too many attempts.
    Parked {
        /// The sending organisation (the job's owner).
        org: String,
        /// The destination queue.
        queue: String,
        /// The study.
        study_uid: String,
        /// The last error.
        error: String,
    },
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or(Duration::ZERO)
        .as_millis() as i64
}
