//! Bad input gets a 4xx with a one-line reason; limits answer 429/503; nothing panics. Limits
//! per client are tested from outside, with raw sockets where that is what an attacker uses.

mod common;

use common::{TestServer, client, spawn};
use std::{net::SocketAddr, time::Duration};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};

async fn expect(response: reqwest::Response, status: u16, reason: &str) {
    assert_eq!(response.status(), status);
    assert_eq!(
        response.headers()["content-type"],
        "text/plain; charset=utf-8"
    );
    let body = response.text().await.unwrap();
    assert_eq!(body.matches('\n').count(), 1, "one line: {body:?}");
    assert!(body.contains(reason), "{body:?} should mention {reason:?}");
}

#[tokio::test]
async fn bad_usernames_are_400() {
    let server = spawn(&[]).await;
    for version in ["v1", "v2", "v3"] {
        let url = server.url(&format!("/{version}/sse"));
        expect(client().get(&url).send().await.unwrap(), 400, "missing").await;
        let cases = [
            ("", "missing"),
            (&*"a".repeat(65), "longer than 64"),
            ("a\u{1}b", "control"),
            ("a:b", "':'"),
            ("a\u{202E}b", "invisible or formatting character (U+202E)"),
            ("a\u{200B}b", "invisible or formatting character (U+200B)"),
            ("a\u{A0}b", "invisible or formatting character (U+00A0)"),
        ];
        for (name, reason) in cases {
            let response = client()
                .get(&url)
                .query(&[("username", name)])
                .send()
                .await
                .unwrap();
            expect(response, 400, reason).await;
        }
    }
    expect(server.post("v2", "a:b", "hi").await, 400, "':'").await;
    // Invalid UTF-8 is refused, not decoded to U+FFFD (which made %FF and %FE one user).
    for (version, method, query, key) in [
        ("v1", "GET", "username=%FF", "username"),
        ("v2", "GET", "username=%FE", "username"),
        ("v3", "GET", "username=demo&lastEventId=%C3", "lastEventId"),
        ("v2", "POST", "username=%FF", "username"),
    ] {
        let path = if method == "GET" { "sse" } else { "message" };
        let url = server.url(&format!("/{version}/{path}?{query}"));
        let request = if method == "GET" {
            client().get(&url)
        } else {
            client().post(&url).body("hi")
        };
        let reason = format!("query parameter `{key}` is not valid UTF-8");
        expect(request.send().await.unwrap(), 400, &reason).await;
    }
    let response = client()
        .get(server.url("/v2/sse?username=%ZZ&username=x"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    server.stop().await;
}

#[tokio::test]
async fn bodies() {
    let server = spawn(&[]).await;
    expect(
        server.post("v2", "demo", vec![b'a'; 100 * 1024]).await,
        413,
        "65536 bytes",
    )
    .await;
    assert_eq!(
        server
            .post("v2", "demo", vec![b'a'; 64 * 1024])
            .await
            .status(),
        200
    );
    expect(server.post("v2", "demo", "").await, 400, "empty").await;
    expect(
        server.post("v2", "demo", vec![0xff, 0xfe]).await,
        400,
        "UTF-8",
    )
    .await;
    // A body without Content-Length is cut off at the limit too.
    let chunks =
        futures_util::stream::iter((0..40).map(|_| Ok::<_, std::io::Error>(vec![b'x'; 4096])));
    let response = client()
        .post(server.url("/v2/message?username=demo"))
        .body(reqwest::Body::wrap_stream(chunks))
        .send()
        .await
        .unwrap();
    expect(response, 413, "larger").await;
    // Line breaks are 7 bytes more each as an event: the event's size is what is capped.
    for version in ["v2", "v3"] {
        expect(
            server.post(version, "demo", vec![b'\n'; 20_000]).await,
            413,
            "as an event (each line costs 7 more), over the limit of 131072",
        )
        .await;
    }
    server.stop().await;
}

/// A body that is declared and never sent, or never ends, gets 408 once the body timeout
/// passes, and the connection is closed.
#[tokio::test]
async fn slow_bodies_are_408() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let server = spawn(&["--body-timeout", "300ms"]).await;
    for request in [
        &b"POST /v2/message?username=demo HTTP/1.1\r\nContent-Length: 10\r\n\r\n"[..],
        b"POST /v3/message?username=demo HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n1\r\na\r\n",
    ] {
        let mut tcp = tokio::net::TcpStream::connect(server.addr).await.unwrap();
        tcp.write_all(request).await.unwrap();
        let mut answer = String::new();
        tokio::time::timeout(
            std::time::Duration::from_secs(20),
            tcp.read_to_string(&mut answer),
        )
        .await
        .expect("closed after the answer")
        .unwrap();
        assert!(answer.starts_with("HTTP/1.1 408 "), "{answer}");
        assert!(
            answer.ends_with("request body not received within 300ms\n"),
            "{answer}"
        );
    }
    server.stop().await;
}

#[tokio::test]
async fn unknown_paths_and_methods() {
    let server = spawn(&[]).await;
    expect(
        client().get(server.url("/v2/nope")).send().await.unwrap(),
        404,
        "no such endpoint",
    )
    .await;
    expect(
        client().get(server.url("/v4/sse")).send().await.unwrap(),
        404,
        "not built",
    )
    .await;
    expect(
        client()
            .delete(server.url("/v2/sse?username=a"))
            .send()
            .await
            .unwrap(),
        405,
        "not allowed",
    )
    .await;
    expect(
        client()
            .get(server.url("/v2/message?username=a"))
            .send()
            .await
            .unwrap(),
        405,
        "not allowed",
    )
    .await;
    server.stop().await;
}

#[tokio::test]
async fn stream_limits() {
    let server = spawn(&["--max-streams-per-user", "2", "--max-streams", "3"]).await;
    let _a = server.open("v2", "demo").await;
    let _b = server.open("v2", "demo").await;
    let third = client()
        .get(server.url("/v2/sse?username=demo"))
        .send()
        .await
        .unwrap();
    expect(third, 429, "limit 2").await;
    let _c = server.open("v1", "other").await;
    let full = client()
        .get(server.url("/v2/sse?username=else"))
        .send()
        .await
        .unwrap();
    expect(full, 503, "limit of 3 open streams").await;
    assert_eq!(server.metric(&limited("streams_per_user")).await, 1);
    assert_eq!(server.metric(&limited("streams")).await, 1);
    drop(_c);
    // The slot comes back once the closed stream is noticed.
    let mut reopened = None;
    for _ in 0..50 {
        let r = client()
            .get(server.url("/v2/sse?username=else"))
            .send()
            .await
            .unwrap();
        if r.status() == 200 {
            reopened = Some(r);
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert!(reopened.is_some());
    server.stop().await;
}

/// A client behind the test's trusted proxy (127.0.0.1), as `X-Forwarded-For` names it.
const ALICE: &str = "198.51.100.1";
const BOB: &str = "198.51.100.2";

/// What came back on a raw connection: the status, the head's lines, and the raw text so far.
struct Answer {
    status: u16,
    head: String,
    tcp: TcpStream,
}

impl Answer {
    async fn read(mut tcp: TcpStream) -> Self {
        let head = read_head(&mut tcp).await;
        let status = head[9..12].parse().unwrap();
        Self { status, head, tcp }
    }

    fn header(&self, name: &str) -> Option<&str> {
        self.head.lines().find_map(|line| {
            let (n, v) = line.split_once(':')?;
            n.eq_ignore_ascii_case(name).then(|| v.trim())
        })
    }

    /// The one-line reason of a refusal.
    async fn reason(mut self) -> String {
        self.body().await
    }

    /// Reads the body (by its Content-Length); the connection stays for the next request.
    async fn body(&mut self) -> String {
        let len: usize = self.header("content-length").unwrap().parse().unwrap();
        let mut body = vec![0; len];
        self.tcp.read_exact(&mut body).await.unwrap();
        String::from_utf8(body).unwrap()
    }
}

/// Sends `GET path` on a new raw connection, as HTTP/`version`, with `X-Forwarded-For: xff` if
/// given, and reads the response head. A stream's connection stays open in the answer.
async fn raw_get(addr: SocketAddr, path: &str, version: &str, xff: Option<&str>) -> Answer {
    let mut tcp = TcpStream::connect(addr).await.unwrap();
    let xff = xff.map_or(String::new(), |ip| format!("X-Forwarded-For: {ip}\r\n"));
    let request = format!("GET {path} HTTP/{version}\r\nHost: t\r\n{xff}\r\n");
    tcp.write_all(request.as_bytes()).await.unwrap();
    Answer::read(tcp).await
}

/// Reads a response head, byte by byte so that nothing after it is taken.
async fn read_head(tcp: &mut TcpStream) -> String {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        let n = tokio::time::timeout(Duration::from_secs(10), tcp.read(&mut byte))
            .await
            .expect("a response head in time")
            .unwrap();
        assert_eq!(n, 1, "closed before the head ended: {head:?}");
        head.push(byte[0]);
    }
    String::from_utf8(head).unwrap()
}

async fn stream_from(server: &TestServer, version: &str, user: &str, xff: Option<&str>) -> Answer {
    let path = format!("/{version}/sse?username={user}");
    raw_get(server.addr, &path, "1.1", xff).await
}

fn limited(limit: &str) -> String {
    format!("ssepush_limited_total{{limit=\"{limit}\"}}")
}

/// One client can't take every stream: past its share it gets 429 with `Retry-After`, across
/// v1, v2 and v3 and whatever the usernames, while other clients still get in.
#[tokio::test]
async fn one_client_cannot_take_every_stream() {
    let server = spawn(&[
        "--max-streams-per-client",
        "3",
        "--max-streams",
        "10",
        "--trusted-proxy",
        "127.0.0.1/32",
        "--retry",
        "1500ms",
    ])
    .await;
    let mut held = Vec::new();
    for (version, user) in [("v1", "a1"), ("v2", "a2"), ("v3", "a3")] {
        let answer = stream_from(&server, version, user, Some(ALICE)).await;
        assert_eq!(answer.status, 200, "{}", answer.head);
        held.push(answer);
    }
    for version in ["v1", "v2", "v3"] {
        let refused = stream_from(&server, version, "a4", Some(ALICE)).await;
        assert_eq!(refused.status, 429, "{}", refused.head);
        // --retry 1500ms, rounded up.
        assert_eq!(refused.header("retry-after"), Some("2"));
        assert_eq!(
            refused.header("content-type"),
            Some("text/plain; charset=utf-8")
        );
        let reason = refused.reason().await;
        assert_eq!(reason, "this client is at its limit of 3 open streams\n");
    }
    // Other clients, and the proxy itself, have their own shares.
    let bob = stream_from(&server, "v2", "a4", Some(BOB)).await;
    assert_eq!(bob.status, 200, "{}", bob.head);
    let proxy = stream_from(&server, "v2", "a5", None).await;
    assert_eq!(proxy.status, 200, "{}", proxy.head);
    assert_eq!(server.metric(&limited("streams_per_client")).await, 3);
    assert_eq!(server.metric("ssepush_stream_clients").await, 3);

    // Closing a stream gives its slot back, once the server notices the close.
    drop(held.pop());
    let mut reopened = None;
    for _ in 0..100 {
        let answer = stream_from(&server, "v3", "a3", Some(ALICE)).await;
        if answer.status == 200 {
            reopened = Some(answer);
            break;
        }
        assert_eq!(answer.status, 429);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        reopened.is_some(),
        "the closed stream's slot never came back"
    );
    drop((held, bob, proxy, reopened));
    // Once every stream is gone, no client is left in the books.
    for _ in 0..100 {
        if server.metric("ssepush_stream_clients").await == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(server.metric("ssepush_stream_clients").await, 0);
    assert_eq!(server.metric("ssepush_streams_open").await, 0);
    server.stop().await;
}

/// Streams hyper serves (HTTP/1.0) count toward the same client as the ones the accept loop
/// answers itself (HTTP/1.1): both paths see the peer address.
#[tokio::test]
async fn both_connection_paths_know_the_client() {
    let server = spawn(&[
        "--max-streams-per-client",
        "2",
        "--trusted-proxy",
        "127.0.0.1",
    ])
    .await;
    let path = "/v2/sse?username=old";
    let old = raw_get(server.addr, path, "1.0", Some(ALICE)).await;
    assert_eq!(old.status, 200, "{}", old.head);
    assert!(
        old.head.starts_with("HTTP/1.0 200"),
        "hyper's: {}",
        old.head
    );
    let new = stream_from(&server, "v2", "new", Some(ALICE)).await;
    assert_eq!(new.status, 200);
    let refused = raw_get(server.addr, path, "1.0", Some(ALICE)).await;
    assert_eq!(refused.status, 429, "{}", refused.head);
    assert_eq!(refused.header("retry-after"), Some("2"));
    let refused = stream_from(&server, "v2", "new", Some(ALICE)).await;
    assert_eq!(refused.status, 429, "{}", refused.head);
    let bob = raw_get(server.addr, path, "1.0", Some(BOB)).await;
    assert_eq!(bob.status, 200, "{}", bob.head);
    server.stop().await;
}

/// Without `--trusted-proxy`, `X-Forwarded-For` is the client's own claim: ignored.
#[tokio::test]
async fn forwarded_for_is_ignored_without_a_trusted_proxy() {
    let server = spawn(&["--max-streams-per-client", "2"]).await;
    let _a = stream_from(&server, "v1", "a", Some(ALICE)).await;
    let _b = stream_from(&server, "v1", "b", Some(BOB)).await;
    assert_eq!((_a.status, _b.status), (200, 200));
    let spoofed = stream_from(&server, "v1", "c", Some("203.0.113.77")).await;
    assert_eq!(spoofed.status, 429, "{}", spoofed.head);
    // A proxy that isn't the peer is not trusted either.
    let server2 = spawn(&[
        "--max-streams-per-client",
        "1",
        "--trusted-proxy",
        "10.0.0.0/8",
    ])
    .await;
    let _c = stream_from(&server2, "v2", "a", Some(ALICE)).await;
    assert_eq!(_c.status, 200);
    let spoofed = stream_from(&server2, "v2", "b", Some(BOB)).await;
    assert_eq!(spoofed.status, 429, "{}", spoofed.head);
    server.stop().await;
    server2.stop().await;
}

/// POSTs `hi` to user `demo` on `version`, with `X-Forwarded-For: xff`.
async fn post_as(server: &TestServer, version: &str, xff: &str) -> reqwest::Response {
    client()
        .post(server.url(&format!("/{version}/message?username=demo")))
        .header("x-forwarded-for", xff)
        .body("hi")
        .send()
        .await
        .unwrap()
}

/// A client gets its burst of POSTs, v2 and v3 together, then 429 with `Retry-After` until its
/// bucket refills; other clients are not held up.
#[tokio::test]
async fn publishing_is_rate_limited_per_client() {
    let server = spawn(&[
        "--publish-rate",
        "1",
        "--publish-burst",
        "5",
        "--trusted-proxy",
        "127.0.0.1/32",
    ])
    .await;
    // v3 answers 503 here (Kafka is off), but its POSTs take tokens all the same.
    for (version, status) in [
        ("v2", 200),
        ("v3", 503),
        ("v2", 200),
        ("v3", 503),
        ("v2", 200),
    ] {
        assert_eq!(post_as(&server, version, ALICE).await.status(), status);
    }
    // One token a second comes back: a busy machine may let one more through, never many.
    let mut refused = None;
    for _ in 0..50 {
        let response = post_as(&server, "v2", ALICE).await;
        if response.status() == 429 {
            refused = Some(response);
            break;
        }
        assert_eq!(response.status(), 200);
    }
    let refused = refused.expect("a 429 once the burst is spent");
    assert_eq!(refused.headers()["retry-after"], "1");
    expect(
        refused,
        429,
        "publish limit (rate 1/s, burst 5); retry in 1 s",
    )
    .await;
    // Another client has its own bucket.
    assert_eq!(post_as(&server, "v2", BOB).await.status(), 200);
    assert!(server.metric(&limited("publish_rate")).await >= 1);
    // Alice's bucket is far from full: the sweep keeps it.
    assert!(server.metric("ssepush_publish_rate_clients").await >= 1);
    server.stop().await;
}

/// Without a trusted proxy, every POST from this host is one client, whatever it forwards.
#[tokio::test]
async fn spoofed_forwarded_for_does_not_buy_more_posts() {
    let server = spawn(&["--publish-rate", "1", "--publish-burst", "3"]).await;
    let mut statuses = Vec::new();
    for i in 0..10 {
        let response = post_as(&server, "v2", &format!("203.0.113.{i}")).await;
        statuses.push(response.status().as_u16());
    }
    assert_eq!(statuses[..3], [200, 200, 200]);
    assert!(statuses.contains(&429), "{statuses:?}");
    assert_eq!(server.metric("ssepush_publish_rate_clients").await, 1);
    server.stop().await;
}

/// A refused POST leaves its connection usable: the client's next request on it is answered,
/// even when the body arrived after the head had already been judged.
#[tokio::test]
async fn a_refused_post_keeps_its_connection() {
    let server = spawn(&["--publish-rate", "1", "--publish-burst", "1"]).await;
    let mut tcp = TcpStream::connect(server.addr).await.unwrap();
    let head = "POST /v2/message?username=demo HTTP/1.1\r\nHost: t\r\nContent-Length: 2\r\n\r\n";
    let mut statuses = Vec::new();
    for _ in 0..3 {
        tcp.write_all(head.as_bytes()).await.unwrap();
        // The body comes later, as from a client that writes head and body apart.
        tokio::time::sleep(Duration::from_millis(50)).await;
        tcp.write_all(b"hi").await.unwrap();
        let mut answer = Answer::read(tcp).await;
        answer.body().await;
        statuses.push(answer.status);
        tcp = answer.tcp;
    }
    assert_eq!(statuses[0], 200);
    assert!(statuses.contains(&429), "{statuses:?}");
    server.stop().await;
}

/// With the broker gone, v3 POSTs that fail together each get their 503 about one producer
/// timeout later: a failed send may probe the broker, and the probes run in turn on one
/// thread, so they must not queue up one per POST.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_kafka_posts_together_each_get_a_prompt_503() {
    let server = spawn(&["--kafka-brokers", "127.0.0.1:1", "--kafka-timeout", "500ms"]).await;
    // Three timeouts without a delivery: from then on a failure may probe.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let start = std::time::Instant::now();
    let posts = (0..24).map(|i| {
        let server = &server;
        async move { server.post("v3", &format!("u{i}"), "x").await.status() }
    });
    let statuses = futures_util::future::join_all(posts).await;
    let took = start.elapsed();
    assert!(statuses.iter().all(|s| *s == 503), "{statuses:?}");
    // Each waits up to 0.5 s + 2 s for librdkafka's verdict, and at most one probe of 1.5 s;
    // a probe per POST, in turn, takes 24 x 1.5 s.
    assert!(took < Duration::from_secs(15), "{took:?}");
    server.stop().await;
}
