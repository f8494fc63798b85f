//! The ledger's rules: which client lineage owes which message, and what counts as delivered,
//! lost, duplicated, excused by a resync, or lost with the broker's memory storage.
//!
//! A *lineage* is one simulated browser tab: an `EventSource` that reconnects with its
//! `Last-Event-ID` whenever its stream ends, to whichever instance answers. Every message body
//! is unique, so a lineage that sees one body twice got a duplicate, whichever connection it
//! came on. The rules are stated in [`RULES`], printed under the table, and kept next to the
//! code that applies them.

use std::collections::HashMap;

/// Microseconds on the soak's clock (`scenario::now_us`).
pub type Us = u64;

/// The rules, as printed under the summary table.
pub const RULES: &str = "\
Ledger rules. A message counts as sent once it was acknowledged: `POST /v3/message` answered 200 \
(its JSON id gives the Kafka offset) or the Kafka producer's delivery report came back. A \
lineage (one client that reconnects with its Last-Event-ID to either instance) owes every \
message of its user sent after its first stream's response head arrived (the server registers \
the stream before answering), until the end of the run: connected or resuming, it must see it \
exactly once. Exceptions: (1) a `resync` event excuses the messages after the lineage's \
Last-Event-ID that were sent before the resync arrived and never seen (the gap the server \
declared; counted on its own row); (2) a lineage that had seen no message yet reconnects \
without an id and can't resume, so it owes nothing sent from 5 s before that stream ended until \
its next stream opened; (3) lost with the broker's memory storage: a message acknowledged by a \
broker life that was later SIGKILLed, and either seen by no client while no client ever \
received an offset of that life as high as its own, or owed to a lineage whose stream, at the \
kill, was open on an instance that never delivered an offset of that life as high as its own. Instances consume a partition in offset \
order, so that instance had not fetched it when the broker died, and the history that could \
have replayed it went with the topic. (4) The broker's fetch race: tansu 0.6's memory storage reserves a batch's \
offsets before it stores the batch, so a fetch in between returns a later producer's batch and \
the consumer steps over the late one for good (reproduced without ssepush by `cargo run \
--release -p bench --example tansu_fetch_race`). A message some lineage owed and never saw \
counts here only if it was acknowledged after another producer's message at a higher offset of \
the same broker life (stored late), the instance of the lineage's stream delivered it to none \
of its streams while the other instance did (one consumer stepped over it), and that stream \
had not resumed from an earlier broker life (the server's own reason to skip it). Any other message some \
lineage owed and never saw is lost, the server's loss.";

/// A lineage with no id yet owes nothing sent this long before its stream ended: a message
/// still in flight then could not be resumed, since the reconnect carries no Last-Event-ID.
pub const NO_ID_GRACE_US: Us = 5_000_000;

/// How a message was published.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Via {
    /// `POST /v3/message` to an instance.
    Http,
    /// Produced straight to the topic.
    Kafka,
    /// A recovery probe (produced to the topic, one per user).
    Probe,
}

/// One message, as the publisher recorded it.
#[derive(Debug, Clone)]
pub struct Message {
    pub user: u32,
    pub via: Via,
    /// Which Kafka producer wrote it: 0 the soak's own, 1 + i instance i's (for a POST).
    pub producer: u8,
    pub sent_us: Us,
    pub ack: Option<Ack>,
}

/// The acknowledgement: when it arrived and the offset it named.
#[derive(Debug, Clone, Copy)]
pub struct Ack {
    pub at_us: Us,
    pub offset: u64,
}

/// One stream of a lineage.
#[derive(Debug, Clone)]
pub struct Conn {
    /// The instance it was open on (0: a, 1: b).
    pub instance: u8,
    /// When the response head arrived.
    pub open_us: Us,
    /// When the stream ended; `None` if it was open at the end.
    pub close_us: Option<Us>,
    /// The message whose id the lineage sent as Last-Event-ID (the last one it had seen).
    pub anchor: Option<u32>,
    /// Whether the lineage had an id when the stream ended.
    pub had_id_at_close: bool,
}

/// A message seen by a lineage.
#[derive(Debug, Clone, Copy)]
pub struct Receipt {
    pub count: u32,
    pub first_us: Us,
    /// The instance of the stream it first came on.
    pub instance: u8,
    /// When it came last, and on which instance: a duplicate's second receipt.
    pub last_us: Us,
    pub last_instance: u8,
}

/// A `resync` event seen by a lineage.
#[derive(Debug, Clone)]
pub struct ResyncSeen {
    pub at_us: Us,
    /// The message whose id the lineage sent as Last-Event-ID on that stream.
    pub anchor: Option<u32>,
    /// The resync's `last_event_id` as the server wrote it.
    pub last_event_id: String,
    /// Whether it names the id the lineage sent.
    pub id_matches: bool,
}

/// What one lineage did and saw.
#[derive(Debug, Clone, Default)]
pub struct LineageLog {
    pub user: u32,
    pub connections: Vec<Conn>,
    /// By message sequence number.
    pub seen: HashMap<u32, Receipt>,
    pub resyncs: Vec<ResyncSeen>,
}

/// The broker's lives: when each started (the first before any message) and when each but
/// the last was killed.
#[derive(Debug, Clone, Default)]
pub struct BrokerLives {
    pub starts: Vec<Us>,
    pub kills: Vec<Us>,
}

impl BrokerLives {
    /// The life that acknowledged at `at`: the last one started by then. A restart waits a
    /// couple of seconds after the kill, so an acknowledgement can't be mistaken for the next
    /// life's.
    pub fn life_at(&self, at: Us) -> usize {
        self.starts.partition_point(|&s| s <= at).saturating_sub(1)
    }
}

/// A message's place in the topic across broker lives: offsets start over in each life.
type Pos = (usize, u64);

/// What a lineage owes a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Duty {
    None,
    Owed,
    /// Owed but inside a gap a resync declared.
    Excused,
}

/// Where a lost message should have come from.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LossKinds {
    /// It should have come live, on the lineage's stream open when it was sent: that stream
    /// stayed open to the end, or the lineage's next stream resumed from an id at or past the
    /// message's (so no replay owed it).
    pub live: u64,
    /// It should have been replayed on a reconnect whose Last-Event-ID came from the same
    /// broker life (or a later one).
    pub resumed: u64,
    /// It should have come on a stream (open when it was sent, or a later one) that had
    /// resumed with a Last-Event-ID from an earlier broker life than the message's.
    pub resumed_from_earlier_life: u64,
    /// Of all the above: the instance of the stream it should have come on delivered that
    /// message to none of its streams, while the other instance did.
    pub instance_never_delivered: u64,
}

/// Per-user figures.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UserTally {
    pub user: u32,
    /// Receipts of sent messages by the user's lineages (first receipts only).
    pub delivered: u64,
    /// Messages some lineage of the user owed and never saw.
    pub lost: u64,
    /// Receipts of a body the lineage had already seen.
    pub duplicated: u64,
}

/// The ledger's verdict.
#[derive(Debug, Clone, Default)]
pub struct Outcome {
    pub sent: u64,
    pub sent_http: u64,
    pub sent_kafka: u64,
    pub sent_probe: u64,
    /// Publish attempts never acknowledged, and how many of them a client saw anyway.
    pub unacked: u64,
    pub unacked_seen: u64,
    /// Sent messages some lineage saw.
    pub delivered: u64,
    /// First receipts of sent messages, over all lineages.
    pub receipts: u64,
    /// (lineage, message) pairs owed.
    pub owed_pairs: u64,
    pub lost: u64,
    pub lost_pairs: u64,
    pub loss_kinds: LossKinds,
    pub duplicated: u64,
    pub broker_lost: u64,
    pub broker_pairs: u64,
    /// Acknowledged messages whose broker life and offset another acknowledged message also
    /// got: the broker handed out one offset twice.
    pub offset_clashes: u64,
    /// The longest time between a broker-lost message's acknowledgement and the kill.
    pub broker_lost_max_age_us: Option<Us>,
    pub excused: u64,
    pub excused_pairs: u64,
    /// Owed messages not seen under rule 4 (the broker's fetch race), and the pairs.
    pub broker_race: u64,
    pub race_pairs: u64,
    pub race_examples: Vec<String>,
    pub resyncs: u64,
    /// Resyncs naming another id than the lineage sent.
    pub resync_mismatches: u64,
    /// Lineages whose last stream had ended before the run did.
    pub lineages_down_at_end: u64,
    /// Publish to first receipt, ms, sorted: all, and for messages sent outside fault windows.
    pub delay_ms: Vec<f64>,
    pub delay_calm_ms: Vec<f64>,
    /// Users with a loss or a duplicate, worst first.
    pub bad_users: Vec<UserTally>,
    /// A few lost (lineage, message) pairs, described.
    pub examples: Vec<String>,
}

/// Applies the rules.
///
/// `faults` are the windows (start, end) in which delays are not "calm".
pub fn evaluate(
    messages: &[Message],
    lineages: &[LineageLog],
    lives: &BrokerLives,
    faults: &[(Us, Us)],
) -> Outcome {
    let mut out = Outcome::default();
    let pos = |seq: u32| -> Option<Pos> {
        let ack = messages.get(seq as usize)?.ack?;
        Some((lives.life_at(ack.at_us), ack.offset))
    };

    // Who saw what, through which instance, and the highest offset of each broker life any
    // client received.
    let mut seen_by_any = vec![false; messages.len()];
    let mut seen_via = vec![[false; 2]; messages.len()];
    let mut high_seen: HashMap<usize, u64> = HashMap::new();
    // The same per instance: how far each instance's consumer had got in each life.
    let mut high_via: [HashMap<usize, u64>; 2] = Default::default();
    for lineage in lineages {
        for (&seq, receipt) in &lineage.seen {
            let instance = usize::from(receipt.instance.min(1));
            if let Some(flag) = seen_by_any.get_mut(seq as usize) {
                *flag = true;
                seen_via[seq as usize][instance] = true;
            }
            if let Some((life, offset)) = pos(seq) {
                for high in [&mut high_seen, &mut high_via[instance]] {
                    let high = high.entry(life).or_insert(offset);
                    *high = (*high).max(offset);
                }
            }
        }
    }

    let mut offsets: HashMap<Pos, u32> = HashMap::new();
    for m in messages {
        if let Some(ack) = m.ack {
            *offsets
                .entry((lives.life_at(ack.at_us), ack.offset))
                .or_default() += 1;
        }
    }
    out.offset_clashes = offsets
        .values()
        .filter(|&&n| n > 1)
        .map(|&n| u64::from(n))
        .sum();
    let last_life = lives.starts.len().saturating_sub(1);
    // Rule 3 for a whole message: no instance ever got as far as its offset in its life.
    let mut unfetched = vec![false; messages.len()];
    let mut by_user: HashMap<u32, Vec<u32>> = HashMap::new();
    for (seq, m) in messages.iter().enumerate() {
        let Some(ack) = m.ack else {
            out.unacked += 1;
            out.unacked_seen += u64::from(seen_by_any[seq]);
            continue;
        };
        out.sent += 1;
        match m.via {
            Via::Http => out.sent_http += 1,
            Via::Kafka => out.sent_kafka += 1,
            Via::Probe => out.sent_probe += 1,
        }
        out.delivered += u64::from(seen_by_any[seq]);
        let life = lives.life_at(ack.at_us);
        let above_high = high_seen.get(&life).is_none_or(|&h| ack.offset > h);
        unfetched[seq] = life < last_life && above_high && !seen_by_any[seq];
        by_user.entry(m.user).or_default().push(seq as u32);
    }

    // Rule 3 for one lineage: when the broker was killed its stream was open on an instance
    // that never got as far as the message's offset in that life, and the history that could
    // have replayed it elsewhere was forgotten with the topic.
    let unfetched_for = |lineage: &LineageLog, seq: u32| -> bool {
        let Some((life, offset)) = pos(seq) else {
            return false;
        };
        let Some(&kill) = lives.kills.get(life).filter(|_| life < last_life) else {
            return false;
        };
        lineage.connections.iter().any(|c| {
            c.open_us <= kill
                && c.close_us.is_none_or(|close| close > kill)
                && high_via[usize::from(c.instance.min(1))]
                    .get(&life)
                    .is_none_or(|&h| h < offset)
        })
    };
    let mut broker_msgs = unfetched.clone();
    let written_late = written_late(messages, lives);
    let mut race_msgs = vec![false; messages.len()];
    let mut examples_per_kind = [0usize; 3];
    let calm = |sent: Us| !faults.iter().any(|&(a, b)| sent >= a && sent <= b);
    let mut lost_msgs = vec![false; messages.len()];
    let mut excused_msgs = vec![false; messages.len()];
    let mut tallies: HashMap<u32, UserTally> = HashMap::new();
    for lineage in lineages {
        let tally = tallies.entry(lineage.user).or_insert_with(|| UserTally {
            user: lineage.user,
            ..UserTally::default()
        });
        out.resyncs += lineage.resyncs.len() as u64;
        out.resync_mismatches += lineage.resyncs.iter().filter(|r| !r.id_matches).count() as u64;
        if lineage
            .connections
            .last()
            .is_some_and(|c| c.close_us.is_some())
        {
            out.lineages_down_at_end += 1;
        }
        for (&seq, receipt) in &lineage.seen {
            let dup = u64::from(receipt.count.saturating_sub(1));
            out.duplicated += dup;
            tally.duplicated += dup;
            let Some(m) = messages.get(seq as usize).filter(|m| m.ack.is_some()) else {
                continue;
            };
            out.receipts += 1;
            tally.delivered += 1;
            let delay = receipt.first_us.saturating_sub(m.sent_us) as f64 / 1000.0;
            out.delay_ms.push(delay);
            if calm(m.sent_us) {
                out.delay_calm_ms.push(delay);
            }
        }
        for &seq in by_user.get(&lineage.user).map_or(&[][..], |v| &v[..]) {
            let m = &messages[seq as usize];
            match duty(lineage, seq, m.sent_us, &pos) {
                Duty::None => {}
                Duty::Excused => {
                    if !lineage.seen.contains_key(&seq) {
                        out.excused_pairs += 1;
                        excused_msgs[seq as usize] = true;
                    }
                }
                Duty::Owed => {
                    out.owed_pairs += 1;
                    if lineage.seen.contains_key(&seq) {
                        continue;
                    }
                    if unfetched[seq as usize] || unfetched_for(lineage, seq) {
                        out.broker_pairs += 1;
                        broker_msgs[seq as usize] = true;
                        continue;
                    }
                    let (kind, stream) = classify(lineage, seq, m, &pos);
                    let via = seen_via[seq as usize];
                    let skipped_by = stream
                        .map(|c| usize::from(c.instance.min(1)))
                        .filter(|&i| !via[i] && via[1 - i]);
                    // Only where the server had no reason of its own to skip it: a stream that
                    // resumed from an earlier broker life is the server's case, not the race.
                    if kind != Kind::EarlierLife
                        && skipped_by.is_some()
                        && written_late[seq as usize]
                    {
                        out.race_pairs += 1;
                        race_msgs[seq as usize] = true;
                        if out.race_examples.len() < EXAMPLES_PER_KIND {
                            out.race_examples
                                .push(describe(lineage, seq, m, kind, stream, skipped_by, &pos));
                        }
                        continue;
                    }
                    out.lost_pairs += 1;
                    lost_msgs[seq as usize] = true;
                    tally.lost += 1;
                    out.loss_kinds.instance_never_delivered += u64::from(skipped_by.is_some());
                    match kind {
                        Kind::Live => out.loss_kinds.live += 1,
                        Kind::Resumed => out.loss_kinds.resumed += 1,
                        Kind::EarlierLife => out.loss_kinds.resumed_from_earlier_life += 1,
                    }
                    let shown = &mut examples_per_kind[kind as usize];
                    if *shown < EXAMPLES_PER_KIND {
                        *shown += 1;
                        out.examples
                            .push(describe(lineage, seq, m, kind, stream, skipped_by, &pos));
                    }
                }
            }
        }
    }
    out.lost = lost_msgs.iter().filter(|&&l| l).count() as u64;
    for (seq, m) in messages.iter().enumerate() {
        let (Some(ack), true, false) = (m.ack, broker_msgs[seq], lost_msgs[seq]) else {
            continue;
        };
        out.broker_lost += 1;
        if let Some(&kill) = lives.kills.get(lives.life_at(ack.at_us)) {
            let age = kill.saturating_sub(ack.at_us);
            out.broker_lost_max_age_us = Some(out.broker_lost_max_age_us.unwrap_or(0).max(age));
        }
    }
    out.broker_race = (0..messages.len())
        .filter(|&i| race_msgs[i] && !lost_msgs[i] && !broker_msgs[i])
        .count() as u64;
    out.excused = excused_msgs
        .iter()
        .zip(&lost_msgs)
        .filter(|&(&e, &l)| e && !l)
        .count() as u64;
    let mut bad: Vec<UserTally> = tallies
        .into_values()
        .filter(|t| t.lost > 0 || t.duplicated > 0)
        .collect();
    bad.sort_by(|a, b| {
        (b.lost + b.duplicated)
            .cmp(&(a.lost + a.duplicated))
            .then(a.user.cmp(&b.user))
    });
    out.bad_users = bad;
    out.delay_ms.sort_by(f64::total_cmp);
    out.delay_calm_ms.sort_by(f64::total_cmp);
    out
}

/// Messages acknowledged after a message of another producer at a higher offset of the same
/// broker life was: the broker reserved their offset first but stored them later, the window
/// in which tansu's fetch can serve the other producer's batch and step over theirs (rule 4).
/// One producer's batches are stored in order (one connection), so only another's count.
fn written_late(messages: &[Message], lives: &BrokerLives) -> Vec<bool> {
    const PRODUCERS: usize = 3;
    let mut late = vec![false; messages.len()];
    let mut by_life: HashMap<usize, Vec<(u64, Us, usize)>> = HashMap::new();
    for (seq, m) in messages.iter().enumerate() {
        if let Some(ack) = m.ack {
            by_life
                .entry(lives.life_at(ack.at_us))
                .or_default()
                .push((ack.offset, ack.at_us, seq));
        }
    }
    for mut acked in by_life.into_values() {
        acked.sort_unstable_by_key(|a| std::cmp::Reverse(a.0));
        // Per producer, the earliest acknowledgement of an offset above the current one.
        let mut earliest_above = [Us::MAX; PRODUCERS];
        for (_, at, seq) in acked {
            let mine = usize::from(messages[seq].producer).min(PRODUCERS - 1);
            late[seq] = (0..PRODUCERS).any(|p| p != mine && earliest_above[p] < at);
            earliest_above[mine] = earliest_above[mine].min(at);
        }
    }
    late
}

/// What `lineage` owes message `seq` (of its user), sent at `sent`.
fn duty(lineage: &LineageLog, seq: u32, sent: Us, pos: &impl Fn(u32) -> Option<Pos>) -> Duty {
    let conns = &lineage.connections;
    let Some(first) = conns.first() else {
        return Duty::None;
    };
    if sent <= first.open_us {
        return Duty::None;
    }
    // Ended for good before the run did: nothing sent after that can reach it.
    if let Some(last) = conns.last()
        && last.close_us.is_some_and(|close| sent >= close)
    {
        return Duty::None;
    }
    // Streams that ended without an id can't be resumed.
    for pair in conns.windows(2) {
        let (ended, next) = (&pair[0], &pair[1]);
        if let Some(close) = ended.close_us
            && !ended.had_id_at_close
            && sent >= close.saturating_sub(NO_ID_GRACE_US)
            && sent < next.open_us
        {
            return Duty::None;
        }
    }
    let own = pos(seq);
    let declared = lineage.resyncs.iter().any(|r| {
        sent < r.at_us
            && match (r.anchor.and_then(pos), own) {
                (Some(after), Some(own)) => own > after,
                // An anchor never acknowledged has no known position: the whole gap up to the
                // resync is excused.
                _ => true,
            }
    });
    if declared { Duty::Excused } else { Duty::Owed }
}

/// Lost pairs described in the report, per kind of loss.
const EXAMPLES_PER_KIND: usize = 3;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Live,
    Resumed,
    EarlierLife,
}

/// Where lost message `seq` should have come from (see [`LossKinds`]), and
/// the stream that should have brought it: the one open when it was sent, else the first
/// reconnect after. Streams that resumed from an id at or past the message's owed it no
/// replay, so the stream before the first of them is the one: the one open when it was sent
/// even if it ended later. A stream that resumed from an earlier broker life than the
/// message's, the one open then or any later one, is named first: a server that took that id
/// for the new life's would skip the message.
fn classify<'a>(
    lineage: &'a LineageLog,
    seq: u32,
    m: &Message,
    pos: &impl Fn(u32) -> Option<Pos>,
) -> (Kind, Option<&'a Conn>) {
    let sent = m.sent_us;
    let conns = &lineage.connections;
    let own_life = pos(seq).map(|p| p.0);
    let from = conns
        .iter()
        .position(|c| c.close_us.is_none_or(|close| close > sent))
        .unwrap_or(conns.len());
    // The first stream that resumed from the message or past it, in the same life or a later
    // one: it and all after it had no reason to send it.
    let own = pos(seq);
    let until = conns[from..]
        .iter()
        .position(|c| matches!((c.anchor.and_then(pos), own), (Some(a), Some(o)) if a >= o))
        .map_or(conns.len(), |i| from + i);
    let conns = &conns[..until];
    let earlier: Vec<&Conn> = conns[from..]
        .iter()
        .filter(|c| {
            let anchor_life = c.anchor.and_then(pos).map(|p| p.0);
            matches!((anchor_life, own_life), (Some(a), Some(o)) if a < o)
        })
        .collect();
    // Preferably one opened once the message was in the broker: it resumed into that life.
    let acked = m.ack.map_or(sent, |a| a.at_us);
    if let Some(c) = earlier
        .iter()
        .find(|c| c.open_us > acked)
        .or(earlier.first())
    {
        return (Kind::EarlierLife, Some(c));
    }
    if let Some(c) = conns.last().filter(|c| c.open_us <= sent) {
        return (Kind::Live, Some(c));
    }
    (Kind::Resumed, conns.iter().find(|c| c.open_us > sent))
}

/// One lost pair in words, for the report.
fn describe(
    lineage: &LineageLog,
    seq: u32,
    m: &Message,
    kind: Kind,
    stream: Option<&Conn>,
    skipped_by: Option<usize>,
    pos: &impl Fn(u32) -> Option<Pos>,
) -> String {
    let id = |p: Option<Pos>| {
        p.map_or("?".into(), |(life, o)| {
            format!("0-{o} (broker life {life})")
        })
    };
    let via = match m.via {
        Via::Http => "POST",
        Via::Kafka => "produced",
        Via::Probe => "probe",
    };
    let mut text = format!(
        "user soak-u{} message #{seq} ({via}, id {}, sent at {:.3} s): ",
        m.user,
        id(pos(seq)),
        m.sent_us as f64 / 1e6
    );
    match (kind, stream) {
        (Kind::Live, _) => text.push_str("never arrived on a stream open since before it was sent"),
        (_, Some(c)) => text.push_str(&format!(
            "not sent on the stream opened at {:.3} s with Last-Event-ID {}{}",
            c.open_us as f64 / 1e6,
            id(c.anchor.and_then(pos)),
            if lineage.resyncs.is_empty() {
                ", no resync ever"
            } else {
                ""
            }
        )),
        (_, None) => text.push_str("sent while the lineage was reconnecting; no later stream"),
    }
    // The lineage's streams around the send, with the Last-Event-ID each resumed from.
    let near: Vec<String> = lineage
        .connections
        .iter()
        .filter(|c| {
            c.close_us
                .is_none_or(|close| close + 10_000_000 > m.sent_us)
                && c.open_us < m.sent_us + 10_000_000
        })
        .map(|c| {
            format!(
                "on {} {:.3}-{} from {}",
                INSTANCE_NAMES[usize::from(c.instance.min(1))],
                c.open_us as f64 / 1e6,
                c.close_us
                    .map_or("end".into(), |close| format!("{:.3}", close as f64 / 1e6)),
                id(c.anchor.and_then(pos))
            )
        })
        .collect();
    text.push_str(&format!("; its streams then: {}", near.join(", ")));
    if let Some(i) = skipped_by {
        text.push_str(&format!(
            "; instance {} delivered this message to none of its streams, instance {} did",
            INSTANCE_NAMES[i],
            INSTANCE_NAMES[1 - i]
        ));
    }
    text
}

/// The instances' names, by index.
const INSTANCE_NAMES: [&str; 2] = ["a", "b"];

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(user: u32, sent_us: Us, ack: Option<(Us, u64)>) -> Message {
        Message {
            user,
            via: Via::Kafka,
            producer: 0,
            sent_us,
            ack: ack.map(|(at_us, offset)| Ack { at_us, offset }),
        }
    }

    fn conn(open_us: Us, close_us: Option<Us>, anchor: Option<u32>) -> Conn {
        Conn {
            instance: 0,
            open_us,
            close_us,
            anchor,
            had_id_at_close: true,
        }
    }

    fn lineage(user: u32, connections: Vec<Conn>, seen: &[u32]) -> LineageLog {
        LineageLog {
            user,
            connections,
            seen: seen
                .iter()
                .map(|&s| {
                    (
                        s,
                        Receipt {
                            count: 1,
                            first_us: 0,
                            instance: 0,
                            last_us: 0,
                            last_instance: 0,
                        },
                    )
                })
                .collect(),
            resyncs: Vec::new(),
        }
    }

    fn one_life() -> BrokerLives {
        BrokerLives {
            starts: vec![0],
            kills: Vec::new(),
        }
    }

    #[test]
    fn an_open_stream_owes_what_was_sent_after_it_opened() {
        let messages = [
            msg(0, 50, Some((60, 0))),
            msg(0, 200, Some((210, 1))),
            msg(0, 300, Some((310, 2))),
            msg(1, 400, Some((410, 3))),
            msg(0, 500, None),
        ];
        let l = lineage(0, vec![conn(100, None, None)], &[1]);
        let o = evaluate(&messages, &[l], &one_life(), &[]);
        assert_eq!((o.sent, o.unacked, o.delivered), (4, 1, 1));
        // #0 was sent before the stream opened; #3 is another user's.
        assert_eq!((o.lost, o.lost_pairs, o.owed_pairs), (1, 1, 2));
        assert_eq!(o.loss_kinds.live, 1);
        assert_eq!(o.bad_users.len(), 1);
        assert!(o.examples[0].contains("#2"), "{:?}", o.examples);
    }

    #[test]
    fn a_resume_owes_its_gap_unless_a_resync_declared_it() {
        let messages = [
            msg(0, 200, Some((210, 1))),
            msg(0, 550, Some((560, 2))),
            msg(0, 700, Some((710, 3))),
        ];
        let conns = || vec![conn(100, Some(500), None), conn(600, None, Some(0))];
        let plain = lineage(0, conns(), &[0]);
        let mut declared = lineage(0, conns(), &[0]);
        declared.resyncs.push(ResyncSeen {
            at_us: 650,
            anchor: Some(0),
            last_event_id: "0-1".into(),
            id_matches: true,
        });
        let o = evaluate(&messages, &[plain], &one_life(), &[]);
        assert_eq!((o.lost, o.loss_kinds.live), (2, 1));
        assert_eq!(o.loss_kinds.resumed, 1);
        let o = evaluate(&messages, &[declared], &one_life(), &[]);
        // #1 fell in the declared gap; #2 was sent after the resync and is owed.
        assert_eq!(
            (o.lost, o.excused, o.excused_pairs, o.resyncs),
            (1, 1, 1, 1)
        );
    }

    #[test]
    fn the_broker_loses_only_what_no_instance_delivered() {
        let lives = BrokerLives {
            starts: vec![0, 1000],
            kills: vec![900],
        };
        let messages = [
            msg(0, 100, Some((110, 0))),
            msg(0, 800, Some((810, 1))),
            msg(0, 1100, Some((1200, 0))),
        ];
        let l = lineage(0, vec![conn(50, None, None)], &[0, 2]);
        let o = evaluate(&messages, &[l], &lives, &[]);
        assert_eq!((o.broker_lost, o.lost), (1, 0));
        assert_eq!(o.broker_lost_max_age_us, Some(90));
        // Something after it in the same life reached a client: an instance fetched it, so
        // its loss is the server's.
        let mut later = messages.to_vec();
        later.push(msg(1, 850, Some((860, 2))));
        let a = lineage(0, vec![conn(50, None, None)], &[0, 2]);
        let b = lineage(1, vec![conn(50, None, None)], &[3]);
        let o = evaluate(&later, &[a, b], &lives, &[]);
        assert_eq!((o.broker_lost, o.lost), (0, 1));
    }

    #[test]
    fn the_broker_loses_what_one_instance_had_not_fetched_when_it_died() {
        let lives = BrokerLives {
            starts: vec![0, 1000],
            kills: vec![900],
        };
        let messages = [msg(0, 100, Some((110, 0))), msg(0, 800, Some((810, 1)))];
        let mut on_b = lineage(0, vec![conn(50, None, None)], &[0, 1]);
        on_b.connections[0].instance = 1;
        on_b.seen.values_mut().for_each(|r| r.instance = 1);
        // On a since before #1 was sent, until after the kill; a never got past offset 0.
        let on_a = lineage(0, vec![conn(50, None, None)], &[0]);
        let o = evaluate(&messages, &[on_a, on_b.clone()], &lives, &[]);
        assert_eq!((o.lost, o.broker_lost, o.broker_pairs), (0, 1, 1));
        // Between streams at the kill: the stream before could have had it (a fetching it
        // later than b), so it counts as the server's.
        let late = lineage(
            0,
            vec![conn(50, Some(850), None), conn(950, None, Some(0))],
            &[0],
        );
        let o = evaluate(&messages, &[late, on_b], &lives, &[]);
        assert_eq!((o.lost, o.broker_lost), (1, 0));
    }

    #[test]
    fn duplicates_are_counted_per_lineage() {
        let messages = [msg(0, 200, Some((210, 1)))];
        let mut l = lineage(0, vec![conn(100, None, None)], &[0]);
        l.seen.get_mut(&0).unwrap().count = 3;
        let other = lineage(0, vec![conn(100, None, None)], &[0]);
        let o = evaluate(&messages, &[l, other], &one_life(), &[]);
        assert_eq!((o.duplicated, o.lost, o.receipts), (2, 0, 2));
    }

    #[test]
    fn a_lineage_without_an_id_cannot_resume() {
        let s = 1_000_000;
        let messages = [msg(0, s, Some((s, 0))), msg(0, 8 * s, Some((8 * s, 1)))];
        let mut first = conn(100, Some(10 * s), None);
        first.had_id_at_close = false;
        let l = lineage(0, vec![first, conn(11 * s, None, None)], &[]);
        let o = evaluate(&messages, &[l], &one_life(), &[]);
        // #0 should have arrived on the first stream; #1 was in flight when it ended.
        assert_eq!((o.lost, o.owed_pairs), (1, 1));
    }

    #[test]
    fn a_resume_from_an_earlier_broker_life_is_told_apart() {
        let lives = BrokerLives {
            starts: vec![0, 1000],
            kills: vec![900],
        };
        let messages = [msg(0, 100, Some((110, 5))), msg(0, 2500, Some((2510, 2)))];
        let l = lineage(
            0,
            vec![conn(50, Some(2000), None), conn(3000, None, Some(0))],
            &[0],
        );
        let o = evaluate(&messages, &[l], &lives, &[]);
        assert_eq!(o.loss_kinds.resumed_from_earlier_life, 1);
        assert!(o.examples[0].contains("broker life 0"), "{:?}", o.examples);
    }

    #[test]
    fn one_consumer_stepping_over_a_late_write_is_the_broker_race() {
        let on = |instance: u8, l: LineageLog| LineageLog {
            connections: l
                .connections
                .into_iter()
                .map(|c| Conn { instance, ..c })
                .collect(),
            seen: l
                .seen
                .into_iter()
                .map(|(k, r)| (k, Receipt { instance, ..r }))
                .collect(),
            ..l
        };
        // #0 got offset 1 but was acknowledged after #1 (another producer's) at offset 2:
        // stored late.
        let posted = |m: Message| Message { producer: 1, ..m };
        let late = [
            msg(0, 200, Some((300, 1))),
            posted(msg(1, 210, Some((250, 2)))),
        ];
        let on_time = [
            msg(0, 200, Some((240, 1))),
            posted(msg(1, 210, Some((250, 2)))),
        ];
        let same_producer = [msg(0, 200, Some((300, 1))), msg(1, 210, Some((250, 2)))];
        let a = || on(0, lineage(0, vec![conn(100, None, None)], &[]));
        let b = || on(1, lineage(0, vec![conn(100, None, None)], &[0]));
        let o = evaluate(&late, &[a(), b()], &one_life(), &[]);
        assert_eq!((o.lost, o.broker_race, o.race_pairs), (0, 1, 1));
        assert_eq!(o.race_examples.len(), 1);
        // Stored in order: one instance dropping it is the server's loss.
        let o = evaluate(&on_time, &[a(), b()], &one_life(), &[]);
        assert_eq!((o.lost, o.broker_race), (1, 0));
        assert_eq!(o.loss_kinds.instance_never_delivered, 1);
        // Stored late, but no instance delivered it: not the race's signature.
        let o = evaluate(&late, &[a()], &one_life(), &[]);
        assert_eq!((o.lost, o.broker_race), (1, 0));
        // One producer's batches are stored in order, whatever the acknowledgements say.
        let o = evaluate(&same_producer, &[a(), b()], &one_life(), &[]);
        assert_eq!((o.lost, o.broker_race), (1, 0));
    }

    /// The soak's one loss: a message the broker's fetch race kept from instance b, on a
    /// stream open on b when it was sent. That stream ended later (b was killed) and the
    /// lineage resumed on a from an id past the message, so the resumed stream owed it nothing;
    /// the race is judged on b's stream, not on a's.
    #[test]
    fn a_resume_past_a_message_leaves_it_to_the_stream_open_when_it_was_sent() {
        let posted = |m: Message| Message { producer: 1, ..m };
        // #0 (offset 1) was stored late: acknowledged after #1 (another producer's, offset 2).
        let messages = [
            msg(0, 200, Some((300, 1))),
            posted(msg(1, 210, Some((250, 2)))),
            msg(0, 400, Some((410, 5))),
        ];
        let mut on_b = conn(100, Some(1000), None);
        on_b.instance = 1;
        let mut l = lineage(0, vec![on_b, conn(1100, None, Some(2))], &[2]);
        l.seen.values_mut().for_each(|r| r.instance = 1);
        // Another lineage of the user, on a, saw #0: a delivered it, b did not.
        let other = lineage(0, vec![conn(100, None, None)], &[0, 2]);
        let o = evaluate(&messages, &[l.clone(), other.clone()], &one_life(), &[]);
        assert_eq!(
            (o.lost, o.broker_race, o.race_pairs),
            (0, 1, 1),
            "{:?}",
            o.examples
        );
        // Had it resumed from before the message, a's replay owed it too: a's loss.
        l.connections[1].anchor = None;
        l.connections[0].had_id_at_close = true;
        let o = evaluate(&messages, &[l, other], &one_life(), &[]);
        assert_eq!((o.lost, o.broker_race), (1, 0));
        assert_eq!(o.loss_kinds.resumed, 1);
    }

    #[test]
    fn delays_split_by_fault_windows() {
        let messages = [msg(0, 200, Some((210, 1))), msg(0, 5000, Some((5010, 2)))];
        let mut l = lineage(0, vec![conn(100, None, None)], &[0, 1]);
        l.seen.get_mut(&0).unwrap().first_us = 1200;
        l.seen.get_mut(&1).unwrap().first_us = 9000;
        let o = evaluate(&messages, &[l], &one_life(), &[(4000, 6000)]);
        assert_eq!(o.delay_ms, vec![1.0, 4.0]);
        assert_eq!(o.delay_calm_ms, vec![1.0]);
    }
}
