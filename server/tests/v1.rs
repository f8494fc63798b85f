//! v1's shape on the wire: a `data: hi!`, keep-alives only in the silences, a `data: hi!`.

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
    let deadline = tokio::time::Instant::now() + Duration::from_millis(2500);
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
    let rest: Vec<&str> = blocks[1..].to_vec();
    let hi = "data: hi!";
    let ka = ": keep-alive-text";
    assert_eq!(
        rest,
        [hi, ka, ka, ka, ka, hi, ka, ka, ka, ka, hi],
        "{text:?}"
    );
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
