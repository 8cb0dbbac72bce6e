//! Events in the API server's protobuf encoding: lists and watch frames
//! turned into the k8s-openapi `Event` that the JSON path (`wire`) gives.
//!
//! Why: at start-up the Event list is the longest step. The 67,108 Events
//! of a 10,000-pod load run are 70 MB of JSON that the API server encodes
//! and the controller parses, 41 MB of protobuf (README, "Restart"): the
//! restart took a third less time and CPU. Custom resources (the reports)
//! have no protobuf form; pods stay JSON (decoding is 7 % of the
//! controller's CPU while it takes pods in).
//!
//! The messages below declare only the fields `WireEvent` keeps, with the
//! tags of k8s.io/api core/v1 and apimachinery meta/v1 `generated.proto`;
//! prost skips every other field (managed fields) by its length without
//! reading it. Each field turns into what the API server's JSON of the
//! same object holds: empty strings, zero counts and zero times where the
//! JSON omits them are None, `reportingComponent`/`reportingInstance` (no
//! `omitempty`) are kept empty, and times have the JSON's precision
//! (seconds for Time, microseconds for MicroTime).
//! `tests/pb_events.rs` holds both encodings of the same real Events and
//! checks that they decode to the same `Event`.

use bytes::Bytes;
use k8s_openapi::api::core::v1::{Event, EventSeries, EventSource, ObjectReference};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta, OwnerReference, Time};
use k8s_openapi::jiff::Timestamp;
use prost::Message;
use std::collections::BTreeMap;

/// What every protobuf object the API server sends starts with.
const MAGIC: &[u8] = b"k8s\0";

/// The media type of protobuf objects.
pub const PROTOBUF: &str = "application/vnd.kubernetes.protobuf";
/// The media type of a protobuf watch: length-prefixed `WatchEvent`s.
pub const PROTOBUF_WATCH: &str = "application/vnd.kubernetes.protobuf;stream=watch";

/// A body or frame that is not what the API server sends.
#[derive(Debug, thiserror::Error)]
pub enum PbError {
    #[error("not a Kubernetes protobuf object (no k8s\\0 prefix)")]
    NoMagic,
    #[error("undecodable protobuf: {0}")]
    Decode(#[from] prost::DecodeError),
    #[error("a watch event without an object")]
    NoObject,
}

// runtime.Unknown: the envelope of every object.
#[derive(Clone, PartialEq, Message)]
struct Unknown {
    #[prost(bytes = "bytes", optional, tag = "2")]
    raw: Option<Bytes>,
}

// runtime.RawExtension: a watch event's object.
#[derive(Clone, PartialEq, Message)]
struct RawExtension {
    #[prost(bytes = "bytes", optional, tag = "1")]
    raw: Option<Bytes>,
}

#[derive(Clone, PartialEq, Message)]
struct PbWatchEvent {
    #[prost(string, optional, tag = "1")]
    type_: Option<String>,
    #[prost(message, optional, tag = "2")]
    object: Option<RawExtension>,
}

#[derive(Clone, PartialEq, Message)]
struct PbListMeta {
    #[prost(string, optional, tag = "2")]
    resource_version: Option<String>,
    #[prost(string, optional, tag = "3")]
    continue_: Option<String>,
}

#[derive(Clone, PartialEq, Message)]
struct PbEventList {
    #[prost(message, optional, tag = "1")]
    metadata: Option<PbListMeta>,
    #[prost(message, repeated, tag = "2")]
    items: Vec<PbEvent>,
}

#[derive(Clone, PartialEq, Message)]
struct PbStatus {
    #[prost(string, optional, tag = "3")]
    message: Option<String>,
    #[prost(string, optional, tag = "4")]
    reason: Option<String>,
    #[prost(int32, optional, tag = "6")]
    code: Option<i32>,
}

// meta/v1 Time and MicroTime share this shape.
#[derive(Clone, PartialEq, Message)]
struct PbTime {
    #[prost(int64, optional, tag = "1")]
    seconds: Option<i64>,
    #[prost(int32, optional, tag = "2")]
    nanos: Option<i32>,
}

#[derive(Clone, PartialEq, Message)]
struct PbOwnerReference {
    #[prost(string, optional, tag = "1")]
    kind: Option<String>,
    #[prost(string, optional, tag = "3")]
    name: Option<String>,
    #[prost(string, optional, tag = "4")]
    uid: Option<String>,
    #[prost(string, optional, tag = "5")]
    api_version: Option<String>,
    #[prost(bool, optional, tag = "6")]
    controller: Option<bool>,
    #[prost(bool, optional, tag = "7")]
    block_owner_deletion: Option<bool>,
}

// meta/v1 ObjectMeta without managedFields (17).
#[derive(Clone, PartialEq, Message)]
struct PbMeta {
    #[prost(string, optional, tag = "1")]
    name: Option<String>,
    #[prost(string, optional, tag = "2")]
    generate_name: Option<String>,
    #[prost(string, optional, tag = "3")]
    namespace: Option<String>,
    #[prost(string, optional, tag = "4")]
    self_link: Option<String>,
    #[prost(string, optional, tag = "5")]
    uid: Option<String>,
    #[prost(string, optional, tag = "6")]
    resource_version: Option<String>,
    #[prost(int64, optional, tag = "7")]
    generation: Option<i64>,
    #[prost(message, optional, tag = "8")]
    creation_timestamp: Option<PbTime>,
    #[prost(message, optional, tag = "9")]
    deletion_timestamp: Option<PbTime>,
    #[prost(int64, optional, tag = "10")]
    deletion_grace_period_seconds: Option<i64>,
    #[prost(btree_map = "string, string", tag = "11")]
    labels: BTreeMap<String, String>,
    #[prost(btree_map = "string, string", tag = "12")]
    annotations: BTreeMap<String, String>,
    #[prost(message, repeated, tag = "13")]
    owner_references: Vec<PbOwnerReference>,
    #[prost(string, repeated, tag = "14")]
    finalizers: Vec<String>,
}

#[derive(Clone, PartialEq, Message)]
struct PbObjectReference {
    #[prost(string, optional, tag = "1")]
    kind: Option<String>,
    #[prost(string, optional, tag = "2")]
    namespace: Option<String>,
    #[prost(string, optional, tag = "3")]
    name: Option<String>,
    #[prost(string, optional, tag = "4")]
    uid: Option<String>,
    #[prost(string, optional, tag = "5")]
    api_version: Option<String>,
    #[prost(string, optional, tag = "6")]
    resource_version: Option<String>,
    #[prost(string, optional, tag = "7")]
    field_path: Option<String>,
}

#[derive(Clone, PartialEq, Message)]
struct PbEventSource {
    #[prost(string, optional, tag = "1")]
    component: Option<String>,
    #[prost(string, optional, tag = "2")]
    host: Option<String>,
}

#[derive(Clone, PartialEq, Message)]
struct PbEventSeries {
    #[prost(int32, optional, tag = "1")]
    count: Option<i32>,
    #[prost(message, optional, tag = "2")]
    last_observed_time: Option<PbTime>,
}

// core/v1 Event.
#[derive(Clone, PartialEq, Message)]
struct PbEvent {
    #[prost(message, optional, tag = "1")]
    metadata: Option<PbMeta>,
    #[prost(message, optional, tag = "2")]
    involved_object: Option<PbObjectReference>,
    #[prost(string, optional, tag = "3")]
    reason: Option<String>,
    #[prost(string, optional, tag = "4")]
    message: Option<String>,
    #[prost(message, optional, tag = "5")]
    source: Option<PbEventSource>,
    #[prost(message, optional, tag = "6")]
    first_timestamp: Option<PbTime>,
    #[prost(message, optional, tag = "7")]
    last_timestamp: Option<PbTime>,
    #[prost(int32, optional, tag = "8")]
    count: Option<i32>,
    #[prost(string, optional, tag = "9")]
    type_: Option<String>,
    #[prost(message, optional, tag = "10")]
    event_time: Option<PbTime>,
    #[prost(message, optional, tag = "11")]
    series: Option<PbEventSeries>,
    #[prost(string, optional, tag = "12")]
    action: Option<String>,
    #[prost(message, optional, tag = "13")]
    related: Option<PbObjectReference>,
    #[prost(string, optional, tag = "14")]
    reporting_component: Option<String>,
    #[prost(string, optional, tag = "15")]
    reporting_instance: Option<String>,
}

/// A string field with `omitempty`: empty is absent.
fn text(s: Option<String>) -> Option<String> {
    s.filter(|s| !s.is_empty())
}

/// A number field with `omitempty`: zero is absent.
fn nonzero<T: Default + PartialEq>(n: Option<T>) -> Option<T> {
    n.filter(|n| *n != T::default())
}

/// A Time as its JSON reads: whole seconds; the zero time is absent (an
/// empty message).
fn time(t: Option<PbTime>) -> Option<Time> {
    let secs = t?.seconds?;
    Timestamp::from_second(secs).ok().map(Time)
}

/// A MicroTime as its JSON reads: microseconds; the zero time is absent.
fn micro_time(t: Option<PbTime>) -> Option<MicroTime> {
    let t = t?;
    let secs = t.seconds?;
    let micros = t.nanos.unwrap_or(0) / 1000 * 1000;
    Timestamp::new(secs, micros).ok().map(MicroTime)
}

/// A list or map field with `omitempty`: empty is absent.
fn list<T>(v: Vec<T>) -> Option<Vec<T>> {
    (!v.is_empty()).then_some(v)
}

fn map(m: BTreeMap<String, String>) -> Option<BTreeMap<String, String>> {
    (!m.is_empty()).then_some(m)
}

fn meta(m: PbMeta) -> ObjectMeta {
    ObjectMeta {
        annotations: map(m.annotations),
        creation_timestamp: time(m.creation_timestamp),
        deletion_grace_period_seconds: m.deletion_grace_period_seconds,
        deletion_timestamp: time(m.deletion_timestamp),
        finalizers: list(m.finalizers),
        generate_name: text(m.generate_name),
        generation: nonzero(m.generation),
        labels: map(m.labels),
        managed_fields: None,
        name: text(m.name),
        namespace: text(m.namespace),
        owner_references: list(
            m.owner_references
                .into_iter()
                .map(|o| OwnerReference {
                    api_version: o.api_version.unwrap_or_default(),
                    block_owner_deletion: o.block_owner_deletion,
                    controller: o.controller,
                    kind: o.kind.unwrap_or_default(),
                    name: o.name.unwrap_or_default(),
                    uid: o.uid.unwrap_or_default(),
                })
                .collect(),
        ),
        resource_version: text(m.resource_version),
        self_link: text(m.self_link),
        uid: text(m.uid),
    }
}

fn object_reference(r: PbObjectReference) -> ObjectReference {
    ObjectReference {
        api_version: text(r.api_version),
        field_path: text(r.field_path),
        kind: text(r.kind),
        name: text(r.name),
        namespace: text(r.namespace),
        resource_version: text(r.resource_version),
        uid: text(r.uid),
    }
}

impl From<PbEvent> for Event {
    fn from(e: PbEvent) -> Event {
        Event {
            action: text(e.action),
            count: nonzero(e.count),
            event_time: micro_time(e.event_time),
            first_timestamp: time(e.first_timestamp),
            involved_object: e.involved_object.map(object_reference).unwrap_or_default(),
            last_timestamp: time(e.last_timestamp),
            message: text(e.message),
            metadata: e.metadata.map(meta).unwrap_or_default(),
            reason: text(e.reason),
            related: e.related.map(object_reference),
            // No `omitempty`: the JSON holds them even when empty.
            reporting_component: Some(e.reporting_component.unwrap_or_default()),
            reporting_instance: Some(e.reporting_instance.unwrap_or_default()),
            series: e.series.map(|s| EventSeries {
                count: nonzero(s.count),
                last_observed_time: micro_time(s.last_observed_time),
            }),
            // A struct field: its JSON is always there, `{}` when empty.
            source: Some(
                e.source
                    .map(|s| EventSource {
                        component: text(s.component),
                        host: text(s.host),
                    })
                    .unwrap_or_default(),
            ),
            type_: text(e.type_),
        }
    }
}

/// The object inside the `k8s\0` envelope.
fn unwrap(body: &Bytes) -> Result<Bytes, PbError> {
    let rest = body.strip_prefix(MAGIC).ok_or(PbError::NoMagic)?;
    let u = Unknown::decode(body.slice(body.len() - rest.len()..))?;
    Ok(u.raw.unwrap_or_default())
}

/// One page of an Event list.
#[derive(Debug, Default)]
pub struct EventPage {
    pub items: Vec<Event>,
    pub resource_version: Option<String>,
    /// Where the next page starts; None on the last one.
    pub continue_token: Option<String>,
}

/// A list response (`Accept: application/vnd.kubernetes.protobuf`).
pub fn event_page(body: &Bytes) -> Result<EventPage, PbError> {
    let list = PbEventList::decode(unwrap(body)?)?;
    let meta = list.metadata.unwrap_or_default();
    Ok(EventPage {
        items: list.items.into_iter().map(Event::from).collect(),
        resource_version: text(meta.resource_version),
        continue_token: text(meta.continue_),
    })
}

/// What the API server says of a failed request or watch.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct StatusFacts {
    pub code: u16,
    pub reason: String,
    pub message: String,
}

/// A `Status` object (an error response, or a watch's ERROR event).
pub fn status(body: &Bytes) -> Result<StatusFacts, PbError> {
    let s = PbStatus::decode(unwrap(body)?)?;
    Ok(StatusFacts {
        code: u16::try_from(s.code.unwrap_or(0)).unwrap_or(0),
        reason: s.reason.unwrap_or_default(),
        message: s.message.unwrap_or_default(),
    })
}

/// One event of a protobuf watch.
#[derive(Debug)]
pub enum WatchFrame {
    Added(Event),
    Modified(Event),
    Deleted(Event),
    /// The resource version the watch has come to.
    Bookmark(Option<String>),
    Error(StatusFacts),
    /// A type this controller does not know: skipped.
    Other(String),
}

/// One frame of a protobuf watch (without its 4-byte length prefix).
pub fn watch_frame(frame: Bytes) -> Result<WatchFrame, PbError> {
    let w = PbWatchEvent::decode(frame)?;
    let raw = w.object.and_then(|o| o.raw).ok_or(PbError::NoObject)?;
    let event = || -> Result<Event, PbError> { Ok(PbEvent::decode(unwrap(&raw)?)?.into()) };
    Ok(match w.type_.as_deref().unwrap_or_default() {
        "ADDED" => WatchFrame::Added(event()?),
        "MODIFIED" => WatchFrame::Modified(event()?),
        "DELETED" => WatchFrame::Deleted(event()?),
        "BOOKMARK" => WatchFrame::Bookmark(event()?.metadata.resource_version),
        "ERROR" => WatchFrame::Error(status(&raw)?),
        other => WatchFrame::Other(other.to_string()),
    })
}

/// The longest watch frame accepted (the API server's request limit is
/// 3 MiB; an Event is a few KB).
pub const MAX_FRAME: usize = 16 << 20;

/// Bodies as the API server encodes them, for tests of the watch.
#[cfg(test)]
pub(crate) mod testing {
    use super::*;

    pub fn envelope(raw: Vec<u8>) -> Bytes {
        let mut out = MAGIC.to_vec();
        out.extend(
            Unknown {
                raw: Some(raw.into()),
            }
            .encode_to_vec(),
        );
        out.into()
    }

    fn event(name: &str, rv: &str) -> PbEvent {
        PbEvent {
            metadata: Some(PbMeta {
                name: Some(name.into()),
                resource_version: Some(rv.into()),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    /// A list page of Events named `names`.
    pub fn list(names: &[&str], rv: &str, continue_token: Option<&str>) -> Bytes {
        envelope(
            PbEventList {
                metadata: Some(PbListMeta {
                    resource_version: Some(rv.into()),
                    continue_: continue_token.map(String::from),
                }),
                items: names.iter().map(|n| event(n, rv)).collect(),
            }
            .encode_to_vec(),
        )
    }

    /// A watch frame with its length: `type_` of an Event (`name`, `rv`),
    /// or of a Status (`code`) for ERROR.
    pub fn frame(type_: &str, name: &str, rv: &str, code: i32) -> Vec<u8> {
        let raw = if type_ == "ERROR" {
            PbStatus {
                code: Some(code),
                reason: Some("Expired".into()),
                message: Some("too old resource version".into()),
            }
            .encode_to_vec()
        } else {
            event(name, rv).encode_to_vec()
        };
        let body = PbWatchEvent {
            type_: Some(type_.into()),
            object: Some(RawExtension {
                raw: Some(envelope(raw)),
            }),
        }
        .encode_to_vec();
        let mut out = (body.len() as u32).to_be_bytes().to_vec();
        out.extend(body);
        out
    }

    /// An error response's body.
    pub fn status(code: i32) -> Bytes {
        envelope(
            PbStatus {
                code: Some(code),
                reason: Some("Expired".into()),
                message: Some("too old resource version".into()),
            }
            .encode_to_vec(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::testing::envelope;
    use super::*;

    fn pb_event(name: &str) -> PbEvent {
        PbEvent {
            metadata: Some(PbMeta {
                name: Some(name.into()),
                namespace: Some("ns".into()),
                resource_version: Some("7".into()),
                ..Default::default()
            }),
            reason: Some("Started".into()),
            count: Some(1),
            first_timestamp: Some(PbTime {
                seconds: Some(1_752_451_203),
                nanos: None,
            }),
            event_time: Some(PbTime::default()),
            ..Default::default()
        }
    }

    #[test]
    fn a_watch_frame_reads_as_its_event_type() {
        let frame = |t: &str, raw: Bytes| {
            Bytes::from(
                PbWatchEvent {
                    type_: Some(t.into()),
                    object: Some(RawExtension { raw: Some(raw) }),
                }
                .encode_to_vec(),
            )
        };
        let ev = envelope(pb_event("p.1").encode_to_vec());
        match watch_frame(frame("ADDED", ev.clone())).unwrap() {
            WatchFrame::Added(e) => {
                assert_eq!(e.metadata.name.as_deref(), Some("p.1"));
                assert_eq!(e.reason.as_deref(), Some("Started"));
                assert_eq!(e.count, Some(1));
                assert_eq!(
                    e.first_timestamp.unwrap().0.to_string(),
                    "2025-07-14T00:00:03Z"
                );
                assert_eq!(e.event_time, None, "the zero time is absent");
                assert_eq!(e.reporting_component.as_deref(), Some(""));
                assert_eq!(e.source, Some(EventSource::default()));
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            watch_frame(frame("DELETED", ev.clone())),
            Ok(WatchFrame::Deleted(_))
        ));
        assert!(matches!(
            watch_frame(frame("BOOKMARK", ev.clone())),
            Ok(WatchFrame::Bookmark(Some(v))) if v == "7"
        ));
        let gone = envelope(
            PbStatus {
                code: Some(410),
                reason: Some("Expired".into()),
                message: Some("too old resource version".into()),
            }
            .encode_to_vec(),
        );
        match watch_frame(frame("ERROR", gone)).unwrap() {
            WatchFrame::Error(s) => assert_eq!((s.code, s.reason.as_str()), (410, "Expired")),
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            watch_frame(frame("ADDED", Bytes::from_static(b"{\"json\": 1}"))),
            Err(PbError::NoMagic)
        ));
        assert!(matches!(
            watch_frame(Bytes::from_static(&[0x0a, 0xff])),
            Err(PbError::Decode(_))
        ));
    }
}
