//! Property: any text posted comes out as exactly one event, identical but for line endings.

mod common;

use eventsource_stream::Eventsource;
use futures_util::StreamExt;
use proptest::prelude::*;

fn normalise(s: &str) -> String {
    s.replace("\r\n", "\n").replace('\r', "\n")
}

fn text() -> impl Strategy<Value = String> {
    let tricky = prop::sample::select(vec![
        "\r", "\n", "\r\n", "\n\r", ":", "data: ", "id: 9", "event: x", "retry: 1", "\0", " ", "é",
        "👋",
    ]);
    let piece = prop_oneof![any::<String>(), tricky.prop_map(str::to_owned)];
    prop::collection::vec(piece, 1..12)
        .prop_map(|v| v.concat())
        .prop_filter("non-empty", |s| !s.is_empty())
}

proptest! {
    /// The frame itself, parsed by a real SSE client fed in arbitrary chunk splits (a CRLF can
    /// straddle two reads).
    #[test]
    fn frame_parses_back(data in text(), cuts in prop::collection::vec(any::<prop::sample::Index>(), 0..6)) {
        let frame = server::frame::message("5-7", &data);
        let mut points: Vec<usize> = cuts.iter().map(|i| i.index(frame.len() + 1)).collect();
        points.sort_unstable();
        points.dedup();
        let mut chunks = Vec::new();
        let mut start = 0;
        for p in points.into_iter().chain([frame.len()]) {
            chunks.push(Ok::<_, std::io::Error>(frame.slice(start..p)));
            start = p;
        }
        let events: Vec<_> = futures_executor_block_on(futures_util::stream::iter(chunks).eventsource().collect::<Vec<_>>());
        prop_assert_eq!(events.len(), 1);
        let event = events.into_iter().next().unwrap().unwrap();
        prop_assert_eq!(event.event, "message");
        prop_assert_eq!(event.id, "5-7");
        prop_assert_eq!(event.data, normalise(&data));
    }
}

fn futures_executor_block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap()
        .block_on(f)
}

/// The same property end to end: POST to a real server, read with a real SSE client.
#[test]
fn posted_text_arrives_identical_as_one_event() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let server = runtime.block_on(common::spawn(&[]));
    let events = std::cell::RefCell::new(runtime.block_on(server.open("v2", "prop")));
    let config = ProptestConfig {
        cases: 64,
        ..ProptestConfig::default()
    };
    proptest!(config, |(data in text())| {
        let published = runtime.block_on(server.publish("v2", "prop", &data));
        let event = runtime.block_on(common::next(&mut events.borrow_mut(), 5));
        prop_assert_eq!(&event.id, &published.id);
        prop_assert_eq!(event.data, normalise(&data));
    });
    runtime.block_on(common::quiet(&mut events.borrow_mut(), 200));
    runtime.block_on(server.stop());
}
