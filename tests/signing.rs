//! HMAC request signing end to end: NWS4 (seed 004) and RFC 9421 through a real Keyward process, including
//! requests signed by the third-party PyPI library `http-message-signatures`, replay, tampering, coverage
//! policy, body digests and malformed input.
#![allow(
    clippy::unwrap_used,
    reason = "integration tests: a failed step should panic with its value"
)]

mod common;

use common::{Keyward, echo_upstream, python, raw, run_python, send};
use http::Method;
use keyward::sign::{SignScheme, sign_headers};
use serde_json::{Value, json};

async fn start() -> (Keyward, Value) {
    let kw = Keyward::start(echo_upstream().await, "[limits]\nmax_signed_body = 4096\n").await;
    let key = kw.create_key(json!({"name": "signer", "userName": "alice", "deviceName": "pos-1", "permissions": ["orders:*"], "isActive": true})).await;
    (kw, key)
}

fn creds(key: &Value) -> (&str, &str) {
    (
        key["clientId"].as_str().unwrap(),
        key["clientSecret"].as_str().unwrap(),
    )
}

/// Sign with Keyward's own signer and return the headers as owned pairs.
fn signed(
    scheme: SignScheme,
    method: &Method,
    url: &str,
    body: &[u8],
    key: &Value,
) -> Vec<(&'static str, String)> {
    let (id, secret) = creds(key);
    let uri: http::Uri = url.parse().unwrap();
    let mut headers: Vec<(&'static str, String)> = Vec::new();
    for (k, v) in sign_headers(scheme, method, &uri, &[], body, id, secret).unwrap() {
        headers.push((Box::leak(k.to_ascii_lowercase().into_boxed_str()), v));
    }
    headers
}

#[tokio::test]
async fn nws4_and_rfc9421_requests_pass_with_context() {
    let (kw, key) = start().await;
    for scheme in [SignScheme::Nws4, SignScheme::Rfc9421] {
        for (method, body) in [
            (Method::GET, Vec::new()),
            (Method::POST, br#"{"total": 42}"#.to_vec()),
        ] {
            let url = kw.proxy_url("/orders/7?expand=items&b=2");
            let headers = signed(scheme, &method, &url, &body, &key);
            let r = send(method.clone(), &url, &headers, body.clone()).await;
            assert_eq!(
                r.status,
                200,
                "{scheme:?} {method}: {}",
                String::from_utf8_lossy(&r.body)
            );
            let echo = r.json();
            let expected = if scheme == SignScheme::Nws4 {
                "nws4"
            } else {
                "rfc9421"
            };
            assert_eq!(echo["headers"]["x-auth-scheme"], expected);
            assert_eq!(echo["headers"]["x-auth-user"], "alice");
            assert_eq!(echo["body"], String::from_utf8_lossy(&body).as_ref());
            for consumed in [
                "signature",
                "signature-input",
                "authorization",
                "x-nd-date",
                "x-nd-content-sha256",
            ] {
                assert!(
                    echo["headers"].get(consumed).is_none(),
                    "{scheme:?} {method}: {consumed} reached the upstream"
                );
            }
            // RFC 9530's digest describes the body to the upstream too: it is not a credential.
            if scheme == SignScheme::Rfc9421 && !body.is_empty() {
                assert!(echo["headers"].get("content-digest").is_some());
            }
        }
    }
}

#[tokio::test]
async fn a_signed_request_is_accepted_once() {
    let (kw, key) = start().await;
    for scheme in [SignScheme::Nws4, SignScheme::Rfc9421] {
        let url = kw.proxy_url("/orders/1");
        let headers = signed(scheme, &Method::GET, &url, &[], &key);
        assert_eq!(
            send(Method::GET, &url, &headers, Vec::new()).await.status,
            200
        );
        let again = send(Method::GET, &url, &headers, Vec::new()).await;
        assert_eq!(again.status, 401, "{scheme:?} replay");
        assert_eq!(
            again.json()["error_description"],
            "the signature has already been used"
        );
    }
}

#[tokio::test]
async fn after_a_rotation_the_signatures_of_the_secrets_in_force_verify_and_no_other() {
    // NWS4's signing key is kept per key for the day: a rotation must not leave the old one in use.
    let (kw, key) = start().await;
    let id = key["id"].as_str().unwrap();
    let status = |scheme, key: &Value| {
        let url = kw.proxy_url("/orders/1");
        let headers = signed(scheme, &Method::GET, &url, &[], key);
        async move { send(Method::GET, &url, &headers, Vec::new()).await.status }
    };
    let rotate_path = format!("/apikeys/{id}/rotate");
    let rotate = |grace: Option<Value>| kw.admin(Method::POST, &rotate_path, grace);
    for scheme in [SignScheme::Nws4, SignScheme::Rfc9421] {
        assert_eq!(status(scheme, &key).await, 200, "{scheme:?} before");
    }
    let graced = rotate(Some(json!({"gracePeriod": "60s"}))).await.json();
    for scheme in [SignScheme::Nws4, SignScheme::Rfc9421] {
        assert_eq!(
            status(scheme, &key).await,
            200,
            "{scheme:?} old secret in grace"
        );
        assert_eq!(status(scheme, &graced).await, 200, "{scheme:?} new secret");
    }
    let fresh = rotate(None).await.json();
    for scheme in [SignScheme::Nws4, SignScheme::Rfc9421] {
        assert_eq!(status(scheme, &key).await, 401, "{scheme:?} first secret");
        assert_eq!(
            status(scheme, &graced).await,
            401,
            "{scheme:?} second secret"
        );
        assert_eq!(status(scheme, &fresh).await, 200, "{scheme:?} third secret");
    }
}

#[tokio::test]
async fn tampering_with_anything_covered_is_401() {
    let (kw, key) = start().await;
    let body = br#"{"total": 42}"#.to_vec();
    for scheme in [SignScheme::Nws4, SignScheme::Rfc9421] {
        let url = kw.proxy_url("/orders/7?x=1");
        type Tamper = fn(&mut String, &mut Method, &mut Vec<u8>, &mut Vec<(&'static str, String)>);
        let tampers: [(&str, Tamper); 6] = [
            ("body", |_, _, b, _| b[2] = b'T'),
            // Sent with no body at all: its digest is checked without a read, and must still fail.
            ("body left out", |_, _, b, _| b.clear()),
            ("path", |u, _, _, _| {
                *u = u.replace("/orders/7", "/orders/8")
            }),
            ("query", |u, _, _, _| *u = u.replace("x=1", "x=2")),
            ("method", |_, m, _, _| *m = Method::PUT),
            ("key id", |_, _, _, h| {
                for (_, v) in h.iter_mut() {
                    *v = v
                        .replace("keyid=\"", "keyid=\"x")
                        .replace("Credential%3D", "Credential%3Dx");
                }
            }),
        ];
        for (what, tamper) in tampers {
            let headers = signed(scheme, &Method::POST, &url, &body, &key);
            let (mut u, mut m, mut b, mut h) = (url.clone(), Method::POST, body.clone(), headers);
            tamper(&mut u, &mut m, &mut b, &mut h);
            let r = send(m, &u, &h, b).await;
            assert_eq!(
                r.status,
                401,
                "{scheme:?} tampered {what}: {}",
                String::from_utf8_lossy(&r.body)
            );
        }
    }
}

#[tokio::test]
async fn third_party_rfc9421_client_interoperates() {
    let Some(py) = python() else { return };
    let (kw, key) = start().await;
    let (id, secret) = creds(&key);
    let url = kw.proxy_url("/orders/9?q=caf%C3%A9");
    for extra in [
        vec![],
        vec!["--method", "POST", "--data", "{\"a\": 1}"],
        vec!["--method", "DELETE", "--nonce", "n-123", "--label", "mine"],
    ] {
        let mut args = vec!["--url", &url, "--key-id", id, "--secret", secret];
        args.extend(extra.iter().copied());
        let out = run_python(&py, "sign_rfc9421.py", &args).await;
        let result: Value = serde_json::from_str(out.trim()).unwrap();
        assert_eq!(result["status"], 200, "{extra:?}: {result}");
        let echo: Value = serde_json::from_str(result["body"].as_str().unwrap()).unwrap();
        assert_eq!(echo["headers"]["x-auth-scheme"], "rfc9421");
        assert_eq!(echo["headers"]["x-auth-key-id"], key["id"]);
    }
    // too little coverage is refused although the signature is valid
    let out = run_python(
        &py,
        "sign_rfc9421.py",
        &[
            "--url",
            &url,
            "--key-id",
            id,
            "--secret",
            secret,
            "--covered",
            "@method",
        ],
    )
    .await;
    let result: Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(result["status"], 401);
    assert!(
        result["body"].as_str().unwrap().contains("invalid_request"),
        "{result}"
    );
    // a stale signature is refused
    let old = (chrono::Utc::now().timestamp() - 1000).to_string();
    let out = run_python(
        &py,
        "sign_rfc9421.py",
        &[
            "--url",
            &url,
            "--key-id",
            id,
            "--secret",
            secret,
            "--created",
            &old,
        ],
    )
    .await;
    let result: Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(result["status"], 401);
    assert!(
        result["body"]
            .as_str()
            .unwrap()
            .contains("outside its validity window"),
        "{result}"
    );
    // a wrong secret tells nothing more than an unknown key
    let out = run_python(
        &py,
        "sign_rfc9421.py",
        &["--url", &url, "--key-id", id, "--secret", &"0".repeat(64)],
    )
    .await;
    let wrong: Value = serde_json::from_str(out.trim()).unwrap();
    let out = run_python(
        &py,
        "sign_rfc9421.py",
        &[
            "--url",
            &url,
            "--key-id",
            "no-such-client",
            "--secret",
            &"0".repeat(64),
        ],
    )
    .await;
    let unknown: Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(
        (wrong["status"].clone(), wrong["body"].clone()),
        (unknown["status"].clone(), unknown["body"].clone())
    );
}

#[tokio::test]
async fn signed_bodies_over_the_limit_are_413() {
    let (kw, key) = start().await;
    let body = vec![b'x'; 8192];
    for scheme in [SignScheme::Nws4, SignScheme::Rfc9421] {
        let url = kw.proxy_url("/orders/1");
        let headers = signed(scheme, &Method::POST, &url, &body, &key);
        let r = send(Method::POST, &url, &headers, body.clone()).await;
        assert_eq!(r.status, 413, "{scheme:?}");
    }
}

#[tokio::test]
async fn per_key_schemes_and_disabled_schemes_are_enforced() {
    let (kw, _) = start().await;
    let bearer_only = kw
        .create_key(json!({"name": "bearer-only", "isActive": true, "schemes": ["bearer"]}))
        .await;
    let url = kw.proxy_url("/x");
    let r = send(
        Method::GET,
        &url,
        &signed(SignScheme::Rfc9421, &Method::GET, &url, &[], &bearer_only),
        Vec::new(),
    )
    .await;
    assert_eq!(
        (r.status, r.json()["error_description"].clone()),
        (401, json!("the key may not use this authentication scheme"))
    );
    // a sidecar with only bearer enabled refuses signatures before looking at keys
    let kw2 = Keyward::start(echo_upstream().await, "[auth]\nschemes = [\"bearer\"]\n").await;
    let k = kw2.create_key(json!({"name": "k", "isActive": true})).await;
    let url = kw2.proxy_url("/x");
    let r = send(
        Method::GET,
        &url,
        &signed(SignScheme::Nws4, &Method::GET, &url, &[], &k),
        Vec::new(),
    )
    .await;
    assert_eq!(
        (r.status, r.json()["error"].clone()),
        (401, json!("invalid_request"))
    );
}

#[tokio::test]
async fn malformed_signatures_are_4xx_never_5xx() {
    let (kw, key) = start().await;
    let url = kw.proxy_url("/x");
    let cases: Vec<Vec<(&str, String)>> = vec![
        vec![
            ("signature-input", "sig1=(".into()),
            ("signature", "sig1=:AAAA:".into()),
        ],
        vec![
            (
                "signature-input",
                "sig1=(\"@method\");created=1;keyid=\"k\";alg=\"rsa-pss-sha512\"".into(),
            ),
            ("signature", "sig1=:AAAA:".into()),
        ],
        vec![
            ("signature-input", "sig1=(\"@method\");keyid=\"k\"".into()),
            ("signature", "sig1=:not base64!:".into()),
        ],
        vec![
            (
                "signature-input",
                "a=(\"@method\");keyid=\"k\", a=(\"@path\");keyid=\"k\"".into(),
            ),
            ("signature", "a=:AAAA:".into()),
        ],
        vec![
            (
                "signature-input",
                format!("sig1=(\"@method\");keyid=\"{}\"", "k".repeat(9000)),
            ),
            ("signature", "sig1=:AAAA:".into()),
        ],
        vec![("signature", "sig1=:AAAA:".into())],
        vec![("authorization", "NWS4-HMAC-SHA256 garbage".into())],
        vec![(
            "authorization",
            "NWS4-HMAC-SHA256 Credential%3D%2CSignedHeaders%3D%2CTimestamp%3D%2CSignature%3D"
                .into(),
        )],
        vec![(
            "authorization",
            format!("NWS4-HMAC-SHA256 {}", "%".repeat(3000)),
        )],
    ];
    for headers in cases {
        let r = send(Method::GET, &url, &headers, Vec::new()).await;
        assert!(
            r.status == 401 || r.status == 400 || r.status == 431,
            "{headers:?} -> {}",
            r.status
        );
        if r.status == 401 {
            assert!(r.json()["error"].is_string());
        }
    }
    // a signature on a request with two schemes is refused
    let mut headers = signed(SignScheme::Rfc9421, &Method::GET, &url, &[], &key);
    headers.push(("x-api-key", key["encoded"].as_str().unwrap().to_owned()));
    let r = send(Method::GET, &url, &headers, Vec::new()).await;
    assert_eq!(
        (r.status, r.json()["error_description"].clone()),
        (401, json!("send exactly one credential scheme"))
    );
    let resp = raw(kw.proxy, b"GET /x HTTP/1.1\r\nHost: a\r\nSignature-Input: \xff\r\nSignature: x\r\nConnection: close\r\n\r\n").await;
    assert!(
        resp.starts_with("HTTP/1.1 401") || resp.starts_with("HTTP/1.1 400"),
        "{resp}"
    );
}

#[tokio::test]
async fn behind_a_tls_hop_the_signature_covers_what_the_client_saw() {
    let dir = std::sync::Arc::new(tempfile::tempdir().unwrap());
    let config = common::base_config(dir.path(), echo_upstream().await, "");
    let kw = Keyward::start_in(dir, &config, &[("KEYWARD_PROXY__TRUST_FORWARDED", "true")]).await;
    let key = kw
        .create_key(json!({"name": "edge", "isActive": true}))
        .await;
    // the client signed https://api.example.com/...; a TLS-terminating hop forwarded it over plain HTTP
    let public = "https://api.example.com/orders/1?a=b";
    let mut headers = signed(SignScheme::Rfc9421, &Method::GET, public, &[], &key);
    headers.push(("x-forwarded-proto", "https".into()));
    headers.push(("x-forwarded-host", "api.example.com".into()));
    let r = send(
        Method::GET,
        &kw.proxy_url("/orders/1?a=b"),
        &headers,
        Vec::new(),
    )
    .await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    // without the trusted headers the same signature does not match
    let kw2 = Keyward::start(echo_upstream().await, "").await;
    let key2 = kw2
        .create_key(json!({"name": "edge", "isActive": true}))
        .await;
    let mut headers = signed(SignScheme::Rfc9421, &Method::GET, public, &[], &key2);
    headers.push(("x-forwarded-proto", "https".into()));
    headers.push(("x-forwarded-host", "api.example.com".into()));
    assert_eq!(
        send(
            Method::GET,
            &kw2.proxy_url("/orders/1?a=b"),
            &headers,
            Vec::new()
        )
        .await
        .status,
        401
    );
}

#[tokio::test]
async fn after_the_window_a_replay_is_refused_for_age() {
    let kw = Keyward::start(echo_upstream().await, "[auth]\nclock_skew = \"1s\"\n").await;
    let key = kw.create_key(json!({"name": "k", "isActive": true})).await;
    for scheme in [SignScheme::Nws4, SignScheme::Rfc9421] {
        let url = kw.proxy_url("/x");
        let headers = signed(scheme, &Method::GET, &url, &[], &key);
        assert_eq!(
            send(Method::GET, &url, &headers, Vec::new()).await.status,
            200
        );
        tokio::time::sleep(std::time::Duration::from_millis(2200)).await;
        let r = send(Method::GET, &url, &headers, Vec::new()).await;
        assert_eq!(
            (r.status, r.json()["error_description"].clone()),
            (401, json!("the signature is outside its validity window")),
            "{scheme:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sign_cli_sends_signed_requests() {
    let (kw, key) = start().await;
    let (id, secret) = creds(&key);
    for scheme in ["rfc9421", "nws4", "bearer"] {
        let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_keyward"))
            .args([
                "sign",
                "--scheme",
                scheme,
                "--key-id",
                id,
                "--secret",
                secret,
                "-X",
                "POST",
                "-d",
                "{\"n\": 1}",
                "-H",
                "X-Trace: t1",
            ])
            .arg(kw.proxy_url("/orders/5"))
            .output()
            .await
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("200"),
            "{scheme}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let echo: Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(echo["headers"]["x-auth-scheme"], scheme);
        assert_eq!(echo["body"], "{\"n\": 1}");
    }
}
