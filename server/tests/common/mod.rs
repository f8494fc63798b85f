//! A real server on 127.0.0.1:0 and a real SSE client, for the integration tests.
#![allow(dead_code)]

pub mod kafka;

use eventsource_stream::{Event, EventStream, Eventsource};
use futures_util::{Stream, StreamExt};
use std::{
    ops::{Deref, DerefMut},
    pin::Pin,
    time::Duration,
};

pub type Events = Pin<Box<dyn Stream<Item = Event> + Send>>;

/// The binary under test ([`testkit::TestServer`]) with the HTTP calls the tests make.
pub struct TestServer(testkit::TestServer);

impl From<testkit::TestServer> for TestServer {
    fn from(server: testkit::TestServer) -> Self {
        Self(server)
    }
}

impl Deref for TestServer {
    type Target = testkit::TestServer;
    fn deref(&self) -> &Self::Target {
        &self.0
    }
}

impl DerefMut for TestServer {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.0
    }
}

/// Starts the server with `args` on top of test-friendly defaults.
pub async fn spawn(args: &[&str]) -> TestServer {
    let defaults = [
        "--static-dir",
        "/nonexistent",
        "--shutdown-grace",
        "3s",
        "--drain",
        "200ms",
        "--kafka-brokers",
        "",
    ];
    let argv = defaults.iter().chain(args);
    TestServer(testkit::TestServer::start(env!("CARGO_BIN_EXE_ssepush"), argv).await)
}

impl TestServer {
    /// SIGTERM, then a clean exit; gives how long that took.
    pub async fn stop(mut self) -> Duration {
        self.0.stop().await
    }

    pub async fn post(
        &self,
        version: &str,
        user: &str,
        body: impl Into<reqwest::Body>,
    ) -> reqwest::Response {
        client()
            .post(self.url(&format!("/{version}/message")))
            .query(&[("username", user)])
            .body(body)
            .send()
            .await
            .unwrap()
    }

    /// POSTs and returns the id the server gave the message.
    pub async fn publish(&self, version: &str, user: &str, body: &str) -> wire::Published {
        let response = self.post(version, user, body.to_owned()).await;
        assert_eq!(response.status(), 200, "{}", response.text().await.unwrap());
        response.json().await.unwrap()
    }

    pub async fn open(&self, version: &str, user: &str) -> Events {
        self.open_with(version, user, None).await
    }

    /// Opens a stream with a real SSE client, optionally resuming with `Last-Event-ID`.
    pub async fn open_with(&self, version: &str, user: &str, last_id: Option<&str>) -> Events {
        let mut request = client()
            .get(self.url(&format!("/{version}/sse")))
            .query(&[("username", user)]);
        if let Some(id) = last_id {
            request = request.header("Last-Event-ID", id);
        }
        let response = request.send().await.unwrap();
        events(response)
    }

    pub async fn metric(&self, name: &str) -> u64 {
        metric(&self.base, name).await
    }
}

/// The value of the series `name` in the `/metrics` of the server at `base`: exactly that
/// series when `name` has labels, else the sum over all of its label sets.
pub async fn metric(base: &str, name: &str) -> u64 {
    let text = metrics_text(base, None).await;
    let values: Vec<u64> = text
        .lines()
        .filter_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            let matches = if name.contains('{') {
                series == name
            } else {
                series.split('{').next() == Some(name)
            };
            matches.then(|| value.parse().ok()).flatten()
        })
        .collect();
    assert!(!values.is_empty(), "metric {name} in {text}");
    values.iter().sum()
}

/// The text of `/metrics` at `base`, with a bearer token when authorization is on.
pub async fn metrics_text(base: &str, bearer: Option<&str>) -> String {
    let mut request = client().get(format!("{base}/metrics"));
    if let Some(token) = bearer {
        request = request.bearer_auth(token);
    }
    request.send().await.unwrap().text().await.unwrap()
}

pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .build()
        .unwrap()
}

pub fn events(response: reqwest::Response) -> Events {
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "text/event-stream");
    let stream: EventStream<_> = response.bytes_stream().eventsource();
    Box::pin(stream.map(|e| e.expect("well-formed SSE")))
}

/// The next event, failing the test after `secs` seconds.
pub async fn next(events: &mut Events, secs: u64) -> Event {
    tokio::time::timeout(Duration::from_secs(secs), events.next())
        .await
        .expect("an event in time")
        .expect("stream still open")
}

/// Asserts no event arrives within `ms` milliseconds.
pub async fn quiet(events: &mut Events, ms: u64) {
    if let Ok(Some(e)) = tokio::time::timeout(Duration::from_millis(ms), events.next()).await {
        panic!("unexpected event {e:?}");
    }
}

/// Opens `GET path` on a raw socket with a 4 KiB receive window, and never reads it: a client
/// that stalled, so the server's writes back up quickly.
pub async fn stalled_stream(addr: std::net::SocketAddr, path: &str) -> tokio::net::TcpStream {
    use tokio::io::AsyncWriteExt;
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let mut stream = socket.connect(addr).await.unwrap();
    stream
        .write_all(format!("GET {path} HTTP/1.1\r\nHost: test\r\n\r\n").as_bytes())
        .await
        .unwrap();
    stream
}

/// Whether the server closes `stream` within `secs` once what was in flight has drained.
pub async fn closed_within(stream: &mut tokio::net::TcpStream, secs: u64) -> bool {
    use tokio::io::AsyncReadExt;
    let mut sink = vec![0u8; 1 << 16];
    tokio::time::timeout(Duration::from_secs(secs), async {
        while let Ok(n) = stream.read(&mut sink).await
            && n > 0
        {}
    })
    .await
    .is_ok()
}
