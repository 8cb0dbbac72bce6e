//! What the controller decodes from the API server as JSON: Pods, Nodes
//! and its own reports without `metadata.managedFields` (Events come in
//! protobuf: `pb`).
//!
//! The API server sends every object with its field ownership: in a pod of
//! the load harness 2.2 KB of 5.5 KB, which k8s-openapi decodes into a tree
//! of JSON maps, more allocations than any other field. No rule reads it.
//! These types skip it while parsing (serde ignores a field it has no place
//! for without building it) and turn into the k8s-openapi types that the
//! store and `analyze` take, so nothing past the watch changes.

use crate::crd::{ReportSpec, ReportStatus, SidecarOrderReport};
use k8s_openapi::api::core::v1::{
    Event, EventSeries, EventSource, Node, NodeSpec, NodeStatus, ObjectReference, Pod, PodSpec,
    PodStatus,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta, OwnerReference, Time};
use kube::runtime::watcher::Event as WEvent;
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
/// without its managed fields.
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
                    spec: o.spec,
                    status: o.status,
                }
            }
        }
    };
}

spec_and_status!(
    /// A watched Pod.
    WirePod, Pod, PodSpec, PodStatus
);
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
