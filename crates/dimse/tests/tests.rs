//! Integration tests of the DIMSE services: real in-process servers on `127.0.0.1:0` over
//! in-memory index and blob backends, driven by DCMTK (`/usr/bin/echoscu`, `storescu`, `findscu`,
//! `getscu`, `movescu`, `storescp`), by raw TCP clients sending hostile PDUs, and by our own SCU
//! (also over DICOM TLS, with certificates made by rcgen); every server runs behind the
//! access-control layer over in-memory directory and audit log.

mod access;
mod cancel_transcode;
mod commitment;
mod common;
mod hostile;
mod query_retrieve;
mod scu;
mod storage;
mod tls;
