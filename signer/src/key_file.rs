//! Nix secret key files on disk: loading them (refused when anyone but the
//! owner can read them, except under systemd's `$CREDENTIALS_DIRECTORY`,
//! which systemd itself protects, or when they are malformed), and writing
//! new ones with mode 0600.

use std::fs;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use larder_store::named_base64::KeyError;
use thiserror::Error;
use zeroize::Zeroizing;

use crate::signing_key::SecretKey;

/// Why a key file cannot be used; every message names the file and the fix,
/// and none carries key material.
#[derive(Debug, Error)]
pub enum KeyFileError {
    #[error("key file {path}: cannot read it: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "key file {path} is readable by group or others (mode {mode:04o}); chmod 600 it (or pass it with systemd's LoadCredential)"
    )]
    TooOpen { path: PathBuf, mode: u32 },
    #[error(
        "key file {path} is not a Nix secret key ({source}); make one with `larder-signer generate-key` or `nix key generate-secret`"
    )]
    Malformed { path: PathBuf, source: KeyError },
    #[error("key file {path}: cannot create it: {source}")]
    Create {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("no key file given; pass --key-file FILE (repeatable)")]
    None,
}

/// True when `path` lies in the directory systemd passes credentials in.
fn is_systemd_credential(path: &Path) -> bool {
    std::env::var_os("CREDENTIALS_DIRECTORY")
        .is_some_and(|dir| !dir.is_empty() && path.starts_with(dir))
}

/// The secret key in the file at `path`.
pub fn load(path: &Path) -> Result<SecretKey, KeyFileError> {
    let read_err = |source| KeyFileError::Read {
        path: path.to_owned(),
        source,
    };
    let meta = fs::metadata(path).map_err(read_err)?;
    // A device or FIFO would hang the read (or fill memory): a key file is
    // a small regular file (a Nix secret key is under 200 bytes).
    if !meta.is_file() || meta.len() > 64 << 10 {
        return Err(read_err(std::io::Error::other(
            "not a regular file of at most 64 KiB",
        )));
    }
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 && !is_systemd_credential(path) {
        return Err(KeyFileError::TooOpen {
            path: path.to_owned(),
            mode,
        });
    }
    let text = Zeroizing::new(fs::read_to_string(path).map_err(read_err)?);
    text.parse().map_err(|source| KeyFileError::Malformed {
        path: path.to_owned(),
        source,
    })
}

/// The keys in `paths`, in order; at least one must be given.
pub fn load_all(paths: &[PathBuf]) -> Result<Vec<SecretKey>, KeyFileError> {
    if paths.is_empty() {
        return Err(KeyFileError::None);
    }
    paths.iter().map(|p| load(p)).collect()
}

/// Write a new key to `path` (mode 0600, never overwriting) and return it.
pub fn generate(name: &str, path: &Path) -> Result<SecretKey, KeyFileError> {
    let key = SecretKey::generate(name).map_err(|source| KeyFileError::Malformed {
        path: path.to_owned(),
        source,
    })?;
    let create_err = |source| KeyFileError::Create {
        path: path.to_owned(),
        source,
    };
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(create_err)?;
    std::io::Write::write_all(&mut file, key.to_key_file().as_bytes()).map_err(create_err)?;
    Ok(key)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_open_modes_and_garbage_naming_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("k.sec");
        let key = generate("test-1", &path).unwrap();
        assert_eq!(
            fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
        assert_eq!(load(&path).unwrap().public(), key.public());
        assert!(matches!(
            generate("x", &path),
            Err(KeyFileError::Create { .. })
        ));

        fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
        let err = load(&path).unwrap_err().to_string();
        assert!(err.contains(&path.display().to_string()), "{err}");
        assert!(err.contains("chmod 600"), "{err}");

        let bad = dir.path().join("bad.sec");
        fs::write(&bad, "test:AAAA").unwrap();
        fs::set_permissions(&bad, fs::Permissions::from_mode(0o600)).unwrap();
        let err = load(&bad).unwrap_err().to_string();
        assert!(err.contains("bad.sec") && err.contains("64 bytes"), "{err}");
        assert!(!err.contains("AAAA"), "never echo key material: {err}");
        assert!(matches!(load_all(&[]), Err(KeyFileError::None)));
    }
}
