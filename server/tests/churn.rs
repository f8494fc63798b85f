//! Connect/disconnect cycles leave nothing behind in the registry.

mod common;

use futures_util::StreamExt;
use server::hub::{HistoryMemory, Hub, HubConfig, LastSeen, Numbering};
use std::time::Duration;

fn hub() -> Hub {
    Hub::new(
        HubConfig {
            name: "test",
            history_len: 1000,
            history_ttl: Duration::from_secs(600),
            queue_len: 16,
            max_streams_per_user: 16,
            numbering: Numbering::Own,
            backfill: false,
        },
        HistoryMemory::new(64 << 20),
    )
}

#[test]
fn hundred_thousand_cycles_return_the_registry_to_empty() {
    let hub = hub();
    for i in 0..100_000u32 {
        let user = format!("user-{}", i % 5000);
        let a = hub.subscribe(&user, &LastSeen::Nothing, None).unwrap();
        let b = hub.subscribe(&user, &LastSeen::Nothing, None).unwrap();
        if i % 10_000 == 0 {
            let held = hub.stats();
            assert_eq!(
                (held.users, held.streams),
                (1, 2),
                "both streams registered"
            );
        }
        drop(a);
        drop(b);
    }
    let stats = hub.stats();
    assert_eq!((stats.users, stats.streams, stats.history), (0, 0, 0));
}

#[tokio::test]
async fn http_cycles_release_streams_and_users() {
    let server = common::spawn(&[]).await;
    for i in 0..1000 {
        let mut events = server
            .open(
                if i % 2 == 0 { "v2" } else { "v3" },
                &format!("u{}", i % 37),
            )
            .await;
        // The stream is registered once its first bytes arrive.
        let _ = tokio::time::timeout(Duration::from_millis(5), events.next()).await;
        if i % 100 == 0 {
            // While it is held, the server counts it.
            let deadline = std::time::Instant::now() + Duration::from_secs(5);
            while server.metric("ssepush_streams_open").await == 0 {
                assert!(
                    std::time::Instant::now() < deadline,
                    "stream {i} never registered"
                );
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    }
    for _ in 0..100 {
        if server.metric("ssepush_streams_open").await == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(server.metric("ssepush_streams_open").await, 0);
    assert_eq!(server.metric("ssepush_users{api=\"v2\"}").await, 0);
    assert_eq!(server.metric("ssepush_users{api=\"v3\"}").await, 0);
    server.stop().await;
}
