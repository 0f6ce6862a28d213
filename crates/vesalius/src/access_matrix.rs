//! The access-matrix test of issue 4: every route of the HTTP application and every DIMSE
//! service, tried as every principal against its own and another organisation's data; it fails
//! when a cell allows what the policy forbids, when an allowed access leaves no audit event, or
//! when a route exists that the matrix does not list.
//!
//! - The site is the application `vesalius serve` builds (`serve::open_storage`,
//!   `serve::http_app`, the DIMSE server with serve's options) over SQLite and blobs in a
//!   temporary directory, on `127.0.0.1:0` ([`fixture`]).
//! - Principals act in organisation `a`: no credentials, an API token per role, a share-link
//!   visitor (pass cookie), a guest upload link; over DICOM an unknown AE title, a store-only
//!   and a query/retrieve AE title of `a`.
//! - Targets: `a`'s study (`own`), `b`'s study opened to `a` by a patient grant and to `a`'s
//!   referrer by a study grant (`granted`), `b`'s study without grants (`other`), and a study
//!   that exists nowhere (`ghost`); for link and inbox routes the links and inbox studies of
//!   `a` and `b`.
//! - What each cell may do is computed with `vesalius_auth::authorize` (through
//!   `Authenticator::authorize`, with the principal's live grants), never written by hand; the
//!   route table ([`routes::ROUTES`]) only says which action on which resource a route needs.
//! - Each principal gets fresh credentials per route, so that the audit events of a cell are
//!   its own (reads are audited once per actor and study per five minutes).
//!
//! On failure the whole matrix is printed (`VESALIUS_MATRIX=1` prints it on success too).
//! How to add a route: docs/testing.md, "Access matrix".

mod audit;
mod dimse;
mod dimse_scu;
mod fixture;
mod http;
mod judge;
mod report;
mod request;
mod routes;
mod scan;

use std::time::Instant;

use report::Matrix;

fn finish(name: &str, matrix: &Matrix, whos: &[&str], targets: &[&str], started: Instant) {
    let failures = matrix.failures();
    let text = matrix.render(whos, targets);
    let summary = format!(
        "{name}: {} cells ({} allowed), {} failed, {} known gaps, {:.1} s",
        matrix.cells.len(),
        matrix.cells.iter().filter(|c| c.allowed).count(),
        failures.len(),
        matrix
            .cells
            .iter()
            .filter(|c| c.known.is_some() && !c.problems.is_empty())
            .count(),
        started.elapsed().as_secs_f64()
    );
    if !failures.is_empty() || std::env::var_os("VESALIUS_MATRIX").is_some() {
        println!("{text}\n{summary}");
    }
    assert!(failures.is_empty(), "{summary}\n{text}");
    eprintln!("{summary}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_http_route_as_every_principal() {
    let started = Instant::now();
    let site = fixture::Site::start().await;
    let mut matrix = Matrix::default();
    http::run(&site, &mut matrix).await;
    let whos: Vec<&str> = http::WHO.iter().map(|w| w.label()).collect();
    site.stop().await;
    finish("HTTP", &matrix, &whos, &http::TARGETS, started);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_dimse_service_as_every_caller() {
    let started = Instant::now();
    let site = fixture::Site::start().await;
    let mut matrix = Matrix::default();
    dimse::run(&site, &mut matrix).await;
    site.stop().await;
    finish("DIMSE", &matrix, &dimse::CALLERS, &http::TARGETS, started);
}
