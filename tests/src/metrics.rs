//! Reading a service's `GET /metrics` (Prometheus text format) the way a
//! scraper would: over HTTP, then one sample per line.

use std::time::Duration;

use crate::WAIT;

/// One scrape: the sample lines of a `/metrics` answer.
#[derive(Debug, Clone)]
pub struct Scrape {
    pub text: String,
}

/// One sample line, `name{label="value",…} value`.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub name: String,
    pub labels: Vec<(String, String)>,
    pub value: f64,
}

/// `GET <base_url>/metrics`; panics unless it answers 200 in Prometheus text.
pub async fn scrape(base_url: &str) -> Scrape {
    let url = format!("{base_url}/metrics");
    let response = tokio::time::timeout(WAIT, reqwest::get(&url))
        .await
        .unwrap_or_else(|_| panic!("{url} answers in time"))
        .unwrap_or_else(|err| panic!("GET {url}: {err}"));
    assert_eq!(response.status(), 200, "GET {url}");
    let content_type = response
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    assert!(
        content_type.starts_with("text/plain; version=0.0.4"),
        "GET {url}: Content-Type {content_type}"
    );
    Scrape {
        text: response.text().await.expect("a text body"),
    }
}

/// Scrapes `base_url` until the sum of `name`'s samples with `labels`
/// satisfies `ok`, and returns that sum; panics with the last scrape after
/// the time bound. For counters that move just after the client saw why.
pub async fn wait_for(
    base_url: &str,
    name: &str,
    labels: &[(&str, &str)],
    ok: impl Fn(f64) -> bool,
) -> f64 {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let scraped = scrape(base_url).await;
        let value = scraped.sum(name, labels);
        if ok(value) {
            return value;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{name}{labels:?} stayed at {value}:\n{}",
            scraped.text
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

impl Scrape {
    /// Every sample, in order; comment lines (`# HELP`, `# TYPE`) skipped.
    pub fn samples(&self) -> Vec<Sample> {
        self.text
            .lines()
            .filter(|line| !line.is_empty() && !line.starts_with('#'))
            .map(|line| parse_line(line).unwrap_or_else(|| panic!("not a sample: {line}")))
            .collect()
    }

    /// The value of the one sample `name` whose labels are exactly `labels`
    /// (in any order).
    pub fn get(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        self.samples()
            .into_iter()
            .find(|s| s.name == name && s.labels.len() == labels.len() && s.has(labels))
            .map(|s| s.value)
    }

    /// The sum over the samples `name` that carry at least `labels`; 0 when
    /// there are none (as for a label value never counted yet).
    pub fn sum(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.samples()
            .into_iter()
            .filter(|s| s.name == name && s.has(labels))
            .map(|s| s.value)
            .sum()
    }
}

impl Sample {
    fn has(&self, labels: &[(&str, &str)]) -> bool {
        labels
            .iter()
            .all(|(k, v)| self.labels.iter().any(|(lk, lv)| lk == k && lv == v))
    }
}

/// Parses `name{k="v",…} value` (labels optional; `\"`, `\\`, `\n` escapes).
fn parse_line(line: &str) -> Option<Sample> {
    let (name, rest) = match line.find(['{', ' ']) {
        Some(at) => line.split_at(at),
        None => return None,
    };
    let mut labels = Vec::new();
    let rest = if let Some(mut rest) = rest.strip_prefix('{') {
        loop {
            rest = rest.trim_start_matches(',');
            if let Some(after) = rest.strip_prefix('}') {
                break after;
            }
            let (key, after) = rest.split_once("=\"")?;
            let mut value = String::new();
            let mut chars = after.char_indices();
            let end = loop {
                match chars.next()? {
                    (i, '"') => break i,
                    (_, '\\') => match chars.next()?.1 {
                        'n' => value.push('\n'),
                        other => value.push(other),
                    },
                    (_, c) => value.push(c),
                }
            };
            labels.push((key.to_string(), value));
            rest = &after[end + 1..];
        }
    } else {
        rest
    };
    let value = match rest.trim() {
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        number => number.parse().ok()?,
    };
    Some(Sample {
        name: name.to_string(),
        labels,
        value,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_parse_with_and_without_labels() {
        let scrape = Scrape {
            text: concat!(
                "# HELP x_total Things.\n",
                "# TYPE x_total counter\n",
                "x_total{type=\"a.b\",result=\"ok\"} 3\n",
                "x_total{type=\"a.b\",result=\"no\"} 4\n",
                "x_total{type=\"q\\\"{,}\",result=\"ok\"} 1\n",
                "up 1\n",
                "h_bucket{le=\"+Inf\"} 2\n",
            )
            .into(),
        };
        assert_eq!(scrape.get("up", &[]), Some(1.0));
        assert_eq!(
            scrape.get("x_total", &[("result", "ok"), ("type", "a.b")]),
            Some(3.0)
        );
        assert_eq!(scrape.get("x_total", &[("type", "a.b")]), None, "exact");
        assert_eq!(scrape.sum("x_total", &[("type", "a.b")]), 7.0);
        assert_eq!(scrape.sum("x_total", &[("type", "q\"{,}")]), 1.0);
        assert_eq!(scrape.sum("missing", &[]), 0.0);
        assert_eq!(scrape.get("h_bucket", &[("le", "+Inf")]), Some(2.0));
    }
}
