use std::time::Duration;

use super::*;

const A: &str = "/nix/store/00000000000000000000000000000000-a";
const B: &str = "/nix/store/11111111111111111111111111111111-b";

fn temp_queue() -> (tempfile::TempDir, Queue) {
    let dir = tempfile::tempdir().unwrap();
    let queue = Queue::open(&dir.path().join("sub/queue.sqlite")).unwrap();
    (dir, queue)
}

#[test]
fn backoff_doubles_up_to_the_cap() {
    let b = Backoff {
        base: Duration::from_secs(1),
        cap: Duration::from_secs(60),
    };
    let delays: Vec<u64> = (1..=8).map(|n| b.delay(n).as_secs()).collect();
    assert_eq!(delays, [1, 2, 4, 8, 16, 32, 60, 60]);
    assert_eq!(b.delay(500), Duration::from_secs(60));
}

#[test]
fn a_path_leaves_only_when_completed() {
    let (_dir, mut q) = temp_queue();
    assert_eq!(q.enqueue(&[A.into(), B.into(), A.into()]).unwrap(), 2);
    assert_eq!(q.enqueue(&[A.into()]).unwrap(), 0);
    assert_eq!(q.due(10).unwrap().len(), 2);
    q.complete(&[A.into()]).unwrap();
    assert_eq!(q.due(10).unwrap(), vec![B.to_owned()]);
    let stats = q.stats().unwrap();
    assert_eq!(stats.depth, 1);
    assert_eq!(stats.oldest.unwrap().0, B);
    assert_eq!(stats.last_error, None);
}

#[test]
fn a_failed_path_waits_for_its_backoff() {
    let (_dir, mut q) = temp_queue();
    q.enqueue(&[A.into()]).unwrap();
    let backoff = Backoff {
        base: Duration::from_secs(3600),
        cap: Duration::from_secs(7200),
    };
    q.fail(&[A.into()], "target down", backoff).unwrap();
    assert!(q.due(10).unwrap().is_empty());
    assert!(q.next_due_at().unwrap().unwrap() > now_ms() + 3_000_000);
    let stats = q.stats().unwrap();
    assert_eq!(stats.depth, 1);
    assert_eq!(stats.last_error.unwrap().1, "target down");
}

#[test]
fn checkpoint_moves_with_the_paths() {
    let (_dir, mut q) = temp_queue();
    assert_eq!(q.checkpoint("db").unwrap(), None);
    q.enqueue_with_checkpoint(&[A.into()], Some(("db", 7)))
        .unwrap();
    q.enqueue_with_checkpoint(&[], Some(("db", 9))).unwrap();
    assert_eq!(q.checkpoint("db").unwrap(), Some(9));
    // Only forward, unless reset.
    q.enqueue_with_checkpoint(&[], Some(("db", 3))).unwrap();
    assert_eq!(q.checkpoint("db").unwrap(), Some(9));
    q.reset_checkpoint("db", 0).unwrap();
    assert_eq!(q.checkpoint("db").unwrap(), Some(0));
    assert_eq!(q.stats().unwrap().depth, 1);
}

#[test]
fn a_garbage_file_is_corrupt_and_left_alone() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("queue.sqlite");
    let garbage = b"this is not sqlite at all, just some bytes".repeat(100);
    std::fs::write(&path, &garbage).unwrap();
    let err = Queue::open(&path).err().expect("garbage must not open");
    assert!(matches!(err, SyncError::QueueCorrupt { .. }), "{err}");
    assert!(err.to_string().contains(&path.display().to_string()));
    assert_eq!(std::fs::read(&path).unwrap(), garbage);
}

#[test]
fn another_sqlite_file_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("other.sqlite");
    let conn = Connection::open(&path).unwrap();
    conn.execute_batch("CREATE TABLE t (x INTEGER)").unwrap();
    drop(conn);
    let err = Queue::open(&path)
        .err()
        .expect("a foreign DB must not open");
    assert!(matches!(err, SyncError::QueueCorrupt { .. }), "{err}");
}

#[test]
fn a_queue_belongs_to_one_target() {
    let (dir, mut q) = temp_queue();
    assert_eq!(q.target().unwrap(), None);
    q.claim_target("ssh-ng://cache").unwrap();
    q.claim_target("ssh-ng://cache").unwrap();
    let mut other = Queue::open(&dir.path().join("sub/queue.sqlite")).unwrap();
    let err = other.claim_target("file:///tmp/c").unwrap_err().to_string();
    assert!(
        err.contains("ssh-ng://cache") && err.contains("file:///tmp/c") && err.contains("--queue"),
        "{err}"
    );
    assert_eq!(other.target().unwrap().as_deref(), Some("ssh-ng://cache"));
}

#[test]
fn a_restart_makes_failed_paths_due_at_once() {
    let (_dir, mut q) = temp_queue();
    q.enqueue(&[A.into(), B.into()]).unwrap();
    let long = Backoff {
        base: Duration::from_secs(3600),
        cap: Duration::from_secs(3600),
    };
    q.fail(&[A.into()], "lacks a valid signature", long)
        .unwrap();
    assert_eq!(q.due(10).unwrap(), vec![B.to_owned()]);
    let listed = q.pending(10).unwrap();
    assert_eq!(listed[0].path, A);
    assert_eq!(listed[0].attempts, 1);
    assert_eq!(
        listed[0].last_error.as_deref(),
        Some("lacks a valid signature")
    );
    assert_eq!(q.reset_backoff().unwrap(), 1);
    assert_eq!(q.due(10).unwrap().len(), 2);
}

/// Many processes open a queue file that does not exist yet at the same
/// moment (a watcher starting while the post-build-hook enqueues): every one
/// of them gets a working queue, none "database is locked".
#[test]
fn concurrent_first_opens_all_succeed() {
    for round in 0..20 {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("queue.sqlite");
        let barrier = std::sync::Arc::new(std::sync::Barrier::new(8));
        let threads: Vec<_> = (0..8)
            .map(|i| {
                let (path, barrier) = (path.clone(), barrier.clone());
                std::thread::spawn(move || {
                    barrier.wait();
                    let mut q = Queue::open(&path)?;
                    let p = format!("/nix/store/{i:032}-x");
                    q.enqueue(&[p])
                })
            })
            .collect();
        for t in threads {
            let result = t.join().unwrap();
            assert!(result.is_ok(), "round {round}: {:?}", result.err());
        }
        let q = Queue::open_existing(&path).unwrap();
        assert_eq!(q.stats().unwrap().depth, 8, "round {round}");
    }
}
