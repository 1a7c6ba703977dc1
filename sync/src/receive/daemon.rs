//! Importing through Nix's own worker protocol, the way `nix copy` talks
//! to nix-daemon: `wopAddToStoreNar` with the path's info, then the NAR
//! in frames. Nix itself restores the files, checks NarHash and NarSize
//! (and a `CA:` field), takes its per-path lock and registers the path
//! only once it is complete.
//!
//! Each connection is a `nix-daemon --stdio` child: with `--store ROOT`
//! for a chroot store; for `/` Nix's default store, which is the system's
//! nix-daemon where one runs (`nix-daemon --stdio` then relays to its
//! socket) and the local store otherwise, exactly where `nix copy` would
//! import. One process per import in flight, reused by the next import:
//! the `nix copy` process per path this replaces cost ~250 ms of start-up
//! and store opening per path on the benchmark machine (see
//! bench/results/push.md).
//!
//! Why connections are short-lived all the same: Nix keeps a temporary GC
//! root on every path a daemon process added until that process exits, so
//! a connection kept forever would keep everything it ever imported from
//! the host's GC, retention or not. [`Daemons::reap`] closes connections
//! idle for [`IDLE_LIMIT`] and none is reused past [`MAX_AGE`]: a push's
//! small paths share one process, and a path's temporary root outlives
//! its import by well under a second once the push pauses.
//!
//! Wire format (Nix's `worker-protocol.hh`, `serialise.hh`): integers are
//! u64 little-endian; a string is its length, its bytes and zero padding
//! to 8; a set is its count then its items. This client announces
//! protocol 1.25: framed NAR uploads (1.23+), errors as a message and a
//! status (below 1.26), no feature exchange (1.38+).

use std::io::{self, BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use larder_store::narinfo::NarInfo;

const WORKER_MAGIC_1: u64 = 0x6e69_7863;
const WORKER_MAGIC_2: u64 = 0x6478_696f;
/// Protocol 1.25, as `(major << 8) | minor`.
const CLIENT_VERSION: u64 = (1 << 8) | 25;
/// The first minor version that takes `wopAddToStoreNar`'s NAR in frames.
const MIN_DAEMON_MINOR: u64 = 23;
const WOP_ADD_TO_STORE_NAR: u64 = 39;
const WOP_ADD_TEMP_ROOT: u64 = 11;

const STDERR_NEXT: u64 = 0x6f6c_6d67;
const STDERR_READ: u64 = 0x6461_7461;
const STDERR_WRITE: u64 = 0x6461_7416;
const STDERR_LAST: u64 = 0x616c_7473;
const STDERR_ERROR: u64 = 0x6378_7470;
const STDERR_START_ACTIVITY: u64 = 0x5354_5254;
const STDERR_STOP_ACTIVITY: u64 = 0x5354_4f50;
const STDERR_RESULT: u64 = 0x5253_4c54;

/// Bytes of NAR per frame. nix-daemon allocates one buffer per frame.
const FRAME: usize = 128 << 10;
/// Longest string accepted from the daemon (a log line, an error).
const MAX_STRING: u64 = 1 << 20;
/// Idle connections kept for the next import.
const MAX_IDLE: usize = 8;
/// An idle connection is closed after this long (see the module doc).
pub const IDLE_LIMIT: Duration = Duration::from_millis(500);
/// A connection is not reused once it is this old.
pub const MAX_AGE: Duration = Duration::from_secs(30);
/// How often [`Daemons::reap`] should run.
pub const REAP_INTERVAL: Duration = Duration::from_millis(200);

/// Why an import through nix-daemon failed.
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error("cannot start `nix-daemon --stdio`: {0}")]
    Spawn(io::Error),
    /// The pipe to or from the daemon broke (it exited; its stderr, in
    /// the receiver's log, says why).
    #[error("connection to nix-daemon --stdio lost: {0}")]
    Io(#[from] io::Error),
    #[error("nix-daemon protocol: {0}")]
    Protocol(String),
    /// Nix refused the operation (`STDERR_ERROR`): hash mismatch, a
    /// missing signature, a full disk, …
    #[error("nix-daemon: {0}")]
    Refused(String),
}

/// A pool of `nix-daemon --stdio` connections to one store.
#[derive(Debug)]
pub struct Daemons {
    /// `/` or a chroot store's root.
    root: PathBuf,
    idle: Mutex<Vec<Connection>>,
}

impl Daemons {
    pub fn new(root: &Path) -> Daemons {
        Daemons {
            root: root.to_owned(),
            idle: Mutex::new(Vec::new()),
        }
    }

    /// Add the path `info` describes, from `nar` (the uncompressed NAR),
    /// without signature checks (`dontCheckSigs`: the daemon honours it
    /// for a trusted client only, see the README). Blocking. A connection
    /// that was idle and turns out dead is replaced once (`nar` is
    /// rewound); any failure drops the connection it happened on.
    pub fn add_to_store_nar<R: Read + io::Seek>(
        &self,
        info: &NarInfo,
        nar: &mut R,
    ) -> Result<(), DaemonError> {
        self.with_connection(|conn, retry| {
            if retry {
                nar.rewind()?;
            }
            conn.add_to_store_nar(info, nar)
        })
    }

    /// `wopAddTempRoot`: Nix's temporary GC root on `path` (a full store
    /// path), held by the connection's process until it exits (see
    /// [`Daemons::reap`]). Nix registers it with a garbage collection that
    /// is running (its `gc-socket`) before answering, so once this returns
    /// no GC deletes the path: a path still valid afterwards stays valid
    /// until a permanent root made before this call is seen by the next
    /// GC. This is how `nix-store --add-root` (`addPermRoot`) closes the
    /// same race. Blocking.
    pub fn add_temp_root(&self, path: &str) -> Result<(), DaemonError> {
        self.with_connection(|conn, _| conn.add_temp_root(path))
    }

    /// Run `op` on an idle connection or a new one; an idle one found
    /// dead (an I/O error) is replaced once, `op` told it is a retry.
    /// The connection goes back to the pool only after a success.
    fn with_connection(
        &self,
        mut op: impl FnMut(&mut Connection, bool) -> Result<(), DaemonError>,
    ) -> Result<(), DaemonError> {
        let pooled = self.lock().pop().filter(|c| c.started.elapsed() < MAX_AGE);
        let (mut conn, reused) = match pooled {
            Some(conn) => (conn, true),
            None => (Connection::open(&self.root)?, false),
        };
        let mut result = op(&mut conn, false);
        if reused && matches!(result, Err(DaemonError::Io(_))) {
            tracing::debug!("idle nix-daemon connection was dead; opening another");
            conn = Connection::open(&self.root)?;
            result = op(&mut conn, true);
        }
        if result.is_ok() {
            conn.last_used = Instant::now();
            let mut idle = self.lock();
            if idle.len() < MAX_IDLE {
                idle.push(conn);
            }
        }
        result
    }

    /// Close connections idle for [`IDLE_LIMIT`] or older than
    /// [`MAX_AGE`] (their processes exit, with their temporary roots).
    /// Blocking (waits for the children).
    pub fn reap(&self) {
        let expired: Vec<Connection> = {
            let mut idle = self.lock();
            let (keep, expired) = std::mem::take(&mut *idle)
                .into_iter()
                .partition(|c| c.last_used.elapsed() < IDLE_LIMIT && c.started.elapsed() < MAX_AGE);
            *idle = keep;
            expired
        };
        drop(expired);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Connection>> {
        self.idle.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// One `nix-daemon --stdio` child after the handshake.
#[derive(Debug)]
struct Connection {
    child: Child,
    to: BufWriter<ChildStdin>,
    from: BufReader<ChildStdout>,
    started: Instant,
    last_used: Instant,
}

impl Drop for Connection {
    fn drop(&mut self) {
        // End of input ends the daemon's loop; kill it in case it is stuck
        // mid-operation (Nix leaves no half-registered path either way).
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Connection {
    fn open(root: &Path) -> Result<Connection, DaemonError> {
        let mut cmd = Command::new("nix-daemon");
        cmd.arg("--stdio");
        if root != Path::new("/") {
            cmd.arg("--store").arg(root);
        }
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(DaemonError::Spawn)?;
        let (Some(stdin), Some(stdout)) = (child.stdin.take(), child.stdout.take()) else {
            return Err(DaemonError::Protocol("no pipes to the child".into()));
        };
        let mut conn = Connection {
            child,
            to: BufWriter::with_capacity(FRAME + 8, stdin),
            from: BufReader::new(stdout),
            started: Instant::now(),
            last_used: Instant::now(),
        };
        conn.handshake()?;
        Ok(conn)
    }

    /// Nix's greeting (`processConnection` on the daemon's side).
    fn handshake(&mut self) -> Result<(), DaemonError> {
        write_u64(&mut self.to, WORKER_MAGIC_1)?;
        self.to.flush()?;
        let magic = read_u64(&mut self.from)?;
        if magic != WORKER_MAGIC_2 {
            return Err(DaemonError::Protocol(format!(
                "greeting {magic:#x} is not nix-daemon's"
            )));
        }
        let version = read_u64(&mut self.from)?;
        if version >> 8 != 1 || version & 0xff < MIN_DAEMON_MINOR {
            return Err(DaemonError::Protocol(format!(
                "daemon protocol {}.{} is too old: importing needs 1.{MIN_DAEMON_MINOR} (Nix 2.4) or newer",
                version >> 8,
                version & 0xff
            )));
        }
        write_u64(&mut self.to, CLIENT_VERSION)?;
        write_u64(&mut self.to, 0)?; // no CPU affinity (1.14+)
        write_u64(&mut self.to, 0)?; // obsolete reserveSpace (1.11+)
        self.to.flush()?;
        read_stderr(&mut self.from)
    }

    /// `wopAddTempRoot` (the daemon's `addTempRoot`, then a 1).
    fn add_temp_root(&mut self, path: &str) -> Result<(), DaemonError> {
        write_u64(&mut self.to, WOP_ADD_TEMP_ROOT)?;
        write_str(&mut self.to, path)?;
        self.to.flush()?;
        read_stderr(&mut self.from)?;
        match read_u64(&mut self.from)? {
            1 => Ok(()),
            n => Err(DaemonError::Protocol(format!(
                "wopAddTempRoot answered {n}, not 1"
            ))),
        }
    }

    /// `wopAddToStoreNar`: the path info, then the NAR in frames while the
    /// daemon's messages are read on another thread (it may log while it
    /// reads), then its verdict.
    fn add_to_store_nar<R: Read>(
        &mut self,
        info: &NarInfo,
        nar: &mut R,
    ) -> Result<(), DaemonError> {
        let full = |p: &larder_store::StorePath| format!("{}/{p}", info.store_dir);
        let to = &mut self.to;
        write_u64(to, WOP_ADD_TO_STORE_NAR)?;
        write_str(to, &full(&info.store_path))?;
        write_str(to, &info.deriver.as_ref().map(full).unwrap_or_default())?;
        write_str(to, &info.nar_hash.to_base16())?;
        let mut references: Vec<String> = info.references.iter().map(full).collect();
        references.sort();
        references.dedup();
        write_strs(to, &references)?;
        write_u64(to, 0)?; // registrationTime: now
        write_u64(to, info.nar_size)?;
        write_u64(to, 0)?; // ultimate: not built here
        let mut sigs = info.sigs.clone();
        sigs.sort();
        sigs.dedup();
        write_strs(to, &sigs)?;
        write_str(to, info.ca.as_deref().unwrap_or(""))?;
        write_u64(to, 0)?; // repair
        write_u64(to, 1)?; // dontCheckSigs
        to.flush()?;

        let from = &mut self.from;
        std::thread::scope(|s| {
            let verdict = s.spawn(move || read_stderr(from));
            let sent = send_frames(to, nar);
            let verdict = verdict
                .join()
                .unwrap_or_else(|_| Err(DaemonError::Protocol("reader thread panicked".into())));
            // The daemon's own error says more than the broken pipe it causes.
            match (sent, verdict) {
                (_, Err(e @ DaemonError::Refused(_))) | (Err(e), _) | (Ok(()), Err(e)) => Err(e),
                (Ok(()), Ok(())) => Ok(()),
            }
        })
    }
}

/// The NAR as `FramedSource` reads it: frames of a length and that many
/// bytes (no padding), then a zero length.
fn send_frames<W: Write, R: Read>(to: &mut W, nar: &mut R) -> Result<(), DaemonError> {
    let mut buf = vec![0u8; FRAME];
    loop {
        let n = match nar.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => {
                return Err(DaemonError::Protocol(format!(
                    "reading the staged NAR: {e}"
                )));
            }
        };
        write_u64(to, n as u64)?;
        to.write_all(&buf[..n])?;
    }
    write_u64(to, 0)?;
    to.flush()?;
    Ok(())
}

/// The daemon's messages up to `STDERR_LAST` (success) or `STDERR_ERROR`.
/// Log lines go to the receiver's debug log; activities are skipped.
fn read_stderr<R: Read>(from: &mut R) -> Result<(), DaemonError> {
    loop {
        match read_u64(from)? {
            STDERR_LAST => return Ok(()),
            STDERR_ERROR => {
                let message = read_str(from)?;
                let _status = read_u64(from)?;
                return Err(DaemonError::Refused(message.trim_end().to_owned()));
            }
            STDERR_NEXT => {
                // Read first: tracing skips its arguments when disabled.
                let line = read_str(from)?;
                tracing::debug!("nix-daemon: {}", line.trim_end());
            }
            STDERR_START_ACTIVITY => {
                let _id = read_u64(from)?;
                let _level = read_u64(from)?;
                let _kind = read_u64(from)?;
                let _text = read_str(from)?;
                skip_fields(from)?;
                let _parent = read_u64(from)?;
            }
            STDERR_STOP_ACTIVITY => {
                let _id = read_u64(from)?;
            }
            STDERR_RESULT => {
                let _id = read_u64(from)?;
                let _kind = read_u64(from)?;
                skip_fields(from)?;
            }
            m @ (STDERR_READ | STDERR_WRITE) => {
                return Err(DaemonError::Protocol(format!(
                    "unexpected data request {m:#x} during a framed upload"
                )));
            }
            m => return Err(DaemonError::Protocol(format!("unknown message {m:#x}"))),
        }
    }
}

/// An activity's fields: a count, then per field a type (0: integer,
/// 1: string) and the value.
fn skip_fields<R: Read>(from: &mut R) -> Result<(), DaemonError> {
    for _ in 0..read_u64(from)? {
        match read_u64(from)? {
            0 => drop(read_u64(from)?),
            1 => drop(read_str(from)?),
            t => return Err(DaemonError::Protocol(format!("unknown field type {t}"))),
        }
    }
    Ok(())
}

fn write_u64<W: Write>(to: &mut W, n: u64) -> io::Result<()> {
    to.write_all(&n.to_le_bytes())
}

fn write_str<W: Write>(to: &mut W, s: &str) -> io::Result<()> {
    write_u64(to, s.len() as u64)?;
    to.write_all(s.as_bytes())?;
    to.write_all(&[0u8; 8][..padding(s.len() as u64)])
}

fn write_strs<W: Write>(to: &mut W, items: &[String]) -> io::Result<()> {
    write_u64(to, items.len() as u64)?;
    items.iter().try_for_each(|s| write_str(to, s))
}

fn padding(len: u64) -> usize {
    ((8 - len % 8) % 8) as usize
}

fn read_u64<R: Read>(from: &mut R) -> io::Result<u64> {
    let mut b = [0u8; 8];
    from.read_exact(&mut b)?;
    Ok(u64::from_le_bytes(b))
}

fn read_str<R: Read>(from: &mut R) -> Result<String, DaemonError> {
    let len = read_u64(from)?;
    if len > MAX_STRING {
        return Err(DaemonError::Protocol(format!(
            "a {len}-byte string from the daemon"
        )));
    }
    let mut b = vec![0u8; len as usize + padding(len)];
    from.read_exact(&mut b)?;
    b.truncate(len as usize);
    Ok(String::from_utf8_lossy(&b).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strings_are_padded_to_eight() {
        let mut out = Vec::new();
        write_str(&mut out, "abc").unwrap();
        assert_eq!(out.len(), 8 + 8);
        assert_eq!(&out[..8], &3u64.to_le_bytes());
        assert_eq!(&out[8..], b"abc\0\0\0\0\0");
        out.clear();
        write_str(&mut out, "12345678").unwrap();
        assert_eq!(out.len(), 16);
        assert_eq!(read_str(&mut &out[..]).unwrap(), "12345678");
    }

    #[test]
    fn frames_end_with_zero() {
        let nar = vec![7u8; FRAME + 3];
        let mut out = Vec::new();
        send_frames(&mut out, &mut &nar[..]).unwrap();
        assert_eq!(&out[..8], &(FRAME as u64).to_le_bytes());
        let second = 8 + FRAME;
        assert_eq!(&out[second..second + 8], &3u64.to_le_bytes());
        assert_eq!(&out[out.len() - 8..], &0u64.to_le_bytes());
        assert_eq!(out.len(), 8 + FRAME + 8 + 3 + 8);
    }

    #[test]
    fn daemon_messages() {
        let mut msgs = Vec::new();
        write_u64(&mut msgs, STDERR_NEXT).unwrap();
        write_str(&mut msgs, "hello\n").unwrap();
        write_u64(&mut msgs, STDERR_START_ACTIVITY).unwrap();
        for n in [1, 3, 100] {
            write_u64(&mut msgs, n).unwrap();
        }
        write_str(&mut msgs, "copying").unwrap();
        write_u64(&mut msgs, 2).unwrap();
        write_u64(&mut msgs, 0).unwrap();
        write_u64(&mut msgs, 42).unwrap();
        write_u64(&mut msgs, 1).unwrap();
        write_str(&mut msgs, "s").unwrap();
        write_u64(&mut msgs, 0).unwrap();
        write_u64(&mut msgs, STDERR_STOP_ACTIVITY).unwrap();
        write_u64(&mut msgs, 1).unwrap();
        let mut ok = msgs.clone();
        write_u64(&mut ok, STDERR_LAST).unwrap();
        let r = read_stderr(&mut &ok[..]);
        assert!(r.is_ok(), "{r:?}");
        write_u64(&mut msgs, STDERR_ERROR).unwrap();
        write_str(&mut msgs, "hash mismatch importing path\n").unwrap();
        write_u64(&mut msgs, 1).unwrap();
        match read_stderr(&mut &msgs[..]) {
            Err(DaemonError::Refused(m)) => assert_eq!(m, "hash mismatch importing path"),
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            read_stderr(&mut &0xdeadu64.to_le_bytes()[..]),
            Err(DaemonError::Protocol(_))
        ));
    }
}
