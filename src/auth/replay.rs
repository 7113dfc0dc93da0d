//! Replay protection: a signature is accepted once within its validity window.
//!
//! DESIGN.md §4: a replay inside the window (same key and nonce, or same key and signature) is rejected.
//! A signed timestamp may lie up to `window` in the future or the past (NWS4.md §5.8), so a token must be
//! remembered for `2 × window` after it is first seen.
//!
//! Layout: [`SHARDS`] independent spin-locked shards, picked by the token digest. Each shard holds the set of
//! the 128-bit digests `SipHash-2-4-128(key, key_id ‖ 0 ‖ token)`, plus a FIFO of the digests in insertion
//! order (16 bytes a slot in each). Expiries are not kept per digest: the FIFO is cut into runs ([`Run`]) of
//! consecutive digests whose expiries lie within [`Run`]'s granularity (a 256th of the lifetime) of the run's
//! first, and a run expires, all its digests at once, at the latest expiry among them. So a token is
//! remembered for at least its lifetime and at most a 256th of it longer, and an entry takes 32 bytes of slots
//! where a FIFO of `(digest, expiry)` took 48: the proxy's resident memory grew by 52–53 bytes per accepted
//! NWS4 request where it grew by 73–75 (400 000 requests; BENCHMARKS.md §1), so the default 1 000 000 entries
//! hold about 50 MiB, not 70, at the same CPU per request.
//!
//! SipHash is a pseudorandom function built for exactly this (hash tables fed by an adversary), and its key is
//! random per process, so no client can choose tokens whose digests collide in the set: the digest's own bits
//! are its hash (no second hash per lookup), and 128 bits keep an accidental collision out of reach (about
//! 2^-128 per pair). It replaced the first half of a salted SHA-256, which cost two SHA-256
//! blocks per signed request for the same property. Expiry is `now + lifetime` with one lifetime for all
//! entries, so the FIFO is (nearly) sorted by expiry and purging pops expired runs from its front, removing
//! each popped digest from the set: amortised O(1) per insert, never a scan. A digest is in the set at most
//! once and in the FIFO once. A token still in the set is `Seen` even if its expiry has passed unpopped
//! (`now` read out of order across threads): refusing the same token again is always safe, and a signed token
//! two windows old is outside its window anyway. A global counter bounds the entries.
//!
//! The shards' locks are spin locks ([`spin::mutex::SpinMutex`]), not `std::sync::Mutex`: the std lock's
//! release is an atomic swap, a locked instruction, which waits for the insert's stores to reach a cache line
//! not yet in cache; the spin lock's release is a plain store, so that wait overlaps the work after it
//! (criterion's steady-state replay bench: 276–342 → 217–242 ns; `benches/pair.sh`, NWS4: 0.991 of the CPU
//! per request, lower in 5 rounds of 5; BENCHMARKS.md §1). A shard is held for a fraction of a microsecond
//! (one lookup and insert, or popping a few expired entries; longer only when a shard shrinks after a burst),
//! by one of the runtime's workers (one per core), and a waiter yields to the OS scheduler between tries
//! ([`Yield`]), so one whose holder was preempted does not spin out its time slice. There is no poisoning: a
//! panic while a shard is held releases it, and no code path panics mid-update, so the shard stays consistent.
//!
//! What an insert costs in the proxy (0.13 µs per NWS4 request in the profile of the spin-locked build, 0.30 µs
//! before) is cache misses on a set larger than any cache, not instructions. Prefetching the slot while the
//! signature is checked saved about 40 ns in a bench, but needs an open-addressing set of our own and `unsafe`
//! for the prefetch, which this crate forbids: not done (BENCHMARKS.md §1 "Where the rest of a request's time
//! goes"). That set alone, one cache line per new token where `hashbrown` touches two, saved 0.05 µs per signed
//! request in the proxy (§1 "Responses sent with `send`, and CPU measured side by side"): not kept.

use std::collections::{HashSet, VecDeque};
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use siphasher::sip128::{Hasher128, SipHasher24};
use spin::mutex::{SpinMutex, SpinMutexGuard};
use spin::relax::Yield;

/// Number of shards; a power of two so the shard index is a mask of the digest.
pub const SHARDS: usize = 32;
/// Most expired digests an insert pops from its shard. A run expires all at once and may hold thousands of
/// digests (a 256th of the lifetime's traffic to one shard), so popping them all would stall the one request
/// that finds them expired; inserts arrive as fast as entries expire, so popping a few each keeps up, and an
/// expired digest not yet popped is only remembered longer (still refused, always safe). A cache found full
/// sweeps every shard without a limit.
pub const PURGE_PER_INSERT: usize = 32;
/// Upper bound on the remembered lifetime (2 × window), so `Instant + lifetime` cannot overflow.
pub const MAX_LIFETIME: Duration = Duration::from_secs(7 * 24 * 3600);

/// Why [`ReplayCache::check_and_insert`] refused a token.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Replay {
    /// The same key id and token were already accepted and are still inside their window.
    #[error("signature or nonce already used")]
    Seen,
    /// The cache holds `max_entries` unexpired entries; nothing still in its window is ever evicted.
    #[error("replay cache is full")]
    Full,
}

/// A bounded, sharded set of recently accepted (key id, token) pairs. `Send + Sync`; share it via `Arc`.
pub struct ReplayCache {
    shards: Box<[ShardLock]>,
    /// The SipHash key: random per process, never shown.
    key: [u8; 16],
    lifetime: Duration,
    /// How far past a run's first expiry a digest may still join it: a 256th of the lifetime.
    granularity: Duration,
    max_entries: usize,
    len: AtomicUsize,
}

type TokenDigest = u128;

/// A shard behind its lock (the module doc says why a spin lock).
type ShardLock = SpinMutex<Shard, Yield>;

#[derive(Default)]
struct Shard {
    seen: HashSet<TokenDigest, BuildHasherDefault<DigestHasher>>,
    /// The digests in insertion order.
    order: VecDeque<TokenDigest>,
    /// `order` cut into runs, oldest first: the first run's `len` digests are `order`'s front.
    runs: VecDeque<Run>,
}

/// Consecutive digests of a shard's FIFO that expire together, at the latest of their expiries.
///
/// A digest joins the last run when its expiry is at most the run's granularity past the run's first expiry
/// (or earlier: `now` read out of order across threads); otherwise it opens a run. Runs therefore open more
/// than a granularity apart, so a shard holds at most about 257 live runs whatever its traffic.
#[derive(Debug)]
struct Run {
    /// The expiry of the digest that opened the run.
    opened: Instant,
    /// The latest expiry of the run's digests: when all of them are forgotten.
    expires: Instant,
    /// How many digests of `order` the run holds.
    len: usize,
}

// === impl ReplayCache ===

impl ReplayCache {
    /// A cache whose entries live `2 × window` (capped at [`MAX_LIFETIME`]) and which holds at most
    /// `max_entries` unexpired entries.
    pub fn new(window: Duration, max_entries: usize) -> Self {
        let shards = (0..SHARDS)
            .map(|_| ShardLock::new(Shard::default()))
            .collect();
        let lifetime = window.saturating_mul(2).min(MAX_LIFETIME);
        Self {
            shards,
            key: rand::random(),
            lifetime,
            granularity: lifetime / 256,
            max_entries,
            len: AtomicUsize::new(0),
        }
    }

    /// Record (key_id, token) — token is a nonce or the signature bytes. Returns Err(Replay::Seen) if already
    /// present and unexpired; Err(Replay::Full) if the cache holds max_entries unexpired entries (never evict
    /// an entry still inside its window: refuse instead). Expired entries are purged opportunistically: the
    /// touched shard's expired front on every call, every shard's only when the cache looks full.
    pub fn check_and_insert(&self, key_id: &str, token: &[u8], now: Instant) -> Result<(), Replay> {
        let digest = token_digest(&self.key, key_id, token);
        let Some(expires) = now.checked_add(self.lifetime) else {
            // Unrepresentable expiry: refuse rather than remember the token for less than its window.
            return Err(Replay::Full);
        };
        let shard = &self.shards[shard_index(digest)];
        match self.try_insert(&mut lock(shard), digest, now, expires) {
            Err(Replay::Full) => {}
            other => return other,
        }
        // Full: expired entries may sit in shards nobody touched lately. Sweep them one lock at a time (never
        // two locks at once, so no lock-order deadlock), then try once more.
        self.purge_expired(now);
        self.try_insert(&mut lock(shard), digest, now, expires)
    }

    /// Number of entries held, including expired ones not yet purged.
    pub fn len(&self) -> usize {
        self.len.load(Ordering::Acquire)
    }

    /// True when no entry is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Drops every entry expired at `now` (each shard's FIFO front only); returns how many were dropped.
    /// Optional: [`ReplayCache::check_and_insert`] purges on its own; a periodic task may call this too.
    pub fn purge_expired(&self, now: Instant) -> usize {
        self.shards
            .iter()
            .map(|shard| self.purge_shard(&mut lock(shard), now, usize::MAX))
            .sum()
    }

    fn try_insert(
        &self,
        shard: &mut Shard,
        digest: TokenDigest,
        now: Instant,
        expires: Instant,
    ) -> Result<(), Replay> {
        self.purge_shard(shard, now, PURGE_PER_INSERT);
        if shard.seen.contains(&digest) {
            return Err(Replay::Seen);
        }
        let reserved = self
            .len
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < self.max_entries).then_some(n + 1)
            });
        if reserved.is_err() {
            return Err(Replay::Full);
        }
        shard.seen.insert(digest);
        shard.order.push_back(digest);
        match shard.runs.back_mut() {
            Some(run)
                if run
                    .opened
                    .checked_add(self.granularity)
                    .is_some_and(|end| expires <= end) =>
            {
                run.expires = run.expires.max(expires);
                run.len += 1;
            }
            _ => shard.runs.push_back(Run {
                opened: expires,
                expires,
                len: 1,
            }),
        }
        Ok(())
    }

    /// Pops up to `limit` digests of the shard's expired runs from the FIFO's front and forgets them; a run
    /// cut short stays at the front with what is left of it.
    fn purge_shard(&self, shard: &mut Shard, now: Instant, limit: usize) -> usize {
        let (mut popped, mut removed) = (0, 0);
        while popped < limit {
            let Some(run) = shard.runs.front_mut() else {
                break;
            };
            if run.expires > now {
                break;
            }
            // The runs' lengths add up to the FIFO's; the FIFO's length only guards the drain's bound.
            let take = run.len.min(limit - popped).min(shard.order.len());
            run.len -= take;
            if run.len == 0 || take == 0 {
                shard.runs.pop_front();
            }
            for digest in shard.order.drain(..take) {
                if shard.seen.remove(&digest) {
                    removed += 1;
                }
            }
            popped += take;
        }
        if removed > 0 {
            self.len.fetch_sub(removed, Ordering::AcqRel);
            shard.shrink_if_sparse();
        }
        removed
    }
}

impl std::fmt::Debug for ReplayCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReplayCache")
            .field("lifetime", &self.lifetime)
            .field("max_entries", &self.max_entries)
            .field("len", &self.len())
            .finish_non_exhaustive()
    }
}

// === impl Shard ===

impl Shard {
    /// Gives memory back after a burst: keep capacity within 4× the live size (bounded memory).
    fn shrink_if_sparse(&mut self) {
        const MIN_CAPACITY: usize = 64;
        if self.seen.capacity() > MIN_CAPACITY && self.seen.len() * 4 < self.seen.capacity() {
            self.seen.shrink_to(self.seen.len() * 2);
        }
        if self.order.capacity() > MIN_CAPACITY && self.order.len() * 4 < self.order.capacity() {
            self.order.shrink_to(self.order.len() * 2);
        }
        if self.runs.capacity() > MIN_CAPACITY && self.runs.len() * 4 < self.runs.capacity() {
            self.runs.shrink_to(self.runs.len() * 2);
        }
    }
}

/// Fixed-size key: bounds memory per entry whatever the token length, and separates key ids (the `0` byte
/// cannot occur inside a header-borne key id).
fn token_digest(key: &[u8; 16], key_id: &str, token: &[u8]) -> TokenDigest {
    use std::hash::Hasher as _;
    let mut hasher = SipHasher24::new_with_key(key);
    hasher.write(key_id.as_bytes());
    hasher.write(&[0]);
    hasher.write(token);
    hasher.finish128().as_u128()
}

/// The shard a digest belongs to: its top byte (the low bits pick the set slot).
fn shard_index(digest: TokenDigest) -> usize {
    usize::from((digest >> 120) as u8) % SHARDS
}

/// The set's hasher: a keyed SipHash digest is already uniform, so its low 64 bits are the hash.
#[derive(Default)]
struct DigestHasher(u64);

impl Hasher for DigestHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        // Only `u128` keys are hashed here (`write_u128`); fold anything else in, for completeness.
        for chunk in bytes.chunks(8) {
            let mut word = [0u8; 8];
            word[..chunk.len()].copy_from_slice(chunk);
            self.0 = self.0.rotate_left(5) ^ u64::from_le_bytes(word);
        }
    }

    fn write_u128(&mut self, n: u128) {
        self.0 = n as u64;
    }
}

/// Takes a shard's lock; a waiter yields to the OS scheduler between tries.
fn lock(shard: &ShardLock) -> SpinMutexGuard<'_, Shard> {
    shard.lock()
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Barrier};
    use std::thread;

    use super::*;

    const WINDOW: Duration = Duration::from_secs(300);

    #[test]
    fn second_insert_of_same_token_is_seen() {
        let cache = ReplayCache::new(WINDOW, 100);
        let now = Instant::now();
        assert_eq!(cache.check_and_insert("k1", b"sig", now), Ok(()));
        assert_eq!(cache.check_and_insert("k1", b"sig", now), Err(Replay::Seen));
        let later = now + 2 * WINDOW - Duration::from_millis(1);
        assert_eq!(
            cache.check_and_insert("k1", b"sig", later),
            Err(Replay::Seen)
        );
        assert_eq!(cache.len(), 1);
    }

    #[test]
    fn same_token_under_another_key_is_distinct() {
        let cache = ReplayCache::new(WINDOW, 100);
        let now = Instant::now();
        assert_eq!(cache.check_and_insert("k1", b"sig", now), Ok(()));
        assert_eq!(cache.check_and_insert("k2", b"sig", now), Ok(()));
        // The separator keeps ("ab", "c") and ("a", "bc") apart.
        assert_eq!(cache.check_and_insert("ab", b"c", now), Ok(()));
        assert_eq!(cache.check_and_insert("a", b"bc", now), Ok(()));
        assert_eq!(cache.len(), 4);
    }

    #[test]
    fn entry_lives_two_windows_then_is_accepted_again() {
        let cache = ReplayCache::new(WINDOW, 100);
        let now = Instant::now();
        cache.check_and_insert("k", b"t", now).unwrap();
        let expiry = now + 2 * WINDOW;
        assert_eq!(cache.check_and_insert("k", b"t", expiry), Ok(()));
        assert_eq!(cache.len(), 1);
        assert_eq!(cache.check_and_insert("k", b"t", expiry), Err(Replay::Seen));
    }

    #[test]
    fn an_expired_token_not_yet_purged_is_still_seen_then_forgotten() {
        let cache = ReplayCache::new(WINDOW, 100);
        // Two tokens in one shard, inserted with `now` out of order (as threads may read it): the later one
        // sits at the FIFO's front, so the earlier one's expiry passes before it can be popped.
        let first = b"first".to_vec();
        let second = (0u32..)
            .map(|i| i.to_be_bytes().to_vec())
            .find(|t| shard_of(&cache, t) == shard_of(&cache, &first))
            .expect("some token shares the shard");
        let now = Instant::now();
        let later = now + Duration::from_secs(10);
        assert_eq!(cache.check_and_insert("k", &first, later), Ok(()));
        assert_eq!(cache.check_and_insert("k", &second, now), Ok(()));
        let between = now + 2 * WINDOW;
        assert_eq!(
            cache.check_and_insert("k", &second, between),
            Err(Replay::Seen)
        );
        assert_eq!(cache.len(), 2);
        assert_eq!(cache.purge_expired(later + 2 * WINDOW), 2);
        assert!(cache.is_empty());
        assert_eq!(
            cache.check_and_insert("k", &second, later + 2 * WINDOW),
            Ok(())
        );
    }

    /// The shard of `token` under key id `k`, the one these tests insert with.
    fn shard_of(cache: &ReplayCache, token: &[u8]) -> usize {
        shard_index(token_digest(&cache.key, "k", token))
    }

    /// Distinct tokens that all land in `token`'s shard.
    fn tokens_in_shard_of(cache: &ReplayCache, token: &[u8], count: usize) -> Vec<Vec<u8>> {
        let shard = shard_of(cache, token);
        (0u32..)
            .map(|i| i.to_be_bytes().to_vec())
            .filter(|t| shard_of(cache, t) == shard)
            .take(count)
            .collect()
    }

    #[test]
    fn tokens_of_one_run_are_forgotten_together_never_before_their_own_expiry() {
        let cache = ReplayCache::new(WINDOW, 100);
        let lifetime = 2 * WINDOW;
        // A 256th of 600 s is 2.34 s: the tokens at 0 s and 1 s make one run, the one at 3 s opens another.
        let t = tokens_in_shard_of(&cache, b"x", 3);
        let now = Instant::now();
        let at = |secs: u64| now + Duration::from_secs(secs);
        for (token, secs) in t.iter().zip([0, 1, 3]) {
            assert_eq!(cache.check_and_insert("k", token, at(secs)), Ok(()));
        }
        // The first token's own expiry has passed, but not its run's: still remembered.
        assert_eq!(cache.purge_expired(at(0) + lifetime), 0);
        assert_eq!(
            cache.check_and_insert("k", &t[0], at(0) + lifetime),
            Err(Replay::Seen)
        );
        // At the run's expiry (its latest token's) both go; the third token's run stays.
        assert_eq!(cache.purge_expired(at(1) + lifetime), 2);
        assert_eq!(
            cache.check_and_insert("k", &t[2], at(2) + lifetime),
            Err(Replay::Seen)
        );
        assert_eq!(cache.purge_expired(at(3) + lifetime), 1);
        assert!(cache.is_empty());
    }

    #[test]
    fn an_insert_pops_a_bounded_number_of_expired_tokens_and_a_sweep_pops_them_all() {
        let cache = ReplayCache::new(WINDOW, 1_000);
        let t = tokens_in_shard_of(&cache, b"x", 3 * PURGE_PER_INSERT + 2);
        let now = Instant::now();
        // One run of 3 × PURGE_PER_INSERT + 1 tokens, all expired by `later`.
        for token in &t[1..] {
            assert_eq!(cache.check_and_insert("k", token, now), Ok(()));
        }
        let later = now + 2 * WINDOW;
        assert_eq!(cache.check_and_insert("k", &t[0], later), Ok(()));
        assert_eq!(cache.len(), 2 * PURGE_PER_INSERT + 2);
        // The last token was never popped: refused still, until the sweep.
        assert_eq!(
            cache.check_and_insert("k", &t[3 * PURGE_PER_INSERT + 1], later),
            Err(Replay::Seen)
        );
        assert_eq!(cache.len(), PURGE_PER_INSERT + 2);
        assert_eq!(cache.purge_expired(later), PURGE_PER_INSERT + 1);
        assert_eq!(cache.len(), 1);
        let shard = lock(&cache.shards[shard_of(&cache, &t[0])]);
        assert_eq!(shard.runs.len(), 1);
        assert_eq!(shard.order.len(), 1);
    }

    #[test]
    fn a_shard_holds_a_bounded_number_of_runs() {
        let window = Duration::from_secs(1);
        let cache = ReplayCache::new(window, 100_000);
        let start = Instant::now();
        // 60 000 tokens 100 µs apart (three lifetimes): a shard gets one every 3.2 ms on average and a run spans
        // 7.8 ms, so runs hold a few tokens each, and a shard never holds more than 257 of them.
        for i in 0..60_000u64 {
            let now = start + Duration::from_micros(100 * i);
            assert_eq!(cache.check_and_insert("k", &i.to_be_bytes(), now), Ok(()));
        }
        let (mut runs, mut held) = (0, 0);
        for shard in cache.shards.iter() {
            let shard = lock(shard);
            assert!(shard.runs.len() <= 257, "{} runs", shard.runs.len());
            assert_eq!(
                shard.runs.iter().map(|r| r.len).sum::<usize>(),
                shard.order.len()
            );
            assert_eq!(shard.order.len(), shard.seen.len());
            runs += shard.runs.len();
            held += shard.order.len();
        }
        assert!(runs * 2 < held, "{runs} runs for {held} tokens");
        // Two seconds of tokens, plus at most a run's span and a token or two per shard not yet purged.
        assert!(
            cache.len() <= 20_000 + 20_000 / 256 + 2 * SHARDS,
            "len {}",
            cache.len()
        );
    }

    #[test]
    fn full_when_bounded_and_nothing_unexpired_is_evicted() {
        let cache = ReplayCache::new(WINDOW, 10);
        let now = Instant::now();
        for i in 0..10u32 {
            cache.check_and_insert("k", &i.to_be_bytes(), now).unwrap();
        }
        assert_eq!(cache.check_and_insert("k", b"new", now), Err(Replay::Full));
        // Seen wins over Full, and every original entry is still remembered.
        for i in 0..10u32 {
            let r = cache.check_and_insert("k", &i.to_be_bytes(), now);
            assert_eq!(r, Err(Replay::Seen));
        }
        // Once the window passes, the full cache accepts again (sweeping every shard when its own shard held
        // none of the expired entries; which shard that is depends on the per-process key), and nothing
        // expired is left once swept.
        let later = now + 2 * WINDOW;
        assert_eq!(cache.check_and_insert("k", b"new", later), Ok(()));
        cache.purge_expired(later);
        assert_eq!(cache.len(), 1);
    }

    #[test]
    fn zero_capacity_refuses_everything() {
        let cache = ReplayCache::new(WINDOW, 0);
        let r = cache.check_and_insert("k", b"t", Instant::now());
        assert_eq!(r, Err(Replay::Full));
        assert!(cache.is_empty());
    }

    #[test]
    fn purge_keeps_memory_bounded() {
        let window = Duration::from_secs(1);
        let cache = ReplayCache::new(window, 1_000);
        let start = Instant::now();
        // 50 "seconds" of traffic at 100 tokens each: far more than max_entries in total, never Full,
        // because each round's inserts purge what expired two windows ago.
        for round in 0..50u64 {
            let now = start + Duration::from_secs(round);
            for i in 0..100u64 {
                let token = (round * 1_000 + i).to_be_bytes();
                assert_eq!(cache.check_and_insert("k", &token, now), Ok(()));
            }
            assert!(cache.len() <= 300, "len {} at round {round}", cache.len());
        }
        let total: usize = cache
            .shards
            .iter()
            .map(|s| {
                let s = lock(s);
                s.seen.len() + s.order.len()
            })
            .sum();
        assert!(total <= 600, "shards hold {total} records");
        let held = cache.len();
        assert_eq!(cache.purge_expired(start + Duration::from_secs(100)), held);
        assert!(cache.is_empty());
    }

    #[test]
    fn concurrent_inserts_of_same_token_yield_exactly_one_ok() {
        const THREADS: usize = 16;
        let cache = Arc::new(ReplayCache::new(WINDOW, 1_000));
        let barrier = Arc::new(Barrier::new(THREADS));
        let now = Instant::now();
        let handles: Vec<_> = (0..THREADS)
            .map(|_| {
                let cache = Arc::clone(&cache);
                let barrier = Arc::clone(&barrier);
                thread::spawn(move || {
                    barrier.wait();
                    cache.check_and_insert("key", b"same-signature", now)
                })
            })
            .collect();
        let results: Vec<_> = handles.into_iter().map(|h| h.join().unwrap()).collect();
        assert_eq!(results.iter().filter(|r| r.is_ok()).count(), 1);
        assert!(results.iter().all(|r| r.is_ok() || *r == Err(Replay::Seen)));
        assert_eq!(cache.len(), 1);
    }

    #[test]
    fn concurrent_distinct_inserts_respect_the_bound() {
        let cache = Arc::new(ReplayCache::new(WINDOW, 500));
        let now = Instant::now();
        let handles: Vec<_> = (0..8u32)
            .map(|t| {
                let cache = Arc::clone(&cache);
                thread::spawn(move || {
                    (0..200u32)
                        .filter(|i| {
                            cache
                                .check_and_insert("k", &(t * 1000 + i).to_be_bytes(), now)
                                .is_ok()
                        })
                        .count()
                })
            })
            .collect();
        let accepted: usize = handles.into_iter().map(|h| h.join().unwrap()).sum();
        assert_eq!(accepted, 500);
        assert_eq!(cache.len(), 500);
    }

    #[test]
    fn cache_is_send_and_sync() {
        fn assert_send_sync<T: Send + Sync>() {}
        assert_send_sync::<ReplayCache>();
    }
}
