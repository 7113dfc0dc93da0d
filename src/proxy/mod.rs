//! The data-plane service: an outer call (render the error, record metrics, write the access log, each exactly
//! once) around the inner pipeline: limits, route, authenticate, authorize, body check, sanitize, forward.

mod body;
pub mod forward;
pub mod h1;
pub mod headers;
pub mod pool;

use std::sync::Arc;
use std::time::Instant;

use http::{HeaderValue, Request, Response, header};
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;

use crate::auth::{Authenticated, Authenticator, RequestView};
use crate::config::{Config, Limits, ProxyConfig, Scheme};
use crate::error::Error;
use crate::metrics::{self, Metrics};
use crate::routes::{AuthMode, RouteTable, Rule};
use crate::server::ConnInfo;
use crate::upstreams::UpstreamRegistry;
use crate::upstreams::credentials::Token;
use body::{check_empty_body, content_length, read_signed_body};
use forward::{ProxyBody, Upstream, finish_response, tunnel};
use headers::ContextHeaders;

/// Everything the proxy needs, shared by all connections.
pub struct ProxyState {
    auth: Arc<Authenticator>,
    routes: RouteTable,
    upstream: Upstream,
    registry: Arc<UpstreamRegistry>,
    context: ContextHeaders,
    cfg: ProxyConfig,
    limits: Limits,
    metrics: Arc<Metrics>,
    counters: metrics::RequestCounters,
    access_log: bool,
}

/// What the outer call records about a request.
#[derive(Default)]
struct Trace<'a> {
    route: &'a str,
    route_index: Option<usize>,
    scheme: &'static str,
    key_id: Option<Arc<crate::keys::cache::KeyEntry>>,
    reason: &'static str,
    /// When the upstream's response head was in: the end of both the upstream's and the request's duration
    /// (one clock read for the two).
    answered: Option<Instant>,
}

// === impl ProxyState ===

impl ProxyState {
    /// Build the proxy from config.
    pub fn new(
        cfg: &Config,
        auth: Arc<Authenticator>,
        metrics: Arc<Metrics>,
    ) -> Result<Self, forward::UpstreamSetupError> {
        let routes = RouteTable::new(cfg.routes.clone(), cfg.default_route.clone());
        let counters = metrics::RequestCounters::new(&metrics, routes.names());
        Ok(Self {
            auth,
            routes,
            counters,
            upstream: Upstream::new(&cfg.upstream)?,
            registry: Arc::new(UpstreamRegistry::new(
                cfg.upstreams.clone(),
                &cfg.upstream,
                Arc::clone(&metrics),
            )?),
            context: ContextHeaders::new(&cfg.proxy.context_prefix),
            cfg: cfg.proxy.clone(),
            limits: cfg.limits.clone(),
            metrics,
            access_log: cfg.log.access_log,
        })
    }
}

impl ProxyState {
    /// The registered upstreams (shared with the admin API).
    pub fn upstreams(&self) -> &Arc<UpstreamRegistry> {
        &self.registry
    }
}

/// The outer call: run the pipeline, render any error, record metrics and the access log once.
///
/// A plain function returning an `async move` block rather than an `async fn`: an `async fn` keeps each
/// argument twice in its state (the parameter and its local), and this future is moved by hyper whole.
#[allow(
    clippy::manual_async_fn,
    reason = "an async fn would keep each argument twice in its state"
)]
pub fn handle(
    state: Arc<ProxyState>,
    conn: ConnInfo,
    req: Request<Incoming>,
) -> impl Future<Output = Response<ProxyBody>> + Send {
    async move {
        let started = Instant::now();
        let request_id = headers::request_id(req.headers());
        let method = req.method().clone();
        let path = if state.access_log {
            req.uri().path().to_owned()
        } else {
            String::new()
        };
        let mut trace = Trace {
            scheme: "none",
            ..Trace::default()
        };
        let result = pipeline(&state, conn, req, started, &request_id, &mut trace).await;
        let mut response = match result {
            Ok(r) => r,
            Err(e) => {
                if let Error::BadGateway(problem) = &e {
                    trace.reason = "upstream_credentials";
                    tracing::warn!(request_id = ?request_id, route = trace.route, error = %problem.description,
                        "Registered upstream failed");
                }
                if let Error::Unauthenticated(f) = &e {
                    trace.reason = f.reason;
                    state
                        .metrics
                        .auth_failures
                        .with_label_values(&[f.reason])
                        .inc();
                } else if let Error::Internal(detail) | Error::UpstreamUnreachable(detail) = &e {
                    tracing::error!(request_id = ?request_id, error = %detail, "Request failed");
                }
                if trace.reason.is_empty() {
                    trace.reason = error_reason(&e);
                }
                crate::proxy::forward::boxed(e.to_response())
            }
        };
        let status = response.status().as_u16();
        let elapsed = trace
            .answered
            .unwrap_or_else(Instant::now)
            .saturating_duration_since(started);
        let route = if trace.route.is_empty() {
            "unmatched"
        } else {
            trace.route
        };
        let scheme = metrics::SCHEME_LABELS
            .iter()
            .position(|s| *s == trace.scheme)
            .unwrap_or(0);
        state.counters.inc(
            trace
                .route_index
                .unwrap_or_else(|| state.counters.unmatched()),
            &method,
            status,
            scheme,
        );
        state
            .metrics
            .request_duration
            .observe(elapsed.as_secs_f64());
        if state.access_log {
            crate::access_log::write(&crate::access_log::AccessRecord {
                listener: "proxy",
                request_id: request_id.to_str().unwrap_or(""),
                peer: conn.peer,
                method: method.as_str(),
                path: &path,
                route,
                status,
                scheme: trace.scheme,
                key_id: trace.key_id.as_ref().map_or("", |e| e.key.id.as_str()),
                reason: trace.reason,
                duration: elapsed,
            });
        }
        // Moved, not cloned: a clone of a freshly made value costs an allocation.
        response
            .headers_mut()
            .insert(headers::REQUEST_ID, request_id);
        response
    }
}

/// The inner pipeline; each step returns `Result<_, Error>` and renders nothing.
#[allow(
    clippy::manual_async_fn,
    reason = "an async fn would keep each argument twice in its state"
)]
fn pipeline<'s>(
    state: &'s ProxyState,
    conn: ConnInfo,
    mut req: Request<Incoming>,
    received: Instant,
    request_id: &HeaderValue,
    trace: &mut Trace<'s>,
) -> impl Future<Output = Result<Response<ProxyBody>, Error>> {
    // An `async move` block for the reason given at `handle`.
    async move {
        let declared = content_length(&req)?;
        if declared.is_some_and(|n| n > state.limits.max_body) {
            return Err(Error::PayloadTooLarge(state.limits.max_body));
        }
        let (route_index, rule) = state.routes.find_indexed(req.method(), req.uri().path());
        trace.route = &rule.name;
        trace.route_index = Some(route_index);
        let principal = authenticate(state, conn, &req, received, rule, declared, trace)?;
        let upgrade =
            req.headers().contains_key(header::UPGRADE) && req.version() == http::Version::HTTP_11;
        let client_upgrade = upgrade.then(|| hyper::upgrade::on(&mut req));
        // The request's parts live in this block only: once the exchange's future is made they are dead, so
        // the state kept across its await does not also hold them.
        let registered;
        let (exchange, used, sent) = {
            let (mut parts, body) = req.into_parts();
            let body: ProxyBody = match principal.as_ref().and_then(|a| a.body_check.as_ref()) {
                Some(check) if !http_body::Body::is_end_stream(&body) => {
                    read_signed_body(body, check, declared, state.limits.max_signed_body)
                        .await?
                        .map_err(|e| match e {})
                        .boxed()
                }
                check => {
                    // A signed body that ended before its first byte (a GET) is checked without a read.
                    if let Some(check) = check {
                        check_empty_body(check)?;
                    }
                    Limited::new(
                        body,
                        usize::try_from(state.limits.max_body).unwrap_or(usize::MAX),
                    )
                    .boxed()
                }
            };
            // The fields Keyward adds go with the request to the upstream client, which writes them where it is
            // cheapest (see `AddedFields`); `sanitize` has stripped every client-sent field of their names.
            let added = headers::AddedFields {
                forwarded: sanitize(state, conn, &mut parts, upgrade),
                context: principal.as_ref().map(|a| state.context.of(&a.principal)),
                request_id,
            };
            registered = match &rule.upstream {
                Some(name) => Some(state.registry.active(name)?),
                None => None,
            };
            let mut upstream_req = Request::from_parts(parts, body);
            let (used, added) = match &registered {
                Some(entry) => {
                    // A registered upstream's own headers are set after the added fields and win over them.
                    added.insert_into(upstream_req.headers_mut());
                    // Boxed: only registered upstreams take it, and its future would enlarge every request's.
                    let used = Box::pin(inject(state, entry, &mut upstream_req)).await?;
                    (used, None)
                }
                None => {
                    *upstream_req.uri_mut() = state.upstream.target(upstream_req.uri())?;
                    (None, Some(added))
                }
            };
            *upstream_req.version_mut() = http::Version::HTTP_11;
            let client = registered.as_ref().map_or(&state.upstream, |e| &e.client);
            // One clock read: the upstream duration's start is the response timeout's too.
            let sent = Instant::now();
            (client.send(upstream_req, added, sent), used, sent)
        };
        let mut response = exchange.await?;
        if let (Some(entry), Some(token)) = (&registered, &used) {
            if response.status() == http::StatusCode::UNAUTHORIZED {
                // The upstream refused the token (revoked early, rotated): the next request fetches a new one.
                entry.credentials.retire(token);
            }
        }
        let answered = Instant::now();
        trace.answered = Some(answered);
        state
            .metrics
            .upstream_duration
            .observe(answered.saturating_duration_since(sent).as_secs_f64());
        if let (Some(client), true) = (
            client_upgrade,
            response.status() == http::StatusCode::SWITCHING_PROTOCOLS,
        ) {
            tunnel(client, hyper::upgrade::on(&mut response));
        }
        Ok(finish_response(response))
    }
}

/// Point the request at a registered upstream and inject its credentials and extra parameters, replacing what
/// the client sent in those places. Returns the token used, if any.
async fn inject(
    state: &ProxyState,
    entry: &crate::upstreams::registry::Entry,
    req: &mut Request<ProxyBody>,
) -> Result<Option<Arc<Token>>, Error> {
    let (injection, used) = entry
        .credentials
        .injection(&entry.client, &state.metrics)
        .await
        .map_err(|e| {
            Error::bad_gateway(format!(
                "the credentials for upstream {:?} could not be obtained: {e}",
                entry.upstream.name
            ))
        })?;
    *req.uri_mut() = entry.target(req.uri(), &injection)?;
    entry.set_headers(req.headers_mut(), &injection);
    Ok(used)
}

/// Route auth mode, authentication, and claims.
fn authenticate<'s>(
    state: &'s ProxyState,
    conn: ConnInfo,
    req: &Request<Incoming>,
    received: Instant,
    rule: &Rule,
    declared: Option<u64>,
    trace: &mut Trace<'s>,
) -> Result<Option<Authenticated>, Error> {
    if rule.auth == AuthMode::None {
        return Ok(None);
    }
    let (scheme, authority) = client_origin(&state.cfg, conn, req);
    let view = RequestView {
        method: req.method(),
        uri: req.uri(),
        headers: req.headers(),
        scheme,
        authority,
        has_body: declared.is_some_and(|n| n > 0)
            || (declared.is_none() && req.headers().contains_key(header::TRANSFER_ENCODING)),
        received,
    };
    let authenticated = state
        .auth
        .authenticate(&view)
        .map_err(Error::Unauthenticated)?;
    let Some(authenticated) = authenticated else {
        if rule.auth == AuthMode::Required || !rule.require.is_empty() {
            return Err(Error::Unauthenticated(crate::auth::missing()));
        }
        return Ok(None);
    };
    let p = &authenticated.principal;
    trace.scheme = scheme_label(p.scheme);
    trace.key_id = Some(Arc::clone(&p.entry));
    crate::policy::authorize(&p.entry.claims, &rule.require)
        .map_err(|missing| Error::InsufficientScope { missing })?;
    Ok(Some(authenticated))
}

/// The scheme and authority the client used; forwarded headers count only when trusted.
fn client_origin<'r>(
    cfg: &ProxyConfig,
    conn: ConnInfo,
    req: &'r Request<Incoming>,
) -> (&'static str, &'r str) {
    let forwarded = |name: &http::HeaderName| {
        cfg.trust_forwarded
            .then(|| req.headers().get(name).and_then(|v| v.to_str().ok()))
            .flatten()
    };
    let scheme = match forwarded(&headers::X_FORWARDED_PROTO) {
        Some(p) if p.eq_ignore_ascii_case("https") => "https",
        Some(_) => "http",
        None if conn.tls => "https",
        None => "http",
    };
    let authority = forwarded(&headers::X_FORWARDED_HOST)
        .or_else(|| {
            req.headers()
                .get(header::HOST)
                .and_then(|v| v.to_str().ok())
        })
        .or_else(|| req.uri().authority().map(|a| a.as_str()))
        .unwrap_or("");
    (scheme, authority)
}

/// Headers on the way upstream: hop-by-hop out, credentials and spoofed context out, and every field Keyward
/// adds itself out, after reading what is kept of the client's forwarding fields. Returns those; the upstream
/// client adds them with the context and the request id (`AddedFields`).
fn sanitize(
    state: &ProxyState,
    conn: ConnInfo,
    parts: &mut http::request::Parts,
    upgrade: bool,
) -> headers::Forwarded {
    let h = &mut parts.headers;
    let sent_host = h.get(header::HOST).cloned();
    let host = sent_host.clone().or_else(|| {
        parts
            .uri
            .authority()
            .and_then(|a| HeaderValue::from_str(a.as_str()).ok())
    });
    let forwarded = headers::Forwarded::new(
        h,
        conn.peer,
        if conn.tls { "https" } else { "http" },
        host.clone(),
        state.cfg.trust_forwarded,
    );
    headers::strip(
        h,
        &headers::StripRules {
            keep_upgrade: upgrade,
            api_key_header: (!state.cfg.forward_credentials).then_some(&state.cfg.api_key_header),
            context_prefix: Some(state.context.prefix()),
            added: true,
        },
    );
    if !state.cfg.preserve_host {
        match state.upstream.host() {
            Some(v) => h.insert(header::HOST, v.clone()),
            None => h.remove(header::HOST),
        };
    } else if let (None, Some(from_uri)) = (sent_host, host) {
        // An absolute-form target without `Host` (HTTP/1.1 proxies' style): name it from the URI.
        h.insert(header::HOST, from_uri);
    }
    forwarded
}

fn scheme_label(s: Scheme) -> &'static str {
    match s {
        Scheme::Bearer => "bearer",
        Scheme::Nws4 => "nws4",
        Scheme::Rfc9421 => "rfc9421",
    }
}

fn error_reason(e: &Error) -> &'static str {
    match e {
        Error::InsufficientScope { .. } => "insufficient_scope",
        Error::PayloadTooLarge(_) => "body_too_large",
        Error::UpstreamUnreachable(_) => "upstream_unreachable",
        Error::UpstreamTimeout => "upstream_timeout",
        _ => "error",
    }
}
