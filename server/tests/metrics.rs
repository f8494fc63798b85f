//! `/metrics`: every series has its help, and the series an operator alerts on move with what
//! clients do.

mod common;

use std::time::{Duration, Instant};

async fn scrape(server: &common::TestServer) -> String {
    common::client()
        .get(server.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

/// Waits until the series `name` has the value `want`.
async fn wait_for(server: &common::TestServer, name: &str, want: u64) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let got = server.metric(name).await;
        if got == want {
            return;
        }
        assert!(Instant::now() < deadline, "{name} is {got}, not {want}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn every_series_has_help_and_the_text_ends_properly() {
    let server = common::spawn(&[]).await;
    let text = scrape(&server).await;
    let types: Vec<&str> = text
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    assert!(types.len() >= 15, "{text}");
    for name in types {
        assert!(
            text.lines()
                .any(|l| l.starts_with(&format!("# HELP {name} ")) && l.len() > name.len() + 10),
            "no help for {name}"
        );
    }
    assert!(text.ends_with("# EOF\n"));
    server.stop().await;
}

#[tokio::test]
async fn streams_messages_and_refusals_are_counted() {
    let server = common::spawn(&[]).await;
    let mut events = server.open("v2", "counted").await;
    wait_for(
        &server,
        "ssepush_streams_open{api=\"v2\",protocol=\"h1\"}",
        1,
    )
    .await;
    assert_eq!(
        server
            .metric("ssepush_streams_opened_total{api=\"v2\",protocol=\"h1\"}")
            .await,
        1
    );
    server.publish("v2", "counted", "one").await;
    assert_eq!(common::next(&mut events, 5).await.data, "one");
    assert_eq!(
        server
            .metric("ssepush_messages_published_total{api=\"v2\",source=\"http\"}")
            .await,
        1
    );
    assert_eq!(
        server
            .metric("ssepush_frames_delivered_total{api=\"v2\"}")
            .await,
        1
    );
    wait_for(
        &server,
        "ssepush_delivery_delay_seconds_count{api=\"v2\"}",
        1,
    )
    .await;

    let refused = server.post("v2", "a:b", "x").await;
    assert_eq!(refused.status(), 400);
    assert_eq!(
        server
            .metric("ssepush_requests_rejected_total{status=\"400\",reason=\"bad_request\"}")
            .await,
        1
    );

    drop(events);
    wait_for(
        &server,
        "ssepush_streams_open{api=\"v2\",protocol=\"h1\"}",
        0,
    )
    .await;
    wait_for(
        &server,
        "ssepush_streams_closed_total{api=\"v2\",reason=\"client_gone\"}",
        1,
    )
    .await;
    server.stop().await;
}
