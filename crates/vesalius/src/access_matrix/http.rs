//! The HTTP half: every route of [`ROUTES`] × every principal × every target, sent to the real
//! application over a socket, each outcome judged against what the policy allows.

use std::collections::HashMap;

use vesalius_auth::policy::StudyRef;
use vesalius_auth::{Action, Principal, PrincipalKind, Resource};
use vesalius_store::directory::Role;

use super::audit::{Expected, audited};
use super::fixture::{GHOST_ORG, GHOST_UID, ORG_A, Placed, Sample, Site};
use super::judge::{effects, judge, leaks};
use super::report::{Cell, Matrix};
use super::request::send;
use super::routes::{Need, ROUTES, Route, Scope, Shows};

/// Who sends a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Who {
    /// No credentials.
    Anonymous,
    /// An API token of `a`'s user with this role.
    Role(Role),
    /// A share-link visitor (the pass cookie of a link on `a`'s study, download allowed).
    ShareLink,
    /// A guest upload link of `a` (`Bearer vsu_…`).
    UploadLink,
}

/// Every principal, in column order.
pub const WHO: [Who; 9] = [
    Who::Anonymous,
    Who::Role(Role::Admin),
    Who::Role(Role::Clinician),
    Who::Role(Role::Radiographer),
    Who::Role(Role::Referrer),
    Who::Role(Role::Auditor),
    Who::Role(Role::Service),
    Who::ShareLink,
    Who::UploadLink,
];

impl Who {
    /// The column label.
    pub fn label(self) -> &'static str {
        match self {
            Who::Anonymous => "anonymous",
            Who::Role(r) => r.as_str(),
            Who::ShareLink => "share-link",
            Who::UploadLink => "upload-link",
        }
    }
}

/// What a route is aimed at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// `a`'s own (study, link, inbox study).
    Own,
    /// `b`'s study opened to `a` by grants.
    Granted,
    /// `b`'s, without grants.
    Other,
    /// Something that exists nowhere.
    Ghost,
    /// Nothing (org-level routes).
    None,
}

/// Target labels in cell order.
pub const TARGETS: [&str; 4] = ["own", "granted", "other", "ghost"];

impl Target {
    fn label(self) -> &'static str {
        match self {
            Target::Own => "own",
            Target::Granted => "granted",
            Target::Other => "other",
            Target::Ghost => "ghost",
            Target::None => "-",
        }
    }

    fn of(scope: Scope) -> &'static [Target] {
        match scope {
            Scope::Study => &[Target::Own, Target::Granted, Target::Other, Target::Ghost],
            Scope::ShareLink | Scope::UploadLink | Scope::Inbox | Scope::Registry => {
                &[Target::Own, Target::Other, Target::Ghost]
            }
            Scope::None => &[Target::None],
        }
    }
}

/// Credentials of one principal for one route.
pub(super) struct Credential {
    pub(super) who: Who,
    pub(super) header: Option<(&'static str, String)>,
    pub(super) principal: Option<Principal>,
    /// The actor id its audit events carry.
    pub(super) actor_id: String,
    /// The share link it is, for share-link visitors.
    pub(super) link_id: Option<String>,
}

/// What the placeholders of one cell stand for.
#[derive(Debug, Clone, Default)]
pub(super) struct Aim {
    /// Whether the target exists (a ghost does not: nothing can be done to it).
    pub(super) exists: bool,
    pub(super) study: String,
    pub(super) series: String,
    pub(super) sop: String,
    /// The organisation owning the target.
    pub(super) org: String,
    /// The study the target is or opens, as the policy sees it.
    pub(super) study_ref: Option<StudyRef>,
    /// A link id (`{id}`).
    pub(super) link: String,
    /// What a listing must contain when allowed.
    pub(super) marker: String,
    /// The placed study, when the target is one (restored after changes).
    pub(super) placed: Option<Placed>,
    /// A synthetic study to store (ingest routes).
    pub(super) fresh: Option<Sample>,
}

/// Links made once for the whole run.
struct Links {
    share_a: (String, String),
    share_b: (String, String),
    upload_a: (String, String),
    upload_b: (String, String),
    /// The upload link the upload-link principal uses.
    upload_principal: (String, String),
}

/// `(route, who, target)` → `(status, cell, hidden study)`.
type Statuses = HashMap<(usize, &'static str, &'static str), (u16, usize, bool)>;

/// Runs the whole HTTP matrix.
pub async fn run(site: &Site, matrix: &mut Matrix) {
    let links = Links {
        share_a: site.share_link(&site.own, true).await,
        share_b: site.share_link(&site.other, true).await,
        upload_a: site.upload_link(ORG_A).await,
        upload_b: site.upload_link(super::fixture::ORG_B).await,
        upload_principal: site.upload_link(ORG_A).await,
    };
    let mut expected = Vec::new();
    // Statuses per (route, who, target), for comparing a hidden study with a missing one.
    let mut statuses: Statuses = HashMap::new();
    let mut n = 0usize;
    for (ri, route) in ROUTES.iter().enumerate() {
        for who in WHO {
            let cred = credential(site, &links, who, route).await;
            for &target in Target::of(route.scope) {
                n += 1;
                let aim = aim(site, &links, route, target, &cred).await;
                let allowed = allowed(site, route, &cred, &aim).await;
                let visible = match (&cred.principal, &aim.study_ref) {
                    (Some(p), Some(s)) if route.scope == Scope::Study => {
                        decide(site, p, Action::Retrieve, &Resource::Study(s.clone())).await
                    }
                    _ => false,
                };
                let (status, headers, body) = send(site, route, &aim, &cred, n).await;
                let mut problems = judge(
                    route,
                    &cred,
                    (allowed, visible),
                    &aim.marker,
                    status,
                    &headers,
                    &body,
                );
                problems.extend(leaks(site, route, &cred, &body).await);
                problems.extend(effects(site, route, &aim, cred.who, allowed).await);
                let cell = matrix.push(Cell {
                    row: route.name(),
                    who: who.label(),
                    target: target.label(),
                    outcome: status.to_string(),
                    allowed,
                    problems,
                    known: None,
                });
                let hidden = route.scope == Scope::Study && !visible;
                statuses.insert((ri, who.label(), target.label()), (status, cell, hidden));
                if allowed && !route.audit.is_empty() && cred.principal.is_some() {
                    expected.push(Expected {
                        cell,
                        actor_id: cred.actor_id.clone(),
                        actions: audit_actions(route, &cred),
                        study: audit_study(route, &cred, &aim),
                        any_outcome: route.shows == super::routes::Shows::Relayed,
                    });
                }
                restore(site, &aim).await;
            }
        }
    }
    oracle(matrix, &statuses);
    audited(site, matrix, expected).await;
}

/// Fresh credentials of `who` for one route, so that its audit events are its own (reads are
/// audited once per actor and study per five minutes).
async fn credential(site: &Site, links: &Links, who: Who, route: &Route) -> Credential {
    let auth = &site.storage.auth;
    match who {
        Who::Anonymous => Credential {
            who,
            header: None,
            principal: None,
            actor_id: String::new(),
            link_id: None,
        },
        Who::Role(role) => {
            let user = site.user(role);
            let (rec, text) = auth
                .create_token(
                    &Principal::system(),
                    &user.id,
                    ORG_A,
                    role,
                    &format!("matrix {}", route.method),
                    None,
                    vesalius_auth::Origin::default(),
                )
                .await
                .expect("token");
            let principal = auth.from_bearer(&text).await.expect("token principal");
            Credential {
                who,
                header: Some(("authorization", format!("Bearer {text}"))),
                principal: Some(principal),
                actor_id: rec.id,
                link_id: None,
            }
        }
        Who::ShareLink => {
            // Opened through the real capability URL, as a visitor would.
            let (id, secret) = site.share_link(&site.own, true).await;
            let resp = site
                .http
                .get(format!("{}/s/{id}/{secret}", site.base))
                .send()
                .await
                .expect("opening a share link");
            assert_eq!(resp.status().as_u16(), 303, "opening a share link");
            let set = resp
                .headers()
                .get("set-cookie")
                .and_then(|v| v.to_str().ok())
                .expect("a pass cookie")
                .to_owned();
            let pair = set.split(';').next().unwrap_or_default().to_owned();
            let pass = pair
                .strip_prefix(&format!("{}=", vesalius_auth::cookie::LINK_COOKIE))
                .expect("the pass cookie");
            let principal = auth.from_share_link_pass(pass).await.expect("pass");
            Credential {
                who,
                header: Some(("cookie", pair.clone())),
                principal: Some(principal),
                actor_id: id.clone(),
                link_id: Some(id),
            }
        }
        Who::UploadLink => {
            let (id, secret) = &links.upload_principal;
            Credential {
                who,
                header: Some((
                    "authorization",
                    format!("Bearer {}", vesalius_auth::upload_token(id, secret)),
                )),
                principal: Some(Principal::upload_link(id, ORG_A)),
                actor_id: id.clone(),
                link_id: None,
            }
        }
    }
}

fn placed_aim(p: &Placed) -> Aim {
    Aim {
        exists: true,
        study: p.sample.study.clone(),
        series: p.sample.series.clone(),
        sop: p.sample.sop.clone(),
        org: p.org.clone(),
        study_ref: Some(p.study_ref()),
        marker: p.sample.study.clone(),
        placed: Some(p.clone()),
        ..Default::default()
    }
}

fn ghost_aim() -> Aim {
    Aim {
        study: GHOST_UID.into(),
        series: format!("{GHOST_UID}.1"),
        sop: format!("{GHOST_UID}.1.1"),
        org: GHOST_ORG.into(),
        study_ref: Some(StudyRef {
            org: GHOST_ORG.into(),
            study_uid: GHOST_UID.into(),
            patient: None,
        }),
        link: "ghostlink000".into(),
        marker: GHOST_UID.into(),
        ..Default::default()
    }
}

/// What `target` means for `route`, making what the cell consumes (links to revoke, inbox
/// studies, studies to store).
async fn aim(site: &Site, links: &Links, route: &Route, target: Target, cred: &Credential) -> Aim {
    if target == Target::Ghost {
        return ghost_aim();
    }
    let revoke = route.method == "DELETE";
    match route.scope {
        Scope::Study => placed_aim(match target {
            Target::Own => &site.own,
            Target::Granted => &site.granted,
            _ => &site.other,
        }),
        Scope::ShareLink => {
            let (placed, fixed) = if target == Target::Own {
                (&site.own, &links.share_a)
            } else {
                (&site.other, &links.share_b)
            };
            let link = if revoke {
                site.share_link(placed, true).await.0
            } else if route.path == "/s/{id}" || route.path == "/s/{id}/download" {
                // A visitor's own link is the one its pass opens.
                match (&cred.link_id, target) {
                    (Some(own), Target::Own) => own.clone(),
                    _ => fixed.0.clone(),
                }
            } else {
                fixed.0.clone()
            };
            Aim {
                marker: link.clone(),
                link,
                ..placed_aim(placed)
            }
        }
        Scope::UploadLink => {
            let org = if target == Target::Own {
                ORG_A
            } else {
                super::fixture::ORG_B
            };
            let link = if revoke {
                site.upload_link(org).await.0
            } else if target == Target::Own {
                links.upload_a.0.clone()
            } else {
                links.upload_b.0.clone()
            };
            Aim {
                exists: true,
                org: org.into(),
                marker: link.clone(),
                link,
                ..Default::default()
            }
        }
        Scope::Inbox => {
            let p = if target == Target::Own {
                &site.inbox_own
            } else {
                &site.inbox_other
            };
            site.restore(p).await;
            let owner = vesalius_store::model::inbox_owner(&p.org).unwrap_or_default();
            Aim {
                org: owner.to_owned(),
                ..placed_aim(p)
            }
        }
        Scope::Registry => {
            let org = if target == Target::Own {
                ORG_A
            } else {
                super::fixture::ORG_B
            };
            let name = site.registry_records(org).await;
            // A retry needs a parked job to the organisation's node, made afresh per cell.
            let link = if route.path.starts_with("/api/v1/transfers/jobs/") {
                site.parked_job(&name, org).await.to_string()
            } else {
                name
            };
            Aim {
                exists: true,
                org: org.into(),
                marker: link.clone(),
                link,
                ..Default::default()
            }
        }
        Scope::None => {
            // Routes that only have to be served (issue 6's resumable uploads: the matrix sends
            // no file) take no study from the pool.
            let fresh = ((matches!(route.need, Need::Ingest | Need::Caller(Action::Store))
                && route.shows != Shows::Served)
                || route.path == "/api/v1/route-test")
                .then(|| site.fresh());
            // The admin console's routes (issue 6) act on a user or token made for the cell,
            // or create one named here (`link`).
            let link = match (route.method, route.path) {
                (_, "/api/v1/users/{name}" | "/api/v1/users/{name}/password-link") => {
                    site.fresh_user().await
                }
                ("PUT", "/api/v1/users/{name}/memberships/{org}") => site.fresh_user().await,
                // Leaving `a` needs another organisation to stay in.
                ("DELETE", "/api/v1/users/{name}/memberships/{org}") => {
                    site.fresh_user_of_both().await
                }
                (_, "/api/v1/tokens/{id}") => site.fresh_token().await,
                ("PATCH", "/api/v1/orgs/{org}") => {
                    site.storage
                        .auth
                        .directory()
                        .apply(
                            vec![vesalius_store::directory::DirectoryChange::DeleteSetting(
                                format!("{}{}", vesalius_api::device_cache::SETTING_PREFIX, ORG_A),
                            )],
                            Vec::new(),
                        )
                        .await
                        .expect("clearing the setting");
                    String::new()
                }
                ("POST", "/api/v1/users") => format!(
                    "matrix-new-{}",
                    vesalius_auth::secret::random_id(10).to_lowercase()
                ),
                ("POST", "/api/v1/orgs") => format!(
                    "matrix-org-{}",
                    vesalius_auth::secret::random_id(10).to_lowercase()
                ),
                _ => String::new(),
            };
            Aim {
                exists: true,
                study: fresh.as_ref().map(|f| f.study.clone()).unwrap_or_default(),
                fresh,
                link,
                ..Default::default()
            }
        }
    }
}

pub(super) async fn decide(
    site: &Site,
    p: &Principal,
    action: Action,
    resource: &Resource,
) -> bool {
    site.storage
        .auth
        .authorize(p, action, resource)
        .await
        .expect("authorize")
        .is_allowed()
}

/// Whether the policy allows the cell.
async fn allowed(site: &Site, route: &Route, cred: &Credential, aim: &Aim) -> bool {
    let Some(p) = &cred.principal else {
        return matches!(route.need, Need::Open(_));
    };
    let study = || Resource::Study(aim.study_ref.clone().expect("a study target"));
    // The policy may allow an action on a study that does not exist (break-glass); nothing can
    // happen to it.
    let needs_target = matches!(
        route.need,
        Need::Study(_) | Need::TargetOrg(_) | Need::LinkPass(_)
    );
    if needs_target && !aim.exists {
        return false;
    }
    match route.need {
        Need::Open(_) | Need::Any => true,
        Need::Study(action) => decide(site, p, action, &study()).await,
        Need::Caller(action) => decide(site, p, action, &Resource::org(p.org_str())).await,
        Need::TargetOrg(action) => decide(site, p, action, &Resource::org(aim.org.clone())).await,
        Need::Site(action) => decide(site, p, action, &Resource::Site).await,
        Need::Ingest => {
            let action = if cred.who == Who::UploadLink {
                Action::Upload
            } else {
                Action::Store
            };
            decide(site, p, action, &Resource::org(p.org_str())).await
        }
        Need::Peer => matches!(p.kind, PrincipalKind::Peer { .. }),
        Need::Session => matches!(p.kind, PrincipalKind::Session { .. }),
        Need::LinkPass(action) => {
            let pass_for_target = matches!(
                &p.kind,
                PrincipalKind::ShareLink { link_id, .. } if *link_id == aim.link
            );
            pass_for_target && decide(site, p, action, &study()).await
        }
    }
}

/// Puts back what a cell consumed.
async fn restore(site: &Site, aim: &Aim) {
    if let Some(p) = &aim.placed {
        site.restore(p).await;
    }
}

fn audit_actions(route: &Route, cred: &Credential) -> &'static [&'static str] {
    match (route.need, cred.who) {
        (Need::Ingest, Who::UploadLink) => &["upload"],
        (Need::Ingest, _) => &["store"],
        _ => route.audit,
    }
}

fn audit_study(route: &Route, cred: &Credential, aim: &Aim) -> Option<String> {
    match route.need {
        // A guest upload to `/studies` names no study; stores name the stored one.
        Need::Ingest if cred.who == Who::UploadLink => None,
        Need::Ingest | Need::Caller(Action::Store) => aim.fresh.as_ref().map(|f| f.study.clone()),
        _ if route.audit_names_study() => Some(aim.study.clone()),
        _ => None,
    }
}

/// A study the caller may not see must be answered exactly like one that does not exist:
/// compares each hidden, refused target's status with the ghost's.
fn oracle(matrix: &mut Matrix, statuses: &Statuses) {
    for ((ri, who, target), (status, cell, hidden)) in statuses {
        if *target == "ghost" || *target == "-" || ROUTES[*ri].scope != Scope::Study {
            continue;
        }
        let Some((ghost, _, _)) = statuses.get(&(*ri, *who, "ghost")) else {
            continue;
        };
        let c = &matrix.cells[*cell];
        if c.allowed || !c.problems.is_empty() || *who == "anonymous" {
            continue;
        }
        if *hidden && status != ghost {
            matrix.cells[*cell].problems.push(format!(
                "existence oracle: a hidden study answers {status}, a missing one {ghost}"
            ));
        }
    }
}
