//! The SQLite alert store keeps the contract the in-memory model keeps
//! (`vesalius_store::alerts::contract`), and its rows survive a reopen.

use vesalius_store::alerts::{AlertStore, contract};

use crate::SqliteIndex;

#[tokio::test]
async fn sqlite_alerts_keep_the_contract_and_survive_a_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("index.db");
    {
        let s = SqliteIndex::open(&path).await.unwrap();
        contract::run(&s).await;
    }
    let s = SqliteIndex::open(&path).await.unwrap();
    let a = s.alert("a1").await.unwrap().expect("kept");
    assert_eq!(a.acknowledged_by, "bob");
    assert_eq!(a.details["priority"], 100);
    assert_eq!(s.deliveries("a1").await.unwrap().len(), 1);
    // The key is kept too: raising it again stores nothing.
    assert!(!s.raise("k1", vec![], vec![]).await.unwrap());
}
