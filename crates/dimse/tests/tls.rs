//! DICOM TLS (PS3.15 B.1) with certificates made by rcgen at test time: C-ECHO over TLS, a
//! plain association refused on the TLS port, and client certificate verification (a client
//! without a certificate signed by the configured CA is refused, one with it is served), and the
//! busy refusal inside a TLS session; an unknown calling AE title is refused over TLS as over
//! plain TCP.

use std::sync::Arc;
use std::time::Duration;

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    KeyUsagePurpose,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use vesalius_dimse::DimseServerOptions;
use vesalius_dimse::association::{Association, RequestOptions};
use vesalius_dimse::message::{Command, field, sop_class, status};

use crate::common::AE;

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A test CA and certificates it signs.
struct Pki {
    ca: CertifiedIssuer<'static, KeyPair>,
}

/// A certificate chain and its key.
struct Leaf {
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
}

impl Pki {
    fn new() -> Pki {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "Vesalius test CA");
        let ca = CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap();
        Pki { ca }
    }

    fn ca_der(&self) -> CertificateDer<'static> {
        self.ca.as_ref().der().clone()
    }

    fn roots(&self) -> Arc<RootCertStore> {
        let mut roots = RootCertStore::empty();
        roots.add(self.ca_der()).unwrap();
        Arc::new(roots)
    }

    fn leaf(&self, names: &[&str], usage: ExtendedKeyUsagePurpose) -> Leaf {
        let names: Vec<String> = names.iter().map(|s| s.to_string()).collect();
        let mut params = CertificateParams::new(names).unwrap();
        params.extended_key_usages = vec![usage];
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.ca).unwrap();
        Leaf {
            chain: vec![cert.der().clone(), self.ca_der()],
            key: PrivatePkcs8KeyDer::from(key.serialize_der()).into(),
        }
    }
}

struct TlsServer {
    addr: std::net::SocketAddr,
    access: crate::common::Access,
    shutdown: CancellationToken,
    task: JoinHandle<std::io::Result<()>>,
    _dir: tempfile::TempDir,
}

impl TlsServer {
    async fn stop(self) {
        self.shutdown.cancel();
        let r = tokio::time::timeout(Duration::from_secs(5), self.task).await;
        assert!(matches!(r, Ok(Ok(Ok(())))), "server did not stop: {r:?}");
    }
}

/// A DIMSE server over TLS with `config`, on in-memory storage.
async fn start_tls(config: ServerConfig) -> TlsServer {
    start_tls_with(config, |_| {}).await
}

async fn start_tls_with(
    config: ServerConfig,
    configure: impl FnOnce(&mut DimseServerOptions),
) -> TlsServer {
    let dir = tempfile::tempdir().unwrap();
    let access = crate::common::Access::new().await;
    let ingestor = crate::common::ingestor(dir.path(), &access.audit);
    let mut options = crate::common::options(&access.auth);
    configure(&mut options);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(vesalius_dimse::run_tls(
        listener,
        tokio_rustls::TlsAcceptor::from(Arc::new(config)),
        ingestor,
        options,
        shutdown.clone(),
    ));
    TlsServer {
        addr,
        access,
        shutdown,
        task,
        _dir: dir,
    }
}

fn server_config(pki: &Pki, client_ca: Option<Arc<RootCertStore>>) -> ServerConfig {
    let leaf = pki.leaf(
        &["localhost", "127.0.0.1"],
        ExtendedKeyUsagePurpose::ServerAuth,
    );
    let builder = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .unwrap();
    let builder = match client_ca {
        None => builder.with_no_client_auth(),
        Some(roots) => builder.with_client_cert_verifier(
            WebPkiClientVerifier::builder_with_provider(roots, provider())
                .build()
                .unwrap(),
        ),
    };
    builder.with_single_cert(leaf.chain, leaf.key).unwrap()
}

fn client_config(pki: &Pki, client_cert: Option<Leaf>) -> ClientConfig {
    let builder = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(pki.roots());
    match client_cert {
        None => builder.with_no_client_auth(),
        Some(leaf) => builder.with_client_auth_cert(leaf.chain, leaf.key).unwrap(),
    }
}

/// A TLS session and an association over it (Verification, Implicit VR Little Endian).
async fn tls_associate(
    addr: std::net::SocketAddr,
    config: ClientConfig,
) -> vesalius_dimse::Result<Association> {
    tls_associate_as(addr, config, "TLSSCU").await
}

/// Like [`tls_associate`], calling as `calling`.
async fn tls_associate_as(
    addr: std::net::SocketAddr,
    config: ClientConfig,
    calling: &str,
) -> vesalius_dimse::Result<Association> {
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    tcp.set_nodelay(true).unwrap();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let name = ServerName::try_from("localhost").unwrap();
    let tls = connector
        .connect(name, tcp)
        .await
        .map_err(vesalius_dimse::Error::Network)?;
    let opts = RequestOptions {
        calling_ae: calling.into(),
        called_ae: AE.into(),
        max_pdu_length: 65536,
        contexts: vec![(
            sop_class::VERIFICATION.into(),
            vec!["1.2.840.10008.1.2".into()],
        )],
        roles: Vec::new(),
        timeouts: Default::default(),
    };
    Association::request_over(tls, &opts).await
}

/// One C-ECHO over TLS with `config`: the TLS handshake, A-ASSOCIATE, C-ECHO, release.
async fn tls_echo(addr: std::net::SocketAddr, config: ClientConfig) -> vesalius_dimse::Result<()> {
    let mut assoc = tls_associate(addr, config).await?;
    let pc = assoc.contexts()[0].id;
    let id = assoc.next_message_id();
    let rq = Command::request(field::C_ECHO_RQ, id, sop_class::VERIFICATION);
    assoc.send_message(pc, &rq, None).await?;
    let (_, rsp) = assoc
        .recv_command()
        .await?
        .ok_or(vesalius_dimse::Error::Aborted)?;
    assert_eq!(rsp.command_field(), field::C_ECHO_RSP);
    assert_eq!(rsp.status(), Some(status::SUCCESS));
    assoc.release().await
}

#[tokio::test(flavor = "multi_thread")]
async fn echo_over_tls_and_plain_refused() {
    let pki = Pki::new();
    let server = start_tls(server_config(&pki, None)).await;
    tls_echo(server.addr, client_config(&pki, None))
        .await
        .expect("C-ECHO over TLS");
    // A plain DICOM association on the TLS port never gets an answer the SCU accepts.
    let plain = vesalius_dimse::scu::echo(&server.addr.to_string(), "PLAIN", AE).await;
    assert!(
        plain.is_err(),
        "plain association on the TLS port succeeded"
    );
    // A client that does not trust the server's CA refuses it.
    let other = Pki::new();
    assert!(
        tls_echo(server.addr, client_config(&other, None))
            .await
            .is_err()
    );
    // And the server is still serving.
    tls_echo(server.addr, client_config(&pki, None))
        .await
        .expect("C-ECHO over TLS after failures");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn client_certificate_required() {
    let pki = Pki::new();
    let server = start_tls(server_config(&pki, Some(pki.roots()))).await;
    // No client certificate: refused (over TLS 1.3 the client learns it at its first read).
    let err = tls_echo(server.addr, client_config(&pki, None))
        .await
        .expect_err("a client without a certificate was served");
    eprintln!("without a client certificate: {err}");
    // A certificate from another CA: refused.
    let other = Pki::new();
    let stranger = other.leaf(&["stranger"], ExtendedKeyUsagePurpose::ClientAuth);
    assert!(
        tls_echo(server.addr, client_config(&pki, Some(stranger)))
            .await
            .is_err(),
        "a client with a certificate from another CA was served"
    );
    // A certificate signed by the configured CA: served.
    let modality = pki.leaf(&["modality.example"], ExtendedKeyUsagePurpose::ClientAuth);
    tls_echo(server.addr, client_config(&pki, Some(modality)))
        .await
        .expect("C-ECHO with a client certificate");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn busy_tls_server_refuses_transiently() {
    let pki = Pki::new();
    let server = start_tls_with(server_config(&pki, None), |o| o.max_associations = 1).await;
    let held = tls_associate(server.addr, client_config(&pki, None))
        .await
        .expect("first association");
    // The A-ASSOCIATE-RJ (transient, local limit exceeded) travels inside the TLS session.
    let err = tls_echo(server.addr, client_config(&pki, None))
        .await
        .expect_err("a second association beyond the limit was served");
    assert!(matches!(err, vesalius_dimse::Error::Rejected(_)), "{err}");
    held.release().await.unwrap();
    // The permit returns once the first association's task has ended.
    let mut served = false;
    for _ in 0..50 {
        if tls_echo(server.addr, client_config(&pki, None))
            .await
            .is_ok()
        {
            served = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(served, "not served after the first association ended");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn unknown_calling_ae_refused_over_tls() {
    let pki = Pki::new();
    let server = start_tls(server_config(&pki, None)).await;
    let Err(err) = tls_associate_as(server.addr, client_config(&pki, None), "NOBODY").await else {
        panic!("an unknown calling AE title was served over TLS");
    };
    assert!(
        err.to_string().contains("calling AE title not recognized"),
        "{err}"
    );
    let denied = server
        .access
        .events(1)
        .await
        .into_iter()
        .find(|e| e.action == "association-rejected")
        .expect("the refusal is audited");
    assert_eq!(denied.actor.name, "NOBODY");
    assert_eq!(denied.details["rj_reason"], 3);
    tls_echo(server.addr, client_config(&pki, None))
        .await
        .expect("a registered AE title is still served");
    server.stop().await;
}
