//! The fleet store: one PostgreSQL database shared by every sidecar. Admin writes go through a small pool with
//! connect, pool-wait and statement timeouts; each write notifies `keyward_keys` in its own transaction (a row
//! trigger, see [`schema`]), and [`listen`] applies the changes to every sidecar's map.
//!
//! The connection is plain TCP: no TLS to the database yet, so run PostgreSQL on a trusted network (loopback, a
//! private subnet) until `sslmode` support lands. Nothing on the request path calls the store.

pub mod listen;
pub mod schema;
pub mod upstreams;

use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Pool, PoolError, RecyclingMethod, Runtime};
use futures_util::TryStreamExt;
use tokio::sync::OnceCell;
use tokio_postgres::NoTls;
use tokio_postgres::error::SqlState;

use super::{ApiKey, KeyStore, StoreError, StoreFuture};

/// Connections in the admin pool.
const POOL_SIZE: usize = 8;
/// Time to open a TCP connection to the server (unless the URL sets `connect_timeout`).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// Time an admin call waits for a free pooled connection.
const POOL_WAIT_TIMEOUT: Duration = Duration::from_secs(5);
/// Server-side limit on one statement (unless the URL's `options` set `statement_timeout`).
const STATEMENT_TIMEOUT_MS: u64 = 5_000;
/// TCP keepalive and user timeout, so a silently dropped connection is noticed.
const TCP_IDLE: Duration = Duration::from_secs(10);

/// The PostgreSQL key store. Cloning shares the pool.
#[derive(Clone)]
pub struct PostgresStore {
    pool: Pool,
    config: Arc<tokio_postgres::Config>,
    migrated: Arc<OnceCell<()>>,
}

// === impl PostgresStore ===

impl PostgresStore {
    /// Parse `url` and build the pool. No I/O happens here: the schema is migrated on the first call, under an
    /// advisory lock.
    pub fn open(url: &str) -> Result<Self, StoreError> {
        let mut config = tokio_postgres::Config::from_str(url)
            // The parser's message never repeats the URL, which may hold a password.
            .map_err(|e| StoreError::Other(format!("store.url: {e}")))?;
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(CONNECT_TIMEOUT);
        }
        let options = config.get_options().unwrap_or_default().to_owned();
        if !options.contains("statement_timeout") {
            config.options(
                format!("{options} -c statement_timeout={STATEMENT_TIMEOUT_MS}")
                    .trim()
                    .to_owned(),
            );
        }
        if config.get_application_name().is_none() {
            config.application_name("keyward");
        }
        config
            .keepalives(true)
            .keepalives_idle(TCP_IDLE)
            .keepalives_interval(Duration::from_secs(5))
            .keepalives_retries(3)
            .tcp_user_timeout(TCP_IDLE);
        let manager = Manager::from_config(
            config.clone(),
            NoTls,
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(POOL_SIZE)
            .wait_timeout(Some(POOL_WAIT_TIMEOUT))
            .create_timeout(Some(CONNECT_TIMEOUT + Duration::from_secs(2)))
            .recycle_timeout(Some(Duration::from_secs(2)))
            .runtime(Runtime::Tokio1)
            .build()
            .map_err(|e| StoreError::Other(format!("postgres pool: {e}")))?;
        Ok(Self {
            pool,
            config: Arc::new(config),
            migrated: Arc::new(OnceCell::new()),
        })
    }

    /// Open and migrate now.
    pub async fn connect(url: &str) -> Result<Self, StoreError> {
        let store = Self::open(url)?;
        store.migrate().await?;
        Ok(store)
    }

    /// Apply pending migrations (once per process; retried on the next call if it failed).
    pub async fn migrate(&self) -> Result<(), StoreError> {
        self.migrated
            .get_or_try_init(|| async {
                let mut client = self.pool.get().await.map_err(pool_error)?;
                schema::migrate(&mut client).await
            })
            .await
            .map(|_| ())
    }

    /// The connection settings (for the dedicated LISTEN connection).
    pub(crate) fn config(&self) -> &tokio_postgres::Config {
        &self.config
    }

    /// A pooled connection to a migrated database.
    async fn client(&self) -> Result<deadpool_postgres::Object, StoreError> {
        self.migrate().await?;
        self.pool.get().await.map_err(pool_error)
    }

    /// Does a key with this id exist (to tell a version conflict from a missing key)?
    async fn exists(client: &deadpool_postgres::Object, id: &str) -> Result<bool, StoreError> {
        let stmt = client
            .prepare_cached("SELECT 1 FROM keyward_api_keys WHERE id = $1")
            .await
            .map_err(map_error)?;
        let row = client.query_opt(&stmt, &[&id]).await.map_err(map_error)?;
        Ok(row.is_some())
    }
}

/// Read every key as a stream, decoding on blocking threads (one per CPU the process may use) while rows still
/// arrive: 1 000 000 keys must load in seconds, and the decoding must not stall the async workers.
pub(crate) async fn load_all(client: &tokio_postgres::Client) -> Result<Vec<ApiKey>, StoreError> {
    load_each(client, |key| key).await
}

/// [`load_all`], each key passed through `convert` on the decoding threads as it is decoded (the change feed
/// turns them into cache entries there, so the decoded set is never held beside the entries).
pub(crate) async fn load_each<T: Send + 'static>(
    client: &tokio_postgres::Client,
    convert: impl Fn(ApiKey) -> T + Clone + Send + 'static,
) -> Result<Vec<T>, StoreError> {
    let (tx, rx) = tokio::sync::mpsc::channel::<Vec<String>>(8);
    let rx = Arc::new(std::sync::Mutex::new(rx));
    let threads = std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get);
    let decoders: Vec<_> = (0..threads)
        .map(|_| {
            let rx = Arc::clone(&rx);
            let convert = convert.clone();
            tokio::task::spawn_blocking(move || {
                let mut keys = Vec::new();
                loop {
                    // The lock is held while waiting for the next chunk, never while decoding one.
                    let next = rx.lock().unwrap_or_else(|p| p.into_inner()).blocking_recv();
                    let Some(chunk) = next else { break };
                    for text in chunk {
                        keys.push(convert(decode(&text)?));
                    }
                }
                Ok::<_, StoreError>(keys)
            })
        })
        .collect();
    let streamed = stream_records(client, tx).await;
    let mut keys = Vec::new();
    let mut failed = None;
    for decoder in decoders {
        match decoder.await {
            Ok(Ok(part)) if keys.is_empty() => keys = part,
            Ok(Ok(part)) => keys.extend(part),
            Ok(Err(e)) => failed = failed.or(Some(e)),
            Err(e) => failed = failed.or(Some(StoreError::Other(format!("decode task: {e}")))),
        }
    }
    // A decode error closes the channel and so ends the stream early: report it first.
    if let Some(e) = failed {
        return Err(e);
    }
    streamed?;
    Ok(keys)
}

/// Send every stored record, in chunks, to `tx`.
async fn stream_records(
    client: &tokio_postgres::Client,
    tx: tokio::sync::mpsc::Sender<Vec<String>>,
) -> Result<(), StoreError> {
    const CHUNK: usize = 2048;
    let rows = client
        .query_raw(
            "SELECT record::text FROM keyward_api_keys",
            std::iter::empty::<&str>(),
        )
        .await
        .map_err(map_error)?;
    let mut rows = std::pin::pin!(rows);
    let mut chunk = Vec::with_capacity(CHUNK);
    while let Some(row) = rows.try_next().await.map_err(map_error)? {
        chunk.push(row.try_get::<_, String>(0).map_err(map_error)?);
        if chunk.len() == CHUNK {
            let full = std::mem::replace(&mut chunk, Vec::with_capacity(CHUNK));
            if tx.send(full).await.is_err() {
                return Ok(()); // the decoder stopped on an error, which it reports
            }
        }
    }
    if !chunk.is_empty() {
        let _ = tx.send(chunk).await;
    }
    Ok(())
}

/// Decode a stored record.
pub(crate) fn decode(text: &str) -> Result<ApiKey, StoreError> {
    serde_json::from_str(text).map_err(|e| StoreError::Other(format!("decode key: {e}")))
}

fn encode(key: &ApiKey) -> Result<String, StoreError> {
    serde_json::to_string(key).map_err(|e| StoreError::Other(format!("encode key: {e}")))
}

/// Map a driver error. Unique violations name the field; a connection that cannot be made or was lost, a
/// server shutting down, too many connections and a statement timeout mean the store is unavailable (503).
pub(crate) fn map_error(e: tokio_postgres::Error) -> StoreError {
    let Some(db) = e.as_db_error() else {
        // I/O, a closed connection, a connect timeout: the server cannot be reached.
        return StoreError::Unavailable(e.to_string());
    };
    let code = db.code();
    if *code == SqlState::UNIQUE_VIOLATION {
        let field = match db.constraint() {
            Some("keyward_api_keys_name_key" | "keyward_upstreams_name_key") => "name",
            Some("keyward_api_keys_client_id_key") => "clientId",
            _ => "id",
        };
        return StoreError::Duplicate { field };
    }
    // Class 08 connection exception, 53 insufficient resources, 57 operator intervention (shutdown, timeout).
    if ["08", "53", "57"]
        .iter()
        .any(|c| code.code().starts_with(c))
    {
        return StoreError::Unavailable(db.message().to_owned());
    }
    StoreError::Other(e.to_string())
}

fn pool_error(e: PoolError) -> StoreError {
    match e {
        PoolError::Backend(e) => map_error(e),
        PoolError::Timeout(t) => {
            StoreError::Unavailable(format!("timed out on a pooled connection ({t:?})"))
        }
        PoolError::Closed => StoreError::Unavailable("the connection pool is closed".into()),
        PoolError::NoRuntimeSpecified | PoolError::PostCreateHook(_) => {
            StoreError::Other(format!("postgres pool: {e}"))
        }
    }
}

impl KeyStore for PostgresStore {
    fn load_all(&self) -> StoreFuture<'_, Vec<ApiKey>> {
        Box::pin(async move {
            let client = self.client().await?;
            load_all(&client).await
        })
    }

    fn insert(&self, key: ApiKey) -> StoreFuture<'_, ()> {
        Box::pin(async move {
            let record = encode(&key)?;
            let client = self.client().await?;
            let stmt = client
                .prepare_cached("INSERT INTO keyward_api_keys (record) VALUES ($1::text::json)")
                .await
                .map_err(map_error)?;
            client.execute(&stmt, &[&record]).await.map_err(map_error)?;
            Ok(())
        })
    }

    fn update(&self, key: ApiKey, expected_version: i64) -> StoreFuture<'_, ()> {
        Box::pin(async move {
            let record = encode(&key)?;
            let client = self.client().await?;
            let stmt = client
                .prepare_cached(
                    "UPDATE keyward_api_keys SET record = $2::text::json WHERE id = $1 AND version = $3",
                )
                .await
                .map_err(map_error)?;
            let changed = client
                .execute(&stmt, &[&key.id, &record, &expected_version])
                .await
                .map_err(map_error)?;
            if changed == 0 {
                return Err(if Self::exists(&client, &key.id).await? {
                    StoreError::VersionConflict {
                        expected: expected_version,
                    }
                } else {
                    StoreError::NotFound
                });
            }
            Ok(())
        })
    }

    fn delete(&self, id: String, expected_version: Option<i64>) -> StoreFuture<'_, ()> {
        Box::pin(async move {
            let client = self.client().await?;
            let changed = match expected_version {
                Some(v) => {
                    let stmt = client
                        .prepare_cached(
                            "DELETE FROM keyward_api_keys WHERE id = $1 AND version = $2",
                        )
                        .await
                        .map_err(map_error)?;
                    client.execute(&stmt, &[&id, &v]).await
                }
                None => {
                    let stmt = client
                        .prepare_cached("DELETE FROM keyward_api_keys WHERE id = $1")
                        .await
                        .map_err(map_error)?;
                    client.execute(&stmt, &[&id]).await
                }
            }
            .map_err(map_error)?;
            if changed == 0 {
                return Err(match expected_version {
                    Some(expected) if Self::exists(&client, &id).await? => {
                        StoreError::VersionConflict { expected }
                    }
                    _ => StoreError::NotFound,
                });
            }
            Ok(())
        })
    }

    fn insert_many(&self, keys: Vec<ApiKey>) -> StoreFuture<'_, ()> {
        Box::pin(async move {
            // Rows per INSERT statement.
            const BATCH: usize = 5_000;
            let records = keys.iter().map(encode).collect::<Result<Vec<_>, _>>()?;
            let mut client = self.client().await?;
            let tx = client.transaction().await.map_err(map_error)?;
            // One notification for the whole import (a full reload on every sidecar), not one per row.
            tx.batch_execute("SET LOCAL keyward.bulk = 'on'")
                .await
                .map_err(map_error)?;
            let stmt = tx
                .prepare("INSERT INTO keyward_api_keys (record) SELECT unnest($1::text[])::json")
                .await
                .map_err(map_error)?;
            for batch in records.chunks(BATCH) {
                tx.execute(&stmt, &[&batch]).await.map_err(map_error)?;
            }
            tx.batch_execute(&format!(
                "SELECT pg_notify('{}', '{{\"op\":\"reload\"}}')",
                schema::CHANNEL
            ))
            .await
            .map_err(map_error)?;
            tx.commit().await.map_err(map_error)
        })
    }

    fn ping(&self) -> StoreFuture<'_, ()> {
        Box::pin(async move {
            let client = self.client().await?;
            client
                .simple_query("SELECT 1")
                .await
                .map_err(|e| StoreError::Unavailable(e.to_string()))?;
            Ok(())
        })
    }

    fn kind(&self) -> &'static str {
        "postgres"
    }
}
