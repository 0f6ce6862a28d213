//! DIMSE command sets (PS3.7 Section 9.3, 10.3 and Annex E) and P-DATA fragmentation (PS3.8 9.3.5).
//!
//! A command set is the group 0000 of a DIMSE message. It is always encoded in Implicit VR Little
//! Endian whatever the negotiated transfer syntax (PS3.7 6.3.1), and starts with
//! CommandGroupLength (0000,0000). [`Command`] keeps the elements as raw little endian values keyed
//! by tag and offers typed accessors for the fields the services use.
//!
//! [`pdata_pdus`] and [`write_pdata_pdu`] cut a message into P-DATA-TF PDUs whose variable field
//! never exceeds the peer's Maximum Length (PS3.8 D.1): every PDV item costs 6 bytes of header
//! (item length, presentation context ID, message control header).

use std::collections::BTreeMap;

use crate::error::{Error, Result};

/// Command field values (PS3.7 E.1-1, E.2-1).
pub mod field {
    #![allow(missing_docs)] // named after PS3.7 Table E.1-1
    pub const C_STORE_RQ: u16 = 0x0001;
    pub const C_STORE_RSP: u16 = 0x8001;
    pub const C_GET_RQ: u16 = 0x0010;
    pub const C_GET_RSP: u16 = 0x8010;
    pub const C_FIND_RQ: u16 = 0x0020;
    pub const C_FIND_RSP: u16 = 0x8020;
    pub const C_MOVE_RQ: u16 = 0x0021;
    pub const C_MOVE_RSP: u16 = 0x8021;
    pub const C_ECHO_RQ: u16 = 0x0030;
    pub const C_ECHO_RSP: u16 = 0x8030;
    pub const N_EVENT_REPORT_RQ: u16 = 0x0100;
    pub const N_EVENT_REPORT_RSP: u16 = 0x8100;
    pub const N_ACTION_RQ: u16 = 0x0130;
    pub const N_ACTION_RSP: u16 = 0x8130;
    pub const C_CANCEL_RQ: u16 = 0x0FFF;
}

/// SOP class and well-known instance UIDs of the services (PS3.4, PS3.6 Annex A).
pub mod sop_class {
    /// Verification SOP Class (PS3.4 A.4).
    pub const VERIFICATION: &str = "1.2.840.10008.1.1";
    /// Patient Root Query/Retrieve Information Model - FIND.
    pub const PATIENT_ROOT_FIND: &str = "1.2.840.10008.5.1.4.1.2.1.1";
    /// Patient Root Query/Retrieve Information Model - MOVE.
    pub const PATIENT_ROOT_MOVE: &str = "1.2.840.10008.5.1.4.1.2.1.2";
    /// Patient Root Query/Retrieve Information Model - GET.
    pub const PATIENT_ROOT_GET: &str = "1.2.840.10008.5.1.4.1.2.1.3";
    /// Study Root Query/Retrieve Information Model - FIND.
    pub const STUDY_ROOT_FIND: &str = "1.2.840.10008.5.1.4.1.2.2.1";
    /// Study Root Query/Retrieve Information Model - MOVE.
    pub const STUDY_ROOT_MOVE: &str = "1.2.840.10008.5.1.4.1.2.2.2";
    /// Study Root Query/Retrieve Information Model - GET.
    pub const STUDY_ROOT_GET: &str = "1.2.840.10008.5.1.4.1.2.2.3";
    /// Storage Commitment Push Model SOP Class (PS3.4 J.3).
    pub const STORAGE_COMMITMENT_PUSH: &str = "1.2.840.10008.1.20.1";
    /// The well-known Storage Commitment Push Model SOP Instance (PS3.4 J.3.5).
    pub const STORAGE_COMMITMENT_PUSH_INSTANCE: &str = "1.2.840.10008.1.20.1.1";
}

/// Command set tags (PS3.7 E.1-1, E.2-1), as `0x0000EEEE`.
pub mod tags {
    #![allow(missing_docs)] // named after PS3.7 keywords
    pub const COMMAND_GROUP_LENGTH: u32 = 0x0000_0000;
    pub const AFFECTED_SOP_CLASS_UID: u32 = 0x0000_0002;
    pub const REQUESTED_SOP_CLASS_UID: u32 = 0x0000_0003;
    pub const COMMAND_FIELD: u32 = 0x0000_0100;
    pub const MESSAGE_ID: u32 = 0x0000_0110;
    pub const MESSAGE_ID_BEING_RESPONDED_TO: u32 = 0x0000_0120;
    pub const MOVE_DESTINATION: u32 = 0x0000_0600;
    pub const PRIORITY: u32 = 0x0000_0700;
    pub const COMMAND_DATA_SET_TYPE: u32 = 0x0000_0800;
    pub const STATUS: u32 = 0x0000_0900;
    pub const OFFENDING_ELEMENT: u32 = 0x0000_0901;
    pub const ERROR_COMMENT: u32 = 0x0000_0902;
    pub const ERROR_ID: u32 = 0x0000_0903;
    pub const AFFECTED_SOP_INSTANCE_UID: u32 = 0x0000_1000;
    pub const REQUESTED_SOP_INSTANCE_UID: u32 = 0x0000_1001;
    pub const EVENT_TYPE_ID: u32 = 0x0000_1002;
    pub const ACTION_TYPE_ID: u32 = 0x0000_1008;
    pub const NUMBER_OF_REMAINING_SUBOPERATIONS: u32 = 0x0000_1020;
    pub const NUMBER_OF_COMPLETED_SUBOPERATIONS: u32 = 0x0000_1021;
    pub const NUMBER_OF_FAILED_SUBOPERATIONS: u32 = 0x0000_1022;
    pub const NUMBER_OF_WARNING_SUBOPERATIONS: u32 = 0x0000_1023;
    pub const MOVE_ORIGINATOR_AE_TITLE: u32 = 0x0000_1030;
    pub const MOVE_ORIGINATOR_MESSAGE_ID: u32 = 0x0000_1031;
}

/// DIMSE status codes used here (PS3.7 Annex C, PS3.4 B.2.3, C.4).
pub mod status {
    /// Success.
    pub const SUCCESS: u16 = 0x0000;
    /// Pending: matches/sub-operations are continuing.
    pub const PENDING: u16 = 0xFF00;
    /// Cancel: the operation was cancelled by C-CANCEL.
    pub const CANCEL: u16 = 0xFE00;
    /// Warning: sub-operations complete, one or more failures or warnings (C-GET/C-MOVE).
    pub const SUBOPERATIONS_WARNING: u16 = 0xB000;
    /// Failure: processing failure.
    pub const PROCESSING_FAILURE: u16 = 0x0110;
    /// Failure: no such SOP class.
    pub const NO_SUCH_SOP_CLASS: u16 = 0x0118;
    /// Failure: unrecognized operation.
    pub const UNRECOGNIZED_OPERATION: u16 = 0x0211;
    /// Refused: SOP class not supported.
    pub const SOP_CLASS_NOT_SUPPORTED: u16 = 0x0122;
    /// Failure: no such action type.
    pub const NO_SUCH_ACTION_TYPE: u16 = 0x0123;
    /// Refused: not authorized (PS3.7 Annex C, a general status valid for every DIMSE service):
    /// the calling AE title may not perform this operation. Service-specific refusals (0xA7xx
    /// out of resources, 0xA801 destination unknown) describe other failures, so this is the
    /// precise one.
    pub const NOT_AUTHORIZED: u16 = 0x0124;
    /// Failure: invalid argument value (N-ACTION).
    pub const INVALID_ARGUMENT_VALUE: u16 = 0x0115;
    /// Failure: missing attribute value (N-ACTION).
    pub const MISSING_ATTRIBUTE_VALUE: u16 = 0x0121;
    /// Refused: out of resources, unable to calculate the number of matches (C-GET/C-MOVE).
    pub const OUT_OF_RESOURCES_MATCHES: u16 = 0xA701;
    /// Refused: out of resources, unable to perform sub-operations (C-GET/C-MOVE).
    pub const OUT_OF_RESOURCES_SUBOPERATIONS: u16 = 0xA702;
    /// Refused: move destination unknown (C-MOVE).
    pub const MOVE_DESTINATION_UNKNOWN: u16 = 0xA801;
    /// Error: identifier does not match SOP class (C-FIND/C-GET/C-MOVE).
    pub const IDENTIFIER_MISMATCH: u16 = 0xA900;
    /// Failed: unable to process.
    pub const UNABLE_TO_PROCESS: u16 = 0xC000;
    /// Storage commitment failure reason: no such object instance (PS3.4 J.3.2.1).
    pub const NO_SUCH_OBJECT_INSTANCE: u16 = 0x0112;

    /// True for the pending statuses 0xFF00 and 0xFF01.
    pub fn is_pending(s: u16) -> bool {
        s == 0xFF00 || s == 0xFF01
    }

    /// True for the warning statuses (0x0001, 0x0107, 0x0116, 0xBxxx).
    pub fn is_warning(s: u16) -> bool {
        matches!(s, 0x0001 | 0x0107 | 0x0116) || (s & 0xF000) == 0xB000
    }

    /// True when the status is neither success, warning, pending nor cancel.
    pub fn is_failure(s: u16) -> bool {
        s != SUCCESS && !is_pending(s) && !is_warning(s) && s != CANCEL
    }
}

/// CommandDataSetType (0000,0800) value meaning "no data set follows" (PS3.7 E.1-1).
pub const NO_DATA_SET: u16 = 0x0101;
/// A CommandDataSetType value meaning "a data set follows".
pub const DATA_SET_PRESENT: u16 = 0x0000;
/// Priority MEDIUM (PS3.7 E.1-1).
pub const PRIORITY_MEDIUM: u16 = 0x0000;

/// The largest command set accepted from a peer (real ones are a few hundred bytes).
pub const MAX_COMMAND_BYTES: usize = 64 << 10;

/// Longest Error Comment (LO, PS3.5 6.2).
const MAX_ERROR_COMMENT: usize = 64;

/// How a command element's value is padded to even length.
#[derive(Clone, Copy)]
enum Pad {
    Nul,
    Space,
}

fn pad_of(tag: u32) -> Pad {
    match tag {
        tags::AFFECTED_SOP_CLASS_UID
        | tags::REQUESTED_SOP_CLASS_UID
        | tags::AFFECTED_SOP_INSTANCE_UID
        | tags::REQUESTED_SOP_INSTANCE_UID => Pad::Nul,
        _ => Pad::Space,
    }
}

/// A DIMSE command set: the group 0000 elements of one message.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Command {
    elements: BTreeMap<u32, Vec<u8>>,
}

impl Command {
    /// A command with its Command Field and, for requests and responses alike, no data set yet.
    pub fn new(command_field: u16) -> Self {
        let mut c = Command::default();
        c.set_u16(tags::COMMAND_FIELD, command_field);
        c.set_u16(tags::COMMAND_DATA_SET_TYPE, NO_DATA_SET);
        c
    }

    /// A request: Command Field, Message ID and Affected SOP Class UID.
    pub fn request(command_field: u16, message_id: u16, sop_class: &str) -> Self {
        let mut c = Command::new(command_field);
        c.set_u16(tags::MESSAGE_ID, message_id);
        if !sop_class.is_empty() {
            c.set_str(tags::AFFECTED_SOP_CLASS_UID, sop_class);
        }
        c
    }

    /// The response to `rq`: the response Command Field, Message ID Being Responded To, the
    /// request's Affected SOP Class (and Instance) UID, and `status`.
    pub fn response_to(rq: &Command, status: u16) -> Self {
        let mut c = Command::new(rq.command_field() | 0x8000);
        c.set_u16(tags::MESSAGE_ID_BEING_RESPONDED_TO, rq.message_id());
        let class = rq
            .str(tags::AFFECTED_SOP_CLASS_UID)
            .or_else(|| rq.str(tags::REQUESTED_SOP_CLASS_UID));
        if let Some(cl) = class {
            c.set_str(tags::AFFECTED_SOP_CLASS_UID, &cl);
        }
        let instance = rq
            .str(tags::AFFECTED_SOP_INSTANCE_UID)
            .or_else(|| rq.str(tags::REQUESTED_SOP_INSTANCE_UID));
        if let Some(i) = instance {
            c.set_str(tags::AFFECTED_SOP_INSTANCE_UID, &i);
        }
        c.set_u16(tags::STATUS, status);
        c
    }

    /// Sets a US element.
    pub fn set_u16(&mut self, tag: u32, v: u16) {
        self.elements.insert(tag, v.to_le_bytes().to_vec());
    }

    /// Sets a text element (UI, AE, LO), padded to even length as its VR requires.
    pub fn set_str(&mut self, tag: u32, v: &str) {
        let mut b = v.as_bytes().to_vec();
        if b.len() % 2 == 1 {
            b.push(match pad_of(tag) {
                Pad::Nul => 0,
                Pad::Space => b' ',
            });
        }
        self.elements.insert(tag, b);
    }

    /// Sets the Error Comment (0000,0902), cut to the 64 characters LO allows.
    pub fn set_error_comment(&mut self, comment: &str) {
        let mut end = comment.len().min(MAX_ERROR_COMMENT);
        while !comment.is_char_boundary(end) {
            end -= 1;
        }
        // LO may not contain control characters or backslashes.
        let clean: String = comment[..end]
            .chars()
            .map(|c| if c.is_control() || c == '\\' { ' ' } else { c })
            .collect();
        self.set_str(tags::ERROR_COMMENT, clean.trim_end());
    }

    /// Marks whether a data set follows the command.
    pub fn set_has_data_set(&mut self, present: bool) {
        self.set_u16(
            tags::COMMAND_DATA_SET_TYPE,
            if present {
                DATA_SET_PRESENT
            } else {
                NO_DATA_SET
            },
        );
    }

    /// Sets the four sub-operation counters of a C-GET/C-MOVE response (PS3.4 C.4.2.1.4).
    pub fn set_suboperations(&mut self, counts: &SubOperations, with_remaining: bool) {
        if with_remaining {
            self.set_u16(
                tags::NUMBER_OF_REMAINING_SUBOPERATIONS,
                sat16(counts.remaining),
            );
        }
        self.set_u16(
            tags::NUMBER_OF_COMPLETED_SUBOPERATIONS,
            sat16(counts.completed),
        );
        self.set_u16(tags::NUMBER_OF_FAILED_SUBOPERATIONS, sat16(counts.failed));
        self.set_u16(tags::NUMBER_OF_WARNING_SUBOPERATIONS, sat16(counts.warning));
    }

    /// The raw value of an element.
    pub fn get(&self, tag: u32) -> Option<&[u8]> {
        self.elements.get(&tag).map(Vec::as_slice)
    }

    /// A US element.
    pub fn u16(&self, tag: u32) -> Option<u16> {
        let b = self.elements.get(&tag)?;
        Some(u16::from_le_bytes(b.get(..2)?.try_into().ok()?))
    }

    /// A text element with padding removed; `None` when absent or empty.
    pub fn str(&self, tag: u32) -> Option<String> {
        let b = self.elements.get(&tag)?;
        let s = String::from_utf8_lossy(b);
        let s = s.trim_matches(|c| c == '\0' || c == ' ');
        (!s.is_empty()).then(|| s.to_owned())
    }

    /// Command Field (0000,0100); 0 when absent.
    pub fn command_field(&self) -> u16 {
        self.u16(tags::COMMAND_FIELD).unwrap_or(0)
    }

    /// Message ID (0000,0110); 0 when absent.
    pub fn message_id(&self) -> u16 {
        self.u16(tags::MESSAGE_ID).unwrap_or(0)
    }

    /// Message ID Being Responded To (0000,0120).
    pub fn responded_to(&self) -> Option<u16> {
        self.u16(tags::MESSAGE_ID_BEING_RESPONDED_TO)
    }

    /// Status (0000,0900).
    pub fn status(&self) -> Option<u16> {
        self.u16(tags::STATUS)
    }

    /// Affected SOP Class UID (0000,0002).
    pub fn affected_sop_class(&self) -> Option<String> {
        self.str(tags::AFFECTED_SOP_CLASS_UID)
    }

    /// Affected SOP Instance UID (0000,1000).
    pub fn affected_sop_instance(&self) -> Option<String> {
        self.str(tags::AFFECTED_SOP_INSTANCE_UID)
    }

    /// Error Comment (0000,0902).
    pub fn error_comment(&self) -> Option<String> {
        self.str(tags::ERROR_COMMENT)
    }

    /// True when a data set follows (CommandDataSetType other than 0x0101).
    pub fn has_data_set(&self) -> bool {
        self.u16(tags::COMMAND_DATA_SET_TYPE)
            .is_some_and(|t| t != NO_DATA_SET)
    }

    /// The sub-operation counters of a C-GET/C-MOVE response.
    pub fn suboperations(&self) -> SubOperations {
        let n = |t| u32::from(self.u16(t).unwrap_or(0));
        SubOperations {
            remaining: n(tags::NUMBER_OF_REMAINING_SUBOPERATIONS),
            completed: n(tags::NUMBER_OF_COMPLETED_SUBOPERATIONS),
            failed: n(tags::NUMBER_OF_FAILED_SUBOPERATIONS),
            warning: n(tags::NUMBER_OF_WARNING_SUBOPERATIONS),
        }
    }

    /// Encodes the command set in Implicit VR Little Endian, CommandGroupLength first.
    pub fn encode(&self) -> Vec<u8> {
        let mut body = Vec::with_capacity(256);
        for (tag, v) in &self.elements {
            if *tag == tags::COMMAND_GROUP_LENGTH {
                continue;
            }
            put_element(&mut body, *tag, v);
        }
        let mut out = Vec::with_capacity(body.len() + 12);
        put_element(
            &mut out,
            tags::COMMAND_GROUP_LENGTH,
            &(body.len() as u32).to_le_bytes(),
        );
        out.extend_from_slice(&body);
        out
    }

    /// Decodes a command set (Implicit VR Little Endian, group 0000 only), checking every
    /// declared length against the bytes present.
    pub fn decode(bytes: &[u8]) -> Result<Command> {
        if bytes.len() > MAX_COMMAND_BYTES {
            return Err(Error::Protocol(format!(
                "command set of {} bytes is larger than {MAX_COMMAND_BYTES}",
                bytes.len()
            )));
        }
        let mut c = Command::default();
        let mut pos = 0usize;
        while pos < bytes.len() {
            let head = bytes.get(pos..pos + 8).ok_or_else(|| {
                Error::Protocol("command set truncated in an element header".into())
            })?;
            let group = u16::from_le_bytes([head[0], head[1]]);
            let elem = u16::from_le_bytes([head[2], head[3]]);
            let len = u32::from_le_bytes([head[4], head[5], head[6], head[7]]) as usize;
            if group != 0 {
                return Err(Error::Protocol(format!(
                    "element ({group:04X},{elem:04X}) outside group 0000 in a command set"
                )));
            }
            let start = pos + 8;
            let value = start
                .checked_add(len)
                .and_then(|end| bytes.get(start..end))
                .ok_or_else(|| {
                    Error::Protocol(format!(
                        "command element (0000,{elem:04X}) declares {len} bytes beyond the command set"
                    ))
                })?;
            c.elements.insert(u32::from(elem), value.to_vec());
            pos = start + len;
        }
        if c.u16(tags::COMMAND_FIELD).is_none() {
            return Err(Error::Protocol("command set without Command Field".into()));
        }
        Ok(c)
    }
}

fn put_element(out: &mut Vec<u8>, tag: u32, v: &[u8]) {
    out.extend_from_slice(&((tag >> 16) as u16).to_le_bytes());
    out.extend_from_slice(&((tag & 0xFFFF) as u16).to_le_bytes());
    out.extend_from_slice(&(v.len() as u32).to_le_bytes());
    out.extend_from_slice(v);
}

fn sat16(n: u32) -> u16 {
    u16::try_from(n).unwrap_or(u16::MAX)
}

/// The sub-operation counters of a C-GET or C-MOVE (PS3.4 C.4.2.1.4, C.4.3.1.4).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SubOperations {
    /// Not yet attempted.
    pub remaining: u32,
    /// Completed successfully.
    pub completed: u32,
    /// Failed.
    pub failed: u32,
    /// Completed with a warning.
    pub warning: u32,
}

impl SubOperations {
    /// The final status once nothing remains (PS3.4 C.4.2.1.5): success, 0xB000 when some
    /// sub-operations failed or warned, 0xA702 when every attempted one failed.
    pub fn final_status(&self) -> u16 {
        if self.failed > 0 && self.completed == 0 && self.warning == 0 {
            status::OUT_OF_RESOURCES_SUBOPERATIONS
        } else if self.failed > 0 || self.warning > 0 {
            status::SUBOPERATIONS_WARNING
        } else {
            status::SUCCESS
        }
    }
}

/// Whether a PDV carries command or data set bytes (message control header bit 0, PS3.8 E.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PdvKind {
    /// Command set fragment.
    Command,
    /// Data set fragment.
    Data,
}

/// The most data bytes one PDV can carry in a PDU of `max_pdu` variable-field bytes.
pub fn max_fragment(max_pdu: u32) -> usize {
    (max_pdu as usize).saturating_sub(6).max(1)
}

/// Appends one P-DATA-TF PDU (PS3.8 9.3.5) holding the given PDVs to `out`.
pub fn write_pdata_pdu(out: &mut Vec<u8>, pc_id: u8, pdvs: &[(PdvKind, bool, &[u8])]) {
    let len: usize = pdvs.iter().map(|(_, _, d)| 6 + d.len()).sum();
    out.push(0x04);
    out.push(0);
    out.extend_from_slice(&(len as u32).to_be_bytes());
    for (kind, last, data) in pdvs {
        out.extend_from_slice(&((data.len() + 2) as u32).to_be_bytes());
        out.push(pc_id);
        let mut control = 0u8;
        if *kind == PdvKind::Command {
            control |= 0x01;
        }
        if *last {
            control |= 0x02;
        }
        out.push(control);
        out.extend_from_slice(data);
    }
}

fn split_fragments<'a>(
    kind: PdvKind,
    bytes: &'a [u8],
    frag: usize,
    pdvs: &mut Vec<(PdvKind, bool, &'a [u8])>,
) {
    let n = bytes.len().div_ceil(frag).max(1);
    for i in 0..n {
        let chunk = &bytes[i * frag..((i + 1) * frag).min(bytes.len())];
        pdvs.push((kind, i + 1 == n, chunk));
    }
}

/// Encodes a whole message (command and optional data set) as P-DATA-TF PDUs no larger than
/// `max_pdu`, packing several PDVs into one PDU while they fit.
pub fn pdata_pdus(pc_id: u8, command: &[u8], data: Option<&[u8]>, max_pdu: u32) -> Vec<u8> {
    let frag = max_fragment(max_pdu);
    let mut pdvs: Vec<(PdvKind, bool, &[u8])> = Vec::new();
    split_fragments(PdvKind::Command, command, frag, &mut pdvs);
    if let Some(d) = data {
        split_fragments(PdvKind::Data, d, frag, &mut pdvs);
    }
    let mut out = Vec::with_capacity(command.len() + data.map_or(0, <[u8]>::len) + 64);
    let mut batch: Vec<(PdvKind, bool, &[u8])> = Vec::new();
    let mut batch_len = 0usize;
    for pdv in pdvs {
        let cost = 6 + pdv.2.len();
        if !batch.is_empty() && batch_len + cost > max_pdu as usize {
            write_pdata_pdu(&mut out, pc_id, &batch);
            batch.clear();
            batch_len = 0;
        }
        batch_len += cost;
        batch.push(pdv);
    }
    if !batch.is_empty() {
        write_pdata_pdu(&mut out, pc_id, &batch);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn command_round_trip() {
        let mut c = Command::request(field::C_STORE_RQ, 7, "1.2.840.10008.5.1.4.1.1.2");
        c.set_str(tags::AFFECTED_SOP_INSTANCE_UID, "1.2.3");
        c.set_has_data_set(true);
        let bytes = c.encode();
        assert_eq!(&bytes[..8], &[0, 0, 0, 0, 4, 0, 0, 0]);
        let d = Command::decode(&bytes).unwrap();
        assert_eq!(d.command_field(), field::C_STORE_RQ);
        assert_eq!(d.message_id(), 7);
        assert_eq!(d.affected_sop_instance().as_deref(), Some("1.2.3"));
        assert_eq!(
            d.get(tags::AFFECTED_SOP_INSTANCE_UID),
            Some(&b"1.2.3\0"[..])
        );
        assert!(d.has_data_set());
        let mut r = Command::response_to(&d, 0xA900);
        r.set_error_comment(&"x".repeat(100));
        let r = Command::decode(&r.encode()).unwrap();
        assert_eq!(r.command_field(), field::C_STORE_RSP);
        assert_eq!(r.responded_to(), Some(7));
        assert_eq!(r.status(), Some(0xA900));
        assert_eq!(r.error_comment().unwrap().len(), 64);
        assert!(!r.has_data_set());
    }

    #[test]
    fn hostile_command_sets_are_errors() {
        assert!(Command::decode(&[0, 0, 0, 1, 0xFF, 0xFF, 0xFF, 0xFF]).is_err());
        assert!(Command::decode(&[0, 0, 0, 1]).is_err());
        assert!(Command::decode(&[8, 0, 0x16, 0, 0, 0, 0, 0]).is_err());
        assert!(Command::decode(&[]).is_err());
    }

    #[test]
    fn fragments_respect_the_max_pdu() {
        let cmd = Command::new(field::C_ECHO_RQ).encode();
        let data = vec![7u8; 5000];
        let out = pdata_pdus(3, &cmd, Some(&data), 1024);
        let mut pos = 0;
        let mut total = 0;
        while pos < out.len() {
            assert_eq!(out[pos], 4);
            let len = u32::from_be_bytes(out[pos + 2..pos + 6].try_into().unwrap()) as usize;
            assert!(len <= 1024);
            total += len;
            pos += 6 + len;
        }
        assert_eq!(pos, out.len());
        assert!(total >= cmd.len() + data.len());
    }

    #[test]
    fn final_statuses() {
        let s = |c, f, w| SubOperations {
            remaining: 0,
            completed: c,
            failed: f,
            warning: w,
        };
        assert_eq!(s(3, 0, 0).final_status(), 0x0000);
        assert_eq!(s(2, 1, 0).final_status(), 0xB000);
        assert_eq!(s(0, 3, 0).final_status(), 0xA702);
        assert_eq!(s(0, 0, 0).final_status(), 0x0000);
    }
}
