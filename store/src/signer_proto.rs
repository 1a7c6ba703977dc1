//! The wire protocol between larder-server (or any client) and
//! larder-signer, over a unix stream socket. It lives here so that the
//! server never links the signer's key code and the signer never links HTTP.
//! larder's own protocol: Nix has no counterpart (its signing is in-process).
//!
//! Every message is one frame: a 4-byte big-endian length, then that many
//! bytes of UTF-8 JSON. Frames over [`MAX_FRAME`] are refused. A connection
//! carries any number of request/reply pairs, in order.
//!
//! Requests: `{"op":"sign","fingerprint":"1;/nix/store/…;sha256:…;N;…"}`
//! (optionally with `"keys":["name",…]`: sign only with the keys of those
//! names, as a server view that names its keys asks),
//! `{"op":"sign-batch","fingerprints":["1;…",…]}` (same `keys`; every
//! fingerprint checked against the store as `sign` checks one: signing
//! ahead in one round trip), `{"op":"public-keys"}`, `{"op":"log-key"}`,
//! `{"op":"metrics"}`.
//! Replies: `{"signatures":["name:base64",…]}`,
//! `{"batch":[{"signatures":[…]},{"refused":{…}},…]}` (one per fingerprint,
//! in order), `{"public_keys":["name:base64",…]}`, `{"log_key":"<base16>"}`,
//! `{"metrics":"<Prometheus text>"}`, or
//! `{"refused":{"code":"hash-mismatch","reason":"…"}}`.

use serde::{Deserialize, Serialize};
use thiserror::Error;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// Largest frame either side accepts: a fingerprint with thousands of
/// references fits easily.
pub const MAX_FRAME: u32 = 1 << 20;

/// Most fingerprints one [`Request::SignBatch`] may carry; a longer batch
/// is refused as malformed. Clients also keep a batch's frame under
/// [`MAX_FRAME`] (fingerprints with many references are long).
pub const MAX_BATCH: usize = 1024;

/// What a client asks the signer; the JSON object's `op` names the variant.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "kebab-case", deny_unknown_fields)]
pub enum Request {
    /// `sign`: sign this fingerprint with every key (or with the keys
    /// named in `keys`). Answered with [`Reply::Signatures`] or
    /// [`Reply::Refused`] (code `unknown-key` when a named key is not held).
    Sign {
        /// The canonical fingerprint text (see [`crate::fingerprint`]).
        fingerprint: String,
        /// Key names (the part before `:`) to sign with; absent = every
        /// key. Absent from the JSON when `None`, so older signers still
        /// understand requests without it.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        keys: Option<Vec<String>>,
    },
    /// `sign-batch`: [`Request::Sign`] for each of up to [`MAX_BATCH`]
    /// fingerprints, each checked against the store on its own, answered
    /// with one [`Reply::Batch`] (a refusal of the whole batch, e.g.
    /// `unknown-key`, is a plain [`Reply::Refused`]).
    SignBatch {
        /// Canonical fingerprint texts.
        fingerprints: Vec<String>,
        /// As [`Request::Sign`]'s `keys`.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        keys: Option<Vec<String>>,
    },
    /// `public-keys`: the public halves of the signer's keys, answered with
    /// [`Reply::PublicKeys`].
    PublicKeys,
    /// `log-key`: the key a server authenticates the signatures it keeps
    /// on disk with (HMAC-SHA256), answered with [`Reply::LogKey`]. Derived
    /// from the secret keys (so a line written by anyone without socket
    /// access is rejected), the same for the same key set across restarts,
    /// and useless for signing.
    LogKey,
    /// `metrics`: the signer's Prometheus metrics, answered with
    /// [`Reply::Metrics`].
    Metrics,
}

/// Why the signer refused; stable codes for logs, metrics and clients.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RefusalCode {
    /// Not a frame, not JSON, or not a request we know.
    Malformed,
    /// The fingerprint does not parse (or is not canonical).
    BadFingerprint,
    /// The path is not valid in the store.
    NotInStore,
    /// The path's NAR hash in the store differs from the fingerprint's.
    HashMismatch,
    /// The path's NAR size in the store differs from the fingerprint's.
    SizeMismatch,
    /// The path's references in the store differ from the fingerprint's.
    ReferencesMismatch,
    /// The peer's uid is not allowed.
    Forbidden,
    /// The signer could not check (store DB unreadable, …).
    Internal,
    /// A key named in the request is not one the signer holds.
    UnknownKey,
}

impl RefusalCode {
    /// Every code, so that metrics can export each one from the start.
    pub const ALL: [RefusalCode; 9] = [
        RefusalCode::Malformed,
        RefusalCode::BadFingerprint,
        RefusalCode::NotInStore,
        RefusalCode::HashMismatch,
        RefusalCode::SizeMismatch,
        RefusalCode::ReferencesMismatch,
        RefusalCode::Forbidden,
        RefusalCode::Internal,
        RefusalCode::UnknownKey,
    ];

    /// The code as it appears in JSON, logs and the `code` metric label
    /// (e.g. `hash-mismatch`).
    pub fn as_str(self) -> &'static str {
        match self {
            RefusalCode::Malformed => "malformed",
            RefusalCode::BadFingerprint => "bad-fingerprint",
            RefusalCode::NotInStore => "not-in-store",
            RefusalCode::HashMismatch => "hash-mismatch",
            RefusalCode::SizeMismatch => "size-mismatch",
            RefusalCode::ReferencesMismatch => "references-mismatch",
            RefusalCode::Forbidden => "forbidden",
            RefusalCode::Internal => "internal",
            RefusalCode::UnknownKey => "unknown-key",
        }
    }
}

/// A refused request: a stable code and a sentence for humans. The reason
/// names only public things (store paths, field names), never key material.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Refusal {
    /// Why, as a stable code.
    pub code: RefusalCode,
    /// Why, for the log of the client.
    pub reason: String,
}

/// The signer's answer to one [`Request`]; a JSON object with one key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum Reply {
    /// `signatures`: one `name:base64` signature per key, in key order.
    Signatures(Vec<String>),
    /// `batch`: the answer to each fingerprint of a [`Request::SignBatch`],
    /// in order: [`Reply::Signatures`] or [`Reply::Refused`].
    Batch(Vec<Reply>),
    /// `public_keys`: one `name:base64` public key per key, in key order.
    PublicKeys(Vec<String>),
    /// `log_key`: the answer to [`Request::LogKey`], 64 base16 digits.
    LogKey(String),
    /// `metrics`: the signer's metrics in Prometheus text format.
    Metrics(String),
    /// `refused`: the request was not answered, and why.
    Refused(Refusal),
}

/// Why a frame could not be read or written.
#[derive(Debug, Error)]
pub enum FrameError {
    /// The length prefix (in bytes) is over [`MAX_FRAME`]; the stream is
    /// out of step and should be closed.
    #[error("frame of {0} bytes exceeds the limit of {MAX_FRAME}")]
    TooLarge(u32),
    /// The body is not JSON of the expected message type.
    #[error("frame is not a valid message: {0}")]
    Json(#[from] serde_json::Error),
    /// Reading or writing the socket failed, or it ended mid-frame.
    #[error("socket: {0}")]
    Io(#[from] std::io::Error),
    /// The peer closed the connection cleanly between frames.
    #[error("peer closed the connection")]
    Closed,
}

/// A message as one line of JSON, for logs and the operator tool.
pub fn to_json<T: Serialize>(message: &T) -> String {
    serde_json::to_string(message).unwrap_or_else(|e| format!("(unprintable: {e})"))
}

/// Encode one message as a frame: length prefix and JSON body.
///
/// # Errors
/// [`FrameError::Json`] when it does not serialise, [`FrameError::TooLarge`]
/// when its body is over [`MAX_FRAME`].
pub fn encode_frame<T: Serialize>(message: &T) -> Result<Vec<u8>, FrameError> {
    let body = serde_json::to_vec(message)?;
    let len = u32::try_from(body.len())
        .ok()
        .filter(|&l| l <= MAX_FRAME)
        .ok_or(FrameError::TooLarge(
            u32::try_from(body.len()).unwrap_or(u32::MAX),
        ))?;
    let mut frame = Vec::with_capacity(4 + body.len());
    frame.extend_from_slice(&len.to_be_bytes());
    frame.extend_from_slice(&body);
    Ok(frame)
}

/// The body length a frame header announces, if acceptable.
fn body_len(header: [u8; 4]) -> Result<usize, FrameError> {
    let len = u32::from_be_bytes(header);
    if len > MAX_FRAME {
        return Err(FrameError::TooLarge(len));
    }
    Ok(len as usize)
}

fn closed_on_eof(e: std::io::Error) -> FrameError {
    if e.kind() == std::io::ErrorKind::UnexpectedEof {
        FrameError::Closed
    } else {
        e.into()
    }
}

/// Read one frame and decode it.
///
/// # Errors
/// [`FrameError::Closed`] on a clean end of stream before a frame,
/// [`FrameError::TooLarge`], [`FrameError::Json`] or [`FrameError::Io`].
pub async fn read_frame<T, R>(reader: &mut R) -> Result<T, FrameError>
where
    T: for<'de> Deserialize<'de>,
    R: AsyncRead + Unpin,
{
    let mut header = [0u8; 4];
    reader
        .read_exact(&mut header)
        .await
        .map_err(closed_on_eof)?;
    let mut body = vec![0u8; body_len(header)?];
    reader.read_exact(&mut body).await?;
    Ok(serde_json::from_slice(&body)?)
}

/// [`read_frame`] for blocking readers (std sockets with timeouts).
pub fn read_frame_blocking<T, R>(reader: &mut R) -> Result<T, FrameError>
where
    T: for<'de> Deserialize<'de>,
    R: std::io::Read,
{
    let mut header = [0u8; 4];
    reader.read_exact(&mut header).map_err(closed_on_eof)?;
    let mut body = vec![0u8; body_len(header)?];
    reader.read_exact(&mut body)?;
    Ok(serde_json::from_slice(&body)?)
}

/// Write `message` as one frame and flush.
///
/// # Errors
/// As [`encode_frame`], or [`FrameError::Io`].
pub async fn write_frame<T, W>(writer: &mut W, message: &T) -> Result<(), FrameError>
where
    T: Serialize,
    W: AsyncWrite + Unpin,
{
    writer.write_all(&encode_frame(message)?).await?;
    writer.flush().await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_shapes_are_as_documented() {
        let r = Request::Sign {
            fingerprint: "1;x".into(),
            keys: None,
        };
        assert_eq!(
            serde_json::to_string(&r).unwrap(),
            r#"{"op":"sign","fingerprint":"1;x"}"#
        );
        let r = Request::Sign {
            fingerprint: "1;x".into(),
            keys: Some(vec!["a".into()]),
        };
        let json = serde_json::to_string(&r).unwrap();
        assert_eq!(json, r#"{"op":"sign","fingerprint":"1;x","keys":["a"]}"#);
        assert_eq!(serde_json::from_str::<Request>(&json).unwrap(), r);
        assert_eq!(
            serde_json::to_string(&Request::PublicKeys).unwrap(),
            r#"{"op":"public-keys"}"#
        );
        assert_eq!(
            serde_json::to_string(&Request::LogKey).unwrap(),
            r#"{"op":"log-key"}"#
        );
        assert_eq!(
            serde_json::to_string(&Reply::LogKey("00".into())).unwrap(),
            r#"{"log_key":"00"}"#
        );
        let refused = Reply::Refused(Refusal {
            code: RefusalCode::HashMismatch,
            reason: "r".into(),
        });
        assert_eq!(
            serde_json::to_string(&refused).unwrap(),
            r#"{"refused":{"code":"hash-mismatch","reason":"r"}}"#
        );
        assert_eq!(
            serde_json::to_string(&Reply::Signatures(vec!["k:s".into()])).unwrap(),
            r#"{"signatures":["k:s"]}"#
        );
        let batch = Request::SignBatch {
            fingerprints: vec!["1;x".into(), "1;y".into()],
            keys: None,
        };
        assert_eq!(
            serde_json::to_string(&batch).unwrap(),
            r#"{"op":"sign-batch","fingerprints":["1;x","1;y"]}"#
        );
        let reply = Reply::Batch(vec![
            Reply::Signatures(vec!["k:s".into()]),
            Reply::Refused(Refusal {
                code: RefusalCode::NotInStore,
                reason: "r".into(),
            }),
        ]);
        let json = serde_json::to_string(&reply).unwrap();
        assert_eq!(
            json,
            r#"{"batch":[{"signatures":["k:s"]},{"refused":{"code":"not-in-store","reason":"r"}}]}"#
        );
        assert_eq!(serde_json::from_str::<Reply>(&json).unwrap(), reply);
        for code in RefusalCode::ALL {
            let json = serde_json::to_string(&code).unwrap();
            assert_eq!(json, format!("\"{}\"", code.as_str()));
        }
    }

    #[tokio::test]
    async fn frames_roundtrip_and_bad_frames_are_refused() {
        let mut buf = Vec::new();
        write_frame(&mut buf, &Request::Metrics).await.unwrap();
        let back: Request = read_frame(&mut buf.as_slice()).await.unwrap();
        assert_eq!(back, Request::Metrics);

        let huge = (MAX_FRAME + 1).to_be_bytes();
        let err = read_frame::<Request, _>(&mut &huge[..]).await.unwrap_err();
        assert!(matches!(err, FrameError::TooLarge(_)));

        let mut garbage = 5u32.to_be_bytes().to_vec();
        garbage.extend_from_slice(b"hello");
        let err = read_frame::<Request, _>(&mut garbage.as_slice())
            .await
            .unwrap_err();
        assert!(matches!(err, FrameError::Json(_)));

        let err = read_frame::<Request, _>(&mut &[][..]).await.unwrap_err();
        assert!(matches!(err, FrameError::Closed));
        let unknown = br#"{"op":"sign","fingerprint":"x","extra":1}"#;
        let mut frame = (unknown.len() as u32).to_be_bytes().to_vec();
        frame.extend_from_slice(unknown);
        assert!(
            read_frame::<Request, _>(&mut frame.as_slice())
                .await
                .is_err()
        );
    }
}
