//! Integration tests of the exchange crate: two in-process sites over loopback HTTP.
