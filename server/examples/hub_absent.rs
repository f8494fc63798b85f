//! The server's own cost of a v3 record for a user with no stream here, without Kafka: the
//! record's parse and its history insert, with the default budget full so that each record also
//! evicts the oldest entry. Run: cargo run --release -p server --example hub_absent [ROUNDS]
//! (BUDGET_MIB=8192 for a budget that never fills: the cost without eviction; USERS=1000000
//! for users that hold one message each, not five).

use server::hub::{HistoryMemory, Hub, HubConfig, Numbering, Position};
use std::time::{Duration, Instant};

// As in the server's main.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() {
    let users: u64 = std::env::var("USERS").map_or(100_000, |v| v.parse().unwrap());
    let rounds: usize = std::env::args().nth(1).map_or(4, |s| s.parse().unwrap());
    let per_round = 1_000_000u64;
    let hub = Hub::new(
        HubConfig {
            name: "v3",
            history_len: 1000,
            history_ttl: Duration::from_secs(600),
            queue_len: 1024,
            max_streams_per_user: 64,
            numbering: Numbering::Source,
            backfill: true,
        },
        HistoryMemory::new(std::env::var("BUDGET_MIB").map_or(256, |v| v.parse().unwrap()) << 20),
    );
    hub.open_lane(0, 0);
    let pad = "x".repeat(180);
    let values: Vec<Vec<u8>> = (0..per_round)
        .map(|seq| format!("a_{}:{seq} {pad}", seq % users).into_bytes())
        .collect();
    let mut offset = 0u64;
    for round in 0..rounds {
        let start = Instant::now();
        for value in &values {
            let (user, text) =
                server::kafka::record::parse_event(Some(value), 1 << 20, 128 << 10).unwrap();
            hub.publish_stamped(user, text, Position::new(0, offset), 1);
            offset += 1;
        }
        let took = start.elapsed();
        println!(
            "round {round}: {:.3} us per record",
            took.as_secs_f64() * 1e6 / per_round as f64
        );
    }
}
