//! The access matrix (the documented table is the expected result) and the rules behind it.

use super::*;
use vesalius_store::directory::Grant;

const NOW: i64 = 1_000_000;
const MATRIX_FILE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/src/policy_matrix.md");

/// The principals of the matrix, by their row label. All act in organisation `a`; users are `u1`.
fn principals() -> Vec<(&'static str, Principal)> {
    let user = |role| Principal::session("u1", "alice", "a", role);
    let mut must_change = user(Role::Admin);
    must_change.must_change_password = true;
    vec![
        ("admin", user(Role::Admin)),
        ("clinician", user(Role::Clinician)),
        ("radiographer", user(Role::Radiographer)),
        ("referrer", user(Role::Referrer)),
        ("auditor", user(Role::Auditor)),
        ("service", user(Role::Service)),
        ("any user who must change their password", must_change),
        ("AE title (store only)", Principal::ae("CT1", "a", false)),
        ("AE title (may query)", Principal::ae("PACS", "a", true)),
        (
            "share link (view)",
            Principal::share_link("l1", "a", "1.1", false),
        ),
        (
            "share link (view and download)",
            Principal::share_link("l1", "a", "1.1", true),
        ),
        ("upload link", Principal::upload_link("up1", "a")),
        ("peer (store only)", Principal::peer("hub", "a", false)),
        ("peer (may query)", Principal::peer("hub", "a", true)),
        ("system", Principal::system()),
    ]
}

/// The columns: (label, the study acted on).
fn situations() -> Vec<(&'static str, Resource)> {
    vec![
        ("own", Resource::study_of("a", "1.1", "A", "p1")),
        ("own+U", Resource::study_of("a", "1.3", "A", "p3")),
        ("other", Resource::study_of("b", "2.1", "B", "q1")),
        ("U", Resource::study_of("b", "2.2", "B", "q2")),
        ("O", Resource::study_of("b", "2.3", "B", "q3")),
        ("P", Resource::study_of("b", "2.4", "B", "q4")),
        ("BG", Resource::study_of("b", "2.5", "B", "q5")),
        ("stale", Resource::study_of("b", "2.6", "B", "q6")),
    ]
}

fn grant(id: &str, owner: &str, grantee: Grantee, subject: GrantSubject) -> Grant {
    Grant {
        id: id.into(),
        owner_org: owner.into(),
        grantee,
        subject,
        expires_ms: None,
        break_glass: false,
        reason: "referral".into(),
        created_by: "admin-of-owner".into(),
        created_ms: 0,
        revoked: false,
    }
}

fn study(uid: &str) -> GrantSubject {
    GrantSubject::Study {
        study_uid: uid.into(),
    }
}

/// Every grant of the scenario; each cell is decided with all of them, as the authenticator
/// passes everything `Directory::grants_for` returns.
fn grants() -> Vec<Grant> {
    let user = || Grantee::User("u1".into());
    let org = |o: &str| Grantee::Org(o.into());
    let mut bg = grant("g-bg", "b", user(), study("2.5"));
    bg.break_glass = true;
    bg.expires_ms = Some(NOW + 1);
    let mut expired = grant("g-expired", "b", user(), study("2.6"));
    expired.expires_ms = Some(NOW);
    let mut revoked = grant("g-revoked", "b", org("a"), study("2.6"));
    revoked.revoked = true;
    vec![
        grant("g-own-user", "a", user(), study("1.3")),
        grant("g-user", "b", user(), study("2.2")),
        grant("g-org", "b", org("a"), study("2.3")),
        grant(
            "g-patient",
            "b",
            org("a"),
            GrantSubject::Patient {
                issuer: "B".into(),
                patient_id: "q4".into(),
            },
        ),
        bg,
        expired,
        revoked,
        // Live grants on the stale study, to others.
        grant(
            "g-other-user",
            "b",
            Grantee::User("u2".into()),
            study("2.6"),
        ),
        grant("g-other-org", "b", org("c"), study("2.6")),
    ]
}

fn symbol(d: &Decision) -> &'static str {
    match d {
        _ if d.is_break_glass() => "⚑",
        Decision::Allow(_) => "✓",
        Decision::Deny(_) => "–",
    }
}

/// One principal's table: label, and per action one symbol per situation.
type Table<L, A, C> = (L, Vec<(A, Vec<C>)>);

/// The matrix as computed.
fn computed() -> Vec<Table<&'static str, Action, &'static str>> {
    let grants = grants();
    principals()
        .into_iter()
        .map(|(label, p)| {
            let rows = Action::ALL
                .iter()
                .map(|&a| {
                    let cells = situations()
                        .iter()
                        .map(|(_, r)| symbol(&authorize(&p, a, r, &grants, NOW)))
                        .collect();
                    (a, cells)
                })
                .collect();
            (label, rows)
        })
        .collect()
}

fn render() -> String {
    let mut out = String::from(MATRIX_PREAMBLE);
    let header: Vec<&str> = situations().iter().map(|(l, _)| *l).collect();
    for (label, rows) in computed() {
        out.push_str(&format!(
            "\n#### {label}\n\n| action | {} |\n",
            header.join(" | ")
        ));
        out.push_str(&format!("|---|{}\n", "---|".repeat(header.len())));
        for (a, cells) in rows {
            out.push_str(&format!("| {} | {} |\n", a.as_str(), cells.join(" | ")));
        }
    }
    out
}

const MATRIX_PREAMBLE: &str = "\
Each table is one kind of principal acting in organisation `a` (users as user `u1`); `b` is \
another organisation. Columns are the study acted on; for organisation-level actions (store, \
upload, manage-org, read-audit, create-upload-link) the organisation owning that study.

- **own**: a study of `a` (for share links: the link's own study)
- **own+U**: another study of `a`, granted to the user
- **other**: a study of `b`, no grant
- **U**: a study of `b` granted to the user
- **O**: a study of `b` granted to organisation `a`
- **P**: a study of `b` whose patient is granted to organisation `a`
- **BG**: a study of `b` opened by the user's break-glass grant
- **stale**: a study of `b` whose grants to `a` and the user are expired or revoked (its live \
grants are to others)

✓ allowed · ⚑ allowed through a break-glass grant (audited flagged) · – refused.
";

/// Parses the documented tables: principal label → action name → symbols.
fn documented(text: &str) -> Vec<Table<String, String, String>> {
    let mut out: Vec<Table<String, String, String>> = Vec::new();
    for line in text.lines() {
        if let Some(label) = line.strip_prefix("#### ") {
            out.push((label.trim().to_owned(), Vec::new()));
        } else if let Some(row) = line.strip_prefix("| ") {
            let cells: Vec<String> = row
                .trim_end_matches('|')
                .split('|')
                .map(|c| c.trim().to_owned())
                .collect();
            if cells[0] == "action" {
                continue;
            }
            let section = out.last_mut().expect("a table under a #### heading");
            section.1.push((cells[0].clone(), cells[1..].to_vec()));
        }
    }
    out
}

#[test]
fn matrix_matches_the_documented_table() {
    if std::env::var_os("VESALIUS_BLESS").is_some() {
        std::fs::write(MATRIX_FILE, render()).unwrap();
    }
    let text = std::fs::read_to_string(MATRIX_FILE).unwrap();
    let doc = documented(&text);
    let comp = computed();
    let labels: Vec<&str> = doc.iter().map(|(l, _)| l.as_str()).collect();
    let expected: Vec<&str> = comp.iter().map(|(l, _)| *l).collect();
    assert_eq!(labels, expected, "principal sections");
    let columns = situations();
    let mut diffs = Vec::new();
    for ((label, doc_rows), (_, rows)) in doc.iter().zip(&comp) {
        let names: Vec<&str> = doc_rows.iter().map(|(a, _)| a.as_str()).collect();
        let want: Vec<&str> = Action::ALL.iter().map(|a| a.as_str()).collect();
        assert_eq!(names, want, "actions of {label}");
        for ((_, doc_cells), (a, cells)) in doc_rows.iter().zip(rows) {
            assert_eq!(doc_cells.len(), columns.len(), "{label} / {}", a.as_str());
            for (i, (d, c)) in doc_cells.iter().zip(cells).enumerate() {
                if d != c {
                    diffs.push(format!(
                        "{label} / {} / {}: documented {d}, policy says {c}",
                        a.as_str(),
                        columns[i].0
                    ));
                }
            }
        }
    }
    assert!(
        diffs.is_empty(),
        "policy differs from the documented matrix:\n{}",
        diffs.join("\n")
    );
    // The whole file is what `render` makes, so the docs never drift in form either.
    assert_eq!(
        text,
        render(),
        "re-run with VESALIUS_BLESS=1 and review the diff"
    );
}

#[test]
fn tokens_act_exactly_like_sessions() {
    let grants = grants();
    for role in Role::ALL {
        let s = Principal::session("u1", "alice", "a", role);
        let t = Principal::token("tok000000001", "u1", "alice", "a", role);
        for a in Action::ALL {
            for (_, r) in situations().iter().chain([("site", Resource::Site)].iter()) {
                assert_eq!(
                    authorize(&s, a, r, &grants, NOW),
                    authorize(&t, a, r, &grants, NOW)
                );
            }
        }
        assert_eq!(access(&s, &grants, NOW), access(&t, &grants, NOW));
    }
}

#[test]
fn access_agrees_with_authorize_everywhere() {
    let grants = grants();
    for (label, p) in principals() {
        let acc = access(&p, &grants, NOW);
        for (col, r) in situations() {
            let Resource::Study(s) = &r else {
                unreachable!()
            };
            let (i, pid) = s.patient.clone().unwrap();
            let visible = acc
                .as_ref()
                .is_none_or(|a| a.allows(&s.org, &s.study_uid, &i, &pid));
            for action in [Action::Query, Action::Retrieve] {
                assert_eq!(
                    authorize(&p, action, &r, &grants, NOW).is_allowed(),
                    visible,
                    "{label} / {col} / {}",
                    action.as_str()
                );
            }
        }
    }
}

#[test]
fn access_lists_what_is_visible() {
    let grants = grants();
    let clinician = Principal::session("u1", "alice", "a", Role::Clinician);
    let a = access(&clinician, &grants, NOW).unwrap();
    assert_eq!(a.orgs, vec!["a".to_string()]);
    let studies: Vec<&str> = a.studies.iter().map(|(_, s)| s.as_str()).collect();
    assert_eq!(studies, vec!["2.2", "2.3", "2.5"]);
    assert_eq!(
        a.patients,
        vec![("b".to_string(), "B".to_string(), "q4".to_string())]
    );
    let referrer = Principal::session("u1", "alice", "a", Role::Referrer);
    let a = access(&referrer, &grants, NOW).unwrap();
    assert!(a.orgs.is_empty() && a.patients.is_empty());
    let studies: Vec<&str> = a.studies.iter().map(|(_, s)| s.as_str()).collect();
    assert_eq!(studies, vec!["1.3", "2.2"]);
    assert!(access(&Principal::system(), &grants, NOW).is_none());
    for p in [
        Principal::session("u1", "alice", "a", Role::Auditor),
        Principal::upload_link("up", "a"),
        Principal::peer("hub", "a", false),
        Principal::ae("CT", "a", false),
    ] {
        assert!(access(&p, &grants, NOW).unwrap().is_empty(), "{p:?}");
    }
}

#[test]
fn the_rules_of_the_brief() {
    let g = grants();
    let user = |role| Principal::session("u1", "alice", "a", role);
    let own = Resource::study_of("a", "1.1", "A", "p1");
    let other = Resource::study_of("b", "2.1", "B", "q1");
    let granted_org = Resource::study_of("b", "2.3", "B", "q3");
    let granted_user = Resource::study_of("b", "2.2", "B", "q2");
    let bg = Resource::study_of("b", "2.5", "B", "q5");
    let ok = |p: &Principal, a, r: &Resource| authorize(p, a, r, &g, NOW).is_allowed();

    // Admin: everything in its own organisation, nothing of another's beyond grants.
    for a in Action::ALL {
        let expect = !matches!(a, Action::BreakGlass | Action::Upload);
        assert_eq!(ok(&user(Role::Admin), a, &own), expect, "{a:?}");
        assert!(!ok(&user(Role::Admin), a, &other), "{a:?}");
    }
    // Clinician: reads own and granted, breaks glass, shares own studies only.
    let c = user(Role::Clinician);
    assert!(ok(&c, Action::Retrieve, &own) && ok(&c, Action::Retrieve, &granted_org));
    assert!(ok(&c, Action::BreakGlass, &other) && !ok(&c, Action::BreakGlass, &own));
    assert!(ok(&c, Action::CreateShareLink, &own));
    assert!(!ok(&c, Action::CreateShareLink, &granted_org));
    assert!(!ok(&c, Action::Store, &own) && !ok(&c, Action::Delete, &own));
    // Break-glass: reading is flagged, exporting refused.
    assert!(authorize(&c, Action::Retrieve, &bg, &g, NOW).is_break_glass());
    assert!(!ok(&c, Action::Export, &bg));
    // ...and once expired, gone.
    assert!(!authorize(&c, Action::Retrieve, &bg, &g, NOW + 1).is_allowed());
    // Radiographer and service: store into and read own organisation only.
    for r in [Role::Radiographer, Role::Service] {
        assert!(ok(&user(r), Action::Store, &own) && ok(&user(r), Action::Retrieve, &own));
        assert!(!ok(&user(r), Action::Store, &other));
        assert!(!ok(&user(r), Action::Retrieve, &granted_org));
        assert!(!ok(&user(r), Action::Retrieve, &granted_user));
    }
    // Referrer: only grants to themselves.
    let r = user(Role::Referrer);
    assert!(ok(&r, Action::Retrieve, &granted_user));
    assert!(!ok(&r, Action::Retrieve, &granted_org) && !ok(&r, Action::Retrieve, &own));
    assert!(!ok(&r, Action::Export, &granted_user));
    // Auditor: the audit trail of its organisation, no images.
    let au = user(Role::Auditor);
    assert!(ok(&au, Action::ReadAudit, &Resource::org("a")));
    assert!(!ok(&au, Action::ReadAudit, &Resource::org("b")));
    assert!(!ok(&au, Action::Retrieve, &own) && !ok(&au, Action::Query, &Resource::Site));
    // Share links: only their study, download only if allowed.
    let view = Principal::share_link("l", "a", "1.1", false);
    assert!(ok(&view, Action::Retrieve, &own) && !ok(&view, Action::Export, &own));
    assert!(!ok(&view, Action::Retrieve, &Resource::study("a", "1.2")));
    assert!(!ok(&view, Action::Retrieve, &Resource::study("b", "1.1")));
    // Upload links: only Upload into their organisation.
    let up = Principal::upload_link("u", "a");
    assert!(ok(&up, Action::Upload, &Resource::org("a")));
    assert!(!ok(&up, Action::Upload, &Resource::org("b")));
    assert!(!ok(&up, Action::Store, &Resource::org("a")));
    // Site-wide things are the system's.
    assert!(!ok(&user(Role::Admin), Action::ManageOrg, &Resource::Site));
    assert!(ok(&Principal::system(), Action::ManageOrg, &Resource::Site));
    assert!(ok(&user(Role::Referrer), Action::Query, &Resource::Site));
}

/// Issue 6: a logged-in site administrator may create organisations (`ManageOrg` on the site)
/// and administer every organisation, and nothing else more than their role gives; their
/// tokens, and every organisation role without the flag, may not; nor before a required
/// password change.
#[test]
fn site_administrators_create_organisations_in_sessions_only() {
    let g = grants();
    for role in Role::ALL {
        let mut sa = Principal::session("u1", "alice", "a", role);
        sa.site_admin = true;
        assert_eq!(
            authorize(&sa, Action::ManageOrg, &Resource::Site, &g, NOW),
            Decision::Allow(Basis::SiteAdmin),
            "{role:?}"
        );
        let plain = Principal::session("u1", "alice", "a", role);
        assert_eq!(
            authorize(&plain, Action::ManageOrg, &Resource::Site, &g, NOW),
            Decision::Deny(DenyReason::SiteOnly)
        );
        // The same user's token: no site rights.
        let mut token = Principal::token("tok000000001", "u1", "alice", "a", role);
        token.site_admin = true;
        assert_eq!(
            authorize(&token, Action::ManageOrg, &Resource::Site, &g, NOW),
            Decision::Deny(DenyReason::SiteOnly)
        );
        // Nothing else changes: every other cell is the plain session's.
        for a in Action::ALL {
            for (_, r) in situations().iter().chain([("site", Resource::Site)].iter()) {
                if a == Action::ManageOrg {
                    assert!(authorize(&sa, a, r, &g, NOW).is_allowed(), "{role:?} {r:?}");
                    continue;
                }
                assert_eq!(
                    authorize(&sa, a, r, &g, NOW),
                    authorize(&plain, a, r, &g, NOW),
                    "{role:?} {a:?} {r:?}"
                );
            }
        }
        assert_eq!(access(&sa, &g, NOW), access(&plain, &g, NOW));
        sa.must_change_password = true;
        assert_eq!(
            authorize(&sa, Action::ManageOrg, &Resource::Site, &g, NOW),
            Decision::Deny(DenyReason::PasswordChangeRequired)
        );
    }
    // The whole site's audit trail stays the server's; another organisation's is theirs.
    let mut sa = Principal::session("u1", "alice", "a", Role::Admin);
    sa.site_admin = true;
    assert!(!authorize(&sa, Action::ReadAudit, &Resource::Site, &g, NOW).is_allowed());
    assert!(!authorize(&sa, Action::ReadAudit, &Resource::org("b"), &g, NOW).is_allowed());
    assert!(authorize(&sa, Action::ManageOrg, &Resource::org("b"), &g, NOW).is_allowed());
}

#[test]
fn peers_store_into_their_org_and_read_only_when_allowed() {
    let g = grants();
    let own = Resource::study_of("a", "1.1", "A", "p1");
    let other = Resource::study_of("b", "2.1", "B", "q1");
    // A study of b granted to organisation a: grants do not open anything to a peer.
    let granted_org = Resource::study_of("b", "2.3", "B", "q3");
    let ok = |p: &Principal, a, r: &Resource| authorize(p, a, r, &g, NOW).is_allowed();
    let store_only = Principal::peer("hub", "a", false);
    let reader = Principal::peer("hub", "a", true);
    for p in [&store_only, &reader] {
        assert!(ok(p, Action::Store, &Resource::org("a")) && ok(p, Action::Store, &own));
        assert!(!ok(p, Action::Store, &Resource::org("b")) && !ok(p, Action::Store, &other));
        for a in [
            Action::Delete,
            Action::Export,
            Action::CreateShareLink,
            Action::CreateUploadLink,
            Action::ManageOrg,
            Action::ReadAudit,
            Action::BreakGlass,
            Action::Upload,
            Action::Reconcile,
            Action::Annotate,
        ] {
            assert!(!ok(p, a, &own) && !ok(p, a, &Resource::org("a")), "{a:?}");
            assert!(!ok(p, a, &Resource::Site), "{a:?}");
        }
        assert!(!ok(p, Action::Retrieve, &granted_org) && !ok(p, Action::Retrieve, &other));
    }
    assert!(!ok(&store_only, Action::Query, &Resource::Site));
    assert!(!ok(&store_only, Action::Retrieve, &own));
    assert!(ok(&reader, Action::Query, &Resource::Site));
    assert!(ok(&reader, Action::Retrieve, &own) && ok(&reader, Action::Query, &own));
    assert_eq!(
        authorize(&store_only, Action::Retrieve, &own, &g, NOW),
        Decision::Deny(DenyReason::RoleLacksAction)
    );
    assert_eq!(
        authorize(&reader, Action::Retrieve, &other, &g, NOW),
        Decision::Deny(DenyReason::OtherOrg)
    );
    // What a reading peer may search: its organisation, nothing granted to it.
    let acc = access(&reader, &g, NOW).unwrap();
    assert_eq!(acc.orgs, vec!["a".to_string()]);
    assert!(acc.studies.is_empty() && acc.patients.is_empty());
    assert!(access(&store_only, &g, NOW).unwrap().is_empty());
}

/// Issue 6: a peer acting for one of its users annotates (key images, measurement reports)
/// the studies it may read, and only when registered with `may_query`.
#[test]
fn a_reading_peer_acting_for_a_user_may_annotate_its_orgs_studies() {
    let g = grants();
    let own = Resource::study_of("a", "1.1", "A", "p1");
    let other = Resource::study_of("b", "2.1", "B", "q1");
    let granted_org = Resource::study_of("b", "2.3", "B", "q3");
    let ok = |p: &Principal, a, r: &Resource| authorize(p, a, r, &g, NOW).is_allowed();
    let for_user = |may_query| {
        let mut p = Principal::peer("hub", "a", may_query);
        if let PrincipalKind::Peer { for_user, .. } = &mut p.kind {
            *for_user = true;
        }
        p
    };
    let (reader, store_only) = (for_user(true), for_user(false));
    assert!(ok(&reader, Action::Annotate, &own));
    assert!(!ok(&reader, Action::Annotate, &other) && !ok(&reader, Action::Annotate, &granted_org));
    assert!(!ok(&store_only, Action::Annotate, &own));
    for a in [
        Action::Delete,
        Action::Export,
        Action::ManageOrg,
        Action::Reconcile,
    ] {
        assert!(!ok(&reader, a, &own), "{a:?}");
    }
}

#[test]
fn patient_grants_need_the_patient() {
    let g = grants();
    let c = Principal::session("u1", "alice", "a", Role::Clinician);
    assert!(
        authorize(
            &c,
            Action::Retrieve,
            &Resource::study_of("b", "9.9", "B", "q4"),
            &g,
            NOW
        )
        .is_allowed()
    );
    // Without the patient known, a patient grant cannot apply.
    assert!(!authorize(&c, Action::Retrieve, &Resource::study("b", "9.9"), &g, NOW).is_allowed());
    // Same patient id, other issuer: another patient.
    assert!(
        !authorize(
            &c,
            Action::Retrieve,
            &Resource::study_of("b", "9.9", "X", "q4"),
            &g,
            NOW
        )
        .is_allowed()
    );
    // A grant names its owner: the same study UID in another organisation is not opened.
    assert!(!authorize(&c, Action::Retrieve, &Resource::study("c", "2.2"), &g, NOW).is_allowed());
}

#[test]
fn ordinary_grant_wins_over_break_glass() {
    let mut g = grants();
    g.push(grant(
        "g-late",
        "b",
        Grantee::User("u1".into()),
        study("2.5"),
    ));
    let c = Principal::session("u1", "alice", "a", Role::Clinician);
    let d = authorize(&c, Action::Retrieve, &Resource::study("b", "2.5"), &g, NOW);
    assert_eq!(
        d,
        Decision::Allow(Basis::Grant {
            grant_id: "g-late".into(),
            break_glass: false
        })
    );
}

#[test]
fn role_coverage() {
    use Role::*;
    for r in Role::ALL {
        assert!(role_covers(r, r));
    }
    for r in [Radiographer, Referrer, Auditor, Service] {
        assert!(role_covers(Admin, r), "{r:?}");
    }
    assert!(!role_covers(Admin, Clinician), "admins do not break glass");
    assert!(role_covers(Clinician, Referrer));
    assert!(!role_covers(Clinician, Radiographer));
    // Service accounts store and read like radiographers but do not review the guest inbox.
    assert!(role_covers(Radiographer, Service) && !role_covers(Service, Radiographer));
    assert!(!role_covers(Auditor, Referrer) && !role_covers(Referrer, Auditor));
}

#[test]
fn decisions_convert_to_errors() {
    let e = Decision::Deny(DenyReason::NoGrant)
        .into_result()
        .unwrap_err();
    assert_eq!(e.kind(), vesalius_core::ErrorKind::Forbidden);
    assert_eq!(
        Decision::Allow(Basis::Member).into_result().unwrap(),
        Basis::Member
    );
}
