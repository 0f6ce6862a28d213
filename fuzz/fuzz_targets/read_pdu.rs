//! Fuzzes the Upper Layer PDU reader the DICOM server uses (dicom-ul, strict mode, 64 KiB max
//! PDU): arbitrary bytes must give a PDU, "need more bytes" or an error, never a panic.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = dicom_ul::pdu::read_pdu(data, 65536, true);
});
