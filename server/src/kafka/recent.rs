//! Fingerprints of the records last read from a partition, to tell a redelivery (the same
//! record at the same offset) from a topic created anew (another record at an old offset).

use foldhash::quality::RandomState;
use std::{collections::VecDeque, hash::BuildHasher};

/// Records remembered per partition: about 64 KiB each.
const KEEP: usize = 4096;

#[derive(Default)]
pub struct Recent {
    hasher: RandomState,
    /// (offset, fingerprint), offsets rising.
    records: VecDeque<(i64, u64)>,
}

impl Recent {
    pub fn push(&mut self, offset: i64, payload: Option<&[u8]>) {
        if self.records.back().is_some_and(|&(last, _)| offset <= last) {
            // Read again from further back: what follows replaces what was remembered.
            self.records.retain(|&(o, _)| o < offset);
        }
        if self.records.len() == KEEP {
            self.records.pop_front();
        }
        let print = self.hasher.hash_one(payload);
        self.records.push_back((offset, print));
    }

    /// Whether the record read at `offset` before had this payload; `None` if not remembered.
    pub fn same(&self, offset: i64, payload: Option<&[u8]>) -> Option<bool> {
        let i = self
            .records
            .binary_search_by_key(&offset, |&(o, _)| o)
            .ok()?;
        Some(self.records[i].1 == self.hasher.hash_one(payload))
    }

    pub fn clear(&mut self) {
        self.records.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tells_a_redelivery_from_a_new_record() {
        let mut recent = Recent::default();
        for o in 0..10 {
            recent.push(o, Some(format!("r{o}").as_bytes()));
        }
        assert_eq!(recent.same(3, Some(b"r3")), Some(true));
        assert_eq!(recent.same(3, Some(b"other")), Some(false));
        assert_eq!(recent.same(3, None), Some(false));
        assert_eq!(recent.same(10, Some(b"r10")), None);
        // Reading again from 5 forgets 5.. until read anew.
        recent.push(5, Some(b"new5"));
        assert_eq!(recent.same(5, Some(b"new5")), Some(true));
        assert_eq!(recent.same(6, Some(b"r6")), None);
        assert_eq!(recent.same(4, Some(b"r4")), Some(true));
    }

    #[test]
    fn keeps_a_bounded_window() {
        let mut recent = Recent::default();
        for o in 0..(KEEP as i64 + 100) {
            recent.push(o, None);
        }
        assert_eq!(recent.same(0, None), None);
        assert_eq!(recent.same(99, None), None);
        assert_eq!(recent.same(100, None), Some(true));
        assert_eq!(recent.records.len(), KEEP);
    }
}
