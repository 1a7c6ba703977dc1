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
//! A line is `<base16 SHA-256 of the cache key> <name:base64> … <mac>\n`,
//! where `<mac>` is the base16 HMAC-SHA256 of everything before it, keyed
//! with the signer's `log-key` (derived from its secret keys; see
//! `larder_store::signer_proto`). The server cannot verify an ed25519
//! signature (it links no key code), so the MAC is what stops a line
//! nobody got from the signer: one written into the cache dir by hand or by
//! another process, a forged or swapped signature, a line of an older
//! file format. Such lines, garbage and over-long lines are skipped, and
//! the file is rewritten without them.
//!
//! Bounded: at most `capacity` entries are read back (the newest); a file
//! with many more lines than that is compacted at open, and one over
//! [`max_file_bytes`] is dropped unread (it could only stall the start). A
//! crash mid-append leaves at most a line without its newline, cut off at
//! open. Appends go through a writer thread, so the reactor never waits on
//! the disk. The server holds no signing key: these are public signatures.

use std::collections::HashSet;
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufRead, BufReader, BufWriter, Write};
use std::num::NonZeroUsize;
use std::path::{Path, PathBuf};
use std::sync::mpsc;

use hmac::{Hmac, Mac};
use larder_store::Sha256Hash;
use larder_store::signature::Signature;
use lru::LruCache;
use sha2::Sha256;

/// The digest a signature is kept under: SHA-256 of the key names asked
/// for and the fingerprint (see `signer_client.rs`).
pub type EntryKey = [u8; 32];

/// The open file of one key set: appends go to its writer thread, which
/// ends when this is dropped.
pub struct SignatureLog {
    path: PathBuf,
    mac_key: Vec<u8>,
    appends: mpsc::Sender<String>,
}

/// What [`SignatureLog::open`] read back.
pub type Entries = Vec<(EntryKey, Vec<String>)>;

/// Longest line read: an entry key, a MAC and a few signatures are a few
/// hundred bytes.
const MAX_LINE: usize = 16 << 10;

/// A log file larger than this is dropped unread: about 1 KiB per entry
/// the cache can hold, and never less than 64 MiB.
pub fn max_file_bytes(capacity: NonZeroUsize) -> u64 {
    (capacity.get() as u64).saturating_mul(1024).max(64 << 20)
}

impl SignatureLog {
    /// Open (or create) the file of `public_keys` in `dir`, delete the
    /// files of other key sets, and return the newest `capacity`
    /// signatures it holds whose MAC under `mac_key` (the signer's
    /// `log-key`, base16) is right, oldest first (later lines for the same
    /// entry win). Skipped lines are logged as a count and dropped from
    /// the file.
    ///
    /// # Errors
    /// When `dir` or the file cannot be created, read or written.
    pub fn open(
        dir: &Path,
        public_keys: &[String],
        mac_key: &str,
        capacity: NonZeroUsize,
    ) -> io::Result<(SignatureLog, Entries)> {
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
        let mac_key = mac_key.as_bytes().to_vec();
        let read = read_entries(&path, public_keys, &mac_key, capacity)?;
        if read.skipped > 0 || read.lines > 2 * capacity.get() || read.dropped {
            tracing::warn!(
                file = %path.display(),
                skipped = read.skipped,
                lines = read.lines,
                dropped_unread = read.dropped,
                "signature log: lines that are torn, garbage or not from this signer are ignored; rewriting the file without them"
            );
            if let Err(e) = rewrite(&path, &read.entries, &mac_key) {
                tracing::warn!(file = %path.display(), error = %e, "signature log: cannot rewrite it");
            }
        }
        let file = OpenOptions::new().create(true).append(true).open(&path)?;
        let (appends, lines) = mpsc::channel();
        std::thread::Builder::new()
            .name("larder-signature-log".to_owned())
            .spawn(move || write_lines(file, lines))?;
        Ok((
            SignatureLog {
                path,
                mac_key,
                appends,
            },
            read.entries,
        ))
    }

    /// Keep `signatures` under `key` (in the background; a failed write is
    /// logged, and costs only a signer request after the next restart).
    pub fn append(&self, key: &EntryKey, signatures: &[String]) {
        if self
            .appends
            .send(line(key, signatures, &self.mac_key))
            .is_err()
        {
            tracing::warn!(file = %self.path.display(), "signature log writer is gone");
        }
    }
}

/// One line of the file, MAC and newline included.
fn line(key: &EntryKey, signatures: &[String], mac_key: &[u8]) -> String {
    let mut line = Sha256Hash(*key).to_base16();
    for sig in signatures {
        line.push(' ');
        line.push_str(sig);
    }
    let mac = mac_of(mac_key, &line);
    line.push(' ');
    line.push_str(&mac);
    line.push('\n');
    line
}

fn mac_of(mac_key: &[u8], text: &str) -> String {
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(mac_key) else {
        unreachable!("HMAC takes keys of any length")
    };
    mac.update(text.as_bytes());
    Sha256Hash(mac.finalize().into_bytes().into()).to_base16()
}

/// The file name of a key set: public keys are `name:base64`, without
/// newlines.
fn file_name(public_keys: &[String]) -> String {
    let digest = Sha256Hash::digest(public_keys.join("\n").as_bytes()).to_base16();
    format!("signatures-{}.log", &digest[..32])
}

/// What [`read_entries`] found.
struct Read {
    entries: Entries,
    /// Complete lines seen.
    lines: usize,
    /// Lines ignored: bad MAC, garbage, foreign keys, over-long, torn.
    skipped: usize,
    /// The file was over [`max_file_bytes`] and not read.
    dropped: bool,
}

/// The newest `capacity` good lines of the file.
fn read_entries(
    path: &Path,
    public_keys: &[String],
    mac_key: &[u8],
    capacity: NonZeroUsize,
) -> io::Result<Read> {
    let mut read = Read {
        entries: Vec::new(),
        lines: 0,
        skipped: 0,
        dropped: false,
    };
    let file = match File::open(path) {
        Ok(file) => file,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(read),
        Err(e) => return Err(e),
    };
    if file.metadata()?.len() > max_file_bytes(capacity) {
        read.dropped = true;
        return Ok(read);
    }
    let names: HashSet<&str> = public_keys
        .iter()
        .filter_map(|k| k.split_once(':').map(|(name, _)| name))
        .collect();
    let mut newest: LruCache<EntryKey, Vec<String>> = LruCache::new(capacity);
    let mut reader = BufReader::new(file);
    let mut buf = Vec::new();
    loop {
        buf.clear();
        let (complete, too_long) = read_line_bounded(&mut reader, &mut buf)?;
        if buf.is_empty() && !complete && !too_long {
            break;
        }
        if !complete {
            // A torn last line: rewritten away.
            read.skipped += 1;
            break;
        }
        read.lines += 1;
        let parsed = (!too_long)
            .then(|| std::str::from_utf8(&buf).ok())
            .flatten()
            .and_then(|text| parse_line(text.trim_end_matches('\n'), &names, mac_key));
        match parsed {
            Some((key, sigs)) => {
                newest.put(key, sigs);
            }
            None => read.skipped += 1,
        }
    }
    // Least recently put first (`pop_lru` order): the file's order.
    read.entries = newest.into_iter().collect();
    Ok(read)
}

/// Read up to and including the next `\n` into `buf`, keeping at most
/// [`MAX_LINE`] bytes of it: (ended with a newline, was longer).
fn read_line_bounded(reader: &mut impl BufRead, buf: &mut Vec<u8>) -> io::Result<(bool, bool)> {
    let mut too_long = false;
    loop {
        let chunk = reader.fill_buf()?;
        if chunk.is_empty() {
            return Ok((false, too_long));
        }
        let (take, done) = match memchr_newline(chunk) {
            Some(i) => (i + 1, true),
            None => (chunk.len(), false),
        };
        if buf.len() + take <= MAX_LINE {
            buf.extend_from_slice(&chunk[..take]);
        } else {
            too_long = true;
        }
        reader.consume(take);
        if done {
            return Ok((true, too_long));
        }
    }
}

fn memchr_newline(bytes: &[u8]) -> Option<usize> {
    bytes.iter().position(|&b| b == b'\n')
}

fn parse_line(
    line: &str,
    names: &HashSet<&str>,
    mac_key: &[u8],
) -> Option<(EntryKey, Vec<String>)> {
    let (body, mac) = line.rsplit_once(' ')?;
    // Constant time: the MAC is what a forger would be guessing.
    let good = Hmac::<Sha256>::new_from_slice(mac_key)
        .ok()
        .and_then(|mut m| {
            m.update(body.as_bytes());
            let bytes = parse_base16(mac)?;
            m.verify_slice(&bytes).ok()
        });
    good?;
    let mut fields = body.split(' ');
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

/// Replace the file by `entries` alone (a temporary file, then a rename:
/// a crash leaves the old file or the new one).
fn rewrite(path: &Path, entries: &Entries, mac_key: &[u8]) -> io::Result<()> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    let written = (|| {
        let mut out = BufWriter::new(File::create(&tmp)?);
        for (key, sigs) in entries {
            out.write_all(line(key, sigs, mac_key).as_bytes())?;
        }
        out.flush()?;
        out.get_ref().sync_all()?;
        fs::rename(&tmp, path)
    })();
    if written.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    written
}

/// The writer thread: append what arrives, one flush per burst; a failing
/// disk is reported once until it works again.
fn write_lines(file: File, lines: mpsc::Receiver<String>) {
    let mut out = BufWriter::new(file);
    let mut failing = false;
    while let Ok(line) = lines.recv() {
        let mut result = out.write_all(line.as_bytes());
        while let Ok(line) = lines.try_recv() {
            result = result.and_then(|()| out.write_all(line.as_bytes()));
        }
        match result.and_then(|()| out.flush()) {
            Ok(()) => failing = false,
            Err(e) if !failing => {
                failing = true;
                tracing::warn!(error = %e, "cannot append to the signature log (kept in memory only)");
            }
            Err(_) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY_A: &str = "a-1:zzWmkqBJP5wGq5kd6Q6HNCfqXHwkHnYkuVGEvEzYP1w=";
    const KEY_B: &str = "b-1:zzWmkqBJP5wGq5kd6Q6HNCfqXHwkHnYkuVGEvEzYP1w=";
    const MAC: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
    const CAP: NonZeroUsize = NonZeroUsize::new(1000).unwrap();

    fn sig(name: &str, byte: u8) -> String {
        use base64::Engine;
        let bytes = base64::engine::general_purpose::STANDARD.encode([byte; 64]);
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
        let (log, entries) = SignatureLog::open(dir.path(), &keys_a, MAC, CAP).unwrap();
        assert!(entries.is_empty());
        log.append(&[1; 32], &[sig("a-1", 7)]);
        log.append(&[2; 32], &[]);
        wait_for_lines(&log.path, 2);
        drop(log);

        let (log, entries) = SignatureLog::open(dir.path(), &keys_a, MAC, CAP).unwrap();
        assert_eq!(
            entries,
            vec![([1; 32], vec![sig("a-1", 7)]), ([2; 32], vec![])]
        );
        drop(log);

        // Another key set: nothing, and the old file is gone.
        let (_log, entries) =
            SignatureLog::open(dir.path(), &[KEY_B.to_owned()], MAC, CAP).unwrap();
        assert!(entries.is_empty());
        let (_log, entries) = SignatureLog::open(dir.path(), &keys_a, MAC, CAP).unwrap();
        assert!(entries.is_empty());
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    /// The hostile pass's log corpus: only lines MACed with the signer's
    /// log key, by keys of the set, come back; the file is rewritten
    /// without the rest, so appends start on a clean line.
    #[test]
    fn torn_forged_foreign_and_garbage_lines_are_skipped_and_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let keys = vec![KEY_A.to_owned()];
        let path = dir.path().join(file_name(&keys));
        let good = line(&[1; 32], &[sig("a-1", 7)], MAC.as_bytes());
        // The same line with another signature, MAC kept: a forgery.
        let forged = good.replace(&sig("a-1", 7), &sig("a-1", 8));
        // A forgery with a MAC under another key.
        let other_mac = line(&[1; 32], &[sig("a-1", 9)], b"not the signer's");
        let foreign = line(&[2; 32], &[sig("b-1", 7)], MAC.as_bytes());
        // The format before MACs.
        let unmaced = format!("{} {}\n", "03".repeat(32), sig("a-1", 7));
        let garbage = "xyz not a line\n\u{0}\u{ff}\n";
        let long = format!("{}\n", "a".repeat(MAX_LINE * 3));
        let later = line(&[4; 32], &[sig("a-1", 7)], MAC.as_bytes());
        let torn = &line(&[5; 32], &[sig("a-1", 7)], MAC.as_bytes())[..70];
        fs::write(
            &path,
            format!("{good}{forged}{other_mac}{foreign}{unmaced}{garbage}{long}{later}{torn}"),
        )
        .unwrap();
        let (log, entries) = SignatureLog::open(dir.path(), &keys, MAC, CAP).unwrap();
        assert_eq!(
            entries,
            vec![
                ([1; 32], vec![sig("a-1", 7)]),
                ([4; 32], vec![sig("a-1", 7)])
            ]
        );
        // Rewritten: only the good lines are left.
        assert_eq!(fs::read_to_string(&path).unwrap(), format!("{good}{later}"));
        log.append(&[6; 32], &[sig("a-1", 7)]);
        wait_for_lines(&path, 3);
        drop(log);
        let (_log, entries) = SignatureLog::open(dir.path(), &keys, MAC, CAP).unwrap();
        assert_eq!(entries.len(), 3);
        // Another log key (another signer with the same public keys' file
        // name cannot happen, but a rotated log key must not read it).
        drop(_log);
        let (_log, entries) =
            SignatureLog::open(dir.path(), &keys, &MAC.replace('0', "1"), CAP).unwrap();
        assert!(entries.is_empty());
    }

    #[test]
    fn a_long_log_is_compacted_to_capacity_and_a_huge_one_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let keys = vec![KEY_A.to_owned()];
        let path = dir.path().join(file_name(&keys));
        let cap = NonZeroUsize::new(10).unwrap();
        let mut text = String::new();
        for i in 0..100u8 {
            text.push_str(&line(&[i; 32], &[sig("a-1", i)], MAC.as_bytes()));
        }
        fs::write(&path, &text).unwrap();
        let (log, entries) = SignatureLog::open(dir.path(), &keys, MAC, cap).unwrap();
        let kept: Vec<u8> = entries.iter().map(|(k, _)| k[0]).collect();
        assert_eq!(kept, (90..100).collect::<Vec<u8>>());
        assert_eq!(fs::read_to_string(&path).unwrap().lines().count(), 10);
        drop(log);

        // Over the size limit: not read, emptied, and the server starts.
        let file = File::options().append(true).open(&path).unwrap();
        file.set_len(max_file_bytes(cap) + 1).unwrap();
        let (_log, entries) = SignatureLog::open(dir.path(), &keys, MAC, cap).unwrap();
        assert!(entries.is_empty());
        assert_eq!(fs::metadata(&path).unwrap().len(), 0);
    }

    #[test]
    fn an_unwritable_cache_dir_is_an_error_not_a_panic() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("not-a-dir");
        fs::write(&file, "x").unwrap();
        let keys = vec![KEY_A.to_owned()];
        assert!(SignatureLog::open(&file, &keys, MAC, CAP).is_err());
        assert!(SignatureLog::open(&file.join("sub"), &keys, MAC, CAP).is_err());
    }
}
