//! A subscriber that never reads must not hold up anyone, nor hold memory.

mod common;

use std::time::{Duration, Instant};

fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_stream_is_cut_and_others_keep_flowing() {
    let server = common::spawn(&["--queue-len", "64", "--publish-burst", "100000"]).await;
    let mut stalled = common::stalled_stream(server.addr, "/v2/sse?username=slow").await;
    let mut other = server.open("v2", "other").await;
    tokio::time::sleep(Duration::from_millis(100)).await;

    let rss_before = rss_kib();
    let body = "x".repeat(1024);
    let flood = {
        let base = server.base.clone();
        tokio::spawn(async move {
            let client = reqwest::Client::new();
            for _ in 0..10_000 {
                let r = client
                    .post(format!("{base}/v2/message?username=slow"))
                    .body(body.clone())
                    .send()
                    .await
                    .unwrap();
                assert_eq!(r.status(), 200);
            }
        })
    };
    // While the flood runs, another user's messages arrive promptly.
    let mut worst = Duration::ZERO;
    for i in 0..20 {
        tokio::time::sleep(Duration::from_millis(20)).await;
        let sent = Instant::now();
        server.publish("v2", "other", &format!("ping {i}")).await;
        let e = common::next(&mut other, 5).await;
        assert_eq!(e.data, format!("ping {i}"));
        worst = worst.max(sent.elapsed());
    }
    flood.await.unwrap();
    assert!(
        worst < Duration::from_millis(250),
        "other user's worst latency {worst:?}"
    );
    let grown = rss_kib().saturating_sub(rss_before);
    assert!(grown < 64 * 1024, "RSS grew by {grown} KiB");

    assert!(
        server
            .metric("ssepush_slow_streams_closed_total{api=\"v2\"}")
            .await
            >= 1
    );
    assert_eq!(server.metric("ssepush_hub_streams{api=\"v2\"}").await, 1);
    // Its connection was cut: what was in flight drains, then the socket ends.
    assert!(
        common::closed_within(&mut stalled, 5).await,
        "stalled connection still open"
    );
    server.stop().await;
}
