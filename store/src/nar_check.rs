//! A streaming NAR syntax checker: feed it a NAR's bytes in chunks of any
//! size and it says whether they are exactly one well-formed NAR, holding
//! only a few small strings and a stack of directory frames (never a
//! file's contents).
//!
//! It accepts what Nix 2.8's `parseDump` (`src/libutil/archive.cc`)
//! accepts: the `nix-archive-1` magic, then one node (see [`crate::nar`]
//! for the encoding), every padding byte zero, directory entries named
//! per [`check_name`] in strictly ascending order, and nothing after the
//! root node. A receiver runs it while staging an upload so a NAR Nix
//! would refuse to import is refused before the import.

use crate::nar::{NAR_MAGIC, check_name};

/// Longest string accepted outside file contents (names, symlink
/// targets, keywords), in bytes.
pub const MAX_TOKEN: u64 = 64 << 10;

/// Why bytes are not one well-formed NAR. The message names the first
/// problem and the NAR byte offset it was found at; it never quotes
/// more than a few bytes of the input.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not a valid NAR at byte {offset}: {reason}")]
pub struct NarSyntaxError {
    /// Offset (in the NAR) of the byte where the problem was seen.
    pub offset: u64,
    /// What is wrong.
    pub reason: String,
}

/// Where the lexer is within the current string.
#[derive(Debug)]
enum Lex {
    /// Reading the 8-byte little-endian length.
    Len { buf: [u8; 8], have: usize },
    /// Reading `remaining` payload bytes (kept when `keep`).
    Data {
        remaining: u64,
        len: u64,
        keep: bool,
    },
    /// Reading `remaining` zero padding bytes.
    Pad { remaining: usize },
}

/// What the grammar expects next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Expect {
    Magic,
    Open,
    Type,
    TypeValue,
    RegularAttr,
    ExecutableValue,
    Contents,
    RegularClose,
    Target,
    TargetValue,
    SymlinkClose,
    DirEntry,
    EntryOpen,
    EntryName,
    EntryNameValue,
    EntryNode,
    EntryClose,
    Done,
}

/// The checker's state. Create with [`NarChecker::new`], [`feed`] every
/// byte in order, then [`finish`].
///
/// [`feed`]: NarChecker::feed
/// [`finish`]: NarChecker::finish
#[derive(Debug)]
pub struct NarChecker {
    lex: Lex,
    expect: Expect,
    token: Vec<u8>,
    /// One frame per open directory: the last entry name seen in it.
    dirs: Vec<Option<Vec<u8>>>,
    offset: u64,
    failed: Option<NarSyntaxError>,
}

impl Default for NarChecker {
    fn default() -> Self {
        NarChecker::new()
    }
}

impl NarChecker {
    /// A checker expecting the start of a NAR.
    pub fn new() -> NarChecker {
        NarChecker {
            lex: Lex::Len {
                buf: [0; 8],
                have: 0,
            },
            expect: Expect::Magic,
            token: Vec::new(),
            dirs: Vec::new(),
            offset: 0,
            failed: None,
        }
    }

    fn fail<T>(&mut self, reason: impl Into<String>) -> Result<T, NarSyntaxError> {
        let e = NarSyntaxError {
            offset: self.offset,
            reason: reason.into(),
        };
        self.failed = Some(e.clone());
        Err(e)
    }

    /// Check the next `data` bytes of the NAR. After an error every later
    /// call returns the same error.
    pub fn feed(&mut self, mut data: &[u8]) -> Result<(), NarSyntaxError> {
        if let Some(e) = &self.failed {
            return Err(e.clone());
        }
        while !data.is_empty() {
            match &mut self.lex {
                Lex::Len { buf, have } => {
                    if self.expect == Expect::Done {
                        return self.fail("trailing bytes after the root node");
                    }
                    let n = (8 - *have).min(data.len());
                    buf[*have..*have + n].copy_from_slice(&data[..n]);
                    *have += n;
                    data = &data[n..];
                    self.offset += n as u64;
                    if *have == 8 {
                        let len = u64::from_le_bytes(*buf);
                        let keep = self.expect != Expect::Contents;
                        if keep && len > MAX_TOKEN {
                            return self.fail(format!(
                                "a {len}-byte string where a name, target or keyword was expected"
                            ));
                        }
                        self.token.clear();
                        self.lex = Lex::Data {
                            remaining: len,
                            len,
                            keep,
                        };
                        self.after_data()?;
                    }
                }
                Lex::Data {
                    remaining, keep, ..
                } => {
                    let n = usize::try_from(*remaining)
                        .unwrap_or(usize::MAX)
                        .min(data.len());
                    if *keep {
                        self.token.extend_from_slice(&data[..n]);
                    }
                    *remaining -= n as u64;
                    data = &data[n..];
                    self.offset += n as u64;
                    self.after_data()?;
                }
                Lex::Pad { remaining } => {
                    let n = (*remaining).min(data.len());
                    if data[..n].iter().any(|b| *b != 0) {
                        return self.fail("non-zero padding");
                    }
                    *remaining -= n;
                    data = &data[n..];
                    self.offset += n as u64;
                    if *remaining == 0 {
                        self.end_token()?;
                    }
                }
            }
        }
        Ok(())
    }

    /// After payload bytes: move to padding or end the token.
    fn after_data(&mut self) -> Result<(), NarSyntaxError> {
        if let Lex::Data {
            remaining: 0, len, ..
        } = self.lex
        {
            let pad = ((8 - len % 8) % 8) as usize;
            if pad > 0 {
                self.lex = Lex::Pad { remaining: pad };
            } else {
                self.end_token()?;
            }
        }
        Ok(())
    }

    fn end_token(&mut self) -> Result<(), NarSyntaxError> {
        self.lex = Lex::Len {
            buf: [0; 8],
            have: 0,
        };
        let token = std::mem::take(&mut self.token);
        self.grammar(&token)
    }

    fn keyword(&mut self, token: &[u8], want: &[u8], next: Expect) -> Result<(), NarSyntaxError> {
        if token == want {
            self.expect = next;
            Ok(())
        } else {
            self.fail(format!(
                "expected {:?}, found {:?}",
                String::from_utf8_lossy(want),
                String::from_utf8_lossy(&token[..token.len().min(16)])
            ))
        }
    }

    /// A node's `)` was read: back to the directory holding it, or done.
    fn node_closed(&mut self) {
        self.expect = if self.dirs.is_empty() {
            Expect::Done
        } else {
            Expect::EntryClose
        };
    }

    fn grammar(&mut self, t: &[u8]) -> Result<(), NarSyntaxError> {
        match self.expect {
            Expect::Magic => self.keyword(t, NAR_MAGIC, Expect::Open),
            Expect::Open => self.keyword(t, b"(", Expect::Type),
            Expect::Type => self.keyword(t, b"type", Expect::TypeValue),
            Expect::TypeValue => match t {
                b"regular" => {
                    self.expect = Expect::RegularAttr;
                    Ok(())
                }
                b"symlink" => {
                    self.expect = Expect::Target;
                    Ok(())
                }
                b"directory" => {
                    self.dirs.push(None);
                    self.expect = Expect::DirEntry;
                    Ok(())
                }
                _ => self.fail("unknown node type"),
            },
            Expect::RegularAttr => match t {
                b"executable" => {
                    self.expect = Expect::ExecutableValue;
                    Ok(())
                }
                _ => self.keyword(t, b"contents", Expect::Contents),
            },
            Expect::ExecutableValue => self.keyword(t, b"", Expect::RegularAttr),
            Expect::Contents => {
                self.expect = Expect::RegularClose;
                Ok(())
            }
            Expect::RegularClose | Expect::SymlinkClose => {
                self.keyword(t, b")", Expect::Done)?;
                self.node_closed();
                Ok(())
            }
            Expect::Target => self.keyword(t, b"target", Expect::TargetValue),
            Expect::TargetValue => {
                self.expect = Expect::SymlinkClose;
                Ok(())
            }
            Expect::DirEntry => match t {
                b")" => {
                    self.dirs.pop();
                    self.node_closed();
                    Ok(())
                }
                _ => self.keyword(t, b"entry", Expect::EntryOpen),
            },
            Expect::EntryOpen => self.keyword(t, b"(", Expect::EntryName),
            Expect::EntryName => self.keyword(t, b"name", Expect::EntryNameValue),
            Expect::EntryNameValue => {
                if let Err(e) = check_name(t) {
                    return self.fail(format!("bad entry name: {e}"));
                }
                let prev = self.dirs.last_mut().and_then(|p| p.as_deref());
                if prev.is_some_and(|p| p >= t) {
                    return self.fail("directory entries out of order or repeated");
                }
                if let Some(p) = self.dirs.last_mut() {
                    *p = Some(t.to_vec());
                }
                self.expect = Expect::EntryNode;
                Ok(())
            }
            Expect::EntryNode => self.keyword(t, b"node", Expect::Open),
            Expect::EntryClose => self.keyword(t, b")", Expect::DirEntry),
            Expect::Done => self.fail("trailing bytes after the root node"),
        }
    }

    /// The NAR ended: `Ok` if the bytes fed were exactly one NAR.
    pub fn finish(&self) -> Result<(), NarSyntaxError> {
        if let Some(e) = &self.failed {
            return Err(e.clone());
        }
        match (&self.lex, self.expect) {
            (Lex::Len { have: 0, .. }, Expect::Done) => Ok(()),
            _ => Err(NarSyntaxError {
                offset: self.offset,
                reason: "truncated".into(),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(out: &mut Vec<u8>, b: &[u8]) {
        out.extend_from_slice(&(b.len() as u64).to_le_bytes());
        out.extend_from_slice(b);
        out.resize(out.len() + (8 - b.len() % 8) % 8, 0);
    }

    fn sample() -> Vec<u8> {
        let mut n = Vec::new();
        for t in [
            &b"nix-archive-1"[..],
            b"(",
            b"type",
            b"directory",
            b"entry",
            b"(",
            b"name",
            b"a",
            b"node",
            b"(",
            b"type",
            b"regular",
            b"executable",
            b"",
            b"contents",
            b"hello world",
            b")",
            b")",
            b"entry",
            b"(",
            b"name",
            b"b",
            b"node",
            b"(",
            b"type",
            b"symlink",
            b"target",
            b"a",
            b")",
            b")",
            b")",
        ] {
            s(&mut n, t);
        }
        n
    }

    fn check(bytes: &[u8], chunk: usize) -> Result<(), NarSyntaxError> {
        let mut c = NarChecker::new();
        for part in bytes.chunks(chunk.max(1)) {
            c.feed(part)?;
        }
        c.finish()
    }

    #[test]
    fn valid_in_any_chunking() {
        let nar = sample();
        for chunk in [1, 3, 8, 13, 4096] {
            check(&nar, chunk).unwrap();
        }
    }

    #[test]
    fn truncated_trailing_garbage_refused() {
        let nar = sample();
        for cut in [0, 1, 8, 20, nar.len() - 1] {
            assert!(check(&nar[..cut], 7).is_err(), "cut {cut}");
        }
        let mut trailing = nar.clone();
        trailing.push(0);
        assert!(check(&trailing, 5).is_err());
        assert!(check(b"garbage garbage garbage", 4).is_err());
        let mut badpad = nar.clone();
        badpad[13] = 1; // padding of the magic
        assert!(check(&badpad, 64).is_err());
    }

    #[test]
    fn unsorted_and_bad_names_refused() {
        let mut n = Vec::new();
        for t in [
            &b"nix-archive-1"[..],
            b"(",
            b"type",
            b"directory",
            b"entry",
            b"(",
            b"name",
            b"..",
            b"node",
        ] {
            s(&mut n, t);
        }
        assert!(check(&n, 64).unwrap_err().reason.contains("name"));
    }
}
