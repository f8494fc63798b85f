//! The hub in memory: resume, redelivery, eviction and lanes, without sockets or a broker.

use super::*;
use proptest::prelude::*;
use std::task::{Context, Poll, Waker};

fn hub(numbering: Numbering, history_len: usize, history_ttl: Duration) -> Hub {
    hub_in(
        numbering,
        history_len,
        history_ttl,
        HistoryMemory::new(usize::MAX),
    )
}

fn hub_in(
    numbering: Numbering,
    history_len: usize,
    history_ttl: Duration,
    memory: HistoryMemory,
) -> Hub {
    Hub::new(config(numbering, history_len, history_ttl), memory)
}

/// A test hub's settings, without read-backs.
fn config(numbering: Numbering, history_len: usize, history_ttl: Duration) -> HubConfig {
    HubConfig {
        name: "test",
        history_len,
        history_ttl,
        queue_len: 10_000,
        max_streams_per_user: 64,
        numbering,
        backfill: false,
    }
}

fn v2() -> Hub {
    hub(Numbering::Own, 100, Duration::from_secs(600))
}

fn v3() -> Hub {
    hub(Numbering::Source, 100, Duration::from_secs(600))
}

fn at(seq: u64) -> Position {
    Position::new(0, seq)
}

/// An event as a client sees it: `resync` or the id of a message, with its data.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Seen {
    Resync,
    Message(String, String),
}

fn msg(id: impl ToString, data: &str) -> Seen {
    Seen::Message(id.to_string(), data.to_owned())
}

fn parse(frames: &[u8]) -> Vec<Seen> {
    let text = std::str::from_utf8(frames).unwrap();
    text.split("\n\n")
        .filter(|block| !block.is_empty())
        .map(|block| {
            let (mut id, mut event, mut data) = (None, None, Vec::new());
            for line in block.lines() {
                let (field, value) = line.split_once(": ").unwrap_or((line, ""));
                match field {
                    "id" => id = Some(value.to_owned()),
                    "event" => event = Some(value.to_owned()),
                    "data" => data.push(value),
                    other => panic!("unexpected field {other:?} in {block:?}"),
                }
            }
            match (event.as_deref(), id) {
                (Some("resync"), None) => Seen::Resync,
                (None, Some(id)) => Seen::Message(id, data.join("\n")),
                other => panic!("unexpected event {other:?}"),
            }
        })
        .collect()
}

/// Everything a subscription has to send now: its notices and replay, then what is queued.
fn drain(sub: &mut Subscription) -> Vec<Seen> {
    let mut bytes: Vec<u8> = sub.notices.drain(..).flat_map(|b| b.to_vec()).collect();
    // Small batches, so replays cross batch boundaries.
    while let Some(batch) = sub.replay_next(1) {
        bytes.extend_from_slice(&batch);
    }
    let mut cx = Context::from_waker(Waker::noop());
    while let Poll::Ready(Next::Frames(b, _)) = sub.queue.poll_next(&mut cx) {
        bytes.extend_from_slice(&b);
    }
    parse(&bytes)
}

/// What a slow reader gets in one go: its notices and one replay batch, or, once it has caught
/// up, what is queued.
fn read_some(sub: &mut Subscription) -> Vec<Seen> {
    let mut bytes: Vec<u8> = sub.notices.drain(..).flat_map(|b| b.to_vec()).collect();
    if sub.replaying()
        && let Some(batch) = sub.replay_next(1)
    {
        bytes.extend_from_slice(&batch);
        return parse(&bytes);
    }
    let mut cx = Context::from_waker(Waker::noop());
    if let Poll::Ready(Next::Frames(b, _)) = sub.queue.poll_next(&mut cx) {
        bytes.extend_from_slice(&b);
    }
    parse(&bytes)
}

fn subscribe(hub: &Hub, user: &str, last: Option<&str>) -> Subscription {
    hub.subscribe(user, &LastSeen::parse(last), None).unwrap()
}

#[test]
fn v2_resumes_after_a_known_id_and_resyncs_an_earlier_process() {
    let hub = v2();
    let ids: Vec<String> = (0..3)
        .map(|i| hub.publish("u", &format!("m{i}")).position.to_string())
        .collect();
    let mut resumed = subscribe(&hub, "u", Some(&ids[0]));
    assert_eq!(
        drain(&mut resumed),
        vec![msg(&ids[1], "m1"), msg(&ids[2], "m2")]
    );
    let mut earlier = subscribe(&hub, "u", Some("1-1"));
    let seen = drain(&mut earlier);
    assert_eq!(seen[0], Seen::Resync);
    assert_eq!(seen.len(), 4);
    let mut garbage = subscribe(&hub, "u", Some("not an id"));
    assert_eq!(drain(&mut garbage)[0], Seen::Resync);
}

#[test]
fn a_redelivered_position_reaches_no_stream_twice() {
    let hub = v3();
    hub.open_lane(0, 0);
    let mut live = subscribe(&hub, "u", None);
    assert!(hub.publish_at("u", "a", at(0)).fresh);
    assert!(hub.publish_at("u", "b", at(1)).fresh);
    let again = hub.publish_at("u", "a", at(0));
    assert_eq!((again.fresh, again.delivered), (false, 0));
    assert!(!hub.publish_at("u", "b", at(1)).fresh);
    assert_eq!(drain(&mut live), vec![msg("0-0", "a"), msg("0-1", "b")]);
    assert_eq!(hub.knows("u", at(0), "a"), Some(true));
    assert_eq!(hub.knows("u", at(0), "other"), Some(false));
    assert_eq!(hub.knows("u", at(7), "a"), None);
}

#[test]
fn resume_from_an_instance_that_was_ahead_skips_what_the_client_has() {
    let hub = v3();
    hub.open_lane(0, 0);
    for seq in 0..=5 {
        hub.publish_at("u", &format!("m{seq}"), at(seq));
    }
    let mut ahead = subscribe(&hub, "u", Some("0-8"));
    assert_eq!(drain(&mut ahead), vec![]);
    for seq in 6..=9 {
        hub.publish_at("u", &format!("m{seq}"), at(seq));
    }
    assert_eq!(drain(&mut ahead), vec![msg("0-9", "m9")]);
}

#[test]
fn resume_on_a_lane_not_read_yet_is_decided_when_it_opens() {
    // Opens where the client stopped: nothing missed, and what it had is not sent again.
    let hub = v3();
    let mut sub = subscribe(&hub, "u", Some("0-4"));
    assert_eq!(drain(&mut sub), vec![]);
    hub.open_lane(0, 3);
    for seq in 3..=6 {
        hub.publish_at("u", &format!("m{seq}"), at(seq));
    }
    assert_eq!(drain(&mut sub), vec![msg("0-5", "m5"), msg("0-6", "m6")]);

    // Opens past it: 5..=9 were never read here, so the client is told.
    let hub = v3();
    let mut sub = subscribe(&hub, "u", Some("0-4"));
    hub.open_lane(0, 10);
    hub.publish_at("u", "m10", at(10));
    assert_eq!(drain(&mut sub), vec![Seen::Resync, msg("0-10", "m10")]);

    // A lane that opens on its first message counts from there too.
    let hub = v3();
    let mut sub = subscribe(&hub, "u", Some("0-4"));
    hub.publish_at("u", "m7", at(7));
    assert_eq!(drain(&mut sub), vec![Seen::Resync, msg("0-7", "m7")]);
}

#[test]
fn resume_from_before_the_lane_start_resyncs() {
    let hub = v3();
    hub.open_lane(0, 100);
    hub.publish_at("u", "m100", at(100));
    let mut exact = subscribe(&hub, "u", Some("0-99"));
    assert_eq!(drain(&mut exact), vec![msg("0-100", "m100")]);
    let mut before = subscribe(&hub, "u", Some("0-50"));
    assert_eq!(drain(&mut before), vec![Seen::Resync, msg("0-100", "m100")]);
}

#[test]
fn a_read_that_jumps_ahead_leaves_a_gap_that_resyncs() {
    let hub = v3();
    hub.open_lane(0, 0);
    for seq in 0..4 {
        hub.publish_at("u", "x", at(seq));
    }
    // Re-read from inside what we have (a redelivery): no gap.
    hub.open_lane(0, 2);
    let mut inside = subscribe(&hub, "u", Some("0-1"));
    assert_eq!(drain(&mut inside).len(), 2);
    // Re-read from further on: 4..=9 never came here.
    hub.open_lane(0, 10);
    hub.publish_at("other", "y", at(10));
    let mut sub = subscribe(&hub, "u", Some("0-3"));
    assert_eq!(drain(&mut sub), vec![Seen::Resync]);
}

#[test]
fn eviction_by_length_and_by_age_resyncs() {
    let hub = hub(Numbering::Source, 2, Duration::from_secs(600));
    hub.open_lane(0, 0);
    for seq in 0..5 {
        hub.publish_at("u", &format!("m{seq}"), at(seq));
    }
    let mut sub = subscribe(&hub, "u", Some("0-1"));
    assert_eq!(
        drain(&mut sub),
        vec![Seen::Resync, msg("0-3", "m3"), msg("0-4", "m4")]
    );
    let mut kept = subscribe(&hub, "u", Some("0-3"));
    assert_eq!(drain(&mut kept), vec![msg("0-4", "m4")]);

    // A zero TTL keeps nothing: every resume from a real id misses something.
    let hub = hub_with_ttl_zero();
    let first = hub.publish("u", "gone").position.to_string();
    hub.publish("u", "gone too");
    let mut sub = subscribe(&hub, "u", Some(&first));
    assert_eq!(drain(&mut sub), vec![Seen::Resync]);
    hub.sweep();
    assert_eq!(hub.stats().history, 0);
}

fn hub_with_ttl_zero() -> Hub {
    hub(Numbering::Own, 100, Duration::ZERO)
}

#[test]
fn a_user_entry_created_after_its_lane_moved_on_cannot_vouch_for_before() {
    let hub = v3();
    hub.open_lane(0, 0);
    for seq in 0..6 {
        hub.publish_at("a", "for a", at(seq));
    }
    // b had no entry; records for b may have come and gone with it.
    let mut b = subscribe(&hub, "b", Some("0-2"));
    assert_eq!(drain(&mut b), vec![Seen::Resync]);
    // Up to date with the high water: nothing missing.
    let mut b2 = subscribe(&hub, "b", Some("0-5"));
    assert_eq!(drain(&mut b2), vec![]);
    // A redelivery of an old position to a user created late is not news.
    assert!(!hub.publish_at("c", "old", at(3)).fresh);
}

#[test]
fn a_recreated_lane_starts_over() {
    let hub = v3();
    hub.open_lane(0, 0);
    for seq in 0..3 {
        hub.publish_at("u", &format!("old{seq}"), at(seq));
    }
    let mut live = subscribe(&hub, "u", Some("0-2"));
    hub.reset_lane(0);
    hub.open_lane(0, 0);
    // The same positions now carry new messages, and the live stream gets them.
    hub.publish_at("u", "new0", at(0));
    assert_eq!(drain(&mut live), vec![msg("0-0", "new0")]);
    assert_eq!(hub.knows("u", at(1), "old1"), None);
    // An id both numberings issued is placed in the new one.
    let mut same = subscribe(&hub, "u", Some("0-0"));
    assert_eq!(drain(&mut same), vec![]);
    // A client resuming from the old numbering, past the new one: it missed the new messages
    // so far. Its id could also be one of the new numbering from an instance that is ahead,
    // so it waits until this hub reads that far.
    let mut old = subscribe(&hub, "u", Some("0-2"));
    assert_eq!(drain(&mut old), vec![]);
    hub.publish_at("u", "new1", at(1));
    assert_eq!(drain(&mut old), vec![]);
    // The new 0-2 is another user's, so the id was the old numbering's: a resync and the new
    // messages so far (decided by the next sweep).
    hub.publish_at("v", "new2", at(2));
    hub.sweep();
    assert_eq!(
        drain(&mut old),
        vec![Seen::Resync, msg("0-0", "new0"), msg("0-1", "new1")]
    );
    // Past where the old numbering ended, an id can only be a new one (an instance that is
    // ahead): the client waits for it.
    let mut ahead = subscribe(&hub, "u", Some("0-7"));
    assert_eq!(drain(&mut ahead), vec![]);
    // Once the new numbering passes the old end, old ids can't be told apart any more.
    hub.publish_at("u", "new3", at(3));
    assert_eq!(drain(&mut old), vec![msg("0-3", "new3")]);
    let mut later = subscribe(&hub, "u", Some("0-2"));
    assert_eq!(drain(&mut later), vec![msg("0-3", "new3")]);
}

/// The counts `/metrics` reads without walking the users follow every way a stream or an
/// entry comes and goes.
#[test]
fn stats_follow_streams_and_history_as_they_come_and_go() {
    let counted = |hub: &Hub| {
        let stats = hub.stats();
        assert_eq!((stats.streams, stats.history), hub.walked());
        (stats.users, stats.streams, stats.history)
    };
    let hub = Hub::new(
        HubConfig {
            queue_len: 2,
            ..config(Numbering::Source, 3, Duration::from_secs(600))
        },
        HistoryMemory::new(usize::MAX),
    );
    hub.open_lane(0, 0);
    let reader = subscribe(&hub, "a", None);
    let _slow = subscribe(&hub, "b", None);
    let mut seq = 0;
    for user in ["a", "b", "c"] {
        for _ in 0..5 {
            hub.publish_at(user, "m", at(seq));
            seq += 1;
        }
    }
    // Three each (the history's length); b's stream fell behind and was closed, and a's too,
    // since nothing read it.
    assert_eq!(counted(&hub), (3, 0, 9));
    assert_eq!(hub.stats().slow_closed, 2);
    drop(reader);
    let _again = subscribe(&hub, "a", None);
    assert_eq!(counted(&hub), (3, 1, 9));
    hub.reset_lane(0);
    assert_eq!(counted(&hub), (1, 1, 0));

    let expiring = hub_with_ttl_zero();
    let kept = subscribe(&expiring, "a", None);
    expiring.publish("a", "m");
    expiring.publish("b", "m");
    assert_eq!(counted(&expiring), (2, 1, 2));
    expiring.sweep();
    assert_eq!(counted(&expiring), (1, 1, 0));
    drop(kept);
    assert_eq!(counted(&expiring), (0, 0, 0));
}

/// A v3 hub whose lane 0 numbered 0..10 once, then started over at 0 (a broker that came back
/// empty): ids 0 to 9 are ambiguous until the new numbering passes them.
fn renumbered_at_10() -> Hub {
    let hub = v3();
    hub.open_lane(0, 0);
    for seq in 0..10 {
        hub.publish_at("other", "old", at(seq));
    }
    hub.reset_lane(0);
    hub.open_lane(0, 0);
    hub
}

/// The soak's duplicates: after a renumbering, a client failing over from an instance that is
/// ahead holds an id of the new numbering this hub has not read yet. It used to be taken for
/// the old numbering's: a resync, and the new messages the client already had again.
#[test]
fn a_resume_from_an_instance_ahead_after_a_renumbering_gets_only_what_follows() {
    let hub = renumbered_at_10();
    hub.publish_at("u", "new0", at(0));
    hub.publish_at("u", "new1", at(1));
    // The client has had new0 to new3 from the other instance.
    let mut ahead = subscribe(&hub, "u", Some("0-3"));
    assert_eq!(drain(&mut ahead), vec![]);
    hub.publish_at("x", "new2", at(2));
    hub.publish_at("u", "new3", at(3));
    assert_eq!(drain(&mut ahead), vec![]);
    hub.publish_at("u", "new4", at(4));
    assert_eq!(drain(&mut ahead), vec![msg("0-4", "new4")]);
}

/// An id this hub does not reach within the hold is taken for the old numbering's: the
/// client gets the resync and the new messages, late rather than never.
#[test]
fn a_held_resume_is_decided_after_the_hold() {
    let hub = renumbered_at_10();
    hub.publish_at("u", "new0", at(0));
    let mut old = subscribe(&hub, "u", Some("0-8"));
    hub.sweep();
    assert_eq!(drain(&mut old), vec![]);
    hub.sweep_at(Instant::now() + RENUMBERED_HOLD);
    assert_eq!(drain(&mut old), vec![Seen::Resync, msg("0-0", "new0")]);
    hub.publish_at("u", "new1", at(1));
    assert_eq!(drain(&mut old), vec![msg("0-1", "new1")]);
}

/// Held streams are decided as soon as the lane passes their id, whoever's message does it,
/// and after the hold without any traffic: not at the next sweep, which may be seconds away
/// (a churning client reconnects sooner and would be held again and again).
#[test]
fn held_resumes_are_decided_without_waiting_for_the_sweep() {
    let hub = renumbered_at_10();
    hub.publish_at("u", "new0", at(0));
    let mut passed = subscribe(&hub, "u", Some("0-2"));
    let mut idle = subscribe(&hub, "u", Some("0-8"));
    hub.publish_at("other", "new1", at(1));
    assert_eq!(drain(&mut passed), vec![]);
    // Another user's message at the id: the id was the old numbering's.
    hub.publish_at("other", "new2", at(2));
    assert_eq!(drain(&mut passed), vec![Seen::Resync, msg("0-0", "new0")]);
    assert_eq!(drain(&mut idle), vec![]);
    hub.settle_held();
    assert_eq!(drain(&mut idle), vec![]);
    hub.settle_held_at(Instant::now() + RENUMBERED_HOLD);
    assert_eq!(drain(&mut idle), vec![Seen::Resync, msg("0-0", "new0")]);
    assert_eq!(hub.shared.held_count.load(Relaxed), 0);
}

/// Names are kept inline up to 23 bytes and on the heap past that: both kinds resume, are held
/// and let go the same, and names alike in their first 23 bytes are different users.
#[test]
fn long_names_and_short_ones_are_kept_alike() {
    let names = [
        "a".repeat(23),
        "a".repeat(24),
        "a".repeat(100),
        "é".repeat(30),
    ];
    let hub = renumbered_at_10();
    for (seq, name) in (0..).zip(&names) {
        hub.publish_at(name, &format!("new{seq}"), at(seq));
    }
    let mut open = Vec::new();
    for (seq, name) in (0..).zip(&names) {
        let mut from_start = subscribe(&hub, name, Some(&at(seq).to_string()));
        assert_eq!(drain(&mut from_start), vec![], "{name}");
        let mut held = subscribe(&hub, name, Some("0-8"));
        assert_eq!(drain(&mut held), vec![], "{name}");
        hub.settle_held_at(Instant::now() + RENUMBERED_HOLD);
        assert_eq!(
            drain(&mut held),
            vec![Seen::Resync, msg(at(seq), &format!("new{seq}"))],
            "{name}"
        );
        open.extend([from_start, held]);
    }
    assert_eq!(hub.shared.held_count.load(Relaxed), 0);
    assert_eq!(hub.stats().streams, 2 * names.len());
    assert_eq!(hub.stats().users, names.len());
    drop(open);
    assert_eq!(hub.stats().streams, 0);
}

#[derive(Debug, Clone)]
enum Op {
    /// Publish to user `u`; for a source hub, `redeliver` re-publishes an earlier position.
    Publish {
        user: u8,
        redeliver: Option<prop::sample::Index>,
    },
    /// Open a stream for user `u`, resuming from one of their ids (or none).
    Subscribe {
        user: u8,
        from: Option<prop::sample::Index>,
    },
    /// Close one of the open streams.
    Drop(prop::sample::Index),
    /// Expire history (a no-op with a long TTL) and forget idle users.
    Sweep,
    /// One stream reads one batch (a slow reader).
    Read(prop::sample::Index),
    /// Every stream reads all it has.
    ReadAll,
    /// The source's read-back for one stream with a gap comes in (with backfill on).
    Fill(prop::sample::Index),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (0..3u8, prop::option::weighted(0.2, any::<prop::sample::Index>()))
            .prop_map(|(user, redeliver)| Op::Publish { user, redeliver }),
        2 => (0..3u8, prop::option::of(any::<prop::sample::Index>()))
            .prop_map(|(user, from)| Op::Subscribe { user, from }),
        1 => any::<prop::sample::Index>().prop_map(Op::Drop),
        1 => Just(Op::Sweep),
        2 => any::<prop::sample::Index>().prop_map(Op::Read),
        1 => Just(Op::ReadAll),
        2 => any::<prop::sample::Index>().prop_map(Op::Fill),
    ]
}

struct Open {
    sub: Subscription,
    user: u8,
    /// The ids the client should get, in order, if nothing was missed.
    expected: Vec<String>,
    seen: Vec<Seen>,
}

/// Runs `ops` and checks every stream: each message at most once and in order; and unless
/// the stream was told `resync`, exactly the user's messages after its last id.
///
/// The history budget holds about `budget` entries across users, so it evicts too; streams
/// read slowly, so replays meet live messages and evictions.
///
/// With `backfill`, a resume the history can't serve has a gap, filled by a later
/// [`Op::Fill`] from the log of what was published, as the source would.
fn check(
    (numbering, backfill): (Numbering, bool),
    history_len: usize,
    budget: usize,
    ops: &[Op],
) -> Result<(), TestCaseError> {
    let memory = HistoryMemory::new(budget * (memory::ENTRY_OVERHEAD + 80));
    let hub = Hub::new(
        HubConfig {
            backfill,
            ..config(numbering, history_len, Duration::from_secs(600))
        },
        memory.clone(),
    );
    let read_back = BackfillBudget::new(1 << 20);
    if numbering == Numbering::Source {
        hub.open_lane(0, 0);
    }
    let mut published: Vec<(u8, String, String)> = Vec::new();
    let mut open: Vec<Open> = Vec::new();
    let mut closed: Vec<Open> = Vec::new();
    for (n, op) in ops.iter().enumerate() {
        match op {
            Op::Publish { user, redeliver } => {
                let name = format!("u{user}");
                let (id, text, fresh) = match (numbering, redeliver) {
                    (Numbering::Source, Some(i)) if !published.is_empty() => {
                        let (u, id, text) = published[i.index(published.len())].clone();
                        let d = hub.publish_at(&format!("u{u}"), &text, id.parse().unwrap());
                        prop_assert!(!d.fresh, "redelivery of {id} taken as new");
                        (id, text, false)
                    }
                    (Numbering::Source, _) => {
                        let text = format!("m{n}");
                        let d = hub.publish_at(&name, &text, at(published.len() as u64));
                        (d.position.to_string(), text, d.fresh)
                    }
                    (Numbering::Own, _) => {
                        let text = format!("m{n}");
                        let d = hub.publish(&name, &text);
                        (d.position.to_string(), text, d.fresh)
                    }
                };
                if fresh {
                    published.push((*user, id.clone(), text));
                    for o in open.iter_mut().filter(|o| o.user == *user) {
                        o.expected.push(id.clone());
                    }
                }
            }
            Op::Subscribe { user, from } => {
                let mine: Vec<&String> = published
                    .iter()
                    .filter(|(u, ..)| u == user)
                    .map(|(_, id, _)| id)
                    .collect();
                let last = from
                    .filter(|_| !mine.is_empty())
                    .map(|i| mine[i.index(mine.len())].clone());
                let expected = match &last {
                    Some(l) => {
                        let i = mine.iter().position(|id| *id == l).unwrap();
                        mine[i + 1..].iter().map(|s| (*s).clone()).collect()
                    }
                    None => Vec::new(),
                };
                let sub = subscribe(&hub, &format!("u{user}"), last.as_deref());
                open.push(Open {
                    sub,
                    user: *user,
                    expected,
                    seen: Vec::new(),
                });
            }
            Op::Drop(i) if !open.is_empty() => {
                let mut o = open.swap_remove(i.index(open.len()));
                fill_from(&mut o.sub, &published, &read_back);
                o.seen.extend(drain(&mut o.sub));
                closed.push(o);
            }
            Op::Drop(_) => {}
            Op::Sweep => hub.sweep(),
            Op::Read(i) if !open.is_empty() => {
                let n = i.index(open.len());
                let o = &mut open[n];
                o.seen.extend(read_some(&mut o.sub));
            }
            Op::Read(_) => {}
            Op::ReadAll => {
                for o in &mut open {
                    o.seen.extend(drain(&mut o.sub));
                }
            }
            Op::Fill(i) => {
                let gaps: Vec<usize> = (0..open.len())
                    .filter(|&n| open[n].sub.gap().is_some())
                    .collect();
                if !gaps.is_empty() {
                    let o = &mut open[gaps[i.index(gaps.len())]];
                    fill_from(&mut o.sub, &published, &read_back);
                }
            }
        }
        prop_assert!(memory.used() <= memory.max(), "{memory:?}");
        let stats = hub.stats();
        prop_assert_eq!((stats.streams, stats.history), hub.walked());
    }
    for o in &mut open {
        fill_from(&mut o.sub, &published, &read_back);
        o.seen.extend(drain(&mut o.sub));
    }
    prop_assert_eq!(read_back.used(), 0);
    for o in open.iter().chain(&closed) {
        let ids: Vec<&String> = o
            .seen
            .iter()
            .filter_map(|s| match s {
                Seen::Message(id, _) => Some(id),
                Seen::Resync => None,
            })
            .collect();
        let order: Vec<Position> = ids.iter().map(|id| id.parse().unwrap()).collect();
        prop_assert!(
            order.windows(2).all(|w| w[0] < w[1]),
            "out of order or twice: {ids:?}"
        );
        for id in &ids {
            prop_assert!(
                published.iter().any(|(u, p, _)| *u == o.user && p == *id),
                "{id} is not user {}'s",
                o.user
            );
        }
        if !o.seen.contains(&Seen::Resync) {
            prop_assert_eq!(ids, o.expected.iter().collect::<Vec<_>>());
        }
    }
    Ok(())
}

/// Fills `sub`'s gap, if it has one, with its user's messages in it from `published`
/// (user, id, text), as the source would read them back.
fn fill_from(sub: &mut Subscription, published: &[(u8, String, String)], budget: &BackfillBudget) {
    let Some(handle) = sub.gap() else {
        return;
    };
    let gap = bounds(sub);
    let mut read = Backfilled::new(budget, 1000);
    for (u, id, text) in published {
        let position: Position = id.parse().unwrap();
        if format!("u{u}") == handle.user() && position.seq > gap.after && position.seq <= gap.until
        {
            read.push(position, frame::message(id, text)).unwrap();
        }
    }
    handle.fill(Ok(read));
    sub.gap_filled();
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn own_numbering_never_duplicates_and_says_when_it_misses(
        ops in prop::collection::vec(op(), 1..60),
        history_len in 1usize..6,
        budget in 2usize..12,
    ) {
        check((Numbering::Own, false), history_len, budget, &ops)?;
    }

    #[test]
    fn source_numbering_never_duplicates_and_says_when_it_misses(
        ops in prop::collection::vec(op(), 1..60),
        history_len in 1usize..6,
        budget in 2usize..12,
    ) {
        check((Numbering::Source, false), history_len, budget, &ops)?;
    }

    #[test]
    fn read_backs_never_duplicate_and_fill_what_the_history_lacks(
        ops in prop::collection::vec(op(), 1..60),
        history_len in 1usize..6,
        budget in 2usize..12,
    ) {
        check((Numbering::Source, true), history_len, budget, &ops)?;
    }
}

#[test]
fn the_history_budget_evicts_the_oldest_across_users_and_resumes_resync() {
    let memory = HistoryMemory::new(8 * 512);
    let hub = hub_in(
        Numbering::Own,
        100,
        Duration::from_secs(600),
        memory.clone(),
    );
    let text = "x".repeat(100);
    let ids: Vec<Position> = (0..20)
        .map(|i| hub.publish(&format!("u{i}"), &text).position)
        .collect();
    assert!(memory.used() <= memory.max(), "{memory:?}");
    assert!(memory.evicted() >= 10, "{memory:?}");
    let kept = hub.stats().history;
    assert!((4..=10).contains(&kept), "{kept} entries kept");
    // The newest are kept, the oldest are gone, and their users with them.
    assert_eq!(hub.knows("u19", ids[19], &text), Some(true));
    assert_eq!(hub.knows("u0", ids[0], &text), None);
    assert_eq!(hub.stats().users, kept);
    let mut late = subscribe(&hub, "u0", Some(&ids[0].to_string()));
    assert_eq!(drain(&mut late), vec![Seen::Resync]);
    // Entries that leave by the per-user limits return their charge too.
    drop(late);
    let memory = HistoryMemory::new(1 << 20);
    let small = hub_in(Numbering::Own, 1, Duration::from_secs(600), memory.clone());
    small.publish("solo", "a");
    let one = memory.used();
    for _ in 0..100 {
        small.publish("solo", "b");
    }
    assert!(memory.used() <= one + 8, "{memory:?}, one entry {one}");
}

/// Eviction frees a share of the budget at a time, oldest first: however many users there
/// are, the budget holds, and what is kept is the newest, most of what fits.
#[test]
fn the_history_budget_keeps_the_newest_of_many_users() {
    let text = "x".repeat(100);
    // An entry: its overhead and a frame of `text` and an id.
    let fits = 1000;
    let memory = HistoryMemory::new(fits * (memory::ENTRY_OVERHEAD + text.len() + 32));
    let hub = hub_in(
        Numbering::Own,
        100,
        Duration::from_secs(600),
        memory.clone(),
    );
    let users = 5000;
    let ids: Vec<Position> = (0..3 * users)
        .map(|i| {
            let id = hub.publish(&format!("u{}", i % users), &text).position;
            assert!(memory.used() <= memory.max(), "{memory:?} after {i}");
            id
        })
        .collect();
    let kept = hub.stats().history;
    assert!((fits / 2..=fits).contains(&kept), "{kept} kept of {fits}");
    // Exactly the newest `kept` are there.
    for (i, id) in ids.iter().enumerate() {
        let user = format!("u{}", i % users);
        let known = hub.knows(&user, *id, &text) == Some(true);
        assert_eq!(known, i >= ids.len() - kept, "{i}: {id}");
    }
    assert_eq!(memory.evicted(), (ids.len() - kept) as u64);
}

/// Users with a stream open keep their history while the budget evicts everyone else's; once
/// only theirs is left, the oldest of theirs goes.
#[test]
fn the_history_budget_spares_users_with_a_stream_open() {
    let memory = HistoryMemory::new(8 * 512);
    let hub = hub_in(
        Numbering::Own,
        100,
        Duration::from_secs(600),
        memory.clone(),
    );
    let text = "x".repeat(100);
    let mut watched = subscribe(&hub, "watched", None);
    let kept: Vec<Position> = (0..3)
        .map(|_| hub.publish("watched", &text).position)
        .collect();
    for i in 0..40 {
        hub.publish(&format!("absent{i}"), &text);
    }
    assert!(memory.used() <= memory.max(), "{memory:?}");
    assert!(memory.evicted() >= 30, "{memory:?}");
    for id in &kept {
        assert_eq!(hub.knows("watched", *id, &text), Some(true), "{id}");
    }
    assert_eq!(hub.knows("absent0", Position::new(0, 4), &text), None);
    // Resuming from its first message replays the rest, no resync.
    let mut again = subscribe(&hub, "watched", Some(&kept[0].to_string()));
    assert_eq!(
        drain(&mut again),
        vec![msg(kept[1], &text), msg(kept[2], &text)]
    );
    drop(again);
    // With only watched users' entries left, the oldest of those go.
    let many: Vec<Position> = (0..20)
        .map(|_| hub.publish("watched", &text).position)
        .collect();
    assert!(memory.used() <= memory.max(), "{memory:?}");
    assert_eq!(hub.knows("watched", kept[0], &text), None);
    assert_eq!(hub.knows("watched", many[19], &text), Some(true));
    drain(&mut watched);
}

#[test]
fn a_replay_read_slowly_gets_live_messages_after_it_in_order() {
    let hub = v2();
    let ids: Vec<String> = (0..5)
        .map(|i| hub.publish("u", &format!("m{i}")).position.to_string())
        .collect();
    let mut sub = subscribe(&hub, "u", Some(&ids[0]));
    assert_eq!(read_some(&mut sub), vec![msg(&ids[1], "m1")]);
    let live = hub.publish("u", "live").position.to_string();
    assert_eq!(sub.queue.len(), 0, "a replaying stream's queue stays empty");
    assert_eq!(
        drain(&mut sub),
        vec![
            msg(&ids[2], "m2"),
            msg(&ids[3], "m3"),
            msg(&ids[4], "m4"),
            msg(&live, "live")
        ]
    );
    let after = hub.publish("u", "after").position.to_string();
    assert_eq!(sub.queue.len(), 1);
    assert_eq!(drain(&mut sub), vec![msg(&after, "after")]);
}

/// Entries that leave by the per-user limits return their whole charge at once: the budget
/// keeps nothing for them.
#[test]
fn entries_evicted_by_the_per_user_limits_leave_no_charge() {
    let memory = HistoryMemory::new(usize::MAX);
    let hub = hub_in(Numbering::Own, 1, Duration::from_secs(600), memory.clone());
    hub.publish("u", "x");
    let one = memory.used();
    for _ in 0..999 {
        hub.publish("u", "x");
    }
    // One entry, whose id grew by a few digits.
    let left = memory.used();
    assert!(
        (one..one + 8).contains(&left),
        "{left}, {one} for one message"
    );
    hub.publish("v", "y");
    assert!(memory.used() > left);
    drop(hub);
    let hub = hub_in(Numbering::Own, 1, Duration::ZERO, memory.clone());
    hub.publish("w", "z");
    hub.sweep();
    assert!(memory.used() <= 2 * left, "{memory:?}");
}

/// A v3 hub whose resumes read back what the history lacks, keeping `history_len` per user.
fn v3_backfilled(history_len: usize) -> Hub {
    Hub::new(
        HubConfig {
            backfill: true,
            ..config(Numbering::Source, history_len, Duration::from_secs(600))
        },
        HistoryMemory::new(usize::MAX),
    )
}

/// `u`'s messages 0..=5 published, and 0..=3 evicted by the history length.
fn v3_keeping_4_and_5() -> Hub {
    let hub = v3_backfilled(2);
    hub.open_lane(0, 0);
    for seq in 0..6 {
        hub.publish_at("u", &format!("m{seq}"), at(seq));
    }
    hub
}

/// `u`'s messages `m{seq}` at `seqs`, as a client sees them.
fn seen(seqs: &[u64]) -> Vec<Seen> {
    seqs.iter().map(|&s| msg(at(s), &format!("m{s}"))).collect()
}

/// The gap of `sub`, once bounded (its lane is open).
fn bounds(sub: &Subscription) -> Gap {
    let handle = sub.gap().expect("a gap");
    let mut cx = Context::from_waker(Waker::noop());
    let bounds = std::pin::pin!(handle.bounds());
    match bounds.poll(&mut cx) {
        Poll::Ready(Some(gap)) => gap,
        other => panic!("gap not bounded: {other:?}"),
    }
}

/// Fills `sub`'s gap with `user`'s messages `m{seq}` at `seqs`.
fn fill(sub: &mut Subscription, seqs: &[u64], budget: &BackfillBudget) {
    let handle = sub.gap().expect("a gap");
    let mut read = Backfilled::new(budget, 1000);
    for &seq in seqs {
        let frame = frame::message(&at(seq).to_string(), &format!("m{seq}"));
        read.push(at(seq), frame).unwrap();
    }
    handle.fill(Ok(read));
    sub.gap_filled();
}

#[test]
fn a_gap_runs_to_where_the_history_vouches_and_is_sent_first() {
    let hub = v3_keeping_4_and_5();
    let mut sub = subscribe(&hub, "u", Some("0-1"));
    assert!(sub.notices.is_empty());
    assert_eq!(
        bounds(&sub),
        Gap {
            lane: 0,
            after: 1,
            until: 3
        }
    );
    // Nothing is sent before the gap is filled.
    assert_eq!(drain(&mut sub), vec![]);
    let budget = BackfillBudget::new(1 << 20);
    fill(&mut sub, &[2, 3], &budget);
    assert!(budget.used() > 0);
    assert_eq!(drain(&mut sub), seen(&[2, 3, 4, 5]));
    assert_eq!(budget.used(), 0, "written events give their memory back");
    hub.publish_at("u", "m6", at(6));
    assert_eq!(drain(&mut sub), vec![msg(at(6), "m6")]);
}

#[test]
fn live_messages_wait_behind_the_gap() {
    // This process started reading at 10: 5..=9 are read back.
    let hub = v3_backfilled(100);
    hub.open_lane(0, 10);
    hub.publish_at("u", "m10", at(10));
    let mut sub = subscribe(&hub, "u", Some("0-4"));
    assert_eq!((bounds(&sub).after, bounds(&sub).until), (4, 9));
    hub.publish_at("u", "m11", at(11));
    assert_eq!(drain(&mut sub), vec![]);
    fill(&mut sub, &[5, 9], &BackfillBudget::new(1 << 20));
    hub.publish_at("u", "m12", at(12));
    assert_eq!(drain(&mut sub), seen(&[5, 9, 10, 11, 12]));
}

#[test]
fn history_evicted_while_the_gap_is_read_is_a_resync_after_it() {
    let hub = v3_keeping_4_and_5();
    let mut sub = subscribe(&hub, "u", Some("0-1"));
    bounds(&sub);
    // Two more: 4 and 5 leave the history before the stream got them.
    hub.publish_at("u", "m6", at(6));
    hub.publish_at("u", "m7", at(7));
    fill(&mut sub, &[2, 3], &BackfillBudget::new(1 << 20));
    assert_eq!(
        drain(&mut sub),
        vec![
            msg(at(2), "m2"),
            msg(at(3), "m3"),
            Seen::Resync,
            msg(at(6), "m6"),
            msg(at(7), "m7")
        ]
    );
}

#[test]
fn a_gap_on_a_lane_not_read_yet_is_bounded_once_it_opens() {
    let hub = v3_backfilled(100);
    let mut sub = subscribe(&hub, "u", Some("0-4"));
    let handle = sub.gap().expect("a gap");
    let mut cx = Context::from_waker(Waker::noop());
    let mut bounds_fut = Box::pin(handle.bounds());
    assert!(bounds_fut.as_mut().poll(&mut cx).is_pending());
    hub.open_lane(0, 10);
    hub.publish_at("u", "m10", at(10));
    let gap = match bounds_fut.as_mut().poll(&mut cx) {
        Poll::Ready(Some(gap)) => gap,
        other => panic!("{other:?}"),
    };
    assert_eq!((gap.after, gap.until), (4, 9));
    fill(&mut sub, &[6, 9], &BackfillBudget::new(1 << 20));
    assert_eq!(
        drain(&mut sub),
        vec![msg(at(6), "m6"), msg(at(9), "m9"), msg(at(10), "m10")]
    );
}

#[test]
fn an_unfilled_gap_is_a_resync_and_then_the_history() {
    let hub = v3_backfilled(2);
    hub.open_lane(0, 0);
    for seq in 0..5 {
        hub.publish_at("u", &format!("m{seq}"), at(seq));
    }
    let mut sub = subscribe(&hub, "u", Some("0-0"));
    bounds(&sub);
    sub.gap().unwrap().fill(Err(Unfilled::TooFar));
    sub.gap_filled();
    assert_eq!(
        drain(&mut sub),
        vec![Seen::Resync, msg(at(3), "m3"), msg(at(4), "m4")]
    );
}

#[test]
fn read_back_events_are_bounded_by_the_budget_and_the_history_length() {
    let budget = BackfillBudget::new(100);
    let frame = Bytes::from(vec![b'x'; 60]);
    let mut read = Backfilled::new(&budget, 10);
    assert!(read.push(at(1), frame.clone()).is_ok());
    assert_eq!(read.push(at(2), frame.clone()), Err(Unfilled::TooLarge));
    let mut other = Backfilled::new(&budget, 10);
    assert_eq!(other.push(at(3), frame.clone()), Err(Unfilled::TooLarge));
    drop(read);
    assert_eq!(budget.used(), 0);
    let mut short = Backfilled::new(&BackfillBudget::new(1 << 20), 1);
    assert!(short.push(at(1), frame.clone()).is_ok());
    assert_eq!(short.push(at(2), frame), Err(Unfilled::TooLarge));
}

#[test]
fn a_resume_the_history_covers_needs_no_read_back() {
    let hub = v3_backfilled(100);
    hub.open_lane(0, 0);
    for seq in 0..3 {
        hub.publish_at("u", &format!("m{seq}"), at(seq));
    }
    let mut sub = subscribe(&hub, "u", Some("0-0"));
    assert!(sub.gap().is_none());
    assert_eq!(drain(&mut sub), vec![msg(at(1), "m1"), msg(at(2), "m2")]);
}

#[test]
fn a_lane_numbered_anew_during_a_read_back_is_a_resync() {
    let hub = v3_backfilled(100);
    hub.open_lane(0, 10);
    hub.publish_at("u", "m10", at(10));
    let mut sub = subscribe(&hub, "u", Some("0-4"));
    bounds(&sub);
    hub.reset_lane(0);
    hub.publish_at("u", "new 0", at(0));
    // What the read-back brings is of the old numbering: not sent.
    fill(&mut sub, &[5], &BackfillBudget::new(1 << 20));
    assert_eq!(drain(&mut sub), vec![Seen::Resync, msg(at(0), "new 0")]);
}
