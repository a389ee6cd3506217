//! An LRU cache of model responses for deterministic requests (temperature 0): the same
//! endpoint, model, parameters and messages give the same answer, so it is served from memory.
//! Bounded in bytes; counts hits and misses. Off unless an endpoint sets `cache.max_bytes`.

use crate::model::types::ChatResponse;
use parking_lot::Mutex;
use std::collections::{BTreeMap, HashMap};

struct Entry {
    key: Vec<u8>,
    response: ChatResponse,
    bytes: usize,
    tick: u64,
}

#[derive(Default)]
struct State {
    by_hash: HashMap<u64, Entry>,
    lru: BTreeMap<u64, u64>, // tick -> hash
    bytes: usize,
    tick: u64,
    hits: u64,
    misses: u64,
    evictions: u64,
}

/// Cache statistics.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CacheStats {
    /// Requests answered from the cache.
    pub hits: u64,
    /// Cacheable requests that went to the provider.
    pub misses: u64,
    /// Entries dropped to stay within the byte bound.
    pub evictions: u64,
    /// Entries held.
    pub entries: usize,
    /// Bytes held (keys and responses).
    pub bytes: usize,
    /// The bound.
    pub max_bytes: usize,
}

/// A byte-bounded LRU map from request bytes to responses.
pub struct ResponseCache {
    max_bytes: usize,
    state: Mutex<State>,
}

fn hash(key: &[u8]) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    key.hash(&mut h);
    h.finish()
}

fn response_bytes(r: &ChatResponse) -> usize {
    r.content.len()
        + r.model.len()
        + r.finish_reason.len()
        + r.tool_calls
            .iter()
            .map(|c| c.id.len() + c.name.len() + c.arguments.len())
            .sum::<usize>()
        + 128
}

impl ResponseCache {
    /// A cache holding at most `max_bytes`.
    pub fn new(max_bytes: usize) -> ResponseCache {
        ResponseCache {
            max_bytes,
            state: Mutex::new(State::default()),
        }
    }

    /// The response stored for `key` (the full request bytes), counting a hit or a miss.
    pub fn get(&self, key: &[u8]) -> Option<ChatResponse> {
        let h = hash(key);
        let mut s = self.state.lock();
        s.tick += 1;
        let tick = s.tick;
        let found = match s.by_hash.get_mut(&h) {
            Some(e) if e.key == key => {
                let old = e.tick;
                e.tick = tick;
                Some((old, e.response.clone()))
            }
            _ => None,
        };
        match found {
            Some((old, r)) => {
                s.lru.remove(&old);
                s.lru.insert(tick, h);
                s.hits += 1;
                Some(r)
            }
            None => {
                s.misses += 1;
                None
            }
        }
    }

    /// Stores a response, evicting the least recently used entries to stay within the bound.
    /// A response larger than the whole bound is not stored.
    pub fn put(&self, key: Vec<u8>, response: ChatResponse) {
        let bytes = key.len() + response_bytes(&response);
        if bytes > self.max_bytes {
            return;
        }
        let h = hash(&key);
        let mut s = self.state.lock();
        if let Some(old) = s.by_hash.remove(&h) {
            s.lru.remove(&old.tick);
            s.bytes -= old.bytes;
        }
        while s.bytes + bytes > self.max_bytes {
            let Some((&t, &victim)) = s.lru.iter().next() else {
                break;
            };
            s.lru.remove(&t);
            if let Some(e) = s.by_hash.remove(&victim) {
                s.bytes -= e.bytes;
                s.evictions += 1;
            }
        }
        s.tick += 1;
        let tick = s.tick;
        s.lru.insert(tick, h);
        s.bytes += bytes;
        s.by_hash.insert(
            h,
            Entry {
                key,
                response,
                bytes,
                tick,
            },
        );
    }

    /// Statistics.
    pub fn stats(&self) -> CacheStats {
        let s = self.state.lock();
        CacheStats {
            hits: s.hits,
            misses: s.misses,
            evictions: s.evictions,
            entries: s.by_hash.len(),
            bytes: s.bytes,
            max_bytes: self.max_bytes,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resp(text: &str) -> ChatResponse {
        ChatResponse {
            content: text.into(),
            ..Default::default()
        }
    }

    #[test]
    fn lru_with_byte_bound_and_counts() {
        let c = ResponseCache::new(3 * (16 + 128 + 8));
        assert!(c.get(b"k1").is_none());
        c.put(b"k1".to_vec(), resp("one"));
        c.put(b"k2".to_vec(), resp("two"));
        c.put(b"k3".to_vec(), resp("three"));
        assert_eq!(c.get(b"k1").unwrap().content, "one"); // k1 is now the most recent
        c.put(b"k4".to_vec(), resp("four")); // evicts k2, the least recently used
        assert!(c.get(b"k2").is_none());
        assert_eq!(c.get(b"k3").unwrap().content, "three");
        let st = c.stats();
        assert_eq!((st.hits, st.misses, st.evictions, st.entries), (2, 2, 1, 3));
        assert!(st.bytes <= st.max_bytes);
        c.put(vec![0u8; 10_000], resp("too big"));
        assert_eq!(c.stats().entries, 3);
    }
}
