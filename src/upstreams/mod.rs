//! Registered upstreams (seed 000's API registration profiles, DESIGN.md §9): other APIs that routes forward to,
//! each with its URL, sandbox URL, timeouts, extra header and query parameters, and one outbound credential that
//! Keyward injects on the way out, replacing whatever the client sent in the same place.
//!
//! [`RegisteredUpstream`] is the stored form (its serde form includes the secrets and is never sent to a client);
//! [`view`] renders the admin form without them; [`input`] validates what the admin API and the config file
//! accept; [`registry`] holds the live set in memory; [`credentials`] injects and fetches credentials (token
//! cache with single flight); [`probe`] is the verify call.

mod auth_input;
pub mod credentials;
pub mod input;
pub mod probe;
pub mod registry;
pub mod view;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::keys::StoreFuture;
use crate::keys::secret::Secret;

pub use registry::UpstreamRegistry;

/// An upstream as stored. Its serde form includes the secrets: it is the storage format only.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RegisteredUpstream {
    /// 24 lowercase hex characters; immutable.
    pub id: String,
    /// Unique name, referenced by routes (`upstream = "billing"`).
    pub name: String,
    /// Free text.
    #[serde(default)]
    pub description: Option<String>,
    /// Base URL: scheme, authority, optional path prefix.
    pub url: String,
    /// The sandbox base URL, used instead of `url` while `use_sandbox` is true.
    #[serde(default)]
    pub sandbox_url: Option<String>,
    /// Send requests to `sandbox_url`.
    #[serde(default)]
    pub use_sandbox: bool,
    /// Routes forward to it only while true.
    pub is_active: bool,
    /// TCP connect timeout, milliseconds.
    pub connect_timeout_ms: u64,
    /// Time to the response headers, milliseconds.
    pub timeout_ms: u64,
    /// Extra headers and query parameters added to every request (seed 000's `header_params`).
    #[serde(default)]
    pub header_params: Vec<HeaderParam>,
    /// The outbound credential.
    pub auth: OutboundAuth,
    /// Path (and query) requested by `verify`.
    pub verify_path: String,
    /// Creation time.
    pub created_at: DateTime<Utc>,
    /// Last change.
    pub updated_at: DateTime<Utc>,
    /// Version: 1 on create, +1 on every change.
    #[serde(rename = "_v")]
    pub version: i64,
}

/// An extra header or query parameter (seed 000's `Embedded {keys, values, queryparam}`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HeaderParam {
    /// Header or parameter name.
    pub key: String,
    /// Its value (not secret: returned by the API).
    pub value: String,
    /// A query parameter rather than a header.
    #[serde(default)]
    pub query_param: bool,
}

/// Where an API key goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum KeyLocation {
    /// A request header.
    Header,
    /// A query parameter.
    Query,
}

/// How a token request carries the client credentials (RFC 6749 §2.3.1).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ClientAuth {
    /// `client_id` and `client_secret` in the request body.
    Body,
    /// HTTP Basic with the client id and secret.
    Basic,
}

/// The media type of a token request body.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum TokenContentType {
    /// `application/x-www-form-urlencoded` (RFC 6749 §4.4.2).
    #[serde(rename = "application/x-www-form-urlencoded")]
    Form,
    /// `application/json`.
    #[serde(rename = "application/json")]
    Json,
}

/// The outbound credential of an upstream. Secret fields are write-only in the admin API.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "camelCase")]
pub enum OutboundAuth {
    /// Nothing is injected.
    None,
    /// `Authorization: Basic base64(userName:password)`, or a pre-encoded credential.
    #[serde(rename_all = "camelCase")]
    Basic {
        /// User name (absent when pre-encoded).
        #[serde(default)]
        user_name: Option<String>,
        /// The password, or the ready base64 credential when `pre_encoded`.
        #[serde(with = "crate::keys::secret::stored")]
        secret: Secret,
        /// `secret` is already `base64(user:password)` (seed 000's `is_base64_password`).
        #[serde(default)]
        pre_encoded: bool,
    },
    /// A static key in a header or query parameter.
    #[serde(rename_all = "camelCase")]
    ApiKey {
        /// Header or parameter name.
        name: String,
        /// The key.
        #[serde(with = "crate::keys::secret::stored")]
        value: Secret,
        /// Header or query.
        #[serde(rename = "in")]
        location: KeyLocation,
    },
    /// A bearer token from an OAuth 2.0 token endpoint, client credentials grant (RFC 6749 §4.4).
    #[serde(rename_all = "camelCase")]
    Oauth2ClientCredentials(Box<TokenSource>),
    /// A CSRF token fetched from a URL and sent in a header.
    #[serde(rename_all = "camelCase")]
    Csrf(Box<CsrfSource>),
}

/// OAuth 2.0 client credentials settings.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TokenSource {
    /// The token endpoint.
    pub token_url: String,
    /// Client id.
    pub client_id: String,
    /// Client secret.
    #[serde(with = "crate::keys::secret::stored")]
    pub client_secret: Secret,
    /// `scope`, if any.
    #[serde(default)]
    pub scope: Option<String>,
    /// Extra token request parameters (seed 000's `token_body`).
    #[serde(default)]
    pub token_params: Vec<(String, String)>,
    /// How the client authenticates to the token endpoint.
    pub client_auth: ClientAuth,
    /// Token request body type.
    pub content_type: TokenContentType,
    /// The response field holding the token. Default `access_token`.
    pub response_field: String,
    /// The header the token is sent in. Default `Authorization`.
    pub header: String,
    /// Written before the token. Default `"Bearer "`.
    pub prefix: String,
}

/// CSRF token settings.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CsrfSource {
    /// Where the token is fetched (GET, or POST when `method` says so).
    pub token_url: String,
    /// `GET` or `POST`.
    pub method: String,
    /// The header the token is sent in.
    pub header: String,
    /// Take the token from this JSON field of the response ...
    #[serde(default)]
    pub response_field: Option<String>,
    /// ... or from this response header.
    #[serde(default)]
    pub response_header: Option<String>,
    /// How long a fetched token is reused, milliseconds.
    pub ttl_ms: u64,
}

/// Where an upstream is declared.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Source {
    /// The config file: read-only through the API.
    Config,
    /// The store, through the admin API.
    Store,
}

/// Persistence for registered upstreams. Every method returns only after the change is durable.
pub trait UpstreamStore: Send + Sync + 'static {
    /// Every stored upstream.
    fn load_upstreams(&self) -> StoreFuture<'_, Vec<RegisteredUpstream>>;
    /// Insert a new upstream; unique `id` and `name`.
    fn insert_upstream(&self, upstream: RegisteredUpstream) -> StoreFuture<'_, ()>;
    /// Replace an upstream if its stored version is `expected_version`.
    fn update_upstream(
        &self,
        upstream: RegisteredUpstream,
        expected_version: i64,
    ) -> StoreFuture<'_, ()>;
    /// Delete an upstream by id if its stored version is `expected_version` (any version when `None`).
    fn delete_upstream(&self, id: String, expected_version: Option<i64>) -> StoreFuture<'_, ()>;
}

// === impl OutboundAuth ===

impl OutboundAuth {
    /// The wire name of the type (`none`, `basic`, `apiKey`, `oauth2ClientCredentials`, `csrf`).
    pub fn type_name(&self) -> &'static str {
        match self {
            Self::None => "none",
            Self::Basic { .. } => "basic",
            Self::ApiKey { .. } => "apiKey",
            Self::Oauth2ClientCredentials(_) => "oauth2ClientCredentials",
            Self::Csrf(_) => "csrf",
        }
    }
}

// === impl RegisteredUpstream ===

impl RegisteredUpstream {
    /// A version-1 upstream from validated fields.
    pub fn from_fields(id: String, f: input::Fields, now: DateTime<Utc>) -> Self {
        Self {
            id,
            name: f.name,
            description: f.description,
            url: f.url,
            sandbox_url: f.sandbox_url,
            use_sandbox: f.use_sandbox,
            is_active: f.is_active,
            connect_timeout_ms: f.connect_timeout_ms,
            timeout_ms: f.timeout_ms,
            header_params: f.header_params,
            auth: f.auth,
            verify_path: f.verify_path,
            created_at: now,
            updated_at: now,
            version: 1,
        }
    }

    /// The base URL requests go to: the sandbox while `use_sandbox` is set.
    pub fn base_url(&self) -> &str {
        match (&self.sandbox_url, self.use_sandbox) {
            (Some(sandbox), true) => sandbox,
            _ => &self.url,
        }
    }
}

/// The stable id of a config-declared upstream: derived from its name, so it survives restarts.
pub fn config_id(name: &str) -> String {
    use sha2::Digest;
    let digest = sha2::Sha256::digest(format!("keyward-config-upstream:{name}").as_bytes());
    hex::encode(&digest[..12])
}

/// Decode a stored record.
pub fn decode(text: &str) -> Result<RegisteredUpstream, crate::keys::StoreError> {
    serde_json::from_str(text)
        .map_err(|e| crate::keys::StoreError::Other(format!("decode upstream: {e}")))
}

/// Encode a record for storage.
pub fn encode(upstream: &RegisteredUpstream) -> Result<String, crate::keys::StoreError> {
    serde_json::to_string(upstream)
        .map_err(|e| crate::keys::StoreError::Other(format!("encode upstream: {e}")))
}
