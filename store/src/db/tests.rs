//! Rows Nix would never write, in a DB built by hand with Nix's schema 10
//! tables. Whole stores written by the real Nix are tested in
//! `tests/tests/db_*.rs`.

use super::*;

const A: &str = "/nix/store/0a5m9hjy1xf5wmf4bqf7wiijvyjwh1ic-a";
const B: &str = "/nix/store/1r4fz4ygw4ax7ljj3xwgdrcw4mpfvdv2-b";
const C: &str = "/nix/store/sg3kbdqzh0hfy2nr7lkz4f1nvr3x4q94-c";
const HASH: &str = "sha256:5c6ec7cfcc015a03fb9850a7f5082677cf6aaa09ab43189c258ac5c54f688150";

/// A store root whose DB has Nix's `ValidPaths` and `Refs` tables and the
/// rows given as SQL.
struct Fixture {
    dir: tempfile::TempDir,
}

impl Fixture {
    fn new(rows_sql: &str) -> Self {
        Self::with_path_column("text unique not null", rows_sql)
    }

    /// With `path` declared as `path_decl`: `text unique` lets a test write
    /// the NULL path that Nix's schema refuses.
    fn with_path_column(path_decl: &str, rows_sql: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let loc = StoreLocation::new(dir.path());
        std::fs::create_dir_all(loc.db_path().parent().unwrap()).unwrap();
        std::fs::write(loc.schema_path(), "10").unwrap();
        let conn = Connection::open(loc.db_path()).unwrap();
        conn.execute_batch(&format!(
            "PRAGMA journal_mode = WAL;
             CREATE TABLE ValidPaths (
               id integer primary key autoincrement not null,
               path {path_decl},
               hash text not null,
               registrationTime integer not null,
               deriver text,
               narSize integer,
               ultimate integer,
               sigs text,
               ca text);
             CREATE TABLE Refs (
               referrer integer not null,
               reference integer not null,
               primary key (referrer, reference));",
        ))
        .unwrap();
        conn.execute_batch(rows_sql).unwrap();
        Fixture { dir }
    }

    fn db(&self) -> StoreDb {
        StoreDb::open(&StoreLocation::new(self.dir.path())).unwrap()
    }
}

fn row(id: i64, path: &str, extra: &str) -> String {
    format!(
        "INSERT INTO ValidPaths (id, path, hash, registrationTime, narSize, deriver, ultimate, sigs, ca) \
         VALUES ({id}, '{path}', '{HASH}', 1700000000, {extra});"
    )
}

fn hash_of(full: &str) -> StorePathHash {
    StoreLocation::new("/")
        .parse_path(full)
        .unwrap()
        .hash()
        .to_owned()
}

#[test]
fn reads_fields_the_way_nix_does() {
    let sql = [
        row(1, A, "120, NULL, NULL, NULL, NULL"),
        row(
            2,
            B,
            &format!("7, '{A}', 1, 'k2:c2ln  k1:c2ln k2:c2ln', ''"),
        ),
        row(3, C, "0, NULL, 2, '', 'fixed:sha256:x'"),
        "INSERT INTO Refs VALUES (2, 3), (2, 1), (2, 2);".to_owned(),
    ]
    .concat();
    let db = Fixture::new(&sql).db();
    let a = db.path_info_blocking(&hash_of(A)).unwrap().unwrap();
    assert_eq!((a.id, a.nar_size, a.ultimate), (1, 120, false));
    assert_eq!((a.deriver, a.ca, a.sigs.len()), (None, None, 0));
    assert_eq!(a.nar_hash.to_base16(), &HASH[7..]);

    let b = db.path_info_blocking(&hash_of(B)).unwrap().unwrap();
    let names: Vec<String> = b.references.iter().map(ToString::to_string).collect();
    let mut sorted = [A, B, C].map(|p| p.rsplit('/').next().unwrap().to_owned());
    sorted.sort();
    assert_eq!(names, sorted);
    assert_eq!(b.deriver.unwrap().to_string(), &A[11..]);
    assert_eq!(b.sigs, ["k1:c2ln", "k2:c2ln"]);
    assert_eq!((b.ultimate, b.ca), (true, None));

    // Nix counts only 1 as ultimate.
    let c = db.path_info_blocking(&hash_of(C)).unwrap().unwrap();
    assert!(!c.ultimate);
    assert_eq!(c.ca.as_deref(), Some("fixed:sha256:x"));
    assert_eq!(db.path_info_by_path_blocking(&c.path).unwrap(), Some(c));
}

#[test]
fn hash_part_lookup_needs_the_exact_hash() {
    let db = Fixture::new(&row(1, B, "1, NULL, NULL, NULL, NULL")).db();
    // A hash sorting just before B's, and one sharing all but its last char.
    for miss in [
        "/nix/store/1r4fz4ygw4ax7ljj3xwgdrcw4mpfvdv1-b",
        "/nix/store/1r4fz4ygw4ax7ljj3xwgdrcw4mpfvdv3-b",
        A,
        C,
    ] {
        assert_eq!(
            db.path_info_blocking(&hash_of(miss)).unwrap(),
            None,
            "{miss}"
        );
        let path = StoreLocation::new("/").parse_path(miss).unwrap();
        assert!(!db.query_valid_blocking(&path).unwrap());
    }
    assert!(db.path_info_blocking(&hash_of(B)).unwrap().is_some());
}

fn corrupt_row(rows_sql: &str, lookup: &str) -> (i64, String, String) {
    let fixture = Fixture::new(rows_sql);
    let err = fixture
        .db()
        .path_info_blocking(&hash_of(lookup))
        .unwrap_err();
    let message = err.to_string();
    let DbError::Corrupt { row, what, path } = err else {
        panic!("expected Corrupt, got {err:?}");
    };
    assert!(path.starts_with(fixture.dir.path()), "{message}");
    (row, what, message)
}

#[test]
fn bad_rows_are_typed_errors_naming_the_row() {
    let cases = [
        (row(4, A, "NULL, NULL, NULL, NULL, NULL"), "narSize is NULL"),
        (row(4, A, "-1, NULL, NULL, NULL, NULL"), "narSize is -1"),
        (
            row(4, A, &format!("1, '{A}x/y', NULL, NULL, NULL")),
            "deriver",
        ),
        (row(4, A, "1, X'ff', NULL, NULL, NULL"), "Blob"),
        (
            row(4, A, "1, NULL, NULL, NULL, NULL")
                + "UPDATE ValidPaths SET hash = 'md5:00' WHERE id = 4;",
            "hash",
        ),
        (
            row(4, A, "1, NULL, NULL, NULL, NULL")
                + &row(5, "/nix/store/x", "1, NULL, NULL, NULL, NULL")
                + "INSERT INTO Refs VALUES (4, 5);",
            "reference \"/nix/store/x\"",
        ),
        // Two valid-looking paths in one row must not pass as two references.
        (
            row(4, A, "1, NULL, NULL, NULL, NULL")
                + &row(5, &format!("{B} {C}"), "1, NULL, NULL, NULL, NULL")
                + "INSERT INTO Refs VALUES (4, 5);",
            "space",
        ),
        (
            row(4, A, "1, NULL, NULL, NULL, NULL")
                + &row(5, "", "1, NULL, NULL, NULL, NULL")
                + "INSERT INTO Refs VALUES (4, 5);",
            "reference \"\"",
        ),
        // A count-like prefix in a reference path does not shift the count.
        (
            row(4, A, "1, NULL, NULL, NULL, NULL")
                + &row(5, &format!("1 {B}"), "1, NULL, NULL, NULL, NULL")
                + "INSERT INTO Refs VALUES (4, 5);",
            "space",
        ),
        // A `Refs` row naming no path must not make up for the space.
        (
            row(4, A, "1, NULL, NULL, NULL, NULL")
                + &row(5, &format!("{B} {C}"), "1, NULL, NULL, NULL, NULL")
                + "INSERT INTO Refs VALUES (4, 5), (4, 99);",
            "space",
        ),
    ];
    for (sql, expected) in cases {
        let (id, what, message) = corrupt_row(&sql, A);
        assert_eq!(id, 4, "{message}");
        assert!(what.contains(expected), "{expected:?} not in {message}");
        assert!(message.contains("id 4"), "{message}");
    }
}

#[test]
fn bad_paths_are_typed_errors() {
    // A path with a valid hash part but a bad name is found by hash part.
    let bad_name = "/nix/store/0a5m9hjy1xf5wmf4bqf7wiijvyjwh1ic-a b";
    let sql = row(9, bad_name, "1, NULL, NULL, NULL, NULL");
    let (id, what, _) = corrupt_row(&sql, A);
    assert_eq!(id, 9);
    assert!(what.contains("path"), "{what}");
    // A watcher listing rows sees the same error.
    let fixture = Fixture::new(&sql);
    let err = fixture.db().paths_after_blocking(0, 10).unwrap_err();
    assert!(matches!(err, DbError::Corrupt { row: 9, .. }), "{err}");
}

#[test]
fn a_bad_neighbour_does_not_fail_a_miss() {
    let fixture = Fixture::new(&row(1, B, "NULL, NULL, NULL, NULL, NULL"));
    let db = fixture.db();
    assert_eq!(db.path_info_blocking(&hash_of(A)).unwrap(), None);
}

#[test]
fn watcher_pages_through_rows_in_id_order() {
    let sql = [
        row(3, A, "1, NULL, NULL, NULL, NULL"),
        row(7, C, "1, NULL, NULL, NULL, NULL"),
        row(5, B, "1, NULL, NULL, NULL, NULL"),
    ]
    .concat();
    let db = Fixture::new(&sql).db();
    assert_eq!(db.max_row_id_blocking().unwrap(), 7);
    let first = db.paths_after_blocking(0, 2).unwrap();
    let ids: Vec<i64> = first.iter().map(|(id, _)| *id).collect();
    assert_eq!(ids, [3, 5]);
    assert_eq!(first[1].1.to_string(), &B[11..]);
    let rest = db.paths_after_blocking(5, 2).unwrap();
    assert_eq!(rest.len(), 1);
    assert_eq!(rest[0].0, 7);
    assert!(db.paths_after_blocking(7, 2).unwrap().is_empty());
    assert!(db.paths_after_blocking(0, 0).unwrap().is_empty());
}

#[test]
fn empty_store_and_a_pool_without_idle_connections() {
    let fixture = Fixture::new("");
    let options = StoreDbOptions {
        max_idle_connections: 0,
        ..StoreDbOptions::default()
    };
    let db = StoreDb::open_with(&StoreLocation::new(fixture.dir.path()), options).unwrap();
    for _ in 0..3 {
        assert_eq!(db.max_row_id_blocking().unwrap(), 0);
        assert!(db.paths_after_blocking(0, 10).unwrap().is_empty());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn async_queries_share_the_pool() {
    let fixture = Fixture::new(&row(1, A, "1, NULL, NULL, NULL, NULL"));
    let db = fixture.db();
    let tasks: Vec<_> = (0..32)
        .map(|_| {
            let db = db.clone();
            tokio::spawn(async move { db.path_info(&hash_of(A)).await })
        })
        .collect();
    for task in tasks {
        assert_eq!(task.await.unwrap().unwrap().unwrap().id, 1);
    }
    assert!(db.inner.idle_pool().len() <= db.inner.options.max_idle_connections);
    assert!(
        db.query_valid(&StoreLocation::new("/").parse_path(A).unwrap())
            .await
            .unwrap()
    );
}

#[test]
fn a_reference_to_no_row_is_left_out_as_nix_leaves_it_out() {
    // Nix's `queryReferences` joins `Refs` with `ValidPaths`: a `Refs` row
    // naming no path (foreign keys were off) is not a reference.
    let sql = row(1, A, "1, NULL, NULL, NULL, NULL")
        + &row(2, B, "1, NULL, NULL, NULL, NULL")
        + "INSERT INTO Refs VALUES (2, 1), (2, 77);";
    let db = Fixture::new(&sql).db();
    let b = db.path_info_blocking(&hash_of(B)).unwrap().unwrap();
    let names: Vec<String> = b.references.iter().map(ToString::to_string).collect();
    assert_eq!(names, [&A[11..]]);
}

/// A NULL reference path (a DB whose schema lost `not null`) is refused,
/// and does not make up for a path with a space: `group_concat` skips a
/// NULL, so count and pieces matched and `B C` passed as two references.
#[test]
fn a_null_reference_path_is_refused_and_hides_no_space() {
    let insert_null = "INSERT INTO ValidPaths (id, path, hash, registrationTime, narSize) \
         VALUES (6, NULL, 'sha256:x', 1, 1);";
    let cases = [
        format!("{insert_null} INSERT INTO Refs VALUES (4, 6);"),
        row(5, &format!("{B} {C}"), "1, NULL, NULL, NULL, NULL")
            + insert_null
            + "INSERT INTO Refs VALUES (4, 5), (4, 6);",
    ];
    for extra in cases {
        let sql = row(4, A, "1, NULL, NULL, NULL, NULL") + &extra;
        let fixture = Fixture::with_path_column("text unique", &sql);
        let err = fixture.db().path_info_blocking(&hash_of(A)).unwrap_err();
        assert!(
            matches!(err, DbError::Corrupt { row: 4, .. }),
            "{extra}: {err}"
        );
    }
}

/// Thousands of references come back whole, each once, sorted.
#[test]
fn thousands_of_references() {
    const ALPHABET: &[u8] = b"0123456789abcdfghijklmnpqrsvwxyz";
    let path_of = |i: usize| {
        let hash: String = (0..32)
            .map(|d| ALPHABET[(i >> (5 * (d % 3))) % 32] as char)
            .collect();
        format!("/nix/store/{hash}-r{i}")
    };
    let n = 5000;
    let mut sql = row(1, A, "1, NULL, NULL, NULL, NULL");
    for i in 0..n {
        sql += &row(i as i64 + 2, &path_of(i), "1, NULL, NULL, NULL, NULL");
        sql += &format!("INSERT INTO Refs VALUES (1, {});", i + 2);
    }
    sql += "INSERT INTO Refs VALUES (1, 1);";
    let db = Fixture::new(&sql).db();
    let a = db.path_info_blocking(&hash_of(A)).unwrap().unwrap();
    assert_eq!(a.references.len(), n + 1);
    let mut expected: Vec<String> = (0..n).map(|i| path_of(i)[11..].to_owned()).collect();
    expected.push(A[11..].to_owned());
    expected.sort();
    let got: Vec<String> = a.references.iter().map(ToString::to_string).collect();
    assert_eq!(got, expected);
}

/// Sign-ahead's pages: a corrupt row is an error of its own, named by its
/// row id, and the rows around it still come back, so a reader paging
/// through the store gets past it instead of failing the page forever.
#[tokio::test]
async fn a_corrupt_row_costs_only_itself_in_a_page() {
    let sql = [
        row(3, A, "1, NULL, NULL, NULL, NULL"),
        row(5, B, "NULL, NULL, NULL, NULL, NULL"),
        row(7, C, "1, NULL, NULL, NULL, NULL"),
    ]
    .concat();
    let db = Fixture::new(&sql).db();
    let page = db.path_infos_after(0, 10).await.unwrap();
    let ids: Vec<i64> = page.iter().map(|(id, _)| *id).collect();
    assert_eq!(ids, [3, 5, 7]);
    assert_eq!(page[0].1.as_ref().unwrap().id, 3);
    assert!(
        matches!(&page[1].1, Err(DbError::Corrupt { row: 5, .. })),
        "{:?}",
        page[1].1
    );
    assert_eq!(page[2].1.as_ref().unwrap().id, 7);
}
