//! Throughput of the sans-IO engine.
//!
//! - `judge/pod`: `judge` on decoded facts of a pod with 3 sidecars + 1 app
//!   and 20 event facts (judged pods per second).
//! - `observe+judge/events`: observations per second. An observation is one
//!   container status or one event: the events go through
//!   `observe::event_fact`, then `judge` (which builds the timeline) on a pod
//!   with 1,000 of them, so the per-observation cost dominates. Two shapes:
//!   1,000 distinct event objects, and 1,000 updates of 25 objects (what a
//!   watch sees of repeating probe failures).
//! - `decode+analyze/json`: the whole path from kubectl JSON text, for
//!   information (bytes per second).
//! - `watch-pod`: what the controller does with each pod its watch sends,
//!   from the JSON text to the facts (`WirePod`, into a `Pod`, then
//!   `pod_facts`): the load harness's kwok pod read raw from the API server
//!   (tests/fixtures/wire/pod.json) and every pod of the recorded
//!   real-kubelet watch stream (tests/watch/rec-pods.jsonl), pods per second;
//!   and `status_hash` of that pod's report (what the store does after each
//!   judgement to tell whether the report changed, and the writer before
//!   each write).
//!
//! Run: `cargo bench --bench engine` (or `make bench`).

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use k8s_openapi::api::core::v1::{Event, Pod};
use serde_json::{Value, json};
use sidecar_order::analyze::analyze;
use sidecar_order::controller::ledger::status_hash;
use sidecar_order::controller::wire::WirePod;
use sidecar_order::crd::{ReportSpec, ReportStatus};
use sidecar_order::input;
use sidecar_order::judge::{Config, judge};
use sidecar_order::model::EventFact;
use sidecar_order::observe::{EventFit, event_fact, pod_facts};
use std::hint::black_box;
use std::path::Path;
use std::time::Duration;

const FIXTURE: &str = "tests/fixtures/article-order-on-delete";
const POD: &str = "sidecar-container-order-example";

/// The fixture's pod (2 sidecars + 1 app, deleted) with a third sidecar
/// added, and its events plus the third sidecar's and probe failures:
/// 3 sidecars + 1 app, 28 kubectl events of which 20 are facts the rules
/// use (the others: Pulled, Created, Scheduled, another pod's).
fn three_sidecars() -> (Value, Value) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join(FIXTURE);
    let read = |f: &str| -> Value {
        serde_json::from_str(&std::fs::read_to_string(dir.join(f)).unwrap()).unwrap()
    };
    let (mut pod, mut events) = (read("pod.json"), read("events.json"));

    let mut spec = pod["spec"]["initContainers"][1].clone();
    spec["name"] = json!("third-sidecar");
    spec["readinessProbe"] = json!({"exec": {"command": ["true"]}});
    pod["spec"]["initContainers"]
        .as_array_mut()
        .unwrap()
        .push(spec);
    let mut st = pod["status"]["initContainerStatuses"][1].clone();
    st["name"] = json!("third-sidecar");
    st["state"]["terminated"]["startedAt"] = json!("2025-07-13T23:46:32Z");
    st["state"]["terminated"]["finishedAt"] = json!("2025-07-13T23:47:01Z");
    pod["status"]["initContainerStatuses"]
        .as_array_mut()
        .unwrap()
        .push(st);

    let items = events["items"].as_array_mut().unwrap();
    let mut more = Vec::new();
    for e in items.iter() {
        if e["involvedObject"]["fieldPath"] == "spec.initContainers{second-sidecar}"
            && (e["reason"] == "Started" || e["reason"] == "Killing")
        {
            let mut e = e.clone();
            let name = e["metadata"]["name"].as_str().unwrap();
            let (pod_name, hex) = name.rsplit_once('.').unwrap();
            // One second (and a little) after the second sidecar's event.
            let nanos = u64::from_str_radix(hex, 16).unwrap() + 1_000_000_000 + 1_000_000;
            let secs = (nanos / 1_000_000_000) as i64;
            let t = k8s_openapi::jiff::Timestamp::from_second(secs)
                .unwrap()
                .to_string();
            e["metadata"]["name"] = json!(format!("{pod_name}.{nanos:x}"));
            e["involvedObject"]["fieldPath"] = json!("spec.initContainers{third-sidecar}");
            e["firstTimestamp"] = json!(t);
            e["lastTimestamp"] = json!(t);
            more.push(e);
        }
    }
    // Probe failures: three per container, so that 20 of the events are
    // facts the rules use.
    let probes = [
        ("first-sidecar", true, "Readiness"),
        ("second-sidecar", true, "Liveness"),
        ("third-sidecar", true, "Readiness"),
        ("app", false, "Liveness"),
    ];
    for (i, (container, init, kind)) in probes.iter().enumerate() {
        for j in 0..3 {
            let mut e = more[0].clone();
            let list = if *init {
                "initContainers"
            } else {
                "containers"
            };
            let (kind, sec) = if j == 2 {
                ("Startup", 31)
            } else {
                (*kind, 38 + 4 * j)
            };
            e["metadata"]["name"] = json!(format!("{POD}.1851f45a000{i}000{j}"));
            e["involvedObject"]["fieldPath"] = json!(format!("spec.{list}{{{container}}}"));
            e["reason"] = json!("Unhealthy");
            e["type"] = json!("Warning");
            e["message"] = json!(format!("{kind} probe failed: connection refused"));
            e["count"] = json!(3);
            e["firstTimestamp"] = json!(format!("2025-07-13T23:46:{sec}Z"));
            e["lastTimestamp"] = json!(format!("2025-07-13T23:46:{}Z", sec + 2));
            more.push(e);
        }
    }
    items.extend(more);
    (pod, events)
}

fn decode(pod: &Value, events: &Value) -> (Pod, Vec<Event>) {
    let pod: Pod = serde_json::from_value(pod.clone()).unwrap();
    let events = input::events("events.json", &events.to_string()).unwrap();
    (pod, events)
}

/// `n` kubelet events about the pod's containers: Started, Killing and
/// Unhealthy (the three probe kinds), each its own object (`objects` = n)
/// or updates of `objects` objects (same name, growing count).
fn many_events(pod: &Pod, n: usize, objects: usize) -> Vec<Event> {
    let spec = pod.spec.as_ref().unwrap();
    let mut targets: Vec<String> = spec
        .init_containers
        .iter()
        .flatten()
        .map(|c| format!("spec.initContainers{{{}}}", c.name))
        .collect();
    targets.extend(
        spec.containers
            .iter()
            .map(|c| format!("spec.containers{{{}}}", c.name)),
    );
    let base: u64 = 1_752_450_390_000_000_000; // 2025-07-13T23:46:30Z
    let reasons = [
        ("Started", "Started container"),
        ("Unhealthy", "Readiness probe failed: connection refused"),
        ("Killing", "Stopping container"),
        ("Unhealthy", "Liveness probe failed: HTTP probe failed"),
        ("Unhealthy", "Startup probe failed: exit 1"),
    ];
    (0..n)
        .map(|i| {
            let object = i % objects;
            let version = (i / objects) as u64;
            let nanos = base + object as u64 * 7_919_000 + 13;
            let first = nanos / 1_000_000_000;
            let last = first + version;
            let (reason, message) = reasons[object % reasons.len()];
            let ts = |s: u64| {
                k8s_openapi::jiff::Timestamp::from_second(s as i64)
                    .unwrap()
                    .to_string()
            };
            serde_json::from_value(json!({
                "apiVersion": "v1", "kind": "Event",
                "metadata": {"name": format!("{POD}.{nanos:x}"), "namespace": "default"},
                "involvedObject": {"apiVersion": "v1", "kind": "Pod", "name": POD,
                    "namespace": "default",
                    "uid": pod.metadata.uid,
                    "fieldPath": targets[object % targets.len()]},
                "reason": reason, "message": message,
                "count": version + 1,
                "firstTimestamp": ts(first), "lastTimestamp": ts(last),
                "type": "Normal", "source": {"component": "kubelet"},
            }))
            .unwrap()
        })
        .collect()
}

fn observe_and_judge(pod: &Pod, events: &[Event], cfg: &Config) -> usize {
    let facts = pod_facts(pod).unwrap();
    let used: Vec<EventFact> = events
        .iter()
        .filter_map(|e| match event_fact(&facts, e) {
            EventFit::Used(f) => Some(f),
            _ => None,
        })
        .collect();
    let r = judge(&facts, &used, cfg);
    r.checks.len() + used.len()
}

fn benches(c: &mut Criterion) {
    let cfg = Config::default();
    let (pod_json, events_json) = three_sidecars();
    let (pod, events) = decode(&pod_json, &events_json);
    let facts = pod_facts(&pod).unwrap();
    let used: Vec<EventFact> = events
        .iter()
        .filter_map(|e| match event_fact(&facts, e) {
            EventFit::Used(f) => Some(f),
            _ => None,
        })
        .collect();
    assert_eq!(facts.sidecar_count(), 3);
    assert_eq!(used.len(), 20);
    let report = judge(&facts, &used, &cfg);
    eprintln!(
        "judge/pod input: {} containers, {} events ({} used); startup {:?}, shutdown {:?}",
        facts.containers.len(),
        events.len(),
        used.len(),
        report.startup,
        report.shutdown
    );

    // (a) judged pods per second, on decoded facts.
    let mut g = c.benchmark_group("judge");
    g.throughput(Throughput::Elements(1));
    g.bench_function("pod_3_sidecars_1_app_20_event_facts", |b| {
        b.iter(|| judge(black_box(&facts), black_box(&used), &cfg))
    });
    g.finish();

    // (b) observations per second: event_fact + timeline::build + judge.
    let mut g = c.benchmark_group("observe+judge");
    for (label, objects) in [
        ("1000_distinct_events", 1000),
        ("1000_updates_of_25_events", 25),
    ] {
        let evs = many_events(&pod, 1000, objects);
        let statuses = facts.containers.len();
        let observations = (evs.len() + statuses) as u64;
        let used = observe_and_judge(&pod, &evs, &cfg);
        assert!(used >= 1000, "{label}: events not used");
        g.throughput(Throughput::Elements(observations));
        g.bench_with_input(BenchmarkId::from_parameter(label), &evs, |b, evs| {
            b.iter(|| observe_and_judge(black_box(&pod), black_box(evs), &cfg))
        });
    }
    g.finish();

    // (c) the decode path from JSON text (for information).
    let pod_text = serde_json::to_string_pretty(&pod_json).unwrap();
    let events_text = serde_json::to_string_pretty(&events_json).unwrap();
    let mut g = c.benchmark_group("decode+analyze");
    g.throughput(Throughput::Bytes(
        (pod_text.len() + events_text.len()) as u64,
    ));
    g.bench_function("json_3_sidecars_28_events", |b| {
        b.iter(|| {
            let pods = input::pods("pod.json", black_box(&pod_text)).unwrap();
            let events = input::events("events.json", black_box(&events_text)).unwrap();
            analyze(&pods, &events, &cfg).unwrap()
        })
    });
    g.finish();

    // (d) a watched pod, from its JSON text to its facts.
    let recorded: Vec<String> =
        serde_json::Deserializer::from_str(include_str!("../tests/watch/rec-pods.jsonl"))
            .into_iter::<Value>()
            .map(|v| v.unwrap()["object"].to_string())
            .collect();
    let kwok = vec![include_str!("../tests/fixtures/wire/pod.json").to_string()];
    let mut g = c.benchmark_group("watch-pod");
    for (label, texts) in [("kwok_load_pod", &kwok), ("recorded_real_pods", &recorded)] {
        g.throughput(Throughput::Elements(texts.len() as u64));
        g.bench_with_input(BenchmarkId::from_parameter(label), texts, |b, texts| {
            b.iter(|| {
                for t in texts {
                    let pod: Pod = serde_json::from_str::<WirePod>(black_box(t))
                        .unwrap()
                        .into();
                    black_box(pod_facts(&pod).unwrap());
                }
            })
        });
    }
    let spec = ReportSpec {
        pod_name: POD.into(),
        pod_uid: "8e657419-1241-4a2e-9446-0bfb126993b2".into(),
        workload: Some("Deployment/example".into()),
    };
    let status = ReportStatus::new(report.clone(), None);
    g.throughput(Throughput::Elements(1));
    g.bench_function("status_hash", |b| {
        b.iter(|| status_hash(black_box(&spec), black_box(&status)))
    });
    g.finish();
}

criterion_group! {
    name = engine;
    config = Criterion::default()
        .warm_up_time(Duration::from_secs(2))
        .measurement_time(Duration::from_secs(5));
    targets = benches
}
criterion_main!(engine);
