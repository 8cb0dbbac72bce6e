//! Table-driven: every directory under tests/fixtures holds a pod and its
//! events as kubectl prints them, and the verdict the engine must reach.

use k8s_openapi::api::core::v1::{Event, Pod};
use serde_json::Value;
use sidecar_order::analyze::{analyze, analyze_on};
use sidecar_order::cli::exit_code;
use sidecar_order::controller::store::Store;
use sidecar_order::input;
use sidecar_order::judge::Config;
use sidecar_order::kubelet::KubeletVersion;
use std::collections::BTreeMap;
use std::path::Path;

fn check(dir: &Path) -> Result<(), String> {
    let read = |f: &str| std::fs::read_to_string(dir.join(f)).map_err(|e| e.to_string());
    let pods = input::pods("pod.json", &read("pod.json")?).map_err(|e| e.to_string())?;
    let events = input::events("events.json", &read("events.json")?).map_err(|e| e.to_string())?;
    let expect: Value = serde_json::from_str(&read("expect.json")?).map_err(|e| e.to_string())?;
    check_on(&pods, &events, &expect, None)?;
    // `kubelet`: per kubelet version, the known bugs the violations must
    // name (and none other), and verdicts where they differ from the
    // version-less ones.
    if let Some(versions) = expect.get("kubelet").and_then(Value::as_object) {
        for (version, want) in versions {
            let k = KubeletVersion::parse(version).ok_or(format!("bad version {version}"))?;
            let mut e = expect.clone();
            for key in ["startup", "shutdown", "rules", "exit"] {
                if let Some(v) = want.get(key) {
                    e[key] = v.clone();
                }
            }
            e["bugs"] = want["bugs"].clone();
            check_on(&pods, &events, &e, Some(k)).map_err(|err| format!("on {version}: {err}"))?;
        }
    }
    Ok(())
}

fn check_on(
    pods: &[Pod],
    events: &[Event],
    expect: &Value,
    kubelet: Option<KubeletVersion>,
) -> Result<(), String> {
    let analyses =
        analyze_on(pods, events, &Config::default(), kubelet).map_err(|e| e.to_string())?;
    let r = &analyses[0].report;
    let mut errs = Vec::new();
    let mut eq = |what: &str, got: Value, want: &Value| {
        if &got != want {
            errs.push(format!("{what}: got {got}, want {want}"));
        }
    };
    eq(
        "startup",
        serde_json::to_value(r.startup).unwrap(),
        &expect["startup"],
    );
    eq(
        "shutdown",
        serde_json::to_value(r.shutdown).unwrap(),
        &expect["shutdown"],
    );
    let mut rules: Vec<&str> = r.violations.iter().map(|v| v.rule.id()).collect();
    rules.dedup();
    eq("rules", serde_json::json!(rules), &expect["rules"]);
    eq(
        "exit",
        serde_json::json!(exit_code(&analyses)),
        &expect["exit"],
    );
    let probes: BTreeMap<String, u32> = r
        .probe_failures
        .iter()
        .map(|p| (format!("{}/{}", p.container, p.probe.as_str()), p.count))
        .collect();
    eq(
        "probeFailures",
        serde_json::json!(probes),
        &expect["probeFailures"],
    );
    if let Some(ev) = expect.get("evidence") {
        eq("evidence", serde_json::to_value(r.evidence).unwrap(), ev);
    }
    // Known kubelet bugs named, in messages and evidence alike.
    let mut named: Vec<String> = Vec::new();
    for v in &r.violations {
        for w in v
            .message
            .split(|c: char| c.is_whitespace() || c == ',' || c == ')')
        {
            if w.starts_with("kubernetes#") && !named.iter().any(|n| n == w) {
                named.push(w.to_string());
            }
        }
    }
    named.sort();
    let want_bugs = expect.get("bugs").cloned().unwrap_or(serde_json::json!([]));
    eq("bugs", serde_json::json!(named), &want_bugs);
    for v in &r.violations {
        for bug in named.iter().filter(|b| v.message.contains(b.as_str())) {
            if !v
                .evidence
                .iter()
                .any(|e| e.contains(&format!("known kubelet bug {bug}")))
            {
                errs.push(format!(
                    "{}: {bug} in the message, not in the evidence",
                    v.rule.id()
                ));
            }
        }
    }
    // Every violation names its containers and carries evidence.
    for v in &r.violations {
        if v.containers.is_empty() || v.evidence.is_empty() {
            errs.push(format!(
                "violation {} lacks containers or evidence",
                v.rule.id()
            ));
        }
    }
    if errs.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "{}\n{}",
            errs.join("\n"),
            serde_json::to_string_pretty(r).unwrap()
        ))
    }
}

#[test]
fn every_fixture_gets_its_expected_verdict() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    let mut dirs: Vec<_> = std::fs::read_dir(&root)
        .unwrap()
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.join("expect.json").exists())
        .collect();
    dirs.sort();
    assert!(dirs.len() >= 15, "fixtures missing: {dirs:?}");
    let failures: Vec<String> = dirs
        .iter()
        .filter_map(|d| check(d).err().map(|e| format!("== {}\n{e}", d.display())))
        .collect();
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

/// A fixture's file, as text.
fn fixture_text(name: &str, file: &str) -> String {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name);
    std::fs::read_to_string(dir.join(file)).unwrap()
}

/// A fixture's pods and events, decoded.
fn fixture(name: &str) -> (Vec<Pod>, Vec<Event>) {
    let pods = input::pods("pod.json", &fixture_text(name, "pod.json")).unwrap();
    let events = input::events("events.json", &fixture_text(name, "events.json")).unwrap();
    (pods, events)
}

/// A stuck sidecar is measured against node times only (the judgement takes
/// no clock, so the controller never re-judges on a timer): its report says
/// how long it was allowed, not a number that grows, and seeing the pod
/// again later rewrites nothing.
#[test]
fn a_stuck_sidecar_report_does_not_move_with_the_clock() {
    let (pods, events) = fixture("rule-sidecar-outlived-app");
    let later = analyze(&pods, &events, &Config::default())
        .unwrap()
        .remove(0)
        .report;
    assert!(
        later
            .violations
            .iter()
            .any(|v| v.rule.id() == "sidecar-outlived-app"),
        "{later:#?}"
    );
    // The controller sees the stuck pod again minutes later: its report is
    // not rewritten (nothing in it moves with the controller's clock).
    let mut store = Store::new(Config::default());
    for p in &pods {
        store.pod_applied(p, 1_000);
    }
    for e in &events {
        store.event_applied(e, 1_000);
    }
    let again = store.pod_applied(pods.last().unwrap(), 1_000 + 600);
    assert!(again.is_empty(), "rewritten 10 min later: {again:#?}");
    // Also the wording: how long it ran is not a number that grows.
    let v = &later.violations[0];
    // The limit is the grace period (30 s) plus --outlive-seconds (30 s):
    // the kubelet gives a Job's sidecars the grace period to stop.
    assert!(v.message.contains("more than 60s"), "{}", v.message);
}

/// Every fixture shows how many events were about other objects; the table
/// says so, so nothing read is silently dropped.
#[test]
fn events_of_other_pods_are_counted() {
    let (pods, events) = fixture("article-order-on-delete");
    let others = events
        .iter()
        .filter(|e| e.involved_object.uid != pods[0].metadata.uid)
        .count();
    assert!(others > 0, "the fixture has no unrelated event");
    let a = analyze(&pods, &events, &Config::default())
        .unwrap()
        .remove(0);
    let (used, other) = a.events.unwrap();
    assert_eq!(other, others);
    assert!(used > 0 && used + other <= events.len());
}

/// Readiness failures that all ended before the app started do not prove the
/// sidecar was still not ready then: Indeterminate, not a violation.
#[test]
fn readiness_failures_that_stopped_before_the_app_started_are_no_violation() {
    let (pods, _) = fixture("rule-app-started-before-sidecar-ready");
    let mut events: Value = serde_json::from_str(&fixture_text(
        "rule-app-started-before-sidecar-ready",
        "events.json",
    ))
    .unwrap();
    let judge = |events: &Value| {
        let events = input::events("events.json", &events.to_string()).unwrap();
        analyze(&pods, &events, &Config::default())
            .unwrap()
            .remove(0)
            .report
    };
    let rule = "app-started-before-sidecar-ready";
    assert!(
        judge(&events)
            .violations
            .iter()
            .any(|v| v.rule.id() == rule)
    );
    // The app started at 23:46:36; now the probe's failures end at 23:46:33.
    for e in events["items"].as_array_mut().unwrap() {
        if e["reason"] == "Unhealthy" {
            e["lastTimestamp"] = "2025-07-13T23:46:33Z".into();
            e["count"] = 2.into();
        }
    }
    let r = judge(&events);
    assert!(r.violations.iter().all(|v| v.rule.id() != rule), "{r:#?}");
    let check = r
        .checks
        .iter()
        .find(|c| c.rule.id() == rule)
        .expect("a check");
    assert_eq!(
        serde_json::to_value(check.outcome).unwrap(),
        "Indeterminate"
    );
}

/// Without the kubelet's events (expired, or not saved) the report is
/// honest about it: Partial, with a gap naming the containers; the
/// verdicts still come from the pod's status.
#[test]
fn missing_events_make_the_evidence_partial() {
    let (pods, events) = fixture("real-smoke-delete");
    let evidence = |r: &sidecar_order::report::Report| serde_json::to_value(r.evidence).unwrap();
    let with = analyze(&pods, &events, &Config::default())
        .unwrap()
        .remove(0)
        .report;
    assert_eq!(evidence(&with), "Complete", "{:?}", with.gaps);
    let without = analyze(&pods, &[], &Config::default())
        .unwrap()
        .remove(0)
        .report;
    assert_eq!(evidence(&without), "Partial");
    assert!(
        without
            .gaps
            .iter()
            .any(|g| g.contains("no Started event for first-sidecar, second-sidecar, app")),
        "{:?}",
        without.gaps
    );
    assert_eq!(without.violations, with.violations);
}
