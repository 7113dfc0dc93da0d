//! The `auth` object of an upstream's input: one reader per type, each field checked on its own so that every
//! problem is reported with its path (`auth.tokenUrl`), and secrets kept from the stored version when left out.

use std::time::Duration;

use base64::Engine;
use serde_json::{Map, Value};

use super::input::{AUTH_TYPES, CONTENT_TYPES, MAX_TOKEN_PARAMS, is_http_url, millis};
use super::{ClientAuth, CsrfSource, KeyLocation, OutboundAuth, TokenContentType, TokenSource};
use crate::error::Problem;
use crate::keys::secret::Secret;

/// Default CSRF token reuse.
const DEFAULT_CSRF_TTL: Duration = Duration::from_secs(300);

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

/// Validate the `auth` object; `previous` is the stored credential of the upstream being updated.
pub(super) fn parse_auth(
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
