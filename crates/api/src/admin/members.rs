//! Joining and leaving organisations (issue 6), for the console's user page:
//!
//! - `PUT /api/v1/users/{name}/memberships/{org}` `{"role"}`: the user joins `org` with `role`
//!   (201), or their role there changes (200; the same role again changes nothing, 200).
//! - `DELETE /api/v1/users/{name}/memberships/{org}`: the user leaves `org` (200); their API
//!   tokens of `org` are revoked with it, and a session of theirs acting there is refused from
//!   its next request.
//!
//! Both need `manage-org` on `org` (403 before anything is looked up) and a user the caller
//! administers already (404 otherwise, like a missing one): an organisation's administrator
//! cannot pull in a user of another organisation they cannot see; a site administrator, who
//! administers every organisation, can. The user's last organisation cannot be left, nor the
//! organisation the caller acts in by the caller themself (409); a person is not given the
//! `service` role nor a service account another (400). The rules and the audit
//! (`admin-change` `membership-add`, `membership-set`, `membership-remove`, filed in `org`)
//! are the authenticator's (`Authenticator::set_membership`, `remove_membership`), shared with
//! `vesalius admin user join` / `leave`.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use serde::Deserialize;
use serde_json::json;
use vesalius_auth::Caller;
use vesalius_auth::authenticator::MembershipChange;
use vesalius_core::ErrorKind;

use super::{Result, admin, auth_error, body, find_user, manages, origin, parse_role, view};
use crate::{ApiError, Services};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Join {
    role: String,
}

/// 403 unless the caller administers `org`; asked before anything is looked up, so that
/// whether another organisation or its members exist is not the caller's to learn.
fn require_manages(c: &Caller, org: &str) -> Result<()> {
    if manages(c, org) {
        Ok(())
    } else {
        Err(ApiError::new(
            ErrorKind::Forbidden,
            format!("{} may not administer {org:?}", c.principal.actor.name),
        ))
    }
}

pub(super) async fn join(
    State(sv): State<Services>,
    caller: Option<Extension<Caller>>,
    Path((name, org)): Path<(String, String)>,
    bytes: axum::body::Bytes,
) -> Result<Response> {
    let c = admin(caller)?;
    require_manages(&c, &org)?;
    let b: Join = body(&bytes)?;
    let role = parse_role(&b.role)?;
    let user = find_user(&sv, &c, &name).await?;
    let (user, change) = sv
        .auth
        .set_membership(&c.principal, &user.id, &org, role, origin(&c))
        .await
        .map_err(auth_error)?;
    let (status, what) = match change {
        MembershipChange::Added => (StatusCode::CREATED, "added"),
        MembershipChange::RoleChanged { .. } => (StatusCode::OK, "role-changed"),
        MembershipChange::Unchanged => (StatusCode::OK, "unchanged"),
    };
    Ok((
        status,
        Json(json!({ "user": view(&c, &user), "change": what })),
    )
        .into_response())
}

pub(super) async fn leave(
    State(sv): State<Services>,
    caller: Option<Extension<Caller>>,
    Path((name, org)): Path<(String, String)>,
) -> Result<Json<serde_json::Value>> {
    let c = admin(caller)?;
    require_manages(&c, &org)?;
    let user = find_user(&sv, &c, &name).await?;
    let user = sv
        .auth
        .remove_membership(&c.principal, &user.id, &org, origin(&c))
        .await
        .map_err(auth_error)?;
    Ok(Json(json!({ "user": view(&c, &user) })))
}
