//! The site key, signed checkpoints, and verification of the audit hash chain.
//!
//! The chain ([`vesalius_store::audit`]) makes every record depend on the one before it, so an
//! edited, deleted, inserted or reordered record breaks it at that point. A hash chain alone
//! cannot catch an attacker who rewrites the whole tail with fresh hashes, nor a truncated tail:
//! **checkpoints** can. A checkpoint is the site key's ed25519 signature over "the chain had
//! hash H at seq N" ([`checkpoint_message`]); the server makes one periodically
//! ([`checkpoint`]), and [`verify`] checks every signature with the trusted public keys and
//! every checkpointed record against its signed hash.
//!
//! # Key handling
//! - The site key is 32 random bytes (an ed25519 seed), stored hex-encoded in one file under
//!   the data directory with mode 0600 ([`SiteKey::load_or_create`]). A key file readable by
//!   group or others is refused, as ssh refuses such keys.
//! - The key is created by writing a temporary file, syncing it and hard-linking it into place:
//!   two nodes starting at once end with one key (the loser loads the winner's).
//! - Verification trusts public keys given to it (`vesalius audit verify --key HEX`, or the
//!   site's own): copy the public key (`SiteKey::public_hex`) somewhere the database's
//!   administrators cannot write, or a rewritten chain re-signed with a stolen key passes.
//! - Checkpoints covering the newest records do not exist yet: [`VerifyReport::unsigned_tail`]
//!   says how many records a truncation could still remove unnoticed.
//!
//! # What verification reports
//! [`verify_records`] is a pure function over records in chain order; [`verify`] feeds it the
//! log page by page. Each [`Problem`] names the `seq` where the chain is broken and a
//! [`ProblemKind`]:
//! - `Edited`: the record's hash does not match its content (or the next record does not link
//!   to it: it was rewritten with a recomputed hash).
//! - `Deleted`: sequence numbers are missing, or the records after it were renumbered down.
//! - `Inserted`: a sequence number occurs twice, records after it were renumbered up, or a
//!   record links to an earlier one than its predecessor.
//! - `Reordered`: records are out of order (two records swapped, or a record found where its
//!   own hash says it belongs elsewhere).
//! - `BadCheckpointSignature`, `CheckpointMismatch`, `Truncated` (a signed checkpoint lies
//!   beyond the last record).

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::io::Write;
use std::path::{Path, PathBuf};

use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};
use rand::rngs::OsRng;
use vesalius_store::AuditLog;
use vesalius_store::audit::{
    AuditRecord, Checkpoint, GENESIS_HASH, chain_hash, checkpoint_message,
};

use crate::error::{Error, Result};

/// The checkpoint signature algorithm.
pub const ALG: &str = "ed25519";
/// Records read per page by [`verify`].
pub const PAGE: u32 = 1000;
/// At most this many problems are listed (the rest are counted).
pub const MAX_PROBLEMS: usize = 1000;

/// The site's signing key.
pub struct SiteKey {
    signing: SigningKey,
}

impl std::fmt::Debug for SiteKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SiteKey")
            .field("public", &self.public_hex())
            .finish_non_exhaustive()
    }
}

impl SiteKey {
    /// A fresh random key (not stored).
    pub fn generate() -> Self {
        SiteKey {
            signing: SigningKey::generate(&mut OsRng),
        }
    }

    /// A 32-byte key for `purpose` derived from this key (SHA-256 of a label, the purpose and
    /// the secret seed), so the site keeps one secret file: e.g. the key of share-link passes,
    /// which every node of the site must share.
    pub fn derive_key(&self, purpose: &str) -> [u8; 32] {
        use sha2::{Digest, Sha256};
        let mut h = Sha256::new();
        h.update(b"vesalius-derived-key\0");
        h.update(purpose.as_bytes());
        h.update(b"\0");
        h.update(self.signing.to_bytes());
        h.finalize().into()
    }

    /// Loads the key at `path`, or creates it (mode 0600) when the file does not exist.
    pub fn load_or_create(path: &Path) -> Result<Self> {
        match std::fs::read_to_string(path) {
            Ok(text) => Self::parse_file(path, &text),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Self::create(path),
            Err(e) => Err(key_error(path, e.to_string())),
        }
    }

    fn parse_file(path: &Path, text: &str) -> Result<Self> {
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(path)
                .map_err(|e| key_error(path, e.to_string()))?
                .permissions()
                .mode();
            if mode & 0o077 != 0 {
                return Err(key_error(
                    path,
                    format!("readable by others (mode {:o}); chmod 600 it", mode & 0o777),
                ));
            }
        }
        let bytes = hex::decode(text.trim()).map_err(|e| key_error(path, e.to_string()))?;
        let seed: [u8; 32] = bytes
            .try_into()
            .map_err(|_| key_error(path, "not a 32-byte key".into()))?;
        Ok(SiteKey {
            signing: SigningKey::from_bytes(&seed),
        })
    }

    fn create(path: &Path) -> Result<Self> {
        let key = Self::generate();
        let dir = path.parent().unwrap_or(Path::new("."));
        std::fs::create_dir_all(dir).map_err(|e| key_error(path, e.to_string()))?;
        let tmp = dir.join(format!(
            ".{}.{}.tmp",
            path.file_name()
                .and_then(|n| n.to_str())
                .unwrap_or("site-key"),
            crate::secret::random_id(8)
        ));
        let write = || -> std::io::Result<()> {
            let mut opts = std::fs::OpenOptions::new();
            opts.write(true).create_new(true);
            #[cfg(unix)]
            std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
            let mut f = opts.open(&tmp)?;
            writeln!(f, "{}", hex::encode(key.signing.to_bytes()))?;
            f.sync_all()?;
            Ok(())
        };
        let result = write().and_then(|()| std::fs::hard_link(&tmp, path));
        let _ = std::fs::remove_file(&tmp);
        match result {
            Ok(()) => {
                // Make the new directory entry durable.
                if let Ok(d) = std::fs::File::open(dir) {
                    let _ = d.sync_all();
                }
                tracing::info!(path = %path.display(), public = %key.public_hex(), "created the site key");
                Ok(key)
            }
            // Another process created it first: use theirs.
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                let text =
                    std::fs::read_to_string(path).map_err(|e| key_error(path, e.to_string()))?;
                Self::parse_file(path, &text)
            }
            Err(e) => Err(key_error(path, e.to_string())),
        }
    }

    /// The public key, hex: the `key_id` of checkpoints, the value to give [`verify`].
    pub fn public_hex(&self) -> String {
        hex::encode(self.signing.verifying_key().to_bytes())
    }

    /// Signs "the chain had `hash` at `seq`" at `time_ms`.
    pub fn sign(&self, seq: u64, hash: &str, time_ms: i64) -> Checkpoint {
        let sig = self.signing.sign(&checkpoint_message(seq, hash, time_ms));
        Checkpoint {
            seq,
            hash: hash.to_owned(),
            time_ms,
            alg: ALG.to_owned(),
            key_id: self.public_hex(),
            signature: hex::encode(sig.to_bytes()),
        }
    }
}

fn key_error(path: &Path, reason: String) -> Error {
    Error::KeyFile {
        path: PathBuf::from(path),
        reason,
    }
}

/// Signs the head of the log and stores the checkpoint; `None` when the log is empty or its
/// head is already checkpointed.
pub async fn checkpoint(
    log: &dyn AuditLog,
    key: &SiteKey,
    now_ms: i64,
) -> Result<Option<Checkpoint>> {
    let Some(head) = log.head().await? else {
        return Ok(None);
    };
    let public = key.public_hex();
    let existing = log.checkpoints().await?;
    if existing
        .iter()
        .any(|c| c.seq == head.seq && c.hash == head.hash && c.key_id == public)
    {
        return Ok(None);
    }
    let cp = key.sign(head.seq, &head.hash, now_ms);
    log.put_checkpoint(cp.clone()).await?;
    Ok(Some(cp))
}

/// What is wrong at a place in the chain.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum ProblemKind {
    /// The record's content does not match its hash, or it was rewritten with a new hash.
    Edited,
    /// Records are missing from here.
    Deleted,
    /// A record that does not belong was inserted here.
    Inserted,
    /// Records are out of order here.
    Reordered,
    /// A checkpoint's signature is invalid or made with an untrusted key.
    BadCheckpointSignature,
    /// A validly signed checkpoint names a hash the record at its seq does not have.
    CheckpointMismatch,
    /// A validly signed checkpoint lies beyond the last record: the tail was cut from here.
    Truncated,
}

/// One problem found by verification.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// Where: the sequence number at which the chain is broken.
    pub seq: u64,
    /// What.
    pub kind: ProblemKind,
    /// Human-readable details.
    pub detail: String,
}

/// The result of verifying a chain.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct VerifyReport {
    /// Records read.
    pub records_checked: u64,
    /// Checkpoints read.
    pub checkpoints_checked: u64,
    /// The highest sequence number seen.
    pub head_seq: u64,
    /// The highest seq covered by a valid, matching checkpoint (0: none).
    pub last_signed_seq: u64,
    /// Problems in seq order (at most [`MAX_PROBLEMS`]).
    pub problems: Vec<Problem>,
    /// Problems found beyond [`MAX_PROBLEMS`].
    pub more_problems: u64,
}

impl VerifyReport {
    /// Whether the chain is intact.
    pub fn is_ok(&self) -> bool {
        self.problems.is_empty()
    }

    /// Records after the last valid checkpoint, which a truncation could remove unnoticed.
    pub fn unsigned_tail(&self) -> u64 {
        self.head_seq.saturating_sub(self.last_signed_seq)
    }
}

/// Verifies the whole log, reading it [`PAGE`] records at a time.
pub async fn verify(log: &dyn AuditLog, trusted_keys: &[String]) -> Result<VerifyReport> {
    verify_paged(log, trusted_keys, PAGE).await
}

/// [`verify`] with a page size.
pub async fn verify_paged(
    log: &dyn AuditLog,
    trusted_keys: &[String],
    page: u32,
) -> Result<VerifyReport> {
    let page = page.max(1);
    let checkpoints = log.checkpoints().await?;
    let head = log.head().await?.map_or(0, |r| r.seq);
    let mut v = ChainVerifier::new(&checkpoints, trusted_keys);
    let mut from = 1u64;
    // One page past the head and past every seq seen: a tampered tail may hold seqs beyond the
    // physical last record.
    while from <= head.max(v.max_seq).saturating_add(u64::from(page)) {
        for r in log.records(from, page).await? {
            v.feed(&r);
        }
        from = from.saturating_add(u64::from(page));
    }
    Ok(v.finish())
}

/// Verifies records given in chain (storage) order against the checkpoints, trusting the given
/// public keys (hex).
pub fn verify_records(
    records: &[AuditRecord],
    checkpoints: &[Checkpoint],
    trusted_keys: &[String],
) -> VerifyReport {
    let mut v = ChainVerifier::new(checkpoints, trusted_keys);
    for r in records {
        v.feed(r);
    }
    v.finish()
}

/// How many recent records are remembered to explain links to earlier ones.
const RECENT: usize = 64;

/// The streaming state of one verification.
struct ChainVerifier {
    /// Validly signed checkpoints: seq → signed hashes.
    signed: BTreeMap<u64, Vec<String>>,
    /// Seqs of signed checkpoints whose record was seen with the signed hash.
    matched: BTreeSet<u64>,
    /// Seqs of signed checkpoints whose record was seen (with any hash).
    seen_signed: BTreeSet<u64>,
    /// The highest seq seen.
    max_seq: u64,
    /// The previous record's (stored seq, stored hash).
    last: Option<(u64, String)>,
    /// Recent hashes → seq, to explain a link to an earlier record.
    recent: VecDeque<(String, u64)>,
    /// Seqs skipped so far (perhaps still arriving out of order): start → end inclusive.
    missing: BTreeMap<u64, u64>,
    /// The current run of records whose hash says they belong at `seq + offset`: (offset,
    /// length).
    run: Option<(i64, u64)>,
    /// Whether the previous record was itself reported (its successor's link is then explained).
    last_reported: bool,
    report: VerifyReport,
}

impl ChainVerifier {
    fn new(checkpoints: &[Checkpoint], trusted: &[String]) -> Self {
        let mut v = ChainVerifier {
            signed: BTreeMap::new(),
            matched: BTreeSet::new(),
            seen_signed: BTreeSet::new(),
            max_seq: 0,
            last: None,
            recent: VecDeque::new(),
            missing: BTreeMap::new(),
            run: None,
            last_reported: false,
            report: VerifyReport::default(),
        };
        for cp in checkpoints {
            v.report.checkpoints_checked += 1;
            match check_signature(cp, trusted) {
                Ok(()) => v.signed.entry(cp.seq).or_default().push(cp.hash.clone()),
                Err(why) => v.problem(cp.seq, ProblemKind::BadCheckpointSignature, why),
            }
        }
        // The empty chain (seq 0) is matched by definition when its hash is the genesis hash.
        if let Some(hashes) = v.signed.get(&0) {
            if hashes.iter().all(|h| h == GENESIS_HASH) {
                v.matched.insert(0);
            }
            v.seen_signed.insert(0);
        }
        v
    }

    fn problem(&mut self, seq: u64, kind: ProblemKind, detail: String) {
        if self.report.problems.len() < MAX_PROBLEMS {
            self.report.problems.push(Problem { seq, kind, detail });
        } else {
            self.report.more_problems += 1;
        }
    }

    fn feed(&mut self, r: &AuditRecord) {
        self.report.records_checked += 1;
        let s = r.seq;
        let before = self.report.problems.len() + self.report.more_problems as usize;
        let last_seq = self.max_seq;

        // Order of sequence numbers.
        if s > last_seq + 1 {
            self.missing.insert(last_seq + 1, s - 1);
        } else if s <= last_seq && self.last.is_some() {
            if self.take_missing(s) {
                self.problem(
                    s,
                    ProblemKind::Reordered,
                    format!("record {s} comes after record {last_seq}"),
                );
            } else {
                self.problem(
                    s,
                    ProblemKind::Inserted,
                    format!("a second record numbered {s}"),
                );
            }
        }
        self.max_seq = self.max_seq.max(s);

        // The record's own hash; if it is wrong, whether the record belongs at another seq.
        let genuine = chain_hash(s, &r.prev_hash, &r.event) == r.hash;
        let moved_from = if genuine {
            None
        } else {
            [-1i64, 1, -2, 2, -3, 3].into_iter().find(|d| {
                s.checked_add_signed(*d)
                    .is_some_and(|t| t > 0 && chain_hash(t, &r.prev_hash, &r.event) == r.hash)
            })
        };
        match moved_from {
            Some(offset) => self.moved(s, offset),
            None => {
                self.run = None;
                if !genuine {
                    self.problem(
                        s,
                        ProblemKind::Edited,
                        format!("record {s} does not match its hash"),
                    );
                }
            }
        }

        // The link to the previous record, when nothing above already explains a break.
        let reported_now = self.report.problems.len() + self.report.more_problems as usize > before;
        let expected_prev = self.last.as_ref().map_or(GENESIS_HASH, |(_, h)| h.as_str());
        let gap = s > last_seq + 1;
        if r.prev_hash != expected_prev && !reported_now && !self.last_reported && !gap {
            match self.recent.iter().find(|(h, _)| *h == r.prev_hash) {
                Some(&(_, j)) => self.problem(
                    j + 1,
                    ProblemKind::Inserted,
                    format!("record {s} links to record {j}: the records between were inserted"),
                ),
                None => {
                    let p = s.saturating_sub(1);
                    self.problem(
                        p,
                        ProblemKind::Edited,
                        format!("record {s} does not link to record {p}: {p} was rewritten"),
                    )
                }
            }
        }

        // Signed checkpoints at this seq.
        if let Some(hashes) = self.signed.get(&s) {
            self.seen_signed.insert(s);
            if hashes.iter().all(|h| *h == r.hash) {
                self.matched.insert(s);
            }
        }

        self.last_reported = self.report.problems.len() + self.report.more_problems as usize
            > before
            || self.run.is_some();
        self.last = Some((s, r.hash.clone()));
        self.recent.push_back((r.hash.clone(), s));
        if self.recent.len() > RECENT {
            self.recent.pop_front();
        }
    }

    /// A record whose hash is valid at `s + offset`, not at its own `s`.
    fn moved(&mut self, s: u64, offset: i64) {
        match self.run {
            Some((o, len)) if o == offset => self.run = Some((o, len + 1)),
            // A record one too late right after one one too early: the two were swapped.
            Some((1, 1)) if offset == -1 => {
                if let Some(p) = self.report.problems.last_mut()
                    && p.kind == ProblemKind::Deleted
                    && p.seq + 1 == s
                {
                    p.kind = ProblemKind::Reordered;
                    p.detail = format!("records {} and {s} are swapped", p.seq);
                }
                self.run = Some((0, 0));
            }
            _ => {
                self.run = Some((offset, 1));
                let (seq, kind, detail) = match offset {
                    1 => (
                        s,
                        ProblemKind::Deleted,
                        format!("record {s} is missing; later records were renumbered"),
                    ),
                    -1 => (
                        s - 1,
                        ProblemKind::Inserted,
                        format!(
                            "a record was inserted at {}; later records were renumbered",
                            s - 1
                        ),
                    ),
                    _ => (
                        s,
                        ProblemKind::Reordered,
                        format!("record {s} belongs at {}", s.saturating_add_signed(offset)),
                    ),
                };
                self.problem(seq, kind, detail);
            }
        }
    }

    /// Removes `s` from the missing ranges; whether it was there.
    fn take_missing(&mut self, s: u64) -> bool {
        let Some((&start, &end)) = self.missing.range(..=s).next_back() else {
            return false;
        };
        if s > end {
            return false;
        }
        self.missing.remove(&start);
        if start < s {
            self.missing.insert(start, s - 1);
        }
        if s < end {
            self.missing.insert(s + 1, end);
        }
        true
    }

    fn finish(mut self) -> VerifyReport {
        for (start, end) in std::mem::take(&mut self.missing) {
            let detail = if start == end {
                format!("record {start} is missing")
            } else {
                format!("records {start} to {end} are missing")
            };
            self.problem(start, ProblemKind::Deleted, detail);
        }
        let head = self.max_seq;
        let mut truncated_from: Option<u64> = None;
        let signed: Vec<u64> = self.signed.keys().copied().collect();
        for seq in signed {
            if seq > head {
                truncated_from.get_or_insert(seq);
            } else if !self.matched.contains(&seq) {
                let detail = if self.seen_signed.contains(&seq) {
                    format!("record {seq} differs from its signed checkpoint")
                } else {
                    format!("record {seq}, covered by a signed checkpoint, is missing")
                };
                self.problem(seq, ProblemKind::CheckpointMismatch, detail);
            } else {
                self.report.last_signed_seq = self.report.last_signed_seq.max(seq);
            }
        }
        if let Some(cp) = truncated_from {
            self.problem(
                head + 1,
                ProblemKind::Truncated,
                format!("a signed checkpoint covers record {cp} but the log ends at {head}"),
            );
        }
        self.report.head_seq = head;
        self.report.problems.sort_by_key(|p| p.seq);
        self.report
    }
}

fn check_signature(cp: &Checkpoint, trusted: &[String]) -> Result<(), String> {
    if cp.alg != ALG {
        return Err(format!("unknown signature algorithm {:?}", cp.alg));
    }
    if !trusted.iter().any(|k| k.eq_ignore_ascii_case(&cp.key_id)) {
        return Err(format!("signed by an untrusted key {}", cp.key_id));
    }
    let key_bytes: [u8; 32] = hex::decode(&cp.key_id)
        .ok()
        .and_then(|b| b.try_into().ok())
        .ok_or("malformed key id")?;
    let key = VerifyingKey::from_bytes(&key_bytes).map_err(|e| e.to_string())?;
    let sig_bytes: [u8; 64] = hex::decode(&cp.signature)
        .ok()
        .and_then(|b| b.try_into().ok())
        .ok_or("malformed signature")?;
    key.verify_strict(
        &checkpoint_message(cp.seq, &cp.hash, cp.time_ms),
        &Signature::from_bytes(&sig_bytes),
    )
    .map_err(|_| "invalid signature".to_owned())
}

#[cfg(test)]
mod tests;
