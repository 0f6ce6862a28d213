//! DICOM Upper Layer associations (PS3.8) over tokio, for both roles, built on the PDU codec of
//! `dicom-ul` (`read_pdu`/`write_pdu`).
//!
//! Why not `dicom-ul`'s `ServerAssociationOptions`: it negotiates one transfer syntax list for
//! every abstract syntax, while the archive accepts every stored syntax for storage SOP classes
//! and only Implicit/Explicit VR Little Endian for the others; and the services here need to read
//! single PDVs as they arrive (C-STORE streams each fragment to disk) and to poll for C-CANCEL
//! between responses. So negotiation (PS3.8 7.1.1, PS3.7 D.3.3) is done here, and the PDU reader
//! and writer of `dicom-ul` do the byte work.
//!
//! Contract:
//! - Every socket gets `TCP_NODELAY` (each message would otherwise stall on Nagle + delayed ACK);
//!   over TLS (PS3.15 B.1) it is set on the TCP socket before the handshake, and
//!   [`Association::accept_over`] / [`Association::request_over`] take the established stream.
//! - Reading is strict: a PDU whose declared length exceeds the Maximum Length we announced (or,
//!   before negotiation, [`MAX_ASSOCIATE_PDU`]) is refused before anything is buffered, and the
//!   caller aborts the association. The PDU decoder runs under `catch_unwind`, so malformed
//!   network data can never take a task down with a panic.
//! - Sending never exceeds the peer's Maximum Length (nor [`SEND_PDU_CAP`]).
//! - Every read and write is bounded by [`Timeouts`].
//! - Either side may pipeline: a command read early by [`Association::poll`] is handed back with
//!   [`Association::unread`]; an A-RELEASE-RQ seen early is answered when the current exchange ends.
//! - An acceptor may refuse a request on its AE titles before negotiating
//!   ([`Association::accept_checked`]): the server asks the access-control layer whether the
//!   calling AE title may associate from the peer's address.
//!
//! Submodules: `negotiation` (acceptor side of A-ASSOCIATE, admission refusals, busy refusal)
//! and `data_writer` ([`DataWriter`], streaming a data set in PDUs).

use std::collections::{HashMap, HashSet, VecDeque};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Buf, BytesMut};
use dicom_ul::pdu::{
    AbortRQServiceProviderReason, AbortRQSource, AssociationRQ, MINIMUM_PDU_SIZE, PDataValue,
    PDataValueType, PresentationContextProposed, PresentationContextResultReason, RequestorRoles,
    UserVariableItem,
};
use dicom_ul::{Pdu, read_pdu, write_pdu};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::error::{Error, Result};
use crate::message::{self, Command};

mod data_writer;
mod negotiation;
pub use data_writer::DataWriter;
use negotiation::negotiate;
pub use negotiation::{Refusal, RequestInfo, refuse_busy};

/// The DICOM Application Context Name (PS3.7 A.2.1).
pub const APPLICATION_CONTEXT: &str = "1.2.840.10008.3.1.1.1";
/// The largest A-ASSOCIATE-RQ/AC PDU accepted (their size is not bound by Maximum Length).
pub const MAX_ASSOCIATE_PDU: u32 = 1 << 20;
/// We never send P-DATA PDUs larger than this, even to peers that accept anything.
pub const SEND_PDU_CAP: u32 = 1 << 20;
/// The largest Maximum Length we announce.
pub const MAX_LOCAL_PDU: u32 = 16 << 20;
/// Peers announcing a Maximum Length below this are refused: nothing useful fits.
const MIN_PEER_PDU: u32 = 256;

/// Our Implementation Class UID and Version Name (PS3.7 D.3.3.2), shared with the file meta we write.
pub use vesalius_store::ingest::{IMPLEMENTATION_CLASS_UID, IMPLEMENTATION_VERSION_NAME};

/// A byte stream an association runs over: a TCP socket, or a TLS session on one (PS3.15 B.1).
pub trait Transport: AsyncRead + AsyncWrite + Unpin + Send + Sync + 'static {}

impl<T: AsyncRead + AsyncWrite + Unpin + Send + Sync + 'static> Transport for T {}

/// Time limits of an association.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    /// Dialling a peer (TCP connect plus A-ASSOCIATE).
    pub connect: Duration,
    /// Waiting for the next PDU from the peer.
    pub read: Duration,
    /// Writing one PDU.
    pub write: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            connect: Duration::from_secs(10),
            read: Duration::from_secs(120),
            write: Duration::from_secs(120),
        }
    }
}

/// An accepted presentation context.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PresentationContext {
    /// Presentation context ID (odd, 1..=255).
    pub id: u8,
    /// Abstract syntax (SOP class) UID.
    pub abstract_syntax: String,
    /// The one transfer syntax accepted.
    pub transfer_syntax: String,
}

/// What an acceptor (SCP) agrees to.
#[derive(Debug, Clone, Default)]
pub struct AcceptOptions {
    /// Our AE title.
    pub ae_title: String,
    /// Accept associations whatever Called AE Title they name.
    pub accept_any_called_ae: bool,
    /// The Maximum Length we announce and enforce on received P-DATA PDUs.
    pub max_pdu_length: u32,
    /// For each supported abstract syntax, the transfer syntaxes we accept. The first one the
    /// requestor proposed among them is chosen (PS3.8 9.3.3.2: proposals are in preference order).
    pub syntaxes: HashMap<String, Arc<Vec<String>>>,
    /// SOP classes for which the requestor may take the SCP role (C-GET storage sub-operations,
    /// PS3.4 C.4.3.1.1 and PS3.7 D.3.3.4).
    pub requestor_scp_classes: HashSet<String>,
    /// For storage classes whose SCP role the requestor takes (C-GET), transfer syntaxes that
    /// every stored instance can be delivered in; the first proposed one satisfying it is chosen
    /// over the requestor's first choice (so a C-GET SCU proposing JPEG 2000 first still gets
    /// its instances, in its next choice, rather than failed sub-operations).
    pub retrieve_preference: Option<fn(&str) -> bool>,
    /// Time limits.
    pub timeouts: Timeouts,
}

/// What a requestor (SCU) proposes.
#[derive(Debug, Clone, Default)]
pub struct RequestOptions {
    /// Our AE title (Calling AE Title).
    pub calling_ae: String,
    /// The peer's AE title (Called AE Title).
    pub called_ae: String,
    /// The Maximum Length we announce and enforce.
    pub max_pdu_length: u32,
    /// Proposed presentation contexts: abstract syntax and transfer syntaxes in preference order.
    pub contexts: Vec<(String, Vec<String>)>,
    /// SCP/SCU role selection items to propose: SOP class, SCU role, SCP role (PS3.7 D.3.3.4).
    pub roles: Vec<(String, bool, bool)>,
    /// Time limits.
    pub timeouts: Timeouts,
}

/// An established association, from either side.
pub struct Association {
    socket: Box<dyn Transport>,
    read_buf: BytesMut,
    local_max_pdu: u32,
    peer_max_pdu: u32,
    contexts: Vec<PresentationContext>,
    local_ae: String,
    peer_ae: String,
    requestor_scp: HashSet<String>,
    pending: VecDeque<PDataValue>,
    timeouts: Timeouts,
    next_message_id: u16,
    /// A command read by [`Association::poll`] and handed back with [`Association::unread`].
    unread: Option<(u8, Command)>,
    /// An A-RELEASE-RQ was read by [`Association::poll`] but not answered yet.
    release_requested: bool,
    /// The peer released the association (A-RELEASE-RP sent, socket closed).
    released: bool,
}

/// What [`Association::poll`] found without waiting.
#[derive(Debug)]
pub enum Polled {
    /// No complete message or PDU yet.
    Nothing,
    /// A complete command arrived.
    Command(u8, Command),
    /// The peer asked for release (A-RELEASE-RQ); nothing was answered yet.
    Release,
}

fn clamp_local(max: u32) -> u32 {
    if max == 0 {
        return MAX_LOCAL_PDU;
    }
    max.clamp(MINIMUM_PDU_SIZE, MAX_LOCAL_PDU)
}

fn effective_peer_max(announced: Option<u32>) -> u32 {
    match announced {
        // PS3.8 D.1: 0 means no limit; absent means the peer did not say (be conservative).
        Some(0) => SEND_PDU_CAP,
        Some(n) => n.min(SEND_PDU_CAP),
        None => dicom_ul::pdu::DEFAULT_MAX_PDU,
    }
}

fn ae_ok(ae: &str) -> bool {
    let t = ae.trim();
    !t.is_empty() && t.len() <= 16 && t.bytes().all(|b| (0x20..0x7F).contains(&b) && b != b'\\')
}

/// What a requestor must get right before anything is sent.
fn check_request(opts: &RequestOptions) -> Result<()> {
    for ae in [&opts.calling_ae, &opts.called_ae] {
        if !ae_ok(ae) {
            return Err(Error::Rejected(format!("invalid AE title {ae:?}")));
        }
    }
    if opts.contexts.is_empty() || opts.contexts.len() > 128 {
        return Err(Error::NoPresentationContext(format!(
            "{} presentation contexts proposed (1 to 128 allowed)",
            opts.contexts.len()
        )));
    }
    Ok(())
}

impl Association {
    fn new(socket: impl Transport, timeouts: Timeouts) -> Self {
        Association {
            socket: Box::new(socket),
            read_buf: BytesMut::with_capacity(64 << 10),
            local_max_pdu: MAX_ASSOCIATE_PDU,
            peer_max_pdu: dicom_ul::pdu::DEFAULT_MAX_PDU,
            contexts: Vec::new(),
            local_ae: String::new(),
            peer_ae: String::new(),
            requestor_scp: HashSet::new(),
            pending: VecDeque::new(),
            timeouts,
            next_message_id: 1,
            unread: None,
            release_requested: false,
            released: false,
        }
    }

    /// Accepts an association on a freshly accepted socket: reads the A-ASSOCIATE-RQ, negotiates
    /// and answers A-ASSOCIATE-AC, or A-ASSOCIATE-RJ / A-ABORT (then returns the error).
    pub async fn accept(socket: TcpStream, opts: &AcceptOptions) -> Result<Association> {
        let _ = socket.set_nodelay(true);
        Association::accept_over(socket, opts).await
    }

    /// Like [`Association::accept`] on an established stream (a TLS session: the caller set
    /// `TCP_NODELAY` on its socket and completed the handshake).
    pub async fn accept_over(stream: impl Transport, opts: &AcceptOptions) -> Result<Association> {
        Association::accept_checked(stream, opts, |_| async { Ok(()) })
            .await
            .map(|(a, ())| a)
    }

    /// Like [`Association::accept_over`], with an admission check: once the A-ASSOCIATE-RQ is
    /// read, `admit` decides on its AE titles before anything is negotiated. A [`Refusal`] is
    /// answered with A-ASSOCIATE-RJ carrying its result, source and reason (PS3.8 9.3.4) and
    /// returned as [`Error::Rejected`]; otherwise negotiation goes on and `admit`'s value is
    /// handed back with the association (the server keeps its principal in it).
    pub async fn accept_checked<T, F, Fut>(
        stream: impl Transport,
        opts: &AcceptOptions,
        admit: F,
    ) -> Result<(Association, T)>
    where
        F: FnOnce(RequestInfo) -> Fut,
        Fut: Future<Output = std::result::Result<T, Refusal>>,
    {
        let mut a = Association::new(stream, opts.timeouts);
        let pdu = match a.recv_pdu().await {
            Ok(p) => p,
            Err(e) => {
                if matches!(e, Error::Protocol(_)) {
                    a.abort_provider(AbortRQServiceProviderReason::InvalidPduParameter)
                        .await;
                }
                return Err(e);
            }
        };
        let rq = match pdu {
            Pdu::AssociationRQ(rq) => rq,
            other => {
                let what = other.short_description().to_string();
                a.abort_provider(AbortRQServiceProviderReason::UnexpectedPdu)
                    .await;
                return Err(Error::Protocol(format!(
                    "expected A-ASSOCIATE-RQ, got {what}"
                )));
            }
        };
        let admitted = match admit(RequestInfo::of(&rq)).await {
            Ok(t) => t,
            Err(refusal) => {
                let _ = a.send_pdu(&Pdu::AssociationRJ(refusal.to_pdu())).await;
                let _ = a.socket.shutdown().await;
                return Err(Error::Rejected(refusal.why));
            }
        };
        match negotiate(&rq, opts) {
            Ok(n) => {
                a.send_pdu(&Pdu::AssociationAC(n.ac)).await?;
                a.local_max_pdu = clamp_local(opts.max_pdu_length);
                a.peer_max_pdu = n.peer_max_pdu;
                a.contexts = n.contexts;
                a.requestor_scp = n.requestor_scp;
                a.local_ae = opts.ae_title.clone();
                a.peer_ae = rq.calling_ae_title.trim().to_owned();
                Ok((a, admitted))
            }
            Err((rj, why)) => {
                let _ = a.send_pdu(&Pdu::AssociationRJ(rj)).await;
                let _ = a.socket.shutdown().await;
                Err(Error::Rejected(why))
            }
        }
    }

    /// Dials `addr` and requests an association.
    pub async fn request(addr: &str, opts: &RequestOptions) -> Result<Association> {
        check_request(opts)?;
        let t = opts.timeouts;
        let socket = tokio::time::timeout(t.connect, TcpStream::connect(addr))
            .await
            .map_err(|_| Error::Timeout("connecting"))?
            .map_err(|source| Error::Connect {
                addr: addr.to_owned(),
                source,
            })?;
        let _ = socket.set_nodelay(true);
        Association::request_over(socket, opts).await
    }

    /// Like [`Association::request`] on an established stream (a TLS session to the peer).
    pub async fn request_over(
        stream: impl Transport,
        opts: &RequestOptions,
    ) -> Result<Association> {
        check_request(opts)?;
        let t = opts.timeouts;
        let mut a = Association::new(stream, t);
        let proposed: Vec<PresentationContextProposed> = opts
            .contexts
            .iter()
            .enumerate()
            .map(|(i, (abs, ts))| PresentationContextProposed {
                id: (2 * i + 1) as u8,
                abstract_syntax: abs.clone(),
                transfer_syntaxes: ts.clone(),
            })
            .collect();
        let local_max = clamp_local(opts.max_pdu_length);
        let mut user_variables = vec![
            UserVariableItem::MaxLength(local_max),
            UserVariableItem::ImplementationClassUID(IMPLEMENTATION_CLASS_UID.into()),
            UserVariableItem::ImplementationVersionName(IMPLEMENTATION_VERSION_NAME.into()),
        ];
        for (class, scu, scp) in &opts.roles {
            user_variables.push(UserVariableItem::ScuScpRoleSelectionSubItem(
                class.clone(),
                RequestorRoles {
                    scu: *scu,
                    scp: *scp,
                },
            ));
        }
        let rq = AssociationRQ {
            protocol_version: 1,
            calling_ae_title: opts.calling_ae.trim().to_owned(),
            called_ae_title: opts.called_ae.trim().to_owned(),
            application_context_name: APPLICATION_CONTEXT.into(),
            presentation_contexts: proposed.clone(),
            user_variables,
        };
        a.send_pdu(&Pdu::AssociationRQ(rq)).await?;
        let ac = match tokio::time::timeout(t.connect, a.recv_pdu())
            .await
            .map_err(|_| Error::Timeout("waiting for A-ASSOCIATE-AC"))??
        {
            Pdu::AssociationAC(ac) => ac,
            Pdu::AssociationRJ(rj) => {
                return Err(Error::Rejected(format!("{:?}: {}", rj.result, rj.source)));
            }
            Pdu::AbortRQ { .. } => return Err(Error::Aborted),
            other => {
                let what = other.short_description().to_string();
                a.abort_provider(AbortRQServiceProviderReason::UnexpectedPdu)
                    .await;
                return Err(Error::Protocol(format!(
                    "expected A-ASSOCIATE-AC, got {what}"
                )));
            }
        };
        a.local_max_pdu = local_max;
        a.local_ae = opts.calling_ae.trim().to_owned();
        a.peer_ae = opts.called_ae.trim().to_owned();
        let mut announced = None;
        for uv in &ac.user_variables {
            match uv {
                UserVariableItem::MaxLength(n) => announced = Some(*n),
                UserVariableItem::ScuScpRoleSelectionSubItem(class, roles) if roles.scp => {
                    a.requestor_scp
                        .insert(class.trim_end_matches('\0').to_owned());
                }
                _ => {}
            }
        }
        a.peer_max_pdu = effective_peer_max(announced);
        if a.peer_max_pdu < MIN_PEER_PDU {
            let max = a.peer_max_pdu;
            a.abort().await;
            return Err(Error::Protocol(format!(
                "peer Maximum Length {max} is unusable"
            )));
        }
        for r in &ac.presentation_contexts {
            if r.reason != PresentationContextResultReason::Acceptance {
                continue;
            }
            if let Some(p) = proposed.iter().find(|p| p.id == r.id) {
                let ts = vesalius_core::uid::trim_uid(&r.transfer_syntax).to_owned();
                // PS3.8 9.3.3.2: the accepted syntax must be one we proposed.
                if p.transfer_syntaxes.contains(&ts) {
                    a.contexts.push(PresentationContext {
                        id: r.id,
                        abstract_syntax: p.abstract_syntax.clone(),
                        transfer_syntax: ts,
                    });
                }
            }
        }
        Ok(a)
    }

    /// The peer's AE title.
    pub fn peer_ae(&self) -> &str {
        &self.peer_ae
    }

    /// Our AE title on this association.
    pub fn local_ae(&self) -> &str {
        &self.local_ae
    }

    /// The largest P-DATA PDU we send (the peer's Maximum Length, capped).
    pub fn peer_max_pdu(&self) -> u32 {
        self.peer_max_pdu
    }

    /// The Maximum Length we announced.
    pub fn local_max_pdu(&self) -> u32 {
        self.local_max_pdu
    }

    /// The accepted presentation contexts.
    pub fn contexts(&self) -> &[PresentationContext] {
        &self.contexts
    }

    /// The accepted context with this ID.
    pub fn context(&self, id: u8) -> Option<&PresentationContext> {
        self.contexts.iter().find(|c| c.id == id)
    }

    /// An accepted context for `abstract_syntax`, with transfer syntax `ts` when given.
    pub fn find_context(
        &self,
        abstract_syntax: &str,
        ts: Option<&str>,
    ) -> Option<&PresentationContext> {
        self.contexts.iter().find(|c| {
            c.abstract_syntax == abstract_syntax && ts.is_none_or(|t| t == c.transfer_syntax)
        })
    }

    /// True when role selection lets the association requestor act as SCP for `sop_class`.
    pub fn requestor_is_scp(&self, sop_class: &str) -> bool {
        self.requestor_scp.contains(sop_class)
    }

    /// A fresh Message ID for a request we send on this association.
    pub fn next_message_id(&mut self) -> u16 {
        let id = self.next_message_id;
        self.next_message_id = self.next_message_id.checked_add(1).unwrap_or(1);
        id
    }

    async fn write_all(&mut self, bytes: &[u8]) -> Result<()> {
        // The flush matters over TLS: a record may otherwise stay buffered in the session.
        let write = async {
            self.socket.write_all(bytes).await?;
            self.socket.flush().await
        };
        tokio::time::timeout(self.timeouts.write, write)
            .await
            .map_err(|_| Error::Timeout("writing to the peer"))?
            .map_err(Error::Network)
    }

    /// Sends one PDU.
    pub async fn send_pdu(&mut self, pdu: &Pdu) -> Result<()> {
        let mut buf = Vec::with_capacity(256);
        write_pdu(&mut buf, pdu).map_err(|e| Error::Protocol(format!("encoding PDU: {e}")))?;
        self.write_all(&buf).await
    }

    /// Receives the next PDU (strictly bounded by our Maximum Length).
    pub async fn recv_pdu(&mut self) -> Result<Pdu> {
        loop {
            if let Some(pdu) = parse_pdu(&mut self.read_buf, self.local_max_pdu)? {
                return Ok(pdu);
            }
            let n =
                tokio::time::timeout(self.timeouts.read, self.socket.read_buf(&mut self.read_buf))
                    .await
                    .map_err(|_| Error::Timeout("waiting for the peer"))?
                    .map_err(Error::Network)?;
            if n == 0 {
                return Err(Error::Aborted);
            }
        }
    }

    /// The next PDV; `None` when the peer asked for release (A-RELEASE-RQ).
    async fn next_pdv(&mut self) -> Result<Option<PDataValue>> {
        loop {
            if let Some(v) = self.pending.pop_front() {
                return Ok(Some(v));
            }
            if self.release_requested {
                return Ok(None);
            }
            match self.recv_pdu().await? {
                Pdu::PData { data } if !data.is_empty() => self.pending.extend(data),
                Pdu::ReleaseRQ => return Ok(None),
                Pdu::AbortRQ { .. } => return Err(Error::Aborted),
                other => {
                    return Err(Error::Protocol(format!(
                        "unexpected {}",
                        other.short_description()
                    )));
                }
            }
        }
    }

    fn check_pc(&self, id: u8) -> Result<()> {
        if self.context(id).is_none() {
            return Err(Error::Protocol(format!(
                "PDV on presentation context {id}, which was not accepted"
            )));
        }
        Ok(())
    }

    /// Receives the next command. `Ok(None)` means the peer released the association: the
    /// A-RELEASE-RP has been sent and the socket closed.
    pub async fn recv_command(&mut self) -> Result<Option<(u8, Command)>> {
        if let Some(c) = self.unread.take() {
            return Ok(Some(c));
        }
        if self.released {
            return Ok(None);
        }
        let mut buf = Vec::new();
        let mut pc = None;
        loop {
            let Some(v) = self.next_pdv().await? else {
                if pc.is_some() {
                    return Err(Error::Protocol("release requested inside a command".into()));
                }
                self.answer_release().await;
                return Ok(None);
            };
            if v.value_type != PDataValueType::Command {
                return Err(Error::Protocol(
                    "data set fragment where a command was expected".into(),
                ));
            }
            self.check_pc(v.presentation_context_id)?;
            if pc.is_some_and(|p| p != v.presentation_context_id) {
                return Err(Error::Protocol(
                    "command fragments on two presentation contexts".into(),
                ));
            }
            pc = Some(v.presentation_context_id);
            if buf.len() + v.data.len() > message::MAX_COMMAND_BYTES {
                return Err(Error::Protocol("command set too large".into()));
            }
            buf.extend_from_slice(&v.data);
            if v.is_last {
                let cmd = Command::decode(&buf)?;
                return Ok(Some((v.presentation_context_id, cmd)));
            }
        }
    }

    /// Receives the next data set fragment of the message on `pc`: its bytes and whether it is
    /// the last one.
    pub async fn recv_data_fragment(&mut self, pc: u8) -> Result<(Vec<u8>, bool)> {
        let v = self
            .next_pdv()
            .await?
            .ok_or_else(|| Error::Protocol("release requested inside a data set".into()))?;
        if v.value_type != PDataValueType::Data {
            return Err(Error::Protocol("command fragment inside a data set".into()));
        }
        if v.presentation_context_id != pc {
            return Err(Error::Protocol(format!(
                "data set fragment on presentation context {} instead of {pc}",
                v.presentation_context_id
            )));
        }
        Ok((v.data, v.is_last))
    }

    /// Receives a whole (small) data set, refusing more than `limit` bytes.
    pub async fn recv_data_set(&mut self, pc: u8, limit: usize) -> Result<Vec<u8>> {
        let mut out = Vec::new();
        loop {
            let (data, last) = self.recv_data_fragment(pc).await?;
            if out.len() + data.len() > limit {
                return Err(Error::Protocol(format!(
                    "data set larger than {limit} bytes"
                )));
            }
            out.extend_from_slice(&data);
            if last {
                return Ok(out);
            }
        }
    }

    /// Reads and discards the data set of the current message.
    pub async fn drain_data_set(&mut self, pc: u8) -> Result<()> {
        while !self.recv_data_fragment(pc).await?.1 {}
        Ok(())
    }

    /// Answers a release request (A-RELEASE-RP) and closes the socket; later
    /// [`Association::recv_command`] calls return `Ok(None)`.
    pub async fn answer_release(&mut self) {
        let _ = self.send_pdu(&Pdu::ReleaseRP).await;
        let _ = self.socket.shutdown().await;
        self.release_requested = false;
        self.released = true;
    }

    /// True once the peer released the association.
    pub fn is_released(&self) -> bool {
        self.released
    }

    /// Looks at what has already arrived, without waiting: a complete command, a release
    /// request, or nothing. Bytes of an incomplete message stay buffered.
    pub fn poll(&mut self) -> Result<Polled> {
        if self.released {
            return Ok(Polled::Release);
        }
        match self.try_read() {
            Ok(0) => return Err(Error::Aborted),
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(e) => return Err(Error::Network(e)),
        }
        while !self.release_requested
            && let Some(pdu) = parse_pdu(&mut self.read_buf, self.local_max_pdu)?
        {
            match pdu {
                Pdu::PData { data } => self.pending.extend(data),
                Pdu::AbortRQ { .. } => return Err(Error::Aborted),
                Pdu::ReleaseRQ => self.release_requested = true,
                other => {
                    return Err(Error::Protocol(format!(
                        "unexpected {} during an operation",
                        other.short_description()
                    )));
                }
            }
        }
        let complete = self.pending.iter().position(|v| v.is_last).filter(|end| {
            self.pending
                .iter()
                .take(end + 1)
                .all(|v| v.value_type == PDataValueType::Command)
        });
        if let Some(end) = complete {
            let pc = self.pending[0].presentation_context_id;
            self.check_pc(pc)?;
            let mut buf = Vec::new();
            for v in self.pending.drain(..=end) {
                buf.extend_from_slice(&v.data);
            }
            return Ok(Polled::Command(pc, Command::decode(&buf)?));
        }
        Ok(if self.release_requested && self.pending.is_empty() {
            Polled::Release
        } else {
            Polled::Nothing
        })
    }

    /// Reads what is available without waiting (`WouldBlock` when nothing is): one poll of the
    /// stream with a no-op waker, since a TLS stream has no `try_read`. Dropping a pending read
    /// loses nothing: bytes are only moved into `read_buf` when the read completes.
    fn try_read(&mut self) -> std::io::Result<usize> {
        use std::future::Future;
        let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
        let read = std::pin::pin!(self.socket.read_buf(&mut self.read_buf));
        match read.poll(&mut cx) {
            std::task::Poll::Ready(r) => r,
            std::task::Poll::Pending => Err(std::io::ErrorKind::WouldBlock.into()),
        }
    }

    /// Hands back a command obtained from [`Association::poll`]: the next
    /// [`Association::recv_command`] returns it.
    pub fn unread(&mut self, pc: u8, cmd: Command) {
        self.unread = Some((pc, cmd));
    }

    /// Like [`Association::poll`] inside an operation, where a release request is a violation.
    pub fn poll_command(&mut self) -> Result<Option<(u8, Command)>> {
        match self.poll()? {
            Polled::Nothing => Ok(None),
            Polled::Command(pc, c) => Ok(Some((pc, c))),
            Polled::Release => Err(Error::Protocol(
                "release requested during an operation".into(),
            )),
        }
    }

    /// Sends a command and, optionally, a data set already in memory.
    pub async fn send_message(&mut self, pc: u8, cmd: &Command, data: Option<&[u8]>) -> Result<()> {
        let mut cmd = cmd.clone();
        cmd.set_has_data_set(data.is_some());
        let bytes = message::pdata_pdus(pc, &cmd.encode(), data, self.peer_max_pdu);
        self.write_all(&bytes).await
    }

    /// Sends several messages in one write (pipelining, e.g. a request and its C-CANCEL-RQ).
    pub async fn send_messages(
        &mut self,
        messages: &[(u8, &Command, Option<&[u8]>)],
    ) -> Result<()> {
        let mut bytes = Vec::new();
        for (pc, cmd, data) in messages {
            let mut cmd = (*cmd).clone();
            cmd.set_has_data_set(data.is_some());
            bytes.extend(message::pdata_pdus(
                *pc,
                &cmd.encode(),
                *data,
                self.peer_max_pdu,
            ));
        }
        self.write_all(&bytes).await
    }

    /// Sends a command announcing a data set that will be streamed with [`DataWriter`].
    pub async fn send_command_for_stream(&mut self, pc: u8, cmd: &Command) -> Result<()> {
        let mut cmd = cmd.clone();
        cmd.set_has_data_set(true);
        let bytes = message::pdata_pdus(pc, &cmd.encode(), None, self.peer_max_pdu);
        self.write_all(&bytes).await
    }

    /// A writer streaming a data set on `pc` in PDUs as large as the peer allows.
    pub fn data_writer(&mut self, pc: u8) -> DataWriter<'_> {
        let cap = message::max_fragment(self.peer_max_pdu);
        let mut buf = Vec::with_capacity(cap + 12);
        buf.resize(12, 0);
        DataWriter {
            assoc: self,
            pc,
            buf,
            cap,
        }
    }

    /// Releases the association (A-RELEASE-RQ, waits for A-RELEASE-RP) and closes the socket.
    pub async fn release(mut self) -> Result<()> {
        self.send_pdu(&Pdu::ReleaseRQ).await?;
        // Late P-DATA may still arrive before the reply; a release collision is answered.
        for _ in 0..64 {
            match self.recv_pdu().await {
                Ok(Pdu::ReleaseRP) | Err(Error::Aborted) => break,
                Ok(Pdu::ReleaseRQ) => {
                    self.send_pdu(&Pdu::ReleaseRP).await?;
                }
                Ok(Pdu::AbortRQ { .. }) => break,
                Ok(_) => continue,
                Err(e) => return Err(e),
            }
        }
        let _ = self.socket.shutdown().await;
        Ok(())
    }

    /// Aborts the association as its user (A-ABORT, source 0) and closes the socket.
    pub async fn abort(mut self) {
        let pdu = Pdu::AbortRQ {
            source: AbortRQSource::ServiceUser,
        };
        let _ = tokio::time::timeout(Duration::from_secs(2), self.send_pdu(&pdu)).await;
        let _ = self.socket.shutdown().await;
    }

    /// Aborts as the service provider after a protocol violation (PS3.8 9.3.8).
    pub async fn abort_provider(&mut self, reason: AbortRQServiceProviderReason) {
        let pdu = Pdu::AbortRQ {
            source: AbortRQSource::ServiceProvider(reason),
        };
        let _ = tokio::time::timeout(Duration::from_secs(2), self.send_pdu(&pdu)).await;
        let _ = self.socket.shutdown().await;
    }
}

/// Parses one complete PDU from the front of `buf`, checking its declared length first.
fn parse_pdu(buf: &mut BytesMut, max: u32) -> Result<Option<Pdu>> {
    if buf.len() < 6 {
        return Ok(None);
    }
    let len = u32::from_be_bytes([buf[2], buf[3], buf[4], buf[5]]);
    if len > max {
        return Err(Error::Protocol(format!(
            "PDU type {:#04x} declares {len} bytes, beyond the maximum {max}",
            buf[0]
        )));
    }
    let total = 6 + len as usize;
    if buf.len() < total {
        buf.reserve(total - buf.len());
        return Ok(None);
    }
    let bytes = &buf[..total];
    // dicom-ul's reader is bounds-checked, but a panic on hostile bytes must not be possible.
    let parsed = std::panic::catch_unwind(|| read_pdu(bytes, max.max(MINIMUM_PDU_SIZE), true));
    let pdu = match parsed {
        Ok(Ok(Some(pdu))) => pdu,
        Ok(Ok(None)) => return Err(Error::Protocol("PDU shorter than its content".into())),
        Ok(Err(e)) => return Err(Error::Protocol(format!("malformed PDU: {e}"))),
        Err(_) => return Err(Error::Protocol("malformed PDU (decoder panicked)".into())),
    };
    buf.advance(total);
    Ok(Some(pdu))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_pdu_refuses_oversized_declarations() {
        let mut b = BytesMut::from(&[0x04u8, 0, 0xFF, 0xFF, 0xFF, 0xF0][..]);
        assert!(parse_pdu(&mut b, 65536).is_err());
        let mut b = BytesMut::from(&[0x05u8, 0, 0, 0, 0, 4, 0, 0][..]);
        assert!(parse_pdu(&mut b, 65536).unwrap().is_none());
        b.extend_from_slice(&[0, 0]);
        assert_eq!(parse_pdu(&mut b, 65536).unwrap(), Some(Pdu::ReleaseRQ));
        // A P-DATA whose PDV claims more than the PDU holds.
        let mut b = BytesMut::from(&[0x04u8, 0, 0, 0, 0, 8, 0, 0, 0x10, 0, 1, 3, 0, 0][..]);
        assert!(parse_pdu(&mut b, 65536).is_err());
    }
}
