//! Registered upstreams against a real Keyward process: real upstream servers on loopback that accept only the
//! credentials they expect (basic, header key, query key, a bearer token from a real token endpoint with expiry
//! and refresh, CSRF), the client's own credentials never passing through, single-flight token refresh under
//! concurrent load, `verify` in success and each failure mode, the admin API's validation and versioning,
//! config-declared upstreams, and (with `KEYWARD_TEST_PG_URL`) an upstream created on one sidecar used by another.
#![expect(
    clippy::unwrap_used,
    reason = "integration tests: a failed step should panic with its value"
)]

mod common;

use common::pg::{fresh_database, pg_url};

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use common::{BOOTSTRAP, Keyward, Resp, base_config, echo_upstream, eventually, get};
use http::{Method, Response};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::{Value, json};

/// What a stub answers: status, headers, body.
type Answer = (u16, Vec<(&'static str, String)>, String);
type Handler = Arc<dyn Fn(&http::request::Parts, &[u8]) -> Answer + Send + Sync>;

/// Serve `handler` on 127.0.0.1:0, answering after `delay`.
async fn serve(delay: Duration, handler: Handler) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let handler = Arc::clone(&handler);
            tokio::spawn(async move {
                let service =
                    hyper::service::service_fn(move |req: http::Request<hyper::body::Incoming>| {
                        let handler = Arc::clone(&handler);
                        async move {
                            let (parts, body) = req.into_parts();
                            let body = body
                                .collect()
                                .await
                                .map(|c| c.to_bytes())
                                .unwrap_or_default();
                            tokio::time::sleep(delay).await;
                            let (status, headers, text) = handler(&parts, &body);
                            let mut r = Response::builder().status(status);
                            for (k, v) in headers {
                                r = r.header(k, v);
                            }
                            Ok::<_, Infallible>(r.body(Full::new(Bytes::from(text))).unwrap())
                        }
                    });
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    addr
}

fn header(parts: &http::request::Parts, name: &str) -> Option<String> {
    let values: Vec<String> = parts
        .headers
        .get_all(name)
        .iter()
        .map(|v| v.to_str().unwrap().to_owned())
        .collect();
    (!values.is_empty()).then(|| values.join(" | "))
}

/// An upstream that answers 200 with what it saw when `accept` holds, 401 otherwise.
async fn guarded(
    accept: impl Fn(&http::request::Parts) -> bool + Send + Sync + 'static,
) -> SocketAddr {
    serve(
        Duration::ZERO,
        Arc::new(move |parts, _| {
            let seen = json!({
                "path": parts.uri.path(),
                "query": parts.uri.query(),
                "authorization": header(parts, "authorization"),
                "x-key": header(parts, "x-key"),
                "x-csrf-token": header(parts, "x-csrf-token"),
                "x-extra": header(parts, "x-extra"),
                "host": header(parts, "host"),
            })
            .to_string();
            if accept(parts) {
                (200, vec![("content-type", "application/json".into())], seen)
            } else {
                (401, vec![], seen)
            }
        }),
    )
    .await
}

/// A token endpoint: checks the client credentials grant, counts fetches, answers `tok-N` with `expires_in`.
async fn token_endpoint(expires_in: u64, delay: Duration) -> (SocketAddr, Arc<AtomicU64>) {
    let count = Arc::new(AtomicU64::new(0));
    let c = Arc::clone(&count);
    let addr = serve(
        delay,
        Arc::new(move |parts, body| {
            let body = String::from_utf8_lossy(body);
            let form_ok = parts.method == Method::POST
                && header(parts, "content-type").as_deref() == Some("application/x-www-form-urlencoded")
                && body.contains("grant_type=client_credentials")
                && body.contains("client_id=app")
                && body.contains("client_secret=app-secret-123")
                && body.contains("audience=billing");
            if !form_ok {
                return (401, vec![], r#"{"error":"invalid_client"}"#.into());
            }
            let n = c.fetch_add(1, Ordering::SeqCst) + 1;
            (
                200,
                vec![("content-type", "application/json".into())],
                json!({"access_token": format!("tok-{n}"), "token_type": "Bearer", "expires_in": expires_in}).to_string(),
            )
        }),
    )
    .await;
    (addr, count)
}

fn oauth2(token_url: &str) -> Value {
    json!({
        "type": "oauth2ClientCredentials",
        "tokenUrl": token_url,
        "clientId": "app",
        "clientSecret": "app-secret-123",
        "tokenParams": {"audience": "billing"}
    })
}

/// Keyward with routes `/<name>/` -> upstream `<name>` for each name, auth none, client credentials forwarded
/// (so only the replacement keeps them from the upstream).
async fn keyward(names: &[&str], extra: &str) -> Keyward {
    let mut routes = String::new();
    for n in names {
        routes.push_str(&format!(
            "[[routes]]\nname = \"{n}\"\npath = \"/{n}/\"\nauth = \"none\"\nupstream = \"{n}\"\n"
        ));
    }
    let dir = Arc::new(tempfile::tempdir().unwrap());
    let config = base_config(
        dir.path(),
        echo_upstream().await,
        &format!("{routes}{extra}"),
    );
    Keyward::start_in(
        dir,
        &config,
        &[("KEYWARD_PROXY__FORWARD_CREDENTIALS", "true")],
    )
    .await
}

async fn register(kw: &Keyward, name: &str, url: &str, auth: Value) -> Value {
    let r = kw
        .admin(
            Method::POST,
            "/upstreams",
            Some(json!({"name": name, "url": url, "auth": auth})),
        )
        .await;
    assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.body));
    assert!(r.header("location").unwrap().starts_with("/upstreams/"));
    r.json()
}

/// The client's own credentials in every place an upstream credential could go.
fn client_credentials() -> Vec<(&'static str, String)> {
    vec![
        ("authorization", "Basic Y2xpZW50OmNsaWVudA==".into()),
        ("x-key", "client-key".into()),
    ]
}

fn body_text(r: &Resp) -> String {
    String::from_utf8_lossy(&r.body).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn static_credentials_replace_the_clients_and_reach_checking_upstreams() {
    // base64("svc:pa ss:word") per RFC 7617.
    let basic =
        guarded(|p| header(p, "authorization").as_deref() == Some("Basic c3ZjOnBhIHNzOndvcmQ="))
            .await;
    let pre =
        guarded(|p| header(p, "authorization").as_deref() == Some("Basic cHJlOmVuY29kZWQ=")).await;
    let hdr = guarded(|p| {
        header(p, "x-key").as_deref() == Some("hdr-secret-1")
            && header(p, "x-extra").as_deref() == Some("on")
    })
    .await;
    let qry = guarded(|p| {
        let q = p.uri.query().unwrap_or("");
        q.split('&')
            .filter(|kv| kv.starts_with("api_key="))
            .collect::<Vec<_>>()
            == ["api_key=qry-secret-1"]
            && q.contains("page=2")
            && q.contains("tenant=acme")
    })
    .await;
    let kw = keyward(&["basic", "pre", "hdr", "qry"], "").await;
    register(
        &kw,
        "basic",
        &format!("http://{basic}"),
        json!({"type": "basic", "userName": "svc", "password": "pa ss:word"}),
    )
    .await;
    register(
        &kw,
        "pre",
        &format!("http://{pre}"),
        json!({"type": "basic", "preEncoded": "cHJlOmVuY29kZWQ="}),
    )
    .await;
    let r = kw
        .admin(
            Method::POST,
            "/upstreams",
            Some(json!({"name": "hdr", "url": format!("http://{hdr}"),
                "headerParams": [{"key": "X-Extra", "value": "on"}],
                "auth": {"type": "apiKey", "name": "X-Key", "value": "hdr-secret-1", "in": "header"}})),
        )
        .await;
    assert_eq!(r.status, 201, "{}", body_text(&r));
    let r = kw
        .admin(
            Method::POST,
            "/upstreams",
            // Seed 000's header_params spelling is accepted.
            Some(json!({"name": "qry", "url": format!("http://{qry}"),
                "headerParams": [{"keys": "tenant", "values": "acme", "queryparam": true}],
                "auth": {"type": "apiKey", "name": "api_key", "value": "qry-secret-1", "in": "query"}})),
        )
        .await;
    assert_eq!(r.status, 201, "{}", body_text(&r));

    for (path, upstream) in [
        ("/basic/x", basic),
        ("/pre/x", pre),
        ("/hdr/x", hdr),
        ("/qry/x?api_key=client&page=2", qry),
    ] {
        let r = get(&kw.proxy_url(path), &client_credentials()).await;
        assert_eq!(r.status, 200, "{path}: {}", body_text(&r));
        let seen = r.json();
        assert_eq!(
            seen["host"],
            upstream.to_string(),
            "{path}: Host is the upstream's"
        );
        // The guards accept only the exact injected value (a second value would be joined in): here the place
        // each upstream's credential goes holds no client value even though client credentials are forwarded.
        let place = match path {
            "/basic/x" | "/pre/x" => &seen["authorization"],
            "/hdr/x" => &seen["x-key"],
            _ => &seen["query"],
        };
        assert!(!place.to_string().contains("client"), "{path}: {seen}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bearer_token_is_fetched_cached_and_refreshed_after_expiry() {
    let (token, fetches) = token_endpoint(2, Duration::ZERO).await;
    let api =
        guarded(|p| header(p, "authorization").is_some_and(|a| a.starts_with("Bearer tok-"))).await;
    let kw = keyward(&["billing"], "").await;
    register(
        &kw,
        "billing",
        &format!("http://{api}"),
        oauth2(&format!("http://{token}/oauth/token")),
    )
    .await;

    let first = get(&kw.proxy_url("/billing/a"), &client_credentials()).await;
    assert_eq!(first.status, 200, "{}", body_text(&first));
    assert_eq!(first.json()["authorization"], "Bearer tok-1");
    let second = get(&kw.proxy_url("/billing/b"), &client_credentials()).await;
    assert_eq!(second.json()["authorization"], "Bearer tok-1");
    assert_eq!(fetches.load(Ordering::SeqCst), 1, "the token is cached");
    // expires_in = 2 s: renewed shortly before, by the request that finds it stale.
    let refreshed = eventually(Duration::from_secs(10), || async {
        get(&kw.proxy_url("/billing/c"), &[]).await.json()["authorization"] == "Bearer tok-2"
    })
    .await;
    assert!(refreshed, "the token was not refreshed");
    assert_eq!(fetches.load(Ordering::SeqCst), 2);
    let metrics = get(&kw.admin_url("/metrics"), &[]).await;
    assert!(body_text(&metrics).contains("keyward_token_fetches_total{result=\"ok\"} 2"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_concurrent_requests_fetch_the_token_exactly_once() {
    let (token, fetches) = token_endpoint(3600, Duration::from_millis(300)).await;
    let api = guarded(|p| header(p, "authorization").as_deref() == Some("Bearer tok-1")).await;
    let kw = Arc::new(keyward(&["billing"], "").await);
    register(
        &kw,
        "billing",
        &format!("http://{api}"),
        oauth2(&format!("http://{token}/token")),
    )
    .await;
    let tasks: Vec<_> = (0..50)
        .map(|i| {
            let kw = Arc::clone(&kw);
            tokio::spawn(async move {
                get(&kw.proxy_url(&format!("/billing/{i}")), &[])
                    .await
                    .status
            })
        })
        .collect();
    for t in tasks {
        assert_eq!(t.await.unwrap(), 200);
    }
    assert_eq!(fetches.load(Ordering::SeqCst), 1, "single flight");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn csrf_token_is_fetched_and_replaces_the_clients() {
    let fetches = Arc::new(AtomicU64::new(0));
    let f = Arc::clone(&fetches);
    let csrf = serve(
        Duration::ZERO,
        Arc::new(move |parts, _| {
            if header(parts, "x-csrf-token").as_deref() != Some("Fetch") {
                return (400, vec![], String::new());
            }
            f.fetch_add(1, Ordering::SeqCst);
            (
                200,
                vec![("x-csrf-token", "csrf-abc".into())],
                String::new(),
            )
        }),
    )
    .await;
    let api = guarded(|p| header(p, "x-csrf-token").as_deref() == Some("csrf-abc")).await;
    let kw = keyward(&["forms"], "").await;
    register(
        &kw,
        "forms",
        &format!("http://{api}"),
        json!({"type": "csrf", "tokenUrl": format!("http://{csrf}/csrf")}),
    )
    .await;
    for _ in 0..3 {
        let mut creds = client_credentials();
        creds.push(("x-csrf-token", "client-csrf".into()));
        let r = get(&kw.proxy_url("/forms/x"), &creds).await;
        assert_eq!(r.status, 200, "{}", body_text(&r));
        assert_eq!(r.json()["x-csrf-token"], "csrf-abc");
    }
    assert_eq!(fetches.load(Ordering::SeqCst), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_failures_are_502_with_a_reason_and_no_secret() {
    let refusing = serve(Duration::ZERO, Arc::new(|_, _| (401, vec![], "{}".into()))).await;
    let api = guarded(|_| true).await;
    let kw = keyward(&["billing", "ghost"], "").await;
    register(
        &kw,
        "billing",
        &format!("http://{api}"),
        oauth2(&format!("http://{refusing}/token")),
    )
    .await;
    let r = get(&kw.proxy_url("/billing/x"), &[]).await;
    assert_eq!(r.status, 502);
    let body = r.json();
    assert_eq!(body["code"], 502);
    let description = body["stack"][0]["description"].as_str().unwrap();
    assert!(
        description.contains("token step failed") && description.contains("401"),
        "{description}"
    );
    assert!(!body.to_string().contains("app-secret-123"));
    // A route naming an upstream that is not registered.
    let r = get(&kw.proxy_url("/ghost/x"), &[]).await;
    assert_eq!(r.status, 502);
    let description = r.json()["stack"][0]["description"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(
        description.contains("\"ghost\" is not registered"),
        "{description}"
    );
    assert!(
        !kw.log_text().contains("app-secret-123"),
        "a secret was logged"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_reports_success_and_each_failure_mode() {
    let (token, _) = token_endpoint(3600, Duration::ZERO).await;
    let refusing = serve(Duration::ZERO, Arc::new(|_, _| (401, vec![], "{}".into()))).await;
    let api = guarded(|p| {
        p.uri.path() == "/health"
            && (header(p, "authorization").as_deref() == Some("Bearer tok-1")
                || header(p, "x-key").as_deref() == Some("right"))
    })
    .await;
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let kw = keyward(&[], "").await;
    let cases = [
        (
            "ok",
            format!("http://{api}"),
            oauth2(&format!("http://{token}/t")),
            true,
            Some(200),
            "request",
            "",
        ),
        (
            "bad-token-url",
            format!("http://{api}"),
            oauth2(&format!("http://{closed}/t")),
            false,
            None,
            "token",
            "could not be reached",
        ),
        (
            "token-401",
            format!("http://{api}"),
            oauth2(&format!("http://{refusing}/t")),
            false,
            None,
            "token",
            "401",
        ),
        (
            "upstream-401",
            format!("http://{api}"),
            json!({"type": "apiKey", "name": "X-Key", "value": "wrong"}),
            false,
            Some(401),
            "request",
            "refused the credentials",
        ),
        (
            "unreachable",
            format!("http://{closed}"),
            json!({"type": "none"}),
            false,
            None,
            "request",
            "could not be reached",
        ),
    ];
    for (name, url, auth, ok, status, step, error) in cases {
        let r = kw
            .admin(
                Method::POST,
                "/upstreams",
                Some(json!({"name": name, "url": url, "auth": auth, "verifyPath": "/health"})),
            )
            .await;
        assert_eq!(r.status, 201, "{name}: {}", body_text(&r));
        let r = kw
            .admin(Method::POST, &format!("/upstreams/{name}/verify"), None)
            .await;
        assert_eq!(r.status, 200, "{name}: {}", body_text(&r));
        let report = r.json();
        assert_eq!(report["ok"], ok, "{name}: {report}");
        assert_eq!(report["status"], json!(status), "{name}: {report}");
        assert_eq!(report["step"], step, "{name}: {report}");
        assert!(report["latencyMs"].is_u64(), "{name}: {report}");
        if ok {
            assert!(report["error"].is_null());
        } else {
            assert!(
                report["error"].as_str().unwrap().contains(error),
                "{name}: {report}"
            );
        }
        let text = report.to_string();
        assert!(
            !text.contains("app-secret-123") && !text.contains("wrong") && !text.contains("tok-"),
            "{name}: {text}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_api_validates_versions_searches_and_never_returns_secrets() {
    let api = guarded(|p| header(p, "x-key").as_deref() == Some("first-secret")).await;
    let kw = keyward(&["svc"], "").await;
    let stack_paths = |r: &Resp| -> Vec<String> {
        r.json()["stack"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["path"].as_str().unwrap().to_owned())
            .collect()
    };
    // Bad input: one stack entry per field.
    for (body, paths) in [
        (
            json!({"name": "a", "url": "http://x", "auth": {"type": "oauth2ClientCredentials"}}),
            vec!["auth.tokenUrl", "auth.clientId", "auth.clientSecret"],
        ),
        (
            json!({"name": "a", "url": "http://x", "auth": {"type": "magic"}}),
            vec!["auth.type"],
        ),
        (
            json!({"name": "a b", "url": "not a url", "auth": {"type": "apiKey", "in": "cookie"}}),
            vec!["name", "url", "auth.in", "auth.name", "auth.value"],
        ),
        (
            json!({"name": "a", "url": "http://x", "auth": {"type": "basic", "password": "p"}}),
            vec!["auth.userName"],
        ),
    ] {
        let r = kw
            .admin(Method::POST, "/upstreams", Some(body.clone()))
            .await;
        assert_eq!(r.status, 400, "{body}: {}", body_text(&r));
        assert_eq!(stack_paths(&r), paths, "{body}");
    }
    let created = register(
        &kw,
        "svc",
        &format!("http://{api}"),
        json!({"type": "apiKey", "name": "X-Key", "value": "first-secret"}),
    )
    .await;
    assert_eq!(created["_v"], 1);
    assert_eq!(created["source"], "store");
    let id = created["id"].as_str().unwrap().to_owned();
    let r = kw.admin(Method::GET, "/upstreams/svc", None).await;
    assert_eq!(r.status, 200);
    assert!(
        !body_text(&r).contains("first-secret"),
        "secret returned: {}",
        body_text(&r)
    );
    assert_eq!(get(&kw.proxy_url("/svc/x"), &[]).await.status, 200);
    // PUT the GET body back with a new url field unchanged: secret kept; no version = 428; stale = 409.
    let mut edited = r.json();
    edited["description"] = json!("edited");
    edited.as_object_mut().unwrap().remove("_v");
    assert_eq!(
        kw.admin(
            Method::PUT,
            &format!("/upstreams/{id}"),
            Some(edited.clone())
        )
        .await
        .status,
        428
    );
    edited["_v"] = json!(7);
    assert_eq!(
        kw.admin(
            Method::PUT,
            &format!("/upstreams/{id}"),
            Some(edited.clone())
        )
        .await
        .status,
        409
    );
    edited["_v"] = json!(1);
    let r = kw
        .admin(
            Method::PUT,
            &format!("/upstreams/{id}"),
            Some(edited.clone()),
        )
        .await;
    assert_eq!(r.status, 200, "{}", body_text(&r));
    assert_eq!(r.json()["_v"], 2);
    assert_eq!(
        get(&kw.proxy_url("/svc/x"), &[]).await.status,
        200,
        "the secret was kept"
    );
    // A new secret is in force on the next request.
    edited["_v"] = json!(2);
    edited["auth"]["value"] = json!("second-secret");
    assert_eq!(
        kw.admin(
            Method::PUT,
            &format!("/upstreams/{id}"),
            Some(edited.clone())
        )
        .await
        .status,
        200
    );
    assert_eq!(
        get(&kw.proxy_url("/svc/x"), &[]).await.status,
        401,
        "the upstream refuses the new secret"
    );
    // List, search, options.
    register(
        &kw,
        "other",
        "http://billing.example.com",
        json!({"type": "none"}),
    )
    .await;
    let r = kw
        .admin(Method::GET, "/upstreams?q=BILLING&$take=10", None)
        .await;
    assert_eq!(r.json()["totalCount"], 1);
    assert_eq!(r.json()["items"][0]["name"], "other");
    let r = kw
        .admin(Method::GET, "/upstreams?$sort=-name&$take=1", None)
        .await;
    assert_eq!(r.json()["items"][0]["name"], "svc");
    assert_eq!(r.json()["count"], 1);
    assert_eq!(r.json()["totalCount"], 2);
    assert_eq!(
        kw.admin(Method::GET, "/upstreams?nope=1", None)
            .await
            .status,
        400
    );
    let r = kw.admin(Method::GET, "/upstreams/options", None).await;
    assert_eq!(
        r.json()["authTypes"],
        json!(["none", "basic", "apiKey", "oauth2ClientCredentials", "csrf"])
    );
    assert_eq!(r.json()["keyLocations"], json!(["header", "query"]));
    // Duplicate name, then delete: the route answers 502 on the next request.
    let r = kw
        .admin(
            Method::POST,
            "/upstreams",
            Some(json!({"name": "svc", "url": "http://x"})),
        )
        .await;
    assert_eq!(r.status, 409);
    let r = kw
        .admin(Method::DELETE, &format!("/upstreams/{id}"), None)
        .await;
    assert_eq!(r.status, 200);
    let r = get(&kw.proxy_url("/svc/x"), &[]).await;
    assert_eq!(r.status, 502);
    assert!(
        body_text(&r).contains("not registered"),
        "{}",
        body_text(&r)
    );
    // Rights: a key without UpstreamList is refused.
    let key = kw
        .create_key(json!({"name": "reader", "permissions": ["ApiKeyList"], "isActive": true}))
        .await;
    let r = kw
        .admin_as(
            &format!("Bearer {}", key["encoded"].as_str().unwrap()),
            Method::GET,
            "/upstreams",
            None,
        )
        .await;
    assert_eq!(r.status, 403);
    assert_eq!(
        kw.admin_as(
            &format!("Bearer {BOOTSTRAP}"),
            Method::GET,
            "/upstreams",
            None
        )
        .await
        .status,
        200
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn config_declared_upstreams_are_used_and_read_only() {
    let api =
        guarded(|p| header(p, "authorization").as_deref() == Some("Basic Y2ZnOmNmZy1wYXNz")).await;
    let extra = format!(
        "[[upstreams]]\nname = \"cfg\"\nurl = \"http://{api}\"\nconnect_timeout = \"2s\"\n\
         [upstreams.auth]\ntype = \"basic\"\nuser_name = \"cfg\"\npassword = \"cfg-pass\"\n"
    );
    let kw = keyward(&["cfg"], &extra).await;
    let r = get(&kw.proxy_url("/cfg/x"), &client_credentials()).await;
    assert_eq!(r.status, 200, "{}", body_text(&r));
    let r = kw.admin(Method::GET, "/upstreams/cfg", None).await;
    assert_eq!(r.json()["source"], "config");
    assert!(!body_text(&r).contains("cfg-pass"));
    let id = r.json()["id"].as_str().unwrap().to_owned();
    let mut body = r.json();
    body["description"] = json!("x");
    assert_eq!(
        kw.admin(Method::PUT, &format!("/upstreams/{id}"), Some(body))
            .await
            .status,
        409
    );
    assert_eq!(
        kw.admin(Method::DELETE, &format!("/upstreams/{id}"), None)
            .await
            .status,
        409
    );
    let r = kw
        .admin(
            Method::POST,
            "/upstreams",
            Some(json!({"name": "cfg", "url": "http://x"})),
        )
        .await;
    assert_eq!(r.status, 409);
}

#[test]
fn a_bad_config_declared_upstream_exits_64() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.toml");
    std::fs::write(
        &path,
        "[[upstreams]]\nname = \"x\"\nurl = \"ftp://x\"\n[upstreams.auth]\ntype = \"magic\"\n\
         [[routes]]\npath = \"/\"\nupstream = \"not a name\"\n",
    )
    .unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_keyward"))
        .args(["config", "check"])
        .arg(&path)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(64));
    let err = String::from_utf8_lossy(&out.stderr);
    for field in [
        "upstreams[0].url",
        "upstreams[0].auth.type",
        "routes[0].upstream",
    ] {
        assert!(err.contains(field), "{field} missing from: {err}");
    }
}

// === PostgreSQL ===

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upstream_created_on_one_sidecar_is_used_by_another() {
    let Some(base) = pg_url() else { return };
    let url = fresh_database(&base, "kw_upstreams").await;
    let api = guarded(|p| header(p, "x-key").as_deref() == Some("fleet-secret")).await;
    let echo = echo_upstream().await;
    let start = |url: String| async move {
        let dir = Arc::new(tempfile::tempdir().unwrap());
        let config = base_config(
            dir.path(),
            echo,
            "[[routes]]\npath = \"/pay/\"\nauth = \"none\"\nupstream = \"pay\"\n",
        )
        .replace(
            "[store]\n",
            &format!("[store]\nkind = \"postgres\"\nurl = \"{url}\"\n"),
        );
        Keyward::start_in(dir, &config, &[]).await
    };
    let a = start(url.clone()).await;
    let b = start(url).await;
    assert_eq!(get(&b.proxy_url("/pay/x"), &[]).await.status, 502);
    register(
        &a,
        "pay",
        &format!("http://{api}"),
        json!({"type": "apiKey", "name": "X-Key", "value": "fleet-secret"}),
    )
    .await;
    let reached = eventually(Duration::from_secs(10), || async {
        get(&b.proxy_url("/pay/x"), &[]).await.status == 200
    })
    .await;
    assert!(reached, "the upstream did not reach the other sidecar");
    let id = a.admin(Method::GET, "/upstreams/pay", None).await.json()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(
        a.admin(Method::DELETE, &format!("/upstreams/{id}"), None)
            .await
            .status,
        200
    );
    let gone = eventually(Duration::from_secs(10), || async {
        get(&b.proxy_url("/pay/x"), &[]).await.status == 502
    })
    .await;
    assert!(gone, "the deletion did not reach the other sidecar");
}
