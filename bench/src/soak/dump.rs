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
