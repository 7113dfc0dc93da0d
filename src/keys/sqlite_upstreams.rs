//! Registered upstreams in the SQLite file (table `upstreams`, migration 2): the same record-as-JSON layout and
//! compare-and-swap on the version as the key table.

use rusqlite::{ErrorCode, OptionalExtension, params};

use super::{SqliteStore, other};
use crate::keys::{StoreError, StoreFuture};
use crate::upstreams::{RegisteredUpstream, UpstreamStore, decode, encode};

/// Map a write error: a unique violation names the field.
fn write_error(e: rusqlite::Error) -> StoreError {
    match &e {
        rusqlite::Error::SqliteFailure(f, Some(msg))
            if f.code == ErrorCode::ConstraintViolation =>
        {
            StoreError::Duplicate {
                field: if msg.contains("upstreams.name") {
                    "name"
                } else {
                    "id"
                },
            }
        }
        rusqlite::Error::SqliteFailure(f, _)
            if matches!(
                f.code,
                ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked | ErrorCode::DiskFull
            ) =>
        {
            StoreError::Unavailable(e.to_string())
        }
        _ => other(e),
    }
}

/// Tell a version conflict from a missing row after a compare-and-swap changed nothing.
fn missing_or_stale(
    tx: &rusqlite::Transaction<'_>,
    id: &str,
    expected: Option<i64>,
) -> Result<StoreError, StoreError> {
    let exists = tx
        .query_row("SELECT 1 FROM upstreams WHERE id = ?1", [id], |_| Ok(()))
        .optional()
        .map_err(other)?;
    Ok(match (exists, expected) {
        (Some(()), Some(expected)) => StoreError::VersionConflict { expected },
        _ => StoreError::NotFound,
    })
}

impl UpstreamStore for SqliteStore {
    fn load_upstreams(&self) -> StoreFuture<'_, Vec<RegisteredUpstream>> {
        self.with_conn(|conn| {
            let mut stmt = conn
                .prepare("SELECT record FROM upstreams")
                .map_err(other)?;
            let rows = stmt
                .query_map([], |r| r.get::<_, String>(0))
                .map_err(other)?;
            rows.map(|r| decode(&r.map_err(other)?)).collect()
        })
    }

    fn insert_upstream(&self, u: RegisteredUpstream) -> StoreFuture<'_, ()> {
        self.with_conn(move |conn| {
            conn.execute(
                "INSERT INTO upstreams (id, name, version, record) VALUES (?1, ?2, ?3, ?4)",
                params![u.id, u.name, u.version, encode(&u)?],
            )
            .map_err(write_error)?;
            Ok(())
        })
    }

    fn update_upstream(&self, u: RegisteredUpstream, expected: i64) -> StoreFuture<'_, ()> {
        self.with_conn(move |conn| {
            let tx = conn.transaction().map_err(other)?;
            let changed = tx
                .execute(
                    "UPDATE upstreams SET name = ?2, version = ?3, record = ?4 WHERE id = ?1 AND version = ?5",
                    params![u.id, u.name, u.version, encode(&u)?, expected],
                )
                .map_err(write_error)?;
            if changed == 0 {
                return Err(missing_or_stale(&tx, &u.id, Some(expected))?);
            }
            tx.commit().map_err(other)
        })
    }

    fn delete_upstream(&self, id: String, expected: Option<i64>) -> StoreFuture<'_, ()> {
        self.with_conn(move |conn| {
            let tx = conn.transaction().map_err(other)?;
            let changed = match expected {
                Some(v) => tx.execute(
                    "DELETE FROM upstreams WHERE id = ?1 AND version = ?2",
                    params![id, v],
                ),
                None => tx.execute("DELETE FROM upstreams WHERE id = ?1", params![id]),
            }
            .map_err(write_error)?;
            if changed == 0 {
                return Err(missing_or_stale(&tx, &id, expected)?);
            }
            tx.commit().map_err(other)
        })
    }
}
