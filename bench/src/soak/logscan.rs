//! Reads the servers' logs for WARN and ERROR lines (and panics), leaving out the expected
//! slow-client cuts: a stalled client's stream closed by the write timeout (the line names a
//! stalled client's address, or only sums up write-timeout refusals) or by its queue
//! overflowing (the line names a stalled user). A line stamped inside a fault's window is
//! counted apart: Kafka warns while the broker is gone, and that is the fault, not a bug.

use super::stalled::is_stalled_source;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

/// Lines printed in the report.
const SHOWN: usize = 5;

/// What the logs held.
#[derive(Debug, Clone, Default)]
pub struct Scan {
    /// Expected slow-client cut lines.
    pub cuts: u64,
    /// WARN/ERROR lines (and panics) that are not expected cuts, inside fault windows.
    pub in_faults: u64,
    /// The same outside fault windows.
    pub outside: u64,
    /// The first few of them, outside fault windows first: `file: line`.
    pub shown: Vec<String>,
}

/// Scans `files`; `windows` are the faults' wall-clock windows.
pub fn scan(files: &[PathBuf], windows: &[(SystemTime, SystemTime)]) -> Scan {
    let mut scan = Scan::default();
    let (mut outside, mut inside) = (Vec::new(), Vec::new());
    for file in files {
        let text = std::fs::read_to_string(file).unwrap_or_default();
        let name = file.file_name().map_or_else(
            || file.display().to_string(),
            |n| n.to_string_lossy().into_owned(),
        );
        for line in text.lines() {
            match classify(line) {
                Class::Other => continue,
                Class::Cut => {
                    scan.cuts += 1;
                    continue;
                }
                Class::Problem => {}
            }
            let during =
                stamp(line).is_some_and(|t| windows.iter().any(|&(a, b)| t >= a && t <= b));
            let shown = format!("{name}: {}", line.trim());
            if during {
                scan.in_faults += 1;
                inside.push(shown);
            } else {
                scan.outside += 1;
                outside.push(shown);
            }
        }
    }
    scan.shown = outside.into_iter().chain(inside).take(SHOWN).collect();
    scan
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Class {
    /// Not a problem: INFO and below, run headers.
    Other,
    /// An expected slow-client cut.
    Cut,
    Problem,
}

fn classify(line: &str) -> Class {
    let level = line.split_whitespace().nth(1).unwrap_or("");
    if line.contains("closed streams that fell behind") {
        // Only the stalled clients' users are expected to fall behind.
        return match field(line, "user").is_some_and(|u| u.starts_with(super::FILLER_PREFIX)) {
            true => Class::Cut,
            false => Class::Problem,
        };
    }
    if field(line, "limit") == Some("write_timeout") {
        return match field(line, "client") {
            // The period's summary names no client.
            None => Class::Cut,
            Some(ip) if is_stalled_source(ip) => Class::Cut,
            Some(_) => Class::Problem,
        };
    }
    if level == "WARN" || level == "ERROR" || line.contains("panicked") {
        Class::Problem
    } else {
        Class::Other
    }
}

/// The value of `key=value` in a tracing line.
fn field<'a>(line: &'a str, key: &str) -> Option<&'a str> {
    line.split_whitespace()
        .find_map(|word| word.strip_prefix(key)?.strip_prefix('='))
        .map(|v| v.trim_matches('"'))
}

/// The line's timestamp (tracing's RFC 3339, UTC).
fn stamp(line: &str) -> Option<SystemTime> {
    humantime::parse_rfc3339(line.split_whitespace().next()?).ok()
}

/// The logs of a run: the instances' (tansu's is not the server's).
pub fn server_logs(dir: &Path) -> Vec<PathBuf> {
    ["ssepush-a.log", "ssepush-b.log"]
        .iter()
        .map(|f| dir.join(f))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn expected_cuts_faults_and_problems() {
        let dir = std::env::temp_dir().join(format!("soak-logscan-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("ssepush-a.log");
        let lines = [
            "--- bench run: ssepush --port 1",
            "2030-01-01T00:00:00.000001Z  INFO server: listening addr=127.0.0.1:1",
            "2030-01-01T00:00:01.000000Z  INFO server::hub: closed streams that fell behind hub=\"v3\" user=\"soak-stalled-0\" streams=1",
            "2030-01-01T00:00:01.000000Z  INFO server::hub: closed streams that fell behind hub=\"v3\" user=\"soak-u7\" streams=1",
            "2030-01-01T00:00:02.000000Z  WARN server::refusals: request refused by a limit limit=\"write_timeout\" client=127.0.0.251 reason=x",
            "2030-01-01T00:00:02.000000Z  WARN server::refusals: request refused by a limit limit=\"write_timeout\" client=127.0.0.9 reason=x",
            "2030-01-01T00:00:02.500000Z  WARN server::refusals: requests refused by a limit limit=\"write_timeout\" refused_since_last_line=3",
            "2030-01-01T00:00:10.000000Z  WARN server::kafka: kafka is not ready; retrying every 2 s",
            "2030-01-01T00:00:30.000000Z ERROR server: something broke",
        ];
        std::fs::write(&file, lines.join("\n")).unwrap();
        let t0 = humantime::parse_rfc3339("2030-01-01T00:00:05Z").unwrap();
        let scan = scan(&[file], &[(t0, t0 + Duration::from_secs(10))]);
        assert_eq!(scan.cuts, 3);
        assert_eq!((scan.in_faults, scan.outside), (1, 3));
        assert!(scan.shown[0].contains("soak-u7"), "{:?}", scan.shown);
        assert!(scan.shown.last().unwrap().contains("kafka is not ready"));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
