//! The catalogue: one entry per kubelet promise about native sidecars, each
//! with the probe workload that exercises it (a Pod or a Job), what to do
//! with it as it runs (`next`) and how to judge what the kubelet did
//! (`judge`). Both `sidecar-order conformance` and the live e2e suite build
//! their pods from here, so the two never drift.
//!
//! Sans-IO: `next` and `judge` take plain observations (every version of
//! the probe's pod that was seen, its events, the Job) and return plain
//! data. A verdict comes from what the kubelet did: the engine's checks
//! (`analyze`), or a direct fact a promise needs (an exit code the
//! SIGTERM trap sets, a restart count). Kept and Broken each need positive
//! evidence; anything else is Indeterminate, with the reason.
//!
//! Manifests are YAML with `{name}` and `{image}`; the image needs `sh`,
//! `sleep`, `trap` and `touch`.

use super::{Finding, Status};
use crate::analyze::analyze_on;
use crate::judge::Config;
use crate::kubelet::{KubeletVersion, Shape, Since, promises};
use crate::report::{Outcome, Report, Rule, Severity};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{ContainerStatus, Event, Pod};

/// What was seen of one probe, oldest pod version first.
#[derive(Clone, Debug, Default)]
pub struct Observed {
    /// Every version of the probe's pod that was seen (same uid).
    pub pods: Vec<Pod>,
    /// The kubelet's Events about that pod.
    pub events: Vec<Event>,
    /// The probe's Job, last seen (Job entries only).
    pub job: Option<Job>,
    /// The pod was deleted from the API.
    pub gone: bool,
    /// The runner asked for the pod's deletion.
    pub deleted: bool,
    /// Now, unix seconds (the runner's clock).
    pub now: i64,
    /// The probe ran out of time.
    pub timed_out: bool,
}

/// What the runner does next with a probe.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Next {
    Wait,
    Delete,
    Judge,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Pod,
    Job,
}

/// One promise and its probe.
pub struct Entry {
    /// Stable id: the JUnit test name, the pods' label.
    pub id: &'static str,
    /// The promise, as a sentence.
    pub promise: &'static str,
    /// From which kubelet version it is promised (`kubelet::promises`).
    pub since: Since,
    /// The upstream issue it would catch (or the feature it checks).
    pub catches: &'static str,
    pub kind: Kind,
    /// YAML with `{name}` and `{image}`.
    pub manifest: &'static str,
    /// The violation a broken kubelet produces here, to name a known bug
    /// (`kubelet::known_bugs`).
    pub bug: Option<(Rule, Shape)>,
    pub next: fn(&Observed) -> Next,
    pub judge: fn(&Observed, Option<KubeletVersion>) -> Finding,
}

/// A probe workload built from an entry.
#[derive(Clone, Debug)]
pub enum Workload {
    Pod(Box<Pod>),
    Job(Box<Job>),
}

impl Entry {
    /// The manifest with its name and image filled in.
    pub fn yaml(&self, name: &str, image: &str) -> String {
        self.manifest
            .replace("{name}", name)
            .replace("{image}", image)
    }

    /// The probe pod (a Pod entry), named `name`, running `image`.
    pub fn pod(&self, name: &str, image: &str) -> Pod {
        assert_eq!(self.kind, Kind::Pod, "{} is a Job entry", self.id);
        self.object(name, image)
    }

    /// The probe Job (a Job entry), named `name`, running `image`.
    pub fn job(&self, name: &str, image: &str) -> Job {
        assert_eq!(self.kind, Kind::Job, "{} is a Pod entry", self.id);
        self.object(name, image)
    }

    /// The manifest decoded as `analyze` decodes its input: YAML into a
    /// JSON value, then the object from that. (Decoding YAML straight
    /// into a Pod or Job built a YAML decoder of every Kubernetes type
    /// they hold: megabytes of code in the binary, all of it resident in
    /// the controller's process.)
    fn object<T: serde::de::DeserializeOwned>(&self, name: &str, image: &str) -> T {
        let v = crate::input::decode(self.id, &self.yaml(name, image))
            .expect("catalogue manifests parse");
        serde_json::from_value(v).expect("catalogue manifests are their kind")
    }

    pub fn workload(&self, name: &str, image: &str) -> Workload {
        match self.kind {
            Kind::Pod => Workload::Pod(Box::new(self.pod(name, image))),
            Kind::Job => Workload::Job(Box::new(self.job(name, image))),
        }
    }
}

// ---------------------------------------------------------------- the catalogue

/// Three sidecars whose postStart takes 1 s: their starts fall in distinct
/// seconds when the kubelet keeps the order.
pub const START_ORDER: Entry = Entry {
    id: "start-order",
    promise: "sidecars start one by one, in manifest order",
    since: promises::ORDERED_START,
    catches: "KEP-753 ordered start (kubernetes#116429)",
    kind: Kind::Pod,
    manifest: r#"
apiVersion: v1
kind: Pod
metadata:
  name: {name}
spec:
  terminationGracePeriodSeconds: 2
  initContainers:
  - name: first-sidecar
    image: {image}
    imagePullPolicy: IfNotPresent
    restartPolicy: Always
    command: ["sh", "-c", "trap 'exit 0' TERM; sleep infinity & wait"]
    lifecycle:
      postStart:
        exec:
          command: ["sh", "-c", "sleep 1"]
  - name: second-sidecar
    image: {image}
    imagePullPolicy: IfNotPresent
    restartPolicy: Always
    command: ["sh", "-c", "trap 'exit 0' TERM; sleep infinity & wait"]
    lifecycle:
      postStart:
        exec:
          command: ["sh", "-c", "sleep 1"]
  - name: third-sidecar
    image: {image}
    imagePullPolicy: IfNotPresent
    restartPolicy: Always
    command: ["sh", "-c", "trap 'exit 0' TERM; sleep infinity & wait"]
    lifecycle:
      postStart:
        exec:
          command: ["sh", "-c", "sleep 1"]
  containers:
  - name: app
    image: {image}
    imagePullPolicy: IfNotPresent
    command: ["sh", "-c", "trap 'exit 0' TERM; sleep infinity & wait"]
"#,
    bug: None,
    next: judge_once_app_ran,
    judge: |o, k| by_rules(o, k, &[Rule::SidecarStartOrder]),
};

/// The sidecar's startupProbe passes ~4 s after it started (e2e t06).
pub const STARTUP_PROBE_GATE: Entry = Entry {
    id: "startup-probe-gate",
    promise: "the container after a sidecar starts only once the sidecar's startupProbe passed",
    since: promises::ORDERED_START,
    catches: "KEP-753 startup gate (kubernetes#116429)",
    kind: Kind::Pod,
    manifest: r#"
apiVersion: v1
kind: Pod
metadata:
  name: {name}
spec:
  terminationGracePeriodSeconds: 2
  containers:
  - name: app
    image: {image}
    imagePullPolicy: IfNotPresent
    command: ["sleep", "infinity"]
  initContainers:
  - name: sidecar
    image: {image}
    imagePullPolicy: IfNotPresent
    restartPolicy: Always
    command: ["sh", "-c", "sleep 4; touch /tmp/ok; sleep infinity"]
    startupProbe:
      exec:
        command: ["sh", "-c", "test -f /tmp/ok"]
      periodSeconds: 1
      failureThreshold: 30
"#,
    bug: None,
    next: judge_once_app_ran,
    judge: judge_startup_probe_gate,
};

/// The sidecar's postStart hook takes 3 s and then writes /gate/done; the
/// app exits 7 at once if it starts before that file exists.
pub const POSTSTART_GATE: Entry = Entry {
    id: "poststart-gate",
    promise: "the container after a sidecar starts only once the sidecar's postStart hook finished",
    since: promises::ORDERED_START,
    catches: "KEP-753 startup gate (kubernetes#116429)",
    kind: Kind::Pod,
    manifest: r#"
apiVersion: v1
kind: Pod
metadata:
  name: {name}
spec:
  terminationGracePeriodSeconds: 2
  volumes:
  - name: gate
    emptyDir: {}
  initContainers:
  - name: sidecar
    image: {image}
    imagePullPolicy: IfNotPresent
    restartPolicy: Always
    command: ["sh", "-c", "trap 'exit 0' TERM; sleep infinity & wait"]
    volumeMounts:
    - name: gate
      mountPath: /gate
    lifecycle:
      postStart:
        exec:
          command: ["sh", "-c", "sleep 3; touch /gate/done"]
  containers:
  - name: app
    image: {image}
    imagePullPolicy: IfNotPresent
    command: ["sh", "-c", "test -f /gate/done || exit 7; trap 'exit 0' TERM; sleep infinity & wait"]
    volumeMounts:
    - name: gate
      mountPath: /gate
"#,
    bug: None,
    next: |o| match app_exit_7(o) {
        Some(_) => Next::Judge,
        None => judge_once_app_ran(o),
    },
    judge: judge_poststart_gate,
};

/// Two sidecars with the article's passing probes (File 1), each postStart
/// 1 s, then the app (e2e t01).
pub const APPS_AFTER_SIDECARS: Entry = Entry {
    id: "apps-after-sidecars",
    promise: "app containers start after every sidecar started",
    since: promises::ORDERED_START,
    catches: "KEP-753 (kubernetes#116429); apps before sidecars is also the shape of kubernetes#120247 and #127793, which need a node reboot this probe does not do",
    kind: Kind::Pod,
    manifest: r#"
apiVersion: v1
kind: Pod
metadata:
  name: {name}
spec:
  terminationGracePeriodSeconds: 2
  containers:
  - name: app
    image: {image}
    imagePullPolicy: IfNotPresent
    command: ["sleep", "infinity"]
  initContainers:
  - name: first-sidecar
    image: {image}
    imagePullPolicy: IfNotPresent
    command: ["sleep", "infinity"]
    restartPolicy: Always
    lifecycle:
      postStart:
        exec:
          command: ["sh", "-c", "sleep 1"]
    livenessProbe:
      exec:
        command: ["sh", "-c", "exit 0"]
    readinessProbe:
      exec:
        command: ["sh", "-c", "exit 0"]
  - name: second-sidecar
    image: {image}
    imagePullPolicy: IfNotPresent
    command: ["sleep", "infinity"]
    restartPolicy: Always
    lifecycle:
      postStart:
        exec:
          command: ["sh", "-c", "sleep 1"]
    livenessProbe:
      exec:
        command: ["sh", "-c", "exit 0"]
    readinessProbe:
      exec:
        command: ["sh", "-c", "exit 0"]
"#,
    bug: None,
    next: judge_once_app_ran,
    judge: |o, k| by_rules(o, k, &[Rule::AppStartedBeforeSidecar]),
};

/// The article's File 5: the sidecar's readiness probe always fails.
const READINESS_FAILS: &str = r#"
apiVersion: v1
kind: Pod
metadata:
  name: {name}
spec:
  terminationGracePeriodSeconds: 2
  containers:
  - name: app
    image: {image}
    imagePullPolicy: IfNotPresent
    command: ["sleep", "infinity"]
  initContainers:
  - name: sidecar
    image: {image}
    imagePullPolicy: IfNotPresent
    command: ["sleep", "infinity"]
    restartPolicy: Always
    livenessProbe:
      exec:
        command: ["sh", "-c", "exit 0"]
    readinessProbe:
      exec:
        command: ["sh", "-c", "exit 1"]
      periodSeconds: 3
"#;

pub const READINESS_DOES_NOT_GATE: Entry = Entry {
    id: "readiness-does-not-gate",
    promise: "a sidecar's readinessProbe does not hold back the containers after it",
    since: promises::ORDERED_START,
    catches: "KEP-753: only startupProbe and postStart gate (kubernetes#116429)",
    kind: Kind::Pod,
    manifest: READINESS_FAILS,
    bug: None,
    next: judge_once_app_ran,
    judge: judge_readiness_does_not_gate,
};

/// The article's File 2: two sidecars and the app each take 3 s to stop
/// after SIGTERM, so whole seconds tell their ends apart (e2e t02).
pub const STOP_ORDER: Entry = Entry {
    id: "stop-order",
    promise: "on deletion the apps stop first, then the sidecars in reverse manifest order",
    since: promises::ORDERED_SHUTDOWN,
    catches: "kubernetes#120620 (serialized sidecar termination, v1.29.0)",
    kind: Kind::Pod,
    manifest: r#"
apiVersion: v1
kind: Pod
metadata:
  name: {name}
spec:
  containers:
  - name: app
    image: {image}
    imagePullPolicy: IfNotPresent
    command: ["sh", "-c", "trap 'sleep 3; echo app; exit 0' TERM; sleep infinity & wait"]
  initContainers:
  - name: first-sidecar
    image: {image}
    imagePullPolicy: IfNotPresent
    command: ["sh", "-c", "trap 'sleep 3; echo first-sidecar; exit 0' TERM; sleep infinity & wait"]
    restartPolicy: Always
  - name: second-sidecar
    image: {image}
    imagePullPolicy: IfNotPresent
    command: ["sh", "-c", "trap 'sleep 3; echo second-sidecar; exit 0' TERM; sleep infinity & wait"]
    restartPolicy: Always
"#,
    bug: None,
    next: delete_once_ready,
    judge: judge_stop_order,
};

/// A Job whose app exits after 2 s; the sidecar exits 0 only from its
/// SIGTERM trap (e2e t07).
pub const JOB_SIDECARS_STOPPED: Entry = Entry {
    id: "job-sidecars-stopped",
    promise: "a Job completes: once its app exits, the sidecars get SIGTERM",
    since: promises::JOB_SIDECARS_STOPPED,
    catches: "KEP-753 Job sidecars (kubernetes#116429)",
    kind: Kind::Job,
    manifest: r#"
apiVersion: batch/v1
kind: Job
metadata:
  name: {name}
spec:
  backoffLimit: 0
  template:
    spec:
      restartPolicy: Never
      terminationGracePeriodSeconds: 10
      containers:
      - name: app
        image: {image}
        imagePullPolicy: IfNotPresent
        command: ["sh", "-c", "sleep 2; echo done"]
      initContainers:
      - name: sidecar
        image: {image}
        imagePullPolicy: IfNotPresent
        restartPolicy: Always
        command: ["sh", "-c", "trap 'exit 0' TERM; sleep infinity & wait"]
"#,
    bug: None,
    next: |o| {
        let finished = o
            .job
            .as_ref()
            .is_some_and(|j| job_condition(j, "Complete") || job_condition(j, "Failed"));
        let ended = o
            .pods
            .last()
            .is_some_and(|p| matches!(phase(p), "Succeeded" | "Failed"));
        if finished && ended {
            Next::Judge
        } else {
            Next::Wait
        }
    },
    judge: judge_job,
};

/// The article's File 4 with a 2 s grace period: the sidecar's liveness
/// probe always fails (e2e t04).
pub const LIVENESS_RESTARTS_SIDECAR: Entry = Entry {
    id: "liveness-restarts-sidecar",
    promise: "a failing livenessProbe restarts the sidecar and leaves the app running",
    since: promises::GRACE_PERIOD,
    catches: "KEP-753 sidecar probes (kubernetes#116429)",
    kind: Kind::Pod,
    manifest: r#"
apiVersion: v1
kind: Pod
metadata:
  name: {name}
spec:
  terminationGracePeriodSeconds: 2
  containers:
  - name: app
    image: {image}
    imagePullPolicy: IfNotPresent
    command: ["sleep", "infinity"]
  initContainers:
  - name: sidecar
    image: {image}
    imagePullPolicy: IfNotPresent
    command: ["sleep", "infinity"]
    restartPolicy: Always
    livenessProbe:
      exec:
        command: ["sh", "-c", "exit 1"]
      periodSeconds: 3
      failureThreshold: 2
    readinessProbe:
      exec:
        command: ["sh", "-c", "exit 0"]
"#,
    bug: None,
    next: |o| {
        let restarted = o
            .pods
            .last()
            .and_then(|p| status(p, "sidecar"))
            .is_some_and(|c| {
                c.restart_count >= 1 && c.state.as_ref().is_some_and(|s| s.running.is_some())
            });
        if restarted { Next::Judge } else { Next::Wait }
    },
    judge: judge_liveness,
};

/// The article's File 5 (e2e t05): the pod must stay NotReady.
pub const READINESS_KEEPS_POD_NOT_READY: Entry = Entry {
    id: "readiness-keeps-pod-not-ready",
    promise: "a sidecar whose readinessProbe fails keeps the pod NotReady",
    since: promises::GRACE_PERIOD,
    catches: "KEP-753 sidecar probes (kubernetes#116429)",
    kind: Kind::Pod,
    manifest: READINESS_FAILS,
    bug: None,
    // Three readiness periods after the app started: failures seen.
    next: |o| match running_for(o, "app") {
        Some(s) if s >= 9 => Next::Judge,
        _ => Next::Wait,
    },
    judge: judge_readiness_keeps_not_ready,
};

/// kubernetes#125880's pod (tests/fixtures/bug-125880-delete-during-init):
/// second-sidecar's startupProbe never passes, so third-sidecar and the app
/// never start; the pod is deleted then. The sidecars exit 2 s after SIGTERM.
pub const DELETION_DURING_INIT: Entry = Entry {
    id: "deletion-during-init",
    promise: "a pod deleted during initialisation sends its running sidecars SIGTERM at once",
    since: promises::GRACE_PERIOD,
    catches: "kubernetes#125880 (fixed v1.29.8, v1.30.4, v1.31.0)",
    kind: Kind::Pod,
    manifest: r#"
apiVersion: v1
kind: Pod
metadata:
  name: {name}
spec:
  terminationGracePeriodSeconds: 30
  initContainers:
  - name: first-sidecar
    image: {image}
    imagePullPolicy: IfNotPresent
    restartPolicy: Always
    command: ["sh", "-c", "trap 'sleep 2; exit 0' TERM; sleep infinity & wait"]
  - name: second-sidecar
    image: {image}
    imagePullPolicy: IfNotPresent
    restartPolicy: Always
    command: ["sh", "-c", "trap 'sleep 2; exit 0' TERM; sleep infinity & wait"]
    startupProbe:
      exec:
        command: ["sh", "-c", "test -f /tmp/never"]
      periodSeconds: 1
      failureThreshold: 600
  - name: third-sidecar
    image: {image}
    imagePullPolicy: IfNotPresent
    restartPolicy: Always
    command: ["sh", "-c", "trap 'sleep 2; exit 0' TERM; sleep infinity & wait"]
  containers:
  - name: app
    image: {image}
    imagePullPolicy: IfNotPresent
    command: ["sh", "-c", "trap 'exit 0' TERM; sleep infinity & wait"]
"#,
    bug: Some((
        Rule::SidecarForceKilled,
        Shape {
            app_in_recreated_sandbox: false,
            deleted_during_init: true,
            sidecar_never_started: true,
            names_sidecar: true,
        },
    )),
    next: |o| {
        if o.deleted {
            return if o.gone { Next::Judge } else { Next::Wait };
        }
        match running_for(o, "second-sidecar") {
            Some(s) if s >= 3 => Next::Delete,
            _ => Next::Wait,
        }
    },
    judge: judge_deletion_during_init,
};

/// The app ignores SIGTERM and spends the 6 s grace period. `sidecar` needs
/// 30 s after SIGTERM, `quick-sidecar` 1 s (e2e t08b).
pub const GRACE_PERIOD_SHARED: Entry = Entry {
    id: "grace-period-shared",
    promise: "the grace period is shared: apps that spend it leave the sidecars the 2 s minimum, not a grace period of their own",
    since: promises::ORDERED_SHUTDOWN,
    catches: "kubernetes#120620 (serialized termination: sidecars wait within the pod's grace period)",
    kind: Kind::Pod,
    manifest: r#"
apiVersion: v1
kind: Pod
metadata:
  name: {name}
spec:
  terminationGracePeriodSeconds: 6
  containers:
  - name: app
    image: {image}
    imagePullPolicy: IfNotPresent
    command: ["sh", "-c", "trap '' TERM; sleep infinity & wait"]
  initContainers:
  - name: sidecar
    image: {image}
    imagePullPolicy: IfNotPresent
    restartPolicy: Always
    command: ["sh", "-c", "trap 'sleep 30; exit 0' TERM; sleep infinity & wait"]
  - name: quick-sidecar
    image: {image}
    imagePullPolicy: IfNotPresent
    restartPolicy: Always
    command: ["sh", "-c", "trap 'sleep 1; exit 0' TERM; sleep infinity & wait"]
"#,
    bug: None,
    next: delete_once_ready,
    judge: judge_grace_shared,
};

/// Every entry, in the order the table prints them.
pub const CATALOGUE: [&Entry; 11] = [
    &START_ORDER,
    &STARTUP_PROBE_GATE,
    &POSTSTART_GATE,
    &APPS_AFTER_SIDECARS,
    &READINESS_DOES_NOT_GATE,
    &STOP_ORDER,
    &JOB_SIDECARS_STOPPED,
    &LIVENESS_RESTARTS_SIDECAR,
    &READINESS_KEEPS_POD_NOT_READY,
    &DELETION_DURING_INIT,
    &GRACE_PERIOD_SHARED,
];

pub fn by_id(id: &str) -> Option<&'static Entry> {
    CATALOGUE.iter().copied().find(|e| e.id == id)
}

// ---------------------------------------------------------------- reading pods

pub fn phase(p: &Pod) -> &str {
    p.status
        .as_ref()
        .and_then(|s| s.phase.as_deref())
        .unwrap_or("")
}

pub fn status<'a>(p: &'a Pod, name: &str) -> Option<&'a ContainerStatus> {
    let s = p.status.as_ref()?;
    s.init_container_statuses
        .iter()
        .flatten()
        .chain(s.container_statuses.iter().flatten())
        .find(|c| c.name == name)
}

fn pod_ready(p: &Pod) -> Option<bool> {
    p.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == "Ready")
        .map(|c| c.status == "True")
}

fn job_condition(j: &Job, kind: &str) -> bool {
    j.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| cs.iter().any(|c| c.type_ == kind && c.status == "True"))
}

/// When the container's current run started (whole seconds).
fn running_since(p: &Pod, name: &str) -> Option<i64> {
    let st = status(p, name)?.state.as_ref()?;
    st.running
        .as_ref()?
        .started_at
        .as_ref()
        .map(|t| t.0.as_second())
}

/// For how many seconds the container's current run has been going on.
fn running_for(o: &Observed, name: &str) -> Option<i64> {
    o.pods
        .last()
        .and_then(|p| running_since(p, name))
        .map(|t| o.now - t)
}

/// The container's last run that ended: (startedAt, finishedAt, exit code).
fn ended(p: &Pod, name: &str) -> Option<(Option<i64>, i64, i32)> {
    let c = status(p, name)?;
    let t = c
        .state
        .as_ref()
        .and_then(|s| s.terminated.as_ref())
        .or_else(|| c.last_state.as_ref().and_then(|s| s.terminated.as_ref()))?;
    Some((
        t.started_at.as_ref().map(|x| x.0.as_second()),
        t.finished_at.as_ref()?.0.as_second(),
        t.exit_code,
    ))
}

/// The first seen start of the container's first run, from any version.
fn first_start(o: &Observed, name: &str) -> Option<i64> {
    o.pods
        .iter()
        .filter_map(|p| {
            let c = status(p, name)?;
            let run = |s: &Option<k8s_openapi::api::core::v1::ContainerState>| {
                let s = s.as_ref()?;
                s.running
                    .as_ref()
                    .and_then(|r| r.started_at.as_ref())
                    .or_else(|| s.terminated.as_ref().and_then(|t| t.started_at.as_ref()))
                    .map(|t| t.0.as_second())
            };
            [run(&c.last_state), run(&c.state)]
                .into_iter()
                .flatten()
                .min()
        })
        .min()
}

fn never_started(o: &Observed, name: &str) -> bool {
    o.pods.last().is_some_and(|p| {
        status(p, name).is_some_and(|c| {
            c.restart_count == 0
                && c.state.as_ref().is_some_and(|s| s.waiting.is_some())
                && c.last_state.as_ref().is_none_or(|s| s.terminated.is_none())
        })
    }) && first_start(o, name).is_none()
}

fn app_exit_7(o: &Observed) -> Option<i64> {
    o.pods
        .iter()
        .filter_map(|p| ended(p, "app"))
        .find(|(_, _, code)| *code == 7)
        .map(|(_, at, _)| at)
}

/// Count of Unhealthy events of `probe` ("Liveness", "Readiness") on `container`.
fn probe_failures(o: &Observed, container: &str, probe: &str) -> i32 {
    o.events
        .iter()
        .filter(|e| e.reason.as_deref() == Some("Unhealthy"))
        .filter(|e| {
            e.involved_object
                .field_path
                .as_deref()
                .is_some_and(|f| f.contains(&format!("{{{container}}}")))
        })
        .filter(|e| {
            e.message
                .as_deref()
                .is_some_and(|m| m.starts_with(&format!("{probe} probe failed")))
        })
        .map(|e| {
            e.series
                .as_ref()
                .and_then(|s| s.count)
                .unwrap_or(0)
                .max(e.count.unwrap_or(1))
        })
        .sum()
}

fn t(secs: i64) -> String {
    crate::time::rfc3339(secs)
}

/// The pod as last seen, one line per container (evidence of a timeout).
fn last_seen(o: &Observed) -> String {
    let Some(p) = o.pods.last() else {
        return "the pod was never seen".into();
    };
    let mut parts = vec![format!("phase {}", phase(p))];
    let s = p.status.as_ref();
    for c in s
        .and_then(|s| s.init_container_statuses.as_ref())
        .into_iter()
        .flatten()
        .chain(
            s.and_then(|s| s.container_statuses.as_ref())
                .into_iter()
                .flatten(),
        )
    {
        let state = match c.state.as_ref() {
            Some(st) if st.running.is_some() => "running".to_string(),
            Some(st) if st.terminated.is_some() => format!(
                "terminated (exit {})",
                st.terminated.as_ref().map_or(0, |t| t.exit_code)
            ),
            Some(st) => format!(
                "waiting ({})",
                st.waiting
                    .as_ref()
                    .and_then(|w| w.reason.clone())
                    .unwrap_or_default()
            ),
            None => "unknown".into(),
        };
        parts.push(format!("{} {state}, {} restarts", c.name, c.restart_count));
    }
    parts.join("; ")
}

fn timed_out(o: &Observed, waiting_for: &str) -> Finding {
    Finding::indeterminate(vec![format!(
        "timed out waiting for {waiting_for}; last seen: {}",
        last_seen(o)
    )])
}

// ---------------------------------------------------------------- next

fn judge_once_app_ran(o: &Observed) -> Next {
    // Two seconds after the app started: its Started event is recorded.
    match running_for(o, "app") {
        Some(s) if s >= 2 => Next::Judge,
        _ => Next::Wait,
    }
}

fn delete_once_ready(o: &Observed) -> Next {
    if o.deleted {
        return if o.gone { Next::Judge } else { Next::Wait };
    }
    let ready = o.pods.last().is_some_and(|p| pod_ready(p) == Some(true));
    match running_for(o, "app") {
        Some(s) if ready && s >= 2 => Next::Delete,
        _ => Next::Wait,
    }
}

// ---------------------------------------------------------------- judging

/// The engine's judgement of the probe pod (every version seen, merged).
pub fn engine(o: &Observed, kubelet: Option<KubeletVersion>) -> Result<Report, String> {
    let analyses = analyze_on(&o.pods, &o.events, &Config::default(), kubelet)
        .map_err(|e| format!("the engine could not read the pod: {e}"))?;
    analyses
        .into_iter()
        .next()
        .map(|a| a.report)
        .ok_or_else(|| "the pod was never seen".into())
}

/// The engine's checks of `rules`: Broken on an Error violation of them,
/// Kept when at least one check ran and every one is Verified.
pub fn by_rules(o: &Observed, kubelet: Option<KubeletVersion>, rules: &[Rule]) -> Finding {
    if o.pods.is_empty()
        || (o.timed_out
            && o.pods
                .last()
                .and_then(|p| running_since(p, "app"))
                .is_none())
    {
        return timed_out(o, "the app container to start");
    }
    match engine(o, kubelet) {
        Ok(r) => rules_finding(&r, rules),
        Err(e) => Finding::indeterminate(vec![e]),
    }
}

/// `by_rules` on a report.
pub fn rules_finding(r: &Report, rules: &[Rule]) -> Finding {
    let ids = rules.iter().map(|r| r.id()).collect::<Vec<_>>().join(", ");
    let broken: Vec<String> = r
        .violations
        .iter()
        .filter(|v| rules.contains(&v.rule) && v.severity == Severity::Error)
        .flat_map(|v| {
            std::iter::once(format!("{}: {}", v.rule.id(), v.message))
                .chain(v.evidence.iter().map(|e| format!("  {e}")))
        })
        .collect();
    if !broken.is_empty() {
        return Finding::broken(broken);
    }
    let checks: Vec<_> = r
        .checks
        .iter()
        .filter(|c| rules.contains(&c.rule) && c.outcome != Outcome::NotApplicable)
        .collect();
    let undecided: Vec<String> = checks
        .iter()
        .filter(|c| c.outcome != Outcome::Verified)
        .map(|c| {
            format!(
                "{} {:?}: {:?}, {}",
                c.rule.id(),
                c.containers,
                c.outcome,
                c.why.as_deref().unwrap_or("no reason given")
            )
        })
        .collect();
    if !undecided.is_empty() {
        return Finding::indeterminate(undecided);
    }
    if checks.is_empty() {
        let why: Vec<String> = r
            .checks
            .iter()
            .filter(|c| rules.contains(&c.rule))
            .filter_map(|c| c.why.clone())
            .chain(r.gaps.iter().cloned())
            .collect();
        let mut ev = vec![format!("the engine made no check of {ids}")];
        ev.extend(why);
        return Finding::indeterminate(ev);
    }
    Finding::kept(
        checks
            .iter()
            .map(|c| {
                format!(
                    "{} {:?} Verified{}",
                    c.rule.id(),
                    c.containers,
                    c.decided_by
                        .map(|s| format!(" by {}", crate::rules::source_name(s)))
                        .unwrap_or_default()
                )
            })
            .collect(),
    )
}

fn judge_startup_probe_gate(o: &Observed, k: Option<KubeletVersion>) -> Finding {
    let engine = by_rules(o, k, &[Rule::AppStartedBeforeSidecar]);
    let (Some(sc), Some(app)) = (first_start(o, "sidecar"), first_start(o, "app")) else {
        return engine;
    };
    // The probe file appears 4 s after the sidecar started: an app started
    // within 2 whole seconds of it started before the probe could pass.
    let direct = if app - sc <= 2 {
        Finding::broken(vec![format!(
            "app started at {}, {}s after the sidecar ({}), whose startupProbe cannot pass before 4 s",
            t(app),
            app - sc,
            t(sc)
        )])
    } else {
        Finding::kept(vec![format!(
            "app started {}s after the sidecar, whose startupProbe passes after about 4 s",
            app - sc
        )])
    };
    direct.and(engine)
}

fn judge_poststart_gate(o: &Observed, k: Option<KubeletVersion>) -> Finding {
    if let Some(at) = app_exit_7(o) {
        return Finding::broken(vec![format!(
            "the app ran before the sidecar's postStart hook finished: it found no /gate/done and exited 7 at {}",
            t(at)
        )]);
    }
    let Some(p) = o.pods.last() else {
        return timed_out(o, "the pod");
    };
    let app_ok =
        status(p, "app").is_some_and(|c| c.restart_count == 0) && running_since(p, "app").is_some();
    if !app_ok {
        return timed_out(o, "the app container to start");
    }
    let gap = first_start(o, "sidecar")
        .zip(first_start(o, "app"))
        .map(|(s, a)| format!(", {}s after the sidecar (its postStart takes 3 s)", a - s))
        .unwrap_or_default();
    Finding::kept(vec![format!(
        "the app's first run found /gate/done, written at the end of the sidecar's postStart hook, and runs{gap}"
    )])
    .and(by_rules(o, k, &[Rule::AppStartedBeforeSidecar]))
}

fn judge_readiness_does_not_gate(o: &Observed, _k: Option<KubeletVersion>) -> Finding {
    // Positive evidence: one status shows the app started while the
    // sidecar was not ready.
    let seen = o.pods.iter().find_map(|p| {
        let sc = status(p, "sidecar")?;
        let started = running_since(p, "app")?;
        (!sc.ready).then_some(started)
    });
    match seen {
        Some(at) => Finding::kept(vec![format!(
            "the app started at {} while the sidecar was not ready (its readinessProbe always fails)",
            t(at)
        )]),
        None => {
            let waiting = o.pods.last().is_some_and(|p| {
                status(p, "sidecar").is_some_and(|c| c.started == Some(true) && !c.ready)
                    && running_since(p, "app").is_none()
            });
            let sidecar_up = running_for(o, "sidecar").unwrap_or(0);
            if o.timed_out && waiting && sidecar_up >= 20 {
                Finding::broken(vec![format!(
                    "the sidecar has been running and started for {sidecar_up}s, not ready, and the app never started: the kubelet waited for readiness; last seen: {}",
                    last_seen(o)
                )])
            } else {
                timed_out(o, "the app container to start")
            }
        }
    }
}

fn judge_readiness_keeps_not_ready(o: &Observed, _k: Option<KubeletVersion>) -> Finding {
    let ready_while_failing: Option<&Pod> = o
        .pods
        .iter()
        .find(|p| pod_ready(p) == Some(true) && status(p, "sidecar").is_some_and(|c| !c.ready));
    if let Some(p) = ready_while_failing {
        return Finding::broken(vec![format!(
            "the pod was Ready while its sidecar was not (resourceVersion {})",
            p.metadata.resource_version.as_deref().unwrap_or("?")
        )]);
    }
    let failures = probe_failures(o, "sidecar", "Readiness");
    let running = running_for(o, "app").unwrap_or(0);
    let last_not_ready = o.pods.last().is_some_and(|p| {
        pod_ready(p) == Some(false) && status(p, "sidecar").is_some_and(|c| !c.ready)
    });
    if failures >= 2 && last_not_ready && running >= 6 {
        Finding::kept(vec![format!(
            "{failures} readiness failures of the sidecar; the pod stayed NotReady in all {} versions seen, {running}s after the app started",
            o.pods.len()
        )])
    } else {
        Finding::indeterminate(vec![format!(
            "{failures} readiness failures seen (events), app running for {running}s; last seen: {}",
            last_seen(o)
        )])
    }
}

fn judge_liveness(o: &Observed, _k: Option<KubeletVersion>) -> Finding {
    let Some(p) = o.pods.last() else {
        return timed_out(o, "the pod");
    };
    let (Some(sc), Some(app)) = (status(p, "sidecar"), status(p, "app")) else {
        return timed_out(o, "the containers' statuses");
    };
    let app_starts: std::collections::BTreeSet<i64> = o
        .pods
        .iter()
        .filter_map(|p| running_since(p, "app"))
        .collect();
    if app.restart_count > 0 || app_starts.len() > 1 {
        return Finding::broken(vec![format!(
            "the app was restarted too: restart count {}, runs started at {}",
            app.restart_count,
            app_starts
                .iter()
                .map(|s| t(*s))
                .collect::<Vec<_>>()
                .join(", ")
        )]);
    }
    let failures = probe_failures(o, "sidecar", "Liveness");
    if sc.restart_count >= 1 {
        return Finding::kept(vec![format!(
            "the sidecar restarted {} time(s) after {failures} liveness failures; the app kept its one run, started at {}",
            sc.restart_count,
            app_starts.iter().next().map_or("?".into(), |s| t(*s))
        )]);
    }
    // failureThreshold 2: six failures in a row without a restart is no delay.
    if o.timed_out && failures >= 6 {
        return Finding::broken(vec![format!(
            "{failures} liveness failures (failureThreshold 2) and the sidecar was never restarted"
        )]);
    }
    timed_out(o, "the sidecar's restart")
}

fn judge_stop_order(o: &Observed, k: Option<KubeletVersion>) -> Finding {
    if !o.gone {
        return timed_out(o, "the deleted pod to be gone");
    }
    let engine = match engine(o, k) {
        Ok(r) => rules_finding(&r, &[Rule::SidecarStoppedBeforeApp, Rule::SidecarStopOrder]),
        Err(e) => Finding::indeterminate(vec![e]),
    };
    let Some(p) = o.pods.last() else {
        return engine;
    };
    let end = |n: &str| ended(p, n).map(|(_, f, code)| (f, code));
    let (Some(app), Some(second), Some(first)) =
        (end("app"), end("second-sidecar"), end("first-sidecar"))
    else {
        return engine.and(Finding::indeterminate(vec![format!(
            "the last status seen does not show every container terminated: {}",
            last_seen(o)
        )]));
    };
    let times = format!(
        "finished app {}, second-sidecar {}, first-sidecar {} (exit codes {}, {}, {})",
        t(app.0),
        t(second.0),
        t(first.0),
        app.1,
        second.1,
        first.1
    );
    // Each takes 3 s after SIGTERM: in order, the ends are 3 s apart.
    let direct = if second.0 < app.0 || first.0 < second.0 {
        Finding::broken(vec![format!("out of order by whole seconds: {times}")])
    } else if second.0 - app.0 >= 2
        && first.0 - second.0 >= 2
        && [app.1, second.1, first.1] == [0, 0, 0]
    {
        Finding::kept(vec![times])
    } else {
        Finding::indeterminate(vec![format!(
            "the ends are not 3 s apart or a trap did not run: {times}"
        )])
    };
    direct.and(engine)
}

fn judge_job(o: &Observed, k: Option<KubeletVersion>) -> Finding {
    let engine = engine(o, k)
        .map(|r| rules_finding(&r, &[Rule::SidecarOutlivedApp]))
        .unwrap_or_else(|e| Finding::indeterminate(vec![e]));
    if engine.status == Status::Broken {
        return engine;
    }
    let Some(p) = o.pods.last() else {
        return timed_out(o, "the Job's pod");
    };
    if o.job.as_ref().is_some_and(|j| job_condition(j, "Failed")) {
        return Finding::indeterminate(vec![format!(
            "the Job failed; last seen: {}",
            last_seen(o)
        )]);
    }
    match (ended(p, "app"), ended(p, "sidecar")) {
        (Some((_, app_end, 0)), Some((_, sc_end, code))) => {
            let times = format!(
                "app finished at {} (exit 0), sidecar at {} (exit {code})",
                t(app_end),
                t(sc_end)
            );
            if code == 0 && sc_end >= app_end && phase(p) == "Succeeded" {
                Finding::kept(vec![format!(
                    "the Job completed; the sidecar exited 0 from its SIGTERM trap: {times}"
                )])
            } else if code == 137 {
                Finding::broken(vec![format!(
                    "the sidecar was SIGKILLed (exit 137) although it exits at once on SIGTERM: {times}"
                )])
            } else {
                Finding::indeterminate(vec![times])
            }
        }
        (Some((_, app_end, 0)), None) if o.timed_out => {
            let running = running_for(o, "sidecar").unwrap_or(0);
            if o.now - app_end > 10 + 30 && running > 0 {
                Finding::broken(vec![format!(
                    "the app finished at {} and the sidecar still runs {}s later (grace period 10 s)",
                    t(app_end),
                    o.now - app_end
                )])
            } else {
                timed_out(o, "the Job to complete")
            }
        }
        _ => timed_out(o, "the Job to complete"),
    }
}

fn judge_deletion_during_init(o: &Observed, k: Option<KubeletVersion>) -> Finding {
    let report = match engine(o, k) {
        Ok(r) => r,
        Err(e) => return Finding::indeterminate(vec![e]),
    };
    // The engine's Warning: a sidecar ran until the end of the grace period.
    let killed: Vec<String> = report
        .violations
        .iter()
        .filter(|v| v.rule == Rule::SidecarForceKilled)
        .filter(|v| {
            v.containers
                .first()
                .is_some_and(|c| c.ends_with("-sidecar"))
        })
        .flat_map(|v| {
            std::iter::once(format!("{}: {}", v.rule.id(), v.message))
                .chain(v.evidence.iter().map(|e| format!("  {e}")))
        })
        .collect();
    if !never_started(o, "third-sidecar") || !never_started(o, "app") {
        return Finding::indeterminate(vec![format!(
            "the scenario did not happen: third-sidecar or the app started; last seen: {}",
            last_seen(o)
        )]);
    }
    if !killed.is_empty() {
        return Finding::broken(killed);
    }
    if !o.gone {
        return timed_out(o, "the deleted pod to be gone");
    }
    let Some(p) = o.pods.last() else {
        return timed_out(o, "the pod");
    };
    // The user's deletion (the kubelet's final delete rewrites it to 0 s).
    let request = o.pods.iter().find_map(|p| {
        let m = &p.metadata;
        let grace = m.deletion_grace_period_seconds.filter(|g| *g > 0)?;
        Some((m.deletion_timestamp.as_ref()?.0.as_second() - grace, grace))
    });
    let mut ev = Vec::new();
    for name in ["first-sidecar", "second-sidecar"] {
        match ended(p, name) {
            Some((_, fin, 0)) => match request {
                Some((req, grace)) if fin - req <= grace / 2 => ev.push(format!(
                    "{name} exited 0 from its SIGTERM trap at {}, {}s after the deletion (grace {grace} s)",
                    t(fin),
                    fin - req
                )),
                Some((req, grace)) => {
                    return Finding::indeterminate(vec![format!(
                        "{name} exited 0 at {}, {}s after the deletion (grace {grace} s): not prompt, not at the deadline",
                        t(fin),
                        fin - req
                    )]);
                }
                None => {
                    return Finding::indeterminate(vec![
                        "the deletion's grace period was never seen (only the kubelet's final delete)".into(),
                    ]);
                }
            },
            Some((_, fin, code)) => {
                return Finding::broken(vec![format!(
                    "{name} ended at {} with exit code {code}: killed instead of stopped by SIGTERM",
                    t(fin)
                )]);
            }
            None => return timed_out(o, &format!("{name} to terminate")),
        }
    }
    Finding::kept(ev)
}

fn judge_grace_shared(o: &Observed, _k: Option<KubeletVersion>) -> Finding {
    if !o.gone {
        return timed_out(o, "the deleted pod to be gone");
    }
    let Some(p) = o.pods.last() else {
        return timed_out(o, "the pod");
    };
    let (Some(app), Some(slow), Some(quick)) = (
        ended(p, "app"),
        ended(p, "sidecar"),
        ended(p, "quick-sidecar"),
    ) else {
        return Finding::indeterminate(vec![format!(
            "the last status seen does not show every container terminated: {}",
            last_seen(o)
        )]);
    };
    let times = format!(
        "app killed at {} (exit {}), quick-sidecar ended {} (exit {}), sidecar {} (exit {})",
        t(app.1),
        app.2,
        t(quick.1),
        quick.2,
        t(slow.1),
        slow.2
    );
    if app.2 != 137 {
        return Finding::indeterminate(vec![format!(
            "the app did not spend the grace period (it ignores SIGTERM; exit {}): {times}",
            app.2
        )]);
    }
    // The app was SIGKILLed at the kubelet's deadline; the sidecars then get
    // SIGTERM with at least 2 s: quick-sidecar (1 s) exits 0, sidecar (30 s)
    // is SIGKILLed about 2 s later. A grace period of their own would have
    // given them 6 s more.
    let after = slow.1 - app.1;
    if quick.2 == 137 {
        Finding::broken(vec![format!(
            "quick-sidecar, which exits 1 s after SIGTERM, was SIGKILLed: less than the 2 s minimum: {times}"
        )])
    } else if slow.2 == 0 || after >= 5 {
        Finding::broken(vec![format!(
            "sidecar ended {after}s after the app's deadline: given a grace period of its own, not the 2 s minimum: {times}"
        )])
    } else if quick.2 == 0 && slow.2 == 137 && after <= 3 && quick.1 >= app.1 {
        Finding::kept(vec![format!(
            "{times}: the sidecars got the 2 s minimum after the deadline"
        )])
    } else {
        Finding::indeterminate(vec![times])
    }
}
