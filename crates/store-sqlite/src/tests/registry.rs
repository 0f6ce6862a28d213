//! The SQLite registry against the in-memory reference model: one script runs against both, and
//! every answer (values, order and error kinds) and the audit trail must be the same. The script
//! also asserts what the answers must be, so both cannot be wrong alike.

use std::fmt::Debug;
use std::sync::Arc;

use vesalius_core::ErrorKind;
use vesalius_store::audit::AuditLog;
use vesalius_store::error::Result;
use vesalius_store::memory_directory::MemoryAuditLog;
use vesalius_store::registry::*;

use super::directory::admin_event;
use crate::SqliteIndex;

fn peer(name: &str, org: &str) -> Peer {
    Peer {
        name: name.into(),
        base_url: format!("https://{name}.example.org"),
        public_key: format!("ed25519:{name}-key"),
        kind: vesalius_store::registry::PeerKind::Vesalius,
        auth: vesalius_store::registry::PeerAuth::None,
        org: org.into(),
        remote_org: (name == "hub").then(|| "remote".into()),
        may_query: name != "hub",
        description: format!("peer {name}"),
        managed: name == "b",
        created_ms: 10,
    }
}

fn node(name: &str) -> DicomNode {
    DicomNode {
        name: name.into(),
        ae_title: name.to_uppercase(),
        host: "10.0.0.7".into(),
        port: 11_112,
        transfer_syntaxes: vec![
            "1.2.840.10008.1.2.4.90".into(),
            "1.2.840.10008.1.2.1".into(),
        ],
        retrieve: RetrieveMethod::Get,
        query_model: QueryModel::Patient,
        org: "a".into(),
        description: String::new(),
        managed: false,
        created_ms: 20,
    }
}

fn route(id: &str, order: i32) -> Route {
    Route {
        id: id.into(),
        name: format!("route {id}"),
        org: "a".into(),
        enabled: order != 3,
        order,
        matcher: RouteMatch {
            calling_ae: vec!["CT1".into()],
            modality: vec!["CT".into(), "MR".into()],
            study_description: Some("re:^head".into()),
            time_of_day: (order == 1).then(|| "22:00-06:00".into()),
            ..Default::default()
        },
        destinations: vec![
            RouteDestination::Peer("hub".into()),
            RouteDestination::Node("pacs".into()),
            RouteDestination::Analysis("bleed".into()),
        ],
        priority: 100 * order,
        deid: (order == 2).then(|| "basic,retain-uids".into()),
        managed: true,
        created_ms: 30,
    }
}

fn arrival(org: &str, study: &str, updated_ms: i64) -> Arrival {
    Arrival {
        org: org.into(),
        study_uid: study.into(),
        from_peer: "hub".into(),
        priority: 100,
        manifest_instances: 300,
        complete_ms: if updated_ms > 50 { updated_ms } else { 0 },
        updated_ms,
    }
}

/// Records every answer of the script, errors by kind only (messages differ by backend).
#[derive(Default)]
struct Transcript(Vec<String>);

impl Transcript {
    fn note<T: Debug>(&mut self, label: &str, r: &Result<T>) {
        let line = match r {
            Ok(v) => format!("{label}: {v:?}"),
            Err(e) => format!("{label}: error {:?}", e.kind()),
        };
        self.0.push(line);
    }
}

fn names<T>(r: &[T], name: impl Fn(&T) -> &str) -> Vec<String> {
    r.iter().map(|x| name(x).to_owned()).collect()
}

async fn script(reg: &dyn Registry, log: &dyn AuditLog) -> Vec<String> {
    use RegistryChange as C;
    let mut t = Transcript::default();
    let ev = |n: i64| vec![admin_event(n, "a", "registry-change")];

    let r = reg
        .apply(
            vec![
                C::PutPeer(peer("hub", "a")),
                C::PutPeer(peer("b", "a")),
                C::PutNode(node("pacs")),
                C::PutNode(node("ct")),
                C::PutRoute(route("r-b", 2)),
                C::PutRoute(route("r-z", 1)),
                C::PutRoute(route("r-a", 1)),
                C::PutRoute(route("r-off", 3)),
            ],
            ev(1),
        )
        .await;
    t.note("put", &r);
    let peers = reg.peers().await;
    assert_eq!(names(peers.as_ref().unwrap(), |p| &p.name), ["b", "hub"]);
    t.note("peers", &peers);
    let nodes = reg.nodes().await;
    assert_eq!(names(nodes.as_ref().unwrap(), |n| &n.name), ["ct", "pacs"]);
    t.note("nodes", &nodes);
    let routes = reg.routes().await;
    assert_eq!(
        names(routes.as_ref().unwrap(), |r| &r.id),
        ["r-a", "r-z", "r-b", "r-off"]
    );
    assert_eq!(routes.as_ref().unwrap()[2], route("r-b", 2));
    t.note("routes", &routes);
    t.note("peer hub", &reg.peer("hub").await);
    t.note("peer none", &reg.peer("nope").await);
    t.note("node pacs", &reg.node("pacs").await);
    t.note("node none", &reg.node("nope").await);

    // A put replaces; a delete removes.
    let mut moved = route("r-z", 5);
    moved.destinations = vec![RouteDestination::Node("ct".into())];
    let r = reg
        .apply(
            vec![
                C::PutRoute(moved.clone()),
                C::DeletePeer("b".into()),
                C::DeleteNode("ct".into()),
            ],
            ev(2),
        )
        .await;
    t.note("replace and delete", &r);
    let routes = reg.routes().await;
    assert_eq!(
        names(routes.as_ref().unwrap(), |r| &r.id),
        ["r-a", "r-b", "r-off", "r-z"]
    );
    assert_eq!(routes.as_ref().unwrap()[3], moved);
    t.note("routes", &routes);
    t.note("peers", &reg.peers().await);
    t.note("nodes", &reg.nodes().await);

    // Deleting what is not there fails NotFound and changes nothing, events included.
    for missing in [
        C::DeletePeer("b".into()),
        C::DeleteNode("nope".into()),
        C::DeleteRoute("nope".into()),
    ] {
        let r = reg
            .apply(
                vec![
                    C::PutPeer(peer("c", "a")),
                    C::DeleteRoute("r-off".into()),
                    missing,
                ],
                ev(3),
            )
            .await;
        assert_eq!(
            r.as_ref().err().map(|e| e.kind()),
            Some(ErrorKind::NotFound)
        );
        t.note("missing", &r);
    }
    assert_eq!(reg.peer("c").await.unwrap(), None);
    assert_eq!(reg.routes().await.unwrap().len(), 4);
    let r = reg.apply(vec![C::DeleteRoute("r-off".into())], ev(4)).await;
    t.note("delete route", &r);

    // Arrivals: most recently updated first, ties by org then study; a put replaces.
    let r = reg
        .apply(
            vec![
                C::PutArrival(arrival("b", "1.1", 40)),
                C::PutArrival(arrival("a", "1.2", 60)),
                C::PutArrival(arrival("a", "1.1", 40)),
                C::PutArrival(arrival("a", "1.3", 20)),
                C::PutArrival(arrival("b", "1.0", 40)),
            ],
            vec![],
        )
        .await;
    t.note("arrivals put", &r);
    let all = reg.arrivals(None, 0).await;
    let order: Vec<(String, String)> = all
        .as_ref()
        .unwrap()
        .iter()
        .map(|a| (a.org.clone(), a.study_uid.clone()))
        .collect();
    let pair = |o: &str, s: &str| (o.to_owned(), s.to_owned());
    assert_eq!(
        order,
        [
            pair("a", "1.2"),
            pair("a", "1.1"),
            pair("b", "1.0"),
            pair("b", "1.1"),
            pair("a", "1.3")
        ]
    );
    t.note("arrivals", &all);
    t.note("arrivals a 2", &reg.arrivals(Some("a"), 2).await);
    t.note("arrivals b", &reg.arrivals(Some("b"), 0).await);
    t.note("arrivals none", &reg.arrivals(Some("z"), 0).await);
    let mut done = arrival("a", "1.3", 90);
    done.priority = 0;
    t.note(
        "arrival replace",
        &reg.apply(vec![C::PutArrival(done.clone())], ev(5)).await,
    );
    assert_eq!(reg.arrival("a", "1.3").await.unwrap(), Some(done));
    t.note("arrival", &reg.arrival("a", "1.3").await);
    t.note("arrival none", &reg.arrival("b", "1.3").await);
    t.note("arrivals 1", &reg.arrivals(None, 1).await);
    // Events on their own.
    t.note("events only", &reg.apply(vec![], ev(6)).await);
    t.note("nothing", &reg.apply(vec![], vec![]).await);

    // The audit trail holds exactly the events of the applies that succeeded, chained.
    let records = log.records(1, 100).await;
    let ns: Vec<i64> = records
        .as_ref()
        .unwrap()
        .iter()
        .map(|r| r.event.details["n"].as_i64().unwrap())
        .collect();
    assert_eq!(ns, [1, 2, 4, 5, 6]);
    t.note("records", &records);
    t.0
}

#[tokio::test(flavor = "multi_thread")]
async fn registry_agrees_with_the_reference_model() {
    let audit = Arc::new(MemoryAuditLog::new());
    let mem = MemoryRegistry::new(audit.clone());
    let mem_t = script(&mem, audit.as_ref()).await;

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("index.db");
    let sql = SqliteIndex::open(&path).await.unwrap();
    let sql_t = script(&sql, &sql).await;
    for (m, s) in mem_t.iter().zip(&sql_t) {
        assert_eq!(m, s, "memory and SQLite differ");
    }
    assert_eq!(mem_t.len(), sql_t.len());

    // Everything survives reopening.
    let before = (
        sql.peers().await.unwrap(),
        sql.nodes().await.unwrap(),
        sql.routes().await.unwrap(),
        sql.arrivals(None, 0).await.unwrap(),
    );
    drop(sql);
    let sql = SqliteIndex::open(&path).await.unwrap();
    let after = (
        sql.peers().await.unwrap(),
        sql.nodes().await.unwrap(),
        sql.routes().await.unwrap(),
        sql.arrivals(None, 0).await.unwrap(),
    );
    assert_eq!(before, after);
    assert_eq!(
        AuditLog::records(&sql, 1, 100).await.unwrap(),
        audit.records(1, 100).await.unwrap()
    );
}
