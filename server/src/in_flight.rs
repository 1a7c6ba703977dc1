//! The signature-cache entries larder-signer is being asked for right
//! now, so that a narinfo whose signature is on its way (in a batch
//! signed ahead, or asked by another request) waits for that answer
//! instead of asking the signer again: a fresh server's first client, and
//! every client of paths just pushed, would otherwise send one round trip
//! per narinfo beside the batch that already holds it.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use tokio::sync::watch;

use crate::signature_log::EntryKey;

/// The entries being asked for, each with the channel its request closes
/// when it ends.
#[derive(Default)]
pub struct InFlight {
    entries: Mutex<HashMap<EntryKey, watch::Receiver<()>>>,
}

/// One request's claim on its entries. When it is dropped (answered,
/// failed or cancelled alike) they leave [`InFlight`] and every waiter
/// wakes, to find the answer in the signature cache or ask itself.
pub struct Claim<'a> {
    owner: &'a InFlight,
    keys: Vec<EntryKey>,
    done: watch::Receiver<()>,
    /// Dropped last: closing it wakes the waiters.
    _close: watch::Sender<()>,
}

impl InFlight {
    /// Claim `keys` for one request; entries another request already
    /// holds stay with it.
    pub fn claim(&self, keys: &[EntryKey]) -> Claim<'_> {
        let (close, done) = watch::channel(());
        let mut entries = lock(&self.entries);
        let mut claimed = Vec::with_capacity(keys.len());
        for key in keys {
            if !entries.contains_key(key) {
                entries.insert(*key, done.clone());
                claimed.push(*key);
            }
        }
        Claim {
            owner: self,
            keys: claimed,
            done,
            _close: close,
        }
    }

    /// Wait, at most `timeout`, for the request holding `key` to end;
    /// at once when none does. True when there was one to wait for.
    pub async fn wait_for(&self, key: &EntryKey, timeout: Duration) -> bool {
        let Some(mut done) = lock(&self.entries).get(key).cloned() else {
            return false;
        };
        // Never sent on: `changed` returns when the sender is dropped.
        let _ = tokio::time::timeout(timeout, done.changed()).await;
        true
    }
}

impl Drop for Claim<'_> {
    fn drop(&mut self) {
        let mut entries = lock(&self.owner.entries);
        for key in &self.keys {
            if entries
                .get(key)
                .is_some_and(|rx| rx.same_channel(&self.done))
            {
                entries.remove(key);
            }
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // The map is consistent after every statement: a panic cannot break it.
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn waiters_wake_when_the_claim_ends_and_entries_are_freed() {
        let in_flight = InFlight::default();
        let (a, b) = ([1u8; 32], [2u8; 32]);
        assert!(!in_flight.wait_for(&a, Duration::from_secs(5)).await);
        let first = in_flight.claim(&[a]);
        // `a` stays with the first claim; `b` is the second's.
        let second = in_flight.claim(&[a, b]);
        assert_eq!(second.keys, [b]);
        let waiter = in_flight.wait_for(&a, Duration::from_secs(60));
        tokio::pin!(waiter);
        assert!(futures_util::poll!(waiter.as_mut()).is_pending());
        drop(first);
        assert!(waiter.await);
        assert!(!in_flight.wait_for(&a, Duration::from_secs(5)).await);
        drop(second);
        assert!(lock(&in_flight.entries).is_empty());
    }

    #[tokio::test]
    async fn a_waiter_gives_up_at_its_timeout() {
        let in_flight = InFlight::default();
        let _held = in_flight.claim(&[[3u8; 32]]);
        assert!(
            in_flight
                .wait_for(&[3u8; 32], Duration::from_millis(1))
                .await
        );
    }
}
