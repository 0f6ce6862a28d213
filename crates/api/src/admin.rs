//! The administration API of the admin console (issue 6): organisations, users, roles, API
//! tokens, an audit search and the system's health. The same changes the `vesalius admin` CLI
//! makes, through the same [`Authenticator`] calls, for administrators in the browser.
//!
//! - `GET /api/v1/orgs`: the organisations the caller administers, with their number of
//!   members and their `device_image_cache` setting. `POST /api/v1/orgs` `{"id", "name"?}`: a
//!   new organisation (site level, below). `PATCH /api/v1/orgs/{org}` `{"device_image_cache":
//!   {"allowed", "hours"?}}`: whether its users' browsers may keep the viewer's images, for at
//!   most `hours` (1–168, default 12; issue 6, [`crate::device_cache`]).
//! - `GET /api/v1/users?org=&limit=&offset=`: users with a membership in an organisation the
//!   caller administers (only those memberships are shown; `org`: of that one only), by
//!   username, a page at a time. `POST /api/v1/users` `{"username", "role", "org"?,
//!   "display_name"?, "email"?, "service"?}`: a person gets no password but a one-time
//!   **password link** (`/setup?token=…`, shown once); a service account gets neither (it acts
//!   through tokens).
//! - `PATCH /api/v1/users/{username}` `{"org"?, "role"?, "disabled"?, "site_admin"?}`: change
//!   the user's role in one organisation (default: the caller's), disable or enable them, make
//!   them a site administrator or no longer one (site administrators only).
//!   `POST /api/v1/users/{username}/password-link`: a new password link; the user's password
//!   stops working at once.
//! - `PUT /api/v1/users/{username}/memberships/{org}` `{"role"}`, `DELETE` the same: the user
//!   joins an organisation (or their role there changes), or leaves it (issue 6, [`members`]).
//! - `GET /api/v1/tokens`: the tokens of the organisations the caller administers (never their
//!   secrets). `POST /api/v1/tokens` `{"username", "role", "name", "org"?, "ttl_days"?}`: the
//!   token text is in the answer once. `DELETE /api/v1/tokens/{id}`: revoke.
//! - `GET /api/v1/audit/events?patient_id=&issuer=&study=&user=&action=&since_ms=&until_ms=&limit=&before=`:
//!   the caller's organisation's audit trail, newest first, a page at a time (`before`: the
//!   `next_before` of the previous page; `user`: a username, which finds
//!   what they did in sessions and with each of their tokens, or any actor id; `patient_id`
//!   without `issuer`: under every issuer the organisation holds that ID with, and none).
//! - `GET /api/v1/system`: version, free disk space and its watermark, index counts.
//!
//! ## Access
//! Everything needs [`Action::ManageOrg`] in the caller's own organisation (administrators, the
//! server itself), except the audit search, which needs [`Action::ReadAudit`] there
//! (administrators and auditors). A change to a user needs `ManageOrg` on the organisation it
//! concerns; disabling a user or issuing their password link needs it on **every** organisation
//! the user belongs to (either takes the whole account). Creating an organisation is a
//! site-level change: it needs `ManageOrg` on [`Resource::Site`], which the policy gives to the
//! server itself (the `vesalius admin org create` command; over HTTP, a site whose
//! `[auth] required` is off serves anonymous requests as the server) and to a **site
//! administrator** logged in with a session (issue 6: the first administrator of set-up, and
//! whoever `vesalius admin user site-admin` or a site administrator names, `PATCH
//! /api/v1/users/{username}` `{"site_admin": true}`). A site administrator also administers
//! every organisation (`ManageOrg` on each: its users, tokens, links), so the console lists them
//! all and gives the new one its first administrator; not its images or audit trail. No role of
//! an organisation reaches site-level changes, administrators included (403). Users outside the caller's
//! organisations answer 404, like missing ones.
//!
//! Every change is audited (`org-settings`, `user-create`, `token-create`, `token-revoke`, `password-link`
//! by the authenticator; `admin-change` with `details.change` `membership-add`, `membership-set`,
//! `membership-remove` by the authenticator too; `org-create`, `membership-set` (PATCH),
//! `user-disable`, `user-enable` here); an audit search is itself audited (`audit-search`).

use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, patch, post};
use axum::{Extension, Json, Router};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use vesalius_auth::authenticator::{NewUser, normalize_username};
use vesalius_auth::{Action, Authenticator, Caller, Origin, Resource};
use vesalius_core::ErrorKind;
use vesalius_store::Ingestor;
use vesalius_store::audit::{AuditFilter, Outcome};
use vesalius_store::directory::{ApiToken, DirectoryChange, Membership, Org, Role, User};

use crate::links::base_url;

mod members;
use crate::{ApiError, ApiOptions, Services, caller_of};

/// The most records one audit search returns.
const MAX_AUDIT_RECORDS: u32 = 1000;
/// Users per page of the list: by default, and at most.
const DEFAULT_USERS: usize = 100;
const MAX_USERS: usize = 500;
/// The longest organisation name, in characters.
const MAX_ORG_NAME: usize = 200;
/// The longest token lifetime the console issues, in days (ten years).
const MAX_TOKEN_DAYS: i64 = 3650;

/// The administration routes (mount at the root).
pub fn router(auth: Arc<Authenticator>, ingestor: Arc<Ingestor>, options: ApiOptions) -> Router {
    Router::new()
        .route("/api/v1/orgs", get(orgs).post(create_org))
        .route("/api/v1/orgs/{org}", patch(change_org))
        .route("/api/v1/users", get(users).post(create_user))
        .route("/api/v1/users/{name}", patch(change_user))
        .route("/api/v1/users/{name}/password-link", post(password_link))
        .route(
            "/api/v1/users/{name}/memberships/{org}",
            axum::routing::put(members::join).delete(members::leave),
        )
        .route("/api/v1/tokens", get(tokens).post(create_token))
        .route("/api/v1/tokens/{id}", axum::routing::delete(revoke_token))
        .route("/api/v1/audit/events", get(audit_events))
        .route("/api/v1/system", get(system))
        .with_state(Services {
            auth,
            ingestor,
            options,
            // The console's routes upload nothing (the resumable uploads are `access_router`'s).
            uploads: Arc::new(crate::uploads::Uploads::open(None)),
        })
}

type Result<T> = std::result::Result<T, ApiError>;

fn auth_error(e: vesalius_auth::Error) -> ApiError {
    ApiError::new(e.kind(), e.to_string())
}

fn bad(message: impl Into<String>) -> ApiError {
    ApiError::new(ErrorKind::BadRequest, message)
}

/// A JSON body, or 400 naming what is wrong with it.
fn body<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T> {
    serde_json::from_slice(bytes).map_err(|e| bad(format!("unreadable body: {e}")))
}

fn origin(c: &Caller) -> Origin<'_> {
    Origin::new(&c.source, &c.user_agent)
}

/// Whether the caller may administer `org`.
fn manages(c: &Caller, org: &str) -> bool {
    vesalius_auth::authorize(
        &c.principal,
        Action::ManageOrg,
        &Resource::org(org.to_owned()),
        &[],
        vesalius_auth::now_ms(),
    )
    .is_allowed()
}

/// The caller, who must administer its own organisation (or be the server).
fn admin(caller: Option<Extension<Caller>>) -> Result<Caller> {
    let c = caller_of(caller)?;
    if c.principal.is_system() || crate::allowed_in_own_org(&c, Action::ManageOrg) {
        Ok(c)
    } else {
        Err(ApiError::new(
            ErrorKind::Forbidden,
            format!(
                "{} may not administer {:?}",
                c.principal.actor.name,
                c.org()
            ),
        ))
    }
}

fn parse_role(s: &str) -> Result<Role> {
    Role::parse(s.trim()).ok_or_else(|| {
        let all: Vec<_> = Role::ALL.iter().map(|r| r.as_str()).collect();
        bad(format!("unknown role {s:?}; one of {}", all.join(", ")))
    })
}

// ---------------------------------------------------------------------------------------------
// Organisations.

/// Whether the caller may make site-level changes (create organisations, name site
/// administrators): `ManageOrg` on the whole site, which the policy gives to the server itself
/// and to logged-in site administrators (issue 6).
fn site_admin(c: &Caller) -> bool {
    vesalius_auth::authorize(
        &c.principal,
        Action::ManageOrg,
        &Resource::Site,
        &[],
        vesalius_auth::now_ms(),
    )
    .is_allowed()
}

async fn orgs(
    State(sv): State<Services>,
    caller: Option<Extension<Caller>>,
) -> Result<Json<Value>> {
    let c = admin(caller)?;
    let dir = sv.auth.directory();
    let users = dir.users().await?;
    let mut list = Vec::new();
    for o in dir.orgs().await? {
        if !manages(&c, &o.id) {
            continue;
        }
        let members = users
            .iter()
            .filter(|u| u.memberships.iter().any(|m| m.org == o.id))
            .count();
        let cache = device_cache_view(dir.as_ref(), &o.id).await?;
        list.push(json!({
            "id": o.id, "name": o.name, "created_ms": o.created_ms,
            "current": o.id == c.org(), "members": members, "device_image_cache": cache,
        }));
    }
    Ok(Json(json!({ "orgs": list, "may_create": site_admin(&c) })))
}

/// An organisation's `device_image_cache` as the API shows it (crate::device_cache).
async fn device_cache_view(
    dir: &dyn vesalius_store::directory::Directory,
    org: &str,
) -> Result<Value> {
    let h = crate::device_cache::hours(dir, org).await?;
    Ok(json!({
        "allowed": h.is_some(),
        "hours": h.unwrap_or(crate::device_cache::DEFAULT_HOURS),
        "max_hours": crate::device_cache::MAX_HOURS,
    }))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ChangeOrg {
    device_image_cache: Option<DeviceImageCache>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DeviceImageCache {
    allowed: bool,
    #[serde(default)]
    hours: Option<u32>,
}

/// `PATCH /api/v1/orgs/{org}` `{"device_image_cache": {"allowed", "hours"?}}`: whether the
/// organisation's users' browsers may keep the viewer's images, and for how long (issue 6,
/// crate::device_cache). For the organisation's administrators (and site administrators);
/// an organisation the caller does not administer answers 404 like a missing one. Audited
/// `admin-change` (`org-settings`).
async fn change_org(
    State(sv): State<Services>,
    caller: Option<Extension<Caller>>,
    Path(org): Path<String>,
    bytes: axum::body::Bytes,
) -> Result<Json<Value>> {
    let c = admin(caller)?;
    let dir = sv.auth.directory();
    if !manages(&c, &org) || dir.org(&org).await?.is_none() {
        return Err(ApiError::new(
            ErrorKind::NotFound,
            format!("no organisation {org:?} that you administer"),
        ));
    }
    let b: ChangeOrg = body(&bytes)?;
    let Some(d) = b.device_image_cache else {
        return Err(bad("nothing to change: give device_image_cache"));
    };
    let max = crate::device_cache::MAX_HOURS;
    let hours = d.hours.unwrap_or(crate::device_cache::DEFAULT_HOURS);
    if !(1..=max).contains(&hours) {
        return Err(bad(format!(
            "device_image_cache.hours is 1 to {max} (a week), not {hours}"
        )));
    }
    let key = format!("{}{org}", crate::device_cache::SETTING_PREFIX);
    let change = if d.allowed {
        DirectoryChange::PutSetting {
            key,
            value: hours.to_string(),
        }
    } else {
        DirectoryChange::DeleteSetting(key)
    };
    let event = c.event(
        "admin-change",
        Outcome::Success,
        &org,
        None,
        json!({"change": "org-settings", "org_id": org,
               "device_image_cache": {"allowed": d.allowed, "hours": d.allowed.then_some(hours)}}),
    );
    dir.apply(vec![change], vec![event]).await?;
    Ok(Json(json!({
        "org": org, "device_image_cache": device_cache_view(dir.as_ref(), &org).await?,
    })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateOrg {
    id: String,
    #[serde(default)]
    name: Option<String>,
}

async fn create_org(
    State(sv): State<Services>,
    caller: Option<Extension<Caller>>,
    bytes: axum::body::Bytes,
) -> Result<Response> {
    let c = caller_of(caller)?;
    // Refused before the body is read: whether an organisation exists is not theirs to learn.
    if !site_admin(&c) {
        return Err(ApiError::new(
            ErrorKind::Forbidden,
            format!(
                "{} may not create organisations: that is a site-level change, for site \
                 administrators (`vesalius admin user site-admin NAME`) and \
                 `vesalius admin org create ID` on the server",
                c.principal.actor.name
            ),
        ));
    }
    let b: CreateOrg = body(&bytes)?;
    let id = b.id.trim();
    if !Org::valid_id(id) {
        return Err(bad(format!(
            "organisation ids are 1-64 lower-case letters, digits and '-', not starting with \
             '-', not {id:?}"
        )));
    }
    let name = b
        .name
        .map(|n| n.trim().to_owned())
        .filter(|n| !n.is_empty())
        .unwrap_or_else(|| id.to_owned());
    if name.chars().count() > MAX_ORG_NAME || name.chars().any(char::is_control) {
        return Err(bad(format!(
            "an organisation's name is at most {MAX_ORG_NAME} characters, without control \
             characters"
        )));
    }
    let dir = sv.auth.directory();
    if dir.org(id).await?.is_some() {
        return Err(ApiError::new(
            ErrorKind::Conflict,
            format!("organisation {id:?} already exists"),
        ));
    }
    let org = Org {
        id: id.to_owned(),
        name,
        created_ms: sv.auth.now_ms(),
    };
    // The same change and event as `vesalius admin org create`.
    let events = vec![c.event(
        "admin-change",
        Outcome::Success,
        &org.id,
        None,
        json!({"change": "org-create", "org_id": org.id, "name": org.name}),
    )];
    let changes = vec![DirectoryChange::PutOrg(org.clone())];
    let members = 0;
    dir.apply(changes, events).await?;
    Ok((
        StatusCode::CREATED,
        Json(json!({
            "org": {"id": org.id, "name": org.name, "created_ms": org.created_ms,
                    "current": org.id == c.org(), "members": members},
        })),
    )
        .into_response())
}

// ---------------------------------------------------------------------------------------------
// Users.

/// A user as the console shows them: no password hash, only the memberships the caller
/// administers.
#[derive(Serialize)]
struct UserView {
    id: String,
    username: String,
    display_name: String,
    email: String,
    memberships: Vec<Membership>,
    /// Whether the user also belongs to organisations the caller does not administer (which
    /// are not shown): the console offers to take them out of one of the shown only then.
    memberships_elsewhere: bool,
    service: bool,
    disabled: bool,
    has_password: bool,
    oidc_linked: bool,
    must_change_password: bool,
    created_ms: i64,
    site_admin: bool,
}

fn view(c: &Caller, u: &User) -> UserView {
    UserView {
        id: u.id.clone(),
        username: u.username.clone(),
        display_name: u.display_name.clone(),
        email: u.email.clone(),
        memberships: u
            .memberships
            .iter()
            .filter(|m| manages(c, &m.org))
            .cloned()
            .collect(),
        memberships_elsewhere: u.memberships.iter().any(|m| !manages(c, &m.org)),
        service: u.service,
        disabled: u.disabled,
        has_password: u.password_hash.is_some(),
        oidc_linked: u.oidc.is_some(),
        must_change_password: u.must_change_password,
        created_ms: u.created_ms,
        site_admin: u.site_admin,
    }
}

fn visible(c: &Caller, u: &User) -> bool {
    u.memberships.iter().any(|m| manages(c, &m.org))
}

/// The user `name` (username or id) if the caller administers one of their organisations;
/// 404 otherwise, like a missing one.
async fn find_user(sv: &Services, c: &Caller, name: &str) -> Result<User> {
    let dir = sv.auth.directory();
    let found = match dir.user_by_name(&normalize_username(name)).await? {
        Some(u) => Some(u),
        None => dir.user(name).await?,
    };
    match found {
        Some(u) if visible(c, &u) => Ok(u),
        _ => Err(ApiError::new(
            ErrorKind::NotFound,
            format!("no user {name:?}"),
        )),
    }
}

#[derive(Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
struct UsersQuery {
    org: Option<String>,
    limit: Option<usize>,
    offset: Option<usize>,
}

async fn users(
    State(sv): State<Services>,
    caller: Option<Extension<Caller>>,
    q: std::result::Result<Query<UsersQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<Value>> {
    let c = admin(caller)?;
    let Query(q) = q.map_err(|e| bad(e.body_text()))?;
    let limit = match q.limit {
        None => DEFAULT_USERS,
        Some(l) if (1..=MAX_USERS).contains(&l) => l,
        Some(l) => return Err(bad(format!("limit is 1-{MAX_USERS}, not {l}"))),
    };
    let offset = q.offset.unwrap_or(0);
    let org = nonempty(q.org);
    if let Some(o) = &org {
        // Refused before looking, like creating a user there.
        if !manages(&c, o) {
            return Err(ApiError::new(
                ErrorKind::Forbidden,
                format!("{} may not administer {o:?}", c.principal.actor.name),
            ));
        }
        if sv.auth.directory().org(o).await?.is_none() {
            return Err(ApiError::new(
                ErrorKind::NotFound,
                format!("no organisation {o:?}"),
            ));
        }
    }
    let mut all: Vec<User> = sv
        .auth
        .directory()
        .users()
        .await?
        .into_iter()
        .filter(|u| visible(&c, u))
        .filter(|u| {
            org.as_ref()
                .is_none_or(|o| u.memberships.iter().any(|m| &m.org == o))
        })
        .collect();
    all.sort_by(|a, b| a.username.cmp(&b.username).then(a.id.cmp(&b.id)));
    let total = all.len();
    let page: Vec<UserView> = all
        .iter()
        .skip(offset)
        .take(limit)
        .map(|u| view(&c, u))
        .collect();
    Ok(Json(json!({
        "users": page, "total": total, "limit": limit, "offset": offset,
        "more": offset.saturating_add(limit) < total,
    })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateUser {
    username: String,
    role: String,
    #[serde(default)]
    org: Option<String>,
    #[serde(default)]
    display_name: Option<String>,
    #[serde(default)]
    email: String,
    #[serde(default)]
    service: bool,
}

/// The password link of a person, as the answer shows it once.
fn link_json(
    sv: &Services,
    headers: &HeaderMap,
    l: &vesalius_auth::authenticator::SetupLink,
) -> Value {
    json!({
        "url": format!("{}{}", base_url(sv, headers), l.path()),
        "expires_ms": l.expires_ms,
    })
}

async fn create_user(
    State(sv): State<Services>,
    caller: Option<Extension<Caller>>,
    headers: HeaderMap,
    bytes: axum::body::Bytes,
) -> Result<Response> {
    let c = admin(caller)?;
    let b: CreateUser = body(&bytes)?;
    let role = parse_role(&b.role)?;
    if b.service != (role == Role::Service) {
        return Err(bad(
            "service accounts hold the service role, and only they do",
        ));
    }
    let org = b.org.unwrap_or_else(|| c.org().to_owned());
    // Refused before looking: whether another organisation exists is not the caller's to learn.
    if !manages(&c, &org) {
        return Err(ApiError::new(
            ErrorKind::Forbidden,
            format!("{} may not administer {org:?}", c.principal.actor.name),
        ));
    }
    if sv.auth.directory().org(&org).await?.is_none() {
        return Err(ApiError::new(
            ErrorKind::NotFound,
            format!("no organisation {org:?}"),
        ));
    }
    let display = b
        .display_name
        .map(|d| d.trim().to_owned())
        .filter(|d| !d.is_empty())
        .unwrap_or_else(|| b.username.trim().to_owned());
    let memberships = [Membership { org, role }];
    let user = sv
        .auth
        .create_user(
            &c.principal,
            NewUser {
                username: &b.username,
                display_name: &display,
                email: b.email.trim(),
                memberships: &memberships,
                password: None,
                service: b.service,
                must_change_password: false,
            },
            origin(&c),
        )
        .await
        .map_err(auth_error)?;
    let link = if user.service {
        Value::Null
    } else {
        let l = sv
            .auth
            .password_link(&c.principal, &user.id, origin(&c))
            .await
            .map_err(auth_error)?;
        link_json(&sv, &headers, &l)
    };
    Ok((
        StatusCode::CREATED,
        Json(json!({ "user": view(&c, &user), "password_link": link })),
    )
        .into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ChangeUser {
    #[serde(default)]
    org: Option<String>,
    #[serde(default)]
    role: Option<String>,
    #[serde(default)]
    disabled: Option<bool>,
    /// Issue 6: make the user a site administrator, or no longer one (site administrators
    /// only).
    #[serde(default)]
    site_admin: Option<bool>,
}

async fn change_user(
    State(sv): State<Services>,
    caller: Option<Extension<Caller>>,
    Path(name): Path<String>,
    bytes: axum::body::Bytes,
) -> Result<Json<Value>> {
    let c = admin(caller)?;
    let b: ChangeUser = body(&bytes)?;
    if b.role.is_none() && b.disabled.is_none() && b.site_admin.is_none() {
        return Err(bad(
            "nothing to change: give \"role\", \"disabled\" or \"site_admin\"",
        ));
    }
    if b.site_admin.is_some() && !site_admin(&c) {
        return Err(ApiError::new(
            ErrorKind::Forbidden,
            format!(
                "{} may not name site administrators: only a site administrator may",
                c.principal.actor.name
            ),
        ));
    }
    let role = b.role.as_deref().map(parse_role).transpose()?;
    let mut user = find_user(&sv, &c, &name).await?;
    let mut changes = Vec::new();
    let mut events = Vec::new();
    let first_org = user.home_org();
    if let Some(role) = role {
        let org = b.org.clone().unwrap_or_else(|| c.org().to_owned());
        if !manages(&c, &org) {
            return Err(ApiError::new(
                ErrorKind::Forbidden,
                format!("{} may not administer {org:?}", c.principal.actor.name),
            ));
        }
        if !user.memberships.iter().any(|m| m.org == org) {
            return Err(ApiError::new(
                ErrorKind::NotFound,
                format!("{} is not a member of {org:?}", user.username),
            ));
        }
        if user.service != (role == Role::Service) {
            return Err(bad(
                "service accounts hold the service role, and only they do",
            ));
        }
        if user.id.as_str() == c.principal.user_id.as_deref().unwrap_or("")
            && org == c.org()
            && role != Role::Admin
        {
            return Err(ApiError::new(
                ErrorKind::Conflict,
                "you cannot take your own administrator role away here",
            ));
        }
        for m in user.memberships.iter_mut().filter(|m| m.org == org) {
            m.role = role;
        }
        events.push(c.event(
            "admin-change",
            Outcome::Success,
            &org,
            None,
            json!({"change": "membership-set", "user_id": user.id, "username": user.username,
                   "org": org, "role": role.as_str()}),
        ));
    }
    if let Some(disabled) = b.disabled
        && disabled != user.disabled
    {
        if let Some(m) = user.memberships.iter().find(|m| !manages(&c, &m.org)) {
            return Err(ApiError::new(
                ErrorKind::Forbidden,
                format!(
                    "{} also belongs to {:?}, which {} does not administer",
                    user.username, m.org, c.principal.actor.name
                ),
            ));
        }
        if disabled && c.principal.user_id.as_deref() == Some(user.id.as_str()) {
            return Err(ApiError::new(
                ErrorKind::Conflict,
                "you cannot disable yourself",
            ));
        }
        user.disabled = disabled;
        let what = if disabled {
            "user-disable"
        } else {
            "user-enable"
        };
        events.push(c.event(
            "admin-change",
            Outcome::Success,
            &first_org,
            None,
            json!({"change": what, "user_id": user.id, "username": user.username}),
        ));
    }
    if !events.is_empty() {
        changes.push(DirectoryChange::PutUser(user.clone()));
        sv.auth.directory().apply(changes, events).await?;
    }
    if let Some(on) = b.site_admin {
        // Audited `admin-change` `site-admin-grant` / `site-admin-revoke` by the authenticator.
        user = sv
            .auth
            .set_site_admin(&c.principal, &user.id, on, origin(&c))
            .await
            .map_err(auth_error)?;
    }
    Ok(Json(json!({ "user": view(&c, &user) })))
}

async fn password_link(
    State(sv): State<Services>,
    caller: Option<Extension<Caller>>,
    headers: HeaderMap,
    Path(name): Path<String>,
) -> Result<Json<Value>> {
    let c = admin(caller)?;
    let user = find_user(&sv, &c, &name).await?;
    let l = sv
        .auth
        .password_link(&c.principal, &user.id, origin(&c))
        .await
        .map_err(auth_error)?;
    Ok(Json(
        json!({ "username": user.username, "password_link": link_json(&sv, &headers, &l) }),
    ))
}

// ---------------------------------------------------------------------------------------------
// Tokens.

fn token_json(t: &ApiToken, username: &str, now: i64) -> Value {
    let status = if t.revoked {
        "revoked"
    } else if t.expires_ms.is_some_and(|e| now >= e) {
        "expired"
    } else {
        "active"
    };
    json!({
        "id": t.id, "name": t.name, "org": t.org, "role": t.role, "user_id": t.user_id,
        "username": username, "created_ms": t.created_ms, "expires_ms": t.expires_ms,
        "revoked": t.revoked, "status": status,
    })
}

async fn tokens(
    State(sv): State<Services>,
    caller: Option<Extension<Caller>>,
) -> Result<Json<Value>> {
    let c = admin(caller)?;
    let dir = sv.auth.directory();
    let names: std::collections::HashMap<String, String> = dir
        .users()
        .await?
        .into_iter()
        .map(|u| (u.id, u.username))
        .collect();
    let now = sv.auth.now_ms();
    let mut out = Vec::new();
    for o in dir.orgs().await? {
        if !manages(&c, &o.id) {
            continue;
        }
        for t in dir.tokens(&o.id).await? {
            let name = names.get(&t.user_id).map_or("", String::as_str);
            out.push(token_json(&t, name, now));
        }
    }
    Ok(Json(json!({ "tokens": out })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateToken {
    username: String,
    role: String,
    name: String,
    #[serde(default)]
    org: Option<String>,
    #[serde(default)]
    ttl_days: Option<i64>,
}

async fn create_token(
    State(sv): State<Services>,
    caller: Option<Extension<Caller>>,
    bytes: axum::body::Bytes,
) -> Result<Response> {
    let c = admin(caller)?;
    let b: CreateToken = body(&bytes)?;
    let role = parse_role(&b.role)?;
    let name = b.name.trim();
    if name.is_empty() || name.chars().count() > 100 {
        return Err(bad("a token needs a name of 1-100 characters"));
    }
    let ttl_ms = match b.ttl_days {
        None => None,
        Some(d) if (1..=MAX_TOKEN_DAYS).contains(&d) => Some(d * 86_400_000),
        Some(d) => {
            return Err(bad(format!(
                "ttl_days is 1-{MAX_TOKEN_DAYS} (or absent: no expiry), not {d}"
            )));
        }
    };
    let org = b.org.unwrap_or_else(|| c.org().to_owned());
    if !manages(&c, &org) {
        return Err(ApiError::new(
            ErrorKind::Forbidden,
            format!("{} may not administer {org:?}", c.principal.actor.name),
        ));
    }
    let user = find_user(&sv, &c, &b.username).await?;
    let (rec, text) = sv
        .auth
        .create_token(&c.principal, &user.id, &org, role, name, ttl_ms, origin(&c))
        .await
        .map_err(auth_error)?;
    let mut v = token_json(&rec, &user.username, sv.auth.now_ms());
    v["token"] = json!(text);
    Ok((StatusCode::CREATED, Json(v)).into_response())
}

async fn revoke_token(
    State(sv): State<Services>,
    caller: Option<Extension<Caller>>,
    Path(id): Path<String>,
) -> Result<Json<Value>> {
    let c = admin(caller)?;
    // Another organisation's token answers 404, like a missing one.
    match sv.auth.directory().token(&id).await? {
        Some(t) if manages(&c, &t.org) => {}
        _ => {
            return Err(ApiError::new(
                ErrorKind::NotFound,
                format!("no token {id:?}"),
            ));
        }
    }
    sv.auth
        .revoke_token(&c.principal, &id, origin(&c))
        .await
        .map_err(auth_error)?;
    Ok(Json(json!({ "id": id, "revoked": true })))
}

// ---------------------------------------------------------------------------------------------
// Audit search.

#[derive(Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
struct AuditQuery {
    patient_id: Option<String>,
    issuer: Option<String>,
    study: Option<String>,
    user: Option<String>,
    action: Option<String>,
    since_ms: Option<i64>,
    until_ms: Option<i64>,
    limit: Option<u32>,
    before: Option<u64>,
}

fn nonempty(s: Option<String>) -> Option<String> {
    s.map(|s| s.trim().to_owned()).filter(|s| !s.is_empty())
}

async fn audit_events(
    State(sv): State<Services>,
    caller: Option<Extension<Caller>>,
    q: std::result::Result<Query<AuditQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<Value>> {
    let c = caller_of(caller)?;
    let Query(q) = q.map_err(|e| bad(e.body_text()))?;
    if !c.principal.is_system() && !crate::allowed_in_own_org(&c, Action::ReadAudit) {
        return Err(ApiError::new(
            ErrorKind::Forbidden,
            format!(
                "{} may not read the audit trail of {:?}",
                c.principal.actor.name,
                c.org()
            ),
        ));
    }
    // A user acts under their own id (sessions) and under each of their tokens' ids: a search
    // by user looks for all of them. A username is found as it was normalised; anything else
    // is taken as an actor id (a user, token, AE title, link or peer).
    let actors: Option<Vec<String>> = match nonempty(q.user) {
        None => None,
        Some(u) => {
            let dir = sv.auth.directory();
            Some(match dir.user_by_name(&normalize_username(&u)).await? {
                Some(found) => {
                    let mut ids = vec![found.id.clone()];
                    for o in found.memberships.iter().map(|m| &m.org) {
                        ids.extend(
                            dir.tokens(o)
                                .await?
                                .into_iter()
                                .filter(|t| t.user_id == found.id)
                                .map(|t| t.id),
                        );
                    }
                    ids
                }
                None => vec![u],
            })
        }
    };
    // A patient is `(issuer, id)`. Without `issuer=`, every issuer the organisation holds
    // that Patient ID under (and none) is searched: a person typing an ID rarely knows it.
    let patients: Option<Vec<(String, String)>> = match (nonempty(q.patient_id), q.issuer) {
        (Some(p), Some(issuer)) => Some(vec![(issuer.trim().to_owned(), p)]),
        (Some(p), None) => {
            let mut query =
                vesalius_store::query::Query::new(vesalius_store::query::Level::Patient).with(
                    vesalius_store::query::Key::PatientId,
                    vesalius_store::query::Matcher::Single(p.clone()),
                );
            query.access = Some(vesalius_store::query::Access::orgs([c.org()]));
            query.limit = 100;
            let mut issuers: Vec<String> = sv
                .ingestor
                .index()
                .find(&query)
                .await?
                .iter()
                .filter(|a| {
                    a.first_str(vesalius_store::query::Key::PatientId.tag())
                        .is_some_and(|id| id == p)
                })
                .map(|a| {
                    a.first_str(vesalius_store::query::Key::IssuerOfPatientId.tag())
                        .unwrap_or_default()
                })
                .collect();
            issuers.push(String::new());
            issuers.sort();
            issuers.dedup();
            Some(issuers.into_iter().map(|i| (i, p.clone())).collect())
        }
        (None, Some(i)) if !i.trim().is_empty() => {
            return Err(bad("issuer= needs patient_id="));
        }
        (None, _) => None,
    };
    let limit = q.limit.unwrap_or(200).clamp(1, MAX_AUDIT_RECORDS);
    if q.before == Some(0) {
        return Err(bad(
            "before= is the next_before of a previous page (1 or more)",
        ));
    }
    let filter = AuditFilter {
        org: (!c.principal.is_system()).then(|| c.org().to_owned()),
        action: nonempty(q.action),
        study_uid: nonempty(q.study),
        since_ms: q.since_ms,
        until_ms: q.until_ms,
        before_seq: q.before,
        // One more than a page: whether there is a next page is then known, not guessed.
        limit: limit + 1,
        ..Default::default()
    };
    // One search per (actor, patient) asked for, merged newest first.
    let actor_ids: Vec<Option<String>> = match &actors {
        None => vec![None],
        Some(ids) => ids.iter().cloned().map(Some).collect(),
    };
    let patient_keys: Vec<Option<(String, String)>> = match &patients {
        None => vec![None],
        Some(ps) => ps.iter().cloned().map(Some).collect(),
    };
    let mut found = Vec::new();
    for a in &actor_ids {
        for p in &patient_keys {
            let f = AuditFilter {
                actor_id: a.clone(),
                patient: p.clone(),
                ..filter.clone()
            };
            found.extend(sv.auth.audit_log().search(&f).await?);
        }
    }
    found.sort_by_key(|r| std::cmp::Reverse(r.seq));
    found.dedup_by_key(|r| r.seq);
    let more = found.len() > limit as usize;
    found.truncate(limit as usize);
    let next_before = if more {
        found.last().map(|r| r.seq)
    } else {
        None
    };
    // Reading the trail is itself recorded (what was asked, not what was found).
    let ev = c.event(
        "audit-search",
        Outcome::Success,
        c.org(),
        filter.study_uid.as_deref(),
        json!({
            "patients": patients, "actors": actors, "action": filter.action,
            "since_ms": filter.since_ms, "until_ms": filter.until_ms,
            "before": filter.before_seq, "found": found.len(),
        }),
    );
    if let Err(e) = sv.auth.audit_log().append(vec![ev]).await {
        tracing::error!(error = %e, "audit-search event not written");
    }
    let records: Vec<Value> = found.iter().map(crate::privacy::record_json).collect();
    Ok(Json(json!({
        "records": records, "limit": limit, "more": more, "next_before": next_before,
    })))
}

// ---------------------------------------------------------------------------------------------
// System.

async fn system(
    State(sv): State<Services>,
    caller: Option<Extension<Caller>>,
) -> Result<Json<Value>> {
    admin(caller)?;
    let ing = &sv.ingestor;
    let stats = ing.index().stats().await?;
    let index_ok = ing.index().ping().await.is_ok();
    let free = ing.free_bytes().ok();
    let watermark = ing.limits().min_free_bytes;
    Ok(Json(json!({
        "version": env!("CARGO_PKG_VERSION"),
        "index": { "ok": index_ok },
        "disk": {
            "free_bytes": free,
            "min_free_bytes": watermark,
            "ok": free.is_some_and(|f| watermark == 0 || f >= watermark),
        },
        "stats": {
            "studies": stats.studies, "series": stats.series,
            "instances": stats.instances, "bytes": stats.bytes,
        },
        "now_ms": sv.auth.now_ms(),
    })))
}
