//! Registry records as people write them: the bodies of `PUT /api/v1/peers|nodes|routes/{name}`
//! ([`crate::api`]) and the `[[exchange.peers]]`, `[[exchange.nodes]]` and `[[exchange.routes]]`
//! entries of the configuration file (seeded at start as `managed` records). One set of
//! checks for both: what the API refuses, the configuration refuses too.

use serde::{Deserialize, Serialize};
use vesalius_store::registry::{
    DicomNode, Peer, PeerAuth, PeerKind, QueryModel, RetrieveMethod, Route, RouteDestination,
    RouteMatch,
};

use crate::route;

/// Names of peers, nodes and routes: a short slug, usable in queues and URLs.
pub fn check_name(what: &str, name: &str) -> Result<(), String> {
    let fine = !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
    if fine {
        Ok(())
    } else {
        Err(format!(
            "{what} names are 1-64 letters, digits, '-', '_' or '.': {name:?}"
        ))
    }
}

/// The name a record gets: the path's (API) or its own `name` field (configuration); both
/// given must agree.
fn name_of(what: &str, path: Option<&str>, field: &str) -> Result<String, String> {
    let name = match (path, field) {
        (Some(p), "") => p,
        (Some(p), f) if f == p => p,
        (Some(p), f) => {
            return Err(format!(
                "the {what} is {p:?} in the path but {f:?} in the body"
            ));
        }
        (None, f) => f,
    };
    check_name(what, name)?;
    Ok(name.to_owned())
}

/// A peer.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PeerSpec {
    /// Its site name (configuration; the API takes it from the path).
    #[serde(default)]
    pub name: String,
    /// `vesalius` (default) or `dicomweb`.
    #[serde(default)]
    pub kind: PeerKind,
    /// Its base URL (https; plain http to loopback only).
    pub base_url: String,
    /// Its Ed25519 public key (Vesalius peers).
    #[serde(default)]
    pub public_key: String,
    /// Credentials for a plain DICOMweb peer.
    #[serde(default)]
    pub auth: PeerAuth,
    /// The local organisation it acts as.
    pub org: String,
    /// The organisation to deliver into there.
    #[serde(default)]
    pub remote_org: Option<String>,
    /// Whether it may search and retrieve here.
    #[serde(default)]
    pub may_query: bool,
    /// Description.
    #[serde(default)]
    pub description: String,
}

impl PeerSpec {
    /// The record, checked; `path_name` is the API path's name (`None` for the configuration).
    pub fn record(
        self,
        path_name: Option<&str>,
        managed: bool,
        created_ms: i64,
    ) -> Result<Peer, String> {
        let name = name_of("peer", path_name, &self.name)?;
        let url = reqwest::Url::parse(&self.base_url)
            .map_err(|e| format!("base_url {:?}: {e}", self.base_url))?;
        crate::client::check_scheme(&url).map_err(|e| e.to_string())?;
        crate::check::peer_fields(
            self.kind,
            &self.public_key,
            &self.auth,
            self.remote_org.as_deref(),
            self.may_query,
        )?;
        Ok(Peer {
            name,
            kind: self.kind,
            base_url: self.base_url,
            public_key: self.public_key,
            auth: self.auth,
            org: self.org,
            remote_org: self.remote_org.filter(|o| !o.is_empty()),
            may_query: self.may_query,
            description: self.description,
            managed,
            created_ms,
        })
    }
}

/// A DICOM node.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeSpec {
    /// Its name here (configuration; the API takes it from the path).
    #[serde(default)]
    pub name: String,
    /// Its AE title.
    pub ae_title: String,
    /// Host.
    pub host: String,
    /// Port.
    pub port: u16,
    /// Transfer syntaxes it accepts (UIDs); empty: the uncompressed ones.
    #[serde(default)]
    pub transfer_syntaxes: Vec<String>,
    /// How studies are retrieved from it: `move` (default, C-MOVE to our AE title) or `get`
    /// (C-GET on our own association).
    #[serde(default)]
    pub retrieve: RetrieveMethod,
    /// The Query/Retrieve Information Model it is asked in: `study` (default, Study Root) or
    /// `patient` (Patient Root, for a PACS that answers only that one, PS3.4 C.6.1).
    #[serde(default)]
    pub query_model: QueryModel,
    /// The organisation whose data may go there.
    pub org: String,
    /// Description.
    #[serde(default)]
    pub description: String,
}

impl NodeSpec {
    /// The record, checked.
    pub fn record(
        self,
        path_name: Option<&str>,
        managed: bool,
        created_ms: i64,
    ) -> Result<DicomNode, String> {
        let name = name_of("node", path_name, &self.name)?;
        let ae = self.ae_title.trim();
        if !vesalius_core::ae::valid_ae_title(ae) {
            return Err(format!("ae_title {:?} is not an AE title", self.ae_title));
        }
        if self.host.trim().is_empty() || self.port == 0 {
            return Err("a node needs a host and a port".into());
        }
        Ok(DicomNode {
            name,
            ae_title: ae.to_owned(),
            host: self.host.trim().to_owned(),
            port: self.port,
            transfer_syntaxes: self.transfer_syntaxes,
            retrieve: self.retrieve,
            query_model: self.query_model,
            org: self.org,
            description: self.description,
            managed,
            created_ms,
        })
    }
}

/// A destination as written in a route: `"peer:hub"` or the tagged form `{"peer": "hub"}`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(untagged)]
pub enum DestinationSpec {
    /// `peer:NAME`, `node:NAME`, `analysis:NAME`, `prefetch:NODE?max=N&years=Y`.
    Text(String),
    /// The tagged form.
    Tagged(RouteDestination),
}

/// A route.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteSpec {
    /// Its id (configuration; the API takes it from the path).
    #[serde(default)]
    pub id: String,
    /// Display name (default: the id).
    #[serde(default)]
    pub name: String,
    /// The owning organisation (whose instances it matches).
    pub org: String,
    /// Whether it fires.
    #[serde(default = "yes")]
    pub enabled: bool,
    /// Evaluation order.
    #[serde(default)]
    pub order: i32,
    /// What it matches.
    #[serde(default)]
    pub matcher: RouteMatch,
    /// Where it sends.
    pub destinations: Vec<DestinationSpec>,
    /// Priority (100 = stroke).
    #[serde(default)]
    pub priority: i32,
    /// De-identification profile.
    #[serde(default)]
    pub deid: Option<String>,
}

fn yes() -> bool {
    true
}

impl RouteSpec {
    /// The record, checked (its destinations' existence is the caller's to check).
    pub fn record(
        self,
        path_id: Option<&str>,
        managed: bool,
        created_ms: i64,
    ) -> Result<Route, String> {
        let id = name_of("route", path_id, &self.id)?;
        let mut destinations = Vec::with_capacity(self.destinations.len());
        for d in self.destinations {
            destinations.push(match d {
                DestinationSpec::Tagged(t) => t,
                DestinationSpec::Text(s) => RouteDestination::parse_checked(&s)?,
            });
        }
        let r = Route {
            name: if self.name.is_empty() {
                id.clone()
            } else {
                self.name
            },
            id,
            org: self.org,
            enabled: self.enabled,
            order: self.order,
            matcher: self.matcher,
            destinations,
            priority: self.priority,
            deid: self.deid.filter(|d| !d.is_empty()),
            managed,
            created_ms,
        };
        route::validate(&r)?;
        Ok(r)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_come_from_the_path_or_the_body_and_must_agree() {
        assert_eq!(name_of("peer", Some("hub"), "").unwrap(), "hub");
        assert_eq!(name_of("peer", Some("hub"), "hub").unwrap(), "hub");
        assert!(name_of("peer", Some("hub"), "other").is_err());
        assert_eq!(name_of("peer", None, "hub").unwrap(), "hub");
        assert!(name_of("peer", None, "").is_err());
        assert!(name_of("peer", None, "a/b").is_err());
    }

    #[test]
    fn a_node_names_its_retrieval_method_or_gets_c_move() {
        let spec = |extra: serde_json::Value| -> Result<NodeSpec, serde_json::Error> {
            let mut v = serde_json::json!({
                "name": "pacs", "ae_title": "PACS", "host": "10.0.0.9", "port": 104, "org": "o"
            });
            for (k, x) in extra.as_object().unwrap() {
                v[k] = x.clone();
            }
            serde_json::from_value(v)
        };
        let n = spec(serde_json::json!({}))
            .unwrap()
            .record(None, true, 1)
            .unwrap();
        assert_eq!(n.retrieve, RetrieveMethod::Move);
        let n = spec(serde_json::json!({"retrieve": "get"}))
            .unwrap()
            .record(Some("pacs"), false, 1)
            .unwrap();
        assert_eq!(n.retrieve, RetrieveMethod::Get);
        let e = spec(serde_json::json!({"retrieve": "ftp"})).unwrap_err();
        assert!(
            e.to_string().contains("move") && e.to_string().contains("get"),
            "{e}"
        );
        assert_eq!(n.query_model, QueryModel::Study);
        let n = spec(serde_json::json!({"query_model": "patient"}))
            .unwrap()
            .record(None, true, 1)
            .unwrap();
        assert_eq!(n.query_model, QueryModel::Patient);
        let e = spec(serde_json::json!({"query_model": "patient-root"})).unwrap_err();
        assert!(
            e.to_string().contains("study") && e.to_string().contains("patient"),
            "{e}"
        );
    }

    #[test]
    fn a_route_from_toml_is_checked_like_one_from_the_api() {
        let spec: RouteSpec = serde_json::from_value(serde_json::json!({
            "id": "ct-head", "org": "dgh", "destinations": ["peer:hub"], "priority": 100,
            "matcher": {"modality": ["CT"]}
        }))
        .unwrap();
        let r = spec.clone().record(None, true, 1).unwrap();
        assert_eq!(
            (r.id.as_str(), r.name.as_str(), r.managed),
            ("ct-head", "ct-head", true)
        );
        let mut bad = spec;
        bad.destinations = vec![DestinationSpec::Text("ftp:x".into())];
        assert!(bad.record(None, true, 1).is_err());
    }
}
