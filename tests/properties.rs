//! Properties of the sans-IO engine, over the fixtures (loaded at test time)
//! and over generated pods and kubelet events:
//!
//! (a) the report does not depend on the order of the events;
//! (b) the same event object twice changes nothing;
//! (c) an older version of an event object (same name, lower count) beside
//!     the newer one changes nothing;
//! (d) nothing panics (judge, render, JSON) and a phase is `Violated` iff an
//!     error-severity violation of that phase is reported;
//! (e) when every moment is the same whole second and no finer source exists,
//!     no ordering rule is decided (`Indeterminate`, never `Violated`).
//!
//! `PROPTEST_CASES=N` runs more cases than the default 256.

use k8s_openapi::api::core::v1::{Event, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use proptest::prelude::*;
use proptest::sample::Index;
use serde_json::{Value, json};
use sidecar_order::analyze::{Analysis, analyze};
use sidecar_order::input;
use sidecar_order::judge::{Config, judge};
use sidecar_order::model::{
    ContainerFacts, Declares, Deletion, EventFact, EventReason, PodFacts, ProbeKind, RestartPolicy,
    Role, Run, StateKind,
};
use sidecar_order::observe::{EventFit, event_fact, pod_facts};
use sidecar_order::render;
use sidecar_order::report::{Outcome, Phase, Report, Rule, Severity, Verdict};
use sidecar_order::time::{Moment, SecsFrom};
use std::fmt;
use std::path::Path;
use std::sync::OnceLock;

/// 2025-07-14T00:00:00Z: generated times are offsets from it.
const BASE: i64 = 1_752_451_200;
const POD: &str = "gen-pod";
const UID: &str = "00000000-0000-4000-8000-00000000cafe";

fn config() -> ProptestConfig {
    ProptestConfig {
        cases: std::env::var("PROPTEST_CASES")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(256),
        // Failures are kept as named tests below, not as regression files.
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

// ---------------------------------------------------------------------------
// Cases: a pod and its events, from a fixture or generated.

#[derive(Clone)]
struct Case {
    label: String,
    pod: Pod,
    events: Vec<Event>,
}

impl fmt::Debug for Case {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Printed by proptest on failure: the input as kubectl would print it.
        let events = json!({"kind": "EventList", "items": self.events});
        write!(
            f,
            "Case {}\n--- pod.json\n{}\n--- events.json\n{}",
            self.label,
            serde_json::to_string(&self.pod).unwrap(),
            serde_json::to_string(&events).unwrap()
        )
    }
}

fn fixtures() -> &'static [Case] {
    static ALL: OnceLock<Vec<Case>> = OnceLock::new();
    ALL.get_or_init(|| {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
        let mut dirs: Vec<_> = std::fs::read_dir(&root)
            .unwrap()
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.join("pod.json").exists() && p.join("events.json").exists())
            .collect();
        dirs.sort();
        assert!(!dirs.is_empty(), "no fixtures under {}", root.display());
        dirs.iter()
            .map(|d| {
                let read = |f: &str| std::fs::read_to_string(d.join(f)).unwrap();
                let mut pods = input::pods("pod.json", &read("pod.json")).unwrap();
                let events = input::events("events.json", &read("events.json")).unwrap();
                assert_eq!(pods.len(), 1, "{}", d.display());
                Case {
                    label: d.file_name().unwrap().to_string_lossy().into_owned(),
                    pod: pods.remove(0),
                    events,
                }
            })
            .collect()
    })
}

fn fixture_case() -> impl Strategy<Value = Case> {
    (0..fixtures().len()).prop_map(|i| fixtures()[i].clone())
}

fn ts(offset: i64) -> String {
    Timestamp::from_second(BASE + offset).unwrap().to_string()
}

/// How far a generated pod may stray from what a kubelet writes.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Mode {
    /// Consistent runs (finish after start), ordinary counts and grace periods.
    Tame,
    /// Also finishes before starts, huge counts, extreme grace periods.
    Wild,
}

#[derive(Clone, Debug)]
struct GenRun {
    start: i64,
    finish: i64,
    exit: i32,
}

#[derive(Clone, Debug)]
enum GenState {
    NoStatus,
    Waiting,
    Running(i64),
    Terminated(GenRun),
}

#[derive(Clone, Debug)]
struct GenContainer {
    probes: (bool, bool, bool), // liveness, readiness, startup
    state: GenState,
    restarts: u32,
    last: Option<GenRun>,
    ready: bool,
}

#[derive(Clone, Debug)]
struct GenEvent {
    container: Index,
    reason: &'static str,
    message: &'static str,
    count: i32,
    first: i64,
    last_delta: i64,
    sub_nanos: i64,
    hex_name: bool,
}

#[derive(Clone, Debug)]
struct GenPod {
    /// `initContainers`, in manifest order: true for a sidecar.
    inits: Vec<bool>,
    init_containers: Vec<GenContainer>,
    apps: Vec<GenContainer>,
    restart_policy: &'static str,
    phase: &'static str,
    grace: i64,
    deleted: Option<i64>,
    events: Vec<GenEvent>,
}

fn gen_run(mode: Mode) -> impl Strategy<Value = GenRun> {
    let wild = mode == Mode::Wild;
    (
        0..90i64,
        prop_oneof![4 => (0..60i64).prop_map(Some), u32::from(wild) => Just(None)],
        0..150i64,
        prop::sample::select(vec![0, 1, 2, 137, 143]),
    )
        .prop_map(|(start, delta, anywhen, exit)| GenRun {
            start,
            finish: delta.map_or(anywhen, |d| start + d),
            exit,
        })
}

fn gen_container(mode: Mode) -> impl Strategy<Value = GenContainer> {
    let state = prop_oneof![
        1 => Just(GenState::NoStatus),
        1 => Just(GenState::Waiting),
        4 => (0..90i64).prop_map(GenState::Running),
        4 => gen_run(mode).prop_map(GenState::Terminated),
    ];
    (
        (any::<bool>(), any::<bool>(), any::<bool>()),
        state,
        prop_oneof![3 => Just(0u32), 1 => 1..4u32],
        prop::option::weighted(0.25, gen_run(mode)),
        any::<bool>(),
    )
        .prop_map(|(probes, state, restarts, last, ready)| GenContainer {
            probes,
            state,
            restarts,
            last,
            ready,
        })
}

fn gen_event(mode: Mode) -> impl Strategy<Value = GenEvent> {
    let count = if mode == Mode::Wild {
        prop_oneof![6 => Just(1), 3 => 2..6i32, 1 => Just(i32::MAX), 1 => any::<i32>()].boxed()
    } else {
        prop_oneof![3 => Just(1), 1 => 2..6i32].boxed()
    };
    (
        any::<Index>(),
        prop::sample::select(vec![
            "Started",
            "Started",
            "Killing",
            "Unhealthy",
            "Unhealthy",
            "Pulled",
            "BackOff",
        ]),
        prop::sample::select(vec![
            "Liveness probe failed: HTTP probe failed with statuscode: 500",
            "Readiness probe failed: connection refused",
            "Startup probe failed: exit 1",
            "Probe errored",
        ]),
        count,
        0..150i64,
        0..30i64,
        0..1_000_000_000i64,
        prop::bool::weighted(0.9),
    )
        .prop_map(
            |(container, reason, message, count, first, last_delta, sub_nanos, hex_name)| {
                GenEvent {
                    container,
                    reason,
                    message,
                    count,
                    first,
                    last_delta,
                    sub_nanos,
                    hex_name,
                }
            },
        )
}

fn gen_pod(mode: Mode) -> impl Strategy<Value = GenPod> {
    let grace = if mode == Mode::Wild {
        prop_oneof![4 => Just(30i64), 2 => 0..120i64, 1 => any::<i64>(), 1 => Just(i64::MAX)]
            .boxed()
    } else {
        prop_oneof![Just(30i64), 0..120i64].boxed()
    };
    let inits = (1..=4usize, 0..=2usize)
        .prop_flat_map(|(s, i)| {
            let mut v = vec![true; s];
            v.extend(vec![false; i]);
            Just(v).prop_shuffle()
        })
        .prop_flat_map(move |inits| {
            let n = inits.len();
            (Just(inits), prop::collection::vec(gen_container(mode), n))
        });
    (
        inits,
        prop::collection::vec(gen_container(mode), 1..=3),
        prop::sample::select(vec!["Always", "OnFailure", "Never"]),
        prop::sample::select(vec!["Running", "Succeeded", "Failed", "Pending"]),
        grace,
        prop::option::weighted(0.4, 0..200i64),
        prop::collection::vec(gen_event(mode), 0..24),
    )
        .prop_map(
            |((inits, init_containers), apps, restart_policy, phase, grace, deleted, events)| {
                GenPod {
                    inits,
                    init_containers,
                    apps,
                    restart_policy,
                    phase,
                    grace,
                    deleted,
                    events,
                }
            },
        )
}

fn run_json(r: &GenRun) -> Value {
    json!({"terminated": {
        "containerID": "containerd://0",
        "exitCode": r.exit,
        "reason": if r.exit == 0 { "Completed" } else { "Error" },
        "startedAt": ts(r.start),
        "finishedAt": ts(r.finish),
    }})
}

fn container_json(name: &str, sidecar: bool, c: &GenContainer) -> Value {
    let probe = || json!({"exec": {"command": ["true"]}, "periodSeconds": 1});
    let mut v = json!({"name": name, "image": "localhost/busybox:1"});
    if sidecar {
        v["restartPolicy"] = json!("Always");
    }
    if c.probes.0 {
        v["livenessProbe"] = probe();
    }
    if c.probes.1 {
        v["readinessProbe"] = probe();
    }
    if c.probes.2 {
        v["startupProbe"] = probe();
    }
    v
}

fn status_json(name: &str, c: &GenContainer) -> Option<Value> {
    let state = match &c.state {
        GenState::NoStatus => return None,
        GenState::Waiting => json!({"waiting": {"reason": "PodInitializing"}}),
        GenState::Running(s) => json!({"running": {"startedAt": ts(*s)}}),
        GenState::Terminated(r) => run_json(r),
    };
    Some(json!({
        "name": name,
        "image": "localhost/busybox:1",
        "imageID": "sha256:ab",
        "ready": c.ready,
        "started": matches!(c.state, GenState::Running(_)),
        "restartCount": c.restarts,
        "state": state,
        "lastState": c.last.as_ref().map_or(json!({}), run_json),
    }))
}

impl GenPod {
    /// (name, is-init-list, sidecar) of every container, init list first.
    fn names(&self) -> Vec<(String, bool, bool)> {
        let mut v: Vec<_> = self
            .inits
            .iter()
            .enumerate()
            .map(|(i, &s)| {
                (
                    format!("{}{i}", if s { "sidecar" } else { "init" }),
                    true,
                    s,
                )
            })
            .collect();
        v.extend((0..self.apps.len()).map(|i| (format!("app{i}"), false, false)));
        v
    }

    fn case(&self, label: &str) -> Case {
        let names = self.names();
        let (init_names, app_names) = names.split_at(self.inits.len());
        let spec_init: Vec<Value> = init_names
            .iter()
            .zip(&self.init_containers)
            .map(|((n, _, s), c)| container_json(n, *s, c))
            .collect();
        let spec_apps: Vec<Value> = app_names
            .iter()
            .zip(&self.apps)
            .map(|((n, _, _), c)| container_json(n, false, c))
            .collect();
        let st_init: Vec<Value> = init_names
            .iter()
            .zip(&self.init_containers)
            .filter_map(|((n, _, _), c)| status_json(n, c))
            .collect();
        let st_apps: Vec<Value> = app_names
            .iter()
            .zip(&self.apps)
            .filter_map(|((n, _, _), c)| status_json(n, c))
            .collect();
        let mut meta = json!({
            "name": POD, "namespace": "default", "uid": UID,
            "creationTimestamp": ts(0), "resourceVersion": "1",
        });
        if let Some(d) = self.deleted {
            meta["deletionTimestamp"] = json!(ts(d));
            meta["deletionGracePeriodSeconds"] = json!(self.grace);
        }
        let pod = json!({
            "apiVersion": "v1", "kind": "Pod", "metadata": meta,
            "spec": {
                "initContainers": spec_init,
                "containers": spec_apps,
                "restartPolicy": self.restart_policy,
                "terminationGracePeriodSeconds": self.grace,
            },
            "status": {
                "phase": self.phase,
                "conditions": [{"type": "PodScheduled", "status": "True",
                                "lastTransitionTime": ts(0)}],
                "initContainerStatuses": st_init,
                "containerStatuses": st_apps,
            },
        });
        let events = self
            .events
            .iter()
            .enumerate()
            .map(|(i, e)| {
                let (cname, init, _) = &names[e.container.index(names.len())];
                let list = if *init {
                    "initContainers"
                } else {
                    "containers"
                };
                let nanos = (BASE + e.first) * 1_000_000_000 + e.sub_nanos;
                let name = if e.hex_name {
                    format!("{POD}.{nanos:x}")
                } else {
                    format!("{POD}.event-{i}")
                };
                let last = if e.count > 1 {
                    e.first + e.last_delta
                } else {
                    e.first
                };
                let mut v = json!({
                    "apiVersion": "v1", "kind": "Event",
                    "metadata": {"name": name, "namespace": "default",
                                 "creationTimestamp": ts(e.first),
                                 "resourceVersion": (100 + i).to_string()},
                    "involvedObject": {"apiVersion": "v1", "kind": "Pod", "name": POD,
                                       "namespace": "default", "uid": UID,
                                       "fieldPath": format!("spec.{list}{{{cname}}}")},
                    "reason": e.reason,
                    "count": e.count,
                    "firstTimestamp": ts(e.first),
                    "lastTimestamp": ts(last),
                    "type": if e.reason == "Unhealthy" { "Warning" } else { "Normal" },
                    "source": {"component": "kubelet", "host": "node-1"},
                });
                v["message"] = json!(match e.reason {
                    "Unhealthy" => e.message.to_string(),
                    "Killing" => format!("Stopping container {cname}"),
                    r => format!("{r} container {cname}"),
                });
                serde_json::from_value::<Event>(v).unwrap()
            })
            .collect();
        Case {
            label: label.into(),
            pod: serde_json::from_value(pod).unwrap(),
            events,
        }
    }
}

fn tame_case() -> impl Strategy<Value = Case> {
    prop_oneof![
        1 => fixture_case(),
        3 => gen_pod(Mode::Tame).prop_map(|g| g.case("generated")),
    ]
}

fn wild_case() -> impl Strategy<Value = Case> {
    prop_oneof![
        1 => fixture_case(),
        2 => gen_pod(Mode::Tame).prop_map(|g| g.case("generated")),
        2 => gen_pod(Mode::Wild).prop_map(|g| g.case("generated-wild")),
    ]
}

// ---------------------------------------------------------------------------
// Helpers.

fn reports(c: &Case, events: &[Event]) -> Vec<Report> {
    analyze(std::slice::from_ref(&c.pod), events, &Config::default())
        .expect("the case's pod is judgeable")
        .into_iter()
        .map(|a| a.report)
        .collect()
}

/// Fisher-Yates with a splitmix64 stream: a permutation chosen by `seed`.
fn shuffle<T>(v: &mut [T], seed: u64) {
    let mut s = seed;
    let mut next = || {
        s = s.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = s;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    };
    for i in (1..v.len()).rev() {
        let j = (next() % (i as u64 + 1)) as usize;
        v.swap(i, j);
    }
}

fn facts_of(c: &Case) -> (PodFacts, Vec<EventFact>) {
    let pod = pod_facts(&c.pod).expect("judgeable pod");
    let events = c
        .events
        .iter()
        .filter_map(|e| match event_fact(&pod, e) {
            EventFit::Used(f) => Some(f),
            _ => None,
        })
        .collect();
    (pod, events)
}

/// An older version of `ev` (same object name): `count` lowered to a
/// fraction `k` of the way from 1 to the current count (exclusive), `lastTimestamp` moved back a `frac` of the way to
/// `firstTimestamp`. `None` when the event's count is 1 (no older version).
fn older_version(ev: &Event, k: f64, frac: f64) -> Option<Event> {
    let count = ev
        .series
        .as_ref()
        .and_then(|s| s.count)
        .or(ev.count)
        .unwrap_or(1);
    if count < 2 {
        return None;
    }
    let lower = (1 + ((count - 1) as f64 * k).floor() as i32).clamp(1, count - 1);
    let mut old = ev.clone();
    if let Some(s) = old.series.as_mut() {
        s.count = Some(lower);
    }
    if old.count.is_some() {
        old.count = Some(lower);
    }
    if let (Some(first), Some(last)) = (&ev.first_timestamp, &ev.last_timestamp) {
        let (f, l) = (first.0.as_second(), last.0.as_second());
        if l > f {
            let back = ((l - f) as f64 * frac).floor() as i64;
            old.last_timestamp = Some(Time(Timestamp::from_second(l - back).unwrap()));
        }
    }
    if lower == 1 {
        old.last_timestamp = old.first_timestamp.clone();
    }
    old.metadata.resource_version = Some("1".into());
    Some(old)
}

/// (d): a phase is Violated iff the report holds an error of that phase.
fn verdicts_follow_errors(r: &Report) -> Result<(), String> {
    for (phase, verdict) in [(Phase::Startup, r.startup), (Phase::Shutdown, r.shutdown)] {
        let has_error = r
            .violations
            .iter()
            .any(|v| v.severity == Severity::Error && v.rule.phase() == phase);
        if (verdict == Verdict::Violated) != has_error {
            let listed: Vec<_> = r.violations.iter().map(|v| v.rule.id()).collect();
            return Err(format!(
                "{phase:?} verdict {verdict:?} but error violations of that phase: {has_error} \
                 (startup {:?}, shutdown {:?}, {} violations listed: {listed:?})",
                r.startup,
                r.shutdown,
                listed.len()
            ));
        }
    }
    for v in &r.violations {
        if v.severity != v.rule.severity() {
            return Err(format!(
                "violation {:?} has severity {:?}",
                v.rule, v.severity
            ));
        }
    }
    Ok(())
}

fn render_all(a: &Analysis) {
    let table = render::table(a);
    assert!(table.contains(&a.name));
    let text = serde_json::to_string(&a.report).unwrap();
    let back: Report = serde_json::from_str(&text).unwrap();
    assert_eq!(back, a.report);
}

const ORDERING_RULES: [Rule; 4] = [
    Rule::SidecarStartOrder,
    Rule::AppStartedBeforeSidecar,
    Rule::SidecarStoppedBeforeApp,
    Rule::SidecarStopOrder,
];

// ---------------------------------------------------------------------------
// Facts-level generator: PodFacts and EventFacts directly, including sources
// only the controller sets (watch order, pods seen gone).

fn gen_moment() -> impl Strategy<Value = Moment> {
    (
        0..20i64,
        prop::sample::select(vec![SecsFrom::Status, SecsFrom::Event]),
        prop::option::of(0..2_000_000_000i64),
        prop::option::of(0..6u32),
    )
        .prop_map(|(s, from, nanos, seen)| {
            Moment::new(
                BASE + s,
                from,
                nanos.map(|n| (BASE + s - 1) * 1_000_000_000 + n),
                seen,
            )
        })
}

fn gen_facts() -> impl Strategy<Value = (PodFacts, Vec<EventFact>)> {
    let run = (
        prop::option::of(gen_moment()),
        prop::option::of(gen_moment()),
        prop::option::of(prop::sample::select(vec![0, 1, 137, 143])),
        any::<bool>(),
    )
        .prop_map(|(started, finished, exit_code, current)| Run {
            started,
            finished,
            exit_code,
            signal: None,
            reason: None,
            current,
            in_status: true,
            container: None,
        });
    let container = (
        prop::sample::select(vec![Role::Sidecar, Role::Sidecar, Role::Init, Role::App]),
        any::<[bool; 5]>(),
        prop::sample::select(vec![
            StateKind::Unknown,
            StateKind::Waiting,
            StateKind::Running,
            StateKind::Terminated,
            StateKind::Terminated,
        ]),
        0..3u32,
        prop::collection::vec(run, 0..=2),
        any::<bool>(),
    );
    let event = (
        any::<Index>(),
        prop::sample::select(vec![
            EventReason::Started,
            EventReason::Started,
            EventReason::Killing,
            EventReason::Unhealthy,
            EventReason::Unhealthy,
            EventReason::BackOff,
            EventReason::ExceededGracePeriod,
        ]),
        prop::sample::select(vec![
            ProbeKind::Liveness,
            ProbeKind::Readiness,
            ProbeKind::Startup,
            ProbeKind::Unknown,
        ]),
        1..5u32,
        gen_moment(),
        0..10i64,
    );
    (
        prop::collection::vec(container, 1..=7),
        prop::collection::vec(event, 0..30),
        prop::sample::select(vec![
            RestartPolicy::Always,
            RestartPolicy::OnFailure,
            RestartPolicy::Never,
        ]),
        prop::option::of((0..30i64, 0..60i64)),
        any::<[bool; 3]>(),
        0..60i64,
    )
        .prop_map(
            |(cs, evs, restart_policy, deletion, [finished_phase, gone, has_status], grace)| {
                let mut idx = [0u16; 3];
                let containers: Vec<ContainerFacts> = cs
                    .into_iter()
                    .enumerate()
                    .map(|(i, (role, d, state, restarts, runs, ready))| {
                        let slot = &mut idx[role as usize];
                        *slot += 1;
                        ContainerFacts {
                            name: format!("c{i}"),
                            role,
                            index: *slot - 1,
                            declares: Declares {
                                liveness: d[0],
                                readiness: d[1],
                                startup: d[2],
                                post_start: d[3],
                                pre_stop: d[4],
                            },
                            state,
                            restarts,
                            started: Some(ready),
                            ready,
                            runs,
                        }
                    })
                    .collect();
                let n = containers.len();
                let events = evs
                    .into_iter()
                    .enumerate()
                    .map(|(i, (c, reason, probe, count, first, delta))| {
                        let last = if count > 1 {
                            Moment::new(
                                first.secs + delta,
                                first.secs_from,
                                first.nanos().map(|x| x + delta * 1_000_000_000),
                                first.seen(),
                            )
                        } else {
                            first
                        };
                        EventFact {
                            key: format!("{POD}.ev{i}").into(),
                            container: (reason != EventReason::ExceededGracePeriod)
                                .then(|| c.index(n) as u16),
                            reason,
                            probe: (reason == EventReason::Unhealthy).then_some(probe),
                            count,
                            first,
                            last,
                        }
                    })
                    .collect();
                let latest = BASE + 25;
                let pod = PodFacts {
                    namespace: "default".into(),
                    name: POD.into(),
                    uid: UID.into(),
                    restart_policy,
                    grace_secs: grace,
                    deletion: deletion.map(|(d, g)| Deletion {
                        deadline_secs: BASE + d,
                        grace_secs: g,
                    }),
                    finished_phase,
                    gone,
                    has_status,
                    sandbox_ready: None,
                    containers,
                    latest_secs: latest,
                };
                (pod, events)
            },
        )
}

// ---------------------------------------------------------------------------
// The properties.

proptest! {
    #![proptest_config(config())]

    /// (a) Shuffling the Events (before observe) or the EventFacts (after)
    /// gives the same report.
    #[test]
    fn event_order_does_not_matter(case in tame_case(), seed in any::<u64>()) {
        let want = reports(&case, &case.events);
        let mut events = case.events.clone();
        shuffle(&mut events, seed);
        prop_assert_eq!(&reports(&case, &events), &want, "shuffled Events");

        let (pod, facts) = facts_of(&case);
        let want = judge(&pod, &facts, &Config::default());
        prop_assert_eq!(&want, &want_first(&case));
        let mut shuffled = facts.clone();
        shuffle(&mut shuffled, seed.rotate_left(17));
        prop_assert_eq!(judge(&pod, &shuffled, &Config::default()), want, "shuffled EventFacts");
    }

    /// (b) The same event object twice (anywhere in the list) changes nothing.
    #[test]
    fn duplicated_events_change_nothing(
        case in tame_case(),
        picks in prop::collection::vec(any::<Index>(), 1..8),
        seed in any::<u64>(),
    ) {
        prop_assume!(!case.events.is_empty());
        let want = reports(&case, &case.events);
        let mut events = case.events.clone();
        for p in &picks {
            events.push(p.get(&case.events).clone());
        }
        shuffle(&mut events, seed);
        prop_assert_eq!(reports(&case, &events), want);
    }

    /// (c) An older version of an event object (same name, lower count,
    /// earlier or equal lastTimestamp) next to the newer changes nothing.
    #[test]
    fn older_event_versions_change_nothing(
        case in tame_case(),
        picks in prop::collection::vec((any::<Index>(), 0.0..1.0f64, 0.0..=1.0f64), 1..8),
        seed in any::<u64>(),
    ) {
        let repeated: Vec<&Event> = case
            .events
            .iter()
            .filter(|e| e.series.as_ref().and_then(|s| s.count).or(e.count).unwrap_or(1) > 1)
            .collect();
        prop_assume!(!repeated.is_empty());
        let want = reports(&case, &case.events);
        let mut events = case.events.clone();
        for (which, k, frac) in &picks {
            let ev = which.get(&repeated);
            events.extend(older_version(ev, *k, *frac));
        }
        shuffle(&mut events, seed);
        prop_assert_eq!(reports(&case, &events), want);
    }

    /// (d) From the fixtures and from pods a kubelet would not write (finish
    /// before start, huge counts and grace periods): nothing panics, and each
    /// verdict is Violated iff an error of its phase is reported.
    #[test]
    fn judge_never_panics_and_verdicts_follow_errors(case in wild_case()) {
        let analyses = analyze(std::slice::from_ref(&case.pod), &case.events, &Config::default())
            .expect("generated pods are judgeable");
        for a in &analyses {
            if let Err(e) = verdicts_follow_errors(&a.report) {
                return Err(TestCaseError::fail(e));
            }
            render_all(a);
        }
    }

    /// (d) again, on facts the controller could hand the judge (watch order,
    /// pods seen gone, any roles and states), plus (a) and (b) on them.
    #[test]
    fn facts_level_properties((pod, events) in gen_facts(), seed in any::<u64>()) {
        let cfg = Config::default();
        let r = judge(&pod, &events, &cfg);
        if let Err(e) = verdicts_follow_errors(&r) {
            return Err(TestCaseError::fail(e));
        }
        render_all(&Analysis {
            namespace: pod.namespace.clone(),
            name: pod.name.clone(),
            report: r.clone(),
            events: Some((events.len(), 0)),
            kubelet: None,
        });
        let mut more = events.clone();
        more.extend(events.iter().step_by(2).cloned());
        shuffle(&mut more, seed);
        prop_assert_eq!(judge(&pod, &more, &cfg), r);
    }

    /// (e) Every moment in one whole second, no event clock and no watch
    /// order: no ordering check can be decided, so none is Verified or
    /// Violated, and startup is Indeterminate.
    #[test]
    fn same_second_is_indeterminate(
        g in gen_pod(Mode::Tame),
        running in prop::collection::vec(any::<bool>(), 9),
        events in prop::collection::vec((any::<Index>(), prop::sample::select(vec!["Started", "Killing", "Unhealthy"])), 0..10),
        at in 0..100i64,
    ) {
        let mut g = g;
        // Every container started at `at`; terminated at `at` too, or running.
        let all = g.init_containers.iter_mut().chain(g.apps.iter_mut());
        for (c, run) in all.zip(running.iter().cycle()) {
            c.restarts = 0;
            c.last = None;
            c.state = if *run {
                GenState::Running(at)
            } else {
                GenState::Terminated(GenRun { start: at, finish: at, exit: 0 })
            };
        }
        g.deleted = g.deleted.map(|_| at);
        g.events = events
            .into_iter()
            .map(|(container, reason)| GenEvent {
                container,
                reason,
                message: "Startup probe failed: exit 1",
                count: 1,
                first: at,
                last_delta: 0,
                sub_nanos: 0,
                hex_name: false, // no kubelet clock in the name
            })
            .collect();
        let mut case = g.case("same-second");
        case.pod.metadata.creation_timestamp = Some(Time(Timestamp::from_second(BASE + at).unwrap()));
        let r = &reports(&case, &case.events)[0];
        let (facts, _) = facts_of(&case);
        for c in &r.checks {
            if !ORDERING_RULES.contains(&c.rule) {
                continue;
            }
            // A sidecar that stopped while an app is still running is a fact
            // of state, not an ordering of two moments.
            let state_fact = c.rule == Rule::SidecarStoppedBeforeApp
                && c.decided_by.is_none()
                && facts.containers.iter().any(|f| f.name == c.containers[0] && f.state == StateKind::Running);
            // NotApplicable decides no order either (e.g. "at the grace deadline").
            prop_assert!(
                !c.outcome.decided() || (state_fact && c.outcome == Outcome::Violated),
                "check {:?} decided in one second:\n{}", c, serde_json::to_string_pretty(r).unwrap()
            );
        }
        prop_assert_eq!(r.startup, Verdict::Indeterminate, "{}", serde_json::to_string_pretty(r).unwrap());
    }
}

fn want_first(case: &Case) -> Report {
    reports(case, &case.events).remove(0)
}

/// Every fixture on its own: the properties above hold without generation.
#[test]
fn fixtures_hold_every_property() {
    for case in fixtures() {
        let want = want_first(case);
        verdicts_follow_errors(&want).unwrap();
        for seed in 0..16 {
            let mut events = case.events.clone();
            events.extend(case.events.iter().step_by(3).cloned());
            for ev in &case.events {
                events.extend(older_version(ev, 0.5, 0.5));
            }
            shuffle(&mut events, seed);
            assert_eq!(
                want_first(&Case {
                    events,
                    ..case.clone()
                }),
                want,
                "{}",
                case.label
            );
        }
    }
}

// ---------------------------------------------------------------------------
// Regressions: minimal reproductions of what the properties found in src/
// (all fixed in 9e9273b). The properties above find the same inputs.

fn analyze_text(pod: &str, events: &str) -> Vec<Analysis> {
    let pods = input::pods("pod.json", pod).unwrap();
    let events = input::events("events.json", events).unwrap();
    analyze(&pods, &events, &Config::default()).unwrap()
}

const NO_EVENTS: &str = r#"{"kind":"EventList","items":[]}"#;

/// Was a panic (src/render.rs timeline): a container whose finishedAt is earlier than
/// the earliest start in the pod makes `(e - t0) / per_col` negative, cast
/// to usize: "index out of bounds" (or "attempt to add with overflow" at
/// `take(b + 1)` when it is -1). Saved input can say so, the table must not
/// panic on it.
#[test]
fn regression_render_with_a_finish_before_every_start() {
    let pod = r#"{"kind":"Pod","metadata":{"name":"p"},
      "spec":{"initContainers":[{"name":"s","restartPolicy":"Always"}],"containers":[{"name":"a"}]},
      "status":{"initContainerStatuses":[{"name":"s","image":"i","imageID":"","ready":false,"restartCount":0,
          "state":{"terminated":{"exitCode":0,"startedAt":"2025-07-14T00:00:10Z","finishedAt":"2025-07-14T00:00:05Z"}}}],
        "containerStatuses":[{"name":"a","image":"i","imageID":"","ready":true,"restartCount":0,
          "state":{"running":{"startedAt":"2025-07-14T00:00:10Z"}}}]}}"#;
    let a = analyze_text(pod, NO_EVENTS);
    let table = render::table(&a[0]);
    assert!(table.contains("TIMELINE"));
}

/// Was a panic (src/judge.rs shutdown): `m.secs + pod.grace_secs` overflows when
/// `terminationGracePeriodSeconds` is huge (any int64 is valid JSON for the
/// field): "attempt to add with overflow" in debug builds, a wrapped
/// (negative) deadline in release builds.
#[test]
fn regression_huge_grace_period() {
    let pod = r#"{"kind":"Pod","metadata":{"name":"p"},
      "spec":{"restartPolicy":"Never","terminationGracePeriodSeconds":9223372036854775807,
        "initContainers":[{"name":"s","restartPolicy":"Always"}],"containers":[{"name":"a"}]},
      "status":{"phase":"Succeeded","initContainerStatuses":[{"name":"s","image":"i","imageID":"","ready":false,"restartCount":0,
          "state":{"terminated":{"exitCode":0,"startedAt":"2025-07-14T00:00:01Z","finishedAt":"2025-07-14T00:00:12Z"}}}],
        "containerStatuses":[{"name":"a","image":"i","imageID":"","ready":false,"restartCount":0,
          "state":{"terminated":{"exitCode":0,"startedAt":"2025-07-14T00:00:02Z","finishedAt":"2025-07-14T00:00:11Z"}}}]}}"#;
    let a = analyze_text(pod, NO_EVENTS);
    assert_eq!(a[0].report.shutdown, Verdict::Verified);
}

/// Was a panic (src/timeline.rs build, three places): event counts
/// are summed in u32 per container and reason; three events of count
/// i32::MAX (the API's limit) overflow: "attempt to add with overflow".
#[test]
fn regression_summing_huge_event_counts() {
    let pod = r#"{"kind":"Pod","metadata":{"name":"p"},
      "spec":{"initContainers":[{"name":"s","restartPolicy":"Always"}],"containers":[{"name":"a"}]},
      "status":{"initContainerStatuses":[{"name":"s","image":"i","imageID":"","ready":true,"restartCount":0,
          "state":{"running":{"startedAt":"2025-07-14T00:00:01Z"}}}],
        "containerStatuses":[{"name":"a","image":"i","imageID":"","ready":true,"restartCount":0,
          "state":{"running":{"startedAt":"2025-07-14T00:00:05Z"}}}]}}"#;
    let ev = |n: u32| {
        format!(
            r#"{{"metadata":{{"name":"p.e{n}"}},"involvedObject":{{"kind":"Pod","name":"p","fieldPath":"spec.containers{{a}}"}},
               "reason":"Killing","count":2147483647,"firstTimestamp":"2025-07-14T00:00:06Z","lastTimestamp":"2025-07-14T00:00:09Z"}}"#
        )
    };
    let events = format!(
        r#"{{"kind":"EventList","items":[{},{},{}]}}"#,
        ev(1),
        ev(2),
        ev(3)
    );
    let a = analyze_text(pod, &events);
    assert_eq!(a[0].report.startup, Verdict::Verified);
}

/// Was an order-dependence (src/timeline.rs `newer`): two versions of one
/// event object whose dedup keys tie (same count, and `Moment::sort_key`
/// maps `nanos: None` and a whole-second `nanos` both to (secs, 0)) but
/// whose moments differ: the first one seen wins, so the verdict depends on
/// the order of the events. Here the sidecar's Started event is once written
/// with `firstTimestamp` (no kubelet clock: the name has no hex suffix) and
/// once with `eventTime` at .000000: startup is Indeterminate in one order
/// and Verified in the other.
#[test]
fn regression_dedup_tie_between_versions_of_one_event() {
    let pod = r#"{"kind":"Pod","metadata":{"name":"p"},
      "spec":{"initContainers":[{"name":"s","restartPolicy":"Always"}],"containers":[{"name":"a"}]},
      "status":{"initContainerStatuses":[{"name":"s","image":"i","imageID":"","ready":true,"restartCount":0,
          "state":{"running":{"startedAt":"2025-07-14T00:00:10Z"}}}],
        "containerStatuses":[{"name":"a","image":"i","imageID":"","ready":true,"restartCount":0,
          "state":{"running":{"startedAt":"2025-07-14T00:00:10Z"}}}]}}"#;
    // 0x1851f517500e4900 ns = 2025-07-14T00:00:10.5Z: the app's Started event.
    let app = r#"{"metadata":{"name":"p.1851f517500e4900"},"involvedObject":{"kind":"Pod","name":"p","fieldPath":"spec.containers{a}"},
        "reason":"Started","count":1,"firstTimestamp":"2025-07-14T00:00:10Z","lastTimestamp":"2025-07-14T00:00:10Z"}"#;
    let v1 = r#"{"metadata":{"name":"p.started-s"},"involvedObject":{"kind":"Pod","name":"p","fieldPath":"spec.initContainers{s}"},
        "reason":"Started","count":1,"firstTimestamp":"2025-07-14T00:00:10Z","lastTimestamp":"2025-07-14T00:00:10Z"}"#;
    let v2 = r#"{"metadata":{"name":"p.started-s"},"involvedObject":{"kind":"Pod","name":"p","fieldPath":"spec.initContainers{s}"},
        "reason":"Started","count":1,"eventTime":"2025-07-14T00:00:10.000000Z"}"#;
    let list = |a: &str, b: &str| format!(r#"{{"kind":"EventList","items":[{app},{a},{b}]}}"#);
    let one = analyze_text(pod, &list(v1, v2)).remove(0).report;
    let other = analyze_text(pod, &list(v2, v1)).remove(0).report;
    assert_eq!(
        one.startup, other.startup,
        "same events, other order, other verdict"
    );
}

/// Was an inconsistent report (src/judge.rs `judge_timeline`): violations are sorted and
/// cut to MAX_ITEMS (64) across both phases, so with more than 64 startup
/// errors the shutdown errors are all dropped while `shutdown` stays
/// `Violated`: the report claims a violation it does not show. Needs a pod
/// with many containers (here 9 sidecars x 8 apps, every app started first).
#[test]
fn regression_truncation_keeps_an_error_of_each_violated_phase() {
    let status = |name: &str, start: i64, finish: Option<i64>| {
        let state = match finish {
            Some(f) => {
                json!({"terminated": {"exitCode": 0, "startedAt": ts(start), "finishedAt": ts(f)}})
            }
            None => json!({"running": {"startedAt": ts(start)}}),
        };
        json!({"name": name, "image": "i", "imageID": "", "ready": true, "restartCount": 0, "state": state})
    };
    let sidecars: Vec<String> = (0..9).map(|i| format!("s{i}")).collect();
    let apps: Vec<String> = (0..8).map(|i| format!("a{i}")).collect();
    let pod = json!({
        "kind": "Pod",
        // Deleted at +15 (deadline +45): the sidecar's stop at +20 is part
        // of the shutdown (a stop before the deletion would not be).
        "metadata": {"name": "p", "deletionTimestamp": ts(45), "deletionGracePeriodSeconds": 30},
        "spec": {
            "initContainers": sidecars.iter().map(|n| json!({"name": n, "restartPolicy": "Always"})).collect::<Vec<_>>(),
            "containers": apps.iter().map(|n| json!({"name": n})).collect::<Vec<_>>(),
        },
        "status": {
            // Sidecars start at +10, after every app (+1); the last sidecar
            // stops at +20, before the apps (+30).
            "initContainerStatuses": sidecars.iter().enumerate()
                .map(|(i, n)| status(n, 10, (i == 8).then_some(20))).collect::<Vec<_>>(),
            "containerStatuses": apps.iter().map(|n| status(n, 1, Some(30))).collect::<Vec<_>>(),
        },
    });
    let a = analyze_text(&pod.to_string(), NO_EVENTS);
    let r = &a[0].report;
    assert_eq!(r.shutdown, Verdict::Violated);
    verdicts_follow_errors(r).unwrap();
}
