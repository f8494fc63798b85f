//! Plain data and rules behind the page, free of DOM calls so they are unit-tested on their own.

use std::collections::{HashSet, VecDeque};
use std::fmt;

use wire::Published;

/// Messages kept on screen; older ones scroll out so a long session does not grow without bound.
pub const MAX_ENTRIES: usize = 500;

/// Ids remembered for de-duplication. Larger than [`MAX_ENTRIES`] so a replay that overlaps
/// messages already scrolled out is still recognised.
pub const MAX_SEEN_IDS: usize = 4 * MAX_ENTRIES;

/// The server's API generations; each has its own stream and publish endpoints.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum ApiVersion {
    /// A fixed greeting every 5 s; no ids, no publishing.
    V1,
    /// In-memory fan-out with ids and replay.
    #[default]
    V2,
    /// The same shapes as v2, routed through Kafka.
    V3,
}

impl ApiVersion {
    pub const ALL: [Self; 3] = [Self::V1, Self::V2, Self::V3];

    /// The path segment, also used as the `<select>` value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::V1 => "v1",
            Self::V2 => "v2",
            Self::V3 => "v3",
        }
    }

    pub fn parse(value: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|v| v.as_str() == value)
    }

    /// What the option says about the version, so the choice is clear without the docs.
    pub fn description(self) -> &'static str {
        match self {
            Self::V1 => "v1 · greeting",
            Self::V2 => "v2 · with replay",
            Self::V3 => "v3 · via Kafka",
        }
    }

    /// v1 has no publish endpoint.
    pub fn can_send(self) -> bool {
        self != Self::V1
    }
}

impl fmt::Display for ApiVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Percent-encodes a query component the way `encodeURIComponent` does for everything that
/// matters here: only RFC 3986 unreserved characters stay as they are.
pub fn encode_component(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for byte in value.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'_' | b'.' | b'~') {
            out.push(char::from(byte));
        } else {
            out.push('%');
            out.push(char::from(b"0123456789ABCDEF"[usize::from(byte >> 4)]));
            out.push(char::from(b"0123456789ABCDEF"[usize::from(byte & 0xf)]));
        }
    }
    out
}

/// The stream URL. `resume_after` asks the server to replay what came after that id; the
/// browser's own reconnects send `Last-Event-ID` instead, this is for a fresh `EventSource`.
pub fn stream_url(version: ApiVersion, username: &str, resume_after: Option<&str>) -> String {
    let mut url = format!("/{version}/sse?username={}", encode_component(username));
    if let Some(id) = resume_after.filter(|id| !id.is_empty() && version != ApiVersion::V1) {
        url.push_str("&lastEventId=");
        url.push_str(&encode_component(id));
    }
    url
}

/// The publish URL for `username` on `version`.
pub fn message_url(version: ApiVersion, username: &str) -> String {
    format!("/{version}/message?username={}", encode_component(username))
}

/// Why the server would refuse this username, in the words the server uses.
pub fn username_problem(name: &str) -> Option<String> {
    wire::validate_username(name).err().map(|e| e.to_string())
}

/// Where a stream is, as the indicator shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ConnState {
    /// The first connection attempt is in flight.
    Connecting,
    /// The stream is open.
    Live,
    /// The stream dropped and the browser is retrying on its own.
    Reconnecting,
    /// No stream: never connected, disconnected, or refused by the server.
    #[default]
    Closed,
}

impl ConnState {
    pub fn label(self) -> &'static str {
        match self {
            Self::Connecting => "connecting",
            Self::Live => "live",
            Self::Reconnecting => "reconnecting",
            Self::Closed => "closed",
        }
    }

    /// The state after an `error` event, from `EventSource.readyState` at that moment:
    /// CONNECTING (0) means the browser will retry; CLOSED (2) means it gave up for good
    /// (a non-200 answer or a wrong content type).
    pub fn after_error(self, ready_state: u16) -> Self {
        match ready_state {
            0 if self == Self::Connecting => Self::Connecting,
            0 => Self::Reconnecting,
            2 => Self::Closed,
            _ => self,
        }
    }
}

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

/// Whether a keydown in the composer sends: plain Enter sends, Shift+Enter is a newline, and
/// Enter that confirms an IME composition does neither.
pub fn enter_sends(key: &str, shift: bool, composing: bool) -> bool {
    key == "Enter" && !shift && !composing
}

/// The first non-empty line of an error body, trimmed and kept short for inline display.
pub fn first_line(body: &str) -> &str {
    let line = body
        .lines()
        .map(str::trim)
        .find(|l| !l.is_empty())
        .unwrap_or("");
    match line.char_indices().nth(200) {
        Some((cut, _)) => &line[..cut],
        None => line,
    }
}

/// The outcome of a publish, ready for display.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SendOutcome {
    Sent(Published),
    Failed(String),
}

impl SendOutcome {
    /// Reads the answer of `POST /vN/message`: a 2xx carries `wire::Published` JSON; anything
    /// else carries a one-line reason.
    pub fn from_response(status: u16, status_text: &str, body: &str) -> Self {
        if (200..300).contains(&status) {
            match serde_json::from_str::<Published>(body) {
                Ok(published) => Self::Sent(published),
                Err(e) => Self::Failed(format!("{status}: unexpected answer ({e})")),
            }
        } else {
            let reason = match first_line(body) {
                "" => status_text,
                line => line,
            };
            Self::Failed(format!("{status} {reason}").trim_end().to_owned())
        }
    }

    pub fn message(&self) -> String {
        match self {
            Self::Sent(p) => match p.delivered {
                Some(n) => {
                    let streams = if n == 1 { "stream" } else { "streams" };
                    format!("Sent as {} · delivered to {n} {streams}", p.id)
                }
                None => format!("Sent as {}", p.id),
            },
            Self::Failed(reason) => format!("Not sent: {reason}"),
        }
    }

    pub fn is_error(&self) -> bool {
        matches!(self, Self::Failed(_))
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

/// `HH:MM:SS`.
pub fn clock(hours: u32, minutes: u32, seconds: u32) -> String {
    format!("{hours:02}:{minutes:02}:{seconds:02}")
}

/// Pure logic: these run in node under `wasm-bindgen-test-runner` and as plain tests natively.
#[cfg(test)]
mod tests {
    use super::*;
    use wasm_bindgen_test::wasm_bindgen_test;

    #[wasm_bindgen_test(unsupported = test)]
    fn urls_encode_the_username() {
        assert_eq!(
            stream_url(ApiVersion::V2, "demo", None),
            "/v2/sse?username=demo"
        );
        assert_eq!(
            stream_url(ApiVersion::V3, "Zoë & co/+?", None),
            "/v3/sse?username=Zo%C3%AB%20%26%20co%2F%2B%3F"
        );
        assert_eq!(
            message_url(ApiVersion::V2, "a b"),
            "/v2/message?username=a%20b"
        );
        assert_eq!(encode_component("A-z_0.9~"), "A-z_0.9~");
        assert_eq!(encode_component("🦀"), "%F0%9F%A6%80");
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn stream_url_resumes_only_where_ids_exist() {
        assert_eq!(
            stream_url(ApiVersion::V2, "u", Some("1795790000000-42")),
            "/v2/sse?username=u&lastEventId=1795790000000-42"
        );
        assert_eq!(
            stream_url(ApiVersion::V2, "u", Some("")),
            "/v2/sse?username=u"
        );
        assert_eq!(
            stream_url(ApiVersion::V1, "u", Some("7")),
            "/v1/sse?username=u"
        );
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn versions_round_trip() {
        for v in ApiVersion::ALL {
            assert_eq!(ApiVersion::parse(v.as_str()), Some(v));
        }
        assert_eq!(ApiVersion::parse("v4"), None);
        assert!(!ApiVersion::V1.can_send());
        assert!(ApiVersion::V2.can_send() && ApiVersion::V3.can_send());
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn username_problems_use_the_shared_rules() {
        assert_eq!(username_problem("demo"), None);
        assert_eq!(
            username_problem("").as_deref(),
            Some("username is missing or empty")
        );
        assert_eq!(
            username_problem("a:b").as_deref(),
            Some("username contains ':', which is reserved")
        );
        assert!(
            username_problem(&"x".repeat(65))
                .unwrap()
                .contains("longer than 64")
        );
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn error_events_map_to_states() {
        use ConnState::*;
        assert_eq!(Live.after_error(0), Reconnecting);
        assert_eq!(Reconnecting.after_error(0), Reconnecting);
        assert_eq!(Connecting.after_error(0), Connecting);
        assert_eq!(Live.after_error(2), Closed);
        assert_eq!(Connecting.after_error(2), Closed);
        assert_eq!(Live.after_error(1), Live);
    }

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
    fn enter_sends_shift_enter_does_not() {
        assert!(enter_sends("Enter", false, false));
        assert!(!enter_sends("Enter", true, false));
        assert!(!enter_sends("Enter", false, true));
        assert!(!enter_sends("a", false, false));
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn send_outcomes() {
        let ok = SendOutcome::from_response(200, "OK", r#"{"id":"17-3","delivered":2}"#);
        assert_eq!(
            ok,
            SendOutcome::Sent(Published {
                id: "17-3".into(),
                delivered: Some(2)
            })
        );
        assert_eq!(ok.message(), "Sent as 17-3 · delivered to 2 streams");
        let one = SendOutcome::from_response(200, "OK", r#"{"id":"1","delivered":1}"#);
        assert!(one.message().ends_with("1 stream"));
        let v3 = SendOutcome::from_response(200, "OK", r#"{"id":"0-9"}"#);
        assert_eq!(v3.message(), "Sent as 0-9");

        let too_big = SendOutcome::from_response(413, "Payload Too Large", "body over 64 KiB\n");
        assert_eq!(too_big.message(), "Not sent: 413 body over 64 KiB");
        assert!(too_big.is_error());
        let bare = SendOutcome::from_response(503, "Service Unavailable", "");
        assert_eq!(bare.message(), "Not sent: 503 Service Unavailable");
        let garbled = SendOutcome::from_response(200, "OK", "<html>");
        assert!(garbled.is_error());
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn first_line_skips_blank_lines_and_caps_length() {
        assert_eq!(first_line("\n  reason here \nmore"), "reason here");
        assert_eq!(first_line(""), "");
        assert_eq!(first_line(&"é".repeat(300)).chars().count(), 200);
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

    #[wasm_bindgen_test(unsupported = test)]
    fn clock_pads() {
        assert_eq!(clock(7, 5, 0), "07:05:00");
    }
}
