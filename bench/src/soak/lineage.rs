//! A client lineage: one simulated browser tab on `/v3/sse`, as `EventSource` behaves. It keeps
//! the last event id across its streams and sends it as `Last-Event-ID` whenever it
//! reconnects: after a churn disconnect (some lineages drop their stream every few seconds),
//! when its stream ends under it (an instance killed), or to go home. It tries its home instance
//! first, then the other, so the clients of a dead instance resume on the surviving one; once
//! the dead one is back, every lineage away from home moves back within a few seconds, as
//! clients would when a load balancer puts the instance back, and both instances carry the
//! load they had before (which the RSS drift assumes).
//!
//! Everything it sees goes into its own [`LineageLog`], with no lock on the receive path; the
//! ledger reads the logs once the run is over. Only what the run must watch live (probe rounds
//! for recovery times, the time of the last receipt for the drain) is shared.

use super::ledger::{Conn, LineageLog, Receipt, ResyncSeen};
use super::rng::Rng;
use super::sent;
use super::shared::Shared;
use crate::http::SseStream;
use crate::scenario::now_us;
use crate::sse::Item;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering::Relaxed};
use std::time::Duration;
use tokio::sync::Semaphore;
use tokio::time::Instant;

/// How long a churning lineage keeps a stream before dropping it, in ms (uniform).
const CHURN_MS: (u64, u64) = (2_000, 8_000);

/// A lineage away from home moves back within this many ms of its home instance's return.
const REHOME_SPREAD_MS: u64 = 10_000;

/// Read buffer per stream: a replay after a failover can be a few KiB.
const READ_BUF: usize = 4096;

/// Longest wait for a response head.
const OPEN_TIMEOUT: Duration = Duration::from_secs(10);

/// Who a lineage is.
#[derive(Debug, Clone, Copy)]
pub struct Spec {
    pub user: u32,
    /// Index of the instance it prefers.
    pub home: usize,
    /// Whether it drops its stream every few seconds.
    pub churns: bool,
}

/// What the run watches while the lineage runs.
#[derive(Debug, Default)]
pub struct Live {
    /// One past the highest recovery round whose probe it has seen (0: none yet).
    pub probe_rounds: AtomicU32,
    /// Whether a stream is open now.
    pub connected: AtomicBool,
}

/// Why a stream ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum End {
    /// The run is over; the stream counts as open at the end.
    Stop,
    /// Churn: the client dropped it.
    Churn,
    /// The server ended it or the connection broke.
    Dropped,
    /// Its home instance is back: the client moves there.
    Rehome,
}

/// Runs a lineage until `shared.stop`; returns what it saw. Its first open waits for a permit
/// of `opening`, so thousands of lineages don't all connect in the same millisecond.
pub async fn run(
    spec: Spec,
    shared: Arc<Shared>,
    live: Arc<Live>,
    mut rng: Rng,
    opening: Arc<Semaphore>,
) -> LineageLog {
    let mut log = LineageLog {
        user: spec.user,
        ..LineageLog::default()
    };
    let path = format!("/v3/sse?username={}", super::user_name(spec.user));
    let mut last_id = String::new();
    let mut last_seq: Option<u32> = None;
    let mut failures = 0u32;
    let mut previous: Option<End> = None;
    let mut permit = opening.acquire_owned().await.ok();
    let mut rehome_calls = shared.rehome.subscribe();
    while !shared.stop.is_cancelled() {
        // Home first; after a failure, alternate, backing off from the third attempt.
        let target = if failures.is_multiple_of(2) {
            spec.home
        } else {
            1 - spec.home
        };
        if failures >= 2 {
            let backoff = Duration::from_millis((100u64 << (failures / 2).min(4)).min(1000));
            tokio::select! {
                () = shared.stop.cancelled() => break,
                () = tokio::time::sleep(backoff) => {}
            }
        }
        let addr = shared.addrs[target];
        let opened = tokio::select! {
            () = shared.stop.cancelled() => break,
            r = tokio::time::timeout(OPEN_TIMEOUT, SseStream::open(addr, &path, &last_id, READ_BUF)) => r,
        };
        let mut stream = match opened {
            Ok(Ok(stream)) => stream,
            _ => {
                failures += 1;
                shared.counters.open_failures.fetch_add(1, Relaxed);
                continue;
            }
        };
        // The first open is done: the next lineage may connect.
        drop(permit.take());
        failures = 0;
        match previous {
            Some(End::Churn) => shared.counters.reconnects_churn.fetch_add(1, Relaxed),
            Some(End::Dropped) => shared.counters.reconnects_dropped.fetch_add(1, Relaxed),
            Some(End::Rehome) => shared.counters.reconnects_home.fetch_add(1, Relaxed),
            _ => 0,
        };
        let sent_id = last_id.clone();
        let anchor = last_seq;
        log.connections.push(Conn {
            instance: target as u8,
            open_us: now_us(),
            close_us: None,
            anchor,
            had_id_at_close: false,
        });
        live.connected.store(true, Relaxed);
        let mut rehome_at: Option<Instant> = None;
        let mut churn_at = spec
            .churns
            .then(|| Instant::now() + rng.millis(CHURN_MS.0, CHURN_MS.1));
        let end = loop {
            let mut on_item = |item: Item| {
                let Item::Event(event) = item else { return };
                let at_us = now_us();
                match event.event_type.as_str() {
                    "message" => {
                        if let Some(body) = sent::parse(&event.data) {
                            let receipt = log.seen.entry(body.seq).or_insert(Receipt {
                                count: 0,
                                first_us: at_us,
                                instance: target as u8,
                                last_us: at_us,
                                last_instance: target as u8,
                            });
                            receipt.count += 1;
                            receipt.last_us = at_us;
                            receipt.last_instance = target as u8;
                            last_seq = Some(body.seq);
                            if let Some(round) = body.probe {
                                live.probe_rounds.fetch_max(round + 1, Relaxed);
                            }
                            shared.last_receipt_us.fetch_max(at_us, Relaxed);
                        }
                        last_id = event.last_event_id;
                    }
                    wire::RESYNC_EVENT => {
                        let said = serde_json::from_str::<wire::Resync>(&event.data)
                            .map(|r| r.last_event_id)
                            .unwrap_or_else(|_| format!("unreadable: {}", event.data));
                        shared.counters.resyncs.fetch_add(1, Relaxed);
                        log.resyncs.push(ResyncSeen {
                            at_us,
                            anchor,
                            id_matches: said == sent_id,
                            last_event_id: said,
                        });
                    }
                    _ => {}
                }
            };
            let churn = async {
                match churn_at {
                    Some(at) => tokio::select! {
                        () = tokio::time::sleep_until(at) => true,
                        () = shared.churn_stop.cancelled() => false,
                    },
                    None => std::future::pending().await,
                }
            };
            let rehome = async {
                match rehome_at {
                    Some(at) => tokio::time::sleep_until(at).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                () = shared.stop.cancelled() => break End::Stop,
                () = rehome => break End::Rehome,
                changed = rehome_calls.changed() => {
                    // An instance came back: a lineage away from home goes back within a few
                    // seconds, so both instances end the run with the streams they started with.
                    if changed.is_ok() && target != spec.home && rehome_at.is_none() {
                        rehome_at = Some(Instant::now() + rng.millis(0, REHOME_SPREAD_MS));
                    }
                }
                churned = churn => {
                    if churned {
                        break End::Churn;
                    }
                    churn_at = None;
                }
                read = stream.read_items(&mut on_item) => {
                    if !matches!(read, Ok(true)) {
                        break End::Dropped;
                    }
                }
            }
        };
        live.connected.store(false, Relaxed);
        drop(stream);
        if end == End::Stop {
            break;
        }
        if let Some(conn) = log.connections.last_mut() {
            conn.close_us = Some(now_us());
            conn.had_id_at_close = !last_id.is_empty();
        }
        previous = Some(end);
    }
    log
}
