//! Integration tests of the DICOMweb routers served on `127.0.0.1:0` over the real backends
//! (SQLite index, local blob store), talked to with reqwest, DCMTK-made fixtures and the Python
//! `dicomweb-client`.

#[path = "support/dicom.rs"]
mod dicom;
mod http;
mod interop;

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use vesalius_blob_object::ObjectBlobStore;
use vesalius_dicomweb::{DicomWebOptions, router, wado_uri_router};
use vesalius_store::Ingestor;
use vesalius_store::ingest::IngestLimits;
use vesalius_store_sqlite::SqliteIndex;

/// A running server over a temporary data directory; stops when dropped.
pub struct Server {
    /// `http://127.0.0.1:PORT`.
    pub origin: String,
    /// `{origin}/dicom-web`.
    pub dicomweb: String,
    /// The data directory.
    pub dir: tempfile::TempDir,
    stop: Option<oneshot::Sender<()>>,
    /// Servers of this binary run one at a time, so the memory test measures one server.
    _serial: tokio::sync::OwnedMutexGuard<()>,
}

static SERIAL: std::sync::LazyLock<Arc<tokio::sync::Mutex<()>>> =
    std::sync::LazyLock::new(|| Arc::new(tokio::sync::Mutex::new(())));

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
    }
}

/// Starts a server with `opts`.
pub async fn start(opts: DicomWebOptions) -> Server {
    start_with(|_| opts).await
}

/// Starts a server with the options `opts(origin)` makes, given the server's own origin.
pub async fn start_with(opts: impl FnOnce(&str) -> DicomWebOptions) -> Server {
    let serial = SERIAL.clone().lock_owned().await;
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr: SocketAddr = listener.local_addr().unwrap();
    let origin = format!("http://{addr}");
    let opts = opts(&origin);
    let dir = tempfile::tempdir().unwrap();
    let index = SqliteIndex::open(&dir.path().join("index.db"))
        .await
        .unwrap();
    let blobs = ObjectBlobStore::local(&dir.path().join("blobs")).unwrap();
    let spool = blobs.spool_dir().unwrap();
    let ingestor = Arc::new(
        Ingestor::new(
            Arc::new(index),
            Arc::new(blobs),
            spool,
            IngestLimits {
                min_free_bytes: 0,
                ..Default::default()
            },
        )
        .unwrap(),
    );
    let app = Router::new()
        .nest("/dicom-web", router(ingestor.clone(), opts.clone(), None))
        .merge(wado_uri_router(ingestor, opts, None))
        .layer(axum::Extension(vesalius_auth::Caller::system()));
    let (tx, rx) = oneshot::channel::<()>();
    tokio::spawn(async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(async move {
                let _ = rx.await;
            })
            .await
            .unwrap();
    });
    Server {
        dicomweb: format!("{origin}/dicom-web"),
        origin,
        dir,
        stop: Some(tx),
        _serial: serial,
    }
}
