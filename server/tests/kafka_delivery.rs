//! v3 under real producers: batches from two different clients, producers with wrong clocks,
//! where a new instance starts reading, resumes from before it (read back from Kafka), and latency.

mod common;

use common::kafka::{expect, expect_within, server, server_with, wait_consuming};
use common::{Events, next, quiet};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use testkit::Broker;

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

/// `n` records for `demo`, stamped an hour ago: older than any history window here.
async fn produce_old(broker: &mut Broker, n: usize) {
    for i in 0..n {
        broker
            .produce_stamped(format!("demo:old {i}").as_bytes(), now_ms() - 3_600_000)
            .await;
    }
}

/// Reads `offsets.len()` events and checks they are `values` at `offsets`, in order.
async fn expect_all(events: &mut Events, values: &[String], offsets: &[i64]) {
    for (value, offset) in values.iter().zip(offsets) {
        let data = value.split_once(':').unwrap().1;
        expect(events, data, *offset).await;
    }
}

/// Batches used to be taken for a recreated topic (the broker reports a batch's base offset as
/// the high watermark) and delivered again every couple of seconds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batched_records_arrive_exactly_once() {
    let mut broker = Broker::start().await;
    let server = server(&broker, "batches").await;
    wait_consuming(&server, &mut broker).await;
    let mut demo = server.open("v3", "demo").await;

    let values: Vec<String> = (0..50).map(|i| format!("demo:batched {i}")).collect();
    let bytes: Vec<Vec<u8>> = values.iter().map(|v| v.clone().into_bytes()).collect();
    let offsets = broker.produce_batched(&bytes, 50).await;
    expect_all(&mut demo, &values, &offsets).await;
    // Five checks for a recreated topic run in this time; none may send anything again.
    quiet(&mut demo, 10_000).await;
    assert_eq!(server.metric("ssepush_kafka_records_total").await, 51);
    server.stop().await;
    broker.down().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_python_batches_arrive_exactly_once() {
    let mut broker = Broker::start().await;
    let server = server(&broker, "kafka-python").await;
    wait_consuming(&server, &mut broker).await;
    let mut demo = server.open("v3", "demo").await;

    let values: Vec<String> = (0..50).map(|i| format!("demo:from python {i}")).collect();
    let refs: Vec<&str> = values.iter().map(String::as_str).collect();
    let offsets = broker.produce_with_kafka_python(&refs, 50).await;
    expect_all(&mut demo, &values, &offsets).await;
    quiet(&mut demo, 5_000).await;
    server.stop().await;
    broker.down().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_with_any_producer_clock_are_delivered() {
    let mut broker = Broker::start().await;
    let server = server(&broker, "clocks").await;
    wait_consuming(&server, &mut broker).await;
    let mut demo = server.open("v3", "demo").await;

    let hour_ago = broker
        .produce_stamped(b"demo:stamped an hour ago", now_ms() - 3_600_000)
        .await;
    let zero = broker.produce_stamped(b"demo:stamped 0", 0).await;
    let future = broker
        .produce_stamped(b"demo:stamped tomorrow", now_ms() + 86_400_000)
        .await;
    expect(&mut demo, "stamped an hour ago", hour_ago).await;
    expect(&mut demo, "stamped 0", zero).await;
    expect(&mut demo, "stamped tomorrow", future).await;
    quiet(&mut demo, 500).await;
    server.stop().await;
    broker.down().await;
}

/// A new instance does not deliver records older than the history window as live ones.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_instance_skips_records_older_than_the_history_window() {
    let mut broker = Broker::start().await;
    produce_old(&mut broker, 5).await;
    let recent = broker.produce(b"demo:recent").await;
    let server = server_with(&broker, "window", &["--history-ttl", "10m"]).await;
    wait_consuming(&server, &mut broker).await;
    // Where reading starts depends on the broker: at the window (Kafka's time index) or at
    // the log's end (tansu, which has none). Either way no old record is live.
    assert!(server.metric("ssepush_kafka_records_total").await <= 2);
    let mut demo = server
        .open_with("v3", "demo", Some(&format!("0-{}", recent - 1)))
        .await;
    expect(&mut demo, "recent", recent).await;
    // A client resuming from before the window missed the old ones too: they are read back
    // from Kafka, which still has them.
    let mut early = server.open_with("v3", "demo", Some("0-0")).await;
    for i in 1..5 {
        expect(&mut early, &format!("old {i}"), recent - 5 + i).await;
    }
    expect(&mut early, "recent", recent).await;
    quiet(&mut early, 300).await;
    server.stop().await;
    broker.down().await;
}

/// On a broker without a time index (tansu answers every time lookup with the log's start), a
/// new instance whose first record is older than the window starts at the log's end rather
/// than read the old records; a client resuming from before that gets the gap read back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_time_index_a_new_instance_starts_at_the_end() {
    let mut broker = Broker::start().await;
    let old: Vec<Vec<u8>> = (0..30_000)
        .map(|i| format!("user{}:old {i}", i % 100).into_bytes())
        .collect();
    broker
        .produce_batched_at(&old, 20, Some(now_ms() - 3_600_000))
        .await;
    let recent = broker.produce(b"demo:recent").await;
    let server = server_with(&broker, "at-the-end", &["--history-ttl", "10m"]).await;
    wait_consuming(&server, &mut broker).await;
    let log = server.log_text();
    assert!(
        log.contains("the broker has no time index; reading starts at the log's end"),
        "{log}"
    );
    assert!(server.metric("ssepush_kafka_records_total").await < 100);
    let mut demo = server
        .open_with("v3", "demo", Some(&format!("0-{}", recent - 1)))
        .await;
    expect(&mut demo, "recent", recent).await;
    quiet(&mut demo, 500).await;
    assert_eq!(
        server.metric("ssepush_kafka_replayed_messages_total").await,
        1
    );
    server.stop().await;
    broker.down().await;
}

/// On such a broker, a stream opened as the instance starts gets what is produced after it
/// opened, although the consumer is handed its partition only later: reading starts at the
/// log's end at start-up, not at the end when the partition comes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_opened_at_start_up_gets_what_is_produced_before_the_partition_comes() {
    let mut broker = Broker::start().await;
    produce_old(&mut broker, 5).await;
    let server = server_with(&broker, "early", &["--history-ttl", "10m"]).await;
    // Right away: the consumer's group join takes longer than this.
    let mut demo = server.open("v3", "demo").await;
    let fresh = broker.produce(b"demo:fresh").await;
    expect(&mut demo, "fresh", fresh).await;
    quiet(&mut demo, 300).await;
    server.stop().await;
    broker.down().await;
}

/// The same for a record from a producer whose clock is an hour behind: produced after
/// start-up, it is live whatever its timestamp.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_late_clock_record_produced_after_start_up_is_live() {
    let mut broker = Broker::start().await;
    produce_old(&mut broker, 5).await;
    let server = server_with(&broker, "late-clock", &["--history-ttl", "10m"]).await;
    let mut demo = server.open("v3", "demo").await;
    let late = broker
        .produce_stamped(b"demo:late clock", now_ms() - 3_600_000)
        .await;
    expect(&mut demo, "late clock", late).await;
    quiet(&mut demo, 300).await;
    server.stop().await;
    broker.down().await;
}

/// After a restart, a client resuming from before where the new process started reading gets
/// the gap read back from Kafka, rather than silently nothing for it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resume_from_before_the_new_process_started_is_read_back() {
    let mut broker = Broker::start().await;
    let first = server(&broker, "vouch").await;
    wait_consuming(&first, &mut broker).await;
    let mut demo = first.open("v3", "demo").await;
    let a = broker.produce(b"demo:a").await;
    let b = broker.produce(b"demo:b").await;
    expect(&mut demo, "a", a).await;
    expect(&mut demo, "b", b).await;
    drop(demo);
    first.stop().await;

    let c = broker.produce(b"demo:c").await;
    let second = server(&broker, "vouch").await;
    // Opened before the new consumer has its partition: decided when it starts reading.
    let mut from_a = second
        .open_with("v3", "demo", Some(&format!("0-{a}")))
        .await;
    let mut from_b = second
        .open_with("v3", "demo", Some(&format!("0-{b}")))
        .await;
    expect_within(&mut from_a, "b", b, 30).await;
    expect(&mut from_a, "c", c).await;
    quiet(&mut from_a, 500).await;
    expect(&mut from_b, "c", c).await;
    quiet(&mut from_b, 500).await;
    second.stop().await;
    broker.down().await;
}

fn median(v: &mut [Duration]) -> Duration {
    v.sort();
    v[v.len() / 2]
}

/// Produce → stream and the POST's answer, median of 10 each. The targets are 20 ms; the
/// bounds here leave room for a loaded CI machine, and the bench reports the real figures.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn latency_produce_to_stream_and_post_answer() {
    let mut broker = Broker::start().await;
    let server = server(&broker, "latency").await;
    wait_consuming(&server, &mut broker).await;
    let mut demo = server.open("v3", "demo").await;
    let (mut to_stream, mut post) = (Vec::new(), Vec::new());
    for i in 0..10 {
        let sent = Instant::now();
        let offset = broker
            .produce(format!("demo:produced {i}").as_bytes())
            .await;
        expect(&mut demo, &format!("produced {i}"), offset).await;
        to_stream.push(sent.elapsed());

        let sent = Instant::now();
        let published = server.publish("v3", "demo", &format!("posted {i}")).await;
        post.push(sent.elapsed());
        assert_eq!(published.delivered, None);
        assert_eq!(next(&mut demo, 10).await.id, published.id);
    }
    let (to_stream, post) = (median(&mut to_stream), median(&mut post));
    println!("v3 medians of 10: produce to stream {to_stream:?}, POST answer {post:?}");
    assert!(to_stream < Duration::from_millis(250), "{to_stream:?}");
    assert!(post < Duration::from_millis(250), "{post:?}");
    server.stop().await;
    broker.down().await;
}

/// One client POSTs 5,000 v3 messages in a row to a user whose only stream never reads. The
/// POSTs keep their pace (they used to wait ~500 ms each for the consumer), the stalled stream
/// is cut, and another user's messages keep arriving promptly throughout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sequential_posts_to_a_stalled_user_stay_fast() {
    let mut broker = Broker::start().await;
    let flags = ["--queue-len", "64", "--publish-burst", "100000"];
    let server = server_with(&broker, "stalled", &flags).await;
    wait_consuming(&server, &mut broker).await;
    let mut stalled = common::stalled_stream(server.addr, "/v3/sse?username=slow").await;
    let mut other = server.open("v3", "other").await;

    let flood = {
        let base = server.base.clone();
        tokio::spawn(async move {
            let client = reqwest::Client::new();
            let body = "x".repeat(1024);
            let started = Instant::now();
            for _ in 0..5_000 {
                let r = client
                    .post(format!("{base}/v3/message?username=slow"))
                    .body(body.clone())
                    .send()
                    .await
                    .unwrap();
                assert_eq!(r.status(), 200);
            }
            started.elapsed()
        })
    };
    let mut delays = Vec::new();
    let mut i = 0;
    while !flood.is_finished() {
        let sent = Instant::now();
        // Through the server, like the flood: one producer. With a second one writing to the
        // partition, tansu 0.6 can let the consumer step over a record for good (its memory
        // storage raises the high watermark before it stores the batch; see the bench's
        // `tansu_fetch_race` example), which a test must not mistake for the server's fault.
        let published = server.publish("v3", "other", &format!("ping {i}")).await;
        // Behind whatever part of the flood the consumer has not read yet: on a machine whose
        // cores are busy with other work, that can take many seconds.
        let e = common::next(&mut other, 90).await;
        assert_eq!((e.data, e.id), (format!("ping {i}"), published.id));
        delays.push(sent.elapsed());
        i += 1;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let took = flood.await.unwrap();
    delays.sort();
    let p99 = delays[(delays.len() * 99 / 100).min(delays.len() - 1)];
    println!(
        "5000 sequential v3 POSTs to a stalled user in {took:?}; other user's p99 {p99:?} over {} samples",
        delays.len()
    );
    // Targets: 60 s and 1 s (the bench measures them). The bounds only catch a user held up
    // behind the stalled one, and leave room for a machine whose cores are busy elsewhere.
    assert!(took < Duration::from_secs(180), "{took:?}");
    assert!(p99 < Duration::from_secs(30), "{p99:?}");
    assert!(
        server
            .metric("ssepush_slow_streams_closed_total{api=\"v3\"}")
            .await
            >= 1
    );
    assert!(
        common::closed_within(&mut stalled, 10).await,
        "stalled connection still open"
    );
    server.stop().await;
    broker.down().await;
}
