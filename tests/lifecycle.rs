//! The process around the proxy: persistence across restarts, SIGTERM draining, config errors (exit 64),
//! example configs, `keyward keys create` reaching a running sidecar, sidecars sharing a SQLite file,
//! `/metrics` read by the reference Prometheus parser, access logs without secrets, and TLS with h2 by ALPN on
//! both sides of the proxy.
#![allow(
    clippy::unwrap_used,
    reason = "integration tests: a failed step should panic with its value"
)]

mod common;

use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use common::{Keyward, base_config, echo_upstream, eventually, get, python, slow_upstream};
use http::Method;
use serde_json::{Value, json};

const BIN: &str = env!("CARGO_BIN_EXE_keyward");

fn key_header(key: &Value) -> (&'static str, String) {
    ("x-api-key", key["encoded"].as_str().unwrap().to_owned())
}

#[tokio::test]
async fn acknowledged_changes_survive_a_restart() {
    let upstream = echo_upstream().await;
    let dir = Arc::new(tempfile::tempdir().unwrap());
    let config = base_config(dir.path(), upstream, "");
    let mut kw = Keyward::start_in(Arc::clone(&dir), &config, &[]).await;
    let kept = kw
        .create_key(json!({"name": "kept", "isActive": true, "permissions": ["a:b"]}))
        .await;
    let revoked = kw
        .create_key(json!({"name": "revoked", "isActive": true}))
        .await;
    let deleted = kw
        .create_key(json!({"name": "deleted", "isActive": true}))
        .await;
    assert_eq!(
        kw.admin(
            Method::PUT,
            &format!("/apikeys/{}/revoke", revoked["id"].as_str().unwrap()),
            None
        )
        .await
        .status,
        200
    );
    assert_eq!(
        kw.admin(
            Method::DELETE,
            &format!("/apikeys/{}", deleted["id"].as_str().unwrap()),
            None
        )
        .await
        .status,
        200
    );
    let status = kw.terminate().expect("exits after SIGTERM");
    assert!(status.success(), "{status:?}");
    drop(kw);
    let kw = Keyward::start_in(dir, &config, &[]).await;
    let r = get(&kw.proxy_url("/x"), &[key_header(&kept)]).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["headers"]["x-auth-permissions"], "a:b");
    assert_eq!(
        get(&kw.proxy_url("/x"), &[key_header(&revoked)])
            .await
            .json()["error_description"],
        "the key has been revoked"
    );
    assert_eq!(
        get(&kw.proxy_url("/x"), &[key_header(&deleted)])
            .await
            .status,
        401
    );
    let list = kw.admin(Method::GET, "/apikeys", None).await.json();
    assert_eq!(list["totalCount"], 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_in_flight_requests_and_exits_0() {
    let upstream = slow_upstream(Duration::from_millis(1500)).await;
    let mut kw = Keyward::start(upstream, "").await;
    let key = kw.create_key(json!({"name": "k", "isActive": true})).await;
    let url = kw.proxy_url("/slow");
    let in_flight = tokio::spawn(async move { get(&url, &[key_header(&key)]).await });
    tokio::time::sleep(Duration::from_millis(400)).await;
    let status = tokio::task::block_in_place(|| kw.terminate()).expect("exits");
    assert!(status.success(), "{status:?}");
    let r = in_flight.await.unwrap();
    assert_eq!((r.status, r.body.as_ref()), (200, &b"slow"[..]));
}

#[test]
fn a_bad_config_exits_64_listing_every_problem() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.toml");
    std::fs::write(&path, "[proxy]\nlisten = \"nowhere\"\n[auth]\nclock_skew = \"soon\"\nschemes = [\"carrier-pigeon\"]\n[[routes]]\npath = \"no-slash\"\nauth = \"maybe\"\n").unwrap();
    for args in [vec!["serve", "--config"], vec!["config", "check"]] {
        let out = Command::new(BIN).args(&args).arg(&path).output().unwrap();
        assert_eq!(out.status.code(), Some(64), "{args:?}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        for needle in [
            "proxy.listen",
            "auth.clock_skew",
            "auth.schemes",
            "routes[0].path",
            "routes[0].auth",
        ] {
            assert!(stderr.contains(needle), "{needle} missing from:\n{stderr}");
        }
    }
    std::fs::write(&path, "[proxy]\nlisen = \"typo\"\n").unwrap();
    let out = Command::new(BIN)
        .args(["config", "check"])
        .arg(&path)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(64));
    assert!(String::from_utf8_lossy(&out.stderr).contains("lisen"));
    let out = Command::new(BIN)
        .args(["config", "check"])
        .arg(&path)
        .env("KEYWARD_LIMITS__MAX_HEADERS", "many")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(64));
}

#[test]
fn every_example_config_loads() {
    let mut seen = 0;
    for entry in std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/config")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "toml") {
            keyward::config::Config::load(Some(&path), &Default::default())
                .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            let out = Command::new(BIN)
                .args(["config", "check"])
                .arg(&path)
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "{}: {}",
                path.display(),
                String::from_utf8_lossy(&out.stderr)
            );
            seen += 1;
        }
    }
    assert!(seen >= 3, "expected the example configs, saw {seen}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_created_key_reaches_a_running_sidecar() {
    let kw = Keyward::start(echo_upstream().await, "").await;
    let out = tokio::process::Command::new(BIN)
        .args([
            "keys",
            "create",
            "--name",
            "cli-admin",
            "--permissions",
            "*",
            "--active",
            "--user",
            "ops",
        ])
        .arg("--config")
        .arg(&kw.config_path)
        .output()
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let key: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(key["permissions"], json!(["*"]));
    let auth = format!("Bearer {}", key["encoded"].as_str().unwrap());
    let reached = eventually(Duration::from_secs(10), || async {
        kw.admin_as(&auth, Method::GET, "/apikeys", None)
            .await
            .status
            == 200
    })
    .await;
    assert!(reached, "the running sidecar never saw the CLI-created key");
    assert_eq!(
        get(&kw.proxy_url("/x"), &[key_header(&key)]).await.json()["headers"]["x-auth-user"],
        "ops"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sidecars_sharing_a_sqlite_file_follow_each_others_changes() {
    let upstream = echo_upstream().await;
    let dir = Arc::new(tempfile::tempdir().unwrap());
    let config = base_config(dir.path(), upstream, "");
    let a = Keyward::start_in(Arc::clone(&dir), &config, &[]).await;
    let b = Keyward::start_in(Arc::clone(&dir), &config, &[]).await;
    let status_at_b = |key: &Value| {
        let url = b.proxy_url("/x");
        let header = key_header(key);
        async move { get(&url, &[header]).await.status }
    };
    let revoked = a
        .create_key(json!({"name": "to-revoke", "isActive": true}))
        .await;
    let deleted = a
        .create_key(json!({"name": "to-delete", "isActive": true}))
        .await;
    // Created with a chosen id, then updated to version 2: its re-creation below is version 1 again.
    let by_id = "/apikeys/00000000000000000000abcd";
    let put = |body: Value| a.admin(Method::PUT, by_id, Some(body));
    let first = put(json!({"name": "to-recreate", "isActive": true})).await;
    assert_eq!(first.status, 201);
    let first = first.json();
    let mut edited = a.admin(Method::GET, by_id, None).await.json();
    edited["userName"] = json!("before");
    assert_eq!(put(edited).await.status, 200);
    for key in [&revoked, &deleted, &first] {
        let seen = eventually(Duration::from_secs(10), || async {
            status_at_b(key).await == 200
        })
        .await;
        assert!(seen, "sidecar b never accepted {}", key["name"]);
    }

    let path = |key: &Value| format!("/apikeys/{}", key["id"].as_str().unwrap());
    let revoke = format!("{}/revoke", path(&revoked));
    assert_eq!(a.admin(Method::PUT, &revoke, None).await.status, 200);
    assert_eq!(
        a.admin(Method::DELETE, &path(&deleted), None).await.status,
        200
    );
    // Deleted and created again within one of b's polls: b must apply the deletion before the creation.
    assert_eq!(
        a.admin(Method::DELETE, &path(&first), None).await.status,
        200
    );
    let again = put(json!({"name": "to-recreate", "isActive": true, "userName": "after"})).await;
    assert_eq!(again.status, 201);
    let again = again.json();

    // Revoked, deleted and unknown keys all answer 401; the context header below shows that the key b
    // accepts is the re-created one.
    let followed = eventually(Duration::from_secs(10), || async {
        status_at_b(&revoked).await == 401
            && status_at_b(&deleted).await == 401
            && status_at_b(&first).await == 401
            && status_at_b(&again).await == 200
    })
    .await;
    assert!(
        followed,
        "sidecar b did not follow: revoked {}, deleted {}, old secret {}, new secret {}",
        status_at_b(&revoked).await,
        status_at_b(&deleted).await,
        status_at_b(&first).await,
        status_at_b(&again).await
    );
    let seen = get(&b.proxy_url("/x"), &[key_header(&again)]).await.json();
    assert_eq!(seen["headers"]["x-auth-user"], "after");
    assert!(
        b.log_text().contains("changes applied") && !b.log_text().contains("keys reloaded"),
        "b should apply the changes, not reload:\n{}",
        b.log_text()
    );
}

#[tokio::test]
async fn metrics_parse_with_the_reference_parser_and_move_with_traffic() {
    let Some(py) = python() else { return };
    let kw = Keyward::start(
        echo_upstream().await,
        "[[routes]]\nname = \"orders\"\npath = \"/orders/\"\nrequire = [\"orders:read\"]\n",
    )
    .await;
    let key = kw
        .create_key(json!({"name": "m", "isActive": true, "permissions": ["orders:read"]}))
        .await;
    kw.create_key(json!({"name": "off"})).await;
    let scrape = || async {
        let text = common::send(Method::GET, &kw.admin_url("/metrics"), &[], Vec::new()).await;
        assert!(
            text.header("content-type")
                .unwrap()
                .starts_with("text/plain")
        );
        let mut child = tokio::process::Command::new(&py)
            .arg(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/tests/py/parse_metrics.py"
            ))
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        use tokio::io::AsyncWriteExt;
        child
            .stdin
            .take()
            .unwrap()
            .write_all(&text.body)
            .await
            .unwrap();
        let out = child.wait_with_output().await.unwrap();
        assert!(out.status.success());
        serde_json::from_slice::<Value>(&out.stdout).unwrap()
    };
    let before = scrape().await;
    for _ in 0..3 {
        assert_eq!(
            get(&kw.proxy_url("/orders/1"), &[key_header(&key)])
                .await
                .status,
            200
        );
    }
    assert_eq!(
        get(
            &kw.proxy_url("/orders/1"),
            &[("x-api-key", "bm9wZTpub3Bl".into())]
        )
        .await
        .status,
        401
    );
    let after = scrape().await;
    let get_v = |m: &Value, k: &str| m.get(k).and_then(Value::as_f64).unwrap_or(0.0);
    let ok = "keyward_requests_total{method=GET,route=orders,scheme=bearer,status_class=2xx}";
    assert_eq!(get_v(&after, ok) - get_v(&before, ok), 3.0, "{after}");
    let fail = "keyward_auth_failures_total{reason=unknown_key}";
    assert_eq!(get_v(&after, fail) - get_v(&before, fail), 1.0);
    assert!(get_v(&after, "keyward_request_duration_seconds_count{}") >= 4.0);
    assert!(get_v(&after, "keyward_upstream_duration_seconds_count{}") >= 3.0);
    assert_eq!(get_v(&after, "keyward_keys{state=active}"), 1.0);
    assert_eq!(get_v(&after, "keyward_keys{state=inactive}"), 1.0);
    let text = serde_json::to_string(&after).unwrap();
    assert!(
        !text.contains(key["id"].as_str().unwrap()),
        "no key ids in labels"
    );
}

#[tokio::test]
async fn access_log_has_one_line_per_request_and_no_secret() {
    let kw = Keyward::start(echo_upstream().await, "").await;
    let key = kw
        .create_key(json!({"name": "logged", "isActive": true}))
        .await;
    let secret = key["clientSecret"].as_str().unwrap().to_owned();
    let encoded = key["encoded"].as_str().unwrap().to_owned();
    let r = get(
        &kw.proxy_url("/logged/path?token=query-secret"),
        &[
            ("authorization", format!("Bearer {encoded}")),
            ("x-request-id", "log-test-1".into()),
        ],
    )
    .await;
    assert_eq!(r.status, 200);
    let found = eventually(Duration::from_secs(5), || async {
        kw.log_text().contains("log-test-1")
    })
    .await;
    assert!(found);
    let log = kw.log_text();
    let lines: Vec<Value> = log
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .filter(|v: &Value| v["request_id"] == "log-test-1")
        .collect();
    assert_eq!(lines.len(), 1, "{log}");
    let line = &lines[0];
    assert_eq!(line["target"], "keyward::access");
    assert_eq!(
        (
            line["status"].as_u64(),
            line["path"].as_str(),
            line["key_id"].as_str()
        ),
        (Some(200), Some("/logged/path"), key["id"].as_str())
    );
    for secret_text in [
        secret.as_str(),
        encoded.as_str(),
        "query-secret",
        common::BOOTSTRAP,
    ] {
        assert!(!log.contains(secret_text), "a secret reached the log");
    }
}

fn tls_files(dir: &std::path::Path) -> (String, std::path::PathBuf, std::path::PathBuf) {
    let cert =
        rcgen::generate_simple_self_signed(vec!["localhost".into(), "127.0.0.1".into()]).unwrap();
    let (cert_path, key_path) = (dir.join("tls.crt"), dir.join("tls.key"));
    std::fs::write(&cert_path, cert.cert.pem()).unwrap();
    std::fs::write(&key_path, cert.key_pair.serialize_pem()).unwrap();
    (cert.cert.pem(), cert_path, key_path)
}

#[tokio::test]
async fn tls_with_h2_on_the_listener_and_an_https_upstream_with_a_private_ca() {
    // B: TLS proxy in front of the echo upstream, no auth.
    let dir_b = Arc::new(tempfile::tempdir().unwrap());
    let (pem, cert, key) = tls_files(dir_b.path());
    let tls = format!(
        "[proxy.tls]\ncert = \"{}\"\nkey = \"{}\"\n[default_route]\nauth = \"none\"\n",
        cert.display(),
        key.display()
    );
    let config_b = base_config(dir_b.path(), echo_upstream().await, "")
        .replace("[admin]", &format!("{tls}[admin]"));
    let b = Keyward::start_in(Arc::clone(&dir_b), &config_b, &[]).await;
    // A: plain proxy whose upstream is https://localhost:<B>, trusting B's certificate.
    let dir_a = Arc::new(tempfile::tempdir().unwrap());
    let config_a = base_config(dir_a.path(), b.proxy, "").replace(
        &format!("url = \"http://{}\"", b.proxy),
        &format!(
            "url = \"https://localhost:{}\"\nca_file = \"{}\"",
            b.proxy.port(),
            cert.display()
        ),
    );
    let a = Keyward::start_in(dir_a, &config_a, &[]).await;
    let k = a
        .create_key(json!({"name": "tls", "isActive": true, "userName": "t"}))
        .await;
    let r = get(&a.proxy_url("/through"), &[key_header(&k)]).await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(
        r.json()["headers"]["x-forwarded-proto"],
        "https",
        "B saw a TLS connection"
    );
    // A client speaking h2 over TLS to B directly.
    let mut roots = rustls::RootCertStore::empty();
    for c in rustls_pemfile::certs(&mut pem.as_bytes()) {
        roots.add(c.unwrap()).unwrap();
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let connector = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_only()
        .enable_http2()
        .build();
    let client: hyper_util::client::legacy::Client<_, http_body_util::Full<bytes::Bytes>> =
        hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
            .build(connector);
    let resp = client
        .request(
            http::Request::get(format!("https://localhost:{}/h2", b.proxy.port()))
                .body(Default::default())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(
        (resp.status().as_u16(), resp.version()),
        (200, http::Version::HTTP_2)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_import_loads_a_bench_tsv_all_or_nothing() {
    let upstream = echo_upstream().await;
    let dir = Arc::new(tempfile::tempdir().unwrap());
    let config = base_config(dir.path(), upstream, "");
    let config_path = dir.path().join("keyward.toml");
    std::fs::write(&config_path, &config).unwrap();
    let secret = "0123456789abcdef0123456789abcdef01234567";
    let bad = dir.path().join("bad.tsv");
    std::fs::write(
        &bad,
        format!(
            "client_id\tclient_secret\tuser\nkwb-000001\t{secret}\tu1\nkwb-000002\tshort\tu2\n"
        ),
    )
    .unwrap();
    let out = Command::new(BIN)
        .args(["keys", "import"])
        .arg(&bad)
        .arg("--config")
        .arg(&config_path)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("line 3"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let good = dir.path().join("keys.tsv");
    let rows: String = (0..3)
        .map(|i| format!("kwb-00000{i}\t{secret}{i}\tunused\tuser-{i}\tdevice-{i}\n"))
        .collect();
    std::fs::write(
        &good,
        format!("client_id\tclient_secret\ttoken\tuser\tdevice\n{rows}"),
    )
    .unwrap();
    let out = Command::new(BIN)
        .args(["keys", "import"])
        .arg(&good)
        .arg("--config")
        .arg(&config_path)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("imported 3 keys"));
    let kw = Keyward::start_in(dir, &config, &[]).await;
    assert_eq!(
        kw.admin(Method::GET, "/apikeys?$count=true", None)
            .await
            .json()["totalCount"],
        3,
        "the bad file imported nothing"
    );
    use base64::Engine;
    let token = base64::engine::general_purpose::STANDARD.encode(format!("kwb-000001:{secret}1"));
    let r = get(
        &kw.proxy_url("/x"),
        &[("authorization", format!("Bearer {token}"))],
    )
    .await;
    assert_eq!(r.status, 200);
    assert_eq!(
        (
            r.json()["headers"]["x-auth-user"].as_str(),
            r.json()["headers"]["x-auth-device"].as_str()
        ),
        (Some("user-1"), Some("device-1"))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_are_encrypted_at_rest_with_a_master_key() {
    const MASTER: &str = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";
    let upstream = echo_upstream().await;
    let dir = Arc::new(tempfile::tempdir().unwrap());
    let config = base_config(dir.path(), upstream, "");
    let env = [("KEYWARD_STORE__MASTER_KEY", MASTER)];
    let mut kw = Keyward::start_in(Arc::clone(&dir), &config, &env).await;
    let key = kw
        .create_key(json!({"name": "sealed", "isActive": true}))
        .await;
    let secret = key["clientSecret"].as_str().unwrap().to_owned();
    assert!(
        tokio::task::block_in_place(|| kw.terminate())
            .unwrap()
            .success()
    );
    drop(kw);
    let mut on_disk = Vec::new();
    for name in ["keyward.db", "keyward.db-wal"] {
        on_disk.extend(std::fs::read(dir.path().join(name)).unwrap_or_default());
    }
    let text = String::from_utf8_lossy(&on_disk);
    assert!(text.contains("enc:v1:"), "the record holds a sealed secret");
    assert!(
        !text.contains(&secret),
        "the secret is not on disk in clear"
    );
    // the same key opens it again
    let kw = Keyward::start_in(Arc::clone(&dir), &config, &env).await;
    assert_eq!(
        get(&kw.proxy_url("/x"), &[key_header(&key)]).await.status,
        200
    );
    drop(kw);
    // without it the sidecar refuses to start rather than serve without the key
    let out = tokio::process::Command::new(BIN)
        .args(["serve", "--config"])
        .arg(dir.path().join("keyward.toml"))
        .output();
    let out = tokio::time::timeout(Duration::from_secs(20), out)
        .await
        .unwrap()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("master_key"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // a malformed key is a config error
    let out = Command::new(BIN)
        .args(["config", "check"])
        .arg(dir.path().join("keyward.toml"))
        .env("KEYWARD_STORE__MASTER_KEY", "short")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(64));
}
