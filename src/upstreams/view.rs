//! The admin API's JSON form of an upstream: every field except the secrets, which are write-only. Whether a
//! secret is set is shown by `secretSet`, never the value.

use chrono::SecondsFormat;
use serde::Serialize;
use serde_json::{Value, json};

use super::{HeaderParam, OutboundAuth, RegisteredUpstream, Source};

/// An upstream as the admin API returns it.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct UpstreamView<'a> {
    id: &'a str,
    name: &'a str,
    description: Option<&'a str>,
    url: &'a str,
    sandbox_url: Option<&'a str>,
    use_sandbox: bool,
    is_active: bool,
    connect_timeout: String,
    timeout: String,
    header_params: &'a [HeaderParam],
    auth: Value,
    verify_path: &'a str,
    source: Source,
    created_at: String,
    updated_at: String,
    #[serde(rename = "_v")]
    version: i64,
}

// === impl UpstreamView ===

impl<'a> UpstreamView<'a> {
    /// The public form of `u`.
    pub fn new(u: &'a RegisteredUpstream, source: Source) -> Self {
        Self {
            id: &u.id,
            name: &u.name,
            description: u.description.as_deref(),
            url: &u.url,
            sandbox_url: u.sandbox_url.as_deref(),
            use_sandbox: u.use_sandbox,
            is_active: u.is_active,
            connect_timeout: duration(u.connect_timeout_ms),
            timeout: duration(u.timeout_ms),
            header_params: &u.header_params,
            auth: auth_view(&u.auth),
            verify_path: &u.verify_path,
            source,
            created_at: u.created_at.to_rfc3339_opts(SecondsFormat::Millis, true),
            updated_at: u.updated_at.to_rfc3339_opts(SecondsFormat::Millis, true),
            version: u.version,
        }
    }
}

fn duration(ms: u64) -> String {
    humantime::format_duration(std::time::Duration::from_millis(ms)).to_string()
}

/// The auth object without its secrets.
fn auth_view(auth: &OutboundAuth) -> Value {
    match auth {
        OutboundAuth::None => json!({"type": "none"}),
        OutboundAuth::Basic {
            user_name,
            pre_encoded,
            ..
        } => {
            let secret = if *pre_encoded {
                "preEncoded"
            } else {
                "password"
            };
            json!({"type": "basic", "userName": user_name, "secretSet": [secret]})
        }
        OutboundAuth::ApiKey { name, location, .. } => {
            json!({"type": "apiKey", "name": name, "in": location, "secretSet": ["value"]})
        }
        OutboundAuth::Oauth2ClientCredentials(t) => {
            let params: serde_json::Map<String, Value> = t
                .token_params
                .iter()
                .map(|(k, v)| (k.clone(), Value::String(v.clone())))
                .collect();
            json!({
                "type": "oauth2ClientCredentials",
                "tokenUrl": t.token_url,
                "clientId": t.client_id,
                "scope": t.scope,
                "tokenParams": params,
                "clientAuth": t.client_auth,
                "contentType": t.content_type,
                "responseField": t.response_field,
                "header": t.header,
                "prefix": t.prefix,
                "secretSet": ["clientSecret"],
            })
        }
        OutboundAuth::Csrf(c) => json!({
            "type": "csrf",
            "tokenUrl": c.token_url,
            "method": c.method,
            "header": c.header,
            "responseField": c.response_field,
            "responseHeader": c.response_header,
            "ttl": duration(c.ttl_ms),
        }),
    }
}
