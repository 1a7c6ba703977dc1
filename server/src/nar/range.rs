//! The `Range` header, for one byte range (what Nix sends to resume a
//! download).
//!
//! RFC 9110 §14.2 lets a server ignore `Range`, and requires it to ignore a
//! range unit it does not know. So a `Range` larder does not serve as one
//! range (another unit, several ranges, a header that is not ASCII) is
//! ignored and the whole body is sent with 200, never a 416 for a body that
//! exists: a multipart answer is something no Nix client asks for. So is a
//! request with several `Range` header lines (the field is a singleton).
//! A `bytes` range that is malformed is a 400; one that starts past the
//! end is a 416, however many digits its numbers have (a number too large
//! for 64 bits is past any end: a suffix that long is the whole body).

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

/// Parse `header` against a body of `size` bytes: `None` when it is to be
/// ignored (the whole body, 200), 400 for a malformed byte range, 416 for
/// one outside the body.
pub fn parse(header: &[u8], size: u64) -> Result<Option<ByteRange>, ServerError> {
    let Ok(header) = std::str::from_utf8(header) else {
        return Ok(None);
    };
    let header = header.trim();
    let Some((unit, spec)) = header.split_once('=') else {
        return Ok(None);
    };
    if !unit.trim().eq_ignore_ascii_case("bytes") || spec.contains(',') {
        return Ok(None);
    }
    single(header, spec.trim(), size).map(Some)
}

/// The request's `Range` header when it has exactly one (`None` also for
/// several lines, which are ignored like several ranges).
pub fn header(headers: &actix_web::http::header::HeaderMap) -> Option<&[u8]> {
    let mut lines = headers.get_all(actix_web::http::header::RANGE);
    let first = lines.next()?;
    match lines.next() {
        Some(_) => None,
        None => Some(first.as_bytes()),
    }
}

/// Whether `header` asks for one byte range (whatever the body's size).
pub fn is_single_range(header: &[u8]) -> bool {
    // A range starting at 2^64 - 1 or beyond is unsatisfiable even here.
    matches!(
        parse(header, u64::MAX),
        Ok(Some(_)) | Err(ServerError::RangeNotSatisfiable { .. })
    )
}

fn single(header: &str, spec: &str, size: u64) -> Result<ByteRange, ServerError> {
    let bad = || ServerError::BadRequest(format!("malformed Range header {header:?}"));
    let unsatisfiable = ServerError::RangeNotSatisfiable { size };
    let (first, last) = spec.split_once('-').ok_or_else(bad)?;
    let number = |s: &str| -> Result<u64, ServerError> {
        if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
            return Err(bad());
        }
        // All digits, so only too large to parse: past any body's end.
        Ok(s.parse().unwrap_or(u64::MAX))
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
    use proptest::prelude::*;

    fn ok(h: &str, size: u64) -> (u64, u64) {
        let r = parse(h.as_bytes(), size).unwrap().unwrap();
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
            parse(b"bytes=3-5", 10).unwrap().unwrap().content_range(10),
            "bytes 3-5/10"
        );
    }

    #[test]
    fn bad_ranges() {
        let status = |h: &str| match parse(h.as_bytes(), 10) {
            Ok(None) => 200,
            Err(ServerError::BadRequest(_)) => 400,
            Err(ServerError::RangeNotSatisfiable { size: 10 }) => 416,
            other => panic!("{h}: {other:?}"),
        };
        assert_eq!(status("bytes=10-"), 416);
        assert_eq!(status("bytes=0-1,3-4"), 200);
        assert_eq!(status("bytes=0-1, 20-30"), 200);
        assert_eq!(status("items=0-1"), 200);
        assert_eq!(status("bytes"), 200);
        assert_eq!(ok("Bytes=2-", 10), (2, 10));
        assert!(is_single_range(b"bytes=100-"));
        assert!(is_single_range(b"bytes=99999999999999999999999-"));
        assert!(!is_single_range(b"bytes=1-2,4-5"));
        assert!(!is_single_range(b"pages=1-2"));
        assert!(matches!(parse(b"bytes=\xff", 10), Ok(None)));
        assert_eq!(status("bytes=-0"), 416);
        assert_eq!(status("bytes=5-2"), 400);
        assert_eq!(status("bytes=a-b"), 400);
        assert_eq!(status("bytes=+1-2"), 400);
        assert_eq!(status("bytes=99999999999999999999999-"), 416);
        assert_eq!(
            status("bytes=99999999999999999999999-99999999999999999999999"),
            416
        );
        assert_eq!(ok("bytes=2-99999999999999999999999", 10), (2, 10));
        assert_eq!(ok("bytes=-99999999999999999999999", 10), (0, 10));
        assert_eq!(ok("bytes=0-18446744073709551615", 10), (0, 10));
        assert_eq!(status("bytes=18446744073709551615-"), 416);
        assert_eq!(status("bytes=-"), 400);
    }

    /// What a `Range` header means for a body of `size` bytes, written from
    /// RFC 9110 §14 independently of [`parse`]: 200 (ignored), 400, 416 or
    /// 206 with the range. A number too large for 64 bits counts as
    /// 2^64 - 1, past any body's end (the module's documented choice).
    fn oracle(header: &str, size: u64) -> Result<Option<(u64, u64)>, u16> {
        let Some((unit, spec)) = header.trim().split_once('=') else {
            return Ok(None);
        };
        if !unit.trim().eq_ignore_ascii_case("bytes") || spec.contains(',') {
            return Ok(None);
        }
        let (first, last) = spec.trim().split_once('-').ok_or(400u16)?;
        let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
        let value = |s: &str| -> u128 {
            let s = s.trim_start_matches('0');
            let n: u128 = if s.len() > 20 {
                u128::MAX
            } else {
                s.parse().unwrap_or(0)
            };
            n.min(u128::from(u64::MAX))
        };
        let size = u128::from(size);
        let (start, end) = match (first.is_empty(), digits(first), digits(last)) {
            (true, _, true) => {
                let n = value(last);
                if n == 0 {
                    return Err(416);
                }
                (size.saturating_sub(n), size)
            }
            (false, true, _) if last.is_empty() => (value(first), size),
            (false, true, true) => {
                let (a, b) = (value(first), value(last));
                if b < a {
                    return Err(400);
                }
                (a, b.saturating_add(1).min(size))
            }
            _ => return Err(400),
        };
        if start >= size {
            return Err(416);
        }
        Ok(Some((start as u64, end as u64)))
    }

    fn status(header: &[u8], size: u64) -> Result<Option<(u64, u64)>, u16> {
        match parse(header, size) {
            Ok(r) => Ok(r.map(|r| (r.start, r.end))),
            Err(ServerError::BadRequest(_)) => Err(400),
            Err(ServerError::RangeNotSatisfiable { size: s }) if s == size => Err(416),
            Err(e) => panic!("unexpected {e:?}"),
        }
    }

    /// A decimal number: small, near a size, or of absurd length.
    fn number() -> impl Strategy<Value = String> {
        prop_oneof![
            (0u64..2000).prop_map(|n| n.to_string()),
            any::<u64>().prop_map(|n| n.to_string()),
            "0{0,3}[0-9]{1,40}",
            Just(String::new()),
        ]
    }

    fn near_range() -> impl Strategy<Value = String> {
        (
            prop::sample::select(vec![
                "bytes", "Bytes", "BYTES", " bytes ", "items", "", "bytes ",
            ]),
            prop::sample::select(vec!["=", "= ", "", "=="]),
            number(),
            prop::sample::select(vec!["-", "", "--", " - ", "-+"]),
            number(),
            prop::sample::select(vec!["", ",0-1", ", 5-", " ", "\t", "x"]),
        )
            .prop_map(|(u, eq, a, dash, b, tail)| format!("{u}{eq}{a}{dash}{b}{tail}"))
    }

    proptest! {
        #[test]
        fn range_parser_agrees_with_the_rfc(header in near_range(), size in prop_oneof![0u64..3000, any::<u64>()]) {
            prop_assert_eq!(status(header.as_bytes(), size), oracle(&header, size), "{:?} of {}", header, size);
        }

        #[test]
        fn range_parser_never_panics_and_stays_in_the_body(
            header in prop::collection::vec(any::<u8>(), 0..64),
            size in any::<u64>(),
        ) {
            if let Ok(Some(r)) = parse(&header, size) {
                prop_assert!(r.start < r.end && r.end <= size, "{:?}", r);
                prop_assert!(is_single_range(&header));
            }
        }
    }
}
