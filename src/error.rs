//! The one error type of Keyward, its code table, and its JSON rendering (DESIGN.md §7).
//!
//! Authentication failures use seed 003's OAuth shape (`{error, error_description, error_uri}`) with a
//! `WWW-Authenticate` challenge; everything else uses seed 003's `{code, message, stack}` shape with one stack
//! entry per problem.

use std::borrow::Cow;

use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode, header};
use http_body_util::Full;
use serde::Serialize;

/// The OAuth 2.0 error codes a 401 may carry (RFC 6750 §3.1).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OAuthError {
    /// The request is malformed: no credential, two schemes, bad syntax.
    InvalidRequest,
    /// The credential is unknown, wrong, or not in force.
    InvalidToken,
}

/// Why authentication failed: what the client is told and what the log and metrics record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuthFailure {
    /// The OAuth error code sent to the client.
    pub error: OAuthError,
    /// The public description sent to the client.
    pub description: Cow<'static, str>,
    /// A low-cardinality reason for logs and the `keyward_auth_failures_total{reason}` label.
    pub reason: &'static str,
}

/// One problem in a `{code, message, stack}` body: which field, what is wrong.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Problem {
    /// The HTTP status this problem maps to.
    pub code: u16,
    /// What is wrong, for a person.
    pub description: String,
    /// A short machine-readable error name, e.g. `invalid`, `not_found`.
    pub error: &'static str,
    /// The field (or parameter, or header) the problem is about.
    pub path: String,
}

/// Every error Keyward answers with. Mapping to HTTP is one exhaustive `match` in [`Error::status`].
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// 401: no usable credential.
    #[error("unauthenticated: {}", .0.reason)]
    Unauthenticated(AuthFailure),
    /// 403: the key lacks claims the route or call requires.
    #[error("insufficient scope")]
    InsufficientScope {
        /// The claims that were missing, public (claims are configuration, not secrets).
        missing: Vec<String>,
    },
    /// 400: the request is invalid; one problem per field.
    #[error("bad request")]
    BadRequest(Vec<Problem>),
    /// 404: the resource does not exist.
    #[error("not found")]
    NotFound(Problem),
    /// 405: the path exists but not with this method.
    #[error("method not allowed")]
    MethodNotAllowed,
    /// 409: a conflict (stale `_v`, duplicate unique field, revoked key).
    #[error("conflict")]
    Conflict(Problem),
    /// 413: the body is larger than the limit (bytes).
    #[error("payload too large")]
    PayloadTooLarge(u64),
    /// 415: the body is not JSON.
    #[error("unsupported media type")]
    UnsupportedMediaType,
    /// 428: an update without a version.
    #[error("precondition required")]
    PreconditionRequired(Problem),
    /// 431: the header section is too large.
    #[error("request header fields too large")]
    HeadersTooLarge,
    /// 502: the upstream could not be reached or broke the exchange.
    #[error("upstream unreachable: {0}")]
    UpstreamUnreachable(String),
    /// 502 with a public reason about a registered upstream (unknown, inactive, its token fetch failed).
    #[error("bad gateway: {}", .0.description)]
    BadGateway(Problem),
    /// 504: the upstream did not answer in time.
    #[error("upstream timeout")]
    UpstreamTimeout,
    /// 503: the store (or another dependency) is unavailable, or a bounded resource is full.
    #[error("unavailable: {0}")]
    Unavailable(String),
    /// 500: a bug or an unexpected failure; the detail is logged, never sent.
    #[error("internal: {0}")]
    Internal(String),
}

/// The `{code, message, stack}` body of seed 003.
#[derive(Serialize)]
struct ErrorBody<'a> {
    code: u16,
    message: &'a str,
    stack: &'a [Problem],
}

/// The OAuth-shaped body of a 401 or 403 (seed 003, RFC 6750).
#[derive(Serialize)]
struct OAuthBody<'a> {
    error: &'a str,
    error_description: &'a str,
    error_uri: Option<&'a str>,
}

// === impl OAuthError ===

impl OAuthError {
    /// The wire name of the error code.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::InvalidRequest => "invalid_request",
            Self::InvalidToken => "invalid_token",
        }
    }
}

// === impl AuthFailure ===

impl AuthFailure {
    /// A malformed or missing credential.
    pub const fn invalid_request(description: &'static str, reason: &'static str) -> Self {
        Self {
            error: OAuthError::InvalidRequest,
            description: Cow::Borrowed(description),
            reason,
        }
    }

    /// A credential that does not authenticate.
    pub const fn invalid_token(description: &'static str, reason: &'static str) -> Self {
        Self {
            error: OAuthError::InvalidToken,
            description: Cow::Borrowed(description),
            reason,
        }
    }

    /// A failure with a computed description (never containing a secret or signature).
    pub fn with_description(mut self, description: String) -> Self {
        self.description = Cow::Owned(description);
        self
    }
}

// === impl Problem ===

impl Problem {
    /// A problem with the given status, error name, field and description.
    pub fn new(
        code: StatusCode,
        error: &'static str,
        path: &str,
        description: impl Into<String>,
    ) -> Self {
        Self {
            code: code.as_u16(),
            description: description.into(),
            error,
            path: path.to_owned(),
        }
    }

    /// A 400 `invalid` problem on a field.
    pub fn invalid(path: &str, description: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalid", path, description)
    }
}

// === impl Error ===

impl Error {
    /// A 400 with a single problem.
    pub fn invalid(path: &str, description: impl Into<String>) -> Self {
        Self::BadRequest(vec![Problem::invalid(path, description)])
    }

    /// A 404 for a resource looked up by `path`.
    pub fn not_found(path: &str, description: impl Into<String>) -> Self {
        Self::NotFound(Problem::new(
            StatusCode::NOT_FOUND,
            "not_found",
            path,
            description,
        ))
    }

    /// A 502 about a registered upstream, with a public description.
    pub fn bad_gateway(description: impl Into<String>) -> Self {
        Self::BadGateway(Problem::new(
            StatusCode::BAD_GATEWAY,
            "bad_gateway",
            "upstream",
            description,
        ))
    }

    /// A 409 on a field.
    pub fn conflict(path: &str, description: impl Into<String>) -> Self {
        Self::Conflict(Problem::new(
            StatusCode::CONFLICT,
            "conflict",
            path,
            description,
        ))
    }

    /// The HTTP status of this error.
    pub fn status(&self) -> StatusCode {
        match self {
            Self::Unauthenticated(_) => StatusCode::UNAUTHORIZED,
            Self::InsufficientScope { .. } => StatusCode::FORBIDDEN,
            Self::BadRequest(_) => StatusCode::BAD_REQUEST,
            Self::NotFound(_) => StatusCode::NOT_FOUND,
            Self::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            Self::Conflict(_) => StatusCode::CONFLICT,
            Self::PayloadTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            Self::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Self::PreconditionRequired(_) => StatusCode::PRECONDITION_REQUIRED,
            Self::HeadersTooLarge => StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            Self::UpstreamUnreachable(_) | Self::BadGateway(_) => StatusCode::BAD_GATEWAY,
            Self::UpstreamTimeout => StatusCode::GATEWAY_TIMEOUT,
            Self::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            Self::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The public top-level message of the `{code, message, stack}` body.
    fn message(&self) -> &'static str {
        match self {
            Self::Unauthenticated(_) => "unauthenticated",
            Self::InsufficientScope { .. } => "insufficient scope",
            Self::BadRequest(_) => "invalid request",
            Self::NotFound(_) => "not found",
            Self::MethodNotAllowed => "method not allowed",
            Self::Conflict(_) => "conflict",
            Self::PayloadTooLarge(_) => "request body too large",
            Self::UnsupportedMediaType => "unsupported media type",
            Self::PreconditionRequired(_) => "precondition required",
            Self::HeadersTooLarge => "request header fields too large",
            Self::UpstreamUnreachable(_) => "upstream unreachable",
            Self::BadGateway(_) => "bad gateway",
            Self::UpstreamTimeout => "upstream timeout",
            Self::Unavailable(_) => "service unavailable",
            Self::Internal(_) => "internal error",
        }
    }

    /// The stack entries of the `{code, message, stack}` body.
    fn stack(&self) -> Vec<Problem> {
        let status = self.status();
        let one = |error: &'static str, path: &str, description: String| {
            vec![Problem::new(status, error, path, description)]
        };
        match self {
            Self::BadRequest(problems) => problems.clone(),
            Self::NotFound(p)
            | Self::Conflict(p)
            | Self::PreconditionRequired(p)
            | Self::BadGateway(p) => vec![p.clone()],
            Self::PayloadTooLarge(limit) => one(
                "too_large",
                "body",
                format!("the body exceeds {limit} bytes"),
            ),
            Self::UnsupportedMediaType => one(
                "unsupported_media_type",
                "content-type",
                "send application/json".into(),
            ),
            Self::MethodNotAllowed => one(
                "method_not_allowed",
                "method",
                "this path does not accept this method".into(),
            ),
            Self::HeadersTooLarge => one(
                "too_large",
                "headers",
                "the header section is too large".into(),
            ),
            Self::UpstreamUnreachable(_) => one(
                "bad_gateway",
                "upstream",
                "the upstream could not be reached".into(),
            ),
            Self::UpstreamTimeout => one(
                "gateway_timeout",
                "upstream",
                "the upstream did not answer in time".into(),
            ),
            Self::Unavailable(what) => one("unavailable", "service", what.clone()),
            Self::Internal(_) => one("internal", "", "an internal error occurred".into()),
            Self::Unauthenticated(_) | Self::InsufficientScope { .. } => Vec::new(),
        }
    }

    /// Render this error as a JSON response.
    pub fn to_response(&self) -> Response<Full<Bytes>> {
        let status = self.status();
        let (body, challenge) = match self {
            Self::Unauthenticated(f) => {
                let body = OAuthBody {
                    error: f.error.as_str(),
                    error_description: &f.description,
                    error_uri: None,
                };
                let description: String = f
                    .description
                    .chars()
                    .filter(|c| *c != '"' && *c != '\\' && (' '..='~').contains(c))
                    .collect();
                let challenge = format!(
                    "Bearer realm=\"keyward\", error=\"{}\", error_description=\"{description}\"",
                    f.error.as_str()
                );
                (serde_json::to_vec(&body), Some(challenge))
            }
            Self::InsufficientScope { missing } => {
                let body = OAuthBody {
                    error: "insufficient_scope",
                    error_description: "the key lacks a required claim",
                    error_uri: None,
                };
                let challenge = format!(
                    "Bearer realm=\"keyward\", error=\"insufficient_scope\", scope=\"{}\"",
                    missing.join(" ")
                );
                (serde_json::to_vec(&body), Some(challenge))
            }
            _ => {
                let stack = self.stack();
                (
                    serde_json::to_vec(&ErrorBody {
                        code: status.as_u16(),
                        message: self.message(),
                        stack: &stack,
                    }),
                    None,
                )
            }
        };
        let body = body.unwrap_or_else(|_| {
            b"{\"code\":500,\"message\":\"internal error\",\"stack\":[]}".to_vec()
        });
        let mut response = Response::new(Full::new(Bytes::from(body)));
        *response.status_mut() = status;
        let headers = response.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        if let Some(value) = challenge.and_then(|c| HeaderValue::from_str(&c).ok()) {
            headers.insert(header::WWW_AUTHENTICATE, value);
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    async fn body_of(e: Error) -> (StatusCode, serde_json::Value) {
        let r = e.to_response();
        let status = r.status();
        let bytes = r.into_body().collect().await.unwrap().to_bytes();
        (status, serde_json::from_slice(&bytes).unwrap())
    }

    #[tokio::test]
    async fn not_found_renders_seed_003_shape() {
        let (status, body) = body_of(Error::not_found("id", "api key not found")).await;
        assert_eq!(status, 404);
        assert_eq!(
            body,
            serde_json::json!({"code": 404, "message": "not found", "stack": [{"code": 404, "description": "api key not found", "error": "not_found", "path": "id"}]})
        );
    }

    #[tokio::test]
    async fn unauthenticated_renders_oauth_shape() {
        let (status, body) = body_of(Error::Unauthenticated(AuthFailure::invalid_token(
            "the credential is not valid",
            "unknown_key",
        )))
        .await;
        assert_eq!(status, 401);
        assert_eq!(
            body,
            serde_json::json!({"error": "invalid_token", "error_description": "the credential is not valid", "error_uri": null})
        );
    }
}
