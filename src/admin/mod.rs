//! The admin service on its own listener: `Endpoint::parse`, authenticate, authorize (each endpoint names its
//! right in one exhaustive `match`), then the handler. `/metrics`, `/healthz` and `/readyz` are open; every
//! `/apikeys` call needs a credential, and with no key and no bootstrap token the admin API refuses all.

pub mod apikeys;
pub mod health;
pub mod upstreams;

use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use chrono::Utc;
use http::{HeaderValue, Method, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use serde::Serialize;

use crate::auth::Authenticator;
use crate::error::{AuthFailure, Error, Problem};
use crate::keys::cache::KeyCache;
use crate::keys::secret::Secret;
use crate::keys::{KeyStore, StoreError};
use crate::metrics::{self, Metrics};
use crate::policy::{Claim, ClaimSet};
use crate::proxy::forward::ProxyBody;
use crate::proxy::headers;
use crate::server::ConnInfo;

/// Everything the admin API needs.
pub struct AdminState {
    /// Authentication (bearer) against the same keys as the proxy.
    pub auth: Arc<Authenticator>,
    /// The in-memory key map.
    pub cache: Arc<KeyCache>,
    /// The store every write goes to first.
    pub store: Arc<dyn KeyStore>,
    /// Metrics.
    pub metrics: Arc<Metrics>,
    /// `admin.bootstrap_token`.
    pub bootstrap_token: Option<Secret>,
    /// Largest admin body.
    pub max_body: u64,
    /// Write access-log lines.
    pub access_log: bool,
    /// Serializes writes with full reloads, so a reload never drops a change made while it read the store.
    pub write_lock: Arc<tokio::sync::Mutex<()>>,
    /// The registered upstreams (shared with the proxy).
    pub upstreams: Arc<crate::upstreams::UpstreamRegistry>,
    /// Where registered upstreams are persisted.
    pub upstream_store: Arc<dyn crate::upstreams::UpstreamStore>,
}

/// Every admin endpoint.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Endpoint {
    /// `GET /apikeys`
    ListKeys,
    /// `GET /apikeys/{id}`
    GetKey(String),
    /// `POST /apikeys`
    CreateKey,
    /// `PUT /apikeys/{id}`
    PutKey(String),
    /// `DELETE /apikeys/{id}`
    DeleteKey(String),
    /// `PUT /apikeys/{id}/revoke`
    RevokeKey(String),
    /// `POST /apikeys/{id}/rotate`
    RotateKey(String),
    /// `/upstreams...`
    Upstream(upstreams::UpstreamCall),
    /// `GET /metrics`
    Metrics,
    /// `GET /healthz`
    Healthz,
    /// `GET /readyz`
    Readyz,
}

/// Who is calling the admin API.
pub struct Caller {
    /// What the caller may do.
    pub claims: ClaimSet,
    /// The caller's key id (none for the bootstrap token).
    pub key_id: Option<String>,
}

// === impl Endpoint ===

impl Endpoint {
    /// Match method and path; unknown paths are 404, known paths with another method 405.
    pub fn parse(method: &Method, path: &str) -> Result<Self, Error> {
        let segments: Vec<&str> = path.trim_end_matches('/').split('/').skip(1).collect();
        let id = |s: &str| {
            percent_encoding::percent_decode_str(s)
                .decode_utf8_lossy()
                .into_owned()
        };
        let endpoint = match (segments.as_slice(), method) {
            (["apikeys"], &Method::GET) => Self::ListKeys,
            (["apikeys"], &Method::POST) => Self::CreateKey,
            (["apikeys", k], &Method::GET) => Self::GetKey(id(k)),
            (["apikeys", k], &Method::PUT) => Self::PutKey(id(k)),
            (["apikeys", k], &Method::DELETE) => Self::DeleteKey(id(k)),
            (["apikeys", k, "revoke"], &Method::PUT) => Self::RevokeKey(id(k)),
            (["apikeys", k, "rotate"], &Method::POST) => Self::RotateKey(id(k)),
            (["upstreams", rest @ ..], _) => {
                Self::Upstream(upstreams::UpstreamCall::parse(method, rest, id)?)
            }
            (["metrics"], &Method::GET) => Self::Metrics,
            (["healthz"], &Method::GET) => Self::Healthz,
            (["readyz"], &Method::GET) => Self::Readyz,
            (
                ["apikeys"]
                | ["apikeys", _]
                | ["apikeys", _, "revoke" | "rotate"]
                | ["metrics" | "healthz" | "readyz"],
                _,
            ) => {
                return Err(Error::MethodNotAllowed);
            }
            _ => return Err(Error::not_found("path", "no such admin endpoint")),
        };
        Ok(endpoint)
    }

    /// The right an endpoint requires; `None` = open. `PutKey` is decided by the handler (create or update).
    pub fn right(&self) -> Option<Claim> {
        match self {
            Self::ListKeys | Self::GetKey(_) => Some(Claim::from_static("ApiKeyList")),
            Self::CreateKey | Self::PutKey(_) => Some(Claim::from_static("ApiKeyCreate")),
            Self::DeleteKey(_) | Self::RevokeKey(_) => Some(Claim::from_static("ApiKeyDelete")),
            Self::RotateKey(_) => Some(Claim::from_static("ApiKeyUpdate")),
            Self::Upstream(call) => Some(call.right()),
            Self::Metrics | Self::Healthz | Self::Readyz => None,
        }
    }

    /// A bounded label for metrics and logs.
    pub fn label(&self) -> &'static str {
        match self {
            Self::ListKeys => "list_keys",
            Self::GetKey(_) => "get_key",
            Self::CreateKey => "create_key",
            Self::PutKey(_) => "put_key",
            Self::DeleteKey(_) => "delete_key",
            Self::RevokeKey(_) => "revoke_key",
            Self::RotateKey(_) => "rotate_key",
            Self::Upstream(call) => call.label(),
            Self::Metrics => "metrics",
            Self::Healthz => "healthz",
            Self::Readyz => "readyz",
        }
    }
}

// === impl Caller ===

impl Caller {
    /// Fail with 403 unless the caller holds `claim`.
    pub fn require(&self, claim: &Claim) -> Result<(), Error> {
        crate::policy::authorize(&self.claims, std::slice::from_ref(claim))
            .map_err(|missing| Error::InsufficientScope { missing })
    }
}

/// The outer call of the admin listener.
pub async fn handle(
    state: Arc<AdminState>,
    conn: ConnInfo,
    req: Request<Incoming>,
) -> Response<ProxyBody> {
    let started = Instant::now();
    let request_id = headers::request_id(req.headers());
    let (method, path) = (req.method().clone(), req.uri().path().to_owned());
    let mut label = "unknown";
    let mut key_id = None;
    let mut response = match route(&state, req, &mut label, &mut key_id).await {
        Ok(r) => r,
        Err(e) => {
            match &e {
                Error::Unauthenticated(f) => state
                    .metrics
                    .auth_failures
                    .with_label_values(&[f.reason])
                    .inc(),
                Error::Internal(detail) => {
                    tracing::error!(request_id = ?request_id, error = %detail, "Admin request failed")
                }
                _ => {}
            }
            crate::proxy::forward::boxed(e.to_response())
        }
    };
    response
        .headers_mut()
        .insert(headers::REQUEST_ID.clone(), request_id.clone());
    let status = response.status().as_u16();
    state
        .metrics
        .admin_requests
        .with_label_values(&[label, metrics::status_class(status)])
        .inc();
    if state.access_log {
        crate::access_log::write(&crate::access_log::AccessRecord {
            listener: "admin",
            request_id: request_id.to_str().unwrap_or(""),
            peer: conn.peer,
            method: method.as_str(),
            path: &path,
            route: label,
            status,
            scheme: if key_id.is_some() { "bearer" } else { "none" },
            key_id: key_id.as_deref().unwrap_or(""),
            reason: "",
            duration: started.elapsed(),
        });
    }
    response
}

async fn route(
    state: &AdminState,
    req: Request<Incoming>,
    label: &mut &'static str,
    key_id: &mut Option<String>,
) -> Result<Response<ProxyBody>, Error> {
    let endpoint = Endpoint::parse(req.method(), req.uri().path())?;
    *label = endpoint.label();
    let Some(right) = endpoint.right() else {
        return match endpoint {
            Endpoint::Metrics => Ok(health::metrics(state)),
            Endpoint::Healthz => Ok(health::healthz()),
            _ => Ok(health::readyz(state).await),
        };
    };
    let caller = authenticate(state, req.headers())?;
    key_id.clone_from(&caller.key_id);
    if !matches!(endpoint, Endpoint::PutKey(_)) {
        caller.require(&right)?;
    }
    match endpoint {
        Endpoint::Upstream(call) => upstreams::dispatch(state, call, req).await,
        _ => apikeys::dispatch(state, &caller, endpoint, req).await,
    }
}

/// The bootstrap token, or a bearer key.
fn authenticate(state: &AdminState, headers: &http::HeaderMap) -> Result<Caller, Error> {
    const MISSING: AuthFailure =
        AuthFailure::invalid_request("a credential is required", "missing_credential");
    let authz = headers
        .get(header::AUTHORIZATION)
        .map(HeaderValue::as_bytes);
    if let (Some(token), Some(value)) = (&state.bootstrap_token, authz) {
        if value.len() > 7
            && value[..7].eq_ignore_ascii_case(b"bearer ")
            && token.matches(&value[7..])
        {
            return Ok(Caller {
                claims: ClaimSet::everything(),
                key_id: None,
            });
        }
    }
    let encoded = match (
        authz,
        headers.get(crate::auth::SIGNATURE_INPUT),
        headers.get("x-api-key"),
    ) {
        (Some(v), None, None) => {
            let (scheme, rest) = v.split_at(v.iter().position(|&b| b == b' ').unwrap_or(v.len()));
            if !(scheme.eq_ignore_ascii_case(b"bearer") || scheme.eq_ignore_ascii_case(b"basic")) {
                return Err(Error::Unauthenticated(AuthFailure::invalid_request(
                    "the admin API accepts bearer credentials only",
                    "unsupported_scheme",
                )));
            }
            rest
        }
        (None, None, Some(v)) => v.as_bytes(),
        (None, None, None) => return Err(Error::Unauthenticated(MISSING)),
        _ => {
            return Err(Error::Unauthenticated(AuthFailure::invalid_request(
                "send exactly one credential",
                "multiple_credentials",
            )));
        }
    };
    let principal = state
        .auth
        .bearer(encoded, Utc::now())
        .map_err(Error::Unauthenticated)?;
    Ok(Caller {
        claims: principal.entry.claims.clone(),
        key_id: Some(principal.entry.key.id.clone()),
    })
}

/// How a versioned admin resource is named in its messages; holds the `_v` rules both resources share.
#[derive(Clone, Copy, Debug)]
pub struct Resource {
    /// `key`, `upstream`.
    pub noun: &'static str,
    /// The 404 description, e.g. `api key not found`.
    pub not_found: &'static str,
}

// === impl Resource ===

impl Resource {
    /// 409 for a version that is no longer current.
    pub fn stale(self, expected: i64) -> Error {
        Error::conflict(
            "_v",
            format!(
                "version {expected} is stale: the {} has changed; read it again",
                self.noun
            ),
        )
    }

    /// 404 for this resource.
    pub fn not_found(self) -> Error {
        Error::not_found("id", self.not_found)
    }

    /// A store failure as the admin API answers it.
    pub fn store_error(self, e: StoreError) -> Error {
        match e {
            StoreError::NotFound => self.not_found(),
            StoreError::VersionConflict { expected } => self.stale(expected),
            StoreError::Duplicate { field } => Error::conflict(
                field,
                format!("{field} is already used by another {}", self.noun),
            ),
            StoreError::Unavailable(detail) => {
                tracing::warn!(error = %detail, resource = self.noun, "Store unavailable for an admin write");
                Error::Unavailable(
                    "the store is unavailable; the change was not made, try again".into(),
                )
            }
            StoreError::Other(detail) => Error::Internal(detail),
        }
    }
}

/// `If-Match: "<_v>"` (quotes optional); absent is `None`; anything else is a 400.
pub fn if_match(headers: &http::HeaderMap) -> Result<Option<i64>, Error> {
    let Some(value) = headers.get(header::IF_MATCH) else {
        return Ok(None);
    };
    let text = value.to_str().unwrap_or("").trim();
    text.trim_matches('"').parse().map(Some).map_err(|_| {
        Error::invalid(
            "If-Match",
            "If-Match must be the version you read, e.g. \"3\"",
        )
    })
}

/// The version an update claims to change: the body's `_v`, else `If-Match`; neither is a 428.
pub fn required_version(body: Option<i64>, header: Option<i64>) -> Result<i64, Error> {
    body.or(header).ok_or_else(|| {
        Error::PreconditionRequired(Problem::new(
            StatusCode::PRECONDITION_REQUIRED,
            "version_required",
            "_v",
            "send the version you read as _v or If-Match",
        ))
    })
}

/// A JSON response.
pub fn json<T: Serialize>(status: StatusCode, value: &T) -> Result<Response<ProxyBody>, Error> {
    let body =
        serde_json::to_vec(value).map_err(|e| Error::Internal(format!("encode response: {e}")))?;
    let mut r = Response::new(Full::new(Bytes::from(body)).map_err(|e| match e {}).boxed());
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    r.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(r)
}

/// Read a JSON body of at most `max` bytes. An empty body is `None`.
pub async fn read_json<T: serde::de::DeserializeOwned>(
    req: Request<Incoming>,
    max: u64,
) -> Result<Option<T>, Error> {
    if let Some(ct) = req.headers().get(header::CONTENT_TYPE) {
        let essence = ct
            .to_str()
            .unwrap_or("")
            .split(';')
            .next()
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase();
        if essence != "application/json" && !essence.ends_with("+json") {
            return Err(Error::UnsupportedMediaType);
        }
    }
    let limited = Limited::new(req.into_body(), usize::try_from(max).unwrap_or(usize::MAX));
    let bytes = match limited.collect().await {
        Ok(c) => c.to_bytes(),
        Err(e)
            if e.downcast_ref::<http_body_util::LengthLimitError>()
                .is_some() =>
        {
            return Err(Error::PayloadTooLarge(max));
        }
        Err(_) => return Err(Error::invalid("body", "the body could not be read")),
    };
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(None);
    }
    serde_json::from_slice(&bytes)
        .map(Some)
        .map_err(|e| json_problem(&e))
}

/// A serde error as a 400 naming the field when serde does.
fn json_problem(e: &serde_json::Error) -> Error {
    let text = e.to_string();
    let named = text.starts_with("unknown field") || text.starts_with("missing field");
    let field = text
        .split('`')
        .nth(1)
        .filter(|_| named)
        .unwrap_or("body")
        .to_owned();
    Error::invalid(&field, text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_parse_and_name_rights() {
        assert_eq!(
            Endpoint::parse(&Method::GET, "/apikeys").unwrap(),
            Endpoint::ListKeys
        );
        assert_eq!(
            Endpoint::parse(&Method::PUT, "/apikeys/abc/revoke").unwrap(),
            Endpoint::RevokeKey("abc".into())
        );
        assert!(matches!(
            Endpoint::parse(&Method::PATCH, "/apikeys/abc"),
            Err(Error::MethodNotAllowed)
        ));
        assert!(matches!(
            Endpoint::parse(&Method::GET, "/nope"),
            Err(Error::NotFound(_))
        ));
        assert_eq!(
            Endpoint::RotateKey("x".into()).right(),
            Some(Claim::from_static("ApiKeyUpdate"))
        );
        assert_eq!(Endpoint::Healthz.right(), None);
    }
}
