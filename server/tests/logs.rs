//! `--log-format json`: every line the server writes is one JSON object a log shipper can
//! parse, with a level, a message and the event's fields.

mod common;

#[tokio::test]
async fn json_logs_are_one_object_per_line() {
    let server = common::spawn(&["--log-format", "json"]).await;
    let mut events = server.open("v2", "logs").await;
    server.publish("v2", "logs", "hello").await;
    assert_eq!(common::next(&mut events, 5).await.data, "hello");
    let log = server.log_text();
    server.stop().await;
    let lines: Vec<serde_json::Value> = log
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    let listening = lines
        .iter()
        .find(|l| l["message"] == "listening")
        .expect("a listening line");
    assert_eq!(listening["level"], "INFO");
    assert!(
        listening["addr"]
            .as_str()
            .unwrap()
            .starts_with("127.0.0.1:")
    );
    assert!(lines.iter().all(|l| l["timestamp"].is_string()));
}
