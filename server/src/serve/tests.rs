use super::*;
use crate::{AppState, Config, api};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

struct Running {
    addr: SocketAddr,
    state: AppState,
    token: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

async fn start(args: &[&str]) -> Running {
    let mut argv = vec![
        "ssepush",
        "--static-dir",
        "/nonexistent",
        "--kafka-brokers",
        "",
    ];
    argv.extend_from_slice(args);
    let config = Config::from_args(argv).unwrap();
    let listener = bind("127.0.0.1:0".parse().unwrap(), 128).unwrap();
    let addr = listener.local_addr().unwrap();
    let token = CancellationToken::new();
    let state = AppState::new(config, token.clone()).unwrap();
    let app = api::router(state.clone());
    let mut options = Options::new(&state.config, state.refusals.clone(), state.metrics.clone());
    options.grace = Duration::from_secs(2);
    let task = tokio::spawn(serve(
        listener,
        Transport::Plain,
        app,
        token.clone(),
        options,
    ));
    Running {
        addr,
        state,
        token,
        task,
    }
}

impl Running {
    async fn stop(self) {
        self.token.cancel();
        for hub in self.state.hubs() {
            hub.close_all();
        }
        tokio::time::timeout(Duration::from_secs(5), self.task)
            .await
            .unwrap()
            .unwrap();
    }
}

/// Reads until `needle` has arrived; returns everything read.
async fn read_until(tcp: &mut TcpStream, needle: &str) -> String {
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    tokio::time::timeout(Duration::from_secs(5), async {
        while !String::from_utf8_lossy(&seen).contains(needle) {
            let n = tcp.read(&mut buf).await.unwrap();
            assert!(
                n > 0,
                "closed before {needle:?}: {:?}",
                String::from_utf8_lossy(&seen)
            );
            seen.extend_from_slice(&buf[..n]);
        }
    })
    .await
    .unwrap();
    String::from_utf8(seen).unwrap()
}

async fn wait_streams(state: &AppState, n: usize) {
    tokio::time::timeout(Duration::from_secs(5), async {
        while state.v2.stats().streams != n {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stream_head_and_chunks_on_the_wire() {
    let server = start(&[]).await;
    let mut tcp = TcpStream::connect(server.addr).await.unwrap();
    tcp.write_all(b"GET /v2/sse?username=w HTTP/1.1\r\nHost: t\r\n\r\n")
        .await
        .unwrap();
    let head = read_until(&mut tcp, "retry: ").await;
    assert!(head.starts_with("HTTP/1.1 200 OK\r\n"), "{head}");
    for line in [
        "content-type: text/event-stream\r\n",
        "cache-control: no-cache\r\n",
        "x-accel-buffering: no\r\n",
        "transfer-encoding: chunked\r\n",
        "date: ",
    ] {
        assert!(head.contains(line), "{line:?} missing in {head}");
    }
    wait_streams(&server.state, 1).await;
    server.state.v2.publish("w", "hello");
    let more = read_until(&mut tcp, "data: hello\n\n\r\n").await;
    assert!(more.contains("\r\nid: "), "{more}");
    server.stop().await;
    // A clean end: the last chunk, then EOF.
    let rest = read_until(&mut tcp, "0\r\n\r\n").await;
    assert!(rest.ends_with("0\r\n\r\n"), "{rest}");
    assert_eq!(tcp.read(&mut [0u8; 16]).await.unwrap(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refusal_keeps_the_connection_for_hyper() {
    let server = start(&[]).await;
    let mut tcp = TcpStream::connect(server.addr).await.unwrap();
    tcp.write_all(b"GET /v2/sse?username=a%3Ab HTTP/1.1\r\nHost: t\r\n\r\n")
        .await
        .unwrap();
    let refused = read_until(&mut tcp, "\r\n\r\n").await;
    assert!(
        refused.starts_with("HTTP/1.1 400 Bad Request\r\n"),
        "{refused}"
    );
    assert!(refused.contains("content-length: "), "{refused}");
    tcp.write_all(b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n")
        .await
        .unwrap();
    let ok = read_until(&mut tcp, "ok\n").await;
    assert!(ok.contains("HTTP/1.1 200 OK\r\n"), "{ok}");
    server.stop().await;
}

/// A stalled stream is cut, on this module's path (HTTP/1.1) and on hyper's (HTTP/1.0).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_streams_are_cut_on_both_paths() {
    for version in ["1.1", "1.0"] {
        stalled_stream_is_cut(version).await;
    }
}

async fn stalled_stream_is_cut(version: &str) {
    let server = start(&["--queue-len", "8"]).await;
    let socket = TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let mut tcp = socket.connect(server.addr).await.unwrap();
    let request = format!("GET /v2/sse?username=slow HTTP/{version}\r\n\r\n");
    tcp.write_all(request.as_bytes()).await.unwrap();
    let head = read_until(&mut tcp, "retry: ").await;
    assert!(
        head.starts_with(&format!("HTTP/{version} 200 OK\r\n")),
        "{head}"
    );
    assert_eq!(head.contains("chunked"), version == "1.1", "{head}");
    wait_streams(&server.state, 1).await;
    // Paced, so the connection keeps up until the socket and hyper's buffer are full.
    let body = "x".repeat(60 * 1024);
    for _ in 0..2000 {
        server.state.v2.publish("slow", &body);
        if server.state.v2.stats().slow_closed > 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    assert_eq!(server.state.v2.stats().slow_closed, 1, "HTTP/{version}");
    wait_streams(&server.state, 0).await;
    // Without reading a byte: the connection, and the stream body it holds, are dropped.
    tokio::time::timeout(Duration::from_secs(2), async {
        while server.state.budget.open() != 0 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .unwrap_or_else(|_| panic!("HTTP/{version}: the stalled connection was not cut"));
    let mut sink = vec![0u8; 1 << 16];
    let ended = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            match tcp.read(&mut sink).await {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
        }
    })
    .await;
    assert!(
        ended.is_ok(),
        "HTTP/{version}: stalled connection still open"
    );
    server.stop().await;
}

/// A reader that stops, on a queue too long to overflow: the write timeout cuts it, on
/// this module's path (HTTP/1.1) and on hyper's (HTTP/1.0).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_streams_are_cut_by_the_write_timeout_on_both_paths() {
    for version in ["1.1", "1.0"] {
        let server = start(&["--queue-len", "100000", "--write-timeout", "500ms"]).await;
        let socket = TcpSocket::new_v4().unwrap();
        socket.set_recv_buffer_size(4096).unwrap();
        let mut tcp = socket.connect(server.addr).await.unwrap();
        let request = format!("GET /v2/sse?username=stuck HTTP/{version}\r\n\r\n");
        tcp.write_all(request.as_bytes()).await.unwrap();
        read_until(&mut tcp, "retry: ").await;
        wait_streams(&server.state, 1).await;
        let body = "x".repeat(16 * 1024);
        // A few MB: more than the socket buffers hold, far fewer frames than the queue.
        for _ in 0..256 {
            server.state.v2.publish("stuck", &body);
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        tokio::time::timeout(Duration::from_secs(20), async {
            while server.state.budget.open() != 0 {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await
        .unwrap_or_else(|_| panic!("HTTP/{version}: the stalled stream was not cut"));
        assert_eq!(server.state.v2.stats().slow_closed, 0, "HTTP/{version}");
        let cut = server.state.refusals.total(Limit::WriteTimeout);
        assert_eq!(cut, 1, "HTTP/{version}: counted in /metrics");
        server.stop().await;
    }
}
