//! narinfo: the text a binary cache answers for `<hash>.narinfo`.
//!
//! Rendering follows Nix's own writer line for line (every line `Key: value\n`,
//! `Compression` always present, `References` always present even when
//! empty). Parsing accepts everything Nix writes and, like Nix, ignores
//! unknown keys; a missing `Compression` means bzip2.

use std::fmt;
use std::str::FromStr;

use thiserror::Error;

use crate::fingerprint::fingerprint;
use crate::hash::{HashError, Sha256Hash};
use crate::path::{StorePath, StorePathError};

/// Why a narinfo text was refused. `field` is the narinfo key concerned
/// (`StorePath`, `NarHash`, …); values are quoted at most 40 characters long.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum NarInfoError {
    /// A non-empty line that is not `Key: value`, or holds a control
    /// character such as a lone CR (1-based line number).
    #[error("narinfo line {line}: expected `Key: value` without control characters")]
    Syntax {
        /// The line, counted from 1.
        line: usize,
    },
    /// A key other than `Sig` given twice.
    #[error("narinfo field {field} appears twice")]
    Duplicate {
        /// The repeated key.
        field: &'static str,
    },
    /// `StorePath`, `URL`, `NarHash` or `NarSize` is absent.
    #[error("narinfo lacks the required field {0}")]
    Missing(&'static str),
    /// A store path field (`StorePath`, `References`, `Deriver`) is not one.
    #[error("narinfo field {field}: {source}")]
    Path {
        /// The key.
        field: &'static str,
        /// What is wrong with the path.
        source: StorePathError,
    },
    /// `NarHash` or `FileHash` is not a SHA-256 hash.
    #[error("narinfo field {field}: {source}")]
    Hash {
        /// The key.
        field: &'static str,
        /// What is wrong with the hash.
        source: HashError,
    },
    /// `NarSize` or `FileSize` is not a decimal `u64`.
    #[error("narinfo field {field}: {value:?} is not a number")]
    Number {
        /// The key.
        field: &'static str,
        /// The value, cut to 40 characters.
        value: String,
    },
    /// A field that must have a value has none.
    #[error("narinfo field {field} is empty")]
    Empty {
        /// The key.
        field: &'static str,
    },
}

/// A narinfo: what a binary cache says about one store path. Mirrors
/// Nix's `NarInfo` (`src/libstore/nar-info.cc`): the fields of its text
/// form, in its order; sizes are in bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NarInfo {
    /// The store dir, e.g. `/nix/store`; `StorePath` lines are rendered under it.
    pub store_dir: String,
    /// `StorePath`: the path described.
    pub store_path: StorePath,
    /// `URL`: where the (compressed) NAR is, relative to the cache root,
    /// e.g. `nar/<filehash>.nar.zst`.
    pub url: String,
    /// `Compression`: `none`, `zstd`, `xz`, `bzip2`, …; a narinfo without
    /// the line means `bzip2`.
    pub compression: String,
    /// `FileHash`: SHA-256 of the file at `URL`, when known.
    pub file_hash: Option<Sha256Hash>,
    /// `FileSize`: length of the file at `URL`, when known.
    pub file_size: Option<u64>,
    /// `NarHash`: SHA-256 of the uncompressed NAR.
    pub nar_hash: Sha256Hash,
    /// `NarSize`: length of the uncompressed NAR.
    pub nar_size: u64,
    /// `References`, as basenames: sorted by basename and without
    /// repeats when parsed (a set, as in Nix); sorted when rendered.
    pub references: Vec<StorePath>,
    /// `Deriver`: the `.drv` that built it, when known.
    pub deriver: Option<StorePath>,
    /// `Sig` lines, `name:base64` each, in order.
    pub sigs: Vec<String>,
    /// `CA`: the content-address assertion, when the path has one.
    pub ca: Option<String>,
}

impl fmt::Display for NarInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "StorePath: {}/{}", self.store_dir, self.store_path)?;
        writeln!(f, "URL: {}", self.url)?;
        writeln!(f, "Compression: {}", self.compression)?;
        if let Some(h) = &self.file_hash {
            writeln!(f, "FileHash: {h}")?;
        }
        if let Some(s) = self.file_size {
            writeln!(f, "FileSize: {s}")?;
        }
        writeln!(f, "NarHash: {}", self.nar_hash)?;
        writeln!(f, "NarSize: {}", self.nar_size)?;
        let mut refs: Vec<String> = self.references.iter().map(ToString::to_string).collect();
        refs.sort();
        writeln!(f, "References: {}", refs.join(" "))?;
        if let Some(d) = &self.deriver {
            writeln!(f, "Deriver: {d}")?;
        }
        for sig in &self.sigs {
            writeln!(f, "Sig: {sig}")?;
        }
        if let Some(ca) = &self.ca {
            writeln!(f, "CA: {ca}")?;
        }
        Ok(())
    }
}

impl NarInfo {
    /// The text a signature of this path covers (see [`crate::fingerprint`]),
    /// with paths under [`NarInfo::store_dir`]. Mirrors Nix, whose `NarInfo`
    /// is a `ValidPathInfo` and signs with its `fingerprint`
    /// (`src/libstore/path-info.cc`).
    pub fn fingerprint(&self) -> String {
        fingerprint(
            &self.store_dir,
            &self.store_path,
            &self.nar_hash,
            self.nar_size,
            &self.references,
        )
    }
}

/// Fields seen so far while parsing; each may appear once (except `Sig`).
#[derive(Default)]
struct Fields<'a> {
    store_path: Option<&'a str>,
    url: Option<&'a str>,
    compression: Option<&'a str>,
    file_hash: Option<&'a str>,
    file_size: Option<&'a str>,
    nar_hash: Option<&'a str>,
    nar_size: Option<&'a str>,
    references: Option<&'a str>,
    deriver: Option<&'a str>,
    ca: Option<&'a str>,
    sigs: Vec<&'a str>,
}

fn set<'a>(
    slot: &mut Option<&'a str>,
    field: &'static str,
    value: &'a str,
) -> Result<(), NarInfoError> {
    if slot.replace(value).is_some() {
        return Err(NarInfoError::Duplicate { field });
    }
    Ok(())
}

fn number(field: &'static str, value: &str) -> Result<u64, NarInfoError> {
    value.parse().map_err(|_| NarInfoError::Number {
        field,
        value: value.chars().take(40).collect(),
    })
}

fn hash(field: &'static str, value: &str) -> Result<Sha256Hash, NarInfoError> {
    value
        .parse()
        .map_err(|source| NarInfoError::Hash { field, source })
}

fn basename(field: &'static str, value: &str) -> Result<StorePath, NarInfoError> {
    StorePath::from_basename(value).map_err(|source| NarInfoError::Path { field, source })
}

impl<'a> Fields<'a> {
    fn read(text: &'a str) -> Result<Self, NarInfoError> {
        let mut f = Fields::default();
        for (i, line) in text.lines().enumerate() {
            if line.is_empty() {
                continue;
            }
            // `lines` strips "\n" and "\r\n" only: a lone CR (at the end
            // of the text, or inside a line), a NUL or any other control
            // character would otherwise stay in a value and not survive
            // being written and read again. Nix never writes one.
            if line.bytes().any(|b| b.is_ascii_control()) {
                return Err(NarInfoError::Syntax { line: i + 1 });
            }
            let (key, value) = line
                .split_once(": ")
                .or_else(|| line.strip_suffix(':').map(|k| (k, "")))
                .ok_or(NarInfoError::Syntax { line: i + 1 })?;
            match key {
                "StorePath" => set(&mut f.store_path, "StorePath", value)?,
                "URL" => set(&mut f.url, "URL", value)?,
                "Compression" => set(&mut f.compression, "Compression", value)?,
                "FileHash" => set(&mut f.file_hash, "FileHash", value)?,
                "FileSize" => set(&mut f.file_size, "FileSize", value)?,
                "NarHash" => set(&mut f.nar_hash, "NarHash", value)?,
                "NarSize" => set(&mut f.nar_size, "NarSize", value)?,
                "References" => set(&mut f.references, "References", value)?,
                "Deriver" => set(&mut f.deriver, "Deriver", value)?,
                "CA" => set(&mut f.ca, "CA", value)?,
                "Sig" => f.sigs.push(value),
                _ => {} // Nix ignores unknown keys such as `System`.
            }
        }
        Ok(f)
    }
}

impl FromStr for NarInfo {
    type Err = NarInfoError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let f = Fields::read(text)?;
        let full = f.store_path.ok_or(NarInfoError::Missing("StorePath"))?;
        let (store_dir, base) = full.rsplit_once('/').ok_or(NarInfoError::Path {
            field: "StorePath",
            source: StorePathError::NotInStore {
                store_dir: "(none)".into(),
            },
        })?;
        if !store_dir.starts_with('/') {
            return Err(NarInfoError::Path {
                field: "StorePath",
                source: StorePathError::NotInStore {
                    store_dir: store_dir.chars().take(80).collect(),
                },
            });
        }
        let url = f.url.ok_or(NarInfoError::Missing("URL"))?;
        if url.is_empty() {
            return Err(NarInfoError::Empty { field: "URL" });
        }
        let mut references: Vec<StorePath> = match f.references {
            None | Some("") => Vec::new(),
            Some(refs) => refs
                .split(' ')
                .filter(|r| !r.is_empty())
                .map(|r| basename("References", r))
                .collect::<Result<_, _>>()?,
        };
        // A set, as in Nix (`StorePathSet`, ordered by basename): a
        // narinfo listing references out of order or twice means the same
        // paths, and renders (and fingerprints) the same as a sorted one.
        references.sort_by_cached_key(ToString::to_string);
        references.dedup();
        Ok(NarInfo {
            store_dir: store_dir.to_owned(),
            store_path: basename("StorePath", base)?,
            url: url.to_owned(),
            compression: match f.compression {
                None | Some("") => "bzip2".to_owned(),
                Some(c) => c.to_owned(),
            },
            file_hash: f.file_hash.map(|h| hash("FileHash", h)).transpose()?,
            file_size: f.file_size.map(|s| number("FileSize", s)).transpose()?,
            nar_hash: hash(
                "NarHash",
                f.nar_hash.ok_or(NarInfoError::Missing("NarHash"))?,
            )?,
            nar_size: number(
                "NarSize",
                f.nar_size.ok_or(NarInfoError::Missing("NarSize"))?,
            )?,
            references,
            deriver: match f.deriver {
                None | Some("") | Some("unknown-deriver") => None,
                Some(d) => Some(basename("Deriver", d)?),
            },
            sigs: f.sigs.iter().map(|s| s.to_string()).collect(),
            ca: f.ca.filter(|c| !c.is_empty()).map(str::to_owned),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// In the exact shape `nix copy --to file://…` writes (field order of
    /// Nix 2.8's writer); real exports are parsed in tests/tests/narinfo_nix.rs.
    const FROM_NIX: &str = "StorePath: /nix/store/m28i9qy4zq4nwkz5cz3gj6ivani791d8-smoke
URL: nar/1w1fff338fvdw53sqgamddn1b2xgds473pv6y13gizdbqjv4i5p3.nar.xz
Compression: xz
FileHash: sha256:1w1fff338fvdw53sqgamddn1b2xgds473pv6y13gizdbqjv4i5p3
FileSize: 148
NarHash: sha256:0mdqa9w1p6cmli6976v4wi0sw9r4p5prkj7lzfd1877wk11c9c73
NarSize: 120
References: 8y7yr95drh588a264899m27vi59a9f4q-d m28i9qy4zq4nwkz5cz3gj6ivani791d8-smoke
Deriver: zzd5s3624vxx5wdhnyswkgbx03jap5m2-smoke.drv
Sig: test:itptK8cpdcApkH5CeCcpJkQfDbOHPR/SaaJo2XPGqsAN+to5ndY0Nhqh/olgAQI1aUmuk+g8L+M1OTrUO0rTcQ==
Sig: other:AAAA
CA: fixed:r:sha256:18smi2w1qpi3qyi5faciadxlvp2g8v7ilfzicyf1fnwr050jv79s
";

    #[test]
    fn roundtrips_what_nix_writes() {
        let info: NarInfo = FROM_NIX.parse().unwrap();
        assert_eq!(info.store_dir, "/nix/store");
        assert_eq!(info.compression, "xz");
        assert_eq!(info.file_size, Some(148));
        assert_eq!(info.references.len(), 2);
        assert_eq!(info.sigs.len(), 2);
        assert_eq!(info.to_string(), FROM_NIX);
    }

    /// Found by the long property run (issue 15): references out of order
    /// or repeated parsed as given, so the text rendered back differed.
    #[test]
    fn references_are_a_set_as_in_nix() {
        let d = "8y7yr95drh588a264899m27vi59a9f4q-d";
        let smoke = "m28i9qy4zq4nwkz5cz3gj6ivani791d8-smoke";
        let text = FROM_NIX.replace(
            &format!("References: {d} {smoke}"),
            &format!("References: {smoke} {d} {smoke}"),
        );
        let info: NarInfo = text.parse().unwrap();
        let refs: Vec<String> = info.references.iter().map(ToString::to_string).collect();
        assert_eq!(refs, [d, smoke]);
        assert_eq!(info.to_string(), FROM_NIX);
    }

    #[test]
    fn missing_compression_means_bzip2_and_empty_refs_render() {
        let text = "StorePath: /nix/store/m28i9qy4zq4nwkz5cz3gj6ivani791d8-smoke\nURL: nar/x.nar\nNarHash: sha256:0mdqa9w1p6cmli6976v4wi0sw9r4p5prkj7lzfd1877wk11c9c73\nNarSize: 120\nReferences: \nSystem: x86_64-linux\n";
        let info: NarInfo = text.parse().unwrap();
        assert_eq!(info.compression, "bzip2");
        assert!(info.references.is_empty());
        assert!(info.to_string().contains("\nReferences: \n"));
    }

    /// Found by the 1 000 000-case long run of
    /// `mutated_narinfo_is_an_error_or_stable`: a lone CR at the end of the
    /// text stayed in the last value (`Sig: …\r`), and writing that value
    /// with "\n" made "\r\n", which reads back without it.
    #[test]
    fn control_characters_in_a_line_are_refused() {
        let good = "StorePath: /nix/store/7h7qgvs4kgzsn8a6rb273saxyqh4jxlz-hello\nURL: nar/x.nar\n\
                    Compression: none\nNarHash: sha256:1b8m03r63zqhnjf7l5wnldhh7c134ap5vpj0850ymkq1iyzicy5s\n\
                    NarSize: 1\nReferences: \n";
        assert!(good.parse::<NarInfo>().is_ok());
        assert!(good.replace('\n', "\r\n").parse::<NarInfo>().is_ok());
        for bad in [
            format!("{good}Sig: k:sig\r"),
            format!("{good}Sig: k:s\rig\n"),
            format!("{good}Sig: k:s\0ig\n"),
            good.replace("URL: nar/x.nar", "URL: nar/x\u{7f}.nar"),
        ] {
            assert!(
                matches!(bad.parse::<NarInfo>(), Err(NarInfoError::Syntax { .. })),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn garbage_gets_named_errors() {
        assert_eq!(
            "hello".parse::<NarInfo>(),
            Err(NarInfoError::Syntax { line: 1 })
        );
        assert_eq!(
            "".parse::<NarInfo>(),
            Err(NarInfoError::Missing("StorePath"))
        );
        let dup = FROM_NIX.replace("NarSize: 120", "NarSize: 120\nNarSize: 121");
        assert_eq!(
            dup.parse::<NarInfo>(),
            Err(NarInfoError::Duplicate { field: "NarSize" })
        );
        let bad = FROM_NIX.replace("NarSize: 120", "NarSize: lots");
        assert!(matches!(
            bad.parse::<NarInfo>(),
            Err(NarInfoError::Number {
                field: "NarSize",
                ..
            })
        ));
        let bad = FROM_NIX.replace("References: 8y7", "References: 9e7");
        assert!(matches!(
            bad.parse::<NarInfo>(),
            Err(NarInfoError::Path {
                field: "References",
                ..
            })
        ));
    }

    proptest! {
        #[test]
        fn never_panics(s in "\\PC{0,400}") {
            let _ = s.parse::<NarInfo>();
        }

        #[test]
        fn never_panics_on_mutated_narinfo(pos in 0usize..700, junk in "\\PC{0,8}") {
            let mut text = FROM_NIX.to_owned();
            let mut p = pos.min(text.len());
            while !text.is_char_boundary(p) { p -= 1; }
            text.insert_str(p, &junk);
            let _ = text.parse::<NarInfo>();
        }
    }
}
