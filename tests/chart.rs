//! The Helm chart's copies of generated and shared files, and a lint of the
//! Grafana dashboard by the rules of Grafana's dashboard-linter (that tool
//! itself depends on AGPL modules this project does not build: see README).

use serde_json::Value;
use std::collections::HashSet;

const ROOT: &str = env!("CARGO_MANIFEST_DIR");
const DASHBOARD: &str = "config/grafana/sidecar-order-dashboard.json";

fn read(path: &str) -> String {
    std::fs::read_to_string(format!("{ROOT}/{path}")).unwrap_or_else(|e| panic!("{path}: {e}"))
}

#[test]
fn chart_crd_is_the_generated_one() {
    let dir = format!("{ROOT}/charts/sidecar-order/crds");
    let files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(files, ["sidecarorderreports.yaml"], "{dir} holds one CRD");
    assert!(
        read("charts/sidecar-order/crds/sidecarorderreports.yaml")
            == sidecar_order::crd::crd_yaml(),
        "charts/sidecar-order/crds/sidecarorderreports.yaml is stale: run `make crds` and commit it"
    );
}

#[test]
fn chart_dashboard_and_alerts_are_copies_of_config() {
    for (copy, source) in [
        (
            "charts/sidecar-order/files/sidecar-order-dashboard.json",
            DASHBOARD,
        ),
        (
            "charts/sidecar-order/files/rules.yaml",
            "config/prometheus/rules.yaml",
        ),
    ] {
        let meta = std::fs::symlink_metadata(format!("{ROOT}/{copy}")).unwrap();
        assert!(
            meta.file_type().is_file(),
            "{copy} must be a file, not a link (helm package)"
        );
        assert!(
            read(copy) == read(source),
            "{copy} differs from {source}: cp {source} {copy}"
        );
    }
}

fn dashboard() -> Value {
    serde_json::from_str(&read(DASHBOARD)).unwrap()
}

/// Every panel, rows' nested panels included, in order.
fn panels(d: &Value) -> Vec<&Value> {
    fn walk<'a>(list: &'a Value, out: &mut Vec<&'a Value>) {
        for p in list.as_array().into_iter().flatten() {
            out.push(p);
            walk(&p["panels"], out);
        }
    }
    let mut out = Vec::new();
    walk(&d["panels"], &mut out);
    out
}

fn exprs(p: &Value) -> Vec<&str> {
    p["targets"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|t| t["expr"].as_str())
        .collect()
}

#[test]
fn queries_txt_holds_every_panel_query() {
    let from_dashboard: Vec<String> = panels(&dashboard())
        .into_iter()
        .flat_map(exprs)
        // Prometheus alone (the e2e check) has no Grafana variable for the range.
        .map(|e| e.replace("$__rate_interval", "5m"))
        .collect();
    let listed: Vec<String> = read("config/grafana/queries.txt")
        .lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
        .map(str::to_string)
        .collect();
    assert_eq!(listed, from_dashboard, "config/grafana/queries.txt");
}

/// The call a `[range]` or metric at `at` sits directly in: `rate` for
/// `rate(m{..}[5m])`.
fn enclosing_call(expr: &str, at: usize) -> &str {
    let mut depth = 0;
    for (i, c) in expr[..at].char_indices().rev() {
        match c {
            ')' => depth += 1,
            '(' if depth == 0 => {
                let head = expr[..i].trim_end();
                let start = head
                    .rfind(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                    .map_or(0, |s| s + 1);
                return &head[start..];
            }
            '(' => depth -= 1,
            _ => {}
        }
    }
    ""
}

/// Metric names in an expression (not label names, values, or functions).
fn metrics(expr: &str) -> Vec<(usize, &str)> {
    let mut out = Vec::new();
    let (mut i, mut in_braces, mut in_string) = (0, false, false);
    let b = expr.as_bytes();
    while i < b.len() {
        let c = b[i] as char;
        if in_string {
            in_string = c != '"';
        } else if c == '"' {
            in_string = true;
        } else if c == '{' || c == '}' {
            in_braces = c == '{';
        } else if !in_braces && (c.is_ascii_alphabetic() || c == '_') {
            let start = i;
            while i < b.len() && ((b[i] as char).is_ascii_alphanumeric() || b[i] == b'_') {
                i += 1;
            }
            let word = &expr[start..i];
            let next = expr[i..].trim_start().chars().next();
            if word.starts_with("sidecar_order_") && next != Some('(') {
                out.push((start, word));
            }
            continue;
        }
        i += 1;
    }
    out
}

/// dashboard-linter's rules that apply to a Prometheus dashboard; each
/// finding is `rule: panel: what`. Exceptions live in config/grafana/.lint.
fn lint(d: &Value) -> Vec<String> {
    let mut found = Vec::new();
    let mut report =
        |rule: &str, panel: &str, what: String| found.push(format!("{rule}: {panel}: {what}"));
    let vars = d["templating"]["list"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let ds: Vec<&Value> = vars.iter().filter(|v| v["type"] == "datasource").collect();
    match ds.as_slice() {
        [v] if v["name"] == "datasource"
            && v["label"] == "Data source"
            && v["query"] == "prometheus" => {}
        _ => report(
            "template-datasource-rule",
            "",
            "one Prometheus variable `datasource`, labelled `Data source`".into(),
        ),
    }
    for v in vars.iter().filter(|v| v["type"] == "query") {
        if v["refresh"] != 2 {
            report(
                "template-on-time-change-reload-rule",
                "",
                format!("variable {} must have refresh 2", v["name"]),
            );
        }
    }
    if d["editable"] != false {
        report("uneditable-dashboard", "", "set editable: false".into());
    }
    // The units Grafana knows that this dashboard may use.
    let units: HashSet<&str> = [
        "none",
        "short",
        "percent",
        "percentunit",
        "s",
        "ms",
        "ops",
        "reqps",
        "bytes",
    ]
    .into();
    for p in panels(d).into_iter().filter(|p| p["type"] != "row") {
        let title = p["title"].as_str().unwrap_or_default();
        if title.is_empty() || p["description"].as_str().unwrap_or_default().is_empty() {
            report(
                "panel-title-description-rule",
                title,
                "needs a title and a description".into(),
            );
        }
        let uid = p["datasource"]["uid"].as_str().unwrap_or_default();
        if uid != "${datasource}" && uid != "$datasource" {
            report(
                "panel-datasource-rule",
                title,
                format!("uses datasource `{uid}`"),
            );
        }
        let targets = exprs(p);
        if targets.is_empty() {
            report("panel-no-targets-rule", title, "has no query".into());
        }
        if ["stat", "singlestat", "graph", "timeseries", "gauge"]
            .contains(&p["type"].as_str().unwrap_or_default())
        {
            let unit = p["fieldConfig"]["defaults"]["unit"]
                .as_str()
                .unwrap_or_default();
            if !units.contains(unit) {
                report("panel-units-rule", title, format!("unit `{unit}`"));
            }
        }
        for e in targets {
            for (at, _) in e.match_indices('[') {
                let call = enclosing_call(e, at);
                let range = &e[at..=at + e[at..].find(']').unwrap()];
                if (call == "rate" || call == "irate") && range != "[$__rate_interval]" {
                    report(
                        "target-rate-interval-rule",
                        title,
                        format!("{call} over {range} in `{e}`"),
                    );
                }
            }
            for (at, m) in metrics(e) {
                // What follows the selector (and its {labels}): a [range] or not.
                let after = e[at + m.len()..].trim_start();
                let ranged = match after.strip_prefix('{') {
                    Some(labels) => labels
                        .split_once('}')
                        .map_or("", |(_, rest)| rest.trim_start()),
                    None => after,
                };
                let call = enclosing_call(e, at);
                if m.ends_with("_total")
                    && !(ranged.starts_with('[') && ["rate", "irate", "increase"].contains(&call))
                {
                    report(
                        "target-counter-agg-rule",
                        title,
                        format!("counter {m} is not in rate, irate or increase"),
                    );
                }
            }
        }
    }
    found
}

/// The rules and panels config/grafana/.lint excludes (every panel when it names none).
fn exclusions() -> Vec<(String, Option<String>)> {
    let lint: Value = serde_saphyr::from_str(&read("config/grafana/.lint")).unwrap();
    let mut out = Vec::new();
    for (rule, what) in lint["exclusions"].as_object().unwrap() {
        match what["entries"].as_array() {
            Some(entries) => out.extend(
                entries
                    .iter()
                    .map(|e| (rule.clone(), e["panel"].as_str().map(str::to_string))),
            ),
            None => out.push((rule.clone(), None)),
        }
        assert!(
            what["reason"].as_str().is_some_and(|r| !r.is_empty()),
            "{rule}: an exclusion needs a reason"
        );
    }
    out
}

#[test]
fn dashboard_passes_the_dashboard_linter_rules() {
    let excluded = exclusions();
    let found: Vec<String> = lint(&dashboard())
        .into_iter()
        .filter(|f| {
            let mut parts = f.splitn(3, ": ");
            let (rule, panel) = (parts.next().unwrap(), parts.next().unwrap());
            !excluded
                .iter()
                .any(|(r, p)| r == rule && p.as_deref().is_none_or(|p| p == panel))
        })
        .collect();
    assert!(found.is_empty(), "{DASHBOARD}:\n{}", found.join("\n"));
}

#[test]
fn the_lint_finds_what_it_should() {
    let d = serde_json::json!({
        "editable": true,
        "templating": {"list": [{"type": "query", "name": "ns", "refresh": 1}]},
        "panels": [{"type": "row", "title": "r", "panels": [
            {"type": "timeseries", "title": "t", "datasource": {"uid": "prom"},
             "fieldConfig": {"defaults": {}},
             "targets": [{"expr": "sum(rate(sidecar_order_x_total{a=\"b\"}[5m])) + sidecar_order_y_total + histogram_quantile(0.9, rate(sidecar_order_z_bucket[$__rate_interval]))"}]}]}]
    });
    let found = lint(&d);
    for rule in [
        "template-datasource-rule: ",
        "template-on-time-change-reload-rule: ",
        "uneditable-dashboard: ",
        "panel-title-description-rule: t",
        "panel-datasource-rule: t",
        "panel-units-rule: t",
        "target-rate-interval-rule: t: rate over [5m]",
        "target-counter-agg-rule: t: counter sidecar_order_y_total",
    ] {
        assert!(
            found.iter().any(|f| f.starts_with(rule)),
            "{rule} not in {found:#?}"
        );
    }
    assert_eq!(found.len(), 8, "{found:#?}");
}
