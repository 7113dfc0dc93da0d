//! One store conformance suite, run on SQLite (a temp file) and on PostgreSQL (a fresh database per test), plus
//! the PostgreSQL-only behaviour (concurrent migrations, NOTIFY on every write, the change feed) and SQLite's
//! change sequence (what each write stamps, tombstones and their pruning, files from before it).
//!
//! PostgreSQL comes from `KEYWARD_TEST_PG_URL` (a superuser URL; each test creates its own database), e.g.
//! `eval "$(scripts/pg-test.sh start)"`. Unset, the PostgreSQL tests fail when `CI` is set and are skipped
//! (with a "skipped" line) otherwise.
#![expect(
    clippy::unwrap_used,
    reason = "integration tests: a failed step should panic with its value"
)]

mod common;

use common::pg::{fresh_database, pg_url};

use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{TimeZone, Utc};
use keyward::config::Scheme;
use keyward::keys::cache::KeyCache;
use keyward::keys::postgres::PostgresStore;
use keyward::keys::postgres::listen::{self, SyncTarget};
use keyward::keys::secret::Secret;
use keyward::keys::sqlite::{SqliteStore, StoreChanges};
use keyward::keys::view::ApiKeyInput;
use keyward::keys::{ApiKey, KeyStore, PreviousSecret, StoreError};
use keyward::metrics::Metrics;
use tokio_postgres::NoTls;

// === backends ===

async fn pg_store() -> Option<(String, Arc<dyn KeyStore>)> {
    let url = fresh_database(&pg_url()?, "kw_conf").await;
    let store = PostgresStore::connect(&url).await.expect("postgres store");
    Some((url, Arc::new(store)))
}

fn sqlite_store() -> (tempfile::TempDir, Arc<dyn KeyStore>) {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(&dir.path().join("keys.db")).unwrap();
    (dir, Arc::new(store))
}

/// Run each conformance function once per backend.
macro_rules! conformance {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() {
                let (_dir, store) = super::sqlite_store();
                super::$name(store).await;
            })*
        }
        mod postgres {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() {
                let Some((_url, store)) = super::pg_store().await else { return };
                super::$name(store).await;
            })*
        }
    };
}

conformance!(
    empty_store_loads_nothing,
    insert_then_load_all_round_trips_every_field,
    duplicates_are_reported_by_field,
    update_with_the_current_version_replaces_the_key,
    update_with_a_stale_version_is_a_conflict_and_changes_nothing,
    update_of_a_missing_key_is_not_found,
    update_to_a_taken_name_is_a_duplicate,
    delete_checks_the_version,
    concurrent_updates_with_the_same_version_have_one_winner,
    ping_answers,
    insert_many_is_all_or_nothing,
);

// === fixtures ===

fn key(name: &str) -> ApiKey {
    let now = Utc.with_ymd_and_hms(2030, 1, 2, 3, 4, 5).unwrap();
    ApiKeyInput {
        name: Some(name.into()),
        permissions: Some(vec!["orders:read".into()]),
        is_active: Some(true),
        ..ApiKeyInput::default()
    }
    .validate(true)
    .expect("a valid test key")
    .into_new_key(None, now)
}

fn changed(k: &ApiKey) -> ApiKey {
    let mut k = k.clone();
    k.version += 1;
    k.description = Some(format!("v{}", k.version));
    k
}

async fn stored(store: &Arc<dyn KeyStore>, id: &str) -> Option<ApiKey> {
    store
        .load_all()
        .await
        .unwrap()
        .into_iter()
        .find(|k| k.id == id)
}

// === the suite ===

async fn empty_store_loads_nothing(store: Arc<dyn KeyStore>) {
    assert!(store.load_all().await.unwrap().is_empty());
    assert!(matches!(store.kind(), "sqlite" | "postgres"));
}

async fn insert_then_load_all_round_trips_every_field(store: Arc<dyn KeyStore>) {
    let mut k = key("full");
    k.previous_secret = Some(PreviousSecret {
        secret: Secret::generate(),
        valid_until: Utc.with_ymd_and_hms(2031, 5, 6, 7, 8, 9).unwrap(),
    });
    k.description = Some("ünïcödé \"quoted\" \\ text".into());
    k.user_name = Some("alice".into());
    k.device_name = Some("laptop".into());
    k.permissions = vec!["*".into(), "ApiKeyList".into()];
    k.schemes = Some(vec![Scheme::Bearer, Scheme::Rfc9421]);
    k.revoked = true;
    k.revoked_at = Some(Utc.with_ymd_and_hms(2030, 2, 3, 4, 5, 6).unwrap());
    k.expires_at = Some(Utc.with_ymd_and_hms(2032, 1, 1, 0, 0, 0).unwrap());
    store.insert(k.clone()).await.unwrap();
    store.insert(key("other")).await.unwrap();
    let all = store.load_all().await.unwrap();
    assert_eq!(all.len(), 2);
    let got = all.into_iter().find(|x| x.id == k.id).unwrap();
    // The serde form is the storage format, secrets included: compare it whole.
    assert_eq!(
        serde_json::to_value(&got).unwrap(),
        serde_json::to_value(&k).unwrap()
    );
    assert!(
        got.client_secret
            .matches(k.client_secret.expose().as_bytes())
    );
}

async fn duplicates_are_reported_by_field(store: Arc<dyn KeyStore>) {
    let a = key("a");
    store.insert(a.clone()).await.unwrap();
    let mut same_id = key("b");
    same_id.id = a.id.clone();
    let mut same_client = key("c");
    same_client.client_id = a.client_id.clone();
    let same_name = key("a");
    for (k, field) in [
        (same_id, "id"),
        (same_client, "clientId"),
        (same_name, "name"),
    ] {
        match store.insert(k).await {
            Err(StoreError::Duplicate { field: f }) => assert_eq!(f, field),
            other => panic!("{field}: expected Duplicate, got {other:?}"),
        }
    }
    assert_eq!(store.load_all().await.unwrap().len(), 1);
}

async fn update_with_the_current_version_replaces_the_key(store: Arc<dyn KeyStore>) {
    let k = key("u");
    store.insert(k.clone()).await.unwrap();
    let mut v2 = changed(&k);
    v2.name = "renamed".into();
    store.update(v2.clone(), 1).await.unwrap();
    let got = stored(&store, &k.id).await.unwrap();
    assert_eq!(got.version, 2);
    assert_eq!(got.name, "renamed");
    assert_eq!(got.description.as_deref(), Some("v2"));
    store.update(changed(&v2), 2).await.unwrap();
    assert_eq!(stored(&store, &k.id).await.unwrap().version, 3);
    // The old name is free again.
    store.insert(key("u")).await.unwrap();
}

async fn update_with_a_stale_version_is_a_conflict_and_changes_nothing(store: Arc<dyn KeyStore>) {
    let k = key("s");
    store.insert(k.clone()).await.unwrap();
    store.update(changed(&k), 1).await.unwrap();
    match store.update(changed(&k), 1).await {
        Err(StoreError::VersionConflict { expected: 1 }) => {}
        other => panic!("expected VersionConflict, got {other:?}"),
    }
    assert_eq!(stored(&store, &k.id).await.unwrap().version, 2);
}

async fn update_of_a_missing_key_is_not_found(store: Arc<dyn KeyStore>) {
    let k = key("ghost");
    assert!(matches!(
        store.update(changed(&k), 1).await,
        Err(StoreError::NotFound)
    ));
    assert!(store.load_all().await.unwrap().is_empty());
}

async fn update_to_a_taken_name_is_a_duplicate(store: Arc<dyn KeyStore>) {
    let a = key("first");
    let b = key("second");
    store.insert(a.clone()).await.unwrap();
    store.insert(b.clone()).await.unwrap();
    let mut clash = changed(&b);
    clash.name = "first".into();
    assert!(matches!(
        store.update(clash, 1).await,
        Err(StoreError::Duplicate { field: "name" })
    ));
    assert_eq!(stored(&store, &b.id).await.unwrap().name, "second");
}

async fn delete_checks_the_version(store: Arc<dyn KeyStore>) {
    let a = key("d1");
    let b = key("d2");
    store.insert(a.clone()).await.unwrap();
    store.insert(b.clone()).await.unwrap();
    assert!(matches!(
        store.delete(a.id.clone(), Some(7)).await,
        Err(StoreError::VersionConflict { expected: 7 })
    ));
    store.delete(a.id.clone(), Some(1)).await.unwrap();
    assert!(matches!(
        store.delete(a.id.clone(), Some(1)).await,
        Err(StoreError::NotFound)
    ));
    assert!(matches!(
        store.delete(a.id.clone(), None).await,
        Err(StoreError::NotFound)
    ));
    store.delete(b.id.clone(), None).await.unwrap();
    assert!(store.load_all().await.unwrap().is_empty());
}

async fn concurrent_updates_with_the_same_version_have_one_winner(store: Arc<dyn KeyStore>) {
    let k = key("race");
    store.insert(k.clone()).await.unwrap();
    let tasks: Vec<_> = (0..8)
        .map(|i| {
            let store = Arc::clone(&store);
            let mut next = changed(&k);
            next.description = Some(format!("writer {i}"));
            tokio::spawn(async move { store.update(next, 1).await })
        })
        .collect();
    let (mut won, mut conflicts) = (0, 0);
    for t in tasks {
        match t.await.unwrap() {
            Ok(()) => won += 1,
            Err(StoreError::VersionConflict { expected: 1 }) => conflicts += 1,
            Err(e) => panic!("unexpected {e:?}"),
        }
    }
    assert_eq!((won, conflicts), (1, 7));
    assert_eq!(stored(&store, &k.id).await.unwrap().version, 2);
}

async fn ping_answers(store: Arc<dyn KeyStore>) {
    store.ping().await.unwrap();
}

async fn insert_many_is_all_or_nothing(store: Arc<dyn KeyStore>) {
    let existing = key("existing");
    store.insert(existing.clone()).await.unwrap();
    let mut batch: Vec<ApiKey> = (0..12_000).map(|i| key(&format!("bulk-{i}"))).collect();
    batch.push(key("existing"));
    assert!(matches!(
        store.insert_many(batch.clone()).await,
        Err(StoreError::Duplicate { field: "name" })
    ));
    assert_eq!(store.load_all().await.unwrap().len(), 1);
    batch.pop();
    store.insert_many(batch).await.unwrap();
    assert_eq!(store.load_all().await.unwrap().len(), 12_001);
}

// === SQLite only ===

/// The ids in a `changes_since` answer, sorted, and the change it reaches.
async fn changes(store: &SqliteStore, since: i64) -> (Vec<String>, Vec<String>, i64) {
    match store.changes_since(since).await.unwrap() {
        StoreChanges::Since {
            written,
            deleted,
            seq,
        } => {
            let mut written: Vec<String> = written.into_iter().map(|k| k.id).collect();
            written.sort();
            let mut deleted = deleted;
            deleted.sort();
            (written, deleted, seq)
        }
        StoreChanges::TooOld => panic!("changes since {since} reported as pruned"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_changes_since_name_what_each_write_changed() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(&dir.path().join("keys.db")).unwrap();
    let (a, b, c) = (key("a"), key("b"), key("c"));
    store.insert(a.clone()).await.unwrap();
    let (_, after_a) = store.load_each_with_seq(|key| key).await.unwrap();
    assert_eq!(
        changes(&store, 0).await,
        (vec![a.id.clone()], vec![], after_a)
    );
    assert_eq!(changes(&store, after_a).await, (vec![], vec![], after_a));

    store.insert_many(vec![b.clone(), c.clone()]).await.unwrap();
    store.update(changed(&a), a.version).await.unwrap();
    // Refused writes change nothing.
    assert!(store.update(changed(&a), a.version).await.is_err());
    assert!(store.delete(b.id.clone(), Some(99)).await.is_err());
    store.delete(c.id.clone(), None).await.unwrap();
    let (written, deleted, now) = changes(&store, after_a).await;
    let mut expected = vec![a.id.clone(), b.id.clone()];
    expected.sort();
    assert_eq!((written, deleted), (expected, vec![c.id.clone()]));
    // The import is one change, the update one, the delete one.
    assert_eq!(now, after_a + 3);
    assert_eq!(store.load_each_with_seq(|key| key).await.unwrap().1, now);

    // Deleted and created again: in both lists (the reader applies the deletion first).
    store.insert(c.clone()).await.unwrap();
    let (written, deleted, _) = changes(&store, now).await;
    assert_eq!((written, deleted), (vec![c.id.clone()], vec![]));
    let (written, deleted, _) = changes(&store, after_a).await;
    assert!(written.contains(&c.id) && deleted == vec![c.id.clone()]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_tombstones_past_the_window_are_pruned_and_old_readers_reload() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("keys.db");
    let store = SqliteStore::open(&path).unwrap();
    let (old, young) = (key("old"), key("young"));
    store
        .insert_many(vec![old.clone(), young.clone()])
        .await
        .unwrap();
    store.delete(old.id.clone(), None).await.unwrap();
    let (_, after_old) = store.load_each_with_seq(|key| key).await.unwrap();
    // 100 000 changes later (the window), as another writer would leave the file.
    let side = rusqlite::Connection::open(&path).unwrap();
    side.execute("UPDATE change_seq SET n = n + 100000", [])
        .unwrap();
    store.delete(young.id.clone(), None).await.unwrap();
    let tombstones: Vec<String> = side
        .prepare("SELECT id FROM api_key_deletions")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(
        tombstones,
        vec![young.id.clone()],
        "the old tombstone is pruned"
    );
    assert!(matches!(
        store.changes_since(after_old - 1).await.unwrap(),
        StoreChanges::TooOld
    ));
    let (_, deleted, _) = changes(&store, after_old + 100_000).await;
    assert_eq!(deleted, vec![young.id]);
    // A reader ahead of the file (it was replaced by an older copy) reloads in full too.
    assert!(matches!(
        store.changes_since(after_old + 200_000).await.unwrap(),
        StoreChanges::TooOld
    ));
}

#[test]
fn sqlite_processes_opening_one_file_at_once_migrate_it_once() {
    // Sidecars sharing a file start together after an upgrade: each must find the schema whole, none may fail.
    for round in 0..5 {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keys.db");
        let barrier = Arc::new(std::sync::Barrier::new(4));
        let opened: Vec<_> = (0..4)
            .map(|_| {
                let (path, barrier) = (path.clone(), Arc::clone(&barrier));
                std::thread::spawn(move || {
                    barrier.wait();
                    SqliteStore::open(&path).map(|_| ())
                })
            })
            .collect();
        for handle in opened {
            let result = handle.join().unwrap();
            assert!(result.is_ok(), "round {round}: {result:?}");
        }
        let conn = rusqlite::Connection::open(&path).unwrap();
        let version: i64 = conn
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .unwrap();
        assert_eq!(version, 3, "round {round}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_files_from_before_the_change_sequence_migrate_with_their_keys() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("keys.db");
    let kept = key("kept");
    {
        // The schema as the first two migrations left it, with one key.
        let conn = rusqlite::Connection::open(&path).unwrap();
        conn.execute_batch(
            "CREATE TABLE api_keys (id TEXT PRIMARY KEY, client_id TEXT NOT NULL UNIQUE,
                name TEXT NOT NULL UNIQUE, version INTEGER NOT NULL, record TEXT NOT NULL) STRICT;
             CREATE TABLE upstreams (id TEXT PRIMARY KEY, name TEXT NOT NULL UNIQUE,
                version INTEGER NOT NULL, record TEXT NOT NULL) STRICT;
             PRAGMA user_version = 2;",
        )
        .unwrap();
        conn.execute(
            "INSERT INTO api_keys (id, client_id, name, version, record) VALUES (?1, ?2, ?3, ?4, ?5)",
            rusqlite::params![
                kept.id,
                kept.client_id,
                kept.name,
                kept.version,
                serde_json::to_string(&kept).unwrap()
            ],
        )
        .unwrap();
    }
    let store = SqliteStore::open(&path).unwrap();
    let (keys, seq) = store.load_each_with_seq(|key| key).await.unwrap();
    assert_eq!((keys, seq), (vec![kept.clone()], 0));
    let added = key("added");
    store.insert(added.clone()).await.unwrap();
    assert_eq!(changes(&store, 0).await, (vec![added.id], vec![], 1));
}

// === PostgreSQL only ===

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_sidecars_starting_at_once_migrate_once() {
    let Some(base) = pg_url() else { return };
    let url = fresh_database(&base, "kw_conf").await;
    let opens: Vec<_> = (0..10)
        .map(|_| {
            let url = url.clone();
            tokio::spawn(async move { PostgresStore::connect(&url).await.map(|_| ()) })
        })
        .collect();
    for o in opens {
        o.await
            .unwrap()
            .expect("every concurrent start migrates or sees the migration");
    }
    let (client, conn) = tokio_postgres::connect(&url, NoTls).await.unwrap();
    tokio::spawn(conn);
    let rows = client
        .query(
            "SELECT version FROM keyward_schema_migrations ORDER BY version",
            &[],
        )
        .await
        .unwrap();
    let versions: Vec<i32> = rows.iter().map(|r| r.get(0)).collect();
    // every migration recorded exactly once, in order, however many sidecars raced to apply it
    let expected: Vec<i32> = (1..=i32::try_from(versions.len()).unwrap()).collect();
    assert!(!versions.is_empty());
    assert_eq!(versions, expected);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_every_write_notifies_with_op_id_and_version() {
    let Some((url, store)) = pg_store().await else {
        return;
    };
    let (client, mut conn) = tokio_postgres::connect(&url, NoTls).await.unwrap();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Some(Ok(msg)) = std::future::poll_fn(|cx| conn.poll_message(cx)).await {
            if let tokio_postgres::AsyncMessage::Notification(n) = msg {
                let _ = tx.send((n.channel().to_owned(), n.payload().to_owned()));
            }
        }
    });
    client.batch_execute("LISTEN keyward_keys").await.unwrap();
    let k = key("n");
    store.insert(k.clone()).await.unwrap();
    store.update(changed(&k), 1).await.unwrap();
    store.delete(k.id.clone(), Some(2)).await.unwrap();
    let _ = store.update(changed(&k), 1).await; // fails: no notification
    let mut got = Vec::new();
    for _ in 0..3 {
        let (channel, payload) = tokio::time::timeout(Duration::from_secs(10), rx.recv())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(channel, "keyward_keys");
        let v: serde_json::Value = serde_json::from_str(&payload).unwrap();
        got.push((
            v["op"].as_str().unwrap().to_owned(),
            v["id"].as_str().unwrap().to_owned(),
            v["version"].as_i64().unwrap(),
        ));
    }
    let id = k.id;
    assert_eq!(
        got,
        vec![
            ("upsert".into(), id.clone(), 1),
            ("upsert".into(), id.clone(), 2),
            ("delete".into(), id, 2)
        ]
    );
    assert!(
        tokio::time::timeout(Duration::from_millis(300), rx.recv())
            .await
            .is_err(),
        "a failed write notified"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_change_feed_applies_writes_from_elsewhere_to_the_map() {
    let Some((url, store)) = pg_store().await else {
        return;
    };
    let before = key("before");
    store.insert(before.clone()).await.unwrap();
    let cache = Arc::new(KeyCache::new());
    let metrics = Arc::new(Metrics::new("postgres"));
    let target = SyncTarget {
        cache: Arc::clone(&cache),
        metrics: Arc::clone(&metrics),
        write_lock: Arc::new(tokio::sync::Mutex::new(())),
    };
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    // The sidecar's start: the feed listens, then its first full read is the initial load.
    let feed_store = PostgresStore::open(&url).unwrap();
    let primed = listen::prime(&feed_store, &target).await.unwrap();
    assert!(cache.by_id(&before.id).is_some());
    // Another writer (a second store on the same database, like another sidecar) commits after that read
    // and before the feed task runs: the feed was already listening, so the write is not missed.
    let other = PostgresStore::connect(&url).await.unwrap();
    let between = key("between");
    other.insert(between.clone()).await.unwrap();
    let feed = tokio::spawn(listen::run(feed_store, target, stop_rx, Some(primed)));
    wait_for(|| cache.by_id(&between.id).is_some()).await;
    let k = key("from-elsewhere");
    other.insert(k.clone()).await.unwrap();
    let started = Instant::now();
    wait_for(|| cache.by_client_id(&k.client_id).is_some()).await;
    eprintln!("change feed: insert applied after {:?}", started.elapsed());
    let mut revoked = changed(&k);
    revoked.revoked = true;
    other.update(revoked, 1).await.unwrap();
    wait_for(|| {
        cache
            .by_id(&k.id)
            .is_some_and(|e| e.key.revoked && e.key.version == 2)
    })
    .await;
    other.delete(before.id.clone(), None).await.unwrap();
    wait_for(|| cache.by_id(&before.id).is_none()).await;
    // A hand-made UPDATE in the database notifies too (the trigger).
    let (client, conn) = tokio_postgres::connect(&url, NoTls).await.unwrap();
    tokio::spawn(conn);
    client
        .execute(
            "UPDATE keyward_api_keys SET record = (record::jsonb || jsonb_build_object('isActive', false, '_v', version + 1))::json WHERE id = $1",
            &[&k.id],
        )
        .await
        .unwrap();
    wait_for(|| {
        cache
            .by_id(&k.id)
            .is_some_and(|e| !e.key.is_active && e.key.version == 3)
    })
    .await;
    // A bulk import sends one reload notice, not one per row.
    let bulk: Vec<ApiKey> = (0..3).map(|i| key(&format!("imported-{i}"))).collect();
    other.insert_many(bulk.clone()).await.unwrap();
    wait_for(|| bulk.iter().all(|b| cache.by_id(&b.id).is_some())).await;
    assert!(metrics.last_sync_age() < 30.0);
    stop_tx.send(true).unwrap();
    tokio::time::timeout(Duration::from_secs(10), feed)
        .await
        .expect("the feed stops")
        .unwrap();
}

async fn wait_for(mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !f() {
        assert!(Instant::now() < deadline, "condition not met within 10 s");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}
