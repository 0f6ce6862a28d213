//! Over real HTTP: streamed STOW, QIDO, WADO, metadata with working BulkDataURIs, frames,
//! rendered images, compressed instances made by DCMTK.

use std::path::Path;

use bytes::Bytes;
use reqwest::header::{ACCEPT, CONTENT_TYPE};
use serde_json::Value as Json;
use vesalius_dicomweb::DicomWebOptions;

use crate::dicom::{Obj, multipart, native_frames, split_multipart};
use crate::start;

const STUDY: &str = "1.2.826.0.1.3680043.10.2.1";

fn uid(n: u32) -> String {
    format!("{STUDY}.{n}")
}

/// Five instances in two series; the last is a 3-frame 96 × 128 image.
fn study_files() -> Vec<Vec<u8>> {
    let mut files = Vec::new();
    for n in 1..=4u32 {
        let series = if n <= 2 { 1 } else { 2 };
        files.push(
            Obj::new(STUDY, &uid(series), &uid(100 + n))
                .text(0x0010_0020, "LO", "HTTP-1")
                .text(0x0020_0011, "IS", &series.to_string())
                .text(0x0020_0013, "IS", &n.to_string())
                .pixels(8, 8, 1)
                .encode(),
        );
    }
    files.push(
        Obj::new(STUDY, &uid(2), &uid(105))
            .text(0x0010_0020, "LO", "HTTP-1")
            .text(0x0020_0011, "IS", "2")
            .text(0x0020_0013, "IS", "5")
            .pixels(96, 128, 3)
            .encode(),
    );
    files
}

fn chunked(body: Vec<u8>, size: usize) -> reqwest::Body {
    let chunks: Vec<Result<Bytes, std::io::Error>> = body
        .chunks(size)
        .map(|c| Ok(Bytes::copy_from_slice(c)))
        .collect();
    reqwest::Body::wrap_stream(futures::stream::iter(chunks))
}

async fn multipart_of(r: reqwest::Response) -> Vec<(String, Vec<u8>)> {
    assert_eq!(r.status(), 200, "{}", r.url());
    let ct = r.headers()[CONTENT_TYPE].to_str().unwrap().to_owned();
    let body = r.bytes().await.unwrap();
    split_multipart(&ct, &body)
}

#[tokio::test(flavor = "multi_thread")]
async fn streamed_stow_then_query_and_retrieve() {
    let srv = start(DicomWebOptions::new("default")).await;
    let http = reqwest::Client::new();
    let files = study_files();
    let (body, ct) = multipart(&files, "b0undary");
    let r = http
        .post(format!("{}/studies", srv.dicomweb))
        .header(CONTENT_TYPE, ct)
        .body(chunked(body, 1000))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let j: Json = r.json().await.unwrap();
    let study_url = format!("{}/studies/{STUDY}", srv.dicomweb);
    assert_eq!(j["00081190"]["Value"][0], study_url.as_str());
    assert_eq!(j["00081199"]["Value"].as_array().unwrap().len(), 5);

    let j: Json = http
        .get(format!("{}/studies?PatientID=HTTP-1", srv.dicomweb))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(j[0]["00081190"]["Value"][0], study_url.as_str());
    assert_eq!(j[0]["00201208"]["Value"][0], 5);
    let j: Json = http
        .get(format!("{}/series?PatientID=HTTP-1", srv.dicomweb))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(j.as_array().unwrap().len(), 2);
    assert_eq!(j[0]["0020000D"]["Value"][0], STUDY);

    // The study comes back byte-identical, in series/instance order.
    let parts = multipart_of(http.get(&study_url).send().await.unwrap()).await;
    assert_eq!(parts.len(), files.len());
    for (n, (_, bytes)) in parts.iter().enumerate() {
        assert_eq!(bytes, &files[n], "instance {n}");
    }

    // Metadata: its BulkDataURI works as given.
    let meta: Json = http
        .get(format!("{study_url}/metadata"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let mf = meta
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["00080018"]["Value"][0] == uid(105).as_str())
        .unwrap();
    let bulk = mf["7FE00010"]["BulkDataURI"].as_str().unwrap();
    assert!(bulk.starts_with(&srv.dicomweb), "{bulk}");
    let parts = multipart_of(http.get(bulk).send().await.unwrap()).await;
    assert_eq!(parts[0].1, native_frames(96, 128, 3));

    // Frames of the native multi-frame instance.
    let inst = format!("{study_url}/series/{}/instances/{}", uid(2), uid(105));
    let parts = multipart_of(http.get(format!("{inst}/frames/2")).send().await.unwrap()).await;
    let frame_len = 96 * 128 * 2;
    assert_eq!(
        parts[0].1,
        native_frames(96, 128, 3)[frame_len..2 * frame_len]
    );

    // WADO-URI at the root.
    let r = http
        .get(format!(
            "{}/wado?requestType=WADO&studyUID={STUDY}&seriesUID={}&objectUID={}&contentType=application/dicom",
            srv.origin,
            uid(2),
            uid(105)
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.bytes().await.unwrap().as_ref(), files[4].as_slice());
}

#[tokio::test(flavor = "multi_thread")]
async fn oversize_streamed_body_keeps_earlier_instances() {
    let files = study_files();
    let limit = (files[0].len() + files[1].len() + 300) as u64;
    let srv = start(DicomWebOptions::new("default").max_stow_bytes(limit)).await;
    let http = reqwest::Client::new();
    let (body, ct) = multipart(&files[..3], "b");
    let r = http
        .post(format!("{}/studies", srv.dicomweb))
        .header(CONTENT_TYPE, ct)
        .body(chunked(body, 200))
        .send()
        .await;
    // The server answers 413 as soon as the limit is crossed and may close the connection while
    // the client is still sending; the client then sees either the 413 or a broken connection.
    if let Ok(r) = r {
        assert_eq!(r.status(), 413);
        let j: Json = r.json().await.unwrap();
        assert_eq!(j["error"], "payload-too-large");
    }
    // A fresh client: the server may have closed the connection the rejected upload used.
    let j: Json = reqwest::Client::new()
        .get(format!("{}/studies/{STUDY}/instances", srv.dicomweb))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(j.as_array().unwrap().len(), 2);
}

#[tokio::test(flavor = "multi_thread")]
async fn rendered_images_decode_at_the_viewport_size() {
    let srv = start(DicomWebOptions::new("default")).await;
    let http = reqwest::Client::new();
    let files = study_files();
    let (body, ct) = multipart(&files, "b");
    let r = http
        .post(format!("{}/studies", srv.dicomweb))
        .header(CONTENT_TYPE, ct)
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let inst = format!(
        "{}/studies/{STUDY}/series/{}/instances/{}",
        srv.dicomweb,
        uid(2),
        uid(105)
    );
    let get_image = |url: String, accept: &'static str| {
        let http = http.clone();
        async move {
            let r = http.get(&url).header(ACCEPT, accept).send().await.unwrap();
            let status = r.status();
            let ct = r
                .headers()
                .get(CONTENT_TYPE)
                .map(|v| v.to_str().unwrap().to_owned());
            let body = r.bytes().await.unwrap();
            assert_eq!(status, 200, "{url}: {}", String::from_utf8_lossy(&body));
            (ct.unwrap_or_default(), body)
        }
    };
    let (ct, jpeg) = get_image(
        format!("{inst}/rendered?viewport=64,64&quality=80"),
        "image/jpeg",
    )
    .await;
    assert_eq!(ct, "image/jpeg");
    let img = image::load_from_memory_with_format(&jpeg, image::ImageFormat::Jpeg).unwrap();
    assert_eq!((img.width(), img.height()), (64, 48));
    // Cached: the same bytes again.
    let (_, again) = get_image(
        format!("{inst}/rendered?viewport=64,64&quality=80"),
        "image/jpeg",
    )
    .await;
    assert_eq!(jpeg, again);

    let (ct, png1) = get_image(
        format!("{inst}/frames/1/rendered?window=1500,3000"),
        "image/png",
    )
    .await;
    assert_eq!(ct, "image/png");
    let f1 = image::load_from_memory_with_format(&png1, image::ImageFormat::Png).unwrap();
    assert_eq!((f1.width(), f1.height()), (128, 96));
    let (_, png2) = get_image(format!("{inst}/frames/2/rendered"), "image/png").await;
    let f2 = image::load_from_memory_with_format(&png2, image::ImageFormat::Png).unwrap();
    assert_ne!(
        f1.to_luma8().into_raw(),
        f2.to_luma8().into_raw(),
        "frames differ"
    );
    // A window of [0, 1] makes every non-zero pixel white.
    let (_, png) = get_image(
        format!("{inst}/frames/1/rendered?window=0.5,1"),
        "image/png",
    )
    .await;
    let luma = image::load_from_memory(&png).unwrap().to_luma8();
    let white = luma.pixels().filter(|p| p.0[0] == 255).count();
    assert!(white > luma.len() * 9 / 10, "{white} of {}", luma.len());

    let (_, thumb) = get_image(
        format!(
            "{}/studies/{STUDY}/series/{}/thumbnail",
            srv.dicomweb,
            uid(1)
        ),
        "*/*",
    )
    .await;
    let t = image::load_from_memory_with_format(&thumb, image::ImageFormat::Jpeg).unwrap();
    assert!(t.width() <= 256 && t.height() <= 256);
    let (_, thumb) = get_image(format!("{inst}/thumbnail?viewport=32,32"), "image/jpeg").await;
    let t = image::load_from_memory(&thumb).unwrap();
    assert_eq!((t.width(), t.height()), (32, 24));
    let r = http
        .get(format!(
            "{}/wado?requestType=WADO&studyUID={STUDY}&seriesUID={}&objectUID={}&rows=48&frameNumber=3",
            srv.origin,
            uid(2),
            uid(105)
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let t = image::load_from_memory(&r.bytes().await.unwrap()).unwrap();
    assert_eq!((t.width(), t.height()), (64, 48));
    let r = http
        .get(format!("{inst}/rendered"))
        .header(ACCEPT, "image/gif")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 406);
}

/// Compresses `native` with DCMTK's `dcmcrle`, or `None` when DCMTK is missing.
fn rle(native: &[u8], dir: &Path) -> Option<Vec<u8>> {
    let tool = Path::new("/usr/bin/dcmcrle");
    if !tool.exists() {
        eprintln!("SKIPPED: /usr/bin/dcmcrle is missing (Debian package dcmtk)");
        return None;
    }
    let (src, dst) = (dir.join("native.dcm"), dir.join("rle.dcm"));
    std::fs::write(&src, native).unwrap();
    let out = std::process::Command::new(tool)
        .arg(&src)
        .arg(&dst)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    Some(std::fs::read(&dst).unwrap())
}

#[tokio::test(flavor = "multi_thread")]
async fn compressed_frames_as_stored_or_decoded() {
    let srv = start(DicomWebOptions::new("default")).await;
    let native = Obj::new(STUDY, &uid(7), &uid(700))
        .pixels(16, 16, 2)
        .encode();
    let Some(compressed) = rle(&native, srv.dir.path()) else {
        return;
    };
    let http = reqwest::Client::new();
    let (body, ct) = multipart(std::slice::from_ref(&compressed), "b");
    let r = http
        .post(format!("{}/studies/{STUDY}", srv.dicomweb))
        .header(CONTENT_TYPE, ct)
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let inst = format!(
        "{}/studies/{STUDY}/series/{}/instances/{}",
        srv.dicomweb,
        uid(7),
        uid(700)
    );
    // As stored: the RLE fragment of frame 2 (a 64-byte RLE header with 2 segments).
    let parts = multipart_of(http.get(format!("{inst}/frames/2")).send().await.unwrap()).await;
    assert!(
        parts[0].0.contains("transfer-syntax=1.2.840.10008.1.2.5"),
        "{}",
        parts[0].0
    );
    assert_eq!(u32::from_le_bytes(parts[0].1[..4].try_into().unwrap()), 2);
    let parts = multipart_of(
        http.get(format!("{inst}/frames/2"))
            .header(ACCEPT, "multipart/related; type=\"image/dicom-rle\"")
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert!(
        parts[0].0.starts_with("Content-Type: image/dicom-rle"),
        "{}",
        parts[0].0
    );
    // Decoded when only uncompressed frames are acceptable.
    let parts = multipart_of(
        http.get(format!("{inst}/frames/2,1"))
            .header(
                ACCEPT,
                "multipart/related; type=\"application/octet-stream\"; transfer-syntax=1.2.840.10008.1.2.1",
            )
            .send()
            .await
            .unwrap(),
    )
    .await;
    let frames = native_frames(16, 16, 2);
    assert_eq!(parts[0].1, frames[512..]);
    assert_eq!(parts[1].1, frames[..512]);
    // Frames of several instances in one answer (the viewer's request): decoded the same way;
    // the compressed bit streams are not sent that way (406).
    let series = format!("{}/studies/{STUDY}/series/{}", srv.dicomweb, uid(7));
    let octet =
        "multipart/related; type=\"application/octet-stream\"; transfer-syntax=1.2.840.10008.1.2.1";
    let sop = uid(700);
    let parts = multipart_of(
        http.get(format!("{series}/frames?instances={sop}:2,{sop}"))
            .header(ACCEPT, octet)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(parts.len(), 2);
    assert_eq!(parts[0].1, frames[512..]);
    assert_eq!(parts[1].1, frames[..512]);
    assert!(
        parts[0].0.contains(&format!("/instances/{sop}/frames/2")),
        "{}",
        parts[0].0
    );
    let r = http
        .get(format!("{series}/frames?instances={sop}"))
        .header(
            ACCEPT,
            "multipart/related; type=\"application/octet-stream\"",
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 406);
    // Stored as received; transcoded to Explicit VR Little Endian on request.
    let parts = multipart_of(http.get(&inst).send().await.unwrap()).await;
    assert_eq!(parts[0].1, compressed);
    let parts = multipart_of(
        http.get(&inst)
            .header(
                ACCEPT,
                "multipart/related; type=\"application/dicom\"; transfer-syntax=1.2.840.10008.1.2.1",
            )
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert!(parts[0].0.contains("transfer-syntax=1.2.840.10008.1.2.1"));
    let body = &parts[0].1;
    assert!(
        body.windows(frames.len()).any(|w| w == frames.as_slice()),
        "native pixels inside"
    );
}

fn peak_rss_mib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kb| kb / 1024)
}

/// 256 MiB in and out through one STOW and one WADO request: memory stays far below that.
#[tokio::test(flavor = "multi_thread")]
async fn large_study_streams_without_buffering() {
    use futures::StreamExt;
    const N: u32 = 32;
    // Reset the peak RSS so earlier tests in this process do not count (proc(5), clear_refs).
    let _ = std::fs::write("/proc/self/clear_refs", "5");
    let srv = start(DicomWebOptions::new("default")).await;
    let boundary = "big";
    let parts = futures::stream::iter(0..N).map(move |n| {
        let file = Obj::new(STUDY, &uid(9), &uid(900 + n))
            .text(0x0020_0013, "IS", &n.to_string())
            .pixels(2048, 2048, 1)
            .encode();
        let mut part =
            format!("--{boundary}\r\nContent-Type: application/dicom\r\n\r\n").into_bytes();
        part.extend_from_slice(&file);
        part.extend_from_slice(b"\r\n");
        Ok::<_, std::io::Error>(Bytes::from(part))
    });
    let tail = futures::stream::once(async move { Ok(Bytes::from(format!("--{boundary}--\r\n"))) });
    let started = std::time::Instant::now();
    let http = reqwest::Client::new();
    let r = http
        .post(format!("{}/studies", srv.dicomweb))
        .header(
            CONTENT_TYPE,
            format!("multipart/related; type=\"application/dicom\"; boundary={boundary}"),
        )
        .body(reqwest::Body::wrap_stream(parts.chain(tail)))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let stow = started.elapsed();
    let started = std::time::Instant::now();
    let r = http
        .get(format!("{}/studies/{STUDY}", srv.dicomweb))
        .send()
        .await
        .unwrap();
    let mut s = r.bytes_stream();
    let mut total = 0u64;
    while let Some(c) = s.next().await {
        total += c.unwrap().len() as u64;
    }
    assert!(total > (u64::from(N) * 8) << 20);
    eprintln!(
        "STOW {stow:?}, WADO {:?} for {} MiB; peak RSS {} MiB",
        started.elapsed(),
        total >> 20,
        peak_rss_mib()
    );
    assert!(peak_rss_mib() < 200, "peak RSS {} MiB", peak_rss_mib());
}
