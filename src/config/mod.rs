//! Validated runtime configuration: `Config::load(file, env)` merges defaults, the TOML file and `KEYWARD_*`
//! overrides, then validates everything and reports every problem together.

pub mod env;
pub mod file;
mod validate;

use validate::Validator;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use http::Uri;

use crate::routes::Rule;

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
