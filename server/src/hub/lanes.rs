//! What this process can vouch for on each lane of a source's numbering (v3: Kafka partitions).
//!
//! A lane opens at the position where this process started reading it. From then on the hub
//! has every message of the lane, so a client that resumes from before that start missed
//! something this process never saw, and must be told with a resync.

use std::sync::{
    RwLock,
    atomic::{AtomicU64, Ordering::Relaxed},
};

use super::Position;

#[derive(Default)]
pub(super) struct Lanes {
    lanes: RwLock<Vec<(u64, Marks)>>,
    /// Lanes whose source started numbering again, with where the earlier numbering ended
    /// (one past its highest seq), until the new numbering has passed that.
    retired: RwLock<Vec<(u64, u64)>>,
}

struct Marks {
    /// The first seq this process has read on the lane.
    start: AtomicU64,
    /// One past the highest seq published on the lane; 0 when none was.
    end: AtomicU64,
}

/// What [`Lanes::open`] changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Opened {
    /// The lane was not known before; resumes that waited for it can now be decided.
    New,
    /// The lane was known; its start is unchanged or moved past a gap.
    Known,
}

impl Lanes {
    /// The lane's start, if this process reads it.
    pub fn start(&self, lane: u64) -> Option<u64> {
        self.read(|lanes| {
            lanes
                .iter()
                .find(|(l, _)| *l == lane)
                .map(|(_, m)| m.start.load(Relaxed))
        })
    }

    /// This process reads `lane` from `start` on. Reading again from a later start than where it
    /// got to leaves a gap it can't vouch for, so the start moves there.
    pub fn open(&self, lane: u64, start: u64) -> Opened {
        let mut lanes = self.lanes.write().unwrap_or_else(|e| e.into_inner());
        match lanes.iter().find(|(l, _)| *l == lane) {
            Some((_, marks)) => {
                let end = marks.end.load(Relaxed);
                let known = marks.start.load(Relaxed).max(end);
                if start > known {
                    marks.start.store(start, Relaxed);
                }
                Opened::Known
            }
            None => {
                lanes.push((
                    lane,
                    Marks {
                        start: AtomicU64::new(start),
                        end: AtomicU64::new(0),
                    },
                ));
                Opened::New
            }
        }
    }

    /// One past the highest seq published on the lane (0 when none was), if this process
    /// reads it.
    pub fn end(&self, lane: u64) -> Option<u64> {
        self.read(|lanes| {
            lanes
                .iter()
                .find(|(l, _)| *l == lane)
                .map(|(_, m)| m.end.load(Relaxed))
        })
    }

    /// Records that `p` was published; false when its lane was never opened.
    pub fn advance(&self, p: Position) -> bool {
        self.read(|lanes| {
            lanes
                .iter()
                .find(|(l, _)| *l == p.lane)
                .map(|(_, m)| m.end.fetch_max(p.seq.saturating_add(1), Relaxed))
                .is_some()
        })
    }

    /// The highest position published on each lane.
    pub fn high_water(&self) -> super::Floor {
        self.read(|lanes| {
            lanes
                .iter()
                .filter_map(|(lane, m)| {
                    let end = m.end.load(Relaxed);
                    (end > 0).then(|| Position::new(*lane, end - 1))
                })
                .collect()
        })
    }

    /// The lane's source numbers from scratch again: its positions so far are retired.
    pub fn forget(&self, lane: u64) {
        let mut lanes = self.lanes.write().unwrap_or_else(|e| e.into_inner());
        let old_end = lanes
            .iter()
            .find(|(l, _)| *l == lane)
            .map_or(0, |(_, m)| m.end.load(Relaxed));
        lanes.retain(|(l, _)| *l != lane);
        drop(lanes);
        let mut retired = self.retired.write().unwrap_or_else(|e| e.into_inner());
        match retired.iter_mut().find(|(l, _)| *l == lane) {
            Some((_, end)) => *end = (*end).max(old_end),
            None => retired.push((lane, old_end)),
        }
    }

    /// Whether `p` is, as far as this process can tell, a position of the numbering its lane
    /// had before the source started again: the earlier numbering reached it, and the new one
    /// has not. (Once the new numbering passes where the old one ended, the two can't be told
    /// apart and the old one is forgotten.)
    pub fn issued_before_renumbering(&self, p: Position) -> bool {
        let end = self.read(|lanes| {
            lanes
                .iter()
                .find(|(l, _)| *l == p.lane)
                .map_or(0, |(_, m)| m.end.load(Relaxed))
        });
        let mut retired = self.retired.write().unwrap_or_else(|e| e.into_inner());
        retired.retain(|(lane, old_end)| *lane != p.lane || end < *old_end);
        retired
            .iter()
            .any(|(lane, old_end)| *lane == p.lane && p.seq >= end && p.seq < *old_end)
    }

    fn read<T>(&self, f: impl FnOnce(&[(u64, Marks)]) -> T) -> T {
        f(&self.lanes.read().unwrap_or_else(|e| e.into_inner()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn start_moves_only_past_a_gap() {
        let lanes = Lanes::default();
        assert_eq!(lanes.start(0), None);
        assert_eq!(lanes.open(0, 5), Opened::New);
        assert!(lanes.advance(Position::new(0, 5)));
        assert!(lanes.advance(Position::new(0, 9)));
        // Re-read from a committed offset inside what we have: nothing new is missing.
        assert_eq!(lanes.open(0, 7), Opened::Known);
        assert_eq!(lanes.start(0), Some(5));
        assert_eq!(lanes.open(0, 10), Opened::Known);
        assert_eq!(lanes.start(0), Some(5));
        // Read again from further on: 10..=19 were never seen here.
        lanes.open(0, 20);
        assert_eq!(lanes.start(0), Some(20));
        assert_eq!(lanes.high_water().as_slice(), [Position::new(0, 9)]);
        assert!(!lanes.advance(Position::new(1, 0)));
        lanes.forget(0);
        assert_eq!(lanes.start(0), None);
        assert!(lanes.high_water().is_empty());
    }
}
