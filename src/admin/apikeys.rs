//! `/apikeys`: list, get, create, create-or-update with `_v`/`If-Match`, delete, revoke, rotate. Every write
//! goes to the store first, then to the in-memory map, then the response goes out.

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use http::{HeaderValue, Request, Response, StatusCode, header};
use hyper::body::Incoming;
use serde::{Deserialize, Serialize};

use super::{AdminState, Caller, Endpoint, Resource, if_match, json, read_json, required_version};
use crate::error::Error;
use crate::keys::cache::KeyEntry;
use crate::keys::query::ListQuery;
use crate::keys::secret::Secret;
use crate::keys::view::{ApiKeyInput, ApiKeyView};
use crate::keys::{ApiKey, ChangeEvent, PreviousSecret};
use crate::policy::{Claim, authorize};
use crate::proxy::forward::ProxyBody;

/// How keys are named in the shared admin messages.
const KEY: Resource = Resource {
    noun: "key",
    not_found: "api key not found",
};

/// Longest rotation grace period.
const MAX_GRACE: Duration = Duration::from_secs(30 * 24 * 3600);

/// Seed 004's `QueryResult`.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct QueryResult<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    items: Option<Vec<ApiKeyView<'a>>>,
    count: usize,
    total_count: usize,
}

/// The body of `POST /apikeys/{id}/rotate`.
#[derive(Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct RotateInput {
    /// How long the old secret keeps working, e.g. `"1h"`. Default none.
    grace_period: Option<String>,
    /// A new secret to use instead of a generated one (migrations).
    client_secret: Option<String>,
}

/// Run an authenticated `/apikeys` endpoint.
pub async fn dispatch(
    state: &AdminState,
    caller: &Caller,
    endpoint: Endpoint,
    req: Request<Incoming>,
) -> Result<Response<ProxyBody>, Error> {
    let _guard = match endpoint {
        Endpoint::ListKeys | Endpoint::GetKey(_) => None,
        _ => Some(state.write_lock.lock().await),
    };
    match endpoint {
        Endpoint::ListKeys => list(state, &req),
        Endpoint::GetKey(id) => json(StatusCode::OK, &ApiKeyView::new(&find(state, &id)?.key)),
        Endpoint::CreateKey => {
            let input = read_json::<ApiKeyInput>(req, state.max_body)
                .await?
                .ok_or_else(|| Error::invalid("body", "a JSON body is required"))?;
            create(state, caller, input, None).await
        }
        Endpoint::PutKey(id) => put(state, caller, &id, req).await,
        Endpoint::DeleteKey(id) => delete(state, &id, if_match(req.headers())?).await,
        Endpoint::RevokeKey(id) => revoke(state, &id).await,
        Endpoint::RotateKey(id) => {
            let input = read_json::<RotateInput>(req, state.max_body)
                .await?
                .unwrap_or_default();
            rotate(state, &id, input).await
        }
        Endpoint::Metrics | Endpoint::Healthz | Endpoint::Readyz | Endpoint::Upstream(_) => {
            Err(Error::Internal("endpoint dispatched as /apikeys".into()))
        }
    }
}

fn find(state: &AdminState, id: &str) -> Result<Arc<KeyEntry>, Error> {
    state
        .cache
        .find(id)
        .ok_or_else(|| Error::not_found("id", "api key not found"))
}

fn list(state: &AdminState, req: &Request<Incoming>) -> Result<Response<ProxyBody>, Error> {
    let x_filter = match req.headers().get("x-filter") {
        Some(v) => Some(
            v.to_str()
                .map_err(|_| Error::invalid("x-filter", "the x-filter header must be ASCII"))?,
        ),
        None => None,
    };
    let query = ListQuery::parse(req.uri().query(), x_filter).map_err(Error::BadRequest)?;
    let mut matches: Vec<Arc<KeyEntry>> = state
        .cache
        .snapshot()
        .into_iter()
        .filter(|e| query.matches(&e.key))
        .collect();
    let total = matches.len();
    if query.count_only {
        return json(
            StatusCode::OK,
            &QueryResult {
                items: None,
                count: total,
                total_count: total,
            },
        );
    }
    query.sort(&mut matches, |e| &e.key);
    let items: Vec<ApiKeyView<'_>> = matches
        .iter()
        .skip(query.skip)
        .take(query.take)
        .map(|e| ApiKeyView::new(&e.key))
        .collect();
    json(
        StatusCode::OK,
        &QueryResult {
            count: items.len(),
            items: Some(items),
            total_count: total,
        },
    )
}

/// No privilege escalation: every permission written must be one the caller holds.
fn check_escalation(caller: &Caller, permissions: &[String]) -> Result<(), Error> {
    let wanted: Vec<Claim> = permissions
        .iter()
        .filter_map(|p| Claim::parse(p).ok())
        .collect();
    authorize(&caller.claims, &wanted).map_err(|missing| Error::InsufficientScope { missing })
}

async fn create(
    state: &AdminState,
    caller: &Caller,
    input: ApiKeyInput,
    id: Option<String>,
) -> Result<Response<ProxyBody>, Error> {
    let v = input.validate(true).map_err(Error::BadRequest)?;
    check_escalation(caller, &v.permissions)?;
    let key = v.into_new_key(id, Utc::now());
    state
        .store
        .insert(key.clone())
        .await
        .map_err(|e| KEY.store_error(e))?;
    let mut response = json(StatusCode::CREATED, &ApiKeyView::with_secret(&key))?;
    if let Ok(location) = HeaderValue::from_str(&format!("/apikeys/{}", key.id)) {
        response.headers_mut().insert(header::LOCATION, location);
    }
    state.cache.apply(ChangeEvent::Upsert(Box::new(key)));
    Ok(response)
}

async fn put(
    state: &AdminState,
    caller: &Caller,
    id: &str,
    req: Request<Incoming>,
) -> Result<Response<ProxyBody>, Error> {
    let header_version = if_match(req.headers())?;
    let existing = state.cache.find(id);
    let right = Claim::from_static(if existing.is_some() {
        "ApiKeyUpdate"
    } else {
        "ApiKeyCreate"
    });
    caller.require(&right)?;
    let input = read_json::<ApiKeyInput>(req, state.max_body)
        .await?
        .ok_or_else(|| Error::invalid("body", "a JSON body is required"))?;
    let Some(existing) = existing else {
        if !is_key_id(id) {
            return Err(Error::invalid(
                "id",
                "a new key's id must be 24 lowercase hex characters",
            ));
        }
        return create(state, caller, input, Some(id.to_owned())).await;
    };
    let expected = required_version(input.version, header_version)?;
    let old = &existing.key;
    if expected != old.version {
        return Err(KEY.stale(expected));
    }
    if input
        .client_id
        .as_ref()
        .is_some_and(|c| *c != old.client_id)
    {
        return Err(Error::invalid("clientId", "clientId is immutable"));
    }
    let v = input.validate(false).map_err(Error::BadRequest)?;
    check_escalation(caller, &v.permissions)?;
    let key = v.apply_to(Some(old), Utc::now());
    save(state, key, expected, StatusCode::OK, false).await
}

async fn delete(
    state: &AdminState,
    id: &str,
    expected: Option<i64>,
) -> Result<Response<ProxyBody>, Error> {
    let existing = find(state, id)?;
    if let Some(v) = expected.filter(|v| *v != existing.key.version) {
        return Err(KEY.stale(v));
    }
    state
        .store
        .delete(existing.key.id.clone(), expected)
        .await
        .map_err(|e| KEY.store_error(e))?;
    state
        .cache
        .apply(ChangeEvent::Delete(existing.key.id.clone()));
    json(StatusCode::OK, &ApiKeyView::new(&existing.key))
}

async fn revoke(state: &AdminState, id: &str) -> Result<Response<ProxyBody>, Error> {
    let existing = find(state, id)?;
    let old = &existing.key;
    if old.revoked {
        return json(StatusCode::OK, &ApiKeyView::new(old));
    }
    let now = Utc::now();
    let key = ApiKey {
        revoked: true,
        revoked_at: Some(now),
        previous_secret: None,
        updated_at: now,
        version: old.version + 1,
        ..old.clone()
    };
    save(state, key, old.version, StatusCode::OK, false).await
}

async fn rotate(
    state: &AdminState,
    id: &str,
    input: RotateInput,
) -> Result<Response<ProxyBody>, Error> {
    let existing = find(state, id)?;
    let old = &existing.key;
    if old.revoked {
        return Err(Error::conflict(
            "revoked",
            "a revoked key cannot be rotated",
        ));
    }
    let grace = match input.grace_period.as_deref() {
        None => Duration::ZERO,
        Some(text) => humantime::parse_duration(text).map_err(|_| {
            Error::invalid(
                "gracePeriod",
                "gracePeriod must be a duration like \"1h\" or \"30m\"",
            )
        })?,
    };
    if grace > MAX_GRACE {
        return Err(Error::invalid(
            "gracePeriod",
            "gracePeriod must be at most 30 days",
        ));
    }
    let secret = match input.client_secret {
        Some(s) if s.chars().count() < 32 || s.len() > 512 || s.chars().any(char::is_control) => {
            return Err(Error::invalid(
                "clientSecret",
                "clientSecret must be 32 to 512 characters, no control characters",
            ));
        }
        Some(s) => Secret::new(s),
        None => Secret::generate(),
    };
    let now = Utc::now();
    let previous = (!grace.is_zero()).then(|| PreviousSecret {
        secret: old.client_secret.clone(),
        valid_until: now + chrono::Duration::from_std(grace).unwrap_or_default(),
    });
    let key = ApiKey {
        client_secret: secret,
        previous_secret: previous,
        updated_at: now,
        version: old.version + 1,
        ..old.clone()
    };
    save(state, key, old.version, StatusCode::OK, true).await
}

/// Persist an update (compare-and-swap on `_v`), then update memory, then answer.
async fn save(
    state: &AdminState,
    key: ApiKey,
    expected: i64,
    status: StatusCode,
    with_secret: bool,
) -> Result<Response<ProxyBody>, Error> {
    state
        .store
        .update(key.clone(), expected)
        .await
        .map_err(|e| KEY.store_error(e))?;
    let response = if with_secret {
        json(status, &ApiKeyView::with_secret(&key))
    } else {
        json(status, &ApiKeyView::new(&key))
    }?;
    state.cache.apply(ChangeEvent::Upsert(Box::new(key)));
    Ok(response)
}

fn is_key_id(id: &str) -> bool {
    id.len() == 24 && id.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}
