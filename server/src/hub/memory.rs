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
//! The order of publication is kept as a queue of small records. A record may outlive its
//! entry (evicted earlier by a per-user limit); such records are charged too, so the queue
//! itself stays within the budget, and popping one frees only its own charge. The periodic
//! sweep drops them from the front ([`HistoryMemory::prune`]), so the queue follows the history
//! window rather than filling the budget over hours.

use std::{
    collections::VecDeque,
    sync::{
        Arc, Mutex, Weak,
        atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed},
    },
};

use super::Shared;

/// What one history entry costs besides its frame: the entry, the frame's shared header, and a
/// share of its user's map entry when a user has a single message.
pub(super) const ENTRY_OVERHEAD: usize = 256;
/// What one record of the publication order costs.
const RECORD_COST: usize = std::mem::size_of::<Record>() + 8;

/// A cheap `Clone` handle on the budget.
#[derive(Clone)]
pub struct HistoryMemory {
    inner: Arc<Inner>,
}

struct Inner {
    max: usize,
    used: AtomicUsize,
    order: Mutex<Order>,
    /// Serial numbers of entries, rising in the order they are published.
    next_serial: AtomicU64,
    evicted: AtomicU64,
}

/// The publication order, in two queues of rising serials.
#[derive(Default)]
struct Order {
    /// Every record, until the budget's eviction reaches it.
    all: VecDeque<Record>,
    /// Records the eviction passed over because their user had a stream open then; evicted
    /// only when `all` is empty.
    spared: VecDeque<Record>,
}

/// Where the entry published `serial`-th lives.
struct Record {
    hub: Weak<Shared>,
    user: Arc<str>,
    serial: u64,
}

impl std::fmt::Debug for HistoryMemory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HistoryMemory")
            .field("max", &self.inner.max)
            .field("used", &self.used())
            .finish()
    }
}

impl HistoryMemory {
    pub fn new(max_bytes: usize) -> Self {
        Self {
            inner: Arc::new(Inner {
                max: max_bytes,
                used: AtomicUsize::new(0),
                order: Mutex::default(),
                next_serial: AtomicU64::new(1),
                evicted: AtomicU64::new(0),
            }),
        }
    }

    pub fn max(&self) -> usize {
        self.inner.max
    }

    /// Bytes charged now: live entries and the records of publication order.
    pub fn used(&self) -> usize {
        self.inner.used.load(Relaxed)
    }

    /// Entries evicted because the budget was full.
    pub fn evicted(&self) -> u64 {
        self.inner.evicted.load(Relaxed)
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

    /// Records that `user`'s entry `serial` in `hub` was published, then evicts the oldest
    /// entries while the budget is exceeded. Called without any shard lock held.
    pub(super) fn record(&self, hub: &Arc<Shared>, user: Arc<str>, serial: u64) {
        let record = Record {
            hub: Arc::downgrade(hub),
            user,
            serial,
        };
        self.inner.order_lock().all.push_back(record);
        self.inner.used.fetch_add(RECORD_COST, Relaxed);
        while self.used() > self.inner.max {
            // Taken out under the queue's lock, evicted under the shard's: never both at once.
            let (oldest, spare_watched) = {
                let mut order = self.inner.order_lock();
                match order.all.pop_front() {
                    Some(record) => (record, true),
                    None => match order.spared.pop_front() {
                        Some(record) => (record, false),
                        None => break,
                    },
                }
            };
            let Some(shared) = oldest.hub.upgrade() else {
                self.inner.used.fetch_sub(RECORD_COST, Relaxed);
                continue;
            };
            let hub = super::Hub { shared };
            match hub.evict_through(&oldest.user, oldest.serial, spare_watched) {
                Some(evicted) => {
                    self.inner.used.fetch_sub(RECORD_COST, Relaxed);
                    self.inner.evicted.fetch_add(evicted, Relaxed);
                }
                None => self.inner.order_lock().spared.push_back(oldest),
            }
        }
    }

    /// Drops records at the front of the publication order whose entries have already left
    /// their history (by age, length, or a lane numbered anew), and gives back the queue's
    /// spare capacity. Stops at the first record whose entry may still be there.
    pub fn prune(&self) {
        fn all(o: &mut Order) -> &mut VecDeque<Record> {
            &mut o.all
        }
        fn spared(o: &mut Order) -> &mut VecDeque<Record> {
            &mut o.spared
        }
        self.prune_queue(all);
        self.prune_queue(spared);
    }

    fn prune_queue(&self, queue: fn(&mut Order) -> &mut VecDeque<Record>) {
        loop {
            let (hub, user, serial) = {
                let mut order = self.inner.order_lock();
                let Some(front) = queue(&mut order).front() else {
                    break;
                };
                (front.hub.clone(), front.user.clone(), front.serial)
            };
            // Checked without the queue's lock: a shard lock is never taken under it.
            let live = hub
                .upgrade()
                .is_some_and(|shared| super::Hub { shared }.may_hold(&user, serial));
            if live {
                break;
            }
            let mut order = self.inner.order_lock();
            let records = queue(&mut order);
            if records.front().is_some_and(|f| f.serial == serial) {
                records.pop_front();
                self.inner.used.fetch_sub(RECORD_COST, Relaxed);
            }
        }
        let mut order = self.inner.order_lock();
        let records = queue(&mut order);
        let len = records.len();
        if records.capacity() > 4 * len + 1024 {
            records.shrink_to(2 * len);
        }
    }

    /// Returns the charge of entries that left a history, for whatever reason.
    pub(super) fn release(&self, bytes: usize) {
        self.inner.used.fetch_sub(bytes, Relaxed);
    }
}

impl Inner {
    fn order_lock(&self) -> std::sync::MutexGuard<'_, Order> {
        self.order.lock().unwrap_or_else(|e| e.into_inner())
    }
}
