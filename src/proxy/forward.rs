//! The upstream client (a dedicated HTTP/1.1 pool for `http://` upstreams, hyper-util's pooled client with
//! TLS and h2 by ALPN for `https://` ones), the upstream URI, timeouts, and the classification of upstream
//! failures into 502 and 504.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::FutureExt;
use futures_util::future::Either;
use http::{HeaderValue, Request, Response, Uri, uri::PathAndQuery};
use http_body_util::combinators::BoxBody;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::{Client, connect::HttpConnector};
use hyper_util::rt::{TokioExecutor, TokioTimer};

use super::headers::AddedFields;
use super::pool::{H1Pool, PoolError, UpstreamBody};
use crate::config::UpstreamConfig;
use crate::error::Error;
use crate::timer::SleepPool;

/// A body error, boxed.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
/// The body type sent upstream and returned to clients.
pub type ProxyBody = BoxBody<Bytes, BoxError>;

/// Box a complete (in-memory) response body.
pub fn boxed(response: Response<http_body_util::Full<Bytes>>) -> Response<ProxyBody> {
    use http_body_util::BodyExt;
    response.map(|b| b.map_err(|e| match e {}).boxed())
}

/// The upstream client with its target and timeouts.
pub struct Upstream {
    /// Proxied traffic to an `http://` upstream: the dedicated HTTP/1.1 pool.
    pool: Option<Arc<H1Pool>>,
    /// Everything else: `https://` upstreams, and token, CSRF and verify calls to any URL.
    client: Client<HttpsConnector<HttpConnector>, ProxyBody>,
    base: Uri,
    base_path: String,
    host: Option<HeaderValue>,
    timeout: Duration,
    /// Reusable sleeps for the response timeout of proxied requests (`crate::timer`).
    sleeps: SleepPool,
}

/// Why the upstream client could not be built.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamSetupError {
    /// The CA file could not be read or parsed.
    #[error("upstream.ca_file {0}: {1}")]
    CaFile(String, String),
    /// A config-declared registered upstream cannot be used.
    #[error("upstreams {0}: {1}")]
    Registered(String, String),
}

// === impl Upstream ===

impl Upstream {
    /// Build the pooled client for `cfg`.
    pub fn new(cfg: &UpstreamConfig) -> Result<Self, UpstreamSetupError> {
        Ok(Self::with_tls(cfg, client_tls(cfg)?))
    }

    /// Build the pooled client for `cfg` with a ready TLS config (registered upstreams share one).
    pub fn with_tls(cfg: &UpstreamConfig, tls: rustls::ClientConfig) -> Self {
        let pool = match cfg.url.authority() {
            Some(authority) if cfg.url.scheme() == Some(&http::uri::Scheme::HTTP) => Some(
                H1Pool::new(authority.as_str(), cfg.pool_max_idle, cfg.connect_timeout),
            ),
            _ => None,
        };
        let base_path = cfg.url.path().trim_end_matches('/').to_owned();
        Self {
            pool,
            client: general_client(cfg, tls),
            base: cfg.url.clone(),
            base_path,
            host: cfg
                .url
                .authority()
                .and_then(|a| HeaderValue::from_str(a.as_str()).ok()),
            timeout: cfg.timeout,
            sleeps: SleepPool::default(),
        }
    }
}

/// hyper-util's pooled client: any URL, TLS, and h2 when an `https://` upstream offers it by ALPN.
fn general_client(
    cfg: &UpstreamConfig,
    tls: rustls::ClientConfig,
) -> Client<HttpsConnector<HttpConnector>, ProxyBody> {
    let mut http = HttpConnector::new();
    http.enforce_http(false);
    http.set_connect_timeout(Some(cfg.connect_timeout));
    http.set_nodelay(true);
    let connector = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_or_http()
        .enable_http1()
        .enable_http2()
        .wrap_connector(http);
    Client::builder(TokioExecutor::new())
        .pool_timer(TokioTimer::new())
        .timer(TokioTimer::new())
        .pool_idle_timeout(Duration::from_secs(60))
        .pool_max_idle_per_host(cfg.pool_max_idle)
        .build(connector)
}

impl Upstream {
    /// The upstream URI for an incoming target: the base's path prefix, then the request's path and query as
    /// received; in origin form for the HTTP/1.1 pool, absolute (scheme and authority first) otherwise.
    pub fn target(&self, incoming: &Uri) -> Result<Uri, Error> {
        let invalid = || Error::invalid("path", "the request target is not a valid path");
        let pq = match incoming.path_and_query() {
            // The common case: no path prefix, the received target reused as it is (a reference count).
            Some(pq) if self.base_path.is_empty() => pq.clone(),
            Some(pq) => format!("{}{}", self.base_path, pq.as_str())
                .parse()
                .map_err(|_| invalid())?,
            None => PathAndQuery::from_static("/"),
        };
        if self.pool.is_some() {
            return Ok(Uri::from(pq));
        }
        self.absolute(pq).ok_or_else(invalid)
    }

    /// `pq` on this upstream's scheme and authority.
    fn absolute(&self, pq: PathAndQuery) -> Option<Uri> {
        let mut parts = http::uri::Parts::default();
        parts.scheme = self.base.scheme().cloned();
        parts.authority = self.base.authority().cloned();
        parts.path_and_query = Some(pq);
        Uri::from_parts(parts).ok()
    }

    /// The authority to send as `Host` when the client's is not preserved.
    pub fn host(&self) -> Option<&HeaderValue> {
        self.host.as_ref()
    }

    /// Send a proxied request (to this upstream's authority): a timeout is a 504, any other failure a 502.
    /// Not an `async fn`, so the future holds the request only once (inside the pool's or the client's own).
    /// The fields Keyward adds go with it (see [`AddedFields`]). The response timeout runs from `sent`, the
    /// caller's clock reading as it sends.
    pub fn send(
        &self,
        mut req: Request<ProxyBody>,
        added: Option<AddedFields<'_>>,
        sent: std::time::Instant,
    ) -> impl Future<Output = Result<Response<UpstreamBody>, Error>> + '_ {
        let pooled = self.pool.as_ref().filter(|_| {
            req.uri().authority().is_none() || req.uri().authority() == self.base.authority()
        });
        // Combinators rather than an `async` block: a block would hold the exchange twice in its state (as the
        // captured value and as the awaited one), and this future is part of every request's.
        let exchange = match pooled {
            Some(pool) => Either::Left(
                self.sleeps
                    .timeout_at(
                        tokio::time::Instant::from_std(sent) + self.timeout,
                        pool.send(req, added),
                    )
                    .map(|outcome| match outcome {
                        Err(_) | Ok(Err(PoolError::ConnectTimeout)) => Err(ExchangeError::Timeout),
                        Ok(Ok(resp)) => Ok(resp),
                        Ok(Err(e)) => Err(failure(&e)),
                    }),
            ),
            None => {
                if let Some(added) = added {
                    added.insert_into(req.headers_mut());
                }
                // Boxed for the size of every request's future, as in the pool.
                Either::Right(Box::pin(self.exchange(req)))
            }
        };
        exchange.map(|result| {
            result.map_err(|e| match e {
                ExchangeError::Timeout => Error::UpstreamTimeout,
                ExchangeError::Failed(detail) => Error::UpstreamUnreachable(detail),
            })
        })
    }

    /// Send a request to any URL through the general client and tell why it failed in plain words (token
    /// fetches, CSRF fetches, `verify`); waits at most the response timeout for the response headers.
    /// An origin-form target (from [`Upstream::target`]) is sent to this upstream.
    pub async fn exchange(
        &self,
        mut req: Request<ProxyBody>,
    ) -> Result<Response<UpstreamBody>, ExchangeError> {
        if req.uri().authority().is_none() {
            let pq = req.uri().path_and_query().cloned();
            if let Some(uri) = self.absolute(pq.unwrap_or_else(|| PathAndQuery::from_static("/"))) {
                *req.uri_mut() = uri;
            }
        }
        match tokio::time::timeout(self.timeout, self.client.request(req)).await {
            Err(_) => Err(ExchangeError::Timeout),
            Ok(Ok(resp)) => Ok(resp.map(UpstreamBody::unpooled)),
            Ok(Err(e)) => Err(failure(&e)),
        }
    }
}

/// A failed exchange: a timeout anywhere in the chain, or the innermost cause.
fn failure(e: &(dyn std::error::Error + 'static)) -> ExchangeError {
    if timed_out(e) {
        ExchangeError::Timeout
    } else {
        ExchangeError::Failed(innermost(e))
    }
}

/// Why an exchange failed, in words safe to show (no URL, no header, no secret).
#[derive(Debug, thiserror::Error)]
pub enum ExchangeError {
    /// No response headers within the timeout (or the connect timed out).
    #[error("timed out")]
    Timeout,
    /// The connection failed or broke; the innermost cause.
    #[error("{0}")]
    Failed(String),
}

/// The innermost cause of an error, e.g. "Connection refused (os error 111)" or "dns error: ...".
fn innermost(e: &(dyn std::error::Error + 'static)) -> String {
    let mut last: &(dyn std::error::Error + 'static) = e;
    let mut described = e.to_string();
    while let Some(s) = last.source() {
        let text = s.to_string();
        if !text.is_empty() {
            described = text;
        }
        last = s;
    }
    described
}

/// Whether a failure was a timeout anywhere in its chain (a connect timeout is a 504, not a 502).
fn timed_out(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(s) = source {
        if let Some(io) = s.downcast_ref::<std::io::Error>() {
            if io.kind() == std::io::ErrorKind::TimedOut {
                return true;
            }
        }
        if s.to_string().contains("timed out") {
            return true;
        }
        source = s.source();
    }
    false
}

/// rustls client config: the system's roots (webpki-roots fallback is not bundled) plus an optional CA file.
pub fn client_tls(cfg: &UpstreamConfig) -> Result<rustls::ClientConfig, UpstreamSetupError> {
    let mut roots = rustls::RootCertStore::empty();
    let native = rustls_native_certs::load_native_certs();
    for cert in native.certs {
        let _ = roots.add(cert);
    }
    if let Some(path) = &cfg.ca_file {
        let shown = path.display().to_string();
        let pem = std::fs::read(path)
            .map_err(|e| UpstreamSetupError::CaFile(shown.clone(), e.to_string()))?;
        for cert in rustls_pemfile::certs(&mut pem.as_slice()) {
            let cert =
                cert.map_err(|e| UpstreamSetupError::CaFile(shown.clone(), e.to_string()))?;
            roots
                .add(cert)
                .map_err(|e| UpstreamSetupError::CaFile(shown.clone(), e.to_string()))?;
        }
    }
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| UpstreamSetupError::CaFile("tls".into(), e.to_string()))?;
    Ok(builder.with_root_certificates(roots).with_no_client_auth())
}

/// After a 101, copy bytes both ways between the client and the upstream (WebSocket and other upgrades).
pub(super) fn tunnel(client: hyper::upgrade::OnUpgrade, upstream: hyper::upgrade::OnUpgrade) {
    tokio::spawn(async move {
        let (Ok(client), Ok(upstream)) = tokio::join!(client, upstream) else {
            return;
        };
        let (mut client, mut upstream) = (
            hyper_util::rt::TokioIo::new(client),
            hyper_util::rt::TokioIo::new(upstream),
        );
        let _ = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
    });
}

/// The upstream's response on its way back: hop-by-hop headers out, body streamed.
pub(super) fn finish_response(response: Response<UpstreamBody>) -> Response<ProxyBody> {
    let (mut parts, body) = response.into_parts();
    if !body.hop_by_hop_removed() {
        let upgrade = parts.status == http::StatusCode::SWITCHING_PROTOCOLS;
        super::headers::remove_hop_by_hop(&mut parts.headers, upgrade);
    }
    use http_body_util::BodyExt;
    Response::from_parts(parts, body.boxed())
}
