//! A narinfo's `CA:` field against the path it names and the NAR that was
//! received, checked before the import (where Nix 2.8 would refuse it and
//! the pusher would get a 500).
//!
//! Nix checks two things when it registers a content-addressed path
//! (`LocalStore::addToStore` and `registerValidPaths`), mirrored here:
//! - **the hash is the content's**: `text:` and flat `fixed:` hash the one
//!   regular file in the NAR, `fixed:r:` the NAR itself, with the field's
//!   algorithm. (A recursive SHA-256 one is the NarHash: `intake::check_ca`
//!   compares that without reading the NAR.)
//! - **the path is derived from it** (`ValidPathInfo::isContentAddressed`):
//!   `makeTextPath`, or `makeFixedOutputPath` ("source" for recursive
//!   SHA-256, with the references; "output:out" otherwise, with none).
//!
//! Nix hashes a path whose contents hold its own hash part "modulo" those
//! occurrences (`HashModuloSink`); such contents are left to Nix's check.

use std::fs::File;
use std::io::{BufReader, Read};
use std::path::Path;

use larder_store::narinfo::NarInfo;
use sha2::Digest;

use super::error::{ReceiveError, ReceiveResult};
use super::intake::{decode_hash, truncate};

/// Hash algorithms a `CA:` field may name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Algo {
    Md5,
    Sha1,
    Sha256,
    Sha512,
}

impl Algo {
    fn parse(name: &str) -> Option<Algo> {
        Some(match name {
            "md5" => Algo::Md5,
            "sha1" => Algo::Sha1,
            "sha256" => Algo::Sha256,
            "sha512" => Algo::Sha512,
            _ => return None,
        })
    }

    fn name(self) -> &'static str {
        match self {
            Algo::Md5 => "md5",
            Algo::Sha1 => "sha1",
            Algo::Sha256 => "sha256",
            Algo::Sha512 => "sha512",
        }
    }

    fn len(self) -> usize {
        match self {
            Algo::Md5 => 16,
            Algo::Sha1 => 20,
            Algo::Sha256 => 32,
            Algo::Sha512 => 64,
        }
    }

    fn hasher(self) -> Box<dyn sha2::digest::DynDigest> {
        match self {
            Algo::Md5 => Box::new(md5::Md5::new()),
            Algo::Sha1 => Box::new(sha1::Sha1::new()),
            Algo::Sha256 => Box::new(sha2::Sha256::new()),
            Algo::Sha512 => Box::new(sha2::Sha512::new()),
        }
    }
}

/// A parsed `CA:` field: `text:sha256:<h>` or `fixed:[r:]<algo>:<h>`.
#[derive(Debug, Clone, PartialEq, Eq)]
struct ContentAddress {
    text: bool,
    recursive: bool,
    algo: Algo,
    hash: Vec<u8>,
}

fn parse(ca: &str) -> Option<ContentAddress> {
    let (text, recursive, rest) = if let Some(rest) = ca.strip_prefix("text:") {
        (true, false, rest)
    } else if let Some(rest) = ca.strip_prefix("fixed:") {
        match rest.strip_prefix("r:") {
            Some(rest) => (false, true, rest),
            None => (false, false, rest),
        }
    } else {
        return None;
    };
    let (algo, hash) = rest.split_once(':')?;
    let algo = Algo::parse(algo)?;
    if text && algo != Algo::Sha256 {
        return None;
    }
    let hash = decode_hash(hash, algo.len())?;
    Some(ContentAddress {
        text,
        recursive,
        algo,
        hash,
    })
}

/// Check `info`'s `CA:` (already syntax-checked by `intake::check_ca`)
/// against its store path and the staged, decompressed NAR at `nar`.
/// Blocking (reads the NAR when the hash is not the NarHash).
pub fn check(info: &NarInfo, nar: &Path) -> ReceiveResult<()> {
    let Some(field) = info.ca.as_deref() else {
        return Ok(());
    };
    let ca = parse(field).ok_or_else(|| {
        ReceiveError::BadRequest(format!("narinfo CA {:?} is malformed", truncate(field)))
    })?;
    check_path(info, &ca, field)?;
    if ca.recursive && ca.algo == Algo::Sha256 {
        return Ok(());
    }
    let modulo = info.store_path.hash().to_string();
    let actual = content_hash(nar, &ca, modulo.as_bytes()).map_err(|e| {
        tracing::error!("reading staged NAR {}: {e}", nar.display());
        ReceiveError::Internal("cannot read the staged NAR".into())
    })?;
    match actual {
        Content::Hash(h) if h != ca.hash => Err(ReceiveError::HashMismatch(format!(
            "narinfo CA {} does not match the uploaded contents",
            truncate(field)
        ))),
        Content::NotAFile => Err(ReceiveError::BadRequest(format!(
            "narinfo CA {} needs a NAR of one regular file",
            truncate(field)
        ))),
        Content::Hash(_) | Content::SelfReferencing => Ok(()),
    }
}

/// The store path `ca` makes, as Nix 2.8's `makeTextPath` and
/// `makeFixedOutputPath` do, must be the narinfo's.
fn check_path(info: &NarInfo, ca: &ContentAddress, field: &str) -> ReceiveResult<()> {
    let path = &info.store_path;
    let store_dir = &info.store_dir;
    let full = |p: &larder_store::StorePath| format!("{store_dir}/{p}");
    let mut others: Vec<String> = info
        .references
        .iter()
        .filter(|r| *r != path)
        .map(full)
        .collect();
    others.sort();
    let self_reference = info.references.contains(path);
    let (kind, inner) = if ca.text {
        let mut refs: Vec<String> = info.references.iter().map(full).collect();
        refs.sort();
        (type_with_refs("text", &refs, false), ca.hash.clone())
    } else if ca.recursive && ca.algo == Algo::Sha256 {
        (
            type_with_refs("source", &others, self_reference),
            ca.hash.clone(),
        )
    } else {
        if !info.references.is_empty() {
            return Err(ReceiveError::BadRequest(format!(
                "narinfo CA {} cannot have references",
                truncate(field)
            )));
        }
        let prefix = if ca.recursive { "r:" } else { "" };
        let inner = format!("fixed:out:{prefix}{}:{}:", ca.algo.name(), hex(&ca.hash));
        (
            "output:out".to_owned(),
            sha2::Sha256::digest(inner.as_bytes()).to_vec(),
        )
    };
    let expected = make_store_path_hash(&kind, &inner, store_dir, path.name());
    if expected != path.hash().to_string() {
        return Err(ReceiveError::NotStorePath(format!(
            "{store_dir}/{path} is not the path its CA {} makes ({expected}-{})",
            truncate(field),
            path.name()
        )));
    }
    Ok(())
}

/// Nix's `makeType`: the type, then `:<path>` per reference, `:self`.
fn type_with_refs(kind: &str, refs: &[String], self_reference: bool) -> String {
    let mut out = kind.to_owned();
    for r in refs {
        out.push(':');
        out.push_str(r);
    }
    if self_reference {
        out.push_str(":self");
    }
    out
}

/// Nix's `makeStorePath`: the hash part of
/// `<type>:sha256:<base16 inner>:<store dir>:<name>`, SHA-256 folded to 20
/// bytes, in nix32.
fn make_store_path_hash(kind: &str, inner: &[u8], store_dir: &str, name: &str) -> String {
    let s = format!("{kind}:sha256:{}:{store_dir}:{name}", hex(inner));
    let digest = sha2::Sha256::digest(s.as_bytes());
    let mut folded = [0u8; 20];
    for (i, b) in digest.iter().enumerate() {
        folded[i % 20] ^= b;
    }
    larder_store::nixbase32::encode(&folded)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

enum Content {
    Hash(Vec<u8>),
    /// Flat or text hashing of a NAR that is not one regular file.
    NotAFile,
    /// The hashed bytes hold the path's own hash part: Nix hashes them
    /// modulo it, so Nix checks them.
    SelfReferencing,
}

/// The hash Nix compares the `CA:` with: of the whole NAR (recursive), or
/// of the one regular file's contents (flat, text).
fn content_hash(nar: &Path, ca: &ContentAddress, modulo: &[u8]) -> std::io::Result<Content> {
    let mut reader = BufReader::with_capacity(256 << 10, File::open(nar)?);
    let len = if ca.recursive {
        u64::MAX
    } else {
        match regular_file_header(&mut reader)? {
            Some(len) => len,
            None => return Ok(Content::NotAFile),
        }
    };
    let mut hasher = ca.algo.hasher();
    let mut reader = reader.take(len);
    let mut buf = vec![0u8; 256 << 10];
    // The last bytes of the previous chunk, so that an occurrence of the
    // hash part across two chunks is seen.
    let mut tail: Vec<u8> = Vec::new();
    loop {
        let n = reader.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        tail.extend_from_slice(&buf[..n.min(modulo.len())]);
        if memchr::memmem::find(&tail, modulo).is_some()
            || memchr::memmem::find(&buf[..n], modulo).is_some()
        {
            return Ok(Content::SelfReferencing);
        }
        tail.clear();
        tail.extend_from_slice(&buf[n.saturating_sub(modulo.len() - 1)..n]);
    }
    Ok(Content::Hash(hasher.finalize().to_vec()))
}

/// Read a NAR's header up to a regular file's contents: its length, or
/// `None` when the root is not a regular file. The NAR's syntax was
/// checked on upload.
fn regular_file_header(reader: &mut impl Read) -> std::io::Result<Option<u64>> {
    for expected in [&b"nix-archive-1"[..], b"(", b"type"] {
        if read_str(reader)? != expected {
            return Ok(None);
        }
    }
    if read_str(reader)? != b"regular" {
        return Ok(None);
    }
    let mut tag = read_str(reader)?;
    if tag == b"executable" {
        read_str(reader)?;
        tag = read_str(reader)?;
    }
    if tag != b"contents" {
        return Ok(None);
    }
    read_u64(reader).map(Some)
}

fn read_u64(reader: &mut impl Read) -> std::io::Result<u64> {
    let mut b = [0u8; 8];
    reader.read_exact(&mut b)?;
    Ok(u64::from_le_bytes(b))
}

/// A short NAR string (a tag); longer ones are not tags.
fn read_str(reader: &mut impl Read) -> std::io::Result<Vec<u8>> {
    let len = read_u64(reader)?;
    if len > 64 {
        return Ok(Vec::new());
    }
    let padded = (len as usize).div_ceil(8) * 8;
    let mut b = vec![0u8; padded];
    reader.read_exact(&mut b)?;
    b.truncate(len as usize);
    Ok(b)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Real Nix paths of each kind are checked end to end
    /// (`sync_receive_ca`); here, the string Nix hashes.
    #[test]
    fn store_path_types() {
        let contents_hash = sha2::Sha256::digest(b"hello\n");
        let hash = make_store_path_hash("text", &contents_hash, "/nix/store", "hello");
        assert_eq!(hash.len(), 32);
        assert_ne!(
            hash,
            make_store_path_hash("text", &contents_hash, "/nix/store", "hello2")
        );
        assert_eq!(
            type_with_refs("source", &["/nix/store/a".into()], true),
            "source:/nix/store/a:self"
        );
    }

    #[test]
    fn ca_fields_parse() {
        let h = sha2::Sha256::digest(b"x");
        let n32 = larder_store::nixbase32::encode(&h);
        let ca = parse(&format!("fixed:r:sha256:{n32}")).unwrap();
        assert!(ca.recursive && !ca.text && ca.algo == Algo::Sha256);
        assert_eq!(ca.hash, h.to_vec());
        assert!(parse(&format!("text:sha1:{}", "0".repeat(40))).is_none());
        assert!(parse("fixed:md5:0123456789abcdef0123456789abcdef").is_some());
        assert!(parse("other:sha256:x").is_none());
    }
}
