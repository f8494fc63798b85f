//! The stream and message endpoints' query parser (`server/src/api/params.rs`) with any query
//! string and `Last-Event-ID` header: no panic; an accepted username passes wire's rules and
//! comes back unchanged when sent percent-encoded; the header wins over `lastEventId`; what is
//! read as a position prints back as itself, and an unknown id is kept short.
//!
//! Input: `query 0xFF header`: the query decoded as UTF-8 with replacement; the header is sent
//! only after a 0xFF and only if its bytes are a valid header value.
#![no_main]

use http::{HeaderMap, HeaderValue};
use libfuzzer_sys::fuzz_target;
use percent_encoding::{NON_ALPHANUMERIC, utf8_percent_encode};
use server::{
    fuzzing::stream_query,
    hub::{LastSeen, Position},
};

fuzz_target!(|input: &[u8]| {
    let mut parts = input.splitn(2, |&b| b == 0xFF);
    let query = String::from_utf8_lossy(parts.next().unwrap_or_default());
    let mut headers = HeaderMap::new();
    if let Some(value) = parts.next().and_then(|h| HeaderValue::from_bytes(h).ok()) {
        headers.insert("last-event-id", value);
    }

    let Ok(q) = stream_query(&query, &headers) else {
        return;
    };
    if let Ok(name) = &q.username {
        assert!(wire::validate_username(name).is_ok(), "{name:?}");
        assert!(!name.is_empty() && name.len() <= wire::MAX_USERNAME_BYTES);
        assert!(!name.contains(':') && !name.chars().any(char::is_control));
        let sent = format!("username={}", utf8_percent_encode(name, NON_ALPHANUMERIC));
        let again = stream_query(&sent, &HeaderMap::new()).expect("a valid name is accepted");
        assert_eq!(again.username.as_deref().ok(), Some(name.as_str()));
    }
    if let Some(value) = headers.get("last-event-id") {
        let raw = value.to_str().unwrap_or("\u{fffd}");
        assert_eq!(q.last_seen, LastSeen::parse(Some(raw)));
    }
    match &q.last_seen {
        LastSeen::Nothing => {}
        LastSeen::At(p) => assert_eq!(p.to_string().parse::<Position>(), Ok(*p)),
        // Only the Kafka side places an id past its log's end.
        LastSeen::PastEnd(p) => panic!("a parsed id taken for one past the log's end: {p}"),
        LastSeen::Unknown(s) => {
            assert!(
                s.len() <= wire::MAX_LAST_EVENT_ID_BYTES + '…'.len_utf8(),
                "{s:?}"
            );
        }
    }
});
