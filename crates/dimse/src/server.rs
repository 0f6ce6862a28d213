//! The DIMSE server: accept loop, association limit, graceful shutdown and message dispatch.
//!
//! Contract:
//! - [`run`] never binds a socket: the caller passes the listener (tests bind `127.0.0.1:0`).
//! - [`run_tls`] serves the same services over DICOM TLS (PS3.15 B.1, the Basic TLS Secure
//!   Transport Connection Profile): `TCP_NODELAY` is set on the socket, then the TLS handshake
//!   runs inside the connection's own task (bounded by the connect timeout and cancelled by
//!   shutdown), so a slow or silent client never holds up the accept loop. Whether client
//!   certificates are required is the acceptor's configuration; a failed handshake is logged and
//!   the connection closed before any DICOM byte is read.
//! - At most `max_associations` associations are served at once; a connection beyond that is
//!   answered with A-ASSOCIATE-RJ "local limit exceeded" (transient) instead of waiting in the
//!   backlog.
//! - Every association request passes the access-control layer before it is negotiated, on both
//!   listeners: the calling AE title must be registered (`Directory` AE titles) and call from an
//!   allowed address, or the request is refused with A-ASSOCIATE-RJ (see the `access` module).
//!   The accepted association acts as that AE (one organisation) until it ends; every
//!   operation is authorized and audited as it.
//! - Each association runs in its own task; a panic or an error in one never touches another.
//! - On shutdown the listener stops accepting; associations waiting for their next message are
//!   aborted, those in the middle of a message finish it (a C-STORE is acknowledged only after its
//!   durable commit), and `run` returns once every association task has ended.
//!
//! Presentation contexts accepted (PS3.4): Verification; every storage SOP class of
//! `STORAGE_SOP_CLASSES` with every syntax of `ACCEPTED_TRANSFER_SYNTAXES` (stored unchanged; the
//! first syntax the SCU proposed among them wins); Patient Root and Study Root Q/R FIND, MOVE and
//! GET and Storage Commitment Push Model with Implicit or Explicit VR Little Endian. The requestor
//! may take the SCP role for storage SOP classes (C-GET sub-operations); for those contexts a
//! transfer syntax every stored instance can be delivered in losslessly is preferred (see
//! [`AcceptOptions::retrieve_preference`]).

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::Arc;

use dicom_ul::pdu::AbortRQServiceProviderReason;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinSet;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use vesalius_auth::Authenticator;
use vesalius_core::uid;
use vesalius_store::Ingestor;

use crate::access::Peer;
use crate::association::{AcceptOptions, Association, Timeouts, Transport};
use crate::error::{Error, Result};
use crate::message::{Command, field, sop_class, status};

/// A remote DICOM node: a C-MOVE destination or a Storage Commitment requester to call back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DicomNode {
    /// Its AE title.
    pub ae_title: String,
    /// Host name or address.
    pub host: String,
    /// TCP port.
    pub port: u16,
}

impl DicomNode {
    /// `host:port`, for dialling.
    pub fn addr(&self) -> String {
        if self.host.contains(':') && !self.host.starts_with('[') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }
}

/// Options of the DIMSE server; [`DimseServerOptions::new`] gives the defaults around the one
/// thing without a default, the access-control layer.
#[derive(Clone)]
pub struct DimseServerOptions {
    /// Who may associate and what they may do; the audit trail (docs/security.md, "DICOM
    /// callers").
    pub auth: Arc<Authenticator>,
    /// Our AE title.
    pub ae_title: String,
    /// The Maximum Length announced for received P-DATA PDUs (PS3.8 D.1).
    pub max_pdu_length: u32,
    /// Associations served at once.
    pub max_associations: usize,
    /// Configured DICOM nodes: C-MOVE destinations and Storage Commitment requesters to call
    /// back, consulted after the directory's AE titles with a listening address. A node is only
    /// ever called; it is not thereby allowed to call in.
    pub nodes: Vec<DicomNode>,
    /// Accept associations whatever Called AE Title they name.
    pub accept_any_called_ae: bool,
    /// Time limits of every association.
    pub timeouts: Timeouts,
    /// The most C-FIND matches returned for one request.
    pub max_query_results: usize,
}

impl std::fmt::Debug for DimseServerOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DimseServerOptions")
            .field("ae_title", &self.ae_title)
            .field("max_pdu_length", &self.max_pdu_length)
            .field("max_associations", &self.max_associations)
            .field("nodes", &self.nodes)
            .field("accept_any_called_ae", &self.accept_any_called_ae)
            .field("timeouts", &self.timeouts)
            .field("max_query_results", &self.max_query_results)
            .finish_non_exhaustive()
    }
}

impl DimseServerOptions {
    /// The defaults (AE title `VESALIUS`, 256 KiB PDUs, 64 associations, no nodes, the called
    /// AE title checked), admitting and authorizing through `auth`.
    pub fn new(auth: Arc<Authenticator>) -> Self {
        DimseServerOptions {
            auth,
            ae_title: "VESALIUS".into(),
            max_pdu_length: 256 << 10,
            max_associations: 64,
            nodes: Vec::new(),
            accept_any_called_ae: false,
            timeouts: Timeouts::default(),
            max_query_results: 1000,
        }
    }

    /// The configured node registered under `ae_title` (case-sensitive, trailing spaces
    /// ignored).
    pub fn node(&self, ae_title: &str) -> Option<&DicomNode> {
        let ae = ae_title.trim();
        self.nodes.iter().find(|n| n.ae_title.trim() == ae)
    }

    /// Where to reach `ae_title` on behalf of an AE of `org` (a C-MOVE destination, a Storage
    /// Commitment requester to call back): an AE title of the directory with a listening
    /// address, when it belongs to `org` (data never leaves towards another organisation's
    /// device this way), else a configured node; `None` when neither knows it.
    pub async fn destination(&self, ae_title: &str, org: &str) -> Option<DicomNode> {
        let ae = ae_title.trim();
        match self.auth.directory().ae(ae).await {
            Ok(Some(e)) if e.org == org => {
                if let Some((host, port)) = e.listen {
                    return Some(DicomNode {
                        ae_title: e.ae_title,
                        host,
                        port,
                    });
                }
            }
            Ok(_) => {}
            Err(e) => {
                tracing::warn!(ae, error = %e, "directory unavailable; trying configured nodes")
            }
        }
        self.node(ae).cloned()
    }
}

/// What every association task shares.
pub(crate) struct Server {
    pub(crate) ingestor: Arc<Ingestor>,
    pub(crate) options: DimseServerOptions,
    accept: AcceptOptions,
}

impl Server {
    /// The access-control layer.
    pub(crate) fn auth(&self) -> &Arc<Authenticator> {
        &self.options.auth
    }
}

/// Transfer syntaxes for the non-storage services.
fn uncompressed() -> Arc<Vec<String>> {
    Arc::new(vec![
        uid::EXPLICIT_VR_LE.to_owned(),
        uid::IMPLICIT_VR_LE.to_owned(),
    ])
}

/// The presentation contexts and roles the server accepts (see the module doc).
pub fn accept_options(options: &DimseServerOptions) -> AcceptOptions {
    let mut syntaxes = HashMap::new();
    let plain = uncompressed();
    for s in [
        sop_class::VERIFICATION,
        sop_class::PATIENT_ROOT_FIND,
        sop_class::PATIENT_ROOT_MOVE,
        sop_class::PATIENT_ROOT_GET,
        sop_class::STUDY_ROOT_FIND,
        sop_class::STUDY_ROOT_MOVE,
        sop_class::STUDY_ROOT_GET,
        sop_class::STORAGE_COMMITMENT_PUSH,
    ] {
        syntaxes.insert(s.to_owned(), plain.clone());
    }
    let stored: Arc<Vec<String>> = Arc::new(
        uid::ACCEPTED_TRANSFER_SYNTAXES
            .iter()
            .map(|s| (*s).to_owned())
            .collect(),
    );
    let mut scp = HashSet::new();
    for (class, _) in uid::STORAGE_SOP_CLASSES {
        syntaxes.insert((*class).to_owned(), stored.clone());
        scp.insert((*class).to_owned());
    }
    AcceptOptions {
        ae_title: options.ae_title.clone(),
        accept_any_called_ae: options.accept_any_called_ae,
        max_pdu_length: options.max_pdu_length,
        syntaxes,
        requestor_scp_classes: scp,
        retrieve_preference: Some(deliverable),
        timeouts: options.timeouts,
    }
}

/// Transfer syntaxes any stored instance can be sent in without loss: the uncompressed ones and
/// the lossless ones the codec can encode (PS3.5 A.4; lossy compression is never chosen for the
/// peer).
fn deliverable(ts: &str) -> bool {
    let lossless = matches!(
        ts,
        uid::EXPLICIT_VR_LE
            | uid::IMPLICIT_VR_LE
            | uid::DEFLATED_EXPLICIT_VR_LE
            | uid::EXPLICIT_VR_BE
            | uid::JPEG_LOSSLESS
            | uid::JPEG_LOSSLESS_SV1
            | uid::JPEG_LS_LOSSLESS
            | uid::JPEG_2000_LOSSLESS
            | uid::HTJ2K_LOSSLESS
            | uid::HTJ2K_LOSSLESS_RPCL
            | uid::RLE_LOSSLESS
    );
    lossless && vesalius_codec::can_transcode(uid::EXPLICIT_VR_LE, ts)
}

/// Serves DIMSE on `listener` until `shutdown` is cancelled, then waits for in-flight
/// associations (see the module doc).
pub async fn run(
    listener: TcpListener,
    ingestor: Arc<Ingestor>,
    options: DimseServerOptions,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    accept_loop(listener, None, ingestor, options, shutdown).await
}

/// Like [`run`], over TLS: every connection is a TLS session negotiated by `tls` (PS3.15 B.1;
/// see the module doc). The association limit counts handshaking connections too.
pub async fn run_tls(
    listener: TcpListener,
    tls: TlsAcceptor,
    ingestor: Arc<Ingestor>,
    options: DimseServerOptions,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    accept_loop(listener, Some(tls), ingestor, options, shutdown).await
}

async fn accept_loop(
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
    ingestor: Arc<Ingestor>,
    options: DimseServerOptions,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let server = Arc::new(Server {
        ingestor,
        accept: accept_options(&options),
        options,
    });
    let limit = Arc::new(Semaphore::new(server.options.max_associations.max(1)));
    let mut tasks = JoinSet::new();
    loop {
        let (socket, peer) = tokio::select! {
            _ = shutdown.cancelled() => break,
            Some(done) = tasks.join_next(), if !tasks.is_empty() => {
                report_task_end(done);
                continue;
            }
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    // EMFILE and friends: back off instead of spinning.
                    tracing::warn!(error = %e, "DIMSE accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let _ = socket.set_nodelay(true);
        match limit.clone().try_acquire_owned() {
            Ok(permit) => {
                tasks.spawn(connection(
                    socket,
                    peer,
                    tls.clone(),
                    server.clone(),
                    shutdown.clone(),
                    permit,
                ));
            }
            Err(_) => {
                tracing::warn!(%peer, "association refused: limit of concurrent associations reached");
                match &tls {
                    None => {
                        tokio::spawn(crate::association::refuse_busy(socket));
                    }
                    Some(tls) => {
                        let (tls, wait) = (tls.clone(), server.options.timeouts.connect);
                        let shutdown = shutdown.clone();
                        tokio::spawn(async move {
                            if let Some(s) = handshake(&tls, socket, peer, wait, &shutdown).await {
                                crate::association::refuse_busy(s).await;
                            }
                        });
                    }
                }
            }
        }
    }
    drop(listener);
    while let Some(done) = tasks.join_next().await {
        report_task_end(done);
    }
    Ok(())
}

fn report_task_end(done: std::result::Result<(), tokio::task::JoinError>) {
    if let Err(e) = done
        && e.is_panic()
    {
        tracing::error!("an association task panicked; the server goes on");
    }
}

/// Counts an association in the gauge for as long as it lives (panics included).
struct Active;

impl Active {
    fn new() -> Self {
        metrics::gauge!("vesalius_dimse_active_associations").increment(1.0);
        Active
    }
}

impl Drop for Active {
    fn drop(&mut self) {
        metrics::gauge!("vesalius_dimse_active_associations").decrement(1.0);
    }
}

/// One accepted connection: the TLS handshake when serving TLS, then the association.
async fn connection(
    socket: TcpStream,
    peer: SocketAddr,
    tls: Option<TlsAcceptor>,
    server: Arc<Server>,
    shutdown: CancellationToken,
    permit: OwnedSemaphorePermit,
) {
    match tls {
        None => serve(socket, peer, server, shutdown, permit).await,
        Some(tls) => {
            let wait = server.options.timeouts.connect;
            if let Some(s) = handshake(&tls, socket, peer, wait, &shutdown).await {
                serve(s, peer, server, shutdown, permit).await;
            }
        }
    }
}

/// The server side of the TLS handshake; `None` (logged) when it fails, times out or the
/// server shuts down first.
async fn handshake(
    tls: &TlsAcceptor,
    socket: TcpStream,
    peer: SocketAddr,
    wait: std::time::Duration,
    shutdown: &CancellationToken,
) -> Option<tokio_rustls::server::TlsStream<TcpStream>> {
    let r = tokio::select! {
        _ = shutdown.cancelled() => return None,
        r = tokio::time::timeout(wait, tls.accept(socket)) => r,
    };
    match r {
        Ok(Ok(s)) => {
            let (_, session) = s.get_ref();
            tracing::debug!(
                %peer,
                version = ?session.protocol_version(),
                client_certificate = session.peer_certificates().is_some(),
                "TLS session established"
            );
            Some(s)
        }
        Ok(Err(e)) => {
            metrics::counter!("vesalius_dimse_tls_handshake_failures_total").increment(1);
            tracing::info!(%peer, error = %e, "DICOM TLS handshake failed");
            None
        }
        Err(_) => {
            metrics::counter!("vesalius_dimse_tls_handshake_failures_total").increment(1);
            tracing::info!(%peer, "DICOM TLS handshake timed out");
            None
        }
    }
}

async fn serve(
    socket: impl Transport,
    peer: SocketAddr,
    server: Arc<Server>,
    shutdown: CancellationToken,
    _permit: OwnedSemaphorePermit,
) {
    let _active = Active::new();
    let opts = &server.options;
    let admit = |info| crate::access::admit(&opts.auth, opts, info, peer);
    let (mut assoc, caller) = match Association::accept_checked(socket, &server.accept, admit).await
    {
        Ok(a) => a,
        Err(e) => {
            tracing::info!(%peer, error = %e, "association not established");
            return;
        }
    };
    tracing::debug!(%peer, calling = assoc.peer_ae(), org = caller.org(), "association accepted");
    loop {
        let next = tokio::select! {
            biased;
            _ = shutdown.cancelled() => {
                tracing::info!(%peer, "aborting idle association: shutting down");
                assoc.abort().await;
                return;
            }
            r = assoc.recv_command() => r,
        };
        let outcome = match next {
            Ok(Some((pc, cmd))) => dispatch(&mut assoc, &server, &caller, pc, cmd).await,
            Ok(None) => {
                tracing::debug!(%peer, "association released");
                return;
            }
            Err(e) => Err(e),
        };
        match outcome {
            Ok(()) => {}
            Err(Error::Aborted) => {
                tracing::info!(%peer, "association aborted by the peer");
                return;
            }
            Err(e) => {
                tracing::warn!(%peer, calling = assoc.peer_ae(), error = %e, "aborting association");
                assoc
                    .abort_provider(AbortRQServiceProviderReason::InvalidPduParameter)
                    .await;
                return;
            }
        }
    }
}

/// Routes one request to its service, on behalf of `caller`. Operation failures (refusals by
/// the access policy included) are answered with a status inside the services; an `Err` here
/// means the association cannot go on.
async fn dispatch(
    assoc: &mut Association,
    server: &Server,
    caller: &Peer,
    pc: u8,
    cmd: Command,
) -> Result<()> {
    match cmd.command_field() {
        field::C_ECHO_RQ => crate::echo::handle(assoc, pc, &cmd).await,
        field::C_STORE_RQ => crate::store::handle(assoc, server, caller, pc, &cmd).await,
        field::C_FIND_RQ => crate::find::handle(assoc, server, caller, pc, &cmd).await,
        field::C_GET_RQ => crate::get::handle(assoc, server, caller, pc, &cmd).await,
        field::C_MOVE_RQ => crate::move_::handle(assoc, server, caller, pc, &cmd).await,
        field::N_ACTION_RQ => crate::commitment::handle(assoc, server, caller, pc, &cmd).await,
        // PS3.7 9.3.2.3: a C-CANCEL for an operation that is not in progress is ignored.
        field::C_CANCEL_RQ => Ok(()),
        other if other & 0x8000 != 0 => Err(Error::Protocol(format!(
            "unsolicited response 0x{other:04X}"
        ))),
        other => {
            if cmd.has_data_set() {
                assoc.drain_data_set(pc).await?;
            }
            tracing::info!(command = other, "unsupported DIMSE operation");
            let rsp = Command::response_to(&cmd, status::UNRECOGNIZED_OPERATION);
            assoc.send_message(pc, &rsp, None).await
        }
    }
}
