//! Checks on registry records that need the registry itself, shared by the API and
//! `vesalius admin`: whether a route's destinations exist and may receive its data, and which
//! routes send to a destination (before it is removed).

use vesalius_store::Registry;
use vesalius_store::registry::{Route, RouteDestination};

/// The first reason `route` cannot send where it says, `None` when every destination exists and
/// may receive its data: a peer of any organisation (it is a site of the network), a DICOM node
/// (to send to or prefetch from) only of the route's own organisation. `analysis:` destinations are not checked here.
pub async fn destination_problem(
    registry: &dyn Registry,
    route: &Route,
) -> vesalius_store::Result<Option<String>> {
    for d in &route.destinations {
        let problem = match d {
            RouteDestination::Peer(n) => registry
                .peer(n)
                .await?
                .is_none()
                .then(|| format!("no peer {n}")),
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
