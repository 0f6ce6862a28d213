//! [`Registry`]: the exchange network's records (issue 5): peers (other Vesalius sites), DICOM
//! nodes (legacy PACS and modalities we send to or query), routes (rules that turn an arriving
//! instance into outbox jobs) and arrivals (studies delivered here by peers, with their priority
//! and completeness). Data only: matching routes, signing requests and sending live in
//! `vesalius-exchange` and `vesalius-auth`.
//!
//! Contract:
//! - Names are unique: a peer by `name`, a node by `name`, a route by `id`; an arrival by
//!   `(org, study_uid)`.
//! - [`Registry::apply`] is atomic and commits its audit events with the change.
//! - Lists come in a fixed order: peers and nodes by name, routes by `(order, id)`, arrivals by
//!   most recent update first.
//! - Records put by the configuration file carry `managed = true`; the configuration re-puts them
//!   at every start (DESIGN.md: "the config file may seed entries").

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::audit::AuditEvent;
use crate::error::{Error, Result};
use crate::memory_directory::MemoryAuditLog;
use crate::model::OrgId;
pub use crate::query::QueryModel;

/// What kind of site a peer is.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum PeerKind {
    /// Another Vesalius site: signed requests both ways, manifests, hash-verified receipts,
    /// and it may call us.
    #[default]
    Vesalius,
    /// A plain DICOMweb origin server (PS3.18), e.g. Orthanc with its DICOMweb plug-in: we send
    /// it standard STOW-RS with its credentials ([`PeerAuth`]) and take its STOW-RS answer as
    /// the receipt; it never calls us (its requests are refused).
    Dicomweb,
}

impl PeerKind {
    /// `vesalius` or `dicomweb`.
    pub fn as_str(self) -> &'static str {
        match self {
            PeerKind::Vesalius => "vesalius",
            PeerKind::Dicomweb => "dicomweb",
        }
    }

    /// Parses [`PeerKind::as_str`]'s names.
    pub fn parse(s: &str) -> Option<PeerKind> {
        match s {
            "vesalius" => Some(PeerKind::Vesalius),
            "dicomweb" => Some(PeerKind::Dicomweb),
            _ => None,
        }
    }
}

/// The credentials we present to a plain DICOMweb peer (a Vesalius peer is called with signed
/// tokens instead). Secrets are never serialised out: [`Serialize`] writes `"<redacted>"` in
/// their place, so API answers and `--json` listings cannot leak them.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(tag = "type", rename_all = "kebab-case", deny_unknown_fields)]
pub enum PeerAuth {
    /// No `Authorization` header.
    #[default]
    None,
    /// HTTP Basic (RFC 7617).
    Basic {
        /// User name.
        username: String,
        /// Password.
        password: String,
    },
    /// A bearer token (RFC 6750).
    Bearer {
        /// The token.
        token: String,
    },
}

impl PeerAuth {
    /// `none`, `basic` or `bearer`.
    pub fn kind(&self) -> &'static str {
        match self {
            PeerAuth::None => "none",
            PeerAuth::Basic { .. } => "basic",
            PeerAuth::Bearer { .. } => "bearer",
        }
    }
}

/// What stands in for a secret wherever a record is shown.
pub const REDACTED: &str = "<redacted>";

impl Serialize for PeerAuth {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut m = s.serialize_map(None)?;
        m.serialize_entry("type", self.kind())?;
        match self {
            PeerAuth::None => {}
            PeerAuth::Basic { username, .. } => {
                m.serialize_entry("username", username)?;
                m.serialize_entry("password", REDACTED)?;
            }
            PeerAuth::Bearer { .. } => m.serialize_entry("token", REDACTED)?,
        }
        m.end()
    }
}

/// Another site: a Vesalius site or, with [`PeerKind::Dicomweb`], any DICOMweb server we push to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Peer {
    /// Short name, unique here, e.g. `hub`.
    pub name: String,
    /// What it is (default: a Vesalius site).
    #[serde(default)]
    pub kind: PeerKind,
    /// Its base URL (`https://hub.example.org`; for a DICOMweb peer its service root,
    /// `https://pacs.example.org/dicom-web`); plain `http` only on loopback.
    pub base_url: String,
    /// Its Ed25519 public key (`ed25519:` + base64url): verifies its requests and its answers.
    /// Empty for a DICOMweb peer.
    pub public_key: String,
    /// How we authenticate to a DICOMweb peer (a Vesalius peer: [`PeerAuth::None`], we sign).
    #[serde(default)]
    pub auth: PeerAuth,
    /// The local organisation the peer acts as when it calls us (stores land there).
    pub org: OrgId,
    /// The organisation to deliver into at the peer (`?org=` of its STOW-RS); `None`: the one
    /// the peer maps us to.
    pub remote_org: Option<OrgId>,
    /// Whether the peer may search and retrieve here (federated search, remote viewing).
    pub may_query: bool,
    /// Description.
    pub description: String,
    /// Put by the configuration file.
    pub managed: bool,
    /// Creation time, ms.
    pub created_ms: i64,
}

/// How studies are retrieved from a DICOM node (PS3.4 C.4).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RetrieveMethod {
    /// C-MOVE to our own AE title (PS3.4 C.4.2): the node opens its own association to our
    /// DICOM listener, so it must know our AE title, host and port.
    #[default]
    Move,
    /// C-GET (PS3.4 C.4.3): the instances come back as C-STORE sub-operations on our own
    /// association, so the node needs no address for us (behind NAT, a firewall, a PACS that
    /// cannot be told new destinations).
    Get,
}

impl RetrieveMethod {
    /// `move` or `get`.
    pub fn as_str(self) -> &'static str {
        match self {
            RetrieveMethod::Move => "move",
            RetrieveMethod::Get => "get",
        }
    }

    /// Parses [`RetrieveMethod::as_str`]'s names.
    pub fn parse(s: &str) -> Option<RetrieveMethod> {
        match s {
            "move" => Some(RetrieveMethod::Move),
            "get" => Some(RetrieveMethod::Get),
            _ => None,
        }
    }

    /// The DIMSE operation's name, for messages: `C-MOVE` or `C-GET`.
    pub fn operation(self) -> &'static str {
        match self {
            RetrieveMethod::Move => "C-MOVE",
            RetrieveMethod::Get => "C-GET",
        }
    }
}

/// A legacy DICOM node (PACS, modality, workstation) we send to or query.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DicomNode {
    /// Short name, unique here, e.g. `pacs`.
    pub name: String,
    /// Its AE title.
    pub ae_title: String,
    /// Host name or address.
    pub host: String,
    /// Port.
    pub port: u16,
    /// Transfer syntaxes it accepts (UIDs); empty: the uncompressed ones.
    pub transfer_syntaxes: Vec<String>,
    /// How studies are retrieved from it (`node retrieve`, prefetches).
    #[serde(default)]
    pub retrieve: RetrieveMethod,
    /// The Query/Retrieve Information Model it is queried and retrieved from in: Study Root
    /// (default) or Patient Root, for a PACS that answers only that one (PS3.4 C.6.1).
    #[serde(default)]
    pub query_model: QueryModel,
    /// The organisation whose data may be sent there (routes of other organisations cannot).
    pub org: OrgId,
    /// Description.
    pub description: String,
    /// Put by the configuration file.
    pub managed: bool,
    /// Creation time, ms.
    pub created_ms: i64,
}

/// What an arriving instance must look like for a route to fire. Every set condition must hold;
/// lists hold when any entry matches. Text patterns are globs (`*`, `?`, case-insensitive) or,
/// with a `re:` prefix, regular expressions.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct RouteMatch {
    /// Calling AE titles (the sender's).
    pub calling_ae: Vec<String>,
    /// Called AE titles (ours, as the sender addressed us).
    pub called_ae: Vec<String>,
    /// Source organisations (the owner of the stored instance).
    pub source_org: Vec<OrgId>,
    /// Modalities (0008,0060).
    pub modality: Vec<String>,
    /// SOP Class UIDs.
    pub sop_class: Vec<String>,
    /// Body Part Examined (0018,0015) patterns.
    pub body_part: Vec<String>,
    /// Study Description (0008,1030) pattern.
    pub study_description: Option<String>,
    /// Station Name (0008,1010) pattern.
    pub station_name: Option<String>,
    /// Time of day window `HH:MM-HH:MM` (site clock, UTC unless configured); may wrap midnight.
    pub time_of_day: Option<String>,
}

/// Where a route sends.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RouteDestination {
    /// A peer, by name.
    Peer(String),
    /// A DICOM node, by name.
    Node(String),
    /// An analysis, by name (run by a later layer).
    Analysis(String),
    /// Not a destination of the instance: fetch the patient's relevant prior studies from a
    /// DICOM node (C-FIND, then C-MOVE to us or C-GET) when a study arrives.
    Prefetch(Prefetch),
}

/// What makes a prior study relevant to the arriving one (`prefetch:NODE?match=…`). Every
/// criterion a rule lists must hold; the matching itself is the exchange's (`priors::relevance`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum PriorMatch {
    /// The prior's Modalities in Study include the arriving study's modality.
    Modality,
    /// The prior shows the same body region (Body Part Examined of its series, or the region
    /// its Study Description names).
    BodyPart,
    /// The two Study Descriptions share a keyword.
    Description,
    /// The prior shares a coded procedure (scheme and code value) with the arriving study; with
    /// `body-part` or `description`, a shared code makes those hold, else they decide.
    Procedure,
    /// The prior is not of the other side: a left study's priors are left, bilateral or of no
    /// stated side, never right only.
    Laterality,
}

impl PriorMatch {
    /// Every criterion, in its canonical order.
    pub const ALL: [PriorMatch; 5] = [
        PriorMatch::Modality,
        PriorMatch::BodyPart,
        PriorMatch::Description,
        PriorMatch::Procedure,
        PriorMatch::Laterality,
    ];

    /// `modality`, `body-part`, `description`, `procedure` or `laterality`.
    pub fn as_str(self) -> &'static str {
        match self {
            PriorMatch::Modality => "modality",
            PriorMatch::BodyPart => "body-part",
            PriorMatch::Description => "description",
            PriorMatch::Procedure => "procedure",
            PriorMatch::Laterality => "laterality",
        }
    }

    /// Parses [`PriorMatch::as_str`]'s names.
    pub fn parse(s: &str) -> Option<PriorMatch> {
        Self::ALL.into_iter().find(|m| m.as_str() == s)
    }
}

/// A prefetch rule: which node to ask for a patient's priors, how many to fetch and which are
/// relevant. Written `prefetch:NODE`, with options `?max=N&years=Y&match=modality,body-part`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Prefetch {
    /// The DICOM node, by name.
    pub node: String,
    /// The most recent priors to hold here (1-100, default [`Prefetch::DEFAULT_MAX`]).
    #[serde(default = "Prefetch::default_max")]
    pub max: u32,
    /// Only priors of the last this many years (by Study Date); `None`: any age.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub years: Option<u32>,
    /// Only relevant priors: every criterion listed must hold (sorted, no repeats); empty:
    /// every prior of the patient is relevant.
    #[serde(
        default,
        rename = "match",
        skip_serializing_if = "Vec::is_empty",
        deserialize_with = "Prefetch::matching_de"
    )]
    pub matching: Vec<PriorMatch>,
}

impl Prefetch {
    /// Priors fetched when the rule does not say.
    pub const DEFAULT_MAX: u32 = 3;

    fn default_max() -> u32 {
        Self::DEFAULT_MAX
    }

    /// A rule for `node` with the default limit.
    pub fn new(node: impl Into<String>) -> Self {
        Prefetch {
            node: node.into(),
            max: Self::DEFAULT_MAX,
            years: None,
            matching: Vec::new(),
        }
    }

    /// Parses `NODE` with options `?max=N` (1-100), `&years=Y` (1-200) and
    /// `&match=CRITERION[,CRITERION]` (`modality`, `body-part`, `description`, `procedure`,
    /// `laterality`; also separated by
    /// `+`, or `match=` repeated): the text after `prefetch:`. The error names what is wrong.
    pub fn parse(s: &str) -> std::result::Result<Prefetch, String> {
        let (node, query) = s.split_once('?').unwrap_or((s, ""));
        if node.is_empty() {
            return Err("prefetch needs a node name: prefetch:NODE".into());
        }
        let mut p = Prefetch::new(node);
        for kv in query.split('&').filter(|kv| !kv.is_empty()) {
            let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
            if k == "match" {
                for m in v.split([',', '+']).map(str::trim) {
                    let m = PriorMatch::parse(m).ok_or_else(|| {
                        format!(
                            "prefetch match {m:?} is not a criterion (modality, body-part, \
                             description, procedure, laterality)"
                        )
                    })?;
                    p.matching.push(m);
                }
                continue;
            }
            let n: u32 = v
                .parse()
                .map_err(|_| format!("prefetch option {k}={v:?} needs a number"))?;
            match k {
                "max" if (1..=100).contains(&n) => p.max = n,
                "years" if (1..=200).contains(&n) => p.years = Some(n),
                "max" => return Err("prefetch max is 1-100".into()),
                "years" => return Err("prefetch years is 1-200".into()),
                _ => return Err(format!("unknown prefetch option {k:?} (max, years, match)")),
            }
        }
        p.matching.sort();
        p.matching.dedup();
        Ok(p)
    }

    /// The `match` list of the JSON form, sorted and without repeats like the parsed one.
    fn matching_de<'de, D: serde::Deserializer<'de>>(
        d: D,
    ) -> std::result::Result<Vec<PriorMatch>, D::Error> {
        let mut v = Vec::<PriorMatch>::deserialize(d)?;
        v.sort();
        v.dedup();
        Ok(v)
    }
}

/// Splits a comma-separated list of route destinations where a comma starts a new one: a
/// prefetch's `match=modality,body-part` keeps its comma (`prefetch:pacs?match=modality,body-part,
/// peer:hub` is two destinations).
pub fn split_destinations(s: &str) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for piece in s.split(',') {
        let starts = ["peer:", "node:", "analysis:", "prefetch:"]
            .iter()
            .any(|k| piece.trim_start().starts_with(k));
        match out.last_mut() {
            Some(last) if !starts && last.contains('?') => {
                last.push(',');
                last.push_str(piece);
            }
            _ => out.push(piece.to_owned()),
        }
    }
    out
}

impl RouteDestination {
    /// The outbox queue of the destination: `peer:NAME`, `node:NAME`, `analysis:NAME`,
    /// `prefetch:NODE`.
    pub fn queue(&self) -> String {
        match self {
            RouteDestination::Peer(n) => format!("peer:{n}"),
            RouteDestination::Node(n) => format!("node:{n}"),
            RouteDestination::Analysis(n) => format!("analysis:{n}"),
            RouteDestination::Prefetch(p) => format!("prefetch:{}", p.node),
        }
    }

    /// The text form [`RouteDestination::parse`] reads: the queue, plus a prefetch rule's
    /// options when they differ from the defaults.
    pub fn text(&self) -> String {
        match self {
            RouteDestination::Prefetch(p) => {
                let mut opts = Vec::new();
                if p.max != Prefetch::DEFAULT_MAX {
                    opts.push(format!("max={}", p.max));
                }
                if let Some(y) = p.years {
                    opts.push(format!("years={y}"));
                }
                if !p.matching.is_empty() {
                    let m: Vec<&str> = p.matching.iter().map(|m| m.as_str()).collect();
                    opts.push(format!("match={}", m.join(",")));
                }
                if opts.is_empty() {
                    self.queue()
                } else {
                    format!("{}?{}", self.queue(), opts.join("&"))
                }
            }
            _ => self.queue(),
        }
    }

    /// The DICOM node the destination names (`node:` and `prefetch:`).
    pub fn node_name(&self) -> Option<&str> {
        match self {
            RouteDestination::Node(n) => Some(n),
            RouteDestination::Prefetch(p) => Some(&p.node),
            _ => None,
        }
    }

    /// Parses `peer:NAME`, `node:NAME`, `analysis:NAME` or
    /// `prefetch:NODE[?max=N&years=Y&match=CRITERIA]`.
    pub fn parse(s: &str) -> Option<RouteDestination> {
        Self::parse_checked(s).ok()
    }

    /// [`RouteDestination::parse`] saying what is wrong.
    pub fn parse_checked(s: &str) -> std::result::Result<RouteDestination, String> {
        let bad = || {
            format!(
                "destination {s:?} is not peer:NAME, node:NAME, analysis:NAME or \
                 prefetch:NODE[?max=N&years=Y&match=CRITERIA]"
            )
        };
        let (kind, name) = s.split_once(':').ok_or_else(bad)?;
        if name.is_empty() {
            return Err(bad());
        }
        match kind {
            "peer" => Ok(RouteDestination::Peer(name.into())),
            "node" => Ok(RouteDestination::Node(name.into())),
            "analysis" => Ok(RouteDestination::Analysis(name.into())),
            "prefetch" => Prefetch::parse(name).map(RouteDestination::Prefetch),
            _ => Err(bad()),
        }
    }
}

/// A rule: when an instance matching `matcher` arrives, send it to `destinations`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Route {
    /// Id, unique here (a slug).
    pub id: String,
    /// Display name, e.g. "CT head to the stroke centre".
    pub name: String,
    /// The organisation whose data the route may send (its administrators manage it).
    pub org: OrgId,
    /// Disabled routes never fire.
    pub enabled: bool,
    /// Evaluation order (lower first); all matching routes fire.
    pub order: i32,
    /// The condition.
    pub matcher: RouteMatch,
    /// Where to send.
    pub destinations: Vec<RouteDestination>,
    /// Priority of the jobs (higher first); carried to the receiver with the transfer.
    /// 0 routine, 100 stroke.
    pub priority: i32,
    /// De-identify before sending, with this profile (`basic`, or options such as
    /// `basic,retain-uids`), as `vesalius deid` names them.
    pub deid: Option<String>,
    /// Put by the configuration file.
    pub managed: bool,
    /// Creation time, ms.
    pub created_ms: i64,
}

/// A study delivered here by a peer: who sent it, at what priority, whether its manifest is
/// satisfied.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Arrival {
    /// The local organisation holding the copy.
    pub org: OrgId,
    /// Study Instance UID.
    pub study_uid: String,
    /// The sending peer's name.
    pub from_peer: String,
    /// The sender's priority (highest seen).
    pub priority: i32,
    /// Instances the latest manifest listed.
    pub manifest_instances: u64,
    /// When the latest manifest was found satisfied (all instances present with their
    /// hashes), ms; 0 while incomplete.
    pub complete_ms: i64,
    /// Last change, ms.
    pub updated_ms: i64,
}

/// A change to the registry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum RegistryChange {
    /// Creates or replaces a peer (by name).
    PutPeer(Peer),
    /// Deletes a peer.
    DeletePeer(String),
    /// Creates or replaces a DICOM node (by name).
    PutNode(DicomNode),
    /// Deletes a DICOM node.
    DeleteNode(String),
    /// Creates or replaces a route (by id).
    PutRoute(Route),
    /// Deletes a route.
    DeleteRoute(String),
    /// Creates or replaces an arrival (by org and study).
    PutArrival(Arrival),
}

/// The exchange registry.
#[async_trait]
pub trait Registry: Send + Sync + 'static {
    /// Applies changes and appends audit events in one durable transaction. Deleting a record
    /// that does not exist fails with `NotFound` and changes nothing.
    async fn apply(&self, changes: Vec<RegistryChange>, audit: Vec<AuditEvent>) -> Result<()>;
    /// Every peer.
    async fn peers(&self) -> Result<Vec<Peer>>;
    /// One peer.
    async fn peer(&self, name: &str) -> Result<Option<Peer>>;
    /// Every DICOM node.
    async fn nodes(&self) -> Result<Vec<DicomNode>>;
    /// One DICOM node.
    async fn node(&self, name: &str) -> Result<Option<DicomNode>>;
    /// Every route.
    async fn routes(&self) -> Result<Vec<Route>>;
    /// One arrival.
    async fn arrival(&self, org: &str, study_uid: &str) -> Result<Option<Arrival>>;
    /// Arrivals of `org` (every organisation when `None`), most recent first, at most `limit`.
    async fn arrivals(&self, org: Option<&str>, limit: usize) -> Result<Vec<Arrival>>;
}

#[derive(Default)]
struct RegistryState {
    peers: BTreeMap<String, Peer>,
    nodes: BTreeMap<String, DicomNode>,
    routes: BTreeMap<String, Route>,
    arrivals: BTreeMap<(String, String), Arrival>,
}

impl RegistryState {
    fn apply(&mut self, change: RegistryChange) -> Result<()> {
        fn gone(what: &str, id: &str) -> Error {
            Error::NotFound(format!("{what} {id}"))
        }
        match change {
            RegistryChange::PutPeer(p) => {
                self.peers.insert(p.name.clone(), p);
            }
            RegistryChange::DeletePeer(n) => {
                self.peers.remove(&n).ok_or_else(|| gone("peer", &n))?;
            }
            RegistryChange::PutNode(d) => {
                self.nodes.insert(d.name.clone(), d);
            }
            RegistryChange::DeleteNode(n) => {
                self.nodes.remove(&n).ok_or_else(|| gone("node", &n))?;
            }
            RegistryChange::PutRoute(r) => {
                self.routes.insert(r.id.clone(), r);
            }
            RegistryChange::DeleteRoute(n) => {
                self.routes.remove(&n).ok_or_else(|| gone("route", &n))?;
            }
            RegistryChange::PutArrival(a) => {
                self.arrivals
                    .insert((a.org.clone(), a.study_uid.clone()), a);
            }
        }
        Ok(())
    }
}

/// Sorts routes in evaluation order, the one order every backend answers in.
pub fn sort_routes(routes: &mut [Route]) {
    routes.sort_by(|a, b| a.order.cmp(&b.order).then_with(|| a.id.cmp(&b.id)));
}

/// Sorts arrivals most recent first (ties by org, study), the one order every backend answers in.
pub fn sort_arrivals(arrivals: &mut [Arrival]) {
    arrivals.sort_by(|a, b| {
        b.updated_ms
            .cmp(&a.updated_ms)
            .then_with(|| a.org.cmp(&b.org))
            .then_with(|| a.study_uid.cmp(&b.study_uid))
    });
}

/// The in-memory registry: the reference model.
pub struct MemoryRegistry {
    state: Mutex<RegistryState>,
    audit: Arc<MemoryAuditLog>,
}

impl MemoryRegistry {
    /// An empty registry appending its audit events to `audit`.
    pub fn new(audit: Arc<MemoryAuditLog>) -> Self {
        MemoryRegistry {
            state: Mutex::default(),
            audit,
        }
    }
}

#[async_trait]
impl Registry for MemoryRegistry {
    async fn apply(&self, changes: Vec<RegistryChange>, audit: Vec<AuditEvent>) -> Result<()> {
        let mut st = self.state.lock().expect("lock");
        // All or nothing: apply to a copy, then swap it in.
        let mut next = RegistryState {
            peers: st.peers.clone(),
            nodes: st.nodes.clone(),
            routes: st.routes.clone(),
            arrivals: st.arrivals.clone(),
        };
        for c in changes {
            next.apply(c)?;
        }
        *st = next;
        self.audit.append_now(audit);
        Ok(())
    }

    async fn peers(&self) -> Result<Vec<Peer>> {
        Ok(self
            .state
            .lock()
            .expect("lock")
            .peers
            .values()
            .cloned()
            .collect())
    }

    async fn peer(&self, name: &str) -> Result<Option<Peer>> {
        Ok(self.state.lock().expect("lock").peers.get(name).cloned())
    }

    async fn nodes(&self) -> Result<Vec<DicomNode>> {
        Ok(self
            .state
            .lock()
            .expect("lock")
            .nodes
            .values()
            .cloned()
            .collect())
    }

    async fn node(&self, name: &str) -> Result<Option<DicomNode>> {
        Ok(self.state.lock().expect("lock").nodes.get(name).cloned())
    }

    async fn routes(&self) -> Result<Vec<Route>> {
        let mut r: Vec<Route> = self
            .state
            .lock()
            .expect("lock")
            .routes
            .values()
            .cloned()
            .collect();
        sort_routes(&mut r);
        Ok(r)
    }

    async fn arrival(&self, org: &str, study_uid: &str) -> Result<Option<Arrival>> {
        Ok(self
            .state
            .lock()
            .expect("lock")
            .arrivals
            .get(&(org.to_owned(), study_uid.to_owned()))
            .cloned())
    }

    async fn arrivals(&self, org: Option<&str>, limit: usize) -> Result<Vec<Arrival>> {
        let mut a: Vec<Arrival> = self
            .state
            .lock()
            .expect("lock")
            .arrivals
            .values()
            .filter(|a| org.is_none_or(|o| a.org == o))
            .cloned()
            .collect();
        sort_arrivals(&mut a);
        if limit > 0 {
            a.truncate(limit);
        }
        Ok(a)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefetch_destinations_parse_print_and_serialise() {
        let d = RouteDestination::parse("prefetch:pacs").unwrap();
        assert_eq!(d, RouteDestination::Prefetch(Prefetch::new("pacs")));
        assert_eq!(d.queue(), "prefetch:pacs");
        assert_eq!(d.text(), "prefetch:pacs");
        assert_eq!(d.node_name(), Some("pacs"));
        let d = RouteDestination::parse("prefetch:pacs?max=5&years=2").unwrap();
        assert_eq!(d.text(), "prefetch:pacs?max=5&years=2");
        assert_eq!(d.queue(), "prefetch:pacs");
        let json = serde_json::to_string(&d).unwrap();
        assert_eq!(json, r#"{"prefetch":{"node":"pacs","max":5,"years":2}}"#);
        assert_eq!(serde_json::from_str::<RouteDestination>(&json).unwrap(), d);
        // Stored without options, the defaults apply.
        let bare: RouteDestination = serde_json::from_str(r#"{"prefetch":{"node":"p"}}"#).unwrap();
        assert_eq!(bare, RouteDestination::Prefetch(Prefetch::new("p")));
        for bad in [
            "prefetch:",
            "prefetch:?max=2",
            "prefetch:pacs?max=0",
            "prefetch:pacs?max=x",
            "prefetch:pacs?depth=2",
            "prefetch:pacs?years=0",
        ] {
            assert!(RouteDestination::parse_checked(bad).is_err(), "{bad}");
        }
        assert_eq!(
            RouteDestination::parse("node:pacs").unwrap().text(),
            "node:pacs"
        );
    }

    #[test]
    fn prefetch_match_criteria_parse_print_and_serialise() {
        let d = RouteDestination::parse("prefetch:pacs?max=3&years=5&match=body-part,modality")
            .unwrap();
        let RouteDestination::Prefetch(p) = &d else {
            panic!("{d:?}")
        };
        assert_eq!(p.matching, [PriorMatch::Modality, PriorMatch::BodyPart]);
        assert_eq!(d.text(), "prefetch:pacs?years=5&match=modality,body-part");
        // `+` and repeated keys say the same; repeats are dropped.
        for same in [
            "prefetch:pacs?years=5&match=modality+body-part",
            "prefetch:pacs?match=modality&years=5&match=body-part&match=modality",
        ] {
            assert_eq!(RouteDestination::parse(same).unwrap(), d, "{same}");
        }
        let json = serde_json::to_string(&d).unwrap();
        assert_eq!(
            json,
            r#"{"prefetch":{"node":"pacs","max":3,"years":5,"match":["modality","body-part"]}}"#
        );
        let from_api: RouteDestination = serde_json::from_str(
            r#"{"prefetch":{"node":"pacs","years":5,"match":["body-part","modality","modality"]}}"#,
        )
        .unwrap();
        assert_eq!(from_api, d);
        assert!(
            serde_json::from_str::<RouteDestination>(
                r#"{"prefetch":{"node":"pacs","match":["colour"]}}"#
            )
            .is_err()
        );
        let e = RouteDestination::parse_checked("prefetch:pacs?match=colour").unwrap_err();
        assert!(e.contains("modality, body-part, description"), "{e}");
        assert!(e.contains("procedure, laterality"), "{e}");
        // The coded-procedure and laterality criteria, in canonical order.
        let d =
            RouteDestination::parse("prefetch:pacs?match=laterality,procedure,body-part").unwrap();
        let RouteDestination::Prefetch(p) = &d else {
            panic!("{d:?}")
        };
        assert_eq!(
            p.matching,
            [
                PriorMatch::BodyPart,
                PriorMatch::Procedure,
                PriorMatch::Laterality
            ]
        );
        assert_eq!(
            d.text(),
            "prefetch:pacs?match=body-part,procedure,laterality"
        );
        let json = serde_json::to_string(&d).unwrap();
        assert!(
            json.contains(r#""match":["body-part","procedure","laterality"]"#),
            "{json}"
        );
        assert!(RouteDestination::parse_checked("prefetch:pacs?match=").is_err());
    }

    #[test]
    fn destination_lists_keep_the_commas_of_a_match() {
        assert_eq!(
            split_destinations("peer:hub,prefetch:pacs?max=2&match=modality,body-part,node:x"),
            [
                "peer:hub",
                "prefetch:pacs?max=2&match=modality,body-part",
                "node:x"
            ]
        );
        assert_eq!(split_destinations("peer:a,peer:b"), ["peer:a", "peer:b"]);
        // A stray piece after a destination without options stays a (bad) destination.
        assert_eq!(
            split_destinations("peer:a,modality"),
            ["peer:a", "modality"]
        );
    }
}
