//! The embedded default store: one SQLite file, WAL journal, `synchronous = FULL` so that a commit is on disk
//! before the admin API answers. Blocking calls run on tokio's blocking pool, never on the async workers.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use rusqlite::{Connection, ErrorCode, OptionalExtension, params};

use super::{ApiKey, KeyStore, StoreError, StoreFuture};

/// Versioned schema migrations; `PRAGMA user_version` records how many have run.
const MIGRATIONS: &[&str] = &[
    "CREATE TABLE api_keys (
        id        TEXT PRIMARY KEY,
        client_id TEXT NOT NULL UNIQUE,
        name      TEXT NOT NULL UNIQUE,
        version   INTEGER NOT NULL,
        record    TEXT NOT NULL
    ) STRICT;",
    // 2. Registered upstreams (DESIGN.md §9); `record` is the serde form of `RegisteredUpstream`.
    "CREATE TABLE upstreams (
        id      TEXT PRIMARY KEY,
        name    TEXT NOT NULL UNIQUE,
        version INTEGER NOT NULL,
        record  TEXT NOT NULL
    ) STRICT;",
];

/// The [`crate::upstreams::UpstreamStore`] implementation.
#[path = "sqlite_upstreams.rs"]
mod upstreams;

/// Rows decoded together at start.
const DECODE_BATCH: usize = 32 * 1024;

/// The SQLite key store.
#[derive(Clone)]
pub struct SqliteStore {
    conn: Arc<Mutex<Connection>>,
    path: PathBuf,
}

// === impl SqliteStore ===

impl SqliteStore {
    /// Open (creating the file and its directory if needed) and migrate.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)
                .map_err(|e| StoreError::Unavailable(format!("{}: {e}", dir.display())))?;
        }
        let mut conn = Connection::open(path)
            .map_err(|e| StoreError::Unavailable(format!("{}: {e}", path.display())))?;
        conn.execute_batch(
            "PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL; PRAGMA busy_timeout = 5000;",
        )
        .map_err(other)?;
        migrate(&mut conn)?;
        Ok(Self {
            conn: Arc::new(Mutex::new(conn)),
            path: path.to_owned(),
        })
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// SQLite's `data_version`: it changes when another connection (another process) commits.
    pub async fn data_version(&self) -> Result<i64, StoreError> {
        self.with_conn(|conn| {
            conn.query_row("PRAGMA data_version", [], |r| r.get(0))
                .map_err(|e| StoreError::Unavailable(e.to_string()))
        })
        .await
    }

    /// Run `f` with the connection on the blocking pool.
    fn with_conn<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Connection) -> Result<T, StoreError> + Send + 'static,
    ) -> StoreFuture<'_, T> {
        let conn = Arc::clone(&self.conn);
        Box::pin(async move {
            tokio::task::spawn_blocking(move || {
                let mut guard = conn
                    .lock()
                    .map_err(|_| StoreError::Other("sqlite connection poisoned".into()))?;
                f(&mut guard)
            })
            .await
            .map_err(|e| StoreError::Other(format!("sqlite task: {e}")))?
        })
    }
}

fn migrate(conn: &mut Connection) -> Result<(), StoreError> {
    let done: usize = conn
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .map_err(other)?;
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(done) {
        let tx = conn.transaction().map_err(other)?;
        tx.execute_batch(sql).map_err(other)?;
        tx.execute_batch(&format!("PRAGMA user_version = {}", i + 1))
            .map_err(other)?;
        tx.commit().map_err(other)?;
    }
    Ok(())
}

fn other(e: rusqlite::Error) -> StoreError {
    StoreError::Other(e.to_string())
}

/// Map a write error: unique violations name the field.
fn write_error(e: rusqlite::Error) -> StoreError {
    match &e {
        rusqlite::Error::SqliteFailure(f, Some(msg))
            if f.code == ErrorCode::ConstraintViolation =>
        {
            let field = if msg.contains("api_keys.name") {
                "name"
            } else if msg.contains("api_keys.client_id") {
                "clientId"
            } else {
                "id"
            };
            StoreError::Duplicate { field }
        }
        rusqlite::Error::SqliteFailure(f, _)
            if matches!(
                f.code,
                ErrorCode::DatabaseBusy
                    | ErrorCode::DatabaseLocked
                    | ErrorCode::CannotOpen
                    | ErrorCode::DiskFull
            ) =>
        {
            StoreError::Unavailable(e.to_string())
        }
        _ => other(e),
    }
}

fn encode(key: &ApiKey) -> Result<String, StoreError> {
    serde_json::to_string(key).map_err(|e| StoreError::Other(format!("encode key: {e}")))
}

impl KeyStore for SqliteStore {
    fn load_all(&self) -> StoreFuture<'_, Vec<ApiKey>> {
        self.with_conn(|conn| {
            let mut stmt = conn.prepare("SELECT record FROM api_keys").map_err(other)?;
            let rows = stmt
                .query_map([], |r| r.get::<_, String>(0))
                .map_err(other)?;
            // Decode in batches, so the JSON text of a million keys is never held at once.
            let mut keys = Vec::new();
            let mut batch = Vec::with_capacity(DECODE_BATCH);
            for row in rows {
                batch.push(row.map_err(other)?);
                if batch.len() == DECODE_BATCH {
                    keys.extend(super::decode_records(&batch)?);
                    batch.clear();
                }
            }
            keys.extend(super::decode_records(&batch)?);
            Ok(keys)
        })
    }

    fn insert(&self, key: ApiKey) -> StoreFuture<'_, ()> {
        self.with_conn(move |conn| {
            let record = encode(&key)?;
            conn.execute(
                "INSERT INTO api_keys (id, client_id, name, version, record) VALUES (?1, ?2, ?3, ?4, ?5)",
                params![key.id, key.client_id, key.name, key.version, record],
            )
            .map_err(write_error)?;
            Ok(())
        })
    }

    fn update(&self, key: ApiKey, expected_version: i64) -> StoreFuture<'_, ()> {
        self.with_conn(move |conn| {
            let record = encode(&key)?;
            let tx = conn.transaction().map_err(other)?;
            let changed = tx
                .execute(
                    "UPDATE api_keys SET client_id = ?2, name = ?3, version = ?4, record = ?5 WHERE id = ?1 AND version = ?6",
                    params![key.id, key.client_id, key.name, key.version, record, expected_version],
                )
                .map_err(write_error)?;
            if changed == 0 {
                let exists = tx.query_row("SELECT 1 FROM api_keys WHERE id = ?1", [&key.id], |_| Ok(())).optional().map_err(other)?;
                return Err(if exists.is_some() { StoreError::VersionConflict { expected: expected_version } } else { StoreError::NotFound });
            }
            tx.commit().map_err(other)?;
            Ok(())
        })
    }

    fn delete(&self, id: String, expected_version: Option<i64>) -> StoreFuture<'_, ()> {
        self.with_conn(move |conn| {
            let tx = conn.transaction().map_err(other)?;
            let changed = match expected_version {
                Some(v) => tx.execute(
                    "DELETE FROM api_keys WHERE id = ?1 AND version = ?2",
                    params![id, v],
                ),
                None => tx.execute("DELETE FROM api_keys WHERE id = ?1", params![id]),
            }
            .map_err(write_error)?;
            if changed == 0 {
                let exists = tx
                    .query_row("SELECT 1 FROM api_keys WHERE id = ?1", [&id], |_| Ok(()))
                    .optional()
                    .map_err(other)?;
                return Err(match (exists, expected_version) {
                    (Some(()), Some(expected)) => StoreError::VersionConflict { expected },
                    _ => StoreError::NotFound,
                });
            }
            tx.commit().map_err(other)?;
            Ok(())
        })
    }

    fn insert_many(&self, keys: Vec<ApiKey>) -> StoreFuture<'_, ()> {
        self.with_conn(move |conn| {
            let tx = conn.transaction().map_err(other)?;
            {
                let mut stmt = tx
                    .prepare("INSERT INTO api_keys (id, client_id, name, version, record) VALUES (?1, ?2, ?3, ?4, ?5)")
                    .map_err(other)?;
                for key in &keys {
                    stmt.execute(params![key.id, key.client_id, key.name, key.version, encode(key)?]).map_err(write_error)?;
                }
            }
            tx.commit().map_err(other)?;
            Ok(())
        })
    }

    fn ping(&self) -> StoreFuture<'_, ()> {
        self.with_conn(|conn| {
            conn.query_row("SELECT 1", [], |_| Ok(()))
                .map_err(|e| StoreError::Unavailable(e.to_string()))
        })
    }

    fn kind(&self) -> &'static str {
        "sqlite"
    }
}
