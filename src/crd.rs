//! The `SidecarOrderReport` custom resource: one per pod, named after the pod
//! and its uid so that a new pod of the same name (a StatefulSet's) gets a
//! report of its own and the old pod's shutdown verdict survives.

use crate::report::Report;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::CustomResource;
use kube::CustomResourceExt;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// The field manager of every write this project makes.
pub const FIELD_MANAGER: &str = "sidecar-order";

/// Which pod a report is about.
// The printer columns repeat `type_ = ...`, which clippy mistakes for duplicates.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "sidecar-order.dev",
    version = "v1alpha1",
    kind = "SidecarOrderReport",
    plural = "sidecarorderreports",
    shortname = "sor",
    namespaced,
    status = "ReportStatus",
    doc = "Native sidecar start/stop ordering of one pod, judged by sidecar-order",
    printcolumn(name = "Pod", type_ = "string", json_path = ".spec.podName"),
    printcolumn(name = "Sidecars", type_ = "integer", json_path = ".status.sidecars"),
    printcolumn(name = "Startup", type_ = "string", json_path = ".status.startup"),
    printcolumn(name = "Shutdown", type_ = "string", json_path = ".status.shutdown"),
    printcolumn(
        name = "Kubelet",
        type_ = "string",
        json_path = ".status.kubeletVersion"
    ),
    printcolumn(
        name = "Violations",
        type_ = "integer",
        json_path = ".status.violationCount"
    ),
    printcolumn(
        name = "Probe-Failures",
        type_ = "integer",
        json_path = ".status.probeFailureCount"
    ),
    printcolumn(
        name = "Restarts",
        type_ = "integer",
        json_path = ".status.sidecarRestarts"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct ReportSpec {
    pub pod_name: String,
    pub pod_uid: String,
    /// The owning workload, `Kind/name` (a ReplicaSet resolved to its Deployment).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workload: Option<String>,
}

/// The engine's report plus the numbers `kubectl get sor` shows.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ReportStatus {
    #[serde(flatten)]
    pub report: Report,
    pub violation_count: u32,
    pub probe_failure_count: u32,
    pub sidecar_restarts: u32,
    /// When the pod was seen gone or finished (RFC 3339); reports are kept for
    /// `--report-ttl` after it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod_ended_at: Option<String>,
    /// The kubelet of the pod's node (`v1.34.4`), when known: the promises
    /// of that version were judged and its known bugs named.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kubelet_version: Option<String>,
    /// Which write stored this status (set by the writer, never judged): a
    /// replica whose write went unanswered reads it back to learn whether
    /// that write landed, and counts it only then.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub write_id: Option<String>,
    /// The writes this status was written over, as its writer read them,
    /// newest first (at most `ledger::MAX_EARLIER`): a replica reading back
    /// an unanswered write learns here that it landed before a later write
    /// (which, applied only over the version it read, counted from it).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub earlier_write_ids: Vec<String>,
}

impl ReportStatus {
    pub fn new(report: Report, pod_ended_at: Option<String>) -> Self {
        let probe_failure_count = report.probe_failures.iter().map(|p| p.count).sum();
        let sidecar_restarts = report
            .containers
            .iter()
            .filter(|c| c.role == crate::model::Role::Sidecar)
            .map(|c| c.restarts)
            .sum();
        ReportStatus {
            violation_count: report.violations.len() as u32,
            probe_failure_count,
            sidecar_restarts,
            pod_ended_at,
            kubelet_version: None,
            write_id: None,
            earlier_write_ids: Vec::new(),
            report,
        }
    }

    /// The same status, naming the kubelet the report was judged for (the
    /// `History::kubelet` it was judged with).
    pub fn with_kubelet(mut self, kubelet: Option<crate::kubelet::KubeletVersion>) -> Self {
        self.kubelet_version = kubelet.map(|k| k.to_string());
        self
    }
}

/// The report's object name: the pod's name and the start of its uid, within
/// the 253 characters a name may have.
pub fn report_name(pod_name: &str, pod_uid: &str) -> String {
    let suffix: String = pod_uid.chars().filter(|c| *c != '-').take(8).collect();
    if suffix.is_empty() {
        return pod_name.to_string();
    }
    let keep = pod_name.len().min(253 - 1 - suffix.len());
    format!("{}-{}", &pod_name[..keep], suffix)
}

/// The CRD, without the status subresource that kube's derive adds: a
/// report's status is a field like its spec, so that a new report is
/// created with its status in one call (with the subresource, a create
/// drops the status, and every new report took two writes). Nothing but
/// the controller writes a report.
pub fn definition() -> CustomResourceDefinition {
    let mut crd = SidecarOrderReport::crd();
    for v in &mut crd.spec.versions {
        v.subresources = None;
    }
    crd
}

/// Whether an installed CRD has the status subresource (an older
/// sidecar-order's): a status written with the report would be dropped.
pub fn has_status_subresource(crd: &CustomResourceDefinition) -> bool {
    crd.spec
        .versions
        .iter()
        .any(|v| v.subresources.as_ref().is_some_and(|s| s.status.is_some()))
}

/// The CRD as YAML, as `sidecar-order crd` prints it.
pub fn crd_yaml() -> String {
    serde_saphyr::to_string(&definition()).expect("the CRD serializes")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn committed_crd_matches_the_rust_types() {
        let root = env!("CARGO_MANIFEST_DIR");
        for path in [
            "crds/sidecarorderreports.yaml",
            "config/crd/sidecarorderreports.yaml",
        ] {
            let committed = std::fs::read_to_string(format!("{root}/{path}")).unwrap_or_default();
            assert!(
                committed == crd_yaml(),
                "{path} is stale: run `make crds` and commit it"
            );
        }
    }

    #[test]
    fn the_crd_has_no_status_subresource() {
        assert!(has_status_subresource(&SidecarOrderReport::crd()));
        assert!(!has_status_subresource(&definition()));
    }

    #[test]
    fn report_names_are_per_pod_instance() {
        let a = report_name("web-0", "1b2c3d4e-aaaa-bbbb-cccc-000000000001");
        let b = report_name("web-0", "9f8e7d6c-aaaa-bbbb-cccc-000000000002");
        assert_eq!(a, "web-0-1b2c3d4e");
        assert_ne!(a, b);
        let long = "x".repeat(253);
        assert_eq!(report_name(&long, "1b2c3d4e-0").len(), 253);
    }
}
