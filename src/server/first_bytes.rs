//! A deadline on a connection's first bytes: hyper-util's HTTP version detection reads them with no deadline
//! of its own, and hyper's header-read timeout starts only after it, so without this a client that connects
//! and sends nothing (or a few bytes of the h2 preface) would hold its connection, and its place under the
//! connection cap, forever. It also tells the connection's [`Activity`] when the client spoke HTTP/2.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Sleep;

use super::idle::Activity;

/// What an HTTP/2 client sends first (RFC 9113 §3.4); anything else is HTTP/1.
const H2_PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

pin_project_lite::pin_project! {
    /// `io` whose reads fail with `TimedOut` if the bytes that decide the HTTP version have not arrived within
    /// the limit: the whole h2 preface, or as few as differ from it. After that it only passes reads and
    /// writes through (hyper's own timeouts take over).
    pub(super) struct FirstBytes<I> {
        #[pin]
        io: I,
        deadline: Option<Pin<Box<Sleep>>>,
        matched: usize,
        activity: Arc<Activity>,
    }
}

impl<I> FirstBytes<I> {
    /// Wrap `io`; the deadline is `limit` from now. A whole h2 preface is reported to `activity`.
    pub(super) fn new(io: I, limit: Duration, activity: Arc<Activity>) -> Self {
        Self {
            io,
            deadline: Some(Box::pin(tokio::time::sleep(limit))),
            matched: 0,
            activity,
        }
    }
}

impl<I: AsyncRead> AsyncRead for FirstBytes<I> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.project();
        let before = buf.filled().len();
        let read = this.io.poll_read(cx, buf);
        let Some(deadline) = this.deadline.as_mut() else {
            return read;
        };
        match read {
            Poll::Ready(Ok(())) => {
                let new = &buf.filled()[before..];
                let expected = &H2_PREFACE[*this.matched..];
                let differs = new.iter().zip(expected).any(|(got, want)| got != want);
                let complete = new.len() >= expected.len();
                if !differs && complete {
                    this.activity.set_h2();
                }
                if new.is_empty() || differs || complete {
                    *this.deadline = None;
                } else {
                    *this.matched += new.len();
                }
                Poll::Ready(Ok(()))
            }
            Poll::Pending if deadline.as_mut().poll(cx).is_ready() => {
                Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "the client sent no request in time",
                )))
            }
            other => other,
        }
    }
}

impl<I: AsyncWrite> AsyncWrite for FirstBytes<I> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.project().io.poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.project().io.poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.project().io.poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.project().io.poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    async fn read_all_within(sent: &[u8], stall: bool) -> io::Result<Vec<u8>> {
        read_all_reporting(sent, stall, Arc::default()).await
    }

    async fn read_all_reporting(
        sent: &[u8],
        stall: bool,
        activity: Arc<Activity>,
    ) -> io::Result<Vec<u8>> {
        let (mut client, server) = tokio::io::duplex(1024);
        client.write_all(sent).await?;
        if !stall {
            drop(client);
        } else {
            // Keep the client open (and silent) past the deadline.
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_secs(60)).await;
                drop(client);
            });
        }
        let mut io = FirstBytes::new(server, Duration::from_secs(10), activity);
        let mut got = Vec::new();
        io.read_to_end(&mut got).await.map(|_| got)
    }

    #[tokio::test(start_paused = true)]
    async fn silence_or_a_stalled_preface_times_out() {
        for sent in [&b""[..], b"PRI * HTTP/2.0\r\n"] {
            let err = read_all_within(sent, true).await.unwrap_err();
            assert_eq!(err.kind(), io::ErrorKind::TimedOut, "{sent:?}");
        }
    }

    #[tokio::test(start_paused = true)]
    async fn once_the_version_is_decided_reads_wait_as_long_as_they_must() {
        // HTTP/1 from its first byte, and a full h2 preface: both then stall past the deadline unharmed
        // (read_to_end ends at the client's close, 60 s in).
        for sent in [&b"GET / HTTP/1.1\r\n"[..], &H2_PREFACE[..], b"G"] {
            let got = read_all_within(sent, true).await.unwrap();
            assert_eq!(got, sent);
        }
        // Only a whole preface marks the connection HTTP/2.
        for (sent, h2) in [
            (&H2_PREFACE[..], true),
            (b"GET / HTTP/1.1\r\n", false),
            (b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\r", false),
        ] {
            let activity = Arc::new(Activity::default());
            let _ = read_all_reporting(sent, false, Arc::clone(&activity)).await;
            assert_eq!(activity.is_h2(), h2, "{sent:?}");
        }
        // A closed connection is not a timeout.
        assert_eq!(read_all_within(b"", false).await.unwrap(), b"");
    }
}
