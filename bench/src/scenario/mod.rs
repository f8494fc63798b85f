//! The scenarios, one module each, and the helpers they share.
//!
//! Every scenario starts its own server process(es), drives them with bounded loops under
//! deadlines, and stops them (the processes are `kill_on_drop`, so an early error cannot leave
//! one behind).

pub mod absent;
pub mod churn;
pub mod cluster;
pub mod drain;
pub mod fanout;
pub mod idle;
pub mod idle_h2;
pub mod kafka;
pub mod memory;
pub mod records;
pub mod startup;
pub mod wide;

use crate::http::SseStream;
use crate::procstat::Kind;
use crate::sse::Item;
use anyhow::{Context, Result, bail};
use std::net::SocketAddr;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Microseconds since the first call: the one clock that send timestamps and receive times
/// share (both ends live in this process).
pub fn now_us() -> u64 {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    EPOCH.get_or_init(Instant::now).elapsed().as_micros() as u64
}

/// A message body carrying its sequence number and send time, padded to `size` bytes.
pub fn message_body(seq: u64, size: usize) -> String {
    let mut body = format!("{seq} {}", now_us());
    if body.len() + 1 < size {
        body.push(' ');
        body.extend(std::iter::repeat_n('x', size - body.len()));
    }
    body
}

/// Parses `seq send_us ...` back out of an event's data.
pub fn parse_body(data: &str) -> Option<(u64, u64)> {
    let mut parts = data.split(' ');
    let seq = parts.next()?.parse().ok()?;
    let sent = parts.next()?.parse().ok()?;
    Some((seq, sent))
}

/// Opens a stream; for `ssepush`, which promises a `retry:` line and a comment right after
/// the head, also waits for that preamble, so "open" means the client saw the server's bytes.
pub async fn open_stream(
    server: SocketAddr,
    path: &str,
    kind: Kind,
    buf_size: usize,
    timeout: Duration,
) -> Result<SseStream> {
    tokio::time::timeout(timeout, async {
        let mut stream = SseStream::open(server, path, "", buf_size).await?;
        if kind == Kind::Ssepush {
            let mut seen = false;
            while !seen {
                let open = stream
                    .read_items(&mut |item| {
                        seen |= matches!(item, Item::Comment(_) | Item::Retry(_));
                    })
                    .await?;
                if !open && !seen {
                    bail!("stream ended before its first comment");
                }
            }
        }
        Ok(stream)
    })
    .await
    .context("open timed out")?
}

/// Waits until `counter` reaches `target`, giving up after `stall` without progress or after
/// `max` in total. Returns whether the target was reached.
pub async fn wait_for_count(
    counter: &AtomicU64,
    target: u64,
    stall: Duration,
    max: Duration,
) -> bool {
    let start = Instant::now();
    let mut last = counter.load(Ordering::Relaxed);
    let mut last_change = Instant::now();
    loop {
        let now = counter.load(Ordering::Relaxed);
        if now >= target {
            return true;
        }
        if now != last {
            last = now;
            last_change = Instant::now();
        }
        if last_change.elapsed() > stall || start.elapsed() > max {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// The `q` quantile (0..=1) of sorted values, nearest-rank.
pub fn percentile(sorted: &[u32], q: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    Some(f64::from(sorted[rank - 1]))
}

/// The median of some figures (mean of the middle two for an even count).
pub fn median(values: &[f64]) -> Option<f64> {
    let mut v: Vec<f64> = values.iter().copied().filter(|x| x.is_finite()).collect();
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let mid = v.len() / 2;
    Some(if v.len().is_multiple_of(2) {
        (v[mid - 1] + v[mid]) / 2.0
    } else {
        v[mid]
    })
}

/// Prints a progress line to stderr (the table goes to stdout).
pub fn progress(msg: impl AsRef<str>) {
    eprintln!("[loadgen {:>7.1}s] {}", now_us() as f64 / 1e6, msg.as_ref());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn body_round_trip() {
        let body = message_body(42, 64);
        assert_eq!(body.len(), 64);
        let (seq, _) = parse_body(&body).unwrap();
        assert_eq!(seq, 42);
        assert!(parse_body("hello").is_none());
    }

    #[test]
    fn quantiles() {
        let v: Vec<u32> = (1..=1000).collect();
        assert_eq!(percentile(&v, 0.5), Some(500.0));
        assert_eq!(percentile(&v, 0.99), Some(990.0));
        assert_eq!(percentile(&v, 0.999), Some(999.0));
        assert_eq!(median(&[3.0, 1.0, 2.0]), Some(2.0));
    }
}
