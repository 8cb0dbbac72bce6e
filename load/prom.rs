//! The controller's /metrics, read generically: samples by name and labels,
//! sums over label sets, histogram quantiles from bucket counts. Label
//! names and values (e.g. the result classes of the report writes) are not
//! assumed beyond what each figure needs.

use std::collections::BTreeMap;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

pub type Labels = BTreeMap<String, String>;

/// One scrape: every sample of the text format.
#[derive(Clone, Debug, Default)]
pub struct Scrape {
    pub samples: Vec<(String, Labels, f64)>,
}

/// Report-write result classes counted as a successful write of a report.
/// Every other class is printed as an error class.
pub const WRITTEN: &[&str] = &[
    "written", "created", "updated", "applied", "patched", "ok", "success",
];
/// Successful deletions (GC), not writes of a state change.
pub const DELETED: &[&str] = &["deleted", "removed", "collected"];

/// GET http://ADDR/PATH over HTTP/1.0: the status code and the body.
pub async fn get(addr: &str, path: &str) -> std::io::Result<(u16, String)> {
    let io = async {
        let mut s = TcpStream::connect(addr).await?;
        s.write_all(format!("GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").as_bytes())
            .await?;
        let mut buf = Vec::new();
        s.read_to_end(&mut buf).await?;
        Ok::<_, std::io::Error>(buf)
    };
    let buf = tokio::time::timeout(Duration::from_secs(10), io)
        .await
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "no answer in 10 s"))??;
    let text = String::from_utf8_lossy(&buf);
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let code = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    Ok((code, body.to_string()))
}

pub async fn scrape(addr: &str) -> std::io::Result<Scrape> {
    let (code, body) = get(addr, "/metrics").await?;
    if code != 200 {
        return Err(std::io::Error::other(format!("/metrics answered {code}")));
    }
    Ok(parse(&body))
}

/// Parses the Prometheus text format (no escapes beyond \" and \\ needed).
pub fn parse(text: &str) -> Scrape {
    let mut samples = Vec::new();
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (name, labels, rest) = match line.find('{') {
            Some(i) => {
                let Some(j) = line.rfind('}') else { continue };
                (&line[..i], parse_labels(&line[i + 1..j]), &line[j + 1..])
            }
            None => {
                let Some((n, r)) = line.split_once(' ') else {
                    continue;
                };
                (n, Labels::new(), r)
            }
        };
        let Some(value) = rest
            .split_whitespace()
            .next()
            .and_then(|v| v.parse::<f64>().ok())
        else {
            continue;
        };
        samples.push((name.to_string(), labels, value));
    }
    Scrape { samples }
}

fn parse_labels(s: &str) -> Labels {
    let mut out = Labels::new();
    let mut rest = s;
    while let Some(eq) = rest.find('=') {
        let key = rest[..eq].trim().trim_start_matches(',').trim().to_string();
        let after = &rest[eq + 1..];
        let Some(body) = after.strip_prefix('"') else {
            break;
        };
        let mut value = String::new();
        let mut chars = body.char_indices();
        let mut end = body.len();
        while let Some((i, c)) = chars.next() {
            match c {
                '\\' => {
                    if let Some((_, n)) = chars.next() {
                        value.push(if n == 'n' { '\n' } else { n });
                    }
                }
                '"' => {
                    end = i + 1;
                    break;
                }
                c => value.push(c),
            }
        }
        out.insert(key, value);
        rest = &body[end..];
    }
    out
}

impl Scrape {
    pub fn has(&self, name: &str) -> bool {
        self.samples.iter().any(|(n, _, _)| n == name)
    }

    /// Sum of `name` over the label sets that `keep` accepts.
    pub fn sum(&self, name: &str, keep: impl Fn(&Labels) -> bool) -> f64 {
        self.samples
            .iter()
            .filter(|(n, l, _)| n == name && keep(l))
            .map(|(_, _, v)| v)
            .sum()
    }

    /// `name` summed per value of `label`.
    pub fn by(&self, name: &str, label: &str) -> BTreeMap<String, f64> {
        let mut out = BTreeMap::new();
        for (n, l, v) in &self.samples {
            if n == name {
                let k = l.get(label).cloned().unwrap_or_default();
                *out.entry(k).or_insert(0.0) += v;
            }
        }
        out
    }

    /// Cumulative bucket counts of histogram `name` (summed over its other
    /// labels), by upper bound, +Inf last.
    pub fn buckets(&self, name: &str) -> Vec<(f64, f64)> {
        let mut by: BTreeMap<u64, (f64, f64)> = BTreeMap::new();
        for (n, l, v) in &self.samples {
            if n.strip_suffix("_bucket") != Some(name) {
                continue;
            }
            let Some(le) = l.get("le") else { continue };
            let le = if le == "+Inf" {
                f64::INFINITY
            } else {
                le.parse().unwrap_or(f64::INFINITY)
            };
            by.entry(le.to_bits()).or_insert((le, 0.0)).1 += v;
        }
        let mut out: Vec<(f64, f64)> = by.into_values().collect();
        out.sort_by(|a, b| a.0.total_cmp(&b.0));
        out
    }
}

/// Bucket counts of `later` minus `earlier` (the same process, or none).
pub fn bucket_delta(later: &[(f64, f64)], earlier: Option<&[(f64, f64)]>) -> Vec<(f64, f64)> {
    later
        .iter()
        .map(|(le, c)| {
            let before = earlier
                .and_then(|e| e.iter().find(|(l, _)| l == le))
                .map_or(0.0, |(_, c)| *c);
            (*le, c - before)
        })
        .collect()
}

/// The q-quantile of cumulative buckets, interpolated linearly inside its
/// bucket as Prometheus' histogram_quantile does. `None` without
/// observations; a quantile in the +Inf bucket is the highest finite bound
/// (printed with ">").
pub fn quantile(buckets: &[(f64, f64)], q: f64) -> Option<(f64, bool)> {
    let total = buckets.last()?.1;
    if total <= 0.0 {
        return None;
    }
    let rank = q * total;
    let (mut lower, mut below) = (0.0, 0.0);
    for &(le, count) in buckets {
        if count >= rank {
            if le.is_infinite() {
                return Some((lower, true));
            }
            let inside = count - below;
            let frac = if inside > 0.0 {
                (rank - below) / inside
            } else {
                1.0
            };
            return Some((lower + (le - lower) * frac, false));
        }
        lower = le;
        below = count;
    }
    Some((lower, true))
}
