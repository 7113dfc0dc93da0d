//! A fleet: several Keyward processes on one PostgreSQL database. A change made through any sidecar is in
//! force on the others; optimistic concurrency holds across sidecars; when PostgreSQL dies the sidecars serve
//! from memory, refuse admin writes (503) and report not ready, and when it returns they resync, picking up
//! a change made in the database while they were cut off.
//!
//! PostgreSQL: the tests on a shared server use `KEYWARD_TEST_PG_URL` (a superuser URL; each test creates its
//! own database), e.g. `eval "$(scripts/pg-test.sh start)"`. The outage test kills and restarts a server, so
//! it starts its own private cluster with `scripts/pg-test.sh start` (and `kill`, `restart`, `stop`), which
//! needs the PostgreSQL server binaries (Debian's `postgresql` package). With `KEYWARD_TEST_PG_URL` unset, the
//! tests fail when `CI` is set and are skipped (printing "skipped: KEYWARD_TEST_PG_URL unset") otherwise.
//!
//! Propagation delays are printed with `eprintln!` (run with `--nocapture` to see them), never asserted.
#![expect(
    clippy::unwrap_used,
    reason = "integration tests: a failed step should panic with its value"
)]

mod common;

use common::pg::{PrivateCluster, fresh_database, pg_url, sql, with_database};

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use common::{Keyward, base_config, echo_upstream, eventually, get};
use http::Method;
use serde_json::{Value, json};

/// Bound on every wait for a change to reach another sidecar (the goal is well under a second).
const PROPAGATION_LIMIT: Duration = Duration::from_secs(10);

// === PostgreSQL ===

// === sidecars ===

async fn sidecar(url: &str, upstream: std::net::SocketAddr) -> Keyward {
    let dir = Arc::new(tempfile::tempdir().unwrap());
    let config = base_config(dir.path(), upstream, "");
    Keyward::start_in(
        dir,
        &config,
        &[
            ("KEYWARD_STORE__KIND", "postgres"),
            ("KEYWARD_STORE__URL", url),
        ],
    )
    .await
}

fn key_header(key: &Value) -> (&'static str, String) {
    ("x-api-key", key["encoded"].as_str().unwrap().to_owned())
}

fn id_of(key: &Value) -> &str {
    key["id"].as_str().unwrap()
}

async fn proxy_status(kw: &Keyward, key: &Value) -> u16 {
    get(&kw.proxy_url("/fleet"), &[key_header(key)])
        .await
        .status
}

/// Wait until `kw` answers `want` for `key`; returns how long that took.
async fn until_status(kw: &Keyward, key: &Value, want: u16, what: &str) -> Duration {
    let started = Instant::now();
    let ok = eventually(PROPAGATION_LIMIT, || async {
        proxy_status(kw, key).await == want
    })
    .await;
    assert!(
        ok,
        "{what}: the sidecar never answered {want}; log:\n{}",
        kw.log_text()
    );
    started.elapsed()
}

async fn metric(kw: &Keyward, name: &str) -> Option<f64> {
    let r = get(&kw.admin_url("/metrics"), &[]).await;
    let text = String::from_utf8_lossy(&r.body).into_owned();
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("{name} ")))
        .and_then(|v| v.trim().parse().ok())
}

// === tests ===

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_change_through_any_sidecar_is_in_force_on_the_others() {
    let Some(base) = pg_url() else { return };
    let url = fresh_database(&base, "kw_fleet").await;
    let upstream = echo_upstream().await;
    let a = sidecar(&url, upstream).await;
    let b = sidecar(&url, upstream).await;
    let c = sidecar(&url, upstream).await;

    let key = a
        .create_key(json!({"name": "fleet-key", "isActive": true, "permissions": ["orders:*"]}))
        .await;
    let created_b = until_status(&b, &key, 200, "create on A, use on B").await;
    let created_c = until_status(&c, &key, 200, "create on A, use on C").await;
    let r = get(&b.proxy_url("/fleet"), &[key_header(&key)]).await;
    assert_eq!(r.json()["headers"]["x-auth-permissions"], "orders:*");

    let r = b
        .admin(
            Method::PUT,
            &format!("/apikeys/{}/revoke", id_of(&key)),
            None,
        )
        .await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let revoked_a = until_status(&a, &key, 401, "revoke on B, refused on A").await;
    let r = get(&a.proxy_url("/fleet"), &[key_header(&key)]).await;
    assert_eq!(r.json()["error_description"], "the key has been revoked");
    until_status(&c, &key, 401, "revoke on B, refused on C").await;

    let other = c
        .create_key(json!({"name": "to-delete", "isActive": true}))
        .await;
    until_status(&a, &other, 200, "create on C, use on A").await;
    let r = c
        .admin(Method::DELETE, &format!("/apikeys/{}", id_of(&other)), None)
        .await;
    assert_eq!(r.status, 200);
    let deleted_a = until_status(&a, &other, 401, "delete on C, refused on A").await;
    assert_eq!(
        a.admin(Method::GET, &format!("/apikeys/{}", id_of(&other)), None)
            .await
            .status,
        404
    );

    eprintln!(
        "propagation (first poll that saw the change, 25 ms polling): create A->B {created_b:?}, A->C \
         {created_c:?}; revoke B->A {revoked_a:?}; delete C->A {deleted_a:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_sidecars_writing_the_same_version_one_wins_the_other_gets_409() {
    let Some(base) = pg_url() else { return };
    let url = fresh_database(&base, "kw_fleet").await;
    let upstream = echo_upstream().await;
    let a = sidecar(&url, upstream).await;
    let b = sidecar(&url, upstream).await;
    let key = a
        .create_key(json!({"name": "raced", "isActive": true}))
        .await;
    let path = format!("/apikeys/{}", id_of(&key));
    for round in 1..=5_i64 {
        // Both sidecars know version `round` before they race.
        for kw in [&a, &b] {
            let ok = eventually(PROPAGATION_LIMIT, || async {
                kw.admin(Method::GET, &path, None).await.json()["_v"] == round
            })
            .await;
            assert!(ok, "round {round}: version {round} never reached a sidecar");
        }
        let body =
            |who: &str| json!({"name": "raced", "isActive": true, "description": who, "_v": round});
        let (ra, rb) = tokio::join!(
            a.admin(Method::PUT, &path, Some(body("from A"))),
            b.admin(Method::PUT, &path, Some(body("from B")))
        );
        let mut statuses = [ra.status, rb.status];
        statuses.sort_unstable();
        assert_eq!(
            statuses,
            [200, 409],
            "round {round}: A {} B {}",
            ra.status,
            rb.status
        );
        let winner = if ra.status == 200 { "from A" } else { "from B" };
        for kw in [&a, &b] {
            let ok = eventually(PROPAGATION_LIMIT, || async {
                let v = kw.admin(Method::GET, &path, None).await.json();
                v["_v"] == round + 1 && v["description"] == winner
            })
            .await;
            assert!(
                ok,
                "round {round}: the winner's change never reached a sidecar"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sidecars_outlive_a_store_outage_and_resync_after_it() {
    if pg_url().is_none() {
        return;
    }
    let cluster = PrivateCluster::start();
    // The sidecars connect as an ordinary role, so that `CONNECTION LIMIT 0` can keep them out after the
    // restart while the test (superuser) changes the database behind their backs.
    let admin = sql(&cluster.url).await;
    admin
        .batch_execute("CREATE ROLE keyward LOGIN")
        .await
        .unwrap();
    admin
        .batch_execute("CREATE DATABASE fleet OWNER keyward")
        .await
        .unwrap();
    let fleet_url = with_database(&cluster.url, "fleet").replacen("postgres@", "keyward@", 1);
    let super_fleet_url = with_database(&cluster.url, "fleet");
    let upstream = echo_upstream().await;
    let a = sidecar(&fleet_url, upstream).await;
    let b = sidecar(&fleet_url, upstream).await;
    let kept = a
        .create_key(json!({"name": "kept", "isActive": true}))
        .await;
    let revoked_offline = a
        .create_key(json!({"name": "revoked-offline", "isActive": true}))
        .await;
    let deleted_offline = a
        .create_key(json!({"name": "deleted-offline", "isActive": true}))
        .await;
    for kw in [&a, &b] {
        for k in [&kept, &revoked_offline, &deleted_offline] {
            until_status(kw, k, 200, "before the outage").await;
        }
    }

    // Traffic through both sidecars for the whole outage.
    let stop = Arc::new(AtomicBool::new(false));
    let (ok, failed) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let traffic = {
        let urls = [a.proxy_url("/traffic"), b.proxy_url("/traffic")];
        let header = key_header(&kept);
        let (stop, ok, failed) = (Arc::clone(&stop), Arc::clone(&ok), Arc::clone(&failed));
        tokio::spawn(async move {
            let deadline = Instant::now() + Duration::from_secs(120);
            for i in 0..100_000_usize {
                if stop.load(Ordering::Relaxed) || Instant::now() > deadline {
                    break;
                }
                let r = get(&urls[i % 2], std::slice::from_ref(&header)).await;
                let counter = if r.status == 200 { &ok } else { &failed };
                counter.fetch_add(1, Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;

    // Keep the sidecars out after the restart, then kill the server.
    admin
        .batch_execute("ALTER DATABASE fleet CONNECTION LIMIT 0")
        .await
        .unwrap();
    cluster.run("kill");
    for kw in [&a, &b] {
        let down = eventually(PROPAGATION_LIMIT, || async {
            get(&kw.admin_url("/readyz"), &[]).await.status == 503
        })
        .await;
        assert!(
            down,
            "/readyz never reported the store down; log:\n{}",
            kw.log_text()
        );
        let r = get(&kw.admin_url("/readyz"), &[]).await;
        assert_eq!(r.json()["store"]["up"], false);
        let r = kw
            .admin(
                Method::POST,
                "/apikeys",
                Some(json!({"name": "during-outage"})),
            )
            .await;
        assert_eq!(r.status, 503, "{}", String::from_utf8_lossy(&r.body));
        let r = kw
            .admin(
                Method::PUT,
                &format!("/apikeys/{}/revoke", id_of(&kept)),
                None,
            )
            .await;
        assert_eq!(r.status, 503);
        assert_eq!(proxy_status(kw, &kept).await, 200);
        let gauge_down = eventually(PROPAGATION_LIMIT, || async {
            metric(kw, "keyward_store_up").await == Some(0.0)
        })
        .await;
        assert!(gauge_down, "keyward_store_up never went to 0");
    }

    // The server returns, but only the superuser gets in: change the database the way another sidecar would,
    // with triggers off, so that no notification is sent and only a full reload can pick the change up.
    cluster.run("restart");
    let offline = sql(&super_fleet_url).await;
    offline
        .batch_execute(&format!(
            "SET session_replication_role = replica;
             UPDATE keyward_api_keys
                SET record = (record::jsonb || jsonb_build_object('revoked', true,
                              'revokedAt', '2026-01-01T00:00:00Z', '_v', version + 1))::json
              WHERE id = '{}';
             DELETE FROM keyward_api_keys WHERE id = '{}';",
            id_of(&revoked_offline),
            id_of(&deleted_offline)
        ))
        .await
        .unwrap();
    // The sidecars are still cut off: the change is not in force yet.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(proxy_status(&a, &revoked_offline).await, 200);
    let reopened = Instant::now();
    offline
        .batch_execute("ALTER DATABASE fleet CONNECTION LIMIT -1")
        .await
        .unwrap();

    for kw in [&a, &b] {
        let up = eventually(Duration::from_secs(30), || async {
            get(&kw.admin_url("/readyz"), &[]).await.status == 200
        })
        .await;
        assert!(up, "/readyz never recovered; log:\n{}", kw.log_text());
        until_status(
            kw,
            &revoked_offline,
            401,
            "revoked in the database during the outage",
        )
        .await;
        until_status(
            kw,
            &deleted_offline,
            401,
            "deleted in the database during the outage",
        )
        .await;
        assert_eq!(proxy_status(kw, &kept).await, 200);
        assert!(
            metric(kw, "keyward_store_reconnects_total")
                .await
                .is_some_and(|n| n >= 1.0)
        );
        assert!(
            metric(kw, "keyward_store_last_sync_age_seconds")
                .await
                .is_some_and(|s| s < 10.0)
        );
    }
    eprintln!(
        "resync after the database reopened: {:?}",
        reopened.elapsed()
    );
    // Admin writes work again and propagate.
    let fresh = b
        .create_key(json!({"name": "after-outage", "isActive": true}))
        .await;
    until_status(&a, &fresh, 200, "create after the outage").await;

    stop.store(true, Ordering::Relaxed);
    tokio::time::timeout(Duration::from_secs(30), traffic)
        .await
        .unwrap()
        .unwrap();
    let (ok, failed) = (ok.load(Ordering::Relaxed), failed.load(Ordering::Relaxed));
    eprintln!("proxied requests across the outage: {ok} succeeded, {failed} failed");
    assert!(ok > 0);
    assert_eq!(
        failed, 0,
        "a proxied request failed during the store outage"
    );
}
