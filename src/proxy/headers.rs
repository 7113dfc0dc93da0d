//! Header rules on the way through: hop-by-hop removal (RFC 9110 §7.6.1), stripping of credentials and of every
//! client-sent context header, then setting the context from the principal (strip, then set).

use std::fmt::Write as _;
use std::net::SocketAddr;

use http::{HeaderMap, HeaderName, HeaderValue, header};

use crate::auth::{Principal, SIGNATURE, SIGNATURE_INPUT};
use crate::config::Scheme;

/// `X-Request-Id`.
pub const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
/// `X-Forwarded-For`.
pub const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
/// `X-Forwarded-Proto`.
pub const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
/// `X-Forwarded-Host`.
pub const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
const KEEP_ALIVE: HeaderName = HeaderName::from_static("keep-alive");
const PROXY_CONNECTION: HeaderName = HeaderName::from_static("proxy-connection");

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

/// The context header names for a prefix, built once at start.
#[derive(Clone, Debug)]
pub struct ContextHeaders {
    prefix: String,
    names: [HeaderName; 7],
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
        Self { prefix, names }
    }

    /// Remove every header whose name starts with the prefix: a client never sets context.
    pub fn strip(&self, headers: &mut HeaderMap) {
        let spoofed: Vec<HeaderName> = headers
            .keys()
            .filter(|n| n.as_str().starts_with(&self.prefix))
            .cloned()
            .collect();
        for name in spoofed {
            headers.remove(name);
        }
    }

    /// Set the context of `principal`.
    pub fn set(&self, headers: &mut HeaderMap, principal: &Principal) {
        let scheme = match principal.scheme {
            Scheme::Bearer => HeaderValue::from_static("bearer"),
            Scheme::Nws4 => HeaderValue::from_static("nws4"),
            Scheme::Rfc9421 => HeaderValue::from_static("rfc9421"),
        };
        // The key's values were encoded once, when it entered the cache: a clone here is a reference count.
        for (name, value) in self.names.iter().zip(principal.entry.context().iter()) {
            if let Some(value) = value {
                headers.insert(name.clone(), value.clone());
            }
        }
        headers.insert(self.names[6].clone(), scheme);
    }
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

/// Remove hop-by-hop headers (RFC 9110 §7.6.1): those named by `Connection`, plus the fixed list. When
/// `keep_upgrade` is set (a WebSocket handshake), `Connection: upgrade` and `Upgrade` survive.
pub fn remove_hop_by_hop(headers: &mut HeaderMap, keep_upgrade: bool) {
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|n| HeaderName::from_bytes(n.trim().as_bytes()).ok())
        .collect();
    for name in named {
        if !(keep_upgrade && name == header::UPGRADE) {
            headers.remove(name);
        }
    }
    for name in [
        KEEP_ALIVE,
        PROXY_CONNECTION,
        header::TE,
        header::TRAILER,
        header::TRANSFER_ENCODING,
        header::PROXY_AUTHORIZATION,
    ] {
        headers.remove(name);
    }
    headers.remove(header::CONNECTION);
    if keep_upgrade {
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    } else {
        headers.remove(header::UPGRADE);
    }
}

/// Remove the credentials Keyward consumed.
pub fn strip_credentials(headers: &mut HeaderMap, api_key_header: &HeaderName) {
    headers.remove(header::AUTHORIZATION);
    headers.remove(api_key_header);
    headers.remove(SIGNATURE);
    headers.remove(SIGNATURE_INPUT);
}

/// Set `X-Forwarded-For`/`-Proto`/`-Host`. With `trust` the client's own values are kept (appended to).
pub fn set_forwarded(
    headers: &mut HeaderMap,
    peer: SocketAddr,
    proto: &str,
    host: Option<&HeaderValue>,
    trust: bool,
) {
    let ip = peer.ip().to_string();
    let xff = match headers
        .get(&X_FORWARDED_FOR)
        .and_then(|v| v.to_str().ok())
        .filter(|_| trust)
    {
        Some(prior) => format!("{prior}, {ip}"),
        None => ip,
    };
    if let Ok(v) = HeaderValue::from_str(&xff) {
        headers.insert(X_FORWARDED_FOR, v);
    }
    if !(trust && headers.contains_key(&X_FORWARDED_PROTO)) {
        headers.insert(
            X_FORWARDED_PROTO,
            HeaderValue::from_static(if proto == "https" { "https" } else { "http" }),
        );
    }
    if !(trust && headers.contains_key(&X_FORWARDED_HOST)) {
        match host {
            Some(h) => headers.insert(X_FORWARDED_HOST, h.clone()),
            None => headers.remove(X_FORWARDED_HOST),
        };
    }
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
    fn hop_by_hop_and_connection_named_headers_are_removed() {
        let mut h = HeaderMap::new();
        h.insert(
            header::CONNECTION,
            HeaderValue::from_static("close, x-secret-hop"),
        );
        h.insert("x-secret-hop", HeaderValue::from_static("1"));
        h.insert(KEEP_ALIVE, HeaderValue::from_static("timeout=5"));
        h.insert(header::TE, HeaderValue::from_static("trailers"));
        h.insert(header::UPGRADE, HeaderValue::from_static("h2c"));
        h.insert("x-keep", HeaderValue::from_static("1"));
        remove_hop_by_hop(&mut h, false);
        assert_eq!(h.keys().map(|k| k.as_str()).collect::<Vec<_>>(), ["x-keep"]);
    }

    #[test]
    fn context_prefix_is_stripped_case_insensitively() {
        let c = ContextHeaders::new("X-Auth-");
        let mut h = HeaderMap::new();
        h.insert("X-AUTH-USER", HeaderValue::from_static("root"));
        h.insert("x-auth-anything", HeaderValue::from_static("1"));
        h.insert("x-authority", HeaderValue::from_static("kept"));
        c.strip(&mut h);
        assert_eq!(h.len(), 1);
    }

    #[test]
    fn non_ascii_context_is_percent_encoded() {
        assert_eq!(context_value("Zoë 100%"), "Zo%C3%AB 100%25");
        assert_eq!(context_value("plain user"), "plain user");
        assert_eq!(context_value("a\r\nb"), "a%0D%0Ab");
    }
}
