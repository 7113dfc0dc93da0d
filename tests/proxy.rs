//! The data plane against a real Keyward process and a real upstream: credentials in every wire form, the
//! route × claim table, spoofed and hop-by-hop headers, credential stripping, key states, error bodies,
//! limits, and upstream failures.
#![allow(
    clippy::unwrap_used,
    reason = "integration tests: a failed step should panic with its value"
)]

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use common::{Keyward, echo_upstream, get, raw, send, slow_upstream};
use http::Method;
use serde_json::{Value, json};

const ROUTES: &str = r#"
[[routes]]
path = "=/public"
auth = "none"

[[routes]]
path = "/maybe/"
auth = "optional"

[[routes]]
name = "orders-write"
path = "/orders/"
methods = ["POST", "PUT", "DELETE"]
require = ["orders:write"]

[[routes]]
name = "orders-read"
path = "/orders/"
require = ["orders:read"]

[[routes]]
path = "/admin-ish/"
require = ["ApiKeyList"]

[[routes]]
path = "/both/"
require = ["orders:read", "billing:read"]
"#;

async fn start() -> Keyward {
    Keyward::start(echo_upstream().await, ROUTES).await
}

fn key_header(key: &Value) -> (&'static str, String) {
    ("x-api-key", key["encoded"].as_str().unwrap().to_owned())
}

#[tokio::test]
async fn every_bearer_wire_form_reaches_the_upstream_with_context_and_without_the_credential() {
    let kw = start().await;
    let key = kw
        .create_key(json!({"name": "pos-7", "userName": "Zoë", "deviceName": "till 7", "permissions": ["orders:read", "x:y"], "isActive": true}))
        .await;
    let encoded = key["encoded"].as_str().unwrap();
    for (name, value) in [
        ("x-api-key", encoded.to_owned()),
        ("authorization", format!("Bearer {encoded}")),
        ("authorization", format!("Basic {encoded}")),
    ] {
        let r = get(&kw.proxy_url("/orders/1?x=1"), &[(name, value.clone())]).await;
        assert_eq!(
            r.status,
            200,
            "{name}: {}",
            String::from_utf8_lossy(&r.body)
        );
        let echo = r.json();
        let h = &echo["headers"];
        assert_eq!(echo["path"], "/orders/1");
        assert_eq!(echo["query"], "x=1");
        assert_eq!(h["x-auth-key-id"], key["id"]);
        assert_eq!(h["x-auth-client-id"], key["clientId"]);
        assert_eq!(h["x-auth-key-name"], "pos-7");
        assert_eq!(h["x-auth-user"], "Zo%C3%AB");
        assert_eq!(h["x-auth-device"], "till 7");
        assert_eq!(h["x-auth-permissions"], "orders:read,x:y");
        assert_eq!(h["x-auth-scheme"], "bearer");
        assert!(
            h.get("authorization").is_none() && h.get("x-api-key").is_none(),
            "credential leaked: {h}"
        );
        assert_eq!(h["x-forwarded-for"], "127.0.0.1");
        assert_eq!(h["x-forwarded-proto"], "http");
        assert_eq!(h["host"], kw.proxy.to_string(), "Host is preserved");
        assert!(r.header("x-request-id").is_some());
    }
}

#[tokio::test]
async fn more_than_one_credential_is_refused_before_any_is_checked() {
    let kw = start().await;
    let key = kw.create_key(json!({"name": "k", "isActive": true})).await;
    let encoded = key["encoded"].as_str().unwrap().to_owned();
    let bearer = format!("Bearer {encoded}");
    for sent in [
        vec![
            ("authorization", bearer.clone()),
            ("authorization", bearer.clone()),
        ],
        vec![
            ("x-api-key", encoded.clone()),
            ("x-api-key", encoded.clone()),
        ],
        vec![
            ("authorization", bearer.clone()),
            ("x-api-key", encoded.clone()),
        ],
        vec![
            ("x-api-key", encoded.clone()),
            ("signature-input", "sig1=()".into()),
        ],
    ] {
        let r = get(&kw.proxy_url("/x"), &sent).await;
        assert_eq!(r.status, 401, "{sent:?}");
        assert!(
            String::from_utf8_lossy(&r.body).contains("exactly one credential"),
            "{sent:?}: {}",
            String::from_utf8_lossy(&r.body)
        );
    }
    assert_eq!(
        get(&kw.proxy_url("/x"), &[("authorization", bearer)])
            .await
            .status,
        200
    );
}

#[tokio::test]
async fn spoofed_context_and_hop_by_hop_headers_never_reach_the_upstream() {
    let kw = start().await;
    let key = kw
        .create_key(json!({"name": "k", "permissions": ["orders:read"], "isActive": true}))
        .await;
    let r = get(
        &kw.proxy_url("/orders/1"),
        &[
            key_header(&key),
            ("x-auth-user", "root".into()),
            ("X-Auth-Permissions", "*".into()),
            ("x-auth-custom", "1".into()),
            ("connection", "keep-alive, x-hop".into()),
            ("x-hop", "secret".into()),
            ("keep-alive", "timeout=5".into()),
            ("te", "trailers".into()),
            ("x-request-id", "req-123".into()),
            ("x-forwarded-for", "6.6.6.6".into()),
        ],
    )
    .await;
    assert_eq!(r.status, 200);
    let h = &r.json()["headers"];
    assert!(
        h.get("x-auth-user").is_none(),
        "the key has no user: a spoofed one must not pass"
    );
    assert_eq!(h["x-auth-permissions"], "orders:read");
    for gone in ["x-auth-custom", "x-hop", "keep-alive", "te"] {
        assert!(h.get(gone).is_none(), "{gone} passed: {h}");
    }
    assert_eq!(h["x-request-id"], "req-123");
    assert_eq!(r.header("x-request-id"), Some("req-123"));
    assert_eq!(
        h["x-forwarded-for"], "127.0.0.1",
        "untrusted X-Forwarded-For is replaced"
    );
    // A request with a body goes upstream on another path (hyper's client connection): the same rules, and
    // the context once (the echo joins repeated fields with ", ").
    let writer = kw
        .create_key(json!({"name": "w", "userName": "ann", "permissions": ["orders:write"], "isActive": true}))
        .await;
    let r = send(
        Method::POST,
        &kw.proxy_url("/orders/1"),
        &[
            key_header(&writer),
            ("x-auth-user", "root".into()),
            ("X-Auth-Permissions", "*".into()),
            ("x-auth-scheme", "nws4".into()),
        ],
        b"{}".to_vec(),
    )
    .await;
    assert_eq!(r.status, 200);
    let echo = r.json();
    let h = &echo["headers"];
    assert_eq!(echo["body"], "{}");
    assert_eq!(h["x-auth-user"], "ann");
    assert_eq!(h["x-auth-permissions"], "orders:write");
    assert_eq!(h["x-auth-scheme"], "bearer");
    assert_eq!(h["x-auth-key-id"], writer["id"]);
    // routes without auth still strip credentials and context
    let r = get(
        &kw.proxy_url("/public"),
        &[key_header(&key), ("x-auth-user", "root".into())],
    )
    .await;
    assert_eq!(r.status, 200);
    let h = &r.json()["headers"];
    assert!(
        h.get("x-api-key").is_none() && h.get("x-auth-user").is_none(),
        "{h}"
    );
}

/// One table: route, method, the key's permissions, the expected status.
#[tokio::test]
async fn route_by_claim_table() {
    let kw = start().await;
    let cases: &[(&str, Method, &[&str], u16)] = &[
        ("/orders/1", Method::GET, &["orders:read"], 200),
        ("/orders/1", Method::GET, &["orders:*"], 200),
        ("/orders/1", Method::GET, &["*"], 200),
        ("/orders/1", Method::GET, &["SUPER_USER"], 200),
        ("/orders/1", Method::GET, &["orders:write"], 403),
        ("/orders/1", Method::GET, &[], 403),
        ("/orders/1", Method::GET, &["order:read"], 403),
        ("/orders/1", Method::POST, &["orders:read"], 403),
        ("/orders/1", Method::POST, &["orders:write"], 200),
        ("/orders/1", Method::DELETE, &["orders:*"], 200),
        ("/admin-ish/x", Method::GET, &["LIST_API_KEY"], 200),
        ("/admin-ish/x", Method::GET, &["ApiKeyList"], 200),
        ("/admin-ish/x", Method::GET, &["ApiKeyCreate"], 403),
        ("/both/x", Method::GET, &["orders:read"], 403),
        (
            "/both/x",
            Method::GET,
            &["orders:read", "billing:read"],
            200,
        ),
        ("/both/x", Method::GET, &["orders:*", "billing:*"], 200),
        ("/anything", Method::GET, &[], 200),
        ("/public", Method::GET, &[], 200),
    ];
    for (i, (path, method, perms, expected)) in cases.iter().enumerate() {
        let key = kw
            .create_key(
                json!({"name": format!("case-{i}"), "permissions": perms, "isActive": true}),
            )
            .await;
        let r = send(
            method.clone(),
            &kw.proxy_url(path),
            &[key_header(&key)],
            Vec::new(),
        )
        .await;
        assert_eq!(
            r.status,
            *expected,
            "{method} {path} with {perms:?}: {}",
            String::from_utf8_lossy(&r.body)
        );
        if *expected == 403 {
            assert_eq!(r.json()["error"], "insufficient_scope");
            assert!(
                r.header("www-authenticate")
                    .unwrap()
                    .contains("insufficient_scope")
            );
        }
    }
}

#[tokio::test]
async fn auth_modes_required_optional_none() {
    let kw = start().await;
    let r = get(&kw.proxy_url("/orders/1"), &[]).await;
    assert_eq!(r.status, 401);
    assert_eq!(
        r.json(),
        json!({"error": "invalid_request", "error_description": "a credential is required", "error_uri": null})
    );
    assert_eq!(get(&kw.proxy_url("/public"), &[]).await.status, 200);
    let r = get(&kw.proxy_url("/maybe/x"), &[]).await;
    assert_eq!(r.status, 200);
    assert!(r.json()["headers"].get("x-auth-key-id").is_none());
    let key = kw
        .create_key(json!({"name": "opt", "isActive": true}))
        .await;
    let r = get(&kw.proxy_url("/maybe/x"), &[key_header(&key)]).await;
    assert_eq!(r.json()["headers"]["x-auth-key-id"], key["id"]);
    assert_eq!(
        get(&kw.proxy_url("/maybe/x"), &[("x-api-key", "bad".into())])
            .await
            .status,
        401,
        "a bad credential is refused even where optional"
    );
}

#[tokio::test]
async fn bad_credentials_get_oauth_shaped_401s() {
    let kw = start().await;
    let key = kw.create_key(json!({"name": "k", "isActive": true})).await;
    let client_id = key["clientId"].as_str().unwrap();
    let b64 = |s: &str| {
        use base64::Engine;
        base64::engine::general_purpose::STANDARD.encode(s)
    };
    let invalid_token = json!({"error": "invalid_token", "error_description": "the credential is not valid", "error_uri": null});
    let cases: Vec<(Vec<(&str, String)>, Value)> = vec![
        (
            vec![("x-api-key", b64(&format!("{client_id}:{}", "0".repeat(64))))],
            invalid_token.clone(),
        ),
        (
            vec![(
                "x-api-key",
                b64(&format!("unknown-client:{}", "0".repeat(64))),
            )],
            invalid_token.clone(),
        ),
        (
            vec![("x-api-key", "!!!not-base64".into())],
            json!({"error": "invalid_request", "error_description": "the credential is not valid base64 of clientId:clientSecret", "error_uri": null}),
        ),
        (
            vec![("x-api-key", b64("no-colon"))],
            json!({"error": "invalid_request", "error_description": "the credential is not valid base64 of clientId:clientSecret", "error_uri": null}),
        ),
        (
            vec![("authorization", "Digest abc".into())],
            json!({"error": "invalid_request", "error_description": "the authorization scheme is not accepted", "error_uri": null}),
        ),
        (
            vec![
                (
                    "authorization",
                    format!("Bearer {}", key["encoded"].as_str().unwrap()),
                ),
                ("x-api-key", key["encoded"].as_str().unwrap().to_owned()),
            ],
            json!({"error": "invalid_request", "error_description": "send exactly one credential scheme", "error_uri": null}),
        ),
    ];
    for (headers, expected) in cases {
        let r = get(&kw.proxy_url("/x"), &headers).await;
        assert_eq!(r.status, 401, "{headers:?}");
        assert_eq!(r.json(), expected, "{headers:?}");
        assert!(
            r.header("www-authenticate")
                .unwrap()
                .starts_with("Bearer realm=\"keyward\"")
        );
    }
    // non-UTF-8 header bytes: a clean 401, never a 500
    let resp = raw(
        kw.proxy,
        b"GET /x HTTP/1.1\r\nHost: a\r\nX-Api-Key: \xff\xfe\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(resp.starts_with("HTTP/1.1 401"), "{resp}");
}

#[tokio::test]
async fn inactive_revoked_expired_and_deleted_keys_are_refused_on_the_next_request() {
    let kw = start().await;
    let inactive = kw.create_key(json!({"name": "inactive"})).await;
    let r = get(&kw.proxy_url("/x"), &[key_header(&inactive)]).await;
    assert_eq!(
        (r.status, r.json()["error_description"].clone()),
        (401, json!("the key is not active"))
    );
    let expired = kw
        .create_key(
            json!({"name": "expired", "isActive": true, "expiresAt": "2020-01-01T00:00:00Z"}),
        )
        .await;
    let r = get(&kw.proxy_url("/x"), &[key_header(&expired)]).await;
    assert_eq!(r.json()["error_description"], "the key has expired");
    let live = kw
        .create_key(json!({"name": "live", "isActive": true}))
        .await;
    let id = live["id"].as_str().unwrap();
    assert_eq!(
        get(&kw.proxy_url("/x"), &[key_header(&live)]).await.status,
        200
    );
    assert_eq!(
        kw.admin(Method::PUT, &format!("/apikeys/{id}/revoke"), None)
            .await
            .status,
        200
    );
    let r = get(&kw.proxy_url("/x"), &[key_header(&live)]).await;
    assert_eq!(
        (r.status, r.json()["error_description"].clone()),
        (401, json!("the key has been revoked"))
    );
    let other = kw
        .create_key(json!({"name": "deleted", "isActive": true}))
        .await;
    assert_eq!(
        get(&kw.proxy_url("/x"), &[key_header(&other)]).await.status,
        200
    );
    assert_eq!(
        kw.admin(
            Method::DELETE,
            &format!("/apikeys/{}", other["id"].as_str().unwrap()),
            None
        )
        .await
        .status,
        200
    );
    assert_eq!(
        get(&kw.proxy_url("/x"), &[key_header(&other)]).await.status,
        401
    );
    // deactivation through PUT is in force at once too
    let k = kw
        .create_key(json!({"name": "toggle", "isActive": true}))
        .await;
    let mut body = kw
        .admin(
            Method::GET,
            &format!("/apikeys/{}", k["id"].as_str().unwrap()),
            None,
        )
        .await
        .json();
    body["isActive"] = json!(false);
    assert_eq!(
        kw.admin(
            Method::PUT,
            &format!("/apikeys/{}", k["id"].as_str().unwrap()),
            Some(body)
        )
        .await
        .status,
        200
    );
    assert_eq!(
        get(&kw.proxy_url("/x"), &[key_header(&k)]).await.status,
        401
    );
}

#[tokio::test]
async fn per_key_schemes_restrict_bearer() {
    let kw = start().await;
    let hmac_only = kw
        .create_key(json!({"name": "hmac-only", "isActive": true, "schemes": ["rfc9421", "nws4"]}))
        .await;
    let r = get(&kw.proxy_url("/x"), &[key_header(&hmac_only)]).await;
    assert_eq!(
        (r.status, r.json()["error_description"].clone()),
        (401, json!("the key may not use this authentication scheme"))
    );
}

#[tokio::test]
async fn upstream_down_is_502_and_slow_is_504_without_hanging() {
    // nothing listens on this port
    let dead = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let kw = Keyward::start(dead, "").await;
    let key = kw.create_key(json!({"name": "k", "isActive": true})).await;
    let r = get(&kw.proxy_url("/x"), &[key_header(&key)]).await;
    assert_eq!(r.status, 502);
    assert_eq!(r.json()["code"], 502);
    // an upstream that accepts and never answers
    let slow = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let slow_addr = slow.local_addr().unwrap();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((s, _)) = slow.accept().await {
            held.push(s);
        }
    });
    let kw = Keyward::start(slow_addr, "").await;
    let key = kw.create_key(json!({"name": "k", "isActive": true})).await;
    let started = std::time::Instant::now();
    let r = get(&kw.proxy_url("/x"), &[key_header(&key)]).await;
    assert_eq!(r.status, 504);
    assert_eq!(r.json()["stack"][0]["error"], "gateway_timeout");
    assert!(started.elapsed() < Duration::from_secs(15));
}

#[tokio::test]
async fn a_head_not_finished_in_time_and_an_idle_connection_are_closed() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let kw = Keyward::start(
        echo_upstream().await,
        "[limits]\nheader_read_timeout = \"1s\"\n",
    )
    .await;
    let key = kw.create_key(json!({"name": "k", "isActive": true})).await;
    let closed_within = |mut s: tokio::net::TcpStream, limit: Duration| async move {
        let started = std::time::Instant::now();
        let mut rest = Vec::new();
        let read = tokio::time::timeout(limit, s.read_to_end(&mut rest)).await;
        assert!(read.is_ok(), "still open after {limit:?}");
        started.elapsed()
    };
    // Requests 0.6 s apart on one connection are served (the 1 s timer is re-armed for each head); half a
    // head, then nothing: closed at the timeout.
    let mut slow = tokio::net::TcpStream::connect(kw.proxy).await.unwrap();
    let request = format!(
        "GET /x HTTP/1.1\r\nHost: a\r\nX-Api-Key: {}\r\n\r\n",
        key["encoded"].as_str().unwrap()
    );
    for i in 0..3 {
        if i > 0 {
            tokio::time::sleep(Duration::from_millis(600)).await;
        }
        slow.write_all(request.as_bytes()).await.unwrap();
        let mut buf = vec![0u8; 4096];
        let n = slow.read(&mut buf).await.unwrap();
        assert!(
            buf[..n].starts_with(b"HTTP/1.1 200"),
            "{}",
            String::from_utf8_lossy(&buf[..n])
        );
    }
    slow.write_all(b"GET /x HTTP/1.1\r\nHost: a\r\n")
        .await
        .unwrap();
    let waited = closed_within(slow, Duration::from_secs(5)).await;
    assert!(
        waited >= Duration::from_millis(700),
        "closed after {waited:?}"
    );
    // A connection that never sends anything is closed too (before hyper-util has decided its version).
    let idle = tokio::net::TcpStream::connect(kw.proxy).await.unwrap();
    closed_within(idle, Duration::from_secs(5)).await;
}

#[tokio::test]
async fn a_client_that_closes_its_sending_side_still_gets_its_response() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    // A slow upstream, so the request is still in flight when the client's FIN arrives.
    let kw = Keyward::start(slow_upstream(Duration::from_millis(300)).await, "").await;
    let key = kw.create_key(json!({"name": "k", "isActive": true})).await;
    let mut s = tokio::net::TcpStream::connect(kw.proxy).await.unwrap();
    let request = format!(
        "GET /x HTTP/1.1\r\nHost: a\r\nX-Api-Key: {}\r\n\r\n",
        key["encoded"].as_str().unwrap()
    );
    s.write_all(request.as_bytes()).await.unwrap();
    s.shutdown().await.unwrap();
    let mut response = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut response))
        .await
        .expect("the response came")
        .unwrap();
    let text = String::from_utf8_lossy(&response);
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    assert!(text.ends_with("slow"), "{text}");
}

#[tokio::test]
async fn oversized_headers_and_bodies_are_refused() {
    let kw = Keyward::start(
        echo_upstream().await,
        "[limits]\nmax_body = 1024\nmax_header_bytes = 8192\n",
    )
    .await;
    let key = kw.create_key(json!({"name": "k", "isActive": true})).await;
    let big = "a".repeat(20_000);
    let resp = raw(
        kw.proxy,
        format!("GET /x HTTP/1.1\r\nHost: a\r\nX-Big: {big}\r\n\r\n").as_bytes(),
    )
    .await;
    assert!(
        resp.starts_with("HTTP/1.1 431") && resp.contains(r#""code":431"#),
        "{}",
        &resp[..resp.len().min(400)]
    );
    // Beyond hyper's own read buffer (256 KiB) the head is refused before it is parsed.
    let huge = "a".repeat(300_000);
    let resp = raw(
        kw.proxy,
        format!("GET /x HTTP/1.1\r\nHost: a\r\nX-Big: {huge}\r\n\r\n").as_bytes(),
    )
    .await;
    assert!(
        resp.starts_with("HTTP/1.1 431"),
        "{}",
        &resp[..resp.len().min(200)]
    );
    let r = send(
        Method::POST,
        &kw.proxy_url("/x"),
        &[key_header(&key)],
        vec![b'x'; 4096],
    )
    .await;
    assert_eq!(r.status, 413);
    assert_eq!(r.json()["code"], 413);
    let r = send(
        Method::POST,
        &kw.proxy_url("/x"),
        &[key_header(&key)],
        vec![b'x'; 512],
    )
    .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["bodyLength"], 512);
    let many: String = (0..150).map(|i| format!("X-H{i}: v\r\n")).collect();
    let resp = raw(
        kw.proxy,
        format!("GET /x HTTP/1.1\r\nHost: a\r\n{many}\r\n").as_bytes(),
    )
    .await;
    assert!(
        resp.starts_with("HTTP/1.1 431") || resp.starts_with("HTTP/1.1 400"),
        "{}",
        &resp[..resp.len().min(200)]
    );
}

#[tokio::test]
async fn trusted_forwarded_headers_are_kept_only_when_configured() {
    // set through the environment, as a sidecar would be
    let dir = Arc::new(tempfile::tempdir().unwrap());
    let config = common::base_config(dir.path(), echo_upstream().await, ROUTES);
    let kw = Keyward::start_in(dir, &config, &[("KEYWARD_PROXY__TRUST_FORWARDED", "true")]).await;
    let key = kw
        .create_key(
            json!({"name": "k", "permissions": ["orders:read", "orders:write"], "isActive": true}),
        )
        .await;
    let sent = [
        key_header(&key),
        ("x-forwarded-for", "10.0.0.1".into()),
        ("x-forwarded-proto", "https".into()),
        ("x-forwarded-host", "api.example".into()),
        ("x-request-id", "req-7".into()),
    ];
    // A GET (the lean exchange) and a POST (hyper's client connection); the echo joins repeated fields, so
    // each is also seen to be sent once.
    for method in [Method::GET, Method::POST] {
        let r = send(
            method.clone(),
            &kw.proxy_url("/orders/1"),
            &sent,
            Vec::new(),
        )
        .await;
        assert_eq!(r.status, 200, "{method}");
        let h = &r.json()["headers"];
        assert_eq!(h["x-forwarded-for"], "10.0.0.1, 127.0.0.1", "{method}");
        assert_eq!(h["x-forwarded-proto"], "https", "{method}");
        assert_eq!(h["x-forwarded-host"], "api.example", "{method}");
        assert_eq!(h["x-request-id"], "req-7", "{method}");
        assert_eq!(h["x-auth-key-id"], key["id"], "{method}");
    }
}

#[tokio::test]
async fn h2c_prior_knowledge_is_served() {
    let kw = start().await;
    let key = kw.create_key(json!({"name": "h2", "isActive": true})).await;
    let client: hyper_util::client::legacy::Client<_, http_body_util::Full<bytes::Bytes>> =
        hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
            .http2_only(true)
            .build_http();
    let req = http::Request::get(kw.proxy_url("/x"))
        .header("x-api-key", key["encoded"].as_str().unwrap())
        .body(Default::default())
        .unwrap();
    let resp = client.request(req).await.unwrap();
    assert_eq!(resp.version(), http::Version::HTTP_2);
    assert_eq!(resp.status(), 200);
}

#[tokio::test]
async fn an_idle_h2_connection_is_closed_and_a_slow_request_on_it_still_completes() {
    // A slow upstream (1.5 s per response) and a 1 s header-read timeout, which also bounds how long an h2
    // connection may go without a new request.
    let kw = Keyward::start(
        slow_upstream(Duration::from_millis(1500)).await,
        "[limits]\nheader_read_timeout = \"1s\"\n",
    )
    .await;
    let key = kw.create_key(json!({"name": "h2", "isActive": true})).await;
    let encoded = key["encoded"].as_str().unwrap().to_owned();
    let connect = || async {
        let tcp = tokio::net::TcpStream::connect(kw.proxy).await.unwrap();
        let (send, conn) =
            hyper::client::conn::http2::handshake::<_, _, http_body_util::Empty<bytes::Bytes>>(
                hyper_util::rt::TokioExecutor::new(),
                hyper_util::rt::TokioIo::new(tcp),
            )
            .await
            .unwrap();
        (send, tokio::spawn(conn))
    };
    let request = |encoded: &str| {
        http::Request::get(kw.proxy_url("/x"))
            .header("x-api-key", encoded)
            .body(http_body_util::Empty::new())
            .unwrap()
    };
    // One request outlasting the timeout is answered, and the connection is closed once it has gone a
    // timeout's length (here up to two) without a new request.
    let started = std::time::Instant::now();
    let (mut send, conn) = connect().await;
    let resp = send.send_request(request(&encoded)).await.unwrap();
    assert_eq!(resp.status(), 200);
    assert!(started.elapsed() >= Duration::from_millis(1400));
    let closed = tokio::time::timeout(Duration::from_secs(5), conn).await;
    assert!(
        closed.is_ok(),
        "an idle h2 connection was still open 5 s after its last request"
    );
    // A connection that sends its preface and settings but no request is closed too.
    let (_send, conn) = connect().await;
    let closed = tokio::time::timeout(Duration::from_secs(5), conn).await;
    assert!(
        closed.is_ok(),
        "an h2 connection without requests was still open after 5 s"
    );
}

/// Read one request head (no body) byte by byte, at most 16 KiB; `None` when the peer closed first.
async fn read_head(s: &mut tokio::net::TcpStream) -> Option<Vec<u8>> {
    use tokio::io::AsyncReadExt;
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") && head.len() < 16384 {
        if s.read(&mut byte).await.unwrap_or(0) == 0 {
            return None;
        }
        head.push(byte[0]);
    }
    Some(head)
}

/// An upstream that accepts one WebSocket-style upgrade and then echoes bytes.
async fn upgrading_upstream() -> std::net::SocketAddr {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            tokio::spawn(async move {
                let Some(head) = read_head(&mut s).await else {
                    return;
                };
                let text = String::from_utf8_lossy(&head).to_ascii_lowercase();
                if !(text.contains("upgrade: websocket") && text.contains("x-auth-key-id")) {
                    let _ = s
                        .write_all(b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n\r\n")
                        .await;
                    return;
                }
                let _ = s.write_all(b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n").await;
                let mut buf = [0u8; 1024];
                loop {
                    match s.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => {
                            if s.write_all(&buf[..n]).await.is_err() {
                                return;
                            }
                        }
                    }
                }
            });
        }
    });
    addr
}

#[tokio::test]
async fn websocket_upgrades_tunnel_through_after_authentication() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let kw = Keyward::start(upgrading_upstream().await, "").await;
    let key = kw.create_key(json!({"name": "ws", "isActive": true})).await;
    let mut s = tokio::net::TcpStream::connect(kw.proxy).await.unwrap();
    let req = format!(
        "GET /ws HTTP/1.1\r\nHost: a\r\nX-Api-Key: {}\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n",
        key["encoded"].as_str().unwrap()
    );
    s.write_all(req.as_bytes()).await.unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        let n = tokio::time::timeout(Duration::from_secs(10), s.read(&mut byte))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            n,
            1,
            "connection closed early: {}",
            String::from_utf8_lossy(&head)
        );
        head.push(byte[0]);
    }
    assert!(
        head.starts_with(b"HTTP/1.1 101"),
        "{}",
        String::from_utf8_lossy(&head)
    );
    s.write_all(b"ping through the tunnel").await.unwrap();
    let mut echoed = vec![0u8; 23];
    tokio::time::timeout(Duration::from_secs(10), s.read_exact(&mut echoed))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(&echoed, b"ping through the tunnel");
    // without a credential the upgrade never reaches the upstream
    let r = raw(
        kw.proxy,
        b"GET /ws HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n",
    )
    .await;
    assert!(r.starts_with("HTTP/1.1 401"), "{r}");
}

/// An upstream that serves three requests per connection and then closes it without warning (as a keep-alive
/// timeout does), counting the connections it accepted.
async fn closing_upstream() -> (std::net::SocketAddr, Arc<AtomicUsize>) {
    use tokio::io::AsyncWriteExt;
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let accepted = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&accepted);
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            counter.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                for _ in 0..3 {
                    if read_head(&mut s).await.is_none() {
                        return;
                    }
                    let reply = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok";
                    if s.write_all(reply).await.is_err() {
                        return;
                    }
                }
                let _ = s.shutdown().await;
            });
        }
    });
    (addr, accepted)
}

#[tokio::test]
async fn upstream_connections_are_reused_and_one_closed_while_idle_fails_no_request() {
    let (upstream, accepted) = closing_upstream().await;
    let kw = Keyward::start(upstream, "").await;
    let key = kw
        .create_key(json!({"name": "pool", "isActive": true}))
        .await;
    let header = key_header(&key);
    for i in 0..30 {
        let r = get(&kw.proxy_url("/pooled"), std::slice::from_ref(&header)).await;
        assert_eq!(
            r.status,
            200,
            "request {i}: {}",
            String::from_utf8_lossy(&r.body)
        );
        assert_eq!(&r.body[..], b"ok");
        if i % 4 == 0 {
            // Give the upstream's close time to arrive while the connection sits idle in the pool.
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    let connections = accepted.load(Ordering::SeqCst);
    assert!(
        (10..=15).contains(&connections),
        "30 requests at 3 per upstream connection used {connections} connections"
    );
}

/// An upstream that answers by request line: a chunked body with a trailer, a `HEAD` with a length and no body,
/// a response with conflicting lengths, and a body delimited by the close.
async fn framing_upstream() -> std::net::SocketAddr {
    use tokio::io::AsyncWriteExt;
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            tokio::spawn(async move {
                while let Some(head) = read_head(&mut s).await {
                    let line = String::from_utf8_lossy(&head[..head.len().min(32)]).into_owned();
                    let (reply, close): (&[u8], bool) = if line.starts_with("GET /chunked ") {
                        (
                            b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5;x=1\r\nhello\r\n6\r\n world\r\n0\r\nx-trailer: t\r\n\r\n",
                            false,
                        )
                    } else if line.starts_with("HEAD ") {
                        (b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\n", false)
                    } else if line.starts_with("GET /conflicting ") {
                        (
                            b"HTTP/1.1 200 OK\r\ncontent-length: 1\r\ncontent-length: 2\r\n\r\nxy",
                            true,
                        )
                    } else {
                        (b"HTTP/1.1 200 OK\r\n\r\nto the close", true)
                    };
                    if s.write_all(reply).await.is_err() || close {
                        return;
                    }
                }
            });
        }
    });
    addr
}

#[tokio::test]
async fn upstream_response_framing_reaches_the_client_and_an_invalid_response_is_a_502() {
    let kw = Keyward::start(framing_upstream().await, "").await;
    let key = kw
        .create_key(json!({"name": "framing", "isActive": true}))
        .await;
    let header = key_header(&key);
    let headers = std::slice::from_ref(&header);
    for _ in 0..2 {
        let r = get(&kw.proxy_url("/chunked"), headers).await;
        assert_eq!(r.status, 200);
        assert_eq!(&r.body[..], b"hello world");
    }
    let r = send(Method::HEAD, &kw.proxy_url("/head"), headers, Vec::new()).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-length"), Some("5"));
    assert!(r.body.is_empty());
    let r = get(&kw.proxy_url("/conflicting"), headers).await;
    assert_eq!(r.status, 502, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(r.json()["code"], 502);
    let r = get(&kw.proxy_url("/close"), headers).await;
    assert_eq!(r.status, 200);
    assert_eq!(&r.body[..], b"to the close");
}
