//! The table of every HTTP route `vesalius serve` mounts, with what each needs from the policy
//! and what an allowed call must show. `scan` keeps it complete: a route added to a router and
//! not here fails `route_table_lists_every_route_in_the_source`.

use vesalius_auth::Action;

/// What the `{…}` placeholders of a route name, and so which targets it is tried against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// A study (`{study}`, `{series}`, `{sop}`, or `?study=`): own, granted, other, ghost.
    Study,
    /// A share link (`{id}` of `/s/…` and `/api/v1/share-links/…`): own org's, other's, ghost.
    ShareLink,
    /// A guest upload link: own org's, other's, ghost.
    UploadLink,
    /// A study in a quarantine inbox: own org's inbox, other's, ghost.
    Inbox,
    /// An exchange registry record (`{name}` of a peer or node, `{id}` of a route or of a
    /// parked outbox job to its node): `a`'s, `b`'s, ghost.
    Registry,
    /// Nothing: the caller's organisation or the site; tried once per principal.
    None,
}

/// Which cell is allowed, computed with the policy for the principal and the target.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Need {
    /// Served without credentials (health, login, set-up, capability URLs checking their own
    /// secret): the authentication layer lets it through; `Open` says what the handler answers.
    Open(Open),
    /// Any authenticated principal (its own account, counts): never refused by the layer.
    Any,
    /// `action` on the target study.
    Study(Action),
    /// `action` on the caller's organisation.
    Caller(Action),
    /// `action` on the organisation owning the target (link, inbox study).
    TargetOrg(Action),
    /// `action` on the whole site (creating organisations): the policy gives it to the server
    /// itself and to logged-in site administrators (issue 6); no principal of the matrix is
    /// either, so none has it.
    Site(Action),
    /// Storing into the caller's organisation: `store`, or `upload` for a guest upload link.
    Ingest,
    /// A share-link page: the visitor's pass must be for the target link, and `action` allowed
    /// on its study.
    LinkPass(Action),
    /// Logged-in sessions only (switching the organisation a session acts in, issue 6): no
    /// policy action; none of the matrix's principals is a session, so every cell is refused.
    Session,
    /// Peer sites only (the receiving side of the exchange, `Authorization: Vesalius-Peer`):
    /// no policy action; none of the matrix's principals is a peer, so every cell is refused.
    Peer,
}

/// What an open route answers whoever asks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Open {
    /// 2xx.
    Ok,
    /// 4xx: the request carries a wrong password, set-up token or link secret on purpose.
    Refused,
    /// 404: mounted only when configured (`[auth.oidc]`), and the matrix runs without it.
    Unmounted,
}

/// How a response proves what happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shows {
    /// Study data (DICOM, metadata, pixels, a page): allowed → 2xx with a body; refused with
    /// credentials → 404 exactly (a hidden study is answered like a missing one).
    Data,
    /// A list: 2xx; the target is in it exactly when `need` allows (otherwise a 2xx without it
    /// or a refusal).
    Listing,
    /// A zip archive: allowed → 2xx `PK…`.
    Zip,
    /// A change: allowed → 2xx and the change made; refused → 4xx and nothing changed.
    Change,
    /// An audit report of the caller's organisation: allowed → 2xx; never another
    /// organisation's patients.
    Report,
    /// Served (not refused by the authentication layer, no server error); nothing to prove.
    Served,
    /// A request to the target DICOM node, which listens nowhere in the matrix (port 1):
    /// allowed → 503 `unavailable` (the request went out to the node); refused → 4xx.
    NodeUnreachable,
    /// Relayed to a peer site: allowed → 2xx, or 502 when the peer cannot be reached (the
    /// matrix's peers listen nowhere); refused → 401, 403 or 404.
    Relayed,
}

/// One route of the application.
#[derive(Debug, Clone, Copy)]
pub struct Route {
    /// HTTP method.
    pub method: &'static str,
    /// Path template as the router declares it (nesting prefix included).
    pub path: &'static str,
    /// What the placeholders name.
    pub scope: Scope,
    /// Which cells are allowed.
    pub need: Need,
    /// How to judge the answer.
    pub shows: Shows,
    /// Audit actions an allowed call must leave (one of them, by this actor); empty: none.
    pub audit: &'static [&'static str],
}

impl Route {
    /// `METHOD path`.
    pub fn name(&self) -> String {
        format!("{} {}", self.method, self.path)
    }

    /// Whether the audit event of an allowed call must name the target study.
    pub fn audit_names_study(&self) -> bool {
        match self.scope {
            // A search of all studies (QIDO `/studies`) is about none of them.
            Scope::Study => self.path.contains("{study}"),
            Scope::Inbox => true,
            Scope::ShareLink => matches!(self.need, Need::LinkPass(_)),
            _ => false,
        }
    }
}

const fn r(
    method: &'static str,
    path: &'static str,
    scope: Scope,
    need: Need,
    shows: Shows,
    audit: &'static [&'static str],
) -> Route {
    Route {
        method,
        path,
        scope,
        need,
        shows,
        audit,
    }
}

use Action::*;
use Need::{Any, Caller, Ingest, LinkPass, Study as OnStudy, TargetOrg};
use Scope::{Inbox, None as NoScope, Registry, ShareLink, Study, UploadLink};
use Shows::*;

const RETRIEVE: &[&str] = &["retrieve"];
const QUERY: &[&str] = &["query"];
const NONE: &[&str] = &[];
const ADMIN_CHANGE: &[&str] = &["admin-change"];

/// Every route, in the order the matrix runs them: reads first, then changes; deletions near
/// the end (each restores its target) and break-glass last (it opens the other organisation's
/// study to the clinician for four hours).
pub const ROUTES: &[Route] = &[
    // Open: health, metrics, login, set-up.
    r(
        "GET",
        "/healthz",
        NoScope,
        Need::Open(Open::Ok),
        Served,
        NONE,
    ),
    r(
        "GET",
        "/readyz",
        NoScope,
        Need::Open(Open::Ok),
        Served,
        NONE,
    ),
    r(
        "GET",
        "/metrics",
        NoScope,
        Need::Open(Open::Ok),
        Served,
        NONE,
    ),
    r("GET", "/login", NoScope, Need::Open(Open::Ok), Served, NONE),
    r(
        "POST",
        "/login",
        NoScope,
        Need::Open(Open::Refused),
        Served,
        NONE,
    ),
    r(
        "POST",
        "/api/v1/auth/login",
        NoScope,
        Need::Open(Open::Refused),
        Served,
        NONE,
    ),
    r(
        "POST",
        "/api/v1/auth/logout",
        NoScope,
        Need::Open(Open::Ok),
        Served,
        NONE,
    ),
    r(
        "POST",
        "/api/v1/auth/setup",
        NoScope,
        Need::Open(Open::Refused),
        Served,
        NONE,
    ),
    r(
        "PUT",
        "/api/v1/auth/setup",
        NoScope,
        Need::Open(Open::Refused),
        Served,
        NONE,
    ),
    // The app's set-up screen (issue 6) asks what a link is for; a bogus token is refused.
    r(
        "GET",
        "/api/v1/auth/setup",
        NoScope,
        Need::Open(Open::Refused),
        Served,
        NONE,
    ),
    // How one logs in here (the app's login screen: OpenID Connect offered or not).
    r(
        "GET",
        "/api/v1/auth/methods",
        NoScope,
        Need::Open(Open::Ok),
        Served,
        NONE,
    ),
    // The app's screens of issue 6 (login, set-up, password): the shell, no data.
    r("GET", "/setup", NoScope, Need::Open(Open::Ok), Served, NONE),
    r(
        "GET",
        "/account",
        NoScope,
        Need::Open(Open::Ok),
        Served,
        NONE,
    ),
    r(
        "POST",
        "/setup",
        NoScope,
        Need::Open(Open::Refused),
        Served,
        NONE,
    ),
    r(
        "GET",
        "/api/v1/auth/oidc/login",
        NoScope,
        Need::Open(Open::Unmounted),
        Served,
        NONE,
    ),
    r(
        "GET",
        "/api/v1/auth/oidc/callback",
        NoScope,
        Need::Open(Open::Unmounted),
        Served,
        NONE,
    ),
    // Capability URLs: the handler checks the link's secret (a wrong one here).
    r(
        "GET",
        "/s/{id}/{secret}",
        ShareLink,
        Need::Open(Open::Refused),
        Served,
        NONE,
    ),
    r(
        "POST",
        "/s/{id}/{secret}",
        ShareLink,
        Need::Open(Open::Refused),
        Served,
        NONE,
    ),
    r(
        "GET",
        "/upload/{id}/{secret}",
        UploadLink,
        Need::Open(Open::Refused),
        Served,
        NONE,
    ),
    r(
        "POST",
        "/upload/{id}/{secret}",
        UploadLink,
        Need::Open(Open::Refused),
        Served,
        NONE,
    ),
    // Issue 6: resumable guest uploads (the same capability URL, checked on every request).
    r(
        "GET",
        "/upload/{id}/{secret}/info",
        UploadLink,
        Need::Open(Open::Refused),
        Served,
        NONE,
    ),
    r(
        "POST",
        "/upload/{id}/{secret}/files",
        UploadLink,
        Need::Open(Open::Refused),
        Served,
        NONE,
    ),
    r(
        "GET",
        "/upload/{id}/{secret}/files/{upload}",
        UploadLink,
        Need::Open(Open::Refused),
        Served,
        NONE,
    ),
    r(
        "PATCH",
        "/upload/{id}/{secret}/files/{upload}",
        UploadLink,
        Need::Open(Open::Refused),
        Served,
        NONE,
    ),
    r(
        "DELETE",
        "/upload/{id}/{secret}/files/{upload}",
        UploadLink,
        Need::Open(Open::Refused),
        Served,
        NONE,
    ),
    // The web app (issue 6): its shell and static assets hold no data and are served to
    // anybody; the app sends a visitor without a session to /login, and every piece of data
    // comes from the API rows below.
    r("GET", "/", NoScope, Need::Open(Open::Ok), Served, NONE),
    r(
        "GET",
        "/worklist",
        NoScope,
        Need::Open(Open::Ok),
        Served,
        NONE,
    ),
    r(
        "GET",
        "/viewer",
        NoScope,
        Need::Open(Open::Ok),
        Served,
        NONE,
    ),
    r(
        "GET",
        "/view/{study}",
        Study,
        Need::Open(Open::Ok),
        Served,
        NONE,
    ),
    // The alerts page's shell (issue 6): no data; the alerts API behind it needs a user.
    r(
        "GET",
        "/alerts",
        NoScope,
        Need::Open(Open::Ok),
        Served,
        NONE,
    ),
    // The admin console's shell (issue 6): no data; the API behind it refuses non-admins.
    r("GET", "/admin", NoScope, Need::Open(Open::Ok), Served, NONE),
    r(
        "GET",
        "/admin/{section}",
        NoScope,
        Need::Open(Open::Ok),
        Served,
        NONE,
    ),
    r(
        "GET",
        "/app/{version}/{*file}",
        NoScope,
        Need::Open(Open::Ok),
        Served,
        NONE,
    ),
    r(
        "GET",
        "/app/pages.css",
        NoScope,
        Need::Open(Open::Ok),
        Served,
        NONE,
    ),
    // The app's service worker: code, no data.
    r("GET", "/sw.js", NoScope, Need::Open(Open::Ok), Served, NONE),
    // OHIF (issue 6): its files and generated configuration hold no data; mounted only with
    // `[web] ohif_dir`, which the matrix runs without.
    r(
        "GET",
        "/ohif",
        NoScope,
        Need::Open(Open::Unmounted),
        Served,
        NONE,
    ),
    r(
        "GET",
        "/ohif/",
        NoScope,
        Need::Open(Open::Unmounted),
        Served,
        NONE,
    ),
    r(
        "GET",
        "/ohif/{*path}",
        NoScope,
        Need::Open(Open::Unmounted),
        Served,
        NONE,
    ),
    r(
        "GET",
        "/ohif/app-config.js",
        NoScope,
        Need::Open(Open::Unmounted),
        Served,
        NONE,
    ),
    r(
        "GET",
        "/ohif/vesalius-init.js",
        NoScope,
        Need::Open(Open::Unmounted),
        Served,
        NONE,
    ),
    // The caller's own account and site counts.
    r("GET", "/api/v1/auth/me", NoScope, Any, Served, NONE),
    r("GET", "/account/password", NoScope, Any, Served, NONE),
    r("POST", "/account/password", NoScope, Any, Served, NONE),
    // The app's password screen (issue 6): the caller's own password, a wrong current one here.
    r("POST", "/api/v1/auth/password", NoScope, Any, Served, NONE),
    // Issue 6: a logged-in session switches organisation; the matrix's principals have no
    // session (tokens stay bound to their organisation), so every cell is refused.
    r(
        "POST",
        "/api/v1/auth/session/org",
        NoScope,
        Need::Session,
        Change,
        NONE,
    ),
    // Site-wide counts (studies, instances, bytes of every organisation) for any principal,
    // share-link visitors and guest upload links included: no policy action covers them yet.
    r(
        "GET",
        "/api/v1/stats",
        NoScope,
        Caller(ManageOrg),
        Served,
        NONE,
    ),
    // QIDO-RS.
    r(
        "GET",
        "/dicom-web/studies",
        Study,
        OnStudy(Query),
        Listing,
        QUERY,
    ),
    r(
        "GET",
        "/dicom-web/series",
        Study,
        OnStudy(Query),
        Listing,
        QUERY,
    ),
    r(
        "GET",
        "/dicom-web/instances",
        Study,
        OnStudy(Query),
        Listing,
        QUERY,
    ),
    r(
        "GET",
        "/dicom-web/studies/{study}/series",
        Study,
        OnStudy(Query),
        Listing,
        QUERY,
    ),
    r(
        "GET",
        "/dicom-web/studies/{study}/instances",
        Study,
        OnStudy(Query),
        Listing,
        QUERY,
    ),
    r(
        "GET",
        "/dicom-web/studies/{study}/series/{series}/instances",
        Study,
        OnStudy(Query),
        Listing,
        QUERY,
    ),
    // WADO-RS, rendered, WADO-URI.
    r(
        "GET",
        "/dicom-web/studies/{study}",
        Study,
        OnStudy(Retrieve),
        Data,
        RETRIEVE,
    ),
    r(
        "GET",
        "/dicom-web/studies/{study}/metadata",
        Study,
        OnStudy(Retrieve),
        Data,
        RETRIEVE,
    ),
    r(
        "GET",
        "/dicom-web/studies/{study}/thumbnail",
        Study,
        OnStudy(Retrieve),
        Data,
        RETRIEVE,
    ),
    r(
        "GET",
        "/dicom-web/studies/{study}/series/{series}",
        Study,
        OnStudy(Retrieve),
        Data,
        RETRIEVE,
    ),
    r(
        "GET",
        "/dicom-web/studies/{study}/series/{series}/metadata",
        Study,
        OnStudy(Retrieve),
        Data,
        RETRIEVE,
    ),
    r(
        "GET",
        "/dicom-web/studies/{study}/series/{series}/thumbnail",
        Study,
        OnStudy(Retrieve),
        Data,
        RETRIEVE,
    ),
    // Issue 6: the frames of several instances of a series in one answer (the viewer's).
    r(
        "GET",
        "/dicom-web/studies/{study}/series/{series}/frames",
        Study,
        OnStudy(Retrieve),
        Data,
        RETRIEVE,
    ),
    r(
        "GET",
        "/dicom-web/studies/{study}/series/{series}/instances/{sop}",
        Study,
        OnStudy(Retrieve),
        Data,
        RETRIEVE,
    ),
    r(
        "GET",
        "/dicom-web/studies/{study}/series/{series}/instances/{sop}/metadata",
        Study,
        OnStudy(Retrieve),
        Data,
        RETRIEVE,
    ),
    r(
        "GET",
        "/dicom-web/studies/{study}/series/{series}/instances/{sop}/rendered",
        Study,
        OnStudy(Retrieve),
        Data,
        RETRIEVE,
    ),
    r(
        "GET",
        "/dicom-web/studies/{study}/series/{series}/instances/{sop}/thumbnail",
        Study,
        OnStudy(Retrieve),
        Data,
        RETRIEVE,
    ),
    r(
        "GET",
        "/dicom-web/studies/{study}/series/{series}/instances/{sop}/frames/{frames}",
        Study,
        OnStudy(Retrieve),
        Data,
        RETRIEVE,
    ),
    r(
        "GET",
        "/dicom-web/studies/{study}/series/{series}/instances/{sop}/frames/{frames}/rendered",
        Study,
        OnStudy(Retrieve),
        Data,
        RETRIEVE,
    ),
    r(
        "GET",
        "/dicom-web/studies/{study}/series/{series}/instances/{sop}/frames/{frames}/thumbnail",
        Study,
        OnStudy(Retrieve),
        Data,
        RETRIEVE,
    ),
    r(
        "GET",
        "/dicom-web/studies/{study}/series/{series}/instances/{sop}/bulkdata/{spec}",
        Study,
        OnStudy(Retrieve),
        Data,
        RETRIEVE,
    ),
    r("GET", "/wado", Study, OnStudy(Retrieve), Data, RETRIEVE),
    // Prior versions of a study's instances.
    r(
        "GET",
        "/api/v1/studies/{study}/versions",
        Study,
        OnStudy(Retrieve),
        Listing,
        RETRIEVE,
    ),
    // Copies leaving the archive.
    r(
        "GET",
        "/api/v1/studies/{study}/archive",
        Study,
        OnStudy(Export),
        Zip,
        &["export"],
    ),
    r(
        "POST",
        "/api/v1/studies/{study}/export",
        Study,
        OnStudy(Export),
        Zip,
        &["export"],
    ),
    // Share links and their pages (the pass cookie of a share-link visitor). The page itself
    // writes no event: the visit is audited once, as `link-use`, when the link is opened (only
    // then is the pass cookie given).
    r(
        "GET",
        "/s/{id}",
        ShareLink,
        LinkPass(Retrieve),
        Data,
        &["link-use"],
    ),
    r(
        "GET",
        "/s/{id}/images",
        ShareLink,
        LinkPass(Retrieve),
        Data,
        &["link-use"],
    ),
    r(
        "GET",
        "/s/{id}/info",
        ShareLink,
        LinkPass(Retrieve),
        Data,
        &["link-use"],
    ),
    r(
        "GET",
        "/s/{id}/download",
        ShareLink,
        LinkPass(Export),
        Zip,
        &["export"],
    ),
    r(
        "POST",
        "/api/v1/studies/{study}/share-links",
        Study,
        OnStudy(CreateShareLink),
        Change,
        &["share-create"],
    ),
    r(
        "GET",
        "/api/v1/share-links",
        ShareLink,
        TargetOrg(ManageOrg),
        Listing,
        NONE,
    ),
    r(
        "DELETE",
        "/api/v1/share-links/{id}",
        ShareLink,
        TargetOrg(ManageOrg),
        Change,
        &["share-revoke"],
    ),
    // Guest upload links.
    r(
        "POST",
        "/api/v1/upload-links",
        NoScope,
        Caller(CreateUploadLink),
        Change,
        &["upload-link-create"],
    ),
    r(
        "GET",
        "/api/v1/upload-links",
        UploadLink,
        TargetOrg(ManageOrg),
        Listing,
        NONE,
    ),
    r(
        "DELETE",
        "/api/v1/upload-links/{id}",
        UploadLink,
        TargetOrg(ManageOrg),
        Change,
        &["upload-link-revoke"],
    ),
    // Storing.
    r(
        "POST",
        "/dicom-web/studies",
        NoScope,
        Ingest,
        Change,
        &["store", "upload"],
    ),
    r(
        "POST",
        "/dicom-web/studies/{study}",
        NoScope,
        Ingest,
        Change,
        &["store", "upload"],
    ),
    r(
        "POST",
        "/api/v1/instances",
        NoScope,
        Caller(Store),
        Change,
        &["store"],
    ),
    // Issue 6: resumable uploads of a user into their own organisation (the Rust tests in
    // uploads_tests.rs prove what is stored; the matrix proves who is let in).
    r(
        "POST",
        "/api/v1/uploads",
        NoScope,
        Caller(Store),
        Served,
        NONE,
    ),
    r(
        "GET",
        "/api/v1/uploads/{upload}",
        NoScope,
        Caller(Store),
        Served,
        NONE,
    ),
    r(
        "PATCH",
        "/api/v1/uploads/{upload}",
        NoScope,
        Caller(Store),
        Served,
        NONE,
    ),
    r(
        "DELETE",
        "/api/v1/uploads/{upload}",
        NoScope,
        Caller(Store),
        Served,
        NONE,
    ),
    // The quarantine inbox.
    r(
        "GET",
        "/api/v1/inbox",
        Inbox,
        TargetOrg(Reconcile),
        Listing,
        NONE,
    ),
    r(
        "POST",
        "/api/v1/inbox/studies/{study}/accept",
        Inbox,
        TargetOrg(Reconcile),
        Change,
        &["inbox-accept"],
    ),
    r(
        "DELETE",
        "/api/v1/inbox/studies/{study}",
        Inbox,
        TargetOrg(Reconcile),
        Change,
        &["inbox-reject"],
    ),
    // Patient identity (issue 5): reconcile on the study's organisation. Merge and split name
    // the target study's patient or the study in their body (request.rs); each cell's change
    // is undone by `restore`.
    r(
        "POST",
        "/api/v1/studies/{study}/link-patient",
        Study,
        OnStudy(Reconcile),
        Change,
        &["patient-link"],
    ),
    // Key images (issue 6): a Key Object Selection Document in a new series of the study.
    r(
        "POST",
        "/api/v1/studies/{study}/key-images",
        Study,
        OnStudy(Annotate),
        Change,
        &["key-images"],
    ),
    // Unmarking a key image (issue 6): the caller's key image documents flagging it withdrawn
    // by an IOCM rejection note; the matrix's principals have marked nothing, so an allowed
    // call changes nothing (and hides nothing: judge.rs), and is audited all the same.
    r(
        "DELETE",
        "/api/v1/studies/{study}/key-images/{sop}",
        Study,
        OnStudy(Annotate),
        Change,
        &["key-images"],
    ),
    // Saved measurements (issue 6): a TID 1500 Comprehensive SR in a new series of the study.
    r(
        "POST",
        "/api/v1/studies/{study}/measurements",
        Study,
        OnStudy(Annotate),
        Change,
        &["measurements"],
    ),
    r(
        "POST",
        "/api/v1/patients/merge",
        Study,
        OnStudy(Reconcile),
        Change,
        &["patient-merge"],
    ),
    r(
        "POST",
        "/api/v1/patients/split",
        Study,
        OnStudy(Reconcile),
        Change,
        &["patient-split"],
    ),
    // The privacy officer's reports.
    r(
        "GET",
        "/api/v1/audit/who-saw",
        Study,
        Caller(ReadAudit),
        Report,
        &["audit-read"],
    ),
    r(
        "GET",
        "/api/v1/audit/break-glass",
        NoScope,
        Caller(ReadAudit),
        Report,
        &["audit-read"],
    ),
    // The exchange, receiving side: for peer sites only.
    r(
        "GET",
        "/api/v1/exchange/ping",
        NoScope,
        Need::Peer,
        Data,
        NONE,
    ),
    r(
        "POST",
        "/api/v1/exchange/manifest",
        NoScope,
        Need::Peer,
        Change,
        NONE,
    ),
    // The exchange's transfers: summaries carry no organisation, so administrators (of the
    // organisation they act in) see them all; a retry needs the job's destination's org.
    r(
        "POST",
        "/api/v1/exchange/pull",
        NoScope,
        Need::Peer,
        Change,
        NONE,
    ),
    r(
        "GET",
        "/api/v1/search",
        NoScope,
        Caller(Query),
        Listing,
        &["query"],
    ),
    r(
        "POST",
        "/api/v1/peers/{name}/pull",
        Registry,
        TargetOrg(Store),
        Relayed,
        &["pull-request"],
    ),
    r(
        "GET",
        "/dicom-web/peers/{name}/{*rest}",
        Registry,
        TargetOrg(Query),
        Relayed,
        &["retrieve"],
    ),
    r(
        "GET",
        "/api/v1/transfers",
        NoScope,
        Caller(ManageOrg),
        Listing,
        NONE,
    ),
    r(
        "GET",
        "/api/v1/transfers/receipts",
        NoScope,
        Caller(ManageOrg),
        Listing,
        NONE,
    ),
    r(
        "GET",
        "/api/v1/transfers/jobs",
        NoScope,
        Caller(ManageOrg),
        Listing,
        NONE,
    ),
    r(
        "GET",
        "/api/v1/transfers/events",
        NoScope,
        Caller(ManageOrg),
        Listing,
        NONE,
    ),
    r(
        "POST",
        "/api/v1/transfers/jobs/{id}/retry",
        Registry,
        TargetOrg(ManageOrg),
        Change,
        ADMIN_CHANGE,
    ),
    // The exchange registry: each record is its organisation's to manage.
    r(
        "GET",
        "/api/v1/peers",
        Registry,
        TargetOrg(ManageOrg),
        Listing,
        NONE,
    ),
    r(
        "GET",
        "/api/v1/peers/{name}",
        Registry,
        TargetOrg(ManageOrg),
        Data,
        NONE,
    ),
    r(
        "PUT",
        "/api/v1/peers/{name}",
        Registry,
        TargetOrg(ManageOrg),
        Change,
        ADMIN_CHANGE,
    ),
    r(
        "DELETE",
        "/api/v1/peers/{name}",
        Registry,
        TargetOrg(ManageOrg),
        Change,
        ADMIN_CHANGE,
    ),
    r(
        "POST",
        "/api/v1/peers/{name}/ping",
        Registry,
        TargetOrg(ManageOrg),
        Change,
        NONE,
    ),
    r(
        "GET",
        "/api/v1/nodes",
        Registry,
        TargetOrg(ManageOrg),
        Listing,
        NONE,
    ),
    r(
        "GET",
        "/api/v1/nodes/{name}",
        Registry,
        TargetOrg(ManageOrg),
        Data,
        NONE,
    ),
    r(
        "PUT",
        "/api/v1/nodes/{name}",
        Registry,
        TargetOrg(ManageOrg),
        Change,
        ADMIN_CHANGE,
    ),
    r(
        "DELETE",
        "/api/v1/nodes/{name}",
        Registry,
        TargetOrg(ManageOrg),
        Change,
        ADMIN_CHANGE,
    ),
    r(
        "POST",
        "/api/v1/nodes/{name}/echo",
        Registry,
        TargetOrg(ManageOrg),
        Change,
        NONE,
    ),
    r(
        "GET",
        "/api/v1/nodes/{name}/studies",
        Registry,
        TargetOrg(ManageOrg),
        NodeUnreachable,
        // Audited as `query` with outcome failure here (the node is unreachable); the audit
        // check wants successes (the exchange API's own tests check this event).
        NONE,
    ),
    r(
        "POST",
        "/api/v1/nodes/{name}/retrieve",
        Registry,
        TargetOrg(ManageOrg),
        Change,
        ADMIN_CHANGE,
    ),
    r(
        "GET",
        "/api/v1/routes",
        Registry,
        TargetOrg(ManageOrg),
        Listing,
        NONE,
    ),
    r(
        "GET",
        "/api/v1/routes/{id}",
        Registry,
        TargetOrg(ManageOrg),
        Data,
        NONE,
    ),
    r(
        "PUT",
        "/api/v1/routes/{id}",
        Registry,
        TargetOrg(ManageOrg),
        Change,
        ADMIN_CHANGE,
    ),
    r(
        "DELETE",
        "/api/v1/routes/{id}",
        Registry,
        TargetOrg(ManageOrg),
        Change,
        ADMIN_CHANGE,
    ),
    // The admin console (issue 6): organisations, users, tokens, audit search, system, and
    // which routes fire for a file. Users and tokens of `a`, made for each cell.
    r(
        "GET",
        "/api/v1/orgs",
        NoScope,
        Caller(ManageOrg),
        Listing,
        NONE,
    ),
    // A new organisation (named by the cell): a site-level change.
    r(
        "POST",
        "/api/v1/orgs",
        NoScope,
        Need::Site(ManageOrg),
        Change,
        ADMIN_CHANGE,
    ),
    // Issue 6: an organisation's settings (whether its users' browsers may keep images), tried
    // on the caller's own (`{org}` is `a`; the setting is cleared before each cell).
    r(
        "PATCH",
        "/api/v1/orgs/{org}",
        NoScope,
        Caller(ManageOrg),
        Change,
        ADMIN_CHANGE,
    ),
    r(
        "GET",
        "/api/v1/users",
        NoScope,
        Caller(ManageOrg),
        Listing,
        NONE,
    ),
    r(
        "POST",
        "/api/v1/users",
        NoScope,
        Caller(ManageOrg),
        Change,
        &["user-create"],
    ),
    r(
        "PATCH",
        "/api/v1/users/{name}",
        NoScope,
        Caller(ManageOrg),
        Change,
        ADMIN_CHANGE,
    ),
    r(
        "POST",
        "/api/v1/users/{name}/password-link",
        NoScope,
        Caller(ManageOrg),
        Change,
        &["password-link"],
    ),
    // Issue 6: joining and leaving an organisation, tried on the caller's own (`{org}` is `a`):
    // a role set for a member of `a`, a member of `a` and `b` leaving `a`.
    r(
        "PUT",
        "/api/v1/users/{name}/memberships/{org}",
        NoScope,
        Caller(ManageOrg),
        Change,
        ADMIN_CHANGE,
    ),
    r(
        "DELETE",
        "/api/v1/users/{name}/memberships/{org}",
        NoScope,
        Caller(ManageOrg),
        Change,
        ADMIN_CHANGE,
    ),
    r(
        "GET",
        "/api/v1/tokens",
        NoScope,
        Caller(ManageOrg),
        Listing,
        NONE,
    ),
    r(
        "POST",
        "/api/v1/tokens",
        NoScope,
        Caller(ManageOrg),
        Change,
        &["token-create"],
    ),
    r(
        "DELETE",
        "/api/v1/tokens/{id}",
        NoScope,
        Caller(ManageOrg),
        Change,
        &["token-revoke"],
    ),
    r(
        "GET",
        "/api/v1/audit/events",
        NoScope,
        Caller(ReadAudit),
        Report,
        &["audit-search"],
    ),
    r(
        "GET",
        "/api/v1/system",
        NoScope,
        Caller(ManageOrg),
        Data,
        NONE,
    ),
    r(
        "POST",
        "/api/v1/route-test",
        NoScope,
        Caller(ManageOrg),
        Data,
        NONE,
    ),
    // The users' live event stream (issue 6): their organisation's study events, names only.
    r(
        "GET",
        "/api/v1/events",
        NoScope,
        Caller(Query),
        Served,
        NONE,
    ),
    // Alerts (issue 6, docs/alerts.md). The caller's own alerts and subscriptions, and its
    // organisation's rules: nothing of another organisation is reachable by id (404), which
    // the matrix cannot prove on ids it does not know; crates/api/src/alerts and
    // tests/interop/test_alerts.py do.
    r(
        "GET",
        "/api/v1/alerts",
        NoScope,
        Caller(Query),
        Served,
        NONE,
    ),
    r(
        "POST",
        "/api/v1/alerts/{id}/acknowledge",
        NoScope,
        Caller(Query),
        Served,
        NONE,
    ),
    r(
        "GET",
        "/api/v1/alerts/{id}/deliveries",
        NoScope,
        Caller(Query),
        Served,
        NONE,
    ),
    r(
        "GET",
        "/api/v1/alerts/rules",
        NoScope,
        Caller(Query),
        Served,
        NONE,
    ),
    r(
        "POST",
        "/api/v1/alerts/rules",
        NoScope,
        Caller(ManageOrg),
        Change,
        ADMIN_CHANGE,
    ),
    r(
        "GET",
        "/api/v1/alerts/rules/{id}",
        NoScope,
        Caller(Query),
        Served,
        NONE,
    ),
    r(
        "PUT",
        "/api/v1/alerts/rules/{id}",
        NoScope,
        Caller(ManageOrg),
        Served,
        NONE,
    ),
    r(
        "DELETE",
        "/api/v1/alerts/rules/{id}",
        NoScope,
        Caller(ManageOrg),
        Served,
        NONE,
    ),
    r(
        "GET",
        "/api/v1/alerts/subscriptions",
        NoScope,
        Caller(Query),
        Served,
        NONE,
    ),
    r(
        "POST",
        "/api/v1/alerts/subscriptions",
        NoScope,
        Caller(Query),
        Served,
        NONE,
    ),
    r(
        "DELETE",
        "/api/v1/alerts/subscriptions/{id}",
        NoScope,
        Caller(Query),
        Served,
        NONE,
    ),
    // Studies received from peers, of the caller's organisation.
    r(
        "GET",
        "/api/v1/arrivals",
        NoScope,
        Caller(Query),
        Listing,
        NONE,
    ),
    // Deletions (the target is restored after each cell).
    r(
        "DELETE",
        "/api/v1/studies/{study}",
        Study,
        OnStudy(Delete),
        Change,
        &["delete"],
    ),
    r(
        "DELETE",
        "/api/v1/studies/{study}/series/{series}",
        Study,
        OnStudy(Delete),
        Change,
        &["delete"],
    ),
    r(
        "DELETE",
        "/api/v1/studies/{study}/series/{series}/instances/{sop}",
        Study,
        OnStudy(Delete),
        Change,
        &["delete"],
    ),
    // Last: a granted break-glass opens the other organisation's study to the clinician.
    r(
        "POST",
        "/api/v1/studies/{study}/break-glass",
        Study,
        OnStudy(BreakGlass),
        Change,
        &["break-glass"],
    ),
];
