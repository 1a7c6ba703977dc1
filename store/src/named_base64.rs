//! The `name:base64` text form that Nix uses for keys and signatures
//! (`cache.example.org-1:…`), and the errors of parsing it.
//!
//! Mirrors Nix's `Key::Key` / `split` in `src/libutil/crypto.cc` (Nix 2.8;
//! `src/libutil/signature/local-keys.cc` in later releases): the name is
//! everything before the first `:`, the rest is standard base64 with
//! padding. The payload's length depends on what the text holds: 32 bytes
//! for a public key, 64 for a secret key (seed ‖ public) or a signature.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use thiserror::Error;

/// Why a key or signature text was refused. `what` names the kind of text
/// (`"public key"`, `"secret key"`, `"signature"`, `"key name"`), so that a
/// message says which input was wrong. No variant ever carries the text
/// itself: it may be a secret key.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum KeyError {
    /// The text has no `:` between name and payload.
    #[error("{what} must look like `name:base64`; no ':' found")]
    NoColon {
        /// The kind of text, e.g. `"secret key"`.
        what: &'static str,
    },
    /// The name before `:` is empty (or, for a new key, contains `:`).
    #[error("{what} has an empty name before ':'")]
    EmptyName {
        /// The kind of text, e.g. `"signature"`.
        what: &'static str,
    },
    /// The payload after `:` is not standard, padded base64.
    #[error("{what} is not valid base64 after the name")]
    Base64 {
        /// The kind of text, e.g. `"public key"`.
        what: &'static str,
    },
    /// The payload decodes to the wrong number of bytes.
    #[error("{what} must be {expected} bytes, got {actual} (truncated or not a Nix key?)")]
    Length {
        /// The kind of text, e.g. `"secret key"`.
        what: &'static str,
        /// Bytes this kind must decode to (32 or 64).
        expected: usize,
        /// Bytes the payload decoded to.
        actual: usize,
    },
    /// A secret key whose last 32 bytes are not the public key of its first
    /// 32 (the seed): a corrupt or hand-edited key file. Returned by
    /// larder-signer, which holds the ed25519 code that can tell.
    #[error("secret key's public half does not match its seed (corrupt key file)")]
    PublicMismatch,
    /// 32 bytes that are not a point on the ed25519 curve, so no signature
    /// can ever verify with them. larder-store checks syntax only and never
    /// returns this; larder-sync does, after checking `--trusted-key` with an
    /// ed25519 library.
    #[error("public key is not a valid ed25519 point")]
    BadPublicKey,
}

/// Splits `text` (surrounding whitespace ignored) at its first `:` and
/// decodes the base64 after it into `payload`, which must decode to exactly
/// `expected` bytes. Returns the name.
///
/// `payload` is cleared, then grown once from empty, so a caller decoding a
/// secret can pass a buffer it zeroizes on drop and no copy of the secret
/// is left behind in a freed allocation. `what` names the kind of text in
/// errors.
///
/// # Errors
/// [`KeyError::NoColon`], [`KeyError::EmptyName`], [`KeyError::Base64`] or
/// [`KeyError::Length`]; on error `payload` may hold partial bytes.
pub fn decode_named<'a>(
    text: &'a str,
    what: &'static str,
    expected: usize,
    payload: &mut Vec<u8>,
) -> Result<&'a str, KeyError> {
    let (name, b64) = text
        .trim()
        .split_once(':')
        .ok_or(KeyError::NoColon { what })?;
    if name.is_empty() {
        return Err(KeyError::EmptyName { what });
    }
    payload.clear();
    payload.resize(base64::decoded_len_estimate(b64.len()), 0);
    let actual = STANDARD
        .decode_slice(b64, payload)
        .map_err(|_| KeyError::Base64 { what })?;
    payload.truncate(actual);
    if actual != expected {
        return Err(KeyError::Length {
            what,
            expected,
            actual,
        });
    }
    Ok(name)
}

/// Checks a name for a new key or signature: not empty, no `:` (which
/// would end the name early when the text is parsed back).
///
/// # Errors
/// [`KeyError::EmptyName`] with `what` as given.
pub fn check_name(name: &str, what: &'static str) -> Result<(), KeyError> {
    if name.is_empty() || name.contains(':') {
        return Err(KeyError::EmptyName { what });
    }
    Ok(())
}

/// `name:base64(payload)`, the text form [`decode_named`] reads.
pub fn encode_named(name: &str, payload: &[u8]) -> String {
    format!("{name}:{}", STANDARD.encode(payload))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_at_the_first_colon_and_checks_the_length() {
        let mut buf = Vec::new();
        assert_eq!(decode_named(" k:AAAA\n", "signature", 3, &mut buf), Ok("k"));
        assert_eq!(buf, [0, 0, 0]);
        assert_eq!(encode_named("k", &buf), "k:AAAA");
        assert_eq!(
            decode_named("k:AAAA", "signature", 64, &mut buf),
            Err(KeyError::Length {
                what: "signature",
                expected: 64,
                actual: 3
            })
        );
        assert_eq!(
            decode_named("k:a:AAAA", "public key", 3, &mut buf),
            Err(KeyError::Base64 { what: "public key" })
        );
        assert_eq!(
            decode_named("AAAA", "public key", 3, &mut buf),
            Err(KeyError::NoColon { what: "public key" })
        );
        assert_eq!(
            check_name("a:b", "key name"),
            Err(KeyError::EmptyName { what: "key name" })
        );
        assert_eq!(check_name("cache-1", "key name"), Ok(()));
    }
}
