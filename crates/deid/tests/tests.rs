//! Integration tests of vesalius-deid: the whole of Table E.1-1 under every option set,
//! pseudonym consistency across instances and keys, and files on disk.

mod common;
mod files;
mod pseudonyms;
mod table_walk;
