//! v1's shape on the wire: a `data: hi!`, keep-alives only in the silences, a `data: hi!`.
//! The exact timing is tested on paused time in `stream.rs`; here only the shape, which a
//! busy machine can't change.

mod common;

use futures_util::StreamExt;
use std::time::Duration;

#[tokio::test]
async fn hi_then_four_keep_alives_then_hi() {
    let server = common::spawn(&["--v1-interval", "1s", "--keep-alive", "200ms"]).await;
    let response = common::client()
        .get(server.url("/v1/sse"))
        .query(&[("username", "demo")])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "text/event-stream");
    assert_eq!(response.headers()["cache-control"], "no-cache");
    assert_eq!(response.headers()["x-accel-buffering"], "no");
    let mut body = response.bytes_stream();
    let mut text = String::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while text.matches("data: hi!").count() < 3 {
        let chunk = tokio::time::timeout_at(deadline, body.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        text.push_str(std::str::from_utf8(&chunk).unwrap());
    }
    let blocks: Vec<&str> = text.split("\n\n").filter(|b| !b.is_empty()).collect();
    assert!(
        blocks[0].starts_with(": stream open\nretry: "),
        "{blocks:?}"
    );
    let hi = "data: hi!";
    let ka = ": keep-alive-text";
    let rest = &blocks[1..];
    assert_eq!(rest.first(), Some(&hi), "{text:?}");
    assert!(rest.iter().all(|b| *b == hi || *b == ka), "{text:?}");
    // Keep-alives fill the silences between ticks (four of 200 ms in each second, on an
    // idle machine).
    for gap in rest.split(|b| *b == hi).skip(1).take(2) {
        assert!(!gap.is_empty(), "no keep-alive between ticks: {text:?}");
    }
    assert!(!text.contains("id:"));
    server.stop().await;
}

#[tokio::test]
async fn v1_validates_the_username() {
    let server = common::spawn(&[]).await;
    let response = common::client()
        .get(server.url("/v1/sse"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    assert_eq!(
        response.text().await.unwrap(),
        "username is missing or empty\n"
    );
    server.stop().await;
}
