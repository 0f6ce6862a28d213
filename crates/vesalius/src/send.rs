//! Client commands: `send`, `echo`, `query`, `delete`.

use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use clap::Args;
use futures::StreamExt;
use indicatif::{ProgressBar, ProgressStyle};

/// `vesalius send`
#[derive(Args)]
pub struct SendArgs {
    /// C-STORE to a DICOM node, as AE@host:port.
    #[arg(long, conflicts_with = "to_web")]
    to_dicom: Option<String>,
    /// STOW-RS to a DICOMweb base URL (e.g. http://host/dicom-web).
    #[arg(long)]
    to_web: Option<String>,
    /// Send this study from the running server.
    #[arg(long, conflicts_with = "paths")]
    study: Option<String>,
    /// The running server (with --study).
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    server: String,
    /// Our calling AE title for C-STORE.
    #[arg(long, default_value = "VESALIUS")]
    calling_ae: String,
    /// Files or folders to send.
    paths: Vec<PathBuf>,
}

/// `vesalius echo`
#[derive(Args)]
pub struct EchoArgs {
    /// The node, as AE@host:port.
    target: String,
    /// Our calling AE title.
    #[arg(long, default_value = "VESALIUS")]
    calling_ae: String,
}

/// `vesalius query`
#[derive(Args)]
pub struct QueryArgs {
    /// Matching keys as Keyword=value (PatientName=doe*, StudyDate=20240101-20241231, ...).
    keys: Vec<String>,
    /// studies, series or instances.
    #[arg(long, default_value = "studies")]
    level: String,
    /// The running server.
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    server: String,
    /// Most results.
    #[arg(long, default_value_t = 100)]
    limit: usize,
    /// Print the DICOM JSON answers.
    #[arg(long)]
    json: bool,
}

/// `vesalius delete`
#[derive(Args)]
pub struct DeleteArgs {
    /// Study Instance UID.
    #[arg(long)]
    study: String,
    /// Series Instance UID (deletes only this series).
    #[arg(long)]
    series: Option<String>,
    /// SOP Instance UID (deletes only this instance; needs --series).
    #[arg(long, requires = "series")]
    instance: Option<String>,
    /// The running server.
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    server: String,
}

/// Parses `AE@host:port`.
pub fn parse_node(s: &str) -> Result<(String, String)> {
    let (ae, addr) = s.split_once('@').context("expected AE@host:port")?;
    if ae.is_empty() || ae.len() > 16 {
        bail!("AE title must be 1 to 16 characters");
    }
    if !addr.contains(':') {
        bail!("expected AE@host:port");
    }
    Ok((ae.to_owned(), addr.to_owned()))
}

fn files_under(paths: &[PathBuf]) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    for p in paths {
        if p.is_dir() {
            let mut v: Vec<PathBuf> = std::fs::read_dir(p)?.flatten().map(|e| e.path()).collect();
            v.sort();
            out.extend(files_under(&v)?);
        } else {
            out.push(p.clone());
        }
    }
    Ok(out)
}

/// Downloads a study from the server (WADO-RS, as stored) into `dir`, one file per instance.
async fn fetch_study(server: &str, study: &str, dir: &std::path::Path) -> Result<Vec<PathBuf>> {
    let url = format!("{}/dicom-web/studies/{study}", server.trim_end_matches('/'));
    let resp = crate::server_client()?
        .get(&url)
        .header(
            "accept",
            "multipart/related; type=\"application/dicom\"; transfer-syntax=*",
        )
        .send()
        .await
        .context("server unreachable")?
        .error_for_status()
        .context("study not found on the server")?;
    let ct = resp
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let boundary = boundary_of(&ct).context("multipart response without boundary")?;
    let mut mp = multer::Multipart::new(resp.bytes_stream(), boundary);
    let mut files = Vec::new();
    while let Some(mut field) = mp.next_field().await? {
        let path = dir.join(format!("{:06}.dcm", files.len()));
        let mut f = tokio::fs::File::create(&path).await?;
        while let Some(chunk) = field.chunk().await? {
            tokio::io::AsyncWriteExt::write_all(&mut f, &chunk).await?;
        }
        files.push(path);
    }
    Ok(files)
}

/// The boundary parameter of a multipart content type (multer only parses form-data).
fn boundary_of(content_type: &str) -> Option<String> {
    content_type.split(';').find_map(|p| {
        let (k, v) = p.trim().split_once('=')?;
        k.trim()
            .eq_ignore_ascii_case("boundary")
            .then(|| v.trim().trim_matches('"').to_owned())
    })
}

/// Runs `send`.
pub async fn send(a: SendArgs) -> Result<()> {
    let tmp = tempfile::tempdir()?;
    let files = match &a.study {
        Some(study) => fetch_study(&a.server, study, tmp.path()).await?,
        None => files_under(&a.paths)?,
    };
    if files.is_empty() {
        bail!("nothing to send");
    }
    let bar = ProgressBar::new(files.len() as u64);
    bar.set_style(
        ProgressStyle::with_template("{bar:40} {pos}/{len} {per_sec}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    if let Some(node) = &a.to_dicom {
        let (ae, addr) = parse_node(node)?;
        let b = bar.clone();
        let s =
            vesalius_dimse::scu::store_files(&addr, &a.calling_ae, &ae, files, move |done, _| {
                b.set_position(done as u64)
            })
            .await?;
        bar.finish_and_clear();
        println!("sent {}, failed {}", s.sent, s.failed);
        for (p, why) in &s.failures {
            println!("failed {}: {why}", p.display());
        }
        if s.failed > 0 {
            bail!("{} instances failed", s.failed);
        }
        return Ok(());
    }
    let Some(base) = &a.to_web else {
        bail!("give --to-dicom AE@host:port or --to-web URL");
    };
    // Another DICOMweb server never receives our own API token.
    let client = reqwest::Client::new();
    let url = format!("{}/studies", base.trim_end_matches('/'));
    let mut failed = 0;
    // One STOW request per batch of 16 instances, each part streamed from disk.
    for batch in files.chunks(16) {
        let boundary = format!("vesalius-{}", uuid::Uuid::new_v4().simple());
        let mut parts: Vec<futures::stream::BoxStream<'static, std::io::Result<bytes::Bytes>>> =
            Vec::new();
        for f in batch {
            let head = format!("--{boundary}\r\nContent-Type: application/dicom\r\n\r\n");
            parts.push(futures::stream::once(async move { Ok(bytes::Bytes::from(head)) }).boxed());
            let file = tokio::fs::File::open(f).await?;
            parts.push(tokio_util::io::ReaderStream::with_capacity(file, 256 << 10).boxed());
            parts.push(
                futures::stream::once(async { Ok(bytes::Bytes::from_static(b"\r\n")) }).boxed(),
            );
        }
        let tail = format!("--{boundary}--\r\n");
        parts.push(futures::stream::once(async move { Ok(bytes::Bytes::from(tail)) }).boxed());
        let body = reqwest::Body::wrap_stream(futures::stream::iter(parts).flatten());
        let resp = client
            .post(&url)
            .header(
                "content-type",
                format!("multipart/related; type=\"application/dicom\"; boundary={boundary}"),
            )
            .header("accept", "application/dicom+json")
            .body(body)
            .send()
            .await
            .context("STOW-RS request")?;
        let status = resp.status();
        let v: serde_json::Value = resp.json().await.unwrap_or_default();
        let failed_here = v["00081198"]["Value"].as_array().map_or(0, Vec::len);
        if !status.is_success() && failed_here == 0 {
            failed += batch.len();
        } else {
            failed += failed_here;
        }
        bar.inc(batch.len() as u64);
    }
    bar.finish_and_clear();
    println!("sent {}, failed {failed}", files.len() - failed);
    if failed > 0 {
        bail!("{failed} instances failed");
    }
    Ok(())
}

/// Runs `echo`.
pub async fn echo(a: EchoArgs) -> Result<()> {
    let (ae, addr) = parse_node(&a.target)?;
    let t = std::time::Instant::now();
    vesalius_dimse::scu::echo(&addr, &a.calling_ae, &ae).await?;
    println!(
        "C-ECHO {} OK in {:.1} ms",
        a.target,
        t.elapsed().as_secs_f64() * 1000.0
    );
    Ok(())
}

/// Runs `query`.
pub async fn query(a: QueryArgs) -> Result<()> {
    let mut params: Vec<(String, String)> = Vec::new();
    for k in &a.keys {
        let (key, value) = k.split_once('=').context("keys are Keyword=value")?;
        params.push((key.to_owned(), value.to_owned()));
    }
    params.push(("limit".into(), a.limit.to_string()));
    params.push(("includefield".into(), "all".into()));
    let url = format!("{}/dicom-web/{}", a.server.trim_end_matches('/'), a.level);
    let resp = crate::server_client()?
        .get(&url)
        .query(&params)
        .header("accept", "application/dicom+json")
        .send()
        .await
        .context("server unreachable")?;
    let status = resp.status();
    let v: serde_json::Value = resp.json().await.unwrap_or_default();
    if !status.is_success() {
        bail!("{}: {}", status, v["message"].as_str().unwrap_or(""));
    }
    if a.json {
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(());
    }
    let s = |o: &serde_json::Value, t: &str| -> String {
        let v = &o[t]["Value"][0];
        v.get("Alphabetic")
            .and_then(|x| x.as_str())
            .map(str::to_owned)
            .or_else(|| v.as_str().map(str::to_owned))
            .or_else(|| v.as_i64().map(|n| n.to_string()))
            .unwrap_or_default()
    };
    let rows = v.as_array().cloned().unwrap_or_default();
    match a.level.as_str() {
        "studies" => {
            println!(
                "{:<24} {:<12} {:<8} {:<10} {:>6} StudyInstanceUID",
                "PatientName", "PatientID", "Date", "Modality", "Inst"
            );
            for r in &rows {
                println!(
                    "{:<24} {:<12} {:<8} {:<10} {:>6} {}",
                    s(r, "00100010"),
                    s(r, "00100020"),
                    s(r, "00080020"),
                    r["00080061"]["Value"]
                        .as_array()
                        .map(|m| m
                            .iter()
                            .filter_map(|x| x.as_str())
                            .collect::<Vec<_>>()
                            .join(","))
                        .unwrap_or_default(),
                    s(r, "00201208"),
                    s(r, "0020000D")
                );
            }
        }
        "series" => {
            for r in &rows {
                println!(
                    "{:<4} {:<6} {:<30} {:>5} {}",
                    s(r, "00200011"),
                    s(r, "00080060"),
                    s(r, "0008103E"),
                    s(r, "00201209"),
                    s(r, "0020000E")
                );
            }
        }
        _ => {
            for r in &rows {
                println!("{:<6} {}", s(r, "00200013"), s(r, "00080018"));
            }
        }
    }
    println!("{} result(s)", rows.len());
    Ok(())
}

/// Runs `delete`.
pub async fn delete(a: DeleteArgs) -> Result<()> {
    let mut url = format!(
        "{}/api/v1/studies/{}",
        a.server.trim_end_matches('/'),
        a.study
    );
    if let Some(s) = &a.series {
        url.push_str(&format!("/series/{s}"));
    }
    if let Some(i) = &a.instance {
        url.push_str(&format!("/instances/{i}"));
    }
    let resp = crate::server_client()?
        .delete(&url)
        .send()
        .await
        .context("server unreachable")?;
    let status = resp.status();
    let v: serde_json::Value = resp.json().await.unwrap_or_default();
    if !status.is_success() {
        bail!("{}: {}", status, v["message"].as_str().unwrap_or(""));
    }
    println!("deleted {} instance(s)", v["deleted"]);
    Ok(())
}
