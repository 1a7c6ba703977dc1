//! Checking an uploaded narinfo before anything is imported: it parses
//! strictly, names the store path its URL names, matches the NAR that was
//! really received, and every reference is already in the host's store.
//! Each failure is one line naming the field and what was expected.

use larder_store::db::StoreDb;
use larder_store::narinfo::NarInfo;
use larder_store::{StorePath, StorePathHash};

use super::error::{ReceiveError, ReceiveResult};
use super::staging::{Compression, StagedNar};

/// Largest narinfo body accepted (Nix's are well under 4 KiB; a path with
/// thousands of references stays under this).
pub const MAX_NARINFO_BYTES: usize = 1 << 20;

/// The 32-character hash part of a `/<hash>.narinfo` URL.
pub fn url_hash(hash: &str) -> ReceiveResult<StorePathHash> {
    hash.parse().map_err(|e| {
        ReceiveError::NotStorePath(format!(
            "{:?} is not a store path hash ({e})",
            truncate(hash)
        ))
    })
}

/// Parse a narinfo PUT to `/<hash>.narinfo` of a store with `store_dir`.
pub fn parse(hash: &StorePathHash, body: &[u8], store_dir: &str) -> ReceiveResult<NarInfo> {
    let text = std::str::from_utf8(body)
        .map_err(|_| ReceiveError::BadRequest("narinfo is not UTF-8 text".into()))?;
    let info: NarInfo = text
        .parse()
        .map_err(|e| ReceiveError::BadRequest(format!("malformed narinfo: {e}")))?;
    if info.store_dir != store_dir {
        return Err(ReceiveError::NotStorePath(format!(
            "narinfo StorePath is under {}, this cache's store is {store_dir}",
            truncate(&info.store_dir)
        )));
    }
    if info.store_path.hash() != hash {
        return Err(ReceiveError::NotStorePath(format!(
            "narinfo StorePath {} does not match the URL's hash {hash}",
            info.store_path
        )));
    }
    Ok(info)
}

/// Check a narinfo's `CA:` field: `text:sha256:<hash>` or
/// `fixed:[r:]{md5|sha1|sha256|sha512}:<hash>` (Nix 2.8's
/// `parseContentAddress`; the hash in base16, nix32 or base64 of the
/// algorithm's length). A recursive SHA-256 one is the NAR's hash, so it
/// must equal `nar_hash`. Anything else is 400 before the import, where
/// Nix would fail.
pub fn check_ca(ca: &str, nar_hash: &larder_store::Sha256Hash) -> ReceiveResult<()> {
    let bad = |why: &str| {
        ReceiveError::BadRequest(format!(
            "narinfo CA {:?} {why}; expected text:sha256:<hash> or fixed:[r:]<algo>:<hash>",
            truncate(ca)
        ))
    };
    let (recursive, algo, hash) = if let Some(rest) = ca.strip_prefix("text:") {
        let hash = rest
            .strip_prefix("sha256:")
            .ok_or_else(|| bad("is not text:sha256"))?;
        (false, "sha256", hash)
    } else if let Some(rest) = ca.strip_prefix("fixed:") {
        let (recursive, rest) = match rest.strip_prefix("r:") {
            Some(r) => (true, r),
            None => (false, rest),
        };
        let (algo, hash) = rest
            .split_once(':')
            .ok_or_else(|| bad("has no hash algorithm"))?;
        (recursive, algo, hash)
    } else {
        return Err(bad("is not content address syntax"));
    };
    let len = match algo {
        "md5" => 16,
        "sha1" => 20,
        "sha256" => 32,
        "sha512" => 64,
        _ => return Err(bad("names an unknown hash algorithm")),
    };
    let bytes = decode_hash(hash, len).ok_or_else(|| bad("has a malformed hash"))?;
    if recursive && algo == "sha256" && bytes != nar_hash.0 {
        return Err(ReceiveError::HashMismatch(format!(
            "narinfo CA {} does not match its NarHash {nar_hash}",
            truncate(ca)
        )));
    }
    Ok(())
}

/// A `len`-byte hash in base16, nix32 or base64 (told apart by length, as
/// Nix does).
pub(super) fn decode_hash(s: &str, len: usize) -> Option<Vec<u8>> {
    use base64::Engine;
    let bytes = if s.len() == len * 2 {
        if !s.bytes().all(|b| b.is_ascii_hexdigit()) {
            return None;
        }
        (0..len)
            .map(|i| u8::from_str_radix(s.get(2 * i..2 * i + 2)?, 16).ok())
            .collect::<Option<Vec<u8>>>()?
    } else if s.len() == (len * 8).div_ceil(5) {
        larder_store::nixbase32::decode(s).ok()?
    } else if s.len() == len.div_ceil(3) * 4 {
        base64::engine::general_purpose::STANDARD.decode(s).ok()?
    } else {
        return None;
    };
    (bytes.len() == len).then_some(bytes)
}

/// The staging key of the narinfo's `URL` (`nar/<filehash>.nar[.ext]`),
/// checked to agree with its `Compression`.
pub fn nar_url(info: &NarInfo) -> ReceiveResult<String> {
    let name = info.url.strip_prefix("nar/").ok_or_else(|| {
        ReceiveError::BadRequest(format!(
            "narinfo URL {:?} is not nar/<filehash>.nar[.xz|.zst|.bz2]",
            truncate(&info.url)
        ))
    })?;
    let (_, compression) = Compression::from_file_name(name).map_err(|ext| {
        ReceiveError::UnsupportedCompression(format!("unsupported NAR extension .{ext}"))
    })?;
    if compression.narinfo_name() != info.compression {
        return Err(ReceiveError::BadRequest(format!(
            "narinfo says Compression: {} but its URL is a {} NAR",
            truncate(&info.compression),
            compression.narinfo_name()
        )));
    }
    Ok(info.url.clone())
}

/// The narinfo's hashes and sizes equal what was computed on upload.
pub fn matches_staged(info: &NarInfo, staged: &StagedNar) -> ReceiveResult<()> {
    let d = &staged.digests;
    if info.nar_size != d.nar_size {
        return Err(ReceiveError::SizeMismatch(format!(
            "NarSize {} but the uploaded NAR has {} bytes",
            info.nar_size, d.nar_size
        )));
    }
    if info.nar_hash != d.nar_hash {
        return Err(ReceiveError::HashMismatch(format!(
            "NarHash {} but the uploaded NAR hashes to {}",
            info.nar_hash, d.nar_hash
        )));
    }
    if info.file_hash.is_some_and(|h| h != d.file_hash) {
        return Err(ReceiveError::HashMismatch(
            "FileHash does not match the uploaded file".into(),
        ));
    }
    if info.file_size.is_some_and(|s| s != d.file_size) {
        return Err(ReceiveError::SizeMismatch(format!(
            "FileSize does not match the uploaded file ({} bytes)",
            d.file_size
        )));
    }
    Ok(())
}

/// Every reference is valid in the host store (or is the path itself).
/// Nix uploads references before referrers, so a gap is a client error.
/// Blocking (SQLite).
pub fn references_present(db: &StoreDb, info: &NarInfo) -> ReceiveResult<()> {
    for r in info.references.iter().filter(|r| **r != info.store_path) {
        if !db.query_valid_blocking(r).map_err(internal)? {
            return Err(ReceiveError::MissingReference(format!(
                "reference {}/{r} is not in the cache's store; push it first",
                info.store_dir
            )));
        }
    }
    Ok(())
}

/// The host's record of `path`, if valid. Blocking (SQLite).
pub fn valid_nar_hash(
    db: &StoreDb,
    path: &StorePath,
) -> ReceiveResult<Option<larder_store::Sha256Hash>> {
    Ok(db
        .path_info_by_path_blocking(path)
        .map_err(internal)?
        .map(|i| i.nar_hash))
}

fn internal(e: larder_store::db::DbError) -> ReceiveError {
    ReceiveError::store_db(&e)
}

/// At most 80 characters of client input in a message.
pub fn truncate(s: &str) -> String {
    s.chars().take(80).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use larder_store::Sha256Hash;
    use proptest::prelude::*;

    /// A narinfo text as `nix copy --to` uploads it, for `path` under
    /// `store_dir`, with NAR `url` and `compression`, referring to itself
    /// and to `refs`.
    fn upload(
        store_dir: &str,
        path: &str,
        url: &str,
        compression: &str,
        refs: &[String],
    ) -> String {
        let nar = Sha256Hash::digest(url.as_bytes());
        let mut refs = refs.to_vec();
        refs.push(path.to_owned());
        refs.sort();
        format!(
            "StorePath: {store_dir}/{path}\nURL: {url}\nCompression: {compression}\n\
             FileHash: {nar}\nFileSize: 7\nNarHash: {nar}\nNarSize: 120\nReferences: {}\n",
            refs.join(" ")
        )
    }

    fn base() -> impl Strategy<Value = String> {
        "[0-9abcdfghijklmnpqrsvwxyz]{32}-[a-z0-9+_-][a-z0-9.+_-]{0,19}"
    }

    proptest! {
        /// An upload parses when, and only when, its URL's hash part, its
        /// `StorePath` and the store dir agree; its `URL` and `Compression`
        /// must agree too. Cut or noisy uploads are 4xx, never a panic.
        #[test]
        fn uploaded_narinfo_is_checked_against_its_url(
            path in base(),
            other in base(),
            refs in prop::collection::vec(base(), 0..4),
            url_hash_of_other in any::<bool>(),
            dir in prop::sample::select(vec!["/nix/store", "/nix/store/", "/other", "/nix/store/.."]),
            ext in prop::sample::select(vec!["", ".xz", ".zst", ".bz2", ".lz4"]),
            compression in prop::sample::select(vec!["none", "xz", "zstd", "bzip2", "lz4"]),
            cut in any::<usize>(),
        ) {
            let url = format!("nar/{}.nar{ext}", Sha256Hash::digest(path.as_bytes()).to_nix32());
            let text = upload(dir, &path, &url, compression, &refs);
            let hash = if url_hash_of_other { &other } else { &path };
            let hash = url_hash(&hash[..32]).unwrap();
            match parse(&hash, text.as_bytes(), "/nix/store") {
                Ok(info) => {
                    prop_assert!(dir == "/nix/store" && info.store_path.hash() == &hash);
                    prop_assert_eq!(info.store_path.to_string(), path.clone());
                    let named = match ext {
                        "" => Some("none"),
                        ".xz" => Some("xz"),
                        ".zst" => Some("zstd"),
                        ".bz2" => Some("bzip2"),
                        _ => None,
                    };
                    match nar_url(&info) {
                        Ok(u) => prop_assert!(u == url && named == Some(compression)),
                        Err(e) => prop_assert!(named != Some(compression), "{}", e),
                    }
                }
                Err(e) => prop_assert!(
                    dir != "/nix/store" || hash.to_string() != path[..32],
                    "{}",
                    e
                ),
            }
            let mut cut_at = cut % (text.len() + 1);
            while !text.is_char_boundary(cut_at) {
                cut_at -= 1;
            }
            if let Ok(info) = parse(&hash, &text.as_bytes()[..cut_at], "/nix/store") {
                let _ = nar_url(&info);
            }
        }

        #[test]
        fn upload_urls_and_fields_never_panic(
            hash in "\\PC{0,40}",
            body in prop::collection::vec(any::<u8>(), 0..300),
            ca in "(text:|fixed:|fixed:r:)?(sha256|md5|sha1|sha512|x)?:?[0-9a-zA-Z+/=]{0,90}",
        ) {
            if let Ok(h) = url_hash(&hash) {
                prop_assert_eq!(h.to_string(), hash);
                let _ = parse(&h, &body, "/nix/store");
            }
            let _ = check_ca(&ca, &Sha256Hash::digest(b"x"));
        }
    }

    #[test]
    fn ca_syntax() {
        let h = Sha256Hash::digest(b"x");
        let n32 = h.to_nix32();
        assert!(check_ca(&format!("fixed:r:sha256:{n32}"), &h).is_ok());
        assert!(check_ca(&format!("fixed:r:sha256:{}", h.to_base16()), &h).is_ok());
        assert!(check_ca(&format!("fixed:sha256:{n32}"), &Sha256Hash::digest(b"y")).is_ok());
        assert!(check_ca(&format!("text:sha256:{n32}"), &h).is_ok());
        assert!(check_ca("fixed:md5:0123456789abcdef0123456789abcdef", &h).is_ok());
        for bad in [
            "garbage",
            "text:sha1:0123456789abcdef0123456789abcdef01234567",
            "fixed:r:sha256:short",
            "fixed:sha3:abc",
            "fixed:r:sha256:",
            "text:sha256:+123456789abcdef0123456789abcdef0123456789abcdef0123456789abcde",
        ] {
            assert!(check_ca(bad, &h).is_err(), "{bad}");
        }
        let other = Sha256Hash::digest(b"y").to_nix32();
        assert!(check_ca(&format!("fixed:r:sha256:{other}"), &h).is_err());
    }
}
