//! Shared set-up of the in-process site tests: the configuration of a site on loopback ports
//! over a temporary data directory, its organisations, and users with one membership each.

use vesalius_auth::authenticator::{Authenticator, NewUser};
use vesalius_auth::{Origin, Principal};
use vesalius_store::directory::{DirectoryChange, Membership, Org, Role, User};

use crate::config::Config;

/// A site's configuration: data under `dir`, default organisation `org`, DICOM and HTTP on
/// loopback port 0, no free-space watermark, no exchange workers.
pub(crate) fn config(dir: &std::path::Path, org: &str) -> Config {
    let mut cfg = Config::default();
    cfg.storage.data_dir = dir.join("data");
    cfg.storage.org = org.into();
    cfg.dicom.addr = "127.0.0.1:0".parse().expect("address");
    cfg.http.addr = "127.0.0.1:0".parse().expect("address");
    cfg.limits.min_free_bytes = 0;
    cfg.exchange.enabled = false;
    cfg
}

/// Puts organisations `(id, name)`.
pub(crate) async fn put_orgs(auth: &Authenticator, orgs: &[(&str, &str)]) {
    let changes = orgs
        .iter()
        .map(|(id, name)| {
            DirectoryChange::PutOrg(Org {
                id: (*id).into(),
                name: (*name).into(),
                created_ms: auth.now_ms(),
            })
        })
        .collect();
    auth.directory().apply(changes, vec![]).await.expect("orgs");
}

/// Creates user `name`, a member of `org` as `role`, with `password` (or none).
pub(crate) async fn user(
    auth: &Authenticator,
    name: &str,
    org: &str,
    role: Role,
    password: Option<&str>,
) -> User {
    auth.create_user(
        &Principal::system(),
        NewUser {
            username: name,
            display_name: name,
            email: "",
            memberships: &[Membership {
                org: org.into(),
                role,
            }],
            password,
            service: role == Role::Service,
            must_change_password: false,
        },
        Origin::default(),
    )
    .await
    .expect("user")
}

/// An API token of `user` acting in `org` as `role`: its text.
pub(crate) async fn token(auth: &Authenticator, user: &User, org: &str, role: Role) -> String {
    auth.create_token(
        &Principal::system(),
        &user.id,
        org,
        role,
        "test",
        None,
        Origin::default(),
    )
    .await
    .expect("token")
    .1
}

/// Ingests `files` into organisation `org` through `ingestor` (source `test`).
pub(crate) async fn ingest_files(
    ingestor: &vesalius_store::Ingestor,
    org: &str,
    files: &[std::path::PathBuf],
) {
    for f in files {
        let mut spool = ingestor.spool().expect("spool");
        spool
            .write(&std::fs::read(f).expect("file"))
            .expect("spool");
        let ctx = vesalius_store::ingest::IngestContext {
            org: org.into(),
            source: "test".into(),
            ..Default::default()
        };
        ingestor
            .ingest(spool.finish().expect("spool"), &ctx)
            .await
            .expect("ingest");
    }
}
