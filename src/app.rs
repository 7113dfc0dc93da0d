//! Wiring: open the store, load the key map, bind both listeners, spawn the tasks, and drain on shutdown
//! within the grace limit.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use crate::admin::{self, AdminState};
use crate::auth::Authenticator;
use crate::config::{Config, StoreConfig};
use crate::keys::cache::KeyCache;
use crate::keys::postgres::{self, PostgresStore};
use crate::keys::sqlite::{SqliteStore, StoreChanges};
use crate::keys::{ChangeEvent, KeyStore, StoreError};
use crate::metrics::Metrics;
use crate::proxy::{self, ProxyState};
use crate::server::{Listener, tls};
use crate::upstreams::{UpstreamRegistry, UpstreamStore};

/// Why the app could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The store could not be opened or read.
    #[error("store: {0}")]
    Store(#[from] StoreError),
    /// A listener could not bind.
    #[error("bind {0}: {1}")]
    Bind(SocketAddr, std::io::Error),
    /// TLS files are bad.
    #[error("tls: {0}")]
    Tls(#[from] tls::TlsError),
    /// The upstream client could not be built.
    #[error("upstream: {0}")]
    Upstream(#[from] proxy::forward::UpstreamSetupError),
}

/// A built, bound Keyward ready to run.
pub struct App {
    config: Config,
    proxy: Listener,
    admin: Listener,
    proxy_state: Arc<ProxyState>,
    admin_state: Arc<AdminState>,
    store_watch: StoreWatch,
    primed: Option<postgres::listen::Primed>,
    /// The last SQLite change the start's load included (the SQLite watch goes on from it).
    sqlite_synced: i64,
}

/// The store-specific task that keeps the in-memory map current.
pub enum StoreWatch {
    /// Poll SQLite's `data_version` for commits by other processes.
    Sqlite(SqliteStore),
    /// `LISTEN` for changes; reload in full after every reconnect.
    Postgres(PostgresStore),
}

/// Open the configured store (PostgreSQL connects and migrates on its first call).
pub fn open_store(cfg: &StoreConfig) -> Result<(Arc<dyn KeyStore>, StoreWatch), StoreError> {
    match cfg {
        StoreConfig::Sqlite { path } => {
            let store = SqliteStore::open(path)?;
            Ok((Arc::new(store.clone()), StoreWatch::Sqlite(store)))
        }
        StoreConfig::Postgres { url } => {
            let store = PostgresStore::open(url)?;
            Ok((Arc::new(store.clone()), StoreWatch::Postgres(store)))
        }
    }
}

/// The upstream side of the configured store (the same database as the keys).
fn upstream_store(watch: &StoreWatch) -> Arc<dyn UpstreamStore> {
    match watch {
        StoreWatch::Sqlite(s) => Arc::new(s.clone()),
        StoreWatch::Postgres(s) => Arc::new(s.clone()),
    }
}

/// Load the stored upstreams and warn about routes naming an upstream that is not registered (they answer 502
/// until it is).
async fn load_upstreams(
    config: &Config,
    store: &dyn UpstreamStore,
    registry: &UpstreamRegistry,
) -> Result<(), StoreError> {
    registry.reload(store.load_upstreams().await?);
    for rule in &config.routes {
        if let Some(name) = rule
            .upstream
            .as_deref()
            .filter(|n| registry.get(n).is_none())
        {
            tracing::warn!(route = %rule.name, upstream = %name,
                "Route names an upstream that is not registered: it answers 502 until the upstream is created");
        }
    }
    Ok(())
}

// === impl App ===

impl App {
    /// Open the store, load every key, bind the listeners.
    pub async fn build(config: Config) -> Result<Self, StartError> {
        let (store, store_watch) = open_store(&config.store)?;
        let cache = Arc::new(KeyCache::new());
        let metrics = Arc::new(Metrics::new(store.kind()));
        let write_lock = Arc::new(tokio::sync::Mutex::new(()));
        let started = std::time::Instant::now();
        let mut sqlite_synced = 0;
        let primed = match &store_watch {
            // The change feed listens before the first read, and that read is the initial load.
            StoreWatch::Postgres(pg) => Some(
                postgres::listen::prime(
                    pg,
                    &postgres::listen::SyncTarget {
                        cache: Arc::clone(&cache),
                        metrics: Arc::clone(&metrics),
                        write_lock: Arc::clone(&write_lock),
                    },
                )
                .await?,
            ),
            StoreWatch::Sqlite(sqlite) => {
                sqlite_synced = reload_sqlite(sqlite, &cache).await?;
                None
            }
        };
        tracing::info!(
            keys = cache.len(),
            store = store.kind(),
            elapsed_ms = started.elapsed().as_millis() as u64,
            "Keys loaded"
        );
        let auth = Arc::new(Authenticator::new(
            Arc::clone(&cache),
            &config.auth,
            &config.proxy,
        ));
        let proxy_state = Arc::new(ProxyState::new(
            &config,
            Arc::clone(&auth),
            Arc::clone(&metrics),
        )?);
        let upstream_store = upstream_store(&store_watch);
        let upstreams = Arc::clone(proxy_state.upstreams());
        load_upstreams(&config, upstream_store.as_ref(), &upstreams).await?;
        let admin_state = Arc::new(AdminState {
            auth,
            cache,
            store,
            metrics,
            bootstrap_token: config.admin.bootstrap_token.clone(),
            max_body: config.limits.max_admin_body,
            access_log: config.log.access_log,
            write_lock,
            upstreams,
            upstream_store,
        });
        let proxy_tls = config
            .proxy
            .tls
            .as_ref()
            .map(tls::server_config)
            .transpose()?;
        let admin_tls = config
            .admin
            .tls
            .as_ref()
            .map(tls::server_config)
            .transpose()?;
        let proxy = Listener::bind("proxy", config.proxy.listen, proxy_tls)
            .await
            .map_err(|e| StartError::Bind(config.proxy.listen, e))?;
        let admin = Listener::bind("admin", config.admin.listen, admin_tls)
            .await
            .map_err(|e| StartError::Bind(config.admin.listen, e))?;
        Ok(Self {
            config,
            proxy,
            admin,
            proxy_state,
            admin_state,
            store_watch,
            primed,
            sqlite_synced,
        })
    }

    /// The proxy's bound address.
    pub fn proxy_addr(&self) -> SocketAddr {
        self.proxy.local_addr().unwrap_or(self.config.proxy.listen)
    }

    /// The admin listener's bound address.
    pub fn admin_addr(&self) -> SocketAddr {
        self.admin.local_addr().unwrap_or(self.config.admin.listen)
    }

    /// Serve until `shutdown` completes, then drain both listeners within `shutdown_grace`.
    pub async fn run(self, shutdown: impl Future<Output = ()>) {
        let (tx, rx) = watch::channel(false);
        let grace = self.config.shutdown_grace;
        let limits = self.config.limits.clone();
        let ps = Arc::clone(&self.proxy_state);
        let proxy_task = tokio::spawn(self.proxy.serve(
            limits.clone(),
            move |c, r| proxy::handle(Arc::clone(&ps), c, r),
            rx.clone(),
            grace,
        ));
        let st = Arc::clone(&self.admin_state);
        let admin_task = tokio::spawn(self.admin.serve(
            limits,
            move |c, r| admin::handle(Arc::clone(&st), c, r),
            rx.clone(),
            grace,
        ));
        let state = Arc::clone(&self.admin_state);
        let upstream_feed = match &self.store_watch {
            StoreWatch::Postgres(store) => Some(tokio::spawn(postgres::upstreams::run_feed(
                store.clone(),
                Arc::clone(&state.upstreams),
                rx.clone(),
            ))),
            StoreWatch::Sqlite(_) => None,
        };
        let watcher = match self.store_watch {
            StoreWatch::Sqlite(store) => {
                tokio::spawn(watch_sqlite(store, state, rx, self.sqlite_synced))
            }
            StoreWatch::Postgres(store) => {
                let target = postgres::listen::SyncTarget {
                    cache: Arc::clone(&state.cache),
                    metrics: Arc::clone(&state.metrics),
                    write_lock: Arc::clone(&state.write_lock),
                };
                tokio::spawn(postgres::listen::run(store, target, rx, self.primed))
            }
        };
        shutdown.await;
        tracing::info!(
            grace_s = grace.as_secs(),
            "Shutting down: draining in-flight requests"
        );
        let _ = tx.send(true);
        let _ = tokio::join!(proxy_task, admin_task);
        watcher.abort();
        if let Some(f) = upstream_feed {
            f.abort();
        }
    }
}

/// Follow what other processes (e.g. `keyward keys create`, or another sidecar on the same file) commit to the
/// SQLite file: when its `data_version` moves, apply the keys written and deleted after the last change this
/// sidecar read (`synced`), or reload in full if their tombstones were pruned. The first pass runs at once, for
/// commits made between the start's load and the watch.
async fn watch_sqlite(
    store: SqliteStore,
    state: Arc<AdminState>,
    mut stop: watch::Receiver<bool>,
    mut synced: i64,
) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    let mut last = None;
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.changed() => return,
        }
        let Ok(now) = store.data_version().await else {
            state.metrics.store_up.set(0);
            continue;
        };
        state.metrics.store_up.set(1);
        state.metrics.mark_synced();
        if last == Some(now) {
            continue;
        }
        let _guard = state.write_lock.lock().await;
        let applied = match store.changes_since(synced).await {
            Ok(StoreChanges::Since {
                written,
                deleted,
                seq,
            }) => {
                if !written.is_empty() || !deleted.is_empty() {
                    tracing::info!(
                        written = written.len(),
                        deleted = deleted.len(),
                        "Store changed by another process: changes applied"
                    );
                }
                // Off the runtime thread (an import is one change, of any size). Deletions first: an id
                // deleted and created again is in both.
                let cache = Arc::clone(&state.cache);
                tokio::task::spawn_blocking(move || {
                    for id in deleted {
                        cache.apply(ChangeEvent::Delete(id));
                    }
                    for key in written {
                        cache.apply(ChangeEvent::Upsert(Box::new(key)));
                    }
                })
                .await
                .map(|()| seq)
                .map_err(|e| StoreError::Other(format!("applying the store's changes: {e}")))
            }
            Ok(StoreChanges::TooOld) => {
                tracing::info!(
                    "Store changed by another process beyond its kept deletions: keys reloaded"
                );
                reload_sqlite(&store, &state.cache).await
            }
            Err(e) => Err(e),
        };
        match applied {
            Ok(seq) => {
                synced = seq;
                last = Some(now);
                match store.load_upstreams().await {
                    Ok(upstreams) => state.upstreams.reload(upstreams),
                    Err(e) => {
                        tracing::warn!(error = %e, "Upstream reload after an external store change failed")
                    }
                }
            }
            Err(e) => tracing::warn!(error = %e, "Sync after an external store change failed"),
        }
    }
}

/// Load every key from the SQLite file into `cache` (keys that did not change keep their entries); the change
/// the load includes.
async fn reload_sqlite(store: &SqliteStore, cache: &Arc<KeyCache>) -> Result<i64, StoreError> {
    let converter = Arc::clone(cache);
    let (entries, seq) = store
        .load_each_with_seq(move |key| converter.entry_for(key))
        .await?;
    // Off the runtime thread: with a million keys the swap-in build takes a second.
    let cache = Arc::clone(cache);
    tokio::task::spawn_blocking(move || cache.replace_entries(entries))
        .await
        .map_err(|e| StoreError::Other(format!("reloading the key map: {e}")))?;
    Ok(seq)
}
