//! Outbound credentials: what is injected into a request to a registered upstream, and the token fetches behind
//! the OAuth 2.0 client credentials and CSRF types.
//!
//! A fetched token is cached until shortly before it expires (`expires_in` minus a tenth, at most 30 s early).
//! Refresh is single flight: the first request that finds the token stale fetches while holding an async
//! mutex; the requests queued behind it find the fresh token (or the same failure) and do not fetch again.
//! Nothing here logs or returns a secret: failures name the step and the HTTP status or connection problem.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use arc_swap::ArcSwapOption;
use base64::Engine;
use bytes::Bytes;
use http::{HeaderName, HeaderValue, Method, Request, header};
use http_body_util::{BodyExt, Full, Limited};

use super::{ClientAuth, CsrfSource, KeyLocation, OutboundAuth, TokenContentType, TokenSource};
use crate::metrics::Metrics;
use crate::proxy::forward::{ProxyBody, Upstream};

/// Largest token response read.
const MAX_TOKEN_RESPONSE: usize = 64 * 1024;
/// Longest time a token is renewed before its expiry.
const MAX_EARLY_REFRESH: Duration = Duration::from_secs(30);
/// Reuse of a token whose response gave no `expires_in`.
const DEFAULT_TOKEN_TTL: Duration = Duration::from_secs(300);

/// Where a credential goes on the outbound request.
#[derive(Clone, Debug)]
pub enum Injection {
    /// Nothing.
    None,
    /// Set this header, replacing the client's.
    Header(HeaderName, HeaderValue),
    /// Set this query parameter, replacing the client's.
    Query(String, String),
}

/// A failed credential step: which one and why, safe to show (no secret, no token, no query string).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{step} step failed: {message}")]
pub struct CredentialError {
    /// `token` (OAuth 2.0) or `csrf`.
    pub step: &'static str,
    /// What went wrong.
    pub message: String,
}

/// The runtime form of an upstream's credential.
pub struct Credentials {
    kind: Kind,
}

enum Kind {
    Static(Injection),
    Token(Arc<TokenSource>, TokenCache),
    Csrf(Arc<CsrfSource>, TokenCache),
}

/// A cached token and the single-flight machinery around its refresh.
#[derive(Default)]
struct TokenCache {
    current: ArcSwapOption<Token>,
    refresh: tokio::sync::Mutex<()>,
    attempts: AtomicU64,
    last_error: std::sync::Mutex<Option<CredentialError>>,
}

/// A fetched token, ready to send.
#[derive(Debug)]
pub struct Token {
    header: HeaderName,
    value: HeaderValue,
    valid_until: Instant,
}

// === impl Credentials ===

impl Credentials {
    /// The runtime form of `auth`. Fails only on values validation already rejects.
    pub fn new(auth: &OutboundAuth) -> Result<Self, CredentialError> {
        let bad = |what: &str| CredentialError {
            step: "config",
            message: format!("invalid {what}"),
        };
        let kind = match auth {
            OutboundAuth::None => Kind::Static(Injection::None),
            OutboundAuth::Basic {
                user_name,
                secret,
                pre_encoded,
            } => {
                let encoded = if *pre_encoded {
                    secret.expose().to_owned()
                } else {
                    base64::engine::general_purpose::STANDARD.encode(format!(
                        "{}:{}",
                        user_name.as_deref().unwrap_or(""),
                        secret.expose()
                    ))
                };
                let mut value = HeaderValue::from_str(&format!("Basic {encoded}"))
                    .map_err(|_| bad("basic credential"))?;
                value.set_sensitive(true);
                Kind::Static(Injection::Header(header::AUTHORIZATION, value))
            }
            OutboundAuth::ApiKey {
                name,
                value,
                location: KeyLocation::Header,
            } => {
                let name = HeaderName::from_bytes(name.as_bytes()).map_err(|_| bad("header"))?;
                let mut value =
                    HeaderValue::from_str(value.expose()).map_err(|_| bad("key value"))?;
                value.set_sensitive(true);
                Kind::Static(Injection::Header(name, value))
            }
            OutboundAuth::ApiKey {
                name,
                value,
                location: KeyLocation::Query,
            } => Kind::Static(Injection::Query(name.clone(), value.expose().to_owned())),
            OutboundAuth::Oauth2ClientCredentials(t) => {
                HeaderName::from_bytes(t.header.as_bytes()).map_err(|_| bad("header"))?;
                Kind::Token(Arc::new((**t).clone()), TokenCache::default())
            }
            OutboundAuth::Csrf(c) => {
                HeaderName::from_bytes(c.header.as_bytes()).map_err(|_| bad("header"))?;
                Kind::Csrf(Arc::new((**c).clone()), TokenCache::default())
            }
        };
        Ok(Self { kind })
    }

    /// The injection for the next request: static, or the cached token (fetched once when stale). The token
    /// used is returned too, so that an upstream's 401 can retire exactly that token.
    pub async fn injection(
        &self,
        client: &Upstream,
        metrics: &Metrics,
    ) -> Result<(Injection, Option<Arc<Token>>), CredentialError> {
        let (cache, fetch) = match &self.kind {
            Kind::Static(i) => return Ok((i.clone(), None)),
            Kind::Token(source, cache) => (cache, Fetch::Token(source)),
            Kind::Csrf(source, cache) => (cache, Fetch::Csrf(source)),
        };
        let token = cache.get(|| fetch.run(client, metrics)).await?;
        Ok((
            Injection::Header(token.header.clone(), token.value.clone()),
            Some(token),
        ))
    }

    /// A fresh credential, bypassing the cache (for `verify`).
    pub async fn fresh(
        &self,
        client: &Upstream,
        metrics: &Metrics,
    ) -> Result<Injection, CredentialError> {
        let token = match &self.kind {
            Kind::Static(i) => return Ok(i.clone()),
            Kind::Token(source, _) => Fetch::Token(source).run(client, metrics).await?,
            Kind::Csrf(source, _) => Fetch::Csrf(source).run(client, metrics).await?,
        };
        Ok(Injection::Header(token.header.clone(), token.value.clone()))
    }

    /// The upstream refused `used` (401): drop it so the next request fetches a new one.
    pub fn retire(&self, used: &Arc<Token>) {
        if let Kind::Token(_, cache) | Kind::Csrf(_, cache) = &self.kind {
            let current = cache.current.load();
            if current.as_ref().is_some_and(|c| Arc::ptr_eq(c, used)) {
                cache.current.store(None);
            }
        }
    }
}

// === impl TokenCache ===

impl TokenCache {
    fn valid(&self) -> Option<Arc<Token>> {
        self.current
            .load_full()
            .filter(|t| t.valid_until > Instant::now())
    }

    /// The cached token, or one fetch by the first caller while the others wait for its result.
    async fn get<F, Fut>(&self, fetch: F) -> Result<Arc<Token>, CredentialError>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<Token, CredentialError>>,
    {
        if let Some(t) = self.valid() {
            return Ok(t);
        }
        let seen = self.attempts.load(Ordering::Acquire);
        let _guard = self.refresh.lock().await;
        if let Some(t) = self.valid() {
            return Ok(t);
        }
        if self.attempts.load(Ordering::Acquire) != seen {
            // A fetch ran while this request waited, and failed: share its answer rather than retry at once.
            if let Some(e) = self.last_error.lock().ok().and_then(|g| g.clone()) {
                return Err(e);
            }
        }
        let result = fetch().await;
        self.attempts.fetch_add(1, Ordering::AcqRel);
        match result {
            Ok(token) => {
                let token = Arc::new(token);
                self.current.store(Some(Arc::clone(&token)));
                if let Ok(mut g) = self.last_error.lock() {
                    *g = None;
                }
                Ok(token)
            }
            Err(e) => {
                if let Ok(mut g) = self.last_error.lock() {
                    *g = Some(e.clone());
                }
                Err(e)
            }
        }
    }
}

/// One token fetch.
enum Fetch<'a> {
    Token(&'a TokenSource),
    Csrf(&'a CsrfSource),
}

impl Fetch<'_> {
    async fn run(&self, client: &Upstream, metrics: &Metrics) -> Result<Token, CredentialError> {
        let result = match self {
            Self::Token(t) => fetch_oauth2(t, client).await,
            Self::Csrf(c) => fetch_csrf(c, client).await,
        };
        metrics
            .token_fetches
            .with_label_values(&[if result.is_ok() { "ok" } else { "error" }])
            .inc();
        if let Err(e) = &result {
            tracing::warn!(step = e.step, error = %e.message, "Upstream credential fetch failed");
        }
        result
    }
}

async fn fetch_oauth2(t: &TokenSource, client: &Upstream) -> Result<Token, CredentialError> {
    let fail = |message: String| CredentialError {
        step: "token",
        message,
    };
    let mut params: Vec<(&str, &str)> = vec![("grant_type", "client_credentials")];
    if let Some(scope) = &t.scope {
        params.push(("scope", scope));
    }
    if t.client_auth == ClientAuth::Body {
        params.push(("client_id", &t.client_id));
        params.push(("client_secret", t.client_secret.expose()));
    }
    params.extend(t.token_params.iter().map(|(k, v)| (k.as_str(), v.as_str())));
    let (content_type, body) = match t.content_type {
        TokenContentType::Form => (
            "application/x-www-form-urlencoded",
            params
                .iter()
                .map(|(k, v)| format!("{}={}", form_encode(k), form_encode(v)))
                .collect::<Vec<_>>()
                .join("&"),
        ),
        TokenContentType::Json => {
            let map: serde_json::Map<String, serde_json::Value> = params
                .iter()
                .map(|(k, v)| ((*k).to_owned(), serde_json::Value::from(*v)))
                .collect();
            (
                "application/json",
                serde_json::Value::Object(map).to_string(),
            )
        }
    };
    let mut req = Request::builder()
        .method(Method::POST)
        .uri(&t.token_url)
        .header(header::CONTENT_TYPE, content_type)
        .header(header::ACCEPT, "application/json");
    if t.client_auth == ClientAuth::Basic {
        // RFC 6749 §2.3.1: the id and secret are form-encoded before Basic encoding.
        let pair = format!(
            "{}:{}",
            form_encode(&t.client_id),
            form_encode(t.client_secret.expose())
        );
        let mut value = HeaderValue::from_str(&format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(pair)
        ))
        .map_err(|_| fail("the client credentials cannot be sent in a header".into()))?;
        value.set_sensitive(true);
        req = req.header(header::AUTHORIZATION, value);
    }
    let req = req
        .body(full(body))
        .map_err(|_| fail("the token URL is not a valid URL".into()))?;
    let (status, _, body) = exchange(client, req, "token").await?;
    if !status.is_success() {
        return Err(fail(format!("the token endpoint answered {status}")));
    }
    let json: serde_json::Value = serde_json::from_slice(&body)
        .map_err(|_| fail("the token endpoint did not answer with JSON".into()))?;
    let token = field(&json, &t.response_field).ok_or_else(|| {
        fail(format!(
            "the token response has no string field {:?}",
            t.response_field
        ))
    })?;
    let lifetime = match json.get("expires_in") {
        Some(serde_json::Value::Number(n)) => n.as_f64(),
        Some(serde_json::Value::String(s)) => s.parse().ok(),
        _ => None,
    }
    .filter(|s| s.is_finite() && *s >= 0.0)
    .map_or(DEFAULT_TOKEN_TTL, |s| Duration::from_secs_f64(s.min(1e9)));
    let early = (lifetime / 10).min(MAX_EARLY_REFRESH);
    let value = HeaderValue::from_str(&format!("{}{token}", t.prefix))
        .map_err(|_| fail("the token cannot be sent in a header".into()))?;
    token_of(&t.header, value, lifetime - early, &fail)
}

async fn fetch_csrf(c: &CsrfSource, client: &Upstream) -> Result<Token, CredentialError> {
    let fail = |message: String| CredentialError {
        step: "csrf",
        message,
    };
    let method = if c.method == "POST" {
        Method::POST
    } else {
        Method::GET
    };
    let req = Request::builder()
        .method(method)
        .uri(&c.token_url)
        // The common "X-CSRF-Token: Fetch" convention asks the server to issue a token.
        .header(c.header.as_str(), "Fetch")
        .body(full(String::new()))
        .map_err(|_| fail("the token URL is not a valid URL".into()))?;
    let (status, headers, body) = exchange(client, req, "csrf").await?;
    if !status.is_success() {
        return Err(fail(format!("the CSRF endpoint answered {status}")));
    }
    let token = match (&c.response_header, &c.response_field) {
        (Some(h), _) => headers
            .get(h.as_str())
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
            .ok_or_else(|| fail(format!("the CSRF response has no {h} header")))?,
        (None, Some(f)) => serde_json::from_slice::<serde_json::Value>(&body)
            .ok()
            .and_then(|j| field(&j, f))
            .ok_or_else(|| fail(format!("the CSRF response has no string field {f:?}")))?,
        (None, None) => return Err(fail("no responseField or responseHeader".into())),
    };
    let value = HeaderValue::from_str(&token)
        .map_err(|_| fail("the token cannot be sent in a header".into()))?;
    token_of(&c.header, value, Duration::from_millis(c.ttl_ms), &fail)
}

fn token_of(
    header: &str,
    mut value: HeaderValue,
    lifetime: Duration,
    fail: &dyn Fn(String) -> CredentialError,
) -> Result<Token, CredentialError> {
    value.set_sensitive(true);
    Ok(Token {
        header: HeaderName::from_bytes(header.as_bytes())
            .map_err(|_| fail("the token header is not a header name".into()))?,
        value,
        valid_until: Instant::now() + lifetime,
    })
}

/// Send a token request and read its (bounded) body.
async fn exchange(
    client: &Upstream,
    req: Request<ProxyBody>,
    step: &'static str,
) -> Result<(http::StatusCode, http::HeaderMap, Bytes), CredentialError> {
    let what = if step == "token" {
        "the token endpoint"
    } else {
        "the CSRF endpoint"
    };
    let resp = client.exchange(req).await.map_err(|e| CredentialError {
        step,
        message: format!("{what} could not be reached: {e}"),
    })?;
    let (parts, body) = resp.into_parts();
    let body = Limited::new(body, MAX_TOKEN_RESPONSE)
        .collect()
        .await
        .map_err(|_| CredentialError {
            step,
            message: format!("{what}'s response could not be read (or exceeds 64 KiB)"),
        })?
        .to_bytes();
    Ok((parts.status, parts.headers, body))
}

/// A string at a dotted path (`access_token`, `data.token`).
fn field(json: &serde_json::Value, path: &str) -> Option<String> {
    path.split('.')
        .try_fold(json, |v, k| v.get(k))
        .and_then(serde_json::Value::as_str)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
}

fn full(body: String) -> ProxyBody {
    Full::new(Bytes::from(body)).map_err(|e| match e {}).boxed()
}

/// `application/x-www-form-urlencoded` encoding of one name or value.
pub fn form_encode(text: &str) -> String {
    const SET: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
        .remove(b'-')
        .remove(b'.')
        .remove(b'_')
        .remove(b'~');
    percent_encoding::utf8_percent_encode(text, SET).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn token(n: u8) -> Token {
        Token {
            header: header::AUTHORIZATION,
            value: HeaderValue::from_str(&format!("Bearer t{n}")).unwrap(),
            valid_until: Instant::now() + Duration::from_secs(60),
        }
    }

    #[tokio::test]
    async fn concurrent_callers_share_one_fetch() {
        let cache = Arc::new(TokenCache::default());
        let fetches = Arc::new(AtomicU64::new(0));
        let mut tasks = Vec::new();
        for _ in 0..20 {
            let (cache, fetches) = (Arc::clone(&cache), Arc::clone(&fetches));
            tasks.push(tokio::spawn(async move {
                cache
                    .get(|| async {
                        fetches.fetch_add(1, Ordering::SeqCst);
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        Ok(token(1))
                    })
                    .await
                    .unwrap()
            }));
        }
        for t in tasks {
            assert_eq!(t.await.unwrap().value, "Bearer t1");
        }
        assert_eq!(fetches.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn waiters_share_a_failure_instead_of_retrying() {
        let cache = Arc::new(TokenCache::default());
        let fetches = Arc::new(AtomicU64::new(0));
        let mut tasks = Vec::new();
        for _ in 0..10 {
            let (cache, fetches) = (Arc::clone(&cache), Arc::clone(&fetches));
            tasks.push(tokio::spawn(async move {
                cache
                    .get(|| async {
                        fetches.fetch_add(1, Ordering::SeqCst);
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        Err(CredentialError {
                            step: "token",
                            message: "no".into(),
                        })
                    })
                    .await
            }));
        }
        for t in tasks {
            assert!(t.await.unwrap().is_err());
        }
        assert_eq!(fetches.load(Ordering::SeqCst), 1);
    }

    #[test]
    fn dotted_fields_and_form_encoding() {
        let j = serde_json::json!({"data": {"token": "abc"}, "access_token": "x"});
        assert_eq!(field(&j, "data.token").as_deref(), Some("abc"));
        assert_eq!(field(&j, "access_token").as_deref(), Some("x"));
        assert_eq!(field(&j, "nope"), None);
        assert_eq!(form_encode("a b&c=d"), "a%20b%26c%3Dd");
    }
}
