//! The result as a person or a CI system reads it: a table (with the
//! evidence of everything not Kept under it), JSON, or JUnit XML (one
//! testcase per promise and node: a failure for Broken, skipped for Not
//! promised, an error for Indeterminate).

use super::{Row, Run, Status};
use std::fmt::Write as _;

pub fn table(run: &Run) -> String {
    let head = ["PROMISE", "NODE", "KUBELET", "RESULT"];
    let cells: Vec<[String; 4]> = run
        .rows
        .iter()
        .map(|r| {
            [
                r.promise.to_string(),
                r.node.clone(),
                r.kubelet_version
                    .clone()
                    .unwrap_or_else(|| "unknown".into()),
                r.result.label().to_string(),
            ]
        })
        .collect();
    let mut width = head.map(str::len);
    for c in &cells {
        for (w, s) in width.iter_mut().zip(c) {
            *w = (*w).max(s.len());
        }
    }
    let mut out = String::new();
    let row = |out: &mut String, c: [&str; 4]| {
        let _ = writeln!(
            out,
            "{:w0$}  {:w1$}  {:w2$}  {}",
            c[0],
            c[1],
            c[2],
            c[3],
            w0 = width[0],
            w1 = width[1],
            w2 = width[2]
        );
    };
    row(&mut out, head);
    for c in &cells {
        row(&mut out, [&c[0], &c[1], &c[2], &c[3]]);
    }
    let not_kept: Vec<&Row> = run
        .rows
        .iter()
        .filter(|r| r.result != Status::Kept)
        .collect();
    if !not_kept.is_empty() {
        out.push_str("\nEVIDENCE\n");
        for r in not_kept {
            let _ = writeln!(out, "  {} on {}: {}", r.promise, r.node, r.result.label());
            for b in &r.known_bugs {
                let _ = writeln!(out, "    known kubelet bug: {b}");
            }
            for e in &r.evidence {
                let _ = writeln!(out, "    - {e}");
            }
        }
    }
    let count = |s: Status| run.rows.iter().filter(|r| r.result == s).count();
    let _ = writeln!(
        out,
        "\n{} kept, {} broken, {} indeterminate, {} not promised ({} in {}s, namespace {})",
        count(Status::Kept),
        count(Status::Broken),
        count(Status::Indeterminate),
        count(Status::NotPromised),
        plural(run.rows.len(), "check"),
        run.seconds,
        run.namespace
    );
    out
}

fn plural(n: usize, what: &str) -> String {
    if n == 1 {
        format!("1 {what}")
    } else {
        format!("{n} {what}s")
    }
}

pub fn json(run: &Run) -> String {
    serde_json::to_string_pretty(run).expect("a run serializes") + "\n"
}

/// XML text and attribute escaping.
fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            // Not allowed in XML 1.0.
            c if (c as u32) < 0x20 && !matches!(c, '\n' | '\r' | '\t') => {}
            c => out.push(c),
        }
    }
    out
}

/// JUnit XML: one testsuite per node, one testcase per promise.
pub fn junit(run: &Run) -> String {
    let count = |rows: &[&Row], s: Status| rows.iter().filter(|r| r.result == s).count();
    let all: Vec<&Row> = run.rows.iter().collect();
    let mut out = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
    let _ = writeln!(
        out,
        "<testsuites name=\"sidecar-order conformance\" tests=\"{}\" failures=\"{}\" errors=\"{}\" skipped=\"{}\" time=\"{}\">",
        all.len(),
        count(&all, Status::Broken),
        count(&all, Status::Indeterminate),
        count(&all, Status::NotPromised),
        run.seconds
    );
    let mut nodes: Vec<&str> = Vec::new();
    for r in &run.rows {
        if !nodes.contains(&r.node.as_str()) {
            nodes.push(&r.node);
        }
    }
    for node in nodes {
        let rows: Vec<&Row> = run.rows.iter().filter(|r| r.node == node).collect();
        let kubelet = rows
            .first()
            .and_then(|r| r.kubelet_version.clone())
            .unwrap_or_else(|| "unknown".into());
        let _ = writeln!(
            out,
            "  <testsuite name=\"{}\" tests=\"{}\" failures=\"{}\" errors=\"{}\" skipped=\"{}\" time=\"{}\">",
            esc(&format!("{node} (kubelet {kubelet})")),
            rows.len(),
            count(&rows, Status::Broken),
            count(&rows, Status::Indeterminate),
            count(&rows, Status::NotPromised),
            rows.iter().map(|r| r.seconds).max().unwrap_or(0)
        );
        let _ = writeln!(
            out,
            "    <properties><property name=\"kubeletVersion\" value=\"{}\"/><property name=\"namespace\" value=\"{}\"/><property name=\"image\" value=\"{}\"/></properties>",
            esc(&kubelet),
            esc(&run.namespace),
            esc(&run.image)
        );
        for r in rows {
            let _ = write!(
                out,
                "    <testcase classname=\"{}\" name=\"{}\" time=\"{}\"",
                esc(&format!("sidecar-order.conformance.{node}")),
                esc(r.promise),
                r.seconds
            );
            let body = r
                .known_bugs
                .iter()
                .map(|b| format!("known kubelet bug: {b}"))
                .chain(r.evidence.iter().cloned())
                .collect::<Vec<_>>()
                .join("\n");
            let first = r.evidence.first().cloned().unwrap_or_default();
            match r.result {
                Status::Kept => {
                    let _ = writeln!(
                        out,
                        ">\n      <system-out>{}</system-out>\n    </testcase>",
                        esc(&format!("{}\n{body}", r.description))
                    );
                }
                Status::Broken => {
                    let _ = writeln!(
                        out,
                        ">\n      <failure type=\"Broken\" message=\"{}\">{}</failure>\n    </testcase>",
                        esc(&format!("{}: {first}", r.description)),
                        esc(&body)
                    );
                }
                Status::Indeterminate => {
                    let _ = writeln!(
                        out,
                        ">\n      <error type=\"Indeterminate\" message=\"{}\">{}</error>\n    </testcase>",
                        esc(&first),
                        esc(&body)
                    );
                }
                Status::NotPromised => {
                    let _ = writeln!(
                        out,
                        ">\n      <skipped message=\"{}\"/>\n    </testcase>",
                        esc(&first)
                    );
                }
            }
        }
        out.push_str("  </testsuite>\n");
    }
    out.push_str("</testsuites>\n");
    out
}
