//! The markdown result table: scenario | metric | ssepush | baseline | ratio | target | met?

use std::fmt::Write as _;

/// One line of the table.
#[derive(Debug, Clone)]
pub struct Row {
    pub scenario: String,
    pub metric: String,
    /// The server under test's figure; `None` when it could not be measured.
    pub ours: Option<f64>,
    /// The baseline's figure; `None` prints `n/a`.
    pub base: Option<f64>,
    /// The target in words, empty for informational rows.
    pub target: String,
    /// Whether the target was met; `None` for informational rows.
    pub met: Option<bool>,
}

impl Row {
    /// An informational row without a target.
    pub fn info(scenario: &str, metric: &str, ours: Option<f64>, base: Option<f64>) -> Self {
        Self {
            scenario: scenario.into(),
            metric: metric.into(),
            ours,
            base,
            target: String::new(),
            met: None,
        }
    }

    /// A count that should be zero (lost, duplicated, ...).
    pub fn zero(scenario: &str, metric: &str, count: u64) -> Self {
        Self::target(
            scenario,
            metric,
            Some(count as f64),
            None,
            "0",
            Some(count == 0),
        )
    }

    /// A row with a target; `met` is decided by the caller (it may need the baseline figure).
    pub fn target(
        scenario: &str,
        metric: &str,
        ours: Option<f64>,
        base: Option<f64>,
        target: &str,
        met: Option<bool>,
    ) -> Self {
        Self {
            scenario: scenario.into(),
            metric: metric.into(),
            ours,
            base,
            target: target.into(),
            met,
        }
    }

    /// A row that says why a scenario produced no figures (skipped or failed).
    pub fn note(scenario: &str, text: &str, met: Option<bool>) -> Self {
        Self {
            scenario: scenario.into(),
            metric: text.into(),
            ours: None,
            base: None,
            target: String::new(),
            met,
        }
    }

    fn ratio(&self) -> Option<f64> {
        match (self.ours, self.base) {
            (Some(a), Some(b)) if b != 0.0 => Some(a / b),
            _ => None,
        }
    }
}

/// Formats a figure for humans: thousands separators for large values, a few decimals else.
pub fn fmt_num(v: f64) -> String {
    if !v.is_finite() {
        return v.to_string();
    }
    let abs = v.abs();
    if abs >= 1000.0 {
        let int = v.round() as i64;
        let digits = int.unsigned_abs().to_string();
        let mut out = String::new();
        for (i, c) in digits.chars().enumerate() {
            if i > 0 && (digits.len() - i).is_multiple_of(3) {
                out.push(',');
            }
            out.push(c);
        }
        if int < 0 { format!("-{out}") } else { out }
    } else if abs >= 100.0 || v == v.trunc() {
        format!("{v:.0}")
    } else if abs >= 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

/// Escapes text for a table cell: no pipes, no line breaks.
fn cell(text: &str) -> String {
    text.replace('|', "\\|").replace(['\r', '\n'], " ")
}

/// Renders rows as a GitHub-flavoured markdown table.
pub fn render(rows: &[Row]) -> String {
    let mut out = String::from(
        "| scenario | metric | ssepush | baseline | ratio | target | met? |\n|---|---|---:|---:|---:|---|:---:|\n",
    );
    for row in rows {
        let ours = row.ours.map_or_else(|| "-".into(), fmt_num);
        let base = row.base.map_or_else(|| "n/a".into(), fmt_num);
        let ratio = row.ratio().map_or_else(String::new, |r| format!("{r:.2}"));
        let met = match row.met {
            Some(true) => "yes",
            Some(false) => "**NO**",
            None => "",
        };
        let _ = writeln!(
            out,
            "| {} | {} | {ours} | {base} | {ratio} | {} | {met} |",
            cell(&row.scenario),
            cell(&row.metric),
            cell(&row.target)
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers() {
        assert_eq!(fmt_num(19000.0), "19,000");
        assert_eq!(fmt_num(1234567.4), "1,234,567");
        assert_eq!(fmt_num(250.4), "250");
        assert_eq!(fmt_num(12.34), "12.3");
        assert_eq!(fmt_num(0.456), "0.46");
        assert_eq!(fmt_num(0.0), "0");
    }

    #[test]
    fn ratio_and_na() {
        let rows = [Row::target(
            "idle",
            "open rate (streams/s)",
            Some(4000.0),
            Some(2000.0),
            ">= 2,000",
            Some(true),
        )];
        let table = render(&rows);
        assert!(
            table.contains(
                "| idle | open rate (streams/s) | 4,000 | 2,000 | 2.00 | >= 2,000 | yes |"
            )
        );
        let rows = [Row::info("wide", "deliveries/s", Some(50000.0), None)];
        assert!(render(&rows).contains("| 50,000 | n/a |  |"));
    }
}
