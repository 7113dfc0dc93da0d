//! What the admin API (JSON, camelCase) and the config file (`[[upstreams]]`, snake_case) accept for an
//! upstream, and its validation into [`Fields`], reporting one problem per bad field (`auth.tokenUrl`, ...).
//!
//! Secrets are write-only: on an update, a secret left out keeps the stored one when the auth type is unchanged,
//! so a GET body can be edited and sent back.

use std::time::Duration;

use base64::Engine;
use serde::Deserialize;
use serde_json::{Map, Value};

use super::{
    ClientAuth, CsrfSource, HeaderParam, KeyLocation, OutboundAuth, TokenContentType, TokenSource,
};
use crate::error::Problem;
use crate::keys::secret::Secret;

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
/// Default CSRF token reuse.
const DEFAULT_CSRF_TTL: Duration = Duration::from_secs(300);

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

fn millis(p: &mut Vec<Problem>, field: &str, text: Option<&str>, default: Duration) -> u64 {
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

/// Reads fields of the `auth` object, recording one problem per bad field.
struct AuthObject<'a> {
    map: &'a Map<String, Value>,
    problems: &'a mut Vec<Problem>,
}

impl AuthObject<'_> {
    fn problem(&mut self, field: &str, description: impl Into<String>) {
        self.problems
            .push(Problem::invalid(&format!("auth.{field}"), description));
    }

    /// An optional string field; a non-string is a problem.
    fn text(&mut self, field: &str) -> Option<String> {
        match self.map.get(field) {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) if s.is_empty() => None,
            Some(Value::String(s)) => Some(s.clone()),
            Some(_) => {
                self.problem(field, format!("{field} must be a string"));
                None
            }
        }
    }

    /// A required string field.
    fn required(&mut self, field: &str) -> String {
        self.text(field).unwrap_or_else(|| {
            self.problem(field, format!("{field} is required for this auth type"));
            String::new()
        })
    }

    /// A secret: given, or kept from the previous version, or a problem.
    fn secret(&mut self, field: &str, kept: Option<&Secret>) -> Secret {
        match (self.text(field), kept) {
            (Some(s), _) => Secret::new(s),
            (None, Some(k)) => k.clone(),
            (None, None) => {
                self.problem(field, format!("{field} is required for this auth type"));
                Secret::new(String::new())
            }
        }
    }

    fn url(&mut self, field: &str) -> String {
        let url = self.required(field);
        if !url.is_empty() && !is_http_url(&url) {
            self.problem(field, format!("{field} must be an http:// or https:// URL"));
        }
        url
    }

    fn header(&mut self, field: &str, default: Option<&str>) -> String {
        let name = match (self.text(field), default) {
            (Some(n), _) => n,
            (None, Some(d)) => return d.to_owned(),
            (None, None) => return self.required(field),
        };
        if http::HeaderName::from_bytes(name.as_bytes()).is_err()
            || name.eq_ignore_ascii_case("host")
        {
            self.problem(field, format!("{field} must be a header name (not Host)"));
        }
        name
    }

    /// Every field not in `allowed` is a problem.
    fn only(&mut self, allowed: &[&str]) {
        let unknown: Vec<String> = self
            .map
            .keys()
            // `secretSet` is what GET shows in place of the secrets: accepted back and ignored.
            .filter(|k| {
                !["type", "secretSet"].contains(&k.as_str()) && !allowed.contains(&k.as_str())
            })
            .cloned()
            .collect();
        for k in unknown {
            self.problem(&k, format!("unknown field {k} for this auth type"));
        }
    }
}

fn parse_auth(
    problems: &mut Vec<Problem>,
    map: &Map<String, Value>,
    previous: Option<&OutboundAuth>,
) -> OutboundAuth {
    let mut o = AuthObject { map, problems };
    let kind = o.text("type").unwrap_or_default();
    let same = previous.filter(|a| a.type_name() == kind);
    match kind.as_str() {
        "none" => {
            o.only(&[]);
            OutboundAuth::None
        }
        "basic" => basic(&mut o, same),
        "apiKey" => api_key(&mut o, same),
        "oauth2ClientCredentials" => OutboundAuth::Oauth2ClientCredentials(Box::new(oauth2(
            &mut o,
            match same {
                Some(OutboundAuth::Oauth2ClientCredentials(t)) => Some(&t.client_secret),
                _ => None,
            },
        ))),
        "csrf" => OutboundAuth::Csrf(Box::new(csrf(&mut o))),
        "" => {
            o.problem(
                "type",
                format!("type is required: one of {}", AUTH_TYPES.join(", ")),
            );
            OutboundAuth::None
        }
        other => {
            o.problem(
                "type",
                format!("{other:?} is not one of {}", AUTH_TYPES.join(", ")),
            );
            OutboundAuth::None
        }
    }
}

fn basic(o: &mut AuthObject<'_>, same: Option<&OutboundAuth>) -> OutboundAuth {
    o.only(&["userName", "password", "preEncoded"]);
    let kept = match same {
        Some(OutboundAuth::Basic {
            secret,
            pre_encoded,
            ..
        }) => Some((secret, *pre_encoded)),
        _ => None,
    };
    if let Some(encoded) = o.text("preEncoded") {
        let decoded = base64::engine::general_purpose::STANDARD.decode(encoded.trim());
        if !decoded.is_ok_and(|d| d.contains(&b':')) {
            o.problem(
                "preEncoded",
                "preEncoded must be base64(userName:password), standard alphabet",
            );
        }
        return OutboundAuth::Basic {
            user_name: None,
            secret: Secret::new(encoded.trim().to_owned()),
            pre_encoded: true,
        };
    }
    let user_name = o.text("userName");
    let kept_password = kept.filter(|(_, pre)| !pre).map(|(s, _)| s);
    if user_name.is_none() && kept.is_some_and(|(_, pre)| pre) && o.text("password").is_none() {
        // A pre-encoded credential edited and sent back without its secret.
        let (secret, _) = kept.expect("checked above");
        return OutboundAuth::Basic {
            user_name: None,
            secret: secret.clone(),
            pre_encoded: true,
        };
    }
    let user_name = user_name.unwrap_or_else(|| {
        o.problem(
            "userName",
            "userName is required for basic (or send preEncoded)",
        );
        String::new()
    });
    if user_name.contains(':') {
        o.problem("userName", "userName must not contain ':' (RFC 7617 §2)");
    }
    let secret = o.secret("password", kept_password);
    OutboundAuth::Basic {
        user_name: Some(user_name),
        secret,
        pre_encoded: false,
    }
}

fn api_key(o: &mut AuthObject<'_>, same: Option<&OutboundAuth>) -> OutboundAuth {
    o.only(&["name", "value", "in"]);
    let location = match o.text("in").as_deref() {
        None | Some("header") => KeyLocation::Header,
        Some("query") => KeyLocation::Query,
        Some(other) => {
            o.problem("in", format!("{other:?} is not one of header, query"));
            KeyLocation::Header
        }
    };
    let name = match location {
        KeyLocation::Header => o.header("name", None),
        KeyLocation::Query => o.required("name"),
    };
    let kept = match same {
        Some(OutboundAuth::ApiKey { value, .. }) => Some(value),
        _ => None,
    };
    let value = o.secret("value", kept);
    if location == KeyLocation::Header && http::HeaderValue::from_str(value.expose()).is_err() {
        o.problem("value", "value must be visible ASCII to go in a header");
    }
    OutboundAuth::ApiKey {
        name,
        value,
        location,
    }
}

fn oauth2(o: &mut AuthObject<'_>, kept: Option<&Secret>) -> TokenSource {
    o.only(&[
        "tokenUrl",
        "clientId",
        "clientSecret",
        "scope",
        "tokenParams",
        "clientAuth",
        "contentType",
        "responseField",
        "header",
        "prefix",
    ]);
    let token_url = o.url("tokenUrl");
    let client_id = o.required("clientId");
    let client_secret = o.secret("clientSecret", kept);
    let scope = o.text("scope");
    let token_params = match o.map.get("tokenParams") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Object(m))
            if m.len() <= MAX_TOKEN_PARAMS && m.values().all(Value::is_string) =>
        {
            m.iter()
                .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_owned()))
                .collect()
        }
        Some(_) => {
            o.problem(
                "tokenParams",
                format!(
                    "tokenParams must be an object of at most {MAX_TOKEN_PARAMS} string values"
                ),
            );
            Vec::new()
        }
    };
    let client_auth = match o.text("clientAuth").as_deref() {
        None | Some("body") => ClientAuth::Body,
        Some("basic") => ClientAuth::Basic,
        Some(other) => {
            o.problem("clientAuth", format!("{other:?} is not one of body, basic"));
            ClientAuth::Body
        }
    };
    let content_type = match o.text("contentType").as_deref() {
        None | Some("application/x-www-form-urlencoded") => TokenContentType::Form,
        Some("application/json") => TokenContentType::Json,
        Some(other) => {
            o.problem(
                "contentType",
                format!("{other:?} is not one of {}", CONTENT_TYPES.join(", ")),
            );
            TokenContentType::Form
        }
    };
    let prefix = match o.map.get("prefix") {
        Some(Value::String(s)) => s.clone(),
        _ => "Bearer ".into(),
    };
    TokenSource {
        token_url,
        client_id,
        client_secret,
        scope,
        token_params,
        client_auth,
        content_type,
        response_field: o
            .text("responseField")
            .unwrap_or_else(|| "access_token".into()),
        header: o.header("header", Some("Authorization")),
        prefix,
    }
}

fn csrf(o: &mut AuthObject<'_>) -> CsrfSource {
    o.only(&[
        "tokenUrl",
        "method",
        "header",
        "responseField",
        "responseHeader",
        "ttl",
    ]);
    let token_url = o.url("tokenUrl");
    let method = o.text("method").unwrap_or_else(|| "GET".into());
    if method != "GET" && method != "POST" {
        o.problem("method", "method must be GET or POST");
    }
    let header = o.header("header", Some("X-CSRF-Token"));
    let response_field = o.text("responseField");
    let response_header = o.text("responseHeader");
    if response_field.is_some() && response_header.is_some() {
        o.problem(
            "responseHeader",
            "give responseField or responseHeader, not both",
        );
    }
    if response_header
        .as_ref()
        .is_some_and(|h| http::HeaderName::from_bytes(h.as_bytes()).is_err())
    {
        o.problem("responseHeader", "responseHeader must be a header name");
    }
    // Neither: the token comes back in the header it is sent in (the common X-CSRF-Token: Fetch pattern).
    let response_header =
        response_header.or_else(|| response_field.is_none().then(|| header.clone()));
    let ttl = o.text("ttl");
    let ttl_ms = millis(o.problems, "auth.ttl", ttl.as_deref(), DEFAULT_CSRF_TTL);
    CsrfSource {
        token_url,
        method,
        header,
        response_field,
        response_header,
        ttl_ms,
    }
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
