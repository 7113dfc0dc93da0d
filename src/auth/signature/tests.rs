//! Tests: RFC 9421 Appendix B.2.5 vector, round trips and signature selection.
//! malformed-input tables.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, Mac};
use http::{HeaderMap, HeaderValue, Method};
use sha2::Sha256;

use super::*;

/// RFC 9421 Appendix B.1.5 `test-shared-secret`.
const RFC_SHARED_SECRET: &str =
    "uzvJfB4u3N0Jy4T7NZ75MDVcr8zSTInedJtkgcu46YW4XByzNJjxBdtjUkdJPBtbmHhIDi6pcl8jsasjlTMtDQ==";
const RFC_B25_BASE: &str = "\"date\": Tue, 20 Apr 2021 02:07:55 GMT\n\
\"@authority\": example.com\n\
\"content-type\": application/json\n\
\"@signature-params\": (\"date\" \"@authority\" \"content-type\");created=1618884473;keyid=\"test-shared-secret\"";
const RFC_B25_SIG: &str = "pxcQw6G3AjtMBQjwo8XzkZf/bws5LelbaMk5rGIGtE8=";

pub(super) const SECRET: &[u8] = b"client-secret-value";
pub(super) const KEY_ID: &str = "client-1";
pub(super) const NOW: i64 = 1_700_000_000;
pub(super) const BODY: &[u8] = br#"{"hello": "world"}"#;
pub(super) const FULL: &[&str] = &[
    "@method",
    "@authority",
    "@target-uri",
    "content-digest",
    "content-type",
];

pub(super) struct Fixture {
    pub(super) method: Method,
    pub(super) scheme: String,
    pub(super) authority: String,
    pub(super) path: String,
    pub(super) query: Option<String>,
    pub(super) headers: HeaderMap,
    pub(super) body: Vec<u8>,
}

impl Fixture {
    /// RFC 9421 Appendix B.2 test request.
    pub(super) fn rfc() -> Self {
        let mut headers = HeaderMap::new();
        headers.insert("host", HeaderValue::from_static("example.com"));
        headers.insert(
            "date",
            HeaderValue::from_static("Tue, 20 Apr 2021 02:07:55 GMT"),
        );
        headers.insert("content-type", HeaderValue::from_static("application/json"));
        headers.insert("content-digest", HeaderValue::from_static("sha-512=:WZDPaVn/7XgHaAy8pmojAkGWoRx2UFChF41A2svX+TaPm+AbwAgBWnrIiYllu7BNNyealdVLvRwEmTHWXvJwew==:"));
        headers.insert("content-length", HeaderValue::from_static("18"));
        Self {
            method: Method::POST,
            scheme: "https".into(),
            authority: "example.com".into(),
            path: "/foo".into(),
            query: Some("param=Value&Pet=dog".into()),
            headers,
            body: BODY.to_vec(),
        }
    }

    pub(super) fn post() -> Self {
        let mut f = Self::rfc();
        f.authority = "api.example.com".into();
        f.headers.insert(
            "content-digest",
            content_digest_header(BODY).parse().unwrap(),
        );
        f
    }

    pub(super) fn get() -> Self {
        let mut f = Self::post();
        f.method = Method::GET;
        f.query = None;
        f.headers.remove("content-length");
        f.headers.remove("content-digest");
        f.body.clear();
        f
    }

    pub(super) fn req(&self) -> SignatureRequest<'_> {
        SignatureRequest {
            method: &self.method,
            scheme: &self.scheme,
            authority: &self.authority,
            path: &self.path,
            query: self.query.as_deref(),
            headers: &self.headers,
            has_body: SignatureRequest::body_present(&self.headers),
        }
    }

    pub(super) fn signed(mut self, components: &[&str]) -> Self {
        let (input, sig) = sign(&self.req(), components, KEY_ID, SECRET, NOW, Some("n-1")).unwrap();
        self.headers
            .insert("signature-input", input.parse().unwrap());
        self.headers.insert("signature", sig.parse().unwrap());
        self
    }

    pub(super) fn set(&mut self, name: &'static str, value: &str) {
        self.headers
            .insert(name, HeaderValue::from_str(value).unwrap());
    }

    pub(super) fn input(&self) -> String {
        self.headers["signature-input"].to_str().unwrap().to_owned()
    }

    /// parse + verify + body digest check, as the proxy does.
    pub(super) fn check_with(
        &self,
        policy: &SignaturePolicy,
        now: i64,
    ) -> Result<Verified, SignatureError> {
        let parsed = parse(&self.headers, policy)?;
        // Key lookup: another client id has another secret.
        let secret: &[u8] = if parsed.key_id() == KEY_ID {
            SECRET
        } else {
            b"someone-else"
        };
        let v = verify(
            &self.req(),
            &parsed,
            &PrekeyedHmac::new(secret),
            policy,
            now,
        )?;
        if let Some(d) = &v.content_digest {
            d.check(&self.body)?;
        }
        Ok(v)
    }

    pub(super) fn check(&self) -> Result<Verified, SignatureError> {
        self.check_with(&SignaturePolicy::default(), NOW)
    }
}

#[test]
fn rfc9421_b25_hmac_sha256() {
    let mut f = Fixture::rfc();
    f.set("signature-input", "sig-b25=(\"date\" \"@authority\" \"content-type\");created=1618884473;keyid=\"test-shared-secret\"");
    f.set("signature", &format!("sig-b25=:{RFC_B25_SIG}:"));
    let parsed = parse(&f.headers, &SignaturePolicy::default()).unwrap();
    assert_eq!(parsed.key_id(), "test-shared-secret");
    assert_eq!(parsed.label(), "sig-b25");
    assert_eq!(parsed.created(), Some(1_618_884_473));
    let base = base::signature_base(&f.req(), &parsed.components, &parsed.params).unwrap();
    assert_eq!(base, RFC_B25_BASE);
    let key = STANDARD.decode(RFC_SHARED_SECRET).unwrap();
    let mut mac = Hmac::<Sha256>::new_from_slice(&key).unwrap();
    mac.update(RFC_B25_BASE.as_bytes());
    assert_eq!(STANDARD.encode(mac.finalize().into_bytes()), RFC_B25_SIG);

    let relaxed = SignaturePolicy {
        require_coverage: false,
        ..SignaturePolicy::default()
    };
    let key = PrekeyedHmac::new(&key);
    let v = verify(&f.req(), &parsed, &key, &relaxed, 1_618_884_473).unwrap();
    assert!(v.content_digest.is_none());
    // The product policy rejects it: it covers neither @method nor the target.
    assert_eq!(
        verify(
            &f.req(),
            &parsed,
            &key,
            &SignaturePolicy::default(),
            1_618_884_473
        )
        .unwrap_err(),
        SignatureError::MissingCoverage("@method")
    );
    assert_eq!(
        verify(
            &f.req(),
            &parsed,
            &PrekeyedHmac::new(b"wrong"),
            &relaxed,
            1_618_884_473
        )
        .unwrap_err(),
        SignatureError::Mismatch
    );
}

#[test]
fn round_trip_post_and_get() {
    let f = Fixture::post().signed(FULL);
    let v = f.check().unwrap();
    let d = v.content_digest.unwrap();
    assert_eq!(d.algorithm(), digest::DigestAlgorithm::Sha256);
    let parsed = parse(&f.headers, &SignaturePolicy::default()).unwrap();
    assert_eq!(parsed.nonce(), Some("n-1"));
    assert!(parsed.covers("@target-uri") && !parsed.covers("@path"));
    assert!(
        f.input()
            .contains(";created=1700000000;keyid=\"client-1\";alg=\"hmac-sha256\";nonce=\"n-1\"")
    );

    let g = Fixture::get().signed(&["@method", "@authority", "@path"]);
    assert!(g.check().unwrap().content_digest.is_none());
    // Random nonce when none is given.
    let (a, _) = sign(&g.req(), &["@method"], KEY_ID, SECRET, NOW, None).unwrap();
    let (b, _) = sign(&g.req(), &["@method"], KEY_ID, SECRET, NOW, None).unwrap();
    assert_ne!(a, b);
}

#[test]
fn round_trip_other_components() {
    let comps = [
        "@method",
        "@authority",
        "@path",
        "@query",
        "@scheme",
        "@request-target",
        "\"@query-param\";name=\"Pet\"",
        "content-digest",
        "\"content-digest\";sf",
        "\"content-digest\";key=\"sha-256\"",
        "date",
    ];
    let mut f = Fixture::post();
    f.headers
        .append("date", HeaderValue::from_static("second line"));
    f.check().unwrap_err();
    let f = f.signed(&comps);
    f.check().unwrap();
    let p = parse(&f.headers, &SignaturePolicy::default()).unwrap();
    assert!(p.covers("\"content-digest\";sf") && !p.covers("\"date\";sf"));
    assert_eq!(p.components().count(), comps.len());
}

#[test]
fn selection_among_signatures() {
    let f = Fixture::post().signed(FULL);
    let input = f.input().replace("sig1=", "");
    let sig = f.headers["signature"]
        .to_str()
        .unwrap()
        .replace("sig1=", "");
    let mut g = Fixture::post();
    // First label without keyid is skipped; the second (with keyid) is chosen.
    g.set(
        "signature-input",
        &format!("a=(\"@method\");created={NOW}, b={input}, c={input}"),
    );
    g.set("signature", &format!("a=:AAAA:, b={sig}, c=:AAAA:"));
    assert_eq!(
        parse(&g.headers, &SignaturePolicy::default())
            .unwrap()
            .label(),
        "b"
    );
    g.check().unwrap();
    let pick_c = SignaturePolicy {
        label: Some("c".into()),
        ..SignaturePolicy::default()
    };
    assert_eq!(
        g.check_with(&pick_c, NOW).unwrap_err(),
        SignatureError::Mismatch
    );
    // Across header lines.
    let mut h = Fixture::post();
    h.headers.append(
        "signature-input",
        HeaderValue::from_str(&format!("x={input}")).unwrap(),
    );
    h.headers.append(
        "signature-input",
        HeaderValue::from_str(&format!("y={input}")).unwrap(),
    );
    h.headers.append(
        "signature",
        HeaderValue::from_str(&format!("y=:AAAA:, x={sig}")).unwrap(),
    );
    assert_eq!(
        parse(&h.headers, &SignaturePolicy::default())
            .unwrap()
            .label(),
        "x"
    );
    h.check().unwrap();
    // No label carries a keyid.
    let mut n = Fixture::post();
    n.set("signature-input", "a=(\"@method\"), b=(\"@path\")");
    n.set("signature", "a=:AAAA:, b=:AAAA:");
    assert_eq!(
        n.check().unwrap_err(),
        SignatureError::MissingParameter("keyid")
    );
}

#[test]
fn repeated_parameters_overwrite_in_place() {
    // RFC 9651 §4.2.3.2: a repeated parameter key overwrites its value where it first appeared; the
    // `@signature-params` line serializes the parameters as parsed, so each key once.
    let mut f = Fixture::get();
    f.set(
        "signature-input",
        "sig1=(\"@method\" \"content-type\";sf;sf);keyid=\"x\";created=1;keyid=\"k\"",
    );
    f.set("signature", "sig1=:AAAA:");
    let p = parse(&f.headers, &SignaturePolicy::default()).unwrap();
    assert_eq!(p.key_id(), "k");
    assert_eq!(p.created(), Some(1));
    assert_eq!(
        p.params,
        "(\"@method\" \"content-type\";sf);keyid=\"k\";created=1"
    );
    assert_eq!(
        p.components().collect::<Vec<_>>(),
        ["\"@method\"", "\"content-type\";sf"]
    );
    // Members that are not selected are read but not checked for shape.
    let mut g = Fixture::get();
    g.set(
        "signature-input",
        "other=?1;a=2, sig1=(\"@method\");keyid=\"k\"",
    );
    g.set("signature", "other=(1 2), sig1=:AAAA:");
    let policy = SignaturePolicy {
        label: Some("sig1".into()),
        ..SignaturePolicy::default()
    };
    assert_eq!(parse(&g.headers, &policy).unwrap().label(), "sig1");
    let pick_other = SignaturePolicy {
        label: Some("other".into()),
        ..SignaturePolicy::default()
    };
    assert_eq!(
        parse(&g.headers, &pick_other).unwrap_err(),
        SignatureError::Malformed("Signature-Input member is not an inner list")
    );
}
