//! The site under test: `open_storage` and `http_app` exactly as `vesalius serve` builds them,
//! and the DIMSE server with serve's options, over SQLite and blobs in a temporary directory,
//! both listening on `127.0.0.1:0`. Two organisations, `a` (the principals') and `b` (the
//! other), one user per role in `a`, a study per situation, grants, links and an inbox study
//! in each organisation.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use vesalius_auth::policy::StudyRef;
use vesalius_auth::{Origin, Principal, ShareLinkOptions};
use vesalius_store::audit::{AuditFilter, AuditRecord};
use vesalius_store::directory::{
    DirectoryChange, Grant, GrantSubject, Grantee, Membership, Org, Role, User,
};
use vesalius_store::ingest::IngestContext;
use vesalius_store::model::{IngestOutcome, inbox_org};
use vesalius_store::query::{Access, Key, Level, Matcher, Query, Scope};

use crate::config::Config;
use crate::serve::{Storage, http_app, open_storage};

/// The organisation every principal under test acts in.
pub const ORG_A: &str = "a";
/// The other organisation.
pub const ORG_B: &str = "b";
/// The organisation of a study that exists nowhere.
pub const GHOST_ORG: &str = "ghost";
/// A well-formed Study Instance UID that no organisation holds.
pub const GHOST_UID: &str = "2.25.999999999999999999";
/// Our AE title.
pub const OUR_AE: &str = "VESALIUS";
/// The patient of `a` the matrix merges into: `(issuer, patient id)`.
pub const MERGE_INTO: (&str, &str) = ("MATRIX", "MATRIX-INTO");
const HOUR_MS: i64 = 3_600_000;

/// One synthetic single-image study (DICOM Part 10), as written by `vesalius_synth`.
#[derive(Debug, Clone)]
pub struct Sample {
    /// The file.
    pub path: std::path::PathBuf,
    /// The file's bytes.
    pub bytes: Vec<u8>,
    /// Study Instance UID.
    pub study: String,
    /// Series Instance UID.
    pub series: String,
    /// SOP Instance UID.
    pub sop: String,
}

/// A study placed in an organisation (or in its inbox) for the matrix to aim at.
#[derive(Debug, Clone)]
pub struct Placed {
    /// The owning organisation (`a.inbox` style namespaces for inbox studies).
    pub org: String,
    /// The file, as first stored.
    pub sample: Sample,
    /// A replacement of the same SOP instance (one pixel changed), stored after it so that the
    /// study has a prior version.
    pub replacement: Option<Vec<u8>>,
    /// `(issuer, patient id)` as indexed.
    pub patient: (String, String),
}

impl Placed {
    /// The study as the policy sees it.
    pub fn study_ref(&self) -> StudyRef {
        StudyRef {
            org: self.org.clone(),
            study_uid: self.sample.study.clone(),
            patient: Some(self.patient.clone()),
        }
    }
}

/// The running site.
pub struct Site {
    _dir: tempfile::TempDir,
    /// Storage, directory and audit trail, shared by both servers.
    pub storage: Storage,
    /// `http://127.0.0.1:port`.
    pub base: String,
    /// The DIMSE listener.
    pub dicom: SocketAddr,
    /// An HTTP client that follows no redirects.
    pub http: reqwest::Client,
    shutdown: CancellationToken,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    /// Files not stored anywhere yet, handed out by [`Site::fresh`].
    pool: std::sync::Mutex<Vec<Sample>>,
    /// Study of `a` ("own").
    pub own: Placed,
    /// Study of `b` whose patient is granted to `a` and which is granted to `a`'s referrer.
    pub granted: Placed,
    /// Study of `b` without grants ("other").
    pub other: Placed,
    /// A study in `a`'s quarantine inbox.
    pub inbox_own: Placed,
    /// A study in `b`'s quarantine inbox.
    pub inbox_other: Placed,
    /// The users of `a`, one per role.
    pub users: Vec<(Role, User)>,
}

/// Writes the charset-variety studies of `seed` (four single-image secondary captures, one
/// file per study).
fn synth(dir: &std::path::Path, seed: u64) -> Vec<Sample> {
    let out = dir.join(format!("synth-{seed}"));
    let opts =
        vesalius_synth::SynthOptions::new(seed).kinds([vesalius_synth::SynthKind::CharsetVariety]);
    let report = vesalius_synth::write_studies(&opts, &out).expect("synthetic studies");
    assert_eq!(
        report.files.len(),
        report.studies.len(),
        "one file per study"
    );
    report
        .files
        .iter()
        .zip(&report.studies)
        .map(|(f, study)| {
            let meta = vesalius_dimse::scu::read_file_meta(f).expect("file meta");
            Sample {
                path: f.clone(),
                bytes: std::fs::read(f).expect("synthetic file"),
                study: study.clone(),
                series: String::new(),
                sop: meta.sop_instance,
            }
        })
        .collect()
}

/// Stores `bytes` into `org` as the server itself.
async fn ingest(storage: &Storage, org: &str, bytes: &[u8]) -> IngestOutcome {
    let ing = &storage.ingestor;
    let mut spool = ing.spool().expect("spool");
    spool.write(bytes).expect("spool write");
    let ctx = IngestContext {
        org: org.to_owned(),
        source: "access-matrix".into(),
        ..Default::default()
    };
    ing.ingest(spool.finish().expect("spool"), &ctx)
        .await
        .expect("ingest")
        .outcome
}

/// The instances of `study` in `org`.
async fn instances_in(
    storage: &Storage,
    org: &str,
    study: &str,
) -> Vec<vesalius_store::model::StoredInstance> {
    let scope = Scope {
        access: Some(Access::orgs([org])),
        ..Scope::study(study)
    };
    storage
        .ingestor
        .index()
        .instances(&scope)
        .await
        .expect("instances")
}

/// Stores `sample` into `org` (with a prior version when `versions`) and reads back its
/// series and patient.
async fn place(storage: &Storage, org: &str, mut sample: Sample, versions: bool) -> Placed {
    ingest(storage, org, &sample.bytes).await;
    let replacement = versions.then(|| {
        // The pixel data ends the file: one changed pixel is a new version of the instance.
        let mut b = sample.bytes.clone();
        let last = b.len() - 1;
        b[last] ^= 0x55;
        b
    });
    if let Some(b) = &replacement {
        assert_eq!(ingest(storage, org, b).await, IngestOutcome::Replaced);
    }
    let mut q =
        Query::new(Level::Study).with(Key::StudyInstanceUid, Matcher::Single(sample.study.clone()));
    q.access = Some(Access::orgs([org]));
    let found = storage.ingestor.index().find(&q).await.expect("find");
    let a = found.first().expect("the placed study");
    let patient = (
        a.first_str(Key::IssuerOfPatientId.tag())
            .unwrap_or_default(),
        a.first_str(Key::PatientId.tag()).expect("a patient id"),
    );
    let inst = instances_in(storage, org, &sample.study).await;
    sample.series = inst.first().expect("an instance").series_uid.clone();
    Placed {
        org: org.to_owned(),
        sample,
        replacement,
        patient,
    }
}

impl Site {
    /// Builds and starts the site.
    pub async fn start() -> Site {
        crate::tls::install_crypto_provider();
        let dir = tempfile::tempdir().expect("temporary directory");
        let mut cfg = Config::default();
        cfg.storage.data_dir = dir.path().join("data");
        cfg.limits.min_free_bytes = 0;
        let storage = open_storage(&cfg).await.expect("opening the storage");
        let metrics = metrics_exporter_prometheus::PrometheusBuilder::new()
            .build_recorder()
            .handle();
        let app = http_app(&cfg, &storage, Some(metrics), None);
        let shutdown = CancellationToken::new();
        let http = TcpListener::bind("127.0.0.1:0").await.expect("HTTP port");
        let base = format!("http://{}", http.local_addr().expect("address"));
        let sd = shutdown.clone();
        // As serve::run does on a plain listener: peers' addresses reach the audit events.
        let app = app.into_make_service_with_connect_info::<SocketAddr>();
        let mut tasks = vec![tokio::spawn(async move {
            axum::serve(http, app)
                .with_graceful_shutdown(async move { sd.cancelled().await })
                .await
                .expect("HTTP server");
        })];
        // serve::run's DIMSE options, from the same configuration.
        let dimse_opts = vesalius_dimse::DimseServerOptions {
            ae_title: cfg.dicom.ae_title.clone(),
            max_pdu_length: cfg.dicom.max_pdu_length,
            max_associations: cfg.dicom.max_associations,
            accept_any_called_ae: cfg.dicom.accept_any_called_ae,
            max_query_results: cfg.limits.max_query_results,
            ..vesalius_dimse::DimseServerOptions::new(storage.auth.clone())
        };
        let dimse = TcpListener::bind("127.0.0.1:0").await.expect("DICOM port");
        let dicom = dimse.local_addr().expect("address");
        let (ingestor, sd) = (storage.ingestor.clone(), shutdown.clone());
        tasks.push(tokio::spawn(async move {
            vesalius_dimse::run(dimse, ingestor, dimse_opts, sd)
                .await
                .expect("DICOM server");
        }));

        let mut samples = Vec::new();
        for seed in 1..=12 {
            samples.extend(synth(dir.path(), seed));
        }
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(Duration::from_secs(30))
            .build()
            .expect("HTTP client");
        let now = storage.auth.now_ms();
        let mut changes = vec![
            DirectoryChange::PutOrg(Org {
                id: ORG_A.into(),
                name: "Organisation A".into(),
                created_ms: now,
            }),
            DirectoryChange::PutOrg(Org {
                id: ORG_B.into(),
                name: "Organisation B".into(),
                created_ms: now,
            }),
        ];
        let users: Vec<(Role, User)> = Role::ALL
            .into_iter()
            .map(|role| {
                (
                    role,
                    User {
                        id: uuid::Uuid::new_v4().to_string(),
                        username: format!("a-{}", role.as_str()),
                        display_name: format!("A {}", role.as_str()),
                        email: String::new(),
                        memberships: vec![Membership {
                            org: ORG_A.into(),
                            role,
                        }],
                        password_hash: None,
                        oidc: None,
                        service: role == Role::Service,
                        disabled: false,
                        must_change_password: false,
                        created_ms: now,
                        site_admin: false,
                    },
                )
            })
            .collect();
        changes.extend(
            users
                .iter()
                .map(|(_, u)| DirectoryChange::PutUser(u.clone())),
        );
        storage
            .auth
            .directory()
            .apply(changes, Vec::new())
            .await
            .expect("organisations and users");

        let mut it = samples.into_iter();
        let mut next = || it.next().expect("enough synthetic studies");
        let own = place(&storage, ORG_A, next(), true).await;
        let granted = place(&storage, ORG_B, next(), true).await;
        let other = place(&storage, ORG_B, next(), true).await;
        let inbox_own = place(&storage, &inbox_org(ORG_A), next(), false).await;
        let inbox_other = place(&storage, &inbox_org(ORG_B), next(), false).await;
        // A patient of `a` to merge into.
        let mut into = next();
        into.bytes = vesalius_deid::coerce::coerce_patient_bytes(
            &into.bytes,
            &vesalius_deid::coerce::PatientIdentity {
                issuer: MERGE_INTO.0.into(),
                patient_id: MERGE_INTO.1.into(),
                ..Default::default()
            },
            "ACCESS-MATRIX",
            "20260101000000",
        )
        .expect("a patient to merge into");
        place(&storage, ORG_A, into, false).await;
        let site = Site {
            _dir: dir,
            storage,
            base,
            dicom,
            http,
            shutdown,
            tasks,
            pool: std::sync::Mutex::new(it.collect()),
            own,
            granted,
            other,
            inbox_own,
            inbox_other,
            users,
        };
        // The granted study: its patient to organisation a, the study itself to a's referrer
        // (referrers count only grants to themselves).
        let referrer = site.user(Role::Referrer).id.clone();
        let (issuer, pid) = site.granted.patient.clone();
        let grant = |grantee, subject| Grant {
            id: uuid::Uuid::new_v4().to_string(),
            owner_org: ORG_B.into(),
            grantee,
            subject,
            expires_ms: None,
            break_glass: false,
            reason: "access matrix".into(),
            created_by: "system".into(),
            created_ms: now,
            revoked: false,
        };
        let grants = vec![
            DirectoryChange::PutGrant(grant(
                Grantee::Org(ORG_A.into()),
                GrantSubject::Patient {
                    issuer,
                    patient_id: pid,
                },
            )),
            DirectoryChange::PutGrant(grant(
                Grantee::User(referrer),
                GrantSubject::Study {
                    study_uid: site.granted.sample.study.clone(),
                },
            )),
        ];
        site.storage
            .auth
            .directory()
            .apply(grants, Vec::new())
            .await
            .expect("grants");
        site
    }

    /// Stops both servers.
    pub async fn stop(self) {
        self.shutdown.cancel();
        for t in self.tasks {
            let _ = tokio::time::timeout(Duration::from_secs(5), t).await;
        }
    }

    /// The user of `a` with `role`.
    pub fn user(&self, role: Role) -> &User {
        &self
            .users
            .iter()
            .find(|(r, _)| *r == role)
            .expect("a user per role")
            .1
    }

    /// A synthetic study stored nowhere yet.
    pub fn fresh(&self) -> Sample {
        self.pool
            .lock()
            .expect("pool")
            .pop()
            .expect("the pool of synthetic studies is large enough")
    }

    /// Stores `bytes` into `org` as the server itself.
    pub async fn ingest(&self, org: &str, bytes: &[u8]) -> IngestOutcome {
        ingest(&self.storage, org, bytes).await
    }

    /// The instances of `study` in `org`.
    pub async fn instances_in(
        &self,
        org: &str,
        study: &str,
    ) -> Vec<vesalius_store::model::StoredInstance> {
        instances_in(&self.storage, org, study).await
    }

    /// The organisations holding SOP instance `sop` of `study`.
    pub async fn holders(&self, study: &str, sop: &str) -> Vec<String> {
        let mut orgs: Vec<String> = self
            .storage
            .ingestor
            .index()
            .instances(&Scope::study(study))
            .await
            .expect("instances")
            .into_iter()
            .filter(|i| i.sop_instance_uid == sop)
            .map(|i| i.org)
            .collect();
        orgs.sort();
        orgs.dedup();
        orgs
    }

    /// Puts `p` back as placed (with its prior version) if a deletion or an inbox decision
    /// took it away, and its current version back if a patient change rewrote it.
    pub async fn restore(&self, p: &Placed) {
        let now = self.instances_in(&p.org, &p.sample.study).await;
        let current = p.replacement.as_ref().unwrap_or(&p.sample.bytes);
        if now.is_empty() {
            self.ingest(&p.org, &p.sample.bytes).await;
            if let Some(b) = &p.replacement {
                self.ingest(&p.org, b).await;
            }
        } else if now
            .iter()
            .any(|i| i.sha256 != vesalius_auth::secret::sha256_hex(current))
        {
            self.ingest(&p.org, current).await;
        }
    }

    /// `(issuer, patient id)` of `study` in `org` as the index shows it.
    pub async fn patient_of(&self, org: &str, study: &str) -> Option<(String, String)> {
        let mut q =
            Query::new(Level::Study).with(Key::StudyInstanceUid, Matcher::Single(study.to_owned()));
        q.access = Some(Access::orgs([org]));
        let found = self.storage.ingestor.index().find(&q).await.expect("find");
        let a = found.first()?;
        Some((
            a.first_str(Key::IssuerOfPatientId.tag())
                .unwrap_or_default(),
            a.first_str(Key::PatientId.tag()).unwrap_or_default(),
        ))
    }

    /// A share link on `p` made by the server itself; returns its id and secret.
    pub async fn share_link(&self, p: &Placed, allow_download: bool) -> (String, String) {
        let (link, secret) = self
            .storage
            .auth
            .create_share_link(
                &Principal::system(),
                &p.study_ref(),
                ShareLinkOptions {
                    allow_download,
                    passcode: None,
                    birth_date: None,
                    ttl_ms: HOUR_MS,
                },
                Origin::default(),
            )
            .await
            .expect("share link");
        (link.id, secret)
    }

    /// A guest upload link into `org` made by the server itself; returns its id and secret.
    pub async fn upload_link(&self, org: &str) -> (String, String) {
        let (link, secret) = self
            .storage
            .auth
            .create_upload_link(
                &Principal::system(),
                org,
                "access matrix",
                1 << 30,
                HOUR_MS,
                Origin::default(),
            )
            .await
            .expect("upload link");
        (link.id, secret)
    }

    /// Puts (back) the exchange registry records of `org`, as first made: a peer, a DICOM node
    /// and a disabled route, each named `matrix-<org>`; returns the name.
    pub async fn registry_records(&self, org: &str) -> String {
        use vesalius_store::registry::{DicomNode, Peer, RegistryChange, Route, RouteDestination};
        let name = format!("matrix-{org}");
        let key = vesalius_auth::peer::SiteIdentity::from_site_key(
            &name,
            &vesalius_auth::audit_chain::SiteKey::generate(),
        )
        .public_key();
        let description = "access matrix fixture".to_owned();
        let changes = vec![
            RegistryChange::PutPeer(Peer {
                name: name.clone(),
                base_url: "http://127.0.0.1:1".into(),
                public_key: key,
                kind: vesalius_store::registry::PeerKind::Vesalius,
                auth: vesalius_store::registry::PeerAuth::None,
                org: org.into(),
                remote_org: None,
                may_query: false,
                description: description.clone(),
                managed: false,
                created_ms: 1,
            }),
            RegistryChange::PutNode(DicomNode {
                name: name.clone(),
                ae_title: "MATRIX".into(),
                host: "127.0.0.1".into(),
                port: 1,
                transfer_syntaxes: Vec::new(),
                retrieve: Default::default(),
                query_model: Default::default(),
                org: org.into(),
                description,
                managed: false,
                created_ms: 1,
            }),
            // Disabled: the matrix's own stores must not be routed.
            RegistryChange::PutRoute(Route {
                id: name.clone(),
                name: "access matrix fixture".into(),
                org: org.into(),
                enabled: false,
                order: 0,
                matcher: Default::default(),
                destinations: vec![RouteDestination::Analysis("matrix".into())],
                priority: 0,
                deid: None,
                managed: false,
                created_ms: 1,
            }),
        ];
        self.storage
            .exchange
            .registry()
            .apply(changes, Vec::new())
            .await
            .expect("registry records");
        name
    }

    /// A job of `org` to its node `name` parked after a failed attempt; returns its id.
    pub async fn parked_job(&self, name: &str, org: &str) -> i64 {
        let outbox = self.storage.exchange.outbox();
        let queue = format!("node:{name}");
        let now = self.storage.auth.now_ms();
        let id = outbox
            .enqueue(
                vec![vesalius_store::outbox::NewJob {
                    kind: "transfer".into(),
                    queue: queue.clone(),
                    study_uid: self.own.sample.study.clone(),
                    // Jobs name their (sending) organisation, as routing's do.
                    payload: serde_json::json!({ "org": org }).to_string(),
                    priority: 0,
                    not_before_ms: 0,
                    dedupe_key: None,
                }],
                now,
            )
            .await
            .expect("enqueue")[0];
        // Earlier cells' retried jobs are ready again: park whatever is leased with it.
        for j in outbox
            .lease(&queue, "access-matrix", 10_000, now, 60_000)
            .await
            .expect("lease")
        {
            outbox
                .fail("access-matrix", j.id, "access matrix", now, 1)
                .await
                .expect("fail");
        }
        id
    }

    /// The state of outbox job `id`, if it is still there.
    pub async fn job_state(&self, id: &str) -> Option<vesalius_store::outbox::JobState> {
        let id: i64 = id.parse().ok()?;
        self.storage
            .exchange
            .outbox()
            .jobs(&Default::default())
            .await
            .expect("jobs")
            .into_iter()
            .find(|j| j.id == id)
            .map(|j| j.state)
    }

    /// A fresh clinician of `a` with a password (a target of the admin console's user
    /// routes, issue 6); returns the username.
    pub async fn fresh_user(&self) -> String {
        let name = format!(
            "matrix-target-{}",
            vesalius_auth::secret::random_id(10).to_lowercase()
        );
        self.storage
            .auth
            .create_user(
                &Principal::system(),
                vesalius_auth::authenticator::NewUser {
                    username: &name,
                    display_name: &name,
                    email: "",
                    memberships: &[Membership {
                        org: ORG_A.into(),
                        role: Role::Clinician,
                    }],
                    password: Some("access matrix password"),
                    service: false,
                    must_change_password: false,
                },
                Origin::default(),
            )
            .await
            .expect("fresh user");
        name
    }

    /// A fresh clinician of `a` and `b` (a target of leaving `a`, issue 6); their username.
    pub async fn fresh_user_of_both(&self) -> String {
        let name = self.fresh_user().await;
        let u = self.user_named(&name).await.expect("fresh user");
        self.storage
            .auth
            .set_membership(
                &Principal::system(),
                &u.id,
                ORG_B,
                Role::Clinician,
                Origin::default(),
            )
            .await
            .expect("second membership");
        name
    }

    /// A fresh token of `a`'s clinician (a target of `DELETE /api/v1/tokens/{id}`); its id.
    pub async fn fresh_token(&self) -> String {
        let (rec, _) = self
            .storage
            .auth
            .create_token(
                &Principal::system(),
                &self.user(Role::Clinician).id,
                ORG_A,
                Role::Clinician,
                "matrix target",
                None,
                Origin::default(),
            )
            .await
            .expect("fresh token");
        rec.id
    }

    /// The user named `name`, if any.
    pub async fn user_named(&self, name: &str) -> Option<User> {
        self.storage
            .auth
            .directory()
            .user_by_name(name)
            .await
            .expect("user")
    }

    /// Audit records of `actor_id` (newest first).
    pub async fn audit_of(&self, actor_id: &str) -> Vec<AuditRecord> {
        self.storage
            .auth
            .audit_log()
            .search(&AuditFilter {
                actor_id: Some(actor_id.to_owned()),
                limit: 10_000,
                ..Default::default()
            })
            .await
            .expect("audit search")
    }
}
