//! Listeners: bind, accept under a connection cap, optional TLS handshake under a timeout, then hyper-util's
//! auto (HTTP/1.1 + h2/h2c) connection with a deadline on its first bytes, header-read timeout and header
//! limits, an idle h2 connection closed; graceful drain on shutdown.

mod first_bytes;
mod flat_writes;
mod idle;
pub mod tls;

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use http::{Request, Response};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, watch};
use tokio_rustls::TlsAcceptor;

use crate::config::Limits;
use crate::proxy::forward::ProxyBody;
use crate::timer::HyperTimer;
use first_bytes::FirstBytes;
use flat_writes::FlatWrites;
use idle::{Activity, Drive, idle_h2, stop_signal};

/// Per-connection facts a handler needs.
#[derive(Clone, Copy, Debug)]
pub struct ConnInfo {
    /// The client's address.
    pub peer: SocketAddr,
    /// Whether the connection is TLS.
    pub tls: bool,
}

/// A bound listener, ready to serve.
pub struct Listener {
    tcp: TcpListener,
    tls: Option<TlsAcceptor>,
    name: &'static str,
}

// === impl Listener ===

impl Listener {
    /// Bind `addr` (port 0 picks a free port), with TLS when `tls` is given.
    pub async fn bind(
        name: &'static str,
        addr: SocketAddr,
        tls: Option<Arc<rustls::ServerConfig>>,
    ) -> std::io::Result<Self> {
        let tcp = TcpListener::bind(addr).await?;
        Ok(Self {
            tcp,
            tls: tls.map(TlsAcceptor::from),
            name,
        })
    }

    /// The bound address.
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.tcp.local_addr()
    }

    /// Serve until `shutdown` flips, then stop accepting and drain for at most `grace`.
    pub async fn serve<H, F>(
        self,
        limits: Limits,
        handler: H,
        mut shutdown: watch::Receiver<bool>,
        grace: Duration,
    ) where
        H: Fn(ConnInfo, Request<Incoming>) -> F + Clone + Send + Sync + 'static,
        F: Future<Output = Response<ProxyBody>> + Send + 'static,
    {
        let builder = Arc::new(http_builder(&limits));
        let permits = Arc::new(Semaphore::new(limits.max_connections));
        // Flipped when the listener stops: each connection then shuts down gracefully.
        let (drain, draining) = watch::channel(false);
        loop {
            let Ok(permit) = Arc::clone(&permits).acquire_owned().await else {
                break;
            };
            let accepted = tokio::select! {
                a = self.tcp.accept() => a,
                _ = shutdown.changed() => break,
            };
            let (stream, peer) = match accepted {
                Ok(a) => a,
                Err(e) => {
                    tracing::warn!(listener = self.name, error = %e, "Accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            let _ = stream.set_nodelay(true);
            let draining = draining.clone();
            let (builder, handler, tls) = (Arc::clone(&builder), handler.clone(), self.tls.clone());
            let handshake_timeout = limits.tls_handshake_timeout;
            let first_bytes_timeout = limits.header_read_timeout;
            let max_header_bytes = limits.max_header_bytes;
            tokio::spawn(async move {
                let _permit = permit;
                let info = ConnInfo {
                    peer,
                    tls: tls.is_some(),
                };
                let activity = Arc::new(Activity::default());
                let stop = stop_signal(
                    draining,
                    idle_h2(Arc::clone(&activity), first_bytes_timeout),
                );
                let counted = Arc::clone(&activity);
                let service = hyper::service::service_fn(move |req: Request<Incoming>| {
                    counted.request();
                    // hyper's read buffer is larger than the header limit (see `http_builder`): the limit
                    // itself is enforced here, with the one JSON error shape.
                    if head_size(&req) <= max_header_bytes {
                        Reply::Handler {
                            future: handler(info, req),
                        }
                    } else {
                        Reply::HeadersTooLarge
                    }
                });
                let result = match tls {
                    None => {
                        Drive::new(
                            builder.serve_connection_with_upgrades(
                                TokioIo::new(FirstBytes::new(
                                    FlatWrites::new(stream),
                                    first_bytes_timeout,
                                    activity,
                                )),
                                service,
                            ),
                            |conn| conn.graceful_shutdown(),
                            stop,
                        )
                        .await
                    }
                    Some(acceptor) => {
                        let Some(tls_stream) =
                            handshake(&acceptor, stream, handshake_timeout).await
                        else {
                            return;
                        };
                        Drive::new(
                            builder.serve_connection_with_upgrades(
                                TokioIo::new(FirstBytes::new(
                                    tls_stream,
                                    first_bytes_timeout,
                                    activity,
                                )),
                                service,
                            ),
                            |conn| conn.graceful_shutdown(),
                            stop,
                        )
                        .await
                    }
                };
                if let Err(e) = result {
                    tracing::debug!(peer = %peer, error = %e, "Connection ended with an error");
                }
            });
        }
        drop(self.tcp);
        let _ = drain.send(true);
        // Every connection holds a permit until it ends: all of them back means all connections closed.
        let all = u32::try_from(limits.max_connections).unwrap_or(u32::MAX);
        if tokio::time::timeout(grace, permits.acquire_many(all))
            .await
            .is_err()
        {
            tracing::warn!(
                listener = self.name,
                "Shutdown grace elapsed with requests in flight"
            );
        }
    }
}

async fn handshake(
    acceptor: &TlsAcceptor,
    stream: TcpStream,
    limit: Duration,
) -> Option<tokio_rustls::server::TlsStream<TcpStream>> {
    match tokio::time::timeout(limit, acceptor.accept(stream)).await {
        Ok(Ok(s)) => Some(s),
        Ok(Err(e)) => {
            tracing::debug!(error = %e, "TLS handshake failed");
            None
        }
        Err(_) => {
            tracing::debug!("TLS handshake timed out");
            None
        }
    }
}

pin_project_lite::pin_project! {
    /// The future hyper gets for one request: the handler's, or the refusal of a head over the limit. Written
    /// out rather than an `async` block, which would hold the handler's future twice (captured and awaited):
    /// hyper moves this future whole.
    #[project = ReplyProj]
    enum Reply<F> {
        Handler { #[pin] future: F },
        HeadersTooLarge,
    }
}

impl<F: Future<Output = Response<ProxyBody>>> Future for Reply<F> {
    type Output = Result<Response<ProxyBody>, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project() {
            ReplyProj::Handler { future } => future.poll(cx).map(Ok),
            ReplyProj::HeadersTooLarge => Poll::Ready(Ok(crate::proxy::forward::boxed(
                crate::error::Error::HeadersTooLarge.to_response(),
            ))),
        }
    }
}

/// The request head as it came on the wire, roughly: request line plus `name: value\r\n` per field.
fn head_size<B>(req: &Request<B>) -> usize {
    let uri = req.uri();
    let target = uri.scheme_str().map_or(0, |s| s.len() + 3)
        + uri.authority().map_or(0, |a| a.as_str().len())
        + uri.path_and_query().map_or(1, |pq| pq.as_str().len());
    let line = req.method().as_str().len() + target + 12;
    req.headers()
        .iter()
        .fold(line, |n, (k, v)| n + k.as_str().len() + v.len() + 4)
}

/// hyper's `max_buf_size` bounds both the request head and each read of a body. At the header limit (16 KiB by
/// default) a 1 MiB body arrives in 64+ reads, each handed across to the upstream connection; 256 KiB lets
/// reads grow (hyper sizes them adaptively) while still capping the head hyper will buffer. The configured
/// header limit is then checked on the parsed head (`head_size`, a JSON 431).
const READ_BUF_MAX: usize = 256 * 1024;

fn http_builder(limits: &Limits) -> auto::Builder<TokioExecutor> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    // One pool of reusable sleeps for the listener's deadlines: the header-read timeout is armed for every
    // request (`crate::timer`).
    let timer = HyperTimer::default();
    builder
        .http1()
        .timer(timer.clone())
        .header_read_timeout(limits.header_read_timeout)
        // HTTP/1.1 half-close: a client that shuts its sending side after the request still gets the response.
        // It also means hyper does not read from a connection while its request is in flight, to notice the
        // client leaving: that read reserved a fresh 8 KiB buffer for every request (the old one is still
        // referenced by the request's head), about 1 500 instructions. A client that leaves mid-request is
        // noticed when its response is written; the upstream exchange runs to its end (within
        // `upstream.timeout`) and its connection goes back to the pool instead of being torn down.
        .half_close(true)
        .max_buf_size(limits.max_header_bytes.max(READ_BUF_MAX))
        .max_headers(limits.max_headers);
    builder
        .http2()
        .timer(timer)
        .max_header_list_size(u32::try_from(limits.max_header_bytes).unwrap_or(u32::MAX))
        .max_concurrent_streams(256);
    builder
}
