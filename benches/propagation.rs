//! Fleet benchmark (not a test): change propagation delay over 100 changes with 10 sidecar processes on one
//! PostgreSQL, and the time to load 1 000 000 keys at start.
//!
//! `cargo bench --bench propagation`. PostgreSQL comes from `KEYWARD_TEST_PG_URL` (a superuser URL; a fresh
//! database is created per part), or, when unset, from a private cluster started with `scripts/pg-test.sh`.
//! `KEYWARD_BENCH_SIDECARS` (10), `KEYWARD_BENCH_CHANGES` (100) and `KEYWARD_BENCH_KEYS` (1 000 000) change
//! the sizes; `KEYWARD_BENCH_ONLY=propagation` or `=load` runs one part.
//!
//! Delay of one change on one sidecar: from the writing sidecar's 2xx (the commit is acknowledged) to the first
//! admin `GET /apikeys/{id}` on that sidecar showing the new `_v`, polled every millisecond by one task per
//! sidecar. The pollers and all the sidecars share the machine, so this is an upper bound.
#![expect(
    clippy::unwrap_used,
    reason = "a benchmark: a failed step should panic with its value"
)]
#![allow(missing_docs, reason = "a benchmark binary")]

#[path = "../tests/common/mod.rs"]
mod common;

use common::pg::{PrivateCluster, fresh_database, sql};

use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use common::{Keyward, base_config, echo_upstream};
use http::Method;
use keyward::keys::cache::KeyCache;
use keyward::keys::postgres::PostgresStore;
use keyward::keys::view::ApiKeyInput;
use keyward::keys::{ApiKey, KeyStore};
use serde_json::json;

fn setting(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn summary(label: &str, mut samples: Vec<Duration>) {
    samples.sort_unstable();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    println!(
        "{label}: n={} p50={:.1} ms p99={:.1} ms max={:.1} ms",
        samples.len(),
        ms(percentile(&samples, 50.0)),
        ms(percentile(&samples, 99.0)),
        ms(*samples.last().unwrap())
    );
}

async fn propagation(base: &str) {
    let sidecars = setting("KEYWARD_BENCH_SIDECARS", 10);
    let changes = setting("KEYWARD_BENCH_CHANGES", 100);
    let url = fresh_database(base, "kw_bench_prop").await;
    let upstream = echo_upstream().await;
    let env = [
        ("KEYWARD_STORE__KIND", "postgres"),
        ("KEYWARD_STORE__URL", url.as_str()),
    ];
    let mut fleet = Vec::new();
    for _ in 0..sidecars {
        let dir = Arc::new(tempfile::tempdir().unwrap());
        let config = base_config(dir.path(), upstream, "[log]\naccess_log = false");
        fleet.push(Arc::new(Keyward::start_in(dir, &config, &env).await));
    }
    let key = fleet[0]
        .create_key(json!({"name": "bench", "isActive": true}))
        .await;
    let path = format!("/apikeys/{}", key["id"].as_str().unwrap());
    wait_everywhere(&fleet, &path, 1, None).await;
    let (mut per_sidecar, mut everywhere) = (Vec::new(), Vec::new());
    for i in 0..changes {
        let version = i as i64 + 1;
        let writer = &fleet[i % sidecars];
        let body = json!({"name": "bench", "isActive": true, "description": format!("change {i}"), "_v": version});
        let r = writer.admin(Method::PUT, &path, Some(body)).await;
        assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
        let acked = Instant::now();
        let delays = wait_everywhere(&fleet, &path, version + 1, Some(i % sidecars)).await;
        let delays: Vec<Duration> = delays
            .into_iter()
            .map(|t| t.saturating_duration_since(acked))
            .collect();
        everywhere.push(*delays.iter().max().unwrap());
        per_sidecar.extend(delays);
    }
    println!(
        "propagation: {changes} changes through {sidecars} sidecars (round robin) on one PostgreSQL"
    );
    summary("  delay to each other sidecar", per_sidecar);
    summary("  delay until in force on every sidecar", everywhere);
}

/// Poll every sidecar but `skip` until it shows `version`; returns when each first did.
async fn wait_everywhere(
    fleet: &[Arc<Keyward>],
    path: &str,
    version: i64,
    skip: Option<usize>,
) -> Vec<Instant> {
    let tasks: Vec<_> = fleet
        .iter()
        .enumerate()
        .filter(|(i, _)| Some(*i) != skip)
        .map(|(_, kw)| {
            let (kw, path) = (Arc::clone(kw), path.to_owned());
            tokio::spawn(async move {
                let deadline = Instant::now() + Duration::from_secs(30);
                loop {
                    let v = kw.admin(Method::GET, &path, None).await;
                    if v.status == 200 && v.json()["_v"] == version {
                        return Instant::now();
                    }
                    assert!(Instant::now() < deadline, "version {version} never arrived");
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
            })
        })
        .collect();
    let mut seen = Vec::new();
    for t in tasks {
        seen.push(t.await.unwrap());
    }
    seen
}

async fn load(base: &str) {
    let count = setting("KEYWARD_BENCH_KEYS", 1_000_000);
    let url = fresh_database(base, "kw_bench_load").await;
    let store = PostgresStore::connect(&url).await.unwrap();
    let now = Utc::now();
    let template = ApiKeyInput {
        name: Some("template".into()),
        description: Some("bulk-loaded key".into()),
        user_name: Some("user".into()),
        device_name: Some("device".into()),
        permissions: Some(vec!["orders:read".into(), "orders:write".into()]),
        is_active: Some(true),
        ..ApiKeyInput::default()
    }
    .validate(true)
    .unwrap()
    .into_new_key(None, now);
    let template = serde_json::to_string(&template).unwrap();
    let started = Instant::now();
    let client = sql(&url).await;
    // Triggers off for the bulk insert: a million notifications would only measure the notification queue.
    client
        .batch_execute(&format!(
            "SET session_replication_role = replica;
             INSERT INTO keyward_api_keys (record)
             SELECT ('{template}'::jsonb || jsonb_build_object(
                 'id', lpad(to_hex(g), 24, '0'),
                 'clientId', 'c' || lpad(to_hex(g), 39, '0'),
                 'name', 'key-' || g))::json
             FROM generate_series(1, {count}) AS g;
             ANALYZE keyward_api_keys;"
        ))
        .await
        .unwrap();
    println!(
        "load: inserted {count} keys in {:.1} s (setup, not measured)",
        started.elapsed().as_secs_f64()
    );

    breakdown(&client).await;
    let started = Instant::now();
    let keys = store.load_all().await.unwrap();
    let read = started.elapsed();
    assert_eq!(keys.len(), count);
    let cache = KeyCache::new();
    let started = Instant::now();
    cache.replace_keys(keys);
    let built = started.elapsed();
    println!(
        "load: {count} keys in process: read and decode {:.2} s, build the map (on one thread) {:.2} s, total {:.2} s",
        read.as_secs_f64(),
        built.as_secs_f64(),
        (read + built).as_secs_f64()
    );
    drop(cache);

    // Twice: the first start after a bulk insert also pays PostgreSQL's first read of fresh rows (hint bits,
    // autovacuum starting on the new table); the second is a sidecar restarting against a settled table.
    for attempt in ["first", "second"] {
        let dir = Arc::new(tempfile::tempdir().unwrap());
        let config = base_config(dir.path(), echo_upstream().await, "");
        let started = Instant::now();
        let kw = Keyward::start_in(
            dir,
            &config,
            &[
                ("KEYWARD_STORE__KIND", "postgres"),
                ("KEYWARD_STORE__URL", &url),
            ],
        )
        .await;
        let to_listening = started.elapsed();
        let logged = kw
            .log_text()
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .find(|v| v["message"] == "Keys loaded")
            .map(|v| v["elapsed_ms"].clone());
        // Resident memory once listening, and again after the first second of serving (background frees), and
        // the peak since start (the target is that the process stays under 1 GiB, load included).
        let status_kib = |field: &str| {
            std::fs::read_to_string(format!("/proc/{}/status", kw.child.id()))
                .ok()
                .and_then(|s| {
                    s.lines()
                        .find_map(|l| l.strip_prefix(field))
                        .and_then(|v| v.trim().trim_end_matches(" kB").parse::<u64>().ok())
                })
                .map_or_else(|| "?".to_owned(), |kb| format!("{} MiB", kb / 1024))
        };
        let at_listening = status_kib("VmRSS:");
        tokio::time::sleep(Duration::from_secs(1)).await;
        println!(
            "load: sidecar process start to Listening with {count} keys ({attempt} start): {:.2} s (its \"Keys loaded\" elapsed_ms: {}); RSS {at_listening}, {} a second later, peak {}",
            to_listening.as_secs_f64(),
            logged.unwrap_or_default(),
            status_kib("VmRSS:"),
            status_kib("VmHWM:")
        );
        drop(kw);
    }
}

/// Where the load time goes: the rows alone (server and wire), then decoding alone (one thread).
async fn breakdown(client: &tokio_postgres::Client) {
    use futures_util::TryStreamExt;
    let started = Instant::now();
    let rows = client
        .query_raw(
            "SELECT record::text FROM keyward_api_keys",
            std::iter::empty::<&str>(),
        )
        .await
        .unwrap();
    let texts: Vec<String> = rows
        .map_ok(|r| r.get::<_, String>(0))
        .try_collect()
        .await
        .unwrap();
    let streamed = started.elapsed();
    let started = Instant::now();
    let decoded: Vec<ApiKey> = texts
        .iter()
        .map(|t| serde_json::from_str(t).unwrap())
        .collect();
    println!(
        "load: breakdown: stream {} rows {:.2} s; decode them on one thread {:.2} s",
        decoded.len(),
        streamed.as_secs_f64(),
        started.elapsed().as_secs_f64()
    );
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        // The server from KEYWARD_TEST_PG_URL, or a private cluster stopped when `_private` drops.
        let (base, _private) = match std::env::var("KEYWARD_TEST_PG_URL") {
            Ok(url) if !url.is_empty() => (url, None),
            _ => {
                let cluster = PrivateCluster::start();
                (cluster.url.clone(), Some(cluster))
            }
        };
        let only = std::env::var("KEYWARD_BENCH_ONLY").unwrap_or_default();
        if only != "load" {
            propagation(&base).await;
        }
        if only != "propagation" {
            load(&base).await;
        }
    });
}
