//! The watches' wire types (`controller::wire`) decode to the k8s-openapi
//! object the API server sent, less `metadata.managedFields`: objects read
//! raw from the local API server (v1.34.4; a kwok pod of the load harness,
//! its Event, the real kubelet's Node) and every object of the recorded
//! watch stream of a real kubelet (tests/watch).

use k8s_openapi::api::core::v1::{Event, Node, Pod};
use serde::de::DeserializeOwned;
use serde_json::Value;
use sidecar_order::controller::wire::{WireEvent, WireNode, WirePod, WireReport, WrittenReport};
use sidecar_order::crd::SidecarOrderReport;

/// Decoded both ways: the wire type (turned into `K`) and `K` itself with
/// its managed fields dropped must be equal.
fn same<W: DeserializeOwned + Into<K>, K: DeserializeOwned + PartialEq + std::fmt::Debug>(
    text: &str,
    drop_managed: impl Fn(&mut K),
) -> K {
    let wire: K = serde_json::from_str::<W>(text).expect("wire decode").into();
    let mut full: K = serde_json::from_str(text).expect("k8s decode");
    drop_managed(&mut full);
    assert_eq!(wire, full);
    wire
}

#[test]
fn a_raw_pod_decodes_as_the_k8s_pod_without_its_managed_fields() {
    let text = include_str!("fixtures/wire/pod.json");
    let full: Pod = serde_json::from_str(text).unwrap();
    assert!(
        full.metadata
            .managed_fields
            .as_ref()
            .is_some_and(|m| !m.is_empty()),
        "the fixture must carry managed fields"
    );
    let pod = same::<WirePod, Pod>(text, |p| p.metadata.managed_fields = None);
    assert!(pod.metadata.managed_fields.is_none());
    // What the rules read came through.
    assert!(pod.metadata.uid.is_some() && pod.metadata.resource_version.is_some());
    assert!(pod.metadata.labels.as_ref().is_some_and(|l| !l.is_empty()));
    let spec = pod.spec.as_ref().unwrap();
    assert!(spec.init_containers.as_ref().is_some_and(|c| c.len() == 2));
    let status = pod.status.as_ref().unwrap();
    assert!(
        status
            .init_container_statuses
            .as_ref()
            .is_some_and(|c| c.len() == 2)
    );
}

#[test]
fn a_raw_event_and_node_decode_as_their_k8s_types_without_managed_fields() {
    let ev = same::<WireEvent, Event>(include_str!("fixtures/wire/event.json"), |e| {
        e.metadata.managed_fields = None
    });
    assert_eq!(ev.involved_object.kind.as_deref(), Some("Pod"));
    assert!(ev.reason.is_some() && ev.metadata.managed_fields.is_none());
    let node = same::<WireNode, Node>(include_str!("fixtures/wire/node.json"), |n| {
        n.metadata.managed_fields = None
    });
    let info = node.status.and_then(|s| s.node_info).unwrap();
    assert!(info.kubelet_version.starts_with("v1."));
}

#[test]
fn a_stored_report_decodes_as_the_crd_type_without_managed_fields() {
    // A report of a deleted pod that broke the stop order, read raw from the
    // API server during a load run.
    let text = include_str!("fixtures/wire/report.json");
    let r: SidecarOrderReport = serde_json::from_str::<WireReport>(text).unwrap().into();
    let mut full: SidecarOrderReport = serde_json::from_str(text).unwrap();
    assert!(
        full.metadata
            .managed_fields
            .take()
            .is_some_and(|m| !m.is_empty())
    );
    assert_eq!(
        (&r.metadata, &r.spec, &r.status),
        (&full.metadata, &full.spec, &full.status)
    );
    let status = r.status.unwrap();
    assert!(status.pod_ended_at.is_some() && status.violation_count > 0);
    assert!(status.write_id.is_some() && r.metadata.resource_version.is_some());
}

/// The answer to a status write is read for its version alone: the stored
/// report's `resourceVersion` comes through, and nothing else is built.
#[test]
fn the_answer_to_a_status_write_decodes_to_its_resource_version_alone() {
    let text = include_str!("fixtures/wire/report.json");
    let full: SidecarOrderReport = serde_json::from_str(text).unwrap();
    let written: WrittenReport = serde_json::from_str(text).unwrap();
    assert!(full.metadata.resource_version.is_some());
    assert_eq!(
        written.metadata,
        k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta {
            resource_version: full.metadata.resource_version,
            ..Default::default()
        }
    );
}

#[test]
fn every_object_of_a_recorded_watch_stream_decodes_the_same_both_ways() {
    let mut n = (0, 0);
    for (text, is_pod) in [
        (include_str!("watch/rec-pods.jsonl"), true),
        (include_str!("watch/rec-events.jsonl"), false),
    ] {
        for v in serde_json::Deserializer::from_str(text).into_iter::<Value>() {
            let object = v.unwrap()["object"].to_string();
            if is_pod {
                same::<WirePod, Pod>(&object, |p| p.metadata.managed_fields = None);
                n.0 += 1;
            } else {
                same::<WireEvent, Event>(&object, |e| e.metadata.managed_fields = None);
                n.1 += 1;
            }
        }
    }
    assert!(n.0 > 10 && n.1 > 10, "pods {}, events {}", n.0, n.1);
}

#[test]
fn an_event_without_an_involved_object_is_decoded_not_refused() {
    let ev: Event =
        serde_json::from_str::<WireEvent>(r#"{"metadata":{"name":"x"},"reason":"Started"}"#)
            .unwrap()
            .into();
    assert_eq!(ev.involved_object.name, None);
    assert_eq!(ev.metadata.name.as_deref(), Some("x"));
}
