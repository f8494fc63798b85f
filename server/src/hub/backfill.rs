//! Resuming from the source when the history can't: a v3 client whose last id this instance's
//! history no longer covers (evicted, never held, or from before this process) gets the
//! records it missed read back from Kafka, when the topic still has them.
//!
//! The hub only says what is missing and takes the result: the records of the client's lane
//! after its id up to where the history takes over ([`Gap`]). Until they come, the stream is
//! held in its replay, so its live messages wait in the history, and nothing is sent twice or
//! out of order. The read itself is the source's business (`kafka::replay`).

use bytes::Bytes;
use std::{
    collections::VecDeque,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering::Relaxed},
    },
};

use super::{Hub, Name, Position};

/// Records of one lane, for one user, that a resuming stream misses: those after `after` up
/// to and including `until`. From `until` on the history has them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Gap {
    pub lane: u64,
    pub after: u64,
    pub until: u64,
}

impl Gap {
    /// How many positions the gap spans.
    pub fn span(&self) -> u64 {
        self.until.saturating_sub(self.after)
    }
}

/// Where a stream's gap stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum GapState {
    /// The stream is gone, or its gap was filled.
    Done,
    /// This process does not read the lane yet: where the history starts is not known.
    Waiting,
    Open(Gap),
}

/// Bytes of read-back events held at once, in readers and in streams that have not written
/// them yet, across the server. Each [`Backfilled`] charges what it holds and gives it back as
/// its stream writes it, or when dropped.
#[derive(Clone, Debug)]
pub struct BackfillBudget {
    inner: Arc<BudgetInner>,
}

#[derive(Debug)]
struct BudgetInner {
    max: usize,
    used: AtomicUsize,
}

impl BackfillBudget {
    pub fn new(max: usize) -> Self {
        Self {
            inner: Arc::new(BudgetInner {
                max,
                used: AtomicUsize::new(0),
            }),
        }
    }

    pub fn used(&self) -> usize {
        self.inner.used.load(Relaxed)
    }

    fn try_take(&self, bytes: usize) -> bool {
        self.inner
            .used
            .fetch_update(Relaxed, Relaxed, |used| {
                used.checked_add(bytes)
                    .filter(|&total| total <= self.inner.max)
            })
            .is_ok()
    }

    fn give_back(&self, bytes: usize) {
        self.inner.used.fetch_sub(bytes, Relaxed);
    }
}

/// Why a gap could not be filled; the client gets a resync instead.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unfilled {
    /// The source no longer holds the first record after the client's id.
    Gone,
    /// The gap spans more records than one resume may read.
    TooFar,
    /// It took longer than a resume may wait.
    Timeout,
    /// The events would hold more memory than is free for read-back events, or more messages
    /// than a user's history keeps.
    TooLarge,
    /// The source could not be read.
    Unavailable,
}

impl Unfilled {
    pub fn name(self) -> &'static str {
        match self {
            Self::Gone => "gone",
            Self::TooFar => "too_far",
            Self::Timeout => "timeout",
            Self::TooLarge => "too_large",
            Self::Unavailable => "unavailable",
        }
    }

    pub(super) fn reason(self) -> &'static str {
        match self {
            Self::Gone => "messages after this id are no longer in the history or in Kafka",
            Self::TooFar => {
                "messages after this id are no longer in the history, and too many records have passed since to read them back (--replay-max-records)"
            }
            Self::Timeout => {
                "messages after this id are no longer in the history, and reading them back from Kafka took too long"
            }
            Self::TooLarge => {
                "messages after this id are no longer in the history, and are too many to read back"
            }
            Self::Unavailable => {
                "messages after this id are no longer in the history, and Kafka could not be read"
            }
        }
    }
}

/// The events read back for one gap, charged to the [`BackfillBudget`] while held.
#[derive(Debug)]
pub struct Backfilled {
    frames: VecDeque<Bytes>,
    last: Option<Position>,
    max_frames: usize,
    /// `None` for a notice, which is charged to nothing.
    budget: Option<BackfillBudget>,
    held: usize,
}

impl Backfilled {
    /// At most `max_frames` events (a user's history length), within `budget`.
    pub fn new(budget: &BackfillBudget, max_frames: usize) -> Self {
        Self {
            frames: VecDeque::new(),
            last: None,
            max_frames,
            budget: Some(budget.clone()),
            held: 0,
        }
    }

    /// Adds the event of the message at `position`; `Err` when it does not fit.
    pub fn push(&mut self, position: Position, frame: Bytes) -> Result<(), Unfilled> {
        let fits = self.frames.len() < self.max_frames
            && self
                .budget
                .as_ref()
                .is_some_and(|b| b.try_take(frame.len()));
        if !fits {
            return Err(Unfilled::TooLarge);
        }
        self.held += frame.len();
        self.frames.push_back(frame);
        self.last = Some(position);
        Ok(())
    }

    pub fn len(&self) -> usize {
        self.frames.len()
    }

    pub fn is_empty(&self) -> bool {
        self.frames.is_empty()
    }

    /// A resync notice in place of events.
    pub(super) fn notice(frame: Bytes) -> Self {
        Self {
            frames: VecDeque::from([frame]),
            last: None,
            max_frames: 1,
            budget: None,
            held: 0,
        }
    }

    /// The position of the last event, if any.
    pub(super) fn last(&self) -> Option<Position> {
        self.last
    }

    /// Moves events into `batch` until it holds about `max_bytes`. Returns whether all went.
    pub(super) fn drain_into(&mut self, batch: &mut bytes::BytesMut, max_bytes: usize) -> bool {
        while batch.len() < max_bytes {
            let Some(frame) = self.frames.pop_front() else {
                break;
            };
            let charged = frame.len().min(self.held);
            self.held -= charged;
            if let Some(budget) = &self.budget {
                budget.give_back(charged);
            }
            batch.extend_from_slice(&frame);
        }
        self.frames.is_empty()
    }
}

impl Drop for Backfilled {
    fn drop(&mut self) {
        if let Some(budget) = &self.budget {
            budget.give_back(self.held);
        }
    }
}

/// A replay's read-back: waited for, then sent ahead of the history.
#[derive(Debug)]
pub(super) enum Backfill {
    /// Until this process reads the lane, where the history takes over is not known.
    Awaiting,
    Reading(Gap),
    Ready(Backfilled),
}

/// What a stream with a gap hands its source's reader: which records to read, and where
/// the result goes.
pub struct GapHandle {
    pub(super) hub: Hub,
    pub(super) user: Name,
    pub(super) id: u64,
    /// The client's last id.
    pub(super) last: Position,
}

impl GapHandle {
    pub fn user(&self) -> &str {
        &self.user
    }

    /// The id the client resumes after.
    pub fn last(&self) -> Position {
        self.last
    }

    /// The gap, once the history's start on its lane is known; `None` if the stream is gone.
    pub async fn bounds(&self) -> Option<Gap> {
        loop {
            let opened = self.hub.shared.lane_opened.notified();
            tokio::pin!(opened);
            opened.as_mut().enable();
            match self.hub.gap_state(&self.user, self.id) {
                GapState::Done => return None,
                GapState::Open(gap) => return Some(gap),
                GapState::Waiting => opened.await,
            }
        }
    }

    /// Hands over the events read for the gap, or why there are none: then the client gets a
    /// resync, and the history's messages follow as they would without a read-back.
    pub fn fill(&self, result: Result<Backfilled, Unfilled>) {
        self.hub.fill_gap(&self.user, self.id, result);
    }
}
