//! Closing an HTTP/2 connection that goes a whole `limits.header_read_timeout` without starting a request, the
//! bound hyper's header-read timeout already puts on an idle HTTP/1.1 keep-alive connection. hyper has no idle
//! timeout for h2 (only keep-alive pings, which a live but silent client answers), so without this an idle
//! h2 connection would hold its place under `limits.max_connections` for as long as its client liked.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::task::{Context, Poll, Wake, Waker};
use std::time::Duration;

use futures_util::task::AtomicWaker;
use tokio::sync::watch;

/// What one connection has done, as the idle check needs it.
#[derive(Debug, Default)]
pub(super) struct Activity {
    /// The client sent the HTTP/2 preface.
    h2: AtomicBool,
    /// Requests started so far.
    requests: AtomicU64,
}

// === impl Activity ===

impl Activity {
    /// The connection speaks HTTP/2.
    pub(super) fn set_h2(&self) {
        self.h2.store(true, Ordering::Relaxed);
    }

    /// Whether the client sent the HTTP/2 preface.
    pub(super) fn is_h2(&self) -> bool {
        self.h2.load(Ordering::Relaxed)
    }

    /// A request started.
    pub(super) fn request(&self) {
        self.requests.fetch_add(1, Ordering::Relaxed);
    }
}

/// Resolves once the connection speaks HTTP/2 and a whole `period` has passed without a request starting:
/// between one and two periods after its last request (or its preface). An HTTP/1.1 connection never
/// resolves it; hyper's header-read timeout bounds those.
pub(super) async fn idle_h2(activity: Arc<Activity>, period: Duration) {
    let mut seen = None;
    loop {
        tokio::time::sleep(period).await;
        if !activity.is_h2() {
            continue;
        }
        let requests = activity.requests.load(Ordering::Relaxed);
        if seen == Some(requests) {
            return;
        }
        seen = Some(requests);
    }
}

/// What stops a connection: the listener draining (its channel flips, or closes) or, first, `idle`.
pub(super) async fn stop_signal(
    mut draining: watch::Receiver<bool>,
    idle: impl Future<Output = ()>,
) {
    tokio::select! {
        biased;
        _ = draining.changed() => {}
        () = idle => {}
    }
}

pin_project_lite::pin_project! {
    /// A connection run to its end. Once `stop` resolves it is shut down gracefully with `shutdown` (an h2
    /// GOAWAY, or no keep-alive after the current HTTP/1.1 request): requests in flight finish, then it
    /// closes. `stop` is polled only when its own waker fired, not on every wake of the connection (that
    /// cost about 1 200 instructions per proxied request). A struct rather than an `async fn`, so that the
    /// compiler proves it `Send` from its fields.
    pub(super) struct Drive<C, S> {
        #[pin]
        conn: C,
        #[pin]
        stop: S,
        shutdown: Option<fn(Pin<&mut C>)>,
        signal: Arc<StopSignal>,
        stop_waker: Waker,
    }
}

/// The waker `stop` is polled with: it notes that `stop` has news, then wakes the connection's task.
#[derive(Default)]
struct StopSignal {
    woken: AtomicBool,
    task: AtomicWaker,
}

impl Wake for StopSignal {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.woken.store(true, Ordering::Release);
        self.task.wake();
    }
}

// === impl Drive ===

impl<C: Future, S: Future<Output = ()>> Drive<C, S> {
    /// Run `conn` until it ends, shutting it down with `shutdown` once `stop` resolves.
    pub(super) fn new(conn: C, shutdown: fn(Pin<&mut C>), stop: S) -> Self {
        // Woken to begin with: `stop` is polled once, to arm its timer and channel.
        let signal = Arc::new(StopSignal {
            woken: AtomicBool::new(true),
            task: AtomicWaker::new(),
        });
        Self {
            conn,
            stop,
            shutdown: Some(shutdown),
            stop_waker: Waker::from(Arc::clone(&signal)),
            signal,
        }
    }
}

impl<C: Future, S: Future<Output = ()>> Future for Drive<C, S> {
    type Output = C::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<C::Output> {
        let mut this = self.project();
        if let Poll::Ready(out) = this.conn.as_mut().poll(cx) {
            return Poll::Ready(out);
        }
        if this.shutdown.is_none() {
            return Poll::Pending;
        }
        this.signal.task.register(cx.waker());
        if !this.signal.woken.swap(false, Ordering::AcqRel) {
            return Poll::Pending;
        }
        let mut stop_cx = Context::from_waker(this.stop_waker);
        if this.stop.poll(&mut stop_cx).is_pending() {
            return Poll::Pending;
        }
        if let Some(shutdown) = this.shutdown.take() {
            shutdown(this.conn.as_mut());
        }
        // Polled again so that the connection acts on the shutdown now.
        this.conn.poll(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn only_an_h2_connection_without_new_requests_is_idle() {
        let period = Duration::from_secs(10);
        let activity = Arc::new(Activity::default());
        let idle = tokio::spawn(idle_h2(Arc::clone(&activity), period));
        // HTTP/1.1 (no preface): never idle by this check.
        tokio::time::sleep(Duration::from_secs(35)).await;
        assert!(!idle.is_finished());
        // h2 with a request every 8 s: still not idle.
        activity.set_h2();
        for _ in 0..5 {
            activity.request();
            tokio::time::sleep(Duration::from_secs(8)).await;
            assert!(!idle.is_finished());
        }
        // No request for two periods: idle.
        tokio::time::sleep(Duration::from_secs(21)).await;
        assert!(idle.is_finished());
    }

    /// A connection that ends 1 s after it is asked to shut down.
    #[derive(Default)]
    struct FakeConn {
        asked: bool,
        closing: Option<Pin<Box<tokio::time::Sleep>>>,
    }

    impl Future for FakeConn {
        type Output = &'static str;

        fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<&'static str> {
            if !self.asked {
                return Poll::Pending;
            }
            let closing = self
                .closing
                .get_or_insert_with(|| Box::pin(tokio::time::sleep(Duration::from_secs(1))));
            closing.as_mut().poll(cx).map(|()| "closed")
        }
    }

    /// Drive a fake connection with a drain at `drain_at` (never when `None`) and idleness at `idle_at`
    /// seconds; returns how long it took.
    async fn drive_fake(drain_at: Option<u64>, idle_at: u64) -> Duration {
        let (tx, rx) = watch::channel(false);
        tokio::spawn(async move {
            if let Some(at) = drain_at {
                tokio::time::sleep(Duration::from_secs(at)).await;
                let _ = tx.send(true);
            }
            tokio::time::sleep(Duration::from_secs(3600)).await;
            drop(tx);
        });
        let started = tokio::time::Instant::now();
        let idle = tokio::time::sleep(Duration::from_secs(idle_at));
        let out = Drive::new(
            FakeConn::default(),
            |c| c.get_mut().asked = true,
            stop_signal(rx, idle),
        )
        .await;
        assert_eq!(out, "closed");
        started.elapsed()
    }

    #[tokio::test(start_paused = true)]
    async fn drive_shuts_down_on_drain_or_idle_then_runs_the_connection_to_its_end() {
        let took = drive_fake(Some(5), 100).await;
        assert!(
            took >= Duration::from_secs(6) && took < Duration::from_secs(7),
            "{took:?}"
        );
        let took = drive_fake(None, 20).await;
        assert!(
            took >= Duration::from_secs(21) && took < Duration::from_secs(22),
            "{took:?}"
        );
    }
}
