//! The human-readable form of a report: summary, violations, probe failures
//! and the containers on one time axis.

use crate::analyze::Analysis;
use crate::report::{Report, Severity};
use k8s_openapi::jiff::Timestamp;
use std::fmt::Write;

const WIDTH: i64 = 50;

fn parse_secs(s: &str) -> Option<i64> {
    s.parse::<Timestamp>().ok().map(|t| t.as_second())
}

/// The Gantt-like chart: one row per container from first start to stop.
fn timeline(out: &mut String, r: &Report) {
    let spans: Vec<(Option<i64>, Option<i64>)> = r
        .containers
        .iter()
        .map(|c| {
            (
                c.first_started_at.as_deref().and_then(parse_secs),
                c.finished_at.as_deref().and_then(parse_secs),
            )
        })
        .collect();
    let t0 = spans.iter().filter_map(|s| s.0).min();
    let probe_times = r
        .probe_failures
        .iter()
        .filter_map(|p| parse_secs(&p.last_time));
    let t1 = spans
        .iter()
        .flat_map(|s| [s.0, s.1])
        .flatten()
        .chain(probe_times)
        .max();
    let name_w = r
        .containers
        .iter()
        .map(|c| c.name.len())
        .max()
        .unwrap_or(9)
        .max(9);
    let (Some(t0), Some(t1)) = (t0, t1) else {
        let _ = writeln!(out, "TIMELINE\n  no container has started yet");
        return;
    };
    let span = (t1 - t0).max(1);
    let per_col = (span + WIDTH - 1) / WIDTH;
    let cols = span / per_col + 1;
    let _ = writeln!(
        out,
        "TIMELINE  (0s = {}, one column = {per_col}s)",
        crate::time::rfc3339(t0)
    );
    let _ = writeln!(
        out,
        "  {:<name_w$}  {:<7}  {:>8}  {:>6}  {:>6}  |0s",
        "CONTAINER", "ROLE", "RESTARTS", "START", "STOP"
    );
    for (c, (start, stop)) in r.containers.iter().zip(&spans) {
        let mut bar = vec![' '; cols as usize];
        if let Some(s) = start {
            let col = |t: i64| ((t.max(t0) - t0) / per_col).min(cols - 1) as usize;
            let a = col(*s);
            // A stop before the start (odd input) is drawn at the start.
            let b = stop.map_or(cols as usize - 1, |e| col(e).max(a));
            for cell in bar.iter_mut().take(b + 1).skip(a) {
                *cell = '=';
            }
            bar[a] = '[';
            if stop.is_some() {
                bar[b] = ']';
            } else if b > a {
                bar[b] = '>';
            }
        }
        let rel = |t: &Option<i64>| t.map_or("-".to_string(), |t| format!("+{}s", t - t0));
        let _ = writeln!(
            out,
            "  {:<name_w$}  {:<7}  {:>8}  {:>6}  {:>6}  |{}",
            c.name,
            format!("{:?}", c.role),
            c.restarts,
            rel(start),
            rel(stop),
            bar.iter().collect::<String>().trim_end()
        );
    }
}

pub fn table(a: &Analysis) -> String {
    let r = &a.report;
    let mut out = String::new();
    let _ = writeln!(out, "POD       {}/{}", a.namespace, a.name);
    let _ = writeln!(out, "SIDECARS  {}", r.sidecars);
    if let Some(k) = a.kubelet {
        let _ = writeln!(out, "KUBELET   {k}");
    }
    let _ = writeln!(out, "STARTUP   {:?}", r.startup);
    let _ = writeln!(out, "SHUTDOWN  {:?}", r.shutdown);
    match a.events {
        Some((used, other)) => writeln!(
            out,
            "EVIDENCE  {:?} ({used} events used, {other} about other objects ignored)",
            r.evidence
        ),
        None => writeln!(out, "EVIDENCE  {:?}", r.evidence),
    }
    .ok();
    for g in &r.gaps {
        let _ = writeln!(out, "  - {g}");
    }
    let _ = writeln!(out, "\nVIOLATIONS");
    if r.violations.is_empty() {
        let _ = writeln!(out, "  none");
    }
    for v in &r.violations {
        let sev = match v.severity {
            Severity::Error => "ERROR",
            Severity::Warning => "WARNING",
        };
        let _ = writeln!(out, "  {sev:<7}  {}: {}", v.rule.id(), v.message);
        for e in &v.evidence {
            let _ = writeln!(out, "           - {e}");
        }
    }
    // Why a check could not be decided (error-severity rules: they make a
    // phase Indeterminate).
    let undecided: Vec<&crate::report::Check> = r
        .checks
        .iter()
        .filter(|c| {
            c.outcome == crate::report::Outcome::Indeterminate
                && c.rule.severity() == Severity::Error
        })
        .collect();
    if !undecided.is_empty() {
        let _ = writeln!(out, "\nUNDECIDED");
        for c in undecided.iter().take(5) {
            let _ = writeln!(
                out,
                "  {} {}: {}",
                c.rule.id(),
                c.containers.join(" < "),
                c.why
                    .as_deref()
                    .unwrap_or("no source orders the two moments")
            );
        }
        if undecided.len() > 5 {
            let _ = writeln!(
                out,
                "  ... {} more (-o json lists every check)",
                undecided.len() - 5
            );
        }
    }
    if !r.probe_failures.is_empty() {
        let _ = writeln!(out, "\nPROBE FAILURES");
        for p in &r.probe_failures {
            let _ = writeln!(
                out,
                "  {}  {}  x{}  first {}  last {}",
                p.container,
                p.probe.as_str(),
                p.count,
                p.first_time,
                p.last_time
            );
        }
    }
    out.push('\n');
    timeline(&mut out, r);
    out
}
