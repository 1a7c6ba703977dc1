//! The `Range` header, for one byte range (what Nix sends to resume a
//! download). Multiple ranges are refused as unsatisfiable rather than
//! answered with a multipart body nobody here asks for.

use crate::error::ServerError;

/// Bytes `start..end` (end exclusive) of a body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ByteRange {
    pub start: u64,
    pub end: u64,
}

impl ByteRange {
    pub fn len(&self) -> u64 {
        self.end - self.start
    }

    pub fn is_empty(&self) -> bool {
        self.start == self.end
    }

    /// `Content-Range` of this range within `size` bytes.
    pub fn content_range(&self, size: u64) -> String {
        format!("bytes {}-{}/{size}", self.start, self.end - 1)
    }
}

/// Parse `header` against a body of `size` bytes: 400 for syntax, 416 for a
/// range outside the body.
pub fn parse(header: &str, size: u64) -> Result<ByteRange, ServerError> {
    let bad = || ServerError::BadRequest(format!("malformed Range header {header:?}"));
    let unsatisfiable = ServerError::RangeNotSatisfiable { size };
    let spec = header.trim().strip_prefix("bytes=").ok_or_else(bad)?.trim();
    if spec.contains(',') {
        return Err(unsatisfiable);
    }
    let (first, last) = spec.split_once('-').ok_or_else(bad)?;
    let number = |s: &str| -> Result<u64, ServerError> {
        if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
            return Err(bad());
        }
        s.parse().map_err(|_| bad())
    };
    let range = if first.is_empty() {
        // `-N`: the last N bytes.
        let n = number(last)?;
        if n == 0 {
            return Err(unsatisfiable);
        }
        ByteRange {
            start: size.saturating_sub(n),
            end: size,
        }
    } else {
        let start = number(first)?;
        let end = if last.is_empty() {
            size
        } else {
            let last = number(last)?;
            if last < start {
                return Err(bad());
            }
            last.saturating_add(1).min(size)
        };
        ByteRange { start, end }
    };
    if range.start >= size {
        return Err(unsatisfiable);
    }
    Ok(range)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(h: &str, size: u64) -> (u64, u64) {
        let r = parse(h, size).unwrap();
        (r.start, r.end)
    }

    #[test]
    fn single_ranges() {
        assert_eq!(ok("bytes=0-", 10), (0, 10));
        assert_eq!(ok("bytes=3-5", 10), (3, 6));
        assert_eq!(ok("bytes=3-100", 10), (3, 10));
        assert_eq!(ok("bytes=-4", 10), (6, 10));
        assert_eq!(ok("bytes=-40", 10), (0, 10));
        assert_eq!(
            parse("bytes=3-5", 10).unwrap().content_range(10),
            "bytes 3-5/10"
        );
    }

    #[test]
    fn bad_ranges() {
        let status = |h: &str| match parse(h, 10) {
            Err(ServerError::BadRequest(_)) => 400,
            Err(ServerError::RangeNotSatisfiable { size: 10 }) => 416,
            other => panic!("{h}: {other:?}"),
        };
        assert_eq!(status("bytes=10-"), 416);
        assert_eq!(status("bytes=0-1,3-4"), 416);
        assert_eq!(status("bytes=-0"), 416);
        assert_eq!(status("bytes=5-2"), 400);
        assert_eq!(status("items=0-1"), 400);
        assert_eq!(status("bytes=a-b"), 400);
        assert_eq!(status("bytes=+1-2"), 400);
        assert_eq!(status("bytes=99999999999999999999999-"), 400);
        assert_eq!(status("bytes=-"), 400);
    }
}
