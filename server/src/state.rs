//! What every handler can reach.

use axum::extract::FromRef;
use std::sync::Arc;
use tokio_util::sync::CancellationToken;

use crate::{
    auth::Auth,
    budget::StreamBudget,
    client::TrustedProxies,
    config::Config,
    cors::Origins,
    error::retry_after_secs,
    hub::{HistoryMemory, Hub, HubConfig, Numbering},
    kafka::{self, Kafka},
    publish_rate::PublishRate,
    refusals::Refusals,
};

#[derive(Clone)]
pub struct AppState {
    pub config: Arc<Config>,
    pub budget: StreamBudget,
    /// Whose `X-Forwarded-For` names the client.
    pub trusted: TrustedProxies,
    /// Each client's bucket of v2 and v3 POSTs.
    pub publish_rate: PublishRate,
    /// Requests refused by a limit, counted and logged.
    pub refusals: Refusals,
    pub v2: Hub,
    pub v3: Hub,
    /// The history budget both hubs share.
    pub memory: HistoryMemory,
    /// v3's Kafka clients; `None` when Kafka is switched off.
    pub kafka: Option<Kafka>,
    /// The series `/metrics` shows that are counted as they happen.
    pub metrics: crate::metrics::Metrics,
    /// Who may read and publish what; off unless a key is configured.
    pub auth: Auth,
    /// Other origins whose pages may call the API.
    pub origins: Origins,
    /// Cancelled when shutdown starts; streams not owned by a hub end on it.
    pub shutdown: CancellationToken,
}

impl AppState {
    /// Everything the handlers reach, v3's Kafka clients included: they are started here when
    /// brokers are configured (they need not be up), so no handler ever sees them half set up.
    pub fn new(config: Config, shutdown: CancellationToken) -> anyhow::Result<Self> {
        let memory = HistoryMemory::new(config.history_max_bytes);
        let metrics = crate::metrics::Metrics::default();
        let settings = kafka::Settings::from_config(&config);
        let kafka_on = settings.is_some();
        let hub = |name, numbering| {
            Hub::new(
                hub_config(&config, name, numbering, kafka_on),
                memory.clone(),
            )
        };
        let v3 = hub("v3", Numbering::Source);
        let kafka = match settings {
            Some(settings) => Some(Kafka::start(
                settings,
                v3.clone(),
                metrics.clone(),
                shutdown.clone(),
            )?),
            None => {
                tracing::warn!(
                    "kafka is switched off: v3 streams get no messages and v3 POSTs answer 503"
                );
                None
            }
        };
        Ok(Self {
            auth: Auth::from_config(&config)?,
            origins: Origins::new(&config.cors_origins, config.cors_credentials),
            budget: StreamBudget::new(
                config.max_streams,
                config.max_streams_per_client,
                retry_after_secs(config.retry),
            ),
            trusted: TrustedProxies::new(&config.trusted_proxies),
            publish_rate: PublishRate::new(config.publish_rate, config.publish_burst),
            refusals: Refusals::default(),
            v2: hub("v2", Numbering::Own),
            v3,
            memory,
            kafka,
            config: Arc::new(config),
            metrics,
            shutdown,
        })
    }

    pub fn hubs(&self) -> [&Hub; 2] {
        [&self.v2, &self.v3]
    }
}

/// A hub's settings under `config`; `kafka_on` when v3 has Kafka clients.
pub fn hub_config(
    config: &Config,
    name: &'static str,
    numbering: Numbering,
    kafka_on: bool,
) -> HubConfig {
    HubConfig {
        name,
        history_len: config.history_len,
        history_ttl: config.history_ttl,
        queue_len: config.queue_len,
        max_streams_per_user: config.max_streams_per_user,
        numbering,
        // v3 resumes read back from Kafka what the history lacks.
        backfill: numbering == Numbering::Source && kafka_on,
    }
}

impl FromRef<AppState> for TrustedProxies {
    fn from_ref(state: &AppState) -> Self {
        state.trusted.clone()
    }
}
