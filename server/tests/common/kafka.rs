//! Servers wired to a test broker, and waiting for their consumers.

use super::{Events, TestServer, next, spawn};
use std::time::{Duration, Instant};
use testkit::Broker;

pub async fn server(broker: &Broker, group: &str) -> TestServer {
    server_with(broker, group, &[]).await
}

/// A v3 server in consumer group `group`, with more flags after the usual ones.
pub async fn server_with(broker: &Broker, group: &str, more: &[&str]) -> TestServer {
    let mut args = vec![
        "--kafka-brokers",
        &broker.addr,
        "--kafka-group",
        group,
        "--kafka-session-timeout",
        "2s",
        "--kafka-timeout",
        "3s",
    ];
    args.extend_from_slice(more);
    spawn(&args).await
}

pub async fn readyz(server: &TestServer) -> (u16, wire::Readiness) {
    let response = super::client()
        .get(server.url("/readyz"))
        .send()
        .await
        .unwrap();
    (response.status().as_u16(), response.json().await.unwrap())
}

pub async fn wait_ready(server: &TestServer, want: u16) -> wire::Readiness {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (status, body) = readyz(server).await;
        if status == want {
            return body;
        }
        assert!(
            Instant::now() < deadline,
            "readyz stayed {status}: {body:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Waits until the consumer has joined and reads: a probe record must arrive on a stream.
pub async fn wait_consuming(server: &TestServer, broker: &mut Broker) {
    wait_ready(server, 200).await;
    let mut probe = server.open("v3", "probe").await;
    broker.produce(b"probe:ping").await;
    assert_eq!(next(&mut probe, 30).await.data, "ping");
}

pub async fn expect(events: &mut Events, data: &str, offset: i64) {
    expect_within(events, data, offset, 20).await;
}

/// [`expect`], waiting up to `secs` seconds.
pub async fn expect_within(events: &mut Events, data: &str, offset: i64, secs: u64) {
    let e = next(events, secs).await;
    assert_eq!(
        (e.data.as_str(), e.id.as_str()),
        (data, format!("0-{offset}").as_str())
    );
}
