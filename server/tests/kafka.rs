//! v3 against a real Kafka-protocol broker: records reach SSE streams, POSTs go through Kafka,
//! several instances each deliver everything, and the broker may come and go.

mod common;

use common::kafka::{expect, readyz, server, wait_consuming, wait_ready};
use common::{next, quiet};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use std::time::{Duration, Instant};
use testkit::{Broker, free_port};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_reach_sse_intact_and_bad_ones_are_skipped_in_order() {
    let mut broker = Broker::start().await;
    let server = server(&broker, "records").await;
    wait_consuming(&server, &mut broker).await;
    let mut demo = server.open("v3", "demo").await;

    let crab = broker.produce("demo:🦀 howdy from kafka!".as_bytes()).await;
    let colons = broker
        .produce("demo:a:b: c\nline 2\r\nline 3\rend".as_bytes())
        .await;
    // Within --max-body, but 7 times larger as an event: over --max-frame-bytes.
    let amplified = [&b"demo:"[..], &[b'\n'; 60_000]].concat();
    let bad: [&[u8]; 7] = [
        b"no colon here",
        b":no user",
        b"demo:",
        b"a\x01b:ctl",
        b"demo:\xff\xfe",
        &[b'x'; 70_000],
        &amplified,
    ];
    for value in bad {
        broker.produce(value).await;
    }
    let _other = broker.produce(b"other:not for demo").await;
    let after = broker
        .produce("demo:after the bad ones 👋".as_bytes())
        .await;

    expect(&mut demo, "🦀 howdy from kafka!", crab).await;
    expect(&mut demo, "a:b: c\nline 2\nline 3\nend", colons).await;
    expect(&mut demo, "after the bad ones 👋", after).await;
    quiet(&mut demo, 500).await;
    assert_eq!(
        server.metric("ssepush_kafka_records_skipped_total").await,
        7
    );
    server.stop().await;
    broker.down().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_post_anywhere_and_resume_anywhere() {
    let mut broker = Broker::start().await;
    let a = server(&broker, "instance-a").await;
    let b = server(&broker, "instance-b").await;
    wait_consuming(&a, &mut broker).await;
    wait_consuming(&b, &mut broker).await;

    // A subscriber on A, a POST to B: delivered once, with a Kafka position as id.
    let mut on_a = a.open("v3", "demo").await;
    let first = b.publish("v3", "demo", "Howdy from version 3").await;
    assert!(first.id.starts_with("0-"), "{first:?}");
    let e = next(&mut on_a, 20).await;
    assert_eq!(
        (e.data.as_str(), e.id.as_str()),
        ("Howdy from version 3", first.id.as_str())
    );
    let second: wire::Published = common::client()
        .post(a.url("/v3/message?username=demo&wait=delivered"))
        .body("second")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        second.delivered,
        Some(1),
        "A's own consumer delivered it to the stream on A"
    );
    let seen = next(&mut on_a, 20).await;
    assert_eq!(seen.id, second.id);
    quiet(&mut on_a, 300).await;

    // A dies; messages keep coming; the client resumes on B from the last id it saw.
    drop(on_a);
    a.stop().await;
    let mut missed = Vec::new();
    for i in 0..3 {
        missed.push(
            b.publish("v3", "demo", &format!("while A was gone {i}"))
                .await,
        );
    }
    broker.produce(b"demo:produced directly").await;
    let mut on_b = b.open_with("v3", "demo", Some(&seen.id)).await;
    for (i, m) in missed.iter().enumerate() {
        let e = next(&mut on_b, 20).await;
        assert_eq!(
            (e.data, e.id.as_str()),
            (format!("while A was gone {i}"), m.id.as_str())
        );
    }
    assert_eq!(next(&mut on_b, 20).await.data, "produced directly");
    let live = b.publish("v3", "demo", "live on B").await;
    let e = next(&mut on_b, 20).await;
    assert_eq!(
        (e.data.as_str(), e.id.as_str()),
        ("live on B", live.id.as_str())
    );
    quiet(&mut on_b, 500).await;
    println!(
        "two instances: subscriber on A got the POST to B once; resumed on B after {} with 4 missed + 1 live, no duplicates",
        seen.id
    );
    b.stop().await;
    broker.down().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restarted_instance_resumes_from_committed_offsets() {
    let mut broker = Broker::start().await;
    let first = server(&broker, "restarting").await;
    wait_consuming(&first, &mut broker).await;
    let mut demo = first.open("v3", "demo").await;
    let before = broker.produce(b"demo:before the restart").await;
    expect(&mut demo, "before the restart", before).await;
    drop(demo);
    first.stop().await;

    let down1 = broker.produce(b"demo:while down 1").await;
    let down2 = broker.produce(b"demo:while down 2").await;
    let second = server(&broker, "restarting").await;
    let mut demo = second
        .open_with("v3", "demo", Some(&format!("0-{before}")))
        .await;
    expect(&mut demo, "while down 1", down1).await;
    expect(&mut demo, "while down 2", down2).await;
    quiet(&mut demo, 500).await;
    // It resumed from its committed position instead of re-reading the topic.
    assert!(second.metric("ssepush_kafka_records_total").await <= 2);
    second.stop().await;
    broker.down().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broker_restart_mid_stream() {
    let mut broker = Broker::start().await;
    let server = server(&broker, "restart").await;
    wait_consuming(&server, &mut broker).await;
    let mut demo = server.open("v3", "demo").await;
    let one = broker.produce(b"demo:before the broker restart").await;
    expect(&mut demo, "before the broker restart", one).await;

    broker.down().await;
    let not_ready = wait_ready(&server, 503).await;
    assert!(not_ready.reason.contains("kafka"), "{not_ready:?}");
    broker.up().await;
    wait_ready(&server, 200).await;
    // The broker kept nothing (memory storage), so offsets start over at 0. The stream gets
    // the new record next, and nothing it had before comes again.
    let offset = broker.produce(b"demo:after the broker restart").await;
    expect(&mut demo, "after the broker restart", offset).await;
    quiet(&mut demo, 3000).await;
    server.stop().await;
    broker.down().await;
}

/// A commit in flight when the broker dies is retried by librdkafka against the broker that
/// comes back, empty: the group's committed offset is then one of the old numbering, past the
/// new log's end, and an assignment starts there, where the broker answers with silence. The
/// test commits such an offset itself as the broker comes back. Reading must start over at the
/// new log's start all the same, not wait for the new offsets to pass the stale one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stale_commit_on_a_restarted_broker_does_not_hold_the_consumer_back() {
    let mut broker = Broker::start().await;
    let server = server(&broker, "stale-commit").await;
    wait_consuming(&server, &mut broker).await;
    let mut demo = server.open("v3", "demo").await;
    for n in 0..40 {
        broker.produce(format!("other:old {n}").as_bytes()).await;
    }
    let last_old = broker.produce(b"demo:old").await;
    expect(&mut demo, "old", last_old).await;
    // The server asks for the log's end every 2 s: the new log's, lower, then tells it was
    // created anew.
    tokio::time::sleep(Duration::from_secs(3)).await;

    broker.down().await;
    // Long enough for the server's reconnects to back off to their 2 s maximum: it comes back
    // after the commit below, most of the time.
    tokio::time::sleep(Duration::from_secs(5)).await;
    broker.up().await;
    commit_for_group(&broker, "stale-commit", last_old + 1);
    let new0 = broker.produce(b"demo:new 0").await;
    let new1 = broker.produce(b"demo:new 1").await;
    assert!(new1 < last_old);

    expect(&mut demo, "new 0", new0).await;
    expect(&mut demo, "new 1", new1).await;
    let new2 = broker.produce(b"demo:new 2").await;
    expect(&mut demo, "new 2", new2).await;
    quiet(&mut demo, 1000).await;
    server.stop().await;
    broker.down().await;
}

/// A topic created anew and refilled past where the old one ended before this instance looks
/// at its end again: its high watermark never falls below the highest seen. The group rejoins
/// with no committed offset, so the read starts over at the new log's start, under offsets
/// this instance has read before (beyond the records it remembers). What tells the new records
/// from redeliveries is the offset the broker confirmed committing before it lost it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_topic_created_anew_and_refilled_past_its_old_end_is_read_from_its_start() {
    let mut broker = Broker::start().await;
    let server = server(&broker, "refilled").await;
    wait_consuming(&server, &mut broker).await;
    let mut demo = server.open("v3", "demo").await;
    let old: Vec<Vec<u8>> = (0..5000)
        .map(|n| format!("other:old {n}").into_bytes())
        .collect();
    broker.produce_batched(&old, 5).await;
    let last_old = broker.produce(b"demo:old").await;
    expect(&mut demo, "old", last_old).await;
    // Committed, and confirmed.
    tokio::time::sleep(Duration::from_secs(3)).await;

    broker.down().await;
    tokio::time::sleep(Duration::from_secs(5)).await;
    // Handed to a producer before the broker is back, so that they reach it at once, before
    // this instance looks at the log's end again (every 2 s). Small batches: tansu reports
    // the base offset of the last batch as the high watermark, which would give it away.
    let producer: FutureProducer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", &broker.addr)
        .set("allow.auto.create.topics", "false")
        .set("linger.ms", "5")
        .set("batch.num.messages", "100")
        .set("message.timeout.ms", "30000")
        .create()
        .unwrap();
    let mut demo_sent = Vec::new();
    for n in 0..last_old + 100 {
        let user = if n % 500 == 0 { "demo" } else { "other" };
        let value = format!("{user}:new {n}");
        let record = FutureRecord::<(), str>::to(testkit::TOPIC).payload(&value);
        let delivery = producer.send_result(record).map_err(|(e, _)| e).unwrap();
        if user == "demo" {
            demo_sent.push((n, delivery));
        }
    }
    broker.up().await;
    let mut demo_new = Vec::new();
    for (n, delivery) in demo_sent {
        let offset = delivery.await.unwrap().map_err(|(e, _)| e).unwrap().offset;
        demo_new.push((n, offset));
    }
    producer.flush(Duration::from_secs(20)).unwrap();
    assert!(demo_new[0].1 < last_old, "{demo_new:?}");
    for (n, offset) in demo_new {
        expect(&mut demo, &format!("new {n}"), offset).await;
    }
    quiet(&mut demo, 1000).await;
    server.stop().await;
    broker.down().await;
}

/// Commits `offset` of partition 0 for `group`, as a member of it would.
fn commit_for_group(broker: &Broker, group: &str, offset: i64) {
    use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
    let consumer: BaseConsumer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", &broker.addr)
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .create()
        .unwrap();
    let mut tpl = rdkafka::TopicPartitionList::new();
    tpl.add_partition_offset(testkit::TOPIC, 0, rdkafka::Offset::Offset(offset))
        .unwrap();
    consumer.commit(&tpl, CommitMode::Sync).unwrap();
}

/// After the broker restarted empty, its offsets start over, and until the new numbering
/// passes where the old one ended an id like `0-3` may be either numbering's. A client coming
/// from another instance that is ahead of this one holds an id of the new numbering that this
/// one has not read yet (a failover, in the soak: an instance killed). It must get what comes
/// after its id, not a resync and the new messages it already has again. A client with an id
/// of the old numbering still gets the resync and everything new.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resume_from_an_instance_ahead_after_a_broker_restart() {
    let mut broker = Broker::start().await;
    let server = server(&broker, "renumbered").await;
    wait_consuming(&server, &mut broker).await;
    let mut demo = server.open("v3", "demo").await;
    // The old numbering goes well past the ids below.
    for n in 0..30 {
        broker.produce(format!("other:old {n}").as_bytes()).await;
    }
    let last_old = broker.produce(b"demo:old").await;
    expect(&mut demo, "old", last_old).await;

    broker.down().await;
    wait_ready(&server, 503).await;
    broker.up().await;
    wait_ready(&server, 200).await;
    let new0 = broker.produce(b"demo:new 0").await;
    expect(&mut demo, "new 0", new0).await;
    let new1 = broker.produce(b"demo:new 1").await;
    expect(&mut demo, "new 1", new1).await;
    assert!(new1 + 2 < last_old, "the ids below are ambiguous");

    assert_eq!(broker.produce(b"other:new 2").await, new1 + 1);
    assert_eq!(broker.produce(b"demo:new 3").await, new1 + 2);
    // Another instance has already delivered new 3 (offset new1 + 2) to this client; this one
    // may not have read it yet.
    let mut ahead = server
        .open_with("v3", "demo", Some(&format!("0-{}", new1 + 2)))
        .await;
    // A client that saw nothing since the restart, with an id of the old numbering (past the
    // new log's end).
    let mut old = server
        .open_with("v3", "demo", Some(&format!("0-{}", last_old - 5)))
        .await;
    let new4 = broker.produce(b"demo:new 4").await;
    expect(&mut ahead, "new 4", new4).await;
    quiet(&mut ahead, 1000).await;

    let resync = next(&mut old, 20).await;
    assert_eq!(resync.event, "resync", "{resync:?}");
    for (data, offset) in [
        ("new 0", new0),
        ("new 1", new1),
        ("new 3", new1 + 2),
        ("new 4", new4),
    ] {
        expect(&mut old, data, offset).await;
    }
    quiet(&mut old, 1000).await;
    server.stop().await;
    broker.down().await;
}

/// POSTs are produced again after the broker restarts with no memory of the server's
/// idempotent producer, which leaves librdkafka's producer fenced for good: it is replaced.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn posts_work_again_after_the_broker_forgot_the_producer() {
    let mut broker = Broker::start().await;
    let server = server(&broker, "refenced").await;
    wait_consuming(&server, &mut broker).await;
    let mut demo = server.open("v3", "demo").await;
    let before = server.publish("v3", "demo", "before").await;
    assert_eq!(next(&mut demo, 20).await.id, before.id);

    broker.down().await;
    wait_ready(&server, 503).await;
    broker.up().await;
    wait_ready(&server, 200).await;
    let deadline = Instant::now() + Duration::from_secs(60);
    let after = loop {
        let response = server.post("v3", "demo", "after").await;
        if response.status() == 200 {
            break response.json::<wire::Published>().await.unwrap();
        }
        assert!(
            Instant::now() < deadline,
            "v3 POSTs still answer {} a minute after the broker came back",
            response.status()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    let e = next(&mut demo, 30).await;
    assert_eq!((e.data.as_str(), e.id), ("after", after.id));
    server.stop().await;
    broker.down().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_broker_then_broker() {
    let mut broker = Broker::stopped(free_port());
    let server = server(&broker, "late").await;

    // v2 is unaffected.
    let mut v2 = server.open("v2", "demo").await;
    server.publish("v2", "demo", "v2 works").await;
    assert_eq!(next(&mut v2, 5).await.data, "v2 works");
    let (status, body) = readyz(&server).await;
    assert_eq!(status, 503, "{body:?}");
    assert!(!body.ready);

    let mut v3 = server.open("v3", "demo").await;
    let started = Instant::now();
    let response = server.post("v3", "demo", "nobody home").await;
    let took = started.elapsed();
    assert_eq!(response.status(), 503);
    // --kafka-timeout 3s, librdkafka's once-a-second timeout scan, and a busy machine.
    assert!(took < Duration::from_secs(10), "503 took {took:?}");
    let reason = response.text().await.unwrap();
    assert!(reason.starts_with("kafka is unavailable"), "{reason}");

    broker.up().await;
    wait_ready(&server, 200).await;
    let published = {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let response = server.post("v3", "demo", "hello again").await;
            if response.status() == 200 {
                break response.json::<wire::Published>().await.unwrap();
            }
            assert!(Instant::now() < deadline, "v3 POST never recovered");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    };
    // Promptly: the consumer's assignment must not wait behind the errors queued during the
    // outage (it once waited ~30 s for them to drain).
    let e = next(&mut v3, 10).await;
    // Not "nobody home": a POST answered 503 is never produced later.
    assert_eq!((e.data.as_str(), e.id), ("hello again", published.id));
    quiet(&mut v3, 3000).await;
    server.stop().await;
    broker.down().await;
}

/// Ready means v3 records reach this instance's streams: not before its consumer has its
/// partitions (joining its group takes a few seconds after the broker first answers), nor while
/// a rebalance or another process sharing its `--kafka-group` leaves it none.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ready_only_with_partitions() {
    let mut broker = Broker::start().await;
    let server = server(&broker, "ready-partitions").await;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (status, body) = readyz(&server).await;
        let partitions = server.metric("ssepush_kafka_partitions_assigned").await;
        if status == 200 {
            // Partitions are only taken away by a rebalance, which a group of one never has.
            assert!(partitions >= 1, "ready with no partitions: {body:?}");
            break;
        }
        assert!(Instant::now() < deadline, "never ready: {body:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut demo = server.open("v3", "demo").await;
    let offset = broker.produce(b"demo:ready means delivered").await;
    expect(&mut demo, "ready means delivered", offset).await;
    broker.down().await;
}
