//! HTTP/2: many event streams on one connection, in plain text with prior knowledge (h2c) and
//! over TLS with ALPN, read by a real SSE parser; a stalled stream is reset on its own while
//! the others on its connection keep flowing.

mod common;

use bytes::Bytes;
use eventsource_stream::Eventsource;
use futures_util::{Stream, StreamExt};
use h2::{RecvStream, client::SendRequest};
use std::{path::Path, sync::Arc, time::Duration};
use tokio::{
    io::{AsyncRead, AsyncWrite},
    net::TcpStream,
};

/// A self-signed certificate for 127.0.0.1, made by the binary's own tool.
fn certificate(dir: &Path) -> (String, String) {
    let cert = dir.join("cert.pem");
    let key = dir.join("key.pem");
    let made = std::process::Command::new(env!("CARGO_BIN_EXE_ssepush"))
        .arg("self-signed")
        .arg("--cert")
        .arg(&cert)
        .arg("--key")
        .arg(&key)
        .output()
        .unwrap();
    assert!(made.status.success(), "{made:?}");
    (
        cert.to_str().unwrap().to_owned(),
        key.to_str().unwrap().to_owned(),
    )
}

/// An HTTP/2 client connection with a small window per stream and a large one for the
/// connection, as browsers have: one stalled stream must not block the connection.
async fn handshake<T>(io: T) -> SendRequest<Bytes>
where
    T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (client, conn) = h2::client::Builder::new()
        .initial_window_size(16 * 1024)
        .initial_connection_window_size(16 << 20)
        .handshake(io)
        .await
        .expect("h2 handshake");
    tokio::spawn(async move {
        let _ = conn.await;
    });
    client
}

async fn h2c(addr: std::net::SocketAddr) -> SendRequest<Bytes> {
    handshake(TcpStream::connect(addr).await.unwrap()).await
}

async fn h2_over_tls(addr: std::net::SocketAddr, cert: &str) -> SendRequest<Bytes> {
    use rustls::pki_types::{CertificateDer, ServerName, pem::PemObject};
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(cert).unwrap() {
        roots.add(cert.unwrap()).unwrap();
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"h2".to_vec()];
    let tcp = TcpStream::connect(addr).await.unwrap();
    let name = ServerName::try_from("127.0.0.1").unwrap();
    let tls = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(name, tcp)
        .await
        .expect("TLS handshake");
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    handshake(tls).await
}

/// Opens `GET path` on the connection; the response's status and its body.
async fn get(client: &SendRequest<Bytes>, authority: &str, path: &str) -> (u16, RecvStream) {
    let request = axum::http::Request::get(format!("http://{authority}{path}"))
        .body(())
        .unwrap();
    let mut client = client.clone().ready().await.unwrap();
    let (response, _) = client.send_request(request, true).unwrap();
    let response = tokio::time::timeout(Duration::from_secs(10), response)
        .await
        .expect("response head in time")
        .expect("response");
    let status = response.status().as_u16();
    (status, response.into_body())
}

/// A body read as it arrives, giving back window for what was read.
fn reading(body: RecvStream) -> impl Stream<Item = Result<Bytes, h2::Error>> {
    futures_util::stream::unfold(body, |mut body| async move {
        let chunk = body.data().await?;
        if let Ok(data) = &chunk {
            let _ = body.flow_control().release_capacity(data.len());
        }
        Some((chunk, body))
    })
}

/// Events of a stream body, parsed by a real SSE client.
fn events(body: RecvStream) -> common::Events {
    Box::pin(
        reading(body)
            .eventsource()
            .map(|e| e.expect("well-formed SSE")),
    )
}

/// Ten streams of ten users on one connection each get their own messages, and only those.
async fn ten_streams_on_one_connection(server: &common::TestServer, client: SendRequest<Bytes>) {
    let authority = server.addr.to_string();
    let mut streams = Vec::new();
    for i in 0..10 {
        let (status, body) = get(&client, &authority, &format!("/v2/sse?username=h2-{i}")).await;
        assert_eq!(status, 200);
        streams.push(events(body));
    }
    // Each answered 200 once it was registered.
    assert_eq!(server.metric("ssepush_hub_streams{api=\"v2\"}").await, 10);
    let open = "ssepush_streams_open{api=\"v2\",protocol=\"h2\"}";
    assert_eq!(server.metric(open).await, 10);
    for i in 0..10 {
        server
            .publish("v2", &format!("h2-{i}"), &format!("for {i}"))
            .await;
    }
    for (i, stream) in streams.iter_mut().enumerate() {
        assert_eq!(common::next(stream, 10).await.data, format!("for {i}"));
        common::quiet(stream, 50).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_streams_over_one_h2c_connection() {
    let server = common::spawn(&[]).await;
    let client = h2c(server.addr).await;
    ten_streams_on_one_connection(&server, client).await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_streams_over_one_tls_connection() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = certificate(dir.path());
    let server = common::spawn(&["--tls-cert", &cert, "--tls-key", &key, "--tls-port", "0"]).await;
    let tls_addr = server.logged_addr("serving https");
    let client = h2_over_tls(tls_addr, &cert).await;
    ten_streams_on_one_connection(&server, client).await;
    server.stop().await;
}

/// Reads what a stream has buffered without giving back any window, until it is reset; fails
/// if it ends cleanly or is not reset within `secs`.
async fn reset_within(body: &mut RecvStream, secs: u64) -> h2::Reason {
    tokio::time::timeout(Duration::from_secs(secs), async {
        loop {
            match body.data().await {
                Some(Ok(_)) => {}
                Some(Err(e)) => return e.reason().expect("a reset, not an I/O error"),
                None => panic!("the stalled stream ended cleanly instead of being reset"),
            }
        }
    })
    .await
    .expect("the stalled stream was reset in time")
}

/// Another stream on the connection still gets its messages, and new requests are answered.
async fn neighbours_flow(
    server: &common::TestServer,
    client: &SendRequest<Bytes>,
    other: &mut common::Events,
) {
    server.publish("v2", "fine", "still here").await;
    assert_eq!(common::next(other, 10).await.data, "still here");
    let (status, _) = get(client, &server.addr.to_string(), "/healthz").await;
    assert_eq!(status, 200);
}

/// The hub cuts a stream whose queue overflows: on HTTP/2 that is a reset of that stream alone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_that_falls_behind_is_reset_alone() {
    let server = common::spawn(&["--queue-len", "8", "--publish-burst", "100000"]).await;
    let client = h2c(server.addr).await;
    let authority = server.addr.to_string();
    let (_, mut stalled) = get(&client, &authority, "/v2/sse?username=stuck").await;
    let (_, other) = get(&client, &authority, "/v2/sse?username=fine").await;
    let mut other = events(other);
    let body = "x".repeat(4096);
    let slow = "ssepush_slow_streams_closed_total{api=\"v2\"}";
    for _ in 0..500 {
        server.publish("v2", "stuck", &body).await;
        if server.metric(slow).await > 0 {
            break;
        }
    }
    assert_eq!(server.metric(slow).await, 1);
    assert_eq!(reset_within(&mut stalled, 10).await, h2::Reason::CANCEL);
    neighbours_flow(&server, &client, &mut other).await;
    assert_eq!(server.metric("ssepush_hub_streams{api=\"v2\"}").await, 1);
    server.stop().await;
}

/// A stream that gets no window for the write timeout is reset, even when its queue never
/// overflows; the cut is counted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_without_window_is_reset_by_the_write_timeout() {
    let server = common::spawn(&[
        "--queue-len",
        "100000",
        "--write-timeout",
        "1s",
        "--publish-burst",
        "100000",
    ])
    .await;
    let client = h2c(server.addr).await;
    let authority = server.addr.to_string();
    let (_, mut stalled) = get(&client, &authority, "/v2/sse?username=stuck").await;
    let (_, other) = get(&client, &authority, "/v2/sse?username=fine").await;
    let mut other = events(other);
    // Far more than the stream's window and h2's buffer for it; far less than its queue.
    let body = "x".repeat(4096);
    for _ in 0..64 {
        server.publish("v2", "stuck", &body).await;
    }
    assert_eq!(reset_within(&mut stalled, 20).await, h2::Reason::CANCEL);
    neighbours_flow(&server, &client, &mut other).await;
    let limited = "ssepush_limited_total{limit=\"write_timeout\"}";
    assert_eq!(server.metric(limited).await, 1);
    let slow = "ssepush_slow_streams_closed_total{api=\"v2\"}";
    assert_eq!(server.metric(slow).await, 0);
    server.stop().await;
}
