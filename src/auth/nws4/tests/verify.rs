//! Verifier rules (§5, §7): round trips, tampering, window, minimum coverage, chunked rejection.

use std::time::Duration;

use super::*;

const KEYS: (&str, &str) = (
    "d948ec22e47790caacce234b792a0f117d85c365",
    "5070adfb2bedf1c0c97d5c8cfa8c794d513249b802ea10596a175d88828abc19",
);
const TS: &str = "2024-02-29T23:59:58.123Z";

fn base() -> Signed {
    Signed::new(
        Method::POST,
        "http://api.example.com:8443/v1/orders/a%20b?z=1&a=2&a=1&flag",
        &[("Content-Type", "application/json"), ("__tenant", "t-1")],
        b"{\"n\":1}",
        KEYS,
        TS,
    )
}

/// Signs an arbitrary canonical request by hand, as a non-conforming or PHP client would.
fn authorization_for(canonical: &str, signed_list: &str) -> String {
    let sts = string_to_sign(TS, KEYS.0, canonical);
    let sig = signature(&signing_key(KEYS.1, TS), &sts);
    authorization::format_authorization(KEYS.0, signed_list, TS, &hex::encode(sig))
}

#[test]
fn sign_then_verify_round_trips() {
    let urls = [
        "http://example.com/",
        "http://example.com",
        "https://EXAMPLE.com:443/a/b:c/~d?x=%20y+z&x=&=",
        "http://127.0.0.1:8080/deep/path/%E2%82%AC?k=v=w",
    ];
    for (i, url) in urls.iter().enumerate() {
        for method in [Method::GET, Method::DELETE, Method::PATCH] {
            let body = vec![b'x'; i * 100];
            let given = [("Accept", "text/plain"), ("X-Multi", "  a \t  b  ")];
            let signed = Signed::new(method.clone(), url, &given, &body, KEYS, TS);
            let verified = signed.verify_at(KEYS.1, TS).unwrap();
            assert!(verified.body_matches(&body), "{method} {url}");
        }
    }
}

#[test]
fn long_canonical_requests_verify_past_the_stack_buffer() {
    // The verifier writes the canonical request on the stack up to 512 bytes, then on the heap: a long path
    // spills in one piece, many short header lines one piece at a time.
    let long_path = format!("http://example.com/{}", "segment/".repeat(80));
    let names: Vec<String> = (0..40).map(|i| format!("X-Extra-{i:02}")).collect();
    let many: Vec<(&str, &str)> = names.iter().map(|n| (n.as_str(), "value")).collect();
    for (url, given) in [
        (long_path.as_str(), &[][..]),
        ("http://example.com/x", &many[..]),
    ] {
        let signed = Signed::new(Method::GET, url, given, b"", KEYS, TS);
        assert!(signed.verify_at(KEYS.1, TS).is_ok(), "{url}");
        let mut tampered = signed;
        flip_signature(&mut tampered);
        assert!(tampered.verify_at(KEYS.1, TS).is_err(), "{url}");
    }
}

#[test]
fn signer_host_is_lower_case_without_default_port() {
    for (url, host) in [
        ("http://Example.COM:80/x", "example.com"),
        ("https://example.com:443/x", "example.com"),
        ("https://example.com:80/x", "example.com:80"),
        ("http://example.com:8080/x", "example.com:8080"),
        ("http://[::1]:8080/x", "[::1]:8080"),
    ] {
        let signed = Signed::new(Method::GET, url, &[], b"", KEYS, TS);
        assert_eq!(signed.host, host, "{url}");
        signed.verify_at(KEYS.1, TS).unwrap();
    }
    // A given Host is used as is and not added again.
    let signed = Signed::new(
        Method::GET,
        "http://a.test/x",
        &[("Host", "b.test")],
        b"",
        KEYS,
        TS,
    );
    assert_eq!(signed.headers.get_all("host").iter().count(), 1);
    assert_eq!(signed.host, "b.test");
    signed.verify_at(KEYS.1, TS).unwrap();
}

#[test]
fn repeated_header_lines_are_joined_with_a_comma() {
    let given = [("X-A", "1"), ("x-a", "2"), ("Accept", "a")];
    let signed = Signed::new(Method::GET, "http://a.test/", &given, b"", KEYS, TS);
    assert_eq!(signed.headers.get_all("x-a").iter().count(), 2);
    signed.verify_at(KEYS.1, TS).unwrap();
}

#[test]
fn any_change_to_a_covered_component_fails() {
    type Tamper = fn(&mut Signed);
    let table: &[(&str, Tamper, Nws4Error)] = &[
        (
            "method",
            |s| s.method = Method::PUT,
            Nws4Error::SignatureMismatch,
        ),
        (
            "path",
            |s| s.path = "/v1/orders/a%20c".into(),
            Nws4Error::SignatureMismatch,
        ),
        (
            "path decoded",
            |s| s.path = "/v1/orders/a b".into(),
            Nws4Error::SignatureMismatch,
        ),
        (
            "query value",
            |s| s.query = Some("z=2&a=2&a=1&flag".into()),
            Nws4Error::SignatureMismatch,
        ),
        (
            "query order of repeats",
            |s| s.query = Some("z=1&a=1&a=2&flag".into()),
            Nws4Error::SignatureMismatch,
        ),
        (
            "query added",
            |s| s.query = Some("z=1&a=2&a=1&flag&x=1".into()),
            Nws4Error::SignatureMismatch,
        ),
        (
            "query removed",
            |s| s.query = None,
            Nws4Error::SignatureMismatch,
        ),
        (
            "host",
            |s| s.host = "evil.example.com:8443".into(),
            Nws4Error::SignatureMismatch,
        ),
        (
            "signed header",
            |s| set(s, "content-type", "text/plain"),
            Nws4Error::SignatureMismatch,
        ),
        (
            "tenant",
            |s| set(s, "__tenant", "t-2"),
            Nws4Error::SignatureMismatch,
        ),
        (
            "extra line of a signed header",
            |s| add(s, "__tenant", "t-2"),
            Nws4Error::SignatureMismatch,
        ),
        (
            "body hash",
            |s| set(s, "x-nd-content-sha256", &"0".repeat(64)),
            Nws4Error::SignatureMismatch,
        ),
        (
            "x-nd-date only",
            |s| set(s, "x-nd-date", "2024-02-29T23:59:58.124Z"),
            Nws4Error::TimestampMismatch,
        ),
        (
            "timestamp",
            |s| {
                set(s, "x-nd-date", "2024-02-29T23:59:58.124Z");
                s.authorization = s.authorization.replace("58.123Z", "58.124Z");
            },
            Nws4Error::SignatureMismatch,
        ),
        (
            "client id",
            |s| s.authorization = s.authorization.replace("d948ec22", "d948ec23"),
            Nws4Error::SignatureMismatch,
        ),
        (
            "signature",
            |s| flip_signature(s),
            Nws4Error::SignatureMismatch,
        ),
        (
            "signed header removed",
            |s| {
                s.headers.remove("__tenant");
            },
            Nws4Error::MissingSignedHeader("__tenant".into()),
        ),
        (
            "signed list shrunk",
            |s| s.authorization = s.authorization.replace("%253B__tenant", ""),
            Nws4Error::SignatureMismatch,
        ),
    ];
    base().verify_at(KEYS.1, TS).unwrap();
    for (what, tamper, expected) in table {
        let mut signed = base();
        tamper(&mut signed);
        assert_eq!(
            signed.verify_at(KEYS.1, TS).as_ref(),
            Err(expected),
            "{what}"
        );
    }
    // Wrong secret; unsigned extra headers are ignored (§5.4).
    assert_eq!(
        base().verify_at("other", TS),
        Err(Nws4Error::SignatureMismatch)
    );
    let mut extra = base();
    add(&mut extra, "user-agent", "curl/8");
    extra.verify_at(KEYS.1, TS).unwrap();
}

fn set(s: &mut Signed, name: &'static str, value: &str) {
    s.headers
        .insert(name, HeaderValue::from_str(value).unwrap());
}

fn add(s: &mut Signed, name: &'static str, value: &str) {
    s.headers
        .append(name, HeaderValue::from_str(value).unwrap());
}

fn flip_signature(s: &mut Signed) {
    let sig = &s.authorization[s.authorization.len() - 64..];
    let first = if sig.starts_with('0') { '1' } else { '0' };
    let flipped = format!("{first}{}", &sig[1..]);
    s.authorization = s.authorization.replace(sig, &flipped);
}

#[test]
fn window_is_inclusive_on_both_sides() {
    let signed = base();
    let creds = Nws4Credentials::parse(&signed.authorization).unwrap();
    let check = |now: &str| verify(&signed.request(), &creds, KEYS.1, at(now), SKEW).map(|_| ());
    assert_eq!(check("2024-03-01T00:02:28.123Z"), Ok(()), "exactly +150 s");
    assert_eq!(
        check("2024-03-01T00:02:28.124Z"),
        Err(Nws4Error::OutsideWindow)
    );
    assert_eq!(check("2024-02-29T23:57:28.123Z"), Ok(()), "exactly -150 s");
    assert_eq!(
        check("2024-02-29T23:57:28.122Z"),
        Err(Nws4Error::OutsideWindow)
    );
    let far = at("2030-01-01T00:00:00.000Z");
    let unlimited = verify(&signed.request(), &creds, KEYS.1, far, Duration::MAX);
    assert!(
        unlimited.is_ok(),
        "a skew beyond chrono's range disables the check"
    );
    // The window is checked after the signature: a bad signature is reported as such even when stale.
    let wrong = verify(&signed.request(), &creds, "other", far, SKEW);
    assert_eq!(wrong, Err(Nws4Error::SignatureMismatch));
}

#[test]
fn signature_covering_only_host_is_rejected() {
    let signed = base();
    let canonical = canonical_request(
        "POST",
        &signed.path,
        signed.query.as_deref(),
        &[("host", &signed.host)],
        &"0".repeat(64),
    );
    let only_host = Nws4Credentials::parse(&authorization_for(&canonical, "host")).unwrap();
    let result = verify(&signed.request(), &only_host, KEYS.1, at(TS), SKEW);
    assert_eq!(
        result,
        Err(Nws4Error::MissingRequiredSignedHeader("x-nd-date"))
    );

    for required in REQUIRED_SIGNED_HEADERS {
        let creds = Nws4Credentials::parse(&signed.authorization).unwrap();
        let kept: Vec<&str> = creds
            .signed_headers()
            .iter()
            .filter(|n| *n != required)
            .collect();
        let creds = creds.clone().with_signed_headers(&kept).unwrap();
        let result = verify(&signed.request(), &creds, KEYS.1, at(TS), SKEW);
        assert_eq!(
            result,
            Err(Nws4Error::MissingRequiredSignedHeader(required))
        );
    }
}

#[test]
fn php_path_form_is_accepted_as_second_candidate() {
    let hash = "a".repeat(64);
    let headers = header_map([("x-nd-date", TS), ("x-nd-content-sha256", hash.as_str())]);
    let signed_headers = [
        ("host", "a.test"),
        ("x-nd-content-sha256", hash.as_str()),
        ("x-nd-date", TS),
    ];
    for (path, php_form, ok) in [
        ("/files/a:b", "/files/a%3Ab", true),
        ("//files/a:b", "/files/a%3Ab", false),
    ] {
        let prepared: Vec<(String, String)> = signed_headers
            .iter()
            .map(|(n, v)| ((*n).into(), (*v).into()))
            .collect();
        let canonical = canonical::assemble("GET", php_form, None, &prepared, &hash);
        let list = "host;x-nd-content-sha256;x-nd-date";
        let creds = Nws4Credentials::parse(&authorization_for(&canonical, list)).unwrap();
        let req = Nws4Request {
            method: &Method::GET,
            path,
            query: None,
            headers: &headers,
            host: "a.test",
        };
        assert_eq!(
            verify(&req, &creds, KEYS.1, at(TS), SKEW).is_ok(),
            ok,
            "{path}"
        );
    }
}

#[test]
fn chunked_variant_is_rejected_explicitly() {
    let mut streaming = base();
    set(
        &mut streaming,
        "x-nd-content-sha256",
        "STREAMING-AWS4-HMAC-SHA256-PAYLOAD",
    );
    assert_eq!(
        streaming.verify_at(KEYS.1, TS),
        Err(Nws4Error::ChunkedUnsupported)
    );
    let mut encoded = base();
    set(&mut encoded, "content-encoding", "gzip, NWS-Chunked");
    assert_eq!(
        encoded.verify_at(KEYS.1, TS),
        Err(Nws4Error::ChunkedUnsupported)
    );
}

#[test]
fn bad_content_sha256_and_non_ascii_values_are_rejected() {
    for bad in ["abc", &"g".repeat(64), &"a".repeat(65), ""] {
        let mut signed = base();
        set(&mut signed, "x-nd-content-sha256", bad);
        assert_eq!(
            signed.verify_at(KEYS.1, TS),
            Err(Nws4Error::BadContentSha256),
            "{bad:?}"
        );
    }
    let mut signed = base();
    signed
        .headers
        .insert("__tenant", HeaderValue::from_bytes(b"caf\xc3\xa9").unwrap());
    assert_eq!(
        signed.verify_at(KEYS.1, TS),
        Err(Nws4Error::InvalidHeaderValue("__tenant".into()))
    );
}

#[test]
fn error_messages_never_contain_signature_or_secret() {
    let mut signed = base();
    let sig = signed.authorization[signed.authorization.len() - 64..].to_owned();
    flip_signature(&mut signed);
    let errors = [
        signed.verify_at(KEYS.1, TS).unwrap_err(),
        base()
            .verify_at(KEYS.1, "2030-01-01T00:00:00.000Z")
            .unwrap_err(),
        Nws4Credentials::parse(&format!("{}X", base().authorization)).unwrap_err(),
    ];
    let debug = format!("{:?}", signed.request());
    assert!(
        !debug.contains("Signature") && !debug.contains("z=1"),
        "{debug}"
    );
    for err in errors {
        let text = format!("{err} {err:?}");
        assert!(
            !text.contains(&sig[..16]) && !text.contains(&KEYS.1[..16]),
            "{text}"
        );
    }
}
