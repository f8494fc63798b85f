//! Shutdown without a reconnect storm: open streams end spread over `--drain`, in random
//! order, rather than all in one millisecond, so their clients come back to other instances
//! at a steady rate. (v1 streams, which no hub holds, each end at a random moment of their own.)

use std::time::Duration;
use tokio::time::{Instant, MissedTickBehavior};

use crate::hub::{Closed, Hub};

/// How often a slice of streams is ended.
const STEP: Duration = Duration::from_millis(10);

/// Refuses new streams on `hubs` and ends the open ones evenly over `over`.
pub async fn end_streams(hubs: &[&Hub], over: Duration) {
    let mut queues: Vec<_> = hubs.iter().flat_map(|hub| hub.stop_accepting()).collect();
    fastrand::shuffle(&mut queues);
    let total = queues.len();
    tracing::info!(streams = total, over = ?over, "ending open streams");
    let start = Instant::now();
    let mut tick = tokio::time::interval(STEP);
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut ended = 0;
    while ended < total {
        tick.tick().await;
        let due = if over.is_zero() {
            total
        } else {
            let share = start.elapsed().as_secs_f64() / over.as_secs_f64();
            ((total as f64 * share).ceil() as usize).min(total)
        };
        for queue in &queues[ended..due] {
            queue.close(Closed::Shutdown);
        }
        ended = due.max(ended);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hub::{HistoryMemory, HubConfig, LastSeen, Next, Numbering, Subscription};
    use std::task::{Context, Poll, Waker};

    fn ended(sub: &Subscription) -> bool {
        let mut cx = Context::from_waker(Waker::noop());
        matches!(
            sub.queue.poll_next(&mut cx),
            Poll::Ready(Next::Closed(Closed::Shutdown))
        )
    }

    /// On paused time: a tenth of the streams end in each tenth of the drain period.
    #[tokio::test(start_paused = true)]
    async fn streams_end_evenly_over_the_period() {
        let config = HubConfig {
            name: "v2",
            history_len: 10,
            history_ttl: Duration::from_secs(60),
            queue_len: 10,
            max_streams_per_user: 1,
            numbering: Numbering::Own,
            backfill: false,
        };
        let hub = Hub::new(config, HistoryMemory::new(usize::MAX));
        let subs: Vec<_> = (0..100)
            .map(|i| {
                hub.subscribe(&format!("u{i}"), &LastSeen::Nothing, None)
                    .unwrap()
            })
            .collect();
        let started = Instant::now();
        let drain = tokio::spawn({
            let hub = hub.clone();
            async move { end_streams(&[&hub], Duration::from_secs(1)).await }
        });
        for tenth in 1..=10u32 {
            tokio::time::sleep_until(started + Duration::from_millis(100) * tenth).await;
            tokio::task::yield_now().await;
            let closed = subs.iter().filter(|s| ended(s)).count();
            let want = 10 * tenth as usize;
            assert!(
                closed.abs_diff(want) <= 2,
                "{closed} ended after {tenth} tenths, want about {want}"
            );
        }
        drain.await.unwrap();
        assert!(hub.subscribe("late", &LastSeen::Nothing, None).is_err());
    }
}
