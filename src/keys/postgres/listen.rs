//! Change propagation: a dedicated connection `LISTEN`s on `keyward_keys`; each notification names a key, which
//! is read back and applied to the map. Notifications sent while disconnected are lost, so after every
//! (re)connect the map is reloaded in full and swapped in atomically. The connection is checked every few
//! seconds; when it drops, the sidecar keeps serving from memory and reconnects with backoff.
//!
//! At start the feed connects and listens first, and the sidecar's initial load is that first full read
//! ([`prime`]): nothing committed between the two is missed, and a million keys are read once, not twice (a
//! second full read would also hold two maps in memory at once).

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use serde::Deserialize;
use tokio::sync::{Mutex, mpsc, watch};
use tokio::task::JoinHandle;
use tokio_postgres::{AsyncMessage, Client, NoTls};

use super::schema::CHANNEL;
use super::{PostgresStore, decode, load_each, map_error};
use crate::keys::cache::KeyCache;
use crate::keys::{ChangeEvent, StoreError};
use crate::metrics::Metrics;

/// Notifications buffered between the connection and the applier; past this a full reload replaces them.
const QUEUE: usize = 4096;
/// How often the LISTEN connection is checked with a round trip.
const HEARTBEAT: Duration = Duration::from_secs(2);
/// Longest wait for a heartbeat answer before the connection is treated as lost.
const HEARTBEAT_TIMEOUT: Duration = Duration::from_secs(5);
/// First and longest pause between reconnect attempts.
const BACKOFF: (Duration, Duration) = (Duration::from_millis(100), Duration::from_secs(5));

/// What the listener keeps current.
#[derive(Clone)]
pub struct SyncTarget {
    /// The in-memory map.
    pub cache: Arc<KeyCache>,
    /// `store_up`, reconnects, last sync.
    pub metrics: Arc<Metrics>,
    /// Held around every read-and-apply, so an admin write never interleaves with it.
    pub write_lock: Arc<Mutex<()>>,
}

/// A notification payload: `{"op":"upsert"|"delete","id","version"}` from the trigger, or `{"op":"reload"}`
/// after a bulk import.
#[derive(Debug, Deserialize)]
struct Notice {
    op: String,
    #[serde(default)]
    id: Option<String>,
}

/// Why a session ended.
enum Ended {
    Stopped,
    Lost(StoreError),
}

/// A change feed that is connected and listening, whose full read is already in the map.
pub struct Primed(Session);

/// Connect the feed, `LISTEN`, then read every key into `target`'s map: the sidecar's initial load.
pub async fn prime(store: &PostgresStore, target: &SyncTarget) -> Result<Primed, StoreError> {
    let session = Session::open(store).await?;
    session.reload(target).await?;
    target.metrics.store_up.set(1);
    Ok(Primed(session))
}

/// Keep `target` in sync with `store` until `stop` turns true, starting with the `primed` feed if given.
pub async fn run(
    store: PostgresStore,
    target: SyncTarget,
    mut stop: watch::Receiver<bool>,
    primed: Option<Primed>,
) {
    let mut delay = BACKOFF.0;
    let mut connected_before = primed.is_some();
    let mut primed = primed.map(|p| p.0);
    loop {
        let (session, loaded) = match primed.take() {
            Some(session) => (Ok(session), true),
            None => {
                let opened = tokio::select! {
                    s = Session::open(&store) => s,
                    _ = stop.changed() => return,
                };
                (opened, false)
            }
        };
        let ended = match session {
            Ok(mut session) => {
                if connected_before && !loaded {
                    target.metrics.store_reconnects.inc();
                }
                connected_before = true;
                delay = BACKOFF.0;
                session.serve(&target, &mut stop, loaded).await
            }
            Err(e) => Ended::Lost(e),
        };
        let Ended::Lost(e) = ended else { return };
        target.metrics.store_up.set(0);
        tracing::warn!(error = %e, retry_ms = delay.as_millis() as u64,
            "Store change feed down: serving keys from memory, reconnecting");
        tokio::select! {
            () = tokio::time::sleep(delay) => {}
            _ = stop.changed() => return,
        }
        delay = (delay * 2).min(BACKOFF.1);
    }
}

/// One LISTEN connection and the task driving it.
struct Session {
    client: Client,
    notices: mpsc::Receiver<String>,
    overflowed: Arc<AtomicBool>,
    driver: JoinHandle<()>,
}

// === impl Session ===

impl Session {
    /// Connect, start the driver, `LISTEN`.
    async fn open(store: &PostgresStore) -> Result<Self, StoreError> {
        store.migrate().await?;
        let (client, mut connection) = store.config().connect(NoTls).await.map_err(map_error)?;
        let (tx, notices) = mpsc::channel(QUEUE);
        let overflowed = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&overflowed);
        // The connection must be polled for the client's queries to complete, so the driver never waits on the
        // queue: when it is full, the notice is dropped and a full reload is asked for instead.
        let driver = tokio::spawn(async move {
            while let Some(msg) = std::future::poll_fn(|cx| connection.poll_message(cx)).await {
                match msg {
                    Ok(AsyncMessage::Notification(n)) => {
                        if let Err(mpsc::error::TrySendError::Full(_)) =
                            tx.try_send(n.payload().to_owned())
                        {
                            flag.store(true, Ordering::Release);
                        }
                    }
                    Ok(_) => {}
                    Err(e) => {
                        tracing::debug!(error = %e, "Store change feed connection failed");
                        break;
                    }
                }
            }
        });
        let session = Self {
            client,
            notices,
            overflowed,
            driver,
        };
        session
            .client
            .batch_execute(&format!("LISTEN {CHANNEL}"))
            .await
            .map_err(map_error)?;
        Ok(session)
    }

    /// Reload in full (unless this session's read is `loaded` already), then apply notifications until the
    /// connection is lost or `stop` turns true.
    async fn serve(
        &mut self,
        target: &SyncTarget,
        stop: &mut watch::Receiver<bool>,
        loaded: bool,
    ) -> Ended {
        if !loaded {
            if let Err(e) = self.reload(target).await {
                return Ended::Lost(e);
            }
        }
        target.metrics.store_up.set(1);
        let mut heartbeat = tokio::time::interval(HEARTBEAT);
        heartbeat.reset();
        loop {
            let result = tokio::select! {
                n = self.notices.recv() => match n {
                    Some(first) => self.apply_pending(first, target).await,
                    None => Err(StoreError::Unavailable("the change feed connection closed".into())),
                },
                _ = heartbeat.tick() => self.heartbeat(target).await,
                _ = stop.changed() => return Ended::Stopped,
            };
            if let Err(e) = result {
                return Ended::Lost(e);
            }
        }
    }

    /// Read every key and swap the map.
    async fn reload(&self, target: &SyncTarget) -> Result<(), StoreError> {
        let _guard = target.write_lock.lock().await;
        // Notices queued before this read are covered by it.
        self.overflowed.store(false, Ordering::Release);
        let started = std::time::Instant::now();
        // Each key becomes its entry as it is decoded (the cached one if it did not change).
        let cache = Arc::clone(&target.cache);
        let entries = load_each(&self.client, move |key| cache.entry_for(key)).await?;
        let count = entries.len();
        let cache = Arc::clone(&target.cache);
        // Building fresh indexes for a large map is CPU work: keep it off the async workers.
        tokio::task::spawn_blocking(move || cache.replace_entries(entries))
            .await
            .map_err(|e| StoreError::Other(format!("reload task: {e}")))?;
        target.metrics.mark_synced();
        tracing::info!(
            keys = count,
            elapsed_ms = started.elapsed().as_millis() as u64,
            "Store change feed connected: keys read"
        );
        Ok(())
    }

    /// Apply `first` and every notice already queued behind it, reading the named keys in one query.
    async fn apply_pending(
        &mut self,
        first: String,
        target: &SyncTarget,
    ) -> Result<(), StoreError> {
        let mut ids = BTreeSet::new();
        let mut next = Some(first);
        while let Some(payload) = next {
            match serde_json::from_str::<Notice>(&payload) {
                Ok(Notice { id: Some(id), .. }) => {
                    ids.insert(id);
                }
                Ok(n) => {
                    if n.op != "reload" {
                        tracing::warn!(op = %n.op, "Unknown store notification: reloading in full");
                    }
                    self.overflowed.store(true, Ordering::Release);
                }
                Err(e) => {
                    tracing::warn!(error = %e, "Unreadable store notification: reloading in full");
                    self.overflowed.store(true, Ordering::Release);
                }
            }
            next = if ids.len() < 1024 {
                self.notices.try_recv().ok()
            } else {
                None
            };
        }
        if self.overflowed.load(Ordering::Acquire) {
            return self.reload(target).await;
        }
        let _guard = target.write_lock.lock().await;
        let ids: Vec<String> = ids.into_iter().collect();
        let rows = self
            .client
            .query(
                "SELECT id, record::text FROM keyward_api_keys WHERE id = ANY($1)",
                &[&ids],
            )
            .await
            .map_err(map_error)?;
        let mut found = BTreeSet::new();
        for row in rows {
            let id: String = row.try_get(0).map_err(map_error)?;
            match decode(row.try_get(1).map_err(map_error)?) {
                Ok(key) => target.cache.apply(ChangeEvent::Upsert(Box::new(key))),
                Err(e) => tracing::error!(error = %e, key_id = %id, "Stored key cannot be decoded"),
            }
            found.insert(id);
        }
        // A key named by a notification but gone from the table was deleted (its delete notice follows).
        for id in ids.into_iter().filter(|id| !found.contains(id)) {
            target.cache.apply(ChangeEvent::Delete(id));
        }
        target.metrics.mark_synced();
        Ok(())
    }

    /// A round trip on the LISTEN connection: proves that no notification can have been missed so far.
    async fn heartbeat(&self, target: &SyncTarget) -> Result<(), StoreError> {
        match tokio::time::timeout(HEARTBEAT_TIMEOUT, self.client.simple_query("SELECT 1")).await {
            Ok(Ok(_)) => {
                target.metrics.mark_synced();
                target.metrics.store_up.set(1);
                Ok(())
            }
            Ok(Err(e)) => Err(map_error(e)),
            Err(_) => Err(StoreError::Unavailable(
                "the change feed did not answer".into(),
            )),
        }
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        self.driver.abort();
    }
}
