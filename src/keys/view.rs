//! The admin API's JSON forms of a key: `ApiKeyView` (what is returned; the secret only on create and rotate)
//! and `ApiKeyInput` (what is accepted on create and update), with the field rules of DESIGN.md §2.

use base64::Engine;
use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Deserialize, Serialize, Serializer};

use super::{ApiKey, secret::Secret};
use crate::config::Scheme;
use crate::error::Problem;
use crate::policy::Claim;

/// Most characters in `name`, `userName`, `deviceName`.
pub const MAX_NAME_LEN: usize = 225;
/// Most characters in `description`.
pub const MAX_DESCRIPTION_LEN: usize = 4096;
/// Most entries in `permissions`.
pub const MAX_PERMISSIONS: usize = 256;

/// A key as the admin API returns it.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ApiKeyView<'a> {
    id: &'a str,
    client_id: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    client_secret: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    encoded: Option<String>,
    name: &'a str,
    description: Option<&'a str>,
    user_name: Option<&'a str>,
    device_name: Option<&'a str>,
    permissions: &'a [String],
    #[serde(skip_serializing_if = "Option::is_none")]
    schemes: Option<&'a [Scheme]>,
    is_active: bool,
    revoked: bool,
    #[serde(serialize_with = "opt_time")]
    revoked_at: Option<DateTime<Utc>>,
    #[serde(serialize_with = "opt_time")]
    expires_at: Option<DateTime<Utc>>,
    #[serde(serialize_with = "time")]
    created_at: DateTime<Utc>,
    #[serde(serialize_with = "time")]
    updated_at: DateTime<Utc>,
    #[serde(serialize_with = "opt_time", skip_serializing_if = "Option::is_none")]
    previous_secret_valid_until: Option<DateTime<Utc>>,
    #[serde(rename = "_v")]
    version: i64,
}

/// A key as the admin API accepts it. Server-set fields are accepted and ignored, so that a GET body can be
/// edited and sent back; any other unknown field is an error.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ApiKeyInput {
    /// Ignored (server-set).
    pub id: Option<serde_json::Value>,
    /// Given on create only; immutable.
    pub client_id: Option<String>,
    /// Given on create only; use rotate afterwards.
    pub client_secret: Option<String>,
    /// Ignored (server-set).
    pub encoded: Option<serde_json::Value>,
    /// Required.
    pub name: Option<String>,
    /// Optional.
    pub description: Option<String>,
    /// Optional.
    pub user_name: Option<String>,
    /// Optional.
    pub device_name: Option<String>,
    /// Claims.
    pub permissions: Option<Vec<String>>,
    /// Allowed schemes.
    pub schemes: Option<Vec<Scheme>>,
    /// Defaults to false.
    pub is_active: Option<bool>,
    /// Ignored (server-set; use revoke).
    pub revoked: Option<serde_json::Value>,
    /// Ignored (server-set).
    pub revoked_at: Option<serde_json::Value>,
    /// Expiry, RFC 3339, or null.
    pub expires_at: Option<DateTime<Utc>>,
    /// Ignored (server-set).
    pub created_at: Option<serde_json::Value>,
    /// Ignored (server-set).
    pub updated_at: Option<serde_json::Value>,
    /// Ignored (server-set).
    pub previous_secret_valid_until: Option<serde_json::Value>,
    /// The version the client read (updates).
    #[serde(rename = "_v")]
    pub version: Option<i64>,
}

/// The fields of a key a client may set, validated.
#[derive(Debug)]
pub struct ValidInput {
    /// Client id, if given.
    pub client_id: Option<String>,
    /// Secret, if given.
    pub client_secret: Option<Secret>,
    /// Name.
    pub name: String,
    /// Description.
    pub description: Option<String>,
    /// User.
    pub user_name: Option<String>,
    /// Device.
    pub device_name: Option<String>,
    /// Permissions.
    pub permissions: Vec<String>,
    /// Schemes.
    pub schemes: Option<Vec<Scheme>>,
    /// Active.
    pub is_active: bool,
    /// Expiry.
    pub expires_at: Option<DateTime<Utc>>,
}

// === impl ApiKeyView ===

impl<'a> ApiKeyView<'a> {
    /// The public view, without the secret.
    pub fn new(key: &'a ApiKey) -> Self {
        Self {
            id: &key.id,
            client_id: &key.client_id,
            client_secret: None,
            encoded: None,
            name: &key.name,
            description: key.description.as_deref(),
            user_name: key.user_name.as_deref(),
            device_name: key.device_name.as_deref(),
            permissions: &key.permissions,
            schemes: key.schemes.as_deref(),
            is_active: key.is_active,
            revoked: key.revoked,
            revoked_at: key.revoked_at,
            expires_at: key.expires_at,
            created_at: key.created_at,
            updated_at: key.updated_at,
            previous_secret_valid_until: key.previous_secret.as_ref().map(|p| p.valid_until),
            version: key.version,
        }
    }

    /// The view returned once, on create and rotate: with `clientSecret` and `encoded`.
    pub fn with_secret(key: &'a ApiKey) -> Self {
        let mut view = Self::new(key);
        view.client_secret = Some(key.client_secret.expose());
        view.encoded = Some(encode_credential(
            &key.client_id,
            key.client_secret.expose(),
        ));
        view
    }
}

/// `base64(clientId ":" clientSecret)`, standard alphabet, padded (seed 003's `encoded`).
pub fn encode_credential(client_id: &str, secret: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(format!("{client_id}:{secret}"))
}

fn time<S: Serializer>(t: &DateTime<Utc>, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&t.to_rfc3339_opts(SecondsFormat::Millis, true))
}

fn opt_time<S: Serializer>(t: &Option<DateTime<Utc>>, s: S) -> Result<S::Ok, S::Error> {
    match t {
        Some(t) => time(t, s),
        None => s.serialize_none(),
    }
}

// === impl ValidInput ===

impl ValidInput {
    /// A new key (version 1) from validated input: `id`, client id and secret are generated when not given.
    pub fn into_new_key(self, id: Option<String>, now: DateTime<Utc>) -> ApiKey {
        let client_id = self.client_id.clone().unwrap_or_else(super::new_client_id);
        let client_secret = self.client_secret.clone().unwrap_or_else(Secret::generate);
        ApiKey {
            id: id.unwrap_or_else(super::new_id),
            client_id,
            client_secret,
            version: 1,
            ..self.apply_to(None, now)
        }
    }

    /// The client-settable fields applied over `old` (an update keeps the server-set fields and bumps `_v`);
    /// with no `old`, a blank key for [`ValidInput::into_new_key`] to complete.
    pub fn apply_to(self, old: Option<&ApiKey>, now: DateTime<Utc>) -> ApiKey {
        ApiKey {
            id: old.map(|o| o.id.clone()).unwrap_or_default(),
            client_id: old.map(|o| o.client_id.clone()).unwrap_or_default(),
            client_secret: old
                .map_or_else(|| Secret::new(String::new()), |o| o.client_secret.clone()),
            previous_secret: old.and_then(|o| o.previous_secret.clone()),
            name: self.name,
            description: self.description,
            user_name: self.user_name,
            device_name: self.device_name,
            permissions: self.permissions,
            schemes: self.schemes,
            is_active: self.is_active,
            revoked: old.is_some_and(|o| o.revoked),
            revoked_at: old.and_then(|o| o.revoked_at),
            expires_at: self.expires_at,
            created_at: old.map_or(now, |o| o.created_at),
            updated_at: now,
            version: old.map_or(0, |o| o.version + 1),
        }
    }
}

// === impl ApiKeyInput ===

impl ApiKeyInput {
    /// Check every field rule, returning one problem per bad field. `creating` allows `clientId`/`clientSecret`.
    pub fn validate(self, creating: bool) -> Result<ValidInput, Vec<Problem>> {
        let mut p = Vec::new();
        let name = match self.name {
            Some(n) if !n.trim().is_empty() && n.chars().count() <= MAX_NAME_LEN => n,
            Some(_) => {
                p.push(Problem::invalid(
                    "name",
                    format!("name must be 1 to {MAX_NAME_LEN} characters"),
                ));
                String::new()
            }
            None => {
                p.push(Problem::invalid("name", "name is required"));
                String::new()
            }
        };
        check_len(
            &mut p,
            "description",
            self.description.as_deref(),
            MAX_DESCRIPTION_LEN,
        );
        check_len(&mut p, "userName", self.user_name.as_deref(), MAX_NAME_LEN);
        check_len(
            &mut p,
            "deviceName",
            self.device_name.as_deref(),
            MAX_NAME_LEN,
        );
        let permissions = self.permissions.unwrap_or_default();
        if permissions.len() > MAX_PERMISSIONS {
            p.push(Problem::invalid(
                "permissions",
                format!("at most {MAX_PERMISSIONS} permissions"),
            ));
        }
        for (i, perm) in permissions.iter().enumerate() {
            if let Err(e) = Claim::parse(perm) {
                p.push(Problem::invalid(
                    &format!("permissions[{i}]"),
                    e.to_string(),
                ));
            }
        }
        if let Some(id) = &self.client_id {
            let ok = (8..=128).contains(&id.len())
                && id
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
            if !ok {
                p.push(Problem::invalid(
                    "clientId",
                    "clientId must be 8 to 128 of A-Z a-z 0-9 . _ -",
                ));
            }
        }
        let client_secret = match self.client_secret {
            Some(_) if !creating => {
                p.push(Problem::invalid(
                    "clientSecret",
                    "clientSecret cannot be changed by an update; use rotate",
                ));
                None
            }
            Some(s)
                if s.chars().count() < 32 || s.len() > 512 || s.chars().any(char::is_control) =>
            {
                p.push(Problem::invalid(
                    "clientSecret",
                    "clientSecret must be 32 to 512 characters, no control characters",
                ));
                None
            }
            other => other.map(Secret::new),
        };
        if matches!(&self.schemes, Some(s) if s.is_empty()) {
            p.push(Problem::invalid(
                "schemes",
                "schemes must name at least one scheme, or be absent",
            ));
        }
        if !p.is_empty() {
            return Err(p);
        }
        Ok(ValidInput {
            client_id: self.client_id,
            client_secret,
            name,
            description: self.description,
            user_name: self.user_name,
            device_name: self.device_name,
            permissions,
            schemes: self.schemes,
            is_active: self.is_active.unwrap_or(false),
            expires_at: self.expires_at,
        })
    }
}

fn check_len(p: &mut Vec<Problem>, field: &str, value: Option<&str>, max: usize) {
    if value.is_some_and(|v| v.chars().count() > max) {
        p.push(Problem::invalid(
            field,
            format!("{field} must be at most {max} characters"),
        ));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encoded_is_base64_of_id_colon_secret() {
        assert_eq!(encode_credential("id", "secret"), "aWQ6c2VjcmV0");
    }

    #[test]
    fn every_bad_field_is_reported() {
        let input = ApiKeyInput {
            name: Some(String::new()),
            description: Some("x".repeat(5000)),
            permissions: Some(vec!["ok".into(), "not ok".into()]),
            client_secret: Some("short".into()),
            ..Default::default()
        };
        let problems = input.validate(true).unwrap_err();
        let paths: Vec<_> = problems.iter().map(|p| p.path.as_str()).collect();
        assert_eq!(
            paths,
            ["name", "description", "permissions[1]", "clientSecret"]
        );
    }

    #[test]
    fn unknown_fields_are_rejected_but_server_fields_ignored() {
        let ok: Result<ApiKeyInput, _> =
            serde_json::from_str(r#"{"name":"a","id":"x","createdAt":"y","_v":3}"#);
        assert!(ok.is_ok());
        let bad: Result<ApiKeyInput, _> = serde_json::from_str(r#"{"name":"a","admin":true}"#);
        assert!(bad.is_err());
    }
}
