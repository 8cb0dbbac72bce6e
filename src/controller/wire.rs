//! What the controller decodes from the API server as JSON: Pods, Nodes
//! and its own reports without `metadata.managedFields` (Events come in
//! protobuf: `pb`).
//!
//! The API server sends every object with its field ownership: in a pod of
//! the load harness 2.2 KB of 5.5 KB, which k8s-openapi decodes into a tree
//! of JSON maps, more allocations than any other field. No rule reads it.
//! These types skip it while parsing (serde ignores a field it has no place
//! for without building it) and turn into the k8s-openapi types that the
//! store and `analyze` take, so nothing past the watch changes. A pod skips
//! more: every field of its spec and status that nothing reads (`WirePod`).

use crate::crd::{ReportSpec, ReportStatus, SidecarOrderReport};
use k8s_openapi::api::core::v1::{
    Container, ContainerState, ContainerStateRunning, ContainerStateTerminated,
    ContainerStateWaiting, ContainerStatus, Event, EventSeries, EventSource, Lifecycle,
    LifecycleHandler, Node, NodeSpec, NodeStatus, ObjectReference, Pod, PodCondition, PodSpec,
    PodStatus, Probe,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta, OwnerReference, Time};
use kube::runtime::watcher::Event as WEvent;
use serde::de::IgnoredAny;
use serde::{Deserialize, Deserializer};
use std::borrow::Cow;
use std::collections::BTreeMap;

/// `ObjectMeta` without `managedFields`.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Meta {
    annotations: Option<BTreeMap<String, String>>,
    creation_timestamp: Option<Time>,
    deletion_grace_period_seconds: Option<i64>,
    deletion_timestamp: Option<Time>,
    finalizers: Option<Vec<String>>,
    generate_name: Option<String>,
    generation: Option<i64>,
    labels: Option<BTreeMap<String, String>>,
    name: Option<String>,
    namespace: Option<String>,
    owner_references: Option<Vec<OwnerReference>>,
    resource_version: Option<String>,
    self_link: Option<String>,
    uid: Option<String>,
}

fn meta<'de, D: Deserializer<'de>>(d: D) -> Result<ObjectMeta, D::Error> {
    let m = Meta::deserialize(d)?;
    Ok(ObjectMeta {
        annotations: m.annotations,
        creation_timestamp: m.creation_timestamp,
        deletion_grace_period_seconds: m.deletion_grace_period_seconds,
        deletion_timestamp: m.deletion_timestamp,
        finalizers: m.finalizers,
        generate_name: m.generate_name,
        generation: m.generation,
        labels: m.labels,
        managed_fields: None,
        name: m.name,
        namespace: m.namespace,
        owner_references: m.owner_references,
        resource_version: m.resource_version,
        self_link: m.self_link,
        uid: m.uid,
    })
}

/// The k8s-openapi constants of `$k8s` for `$wire`, so that `Api<$wire>`
/// reads the same URLs.
macro_rules! same_resource_as {
    ($wire:ty, $k8s:ty) => {
        impl k8s_openapi::Resource for $wire {
            const API_VERSION: &'static str = <$k8s as k8s_openapi::Resource>::API_VERSION;
            const GROUP: &'static str = <$k8s as k8s_openapi::Resource>::GROUP;
            const KIND: &'static str = <$k8s as k8s_openapi::Resource>::KIND;
            const VERSION: &'static str = <$k8s as k8s_openapi::Resource>::VERSION;
            const URL_PATH_SEGMENT: &'static str =
                <$k8s as k8s_openapi::Resource>::URL_PATH_SEGMENT;
            type Scope = <$k8s as k8s_openapi::Resource>::Scope;
        }
        impl k8s_openapi::Metadata for $wire {
            type Ty = ObjectMeta;
            fn metadata(&self) -> &ObjectMeta {
                &self.metadata
            }
            fn metadata_mut(&mut self) -> &mut ObjectMeta {
                &mut self.metadata
            }
        }
    };
}

/// `$wire`: a `$k8s` of the usual shape (metadata, spec, status) decoded
/// without its managed fields, its spec and status as `$spec` and
/// `$status` (the k8s-openapi types, or leaner ones that turn into them).
macro_rules! spec_and_status {
    ($(#[$doc:meta])* $wire:ident, $k8s:ident, $spec:ty, $status:ty) => {
        $(#[$doc])*
        #[derive(Clone, Debug, Deserialize)]
        pub struct $wire {
            #[serde(default, deserialize_with = "meta")]
            metadata: ObjectMeta,
            spec: Option<$spec>,
            status: Option<$status>,
        }
        same_resource_as!($wire, $k8s);

        impl From<$wire> for $k8s {
            fn from(o: $wire) -> $k8s {
                $k8s {
                    metadata: o.metadata,
                    spec: o.spec.map(Into::into),
                    status: o.status.map(Into::into),
                }
            }
        }
    };
}

spec_and_status!(
    /// A watched Pod: its metadata (less managed fields) and, of its spec and
    /// status, only what the controller reads (`observe::pod_facts`,
    /// `has_native_sidecar`, the pod's node). The rest (environment, volumes,
    /// resources, images, probe and hook bodies, messages) is skipped while
    /// parsing. In a profile of a 5,000-pod take-in, decoding the pod watch
    /// was 8 % of the controller's CPU (the writes and their HTTP about
    /// half); the bench `watch-pod` (benches/engine.rs) went from 12.9 to
    /// 9.0 µs per kwok pod and from 16.6 to 9.6 µs per recorded real pod
    /// (with the pods' facts; tests/watch/rec-pods.jsonl). tests/wire.rs checks
    /// that every pod of the recorded real-kubelet stream and of the fixtures
    /// gives the same facts both ways.
    WirePod, Pod, LeanPodSpec, LeanPodStatus
);

#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct LeanPodSpec {
    #[serde(default)]
    containers: Vec<LeanContainer>,
    init_containers: Option<Vec<LeanContainer>>,
    node_name: Option<String>,
    restart_policy: Option<String>,
    termination_grace_period_seconds: Option<i64>,
}

/// A container of the spec: its name, its restart policy, and which probes
/// and hooks it declares (whether, not what).
#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct LeanContainer {
    #[serde(default)]
    name: String,
    restart_policy: Option<String>,
    liveness_probe: Option<IgnoredAny>,
    readiness_probe: Option<IgnoredAny>,
    startup_probe: Option<IgnoredAny>,
    lifecycle: Option<LeanLifecycle>,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct LeanLifecycle {
    post_start: Option<IgnoredAny>,
    pre_stop: Option<IgnoredAny>,
}

impl From<LeanPodSpec> for PodSpec {
    fn from(s: LeanPodSpec) -> PodSpec {
        let list = |l: Vec<LeanContainer>| l.into_iter().map(Container::from).collect::<Vec<_>>();
        PodSpec {
            containers: list(s.containers),
            init_containers: s.init_containers.map(list),
            node_name: s.node_name,
            restart_policy: s.restart_policy,
            termination_grace_period_seconds: s.termination_grace_period_seconds,
            ..PodSpec::default()
        }
    }
}

impl From<LeanContainer> for Container {
    fn from(c: LeanContainer) -> Container {
        // A declared probe or hook, its body not kept.
        let probe = |p: Option<IgnoredAny>| p.map(|_| Probe::default());
        let hook = |h: Option<IgnoredAny>| h.map(|_| LifecycleHandler::default());
        Container {
            name: c.name,
            restart_policy: c.restart_policy,
            liveness_probe: probe(c.liveness_probe),
            readiness_probe: probe(c.readiness_probe),
            startup_probe: probe(c.startup_probe),
            lifecycle: c.lifecycle.map(|l| Lifecycle {
                post_start: hook(l.post_start),
                pre_stop: hook(l.pre_stop),
                ..Lifecycle::default()
            }),
            ..Container::default()
        }
    }
}

#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct LeanPodStatus {
    conditions: Option<Vec<LeanCondition>>,
    container_statuses: Option<Vec<LeanContainerStatus>>,
    init_container_statuses: Option<Vec<LeanContainerStatus>>,
    phase: Option<String>,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct LeanCondition {
    last_transition_time: Option<Time>,
    #[serde(default)]
    status: String,
    #[serde(default, rename = "type")]
    type_: String,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct LeanContainerStatus {
    #[serde(rename = "containerID")]
    container_id: Option<String>,
    last_state: Option<LeanState>,
    #[serde(default)]
    name: String,
    #[serde(default)]
    ready: bool,
    #[serde(default)]
    restart_count: i32,
    started: Option<bool>,
    state: Option<LeanState>,
}

/// A container state: a waiting one only as such (its reason is not read).
#[derive(Clone, Debug, Deserialize)]
struct LeanState {
    running: Option<ContainerStateRunning>,
    terminated: Option<LeanTerminated>,
    waiting: Option<IgnoredAny>,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct LeanTerminated {
    #[serde(rename = "containerID")]
    container_id: Option<String>,
    #[serde(default)]
    exit_code: i32,
    finished_at: Option<Time>,
    reason: Option<String>,
    signal: Option<i32>,
    started_at: Option<Time>,
}

impl From<LeanPodStatus> for PodStatus {
    fn from(s: LeanPodStatus) -> PodStatus {
        let list = |l: Vec<LeanContainerStatus>| {
            l.into_iter().map(ContainerStatus::from).collect::<Vec<_>>()
        };
        PodStatus {
            conditions: s.conditions.map(|c| {
                c.into_iter()
                    .map(|c| PodCondition {
                        last_transition_time: c.last_transition_time,
                        status: c.status,
                        type_: c.type_,
                        ..PodCondition::default()
                    })
                    .collect()
            }),
            container_statuses: s.container_statuses.map(list),
            init_container_statuses: s.init_container_statuses.map(list),
            phase: s.phase,
            ..PodStatus::default()
        }
    }
}

impl From<LeanContainerStatus> for ContainerStatus {
    fn from(c: LeanContainerStatus) -> ContainerStatus {
        ContainerStatus {
            container_id: c.container_id,
            last_state: c.last_state.map(Into::into),
            name: c.name,
            ready: c.ready,
            restart_count: c.restart_count,
            started: c.started,
            state: c.state.map(Into::into),
            ..ContainerStatus::default()
        }
    }
}

impl From<LeanState> for ContainerState {
    fn from(s: LeanState) -> ContainerState {
        ContainerState {
            running: s.running,
            terminated: s.terminated.map(|t| ContainerStateTerminated {
                container_id: t.container_id,
                exit_code: t.exit_code,
                finished_at: t.finished_at,
                reason: t.reason,
                signal: t.signal,
                started_at: t.started_at,
                ..ContainerStateTerminated::default()
            }),
            waiting: s.waiting.map(|_| ContainerStateWaiting::default()),
        }
    }
}

spec_and_status!(
    /// A watched Node.
    WireNode, Node, NodeSpec, NodeStatus
);

/// A core/v1 Event as JSON. The controller watches Events in protobuf
/// (`pb`); this is the JSON form that decoding is checked against
/// (tests/pb_events.rs), itself checked against k8s-openapi's.
#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WireEvent {
    #[serde(default, deserialize_with = "meta")]
    metadata: ObjectMeta,
    action: Option<String>,
    count: Option<i32>,
    event_time: Option<MicroTime>,
    first_timestamp: Option<Time>,
    /// Required by the API; an Event without it is about no object (the
    /// store ignores it) rather than a watch error.
    #[serde(default)]
    involved_object: ObjectReference,
    last_timestamp: Option<Time>,
    message: Option<String>,
    reason: Option<String>,
    related: Option<ObjectReference>,
    reporting_component: Option<String>,
    reporting_instance: Option<String>,
    series: Option<EventSeries>,
    source: Option<EventSource>,
    #[serde(rename = "type")]
    type_: Option<String>,
}
same_resource_as!(WireEvent, Event);

impl From<WireEvent> for Event {
    fn from(e: WireEvent) -> Event {
        Event {
            action: e.action,
            count: e.count,
            event_time: e.event_time,
            first_timestamp: e.first_timestamp,
            involved_object: e.involved_object,
            last_timestamp: e.last_timestamp,
            message: e.message,
            metadata: e.metadata,
            reason: e.reason,
            related: e.related,
            reporting_component: e.reporting_component,
            reporting_instance: e.reporting_instance,
            series: e.series,
            source: e.source,
            type_: e.type_,
        }
    }
}

/// A watch event of a wire type as one of its k8s-openapi type.
pub fn into_k8s<W: Into<K>, K>(e: WEvent<W>) -> WEvent<K> {
    match e {
        WEvent::Apply(o) => WEvent::Apply(o.into()),
        WEvent::Delete(o) => WEvent::Delete(o.into()),
        WEvent::Init => WEvent::Init,
        WEvent::InitApply(o) => WEvent::InitApply(o.into()),
        WEvent::InitDone => WEvent::InitDone,
    }
}

/// A stored report as the writer and a takeover read it (answers to its
/// applies, gets, lists): the report without its managed fields.
#[derive(Clone, Debug, Deserialize)]
pub struct WireReport {
    #[serde(default, deserialize_with = "meta")]
    pub metadata: ObjectMeta,
    pub spec: ReportSpec,
    pub status: Option<ReportStatus>,
}

/// `kube::Resource` as `SidecarOrderReport`'s, so that `Api<$wire>`
/// reads and writes the reports' URLs.
macro_rules! a_report {
    ($wire:ty) => {
        impl kube::Resource for $wire {
            type DynamicType = ();
            type Scope = <SidecarOrderReport as kube::Resource>::Scope;
            fn kind(dt: &()) -> Cow<'_, str> {
                SidecarOrderReport::kind(dt)
            }
            fn group(dt: &()) -> Cow<'_, str> {
                SidecarOrderReport::group(dt)
            }
            fn version(dt: &()) -> Cow<'_, str> {
                SidecarOrderReport::version(dt)
            }
            fn plural(dt: &()) -> Cow<'_, str> {
                SidecarOrderReport::plural(dt)
            }
            fn meta(&self) -> &ObjectMeta {
                &self.metadata
            }
            fn meta_mut(&mut self) -> &mut ObjectMeta {
                &mut self.metadata
            }
        }
    };
}

a_report!(WireReport);
a_report!(WrittenReport);

/// The answer to a status write, of which the writer reads only the
/// version stored (it knows the status it sent): the rest of the report,
/// about 3 KB, is skipped while parsing instead of built and dropped.
#[derive(Clone, Debug, Deserialize)]
pub struct WrittenReport {
    #[serde(default, deserialize_with = "version_only")]
    pub metadata: ObjectMeta,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct VersionOnly {
    resource_version: Option<String>,
}

fn version_only<'de, D: Deserializer<'de>>(d: D) -> Result<ObjectMeta, D::Error> {
    let m = VersionOnly::deserialize(d)?;
    Ok(ObjectMeta {
        resource_version: m.resource_version,
        ..ObjectMeta::default()
    })
}

impl From<WireReport> for SidecarOrderReport {
    fn from(r: WireReport) -> SidecarOrderReport {
        SidecarOrderReport {
            metadata: r.metadata,
            spec: r.spec,
            status: r.status,
        }
    }
}
