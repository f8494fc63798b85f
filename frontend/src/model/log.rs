//! The message list: what one line is, and the bounded, de-duplicated log of them.

use std::collections::{HashSet, VecDeque};

use super::send::first_line;

/// Messages kept on screen; older ones scroll out so a long session does not grow without bound.
pub const MAX_ENTRIES: usize = 500;

/// Ids remembered for de-duplication. Larger than [`MAX_ENTRIES`] so a replay that overlaps
/// messages already scrolled out is still recognised.
pub const MAX_SEEN_IDS: usize = 4 * MAX_ENTRIES;

/// What one line in the message list is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EntryKind {
    /// A pushed message; `id` is `None` on v1, which sends no ids.
    Message { id: Option<String> },
    /// Something the page itself reports, e.g. a resync.
    Notice,
}

/// One line in the message list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// Local, strictly increasing key for the keyed list.
    pub seq: u64,
    pub kind: EntryKind,
    pub text: String,
    /// Arrival time as `HH:MM:SS`.
    pub time: String,
}

/// The messages on screen, newest last, each id at most once.
#[derive(Debug, Clone, Default)]
pub struct MessageLog {
    entries: VecDeque<Entry>,
    seen: HashSet<String>,
    seen_order: VecDeque<String>,
    next_seq: u64,
}

impl MessageLog {
    pub fn entries(&self) -> impl Iterator<Item = &Entry> {
        self.entries.iter()
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The seq of the newest entry, used to notice new arrivals.
    pub fn last_seq(&self) -> Option<u64> {
        self.entries.back().map(|e| e.seq)
    }

    /// Adds a pushed message unless its id was already shown; returns whether it was added.
    /// The browser's own resume and our `lastEventId` can overlap, so this is the last line
    /// of defence against duplicates.
    pub fn push_message(&mut self, id: Option<String>, text: String, time: String) -> bool {
        let id = id.filter(|id| !id.is_empty());
        if let Some(id) = &id {
            if !self.seen.insert(id.clone()) {
                return false;
            }
            self.seen_order.push_back(id.clone());
            if self.seen_order.len() > MAX_SEEN_IDS
                && let Some(old) = self.seen_order.pop_front()
            {
                self.seen.remove(&old);
            }
        }
        self.push(EntryKind::Message { id }, text, time);
        true
    }

    pub fn push_notice(&mut self, text: String, time: String) {
        self.push(EntryKind::Notice, text, time);
    }

    fn push(&mut self, kind: EntryKind, text: String, time: String) {
        let seq = self.next_seq;
        self.next_seq += 1;
        self.entries.push_back(Entry {
            seq,
            kind,
            text,
            time,
        });
        if self.entries.len() > MAX_ENTRIES {
            self.entries.pop_front();
        }
    }
}

/// The notice shown for a `resync` event (data: `wire::Resync` JSON).
pub fn resync_notice(data: &str) -> String {
    match serde_json::from_str::<wire::Resync>(data) {
        Ok(r) if r.last_event_id.is_empty() => format!("Resync: {}", r.reason),
        Ok(r) => format!("Resync after {}: {}", r.last_event_id, r.reason),
        Err(_) => format!("Resync: {}", first_line(data)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use wasm_bindgen_test::wasm_bindgen_test;

    #[wasm_bindgen_test(unsupported = test)]
    fn log_drops_repeated_ids_but_not_idless_messages() {
        let mut log = MessageLog::default();
        let t = || "12:00:00".to_owned();
        assert!(log.push_message(Some("1-1".into()), "a".into(), t()));
        assert!(!log.push_message(Some("1-1".into()), "a again".into(), t()));
        assert!(log.push_message(None, "hi!".into(), t()));
        assert!(log.push_message(None, "hi!".into(), t()));
        assert!(log.push_message(Some(String::new()), "empty id".into(), t()));
        log.push_notice("resync".into(), t());
        assert_eq!(log.len(), 5);
        let seqs: Vec<u64> = log.entries().map(|e| e.seq).collect();
        assert_eq!(seqs, [0, 1, 2, 3, 4]);
        assert_eq!(log.last_seq(), Some(4));
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn log_is_bounded_and_keeps_the_newest() {
        let mut log = MessageLog::default();
        for i in 0..MAX_ENTRIES + 10 {
            log.push_message(Some(format!("0-{i}")), format!("m{i}"), String::new());
        }
        assert_eq!(log.len(), MAX_ENTRIES);
        assert_eq!(log.entries().next().unwrap().text, "m10");
        // Scrolled out, but still remembered: a replay of it is dropped.
        assert!(!log.push_message(Some("0-0".into()), "m0".into(), String::new()));
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn message_text_keeps_its_lines() {
        let mut log = MessageLog::default();
        log.push_message(
            Some("1".into()),
            "line 1\nline 2\n\n  indented".into(),
            String::new(),
        );
        assert_eq!(
            log.entries().next().unwrap().text,
            "line 1\nline 2\n\n  indented"
        );
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn resync_notices() {
        let data = r#"{"last_event_id":"5-1","reason":"history starts at 9-0"}"#;
        assert_eq!(
            resync_notice(data),
            "Resync after 5-1: history starts at 9-0"
        );
        assert_eq!(resync_notice("not json"), "Resync: not json");
    }
}
