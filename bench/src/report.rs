//! The result of one scenario as one JSON line, and the files it goes to: appended to
//! `results.jsonl`, and `results.md` rewritten as a table of every line in it.

use std::{
    fs::{self, OpenOptions},
    io::Write as _,
    path::Path,
};

use anyhow::Context as _;
use serde::Serialize;
use serde_json::{Map, Value};

use crate::{
    recorder::Latency,
    usage::{OtherBusy, Usage},
};

/// One scenario's numbers. Fields that do not apply are `null`; scenario-specific numbers go
/// in `extra`, flattened into the line.
#[derive(Debug, Clone, Default, Serialize)]
pub(crate) struct Report {
    pub(crate) scenario: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) error: Option<String>,
    pub(crate) sockets: usize,
    pub(crate) events_published: u64,
    pub(crate) deliveries_expected: u64,
    pub(crate) delivered: u64,
    pub(crate) lost: u64,
    pub(crate) duplicated: u64,
    pub(crate) deliveries_per_sec: Option<f64>,
    pub(crate) latency_ms: Option<Latency>,
    pub(crate) server_rss_per_socket_bytes: Option<f64>,
    pub(crate) server_cpu_us_per_delivery: Option<f64>,
    pub(crate) server_cpu_cores: Option<f64>,
    pub(crate) loadgen_cpu_cores: Option<f64>,
    pub(crate) other_busy: Option<OtherBusy>,
    pub(crate) publish_errors: u64,
    pub(crate) wall_seconds: f64,
    #[serde(flatten)]
    pub(crate) extra: Map<String, Value>,
}

impl Report {
    pub(crate) fn new(scenario: &str) -> Self {
        Self {
            scenario: scenario.to_owned(),
            ..Self::default()
        }
    }

    /// The CPU a window used: servers, load generator, other processes, and the
    /// servers' cores by process (`server_cpu_cores_by_process`).
    pub(crate) fn cpu(&mut self, usage: &Usage) {
        self.server_cpu_cores = Some(usage.server_cores());
        self.loadgen_cpu_cores = Some(usage.loadgen_cores());
        self.other_busy = Some(usage.other_busy());
        self.extra("server_cpu_cores_by_process", usage.cores_by_process());
    }

    /// Adds a scenario-specific field.
    pub(crate) fn extra(&mut self, key: &str, value: impl Serialize) {
        let value = serde_json::to_value(value).unwrap_or(Value::Null);
        self.extra.insert(key.to_owned(), value);
    }

    /// The line, fields in declaration order (extras last), floats rounded to 3 decimals.
    pub(crate) fn to_line(&self) -> String {
        let mut rounded = self.clone();
        for x in [
            &mut rounded.deliveries_per_sec,
            &mut rounded.server_rss_per_socket_bytes,
            &mut rounded.server_cpu_us_per_delivery,
            &mut rounded.server_cpu_cores,
            &mut rounded.loadgen_cpu_cores,
        ]
        .into_iter()
        .flatten()
        {
            *x = round(*x);
        }
        if let Some(latency) = &mut rounded.latency_ms {
            for x in [
                &mut latency.p50,
                &mut latency.p90,
                &mut latency.p99,
                &mut latency.max,
            ] {
                *x = round(*x);
            }
        }
        if let Some(other) = &mut rounded.other_busy {
            other.cpu_seconds = round(other.cpu_seconds);
            other.cores = round(other.cores);
            other.steal_cores = round(other.steal_cores);
            other.softirq_cores = round(other.softirq_cores);
        }
        rounded.wall_seconds = round(rounded.wall_seconds);
        rounded.extra.values_mut().for_each(round_floats);
        serde_json::to_string(&rounded).unwrap_or_default()
    }
}

fn round(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

fn round_floats(value: &mut Value) {
    match value {
        Value::Number(n) if n.is_f64() => {
            *value = round(n.as_f64().unwrap_or(0.0)).into();
        }
        Value::Array(items) => items.iter_mut().for_each(round_floats),
        Value::Object(fields) => fields.values_mut().for_each(round_floats),
        _ => {}
    }
}

/// Appends `line` to `<out>/results.jsonl` and rewrites `<out>/results.md` from all its lines.
pub(crate) fn write(out: &Path, line: &str) -> anyhow::Result<()> {
    fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    let jsonl = out.join("results.jsonl");
    let mut file = OpenOptions::new()
        .create(true)
        .append(true)
        .open(&jsonl)
        .with_context(|| format!("opening {}", jsonl.display()))?;
    writeln!(file, "{line}").with_context(|| format!("writing {}", jsonl.display()))?;
    let all = fs::read_to_string(&jsonl).with_context(|| format!("reading {}", jsonl.display()))?;
    let lines: Vec<Value> = all
        .lines()
        .filter_map(|line| serde_json::from_str(line).ok())
        .collect();
    let md = out.join("results.md");
    fs::write(&md, markdown(&lines)).with_context(|| format!("writing {}", md.display()))
}

/// The columns of the table: (header, JSON pointer).
const COLUMNS: [(&str, &str); 19] = [
    ("scenario", "/scenario"),
    ("sockets", "/sockets"),
    ("events", "/events_published"),
    ("expected", "/deliveries_expected"),
    ("delivered", "/delivered"),
    ("lost", "/lost"),
    ("dup", "/duplicated"),
    ("deliveries/s", "/deliveries_per_sec"),
    ("p50 ms", "/latency_ms/p50"),
    ("p90 ms", "/latency_ms/p90"),
    ("p99 ms", "/latency_ms/p99"),
    ("max ms", "/latency_ms/max"),
    ("RSS B/socket", "/server_rss_per_socket_bytes"),
    ("server µs/delivery", "/server_cpu_us_per_delivery"),
    ("server cores", "/server_cpu_cores"),
    ("loadgen cores", "/loadgen_cpu_cores"),
    ("other busy cores", "/other_busy/cores"),
    ("publish errors", "/publish_errors"),
    ("wall s", "/wall_seconds"),
];

/// Every column above, then the scenario's scalar extras and any error in a last column.
fn markdown(lines: &[Value]) -> String {
    let mut md = String::from("# herald-bench results\n\n|");
    for (header, _) in COLUMNS {
        md.push_str(&format!(" {header} |"));
    }
    md.push_str(" notes |\n|");
    for _ in 0..=COLUMNS.len() {
        md.push_str(" --- |");
    }
    md.push('\n');
    for line in lines {
        md.push('|');
        for (_, pointer) in COLUMNS {
            let cell = line.pointer(pointer).map_or(String::new(), cell);
            md.push_str(&format!(" {cell} |"));
        }
        md.push_str(&format!(" {} |\n", notes(line)));
    }
    md
}

fn cell(value: &Value) -> String {
    match value {
        Value::Null => String::new(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// `key=value` for every scalar field not in a column, plus `error`.
fn notes(line: &Value) -> String {
    let Some(fields) = line.as_object() else {
        return String::new();
    };
    let in_columns: Vec<&str> = COLUMNS
        .iter()
        .map(|(_, pointer)| {
            pointer
                .trim_start_matches('/')
                .split('/')
                .next()
                .unwrap_or("")
        })
        .collect();
    fields
        .iter()
        .filter(|(key, value)| {
            !in_columns.contains(&key.as_str())
                && !matches!(value, Value::Array(_) | Value::Object(_) | Value::Null)
        })
        .map(|(key, value)| format!("{key}={}", cell(value)).replace('|', "\\|"))
        .collect::<Vec<_>>()
        .join(", ")
}
