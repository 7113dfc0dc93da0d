//! The live set of registered upstreams: config-declared ones (read-only) plus stored ones, each with its pooled
//! client and credential state, behind an atomically swapped snapshot so the proxy reads it without a lock.
//!
//! Every change builds a new entry, and so a new token cache: a credential edited through the admin API is in
//! force on the next request. A reload keeps the entries whose version did not change (and their tokens).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwap;
use http::{HeaderName, HeaderValue, Uri};

use super::credentials::{CredentialError, Credentials, Injection, form_encode};
use super::{RegisteredUpstream, Source};
use crate::config::UpstreamConfig;
use crate::metrics::Metrics;
use crate::proxy::forward::{Upstream, UpstreamSetupError};

/// One registered upstream, ready to forward to.
pub struct Entry {
    /// The record.
    pub upstream: RegisteredUpstream,
    /// Config file or store.
    pub source: Source,
    /// Its pooled client (its own timeouts).
    pub client: Upstream,
    /// Its credential and token cache.
    pub credentials: Credentials,
    /// The base URL's authority, sent as `Host`.
    pub host: Option<HeaderValue>,
    headers: Vec<(HeaderName, HeaderValue)>,
    query: Vec<(String, String)>,
}

/// Everything at one moment.
#[derive(Default)]
struct Snapshot {
    by_id: HashMap<String, Arc<Entry>>,
    by_name: HashMap<String, Arc<Entry>>,
}

/// The registry.
pub struct UpstreamRegistry {
    snapshot: ArcSwap<Snapshot>,
    /// Serializes writers (readers never wait).
    write: Mutex<()>,
    declared: Vec<Arc<Entry>>,
    tls: rustls::ClientConfig,
    defaults: UpstreamConfig,
    metrics: Arc<Metrics>,
}

// === impl Entry ===

impl Entry {
    fn build(
        upstream: RegisteredUpstream,
        source: Source,
        defaults: &UpstreamConfig,
        tls: &rustls::ClientConfig,
    ) -> Result<Self, CredentialError> {
        let bad = |what: &str| CredentialError {
            step: "config",
            message: format!("invalid {what}"),
        };
        let url: Uri = upstream.base_url().parse().map_err(|_| bad("url"))?;
        let cfg = UpstreamConfig {
            url: url.clone(),
            connect_timeout: Duration::from_millis(upstream.connect_timeout_ms),
            timeout: Duration::from_millis(upstream.timeout_ms),
            ca_file: defaults.ca_file.clone(),
            pool_max_idle: defaults.pool_max_idle,
        };
        let mut headers = Vec::new();
        let mut query = Vec::new();
        for p in &upstream.header_params {
            if p.query_param {
                query.push((p.key.clone(), p.value.clone()));
            } else {
                headers.push((
                    HeaderName::from_bytes(p.key.as_bytes()).map_err(|_| bad("header param"))?,
                    HeaderValue::from_str(&p.value).map_err(|_| bad("header param"))?,
                ));
            }
        }
        Ok(Self {
            credentials: Credentials::new(&upstream.auth)?,
            client: Upstream::with_tls(&cfg, tls.clone()),
            host: url
                .authority()
                .and_then(|a| HeaderValue::from_str(a.as_str()).ok()),
            upstream,
            source,
            headers,
            query,
        })
    }

    /// The upstream URI for an incoming target: the base URL, the request's path, and its query with the
    /// extra and credential query parameters set (a client's parameter of the same name is dropped).
    pub fn target(
        &self,
        incoming: &Uri,
        injection: &Injection,
    ) -> Result<Uri, crate::error::Error> {
        let mut set: Vec<(&str, &str)> = self
            .query
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        if let Injection::Query(k, v) = injection {
            set.push((k, v));
        }
        let pq = if set.is_empty() {
            incoming
                .path_and_query()
                .map_or_else(|| "/".to_owned(), |p| p.as_str().to_owned())
        } else {
            let mut parts: Vec<String> = incoming
                .query()
                .unwrap_or("")
                .split('&')
                .filter(|p| !p.is_empty() && !set.iter().any(|(k, _)| param_name(p) == *k))
                .map(str::to_owned)
                .collect();
            parts.extend(
                set.iter()
                    .map(|(k, v)| format!("{}={}", form_encode(k), form_encode(v))),
            );
            format!("{}?{}", incoming.path(), parts.join("&"))
        };
        let origin: Uri = pq.parse().map_err(|_| {
            crate::error::Error::invalid("path", "the request target is not a valid path")
        })?;
        self.client.target(&origin)
    }

    /// Set the extra headers and the credential header, replacing the client's.
    pub fn set_headers(&self, headers: &mut http::HeaderMap, injection: &Injection) {
        for (k, v) in &self.headers {
            headers.insert(k.clone(), v.clone());
        }
        if let Injection::Header(k, v) = injection {
            headers.insert(k.clone(), v.clone());
        }
        match &self.host {
            Some(h) => headers.insert(http::header::HOST, h.clone()),
            None => headers.remove(http::header::HOST),
        };
    }
}

/// The decoded name of a `name=value` query pair.
fn param_name(pair: &str) -> String {
    let name = pair.split('=').next().unwrap_or("").replace('+', " ");
    percent_encoding::percent_decode_str(&name)
        .decode_utf8_lossy()
        .into_owned()
}

// === impl UpstreamRegistry ===

impl UpstreamRegistry {
    /// A registry with the config-declared upstreams; stored ones are added by [`Self::reload`].
    pub fn new(
        declared: Vec<RegisteredUpstream>,
        defaults: &UpstreamConfig,
        metrics: Arc<Metrics>,
    ) -> Result<Self, UpstreamSetupError> {
        let tls = crate::proxy::forward::client_tls(defaults)?;
        let mut entries = Vec::new();
        for u in declared {
            let name = u.name.clone();
            let entry = Entry::build(u, Source::Config, defaults, &tls)
                .map_err(|e| UpstreamSetupError::Registered(name, e.message))?;
            entries.push(Arc::new(entry));
        }
        let registry = Self {
            snapshot: ArcSwap::from_pointee(Snapshot::default()),
            write: Mutex::new(()),
            declared: entries,
            tls,
            defaults: defaults.clone(),
            metrics,
        };
        registry.reload(Vec::new());
        Ok(registry)
    }

    /// Metrics (token fetches).
    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// The active upstream named `name`, or a 502 saying why a route cannot use it.
    pub fn active(&self, name: &str) -> Result<Arc<Entry>, crate::error::Error> {
        use crate::error::Error;
        let entry = self.get(name).ok_or_else(|| {
            Error::bad_gateway(format!("the route's upstream {name:?} is not registered"))
        })?;
        if !entry.upstream.is_active {
            return Err(Error::bad_gateway(format!(
                "the upstream {name:?} is not active"
            )));
        }
        Ok(entry)
    }

    /// The entry named `name` (or with that id), active or not.
    pub fn get(&self, name: &str) -> Option<Arc<Entry>> {
        self.snapshot.load().by_name.get(name).cloned()
    }

    /// The upstream with this id or name.
    pub fn find(&self, id_or_name: &str) -> Option<Arc<Entry>> {
        let s = self.snapshot.load();
        s.by_id
            .get(id_or_name)
            .or_else(|| s.by_name.get(id_or_name))
            .cloned()
    }

    /// Every upstream.
    pub fn all(&self) -> Vec<Arc<Entry>> {
        self.snapshot.load().by_id.values().cloned().collect()
    }

    /// Build an entry for a stored upstream (validates that it can be used).
    pub fn build(&self, upstream: RegisteredUpstream) -> Result<Arc<Entry>, CredentialError> {
        Entry::build(upstream, Source::Store, &self.defaults, &self.tls).map(Arc::new)
    }

    /// Add or replace a stored upstream.
    pub fn upsert(&self, entry: Arc<Entry>) {
        self.change(|s| {
            if let Some(old) = s.by_id.remove(&entry.upstream.id) {
                s.by_name.remove(&old.upstream.name);
            }
            s.by_name
                .insert(entry.upstream.name.clone(), Arc::clone(&entry));
            s.by_id.insert(entry.upstream.id.clone(), entry);
        });
    }

    /// Remove a stored upstream by id.
    pub fn remove(&self, id: &str) {
        self.change(|s| {
            if let Some(old) = s.by_id.remove(id) {
                s.by_name.remove(&old.upstream.name);
            }
        });
    }

    /// Replace every stored upstream, keeping the entries (and tokens) whose version is unchanged.
    pub fn reload(&self, stored: Vec<RegisteredUpstream>) {
        let _guard = self
            .write
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let old = self.snapshot.load_full();
        let mut next = Snapshot::default();
        for u in stored {
            let entry = match old.by_id.get(&u.id) {
                Some(e) if e.source == Source::Store && e.upstream.version == u.version => {
                    Arc::clone(e)
                }
                _ => {
                    let (id, name) = (u.id.clone(), u.name.clone());
                    match self.build(u) {
                        Ok(e) => e,
                        Err(e) => {
                            tracing::error!(upstream_id = %id, upstream = %name, error = %e,
                                "Stored upstream cannot be used");
                            continue;
                        }
                    }
                }
            };
            next.by_name
                .insert(entry.upstream.name.clone(), Arc::clone(&entry));
            next.by_id.insert(entry.upstream.id.clone(), entry);
        }
        // Config-declared upstreams win a name clash (the admin API refuses to create one).
        for e in &self.declared {
            if let Some(clash) = next.by_name.remove(&e.upstream.name) {
                next.by_id.remove(&clash.upstream.id);
            }
            next.by_name.insert(e.upstream.name.clone(), Arc::clone(e));
            next.by_id.insert(e.upstream.id.clone(), Arc::clone(e));
        }
        self.snapshot.store(Arc::new(next));
    }

    fn change(&self, f: impl FnOnce(&mut Snapshot)) {
        let _guard = self
            .write
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let old = self.snapshot.load();
        let mut next = Snapshot {
            by_id: old.by_id.clone(),
            by_name: old.by_name.clone(),
        };
        f(&mut next);
        self.snapshot.store(Arc::new(next));
    }
}
