//! Shutdown ends every open stream cleanly (EOF, not a reset) and returns within 5 s.

mod common;

use futures_util::StreamExt;
use std::{
    io::{BufRead, BufReader},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

async fn read_to_clean_end(response: reqwest::Response) -> String {
    let mut body = response.bytes_stream();
    let mut text = String::new();
    while let Some(chunk) = body.next().await {
        text.push_str(std::str::from_utf8(&chunk.expect("clean end, not a reset")).unwrap());
    }
    text
}

#[tokio::test]
async fn open_streams_end_cleanly_on_shutdown() {
    let server = common::spawn(&[]).await;
    let mut readers = Vec::new();
    for path in ["/v1/sse", "/v2/sse", "/v3/sse", "/v2/sse"] {
        let response = common::client()
            .get(server.url(path))
            .query(&[("username", "demo")])
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        readers.push(tokio::spawn(read_to_clean_end(response)));
    }
    server.publish("v2", "demo", "last words").await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    let took = server.stop().await;
    assert!(took < Duration::from_secs(5), "shutdown took {took:?}");
    for (i, reader) in readers.into_iter().enumerate() {
        let text = tokio::time::timeout(Duration::from_secs(1), reader)
            .await
            .unwrap()
            .unwrap();
        assert!(text.starts_with(": stream open"));
        // The v2 streams (1 and 3) got the message sent just before shutdown.
        if i % 2 == 1 {
            assert!(text.contains("data: last words\n\n"), "{text:?}");
        }
    }
}

#[tokio::test]
async fn sigterm_exits_cleanly_within_5_s() {
    let mut child = Command::new(env!("CARGO_BIN_EXE_ssepush"))
        .args([
            "--host",
            "127.0.0.1",
            "--port",
            "0",
            "--static-dir",
            "/nonexistent",
        ])
        .env("RUST_LOG", "info")
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let addr = lines
        .by_ref()
        .map_while(Result::ok)
        .find_map(|l| l.split("addr=").nth(1).map(|a| a.trim().to_owned()))
        .expect("a listening line");
    std::thread::spawn(move || lines.for_each(drop));
    let response = common::client()
        .get(format!("http://{addr}/v2/sse?username=demo"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let reader = tokio::spawn(read_to_clean_end(response));
    tokio::time::sleep(Duration::from_millis(200)).await;

    let started = Instant::now();
    let kill = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(kill.success());
    let status = tokio::task::spawn_blocking(move || child.wait())
        .await
        .unwrap()
        .unwrap();
    let took = started.elapsed();
    assert!(status.success(), "{status:?}");
    assert!(took < Duration::from_secs(5), "exit took {took:?}");
    tokio::time::timeout(Duration::from_secs(1), reader)
        .await
        .unwrap()
        .unwrap();
}
