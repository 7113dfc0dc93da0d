//! Every Prometheus metric, declared and registered once (DESIGN.md §10). Labels are low-cardinality: route
//! names from config, method, status class, scheme, reason. Never a key id or a raw path.

use std::sync::atomic::{AtomicI64, Ordering};

use prometheus::{
    Encoder, Gauge, Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, IntGaugeVec,
    Opts, Registry, TextEncoder,
};

use crate::keys::cache::KeyCache;

/// `keyward_requests_total{route,method,status_class,scheme}`.
pub const REQUESTS_TOTAL: &str = "keyward_requests_total";
/// `keyward_auth_failures_total{reason}`.
pub const AUTH_FAILURES_TOTAL: &str = "keyward_auth_failures_total";
/// `keyward_request_duration_seconds`.
pub const REQUEST_DURATION: &str = "keyward_request_duration_seconds";
/// `keyward_upstream_duration_seconds`.
pub const UPSTREAM_DURATION: &str = "keyward_upstream_duration_seconds";
/// `keyward_keys{state}`.
pub const KEYS: &str = "keyward_keys";
/// `keyward_admin_requests_total{endpoint,status_class}`.
pub const ADMIN_REQUESTS_TOTAL: &str = "keyward_admin_requests_total";
/// `keyward_store_up`: 1 when the last store call succeeded.
pub const STORE_UP: &str = "keyward_store_up";
/// `keyward_store_reconnects_total`: change-feed connections re-established after a loss.
pub const STORE_RECONNECTS_TOTAL: &str = "keyward_store_reconnects_total";
/// `keyward_store_last_sync_age_seconds`: time since the map was last known to match the store.
pub const STORE_LAST_SYNC_AGE: &str = "keyward_store_last_sync_age_seconds";
/// `keyward_token_fetches_total{result}`: token and CSRF fetches for registered upstreams (`ok`, `error`).
pub const TOKEN_FETCHES_TOTAL: &str = "keyward_token_fetches_total";
/// `keyward_build_info{version,store}`: always 1.
pub const BUILD_INFO: &str = "keyward_build_info";

const LATENCY_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// The registry and its metrics.
pub struct Metrics {
    registry: Registry,
    /// Proxy requests.
    pub requests: IntCounterVec,
    /// Authentication failures by reason.
    pub auth_failures: IntCounterVec,
    /// Whole-request latency on the proxy.
    pub request_duration: Histogram,
    /// Time from sending to the upstream to its response headers.
    pub upstream_duration: Histogram,
    /// Admin requests.
    pub admin_requests: IntCounterVec,
    /// Store health.
    pub store_up: IntGauge,
    /// Change-feed reconnects.
    pub store_reconnects: IntCounter,
    /// Outbound token fetches by result.
    pub token_fetches: IntCounterVec,
    store_last_sync_age: Gauge,
    /// Unix time in milliseconds of the last sync (see [`Metrics::mark_synced`]).
    last_sync_ms: AtomicI64,
    keys: IntGaugeVec,
}

// === impl Metrics ===

impl Metrics {
    /// Create and register everything.
    pub fn new(store_kind: &str) -> Self {
        let registry = Registry::new();
        let requests = IntCounterVec::new(
            Opts::new(REQUESTS_TOTAL, "Proxy requests answered"),
            &["route", "method", "status_class", "scheme"],
        )
        .expect("valid metric");
        let auth_failures = IntCounterVec::new(
            Opts::new(AUTH_FAILURES_TOTAL, "Authentication failures by reason"),
            &["reason"],
        )
        .expect("valid metric");
        let request_duration = Histogram::with_opts(
            HistogramOpts::new(REQUEST_DURATION, "Proxy request latency")
                .buckets(LATENCY_BUCKETS.to_vec()),
        )
        .expect("valid metric");
        let upstream_duration = Histogram::with_opts(
            HistogramOpts::new(UPSTREAM_DURATION, "Upstream latency to response headers")
                .buckets(LATENCY_BUCKETS.to_vec()),
        )
        .expect("valid metric");
        let admin_requests = IntCounterVec::new(
            Opts::new(ADMIN_REQUESTS_TOTAL, "Admin API requests"),
            &["endpoint", "status_class"],
        )
        .expect("valid metric");
        let store_up = IntGauge::new(STORE_UP, "1 when the key store answered the last call")
            .expect("valid metric");
        let store_reconnects = IntCounter::new(
            STORE_RECONNECTS_TOTAL,
            "Store change-feed connections re-established after a loss",
        )
        .expect("valid metric");
        let store_last_sync_age = Gauge::new(
            STORE_LAST_SYNC_AGE,
            "Seconds since the in-memory keys were last known to match the store",
        )
        .expect("valid metric");
        let token_fetches = IntCounterVec::new(
            Opts::new(
                TOKEN_FETCHES_TOTAL,
                "Token and CSRF fetches for registered upstreams, by result",
            ),
            &["result"],
        )
        .expect("valid metric");
        let keys = IntGaugeVec::new(Opts::new(KEYS, "API keys in memory by state"), &["state"])
            .expect("valid metric");
        let build = IntGaugeVec::new(
            Opts::new(BUILD_INFO, "Build and store information"),
            &["version", "store"],
        )
        .expect("valid metric");
        build
            .with_label_values(&[env!("CARGO_PKG_VERSION"), store_kind])
            .set(1);
        store_up.set(1);
        for c in [
            Box::new(requests.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(auth_failures.clone()),
            Box::new(request_duration.clone()),
            Box::new(upstream_duration.clone()),
            Box::new(admin_requests.clone()),
            Box::new(store_up.clone()),
            Box::new(store_reconnects.clone()),
            Box::new(token_fetches.clone()),
            Box::new(store_last_sync_age.clone()),
            Box::new(keys.clone()),
            Box::new(build),
        ] {
            registry
                .register(c)
                .expect("each metric is registered once");
        }
        Self {
            registry,
            requests,
            auth_failures,
            request_duration,
            upstream_duration,
            admin_requests,
            store_up,
            store_reconnects,
            token_fetches,
            store_last_sync_age,
            // The map is loaded from the store before the metrics are created.
            last_sync_ms: AtomicI64::new(chrono::Utc::now().timestamp_millis()),
            keys,
        }
    }

    /// Record that the in-memory map matches the store as of now (a full reload, an applied change, or a
    /// round trip proving that no change was missed).
    pub fn mark_synced(&self) {
        self.last_sync_ms
            .store(chrono::Utc::now().timestamp_millis(), Ordering::Relaxed);
    }

    /// Seconds since [`Metrics::mark_synced`] last ran.
    pub fn last_sync_age(&self) -> f64 {
        let age_ms =
            chrono::Utc::now().timestamp_millis() - self.last_sync_ms.load(Ordering::Relaxed);
        age_ms.max(0) as f64 / 1000.0
    }

    /// The Prometheus text exposition, with the key gauges refreshed from `cache`.
    pub fn render(&self, cache: &KeyCache) -> Vec<u8> {
        let counts = cache.state_counts(chrono::Utc::now());
        for (state, n) in [
            ("active", counts.active),
            ("inactive", counts.inactive),
            ("revoked", counts.revoked),
            ("expired", counts.expired),
        ] {
            self.keys
                .with_label_values(&[state])
                .set(i64::try_from(n).unwrap_or(i64::MAX));
        }
        self.store_last_sync_age.set(self.last_sync_age());
        let mut out = Vec::new();
        // Encoding into a Vec cannot fail for well-formed metrics.
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut out);
        out
    }
}

const METHOD_LABELS: [&str; 8] = [
    "GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS", "other",
];
const CLASS_LABELS: [&str; 5] = ["1xx", "2xx", "3xx", "4xx", "5xx"];
/// The `scheme` label values, in the order [`RequestCounters::inc`] takes them.
pub const SCHEME_LABELS: [&str; 4] = ["none", "bearer", "nws4", "rfc9421"];

/// The children of `keyward_requests_total`, resolved once per (route, method, class, scheme) on first use, so
/// counting a request is an index and an atomic add instead of hashing four label strings.
pub struct RequestCounters {
    family: IntCounterVec,
    routes: Vec<String>,
    slots: Vec<std::sync::OnceLock<prometheus::IntCounter>>,
}

impl RequestCounters {
    /// Counters for these route names (by index); one more index is the `unmatched` route.
    pub fn new(metrics: &Metrics, routes: impl IntoIterator<Item = String>) -> Self {
        let mut routes: Vec<String> = routes.into_iter().collect();
        routes.push("unmatched".into());
        let n = routes.len() * METHOD_LABELS.len() * CLASS_LABELS.len() * SCHEME_LABELS.len();
        Self {
            family: metrics.requests.clone(),
            routes,
            slots: (0..n).map(|_| std::sync::OnceLock::new()).collect(),
        }
    }

    /// The index of the `unmatched` route.
    pub fn unmatched(&self) -> usize {
        self.routes.len() - 1
    }

    /// Count one request. `scheme` indexes [`SCHEME_LABELS`]; an out-of-range route counts as unmatched.
    pub fn inc(&self, route: usize, method: &http::Method, status: u16, scheme: usize) {
        let route = route.min(self.unmatched());
        let method = METHOD_LABELS
            .iter()
            .position(|m| *m == method_label(method))
            .unwrap_or(METHOD_LABELS.len() - 1);
        let class = CLASS_LABELS
            .iter()
            .position(|c| *c == status_class(status))
            .unwrap_or(CLASS_LABELS.len() - 1);
        let scheme = scheme.min(SCHEME_LABELS.len() - 1);
        let index = ((route * METHOD_LABELS.len() + method) * CLASS_LABELS.len() + class)
            * SCHEME_LABELS.len()
            + scheme;
        let Some(slot) = self.slots.get(index) else {
            return;
        };
        slot.get_or_init(|| {
            self.family.with_label_values(&[
                &self.routes[route],
                METHOD_LABELS[method],
                CLASS_LABELS[class],
                SCHEME_LABELS[scheme],
            ])
        })
        .inc();
    }
}

/// `2xx`, `4xx`, … for a status code.
pub fn status_class(status: u16) -> &'static str {
    match status {
        100..=199 => "1xx",
        200..=299 => "2xx",
        300..=399 => "3xx",
        400..=499 => "4xx",
        _ => "5xx",
    }
}

/// The method as a bounded label.
pub fn method_label(m: &http::Method) -> &'static str {
    match *m {
        http::Method::GET => "GET",
        http::Method::POST => "POST",
        http::Method::PUT => "PUT",
        http::Method::DELETE => "DELETE",
        http::Method::PATCH => "PATCH",
        http::Method::HEAD => "HEAD",
        http::Method::OPTIONS => "OPTIONS",
        _ => "other",
    }
}
