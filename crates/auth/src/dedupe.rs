//! [`AccessDedupe`]: one audit event per study access per actor per few minutes.
//!
//! A viewer reading a CT study fetches hundreds of frames; auditing each would multiply the
//! audit log's writes by that and cost the archive its read speed. The protocol layers ask
//! [`AccessDedupe::first_in_window`] before writing a read event (`retrieve`, `query` of a
//! study, `link-use` page loads): only the first access of `(actor, action, org, study)` within
//! the window (default 5 minutes) is written.
//!
//! The memory is per process and bounded ([`AccessDedupe::with_capacity`]): when full, expired
//! entries go first, then the oldest. Forgetting an entry early or running several nodes only
//! means a second event for the same access, which is harmless (the audit trail then says a
//! little more than needed, never less), so nothing here needs to be shared between nodes.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;

/// Default window: 5 minutes.
pub const DEFAULT_WINDOW_MS: i64 = 5 * 60 * 1000;
/// Default capacity: entries remembered at most.
pub const DEFAULT_CAPACITY: usize = 100_000;

type Key = (String, String, String, String);

/// Remembers recent study accesses to audit each once per window.
pub struct AccessDedupe {
    window_ms: i64,
    capacity: usize,
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    /// Key → time of the audited access.
    seen: HashMap<Key, i64>,
    /// Keys in the order they were audited (with that time), for expiry and eviction.
    order: VecDeque<(Key, i64)>,
}

impl Default for AccessDedupe {
    fn default() -> Self {
        Self::new(DEFAULT_WINDOW_MS)
    }
}

impl AccessDedupe {
    /// A dedupe with `window_ms` and the default capacity.
    pub fn new(window_ms: i64) -> Self {
        Self::with_capacity(window_ms, DEFAULT_CAPACITY)
    }

    /// A dedupe remembering at most `capacity` accesses.
    pub fn with_capacity(window_ms: i64, capacity: usize) -> Self {
        AccessDedupe {
            window_ms,
            capacity: capacity.max(1),
            inner: Mutex::new(Inner::default()),
        }
    }

    /// Whether this access should be audited: true for the first `(actor_id, action, org,
    /// study_uid)` in the window, false for repeats within `window_ms` of the audited one.
    pub fn first_in_window(
        &self,
        actor_id: &str,
        action: &str,
        org: &str,
        study_uid: &str,
        now_ms: i64,
    ) -> bool {
        let key = (
            actor_id.to_owned(),
            action.to_owned(),
            org.to_owned(),
            study_uid.to_owned(),
        );
        let mut inner = self.inner.lock().expect("dedupe lock");
        if let Some(&t) = inner.seen.get(&key)
            && now_ms >= t
            && now_ms - t < self.window_ms
        {
            return false;
        }
        inner.expire(now_ms - self.window_ms);
        while inner.seen.len() >= self.capacity {
            inner.evict_oldest();
        }
        inner.seen.insert(key.clone(), now_ms);
        inner.order.push_back((key, now_ms));
        true
    }

    /// Forgets an access recorded by [`Self::first_in_window`], so that the next one is audited
    /// again (used when the access turned out to read nothing: a study not visible yet must not
    /// hide the read that follows a grant or break-glass).
    pub fn forget(&self, actor_id: &str, action: &str, org: &str, study_uid: &str) {
        let key = (
            actor_id.to_owned(),
            action.to_owned(),
            org.to_owned(),
            study_uid.to_owned(),
        );
        self.inner.lock().expect("dedupe lock").seen.remove(&key);
    }

    /// Accesses currently remembered.
    pub fn len(&self) -> usize {
        self.inner.lock().expect("dedupe lock").seen.len()
    }

    /// Whether nothing is remembered.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Inner {
    /// Drops entries audited at or before `cutoff`.
    fn expire(&mut self, cutoff: i64) {
        while self.order.front().is_some_and(|(_, t)| *t <= cutoff) {
            self.evict_oldest();
        }
    }

    fn evict_oldest(&mut self) {
        if let Some((key, t)) = self.order.pop_front() {
            // A key re-audited later has a newer queue entry; only drop the map entry when it
            // belongs to this one.
            if self.seen.get(&key) == Some(&t) {
                self.seen.remove(&key);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn once_per_window() {
        let d = AccessDedupe::new(1000);
        assert!(d.first_in_window("u1", "retrieve", "a", "1.2", 0));
        assert!(!d.first_in_window("u1", "retrieve", "a", "1.2", 999));
        assert!(d.first_in_window("u1", "retrieve", "a", "1.2", 1000));
        // Other actor, action, org or study: separate.
        assert!(d.first_in_window("u2", "retrieve", "a", "1.2", 1001));
        assert!(d.first_in_window("u1", "export", "a", "1.2", 1001));
        assert!(d.first_in_window("u1", "retrieve", "b", "1.2", 1001));
        assert!(d.first_in_window("u1", "retrieve", "a", "1.3", 1001));
        assert!(!d.first_in_window("u1", "retrieve", "a", "1.2", 1999));
    }

    #[test]
    fn bounded() {
        let d = AccessDedupe::with_capacity(1_000_000, 3);
        for (i, s) in ["1", "2", "3", "4"].iter().enumerate() {
            assert!(d.first_in_window("u", "retrieve", "a", s, i as i64));
        }
        assert_eq!(d.len(), 3);
        // The oldest was evicted: audited again (harmless), the others still deduplicated.
        assert!(d.first_in_window("u", "retrieve", "a", "1", 10));
        assert!(!d.first_in_window("u", "retrieve", "a", "4", 10));
        assert!(d.len() <= 3);
    }

    #[test]
    fn expired_entries_are_dropped() {
        let d = AccessDedupe::new(10);
        for i in 0..100 {
            d.first_in_window("u", "retrieve", "a", &i.to_string(), i * 100);
        }
        assert_eq!(d.len(), 1);
    }

    #[test]
    fn clock_going_backwards_audits_again() {
        let d = AccessDedupe::new(1000);
        assert!(d.first_in_window("u", "retrieve", "a", "1", 5000));
        assert!(d.first_in_window("u", "retrieve", "a", "1", 4000));
    }
}
