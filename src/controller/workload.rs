//! The workload a pod belongs to: the `workload_kind` and `workload` labels of
//! the violation metric and the report's `spec.workload`.
//!
//! A label value must stay the same from one pod to the next of the same
//! workload, or every pod makes a new series. So the name is the owner a
//! person manages, found from the pod alone (no extra API reads):
//!
//! - no controller owner reference: kind `Pod`, empty name (a pod's own name
//!   is never a label);
//! - a ReplicaSet made by a Deployment is named `<deployment>-<hash>`, the
//!   hash being the pod's `pod-template-hash` label: `Deployment/<deployment>`
//!   (without that label, or when the name does not end with it:
//!   `ReplicaSet/<name>`);
//! - a Job made by a CronJob is named `<cronjob>-<scheduled time in minutes
//!   since the Unix epoch>` (8 digits from 1989 to 2160): `CronJob/<cronjob>`.
//!   The pod does not name the CronJob (its controller reference is the Job,
//!   its `job-name` labels name the Job too), so this is read from the Job's
//!   name, and accepted only when that minute is plausible for this pod: not
//!   after its creation (one minute of clock skew allowed) and at most
//!   [`CRONJOB_RUN_WINDOW_MINUTES`] before it;
//! - any other owner (StatefulSet, DaemonSet, a Job not made by a CronJob,
//!   custom controllers): its kind and name.
//!
//! Limits of the CronJob rule: a Job that a person names `<x>-<minutes since
//! the epoch>` with a minute in that window is taken for a run of a CronJob
//! `<x>`. Date-like names (`backup-20240101`, `backup-2024010112`) and
//! seconds since the epoch are not minutes of the last month, so they stay
//! `Job/<name>`. A CronJob's pod created more than the window after its
//! schedule (a Job retrying for weeks) keeps `Job/<name>`. A pod without a
//! creation time (never the case for a pod read from the API) keeps
//! `Job/<name>` too.

use k8s_openapi::api::core::v1::Pod;

/// How long after its scheduled minute a CronJob's pod may still be created
/// and be counted as that CronJob's: long-running or retrying Jobs make pods
/// days after the schedule.
pub const CRONJOB_RUN_WINDOW_MINUTES: i64 = 31 * 24 * 60;

/// Digits of a CronJob's scheduled minute: 10,000,000 minutes is 1989.
const MIN_SCHEDULE_DIGITS: usize = 8;

/// The owner of a pod, as a bounded metric label (never the pod's own name).
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct Workload {
    pub kind: String,
    pub name: String,
}

impl Workload {
    /// The workload of a pod, by the rules of the module doc.
    pub fn of(pod: &Pod) -> Workload {
        let owner = pod
            .metadata
            .owner_references
            .as_deref()
            .unwrap_or_default()
            .iter()
            .find(|o| o.controller == Some(true));
        let Some(o) = owner else {
            return Workload::new("Pod", "");
        };
        let resolved = match o.kind.as_str() {
            "ReplicaSet" => deployment_of(pod, &o.name).map(|d| Workload::new("Deployment", d)),
            "Job" if o.api_version.starts_with("batch/") => {
                cronjob_of(pod, &o.name).map(|c| Workload::new("CronJob", c))
            }
            _ => None,
        };
        resolved.unwrap_or_else(|| Workload::new(&o.kind, &o.name))
    }

    fn new(kind: &str, name: &str) -> Workload {
        Workload {
            kind: kind.into(),
            name: name.into(),
        }
    }

    pub fn display(&self) -> Option<String> {
        (!self.name.is_empty()).then(|| format!("{}/{}", self.kind, self.name))
    }
}

/// `<deployment>-<pod-template-hash>` -> `<deployment>`.
fn deployment_of<'a>(pod: &Pod, replicaset: &'a str) -> Option<&'a str> {
    let hash = pod.metadata.labels.as_ref()?.get("pod-template-hash")?;
    replicaset
        .strip_suffix(hash.as_str())?
        .strip_suffix('-')
        .filter(|d| !d.is_empty())
}

/// `<cronjob>-<scheduled minute>` -> `<cronjob>`, when that minute fits the
/// pod's creation time.
fn cronjob_of<'a>(pod: &Pod, job: &'a str) -> Option<&'a str> {
    let (cronjob, digits) = job.rsplit_once('-')?;
    if cronjob.is_empty()
        || digits.len() < MIN_SCHEDULE_DIGITS
        || !digits.bytes().all(|b| b.is_ascii_digit())
    {
        return None;
    }
    let scheduled: i64 = digits.parse().ok()?;
    let created = pod.metadata.creation_timestamp.as_ref()?.0.as_second() / 60;
    let since = created.checked_sub(scheduled)?;
    (-1..=CRONJOB_RUN_WINDOW_MINUTES)
        .contains(&since)
        .then_some(cronjob)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// 29345678 minutes after the epoch.
    const SCHEDULED: &str = "2025-10-17T22:38:00Z";

    fn pod(
        owner: Option<(&str, &str, &str)>,
        labels: serde_json::Value,
        created: Option<&str>,
    ) -> Pod {
        let mut meta = json!({"name": "p", "labels": labels});
        if let Some((api_version, kind, name)) = owner {
            meta["ownerReferences"] = json!([{"apiVersion": api_version, "kind": kind,
                "name": name, "uid": "u", "controller": true}]);
        }
        if let Some(t) = created {
            meta["creationTimestamp"] = json!(t);
        }
        serde_json::from_value(json!({ "metadata": meta })).unwrap()
    }

    fn job_pod(job: &str, created: Option<&str>) -> Pod {
        pod(
            Some(("batch/v1", "Job", job)),
            json!({"batch.kubernetes.io/job-name": job, "job-name": job}),
            created,
        )
    }

    fn of(kind: &str, name: &str) -> Workload {
        Workload::new(kind, name)
    }

    #[test]
    fn schedule_constant_is_the_minute_of_the_test_time() {
        let t: k8s_openapi::jiff::Timestamp = SCHEDULED.parse().unwrap();
        assert_eq!(t.as_second() / 60, 29_345_678);
    }

    #[test]
    fn replicasets_resolve_to_deployments_by_their_template_hash() {
        let rs = |name, labels| pod(Some(("apps/v1", "ReplicaSet", name)), labels, None);
        let hash = json!({"pod-template-hash": "7d9f8c6b5"});
        assert_eq!(
            Workload::of(&rs("web-7d9f8c6b5", hash.clone())),
            of("Deployment", "web")
        );
        // A Deployment named with dashes keeps them.
        assert_eq!(
            Workload::of(&rs("my-web-2-7d9f8c6b5", hash.clone())),
            of("Deployment", "my-web-2")
        );
        // A ReplicaSet of its own (no hash label, or another suffix).
        assert_eq!(
            Workload::of(&rs("cache", json!({}))),
            of("ReplicaSet", "cache")
        );
        assert_eq!(
            Workload::of(&rs("web-abc", hash.clone())),
            of("ReplicaSet", "web-abc")
        );
        assert_eq!(
            Workload::of(&rs("7d9f8c6b5", hash)),
            of("ReplicaSet", "7d9f8c6b5")
        );
    }

    #[test]
    fn cronjob_runs_resolve_to_their_cronjob() {
        // The pod made when the Job started, a minute later, and days later (a retry).
        for created in [SCHEDULED, "2025-10-17T22:39:12Z", "2025-11-10T03:00:00Z"] {
            assert_eq!(
                Workload::of(&job_pod("nightly-29345678", Some(created))),
                of("CronJob", "nightly"),
                "created {created}"
            );
        }
        // Every run of the CronJob gives the same label.
        assert_eq!(
            Workload::of(&job_pod("nightly-29347118", Some("2025-10-18T22:38:05Z"))),
            of("CronJob", "nightly")
        );
        // Dashes and digits inside a CronJob's name stay.
        assert_eq!(
            Workload::of(&job_pod("etl-2-hourly-29345678", Some(SCHEDULED))),
            of("CronJob", "etl-2-hourly")
        );
        // The controller-manager's clock a little ahead of the API server's.
        assert_eq!(
            Workload::of(&job_pod("nightly-29345678", Some("2025-10-17T22:37:59Z"))),
            of("CronJob", "nightly")
        );
    }

    #[test]
    fn jobs_named_by_people_keep_their_name() {
        let created = Some("2026-11-25T10:00:00Z");
        for job in [
            "backup-20240101",   // a date: minute 20240101 is in 1998
            "backup-2024010112", // a date and hour: far in the future
            "report-1795000000", // seconds since the epoch: in the future as minutes
            "migrate-1234567",   // 7 digits
            "migrate-v2",
            "29345678", // nothing before the digits
            "x-29345678a",
        ] {
            assert_eq!(
                Workload::of(&job_pod(job, created)),
                of("Job", job),
                "{job}"
            );
        }
        // A scheduled minute more than the window before the pod, or after it.
        assert_eq!(
            Workload::of(&job_pod("nightly-29345678", Some("2025-12-01T00:00:00Z"))),
            of("Job", "nightly-29345678")
        );
        assert_eq!(
            Workload::of(&job_pod("nightly-29345678", Some("2025-10-17T22:30:00Z"))),
            of("Job", "nightly-29345678")
        );
        // No creation time: nothing to check the minute against.
        assert_eq!(
            Workload::of(&job_pod("nightly-29345678", None)),
            of("Job", "nightly-29345678")
        );
        // A "Job" of another API group is not a batch Job.
        let custom = pod(
            Some(("example.com/v1", "Job", "nightly-29345678")),
            json!({}),
            Some(SCHEDULED),
        );
        assert_eq!(Workload::of(&custom), of("Job", "nightly-29345678"));
        // More digits than an i64 holds.
        let huge = format!("x-{}", "9".repeat(30));
        assert_eq!(Workload::of(&job_pod(&huge, created)), of("Job", &huge));
    }

    #[test]
    fn other_owners_keep_kind_and_name_and_bare_pods_have_no_name() {
        let sts = pod(Some(("apps/v1", "StatefulSet", "db")), json!({}), None);
        assert_eq!(Workload::of(&sts), of("StatefulSet", "db"));
        let bare = pod(None, json!({}), Some(SCHEDULED));
        assert_eq!(Workload::of(&bare), of("Pod", ""));
        assert_eq!(Workload::of(&bare).display(), None);
        // An owner that is not the controller does not count.
        let mut not_controller = pod(Some(("apps/v1", "ReplicaSet", "web-1")), json!({}), None);
        not_controller.metadata.owner_references.as_mut().unwrap()[0].controller = None;
        assert_eq!(Workload::of(&not_controller), of("Pod", ""));
        assert_eq!(
            of("CronJob", "nightly").display().as_deref(),
            Some("CronJob/nightly")
        );
    }
}
