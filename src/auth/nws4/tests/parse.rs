//! `Authorization` parsing (§1.4, §5.2, §7.3) and canonical-form edge cases (§1.2, §6, §7.8, §7.9).

use super::*;

const SIG: &str = "87c7a2057285f0db8dc3b7c95c15fe5476f5ab44b73b3e15990d8b1a837d4ddb";
const UPPER: &str = "NWS4-HMAC-SHA256 Credential%3Dd948ec22e47790caacce234b792a0f117d85c365%2CSignedHeaders%3Daccept%253Bcontent-type%253Bhost%253Bx-nd-content-sha256%253Bx-nd-date%2CTimestamp%3D2023-05-30T13%253A17%253A01.992Z%2CSignature%3D87c7a2057285f0db8dc3b7c95c15fe5476f5ab44b73b3e15990d8b1a837d4ddb";

fn expect_v1(creds: &Nws4Credentials) {
    assert_eq!(
        creds.client_id(),
        "d948ec22e47790caacce234b792a0f117d85c365"
    );
    assert_eq!(
        creds.signed_headers().iter().collect::<Vec<_>>(),
        [
            "accept",
            "content-type",
            "host",
            "x-nd-content-sha256",
            "x-nd-date"
        ]
    );
    assert_eq!(creds.timestamp(), "2023-05-30T13:17:01.992Z");
    assert_eq!(hex::encode(creds.signature()), SIG);
}

#[test]
fn parses_every_escaping_style() {
    let lower = UPPER
        .replace("%3D", "%3d")
        .replace("%2C", "%2c")
        .replace("%253B", "%253b")
        .replace("%253A", "%253a");
    let single = format!(
        "NWS4-HMAC-SHA256 Credential=d948ec22e47790caacce234b792a0f117d85c365,SignedHeaders=accept%3Bcontent-type%3Bhost%3Bx-nd-content-sha256%3Bx-nd-date,Timestamp=2023-05-30T13%3A17%3A01.992Z,Signature={SIG}"
    );
    let raw = format!(
        "NWS4-HMAC-SHA256 Credential=d948ec22e47790caacce234b792a0f117d85c365,SignedHeaders=accept;content-type;host;x-nd-content-sha256;x-nd-date,Timestamp=2023-05-30T13:17:01.992Z,Signature={SIG}"
    );
    let mixed = UPPER
        .replacen("%2C", "%2c", 1)
        .replacen("%253B", "%253b", 2);
    // Upper-case names in the list are lower-cased with ASCII rules (§7.11).
    let upper_names = UPPER.replace("content-type", "Content-Type");
    for value in [UPPER, &lower, &single, &raw, &mixed, &upper_names] {
        expect_v1(&Nws4Credentials::parse(value).unwrap());
        let params = value.strip_prefix("NWS4-HMAC-SHA256 ").unwrap();
        expect_v1(&Nws4Credentials::parse_params(params).unwrap());
    }
}

#[test]
fn long_credentials_parse_whole_past_the_inline_text_and_stack_room() {
    let names: Vec<String> = (0..60).map(|i| format!("x-h{i:02}")).collect();
    // A 150-character id: the text spills to the heap, the decoding stays on the stack; 256 characters and 60
    // names: both on the heap.
    for (id_len, list) in [(150, &names[..3]), (256, &names[..])] {
        let id = "a".repeat(id_len);
        let value = UPPER
            .replace("d948ec22e47790caacce234b792a0f117d85c365", &id)
            .replace(
                "accept%253Bcontent-type%253Bhost%253Bx-nd-content-sha256%253Bx-nd-date",
                &list.join("%253B"),
            );
        let creds = Nws4Credentials::parse(&value).unwrap();
        assert_eq!(creds.client_id(), id);
        assert_eq!(creds.signed_headers().iter().collect::<Vec<_>>(), list);
        assert_eq!(creds.timestamp(), "2023-05-30T13:17:01.992Z");
        assert_eq!(hex::encode(creds.signature()), SIG);
    }
}

#[test]
fn plus_decodes_to_space_like_webutility() {
    // `+` is a space (§7.3), so a `+` inside the list yields an invalid header name.
    let value = UPPER.replace("accept%253B", "accept%253B+");
    assert!(matches!(
        Nws4Credentials::parse(&value),
        Err(Nws4Error::Malformed(_))
    ));
}

#[test]
fn foreign_or_case_variant_scheme_is_wrong_scheme() {
    for value in [
        "Bearer abc",
        "Basic Zm9vOmJhcg==",
        "nws4-hmac-sha256 Credential%3Dx",
        "NWS4-HMAC-SHA256\tCredential%3Dx",
        "",
        " NWS4-HMAC-SHA256 x",
        "AWS4-HMAC-SHA256 Credential=x",
    ] {
        assert_eq!(
            Nws4Credentials::parse(value),
            Err(Nws4Error::WrongScheme),
            "{value:?}"
        );
    }
}

#[test]
fn rejects_malformed_parameters() {
    let cases: Vec<String> = vec![
        "NWS4-HMAC-SHA256".into(),
        "NWS4-HMAC-SHA256 ".into(),
        // Reordered, missing or renamed parameters (§7.3: fixed order, exact names).
        UPPER.replace("Credential", "credential"),
        UPPER.replace("%2CSignature%3D", "%2CSig%3D"),
        format!(
            "NWS4-HMAC-SHA256 SignedHeaders=host,Credential=a,Timestamp=2023-05-30T13:17:01.992Z,Signature={SIG}"
        ),
        // Extra space after the scheme.
        UPPER.replacen(' ', "  ", 1),
        // Signature: upper-case hex, short, long, non-hex (§7.12).
        UPPER.replace(SIG, &SIG.to_uppercase()),
        UPPER.replace(SIG, &SIG[..63]),
        format!("{UPPER}0"),
        UPPER.replace(SIG, &SIG.replace('8', "g")),
        // Client id: empty, with space, with a comma.
        UPPER.replace("d948ec22e47790caacce234b792a0f117d85c365", ""),
        UPPER.replace("d948ec22e47790caacce234b792a0f117d85c365", "d948%20ec"),
        UPPER.replace("d948ec22e47790caacce234b792a0f117d85c365", "d9%252C48"),
        // Header list: duplicate, case-variant duplicate, empty name, empty list, bad token.
        UPPER.replace("accept%253B", "host%253B"),
        UPPER.replace("accept%253B", "HOST%253B"),
        UPPER.replace("accept%253B", "%253B"),
        UPPER.replace(
            "accept%253Bcontent-type%253Bhost%253Bx-nd-content-sha256%253Bx-nd-date",
            "",
        ),
        UPPER.replace("accept%253B", "acc%2540ept%253B"),
        // Not UTF-8 after decoding.
        UPPER.replace("accept", "acc%FFept"),
        UPPER.replace("Credential%3D", "Credential%3D%C3"),
    ];
    for value in &cases {
        let err = Nws4Credentials::parse(value).unwrap_err();
        assert!(
            matches!(err, Nws4Error::Malformed(_)),
            "{value:?} gave {err:?}"
        );
    }
}

#[test]
fn signed_headers_hold_at_most_64_names() {
    // The list has 4 names after `accept`: 60 more make 64, 61 make 65.
    let with_extra = |n: usize| {
        let extra: String = (0..n).map(|i| format!("h{i}%253B")).collect();
        UPPER.replace("accept%253B", &extra)
    };
    let creds = Nws4Credentials::parse(&with_extra(60)).unwrap();
    assert_eq!(creds.signed_headers().iter().count(), 64);
    assert_eq!(
        Nws4Credentials::parse(&with_extra(61)),
        Err(Nws4Error::Malformed("SignedHeaders lists too many headers"))
    );
}

#[test]
fn rejects_timestamps_not_in_the_exact_fff_z_form() {
    for ts in [
        "2023-05-30T13:17:01Z",
        "2023-05-30T13:17:01.99Z",
        "2023-05-30T13:17:01.9920Z",
        "2023-05-30T13:17:01.992+00:00",
        "2023-05-30 13:17:01.992Z",
        "2023-05-30t13:17:01.992z",
        "2023-02-30T13:17:01.992Z",
        "2023-05-30T24:00:00.000Z",
        "2023-05-30T13:17:60.000Z",
        "2023-05-30T13:17:01.992Z ",
        "",
    ] {
        let encoded: String =
            percent_encoding::utf8_percent_encode(ts, canonical::RFC3986).collect();
        let value = UPPER.replace(
            "2023-05-30T13%253A17%253A01.992Z",
            &encoded.replace('%', "%25"),
        );
        let err = Nws4Credentials::parse(&value).unwrap_err();
        assert_eq!(err, Nws4Error::BadTimestamp, "{ts:?}");
    }
}

#[test]
fn malformed_values_never_panic() {
    // Every prefix of a valid value, with every byte position also replaced by awkward characters.
    let mut inputs: Vec<String> = (0..UPPER.len()).map(|i| UPPER[..i].to_owned()).collect();
    for i in 0..UPPER.len() {
        for c in ["%", "%2", "+", ",", "=", "\u{0}", "é", " "] {
            inputs.push(format!("{}{c}{}", &UPPER[..i], &UPPER[i + 1..]));
        }
    }
    // Simple LCG noise over a small alphabet that hits the parser's markers.
    let alphabet: Vec<char> =
        "%23DCabf019,=;+ NWS4-HMAC-SHA256Credential=SignedHeaders=Timestamp=Signature=é\u{7f}"
            .chars()
            .collect();
    let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
    for _ in 0..2_000 {
        let mut s = String::from("NWS4-HMAC-SHA256 ");
        seed = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
        for _ in 0..(seed >> 58) * 4 {
            seed = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
            s.push(alphabet[(seed >> 33) as usize % alphabet.len()]);
        }
        inputs.push(s);
    }
    inputs.push(format!("NWS4-HMAC-SHA256 {}", "%".repeat(10_000)));
    inputs.push(format!(
        "NWS4-HMAC-SHA256 Credential=a,SignedHeaders={},Timestamp=x,Signature=y",
        "h;".repeat(5_000)
    ));
    let mut accepted = 0;
    for input in &inputs {
        if Nws4Credentials::parse(input).is_ok() {
            accepted += 1;
        }
    }
    // Only the untouched value (and substitutions that land on no-op positions) may parse.
    assert!(
        accepted < inputs.len() / 10,
        "{accepted} of {} parsed",
        inputs.len()
    );
}

#[test]
fn debug_and_errors_never_show_the_signature() {
    let creds = Nws4Credentials::parse(UPPER).unwrap();
    let debug = format!("{creds:?}");
    assert!(
        !debug.contains(SIG) && !debug.contains(&SIG[..16]),
        "{debug}"
    );
    assert!(debug.contains("<redacted>"));
}

#[test]
fn canonical_query_edge_cases() {
    let cases = [
        (None, ""),
        (Some(""), ""),
        (Some("validate"), "validate="),
        (Some("a=1&"), "=&a=1"),
        (Some("t=YQ=="), "t=YQ"),
        (Some("i=1$ref=1"), "i=1%24ref"),
        // Stable sort by key only: repeated keys keep their order (C#, §1.2 step 3).
        (Some("b=2&a=1&b=1"), "a=1&b=2&b=1"),
        // Existing escapes are encoded again; `+` is not a space here (§7.9).
        (Some("q=a+b%20c"), "q=a%2Bb%2520c"),
        (Some("p=/x:y"), "p=%2Fx%3Ay"),
        (Some("~k=-_."), "~k=-_."),
        (Some("B=1&a=2&_=3"), "B=1&_=3&a=2"),
    ];
    for (raw, expected) in cases {
        assert_eq!(canonical_query(raw), expected, "{raw:?}");
    }
}

#[test]
fn canonical_path_edge_cases() {
    assert_eq!(canonical_path(""), "/");
    assert_eq!(canonical_path("/"), "/");
    assert_eq!(canonical_path("/a%20b"), "/a%2520b");
    assert_eq!(canonical_path("/a:b/c~d"), "/a:b/c~d");
    assert_eq!(canonical_path("//a/./b/../c"), "//a/./b/../c");
    assert_eq!(canonical_path("/a b+c$"), "/a%20b%2Bc%24");
    assert_eq!(
        canonical::php_path_candidate("/a:b/c"),
        Some("/a%3Ab/c".to_owned())
    );
    assert_eq!(canonical::php_path_candidate("/a/b"), None);
    assert_eq!(canonical::php_path_candidate("//a:b"), None);
}

#[test]
fn header_values_fold_whitespace_runs_and_trim() {
    assert_eq!(fold_header_value("  a \t b   c  "), "a b c");
    assert_eq!(fold_header_value(""), "");
    assert_eq!(fold_header_value("x"), "x");
}

#[test]
fn timestamp_formats_with_truncated_milliseconds() {
    let t = DateTime::parse_from_rfc3339("2023-05-30T13:17:01.9929999Z")
        .unwrap()
        .to_utc();
    assert_eq!(format_timestamp(t), "2023-05-30T13:17:01.992Z");
    let t = DateTime::parse_from_rfc3339("2023-05-30T13:17:01Z")
        .unwrap()
        .to_utc();
    assert_eq!(format_timestamp(t), "2023-05-30T13:17:01.000Z");
}

#[test]
fn signing_key_uses_secret_text_and_timestamp_date() {
    // Same day, different time: same key. Next day: different key (the date, not the server clock, §7.4).
    let a = signing_key("s", "2023-05-30T00:00:00.000Z");
    assert_eq!(a, signing_key("s", "2023-05-30T23:59:59.999Z"));
    assert_ne!(a, signing_key("s", "2023-05-31T00:00:00.000Z"));
    // Short inputs never panic.
    let _ = signing_key("", "");
    let _ = signing_key("s", "2023");
}
