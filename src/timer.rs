//! Reusable sleeps for the per-request deadlines: hyper's header-read timeout (as its [`hyper::rt::Timer`])
//! and the upstream response timeout ([`SleepPool::timeout`]).
//!
//! A new tokio sleep per request registers a timer entry in the runtime's wheel on its first poll and takes it
//! out again, under the driver's lock, when dropped: callgrind counted about 700 instructions per request for
//! each of the two deadlines. A pooled sleep keeps its registration between uses, so re-arming it for a later
//! deadline is tokio's extend path (one compare-and-swap on the entry). A sleep whose old deadline passes
//! while it waits in the pool fires once, waking the task that used it last for nothing, and registers again
//! on its next use. The pool is bounded ([`MAX_IDLE`]); each idle sleep holds the waker of the task that used
//! it last until it is used again.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::time::{Instant, Sleep};

/// Most idle sleeps a pool keeps: as many as the deadlines that run at once, in practice.
pub const MAX_IDLE: usize = 1024;

/// Idle sleeps, shared by the clones of one pool. Sleeps belong to the runtime that first polled them, so a
/// pool is used within one runtime (Keyward runs one).
#[derive(Clone, Default)]
pub struct SleepPool(Arc<Mutex<Vec<Pin<Box<Sleep>>>>>);

/// A sleep from a [`SleepPool`]; it goes back to the pool when dropped.
pub struct PooledSleep {
    sleep: Option<Pin<Box<Sleep>>>,
    pool: SleepPool,
}

/// The deadline passed before the future completed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Elapsed;

pin_project_lite::pin_project! {
    /// A future with a deadline from a [`SleepPool`] (what `tokio::time::timeout` does with a new sleep).
    pub struct Timeout<F> {
        #[pin]
        future: F,
        sleep: PooledSleep,
    }
}

// === impl SleepPool ===

impl SleepPool {
    /// A sleep that ends at `deadline`. Needs a tokio runtime with timers.
    pub fn sleep_until(&self, deadline: Instant) -> PooledSleep {
        let idle = self.idle().pop();
        let sleep = match idle {
            Some(mut sleep) => {
                sleep.as_mut().reset(deadline);
                sleep
            }
            None => Box::pin(tokio::time::sleep_until(deadline)),
        };
        PooledSleep {
            sleep: Some(sleep),
            pool: self.clone(),
        }
    }

    /// `future`, failing with [`Elapsed`] if it has not completed within `limit`.
    pub fn timeout<F: Future>(&self, limit: Duration, future: F) -> Timeout<F> {
        self.timeout_at(Instant::now() + limit, future)
    }

    /// `future`, failing with [`Elapsed`] if it has not completed by `deadline` (for a caller that has just
    /// read the clock for its own purposes: one read fewer).
    pub fn timeout_at<F: Future>(&self, deadline: Instant, future: F) -> Timeout<F> {
        Timeout {
            future,
            sleep: self.sleep_until(deadline),
        }
    }

    fn idle(&self) -> std::sync::MutexGuard<'_, Vec<Pin<Box<Sleep>>>> {
        // Nothing panics while the lock is held; a poisoned pool is still a valid list of sleeps.
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    #[cfg(test)]
    fn idle_len(&self) -> usize {
        self.idle().len()
    }
}

// === impl PooledSleep ===

impl PooledSleep {
    /// Move the deadline, keeping the registration when it is later.
    pub fn reset(&mut self, deadline: Instant) {
        if let Some(sleep) = self.sleep.as_mut() {
            sleep.as_mut().reset(deadline);
        }
    }
}

impl Future for PooledSleep {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        match self.sleep.as_mut() {
            Some(sleep) => sleep.as_mut().poll(cx),
            None => Poll::Ready(()),
        }
    }
}

impl hyper::rt::Sleep for PooledSleep {}

impl Drop for PooledSleep {
    fn drop(&mut self) {
        let Some(sleep) = self.sleep.take() else {
            return;
        };
        let mut idle = self.pool.idle();
        if idle.len() < MAX_IDLE {
            idle.push(sleep);
        } else {
            drop(idle);
            drop(sleep);
        }
    }
}

// === impl Timeout ===

impl<F: Future> Future for Timeout<F> {
    type Output = Result<F::Output, Elapsed>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        if let Poll::Ready(out) = this.future.poll(cx) {
            return Poll::Ready(Ok(out));
        }
        Pin::new(this.sleep).poll(cx).map(|()| Err(Elapsed))
    }
}

/// hyper's timer on a [`SleepPool`] (the header-read timeout of every connection of a listener).
#[derive(Clone, Default)]
pub struct HyperTimer(SleepPool);

impl hyper::rt::Timer for HyperTimer {
    fn sleep(&self, duration: Duration) -> Pin<Box<dyn hyper::rt::Sleep>> {
        Box::pin(self.0.sleep_until(Instant::now() + duration))
    }

    fn sleep_until(&self, deadline: std::time::Instant) -> Pin<Box<dyn hyper::rt::Sleep>> {
        Box::pin(self.0.sleep_until(deadline.into()))
    }

    fn reset(&self, sleep: &mut Pin<Box<dyn hyper::rt::Sleep>>, new_deadline: std::time::Instant) {
        match sleep.as_mut().downcast_mut_pin::<PooledSleep>() {
            Some(pooled) => pooled.get_mut().reset(new_deadline.into()),
            None => *sleep = self.sleep_until(new_deadline),
        }
    }

    fn now(&self) -> std::time::Instant {
        Instant::now().into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_reused_sleep_keeps_to_its_new_deadline_whether_later_or_earlier() {
        let pool = SleepPool::default();
        let start = Instant::now();
        let secs = Duration::from_secs;
        let elapsed = || Instant::now() - start;
        // Registered for 10 s, dropped at 1 s: back in the pool, still registered.
        let first = tokio::time::timeout(secs(1), pool.sleep_until(start + secs(10))).await;
        assert!(first.is_err());
        assert_eq!(pool.idle_len(), 1);
        // Re-armed for 30 s (the extend path): it must not fire at the 10 s it was registered for.
        let later = tokio::time::timeout(secs(20), pool.sleep_until(start + secs(30))).await;
        assert!(later.is_err(), "fired before its deadline");
        assert_eq!(elapsed(), secs(21));
        // Earlier than the 30 s it is registered for: registered again, fires on time.
        pool.sleep_until(start + secs(23)).await;
        assert_eq!(elapsed(), secs(23));
        // After it has fired: registered again, fires on time.
        pool.sleep_until(start + secs(40)).await;
        assert_eq!(elapsed(), secs(40));
        assert_eq!(pool.idle_len(), 1, "one sleep served every deadline");
    }

    #[tokio::test(start_paused = true)]
    async fn a_timeout_passes_the_output_or_fails_at_its_deadline() {
        let pool = SleepPool::default();
        let fast = pool.timeout(Duration::from_secs(5), async { 7 }).await;
        assert_eq!(fast, Ok(7));
        let start = Instant::now();
        let slow = pool
            .timeout(
                Duration::from_secs(5),
                tokio::time::sleep(Duration::from_secs(60)),
            )
            .await;
        assert_eq!(slow, Err(Elapsed));
        assert_eq!(Instant::now() - start, Duration::from_secs(5));
        // The same sleep serves again (one in the pool throughout).
        assert_eq!(pool.idle_len(), 1);
        let again = pool.timeout(Duration::from_secs(1), async { 1 }).await;
        assert_eq!(again, Ok(1));
        assert_eq!(pool.idle_len(), 1);
    }

    #[test]
    fn the_pool_keeps_at_most_max_idle_sleeps() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap();
        rt.block_on(async {
            let pool = SleepPool::default();
            let far = Instant::now() + Duration::from_secs(60);
            let many: Vec<_> = (0..MAX_IDLE + 5).map(|_| pool.sleep_until(far)).collect();
            drop(many);
            assert_eq!(pool.idle_len(), MAX_IDLE);
        });
    }
}
