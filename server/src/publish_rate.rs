//! The publish rate per client: a token bucket for each client (`--publish-rate` tokens a
//! second, `--publish-burst` at most), shared by v2 and v3 POSTs. [`governor`] does the
//! arithmetic (GCRA); the per-client state lives in a store of bounded size, defined here.
//!
//! # Memory
//!
//! A client's entry is one 64-bit timestamp. It is dropped once it no longer differs from a
//! full bucket: [`PublishRate::sweep`] (run by the periodic sweep) forgets such clients, so the
//! table holds only clients that published recently, for at most `burst / rate` seconds plus a
//! sweep period after their last POST. A flood of distinct clients (many IPv6 /64s, or a
//! trusted proxy that passes on whatever `X-Forwarded-For` it is given) could still fill it
//! faster than that, so it also holds at most [`MAX_TRACKED_CLIENTS`] clients, some 5 MB.
//! When it is full, buckets that have refilled are reclaimed at once (at most every 100 ms),
//! and any client still without an entry shares a single overflow bucket with every other
//! such client: during such a flood new clients are limited together rather than not at all.

use dashmap::DashMap;
use governor::{
    Quota, RateLimiter,
    clock::{Clock, DefaultClock},
    nanos::Nanos,
    state::{StateStore, keyed::ShrinkableKeyedStateStore},
};
use std::{
    num::{NonZeroU32, NonZeroU64},
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use crate::client::ClientKey;

/// The most clients whose buckets are tracked one by one.
pub const MAX_TRACKED_CLIENTS: usize = 100_000;

/// How often a full table may be searched for refilled buckets outside the periodic sweep.
const RECLAIM_EVERY: Duration = Duration::from_millis(100);

#[derive(Clone)]
pub struct PublishRate(Arc<Inner>);

struct Inner {
    limiter: RateLimiter<ClientKey, BoundedStore, DefaultClock>,
    rate: u32,
    burst: u32,
    /// Set by the store when a client had to use the overflow bucket.
    overflowed: Arc<AtomicBool>,
    last_reclaim: Mutex<Instant>,
}

/// A refused POST: how long until the client's next token.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Exceeded {
    pub rate: u32,
    pub burst: u32,
    pub wait: Duration,
}

impl PublishRate {
    /// `rate` messages a second per client, in bursts of up to `burst` (both at least 1).
    pub fn new(rate: u32, burst: u32) -> Self {
        let one = NonZeroU32::MIN;
        let quota = Quota::per_second(NonZeroU32::new(rate).unwrap_or(one))
            .allow_burst(NonZeroU32::new(burst).unwrap_or(one));
        Self::build(quota, rate, burst, MAX_TRACKED_CLIENTS)
    }

    fn build(quota: Quota, rate: u32, burst: u32, max_clients: usize) -> Self {
        let overflowed = Arc::new(AtomicBool::new(false));
        let store = BoundedStore {
            clients: DashMap::new(),
            overflow: AtomicU64::new(0),
            max_clients,
            overflowed: overflowed.clone(),
        };
        Self(Arc::new(Inner {
            limiter: RateLimiter::new(quota, store, DefaultClock::default()),
            rate,
            burst,
            overflowed,
            last_reclaim: Mutex::new(Instant::now()),
        }))
    }

    /// Takes a token from `client`'s bucket, or says how long until there is one.
    pub fn check(&self, client: ClientKey) -> Result<(), Exceeded> {
        let inner = &*self.0;
        let checked = inner.limiter.check_key(&client);
        if inner.overflowed.swap(false, Ordering::Relaxed) {
            self.reclaim();
        }
        checked.map(drop).map_err(|not_until| Exceeded {
            rate: inner.rate,
            burst: inner.burst,
            wait: not_until.wait_time_from(inner.limiter.clock().now()),
        })
    }

    /// The table is full: forget refilled buckets now rather than at the next sweep.
    fn reclaim(&self) {
        let Ok(mut last) = self.0.last_reclaim.try_lock() else {
            return;
        };
        if last.elapsed() >= RECLAIM_EVERY {
            *last = Instant::now();
            self.0.limiter.retain_recent();
        }
    }

    /// Forgets clients whose buckets are full again, and gives memory back after a flood.
    pub fn sweep(&self) {
        let limiter = &self.0.limiter;
        let before = limiter.len();
        limiter.retain_recent();
        if limiter.len() < before / 2 {
            limiter.shrink_to_fit();
        }
    }

    /// Clients with a bucket of their own.
    pub fn tracked(&self) -> usize {
        self.0.limiter.len()
    }
}

/// The buckets, one timestamp each ("theoretical arrival time", in ns since the limiter's
/// start; 0 for none), by client; at most `max_clients` of them, and one more for everyone
/// else while the table is full.
struct BoundedStore {
    clients: DashMap<ClientKey, AtomicU64>,
    overflow: AtomicU64,
    max_clients: usize,
    overflowed: Arc<AtomicBool>,
}

impl StateStore for BoundedStore {
    type Key = ClientKey;

    fn measure_and_replace<T, F, E>(&self, key: &ClientKey, f: F) -> Result<T, E>
    where
        F: Fn(Option<Nanos>) -> Result<(T, Nanos), E>,
    {
        if let Some(state) = self.clients.get(key) {
            return measure_and_replace(&state, f);
        }
        // Checked without a lock: concurrent newcomers may pass the bound by a few.
        if self.clients.len() >= self.max_clients {
            self.overflowed.store(true, Ordering::Relaxed);
            return measure_and_replace(&self.overflow, f);
        }
        let state = self.clients.entry(*key).or_default();
        measure_and_replace(&state, f)
    }
}

/// What governor's own in-memory state does: offer the old value, store the new one if nobody
/// changed it meanwhile, else try again.
fn measure_and_replace<T, F, E>(state: &AtomicU64, f: F) -> Result<T, E>
where
    F: Fn(Option<Nanos>) -> Result<(T, Nanos), E>,
{
    let mut prev = state.load(Ordering::Acquire);
    loop {
        let (result, next) = f(NonZeroU64::new(prev).map(|n| Nanos::new(n.get())))?;
        match state.compare_exchange_weak(prev, next.as_u64(), Ordering::Release, Ordering::Relaxed)
        {
            Ok(_) => return Ok(result),
            Err(actual) => prev = actual,
        }
    }
}

impl ShrinkableKeyedStateStore<ClientKey> for BoundedStore {
    fn retain_recent(&self, drop_below: Nanos) {
        let drop_below = drop_below.as_u64();
        self.clients
            .retain(|_, tat| tat.load(Ordering::Relaxed) > drop_below);
    }

    fn shrink_to_fit(&self) {
        self.clients.shrink_to_fit();
    }

    fn len(&self) -> usize {
        self.clients.len()
    }

    fn is_empty(&self) -> bool {
        self.clients.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    fn client(n: u32) -> ClientKey {
        ClientKey::V4(Ipv4Addr::from_bits(0x0a00_0000 + n))
    }

    /// `burst` tokens that refill at one a minute: none comes back while a test runs.
    fn slow(burst: u32, max_clients: usize) -> PublishRate {
        let quota = Quota::per_minute(NonZeroU32::MIN).allow_burst(NonZeroU32::new(burst).unwrap());
        PublishRate::build(quota, 1, burst, max_clients)
    }

    #[test]
    fn a_burst_then_refusals_with_the_wait() {
        let rate = slow(5, 10);
        for _ in 0..5 {
            assert_eq!(rate.check(client(1)), Ok(()));
        }
        let refused = rate.check(client(1)).unwrap_err();
        assert_eq!((refused.rate, refused.burst), (1, 5));
        assert!(
            refused.wait > Duration::from_secs(50) && refused.wait <= Duration::from_secs(60),
            "{refused:?}"
        );
        // Another client has its own bucket.
        assert_eq!(rate.check(client(2)), Ok(()));
        assert_eq!(rate.tracked(), 2);
        // Buckets still in use are kept by the sweep.
        rate.sweep();
        assert_eq!(rate.tracked(), 2);
    }

    #[test]
    fn refilled_buckets_are_forgotten() {
        let rate = PublishRate::new(1_000_000_000, 1);
        for n in 0..100 {
            assert_eq!(rate.check(client(n)), Ok(()));
        }
        // A nanosecond a token: every bucket is full again by now.
        std::thread::sleep(Duration::from_millis(1));
        rate.sweep();
        assert_eq!(rate.tracked(), 0);
    }

    #[test]
    fn a_flood_of_clients_is_bounded_and_shares_one_bucket() {
        let rate = slow(3, 50);
        for n in 0..50 {
            assert_eq!(rate.check(client(n)), Ok(()));
        }
        assert_eq!(rate.tracked(), 50);
        // The table is full and nothing has refilled: newcomers share one bucket of 3.
        let newcomers: Vec<_> = (50..1000).map(|n| rate.check(client(n)).is_ok()).collect();
        assert_eq!(newcomers.iter().filter(|ok| **ok).count(), 3);
        assert_eq!(rate.tracked(), 50);
        // Tracked clients keep their own buckets meanwhile.
        assert_eq!(rate.check(client(0)), Ok(()));
    }
}
