//! What the soak's tasks share while it runs: where the instances listen, when to stop, and
//! counters that need no ledger.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use tokio_util::sync::CancellationToken;

/// Shared by every task of a run.
pub struct Shared {
    /// The two instances; each keeps its address across a restart.
    pub addrs: [SocketAddr; 2],
    /// Lineages and stalled clients end.
    pub stop: CancellationToken,
    /// Churning lineages keep their streams from now on (the drain).
    pub churn_stop: CancellationToken,
    /// Publishers send nothing new.
    pub publish_stop: CancellationToken,
    /// Bumped when an instance is back after a kill: lineages away from home move back.
    pub rehome: tokio::sync::watch::Sender<u64>,
    /// The latest receipt of a message by any lineage, for the drain.
    pub last_receipt_us: AtomicU64,
    pub counters: Counters,
}

impl Shared {
    pub fn new(addrs: [SocketAddr; 2]) -> Self {
        Self {
            addrs,
            stop: CancellationToken::new(),
            churn_stop: CancellationToken::new(),
            publish_stop: CancellationToken::new(),
            rehome: tokio::sync::watch::Sender::new(0),
            last_receipt_us: AtomicU64::new(0),
            counters: Counters::default(),
        }
    }
}

/// Event counts for the summary.
#[derive(Debug, Default)]
pub struct Counters {
    /// Reconnects after a churn disconnect.
    pub reconnects_churn: AtomicU64,
    /// Reconnects after the stream ended under the client.
    pub reconnects_dropped: AtomicU64,
    /// Reconnects to go back home once the home instance returned.
    pub reconnects_home: AtomicU64,
    /// Stream opens that failed (refused, timed out, not 200).
    pub open_failures: AtomicU64,
    pub resyncs: AtomicU64,
    /// POSTs answered with something other than 200, or not at all.
    pub post_failures: AtomicU64,
    /// Records whose delivery report was an error.
    pub produce_failures: AtomicU64,
    /// Filler records for the stalled clients' users.
    pub filler_sent: AtomicU64,
    pub stalled_opened: AtomicU64,
    /// Stalled streams the server had closed when the client looked.
    pub stalled_cut: AtomicU64,
    /// Stalled streams still open when the client looked.
    pub stalled_open: AtomicU64,
}

impl Counters {
    /// Reads a counter.
    pub fn get(counter: &AtomicU64) -> u64 {
        counter.load(Relaxed)
    }
}
