//! Bounded per-thread memo tables keyed by text: what a pure function of a string returned, so
//! that training loops, which send the same requests and name the same devices step after step,
//! compute it once. Keys are hashed with FxHash (hashing the key is most of a lookup, and keys
//! come from this process, not from an adversary).

use rustc_hash::FxHashMap;

/// Values by their key text, holding keys of at most `limit` total weight; past it, the table
/// starts over (a training loop's working set is small, so the simplest eviction does).
pub struct Memo<V> {
    values: FxHashMap<Box<str>, V>,
    weight: usize,
    limit: usize,
}

impl<V: Clone> Memo<V> {
    /// An empty table that holds keys of at most `limit` total weight.
    pub fn new(limit: usize) -> Memo<V> {
        Memo { values: FxHashMap::default(), weight: 0, limit }
    }

    /// The value remembered for `key`.
    pub fn get(&self, key: &str) -> Option<V> {
        self.values.get(key).cloned()
    }

    /// Remembers `value` for `key`, which weighs `weight` (a key heavier than the limit is not kept).
    pub fn insert(&mut self, key: &str, value: V, weight: usize) {
        if weight > self.limit {
            return;
        }
        if self.weight + weight > self.limit {
            self.values.clear();
            self.weight = 0;
        }
        self.weight += weight;
        self.values.insert(key.into(), value);
    }
}
