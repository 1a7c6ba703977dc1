//! Property tests over the formats a hostile peer controls (issue 15):
//! store paths and names, narinfo, fingerprints and the signer's frames.
//! Each format is generated valid (it must round-trip exactly), then cut,
//! mutated or replaced by noise (the parser must answer a typed error or a
//! value that renders back to a text it parses the same, never panic).
//!
//! CI runs proptest's default 256 cases per property; the long run sets
//! `PROPTEST_CASES=1000000` (see `docs/reliability.md`).

use proptest::prelude::*;

use crate::fingerprint::{Fingerprint, fingerprint};
use crate::hash::Sha256Hash;
use crate::narinfo::NarInfo;
use crate::path::{MAX_NAME_LEN, StorePath, StorePathHash};
use crate::signer_proto::{
    FrameError, MAX_FRAME, Refusal, RefusalCode, Reply, Request, encode_frame, read_frame_blocking,
};

const NIX32: &str = "0123456789abcdfghijklmnpqrsvwxyz";

fn path_hash() -> impl Strategy<Value = StorePathHash> {
    "[0-9abcdfghijklmnpqrsvwxyz]{32}".prop_map(|s| s.parse().unwrap())
}

fn name() -> impl Strategy<Value = String> {
    "[A-Za-z0-9+_?=-][A-Za-z0-9+._?=-]{0,210}"
}

fn store_path() -> impl Strategy<Value = StorePath> {
    (path_hash(), name()).prop_map(|(h, n)| StorePath::new(h, &n).unwrap())
}

fn sha256() -> impl Strategy<Value = Sha256Hash> {
    any::<[u8; 32]>().prop_map(Sha256Hash)
}

/// A basename over an alphabet that mixes nix32, the letters nix32 lacks,
/// name characters and characters no store path has.
fn near_basename() -> impl Strategy<Value = String> {
    concat!(
        "([0-9abcdfghijklmnpqrsvwxyz]{32}|[0-9a-z]{28,34})",
        "(-([A-Za-z0-9+._?=-]{0,215}|[A-Za-z0-9+._?=/ %\\\\é\\x00-]{0,8}))?"
    )
}

/// Whether `s` is a store path basename, written from Nix's rules
/// independently of `path.rs`.
fn oracle_basename(s: &str) -> bool {
    let b = s.as_bytes();
    if b.len() < 34 || b[32] != b'-' {
        return false;
    }
    let name = &b[33..];
    b[..32].iter().all(|c| NIX32.as_bytes().contains(c))
        && name.len() <= MAX_NAME_LEN
        && name[0] != b'.'
        && name
            .iter()
            .all(|c| c.is_ascii_alphanumeric() || b"+-._?=".contains(c))
}

/// Insert, replace or delete a few characters of `text`.
fn mutate(text: &str, edits: &[(usize, u8, String)]) -> String {
    let mut s = text.to_owned();
    for (pos, op, junk) in edits {
        let mut p = pos % (s.len() + 1);
        while !s.is_char_boundary(p) {
            p -= 1;
        }
        let end = s[p..].chars().next().map_or(p, |c| p + c.len_utf8());
        match op % 3 {
            0 => s.insert_str(p, junk),
            1 => s.replace_range(p..end, junk),
            _ => s.replace_range(p..end, ""),
        }
    }
    s
}

fn edits() -> impl Strategy<Value = Vec<(usize, u8, String)>> {
    prop::collection::vec(
        (any::<usize>(), any::<u8>(), "(\\PC|[\n\r: ;,/]){0,4}"),
        1..4,
    )
}

fn narinfo() -> impl Strategy<Value = NarInfo> {
    let file = (prop::option::of(sha256()), prop::option::of(any::<u64>()));
    let compression = prop::sample::select(vec!["none", "xz", "zstd", "bzip2", "br"]);
    (
        (store_path(), "[!-~]([ -~]{0,60}[!-~])?", compression, file),
        (sha256(), any::<u64>()),
        prop::collection::btree_set(store_path(), 0..6),
        prop::option::of(store_path()),
        prop::collection::vec("[!-~]{1,80}", 0..3),
        prop::option::of("[!-~]{1,80}"),
    )
        .prop_map(
            |(
                (path, url, compression, (file_hash, file_size)),
                (nar_hash, nar_size),
                refs,
                deriver,
                sigs,
                ca,
            )| {
                let mut references: Vec<StorePath> = refs.into_iter().collect();
                references.sort_by_key(ToString::to_string);
                NarInfo {
                    store_dir: "/nix/store".to_owned(),
                    store_path: path,
                    url,
                    compression: compression.to_owned(),
                    file_hash,
                    file_size,
                    nar_hash,
                    nar_size,
                    references,
                    deriver,
                    sigs,
                    ca,
                }
            },
        )
}

fn request() -> impl Strategy<Value = Request> {
    prop_oneof![
        Just(Request::PublicKeys),
        Just(Request::Metrics),
        (
            "\\PC{0,300}",
            prop::option::of(prop::collection::vec("\\PC{0,20}", 0..4))
        )
            .prop_map(|(fingerprint, keys)| Request::Sign { fingerprint, keys }),
    ]
}

fn reply() -> impl Strategy<Value = Reply> {
    prop_oneof![
        prop::collection::vec("\\PC{0,100}", 0..4).prop_map(Reply::Signatures),
        prop::collection::vec("\\PC{0,100}", 0..4).prop_map(Reply::PublicKeys),
        "\\PC{0,300}".prop_map(Reply::Metrics),
        (
            prop::sample::select(RefusalCode::ALL.to_vec()),
            "\\PC{0,100}"
        )
            .prop_map(|(code, reason)| Reply::Refused(Refusal { code, reason })),
    ]
}

proptest! {
    #[test]
    fn store_paths_roundtrip(path in store_path()) {
        let text = path.to_string();
        prop_assert_eq!(&StorePath::from_basename(&text).unwrap(), &path);
        let full = format!("/nix/store/{text}");
        prop_assert_eq!(StorePath::from_absolute("/nix/store", &full).unwrap(), path.clone());
        let below = format!("{full}/x");
        prop_assert!(StorePath::from_absolute("/nix/store", &below).is_err());
        prop_assert!(StorePath::from_absolute("/nix/stor", &full).is_err());
        prop_assert_eq!(text[..32].parse::<StorePathHash>().unwrap(), *path.hash());
    }

    #[test]
    fn store_paths_are_exactly_what_nix_accepts(s in near_basename()) {
        let parsed = StorePath::from_basename(&s);
        prop_assert_eq!(parsed.is_ok(), oracle_basename(&s), "{:?}: {:?}", s, parsed);
        if let Ok(p) = parsed {
            prop_assert_eq!(p.to_string(), s);
        }
    }

    #[test]
    fn narinfo_roundtrips(info in narinfo()) {
        let text = info.to_string();
        prop_assert_eq!(text.parse::<NarInfo>().unwrap(), info);
    }

    #[test]
    fn mutated_narinfo_is_an_error_or_stable(info in narinfo(), edits in edits()) {
        let text = mutate(&info.to_string(), &edits);
        if let Ok(parsed) = text.parse::<NarInfo>() {
            let again = parsed.to_string().parse::<NarInfo>();
            prop_assert_eq!(again.as_ref(), Ok(&parsed), "{:?}", text);
        }
    }

    #[test]
    fn fingerprints_roundtrip(
        path in store_path(),
        hash in sha256(),
        size in any::<u64>(),
        refs in prop::collection::btree_set(store_path(), 0..8),
    ) {
        let refs: Vec<StorePath> = refs.into_iter().collect();
        let text = fingerprint("/nix/store", &path, &hash, size, &refs);
        let parsed = Fingerprint::parse("/nix/store", &text).unwrap();
        prop_assert_eq!(&parsed.path, &path);
        prop_assert_eq!(parsed.nar_hash, hash);
        prop_assert_eq!(parsed.nar_size, size);
        prop_assert_eq!(parsed.references.len(), refs.len());
        prop_assert_eq!(parsed.to_string(), text);
    }

    #[test]
    fn only_canonical_fingerprints_parse(
        path in store_path(),
        hash in sha256(),
        size in any::<u64>(),
        refs in prop::collection::vec(store_path(), 0..4),
        edits in edits(),
    ) {
        let text = mutate(&fingerprint("/nix/store", &path, &hash, size, &refs), &edits);
        if let Ok(parsed) = Fingerprint::parse("/nix/store", &text) {
            prop_assert_eq!(parsed.to_string(), text);
        }
    }

    #[test]
    fn signer_frames_roundtrip(requests in prop::collection::vec(request(), 1..4), reply in reply()) {
        let mut wire = Vec::new();
        for r in &requests {
            wire.extend(encode_frame(r).unwrap());
        }
        let mut reader = wire.as_slice();
        for r in &requests {
            prop_assert_eq!(&read_frame_blocking::<Request, _>(&mut reader).unwrap(), r);
        }
        prop_assert!(matches!(
            read_frame_blocking::<Request, _>(&mut reader),
            Err(FrameError::Closed)
        ));
        let frame = encode_frame(&reply).unwrap();
        prop_assert_eq!(read_frame_blocking::<Reply, _>(&mut frame.as_slice()).unwrap(), reply);
    }

    #[test]
    fn cut_or_noisy_signer_frames_are_errors(
        request in request(),
        cut in any::<usize>(),
        noise in prop::collection::vec(any::<u8>(), 0..64),
        len in any::<u32>(),
    ) {
        let frame = encode_frame(&request).unwrap();
        let short = &frame[..cut % frame.len()];
        prop_assert!(read_frame_blocking::<Request, _>(&mut &short[..]).is_err());
        // Noise, and noise behind a length prefix of any size.
        let _ = read_frame_blocking::<Request, _>(&mut noise.as_slice());
        let _ = read_frame_blocking::<Reply, _>(&mut noise.as_slice());
        let mut prefixed = len.to_be_bytes().to_vec();
        prefixed.extend(&noise);
        let got = read_frame_blocking::<Request, _>(&mut prefixed.as_slice());
        if len > MAX_FRAME {
            prop_assert!(matches!(got, Err(FrameError::TooLarge(l)) if l == len));
        } else if len as usize > noise.len() {
            prop_assert!(matches!(got, Err(FrameError::Io(_))));
        }
    }
}
