//! The per-user registry: who is listening, what they were sent, and how to resume.
//!
//! A [`Hub`] is one API version's delivery core (v2 and v3 each have one). It is a cheap `Clone`
//! handle; its locks never leave this module and are never held across an `.await`. Users are
//! spread over shards, so publishes to different users rarely meet on a lock, and a publish
//! never waits for a subscriber: each stream has its own bounded [`StreamQueue`].

mod backfill;
mod lanes;
mod memory;
mod position;
mod queue;

pub use backfill::{BackfillBudget, Backfilled, Gap, GapHandle, Unfilled};
pub use memory::HistoryMemory;
pub use position::{LastSeen, Position};
pub use queue::{Closed, Next, StreamQueue, now_ms};

use bytes::{Bytes, BytesMut};
use std::{
    collections::{HashMap, VecDeque},
    hash::BuildHasher,
    sync::{
        Arc, Mutex, MutexGuard,
        atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering::Relaxed},
    },
    time::{Duration, Instant},
};
use tokio_util::sync::CancellationToken;

use crate::frame;

const SHARDS: usize = 64;

/// Longest a stream resuming from an id both numberings of a lane may have issued waits for
/// this process to read that far (see [`Held`]). Instances reading one topic are normally a
/// fetch or two apart; past this, the id is taken for the earlier numbering's. Held streams are
/// decided as the lane advances, and at least every [`HELD_CHECK`].
pub const RENUMBERED_HOLD: Duration = Duration::from_secs(2);

/// How often held streams are looked at when no message moves their lane.
pub const HELD_CHECK: Duration = Duration::from_millis(250);

#[derive(Debug, Clone)]
pub struct HubConfig {
    /// Name in logs and metrics, e.g. "v2".
    pub name: &'static str,
    pub history_len: usize,
    pub history_ttl: Duration,
    pub queue_len: usize,
    pub max_streams_per_user: usize,
    pub numbering: Numbering,
    /// A resume the history can't serve waits for the source to read back what it missed
    /// ([`Subscription::gap`]) rather than getting a resync at once. Only for
    /// [`Numbering::Source`].
    pub backfill: bool,
}

/// Where the positions of a hub's messages come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Numbering {
    /// The hub numbers messages itself (v2), on a lane named after the process's start time, so
    /// an id on any other lane comes from an earlier process.
    Own,
    /// The source numbers them (v3: Kafka partition and offset). A lane is known once the
    /// source says where this process starts reading it ([`Hub::open_lane`]); a resume on a
    /// lane not known yet is decided when it opens.
    Source,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SubscribeError {
    #[error("too many open streams for this user (limit {0})")]
    UserLimit(usize),
    #[error("server is shutting down")]
    ShuttingDown,
}

/// Result of a publish.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Delivery {
    pub position: Position,
    /// Streams the message was queued to.
    pub delivered: usize,
    /// False when the hub already had this position for the user (a Kafka redelivery).
    pub fresh: bool,
}

#[derive(Clone)]
pub struct Hub {
    shared: Arc<Shared>,
}

struct Shared {
    config: HubConfig,
    shards: Box<[Mutex<Shard>]>,
    /// Picks a user's shard. The shard's map has its own, DoS-resistant hasher: all this one
    /// decides is which lock a user shares.
    hasher: foldhash::fast::RandomState,
    /// Lane of the ids this hub assigns itself (v2): the process start time in milliseconds, so
    /// ids from an earlier process are recognised as such.
    local_lane: u64,
    next_seq: AtomicU64,
    /// Source lanes: where this process started reading each, and how far it got. A user entry
    /// created later can't vouch for anything up to the high water, so resuming from before it
    /// must resync; nor can anyone vouch for what came before a lane's start.
    lanes: lanes::Lanes,
    next_stream_id: AtomicU64,
    closing: AtomicBool,
    slow_closed: AtomicU64,
    published: AtomicU64,
    /// Frames queued to streams.
    delivered: AtomicU64,
    /// The server-wide history budget, shared with the other hubs.
    memory: HistoryMemory,
    /// Open streams and history entries, kept as they change so that `/metrics` reads them
    /// without walking every user: a scrape would otherwise cost time in the users held. The
    /// budget's eviction sums the hubs' entries.
    streams: AtomicUsize,
    history: AtomicUsize,
    /// Users with a held stream (see [`Held`]), decided as soon as they can be rather than by
    /// the sweep. Added to and removed from under the user's shard lock.
    held: Mutex<Vec<Name>>,
    held_count: AtomicUsize,
    /// Woken when a source lane opens: gaps on it can then be bounded.
    lane_opened: tokio::sync::Notify,
}

type Shard = HashMap<Name, User>;

/// A user's name as the registry keeps it. Names of up to 23 bytes are held inline, so finding
/// a user compares the key without following a pointer: a clustered instance holds far more
/// users than fit in cache, and that pointer was one more cache miss per record.
type Name = smol_str::SmolStr;

/// A user's floors: one lane in most hubs (v2, or a topic of one partition), kept inline so
/// a user entry costs no allocation for it.
type Floor = smallvec::SmallVec<[Position; 1]>;

impl Shared {
    /// Charges an entry joining a history.
    fn charge(&self, frame_len: usize) {
        self.memory.add(frame_len);
        self.history.fetch_add(1, Relaxed);
    }

    /// Returns the charge of entries that left a history.
    fn release(&self, freed: memory::Freed) {
        if freed.entries > 0 {
            self.memory.release(freed);
            self.history.fetch_sub(freed.entries, Relaxed);
        }
    }

    /// Counts streams closed because they fell behind.
    fn closed_slow(&self, streams: u64) {
        if streams > 0 {
            self.slow_closed.fetch_add(streams, Relaxed);
            self.streams.fetch_sub(streams as usize, Relaxed);
        }
    }

    fn held_lock(&self) -> MutexGuard<'_, Vec<Name>> {
        self.held.lock().unwrap_or_else(|e| e.into_inner())
    }
}

struct User {
    streams: Vec<Subscriber>,
    history: VecDeque<Entry>,
    /// Serial of the history's oldest entry (`u64::MAX` if none): the budget's eviction reads
    /// it for every user, and it lies beside the rest of the user where the history does not.
    oldest: u64,
    /// Per lane, the highest seq this entry can no longer vouch for (evicted or older than it).
    floor: Floor,
    /// The highest serial evicted from `history`: a replay whose cursor is below it missed
    /// something.
    evicted_serial: u64,
}

struct Subscriber {
    id: u64,
    queue: Arc<StreamQueue>,
    /// Live messages at or before this position were already seen by the client (it resumed
    /// from an instance that was ahead of this one).
    skip_through: Option<Position>,
    /// Resumed from this position on a source lane this process has not opened yet: whether
    /// it missed anything is decided when the lane opens.
    pending: Option<Position>,
    /// Still sending what it missed, read from the history as the socket drains; live
    /// messages reach it through the history meanwhile, not its queue.
    /// Boxed: most streams never replay, and every open stream carries this field.
    replay: Option<Box<Replay>>,
    /// Resumed from an id its lane's earlier numbering issued and the new one has not reached
    /// here yet: nothing is sent to it until that is decided. Boxed: rare.
    held: Option<Box<Held>>,
}

/// A resume whose id either numbering of a source lane may have issued: the earlier one (a
/// client that has seen nothing of the new one, which then missed all of it) or the new one on
/// another instance that is ahead of this one (a client that has the new messages up to it).
/// Taking every such id for the earlier numbering's sent the second kind of client a resync
/// and the new messages it already had again. Which it is shows once this process reads that
/// far: a new id names this very user's message there. Until then the stream waits, its live
/// messages kept in the history. Left ambiguous: an old id whose user also gets the new
/// numbering's record at that same offset within the hold is taken for a new one.
#[derive(Debug, Clone, Copy)]
struct Held {
    last: Position,
    since: Instant,
}

/// Where a stream's replay has got to.
#[derive(Debug)]
struct Replay {
    /// Serial of the last entry sent (or skipped as already seen).
    after: u64,
    /// Position of the last message the client has, for a resync notice.
    last: Option<Position>,
    /// A lane opened past where the client resumed: the notice goes ahead of the next batch.
    missed: Option<Position>,
    /// What the history lacks, read back from the source; sent before the history's entries.
    backfill: Option<backfill::Backfill>,
}

struct Entry {
    /// Order of publication across the server ([`HistoryMemory`]).
    serial: u64,
    position: Position,
    frame: Bytes,
    at: Instant,
    /// Streams it was queued to when published.
    delivered: usize,
}

/// An open stream's end of the hub. Dropping it removes the stream from the registry.
pub struct Subscription {
    pub queue: Arc<StreamQueue>,
    /// Notices to send first: a resync when the client missed something.
    pub notices: Vec<Bytes>,
    /// Missed messages are still to be read with [`Subscription::replay_next`].
    replaying: bool,
    /// The history lacks what the client missed after this id: it is being read back from
    /// the source, and the replay waits for it.
    gap: Option<Position>,
    hub: Hub,
    user: Name,
    id: u64,
}

impl Subscription {
    /// The next missed messages, at least one and about `max_bytes` at most, read from the
    /// history only as the stream asks for them. `None` once the stream has caught up; its
    /// messages then come through [`Subscription::queue`].
    pub fn replay_next(&mut self, max_bytes: usize) -> Option<Bytes> {
        if !self.replaying || self.gap.is_some() {
            return None;
        }
        let batch = self.hub.replay_next(&self.user, self.id, max_bytes);
        self.replaying = batch.is_some();
        batch
    }

    /// Whether missed messages are still to be sent.
    pub fn replaying(&self) -> bool {
        self.replaying
    }

    /// When the history lacks what the client missed: the handle to read it back with. The
    /// replay waits until it is filled ([`GapHandle::fill`]) and [`Subscription::gap_filled`]
    /// is called.
    pub fn gap(&self) -> Option<GapHandle> {
        self.gap.map(|last| GapHandle {
            hub: self.hub.clone(),
            user: self.user.clone(),
            id: self.id,
            last,
        })
    }

    /// The gap was filled (or given up): the replay goes on.
    pub fn gap_filled(&mut self) {
        self.gap = None;
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        self.hub.unsubscribe(&self.user, self.id);
    }
}

impl Hub {
    /// A hub whose history is charged to `memory`, which other hubs may share.
    pub fn new(config: HubConfig, memory: HistoryMemory) -> Self {
        let local_lane = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        let hub = Self {
            shared: Arc::new(Shared {
                config,
                shards: (0..SHARDS).map(|_| Mutex::default()).collect(),
                hasher: foldhash::fast::RandomState::default(),
                local_lane,
                next_seq: AtomicU64::new(1),
                lanes: lanes::Lanes::default(),
                next_stream_id: AtomicU64::new(1),
                closing: AtomicBool::new(false),
                slow_closed: AtomicU64::new(0),
                published: AtomicU64::new(0),
                delivered: AtomicU64::new(0),
                memory,
                streams: AtomicUsize::new(0),
                history: AtomicUsize::new(0),
                held: Mutex::default(),
                held_count: AtomicUsize::new(0),
                lane_opened: tokio::sync::Notify::new(),
            }),
        };
        hub.shared.memory.register(&hub.shared);
        hub
    }

    pub fn name(&self) -> &'static str {
        self.shared.config.name
    }

    fn shard(&self, user: &str) -> MutexGuard<'_, Shard> {
        let i = self.shared.hasher.hash_one(user) as usize % SHARDS;
        self.shared.shards[i]
            .lock()
            .unwrap_or_else(|e| e.into_inner())
    }

    /// A user entry created now can't vouch for anything published before it existed, so its
    /// floors start at the high water.
    fn new_user(&self) -> User {
        User {
            streams: Vec::new(),
            history: VecDeque::new(),
            oldest: u64::MAX,
            floor: self.high_water(),
            evicted_serial: 0,
        }
    }

    /// Publishes a message under the next id of this hub's own numbering (v2).
    pub fn publish(&self, user: &str, text: &str) -> Delivery {
        self.deliver(user, text, None, now_ms())
    }

    /// Publishes a message at a position given by its source (v3: Kafka partition and offset).
    /// A position the user already has is dropped, so redeliveries never reach a stream twice.
    /// The message is live whatever its producer's clock said: which old records are skipped
    /// is decided by where the source is read from, not here.
    pub fn publish_at(&self, user: &str, text: &str, position: Position) -> Delivery {
        self.publish_stamped(user, text, position, now_ms())
    }

    /// [`Hub::publish_at`] for a message its source stamped `sent_ms` (ms since the Unix
    /// epoch; a Kafka record's timestamp), from which its delay to the socket is measured.
    pub fn publish_stamped(
        &self,
        user: &str,
        text: &str,
        position: Position,
        sent_ms: u64,
    ) -> Delivery {
        if self.shared.lanes.start(position.lane).is_none() {
            // The source opens each lane before its first message; else it opens here.
            self.open_lane(position.lane, position.seq);
        }
        self.deliver(user, text, Some(position), sent_ms)
    }

    /// This process reads source lane `lane` from `start` on (v3: a Kafka partition, from the
    /// offset its consumer starts at). Resumes waiting for the lane are decided now: a client
    /// whose last id is before `start` missed records this process never saw, and gets a
    /// resync.
    pub fn open_lane(&self, lane: u64, start: u64) {
        if self.shared.lanes.open(lane, start) == lanes::Opened::Known {
            return;
        }
        self.shared.lane_opened.notify_waiters();
        for shard in self.shared.shards.iter() {
            let mut shard = shard.lock().unwrap_or_else(|e| e.into_inner());
            for user in shard.values_mut() {
                for sub in &mut user.streams {
                    let Some(last) = sub.pending.take_if(|p| p.lane == lane) else {
                        continue;
                    };
                    if last.seq.saturating_add(1) < start {
                        match &mut sub.replay {
                            Some(replay) => replay.missed = Some(last),
                            None => {
                                sub.queue.push(missed(last), now_ms());
                            }
                        }
                    }
                }
            }
        }
    }

    fn deliver(&self, user: &str, text: &str, source: Option<Position>, stamp: u64) -> Delivery {
        let now = Instant::now();
        let mut shard = self.shard(user);
        let entry = match shard.get_mut(user) {
            Some(entry) => entry,
            None => shard.entry(Name::new(user)).or_insert(self.new_user()),
        };
        let position = match source {
            Some(position) => {
                if entry
                    .last_seq(position.lane)
                    .is_some_and(|seen| seen >= position.seq)
                {
                    return Delivery {
                        position,
                        delivered: 0,
                        fresh: false,
                    };
                }
                // After the redelivery check: a user entry created for this very message
                // takes its floor from the high water.
                self.shared.lanes.advance(position);
                position
            }
            // Assigned under the shard lock, so one user's ids rise in the order of delivery;
            // a fresh id is never a redelivery.
            None => Position::new(
                self.shared.local_lane,
                self.shared.next_seq.fetch_add(1, Relaxed),
            ),
        };
        let frame = frame::message(position.id().as_str(), text);
        let mut delivered = 0;
        let mut slow = 0;
        entry.streams.retain(|sub| {
            if sub
                .skip_through
                .is_some_and(|s| s.lane == position.lane && position.seq <= s.seq)
            {
                return true;
            }
            if sub.replay.is_some() || sub.held.is_some() {
                // It reads this from the history once it gets there (or once it is decided
                // what it missed).
                delivered += 1;
                return true;
            }
            if sub.queue.push(frame.clone(), stamp) {
                delivered += 1;
                true
            } else {
                slow += 1;
                false
            }
        });
        let memory = &self.shared.memory;
        let serial = memory.next_serial();
        self.shared.charge(frame.len());
        if entry.history.capacity() == 0 {
            // Most users of a clustered instance hold one or two messages: room for one, not
            // the four a first push reserves.
            entry.history.reserve_exact(1);
        }
        entry.history.push_back(Entry {
            serial,
            position,
            frame,
            at: now,
            delivered,
        });
        entry.oldest = entry.oldest.min(serial);
        slow += entry.settle_held(&self.shared.lanes, now);
        // Only the length: the age is the sweep's (and a subscribe's) to check, which saves
        // reading the oldest entry, often a cache miss, for every record.
        entry.trim(&self.shared);
        drop(shard);
        memory.enforce();
        if source.is_some() {
            self.settle_held_at(now);
        }
        self.shared.published.fetch_add(1, Relaxed);
        if delivered > 0 {
            self.shared.delivered.fetch_add(delivered as u64, Relaxed);
        }
        if slow > 0 {
            self.shared.closed_slow(slow);
            tracing::info!(
                hub = self.name(),
                user,
                streams = slow,
                "closed streams that fell behind"
            );
        }
        Delivery {
            position,
            delivered,
            fresh: true,
        }
    }

    /// Registers a stream for `user`, with what it missed since `last` queued ahead of it.
    ///
    /// Registration and the history snapshot happen under one lock, so nothing published
    /// meanwhile is missed or sent twice.
    pub fn subscribe(
        &self,
        user: &str,
        last: &LastSeen,
        disconnect: Option<CancellationToken>,
    ) -> Result<Subscription, SubscribeError> {
        let config = &self.shared.config;
        let now = Instant::now();
        let mut shard = self.shard(user);
        // Under the shard's lock: a shutdown's walk over the shards then sees this stream, or
        // this sees the shutdown.
        if self.shared.closing.load(Relaxed) {
            return Err(SubscribeError::ShuttingDown);
        }
        let key = Name::new(user);
        let entry = match shard.get_mut(user) {
            Some(entry) => entry,
            None => shard.entry(key.clone()).or_insert(self.new_user()),
        };
        if entry.streams.len() >= config.max_streams_per_user {
            let limit = config.max_streams_per_user;
            if entry.streams.is_empty() && entry.history.is_empty() {
                shard.remove(user);
            }
            return Err(SubscribeError::UserLimit(limit));
        }
        entry.evict(&self.shared, now);
        // Replays start after everything already evicted.
        let from_start = Replay {
            after: entry.evicted_serial,
            last: None,
            missed: None,
            backfill: None,
        };
        let mut held = None;
        let (notices, replay, skip_through, pending) = match last {
            LastSeen::Nothing => (Vec::new(), None, None, None),
            LastSeen::Unknown(raw) => {
                let notice = resync(raw, "the last event id is not one this server issues");
                (vec![notice], Some(Box::new(from_start)), None, None)
            }
            LastSeen::PastEnd(p) => {
                let notice = resync(&p.to_string(), PAST_END);
                (vec![notice], Some(Box::new(from_start)), None, None)
            }
            // The source numbered its lane from scratch since, and has not reached this id
            // again here: an id of the old numbering (the client missed all of the new) or of
            // the new one on an instance ahead of this one. Decided once this process reads
            // that far, or taken for the old numbering's after a short wait.
            LastSeen::At(p) if self.shared.lanes.issued_before_renumbering(*p) => {
                held = Some(Box::new(Held {
                    last: *p,
                    since: now,
                }));
                (Vec::new(), None, None, None)
            }
            LastSeen::At(p) => {
                let (notices, after, pending) = self.replay_after(entry, *p);
                // What the history lacks is read back from the source, where it can be.
                let gap = config.backfill && (pending || !notices.is_empty());
                let replay = Replay {
                    after: after.unwrap_or(from_start.after),
                    last: Some(*p),
                    missed: None,
                    backfill: gap.then_some(backfill::Backfill::Awaiting),
                };
                match gap {
                    true => (Vec::new(), Some(Box::new(replay)), Some(*p), None),
                    false => (
                        notices,
                        Some(Box::new(replay)),
                        Some(*p),
                        pending.then_some(*p),
                    ),
                }
            }
        };
        let replaying = replay.is_some();
        let gap = replay
            .as_ref()
            .filter(|r| r.backfill.is_some())
            .and_then(|r| r.last);
        if held.is_some() {
            let mut registry = self.shared.held_lock();
            if !registry.contains(&key) {
                registry.push(key.clone());
                self.shared.held_count.store(registry.len(), Relaxed);
            }
        }
        let id = self.shared.next_stream_id.fetch_add(1, Relaxed);
        let queue = Arc::new(StreamQueue::new(config.queue_len, disconnect));
        self.shared.streams.fetch_add(1, Relaxed);
        entry.streams.push(Subscriber {
            id,
            queue: queue.clone(),
            skip_through,
            pending,
            replay,
            held,
        });
        drop(shard);
        Ok(Subscription {
            queue,
            notices,
            replaying,
            gap,
            hub: self.clone(),
            user: key,
            id,
        })
    }

    /// The next batch of stream `id`'s replay; `None` once it has caught up, from which point
    /// live messages are queued to it. Both happen under the user's lock, so none is missed
    /// or sent twice.
    fn replay_next(&self, user: &str, id: u64, max_bytes: usize) -> Option<Bytes> {
        let mut shard = self.shard(user);
        let entry = shard.get_mut(user)?;
        let User {
            streams,
            history,
            evicted_serial,
            ..
        } = entry;
        let sub = streams.iter_mut().find(|s| s.id == id)?;
        let replay = sub.replay.as_mut()?;
        let mut batch = BytesMut::new();
        if let Some(last) = replay.missed.take() {
            batch.extend_from_slice(&missed(last));
        }
        match &mut replay.backfill {
            Some(backfill::Backfill::Ready(read)) => {
                if !read.drain_into(&mut batch, max_bytes) {
                    return Some(batch.freeze());
                }
                replay.backfill = None;
            }
            // Not called before the gap is filled ([`Subscription::gap`]).
            Some(_) => return Some(batch.freeze()),
            None => {}
        }
        if *evicted_serial > replay.after {
            // What it was about to get was evicted meanwhile.
            if let Some(last) = replay.last {
                batch.extend_from_slice(&missed(last));
            }
            replay.after = *evicted_serial;
        }
        let start = history.partition_point(|e| e.serial <= replay.after);
        for e in history.range(start..) {
            if batch.len() >= max_bytes {
                break;
            }
            replay.after = e.serial;
            if sub
                .skip_through
                .is_some_and(|s| s.lane == e.position.lane && e.position.seq <= s.seq)
            {
                continue;
            }
            replay.last = Some(e.position);
            batch.extend_from_slice(&e.frame);
        }
        if history.back().is_none_or(|e| e.serial <= replay.after) {
            sub.replay = None;
        }
        if batch.is_empty() && sub.replay.is_none() {
            return None;
        }
        Some(batch.freeze())
    }

    /// Where stream `id`'s gap stands. Once its lane is read here, the gap runs from the
    /// client's id to where the user's history can vouch for the lane: past its floor (what
    /// was evicted, or published before the user's entry existed) and past where this process
    /// started reading. From then on the replay owes nothing for what the history lost before,
    /// as the read-back covers it.
    fn gap_state(&self, user: &str, id: u64) -> backfill::GapState {
        use backfill::{Backfill, GapState};
        let mut shard = self.shard(user);
        let Some(entry) = shard.get_mut(user) else {
            return GapState::Done;
        };
        let Some(sub) = entry.streams.iter_mut().find(|s| s.id == id) else {
            return GapState::Done;
        };
        let Some(replay) = sub.replay.as_mut() else {
            return GapState::Done;
        };
        let Some(last) = replay.last else {
            return GapState::Done;
        };
        match replay.backfill {
            Some(Backfill::Reading(gap)) => return GapState::Open(gap),
            Some(Backfill::Awaiting) => {}
            _ => return GapState::Done,
        }
        let Some(start) = self.shared.lanes.start(last.lane) else {
            return GapState::Waiting;
        };
        let floor = entry
            .floor
            .iter()
            .find(|f| f.lane == last.lane)
            .map(|f| f.seq);
        let until = floor
            .into_iter()
            .chain(start.checked_sub(1))
            .max()
            .unwrap_or(0)
            .max(last.seq);
        let gap = Gap {
            lane: last.lane,
            after: last.seq,
            until,
        };
        replay.after = replay.after.max(entry.evicted_serial);
        replay.backfill = Some(Backfill::Reading(gap));
        GapState::Open(gap)
    }

    /// Puts what was read back for stream `id`'s gap (or a resync notice) ahead of its
    /// history replay. The lane's positions up to the gap's end are not sent again.
    fn fill_gap(&self, user: &str, id: u64, result: Result<Backfilled, Unfilled>) {
        use backfill::Backfill;
        let mut shard = self.shard(user);
        let Some(entry) = shard.get_mut(user) else {
            return;
        };
        let Some(sub) = entry.streams.iter_mut().find(|s| s.id == id) else {
            return;
        };
        let Some(replay) = sub.replay.as_mut() else {
            return;
        };
        let gap = match replay.backfill {
            Some(Backfill::Reading(gap)) => Some(gap),
            Some(Backfill::Awaiting) => None,
            _ => return,
        };
        let read = match (result, gap) {
            (Ok(read), Some(gap)) => {
                sub.skip_through = Some(Position::new(gap.lane, gap.until));
                if let Some(last) = read.last() {
                    replay.last = Some(last);
                }
                read
            }
            (result, _) => {
                let why = result.err().unwrap_or(Unfilled::Timeout);
                let last = replay.last.map(|p| p.to_string()).unwrap_or_default();
                Backfilled::notice(resync(&last, why.reason()))
            }
        };
        replay.backfill = Some(Backfill::Ready(read));
    }

    /// Evicts every entry published at or before `cutoff`, to keep history within its memory
    /// budget; with `spare_watched`, not those of users with a stream open here. One pass over
    /// the users in the order they lie in memory: only the histories it shortens are read.
    fn evict_through(&self, cutoff: u64, spare_watched: bool, pass: &mut memory::Pass) {
        for shard in self.shared.shards.iter() {
            let mut shard = shard.lock().unwrap_or_else(|e| e.into_inner());
            // Charges are returned once per shard rather than with two atomics per entry.
            let mut freed = memory::Freed::default();
            shard.retain(|_, user| {
                let watched = !user.streams.is_empty();
                if user.oldest <= cutoff && !(spare_watched && watched) {
                    while user.oldest <= cutoff {
                        freed.add(user.pop_oldest());
                    }
                    if user.history.is_empty() {
                        user.history = VecDeque::new();
                    }
                }
                pass.left(user.oldest, watched);
                watched || !user.history.is_empty()
            });
            pass.evicted += freed.entries as u64;
            self.shared.release(freed);
        }
    }

    /// What a client that saw `last` missed: a resync notice if anything is gone, the serial
    /// its replay starts after when `last` is in the history (else everything not already
    /// seen is replayed), and whether that can only be decided once `last`'s lane opens.
    fn replay_after(&self, user: &User, last: Position) -> (Vec<Bytes>, Option<u64>, bool) {
        // Whatever the user's history holds, this process can't vouch for what came after an
        // id from an earlier process (our own numbering), or after an id from before where it
        // started reading the lane (the source's).
        let (unvouched, pending) = match self.shared.config.numbering {
            Numbering::Own => (last.lane != self.shared.local_lane, false),
            Numbering::Source => match self.shared.lanes.start(last.lane) {
                Some(start) => (last.seq.saturating_add(1) < start, false),
                None => (false, true),
            },
        };
        if let Some(e) = user
            .history
            .iter()
            .find(|e| e.position == last)
            .filter(|_| !unvouched)
        {
            return (Vec::new(), Some(e.serial), false);
        }
        let evicted = user
            .floor
            .iter()
            .find(|f| f.lane == last.lane)
            .is_some_and(|floor| last.seq < floor.seq);
        let mut notices = Vec::new();
        if evicted || unvouched {
            notices.push(missed(last));
        }
        (notices, None, pending)
    }

    fn unsubscribe(&self, user: &str, id: u64) {
        let now = Instant::now();
        let mut shard = self.shard(user);
        if let Some(entry) = shard.get_mut(user) {
            if let Some(i) = entry.streams.iter().position(|s| s.id == id) {
                entry.streams.swap_remove(i);
                self.shared.streams.fetch_sub(1, Relaxed);
            }
            if entry.streams.is_empty() {
                entry.streams = Vec::new();
                entry.evict(&self.shared, now);
                if entry.history.is_empty() {
                    shard.remove(user);
                }
            }
        }
    }

    /// Decides the held streams that can be decided now (see [`Held`]): their lane passed their
    /// id, or they waited [`RENUMBERED_HOLD`]. Cheap when there are none.
    pub fn settle_held(&self) {
        self.settle_held_at(Instant::now());
    }

    fn settle_held_at(&self, now: Instant) {
        if self.shared.held_count.load(Relaxed) == 0 {
            return;
        }
        let users = self.shared.held_lock().clone();
        for user in users {
            let mut shard = self.shard(&user);
            let mut slow = 0;
            let done = match shard.get_mut(&*user) {
                Some(entry) => {
                    slow = entry.settle_held(&self.shared.lanes, now);
                    entry.streams.iter().all(|s| s.held.is_none())
                }
                None => true,
            };
            if done {
                let mut registry = self.shared.held_lock();
                registry.retain(|u| *u != user);
                self.shared.held_count.store(registry.len(), Relaxed);
            }
            drop(shard);
            if slow > 0 {
                self.shared.closed_slow(slow);
            }
        }
    }

    /// Drops expired history and the users left with neither streams nor history.
    pub fn sweep(&self) {
        self.sweep_at(Instant::now());
    }

    fn sweep_at(&self, now: Instant) {
        for shard in self.shared.shards.iter() {
            let mut shard = shard.lock().unwrap_or_else(|e| e.into_inner());
            let mut slow = 0;
            shard.retain(|_, user| {
                slow += user.settle_held(&self.shared.lanes, now);
                user.evict(&self.shared, now);
                !user.streams.is_empty() || !user.history.is_empty()
            });
            if slow > 0 {
                self.shared.closed_slow(slow);
            }
            if shard.capacity() > 4 * shard.len() + 64 {
                shard.shrink_to_fit();
            }
        }
    }

    /// How many streams the message at `position` was queued to, once it has been published.
    pub fn delivered_count(&self, user: &str, position: Position) -> Option<usize> {
        self.with_entry(user, position, |e| e.delivered)
    }

    /// Whether `user`'s history holds `position`: `Some(true)` with this very text (a
    /// redelivery), `Some(false)` with another text (the source numbers anew), `None` if unknown.
    pub fn knows(&self, user: &str, position: Position, text: &str) -> Option<bool> {
        self.with_entry(user, position, |e| {
            e.frame == frame::message(&position.to_string(), text)
        })
    }

    /// Applies `f` to the history entry of `user` at `position`, if it holds one.
    fn with_entry<T>(
        &self,
        user: &str,
        position: Position,
        f: impl FnOnce(&Entry) -> T,
    ) -> Option<T> {
        let shard = self.shard(user);
        let entry = shard.get(user)?;
        entry
            .history
            .iter()
            .rev()
            .find(|e| e.position == position)
            .map(f)
    }

    /// Forgets everything about `lane`: its source started numbering again (a Kafka topic that
    /// was deleted and created anew), so old positions on it mean nothing now. The lane opens
    /// again where the source is read from next.
    pub fn reset_lane(&self, lane: u64) {
        self.shared.lanes.forget(lane);
        for shard in self.shared.shards.iter() {
            let mut shard = shard.lock().unwrap_or_else(|e| e.into_inner());
            let mut freed = memory::Freed::default();
            shard.retain(|_, user| {
                user.history.retain(|e| {
                    let keep = e.position.lane != lane;
                    if !keep {
                        freed.add(Some(e.frame.len()));
                    }
                    keep
                });
                user.oldest = user.history.front().map_or(u64::MAX, |e| e.serial);
                user.floor.retain(|f| f.lane != lane);
                for sub in &mut user.streams {
                    if sub.skip_through.is_some_and(|s| s.lane == lane) {
                        sub.skip_through = None;
                    }
                    if sub.pending.is_some_and(|p| p.lane == lane) {
                        sub.pending = None;
                    }
                    // A read-back of the old numbering's positions would read the new one's.
                    if let Some(replay) = &mut sub.replay
                        && replay.last.is_some_and(|p| p.lane == lane)
                        && matches!(
                            replay.backfill,
                            Some(backfill::Backfill::Awaiting | backfill::Backfill::Reading(_))
                        )
                    {
                        let last = replay.last.map(|p| p.to_string()).unwrap_or_default();
                        let notice = resync(&last, RENUMBERED);
                        replay.backfill =
                            Some(backfill::Backfill::Ready(Backfilled::notice(notice)));
                    }
                }
                !user.streams.is_empty() || !user.history.is_empty()
            });
            self.shared.release(freed);
        }
    }

    /// Ends every stream cleanly and refuses new ones.
    pub fn close_all(&self) {
        for queue in self.stop_accepting() {
            queue.close(Closed::Shutdown);
        }
    }

    /// Refuses new streams and gives the queues of the open ones, to be closed (with
    /// [`Closed::Shutdown`]) at the caller's pace.
    pub fn stop_accepting(&self) -> Vec<Arc<StreamQueue>> {
        self.shared.closing.store(true, Relaxed);
        let mut queues = Vec::new();
        for shard in self.shared.shards.iter() {
            let shard = shard.lock().unwrap_or_else(|e| e.into_inner());
            for user in shard.values() {
                queues.extend(user.streams.iter().map(|sub| sub.queue.clone()));
            }
        }
        queues
    }

    pub fn stats(&self) -> HubStats {
        let users = self
            .shared
            .shards
            .iter()
            .map(|shard| shard.lock().unwrap_or_else(|e| e.into_inner()).len())
            .sum();
        HubStats {
            users,
            streams: self.shared.streams.load(Relaxed),
            history: self.shared.history.load(Relaxed),
            published: self.shared.published.load(Relaxed),
            delivered: self.shared.delivered.load(Relaxed),
            slow_closed: self.shared.slow_closed.load(Relaxed),
        }
    }

    /// The streams and history entries counted by walking every user, to check the counters
    /// [`Hub::stats`] reads.
    #[cfg(test)]
    fn walked(&self) -> (usize, usize) {
        let (mut streams, mut history) = (0, 0);
        for shard in self.shared.shards.iter() {
            for user in shard.lock().unwrap().values() {
                streams += user.streams.len();
                history += user.history.len();
            }
        }
        (streams, history)
    }

    /// One past the highest position this process has read on source lane `lane`, if it
    /// reads it.
    pub fn read_end(&self, lane: u64) -> Option<u64> {
        self.shared.lanes.end(lane)
    }

    fn high_water(&self) -> Floor {
        match self.shared.config.numbering {
            Numbering::Own => {
                // The last id handed out is the high water.
                let last = self.shared.next_seq.load(Relaxed) - 1;
                (last > 0)
                    .then_some(Position::new(self.shared.local_lane, last))
                    .into_iter()
                    .collect()
            }
            Numbering::Source => self.shared.lanes.high_water(),
        }
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HubStats {
    pub users: usize,
    pub streams: usize,
    pub history: usize,
    pub published: u64,
    /// Frames queued to streams.
    pub delivered: u64,
    pub slow_closed: u64,
}

impl User {
    /// Decides the held streams (see [`Held`]) that can be decided now: those whose lane this
    /// process has read past their id, and those that waited [`RENUMBERED_HOLD`]. A stream
    /// resumed from the new numbering gets what came after its id; one from the old
    /// numbering a resync and everything the new one brought so far. Returns how many streams
    /// were closed because their queue was full.
    fn settle_held(&mut self, lanes: &lanes::Lanes, now: Instant) -> u64 {
        if self.streams.iter().all(|s| s.held.is_none()) {
            return 0;
        }
        let history = &self.history;
        let mut slow = 0;
        self.streams.retain_mut(|sub| {
            let Some(held) = sub.held.as_deref().copied() else {
                return true;
            };
            let last = held.last;
            let reached = lanes.end(last.lane).is_some_and(|end| end > last.seq);
            if !reached && now.saturating_duration_since(held.since) < RENUMBERED_HOLD {
                return true;
            }
            sub.held = None;
            let mut batch = BytesMut::new();
            let own = history
                .iter()
                .find(|e| e.position == last)
                .filter(|_| reached);
            match own {
                // This user's message of the new numbering: the client has it and all before.
                Some(e) => {
                    let after = e.serial;
                    sub.skip_through = Some(last);
                    for e in history.iter().filter(|e| e.serial > after) {
                        if !(e.position.lane == last.lane && e.position.seq <= last.seq) {
                            batch.extend_from_slice(&e.frame);
                        }
                    }
                }
                None => {
                    batch.extend_from_slice(&resync(&last.to_string(), RENUMBERED));
                    for e in history {
                        batch.extend_from_slice(&e.frame);
                    }
                }
            }
            if batch.is_empty() || sub.queue.push(batch.freeze(), now_ms()) {
                true
            } else {
                slow += 1;
                false
            }
        });
        slow
    }

    /// Drops the entries past the history's age or length.
    fn evict(&mut self, shared: &Shared, now: Instant) {
        let mut freed = memory::Freed::default();
        while let Some(front) = self.history.front() {
            if now.saturating_duration_since(front.at) < shared.config.history_ttl {
                break;
            }
            freed.add(self.pop_oldest());
        }
        shared.release(freed);
        self.trim(shared);
    }

    /// Drops the entries past the history's length.
    fn trim(&mut self, shared: &Shared) {
        let mut freed = memory::Freed::default();
        while self.history.len() > shared.config.history_len {
            freed.add(self.pop_oldest());
        }
        shared.release(freed);
        if self.history.is_empty() && self.history.capacity() > 0 {
            self.history = VecDeque::new();
        }
    }

    /// Drops the oldest entry, which this user can then no longer vouch for. Returns the
    /// length of its frame, for its charge to be returned.
    fn pop_oldest(&mut self) -> Option<usize> {
        let e = self.history.pop_front();
        self.oldest = self.history.front().map_or(u64::MAX, |e| e.serial);
        let e = e?;
        self.raise_floor(e.position);
        self.evicted_serial = self.evicted_serial.max(e.serial);
        Some(e.frame.len())
    }

    fn raise_floor(&mut self, p: Position) {
        match self.floor.iter_mut().find(|f| f.lane == p.lane) {
            Some(f) => f.seq = f.seq.max(p.seq),
            None => self.floor.push(p),
        }
    }

    /// The highest seq on `lane` this user has had.
    fn last_seq(&self, lane: u64) -> Option<u64> {
        let in_history = self.history.iter().rev().find(|e| e.position.lane == lane);
        let floor = self.floor.iter().find(|f| f.lane == lane);
        match (in_history, floor) {
            (Some(e), Some(f)) => Some(e.position.seq.max(f.seq)),
            (Some(e), None) => Some(e.position.seq),
            (None, Some(f)) => Some(f.seq),
            (None, None) => None,
        }
    }
}

const PAST_END: &str =
    "the last event id is past the end of the topic (a Kafka topic created again since?)";

const RENUMBERED: &str =
    "the source numbered its messages anew since this id (a Kafka topic created again)";

/// The resync notice for a client whose messages after `last` are not all here.
fn missed(last: Position) -> Bytes {
    resync(
        &last.to_string(),
        "messages after this id are no longer in the history",
    )
}

fn resync(last_event_id: &str, reason: &str) -> Bytes {
    let data = serde_json::to_string(&wire::Resync {
        last_event_id: last_event_id.to_owned(),
        reason: reason.to_owned(),
    })
    .unwrap_or_default();
    frame::named(wire::RESYNC_EVENT, &data)
}

#[cfg(test)]
mod tests;
