//! Tests: tamper and policy tables.

use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, Mac};
use http::{HeaderValue, Method};
use sha2::Sha256;

use super::tests::{BODY, FULL, Fixture, NOW, SECRET};
use super::*;

type Tamper = (&'static str, fn(&mut Fixture));

#[test]
fn tamper_table() {
    let tampers: &[Tamper] = &[
        ("method", |f| f.method = Method::PUT),
        ("authority", |f| f.authority = "evil.example.com".into()),
        ("scheme", |f| f.scheme = "http".into()),
        ("path", |f| f.path = "/foo/".into()),
        ("query", |f| f.query = Some("param=Value&Pet=cat".into())),
        ("query removed", |f| f.query = None),
        ("content-type", |f| f.set("content-type", "text/plain")),
        ("content-type added line", |f| {
            f.headers
                .append("content-type", HeaderValue::from_static("x"));
        }),
        ("content-digest", |f| {
            f.set("content-digest", &content_digest_header(b"other"))
        }),
        ("content-digest sha-512 added", |f| {
            let v = format!(
                "{}, sha-512=:{}:",
                content_digest_header(BODY),
                STANDARD.encode([0u8; 64])
            );
            f.set("content-digest", &v);
        }),
        ("body", |f| f.body = b"{\"hello\": \"World\"}".to_vec()),
        ("created", |f| {
            let v = f
                .input()
                .replace("created=1700000000", "created=1700000001");
            f.set("signature-input", &v);
        }),
        ("keyid", |f| {
            let v = f.input().replace("client-1", "client-2");
            f.set("signature-input", &v);
        }),
        ("nonce", |f| {
            let v = f.input().replace("n-1", "n-2");
            f.set("signature-input", &v);
        }),
        ("component dropped", |f| {
            let v = f.input().replace(" \"content-type\"", "");
            f.set("signature-input", &v);
        }),
        ("label in one header", |f| {
            let v = f.input().replace("sig1=", "sig2=");
            f.set("signature-input", &v);
        }),
        ("signature", |f| {
            let s = f.headers["signature"].to_str().unwrap();
            let b64 = s.trim_start_matches("sig1=:").trim_end_matches(':');
            let mut raw = STANDARD.decode(b64).unwrap();
            raw[0] ^= 1;
            f.set("signature", &format!("sig1=:{}:", STANDARD.encode(raw)));
        }),
        ("signature truncated", |f| {
            let s = f.headers["signature"].to_str().unwrap().to_owned();
            f.set("signature", &format!("{}:", &s[..s.len() - 6]));
        }),
    ];
    let fresh = || {
        let mut f = Fixture::post();
        f.path = "/foo".into();
        f.signed(&[
            "@method",
            "@authority",
            "@target-uri",
            "content-digest",
            "content-type",
        ])
    };
    fresh().check().unwrap();
    for (name, tamper) in tampers {
        let mut f = fresh();
        tamper(&mut f);
        assert!(f.check().is_err(), "tamper {name} was accepted");
    }
    // The label is not signed (RFC 9421 §4.1), so renaming it in both headers is
    // only caught when the policy pins a label.
    let mut f = fresh();
    let input = f.input().replace("sig1=", "other=");
    let sig = f.headers["signature"]
        .to_str()
        .unwrap()
        .replace("sig1=", "other=");
    f.set("signature-input", &input);
    f.set("signature", &sig);
    f.check().unwrap();
    let pinned = SignaturePolicy {
        label: Some("sig1".into()),
        ..SignaturePolicy::default()
    };
    assert_eq!(
        f.check_with(&pinned, NOW).unwrap_err(),
        SignatureError::LabelNotFound
    );
}

#[test]
fn policy_table() {
    use SignatureError as E;
    let post = Fixture::post;
    let cases: Vec<(&str, Fixture, i64, E)> = vec![
        (
            "empty coverage",
            post().signed(&[]),
            NOW,
            E::MissingCoverage("@method"),
        ),
        (
            "no authority",
            post().signed(&["@method", "@target-uri", "content-digest"]),
            NOW,
            E::MissingCoverage("@authority"),
        ),
        (
            "no target",
            post().signed(&["@method", "@authority", "content-digest"]),
            NOW,
            E::MissingCoverage("@target-uri"),
        ),
        (
            "path without query",
            post().signed(&["@method", "@authority", "@path", "content-digest"]),
            NOW,
            E::MissingCoverage("@query"),
        ),
        (
            "no digest",
            post().signed(&["@method", "@authority", "@target-uri"]),
            NOW,
            E::MissingCoverage("content-digest"),
        ),
        (
            "digest member only",
            post().signed(&[
                "@method",
                "@authority",
                "@target-uri",
                "\"content-digest\";key=\"sha-256\"",
            ]),
            NOW,
            E::MissingCoverage("content-digest"),
        ),
        ("stale", post().signed(FULL), NOW + 301, E::OutsideWindow),
        ("future", post().signed(FULL), NOW - 301, E::OutsideWindow),
    ];
    for (name, f, now, want) in cases {
        assert_eq!(
            f.check_with(&SignaturePolicy::default(), now).unwrap_err(),
            want,
            "{name}"
        );
    }
    // Edges of the window are accepted; skew is configurable.
    let f = post().signed(FULL);
    f.check_with(&SignaturePolicy::default(), NOW + 300)
        .unwrap();
    f.check_with(&SignaturePolicy::default(), NOW - 300)
        .unwrap();
    let tight = SignaturePolicy {
        clock_skew: Duration::from_secs(10),
        ..SignaturePolicy::default()
    };
    assert_eq!(
        f.check_with(&tight, NOW + 11).unwrap_err(),
        E::OutsideWindow
    );
    // Hand-made Signature-Input values with a correct HMAC over their own base.
    let manual = |params: &str| {
        let mut f = post();
        let inner =
            format!("(\"@method\" \"@authority\" \"@target-uri\" \"content-digest\");{params}");
        f.set("signature-input", &format!("s={inner}"));
        f.set("signature", "s=:AAAA:");
        let p = parse(&f.headers, &SignaturePolicy::default());
        if let Ok(p) = &p {
            let base = base::signature_base(&f.req(), &p.components, &inner).unwrap();
            let mut mac = Hmac::<Sha256>::new_from_slice(SECRET).unwrap();
            mac.update(base.as_bytes());
            f.set(
                "signature",
                &format!("s=:{}:", STANDARD.encode(mac.finalize().into_bytes())),
            );
        }
        f.check()
    };
    manual("created=1700000000;keyid=\"client-1\"").unwrap();
    manual("created=1700000000;keyid=\"client-1\";expires=1700000060").unwrap();
    manual("created=1700000000;keyid=\"client-1\";alg=\"hmac-sha256\";x=1.5").unwrap();
    assert_eq!(
        manual("created=1700000000;keyid=\"client-1\";x=1.50").unwrap_err(),
        E::Mismatch
    );
    assert_eq!(
        manual("keyid=\"client-1\"").unwrap_err(),
        E::MissingParameter("created")
    );
    assert_eq!(
        manual("created=1700000000;keyid=\"client-1\";expires=1700000000").unwrap_err(),
        E::Expired
    );
    assert_eq!(
        manual("created=1700000000;keyid=\"client-1\";expires=1").unwrap_err(),
        E::Expired
    );
    assert_eq!(
        manual("created=1700000000;keyid=\"client-1\";alg=\"rsa-pss-sha512\"").unwrap_err(),
        E::UnsupportedAlgorithm
    );
    assert_eq!(
        manual("created=1700000000;keyid=\"client-1\";alg=\"HMAC-SHA256\"").unwrap_err(),
        E::UnsupportedAlgorithm
    );
    assert!(matches!(
        manual("created=1700000000;keyid=\"client-1\";alg=hmac-sha256").unwrap_err(),
        E::Malformed(_)
    ));
    assert_eq!(
        manual("created=1700000000").unwrap_err(),
        E::MissingParameter("keyid")
    );
    assert!(matches!(
        manual("created=\"1700000000\";keyid=\"client-1\"").unwrap_err(),
        E::Malformed(_)
    ));
    assert!(matches!(
        manual("created=1700000000;keyid=client-1").unwrap_err(),
        E::Malformed(_)
    ));
    assert!(matches!(
        manual("created=-9223372036854775807;keyid=\"client-1\"").unwrap_err(),
        E::Malformed(_)
    ));
    let lax = SignaturePolicy {
        require_created: false,
        ..SignaturePolicy::default()
    };
    let mut f = post();
    f.set(
        "signature-input",
        "s=(\"@method\" \"@authority\" \"@target-uri\" \"content-digest\");keyid=\"client-1\"",
    );
    f.set("signature", "s=:AAAA:");
    assert_eq!(f.check_with(&lax, NOW).unwrap_err(), E::Mismatch);
}
