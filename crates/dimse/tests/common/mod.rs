//! Shared fixtures: a server on a free port behind an access-control layer over in-memory
//! directory and audit log (with the calling AE titles the tests use registered), DICOM files
//! written with dicom-object, DCMTK runs.

#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::sync::Arc;
use std::time::Duration;

use dicom_core::{DataElement, PrimitiveValue, VR};
use dicom_dictionary_std::tags;
use dicom_object::{FileMetaTableBuilder, InMemDicomObject};
use futures::StreamExt;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use vesalius_auth::{AuthOptions, Authenticator};
use vesalius_dimse::DimseServerOptions;
use vesalius_store::audit::{AuditEvent, AuditLog, Outcome};
use vesalius_store::directory::{AeEntry, DirectoryChange};
use vesalius_store::ingest::{IngestContext, IngestLimits, IngestObserver};
use vesalius_store::memory::{MemoryBlobStore, MemoryIndex};
use vesalius_store::memory_directory::{MemoryAuditLog, MemoryDirectory};
use vesalius_store::model::{InstanceRecord, SideRecord};
use vesalius_store::query::Scope;
use vesalius_store::{Directory, Ingestor};

/// The AE title of the server under test.
pub const AE: &str = "VESALIUS";
/// CT Image Storage.
pub const CT: &str = "1.2.840.10008.5.1.4.1.1.2";
/// MR Image Storage.
pub const MR: &str = "1.2.840.10008.5.1.4.1.1.4";
/// Explicit VR Little Endian.
pub const EXPLICIT: &str = "1.2.840.10008.1.2.1";

/// The organisation of the AE titles registered by default.
pub const ORG: &str = "default";

/// Calling AE titles every server under test knows (organisation [`ORG`], any address, may
/// query): DCMTK's defaults and the titles the tests call with.
pub const KNOWN_AES: &[&str] = &[
    "ECHOSCU",
    "STORESCU",
    "FINDSCU",
    "GETSCU",
    "MOVESCU",
    "SEEDER",
    "SCU",
    "CANCELLER",
    "HOSTILE",
    "TLSSCU",
    "PLAIN",
    "COMMITSCU",
];

/// The access-control layer of a server under test, over in-memory models.
pub struct Access {
    pub auth: Arc<Authenticator>,
    pub directory: Arc<MemoryDirectory>,
    pub audit: Arc<MemoryAuditLog>,
}

impl Access {
    /// An authenticator over an empty directory plus [`KNOWN_AES`].
    pub async fn new() -> Access {
        Access::with_options(AuthOptions::new()).await
    }

    /// Like [`Access::new`] with `opts` (e.g. the site's own AE titles).
    pub async fn with_options(opts: AuthOptions) -> Access {
        let audit = Arc::new(MemoryAuditLog::new());
        let directory = Arc::new(MemoryDirectory::new(audit.clone()));
        let auth = Arc::new(Authenticator::new(directory.clone(), audit.clone(), opts));
        let access = Access {
            auth,
            directory,
            audit,
        };
        for ae in KNOWN_AES {
            access.add_ae(ae, ORG, &[], true).await;
        }
        access
    }

    /// Registers (or replaces) a calling AE title.
    pub async fn add_ae(&self, ae: &str, org: &str, allowed: &[&str], may_query: bool) {
        self.put_ae(AeEntry {
            ae_title: ae.into(),
            org: org.into(),
            allowed_addrs: allowed.iter().map(|a| a.to_string()).collect(),
            listen: None,
            description: String::new(),
            may_query,
        })
        .await;
    }

    /// Registers (or replaces) an AE title entry.
    pub async fn put_ae(&self, entry: AeEntry) {
        self.directory
            .apply(vec![DirectoryChange::PutAe(entry)], Vec::new())
            .await
            .unwrap();
    }

    /// Every audit event so far, oldest first (appends run in spawned tasks: this waits up to
    /// 2 s for at least `min` of them).
    pub async fn events(&self, min: usize) -> Vec<AuditEvent> {
        for _ in 0..100 {
            let got: Vec<AuditEvent> = (self.audit.records(1, 100_000).await.unwrap())
                .into_iter()
                .map(|r| r.event)
                .collect();
            if got.len() >= min {
                return got;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("fewer than {min} audit events");
    }

    /// The events of `action` by actor `ae` (waiting as [`Access::events`] for `min`).
    pub async fn events_of(&self, ae: &str, action: &str, min: usize) -> Vec<AuditEvent> {
        for _ in 0..100 {
            let got: Vec<AuditEvent> = self
                .events(0)
                .await
                .into_iter()
                .filter(|e| e.action == action && e.actor.name == ae)
                .collect();
            if got.len() >= min {
                return got;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("fewer than {min} {action} events of {ae}");
    }
}

/// A stand-in for the binary's audit observer: one `store` event per ingested instance, from
/// what the front end put into the ingest context (the real one also deduplicates).
pub struct StoreEvents;

impl IngestObserver for StoreEvents {
    fn observe(&self, r: &InstanceRecord, ctx: &IngestContext) -> Vec<SideRecord> {
        let Some(actor) = ctx.actor.clone() else {
            return Vec::new();
        };
        vec![SideRecord::Audit(AuditEvent {
            time_ms: r.received_ms,
            actor,
            action: "store".into(),
            outcome: Outcome::Success,
            org: r.org.clone(),
            patient: Some((r.patient.issuer.clone(), r.patient.patient_id.clone())),
            study_uid: Some(r.study.study_uid.clone()),
            source: ctx.source_addr.clone(),
            user_agent: ctx.user_agent.clone(),
            details: serde_json::json!({}),
        })]
    }
}

/// A server under test.
pub struct Server {
    pub addr: SocketAddr,
    pub ingestor: Arc<Ingestor>,
    pub access: Access,
    pub shutdown: CancellationToken,
    pub task: JoinHandle<std::io::Result<()>>,
    pub dir: tempfile::TempDir,
}

impl Server {
    pub fn addr(&self) -> String {
        self.addr.to_string()
    }

    pub fn port(&self) -> String {
        self.addr.port().to_string()
    }

    /// Stops the server and waits (at most 5 s) for it to finish.
    pub async fn stop(self) {
        self.shutdown.cancel();
        let r = tokio::time::timeout(Duration::from_secs(5), self.task).await;
        assert!(
            matches!(r, Ok(Ok(Ok(())))),
            "server did not stop cleanly: {r:?}"
        );
    }

    /// The current instances of a study.
    pub async fn instances(&self, study: &str) -> Vec<vesalius_store::model::StoredInstance> {
        self.ingestor
            .index()
            .instances(&Scope::study(study))
            .await
            .unwrap()
    }

    /// The data set (meta group skipped) of the stored blob of `sop`.
    pub async fn stored_data_set(&self, sop: &str) -> Vec<u8> {
        let scope = Scope {
            instance: Some(sop.into()),
            ..Default::default()
        };
        let inst = self.ingestor.index().instances(&scope).await.unwrap();
        let inst = inst.first().unwrap_or_else(|| panic!("{sop} not stored"));
        let mut stream = self.ingestor.blobs().read(&inst.blob_key).await.unwrap();
        let mut bytes = Vec::new();
        while let Some(c) = stream.next().await {
            bytes.extend_from_slice(&c.unwrap());
        }
        strip_meta(&bytes).to_vec()
    }
}

/// An ingest pipeline over in-memory backends whose store events go to `audit`.
pub fn ingestor(dir: &Path, audit: &Arc<MemoryAuditLog>) -> Arc<Ingestor> {
    Arc::new(
        Ingestor::new(
            Arc::new(MemoryIndex::with_audit(audit.clone())),
            Arc::new(MemoryBlobStore::default()),
            dir.join("spool"),
            IngestLimits {
                min_free_bytes: 0,
                ..Default::default()
            },
        )
        .unwrap()
        .with_observer(Arc::new(StoreEvents)),
    )
}

/// The options every test server starts from.
pub fn options(auth: &Arc<Authenticator>) -> DimseServerOptions {
    DimseServerOptions {
        ae_title: AE.into(),
        timeouts: vesalius_dimse::Timeouts {
            connect: Duration::from_secs(3),
            read: Duration::from_secs(10),
            write: Duration::from_secs(10),
        },
        ..DimseServerOptions::new(auth.clone())
    }
}

/// Starts a server with default options changed by `configure`.
pub async fn start(configure: impl FnOnce(&mut DimseServerOptions)) -> Server {
    start_with(Access::new().await, configure).await
}

/// Starts a server behind `access` with default options changed by `configure`.
pub async fn start_with(access: Access, configure: impl FnOnce(&mut DimseServerOptions)) -> Server {
    let dir = tempfile::tempdir().unwrap();
    let ingestor = ingestor(dir.path(), &access.audit);
    let mut options = options(&access.auth);
    configure(&mut options);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(vesalius_dimse::run(
        listener,
        ingestor.clone(),
        options,
        shutdown.clone(),
    ));
    Server {
        addr,
        ingestor,
        access,
        shutdown,
        task,
        dir,
    }
}

/// A test UID under a private root.
pub fn uid(suffix: &str) -> String {
    format!("1.2.826.0.1.3680043.10.1137.{suffix}")
}

/// What to put in a test instance.
#[derive(Debug, Clone)]
pub struct Spec {
    pub patient_name: &'static str,
    pub patient_id: &'static str,
    pub study: String,
    pub series: String,
    pub sop: String,
    pub sop_class: &'static str,
    pub modality: &'static str,
    pub date: &'static str,
    pub number: u16,
}

impl Spec {
    /// A CT instance of DOE^JOHN on 2020-06-15; UIDs are suffixes under [`uid`].
    pub fn new(study: &str, series: &str, sop: &str) -> Spec {
        Spec {
            patient_name: "DOE^JOHN",
            patient_id: "PID1",
            study: uid(study),
            series: uid(series),
            sop: uid(sop),
            sop_class: CT,
            modality: "CT",
            date: "20200615",
            number: 1,
        }
    }
}

fn put(obj: &mut InMemDicomObject, tag: dicom_core::Tag, vr: VR, v: PrimitiveValue) {
    obj.put(DataElement::new(tag, vr, v));
}

/// Writes a small Explicit VR Little Endian Part 10 file (8x8 16-bit image) and returns its path.
pub fn write_instance(dir: &Path, spec: &Spec) -> PathBuf {
    let mut obj = InMemDicomObject::new_empty();
    let s = |v: &str| PrimitiveValue::from(v);
    put(
        &mut obj,
        tags::SPECIFIC_CHARACTER_SET,
        VR::CS,
        s("ISO_IR 192"),
    );
    put(&mut obj, tags::SOP_CLASS_UID, VR::UI, s(spec.sop_class));
    put(&mut obj, tags::SOP_INSTANCE_UID, VR::UI, s(&spec.sop));
    put(&mut obj, tags::STUDY_DATE, VR::DA, s(spec.date));
    put(&mut obj, tags::STUDY_TIME, VR::TM, s("101500"));
    put(&mut obj, tags::ACCESSION_NUMBER, VR::SH, s("ACC1"));
    put(&mut obj, tags::MODALITY, VR::CS, s(spec.modality));
    put(&mut obj, tags::STUDY_DESCRIPTION, VR::LO, s("Head"));
    put(&mut obj, tags::PATIENT_NAME, VR::PN, s(spec.patient_name));
    put(&mut obj, tags::PATIENT_ID, VR::LO, s(spec.patient_id));
    put(&mut obj, tags::PATIENT_BIRTH_DATE, VR::DA, s("19700101"));
    put(&mut obj, tags::PATIENT_SEX, VR::CS, s("M"));
    put(&mut obj, tags::STUDY_INSTANCE_UID, VR::UI, s(&spec.study));
    put(&mut obj, tags::SERIES_INSTANCE_UID, VR::UI, s(&spec.series));
    put(&mut obj, tags::STUDY_ID, VR::SH, s("1"));
    put(&mut obj, tags::SERIES_NUMBER, VR::IS, s("1"));
    put(
        &mut obj,
        tags::INSTANCE_NUMBER,
        VR::IS,
        s(&spec.number.to_string()),
    );
    let us = |v: u16| PrimitiveValue::from(v);
    put(&mut obj, tags::SAMPLES_PER_PIXEL, VR::US, us(1));
    put(
        &mut obj,
        tags::PHOTOMETRIC_INTERPRETATION,
        VR::CS,
        s("MONOCHROME2"),
    );
    put(&mut obj, tags::ROWS, VR::US, us(8));
    put(&mut obj, tags::COLUMNS, VR::US, us(8));
    put(&mut obj, tags::BITS_ALLOCATED, VR::US, us(16));
    put(&mut obj, tags::BITS_STORED, VR::US, us(12));
    put(&mut obj, tags::HIGH_BIT, VR::US, us(11));
    put(&mut obj, tags::PIXEL_REPRESENTATION, VR::US, us(0));
    let pixels: Vec<u16> = (0..64u16).map(|i| i * 16 + spec.number).collect();
    put(
        &mut obj,
        tags::PIXEL_DATA,
        VR::OW,
        PrimitiveValue::U16(pixels.into()),
    );
    let file = obj
        .with_meta(FileMetaTableBuilder::new().transfer_syntax(EXPLICIT))
        .unwrap();
    let path = dir.join(format!("{}.dcm", spec.sop));
    file.write_to_file(&path).unwrap();
    path
}

/// The data set of a Part 10 file in memory (preamble and meta group skipped).
pub fn strip_meta(bytes: &[u8]) -> &[u8] {
    assert_eq!(&bytes[128..132], b"DICM");
    let gl = u32::from_le_bytes(bytes[140..144].try_into().unwrap()) as usize;
    &bytes[144 + gl..]
}

/// The data set of a Part 10 file on disk.
pub fn file_data_set(path: &Path) -> Vec<u8> {
    strip_meta(&std::fs::read(path).unwrap()).to_vec()
}

/// Runs a DCMTK tool (by full path, with TCP_NODELAY=1), at most `secs` seconds.
pub async fn dcmtk(tool: &str, args: &[&str], secs: u64) -> Output {
    let mut cmd = tokio::process::Command::new(format!("/usr/bin/{tool}"));
    cmd.args(args).env("TCP_NODELAY", "1").kill_on_drop(true);
    tokio::time::timeout(Duration::from_secs(secs), cmd.output())
        .await
        .unwrap_or_else(|_| panic!("{tool} {args:?} timed out"))
        .unwrap()
}

/// Both output streams of a tool, for assertions.
pub fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// A TCP port nobody listens on right now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Starts DCMTK's storescp (AE `ae`) writing into `dir`; returns it and its port once it accepts.
pub async fn storescp(dir: &Path, ae: &str) -> (tokio::process::Child, u16) {
    let port = free_port();
    let child = tokio::process::Command::new("/usr/bin/storescp")
        .args(["+B", "-aet", ae, "-od"])
        .arg(dir)
        .arg(port.to_string())
        .env("TCP_NODELAY", "1")
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    for _ in 0..100 {
        if tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_ok()
        {
            return (child, port);
        }
        tokio::time::sleep(Duration::from_millis(30)).await;
    }
    panic!("storescp did not start");
}

/// Waits (at most 5 s) until `dir` holds `n` files, and returns them.
pub async fn wait_for_files(dir: &Path, n: usize) -> Vec<PathBuf> {
    for _ in 0..100 {
        let files: Vec<PathBuf> = std::fs::read_dir(dir)
            .unwrap()
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.is_file())
            .collect();
        if files.len() >= n {
            // storescp writes a file while receiving: give the last one a moment to close.
            tokio::time::sleep(Duration::from_millis(100)).await;
            return files;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{n} files did not arrive in {}", dir.display());
}

/// Stores `specs` through our own SCU and returns the files written.
pub async fn seed(server: &Server, specs: &[Spec]) -> Vec<PathBuf> {
    let dir = server.dir.path().join("seed");
    std::fs::create_dir_all(&dir).unwrap();
    let files: Vec<PathBuf> = specs.iter().map(|s| write_instance(&dir, s)).collect();
    let summary =
        vesalius_dimse::scu::store_files(&server.addr(), "SEEDER", AE, files.clone(), |_, _| {})
            .await
            .unwrap();
    assert_eq!(summary.failed, 0, "{:?}", summary.failures);
    files
}

/// Data set bytes of every Part 10 file in `files`, keyed by SOP Instance UID.
pub fn by_sop(files: &[PathBuf]) -> std::collections::BTreeMap<String, Vec<u8>> {
    files
        .iter()
        .map(|p| {
            let meta = vesalius_dimse::scu::read_file_meta(p).unwrap();
            (meta.sop_instance, file_data_set(p))
        })
        .collect()
}
