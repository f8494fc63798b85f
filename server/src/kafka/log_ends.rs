//! Where each partition's log ends now, asked of the broker at most once a second per
//! partition, for resumes from ids this process has not read as far as.

use rdkafka::consumer::Consumer;
use std::{collections::HashMap, sync::Arc, time::Duration};
use tokio::{sync::Mutex, time::Instant};

use super::{
    calls::Calls,
    consumer::{KafkaConsumer, REQUEST_TIMEOUT},
};

/// How long an answer (or a failure) stands: a client can then make the server ask the
/// broker no more often than this, however many resumes it sends.
const FRESH: Duration = Duration::from_secs(1);

pub struct LogEnds {
    consumer: Arc<KafkaConsumer>,
    topic: String,
    calls: Calls,
    /// Per partition, its high watermark (`None`: the broker did not say) and when it was
    /// asked. Held across the request, so resumes arriving meanwhile wait for its answer
    /// rather than ask again.
    known: Mutex<HashMap<i32, (Option<i64>, Instant)>>,
}

impl LogEnds {
    pub fn new(consumer: Arc<KafkaConsumer>, topic: String, calls: Calls) -> Self {
        Self {
            consumer,
            topic,
            calls,
            known: Mutex::default(),
        }
    }

    /// One past `partition`'s last record, or `None` when the broker does not say.
    pub async fn high(&self, partition: i32) -> Option<i64> {
        let mut known = self.known.lock().await;
        if let Some((high, at)) = known.get(&partition)
            && at.elapsed() < FRESH
        {
            return *high;
        }
        let (consumer, topic) = (self.consumer.clone(), self.topic.clone());
        let high = self
            .calls
            .run(move || consumer.fetch_watermarks(&topic, partition, REQUEST_TIMEOUT))
            .await
            .ok()
            .and_then(Result::ok)
            .map(|(_, high)| high);
        known.insert(partition, (high, Instant::now()));
        high
    }
}
