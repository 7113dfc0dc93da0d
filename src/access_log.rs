//! One structured JSON line per request, built from an allow-list of fields: never a header value, a query
//! string or a credential.

use std::net::SocketAddr;
use std::time::Duration;

/// Target of access-log events, so operators can route or filter them.
pub const TARGET: &str = "keyward::access";

/// The fields of one access-log line.
#[derive(Debug)]
pub struct AccessRecord<'a> {
    /// Which listener: `proxy` or `admin`.
    pub listener: &'static str,
    /// The request id sent back as `X-Request-Id`.
    pub request_id: &'a str,
    /// The client's address.
    pub peer: SocketAddr,
    /// Method.
    pub method: &'a str,
    /// Path only; the query string may carry secrets.
    pub path: &'a str,
    /// Route (proxy) or endpoint (admin) name.
    pub route: &'a str,
    /// Response status.
    pub status: u16,
    /// Authentication scheme, if authenticated.
    pub scheme: &'static str,
    /// Public key id, if authenticated.
    pub key_id: &'a str,
    /// Failure reason, if any.
    pub reason: &'a str,
    /// Total time.
    pub duration: Duration,
}

/// Write the line (a `tracing` event at info on [`TARGET`]).
pub fn write(r: &AccessRecord<'_>) {
    tracing::info!(
        target: TARGET,
        listener = r.listener,
        request_id = r.request_id,
        peer = %r.peer,
        method = r.method,
        path = r.path,
        route = r.route,
        status = r.status,
        scheme = r.scheme,
        key_id = r.key_id,
        reason = r.reason,
        duration_us = u64::try_from(r.duration.as_micros()).unwrap_or(u64::MAX),
        "Request"
    );
}
