//! The watches' wire types (`controller::wire`) decode to the k8s-openapi
//! object the API server sent, less `metadata.managedFields`: objects read
//! raw from the local API server (v1.34.4; a kwok pod of the load harness,
//! its Event, the real kubelet's Node) and every object of the recorded
//! watch stream of a real kubelet (tests/watch). A pod keeps only what the
//! controller reads of it: it must give the same facts, sidecar check,
//! node and workload as the whole pod (every pod of the recorded stream
//! and of the fixtures, and one pod with every field read).

use k8s_openapi::api::core::v1::{Event, Node, Pod};
use serde::de::DeserializeOwned;
use serde_json::Value;
use sidecar_order::controller::wire::{WireEvent, WireNode, WirePod, WireReport, WrittenReport};
use sidecar_order::controller::workload::Workload;
use sidecar_order::crd::SidecarOrderReport;
use sidecar_order::observe::{has_native_sidecar, pod_facts};

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

/// A pod decoded both ways: the wire pod (turned into a `Pod`) reads the
/// same as the whole pod to everything the controller does with it.
fn same_pod(text: &str) -> Pod {
    let wire: Pod = serde_json::from_str::<WirePod>(text)
        .expect("wire decode")
        .into();
    let mut full: Pod = serde_json::from_str(text).expect("k8s decode");
    full.metadata.managed_fields = None;
    assert_eq!(wire.metadata, full.metadata);
    assert_eq!(pod_facts(&wire), pod_facts(&full));
    assert_eq!(has_native_sidecar(&wire), has_native_sidecar(&full));
    assert_eq!(Workload::of(&wire), Workload::of(&full));
    let node = |p: &Pod| p.spec.as_ref().and_then(|s| s.node_name.clone());
    assert_eq!(node(&wire), node(&full));
    assert_eq!(wire.status.is_some(), full.status.is_some());
    wire
}

#[test]
fn a_raw_pod_decodes_to_the_same_facts_as_the_k8s_pod() {
    let text = include_str!("fixtures/wire/pod.json");
    let full: Pod = serde_json::from_str(text).unwrap();
    assert!(
        full.metadata
            .managed_fields
            .as_ref()
            .is_some_and(|m| !m.is_empty()),
        "the fixture must carry managed fields"
    );
    let pod = same_pod(text);
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
fn every_object_of_a_recorded_watch_stream_reads_the_same_both_ways() {
    let mut n = (0, 0);
    for (text, is_pod) in [
        (include_str!("watch/rec-pods.jsonl"), true),
        (include_str!("watch/rec-events.jsonl"), false),
    ] {
        for v in serde_json::Deserializer::from_str(text).into_iter::<Value>() {
            let object = v.unwrap()["object"].to_string();
            if is_pod {
                same_pod(&object);
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

#[test]
fn every_fixture_pod_reads_the_same_both_ways() {
    let mut n = 0;
    for dir in std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures")).unwrap() {
        let path = dir.unwrap().path().join("pod.json");
        if let Ok(text) = std::fs::read_to_string(&path) {
            same_pod(&text);
            n += 1;
        }
    }
    assert!(n > 20, "{n} fixture pods");
}

/// Every field the controller reads, set, beside fields it does not read:
/// a probe and a hook of each kind, a null probe, every container state,
/// a signal, a waiting reason, condition messages.
#[test]
fn a_pod_with_every_field_read_reads_the_same_both_ways() {
    let text = r#"{
      "metadata": {"name": "p", "namespace": "ns", "uid": "u1", "creationTimestamp": "2026-01-01T00:00:00Z",
        "deletionTimestamp": "2026-01-01T00:10:00Z", "deletionGracePeriodSeconds": 20,
        "labels": {"a": "b"}, "ownerReferences": [{"apiVersion": "batch/v1", "kind": "Job", "name": "j", "uid": "u0", "controller": true}]},
      "spec": {
        "nodeName": "n1", "restartPolicy": "OnFailure", "terminationGracePeriodSeconds": 45,
        "initContainers": [
          {"name": "init", "image": "busybox", "command": ["true"]},
          {"name": "proxy", "image": "envoy", "restartPolicy": "Always",
           "env": [{"name": "X", "value": "1"}], "resources": {"limits": {"cpu": "1"}},
           "startupProbe": {"httpGet": {"path": "/ready", "port": 8080}, "periodSeconds": 1},
           "readinessProbe": {"exec": {"command": ["true"]}},
           "livenessProbe": null,
           "lifecycle": {"postStart": {"exec": {"command": ["sleep", "1"]}}, "preStop": {"sleep": {"seconds": 2}}}},
          {"name": "log", "image": "fluent", "restartPolicy": "Always",
           "livenessProbe": {"tcpSocket": {"port": 24224}}, "lifecycle": {"preStop": {"exec": {"command": ["x"]}}}}
        ],
        "containers": [{"name": "app", "image": "app", "ports": [{"containerPort": 80}],
          "lifecycle": {"postStart": {"httpGet": {"path": "/", "port": 80}}},
          "volumeMounts": [{"name": "v", "mountPath": "/v"}]}],
        "volumes": [{"name": "v", "emptyDir": {}}]
      },
      "status": {
        "phase": "Running", "hostIP": "10.0.0.1", "qosClass": "Burstable",
        "conditions": [
          {"type": "PodReadyToStartContainers", "status": "True", "lastTransitionTime": "2026-01-01T00:00:02Z"},
          {"type": "Initialized", "status": "True", "lastTransitionTime": "2026-01-01T00:00:09Z"},
          {"type": "Ready", "status": "False", "reason": "ContainersNotReady", "message": "m", "lastTransitionTime": "2026-01-01T00:00:30Z"}
        ],
        "initContainerStatuses": [
          {"name": "init", "image": "busybox", "imageID": "i", "containerID": "containerd://a", "ready": false, "restartCount": 0, "started": false,
           "state": {"terminated": {"exitCode": 0, "reason": "Completed", "startedAt": "2026-01-01T00:00:03Z", "finishedAt": "2026-01-01T00:00:04Z", "containerID": "containerd://a"}}},
          {"name": "proxy", "image": "envoy", "imageID": "i", "containerID": "containerd://c", "ready": true, "restartCount": 2, "started": true,
           "lastState": {"terminated": {"exitCode": 137, "signal": 9, "reason": "Error", "message": "killed", "startedAt": "2026-01-01T00:00:05Z", "finishedAt": "2026-01-01T00:00:20Z", "containerID": "containerd://b"}},
           "state": {"running": {"startedAt": "2026-01-01T00:00:21Z"}}},
          {"name": "log", "image": "fluent", "imageID": "", "ready": false, "restartCount": 1, "started": false,
           "lastState": {"terminated": {"exitCode": 1, "startedAt": "2026-01-01T00:00:06Z", "finishedAt": "2026-01-01T00:00:07Z"}},
           "state": {"waiting": {"reason": "CrashLoopBackOff", "message": "back-off"}}}
        ],
        "containerStatuses": [
          {"name": "app", "image": "app", "imageID": "i", "ready": false, "restartCount": 0,
           "state": {"waiting": {"reason": "PodInitializing"}}}
        ]
      }
    }"#;
    let pod = same_pod(text);
    let facts = pod_facts(&pod).unwrap();
    // What the test is about came through, not only "the same".
    assert_eq!(facts.containers.len(), 4);
    let proxy = &facts.containers[1];
    assert!(proxy.declares.startup && proxy.declares.readiness && !proxy.declares.liveness);
    assert!(proxy.declares.post_start && proxy.declares.pre_stop);
    assert_eq!((proxy.restarts, proxy.runs.len()), (2, 2));
    assert_eq!(proxy.runs[0].signal, Some(9));
    assert!(facts.containers[2].declares.liveness);
    assert!(facts.deletion.is_some() && facts.sandbox_ready.is_some());
}
