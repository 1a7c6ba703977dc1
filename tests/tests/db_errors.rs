//! A store DB that is missing, of another schema, or not SQLite at all is a
//! typed error naming the file, never a panic.

use std::path::Path;

use larder_store::StoreLocation;
use larder_store::db::{DbError, StoreDb};
use larder_tests::TestStore;
use rand::{RngCore, SeedableRng};

fn open_error(root: &Path) -> (DbError, String) {
    let err = StoreDb::open(&StoreLocation::new(root)).unwrap_err();
    let message = err.to_string();
    (err, message)
}

fn assert_names(message: &str, file: &Path) {
    let file = file.display().to_string();
    assert!(message.contains(&file), "{file} not named in: {message}");
}

#[test]
fn missing_store_names_the_schema_file() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("no-store-here");
    let (err, message) = open_error(&root);
    assert!(matches!(err, DbError::SchemaMissing { .. }), "{err:?}");
    assert_names(&message, &StoreLocation::new(&root).schema_path());
    assert!(message.contains("root"), "no hint at the fix: {message}");
}

#[test]
fn other_schema_versions_and_garbage_are_refused() {
    let store = TestStore::new();
    let schema = store.location().schema_path();
    let garbage: Vec<u8> = vec![0xff, 0x00, b'1', b'0', 0xc3];
    for (content, found) in [
        (b"9".to_vec(), "9"),
        (b"11\n".to_vec(), "11"),
        (b"".to_vec(), ""),
        (garbage, "\u{fffd}\u{0}10"),
    ] {
        std::fs::write(&schema, &content).unwrap();
        let (err, message) = open_error(store.root());
        let DbError::SchemaUnsupported { found: got, .. } = &err else {
            panic!("expected SchemaUnsupported for {content:?}, got {err:?}");
        };
        assert!(got.starts_with(found), "{got:?}");
        assert_names(&message, &schema);
    }
    // A trailing newline is fine: Nix itself writes none, people might.
    std::fs::write(&schema, "10\n").unwrap();
    StoreDb::open(&store.location()).unwrap();
}

#[test]
fn missing_db_file_names_it_and_the_fix() {
    let store = TestStore::new();
    let db_path = store.location().db_path();
    std::fs::remove_file(&db_path).unwrap();
    let (err, message) = open_error(store.root());
    assert!(matches!(err, DbError::DbMissing { .. }), "{err:?}");
    assert_names(&message, &db_path);
    assert!(message.contains("nix-store --init"), "{message}");
}

#[test]
fn a_db_that_is_not_nix_sqlite_is_an_open_error() {
    let store = TestStore::new();
    let db_path = store.location().db_path();
    let mut random = vec![0u8; 64 * 1024];
    rand::rngs::StdRng::seed_from_u64(10).fill_bytes(&mut random);
    // Random bytes, an empty file (SQLite's empty DB, without Nix's tables),
    // and a real DB cut short.
    let real = std::fs::read(&db_path).unwrap();
    for content in [random, Vec::new(), real[..100].to_vec()] {
        std::fs::write(&db_path, &content).unwrap();
        let (err, message) = open_error(store.root());
        assert!(matches!(err, DbError::Open { .. }), "{err:?}");
        assert_names(&message, &db_path);
    }
}
