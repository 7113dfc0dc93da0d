//! Registered upstreams in PostgreSQL (`keyward_upstreams`, migration 2) and their change feed: a dedicated
//! connection `LISTEN`s on `keyward_upstreams` and reloads the whole (small) set after every notification and
//! after every (re)connect, so a change made through any sidecar is in force on all of them.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, watch};
use tokio_postgres::{AsyncMessage, Client, NoTls};

use super::schema::UPSTREAMS_CHANNEL;
use super::{PostgresStore, map_error};
use crate::keys::{StoreError, StoreFuture};
use crate::upstreams::{RegisteredUpstream, UpstreamRegistry, UpstreamStore, decode, encode};

/// How often the LISTEN connection is checked with a round trip.
const HEARTBEAT: Duration = Duration::from_secs(2);
/// Longest wait for a heartbeat answer.
const HEARTBEAT_TIMEOUT: Duration = Duration::from_secs(5);
/// First and longest pause between reconnect attempts.
const BACKOFF: (Duration, Duration) = (Duration::from_millis(100), Duration::from_secs(5));

async fn load(client: &Client) -> Result<Vec<RegisteredUpstream>, StoreError> {
    let rows = client
        .query("SELECT record::text FROM keyward_upstreams", &[])
        .await
        .map_err(map_error)?;
    rows.iter()
        .map(|r| decode(r.try_get(0).map_err(map_error)?))
        .collect()
}

impl UpstreamStore for PostgresStore {
    fn load_upstreams(&self) -> StoreFuture<'_, Vec<RegisteredUpstream>> {
        Box::pin(async move {
            let client = self.client().await?;
            load(&client).await
        })
    }

    fn insert_upstream(&self, u: RegisteredUpstream) -> StoreFuture<'_, ()> {
        Box::pin(async move {
            let record = encode(&u)?;
            let client = self.client().await?;
            client
                .execute(
                    "INSERT INTO keyward_upstreams (record) VALUES ($1::text::json)",
                    &[&record],
                )
                .await
                .map_err(map_error)?;
            Ok(())
        })
    }

    fn update_upstream(&self, u: RegisteredUpstream, expected: i64) -> StoreFuture<'_, ()> {
        Box::pin(async move {
            let record = encode(&u)?;
            let client = self.client().await?;
            let changed = client
                .execute(
                    "UPDATE keyward_upstreams SET record = $2::text::json WHERE id = $1 AND version = $3",
                    &[&u.id, &record, &expected],
                )
                .await
                .map_err(map_error)?;
            if changed == 0 {
                return Err(missing_or_stale(&client, &u.id, Some(expected)).await?);
            }
            Ok(())
        })
    }

    fn delete_upstream(&self, id: String, expected: Option<i64>) -> StoreFuture<'_, ()> {
        Box::pin(async move {
            let client = self.client().await?;
            let changed = match expected {
                Some(v) => {
                    client
                        .execute(
                            "DELETE FROM keyward_upstreams WHERE id = $1 AND version = $2",
                            &[&id, &v],
                        )
                        .await
                }
                None => {
                    client
                        .execute("DELETE FROM keyward_upstreams WHERE id = $1", &[&id])
                        .await
                }
            }
            .map_err(map_error)?;
            if changed == 0 {
                return Err(missing_or_stale(&client, &id, expected).await?);
            }
            Ok(())
        })
    }
}

async fn missing_or_stale(
    client: &Client,
    id: &str,
    expected: Option<i64>,
) -> Result<StoreError, StoreError> {
    let row = client
        .query_opt("SELECT 1 FROM keyward_upstreams WHERE id = $1", &[&id])
        .await
        .map_err(map_error)?;
    Ok(match (row, expected) {
        (Some(_), Some(expected)) => StoreError::VersionConflict { expected },
        _ => StoreError::NotFound,
    })
}

/// Keep `registry` in sync with the store until `stop` turns true.
pub async fn run_feed(
    store: PostgresStore,
    registry: Arc<UpstreamRegistry>,
    mut stop: watch::Receiver<bool>,
) {
    let mut delay = BACKOFF.0;
    loop {
        let result = tokio::select! {
            r = session(&store, &registry, &mut delay) => r,
            _ = stop.changed() => return,
        };
        if let Err(e) = result {
            tracing::warn!(error = %e, retry_ms = delay.as_millis() as u64,
                "Upstream change feed down: serving upstreams from memory, reconnecting");
        }
        tokio::select! {
            () = tokio::time::sleep(delay) => {}
            _ = stop.changed() => return,
        }
        delay = (delay * 2).min(BACKOFF.1);
    }
}

/// One LISTEN connection: reload, then reload again on every notice, until the connection fails.
async fn session(
    store: &PostgresStore,
    registry: &UpstreamRegistry,
    delay: &mut Duration,
) -> Result<(), StoreError> {
    store.migrate().await?;
    let (client, mut connection) = store.config().connect(NoTls).await.map_err(map_error)?;
    // One pending notice is enough: each one means "reload everything".
    let (tx, mut notices) = mpsc::channel::<()>(1);
    let driver = tokio::spawn(async move {
        while let Some(msg) = std::future::poll_fn(|cx| connection.poll_message(cx)).await {
            match msg {
                Ok(AsyncMessage::Notification(_)) => {
                    let _ = tx.try_send(());
                }
                Ok(_) => {}
                Err(_) => break,
            }
        }
    });
    let _abort = AbortOnDrop(driver);
    client
        .batch_execute(&format!("LISTEN {UPSTREAMS_CHANNEL}"))
        .await
        .map_err(map_error)?;
    registry.reload(load(&client).await?);
    *delay = BACKOFF.0;
    let mut heartbeat = tokio::time::interval(HEARTBEAT);
    heartbeat.reset();
    loop {
        tokio::select! {
            n = notices.recv() => match n {
                Some(()) => registry.reload(load(&client).await?),
                None => return Err(StoreError::Unavailable("the upstream change feed closed".into())),
            },
            _ = heartbeat.tick() => {
                match tokio::time::timeout(HEARTBEAT_TIMEOUT, client.simple_query("SELECT 1")).await {
                    Ok(Ok(_)) => {}
                    Ok(Err(e)) => return Err(map_error(e)),
                    Err(_) => return Err(StoreError::Unavailable("the upstream change feed did not answer".into())),
                }
            }
        }
    }
}

/// Stops the connection driver when the session ends.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}
