//! `sidecar-order conformance` without a cluster: the catalogue's
//! manifests, its judges on captured kubelet behaviour (tests/fixtures),
//! the output formats, exit codes, and bad usage.

use k8s_openapi::api::core::v1::{Event, Pod};
use sidecar_order::conformance::catalogue::{self, CATALOGUE, Entry, Kind, Next, Observed};
use sidecar_order::conformance::{Finding, Row, Run, Status, exit_code, finalize, output};
use sidecar_order::input;
use sidecar_order::kubelet::KubeletVersion;
use std::process::Command;

fn v(s: &str) -> Option<KubeletVersion> {
    KubeletVersion::parse(s)
}

/// A fixture's pod versions and events, as the runner would have seen them.
fn fixture(name: &str, gone: bool) -> Observed {
    let dir = format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"));
    let pods: Vec<Pod> = input::pods(
        "pod.json",
        &std::fs::read_to_string(format!("{dir}/pod.json")).unwrap(),
    )
    .unwrap();
    let events: Vec<Event> = input::events(
        "events.json",
        &std::fs::read_to_string(format!("{dir}/events.json")).unwrap(),
    )
    .unwrap();
    Observed {
        pods,
        events,
        gone,
        deleted: gone,
        now: i64::MAX / 2,
        ..Observed::default()
    }
}

fn judged(e: &Entry, o: &Observed, k: &str) -> (Finding, Vec<String>) {
    let k = v(k);
    finalize(e, k, (e.judge)(o, k))
}

#[test]
fn every_entry_builds_a_workload_with_native_sidecars_and_the_image() {
    let mut ids = std::collections::BTreeSet::new();
    for e in CATALOGUE {
        assert!(ids.insert(e.id), "duplicate id {}", e.id);
        assert!(e.id.len() <= 40 && e.id.bytes().all(|b| b.is_ascii_lowercase() || b == b'-'));
        let spec = match e.kind {
            Kind::Pod => e.pod("probe", "example.org/img:1").spec.unwrap(),
            Kind::Job => e
                .job("probe", "example.org/img:1")
                .spec
                .unwrap()
                .template
                .spec
                .unwrap(),
        };
        let all: Vec<_> = spec
            .init_containers
            .iter()
            .flatten()
            .chain(spec.containers.iter())
            .collect();
        assert!(
            spec.init_containers
                .iter()
                .flatten()
                .any(|c| c.restart_policy.as_deref() == Some("Always")),
            "{}: no native sidecar",
            e.id
        );
        for c in all {
            assert_eq!(
                c.image.as_deref(),
                Some("example.org/img:1"),
                "{}/{}",
                e.id,
                c.name
            );
            assert_eq!(
                c.image_pull_policy.as_deref(),
                Some("IfNotPresent"),
                "{}/{}",
                e.id,
                c.name
            );
            // The image needs only sh and sleep (trap, touch, test: shell).
            let cmd = c.command.clone().unwrap_or_default();
            assert!(
                matches!(cmd.first().map(String::as_str), Some("sh" | "sleep")),
                "{}/{}: {cmd:?}",
                e.id,
                c.name
            );
        }
        assert!(!e.promise.is_empty() && !e.catches.is_empty());
        assert!(!e.manifest.contains('\t'));
    }
    assert_eq!(CATALOGUE.len(), 11);
    assert!(catalogue::by_id("stop-order").is_some() && catalogue::by_id("nope").is_none());
}

#[test]
fn deletion_during_init_on_a_kubelet_with_125880_is_broken_and_names_it() {
    // tests/fixtures/bug-125880-delete-during-init: the sidecars got SIGTERM
    // only at the end of the 30 s grace period.
    let o = fixture("bug-125880-delete-during-init", true);
    let e = &catalogue::DELETION_DURING_INIT;
    for (k, bug) in [
        ("v1.30.3", true),
        ("v1.29.7", true),
        ("v1.29.8", false),
        ("v1.31.0", false),
        ("v1.28.15", false),
    ] {
        let (f, bugs) = judged(e, &o, k);
        assert_eq!(f.status, Status::Broken, "{k}: {f:?}");
        assert!(
            f.evidence
                .iter()
                .any(|l| l.contains("sidecar-force-killed")),
            "{f:?}"
        );
        assert_eq!(
            bugs.iter().any(|b| b.contains("kubernetes#125880")),
            bug,
            "{k}: {bugs:?}"
        );
    }
    // The kubelet that makes no native-sidecar promise at all.
    let (f, _) = judged(e, &o, "v1.27.16");
    assert_eq!(f.status, Status::NotPromised);
    assert!(
        f.evidence[0].contains("promised from kubelet 1.28"),
        "{f:?}"
    );
}

#[test]
fn stop_order_kept_on_the_articles_pod_broken_on_a_reversed_one() {
    let (f, _) = judged(
        &catalogue::STOP_ORDER,
        &fixture("article-order-on-delete", true),
        "v1.34.4",
    );
    assert_eq!(f.status, Status::Kept, "{f:?}");
    let (f, _) = judged(
        &catalogue::STOP_ORDER,
        &fixture("rule-sidecar-stop-order", true),
        "v1.34.4",
    );
    assert_eq!(f.status, Status::Broken, "{f:?}");
    assert!(
        f.evidence.iter().any(|l| l.contains("sidecar-stop-order")),
        "{f:?}"
    );
    // 1.28 did not order the shutdown: not promised there.
    let (f, _) = judged(
        &catalogue::STOP_ORDER,
        &fixture("rule-sidecar-stop-order", true),
        "v1.28.3",
    );
    assert_eq!(f.status, Status::NotPromised, "{f:?}");
    // A pod not yet gone is never judged Kept.
    let (f, _) = judged(
        &catalogue::STOP_ORDER,
        &fixture("article-order-on-delete", false),
        "v1.34.4",
    );
    assert_eq!(f.status, Status::Indeterminate, "{f:?}");
}

#[test]
fn liveness_restart_of_the_article_is_kept() {
    let (f, _) = judged(
        &catalogue::LIVENESS_RESTARTS_SIDECAR,
        &fixture("article-liveness-fail", false),
        "v1.34.4",
    );
    assert_eq!(f.status, Status::Kept, "{f:?}");
}

fn pod(json: serde_json::Value) -> Pod {
    serde_json::from_value(json).unwrap()
}

/// The poststart-gate probe after a kubelet started the app before the
/// sidecar's postStart hook finished: the app's first run exited 7.
#[test]
fn an_app_that_ran_before_the_poststart_hook_finished_is_broken() {
    let mut p = catalogue::POSTSTART_GATE.pod("poststart-gate", "busybox:1.36");
    p.metadata.uid = Some("u1".into());
    p.metadata.namespace = Some("ns".into());
    let status = pod(serde_json::json!({"status": {
        "phase": "Running",
        "initContainerStatuses": [{"name": "sidecar", "image": "i", "imageID": "", "ready": true, "restartCount": 0, "started": true,
            "state": {"running": {"startedAt": "2026-01-01T00:00:00Z"}}}],
        "containerStatuses": [{"name": "app", "image": "i", "imageID": "", "ready": true, "restartCount": 1,
            "state": {"running": {"startedAt": "2026-01-01T00:00:04Z"}},
            "lastState": {"terminated": {"exitCode": 7, "startedAt": "2026-01-01T00:00:00Z", "finishedAt": "2026-01-01T00:00:00Z"}}}]
    }}));
    p.status = status.status;
    let o = Observed {
        pods: vec![p],
        now: 1_767_225_610,
        ..Observed::default()
    };
    assert_eq!((catalogue::POSTSTART_GATE.next)(&o), Next::Judge);
    let (f, _) = judged(&catalogue::POSTSTART_GATE, &o, "v1.34.4");
    assert_eq!(f.status, Status::Broken, "{f:?}");
    assert!(f.evidence[0].contains("exited 7"), "{f:?}");
}

#[test]
fn nothing_seen_is_indeterminate_never_kept() {
    let o = Observed {
        timed_out: true,
        ..Observed::default()
    };
    for e in CATALOGUE {
        let f = (e.judge)(&o, v("v1.34.4"));
        assert_eq!(f.status, Status::Indeterminate, "{}: {f:?}", e.id);
        assert!(!f.evidence.is_empty(), "{}: no reason", e.id);
    }
}

fn row(promise: &'static str, node: &str, result: Status, evidence: &[&str], bugs: &[&str]) -> Row {
    Row {
        promise,
        description: "a promise",
        node: node.into(),
        kubelet_version: Some("v1.30.3".into()),
        promised_from: "1.28".into(),
        catches: "kubernetes#125880",
        result,
        evidence: evidence.iter().map(|s| s.to_string()).collect(),
        known_bugs: bugs.iter().map(|s| s.to_string()).collect(),
        seconds: 12,
    }
}

fn sample() -> Run {
    Run {
        namespace: "sidecar-order-conformance-abc123".into(),
        image: "busybox:1.36".into(),
        seconds: 40,
        rows: vec![
            row("start-order", "node-a", Status::Kept, &["ok"], &[]),
            row(
                "deletion-during-init",
                "node-a",
                Status::Broken,
                &["first-sidecar ended <at> the deadline & killed"],
                &["kubernetes#125880 (x): fixed in v1.30.4"],
            ),
            row(
                "stop-order",
                "node-b",
                Status::NotPromised,
                &["reverse-order shutdown is promised from kubelet 1.29"],
                &[],
            ),
            row(
                "grace-period-shared",
                "node-b",
                Status::Indeterminate,
                &["timed out \"waiting\""],
                &[],
            ),
        ],
    }
}

#[test]
fn the_table_shows_evidence_and_bugs_for_what_was_not_kept() {
    let t = output::table(&sample());
    let lines: Vec<&str> = t.lines().collect();
    assert!(
        lines[0].starts_with("PROMISE")
            && lines[0].contains("NODE")
            && lines[0].contains("KUBELET")
            && lines[0].ends_with("RESULT"),
        "{t}"
    );
    assert!(
        lines[1].starts_with("start-order") && lines[1].ends_with("Kept"),
        "{t}"
    );
    assert!(lines[3].ends_with("Not promised"), "{t}");
    assert!(t.contains("known kubelet bug: kubernetes#125880"), "{t}");
    assert!(
        t.contains("- first-sidecar ended <at> the deadline & killed"),
        "{t}"
    );
    assert!(
        !t.contains("- ok"),
        "Kept rows carry no evidence in the table: {t}"
    );
    assert!(
        t.contains("1 kept, 1 broken, 1 indeterminate, 1 not promised"),
        "{t}"
    );
}

#[test]
fn junit_has_one_testcase_per_promise_and_node() {
    let x = output::junit(&sample());
    assert!(x.starts_with("<?xml"), "{x}");
    assert_eq!(x.matches("<testcase ").count(), 4, "{x}");
    assert_eq!(x.matches("<testsuite ").count(), 2, "{x}");
    assert!(
        x.contains("tests=\"4\" failures=\"1\" errors=\"1\" skipped=\"1\""),
        "{x}"
    );
    assert_eq!(x.matches("<failure ").count(), 1);
    assert_eq!(x.matches("<skipped ").count(), 1);
    assert_eq!(x.matches("<error ").count(), 1);
    assert!(x.contains("&lt;at&gt; the deadline &amp; killed"), "{x}");
    assert!(x.contains("timed out &quot;waiting&quot;"), "{x}");
    assert!(x.contains("known kubelet bug: kubernetes#125880"), "{x}");
    assert!(!x.contains("<at>"), "unescaped: {x}");
    // Balanced elements.
    for tag in ["testsuites", "testsuite", "testcase"] {
        assert_eq!(
            x.matches(&format!("<{tag} ")).count(),
            x.matches(&format!("</{tag}>")).count(),
            "{tag}"
        );
    }
}

#[test]
fn json_carries_every_row() {
    let j: serde_json::Value = serde_json::from_str(&output::json(&sample())).unwrap();
    assert_eq!(j["rows"].as_array().unwrap().len(), 4);
    assert_eq!(j["rows"][1]["result"], "Broken");
    assert_eq!(
        j["rows"][1]["knownBugs"][0],
        "kubernetes#125880 (x): fixed in v1.30.4"
    );
    assert_eq!(j["rows"][2]["result"], "NotPromised");
}

#[test]
fn exit_codes() {
    let mut r = sample();
    assert_eq!(exit_code(&r.rows), 1);
    r.rows.retain(|r| r.result != Status::Broken);
    assert_eq!(exit_code(&r.rows), 3);
    r.rows.retain(|r| r.result != Status::Indeterminate);
    assert_eq!(exit_code(&r.rows), 0);
}

fn bin(args: &[&str], env: &[(&str, &str)]) -> std::process::Output {
    let mut c = Command::new(env!("CARGO_BIN_EXE_sidecar-order"));
    c.args(args).env_remove("KUBERNETES_SERVICE_HOST");
    for (k, val) in env {
        c.env(k, val);
    }
    c.output().unwrap()
}

#[test]
fn bad_usage_exits_2_with_one_line() {
    for args in [
        &["conformance", "--node-selector", "nokey"][..],
        &["conformance", "-o", "xml"],
        &["conformance", "--timeout", "5x"],
    ] {
        let out = bin(args, &[]);
        assert_eq!(out.status.code(), Some(2), "{args:?}");
    }
    let out = bin(
        &["conformance", "--promise", "nope"],
        &[("KUBECONFIG", "/nonexistent")],
    );
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("unknown promise `nope`"), "{err}");
    // No cluster: one line, exit 2.
    let out = bin(
        &["conformance"],
        &[
            ("KUBECONFIG", "/nonexistent/kubeconfig"),
            ("HOME", "/nonexistent"),
        ],
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(err.starts_with("error: "), "{err}");
}

#[test]
fn the_readme_lists_every_promise() {
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    for e in CATALOGUE {
        assert!(
            readme.contains(&format!("| `{}` |", e.id)),
            "README lacks {}",
            e.id
        );
    }
}
