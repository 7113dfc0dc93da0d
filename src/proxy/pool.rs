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
//!   connections of each kind (hyper's, and the lean exchange's streams) are kept idle; the upstream's
//!   keep-alive timeout closes the rest (a closed one is skipped).
//!
//! Bodiless requests with an idempotent method skip hyper's client connection and take the lean exchange in
//! [`super::h1`], on a second stack of plain idle `TcpStream`s, each kept with the free end of its read buffer.
//!
//! `https://` upstreams keep hyper-util's client (TLS, h2 by ALPN).

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use futures_util::future::Either;
use http::{HeaderValue, Request, Response, Uri, header};
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use hyper::client::conn::http1::{Builder, SendRequest};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use super::forward::{BoxError, ProxyBody};
use super::h1::{self, SocketBody};
use super::headers::AddedFields;

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
    /// Reading or writing the connection failed (the lean exchange).
    #[error(transparent)]
    Io(std::io::Error),
    /// The upstream's response is not valid HTTP/1.1 (the lean exchange).
    #[error("invalid response from the upstream: {0}")]
    InvalidResponse(String),
}

/// Idle HTTP/1.1 connections to one upstream authority.
pub struct H1Pool {
    authority: String,
    host: HeaderValue,
    idle: IdleStack<SendRequest<ProxyBody>>,
    /// Idle connections for the lean exchange ([`super::h1`]), each with the unused end of its read buffer.
    idle_streams: IdleStack<(TcpStream, BytesMut)>,
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
            idle: IdleStack::new(max_idle),
            idle_streams: IdleStack::new(max_idle),
            connect_timeout,
        })
    }

    /// Send `req` on an idle connection or a new one. The URI is sent in origin form and a missing `Host` is
    /// set to the upstream's authority. Not an `async fn`: the request is handed on before the future is made,
    /// so the future does not hold a copy of it.
    /// The `added` fields are written by the lean exchange or inserted into the map for hyper's.
    pub fn send(
        self: &Arc<Self>,
        mut req: Request<ProxyBody>,
        added: Option<AddedFields<'_>>,
    ) -> impl Future<Output = Result<Response<UpstreamBody>, PoolError>> + '_ {
        origin_form(&mut req, &self.host);
        if h1::eligible(&req) {
            Either::Left(h1::send(self, req, added))
        } else {
            if let Some(added) = added {
                added.insert_into(req.headers_mut());
            }
            // Boxed: the rarer path, whose futures would otherwise set the size of every request's future
            // (it is moved several times before it is pinned).
            Either::Right(Box::pin(self.send_on_hyper(req)))
        }
    }

    /// A request with a body or an upgrade: on one of hyper's client connections.
    async fn send_on_hyper(
        self: &Arc<Self>,
        mut req: Request<ProxyBody>,
    ) -> Result<Response<UpstreamBody>, PoolError> {
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
        std::iter::from_fn(|| self.idle.pop()).find(|sender| !sender.is_closed())
    }

    fn checkin(&self, sender: SendRequest<ProxyBody>) {
        if !sender.is_closed() {
            self.idle.push(sender);
        }
    }

    /// The most recently returned idle stream for the lean exchange (one closed while idle shows when used),
    /// with its read buffer.
    pub(super) fn checkout_stream(&self) -> Option<(TcpStream, BytesMut)> {
        self.idle_streams.pop()
    }

    /// Keep a stream whose last response ended cleanly, and the unused end of its read buffer (empty: nothing
    /// followed the response).
    pub(super) fn checkin_stream(&self, stream: TcpStream, buf: BytesMut) {
        debug_assert!(buf.is_empty());
        self.idle_streams.push((stream, buf));
    }

    /// A new TCP connection to the upstream (connect timeout, `TCP_NODELAY`).
    pub(super) async fn dial(&self) -> Result<TcpStream, PoolError> {
        let stream = tokio::time::timeout(
            self.connect_timeout,
            TcpStream::connect(self.authority.as_str()),
        )
        .await
        .map_err(|_| PoolError::ConnectTimeout)?
        .map_err(PoolError::Connect)?;
        let _ = stream.set_nodelay(true);
        Ok(stream)
    }

    async fn connect(&self) -> Result<SendRequest<ProxyBody>, PoolError> {
        let stream = self.dial().await?;
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
        response.map(|body| {
            let mut lease = reusable.then(|| Lease {
                pool: Arc::clone(self),
                sender,
            });
            if body.is_end_stream() {
                release(&mut lease);
            }
            UpstreamBody(Inner::Hyper { body, lease })
        })
    }
}

/// Idle connections of one kind, the most recently returned on top, at most `max` of them.
struct IdleStack<T> {
    items: Mutex<Vec<T>>,
    max: usize,
}

impl<T> IdleStack<T> {
    fn new(max: usize) -> Self {
        Self {
            items: Mutex::new(Vec::with_capacity(max.min(1024))),
            max,
        }
    }

    fn pop(&self) -> Option<T> {
        self.items.lock().unwrap_or_else(|p| p.into_inner()).pop()
    }

    /// Keep `item` unless `max` are kept already (then it is dropped: closed).
    fn push(&self, item: T) {
        let mut items = self.items.lock().unwrap_or_else(|p| p.into_inner());
        if items.len() < self.max {
            items.push(item);
        }
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
pub struct UpstreamBody(Inner);

enum Inner {
    /// From hyper's client connection (or hyper-util's client, with no lease).
    Hyper {
        body: Incoming,
        lease: Option<Lease>,
    },
    /// Read from the socket by the lean exchange.
    Socket(SocketBody),
}

impl UpstreamBody {
    /// A body that holds no pooled connection (hyper-util's client manages its own).
    pub fn unpooled(body: Incoming) -> Self {
        Self(Inner::Hyper { body, lease: None })
    }

    /// A body the lean exchange reads from its socket.
    pub(super) fn socket(body: SocketBody) -> Self {
        Self(Inner::Socket(body))
    }

    /// Whether its response's hop-by-hop fields were left out when the head was parsed (the lean exchange's).
    pub(super) fn hop_by_hop_removed(&self) -> bool {
        matches!(self.0, Inner::Socket(_))
    }
}

fn release(lease: &mut Option<Lease>) {
    if let Some(lease) = lease.take() {
        lease.pool.checkin(lease.sender);
    }
}

impl Body for UpstreamBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let (body, lease) = match &mut self.0 {
            Inner::Socket(body) => return Pin::new(body).poll_frame(cx),
            Inner::Hyper { body, lease } => (body, lease),
        };
        let polled = Pin::new(&mut *body).poll_frame(cx);
        match &polled {
            Poll::Ready(None) => release(lease),
            Poll::Ready(Some(Ok(_))) if body.is_end_stream() => release(lease),
            // An error: the connection is not reusable; dropping the lease drops the sender.
            Poll::Ready(Some(Err(_))) => *lease = None,
            _ => {}
        }
        polled.map_err(|e| Box::new(e) as BoxError)
    }

    fn is_end_stream(&self) -> bool {
        match &self.0 {
            Inner::Hyper { body, .. } => body.is_end_stream(),
            Inner::Socket(body) => body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.0 {
            Inner::Hyper { body, .. } => body.size_hint(),
            Inner::Socket(body) => body.size_hint(),
        }
    }
}
