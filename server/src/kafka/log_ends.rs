//! Where each partition's log ends now, asked of the broker at most once a second per
//! partition, for resumes from ids this process has not read as far as.

use std::{collections::HashMap, time::Duration};
use tokio::{sync::Mutex, time::Instant};

/// How long an answer (or a failure) stands: a client can then make the server ask the
/// broker no more often than this, however many resumes it sends.
const FRESH: Duration = Duration::from_secs(1);

#[derive(Default)]
pub struct LogEnds {
    /// Per partition, its high watermark (`None`: the broker did not say) and when it was
    /// asked. Held across the request, so resumes arriving meanwhile wait for its answer
    /// rather than ask again.
    known: Mutex<HashMap<i32, (Option<i64>, Instant)>>,
}

impl LogEnds {
    /// One past `partition`'s last record, or `None` when the broker does not say; `ask`
    /// asks the broker, unless an answer from the last [`FRESH`] stands.
    pub async fn high<F>(&self, partition: i32, ask: impl FnOnce() -> F) -> Option<i64>
    where
        F: Future<Output = Option<i64>>,
    {
        let mut known = self.known.lock().await;
        if let Some((high, at)) = known.get(&partition)
            && at.elapsed() < FRESH
        {
            return *high;
        }
        let high = ask().await;
        known.insert(partition, (high, Instant::now()));
        high
    }
}
