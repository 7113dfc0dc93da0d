//! Whether this thread's runtime is busy: the share of the last few milliseconds it spent awake, from tokio's
//! park and unpark hooks ([`parked`] and [`unparked`], registered by `main`).
//!
//! The proxy's upstream write batch (`proxy::h1`) saves CPU only when a scheduler pass holds several requests,
//! and makes the first of them wait for the others; so it batches when the runtime is busy and writes each head
//! at once when it has idle time (as TCP's autocorking coalesces only while earlier packets are still queued).
//! The hooks run once per park and once per wake, each reading the clock once; a runtime that is never idle
//! never parks, so one that goes on writing past `SINCE_WAKE_BUSY` heads without parking counts as busy
//! whatever its last window said. A thread whose runtime has no hooks (tests, tools) is never measured and
//! counts as busy, which keeps the batch.

use std::cell::Cell;
use std::time::{Duration, Instant};

/// How long a window of measurement runs; it closes at the first park or wake after this.
const WINDOW: Duration = Duration::from_millis(2);

/// Awake for at least this share of a window (in percent): busy. At saturation the share is near 100; at
/// 20 000 requests a second on this project's machine, a third of the core's time (BENCHMARKS.md §1).
const BUSY_PERCENT: u128 = 50;

/// Heads written since the runtime last woke past which it counts as busy (see the module comment).
const SINCE_WAKE_BUSY: u32 = 32;

/// One thread's measurement.
#[derive(Clone, Copy, Debug)]
struct Load {
    /// The last park or wake; `None` until the first hook runs.
    last: Option<Instant>,
    /// Awake and in all since the window opened.
    awake: Duration,
    total: Duration,
    /// The verdict of the last closed window.
    busy: bool,
    /// Heads asked about since the last wake.
    since_wake: u32,
}

impl Load {
    const UNMEASURED: Self = Self {
        last: None,
        awake: Duration::ZERO,
        total: Duration::ZERO,
        busy: true,
        since_wake: 0,
    };

    /// The runtime parks (`was_awake`) or wakes at `now`.
    fn step(&mut self, now: Instant, was_awake: bool) {
        if let Some(last) = self.last {
            let spent = now.saturating_duration_since(last);
            self.total += spent;
            if was_awake {
                self.awake += spent;
            }
            if self.total >= WINDOW {
                self.busy = self.awake.as_nanos() * 100 >= self.total.as_nanos() * BUSY_PERCENT;
                self.awake = Duration::ZERO;
                self.total = Duration::ZERO;
            }
        }
        self.last = Some(now);
        if !was_awake {
            self.since_wake = 0;
        }
    }

    /// Whether the runtime counts as busy for one more head.
    fn busy_for_one_more(&mut self) -> bool {
        self.since_wake = self.since_wake.saturating_add(1);
        self.busy || self.since_wake > SINCE_WAKE_BUSY
    }
}

thread_local! {
    static LOAD: Cell<Load> = const { Cell::new(Load::UNMEASURED) };
}

fn update<T>(f: impl FnOnce(&mut Load) -> T) -> T {
    LOAD.with(|cell| {
        let mut load = cell.get();
        let out = f(&mut load);
        cell.set(load);
        out
    })
}

/// tokio's `on_thread_park` hook: this thread's runtime has nothing to run and is about to wait for events.
pub fn parked() {
    let now = Instant::now();
    update(|load| load.step(now, true));
}

/// tokio's `on_thread_unpark` hook: this thread's runtime woke.
pub fn unparked() {
    let now = Instant::now();
    update(|load| load.step(now, false));
}

/// Whether this thread's runtime is busy, asked once per upstream head.
pub(crate) fn busy() -> bool {
    update(Load::busy_for_one_more)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A measurement after `rounds` spells of `awake` then `parked`.
    fn after(awake: Duration, parked: Duration, rounds: u32) -> Load {
        let mut load = Load::UNMEASURED;
        let mut now = Instant::now();
        load.step(now, false);
        for _ in 0..rounds {
            now += awake;
            load.step(now, true);
            now += parked;
            load.step(now, false);
        }
        load
    }

    #[test]
    fn a_runtime_that_was_never_measured_counts_as_busy() {
        let mut load = Load::UNMEASURED;
        assert!(load.busy_for_one_more());
    }

    #[test]
    fn a_runtime_mostly_parked_is_not_busy() {
        let mut load = after(Duration::from_micros(30), Duration::from_micros(70), 50);
        assert!(!load.busy_for_one_more());
    }

    #[test]
    fn a_runtime_mostly_awake_is_busy() {
        let mut load = after(Duration::from_micros(90), Duration::from_micros(10), 50);
        assert!(load.busy_for_one_more());
    }

    #[test]
    fn the_verdict_waits_for_a_whole_window() {
        let start = Instant::now();
        let mut load = Load {
            last: Some(start),
            busy: false,
            ..Load::UNMEASURED
        };
        let half_ms = |n: u64| start + Duration::from_micros(n * 500);
        load.step(half_ms(2), true);
        load.step(half_ms(3), false);
        assert!(
            !load.busy,
            "awake for 1 ms of 1.5: no window has closed yet"
        );
        load.step(half_ms(6), true);
        assert!(load.busy, "awake for 2.5 ms of 3");
        load.step(half_ms(12), false);
        assert!(!load.busy, "parked for 3 ms of 3");
    }

    #[test]
    fn a_runtime_that_does_not_park_turns_busy_after_enough_heads() {
        let mut load = after(Duration::from_micros(30), Duration::from_micros(70), 50);
        let verdicts: Vec<bool> = (0..=SINCE_WAKE_BUSY)
            .map(|_| load.busy_for_one_more())
            .collect();
        assert!(verdicts[..SINCE_WAKE_BUSY as usize].iter().all(|b| !b));
        assert!(verdicts[SINCE_WAKE_BUSY as usize]);
        load.step(load.last.unwrap() + Duration::from_micros(10), false);
        assert!(!load.busy_for_one_more(), "a wake starts the count again");
    }

    /// The hooks, on a real runtime: a runtime that mostly sleeps is not busy, one that mostly computes is.
    #[test]
    fn the_hooks_measure_a_real_runtime() {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .on_thread_park(parked)
            .on_thread_unpark(unparked)
            .build()
            .unwrap();
        runtime.block_on(async {
            for _ in 0..5 {
                tokio::time::sleep(Duration::from_millis(3)).await;
            }
            assert!(!busy(), "sleeping");
            for _ in 0..5 {
                let start = Instant::now();
                while start.elapsed() < Duration::from_millis(3) {
                    std::hint::spin_loop();
                }
                tokio::time::sleep(Duration::from_micros(100)).await;
            }
            assert!(busy(), "computing");
        });
    }
}
