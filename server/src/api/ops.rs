//! Liveness, readiness and metrics.

use axum::{
    Json,
    extract::State,
    http::{StatusCode, header},
    response::IntoResponse,
};
use std::fmt::Write;

use crate::{refusals::Limit, state::AppState};

pub async fn healthz() -> &'static str {
    "ok\n"
}

pub async fn readyz(State(state): State<AppState>) -> impl IntoResponse {
    let (ready, reason) = if state.shutdown.is_cancelled() {
        (false, "shutting down".to_owned())
    } else {
        match &state.kafka {
            Some(kafka) => kafka.readiness(),
            None => (true, "serving; kafka is switched off".to_owned()),
        }
    };
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(wire::Readiness { ready, reason }))
}

/// Prometheus text format.
pub async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    let mut out = String::new();
    let _ = writeln!(out, "# TYPE ssepush_streams_open gauge");
    let _ = writeln!(out, "ssepush_streams_open {}", state.budget.open());
    let _ = writeln!(out, "# TYPE ssepush_stream_clients gauge");
    let _ = writeln!(out, "ssepush_stream_clients {}", state.budget.clients());
    // One walk over each hub's shards per scrape, shared by every series below.
    let stats = state.hubs().map(|hub| (hub.name(), hub.stats()));
    let mut gauge = |name: &str, kind: &str, f: &dyn Fn(&crate::hub::HubStats) -> u64| {
        let _ = writeln!(out, "# TYPE ssepush_{name} {kind}");
        for (api, hub) in &stats {
            let _ = writeln!(out, "ssepush_{name}{{api=\"{api}\"}} {}", f(hub));
        }
    };
    gauge("users", "gauge", &|s| s.users as u64);
    gauge("hub_streams", "gauge", &|s| s.streams as u64);
    gauge("history_messages", "gauge", &|s| s.history as u64);
    gauge("published_total", "counter", &|s| s.published);
    gauge("slow_streams_closed_total", "counter", &|s| s.slow_closed);
    let memory = &state.memory;
    let _ = writeln!(out, "# TYPE ssepush_history_bytes gauge");
    let _ = writeln!(out, "ssepush_history_bytes {}", memory.used());
    let _ = writeln!(out, "# TYPE ssepush_history_budget_bytes gauge");
    let _ = writeln!(out, "ssepush_history_budget_bytes {}", memory.max());
    let _ = writeln!(out, "# TYPE ssepush_history_evicted_total counter");
    let _ = writeln!(out, "ssepush_history_evicted_total {}", memory.evicted());
    let _ = writeln!(out, "# TYPE ssepush_publish_rate_clients gauge");
    let _ = writeln!(
        out,
        "ssepush_publish_rate_clients {}",
        state.publish_rate.tracked()
    );
    let _ = writeln!(out, "# TYPE ssepush_limited_total counter");
    for limit in Limit::ALL {
        let (name, n) = (limit.name(), state.refusals.total(limit));
        let _ = writeln!(out, "ssepush_limited_total{{limit=\"{name}\"}} {n}");
    }
    if let Some(kafka) = &state.kafka {
        let k = kafka.stats();
        let _ = writeln!(out, "# TYPE ssepush_kafka_connected gauge");
        let _ = writeln!(out, "ssepush_kafka_connected {}", u8::from(k.connected));
        let _ = writeln!(out, "# TYPE ssepush_kafka_records_total counter");
        let _ = writeln!(out, "ssepush_kafka_records_total {}", k.records);
        let _ = writeln!(out, "# TYPE ssepush_kafka_records_skipped_total counter");
        let _ = writeln!(out, "ssepush_kafka_records_skipped_total {}", k.skipped);
    }
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], out)
}
