//! The API key model (seed 004's `ApiKey`, extended), the `KeyStore` trait every backend implements, and the
//! change events that keep each sidecar's in-memory map current.

pub mod cache;
pub mod import;
pub mod postgres;
pub mod query;
pub mod secret;
pub mod sqlite;
pub mod view;

use std::future::Future;
use std::pin::Pin;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::config::Scheme;
use secret::Secret;

/// An API key as stored. Its serde form is the storage format and includes the secret; the admin API renders
/// [`view::ApiKeyView`] instead. Equality compares every field, the secrets too (not on the request path: a
/// reload keeps the cached entry of a key that did not change).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ApiKey {
    /// 24 lowercase hex characters; immutable.
    pub id: String,
    /// Public identifier; unique; immutable.
    pub client_id: String,
    /// The current secret.
    #[serde(with = "secret::stored")]
    pub client_secret: Secret,
    /// The secret before the last rotation, valid until its deadline.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous_secret: Option<PreviousSecret>,
    /// Unique name.
    pub name: String,
    /// Free text.
    #[serde(default)]
    pub description: Option<String>,
    /// The user requests run as.
    #[serde(default)]
    pub user_name: Option<String>,
    /// The device requests run on.
    #[serde(default)]
    pub device_name: Option<String>,
    /// Claims held.
    #[serde(default)]
    pub permissions: Vec<String>,
    /// Schemes this key may use; `None` = every enabled scheme.
    #[serde(default)]
    pub schemes: Option<Vec<Scheme>>,
    /// Authenticates only while true.
    pub is_active: bool,
    /// Permanently revoked.
    #[serde(default)]
    pub revoked: bool,
    /// When it was revoked.
    #[serde(default)]
    pub revoked_at: Option<DateTime<Utc>>,
    /// After this the key does not authenticate.
    #[serde(default)]
    pub expires_at: Option<DateTime<Utc>>,
    /// Creation time.
    pub created_at: DateTime<Utc>,
    /// Last change.
    pub updated_at: DateTime<Utc>,
    /// Version: 1 on create, +1 on every change.
    #[serde(rename = "_v")]
    pub version: i64,
}

/// A rotated-out secret and the end of its grace period.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PreviousSecret {
    /// The old secret.
    #[serde(with = "secret::stored")]
    pub secret: Secret,
    /// It stops working after this.
    pub valid_until: DateTime<Utc>,
}

/// Why a key that proved its secret is refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeyState {
    /// Active, not revoked, not expired.
    Usable,
    /// `isActive` is false.
    Inactive,
    /// Revoked.
    Revoked,
    /// Past `expiresAt`.
    Expired,
}

/// A change to apply to every sidecar's map.
#[derive(Clone, Debug)]
pub enum ChangeEvent {
    /// Created or updated.
    Upsert(Box<ApiKey>),
    /// Deleted, by id.
    Delete(String),
}

/// What a store can fail with.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// No such key.
    #[error("api key not found")]
    NotFound,
    /// The version in the store differs from the expected one.
    #[error("version conflict: the key was changed since version {expected}")]
    VersionConflict {
        /// The version the caller expected.
        expected: i64,
    },
    /// A unique field collides with another key.
    #[error("{field} is already used by another key")]
    Duplicate {
        /// The field (`name`, `clientId`, `id`).
        field: &'static str,
    },
    /// The store cannot be reached.
    #[error("store unavailable: {0}")]
    Unavailable(String),
    /// Anything else (corrupt data, a bug).
    #[error("store error: {0}")]
    Other(String),
}

/// A boxed future returned by store calls (object-safe async).
pub type StoreFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T, StoreError>> + Send + 'a>>;

/// Persistence for keys. Every method returns only after the change is durable.
pub trait KeyStore: Send + Sync + 'static {
    /// Every key, for the in-memory map at start and after a reconnect.
    fn load_all(&self) -> StoreFuture<'_, Vec<ApiKey>>;
    /// Insert a new key; unique `id`, `clientId` and `name`.
    fn insert(&self, key: ApiKey) -> StoreFuture<'_, ()>;
    /// Replace a key if its stored version is `expected_version`.
    fn update(&self, key: ApiKey, expected_version: i64) -> StoreFuture<'_, ()>;
    /// Delete a key by id if its stored version is `expected_version` (or any version when `None`).
    fn delete(&self, id: String, expected_version: Option<i64>) -> StoreFuture<'_, ()>;
    /// Whether the store answers (for `/readyz`).
    fn ping(&self) -> StoreFuture<'_, ()>;
    /// Insert many new keys (bulk import). Stores override this to use one transaction: all or nothing.
    fn insert_many(&self, keys: Vec<ApiKey>) -> StoreFuture<'_, ()> {
        Box::pin(async move {
            for key in keys {
                self.insert(key).await?;
            }
            Ok(())
        })
    }
    /// A short name for logs and metrics (`sqlite`, `postgres`).
    fn kind(&self) -> &'static str;
}

// === impl ApiKey ===

impl ApiKey {
    /// The state of the key at `now`: whether it may authenticate, and if not, why.
    pub fn state(&self, now: DateTime<Utc>) -> KeyState {
        if self.revoked {
            KeyState::Revoked
        } else if !self.is_active {
            KeyState::Inactive
        } else if self.expires_at.is_some_and(|t| t <= now) {
            KeyState::Expired
        } else {
            KeyState::Usable
        }
    }

    /// Does `presented` match the current secret, or the previous one within its grace period? Constant time.
    pub fn secret_matches(&self, presented: &[u8], now: DateTime<Utc>) -> bool {
        let current = self.client_secret.matches(presented);
        let previous = self
            .previous_secret
            .as_ref()
            .is_some_and(|p| p.valid_until > now && p.secret.matches(presented));
        current | previous
    }

    /// The secrets usable for HMAC at `now`: the current one, then the previous one during its grace period.
    pub fn hmac_secrets(&self, now: DateTime<Utc>) -> impl Iterator<Item = &Secret> {
        std::iter::once(&self.client_secret).chain(
            self.previous_secret
                .iter()
                .filter(move |p| p.valid_until > now)
                .map(|p| &p.secret),
        )
    }

    /// Whether this key may use `scheme` (its own list; the config's list is checked by the caller).
    pub fn allows(&self, scheme: Scheme) -> bool {
        self.schemes.as_ref().is_none_or(|s| s.contains(&scheme))
    }
}

/// Decode stored JSON records on every available core (a million keys load at start), each key passed through
/// `convert` on its decoding thread (a full load turns keys into cache entries there, so the decoded set is
/// never held beside the entries).
pub fn decode_records_each<T: Send>(
    texts: &[String],
    convert: &(impl Fn(ApiKey) -> T + Sync),
) -> Result<Vec<T>, StoreError> {
    let threads = std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get);
    let chunk = texts.len().div_ceil(threads).max(1024);
    let decode = |part: &[String]| -> Result<Vec<T>, StoreError> {
        part.iter()
            .map(|t| {
                serde_json::from_str(t)
                    .map(convert)
                    .map_err(|e| StoreError::Other(format!("decode key: {e}")))
            })
            .collect()
    };
    let parts: Vec<Result<Vec<T>, StoreError>> = std::thread::scope(|scope| {
        let handles: Vec<_> = texts
            .chunks(chunk)
            .map(|part| scope.spawn(move || decode(part)))
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err(StoreError::Other("decode thread panicked".into())))
            })
            .collect()
    });
    let mut keys = Vec::with_capacity(texts.len());
    for part in parts {
        keys.extend(part?);
    }
    Ok(keys)
}

/// A new random key id: 24 lowercase hex characters.
pub fn new_id() -> String {
    secret::random_hex(12)
}

/// A new random client id: 40 lowercase hex characters.
pub fn new_client_id() -> String {
    secret::random_hex(20)
}
