//! The stored reports are the ledger of what has been counted. The writer
//! keeps, per report, a `Digest` of the status the API server holds: read
//! from the stored reports when it starts or takes the lease over, advanced
//! only by a write that succeeded. A write's increments (the metrics it
//! adds, the violations it announces) are the part of its status not yet in
//! that digest, so a restart, a failover or a retried write never counts a
//! thing twice, and a status that equals the stored one is not written.

use crate::crd::{ReportSpec, ReportStatus};
use crate::model::ProbeKind;
use crate::report::{Check, Outcome, Report, Verdict, Violation};
use k8s_openapi::jiff::Timestamp;
use std::collections::HashMap;
use std::hash::{DefaultHasher, Hash, Hasher};

pub(crate) fn hash_of(x: impl Hash) -> u64 {
    let mut h = DefaultHasher::new();
    x.hash(&mut h);
    h.finish()
}
/// The ledger: a digest of every stored report the writer knows.
#[derive(Debug, Default)]
pub struct Ledger {
    reports: HashMap<(String, String), Digest>,
}

impl Ledger {
    /// Takes a stored report as it is (start-up, a takeover's pass, or a
    /// read after a conflict), at its `resourceVersion`.
    pub fn seed(
        &mut self,
        namespace: &str,
        name: &str,
        spec: &ReportSpec,
        status: &ReportStatus,
        resource_version: Option<&str>,
    ) {
        self.reports.insert(
            (namespace.into(), name.into()),
            Digest::from_status(spec, status).at(resource_version),
        );
    }

    /// A stored report with no status yet (its spec applied): nothing
    /// counted, and known to exist at `resource_version`.
    pub fn seed_empty(&mut self, key: &(String, String), resource_version: Option<&str>) {
        self.reports
            .insert(key.clone(), Digest::default().at(resource_version));
    }

    /// Takes in another part of the stored reports (a page of a takeover's pass).
    pub fn extend(&mut self, other: Ledger) {
        self.reports.extend(other.reports);
    }

    /// Whether the API server holds exactly the status of this hash
    /// (`status_hash`) already.
    pub fn holds(&self, key: &(String, String), hash: u64) -> bool {
        self.reports.get(key).is_some_and(|d| d.status_hash == hash)
    }

    /// A write of `status` (of hash `hash`) succeeded: what it added to the
    /// counts.
    /// `resource_version` is the stored object's after the write.
    pub fn record(
        &mut self,
        key: &(String, String),
        hash: u64,
        status: &ReportStatus,
        resource_version: Option<&str>,
    ) -> Increments {
        let d = self.reports.entry(key.clone()).or_default();
        d.resource_version = resource_version.map(Into::into);
        if d.status_hash == hash {
            return Increments::default();
        }
        let inc = count(d, &status.report);
        d.status_hash = hash;
        d.conclusion_hash = conclusion_hash(status);
        d.ended = status.pod_ended_at.is_some();
        inc
    }

    /// The `conclusion_hash` of the stored report of `key`, if it is known.
    pub fn conclusion(&self, key: &(String, String)) -> Option<u64> {
        self.reports.get(key).map(|d| d.conclusion_hash)
    }

    /// The violations of `status` that the stored report does not hold yet
    /// (what its write will announce).
    pub fn new_violations(&self, key: &(String, String), status: &ReportStatus) -> Vec<Violation> {
        let held = self.reports.get(key);
        status
            .report
            .violations
            .iter()
            .filter(|v| held.is_none_or(|d| !d.violations.contains(&violation_key(v))))
            .cloned()
            .collect()
    }

    /// What the stored report of `key` counted so far, if it is known.
    pub fn digest(&self, key: &(String, String)) -> Option<Digest> {
        self.reports.get(key).cloned()
    }

    /// Whether the report is known to exist (stored, or written by us).
    pub fn contains(&self, key: &(String, String)) -> bool {
        self.reports.contains_key(key)
    }

    /// The report was deleted (or will never be written again).
    pub fn forget(&mut self, key: &(String, String)) {
        self.reports.remove(key);
    }

    pub fn len(&self) -> usize {
        self.reports.len()
    }

    pub fn is_empty(&self) -> bool {
        self.reports.is_empty()
    }

    /// Keeps only the reports whose key `keep` accepts.
    pub fn retain(&mut self, mut keep: impl FnMut(&(String, String)) -> bool) {
        self.reports.retain(|k, _| keep(k));
    }

    /// The keys of every report.
    pub fn keys(&self) -> impl Iterator<Item = &(String, String)> {
        self.reports.keys()
    }

    /// The keys of the stored reports that still read as live (no pod end).
    pub fn live(&self) -> impl Iterator<Item = &(String, String)> {
        self.reports
            .iter()
            .filter(|(_, d)| !d.ended)
            .map(|(k, _)| k)
    }
}

/// What has been counted (and written) for one pod.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Digest {
    violations: Vec<u64>,
    probes: Vec<(u64, ProbeKind, u32)>,
    restarts: Vec<(u64, u32)>,
    startup_timed: bool,
    shutdown_timed: bool,
    /// The status records the pod's end.
    ended: bool,
    status_hash: u64,
    /// The `conclusion_hash` of the stored status.
    conclusion_hash: u64,
    /// The stored object's `metadata.resourceVersion`, when known: the next
    /// status write applies only over that version (else a 409), so no
    /// write ever replaces one its writer did not count from.
    resource_version: Option<Box<str>>,
    /// What the next write names as its `earlierWriteIds`: the stored
    /// write this digest was read from, and the ones it named.
    earlier: Vec<Box<str>>,
}

/// How many earlier writes a status names (`earlierWriteIds`): a write
/// left unanswered is read back within `writer::SETTLE_FOR`, during which
/// fewer replicas than this read the report over it.
pub const MAX_EARLIER: usize = 4;

fn violation_key(v: &Violation) -> u64 {
    hash_of((v.rule, &v.containers))
}

/// A hash of the JSON the writer sends. The status's `write_id` and
/// `earlier_write_ids` are left out: they name writes, not what was judged.
pub fn status_hash(spec: &ReportSpec, s: &ReportStatus) -> u64 {
    let mut json = Vec::with_capacity(1024);
    status_json(&mut json, s, Some(spec));
    hash_bytes(&json)
}

/// A hash of what a report concludes: its verdicts, its violations, probe
/// failures and restarts, every check that did not pass, and the pod's end.
/// A status that changes it is written at once (`queue::Outgoing::urgent`);
/// one that changes only the rest (the evidence and its gaps, the
/// containers' states and times, a passed check, the kubelet's version
/// once the pod is bound, the spec) waits up to `writer::REFRESH_WITHIN`
/// for the next change of what the report concludes to carry it. The
/// evidence is not a conclusion of its own: while the kubelet's Started
/// Event of a container that the pod's status shows started is on its way,
/// the report reads Partial ("no Started event"), complete again a moment
/// later. Written at once, those flips were four of the six changes of a
/// kwok pod's conclusion queued at its start (a debug log per queued
/// status, 1,000 pods). A pod's
/// startup is judged when its last app starts and its shutdown when its
/// last container stops: a write per container start or stop was about
/// five per pod where two or three say the same, as many etcd writes as
/// the pods' own.
pub fn conclusion_hash(s: &ReportStatus) -> u64 {
    let mut json = Vec::with_capacity(512);
    status_json(&mut json, s, None);
    hash_bytes(&json)
}

/// `status_hash` and `conclusion_hash` from one buffer.
pub fn hashes(spec: &ReportSpec, s: &ReportStatus) -> (u64, u64) {
    let mut json = Vec::with_capacity(1024);
    let concluded = status_json(&mut json, s, Some(spec));
    (hash_bytes(&json), hash_bytes(&json[..concluded]))
}

/// Whether a status, whose `conclusion_hash` is `conclusion`, is written
/// at once (`queue::Outgoing::urgent`): when it concludes other than
/// `before`, the conclusion of the work queued for the report, else of the
/// stored report. A report neither queued nor stored is urgent once it
/// concludes anything (`concludes_nothing`): a pod seen before any of its
/// containers did anything is written with its first conclusion, or
/// within `writer::REFRESH_WITHIN` if none comes: one status write fewer
/// per pod whose startup is judged within that time.
pub fn urgent(before: Option<u64>, conclusion: u64, s: &ReportStatus) -> bool {
    match before {
        Some(b) => b != conclusion,
        None => !concludes_nothing(s),
    }
}

/// A status that concludes nothing yet: both phases Pending, no
/// violation, probe failure, restart or check that did not pass, the pod
/// not ended. What `conclusion_hash` covers, read the same way field by
/// field.
pub fn concludes_nothing(s: &ReportStatus) -> bool {
    let ReportStatus {
        report,
        violation_count,
        probe_failure_count,
        sidecar_restarts,
        pod_ended_at,
        kubelet_version: _,
        write_id: _,
        earlier_write_ids: _,
    } = s;
    let Report {
        startup,
        shutdown,
        sidecars: _,
        evidence: _,
        gaps: _,
        violations,
        probe_failures,
        containers,
        checks,
    } = report;
    *startup == Verdict::Pending
        && *shutdown == Verdict::Pending
        && violations.is_empty()
        && probe_failures.is_empty()
        && (*violation_count, *probe_failure_count, *sidecar_restarts) == (0, 0, 0)
        && pod_ended_at.is_none()
        && containers.iter().all(|c| c.restarts == 0)
        && checks.iter().all(|c| c.outcome == Outcome::Verified)
}

/// The JSON both hashes are taken of, built in one buffer and hashed at
/// once (fed to the hasher token by token, a few bytes each, SipHash's
/// cost per call was most of the time): what the report concludes first,
/// then, given the spec, the rest. Returns the length of the first part.
fn status_json(json: &mut Vec<u8>, s: &ReportStatus, rest: Option<&ReportSpec>) -> usize {
    // Every field named: a new one is hashed, or left out on purpose.
    let ReportStatus {
        report,
        violation_count,
        probe_failure_count,
        sidecar_restarts,
        pod_ended_at,
        kubelet_version,
        write_id: _,
        earlier_write_ids: _,
    } = s;
    let Report {
        startup,
        shutdown,
        sidecars,
        evidence,
        gaps,
        violations,
        probe_failures,
        containers,
        checks,
    } = report;
    let passed = |c: &&Check| c.outcome == Outcome::Verified;
    // Serialising these plain structs cannot fail; a failure would only
    // cost one unneeded write.
    let _ = serde_json::to_writer(
        &mut *json,
        &(
            startup,
            shutdown,
            sidecars,
            violations,
            probe_failures,
            (violation_count, probe_failure_count, sidecar_restarts),
            pod_ended_at,
        ),
    );
    for c in containers {
        let _ = serde_json::to_writer(&mut *json, &(&c.name, c.restarts));
    }
    for c in checks.iter().filter(|c| !passed(c)) {
        let _ = serde_json::to_writer(&mut *json, c);
    }
    let concluded = json.len();
    if let Some(spec) = rest {
        let _ = serde_json::to_writer(&mut *json, spec);
        let _ = serde_json::to_writer(&mut *json, &(evidence, gaps));
        let _ = serde_json::to_writer(&mut *json, containers);
        for c in checks.iter().filter(passed) {
            let _ = serde_json::to_writer(&mut *json, c);
        }
        let _ = serde_json::to_writer(&mut *json, kubelet_version);
    }
    concluded
}

fn hash_bytes(b: &[u8]) -> u64 {
    let mut h = DefaultHasher::new();
    h.write(b);
    h.finish()
}

impl Digest {
    /// What a stored report already recorded (loaded at start-up).
    pub fn from_status(spec: &ReportSpec, s: &ReportStatus) -> Digest {
        let r = &s.report;
        let (status_hash, conclusion_hash) = hashes(spec, s);
        Digest {
            violations: r.violations.iter().map(violation_key).collect(),
            probes: r
                .probe_failures
                .iter()
                .map(|p| (hash_of(&p.container), p.probe, p.count))
                .collect(),
            restarts: r
                .containers
                .iter()
                .map(|c| (hash_of(&c.name), c.restarts))
                .collect(),
            startup_timed: r.startup != Verdict::Pending,
            shutdown_timed: r.shutdown != Verdict::Pending,
            ended: s.pod_ended_at.is_some(),
            status_hash,
            conclusion_hash,
            resource_version: None,
            earlier: written_by(s).take(MAX_EARLIER).map(Into::into).collect(),
        }
    }

    fn at(self, resource_version: Option<&str>) -> Digest {
        Digest {
            resource_version: resource_version.map(Into::into),
            ..self
        }
    }

    /// The `status_hash` of the stored status.
    pub fn status_hash(&self) -> u64 {
        self.status_hash
    }

    /// The version of the stored object this digest was taken from.
    pub fn resource_version(&self) -> Option<&str> {
        self.resource_version.as_deref()
    }

    /// The writes the next write of the report names as written over.
    pub fn earlier(&self) -> impl Iterator<Item = &str> {
        self.earlier.iter().map(|s| &**s)
    }
}

/// The writes whose status `s` is or descends from: its own, then the ones
/// it names as written over, newest first.
pub fn written_by(s: &ReportStatus) -> impl Iterator<Item = &str> {
    s.write_id
        .iter()
        .chain(&s.earlier_write_ids)
        .map(String::as_str)
}

/// What `status` adds to `before` (a report's digest when its write was
/// sent; none: nothing stored then).
pub fn increments_over(before: Option<Digest>, status: &ReportStatus) -> Increments {
    count(&mut before.unwrap_or_default(), &status.report)
}

/// Metric increments of one update: only what was not counted before.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Increments {
    pub violations: Vec<Violation>,
    pub probe_failures: Vec<(String, ProbeKind, u32)>,
    /// Sidecar restarts per container.
    pub sidecar_restarts: Vec<(String, u32)>,
    pub startup_seconds: Option<f64>,
    pub shutdown_seconds: Option<f64>,
}

pub(crate) fn secs_of(s: &Option<String>) -> Option<i64> {
    s.as_deref()?
        .parse::<Timestamp>()
        .ok()
        .map(|t| t.as_second())
}

/// Startup time: first sidecar start to last app start; shutdown time: last
/// app exit to last sidecar exit.
fn durations(r: &Report) -> (Option<f64>, Option<f64>) {
    use crate::model::Role;
    let of = |role: Role| r.containers.iter().filter(move |c| c.role == role);
    let span = |a: Option<i64>, b: Option<i64>| match (a, b) {
        (Some(a), Some(b)) if b >= a => Some((b - a) as f64),
        _ => None,
    };
    let first_sidecar = of(Role::Sidecar)
        .filter_map(|c| secs_of(&c.first_started_at))
        .min();
    let last_app_start = of(Role::App)
        .filter_map(|c| secs_of(&c.first_started_at))
        .max();
    let last_app_end = of(Role::App).filter_map(|c| secs_of(&c.finished_at)).max();
    let last_sidecar_end = of(Role::Sidecar)
        .filter_map(|c| secs_of(&c.finished_at))
        .max();
    (
        span(first_sidecar, last_app_start),
        span(last_app_end, last_sidecar_end),
    )
}

/// The part of `r` not yet counted in `d`; updates `d`.
fn count(d: &mut Digest, r: &Report) -> Increments {
    let mut inc = Increments::default();
    for v in &r.violations {
        let k = violation_key(v);
        if !d.violations.contains(&k) {
            d.violations.push(k);
            inc.violations.push(v.clone());
        }
    }
    for p in &r.probe_failures {
        let k = hash_of(&p.container);
        match d
            .probes
            .iter_mut()
            .find(|(c, kind, _)| *c == k && *kind == p.probe)
        {
            Some((_, _, n)) => {
                if p.count > *n {
                    inc.probe_failures
                        .push((p.container.clone(), p.probe, p.count - *n));
                    *n = p.count;
                }
            }
            None => {
                inc.probe_failures
                    .push((p.container.clone(), p.probe, p.count));
                d.probes.push((k, p.probe, p.count));
            }
        }
    }
    for c in r
        .containers
        .iter()
        .filter(|c| c.role == crate::model::Role::Sidecar)
    {
        let k = hash_of(&c.name);
        let before = match d.restarts.iter_mut().find(|(n, _)| *n == k) {
            Some((_, n)) => std::mem::replace(n, c.restarts.max(*n)),
            None => {
                d.restarts.push((k, c.restarts));
                0
            }
        };
        if c.restarts > before {
            inc.sidecar_restarts
                .push((c.name.clone(), c.restarts - before));
        }
    }
    let (startup, shutdown) = durations(r);
    if !d.startup_timed && r.startup != Verdict::Pending {
        d.startup_timed = true;
        inc.startup_seconds = startup;
    }
    if !d.shutdown_timed && r.shutdown != Verdict::Pending {
        d.shutdown_timed = true;
        inc.shutdown_seconds = shutdown;
    }
    inc
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Role;
    use crate::report::{ContainerReport, Evidence};

    fn status(state: &str, restarts: u32) -> ReportStatus {
        let report = Report {
            startup: Verdict::Verified,
            shutdown: Verdict::Pending,
            sidecars: 1,
            evidence: Evidence::Complete,
            gaps: vec![],
            violations: vec![],
            probe_failures: vec![],
            containers: vec![ContainerReport {
                name: "proxy".into(),
                role: Role::Sidecar,
                index: 0,
                restarts,
                state: state.into(),
                ready: true,
                first_started_at: None,
                finished_at: None,
                exit_code: None,
                reason: None,
            }],
            checks: vec![],
        };
        ReportStatus::new(report, None)
    }

    #[test]
    fn a_containers_state_changes_the_status_not_what_it_concludes() {
        let spec = ReportSpec {
            pod_name: "web".into(),
            pod_uid: "u".into(),
            workload: None,
        };
        let (running, waiting, restarted) = (
            status("Running", 0),
            status("Waiting", 0),
            status("Running", 1),
        );
        for s in [&running, &waiting, &restarted] {
            assert_eq!(
                hashes(&spec, s),
                (status_hash(&spec, s), conclusion_hash(s))
            );
        }
        assert_ne!(status_hash(&spec, &running), status_hash(&spec, &waiting));
        assert_eq!(conclusion_hash(&running), conclusion_hash(&waiting));
        assert_ne!(conclusion_hash(&running), conclusion_hash(&restarted));
        let mut other = running.clone();
        other.kubelet_version = Some("v1.34.4".into());
        assert_ne!(status_hash(&spec, &running), status_hash(&spec, &other));
        assert_eq!(conclusion_hash(&running), conclusion_hash(&other));
    }

    #[test]
    fn a_new_report_is_urgent_once_it_concludes_anything() {
        let mut seen = status("Waiting", 0);
        seen.report.startup = Verdict::Pending;
        assert!(concludes_nothing(&seen));
        let c = conclusion_hash(&seen);
        assert!(!urgent(None, c, &seen));
        assert!(!urgent(Some(c), c, &seen));
        // Each of these alone concludes something.
        let changes: [fn(&mut ReportStatus); 7] = [
            |s| s.report.startup = Verdict::Verified,
            |s| s.report.shutdown = Verdict::Indeterminate,
            |s| s.probe_failure_count = 1,
            |s| s.violation_count = 1,
            |s| s.sidecar_restarts = 1,
            |s| s.pod_ended_at = Some("2025-01-01T00:00:00Z".into()),
            |s| s.report.containers[0].restarts = 1,
        ];
        for (i, change) in changes.iter().enumerate() {
            let mut s = seen.clone();
            change(&mut s);
            assert!(!concludes_nothing(&s), "change {i}");
            assert!(urgent(None, conclusion_hash(&s), &s), "change {i}");
            assert!(urgent(Some(c), conclusion_hash(&s), &s), "change {i}");
        }
        // The containers' states, the evidence (a Started Event on its
        // way) and the kubelet's version conclude nothing.
        let mut s = seen.clone();
        s.report.containers[0].state = "Running".into();
        s.report.evidence = Evidence::Partial;
        s.report.gaps.push("no Started event for proxy".into());
        s.kubelet_version = Some("v1.34.4".into());
        assert!(concludes_nothing(&s));
        assert!(!urgent(Some(c), conclusion_hash(&s), &s));
    }
}
