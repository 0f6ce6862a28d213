//! Checks on registry records that need the registry itself, shared by the API and
//! `vesalius admin`: whether a route's destinations exist and may receive its data, which
//! routes send to a destination (before it is removed), and whether a peer's fields fit its kind.

use vesalius_store::Registry;
use vesalius_store::registry::{PeerAuth, PeerKind, Route, RouteDestination};

/// The first reason `route` cannot send where it says, `None` when every destination exists and
/// may receive its data: a Vesalius peer of any organisation (it is a site of the network), a
/// plain DICOMweb peer or a DICOM node (to send to or prefetch from) only of the route's own
/// organisation. `analysis:` destinations are not checked here.
pub async fn destination_problem(
    registry: &dyn Registry,
    route: &Route,
) -> vesalius_store::Result<Option<String>> {
    for d in &route.destinations {
        let problem = match d {
            RouteDestination::Peer(n) => match registry.peer(n).await? {
                None => Some(format!("no peer {n}")),
                // A plain DICOMweb server is an organisation's own destination, like a node.
                Some(p) if p.kind == PeerKind::Dicomweb && p.org != route.org => Some(format!(
                    "DICOMweb peer {n} belongs to organisation {}: routes of {} cannot send there",
                    p.org, route.org
                )),
                Some(_) => None,
            },
            RouteDestination::Node(n)
            | RouteDestination::Prefetch(vesalius_store::registry::Prefetch { node: n, .. }) => {
                match registry.node(n).await? {
                    None => Some(format!("no DICOM node {n}")),
                    Some(node) if node.org != route.org => Some(format!(
                        "DICOM node {n} belongs to organisation {}: routes of {} cannot send there",
                        node.org, route.org
                    )),
                    Some(_) => None,
                }
            }
            RouteDestination::Analysis(_) => None,
        };
        if problem.is_some() {
            return Ok(problem);
        }
    }
    Ok(None)
}

/// The ids of the routes that send to `dest` (for a DICOM node, also those that prefetch from
/// it).
pub async fn routes_to(
    registry: &dyn Registry,
    dest: &RouteDestination,
) -> vesalius_store::Result<Vec<String>> {
    Ok(registry
        .routes()
        .await?
        .into_iter()
        .filter(|r| {
            r.destinations.iter().any(|d| {
                d == dest || matches!(dest, RouteDestination::Node(n) if d.node_name() == Some(n))
            })
        })
        .map(|r| r.id)
        .collect())
}

/// Why a peer's fields do not fit its kind, as `Err(reason)`: a Vesalius peer has an
/// Ed25519 public key and no credentials (we sign); a plain DICOMweb peer has no key, may carry
/// credentials, never queries us and has no remote organisation (it has no `?org=`).
pub fn peer_fields(
    kind: PeerKind,
    public_key: &str,
    auth: &PeerAuth,
    remote_org: Option<&str>,
    may_query: bool,
) -> Result<(), String> {
    match kind {
        PeerKind::Vesalius => {
            if !vesalius_auth::peer::valid_public_key(public_key) {
                return Err("public_key is ed25519: followed by the peer's base64url key".into());
            }
            if *auth != PeerAuth::None {
                return Err(
                    "a Vesalius peer is called with signed requests: it takes no credentials"
                        .into(),
                );
            }
        }
        PeerKind::Dicomweb => {
            if !public_key.is_empty() {
                return Err("a DICOMweb peer has no public key".into());
            }
            if may_query {
                return Err("a DICOMweb peer never calls this site: it cannot query".into());
            }
            if remote_org.is_some_and(|o| !o.is_empty()) {
                return Err("a DICOMweb peer has no remote organisation".into());
            }
            let empty = match auth {
                PeerAuth::None => false,
                PeerAuth::Basic { username, password } => {
                    username.is_empty() || password.is_empty()
                }
                PeerAuth::Bearer { token } => token.is_empty(),
            };
            if empty {
                return Err("the DICOMweb peer's credentials are empty".into());
            }
        }
    }
    Ok(())
}
