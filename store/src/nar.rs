//! The NAR format as a layout: no I/O.
//!
//! A [`NarNode`] tree describes a path (what [`crate::dump`] finds on disk).
//! [`NarPlan::new`] turns it into the NAR as a sequence of [`Segment`]s:
//! literal header bytes, and file contents that live on disk, each at a known
//! NAR offset. From the plan alone we know the NAR's size, its listing
//! (`nix nar ls --json -R`), and where any byte offset falls, so a server can
//! answer `Range` requests by seeking instead of regenerating bytes.
//!
//! Encoding: every string is its u64-LE length, its bytes, and zero padding
//! to a multiple of 8. A regular file is
//! `( type regular [executable ""] contents <bytes> )`, a symlink
//! `( type symlink target <bytes> )`, a directory
//! `( type directory (entry ( name <n> node <node> ))* )` with entries in
//! strictly ascending byte order. The archive starts with `nix-archive-1`.
//! This is what Nix's `dumpPath` writes and `parseDump` reads
//! (`src/libutil/archive.cc`); the listing is that of `listNar`
//! (`src/libstore/nar-accessor.cc`).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde_json::{Map, Value, json};

/// The magic string that starts every NAR.
pub const NAR_MAGIC: &[u8] = b"nix-archive-1";

/// One node of the tree a NAR describes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NarNode {
    /// A regular file: its size, whether its owner may execute it, and where
    /// its contents really are.
    Regular {
        /// Its length, in bytes.
        size: u64,
        /// Whether the owner's execute bit is set (NAR's `executable`).
        executable: bool,
        /// The real file on disk its contents are read from.
        path: PathBuf,
    },
    /// A symlink: its target, as raw bytes.
    Symlink {
        /// The target, unresolved and unchecked.
        target: Vec<u8>,
    },
    /// A directory: `(name, node)` in strictly ascending byte order of name.
    Directory {
        /// Its entries, names as raw bytes.
        entries: Vec<(Vec<u8>, NarNode)>,
    },
}

/// Why a directory entry's name cannot go into a NAR.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum BadName {
    /// The name is empty.
    #[error("the name is empty")]
    Empty,
    /// The name is `.` or `..`.
    #[error("the name is `.` or `..`")]
    Dots,
    /// The name contains `/`.
    #[error("the name contains `/`")]
    Slash,
    /// The name contains a NUL byte.
    #[error("the name contains a NUL byte")]
    Nul,
}

/// A tree that has no valid NAR encoding.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NarError {
    /// An entry whose name a NAR cannot hold.
    #[error("NAR entry {path:?} has an invalid name: {reason}")]
    BadName {
        /// The entry's path inside the NAR (lossily decoded).
        path: String,
        /// What is wrong with its name.
        reason: BadName,
    },
    /// Entries not in strictly ascending byte order (Nix's `restorePath`
    /// refuses them, and two equal names would be ambiguous).
    #[error("NAR directory {path:?} lists {name:?} out of order or twice")]
    Unsorted {
        /// The directory's path inside the NAR (lossily decoded).
        path: String,
        /// The first entry out of order (lossily decoded).
        name: String,
    },
}

/// Checks that `name` may name a directory entry in a NAR.
pub fn check_name(name: &[u8]) -> Result<(), BadName> {
    match name {
        [] => Err(BadName::Empty),
        b"." | b".." => Err(BadName::Dots),
        _ if name.contains(&b'/') => Err(BadName::Slash),
        _ if name.contains(&0) => Err(BadName::Nul),
        _ => Ok(()),
    }
}

/// What one segment of a NAR is made of.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SegmentData<'a> {
    /// Bytes of the NAR's structure (tags, names, lengths, padding).
    Literal(&'a [u8]),
    /// The contents of a regular file: `size` bytes read from `path`.
    Contents {
        /// The real file on disk.
        path: &'a Path,
        /// Bytes to read from it.
        size: u64,
    },
}

/// A segment of a NAR and where it starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Segment<'a> {
    /// Offset of its first byte in the NAR.
    pub nar_offset: u64,
    /// Its bytes, or where to read them.
    pub data: SegmentData<'a>,
}

impl Segment<'_> {
    /// Its length, in bytes.
    pub fn len(&self) -> u64 {
        match self.data {
            SegmentData::Literal(bytes) => bytes.len() as u64,
            SegmentData::Contents { size, .. } => size,
        }
    }

    /// True when it holds no bytes (an empty file's contents).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[derive(Debug)]
enum Part {
    /// A range of `PlanInner::literals`.
    Literal { start: usize, end: usize },
    /// The contents of the regular file at `files[index]`.
    Contents { index: usize },
}

#[derive(Debug)]
struct PlanInner {
    root: NarNode,
    literals: Vec<u8>,
    /// The regular files, in NAR order: path and size.
    files: Vec<(PathBuf, u64)>,
    parts: Vec<Part>,
    /// `offsets[i]` is where `parts[i]` starts; ascending.
    offsets: Vec<u64>,
    size: u64,
}

/// The NAR of a tree, as segments at known offsets. Cheap to clone.
#[derive(Debug, Clone)]
pub struct NarPlan {
    inner: Arc<PlanInner>,
}

impl NarPlan {
    /// Lays out the NAR of `root`, checking names and their order.
    pub fn new(root: NarNode) -> Result<NarPlan, NarError> {
        let mut builder = Builder::default();
        builder.string(NAR_MAGIC);
        builder.node(&root, &mut String::new())?;
        builder.cut_literal();
        let Builder {
            literals,
            files,
            parts,
            offsets,
            offset,
            ..
        } = builder;
        Ok(NarPlan {
            inner: Arc::new(PlanInner {
                root,
                literals,
                files,
                parts,
                offsets,
                size: offset,
            }),
        })
    }

    /// The tree this plan encodes.
    pub fn root(&self) -> &NarNode {
        &self.inner.root
    }

    /// The NAR's size in bytes.
    pub fn nar_size(&self) -> u64 {
        self.inner.size
    }

    /// How many segments the NAR has.
    pub fn segment_count(&self) -> usize {
        self.inner.parts.len()
    }

    /// The `index`th segment, if there is one.
    pub fn segment(&self, index: usize) -> Option<Segment<'_>> {
        let inner = &*self.inner;
        let data = match *inner.parts.get(index)? {
            Part::Literal { start, end } => SegmentData::Literal(&inner.literals[start..end]),
            Part::Contents { index } => {
                let (path, size) = &inner.files[index];
                SegmentData::Contents { path, size: *size }
            }
        };
        Some(Segment {
            nar_offset: inner.offsets[index],
            data,
        })
    }

    /// How many regular files the NAR holds.
    pub fn file_count(&self) -> usize {
        self.inner.files.len()
    }

    /// The segments in NAR order.
    pub fn segments(&self) -> impl Iterator<Item = Segment<'_>> {
        (0..self.segment_count()).filter_map(|i| self.segment(i))
    }

    /// Where NAR byte `offset` is: the segment's index and the offset within
    /// it. `None` when `offset` is at or past the end of the NAR.
    pub fn locate(&self, offset: u64) -> Option<(usize, u64)> {
        if offset >= self.inner.size {
            return None;
        }
        // Empty segments (empty files) share their offset with the next
        // segment: take the last segment starting at or before `offset`.
        let index = self.inner.offsets.partition_point(|&o| o <= offset) - 1;
        Some((index, offset - self.inner.offsets[index]))
    }

    /// The listing `nix nar ls --json -R <nar> /` prints, as a JSON value:
    /// regular files with `size`, `executable` (only when true) and
    /// `narOffset` (where their contents start), symlinks with `target`,
    /// directories with `entries`. Names and targets that are not UTF-8 are
    /// converted lossily here (two may merge): for what a client is sent,
    /// use [`NarPlan::listing_json`], which keeps the bytes.
    pub fn listing(&self) -> Value {
        let inner = &*self.inner;
        let mut content_offsets = inner
            .parts
            .iter()
            .zip(&inner.offsets)
            .filter(|(part, _)| matches!(part, Part::Contents { .. }))
            .map(|(_, &offset)| offset);
        list_node(&inner.root, &mut content_offsets)
    }

    /// The listing as the exact bytes Nix 2.8 writes for it (`nix nar ls
    /// --json -R`, and the `root` of a `.ls` file that `write-nar-listing`
    /// uploads): keys in Nix's order, names and symlink targets as their raw
    /// bytes, only `"`, `\\` and control characters escaped. A name that is
    /// not UTF-8 stays exactly itself, one entry per NAR entry, so the
    /// listing is reversible, though such a document is not strict JSON
    /// (as Nix's is not). Mirrors `listNar` (`nar-accessor.cc`) and
    /// `toJSON<std::string_view>` (`libutil/json.cc`).
    pub fn listing_json(&self) -> Vec<u8> {
        let inner = &*self.inner;
        let mut content_offsets = inner
            .parts
            .iter()
            .zip(&inner.offsets)
            .filter(|(part, _)| matches!(part, Part::Contents { .. }))
            .map(|(_, &offset)| offset);
        let mut out = Vec::new();
        write_node(&inner.root, &mut content_offsets, &mut out);
        out
    }
}

/// A JSON string the way Nix 2.8's JSON writer quotes one: bytes as they
/// are, but for `"`, `\`, `\n`, `\r`, `\t` and the other control
/// characters (`\u00xx`).
pub fn write_json_string(bytes: &[u8], out: &mut Vec<u8>) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    out.push(b'"');
    for &b in bytes {
        match b {
            b'"' | b'\\' => out.extend_from_slice(&[b'\\', b]),
            b'\n' => out.extend_from_slice(b"\\n"),
            b'\r' => out.extend_from_slice(b"\\r"),
            b'\t' => out.extend_from_slice(b"\\t"),
            0..=31 => out.extend_from_slice(&[
                b'\\',
                b'u',
                b'0',
                b'0',
                HEX[usize::from(b >> 4)],
                HEX[usize::from(b & 0xf)],
            ]),
            _ => out.push(b),
        }
    }
    out.push(b'"');
}

fn write_node(node: &NarNode, content_offsets: &mut impl Iterator<Item = u64>, out: &mut Vec<u8>) {
    match node {
        NarNode::Regular {
            size, executable, ..
        } => {
            let offset = content_offsets
                .next()
                .expect("the plan has one contents segment per regular file");
            out.extend_from_slice(format!("{{\"type\":\"regular\",\"size\":{size}").as_bytes());
            if *executable {
                out.extend_from_slice(b",\"executable\":true");
            }
            out.extend_from_slice(format!(",\"narOffset\":{offset}}}").as_bytes());
        }
        NarNode::Symlink { target } => {
            out.extend_from_slice(b"{\"type\":\"symlink\",\"target\":");
            write_json_string(target, out);
            out.push(b'}');
        }
        NarNode::Directory { entries } => {
            out.extend_from_slice(b"{\"type\":\"directory\",\"entries\":{");
            for (i, (name, child)) in entries.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_json_string(name, out);
                out.push(b':');
                write_node(child, content_offsets, out);
            }
            out.extend_from_slice(b"}}");
        }
    }
}

fn list_node(node: &NarNode, content_offsets: &mut impl Iterator<Item = u64>) -> Value {
    match node {
        NarNode::Regular {
            size, executable, ..
        } => {
            let mut object = Map::new();
            object.insert("type".into(), "regular".into());
            object.insert("size".into(), (*size).into());
            if *executable {
                object.insert("executable".into(), true.into());
            }
            let offset = content_offsets
                .next()
                .expect("the plan has one contents segment per regular file");
            object.insert("narOffset".into(), offset.into());
            Value::Object(object)
        }
        NarNode::Symlink { target } => {
            json!({"type": "symlink", "target": String::from_utf8_lossy(target)})
        }
        NarNode::Directory { entries } => {
            let entries: Map<String, Value> = entries
                .iter()
                .map(|(name, child)| {
                    let name = String::from_utf8_lossy(name).into_owned();
                    (name, list_node(child, content_offsets))
                })
                .collect();
            json!({"type": "directory", "entries": entries})
        }
    }
}

/// Accumulates literal bytes, cutting a literal segment at each file.
#[derive(Default)]
struct Builder {
    literals: Vec<u8>,
    files: Vec<(PathBuf, u64)>,
    parts: Vec<Part>,
    offsets: Vec<u64>,
    /// Where the pending (not yet cut) literal segment starts in `literals`.
    literal_start: usize,
    /// The NAR offset of the pending literal segment.
    offset: u64,
}

impl Builder {
    fn string(&mut self, bytes: &[u8]) {
        self.literals
            .extend_from_slice(&(bytes.len() as u64).to_le_bytes());
        self.literals.extend_from_slice(bytes);
        self.pad(bytes.len() as u64);
    }

    fn pad(&mut self, len: u64) {
        let padding = (8 - len % 8) % 8;
        self.literals
            .extend(std::iter::repeat_n(0, padding as usize));
    }

    fn strings(&mut self, strings: &[&[u8]]) {
        for s in strings {
            self.string(s);
        }
    }

    /// Ends the pending literal segment.
    fn cut_literal(&mut self) {
        self.parts.push(Part::Literal {
            start: self.literal_start,
            end: self.literals.len(),
        });
        self.offsets.push(self.offset);
        self.offset += (self.literals.len() - self.literal_start) as u64;
        self.literal_start = self.literals.len();
    }

    /// Adds a file's contents as a segment of its own.
    fn contents(&mut self, path: &Path, size: u64) {
        self.cut_literal();
        self.parts.push(Part::Contents {
            index: self.files.len(),
        });
        self.offsets.push(self.offset);
        self.offset += size;
        self.files.push((path.to_owned(), size));
    }

    /// Encodes `node`; `at` is its path inside the NAR, for error messages.
    fn node(&mut self, node: &NarNode, at: &mut String) -> Result<(), NarError> {
        self.strings(&[b"(", b"type"]);
        match node {
            NarNode::Regular {
                size,
                executable,
                path,
            } => {
                self.string(b"regular");
                if *executable {
                    self.strings(&[b"executable", b""]);
                }
                self.string(b"contents");
                self.literals.extend_from_slice(&size.to_le_bytes());
                self.contents(path, *size);
                self.pad(*size);
            }
            NarNode::Symlink { target } => self.strings(&[b"symlink", b"target", target]),
            NarNode::Directory { entries } => {
                self.string(b"directory");
                self.entries(entries, at)?;
            }
        }
        self.string(b")");
        Ok(())
    }

    fn entries(&mut self, entries: &[(Vec<u8>, NarNode)], at: &mut String) -> Result<(), NarError> {
        let mut previous: Option<&[u8]> = None;
        for (name, child) in entries {
            let parent_len = at.len();
            at.push('/');
            at.push_str(&String::from_utf8_lossy(name));
            check_name(name).map_err(|reason| NarError::BadName {
                path: at.clone(),
                reason,
            })?;
            if previous.is_some_and(|p| p >= name.as_slice()) {
                return Err(NarError::Unsorted {
                    path: at[..parent_len].to_owned(),
                    name: String::from_utf8_lossy(name).into_owned(),
                });
            }
            previous = Some(name);
            self.strings(&[b"entry", b"(", b"name", name, b"node"]);
            self.node(child, at)?;
            self.string(b")");
            at.truncate(parent_len);
        }
        Ok(())
    }
}

#[cfg(test)]
#[path = "nar_tests.rs"]
mod tests;
