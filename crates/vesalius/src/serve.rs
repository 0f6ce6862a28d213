//! `vesalius serve`: wires the storage backends, the ingest pipeline and the DIMSE and HTTP
//! servers, and runs them until SIGINT/SIGTERM (graceful: in-flight stores finish).
//! With a TLS certificate configured, the HTTP address serves HTTPS only and a DICOM TLS listener
//! runs next to the plain one (see `tls` and docs/security.md).

use std::sync::Arc;

use anyhow::{Context, Result};
use axum::Router;
use axum::response::IntoResponse;
use metrics_exporter_prometheus::PrometheusHandle;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use vesalius_auth::{AuthOptions, Authenticator};
use vesalius_blob_object::ObjectBlobStore;
use vesalius_store::Ingestor;
use vesalius_store::ingest::IngestLimits;
use vesalius_store_sqlite::SqliteIndex;

use crate::config::Config;

/// The opened storage of a data directory.
pub struct Storage {
    /// The ingest pipeline (and through it the index and blobs).
    pub ingestor: Arc<Ingestor>,
    /// Access control over the same database (directory and audit trail).
    pub auth: Arc<Authenticator>,
    /// The site key (`site.key`): signs audit checkpoints, and share-link passes derive from it.
    pub site_key: Arc<vesalius_auth::audit_chain::SiteKey>,
    /// This site's identity in the exchange network (its Ed25519 key derives from the site key).
    pub identity: Arc<vesalius_auth::peer::SiteIdentity>,
    /// The routing observer (its routes are reloaded after changes).
    pub routes: Arc<vesalius_exchange::RouteObserver>,
    /// The transfer engine (run by `serve` when `[exchange] enabled`).
    pub exchange: Arc<vesalius_exchange::Exchange>,
    /// Study events for the users' live stream (`/api/v1/events`, issue 6): fed by ingest and
    /// by the exchange's arrivals.
    pub study_events: Arc<vesalius_api::events::StudyEvents>,
    /// The alert engine (issue 6, `crate::alerts`).
    pub alerts: Arc<vesalius_api::alerts::Alerts>,
}

/// Opens (creating) the data directory: `index.db` and `blobs/`.
pub async fn open_storage(cfg: &Config) -> Result<Storage> {
    let dir = &cfg.storage.data_dir;
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let index = Arc::new(
        SqliteIndex::open(&dir.join("index.db"))
            .await
            .context("opening the index")?,
    );
    let secure = cfg
        .auth
        .secure_cookies
        .unwrap_or(cfg.http_tls().ok().flatten().is_some());
    let site_key = Arc::new(
        vesalius_auth::audit_chain::SiteKey::load_or_create(
            &dir.join(crate::audit_cmd::SITE_KEY_FILE),
        )
        .context("loading the site key")?,
    );
    let identity = vesalius_auth::peer::SiteIdentity::from_site_key(&cfg.site.name, &site_key);
    let registry: Arc<dyn vesalius_store::Registry> = index.clone();
    let auth = Arc::new(
        Authenticator::new(
            index.clone(),
            index.clone(),
            AuthOptions::new()
                .secure_cookies(secure)
                // Issue 6: "Keep me signed in" (at most a year).
                .remember_ttl_ms(i64::from(cfg.auth.remember_days.min(365)) * 86_400_000)
                .audit_read_batch_ms(cfg.audit.read_batch_ms)
                .local_ae_titles([cfg.dicom.ae_title.clone()])
                // Share-link passes survive restarts and hold on every node sharing the site key.
                .link_key(site_key.derive_key("share-link-pass")),
        )
        // Issue 5: peer sites authenticate with requests signed by their keys.
        .with_registry(registry.clone())
        .with_peer_identity(identity.clone()),
    );
    let identity = Arc::new(identity);
    let blobs = ObjectBlobStore::local(&dir.join("blobs")).context("opening the blob store")?;
    let spool = blobs.spool_dir().context("local store has a spool")?;
    let mut limits = IngestLimits {
        max_instance_bytes: cfg.limits.max_instance_bytes,
        min_free_bytes: cfg.limits.min_free_bytes,
        ..Default::default()
    };
    limits.parse.max_value_length = cfg.limits.max_value_length;
    limits.parse.max_kept_bytes = cfg.limits.max_header_bytes;
    let blobs: Arc<dyn vesalius_store::BlobStore> = Arc::new(blobs);
    // Issue 5: routes are evaluated inside the ingest transaction, so a routed instance always
    // has its outbox job.
    let routes = Arc::new(
        vesalius_exchange::RouteObserver::new(registry.clone(), cfg.site.utc_offset_minutes)
            .with_prefetch_delay(std::time::Duration::from_millis(
                cfg.exchange.prefetch_delay_ms,
            )),
    );
    routes.refresh().await.context("loading the routes")?;
    // Issue 6: the web app's worklist hears of stored studies.
    let study_events = Arc::new(vesalius_api::events::StudyEvents::new());
    // Issue 4: every stored study leaves a `store` audit event in its instance's transaction.
    let mut ingestor = Ingestor::new(index.clone(), blobs.clone(), spool.clone(), limits)?
        .with_observer(Arc::new(crate::audit_observer::AuditObserver::new(
            auth.clone(),
        )))
        .with_observer(routes.clone())
        .with_observer(study_events.clone());
    // One flush per acknowledgement (vesalius_store::journal); instances acknowledged before
    // a crash and not yet checkpointed are ingested again before anything is served.
    // Only the process owning the spool (the server; not `admin check` beside it) journals.
    if cfg.storage.journal && ingestor.owns_spool() {
        let journal_config = vesalius_store::journal::JournalConfig {
            files: cfg.storage.journal_files,
            checkpoint_ms: cfg.storage.journal_checkpoint_ms,
        };
        let index: Arc<dyn vesalius_store::Index> = index.clone();
        if let Some(j) = vesalius_store::journal::Journal::open(&spool, index, journal_config)
            .context("opening the ingest journal")?
        {
            let j = Arc::new(j);
            j.spawn_checkpointer();
            ingestor = ingestor.with_journal(j);
        }
    }
    let recovered = ingestor
        .recover()
        .await
        .context("ingesting the journal again")?;
    if recovered != Default::default() {
        tracing::warn!(
            replayed = recovered.replayed,
            discarded = recovered.discarded,
            failed = recovered.failed,
            "ingest journal recovered after an unclean stop"
        );
    }
    let x = &cfg.exchange;
    let ms = std::time::Duration::from_millis;
    let client = vesalius_exchange::PeerClient::new(identity.clone(), ms(x.request_timeout_ms))?
        .content_encoding(x.content_encoding)
        .slow_link_rtt(ms(x.slow_link_rtt_ms));
    let exchange = vesalius_exchange::Exchange::new(
        index.clone(),
        index.clone(),
        registry,
        blobs,
        client,
        vesalius_exchange::ExchangeOptions {
            poll_interval: ms(x.poll_ms),
            lease: ms(x.lease_ms),
            batch_jobs: x.batch_jobs.max(1),
            batch_bytes: x.batch_bytes,
            fast_batch_bytes: x.fast_batch_bytes.max(x.batch_bytes),
            concurrency: x.concurrency.max(1),
            max_attempts: x.max_attempts.max(1),
            backoff_base: ms(x.backoff_base_ms),
            backoff_max: ms(x.backoff_max_ms),
            settle: ms(x.settle_ms),
            ae_title: cfg.dicom.ae_title.clone(),
            move_timeout: ms(x.move_timeout_ms.max(1000)),
            find_timeout: ms(x.find_timeout_ms.max(1000)),
            deid_key: site_key.derive_key("route-deidentification").to_vec(),
            ..Default::default()
        },
    );
    // Issue 6: alerts (rules and deliveries live in the index database).
    let alerts = Arc::new(vesalius_api::alerts::Alerts::new(
        index.clone(),
        auth.directory().clone(),
        study_events.clone(),
        cfg.alerts
            .to_options(cfg, cfg.http.public_base_url.clone().unwrap_or_default())?,
    )?);
    let ingestor = Arc::new(ingestor);
    // Issue 5: C-GET retrievals from DICOM nodes store through the same ingest path.
    exchange.set_ingestor(ingestor.clone());
    Ok(Storage {
        alerts,
        ingestor,
        auth,
        site_key,
        identity,
        routes,
        exchange,
        study_events,
    })
}

/// Announces a step of an outgoing transfer on the users' event stream: only transfers to a
/// peer or a DICOM node (not retrievals or analyses), of an organisation.
fn send_transfer(
    events: &vesalius_api::events::StudyEvents,
    org: String,
    queue: &str,
    study_uid: String,
    state: &str,
) {
    if let Some(("peer" | "node", to)) = queue.split_once(':')
        && !org.is_empty()
    {
        events.send(vesalius_api::events::StudyEvent::Transfer {
            org,
            study_uid,
            to: to.to_owned(),
            state: state.to_owned(),
        });
    }
}

/// Forwards the exchange's "study complete" events (a peer's delivery is whole here) and the
/// progress of this site's outgoing transfers to the users' event stream, until the
/// exchange's broadcast closes.
pub fn forward_arrivals(storage: &Storage) -> tokio::task::JoinHandle<()> {
    use tokio::sync::broadcast::error::RecvError;
    use vesalius_api::events::StudyEvent;
    use vesalius_exchange::ExchangeEvent;
    let mut rx = storage.exchange.subscribe();
    let events = storage.study_events.clone();
    tokio::spawn(async move {
        loop {
            match rx.recv().await {
                Ok(ExchangeEvent::StudyComplete {
                    org,
                    study_uid,
                    from_peer,
                    priority,
                    instances,
                }) => events.send(StudyEvent::Arrival {
                    org,
                    study_uid,
                    from_peer,
                    priority,
                    instances,
                }),
                // Issue 6: this site's outgoing transfers, for the worklist's rows.
                Ok(ExchangeEvent::Delivered {
                    org,
                    queue,
                    study_uid,
                    ..
                }) => send_transfer(&events, org, &queue, study_uid, "sending"),
                Ok(ExchangeEvent::TransferComplete {
                    org,
                    queue,
                    study_uid,
                    ..
                }) => send_transfer(&events, org, &queue, study_uid, "delivered"),
                Ok(ExchangeEvent::Parked {
                    org,
                    queue,
                    study_uid,
                    ..
                }) => send_transfer(&events, org, &queue, study_uid, "stopped"),
                Err(RecvError::Lagged(_)) => {}
                Err(RecvError::Closed) => return,
            }
        }
    })
}

/// Builds the HTTP application: DICOMweb under `/dicom-web`, WADO-URI at `/wado`, the API,
/// health and `/metrics`, and the web app at `/` (issue 6).
pub fn http_app(
    cfg: &Config,
    storage: &Storage,
    metrics: Option<PrometheusHandle>,
    oidc: Option<vesalius_api::oidc::OidcService>,
) -> Router {
    let ingestor = storage.ingestor.clone();
    let auth = storage.auth.clone();
    // Issue 5: the receiving side of the exchange (manifests, pings), for peers.
    let receiver = vesalius_exchange::http::router(vesalius_exchange::http::ReceiverState {
        index: ingestor.index().clone(),
        registry: storage.exchange.registry().clone(),
        identity: storage.identity.clone(),
        events: storage.exchange.events(),
    });
    // Issue 5: transfers and the exchange registry, for administrators.
    let exchange_api = vesalius_exchange::api::ApiState::new(
        storage.exchange.clone(),
        storage.routes.clone(),
        cfg.dicom.ae_title.clone(),
    );
    let web_opts = vesalius_dicomweb::DicomWebOptions {
        org: cfg.storage.org.clone(),
        max_stow_bytes: cfg.limits.max_stow_bytes,
        max_query_results: cfg.limits.max_query_results,
        public_base_url: cfg.http.public_base_url.clone(),
    };
    let mut api_opts = vesalius_api::ApiOptions {
        org: cfg.storage.org.clone(),
        public_base_url: cfg.http.public_base_url.clone(),
        oidc_button: cfg.auth.oidc.as_ref().map(|o| o.display_name.clone()),
        // Issue 6: resumable guest uploads, and the app's upload and share pages.
        upload_dir: Some(cfg.storage.data_dir.join("uploads")),
        app_shell: Some(vesalius_web::shell_page),
        peer_studies: None,
    };
    // Issue 5: federated search (QIDO-RS `scope=network`, /api/v1/search), remote viewing
    // (/dicom-web/peers/{peer}/…) and pulls, for users.
    let federation = vesalius_exchange::federation::Federation::new(
        storage.exchange.clone(),
        ingestor.index().clone(),
        auth.clone(),
        vesalius_exchange::federation::FederationOptions {
            deadline: std::time::Duration::from_millis(cfg.exchange.federation_timeout_ms.max(1)),
            cache_bytes: usize::try_from(cfg.exchange.remote_cache_bytes).unwrap_or(usize::MAX),
            public_base_url: cfg.http.public_base_url.clone(),
            ..Default::default()
        },
    );
    // Issue 6: key images and measurements on a peer's study are stored at the peer.
    api_opts.peer_studies = Some(vesalius_api::annotate::PeerStudiesHook(Arc::new(
        crate::peer_studies::FederatedStudies(federation.clone()),
    )));
    let dicomweb =
        vesalius_dicomweb::router(ingestor.clone(), web_opts.clone(), Some(auth.clone()));
    federation.set_local(dicomweb.clone());
    let dicomweb = dicomweb
        .merge(vesalius_exchange::remote::proxy_router(federation.clone()))
        .layer(axum::middleware::from_fn_with_state(
            federation.clone(),
            vesalius_exchange::federation::network_scope,
        ))
        // Issue 5: a peer's STOW-RS answer (with each instance's SHA-256) is signed.
        .layer(axum::middleware::from_fn_with_state(
            storage.identity.clone(),
            vesalius_exchange::http::sign_peer_answers,
        ));
    let device_cache = vesalius_api::device_cache::DeviceCache {
        auth: auth.clone(),
        ingestor: ingestor.clone(),
    };
    let mut app = Router::new()
        .nest("/dicom-web", dicomweb)
        .merge(vesalius_dicomweb::wado_uri_router(
            ingestor.clone(),
            web_opts,
            Some(auth.clone()),
        ))
        .merge(vesalius_api::access_router(
            auth.clone(),
            ingestor.clone(),
            api_opts.clone(),
        ))
        // Issue 6: users, tokens, organisations, audit search, system (the admin console).
        .merge(vesalius_api::admin::router(
            auth.clone(),
            ingestor.clone(),
            api_opts.clone(),
        ))
        .merge(vesalius_api::router(
            ingestor,
            api_opts,
            Some(auth.audit_log().clone()),
        ))
        .merge(vesalius_api::session::router(auth.clone()))
        .merge(receiver)
        .merge(vesalius_exchange::api::router(exchange_api))
        .merge(vesalius_exchange::remote::pull_router(federation))
        .merge(vesalius_api::events::router(
            storage.study_events.clone(),
            auth.clone(),
        ))
        .merge(vesalius_api::alerts::router(storage.alerts.clone()))
        // Issue 6: the app, and OHIF as a second viewer when `scripts/ohif` prepared it.
        .merge(vesalius_web::router_with(vesalius_web::WebOptions {
            ohif_dir: cfg.web.ohif_dir.clone(),
        }));
    if let Some(svc) = oidc {
        app = app.merge(vesalius_api::oidc::service_router(auth.clone(), svc));
    }
    if let Some(h) = metrics {
        app = app.route(
            "/metrics",
            axum::routing::get(move || {
                let h = h.clone();
                async move { h.render().into_response() }
            }),
        );
    }
    // Issue 4: every request is authenticated before any router sees it.
    let authn = vesalius_api::authn::Authn::new(
        auth,
        vesalius_api::authn::AuthnOptions {
            required: cfg.auth.required,
            // Issue 6: the app's shell and assets hold no data; the API behind them does.
            app_paths: vesalius_web::is_app_path,
        },
    );
    // Issue 6: images an organisation lets its users' browsers keep (inside authentication: it
    // reads the caller).
    let app = app
        .layer(axum::middleware::from_fn_with_state(
            device_cache,
            vesalius_api::device_cache::layer,
        ))
        .layer(axum::middleware::from_fn_with_state(
            authn,
            vesalius_api::authn::authenticate,
        ));
    // HSTS only when this address really speaks TLS.
    let https = cfg.http_tls().ok().flatten().is_some();
    app.layer(axum::middleware::map_response_with_state(
        https,
        crate::tls::security_headers,
    ))
    .layer(axum::middleware::from_fn(close_after_refused_body))
    .layer(compression())
    .layer(tower_http::trace::TraceLayer::new_for_http())
}

/// gzip (RFC 9110 8.4.1.3) for answers that are text to a client that accepts it: DICOM JSON
/// (a 300-image series' metadata is ~1 MB, ~10× smaller coded: what a phone on a slow link
/// waits for before its first image), JSON, the app's scripts and styles. Never for pixel
/// data, DICOM objects, images or zip archives (little to gain for the CPU it costs on a fast
/// link), nor for the event streams (each event must go out at once).
fn compression()
-> tower_http::compression::CompressionLayer<impl tower_http::compression::Predicate> {
    use tower_http::compression::Predicate;
    use tower_http::compression::predicate::{NotForContentType, SizeAbove};
    fn textual(ct: &str) -> bool {
        let ct = ct.trim_start().to_ascii_lowercase();
        (ct.starts_with("application/json")
            || ct.starts_with("application/dicom+json")
            || ct.starts_with("application/manifest+json")
            || ct.starts_with("text/")
            || ct.starts_with("image/svg+xml"))
            && !ct.starts_with("text/event-stream")
    }
    let textual_only = |_: axum::http::StatusCode,
                        _: axum::http::Version,
                        headers: &axum::http::HeaderMap,
                        _: &axum::http::Extensions| {
        headers
            .get(axum::http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(textual)
    };
    tower_http::compression::CompressionLayer::new()
        .gzip(true)
        .compress_when(
            SizeAbove::new(1024)
                .and(NotForContentType::const_new("text/event-stream"))
                .and(textual_only),
        )
}

/// A request refused before its body was read (401, 403, 413…) leaves the rest of that body on
/// the connection; hyper then closes it after the answer, and a client that reuses it for its
/// next request (as HTTP/1.1 keep-alive allows) finds it closed without an answer. Saying
/// `Connection: close` on such answers (RFC 9112 9.6) makes the client open a new one.
async fn close_after_refused_body(
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    use axum::http::{HeaderValue, header};
    let has_body = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
        .is_some_and(|n| n > 0)
        || req.headers().contains_key(header::TRANSFER_ENCODING);
    let mut res = next.run(req).await;
    if has_body && (res.status().is_client_error() || res.status().is_server_error()) {
        res.headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    res
}

/// Runs the servers until a signal arrives.
pub async fn run(cfg: Config, metrics: Option<PrometheusHandle>) -> Result<()> {
    // Certificates are read before anything is bound: a bad file fails the start.
    crate::tls::install_crypto_provider();
    let http_tls = match cfg.http_tls()? {
        Some(f) => Some(crate::tls::server_config(
            f.cert,
            f.key,
            None,
            &[b"http/1.1"],
        )?),
        None => None,
    };
    let client_ca = cfg.dicom.tls_client_ca.as_deref();
    let dicom_tls = match cfg.dicom_tls()? {
        Some(f) => Some(crate::tls::server_config(f.cert, f.key, client_ca, &[])?),
        None => None,
    };
    if let Some(dir) = &cfg.web.ohif_dir {
        anyhow::ensure!(
            dir.join("index.html").is_file(),
            "[web] ohif_dir {}: no OHIF index.html there (run scripts/ohif, which prints the path)",
            dir.display()
        );
    }
    // [audit.syslog]: checked (and its certificates read) before anything is bound.
    let syslog = crate::syslog::ForwarderOptions::from_config(&cfg)?;
    let storage = open_storage(&cfg).await?;
    // Issue 4: OpenID Connect login, checked now and discovered in the background (retried until
    // the provider answers; password login works meanwhile).
    let oidc = match &cfg.auth.oidc {
        Some(o) => {
            let opts = o.to_options(cfg.http.public_base_url.as_deref())?;
            let svc = vesalius_api::oidc::OidcService::pending(&opts.issuer, &o.display_name);
            svc.spawn_discovery(opts);
            Some(svc)
        }
        None => None,
    };
    let dicom = TcpListener::bind(cfg.dicom.addr)
        .await
        .with_context(|| format!("binding DICOM {}", cfg.dicom.addr))?;
    let dicom_tls_listener = match &dicom_tls {
        Some(_) => Some(
            TcpListener::bind(cfg.dicom.tls_addr)
                .await
                .with_context(|| format!("binding DICOM TLS {}", cfg.dicom.tls_addr))?,
        ),
        None => None,
    };
    let http = TcpListener::bind(cfg.http.addr)
        .await
        .with_context(|| format!("binding HTTP {}", cfg.http.addr))?;
    let stats = storage.ingestor.index().stats().await?;
    // Issue 4: an empty directory gets its first organisation and administrator, whose password
    // is set through a one-time link. Made before the addresses are printed: whoever waits for
    // them (a test, a script) may then use the organisation at once.
    let first_start = storage.auth.first_start(None).await?;
    println!("Vesalius {}", env!("CARGO_PKG_VERSION"));
    println!("  data directory : {}", cfg.storage.data_dir.display());
    println!(
        "  index          : {}",
        cfg.storage.data_dir.join("index.db").display()
    );
    println!(
        "  blobs          : {}",
        cfg.storage.data_dir.join("blobs").display()
    );
    println!(
        "  holding        : {} studies, {} instances",
        stats.studies, stats.instances
    );
    println!(
        "  DICOM          : {} AE title {}",
        dicom.local_addr()?,
        cfg.dicom.ae_title
    );
    if let Some(l) = &dicom_tls_listener {
        let clients = if client_ca.is_some() {
            " (client certificates required)"
        } else {
            ""
        };
        println!(
            "  DICOM TLS      : {} AE title {}{clients}",
            l.local_addr()?,
            cfg.dicom.ae_title
        );
    }
    let scheme = if http_tls.is_some() { "https" } else { "http" };
    println!(
        "  DICOMweb       : {scheme}://{}/dicom-web",
        http.local_addr()?
    );
    println!(
        "  API            : {scheme}://{}/api/v1",
        http.local_addr()?
    );
    println!(
        "  metrics        : {scheme}://{}/metrics",
        http.local_addr()?
    );
    println!(
        "  web app        : {scheme}://{}/worklist",
        http.local_addr()?
    );
    if let Some(link) = first_start {
        println!(
            "  first start    : create the first administrator (organisation {:?}) at \
             {scheme}://{}{}",
            link.org,
            http.local_addr()?,
            link.path()
        );
    }
    // Issue 4: the DICOM listeners admit only registered calling AE titles.
    let callers = seed_callers(&cfg, &storage.auth).await?;
    let (seeded, unseeded) = crate::registry_seed::seed_registry(
        &cfg,
        storage.exchange.registry().as_ref(),
        &storage.auth,
    )
    .await?;
    if seeded + unseeded > 0 {
        storage.routes.refresh().await?;
        tracing::info!(
            seeded,
            unseeded,
            "exchange registry seeded from the configuration"
        );
    }
    if callers == 0 {
        println!(
            "  DICOM callers  : none registered: every association is refused ([[dicom.callers]] or `vesalius admin ae add`)"
        );
    } else {
        println!("  DICOM callers  : {callers} AE titles may associate");
    }
    if let Some(o) = &syslog {
        println!("  audit syslog   : {}", o.describe());
    }
    if let Some(s) = &oidc {
        println!(
            "  OpenID Connect : {} ({scheme}://{}{})",
            s.issuer(),
            http.local_addr()?,
            vesalius_api::oidc::LOGIN_PATH
        );
    }
    println!(
        "  site           : {} ({})",
        storage.identity.name(),
        storage.identity.public_key()
    );
    if !cfg.auth.required {
        println!(
            "  WARNING        : auth.required = false: anonymous HTTP requests act as the server"
        );
    }
    let shutdown = CancellationToken::new();
    // Issue 4: periodic checkpoints of the audit chain, signed with the site key, and one more
    // at shutdown.
    let checkpoints = (cfg.audit.checkpoint_interval_secs > 0).then(|| {
        tokio::spawn(sign_checkpoints(
            storage.auth.clone(),
            storage.site_key.clone(),
            std::time::Duration::from_secs(cfg.audit.checkpoint_interval_secs),
            shutdown.clone(),
        ))
    });
    // The audit forwarder stops after the servers, so their last events still go out.
    let syslog_stop = CancellationToken::new();
    let syslog_task = syslog.map(|o| {
        tokio::spawn(crate::syslog::run(
            storage.auth.audit_log().clone(),
            o,
            syslog_stop.clone(),
        ))
    });
    let dimse_opts = vesalius_dimse::DimseServerOptions {
        ae_title: cfg.dicom.ae_title.clone(),
        max_pdu_length: cfg.dicom.max_pdu_length,
        max_associations: cfg.dicom.max_associations,
        nodes: cfg
            .dicom
            .nodes
            .iter()
            .map(|n| vesalius_dimse::DicomNode {
                ae_title: n.ae_title.clone(),
                host: n.host.clone(),
                port: n.port,
            })
            .collect(),
        accept_any_called_ae: cfg.dicom.accept_any_called_ae,
        max_query_results: cfg.limits.max_query_results,
        ..vesalius_dimse::DimseServerOptions::new(storage.auth.clone())
    };
    let dimse_tls = match (dicom_tls_listener, dicom_tls) {
        (Some(listener), Some(config)) => Some(tokio::spawn(vesalius_dimse::run_tls(
            listener,
            tokio_rustls::TlsAcceptor::from(config),
            storage.ingestor.clone(),
            dimse_opts.clone(),
            shutdown.clone(),
        ))),
        _ => None,
    };
    let dimse = tokio::spawn(vesalius_dimse::run(
        dicom,
        storage.ingestor.clone(),
        dimse_opts,
        shutdown.clone(),
    ));
    let app = http_app(&cfg, &storage, metrics, oidc);
    forward_arrivals(&storage);
    // Issue 6: alerts: the exchange's events and the monitor raise them, the engine escalates
    // and delivers them.
    crate::alerts::start(
        &cfg,
        &storage.alerts,
        &storage.exchange,
        &format!("{scheme}://{}", http.local_addr()?),
        &shutdown,
    );
    if cfg.alerts.enabled {
        tokio::spawn(
            crate::alerts::Monitor {
                alerts: storage.alerts.clone(),
                exchange: storage.exchange.clone(),
                data_dir: cfg.storage.data_dir.clone(),
                certificate: cfg.http_tls()?.map(|f| f.cert.to_path_buf()),
                interval: std::time::Duration::from_secs(cfg.alerts.monitor_interval_secs.max(1)),
            }
            .run(shutdown.clone()),
        );
    }
    // Issue 5: the transfer engine drains the outbox to peers and DICOM nodes; route changes
    // made by other nodes or `vesalius admin` are picked up periodically.
    storage.routes.spawn_refresher(
        std::time::Duration::from_millis(cfg.exchange.route_refresh_ms.max(100)),
        shutdown.clone(),
    );
    let exchange_task = cfg
        .exchange
        .enabled
        .then(|| tokio::spawn(storage.exchange.clone().run(shutdown.clone())));
    let sd = shutdown.clone();
    tokio::spawn(async move {
        wait_for_signal().await;
        tracing::info!("shutting down: finishing in-flight work");
        sd.cancel();
    });
    let sd = shutdown.clone();
    let graceful = async move { sd.cancelled().await };
    match http_tls {
        Some(config) => {
            // The peer's address reaches the handlers (and every audit event's `source`).
            let app = app
                .layer(axum::middleware::map_request(crate::tls::tls_peer_address))
                .into_make_service_with_connect_info::<crate::tls::TlsPeer>();
            axum::serve(crate::tls::TlsListener::new(http, config)?, app)
                .with_graceful_shutdown(graceful)
                .await
        }
        None => {
            let app = app.into_make_service_with_connect_info::<std::net::SocketAddr>();
            axum::serve(http, app)
                .with_graceful_shutdown(graceful)
                .await
        }
    }
    .context("HTTP server")?;
    if let Some(t) = checkpoints {
        let _ = t.await;
    }
    if let Some(t) = exchange_task {
        let _ = t.await;
    }
    for task in std::iter::once(dimse).chain(dimse_tls) {
        match task.await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::error!(error = %e, "DICOM server"),
            Err(e) => tracing::error!(error = %e, "DICOM server task"),
        }
    }
    // Acknowledged instances still waiting for their journal checkpoint.
    if let Err(e) = storage.ingestor.checkpoint().await {
        tracing::error!(error = %e, "journal checkpoint at shutdown failed");
    }
    // Read events still waiting for their batch (vesalius_store::audit_batch).
    if let Err(e) = storage.auth.flush_audit().await {
        tracing::error!(error = %e, "audit append at shutdown failed");
    }
    syslog_stop.cancel();
    if let Some(task) = syslog_task {
        match task.await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::error!(error = format!("{e:#}"), "audit syslog"),
            Err(e) => tracing::error!(error = %e, "audit syslog task"),
        }
    }
    tracing::info!("stopped");
    Ok(())
}

/// Seeds `[[dicom.callers]]` into the directory (`config::CallerConfig`): entries that differ
/// are written, entries managed by the configuration that it no longer lists are removed, each
/// change with an `admin-change` audit event (`ae-add`/`ae-remove`, actor `system`/`config`),
/// all in one transaction. A caller of an organisation that does not exist stops the start.
/// Returns how many AE titles the directory holds.
async fn seed_callers(cfg: &Config, auth: &Authenticator) -> Result<usize> {
    use serde_json::json;
    use vesalius_store::directory::DirectoryChange;

    let dir = auth.directory();
    let mut wanted = Vec::new();
    for c in &cfg.dicom.callers {
        let e = c.to_entry()?;
        if wanted
            .iter()
            .any(|w: &vesalius_store::directory::AeEntry| w.ae_title == e.ae_title)
        {
            anyhow::bail!("[[dicom.callers]] lists {} twice", e.ae_title);
        }
        if dir.org(&e.org).await?.is_none() {
            anyhow::bail!(
                "[[dicom.callers]] {}: organisation {:?} does not exist (vesalius admin org create {})",
                e.ae_title,
                e.org,
                e.org
            );
        }
        wanted.push(e);
    }
    let existing = dir.aes().await?;
    let event = |change: &str, org: &str, ae: &str| {
        config_event(
            auth,
            org,
            json!({ "change": change, "ae_title": ae, "managed_by": "config" }),
        )
    };
    let (mut changes, mut events) = (Vec::new(), Vec::new());
    for old in &existing {
        let managed = old.description.starts_with(crate::config::CONFIG_MANAGED);
        if managed && !wanted.iter().any(|w| w.ae_title == old.ae_title) {
            events.push(event("ae-remove", &old.org, &old.ae_title));
            changes.push(DirectoryChange::DeleteAe(old.ae_title.clone()));
        }
    }
    for e in wanted {
        if existing.contains(&e) {
            continue;
        }
        let mut ev = event("ae-add", &e.org, &e.ae_title);
        ev.details["allowed_addrs"] = json!(e.allowed_addrs);
        ev.details["may_query"] = json!(e.may_query);
        events.push(ev);
        changes.push(DirectoryChange::PutAe(e));
    }
    if !changes.is_empty() {
        dir.apply(changes, events)
            .await
            .context("seeding [[dicom.callers]]")?;
    }
    Ok(dir.aes().await?.len())
}

/// An `admin-change` audit event by the configuration file (actor `config`).
pub(crate) fn config_event(
    auth: &Authenticator,
    org: &str,
    details: serde_json::Value,
) -> vesalius_store::audit::AuditEvent {
    use vesalius_store::audit::{Actor, ActorKind, AuditEvent, Outcome};
    AuditEvent {
        time_ms: auth.now_ms(),
        actor: Actor {
            kind: ActorKind::System,
            id: "config".into(),
            name: "config".into(),
            org: String::new(),
            role: String::new(),
        },
        action: "admin-change".into(),
        outcome: Outcome::Success,
        org: org.to_owned(),
        patient: None,
        study_uid: None,
        source: String::new(),
        user_agent: concat!("vesalius/", env!("CARGO_PKG_VERSION")).into(),
        details,
    }
}

async fn wait_for_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(s) => s,
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
            return;
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}

/// Signs a checkpoint of the audit chain every `every` (when its head advanced) and once more
/// when `shutdown` fires. Failures are logged, never fatal: the chain itself stays verifiable.
async fn sign_checkpoints(
    auth: Arc<Authenticator>,
    key: Arc<vesalius_auth::audit_chain::SiteKey>,
    every: std::time::Duration,
    shutdown: CancellationToken,
) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    loop {
        let last = tokio::select! {
            _ = tick.tick() => false,
            _ = shutdown.cancelled() => true,
        };
        match vesalius_auth::audit_chain::checkpoint(auth.audit_log().as_ref(), &key, auth.now_ms())
            .await
        {
            Ok(Some(cp)) => tracing::info!(seq = cp.seq, "audit checkpoint signed"),
            Ok(None) => {}
            Err(e) => tracing::warn!(error = %e, "audit checkpoint"),
        }
        if last {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use axum::body::Body;
    use axum::http::{Request, header};
    use axum::routing::get;
    use tower::ServiceExt;

    /// What the compression layer codes: text to a client that accepts gzip, nothing else.
    #[tokio::test]
    async fn compression_codes_text_only() {
        let big = "x".repeat(4096);
        let app = axum::Router::new()
            .route(
                "/{ct}",
                get(
                    move |axum::extract::Path(ct): axum::extract::Path<String>| {
                        let big = big.clone();
                        async move {
                            let ct = ct.replace('_', "/");
                            ([(header::CONTENT_TYPE, ct)], big)
                        }
                    },
                ),
            )
            .layer(super::compression());
        for (ct, gzip, coded) in [
            ("application_dicom+json", true, true),
            ("application_json", true, true),
            ("text_javascript", true, true),
            ("application_dicom+json", false, false),
            ("application_octet-stream", true, false),
            ("multipart_related", true, false),
            ("image_jpeg", true, false),
            ("application_zip", true, false),
            ("text_event-stream", true, false),
        ] {
            let mut req = Request::get(format!("/{ct}"));
            if gzip {
                req = req.header(header::ACCEPT_ENCODING, "gzip");
            }
            let res = app
                .clone()
                .oneshot(req.body(Body::empty()).unwrap())
                .await
                .unwrap();
            assert_eq!(
                res.headers().get(header::CONTENT_ENCODING).is_some(),
                coded,
                "{ct} (accepts gzip: {gzip})"
            );
        }
    }
}
