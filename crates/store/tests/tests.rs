//! The ingest pipeline end to end over the in-memory backends.

mod audit;

use std::sync::Arc;

use vesalius_core::ErrorKind;
use vesalius_store::Ingestor;
use vesalius_store::ingest::{IngestContext, IngestLimits, file_meta};
use vesalius_store::memory::{MemoryBlobStore, MemoryIndex};
use vesalius_store::model::IngestOutcome;
use vesalius_store::query::{Key, Level, Matcher, Query, Scope};

fn el(out: &mut Vec<u8>, tag: u32, vr: &[u8; 2], v: &[u8]) {
    let mut v = v.to_vec();
    if v.len() % 2 == 1 {
        v.push(if vr == b"UI" { 0 } else { b' ' });
    }
    out.extend_from_slice(&((tag >> 16) as u16).to_le_bytes());
    out.extend_from_slice(&((tag & 0xFFFF) as u16).to_le_bytes());
    out.extend_from_slice(vr);
    if matches!(vr, b"OB" | b"OW" | b"SQ" | b"UN" | b"UT") {
        out.extend_from_slice(&[0, 0]);
        out.extend_from_slice(&(v.len() as u32).to_le_bytes());
    } else {
        out.extend_from_slice(&(v.len() as u16).to_le_bytes());
    }
    out.extend_from_slice(&v);
}

const CT: &str = "1.2.840.10008.5.1.4.1.1.2";

fn instance(sop: &str, study: Option<&str>, pixel: u8) -> Vec<u8> {
    let mut b = file_meta(CT, sop, "1.2.840.10008.1.2.1", Some("TEST"));
    el(&mut b, 0x0008_0005, b"CS", b"ISO_IR 100");
    el(&mut b, 0x0008_0016, b"UI", CT.as_bytes());
    el(&mut b, 0x0008_0018, b"UI", sop.as_bytes());
    el(&mut b, 0x0008_0020, b"DA", b"20240131");
    el(&mut b, 0x0008_0060, b"CS", b"CT");
    el(&mut b, 0x0010_0010, b"PN", b"M\xfcller^J\xfcrgen");
    el(&mut b, 0x0010_0020, b"LO", b"PID1");
    if let Some(s) = study {
        el(&mut b, 0x0020_000D, b"UI", s.as_bytes());
    }
    el(&mut b, 0x0020_000E, b"UI", b"1.2.3.1");
    el(&mut b, 0x0028_0010, b"US", &2u16.to_le_bytes());
    el(&mut b, 0x0028_0011, b"US", &2u16.to_le_bytes());
    el(&mut b, 0x0028_0100, b"US", &16u16.to_le_bytes());
    el(&mut b, 0x7FE0_0010, b"OW", &[pixel; 8]);
    b
}

/// Files in the spool other than its lock file (`vesalius_store::spool::LOCK_FILE`).
fn spool_files(dir: &std::path::Path) -> usize {
    std::fs::read_dir(dir.join("spool"))
        .unwrap()
        .flatten()
        .filter(|e| e.file_name() != vesalius_store::spool::LOCK_FILE)
        .count()
}

fn ingestor(dir: &std::path::Path) -> Ingestor {
    Ingestor::new(
        Arc::new(MemoryIndex::default()),
        Arc::new(MemoryBlobStore::default()),
        dir.join("spool"),
        IngestLimits {
            min_free_bytes: 0,
            ..Default::default()
        },
    )
    .unwrap()
}

async fn put(
    ing: &Ingestor,
    bytes: &[u8],
    ctx: &IngestContext,
) -> vesalius_store::Result<IngestOutcome> {
    let mut w = ing.spool()?;
    w.write(bytes)?;
    Ok(ing.ingest(w.finish()?, ctx).await?.outcome)
}

#[tokio::test(flavor = "multi_thread")]
async fn stored_duplicate_replaced_and_queried() {
    let dir = tempfile::tempdir().unwrap();
    let ing = ingestor(dir.path());
    let ctx = IngestContext {
        org: "default".into(),
        source: "test".into(),
        ..Default::default()
    };
    let a = instance("1.2.3.1.1", Some("1.2.3"), 1);
    assert_eq!(put(&ing, &a, &ctx).await.unwrap(), IngestOutcome::Stored);
    assert_eq!(put(&ing, &a, &ctx).await.unwrap(), IngestOutcome::Duplicate);
    let b = instance("1.2.3.1.1", Some("1.2.3"), 2);
    assert_eq!(put(&ing, &b, &ctx).await.unwrap(), IngestOutcome::Replaced);
    let prior = ing
        .index()
        .prior_versions(&Scope::study("1.2.3"))
        .await
        .unwrap();
    assert_eq!(prior.len(), 1);
    assert_eq!(
        ing.blobs().list().await.unwrap().len(),
        2,
        "both versions kept"
    );
    // Latin-1 name decoded, matched case-insensitively.
    let q = Query::new(Level::Study).with(Key::PatientName, Matcher::Wildcard("müller*".into()));
    let found: Vec<_> = (ing.index().find(&q).await.unwrap())
        .iter()
        .map(|a| a.to_map())
        .collect();
    assert_eq!(found.len(), 1);
    assert_eq!(
        found[0]["00100010"]["Value"][0]["Alphabetic"],
        "Müller^Jürgen"
    );
    // Precomputed metadata and frame offsets point at the pixel bytes.
    let (inst, frames) = ing
        .index()
        .frames(&Scope::study("1.2.3"))
        .await
        .unwrap()
        .unwrap();
    let (off, len) = frames.frames[0][0];
    let px = ing
        .blobs()
        .read_range(&inst.blob_key, off..off + u64::from(len))
        .await
        .unwrap();
    assert_eq!(&px[..], &[2u8; 8]);
    assert_eq!(spool_files(dir.path()), 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_objects_are_refused_with_their_kind() {
    let dir = tempfile::tempdir().unwrap();
    let ing = ingestor(dir.path());
    let ctx = IngestContext {
        org: "default".into(),
        expected_sop_instance: Some("1.2.3.1.9".into()),
        ..Default::default()
    };
    let e = put(&ing, &instance("1.2.3.1.1", Some("1.2.3"), 1), &ctx)
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::DataSetMismatch);
    let plain = IngestContext::default();
    let e = put(&ing, &instance("1.2.3.1.2", None, 1), &plain)
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::DataSetMismatch, "{e}");
    let mut trunc = instance("1.2.3.1.3", Some("1.2.3"), 1);
    trunc.truncate(trunc.len() - 3);
    let e = put(&ing, &trunc, &plain).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidDicom, "{e}");
    let e = put(&ing, b"this is not DICOM at all, just some text", &plain)
        .await
        .unwrap_err();
    assert!(
        matches!(
            e.kind(),
            ErrorKind::InvalidDicom | ErrorKind::DataSetMismatch
        ),
        "{e}"
    );
    // Nothing was stored, nothing left in the spool.
    assert_eq!(ing.index().stats().await.unwrap().instances, 0);
    assert!(ing.blobs().list().await.unwrap().is_empty());
    assert_eq!(spool_files(dir.path()), 0);
}
