//! v3 resumes that the history can't serve, read back from Kafka (a real broker): a client
//! whose instance died resumes on a fresh one that kept none of its messages.

mod common;

use common::kafka::{expect, server, server_with, wait_consuming};
use common::{Events, TestServer, next, quiet};
use std::time::{Duration, Instant};
use testkit::Broker;

/// Flags for an instance whose history keeps almost nothing of users without a stream.
const TINY_HISTORY: [&str; 4] = ["--max-frame-bytes", "1KiB", "--history-max-bytes", "2KiB"];

/// Waits until `server` has consumed `records` Kafka records in all.
async fn consumed(server: &TestServer, records: u64) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while server.metric("ssepush_kafka_records_total").await < records {
        assert!(Instant::now() < deadline, "records not consumed in 60 s");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// `n` messages `"{label} {i}"` for `demo`, and their records.
fn demo_records(label: &str, n: usize) -> (Vec<String>, Vec<Vec<u8>>) {
    let texts: Vec<String> = (0..n).map(|i| format!("{label} {i}")).collect();
    let values = texts
        .iter()
        .map(|t| format!("demo:{t}").into_bytes())
        .collect();
    (texts, values)
}

/// The next `n` events are `demo`'s messages at `offsets`, in order.
async fn expect_all(events: &mut Events, texts: &[String], offsets: &[i64]) {
    for (text, offset) in texts.iter().zip(offsets) {
        expect(events, text, *offset).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fresh_instance_reads_back_what_its_history_lacks() {
    let mut broker = Broker::start().await;
    let mut a = server(&broker, "replay-a").await;
    wait_consuming(&a, &mut broker).await;
    let mut on_a = a.open("v3", "demo").await;
    let seen = broker.produce(b"demo:seen on A").await;
    expect(&mut on_a, "seen on A", seen).await;
    a.kill();
    drop(on_a);

    // 500 for demo among 250 for others, from a batching producer.
    let texts: Vec<String> = (0..500).map(|i| format!("missed {i}")).collect();
    let mut values = Vec::new();
    for (i, text) in texts.iter().enumerate() {
        values.push(format!("demo:{text}").into_bytes());
        if i % 2 == 0 {
            values.push(format!("user{i}:not for demo").into_bytes());
        }
    }
    let offsets = broker.produce_batched(&values, 20).await;
    let demo_offsets: Vec<i64> = offsets
        .iter()
        .zip(&values)
        .filter(|(_, v)| v.starts_with(b"demo:"))
        .map(|(o, _)| *o)
        .collect();

    // A fresh instance reads them all, and keeps only the last few.
    let b = server_with(&broker, "replay-b", &TINY_HISTORY).await;
    wait_consuming(&b, &mut broker).await;
    consumed(&b, values.len() as u64 + 1).await;
    assert!(b.metric("ssepush_history_evicted_total").await >= 500);

    let mut on_b = b.open_with("v3", "demo", Some(&format!("0-{seen}"))).await;
    expect_all(&mut on_b, &texts, &demo_offsets).await;
    let live = broker.produce(b"demo:live on B").await;
    expect(&mut on_b, "live on B", live).await;
    quiet(&mut on_b, 500).await;

    let replayed = b.metric("ssepush_kafka_replayed_messages_total").await;
    let read = b.metric("ssepush_kafka_replay_records_read_total").await;
    println!(
        "resumed on a fresh instance from 0-{seen}: 500 missed in order, none twice, then live; \
         {replayed} read back from Kafka ({read} records read), the rest from its history"
    );
    assert!(replayed >= 450, "only {replayed} read back from Kafka");
    assert_eq!(
        common::metrics_text(&b.url(""), None)
            .await
            .lines()
            .find(|l| l.starts_with("ssepush_kafka_replays_total{"))
            .unwrap_or_default(),
        r#"ssepush_kafka_replays_total{outcome="filled"} 1"#
    );
    b.stop().await;
    broker.down().await;
}

/// Past the bounds, or when the topic no longer has the client's next record, a resume gets
/// the resync it got before, and the history's messages after it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_back_past_its_bounds_is_a_resync() {
    let mut broker = Broker::start().await;
    let mut flags = TINY_HISTORY.to_vec();
    flags.extend(["--replay-max-records", "50"]);
    let b = server_with(&broker, "replay-bounds", &flags).await;
    wait_consuming(&b, &mut broker).await;
    let first = broker.produce(b"demo:first").await;
    let values: Vec<Vec<u8>> = (0..100)
        .map(|i| format!("other:{i}").into_bytes())
        .collect();
    broker.produce_batched(&values, 5).await;
    let last = broker.produce(b"demo:last").await;
    consumed(&b, 103).await;

    // 101 records since `first`: more than 50.
    let mut far = b.open_with("v3", "demo", Some(&format!("0-{first}"))).await;
    let resync = next(&mut far, 20).await;
    assert_eq!(resync.event, "resync", "{resync:?}");
    assert!(
        resync.data.contains("--replay-max-records"),
        "{}",
        resync.data
    );
    // An offset before the first the topic holds (the topic starts at 0 here, so an id from
    // a far larger topic on another cluster stands in for one that was deleted).
    let mut unknown = b.open_with("v3", "demo", Some("7-3")).await;
    assert_eq!(next(&mut unknown, 20).await.event, "resync");
    let _ = last;
    b.stop().await;
    broker.down().await;
}

/// The broker connections `server`'s process holds: its TCP sockets whose peer is the broker.
fn broker_connections(server: &TestServer, broker: &Broker) -> usize {
    let port: u16 = broker.addr.rsplit(':').next().unwrap().parse().unwrap();
    let inodes: Vec<String> = std::fs::read_dir(format!("/proc/{}/fd", server.pid()))
        .unwrap()
        .filter_map(|fd| std::fs::read_link(fd.ok()?.path()).ok())
        .filter_map(|link| {
            let link = link.to_string_lossy().into_owned();
            Some(link.strip_prefix("socket:[")?.strip_suffix(']')?.to_owned())
        })
        .collect();
    let tcp = std::fs::read_to_string("/proc/net/tcp").unwrap();
    tcp.lines()
        .skip(1)
        .filter(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let remote_port = fields[2].rsplit(':').next().unwrap();
            u16::from_str_radix(remote_port, 16) == Ok(port) && inodes.contains(&fields[9].into())
        })
        .count()
}

/// A reconnect storm: many clients resume at once on an instance that has none of their
/// messages. A few readers serve them all; a partition is read once for many clients.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reconnect_storm_shares_the_readers() {
    const CLIENTS: usize = 40;
    const MISSED: usize = 10;
    let mut broker = Broker::start().await;
    let users: Vec<String> = (0..CLIENTS).map(|k| format!("storm{k}")).collect();
    let mut seen = Vec::new();
    for user in &users {
        seen.push(broker.produce(format!("{user}:before").as_bytes()).await);
    }
    let mut values = Vec::new();
    for i in 0..MISSED {
        for user in &users {
            values.push(format!("{user}:missed {i}").into_bytes());
        }
    }
    let offsets = broker.produce_batched(&values, 20).await;
    let span = (offsets.last().unwrap() - seen[0]) as u64;

    let b = server_with(&broker, "replay-storm", &TINY_HISTORY).await;
    wait_consuming(&b, &mut broker).await;
    consumed(&b, (CLIENTS + values.len() + 1) as u64).await;
    let before = broker_connections(&b, &broker);

    let mut streams = Vec::new();
    for (user, last) in users.iter().zip(&seen) {
        let b = &b;
        streams.push(async move { b.open_with("v3", user, Some(&format!("0-{last}"))).await });
    }
    let mut streams = futures_util::future::join_all(streams).await;
    for (k, stream) in streams.iter_mut().enumerate() {
        for i in 0..MISSED {
            let e = next(stream, 30).await;
            assert_eq!(e.data, format!("missed {i}"), "{}", users[k]);
            assert_eq!(e.id, format!("0-{}", offsets[i * CLIENTS + k]));
        }
    }
    let during = broker_connections(&b, &broker);
    let read = b.metric("ssepush_kafka_replay_records_read_total").await;
    let replayed = b.metric("ssepush_kafka_replayed_messages_total").await;
    println!(
        "{CLIENTS} resumes at once, {span} records each to read: {replayed} messages read back, \
         {read} records read in all (one read each would be {}), broker connections {before} -> {during}",
        span * CLIENTS as u64
    );
    assert!(replayed >= ((CLIENTS * MISSED) as u64) * 9 / 10);
    // Two readers (the default), each one consumer.
    assert!(
        during <= before + 4,
        "{before} -> {during} broker connections"
    );
    assert!(
        read < span * CLIENTS as u64 / 4,
        "{read} records read for {CLIENTS} gaps of {span}"
    );
    for stream in &mut streams {
        quiet(stream, 200).await;
    }
    b.stop().await;
    broker.down().await;
}

/// A client whose last id is inside a batch of records gets the rest of that batch read back
/// too (tansu answers a fetch from inside a batch with the next one).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_back_from_inside_a_batch_misses_none_of_it() {
    let mut broker = Broker::start().await;
    let (texts, values) = demo_records("batched", 100);
    let offsets = broker.produce_batched(&values, 50).await;
    let b = server_with(&broker, "replay-inside", &TINY_HISTORY).await;
    wait_consuming(&b, &mut broker).await;
    consumed(&b, values.len() as u64 + 1).await;
    let mut on_b = b
        .open_with("v3", "demo", Some(&format!("0-{}", offsets[49])))
        .await;
    expect_all(&mut on_b, &texts[50..], &offsets[50..]).await;
    quiet(&mut on_b, 500).await;
    assert!(b.metric("ssepush_kafka_replayed_messages_total").await >= 40);
    b.stop().await;
    broker.down().await;
}

/// ... and when that batch is the log's last, which tansu answers with nothing at all until a
/// later record comes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_back_from_inside_the_last_batch_misses_none_of_it() {
    let mut broker = Broker::start().await;
    let b = server_with(&broker, "replay-last-batch", &TINY_HISTORY).await;
    wait_consuming(&b, &mut broker).await;
    let (texts, values) = demo_records("last batch", 50);
    let offsets = broker.produce_batched(&values, 50).await;
    consumed(&b, values.len() as u64 + 1).await;
    let mut on_b = b
        .open_with("v3", "demo", Some(&format!("0-{}", offsets[39])))
        .await;
    expect_all(&mut on_b, &texts[40..], &offsets[40..]).await;
    quiet(&mut on_b, 500).await;
    b.stop().await;
    broker.down().await;
}

/// A resume from an id far past the end of the partition's log (from a topic deleted and
/// created anew since) is a resync, then the user's history and live messages: not silence
/// until the new offsets pass the old id.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resume_from_past_the_topics_end_is_a_resync() {
    let mut broker = Broker::start().await;
    let b = server(&broker, "replay-past-end").await;
    wait_consuming(&b, &mut broker).await;
    let kept = broker.produce(b"demo:kept").await;
    consumed(&b, 2).await;
    // Well past it: tansu's high watermark is the base offset of the last batch + 1, so
    // ids inside that batch are past it too.
    let mut far = b.open_with("v3", "demo", Some("0-5000000")).await;
    let resync = next(&mut far, 20).await;
    assert_eq!(resync.event, "resync", "{resync:?}");
    assert!(resync.data.contains("past the end"), "{}", resync.data);
    expect(&mut far, "kept", kept).await;
    let live = broker.produce(b"demo:live").await;
    expect(&mut far, "live", live).await;
    // An id the log holds is taken as it is.
    let mut near = b.open_with("v3", "demo", Some(&format!("0-{live}"))).await;
    let later = broker.produce(b"demo:later").await;
    expect(&mut near, "later", later).await;
    b.stop().await;
    broker.down().await;
}
