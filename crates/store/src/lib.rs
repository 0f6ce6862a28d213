//! Storage of Vesalius: the traits every backend implements, in-memory implementations of each,
//! the shared query model and the ingest pipeline that enforces the durability contract.
//!
//! - [`blob`]: [`BlobStore`], where instance bytes live (filesystem, S3, memory).
//! - [`index`]: [`Index`], the database of patients/studies/series/instances, with group commit.
//! - [`query`]: the query model shared by QIDO-RS and C-FIND (PS3.4 C.2.2.2 matching).
//! - [`ingest`]: [`Ingestor`], the one path by which an instance enters the archive.
//! - [`journal`]: the ingest journal, one flush per acknowledgement on local storage.
//! - [`directory`]: [`Directory`], organisations, users, credentials, grants, AE titles, links.
//! - [`audit`]: [`AuditLog`], the hash-chained audit trail.
//! - [`alerts`]: [`AlertStore`], alert rules, subscriptions, alerts and their deliveries (issue 6).
//! - [`outbox`]: [`Outbox`], the durable queue of transfers and jobs, with its in-memory model.
//! - [`registry`]: [`Registry`], peers, DICOM nodes, routes and arrivals (issue 5).
//! - [`memory`]: in-memory [`Index`] and [`BlobStore`] for tests.
//! - [`memory_directory`]: in-memory [`Directory`] and [`AuditLog`], the reference models.
//!
//! This crate must not depend on sqlx, object_store, axum or any protocol crate: backends
//! implement these traits in their own crates, and protocol crates see only these traits.
#![deny(unsafe_code)]
#![warn(missing_docs)]

pub mod alerts;
pub mod audit;
pub mod audit_batch;
pub mod blob;
pub mod directory;
pub mod error;
pub mod index;
pub mod ingest;
pub mod journal;
pub mod key_objects;
pub mod memory;
pub mod memory_directory;
pub mod model;
pub mod outbox;
pub mod query;
pub mod registry;
pub mod spool;

pub use alerts::AlertStore;
pub use audit::AuditLog;
pub use blob::{BlobKey, BlobStore};
pub use directory::Directory;
pub use error::{Error, Result};
pub use index::Index;
pub use ingest::{IngestObserver, Ingestor};
pub use outbox::Outbox;
pub use registry::Registry;
