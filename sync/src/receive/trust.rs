//! Per-pusher signature requirements (`--require-sigs-from NAME=KEY`).
//!
//! A token holder is trusted to add paths. A pusher named here must, in
//! addition, sign every narinfo it uploads with one of its own keys: a
//! stolen token alone then cannot add paths. All verification goes
//! through [`check_signatures`], the one place in the receiver that
//! verifies ed25519 signatures (larder-store knows their syntax only).

use std::collections::HashMap;

use larder_store::fingerprint::fingerprint;
use larder_store::narinfo::NarInfo;
use larder_store::public_key::PublicKey;
use larder_store::signature::Signature;

use super::error::{ReceiveError, ReceiveResult};
use crate::error::SyncError;

/// Which pushers must sign, with which keys.
#[derive(Debug, Default, Clone)]
pub struct SigPolicy {
    required: HashMap<String, Vec<PublicKey>>,
}

impl SigPolicy {
    /// Parse `NAME=name:base64` flags; every NAME must be a known pusher.
    pub fn parse<'a>(
        flags: &[String],
        pushers: impl Iterator<Item = &'a str> + Clone,
    ) -> Result<SigPolicy, SyncError> {
        let mut required: HashMap<String, Vec<PublicKey>> = HashMap::new();
        for flag in flags {
            let (name, key) = flag.split_once('=').ok_or_else(|| {
                SyncError::Usage(format!(
                    "--require-sigs-from {flag:?}: expected PUSHER=keyname:base64"
                ))
            })?;
            if !pushers.clone().any(|p| p == name) {
                return Err(SyncError::Usage(format!(
                    "--require-sigs-from: no pusher named {name:?} in the tokens file"
                )));
            }
            let keys = crate::uri::parse_keys(&[key.to_owned()])?;
            required.entry(name.to_owned()).or_default().extend(keys);
        }
        Ok(SigPolicy { required })
    }

    /// The keys `pusher` must sign with; empty when none are required.
    pub fn keys_for(&self, pusher: &str) -> &[PublicKey] {
        self.required.get(pusher).map_or(&[], Vec::as_slice)
    }
}

/// With `keys` non-empty: one of the narinfo's `Sig:` lines must be a
/// valid signature by one of `keys` over the path's fingerprint.
pub fn check_signatures(keys: &[PublicKey], info: &NarInfo) -> ReceiveResult<()> {
    if keys.is_empty() {
        return Ok(());
    }
    let fp = fingerprint(
        &info.store_dir,
        &info.store_path,
        &info.nar_hash,
        info.nar_size,
        &info.references,
    );
    let signed = info
        .sigs
        .iter()
        .filter_map(|s| s.parse::<Signature>().ok())
        .any(|sig| keys.iter().any(|k| verifies(k, &fp, &sig)));
    if signed {
        Ok(())
    } else {
        let names: Vec<&str> = keys.iter().map(PublicKey::name).collect();
        Err(ReceiveError::Signature(format!(
            "{} is not signed by this pusher's key ({}); sign it before pushing (`nix store sign`)",
            info.store_path,
            names.join(", ")
        )))
    }
}

/// Whether `sig` is `key`'s signature of `fingerprint`: the key names match
/// and the ed25519 signature verifies (strictly, as libsodium's
/// `crypto_sign_verify_detached` in Nix's `verifyDetached` does).
fn verifies(key: &PublicKey, fingerprint: &str, sig: &Signature) -> bool {
    if sig.key_name() != key.name() {
        return false;
    }
    let Ok(verifying) = ed25519_dalek::VerifyingKey::from_bytes(key.bytes()) else {
        return false;
    };
    let sig = ed25519_dalek::Signature::from_bytes(sig.bytes());
    verifying
        .verify_strict(fingerprint.as_bytes(), &sig)
        .is_ok()
}
