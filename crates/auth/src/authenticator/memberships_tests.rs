//! Issue 6: a user of several organisations acts in one at a time; joining and leaving.

use vesalius_store::Directory;
use vesalius_store::audit::{AuditFilter, Outcome};
use vesalius_store::directory::{DirectoryChange, Org, Role};

use super::tests::{HERE, PW, env, study};
use super::*;
use crate::policy::{Action, Resource};

/// What `p` may do with a study of `org`.
async fn reads(e: &super::tests::Env, p: &Principal, org: &str) -> bool {
    e.auth
        .authorize(p, Action::Retrieve, &Resource::Study(study(org, "1.2.3")))
        .await
        .unwrap()
        .is_allowed()
}

async fn manages(e: &super::tests::Env, p: &Principal, org: &str) -> bool {
    e.auth
        .authorize(p, Action::ManageOrg, &Resource::org(org))
        .await
        .unwrap()
        .is_allowed()
}

/// The details of every `action` record, oldest first.
async fn details(e: &super::tests::Env, action: &str) -> Vec<(Outcome, String, serde_json::Value)> {
    let mut r = e
        .log
        .search(&AuditFilter {
            limit: 10_000,
            ..Default::default()
        })
        .await
        .unwrap();
    r.reverse();
    r.into_iter()
        .filter(|r| r.event.action == action)
        .map(|r| (r.event.outcome, r.event.org, r.event.details))
        .collect()
}

#[tokio::test]
async fn r6_a_session_switches_organisation_and_decides_with_the_role_there() {
    let e = env().await;
    e.dir
        .apply(
            vec![DirectoryChange::PutOrg(Org {
                id: "c".into(),
                name: "c".into(),
                created_ms: 0,
            })],
            vec![],
        )
        .await
        .unwrap();
    let u = e.user("reader", "a", Role::Clinician).await;
    let (_, change) = e
        .auth
        .set_membership(&Principal::system(), &u.id, "b", Role::Admin, HERE)
        .await
        .unwrap();
    assert_eq!(change, MembershipChange::Added);

    // The login starts in the first organisation, with the role there.
    let ok = e.auth.login("reader", PW, HERE).await.unwrap();
    assert_eq!(ok.session.org, "a");
    let (pa, _) = e.auth.from_session(&ok.cookie_secret).await.unwrap();
    assert_eq!(pa.role, Some(Role::Clinician));
    assert!(reads(&e, &pa, "a").await && !reads(&e, &pa, "b").await);
    assert!(!manages(&e, &pa, "a").await && !manages(&e, &pa, "b").await);
    let access = e.auth.access(&pa).await.unwrap().unwrap();
    assert_eq!(access.orgs, vec!["a".to_owned()]);

    // Switched to b: b's studies, not a's; administrator there.
    let (pb, s) = e
        .auth
        .switch_org(&ok.cookie_secret, "b", HERE)
        .await
        .unwrap();
    assert_eq!((s.org.as_str(), pb.role), ("b", Some(Role::Admin)));
    let (pb, _) = e.auth.from_session(&ok.cookie_secret).await.unwrap();
    assert_eq!((pb.org.as_deref(), pb.role), (Some("b"), Some(Role::Admin)));
    assert!(reads(&e, &pb, "b").await && !reads(&e, &pb, "a").await);
    assert!(manages(&e, &pb, "b").await && !manages(&e, &pb, "a").await);
    let access = e.auth.access(&pb).await.unwrap().unwrap();
    assert_eq!(access.orgs, vec!["b".to_owned()]);
    assert_eq!(s.csrf, ok.csrf, "the session's CSRF token stays");

    // c exists but the user is not a member; d does not exist: both refused alike, audited,
    // and the session stays in b.
    for other in ["c", "d"] {
        let err = e
            .auth
            .switch_org(&ok.cookie_secret, other, HERE)
            .await
            .unwrap_err();
        assert_eq!(err.kind(), vesalius_core::ErrorKind::Forbidden, "{other}");
    }
    let (still, _) = e.auth.from_session(&ok.cookie_secret).await.unwrap();
    assert_eq!(still.org.as_deref(), Some("b"));
    let switches = details(&e, "org-switch").await;
    assert_eq!(switches.len(), 3);
    assert_eq!(switches[0].0, Outcome::Success);
    assert_eq!(switches[0].1, "b", "filed in the organisation switched to");
    assert_eq!(switches[0].2["from"], "a");
    assert_eq!(switches[0].2["role"], "admin");
    assert!(
        switches[1..].iter().all(|(o, org, d)| *o == Outcome::Denied
            && org == "b"
            && d["reason"] == "not-a-member")
    );

    // The next login starts where the user last switched to.
    let again = e.auth.login("reader", PW, HERE).await.unwrap();
    assert_eq!(again.session.org, "b");
    // A logged-out session cannot switch.
    e.auth.logout(&again.cookie_secret, HERE).await.unwrap();
    assert!(
        e.auth
            .switch_org(&again.cookie_secret, "a", HERE)
            .await
            .is_err()
    );
}

#[tokio::test]
async fn r6_tokens_stay_bound_to_their_organisation() {
    let e = env().await;
    let u = e.user("reader", "a", Role::Clinician).await;
    e.auth
        .set_membership(&Principal::system(), &u.id, "b", Role::Clinician, HERE)
        .await
        .unwrap();
    let (_, text) = e
        .auth
        .create_token(
            &Principal::system(),
            &u.id,
            "a",
            Role::Clinician,
            "t",
            None,
            HERE,
        )
        .await
        .unwrap();
    let ok = e.auth.login("reader", PW, HERE).await.unwrap();
    e.auth
        .switch_org(&ok.cookie_secret, "b", HERE)
        .await
        .unwrap();
    let t = e.auth.from_bearer(&text).await.unwrap();
    assert_eq!(t.org.as_deref(), Some("a"), "the token still acts in a");
    assert!(reads(&e, &t, "a").await && !reads(&e, &t, "b").await);
    assert!(
        e.auth.act_in(&t, "b").await.is_err(),
        "a token cannot act in b"
    );
}

#[tokio::test]
async fn r6_joining_and_leaving_are_for_administrators_of_that_organisation() {
    let e = env().await;
    let admin_a = e.user("boss-a", "a", Role::Admin).await;
    let boss = Principal::session(&admin_a.id, &admin_a.username, "a", Role::Admin);
    let u = e.user("reader", "a", Role::Clinician).await;

    // a's administrator cannot hand out roles in b.
    let err = e
        .auth
        .set_membership(&boss, &u.id, "b", Role::Clinician, HERE)
        .await
        .unwrap_err();
    assert_eq!(err.kind(), vesalius_core::ErrorKind::Forbidden);
    // A person is not given the service role.
    let err = e
        .auth
        .set_membership(&Principal::system(), &u.id, "b", Role::Service, HERE)
        .await
        .unwrap_err();
    assert_eq!(err.kind(), vesalius_core::ErrorKind::BadRequest);
    // The site (or a site administrator) can; the same call again changes nothing.
    e.auth
        .set_membership(&Principal::system(), &u.id, "b", Role::Referrer, HERE)
        .await
        .unwrap();
    let (_, again) = e
        .auth
        .set_membership(&Principal::system(), &u.id, "b", Role::Referrer, HERE)
        .await
        .unwrap();
    assert_eq!(again, MembershipChange::Unchanged);
    // a's administrator changes the role in a (membership-set).
    let (user, change) = e
        .auth
        .set_membership(&boss, &u.id, "a", Role::Radiographer, HERE)
        .await
        .unwrap();
    assert_eq!(
        change,
        MembershipChange::RoleChanged {
            from: Role::Clinician
        }
    );
    assert_eq!(user.memberships.len(), 2);
    // An administrator cannot take their own administrator role away where they act.
    let err = e
        .auth
        .set_membership(&boss, &admin_a.id, "a", Role::Clinician, HERE)
        .await
        .unwrap_err();
    assert_eq!(err.kind(), vesalius_core::ErrorKind::Conflict);

    // A token of b, and a session acting in b.
    let (_, token_b) = e
        .auth
        .create_token(
            &Principal::system(),
            &u.id,
            "b",
            Role::Referrer,
            "b",
            None,
            HERE,
        )
        .await
        .unwrap();
    let ok = e.auth.login("reader", PW, HERE).await.unwrap();
    e.auth
        .switch_org(&ok.cookie_secret, "b", HERE)
        .await
        .unwrap();

    // a's administrator cannot remove the user from b; the site can.
    let err = e
        .auth
        .remove_membership(&boss, &u.id, "b", HERE)
        .await
        .unwrap_err();
    assert_eq!(err.kind(), vesalius_core::ErrorKind::Forbidden);
    let user = e
        .auth
        .remove_membership(&Principal::system(), &u.id, "b", HERE)
        .await
        .unwrap();
    assert_eq!(user.memberships.len(), 1);
    // The session acting in b and the token of b stop working; joining again does not revive
    // the token.
    assert!(e.auth.from_session(&ok.cookie_secret).await.is_err());
    assert!(e.auth.from_bearer(&token_b).await.is_err());
    e.auth
        .set_membership(&Principal::system(), &u.id, "b", Role::Referrer, HERE)
        .await
        .unwrap();
    assert!(
        e.auth.from_bearer(&token_b).await.is_err(),
        "revoked at leave"
    );
    e.auth
        .remove_membership(&Principal::system(), &u.id, "b", HERE)
        .await
        .unwrap();
    // The next login falls back to the first organisation (b was left).
    let back = e.auth.login("reader", PW, HERE).await.unwrap();
    assert_eq!(back.session.org, "a");
    // The last organisation cannot be left; nor the one the caller acts in.
    let err = e
        .auth
        .remove_membership(&Principal::system(), &u.id, "a", HERE)
        .await
        .unwrap_err();
    assert_eq!(err.kind(), vesalius_core::ErrorKind::Conflict);
    e.auth
        .set_membership(&Principal::system(), &admin_a.id, "b", Role::Admin, HERE)
        .await
        .unwrap();
    let err = e
        .auth
        .remove_membership(&boss, &admin_a.id, "a", HERE)
        .await
        .unwrap_err();
    assert_eq!(err.kind(), vesalius_core::ErrorKind::Conflict);

    // Audited, each in the organisation concerned.
    let changes: Vec<(String, String)> = details(&e, "admin-change")
        .await
        .into_iter()
        .map(|(_, org, d)| (d["change"].as_str().unwrap_or("").to_owned(), org))
        .collect();
    let want = [
        ("membership-add", "b"),
        ("membership-set", "a"),
        ("membership-remove", "b"),
        ("membership-add", "b"),
        ("membership-remove", "b"),
        ("membership-add", "b"),
    ];
    let got: Vec<(&str, &str)> = changes
        .iter()
        .map(|(c, o)| (c.as_str(), o.as_str()))
        .collect();
    assert_eq!(got, want);
    let removed = details(&e, "admin-change").await;
    assert_eq!(
        removed[2].2["tokens_revoked"].as_array().map(Vec::len),
        Some(1)
    );
}
