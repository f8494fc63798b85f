//! `/metrics` in the OpenMetrics text format, with `prometheus-client`.
//!
//! What the hot paths count lives here as counters, gauges and a histogram whose handles are
//! resolved once, so a message or a stream costs a few atomic operations. What the server
//! already keeps elsewhere (hub sizes, the history budget, refusals by limit, Kafka's state)
//! is read when scraped, not mirrored.

use axum::{
    extract::State,
    http::Version,
    response::{IntoResponse, Response},
};
use prometheus_client::{
    collector::Collector,
    encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric, text::encode},
    metrics::{
        counter::{ConstCounter, Counter},
        family::Family,
        gauge::{ConstGauge, Gauge},
        histogram::{Histogram, exponential_buckets},
    },
    registry::Registry,
};
use std::sync::{Arc, OnceLock};

use crate::{hub::now_ms, refusals::Limit, state::AppState};

/// The API a stream or message belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Api {
    V1,
    V2,
    V3,
}

impl Api {
    const ALL: [Self; 3] = [Self::V1, Self::V2, Self::V3];

    fn name(self) -> &'static str {
        match self {
            Self::V1 => "v1",
            Self::V2 => "v2",
            Self::V3 => "v3",
        }
    }
}

/// Why a stream ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ended {
    /// The client went away, or its connection was cut by the write timeout.
    ClientGone,
    /// It fell behind: its queue overflowed.
    Slow,
    /// The server shut down.
    Shutdown,
    /// Its token expired.
    TokenExpired,
}

impl Ended {
    fn name(self) -> &'static str {
        match self {
            Self::ClientGone => "client_gone",
            Self::Slow => "slow",
            Self::Shutdown => "shutdown",
            Self::TokenExpired => "token_expired",
        }
    }
}

/// Where a published message came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    Http,
    Kafka,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StreamLabels {
    api: &'static str,
    protocol: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct EndLabels {
    api: &'static str,
    reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RejectLabels {
    status: u16,
    reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SourceLabels {
    api: &'static str,
    source: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ApiLabels {
    api: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabels {
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PartitionLabels {
    partition: i32,
}

fn delay_histogram() -> Histogram {
    // 1 ms to about 33 s.
    Histogram::new(exponential_buckets(0.001, 2.0, 16))
}

/// The server's own series; cheap to clone.
#[derive(Clone)]
pub struct Metrics(Arc<Inner>);

struct Inner {
    streams_open: Family<StreamLabels, Gauge>,
    streams_opened: Family<StreamLabels, Counter>,
    streams_closed: Family<EndLabels, Counter>,
    rejected: Family<RejectLabels, Counter>,
    published: Family<SourceLabels, Counter>,
    /// `published`'s handles by [`Api`] and [`Source`], resolved on first use (so a series
    /// appears once it counts something) and then only incremented.
    published_by: [[OnceLock<Counter>; 2]; 3],
    delay: Family<ApiLabels, Histogram, fn() -> Histogram>,
    kafka_lag: Family<PartitionLabels, Gauge>,
    replays: Family<OutcomeLabels, Counter>,
    replay_records_read: Counter,
    replayed_messages: Counter,
    /// Handles resolved once, indexed by [`Api`], protocol and reason.
    open: [[Gauge; 2]; 3],
    opened: [[Counter; 2]; 3],
    closed: [[Counter; 4]; 3],
    delays: [Histogram; 3],
}

impl Default for Metrics {
    fn default() -> Self {
        let streams_open = Family::<StreamLabels, Gauge>::default();
        let streams_opened = Family::<StreamLabels, Counter>::default();
        let streams_closed = Family::<EndLabels, Counter>::default();
        let delay: Family<ApiLabels, Histogram, fn() -> Histogram> =
            Family::new_with_constructor(delay_histogram);
        let by_protocol = |api: Api, p: usize| StreamLabels {
            api: api.name(),
            protocol: ["h1", "h2"][p],
        };
        let ends = [
            Ended::ClientGone,
            Ended::Slow,
            Ended::Shutdown,
            Ended::TokenExpired,
        ];
        let open = Api::ALL
            .map(|api| [0, 1].map(|p| streams_open.get_or_create(&by_protocol(api, p)).clone()));
        let opened = Api::ALL
            .map(|api| [0, 1].map(|p| streams_opened.get_or_create(&by_protocol(api, p)).clone()));
        let closed = Api::ALL.map(|api| {
            ends.map(|end| {
                let labels = EndLabels {
                    api: api.name(),
                    reason: end.name(),
                };
                streams_closed.get_or_create(&labels).clone()
            })
        });
        let delays =
            Api::ALL.map(|api| delay.get_or_create(&ApiLabels { api: api.name() }).clone());
        Self(Arc::new(Inner {
            streams_open,
            streams_opened,
            streams_closed,
            rejected: Family::default(),
            published: Family::default(),
            published_by: Default::default(),
            delay,
            kafka_lag: Family::default(),
            replays: Family::default(),
            replay_records_read: Counter::default(),
            replayed_messages: Counter::default(),
            open,
            opened,
            closed,
            delays,
        }))
    }
}

impl Metrics {
    /// Counts a stream as open until the returned guard is dropped.
    pub fn stream(&self, api: Api, version: Version) -> StreamTrack {
        let protocol = usize::from(version == Version::HTTP_2);
        self.0.opened[api as usize][protocol].inc();
        self.0.open[api as usize][protocol].inc();
        StreamTrack {
            metrics: self.clone(),
            api,
            protocol,
            ended: Ended::ClientGone,
        }
    }

    pub fn published(&self, api: Api, source: Source) {
        let counter = self.0.published_by[api as usize][source as usize].get_or_init(|| {
            let source = match source {
                Source::Http => "http",
                Source::Kafka => "kafka",
            };
            let labels = SourceLabels {
                api: api.name(),
                source,
            };
            self.0.published.get_or_create(&labels).clone()
        });
        counter.inc();
    }

    pub fn rejected(&self, status: u16, reason: &'static str) {
        let labels = RejectLabels { status, reason };
        self.0.rejected.get_or_create(&labels).inc();
    }

    /// Counts `response` if an [`crate::error::AppError`] made it, by status and reason.
    /// Called where connections hand responses out rather than as a router layer: a layer
    /// wraps every route in one more boxed, cloned service, which cost ~5 % of the
    /// instructions per POST (`bench/examples/instructions_per_message.rs`).
    pub fn count_rejection<B>(&self, response: &axum::http::Response<B>) {
        if let Some(crate::error::Rejected(reason)) = response.extensions().get() {
            self.rejected(response.status().as_u16(), reason);
        }
    }

    /// A v3 resume's read-back from Kafka ended: `filled`, or why it gave a resync.
    pub fn replay(&self, outcome: &'static str) {
        self.0
            .replays
            .get_or_create(&OutcomeLabels { outcome })
            .inc();
    }

    /// Records a read-back read from Kafka, of any user.
    pub fn replay_read(&self, records: u64) {
        self.0.replay_records_read.inc_by(records);
    }

    /// Messages read back and handed to resuming streams.
    pub fn replayed(&self, messages: u64) {
        self.0.replayed_messages.inc_by(messages);
    }

    /// Consumer lag of a partition, as librdkafka's statistics report it.
    pub fn kafka_lag(&self, partition: i32, lag: i64) {
        let labels = PartitionLabels { partition };
        self.0.kafka_lag.get_or_create(&labels).set(lag);
    }
}

/// One open stream, counted in `ssepush_streams_open` while it lives.
pub struct StreamTrack {
    metrics: Metrics,
    api: Api,
    protocol: usize,
    ended: Ended,
}

impl StreamTrack {
    /// Frames published at `stamp` (ms since the Unix epoch) are being written now.
    pub fn writing(&self, stamp: u64) {
        let delay_ms = now_ms().saturating_sub(stamp);
        self.metrics.0.delays[self.api as usize].observe(delay_ms as f64 / 1000.0);
    }

    /// How the stream ends, if not by the client leaving.
    pub fn ends(&mut self, why: Ended) {
        self.ended = why;
    }
}

impl Drop for StreamTrack {
    fn drop(&mut self) {
        let inner = &self.metrics.0;
        inner.open[self.api as usize][self.protocol].dec();
        let reason = match self.ended {
            Ended::ClientGone => 0,
            Ended::Slow => 1,
            Ended::Shutdown => 2,
            Ended::TokenExpired => 3,
        };
        inner.closed[self.api as usize][reason].inc();
    }
}

/// A series read at scrape time: name, help, and values by label (none for a single value).
type Series<L, V> = (&'static str, &'static str, Vec<(Option<L>, V)>);

/// Values kept elsewhere in the server, read at scrape time.
#[derive(Debug)]
struct Snapshot {
    /// Labelled by API.
    gauges: Vec<Series<&'static str, i64>>,
    /// Labelled by a (name, value) pair: `api` or `limit`.
    counters: Vec<Series<(&'static str, &'static str), u64>>,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct LimitLabels {
    limit: &'static str,
}

impl Collector for Snapshot {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        for (name, help, values) in &self.gauges {
            let kind = ConstGauge::new(0i64).metric_type();
            let mut metric = encoder.encode_descriptor(name, help, None, kind)?;
            if let [(None, value)] = values.as_slice() {
                ConstGauge::new(*value).encode(metric)?;
                continue;
            }
            for (api, value) in values {
                let api = api.unwrap_or_default();
                ConstGauge::new(*value).encode(metric.encode_family(&ApiLabels { api })?)?;
            }
        }
        for (name, help, values) in &self.counters {
            let kind = ConstCounter::new(0u64).metric_type();
            let mut metric = encoder.encode_descriptor(name, help, None, kind)?;
            if let [(None, value)] = values.as_slice() {
                ConstCounter::new(*value).encode(metric)?;
                continue;
            }
            for (label, value) in values {
                let counter = ConstCounter::new(*value);
                match *label {
                    Some(("api", api)) => {
                        counter.encode(metric.encode_family(&ApiLabels { api })?)?;
                    }
                    Some((_, limit)) => {
                        counter.encode(metric.encode_family(&LimitLabels { limit })?)?;
                    }
                    // One value without labels is encoded above.
                    None => {}
                }
            }
        }
        Ok(())
    }
}

fn snapshot(state: &AppState) -> Snapshot {
    // One walk over each hub's shards per scrape, shared by every series below.
    let hubs = state.hubs().map(|hub| (hub.name(), hub.stats()));
    let per_hub = |f: &dyn Fn(&crate::hub::HubStats) -> u64| -> Vec<(Option<&'static str>, i64)> {
        hubs.iter()
            .map(|(api, s)| (Some(*api), i64::try_from(f(s)).unwrap_or(i64::MAX)))
            .collect()
    };
    let per_hub_counter = |f: &dyn Fn(&crate::hub::HubStats) -> u64| {
        hubs.iter()
            .map(|(api, s)| (Some(("api", *api)), f(s)))
            .collect::<Vec<_>>()
    };
    let one = |v: u64| vec![(None, i64::try_from(v).unwrap_or(i64::MAX))];
    let memory = &state.memory;
    let mut gauges = vec![
        (
            "stream_clients",
            "Clients with at least one open stream.",
            one(state.budget.clients() as u64),
        ),
        (
            "users",
            "Users the hub keeps: with open streams or history.",
            per_hub(&|s| s.users as u64),
        ),
        (
            "hub_streams",
            "Streams registered in the hub.",
            per_hub(&|s| s.streams as u64),
        ),
        (
            "history_messages",
            "Messages held for resuming.",
            per_hub(&|s| s.history as u64),
        ),
        (
            "history_bytes",
            "Bytes of history held, all users and hubs together.",
            one(memory.used() as u64),
        ),
        (
            "history_budget_bytes",
            "The history budget (--history-max-bytes).",
            one(memory.max() as u64),
        ),
        (
            "publish_rate_clients",
            "Clients with a publish-rate bucket being refilled.",
            one(state.publish_rate.tracked() as u64),
        ),
    ];
    let mut counters = vec![
        (
            "published",
            "Messages published into the hub (v3: records consumed).",
            per_hub_counter(&|s| s.published),
        ),
        (
            "frames_delivered",
            "Message frames queued to streams.",
            per_hub_counter(&|s| s.delivered),
        ),
        (
            "slow_streams_closed",
            "Streams cut because their queue overflowed.",
            per_hub_counter(&|s| s.slow_closed),
        ),
        (
            "history_evicted",
            "History entries evicted by the memory budget.",
            vec![(None, memory.evicted())],
        ),
        (
            "limited",
            "Requests and connections refused or cut by a limit.",
            Limit::ALL
                .iter()
                .map(|l| (Some(("limit", l.name())), state.refusals.total(*l)))
                .collect(),
        ),
    ];
    if let Some(kafka) = &state.kafka {
        let k = kafka.stats();
        gauges.push((
            "kafka_connected",
            "1 while the Kafka consumer is connected.",
            one(u64::from(k.connected)),
        ));
        gauges.push((
            "kafka_partitions_assigned",
            "Partitions the Kafka consumer has now; 0 means v3 records reach no stream here.",
            one(k.partitions as u64),
        ));
        counters.push((
            "kafka_records",
            "Kafka records read.",
            vec![(None, k.records)],
        ));
        gauges.push((
            "kafka_replay_bytes",
            "Bytes of events read back from Kafka and not yet written (--replay-max-bytes).",
            one(kafka.replay_bytes() as u64),
        ));
        counters.push((
            "kafka_records_skipped",
            "Kafka records skipped as malformed or too large.",
            vec![(None, k.skipped)],
        ));
    }
    Snapshot { gauges, counters }
}

/// The registry for one scrape: the live series and a snapshot of the rest.
fn registry(state: &AppState) -> Registry {
    let m = &state.metrics.0;
    let mut registry = Registry::with_prefix("ssepush");
    registry.register(
        "streams_open",
        "Open event streams, by API and protocol (h1 or h2)",
        m.streams_open.clone(),
    );
    registry.register(
        "streams_opened",
        "Event streams opened",
        m.streams_opened.clone(),
    );
    registry.register(
        "streams_closed",
        "Event streams ended, by why: client_gone, slow, shutdown or token_expired",
        m.streams_closed.clone(),
    );
    registry.register(
        "requests_rejected",
        "Requests answered with an error, by status and reason",
        m.rejected.clone(),
    );
    registry.register(
        "messages_published",
        "Messages accepted, by API and source (http or kafka)",
        m.published.clone(),
    );
    registry.register(
        "delivery_delay_seconds",
        "Delay from publication (a Kafka record's timestamp) to the write to the stream's socket",
        m.delay.clone(),
    );
    registry.register(
        "kafka_consumer_lag",
        "Records the consumer is behind, per partition (librdkafka statistics)",
        m.kafka_lag.clone(),
    );
    registry.register(
        "kafka_replays",
        "v3 resumes whose missed messages were read back from Kafka, by outcome: filled, or why a resync was sent instead (gone, too_far, timeout, too_large, unavailable)",
        m.replays.clone(),
    );
    registry.register(
        "kafka_replay_records_read",
        "Kafka records read for read-backs, of any user",
        m.replay_records_read.clone(),
    );
    registry.register(
        "kafka_replayed_messages",
        "Messages read back from Kafka and handed to resuming streams",
        m.replayed_messages.clone(),
    );
    registry.register_collector(Box::new(snapshot(state)));
    registry
}

/// `GET /metrics`.
pub async fn handler(State(state): State<AppState>) -> Response {
    let mut out = String::new();
    if encode(&mut out, &registry(&state)).is_err() {
        return axum::http::StatusCode::INTERNAL_SERVER_ERROR.into_response();
    }
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        out,
    )
        .into_response()
}
