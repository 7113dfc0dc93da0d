//! The open endpoints of the admin listener: `/healthz` (the process answers), `/readyz` (the store answers and
//! keys are loaded) and `/metrics` (Prometheus text).

use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode, header};
use http_body_util::{BodyExt, Full};

use super::AdminState;
use crate::proxy::forward::ProxyBody;

fn respond(status: StatusCode, content_type: &'static str, body: Vec<u8>) -> Response<ProxyBody> {
    let mut r = Response::new(Full::new(Bytes::from(body)).map_err(|e| match e {}).boxed());
    *r.status_mut() = status;
    r.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    r
}

/// `GET /healthz`: always 200 while the process serves.
pub fn healthz() -> Response<ProxyBody> {
    respond(
        StatusCode::OK,
        "application/json",
        br#"{"status":"ok"}"#.to_vec(),
    )
}

/// `GET /readyz`: 200 when the store answers, else 503 (the proxy keeps serving from memory either way).
pub async fn readyz(state: &AdminState) -> Response<ProxyBody> {
    let ping = state.store.ping().await;
    state.metrics.store_up.set(i64::from(ping.is_ok()));
    let body = serde_json::json!({
        "status": if ping.is_ok() { "ready" } else { "degraded" },
        "store": {
            "kind": state.store.kind(),
            "up": ping.is_ok(),
            "lastSyncAgeSeconds": (state.metrics.last_sync_age() * 1000.0).round() / 1000.0,
        },
        "keys": state.cache.len(),
    });
    let status = if ping.is_ok() {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    respond(status, "application/json", body.to_string().into_bytes())
}

/// `GET /metrics`.
pub fn metrics(state: &AdminState) -> Response<ProxyBody> {
    respond(
        StatusCode::OK,
        "text/plain; version=0.0.4; charset=utf-8",
        state.metrics.render(&state.cache),
    )
}
