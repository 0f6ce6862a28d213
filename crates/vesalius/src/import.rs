//! `vesalius import PATH…`: files, folders (recursive), zip archives and DICOMDIR media, sent one
//! object per request to the running server's `POST /api/v1/instances`, so imports share the
//! server's group commit (and later its routing). Prints a progress bar and a summary
//! (stored / duplicate / rejected with the reason), or JSON with `--json`.
//!
//! Zip archives are read entry by entry with limits against zip bombs: at most
//! `max_zip_entries` entries, each entry's declared ratio and its real inflated size bounded by
//! `max_zip_ratio` × its compressed size and by `max_instance_bytes`.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, Result};
use futures::StreamExt;
use indicatif::{ProgressBar, ProgressStyle};
use serde::Serialize;

/// Limits for reading archives.
#[derive(Debug, Clone, Copy)]
pub struct ImportLimits {
    /// Most entries in one zip.
    pub max_zip_entries: usize,
    /// Largest inflated/compressed ratio.
    pub max_zip_ratio: u64,
    /// Largest object.
    pub max_instance_bytes: u64,
}

/// An opened zip archive shared by all its entries: the central directory is read once, and
/// entries are read one at a time under the lock (a zip is one sequential file anyway).
type SharedZip = Arc<std::sync::Mutex<zip::ZipArchive<std::fs::File>>>;

/// One source object to import.
#[derive(Clone)]
enum Item {
    File(PathBuf),
    ZipEntry {
        zip: PathBuf,
        archive: SharedZip,
        index: usize,
        name: String,
    },
}

impl Item {
    fn label(&self) -> String {
        match self {
            Item::File(p) => p.display().to_string(),
            Item::ZipEntry { zip, name, .. } => format!("{}!{}", zip.display(), name),
        }
    }
}

/// The outcome of one object.
#[derive(Debug, Clone, Serialize)]
pub struct ItemResult {
    /// The file (or `archive!entry`).
    pub source: String,
    /// `stored`, `duplicate`, `replaced` or `rejected`.
    pub outcome: String,
    /// The reason, when rejected.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// The summary printed at the end.
#[derive(Debug, Default, Serialize)]
pub struct Summary {
    /// Counts by outcome.
    pub counts: BTreeMap<String, usize>,
    /// Every rejected object with its reason.
    pub rejected: Vec<ItemResult>,
}

/// Runs an import against `server`.
pub async fn run(
    server: &str,
    paths: &[PathBuf],
    limits: ImportLimits,
    concurrency: usize,
    json: bool,
) -> Result<Summary> {
    let mut items = Vec::new();
    let mut pre_rejected = Vec::new();
    for p in paths {
        collect(p, &limits, &mut items, &mut pre_rejected)
            .with_context(|| format!("reading {}", p.display()))?;
    }
    let bar = if json {
        ProgressBar::hidden()
    } else {
        let b = ProgressBar::new(items.len() as u64);
        b.set_style(
            ProgressStyle::with_template("{bar:40} {pos}/{len} {per_sec} {msg}")
                .unwrap_or_else(|_| ProgressStyle::default_bar()),
        );
        b
    };
    let client = crate::server_client()?;
    let url = format!("{}/api/v1/instances", server.trim_end_matches('/'));
    let limits = Arc::new(limits);
    let results: Vec<ItemResult> = futures::stream::iter(items.into_iter().map(|item| {
        let client = client.clone();
        let url = url.clone();
        let limits = limits.clone();
        let bar = bar.clone();
        async move {
            let r = send_one(&client, &url, &item, &limits).await;
            bar.inc(1);
            let label = item.label();
            match r {
                Ok(outcome) => ItemResult {
                    source: label,
                    outcome,
                    reason: None,
                },
                Err(e) => ItemResult {
                    source: label,
                    outcome: "rejected".into(),
                    reason: Some(format!("{e:#}")),
                },
            }
        }
    }))
    .buffer_unordered(concurrency.max(1))
    .collect()
    .await;
    bar.finish_and_clear();
    let mut summary = Summary::default();
    for r in results.into_iter().chain(pre_rejected) {
        *summary.counts.entry(r.outcome.clone()).or_default() += 1;
        if r.outcome == "rejected" {
            summary.rejected.push(r);
        }
    }
    Ok(summary)
}

async fn send_one(
    client: &reqwest::Client,
    url: &str,
    item: &Item,
    limits: &ImportLimits,
) -> Result<String> {
    let body: reqwest::Body = match item {
        Item::File(p) => {
            let f = tokio::fs::File::open(p).await?;
            reqwest::Body::wrap_stream(tokio_util::io::ReaderStream::with_capacity(f, 256 << 10))
        }
        Item::ZipEntry { archive, index, .. } => {
            let (archive, index, limits) = (archive.clone(), *index, *limits);
            let bytes =
                tokio::task::spawn_blocking(move || read_zip_entry(&archive, index, &limits))
                    .await??;
            reqwest::Body::from(bytes)
        }
    };
    let resp = client
        .post(url)
        .header("content-type", "application/dicom")
        .body(body)
        .send()
        .await
        .context("server unreachable")?;
    let status = resp.status();
    let v: serde_json::Value = resp.json().await.unwrap_or_default();
    if status.is_success() {
        Ok(v["outcome"].as_str().unwrap_or("stored").to_owned())
    } else {
        anyhow::bail!(
            "{} ({})",
            v["message"].as_str().unwrap_or("rejected"),
            v["error"].as_str().unwrap_or(status.as_str())
        )
    }
}

fn read_zip_entry(archive: &SharedZip, index: usize, limits: &ImportLimits) -> Result<Vec<u8>> {
    let mut archive = archive
        .lock()
        .map_err(|_| anyhow::anyhow!("zip reader poisoned by an earlier failure"))?;
    let mut entry = archive.by_index(index)?;
    let cap = limits.max_instance_bytes.min(
        entry
            .compressed_size()
            .max(1)
            .saturating_mul(limits.max_zip_ratio),
    );
    let mut out = Vec::new();
    // The real inflated size is bounded, whatever the entry declares.
    (&mut entry).take(cap + 1).read_to_end(&mut out)?;
    if out.len() as u64 > cap {
        anyhow::bail!("zip entry inflates beyond {cap} bytes (zip bomb guard)");
    }
    Ok(out)
}

fn collect(
    p: &Path,
    limits: &ImportLimits,
    items: &mut Vec<Item>,
    rejected: &mut Vec<ItemResult>,
) -> Result<()> {
    let meta = std::fs::metadata(p)?;
    if meta.is_dir() {
        let mut entries: Vec<PathBuf> = std::fs::read_dir(p)?.flatten().map(|e| e.path()).collect();
        entries.sort();
        for e in entries {
            collect(&e, limits, items, rejected)?;
        }
        return Ok(());
    }
    let name = p.file_name().and_then(|n| n.to_str()).unwrap_or("");
    if name.eq_ignore_ascii_case("DICOMDIR") {
        // PS3.10 8: the directory lists the files of the media; walking the folder finds them
        // too, so a DICOMDIR given alone imports what it references.
        return Ok(());
    }
    let mut head = [0u8; 4];
    let is_zip = std::fs::File::open(p)
        .and_then(|mut f| f.read_exact(&mut head))
        .map(|_| &head == b"PK\x03\x04")
        .unwrap_or(false);
    if is_zip {
        let f = std::fs::File::open(p)?;
        let mut archive = zip::ZipArchive::new(f)?;
        let count = archive.len();
        if count > limits.max_zip_entries {
            rejected.push(ItemResult {
                source: p.display().to_string(),
                outcome: "rejected".into(),
                reason: Some(format!(
                    "archive has {count} entries, more than the limit of {}",
                    limits.max_zip_entries
                )),
            });
            return Ok(());
        }
        let mut entries = Vec::new();
        for i in 0..count {
            let e = archive.by_index(i)?;
            if e.is_dir()
                || e.name()
                    .rsplit('/')
                    .next()
                    .is_some_and(|n| n.eq_ignore_ascii_case("DICOMDIR"))
            {
                continue;
            }
            let ratio = e.size() / e.compressed_size().max(1);
            if ratio > limits.max_zip_ratio || e.size() > limits.max_instance_bytes {
                rejected.push(ItemResult {
                    source: format!("{}!{}", p.display(), e.name()),
                    outcome: "rejected".into(),
                    reason: Some(format!(
                        "declared size {} (ratio {ratio}) beyond the limits",
                        e.size()
                    )),
                });
                continue;
            }
            entries.push((i, e.name().to_owned()));
        }
        let shared: SharedZip = Arc::new(std::sync::Mutex::new(archive));
        for (index, name) in entries {
            items.push(Item::ZipEntry {
                zip: p.to_owned(),
                archive: shared.clone(),
                index,
                name,
            });
        }
        return Ok(());
    }
    items.push(Item::File(p.to_owned()));
    Ok(())
}

/// Files a DICOMDIR references (ReferencedFileID (0004,1500) of each directory record), resolved
/// against the DICOMDIR's folder.
pub fn dicomdir_files(dicomdir: &Path) -> Result<Vec<PathBuf>> {
    use vesalius_core::parse::{ParseLimits, parse_file};
    let f = std::fs::File::open(dicomdir)?;
    let len = f.metadata()?.len();
    let parsed = parse_file(std::io::BufReader::new(f), len, &ParseLimits::default())?;
    let base = dicomdir.parent().unwrap_or(Path::new("."));
    let mut out = Vec::new();
    for rec in parsed.dataset.items(0x0004_1220).unwrap_or(&[]) {
        if let Some(id) = rec.str(0x0004_1500) {
            let mut p = base.to_path_buf();
            for part in id.split('\\') {
                p.push(part.trim());
            }
            out.push(p);
        }
    }
    Ok(out)
}

/// Expands DICOMDIR arguments into the files they reference; other paths pass through.
pub fn expand_dicomdirs(paths: &[PathBuf]) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    for p in paths {
        let is_dicomdir = p.is_file()
            && p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.eq_ignore_ascii_case("DICOMDIR"));
        if is_dicomdir {
            out.extend(dicomdir_files(p)?);
        } else {
            out.push(p.clone());
        }
    }
    Ok(out)
}
