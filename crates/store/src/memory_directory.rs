//! In-memory [`Directory`] and [`AuditLog`]: the reference models every durable backend must
//! agree with (`vesalius-store-sqlite` runs the same operations against both and compares the
//! answers). Nothing here survives a restart.
//!
//! ## Invariants
//! - [`MemoryAuditLog`] holds records `seq = 1..=n` in a vector under one lock; an append
//!   numbers and chains its events ([`chain_hash`]) while holding it, so the chain is linear
//!   however many tasks append at once.
//! - [`MemoryDirectory::apply`] applies its changes to a copy of the state; only when every
//!   change succeeded does it append the audit events and install the copy, both under the
//!   state lock. A failing change leaves neither a change nor an event behind.
//! - The audit lock is always taken last (directory or index first), so the two never deadlock.
//!
//! ## Layout
//! Records in `BTreeMap`s keyed like the SQLite tables (ids, username uniqueness checked on
//! write); lists are sorted on read in the order [`crate::directory`] documents.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};

use async_trait::async_trait;

use crate::audit::{
    AuditEvent, AuditFilter, AuditLog, AuditRecord, Checkpoint, GENESIS_HASH, chain_hash,
};
use crate::directory::*;
use crate::error::{Error, Result};

/// The audit chain in a vector.
#[derive(Default)]
pub struct MemoryAuditLog {
    inner: Mutex<AuditState>,
}

#[derive(Default)]
struct AuditState {
    records: Vec<AuditRecord>,
    checkpoints: Vec<Checkpoint>,
}

impl MemoryAuditLog {
    /// An empty chain.
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> MutexGuard<'_, AuditState> {
        self.inner.lock().expect("audit lock")
    }

    /// Chains and appends `events` in one step (used by [`MemoryDirectory`] and
    /// [`crate::memory::MemoryIndex`] while they hold their own lock).
    pub(crate) fn append_now(&self, events: Vec<AuditEvent>) {
        if events.is_empty() {
            return;
        }
        let mut st = self.lock();
        for event in events {
            let (seq, prev_hash) = match st.records.last() {
                Some(r) => (r.seq + 1, r.hash.clone()),
                None => (1, GENESIS_HASH.to_owned()),
            };
            let hash = chain_hash(seq, &prev_hash, &event);
            st.records.push(AuditRecord {
                seq,
                prev_hash,
                hash,
                event,
            });
        }
    }

    /// Gives `f` the stored records to edit, delete, insert or reorder: **only for tamper tests**
    /// of the chain verifier. Nothing in the product calls it.
    pub fn tamper_with(&self, f: impl FnOnce(&mut Vec<AuditRecord>)) {
        f(&mut self.lock().records)
    }
}

#[async_trait]
impl AuditLog for MemoryAuditLog {
    async fn append(&self, events: Vec<AuditEvent>) -> Result<()> {
        self.append_now(events);
        Ok(())
    }

    async fn records(&self, from: u64, limit: u32) -> Result<Vec<AuditRecord>> {
        let end = from.saturating_add(u64::from(limit));
        Ok(self
            .lock()
            .records
            .iter()
            .filter(|r| r.seq >= from && r.seq < end)
            .cloned()
            .collect())
    }

    async fn head(&self) -> Result<Option<AuditRecord>> {
        Ok(self.lock().records.last().cloned())
    }

    async fn search(&self, filter: &AuditFilter) -> Result<Vec<AuditRecord>> {
        Ok(self
            .lock()
            .records
            .iter()
            .rev()
            .filter(|r| filter.before_seq.is_none_or(|b| r.seq < b))
            .filter(|r| filter.matches(&r.event))
            .take(filter.effective_limit() as usize)
            .cloned()
            .collect())
    }

    async fn put_checkpoint(&self, checkpoint: Checkpoint) -> Result<()> {
        let mut st = self.lock();
        let expected = if checkpoint.seq == 0 {
            GENESIS_HASH.to_owned()
        } else {
            st.records
                .iter()
                .find(|r| r.seq == checkpoint.seq)
                .map(|r| r.hash.clone())
                .ok_or_else(|| Error::NotFound(format!("audit record {}", checkpoint.seq)))?
        };
        if expected != checkpoint.hash {
            return Err(Error::BadRequest(format!(
                "checkpoint hash differs from audit record {}",
                checkpoint.seq
            )));
        }
        st.checkpoints.push(checkpoint);
        // Stable: checkpoints of one seq stay in the order they were stored.
        st.checkpoints.sort_by_key(|c| c.seq);
        Ok(())
    }

    async fn checkpoints(&self) -> Result<Vec<Checkpoint>> {
        Ok(self.lock().checkpoints.clone())
    }
}

/// The directory in maps, appending its audit events to a [`MemoryAuditLog`].
pub struct MemoryDirectory {
    state: Mutex<State>,
    audit: Arc<MemoryAuditLog>,
}

#[derive(Default, Clone)]
struct State {
    orgs: BTreeMap<String, Org>,
    users: BTreeMap<String, User>,
    tokens: BTreeMap<String, ApiToken>,
    sessions: BTreeMap<String, Session>,
    grants: BTreeMap<String, Grant>,
    aes: BTreeMap<String, AeEntry>,
    share_links: BTreeMap<String, ShareLink>,
    upload_links: BTreeMap<String, UploadLink>,
    settings: BTreeMap<String, String>,
    throttle: BTreeMap<String, ThrottleRecord>,
}

fn missing(what: &str, id: &str) -> Error {
    Error::NotFound(format!("{what} {id}"))
}

impl State {
    fn apply(&mut self, change: DirectoryChange) -> Result<()> {
        use DirectoryChange as C;
        match change {
            C::PutOrg(o) => {
                self.orgs.insert(o.id.clone(), o);
            }
            C::PutUser(u) => {
                let others = || self.users.values().filter(|o| o.id != u.id);
                if others().any(|o| o.username == u.username) {
                    return Err(Error::BadRequest(format!(
                        "username {} is taken",
                        u.username
                    )));
                }
                if u.oidc.is_some() && others().any(|o| o.oidc == u.oidc) {
                    return Err(Error::BadRequest(
                        "OpenID Connect identity is linked to another user".into(),
                    ));
                }
                self.users.insert(u.id.clone(), u);
            }
            C::DeleteUser(id) => {
                self.users.remove(&id).ok_or_else(|| missing("user", &id))?;
                self.tokens.retain(|_, t| t.user_id != id);
                self.sessions.retain(|_, s| s.user_id != id);
            }
            C::PutToken(t) => {
                self.tokens.insert(t.id.clone(), t);
            }
            C::RevokeToken(id) => {
                self.tokens
                    .get_mut(&id)
                    .ok_or_else(|| missing("token", &id))?
                    .revoked = true;
            }
            C::PutSession(s) => {
                self.sessions.insert(s.id_hash.clone(), s);
            }
            C::DeleteSession(id_hash) => {
                self.sessions.remove(&id_hash);
            }
            C::SetSessionOrg { id_hash, org } => {
                self.sessions
                    .get_mut(&id_hash)
                    .ok_or_else(|| missing("session", &id_hash))?
                    .org = org;
            }
            C::PutGrant(g) => {
                self.grants.insert(g.id.clone(), g);
            }
            C::RevokeGrant(id) => {
                self.grants
                    .get_mut(&id)
                    .ok_or_else(|| missing("grant", &id))?
                    .revoked = true;
            }
            C::PutAe(a) => {
                self.aes.insert(a.ae_title.clone(), a);
            }
            C::DeleteAe(t) => {
                self.aes.remove(&t).ok_or_else(|| missing("AE title", &t))?;
            }
            C::PutShareLink(l) => {
                self.share_links.insert(l.id.clone(), l);
            }
            C::RevokeShareLink(id) => {
                self.share_links
                    .get_mut(&id)
                    .ok_or_else(|| missing("share link", &id))?
                    .revoked = true;
            }
            C::PutUploadLink(l) => {
                self.upload_links.insert(l.id.clone(), l);
            }
            C::RevokeUploadLink(id) => {
                self.upload_links
                    .get_mut(&id)
                    .ok_or_else(|| missing("upload link", &id))?
                    .revoked = true;
            }
            C::AddUploadBytes { id, bytes } => {
                self.upload_links
                    .get_mut(&id)
                    .ok_or_else(|| missing("upload link", &id))?
                    .add_used_bytes(bytes)?;
            }
            C::PutSetting { key, value } => {
                self.settings.insert(key, value);
            }
            C::DeleteSetting(key) => {
                self.settings.remove(&key);
            }
        }
        Ok(())
    }
}

fn sorted<T: Clone, K: Ord>(items: impl Iterator<Item = T>, key: impl Fn(&T) -> K) -> Vec<T> {
    let mut v: Vec<T> = items.collect();
    v.sort_by_key(|t| key(t));
    v
}

impl MemoryDirectory {
    /// An empty directory appending its audit events to `audit`.
    pub fn new(audit: Arc<MemoryAuditLog>) -> Self {
        MemoryDirectory {
            state: Mutex::new(State::default()),
            audit,
        }
    }

    /// The audit log the directory appends to.
    pub fn audit(&self) -> &Arc<MemoryAuditLog> {
        &self.audit
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().expect("directory lock")
    }
}

#[async_trait]
impl Directory for MemoryDirectory {
    async fn apply(&self, changes: Vec<DirectoryChange>, audit: Vec<AuditEvent>) -> Result<()> {
        let mut st = self.lock();
        let mut next = st.clone();
        for change in changes {
            next.apply(change)?;
        }
        self.audit.append_now(audit);
        *st = next;
        Ok(())
    }

    async fn orgs(&self) -> Result<Vec<Org>> {
        Ok(self.lock().orgs.values().cloned().collect())
    }

    async fn org(&self, id: &str) -> Result<Option<Org>> {
        Ok(self.lock().orgs.get(id).cloned())
    }

    async fn users(&self) -> Result<Vec<User>> {
        Ok(sorted(self.lock().users.values().cloned(), |u| {
            u.username.clone()
        }))
    }

    async fn user(&self, id: &str) -> Result<Option<User>> {
        Ok(self.lock().users.get(id).cloned())
    }

    async fn user_by_name(&self, username: &str) -> Result<Option<User>> {
        Ok(self
            .lock()
            .users
            .values()
            .find(|u| u.username == username)
            .cloned())
    }

    async fn user_by_oidc(&self, issuer: &str, subject: &str) -> Result<Option<User>> {
        Ok(self
            .lock()
            .users
            .values()
            .find(|u| {
                u.oidc
                    .as_ref()
                    .is_some_and(|(i, s)| i == issuer && s == subject)
            })
            .cloned())
    }

    async fn token(&self, id: &str) -> Result<Option<ApiToken>> {
        Ok(self.lock().tokens.get(id).cloned())
    }

    async fn tokens(&self, org: &str) -> Result<Vec<ApiToken>> {
        let st = self.lock();
        Ok(sorted(
            st.tokens.values().filter(|t| t.org == org).cloned(),
            |t| (t.created_ms, t.id.clone()),
        ))
    }

    async fn session(&self, id_hash: &str) -> Result<Option<Session>> {
        Ok(self.lock().sessions.get(id_hash).cloned())
    }

    async fn grants_for(&self, org: &str, user: &str) -> Result<Vec<Grant>> {
        let st = self.lock();
        let to_me = |g: &&Grant| match &g.grantee {
            Grantee::Org(o) => o == org,
            Grantee::User(u) => u == user,
        };
        Ok(sorted(st.grants.values().filter(to_me).cloned(), |g| {
            (g.created_ms, g.id.clone())
        }))
    }

    async fn grants_of(&self, owner_org: &str) -> Result<Vec<Grant>> {
        let st = self.lock();
        Ok(sorted(
            st.grants
                .values()
                .filter(|g| g.owner_org == owner_org)
                .cloned(),
            |g| (g.created_ms, g.id.clone()),
        ))
    }

    async fn ae(&self, ae_title: &str) -> Result<Option<AeEntry>> {
        Ok(self.lock().aes.get(ae_title).cloned())
    }

    async fn aes(&self) -> Result<Vec<AeEntry>> {
        Ok(self.lock().aes.values().cloned().collect())
    }

    async fn share_link(&self, id: &str) -> Result<Option<ShareLink>> {
        Ok(self.lock().share_links.get(id).cloned())
    }

    async fn share_links(&self, org: &str) -> Result<Vec<ShareLink>> {
        let st = self.lock();
        Ok(sorted(
            st.share_links.values().filter(|l| l.org == org).cloned(),
            |l| (l.created_ms, l.id.clone()),
        ))
    }

    async fn upload_link(&self, id: &str) -> Result<Option<UploadLink>> {
        Ok(self.lock().upload_links.get(id).cloned())
    }

    async fn upload_links(&self, org: &str) -> Result<Vec<UploadLink>> {
        let st = self.lock();
        Ok(sorted(
            st.upload_links.values().filter(|l| l.org == org).cloned(),
            |l| (l.created_ms, l.id.clone()),
        ))
    }

    async fn setting(&self, key: &str) -> Result<Option<String>> {
        Ok(self.lock().settings.get(key).cloned())
    }

    async fn throttle_fail(
        &self,
        key: &str,
        now_ms: i64,
        window_ms: i64,
        max_failures: u32,
        lock_ms: i64,
    ) -> Result<ThrottleState> {
        let mut st = self.lock();
        // Forget what no longer says anything, as the SQLite writer does.
        st.throttle.retain(|_, r| r.expires_ms() > now_ms);
        let r = st.throttle.get(key).copied().unwrap_or_default().fail(
            now_ms,
            window_ms,
            max_failures,
            lock_ms,
        );
        st.throttle.insert(key.to_owned(), r);
        Ok(r.state(now_ms))
    }

    async fn throttle_state(&self, key: &str, now_ms: i64) -> Result<ThrottleState> {
        Ok(self
            .lock()
            .throttle
            .get(key)
            .copied()
            .unwrap_or_default()
            .state(now_ms))
    }

    async fn throttle_reset(&self, key: &str) -> Result<()> {
        self.lock().throttle.remove(key);
        Ok(())
    }
}
