//! Tests: malformed inputs are rejected with the right error and never panic.

use http::{HeaderMap, HeaderValue};

use super::tests::{Fixture, KEY_ID, NOW, SECRET};
use super::*;

#[test]
fn malformed_inputs_never_panic() {
    use SignatureError as E;
    let ok_input = "sig1=(\"@method\");created=1;keyid=\"k\"";
    let big = format!(
        "sig1=(\"@method\");created=1;keyid=\"{}\"",
        "k".repeat(9000)
    );
    let many: String = (0..65).map(|i| format!("\"h{i}\" ")).collect();
    let many = format!("sig1=({many});keyid=\"k\"");
    let labels: Vec<String> = (0..9)
        .map(|i| format!("s{i}=(\"@method\");keyid=\"k\""))
        .collect();
    let sigs: Vec<String> = (0..9).map(|i| format!("s{i}=:AAAA:")).collect();
    let cases: Vec<(&str, String, String, Option<E>)> = vec![
        (
            "bad sf",
            "sig1=(\"@method\"".into(),
            "sig1=:AAAA:".into(),
            Some(E::Malformed("structured field syntax")),
        ),
        (
            "bad sf sig",
            ok_input.into(),
            "sig1=:AA AA:".into(),
            Some(E::Malformed("structured field syntax")),
        ),
        ("bad base64", ok_input.into(), "sig1=:!!!!:".into(), None),
        (
            "empty sig",
            ok_input.into(),
            "sig1=::".into(),
            Some(E::Malformed("Signature member is not a byte sequence")),
        ),
        (
            "sig is string",
            ok_input.into(),
            "sig1=\"AAAA\"".into(),
            None,
        ),
        (
            "input is item",
            "sig1=\"@method\"".into(),
            "sig1=:AAAA:".into(),
            None,
        ),
        (
            "component token",
            "sig1=(method);keyid=\"k\"".into(),
            "sig1=:AAAA:".into(),
            None,
        ),
        (
            "dup label",
            format!("{ok_input}, sig1=(\"@path\");keyid=\"k\""),
            "sig1=:AAAA:".into(),
            Some(E::DuplicateLabel),
        ),
        (
            "dup label in sig",
            ok_input.into(),
            "sig1=:AAAA:, sig1=:BBBB:".into(),
            Some(E::DuplicateLabel),
        ),
        (
            "comma in string dup",
            "sig1=(\"a,b\");keyid=\"k,\", sig1=()".into(),
            "sig1=:AAAA:".into(),
            Some(E::DuplicateLabel),
        ),
        (
            "missing sig label",
            ok_input.into(),
            "sig2=:AAAA:".into(),
            Some(E::LabelMismatch),
        ),
        (
            "extra sig label",
            ok_input.into(),
            "sig1=:AAAA:, sig2=:AAAA:".into(),
            Some(E::LabelMismatch),
        ),
        (
            "missing signature header",
            ok_input.into(),
            String::new(),
            Some(E::LabelMismatch),
        ),
        (
            "huge",
            big,
            "sig1=:AAAA:".into(),
            Some(E::TooLarge("header")),
        ),
        (
            "components",
            many,
            "sig1=:AAAA:".into(),
            Some(E::TooLarge("components")),
        ),
        (
            "labels",
            labels.join(", "),
            sigs.join(", "),
            Some(E::TooLarge("labels")),
        ),
        (
            "dup component",
            "sig1=(\"@method\" \"@method\");keyid=\"k\"".into(),
            "sig1=:AAAA:".into(),
            Some(E::DuplicateComponent("\"@method\"".into())),
        ),
        (
            "dup param order",
            "sig1=(\"a\";sf;key=\"x\" \"a\";key=\"x\";sf);keyid=\"k\"".into(),
            "sig1=:AAAA:".into(),
            None,
        ),
        (
            "bs",
            "sig1=(\"a\";bs);keyid=\"k\"".into(),
            "sig1=:AAAA:".into(),
            Some(E::UnsupportedComponent("\"a\";bs".into())),
        ),
        (
            "req",
            "sig1=(\"@method\";req);keyid=\"k\"".into(),
            "sig1=:AAAA:".into(),
            None,
        ),
        (
            "tr",
            "sig1=(\"a\";tr);keyid=\"k\"".into(),
            "sig1=:AAAA:".into(),
            None,
        ),
        (
            "status",
            "sig1=(\"@status\");keyid=\"k\"".into(),
            "sig1=:AAAA:".into(),
            None,
        ),
        (
            "sig-params",
            "sig1=(\"@signature-params\");keyid=\"k\"".into(),
            "sig1=:AAAA:".into(),
            None,
        ),
        (
            "upper field",
            "sig1=(\"Date\");keyid=\"k\"".into(),
            "sig1=:AAAA:".into(),
            None,
        ),
        (
            "bad field",
            "sig1=(\"a b\");keyid=\"k\"".into(),
            "sig1=:AAAA:".into(),
            None,
        ),
        (
            "qp no name",
            "sig1=(\"@query-param\");keyid=\"k\"".into(),
            "sig1=:AAAA:".into(),
            None,
        ),
        ("empty input", " ".into(), "sig1=:AAAA:".into(), None),
    ];
    for (name, input, sig, want) in cases {
        let mut f = Fixture::post();
        f.set("signature-input", &input);
        if !sig.is_empty() {
            f.set("signature", &sig);
        }
        let err = f.check().expect_err(name);
        if let Some(want) = want {
            assert_eq!(err, want, "{name}");
        }
        assert!(
            err.is_bad_request() || matches!(err, E::Mismatch | E::MissingParameter(_)),
            "{name}: {err:?}"
        );
        assert!(!err.to_string().contains("AAAA"), "{name}");
    }
    let f = Fixture::post();
    assert_eq!(f.check().unwrap_err(), E::Missing);
    assert!(!E::Missing.is_bad_request());
    // A covered header absent from the request, and a missing query parameter.
    let mut f = Fixture::post();
    f.set("x-missing", "v");
    let mut f = f.signed(&[
        "@method",
        "@authority",
        "@target-uri",
        "content-digest",
        "x-missing",
    ]);
    f.check().unwrap();
    f.headers.remove("x-missing");
    assert_eq!(
        f.check().unwrap_err(),
        E::MissingComponent("\"x-missing\"".into())
    );
    let g = Fixture::get();
    let err = sign(
        &g.req(),
        &["\"@query-param\";name=\"a\""],
        KEY_ID,
        SECRET,
        NOW,
        None,
    )
    .unwrap_err();
    assert!(matches!(err, E::MissingComponent(_)));
}

#[test]
fn non_ascii_and_garbage_bytes() {
    for raw in [
        &b"sig1=(\"\xc3\xa9\")"[..],
        b"\xff\xfe",
        b"sig1=(\"@method\");keyid=\"\t\"",
    ] {
        let mut h = HeaderMap::new();
        h.insert("signature-input", HeaderValue::from_bytes(raw).unwrap());
        h.insert("signature", HeaderValue::from_static("sig1=:AAAA:"));
        assert!(parse(&h, &SignaturePolicy::default()).is_err());
    }
}

#[test]
fn mutations_never_panic() {
    let f = Fixture::post().signed(&[
        "@method",
        "@authority",
        "@target-uri",
        "content-digest",
        "\"@query-param\";name=\"Pet\"",
        "\"content-digest\";key=\"sha-256\"",
    ]);
    let policy = SignaturePolicy::default();
    assert!(
        !format!("{:?}", parse(&f.headers, &policy).unwrap()).contains(
            f.headers["signature"]
                .to_str()
                .unwrap()
                .trim_start_matches("sig1=:")
                .trim_end_matches(':')
        )
    );
    let mut accepted = 0;
    for name in ["signature-input", "signature", "content-digest"] {
        let orig = f.headers[name].as_bytes().to_vec();
        for i in 0..orig.len() {
            for b in [
                b' ', b',', b'"', b'(', b')', b';', b'=', b':', b'\\', b'a', b'9', b'*',
            ] {
                let mut m = orig.clone();
                m[i] = b;
                for cut in [m.len(), i + 1] {
                    let mut g = HeaderMap::new();
                    g.clone_from(&f.headers);
                    g.insert(name, HeaderValue::from_bytes(&m[..cut]).unwrap());
                    let Ok(p) = parse(&g, &policy) else { continue };
                    let req = SignatureRequest {
                        headers: &g,
                        ..f.req()
                    };
                    if verify(&req, &p, &PrekeyedHmac::new(SECRET), &policy, NOW).is_ok()
                        && m[..cut] != orig[..]
                    {
                        // Only a Signature with its `=` padding dropped (same bytes,
                        // RFC 8941 §3.3.5) may still verify.
                        let strip = |v: &[u8]| {
                            v.iter()
                                .filter(|c| **c != b'=')
                                .copied()
                                .collect::<Vec<u8>>()
                        };
                        assert_eq!(name, "signature");
                        assert_eq!(strip(&m[..cut]), strip(&orig));
                        accepted += 1;
                    }
                }
            }
        }
    }
    assert!(accepted <= 2, "{accepted}");
}
