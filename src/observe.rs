//! Pod and Event, as the API serves them -> the engine's compact facts.
//!
//! The only module of the core that knows Kubernetes types. It copies what
//! the rules need and drops the rest, and it never fails on odd content: a
//! missing field becomes an unknown, which the judge reports as such.

use crate::model::{
    ContainerFacts, Declares, Deletion, EventFact, EventReason, PodFacts, ProbeKind, RestartPolicy,
    Role, Run, StateKind,
};
use crate::time::Moment;
use k8s_openapi::api::core::v1::{
    Container, ContainerStateTerminated, ContainerStatus, Event, Node, Pod,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

/// Why a Pod cannot be judged at all.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PodError {
    #[error("the pod has no metadata.name")]
    NoName,
    #[error("pod {0} has no spec")]
    NoSpec(String),
    #[error("pod {0} has more than 65535 containers")]
    TooManyContainers(String),
    #[error("pod {0} has no containers in its spec")]
    NoContainers(String),
    #[error("pod {0} has a container without a name")]
    UnnamedContainer(String),
}

fn secs(t: &Time) -> i64 {
    t.0.as_second()
}

fn restart_policy(p: Option<&str>) -> RestartPolicy {
    match p {
        Some("Never") => RestartPolicy::Never,
        Some("OnFailure") => RestartPolicy::OnFailure,
        _ => RestartPolicy::Always,
    }
}

fn declares(c: &Container) -> Declares {
    let lifecycle = c.lifecycle.as_ref();
    Declares {
        liveness: c.liveness_probe.is_some(),
        readiness: c.readiness_probe.is_some(),
        startup: c.startup_probe.is_some(),
        post_start: lifecycle.is_some_and(|l| l.post_start.is_some()),
        pre_stop: lifecycle.is_some_and(|l| l.pre_stop.is_some()),
    }
}

/// A run that has terminated (`lastState` or `state`).
fn ended_run(
    term: &ContainerStateTerminated,
    current: bool,
    note: &mut impl FnMut(&Option<Time>) -> Option<Moment>,
) -> Run {
    Run {
        started: note(&term.started_at),
        finished: note(&term.finished_at),
        exit_code: Some(term.exit_code),
        signal: term.signal,
        reason: term.reason.as_deref().map(Into::into),
        current,
        in_status: true,
        container: container_digest(term.container_id.as_deref()),
    }
}

/// A digest of a `containerID` (only ever compared within one process).
fn container_digest(id: Option<&str>) -> Option<std::num::NonZeroU64> {
    use std::hash::{Hash, Hasher};
    let id = id.filter(|id| !id.is_empty())?;
    let mut h = std::hash::DefaultHasher::new();
    id.hash(&mut h);
    std::num::NonZeroU64::new(h.finish())
}

/// Reads the runs of one container status (lastState first, then state).
fn runs_of(status: &ContainerStatus, latest: &mut i64) -> (StateKind, Vec<Run>) {
    let mut runs = Vec::with_capacity(2);
    let mut note = |t: &Option<Time>| -> Option<Moment> {
        t.as_ref().map(|t| {
            let s = secs(t);
            *latest = (*latest).max(s);
            Moment::status(s)
        })
    };
    if let Some(term) = status
        .last_state
        .as_ref()
        .and_then(|s| s.terminated.as_ref())
    {
        runs.push(ended_run(term, false, &mut note));
    }
    let mut kind = StateKind::Unknown;
    if let Some(state) = status.state.as_ref() {
        if let Some(r) = state.running.as_ref() {
            kind = StateKind::Running;
            runs.push(Run {
                started: note(&r.started_at),
                finished: None,
                exit_code: None,
                signal: None,
                reason: None,
                current: true,
                in_status: true,
                container: container_digest(status.container_id.as_deref()),
            });
        } else if let Some(term) = state.terminated.as_ref() {
            kind = StateKind::Terminated;
            runs.push(ended_run(term, true, &mut note));
        } else if state.waiting.is_some() {
            kind = StateKind::Waiting;
        }
    }
    runs.shrink_to_fit();
    (kind, runs)
}

/// The kubelet version a Node reports (`status.nodeInfo.kubeletVersion`);
/// `None` when it reports none or one that does not parse.
pub fn kubelet_version_of(node: &Node) -> Option<crate::kubelet::KubeletVersion> {
    let info = node.status.as_ref()?.node_info.as_ref()?;
    crate::kubelet::KubeletVersion::parse(&info.kubelet_version)
}

/// Whether a pod declares a native sidecar (an init container with
/// `restartPolicy: Always`): read from the raw object, nothing projected.
pub fn has_native_sidecar(pod: &Pod) -> bool {
    pod.spec
        .as_ref()
        .and_then(|s| s.init_containers.as_deref())
        .is_some_and(|init| {
            init.iter()
                .any(|c| c.restart_policy.as_deref() == Some("Always"))
        })
}

/// Projects a Pod onto the facts the engine needs.
pub fn pod_facts(pod: &Pod) -> Result<PodFacts, PodError> {
    let meta = &pod.metadata;
    let name = meta.name.clone().ok_or(PodError::NoName)?;
    let spec = pod
        .spec
        .as_ref()
        .ok_or_else(|| PodError::NoSpec(name.clone()))?;
    let status = pod.status.as_ref();
    let mut latest = meta.creation_timestamp.as_ref().map_or(i64::MIN, secs);

    let init = spec.init_containers.as_deref().unwrap_or_default();
    let total = init.len() + spec.containers.len();
    if total > usize::from(u16::MAX) {
        return Err(PodError::TooManyContainers(name));
    }
    if spec.containers.is_empty() {
        return Err(PodError::NoContainers(name));
    }
    if init
        .iter()
        .chain(&spec.containers)
        .any(|c| c.name.is_empty())
    {
        return Err(PodError::UnnamedContainer(name));
    }
    let mut containers = Vec::with_capacity(total);
    let lists = [
        (
            init,
            status.and_then(|s| s.init_container_statuses.as_deref()),
        ),
        (
            spec.containers.as_slice(),
            status.and_then(|s| s.container_statuses.as_deref()),
        ),
    ];
    for (list_no, (specs, statuses)) in lists.into_iter().enumerate() {
        for (index, c) in specs.iter().enumerate() {
            let role = match (list_no, c.restart_policy.as_deref()) {
                (1, _) => Role::App,
                (_, Some("Always")) => Role::Sidecar,
                _ => Role::Init,
            };
            let st = statuses.and_then(|all| all.iter().find(|s| s.name == c.name));
            let (state, runs) = st.map_or((StateKind::Unknown, Vec::new()), |s| {
                runs_of(s, &mut latest)
            });
            containers.push(ContainerFacts {
                name: c.name.clone(),
                role,
                index: index as u16,
                declares: declares(c),
                state,
                restarts: st.map_or(0, |s| s.restart_count.max(0) as u32),
                started: st.and_then(|s| s.started),
                ready: st.is_some_and(|s| s.ready),
                runs,
            });
        }
    }
    let mut sandbox_ready = None;
    if let Some(conds) = status.and_then(|s| s.conditions.as_ref()) {
        for c in conds {
            if let Some(t) = &c.last_transition_time {
                latest = latest.max(secs(t));
                if c.type_ == "PodReadyToStartContainers" && c.status == "True" {
                    sandbox_ready = Some(secs(t));
                }
            }
        }
    }
    let deletion = meta.deletion_timestamp.as_ref().map(|t| Deletion {
        deadline_secs: secs(t),
        grace_secs: meta
            .deletion_grace_period_seconds
            .unwrap_or(spec.termination_grace_period_seconds.unwrap_or(30)),
    });
    let phase = status.and_then(|s| s.phase.as_deref());
    Ok(PodFacts {
        namespace: meta.namespace.clone().unwrap_or_default(),
        name,
        uid: meta.uid.clone().unwrap_or_default(),
        restart_policy: restart_policy(spec.restart_policy.as_deref()),
        grace_secs: spec.termination_grace_period_seconds.unwrap_or(30),
        deletion,
        finished_phase: matches!(phase, Some("Succeeded" | "Failed")),
        gone: false,
        has_status: status.is_some(),
        sandbox_ready,
        containers,
        latest_secs: latest,
    })
}

/// What an Event is to a given pod.
#[derive(Debug, PartialEq, Eq)]
pub enum EventFit {
    /// An event about this pod that the engine uses.
    Used(EventFact),
    /// About this pod, but not a reason (or container) the rules look at.
    Unused,
    /// About another object.
    OtherObject,
}

/// The kubelet names events `<object>.<hex UnixNano>`; returns that time when
/// it agrees (within a second) with the event's whole-second timestamp.
fn nanos_from_name(name: &str, first_secs: i64) -> Option<i64> {
    let (_, hex) = name.rsplit_once('.')?;
    if hex.is_empty() || hex.len() > 16 {
        return None;
    }
    let n = i64::try_from(u64::from_str_radix(hex, 16).ok()?).ok()?;
    let s = n.div_euclid(1_000_000_000);
    (s.abs_diff(first_secs) <= 1).then_some(n)
}

fn probe_kind(message: Option<&str>, declares: Option<Declares>) -> ProbeKind {
    // The reason (Unhealthy) says a probe failed; only the message names its kind.
    let m = message.unwrap_or_default();
    for (prefix, kind) in [
        ("Liveness", ProbeKind::Liveness),
        ("Readiness", ProbeKind::Readiness),
        ("Startup", ProbeKind::Startup),
    ] {
        if m.starts_with(prefix) {
            return kind;
        }
    }
    match declares {
        Some(Declares {
            liveness: true,
            readiness: false,
            startup: false,
            ..
        }) => ProbeKind::Liveness,
        Some(Declares {
            liveness: false,
            readiness: true,
            startup: false,
            ..
        }) => ProbeKind::Readiness,
        Some(Declares {
            liveness: false,
            readiness: false,
            startup: true,
            ..
        }) => ProbeKind::Startup,
        _ => ProbeKind::Unknown,
    }
}

/// Parses `spec.initContainers{NAME}` / `spec.containers{NAME}`.
fn field_path(path: &str) -> Option<(bool, &str)> {
    let (list, rest) = path.split_once('{')?;
    let name = rest.strip_suffix('}')?;
    match list {
        "spec.initContainers" => Some((true, name)),
        "spec.containers" => Some((false, name)),
        _ => None,
    }
}

/// An Event read once, without its pod: what it says, in a compact form,
/// for the pod `RawEvent::read` names beside it. The controller keeps these
/// (not whole Events) for pods it has not seen yet; `RawEvent::fit` places
/// one on a pod. `event_fact` is the two steps at once.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RawEvent {
    /// The pod's uid, when the event names one.
    pub uid: Option<Box<str>>,
    /// What the event says; None when no rule reads it.
    pub body: Option<RawBody>,
}

/// The part of an Event the rules read, before its container is resolved.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RawBody {
    key: Box<str>,
    /// (init container list?, container name) from `involvedObject.fieldPath`.
    container: Option<(bool, Box<str>)>,
    reason: EventReason,
    /// Kept only for `Unhealthy`: it names the probe's kind.
    message: Option<Box<str>>,
    count: u32,
    first: Moment,
    last: Moment,
}

impl RawBody {
    /// When the event last happened (unix seconds).
    pub fn last_secs(&self) -> i64 {
        self.last.secs
    }
}

impl RawEvent {
    /// The pod the event is about, as (namespace, name) (the object's
    /// namespace, else the event's own), and what it says; None when it is
    /// not about a pod (or names none).
    pub fn read(ev: &Event) -> Option<((String, String), RawEvent)> {
        let obj = &ev.involved_object;
        if obj.kind.as_deref().is_some_and(|k| k != "Pod") {
            return None;
        }
        let pod = obj.name.clone()?;
        let namespace = obj
            .namespace
            .clone()
            .or_else(|| ev.metadata.namespace.clone())
            .unwrap_or_default();
        let raw = RawEvent {
            uid: obj.uid.as_deref().filter(|u| !u.is_empty()).map(Into::into),
            body: raw_body(ev),
        };
        Some(((namespace, pod), raw))
    }

    /// What this event is to `pod`, the pod of the name it was read with.
    pub fn fit(&self, pod: &PodFacts) -> EventFit {
        let uid = self.uid.as_deref().unwrap_or_default();
        if !(uid.is_empty() || pod.uid.is_empty() || uid == pod.uid) {
            return EventFit::OtherObject;
        }
        let Some(b) = &self.body else {
            return EventFit::Unused;
        };
        let container = b
            .container
            .as_ref()
            .and_then(|(init, name)| pod.container_index(*init, name));
        if container.is_none() && !b.reason.pod_level() {
            return EventFit::Unused;
        }
        let probe = (b.reason == EventReason::Unhealthy).then(|| {
            probe_kind(
                b.message.as_deref(),
                container.map(|i| pod.containers[i].declares),
            )
        });
        EventFit::Used(EventFact {
            key: b.key.clone(),
            // A pod has far fewer than 65,536 containers.
            container: container.and_then(|i| u16::try_from(i).ok()),
            reason: b.reason,
            probe,
            count: b.count,
            first: b.first,
            last: b.last,
        })
    }
}

/// The rules' part of an Event; None when they read nothing of it.
fn raw_body(ev: &Event) -> Option<RawBody> {
    let reason = ev.reason.as_deref().and_then(EventReason::parse)?;
    // "Startup probe errored and resulted in unknown state": the kubelet
    // discards errored results (seen on a stopping container); not a failure.
    if reason == EventReason::Unhealthy
        && ev
            .message
            .as_deref()
            .is_some_and(|m| m.contains("probe errored"))
    {
        return None;
    }
    let container = ev
        .involved_object
        .field_path
        .as_deref()
        .and_then(field_path)
        .map(|(init, name)| (init, name.into()));
    if container.is_none() && !reason.pod_level() {
        return None;
    }
    let micro = |t: &k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime| {
        (t.0.as_second(), i64::try_from(t.0.as_nanosecond()).ok())
    };
    let (first_secs, first_nanos) = match (&ev.first_timestamp, &ev.event_time) {
        (Some(t), _) => (secs(t), None),
        (None, Some(t)) => micro(t),
        (None, None) => (secs(ev.metadata.creation_timestamp.as_ref()?), None),
    };
    let name = ev.metadata.name.as_deref().unwrap_or_default();
    let first_nanos = first_nanos.or_else(|| nanos_from_name(name, first_secs));
    let count = ev
        .series
        .as_ref()
        .and_then(|s| s.count)
        .or(ev.count)
        .unwrap_or(1)
        .max(1) as u32;
    let first = Moment::event(first_secs, first_nanos);
    let last = match (
        &ev.last_timestamp,
        ev.series
            .as_ref()
            .and_then(|s| s.last_observed_time.as_ref()),
    ) {
        _ if count == 1 => first,
        (_, Some(t)) => {
            let (s, n) = micro(t);
            Moment::event(s, n)
        }
        (Some(t), None) => Moment::event(secs(t).max(first_secs), None),
        (None, None) => first,
    };
    Some(RawBody {
        key: if name.is_empty() {
            // The container as the field path names it: the same key before
            // and after the pod is known.
            let c = container
                .as_ref()
                .map(|(i, n): &(bool, Box<str>)| (*i, &**n));
            format!("{reason:?}/{c:?}/{first_secs}").into()
        } else {
            name.into()
        },
        container,
        message: (reason == EventReason::Unhealthy)
            .then(|| ev.message.as_deref().map(Into::into))
            .flatten(),
        reason,
        count,
        first,
        last,
    })
}

/// Decides whether `ev` is about `pod` and, if the rules use it, projects it.
pub fn event_fact(pod: &PodFacts, ev: &Event) -> EventFit {
    let same = |a: &str, b: &str| a.is_empty() || b.is_empty() || a == b;
    match RawEvent::read(ev) {
        Some(((namespace, name), raw)) if name == pod.name && same(&namespace, &pod.namespace) => {
            raw.fit(pod)
        }
        _ => EventFit::OtherObject,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn name_nanos_must_agree_with_timestamp() {
        // 0x18532d6f5a1b2c3d ns = 1752450451.7 s
        let n = 0x1853_2d6f_5a1b_2c3d_i64;
        let s = n / 1_000_000_000;
        assert_eq!(nanos_from_name("pod.18532d6f5a1b2c3d", s), Some(n));
        assert_eq!(nanos_from_name("pod.18532d6f5a1b2c3d", s + 5), None);
        assert_eq!(nanos_from_name("pod-without-suffix", s), None);
        assert_eq!(nanos_from_name("pod.zz", s), None);
    }

    #[test]
    fn odd_pods_are_errors_not_panics() {
        let pod = |v: serde_json::Value| serde_json::from_value::<Pod>(v).unwrap();
        let e = pod_facts(&pod(serde_json::json!({"metadata": {}}))).unwrap_err();
        assert_eq!(e, PodError::NoName);
        let e = pod_facts(&pod(serde_json::json!({"metadata": {"name": "p"}}))).unwrap_err();
        assert_eq!(e.to_string(), "pod p has no spec");
        let e = pod_facts(&pod(
            serde_json::json!({"metadata": {"name": "p"}, "spec": {"containers": [{}]}}),
        ));
        assert_eq!(e.unwrap_err(), PodError::UnnamedContainer("p".into()));
        let e = pod_facts(&pod(
            serde_json::json!({"metadata": {"name": "p"}, "spec": {"containers": []}}),
        ));
        assert_eq!(e.unwrap_err(), PodError::NoContainers("p".into()));
    }

    #[test]
    fn field_paths() {
        assert_eq!(
            field_path("spec.initContainers{proxy}"),
            Some((true, "proxy"))
        );
        assert_eq!(field_path("spec.containers{app}"), Some((false, "app")));
        assert_eq!(field_path("spec.ephemeralContainers{dbg}"), None);
        assert_eq!(field_path("spec.containers{app"), None);
    }

    #[test]
    fn probe_kind_from_message_or_declaration() {
        assert_eq!(
            probe_kind(Some("Liveness probe failed: "), None),
            ProbeKind::Liveness
        );
        let only_readiness = Declares {
            readiness: true,
            ..Default::default()
        };
        assert_eq!(
            probe_kind(Some("probe failed"), Some(only_readiness)),
            ProbeKind::Readiness
        );
        assert_eq!(probe_kind(None, None), ProbeKind::Unknown);
    }
}
