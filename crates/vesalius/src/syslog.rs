//! Forwarding of the audit trail to an audit record repository: each record becomes a DICOM
//! audit message (`vesalius_auth::dicom_audit`, PS3.15 A.5) in an RFC 5424 syslog message, sent
//! over TLS (RFC 5425, PS3.15 A.6), plain TCP (RFC 6587 octet counting) or UDP (RFC 5426, A.7).
//!
//! Contract:
//! - **Order**: records go out in `seq` order, one message each, on one connection at a time.
//! - **At least once**: a record is *delivered* once it was written to a TCP/TLS connection that
//!   then stayed open for `confirm_ms` (syslog has no acknowledgements: a collector that stops
//!   drops what it had not read yet, and the sender only learns it when the connection closes).
//!   When a connection fails or is closed by the repository, every record not yet delivered is
//!   sent again on the next connection, so a repository that stops and starts again loses
//!   nothing; it may receive duplicates, which the RFC 5424 `meta sequenceId` (the record's
//!   `seq`) identifies. Over UDP a record counts as delivered when the datagram left.
//! - **Cursor**: the last delivered `seq` is kept in `<data dir>/`[`CURSOR_FILE`], one decimal
//!   number and a line break, replaced atomically (temporary file, fsync, rename, fsync of the
//!   directory). Without the file forwarding starts at the first record; deleting it sends the
//!   whole trail again; writing the current head's `seq` into it skips the history.
//! - **Crash**: after a crash or restart the records after the cursor are sent again (at most
//!   those of the last `confirm_ms` plus one batch were in flight).
//! - **One forwarder per trail**: the cursor belongs to the node's data directory. Nodes sharing
//!   one index would each send the whole trail (duplicates, nothing lost): configure
//!   `[audit.syslog]` on one of them.
//! - **Never in the way**: the forwarder is one task that reads the trail through the index's
//!   read pool (WAL: readers never block the writer) and is the only one to wait for the
//!   network; requests append audit events exactly as without it. While the repository is down
//!   it retries with exponential backoff (500 ms doubling up to `max_backoff_ms`), logging once
//!   per outage.
//!
//! Knobs (`[audit.syslog]`, docs/configuration.md): `poll_ms` (how often an idle forwarder looks
//! for new records), `batch` (records per read), `confirm_ms`, `max_backoff_ms`, `timeout_ms`
//! (connect, TLS handshake and each write). Metrics: `vesalius_audit_syslog_messages_total`,
//! `vesalius_audit_syslog_connect_failures_total`, `vesalius_audit_syslog_delivered_seq`.

use std::collections::VecDeque;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use futures::FutureExt;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};
use tokio_util::sync::CancellationToken;
use vesalius_auth::dicom_audit::{self, AuditSource, SyslogOptions};
use vesalius_store::AuditLog;
use vesalius_store::audit::AuditRecord;

use crate::config::{Config, SyslogTransport};

/// The cursor's file name in the data directory.
pub const CURSOR_FILE: &str = "audit-syslog.cursor";
/// First wait before reconnecting.
const MIN_BACKOFF: Duration = Duration::from_millis(500);

/// Everything the forwarder needs, resolved from the configuration.
#[derive(Clone)]
pub struct ForwarderOptions {
    /// Repository host name or IP.
    pub host: String,
    /// Repository port.
    pub port: u16,
    /// Transport.
    pub transport: SyslogTransport,
    /// TLS client configuration and the name to verify (with [`SyslogTransport::Tls`]).
    pub tls: Option<(Arc<rustls::ClientConfig>, ServerName<'static>)>,
    /// The RFC 5424 header fields.
    pub header: SyslogOptions,
    /// Who reports, in each message.
    pub source: AuditSource,
    /// Where the last delivered `seq` is kept.
    pub cursor: PathBuf,
    /// Idle polling interval.
    pub poll: Duration,
    /// Records per read.
    pub batch: u32,
    /// How long a connection must stay open after a write for it to count as delivered.
    pub confirm: Duration,
    /// Longest wait between reconnection attempts.
    pub max_backoff: Duration,
    /// Connect, handshake and write timeout.
    pub timeout: Duration,
}

impl ForwarderOptions {
    /// The options of `[audit.syslog]`, `None` when forwarding is off. Certificate files are
    /// read here, so a mistake stops the start.
    pub fn from_config(cfg: &Config) -> Result<Option<Self>> {
        let s = &cfg.audit.syslog;
        let Some((host, port)) = s.target()? else {
            return Ok(None);
        };
        let tls = match s.transport {
            SyslogTransport::Tls => {
                let ca = s.tls_ca.as_deref().context("[audit.syslog] tls_ca")?;
                let client = s.tls_cert.as_deref().zip(s.tls_key.as_deref());
                let name = s.tls_server_name.clone().unwrap_or_else(|| host.clone());
                let name = ServerName::try_from(name.clone())
                    .with_context(|| format!("[audit.syslog] {name:?} is not a server name"))?;
                Some((client_config(ca, client)?, name))
            }
            _ => None,
        };
        let (header, source) = message_format(cfg)?;
        Ok(Some(ForwarderOptions {
            host,
            port,
            transport: s.transport,
            tls,
            header,
            source,
            cursor: cfg.storage.data_dir.join(CURSOR_FILE),
            poll: Duration::from_millis(s.poll_ms),
            batch: s.batch,
            confirm: Duration::from_millis(s.confirm_ms),
            max_backoff: Duration::from_millis(s.max_backoff_ms.max(500)),
            timeout: Duration::from_millis(s.timeout_ms),
        }))
    }

    /// `host:port (transport)`, for the start-up banner and logs.
    pub fn describe(&self) -> String {
        let t = match self.transport {
            SyslogTransport::Tls => "TLS",
            SyslogTransport::Tcp => "TCP",
            SyslogTransport::Udp => "UDP",
        };
        format!("{}:{} ({t})", self.host, self.port)
    }
}

/// The syslog header fields and the audit source of `[audit.syslog]` (also what `vesalius audit
/// export --format dicom-syslog` writes), whether or not forwarding is on.
pub fn message_format(cfg: &Config) -> Result<(SyslogOptions, AuditSource)> {
    let s = &cfg.audit.syslog;
    let hostname = s.hostname.clone().unwrap_or_else(system_hostname);
    let facility = dicom_audit::facility_from_name(&s.facility).with_context(|| {
        format!(
            "[audit.syslog] facility = {:?} is not a syslog facility",
            s.facility
        )
    })?;
    let header = SyslogOptions::new()
        .facility(facility)
        .hostname(hostname.clone())
        .app_name(s.app_name.clone())
        .procid(std::process::id().to_string())
        .bom(s.bom);
    let source = AuditSource {
        id: s
            .source_id
            .clone()
            .unwrap_or_else(|| cfg.dicom.ae_title.clone()),
        enterprise_site: s.enterprise_site.clone(),
        ae_title: Some(cfg.dicom.ae_title.clone()),
        host: Some(hostname).filter(|h| !h.is_empty()),
    };
    Ok((header, source))
}

/// This machine's host name (Linux), or "" when unknown.
fn system_hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .unwrap_or_default()
}

/// A TLS client configuration (ring provider, TLS 1.2 and 1.3) trusting the CA certificates in
/// `ca`, presenting `client` (certificate chain, key) when given.
pub fn client_config(
    ca: &Path,
    client: Option<(&Path, &Path)>,
) -> Result<Arc<rustls::ClientConfig>> {
    let mut roots = rustls::RootCertStore::empty();
    for c in read_certs(ca)? {
        roots
            .add(c)
            .with_context(|| format!("a CA certificate in {}", ca.display()))?;
    }
    let builder = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .context("TLS protocol versions")?
    .with_root_certificates(roots);
    let config = match client {
        None => builder.with_no_client_auth(),
        Some((cert, key)) => {
            let key_der = PrivateKeyDer::from_pem_file(key)
                .with_context(|| format!("reading a PEM private key from {}", key.display()))?;
            builder
                .with_client_auth_cert(read_certs(cert)?, key_der)
                .with_context(|| {
                    format!(
                        "the key in {} does not match the certificate in {}",
                        key.display(),
                        cert.display()
                    )
                })?
        }
    };
    Ok(Arc::new(config))
}

fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>> {
    let certs = CertificateDer::pem_file_iter(path)
        .with_context(|| format!("reading certificates from {}", path.display()))?
        .collect::<Result<Vec<_>, _>>()
        .with_context(|| format!("parsing certificates in {}", path.display()))?;
    if certs.is_empty() {
        bail!("{}: no PEM certificate found", path.display());
    }
    Ok(certs)
}

/// The transport frame of one message: RFC 5425 / RFC 6587 octet counting (`LEN SP MSG`) on
/// streams, the bare message in a datagram.
pub fn frame(transport: SyslogTransport, msg: &[u8]) -> Vec<u8> {
    match transport {
        SyslogTransport::Udp => msg.to_vec(),
        SyslogTransport::Tls | SyslogTransport::Tcp => {
            let mut out = format!("{} ", msg.len()).into_bytes();
            out.extend_from_slice(msg);
            out
        }
    }
}

/// The framed message of one record.
pub fn framed_record(opts: &ForwarderOptions, r: &AuditRecord) -> Vec<u8> {
    frame(
        opts.transport,
        &dicom_audit::syslog_message(r, &opts.source, &opts.header),
    )
}

/// The last delivered `seq` (0: none).
pub fn read_cursor(path: &Path) -> Result<u64> {
    match std::fs::read_to_string(path) {
        Ok(s) => s
            .trim()
            .parse()
            .with_context(|| format!("{}: not a record number", path.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(0),
        Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
    }
}

/// Replaces the cursor atomically: a temporary file beside it, fsync, rename, fsync of the
/// directory.
pub fn write_cursor(path: &Path, seq: u64) -> Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let mut tmp = tempfile::NamedTempFile::new_in(dir)
        .with_context(|| format!("creating a temporary file in {}", dir.display()))?;
    writeln!(tmp, "{seq}")?;
    tmp.as_file().sync_all()?;
    tmp.persist(path)
        .with_context(|| format!("replacing {}", path.display()))?;
    std::fs::File::open(dir)?.sync_all()?;
    Ok(())
}

trait Stream: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Stream for T {}

/// An open connection to the repository.
enum Conn {
    Stream(Box<dyn Stream>),
    Udp(UdpSocket),
}

impl Conn {
    async fn open(o: &ForwarderOptions) -> Result<Conn> {
        let addr = (o.host.as_str(), o.port);
        let conn = async {
            Ok::<_, anyhow::Error>(match o.transport {
                SyslogTransport::Udp => {
                    let remote = tokio::net::lookup_host(addr)
                        .await?
                        .next()
                        .context("no address")?;
                    let local = if remote.is_ipv4() {
                        "0.0.0.0:0"
                    } else {
                        "[::]:0"
                    };
                    let sock = UdpSocket::bind(local).await?;
                    sock.connect(remote).await?;
                    Conn::Udp(sock)
                }
                SyslogTransport::Tcp => {
                    let tcp = TcpStream::connect(addr).await?;
                    let _ = tcp.set_nodelay(true);
                    Conn::Stream(Box::new(tcp))
                }
                SyslogTransport::Tls => {
                    let (config, name) = o.tls.clone().context("TLS configuration")?;
                    let tcp = TcpStream::connect(addr).await?;
                    let _ = tcp.set_nodelay(true);
                    let tls = tokio_rustls::TlsConnector::from(config)
                        .connect(name, tcp)
                        .await?;
                    Conn::Stream(Box::new(tls))
                }
            })
        };
        tokio::time::timeout(o.timeout, conn)
            .await
            .context("timed out")?
    }

    /// Sends framed messages (one datagram each over UDP) and flushes.
    async fn send(&mut self, frames: &[Vec<u8>]) -> std::io::Result<()> {
        match self {
            Conn::Stream(s) => {
                for f in frames {
                    s.write_all(f).await?;
                }
                s.flush().await
            }
            Conn::Udp(u) => {
                for f in frames {
                    u.send(f).await?;
                }
                Ok(())
            }
        }
    }

    /// Whether the repository closed or reset the connection, without waiting. Anything it
    /// sent is discarded (syslog receivers send nothing; TLS alerts end up here).
    fn closed(&mut self) -> bool {
        let Conn::Stream(s) = self else {
            return false;
        };
        let mut buf = [0u8; 512];
        loop {
            match s.read(&mut buf).now_or_never() {
                None => return false,
                Some(Ok(0)) | Some(Err(_)) => return true,
                Some(Ok(_)) => continue,
            }
        }
    }

    /// Waits up to `d` (or until shutdown); true when the repository closed the connection
    /// meanwhile.
    async fn idle(&mut self, d: Duration, shutdown: &CancellationToken) -> bool {
        let Conn::Stream(s) = self else {
            tokio::select! {
                _ = tokio::time::sleep(d) => {}
                _ = shutdown.cancelled() => {}
            }
            return false;
        };
        let deadline = tokio::time::Instant::now() + d;
        let mut buf = [0u8; 512];
        loop {
            tokio::select! {
                _ = tokio::time::sleep_until(deadline) => return false,
                _ = shutdown.cancelled() => return false,
                r = s.read(&mut buf) => match r {
                    Ok(0) | Err(_) => return true,
                    Ok(_) => {}
                },
            }
        }
    }
}

/// The forwarder's state: what was delivered, what is in flight.
struct Progress {
    cursor: PathBuf,
    /// Last delivered `seq`, as stored in the cursor file.
    delivered: u64,
    /// Sent on the current connection, not yet delivered: `(seq, when)`, in order.
    in_flight: VecDeque<(u64, Instant)>,
}

impl Progress {
    /// The next `seq` to send.
    fn next(&self) -> u64 {
        self.in_flight.back().map_or(self.delivered, |(s, _)| *s) + 1
    }

    /// Marks as delivered what was sent at least `confirm` ago on a connection still open, and
    /// stores the cursor when it moved.
    fn confirm(&mut self, confirm: Duration) {
        let now = Instant::now();
        let mut moved = false;
        while let Some(&(seq, at)) = self.in_flight.front() {
            if now.duration_since(at) < confirm {
                break;
            }
            self.delivered = seq;
            self.in_flight.pop_front();
            moved = true;
        }
        if moved {
            self.store();
        }
    }

    /// The connection broke: what was in flight is sent again.
    fn rewind(&mut self) {
        if let Some((first, _)) = self.in_flight.front() {
            tracing::info!(
                from_seq = first,
                records = self.in_flight.len(),
                "audit syslog: resending records not confirmed before the connection closed"
            );
        }
        self.in_flight.clear();
    }

    fn store(&self) {
        metrics::gauge!("vesalius_audit_syslog_delivered_seq").set(self.delivered as f64);
        if let Err(e) = write_cursor(&self.cursor, self.delivered) {
            // The records will be sent again after a restart: at least once still holds.
            tracing::error!(error = %e, "audit syslog: storing the cursor failed");
        }
    }
}

/// Forwards the trail until `shutdown`: reads records after the cursor, sends them in order,
/// reconnects with backoff. Returns an error only when the cursor cannot be read at start.
pub async fn run(
    log: Arc<dyn AuditLog>,
    opts: ForwarderOptions,
    shutdown: CancellationToken,
) -> Result<()> {
    let delivered = read_cursor(&opts.cursor)?;
    let mut p = Progress {
        cursor: opts.cursor.clone(),
        delivered,
        in_flight: VecDeque::new(),
    };
    // Over UDP nothing is ever confirmed: a datagram that left is all we can know.
    let confirm = match opts.transport {
        SyslogTransport::Udp => Duration::ZERO,
        _ => opts.confirm,
    };
    let mut conn: Option<Conn> = None;
    let mut backoff = MIN_BACKOFF;
    let mut outage = false;
    tracing::info!(
        repository = %opts.describe(),
        from_seq = delivered + 1,
        "audit syslog: forwarding"
    );
    while !shutdown.is_cancelled() {
        if conn.as_mut().is_some_and(Conn::closed) {
            tracing::warn!(repository = %opts.describe(), "audit syslog: the repository closed the connection");
            conn = None;
            p.rewind();
        }
        if conn.is_some() {
            p.confirm(confirm);
        }
        let records = match log.records(p.next(), opts.batch).await {
            Ok(r) => r,
            Err(e) => {
                tracing::error!(error = %e, "audit syslog: reading the trail failed");
                sleep_or_shutdown(opts.poll, &shutdown).await;
                continue;
            }
        };
        if records.is_empty() {
            // Idle: wake up for new records or to confirm what is in flight.
            let wait = match p.in_flight.front() {
                Some((_, at)) => (*at + confirm)
                    .saturating_duration_since(Instant::now())
                    .min(opts.poll)
                    .max(Duration::from_millis(10)),
                None => opts.poll,
            };
            match conn.as_mut() {
                Some(c) => {
                    if c.idle(wait, &shutdown).await {
                        tracing::warn!(repository = %opts.describe(), "audit syslog: the repository closed the connection");
                        conn = None;
                        p.rewind();
                    }
                }
                None => sleep_or_shutdown(wait, &shutdown).await,
            }
            continue;
        }
        let c = match conn.as_mut() {
            Some(c) => c,
            None => match Conn::open(&opts).await {
                Ok(c) => {
                    if outage {
                        tracing::info!(repository = %opts.describe(), "audit syslog: connected again");
                    } else {
                        tracing::info!(repository = %opts.describe(), "audit syslog: connected");
                    }
                    outage = false;
                    backoff = MIN_BACKOFF;
                    conn.insert(c)
                }
                Err(e) => {
                    metrics::counter!("vesalius_audit_syslog_connect_failures_total").increment(1);
                    if !outage {
                        tracing::warn!(
                            repository = %opts.describe(),
                            error = format!("{e:#}"),
                            "audit syslog: cannot reach the repository; retrying with backoff"
                        );
                    } else {
                        tracing::debug!(error = format!("{e:#}"), "audit syslog: retry failed");
                    }
                    outage = true;
                    sleep_or_shutdown(backoff, &shutdown).await;
                    backoff = (backoff * 2).min(opts.max_backoff);
                    continue;
                }
            },
        };
        let frames: Vec<Vec<u8>> = records.iter().map(|r| framed_record(&opts, r)).collect();
        match tokio::time::timeout(opts.timeout, c.send(&frames)).await {
            Ok(Ok(())) => {
                let now = Instant::now();
                p.in_flight.extend(records.iter().map(|r| (r.seq, now)));
                metrics::counter!("vesalius_audit_syslog_messages_total")
                    .increment(records.len() as u64);
            }
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "audit syslog: sending failed; reconnecting");
                conn = None;
                p.rewind();
            }
            Err(_) => {
                tracing::warn!("audit syslog: sending timed out; reconnecting");
                conn = None;
                p.rewind();
            }
        }
    }
    if let Some(mut c) = conn
        && !c.closed()
    {
        p.confirm(confirm);
        // TLS close_notify (or FIN): the repository sees an orderly end, not a broken session.
        if let Conn::Stream(s) = &mut c {
            let _ = tokio::time::timeout(opts.timeout, s.shutdown()).await;
        }
    }
    tracing::info!(delivered_seq = p.delivered, "audit syslog: stopped");
    Ok(())
}

async fn sleep_or_shutdown(d: Duration, shutdown: &CancellationToken) {
    tokio::select! {
        _ = tokio::time::sleep(d) => {}
        _ = shutdown.cancelled() => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
    use serde_json::json;
    use vesalius_store::audit::{Actor, ActorKind, AuditEvent, Outcome};
    use vesalius_store::memory_directory::MemoryAuditLog;

    fn event(n: u64) -> AuditEvent {
        AuditEvent {
            time_ms: 1_700_000_000_000 + n as i64,
            actor: Actor {
                kind: ActorKind::User,
                id: format!("u{n}"),
                name: "alice".into(),
                org: "a".into(),
                role: "clinician".into(),
            },
            action: if n.is_multiple_of(2) {
                "login"
            } else {
                "retrieve"
            }
            .into(),
            outcome: Outcome::Success,
            org: "a".into(),
            patient: None,
            study_uid: Some(format!("1.2.{n}")),
            source: "10.0.0.1".into(),
            user_agent: String::new(),
            details: json!({}),
        }
    }

    async fn append(log: &MemoryAuditLog, range: std::ops::RangeInclusive<u64>) {
        log.append(range.map(event).collect()).await.unwrap();
    }

    fn options(port: u16, transport: SyslogTransport, dir: &Path) -> ForwarderOptions {
        ForwarderOptions {
            host: "127.0.0.1".into(),
            port,
            transport,
            tls: None,
            header: SyslogOptions::new().hostname("test-host").procid("1"),
            source: AuditSource {
                id: "TEST".into(),
                ..Default::default()
            },
            cursor: dir.join(CURSOR_FILE),
            poll: Duration::from_millis(20),
            batch: 3,
            confirm: Duration::from_millis(1000),
            max_backoff: Duration::from_millis(500),
            timeout: Duration::from_secs(5),
        }
    }

    /// Reads one octet-counted frame; `None` at the end of the stream.
    async fn read_frame<R: AsyncRead + Unpin>(r: &mut R) -> Option<String> {
        let mut len = Vec::new();
        loop {
            let mut b = [0u8; 1];
            if r.read(&mut b).await.ok()? == 0 {
                return None;
            }
            if b[0] == b' ' {
                break;
            }
            assert!(b[0].is_ascii_digit(), "frame length");
            len.push(b[0]);
        }
        let n: usize = String::from_utf8(len).unwrap().parse().unwrap();
        let mut msg = vec![0u8; n];
        r.read_exact(&mut msg).await.ok()?;
        Some(String::from_utf8(msg).unwrap())
    }

    fn seq_of(msg: &str) -> u64 {
        let i = msg.find("sequenceId=\"").unwrap() + 12;
        msg[i..i + msg[i..].find('"').unwrap()].parse().unwrap()
    }

    async fn wait_for_cursor(path: &Path, seq: u64) {
        for _ in 0..500 {
            if read_cursor(path).unwrap() == seq {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("cursor stayed at {}", read_cursor(path).unwrap());
    }

    #[test]
    fn frames_and_cursor() {
        assert_eq!(frame(SyslogTransport::Tls, b"<85>1 x"), b"7 <85>1 x");
        assert_eq!(
            frame(SyslogTransport::Tcp, "é".as_bytes()),
            "2 é".as_bytes()
        );
        assert_eq!(frame(SyslogTransport::Udp, b"<85>1 x"), b"<85>1 x");
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join(CURSOR_FILE);
        assert_eq!(read_cursor(&p).unwrap(), 0);
        write_cursor(&p, 42).unwrap();
        assert_eq!(std::fs::read_to_string(&p).unwrap(), "42\n");
        write_cursor(&p, 43).unwrap();
        assert_eq!(read_cursor(&p).unwrap(), 43);
        std::fs::write(&p, "forty").unwrap();
        assert!(read_cursor(&p).is_err());
    }

    /// A collector that drops unread messages when it stops, and is down for a while: every
    /// record arrives, in order on each connection, and the cursor ends at the head.
    #[tokio::test(flavor = "multi_thread")]
    async fn collector_restart_loses_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let log = Arc::new(MemoryAuditLog::new());
        append(&log, 1..=5).await;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let opts = options(port, SyslogTransport::Tcp, dir.path());
        let cursor = opts.cursor.clone();
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(run(log.clone(), opts, shutdown.clone()));

        // First connection: read two messages, then stop with the rest unread.
        let (mut s, _) = listener.accept().await.unwrap();
        let mut first = Vec::new();
        for _ in 0..2 {
            first.push(seq_of(&read_frame(&mut s).await.unwrap()));
        }
        assert_eq!(first, [1, 2]);
        drop(s);
        drop(listener);
        // Down: events keep coming.
        append(&log, 6..=8).await;
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(read_cursor(&cursor).unwrap(), 0, "nothing confirmed yet");
        // Back: everything unconfirmed is sent again, in order.
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
            .await
            .unwrap();
        let (mut s, _) = listener.accept().await.unwrap();
        let mut second = Vec::new();
        while second.last() != Some(&8) {
            let msg = read_frame(&mut s).await.unwrap();
            assert!(msg.starts_with("<85>1 2023-11-14T22:13:20."), "{msg}");
            assert!(msg.contains(" test-host vesalius 1 DICOM+RFC3881 [meta sequenceId="));
            second.push(seq_of(&msg));
        }
        assert_eq!(second, (1..=8).collect::<Vec<_>>());
        wait_for_cursor(&cursor, 8).await;
        // New records on the same connection.
        append(&log, 9..=9).await;
        assert_eq!(seq_of(&read_frame(&mut s).await.unwrap()), 9);
        wait_for_cursor(&cursor, 9).await;
        shutdown.cancel();
        tokio::time::timeout(Duration::from_secs(5), task)
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        // A restart goes on after the cursor.
        append(&log, 10..=10).await;
        let opts = options(port, SyslogTransport::Tcp, dir.path());
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(run(log.clone(), opts, shutdown.clone()));
        let (mut s, _) = listener.accept().await.unwrap();
        assert_eq!(seq_of(&read_frame(&mut s).await.unwrap()), 10);
        shutdown.cancel();
        task.await.unwrap().unwrap();
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn udp_datagrams() {
        let dir = tempfile::tempdir().unwrap();
        let log = Arc::new(MemoryAuditLog::new());
        append(&log, 1..=4).await;
        let sock = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let opts = options(
            sock.local_addr().unwrap().port(),
            SyslogTransport::Udp,
            dir.path(),
        );
        let cursor = opts.cursor.clone();
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(run(log.clone(), opts, shutdown.clone()));
        let mut buf = vec![0u8; 65536];
        for want in 1..=4 {
            let n = sock.recv(&mut buf).await.unwrap();
            let msg = std::str::from_utf8(&buf[..n]).unwrap();
            assert!(msg.starts_with('<'), "no octet count over UDP");
            assert_eq!(seq_of(msg), want);
        }
        wait_for_cursor(&cursor, 4).await;
        shutdown.cancel();
        task.await.unwrap().unwrap();
    }

    /// RFC 5425 with mutual authentication against a rustls server: the repository's CA is
    /// trusted, our client certificate is checked.
    #[tokio::test(flavor = "multi_thread")]
    async fn tls_with_client_certificate() {
        let dir = tempfile::tempdir().unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "Syslog test CA");
        let ca = CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap();
        let leaf = |names: Vec<String>| {
            let key = KeyPair::generate().unwrap();
            let cert = CertificateParams::new(names)
                .unwrap()
                .signed_by(&key, &ca)
                .unwrap();
            (cert, key)
        };
        let (server_cert, server_key) = leaf(vec!["localhost".into(), "127.0.0.1".into()]);
        let (client_cert, client_key) = leaf(vec!["vesalius.test".into()]);
        let ca_pem = dir.path().join("ca.pem");
        std::fs::write(&ca_pem, ca.as_ref().pem()).unwrap();
        let (cert_pem, key_pem) = (dir.path().join("c.pem"), dir.path().join("c.key"));
        std::fs::write(&cert_pem, client_cert.pem()).unwrap();
        std::fs::write(&key_pem, client_key.serialize_pem()).unwrap();

        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut roots = rustls::RootCertStore::empty();
        roots.add(ca.as_ref().der().clone()).unwrap();
        let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
            Arc::new(roots),
            provider.clone(),
        )
        .build()
        .unwrap();
        let server = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_client_cert_verifier(verifier)
            .with_single_cert(
                vec![server_cert.der().clone()],
                PrivateKeyDer::try_from(server_key.serialize_der()).unwrap(),
            )
            .unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(server));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();

        let log = Arc::new(MemoryAuditLog::new());
        append(&log, 1..=3).await;
        let mut opts = options(
            listener.local_addr().unwrap().port(),
            SyslogTransport::Tls,
            dir.path(),
        );
        opts.tls = Some((
            client_config(&ca_pem, Some((&cert_pem, &key_pem))).unwrap(),
            ServerName::try_from("127.0.0.1").unwrap().to_owned(),
        ));
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(run(log.clone(), opts.clone(), shutdown.clone()));
        let (tcp, _) = listener.accept().await.unwrap();
        let mut tls = acceptor.accept(tcp).await.unwrap();
        assert!(
            tls.get_ref()
                .1
                .peer_certificates()
                .is_some_and(|c| c.len() == 1)
        );
        for want in 1..=3 {
            let msg = read_frame(&mut tls).await.unwrap();
            assert_eq!(seq_of(&msg), want);
            assert!(
                msg.contains("\u{feff}<?xml version=\"1.0\" encoding=\"UTF-8\"?><AuditMessage>")
            );
        }
        shutdown.cancel();
        task.await.unwrap().unwrap();

        // Without the repository's CA the handshake fails and nothing is sent.
        let other = dir.path().join("other.pem");
        std::fs::write(&other, client_cert.pem()).unwrap();
        opts.tls = Some((
            client_config(&other, None).unwrap(),
            ServerName::try_from("127.0.0.1").unwrap().to_owned(),
        ));
        tokio::spawn(async move {
            let (tcp, _) = listener.accept().await.unwrap();
            let _ = acceptor.accept(tcp).await;
        });
        let err = Conn::open(&opts).await.err().expect("handshake refused");
        assert!(format!("{err:#}").contains("certificate"), "{err:#}");
    }
}
