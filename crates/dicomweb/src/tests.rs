//! Router tests without sockets (`tower::ServiceExt::oneshot`) over the in-memory backends.

use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::http::{HeaderMap, Request, StatusCode, header};
use bytes::Bytes;
use http_body_util::BodyExt;
use serde_json::Value as Json;
use tower::ServiceExt;
use vesalius_store::Ingestor;
use vesalius_store::ingest::IngestLimits;
use vesalius_store::memory::{MemoryBlobStore, MemoryIndex};

use crate::{DicomWebOptions, router, wado_uri_router};

#[path = "../tests/support/dicom.rs"]
mod dicom;
use dicom::{Obj, multipart, split_multipart};

const STUDY_A: &str = "1.2.826.0.1.3680043.10.1.1";
const STUDY_B: &str = "1.2.826.0.1.3680043.10.1.2";
const STUDY_C: &str = "1.2.826.0.1.3680043.10.1.3";
const HOST: &str = "archive.test";

struct Harness {
    app: Router,
    ingestor: Arc<Ingestor>,
    opts: DicomWebOptions,
    _dir: tempfile::TempDir,
}

fn harness(opts: DicomWebOptions) -> Harness {
    let dir = tempfile::tempdir().unwrap();
    let ingestor = Arc::new(
        Ingestor::new(
            Arc::new(MemoryIndex::default()),
            Arc::new(MemoryBlobStore::default()),
            dir.path().join("spool"),
            IngestLimits {
                min_free_bytes: 0,
                ..Default::default()
            },
        )
        .unwrap(),
    );
    let app = app_as(&ingestor, &opts, Some(vesalius_auth::Caller::system()));
    Harness {
        app,
        ingestor,
        opts,
        _dir: dir,
    }
}

/// The routers as `caller` (none: as the binary's authentication layer leaves an anonymous
/// request).
fn app_as(
    ingestor: &Arc<Ingestor>,
    opts: &DicomWebOptions,
    caller: Option<vesalius_auth::Caller>,
) -> Router {
    let app = Router::new()
        .nest("/dicom-web", router(ingestor.clone(), opts.clone(), None))
        .merge(wado_uri_router(ingestor.clone(), opts.clone(), None));
    match caller {
        Some(c) => app.layer(axum::Extension(c)),
        None => app,
    }
}

struct Reply {
    status: StatusCode,
    headers: HeaderMap,
    body: Bytes,
}

impl Reply {
    fn json(&self) -> Json {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&self.body)))
    }
    fn content_type(&self) -> &str {
        self.headers[header::CONTENT_TYPE].to_str().unwrap()
    }
    fn parts(&self) -> Vec<(String, Vec<u8>)> {
        split_multipart(self.content_type(), &self.body)
    }
}

impl Harness {
    async fn send(&self, req: Request<Body>) -> Reply {
        let resp = self.app.clone().oneshot(req).await.unwrap();
        let status = resp.status();
        let headers = resp.headers().clone();
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        Reply {
            status,
            headers,
            body,
        }
    }

    async fn get(&self, uri: &str, accept: Option<&str>) -> Reply {
        let mut b = Request::get(uri).header(header::HOST, HOST);
        if let Some(a) = accept {
            b = b.header(header::ACCEPT, a);
        }
        self.send(b.body(Body::empty()).unwrap()).await
    }

    async fn stow(&self, uri: &str, parts: &[Vec<u8>]) -> Reply {
        let (body, ct) = multipart(parts, "XbOuNdArYx");
        let req = Request::post(uri)
            .header(header::HOST, HOST)
            .header(header::CONTENT_TYPE, ct)
            .header(header::CONTENT_LENGTH, body.len())
            .body(Body::from(body))
            .unwrap();
        self.send(req).await
    }
}

fn uid(study: &str, n: u32) -> String {
    format!("{study}.{n}")
}

/// Three studies: A (Doe^Jane, 2020, CT series of 2 + MR series of 1), B (Smith^John, 2021),
/// C (DOE^JOHN, 2022).
fn fixtures() -> Vec<(Obj, Vec<u8>)> {
    let mk = |study: &str, series: u32, sop: u32| {
        let o = Obj::new(study, &uid(study, series), &uid(study, 100 + sop));
        if study == STUDY_A {
            o.text(0x0010_1030, "DS", "70")
        } else {
            o
        }
    };
    let objs = vec![
        mk(STUDY_A, 1, 1)
            .text(0x0008_0060, "CS", "CT")
            .text(0x0008_0020, "DA", "20200115")
            .text(0x0008_0050, "SH", "ACC1")
            .text(0x0008_1030, "LO", "Head")
            .text(0x0020_0013, "IS", "1")
            .pixels(4, 5, 1),
        mk(STUDY_A, 1, 2)
            .text(0x0008_0060, "CS", "CT")
            .text(0x0008_0020, "DA", "20200115")
            .text(0x0020_0013, "IS", "2")
            .pixels(4, 5, 1),
        mk(STUDY_A, 2, 3)
            .text(0x0008_0060, "CS", "MR")
            .text(0x0008_0020, "DA", "20200115")
            .pixels(4, 5, 3),
        mk(STUDY_B, 1, 1)
            .text(0x0010_0010, "PN", "Smith^John")
            .text(0x0010_0020, "LO", "PID2")
            .text(0x0008_0020, "DA", "20210620"),
        mk(STUDY_C, 1, 1)
            .text(0x0010_0010, "PN", "DOE^JOHN")
            .text(0x0010_0020, "LO", "PID3")
            .text(0x0008_0020, "DA", "20220301"),
    ];
    objs.into_iter()
        .map(|o| {
            let b = o.encode();
            (o, b)
        })
        .collect()
}

async fn loaded() -> (Harness, Vec<Vec<u8>>) {
    let h = harness(DicomWebOptions::new("default"));
    let files: Vec<Vec<u8>> = fixtures().into_iter().map(|(_, b)| b).collect();
    let r = h.stow("/dicom-web/studies", &files).await;
    assert_eq!(
        r.status,
        StatusCode::OK,
        "{}",
        String::from_utf8_lossy(&r.body)
    );
    (h, files)
}

fn values(j: &Json, tag: &str) -> Vec<String> {
    let mut v: Vec<String> = j
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|a| a[tag]["Value"][0].as_str().map(str::to_owned))
        .collect();
    v.sort();
    v
}

#[tokio::test]
async fn stow_several_instances_references_each() {
    let h = harness(DicomWebOptions::new("default"));
    let files: Vec<Vec<u8>> = fixtures().into_iter().take(3).map(|(_, b)| b).collect();
    let r = h
        .stow(&format!("/dicom-web/studies/{STUDY_A}"), &files)
        .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.content_type(), "application/dicom+json");
    let j = r.json();
    assert_eq!(
        j["00081190"]["Value"][0],
        format!("http://{HOST}/dicom-web/studies/{STUDY_A}")
    );
    let refs = j["00081199"]["Value"].as_array().unwrap();
    assert_eq!(refs.len(), 3);
    for (n, item) in refs.iter().enumerate() {
        let sop = item["00081155"]["Value"][0].as_str().unwrap();
        assert_eq!(sop, uid(STUDY_A, 101 + n as u32));
        assert_eq!(item["00081150"]["Value"][0], dicom::SC);
        let url = item["00081190"]["Value"][0].as_str().unwrap();
        assert!(url.starts_with(&format!(
            "http://{HOST}/dicom-web/studies/{STUDY_A}/series/"
        )));
        assert!(url.ends_with(&format!("/instances/{sop}")));
    }
    assert!(j.get("00081198").is_none());
    // The same instances again: duplicates are successes.
    assert_eq!(
        h.stow("/dicom-web/studies", &files).await.status,
        StatusCode::OK
    );
}

#[tokio::test]
async fn stow_with_bad_parts_reports_failures() {
    let h = harness(DicomWebOptions::new("default"));
    let good = fixtures().remove(0).1;
    let no_series_uid = Obj::new(STUDY_A, &uid(STUDY_A, 9), &uid(STUDY_A, 999))
        .without(0x0020_000E)
        .encode();
    let r = h
        .stow(
            "/dicom-web/studies",
            &[good, b"this is not DICOM at all".to_vec(), no_series_uid],
        )
        .await;
    assert_eq!(
        r.status,
        StatusCode::ACCEPTED,
        "{}",
        String::from_utf8_lossy(&r.body)
    );
    let j = r.json();
    assert_eq!(j["00081199"]["Value"].as_array().unwrap().len(), 1);
    let failed = j["00081198"]["Value"].as_array().unwrap();
    assert_eq!(failed.len(), 2);
    assert_eq!(failed[0]["00081197"]["Value"][0], 0xC000);
    assert!(failed[0].get("00081155").is_none());
    assert_eq!(failed[1]["00081197"]["Value"][0], 0xA900);
    assert_eq!(failed[1]["00081155"]["Value"][0], uid(STUDY_A, 999));
}

#[tokio::test]
async fn stow_into_another_study_fails_with_409() {
    let h = harness(DicomWebOptions::new("default"));
    let good = fixtures().remove(0).1;
    let r = h
        .stow(&format!("/dicom-web/studies/{STUDY_B}"), &[good])
        .await;
    assert_eq!(r.status, StatusCode::CONFLICT);
    let j = r.json();
    assert_eq!(j["00081198"]["Value"][0]["00081197"]["Value"][0], 0xA900);
    assert_eq!(
        h.get(&format!("/dicom-web/studies/{STUDY_A}"), None)
            .await
            .status,
        StatusCode::NOT_FOUND
    );
}

#[tokio::test]
async fn stow_refuses_wrong_content_types() {
    let h = harness(DicomWebOptions::new("default"));
    for ct in [
        "application/dicom",
        "multipart/related; type=\"application/dicom+json\"; boundary=x",
        "text/plain",
    ] {
        let req = Request::post("/dicom-web/studies")
            .header(header::CONTENT_TYPE, ct)
            .body(Body::from("x"))
            .unwrap();
        let r = h.send(req).await;
        assert_eq!(r.status, StatusCode::UNSUPPORTED_MEDIA_TYPE, "{ct}");
        assert_eq!(r.json()["error"], "unsupported-media-type");
    }
    let req = Request::post("/dicom-web/studies")
        .body(Body::empty())
        .unwrap();
    assert_eq!(h.send(req).await.status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
}

#[tokio::test]
async fn stow_truncated_body_keeps_complete_parts() {
    let h = harness(DicomWebOptions::new("default"));
    let f = fixtures();
    let (body, ct) = multipart(&[f[0].1.clone(), f[3].1.clone()], "bnd");
    // Cut inside the second part: no closing delimiter.
    let cut = body.len() - f[3].1.len() / 2;
    let req = Request::post("/dicom-web/studies")
        .header(header::CONTENT_TYPE, ct)
        .body(Body::from(body[..cut].to_vec()))
        .unwrap();
    let r = h.send(req).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    let j = r.json();
    assert_eq!(j["error"], "bad-request");
    assert!(j["message"].as_str().unwrap().contains("1 instance"), "{j}");
    assert_eq!(
        h.get(&format!("/dicom-web/studies/{STUDY_A}"), None)
            .await
            .status,
        StatusCode::OK
    );
    assert_eq!(
        h.get(&format!("/dicom-web/studies/{STUDY_B}"), None)
            .await
            .status,
        StatusCode::NOT_FOUND
    );
}

fn gzip(data: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

fn stream_body(chunks: Vec<Vec<u8>>) -> Body {
    let chunks: Vec<Result<Bytes, std::io::Error>> =
        chunks.into_iter().map(|c| Ok(Bytes::from(c))).collect();
    Body::from_stream(futures::stream::iter(chunks))
}

#[tokio::test]
async fn stow_gzip_and_deflate_bodies_store_the_decoded_bytes() {
    let f = fixtures();
    let files: Vec<Vec<u8>> = f.iter().map(|(_, b)| b.clone()).collect();
    let (body, ct) = multipart(&files[..3], "bnd");
    let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::fast());
    std::io::Write::write_all(&mut z, &body).unwrap();
    for (coding, coded) in [("gzip", gzip(&body)), ("deflate", z.finish().unwrap())] {
        let h = harness(DicomWebOptions::new("default"));
        assert!(coded.len() < body.len());
        let req = Request::post("/dicom-web/studies")
            .header(header::CONTENT_TYPE, ct.clone())
            .header(header::CONTENT_ENCODING, coding)
            .header(header::CONTENT_LENGTH, coded.len())
            .body(stream_body(coded.chunks(333).map(<[u8]>::to_vec).collect()))
            .unwrap();
        let r = h.send(req).await;
        assert_eq!(r.status, StatusCode::OK, "{coding}: {}", r.json());
        let r = h.get(&format!("/dicom-web/studies/{STUDY_A}"), None).await;
        let parts = r.parts();
        assert_eq!(parts.len(), 3);
        for (n, (_, bytes)) in parts.iter().enumerate() {
            assert_eq!(bytes, &files[n], "{coding}: part {n} is byte-identical");
        }
    }
}

#[tokio::test]
async fn stow_gzip_bomb_is_413_and_earlier_parts_stay() {
    let f = fixtures();
    let limit = 1u64 << 20;
    let h = harness(DicomWebOptions::new("default").max_stow_bytes(limit));
    // One good part, then a part of zeros: 1 GiB decoded from about 1 MiB of gzip members
    // (RFC 1952 2.2), far beyond the limit, which applies to the decoded bytes.
    let mut head = b"--bnd\r\nContent-Type: application/dicom\r\n\r\n".to_vec();
    head.extend_from_slice(&f[0].1);
    head.extend_from_slice(b"\r\n--bnd\r\nContent-Type: application/dicom\r\n\r\n");
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    std::io::Write::write_all(&mut e, &vec![0u8; 1 << 20]).unwrap();
    let zeros = e.finish().unwrap();
    let mut chunks = vec![gzip(&head)];
    chunks.extend(std::iter::repeat_n(zeros, 1024));
    let coded: usize = chunks.iter().map(Vec::len).sum();
    assert!((coded as u64) < 2 * limit);
    let req = Request::post("/dicom-web/studies")
        .header(
            header::CONTENT_TYPE,
            "multipart/related; type=\"application/dicom\"; boundary=bnd",
        )
        .header(header::CONTENT_ENCODING, "gzip")
        .body(stream_body(chunks))
        .unwrap();
    let r = h.send(req).await;
    assert_eq!(r.status, StatusCode::PAYLOAD_TOO_LARGE);
    let j = r.json();
    assert_eq!(j["error"], "payload-too-large");
    assert!(
        j["message"].as_str().unwrap().contains("1 instance(s)"),
        "{j}"
    );
    let r = h.get(&format!("/dicom-web/studies/{STUDY_A}"), None).await;
    assert_eq!(r.parts().len(), 1);
    assert_eq!(r.parts()[0].1, f[0].1);
}

#[tokio::test]
async fn stow_unknown_or_corrupt_coding_is_refused() {
    let h = harness(DicomWebOptions::new("default"));
    let f = fixtures();
    let (body, ct) = multipart(&[f[0].1.clone()], "bnd");
    let req = Request::post("/dicom-web/studies")
        .header(header::CONTENT_TYPE, ct.clone())
        .header(header::CONTENT_ENCODING, "br")
        .body(Body::from(body.clone()))
        .unwrap();
    let r = h.send(req).await;
    assert_eq!(r.status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    assert_eq!(r.json()["error"], "unsupported-media-type");
    assert_eq!(
        r.headers[header::ACCEPT_ENCODING],
        crate::encoding::ACCEPTED
    );
    // Announced gzip, sent plain: the body cannot be decoded.
    let req = Request::post("/dicom-web/studies")
        .header(header::CONTENT_TYPE, ct)
        .header(header::CONTENT_ENCODING, "gzip")
        .body(Body::from(body))
        .unwrap();
    let r = h.send(req).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert_eq!(r.json()["error"], "bad-request");
    assert_eq!(
        h.get(&format!("/dicom-web/studies/{STUDY_A}"), None)
            .await
            .status,
        StatusCode::NOT_FOUND
    );
}

#[tokio::test]
async fn stow_oversize_body_is_413() {
    let f = fixtures();
    let limit = (f[0].1.len() + f[1].1.len() + 400) as u64;
    let h = harness(DicomWebOptions::new("default").max_stow_bytes(limit));
    // Declared too large: refused before reading.
    let r = h
        .stow(
            "/dicom-web/studies",
            &[f[0].1.clone(), f[1].1.clone(), f[2].1.clone()],
        )
        .await;
    assert_eq!(r.status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(r.json()["error"], "payload-too-large");
    // Undeclared: counted while streaming; the parts before the limit stay stored.
    let (body, ct) = multipart(&[f[0].1.clone(), f[1].1.clone(), f[2].1.clone()], "bnd");
    let chunks: Vec<Result<Bytes, std::io::Error>> = body
        .chunks(100)
        .map(|c| Ok(Bytes::copy_from_slice(c)))
        .collect();
    let req = Request::post("/dicom-web/studies")
        .header(header::CONTENT_TYPE, ct)
        .body(Body::from_stream(futures::stream::iter(chunks)))
        .unwrap();
    let r = h.send(req).await;
    assert_eq!(r.status, StatusCode::PAYLOAD_TOO_LARGE);
    assert!(
        r.json()["message"]
            .as_str()
            .unwrap()
            .contains("2 instance(s)")
    );
    let j = h
        .get(&format!("/dicom-web/studies/{STUDY_A}/instances"), None)
        .await
        .json();
    assert_eq!(j.as_array().unwrap().len(), 2, "{j}");
}

#[tokio::test]
async fn qido_matching() {
    let (h, _) = loaded().await;
    let q = |s: &str| format!("/dicom-web/{s}");
    let r = h.get(&q("studies?PatientName=doe*"), None).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.content_type(), "application/dicom+json");
    assert_eq!(values(&r.json(), "0020000D"), [STUDY_A, STUDY_C]);
    let r = h.get(&q("studies?StudyDate=20200101-20211231"), None).await;
    assert_eq!(values(&r.json(), "0020000D"), [STUDY_A, STUDY_B]);
    let r = h
        .get(
            &q(&format!("studies?StudyInstanceUID={STUDY_B},{STUDY_C}")),
            None,
        )
        .await;
    assert_eq!(values(&r.json(), "0020000D"), [STUDY_B, STUDY_C]);
    let r = h
        .get(&q("studies?0020000D=1.2.3&PatientID=PID1"), None)
        .await;
    assert_eq!(r.json(), serde_json::json!([]));
    let r = h.get(&q("studies?ModalitiesInStudy=MR"), None).await;
    let j = r.json();
    assert_eq!(values(&j, "0020000D"), [STUDY_A]);
    assert_eq!(j[0]["00080061"]["Value"], serde_json::json!(["CT", "MR"]));
    assert_eq!(j[0]["00201208"]["Value"][0], 3);
    assert_eq!(
        j[0]["00081190"]["Value"][0],
        format!("http://{HOST}/dicom-web/studies/{STUDY_A}")
    );
    assert_eq!(j[0]["00100010"]["Value"][0]["Alphabetic"], "Doe^Jane");
    // Paging.
    let mut seen = Vec::new();
    for offset in 0..3 {
        let r = h
            .get(&q(&format!("studies?limit=1&offset={offset}")), None)
            .await;
        let v = values(&r.json(), "0020000D");
        assert_eq!(v.len(), 1);
        seen.extend(v);
    }
    seen.sort();
    assert_eq!(seen, [STUDY_A, STUDY_B, STUDY_C]);
    assert_eq!(
        h.get(&q("studies?offset=3"), None).await.json(),
        serde_json::json!([])
    );
}

#[tokio::test]
async fn qido_includefield_and_errors() {
    let (h, _) = loaded().await;
    let uri = format!("/dicom-web/studies?StudyInstanceUID={STUDY_A}");
    let j = h.get(&uri, None).await.json();
    assert!(
        j[0].get("00101030").is_none(),
        "PatientWeight is not a default attribute"
    );
    let j = h
        .get(&format!("{uri}&includefield=PatientWeight"), None)
        .await
        .json();
    assert_eq!(j[0]["00101030"]["Value"][0], 70.0);
    let j = h.get(&format!("{uri}&includefield=all"), None).await.json();
    assert!(j[0].get("00101030").is_some());
    let r = h.get("/dicom-web/studies?Bogus=1", None).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert_eq!(r.json()["error"], "bad-request");
    let r = h.get("/dicom-web/studies?StudyDate=2020", None).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    let r = h.get("/dicom-web/studies?InstitutionName=X", None).await;
    assert_eq!(r.status, StatusCode::OK);
    let w = r.headers[header::WARNING].to_str().unwrap();
    assert!(
        w.starts_with("299 archive.test: ") && w.contains("InstitutionName"),
        "{w}"
    );
    let r = h
        .get(
            "/dicom-web/studies",
            Some("multipart/related; type=\"application/dicom+xml\""),
        )
        .await;
    assert_eq!(r.status, StatusCode::NOT_ACCEPTABLE);
}

#[tokio::test]
async fn qido_series_and_instances_carry_parents() {
    let (h, _) = loaded().await;
    let j = h.get("/dicom-web/series?Modality=CT", None).await.json();
    assert_eq!(j.as_array().unwrap().len(), 1, "{j}");
    let s = &j[0];
    assert_eq!(s["0020000D"]["Value"][0], STUDY_A);
    assert_eq!(s["0020000E"]["Value"][0], uid(STUDY_A, 1));
    assert_eq!(s["00100010"]["Value"][0]["Alphabetic"], "Doe^Jane");
    assert_eq!(s["00201209"]["Value"][0], 2);
    assert_eq!(
        s["00081190"]["Value"][0],
        format!(
            "http://{HOST}/dicom-web/studies/{STUDY_A}/series/{}",
            uid(STUDY_A, 1)
        )
    );
    let j = h
        .get(&format!("/dicom-web/studies/{STUDY_A}/series"), None)
        .await
        .json();
    assert_eq!(values(&j, "0020000E"), [uid(STUDY_A, 1), uid(STUDY_A, 2)]);
    assert!(
        j[0].get("00100010").is_none(),
        "study attributes only without a study in the path"
    );
    let j = h
        .get(
            &format!(
                "/dicom-web/studies/{STUDY_A}/series/{}/instances",
                uid(STUDY_A, 1)
            ),
            None,
        )
        .await
        .json();
    assert_eq!(
        values(&j, "00080018"),
        [uid(STUDY_A, 101), uid(STUDY_A, 102)]
    );
    let j = h
        .get(
            &format!("/dicom-web/instances?SOPInstanceUID={}", uid(STUDY_A, 103)),
            None,
        )
        .await
        .json();
    let i = &j[0];
    assert_eq!(i["0020000E"]["Value"][0], uid(STUDY_A, 2));
    assert_eq!(i["00080060"]["Value"][0], "MR");
    assert_eq!(i["00100020"]["Value"][0], "PID1");
    assert_eq!(i["00280008"]["Value"][0], 3);
    assert!(
        i["00081190"]["Value"][0]
            .as_str()
            .unwrap()
            .ends_with(&uid(STUDY_A, 103))
    );
    let j = h
        .get(&format!("/dicom-web/studies/{STUDY_A}/instances"), None)
        .await
        .json();
    assert_eq!(j.as_array().unwrap().len(), 3);
    assert!(j[0].get("0020000E").is_some() && j[0].get("00080060").is_some());
}

#[tokio::test]
async fn wado_retrieves_what_was_sent() {
    let (h, files) = loaded().await;
    let r = h.get(&format!("/dicom-web/studies/{STUDY_A}"), None).await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(
        r.content_type()
            .starts_with("multipart/related; type=\"application/dicom\"")
    );
    let parts = r.parts();
    assert_eq!(parts.len(), 3);
    for (n, (headers, bytes)) in parts.iter().enumerate() {
        assert!(
            headers.contains("transfer-syntax=1.2.840.10008.1.2.1"),
            "{headers}"
        );
        assert_eq!(bytes, &files[n], "part {n} is byte-identical");
    }
    let series = format!("/dicom-web/studies/{STUDY_A}/series/{}", uid(STUDY_A, 2));
    let r = h
        .get(
            &series,
            Some("multipart/related; type=\"application/dicom\"; transfer-syntax=*"),
        )
        .await;
    assert_eq!(r.parts().len(), 1);
    let inst = format!("{series}/instances/{}", uid(STUDY_A, 103));
    let r = h.get(&inst, Some("application/dicom")).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.body.as_ref(), files[2].as_slice());
    let r = h
        .get(&inst, Some("multipart/related; type=\"application/dicom\"; transfer-syntax=1.2.840.10008.1.2.4.90"))
        .await;
    assert_eq!(r.status, StatusCode::NOT_ACCEPTABLE);
    assert_eq!(r.json()["error"], "not-acceptable");
    assert_eq!(
        h.get("/dicom-web/studies/1.2.3.999", None).await.status,
        StatusCode::NOT_FOUND
    );
    let r = h.get("/dicom-web/studies/not-a-uid", None).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    // WADO-URI.
    let r = h
        .get(
            &format!(
                "/wado?requestType=WADO&studyUID={STUDY_A}&seriesUID={}&objectUID={}&contentType=application/dicom",
                uid(STUDY_A, 2),
                uid(STUDY_A, 103)
            ),
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.content_type(), "application/dicom");
    assert_eq!(r.body.as_ref(), files[2].as_slice());
    assert_eq!(
        h.get("/wado?requestType=WADO", None).await.status,
        StatusCode::BAD_REQUEST
    );
}

#[tokio::test]
async fn metadata_bulkdata_and_frames() {
    let (h, _) = loaded().await;
    let series = uid(STUDY_A, 2);
    let sop = uid(STUDY_A, 103);
    let inst = format!("/dicom-web/studies/{STUDY_A}/series/{series}/instances/{sop}");
    let j = h
        .get(&format!("/dicom-web/studies/{STUDY_A}/metadata"), None)
        .await
        .json();
    assert_eq!(j.as_array().unwrap().len(), 3);
    let j = h.get(&format!("{inst}/metadata"), None).await.json();
    let uri = j[0]["7FE00010"]["BulkDataURI"].as_str().unwrap();
    let prefix = format!("http://{HOST}{inst}/bulkdata/");
    assert!(uri.starts_with(&prefix), "{uri}");
    let r = h
        .get(uri.strip_prefix(&format!("http://{HOST}")).unwrap(), None)
        .await;
    assert_eq!(r.status, StatusCode::OK);
    let parts = r.parts();
    assert_eq!(parts.len(), 1);
    assert_eq!(parts[0].1, dicom::native_frames(4, 5, 3));
    let r = h
        .get(
            uri.strip_prefix(&format!("http://{HOST}")).unwrap(),
            Some("application/octet-stream"),
        )
        .await;
    assert_eq!(r.body.as_ref(), dicom::native_frames(4, 5, 3).as_slice());
    assert_eq!(
        h.get(&format!("{inst}/bulkdata/0-999999999"), None)
            .await
            .status,
        StatusCode::NOT_FOUND
    );
    // Frames 3 and 1, in that order.
    let r = h.get(&format!("{inst}/frames/3,1"), None).await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(
        r.content_type()
            .contains("type=\"application/octet-stream\"")
    );
    let parts = r.parts();
    let frame = |n: usize| dicom::native_frames(4, 5, 3)[n * 40..(n + 1) * 40].to_vec();
    assert_eq!(parts.len(), 2);
    assert_eq!(parts[0].1, frame(2));
    assert_eq!(parts[1].1, frame(0));
    assert!(parts[0].0.contains("transfer-syntax=1.2.840.10008.1.2.1"));
    assert_eq!(
        h.get(&format!("{inst}/frames/4"), None).await.status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        h.get(&format!("{inst}/frames/0"), None).await.status,
        StatusCode::BAD_REQUEST
    );
    let r = h
        .get(&format!("{inst}/metadata"), Some("application/dicom+xml"))
        .await;
    assert_eq!(r.status, StatusCode::NOT_ACCEPTABLE);
}

#[tokio::test]
async fn frames_of_several_instances_in_one_answer() {
    let (h, _) = loaded().await;
    let ct = uid(STUDY_A, 1);
    let mr = uid(STUDY_A, 2);
    let (one, two, three) = (uid(STUDY_A, 101), uid(STUDY_A, 102), uid(STUDY_A, 103));
    let series = format!("/dicom-web/studies/{STUDY_A}/series/{ct}");
    let accept =
        "multipart/related; type=\"application/octet-stream\"; transfer-syntax=1.2.840.10008.1.2.1";
    // In the order asked, each part naming its frame.
    let r = h
        .get(
            &format!("{series}/frames?instances={two},{one}:1"),
            Some(accept),
        )
        .await;
    assert_eq!(
        r.status,
        StatusCode::OK,
        "{}",
        String::from_utf8_lossy(&r.body)
    );
    assert!(
        r.content_type()
            .contains("type=\"application/octet-stream\"")
    );
    let parts = r.parts();
    assert_eq!(parts.len(), 2);
    let frame = dicom::native_frames(4, 5, 1);
    assert_eq!(parts[0].1, frame);
    assert_eq!(parts[1].1, frame);
    assert!(
        parts[0].0.contains(&format!(
            "Content-Location: http://{HOST}{series}/instances/{two}/frames/1"
        )),
        "{}",
        parts[0].0
    );
    assert!(parts[1].0.contains(&format!("/instances/{one}/frames/1")));
    assert!(parts[0].0.contains("transfer-syntax=1.2.840.10008.1.2.1"));
    // The same bytes as one instance's frames; frames of a multi-frame instance by number.
    let mr_series = format!("/dicom-web/studies/{STUDY_A}/series/{mr}");
    let r = h
        .get(
            &format!("{mr_series}/frames?instances={three}:3,{three}:1"),
            None,
        )
        .await;
    let parts = r.parts();
    let all = dicom::native_frames(4, 5, 3);
    assert_eq!(parts.len(), 2);
    assert_eq!(parts[0].1, all[80..120].to_vec());
    assert_eq!(parts[1].1, all[0..40].to_vec());
    let single = h
        .get(&format!("{mr_series}/instances/{three}/frames/3"), None)
        .await
        .parts();
    assert_eq!(single[0].1, parts[0].1);
    // An instance of another series, a frame beyond the last: 404 naming it.
    let r = h
        .get(&format!("{series}/frames?instances={one},{three}"), None)
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    assert!(r.json()["message"].as_str().unwrap().contains(&three));
    let r = h
        .get(&format!("{mr_series}/frames?instances={three}:4"), None)
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    // Bad requests: no list, an empty one, a bad UID or frame number, too many.
    for q in [
        String::new(),
        "?instances=".into(),
        "?instances=1.2.x".into(),
        format!("?instances={one}:0"),
        format!("?instances={one}:a"),
        format!("?instances={}", vec![one.as_str(); 501].join(",")),
    ] {
        let r = h.get(&format!("{series}/frames{q}"), None).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{q}");
        assert!(r.content_type().contains("json"), "{q}");
    }
    // Only octet-stream parts.
    let r = h
        .get(
            &format!("{series}/frames?instances={one}"),
            Some("multipart/related; type=\"image/jpeg\""),
        )
        .await;
    assert_eq!(r.status, StatusCode::NOT_ACCEPTABLE);
}

#[tokio::test]
async fn qido_cuts_at_the_maximum_with_a_warning() {
    let h = harness(DicomWebOptions::new("default").max_query_results(2));
    let files: Vec<Vec<u8>> = fixtures().into_iter().map(|(_, b)| b).collect();
    assert_eq!(
        h.stow("/dicom-web/studies", &files).await.status,
        StatusCode::OK
    );
    let r = h.get("/dicom-web/studies", None).await;
    assert_eq!(r.json().as_array().unwrap().len(), 2);
    let w = r.headers[header::WARNING].to_str().unwrap();
    assert!(w.contains("more results"), "{w}");
    let r = h.get("/dicom-web/studies?limit=2", None).await;
    assert_eq!(r.json().as_array().unwrap().len(), 2);
    assert!(r.headers.get(header::WARNING).is_none());
    let r = h.get("/dicom-web/studies?limit=50&offset=2", None).await;
    assert_eq!(r.json().as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn stow_part_of_another_type_is_a_failure() {
    let h = harness(DicomWebOptions::new("default"));
    let good = fixtures().remove(0).1;
    let mut body = Vec::new();
    body.extend_from_slice(b"--b\r\nContent-Type: application/dicom\r\n\r\n");
    body.extend_from_slice(&good);
    body.extend_from_slice(
        b"\r\n--b\r\nContent-Type: application/pdf\r\n\r\n%PDF-1.4\r\n--b--\r\n",
    );
    let req = Request::post("/dicom-web/studies")
        .header(
            header::CONTENT_TYPE,
            "multipart/related; type=\"application/dicom\"; boundary=b",
        )
        .body(Body::from(body))
        .unwrap();
    let r = h.send(req).await;
    assert_eq!(r.status, StatusCode::ACCEPTED);
    assert_eq!(
        r.json()["00081198"]["Value"][0]["00081197"]["Value"][0],
        0xC000
    );
    // An empty multipart body is a bad request.
    let req = Request::post("/dicom-web/studies")
        .header(
            header::CONTENT_TYPE,
            "multipart/related; type=\"application/dicom\"; boundary=b",
        )
        .body(Body::from("--b--\r\n"))
        .unwrap();
    assert_eq!(h.send(req).await.status, StatusCode::BAD_REQUEST);
}

/// The memory blob store has no local files: the codecs get temporary copies.
#[tokio::test]
async fn rendering_and_transcoding_from_a_store_without_files() {
    let (h, _) = loaded().await;
    let inst = format!(
        "/dicom-web/studies/{STUDY_A}/series/{}/instances/{}",
        uid(STUDY_A, 2),
        uid(STUDY_A, 103)
    );
    let r = h
        .get(
            &format!("{inst}/frames/2/rendered?viewport=10,10"),
            Some("image/png"),
        )
        .await;
    assert_eq!(
        r.status,
        StatusCode::OK,
        "{}",
        String::from_utf8_lossy(&r.body)
    );
    assert_eq!(r.content_type(), "image/png");
    let img = image::load_from_memory_with_format(&r.body, image::ImageFormat::Png).unwrap();
    assert!(img.width() <= 10 && img.height() <= 10);
    let r = h
        .get(&format!("/dicom-web/studies/{STUDY_A}/thumbnail"), None)
        .await;
    assert_eq!(r.status, StatusCode::OK);
    image::load_from_memory_with_format(&r.body, image::ImageFormat::Jpeg).unwrap();
    // Which instance the representative image is (the web viewer places it by this).
    let location = r.headers[header::CONTENT_LOCATION].to_str().unwrap();
    assert!(
        location.starts_with(&format!("/dicom-web/studies/{STUDY_A}/series/"))
            && location.contains("/instances/"),
        "{location}"
    );
    assert_eq!(
        h.get(&format!("{inst}/frames/4/rendered"), None)
            .await
            .status,
        StatusCode::NOT_FOUND
    );
    let r = h
        .get(
            &inst,
            Some(
                "multipart/related; type=\"application/dicom\"; transfer-syntax=1.2.840.10008.1.2",
            ),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK);
    let parts = r.parts();
    assert!(
        parts[0].0.contains("transfer-syntax=1.2.840.10008.1.2\r")
            || parts[0].0.ends_with("transfer-syntax=1.2.840.10008.1.2"),
        "{}",
        parts[0].0
    );
    let pixels = dicom::native_frames(4, 5, 3);
    assert!(
        parts[0]
            .1
            .windows(pixels.len())
            .any(|w| w == pixels.as_slice())
    );
}

/// Issue 4: nobody unknown is served, and a caller sees only what its access allows — in
/// searches (filtered inside the index query), retrievals, metadata and frames (404, as if the
/// study did not exist) — and may store only into its own organisation.
#[tokio::test]
async fn callers_see_only_what_their_access_allows() {
    use vesalius_auth::{Caller, Principal};
    use vesalius_store::directory::Role;
    use vesalius_store::query::Access;
    let (h, files) = loaded().await;
    let as_caller = |c: Option<Caller>| Harness {
        app: app_as(&h.ingestor, &h.opts, c),
        ingestor: h.ingestor.clone(),
        opts: h.opts.clone(),
        _dir: tempfile::tempdir().unwrap(),
    };
    let anonymous = as_caller(None);
    let r = anonymous.get("/dicom-web/studies", None).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert_eq!(r.json()["error"], "unauthorized");
    let r = anonymous
        .get(&format!("/dicom-web/studies/{STUDY_A}/metadata"), None)
        .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert_eq!(
        anonymous.stow("/dicom-web/studies", &files).await.status,
        StatusCode::UNAUTHORIZED
    );

    let user = |org: &str, role: Role, access: Access| Caller {
        principal: Principal::token("t1", "u1", "reader", org, role),
        access: Some(access),
        source: "127.0.0.1:1".into(),
        user_agent: "test".into(),
    };
    // Another organisation: nothing visible.
    let other = as_caller(Some(user(
        "other",
        Role::Clinician,
        Access::orgs(["other"]),
    )));
    let r = other.get("/dicom-web/studies", None).await;
    assert!(r.status == StatusCode::OK || r.status == StatusCode::NO_CONTENT);
    assert!(
        r.body.is_empty() || r.json().as_array().unwrap().is_empty(),
        "{:?}",
        r.body
    );
    for path in [
        format!("/dicom-web/studies/{STUDY_A}"),
        format!("/dicom-web/studies/{STUDY_A}/metadata"),
        format!(
            "/dicom-web/studies/{STUDY_A}/series/{}/instances/{}/frames/1",
            uid(STUDY_A, 2),
            uid(STUDY_A, 103)
        ),
    ] {
        assert_eq!(
            other.get(&path, None).await.status,
            StatusCode::NOT_FOUND,
            "{path}"
        );
    }
    // A grant on one study opens that study and nothing else.
    let granted = as_caller(Some(user(
        "other",
        Role::Clinician,
        Access {
            studies: vec![("default".into(), STUDY_A.into())],
            ..Default::default()
        },
    )));
    let r = granted.get("/dicom-web/studies", None).await;
    assert_eq!(values(&r.json(), "0020000D"), vec![STUDY_A.to_owned()]);
    assert_eq!(
        granted
            .get(&format!("/dicom-web/studies/{STUDY_A}/metadata"), None)
            .await
            .status,
        StatusCode::OK
    );
    assert_eq!(
        granted
            .get(&format!("/dicom-web/studies/{STUDY_B}/metadata"), None)
            .await
            .status,
        StatusCode::NOT_FOUND
    );
    // An auditor may not store; a radiographer stores into its own organisation.
    let auditor = as_caller(Some(user("default", Role::Auditor, Access::default())));
    assert_eq!(
        auditor.stow("/dicom-web/studies", &files).await.status,
        StatusCode::FORBIDDEN
    );
    let radiographer = as_caller(Some(user(
        "org-b",
        Role::Radiographer,
        Access::orgs(["org-b"]),
    )));
    let r = radiographer.stow("/dicom-web/studies", &files[..1]).await;
    assert_eq!(
        r.status,
        StatusCode::OK,
        "{}",
        String::from_utf8_lossy(&r.body)
    );
    let r = radiographer.get("/dicom-web/studies", None).await;
    assert_eq!(r.json().as_array().unwrap().len(), 1, "only its own copy");
}

/// Issue 6: a peer writing for one of its users (a key image or measurement report of a study
/// held here) may store only into an existing study of its organisation, named in the path,
/// and only when registered with `may_query`; a peer's plain delivery is unchanged.
#[tokio::test]
async fn a_peer_writing_for_a_user_annotates_existing_studies_only() {
    use vesalius_auth::{Caller, Principal, PrincipalKind};
    use vesalius_store::query::Access;
    let (h, _) = loaded().await;
    let peer = |may_query: bool, for_user: bool| {
        let mut principal = Principal::peer("hub", "default", may_query);
        if let PrincipalKind::Peer { for_user: f, .. } = &mut principal.kind {
            *f = for_user;
        }
        let access = if may_query {
            Access::orgs(["default"])
        } else {
            Access::default()
        };
        Harness {
            app: app_as(
                &h.ingestor,
                &h.opts,
                Some(Caller {
                    principal,
                    access: Some(access),
                    source: "127.0.0.1:1".into(),
                    user_agent: "test".into(),
                }),
            ),
            ingestor: h.ingestor.clone(),
            opts: h.opts.clone(),
            _dir: tempfile::tempdir().unwrap(),
        }
    };
    // A Key Object Selection Document (PS3.4 B.5).
    let ko = |sop: &str| {
        Obj::new(STUDY_A, &uid(STUDY_A, 90), sop)
            .text(0x0008_0016, "UI", "1.2.840.10008.5.1.4.1.1.88.59")
            .text(0x0008_0060, "CS", "KO")
            .encode()
    };
    let doc = |n: u32| ko(&uid(STUDY_A, 900 + n));
    let reader = peer(true, true);
    let r = reader
        .stow(&format!("/dicom-web/studies/{STUDY_A}"), &[doc(1)])
        .await;
    assert_eq!(
        r.status,
        StatusCode::OK,
        "{}",
        String::from_utf8_lossy(&r.body)
    );
    let r = reader
        .get(
            &format!("/dicom-web/studies/{STUDY_A}/series?Modality=KO"),
            None,
        )
        .await;
    assert_eq!(values(&r.json(), "0020000E"), vec![uid(STUDY_A, 90)]);
    // Not a new study, and not without naming the study.
    let unknown = "1.2.826.0.1.3680043.10.1.99";
    let other = Obj::new(unknown, &uid(unknown, 1), &uid(unknown, 2)).encode();
    let r = reader
        .stow(&format!("/dicom-web/studies/{unknown}"), &[other])
        .await;
    assert_eq!(
        r.status,
        StatusCode::NOT_FOUND,
        "{}",
        String::from_utf8_lossy(&r.body)
    );
    let r = reader.stow("/dicom-web/studies", &[doc(2)]).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    // Documents about the images only: not an image, and never a new version of an instance
    // held here (an image's SOP Instance UID, or the document just stored).
    let failure = |r: &Reply| r.json()["00081198"]["Value"][0]["00081197"]["Value"][0].clone();
    let image = Obj::new(STUDY_A, &uid(STUDY_A, 91), &uid(STUDY_A, 950)).encode();
    let r = reader
        .stow(&format!("/dicom-web/studies/{STUDY_A}"), &[image])
        .await;
    assert_eq!(
        r.status,
        StatusCode::CONFLICT,
        "{}",
        String::from_utf8_lossy(&r.body)
    );
    assert_eq!(failure(&r), 0x0124, "refused: not authorized");
    for sop in [uid(STUDY_A, 101), uid(STUDY_A, 901)] {
        let r = reader
            .stow(&format!("/dicom-web/studies/{STUDY_A}"), &[ko(&sop)])
            .await;
        assert_eq!(
            r.status,
            StatusCode::CONFLICT,
            "{sop}: {}",
            String::from_utf8_lossy(&r.body)
        );
        assert_eq!(failure(&r), 0x0110, "{sop}");
    }
    let r = reader
        .get(
            &format!("/dicom-web/studies/{STUDY_A}/series?Modality=KO"),
            None,
        )
        .await;
    assert_eq!(
        values(&r.json(), "0020000E"),
        vec![uid(STUDY_A, 90)],
        "nothing more stored"
    );
    // A peer registered without `may_query` may not write for its users.
    let r = peer(false, true)
        .stow(&format!("/dicom-web/studies/{STUDY_A}"), &[doc(3)])
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    assert!(
        r.json()["message"]
            .as_str()
            .unwrap_or_default()
            .contains("annotate"),
        "{:?}",
        r.json()
    );
    // A delivery (no user named) stores as before.
    let r = peer(false, false)
        .stow("/dicom-web/studies", &[doc(4)])
        .await;
    assert_eq!(
        r.status,
        StatusCode::OK,
        "{}",
        String::from_utf8_lossy(&r.body)
    );
}

/// Issue 6, unmarking a key image at the site holding the study: a peer writing for one of its
/// users may withdraw (IHE IOCM rejection note, PS3.3 C.17.6.2) only the key image documents it
/// stored here for that same user; it may not reject an image, nor another user's document,
/// nor store a key image document in another user's name.
#[tokio::test]
async fn a_peer_writing_for_a_user_withdraws_only_that_users_key_images() {
    use vesalius_auth::{Caller, Principal, PrincipalKind};
    use vesalius_store::query::Access;
    let (h, _) = loaded().await;
    let as_user = |user: &str| {
        let mut principal = Principal::peer("hub", "default", true);
        principal.actor.id = format!("hub/{user}");
        if let PrincipalKind::Peer { for_user, .. } = &mut principal.kind {
            *for_user = true;
        }
        Harness {
            app: app_as(
                &h.ingestor,
                &h.opts,
                Some(Caller {
                    principal,
                    access: Some(Access::orgs(["default"])),
                    source: "127.0.0.1:1".into(),
                    user_agent: "test".into(),
                }),
            ),
            ingestor: h.ingestor.clone(),
            opts: h.opts.clone(),
            _dir: tempfile::tempdir().unwrap(),
        }
    };
    let (alice, bob) = (as_user("alice"), as_user("bob"));
    // Explicit VR little endian elements and items, in tag order.
    let el = |tag: u32, vr: &str, value: &[u8]| {
        let mut out = Vec::new();
        dicom::element(&mut out, tag, vr, value, true);
        out
    };
    let item = |elements: Vec<Vec<u8>>| {
        let body = elements.concat();
        let mut out = vec![0xFE, 0xFF, 0x00, 0xE0];
        out.extend_from_slice(&(body.len() as u32).to_le_bytes());
        out.extend_from_slice(&body);
        out
    };
    let code = |value: &str, meaning: &str| {
        item(vec![
            el(0x0008_0100, "SH", value.as_bytes()),
            el(0x0008_0102, "SH", b"DCM"),
            el(0x0008_0104, "LO", meaning.as_bytes()),
        ])
    };
    const KO: &str = "1.2.840.10008.5.1.4.1.1.88.59";
    // A KO titled `title` by `creator` (Person Observer's Login Name) referencing `refs`
    // (SOP Class, SOP Instance) as `value_type` items and in its evidence.
    let ko =
        |sop: &str, title: (&str, &str), creator: &str, value_type: &str, refs: &[(&str, &str)]| {
            let sop_ref = |(class, uid): &(&str, &str)| {
                item(vec![
                    el(0x0008_1150, "UI", class.as_bytes()),
                    el(0x0008_1155, "UI", uid.as_bytes()),
                ])
            };
            let mut content = vec![item(vec![
                el(0x0040_A010, "CS", b"HAS OBS CONTEXT"),
                el(0x0040_A040, "CS", b"TEXT"),
                el(
                    0x0040_A043,
                    "SQ",
                    &code("128774", "Person Observer's Login Name"),
                ),
                el(0x0040_A160, "UT", creator.as_bytes()),
            ])];
            for r in refs {
                content.push(item(vec![
                    el(0x0008_1199, "SQ", &sop_ref(r)),
                    el(0x0040_A010, "CS", b"CONTAINS"),
                    el(0x0040_A040, "CS", value_type.as_bytes()),
                ]));
            }
            let series = item(vec![
                el(
                    0x0008_1199,
                    "SQ",
                    &refs.iter().map(sop_ref).collect::<Vec<_>>().concat(),
                ),
                el(0x0020_000E, "UI", uid(STUDY_A, 90).as_bytes()),
            ]);
            let evidence = item(vec![
                el(0x0008_1115, "SQ", &series),
                el(0x0020_000D, "UI", STUDY_A.as_bytes()),
            ]);
            Obj::new(STUDY_A, &uid(STUDY_A, 95), sop)
                .text(0x0008_0016, "UI", KO)
                .text(0x0008_0060, "CS", "KO")
                .text(0x0008_0070, "LO", "Vesalius")
                .bytes(0x0040_A043, "SQ", code(title.0, title.1))
                .bytes(0x0040_A375, "SQ", evidence)
                .bytes(0x0040_A730, "SQ", content.concat())
                .encode()
        };
    const OF_INTEREST: (&str, &str) = ("113000", "Of Interest");
    const REJECTED: (&str, &str) = ("113001", "Rejected for Quality Reasons");
    let image = uid(STUDY_A, 101);
    let path = format!("/dicom-web/studies/{STUDY_A}");
    let failure = |r: &Reply| r.json()["00081198"]["Value"][0]["00081197"]["Value"][0].clone();
    let instances = || async {
        let r = alice.get(&format!("{path}/instances"), None).await;
        values(&r.json(), "00080018")
    };
    let before = instances().await;
    assert!(before.contains(&image), "{before:?}");

    // An image cannot be rejected.
    let r = alice
        .stow(
            &path,
            &[ko(
                &uid(STUDY_A, 960),
                REJECTED,
                "hub/alice",
                "IMAGE",
                &[(dicom::SC, &image)],
            )],
        )
        .await;
    assert_eq!(
        r.status,
        StatusCode::CONFLICT,
        "{}",
        String::from_utf8_lossy(&r.body)
    );
    assert_eq!(failure(&r), 0x0124, "refused: not authorized");
    assert_eq!(instances().await, before, "nothing hidden, nothing stored");
    // Nor a key image document be made in another user's name.
    let r = alice
        .stow(
            &path,
            &[ko(
                &uid(STUDY_A, 961),
                OF_INTEREST,
                "hub/bob",
                "IMAGE",
                &[(dicom::SC, &image)],
            )],
        )
        .await;
    assert_eq!(failure(&r), 0x0124);
    // Alice's own key image document is stored ...
    let mine = uid(STUDY_A, 962);
    let r = alice
        .stow(
            &path,
            &[ko(
                &mine,
                OF_INTEREST,
                "hub/alice",
                "IMAGE",
                &[(dicom::SC, &image)],
            )],
        )
        .await;
    assert_eq!(
        r.status,
        StatusCode::OK,
        "{}",
        String::from_utf8_lossy(&r.body)
    );
    assert!(instances().await.contains(&mine));
    // ... which Bob cannot withdraw ...
    let r = bob
        .stow(
            &path,
            &[ko(
                &uid(STUDY_A, 963),
                REJECTED,
                "hub/bob",
                "COMPOSITE",
                &[(KO, &mine)],
            )],
        )
        .await;
    assert_eq!(failure(&r), 0x0124);
    assert!(instances().await.contains(&mine), "still shown");
    // ... and nor can Alice together with an image.
    let r = alice
        .stow(
            &path,
            &[ko(
                &uid(STUDY_A, 964),
                REJECTED,
                "hub/alice",
                "COMPOSITE",
                &[(KO, &mine), (dicom::SC, &image)],
            )],
        )
        .await;
    assert_eq!(failure(&r), 0x0124);
    assert!(instances().await.contains(&mine), "still shown");
    // Alice withdraws it: hidden from QIDO, the note itself shown, the image untouched.
    let note = uid(STUDY_A, 965);
    let r = alice
        .stow(
            &path,
            &[ko(
                &note,
                REJECTED,
                "hub/alice",
                "COMPOSITE",
                &[(KO, &mine)],
            )],
        )
        .await;
    assert_eq!(
        r.status,
        StatusCode::OK,
        "{}",
        String::from_utf8_lossy(&r.body)
    );
    let after = instances().await;
    assert!(!after.contains(&mine), "{after:?}");
    assert!(after.contains(&note) && after.contains(&image), "{after:?}");
}
