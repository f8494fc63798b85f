//! The register as a tab-separated file next to the logs, one message a line with who saw it,
//! so a loss the table reports can be traced by hand (`sort`, `awk`, a spreadsheet).

use super::ledger::{BrokerLives, LineageLog, Message, Via};
use std::fmt::Write as _;

/// `seq user via producer sent_us ack_us life offset seen_by`, with a header line; `-` when unknown.
pub fn messages_tsv(messages: &[Message], lineages: &[LineageLog], lives: &BrokerLives) -> String {
    let mut seen_by = vec![0u32; messages.len()];
    for lineage in lineages {
        for &seq in lineage.seen.keys() {
            if let Some(n) = seen_by.get_mut(seq as usize) {
                *n += 1;
            }
        }
    }
    let mut out =
        String::from("seq\tuser\tvia\tproducer\tsent_us\tack_us\tlife\toffset\tseen_by\n");
    for (seq, m) in messages.iter().enumerate() {
        let via = match m.via {
            Via::Http => "post",
            Via::Kafka => "produce",
            Via::Probe => "probe",
        };
        let (ack, life, offset) = match m.ack {
            Some(a) => (
                a.at_us.to_string(),
                lives.life_at(a.at_us).to_string(),
                a.offset.to_string(),
            ),
            None => ("-".into(), "-".into(), "-".into()),
        };
        let _ = writeln!(
            out,
            "{seq}\t{}\t{via}\t{}\t{}\t{ack}\t{life}\t{offset}\t{}",
            m.user, m.producer, m.sent_us, seen_by[seq]
        );
    }
    out
}

/// Every body a lineage saw more than once, one line each, with the stream it came on again
/// and the lineage's resyncs, so a duplicate can be traced to a resume:
/// `user lineage seq offset life count first_us first_on last_us last_on stream resyncs`.
/// `stream` is the stream open at the last receipt (`instance@open_us<-anchor offset`);
/// `resyncs` are `at_us:last_event_id` of that stream's resyncs (`-` for none).
pub fn duplicates_tsv(
    messages: &[Message],
    lineages: &[LineageLog],
    lives: &BrokerLives,
) -> String {
    let offset = |seq: u32| {
        messages
            .get(seq as usize)
            .and_then(|m| m.ack)
            .map_or(("-".to_string(), "-".to_string()), |a| {
                (a.offset.to_string(), lives.life_at(a.at_us).to_string())
            })
    };
    let name = |i: u8| if i == 0 { "a" } else { "b" };
    let mut out = String::from(
        "user\tlineage\tseq\toffset\tlife\tcount\tfirst_us\tfirst_on\tlast_us\tlast_on\tstream\tresyncs\n",
    );
    for (n, lineage) in lineages.iter().enumerate() {
        let mut dups: Vec<_> = lineage.seen.iter().filter(|(_, r)| r.count > 1).collect();
        dups.sort_by_key(|(seq, _)| **seq);
        for (&seq, r) in dups {
            let stream = lineage
                .connections
                .iter()
                .rev()
                .find(|c| c.open_us <= r.last_us);
            let (stream_text, resyncs) = match stream {
                Some(c) => {
                    let anchor = c.anchor.map_or("none".to_string(), |a| offset(a).0);
                    let until = c.close_us.unwrap_or(u64::MAX);
                    let resyncs: Vec<String> = lineage
                        .resyncs
                        .iter()
                        .filter(|x| x.at_us >= c.open_us && x.at_us <= until)
                        .map(|x| format!("{}:{}", x.at_us, x.last_event_id))
                        .collect();
                    (
                        format!("{}@{}<-{anchor}", name(c.instance), c.open_us),
                        if resyncs.is_empty() {
                            "-".to_string()
                        } else {
                            resyncs.join(",")
                        },
                    )
                }
                None => ("-".to_string(), "-".to_string()),
            };
            let (off, life) = offset(seq);
            let _ = writeln!(
                out,
                "{}\t{n}\t{seq}\t{off}\t{life}\t{}\t{}\t{}\t{}\t{}\t{stream_text}\t{resyncs}",
                lineage.user,
                r.count,
                r.first_us,
                name(r.instance),
                r.last_us,
                name(r.last_instance),
            );
        }
    }
    out
}
