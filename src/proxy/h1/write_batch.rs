//! Upstream request heads of one scheduler pass, written together at the pass's end by one of its tasks, while
//! the runtime is busy; at once while it has idle time.
//!
//! Written one at a time between the pass's other work (reading and authenticating the next request), each
//! upstream write finds the upstream asleep and pays for waking it: measured, 0.8–1.3 µs more kernel time per
//! signed request (BENCHMARKS.md §1). Going to the back of the run queue before writing (`Requeue`) groups the
//! writes, but polls every request's task one more time. Here the first task of a pass to have a head ready
//! opens a batch, goes to the back of the run queue once, and on its return writes every head the pass's other
//! tasks added meanwhile, back to back; those tasks wait for their response (read readiness) without another
//! poll. A head the flush could not write in full (a full socket buffer, an error) is handed back to its task,
//! which writes the rest itself; so is one whose connection turned readable first (closed by the upstream while
//! idle), so that the exchange sees the close as it would without the batch.
//!
//! The batch saves CPU only where a pass holds several heads, and the first head of a pass waits for the
//! others: at a third of the core's time (20 000 requests a second), it saved nothing measurable (14.07 µs a
//! request with it, 14.10 with heads written at once while idle) and heads written at once had the lower p99 in
//! 33 rounds of 52; at saturation, signed requests cost 1.064× the CPU without it (BENCHMARKS.md §1). So a head
//! is batched only while [`runtime_load::busy`] says the runtime is.

use std::future::{Future, poll_fn};
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll, Waker};

use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use crate::runtime_load;

thread_local! {
    /// The batch this thread's tasks are adding to, until its flush.
    static OPEN: std::cell::RefCell<Option<Arc<Batch>>> = const { std::cell::RefCell::new(None) };
}

/// Write `wire` on `stream`, with the pass's other upstream heads if the runtime is busy; the stream comes back
/// once the head is sent, and `wire` in any case (to be sent again on another connection if this one turns out
/// closed).
pub(super) async fn write(
    mut stream: TcpStream,
    wire: Vec<u8>,
) -> (Vec<u8>, io::Result<TcpStream>) {
    if !runtime_load::busy() {
        let written = stream.write_all(&wire).await;
        return (wire, written.map(|()| stream));
    }
    let queued = Queued::new(stream, wire);
    // Declared in this order so that an abandoned request cancels its own head before its leader's drop
    // flushes the others.
    let mut leader = join(&queued);
    let mut cancel = CancelOnDrop(Some(&queued));
    if let Some(leader) = leader.as_mut() {
        Requeue(false).await;
        leader.flush();
    }
    let (mut stream, wire, written) = poll_fn(|cx| queued.poll_sent(cx)).await;
    cancel.0 = None;
    if written < wire.len() {
        if let Err(e) = stream.write_all(&wire[written..]).await {
            return (wire, Err(e));
        }
    }
    (wire, Ok(stream))
}

/// Add `queued` to this thread's open batch, or open one: then the returned leader must flush it.
fn join(queued: &Arc<Queued>) -> Option<Leader> {
    OPEN.with(|open| {
        let mut open = open.borrow_mut();
        if let Some(batch) = open.as_ref() {
            let mut writes = lock(&batch.writes);
            if let Some(writes) = writes.as_mut() {
                writes.push(Arc::clone(queued));
                return None;
            }
        }
        let batch = Arc::new(Batch {
            writes: Mutex::new(Some(vec![Arc::clone(queued)])),
        });
        *open = Some(Arc::clone(&batch));
        Some(Leader(Some(batch)))
    })
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The heads added to one batch; `None` once flushed (a later head opens a new batch).
struct Batch {
    writes: Mutex<Option<Vec<Arc<Queued>>>>,
}

/// The task that opened a batch. Flushes it when told to, or when dropped (its request was abandoned while it
/// waited), so that no other task's head is left unsent.
struct Leader(Option<Arc<Batch>>);

impl Leader {
    fn flush(&mut self) {
        let Some(batch) = self.0.take() else {
            return;
        };
        let writes = lock(&batch.writes).take().unwrap_or_default();
        OPEN.with(|open| {
            let mut open = open.borrow_mut();
            if open.as_ref().is_some_and(|b| Arc::ptr_eq(b, &batch)) {
                *open = None;
            }
        });
        for queued in writes {
            queued.send();
        }
    }
}

impl Drop for Leader {
    fn drop(&mut self) {
        self.flush();
    }
}

/// One head waiting for its batch's flush.
struct Queued {
    inner: Mutex<Inner>,
}

struct Inner {
    /// Taken back by the task once the head is sent (or handed back).
    stream: Option<TcpStream>,
    wire: Vec<u8>,
    /// How much of `wire` the flush wrote.
    written: usize,
    state: State,
}

enum State {
    /// Not written yet; the waker is the task's, to be woken if the flush hands the head back.
    Waiting(Option<Waker>),
    /// Written in full.
    Sent,
    /// Handed back to the task with what is left to write.
    Returned,
    /// The task gave up waiting: nothing to write.
    Cancelled,
}

impl Queued {
    fn new(stream: TcpStream, wire: Vec<u8>) -> Arc<Self> {
        Arc::new(Self {
            inner: Mutex::new(Inner {
                stream: Some(stream),
                wire,
                written: 0,
                state: State::Waiting(None),
            }),
        })
    }

    /// Called by the flush: write the head without waiting; what is not written goes back to the task.
    fn send(&self) {
        let waker = {
            let mut inner = lock(&self.inner);
            let State::Waiting(waker) = &mut inner.state else {
                return;
            };
            let waker = waker.take();
            let inner = &mut *inner;
            if let Some(Ok(n)) = inner.stream.as_ref().map(|s| s.try_write(&inner.wire)) {
                inner.written = n;
            }
            if inner.written == inner.wire.len() {
                inner.state = State::Sent;
                return;
            }
            inner.state = State::Returned;
            waker
        };
        if let Some(waker) = waker {
            waker.wake();
        }
    }

    /// Ready with the stream, the head and how much of it was written, once the flush has been, or once the
    /// connection turns readable before it (none of the head is written then, and this task writes it).
    fn poll_sent(&self, cx: &mut Context<'_>) -> Poll<(TcpStream, Vec<u8>, usize)> {
        let mut guard = lock(&self.inner);
        let inner = &mut *guard;
        if let (State::Waiting(waker), Some(stream)) = (&mut inner.state, inner.stream.as_ref()) {
            if stream.poll_read_ready(cx).is_pending() {
                if !waker.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
                    *waker = Some(cx.waker().clone());
                }
                return Poll::Pending;
            }
        }
        // Whatever the state was, the flush must not touch the head from here on.
        inner.state = State::Cancelled;
        match inner.stream.take() {
            Some(stream) => Poll::Ready((stream, std::mem::take(&mut inner.wire), inner.written)),
            // Taken already: the future that polls this was ready before, and is not polled again.
            None => Poll::Pending,
        }
    }
}

/// Marks a head whose task stopped waiting, so that the flush skips it.
struct CancelOnDrop<'a>(Option<&'a Arc<Queued>>);

impl Drop for CancelOnDrop<'_> {
    fn drop(&mut self) {
        if let Some(queued) = self.0 {
            let mut inner = lock(&queued.inner);
            if matches!(inner.state, State::Waiting(_)) {
                inner.state = State::Cancelled;
            }
        }
    }
}

/// Goes to the back of the run queue once: the tasks already woken run before this one goes on.
///
/// Not `tokio::task::yield_now`, which defers the task until the runtime has next polled the I/O driver: a
/// task that is the only one ready (a lightly loaded proxy) then paid an `epoll_wait` that found nothing
/// before its upstream write. Waking itself puts the task behind those already queued and no further.
pub(super) struct Requeue(pub(super) bool);

impl Future for Requeue {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.0 {
            return Poll::Ready(());
        }
        self.0 = true;
        cx.waker().wake_by_ref();
        Poll::Pending
    }
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;
    use std::time::Duration;

    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    use super::*;

    /// What each far end read, in order.
    async fn received(far: Vec<tokio::task::JoinHandle<Vec<u8>>>) -> Vec<Vec<u8>> {
        let mut all = Vec::new();
        for end in far {
            all.push(end.await.unwrap());
        }
        all
    }

    /// Two connected pairs, as [`pairs`] makes them.
    async fn two_pairs() -> (TcpStream, TcpStream, Vec<tokio::task::JoinHandle<Vec<u8>>>) {
        let (near, far) = pairs(2).await;
        let mut near = near.into_iter();
        (near.next().unwrap(), near.next().unwrap(), far)
    }

    /// `n` connected pairs: the near ends, and a task per far end that answers `ok` to the first bytes it reads
    /// (a task waits for its response after its head is sent) and returns everything read once the near end
    /// closes.
    async fn pairs(n: usize) -> (Vec<TcpStream>, Vec<tokio::task::JoinHandle<Vec<u8>>>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr: SocketAddr = listener.local_addr().unwrap();
        let (mut near, mut far) = (Vec::new(), Vec::new());
        for _ in 0..n {
            near.push(TcpStream::connect(addr).await.unwrap());
            let (mut conn, _) = listener.accept().await.unwrap();
            far.push(tokio::spawn(async move {
                let mut got = vec![0; 64 * 1024];
                let n = conn.read(&mut got).await.unwrap_or(0);
                got.truncate(n);
                if n > 0 {
                    let _ = conn.write_all(b"ok").await;
                }
                let _ = conn.read_to_end(&mut got).await;
                got
            }));
        }
        (near, far)
    }

    /// Read the far end's `ok` and close: a socket closed with unread bytes is reset, which can discard what
    /// it sent last.
    async fn finish(stream: io::Result<TcpStream>) -> bool {
        let Ok(mut stream) = stream else {
            return false;
        };
        let mut ok = [0; 2];
        stream.read_exact(&mut ok).await.is_ok() && &ok == b"ok"
    }

    /// A task's output, failing the test rather than hanging it if a head is never written.
    async fn within<T>(task: tokio::task::JoinHandle<T>) -> T {
        tokio::time::timeout(Duration::from_secs(10), task)
            .await
            .expect("the task finishes")
            .unwrap()
    }

    fn current_thread() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
    }

    /// A requeued task runs again after the tasks already woken, and before nothing else.
    #[test]
    fn requeue_lets_the_tasks_already_woken_run_first() {
        let order = Arc::new(Mutex::new(Vec::new()));
        current_thread().block_on(async {
            let (a, b) = (Arc::clone(&order), Arc::clone(&order));
            let first = tokio::spawn(async move {
                a.lock().unwrap().push("a before");
                Requeue(false).await;
                a.lock().unwrap().push("a after");
            });
            let second = tokio::spawn(async move { b.lock().unwrap().push("b") });
            first.await.unwrap();
            second.await.unwrap();
        });
        assert_eq!(*order.lock().unwrap(), ["a before", "b", "a after"]);
    }

    /// Heads written through a batch arrive whole, and each task gets its stream back.
    #[test]
    fn the_heads_of_a_pass_are_written_by_its_first_task() {
        current_thread().block_on(async {
            let (near, far) = pairs(3).await;
            let tasks: Vec<_> = near
                .into_iter()
                .enumerate()
                .map(|(i, stream)| {
                    tokio::spawn(async move {
                        let (wire, written) = write(stream, format!("head {i}").into_bytes()).await;
                        (wire, finish(written).await)
                    })
                })
                .collect();
            for (i, task) in tasks.into_iter().enumerate() {
                let (wire, ok) = within(task).await;
                assert!(ok);
                assert_eq!(wire, format!("head {i}").into_bytes());
            }
            for (i, far) in far.into_iter().enumerate() {
                assert_eq!(far.await.unwrap(), format!("head {i}").into_bytes());
            }
        });
    }

    /// On a runtime with idle time a head is written at once: the first poll of the write finishes it.
    #[test]
    fn a_head_is_written_at_once_while_the_runtime_has_idle_time() {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .on_thread_park(runtime_load::parked)
            .on_thread_unpark(runtime_load::unparked)
            .build()
            .unwrap();
        runtime.block_on(async {
            let (near, far) = pairs(1).await;
            for _ in 0..3 {
                tokio::time::sleep(Duration::from_millis(3)).await;
            }
            let stream = near.into_iter().next().unwrap();
            let mut writing = Box::pin(write(stream, b"at once".to_vec()));
            let Poll::Ready((wire, stream)) =
                poll_fn(|cx| Poll::Ready(writing.as_mut().poll(cx))).await
            else {
                panic!("the head waited for a batch");
            };
            assert_eq!(wire, b"at once");
            assert!(finish(stream).await);
            assert_eq!(received(far).await, [&b"at once"[..]]);
        });
    }

    /// A head added to a batch is written at the flush, not before: until the first task runs again, nothing
    /// has left.
    #[test]
    fn a_head_waits_for_the_flush() {
        current_thread().block_on(async {
            let (a, b, far) = two_pairs().await;
            let queued = Queued::new(b, b"member".to_vec());
            let mut leader =
                join(&Queued::new(a, b"leader".to_vec())).expect("the first head opens a batch");
            assert!(join(&queued).is_none(), "the second joins it");
            assert_eq!(lock(&queued.inner).written, 0);
            leader.flush();
            assert!(matches!(lock(&queued.inner).state, State::Sent));
            assert!(
                OPEN.with(|o| o.borrow().is_none()),
                "the flush closes the batch"
            );
            drop(leader);
            drop(queued);
            assert_eq!(received(far).await, [&b"leader"[..], b"member"]);
        });
    }

    /// A first task abandoned before its flush still flushes the others' heads, and not its own.
    #[test]
    fn an_abandoned_first_task_flushes_the_others() {
        current_thread().block_on(async {
            let (a, b, far) = two_pairs().await;
            let first = tokio::spawn(async move {
                // Polled once (this runtime is not measured, so it counts as busy): it opens the batch and asks
                // to run again after the tasks already woken.
                let mut abandoned = Box::pin(write(a, b"abandoned".to_vec()));
                poll_fn(|cx| {
                    assert!(abandoned.as_mut().poll(cx).is_pending());
                    Poll::Ready(())
                })
                .await;
                // The second task joins the batch meanwhile; then this request is abandoned.
                tokio::task::yield_now().await;
                drop(abandoned);
            });
            let second =
                tokio::spawn(async move { finish(write(b, b"member".to_vec()).await.1).await });
            within(first).await;
            assert!(
                within(second).await,
                "the second head was written by the abandoned task's flush"
            );
            assert_eq!(received(far).await, [&b""[..], b"member"]);
        });
    }

    /// A head larger than the socket buffer goes back to its task after a partial write, and the task writes
    /// the rest.
    #[test]
    fn a_head_the_flush_cannot_finish_is_finished_by_its_task() {
        current_thread().block_on(async {
            let (near, far) = pairs(1).await;
            let big: Vec<u8> = (0..16 * 1024 * 1024).map(|i| (i % 251) as u8).collect();
            let stream = near.into_iter().next().unwrap();
            let (wire, written) = write(stream, big.clone()).await;
            assert!(finish(written).await);
            assert!(wire == big, "the head comes back as it was");
            let got = far.into_iter().next().unwrap().await.unwrap();
            let same = got.iter().zip(&big).take_while(|(a, b)| a == b).count();
            assert!(
                got == big,
                "{} bytes arrived, {} of them in place, of {}",
                got.len(),
                same,
                big.len()
            );
        });
    }
}
