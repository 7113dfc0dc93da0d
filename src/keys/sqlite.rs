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
    // 3. A change sequence, so that a sidecar reads only what other processes changed (see `changes_since`):
    // every write takes the next `n` and stamps it on the rows it writes, a delete leaves a tombstone stamped
    // the same way, and tombstones older than `TOMBSTONE_WINDOW` changes are pruned (`pruned_below`).
    "ALTER TABLE api_keys ADD COLUMN seq INTEGER NOT NULL DEFAULT 0;
    CREATE INDEX api_keys_by_seq ON api_keys (seq);
    CREATE TABLE api_key_deletions (
        id  TEXT PRIMARY KEY,
        seq INTEGER NOT NULL
    ) STRICT;
    CREATE INDEX api_key_deletions_by_seq ON api_key_deletions (seq);
    CREATE TABLE change_seq (
        n            INTEGER NOT NULL,
        pruned_below INTEGER NOT NULL
    ) STRICT;
    INSERT INTO change_seq (n, pruned_below) VALUES (0, 0);",
];

/// Changes whose tombstones are kept: a sidecar that falls further behind (it was stopped, or its file was
/// restored) reloads in full instead.
const TOMBSTONE_WINDOW: i64 = 100_000;

/// Takes the next change number (inside the caller's transaction); the statements after it stamp it with
/// `(SELECT n FROM change_seq)`.
const NEXT_CHANGE: &str = "UPDATE change_seq SET n = n + 1";

/// What other processes changed since a sidecar last read the store ([`SqliteStore::changes_since`]).
#[derive(Debug)]
pub enum StoreChanges {
    /// The keys written and the ids deleted after the given change, and the change they bring the reader to.
    /// Apply the deletions first: an id deleted and created again is in both.
    Since {
        /// Keys inserted or updated.
        written: Vec<ApiKey>,
        /// Ids deleted.
        deleted: Vec<String>,
        /// The last change they include.
        seq: i64,
    },
    /// The tombstones of that change were pruned, or the file is behind it (it was replaced): reload in full.
    TooOld,
}

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
        conn.execute_batch("PRAGMA busy_timeout = 5000;")
            .and_then(|()| switch_to_wal(&conn))
            .and_then(|()| conn.execute_batch("PRAGMA synchronous = FULL;"))
            .map_err(|e| StoreError::Other(format!("{}: setting WAL: {e}", path.display())))?;
        migrate(&mut conn)
            .map_err(|e| StoreError::Other(format!("{}: migrating: {e}", path.display())))?;
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

    /// Every key, each passed through `convert` as it is decoded, and the last change they include, read in
    /// one transaction (the start of [`SqliteStore::changes_since`]).
    pub async fn load_each_with_seq<T: Send + 'static>(
        &self,
        convert: impl Fn(ApiKey) -> T + Sync + Send + 'static,
    ) -> Result<(Vec<T>, i64), StoreError> {
        self.with_conn(move |conn| {
            let tx = conn.transaction().map_err(other)?;
            let seq = tx
                .query_row("SELECT n FROM change_seq", [], |r| r.get(0))
                .map_err(other)?;
            let keys = select_each(&tx, "SELECT record FROM api_keys", [], &convert)?;
            tx.commit().map_err(other)?;
            Ok((keys, seq))
        })
        .await
    }

    /// What was written and deleted after change `seq`, read in one transaction.
    pub async fn changes_since(&self, seq: i64) -> Result<StoreChanges, StoreError> {
        self.with_conn(move |conn| {
            let tx = conn.transaction().map_err(other)?;
            let (now, pruned_below): (i64, i64) = tx
                .query_row("SELECT n, pruned_below FROM change_seq", [], |r| {
                    Ok((r.get(0)?, r.get(1)?))
                })
                .map_err(other)?;
            // Past the reader's change: the file was replaced (restored from a backup, say), and its numbers
            // say nothing about what the reader holds.
            if seq < pruned_below || seq > now {
                return Ok(StoreChanges::TooOld);
            }
            let written = select_records(&tx, "SELECT record FROM api_keys WHERE seq > ?1", [seq])?;
            let deleted = {
                let mut stmt = tx
                    .prepare("SELECT id FROM api_key_deletions WHERE seq > ?1")
                    .map_err(other)?;
                let rows = stmt
                    .query_map([seq], |r| r.get::<_, String>(0))
                    .map_err(other)?;
                rows.collect::<Result<Vec<String>, _>>().map_err(other)?
            };
            tx.commit().map_err(other)?;
            Ok(StoreChanges::Since {
                written,
                deleted,
                seq: now,
            })
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

/// `journal_mode = WAL`, tried again while another process opening the file at the same moment holds it:
/// SQLite answers busy at once there rather than waiting out the busy timeout. Bounded at five seconds, like
/// the busy timeout.
fn switch_to_wal(conn: &Connection) -> Result<(), rusqlite::Error> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        match conn.execute_batch("PRAGMA journal_mode = WAL;") {
            Err(rusqlite::Error::SqliteFailure(f, _))
                if f.code == ErrorCode::DatabaseBusy && std::time::Instant::now() < deadline =>
            {
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
            done => return done,
        }
    }
}

/// Run the migrations the file lacks, in one write transaction taken before the version is read again:
/// processes that open the file at once (sidecars sharing it, after an upgrade) queue on the lock, and those
/// behind the first find nothing left to do. An up-to-date file is not locked (a long import may be writing).
fn migrate(conn: &mut Connection) -> Result<(), StoreError> {
    let version = |conn: &Connection| -> Result<usize, StoreError> {
        conn.query_row("PRAGMA user_version", [], |r| r.get(0))
            .map_err(other)
    };
    if version(conn)? >= MIGRATIONS.len() {
        return Ok(());
    }
    let tx = conn
        .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
        .map_err(other)?;
    let done = version(&tx)?;
    if done >= MIGRATIONS.len() {
        return Ok(());
    }
    for sql in &MIGRATIONS[done..] {
        tx.execute_batch(sql).map_err(other)?;
    }
    tx.execute_batch(&format!("PRAGMA user_version = {}", MIGRATIONS.len()))
        .map_err(other)?;
    tx.commit().map_err(other)
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

/// The keys whose records `sql` selects, decoded in batches (an import of a million keys is one change).
fn select_records(
    conn: &Connection,
    sql: &str,
    params: impl rusqlite::Params,
) -> Result<Vec<ApiKey>, StoreError> {
    select_each(conn, sql, params, &|key| key)
}

/// [`select_records`], each key passed through `convert` as it is decoded: the JSON text of a million keys is
/// never held at once, nor the decoded keys beside what they are converted to.
fn select_each<T: Send>(
    conn: &Connection,
    sql: &str,
    params: impl rusqlite::Params,
    convert: &(impl Fn(ApiKey) -> T + Sync),
) -> Result<Vec<T>, StoreError> {
    let mut stmt = conn.prepare(sql).map_err(other)?;
    let rows = stmt
        .query_map(params, |r| r.get::<_, String>(0))
        .map_err(other)?;
    let mut keys = Vec::new();
    let mut batch = Vec::with_capacity(DECODE_BATCH);
    for row in rows {
        batch.push(row.map_err(other)?);
        if batch.len() == DECODE_BATCH {
            keys.extend(super::decode_records_each(&batch, convert)?);
            batch.clear();
        }
    }
    keys.extend(super::decode_records_each(&batch, convert)?);
    Ok(keys)
}

fn encode(key: &ApiKey) -> Result<String, StoreError> {
    serde_json::to_string(key).map_err(|e| StoreError::Other(format!("encode key: {e}")))
}

impl KeyStore for SqliteStore {
    fn load_all(&self) -> StoreFuture<'_, Vec<ApiKey>> {
        self.with_conn(|conn| select_records(conn, "SELECT record FROM api_keys", []))
    }

    fn insert(&self, key: ApiKey) -> StoreFuture<'_, ()> {
        self.with_conn(move |conn| {
            let record = encode(&key)?;
            let tx = conn.transaction().map_err(other)?;
            tx.execute(NEXT_CHANGE, []).map_err(other)?;
            tx.execute(
                "INSERT INTO api_keys (id, client_id, name, version, record, seq) VALUES (?1, ?2, ?3, ?4, ?5, (SELECT n FROM change_seq))",
                params![key.id, key.client_id, key.name, key.version, record],
            )
            .map_err(write_error)?;
            tx.commit().map_err(other)?;
            Ok(())
        })
    }

    fn update(&self, key: ApiKey, expected_version: i64) -> StoreFuture<'_, ()> {
        self.with_conn(move |conn| {
            let record = encode(&key)?;
            let tx = conn.transaction().map_err(other)?;
            tx.execute(NEXT_CHANGE, []).map_err(other)?;
            let changed = tx
                .execute(
                    "UPDATE api_keys SET client_id = ?2, name = ?3, version = ?4, record = ?5, seq = (SELECT n FROM change_seq) WHERE id = ?1 AND version = ?6",
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
            tx.execute(NEXT_CHANGE, []).map_err(other)?;
            tx.execute(
                "INSERT OR REPLACE INTO api_key_deletions (id, seq) VALUES (?1, (SELECT n FROM change_seq))",
                [&id],
            )
            .map_err(other)?;
            tx.execute(
                "UPDATE change_seq SET pruned_below = n - ?1 WHERE n - ?1 > pruned_below",
                [TOMBSTONE_WINDOW],
            )
            .map_err(other)?;
            tx.execute(
                "DELETE FROM api_key_deletions WHERE seq < (SELECT pruned_below FROM change_seq)",
                [],
            )
            .map_err(other)?;
            tx.commit().map_err(other)?;
            Ok(())
        })
    }

    fn insert_many(&self, keys: Vec<ApiKey>) -> StoreFuture<'_, ()> {
        self.with_conn(move |conn| {
            let tx = conn.transaction().map_err(other)?;
            // One change for the whole import.
            tx.execute(NEXT_CHANGE, []).map_err(other)?;
            {
                let mut stmt = tx
                    .prepare("INSERT INTO api_keys (id, client_id, name, version, record, seq) VALUES (?1, ?2, ?3, ?4, ?5, (SELECT n FROM change_seq))")
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
