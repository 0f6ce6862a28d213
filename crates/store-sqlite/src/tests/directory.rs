//! The SQLite directory against the in-memory reference model: one script of operations runs
//! against both, and every answer (values and error kinds) must be the same. The script also
//! asserts what the answers must be, so both cannot be wrong alike.

use std::fmt::Debug;
use std::sync::Arc;

use vesalius_core::ErrorKind;
use vesalius_store::audit::{
    Actor, ActorKind, AuditEvent, AuditFilter, AuditLog, Checkpoint, GENESIS_HASH, Outcome,
    chain_hash,
};
use vesalius_store::directory::*;
use vesalius_store::error::Result;
use vesalius_store::memory_directory::{MemoryAuditLog, MemoryDirectory};

use crate::SqliteIndex;

/// An audit event for an administrative change.
pub(super) fn admin_event(n: i64, org: &str, action: &str) -> AuditEvent {
    AuditEvent {
        time_ms: 1_000 + n,
        actor: Actor {
            kind: ActorKind::User,
            id: "u-admin".into(),
            name: "admin".into(),
            org: org.into(),
            role: "admin".into(),
        },
        action: action.into(),
        outcome: Outcome::Success,
        org: org.into(),
        patient: None,
        study_uid: None,
        source: "127.0.0.1:40000".into(),
        user_agent: "test".into(),
        details: serde_json::json!({ "n": n }),
    }
}

fn user(id: &str, username: &str, org: &str, role: Role) -> User {
    User {
        id: id.into(),
        username: username.into(),
        display_name: format!("{username} display"),
        email: format!("{username}@example.org"),
        memberships: vec![Membership {
            org: org.into(),
            role,
        }],
        password_hash: Some("$argon2id$v=19$m=19456,t=2,p=1$c2FsdA$aGFzaA".into()),
        oidc: None,
        service: false,
        disabled: false,
        must_change_password: false,
        created_ms: 10,
        site_admin: false,
    }
}

fn token(id: &str, user_id: &str, org: &str, created_ms: i64) -> ApiToken {
    ApiToken {
        id: id.into(),
        secret_hash: format!("sha-{id}"),
        user_id: user_id.into(),
        org: org.into(),
        role: Role::Service,
        name: format!("token {id}"),
        created_ms,
        expires_ms: (created_ms % 2 == 0).then_some(created_ms + 1000),
        revoked: false,
    }
}

fn session(id: &str, user_id: &str) -> Session {
    Session {
        id_hash: id.into(),
        user_id: user_id.into(),
        org: "a".into(),
        csrf: format!("csrf-{id}"),
        created_ms: 5,
        expires_ms: 500,
    }
}

fn grant(id: &str, owner: &str, grantee: Grantee, subject: GrantSubject, t: i64) -> Grant {
    Grant {
        id: id.into(),
        owner_org: owner.into(),
        grantee,
        subject,
        expires_ms: None,
        break_glass: id.ends_with('!'),
        reason: "referral".into(),
        created_by: "u-admin".into(),
        created_ms: t,
        revoked: false,
    }
}

fn upload_link(id: &str, max_bytes: u64) -> UploadLink {
    UploadLink {
        id: id.into(),
        secret_hash: format!("sha-{id}"),
        org: "a".into(),
        label: "for Dr X, neurosurgery".into(),
        max_bytes,
        used_bytes: 0,
        created_by: "u-admin".into(),
        created_ms: 7,
        expires_ms: 9_999,
        revoked: false,
    }
}

/// Records every answer of the script, errors by kind only (messages differ by backend).
#[derive(Default)]
struct Transcript(Vec<String>);

impl Transcript {
    fn note<T: Debug>(&mut self, label: &str, r: &Result<T>) {
        let line = match r {
            Ok(v) => format!("{label}: {v:?}"),
            Err(e) => format!("{label}: error {:?}", e.kind()),
        };
        self.0.push(line);
    }
}

fn kind<T>(r: &Result<T>) -> Option<ErrorKind> {
    r.as_ref().err().map(|e| e.kind())
}

/// The script. Returns the transcript of every answer.
async fn script(dir: &dyn Directory, log: &dyn AuditLog) -> Vec<String> {
    use DirectoryChange as C;
    let mut t = Transcript::default();
    let ev = |n: i64, action: &str| vec![admin_event(n, "a", action)];

    // Organisations and users.
    let mut bob = user("u-bob", "bob", "b", Role::Clinician);
    bob.oidc = Some(("https://idp".into(), "sub-bob".into()));
    bob.memberships.push(Membership {
        org: "a".into(),
        role: Role::Referrer,
    });
    let mut carol = user("u-carol", "carol", "a", Role::Service);
    carol.service = true;
    carol.password_hash = None;
    let r = dir
        .apply(
            vec![
                C::PutOrg(Org {
                    id: "b".into(),
                    name: "B hospital".into(),
                    created_ms: 2,
                }),
                C::PutOrg(Org {
                    id: "a".into(),
                    name: "A hospital".into(),
                    created_ms: 1,
                }),
                C::PutUser(user("u-alice", "alice", "a", Role::Admin)),
                C::PutUser(bob.clone()),
                C::PutUser(carol),
            ],
            ev(1, "admin-change"),
        )
        .await;
    assert!(r.is_ok(), "{r:?}");
    t.note("setup", &r);
    t.note("orgs", &dir.orgs().await);
    t.note("org a", &dir.org("a").await);
    t.note("org none", &dir.org("zz").await);

    // A taken username or OIDC identity fails the whole apply: nothing of it stays.
    let r = dir
        .apply(
            vec![
                C::PutSetting {
                    key: "k".into(),
                    value: "v".into(),
                },
                C::PutUser(user("u-dave", "alice", "a", Role::Clinician)),
            ],
            ev(2, "admin-change"),
        )
        .await;
    assert_eq!(kind(&r), Some(ErrorKind::BadRequest));
    t.note("taken username", &r);
    let mut eve = user("u-eve", "eve", "a", Role::Clinician);
    eve.oidc = bob.oidc.clone();
    let r = dir.apply(vec![C::PutUser(eve)], ev(3, "x")).await;
    assert_eq!(kind(&r), Some(ErrorKind::BadRequest));
    t.note("taken oidc", &r);
    assert_eq!(dir.setting("k").await.unwrap(), None);
    assert_eq!(dir.user("u-dave").await.unwrap(), None);

    // Updating a user by id keeps or changes its username.
    let mut alice = user("u-alice", "alice", "a", Role::Admin);
    alice.display_name = "Alice A.".into();
    alice.must_change_password = true;
    t.note(
        "update alice",
        &dir.apply(vec![C::PutUser(alice.clone())], ev(4, "x")).await,
    );
    bob.username = "robert".into();
    t.note(
        "rename bob",
        &dir.apply(vec![C::PutUser(bob.clone())], vec![]).await,
    );
    assert_eq!(dir.user("u-alice").await.unwrap(), Some(alice.clone()));
    assert_eq!(dir.user_by_name("bob").await.unwrap(), None);
    assert_eq!(
        dir.user_by_name("robert").await.unwrap().map(|u| u.id),
        Some("u-bob".into())
    );
    t.note("users", &dir.users().await);
    t.note(
        "user by oidc",
        &dir.user_by_oidc("https://idp", "sub-bob").await,
    );
    t.note(
        "user by oidc, other",
        &dir.user_by_oidc("https://idp", "x").await,
    );

    // Tokens.
    let r = dir
        .apply(
            vec![
                C::PutToken(token("t1", "u-alice", "a", 30)),
                C::PutToken(token("t2", "u-carol", "a", 20)),
                C::PutToken(token("t3", "u-bob", "b", 10)),
                C::RevokeToken("t1".into()),
            ],
            ev(5, "token-create"),
        )
        .await;
    t.note("tokens put", &r);
    let a_tokens = dir.tokens("a").await;
    assert_eq!(
        a_tokens
            .as_ref()
            .unwrap()
            .iter()
            .map(|t| &t.id[..])
            .collect::<Vec<_>>(),
        ["t2", "t1"]
    );
    assert!(a_tokens.as_ref().unwrap()[1].revoked);
    t.note("tokens a", &a_tokens);
    t.note("token t3", &dir.token("t3").await);
    let r = dir
        .apply(vec![C::RevokeToken("nope".into())], ev(6, "x"))
        .await;
    assert_eq!(kind(&r), Some(ErrorKind::NotFound));
    t.note("revoke missing token", &r);

    // Sessions; deleting one twice is fine.
    t.note(
        "sessions",
        &dir.apply(
            vec![
                C::PutSession(session("s1", "u-alice")),
                C::PutSession(session("s2", "u-bob")),
                C::DeleteSession("s2".into()),
                C::DeleteSession("s2".into()),
            ],
            vec![],
        )
        .await,
    );
    t.note("session s1", &dir.session("s1").await);
    t.note("session s2", &dir.session("s2").await);
    // Issue 6: a session moves to another organisation; a deleted one is not brought back.
    t.note(
        "session s1 to north",
        &dir.apply(
            vec![C::SetSessionOrg {
                id_hash: "s1".into(),
                org: "north".into(),
            }],
            vec![],
        )
        .await,
    );
    assert_eq!(
        dir.session("s1").await.unwrap().map(|s| s.org),
        Some("north".to_owned())
    );
    let r = dir
        .apply(
            vec![C::SetSessionOrg {
                id_hash: "s2".into(),
                org: "north".into(),
            }],
            vec![],
        )
        .await;
    assert_eq!(kind(&r), Some(ErrorKind::NotFound));
    t.note("session s2 moved after its logout", &r);
    assert_eq!(dir.session("s2").await.unwrap(), None);

    // Deleting a user takes their tokens and sessions along.
    t.note(
        "delete alice",
        &dir.apply(vec![C::DeleteUser("u-alice".into())], ev(7, "user-delete"))
            .await,
    );
    assert_eq!(dir.token("t1").await.unwrap(), None);
    assert_eq!(dir.session("s1").await.unwrap(), None);
    assert!(dir.token("t2").await.unwrap().is_some());
    let r = dir
        .apply(vec![C::DeleteUser("u-alice".into())], vec![])
        .await;
    assert_eq!(kind(&r), Some(ErrorKind::NotFound));
    t.note("delete alice again", &r);
    t.note("users after delete", &dir.users().await);

    // Grants.
    let study = |uid: &str| GrantSubject::Study {
        study_uid: uid.into(),
    };
    let patient = GrantSubject::Patient {
        issuer: "HOSP".into(),
        patient_id: "P1".into(),
    };
    t.note(
        "grants",
        &dir.apply(
            vec![
                C::PutGrant(grant("g1", "b", Grantee::Org("a".into()), study("1.2"), 50)),
                C::PutGrant(grant("g2", "a", Grantee::User("u-bob".into()), patient, 40)),
                C::PutGrant(grant(
                    "g3!",
                    "b",
                    Grantee::User("u-carol".into()),
                    study("1.3"),
                    60,
                )),
                C::PutGrant(grant("g0", "c", Grantee::Org("a".into()), study("1.4"), 50)),
                C::RevokeGrant("g1".into()),
            ],
            ev(8, "grant-create"),
        )
        .await,
    );
    let mine = dir.grants_for("a", "u-carol").await;
    assert_eq!(
        mine.as_ref()
            .unwrap()
            .iter()
            .map(|g| &g.id[..])
            .collect::<Vec<_>>(),
        ["g0", "g1", "g3!"]
    );
    t.note("grants for a/carol", &mine);
    t.note("grants for z/bob", &dir.grants_for("z", "u-bob").await);
    t.note("grants of b", &dir.grants_of("b").await);
    let r = dir.apply(vec![C::RevokeGrant("nope".into())], vec![]).await;
    assert_eq!(kind(&r), Some(ErrorKind::NotFound));
    t.note("revoke missing grant", &r);

    // AE titles.
    t.note(
        "aes",
        &dir.apply(
            vec![
                C::PutAe(AeEntry {
                    ae_title: "MR2".into(),
                    org: "a".into(),
                    allowed_addrs: vec![],
                    listen: None,
                    description: String::new(),
                    may_query: false,
                }),
                C::PutAe(AeEntry {
                    ae_title: "CT1".into(),
                    org: "a".into(),
                    allowed_addrs: vec!["10.0.0.0/8".into(), "192.168.1.5".into()],
                    listen: Some(("ct1.local".into(), 104)),
                    description: "CT scanner, room 2".into(),
                    may_query: true,
                }),
                C::PutAe(AeEntry {
                    ae_title: "GONE".into(),
                    org: "b".into(),
                    allowed_addrs: vec![],
                    listen: None,
                    description: String::new(),
                    may_query: false,
                }),
                C::DeleteAe("GONE".into()),
            ],
            ev(9, "ae-create"),
        )
        .await,
    );
    t.note("ae CT1", &dir.ae("CT1").await);
    t.note("aes list", &dir.aes().await);
    assert_eq!(dir.aes().await.unwrap().len(), 2);
    let r = dir.apply(vec![C::DeleteAe("GONE".into())], vec![]).await;
    assert_eq!(kind(&r), Some(ErrorKind::NotFound));
    t.note("delete missing ae", &r);

    // Share and upload links.
    let share = ShareLink {
        id: "sl1".into(),
        secret_hash: "sha-sl1".into(),
        org: "a".into(),
        study_uid: "1.2".into(),
        allow_download: true,
        passcode_hash: Some("$argon2id$pc".into()),
        birth_date_check: Some("19700101".into()),
        created_by: "u-admin".into(),
        created_ms: 3,
        expires_ms: 99,
        revoked: false,
    };
    t.note(
        "links",
        &dir.apply(
            vec![
                C::PutShareLink(share.clone()),
                C::PutShareLink(ShareLink {
                    id: "sl0".into(),
                    passcode_hash: None,
                    birth_date_check: None,
                    ..share
                }),
                C::RevokeShareLink("sl1".into()),
                C::PutUploadLink(upload_link("ul1", 1000)),
                C::AddUploadBytes {
                    id: "ul1".into(),
                    bytes: 600,
                },
            ],
            ev(10, "share-create"),
        )
        .await,
    );
    t.note("share links a", &dir.share_links("a").await);
    t.note("share link sl1", &dir.share_link("sl1").await);
    let r = dir
        .apply(
            vec![C::AddUploadBytes {
                id: "ul1".into(),
                bytes: 401,
            }],
            ev(11, "upload"),
        )
        .await;
    assert_eq!(kind(&r), Some(ErrorKind::PayloadTooLarge));
    t.note("upload over the limit", &r);
    let r = dir
        .apply(
            vec![C::AddUploadBytes {
                id: "ul1".into(),
                bytes: 400,
            }],
            ev(12, "upload"),
        )
        .await;
    t.note("upload to the limit", &r);
    assert_eq!(
        dir.upload_link("ul1").await.unwrap().unwrap().used_bytes,
        1000
    );
    let r = dir
        .apply(
            vec![C::AddUploadBytes {
                id: "nope".into(),
                bytes: 1,
            }],
            vec![],
        )
        .await;
    assert_eq!(kind(&r), Some(ErrorKind::NotFound));
    t.note("upload to a missing link", &r);
    t.note(
        "revoke upload link",
        &dir.apply(vec![C::RevokeUploadLink("ul1".into())], vec![])
            .await,
    );
    t.note("upload links a", &dir.upload_links("a").await);
    t.note("upload links b", &dir.upload_links("b").await);

    // Settings; deleting twice is fine.
    for (label, changes) in [
        (
            "setting put",
            vec![C::PutSetting {
                key: "setup-token-hash".into(),
                value: "h1".into(),
            }],
        ),
        (
            "setting overwrite",
            vec![C::PutSetting {
                key: "setup-token-hash".into(),
                value: "h2".into(),
            }],
        ),
    ] {
        t.note(label, &dir.apply(changes, vec![]).await);
    }
    t.note("setting", &dir.setting("setup-token-hash").await);
    assert_eq!(
        dir.setting("setup-token-hash").await.unwrap(),
        Some("h2".into())
    );
    t.note(
        "setting delete twice",
        &dir.apply(
            vec![
                C::DeleteSetting("setup-token-hash".into()),
                C::DeleteSetting("setup-token-hash".into()),
            ],
            vec![],
        )
        .await,
    );
    t.note("setting gone", &dir.setting("setup-token-hash").await);

    // Atomicity: the last change fails, so the first two never happened.
    let r = dir
        .apply(
            vec![
                C::PutOrg(Org {
                    id: "c".into(),
                    name: "C".into(),
                    created_ms: 3,
                }),
                C::PutSetting {
                    key: "x".into(),
                    value: "y".into(),
                },
                C::RevokeShareLink("nope".into()),
            ],
            ev(13, "admin-change"),
        )
        .await;
    assert_eq!(kind(&r), Some(ErrorKind::NotFound));
    t.note("atomic", &r);
    assert_eq!(dir.org("c").await.unwrap(), None);
    assert_eq!(dir.setting("x").await.unwrap(), None);

    // The audit trail holds exactly the events of the applies that succeeded, chained.
    let records = log.records(1, 100).await;
    let actions: Vec<i64> = records
        .as_ref()
        .unwrap()
        .iter()
        .map(|r| r.event.details["n"].as_i64().unwrap())
        .collect();
    assert_eq!(actions, [1, 4, 5, 7, 8, 9, 10, 12]);
    t.note("records", &records);
    t.note("records 3..5", &log.records(3, 2).await);
    t.note("records none", &log.records(3, 0).await);
    let head = log.head().await.unwrap().unwrap();
    assert_eq!(head.seq, 8);
    t.note(
        "search org a, newest 3",
        &log.search(&AuditFilter {
            org: Some("a".into()),
            limit: 3,
            ..Default::default()
        })
        .await,
    );

    // Checkpoints are checked against the chain.
    let cp = |seq: u64, hash: &str, time_ms: i64| Checkpoint {
        seq,
        hash: hash.into(),
        time_ms,
        alg: "ed25519".into(),
        key_id: "k1".into(),
        signature: format!("sig{time_ms}"),
    };
    t.note(
        "checkpoint head",
        &log.put_checkpoint(cp(8, &head.hash, 2)).await,
    );
    t.note(
        "checkpoint genesis",
        &log.put_checkpoint(cp(0, GENESIS_HASH, 1)).await,
    );
    t.note(
        "checkpoint head again",
        &log.put_checkpoint(cp(8, &head.hash, 3)).await,
    );
    let r = log.put_checkpoint(cp(7, &head.hash, 4)).await;
    assert_eq!(kind(&r), Some(ErrorKind::BadRequest));
    t.note("checkpoint wrong hash", &r);
    let r = log.put_checkpoint(cp(9, &head.hash, 5)).await;
    assert_eq!(kind(&r), Some(ErrorKind::NotFound));
    t.note("checkpoint beyond head", &r);
    let cps = log.checkpoints().await;
    assert_eq!(
        cps.as_ref()
            .unwrap()
            .iter()
            .map(|c| c.time_ms)
            .collect::<Vec<_>>(),
        [1, 2, 3]
    );
    t.note("checkpoints", &cps);
    t.0
}

fn compare(mem: &[String], sql: &[String]) {
    for (m, s) in mem.iter().zip(sql) {
        assert_eq!(m, s, "memory and SQLite differ");
    }
    assert_eq!(mem.len(), sql.len());
}

#[tokio::test(flavor = "multi_thread")]
async fn directory_agrees_with_the_reference_model() {
    let audit = Arc::new(MemoryAuditLog::new());
    let mem = MemoryDirectory::new(audit.clone());
    let mem_t = script(&mem, audit.as_ref()).await;

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("index.db");
    let sql = SqliteIndex::open(&path).await.unwrap();
    let sql_t = script(&sql, &sql).await;
    compare(&mem_t, &sql_t);

    // Everything survives a reopen, and the chain still verifies.
    drop(sql);
    let sql = SqliteIndex::open(&path).await.unwrap();
    assert_eq!(
        format!("{:?}", sql.users().await.unwrap()),
        format!("{:?}", mem.users().await.unwrap())
    );
    let records = sql.records(1, 100).await.unwrap();
    assert_eq!(records, audit.records(1, 100).await.unwrap());
    for r in &records {
        assert_eq!(r.hash, chain_hash(r.seq, &r.prev_hash, &r.event));
    }
}

/// Window expiry, lock after N failures, lock expiry, reset.
async fn throttle_script(dir: &dyn Directory) -> Vec<ThrottleState> {
    let st = |failures, locked_until_ms| ThrottleState {
        failures,
        locked_until_ms,
    };
    let (window, max, lock) = (1_000, 3, 5_000);
    let mut seen = Vec::new();
    let fail = async |now: i64, expect: ThrottleState| {
        let s = dir
            .throttle_fail("login:alice", now, window, max, lock)
            .await
            .unwrap();
        assert_eq!(s, expect, "fail at {now}");
        s
    };
    seen.push(fail(0, st(1, 0)).await);
    seen.push(fail(100, st(2, 0)).await);
    // The window (0..1000) ended: counting starts again.
    seen.push(fail(1_100, st(1, 0)).await);
    seen.push(fail(1_200, st(2, 0)).await);
    // The third failure in the window locks for 5 s.
    seen.push(fail(1_300, st(3, 6_300)).await);
    let state = async |now: i64| dir.throttle_state("login:alice", now).await.unwrap();
    assert_eq!(state(1_400).await, st(3, 6_300));
    // The window ended, the lock did not.
    assert_eq!(state(2_200).await, st(0, 6_300));
    assert_eq!(state(6_300).await, st(0, 0));
    // Another key is untouched; an unknown key is open.
    assert_eq!(
        dir.throttle_fail("ip:10.0.0.1", 1_300, window, max, lock)
            .await
            .unwrap(),
        st(1, 0)
    );
    assert_eq!(dir.throttle_state("never", 0).await.unwrap(), st(0, 0));
    // A failure while locked counts and extends the lock.
    seen.push(fail(1_500, st(4, 6_500)).await);
    dir.throttle_reset("login:alice").await.unwrap();
    assert_eq!(state(1_600).await, st(0, 0));
    seen.push(fail(1_700, st(1, 0)).await);
    // Resetting an unknown key is fine.
    dir.throttle_reset("never").await.unwrap();
    // Old rows are swept when a failure is counted; the state stays what it says.
    seen.push(
        dir.throttle_fail("other", 100_000, window, max, lock)
            .await
            .unwrap(),
    );
    assert_eq!(
        dir.throttle_state("ip:10.0.0.1", 100_000).await.unwrap(),
        st(0, 0)
    );
    seen
}

#[tokio::test(flavor = "multi_thread")]
async fn throttle_counts_locks_and_resets() {
    let mem = MemoryDirectory::new(Arc::new(MemoryAuditLog::new()));
    let dir = tempfile::tempdir().unwrap();
    let sql = Arc::new(
        SqliteIndex::open(&dir.path().join("index.db"))
            .await
            .unwrap(),
    );
    assert_eq!(
        throttle_script(&mem).await,
        throttle_script(sql.as_ref()).await
    );

    // Failures counted at once all count (the writer reads and writes each in turn).
    let mut tasks = Vec::new();
    for _ in 0..40 {
        let sql = sql.clone();
        tasks.push(tokio::spawn(async move {
            sql.throttle_fail("race", 10, 60_000, 1_000, 1).await
        }));
    }
    for t in tasks {
        t.await.unwrap().unwrap();
    }
    assert_eq!(sql.throttle_state("race", 20).await.unwrap().failures, 40);
    let rows: i64 = sqlx::query_scalar("SELECT count(*) FROM throttle")
        .fetch_one(sql.read_pool())
        .await
        .unwrap();
    // "login:alice" (window ended long ago) and "ip:10.0.0.1" were swept at 100 000.
    assert_eq!(rows, 2, "only 'other' and 'race' remain");
}
