//! Transport security: HTTPS and DICOM TLS server configurations from PEM files, the TLS
//! listener `axum::serve` runs on, the security headers of every HTTP response, and
//! `vesalius admin cert self-signed`.
//!
//! - One crypto provider in the process: rustls with `ring`, installed as the process default at
//!   start ([`install_crypto_provider`]); nothing in the tree brings aws-lc-rs.
//! - Certificates: a PEM chain (leaf first) and a PEM key (PKCS#8, PKCS#1 RSA or SEC1 EC).
//!   TLS 1.2 and 1.3 with rustls' safe defaults (ECDHE, AES-GCM/ChaCha20), which is what DCMTK's
//!   default "BCP 195 non-downgrading" profile and PS3.15 B.9 ask for.
//! - DICOM TLS (PS3.15 B.1) may require client certificates signed by a configured CA bundle.
//! - The HTTPS handshake runs in a task per connection, bounded by [`HANDSHAKE_TIMEOUT`], so a
//!   client that connects and says nothing never holds up other connections.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::Response;
use clap::Subcommand;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig};
use sha2::Digest;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;

/// How long a client may take to complete the TLS handshake.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Installs rustls' `ring` provider as the process default (idempotent).
pub fn install_crypto_provider() {
    // Err only when a provider is already installed: that is fine.
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// Reads a PEM certificate chain (leaf first).
fn read_chain(path: &Path) -> Result<Vec<CertificateDer<'static>>> {
    let chain = CertificateDer::pem_file_iter(path)
        .with_context(|| format!("reading certificates from {}", path.display()))?
        .collect::<Result<Vec<_>, _>>()
        .with_context(|| format!("parsing certificates in {}", path.display()))?;
    if chain.is_empty() {
        bail!("{}: no PEM certificate found", path.display());
    }
    Ok(chain)
}

/// Reads a PEM private key: PKCS#8, PKCS#1 (RSA) or SEC1 (EC), the first one in the file.
fn read_key(path: &Path) -> Result<PrivateKeyDer<'static>> {
    PrivateKeyDer::from_pem_file(path).with_context(|| {
        format!(
            "reading a PEM private key (PKCS#8, RSA or EC) from {}",
            path.display()
        )
    })
}

/// A server configuration from PEM files; with `client_ca`, clients must present a certificate
/// that chains to one of the CA certificates in that PEM bundle.
pub fn server_config(
    cert: &Path,
    key: &Path,
    client_ca: Option<&Path>,
    alpn: &[&[u8]],
) -> Result<Arc<ServerConfig>> {
    let chain = read_chain(cert)?;
    let key_der = read_key(key)?;
    let builder = ServerConfig::builder();
    let builder = match client_ca {
        None => builder.with_no_client_auth(),
        Some(ca) => {
            let mut roots = RootCertStore::empty();
            for c in read_chain(ca)? {
                roots
                    .add(c)
                    .with_context(|| format!("a CA certificate in {}", ca.display()))?;
            }
            let verifier = WebPkiClientVerifier::builder(Arc::new(roots))
                .build()
                .context("client certificate verifier")?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let mut config = builder.with_single_cert(chain, key_der).with_context(|| {
        format!(
            "the key in {} does not match the certificate in {}",
            key.display(),
            cert.display()
        )
    })?;
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Ok(Arc::new(config))
}

/// A listener for `axum::serve` that hands over TLS sessions: a background task accepts TCP
/// connections and completes each handshake in a task of its own; dropping the listener (as
/// graceful shutdown does) stops accepting.
pub struct TlsListener {
    local: SocketAddr,
    ready: mpsc::Receiver<(TlsStream<TcpStream>, SocketAddr)>,
    accept_task: tokio::task::JoinHandle<()>,
}

impl TlsListener {
    /// Serves TLS with `config` on `listener`.
    pub fn new(listener: TcpListener, config: Arc<ServerConfig>) -> std::io::Result<Self> {
        let local = listener.local_addr()?;
        let acceptor = TlsAcceptor::from(config);
        let (tx, ready) = mpsc::channel(64);
        let accept_task = tokio::spawn(async move {
            loop {
                let (tcp, peer) = match listener.accept().await {
                    Ok(x) => x,
                    Err(e) => {
                        // EMFILE and friends: back off instead of spinning.
                        tracing::warn!(error = %e, "HTTPS accept failed");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                };
                let _ = tcp.set_nodelay(true);
                let (acceptor, tx) = (acceptor.clone(), tx.clone());
                tokio::spawn(async move {
                    match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                        Ok(Ok(tls)) => {
                            let _ = tx.send((tls, peer)).await;
                        }
                        Ok(Err(e)) => tracing::debug!(%peer, error = %e, "TLS handshake failed"),
                        Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
                    }
                });
            }
        });
        Ok(TlsListener {
            local,
            ready,
            accept_task,
        })
    }
}

impl Drop for TlsListener {
    fn drop(&mut self) {
        self.accept_task.abort();
    }
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.ready.recv().await {
            Some(conn) => conn,
            // The accept task only ends when aborted, i.e. never while we are polled.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        Ok(self.local)
    }
}

/// The Content-Security-Policy of HTML responses: only our own origin, no plugins, no framing.
pub const HTML_CSP: &str = "default-src 'self'; object-src 'none'; base-uri 'none'; \
                            form-action 'self'; frame-ancestors 'none'";
/// The Content-Security-Policy of every other response (JSON, DICOM, images).
pub const DEFAULT_CSP: &str = "frame-ancestors 'none'";
/// HSTS, sent over TLS only: browsers then refuse plain HTTP to this host for a year.
pub const HSTS: &str = "max-age=31536000";

/// Adds the security headers to a response (see docs/security.md); a handler's own value of a
/// header wins. `tls`: whether the response goes out over HTTPS (adds HSTS).
pub async fn security_headers(State(tls): State<bool>, mut res: Response) -> Response {
    let h = res.headers_mut();
    let html = h
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.trim_start().to_ascii_lowercase().starts_with("text/html"));
    set_default(h, header::X_CONTENT_TYPE_OPTIONS, "nosniff");
    set_default(h, header::REFERRER_POLICY, "no-referrer");
    set_default(h, header::X_FRAME_OPTIONS, "DENY");
    set_default(
        h,
        header::CONTENT_SECURITY_POLICY,
        if html { HTML_CSP } else { DEFAULT_CSP },
    );
    // Issue 6: images and patient data are never kept on the device. Without a Cache-Control a
    // browser writes a 200 answer to its disk cache (a phone's profile then holds the frames,
    // metadata and worklists it was shown), so every answer that does not choose its own (the
    // app's versioned assets and shell do) is `no-store` (RFC 9111 5.2.2.5).
    set_default(h, header::CACHE_CONTROL, "no-store");
    if tls {
        set_default(h, header::STRICT_TRANSPORT_SECURITY, HSTS);
    }
    res
}

fn set_default(h: &mut HeaderMap, name: header::HeaderName, value: &'static str) {
    h.entry(name)
        .or_insert_with(|| HeaderValue::from_static(value));
}

/// `vesalius admin cert …`
#[derive(Subcommand)]
pub enum CertCommand {
    /// Write a self-signed certificate and key (no CA) for a quick start with HTTPS and DICOM TLS.
    SelfSigned {
        /// Folder to write `cert.pem` and `key.pem` (mode 0600) into; created if missing.
        #[arg(long)]
        out: PathBuf,
        /// Further host names or IP addresses the certificate is valid for (besides `localhost`
        /// and `127.0.0.1`); repeatable.
        #[arg(long = "hostname")]
        hostnames: Vec<String>,
        /// Days the certificate is valid.
        #[arg(long, default_value_t = 825)]
        days: u32,
        /// Overwrite existing files.
        #[arg(long)]
        force: bool,
    },
}

/// What `admin cert self-signed` wrote.
#[derive(Debug)]
pub struct SelfSigned {
    /// The certificate (PEM).
    pub cert: PathBuf,
    /// The private key (PKCS#8 PEM, mode 0600).
    pub key: PathBuf,
    /// SHA-256 of the certificate's DER, colon-separated upper-case hex (as `openssl x509
    /// -fingerprint -sha256` prints it).
    pub fingerprint: String,
}

/// Runs an `admin cert` command.
pub fn run_cert(cmd: CertCommand) -> Result<()> {
    match cmd {
        CertCommand::SelfSigned {
            out,
            hostnames,
            days,
            force,
        } => {
            let s = self_signed(&out, &hostnames, days, force)?;
            println!("certificate : {}", s.cert.display());
            println!("private key : {}", s.key.display());
            println!("SHA-256     : {}", s.fingerprint);
            println!(
                "serve with  : vesalius serve --tls-cert {} --tls-key {}",
                s.cert.display(),
                s.key.display()
            );
            Ok(())
        }
    }
}

/// Writes a self-signed certificate (ECDSA P-256, valid for `localhost`, `127.0.0.1` and
/// `hostnames`) and its key into `out`.
pub fn self_signed(out: &Path, hostnames: &[String], days: u32, force: bool) -> Result<SelfSigned> {
    let mut names = vec!["localhost".to_owned(), "127.0.0.1".to_owned()];
    for h in hostnames {
        if !names.contains(h) {
            names.push(h.clone());
        }
    }
    // rcgen makes IP addresses IP SANs and everything else DNS SANs.
    let mut params = rcgen::CertificateParams::new(names.clone()).context("host names")?;
    let cn = hostnames.first().map(String::as_str).unwrap_or("localhost");
    params.distinguished_name = rcgen::DistinguishedName::new();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, cn);
    params
        .distinguished_name
        .push(rcgen::DnType::OrganizationName, "Vesalius (self-signed)");
    let now = time::OffsetDateTime::now_utc();
    params.not_before = now - time::Duration::hours(1);
    params.not_after = now + time::Duration::days(i64::from(days.max(1)));
    params.key_usages = vec![
        rcgen::KeyUsagePurpose::DigitalSignature,
        rcgen::KeyUsagePurpose::KeyEncipherment,
    ];
    params.extended_key_usages = vec![
        rcgen::ExtendedKeyUsagePurpose::ServerAuth,
        rcgen::ExtendedKeyUsagePurpose::ClientAuth,
    ];
    let key = rcgen::KeyPair::generate().context("generating a key")?;
    let cert = params
        .self_signed(&key)
        .context("signing the certificate")?;

    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    let cert_path = out.join("cert.pem");
    let key_path = out.join("key.pem");
    if !force {
        for p in [&cert_path, &key_path] {
            if p.exists() {
                bail!("{} exists (use --force to overwrite)", p.display());
            }
        }
    }
    write_private(&key_path, key.serialize_pem().as_bytes())?;
    std::fs::write(&cert_path, cert.pem())
        .with_context(|| format!("writing {}", cert_path.display()))?;
    Ok(SelfSigned {
        cert: cert_path,
        key: key_path,
        fingerprint: fingerprint(cert.der()),
    })
}

/// Writes a file only its owner can read (mode 0600 from the start, not chmod-ed afterwards).
fn write_private(path: &Path, bytes: &[u8]) -> Result<()> {
    use std::io::Write;
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("creating {}", path.display()))?;
    // An existing file keeps its mode on open: tighten it.
    f.set_permissions(std::fs::Permissions::from_mode(0o600))?;
    f.write_all(bytes)?;
    f.sync_all()?;
    Ok(())
}

/// SHA-256 of a DER certificate as `AB:CD:…`.
pub fn fingerprint(der: &[u8]) -> String {
    sha2::Sha256::digest(der)
        .iter()
        .map(|b| format!("{b:02X}"))
        .collect::<Vec<_>>()
        .join(":")
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use axum::http::Request;
    use tower::ServiceExt;

    fn app(tls: bool) -> axum::Router {
        axum::Router::new()
            .route("/json", axum::routing::get(|| async { axum::Json(1) }))
            .route(
                "/page",
                axum::routing::get(|| async { axum::response::Html("<p>hi</p>") }),
            )
            .route(
                "/asset",
                axum::routing::get(|| async {
                    (
                        [(header::CACHE_CONTROL, "public, max-age=31536000, immutable")],
                        "x",
                    )
                }),
            )
            .layer(axum::middleware::map_response_with_state(
                tls,
                security_headers,
            ))
    }

    async fn headers(app: axum::Router, path: &str) -> HeaderMap {
        let req = Request::get(path).body(Body::empty()).unwrap();
        app.oneshot(req).await.unwrap().headers().clone()
    }

    #[tokio::test]
    async fn security_headers_on_every_response() {
        for path in ["/json", "/page", "/no-such-route"] {
            let h = headers(app(false), path).await;
            assert_eq!(h["x-content-type-options"], "nosniff", "{path}");
            assert_eq!(h["referrer-policy"], "no-referrer");
            assert_eq!(h["x-frame-options"], "DENY");
            assert!(!h.contains_key("strict-transport-security"));
            assert_eq!(h["cache-control"], "no-store", "{path}");
            let csp = h["content-security-policy"].to_str().unwrap();
            assert!(csp.contains("frame-ancestors 'none'"));
            assert_eq!(
                csp.contains("default-src 'self'"),
                path == "/page",
                "{path}"
            );
        }
        let h = headers(app(true), "/json").await;
        assert_eq!(h["strict-transport-security"], HSTS);
        // A handler's own caching (the app's versioned assets) wins over `no-store`.
        let h = headers(app(false), "/asset").await;
        assert_eq!(h["cache-control"], "public, max-age=31536000, immutable");
    }

    #[test]
    fn self_signed_files_load_as_a_server_config() {
        install_crypto_provider();
        let dir = tempfile::tempdir().unwrap();
        let s = self_signed(dir.path(), &["pacs.example.org".into()], 30, false).unwrap();
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&s.key).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        assert_eq!(s.fingerprint.len(), 32 * 3 - 1);
        server_config(&s.cert, &s.key, None, &[b"http/1.1"]).unwrap();
        // The certificate can serve as its own client CA bundle too.
        server_config(&s.cert, &s.key, Some(&s.cert), &[]).unwrap();
        // Refuses to overwrite without --force; a key that does not fit is an error.
        assert!(self_signed(dir.path(), &[], 30, false).is_err());
        let other = tempfile::tempdir().unwrap();
        let o = self_signed(other.path(), &[], 30, false).unwrap();
        assert!(server_config(&s.cert, &o.key, None, &[]).is_err());
    }
}

/// The peer of a TLS connection, for `into_make_service_with_connect_info` (axum implements
/// `Connected` for `SocketAddr` on its own listeners only); [`tls_peer_address`] turns it into
/// the `ConnectInfo<SocketAddr>` every handler reads.
#[derive(Debug, Clone, Copy)]
pub struct TlsPeer(pub SocketAddr);

impl axum::extract::connect_info::Connected<axum::serve::IncomingStream<'_, TlsListener>>
    for TlsPeer
{
    fn connect_info(stream: axum::serve::IncomingStream<'_, TlsListener>) -> Self {
        TlsPeer(*stream.remote_addr())
    }
}

/// Middleware: `ConnectInfo<TlsPeer>` → `ConnectInfo<SocketAddr>`.
pub async fn tls_peer_address(mut req: axum::extract::Request) -> axum::extract::Request {
    if let Some(axum::extract::ConnectInfo(TlsPeer(addr))) = req
        .extensions()
        .get::<axum::extract::ConnectInfo<TlsPeer>>()
        .copied()
    {
        req.extensions_mut()
            .insert(axum::extract::ConnectInfo(addr));
    }
    req
}
