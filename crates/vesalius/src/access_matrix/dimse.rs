//! The DIMSE half: C-ECHO, C-STORE, C-FIND, C-GET, C-MOVE and Storage Commitment (N-ACTION),
//! driven in process with the crate's SCU and association API, as an unknown AE title, a
//! store-only AE title of `a` and a query/retrieve AE title of `a`, against the same targets.

use vesalius_auth::policy::StudyRef;
use vesalius_auth::{Action, Principal, Resource};
use vesalius_core::tag;
use vesalius_dimse::message::status;
use vesalius_store::audit::AuditFilter;
use vesalius_store::directory::{AeEntry, DirectoryChange};
use vesalius_store::query::Level;

use super::audit::{Expected, audited};
use super::dimse_scu::{Outcome, Received, commit, destination, retrieve};
use super::fixture::{GHOST_ORG, GHOST_UID, ORG_A, ORG_B, OUR_AE, Placed, Site};
use super::report::{Cell, Matrix};

/// The calling AE titles, in column order.
pub const CALLERS: [&str; 3] = ["unknown AE", "store-only AE", "query AE"];

/// The services, in row order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Service {
    Echo,
    Store,
    Find,
    Get,
    Move,
    /// C-MOVE to an AE title of organisation `b`: never a destination for `a`.
    MoveAcross,
    Commit,
}

const SERVICES: [Service; 7] = [
    Service::Echo,
    Service::Store,
    Service::Find,
    Service::Get,
    Service::Move,
    Service::MoveAcross,
    Service::Commit,
];

impl Service {
    fn row(self) -> &'static str {
        match self {
            Service::Echo => "C-ECHO",
            Service::Store => "C-STORE",
            Service::Find => "C-FIND (study level, all studies)",
            Service::Get => "C-GET (study)",
            Service::Move => "C-MOVE (study) to an AE of a",
            Service::MoveAcross => "C-MOVE (study) to an AE of b",
            Service::Commit => "N-ACTION storage commitment",
        }
    }

    fn short(self) -> &'static str {
        match self {
            Service::Echo => "ECHO",
            Service::Store => "STORE",
            Service::Find => "FIND",
            Service::Get => "GET",
            Service::Move => "MOVE",
            Service::MoveAcross => "MOVEB",
            Service::Commit => "COMMIT",
        }
    }

    /// The action the policy decides the service with (C-ECHO: none).
    fn action(self) -> Option<Action> {
        match self {
            Service::Echo => None,
            Service::Store | Service::Commit => Some(Action::Store),
            Service::Find => Some(Action::Query),
            Service::Get | Service::Move | Service::MoveAcross => Some(Action::Retrieve),
        }
    }

    fn per_study(self) -> bool {
        !matches!(self, Service::Echo | Service::Store)
    }
}

/// A calling AE title and the principal it associates as (`None`: not registered).
struct Caller {
    label: &'static str,
    ae: String,
    principal: Option<Principal>,
}

/// The caller of `label` for `service`: the query AE title gets one title per service so that
/// each service's audit events are its own.
fn caller(label: &'static str, service: Service) -> Caller {
    match label {
        "unknown AE" => Caller {
            label,
            ae: "STRANGER".into(),
            principal: None,
        },
        "store-only AE" => Caller {
            label,
            ae: "A_MODALITY".into(),
            principal: Some(Principal::ae("A_MODALITY", ORG_A, false)),
        },
        _ => {
            let ae = format!("A_Q_{}", service.short());
            Caller {
                label,
                principal: Some(Principal::ae(&ae, ORG_A, true)),
                ae,
            }
        }
    }
}

fn entry(ae: &str, org: &str, may_query: bool, listen: Option<u16>) -> AeEntry {
    AeEntry {
        ae_title: ae.into(),
        org: org.into(),
        allowed_addrs: vec!["127.0.0.1".into()],
        listen: listen.map(|p| ("127.0.0.1".into(), p)),
        description: "access matrix".into(),
        may_query,
    }
}

/// One target of a per-study service: the study and its one instance.
struct Aim {
    label: &'static str,
    study: StudyRef,
    sop: String,
    exists: bool,
}

fn aims(site: &Site) -> Vec<Aim> {
    let of = |label, p: &Placed| Aim {
        label,
        study: p.study_ref(),
        sop: p.sample.sop.clone(),
        exists: true,
    };
    vec![
        of("own", &site.own),
        of("granted", &site.granted),
        of("other", &site.other),
        Aim {
            label: "ghost",
            study: StudyRef {
                org: GHOST_ORG.into(),
                study_uid: GHOST_UID.into(),
                patient: None,
            },
            sop: format!("{GHOST_UID}.1.1"),
            exists: false,
        },
    ]
}

async fn decide(site: &Site, p: &Option<Principal>, action: Action, r: Resource) -> bool {
    match p {
        Some(p) => site
            .storage
            .auth
            .authorize(p, action, &r)
            .await
            .expect("authorize")
            .is_allowed(),
        None => false,
    }
}

/// What trying one cell came to.
struct Tried {
    allowed: bool,
    outcome: Outcome,
    problems: Vec<String>,
    /// Audit actions an allowed call must leave, and the study they must name.
    audit: Option<(&'static [&'static str], Option<String>)>,
}

impl Tried {
    fn new(allowed: bool, outcome: Outcome) -> Tried {
        Tried {
            allowed,
            outcome,
            problems: Vec::new(),
            audit: None,
        }
    }
}

/// Registers the AE titles: a store-only one, a query/retrieve one per service (each
/// service's audit events its own), and a move destination in each organisation.
async fn register(site: &Site, a_port: u16, b_port: u16) {
    let mut changes = vec![
        DirectoryChange::PutAe(entry("A_MODALITY", ORG_A, false, None)),
        DirectoryChange::PutAe(entry("A_DEST", ORG_A, false, Some(a_port))),
        DirectoryChange::PutAe(entry("B_DEST", ORG_B, false, Some(b_port))),
    ];
    for s in SERVICES {
        let ae = format!("A_Q_{}", s.short());
        changes.push(DirectoryChange::PutAe(entry(&ae, ORG_A, true, None)));
    }
    site.storage
        .auth
        .directory()
        .apply(changes, Vec::new())
        .await
        .expect("AE titles");
}

/// Runs the DIMSE matrix.
pub async fn run(site: &Site, matrix: &mut Matrix) {
    let (a_port, a_got) = destination("A_DEST").await;
    let (b_port, b_got) = destination("B_DEST").await;
    register(site, a_port, b_port).await;
    let mut expected = Vec::new();
    for service in SERVICES {
        for label in CALLERS {
            let c = caller(label, service);
            let targets: Vec<Option<Aim>> = if service.per_study() {
                aims(site).into_iter().map(Some).collect()
            } else {
                vec![None]
            };
            for aim in targets {
                let mut t = match (service, &aim) {
                    (Service::Echo, _) => echo(site, &c).await,
                    (Service::Store, _) => store(site, &c).await,
                    (Service::Find, Some(a)) => find(site, &c, a).await,
                    (Service::Get, Some(a)) => get_or_move(site, &c, a, None).await,
                    (Service::Move, Some(a)) => {
                        get_or_move(site, &c, a, Some(("A_DEST", &a_got))).await
                    }
                    (Service::MoveAcross, Some(a)) => {
                        get_or_move(site, &c, a, Some(("B_DEST", &b_got))).await
                    }
                    (Service::Commit, Some(a)) => commitment(site, &c, a).await,
                    _ => unreachable!("per-study services have a target"),
                };
                common_checks(site, service, &c, &mut t).await;
                let cell = matrix.push(Cell {
                    row: service.row().into(),
                    who: c.label,
                    target: aim.as_ref().map_or("-", |a| a.label),
                    outcome: t.outcome.text.clone(),
                    allowed: t.allowed,
                    problems: t.problems,
                    known: None,
                });
                if let (true, Some((actions, study))) = (t.allowed, t.audit) {
                    expected.push(Expected {
                        cell,
                        actor_id: c.ae.clone(),
                        actions,
                        study,
                        any_outcome: false,
                    });
                }
            }
        }
    }
    rejections_audited(site, matrix).await;
    audited(site, matrix, expected).await;
}

/// Checks every cell needs: unknown callers never get past A-ASSOCIATE and registered ones
/// always do; a service the caller may not use at all is refused with 0124 (a study it may not
/// see is merely not found).
async fn common_checks(site: &Site, service: Service, c: &Caller, t: &mut Tried) {
    let registered = c.principal.is_some();
    if t.outcome.rejected == registered {
        t.problems
            .push(format!("association rejected: {}", t.outcome.rejected));
    }
    if let (true, Some(action)) = (registered, service.action()) {
        let may = decide(site, &c.principal, action, Resource::org(ORG_A)).await;
        if !may && t.outcome.status != Some(status::NOT_AUTHORIZED) {
            t.problems
                .push(format!("refused with {}, not 0124", t.outcome.text));
        }
    }
    if t.outcome.text.starts_with("ERR") {
        t.problems.push(t.outcome.text.clone());
    }
}

/// Every refused association is audited, with the title it claimed.
async fn rejections_audited(site: &Site, matrix: &mut Matrix) {
    let rejected = site
        .storage
        .auth
        .audit_log()
        .search(&AuditFilter {
            action: Some("association-rejected".into()),
            limit: 1000,
            ..Default::default()
        })
        .await
        .expect("audit search");
    if !rejected.iter().any(|r| r.event.actor.name == "STRANGER")
        && let Some(c) = matrix.cells.iter_mut().find(|c| c.who == CALLERS[0])
    {
        c.problems
            .push("no association-rejected audit event names STRANGER".into());
    }
}

async fn echo(site: &Site, c: &Caller) -> Tried {
    let o = vesalius_dimse::scu::echo(&site.dicom.to_string(), &c.ae, OUR_AE)
        .await
        .map_or_else(Outcome::from_err, |()| Outcome::done(0, Vec::new()));
    Tried::new(c.principal.is_some(), o)
}

/// C-STORE of a fresh study: lands in `a` when allowed, nowhere otherwise.
async fn store(site: &Site, c: &Caller) -> Tried {
    let allowed = decide(site, &c.principal, Action::Store, Resource::org(ORG_A)).await;
    let f = site.fresh();
    let sent = vesalius_dimse::scu::store_files(
        &site.dicom.to_string(),
        &c.ae,
        OUR_AE,
        vec![f.path.clone()],
        |_, _| {},
    )
    .await;
    let o = match sent {
        Ok(s) if s.sent == 1 => Outcome::done(0, vec![f.sop.clone()]),
        Ok(s) => Outcome {
            text: format!("FAIL {:?}", s.failures.first().map(|x| &x.1)),
            ..Default::default()
        },
        Err(e) => Outcome::from_err(e),
    };
    let mut t = Tried::new(allowed, o);
    let holders = site.holders(&f.study, &f.sop).await;
    let want = if allowed {
        vec![ORG_A.to_owned()]
    } else {
        Vec::new()
    };
    if holders != want {
        t.problems
            .push(format!("stored into {holders:?}, expected {want:?}"));
    }
    t.audit = Some((&["store"], Some(f.study)));
    t
}

/// C-FIND of every study: the target is among the answers exactly when allowed.
async fn find(site: &Site, c: &Caller, a: &Aim) -> Tried {
    let study = Resource::Study(a.study.clone());
    let allowed = decide(site, &c.principal, Action::Query, study).await;
    let keys = [(tag::STUDY_INSTANCE_UID, String::new())];
    let addr = site.dicom.to_string();
    let o = match vesalius_dimse::scu::find(&addr, &c.ae, OUR_AE, Level::Study, &keys).await {
        Ok(found) => {
            let uids = found
                .iter()
                .filter_map(|m| m.get("0020000D")?["Value"][0].as_str().map(str::to_owned))
                .collect();
            Outcome::done(0, uids)
        }
        Err(e) => Outcome::from_err(e),
    };
    let listed = o.uids.contains(&a.study.study_uid);
    let mut t = Tried::new(allowed, o);
    if listed != allowed {
        t.problems.push(if allowed {
            "allowed, but the study is not found".to_owned()
        } else {
            "REFUSED BY POLICY, YET FOUND".to_owned()
        });
    }
    t.audit = Some((&["query"], None));
    t
}

/// C-GET (no destination) or C-MOVE of the target study: its instance arrives exactly when
/// allowed; another organisation's AE title is never a destination.
async fn get_or_move(site: &Site, c: &Caller, a: &Aim, dest: Option<(&str, &Received)>) -> Tried {
    let study = Resource::Study(a.study.clone());
    let may = decide(site, &c.principal, Action::Retrieve, study).await;
    let across = dest.is_some_and(|(ae, _)| ae == "B_DEST");
    let allowed = may && !across;
    let o = retrieve(site, &c.ae, &a.study.study_uid, dest)
        .await
        .unwrap_or_else(Outcome::from_err);
    let got = o.uids.contains(&a.sop);
    let mut t = Tried::new(allowed, o);
    if got != allowed {
        t.problems.push(if allowed {
            format!("allowed, but nothing retrieved ({})", t.outcome.text)
        } else {
            "REFUSED BY POLICY, YET RETRIEVED".to_owned()
        });
    }
    if !allowed && !t.outcome.uids.is_empty() {
        t.problems
            .push(format!("sent {} instance(s)", t.outcome.uids.len()));
    }
    let refused = [status::MOVE_DESTINATION_UNKNOWN, status::NOT_AUTHORIZED];
    if across && c.principal.is_some() && !t.outcome.status.is_some_and(|s| refused.contains(&s)) {
        t.problems
            .push("a destination of b is not refused with A801".into());
    }
    t.audit = Some((&["retrieve"], Some(a.study.study_uid.clone())));
    t
}

/// Storage Commitment of the target's instance: accepted for whoever may store; only what the
/// caller's own organisation holds is committed.
async fn commitment(site: &Site, c: &Caller, a: &Aim) -> Tried {
    let allowed = decide(site, &c.principal, Action::Store, Resource::org(ORG_A)).await;
    let o = commit(site, &c.ae, &a.sop)
        .await
        .unwrap_or_else(Outcome::from_err);
    let owner = Resource::org(a.study.org.clone());
    let should = allowed && a.exists && decide(site, &c.principal, Action::Store, owner).await;
    let committed = o.uids.contains(&a.sop);
    let mut t = Tried::new(allowed, o);
    if committed != should {
        t.problems.push(format!(
            "committed: {committed}, expected {should} ({})",
            t.outcome.text
        ));
    }
    if allowed && t.outcome.status != Some(status::SUCCESS) {
        t.problems
            .push(format!("allowed, answered {}", t.outcome.text));
    }
    t
}
