//! Signatures kept across restarts, in an append-only file of the cache
//! dir: a fingerprint's signatures never change while the signer's key set
//! is the same, so a restarted server need not ask for them again.
//!
//! One file per key set, `signatures-<digest of the public keys>.log`,
//! opened only once the signer has named its public keys: a restarted
//! server never serves a signature by a key the signer no longer holds
//! (the file of another key set is deleted when a new one is opened, and a
//! line whose signature names a key outside the set is skipped).
//!
//! A line is `<base16 SHA-256 of the cache key> <name:base64> …\n`. A
//! crash mid-append leaves at most a line without its newline, cut off at
//! open. Appends go through a writer thread, so the reactor never waits on
//! the disk. The server holds no key: these are public signatures only.

use std::collections::HashSet;
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::mpsc;

use larder_store::Sha256Hash;
use larder_store::signature::Signature;

/// The digest a signature is kept under: SHA-256 of the key names asked
/// for and the fingerprint (see `signer_client.rs`).
pub type EntryKey = [u8; 32];

/// The open file of one key set: appends go to its writer thread, which
/// ends when this is dropped.
pub struct SignatureLog {
    path: PathBuf,
    appends: mpsc::Sender<String>,
}

/// What [`SignatureLog::open`] read back.
pub type Entries = Vec<(EntryKey, Vec<String>)>;

impl SignatureLog {
    /// Open (or create) the file of `public_keys` in `dir`, delete the
    /// files of other key sets, and return the signatures it holds, oldest
    /// first (later lines for the same key win).
    ///
    /// # Errors
    /// When `dir` or the file cannot be created, read or written.
    pub fn open(dir: &Path, public_keys: &[String]) -> io::Result<(SignatureLog, Entries)> {
        fs::create_dir_all(dir)?;
        let name = file_name(public_keys);
        for entry in fs::read_dir(dir)? {
            let entry = entry?;
            let other = entry.file_name();
            let other = other.to_string_lossy();
            if other.starts_with("signatures-") && other.ends_with(".log") && other != name {
                fs::remove_file(entry.path())?;
            }
        }
        let path = dir.join(&name);
        let entries = read_entries(&path, public_keys)?;
        let file = OpenOptions::new().create(true).append(true).open(&path)?;
        let (appends, lines) = mpsc::channel();
        std::thread::Builder::new()
            .name("larder-signature-log".to_owned())
            .spawn(move || write_lines(file, lines))?;
        Ok((SignatureLog { path, appends }, entries))
    }

    /// Keep `signatures` under `key` (in the background; a failed write is
    /// logged, and costs only a signer request after the next restart).
    pub fn append(&self, key: &EntryKey, signatures: &[String]) {
        let mut line = Sha256Hash(*key).to_base16();
        for sig in signatures {
            line.push(' ');
            line.push_str(sig);
        }
        line.push('\n');
        if self.appends.send(line).is_err() {
            tracing::warn!(file = %self.path.display(), "signature log writer is gone");
        }
    }
}

/// The file name of a key set: public keys are `name:base64`, without
/// newlines.
fn file_name(public_keys: &[String]) -> String {
    let digest = Sha256Hash::digest(public_keys.join("\n").as_bytes()).to_base16();
    format!("signatures-{}.log", &digest[..32])
}

/// The file's complete lines whose signatures all name keys of
/// `public_keys`; a torn last line is cut off.
fn read_entries(path: &Path, public_keys: &[String]) -> io::Result<Entries> {
    let mut bytes = match fs::read(path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let complete = bytes.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
    if complete < bytes.len() {
        OpenOptions::new()
            .write(true)
            .open(path)?
            .set_len(complete as u64)?;
        bytes.truncate(complete);
    }
    let names: HashSet<&str> = public_keys
        .iter()
        .filter_map(|k| k.split_once(':').map(|(name, _)| name))
        .collect();
    let text = String::from_utf8_lossy(&bytes);
    Ok(text
        .lines()
        .filter_map(|line| parse_line(line, &names))
        .collect())
}

fn parse_line(line: &str, names: &HashSet<&str>) -> Option<(EntryKey, Vec<String>)> {
    let mut fields = line.split(' ');
    let key = parse_base16(fields.next()?)?;
    let sigs: Vec<String> = fields.map(str::to_owned).collect();
    let valid = sigs.iter().all(|s| {
        s.parse::<Signature>()
            .is_ok_and(|sig| names.contains(sig.key_name()))
    });
    valid.then_some((key, sigs))
}

fn parse_base16(hex: &str) -> Option<EntryKey> {
    if hex.len() != 64 {
        return None;
    }
    let mut key = [0u8; 32];
    for (i, byte) in key.iter_mut().enumerate() {
        *byte = u8::from_str_radix(hex.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(key)
}

/// The writer thread: append what arrives, one flush per burst.
fn write_lines(file: File, lines: mpsc::Receiver<String>) {
    let mut out = BufWriter::new(file);
    while let Ok(line) = lines.recv() {
        let mut result = out.write_all(line.as_bytes());
        while let Ok(line) = lines.try_recv() {
            result = result.and_then(|()| out.write_all(line.as_bytes()));
        }
        if let Err(e) = result.and_then(|()| out.flush()) {
            tracing::warn!(error = %e, "cannot append to the signature log");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY_A: &str = "a-1:zzWmkqBJP5wGq5kd6Q6HNCfqXHwkHnYkuVGEvEzYP1w=";
    const KEY_B: &str = "b-1:zzWmkqBJP5wGq5kd6Q6HNCfqXHwkHnYkuVGEvEzYP1w=";

    fn sig(name: &str) -> String {
        use base64::Engine;
        let bytes = base64::engine::general_purpose::STANDARD.encode([7u8; 64]);
        format!("{name}:{bytes}")
    }

    fn wait_for_lines(path: &Path, n: usize) {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while fs::read_to_string(path).unwrap_or_default().lines().count() < n {
            assert!(std::time::Instant::now() < deadline);
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
    }

    #[test]
    fn signatures_come_back_for_the_same_key_set_only() {
        let dir = tempfile::tempdir().unwrap();
        let keys_a = vec![KEY_A.to_owned()];
        let (log, entries) = SignatureLog::open(dir.path(), &keys_a).unwrap();
        assert!(entries.is_empty());
        log.append(&[1; 32], &[sig("a-1")]);
        log.append(&[2; 32], &[]);
        wait_for_lines(&log.path, 2);
        drop(log);

        let (log, entries) = SignatureLog::open(dir.path(), &keys_a).unwrap();
        assert_eq!(
            entries,
            vec![([1; 32], vec![sig("a-1")]), ([2; 32], vec![])]
        );
        drop(log);

        // Another key set: nothing, and the old file is gone.
        let (_log, entries) = SignatureLog::open(dir.path(), &[KEY_B.to_owned()]).unwrap();
        assert!(entries.is_empty());
        let (_log, entries) = SignatureLog::open(dir.path(), &keys_a).unwrap();
        assert!(entries.is_empty());
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn torn_and_foreign_lines_are_skipped() {
        let dir = tempfile::tempdir().unwrap();
        let keys = vec![KEY_A.to_owned()];
        let path = dir.path().join(file_name(&keys));
        let good = format!("{} {}\n", "01".repeat(32), sig("a-1"));
        let foreign = format!("{} {}\n", "02".repeat(32), sig("b-1"));
        let garbage = "xyz not a line\n";
        let torn = format!("{} {}", "03".repeat(32), &sig("a-1")[..20]);
        fs::write(&path, format!("{good}{foreign}{garbage}{torn}")).unwrap();
        let (log, entries) = SignatureLog::open(dir.path(), &keys).unwrap();
        assert_eq!(entries, vec![([1; 32], vec![sig("a-1")])]);
        // The torn tail was cut, so the next line starts on its own.
        log.append(&[4; 32], &[sig("a-1")]);
        wait_for_lines(&path, 4);
        drop(log);
        let (_log, entries) = SignatureLog::open(dir.path(), &keys).unwrap();
        assert_eq!(entries.len(), 2);
    }
}
