//! Where each partition's log ended when this process started.
//!
//! On a broker without a time index a new instance starts reading at the log's end rather
//! than read every old record ([`super::consumer`]). That end must be the one from before any
//! v3 stream opened here: a record produced after a stream opened is live for it, and the
//! consumer is handed its partitions only later, seconds later on a slow group join. So the ends
//! are asked for at start-up, and v3 streams opened before the answer wait for it, up to
//! [`WAIT`] after start.

use rdkafka::consumer::Consumer;
use std::{collections::HashMap, sync::Arc, time::Duration};
use tokio::{sync::watch, time::Instant};
use tokio_util::{sync::CancellationToken, task::TaskTracker};

use super::{
    calls::Calls,
    consumer::{KafkaConsumer, REQUEST_TIMEOUT},
};

/// How long after start-up anything waits for the ends: a broker that is down then must not
/// hold v3 streams for long.
const WAIT: Duration = Duration::from_secs(3);
const RETRY: Duration = Duration::from_millis(500);

/// Each partition's high watermark at start-up. A partition missing from it did not exist
/// then: all of its records came later.
pub type Ends = Arc<HashMap<i32, i64>>;

/// A cheap `Clone` handle on the ends, known once the broker has answered.
#[derive(Clone)]
pub struct StartEnds {
    ends: watch::Receiver<Option<Ends>>,
    deadline: Instant,
}

impl StartEnds {
    /// Starts asking the broker, again every [`RETRY`] until it answers or shutdown.
    pub fn ask(
        consumer: Arc<KafkaConsumer>,
        topic: String,
        calls: Calls,
        tasks: &TaskTracker,
        shutdown: CancellationToken,
    ) -> Self {
        let (known, ends) = watch::channel(None);
        let deadline = Instant::now() + WAIT;
        tasks.spawn(async move {
            let mut failures = 0u32;
            loop {
                let (consumer, topic) = (consumer.clone(), topic.clone());
                match calls.run(move || fetch(&consumer, &topic)).await {
                    Ok(Ok(ends)) => {
                        tracing::debug!(?ends, "kafka: partition ends at start-up");
                        known.send_replace(Some(Arc::new(ends)));
                        return;
                    }
                    Ok(Err(e)) => {
                        failures += 1;
                        if failures == 1 {
                            tracing::debug!(error = %e, "kafka: partition ends at start-up not known yet; retrying");
                        }
                    }
                    Err(_) => return,
                }
                tokio::select! {
                    () = shutdown.cancelled() => return,
                    () = tokio::time::sleep(RETRY) => {}
                }
            }
        });
        Self { ends, deadline }
    }

    /// The ends, once known; waits for them until [`WAIT`] after start-up, then `None` while
    /// they are not.
    pub async fn get(&self) -> Option<Ends> {
        let mut ends = self.ends.clone();
        let known = tokio::time::timeout_at(self.deadline, ends.wait_for(Option::is_some)).await;
        match known {
            Ok(Ok(ends)) => ends.clone(),
            _ => self.ends.borrow().clone(),
        }
    }
}

fn fetch(consumer: &KafkaConsumer, topic: &str) -> anyhow::Result<HashMap<i32, i64>> {
    let metadata = consumer.fetch_metadata(Some(topic), REQUEST_TIMEOUT)?;
    let mut ends = HashMap::new();
    let Some(t) = metadata.topics().iter().find(|t| t.name() == topic) else {
        return Ok(ends);
    };
    if let Some(e) = t.error() {
        // No such topic yet: whatever it will hold comes after start-up.
        if e == rdkafka::types::RDKafkaRespErr::RD_KAFKA_RESP_ERR_UNKNOWN_TOPIC_OR_PART {
            return Ok(ends);
        }
        anyhow::bail!("topic metadata error {e:?}");
    }
    for p in t.partitions() {
        let (_, high) = consumer.fetch_watermarks(topic, p.id(), REQUEST_TIMEOUT)?;
        ends.insert(p.id(), high);
    }
    Ok(ends)
}
