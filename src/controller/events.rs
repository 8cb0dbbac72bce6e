//! The Warning Event a new violation gets on its pod (sans-IO: the writer
//! creates it).
//!
//! One Event per violation, named after the pod's uid and the violation's
//! rule and containers: a replica that announces the same violation again
//! (a retried write, a new leader, a restarted process) creates an Event of
//! the same name and gets `AlreadyExists`, so a pod never shows one
//! violation twice. Two violations of one pod are two Events, each with its
//! own note (an event recorder that folds Events by reason would patch the
//! first one's count and lose the second one's message).

use crate::controller::store::Update;
use crate::report::Violation;
use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::api::events::v1::Event;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::Timestamp;

/// The reason of the Events recorded on pods.
pub const EVENT_REASON: &str = "SidecarOrderViolation";
/// The `reportingController` of those Events.
pub const REPORTING_CONTROLLER: &str = "sidecar-order";
const ACTION: &str = "JudgeOrdering";
/// The API server's limit on an Event's note.
const NOTE_MAX: usize = 1000;
/// Longest pod-name prefix in an Event name (object names: 253).
const NAME_PREFIX_MAX: usize = 200;

/// FNV-1a, 64 bits: stable across builds and Rust releases (the name must
/// be the same in every replica and after an upgrade).
fn fnv1a_bytes(bytes: impl IntoIterator<Item = u8>) -> u64 {
    bytes.into_iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// The parts, each ended by a NUL byte (no two lists hash the same bytes).
fn fnv1a(parts: &[&str]) -> u64 {
    fnv1a_bytes(
        parts
            .iter()
            .flat_map(|p| p.bytes().chain(std::iter::once(0))),
    )
}

/// The Event's name: the pod's name and a hash of (pod uid, rule,
/// containers).
pub fn event_name(pod_name: &str, pod_uid: &str, v: &Violation) -> String {
    let mut parts = vec![pod_uid, v.rule.id()];
    parts.extend(v.containers.iter().map(String::as_str));
    let prefix: String = pod_name.chars().take(NAME_PREFIX_MAX).collect();
    format!("{prefix}.so-{:016x}", fnv1a(&parts))
}

/// The Warning Event announcing `v` on `u`'s pod.
pub fn violation_event(u: &Update, v: &Violation, instance: &str, now: Timestamp) -> Event {
    let regarding = ObjectReference {
        api_version: Some("v1".into()),
        kind: Some("Pod".into()),
        name: Some(u.pod_name.clone()),
        namespace: Some(u.namespace.clone()),
        uid: Some(u.pod_uid.clone()),
        ..Default::default()
    };
    Event {
        metadata: ObjectMeta {
            name: Some(event_name(&u.pod_name, &u.pod_uid, v)),
            namespace: Some(u.namespace.clone()),
            ..Default::default()
        },
        event_time: Some(MicroTime(now)),
        type_: Some("Warning".into()),
        reason: Some(EVENT_REASON.into()),
        action: Some(ACTION.into()),
        note: Some(
            format!("{}: {}", v.rule.id(), v.message)
                .chars()
                .take(NOTE_MAX)
                .collect(),
        ),
        regarding: Some(regarding),
        reporting_controller: Some(REPORTING_CONTROLLER.into()),
        reporting_instance: Some(instance.chars().take(128).collect()),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::{Rule, Severity};

    fn v(rule: Rule, containers: &[&str]) -> Violation {
        Violation {
            rule,
            severity: Severity::Error,
            containers: containers.iter().map(|s| s.to_string()).collect(),
            message: "m".into(),
            evidence: vec![],
        }
    }

    #[test]
    fn one_violation_has_one_name_in_every_replica() {
        let a = v(Rule::AppStartedBeforeSidecar, &["app", "proxy"]);
        // FNV-1a's published test vectors: a change of the hash would let
        // a new release announce every stored violation a second time.
        assert_eq!(fnv1a_bytes(*b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a_bytes(*b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(fnv1a_bytes(*b"foobar"), 0x8594_4171_f739_67e8);
        let name = event_name("web-1", "uid-1", &a);
        // A later judgement of the same violation words it anew (message,
        // evidence): still the same Event.
        let mut reworded = a.clone();
        reworded.message = "sidecar proxy stopped 2 s before app".into();
        reworded.evidence = vec!["decided by the kubelet clock".into()];
        assert_eq!(name, event_name("web-1", "uid-1", &reworded));
        let h = fnv1a_bytes(*b"uid-1\0app-started-before-sidecar\0app\0proxy\0");
        assert_eq!(name, format!("web-1.so-{h:016x}"));
    }

    #[test]
    fn different_violations_of_a_pod_get_different_events() {
        let a = v(Rule::AppStartedBeforeSidecar, &["app", "proxy"]);
        let b = v(Rule::AppStartedBeforeSidecar, &["app", "log"]);
        let c = v(Rule::SidecarForceKilled, &["app", "proxy"]);
        let n = |x: &Violation| event_name("web-1", "uid-1", x);
        assert_ne!(n(&a), n(&b));
        assert_ne!(n(&a), n(&c));
        // A pod of the same name later (another uid) is another pod.
        assert_ne!(n(&a), event_name("web-1", "uid-2", &a));
        // Container lists are not confused by where a name ends.
        let d = v(Rule::AppStartedBeforeSidecar, &["ap", "pproxy"]);
        assert_ne!(n(&a), n(&d));
    }

    #[test]
    fn a_long_pod_name_still_makes_a_valid_event_name() {
        let long = "p".repeat(253);
        let name = event_name(&long, "uid", &v(Rule::SidecarForceKilled, &["s"]));
        assert!(name.len() <= 253, "{}", name.len());
        assert!(name.ends_with(&format!(
            "{:016x}",
            fnv1a(&["uid", Rule::SidecarForceKilled.id(), "s"])
        )));
    }
}
