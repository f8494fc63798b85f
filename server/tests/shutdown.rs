//! SIGTERM ends every open stream cleanly (EOF, not a reset), and the process exits with
//! status 0 within 5 s.

mod common;

use futures_util::StreamExt;
use std::time::Duration;

async fn read_to_clean_end(response: reqwest::Response) -> String {
    let mut body = response.bytes_stream();
    let mut text = String::new();
    while let Some(chunk) = body.next().await {
        text.push_str(std::str::from_utf8(&chunk.expect("clean end, not a reset")).unwrap());
    }
    text
}

#[tokio::test]
async fn sigterm_ends_streams_cleanly_and_exits() {
    let server = common::spawn(&[]).await;
    let mut readers = Vec::new();
    for path in ["/v1/sse", "/v2/sse", "/v3/sse", "/v2/sse"] {
        let response = common::client()
            .get(server.url(path))
            .query(&[("username", "demo")])
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        readers.push(tokio::spawn(read_to_clean_end(response)));
    }
    server.publish("v2", "demo", "last words").await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    let took = server.stop().await;
    assert!(took < Duration::from_secs(5), "shutdown took {took:?}");
    for (i, reader) in readers.into_iter().enumerate() {
        let text = tokio::time::timeout(Duration::from_secs(1), reader)
            .await
            .unwrap()
            .unwrap();
        assert!(text.starts_with(": stream open"));
        // The v2 streams (1 and 3) got the message sent just before shutdown.
        if i % 2 == 1 {
            assert!(text.contains("data: last words\n\n"), "{text:?}");
        }
    }
}
