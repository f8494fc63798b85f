//! A hostile client against the real binary, from outside, with raw sockets: amplified
//! bodies across many users, stalled replays, slow heads and bodies, pipelining, conflicting
//! framing, giant heads, NULs and path traversal. Afterwards: no 5xx, no panic, no leaked
//! socket, memory within the history budget, and a normal subscribe and POST still work.

mod common;

use std::{
    collections::BTreeMap,
    net::SocketAddr,
    time::{Duration, Instant},
};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};

/// The history budget the server runs with, and what the process may hold beyond it.
const BUDGET_MIB: u64 = 16;
const MARGIN_MIB: u64 = 48;

struct Server {
    inner: testkit::TestServer,
    addr: SocketAddr,
    base: String,
    /// Statuses of every raw response, by code.
    statuses: BTreeMap<u16, usize>,
    _dir: tempfile::TempDir,
}

impl Server {
    /// Starts the binary with short timeouts, the history budget, and `more` flags.
    async fn start(more: &[&str]) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let dist = dir.path().join("dist");
        std::fs::create_dir(&dist).unwrap();
        std::fs::write(dist.join("index.html"), "<!doctype html><title>ui</title>").unwrap();
        std::fs::write(dir.path().join("secret.txt"), "TOP-SECRET").unwrap();
        let budget = format!("{BUDGET_MIB}MiB");
        let mut args = vec![
            "--kafka-brokers",
            "",
            "--static-dir",
            dist.to_str().unwrap(),
        ];
        args.extend(["--history-max-bytes", &budget]);
        args.extend(["--body-timeout", "1s", "--head-timeout", "3s"]);
        args.extend(["--write-timeout", "2s", "--queue-len", "64"]);
        args.extend(more);
        let inner = testkit::TestServer::start(env!("CARGO_BIN_EXE_ssepush"), args).await;
        Self {
            addr: inner.addr,
            base: inner.base.clone(),
            inner,
            statuses: BTreeMap::new(),
            _dir: dir,
        }
    }

    fn rss_mib(&self) -> u64 {
        self.inner.rss_kib() / 1024
    }

    fn open_fds(&self) -> usize {
        self.inner.open_fds()
    }

    /// Sends `request` on a fresh connection and reads until the server closes it or
    /// `patience` passes; every status line seen is counted.
    async fn raw(&mut self, request: &[u8], patience: Duration) -> (String, bool) {
        let mut tcp = TcpStream::connect(self.addr).await.unwrap();
        tcp.write_all(request).await.unwrap();
        let (text, closed) = read_for(&mut tcp, patience).await;
        self.count(&text);
        (text, closed)
    }

    fn count(&mut self, text: &str) {
        for status in statuses(text) {
            *self.statuses.entry(status).or_default() += 1;
        }
    }

    async fn streams_open(&self) -> u64 {
        self.metric("ssepush_streams_open").await
    }

    async fn metric(&self, name: &str) -> u64 {
        common::metric(&self.base, name).await
    }
}

/// Reads until EOF or `patience`: what came, and whether the server closed the connection.
async fn read_for(tcp: &mut TcpStream, patience: Duration) -> (String, bool) {
    let mut seen = Vec::new();
    let mut buf = [0u8; 16 * 1024];
    let closed = tokio::time::timeout(patience, async {
        loop {
            match tcp.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => seen.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await
    .is_ok();
    (String::from_utf8_lossy(&seen).into_owned(), closed)
}

/// The status codes of the responses in `text`, in order.
fn statuses(text: &str) -> Vec<u16> {
    text.match_indices("HTTP/1.")
        .filter_map(|(i, _)| text.get(i + 9..i + 12)?.parse().ok())
        .collect()
}

fn post(user: &str, body: &[u8]) -> Vec<u8> {
    let mut request = format!(
        "POST /v2/message?username={user} HTTP/1.1\r\nHost: t\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    request.extend_from_slice(body);
    request
}

/// Messages of line breaks for 10,000 users: 420 MB as events, without a bound.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_across_ten_thousand_users_stays_within_the_history_budget() {
    let server = Server::start(&["--publish-rate", "1000000", "--publish-burst", "1000000"]).await;
    let rss_at_start = server.rss_mib();
    let client = reqwest::Client::new();
    let body = "\n".repeat(6_000);
    let mut peak = 0;
    // Four at a time, in rounds, sampling the server's RSS after each round.
    for round in 0..2_500 {
        let posts = (0..4).map(|k| {
            client
                .post(format!(
                    "{}/v2/message?username=flood{round}-{k}",
                    server.base
                ))
                .body(body.clone())
                .send()
        });
        for r in futures_util::future::join_all(posts).await {
            let r = r.unwrap();
            assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
        }
        if round % 100 == 0 {
            peak = peak.max(server.rss_mib());
        }
    }
    let rss = server.rss_mib().max(peak);
    println!("RSS {rss_at_start} MiB at the start, {rss} MiB at most during the flood");
    assert!(
        rss <= rss_at_start + BUDGET_MIB + MARGIN_MIB,
        "RSS {rss} MiB (from {rss_at_start}, budget {BUDGET_MIB} MiB)"
    );
    let metrics = common::metrics_text(&server.base, None).await;
    assert!(
        metrics.contains("ssepush_history_evicted_total "),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hostile_client_leaves_the_server_bounded_and_working() {
    // The floods below come from one address; stream slots per client are tested as set.
    let mut server = Server::start(&[
        "--publish-rate",
        "1000000",
        "--publish-burst",
        "1000000",
        "--max-streams",
        "100",
        "--trusted-proxy",
        "127.0.0.1/32",
    ])
    .await;
    let fds_at_start = server.open_fds();
    let rss_at_start = server.rss_mib();

    // 1. Amplification: a body of line breaks would be 7 times larger as an event.
    let (text, _) = server
        .raw(&post("amp", &[b'\n'; 65_536]), Duration::from_secs(10))
        .await;
    assert!(text.starts_with("HTTP/1.1 413 "), "{text}");
    assert!(text.contains("as an event"), "{text}");
    let client = reqwest::Client::new();

    // 2. Stalled replays: 16 streams resume a 12 MB history with a garbage id and never read.
    // Each holds one replay batch, and each is cut by the write timeout.
    let big = "r".repeat(60_000);
    for _ in 0..200 {
        let r = client
            .post(format!("{}/v2/message?username=replayed", server.base))
            .body(big.clone())
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
    }
    let mut stalled = Vec::new();
    for _ in 0..16 {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.set_recv_buffer_size(4096).unwrap();
        let mut tcp = socket.connect(server.addr).await.unwrap();
        tcp.write_all(
            b"GET /v2/sse?username=replayed HTTP/1.1\r\nHost: t\r\nLast-Event-ID: garbage\r\n\r\n",
        )
        .await
        .unwrap();
        stalled.push(tcp);
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let rss = server.rss_mib();
    assert!(
        rss <= rss_at_start + BUDGET_MIB + MARGIN_MIB,
        "RSS {rss} MiB with 16 stalled replays"
    );
    let started = Instant::now();
    while server.streams_open().await > 0 {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "stalled streams still open"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    drop(stalled);
    let cut = server
        .metric("ssepush_limited_total{limit=\"write_timeout\"}")
        .await;
    assert_eq!(cut, 16, "write timeouts counted");

    // 3. Stream slots: one client can't take them all. Its 65th stream is refused with 429,
    // while another client (behind the trusted proxy) still gets in.
    let mut hogs = Vec::new();
    for i in 0..64 {
        let mut tcp = TcpStream::connect(server.addr).await.unwrap();
        tcp.write_all(
            format!("GET /v1/sse?username=hog{i} HTTP/1.1\r\nHost: t\r\n\r\n").as_bytes(),
        )
        .await
        .unwrap();
        let mut first = [0u8; 12];
        tcp.read_exact(&mut first).await.unwrap();
        assert_eq!(&first, b"HTTP/1.1 200", "stream {i}");
        hogs.push(tcp);
    }
    let (text, _) = server
        .raw(
            b"GET /v1/sse?username=hog64 HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
            Duration::from_secs(10),
        )
        .await;
    assert!(text.starts_with("HTTP/1.1 429 "), "{text}");
    assert!(
        text.to_ascii_lowercase().contains("\r\nretry-after: "),
        "{text}"
    );
    let mut other = TcpStream::connect(server.addr).await.unwrap();
    other
        .write_all(b"GET /v1/sse?username=real HTTP/1.1\r\nHost: t\r\nX-Forwarded-For: 203.0.113.7\r\n\r\n")
        .await
        .unwrap();
    let mut first = [0u8; 12];
    other.read_exact(&mut first).await.unwrap();
    assert_eq!(&first, b"HTTP/1.1 200");
    server.count("HTTP/1.1 200");
    drop((hogs, other));

    // 4. Bodies that never finish get 408, and the connection is closed.
    for request in [
        &b"POST /v2/message?username=b HTTP/1.1\r\nHost: t\r\nContent-Length: 10\r\n\r\n"[..],
        b"POST /v2/message?username=b HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n1\r\na\r\n",
    ] {
        let (text, closed) = server.raw(request, Duration::from_secs(20)).await;
        assert!(text.starts_with("HTTP/1.1 408 "), "{text}");
        assert!(closed, "still open after the 408: {text}");
    }
    let mut trickle = TcpStream::connect(server.addr).await.unwrap();
    trickle
        .write_all(
            b"POST /v2/message?username=b HTTP/1.1\r\nHost: t\r\nContent-Length: 100\r\n\r\n",
        )
        .await
        .unwrap();
    let (text, closed) = tokio::time::timeout(Duration::from_secs(20), async {
        for _ in 0..100 {
            if trickle.write_all(b"x").await.is_err() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(300)).await;
            if trickle.peek(&mut [0u8; 1]).await.is_ok_and(|n| n > 0) {
                break;
            }
        }
        read_for(&mut trickle, Duration::from_secs(10)).await
    })
    .await
    .expect("a trickled body is cut");
    server.count(&text);
    assert!(text.starts_with("HTTP/1.1 408 ") && closed, "{text}");

    // 5. A head that is slow to start and then trickles: the wait for its first byte counts
    // toward the head timeout (3 s) instead of stacking with it.
    let mut slow = TcpStream::connect(server.addr).await.unwrap();
    let opened = Instant::now();
    tokio::time::sleep(Duration::from_millis(2_500)).await;
    for b in b"GET / HTTP/1.1\r\nX: " {
        let _ = slow.write_all(&[*b]).await;
        if opened.elapsed() > Duration::from_millis(2_800) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (text, closed) = read_for(&mut slow, Duration::from_secs(20)).await;
    server.count(&text);
    let took = opened.elapsed();
    assert!(closed, "{text}");
    assert!(
        took < Duration::from_millis(5_000),
        "a 3 s head timeout took {took:?} (stacked would be ~5.5 s)"
    );

    // 6. Pipelining. After a stream's head, what follows is never answered inside the stream.
    let mut piped = TcpStream::connect(server.addr).await.unwrap();
    piped
        .write_all(b"GET /v2/sse?username=piped HTTP/1.1\r\nHost: t\r\n\r\nGET /healthz HTTP/1.1\r\nHost: t\r\n\r\n")
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let r = client
        .post(format!("{}/v2/message?username=piped", server.base))
        .body("after the pipeline")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let (text, _) = read_for(&mut piped, Duration::from_millis(1_000)).await;
    server.count(&text);
    assert_eq!(statuses(&text), vec![200], "{text}");
    assert!(text.contains("data: after the pipeline\n"), "{text}");
    assert!(
        !text.contains("ok\n"),
        "answered the pipelined request: {text}"
    );
    drop(piped);
    // A refused stream and two POSTs, pipelined: each answered once, in order.
    let mut request = b"GET /v2/sse?username=a%3Ab HTTP/1.1\r\nHost: t\r\n\r\n".to_vec();
    request.extend(post("p", b"one"));
    request.extend(post("p", b"two"));
    request.extend(b"GET /healthz HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n");
    let (text, closed) = server.raw(&request, Duration::from_secs(10)).await;
    assert_eq!(statuses(&text), vec![400, 200, 200, 200], "{text}");
    assert!(closed && text.ends_with("ok\n"), "{text}");

    // 7. Conflicting framing is refused and nothing smuggled behind it is answered.
    for request in [
        &b"POST /v2/message?username=s HTTP/1.1\r\nHost: t\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /healthz HTTP/1.1\r\nHost: t\r\n\r\n"[..],
        b"POST /v2/message?username=s HTTP/1.1\r\nHost: t\r\nContent-Length: 3\r\nContent-Length: 40\r\n\r\nabcGET /healthz HTTP/1.1\r\nHost: t\r\n\r\n",
        b"POST /v2/message?username=s HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked, identity\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
        b"POST /v2/message?username=s HTTP/1.1\r\nHost: t\r\nContent-Length: +3\r\n\r\nabc",
    ] {
        let (text, closed) = server.raw(request, Duration::from_secs(10)).await;
        let codes = statuses(&text);
        assert!(
            codes.len() == 1 && (400..500).contains(&codes[0]),
            "{text:?} for {:?}",
            String::from_utf8_lossy(request)
        );
        assert!(closed, "{text}");
    }

    // 8. Giant heads: one huge header, and very many small ones.
    let mut huge = b"GET /v2/sse?username=h HTTP/1.1\r\nHost: t\r\nX: ".to_vec();
    huge.extend(std::iter::repeat_n(b'a', 200_000));
    huge.extend(b"\r\n\r\n");
    let mut many = b"GET /healthz HTTP/1.1\r\nHost: t\r\n".to_vec();
    for i in 0..5_000 {
        many.extend(format!("X-{i}: v\r\n").bytes());
    }
    many.extend(b"\r\n");
    for request in [huge, many] {
        let mut tcp = TcpStream::connect(server.addr).await.unwrap();
        // The server may close before taking it all.
        let _ = tcp.write_all(&request).await;
        let (text, closed) = read_for(&mut tcp, Duration::from_secs(10)).await;
        server.count(&text);
        let codes = statuses(&text);
        assert!(codes.iter().all(|c| (400..500).contains(c)), "{text}");
        assert!(closed, "{text}");
    }

    // 9. NULs and path traversal.
    for (target, want) in [
        ("/v2/sse?username=%00", 400),
        ("/v2/sse?username=a%00b", 400),
        ("/%00", 0),
        ("/index.html%00.js", 0),
        ("/../secret.txt", 0),
        ("/%2e%2e/secret.txt", 0),
        ("/..%2fsecret.txt", 0),
        ("/%2e%2e%2fsecret.txt", 0),
        ("/static/..%5c..%5csecret.txt", 0),
        ("//secret.txt", 0),
        ("/./../secret.txt", 0),
    ] {
        let request = format!("GET {target} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n");
        let (text, _) = server
            .raw(request.as_bytes(), Duration::from_secs(10))
            .await;
        assert!(!text.contains("TOP-SECRET"), "{target} leaked: {text}");
        let codes = statuses(&text);
        assert_eq!(codes.len(), 1, "{target}: {text}");
        if want != 0 {
            assert_eq!(codes[0], want, "{target}: {text}");
        }
        assert!(codes[0] < 500, "{target}: {text}");
    }

    // Afterwards: nothing panicked, nothing answered 5xx, no socket or file left open, memory
    // within the budget, and a normal client is served.
    assert!(
        server.statuses.keys().all(|s| *s < 500),
        "{:?}",
        server.statuses
    );
    let started = Instant::now();
    loop {
        let fds = server.open_fds();
        if fds <= fds_at_start + 2 {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "{fds} fds open, {fds_at_start} at the start"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let rss = server.rss_mib();
    assert!(
        rss <= rss_at_start + BUDGET_MIB + MARGIN_MIB,
        "RSS {rss} MiB at the end"
    );
    let response = client
        .get(format!("{}/v2/sse?username=normal", server.base))
        .send()
        .await
        .unwrap();
    let mut events = common::events(response);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let r = client
        .post(format!("{}/v2/message?username=normal", server.base))
        .body("still here")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(common::next(&mut events, 10).await.data, "still here");
    let log = server.inner.log_text();
    assert!(!log.contains("panicked"), "{log}");
    println!(
        "statuses {:?}, RSS {} MiB (start {rss_at_start}), fds {} (start {fds_at_start})",
        server.statuses,
        server.rss_mib(),
        server.open_fds()
    );
}
