//! The authenticator against the in-memory directory and audit log, on a manual clock.

use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

use vesalius_store::audit::{AuditFilter, Outcome};
use vesalius_store::directory::{AeEntry, DirectoryChange, GrantSubject, Membership, Org, Role};
use vesalius_store::memory_directory::{MemoryAuditLog, MemoryDirectory};
use vesalius_store::{AuditLog, Directory};

use super::*;
use crate::password::PasswordParams;
use crate::policy::{Action, Resource, StudyRef};
use crate::principal::PrincipalKind;

const T0: i64 = 1_700_000_000_000;
pub(super) const PW: &str = "correct horse battery";

pub(super) struct Env {
    pub(super) auth: Authenticator,
    pub(super) dir: Arc<MemoryDirectory>,
    pub(super) log: Arc<MemoryAuditLog>,
    pub(super) now: Arc<AtomicI64>,
}

impl Env {
    fn advance(&self, ms: i64) {
        self.now.fetch_add(ms, Ordering::SeqCst);
    }

    /// (action, outcome) of every audit record, oldest first.
    async fn audited(&self) -> Vec<(String, Outcome)> {
        let mut r = self
            .log
            .search(&AuditFilter {
                limit: 100_000,
                ..Default::default()
            })
            .await
            .unwrap();
        r.reverse();
        r.into_iter()
            .map(|r| (r.event.action, r.event.outcome))
            .collect()
    }

    pub(super) async fn count(&self, action: &str, outcome: Outcome) -> usize {
        self.audited()
            .await
            .iter()
            .filter(|(a, o)| a == action && *o == outcome)
            .count()
    }

    pub(super) async fn user(
        &self,
        name: &str,
        org: &str,
        role: Role,
    ) -> vesalius_store::directory::User {
        self.auth
            .create_user(
                &Principal::system(),
                NewUser {
                    username: name,
                    display_name: name,
                    email: "",
                    memberships: &[Membership {
                        org: org.into(),
                        role,
                    }],
                    password: Some(PW),
                    service: false,
                    must_change_password: false,
                },
                Origin::default(),
            )
            .await
            .unwrap()
    }
}

pub(super) const HERE: Origin<'static> = Origin {
    source: "10.0.0.5:40000",
    user_agent: "test",
};

pub(super) async fn env() -> Env {
    let log = Arc::new(MemoryAuditLog::new());
    let dir = Arc::new(MemoryDirectory::new(log.clone()));
    let now = Arc::new(AtomicI64::new(T0));
    let opts = AuthOptions::new()
        .clock(Clock::manual(now.clone()))
        .password_params(PasswordParams::INSECURE_FOR_TESTS)
        .local_ae_titles(["VESALIUS"]);
    let auth = Authenticator::new(dir.clone(), log.clone(), opts);
    let orgs = ["a", "b"].map(|o| {
        DirectoryChange::PutOrg(Org {
            id: o.into(),
            name: o.into(),
            created_ms: 0,
        })
    });
    dir.apply(orgs.to_vec(), vec![]).await.unwrap();
    Env {
        auth,
        dir,
        log,
        now,
    }
}

#[tokio::test]
async fn login_session_csrf_logout() {
    let e = env().await;
    let alice = e.user("Alice", "a", Role::Clinician).await;
    assert_eq!(alice.username, "alice");
    let ok = e.auth.login(" ALICE ", PW, HERE).await.unwrap();
    assert_eq!(ok.session.org, "a");
    assert_eq!(ok.session.expires_ms, T0 + 12 * 3_600_000);
    assert_ne!(
        ok.session.id_hash, ok.cookie_secret,
        "only the hash is stored"
    );
    assert!(
        e.auth
            .session_cookie(&ok.cookie_secret)
            .contains("; Secure; Max-Age=43200")
    );

    let (p, session) = e.auth.from_session(&ok.cookie_secret).await.unwrap();
    assert_eq!(p.role, Some(Role::Clinician));
    assert_eq!(p.actor.name, "alice");
    assert!(matches!(p.kind, PrincipalKind::Session { .. }));
    e.auth.check_csrf(&session, Some(&ok.csrf)).unwrap();
    assert!(e.auth.check_csrf(&session, Some("nope")).is_err());
    assert!(e.auth.check_csrf(&session, None).is_err());
    assert!(e.auth.from_session("forged").await.is_err());

    e.auth.logout(&ok.cookie_secret, HERE).await.unwrap();
    assert!(e.auth.from_session(&ok.cookie_secret).await.is_err());
    e.auth.logout(&ok.cookie_secret, HERE).await.unwrap();
    assert_eq!(e.count("login", Outcome::Success).await, 1);
    assert_eq!(e.count("logout", Outcome::Success).await, 1);
}

#[tokio::test]
async fn keep_me_signed_in_is_a_longer_session_with_a_persistent_cookie() {
    let e = env().await;
    e.user("dora", "a", Role::Clinician).await;
    const DAY: i64 = 86_400_000;
    // Without it: the usual 12 h, and a cookie that ends with the browser.
    let plain = e.auth.login_with("dora", PW, false, HERE).await.unwrap();
    assert!(!plain.remembered);
    assert_eq!(plain.session.expires_ms, T0 + 12 * 3_600_000);
    let c = e.auth.login_cookie(&plain);
    assert!(!c.contains("Max-Age"), "a browser-session cookie: {c}");
    // With it: 30 days (the default), in the cookie too, and audited.
    let kept = e.auth.login_with("dora", PW, true, HERE).await.unwrap();
    assert!(kept.remembered);
    assert_eq!(kept.session.expires_ms, T0 + 30 * DAY);
    let c = e.auth.login_cookie(&kept);
    assert!(c.ends_with("; Max-Age=2592000"), "{c}");
    let logins = e
        .log
        .search(&AuditFilter {
            action: Some("login".into()),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(
        logins
            .iter()
            .filter(|r| r.event.details["remember"] == true)
            .count(),
        1
    );
    // It outlives the 12 h of the other, and ends at its own expiry.
    e.advance(12 * 3_600_000);
    assert!(e.auth.from_session(&plain.cookie_secret).await.is_err());
    assert!(e.auth.from_session(&kept.cookie_secret).await.is_ok());
    e.advance(30 * DAY - 12 * 3_600_000);
    assert!(matches!(
        e.auth.from_session(&kept.cookie_secret).await,
        Err(Error::Expired(_))
    ));
    // A site that offers no such option (0) gives the usual session.
    let log = Arc::new(MemoryAuditLog::new());
    let auth = Authenticator::new(
        e.dir.clone(),
        log,
        AuthOptions::new()
            .clock(Clock::manual(e.now.clone()))
            .password_params(PasswordParams::INSECURE_FOR_TESTS)
            .remember_ttl_ms(0),
    );
    let now = e.now.load(Ordering::SeqCst);
    let off = auth.login_with("dora", PW, true, HERE).await.unwrap();
    assert!(!off.remembered);
    assert_eq!(off.session.expires_ms, now + 12 * 3_600_000);
    assert!(!auth.login_cookie(&off).contains("Max-Age"));
}

#[tokio::test]
async fn sessions_expire_and_follow_the_user() {
    let e = env().await;
    let bob = e.user("bob", "a", Role::Radiographer).await;
    let ok = e.auth.login("bob", PW, HERE).await.unwrap();
    // Role changes apply at once.
    let mut b = bob.clone();
    b.memberships[0].role = Role::Referrer;
    e.dir
        .apply(vec![DirectoryChange::PutUser(b.clone())], vec![])
        .await
        .unwrap();
    let (p, _) = e.auth.from_session(&ok.cookie_secret).await.unwrap();
    assert_eq!(p.role, Some(Role::Referrer));
    // Another organisation only: no longer a member where the session acts.
    b.memberships[0].org = "b".into();
    e.dir
        .apply(vec![DirectoryChange::PutUser(b.clone())], vec![])
        .await
        .unwrap();
    assert!(matches!(
        e.auth.from_session(&ok.cookie_secret).await,
        Err(Error::Revoked("membership"))
    ));
    b.memberships[0].org = "a".into();
    b.disabled = true;
    e.dir
        .apply(vec![DirectoryChange::PutUser(b)], vec![])
        .await
        .unwrap();
    assert!(matches!(
        e.auth.from_session(&ok.cookie_secret).await,
        Err(Error::Revoked("user"))
    ));
    // Disabled users cannot log in either, and are told nothing more than a wrong password.
    assert!(matches!(
        e.auth.login("bob", PW, HERE).await,
        Err(Error::BadCredentials)
    ));

    e.user("carl", "a", Role::Clinician).await;
    let ok = e.auth.login("carl", PW, HERE).await.unwrap();
    e.advance(12 * 3_600_000);
    assert!(matches!(
        e.auth.from_session(&ok.cookie_secret).await,
        Err(Error::Expired(_))
    ));
}

#[tokio::test]
async fn lockout_per_username() {
    let e = env().await;
    e.user("alice", "a", Role::Clinician).await;
    for _ in 0..5 {
        assert!(matches!(
            e.auth.login("alice", "wrong password!", HERE).await,
            Err(Error::BadCredentials)
        ));
    }
    // Locked now, even with the right password.
    let err = e.auth.login("alice", PW, HERE).await.unwrap_err();
    assert!(
        matches!(err, Error::Locked { until_ms } if until_ms == T0 + 15 * 60_000),
        "{err:?}"
    );
    assert_eq!(err.kind(), vesalius_core::ErrorKind::TooManyRequests);
    assert_eq!(e.count("login-failed", Outcome::Denied).await, 5);
    // One lockout event when it locked, one for the refused attempt.
    assert_eq!(e.count("login-locked", Outcome::Denied).await, 2);
    e.advance(15 * 60_000);
    e.auth.login("alice", PW, HERE).await.unwrap();
    // Success resets the count.
    for _ in 0..4 {
        let _ = e.auth.login("alice", "wrong password!", HERE).await;
    }
    e.auth.login("alice", PW, HERE).await.unwrap();
}

#[tokio::test]
async fn unknown_users_look_like_wrong_passwords() {
    let e = env().await;
    e.user("alice", "a", Role::Clinician).await;
    let a = e.auth.login("nobody", PW, HERE).await.unwrap_err();
    let b = e
        .auth
        .login("alice", "not the password", HERE)
        .await
        .unwrap_err();
    assert_eq!(a.to_string(), b.to_string());
    let failed = e
        .log
        .search(&AuditFilter {
            action: Some("login-failed".into()),
            ..Default::default()
        })
        .await
        .unwrap();
    let reasons: Vec<&str> = failed
        .iter()
        .map(|r| r.event.details["reason"].as_str().unwrap())
        .collect();
    assert_eq!(reasons, vec!["wrong-password", "unknown-user"]);
    assert_eq!(failed[1].event.actor.name, "nobody");
    assert_eq!(failed[1].event.source, "10.0.0.5:40000");
}

#[tokio::test]
async fn lockout_per_source_address() {
    let e = env().await;
    e.user("alice", "a", Role::Clinician).await;
    for i in 0..20 {
        let _ = e
            .auth
            .login(&format!("guess{i}"), "password guess", HERE)
            .await;
    }
    assert!(matches!(
        e.auth.login("alice", PW, HERE).await,
        Err(Error::Locked { .. })
    ));
    // From elsewhere the account works.
    e.auth
        .login("alice", PW, Origin::new("10.9.9.9", "test"))
        .await
        .unwrap();
}

#[tokio::test]
async fn password_change_and_must_change() {
    let e = env().await;
    let mut u = e.user("alice", "a", Role::Admin).await;
    u.must_change_password = true;
    e.dir
        .apply(vec![DirectoryChange::PutUser(u.clone())], vec![])
        .await
        .unwrap();
    let ok = e.auth.login("alice", PW, HERE).await.unwrap();
    assert!(ok.must_change_password);
    let (p, _) = e.auth.from_session(&ok.cookie_secret).await.unwrap();
    assert!(p.must_change_password);
    assert!(
        !e.auth
            .authorize(&p, Action::Retrieve, &Resource::study("a", "1"))
            .await
            .unwrap()
            .is_allowed()
    );
    assert!(e.auth.access(&p).await.unwrap().unwrap().is_empty());

    assert!(matches!(
        e.auth
            .change_password(&u.id, "wrong old one", "new password 1", HERE)
            .await,
        Err(Error::BadCredentials)
    ));
    assert!(matches!(
        e.auth.change_password(&u.id, PW, "short", HERE).await,
        Err(Error::WeakPassword(_))
    ));
    assert!(matches!(
        e.auth.change_password(&u.id, PW, PW, HERE).await,
        Err(Error::WeakPassword(_))
    ));
    e.auth
        .change_password(&u.id, PW, "new password 1", HERE)
        .await
        .unwrap();
    assert!(e.auth.login("alice", PW, HERE).await.is_err());
    let ok = e.auth.login("alice", "new password 1", HERE).await.unwrap();
    assert!(!ok.must_change_password);
    let (p, _) = e.auth.from_session(&ok.cookie_secret).await.unwrap();
    assert!(
        e.auth
            .authorize(&p, Action::Retrieve, &Resource::study("a", "1"))
            .await
            .unwrap()
            .is_allowed()
    );
    assert_eq!(e.count("password-change", Outcome::Success).await, 1);
}

#[tokio::test]
async fn hashes_are_upgraded_at_login() {
    let log = Arc::new(MemoryAuditLog::new());
    let dir = Arc::new(MemoryDirectory::new(log.clone()));
    let weak = PasswordParams::INSECURE_FOR_TESTS;
    let stronger = PasswordParams {
        m_cost: 128,
        ..weak
    };
    let mut u = vesalius_store::directory::User {
        id: "u1".into(),
        username: "alice".into(),
        display_name: String::new(),
        email: String::new(),
        memberships: vec![Membership {
            org: "a".into(),
            role: Role::Clinician,
        }],
        password_hash: Some(crate::password::hash(PW, weak).unwrap()),
        oidc: None,
        service: false,
        disabled: false,
        must_change_password: false,
        created_ms: 0,
        site_admin: false,
    };
    dir.apply(vec![DirectoryChange::PutUser(u.clone())], vec![])
        .await
        .unwrap();
    let auth = Authenticator::new(
        dir.clone(),
        log,
        AuthOptions::new().password_params(stronger),
    );
    auth.login("alice", PW, HERE).await.unwrap();
    u = dir.user("u1").await.unwrap().unwrap();
    let h = u.password_hash.unwrap();
    assert!(h.contains("m=128"), "{h}");
    assert!(crate::password::verify(PW, &h));
}

#[tokio::test]
async fn api_tokens() {
    let e = env().await;
    let admin = e.user("root", "a", Role::Admin).await;
    let svc = e.user("ct-script", "a", Role::Service).await;
    let admin_p = Principal::session(&admin.id, "root", "a", Role::Admin);
    let (rec, text) = e
        .auth
        .create_token(
            &admin_p,
            &svc.id,
            "a",
            Role::Service,
            "nightly",
            Some(3_600_000),
            HERE,
        )
        .await
        .unwrap();
    let p = e.auth.from_bearer(&text).await.unwrap();
    assert_eq!(p.role, Some(Role::Service));
    assert!(matches!(&p.kind, PrincipalKind::Token { token_id, .. } if *token_id == rec.id));
    assert!(
        e.auth
            .authorize(&p, Action::Store, &Resource::org("a"))
            .await
            .unwrap()
            .is_allowed()
    );
    assert_eq!(e.count("token-create", Outcome::Success).await, 1);

    // Wrong secret with a right id; malformed text.
    let mut wrong = text.clone();
    wrong.pop();
    wrong.push(if text.ends_with('A') { 'B' } else { 'A' });
    assert!(matches!(
        e.auth.from_bearer(&wrong).await,
        Err(Error::BadCredentials)
    ));
    assert!(matches!(
        e.auth.from_bearer("Bearer x").await,
        Err(Error::MalformedToken)
    ));

    // Expiry.
    e.advance(3_600_000);
    assert!(matches!(
        e.auth.from_bearer(&text).await,
        Err(Error::Expired("token"))
    ));

    // A never-expiring one: revocation, then a demoted user.
    let (_, t2) = e
        .auth
        .create_token(&admin_p, &svc.id, "a", Role::Service, "ci", None, HERE)
        .await
        .unwrap();
    let mut demoted = svc.clone();
    demoted.memberships[0].role = Role::Auditor;
    e.dir
        .apply(vec![DirectoryChange::PutUser(demoted)], vec![])
        .await
        .unwrap();
    assert!(matches!(
        e.auth.from_bearer(&t2).await,
        Err(Error::Revoked("role"))
    ));
    e.dir
        .apply(vec![DirectoryChange::PutUser(svc.clone())], vec![])
        .await
        .unwrap();
    let id2 = crate::token::parse(&t2).unwrap().id.to_owned();
    let svc_p = e.auth.from_bearer(&t2).await.unwrap();
    e.auth.revoke_token(&svc_p, &id2, HERE).await.unwrap();
    assert!(matches!(
        e.auth.from_bearer(&t2).await,
        Err(Error::Revoked("token"))
    ));

    // Others' tokens need ManageOrg; own tokens never exceed the own role.
    let clin = e.user("clin", "a", Role::Clinician).await;
    let clin_p = Principal::session(&clin.id, "clin", "a", Role::Clinician);
    assert!(
        e.auth
            .create_token(&clin_p, &svc.id, "a", Role::Service, "x", None, HERE)
            .await
            .is_err()
    );
    assert!(
        e.auth
            .create_token(&clin_p, &clin.id, "a", Role::Admin, "x", None, HERE)
            .await
            .is_err()
    );
    assert!(
        e.auth
            .create_token(&clin_p, &clin.id, "a", Role::Clinician, "x", None, HERE)
            .await
            .is_ok()
    );
    let other_admin = Principal::session(&admin.id, "root", "b", Role::Admin);
    assert!(
        e.auth
            .create_token(&other_admin, &svc.id, "a", Role::Service, "x", None, HERE)
            .await
            .is_err()
    );
}

#[tokio::test]
async fn dicom_associations() {
    let e = env().await;
    let ae = |t: &str, addrs: &[&str], may_query| {
        DirectoryChange::PutAe(AeEntry {
            ae_title: t.into(),
            org: "a".into(),
            allowed_addrs: addrs.iter().map(|s| s.to_string()).collect(),
            listen: None,
            description: String::new(),
            may_query,
        })
    };
    e.dir
        .apply(
            vec![ae("CT1", &["10.1.0.0/16"], false), ae("PACS", &[], true)],
            vec![],
        )
        .await
        .unwrap();
    let ip = |s: &str| s.parse::<IpAddr>().unwrap();
    let p = e
        .auth
        .from_ae("CT1 ", " VESALIUS", ip("10.1.2.3"))
        .await
        .unwrap();
    assert_eq!(p.org.as_deref(), Some("a"));
    assert!(
        matches!(&p.kind, PrincipalKind::Ae { ae_title, may_query: false } if ae_title == "CT1")
    );
    assert!(
        e.auth
            .from_ae("PACS", "VESALIUS", ip("192.0.2.1"))
            .await
            .is_ok()
    );

    let rj = e
        .auth
        .from_ae("CT1", "VESALIUS", ip("10.2.0.1"))
        .await
        .unwrap_err();
    assert_eq!((rj.result(), rj.source(), rj.reason()), (1, 1, 3));
    let rj = e
        .auth
        .from_ae("MYSTERY", "VESALIUS", ip("10.1.2.3"))
        .await
        .unwrap_err();
    assert_eq!((rj.result(), rj.source(), rj.reason()), (1, 1, 3));
    let rj = e
        .auth
        .from_ae("CT1", "OTHER", ip("10.1.2.3"))
        .await
        .unwrap_err();
    assert_eq!((rj.result(), rj.source(), rj.reason()), (1, 1, 7));
    assert!(
        e.auth
            .from_ae("", "VESALIUS", ip("10.1.2.3"))
            .await
            .is_err()
    );
    assert_eq!(e.count("association-rejected", Outcome::Denied).await, 4);
}

async fn clinician(e: &Env, org: &str) -> Principal {
    let u = e.user(&format!("clin-{org}"), org, Role::Clinician).await;
    Principal::session(&u.id, &u.username, org, Role::Clinician)
}

pub(super) fn study(org: &str, uid: &str) -> StudyRef {
    StudyRef {
        org: org.into(),
        study_uid: uid.into(),
        patient: Some(("HOSP".into(), "P1".into())),
    }
}

#[tokio::test]
async fn share_links() {
    let e = env().await;
    let c = clinician(&e, "a").await;
    let opts = ShareLinkOptions {
        allow_download: false,
        passcode: Some("4711"),
        birth_date: Some("1970-01-31"),
        ttl_ms: 86_400_000,
    };
    // Only studies one may share.
    assert!(
        e.auth
            .create_share_link(&c, &study("b", "2.1"), opts, HERE)
            .await
            .is_err()
    );
    let (link, secret) = e
        .auth
        .create_share_link(&c, &study("a", "1.1"), opts, HERE)
        .await
        .unwrap();
    assert_ne!(link.secret_hash, secret);
    assert_eq!(link.birth_date_check.as_deref(), Some("19700131"));

    let p = e
        .auth
        .share_link_open(&link.id, &secret, Some("4711"), Some("19700131"), HERE)
        .await
        .unwrap();
    assert!(
        matches!(&p.kind, PrincipalKind::ShareLink { study_uid, allow_download: false, .. } if study_uid == "1.1")
    );
    assert!(
        e.auth
            .authorize(&p, Action::Retrieve, &Resource::study("a", "1.1"))
            .await
            .unwrap()
            .is_allowed()
    );
    assert!(
        !e.auth
            .authorize(&p, Action::Export, &Resource::study("a", "1.1"))
            .await
            .unwrap()
            .is_allowed()
    );
    // Opening again within the window is not audited again.
    e.auth
        .share_link_open(&link.id, &secret, Some("4711"), Some("1970/01/31"), HERE)
        .await
        .unwrap();
    assert_eq!(e.count("link-use", Outcome::Success).await, 1);

    // Guessing: wrong passcodes and birth dates count; then locked. Wrong secrets are refused
    // without counting (else anyone knowing the id could lock the patient out).
    for _ in 0..10 {
        assert!(matches!(
            e.auth
                .share_link_open(&link.id, "bad", Some("4711"), Some("19700131"), HERE)
                .await,
            Err(Error::BadCredentials)
        ));
    }
    let wrong: [(Option<&str>, Option<&str>); 5] = [
        (Some("0000"), Some("19700131")),
        (Some("4711"), None),
        (Some("4711"), Some("19700130")),
        (None, Some("19700131")),
        (Some("1234"), Some("19700131")),
    ];
    for (passcode, birth_date) in wrong {
        assert!(matches!(
            e.auth
                .share_link_open(&link.id, &secret, passcode, birth_date, HERE)
                .await,
            Err(Error::BadCredentials)
        ));
    }
    assert!(matches!(
        e.auth
            .share_link_open(&link.id, &secret, Some("4711"), Some("19700131"), HERE)
            .await,
        Err(Error::Locked { .. })
    ));
    // Locked or not, a wrong secret learns nothing.
    assert!(matches!(
        e.auth
            .share_link_open(&link.id, "bad", None, None, HERE)
            .await,
        Err(Error::BadCredentials)
    ));
    assert_eq!(e.count("link-use", Outcome::Denied).await, 17);
    e.advance(15 * 60_000);
    e.auth
        .share_link_open(&link.id, &secret, Some("4711"), Some("19700131"), HERE)
        .await
        .unwrap();

    // Unknown links, revocation, expiry.
    assert!(matches!(
        e.auth
            .share_link_open("nope", &secret, None, None, HERE)
            .await,
        Err(Error::BadCredentials)
    ));
    let plain = ShareLinkOptions {
        ttl_ms: 1000,
        ..Default::default()
    };
    let (l2, s2) = e
        .auth
        .create_share_link(&c, &study("a", "1.2"), plain, HERE)
        .await
        .unwrap();
    e.auth
        .share_link_open(&l2.id, &s2, None, None, HERE)
        .await
        .unwrap();
    e.advance(1000);
    assert!(matches!(
        e.auth.share_link_open(&l2.id, &s2, None, None, HERE).await,
        Err(Error::Expired("link"))
    ));
    let (l3, s3) = e
        .auth
        .create_share_link(
            &c,
            &study("a", "1.3"),
            ShareLinkOptions {
                ttl_ms: 5000,
                ..plain
            },
            HERE,
        )
        .await
        .unwrap();
    e.auth.revoke_share_link(&c, &l3.id, HERE).await.unwrap();
    assert!(matches!(
        e.auth.share_link_open(&l3.id, &s3, None, None, HERE).await,
        Err(Error::Revoked("link"))
    ));
    // Lifetimes are bounded.
    let forever = ShareLinkOptions {
        ttl_ms: 366 * 86_400_000,
        ..plain
    };
    assert!(
        e.auth
            .create_share_link(&c, &study("a", "1.4"), forever, HERE)
            .await
            .is_err()
    );
}

#[tokio::test]
async fn upload_links() {
    let e = env().await;
    let admin = e.user("root", "a", Role::Admin).await;
    let admin_p = Principal::session(&admin.id, "root", "a", Role::Admin);
    let (link, secret) = e
        .auth
        .create_upload_link(
            &admin_p,
            "a",
            "for Dr X, neurosurgery",
            1000,
            86_400_000,
            HERE,
        )
        .await
        .unwrap();
    assert!(matches!(
        e.auth.upload_link_open(&link.id, &secret, 1001, HERE).await,
        Err(Error::TooLarge {
            bytes: 1001,
            remaining: 1000
        })
    ));
    assert!(matches!(
        e.auth.upload_link_open(&link.id, "x", 10, HERE).await,
        Err(Error::BadCredentials)
    ));
    let p = e
        .auth
        .upload_link_open(&link.id, &secret, 600, HERE)
        .await
        .unwrap();
    assert!(
        e.auth
            .authorize(&p, Action::Upload, &Resource::org("a"))
            .await
            .unwrap()
            .is_allowed()
    );
    assert!(
        !e.auth
            .authorize(&p, Action::Store, &Resource::org("a"))
            .await
            .unwrap()
            .is_allowed()
    );
    assert!(
        !e.auth
            .authorize(&p, Action::Query, &Resource::Site)
            .await
            .unwrap()
            .is_allowed()
    );
    e.auth
        .record_upload(&p, 600, Some("1.2.3"), HERE)
        .await
        .unwrap();
    assert!(matches!(
        e.auth.upload_link_open(&link.id, &secret, 600, HERE).await,
        Err(Error::TooLarge { remaining: 400, .. })
    ));
    // The directory refuses going past the limit atomically too.
    let err = e.auth.record_upload(&p, 600, None, HERE).await.unwrap_err();
    assert_eq!(err.kind(), vesalius_core::ErrorKind::PayloadTooLarge);
    assert_eq!(e.count("upload", Outcome::Success).await, 1);
    // Radiographers cannot create upload links.
    let r = e.user("rad", "a", Role::Radiographer).await;
    let rp = Principal::session(&r.id, "rad", "a", Role::Radiographer);
    assert!(
        e.auth
            .create_upload_link(&rp, "a", "x", 10, 1000, HERE)
            .await
            .is_err()
    );
    e.advance(86_400_000);
    assert!(matches!(
        e.auth.upload_link_open(&link.id, &secret, 1, HERE).await,
        Err(Error::Expired("link"))
    ));
}

#[tokio::test]
async fn first_start_and_setup() {
    let log = Arc::new(MemoryAuditLog::new());
    let dir = Arc::new(MemoryDirectory::new(log.clone()));
    let now = Arc::new(AtomicI64::new(T0));
    let opts = AuthOptions::new()
        .clock(Clock::manual(now.clone()))
        .password_params(PasswordParams::INSECURE_FOR_TESTS)
        .secure_cookies(false);
    let auth = Authenticator::new(dir.clone(), log.clone(), opts);

    let first = auth.first_start(None).await.unwrap().unwrap();
    assert_eq!(
        (first.org.as_str(), first.username.as_str()),
        ("default", "admin")
    );
    assert_eq!(first.expires_ms, T0 + 24 * 3_600_000);
    assert!(first.path().starts_with("/setup?token="));
    let admin = dir.user_by_name("admin").await.unwrap().unwrap();
    assert!(admin.password_hash.is_none() && admin.must_change_password);
    // Nothing is open meanwhile: no password logs in.
    assert!(auth.login("admin", "", HERE).await.is_err());
    // The stored setting holds the hash, never the token.
    let setting = dir.setting(SETUP_SETTING).await.unwrap().unwrap();
    assert!(!setting.contains(&first.token));

    // A restart before setup: a fresh token, the old one dead.
    now.fetch_add(1000, Ordering::SeqCst);
    let second = auth.first_start(None).await.unwrap().unwrap();
    assert_eq!(second.user_id, first.user_id);
    assert_eq!(dir.orgs().await.unwrap().len(), 1);
    assert!(matches!(
        auth.complete_setup(&first.token, "a fine password", HERE)
            .await,
        Err(Error::BadCredentials)
    ));
    assert!(matches!(
        auth.complete_setup(&second.token, "short", HERE).await,
        Err(Error::WeakPassword(_))
    ));
    let ok = auth
        .complete_setup(&second.token, "a fine password", HERE)
        .await
        .unwrap();
    assert!(!ok.must_change_password);
    assert!(
        auth.session_cookie(&ok.cookie_secret)
            .ends_with("Path=/; Max-Age=43200")
    );
    let (p, _) = auth.from_session(&ok.cookie_secret).await.unwrap();
    assert_eq!(p.role, Some(Role::Admin));
    assert!(auth.login("admin", "a fine password", HERE).await.is_ok());

    assert!(auth.first_start(None).await.unwrap().is_none());
    assert!(matches!(
        auth.complete_setup(&second.token, "a fine password", HERE)
            .await,
        Err(Error::Conflict(_))
    ));
    let actions: Vec<String> = log
        .search(&AuditFilter::default())
        .await
        .unwrap()
        .into_iter()
        .rev()
        .map(|r| r.event.action)
        .collect();
    assert_eq!(
        actions,
        vec![
            "setup-start",
            "login-failed",
            "setup-start",
            "setup-complete",
            "login",
            "login"
        ]
    );
}

#[tokio::test]
async fn setup_tokens_expire_and_orgs_can_be_named() {
    let log = Arc::new(MemoryAuditLog::new());
    let dir = Arc::new(MemoryDirectory::new(log.clone()));
    let now = Arc::new(AtomicI64::new(T0));
    let opts = AuthOptions::new()
        .clock(Clock::manual(now.clone()))
        .password_params(PasswordParams::INSECURE_FOR_TESTS);
    let auth = Authenticator::new(dir.clone(), log, opts);
    let link = auth.first_start(Some("st-marys")).await.unwrap().unwrap();
    assert_eq!(link.org, "st-marys");
    assert!(dir.org("st-marys").await.unwrap().is_some());
    now.fetch_add(24 * 3_600_000, Ordering::SeqCst);
    assert!(matches!(
        auth.complete_setup(&link.token, "a fine password", HERE)
            .await,
        Err(Error::Expired(_))
    ));
}

/// Issue 6: the app's set-up screen asks what a link is for (without using it), names the
/// first administrator, who is a site administrator; the token is single-use; site
/// administration is given and taken only by those who have it, audited.
#[tokio::test]
async fn setup_names_the_first_administrator_a_site_administrator() {
    let log = Arc::new(MemoryAuditLog::new());
    let dir = Arc::new(MemoryDirectory::new(log.clone()));
    let opts = AuthOptions::new().password_params(PasswordParams::INSECURE_FOR_TESTS);
    let auth = Authenticator::new(dir.clone(), log.clone(), opts);
    let link = auth.first_start(None).await.unwrap().unwrap();
    let info = auth.setup_info(&link.token).await.unwrap();
    assert!(info.first_start && info.username == "admin");
    assert!(matches!(
        auth.setup_info("not-the-token").await,
        Err(Error::BadCredentials)
    ));
    // A bad username is refused and leaves the token usable.
    assert!(matches!(
        auth.complete_setup_as(&link.token, Some("no spaces"), "a fine password", HERE)
            .await,
        Err(Error::BadRequest(_))
    ));
    let ok = auth
        .complete_setup_as(&link.token, Some(" Chief "), "a fine password", HERE)
        .await
        .unwrap();
    assert_eq!(ok.user.username, "chief");
    assert!(ok.user.site_admin);
    let (p, _) = auth.from_session(&ok.cookie_secret).await.unwrap();
    assert!(p.site_admin && p.role == Some(Role::Admin));
    assert!(dir.user_by_name("admin").await.unwrap().is_none());
    // Used: a clear refusal, both when asked and when used again.
    assert!(matches!(
        auth.setup_info(&link.token).await,
        Err(Error::Conflict(_))
    ));
    assert!(matches!(
        auth.complete_setup_as(&link.token, None, "another fine password", HERE)
            .await,
        Err(Error::Conflict(_))
    ));
    // A token of the same user carries no site rights.
    let (_, token) = auth
        .create_token(&p, &ok.user.id, "default", Role::Admin, "t", None, HERE)
        .await
        .unwrap();
    let tp = auth.from_bearer(&token).await.unwrap();
    assert!(!tp.site_admin);
    // An organisation administrator may not name site administrators; the site admin may.
    let bob = auth
        .create_user(
            &p,
            NewUser {
                username: "bob",
                display_name: "Bob",
                email: "",
                memberships: &[Membership {
                    org: "default".into(),
                    role: Role::Admin,
                }],
                password: Some("bob's fine password"),
                service: false,
                must_change_password: false,
            },
            HERE,
        )
        .await
        .unwrap();
    let bob_p = Principal::session(&bob.id, "bob", "default", Role::Admin);
    assert!(matches!(
        auth.set_site_admin(&bob_p, &bob.id, true, HERE).await,
        Err(Error::Forbidden(_))
    ));
    assert!(
        auth.set_site_admin(&p, &bob.id, true, HERE)
            .await
            .unwrap()
            .site_admin
    );
    assert!(matches!(
        auth.set_site_admin(&p, &ok.user.id, false, HERE).await,
        Err(Error::Conflict(_))
    ));
    let changes: Vec<String> = log
        .search(&AuditFilter {
            action: Some("admin-change".into()),
            ..AuditFilter::default()
        })
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.event.details["change"].as_str().unwrap_or("").to_owned())
        .collect();
    assert_eq!(changes, ["site-admin-grant"]);
    let complete = log
        .search(&AuditFilter {
            action: Some("setup-complete".into()),
            ..AuditFilter::default()
        })
        .await
        .unwrap();
    assert_eq!(complete[0].event.details["renamed_from"], "admin");
}

#[tokio::test]
async fn break_glass_is_short_flagged_and_reported_to_the_owner() {
    let e = env().await;
    let c = clinician(&e, "a").await;
    let s = study("b", "2.1");
    let res = Resource::Study(s.clone());
    assert!(
        !e.auth
            .authorize(&c, Action::Retrieve, &res)
            .await
            .unwrap()
            .is_allowed()
    );
    assert!(matches!(
        e.auth.break_glass(&c, &s, "because", HERE).await,
        Err(Error::BadRequest(_))
    ));
    let g = e
        .auth
        .break_glass(
            &c,
            &s,
            "stroke thrombolysis decision, patient transferred",
            HERE,
        )
        .await
        .unwrap();
    assert!(g.break_glass);
    assert_eq!(g.expires_ms, Some(T0 + 4 * 3_600_000));
    let d = e.auth.authorize(&c, Action::Retrieve, &res).await.unwrap();
    assert!(d.is_break_glass(), "{d:?}");
    let acc = e.auth.access(&c).await.unwrap().unwrap();
    assert!(acc.allows("b", "2.1", "HOSP", "P1"));
    // Once open, breaking again is refused (already visible) and audited as refused.
    assert!(
        e.auth
            .break_glass(&c, &s, "stroke thrombolysis decision", HERE)
            .await
            .is_err()
    );

    // Others cannot break glass.
    let r = e.user("rad", "a", Role::Radiographer).await;
    let rp = Principal::session(&r.id, "rad", "a", Role::Radiographer);
    assert!(matches!(
        e.auth
            .break_glass(&rp, &s, "curiosity, nothing more", HERE)
            .await,
        Err(Error::Forbidden(_))
    ));

    // The owner's auditor sees it; the acting org's auditor may not read b's trail.
    let aud_b = e.user("aud-b", "b", Role::Auditor).await;
    let aud_b = Principal::session(&aud_b.id, "aud-b", "b", Role::Auditor);
    let report = e
        .auth
        .privacy_report(&aud_b, "b", None, None, HERE)
        .await
        .unwrap();
    let ok: Vec<_> = report
        .iter()
        .filter(|r| r.event.outcome == Outcome::Success)
        .collect();
    assert_eq!(ok.len(), 1);
    let ev = &ok[0].event;
    assert_eq!((ev.org.as_str(), ev.actor.org.as_str()), ("b", "a"));
    assert_eq!(ev.study_uid.as_deref(), Some("2.1"));
    assert_eq!(ev.details["grant_id"], serde_json::json!(g.id));
    assert_eq!(report.len(), 3, "the refused attempts are reported too");
    let aud_a = e.user("aud-a", "a", Role::Auditor).await;
    let aud_a = Principal::session(&aud_a.id, "aud-a", "a", Role::Auditor);
    assert!(
        e.auth
            .privacy_report(&aud_a, "b", None, None, HERE)
            .await
            .is_err()
    );
    assert!(
        e.auth
            .privacy_report(&aud_a, "a", None, None, HERE)
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(e.count("audit-read", Outcome::Success).await, 2);

    // Who saw the study: the break-glass appears.
    let seen = e
        .auth
        .who_saw(
            &aud_b,
            "b",
            &GrantSubject::Study {
                study_uid: "2.1".into(),
            },
            HERE,
        )
        .await
        .unwrap();
    assert_eq!(seen.len(), 1);

    e.advance(4 * 3_600_000);
    assert!(
        !e.auth
            .authorize(&c, Action::Retrieve, &res)
            .await
            .unwrap()
            .is_allowed()
    );
}

#[tokio::test]
async fn switching_organisation() {
    let e = env().await;
    let mut u = e.user("multi", "a", Role::Clinician).await;
    u.memberships.push(Membership {
        org: "b".into(),
        role: Role::Radiographer,
    });
    e.dir
        .apply(vec![DirectoryChange::PutUser(u.clone())], vec![])
        .await
        .unwrap();
    let ok = e.auth.login("multi", PW, HERE).await.unwrap();
    let (p, _) = e.auth.from_session(&ok.cookie_secret).await.unwrap();
    let pb = e.auth.act_in(&p, "b").await.unwrap();
    assert_eq!(
        (pb.org.as_deref(), pb.role),
        (Some("b"), Some(Role::Radiographer))
    );
    assert!(e.auth.act_in(&p, "c").await.is_err());
    assert!(
        e.auth
            .act_in(&Principal::ae("CT", "a", true), "b")
            .await
            .is_err()
    );
}

#[tokio::test]
async fn users_are_created_by_managers_only() {
    let e = env().await;
    let c = clinician(&e, "a").await;
    let new = NewUser {
        username: "eve",
        display_name: "Eve",
        email: "",
        memberships: &[Membership {
            org: "a".into(),
            role: Role::Admin,
        }],
        password: Some(PW),
        service: false,
        must_change_password: true,
    };
    assert!(e.auth.create_user(&c, new, HERE).await.is_err());
    let admin = e.user("root", "a", Role::Admin).await;
    let ap = Principal::session(&admin.id, "root", "a", Role::Admin);
    let eve = e.auth.create_user(&ap, new, HERE).await.unwrap();
    assert!(eve.must_change_password);
    // Usernames are unique; bad names and weak passwords refused.
    assert!(e.auth.create_user(&ap, new, HERE).await.is_err());
    assert!(
        e.auth
            .create_user(
                &ap,
                NewUser {
                    username: "a b",
                    ..new
                },
                HERE
            )
            .await
            .is_err()
    );
    assert!(
        e.auth
            .create_user(
                &ap,
                NewUser {
                    username: "frank",
                    password: Some("frank"),
                    ..new
                },
                HERE
            )
            .await
            .is_err()
    );
    // Not into another organisation.
    let other = [Membership {
        org: "b".into(),
        role: Role::Clinician,
    }];
    assert!(
        e.auth
            .create_user(
                &ap,
                NewUser {
                    username: "gina",
                    memberships: &other,
                    ..new
                },
                HERE
            )
            .await
            .is_err()
    );
}

#[tokio::test]
async fn password_links_set_a_new_password_once() {
    let e = env().await;
    let bob = e.user("bob", "a", Role::Clinician).await;
    let admin_a = e.user("root-a", "a", Role::Admin).await;
    let admin_b = e.user("root-b", "b", Role::Admin).await;
    let pa = Principal::session(&admin_a.id, "root-a", "a", Role::Admin);
    let pb = Principal::session(&admin_b.id, "root-b", "b", Role::Admin);
    // Only a manager of bob's organisation; never a clinician.
    let c = clinician(&e, "a").await;
    assert!(matches!(
        e.auth.password_link(&c, &bob.id, HERE).await,
        Err(Error::Forbidden(_))
    ));
    assert!(matches!(
        e.auth.password_link(&pb, &bob.id, HERE).await,
        Err(Error::Forbidden(_))
    ));
    assert!(e.auth.login("bob", PW, HERE).await.is_ok());
    let link = e.auth.password_link(&pa, &bob.id, HERE).await.unwrap();
    assert_eq!(link.username, "bob");
    assert!(link.path().starts_with("/setup?token="));
    // The old password stops working at once; the directory keeps the hash, not the token.
    assert!(e.auth.login("bob", PW, HERE).await.is_err());
    let key = format!(
        "{RESET_SETTING_PREFIX}{}",
        crate::secret::sha256_hex(&link.token)
    );
    assert!(
        !e.dir
            .setting(&key)
            .await
            .unwrap()
            .unwrap()
            .contains(&link.token)
    );
    // A wrong token, a weak password: refused, the link still usable.
    assert!(
        e.auth
            .complete_setup("not-the-token", "a fine password", HERE)
            .await
            .is_err()
    );
    assert!(matches!(
        e.auth.complete_setup(&link.token, "short", HERE).await,
        Err(Error::WeakPassword(_))
    ));
    let ok = e
        .auth
        .complete_setup(&link.token, "a new fine password", HERE)
        .await
        .unwrap();
    let (p, _) = e.auth.from_session(&ok.cookie_secret).await.unwrap();
    assert_eq!(p.user_id.as_deref(), Some(bob.id.as_str()));
    assert!(
        e.auth
            .login("bob", "a new fine password", HERE)
            .await
            .is_ok()
    );
    // Once only.
    assert!(
        e.auth
            .complete_setup(&link.token, "another fine password", HERE)
            .await
            .is_err()
    );
    assert_eq!(e.count("password-link", Outcome::Success).await, 1);
    assert_eq!(e.count("password-reset", Outcome::Success).await, 1);
    // Links expire.
    let late = e.auth.password_link(&pa, &bob.id, HERE).await.unwrap();
    e.advance(24 * 3_600_000);
    assert!(matches!(
        e.auth
            .complete_setup(&late.token, "a late fine password", HERE)
            .await,
        Err(Error::Expired(_))
    ));
}
