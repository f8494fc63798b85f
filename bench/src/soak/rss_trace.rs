//! RSS of both instances every couple of seconds, written next to the logs as `rss.tsv`, so a
//! drift in the table can be told apart from a plateau reached late or a step at a fault.

use crate::procstat::rss_kib;
use std::fmt::Write as _;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// How often RSS is read.
const EVERY: Duration = Duration::from_secs(2);

/// The instances' pids, kept current by the run as it kills and restarts them.
#[derive(Clone, Default)]
pub struct Pids(Arc<Mutex<[Option<u32>; 2]>>);

impl Pids {
    pub fn set(&self, instance: usize, pid: Option<u32>) {
        self.0.lock().unwrap_or_else(|e| e.into_inner())[instance] = pid;
    }

    fn get(&self) -> [Option<u32>; 2] {
        *self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Samples until `stop`; returns `t_s a_kib b_kib` lines (seconds from `start`; `-` while an
/// instance is down).
pub async fn sample(pids: Pids, start: Instant, stop: CancellationToken) -> String {
    let mut out = String::from("t_s\ta_kib\tb_kib\n");
    let mut tick = tokio::time::interval(EVERY);
    loop {
        tokio::select! {
            () = stop.cancelled() => return out,
            _ = tick.tick() => {}
        }
        let kib = |pid: Option<u32>| {
            pid.and_then(|p| rss_kib(p).ok())
                .map_or("-".into(), |k| k.to_string())
        };
        let [a, b] = pids.get();
        let _ = writeln!(
            out,
            "{:.1}\t{}\t{}",
            start.elapsed().as_secs_f64(),
            kib(a),
            kib(b)
        );
    }
}
