//! The serde mirror of the TOML file: every section, every default, unknown keys rejected.
//!
//! Durations are strings in humantime form (`"300s"`, `"1h"`); sizes are integers in bytes. Validation into the
//! runtime types of [`super`] happens in one place, so every problem is reported together.

use serde::{Deserialize, Serialize};

/// The whole file.
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct FileConfig {
    /// The data-plane listener.
    pub proxy: ProxySection,
    /// The admin listener.
    pub admin: AdminSection,
    /// Where keys are persisted.
    pub store: StoreSection,
    /// The default upstream.
    pub upstream: UpstreamSection,
    /// Authentication policy.
    pub auth: AuthSection,
    /// Limits on everything a client controls.
    pub limits: LimitsSection,
    /// Logging.
    pub log: LogSection,
    /// The rule applied when no route matches.
    pub default_route: RouteSection,
    /// Routes, first match wins.
    pub routes: Vec<RouteSection>,
    /// Registered upstreams declared here (`[[upstreams]]`, read-only through the admin API); the fields of
    /// `docs/upstreams.md` in snake_case. Validated in [`super::Config::from_file`].
    pub upstreams: Vec<toml::Table>,
    /// Time to finish in-flight requests after SIGTERM. Default `"30s"`.
    pub shutdown_grace: String,
}

/// `[proxy]`.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct ProxySection {
    /// Listen address. Default `"0.0.0.0:8080"`.
    pub listen: String,
    /// TLS from PEM files; absent = plain TCP.
    pub tls: Option<TlsSection>,
    /// Keep the client's `Host` header when forwarding. Default `true`.
    pub preserve_host: bool,
    /// Forward the client's credential headers to the upstream. Default `false`.
    pub forward_credentials: bool,
    /// Prefix of context headers; incoming headers with it are always removed. Default `"X-Auth-"`.
    pub context_prefix: String,
    /// The API-key header name (seed 003). Default `"X-Api-Key"`.
    pub api_key_header: String,
    /// Query parameter accepted as an API key; empty = off (the default: query strings end up in logs).
    pub api_key_query: String,
    /// Trust `X-Forwarded-Proto`/`X-Forwarded-Host`/`X-Forwarded-For` from the client (behind a TLS-terminating hop). Default `false`.
    pub trust_forwarded: bool,
}

/// `[admin]`.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct AdminSection {
    /// Listen address. Default `"127.0.0.1:9090"`.
    pub listen: String,
    /// TLS from PEM files; absent = plain TCP.
    pub tls: Option<TlsSection>,
    /// A token granting `*` on the admin API as `Authorization: Bearer <token>`; empty = off.
    pub bootstrap_token: String,
}

/// PEM files for a listener.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct TlsSection {
    /// Certificate chain, PEM.
    pub cert: String,
    /// Private key, PEM.
    pub key: String,
}

/// `[store]`.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct StoreSection {
    /// `"sqlite"` (default) or `"postgres"`.
    pub kind: String,
    /// SQLite file. Default `"data/keyward.db"`.
    pub path: String,
    /// PostgreSQL URL, for `kind = "postgres"`.
    pub url: String,
    /// Base64 of 32 random bytes; when set, secrets are encrypted at rest (ChaCha20-Poly1305). Default none.
    pub master_key: String,
}

/// `[upstream]`.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct UpstreamSection {
    /// Base URL of the default upstream. Default `"http://127.0.0.1:3000"`.
    pub url: String,
    /// TCP connect timeout. Default `"5s"`.
    pub connect_timeout: String,
    /// Time to the upstream's response headers. Default `"60s"`.
    pub timeout: String,
    /// Extra CA bundle (PEM) for `https://` upstreams; empty = the system's roots.
    pub ca_file: String,
    /// Idle pooled connections kept per upstream host, for each of the two kinds of an `http://` upstream's
    /// pool (lean exchanges, and hyper connections for requests with a body). Default 256.
    pub pool_max_idle: usize,
}

/// `[auth]`.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuthSection {
    /// Allowed distance between a signature's timestamp and the sidecar's clock. Default `"300s"`.
    pub clock_skew: String,
    /// Schemes accepted on the proxy. Default all: `["bearer", "nws4", "rfc9421"]`.
    pub schemes: Vec<String>,
    /// Most signatures remembered for replay protection. Default 1 000 000.
    pub replay_max_entries: usize,
}

/// `[limits]`.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct LimitsSection {
    /// Most bytes of a request's header section. Default 16 384.
    pub max_header_bytes: usize,
    /// Most header fields in a request. Default 100.
    pub max_headers: usize,
    /// Most bytes of a request body on the proxy. Default 104 857 600 (100 MiB).
    pub max_body: u64,
    /// Most bytes of a body read to check a signature's digest. Default 10 485 760 (10 MiB).
    pub max_signed_body: u64,
    /// Most bytes of an admin request body. Default 65 536.
    pub max_admin_body: u64,
    /// Time allowed to read a request's header section. Default `"10s"`.
    pub header_read_timeout: String,
    /// Time allowed for a TLS handshake. Default `"10s"`.
    pub tls_handshake_timeout: String,
    /// Most open connections per listener. Default 10 000.
    pub max_connections: usize,
}

/// `[log]`.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct LogSection {
    /// `tracing` filter, e.g. `"info"`. Default `"info"`; `RUST_LOG` wins when set.
    pub level: String,
    /// One JSON access-log line per request. Default `true`.
    pub access_log: bool,
}

/// A `[[routes]]` entry or `[default_route]`.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct RouteSection {
    /// A label for metrics and logs; default: the path pattern.
    pub name: String,
    /// `/prefix/` or `=/exact`. Ignored for `default_route`.
    pub path: String,
    /// Methods this route applies to; empty = all.
    pub methods: Vec<String>,
    /// `"required"` (default), `"optional"` or `"none"`.
    pub auth: String,
    /// Claims a key must hold, all of them.
    pub require: Vec<String>,
    /// The registered upstream this route forwards to (its name); empty = the default `[upstream]`.
    pub upstream: String,
}

// === defaults ===

impl Default for ProxySection {
    fn default() -> Self {
        Self {
            listen: "0.0.0.0:8080".into(),
            tls: None,
            preserve_host: true,
            forward_credentials: false,
            context_prefix: "X-Auth-".into(),
            api_key_header: "X-Api-Key".into(),
            api_key_query: String::new(),
            trust_forwarded: false,
        }
    }
}

impl Default for AdminSection {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:9090".into(),
            tls: None,
            bootstrap_token: String::new(),
        }
    }
}

impl Default for StoreSection {
    fn default() -> Self {
        Self {
            kind: "sqlite".into(),
            path: "data/keyward.db".into(),
            url: String::new(),
            master_key: String::new(),
        }
    }
}

impl Default for UpstreamSection {
    fn default() -> Self {
        Self {
            url: "http://127.0.0.1:3000".into(),
            connect_timeout: "5s".into(),
            timeout: "60s".into(),
            ca_file: String::new(),
            pool_max_idle: 256,
        }
    }
}

impl Default for AuthSection {
    fn default() -> Self {
        Self {
            clock_skew: "300s".into(),
            schemes: vec!["bearer".into(), "nws4".into(), "rfc9421".into()],
            replay_max_entries: 1_000_000,
        }
    }
}

impl Default for LimitsSection {
    fn default() -> Self {
        Self {
            max_header_bytes: 16 * 1024,
            max_headers: 100,
            max_body: 100 * 1024 * 1024,
            max_signed_body: 10 * 1024 * 1024,
            max_admin_body: 64 * 1024,
            header_read_timeout: "10s".into(),
            tls_handshake_timeout: "10s".into(),
            max_connections: 10_000,
        }
    }
}

impl Default for LogSection {
    fn default() -> Self {
        Self {
            level: "info".into(),
            access_log: true,
        }
    }
}

impl Default for RouteSection {
    fn default() -> Self {
        Self {
            name: String::new(),
            path: String::new(),
            methods: Vec::new(),
            auth: "required".into(),
            require: Vec::new(),
            upstream: String::new(),
        }
    }
}
