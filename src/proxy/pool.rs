//! The HTTP/1.1 connection pool for a plain-`http://` upstream (the sidecar's usual case: the app on loopback).
//!
//! hyper-util's general-purpose pooled client keys its pool by scheme and authority, runs a checkout future and
//! wraps every exchange in several layers of futures; profiling showed that machinery as one of the larger user
//! space costs per request. An upstream here is one fixed authority, so the pool is a plain stack of idle
//! `hyper::client::conn::http1` senders:
//! - a request takes the most recently used idle connection that is still open, or dials a new one (connect
//!   timeout, `TCP_NODELAY`); each connection's I/O runs on its own task, as with hyper-util;
//! - a request handed back unsent (the connection closed while idle) is sent on the next connection, so a
//!   keep-alive race with the upstream never fails a request that was not written;
//! - a connection goes back to the pool when its response body has been read to the end; a body dropped
//!   half-read, a `101 Switching Protocols` or a connection hyper closed is never reused. At most `max_idle`
//!   connections are kept idle; the upstream's keep-alive timeout closes the rest (a closed one is skipped).
//!
//! `https://` upstreams keep hyper-util's client (TLS, h2 by ALPN).

use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderValue, Request, Response, Uri, header};
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use hyper::client::conn::http1::{Builder, SendRequest};
use hyper_util::rt::TokioIo;

use super::forward::ProxyBody;

/// Why a pooled exchange failed.
#[derive(Debug, thiserror::Error)]
pub enum PoolError {
    /// The TCP connect did not finish within the connect timeout.
    #[error("connect timed out")]
    ConnectTimeout,
    /// The TCP connect failed.
    #[error("connect failed: {0}")]
    Connect(#[source] std::io::Error),
    /// The HTTP exchange failed.
    #[error(transparent)]
    Http(#[from] hyper::Error),
}

/// Idle HTTP/1.1 connections to one upstream authority.
pub struct H1Pool {
    authority: String,
    host: HeaderValue,
    idle: Mutex<Vec<SendRequest<ProxyBody>>>,
    max_idle: usize,
    connect_timeout: Duration,
}

// === impl H1Pool ===

impl H1Pool {
    /// A pool for `authority` (`host:port`).
    pub fn new(authority: &str, max_idle: usize, connect_timeout: Duration) -> Arc<Self> {
        Arc::new(Self {
            authority: authority.to_owned(),
            host: HeaderValue::from_str(authority)
                .unwrap_or_else(|_| HeaderValue::from_static("localhost")),
            idle: Mutex::new(Vec::with_capacity(max_idle.min(1024))),
            max_idle,
            connect_timeout,
        })
    }

    /// Send `req` on an idle connection or a new one. The URI is sent in origin form and a missing `Host` is
    /// set to the upstream's authority.
    pub async fn send(
        self: &Arc<Self>,
        mut req: Request<ProxyBody>,
    ) -> Result<Response<UpstreamBody>, PoolError> {
        origin_form(&mut req, &self.host);
        while let Some(mut sender) = self.checkout() {
            if sender.ready().await.is_err() {
                continue;
            }
            match sender.try_send_request(req).await {
                Ok(response) => return Ok(self.lease(response, sender)),
                Err(mut e) => match e.take_message() {
                    // Not written: the connection closed while idle; try the next one.
                    Some(unsent) => req = unsent,
                    None => return Err(e.into_error().into()),
                },
            }
        }
        let mut sender = self.connect().await?;
        sender.ready().await?;
        let response = sender.send_request(req).await?;
        Ok(self.lease(response, sender))
    }

    /// The most recently returned idle connection that is not known to be closed.
    fn checkout(&self) -> Option<SendRequest<ProxyBody>> {
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        while let Some(sender) = idle.pop() {
            if !sender.is_closed() {
                return Some(sender);
            }
        }
        None
    }

    fn checkin(&self, sender: SendRequest<ProxyBody>) {
        if sender.is_closed() {
            return;
        }
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        if idle.len() < self.max_idle {
            idle.push(sender);
        }
    }

    async fn connect(&self) -> Result<SendRequest<ProxyBody>, PoolError> {
        let stream = tokio::time::timeout(
            self.connect_timeout,
            tokio::net::TcpStream::connect(self.authority.as_str()),
        )
        .await
        .map_err(|_| PoolError::ConnectTimeout)?
        .map_err(PoolError::Connect)?;
        let _ = stream.set_nodelay(true);
        let (sender, connection) = Builder::new().handshake(TokioIo::new(stream)).await?;
        tokio::spawn(async move {
            if let Err(e) = connection.with_upgrades().await {
                tracing::debug!(error = %e, "Upstream connection ended with an error");
            }
        });
        Ok(sender)
    }

    fn lease(
        self: &Arc<Self>,
        response: Response<Incoming>,
        sender: SendRequest<ProxyBody>,
    ) -> Response<UpstreamBody> {
        let reusable = response.status() != http::StatusCode::SWITCHING_PROTOCOLS;
        response.map(|inner| {
            let mut body = UpstreamBody {
                inner,
                lease: reusable.then(|| Lease {
                    pool: Arc::clone(self),
                    sender,
                }),
            };
            if body.inner.is_end_stream() {
                body.release();
            }
            body
        })
    }
}

/// `scheme://authority/path` becomes `/path`; `Host` is kept, or set from the URI or the pool's authority.
fn origin_form(req: &mut Request<ProxyBody>, fallback: &HeaderValue) {
    if req.uri().scheme().is_none() && req.uri().authority().is_none() {
        if !req.headers().contains_key(header::HOST) {
            req.headers_mut().insert(header::HOST, fallback.clone());
        }
        return;
    }
    let host = req
        .uri()
        .authority()
        .and_then(|a| HeaderValue::from_str(a.as_str()).ok())
        .unwrap_or_else(|| fallback.clone());
    req.headers_mut().entry(header::HOST).or_insert(host);
    let path = req
        .uri()
        .path_and_query()
        .cloned()
        .unwrap_or_else(|| http::uri::PathAndQuery::from_static("/"));
    *req.uri_mut() = Uri::from(path);
}

/// A connection lent to one response: handed back when the body has been read to the end.
struct Lease {
    pool: Arc<H1Pool>,
    sender: SendRequest<ProxyBody>,
}

/// An upstream response body; a pooled connection goes back to its pool at the end of it.
pub struct UpstreamBody {
    inner: Incoming,
    lease: Option<Lease>,
}

impl UpstreamBody {
    /// A body that holds no pooled connection (hyper-util's client manages its own).
    pub fn unpooled(inner: Incoming) -> Self {
        Self { inner, lease: None }
    }

    fn release(&mut self) {
        if let Some(lease) = self.lease.take() {
            lease.pool.checkin(lease.sender);
        }
    }
}

impl Body for UpstreamBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(None) => self.release(),
            Poll::Ready(Some(Ok(_))) if self.inner.is_end_stream() => self.release(),
            // An error: the connection is not reusable; dropping the lease drops the sender.
            Poll::Ready(Some(Err(_))) => self.lease = None,
            _ => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
