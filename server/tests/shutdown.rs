//! SIGTERM ends every open stream cleanly (EOF, not a reset), spread over `--drain`, with
//! `/readyz` saying 503 at once; the process then exits with status 0.

mod common;

use futures_util::StreamExt;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

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

/// Streams end spread over the drain period, not in one burst, and a load balancer asking
/// `/readyz` on a connection it already had hears 503 as soon as the drain starts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_spreads_stream_ends_over_the_drain() {
    let server = common::spawn(&["--drain", "2s"]).await;
    let mut ends = Vec::new();
    for i in 0..40 {
        let path = if i % 4 == 0 { "/v1/sse" } else { "/v2/sse" };
        let response = common::client()
            .get(server.url(path))
            .query(&[("username", format!("drain-{i}"))])
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        ends.push(tokio::spawn(async move {
            read_to_clean_end(response).await;
            Instant::now()
        }));
    }
    // A health check in the middle of its request when the signal comes.
    let mut probe = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    probe.write_all(b"GET /readyz HTTP/1.1\r\n").await.unwrap();
    let mut answer = [0u8; 512];

    let pid = server.pid().to_string();
    let signalled = Instant::now();
    let stopping = tokio::spawn(async move { server.stop().await });
    tokio::time::sleep(Duration::from_millis(300)).await;
    probe.write_all(b"Host: t\r\n\r\n").await.unwrap();
    let n = probe.read(&mut answer).await.unwrap();
    let text = String::from_utf8_lossy(&answer[..n]);
    assert!(text.starts_with("HTTP/1.1 503"), "{text} (pid {pid})");

    let mut after: Vec<Duration> = Vec::new();
    for end in ends {
        let at = tokio::time::timeout(Duration::from_secs(10), end)
            .await
            .expect("every stream ended")
            .unwrap();
        after.push(at - signalled);
    }
    after.sort();
    let (first, last) = (after[0], after[after.len() - 1]);
    // Evenly over 2 s: the ends span most of it (a burst would span milliseconds).
    assert!(
        last - first >= Duration::from_secs(1),
        "ends from {first:?} to {last:?}"
    );
    stopping.await.unwrap();
}
