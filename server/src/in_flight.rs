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
/// when it ends (true on it: the signer was unavailable).
#[derive(Default)]
pub struct InFlight {
    entries: Mutex<HashMap<EntryKey, watch::Receiver<bool>>>,
}

/// One request's claim on its entries. When it is dropped (answered,
/// failed or cancelled alike) they leave [`InFlight`] and every waiter
/// wakes, to find the answer in the signature cache, or learn that the
/// signer was unavailable ([`Claim::unavailable`]), or else ask itself.
pub struct Claim<'a> {
    owner: &'a InFlight,
    keys: Vec<EntryKey>,
    done: watch::Receiver<bool>,
    /// Dropped last: closing it wakes the waiters.
    close: watch::Sender<bool>,
}

/// The request a waiter waits for: see [`InFlight::wait`].
pub struct Holder(watch::Receiver<bool>);

impl InFlight {
    /// Claim `keys` for one request; entries another request already
    /// holds stay with it.
    pub fn claim(&self, keys: &[EntryKey]) -> Claim<'_> {
        let (close, done) = watch::channel(false);
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
            close,
        }
    }

    /// Claim `key`, or, when another request holds it, that request
    /// (one step: two requests never both think they hold it).
    pub fn claim_or_holder(&self, key: &EntryKey) -> Result<Claim<'_>, Holder> {
        if let Some(holder) = lock(&self.entries).get(key) {
            return Err(Holder(holder.clone()));
        }
        // Another request may claim between the two locks: then this
        // one holds nothing and asks beside it, as before this module.
        Ok(self.claim(&[*key]))
    }

    /// Wait, at most `timeout`, for `holder`'s request to end. True when
    /// the signer was unavailable to it, or it is still waiting after
    /// `timeout` (a hung signer): the caller then has its answer, and a
    /// hung signer costs it one timeout, not two.
    pub async fn wait(holder: Holder, timeout: Duration) -> bool {
        let Holder(mut done) = holder;
        // `changed` returns when the sender is dropped (or marks a failure).
        match tokio::time::timeout(timeout, done.changed()).await {
            Err(_) => true,
            Ok(_) => *done.borrow(),
        }
    }
}

impl Claim<'_> {
    /// Whether this claim holds `key` (another request held it first
    /// otherwise).
    pub fn holds(&self, key: &EntryKey) -> bool {
        self.keys.contains(key)
    }

    /// The signer was unavailable to this request: waiters say so too.
    pub fn unavailable(&self) {
        self.close.send_replace(true);
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

    const LONG: Duration = Duration::from_secs(60);

    #[tokio::test]
    async fn waiters_wake_when_the_claim_ends_and_entries_are_freed() {
        let in_flight = InFlight::default();
        let (a, b) = ([1u8; 32], [2u8; 32]);
        let first = in_flight.claim(&[a]);
        // `a` stays with the first claim; `b` is the second's.
        let second = in_flight.claim(&[a, b]);
        assert_eq!(second.keys, [b]);
        assert!(second.holds(&b) && !second.holds(&a) && first.holds(&a));
        let Err(holder) = in_flight.claim_or_holder(&a) else {
            panic!("a is held")
        };
        let waiter = InFlight::wait(holder, LONG);
        tokio::pin!(waiter);
        assert!(futures_util::poll!(waiter.as_mut()).is_pending());
        drop(first);
        assert!(!waiter.await, "an answered claim is no failure");
        assert!(in_flight.claim_or_holder(&a).is_ok(), "a is free again");
        drop(second);
        assert!(lock(&in_flight.entries).is_empty());
    }

    #[tokio::test]
    async fn a_failed_or_hung_holder_is_the_waiters_answer() {
        let in_flight = InFlight::default();
        let key = [3u8; 32];
        let claim = in_flight.claim(&[key]);
        let Err(holder) = in_flight.claim_or_holder(&key) else {
            panic!("held")
        };
        // Still waiting at the timeout: a hung signer.
        assert!(InFlight::wait(holder, Duration::from_millis(1)).await);
        let Err(holder) = in_flight.claim_or_holder(&key) else {
            panic!("held")
        };
        claim.unavailable();
        drop(claim);
        assert!(InFlight::wait(holder, LONG).await);
    }
}
