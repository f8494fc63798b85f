//! v2 over a real socket, read by a real SSE client.

mod common;

use common::{next, quiet, spawn};
use futures_util::StreamExt;

#[tokio::test]
async fn seed_post_arrives_as_data_line() {
    let server = spawn(&[]).await;
    let mut demo = server.open("v2", "demo").await;
    let published = server
        .publish("v2", "demo", "Howdy 👋 from version 2")
        .await;
    let event = next(&mut demo, 5).await;
    assert_eq!(event.event, "message");
    assert_eq!(event.data, "Howdy 👋 from version 2");
    assert_eq!(event.id, published.id);
    assert_eq!(published.delivered, Some(1));
    server.stop().await;
}

#[tokio::test]
async fn delivers_to_every_stream_of_the_user_and_nobody_else() {
    let server = spawn(&[]).await;
    let mut a = server.open("v2", "demo").await;
    let mut b = server.open("v2", "demo").await;
    let mut other = server.open("v2", "other").await;
    let mut v3_demo = server.open("v3", "demo").await;
    let published = server.publish("v2", "demo", "to demo").await;
    assert_eq!(published.delivered, Some(2));
    for stream in [&mut a, &mut b] {
        let e = next(stream, 5).await;
        assert_eq!(
            (e.data.as_str(), e.id.as_str()),
            ("to demo", published.id.as_str())
        );
    }
    quiet(&mut a, 300).await;
    quiet(&mut b, 10).await;
    quiet(&mut other, 10).await;
    quiet(&mut v3_demo, 10).await;
    server.stop().await;
}

#[tokio::test]
async fn payload_cannot_inject_fields() {
    let server = spawn(&[]).await;
    let mut demo = server.open("v2", "demo").await;
    let published = server
        .publish("v2", "demo", "a\nevent: x\ndata: y\r\nid: 9\rz")
        .await;
    let e = next(&mut demo, 5).await;
    assert_eq!(e.event, "message");
    assert_eq!(e.data, "a\nevent: x\ndata: y\nid: 9\nz");
    assert_eq!(e.id, published.id);
    assert_ne!(e.id, "9");
    quiet(&mut demo, 300).await;
    server.stop().await;
}

#[tokio::test]
async fn any_utf8_and_any_content_type() {
    let server = spawn(&[]).await;
    let mut demo = server.open("v2", "Zoë 🦀").await;
    let text = "emoji 👋🏽, CJK 漢字, RTL שלום مرحبا\n\ttabs & = + %20";
    let response = common::client()
        .post(server.url("/v2/message"))
        .query(&[("username", "Zoë 🦀")])
        .header("content-type", "application/x-www-form-urlencoded")
        .body(text)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(next(&mut demo, 5).await.data, text);
    server.stop().await;
}

#[tokio::test]
async fn resumes_with_last_event_id_in_order_without_duplicates() {
    let server = spawn(&[]).await;
    let mut demo = server.open("v2", "demo").await;
    let first = server.publish("v2", "demo", "before").await;
    assert_eq!(next(&mut demo, 5).await.id, first.id);
    drop(demo);

    let mut missed = Vec::new();
    for i in 1..=3 {
        missed.push(server.publish("v2", "demo", &format!("missed {i}")).await);
    }
    let mut demo = server.open_with("v2", "demo", Some(&first.id)).await;
    for (i, m) in missed.iter().enumerate() {
        let e = next(&mut demo, 5).await;
        assert_eq!(
            (e.id.as_str(), e.data.as_str()),
            (m.id.as_str(), format!("missed {}", i + 1).as_str())
        );
    }
    let live = server.publish("v2", "demo", "live").await;
    let e = next(&mut demo, 5).await;
    assert_eq!((e.id.as_str(), e.data.as_str()), (live.id.as_str(), "live"));
    quiet(&mut demo, 300).await;

    // The query parameter serves a browser's first request, which can't set the header.
    let response = common::client()
        .get(server.url("/v2/sse"))
        .query(&[("username", "demo"), ("lastEventId", missed[1].id.as_str())])
        .send()
        .await
        .unwrap();
    let mut by_query = common::events(response);
    assert_eq!(next(&mut by_query, 5).await.id, missed[2].id);
    assert_eq!(next(&mut by_query, 5).await.id, live.id);
    server.stop().await;
}

#[tokio::test]
async fn resync_when_history_no_longer_holds_the_id() {
    let server = spawn(&["--history-len", "3"]).await;
    let ids: Vec<_> = futures_util::stream::iter(1..=6)
        .then(|i| {
            let server = &server;
            async move { server.publish("v2", "demo", &format!("m{i}")).await.id }
        })
        .collect()
        .await;
    let mut demo = server.open_with("v2", "demo", Some(&ids[0])).await;
    let resync = next(&mut demo, 5).await;
    assert_eq!(resync.event, wire::RESYNC_EVENT);
    let body: wire::Resync = serde_json::from_str(&resync.data).unwrap();
    assert_eq!(body.last_event_id, ids[0]);
    for (i, id) in ids.iter().enumerate().skip(3) {
        let e = next(&mut demo, 5).await;
        assert_eq!(
            (e.id.as_str(), e.data.as_str()),
            (id.as_str(), format!("m{}", i + 1).as_str())
        );
    }

    // An id from another process (say, before a restart) can't be placed either.
    let mut stale = server.open_with("v2", "demo", Some("1-1")).await;
    assert_eq!(next(&mut stale, 5).await.event, wire::RESYNC_EVENT);
    // Nor can garbage, even a huge one.
    let mut garbage = server
        .open_with("v2", "demo", Some(&"x".repeat(4000)))
        .await;
    let e = next(&mut garbage, 5).await;
    assert_eq!(e.event, wire::RESYNC_EVENT);
    assert!(e.data.len() < 400);
    server.stop().await;
}

#[tokio::test]
async fn history_expires() {
    // Generous margins for a busy machine: both old messages are past the TTL when "fresh" is
    // published, and "fresh" has 2 s before it expires too. (The hub's own tests cover
    // expiry exactly.)
    let server = spawn(&["--history-ttl", "2s"]).await;
    let old = server.publish("v2", "demo", "old").await;
    server.publish("v2", "demo", "expired too").await;
    tokio::time::sleep(std::time::Duration::from_millis(2_500)).await;
    let fresh = server.publish("v2", "demo", "fresh").await;
    let mut demo = server.open_with("v2", "demo", Some(&old.id)).await;
    assert_eq!(next(&mut demo, 5).await.event, wire::RESYNC_EVENT);
    // Neither expired message is replayed: the next event is the fresh one.
    assert_eq!(next(&mut demo, 5).await.id, fresh.id);
    server.stop().await;
}

#[tokio::test]
async fn v3_post_without_kafka_is_503() {
    let server = spawn(&[]).await;
    let response = server.post("v3", "demo", "nowhere to go").await;
    assert_eq!(response.status(), 503);
    assert_eq!(
        response.text().await.unwrap(),
        "kafka is switched off on this server\n"
    );
    server.stop().await;
}
