//! The PromQL inside a Grafana dashboard: every `expr`, with Grafana's
//! variables replaced by what Prometheus understands, and the metric names
//! each one reads.

use std::collections::BTreeSet;
use std::path::Path;

use serde_json::Value;

/// What `$__rate_interval` becomes: several 1 s scrapes, well inside a
/// test's traffic.
pub const RATE_INTERVAL: &str = "30s";

/// One query of one panel.
#[derive(Debug, Clone)]
pub struct PanelQuery {
    pub panel: String,
    pub expr: String,
}

/// Every target's `expr` in the dashboard (panels nested in rows too), with
/// `$__rate_interval` replaced. Any other `$variable` is an error: the test
/// would not know what to put there.
pub fn dashboard_queries(path: &Path) -> Vec<PanelQuery> {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let dashboard: Value =
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut queries = Vec::new();
    collect(&dashboard["panels"], &mut queries);
    for q in &mut queries {
        q.expr = q.expr.replace("$__rate_interval", RATE_INTERVAL);
        assert!(
            !q.expr.contains('$'),
            "panel {:?}: unknown Grafana variable in {:?}",
            q.panel,
            q.expr
        );
    }
    queries
}

fn collect(panels: &Value, out: &mut Vec<PanelQuery>) {
    for panel in panels.as_array().into_iter().flatten() {
        let title = panel["title"].as_str().unwrap_or("(untitled)");
        for target in panel["targets"].as_array().into_iter().flatten() {
            if let Some(expr) = target["expr"].as_str() {
                out.push(PanelQuery {
                    panel: title.to_owned(),
                    expr: expr.to_owned(),
                });
            }
        }
        collect(&panel["panels"], out);
    }
}

/// Words that are PromQL syntax, not metric names (aggregations too: they
/// may be followed by `by (…)` rather than `(`).
const KEYWORDS: &[&str] = &[
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
    "and",
    "or",
    "unless",
    "bool",
    "offset",
    "inf",
    "nan",
    "sum",
    "min",
    "max",
    "avg",
    "group",
    "stddev",
    "stdvar",
    "count",
    "count_values",
    "bottomk",
    "topk",
    "quantile",
];

/// The metric names an expression reads: identifiers outside strings,
/// label matchers `{…}`, ranges `[…]` and label lists `by (…)`, that are
/// neither functions (followed by `(`) nor keywords.
pub fn metric_names(expr: &str) -> BTreeSet<String> {
    let chars: Vec<char> = expr.chars().collect();
    let mut names = BTreeSet::new();
    let mut previous_word = String::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c == '"' || c == '\'' || c == '`' {
            i = skip_string(&chars, i);
        } else if c == '{' {
            i = skip_to(&chars, i, '}');
        } else if c == '[' {
            i = skip_to(&chars, i, ']');
        } else if c == '(' && is_label_list(&previous_word) {
            i = skip_to(&chars, i, ')');
            previous_word.clear();
        } else if c.is_ascii_alphabetic() || c == '_' || c == ':' {
            let start = i;
            while i < chars.len() && (chars[i].is_ascii_alphanumeric() || "_:".contains(chars[i])) {
                i += 1;
            }
            let word: String = chars[start..i].iter().collect();
            let next = chars[i..].iter().find(|c| !c.is_whitespace());
            let lower = word.to_ascii_lowercase();
            if next != Some(&'(') && !KEYWORDS.contains(&lower.as_str()) {
                names.insert(word.clone());
            }
            previous_word = lower;
            continue;
        } else if c.is_ascii_digit() {
            // A number (1, 0.95, 1e3, 0x1f): letters inside it are no name.
            while i < chars.len() && (chars[i].is_ascii_alphanumeric() || chars[i] == '.') {
                i += 1;
            }
            continue;
        } else if !c.is_whitespace() {
            previous_word.clear();
        }
        i += 1;
    }
    names
}

fn is_label_list(word: &str) -> bool {
    matches!(
        word,
        "by" | "without" | "on" | "ignoring" | "group_left" | "group_right"
    )
}

/// Index just past the closing quote of the string starting at `start`.
fn skip_string(chars: &[char], start: usize) -> usize {
    let quote = chars[start];
    let mut i = start + 1;
    while i < chars.len() && chars[i] != quote {
        if chars[i] == '\\' && quote != '`' {
            i += 1;
        }
        i += 1;
    }
    i + 1
}

/// Index just past the first `close` after `start`, skipping strings.
fn skip_to(chars: &[char], start: usize, close: char) -> usize {
    let mut i = start + 1;
    while i < chars.len() && chars[i] != close {
        if chars[i] == '"' || chars[i] == '\'' || chars[i] == '`' {
            i = skip_string(chars, i);
        } else {
            i += 1;
        }
    }
    i + 1
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(expr: &str) -> Vec<String> {
        metric_names(expr).into_iter().collect()
    }

    #[test]
    fn finds_metrics_not_functions_labels_or_keywords() {
        assert_eq!(
            names(
                r#"histogram_quantile(0.99, sum by (le, route) (rate(a_bucket{route=~"/nar.*", x="}"}[30s])))"#
            ),
            ["a_bucket"]
        );
        assert_eq!(
            names("sum(rate(a_total[1m])) / sum(rate(b_total[1m])) or on (job) c * 0"),
            ["a_total", "b_total", "c"]
        );
        assert_eq!(
            names("max without (instance) (up offset 5m) > bool 1e3"),
            ["up"]
        );
        assert_eq!(names("sum by(code)(rate(x:y:z[5m]))"), ["x:y:z"]);
        assert!(names("1 + 2").is_empty());
    }
}
