//! The summary: a markdown table (metric, value, target, met?) and what explains its figures:
//! the ledger's rules, the losses by kind with examples, the worst users, the first unexpected
//! log lines, and the servers' flags.

use super::faults::RECOVERY_TARGET;
use super::ledger::{Outcome, RULES};
use super::{ProcessRss, Run};
use crate::scenario::percentile;
use crate::table::fmt_num;
use std::fmt::Write as _;

/// The RSS drift target, in percent.
const DRIFT_TARGET: f64 = 10.0;

/// Users listed with their losses and duplicates.
const USERS_SHOWN: usize = 10;

struct Line {
    metric: String,
    value: String,
    target: &'static str,
    met: Option<bool>,
}

fn info(metric: impl Into<String>, value: impl Into<String>) -> Line {
    Line {
        metric: metric.into(),
        value: value.into(),
        target: "",
        met: None,
    }
}

fn target(
    metric: impl Into<String>,
    value: impl Into<String>,
    target: &'static str,
    met: bool,
) -> Line {
    Line {
        metric: metric.into(),
        value: value.into(),
        target,
        met: Some(met),
    }
}

fn n(v: u64) -> String {
    fmt_num(v as f64)
}

fn secs(us: u64) -> f64 {
    us as f64 / 1e6
}

/// The summary as markdown, and whether every target was met.
pub fn render(run: &Run) -> (String, bool) {
    let o = &run.outcome;
    let mut lines = Vec::new();
    let [setup, load, drain] = run.phases;
    let faults: Vec<&str> = run.cfg.faults.iter().map(|f| f.name()).collect();
    lines.push(info(
        "run",
        format!(
            "{:.1} min of load (+{:.0} s setup, {:.0} s drain); {} streams, {} users; faults: {}",
            load.as_secs_f64() / 60.0,
            setup.as_secs_f64(),
            drain.as_secs_f64(),
            n(run.cfg.streams as u64),
            n(run.cfg.users as u64),
            if faults.is_empty() {
                "none".into()
            } else {
                faults.join(", ")
            }
        ),
    ));
    lines.push(info(
        "messages sent (acknowledged)",
        format!(
            "{} ({} POSTed, {} produced, {} recovery probes)",
            n(o.sent),
            n(o.sent_http),
            n(o.sent_kafka),
            n(o.sent_probe)
        ),
    ));
    let t = &run.tally;
    lines.push(info(
        "publish attempts not acknowledged",
        format!(
            "{} ({} POSTs not answered 200, {} produce errors; {} seen by a client anyway)",
            n(o.unacked),
            n(t.post_failures),
            n(t.produce_failures),
            n(o.unacked_seen)
        ),
    ));
    lines.push(info(
        "delivered",
        format!(
            "{} messages seen by a client; {} first receipts over all streams",
            n(o.delivered),
            n(o.receipts)
        ),
    ));
    lines.push(target(
        "lost (messages a client owed and never saw)",
        format!("{} ({} client-message pairs)", n(o.lost), n(o.lost_pairs)),
        "0",
        o.lost == 0,
    ));
    lines.push(target(
        "duplicated (a body seen again by the same client)",
        n(o.duplicated),
        "0",
        o.duplicated == 0,
    ));
    lines.push(info(
        "lost with the broker's memory storage (see rule 3)",
        match o.broker_lost_max_age_us {
            Some(age) => format!(
                "{} ({} client-message pairs; acknowledged at most {:.2} s before the kill)",
                n(o.broker_lost),
                n(o.broker_pairs),
                secs(age)
            ),
            None => n(o.broker_lost),
        },
    ));
    lines.push(info(
        "lost to the broker's fetch race (see rule 4)",
        format!(
            "{} ({} client-message pairs)",
            n(o.broker_race),
            n(o.race_pairs)
        ),
    ));
    lines.push(info(
        "offsets the broker acknowledged to two messages (same broker life)",
        n(o.offset_clashes),
    ));
    lines.push(info(
        "resync events; owed messages inside their declared gaps, never seen",
        format!(
            "{} resyncs ({} naming another id than sent); {} messages ({} pairs)",
            n(o.resyncs),
            n(o.resync_mismatches),
            n(o.excused),
            n(o.excused_pairs)
        ),
    ));
    lines.push(info(
        "delay publish to receipt p50 / p99 (ms)",
        format!(
            "all {} / {}; outside fault windows {} / {}",
            pct(&o.delay_ms, 0.5),
            pct(&o.delay_ms, 0.99),
            pct(&o.delay_calm_ms, 0.5),
            pct(&o.delay_calm_ms, 0.99)
        ),
    ));
    for p in &run.rss {
        lines.extend(rss_lines(p));
    }
    lines.push(info(
        "reconnects",
        format!(
            "{} ({} churn, {} after a stream ended under the client, {} back to a restarted home instance); {} failed opens",
            n(t.reconnects_churn + t.reconnects_dropped + t.reconnects_home),
            n(t.reconnects_churn),
            n(t.reconnects_dropped),
            n(t.reconnects_home),
            n(t.open_failures)
        ),
    ));
    lines.push(info(
        "stalled clients",
        format!(
            "{} streams opened, {} cut by the server, {} still open after {} s; {} filler records",
            n(t.stalled_opened),
            n(t.stalled_cut),
            n(t.stalled_open),
            super::stalled::HOLD.as_secs(),
            n(t.filler_sent)
        ),
    ));
    for f in &run.faults {
        let metric = format!(
            "recovery (s): {} at {:.0} s into the load",
            f.fault.name(),
            secs(f.at_us.saturating_sub(run.load_start_us))
        );
        let value = match (f.recovery, f.behind) {
            (Some(d), _) => format!("{:.1}", d.as_secs_f64()),
            (None, behind) => format!("not within the wait ({behind} streams behind)"),
        };
        let met = f.recovery.is_some_and(|d| d < RECOVERY_TARGET);
        lines.push(target(metric, value, "< 15", met));
    }
    lines.push(info(
        "Kafka records consumed, instance a / b (since its last start)",
        run.consumed
            .iter()
            .map(|c| c.map_or("-".into(), n))
            .collect::<Vec<_>>()
            .join(" / "),
    ));
    let l = &run.logs;
    lines.push(info(
        "server log WARN/ERROR lines, not slow-client cuts",
        format!(
            "{} outside fault windows, {} inside; {} expected slow-client cut lines",
            n(l.outside),
            n(l.in_faults),
            n(l.cuts)
        ),
    ));
    for problem in &run.problems {
        lines.push(target("problem", problem.clone(), "none", false));
    }

    let all_met = lines.iter().all(|l| l.met != Some(false));
    let mut out = String::from("| metric | value | target | met? |\n|---|---|---|:---:|\n");
    for line in &lines {
        let met = match line.met {
            Some(true) => "yes",
            Some(false) => "**NO**",
            None => "",
        };
        let _ = writeln!(
            out,
            "| {} | {} | {} | {met} |",
            cell(&line.metric),
            cell(&line.value),
            line.target
        );
    }
    out.push_str(&details(run, o));
    (out, all_met)
}

fn rss_lines(p: &ProcessRss) -> Vec<Line> {
    let kib = |v: Option<u64>| v.map_or("-".into(), n);
    let name = match p.restarted_s {
        Some(at) => format!("instance {} (restarted at {at:.0} s)", p.instance),
        None => format!("instance {}", p.instance),
    };
    let end = if p.killed { "before its kill" } else { "end" };
    let mut lines = vec![info(
        format!("RSS {name}: start / after warm-up / {end} (KiB)"),
        format!(
            "{} / {} / {}",
            kib(p.start),
            kib(p.warm.map(|w| w.0)),
            kib(p.end)
        ),
    )];
    match p.drift_pct() {
        Some(drift) => lines.push(target(
            format!("RSS drift after warm-up, {name} (%)"),
            format!("{drift:+.1}"),
            "< 10",
            drift < DRIFT_TARGET,
        )),
        None if !p.killed => lines.push(info(
            format!("RSS drift after warm-up, {name} (%)"),
            "not judged: no warm-up reading in this process's life",
        )),
        None => {}
    }
    lines
}

/// What explains the table.
fn details(run: &Run, o: &Outcome) -> String {
    let mut out = String::new();
    if o.lost > 0 {
        let k = &o.loss_kinds;
        let _ = writeln!(
            out,
            "\nLost client-message pairs by where the message should have come from: {} on a stream open since before it was sent; {} in the replay of a reconnect whose Last-Event-ID was from the same broker life; {} on a stream (open when it was sent, or a later one) that had resumed with a Last-Event-ID from an earlier broker life (before a broker restart). In {} of them the instance of that stream delivered the message to none of its streams while the other instance did. Every message is listed in messages.tsv next to the logs. Examples:",
            n(k.live),
            n(k.resumed),
            n(k.resumed_from_earlier_life),
            n(k.instance_never_delivered)
        );
        for example in &o.examples {
            let _ = writeln!(out, "- {example}");
        }
    }
    if !o.race_examples.is_empty() {
        let _ = writeln!(
            out,
            "\nExamples of rule 4 (the broker's fetch race), not counted as lost:"
        );
        for example in &o.race_examples {
            let _ = writeln!(out, "- {example}");
        }
    }
    if !o.bad_users.is_empty() {
        let _ = writeln!(
            out,
            "\nUsers with losses or duplicates ({} in all; worst first):\n\n| user | first receipts | lost pairs | duplicated |\n|---|---:|---:|---:|",
            o.bad_users.len()
        );
        for u in o.bad_users.iter().take(USERS_SHOWN) {
            let _ = writeln!(
                out,
                "| {} | {} | {} | {} |",
                super::user_name(u.user),
                n(u.delivered),
                n(u.lost),
                n(u.duplicated)
            );
        }
    }
    if !run.logs.shown.is_empty() {
        let _ = writeln!(
            out,
            "\nFirst WARN/ERROR lines that are not slow-client cuts (outside fault windows first):\n"
        );
        for line in &run.logs.shown {
            let _ = writeln!(out, "    {line}");
        }
    }
    let _ = writeln!(out, "\n{RULES}");
    let _ = writeln!(
        out,
        "\nRecovery: from the kill until every stream had received a probe produced after it (one record per user, a round every 2 s). A fault's window, for delays and log lines, runs from the kill to 5 s after recovery. RSS is VmRSS from /proc (every 2 s in rss.tsv next to the logs); drift compares the end with the reading after warm-up ({} s into the load, or as long after a restart) in the same process, once the clients that failed over have moved back home. History TTL is {} s, below the warm-up, so the history is full before the first reading.",
        run.cfg.warmup().as_secs(),
        run.cfg.history_ttl().as_secs()
    );
    let _ = writeln!(
        out,
        "\nInstances ran with: {} (and --kafka-group soak-a / soak-b). Seed {}.",
        run.server_flags.join(" "),
        run.cfg.seed
    );
    out
}

/// A quantile of sorted milliseconds, formatted.
fn pct(sorted_ms: &[f64], q: f64) -> String {
    // `percentile` takes integer microseconds.
    let us: Vec<u32> = sorted_ms.iter().map(|&ms| (ms * 1000.0) as u32).collect();
    percentile(&us, q).map_or("-".into(), |v| fmt_num(v / 1000.0))
}

fn cell(text: &str) -> String {
    text.replace('|', "\\|").replace(['\r', '\n'], " ")
}
