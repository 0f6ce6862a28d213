//! The access policy: one decision function, [`authorize`], and the query filter it implies,
//! [`access`]. Every entry point calls them: QIDO-RS and C-FIND pass [`access`] into the index
//! query (so paging stays correct); WADO, C-GET, C-MOVE, metadata, frames and rendered images
//! call [`authorize`] with [`Action::Retrieve`] before the first byte; STOW-RS and C-STORE call
//! it with [`Action::Store`] on the target organisation.
//!
//! # Model
//! - Every study belongs to one organisation. A member of an organisation acts in it with one
//!   [`Role`]; what a role may do with its own organisation's data is [`RoleRights::own`].
//! - Another organisation's data is visible only through a [`Grant`] (study or patient) that is
//!   neither revoked nor expired and whose grantee is the principal's organisation or the user
//!   (referrers count only grants to themselves). Grants open reading (query, retrieve) and, if
//!   not break-glass, export; never storing, deleting or re-sharing.
//! - Break-glass: a clinician may open another organisation's study not otherwise visible by
//!   stating a reason; the resulting short grant is flagged, and every decision it supports says
//!   so ([`Basis::Grant`] with `break_glass`), so that the access is audited as such.
//! - Links act for their organisation but see only their study (share links) or can only upload
//!   into the quarantine inbox (upload links). The server itself ([`Principal::system`]) may do
//!   everything.
//! - Peer sites ([`crate::peer`]) act like calling AE titles: a service in the local
//!   organisation they are registered with, storing into it, and searching and retrieving what it
//!   holds only when registered with `may_query`; grants never apply to them and nothing
//!   administrative is theirs. A peer registered with `may_query` whose request names one of
//!   its users (a search, view or write for that user) may also annotate the organisation's
//!   studies: store a key image or measurement document into a study it holds (issue 6).
//! - A user who must change their password may do nothing else first.
//!
//! Organisation-level actions ([`Action::Store`], [`Action::Upload`], [`Action::ManageOrg`],
//! [`Action::ReadAudit`], [`Action::CreateUploadLink`]) on a [`Resource::Study`] are decided for
//! the organisation owning that study. Reading the whole site's audit trail
//! ([`Resource::Site`]) is for the system (the `vesalius admin` command) only; creating
//! organisations ([`Action::ManageOrg`] on [`Resource::Site`]) is for the system and for a
//! **site administrator** logged in with a session (issue 6: [`Principal::site_admin`], a flag
//! of the user, not a role of an organisation; an API token of the same user does not carry
//! it, and neither does any organisation role, administrators included). A site
//! administrator also has [`Action::ManageOrg`] on every organisation (so that the one they
//! created gets its first users from the console), and nothing else beyond their role: no
//! images or audit trail of an organisation they are not a member of.
//!
//! # The access matrix
//! This table is the test: `policy::tests::matrix_matches_the_documented_table` computes every
//! cell with [`authorize`] and fails if any differs (regenerate with `VESALIUS_BLESS=1` after a
//! deliberate change, then review the diff). A token acts exactly like a session of the same
//! role (tested too).
//!
#![doc = include_str!("policy_matrix.md")]

use vesalius_store::directory::{Grant, GrantSubject, Grantee, Role};
use vesalius_store::model::OrgId;
use vesalius_store::query::Access;

use crate::error::Error;
use crate::principal::{Principal, PrincipalKind};

/// What a principal wants to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Action {
    /// Search (QIDO-RS, C-FIND); results are filtered by [`access`].
    Query,
    /// Read a study: instances, metadata, frames, rendered images, thumbnails (WADO-RS/URI,
    /// C-GET, C-MOVE), viewing.
    Retrieve,
    /// Store into an organisation (STOW-RS, C-STORE, the JSON API upload).
    Store,
    /// Delete data.
    Delete,
    /// Take a copy out: download (zip, DICOMDIR), export, de-identified export.
    Export,
    /// Create a share link on a study.
    CreateShareLink,
    /// Create a guest upload link into an organisation.
    CreateUploadLink,
    /// Administer an organisation: users, tokens, AE titles, DICOM nodes, links, grants.
    ManageOrg,
    /// Read an organisation's audit trail and reports.
    ReadAudit,
    /// Open another organisation's study without a grant, stating a reason.
    BreakGlass,
    /// Upload through a guest upload link into the organisation's quarantine inbox.
    Upload,
    /// Review the organisation's quarantine inbox: see what guests uploaded, correct the patient
    /// identity to the local record, accept it into the archive or reject it; and link, merge
    /// and split the patients of the organisation's studies (issue 5, `api::patients`).
    Reconcile,
    /// Add objects that annotate a study of the organisation to it, as new series: key-image
    /// documents (Key Object Selection, issue 6), later presentation states. Never on another
    /// organisation's study (grants do not give it).
    Annotate,
}

impl Action {
    /// Every action, in declaration order.
    pub const ALL: [Action; 13] = [
        Action::Query,
        Action::Retrieve,
        Action::Store,
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
    ];

    /// The kebab-case name (also the audit `action` of the corresponding event where one fits).
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Query => "query",
            Action::Retrieve => "retrieve",
            Action::Store => "store",
            Action::Delete => "delete",
            Action::Export => "export",
            Action::CreateShareLink => "create-share-link",
            Action::CreateUploadLink => "create-upload-link",
            Action::ManageOrg => "manage-org",
            Action::ReadAudit => "read-audit",
            Action::BreakGlass => "break-glass",
            Action::Upload => "upload",
            Action::Reconcile => "reconcile",
            Action::Annotate => "annotate",
        }
    }

    /// Whether the action concerns an organisation as a whole rather than one study.
    pub fn is_org_level(self) -> bool {
        matches!(
            self,
            Action::Store
                | Action::Upload
                | Action::ManageOrg
                | Action::ReadAudit
                | Action::CreateUploadLink
                | Action::Reconcile
        )
    }
}

/// A study, as the policy needs to know it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StudyRef {
    /// The owning organisation.
    pub org: OrgId,
    /// Study Instance UID.
    pub study_uid: String,
    /// The patient `(issuer, patient id)`, needed for patient grants to apply.
    pub patient: Option<(String, String)>,
}

/// What an action is done on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Resource {
    /// The whole site: "may this principal query at all", creating organisations, the site's
    /// whole audit trail.
    Site,
    /// An organisation: storing into it, administering it, its audit trail, all its studies.
    Org(OrgId),
    /// One study.
    Study(StudyRef),
}

impl Resource {
    /// A study without patient information (patient grants then cannot apply).
    pub fn study(org: impl Into<OrgId>, study_uid: impl Into<String>) -> Self {
        Resource::Study(StudyRef {
            org: org.into(),
            study_uid: study_uid.into(),
            patient: None,
        })
    }

    /// A study with its patient `(issuer, patient id)`.
    pub fn study_of(
        org: impl Into<OrgId>,
        study_uid: impl Into<String>,
        issuer: impl Into<String>,
        patient_id: impl Into<String>,
    ) -> Self {
        Resource::Study(StudyRef {
            org: org.into(),
            study_uid: study_uid.into(),
            patient: Some((issuer.into(), patient_id.into())),
        })
    }

    /// An organisation.
    pub fn org(org: impl Into<OrgId>) -> Self {
        Resource::Org(org.into())
    }
}

/// Why an action is allowed (goes into the audit event's details).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Basis {
    /// The server itself.
    System,
    /// The principal is a member of the owning organisation with a role that may.
    Member,
    /// Through a grant.
    Grant {
        /// The grant's id.
        grant_id: String,
        /// A break-glass grant: audit the access as such.
        break_glass: bool,
    },
    /// A share or upload link within its scope.
    Link,
    /// The role may do this regardless of data ownership (querying at all, breaking glass).
    Role,
    /// A logged-in site administrator making a site-level change (creating an organisation).
    SiteAdmin,
}

/// Why an action is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DenyReason {
    /// The user must change their password first.
    PasswordChangeRequired,
    /// The principal's role does not include this action.
    RoleLacksAction,
    /// The data belongs to another organisation and no grant opens it.
    NoGrant,
    /// The data or organisation is another organisation's, and grants never open this action.
    OtherOrg,
    /// A link tried to reach outside its study or organisation.
    OutsideLink,
    /// A share link without download permission tried to export.
    DownloadNotAllowed,
    /// Break-glass on a study the principal can already see.
    AlreadyVisible,
    /// Only the server itself (and, for creating organisations, a logged-in site
    /// administrator) may act on the whole site.
    SiteOnly,
    /// The action needs a study (break-glass, share links) or an organisation.
    WrongResource,
}

impl DenyReason {
    /// A stable kebab-case code for logs and audit details.
    pub fn as_str(self) -> &'static str {
        match self {
            DenyReason::PasswordChangeRequired => "password-change-required",
            DenyReason::RoleLacksAction => "role-lacks-action",
            DenyReason::NoGrant => "no-grant",
            DenyReason::OtherOrg => "other-org",
            DenyReason::OutsideLink => "outside-link",
            DenyReason::DownloadNotAllowed => "download-not-allowed",
            DenyReason::AlreadyVisible => "already-visible",
            DenyReason::SiteOnly => "site-only",
            DenyReason::WrongResource => "wrong-resource",
        }
    }
}

impl std::fmt::Display for DenyReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The answer of [`authorize`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Allowed, and why.
    Allow(Basis),
    /// Refused, and why.
    Deny(DenyReason),
}

impl Decision {
    /// Whether allowed.
    pub fn is_allowed(&self) -> bool {
        matches!(self, Decision::Allow(_))
    }

    /// Whether allowed through a break-glass grant (audit it flagged).
    pub fn is_break_glass(&self) -> bool {
        matches!(
            self,
            Decision::Allow(Basis::Grant {
                break_glass: true,
                ..
            })
        )
    }

    /// The basis, or [`Error::Forbidden`] with the reason.
    pub fn into_result(self) -> Result<Basis, Error> {
        match self {
            Decision::Allow(b) => Ok(b),
            Decision::Deny(r) => Err(Error::Forbidden(r.as_str().into())),
        }
    }
}

/// What a role may do: the rows of the role table in docs/security.md.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RoleRights {
    /// Actions on the own organisation's data.
    pub own: &'static [Action],
    /// Actions on another organisation's data opened by a (non-break-glass) grant.
    pub granted: &'static [Action],
    /// Whether grants to the principal's organisation count (not only grants to the user).
    pub org_grants: bool,
    /// Whether the role may break glass.
    pub break_glass: bool,
}

/// The rights of a role.
pub fn rights(role: Role) -> RoleRights {
    use Action::*;
    match role {
        Role::Admin => RoleRights {
            own: &[
                Query,
                Retrieve,
                Store,
                Delete,
                Export,
                CreateShareLink,
                CreateUploadLink,
                ManageOrg,
                ReadAudit,
                Reconcile,
                Annotate,
            ],
            granted: &[Query, Retrieve, Export],
            org_grants: true,
            break_glass: false,
        },
        Role::Clinician => RoleRights {
            own: &[
                Query,
                Retrieve,
                Export,
                CreateShareLink,
                CreateUploadLink,
                Reconcile,
                Annotate,
            ],
            granted: &[Query, Retrieve, Export],
            org_grants: true,
            break_glass: true,
        },
        Role::Radiographer => RoleRights {
            own: &[Query, Retrieve, Store, Reconcile, Annotate],
            granted: &[],
            org_grants: false,
            break_glass: false,
        },
        Role::Service => RoleRights {
            own: &[Query, Retrieve, Store],
            granted: &[],
            org_grants: false,
            break_glass: false,
        },
        Role::Referrer => RoleRights {
            own: &[],
            granted: &[Query, Retrieve],
            org_grants: false,
            break_glass: false,
        },
        Role::Auditor => RoleRights {
            own: &[ReadAudit],
            granted: &[],
            org_grants: false,
            break_glass: false,
        },
    }
}

/// Whether a principal holding `held` may hand out `requested` (tokens, memberships): every
/// right of `requested` is a right of `held`.
pub fn role_covers(held: Role, requested: Role) -> bool {
    let (h, r) = (rights(held), rights(requested));
    r.own.iter().all(|a| h.own.contains(a))
        && r.granted.iter().all(|a| h.granted.contains(a))
        && (!r.org_grants || h.org_grants || r.granted.is_empty())
        && (!r.break_glass || h.break_glass)
}

/// Whether a grant is in force for this principal at `now_ms`: not revoked, not expired, given
/// to the principal's organisation (when the role counts organisation grants) or user, and not
/// break-glass unless the role may break glass.
fn grant_applies(g: &Grant, p: &Principal, r: RoleRights, now_ms: i64) -> bool {
    if g.revoked || g.expires_ms.is_some_and(|e| now_ms >= e) || (g.break_glass && !r.break_glass) {
        return false;
    }
    match &g.grantee {
        Grantee::Org(o) => r.org_grants && p.org.as_deref() == Some(o.as_str()),
        Grantee::User(u) => p.user_id.as_deref() == Some(u.as_str()),
    }
}

fn grant_covers(g: &Grant, s: &StudyRef) -> bool {
    g.owner_org == s.org
        && match &g.subject {
            GrantSubject::Study { study_uid } => *study_uid == s.study_uid,
            GrantSubject::Patient { issuer, patient_id } => s
                .patient
                .as_ref()
                .is_some_and(|(i, p)| i == issuer && p == patient_id),
        }
}

/// The grant opening `s` for `p`, preferring an ordinary one over break-glass.
/// Break-glass grants count only for roles that may break glass: the emergency was justified
/// for clinical work, not for whatever other role the same user holds elsewhere.
fn find_grant<'g>(
    p: &Principal,
    s: &StudyRef,
    grants: &'g [Grant],
    r: RoleRights,
    now_ms: i64,
) -> Option<&'g Grant> {
    let mut found: Option<&Grant> = None;
    for g in grants {
        if grant_applies(g, p, r, now_ms) && grant_covers(g, s) {
            if !g.break_glass {
                return Some(g);
            }
            found.get_or_insert(g);
        }
    }
    found
}

/// Decides whether `principal` may do `action` on `resource` at `now_ms`, given the grants whose
/// grantee is the principal's organisation or user (`Directory::grants_for`; revoked and
/// expired ones are ignored here).
pub fn authorize(
    principal: &Principal,
    action: Action,
    resource: &Resource,
    grants: &[Grant],
    now_ms: i64,
) -> Decision {
    if principal.must_change_password {
        return Decision::Deny(DenyReason::PasswordChangeRequired);
    }
    match &principal.kind {
        PrincipalKind::System => Decision::Allow(Basis::System),
        PrincipalKind::ShareLink {
            study_uid,
            allow_download,
            ..
        } => share_link(principal, study_uid, *allow_download, action, resource),
        PrincipalKind::UploadLink { .. } => {
            let org = match resource {
                Resource::Org(o) => o,
                Resource::Study(s) => &s.org,
                Resource::Site => return Decision::Deny(DenyReason::OutsideLink),
            };
            if action != Action::Upload {
                Decision::Deny(DenyReason::RoleLacksAction)
            } else if principal.org.as_ref() == Some(org) {
                Decision::Allow(Basis::Link)
            } else {
                Decision::Deny(DenyReason::OutsideLink)
            }
        }
        // Services of the organisation: DICOM devices and peer sites.
        // A peer acting for one of its users (a signed `sub`) may also annotate what it may
        // read (issue 6: key images and measurement reports saved at the study's home).
        PrincipalKind::Peer {
            may_query: true,
            for_user: true,
            ..
        } => member(
            principal,
            &[
                Action::Query,
                Action::Retrieve,
                Action::Store,
                Action::Annotate,
            ],
            action,
            resource,
        ),
        PrincipalKind::Ae { may_query, .. } | PrincipalKind::Peer { may_query, .. } => {
            let allowed: &[Action] = if *may_query {
                &[Action::Query, Action::Retrieve, Action::Store]
            } else {
                &[Action::Store]
            };
            member(principal, allowed, action, resource)
        }
        PrincipalKind::Session { .. } | PrincipalKind::Token { .. } => {
            let Some(role) = principal.role else {
                return Decision::Deny(DenyReason::RoleLacksAction);
            };
            user(principal, rights(role), action, resource, grants, now_ms)
        }
    }
}

/// Decision for a principal that acts only within its own organisation with `allowed` actions.
fn member(p: &Principal, allowed: &[Action], action: Action, resource: &Resource) -> Decision {
    let org = match resource {
        Resource::Site if action == Action::Query && allowed.contains(&Action::Query) => {
            return Decision::Allow(Basis::Role);
        }
        Resource::Site => return Decision::Deny(DenyReason::SiteOnly),
        Resource::Org(o) => o,
        Resource::Study(s) => &s.org,
    };
    if !allowed.contains(&action) {
        Decision::Deny(DenyReason::RoleLacksAction)
    } else if p.org.as_ref() == Some(org) {
        Decision::Allow(Basis::Member)
    } else {
        Decision::Deny(DenyReason::OtherOrg)
    }
}

fn share_link(
    p: &Principal,
    study_uid: &str,
    allow_download: bool,
    action: Action,
    resource: &Resource,
) -> Decision {
    let readable = matches!(action, Action::Query | Action::Retrieve | Action::Export);
    if !readable {
        return Decision::Deny(DenyReason::RoleLacksAction);
    }
    let inside = match resource {
        Resource::Site => action == Action::Query,
        Resource::Org(_) => false,
        Resource::Study(s) => p.org.as_ref() == Some(&s.org) && s.study_uid == study_uid,
    };
    if !inside {
        Decision::Deny(DenyReason::OutsideLink)
    } else if action == Action::Export && !allow_download {
        Decision::Deny(DenyReason::DownloadNotAllowed)
    } else {
        Decision::Allow(Basis::Link)
    }
}

fn user(
    p: &Principal,
    r: RoleRights,
    action: Action,
    resource: &Resource,
    grants: &[Grant],
    now_ms: i64,
) -> Decision {
    // A site administrator in a session administers the site and every organisation on it.
    if action == Action::ManageOrg
        && p.site_admin
        && matches!(p.kind, PrincipalKind::Session { .. })
    {
        return Decision::Allow(Basis::SiteAdmin);
    }
    let study = match resource {
        Resource::Site => {
            let reads = r.own.contains(&Action::Query) || r.granted.contains(&Action::Query);
            return if action == Action::Query && reads {
                Decision::Allow(Basis::Role)
            } else {
                Decision::Deny(DenyReason::SiteOnly)
            };
        }
        Resource::Org(_) if action == Action::BreakGlass || action == Action::CreateShareLink => {
            return Decision::Deny(DenyReason::WrongResource);
        }
        Resource::Org(_) => return member(p, r.own, action, resource),
        Resource::Study(s) => s,
    };
    if action.is_org_level() {
        return member(p, r.own, action, resource);
    }
    let own = p.org.as_ref() == Some(&study.org);
    let grant = find_grant(p, study, grants, r, now_ms);
    if action == Action::BreakGlass {
        return if !r.break_glass {
            Decision::Deny(DenyReason::RoleLacksAction)
        } else if (own && r.own.contains(&Action::Retrieve)) || grant.is_some() {
            Decision::Deny(DenyReason::AlreadyVisible)
        } else {
            Decision::Allow(Basis::Role)
        };
    }
    if own && r.own.contains(&action) {
        return Decision::Allow(Basis::Member);
    }
    // Grants also apply to the own organisation's studies: that is how a referrer sees what
    // they referred.
    match grant {
        // Break-glass opens reading only: no copies leave through it.
        Some(g) if r.granted.contains(&action) && !(g.break_glass && action == Action::Export) => {
            Decision::Allow(Basis::Grant {
                grant_id: g.id.clone(),
                break_glass: g.break_glass,
            })
        }
        None if !own && r.granted.contains(&action) => Decision::Deny(DenyReason::NoGrant),
        _ if !own => Decision::Deny(DenyReason::OtherOrg),
        _ => Decision::Deny(DenyReason::RoleLacksAction),
    }
}

/// What `principal` may see in queries at `now_ms`, for the index to filter with. `None` means
/// unrestricted (the server itself); an empty [`Access`] means nothing.
///
/// Agrees with [`authorize`] for [`Action::Query`] and [`Action::Retrieve`]: a study is in the
/// answer exactly when retrieving it is allowed (tested over the whole matrix).
pub fn access(principal: &Principal, grants: &[Grant], now_ms: i64) -> Option<Access> {
    let mut a = Access::default();
    if principal.must_change_password {
        return Some(a);
    }
    let org = principal.org.clone();
    match &principal.kind {
        PrincipalKind::System => return None,
        PrincipalKind::UploadLink { .. } => {}
        PrincipalKind::ShareLink { study_uid, .. } => {
            a.studies.extend(org.map(|o| (o, study_uid.clone())));
        }
        PrincipalKind::Ae { may_query, .. } | PrincipalKind::Peer { may_query, .. } => {
            if *may_query {
                a.orgs.extend(org);
            }
        }
        PrincipalKind::Session { .. } | PrincipalKind::Token { .. } => {
            let Some(role) = principal.role else {
                return Some(a);
            };
            let r = rights(role);
            if r.own.contains(&Action::Query) {
                a.orgs.extend(org);
            }
            if r.granted.contains(&Action::Query) {
                for g in grants {
                    // Grants on the own organisation's data matter when the role cannot read
                    // all of it (referrers).
                    if !grant_applies(g, principal, r, now_ms) || a.orgs.contains(&g.owner_org) {
                        continue;
                    }
                    match &g.subject {
                        GrantSubject::Study { study_uid } => {
                            let e = (g.owner_org.clone(), study_uid.clone());
                            if !a.studies.contains(&e) {
                                a.studies.push(e);
                            }
                        }
                        GrantSubject::Patient { issuer, patient_id } => {
                            let e = (g.owner_org.clone(), issuer.clone(), patient_id.clone());
                            if !a.patients.contains(&e) {
                                a.patients.push(e);
                            }
                        }
                    }
                }
            }
        }
    }
    Some(a)
}

#[cfg(test)]
mod tests;
