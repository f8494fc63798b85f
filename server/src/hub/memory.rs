//! The server-wide budget for history, in bytes, shared by every hub.
//!
//! Per-user limits (count and age) bound one user's history, not the sum over users: any number
//! of usernames multiplies it. So every entry is also charged here, and once the total passes
//! the budget the oldest entries across all users and hubs are evicted first. Eviction raises
//! the user's floor like any other, so a client resuming from an evicted id gets a resync.
//!
//! Users with a stream open on this instance keep their history longest: the entries of users
//! without one go first, oldest first, and only when none is left do the oldest entries of
//! watched users go. A clustered v3 instance holds every user's records, most of them for users
//! it does not serve; its own clients are the ones that resume from its history.
//!
//! Eviction is a pass over every user that drops the entries published before a cutoff, and it
//! frees a sixteenth of the budget at a time. Evicting entry by entry, in the order of
//! publication, looked up each entry's user: two cache misses per record for a clustered
//! instance, whose users are mostly absent and far more than fit in cache. A pass reads the
//! users in the order they lie in memory, and only the histories it shortens.

use std::sync::{
    Arc, Mutex, MutexGuard, Weak,
    atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed},
};

use super::Shared;

/// What one history entry costs besides its frame: the entry, the frame's shared header, and a
/// share of its user's map entry when a user has a single message.
pub(super) const ENTRY_OVERHEAD: usize = 256;

/// An eviction frees at least this share of the budget, so that each pass over the users
/// frees many entries...
const FREE_SHARE: usize = 16;
/// ... and at least one entry for this many users, so that the passes cost a few reads of a
/// user per entry evicted even when each user holds only one...
const USERS_PER_ENTRY: usize = 4;
/// ... but never more than this share.
const FREE_SHARE_MAX: usize = 2;

/// A cheap `Clone` handle on the budget.
#[derive(Clone)]
pub struct HistoryMemory {
    inner: Arc<Inner>,
}

struct Inner {
    max: usize,
    used: AtomicUsize,
    /// Serial numbers of entries, rising in the order they are published.
    next_serial: AtomicU64,
    evicted: AtomicU64,
    /// The hubs charged here, for eviction to pass over.
    hubs: Mutex<Vec<Weak<Shared>>>,
    /// One eviction at a time.
    evicting: Mutex<Cutoffs>,
}

/// Where eviction got to, so that the next one starts from there rather than from nothing.
#[derive(Default)]
struct Cutoffs {
    /// Entries up to this serial are gone, but for those of users watched at the time.
    through: u64,
    /// The oldest entries the last pass left.
    oldest: Oldest,
    /// Users the last pass read.
    users: usize,
}

/// The oldest serials a pass left behind.
#[derive(Debug, Clone, Copy)]
pub(super) struct Oldest {
    pub any: u64,
    pub unwatched: u64,
}

impl Default for Oldest {
    fn default() -> Self {
        Self {
            any: u64::MAX,
            unwatched: u64::MAX,
        }
    }
}

/// Entries that left a history, whose charge is to be returned.
#[derive(Debug, Default, Clone, Copy)]
pub(super) struct Freed {
    pub entries: usize,
    pub bytes: usize,
}

impl Freed {
    pub(super) fn add(&mut self, frame_len: Option<usize>) {
        if let Some(len) = frame_len {
            self.entries += 1;
            self.bytes += HistoryMemory::entry_cost(len);
        }
    }
}

/// What one pass over a hub did.
#[derive(Debug, Default)]
pub(super) struct Pass {
    pub evicted: u64,
    pub oldest: Oldest,
    users: usize,
}

impl Pass {
    /// Notes a user's oldest serial as the pass leaves it.
    pub(super) fn left(&mut self, oldest: u64, watched: bool) {
        self.users += 1;
        self.oldest.any = self.oldest.any.min(oldest);
        if !watched {
            self.oldest.unwatched = self.oldest.unwatched.min(oldest);
        }
    }
}

impl std::fmt::Debug for HistoryMemory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HistoryMemory")
            .field("max", &self.inner.max)
            .field("used", &self.used())
            .field("entries", &self.entries())
            .finish()
    }
}

impl HistoryMemory {
    pub fn new(max_bytes: usize) -> Self {
        Self {
            inner: Arc::new(Inner {
                max: max_bytes,
                used: AtomicUsize::new(0),
                next_serial: AtomicU64::new(1),
                evicted: AtomicU64::new(0),
                hubs: Mutex::default(),
                evicting: Mutex::default(),
            }),
        }
    }

    pub fn max(&self) -> usize {
        self.inner.max
    }

    /// Bytes charged now.
    pub fn used(&self) -> usize {
        self.inner.used.load(Relaxed)
    }

    /// Entries evicted because the budget was full.
    pub fn evicted(&self) -> u64 {
        self.inner.evicted.load(Relaxed)
    }

    /// Charges `hub`'s histories here from now on.
    pub(super) fn register(&self, hub: &Arc<Shared>) {
        let mut hubs = lock(&self.inner.hubs);
        hubs.retain(|h| h.strong_count() > 0);
        hubs.push(Arc::downgrade(hub));
    }

    /// The serial for an entry about to join a user's history. Taken under the user's shard
    /// lock, so one user's serials rise in the order of their history.
    pub(super) fn next_serial(&self) -> u64 {
        self.inner.next_serial.fetch_add(1, Relaxed)
    }

    /// The cost of an entry holding `frame_len` bytes.
    pub(super) fn entry_cost(frame_len: usize) -> usize {
        frame_len + ENTRY_OVERHEAD
    }

    /// Charges an entry as it joins a history, under its user's shard lock: a per-user eviction
    /// that releases it can only come after.
    pub(super) fn add(&self, frame_len: usize) {
        self.inner
            .used
            .fetch_add(Self::entry_cost(frame_len), Relaxed);
    }

    /// Returns the charge of entries that left a history, for whatever reason.
    pub(super) fn release(&self, freed: Freed) {
        self.inner.used.fetch_sub(freed.bytes, Relaxed);
    }

    /// Entries charged now: the hubs count theirs for `/metrics`, and only an eviction needs
    /// the sum, so a record pays for one count rather than two.
    fn entries(&self) -> usize {
        lock(&self.inner.hubs)
            .iter()
            .filter_map(Weak::upgrade)
            .map(|hub| hub.history.load(Relaxed))
            .sum()
    }

    /// Evicts the oldest entries if the budget is exceeded. Called without any shard lock
    /// held. A publisher that finds an eviction under way goes on: that eviction runs until it
    /// has made room for what was published meanwhile too.
    pub(super) fn enforce(&self) {
        if self.used() <= self.inner.max {
            return;
        }
        let mut cutoffs = match self.inner.evicting.try_lock() {
            Ok(cutoffs) => cutoffs,
            Err(std::sync::TryLockError::Poisoned(e)) => e.into_inner(),
            Err(std::sync::TryLockError::WouldBlock) => return,
        };
        if self.used() <= self.inner.max {
            return;
        }
        let goal = self.inner.max - self.to_free(cutoffs.users);
        // What the last eviction saw may be stale: "nothing left" is only believed from a pass
        // of this one.
        let mut seen_now = false;
        // Users without a stream first; only if that is not enough, everyone.
        for spare_watched in [true, false] {
            let mut through = if spare_watched { cutoffs.through } else { 0 };
            while self.used() > goal {
                let oldest = match spare_watched {
                    true => cutoffs.oldest.unwatched,
                    false => cutoffs.oldest.any,
                };
                if oldest == u64::MAX && seen_now {
                    break;
                }
                let hubs: Vec<_> = lock(&self.inner.hubs)
                    .iter()
                    .filter_map(Weak::upgrade)
                    .collect();
                let next = self.inner.next_serial.load(Relaxed);
                // From the oldest entry left, as far as the bytes to free take.
                let from = match oldest {
                    u64::MAX => through,
                    oldest => through.max(oldest - 1),
                };
                let cutoff = from.saturating_add(self.span(goal, next, cutoffs.oldest.any));
                let mut pass = Pass::default();
                for shared in hubs {
                    super::Hub { shared }.evict_through(cutoff, spare_watched, &mut pass);
                }
                self.inner.evicted.fetch_add(pass.evicted, Relaxed);
                cutoffs.oldest = pass.oldest;
                cutoffs.users = pass.users;
                seen_now = true;
                through = cutoff;
                if spare_watched {
                    cutoffs.through = cutoff;
                }
                if cutoff >= next {
                    // Past every entry there was when the pass began.
                    break;
                }
            }
        }
    }

    /// How many bytes an eviction frees, given how many users a pass reads.
    fn to_free(&self, users: usize) -> usize {
        let max = self.inner.max;
        let entries = self.entries().max(1);
        let per_users = (users / USERS_PER_ENTRY).saturating_mul(self.used() / entries);
        per_users.clamp(max / FREE_SHARE, max / FREE_SHARE_MAX)
    }

    /// How many serials past the oldest entry an eviction reaches to bring the budget down to
    /// `goal`: the entries it needs at their average cost, over the share of serials since the
    /// oldest entry that still have one (the rest left by per-user limits).
    fn span(&self, goal: usize, next: u64, oldest: u64) -> u64 {
        let used = self.used();
        let entries = self.entries().max(1);
        let needed = (used.saturating_sub(goal)).div_ceil((used / entries).max(1));
        let serials = match oldest {
            u64::MAX => entries as u64,
            oldest => next.saturating_sub(oldest).max(entries as u64),
        };
        let span = needed as u128 * serials as u128 / entries as u128;
        u64::try_from(span).unwrap_or(u64::MAX).max(1)
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}
