//! `/upstreams` (DESIGN.md §9, seed 000): list with paging, sorting and a search, get by id or name, create,
//! update with `_v`/`If-Match`, delete, the options enumerations, and verify. Every write goes to the store first,
//! then to the registry, then the response goes out, so a change is in force on the next proxied request.
//! Config-declared upstreams are listed with `source: "config"` and cannot be changed through the API.

use std::sync::Arc;

use chrono::Utc;
use http::{HeaderValue, Method, Request, Response, StatusCode, header};
use hyper::body::Incoming;
use serde::Serialize;
use serde_json::json;

use super::{AdminState, Resource, if_match, json, read_json, required_version};
use crate::error::{Error, Problem};
use crate::keys::new_id;
use crate::policy::Claim;
use crate::proxy::forward::ProxyBody;
use crate::upstreams::input::{self, UpstreamInput};
use crate::upstreams::registry::Entry;
use crate::upstreams::view::UpstreamView;
use crate::upstreams::{RegisteredUpstream, Source, probe};

/// How upstreams are named in the shared admin messages.
const UPSTREAM: Resource = Resource {
    noun: "upstream",
    not_found: "upstream not found",
};

/// Default `$take`.
const DEFAULT_TAKE: usize = 100;
/// Largest `$take`.
const MAX_TAKE: usize = 1000;

/// An `/upstreams` call.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum UpstreamCall {
    /// `GET /upstreams`
    List,
    /// `GET /upstreams/options`
    Options,
    /// `GET /upstreams/{id}` (id or name)
    Get(String),
    /// `POST /upstreams`
    Create,
    /// `PUT /upstreams/{id}`
    Put(String),
    /// `DELETE /upstreams/{id}`
    Delete(String),
    /// `POST /upstreams/{id}/verify`
    Verify(String),
}

/// Seed 004's `QueryResult`.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct QueryResult<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    items: Option<Vec<UpstreamView<'a>>>,
    count: usize,
    total_count: usize,
}

// === impl UpstreamCall ===

impl UpstreamCall {
    /// Match the segments after `/upstreams`; `Ok(None)` = not an upstream path; `Err` = 405.
    pub fn parse(
        method: &Method,
        rest: &[&str],
        id: impl Fn(&str) -> String,
    ) -> Result<Self, Error> {
        Ok(match (rest, method) {
            ([], &Method::GET) => Self::List,
            ([], &Method::POST) => Self::Create,
            (["options"], &Method::GET) => Self::Options,
            ([k], &Method::GET) => Self::Get(id(k)),
            ([k], &Method::PUT) => Self::Put(id(k)),
            ([k], &Method::DELETE) => Self::Delete(id(k)),
            ([k, "verify"], &Method::POST) => Self::Verify(id(k)),
            ([] | [_] | [_, "verify"], _) => return Err(Error::MethodNotAllowed),
            _ => return Err(Error::not_found("path", "no such admin endpoint")),
        })
    }

    /// The right each call requires.
    pub fn right(&self) -> Claim {
        match self {
            Self::List | Self::Options | Self::Get(_) => Claim::from_static("UpstreamList"),
            Self::Create => Claim::from_static("UpstreamCreate"),
            // verify sends the upstream's credentials out: as strong as changing them.
            Self::Put(_) | Self::Verify(_) => Claim::from_static("UpstreamUpdate"),
            Self::Delete(_) => Claim::from_static("UpstreamDelete"),
        }
    }

    /// A bounded label for metrics and logs.
    pub fn label(&self) -> &'static str {
        match self {
            Self::List => "list_upstreams",
            Self::Options => "upstream_options",
            Self::Get(_) => "get_upstream",
            Self::Create => "create_upstream",
            Self::Put(_) => "put_upstream",
            Self::Delete(_) => "delete_upstream",
            Self::Verify(_) => "verify_upstream",
        }
    }
}

/// Run an authorized `/upstreams` call.
pub async fn dispatch(
    state: &AdminState,
    call: UpstreamCall,
    req: Request<Incoming>,
) -> Result<Response<ProxyBody>, Error> {
    let _guard = match call {
        UpstreamCall::Create | UpstreamCall::Put(_) | UpstreamCall::Delete(_) => {
            Some(state.write_lock.lock().await)
        }
        _ => None,
    };
    match call {
        UpstreamCall::List => list(state, req.uri().query()),
        UpstreamCall::Options => json(
            StatusCode::OK,
            &json!({
                "authTypes": input::AUTH_TYPES,
                "keyLocations": input::KEY_LOCATIONS,
                "contentTypes": input::CONTENT_TYPES,
                "clientAuth": input::CLIENT_AUTH,
                "csrfMethods": ["GET", "POST"],
                "sources": ["config", "store"],
            }),
        ),
        UpstreamCall::Get(id) => {
            let e = find(state, &id)?;
            json(StatusCode::OK, &UpstreamView::new(&e.upstream, e.source))
        }
        UpstreamCall::Create => create(state, req).await,
        UpstreamCall::Put(id) => put(state, &id, req).await,
        UpstreamCall::Delete(id) => delete(state, &id, if_match(req.headers())?).await,
        UpstreamCall::Verify(id) => {
            let e = find(state, &id)?;
            let report = probe::verify(&e, state.upstreams.metrics()).await;
            json(StatusCode::OK, &report)
        }
    }
}

fn find(state: &AdminState, id: &str) -> Result<Arc<Entry>, Error> {
    state
        .upstreams
        .find(id)
        .ok_or_else(|| Error::not_found("id", "upstream not found"))
}

/// `$skip`, `$take`, `$sort` (name, url, createdAt, updatedAt; `-field` or `field:desc`), `$count`, and the
/// search `q` (seed 000's `api_search`: a case-insensitive substring of the name, URL or sandbox URL), plus
/// `isActive`, `authType` and `source` equality filters.
fn list(state: &AdminState, query: Option<&str>) -> Result<Response<ProxyBody>, Error> {
    let mut problems = Vec::new();
    let (mut skip, mut take, mut count_only) = (0, DEFAULT_TAKE, false);
    let mut sort = vec![("createdat".to_owned(), false)];
    let mut filters: Vec<(String, String)> = Vec::new();
    for pair in query.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        let decode = |t: &str| {
            percent_encoding::percent_decode_str(&t.replace('+', " "))
                .decode_utf8_lossy()
                .into_owned()
        };
        let (k, v) = (decode(k), decode(v));
        match k.as_str() {
            "$skip" => skip = v.parse().unwrap_or_else(|_| bad(&mut problems, &k, 0)),
            "$take" => match v.parse::<usize>() {
                Ok(n) if (1..=MAX_TAKE).contains(&n) => take = n,
                _ => take = bad(&mut problems, &k, 0),
            },
            "$count" => count_only = v == "true",
            "$sort" => {
                sort.clear();
                for s in v.split(',').filter(|s| !s.is_empty()) {
                    let (name, desc) = match (s.strip_prefix('-'), s.split_once(':')) {
                        (Some(n), _) => (n, true),
                        (None, Some((n, dir))) => (n, dir.eq_ignore_ascii_case("desc")),
                        (None, None) => (s, false),
                    };
                    let name = name.to_ascii_lowercase();
                    if !["name", "url", "createdat", "updatedat"].contains(&name.as_str()) {
                        problems.push(Problem::invalid(
                            "$sort",
                            format!("cannot sort by {name:?}: use name, url, createdAt, updatedAt"),
                        ));
                    }
                    sort.push((name, desc));
                }
            }
            "q" | "isActive" | "authType" | "source" => filters.push((k, v)),
            _ => problems.push(Problem::invalid(
                &k,
                "unknown parameter: use $skip, $take, $sort, $count, q, isActive, authType, source",
            )),
        }
    }
    if !problems.is_empty() {
        return Err(Error::BadRequest(problems));
    }
    let mut matches: Vec<Arc<Entry>> = state
        .upstreams
        .all()
        .into_iter()
        .filter(|e| filters.iter().all(|(k, v)| matches(e, k, v)))
        .collect();
    let total = matches.len();
    matches.sort_by(|a, b| {
        let (a, b) = (&a.upstream, &b.upstream);
        sort.iter()
            .map(|(field, desc)| {
                let o = match field.as_str() {
                    "name" => a.name.cmp(&b.name),
                    "url" => a.url.cmp(&b.url),
                    "updatedat" => a.updated_at.cmp(&b.updated_at),
                    _ => a.created_at.cmp(&b.created_at),
                };
                if *desc { o.reverse() } else { o }
            })
            .find(|o| o.is_ne())
            .unwrap_or_else(|| a.name.cmp(&b.name))
    });
    let items: Option<Vec<UpstreamView<'_>>> = (!count_only).then(|| {
        matches
            .iter()
            .skip(skip)
            .take(take)
            .map(|e| UpstreamView::new(&e.upstream, e.source))
            .collect()
    });
    json(
        StatusCode::OK,
        &QueryResult {
            count: items.as_ref().map_or(total, Vec::len),
            items,
            total_count: total,
        },
    )
}

fn bad(problems: &mut Vec<Problem>, param: &str, fallback: usize) -> usize {
    problems.push(Problem::invalid(
        param,
        format!("{param} must be a number (at most {MAX_TAKE} for $take)"),
    ));
    fallback
}

fn matches(e: &Entry, key: &str, value: &str) -> bool {
    let u = &e.upstream;
    match key {
        "q" => {
            let q = value.to_lowercase();
            u.name.to_lowercase().contains(&q)
                || u.url.to_lowercase().contains(&q)
                || u.sandbox_url
                    .as_ref()
                    .is_some_and(|s| s.to_lowercase().contains(&q))
        }
        "isActive" => u.is_active.to_string() == value,
        "authType" => u.auth.type_name() == value,
        "source" => match e.source {
            Source::Config => value == "config",
            Source::Store => value == "store",
        },
        _ => false,
    }
}

async fn body(state: &AdminState, req: Request<Incoming>) -> Result<UpstreamInput, Error> {
    read_json::<UpstreamInput>(req, state.max_body)
        .await?
        .ok_or_else(|| Error::invalid("body", "a JSON body is required"))
}

/// A name held by a config-declared upstream cannot be taken through the API.
fn check_name(state: &AdminState, name: &str, id: Option<&str>) -> Result<(), Error> {
    match state.upstreams.get(name) {
        Some(e) if e.source == Source::Config => Err(Error::conflict(
            "name",
            "name is used by an upstream declared in the config file",
        )),
        Some(e) if Some(e.upstream.id.as_str()) != id => Err(Error::conflict(
            "name",
            "name is already used by another upstream",
        )),
        _ => Ok(()),
    }
}

async fn create(state: &AdminState, req: Request<Incoming>) -> Result<Response<ProxyBody>, Error> {
    let fields = body(state, req)
        .await?
        .validate(None)
        .map_err(Error::BadRequest)?;
    check_name(state, &fields.name, None)?;
    let upstream = RegisteredUpstream::from_fields(new_id(), fields, Utc::now());
    let entry = state
        .upstreams
        .build(upstream.clone())
        .map_err(|e| Error::invalid("auth", e.message))?;
    state
        .upstream_store
        .insert_upstream(upstream)
        .await
        .map_err(|e| UPSTREAM.store_error(e))?;
    let mut response = json(
        StatusCode::CREATED,
        &UpstreamView::new(&entry.upstream, Source::Store),
    )?;
    if let Ok(location) = HeaderValue::from_str(&format!("/upstreams/{}", entry.upstream.id)) {
        response.headers_mut().insert(header::LOCATION, location);
    }
    state.upstreams.upsert(entry);
    Ok(response)
}

async fn put(
    state: &AdminState,
    id: &str,
    req: Request<Incoming>,
) -> Result<Response<ProxyBody>, Error> {
    let header_version = if_match(req.headers())?;
    let existing = find(state, id)?;
    read_only(&existing)?;
    let input = body(state, req).await?;
    let expected = required_version(input.version, header_version)?;
    let old = &existing.upstream;
    if expected != old.version {
        return Err(UPSTREAM.stale(expected));
    }
    let fields = input.validate(Some(&old.auth)).map_err(Error::BadRequest)?;
    check_name(state, &fields.name, Some(&old.id))?;
    let upstream = RegisteredUpstream {
        created_at: old.created_at,
        version: old.version + 1,
        ..RegisteredUpstream::from_fields(old.id.clone(), fields, Utc::now())
    };
    let entry = state
        .upstreams
        .build(upstream.clone())
        .map_err(|e| Error::invalid("auth", e.message))?;
    state
        .upstream_store
        .update_upstream(upstream, expected)
        .await
        .map_err(|e| UPSTREAM.store_error(e))?;
    let response = json(
        StatusCode::OK,
        &UpstreamView::new(&entry.upstream, Source::Store),
    )?;
    state.upstreams.upsert(entry);
    Ok(response)
}

async fn delete(
    state: &AdminState,
    id: &str,
    expected: Option<i64>,
) -> Result<Response<ProxyBody>, Error> {
    let existing = find(state, id)?;
    read_only(&existing)?;
    if let Some(v) = expected.filter(|v| *v != existing.upstream.version) {
        return Err(UPSTREAM.stale(v));
    }
    state
        .upstream_store
        .delete_upstream(existing.upstream.id.clone(), expected)
        .await
        .map_err(|e| UPSTREAM.store_error(e))?;
    state.upstreams.remove(&existing.upstream.id);
    json(
        StatusCode::OK,
        &UpstreamView::new(&existing.upstream, existing.source),
    )
}

fn read_only(e: &Entry) -> Result<(), Error> {
    if e.source == Source::Config {
        return Err(Error::conflict(
            "source",
            "this upstream is declared in the config file: change it there",
        ));
    }
    Ok(())
}
