//! `POST /upstreams/{id}/verify`: one request to the upstream's `verifyPath` with freshly obtained credentials,
//! reporting whether it worked, the status, the latency, and which step failed and why. The report never holds
//! a secret, a token or the request's query string.

use std::time::Instant;

use bytes::Bytes;
use http::{Method, Request, Uri};
use http_body_util::{BodyExt, Full, Limited};
use serde::Serialize;

use super::credentials::Injection;
use super::registry::Entry;
use crate::metrics::Metrics;

/// Most bytes of the probe's response read (then dropped).
const MAX_PROBE_BODY: usize = 64 * 1024;

/// The verify report.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Report {
    /// The upstream's name.
    pub upstream: String,
    /// True when the upstream answered below 400.
    pub ok: bool,
    /// The upstream's status, when it answered.
    pub status: Option<u16>,
    /// Time for the whole probe (credential step included), milliseconds.
    pub latency_ms: u64,
    /// `token` or `csrf` (the credential fetch) or `request` (the call to the upstream): the step reached.
    pub step: &'static str,
    /// Why it failed; null when `ok`.
    pub error: Option<String>,
}

/// Probe `entry`.
pub async fn verify(entry: &Entry, metrics: &Metrics) -> Report {
    let started = Instant::now();
    let report = |ok, status, step, error| Report {
        upstream: entry.upstream.name.clone(),
        ok,
        status,
        latency_ms: u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
        step,
        error,
    };
    let injection = match entry.credentials.fresh(&entry.client, metrics).await {
        Ok(i) => i,
        Err(e) => return report(false, None, e.step, Some(e.message)),
    };
    let request = match build(entry, &injection) {
        Ok(r) => r,
        Err(message) => return report(false, None, "request", Some(message)),
    };
    match entry.client.exchange(request).await {
        Err(e) => report(
            false,
            None,
            "request",
            Some(format!("the upstream could not be reached: {e}")),
        ),
        Ok(response) => {
            let status = response.status();
            // Read a bounded part of the body so the connection can be reused; its content is not reported.
            let _ = Limited::new(response.into_body(), MAX_PROBE_BODY)
                .collect()
                .await;
            let error = match status.as_u16() {
                401 | 403 => Some(format!(
                    "the upstream answered {status}: it refused the credentials"
                )),
                400..=599 => Some(format!("the upstream answered {status}")),
                _ => None,
            };
            report(error.is_none(), Some(status.as_u16()), "request", error)
        }
    }
}

fn build(
    entry: &Entry,
    injection: &Injection,
) -> Result<Request<crate::proxy::forward::ProxyBody>, String> {
    let path: Uri = entry
        .upstream
        .verify_path
        .parse()
        .map_err(|_| "verifyPath is not a valid path".to_owned())?;
    let uri = entry
        .target(&path, injection)
        .map_err(|_| "verifyPath is not a valid path".to_owned())?;
    let mut req = Request::builder()
        .method(Method::GET)
        .uri(uri)
        .body(Full::new(Bytes::new()).map_err(|e| match e {}).boxed())
        .map_err(|_| "the probe request could not be built".to_owned())?;
    entry.set_headers(req.headers_mut(), injection);
    Ok(req)
}
