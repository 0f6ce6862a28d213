//! The ingest journal end to end through `open_storage` (vesalius_store::journal): instances
//! acknowledged before a crash and not yet checkpointed come back at the next start even when
//! everything that was not synced before their acknowledgement is lost (their index rows and
//! their blobs' directory entries); torn and unsealed journal files are not ingested.

use std::path::{Path, PathBuf};

use vesalius_store::ingest::IngestContext;
use vesalius_store::query::Scope;

use crate::config::Config;
use crate::serve::open_storage;

fn config(data: &Path) -> Config {
    let mut cfg = Config::default();
    cfg.storage.data_dir = data.to_owned();
    cfg.storage.journal_files = 16;
    // Never due during the test: only a deliberate checkpoint (or recovery) runs one.
    cfg.storage.journal_checkpoint_ms = 3_600_000;
    cfg.limits.min_free_bytes = 0;
    cfg.exchange.enabled = false;
    cfg
}

/// Synthetic CT instances (bytes), `n` of them.
fn instances(n: u32) -> Vec<Vec<u8>> {
    let dir = tempfile::tempdir().expect("dir");
    let opts = vesalius_synth::SynthOptions::new(7)
        .slices(n)
        .kinds([vesalius_synth::SynthKind::CtHead]);
    let r = vesalius_synth::write_studies(&opts, dir.path()).expect("synth");
    r.files
        .iter()
        .map(|f| std::fs::read(f).expect("file"))
        .collect()
}

fn journal_files(spool: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(spool)
        .expect("spool")
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "journal"))
        .collect();
    v.sort();
    v
}

fn ctx() -> IngestContext {
    IngestContext {
        org: "default".into(),
        source: "dimse:CT1".into(),
        called_ae: "VESALIUS".into(),
        ..Default::default()
    }
}

/// Ingests every instance; returns the sizes of the non-empty journal files afterwards.
async fn ingest_all(storage: &crate::serve::Storage, files: &[Vec<u8>]) {
    let ing = &storage.ingestor;
    for b in files {
        let mut w = ing.spool().expect("spool");
        w.write(b).expect("write");
        ing.ingest(w.finish().expect("finish"), &ctx())
            .await
            .expect("ingest");
    }
}

async fn stored_bytes(storage: &crate::serve::Storage) -> Vec<Vec<u8>> {
    let ing = &storage.ingestor;
    let mut out = Vec::new();
    for i in ing
        .index()
        .instances(&Scope::default())
        .await
        .expect("list")
    {
        let path = ing.blobs().local_path(&i.blob_key).expect("local");
        out.push(std::fs::read(path).expect("blob present"));
    }
    out.sort();
    out
}

#[tokio::test]
async fn acknowledged_instances_come_back_when_everything_unsynced_is_lost() {
    let files = instances(5);
    let dir = tempfile::tempdir().expect("dir");
    let first = dir.path().join("first");
    let storage = open_storage(&config(&first)).await.expect("open");
    let journal = storage.ingestor.journal().expect("journal on").clone();
    ingest_all(&storage, &files).await;
    // Acknowledged (ingest returned), visible, and waiting for their checkpoint.
    assert_eq!(journal.waiting(), 5);
    let before = stored_bytes(&storage).await;
    assert_eq!(before.len(), 5);
    let spool = first.join("blobs").join(".spool");
    let sealed: Vec<PathBuf> = journal_files(&spool)
        .into_iter()
        .filter(|p| std::fs::metadata(p).is_ok_and(|m| m.len() > 0))
        .collect();
    assert_eq!(sealed.len(), 5, "one sealed journal file per instance");

    // An unsealed journal file with bytes (its seal never written): never acknowledged.
    let unsealed = spool.join("unsealed.journal");
    std::fs::write(&unsealed, &files[0]).expect("write");

    // The crash: nothing that was not synced before the acknowledgements survives. The worst
    // case is a new data directory holding only the spool (the journal files, whose entries and
    // contents were synced): no index rows, no blob entries.
    drop(storage);
    drop(journal);
    let second = dir.path().join("second");
    std::fs::create_dir_all(second.join("blobs")).expect("dir");
    std::fs::rename(&spool, second.join("blobs").join(".spool")).expect("move spool");
    let storage = open_storage(&config(&second)).await.expect("reopen");
    let after = stored_bytes(&storage).await;
    assert_eq!(
        after, before,
        "every acknowledged instance back, byte for byte"
    );
    let spool2 = second.join("blobs").join(".spool");
    let left: Vec<PathBuf> = journal_files(&spool2)
        .into_iter()
        .filter(|p| std::fs::metadata(p).is_ok_and(|m| m.len() > 0))
        .collect();
    assert!(
        left.is_empty(),
        "recovery checkpointed and removed them: {left:?}"
    );
    assert!(
        !spool2.join("unsealed.journal").exists(),
        "unsealed file removed"
    );
    assert_eq!(storage.ingestor.journal().expect("journal").waiting(), 0);
}

#[tokio::test]
async fn a_restart_without_loss_stores_nothing_twice_and_a_checkpoint_retires_the_files() {
    let files = instances(3);
    let dir = tempfile::tempdir().expect("dir");
    let data = dir.path().join("data");
    let storage = open_storage(&config(&data)).await.expect("open");
    ingest_all(&storage, &files).await;
    let before = stored_bytes(&storage).await;
    // Same instances again: duplicates, one blob each.
    ingest_all(&storage, &files).await;
    let journal = storage.ingestor.journal().expect("journal").clone();
    assert_eq!(journal.waiting(), 6);
    drop(storage);
    drop(journal);
    // Restart on the same directory: the six sealed files are ingested again as duplicates.
    let storage = open_storage(&config(&data)).await.expect("reopen");
    assert_eq!(stored_bytes(&storage).await, before);
    let spool = data.join("blobs").join(".spool");
    assert!(
        journal_files(&spool)
            .iter()
            .all(|p| std::fs::metadata(p).is_ok_and(|m| m.len() == 0)),
        "only empty (free) journal files remain"
    );
    let blob_files = walk(&data.join("blobs"));
    assert_eq!(blob_files, 3, "no second copy of any blob");

    // A checkpoint retires waiting files, and the pool is refilled to its size.
    ingest_all(&storage, &files[..1]).await;
    let journal = storage.ingestor.journal().expect("journal");
    assert_eq!(journal.waiting(), 1);
    storage.ingestor.checkpoint().await.expect("checkpoint");
    assert_eq!(journal.waiting(), 0);
    assert_eq!(journal_files(&spool).len(), 16);
}

#[tokio::test]
async fn a_torn_journal_file_is_not_ingested() {
    let files = instances(2);
    let dir = tempfile::tempdir().expect("dir");
    let first = dir.path().join("first");
    let storage = open_storage(&config(&first)).await.expect("open");
    ingest_all(&storage, &files[..1]).await;
    let spool = first.join("blobs").join(".spool");
    let is_sealed = |p: &PathBuf| std::fs::metadata(p).is_ok_and(|m| m.len() > 0);
    let kept: Vec<PathBuf> = journal_files(&spool)
        .into_iter()
        .filter(is_sealed)
        .collect();
    ingest_all(&storage, &files[1..]).await;
    let torn: Vec<PathBuf> = journal_files(&spool)
        .into_iter()
        .filter(|p| is_sealed(p) && !kept.contains(p))
        .collect();
    assert_eq!((kept.len(), torn.len()), (1, 1));
    drop(storage);
    // The second file's seal reached the disk but one block of its data did not (the seal's
    // fsync never returned, so it was never acknowledged): its bytes no longer hash to the seal.
    {
        use std::io::{Seek, SeekFrom, Write};
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .open(&torn[0])
            .expect("open");
        f.seek(SeekFrom::Start(4096)).expect("seek");
        f.write_all(&[0u8; 4096]).expect("write");
    }
    let second = dir.path().join("second");
    std::fs::create_dir_all(second.join("blobs")).expect("dir");
    std::fs::rename(&spool, second.join("blobs").join(".spool")).expect("move spool");
    let storage = open_storage(&config(&second)).await.expect("reopen");
    let got = stored_bytes(&storage).await;
    assert_eq!(
        got,
        vec![files[0].clone()],
        "only the intact instance is ingested"
    );
    let name = torn[0].file_name().expect("name");
    assert!(
        !second.join("blobs").join(".spool").join(name).exists(),
        "torn file removed"
    );
}

#[tokio::test]
async fn a_second_process_on_the_same_directory_leaves_the_journal_alone() {
    let files = instances(2);
    let dir = tempfile::tempdir().expect("dir");
    let data = dir.path().join("data");
    let server = open_storage(&config(&data)).await.expect("open");
    ingest_all(&server, &files).await;
    let spool = data.join("blobs").join(".spool");
    let before = journal_files(&spool);
    // `vesalius admin check` opens the same data directory while the server runs: it neither
    // journals, nor ingests the server's waiting journal files again, nor removes its free ones.
    let tool = open_storage(&config(&data)).await.expect("second open");
    assert!(!tool.ingestor.owns_spool());
    assert!(tool.ingestor.journal().is_none());
    assert_eq!(
        journal_files(&spool),
        before,
        "the server's journal files untouched"
    );
    drop(tool);
    // The server goes on: its checkpoint retires its files.
    let journal = server.ingestor.journal().expect("journal").clone();
    assert_eq!(journal.waiting(), 2);
    server.ingestor.checkpoint().await.expect("checkpoint");
    assert_eq!(journal.waiting(), 0);
    assert_eq!(stored_bytes(&server).await.len(), 2);
}

/// Files under `root`, the spool excluded.
fn walk(root: &Path) -> usize {
    let mut n = 0;
    for e in std::fs::read_dir(root).expect("dir").flatten() {
        let p = e.path();
        if p.file_name().is_some_and(|f| f == ".spool") {
            continue;
        }
        if p.is_dir() {
            n += walk(&p);
        } else {
            n += 1;
        }
    }
    n
}
