//! The SSE encoder (`server/src/frame.rs`) against a parser that follows WHATWG HTML §9.2.6:
//! each frame kind reaches the client as exactly one event holding what went in, and no other
//! field appears.
//!
//! The input is decoded by `testkit::sse_parse::FrameCase::decode`, and the check is
//! `FrameCase::check`, which the server's own frame tests run too. The whole input is also
//! read as a stream, whole and split, which must agree.
#![no_main]

use libfuzzer_sys::fuzz_target;
use server::frame::{data_only, message, named, preamble};
use std::time::Duration;
use testkit::sse_parse::{self, FrameCase};

fuzz_target!(|input: &[u8]| {
    let case = FrameCase::decode(input);
    let (data, id, event) = (&case.data, &case.id, &case.event);
    let frames = [message(id, data), named(event, data), data_only(data)];
    let preamble = preamble(Duration::from_millis(case.retry_ms));
    case.check([&frames[0], &frames[1], &frames[2]], &preamble);
    chunks_agree(input, case.split);
});

/// The parser itself: any bytes read whole or in two chunks give the same result.
fn chunks_agree(stream: &[u8], split: u8) {
    let whole = sse_parse::parse(stream);
    let chunked = sse_parse::parse_split(stream, split);
    assert_eq!(whole.events, chunked.events);
    assert_eq!(whole.fields, chunked.fields);
    assert_eq!(whole.comments, chunked.comments);
    assert_eq!(whole.retry, chunked.retry);
    assert_eq!(whole.last_event_id, chunked.last_event_id);
}
