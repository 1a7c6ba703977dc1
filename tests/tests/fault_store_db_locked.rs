//! The store DB held by another writer while clients ask for narinfos.
//!
//! - A long write transaction as Nix makes them (`BEGIN EXCLUSIVE` in WAL
//!   mode, held past the busy timeout) does not block readers at all:
//!   narinfos keep coming, promptly; a server started meanwhile serves.
//! - A store whose Nix runs with `use-sqlite-wal = false` (its DB in
//!   rollback-journal mode, `truncate`) is blocked by a write: each
//!   lookup waits out the busy timeout (5 s) and then gets a clear 503
//!   with `Retry-After` (it used to be a 500), from larder-server and from
//!   larder-sync receive; nothing hangs, nothing panics, and the next
//!   request after the lock is released is answered.

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::time::{Duration, Instant};

use larder_tests::receive::TestReceiver;
use larder_tests::server::LarderServer;
use larder_tests::{TestStore, narinfo_url, shell_derivation};

/// A `sqlite3` shell holding a write transaction on the DB.
struct DbLock {
    child: Child,
    stdin: ChildStdin,
}

impl DbLock {
    /// Take the lock; returns once the transaction has written.
    fn take(db: &Path) -> DbLock {
        let mut child = Command::new("sqlite3")
            .arg(db)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("sqlite3 (apt-get install sqlite3)");
        let mut stdin = child.stdin.take().unwrap();
        let script = ".timeout 10000\n\
                      BEGIN EXCLUSIVE;\n\
                      UPDATE ValidPaths SET registrationTime = registrationTime;\n\
                      SELECT 'locked';\n";
        stdin.write_all(script.as_bytes()).unwrap();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        loop {
            let line = lines.next().expect("sqlite3 ended").unwrap();
            if line == "locked" {
                break;
            }
        }
        DbLock { child, stdin }
    }

    fn release(mut self) {
        self.stdin.write_all(b"COMMIT;\n.quit\n").unwrap();
        drop(self.stdin);
        assert!(self.child.wait().unwrap().success());
    }
}

fn sqlite(db: &Path, sql: &str) -> String {
    let out = Command::new("sqlite3").arg(db).arg(sql).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

fn receiver_status(receiver: &TestReceiver, url: &str) -> (u16, String) {
    match receiver.request("GET", url).call() {
        Ok(r) => (r.status(), r.into_string().unwrap_or_default()),
        Err(ureq::Error::Status(code, r)) => (code, r.into_string().unwrap_or_default()),
        Err(e) => panic!("the receiver did not answer: {e}"),
    }
}

#[test]
fn a_write_transaction_does_not_block_readers_of_a_wal_db() {
    let store = TestStore::new();
    let path = store
        .build_expr(&shell_derivation("wal-db", "echo x > $out"))
        .remove(0);
    let db = store.root().join("nix/var/nix/db/db.sqlite");
    assert_eq!(sqlite(&db, "PRAGMA journal_mode"), "wal");
    // No memo: every narinfo asks the DB.
    let server = LarderServer::start(&store, &["--path-info-ttl-ms", "0"]);
    let narinfo = narinfo_url(&path);
    let lock = DbLock::take(&db);
    let start = Instant::now();
    for _ in 0..5 {
        assert_eq!(server.get(&narinfo, &[]).status, 200);
    }
    // Well under the 5 s busy timeout each would wait if blocked.
    assert!(
        start.elapsed() < Duration::from_secs(4),
        "{:?}",
        start.elapsed()
    );
    lock.release();
}

/// The server opens its DB connections before it binds (the first clients
/// then find them ready): a write transaction Nix holds at that moment
/// neither stops the start nor leaves the server without them.
#[test]
fn a_server_started_during_a_write_transaction_serves() {
    let store = TestStore::new();
    let path = store
        .build_expr(&shell_derivation("started-locked", "echo x > $out"))
        .remove(0);
    let db = store.root().join("nix/var/nix/db/db.sqlite");
    let lock = DbLock::take(&db);
    let server = LarderServer::start(&store, &["--path-info-ttl-ms", "0"]);
    assert_eq!(server.get(&narinfo_url(&path), &[]).status, 200);
    lock.release();
    assert_eq!(server.get(&narinfo_url(&path), &[]).status, 200);
    assert!(
        !server.log().contains("not opened ahead"),
        "{}",
        server.log()
    );
}

#[test]
fn a_locked_rollback_journal_db_gives_503_and_recovers() {
    let store = TestStore::new();
    let path = store
        .build_expr(&shell_derivation("locked-db", "echo x > $out"))
        .remove(0);
    let db = store.root().join("nix/var/nix/db/db.sqlite");
    // What Nix does to its DB with `use-sqlite-wal = false`.
    assert_eq!(sqlite(&db, "PRAGMA journal_mode=truncate"), "truncate");
    let server = LarderServer::start(&store, &["--path-info-ttl-ms", "0"]);
    let receiver = TestReceiver::start(&store, &[]);
    let narinfo = narinfo_url(&path);
    assert_eq!(server.get(&narinfo, &[]).status, 200);

    let lock = DbLock::take(&db);
    let reply = server.get(&narinfo, &[]);
    assert_eq!(reply.status, 503, "{}", reply.text());
    assert_eq!(reply.header("retry-after"), Some("1"));
    let (code, body) = receiver_status(&receiver, &narinfo);
    assert_eq!(code, 503, "{body}");
    assert!(body.contains("locked"), "{body}");
    lock.release();

    assert_eq!(server.get(&narinfo, &[]).status, 200);
    assert_eq!(receiver_status(&receiver, &narinfo).0, 200);
    assert!(!server.log().contains("panicked"), "{}", server.log());
}
