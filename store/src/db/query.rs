//! The SQL larder runs against Nix's schema 10, and the checks that turn
//! rows into [`PathInfo`]. Everything here works on one connection; the
//! caller picks it from the pool and attaches the DB's path to errors.

use std::collections::BTreeSet;

use rusqlite::types::FromSql;
use rusqlite::{Connection, OptionalExtension, Row, TransactionBehavior, params};

use super::pathinfo::PathInfo;
use crate::location::StoreLocation;
use crate::path::{StorePath, StorePathHash};

/// Columns of `ValidPaths` that make a [`PathInfo`], in [`read_row`]
/// order, and last its references as one string: their count, a space,
/// and their paths joined by spaces, in no particular order (the count
/// catches a path with a space, which Nix never writes but which would
/// otherwise split into two). One statement reads the row and its
/// references in one snapshot (SQLite holds one read transaction for a
/// statement's whole run), so a concurrent garbage collection cannot split
/// them, without a `BEGIN`/`COMMIT` round per lookup.
///
/// Count and paths come from one pass over the same join (a second
/// subquery for the count cost ~10 % of a lookup with references), as
/// Nix's `queryReferences` joins: a `Refs` row naming no `ValidPaths` row
/// (a DB edited with foreign keys off) is left out, as Nix leaves it out,
/// instead of offsetting a path with a space in the count. A NULL path
/// (a DB whose schema lost `not null`) joins as an empty piece, refused as
/// a bad path: `group_concat` would skip it, and one skipped row makes up
/// for a path with a space, which then passed as two references.
macro_rules! select_info {
    ($tail:literal) => {
        concat!(
            "SELECT id, path, hash, registrationTime, deriver, narSize, ultimate, sigs, ca, ",
            "(SELECT count(*) || ' ' || ifnull(group_concat(ifnull(r.path, ''), ' '), '') ",
            "FROM Refs JOIN ValidPaths r ON Refs.reference = r.id WHERE Refs.referrer = v.id) ",
            "FROM ValidPaths v ",
            $tail
        )
    };
}

/// The unique index on `path` makes this a B-tree seek: the first path not
/// below `<store_dir>/<hash32>` is the only one that can have that hash part.
const BY_HASH_PART: &str = select_info!("WHERE path >= ?1 ORDER BY path LIMIT 1");
const BY_PATH: &str = select_info!("WHERE path = ?1");
const INFOS_AFTER: &str = select_info!("WHERE id > ?1 ORDER BY id LIMIT ?2");
const AFTER: &str = "SELECT id, path FROM ValidPaths WHERE id > ?1 ORDER BY id LIMIT ?2";
const ID_OF: &str = "SELECT id FROM ValidPaths WHERE path = ?1";
const PATH_AND_DERIVER: &str = "SELECT path, deriver FROM ValidPaths WHERE id = ?1";
const REFERENCE_IDS: &str = "SELECT reference FROM Refs WHERE referrer = ?1";
const MAX_ID: &str = "SELECT COALESCE(MAX(id), 0) FROM ValidPaths";
const VALID: &str = "SELECT 1 FROM ValidPaths WHERE path = ?1";
/// No index on `deriver`: a table scan, for rare callers (build-log uploads).
const HAS_OUTPUT: &str = "SELECT 1 FROM ValidPaths WHERE deriver = ?1 LIMIT 1";

/// A query failure before the DB's path is attached.
#[derive(Debug)]
pub(super) enum QueryError {
    Sqlite(rusqlite::Error),
    Corrupt { row: i64, what: String },
}

impl From<rusqlite::Error> for QueryError {
    fn from(e: rusqlite::Error) -> Self {
        QueryError::Sqlite(e)
    }
}

type Result<T> = std::result::Result<T, QueryError>;

/// A `ValidPaths` row as stored, before parsing.
struct RawRow {
    id: i64,
    path: String,
    hash: String,
    registration_time: i64,
    deriver: Option<String>,
    nar_size: Option<i64>,
    ultimate: Option<i64>,
    sigs: Option<String>,
    ca: Option<String>,
    /// How many references there are, a space, and their paths joined by
    /// spaces, unsorted (`"0 "` for none).
    references: String,
}

/// A column whose value has the wrong SQL type (or bad UTF-8) is a corrupt
/// row, not a failing DB.
fn column<T: FromSql>(row: &Row<'_>, idx: usize, id: i64) -> Result<T> {
    row.get(idx).map_err(|e| match e {
        rusqlite::Error::InvalidColumnType(..)
        | rusqlite::Error::FromSqlConversionFailure(..)
        | rusqlite::Error::IntegralValueOutOfRange(..) => QueryError::Corrupt {
            row: id,
            what: e.to_string(),
        },
        e => QueryError::Sqlite(e),
    })
}

/// Read a row if `accept` takes its path; other columns are only looked at
/// then, so a bad neighbour row never fails a lookup that misses it.
fn read_row(row: &Row<'_>, accept: impl FnOnce(&str) -> bool) -> Result<Option<RawRow>> {
    // The primary key is `integer not null`: SQLite guarantees its type.
    let id: i64 = row.get(0)?;
    let path: String = column(row, 1, id)?;
    if !accept(&path) {
        return Ok(None);
    }
    Ok(Some(RawRow {
        id,
        path,
        hash: column(row, 2, id)?,
        registration_time: column(row, 3, id)?,
        deriver: column(row, 4, id)?,
        nar_size: column(row, 5, id)?,
        ultimate: column(row, 6, id)?,
        sigs: column(row, 7, id)?,
        ca: column(row, 8, id)?,
        references: column(row, 9, id)?,
    }))
}

fn corrupt(row: i64, what: String) -> QueryError {
    QueryError::Corrupt { row, what }
}

fn parse_path(loc: &StoreLocation, row: i64, field: &str, full: &str) -> Result<StorePath> {
    loc.parse_path(full)
        .map_err(|e| corrupt(row, format!("{field} {full:?}: {e}")))
}

impl RawRow {
    /// Check and convert every field the way Nix reads them (`ultimate` is
    /// true only when 1; sigs are space-separated and form a set; an empty
    /// `ca` means none). A NULL `narSize` is refused: Nix would read 0 and
    /// serve a wrong size.
    fn parse(self, loc: &StoreLocation) -> Result<PathInfo> {
        let id = self.id;
        let nar_hash = self
            .hash
            .parse()
            .map_err(|e| corrupt(id, format!("hash {:?}: {e}", self.hash)))?;
        let nar_size = match self.nar_size {
            None => return Err(corrupt(id, "narSize is NULL".into())),
            Some(n) => u64::try_from(n).map_err(|_| corrupt(id, format!("narSize is {n}")))?,
        };
        // Byte order of the full paths, as `ORDER BY path` would give:
        // the store directory is shared, so this is Nix's basename order.
        // An empty piece (an empty path in the DB) fails like any bad path.
        let (count, joined) = self
            .references
            .split_once(' ')
            .ok_or_else(|| corrupt(id, "references not counted".into()))?;
        let count: usize = count
            .parse()
            .map_err(|_| corrupt(id, format!("reference count {count:?}")))?;
        // One empty path is a reference (refused below as a bad path).
        let mut refs: Vec<&str> = match count {
            0 => Vec::new(),
            _ => joined.split(' ').collect(),
        };
        // More pieces than rows: a path with a space (a NULL path is an
        // empty piece, so it cannot make up for one).
        if count != refs.len() {
            return Err(corrupt(id, "a reference's path has a space".into()));
        }
        refs.sort_unstable();
        let references = refs
            .into_iter()
            .map(|r| parse_path(loc, id, "reference", r))
            .collect::<Result<_>>()?;
        let deriver = match &self.deriver {
            Some(d) => Some(parse_path(loc, id, "deriver", d)?),
            None => None,
        };
        let sigs: BTreeSet<&str> = self
            .sigs
            .iter()
            .flat_map(|s| s.split(' '))
            .filter(|s| !s.is_empty())
            .collect();
        Ok(PathInfo {
            id,
            path: parse_path(loc, id, "path", &self.path)?,
            nar_hash,
            nar_size,
            references,
            deriver,
            sigs: sigs.into_iter().map(str::to_owned).collect(),
            ca: self.ca.filter(|ca| !ca.is_empty()),
            registration_time: self.registration_time,
            ultimate: self.ultimate == Some(1),
        })
    }
}

/// Run `sql` (one of the `select_info!` queries) with `key` and keep the
/// row only if `accept` says so.
fn info_where(
    conn: &Connection,
    loc: &StoreLocation,
    sql: &str,
    key: &str,
    accept: impl FnOnce(&str) -> bool,
) -> Result<Option<PathInfo>> {
    let mut stmt = conn.prepare_cached(sql)?;
    let mut rows = stmt.query(params![key])?;
    let raw = match rows.next()? {
        Some(row) => read_row(row, accept)?,
        None => None,
    };
    match raw {
        Some(raw) => raw.parse(loc).map(Some),
        None => Ok(None),
    }
}

pub(super) fn path_info(
    conn: &Connection,
    loc: &StoreLocation,
    hash: &StorePathHash,
) -> Result<Option<PathInfo>> {
    let start = format!("{}/{hash}", loc.store_dir());
    let prefix = format!("{start}-");
    info_where(conn, loc, BY_HASH_PART, &start, |p| p.starts_with(&prefix))
}

pub(super) fn path_info_by_path(
    conn: &Connection,
    loc: &StoreLocation,
    path: &StorePath,
) -> Result<Option<PathInfo>> {
    info_where(conn, loc, BY_PATH, &loc.display_path(path), |_| true)
}

/// Up to `limit` rows after row `row_id`, by ascending id, each a whole
/// [`PathInfo`] or, for a corrupt row, its error: one statement, so one
/// read snapshot and one lock for the page, instead of one lookup per
/// path. A corrupt row costs only itself, so a reader paging through the
/// store gets past it; a failing DB fails the page.
pub(super) fn path_infos_after(
    conn: &Connection,
    loc: &StoreLocation,
    row_id: i64,
    limit: usize,
) -> Result<Vec<(i64, Result<PathInfo>)>> {
    let limit = i64::try_from(limit).unwrap_or(i64::MAX);
    let mut stmt = conn.prepare_cached(INFOS_AFTER)?;
    let mut rows = stmt.query(params![row_id, limit])?;
    let mut out = Vec::new();
    while let Some(row) = rows.next()? {
        // The primary key is `integer not null`: SQLite guarantees its type.
        let id: i64 = row.get(0)?;
        let info = match read_row(row, |_| true) {
            Ok(Some(raw)) => raw.parse(loc),
            Ok(None) => continue,
            Err(e @ QueryError::Corrupt { .. }) => Err(e),
            Err(e) => return Err(e),
        };
        out.push((id, info));
    }
    Ok(out)
}

/// Have `conn` ready for [`path_info`]: the schema read and the lookup
/// prepared (in the connection's statement cache), as the first lookup
/// would otherwise do.
pub(super) fn prepare_lookup(conn: &Connection) -> Result<()> {
    conn.prepare_cached(BY_HASH_PART)?;
    Ok(())
}

pub(super) fn paths_after(
    conn: &Connection,
    loc: &StoreLocation,
    row_id: i64,
    limit: usize,
) -> Result<Vec<(i64, StorePath)>> {
    let limit = i64::try_from(limit).unwrap_or(i64::MAX);
    let mut stmt = conn.prepare_cached(AFTER)?;
    let mut rows = stmt.query(params![row_id, limit])?;
    let mut out = Vec::new();
    while let Some(row) = rows.next()? {
        let id: i64 = row.get(0)?;
        let full: String = column(row, 1, id)?;
        out.push((id, parse_path(loc, id, "path", &full)?));
    }
    Ok(out)
}

pub(super) fn max_row_id(conn: &Connection) -> Result<i64> {
    Ok(conn.prepare_cached(MAX_ID)?.query_row([], |r| r.get(0))?)
}

/// One path the DB records (the first by row id), if it records any.
pub(super) fn any_path(conn: &Connection) -> Result<Option<String>> {
    Ok(conn
        .prepare_cached("SELECT path FROM ValidPaths ORDER BY id LIMIT 1")?
        .query_row([], |r| r.get(0))
        .optional()?)
}

pub(super) fn query_valid(
    conn: &Connection,
    loc: &StoreLocation,
    path: &StorePath,
) -> Result<bool> {
    let mut stmt = conn.prepare_cached(VALID)?;
    let found = stmt
        .query_row(params![loc.display_path(path)], |_| Ok(()))
        .optional()?;
    Ok(found.is_some())
}

pub(super) fn known_derivation(
    conn: &Connection,
    loc: &StoreLocation,
    drv: &StorePath,
) -> Result<bool> {
    if query_valid(conn, loc, drv)? {
        return Ok(true);
    }
    let mut stmt = conn.prepare_cached(HAS_OUTPUT)?;
    let found = stmt
        .query_row(params![loc.display_path(drv)], |_| Ok(()))
        .optional()?;
    Ok(found.is_some())
}

/// The closure of `roots` under the `Refs` table, in one read transaction:
/// every valid path reachable from a valid root, each with its deriver.
/// Paths `follow` refuses are left out and not walked through. Roots that
/// are not valid are skipped.
pub(super) fn closure(
    conn: &mut Connection,
    loc: &StoreLocation,
    roots: &[StorePath],
    follow: &dyn Fn(&StorePath) -> bool,
) -> Result<Vec<(StorePath, Option<StorePath>)>> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Deferred)?;
    let mut out = Vec::new();
    {
        let mut id_of = tx.prepare_cached(ID_OF)?;
        let mut row_of = tx.prepare_cached(PATH_AND_DERIVER)?;
        let mut refs_of = tx.prepare_cached(REFERENCE_IDS)?;
        let mut seen = std::collections::HashSet::new();
        let mut pending: Vec<i64> = Vec::new();
        for root in roots {
            let id: Option<i64> = id_of
                .query_row(params![loc.display_path(root)], |r| r.get(0))
                .optional()?;
            if let Some(id) = id.filter(|id| seen.insert(*id)) {
                pending.push(id);
            }
        }
        while let Some(id) = pending.pop() {
            let (full, deriver): (String, Option<String>) = match row_of
                .query_row(params![id], |r| Ok((r.get(0)?, r.get(1)?)))
                .optional()?
            {
                Some(row) => row,
                None => continue,
            };
            let path = parse_path(loc, id, "path", &full)?;
            if !follow(&path) {
                continue;
            }
            // A deriver that does not parse only costs its build log.
            let deriver = deriver.and_then(|d| loc.parse_path(&d).ok());
            out.push((path, deriver));
            let mut rows = refs_of.query(params![id])?;
            while let Some(row) = rows.next()? {
                let reference: i64 = row.get(0)?;
                if seen.insert(reference) {
                    pending.push(reference);
                }
            }
        }
    }
    tx.commit()?;
    Ok(out)
}
