//! Integration tests of `vesalius-synth`: write real files, read them back with dicom-object and
//! (when installed) DCMTK.

mod common;
mod dcmtk;
mod output;
