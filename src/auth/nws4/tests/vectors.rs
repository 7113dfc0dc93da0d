//! Known-answer vectors V1, V2, V3, V6 (header part) and V7 of NWS4.md §2–§3, byte for byte.

use super::*;

const V1_ID: &str = "d948ec22e47790caacce234b792a0f117d85c365";
const V1_SECRET: &str = "5070adfb2bedf1c0c97d5c8cfa8c794d513249b802ea10596a175d88828abc19";
const V1_TS: &str = "2023-05-30T13:17:01.992Z";
const V1_BODY_SHA: &str = "f498513cc6d902a32254a1d795e2031636dea18dce65ba10e94e83189e50cbb8";
const V1_AUTHORIZATION: &str = "NWS4-HMAC-SHA256 Credential%3Dd948ec22e47790caacce234b792a0f117d85c365%2CSignedHeaders%3Daccept%253Bcontent-type%253Bhost%253Bx-nd-content-sha256%253Bx-nd-date%2CTimestamp%3D2023-05-30T13%253A17%253A01.992Z%2CSignature%3D87c7a2057285f0db8dc3b7c95c15fe5476f5ab44b73b3e15990d8b1a837d4ddb";

/// The 514-byte V2 body: in the C# verbatim string the `\u00e1` escapes are literal text (§3 V2).
const V2_BODY: &str = r#"{"ArticleCategoryLabel":"PLK","Code":8,"Id":"GQR5xWLN","IsActive":true,"IsDiscountAllowed":true,"IsPriceFixed":false,"Name":"Kozmetick\u00e1 ta\u0161ti\u010dka Folk \"CIERNA IV\" Strieborn\u00e1","Description":"Kozmetick\u00e1 ta\u0161ti\u010dka Folk \"CIERNA IV\" Strieborn\u00e1","Codes":["KTF9IV"],"RetailPrice":{"Amount":30,"CurrencyLabel":"EUR"},"StockName":"Polo\u017eky","StockQuantity":{"Amount":0,"Unit":"ks"},"StockValue":{"Amount":0,"CurrencyLabel":"EUR"},"Type":"StockItem","Unit":"ks","VatCategory":1}"#;

fn sha_hex(body: &[u8]) -> String {
    hex::encode(Sha256::digest(body))
}

#[test]
fn v1_canonical_request_string_to_sign_key_and_signature() {
    let body = br#"{"name":"John"}"#;
    assert_eq!(body.len(), 15);
    assert_eq!(sha_hex(body), V1_BODY_SHA);
    let canonical = canonical_request(
        "POST",
        "/api/user",
        Some("i=1$ref=1&validate"),
        &[
            ("Content-Type", "application/json"),
            ("Accept", "application/json"),
            ("x-nd-date", V1_TS),
            ("x-nd-content-sha256", V1_BODY_SHA),
            ("Host", "example.com:8080"),
        ],
        V1_BODY_SHA,
    );
    let expected = "POST\n/api/user\ni=1%24ref&validate=\naccept:application/json\n\
        content-type:application/json\nhost:example.com:8080\n\
        x-nd-content-sha256:f498513cc6d902a32254a1d795e2031636dea18dce65ba10e94e83189e50cbb8\n\
        x-nd-date:2023-05-30T13:17:01.992Z\naccept;content-type;host;x-nd-content-sha256;x-nd-date\n\
        f498513cc6d902a32254a1d795e2031636dea18dce65ba10e94e83189e50cbb8";
    assert_eq!(canonical, expected);
    let sts = string_to_sign(V1_TS, V1_ID, &canonical);
    assert_eq!(
        sts,
        "NWS4-HMAC-SHA256\n2023-05-30T13:17:01.992Z\nd948ec22e47790caacce234b792a0f117d85c365\n\
         669ed6079db48d817f5c2992f21dbbb9e2211e98db4c225facb17fe40511c148"
    );
    let key = signing_key(V1_SECRET, V1_TS);
    assert_eq!(
        hex::encode(key),
        "3512696e1e65f897ce90bfc7e5b8f7b6495798d533163447c6253c8865e94273"
    );
    assert_eq!(
        hex::encode(signature(&key, &sts)),
        "87c7a2057285f0db8dc3b7c95c15fe5476f5ab44b73b3e15990d8b1a837d4ddb"
    );
}

#[test]
fn v1_sign_produces_the_upstream_headers_and_verifies() {
    let given = [
        ("Content-Type", "application/json"),
        ("Accept", "application/json"),
    ];
    let url = "http://example.com:8080/api/user?i=1$ref=1&validate";
    let body = br#"{"name":"John"}"#;
    let signed = Signed::new(Method::POST, url, &given, body, (V1_ID, V1_SECRET), V1_TS);
    assert_eq!(signed.authorization, V1_AUTHORIZATION);
    assert_eq!(signed.headers["x-nd-date"], V1_TS);
    assert_eq!(signed.headers["x-nd-content-sha256"], V1_BODY_SHA);
    assert_eq!(signed.headers["host"], "example.com:8080");
    assert_eq!(signed.headers.len() + 1, 6, "6 headers incl. Authorization");

    let verified = signed.verify_at(V1_SECRET, V1_TS).unwrap();
    assert_eq!(hex::encode(verified.content_sha256), V1_BODY_SHA);
    assert_eq!(verified.signed_at, at(V1_TS));
    assert!(verified.body_matches(body));
    assert!(!verified.body_matches(br#"{"name":"Jane"}"#));
}

#[test]
fn v2_put_signs_and_verifies_with_forwarded_host_only() {
    assert_eq!(V2_BODY.len(), 514);
    assert!(sha_hex(V2_BODY.as_bytes()).starts_with("585dba9e"));
    assert!(sha_hex(V2_BODY.as_bytes()).ends_with("63c7"));
    let given = [
        ("User-Agent", "GuzzleHttp/7"),
        ("Accept-Encoding", "gzip"),
        ("Content-Type", "application/json"),
    ];
    let url = "http://213.160.191.53:4000/api/plus/GQR5xWLN";
    let ts = "2023-05-30T07:37:59.390Z";
    let mut signed = Signed::new(
        Method::PUT,
        url,
        &given,
        V2_BODY.as_bytes(),
        (V1_ID, V1_SECRET),
        ts,
    );
    assert_eq!(
        signed.authorization,
        "NWS4-HMAC-SHA256 Credential%3Dd948ec22e47790caacce234b792a0f117d85c365%2CSignedHeaders%3Daccept-encoding%253Bcontent-type%253Bhost%253Buser-agent%253Bx-nd-content-sha256%253Bx-nd-date%2CTimestamp%3D2023-05-30T07%253A37%253A59.390Z%2CSignature%3D6dc1d647dcbd3c9180fcc5f59d110bdabc94493e1a92ed36deaeddd8e1d512c3"
    );
    assert_eq!(signed.headers.len() + 1, 7);

    // A tunnel rewrites Host; the client's host survives in X-Forwarded-Host (§5.4, §7.10).
    let forwarded = "213.160.191.53:4000";
    signed.headers.insert(
        http::header::HOST,
        HeaderValue::from_static("dr-sam.eu.ngrok.io"),
    );
    signed
        .headers
        .insert("x-forwarded-host", HeaderValue::from_static(forwarded));
    signed.host = "dr-sam.eu.ngrok.io".to_owned();
    assert_eq!(
        signed.verify_at(V1_SECRET, ts),
        Err(Nws4Error::SignatureMismatch),
        "without trusting X-Forwarded-Host the rewritten Host fails"
    );
    signed.host = forwarded.to_owned();
    let verified = signed.verify_at(V1_SECRET, ts).unwrap();
    assert!(verified.body_matches(V2_BODY.as_bytes()));
}

#[test]
fn v3_tenant_header_sorts_last_in_list_and_verifies_via_forwarded_host() {
    let body = b"{\n    \"Key\": \"Value\"\n}";
    assert_eq!(body.len(), 22);
    let keys = (
        "d51fbd43e205b16a806ca2399c7023b8",
        "1adaee8c378449453dcf40625d20d6b65b02f51aa28191df874296c1f13c8243",
    );
    let ts = "2022-02-07T10:47:53.026Z";
    let url = "http://ekasa-cloud-int.ninedigit.sk/api/v1/registrations/receipts";
    let given = [("__tenant", "39ff67bf-0182-4903-c820-2dd75eed9d21")];
    let mut signed = Signed::new(Method::POST, url, &given, body, keys, ts);
    assert_eq!(
        signed.authorization,
        "NWS4-HMAC-SHA256 Credential%3Dd51fbd43e205b16a806ca2399c7023b8%2CSignedHeaders%3Dhost%253Bx-nd-content-sha256%253Bx-nd-date%253B__tenant%2CTimestamp%3D2022-02-07T10%253A47%253A53.026Z%2CSignature%3D6a130431fc7fe63f42821426028af06ba73bbdbb5e1a65e4d54249877603bcfe"
    );
    assert_eq!(signed.headers.len() + 1, 5);
    signed.headers.insert(
        http::header::HOST,
        HeaderValue::from_static("ekasa-cloud-int.ngrok.sk"),
    );
    signed.host = "ekasa-cloud-int.ninedigit.sk".to_owned();
    signed.verify_at(keys.1, ts).unwrap();
    // CRLF line ends do not match the vector (§3 V3).
    let crlf = Signed::new(
        Method::POST,
        url,
        &given,
        b"{\r\n    \"Key\": \"Value\"\r\n}",
        keys,
        ts,
    );
    assert_ne!(crlf.authorization, signed.authorization);
}

#[test]
fn v6_lower_case_capture_verifies_header_part_but_not_a_different_body() {
    let authorization = "NWS4-HMAC-SHA256 Credential%3de525442573684ea95309779ce890167f%2cSignedHeaders%3dhost%253bx-nd-content-sha256%253bx-nd-date%253b__tenant%2cTimestamp%3d2022-10-12T06%253a56%253a15.168Z%2cSignature%3d8f99429c068d85727f7bba5a6f3031b012c448ae91b4b27be7fd3be02f4626a6";
    let claimed = "91872be0ac6227c5202eedf581ef96ab8b7df62f4c13ad7109ca0dd9fbf9d543";
    let ts = "2022-10-12T06:56:15.168Z";
    let headers = header_map([
        ("__tenant", "3a050ef2-858d-e3f6-bb5e-21f031199ee5"),
        ("x-nd-date", ts),
        ("x-nd-content-sha256", claimed),
        ("host", "localhost:5000"),
        ("authorization", authorization),
        ("content-type", "application/json; charset=utf-8"),
        ("content-length", "1722952"),
    ]);
    let creds = Nws4Credentials::parse(authorization).unwrap();
    assert_eq!(creds.client_id(), "e525442573684ea95309779ce890167f");
    assert_eq!(
        creds.signed_headers().iter().collect::<Vec<_>>(),
        ["host", "x-nd-content-sha256", "x-nd-date", "__tenant"]
    );
    let req = Nws4Request {
        method: &Method::POST,
        path: "/api/v1/customers/sync",
        query: None,
        headers: &headers,
        host: "localhost:5000",
    };
    let secret = "9bb989cd09d43be8ca9f636785bbe8df01b8c0a3055d96bcae1aa38bb1aeeb39";
    let now = at("2022-10-12T06:56:16.000Z");
    let verified = verify(&req, &creds, secret, now, SKEW).unwrap();
    assert_eq!(hex::encode(verified.content_sha256), claimed);
    // The captured body does not hash to the claim, so a full verification must fail (§3 V6).
    assert!(!verified.body_matches(b"[{\"tenantId\":\"3a050ef2-858d-e3f6-bb5e-21f031199ee5\"}]"));
}

#[test]
fn v7_tenant_get_byte_for_byte() {
    let id = "8248d4058e36840bea23ebbe3e602f6e";
    let secret = "388e98f5c56728266991583a6f8fcd1b9279cdc00b5c371bffc0ea402b14d954";
    let ts = "2021-06-24T15:47:57.213Z";
    let empty = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
    let tenant = ("__tenant", "39fd0386-1c7b-5fb0-201f-36725cbfcacc");
    let canonical = canonical_request(
        "GET",
        "/api/v1/registrations/receipts/processable/first",
        Some("cashRegisterCode=88812345678900001"),
        &[
            tenant,
            ("host", "localhost:5000"),
            ("x-nd-content-sha256", empty),
            ("x-nd-date", ts),
        ],
        empty,
    );
    let expected = "GET\n/api/v1/registrations/receipts/processable/first\n\
        cashRegisterCode=88812345678900001\n__tenant:39fd0386-1c7b-5fb0-201f-36725cbfcacc\n\
        host:localhost:5000\n\
        x-nd-content-sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855\n\
        x-nd-date:2021-06-24T15:47:57.213Z\nhost;x-nd-content-sha256;x-nd-date;__tenant\n\
        e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
    assert_eq!(canonical, expected);
    assert_eq!(
        sha_hex(canonical.as_bytes()),
        "70af7e67529c7886857965ba15f96bc4fe307da83434457dede9a6466259c18e"
    );
    let sts = string_to_sign(ts, id, &canonical);
    assert_eq!(
        sts,
        format!(
            "NWS4-HMAC-SHA256\n{ts}\n{id}\n70af7e67529c7886857965ba15f96bc4fe307da83434457dede9a6466259c18e"
        )
    );
    let key = signing_key(secret, ts);
    assert_eq!(
        hex::encode(key),
        "3c4890d8351f41ce6632e4609bb8b7e9cb55027bb59ee56b4dddaa6c448b43de"
    );
    let sig = "510cfbf80d0f27e78a51a0e06407cdc6f01e2758dd6aea655fb64387cf252e6f";
    assert_eq!(hex::encode(signature(&key, &sts)), sig);

    let url = "http://localhost:5000/api/v1/registrations/receipts/processable/first?cashRegisterCode=88812345678900001";
    let signed = Signed::new(Method::GET, url, &[tenant], b"", (id, secret), ts);
    assert_eq!(
        signed.authorization,
        format!(
            "NWS4-HMAC-SHA256 Credential%3D{id}%2CSignedHeaders%3Dhost%253Bx-nd-content-sha256%253Bx-nd-date%253B__tenant%2CTimestamp%3D2021-06-24T15%253A47%253A57.213Z%2CSignature%3D{sig}"
        )
    );
    assert_eq!(signed.headers.len() + 1, 5);
    let verified = signed.verify_at(secret, ts).unwrap();
    assert!(verified.body_matches(b""));
}

#[test]
fn header_block_and_list_use_different_sort_orders() {
    let headers = vec![
        ("x-nd-date".to_owned(), "d".to_owned()),
        ("__tenant".to_owned(), "t".to_owned()),
        ("host".to_owned(), "h".to_owned()),
        ("^caret".to_owned(), "c".to_owned()),
    ];
    let (block, list) = canonical::header_block_and_list(&headers);
    assert_eq!(block, "^caret:c\n__tenant:t\nhost:h\nx-nd-date:d");
    assert_eq!(list, "host;x-nd-date;^caret;__tenant");
}
