//! The lean HTTP/1.1 exchange for the proxy's commonest request: no body, an idempotent method, no upgrade, to
//! a plain-`http://` upstream.
//!
//! Through hyper's client connection every request crosses a channel into the connection's own task and every
//! response body crosses another one back; callgrind put that dispatch at about 15 000 instructions per proxied
//! request, a third of the whole. Here the request's task writes the head and reads the response itself on a
//! pooled `TcpStream`, and the response body ([`SocketBody`]) reads straight from the socket:
//! - the request head is encoded once (origin-form target, the headers as they are after sanitizing) and sent
//!   in one write, together with the other heads of the scheduler pass ([`write_batch`]);
//! - the response head is parsed with `httparse` (at most [`MAX_HEADERS`] fields and [`MAX_HEAD`] bytes);
//!   `1xx` interim responses are skipped; a `101` that was never asked for is an invalid response;
//! - the body's framing follows RFC 9112 §6.3: none after `HEAD`, `204` and `304`; `Transfer-Encoding` with
//!   chunked last is decoded (chunk lines and trailers bounded, trailers dropped, `Content-Length` ignored and
//!   removed, and then the connection is not reused), any other coding or no length at all is read to the
//!   close; `Content-Length` values must agree;
//! - the connection goes back to the pool when the body has been read to its end with nothing after it, on an
//!   HTTP/1.1 response without `Connection: close`; a body dropped half-read, an error, or a close-delimited
//!   body closes it;
//! - a pooled connection that turns out closed (the write fails, or the read ends or is reset before a single
//!   response byte) is how an upstream's idle close shows up here: the request is sent again on the next
//!   connection. That is safe because only idempotent methods without a body take this path (RFC 9110
//!   §9.2.2); a fresh connection's failure is final.
//!
//! Requests with a body and upgrades keep hyper's client connection ([`super::pool`]), which writes a body
//! while it reads the response.

use std::future::Future;
use std::io;
use std::mem::MaybeUninit;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use bytes::{Buf, Bytes, BytesMut};
use http::{HeaderMap, HeaderName, HeaderValue, Request, Response, StatusCode, Version, header};
use http_body::{Body, Frame, SizeHint};
use smallvec::SmallVec;
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;

use super::forward::{BoxError, ProxyBody};
use super::headers::{
    AddedFields, HopByHop, MAX_ADDED_FIELDS, connection_named, field_len, write_field,
};
use super::pool::{H1Pool, PoolError, UpstreamBody};

mod names;
mod write_batch;

/// Most fields accepted in a response head (hyper's default too).
pub const MAX_HEADERS: usize = 100;
/// Largest response head accepted, status line and fields.
pub const MAX_HEAD: usize = 64 * 1024;
/// Largest chunk-size line, extensions included.
const MAX_CHUNK_LINE: usize = 4096;
/// Largest trailer section; its fields are read and dropped.
const MAX_TRAILERS: usize = 16 * 1024;
/// Most trailer fields.
const MAX_TRAILER_FIELDS: usize = 64;
/// Room made in the read buffer before each read.
const READ_SIZE: usize = 16 * 1024;

/// Whether `req` can take the lean path: an idempotent method (so a send on a connection found closed can be
/// repeated), no body and no upgrade.
pub(super) fn eligible(req: &Request<ProxyBody>) -> bool {
    req.method().is_idempotent()
        && req.body().is_end_stream()
        && !req.headers().contains_key(header::UPGRADE)
}

/// Send `req` (origin form, `Host` set) on an idle pooled connection or a new one. The head is encoded before
/// the future is made, so the future holds the encoded bytes, not the request (an `async fn` would keep both).
pub(super) fn send<'p>(
    pool: &'p Arc<H1Pool>,
    req: Request<ProxyBody>,
    added: Option<AddedFields<'_>>,
) -> impl Future<Output = Result<Response<UpstreamBody>, PoolError>> + 'p {
    let head_request = req.method() == http::Method::HEAD;
    let wire = encode_head(&req, added.as_ref());
    drop(req);
    send_head(pool, wire, head_request)
}

async fn send_head(
    pool: &Arc<H1Pool>,
    mut wire: Vec<u8>,
    head_request: bool,
) -> Result<Response<UpstreamBody>, PoolError> {
    while let Some((stream, buf)) = pool.checkout_stream() {
        let (unsent, written) = write_batch::write(stream, wire).await;
        wire = unsent;
        let attempt = match written {
            Ok(stream) => read_response(pool, stream, buf, head_request, true).await,
            Err(e) => Err(Attempt::io(e, true, true)),
        };
        match attempt {
            Err(Attempt::Stale) => continue,
            other => return other.map_err(Attempt::into_error),
        }
    }
    let stream = pool.dial().await?;
    let stream = write_batch::write(stream, wire)
        .await
        .1
        .map_err(PoolError::Io)?;
    read_response(pool, stream, BytesMut::new(), head_request, false)
        .await
        .map_err(Attempt::into_error)
}

/// Why one attempt failed.
enum Attempt {
    /// A pooled connection was closed before any response byte: send again on the next one.
    Stale,
    Failed(PoolError),
}

impl Attempt {
    /// An I/O failure: a pooled (`reused`) connection's close or reset before any response byte is stale.
    fn io(e: io::Error, reused: bool, before_response: bool) -> Self {
        if reused && before_response && closed_by_peer(&e) {
            Self::Stale
        } else {
            Self::Failed(PoolError::Io(e))
        }
    }

    fn into_error(self) -> PoolError {
        match self {
            Self::Stale => PoolError::Io(io::Error::new(
                io::ErrorKind::ConnectionAborted,
                "the upstream closed the connection before responding",
            )),
            Self::Failed(e) => e,
        }
    }
}

/// The request line, its fields, then the fields Keyward adds, ready for one write (public for the criterion
/// bench). The added fields are written here rather than inserted into the header map first: a dozen fewer
/// hashed inserts per request. The proxy stripped every client-sent field of their names, so none is sent
/// twice ([`AddedFields`]).
pub fn encode_head(req: &Request<ProxyBody>, added: Option<&AddedFields<'_>>) -> Vec<u8> {
    let method = req.method().as_str().as_bytes();
    let target = req.uri().path_and_query().map_or("/", |pq| pq.as_str());
    // The request's own fields exactly (a pass over a few of them), 64 bytes for each added one. A usual head
    // then stays under 1 KiB, which glibc's malloc serves from its small bins; a larger request first
    // consolidates the fast bins (`malloc_consolidate`: 0.04 µs per NWS4 request in the proxy's profile when
    // this asked for 64 bytes per field of every kind).
    let own: usize = req
        .headers()
        .iter()
        .map(|(name, value)| field_len(name, value))
        .sum();
    let added_room = if added.is_some() {
        64 * MAX_ADDED_FIELDS
    } else {
        0
    };
    let mut out = Vec::with_capacity(16 + method.len() + target.len() + own + added_room);
    out.extend_from_slice(method);
    out.push(b' ');
    out.extend_from_slice(target.as_bytes());
    out.extend_from_slice(b" HTTP/1.1\r\n");
    for (name, value) in req.headers() {
        write_field(&mut out, name, value);
    }
    if let Some(added) = added {
        added.write_lines(&mut out);
    }
    out.extend_from_slice(b"\r\n");
    out
}

/// The response head to the request just written on `stream`; the body is left to [`SocketBody`]. The response
/// is read into `buf`: what was left unused of the buffer the connection's last response was read into, so that
/// a connection's responses share one allocation (reclaimed in place by `BytesMut::reserve` once the earlier
/// responses are dropped) rather than make a 16 KiB one each (about 500 instructions with its free).
async fn read_response(
    pool: &Arc<H1Pool>,
    mut stream: TcpStream,
    mut buf: BytesMut,
    head_request: bool,
    reused: bool,
) -> Result<Response<UpstreamBody>, Attempt> {
    let mut received = false;
    let head = loop {
        if let Some(head) = parse_head(&mut buf, head_request).map_err(Attempt::Failed)? {
            break head;
        }
        if buf.len() > MAX_HEAD {
            return Err(Attempt::Failed(invalid("the response head is too large")));
        }
        if buf.capacity() - buf.len() < READ_SIZE / 4 {
            buf.reserve(READ_SIZE);
        }
        match stream.read_buf(&mut buf).await {
            Ok(0) if !received && reused => return Err(Attempt::Stale),
            Ok(0) => {
                return Err(Attempt::Failed(PoolError::Io(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "the upstream closed the connection before the response head ended",
                ))));
            }
            Ok(_) => received = true,
            Err(e) => return Err(Attempt::io(e, reused, !received)),
        }
    };
    let mut body = SocketBody {
        pool: Arc::clone(pool),
        stream: Some(stream),
        buf,
        framing: head.framing,
        keep_alive: head.keep_alive,
    };
    body.release_if_complete();
    let mut response = Response::new(UpstreamBody::socket(body));
    *response.status_mut() = head.status;
    *response.version_mut() = head.version;
    *response.headers_mut() = head.headers;
    Ok(response)
}

/// Whether an I/O error is the peer's close or reset (what an upstream's idle close looks like).
fn closed_by_peer(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionReset
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::BrokenPipe
            | io::ErrorKind::UnexpectedEof
    )
}

fn invalid(why: &str) -> PoolError {
    PoolError::InvalidResponse(why.to_owned())
}

/// A parsed response head.
pub struct Head {
    status: StatusCode,
    version: Version,
    headers: HeaderMap,
    framing: Framing,
    keep_alive: bool,
}

/// Parse a final response head off the front of `buf`, skipping interim (`1xx`) ones; `None` until complete
/// (public for the criterion bench).
pub fn parse_head(buf: &mut BytesMut, head_request: bool) -> Result<Option<Head>, PoolError> {
    loop {
        let mut fields = [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_HEADERS];
        let mut parsed = httparse::Response::new(&mut []);
        let parser = httparse::ParserConfig::default();
        let len = match parser.parse_response_with_uninit_headers(&mut parsed, buf, &mut fields) {
            Ok(httparse::Status::Complete(len)) if len <= MAX_HEAD => len,
            Ok(httparse::Status::Complete(_)) => {
                return Err(invalid("the response head is too large"));
            }
            Ok(httparse::Status::Partial) => return Ok(None),
            Err(e) => return Err(PoolError::InvalidResponse(e.to_string())),
        };
        let code = parsed.code.unwrap_or(0);
        if code == 101 {
            return Err(invalid(
                "101 Switching Protocols to a request without Upgrade",
            ));
        }
        if (100..200).contains(&code) {
            buf.advance(len);
            continue;
        }
        let status = StatusCode::from_u16(code).map_err(|_| invalid("invalid status code"))?;
        let version = match parsed.version {
            Some(1) => Version::HTTP_11,
            _ => Version::HTTP_10,
        };
        // Names now, values below as slices of the head's bytes (no copy): their offsets in `buf`. Hop-by-hop
        // fields (RFC 9110 §7.6.1) never enter the map: `Connection` and `Transfer-Encoding` are kept aside
        // for the framing, the rest dropped, so the response needs no stripping on its way back.
        let base = buf.as_ptr() as usize;
        let span = |value: &[u8]| {
            let start = value.as_ptr() as usize - base;
            (start, start + value.len())
        };
        let mut named: SmallVec<[(HeaderName, usize, usize); 16]> = SmallVec::new();
        let mut connection: SmallVec<[(usize, usize); 2]> = SmallVec::new();
        let mut codings: SmallVec<[(usize, usize); 2]> = SmallVec::new();
        names::for_each_name(
            parsed
                .headers
                .iter()
                .map(|field| (field.name.as_bytes(), field.value)),
            |name, class, value| match class {
                Some(HopByHop::Connection) => connection.push(span(value)),
                Some(HopByHop::TransferEncoding) => codings.push(span(value)),
                Some(HopByHop::Other) => {}
                None => {
                    let (start, end) = span(value);
                    named.push((name, start, end));
                }
            },
        )
        .map_err(|_| invalid("invalid header name"))?;
        let head = buf.split_to(len).freeze();
        // One spare place: the request id is added on the way back.
        let mut headers = HeaderMap::with_capacity(named.len() + 1);
        for (name, start, end) in named {
            let value = HeaderValue::from_maybe_shared(head.slice(start..end))
                .map_err(|_| invalid("invalid header value"))?;
            headers.append(name, value);
        }
        let connection = Fields::new(&head, &connection);
        remove_connection_named(&mut headers, connection);
        let (framing, keep_alive) = framing(
            status,
            version,
            connection,
            Fields::new(&head, &codings),
            &mut headers,
            head_request,
        )?;
        return Ok(Some(Head {
            status,
            version,
            headers,
            framing,
            keep_alive,
        }));
    }
}

/// The values of one kind of field, as spans of the response head.
#[derive(Clone, Copy)]
struct Fields<'a> {
    head: &'a [u8],
    spans: &'a [(usize, usize)],
}

impl<'a> Fields<'a> {
    fn new(head: &'a [u8], spans: &'a [(usize, usize)]) -> Self {
        Self { head, spans }
    }

    fn is_empty(&self) -> bool {
        self.spans.is_empty()
    }

    /// Every comma-separated item of every value, trimmed.
    fn items(self) -> impl DoubleEndedIterator<Item = &'a [u8]> {
        self.spans.iter().flat_map(move |&(start, end)| {
            self.head[start..end]
                .split(|b| *b == b',')
                .map(<[u8]>::trim_ascii)
        })
    }
}

/// Remove the fields a `Connection` header names as hop-by-hop (rare: the usual items are options).
fn remove_connection_named(headers: &mut HeaderMap, connection: Fields<'_>) {
    for name in connection.items().filter_map(connection_named) {
        headers.remove(name);
    }
}

impl Head {
    /// The response status.
    pub fn status(&self) -> StatusCode {
        self.status
    }

    /// The response's fields.
    pub fn headers(&self) -> &HeaderMap {
        &self.headers
    }
}

/// How the body ends (RFC 9112 §6.3), and whether the connection can carry another request after it.
fn framing(
    status: StatusCode,
    version: Version,
    connection: Fields<'_>,
    codings: Fields<'_>,
    headers: &mut HeaderMap,
    head_request: bool,
) -> Result<(Framing, bool), PoolError> {
    let keep_alive = version == Version::HTTP_11
        && !connection
            .items()
            .any(|token| token.eq_ignore_ascii_case(b"close"));
    if head_request || status == StatusCode::NO_CONTENT || status == StatusCode::NOT_MODIFIED {
        return Ok((Framing::Length(0), keep_alive));
    }
    if !codings.is_empty() {
        if version != Version::HTTP_11 {
            return Err(invalid("Transfer-Encoding in an HTTP/1.0 response"));
        }
        let last = codings.items().rfind(|coding| !coding.is_empty());
        let chunked = last.is_some_and(|c| c.eq_ignore_ascii_case(b"chunked"));
        // With a Content-Length too, the coding wins and the length is not passed on (RFC 9112 §6.3 item 3);
        // such a response may be an attempt at smuggling, so the connection is not reused after it.
        let had_length = headers.remove(header::CONTENT_LENGTH).is_some();
        return Ok(match chunked {
            true => (Framing::Chunked(Chunk::Size), keep_alive && !had_length),
            false => (Framing::Close, false),
        });
    }
    let mut length = None;
    for value in headers.get_all(header::CONTENT_LENGTH) {
        for item in value.as_bytes().split(|b| *b == b',') {
            let item = item.trim_ascii();
            let n = std::str::from_utf8(item)
                .ok()
                .filter(|s| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()))
                .and_then(|s| s.parse::<u64>().ok())
                .ok_or_else(|| invalid("invalid Content-Length"))?;
            if length.is_some_and(|l| l != n) {
                return Err(invalid("conflicting Content-Length values"));
            }
            length = Some(n);
        }
    }
    Ok(match length {
        Some(n) => (Framing::Length(n), keep_alive),
        None => (Framing::Close, false),
    })
}

/// How a response body is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Framing {
    /// This many bytes still to come (zero: the body has ended).
    Length(u64),
    /// Chunked transfer coding, at this point of the chunk grammar.
    Chunked(Chunk),
    /// Everything until the upstream closes the connection.
    Close,
}

/// Where a chunked body's decoder stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Chunk {
    /// Expecting a chunk-size line.
    Size,
    /// This many bytes of chunk data still to come.
    Data(u64),
    /// Expecting the CRLF after a chunk's data.
    DataEnd,
    /// After the last chunk: the trailer section and its closing blank line.
    Trailers,
}

/// What the decoder made of the buffered bytes.
enum Step {
    Data(Bytes),
    End,
    NeedMore,
}

/// A response body read from the upstream's socket; the connection goes back to the pool at its end.
pub(super) struct SocketBody {
    pool: Arc<H1Pool>,
    /// `None` once the body has ended (the connection was handed back or closed).
    stream: Option<TcpStream>,
    buf: BytesMut,
    framing: Framing,
    keep_alive: bool,
}

impl SocketBody {
    /// Hand the connection back now if the whole body is already buffered (the common small response): the
    /// next request can use it before this one's response is even written to the client.
    fn release_if_complete(&mut self) {
        if let Framing::Length(n) = self.framing {
            if self.buf.len() as u64 >= n {
                self.finish(self.buf.len() as u64 == n);
            }
        }
    }

    /// The body has been fully received: pool the connection if nothing follows it and it may be reused.
    fn finish(&mut self, nothing_after: bool) {
        if let Some(stream) = self.stream.take() {
            if self.keep_alive && nothing_after {
                // The body's bytes stay in `buf` for this response; the unused end goes with the connection.
                let rest = self.buf.split_off(self.buf.len());
                self.pool.checkin_stream(stream, rest);
            }
        }
    }

    /// Up to `n` buffered bytes, and how many of the `n` are still to come; `None` when nothing is buffered.
    fn take_up_to(&mut self, n: u64) -> Option<(Bytes, u64)> {
        if self.buf.is_empty() {
            return None;
        }
        // At most the buffer's length, so it fits a `usize`.
        let take = n.min(self.buf.len() as u64);
        Some((self.buf.split_to(take as usize).freeze(), n - take))
    }

    /// Decode what is buffered.
    fn step(&mut self) -> io::Result<Step> {
        loop {
            match self.framing {
                Framing::Length(0) => return Ok(Step::End),
                Framing::Length(n) => {
                    let Some((data, left)) = self.take_up_to(n) else {
                        return Ok(Step::NeedMore);
                    };
                    self.framing = Framing::Length(left);
                    return Ok(Step::Data(data));
                }
                Framing::Close if self.buf.is_empty() => return Ok(Step::NeedMore),
                Framing::Close => return Ok(Step::Data(self.buf.split().freeze())),
                Framing::Chunked(Chunk::Size) => match httparse::parse_chunk_size(&self.buf) {
                    Ok(httparse::Status::Complete((used, size))) => {
                        self.buf.advance(used);
                        self.framing = Framing::Chunked(match size {
                            0 => Chunk::Trailers,
                            n => Chunk::Data(n),
                        });
                    }
                    Ok(httparse::Status::Partial) if self.buf.len() > MAX_CHUNK_LINE => {
                        return Err(bad_body("chunk-size line too long"));
                    }
                    Ok(httparse::Status::Partial) => return Ok(Step::NeedMore),
                    Err(_) => return Err(bad_body("invalid chunk-size line")),
                },
                Framing::Chunked(Chunk::Data(n)) => {
                    let Some((data, left)) = self.take_up_to(n) else {
                        return Ok(Step::NeedMore);
                    };
                    self.framing = Framing::Chunked(match left {
                        0 => Chunk::DataEnd,
                        left => Chunk::Data(left),
                    });
                    return Ok(Step::Data(data));
                }
                Framing::Chunked(Chunk::DataEnd) => {
                    if self.buf.len() < 2 {
                        return Ok(Step::NeedMore);
                    }
                    if &self.buf[..2] != b"\r\n" {
                        return Err(bad_body("chunk data not followed by CRLF"));
                    }
                    self.buf.advance(2);
                    self.framing = Framing::Chunked(Chunk::Size);
                }
                Framing::Chunked(Chunk::Trailers) => {
                    let mut fields = [httparse::EMPTY_HEADER; MAX_TRAILER_FIELDS];
                    match httparse::parse_headers(&self.buf, &mut fields) {
                        Ok(httparse::Status::Complete((used, _))) => {
                            // The body has ended: the next turn of the loop says so.
                            self.buf.advance(used);
                            self.framing = Framing::Length(0);
                        }
                        Ok(httparse::Status::Partial) if self.buf.len() > MAX_TRAILERS => {
                            return Err(bad_body("trailer section too large"));
                        }
                        Ok(httparse::Status::Partial) => return Ok(Step::NeedMore),
                        Err(_) => return Err(bad_body("invalid trailer section")),
                    }
                }
            }
        }
    }

    /// Read more from the socket; `Ok(0)` at its end.
    fn poll_fill(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        let Some(stream) = &self.stream else {
            return Poll::Ready(Ok(0));
        };
        if self.buf.capacity() - self.buf.len() < READ_SIZE / 4 {
            self.buf.reserve(READ_SIZE);
        }
        loop {
            match stream.try_read_buf(&mut self.buf) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    ready!(stream.poll_read_ready(cx))?;
                }
                other => return Poll::Ready(other),
            }
        }
    }
}

fn bad_body(why: &'static str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, why)
}

impl Body for SocketBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        loop {
            let step = this.step().inspect_err(|_| this.stream = None)?;
            match step {
                Step::Data(data) => {
                    this.release_if_complete();
                    return Poll::Ready(Some(Ok(Frame::data(data))));
                }
                Step::End => {
                    let nothing_after = this.buf.is_empty();
                    this.finish(nothing_after);
                    return Poll::Ready(None);
                }
                Step::NeedMore => {}
            }
            let read = ready!(this.poll_fill(cx)).inspect_err(|_| this.stream = None)?;
            if read == 0 {
                this.stream = None;
                if this.framing == Framing::Close {
                    this.framing = Framing::Length(0);
                    continue;
                }
                return Poll::Ready(Some(Err(Box::new(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "the upstream closed the connection before the body ended",
                )))));
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.framing == Framing::Length(0)
    }

    fn size_hint(&self) -> SizeHint {
        match self.framing {
            Framing::Length(n) => SizeHint::with_exact(n),
            _ => SizeHint::default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;
    use std::sync::Mutex;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    use http_body_util::{BodyExt, Empty};
    use tokio::io::AsyncWriteExt;
    use tokio::net::TcpListener;

    use super::*;

    /// What a scripted upstream answers to its `n`th request (counted over all connections), and whether it
    /// closes the connection after answering.
    type Script = fn(usize) -> (&'static [u8], bool);

    struct Upstream {
        addr: SocketAddr,
        pool: Arc<H1Pool>,
        accepted: Arc<AtomicUsize>,
        heads: Arc<Mutex<Vec<String>>>,
    }

    /// A loopback upstream that answers each request head it reads as `script` says.
    async fn upstream(script: Script) -> Upstream {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr: SocketAddr = listener.local_addr().unwrap();
        let accepted = Arc::new(AtomicUsize::new(0));
        let heads = Arc::new(Mutex::new(Vec::new()));
        let served = Arc::new(AtomicUsize::new(0));
        let (acc, hs) = (Arc::clone(&accepted), Arc::clone(&heads));
        tokio::spawn(async move {
            while let Ok((mut conn, _)) = listener.accept().await {
                acc.fetch_add(1, Ordering::SeqCst);
                let (hs, served) = (Arc::clone(&hs), Arc::clone(&served));
                tokio::spawn(async move {
                    let mut pending = Vec::new();
                    loop {
                        let end = loop {
                            if let Some(i) = pending.windows(4).position(|w| w == b"\r\n\r\n") {
                                break i + 4;
                            }
                            let mut chunk = [0u8; 4096];
                            match conn.read(&mut chunk).await {
                                Ok(0) | Err(_) => return,
                                Ok(n) => pending.extend_from_slice(&chunk[..n]),
                            }
                        };
                        let head: Vec<u8> = pending.drain(..end).collect();
                        hs.lock().unwrap().push(String::from_utf8(head).unwrap());
                        let (bytes, close) = script(served.fetch_add(1, Ordering::SeqCst));
                        if conn.write_all(bytes).await.is_err() || close {
                            return;
                        }
                    }
                });
            }
        });
        Upstream {
            addr,
            pool: H1Pool::new(&addr.to_string(), 8, Duration::from_secs(2)),
            accepted,
            heads,
        }
    }

    fn request(method: http::Method, target: &str) -> Request<ProxyBody> {
        let mut req = Request::new(Empty::new().map_err(|e| match e {}).boxed());
        *req.method_mut() = method;
        *req.uri_mut() = target.parse().unwrap();
        req.headers_mut()
            .insert("x-user", HeaderValue::from_static("ada"));
        req
    }

    async fn get(up: &Upstream, target: &str) -> Result<(Response<()>, Bytes), String> {
        let call = async {
            let resp = up
                .pool
                .send(request(http::Method::GET, target), None)
                .await
                .map_err(|e| e.to_string())?;
            let (parts, body) = resp.into_parts();
            let body = body.collect().await.map_err(|e| e.to_string())?.to_bytes();
            Ok((Response::from_parts(parts, ()), body))
        };
        tokio::time::timeout(Duration::from_secs(5), call)
            .await
            .expect("the exchange finished")
    }

    #[tokio::test]
    async fn the_request_head_is_sent_in_origin_form_and_a_connection_carries_many_requests() {
        let up = upstream(|_| {
            (
                b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nX-A: 1\r\n\r\nok",
                false,
            )
        })
        .await;
        for _ in 0..3 {
            let (resp, body) = get(&up, "/p/q?x=1").await.unwrap();
            assert_eq!(resp.status(), 200);
            assert_eq!(resp.headers()["x-a"], "1");
            assert_eq!(&body[..], b"ok");
        }
        assert_eq!(up.accepted.load(Ordering::SeqCst), 1);
        let head = up.heads.lock().unwrap()[0].clone();
        assert!(head.starts_with("GET /p/q?x=1 HTTP/1.1\r\n"), "{head}");
        assert!(head.contains("\r\nx-user: ada\r\n"), "{head}");
        assert!(head.contains(&format!("host: {}\r\n", up.addr)), "{head}");
    }

    #[tokio::test]
    async fn responses_read_one_after_another_into_a_connections_buffer_stay_intact() {
        // A 6 000-byte body uses up more than the free end of a 16 KiB read buffer in three responses, so the
        // buffer is replaced or reclaimed many times while earlier bodies are still held.
        static LARGE: std::sync::LazyLock<Vec<u8>> = std::sync::LazyLock::new(|| {
            let mut r = b"HTTP/1.1 200 OK\r\nContent-Length: 6000\r\n\r\n".to_vec();
            r.extend((0..6000u32).map(|i| b'a' + (i % 26) as u8));
            r
        });
        let up = upstream(|n| match n % 3 {
            0 => (b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok", false),
            1 => (&LARGE[..], false),
            _ => (
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
                false,
            ),
        })
        .await;
        let mut held = Vec::new();
        for _ in 0..30 {
            held.push(get(&up, "/").await.unwrap().1);
        }
        for (n, body) in held.iter().enumerate() {
            match n % 3 {
                0 => assert_eq!(&body[..], b"ok"),
                1 => assert_eq!(&body[..], &LARGE[LARGE.len() - 6000..]),
                _ => assert_eq!(&body[..], b"abc"),
            }
        }
        assert_eq!(up.accepted.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn a_chunked_body_is_decoded_with_extensions_and_trailers_and_the_connection_reused() {
        let up = upstream(|_| {
            (
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5;ext=1\r\nhello\r\n6\r\n world\r\n0\r\nX-Trailer: t\r\n\r\n",
                false,
            )
        })
        .await;
        for _ in 0..2 {
            let (_, body) = get(&up, "/").await.unwrap();
            assert_eq!(&body[..], b"hello world");
        }
        assert_eq!(up.accepted.load(Ordering::SeqCst), 1);
    }

    #[test]
    fn hop_by_hop_fields_and_those_connection_names_never_enter_the_parsed_head() {
        let mut buf = BytesMut::from(
            &b"HTTP/1.1 200 OK\r\nConnection: keep-alive, X-Hop\r\nX-Hop: 1\r\nKeep-Alive: timeout=5\r\n\
               Transfer-Encoding: chunked\r\nTrailer: x-t\r\nUpgrade: h2c\r\nProxy-Connection: keep-alive\r\n\
               TE: trailers\r\nProxy-Authorization: Basic eA==\r\nContent-Type: text/plain\r\nX-Keep: 2\r\n\r\n"[..],
        );
        let head = parse_head(&mut buf, false).unwrap().unwrap();
        let mut left: Vec<_> = head.headers().keys().map(HeaderName::as_str).collect();
        left.sort_unstable();
        assert_eq!(left, ["content-type", "x-keep"]);
        assert_eq!(head.framing, Framing::Chunked(Chunk::Size));
        assert!(head.keep_alive);
        let mut buf = BytesMut::from(
            &b"HTTP/1.1 200 OK\r\nconnection: Upgrade\r\nCONNECTION: close\r\nContent-Length: 0\r\n\r\n"[..],
        );
        let head = parse_head(&mut buf, false).unwrap().unwrap();
        assert!(
            head.headers().len() == 1 && !head.keep_alive,
            "{:?}",
            head.headers()
        );
    }

    #[tokio::test]
    async fn interim_responses_are_skipped() {
        let up = upstream(|_| {
            (
                b"HTTP/1.1 103 Early Hints\r\nLink: </a.css>\r\n\r\nHTTP/1.1 201 Created\r\nContent-Length: 1\r\n\r\nx",
                false,
            )
        })
        .await;
        let (resp, body) = get(&up, "/").await.unwrap();
        assert_eq!(resp.status(), 201);
        assert_eq!(&body[..], b"x");
    }

    #[tokio::test]
    async fn a_body_without_a_length_is_read_to_the_close_and_the_connection_not_reused() {
        let up = upstream(|_| (b"HTTP/1.1 200 OK\r\n\r\nuntil the end", true)).await;
        for _ in 0..2 {
            let (_, body) = get(&up, "/").await.unwrap();
            assert_eq!(&body[..], b"until the end");
        }
        assert_eq!(up.accepted.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn head_204_and_304_responses_have_no_body_whatever_their_length_says() {
        let up = upstream(|n| match n {
            0 => (b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n", false),
            1 => (b"HTTP/1.1 204 No Content\r\n\r\n", false),
            _ => (
                b"HTTP/1.1 304 Not Modified\r\nContent-Length: 7\r\n\r\n",
                false,
            ),
        })
        .await;
        let head = up
            .pool
            .send(request(http::Method::HEAD, "/"), None)
            .await
            .unwrap();
        assert_eq!(head.headers()["content-length"], "10");
        assert!(head.body().is_end_stream());
        drop(head);
        for status in [204, 304] {
            let (resp, body) = get(&up, "/").await.unwrap();
            assert_eq!(resp.status(), status);
            assert!(body.is_empty());
        }
        assert_eq!(up.accepted.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn a_pooled_connection_closed_while_idle_is_replaced_without_failing_the_request() {
        // Each response is followed by the upstream's close, which the pool only sees on the next use.
        let up = upstream(|_| (b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok", true)).await;
        for i in 0..4 {
            let (_, body) = get(&up, "/")
                .await
                .unwrap_or_else(|e| panic!("request {i}: {e}"));
            assert_eq!(&body[..], b"ok");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(up.accepted.load(Ordering::SeqCst), 4);
    }

    #[tokio::test]
    async fn a_body_cut_short_is_an_error() {
        let up = upstream(|_| (b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc", true)).await;
        let err = get(&up, "/").await.unwrap_err();
        assert!(err.contains("before the body ended"), "{err}");
        let up = upstream(|_| {
            (
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nab",
                true,
            )
        })
        .await;
        assert!(get(&up, "/").await.is_err());
    }

    #[tokio::test]
    async fn invalid_responses_are_refused() {
        let cases: [(Script, &str); 6] = [
            (
                |_| {
                    (
                        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\nok",
                        true,
                    )
                },
                "conflicting",
            ),
            (
                |_| (b"HTTP/1.1 200 OK\r\nContent-Length: +2\r\n\r\nok", true),
                "invalid Content-Length",
            ),
            (
                |_| {
                    (
                        b"HTTP/1.0 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
                        true,
                    )
                },
                "HTTP/1.0",
            ),
            (
                |_| (b"HTTP/1.1 101 Switching Protocols\r\n\r\n", true),
                "101",
            ),
            (|_| (b"HTTP/1.1 2000 OK\r\n\r\n", true), "invalid response"),
            (
                |_| {
                    (
                        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
                        true,
                    )
                },
                "chunk-size",
            ),
        ];
        for (script, expected) in cases {
            let up = upstream(script).await;
            let err = get(&up, "/").await.unwrap_err();
            assert!(err.contains(expected), "expected {expected:?} in {err:?}");
        }
    }

    #[tokio::test]
    async fn a_response_head_over_the_limit_is_refused() {
        static HUGE: std::sync::LazyLock<&'static [u8]> = std::sync::LazyLock::new(|| {
            let filler = format!("X-Big: {}\r\n", "a".repeat(1000)).repeat(70);
            Box::leak(
                format!("HTTP/1.1 200 OK\r\n{filler}\r\n")
                    .into_bytes()
                    .into_boxed_slice(),
            )
        });
        let up = upstream(|_| (*HUGE, true)).await;
        let err = get(&up, "/").await.unwrap_err();
        assert!(
            err.contains("too large") || err.contains("headers"),
            "{err}"
        );
    }

    #[tokio::test]
    async fn with_both_framings_the_coding_wins_the_length_is_dropped_and_the_connection_closed() {
        let up = upstream(|_| {
            (
                b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n",
                false,
            )
        })
        .await;
        for _ in 0..2 {
            let (resp, body) = get(&up, "/").await.unwrap();
            assert!(!resp.headers().contains_key(header::CONTENT_LENGTH));
            assert_eq!(&body[..], b"ok");
        }
        assert_eq!(up.accepted.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn a_body_dropped_half_read_does_not_go_back_to_the_pool() {
        let up = upstream(|n| match n {
            0 => (
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n",
                false,
            ),
            _ => (b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok", false),
        })
        .await;
        let mut resp = up
            .pool
            .send(request(http::Method::GET, "/"), None)
            .await
            .unwrap();
        let first = resp.body_mut().frame().await.unwrap().unwrap();
        assert_eq!(first.into_data().unwrap(), "ok");
        drop(resp);
        let (_, body) = get(&up, "/").await.unwrap();
        assert_eq!(&body[..], b"ok");
        assert_eq!(up.accepted.load(Ordering::SeqCst), 2);
    }
}
