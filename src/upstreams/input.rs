//! What the admin API (JSON, camelCase) and the config file (`[[upstreams]]`, snake_case) accept for an
//! upstream, and its validation into [`Fields`], reporting one problem per bad field (`auth.tokenUrl`, ...).
//!
//! Secrets are write-only: on an update, a secret left out keeps the stored one when the auth type is unchanged,
//! so a GET body can be edited and sent back.

use std::time::Duration;

use serde::Deserialize;
use serde_json::Value;

use super::auth_input::parse_auth;
use super::{HeaderParam, OutboundAuth};
use crate::error::Problem;

/// Most characters in a name.
pub const MAX_NAME_LEN: usize = 225;
/// Most extra header and query parameters.
pub const MAX_HEADER_PARAMS: usize = 64;
/// Most extra token request parameters.
pub const MAX_TOKEN_PARAMS: usize = 32;
/// Longest timeout or TTL accepted.
const MAX_TIMEOUT: Duration = Duration::from_secs(600);
/// Default connect timeout.
const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Default response timeout.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60);

/// The auth types, for `/upstreams/options`.
pub const AUTH_TYPES: [&str; 5] = ["none", "basic", "apiKey", "oauth2ClientCredentials", "csrf"];
/// The key locations, for `/upstreams/options`.
pub const KEY_LOCATIONS: [&str; 2] = ["header", "query"];
/// Token request body types, for `/upstreams/options`.
pub const CONTENT_TYPES: [&str; 2] = ["application/x-www-form-urlencoded", "application/json"];
/// Token client authentication methods, for `/upstreams/options`.
pub const CLIENT_AUTH: [&str; 2] = ["body", "basic"];

/// An upstream as the admin API accepts it. Server-set fields are accepted and ignored.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct UpstreamInput {
    /// Ignored (server-set).
    pub id: Option<Value>,
    /// Required; `[A-Za-z0-9._-]`, 1–225 characters.
    pub name: Option<String>,
    /// Optional free text.
    pub description: Option<String>,
    /// Required http(s) base URL.
    pub url: Option<String>,
    /// Optional sandbox base URL.
    pub sandbox_url: Option<String>,
    /// Use the sandbox URL.
    pub use_sandbox: Option<bool>,
    /// Default true.
    pub is_active: Option<bool>,
    /// Duration like `"5s"`.
    pub connect_timeout: Option<String>,
    /// Duration like `"60s"`.
    pub timeout: Option<String>,
    /// Extra headers and query parameters.
    pub header_params: Option<Vec<HeaderParamInput>>,
    /// The outbound credential, `{"type": ...}`; default none.
    pub auth: Option<Value>,
    /// Default `/`.
    pub verify_path: Option<String>,
    /// Ignored (server-set).
    pub source: Option<Value>,
    /// Ignored (server-set).
    pub created_at: Option<Value>,
    /// Ignored (server-set).
    pub updated_at: Option<Value>,
    /// The version the client read (updates).
    #[serde(rename = "_v")]
    pub version: Option<i64>,
}

/// One extra header or query parameter; seed 000's names (`keys`, `values`, `queryparam`) are accepted too.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HeaderParamInput {
    /// Name.
    #[serde(alias = "keys")]
    pub key: String,
    /// Value.
    #[serde(alias = "values")]
    pub value: String,
    /// A query parameter rather than a header.
    #[serde(default, alias = "queryparam")]
    pub query_param: bool,
}

/// The validated client-settable fields of an upstream.
#[derive(Debug)]
pub struct Fields {
    /// Name.
    pub name: String,
    /// Description.
    pub description: Option<String>,
    /// URL.
    pub url: String,
    /// Sandbox URL.
    pub sandbox_url: Option<String>,
    /// Use the sandbox.
    pub use_sandbox: bool,
    /// Active.
    pub is_active: bool,
    /// Connect timeout, ms.
    pub connect_timeout_ms: u64,
    /// Response timeout, ms.
    pub timeout_ms: u64,
    /// Extra parameters.
    pub header_params: Vec<HeaderParam>,
    /// Credential.
    pub auth: OutboundAuth,
    /// Verify path.
    pub verify_path: String,
}

// === impl UpstreamInput ===

impl UpstreamInput {
    /// Validate; `previous` is the stored auth of the upstream being updated (its secrets are kept when left
    /// out). Every problem is reported, one per field.
    pub fn validate(self, previous: Option<&OutboundAuth>) -> Result<Fields, Vec<Problem>> {
        let mut p = Vec::new();
        let name = self.name.unwrap_or_default();
        if !is_name(&name) {
            p.push(Problem::invalid(
                "name",
                "name is required: 1 to 225 characters of A-Z a-z 0-9 . _ -",
            ));
        }
        if self.description.as_ref().is_some_and(|d| d.len() > 4096) {
            p.push(Problem::invalid(
                "description",
                "description must be at most 4096 characters",
            ));
        }
        let url = self.url.unwrap_or_default();
        if !is_http_url(&url) {
            p.push(Problem::invalid(
                "url",
                "url is required: an http:// or https:// URL",
            ));
        }
        let sandbox_url = self.sandbox_url.filter(|s| !s.is_empty());
        if sandbox_url.as_deref().is_some_and(|s| !is_http_url(s)) {
            p.push(Problem::invalid(
                "sandboxUrl",
                "sandboxUrl must be an http:// or https:// URL",
            ));
        }
        let use_sandbox = self.use_sandbox.unwrap_or(false);
        if use_sandbox && sandbox_url.is_none() {
            p.push(Problem::invalid(
                "useSandbox",
                "useSandbox needs a sandboxUrl",
            ));
        }
        let connect_timeout_ms = millis(
            &mut p,
            "connectTimeout",
            self.connect_timeout.as_deref(),
            DEFAULT_CONNECT_TIMEOUT,
        );
        let timeout_ms = millis(&mut p, "timeout", self.timeout.as_deref(), DEFAULT_TIMEOUT);
        let header_params = header_params(&mut p, self.header_params.unwrap_or_default());
        let auth = match self.auth {
            None | Some(Value::Null) => OutboundAuth::None,
            Some(Value::Object(map)) => parse_auth(&mut p, &map, previous),
            Some(_) => {
                p.push(Problem::invalid(
                    "auth",
                    "auth must be an object with a type",
                ));
                OutboundAuth::None
            }
        };
        let verify_path = self.verify_path.unwrap_or_else(|| "/".into());
        if !verify_path.starts_with('/') || verify_path.parse::<http::uri::PathAndQuery>().is_err()
        {
            p.push(Problem::invalid(
                "verifyPath",
                "verifyPath must be a path starting with /",
            ));
        }
        if !p.is_empty() {
            return Err(p);
        }
        Ok(Fields {
            name,
            description: self.description,
            url,
            sandbox_url,
            use_sandbox,
            is_active: self.is_active.unwrap_or(true),
            connect_timeout_ms,
            timeout_ms,
            header_params,
            auth,
            verify_path,
        })
    }
}

/// `[A-Za-z0-9._-]{1,225}`: names appear in routes and in URLs.
pub fn is_name(name: &str) -> bool {
    (1..=MAX_NAME_LEN).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

/// An absolute http(s) URL with an authority.
pub fn is_http_url(text: &str) -> bool {
    text.parse::<http::Uri>()
        .is_ok_and(|u| matches!(u.scheme_str(), Some("http" | "https")) && u.authority().is_some())
}

pub(super) fn millis(
    p: &mut Vec<Problem>,
    field: &str,
    text: Option<&str>,
    default: Duration,
) -> u64 {
    let Some(text) = text else {
        return u64::try_from(default.as_millis()).unwrap_or(u64::MAX);
    };
    match humantime::parse_duration(text) {
        Ok(d) if !d.is_zero() && d <= MAX_TIMEOUT => {
            u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
        }
        _ => {
            p.push(Problem::invalid(
                field,
                format!("{field} must be a duration like \"5s\", above 0 and at most 10m"),
            ));
            0
        }
    }
}

fn header_params(p: &mut Vec<Problem>, input: Vec<HeaderParamInput>) -> Vec<HeaderParam> {
    if input.len() > MAX_HEADER_PARAMS {
        p.push(Problem::invalid(
            "headerParams",
            format!("at most {MAX_HEADER_PARAMS} header params"),
        ));
        return Vec::new();
    }
    let mut out = Vec::new();
    for (i, h) in input.into_iter().enumerate() {
        let ok = if h.query_param {
            !h.key.is_empty() && h.key.len() <= 256
        } else {
            http::HeaderName::from_bytes(h.key.as_bytes()).is_ok()
                && http::HeaderValue::from_str(&h.value).is_ok()
                && !h.key.eq_ignore_ascii_case("host")
        };
        if ok {
            out.push(HeaderParam {
                key: h.key,
                value: h.value,
                query_param: h.query_param,
            });
        } else {
            p.push(Problem::invalid(
                &format!("headerParams[{i}]"),
                "a header param needs a valid header name (not Host) and visible-ASCII value, or a query param name",
            ));
        }
    }
    out
}

/// Rewrite a TOML table's keys from snake_case to camelCase, recursively (the config file's `[[upstreams]]`
/// uses the file's snake_case; validation is shared with the admin API's camelCase JSON).
pub fn camel_keys(value: toml::Value) -> Value {
    match value {
        toml::Value::Table(t) => Value::Object(
            t.into_iter()
                .map(|(k, v)| match k.as_str() {
                    // Token request parameter names are sent as written.
                    "token_params" | "tokenParams" => (camel(&k), verbatim(v)),
                    _ => (camel(&k), camel_keys(v)),
                })
                .collect(),
        ),
        toml::Value::Array(a) => Value::Array(a.into_iter().map(camel_keys).collect()),
        toml::Value::String(s) => Value::String(s),
        toml::Value::Integer(i) => Value::from(i),
        toml::Value::Float(f) => Value::from(f),
        toml::Value::Boolean(b) => Value::Bool(b),
        toml::Value::Datetime(d) => Value::String(d.to_string()),
    }
}

/// A TOML value as JSON with its keys unchanged.
fn verbatim(value: toml::Value) -> Value {
    match value {
        toml::Value::Table(t) => {
            Value::Object(t.into_iter().map(|(k, v)| (k, verbatim(v))).collect())
        }
        other => camel_keys(other),
    }
}

fn camel(key: &str) -> String {
    let mut out = String::with_capacity(key.len());
    let mut upper = false;
    for c in key.chars() {
        if c == '_' && !out.is_empty() {
            upper = true;
        } else if upper {
            out.extend(c.to_uppercase());
            upper = false;
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::secret::Secret;
    use crate::upstreams::KeyLocation;
    use serde_json::json;

    fn validate(v: Value) -> Result<Fields, Vec<Problem>> {
        serde_json::from_value::<UpstreamInput>(v)
            .unwrap()
            .validate(None)
    }

    #[test]
    fn missing_fields_for_a_type_are_one_problem_each() {
        let err = validate(
            json!({"name": "b", "url": "http://x", "auth": {"type": "oauth2ClientCredentials"}}),
        )
        .unwrap_err();
        let paths: Vec<&str> = err.iter().map(|p| p.path.as_str()).collect();
        assert_eq!(
            paths,
            ["auth.tokenUrl", "auth.clientId", "auth.clientSecret"]
        );
    }

    #[test]
    fn unknown_auth_type_and_bad_url_are_reported_together() {
        let err = validate(json!({"name": "b", "url": "ftp://x", "auth": {"type": "magic"}}))
            .unwrap_err();
        let paths: Vec<&str> = err.iter().map(|p| p.path.as_str()).collect();
        assert_eq!(paths, ["url", "auth.type"]);
    }

    #[test]
    fn omitted_secret_is_kept_on_update_of_the_same_type() {
        let old = OutboundAuth::ApiKey {
            name: "X-Key".into(),
            value: Secret::new("s3cret".into()),
            location: KeyLocation::Header,
        };
        let input: UpstreamInput = serde_json::from_value(
            json!({"name": "b", "url": "http://x", "auth": {"type": "apiKey", "name": "X-Other"}}),
        )
        .unwrap();
        let f = input.validate(Some(&old)).unwrap();
        let OutboundAuth::ApiKey { name, value, .. } = f.auth else {
            panic!("type changed")
        };
        assert_eq!((name.as_str(), value.expose()), ("X-Other", "s3cret"));
    }

    #[test]
    fn config_keys_become_camel_case() {
        let t: toml::Value = toml::from_str(
            "sandbox_url = \"x\"\n[auth]\ntoken_url = \"y\"\ntoken_params = { resource_id = \"r\" }\n",
        )
        .unwrap();
        assert_eq!(
            camel_keys(t),
            json!({"sandboxUrl": "x", "auth": {"tokenUrl": "y", "tokenParams": {"resource_id": "r"}}})
        );
    }
}
