//! Validated runtime configuration: `Config::load(file, env)` merges defaults, the TOML file and `KEYWARD_*`
//! overrides, then validates everything and reports every problem together.

pub mod env;
pub mod file;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use http::{Method, Uri};

use crate::policy::Claim;
use crate::routes::{AuthMode, PathMatch, Rule};

pub use file::FileConfig;

/// A scheme a credential may use on the proxy.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Scheme {
    /// `X-Api-Key`, `Authorization: Bearer` or `Basic` with the encoded credential.
    Bearer,
    /// NWS4-HMAC-SHA256 (seed 004).
    Nws4,
    /// RFC 9421 HTTP Message Signatures, hmac-sha256.
    Rfc9421,
}

/// The validated configuration.
#[derive(Clone, Debug)]
pub struct Config {
    /// Data-plane listener.
    pub proxy: ProxyConfig,
    /// Admin listener.
    pub admin: AdminConfig,
    /// Key store.
    pub store: StoreConfig,
    /// Default upstream.
    pub upstream: UpstreamConfig,
    /// Authentication policy.
    pub auth: AuthConfig,
    /// Client-controlled sizes and times.
    pub limits: Limits,
    /// Logging.
    pub log: file::LogSection,
    /// Routes, first match wins, then the default route.
    pub routes: Vec<Rule>,
    /// Applied when no route matches.
    pub default_route: Rule,
    /// Drain time after SIGTERM.
    pub shutdown_grace: Duration,
    /// `store.master_key`: secrets are encrypted at rest with it when set (the text never prints).
    pub master_key: Option<crate::keys::secret::Secret>,
    /// Registered upstreams declared in the file (`[[upstreams]]`).
    pub upstreams: Vec<crate::upstreams::RegisteredUpstream>,
}

/// A listener's TLS files.
#[derive(Clone, Debug)]
pub struct TlsFiles {
    /// PEM certificate chain.
    pub cert: PathBuf,
    /// PEM private key.
    pub key: PathBuf,
}

/// `[proxy]`, validated.
#[derive(Clone, Debug)]
pub struct ProxyConfig {
    /// Listen address.
    pub listen: SocketAddr,
    /// TLS, if any.
    pub tls: Option<TlsFiles>,
    /// Keep the client's Host.
    pub preserve_host: bool,
    /// Keep credential headers when forwarding.
    pub forward_credentials: bool,
    /// Context header prefix, lower case.
    pub context_prefix: String,
    /// API-key header name, lower case.
    pub api_key_header: http::HeaderName,
    /// API-key query parameter, if enabled.
    pub api_key_query: Option<String>,
    /// Trust X-Forwarded-* from the client.
    pub trust_forwarded: bool,
}

/// `[admin]`, validated.
#[derive(Clone, Debug)]
pub struct AdminConfig {
    /// Listen address.
    pub listen: SocketAddr,
    /// TLS, if any.
    pub tls: Option<TlsFiles>,
    /// Bootstrap token, if set (never printed: see the `Debug` of [`crate::keys::secret::Secret`]).
    pub bootstrap_token: Option<crate::keys::secret::Secret>,
}

/// `[store]`, validated.
#[derive(Clone, Debug)]
pub enum StoreConfig {
    /// Embedded SQLite file.
    Sqlite {
        /// The database file.
        path: PathBuf,
    },
    /// Shared PostgreSQL.
    Postgres {
        /// Connection URL (may hold a password: never logged).
        url: String,
    },
}

/// `[upstream]`, validated.
#[derive(Clone, Debug)]
pub struct UpstreamConfig {
    /// Base URL (scheme and authority, optional path prefix).
    pub url: Uri,
    /// TCP connect timeout.
    pub connect_timeout: Duration,
    /// Time to response headers.
    pub timeout: Duration,
    /// Extra CA bundle.
    pub ca_file: Option<PathBuf>,
    /// Idle pooled connections per host.
    pub pool_max_idle: usize,
}

/// `[auth]`, validated.
#[derive(Clone, Debug)]
pub struct AuthConfig {
    /// Signature timestamp window.
    pub clock_skew: Duration,
    /// Schemes enabled on the proxy.
    pub schemes: Vec<Scheme>,
    /// Replay cache bound.
    pub replay_max_entries: usize,
}

/// `[limits]`, validated.
#[derive(Clone, Debug)]
pub struct Limits {
    /// Header section bytes.
    pub max_header_bytes: usize,
    /// Header count.
    pub max_headers: usize,
    /// Proxy body bytes.
    pub max_body: u64,
    /// Signed body bytes read for the digest.
    pub max_signed_body: u64,
    /// Admin body bytes.
    pub max_admin_body: u64,
    /// Header read time.
    pub header_read_timeout: Duration,
    /// TLS handshake time.
    pub tls_handshake_timeout: Duration,
    /// Connections per listener.
    pub max_connections: usize,
}

/// Every problem found while loading a config.
#[derive(Debug, thiserror::Error)]
#[error("invalid configuration:\n  - {}", .0.join("\n  - "))]
pub struct ConfigErrors(pub Vec<String>);

// === impl Config ===

impl Default for Config {
    fn default() -> Self {
        Self::from_file(FileConfig::default()).expect("the defaults are valid")
    }
}

impl Config {
    /// Load `path` (if given), apply the `KEYWARD_*` entries of `vars`, validate.
    pub fn load(
        path: Option<&Path>,
        vars: &BTreeMap<String, String>,
    ) -> Result<Self, ConfigErrors> {
        let mut doc = match toml::Table::try_from(FileConfig::default()) {
            Ok(doc) => doc,
            Err(e) => return Err(ConfigErrors(vec![format!("defaults: {e}")])),
        };
        if let Some(path) = path {
            let text = std::fs::read_to_string(path)
                .map_err(|e| ConfigErrors(vec![format!("{}: {e}", path.display())]))?;
            let file: toml::Table = text
                .parse()
                .map_err(|e| ConfigErrors(vec![format!("{}: {e}", path.display())]))?;
            merge(&mut doc, file);
        }
        let mut problems = env::apply(&mut doc, vars);
        let parsed: Result<FileConfig, _> = toml::Value::Table(doc).try_into();
        match parsed {
            Ok(file) if problems.is_empty() => Self::from_file(file),
            Ok(file) => {
                if let Err(ConfigErrors(more)) = Self::from_file(file) {
                    problems.extend(more);
                }
                Err(ConfigErrors(problems))
            }
            Err(e) => {
                problems.push(e.to_string().trim().to_owned());
                Err(ConfigErrors(problems))
            }
        }
    }

    /// Validate a parsed file into the runtime config.
    pub fn from_file(f: FileConfig) -> Result<Self, ConfigErrors> {
        let mut v = Validator::default();
        let proxy = ProxyConfig {
            listen: v.addr("proxy.listen", &f.proxy.listen),
            tls: f.proxy.tls.as_ref().map(tls_files),
            preserve_host: f.proxy.preserve_host,
            forward_credentials: f.proxy.forward_credentials,
            context_prefix: v.context_prefix(&f.proxy.context_prefix),
            api_key_header: v.header_name("proxy.api_key_header", &f.proxy.api_key_header),
            api_key_query: Some(f.proxy.api_key_query.clone()).filter(|q| !q.is_empty()),
            trust_forwarded: f.proxy.trust_forwarded,
        };
        let admin = AdminConfig {
            listen: v.addr("admin.listen", &f.admin.listen),
            tls: f.admin.tls.as_ref().map(tls_files),
            bootstrap_token: v.bootstrap_token(&f.admin.bootstrap_token),
        };
        let master_key = Some(f.store.master_key.trim().to_owned()).filter(|k| !k.is_empty());
        if let Some(Err(e)) = master_key
            .as_deref()
            .map(crate::keys::secret::parse_master_key)
        {
            v.problem(format!("store.master_key: {e}"));
        }
        let master_key = master_key.map(crate::keys::secret::Secret::new);
        let store = match f.store.kind.as_str() {
            "sqlite" => StoreConfig::Sqlite {
                path: PathBuf::from(&f.store.path),
            },
            "postgres" => {
                if f.store.url.is_empty() {
                    v.problem("store.url: required when store.kind = \"postgres\"");
                }
                StoreConfig::Postgres {
                    url: f.store.url.clone(),
                }
            }
            other => {
                v.problem(format!(
                    "store.kind: {other:?} is not one of \"sqlite\", \"postgres\""
                ));
                StoreConfig::Sqlite {
                    path: PathBuf::from(&f.store.path),
                }
            }
        };
        let upstream = UpstreamConfig {
            url: v.upstream_url("upstream.url", &f.upstream.url),
            connect_timeout: v.duration("upstream.connect_timeout", &f.upstream.connect_timeout),
            timeout: v.duration("upstream.timeout", &f.upstream.timeout),
            ca_file: Some(PathBuf::from(&f.upstream.ca_file)).filter(|p| !p.as_os_str().is_empty()),
            pool_max_idle: f.upstream.pool_max_idle,
        };
        let auth = AuthConfig {
            clock_skew: v.duration("auth.clock_skew", &f.auth.clock_skew),
            schemes: v.schemes(&f.auth.schemes),
            replay_max_entries: v.positive("auth.replay_max_entries", f.auth.replay_max_entries),
        };
        let limits = Limits {
            max_header_bytes: v
                .positive("limits.max_header_bytes", f.limits.max_header_bytes)
                .max(8192),
            max_headers: v.positive("limits.max_headers", f.limits.max_headers),
            max_body: f.limits.max_body,
            max_signed_body: f.limits.max_signed_body,
            max_admin_body: f.limits.max_admin_body,
            header_read_timeout: v
                .duration("limits.header_read_timeout", &f.limits.header_read_timeout),
            tls_handshake_timeout: v.duration(
                "limits.tls_handshake_timeout",
                &f.limits.tls_handshake_timeout,
            ),
            max_connections: v.positive("limits.max_connections", f.limits.max_connections),
        };
        let routes = f
            .routes
            .iter()
            .enumerate()
            .map(|(i, r)| v.rule(&format!("routes[{i}]"), r, false))
            .collect();
        let default_route = v.rule("default_route", &f.default_route, true);
        let upstreams = v.upstreams(&f.upstreams);
        let shutdown_grace = v.duration(
            "shutdown_grace",
            if f.shutdown_grace.is_empty() {
                "30s"
            } else {
                &f.shutdown_grace
            },
        );
        if !v.problems.is_empty() {
            return Err(ConfigErrors(v.problems));
        }
        Ok(Self {
            proxy,
            admin,
            store,
            upstream,
            auth,
            limits,
            log: f.log,
            routes,
            default_route,
            shutdown_grace,
            upstreams,
            master_key,
        })
    }
}

/// Deep-merge `over` into `base`: tables merge, everything else replaces.
fn merge(base: &mut toml::Table, over: toml::Table) {
    for (key, value) in over {
        match (base.get_mut(&key), value) {
            (Some(toml::Value::Table(b)), toml::Value::Table(o)) => merge(b, o),
            (_, value) => {
                base.insert(key, value);
            }
        }
    }
}

fn tls_files(t: &file::TlsSection) -> TlsFiles {
    TlsFiles {
        cert: PathBuf::from(&t.cert),
        key: PathBuf::from(&t.key),
    }
}

/// Collects problems while converting fields.
#[derive(Default)]
struct Validator {
    problems: Vec<String>,
}

impl Validator {
    fn problem(&mut self, p: impl Into<String>) {
        self.problems.push(p.into());
    }

    fn addr(&mut self, field: &str, text: &str) -> SocketAddr {
        text.parse().unwrap_or_else(|_| {
            self.problem(format!(
                "{field}: {text:?} is not an address like \"127.0.0.1:8080\""
            ));
            SocketAddr::from(([127, 0, 0, 1], 0))
        })
    }

    fn duration(&mut self, field: &str, text: &str) -> Duration {
        humantime::parse_duration(text).unwrap_or_else(|_| {
            self.problem(format!(
                "{field}: {text:?} is not a duration like \"30s\" or \"5m\""
            ));
            Duration::from_secs(1)
        })
    }

    fn positive(&mut self, field: &str, n: usize) -> usize {
        if n == 0 {
            self.problem(format!("{field}: must be greater than 0"));
        }
        n.max(1)
    }

    fn header_name(&mut self, field: &str, text: &str) -> http::HeaderName {
        http::HeaderName::from_bytes(text.as_bytes()).unwrap_or_else(|_| {
            self.problem(format!("{field}: {text:?} is not a header name"));
            http::HeaderName::from_static("x-api-key")
        })
    }

    fn context_prefix(&mut self, text: &str) -> String {
        if text.len() < 2 || http::HeaderName::from_bytes(text.as_bytes()).is_err() {
            self.problem(format!(
                "proxy.context_prefix: {text:?} must be a header-name prefix like \"X-Auth-\""
            ));
        }
        text.to_ascii_lowercase()
    }

    fn bootstrap_token(&mut self, text: &str) -> Option<crate::keys::secret::Secret> {
        if text.is_empty() {
            return None;
        }
        if text.len() < 16 {
            self.problem("admin.bootstrap_token: must be at least 16 characters");
        }
        Some(crate::keys::secret::Secret::new(text.to_owned()))
    }

    fn upstream_url(&mut self, field: &str, text: &str) -> Uri {
        match text.parse::<Uri>() {
            Ok(uri)
                if matches!(uri.scheme_str(), Some("http" | "https"))
                    && uri.authority().is_some() =>
            {
                uri
            }
            _ => {
                self.problem(format!(
                    "{field}: {text:?} is not an http:// or https:// URL"
                ));
                Uri::from_static("http://127.0.0.1:3000")
            }
        }
    }

    fn schemes(&mut self, names: &[String]) -> Vec<Scheme> {
        let mut out = Vec::new();
        for name in names {
            match name.as_str() {
                "bearer" => out.push(Scheme::Bearer),
                "nws4" => out.push(Scheme::Nws4),
                "rfc9421" => out.push(Scheme::Rfc9421),
                other => self.problem(format!(
                    "auth.schemes: {other:?} is not one of bearer, nws4, rfc9421"
                )),
            }
        }
        out
    }

    fn rule(&mut self, field: &str, r: &file::RouteSection, is_default: bool) -> Rule {
        let path = if is_default {
            PathMatch::Prefix("/".into())
        } else if let Some(exact) = r.path.strip_prefix('=') {
            PathMatch::Exact(exact.into())
        } else {
            PathMatch::Prefix(r.path.clone())
        };
        if !is_default && !r.path.trim_start_matches('=').starts_with('/') {
            self.problem(format!(
                "{field}.path: {:?} must start with / (or =/ for an exact path)",
                r.path
            ));
        }
        let mut methods = Vec::new();
        for m in &r.methods {
            match Method::from_bytes(m.to_ascii_uppercase().as_bytes()) {
                Ok(m) => methods.push(m),
                Err(_) => self.problem(format!("{field}.methods: {m:?} is not a method")),
            }
        }
        let auth = match r.auth.as_str() {
            "required" => AuthMode::Required,
            "optional" => AuthMode::Optional,
            "none" => AuthMode::None,
            other => {
                self.problem(format!(
                    "{field}.auth: {other:?} is not one of required, optional, none"
                ));
                AuthMode::Required
            }
        };
        let mut require = Vec::new();
        for c in &r.require {
            match Claim::parse(c) {
                Ok(c) => require.push(c),
                Err(e) => self.problem(format!("{field}.require: {e}")),
            }
        }
        let name = if !r.name.is_empty() {
            r.name.clone()
        } else if is_default {
            "default".into()
        } else {
            r.path.clone()
        };
        let upstream = (!r.upstream.is_empty()).then(|| r.upstream.clone());
        if upstream
            .as_deref()
            .is_some_and(|u| !crate::upstreams::input::is_name(u))
        {
            self.problem(format!(
                "{field}.upstream: {:?} is not an upstream name (A-Z a-z 0-9 . _ -)",
                r.upstream
            ));
        }
        Rule {
            name,
            path,
            methods,
            auth,
            require,
            upstream,
        }
    }

    /// `[[upstreams]]`: the admin API's validation, on snake_case keys, every problem named by its field.
    fn upstreams(&mut self, tables: &[toml::Table]) -> Vec<crate::upstreams::RegisteredUpstream> {
        use crate::upstreams::input::{UpstreamInput, camel_keys};
        let mut out: Vec<crate::upstreams::RegisteredUpstream> = Vec::new();
        for (i, table) in tables.iter().enumerate() {
            let json = camel_keys(toml::Value::Table(table.clone()));
            let input: UpstreamInput = match serde_json::from_value(json) {
                Ok(input) => input,
                Err(e) => {
                    self.problem(format!("upstreams[{i}]: {e}"));
                    continue;
                }
            };
            let fields = match input.validate(None) {
                Ok(f) => f,
                Err(problems) => {
                    for p in problems {
                        self.problem(format!("upstreams[{i}].{}: {}", p.path, p.description));
                    }
                    continue;
                }
            };
            if out.iter().any(|u| u.name == fields.name) {
                self.problem(format!(
                    "upstreams[{i}].name: {:?} is declared twice",
                    fields.name
                ));
                continue;
            }
            out.push(crate::upstreams::RegisteredUpstream::from_fields(
                crate::upstreams::config_id(&fields.name),
                fields,
                chrono::DateTime::UNIX_EPOCH,
            ));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid() {
        let c = Config::load(None, &BTreeMap::new()).unwrap();
        assert_eq!(c.proxy.listen.port(), 8080);
        assert_eq!(c.admin.listen.to_string(), "127.0.0.1:9090");
        assert_eq!(c.auth.clock_skew, Duration::from_secs(300));
    }

    #[test]
    fn every_problem_is_listed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bad.toml");
        std::fs::write(
            &path,
            "[proxy]\nlisten = \"nope\"\n[auth]\nclock_skew = \"soon\"\nschemes = [\"magic\"]\n",
        )
        .unwrap();
        let err = Config::load(Some(&path), &BTreeMap::new()).unwrap_err();
        assert_eq!(err.0.len(), 3, "{err}");
    }

    #[test]
    fn unknown_keys_are_rejected() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bad.toml");
        std::fs::write(&path, "[proxy]\nlisten = \"127.0.0.1:1\"\nlisen = 1\n").unwrap();
        let err = Config::load(Some(&path), &BTreeMap::new()).unwrap_err();
        assert!(err.to_string().contains("lisen"), "{err}");
    }

    #[test]
    fn environment_overrides_file() {
        let vars = BTreeMap::from([(
            "KEYWARD_PROXY__LISTEN".to_owned(),
            "127.0.0.1:1234".to_owned(),
        )]);
        let c = Config::load(None, &vars).unwrap();
        assert_eq!(c.proxy.listen.port(), 1234);
    }
}
