//! Runtime configuration: every port, interval, limit and path is a flag with an env fallback.

use clap::{CommandFactory, Parser, error::ErrorKind};
use ipnet::IpNet;
use std::{net::IpAddr, path::PathBuf, time::Duration};

fn duration(s: &str) -> Result<Duration, humantime::DurationError> {
    humantime::parse_duration(s)
}

/// A size in bytes: a plain number, or one with a binary unit (`64KiB`, `256MiB`, `1GiB`).
fn bytes(s: &str) -> Result<usize, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (digits, unit) = s.split_at(split);
    let shift = match unit.trim() {
        "" | "B" => 0,
        "KiB" => 10,
        "MiB" => 20,
        "GiB" => 30,
        other => return Err(format!("unknown unit {other:?}: use B, KiB, MiB or GiB")),
    };
    let n: usize = digits
        .parse()
        .map_err(|_| format!("{s:?} is not a size in bytes"))?;
    n.checked_mul(1 << shift)
        .ok_or_else(|| format!("{s:?} is too large"))
}

#[derive(Debug, Clone, Parser)]
#[command(
    name = "ssepush",
    version,
    about = "Server-Sent Events push service (v1, v2, v3 APIs)",
    args_override_self = true,
    args_conflicts_with_subcommands = true
)]
pub struct Config {
    /// Run a tool instead of the server.
    #[command(subcommand)]
    pub command: Option<Command>,

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

    /// Memory for the history of all users together, counted on the encoded events (e.g.
    /// `256MiB`). When it is full the oldest messages of users without a stream open here go
    /// first, then the oldest of all; a client resuming from one of them gets a resync.
    #[arg(long, env = "HISTORY_MAX_BYTES", default_value = "256MiB", value_parser = bytes)]
    pub history_max_bytes: usize,

    /// Largest message as an encoded event: each line of a message becomes a `data: ` line,
    /// so line breaks cost 7 bytes each. A POST over it is answered 413, a Kafka record over
    /// it is skipped.
    #[arg(long, env = "MAX_FRAME_BYTES", default_value = "128KiB", value_parser = bytes)]
    pub max_frame_bytes: usize,

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

    /// Open streams allowed per client (an IPv4 address or IPv6 /64; see --trusted-proxy), all
    /// versions together.
    #[arg(long, env = "MAX_STREAMS_PER_CLIENT", default_value_t = 64)]
    pub max_streams_per_client: usize,

    /// Messages a client may POST per second, v2 and v3 together (a token bucket per client).
    #[arg(long, env = "PUBLISH_RATE", default_value_t = 50)]
    pub publish_rate: u32,

    /// How many messages a client may POST at once before --publish-rate applies (the
    /// bucket's size).
    #[arg(long, env = "PUBLISH_BURST", default_value_t = 100)]
    pub publish_burst: u32,

    /// A reverse proxy whose `X-Forwarded-For` is believed, as a CIDR or an address
    /// (repeatable; the env variable takes a comma-separated list). Without one, every client
    /// is its TCP peer address and `X-Forwarded-For` is ignored.
    #[arg(
        long = "trusted-proxy",
        env = "TRUSTED_PROXIES",
        value_name = "CIDR",
        value_delimiter = ',',
        value_parser = crate::client::parse_cidr
    )]
    pub trusted_proxies: Vec<IpNet>,

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

    /// The most records of a partition read back from Kafka for one resuming v3 client whose
    /// last id the history no longer covers; a longer gap gets a resync.
    #[arg(long, env = "REPLAY_MAX_RECORDS", default_value_t = 100_000)]
    pub replay_max_records: u64,

    /// Readers for those read-backs, each one Kafka connection; gaps queue for them, and a
    /// reader serves every queued gap of a partition in one pass.
    #[arg(long, env = "REPLAY_MAX_CONCURRENT", default_value_t = 2)]
    pub replay_max_concurrent: usize,

    /// How long a resuming v3 client waits for its read-back before it gets a resync.
    #[arg(long, env = "REPLAY_TIMEOUT", default_value = "10s", value_parser = duration)]
    pub replay_timeout: Duration,

    /// Memory for read-back events not yet written, all clients together; a read-back that
    /// does not fit gets a resync.
    #[arg(long, env = "REPLAY_MAX_BYTES", default_value = "64MiB", value_parser = bytes)]
    pub replay_max_bytes: usize,

    /// Kafka consumer session timeout: how soon a dead instance's group membership lapses.
    #[arg(long, env = "KAFKA_SESSION_TIMEOUT", default_value = "10s", value_parser = duration)]
    pub kafka_session_timeout: Duration,

    /// How long a client may take to send a request head, counted from when the server starts
    /// waiting for it (on a new connection, from the accept).
    #[arg(long, env = "HEAD_TIMEOUT", default_value = "30s", value_parser = duration)]
    pub head_timeout: Duration,

    /// How long a client may take to send a whole request body; slower ones get 408.
    #[arg(long, env = "BODY_TIMEOUT", default_value = "10s", value_parser = duration)]
    pub body_timeout: Duration,

    /// A connection whose socket takes no byte of what it is sent for this long is closed:
    /// a stream's reader that stopped, or a peer that vanished.
    #[arg(long, env = "WRITE_TIMEOUT", default_value = "30s", value_parser = duration)]
    pub write_timeout: Duration,

    /// How long shutdown waits for connections to finish before exiting anyway.
    #[arg(long, env = "SHUTDOWN_GRACE", default_value = "3s", value_parser = duration)]
    pub shutdown_grace: Duration,

    /// On shutdown, open streams are ended spread over this long rather than all at once, so
    /// their clients do not reconnect elsewhere in one burst. --shutdown-grace comes after it.
    #[arg(long, env = "DRAIN", default_value = "5s", value_parser = duration)]
    pub drain: Duration,

    /// Log lines as text, or as one JSON object per line for a log shipper.
    #[arg(long, env = "LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,

    /// Certificate chain (PEM, leaf first): serves HTTPS, with HTTP/2 and HTTP/1.1, on
    /// --tls-port beside plain HTTP on --port. Needs --tls-key.
    #[arg(long, env = "TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,

    /// Private key (PEM) of --tls-cert.
    #[arg(long, env = "TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,

    /// Port for HTTPS when --tls-cert is given.
    #[arg(long, env = "TLS_PORT", default_value_t = 3443)]
    pub tls_port: u16,

    /// Switches on authorization with HS256 tokens signed with this secret (at least 32
    /// bytes). Streams then need a token for their user, POSTs one that may publish to theirs.
    #[arg(
        long,
        env = "AUTH_SECRET",
        hide_env_values = true,
        conflicts_with = "auth_public_key"
    )]
    pub auth_secret: Option<String>,

    /// Switches on authorization with ES256 or RS256 tokens, verified with this public key
    /// (PEM; the key's type picks the algorithm).
    #[arg(long, env = "AUTH_PUBLIC_KEY", value_name = "FILE")]
    pub auth_public_key: Option<PathBuf>,

    /// Tokens must name this audience (`aud`). Without it, `aud` is not checked.
    #[arg(long, env = "AUTH_AUDIENCE")]
    pub auth_audience: Option<String>,

    /// Cookie that may carry a stream's token, for pages served from this origin.
    #[arg(long, env = "AUTH_COOKIE", default_value = "ssepush_token")]
    pub auth_cookie: String,

    /// How long before its token expires a stream gets a `token-expiring` event; it ends when
    /// the token expires.
    #[arg(long, env = "TOKEN_EXPIRY_NOTICE", default_value = "30s", value_parser = duration)]
    pub token_expiry_notice: Duration,

    /// Serves /metrics on this address (without a token) instead of on --port.
    #[arg(long, env = "METRICS_ADDR", value_name = "ADDR")]
    pub metrics_addr: Option<std::net::SocketAddr>,

    /// An origin whose pages may use the API from the browser (CORS), e.g.
    /// `https://app.example.com` (repeatable; the env variable takes a comma-separated list).
    /// `*` allows any origin, without credentials. Without one, only pages from this server's
    /// own origin may: cross-origin POSTs are refused.
    #[arg(
        long = "cors-origin",
        env = "CORS_ORIGINS",
        value_name = "ORIGIN",
        value_delimiter = ','
    )]
    pub cors_origins: Vec<String>,

    /// Lets the listed --cors-origin pages send cookies (a stream's token cookie). Refused
    /// with `*`.
    #[arg(long, env = "CORS_CREDENTIALS")]
    pub cors_credentials: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

/// Tools that run instead of the server.
#[derive(Debug, Clone, clap::Subcommand)]
pub enum Command {
    /// Prints a token for development, signed with the server's secret or private key.
    Token(crate::auth::mint::TokenArgs),

    /// Writes a self-signed certificate and its key (PEM) for development over HTTPS.
    SelfSigned {
        /// Where the certificate goes.
        #[arg(long)]
        cert: PathBuf,
        /// Where the private key goes (mode 0600).
        #[arg(long)]
        key: PathBuf,
        /// Names the certificate is valid for (repeatable).
        #[arg(long = "name", default_values = ["localhost", "127.0.0.1", "::1"])]
        names: Vec<String>,
    },
}

/// Room for the id line and a short message.
const MIN_FRAME_BYTES: usize = 256;

const DAY: Duration = Duration::from_secs(24 * 60 * 60);

impl Config {
    /// The defaults, as `ssepush` with no flags and no env would run.
    pub fn defaults() -> Self {
        Self::parse_from(["ssepush"])
    }

    /// Parses the process's arguments, with env fallbacks. Like any usage error, a value out of
    /// range prints the reason and exits with status 2.
    pub fn from_command_line() -> Self {
        let config = Self::parse();
        if let Err(reason) = config.validate() {
            Self::command()
                .error(ErrorKind::ValueValidation, reason)
                .exit();
        }
        config
    }

    /// Parses a full argument list (program name first), with env fallbacks, and checks the
    /// values are in range.
    pub fn from_args<I, T>(args: I) -> Result<Self, clap::Error>
    where
        I: IntoIterator<Item = T>,
        T: Into<std::ffi::OsString> + Clone,
    {
        let config = Self::try_parse_from(args)?;
        config
            .validate()
            .map_err(|reason| Self::command().error(ErrorKind::ValueValidation, reason))?;
        Ok(config)
    }

    /// Refuses values the server cannot run with: a zero keep-alive or v1 interval makes every
    /// stream send in a tight loop, a zero queue, history or stream limit refuses everything.
    /// The reason names the flag (whether the value came from it or from its env variable).
    pub fn validate(&self) -> Result<(), String> {
        let ms = Duration::from_millis;
        let durations = [
            ("--keep-alive", self.keep_alive, ms(100), Some(DAY)),
            ("--v1-interval", self.v1_interval, ms(100), Some(DAY)),
            ("--retry", self.retry, ms(1), Some(DAY)),
            ("--history-ttl", self.history_ttl, ms(100), None),
            ("--kafka-timeout", self.kafka_timeout, ms(100), None),
            ("--replay-timeout", self.replay_timeout, ms(100), Some(DAY)),
            (
                "--kafka-fetch-wait",
                self.kafka_fetch_wait,
                ms(1),
                Some(Duration::from_secs(60)),
            ),
            (
                "--token-expiry-notice",
                self.token_expiry_notice,
                Duration::ZERO,
                Some(DAY),
            ),
            ("--head-timeout", self.head_timeout, ms(100), Some(DAY)),
            ("--body-timeout", self.body_timeout, ms(100), Some(DAY)),
            ("--write-timeout", self.write_timeout, ms(100), Some(DAY)),
            (
                "--drain",
                self.drain,
                Duration::ZERO,
                Some(Duration::from_secs(3600)),
            ),
            (
                "--kafka-session-timeout",
                self.kafka_session_timeout,
                ms(1000),
                None,
            ),
        ];
        let show = humantime::format_duration;
        for (flag, value, min, max) in durations {
            if value < min {
                return Err(format!(
                    "{flag} must be at least {} (got {})",
                    show(min),
                    show(value)
                ));
            }
            if let Some(max) = max.filter(|&max| value > max) {
                return Err(format!(
                    "{flag} must be at most {} (got {})",
                    show(max),
                    show(value)
                ));
            }
        }
        let counts = [
            ("--backlog", self.backlog as usize),
            ("--history-len", self.history_len),
            ("--queue-len", self.queue_len),
            ("--max-body", self.max_body),
            ("--max-streams-per-user", self.max_streams_per_user),
            ("--max-streams", self.max_streams),
            ("--max-streams-per-client", self.max_streams_per_client),
            ("--publish-rate", self.publish_rate as usize),
            ("--publish-burst", self.publish_burst as usize),
            ("--replay-max-concurrent", self.replay_max_concurrent),
        ];
        if let Some((flag, value)) = counts.into_iter().find(|&(_, value)| value < 1) {
            return Err(format!("{flag} must be at least 1 (got {value})"));
        }
        if let Some(secret) = &self.auth_secret
            && secret.len() < crate::auth::MIN_SECRET_BYTES
        {
            return Err(format!(
                "--auth-secret must be at least {} bytes (got {})",
                crate::auth::MIN_SECRET_BYTES,
                secret.len()
            ));
        }
        crate::cors::check(&self.cors_origins, self.cors_credentials)?;
        if self.max_frame_bytes < MIN_FRAME_BYTES {
            return Err(format!(
                "--max-frame-bytes must be at least {MIN_FRAME_BYTES} (got {})",
                self.max_frame_bytes
            ));
        }
        if self.history_max_bytes < 2 * self.max_frame_bytes {
            return Err(format!(
                "--history-max-bytes must be at least twice --max-frame-bytes ({}; got {})",
                2 * self.max_frame_bytes,
                self.history_max_bytes
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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

    #[test]
    fn trusted_proxies_repeat_and_split() {
        let c = Config::try_parse_from([
            "ssepush",
            "--trusted-proxy",
            "10.0.0.0/8,192.168.1.1",
            "--trusted-proxy=fd00::/8",
        ])
        .unwrap();
        let shown: Vec<String> = c.trusted_proxies.iter().map(|n| n.to_string()).collect();
        assert_eq!(shown, ["10.0.0.0/8", "192.168.1.1/32", "fd00::/8"]);
        assert!(Config::defaults().trusted_proxies.is_empty());
        let bad = Config::try_parse_from(["ssepush", "--trusted-proxy", "10.0.0.0/33"]);
        assert_eq!(bad.unwrap_err().kind(), ErrorKind::ValueValidation);
    }

    #[test]
    fn defaults_are_valid() {
        assert_eq!(Config::defaults().validate(), Ok(()));
        assert!(Config::from_args(["ssepush"]).is_ok());
    }

    fn refusal(args: &[&str]) -> String {
        let argv = std::iter::once("ssepush").chain(args.iter().copied());
        let config = Config::try_parse_from(argv).unwrap();
        config.validate().unwrap_err()
    }

    #[test]
    fn out_of_range_values_are_refused_by_name() {
        let cases: &[(&[&str], &str)] = &[
            (
                &["--keep-alive", "0s"],
                "--keep-alive must be at least 100ms (got 0s)",
            ),
            (
                &["--kafka-fetch-wait", "0s"],
                "--kafka-fetch-wait must be at least 1ms (got 0s)",
            ),
            (
                &["--keep-alive", "99ms"],
                "--keep-alive must be at least 100ms (got 99ms)",
            ),
            (
                &["--keep-alive", "2days"],
                "--keep-alive must be at most 1day (got 2days)",
            ),
            (
                &["--v1-interval", "0s"],
                "--v1-interval must be at least 100ms (got 0s)",
            ),
            (
                &["--v1-interval", "25h"],
                "--v1-interval must be at most 1day (got 1day 1h)",
            ),
            (&["--retry", "0s"], "--retry must be at least 1ms (got 0s)"),
            (
                &["--retry", "1day 1s"],
                "--retry must be at most 1day (got 1day 1s)",
            ),
            (
                &["--history-ttl", "0s"],
                "--history-ttl must be at least 100ms (got 0s)",
            ),
            (
                &["--kafka-timeout", "10ms"],
                "--kafka-timeout must be at least 100ms (got 10ms)",
            ),
            (
                &["--kafka-session-timeout", "999ms"],
                "--kafka-session-timeout must be at least 1s (got 999ms)",
            ),
            (&["--backlog", "0"], "--backlog must be at least 1 (got 0)"),
            (
                &["--history-len", "0"],
                "--history-len must be at least 1 (got 0)",
            ),
            (
                &["--queue-len", "0"],
                "--queue-len must be at least 1 (got 0)",
            ),
            (
                &["--max-body", "0"],
                "--max-body must be at least 1 (got 0)",
            ),
            (
                &["--max-streams-per-user", "0"],
                "--max-streams-per-user must be at least 1 (got 0)",
            ),
            (
                &["--max-streams", "0"],
                "--max-streams must be at least 1 (got 0)",
            ),
            (
                &["--max-streams-per-client", "0"],
                "--max-streams-per-client must be at least 1 (got 0)",
            ),
            (
                &["--publish-rate", "0"],
                "--publish-rate must be at least 1 (got 0)",
            ),
            (
                &["--publish-burst", "0"],
                "--publish-burst must be at least 1 (got 0)",
            ),
        ];
        for (args, reason) in cases {
            assert_eq!(refusal(args), *reason, "{args:?}");
            // `from_args`, which the tests' servers use, refuses them too.
            let argv = std::iter::once("ssepush").chain(args.iter().copied());
            let error = Config::from_args(argv).unwrap_err();
            assert_eq!(error.kind(), ErrorKind::ValueValidation);
            assert!(error.to_string().contains(reason), "{error}");
        }
    }

    #[test]
    fn bounds_themselves_are_accepted() {
        let args = [
            "ssepush",
            "--keep-alive",
            "100ms",
            "--v1-interval",
            "1day",
            "--retry",
            "1ms",
            "--history-ttl",
            "100ms",
            "--kafka-timeout",
            "100ms",
            "--kafka-session-timeout",
            "1s",
            "--shutdown-grace",
            "0s",
            "--backlog",
            "1",
            "--history-len",
            "1",
            "--queue-len",
            "1",
            "--max-body",
            "1",
            "--max-streams-per-user",
            "1",
            "--max-streams",
            "1",
            "--max-streams-per-client",
            "1",
            "--publish-rate",
            "1",
            "--publish-burst",
            "1",
        ];
        assert!(Config::from_args(args).is_ok());
    }

    #[test]
    fn sizes_take_binary_units() {
        assert_eq!(bytes("4096"), Ok(4096));
        assert_eq!(bytes("64KiB"), Ok(64 << 10));
        assert_eq!(bytes("256MiB"), Ok(256 << 20));
        assert_eq!(bytes("1 GiB"), Ok(1 << 30));
        assert!(bytes("12MB").unwrap_err().contains("unknown unit"));
        assert!(bytes("MiB").is_err());
        assert!(bytes("99999999999999999999GiB").is_err());
        let c = Config::from_args(["ssepush", "--history-max-bytes", "1MiB"]);
        assert_eq!(c.unwrap().history_max_bytes, 1 << 20);
    }

    #[test]
    fn frame_and_history_sizes_are_checked_together() {
        assert_eq!(
            refusal(&["--max-frame-bytes", "100"]),
            "--max-frame-bytes must be at least 256 (got 100)"
        );
        assert_eq!(
            refusal(&["--history-max-bytes", "128KiB"]),
            "--history-max-bytes must be at least twice --max-frame-bytes (262144; got 131072)"
        );
        assert_eq!(
            refusal(&["--write-timeout", "0s"]),
            "--write-timeout must be at least 100ms (got 0s)"
        );
    }
}
