//! Small vectored writes to a client's TCP stream go out as one plain write.
//!
//! hyper writes a response as a vector (the encoded head, then each body chunk) with `writev`. On Linux a
//! `writev` to a socket goes through the file layer (`vfs_writev`, with the file's permission and
//! notification hooks), where the `send` that `TcpStream::poll_write` makes goes straight to the socket. On
//! this project's machine, over a loopback pair (a 162-byte response and its read per iteration, 300 000
//! iterations), `writev` took about 0.15 µs more per call than `send`, with one buffer or with two; through
//! the proxy it was 0.04–0.33 µs of CPU per request in 10 of 10 pairs (BENCHMARKS.md §1, "responses sent with
//! `send`").
//!
//! So a vector of at most [`FLATTEN_MAX`] bytes is copied into a per-thread buffer and sent with one `send`,
//! a single buffer is sent as it is, and only a larger vector (a big body) keeps `writev`, where the copy
//! would cost more than the call saves. `is_write_vectored` stays the stream's own, so hyper keeps queueing
//! body chunks instead of copying them into its head buffer. TLS connections are not wrapped: rustls
//! writes whole records of its own.

use std::cell::RefCell;
use std::io::{self, IoSlice};
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Largest vector copied into one write: copying 4 KiB of cached bytes takes tens of nanoseconds, less than
/// the 0.15 µs a `writev` adds.
const FLATTEN_MAX: usize = 4096;

thread_local! {
    /// The copy of a small vector; per thread, so no connection holds a buffer of its own.
    static SCRATCH: RefCell<Vec<u8>> = RefCell::new(Vec::with_capacity(FLATTEN_MAX));
}

pin_project_lite::pin_project! {
    /// `io` whose small vectored writes are sent as one plain write; everything else passes through.
    pub(super) struct FlatWrites<I> {
        #[pin]
        io: I,
    }
}

impl<I> FlatWrites<I> {
    pub(super) fn new(io: I) -> Self {
        Self { io }
    }
}

impl<I: AsyncRead> AsyncRead for FlatWrites<I> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        self.project().io.poll_read(cx, buf)
    }
}

impl<I: AsyncWrite> AsyncWrite for FlatWrites<I> {
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
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let mut io = self.project().io;
        let mut filled = bufs.iter().filter(|b| !b.is_empty());
        match (filled.next(), filled.next()) {
            (None, _) => return io.poll_write(cx, &[]),
            // One buffer: sent as it is, no copy.
            (Some(only), None) => return io.poll_write(cx, only),
            (Some(_), Some(_)) => {}
        }
        if bufs.iter().map(|b| b.len()).sum::<usize>() > FLATTEN_MAX {
            return io.poll_write_vectored(cx, bufs);
        }
        SCRATCH.with_borrow_mut(|scratch| {
            scratch.clear();
            for b in bufs {
                scratch.extend_from_slice(b);
            }
            // A partial write is reported as such: the caller advances its buffers by the count, as after a
            // partial `writev`.
            io.as_mut().poll_write(cx, scratch)
        })
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
    use tokio::io::AsyncWriteExt;

    /// Records each write as (vectored?, bytes) and accepts at most `accept` bytes a call.
    struct Recorder {
        calls: Vec<(bool, Vec<u8>)>,
        accept: usize,
    }

    impl Recorder {
        fn new(accept: usize) -> Self {
            Self {
                calls: Vec::new(),
                accept,
            }
        }
    }

    impl AsyncWrite for Recorder {
        fn poll_write(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
            buf: &[u8],
        ) -> Poll<io::Result<usize>> {
            let n = buf.len().min(self.accept);
            self.calls.push((false, buf[..n].to_vec()));
            Poll::Ready(Ok(n))
        }

        fn poll_write_vectored(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
            bufs: &[IoSlice<'_>],
        ) -> Poll<io::Result<usize>> {
            let all: Vec<u8> = bufs.iter().flat_map(|b| b.iter().copied()).collect();
            let n = all.len().min(self.accept);
            self.calls.push((true, all[..n].to_vec()));
            Poll::Ready(Ok(n))
        }

        fn is_write_vectored(&self) -> bool {
            true
        }

        fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }

        fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
    }

    async fn write(accept: usize, bufs: &[&[u8]]) -> (usize, Vec<(bool, Vec<u8>)>) {
        let mut io = FlatWrites::new(Recorder::new(accept));
        let slices: Vec<IoSlice<'_>> = bufs.iter().map(|b| IoSlice::new(b)).collect();
        let n = io
            .write_vectored(&slices)
            .await
            .expect("recorder never fails");
        assert!(
            io.is_write_vectored(),
            "hyper must keep queueing body chunks"
        );
        (n, io.io.calls)
    }

    #[tokio::test]
    async fn a_small_vector_goes_out_as_one_plain_write_of_all_its_bytes() {
        let (n, calls) = write(usize::MAX, &[b"HTTP/1.1 200 OK\r\n\r\n", b"", b"ok"]).await;
        assert_eq!(n, 21);
        assert_eq!(calls, [(false, b"HTTP/1.1 200 OK\r\n\r\nok".to_vec())]);
    }

    #[tokio::test]
    async fn one_filled_buffer_is_written_as_it_is() {
        let (n, calls) = write(usize::MAX, &[b"", b"body", b""]).await;
        assert_eq!(n, 4);
        assert_eq!(calls, [(false, b"body".to_vec())]);
    }

    #[tokio::test]
    async fn a_vector_over_the_limit_keeps_the_vectored_write() {
        let big = vec![b'x'; FLATTEN_MAX];
        let (n, calls) = write(usize::MAX, &[b"head", &big]).await;
        assert_eq!(n, FLATTEN_MAX + 4);
        assert_eq!(calls.len(), 1);
        assert!(calls[0].0, "written with writev");
    }

    #[tokio::test]
    async fn a_partial_write_reports_how_much_of_the_vector_went_out() {
        let (n, calls) = write(5, &[b"abc", b"defg"]).await;
        assert_eq!(n, 5);
        assert_eq!(calls, [(false, b"abcde".to_vec())]);
    }
}
