//! A whole site running in this process (plain HTTP and DICOM on loopback, the transfer engine,
//! route reloading): what `vesalius demo` starts three of, and what multi-site tests start.
//! `serve::run` is the production path (signals, TLS, syslog, checkpoints); this is the same
//! wiring without those, over listeners bound by the caller's configuration.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use vesalius_auth::Origin;
use vesalius_auth::Principal;
use vesalius_auth::authenticator::NewUser;
use vesalius_store::Registry;
use vesalius_store::audit::Outcome;
use vesalius_store::directory::{AeEntry, DirectoryChange, Membership, Org, Role};
use vesalius_store::registry::{Peer, RegistryChange, Route};

use crate::config::Config;
use crate::serve::{Storage, http_app, open_storage};

/// A running site.
pub struct RunningSite {
    /// Its configuration.
    pub cfg: Config,
    /// Its storage, engine and identity.
    pub storage: Storage,
    /// Where its HTTP server listens.
    pub http: SocketAddr,
    /// Where its DICOM server listens.
    pub dicom: SocketAddr,
    shutdown: CancellationToken,
    tasks: Vec<JoinHandle<()>>,
}

impl RunningSite {
    /// Opens the data directory of `cfg` and starts HTTP, DICOM and the transfer engine on the
    /// configured addresses (port 0: any free port).
    pub async fn start(cfg: Config) -> Result<RunningSite> {
        crate::tls::install_crypto_provider();
        let storage = open_storage(&cfg).await?;
        let shutdown = CancellationToken::new();
        let http = TcpListener::bind(cfg.http.addr)
            .await
            .with_context(|| format!("binding HTTP {}", cfg.http.addr))?;
        let dicom = TcpListener::bind(cfg.dicom.addr)
            .await
            .with_context(|| format!("binding DICOM {}", cfg.dicom.addr))?;
        let (http_addr, dicom_addr) = (http.local_addr()?, dicom.local_addr()?);
        let app = http_app(&cfg, &storage, None, None)
            .into_make_service_with_connect_info::<SocketAddr>();
        // Issue 6: arrivals reach the users' event stream (the web app's worklist).
        crate::serve::forward_arrivals(&storage);
        let sd = shutdown.clone();
        let mut tasks = vec![tokio::spawn(async move {
            if let Err(e) = axum::serve(http, app)
                .with_graceful_shutdown(async move { sd.cancelled().await })
                .await
            {
                tracing::error!("HTTP server: {e}");
            }
        })];
        // Issue 6: alerts (rules made through the API) are raised, escalated and delivered.
        tasks.extend(crate::alerts::start(
            &cfg,
            &storage.alerts,
            &storage.exchange,
            &format!("http://{http_addr}"),
            &shutdown,
        ));
        let dimse_opts = vesalius_dimse::DimseServerOptions {
            ae_title: cfg.dicom.ae_title.clone(),
            max_pdu_length: cfg.dicom.max_pdu_length,
            max_associations: cfg.dicom.max_associations,
            accept_any_called_ae: cfg.dicom.accept_any_called_ae,
            max_query_results: cfg.limits.max_query_results,
            ..vesalius_dimse::DimseServerOptions::new(storage.auth.clone())
        };
        let (ingestor, sd) = (storage.ingestor.clone(), shutdown.clone());
        tasks.push(tokio::spawn(async move {
            if let Err(e) = vesalius_dimse::run(dicom, ingestor, dimse_opts, sd).await {
                tracing::error!("DICOM server: {e}");
            }
        }));
        storage.routes.spawn_refresher(
            Duration::from_millis(cfg.exchange.route_refresh_ms.max(100)),
            shutdown.clone(),
        );
        if cfg.exchange.enabled {
            let (ex, sd) = (storage.exchange.clone(), shutdown.clone());
            tasks.push(tokio::spawn(async move { ex.run(sd).await }));
        }
        Ok(RunningSite {
            cfg,
            storage,
            http: http_addr,
            dicom: dicom_addr,
            shutdown,
            tasks,
        })
    }

    /// `http://ADDR`.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.http)
    }

    /// This site as a peer record for another site: deliveries from it land in `local_org`
    /// there.
    pub fn as_peer(&self, local_org: &str, may_query: bool) -> Peer {
        Peer {
            name: self.storage.identity.name().to_owned(),
            base_url: self.base_url(),
            public_key: self.storage.identity.public_key(),
            kind: vesalius_store::registry::PeerKind::Vesalius,
            auth: vesalius_store::registry::PeerAuth::None,
            org: local_org.to_owned(),
            remote_org: None,
            may_query,
            description: String::new(),
            managed: false,
            created_ms: vesalius_exchange::now_ms(),
        }
    }

    fn registry(&self) -> Arc<dyn Registry> {
        self.storage.exchange.registry().clone()
    }

    /// Creates organisation `org` with an administrator `username`/`password`.
    pub async fn create_org_admin(
        &self,
        org: &str,
        name: &str,
        username: &str,
        password: &str,
    ) -> Result<()> {
        let now = vesalius_exchange::now_ms();
        self.storage
            .auth
            .directory()
            .apply(
                vec![DirectoryChange::PutOrg(Org {
                    id: org.into(),
                    name: name.into(),
                    created_ms: now,
                })],
                vec![],
            )
            .await?;
        self.storage
            .auth
            .create_user(
                &Principal::system(),
                NewUser {
                    username,
                    display_name: username,
                    email: "",
                    memberships: &[Membership {
                        org: org.into(),
                        role: Role::Admin,
                    }],
                    password: Some(password),
                    service: false,
                    must_change_password: false,
                },
                Origin::new("", "vesalius-demo"),
            )
            .await?;
        Ok(())
    }

    /// Registers a calling AE title (a scanner) storing into `org`.
    pub async fn add_caller(&self, ae_title: &str, org: &str) -> Result<()> {
        self.storage
            .auth
            .directory()
            .apply(
                vec![DirectoryChange::PutAe(AeEntry {
                    ae_title: ae_title.into(),
                    org: org.into(),
                    allowed_addrs: vec![],
                    listen: None,
                    description: "demo scanner".into(),
                    may_query: false,
                })],
                vec![],
            )
            .await?;
        Ok(())
    }

    /// Registers a peer and routes (audited as the system), then reloads the routes.
    pub async fn put_exchange(&self, peers: Vec<Peer>, routes: Vec<Route>) -> Result<()> {
        let mut changes: Vec<RegistryChange> =
            peers.into_iter().map(RegistryChange::PutPeer).collect();
        changes.extend(routes.into_iter().map(RegistryChange::PutRoute));
        let audit = changes
            .iter()
            .map(|c| {
                vesalius_auth::Caller::system().event(
                    "admin-change",
                    Outcome::Success,
                    "",
                    None,
                    serde_json::json!({ "change": c }),
                )
            })
            .collect();
        self.registry().apply(changes, audit).await?;
        self.storage.routes.refresh().await?;
        Ok(())
    }

    /// Stops the servers and the engine (leases released).
    pub async fn stop(self) {
        self.shutdown.cancel();
        for t in self.tasks {
            let _ = t.await;
        }
    }
}
