//! Judging one cell's answer: status and content against what the policy allows, patients
//! the caller may not see, and whether a change happened exactly when allowed.

use axum::http::HeaderMap;
use vesalius_auth::{Action, Resource};
use vesalius_store::directory::Role;
use vesalius_store::model::inbox_org;

use super::fixture::{ORG_A, Site};
use super::http::{Aim, Credential, Who, decide};
use super::routes::{Need, Open, Route, Scope, Shows};

/// Whether this 401 came from the authentication layer (it alone sends `WWW-Authenticate`).
fn layer_refused(status: u16, headers: &HeaderMap) -> bool {
    status == 401 && headers.contains_key("www-authenticate")
}

/// Status and content rules.
pub(super) fn judge(
    route: &Route,
    cred: &Credential,
    (allowed, visible): (bool, bool),
    marker: &str,
    status: u16,
    headers: &HeaderMap,
    body: &[u8],
) -> Vec<String> {
    let mut p = Vec::new();
    let ok = (200..300).contains(&status);
    let text = String::from_utf8_lossy(body);
    let node_unreachable = route.shows == Shows::NodeUnreachable && status == 503;
    let relayed_but_unreachable = route.shows == Shows::Relayed && allowed && status == 502;
    if status >= 500 && !relayed_but_unreachable && !node_unreachable {
        p.push(format!("server error {status}: {}", short(&text)));
        return p;
    }
    if let Need::Open(open) = route.need {
        if layer_refused(status, headers) {
            p.push("an open route refused by the authentication layer".into());
        }
        let right = match open {
            Open::Ok => ok,
            Open::Refused => (400..500).contains(&status),
            Open::Unmounted => status == 404,
        };
        if !right {
            p.push(format!("expected {open:?}, got {status}"));
        }
        return p;
    }
    if cred.principal.is_none() {
        // The share-link pages are open to the layer and ask for a visitor's pass themselves.
        let page_refused = route.path.starts_with("/s/") && status == 401;
        if !layer_refused(status, headers) && !page_refused {
            p.push(format!(
                "without credentials: expected 401 from the authentication layer, got {status}"
            ));
        }
        return p;
    }
    if layer_refused(status, headers) {
        p.push("valid credentials refused by the authentication layer".into());
        return p;
    }
    let refused = matches!(status, 401 | 403 | 404);
    match (route.shows, allowed) {
        (Shows::Served, _) => {}
        (Shows::NodeUnreachable, true) => {
            if !node_unreachable || !text.contains("\"unavailable\"") {
                p.push(format!(
                    "allowed: expected 503 unavailable from the unreachable node, got {status}: {}",
                    short(&text)
                ));
            }
        }
        (Shows::Listing, true) => {
            if !ok || !text.contains(marker) {
                p.push(format!("allowed, but the target is not listed ({status})"));
            }
        }
        (Shows::Listing, false) => {
            if ok && text.contains(marker) {
                p.push("REFUSED BY POLICY, YET LISTED".into());
            } else if !ok && !refused {
                p.push(format!("unexpected {status}"));
            }
        }
        (Shows::Relayed, true) => {
            if !ok && !relayed_but_unreachable {
                p.push(format!("allowed, answered {status}: {}", short(&text)));
            }
        }
        (Shows::Data, true) | (Shows::Change, true) | (Shows::Report, true) => {
            if !ok {
                p.push(format!("allowed, answered {status}: {}", short(&text)));
            } else if route.shows == Shows::Data && body.is_empty() {
                p.push("allowed, answered an empty body".into());
            }
        }
        (Shows::Zip, true) => {
            if !ok || !body.starts_with(b"PK") {
                p.push(format!("allowed, no zip ({status}): {}", short(&text)));
            }
        }
        (_, false) => {
            if ok {
                p.push(format!("REFUSED BY POLICY, YET ANSWERED {status}"));
            } else if !refused {
                p.push(format!("refused with an unexpected {status}"));
            } else if route.shows == Shows::Data
                && route.scope == Scope::Study
                && !visible
                && status != 404
            {
                p.push(format!(
                    "a study the caller cannot see answered {status}, not 404"
                ));
            }
        }
    }
    p
}

fn short(text: &str) -> String {
    text.chars().take(160).collect()
}

/// The patients the caller may not see must not appear in any answer (an audit report may
/// name the caller's own organisation's patients: reading the trail is its purpose).
pub(super) async fn leaks(
    site: &Site,
    route: &Route,
    cred: &Credential,
    body: &[u8],
) -> Vec<String> {
    let text = String::from_utf8_lossy(body);
    let mut out = Vec::new();
    for p in [&site.own, &site.granted, &site.other] {
        let pid = &p.patient.1;
        if !text.contains(pid.as_str()) {
            continue;
        }
        let may = match &cred.principal {
            Some(pr) => {
                let own_trail = route.shows == Shows::Report && p.org == pr.org_str();
                own_trail
                    || decide(site, pr, Action::Retrieve, &Resource::Study(p.study_ref())).await
            }
            None => false,
        };
        if !may {
            out.push(format!(
                "LEAK: the answer names patient {pid} of {} (not visible to the caller)",
                p.org
            ));
        }
    }
    out
}

/// The effect of a change: made exactly when allowed.
pub(super) async fn effects(
    site: &Site,
    route: &Route,
    aim: &Aim,
    who: Who,
    allowed: bool,
) -> Vec<String> {
    let mut out = Vec::new();
    let dir = site.storage.auth.directory();
    match (route.method, route.path) {
        ("DELETE", "/api/v1/share-links/{id}") if aim.link != "ghostlink000" => {
            let revoked = dir
                .share_link(&aim.link)
                .await
                .expect("link")
                .is_some_and(|l| l.revoked);
            if revoked != allowed {
                out.push(format!("share link revoked: {revoked}, allowed: {allowed}"));
            }
        }
        ("DELETE", "/api/v1/upload-links/{id}") if aim.link != "ghostlink000" => {
            let revoked = dir
                .upload_link(&aim.link)
                .await
                .expect("link")
                .is_some_and(|l| l.revoked);
            if revoked != allowed {
                out.push(format!(
                    "upload link revoked: {revoked}, allowed: {allowed}"
                ));
            }
        }
        ("POST", "/api/v1/transfers/jobs/{id}/retry") if aim.exists => {
            let ready =
                site.job_state(&aim.link).await == Some(vesalius_store::outbox::JobState::Ready);
            if ready != allowed {
                out.push(format!("parked job retried: {ready}, allowed: {allowed}"));
            }
        }
        (m @ ("PUT" | "DELETE"), p)
            if aim.exists
                && ["/api/v1/peers/", "/api/v1/nodes/", "/api/v1/routes/"]
                    .iter()
                    .any(|x| p.starts_with(x)) =>
        {
            let reg = site.storage.exchange.registry();
            // What the record says now: absent, as the fixture made it, or changed by a PUT.
            let text = if p.starts_with("/api/v1/peers/") {
                reg.peer(&aim.link)
                    .await
                    .expect("peer")
                    .map(|r| r.description)
            } else if p.starts_with("/api/v1/nodes/") {
                reg.node(&aim.link)
                    .await
                    .expect("node")
                    .map(|r| r.description)
            } else {
                reg.routes()
                    .await
                    .expect("routes")
                    .into_iter()
                    .find(|r| r.id == aim.link)
                    .map(|r| r.name)
            };
            let changed = match (m, text) {
                ("DELETE", t) => t.is_none(),
                (_, t) => t.is_some_and(|t| t.starts_with("matrix ")),
            };
            if changed != allowed {
                out.push(format!("{m} made: {changed}, allowed: {allowed}"));
            }
        }
        // The admin console's API (issue 6): the user or token of the cell.
        ("POST", "/api/v1/orgs") => {
            let made = dir.org(&aim.link).await.expect("org").is_some();
            if made != allowed {
                out.push(format!("organisation created: {made}, allowed: {allowed}"));
            }
        }
        ("PATCH", "/api/v1/orgs/{org}") => {
            let set = vesalius_api::device_cache::hours(dir.as_ref(), ORG_A)
                .await
                .expect("setting");
            if (set == Some(7)) != allowed {
                out.push(format!(
                    "device image cache set: {set:?}, allowed: {allowed}"
                ));
            }
        }
        ("POST", "/api/v1/users") => {
            let made = site.user_named(&aim.link).await.is_some();
            if made != allowed {
                out.push(format!("user created: {made}, allowed: {allowed}"));
            }
        }
        ("PATCH", "/api/v1/users/{name}") => {
            let u = site.user_named(&aim.link).await.expect("target user");
            let changed = u.memberships.iter().any(|m| m.role == Role::Radiographer);
            if changed != allowed {
                out.push(format!("role changed: {changed}, allowed: {allowed}"));
            }
        }
        ("PUT", "/api/v1/users/{name}/memberships/{org}") => {
            let u = site.user_named(&aim.link).await.expect("target user");
            let changed = u.memberships.iter().any(|m| m.role == Role::Radiographer);
            if changed != allowed {
                out.push(format!("role set: {changed}, allowed: {allowed}"));
            }
        }
        ("DELETE", "/api/v1/users/{name}/memberships/{org}") => {
            let u = site.user_named(&aim.link).await.expect("target user");
            let left = !u.memberships.iter().any(|m| m.org == ORG_A);
            if left != allowed {
                out.push(format!("left a: {left}, allowed: {allowed}"));
            }
        }
        ("POST", "/api/v1/users/{name}/password-link") => {
            let u = site.user_named(&aim.link).await.expect("target user");
            let reset = u.password_hash.is_none();
            if reset != allowed {
                out.push(format!("password reset: {reset}, allowed: {allowed}"));
            }
        }
        ("DELETE", "/api/v1/tokens/{id}") => {
            let revoked = dir
                .token(&aim.link)
                .await
                .expect("token")
                .is_some_and(|t| t.revoked);
            if revoked != allowed {
                out.push(format!("token revoked: {revoked}, allowed: {allowed}"));
            }
        }
        ("POST", "/dicom-web/studies")
        | ("POST", "/dicom-web/studies/{study}")
        | ("POST", "/api/v1/instances") => {
            let f = aim.fresh.as_ref().expect("a fresh study");
            let holders = site.holders(&f.study, &f.sop).await;
            // Guest uploads through STOW-RS land in the inbox, everything else in `a`.
            let want: Vec<String> = if !allowed {
                Vec::new()
            } else if who == Who::UploadLink {
                vec![inbox_org(ORG_A)]
            } else {
                vec![ORG_A.to_owned()]
            };
            let fine = holders == want;
            if !fine {
                out.push(format!("stored into {holders:?} (allowed: {allowed})"));
            }
        }
        (_, p) if p.starts_with("/api/v1/inbox/studies/") => {
            if let Some(placed) = &aim.placed {
                let left = !site
                    .instances_in(&placed.org, &placed.sample.study)
                    .await
                    .is_empty();
                if left == allowed {
                    out.push(format!(
                        "inbox study still there: {left}, allowed: {allowed}"
                    ));
                }
            }
        }
        ("POST", "/api/v1/studies/{study}/link-patient")
        | ("POST", "/api/v1/patients/merge")
        | ("POST", "/api/v1/patients/split") => {
            if let Some(placed) = &aim.placed {
                let now = site.patient_of(&placed.org, &placed.sample.study).await;
                let changed = now.as_ref() != Some(&placed.patient);
                if changed != allowed {
                    out.push(format!(
                        "patient now {now:?} (was {:?}), allowed: {allowed}",
                        placed.patient
                    ));
                }
            }
        }
        ("POST", "/api/v1/studies/{study}/key-images") => {
            if let Some(placed) = &aim.placed {
                // Key Object Selection Documents made in the study.
                let made = take_made(site, placed, "1.2.840.10008.5.1.4.1.1.88.59").await;
                if (made == 0) == allowed {
                    out.push(format!("key objects made: {made}, allowed: {allowed}"));
                }
            }
        }
        ("DELETE", "/api/v1/studies/{study}/key-images/{sop}") => {
            if let Some(placed) = &aim.placed {
                // Whoever asks, the image stays (only key image documents can be withdrawn),
                // and no document is made (nothing was marked).
                let left = site
                    .instances_in(&placed.org, &placed.sample.study)
                    .await
                    .iter()
                    .any(|i| i.sop_instance_uid == placed.sample.sop);
                let made = take_made(site, placed, "1.2.840.10008.5.1.4.1.1.88.59").await;
                if !left || made > 0 {
                    out.push(format!(
                        "image still there: {left}, key objects made: {made}"
                    ));
                }
            }
        }
        ("POST", "/api/v1/studies/{study}/measurements") => {
            if let Some(placed) = &aim.placed {
                // Measurement reports (Comprehensive SR) made in the study.
                let made = take_made(site, placed, "1.2.840.10008.5.1.4.1.1.88.33").await;
                if (made == 0) == allowed {
                    out.push(format!(
                        "measurement reports made: {made}, allowed: {allowed}"
                    ));
                }
            }
        }
        ("DELETE", p) if p.starts_with("/api/v1/studies/") => {
            if let Some(placed) = &aim.placed {
                let left = !site
                    .instances_in(&placed.org, &placed.sample.study)
                    .await
                    .is_empty();
                if left == allowed {
                    out.push(format!("study still there: {left}, allowed: {allowed}"));
                }
            }
        }
        _ => {}
    }
    out
}

/// How many instances of `sop_class` a call made in the placed sample's study; they are
/// removed again, so the next cell starts without.
async fn take_made(site: &Site, placed: &super::fixture::Placed, sop_class: &str) -> usize {
    let made: Vec<_> = site
        .instances_in(&placed.org, &placed.sample.study)
        .await
        .into_iter()
        .filter(|i| i.sop_class_uid == sop_class)
        .collect();
    for i in &made {
        let scope = vesalius_store::query::Scope::instance(
            &i.study_uid,
            &i.series_uid,
            &i.sop_instance_uid,
        );
        site.storage
            .ingestor
            .index()
            .delete(&scope)
            .await
            .expect("delete");
    }
    made.len()
}
