//! What the signer agrees to sign: a canonical fingerprint whose path is
//! valid in the store with exactly that NAR hash, NAR size and references.
//! A compromised server can therefore only get signatures for what really
//! is in the store.

use larder_store::db::{PathInfo, StoreDb};
use larder_store::fingerprint::Fingerprint;
use larder_store::signer_proto::{Refusal, RefusalCode};

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Policy {
    /// Sign only fingerprints that match the store DB exactly.
    Store,
    /// Sign any well-formed fingerprint. Dangerous: for tests and migrations.
    Any,
}

fn refuse(code: RefusalCode, reason: String) -> Refusal {
    Refusal { code, reason }
}

/// Check `text` and return the fingerprint to sign, or why not.
pub async fn check(policy: Policy, db: &StoreDb, text: &str) -> Result<Fingerprint, Refusal> {
    let fp = parse(db, text)?;
    if policy == Policy::Any {
        return Ok(fp);
    }
    let info = db
        .path_info_by_path(&fp.path)
        .await
        .map_err(|e| refuse(RefusalCode::Internal, e.to_string()))?;
    compare(db, fp, text, info)
}

/// [`check`] for each of `texts`, in order, with one hop to the DB's
/// threads for the whole batch.
pub async fn check_many(
    policy: Policy,
    db: &StoreDb,
    texts: &[String],
) -> Vec<Result<Fingerprint, Refusal>> {
    let parsed: Vec<Result<Fingerprint, Refusal>> = texts.iter().map(|t| parse(db, t)).collect();
    if policy == Policy::Any {
        return parsed;
    }
    let paths = parsed
        .iter()
        .filter_map(|fp| fp.as_ref().ok().map(|fp| fp.path.clone()))
        .collect();
    let mut infos = match db.path_infos_by_path(paths).await {
        Ok(infos) => infos.into_iter(),
        Err(e) => {
            let refusal = refuse(RefusalCode::Internal, e.to_string());
            return texts.iter().map(|_| Err(refusal.clone())).collect();
        }
    };
    parsed
        .into_iter()
        .zip(texts)
        .map(|(fp, text)| {
            let fp = fp?;
            let info = infos.next().flatten();
            compare(db, fp, text, info)
        })
        .collect()
}

fn parse(db: &StoreDb, text: &str) -> Result<Fingerprint, Refusal> {
    Fingerprint::parse(db.location().store_dir(), text)
        .map_err(|e| refuse(RefusalCode::BadFingerprint, e.to_string()))
}

/// `fp` (parsed from `text`) against the store's `info` for its path.
fn compare(
    db: &StoreDb,
    fp: Fingerprint,
    text: &str,
    info: Option<PathInfo>,
) -> Result<Fingerprint, Refusal> {
    let info = info.ok_or_else(|| {
        refuse(
            RefusalCode::NotInStore,
            format!("{} is not valid in the store", fp.path),
        )
    })?;
    if info.nar_hash != fp.nar_hash {
        return Err(refuse(
            RefusalCode::HashMismatch,
            format!("{}: NAR hash differs from the store's", fp.path),
        ));
    }
    if info.nar_size != fp.nar_size {
        return Err(refuse(
            RefusalCode::SizeMismatch,
            format!("{}: NAR size differs from the store's", fp.path),
        ));
    }
    // Path, hash and size agree, and both texts are canonical: whatever
    // still differs is the references.
    if info.fingerprint(db.location().store_dir()) != text {
        return Err(refuse(
            RefusalCode::ReferencesMismatch,
            format!("{}: references differ from the store's", fp.path),
        ));
    }
    Ok(fp)
}
