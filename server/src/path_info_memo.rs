//! A short-lived memo of store DB lookups for narinfo requests.
//!
//! Profiling 2000 sequential narinfo requests showed the DB lookup (a hop
//! to the blocking pool plus the SQLite query) at 49 µs of the 71 µs a
//! request spends in the server. Clients ask for the same narinfo again and
//! again (every `nix copy`, every CI runner), so paths found are kept for
//! `path-info-ttl-ms` (default 1 s): a path garbage-collected meanwhile
//! disappears that much later. Misses are never kept: a path pushed
//! through the same URL (`larder-sync receive` behind one proxy) is asked
//! for again by `nix copy` right after its upload, before it uploads what
//! refers to it, and must be found at once. NAR requests always ask the
//! DB.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use larder_store::StorePathHash;
use larder_store::db::PathInfo;

/// A lookup's answer: the path, or its absence.
pub type Answer = Option<Arc<PathInfo>>;

pub struct PathInfoMemo {
    ttl: Duration,
    max_entries: usize,
    entries: Mutex<HashMap<StorePathHash, (Instant, Answer)>>,
}

impl PathInfoMemo {
    pub fn new(ttl: Duration, max_entries: usize) -> Self {
        PathInfoMemo {
            ttl,
            max_entries,
            entries: Mutex::new(HashMap::new()),
        }
    }

    fn entries(&self) -> std::sync::MutexGuard<'_, HashMap<StorePathHash, (Instant, Answer)>> {
        // A map of immutable answers has no invariant a panic could break.
        self.entries.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The remembered answer, if there is a fresh one.
    pub fn get(&self, hash: &StorePathHash) -> Option<Answer> {
        if self.ttl.is_zero() {
            return None;
        }
        let entries = self.entries();
        let (at, answer) = entries.get(hash)?;
        (at.elapsed() < self.ttl).then(|| answer.clone())
    }

    /// Remember a found path; misses are not remembered (module docs).
    pub fn put(&self, hash: StorePathHash, answer: Answer) {
        if self.ttl.is_zero() || answer.is_none() {
            return;
        }
        let mut entries = self.entries();
        if entries.len() >= self.max_entries {
            // Dropping everything keeps this O(1) amortised and bounded;
            // the next lookups refill what is hot.
            entries.clear();
        }
        entries.insert(hash, (Instant::now(), answer));
    }
}

#[cfg(test)]
mod tests {
    use larder_store::Sha256Hash;

    use super::*;

    fn hash(c: char) -> StorePathHash {
        c.to_string().repeat(32).parse().unwrap()
    }

    /// A found path whose hash part is `c` repeated.
    fn found(c: char) -> Answer {
        let path = format!("{}-x", c.to_string().repeat(32));
        Some(Arc::new(PathInfo {
            id: 1,
            path: path.parse().unwrap(),
            nar_hash: Sha256Hash::digest(b""),
            nar_size: 0,
            references: Vec::new(),
            deriver: None,
            sigs: Vec::new(),
            ca: None,
            registration_time: 0,
            ultimate: false,
        }))
    }

    #[test]
    fn remembers_hits_within_bounds_and_never_misses() {
        let memo = PathInfoMemo::new(Duration::from_secs(3600), 2);
        assert!(memo.get(&hash('0')).is_none());
        memo.put(hash('0'), found('0'));
        assert_eq!(memo.get(&hash('0')), Some(found('0')));
        memo.put(hash('1'), found('1'));
        // Full: the next insert starts afresh.
        memo.put(hash('2'), found('2'));
        assert!(memo.get(&hash('0')).is_none());
        assert_eq!(memo.get(&hash('2')), Some(found('2')));
        // A miss is asked again next time: the path may arrive any moment.
        memo.put(hash('3'), None);
        assert!(memo.get(&hash('3')).is_none());
    }

    #[test]
    fn zero_ttl_remembers_nothing() {
        let memo = PathInfoMemo::new(Duration::ZERO, 10);
        memo.put(hash('0'), None);
        assert!(memo.get(&hash('0')).is_none());
    }
}
