//! Runtime configuration: every port, interval, limit and path is a flag with an env fallback.

use clap::Parser;
use std::{net::IpAddr, path::PathBuf, time::Duration};

fn duration(s: &str) -> Result<Duration, humantime::DurationError> {
    humantime::parse_duration(s)
}

#[derive(Debug, Clone, Parser)]
#[command(
    name = "ssepush",
    version,
    about = "Server-Sent Events push service (v1, v2, v3 APIs)",
    args_override_self = true
)]
pub struct Config {
    /// Address to listen on.
    #[arg(long, env = "HOST", default_value = "0.0.0.0")]
    pub host: IpAddr,

    /// Port to listen on.
    #[arg(long, env = "PORT", default_value_t = 3000)]
    pub port: u16,

    /// TCP listen backlog; connection bursts beyond it see 1 s SYN retries.
    #[arg(long, env = "BACKLOG", default_value_t = 4096)]
    pub backlog: u32,

    /// Directory of the built web UI (trunk's output).
    #[arg(long, env = "STATIC_DIR", default_value = "dist")]
    pub static_dir: PathBuf,

    /// Silence after which a stream gets a `: keep-alive-text` comment.
    #[arg(long, env = "KEEP_ALIVE", default_value = "1s", value_parser = duration)]
    pub keep_alive: Duration,

    /// Period of v1's `data: hi!` events.
    #[arg(long, env = "V1_INTERVAL", default_value = "5s", value_parser = duration)]
    pub v1_interval: Duration,

    /// Reconnection delay suggested to clients with `retry:` when a stream opens.
    #[arg(long, env = "RETRY", default_value = "2s", value_parser = duration)]
    pub retry: Duration,

    /// Messages kept per user for resuming with `Last-Event-ID`.
    #[arg(long, env = "HISTORY_LEN", default_value_t = 1000)]
    pub history_len: usize,

    /// How long a message stays in a user's history.
    #[arg(long, env = "HISTORY_TTL", default_value = "10m", value_parser = duration)]
    pub history_ttl: Duration,

    /// Frames queued per stream; a stream whose queue overflows is closed and must resume.
    #[arg(long, env = "QUEUE_LEN", default_value_t = 256)]
    pub queue_len: usize,

    /// Largest accepted message body, in bytes.
    #[arg(long, env = "MAX_BODY", default_value_t = 64 * 1024)]
    pub max_body: usize,

    /// Open streams allowed per user and API version.
    #[arg(long, env = "MAX_STREAMS_PER_USER", default_value_t = 16)]
    pub max_streams_per_user: usize,

    /// Open streams allowed on this server, all versions together.
    #[arg(long, env = "MAX_STREAMS", default_value_t = 19_500)]
    pub max_streams: usize,

    /// Kafka bootstrap servers for v3; empty switches Kafka off (v3 POSTs then answer 503).
    #[arg(long, env = "KAFKA_BROKERS", default_value = "localhost:9092")]
    pub kafka_brokers: String,

    /// Topic of v3 records (`username:message`).
    #[arg(long, env = "KAFKA_TOPIC", default_value = "v3_messages")]
    pub kafka_topic: String,

    /// Consumer group of this instance [default: ssepush-<hostname>-<port>]. Each instance
    /// needs its own, so that every instance reads every record; keep it stable across
    /// restarts to resume from the committed offsets.
    #[arg(long, env = "KAFKA_GROUP")]
    pub kafka_group: Option<String>,

    /// How long a v3 POST waits for Kafka's acknowledgement before answering 503.
    #[arg(long, env = "KAFKA_TIMEOUT", default_value = "5s", value_parser = duration)]
    pub kafka_timeout: Duration,

    /// The longest a Kafka fetch waits at the broker for new records. Brokers that answer a
    /// fetch only when it runs out add up to this much delay from produce to stream; Apache
    /// Kafka answers as soon as records arrive, and only polls an idle topic this often.
    #[arg(long, env = "KAFKA_FETCH_WAIT", default_value = "10ms", value_parser = duration)]
    pub kafka_fetch_wait: Duration,

    /// Kafka consumer session timeout: how soon a dead instance's group membership lapses.
    #[arg(long, env = "KAFKA_SESSION_TIMEOUT", default_value = "10s", value_parser = duration)]
    pub kafka_session_timeout: Duration,

    /// How long shutdown waits for connections to finish before exiting anyway.
    #[arg(long, env = "SHUTDOWN_GRACE", default_value = "3s", value_parser = duration)]
    pub shutdown_grace: Duration,
}

impl Config {
    /// The defaults, as `ssepush` with no flags and no env would run.
    pub fn defaults() -> Self {
        Self::parse_from(["ssepush"])
    }

    /// Parses a full argument list (program name first), with env fallbacks.
    pub fn from_args<I, T>(args: I) -> Result<Self, clap::Error>
    where
        I: IntoIterator<Item = T>,
        T: Into<std::ffi::OsString> + Clone,
    {
        Self::try_parse_from(args)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_is_consistent() {
        Config::command().debug_assert();
    }

    #[test]
    fn durations_parse() {
        let c = Config::try_parse_from(["ssepush", "--keep-alive", "250ms", "--history-ttl", "2m"])
            .unwrap();
        assert_eq!(c.keep_alive, Duration::from_millis(250));
        assert_eq!(c.history_ttl, Duration::from_secs(120));
    }
}
