//! [`Lru`]: a least-recently-used cache bounded in bytes, for what a node may keep to go faster
//! and lose at any time (rendered images, responses of remote sites). Never state that another
//! node would need to see.

use std::collections::HashMap;
use std::sync::Mutex;

/// What a cached value weighs, in bytes.
pub trait Weigh {
    /// The value's size in bytes.
    fn weight(&self) -> usize;
}

impl Weigh for bytes::Bytes {
    fn weight(&self) -> usize {
        self.len()
    }
}

/// A least-recently-used cache bounded in bytes. Values larger than a quarter of the bound are
/// not kept.
pub struct Lru<V> {
    inner: Mutex<Inner<V>>,
    max_bytes: usize,
}

struct Inner<V> {
    entries: HashMap<String, (V, u64)>,
    tick: u64,
    bytes: usize,
}

impl<V: Weigh + Clone> Lru<V> {
    /// A cache holding at most `max_bytes`.
    pub fn new(max_bytes: usize) -> Self {
        Lru {
            inner: Mutex::new(Inner {
                entries: HashMap::new(),
                tick: 0,
                bytes: 0,
            }),
            max_bytes,
        }
    }

    /// The bound, in bytes.
    pub fn max_bytes(&self) -> usize {
        self.max_bytes
    }

    /// A cached value, marked as recently used.
    pub fn get(&self, key: &str) -> Option<V> {
        let mut c = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        c.tick += 1;
        let tick = c.tick;
        let e = c.entries.get_mut(key)?;
        e.1 = tick;
        Some(e.0.clone())
    }

    /// Stores a value, evicting the least recently used ones to stay within the bound.
    pub fn put(&self, key: String, value: V) {
        let weight = value.weight();
        if weight > self.max_bytes / 4 {
            return;
        }
        let mut c = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        c.tick += 1;
        let tick = c.tick;
        c.bytes += weight;
        if let Some((old, _)) = c.entries.insert(key, (value, tick)) {
            c.bytes -= old.weight();
        }
        while c.bytes > self.max_bytes {
            // A linear scan: the cache holds at most a few thousand entries.
            let Some(oldest) = c
                .entries
                .iter()
                .min_by_key(|(_, (_, t))| *t)
                .map(|(k, _)| k.clone())
            else {
                break;
            };
            if let Some((v, _)) = c.entries.remove(&oldest) {
                c.bytes -= v.weight();
            }
        }
    }

    /// Drops every entry whose key `stale` says is out of date (e.g. after a write to what it
    /// caches); answers how many were dropped.
    pub fn invalidate(&self, stale: impl Fn(&str) -> bool) -> usize {
        let mut c = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let keys: Vec<String> = c.entries.keys().filter(|k| stale(k)).cloned().collect();
        for k in &keys {
            if let Some((v, _)) = c.entries.remove(k) {
                c.bytes -= v.weight();
            }
        }
        keys.len()
    }

    /// Bytes held.
    pub fn bytes(&self) -> usize {
        self.inner.lock().unwrap_or_else(|p| p.into_inner()).bytes
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.inner
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entries
            .len()
    }

    /// True when nothing is cached.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    #[test]
    fn invalidate_drops_only_the_matching_entries() {
        let c = Lru::<Bytes>::new(4000);
        c.put("p\n/studies/1.2/metadata".into(), Bytes::from(vec![0; 100]));
        c.put("p\n/studies/1.3/metadata".into(), Bytes::from(vec![0; 50]));
        assert_eq!(c.invalidate(|k| k.contains("/studies/1.2/")), 1);
        assert!(c.get("p\n/studies/1.2/metadata").is_none());
        assert!(c.get("p\n/studies/1.3/metadata").is_some());
        assert_eq!(c.bytes(), 50);
    }

    #[test]
    fn evicts_least_recently_used_within_the_bound() {
        let c = Lru::<Bytes>::new(400);
        c.put("a".into(), Bytes::from(vec![0; 100]));
        c.put("b".into(), Bytes::from(vec![0; 100]));
        c.put("c".into(), Bytes::from(vec![0; 100]));
        assert!(c.get("a").is_some());
        c.put("d".into(), Bytes::from(vec![0; 100]));
        c.put("e".into(), Bytes::from(vec![0; 100]));
        assert!(c.get("b").is_none(), "b was least recently used");
        assert!(c.get("a").is_some());
        assert_eq!(c.len(), 4);
        assert_eq!(c.bytes(), 400);
        c.put("huge".into(), Bytes::from(vec![0; 101]));
        assert!(c.get("huge").is_none());
        c.put("a".into(), Bytes::from(vec![0; 50]));
        assert_eq!(c.bytes(), 350, "a replaced value is weighed again");
    }
}
