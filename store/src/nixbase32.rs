//! Nix's base32 ("nix32"): the alphabet `0123456789abcdfghijklmnpqrsvwxyz`
//! (no `e o u t`), written most-significant digit first over a
//! little-endian bit order. Store path hash parts and narinfo hashes use it.

use thiserror::Error;

/// The 32 digits, value 0 to 31 (`src/libutil/hash.cc`, `base32Chars`).
pub const ALPHABET: &[u8; 32] = b"0123456789abcdfghijklmnpqrsvwxyz";

/// Why a nix32 text does not decode.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum Nix32Error {
    /// A character outside [`ALPHABET`].
    #[error("invalid nix32 character {0:?} (alphabet is 0-9 a-z without e, o, u, t)")]
    BadChar(char),
    /// A length no whole number of bytes encodes to (e.g. 32 bytes is 52 characters).
    #[error("nix32 string of {0} characters does not encode a whole number of bytes")]
    BadLength(usize),
    /// The unused high bits of the first digit are not zero: not canonical.
    #[error("nix32 string has non-zero padding bits")]
    NonZeroPadding,
}

/// Number of nix32 characters for `len` bytes.
pub const fn encoded_len(len: usize) -> usize {
    (len * 8).div_ceil(5)
}

/// Number of bytes a nix32 string of `len` characters decodes to, if valid.
pub fn decoded_len(len: usize) -> Option<usize> {
    let bytes = len * 5 / 8;
    (encoded_len(bytes) == len).then_some(bytes)
}

/// The nix32 text of `input`, [`encoded_len`] characters long
/// (`src/libutil/hash.cc`, `printHash32`).
pub fn encode(input: &[u8]) -> String {
    let len = encoded_len(input.len());
    let mut out = String::with_capacity(len);
    for n in (0..len).rev() {
        let b = n * 5;
        let i = b / 8;
        let j = b % 8;
        let low = input[i] as u16 >> j;
        let high = if i + 1 < input.len() {
            (input[i + 1] as u16) << (8 - j)
        } else {
            0
        };
        out.push(ALPHABET[((low | high) & 0x1f) as usize] as char);
    }
    out
}

/// Each byte's value as a digit of [`ALPHABET`], or [`NOT_A_DIGIT`]: one
/// load per character instead of a search of the alphabet (the search was
/// 3.5 % of a narinfo's CPU, decoding its references' hash parts).
const DIGITS: [u8; 256] = {
    let mut table = [NOT_A_DIGIT; 256];
    let mut i = 0;
    while i < ALPHABET.len() {
        table[ALPHABET[i] as usize] = i as u8;
        i += 1;
    }
    table
};
const NOT_A_DIGIT: u8 = u8::MAX;

fn digit(c: u8) -> Option<u8> {
    match DIGITS[usize::from(c)] {
        NOT_A_DIGIT => None,
        d => Some(d),
    }
}

/// True when `c` is one of the [`ALPHABET`]'s digits.
pub fn is_nix32_char(c: u8) -> bool {
    digit(c).is_some()
}

/// The bytes `input` encodes; exactly the inverse of [`encode`].
///
/// # Errors
/// A [`Nix32Error`] for a bad length, a foreign character or non-zero
/// padding bits.
pub fn decode(input: &str) -> Result<Vec<u8>, Nix32Error> {
    let bytes = input.as_bytes();
    let len = decoded_len(bytes.len()).ok_or(Nix32Error::BadLength(bytes.len()))?;
    let mut out = vec![0u8; len];
    for (n, &c) in bytes.iter().rev().enumerate() {
        let d = digit(c).ok_or(Nix32Error::BadChar(c as char))? as u16;
        let b = n * 5;
        let i = b / 8;
        let j = b % 8;
        let shifted = d << j;
        if i < len {
            out[i] |= shifted as u8;
        } else if shifted & 0xff != 0 {
            return Err(Nix32Error::NonZeroPadding);
        }
        let carry = (shifted >> 8) as u8;
        if i + 1 < len {
            out[i + 1] |= carry;
        } else if carry != 0 {
            return Err(Nix32Error::NonZeroPadding);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn known_vectors_from_nix() {
        // `nix hash to-base32 sha256:...` of the empty string's SHA-256.
        let empty_sha256 = [
            0xe3, 0xb0, 0xc4, 0x42, 0x98, 0xfc, 0x1c, 0x14, 0x9a, 0xfb, 0xf4, 0xc8, 0x99, 0x6f,
            0xb9, 0x24, 0x27, 0xae, 0x41, 0xe4, 0x64, 0x9b, 0x93, 0x4c, 0xa4, 0x95, 0x99, 0x1b,
            0x78, 0x52, 0xb8, 0x55,
        ];
        let s = "0mdqa9w1p6cmli6976v4wi0sw9r4p5prkj7lzfd1877wk11c9c73";
        assert_eq!(encode(&empty_sha256), s);
        assert_eq!(decode(s).unwrap(), empty_sha256);
        assert_eq!(encode(&[]), "");
        assert_eq!(encode(&[0x1f]), "0z");
    }

    #[test]
    fn rejects_garbage() {
        assert_eq!(decode("e0"), Err(Nix32Error::BadChar('e')));
        assert_eq!(decode("0"), Err(Nix32Error::BadLength(1)));
        assert_eq!(decode("zz"), Err(Nix32Error::NonZeroPadding));
    }

    #[test]
    fn every_byte_is_a_digit_exactly_when_the_alphabet_has_it() {
        for c in 0..=u8::MAX {
            let expected = ALPHABET.iter().position(|&a| a == c).map(|p| p as u8);
            assert_eq!(digit(c), expected, "{c}");
        }
    }

    proptest! {
        #[test]
        fn roundtrip(data in proptest::collection::vec(any::<u8>(), 0..64)) {
            prop_assert_eq!(decode(&encode(&data)).unwrap(), data);
        }

        #[test]
        fn decode_never_panics(s in "\\PC{0,80}") {
            let _ = decode(&s);
        }
    }
}
