//! Peer requests against the in-memory registry, directory and audit log.

use std::sync::Arc;
use std::sync::atomic::AtomicI64;

use vesalius_store::audit::{ActorKind, AuditFilter};
use vesalius_store::memory_directory::{MemoryAuditLog, MemoryDirectory};
use vesalius_store::registry::{MemoryRegistry, RegistryChange};
use vesalius_store::{AuditLog, Registry};

use super::*;
use crate::audit_chain::SiteKey;
use crate::authenticator::{AuthOptions, Clock};
use crate::peer::SiteIdentity;
use crate::principal::PrincipalKind;

const T0: i64 = 1_700_000_000_000;
const PATH: &str = "/dicomweb/studies?org=a";
const HERE: Origin<'static> = Origin {
    source: "192.0.2.7:443",
    user_agent: "vesalius/peer",
};

struct Env {
    auth: Authenticator,
    log: Arc<MemoryAuditLog>,
    /// The calling site, registered here as `hub`.
    hub: SiteIdentity,
    /// This site.
    here: SiteIdentity,
}

fn peer(name: &str, key: &str, may_query: bool) -> Peer {
    Peer {
        name: name.into(),
        base_url: "https://hub.example.org".into(),
        public_key: key.into(),
        kind: vesalius_store::registry::PeerKind::Vesalius,
        auth: vesalius_store::registry::PeerAuth::None,
        org: "a".into(),
        remote_org: None,
        may_query,
        description: String::new(),
        managed: false,
        created_ms: 0,
    }
}

async fn env(may_query: bool) -> Env {
    let log = Arc::new(MemoryAuditLog::new());
    let dir = Arc::new(MemoryDirectory::new(log.clone()));
    let registry = Arc::new(MemoryRegistry::new(log.clone()));
    let hub = SiteIdentity::from_site_key("hub", &SiteKey::generate());
    let here = SiteIdentity::from_site_key("clinic", &SiteKey::generate());
    registry
        .apply(
            vec![RegistryChange::PutPeer(peer(
                "hub",
                &hub.public_key(),
                may_query,
            ))],
            vec![],
        )
        .await
        .unwrap();
    let opts = AuthOptions::new().clock(Clock::manual(Arc::new(AtomicI64::new(T0))));
    let auth = Authenticator::new(dir, log.clone(), opts)
        .with_registry(registry)
        .with_peer_identity(here.clone());
    Env {
        auth,
        log,
        hub,
        here,
    }
}

impl Env {
    fn token(&self, by: &SiteIdentity, method: &str, path: &str) -> String {
        by.sign_request(&self.here.public_key(), method, path, None, T0)
    }

    /// (actor name, reason) of every refused peer request, oldest first.
    async fn refusals(&self) -> Vec<(String, String)> {
        let mut r = self
            .log
            .search(&AuditFilter {
                action: Some("login-failed".into()),
                limit: 1000,
                ..Default::default()
            })
            .await
            .unwrap();
        r.reverse();
        r.into_iter()
            .map(|r| {
                assert_eq!(r.event.outcome, Outcome::Denied);
                assert_eq!(r.event.actor.kind, ActorKind::Anonymous);
                assert_eq!(r.event.details["credential"], "peer-token");
                assert_eq!(r.event.source, HERE.source);
                (
                    r.event.actor.name,
                    r.event.details["reason"].as_str().unwrap().to_owned(),
                )
            })
            .collect()
    }
}

#[tokio::test]
async fn a_registered_peer_is_a_caller_in_its_org() {
    let e = env(true).await;
    let t = e.token(&e.hub, "GET", PATH);
    let (caller, req) = e
        .auth
        .authenticate_peer(&t, "GET", PATH, HERE)
        .await
        .unwrap();
    assert_eq!(
        caller.principal.kind,
        PrincipalKind::Peer {
            name: "hub".into(),
            may_query: true,
            for_user: false
        }
    );
    assert_eq!(caller.org(), "a");
    assert_eq!(caller.principal.actor.name, "peer:hub");
    assert_eq!(caller.source, HERE.source);
    assert_eq!(caller.user_agent, HERE.user_agent);
    let access = caller.access.expect("restricted");
    assert_eq!(access.orgs, vec!["a".to_string()]);
    assert_eq!(req.jti, req.claims.jti);
    assert_eq!(Some(req.jti.clone()), crate::peer::token_jti(&t));
    assert!(e.refusals().await.is_empty());

    // Store only: it may see nothing.
    let e = env(false).await;
    let t = e.token(&e.hub, "POST", "/dicomweb/studies");
    let (caller, _) = e
        .auth
        .authenticate_peer(&t, "POST", "/dicomweb/studies", HERE)
        .await
        .unwrap();
    assert!(caller.access.unwrap().is_empty());
}

#[tokio::test]
async fn refusals_are_audited_with_their_code() {
    let e = env(true).await;
    let impostor = SiteIdentity::from_site_key("hub", &SiteKey::generate());
    let stranger = SiteIdentity::from_site_key("stranger", &SiteKey::generate());
    let cases = [
        (e.token(&impostor, "GET", PATH), "wrong-key"),
        (e.token(&stranger, "GET", PATH), "unknown-peer"),
        (
            e.token(&e.hub, "GET", "/dicomweb/studies?org=b"),
            "wrong-request",
        ),
        ("garbage".to_owned(), "malformed"),
    ];
    for (t, code) in &cases {
        let err = e
            .auth
            .authenticate_peer(t, "GET", PATH, HERE)
            .await
            .unwrap_err();
        match err {
            Error::Peer(p) => assert_eq!(p.code(), *code),
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(
        e.refusals().await,
        vec![
            ("hub".to_owned(), "wrong-key".to_owned()),
            ("stranger".to_owned(), "unknown-peer".to_owned()),
            ("hub".to_owned(), "wrong-request".to_owned()),
            (String::new(), "malformed".to_owned()),
        ]
    );
}

#[tokio::test]
async fn without_identity_or_registry_nobody_is_a_peer() {
    let log = Arc::new(MemoryAuditLog::new());
    let dir = Arc::new(MemoryDirectory::new(log.clone()));
    let e = env(true).await;
    let t = e.token(&e.hub, "GET", PATH);
    let bare =
        Authenticator::new(dir, log.clone(), AuthOptions::new()).with_peer_identity(e.here.clone());
    let err = bare
        .authenticate_peer(&t, "GET", PATH, HERE)
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Peer(PeerAuthError::NotConfigured)));
    assert_eq!(err.kind().http_status(), 401);
    assert_eq!(log.head().await.unwrap().map(|h| h.seq), Some(1));
}
