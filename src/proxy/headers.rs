//! Header rules on the way through: hop-by-hop removal (RFC 9110 §7.6.1), stripping of credentials, of every
//! client-sent context header and of the fields Keyward sets itself, then the fields Keyward adds (the
//! principal's context, forwarding, request id: strip, then add).

use std::fmt::Write as _;
use std::net::SocketAddr;

use http::{HeaderMap, HeaderName, HeaderValue, header};
use smallvec::SmallVec;

use crate::auth::{Principal, nws4};
use crate::config::Scheme;

/// `X-Request-Id`.
pub const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
/// `X-Forwarded-For`.
pub const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
/// `X-Forwarded-Proto`.
pub const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
/// `X-Forwarded-Host`.
pub const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");

/// The names of the fields Keyward adds besides the context ([`AddedFields`]), as statics so that the
/// fields can be handed out by reference.
static ADDED_NAMES: [HeaderName; 4] = [
    X_FORWARDED_FOR,
    X_FORWARDED_PROTO,
    X_FORWARDED_HOST,
    REQUEST_ID,
];

/// Context header suffixes (after the configured prefix).
const CONTEXT_FIELDS: [&str; 7] = [
    "key-id",
    "client-id",
    "key-name",
    "user",
    "device",
    "permissions",
    "scheme",
];

/// The most fields [`AddedFields`] adds to one request: every context field, the three forwarding fields and the
/// request id.
pub const MAX_ADDED_FIELDS: usize = CONTEXT_FIELDS.len() + ADDED_NAMES.len();

/// The context header names for a prefix, built once at start.
#[derive(Clone, Debug)]
pub struct ContextHeaders {
    prefix: String,
    names: [HeaderName; 7],
    /// The `scheme` field's values, by [`Scheme`].
    schemes: [HeaderValue; 3],
}

/// One principal's context under the configured names, sent upstream among the [`AddedFields`].
#[derive(Clone, Copy, Debug)]
pub struct KeyContext<'a> {
    headers: &'a ContextHeaders,
    principal: &'a Principal,
}

// === impl ContextHeaders ===

impl ContextHeaders {
    /// Names for `prefix` (validated as a header-name prefix by config).
    pub fn new(prefix: &str) -> Self {
        let prefix = prefix.to_ascii_lowercase();
        let names = CONTEXT_FIELDS.map(|f| {
            HeaderName::from_bytes(format!("{prefix}{f}").as_bytes())
                .expect("config validated the prefix")
        });
        let schemes = [
            HeaderValue::from_static("bearer"),
            HeaderValue::from_static("nws4"),
            HeaderValue::from_static("rfc9421"),
        ];
        Self {
            prefix,
            names,
            schemes,
        }
    }

    /// The lower-case prefix: a client-sent header under it is spoofed context ([`strip`] removes it).
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// The context of `principal`.
    pub fn of<'a>(&'a self, principal: &'a Principal) -> KeyContext<'a> {
        KeyContext {
            headers: self,
            principal,
        }
    }
}

// === impl KeyContext ===

impl<'a> KeyContext<'a> {
    /// The context fields: the key's non-empty values, then the scheme.
    pub fn fields(&self) -> impl Iterator<Item = (&'a HeaderName, &'a HeaderValue)> + 'a {
        self.key_fields()
            .chain(std::iter::once(self.scheme_field()))
    }

    /// The key's own fields (its non-empty values, encoded once, when it was first used).
    fn key_fields(&self) -> impl Iterator<Item = (&'a HeaderName, &'a HeaderValue)> + 'a {
        self.headers
            .names
            .iter()
            .zip(self.principal.entry.context().iter())
            .filter_map(|(name, value)| Some((name, value.as_ref()?)))
    }

    /// The field naming the scheme the request was authenticated with.
    fn scheme_field(&self) -> (&'a HeaderName, &'a HeaderValue) {
        let scheme = match self.principal.scheme {
            Scheme::Bearer => &self.headers.schemes[0],
            Scheme::Nws4 => &self.headers.schemes[1],
            Scheme::Rfc9421 => &self.headers.schemes[2],
        };
        (&self.headers.names[6], scheme)
    }

    /// Write the fields as `name: value` lines. The key's own lines are the same on every request, so the
    /// key's cache entry keeps them written: one copy instead of six field writes (about 500 instructions).
    pub fn write_lines(&self, out: &mut Vec<u8>) {
        let write_key_fields = |out: &mut Vec<u8>| {
            for (name, value) in self.key_fields() {
                write_field(out, name, value);
            }
        };
        let kept = self
            .principal
            .entry
            .context_lines(&self.headers.prefix, || {
                let mut lines = Vec::new();
                write_key_fields(&mut lines);
                lines
            });
        match kept {
            Some(lines) => out.extend_from_slice(lines),
            None => write_key_fields(out),
        }
        let (name, value) = self.scheme_field();
        write_field(out, name, value);
    }
}

/// Every field Keyward adds to a request on its way upstream: the principal's context, `X-Forwarded-For`,
/// `-Proto` and `-Host`, and `X-Request-Id`. [`strip`] has removed every client-sent field of these names
/// (what is kept of them was read first, into [`Forwarded`] and the request id), so none meets a field of the
/// same name: the lean upstream exchange writes them straight after the request's own fields (no hashed
/// inserts), any other path inserts them into the header map. Both take them from [`AddedFields::fields`].
#[derive(Clone, Debug)]
pub struct AddedFields<'a> {
    /// The principal's context; `None` on a route without authentication.
    pub context: Option<KeyContext<'a>>,
    /// The forwarding fields.
    pub forwarded: Forwarded,
    /// The request id (the client's own if it was usable).
    pub request_id: &'a HeaderValue,
}

/// `X-Forwarded-For`, `-Proto` and `-Host` for one request.
#[derive(Clone, Debug)]
pub struct Forwarded {
    for_: HeaderValue,
    proto: HeaderValue,
    host: Option<HeaderValue>,
}

// === impl AddedFields ===

impl AddedFields<'_> {
    /// The fields, context first.
    pub fn fields(&self) -> impl Iterator<Item = (&HeaderName, &HeaderValue)> + '_ {
        self.context
            .iter()
            .flat_map(KeyContext::fields)
            .chain(self.request_fields())
    }

    /// The fields of this request rather than of its key: forwarding and the request id.
    fn request_fields(&self) -> impl Iterator<Item = (&HeaderName, &HeaderValue)> + '_ {
        let [for_, proto, host, request_id] = &ADDED_NAMES;
        let f = &self.forwarded;
        [(for_, &f.for_), (proto, &f.proto)]
            .into_iter()
            .chain(f.host.as_ref().map(|v| (host, v)))
            .chain(std::iter::once((request_id, self.request_id)))
    }

    /// Insert the fields into `headers` (a clone of a name or value is a reference count).
    pub fn insert_into(&self, headers: &mut HeaderMap) {
        // One growth of the map for them all.
        headers.reserve(MAX_ADDED_FIELDS);
        for (name, value) in self.fields() {
            headers.insert(name.clone(), value.clone());
        }
    }

    /// Write the fields as `name: value` lines, as the lean exchange sends them (the same fields, in the same
    /// order, as [`AddedFields::fields`]).
    pub fn write_lines(&self, out: &mut Vec<u8>) {
        if let Some(context) = &self.context {
            context.write_lines(out);
        }
        for (name, value) in self.request_fields() {
            write_field(out, name, value);
        }
    }
}

// === impl Forwarded ===

impl Forwarded {
    /// The values for a request from `peer` over `proto` (`http` or `https`) naming `host`. With `trust` the
    /// client's own values count: its `X-Forwarded-For` is appended to, its `-Proto` and `-Host` are kept.
    /// Read from `headers` before [`strip`] removes the client's fields.
    pub fn new(
        headers: &HeaderMap,
        peer: SocketAddr,
        proto: &str,
        host: Option<HeaderValue>,
        trust: bool,
    ) -> Self {
        let client = |name: &HeaderName| trust.then(|| headers.get(name)).flatten();
        let for_ = client(&X_FORWARDED_FOR)
            .and_then(|v| v.to_str().ok())
            .and_then(|prior| HeaderValue::from_str(&format!("{prior}, {}", peer.ip())).ok())
            .unwrap_or_else(|| peer_value(peer.ip()));
        let proto = client(&X_FORWARDED_PROTO).cloned().unwrap_or_else(|| {
            HeaderValue::from_static(if proto == "https" { "https" } else { "http" })
        });
        let host = client(&X_FORWARDED_HOST).cloned().or(host);
        Self { for_, proto, host }
    }
}

/// Bytes [`write_field`] adds around a field's name and value.
const FIELD_FRAMING: usize = b": ".len() + b"\r\n".len();

/// The length of the line [`write_field`] writes for `name` and `value`.
pub fn field_len(name: &HeaderName, value: &HeaderValue) -> usize {
    name.as_str().len() + value.len() + FIELD_FRAMING
}

/// One `name: value\r\n` field line.
pub fn write_field(out: &mut Vec<u8>, name: &HeaderName, value: &HeaderValue) {
    out.extend_from_slice(name.as_str().as_bytes());
    out.extend_from_slice(b": ");
    out.extend_from_slice(value.as_bytes());
    out.extend_from_slice(b"\r\n");
}

/// The context values of a key in header order (key id, client id, name, user, device, permissions), encoded
/// once; an empty value is `None` and sends no header.
pub fn context_values(key: &crate::keys::ApiKey) -> [Option<HeaderValue>; 6] {
    let permissions = key.permissions.join(",");
    [
        key.id.as_str(),
        key.client_id.as_str(),
        key.name.as_str(),
        key.user_name.as_deref().unwrap_or(""),
        key.device_name.as_deref().unwrap_or(""),
        permissions.as_str(),
    ]
    .map(|v| (!v.is_empty()).then(|| context_value(v)))
}

/// A header value: visible ASCII and spaces pass; anything else (and `%`) is percent-encoded UTF-8 (DESIGN.md §6).
pub fn context_value(text: &str) -> HeaderValue {
    if text
        .bytes()
        .all(|b| (b' '..=b'~').contains(&b) && b != b'%')
    {
        if let Ok(v) = HeaderValue::from_str(text) {
            return v;
        }
    }
    let mut out = String::with_capacity(text.len() * 3);
    for b in text.bytes() {
        if (b'!'..=b'~').contains(&b) && b != b'%' || b == b' ' {
            out.push(b as char);
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    HeaderValue::from_str(&out).unwrap_or_else(|_| HeaderValue::from_static(""))
}

/// What a request or response may not carry past Keyward.
#[derive(Clone, Copy, Debug)]
pub struct StripRules<'a> {
    /// A WebSocket handshake: `Upgrade` survives and `Connection: upgrade` is set again.
    pub keep_upgrade: bool,
    /// The credential headers Keyward consumed (`Authorization`, the API-key header, `Signature`,
    /// `Signature-Input`, and NWS4's `x-nd-date` and `x-nd-content-sha256`, the signature's own parameters
    /// as DESIGN.md §4 lists them); `None` forwards them. RFC 9530's `Content-Digest` is not among them: it
    /// describes the body to anyone, where `x-nd-content-sha256` exists only for the signature.
    pub api_key_header: Option<&'a HeaderName>,
    /// The context prefix: every client-sent header under it is spoofed context.
    pub context_prefix: Option<&'a str>,
    /// Remove the client's `X-Forwarded-For`, `-Proto`, `-Host` and `X-Request-Id`: Keyward sets them
    /// ([`AddedFields`]).
    pub added: bool,
}

/// Remove hop-by-hop headers (RFC 9110 §7.6.1: those named by `Connection`, plus the fixed list), then what
/// `rules` name. One pass over the map's few names decides; only names present are removed, since a removal
/// hashes and the usual request carries one or none of them.
pub fn strip(headers: &mut HeaderMap, rules: &StripRules<'_>) {
    let mut doomed: SmallVec<[HeaderName; 4]> = SmallVec::new();
    let mut connection = false;
    for name in headers.keys() {
        let text = name.as_str();
        let drop = match hop_by_hop(name) {
            Some(HopByHop::Connection) => {
                connection = true;
                true
            }
            Some(_) if *name == header::UPGRADE => !rules.keep_upgrade,
            Some(_) => true,
            None => match text {
                "authorization"
                | "signature"
                | "signature-input"
                | nws4::X_ND_DATE
                | nws4::X_ND_CONTENT_SHA256 => rules.api_key_header.is_some(),
                "x-forwarded-for" | "x-forwarded-proto" | "x-forwarded-host" | "x-request-id" => {
                    rules.added
                }
                _ => {
                    rules.api_key_header.is_some_and(|h| h == name)
                        || rules.context_prefix.is_some_and(|p| text.starts_with(p))
                }
            },
        };
        if drop {
            doomed.push(static_name(text).unwrap_or_else(|| name.clone()));
        }
    }
    if connection {
        // Headers the sender marked hop-by-hop by naming them in `Connection`.
        for value in headers.get_all(header::CONNECTION) {
            doomed.extend(
                value
                    .as_bytes()
                    .split(|b| *b == b',')
                    .filter_map(connection_named),
            );
        }
    }
    for name in doomed {
        headers.remove(name);
    }
    if rules.keep_upgrade {
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    }
}

/// The names [`strip`] removes from most signed or proxied requests, as constants: a name hyper parsed from
/// the request is not one of `http`'s standard names, and cloning it (to remove it once the map is no longer
/// borrowed) allocates, since its bytes are promoted to shared ownership on the first clone.
fn static_name(text: &str) -> Option<HeaderName> {
    Some(match text {
        "signature" => crate::auth::SIGNATURE,
        "signature-input" => crate::auth::SIGNATURE_INPUT,
        nws4::X_ND_DATE => nws4::X_ND_DATE_NAME,
        nws4::X_ND_CONTENT_SHA256 => nws4::X_ND_CONTENT_SHA256_NAME,
        "x-forwarded-for" => X_FORWARDED_FOR,
        "x-forwarded-proto" => X_FORWARDED_PROTO,
        "x-forwarded-host" => X_FORWARDED_HOST,
        "x-request-id" => REQUEST_ID,
        _ => return None,
    })
}

/// The field a `Connection` item names as hop-by-hop, to be removed with it. `None` for the usual options
/// (`close`; `keep-alive` and `upgrade`, whose fields the fixed list covers) and for an item that is no field
/// name (an empty one among them).
pub fn connection_named(item: &[u8]) -> Option<HeaderName> {
    let item = item.trim_ascii();
    if [&b"close"[..], b"keep-alive", b"upgrade"]
        .iter()
        .any(|option| item.eq_ignore_ascii_case(option))
    {
        return None;
    }
    HeaderName::from_bytes(item).ok()
}

/// A hop-by-hop field (RFC 9110 §7.6.1), by the part it plays in framing a response.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HopByHop {
    /// `Connection`: its options, and the names of further hop-by-hop fields.
    Connection,
    /// `Transfer-Encoding`: the body's framing.
    TransferEncoding,
    /// `Keep-Alive`, `Proxy-Connection`, `TE`, `Trailer`, `Upgrade`, `Proxy-Authorization`.
    Other,
}

/// Whether `name` is one of the fixed hop-by-hop fields that [`strip`] removes (those a `Connection` header
/// names come on top).
pub fn hop_by_hop(name: &HeaderName) -> Option<HopByHop> {
    match name.as_str() {
        "connection" => Some(HopByHop::Connection),
        "transfer-encoding" => Some(HopByHop::TransferEncoding),
        "keep-alive"
        | "proxy-connection"
        | "te"
        | "trailer"
        | "upgrade"
        | "proxy-authorization" => Some(HopByHop::Other),
        _ => None,
    }
}

/// Remove hop-by-hop headers only (a response on its way back).
pub fn remove_hop_by_hop(headers: &mut HeaderMap, keep_upgrade: bool) {
    strip(
        headers,
        &StripRules {
            keep_upgrade,
            api_key_header: None,
            context_prefix: None,
            added: false,
        },
    );
}

/// The peer address as a header value. A sidecar's traffic comes from few peers (often one ingress), so the
/// last one is kept per thread and a repeat costs a reference count instead of a format and two allocations.
fn peer_value(ip: std::net::IpAddr) -> HeaderValue {
    thread_local! {
        static LAST: std::cell::RefCell<Option<(std::net::IpAddr, HeaderValue)>> =
            const { std::cell::RefCell::new(None) };
    }
    LAST.with_borrow_mut(|last| match last {
        Some((cached, value)) if *cached == ip => value.clone(),
        _ => {
            let value = HeaderValue::from_str(&ip.to_string())
                .expect("an IP address is a valid header value");
            *last = Some((ip, value.clone()));
            value
        }
    })
}

/// The request id: the client's if it is short visible ASCII, else a new one: a random per-process prefix and
/// a counter, 32 hex characters, unique without a random draw per request.
pub fn request_id(headers: &HeaderMap) -> HeaderValue {
    if let Some(v) = headers.get(&REQUEST_ID).filter(|v| {
        !v.is_empty() && v.len() <= 128 && v.as_bytes().iter().all(|b| b.is_ascii_graphic())
    }) {
        return v.clone();
    }
    static PREFIX: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    static COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let prefix = *PREFIX.get_or_init(rand::random);
    let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let mut buf = [0u8; 32];
    let hex = b"0123456789abcdef";
    for (i, byte) in prefix
        .to_be_bytes()
        .iter()
        .chain(n.to_be_bytes().iter())
        .enumerate()
    {
        buf[2 * i] = hex[usize::from(byte >> 4)];
        buf[2 * i + 1] = hex[usize::from(byte & 0xf)];
    }
    HeaderValue::from_bytes(&buf).expect("hex is a valid header value")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn field_len_is_what_write_field_writes() {
        let mut out = Vec::new();
        for (name, value) in [
            (X_FORWARDED_FOR, HeaderValue::from_static("127.0.0.1")),
            (header::HOST, HeaderValue::from_static("")),
        ] {
            let before = out.len();
            write_field(&mut out, &name, &value);
            assert_eq!(out.len() - before, field_len(&name, &value));
        }
        assert_eq!(out, b"x-forwarded-for: 127.0.0.1\r\nhost: \r\n");
    }

    #[test]
    fn hop_by_hop_and_connection_named_headers_are_removed() {
        let mut h = HeaderMap::new();
        h.insert(
            header::CONNECTION,
            HeaderValue::from_static("close, x-secret-hop"),
        );
        h.insert("x-secret-hop", HeaderValue::from_static("1"));
        h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        h.insert(header::TE, HeaderValue::from_static("trailers"));
        h.insert(header::UPGRADE, HeaderValue::from_static("h2c"));
        h.insert("x-keep", HeaderValue::from_static("1"));
        remove_hop_by_hop(&mut h, false);
        assert_eq!(h.keys().map(|k| k.as_str()).collect::<Vec<_>>(), ["x-keep"]);
    }

    #[test]
    fn an_upgrade_keeps_upgrade_and_credentials_are_stripped() {
        let mut h = HeaderMap::new();
        h.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
        h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        h.insert(header::TE, HeaderValue::from_static("trailers"));
        h.insert(header::AUTHORIZATION, HeaderValue::from_static("Bearer x"));
        h.insert("x-api-key", HeaderValue::from_static("k"));
        h.insert("signature", HeaderValue::from_static("sig=:AA==:"));
        h.insert("signature-input", HeaderValue::from_static("sig=()"));
        h.insert(
            "x-nd-date",
            HeaderValue::from_static("2024-02-29T23:59:58.124Z"),
        );
        h.insert("x-nd-content-sha256", HeaderValue::from_static("e3b0"));
        h.insert("content-digest", HeaderValue::from_static("sha-256=:AA==:"));
        h.insert("x-auth-user", HeaderValue::from_static("root"));
        h.insert("x-keep", HeaderValue::from_static("1"));
        let api_key = HeaderName::from_static("x-api-key");
        strip(
            &mut h,
            &StripRules {
                keep_upgrade: true,
                api_key_header: Some(&api_key),
                context_prefix: Some("x-auth-"),
                added: false,
            },
        );
        let mut left: Vec<_> = h.iter().map(|(k, v)| format!("{k}: {v:?}")).collect();
        left.sort();
        assert_eq!(
            left,
            [
                "connection: \"upgrade\"",
                "content-digest: \"sha-256=:AA==:\"",
                "upgrade: \"websocket\"",
                "x-keep: \"1\""
            ]
        );
    }

    #[test]
    fn forwarded_fields_are_the_peers_or_build_on_the_clients_when_trusted() {
        let mut h = HeaderMap::new();
        h.insert(X_FORWARDED_FOR, HeaderValue::from_static("203.0.113.9"));
        h.insert(X_FORWARDED_PROTO, HeaderValue::from_static("https"));
        let peer: SocketAddr = "127.0.0.1:9".parse().unwrap();
        let host = Some(HeaderValue::from_static("api.example"));
        let id = HeaderValue::from_static("r1");
        let lines = |forwarded: Forwarded| {
            let mut out = Vec::new();
            let added = AddedFields {
                context: None,
                forwarded,
                request_id: &id,
            };
            added.write_lines(&mut out);
            let mut map = HeaderMap::new();
            added.insert_into(&mut map);
            assert_eq!(map.len(), out.split(|b| *b == b'\n').count() - 1);
            String::from_utf8(out).unwrap()
        };
        assert_eq!(
            lines(Forwarded::new(&h, peer, "http", host.clone(), true)),
            "x-forwarded-for: 203.0.113.9, 127.0.0.1\r\nx-forwarded-proto: https\r\n\
             x-forwarded-host: api.example\r\nx-request-id: r1\r\n"
        );
        assert_eq!(
            lines(Forwarded::new(&h, peer, "http", None, false)),
            "x-forwarded-for: 127.0.0.1\r\nx-forwarded-proto: http\r\nx-request-id: r1\r\n"
        );
        let other: SocketAddr = "[::1]:9".parse().unwrap();
        assert!(
            lines(Forwarded::new(&h, other, "https", None, false))
                .starts_with("x-forwarded-for: ::1\r\nx-forwarded-proto: https\r\n")
        );
    }

    #[test]
    fn context_prefix_is_stripped_case_insensitively() {
        let c = ContextHeaders::new("X-Auth-");
        let mut h = HeaderMap::new();
        h.insert("X-AUTH-USER", HeaderValue::from_static("root"));
        h.insert("x-auth-anything", HeaderValue::from_static("1"));
        h.insert("x-authority", HeaderValue::from_static("kept"));
        let rules = StripRules {
            keep_upgrade: false,
            api_key_header: None,
            context_prefix: Some(c.prefix()),
            added: false,
        };
        strip(&mut h, &rules);
        assert_eq!(h.len(), 1);
    }

    #[test]
    fn added_fields_written_as_lines_and_inserted_into_a_map_are_the_same() {
        let key = crate::keys::view::ApiKeyInput {
            name: Some("till 7".into()),
            user_name: Some("Zoë".into()),
            permissions: Some(vec!["orders:read".into(), "x:y".into()]),
            is_active: Some(true),
            ..Default::default()
        }
        .validate(true)
        .unwrap()
        .into_new_key(Some("k1".into()), chrono::Utc::now());
        let client_id = key.client_id.clone();
        let principal = Principal {
            entry: std::sync::Arc::new(crate::keys::cache::KeyEntry::new(key)),
            scheme: Scheme::Rfc9421,
        };
        let context = ContextHeaders::new("X-Auth-");
        let request_id = HeaderValue::from_static("r1");
        let peer: SocketAddr = "127.0.0.1:9".parse().unwrap();
        let added = AddedFields {
            context: Some(context.of(&principal)),
            forwarded: Forwarded::new(&HeaderMap::new(), peer, "http", None, false),
            request_id: &request_id,
        };
        let mut map = HeaderMap::new();
        added.insert_into(&mut map);
        let mut lines = Vec::new();
        added.write_lines(&mut lines);
        let mut from_map: Vec<String> = map
            .iter()
            .map(|(k, v)| format!("{k}: {}\r\n", v.to_str().unwrap()))
            .collect();
        from_map.sort();
        let text = String::from_utf8(lines).unwrap();
        let mut written: Vec<String> = text.split_inclusive("\r\n").map(str::to_owned).collect();
        written.sort();
        assert_eq!(written, from_map);
        // No device: no field for it; the rest in full.
        let expected = [
            format!("x-auth-client-id: {client_id}\r\n"),
            "x-auth-key-id: k1\r\n".to_owned(),
            "x-auth-key-name: till 7\r\n".to_owned(),
            "x-auth-permissions: orders:read,x:y\r\n".to_owned(),
            "x-auth-scheme: rfc9421\r\n".to_owned(),
            "x-auth-user: Zo%C3%AB\r\n".to_owned(),
            "x-forwarded-for: 127.0.0.1\r\n".to_owned(),
            "x-forwarded-proto: http\r\n".to_owned(),
            "x-request-id: r1\r\n".to_owned(),
        ];
        assert_eq!(written, expected);

        // Written again (the key's own lines now kept in its cache entry): the same bytes.
        let mut again = Vec::new();
        added.write_lines(&mut again);
        assert_eq!(String::from_utf8(again).unwrap(), text);
        // Under another prefix (the kept lines are not for it): the same fields under the other names.
        let other = ContextHeaders::new("X-Key-");
        let mut renamed = Vec::new();
        AddedFields {
            context: Some(other.of(&principal)),
            ..added.clone()
        }
        .write_lines(&mut renamed);
        assert_eq!(
            String::from_utf8(renamed).unwrap(),
            text.replace("x-auth-", "x-key-")
        );
    }

    #[test]
    fn non_ascii_context_is_percent_encoded() {
        assert_eq!(context_value("Zoë 100%"), "Zo%C3%AB 100%25");
        assert_eq!(context_value("plain user"), "plain user");
        assert_eq!(context_value("a\r\nb"), "a%0D%0Ab");
    }
}
