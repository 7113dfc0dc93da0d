//! Criterion benches of the per-request hot paths: the bearer decision (decode, look up, compare, claims) at
//! 1 000 and 1 000 000 keys, NWS4 and RFC 9421 verification of a GET and a 1 KiB POST, the replay window,
//! routing (first match over 8 and 64 rules), header rewriting, and the digest check of a 1 MiB signed body
//! (fed in 16 KiB chunks, as the proxy receives it) against plain SHA-256 of the same bytes.

use std::hint::black_box;
use std::sync::{Arc, OnceLock};
use std::time::Instant;

use chrono::Utc;
use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use http::{HeaderMap, HeaderName, HeaderValue, Method, Uri};

use keyward::auth::nws4::{self, Nws4Credentials, Nws4Request};
use keyward::auth::replay::ReplayCache;
use keyward::auth::signature::{self, SignaturePolicy, SignatureRequest};
use keyward::auth::{Authenticator, Principal};
use keyward::config::Config;
use keyward::keys::ApiKey;
use keyward::keys::cache::KeyCache;
use keyward::keys::view::{ApiKeyInput, encode_credential};
use keyward::policy::{Claim, authorize};
use keyward::proxy::headers::{self, ContextHeaders};
use keyward::routes::{AuthMode, PathMatch, RouteTable, Rule};

fn key(i: usize) -> ApiKey {
    let now = Utc::now();
    ApiKeyInput {
        client_id: Some(format!("client{i:034}")),
        client_secret: Some(format!("{i:064x}")),
        name: Some(format!("key-{i}")),
        user_name: Some("alice".into()),
        device_name: Some("pos-1".into()),
        permissions: Some(vec!["orders:*".into(), "ApiKeyList".into()]),
        is_active: Some(true),
        ..ApiKeyInput::default()
    }
    .validate(true)
    .expect("a valid bench key")
    .into_new_key(Some(format!("{i:024x}")), now)
}

fn authenticator(n: usize) -> Authenticator {
    let cache = Arc::new(KeyCache::new());
    cache.replace_keys((0..n).map(key));
    let cfg = Config::default();
    Authenticator::new(cache, &cfg.auth, &cfg.proxy)
}

fn bearer_decision(c: &mut Criterion) {
    let mut group = c.benchmark_group("bearer_decision");
    let required = [Claim::parse("orders:read").expect("valid")];
    static SMALL: OnceLock<Authenticator> = OnceLock::new();
    static LARGE: OnceLock<Authenticator> = OnceLock::new();
    for (n, cell) in [(1_000usize, &SMALL), (1_000_000, &LARGE)] {
        let probe = key(n / 2);
        let encoded = encode_credential(&probe.client_id, probe.client_secret.expose());
        group.bench_with_input(BenchmarkId::from_parameter(n), &encoded, |b, encoded| {
            // built lazily, so a filtered-out size costs nothing
            let auth = cell.get_or_init(|| authenticator(n));
            b.iter(|| {
                let p = auth
                    .bearer(black_box(encoded.as_bytes()), Utc::now())
                    .expect("authenticates");
                authorize(&p.entry.claims, &required).expect("authorized");
            });
        });
    }
    group.finish();
}

fn signed_headers(method: &Method, body: &[u8]) -> (Uri, HeaderMap, HeaderMap) {
    let url: Uri = "http://127.0.0.1:8080/orders/42?expand=items"
        .parse()
        .expect("uri");
    let k = key(7);
    let mut nws = HeaderMap::new();
    nws.insert("host", HeaderValue::from_static("127.0.0.1:8080"));
    for (name, value) in nws4::sign(
        method,
        &url,
        &[],
        body,
        &k.client_id,
        k.client_secret.expose(),
        Utc::now(),
    ) {
        nws.insert(
            HeaderName::from_bytes(name.as_bytes()).expect("name"),
            HeaderValue::from_str(&value).expect("value"),
        );
    }
    let signed = keyward::sign::sign_headers(
        keyward::sign::SignScheme::Rfc9421,
        method,
        &url,
        &[],
        body,
        &k.client_id,
        k.client_secret.expose(),
    )
    .expect("signs");
    let mut rfc = HeaderMap::new();
    rfc.insert("host", HeaderValue::from_static("127.0.0.1:8080"));
    for (name, value) in signed {
        rfc.insert(
            HeaderName::from_bytes(name.as_bytes()).expect("name"),
            HeaderValue::from_str(&value).expect("value"),
        );
    }
    if !body.is_empty() {
        rfc.insert("content-length", HeaderValue::from(body.len()));
    }
    (url, nws, rfc)
}

fn hmac_verify(c: &mut Criterion) {
    let k = key(7);
    let secret = k.client_secret.expose().to_owned();
    let body_1k = vec![b'x'; 1024];
    for (label, method, body) in [
        ("get", Method::GET, &[][..]),
        ("post_1k", Method::POST, &body_1k[..]),
    ] {
        let (url, nws, rfc) = signed_headers(&method, body);
        let authz = nws
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .expect("signed")
            .to_owned();
        // As the proxy verifies: the key's signing key for the day is kept in its cache entry.
        let day_keys = nws4::DayKeys::default();
        c.bench_function(&format!("nws4_verify/{label}"), |b| {
            b.iter(|| {
                let creds = Nws4Credentials::parse(black_box(&authz)).expect("parses");
                let req = Nws4Request {
                    method: &method,
                    path: url.path(),
                    query: url.query(),
                    headers: &nws,
                    host: "127.0.0.1:8080",
                };
                let v = nws4::verify_with_signing_key(
                    &req,
                    &creds,
                    &day_keys.signing_key(&secret, creds.timestamp()),
                    Utc::now(),
                    std::time::Duration::from_secs(300),
                )
                .expect("verifies");
                assert!(v.body_matches(body));
            });
        });
        let policy = SignaturePolicy::default();
        // As the proxy verifies: the key's secret is kept prekeyed in its cache entry.
        let hmac_key = keyward::auth::prekeyed::PrekeyedHmac::new(secret.as_bytes());
        c.bench_function(&format!("rfc9421_verify/{label}"), |b| {
            b.iter(|| {
                let parsed = signature::parse(black_box(&rfc), &policy).expect("parses");
                let req = SignatureRequest {
                    method: &method,
                    scheme: "http",
                    authority: "127.0.0.1:8080",
                    path: url.path(),
                    query: url.query(),
                    headers: &rfc,
                    has_body: !body.is_empty(),
                };
                let v =
                    signature::verify(&req, &parsed, &hmac_key, &policy, Utc::now().timestamp())
                        .expect("verifies");
                if let Some(d) = v.content_digest {
                    d.check(body).expect("digest");
                }
            });
        });
    }
}

/// The key id a replay entry is recorded under in the proxy: the key's id, a UUID.
const REPLAY_KEY_ID: &str = "0b6f3c2e-8d1a-4f7b-9c3e-2a5d7e9f1b4c";

/// A replay token as the proxy records one: a scheme tag and a 32-byte signature (here the counter, padded).
fn replay_token(n: u64) -> [u8; 33] {
    let mut token = [b'n'; 33];
    token[1..9].copy_from_slice(&n.to_le_bytes());
    token
}

fn replay_window(c: &mut Criterion) {
    // A growing window of up to 8 M live entries (a 300 s window at ~13 000 signed req/s), then a fresh one:
    // the drop is amortised into the figure, as a sidecar pays for expiry too.
    let fresh = || ReplayCache::new(std::time::Duration::from_secs(300), 10_000_000);
    let mut cache = fresh();
    let mut i: u64 = 0;
    c.bench_function("replay_check_and_insert", |b| {
        b.iter(|| {
            i += 1;
            if cache.len() >= 8_000_000 {
                cache = fresh();
            }
            cache
                .check_and_insert(REPLAY_KEY_ID, &replay_token(i), Instant::now())
                .expect("fresh");
        });
    });
    // A sidecar in steady state: the window is full and an old entry expires for each new one. Simulated
    // time advances 20 us per insert (50 000 signed req/s) through a 10 s window (entries live 20 s), so
    // about 1 000 000 entries are live once the warm-up has filled it.
    let steady = ReplayCache::new(std::time::Duration::from_secs(10), 4_000_000);
    let start = Instant::now();
    let mut j: u64 = 0;
    c.bench_function("replay_check_and_insert/steady_1m", |b| {
        b.iter(|| {
            j += 1;
            let now = start + std::time::Duration::from_micros(20 * j);
            steady
                .check_and_insert(REPLAY_KEY_ID, &replay_token(j), now)
                .expect("fresh");
        });
    });
}

/// The lean upstream exchange's own work per request (`src/proxy/h1.rs`): encoding a sanitized GET's head
/// (the fields a bearer request carries after the header rules, then the key's context) and parsing an
/// nginx-style response head.
fn upstream_exchange(c: &mut Criterion) {
    use http_body_util::{BodyExt, Empty};
    use keyward::proxy::h1;
    let principal = bench_principal();
    let context = ContextHeaders::new("X-Auth-");
    let mut req = http::Request::new(Empty::new().map_err(|e| match e {}).boxed());
    *req.uri_mut() = Uri::from_static("/orders/42?expand=lines");
    for (name, value) in [
        ("host", "127.0.0.1:3000"),
        ("user-agent", "curl/8.5.0"),
        ("accept", "application/json"),
    ] {
        req.headers_mut().insert(
            HeaderName::from_static(name),
            HeaderValue::from_static(value),
        );
    }
    let request_id = HeaderValue::from_static("f0d1a720f1ac79cf0000000000000002");
    let added = headers::AddedFields {
        context: Some(context.of(&principal)),
        forwarded: headers::Forwarded::new(
            req.headers(),
            "127.0.0.1:40000".parse().expect("an address"),
            "http",
            Some(HeaderValue::from_static("127.0.0.1:8080")),
            false,
        ),
        request_id: &request_id,
    };
    c.bench_function("upstream_exchange/encode_request_head", |b| {
        b.iter(|| black_box(h1::encode_head(black_box(&req), Some(&added))))
    });
    let response: &[u8] = b"HTTP/1.1 200 OK\r\nServer: nginx/1.22.1\r\nDate: Thu, 26 Nov 2026 12:41:30 GMT\r\nContent-Type: text/plain\r\nContent-Length: 2\r\nConnection: keep-alive\r\n\r\nok";
    c.bench_function("upstream_exchange/parse_response_head", |b| {
        b.iter(|| {
            let mut buf = bytes::BytesMut::from(black_box(response));
            let head = h1::parse_head(&mut buf, false)
                .expect("valid")
                .expect("complete");
            black_box((head.status(), buf))
        })
    });
}

/// The principal of bench key 3 (a user, a device, two permissions), authenticated by bearer.
fn bench_principal() -> Principal {
    let probe = key(3);
    authenticator(10)
        .bearer(
            encode_credential(&probe.client_id, probe.client_secret.expose()).as_bytes(),
            Utc::now(),
        )
        .expect("bench key 3 authenticates")
}

fn header_rewrite(c: &mut Criterion) {
    let principal = bench_principal();
    let context = ContextHeaders::new("X-Auth-");
    let mut base = HeaderMap::new();
    base.insert("host", HeaderValue::from_static("api.example.com"));
    base.insert("authorization", HeaderValue::from_static("Bearer abc"));
    base.insert("x-auth-user", HeaderValue::from_static("spoofed"));
    base.insert("accept", HeaderValue::from_static("application/json"));
    base.insert("connection", HeaderValue::from_static("keep-alive"));
    let api_key = HeaderName::from_static("x-api-key");
    let peer = "127.0.0.1:40000".parse().expect("an address");
    let request_id = HeaderValue::from_static("f0d1a720f1ac79cf0000000000000002");
    // The map path (requests with a body): read the forwarding fields, strip, insert what Keyward adds. The
    // lean path writes the added fields into the head instead (`upstream_exchange/encode_request_head`).
    c.bench_function("header_rewrite", |b| {
        b.iter(|| {
            let mut h = base.clone();
            let host = h.get("host").cloned();
            let forwarded = headers::Forwarded::new(&h, peer, "http", host, false);
            headers::strip(
                &mut h,
                &headers::StripRules {
                    keep_upgrade: false,
                    api_key_header: Some(&api_key),
                    context_prefix: Some(context.prefix()),
                    added: true,
                },
            );
            headers::AddedFields {
                context: Some(context.of(&principal)),
                forwarded,
                request_id: &request_id,
            }
            .insert_into(&mut h);
            black_box(h)
        });
    });
}

/// A route table of `n` rules shaped like a service's: per resource, an exact health-style path, a write rule
/// limited to POST and PUT, and a prefix for the rest, each requiring a claim; the default requires a key.
fn route_table(n: usize) -> RouteTable {
    let rule = |name: String, path: PathMatch, methods: Vec<Method>| Rule {
        require: vec![Claim::parse(&format!("{name}:read")).expect("a valid claim")],
        name,
        path,
        methods,
        auth: AuthMode::Required,
        upstream: None,
    };
    let rules = (0..n)
        .map(|i| match i % 3 {
            0 => rule(
                format!("r{i}-status"),
                PathMatch::Exact(format!("/r{i}/status")),
                vec![],
            ),
            1 => rule(
                format!("r{i}-write"),
                PathMatch::Prefix(format!("/r{}/", i - 1)),
                vec![Method::POST, Method::PUT],
            ),
            _ => rule(
                format!("r{i}"),
                PathMatch::Prefix(format!("/r{}/", i - 2)),
                vec![],
            ),
        })
        .collect();
    RouteTable::new(
        rules,
        rule("default".into(), PathMatch::Prefix("/".into()), vec![]),
    )
}

fn routing(c: &mut Criterion) {
    let mut group = c.benchmark_group("routing");
    for n in [8usize, 64] {
        let table = route_table(n);
        // A GET matched by the last prefix rule (every rule before it is tried) and a path no rule matches.
        let last_prefix = (0..n).rev().find(|i| i % 3 == 2).expect("n >= 3");
        let last = format!("/r{}/items/42", last_prefix - 2);
        let unrouted = "/elsewhere/items/42";
        assert_eq!(table.find_indexed(&Method::GET, &last).0, last_prefix);
        assert_eq!(table.find_indexed(&Method::GET, unrouted).0, n);
        for (label, path) in [("last_rule", last.as_str()), ("default", unrouted)] {
            group.bench_with_input(BenchmarkId::new(label, n), &path, |b, path| {
                b.iter(|| black_box(table.find_indexed(&Method::GET, black_box(path)).0));
            });
        }
    }
    group.finish();
}

fn signed_body_digest(c: &mut Criterion) {
    use base64::Engine as _;
    use sha2::{Digest, Sha256};
    let body = vec![b'x'; 1 << 20];
    let header = format!(
        "sha-256=:{}:",
        base64::engine::general_purpose::STANDARD.encode(Sha256::digest(&body))
    );
    let expected = signature::digest::ExpectedDigest::parse(&header).expect("parses");
    let mut group = c.benchmark_group("signed_body_1mib");
    group.throughput(criterion::Throughput::Bytes(body.len() as u64));
    group.bench_function("sha256_alone", |b| {
        b.iter(|| black_box(Sha256::digest(black_box(&body))));
    });
    group.bench_function("content_digest_check_16k_chunks", |b| {
        b.iter(|| {
            let mut hasher = expected.hasher();
            for chunk in black_box(&body).chunks(16 * 1024) {
                hasher.update(chunk);
            }
            hasher.finish_and_check().expect("matches");
        });
    });
    group.finish();
}

mod group {
    use super::*;
    criterion_group!(
        benches,
        bearer_decision,
        hmac_verify,
        replay_window,
        routing,
        header_rewrite,
        upstream_exchange,
        signed_body_digest
    );
}
criterion_main!(group::benches);
