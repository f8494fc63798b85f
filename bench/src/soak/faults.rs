//! The faults, and how long the system takes to recover from each.
//!
//! Recovery is measured end to end: from the kill until every lineage has an open stream and
//! has received a probe produced after the kill. A round of probes is one record per user, so
//! every lineage has one to wait for; a new round follows every couple of seconds (records
//! produced into a dead broker may be lost with it).

use super::gate::Gate;
use super::instance::Instance;
use super::ledger::{BrokerLives, Us};
use super::lineage::Live;
use super::publish::Prober;
use crate::scenario::now_us;
use crate::tansu::Broker;
use anyhow::Result;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::time::Instant;

/// How long the broker stays dead before it is started again: an outage, not a blip, and long
/// enough that no acknowledgement from the old broker can arrive after the new one starts.
pub const BROKER_DOWN: Duration = Duration::from_secs(2);

/// How long the killed instance stays dead; its clients resume on the other one meanwhile.
pub const INSTANCE_DOWN: Duration = Duration::from_secs(3);

/// Probes go out this often while some lineage has not seen one.
const ROUND_EVERY: Duration = Duration::from_secs(2);

/// The recovery target.
pub const RECOVERY_TARGET: Duration = Duration::from_secs(15);

/// Which faults to inject.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Fault {
    /// SIGKILL the broker (its memory storage dies with it), start it again, create the topic.
    Broker,
    /// SIGKILL instance b, start it again on the same port.
    Instance,
}

impl Fault {
    pub fn name(self) -> &'static str {
        match self {
            Fault::Broker => "broker SIGKILL + restart",
            Fault::Instance => "instance b SIGKILL + restart",
        }
    }
}

/// What one fault did.
#[derive(Debug, Clone)]
pub struct FaultReport {
    pub fault: Fault,
    /// When the kill was sent.
    pub at_us: Us,
    /// When the replacement answered (instance healthy, or broker with its topic).
    pub back_us: Option<Us>,
    /// From the kill until every lineage had seen a probe sent after it.
    pub recovery: Option<Duration>,
    /// Lineages still without such a probe when the wait gave up.
    pub behind: usize,
    /// Why the restart failed, if it did.
    pub error: Option<String>,
}

impl FaultReport {
    /// The window in which delays and log lines are put down to the fault.
    pub fn window(&self, cap: Duration) -> (Us, Us) {
        let took = self.recovery.unwrap_or(cap);
        (self.at_us, self.at_us + took.as_micros() as Us + 5_000_000)
    }
}

/// Sends probe rounds (the first at once) until every lineage has seen one of them, or `cap`
/// passes. Returns the time from `since`, or the number of lineages still behind.
pub async fn wait_recovered(
    prober: &Prober,
    lives: &[Arc<Live>],
    since: Instant,
    cap: Duration,
) -> Result<Duration, usize> {
    let first = prober.round();
    let mut next_round = since + ROUND_EVERY;
    loop {
        let behind = lives
            .iter()
            .filter(|l| l.probe_rounds.load(Relaxed) <= first)
            .count();
        if behind == 0 {
            return Ok(since.elapsed());
        }
        if since.elapsed() >= cap {
            return Err(behind);
        }
        if Instant::now() >= next_round {
            prober.round();
            next_round += ROUND_EVERY;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Kills the broker, starts it again after [`BROKER_DOWN`] with its topic, then opens the gate
/// in front of it again, and measures recovery.
pub async fn broker(
    broker: &mut Broker,
    gate: &Gate,
    lives: &Mutex<BrokerLives>,
    prober: &Prober,
    lineages: &[Arc<Live>],
    cap: Duration,
) -> FaultReport {
    let (since, at_us) = (Instant::now(), now_us());
    lives
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .kills
        .push(at_us);
    // Dead before the first probe round, so no probe can reach the old broker's consumers.
    gate.close();
    broker.kill().await;
    let act = async {
        tokio::time::sleep(BROKER_DOWN).await;
        // Any acknowledgement from now on comes from the new broker.
        lives
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .starts
            .push(now_us());
        let back = broker.restart().await.map(|()| now_us());
        if back.is_ok() {
            gate.open(broker.addr);
        }
        back
    };
    let (recovered, back) = tokio::join!(wait_recovered(prober, lineages, since, cap), act);
    report(Fault::Broker, at_us, recovered, back)
}

/// Kills instance `instance`, starts it again after [`INSTANCE_DOWN`], and measures recovery.
pub async fn instance(
    instance: &mut Instance,
    prober: &Prober,
    lineages: &[Arc<Live>],
    cap: Duration,
) -> FaultReport {
    let (since, at_us) = (Instant::now(), now_us());
    instance.kill().await;
    let act = async {
        tokio::time::sleep(INSTANCE_DOWN).await;
        instance.restart().await.map(|()| now_us())
    };
    let (recovered, back) = tokio::join!(wait_recovered(prober, lineages, since, cap), act);
    report(Fault::Instance, at_us, recovered, back)
}

fn report(
    fault: Fault,
    at_us: Us,
    recovered: Result<Duration, usize>,
    back: Result<Us>,
) -> FaultReport {
    let (back_us, error) = match back {
        Ok(us) => (Some(us), None),
        Err(e) => (None, Some(format!("{e:#}"))),
    };
    FaultReport {
        fault,
        at_us,
        back_us,
        recovery: recovered.ok(),
        behind: recovered.err().unwrap_or(0),
        error,
    }
}
