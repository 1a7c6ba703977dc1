//! Finding and opening a store's DB: the `schema` file beside `db.sqlite`
//! must say 10, and every connection is read-only with a busy timeout.

use std::io;
use std::path::Path;
use std::time::Duration;

use rusqlite::{Connection, OpenFlags};

use super::error::DbError;
use super::schema::SCHEMA_VERSION;

/// Check `<state>/db/schema` says [`SCHEMA_VERSION`].
pub(super) fn check_schema(path: &Path) -> Result<(), DbError> {
    let bytes = match std::fs::read(path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Err(DbError::SchemaMissing { path: path.into() });
        }
        Err(source) => {
            return Err(DbError::SchemaRead {
                path: path.into(),
                source,
            });
        }
    };
    let text = String::from_utf8_lossy(&bytes);
    let found = text.trim();
    if found.parse::<u32>() == Ok(SCHEMA_VERSION) {
        return Ok(());
    }
    Err(DbError::SchemaUnsupported {
        path: path.into(),
        found: found.chars().take(40).collect(),
    })
}

/// Open one read-only connection. Never `immutable=1`: Nix writes while we
/// read (WAL mode), and an immutable reader would miss or misread its
/// commits. The path is not a URI, so no URI parameter can sneak in.
pub(super) fn open_connection(path: &Path, busy_timeout: Duration) -> Result<Connection, DbError> {
    let open_error = |source| DbError::Open {
        path: path.into(),
        source,
    };
    match std::fs::metadata(path) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Err(DbError::DbMissing { path: path.into() });
        }
        _ => {}
    }
    let flags = OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let conn = Connection::open_with_flags(path, flags).map_err(open_error)?;
    conn.busy_timeout(busy_timeout).map_err(open_error)?;
    Ok(conn)
}

/// Make sure the file is an SQLite DB with Nix's tables: SQLite opens
/// lazily, so random bytes only show up at the first query.
pub(super) fn probe(conn: &Connection, path: &Path) -> Result<(), DbError> {
    conn.prepare("SELECT id, path, hash, registrationTime, deriver, narSize, ultimate, sigs, ca FROM ValidPaths LIMIT 0")
        .and_then(|_| conn.prepare("SELECT referrer, reference FROM Refs LIMIT 0"))
        .map(drop)
        .map_err(|source| {
            // A reader that may not create the WAL index gets "attempt to
            // write a readonly database": say what that means and the fix.
            let shm = path.with_extension("sqlite-shm");
            if source.sqlite_error_code() == Some(rusqlite::ErrorCode::ReadOnly) && !shm.exists() {
                DbError::NoWalIndex { path: path.into() }
            } else {
                DbError::Open {
                    path: path.into(),
                    source,
                }
            }
        })
}
