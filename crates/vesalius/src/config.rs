//! The configuration: one typed struct tree, layered defaults → TOML file → environment
//! (`VESALIUS__SECTION__KEY`) → command-line flags. Unknown keys are errors. Every key is
//! documented here and in `docs/configuration.md`; `vesalius config dump` prints the result.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};

/// The whole configuration.
#[derive(Debug, Clone, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Where the index and blobs live.
    pub storage: StorageConfig,
    /// The DICOM (DIMSE) listener.
    pub dicom: DicomConfig,
    /// The HTTP listener (DICOMweb, API, app, metrics).
    pub http: HttpConfig,
    /// Limits on incoming objects and queries.
    pub limits: LimitsConfig,
    /// Logging.
    pub log: LogConfig,
    /// Authentication.
    pub auth: AuthConfig,
    /// The audit trail's exports.
    pub audit: AuditConfig,
    /// This site's identity in the exchange network.
    pub site: SiteConfig,
    /// The exchange engine (routes, outbox workers, transfers).
    pub exchange: ExchangeConfig,
    /// Alerts: delivery, monitor and SMTP (issue 6, docs/alerts.md).
    pub alerts: crate::alerts::AlertsConfig,
    /// The web app.
    pub web: WebConfig,
}

/// `[web]`
#[derive(Debug, Clone, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct WebConfig {
    /// The OHIF viewer's `dist/` as prepared by `scripts/ohif` (its paths moved under `/ohif/`):
    /// when set, OHIF is served at `/ohif/` against this server's DICOMweb and the worklist
    /// offers "Open in OHIF". Default: none (no `/ohif`).
    pub ohif_dir: Option<PathBuf>,
}

/// `[site]`
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SiteConfig {
    /// This site's name in the exchange network: peers register us under it and our signed
    /// requests carry it (`iss`). Default `vesalius`.
    pub name: String,
    /// Offset of the site clock from UTC in minutes, for routes' time-of-day windows. Default 0.
    pub utc_offset_minutes: i32,
}

impl Default for SiteConfig {
    fn default() -> Self {
        SiteConfig {
            name: "vesalius".into(),
            utc_offset_minutes: 0,
        }
    }
}

/// `[exchange]`
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ExchangeConfig {
    /// Run the outbox workers on this node. Default true.
    pub enabled: bool,
    /// How often idle workers look for work no signal announced (jobs of other nodes), ms.
    /// Default 2000.
    pub poll_ms: u64,
    /// Lease of a job without heartbeat, ms. Default 60000.
    pub lease_ms: u64,
    /// Most jobs a worker leases at once. Default 64.
    pub batch_jobs: usize,
    /// Most bytes in one STOW-RS request to a peer over a slow link (a cut connection costs at most one). Default
    /// 1048576.
    pub batch_bytes: u64,
    /// STOW-RS requests in flight per peer. Default 4.
    pub concurrency: usize,
    /// Attempts before a job is parked. Default 10.
    pub max_attempts: u32,
    /// First retry delay, ms (doubling per attempt, with jitter). Default 1000.
    pub backoff_base_ms: u64,
    /// Longest retry delay, ms. Default 300000.
    pub backoff_max_ms: u64,
    /// Quiet time after a study's last instance before its final manifest, ms. Default 50.
    pub settle_ms: u64,
    /// Timeout of one request to a peer, ms. Default 60000.
    pub request_timeout_ms: u64,
    /// How often routes are reloaded from the database (changes by other nodes or by
    /// `vesalius admin`), ms. Default 2000.
    pub route_refresh_ms: u64,
    /// Content coding of STOW-RS bodies sent to peers (RFC 9110 8.4): `gzip` (flate2's fastest
    /// level, compressed as it streams; the stored bytes and their hashes are unchanged),
    /// `identity`, or `auto`: gzip only over a slow link (`slow_link_rtt_ms`), plain on a LAN
    /// or the same machine, where compressing costs more CPU time than the wire saves. A peer
    /// that refuses gzip (415) is sent plain. Default `auto`.
    pub content_encoding: vesalius_exchange::client::ContentEncoding,
    /// A peer whose round trip (the shortest of the last minute's signed requests) is at least
    /// this is on a slow link, ms: `content_encoding = "auto"` compresses to it and its
    /// STOW-RS requests are at most `batch_bytes`; on a fast link they are up to
    /// `fast_batch_bytes`. Default 10.
    pub slow_link_rtt_ms: u64,
    /// Most bytes in one STOW-RS request to a peer on a fast link (a LAN, the same machine:
    /// fewer, larger requests cost less CPU time at both ends, and a resent one little time).
    /// Default 4194304.
    pub fast_batch_bytes: u64,
    /// The longest one C-MOVE from a DICOM node (a retrieval, a prior) may take before it is
    /// cancelled, ms. Default 600000.
    pub move_timeout_ms: u64,
    /// The longest one C-FIND to a DICOM node may take, ms. Default 60000.
    pub find_timeout_ms: u64,
    /// How long a prefetch waits after the first instance of its study arrived, ms (one
    /// prefetch then serves the whole study). Default 2000.
    pub prefetch_delay_ms: u64,
    /// How long a peer may take to answer a federated search (QIDO-RS `scope=network`,
    /// `/api/v1/search`) before it is reported as timed out, ms. Default 3000.
    pub federation_timeout_ms: u64,
    /// Bytes of remote studies' answers (metadata, frames, rendered images) this node keeps
    /// for remote viewing. Default 268435456 (256 MiB).
    pub remote_cache_bytes: u64,
    /// Peers put by this file at start (`[[exchange.peers]]`: `name` plus the fields of
    /// `PUT /api/v1/peers/{name}`, docs/api-exchange.md). They are marked managed: the API
    /// and `vesalius admin` refuse to change them, and one removed from here is removed at the
    /// next start. Default none.
    pub peers: Vec<vesalius_exchange::spec::PeerSpec>,
    /// DICOM nodes put by this file at start (`[[exchange.nodes]]`: `name` plus the fields of
    /// `PUT /api/v1/nodes/{name}`), managed like the peers. Default none.
    pub nodes: Vec<vesalius_exchange::spec::NodeSpec>,
    /// Routes put by this file at start (`[[exchange.routes]]`: `id` plus the fields of
    /// `PUT /api/v1/routes/{id}`), managed like the peers. Default none.
    pub routes: Vec<vesalius_exchange::spec::RouteSpec>,
}

impl Default for ExchangeConfig {
    fn default() -> Self {
        ExchangeConfig {
            enabled: true,
            poll_ms: 2000,
            lease_ms: 60_000,
            batch_jobs: 64,
            batch_bytes: 1 << 20,
            concurrency: 4,
            max_attempts: 10,
            backoff_base_ms: 1000,
            backoff_max_ms: 300_000,
            settle_ms: 50,
            request_timeout_ms: 60_000,
            route_refresh_ms: 2000,
            content_encoding: vesalius_exchange::client::ContentEncoding::Auto,
            slow_link_rtt_ms: 10,
            fast_batch_bytes: 4 << 20,
            move_timeout_ms: 600_000,
            find_timeout_ms: 60_000,
            prefetch_delay_ms: 2000,
            federation_timeout_ms: 3000,
            remote_cache_bytes: 256 << 20,
            peers: Vec::new(),
            nodes: Vec::new(),
            routes: Vec::new(),
        }
    }
}

/// `[storage]`
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StorageConfig {
    /// Data directory: `index.db` (SQLite) and `blobs/` live here. Default `./vesalius-data`.
    pub data_dir: PathBuf,
    /// The organisation objects received by this site belong to (until organisations arrive).
    pub org: String,
    /// The ingest journal (vesalius_store::journal): one flush before each acknowledgement
    /// instead of three. Default true; false: every acknowledgement waits for the spool file,
    /// its directory entry and the index to be synced.
    pub journal: bool,
    /// Journal files kept ready (at most this many instances in flight or awaiting their
    /// checkpoint use the journal; more take the three syncs). Default 128.
    pub journal_files: usize,
    /// The longest an instance's journal file waits for the checkpoint that makes its blob
    /// entry and index row durable on their own, in ms. Default 100.
    pub journal_checkpoint_ms: u64,
}

impl Default for StorageConfig {
    fn default() -> Self {
        let j = vesalius_store::journal::JournalConfig::default();
        StorageConfig {
            data_dir: PathBuf::from("./vesalius-data"),
            org: "default".into(),
            journal: true,
            journal_files: j.files,
            journal_checkpoint_ms: j.checkpoint_ms,
        }
    }
}

/// A DICOM node: C-MOVE destination or Storage Commitment peer.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct NodeConfig {
    /// Its AE title.
    pub ae_title: String,
    /// Host name or address.
    pub host: String,
    /// TCP port.
    pub port: u16,
}

/// What marks a directory AE title entry as managed by the configuration: its description
/// starts with it. Such entries are rewritten from `[[dicom.callers]]` at every start and removed
/// when no longer listed there.
pub const CONFIG_MANAGED: &str = "[config]";

/// A calling AE title allowed to associate (`[[dicom.callers]]`), seeded into the directory at
/// start. Entries made with `vesalius admin ae add` stay untouched unless a caller of the same
/// title is listed here (the configuration then wins and the entry becomes managed by it).
/// A [`NodeConfig`] does not imply a caller: a node is only ever called (C-MOVE, Storage
/// Commitment reports); a PACS that also sends or queries is listed here, with `listen`, which
/// makes it a C-MOVE destination as well.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct CallerConfig {
    /// The calling AE title (1-16 characters of the default repertoire, no backslash; PS3.5).
    pub ae_title: String,
    /// Its organisation, which must exist: what it stores goes there, and it sees only that
    /// organisation's data.
    pub org: String,
    /// IPs or CIDR blocks it may call from (`10.1.2.7`, `10.1.0.0/16`); empty: any address.
    #[serde(default)]
    pub allowed_addrs: Vec<String>,
    /// Where it listens (`host:port`): a C-MOVE destination and Storage Commitment callback
    /// address for AE titles of its organisation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub listen: Option<String>,
    /// It may also query and retrieve (C-FIND, C-GET, C-MOVE), not only store. Default false.
    #[serde(default)]
    pub may_query: bool,
    /// Free text, e.g. "CT scanner, room 2" (stored after [`CONFIG_MANAGED`]).
    #[serde(default)]
    pub description: String,
}

impl CallerConfig {
    /// The directory entry this caller seeds, checked (AE title, addresses, `listen`).
    pub fn to_entry(&self) -> Result<vesalius_store::directory::AeEntry> {
        let ae = self.ae_title.trim();
        let what = || format!("[[dicom.callers]] ae_title = {:?}", self.ae_title);
        if !vesalius_core::ae::valid_ae_title(ae) {
            bail!(
                "{}: an AE title is 1-16 ASCII characters without backslash or control characters",
                what()
            );
        }
        if self.org.trim().is_empty() {
            bail!("{}: org is required", what());
        }
        for a in &self.allowed_addrs {
            if vesalius_auth::net::Cidr::parse(a).is_none() {
                bail!(
                    "{}: allowed_addrs entry {a:?} is not an IP address or CIDR block",
                    what()
                );
            }
        }
        let listen = match &self.listen {
            None => None,
            Some(l) => {
                let bad = || anyhow::anyhow!("{}: listen = {l:?} is not HOST:PORT", what());
                let (host, port) = l.trim().rsplit_once(':').ok_or_else(bad)?;
                let host = host
                    .strip_prefix('[')
                    .and_then(|h| h.strip_suffix(']'))
                    .unwrap_or(host);
                let port: u16 = port.parse().map_err(|_| bad())?;
                if host.is_empty() || port == 0 || host.contains(char::is_whitespace) {
                    return Err(bad());
                }
                Some((host.to_owned(), port))
            }
        };
        let description = match self.description.trim() {
            "" => CONFIG_MANAGED.to_owned(),
            d => format!("{CONFIG_MANAGED} {d}"),
        };
        Ok(vesalius_store::directory::AeEntry {
            ae_title: ae.to_owned(),
            org: self.org.trim().to_owned(),
            allowed_addrs: self
                .allowed_addrs
                .iter()
                .map(|a| a.trim().to_owned())
                .collect(),
            listen,
            description,
            may_query: self.may_query,
        })
    }
}

/// `[dicom]`
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DicomConfig {
    /// Listen address; loopback by default. Default `127.0.0.1:11112`.
    pub addr: SocketAddr,
    /// Our AE title. Default `VESALIUS`.
    pub ae_title: String,
    /// Maximum PDU length we receive (PS3.8 D.1); we honour the peer's for what we send.
    pub max_pdu_length: u32,
    /// Concurrent associations accepted; more are refused (A-ASSOCIATE-RJ transient).
    pub max_associations: usize,
    /// Accept associations whatever Called AE Title they use (many modalities get it wrong).
    pub accept_any_called_ae: bool,
    /// Known DICOM nodes (C-MOVE destinations, Storage Commitment report targets), consulted
    /// after the directory's AE titles with a listening address. Nodes may not call in.
    pub nodes: Vec<NodeConfig>,
    /// Calling AE titles allowed to associate, seeded into the directory at start (see
    /// [`CallerConfig`]). Default none: every association is refused until AE titles are
    /// registered here or with `vesalius admin ae add`.
    pub callers: Vec<CallerConfig>,
    /// DICOM TLS listen address (PS3.15 B.1), started only when a certificate is configured
    /// (`tls_cert`/`tls_key` here, or those of `[http]`). Default `127.0.0.1:2762`.
    pub tls_addr: SocketAddr,
    /// PEM certificate chain for DICOM TLS; default: `[http] tls_cert`.
    pub tls_cert: Option<PathBuf>,
    /// PEM private key for DICOM TLS; default: `[http] tls_key`.
    pub tls_key: Option<PathBuf>,
    /// PEM bundle of CA certificates: when set, DICOM TLS clients must present a certificate
    /// signed by one of them (the handshake fails otherwise).
    pub tls_client_ca: Option<PathBuf>,
}

impl Default for DicomConfig {
    fn default() -> Self {
        DicomConfig {
            addr: "127.0.0.1:11112".parse().expect("valid"),
            ae_title: "VESALIUS".into(),
            max_pdu_length: 65536,
            max_associations: 64,
            accept_any_called_ae: true,
            nodes: Vec::new(),
            callers: Vec::new(),
            tls_addr: "127.0.0.1:2762".parse().expect("valid"),
            tls_cert: None,
            tls_key: None,
            tls_client_ca: None,
        }
    }
}

/// `[http]`
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HttpConfig {
    /// Listen address; loopback by default. Default `127.0.0.1:8080`.
    pub addr: SocketAddr,
    /// The URL clients reach us at, for RetrieveURL and BulkDataURI (default: from the Host header).
    pub public_base_url: Option<String>,
    /// PEM certificate chain (leaf first): with `tls_key`, the HTTP address serves HTTPS only.
    pub tls_cert: Option<PathBuf>,
    /// PEM private key (PKCS#8, RSA or EC) of `tls_cert`. A path, not a secret: `config dump`
    /// shows it.
    pub tls_key: Option<PathBuf>,
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            addr: "127.0.0.1:8080".parse().expect("valid"),
            public_base_url: None,
            tls_cert: None,
            tls_key: None,
        }
    }
}

/// A certificate chain and its key, both PEM files.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TlsFiles<'a> {
    /// The certificate chain.
    pub cert: &'a Path,
    /// The private key.
    pub key: &'a Path,
}

fn tls_pair<'a>(
    section: &str,
    cert: Option<&'a PathBuf>,
    key: Option<&'a PathBuf>,
) -> Result<Option<TlsFiles<'a>>> {
    match (cert, key) {
        (Some(cert), Some(key)) => Ok(Some(TlsFiles { cert, key })),
        (None, None) => Ok(None),
        _ => bail!("[{section}] tls_cert and tls_key must be given together"),
    }
}

impl Config {
    /// The HTTPS certificate and key, if configured.
    pub fn http_tls(&self) -> Result<Option<TlsFiles<'_>>> {
        tls_pair(
            "http",
            self.http.tls_cert.as_ref(),
            self.http.tls_key.as_ref(),
        )
    }

    /// The DICOM TLS certificate and key: `[dicom] tls_cert`/`tls_key` when set, else the
    /// HTTPS ones; `None` means no DICOM TLS listener.
    pub fn dicom_tls(&self) -> Result<Option<TlsFiles<'_>>> {
        let own = tls_pair(
            "dicom",
            self.dicom.tls_cert.as_ref(),
            self.dicom.tls_key.as_ref(),
        )?;
        let files = match own {
            Some(f) => Some(f),
            None => self.http_tls()?,
        };
        if files.is_none() && self.dicom.tls_client_ca.is_some() {
            bail!("[dicom] tls_client_ca needs a certificate: [dicom] or [http] tls_cert/tls_key");
        }
        Ok(files)
    }
}

/// `[limits]`
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsConfig {
    /// Largest accepted object, bytes. Default 4 GiB.
    pub max_instance_bytes: u64,
    /// Largest STOW-RS request body, bytes. Default 16 GiB.
    pub max_stow_bytes: u64,
    /// Refuse new objects (C-STORE 0xA700, HTTP 507) when free disk falls below this. Default 1 GiB.
    pub min_free_bytes: u64,
    /// Longest single non-binary value accepted in a header, bytes. Default 16 MiB.
    pub max_value_length: u32,
    /// Total header bytes kept in memory per object. Default 64 MiB.
    pub max_header_bytes: u64,
    /// Most results a query returns per page. Default 1000.
    pub max_query_results: usize,
    /// Most entries accepted in one zip archive on import. Default 100000.
    pub max_zip_entries: usize,
    /// Largest accepted uncompressed/compressed ratio of a zip entry. Default 200.
    pub max_zip_ratio: u64,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        LimitsConfig {
            max_instance_bytes: 4 << 30,
            max_stow_bytes: 16 << 30,
            min_free_bytes: 1 << 30,
            max_value_length: 16 << 20,
            max_header_bytes: 64 << 20,
            max_query_results: 1000,
            max_zip_entries: 100_000,
            max_zip_ratio: 200,
        }
    }
}

/// `[auth]`
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthConfig {
    /// Refuse HTTP requests without credentials (a bearer token or a login session). Default
    /// `true`. `false` serves anonymous requests as the server itself: only for test set-ups
    /// that carry no credentials yet; the start-up banner warns.
    pub required: bool,
    /// Send the session cookie with `Secure` (default: when the HTTP address speaks TLS).
    pub secure_cookies: Option<bool>,
    /// How long "Keep me signed in" keeps a password login, in days (default 30, at most 365;
    /// 0: the login screen offers no such option). Without it a login's cookie ends with the
    /// browser session and the session after 12 hours (issue 6).
    pub remember_days: u32,
    /// OpenID Connect login through the site's identity provider (`[auth.oidc]`, see
    /// [`OidcConfig`]); off unless the section is present.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub oidc: Option<OidcConfig>,
}

impl Default for AuthConfig {
    fn default() -> Self {
        AuthConfig {
            required: true,
            secure_cookies: None,
            remember_days: 30,
            oidc: None,
        }
    }
}

/// `[auth.oidc]`: log in through the site's OpenID Connect identity provider (authorization
/// code flow with PKCE, see docs/security.md). The provider is discovered in the background at
/// start and retried until it answers; password login works meanwhile. Users are not created
/// on first login: an administrator creates them (`vesalius admin user create … --email …
/// --no-password`), and the first login links the identity by its verified e-mail address.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct OidcConfig {
    /// The provider's issuer URL, exactly as its discovery document names it (discovery at
    /// `{issuer}/.well-known/openid-configuration`), e.g.
    /// `https://login.example.org/realms/hospital`. Required; `https`, except on loopback.
    pub issuer: String,
    /// The client id registered for Vesalius at the provider. Required.
    pub client_id: String,
    /// The client secret (a confidential client; sent with HTTP Basic,
    /// `client_secret_basic`); absent for a public client (PKCE only). `config dump` redacts
    /// it; prefer the environment (`VESALIUS__AUTH__OIDC__CLIENT_SECRET`) to the file.
    #[serde(default)]
    pub client_secret: Option<String>,
    /// The callback URL registered at the provider, ending in `/api/v1/auth/oidc/callback`.
    /// Default: `[http] public_base_url` followed by that path; one of the two is required.
    #[serde(default)]
    pub redirect_url: Option<String>,
    /// Scopes asked for besides `openid` (always sent). Default `["email", "profile"]`.
    #[serde(default = "oidc_default_scopes")]
    pub scopes: Vec<String>,
    /// At the first login of an identity, link it to the one user whose e-mail address equals
    /// the address the provider says is **verified** (audited `oidc-link`). Default `true`;
    /// `false` admits only identities already linked.
    #[serde(default = "oidc_default_link_by_email")]
    pub link_by_email: bool,
    /// Label of the login button. Default `Single sign-on`.
    #[serde(default = "oidc_default_display_name")]
    pub display_name: String,
}

fn oidc_default_scopes() -> Vec<String> {
    vec!["email".into(), "profile".into()]
}

fn oidc_default_link_by_email() -> bool {
    true
}

fn oidc_default_display_name() -> String {
    "Single sign-on".into()
}

impl OidcConfig {
    /// The checked client options; `public_base_url` gives the default redirect URL.
    pub fn to_options(
        &self,
        public_base_url: Option<&str>,
    ) -> Result<vesalius_auth::oidc::OidcOptions> {
        use vesalius_api::oidc::CALLBACK_PATH;
        let loopback = |u: &reqwest::Url| {
            let h = u.host_str().unwrap_or("");
            h.eq_ignore_ascii_case("localhost")
                || h.trim_start_matches('[')
                    .trim_end_matches(']')
                    .parse::<std::net::IpAddr>()
                    .is_ok_and(|ip| ip.is_loopback())
        };
        let issuer = self.issuer.trim();
        let u = reqwest::Url::parse(issuer)
            .with_context(|| format!("[auth.oidc] issuer = {issuer:?} is not a URL"))?;
        if !(u.scheme() == "https" || (u.scheme() == "http" && loopback(&u)))
            || u.query().is_some()
            || u.fragment().is_some()
        {
            bail!(
                "[auth.oidc] issuer = {issuer:?}: an https URL without query (http only on loopback)"
            );
        }
        if self.client_id.trim().is_empty() {
            bail!("[auth.oidc] client_id is required");
        }
        let redirect = match (&self.redirect_url, public_base_url) {
            (Some(r), _) => r.trim().to_owned(),
            (None, Some(base)) => format!("{}{CALLBACK_PATH}", base.trim().trim_end_matches('/')),
            (None, None) => bail!(
                "[auth.oidc] needs redirect_url (…{CALLBACK_PATH}, as registered at the provider) \
                 or [http] public_base_url to derive it from"
            ),
        };
        let r = reqwest::Url::parse(&redirect)
            .with_context(|| format!("[auth.oidc] redirect_url = {redirect:?} is not a URL"))?;
        if !matches!(r.scheme(), "https" | "http") || !r.path().ends_with(CALLBACK_PATH) {
            bail!(
                "[auth.oidc] redirect_url = {redirect:?}: an http(s) URL ending in {CALLBACK_PATH}"
            );
        }
        let mut scopes = Vec::new();
        for sc in &self.scopes {
            let sc = sc.trim();
            if sc.is_empty() || sc.contains(char::is_whitespace) || sc.contains('"') {
                bail!("[auth.oidc] scopes: {sc:?} is not a scope");
            }
            if sc != "openid" && !scopes.iter().any(|x| x == sc) {
                scopes.push(sc.to_owned());
            }
        }
        let mut o = vesalius_auth::oidc::OidcOptions::new(issuer, self.client_id.trim(), &redirect);
        o.client_secret = self.client_secret.clone().filter(|s| !s.is_empty());
        o.scopes = scopes;
        o.link_by_email = self.link_by_email;
        Ok(o)
    }
}

/// `[audit]`
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuditConfig {
    /// Seconds between checkpoints the server signs with the site key (`site.key` in the data
    /// directory) over the audit chain's head, when it advanced (default 3600; 0: only
    /// `vesalius audit checkpoint`). A checkpoint proves the trail up to it existed then: cutting
    /// records off the end is found by `vesalius audit verify` down to the last checkpoint.
    pub checkpoint_interval_secs: u64,
    /// Longest time, ms, a read event (a query, a retrieval) waits to be appended to the trail
    /// together with others in one transaction (default 250; 0: each on its own). Events of data
    /// changes are committed with the change itself and never wait. At most this much of read
    /// events is lost if the process dies; shutdown appends what is waiting.
    pub read_batch_ms: u64,
    /// Forwarding of the audit trail to an audit record repository as DICOM audit messages over
    /// syslog (PS3.15 A.5-A.7); off until `addr` is set.
    pub syslog: SyslogConfig,
}

impl Default for AuditConfig {
    fn default() -> Self {
        AuditConfig {
            checkpoint_interval_secs: 3600,
            read_batch_ms: vesalius_auth::DEFAULT_AUDIT_READ_BATCH_MS,
            syslog: SyslogConfig::default(),
        }
    }
}

/// How audit messages travel to the repository.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SyslogTransport {
    /// RFC 5425: TLS, octet-counted frames (PS3.15 A.6, the profile to use).
    Tls,
    /// RFC 6587 octet counting over plain TCP (labs and a collector on the same host).
    Tcp,
    /// RFC 5426, one datagram per message (PS3.15 A.7; nothing is confirmed: labs only).
    Udp,
}

/// `[audit.syslog]`
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SyslogConfig {
    /// The audit record repository, `host:port` (e.g. `audit.example.org:6514`, the port
    /// registered for syslog over TLS). Default none: nothing is forwarded.
    pub addr: Option<String>,
    /// `tls` (default), `tcp` or `udp`.
    pub transport: SyslogTransport,
    /// PEM bundle of the CA certificates that may sign the repository's certificate; required
    /// with `tls`.
    pub tls_ca: Option<PathBuf>,
    /// The name the repository's certificate must carry; default: the host of `addr`.
    pub tls_server_name: Option<String>,
    /// PEM client certificate chain, for repositories that authenticate senders (with
    /// `tls_key`).
    pub tls_cert: Option<PathBuf>,
    /// PEM private key of `tls_cert`. A path, not a secret: `config dump` shows it.
    pub tls_key: Option<PathBuf>,
    /// Syslog facility, by name (`authpriv`, `auth`, `audit`, `local0`…) or number 0-23.
    /// Default `authpriv` (10, security/authorization, as PS3.15 A.6 asks).
    pub facility: String,
    /// RFC 5424 APP-NAME. Default `vesalius`.
    pub app_name: String,
    /// RFC 5424 HOSTNAME, also our network access point in each message; default: this
    /// machine's host name.
    pub hostname: Option<String>,
    /// `AuditSourceID` of each message; default: `[dicom] ae_title`.
    pub source_id: Option<String>,
    /// `AuditEnterpriseSiteID` of each message (the hospital or site); default: none.
    pub enterprise_site: Option<String>,
    /// Start each message with the UTF-8 byte order mark (RFC 5424 6.4). Default true; turn off
    /// for collectors that keep it in the XML.
    pub bom: bool,
    /// How often to look for new audit records when idle, ms. Default 1000.
    pub poll_ms: u64,
    /// Records read and sent per round. Default 256.
    pub batch: u32,
    /// A sent message counts as delivered once its TCP/TLS connection has stayed open this
    /// long afterwards, ms (syslog has no acknowledgements; see docs/security.md). Default 2000.
    pub confirm_ms: u64,
    /// Longest wait between reconnection attempts, ms (from 500 ms, doubling). Default 30000.
    pub max_backoff_ms: u64,
    /// Time allowed to connect (TCP and TLS handshake) and to write, ms. Default 10000.
    pub timeout_ms: u64,
}

impl Default for SyslogConfig {
    fn default() -> Self {
        SyslogConfig {
            addr: None,
            transport: SyslogTransport::Tls,
            tls_ca: None,
            tls_server_name: None,
            tls_cert: None,
            tls_key: None,
            facility: "authpriv".into(),
            app_name: "vesalius".into(),
            hostname: None,
            source_id: None,
            enterprise_site: None,
            bom: true,
            poll_ms: 1000,
            batch: 256,
            confirm_ms: 2000,
            max_backoff_ms: 30_000,
            timeout_ms: 10_000,
        }
    }
}

impl SyslogConfig {
    /// The repository's `(host, port)` when forwarding is on, with the settings checked.
    pub fn target(&self) -> Result<Option<(String, u16)>> {
        let Some(addr) = self
            .addr
            .as_deref()
            .map(str::trim)
            .filter(|a| !a.is_empty())
        else {
            return Ok(None);
        };
        let bad = || anyhow::anyhow!("[audit.syslog] addr = {addr:?} is not HOST:PORT");
        let (host, port) = addr.rsplit_once(':').ok_or_else(bad)?;
        let host = host
            .strip_prefix('[')
            .and_then(|h| h.strip_suffix(']'))
            .unwrap_or(host);
        let port: u16 = port.parse().map_err(|_| bad())?;
        if host.is_empty() || port == 0 || host.contains(char::is_whitespace) {
            return Err(bad());
        }
        if vesalius_auth::dicom_audit::facility_from_name(&self.facility).is_none() {
            bail!(
                "[audit.syslog] facility = {:?}: a syslog facility name (authpriv, auth, audit, local0-7, …) or 0-23",
                self.facility
            );
        }
        if self.transport == SyslogTransport::Tls && self.tls_ca.is_none() {
            bail!(
                "[audit.syslog] transport = \"tls\" needs tls_ca (the repository's CA certificates)"
            );
        }
        tls_pair(
            "audit.syslog",
            self.tls_cert.as_ref(),
            self.tls_key.as_ref(),
        )?;
        if self.transport != SyslogTransport::Tls
            && (self.tls_cert.is_some() || self.tls_ca.is_some())
        {
            bail!("[audit.syslog] tls_ca, tls_cert and tls_key need transport = \"tls\"");
        }
        if self.batch == 0 || self.poll_ms == 0 || self.timeout_ms == 0 {
            bail!("[audit.syslog] batch, poll_ms and timeout_ms must be positive");
        }
        Ok(Some((host.to_owned(), port)))
    }
}

/// `[log]`
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// `text` or `json` (structured, one object per line).
    pub format: String,
    /// Filter, e.g. `info` or `vesalius=debug,sqlx=warn`.
    pub level: String,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            format: "text".into(),
            level: "info".into(),
        }
    }
}

/// Loads the configuration: defaults, then `file` (if given), then `VESALIUS__…` variables.
pub fn load(file: Option<&Path>, env: impl Iterator<Item = (String, String)>) -> Result<Config> {
    let mut value = toml::Value::try_from(Config::default()).context("default config")?;
    if let Some(path) = file {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        let file_value: toml::Value =
            toml::from_str(&text).with_context(|| format!("parsing {}", path.display()))?;
        merge(&mut value, file_value);
    }
    for (k, v) in env {
        let Some(rest) = k.strip_prefix("VESALIUS__") else {
            continue;
        };
        let path: Vec<String> = rest.split("__").map(|s| s.to_lowercase()).collect();
        if path.len() < 2 {
            bail!("environment variable {k}: expected VESALIUS__SECTION__KEY");
        }
        set_path(&mut value, &path, parse_env_value(&v))
            .with_context(|| format!("environment variable {k}"))?;
    }
    let text = toml::to_string(&value)?;
    let cfg: Config = toml::from_str(&text).context("invalid configuration")?;
    Ok(cfg)
}

fn parse_env_value(v: &str) -> toml::Value {
    // Numbers, booleans and arrays as TOML; anything else as a string.
    toml::from_str::<toml::Table>(&format!("x = {v}"))
        .ok()
        .and_then(|mut t| t.remove("x"))
        .unwrap_or_else(|| toml::Value::String(v.to_owned()))
}

fn set_path(root: &mut toml::Value, path: &[String], v: toml::Value) -> Result<()> {
    let mut cur = root;
    for (i, part) in path.iter().enumerate() {
        let table = cur.as_table_mut().context("not a table")?;
        if i == path.len() - 1 {
            table.insert(part.clone(), v);
            return Ok(());
        }
        cur = table
            .entry(part.clone())
            .or_insert_with(|| toml::Value::Table(Default::default()));
    }
    Ok(())
}

fn merge(base: &mut toml::Value, over: toml::Value) {
    match (base, over) {
        (toml::Value::Table(b), toml::Value::Table(o)) => {
            for (k, v) in o {
                match b.get_mut(&k) {
                    Some(bv) if bv.is_table() && v.is_table() => merge(bv, v),
                    _ => {
                        b.insert(k, v);
                    }
                }
            }
        }
        (b, o) => *b = o,
    }
}

/// The configuration as TOML, secrets redacted (none yet: keys named *secret*, *password* or
/// *key* would be replaced here).
pub fn dump(cfg: &Config) -> Result<String> {
    let mut v = toml::Value::try_from(cfg)?;
    redact(&mut v);
    Ok(toml::to_string_pretty(&v)?)
}

fn redact(v: &mut toml::Value) {
    if let toml::Value::Table(t) = v {
        for (k, val) in t.iter_mut() {
            let k = k.to_lowercase();
            // `tls_key` is the path of a key file, not key material.
            if (k.contains("secret") || k.contains("password") || k.ends_with("_key"))
                && k != "tls_key"
                && val.is_str()
            {
                *val = toml::Value::String("<redacted>".into());
            } else {
                redact(val);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layers_and_unknown_keys() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("v.toml");
        std::fs::write(
            &f,
            "[dicom]\nae_title = \"HUB\"\n[[dicom.nodes]]\nae_title = \"PACS\"\nhost = \"127.0.0.1\"\nport = 104\n",
        )
        .unwrap();
        let env = vec![
            (
                "VESALIUS__HTTP__ADDR".to_string(),
                "127.0.0.1:9999".to_string(),
            ),
            (
                "VESALIUS__LIMITS__MAX_QUERY_RESULTS".to_string(),
                "5".to_string(),
            ),
            ("OTHER".to_string(), "x".to_string()),
        ];
        let c = load(Some(&f), env.into_iter()).unwrap();
        assert_eq!(c.dicom.ae_title, "HUB");
        assert_eq!(c.dicom.nodes[0].port, 104);
        assert_eq!(c.http.addr.port(), 9999);
        assert_eq!(c.limits.max_query_results, 5);
        assert_eq!(c.dicom.addr.port(), 11112);
        std::fs::write(&f, "[dicom]\nae_titel = \"X\"\n").unwrap();
        assert!(load(Some(&f), std::iter::empty()).is_err());
        assert!(dump(&c).unwrap().contains("ae_title = \"HUB\""));
    }

    #[test]
    fn callers_are_seed_entries() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("v.toml");
        std::fs::write(
            &f,
            "[[dicom.callers]]\nae_title = \"CT1\"\norg = \"default\"\nallowed_addrs = [\"127.0.0.1\", \"10.1.0.0/16\"]\nlisten = \"127.0.0.1:11113\"\nmay_query = true\ndescription = \"CT, room 2\"\n[[dicom.callers]]\nae_title = \"US1\"\norg = \"default\"\n",
        )
        .unwrap();
        let c = load(Some(&f), std::iter::empty()).unwrap();
        let e = c.dicom.callers[0].to_entry().unwrap();
        assert_eq!(e.ae_title, "CT1");
        assert_eq!(e.allowed_addrs, vec!["127.0.0.1", "10.1.0.0/16"]);
        assert_eq!(e.listen, Some(("127.0.0.1".into(), 11113)));
        assert!(e.may_query);
        assert_eq!(e.description, "[config] CT, room 2");
        let us = c.dicom.callers[1].to_entry().unwrap();
        assert!(!us.may_query && us.allowed_addrs.is_empty() && us.listen.is_none());
        assert_eq!(us.description, CONFIG_MANAGED);
        assert!(dump(&c).unwrap().contains("[[dicom.callers]]"));
        // From the environment too, as a TOML array of inline tables.
        let env = vec![(
            "VESALIUS__DICOM__CALLERS".to_string(),
            "[{ae_title = \"MR1\", org = \"default\", may_query = true}]".to_string(),
        )];
        let c = load(None, env.into_iter()).unwrap();
        assert_eq!(c.dicom.callers[0].ae_title, "MR1");
        // Mistakes are refused.
        let bad = |ae: &str, addr: &str, listen: Option<&str>| CallerConfig {
            ae_title: ae.into(),
            org: "default".into(),
            allowed_addrs: vec![addr.into()],
            listen: listen.map(Into::into),
            may_query: false,
            description: String::new(),
        };
        assert!(
            bad("ABCDEFGHIJKLMNOPQ", "127.0.0.1", None)
                .to_entry()
                .is_err()
        );
        assert!(bad("A\\B", "127.0.0.1", None).to_entry().is_err());
        assert!(bad("CT1", "not-an-ip", None).to_entry().is_err());
        assert!(bad("CT1", "127.0.0.1", Some("host")).to_entry().is_err());
        std::fs::write(
            &f,
            "[[dicom.callers]]\nae_title = \"CT1\"\norg = \"x\"\nmay_qeury = true\n",
        )
        .unwrap();
        assert!(load(Some(&f), std::iter::empty()).is_err());
    }

    #[test]
    fn tls_files_layer_and_fall_back() {
        let env = |pairs: &[(&str, &str)]| {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect::<Vec<_>>()
                .into_iter()
        };
        let c = load(None, std::iter::empty()).unwrap();
        assert_eq!(c.http_tls().unwrap(), None);
        assert_eq!(c.dicom_tls().unwrap(), None);
        assert_eq!(c.dicom.tls_addr.port(), 2762);
        let c = load(
            None,
            env(&[
                ("VESALIUS__HTTP__TLS_CERT", "/etc/v/cert.pem"),
                ("VESALIUS__HTTP__TLS_KEY", "/etc/v/key.pem"),
            ]),
        )
        .unwrap();
        let http = c.http_tls().unwrap().unwrap();
        assert_eq!(http.key, Path::new("/etc/v/key.pem"));
        // DICOM TLS reuses the HTTPS files unless it has its own.
        assert_eq!(c.dicom_tls().unwrap(), Some(http));
        assert!(dump(&c).unwrap().contains("tls_key = \"/etc/v/key.pem\""));
        let c = load(
            None,
            env(&[
                ("VESALIUS__HTTP__TLS_CERT", "/etc/v/cert.pem"),
                ("VESALIUS__HTTP__TLS_KEY", "/etc/v/key.pem"),
                ("VESALIUS__DICOM__TLS_CERT", "/etc/v/dicom.pem"),
                ("VESALIUS__DICOM__TLS_KEY", "/etc/v/dicom.key"),
            ]),
        )
        .unwrap();
        assert_eq!(
            c.dicom_tls().unwrap().unwrap().cert,
            Path::new("/etc/v/dicom.pem")
        );
        let half = load(None, env(&[("VESALIUS__HTTP__TLS_CERT", "/c.pem")])).unwrap();
        assert!(half.http_tls().is_err());
        let ca_only = load(None, env(&[("VESALIUS__DICOM__TLS_CLIENT_CA", "/ca.pem")])).unwrap();
        assert!(ca_only.dicom_tls().is_err());
    }

    #[test]
    fn audit_syslog_section() {
        let c = load(None, std::iter::empty()).unwrap();
        assert_eq!(c.audit.syslog.target().unwrap(), None);
        assert!(dump(&c).unwrap().contains("[audit.syslog]"));
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("v.toml");
        std::fs::write(
            &f,
            "[audit.syslog]\naddr = \"audit.example.org:6514\"\ntls_ca = \"/etc/v/ca.pem\"\nfacility = \"local4\"\n",
        )
        .unwrap();
        let c = load(Some(&f), std::iter::empty()).unwrap();
        let s = &c.audit.syslog;
        assert_eq!(
            s.target().unwrap(),
            Some(("audit.example.org".into(), 6514))
        );
        assert_eq!(s.transport, SyslogTransport::Tls);
        assert_eq!((s.poll_ms, s.confirm_ms, s.bom), (1000, 2000, true));
        let env = |pairs: &[(&str, &str)]| {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect::<Vec<_>>()
                .into_iter()
        };
        let c = load(
            None,
            env(&[
                ("VESALIUS__AUDIT__SYSLOG__ADDR", "[::1]:514"),
                ("VESALIUS__AUDIT__SYSLOG__TRANSPORT", "udp"),
                ("VESALIUS__AUDIT__SYSLOG__POLL_MS", "100"),
            ]),
        )
        .unwrap();
        assert_eq!(c.audit.syslog.target().unwrap(), Some(("::1".into(), 514)));
        assert_eq!(c.audit.syslog.transport, SyslogTransport::Udp);
        // Mistakes stop the start.
        for bad in [
            vec![("VESALIUS__AUDIT__SYSLOG__ADDR", "no-port")],
            vec![("VESALIUS__AUDIT__SYSLOG__ADDR", "h:0")],
            // TLS without a CA.
            vec![("VESALIUS__AUDIT__SYSLOG__ADDR", "h:6514")],
            vec![
                ("VESALIUS__AUDIT__SYSLOG__ADDR", "h:514"),
                ("VESALIUS__AUDIT__SYSLOG__TRANSPORT", "tcp"),
                ("VESALIUS__AUDIT__SYSLOG__FACILITY", "kitchen"),
            ],
            vec![
                ("VESALIUS__AUDIT__SYSLOG__ADDR", "h:514"),
                ("VESALIUS__AUDIT__SYSLOG__TRANSPORT", "tcp"),
                ("VESALIUS__AUDIT__SYSLOG__TLS_CA", "/ca.pem"),
            ],
            vec![
                ("VESALIUS__AUDIT__SYSLOG__ADDR", "h:6514"),
                ("VESALIUS__AUDIT__SYSLOG__TLS_CA", "/ca.pem"),
                ("VESALIUS__AUDIT__SYSLOG__TLS_CERT", "/c.pem"),
            ],
        ] {
            let c = load(None, env(&bad)).unwrap();
            assert!(c.audit.syslog.target().is_err(), "{bad:?}");
        }
        let bad_transport = load(
            None,
            env(&[("VESALIUS__AUDIT__SYSLOG__TRANSPORT", "pigeon")]),
        );
        assert!(bad_transport.is_err());
    }

    #[test]
    fn oidc_section_is_checked_and_its_secret_redacted() {
        let env = |pairs: &[(&str, &str)]| {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect::<Vec<_>>()
                .into_iter()
        };
        let c = load(None, std::iter::empty()).unwrap();
        assert!(c.auth.oidc.is_none());
        assert!(!dump(&c).unwrap().contains("oidc"));
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("v.toml");
        std::fs::write(
            &f,
            "[http]\npublic_base_url = \"https://pacs.example/\"\n[auth.oidc]\nissuer = \"https://idp.example/realms/h\"\nclient_id = \"vesalius\"\nclient_secret = \"s3cret\"\nscopes = [\"openid\", \"email\"]\n",
        )
        .unwrap();
        let c = load(Some(&f), std::iter::empty()).unwrap();
        let o = c.auth.oidc.as_ref().unwrap();
        assert!(o.link_by_email);
        assert_eq!(o.display_name, "Single sign-on");
        let opts = o.to_options(c.http.public_base_url.as_deref()).unwrap();
        assert_eq!(
            opts.redirect_url,
            "https://pacs.example/api/v1/auth/oidc/callback"
        );
        assert_eq!(opts.scopes, vec!["email"]);
        assert_eq!(opts.client_secret.as_deref(), Some("s3cret"));
        let dumped = dump(&c).unwrap();
        assert!(
            dumped.contains("[auth.oidc]") && !dumped.contains("s3cret"),
            "{dumped}"
        );
        assert!(dumped.contains("client_secret = \"<redacted>\""));
        // From the environment alone; mistakes are refused with the key named.
        let c = load(
            None,
            env(&[
                ("VESALIUS__AUTH__OIDC__ISSUER", "http://127.0.0.1:9000"),
                ("VESALIUS__AUTH__OIDC__CLIENT_ID", "v"),
                ("VESALIUS__AUTH__OIDC__LINK_BY_EMAIL", "false"),
            ]),
        )
        .unwrap();
        let o = c.auth.oidc.clone().unwrap();
        assert!(!o.link_by_email);
        let e = o.to_options(None).unwrap_err().to_string();
        assert!(e.contains("redirect_url"), "{e}");
        let with = |f: &dyn Fn(&mut OidcConfig)| {
            let mut x = o.clone();
            x.redirect_url = Some("http://127.0.0.1:8080/api/v1/auth/oidc/callback".into());
            f(&mut x);
            x.to_options(None)
        };
        assert!(with(&|_| {}).is_ok());
        assert!(with(&|x| x.issuer = "http://idp.example".into()).is_err());
        assert!(with(&|x| x.redirect_url = Some("https://pacs.example/cb".into())).is_err());
        assert!(with(&|x| x.client_id = " ".into()).is_err());
        assert!(with(&|x| x.scopes = vec!["a b".into()]).is_err());
        let unknown = load(None, env(&[("VESALIUS__AUTH__OIDC__ISSUR", "x")]));
        assert!(unknown.is_err());
    }
}
