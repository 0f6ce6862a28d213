//! Alerts in the binary (issue 6, docs/alerts.md): the `[alerts]` configuration, and the hooks
//! that turn what happens on the site into [`AlertSignal`]s for the engine of `vesalius-api`:
//!
//! - the exchange's events: `study-complete` (stroke-priority and study-complete rules) and
//!   `parked` (transfer-parked rules);
//! - a monitor, every `monitor_interval_secs`, for what enabled rules watch: each peer is pinged (`peer-down` once it has
//!   failed for the rule's minutes), the data directory's free space (`disk-low`) and the HTTPS
//!   certificate's end of validity (`certificate-expiry`).
//!
//! The monitor's memory of when a peer started failing is per process: after a restart a peer
//! that is still down counts from the restart.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use rustls::pki_types::pem::PemObject;
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;
use vesalius_api::alerts::{AlertOptions, AlertSignal, Alerts, SmtpOptions, SmtpTls};
use vesalius_exchange::{Exchange, ExchangeEvent};
use vesalius_store::alerts::AlertKind;
use vesalius_store::registry::PeerKind;

use crate::config::Config;

/// `[alerts]`
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AlertsConfig {
    /// Raise and deliver alerts (default true). Rules and subscriptions are data (the API);
    /// without any, nothing is raised.
    pub enabled: bool,
    /// How often due escalations and deliveries are looked for, ms (default 1000).
    pub tick_ms: u64,
    /// Seconds between the monitor's rounds: peer pings, free space, certificate (default 60).
    pub monitor_interval_secs: u64,
    /// First retry delay of a failed webhook or e-mail, ms; doubles per attempt (default 2000).
    pub retry_base_ms: u64,
    /// Longest retry delay, ms (default 300000: 5 minutes).
    pub retry_max_ms: u64,
    /// Attempts before a delivery is given up (default 10).
    pub max_attempts: u32,
    /// Deadline of one webhook call, ms (default 10000).
    pub webhook_timeout_ms: u64,
    /// Let webhooks go to loopback, private (RFC 1918, RFC 6598), link-local (cloud metadata)
    /// and unique-local addresses and `localhost` (default false). Any user may make a webhook,
    /// and the server sends it from inside the site's network: off, such targets are refused
    /// when subscribing and, after resolving the name, when sending (DNS rebinding). Turn on
    /// only when the receivers are on the site's own network.
    pub webhook_allow_private: bool,
    /// A condition that stays true (disk low, certificate, parked transfers of one study) is
    /// alerted again after this many hours (default 24).
    pub repeat_hours: u64,
    /// The SMTP server's host; e-mail alerts are off until it is set.
    pub smtp_host: Option<String>,
    /// The SMTP server's port (default by `smtp_tls`: 25 for `none`, 587 for `starttls`, 465
    /// for `tls`).
    pub smtp_port: Option<u16>,
    /// How the SMTP connection is protected: `none` (plain text, a relay on the same host or
    /// network; no credentials allowed), `starttls` (RFC 3207, required: a server that does not
    /// offer it fails the delivery) or `tls` (implicit TLS, RFC 8314). Default `none`.
    pub smtp_tls: SmtpTlsMode,
    /// PEM file of the CA certificate(s) the SMTP server's certificate must chain to, instead
    /// of the system's roots (default none: the system's roots).
    pub smtp_ca_file: Option<PathBuf>,
    /// The sender address (default `vesalius@localhost`).
    pub smtp_from: String,
    /// `AUTH PLAIN` user name (default none: no authentication). Needs `smtp_tls`: the server
    /// refuses to start with a user name and `smtp_tls = "none"`.
    pub smtp_username: Option<String>,
    /// `AUTH PLAIN` password (`config dump` redacts it).
    pub smtp_password: Option<String>,
    /// The name given in `EHLO` (default: `[site] name`).
    pub smtp_helo: Option<String>,
    /// Deadline of one SMTP conversation, ms (default 30000).
    pub smtp_timeout_ms: u64,
}

impl Default for AlertsConfig {
    fn default() -> Self {
        AlertsConfig {
            enabled: true,
            tick_ms: 1000,
            monitor_interval_secs: 60,
            retry_base_ms: 2000,
            retry_max_ms: 300_000,
            max_attempts: 10,
            webhook_timeout_ms: 10_000,
            webhook_allow_private: false,
            repeat_hours: 24,
            smtp_host: None,
            smtp_port: None,
            smtp_tls: SmtpTlsMode::None,
            smtp_ca_file: None,
            smtp_from: "vesalius@localhost".into(),
            smtp_username: None,
            smtp_password: None,
            smtp_helo: None,
            smtp_timeout_ms: 30_000,
        }
    }
}

/// `[alerts] smtp_tls`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SmtpTlsMode {
    /// Plain SMTP.
    #[default]
    None,
    /// `STARTTLS` after `EHLO`.
    Starttls,
    /// TLS from the first byte.
    Tls,
}

impl AlertsConfig {
    /// The SMTP connection's TLS: a rustls client (ring) trusting `smtp_ca_file` or else the
    /// system's roots. A user name without TLS is refused here, so a misconfigured site does
    /// not start rather than send its password in clear.
    fn smtp_tls_client(&self) -> Result<SmtpTls> {
        if self.smtp_tls == SmtpTlsMode::None {
            if self.smtp_username.as_ref().is_some_and(|u| !u.is_empty()) {
                anyhow::bail!(
                    "[alerts] smtp_username is set but smtp_tls = \"none\": the password would \
                     be sent in clear; set smtp_tls = \"starttls\" or \"tls\""
                );
            }
            return Ok(SmtpTls::None);
        }
        let mut roots = rustls::RootCertStore::empty();
        match &self.smtp_ca_file {
            Some(path) => {
                let certs = rustls::pki_types::CertificateDer::pem_file_iter(path)
                    .with_context(|| format!("[alerts] smtp_ca_file {}", path.display()))?
                    .collect::<Result<Vec<_>, _>>()
                    .with_context(|| format!("[alerts] smtp_ca_file {}", path.display()))?;
                if certs.is_empty() {
                    anyhow::bail!(
                        "[alerts] smtp_ca_file {}: no PEM certificate found",
                        path.display()
                    );
                }
                for c in certs {
                    roots.add(c).with_context(|| {
                        format!("[alerts] smtp_ca_file {}: a CA certificate", path.display())
                    })?;
                }
            }
            None => {
                let found = rustls_native_certs::load_native_certs();
                for e in &found.errors {
                    tracing::warn!("system CA certificates: {e}");
                }
                let (added, _ignored) = roots.add_parsable_certificates(found.certs);
                if added == 0 {
                    anyhow::bail!(
                        "[alerts] smtp_tls is set but no system CA certificate was found; set \
                         smtp_ca_file"
                    );
                }
            }
        }
        let config = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .context("TLS protocol versions")?
        .with_root_certificates(roots)
        .with_no_client_auth();
        let config = Arc::new(config);
        Ok(match self.smtp_tls {
            SmtpTlsMode::Starttls => SmtpTls::StartTls(config),
            _ => SmtpTls::Implicit(config),
        })
    }

    /// The engine's options; `base_url` is the site's external address (absolute links).
    /// Fails on an SMTP set-up that cannot work or would leak the password (see `smtp_tls`).
    pub fn to_options(&self, cfg: &Config, base_url: String) -> Result<AlertOptions> {
        let ms = Duration::from_millis;
        let smtp = match self.smtp_host.as_ref().filter(|h| !h.is_empty()) {
            None => None,
            Some(host) => Some(SmtpOptions {
                host: host.clone(),
                port: self.smtp_port.unwrap_or(match self.smtp_tls {
                    SmtpTlsMode::None => 25,
                    SmtpTlsMode::Starttls => 587,
                    SmtpTlsMode::Tls => 465,
                }),
                from: self.smtp_from.clone(),
                username: self.smtp_username.clone().filter(|u| !u.is_empty()),
                password: self.smtp_password.clone(),
                helo: self
                    .smtp_helo
                    .clone()
                    .unwrap_or_else(|| cfg.site.name.clone()),
                timeout: ms(self.smtp_timeout_ms.max(100)),
                tls: self.smtp_tls_client()?,
            }),
        };
        Ok(AlertOptions {
            tick: ms(self.tick_ms.max(10)),
            lease: ms(self.webhook_timeout_ms.max(self.smtp_timeout_ms) + 30_000),
            retry_base: ms(self.retry_base_ms.max(1)),
            retry_max: ms(self.retry_max_ms.max(self.retry_base_ms.max(1))),
            max_attempts: self.max_attempts.max(1),
            webhook_timeout: ms(self.webhook_timeout_ms.max(100)),
            webhook_allow_private: self.webhook_allow_private,
            repeat: Duration::from_secs(self.repeat_hours.max(1) * 3600),
            base_url,
            smtp,
        })
    }
}

/// Starts a site's alert engine when `[alerts] enabled`: links in alerts point at
/// `[http] public_base_url` or else `local_url`; the exchange's events become signals; the
/// engine escalates and delivers until `shutdown`. (`serve` adds the [`Monitor`].)
pub fn start(
    cfg: &Config,
    alerts: &Arc<Alerts>,
    exchange: &Exchange,
    local_url: &str,
    shutdown: &CancellationToken,
) -> Vec<tokio::task::JoinHandle<()>> {
    if !cfg.alerts.enabled {
        return Vec::new();
    }
    if cfg.http.public_base_url.is_none() {
        alerts.set_base_url(local_url);
    }
    vec![
        forward_exchange_events(exchange, alerts.clone(), shutdown.clone()),
        tokio::spawn(alerts.clone().run(shutdown.clone())),
    ]
}

/// Turns the exchange's events into signals until `shutdown`.
pub fn forward_exchange_events(
    exchange: &Exchange,
    alerts: Arc<Alerts>,
    shutdown: CancellationToken,
) -> tokio::task::JoinHandle<()> {
    use tokio::sync::broadcast::error::RecvError;
    let mut rx = exchange.subscribe();
    tokio::spawn(async move {
        loop {
            // Ends with the site (the exchange's channel outlives it: a `RunningSite::stop` that
            // waited for the channel to close would wait for ever).
            let event = tokio::select! {
                _ = shutdown.cancelled() => return,
                e = rx.recv() => e,
            };
            let signal = match event {
                Ok(ExchangeEvent::StudyComplete {
                    org,
                    study_uid,
                    from_peer,
                    priority,
                    instances,
                }) => AlertSignal::Arrival {
                    org,
                    study_uid,
                    from_peer,
                    priority,
                    instances,
                },
                Ok(ExchangeEvent::Parked {
                    org,
                    queue,
                    study_uid,
                    error,
                }) => AlertSignal::TransferParked {
                    org,
                    queue,
                    study_uid,
                    error,
                },
                Ok(_) => continue,
                Err(RecvError::Lagged(n)) => {
                    tracing::warn!(missed = n, "alerts: exchange events missed");
                    continue;
                }
                Err(RecvError::Closed) => return,
            };
            if let Err(e) = alerts.signal(&signal).await {
                tracing::warn!("alerts: {e}");
            }
        }
    })
}

/// What the monitor watches.
pub struct Monitor {
    /// The engine.
    pub alerts: Arc<Alerts>,
    /// The exchange (its registry and client, for pings).
    pub exchange: Arc<Exchange>,
    /// The data directory (free space).
    pub data_dir: PathBuf,
    /// The HTTPS certificate file, if TLS is on.
    pub certificate: Option<PathBuf>,
    /// Time between rounds.
    pub interval: Duration,
}

impl Monitor {
    /// Runs rounds until `shutdown` (the first one at once).
    pub async fn run(self, shutdown: CancellationToken) {
        let mut down: HashMap<String, i64> = HashMap::new();
        loop {
            self.round(&mut down).await;
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(self.interval) => {}
            }
        }
    }

    async fn signal(&self, s: AlertSignal) {
        if let Err(e) = self.alerts.signal(&s).await {
            tracing::warn!("alerts monitor: {e}");
        }
    }

    async fn round(&self, down: &mut HashMap<String, i64>) {
        // Only what some enabled rule watches (no pings without a peer-down rule).
        let watched: Vec<AlertKind> = match self.alerts.store().alert_rules().await {
            Ok(r) => r
                .into_iter()
                .filter(|r| r.enabled)
                .map(|r| r.kind)
                .collect(),
            Err(e) => {
                tracing::warn!("alerts monitor: rules: {e}");
                return;
            }
        };
        if watched.contains(&AlertKind::DiskLow) {
            self.disk().await;
        }
        if watched.contains(&AlertKind::CertificateExpiry) {
            self.certificate().await;
        }
        if watched.contains(&AlertKind::PeerDown) {
            self.peers(down).await;
        } else {
            down.clear();
        }
    }

    async fn disk(&self) {
        match vesalius_store::ingest::free_bytes(&self.data_dir) {
            Ok(free_bytes) => self.signal(AlertSignal::DiskFree { free_bytes }).await,
            Err(e) => tracing::warn!("alerts monitor: free space: {e}"),
        }
    }

    async fn certificate(&self) {
        if let Some(path) = &self.certificate {
            match certificate_not_after(path) {
                Ok(not_after_ms) => self.signal(AlertSignal::Certificate { not_after_ms }).await,
                Err(e) => tracing::warn!("alerts monitor: certificate: {e:#}"),
            }
        }
    }

    async fn peers(&self, down: &mut HashMap<String, i64>) {
        let peers = match self.exchange.registry().peers().await {
            Ok(p) => p,
            Err(e) => {
                tracing::warn!("alerts monitor: peers: {e}");
                return;
            }
        };
        down.retain(|name, _| peers.iter().any(|p| p.name == *name));
        let client = self.exchange.client();
        let pings = peers.iter().map(|p| async move {
            let r = match p.kind {
                PeerKind::Vesalius => client.ping(p).await.map(|_| ()),
                PeerKind::Dicomweb => client.qido_ping(p).await.map(|_| ()),
            };
            (p, r)
        });
        for (peer, r) in futures::future::join_all(pings).await {
            match r {
                Ok(()) => {
                    down.remove(&peer.name);
                }
                Err(e) => {
                    let since_ms = *down
                        .entry(peer.name.clone())
                        .or_insert_with(vesalius_exchange::now_ms);
                    self.signal(AlertSignal::PeerDown {
                        org: peer.org.clone(),
                        peer: peer.name.clone(),
                        since_ms,
                        error: e.to_string(),
                    })
                    .await;
                }
            }
        }
    }
}

/// The `notAfter` of the first certificate in a PEM file, ms since the epoch.
pub fn certificate_not_after(path: &std::path::Path) -> Result<i64> {
    let pem =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let b64: String = pem
        .lines()
        .skip_while(|l| !l.starts_with("-----BEGIN CERTIFICATE"))
        .skip(1)
        .take_while(|l| !l.starts_with("-----END"))
        .collect();
    use base64::Engine;
    let der = base64::engine::general_purpose::STANDARD
        .decode(b64.trim())
        .context("certificate PEM")?;
    not_after(&der).context("certificate DER")
}

/// One DER TLV: tag, contents, the rest.
fn tlv(b: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, b) = b.split_first()?;
    let (&l0, mut b) = b.split_first()?;
    let len = if l0 < 0x80 {
        usize::from(l0)
    } else {
        let n = usize::from(l0 & 0x7f);
        if n == 0 || n > 4 || b.len() < n {
            return None;
        }
        let len = b[..n]
            .iter()
            .fold(0usize, |a, &x| (a << 8) | usize::from(x));
        b = &b[n..];
        len
    };
    (b.len() >= len).then(|| (tag, &b[..len], &b[len..]))
}

/// `notAfter` of a DER certificate (RFC 5280 4.1: Certificate → TBSCertificate → [version],
/// serialNumber, signature, issuer, validity → notBefore, notAfter), ms.
fn not_after(der: &[u8]) -> Result<i64> {
    let bad = || anyhow::anyhow!("not an X.509 certificate");
    let (_, cert, _) = tlv(der).ok_or_else(bad)?;
    let (_, mut tbs, _) = tlv(cert).ok_or_else(bad)?;
    if tbs.first() == Some(&0xa0) {
        tbs = tlv(tbs).ok_or_else(bad)?.2;
    }
    for _ in 0..3 {
        tbs = tlv(tbs).ok_or_else(bad)?.2; // serial, signature algorithm, issuer
    }
    let (_, validity, _) = tlv(tbs).ok_or_else(bad)?;
    let (_, _, rest) = tlv(validity).ok_or_else(bad)?;
    let (tag, t, _) = tlv(rest).ok_or_else(bad)?;
    let t = std::str::from_utf8(t).map_err(|_| bad())?;
    // UTCTime YYMMDDHHMMSSZ (years 1950-2049), GeneralizedTime YYYYMMDDHHMMSSZ.
    let (year, rest) = match tag {
        0x17 => {
            let yy: i64 = t.get(..2).and_then(|s| s.parse().ok()).ok_or_else(bad)?;
            (if yy < 50 { 2000 + yy } else { 1900 + yy }, &t[2..])
        }
        0x18 => (
            t.get(..4).and_then(|s| s.parse().ok()).ok_or_else(bad)?,
            &t[4..],
        ),
        _ => return Err(bad()),
    };
    let n = |i: usize| -> Result<i64> {
        rest.get(i..i + 2)
            .and_then(|s| s.parse().ok())
            .ok_or_else(bad)
    };
    let (mo, d, h, mi, s) = (n(0)?, n(2)?, n(4)?, n(6)?, n(8)?);
    // days_from_civil (Howard Hinnant).
    let y = if mo <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (mo + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Ok((days * 86_400 + h * 3600 + mi * 60 + s) * 1000)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_smtp_password_is_redacted_and_options_follow_the_config() {
        let mut cfg = Config::default();
        cfg.alerts.smtp_host = Some("mail.example".into());
        cfg.alerts.smtp_password = Some("hunter2-secret".into());
        cfg.alerts.smtp_username = Some(String::new());
        let dumped = crate::config::dump(&cfg).unwrap();
        assert!(!dumped.contains("hunter2-secret"), "{dumped}");
        assert!(
            dumped.contains("smtp_password = \"<redacted>\""),
            "{dumped}"
        );
        let o = cfg.alerts.to_options(&cfg, "http://x".into()).unwrap();
        let smtp = o.smtp.expect("smtp on");
        assert_eq!((smtp.host.as_str(), smtp.port), ("mail.example", 25));
        assert_eq!(smtp.helo, cfg.site.name);
        assert_eq!(smtp.username, None, "an empty user name means no AUTH");
        assert!(
            !o.webhook_allow_private,
            "private webhook targets are refused by default"
        );
        let parsed: Config = toml::from_str(
            "[alerts]\ntick_ms = 50\nsmtp_port = 2525\nwebhook_allow_private = true\n",
        )
        .expect("parses");
        assert_eq!(
            (parsed.alerts.tick_ms, parsed.alerts.smtp_port),
            (50, Some(2525))
        );
        assert!(
            parsed
                .alerts
                .to_options(&parsed, String::new())
                .unwrap()
                .webhook_allow_private
        );
        assert!(toml::from_str::<Config>("[alerts]\nsmtp_hots = \"x\"\n").is_err());
    }

    #[test]
    fn smtp_tls_takes_the_ca_file_and_refuses_a_password_in_clear() {
        let dir = tempfile::tempdir().unwrap();
        crate::tls::self_signed(dir.path(), &[], 30, false).unwrap();
        let mut cfg = Config::default();
        cfg.alerts.smtp_host = Some("mail.example".into());
        cfg.alerts.smtp_username = Some("vesalius".into());
        cfg.alerts.smtp_password = Some("pw".into());
        let e = cfg.alerts.to_options(&cfg, String::new()).unwrap_err();
        assert!(
            e.to_string()
                .contains("smtp_username is set but smtp_tls = \"none\""),
            "{e:#}"
        );
        cfg.alerts.smtp_tls = SmtpTlsMode::Starttls;
        cfg.alerts.smtp_ca_file = Some(dir.path().join("cert.pem"));
        let smtp = cfg
            .alerts
            .to_options(&cfg, String::new())
            .unwrap()
            .smtp
            .unwrap();
        assert_eq!(smtp.port, 587, "submission port by default for STARTTLS");
        assert!(matches!(smtp.tls, SmtpTls::StartTls(_)));
        cfg.alerts.smtp_tls = SmtpTlsMode::Tls;
        let smtp = cfg
            .alerts
            .to_options(&cfg, String::new())
            .unwrap()
            .smtp
            .unwrap();
        assert_eq!(
            smtp.port, 465,
            "submissions port by default for implicit TLS"
        );
        assert!(matches!(smtp.tls, SmtpTls::Implicit(_)));
        // A file without a certificate, or no file: a clear error at start.
        cfg.alerts.smtp_ca_file = Some(dir.path().join("key.pem"));
        let e = cfg.alerts.to_options(&cfg, String::new()).unwrap_err();
        assert!(e.to_string().contains("no PEM certificate"), "{e:#}");
        cfg.alerts.smtp_ca_file = Some(dir.path().join("missing.pem"));
        let e = cfg.alerts.to_options(&cfg, String::new()).unwrap_err();
        assert!(e.to_string().contains("missing.pem"), "{e:#}");
        let parsed: Config = toml::from_str("[alerts]\nsmtp_tls = \"starttls\"\n").unwrap();
        assert_eq!(parsed.alerts.smtp_tls, SmtpTlsMode::Starttls);
        assert!(toml::from_str::<Config>("[alerts]\nsmtp_tls = \"ssl\"\n").is_err());
    }

    #[test]
    fn not_after_is_read_from_a_real_certificate() {
        let dir = tempfile::tempdir().unwrap();
        let made = crate::tls::self_signed(dir.path(), &[], 30, false).unwrap();
        let _ = made;
        let got = certificate_not_after(&dir.path().join("cert.pem")).unwrap();
        let want =
            (time::OffsetDateTime::now_utc() + time::Duration::days(30)).unix_timestamp() * 1000;
        assert!((got - want).abs() < 120_000, "{got} vs {want}");
        assert!(not_after(b"\x30\x03\x02\x01\x01").is_err());
        assert!(certificate_not_after(&dir.path().join("key.pem")).is_err());
    }
}
