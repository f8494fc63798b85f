//! The SSE encoder (`server/src/frame.rs`) against a parser that follows WHATWG HTML §9.2.6:
//! each frame kind reaches the client as exactly one event holding what went in, and no other
//! field appears.
//!
//! Input: `data 0xFF id 0xFF event 0xFF tail`, each part decoded as UTF-8 with replacement
//! (0xFF never occurs in UTF-8, so it can only be a separator). The id loses CR, LF and NUL and
//! the event name CR and LF, which the server never puts there. The tail's first four bytes
//! (little-endian) are the retry in milliseconds, its fifth where to split the stream in two
//! chunks. The whole input is also read as a stream, whole and split, which must agree.
#![no_main]

use libfuzzer_sys::fuzz_target;
use server::frame::{data_only, message, named, preamble};
use std::time::Duration;
use testkit::sse_parse::{self, Event, Parser};

fuzz_target!(|input: &[u8]| {
    let mut parts = input.splitn(4, |&b| b == 0xFF);
    let mut next = || String::from_utf8_lossy(parts.next().unwrap_or_default()).into_owned();
    let data = next();
    let id = next().replace(['\r', '\n', '\0'], "");
    let event = next().replace(['\r', '\n'], "");
    let tail = parts.next().unwrap_or_default();
    let mut retry = [0; 4];
    let n = tail.len().min(4);
    retry[..n].copy_from_slice(&tail[..n]);
    let retry_ms = u64::from(u32::from_le_bytes(retry));
    let split = tail.get(4).copied().unwrap_or(0);

    round_trip(&data, &id, &event, retry_ms, split);
    chunks_agree(input, split);
});

/// What a client's `event.data` holds for a payload: every line break arrives as LF.
fn as_received(data: &str) -> String {
    data.replace("\r\n", "\n").replace('\r', "\n")
}

fn ev(event_type: &str, data: &str, last_event_id: &str) -> Event {
    Event {
        event_type: event_type.into(),
        data: as_received(data),
        last_event_id: last_event_id.into(),
    }
}

/// Splits `stream` at a point chosen by `at` (0..=255 across its length).
fn split_at(stream: &[u8], at: u8) -> (&[u8], &[u8]) {
    stream.split_at(stream.len() * usize::from(at) / 255)
}

fn round_trip(data: &str, id: &str, event: &str, retry_ms: u64, split: u8) {
    let frames = [message(id, data), named(event, data), data_only(data)];
    let event_type = if event.is_empty() { "message" } else { event };
    // One `data` field per line of what the client receives.
    let received = as_received(data);
    let data_fields = || {
        received
            .split('\n')
            .map(|l| ("data".to_owned(), l.to_owned()))
    };
    let field = |name: &str, value: &str| (name.to_owned(), value.to_owned());

    // Each frame alone: one event, its fields only.
    let alone = [
        ev("message", data, id),
        ev(event_type, data, ""),
        ev("message", data, ""),
    ];
    let heads = [vec![field("id", id)], vec![field("event", event)], vec![]];
    for ((frame, expected), head) in frames.iter().zip(alone).zip(heads) {
        assert!(!frame.contains(&b'\r'), "a frame holds a CR: {frame:?}");
        let p = sse_parse::parse(frame);
        assert_eq!(p.events, [expected], "{frame:?}");
        let fields: Vec<_> = head.into_iter().chain(data_fields()).collect();
        assert_eq!(p.fields, fields, "{frame:?}");
        assert!(p.comments.is_empty() && p.retry.is_none(), "{frame:?}");
    }

    // A stream as a v2 client gets it: the preamble, then the three frames. named and
    // data_only leave the last event id as message set it.
    let mut stream = preamble(Duration::from_millis(retry_ms)).to_vec();
    frames.iter().for_each(|f| stream.extend_from_slice(f));
    let events = [
        ev("message", data, id),
        ev(event_type, data, id),
        ev("message", data, id),
    ];
    let mut fields = vec![field("retry", &retry_ms.to_string()), field("id", id)];
    fields.extend(data_fields());
    fields.push(field("event", event));
    fields.extend(data_fields());
    fields.extend(data_fields());

    let whole = sse_parse::parse(&stream);
    let mut chunked = Parser::new();
    let (a, b) = split_at(&stream, split);
    chunked.feed(a);
    chunked.feed(b);
    for p in [whole, chunked] {
        assert_eq!(p.events, events);
        assert_eq!(p.fields, fields);
        assert_eq!(p.comments, [" stream open"]);
        assert_eq!(p.retry, Some(retry_ms));
        assert_eq!(p.last_event_id, id);
    }
}

/// The parser itself: any bytes read whole or in two chunks give the same result.
fn chunks_agree(stream: &[u8], split: u8) {
    let whole = sse_parse::parse(stream);
    let mut chunked = Parser::new();
    let (a, b) = split_at(stream, split);
    chunked.feed(a);
    chunked.feed(b);
    assert_eq!(whole.events, chunked.events);
    assert_eq!(whole.fields, chunked.fields);
    assert_eq!(whole.comments, chunked.comments);
    assert_eq!(whole.retry, chunked.retry);
    assert_eq!(whole.last_event_id, chunked.last_event_id);
}
