//! DIMSE services of Vesalius (PS3.7, PS3.4) over the DICOM Upper Layer (PS3.8).
//!
//! Server side ([`run`], and [`run_tls`] for DICOM TLS per PS3.15 B.1): one listener, one tokio
//! task per association (bounded by a semaphore), serving
//! - [`echo`]: Verification (C-ECHO SCP, PS3.4 Annex A);
//! - [`store`]: Storage (C-STORE SCP, PS3.4 Annex B), streaming every data set fragment to the
//!   ingest spool as it arrives;
//! - [`find`], [`get`], [`move_`]: Query/Retrieve, Patient Root and Study Root information models
//!   (PS3.4 Annex C), over the shared query model of `vesalius-store`;
//! - [`commitment`]: Storage Commitment Push Model SCP (PS3.4 Annex J).
//!
//! Client side: [`scu`] (C-ECHO, C-STORE of files, C-FIND, C-MOVE, C-GET) for the CLI and other
//! crates.
//!
//! Access control (issue 4): every association is admitted by the calling AE title's registration
//! in the directory and acts as that AE (one organisation) for its lifetime; every operation is
//! authorized by `vesalius-auth`'s policy, filtered by its access and audited (the private
//! `access` module; the rules are in docs/security.md, "DICOM callers").
//!
//! Building blocks: [`association`] (negotiation, strict PDU reading, PDV streaming),
//! [`message`] (command sets, statuses, fragmentation), [`dataset`] (identifiers).
//!
//! A protocol violation or a malformed PDU aborts that association only; a failing operation is
//! answered with a DIMSE status and the association goes on. Nothing read from the network is
//! unwrapped.
//!
//! This crate depends on `vesalius-core`, the traits of `vesalius-store`, `vesalius-codec` and
//! `vesalius-auth` (the access policy); never on a storage backend, HTTP or the exchange crate.
#![deny(unsafe_code)]
#![warn(missing_docs)]

mod access;
pub mod association;
pub mod commitment;
pub mod dataset;
pub mod echo;
mod error;
pub mod find;
pub mod get;
pub mod message;
pub mod move_;
mod retrieve;
pub mod scu;
pub mod server;
pub mod store;

pub use association::Timeouts;
pub use association::Transport;
pub use error::{Error, Result};
pub use retrieve::meta_length;
pub use server::{DicomNode, DimseServerOptions, run, run_tls};
