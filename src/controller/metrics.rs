//! Prometheus metrics, all prefixed `sidecar_order_`. Labels are bounded:
//! namespace, rule, severity, container name, probe kind and owning workload,
//! never a pod name or uid.

use crate::controller::ledger::Increments;
use crate::controller::store::Update;
use crate::report::{Severity, Verdict};
use prometheus::{
    Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry,
};
use std::sync::Arc;

#[derive(Clone)]
pub struct Metrics {
    pub registry: Registry,
    pub violations: IntCounterVec,
    pub probe_failures: IntCounterVec,
    pub sidecar_restarts: IntCounterVec,
    pub startup_seconds: HistogramVec,
    pub shutdown_seconds: HistogramVec,
    pub reports: IntGaugeVec,
    report_cells: Arc<[IntGauge]>,
    pub tracked_pods: IntGauge,
    pub watch_events: IntCounterVec,
    pub pending_events_dropped: IntCounter,
    pub report_writes: IntCounterVec,
    pub report_latency: Histogram,
    pub leader: IntGauge,
}

const VERDICTS: [Verdict; 4] = [
    Verdict::Pending,
    Verdict::Verified,
    Verdict::Violated,
    Verdict::Indeterminate,
];

/// The `reports` gauge of each (startup, shutdown) verdict pair, in
/// `VERDICTS` order, created at zero: set after every input without
/// formatting or hashing its labels.
fn report_cells(reports: &IntGaugeVec) -> Arc<[IntGauge]> {
    let mut cells = Vec::with_capacity(VERDICTS.len() * VERDICTS.len());
    for a in VERDICTS {
        for b in VERDICTS {
            cells.push(reports.with_label_values(&[&format!("{a:?}"), &format!("{b:?}")]));
        }
    }
    cells.into()
}

/// The results of `sidecar_order_report_writes_total`: a write done
/// (`written`, `recreated` after the report was deleted behind the
/// controller's back, `deleted`), given up (`not_found_dropped`: 404 with
/// nothing left to write; `rejected`: 400/403/422), retried after a backoff
/// (`conflict` 409, `throttled` 429, `server_error` 5xx, `timeout`,
/// `transport`, `other_error` for any other status), or a pod Event that
/// failed (`event_error`, not retried). Each failed attempt counts once. A
/// status write left without an answer when the lease was lost or the
/// process stopped is read back: it landed (`unanswered_landed`, counted
/// then), did not or was overwritten by another replica
/// (`unanswered_lost`), or could not be read back (`unanswered_unknown`).
pub const WRITE_RESULTS: &[&str] = &[
    "written",
    "recreated",
    "deleted",
    "closed",
    "not_found_dropped",
    "rejected",
    "conflict",
    "throttled",
    "server_error",
    "timeout",
    "transport",
    "other_error",
    "event_error",
    "unanswered_landed",
    "unanswered_lost",
    "unanswered_unknown",
];

const SECONDS: &[f64] = &[0.5, 1.0, 2.0, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0, 300.0];

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let registry = Registry::new();
        let counter = |name: &str, help: &str, labels: &[&str]| {
            let c = IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric");
            registry
                .register(Box::new(c.clone()))
                .expect("registers once");
            c
        };
        let violations = counter(
            "sidecar_order_violations_total",
            "Sidecar ordering violations found, counted once each",
            &[
                "namespace",
                "rule",
                "severity",
                "workload_kind",
                "workload",
                "kubelet_version",
            ],
        );
        let probe_failures = counter(
            "sidecar_order_probe_failures_total",
            "Probe failures of containers in pods with native sidecars",
            &["namespace", "container", "probe"],
        );
        let sidecar_restarts = counter(
            "sidecar_order_sidecar_restarts_total",
            "Restarts of native sidecar containers",
            &["namespace", "container"],
        );
        let watch_events = counter(
            "sidecar_order_watch_events_total",
            "Watch events received",
            &["kind"],
        );
        let report_writes = counter(
            "sidecar_order_report_writes_total",
            "SidecarOrderReport writes by result",
            &["result"],
        );
        let histogram = |name: &str, help: &str| {
            let h = HistogramVec::new(
                HistogramOpts::new(name, help).buckets(SECONDS.to_vec()),
                &["namespace"],
            )
            .expect("valid metric");
            registry
                .register(Box::new(h.clone()))
                .expect("registers once");
            h
        };
        let startup_seconds = histogram(
            "sidecar_order_sidecar_startup_seconds",
            "From the first sidecar start to the last app container start",
        );
        let shutdown_seconds = histogram(
            "sidecar_order_sidecar_shutdown_seconds",
            "From the last app container exit to the last sidecar exit",
        );
        let report_latency = Histogram::with_opts(
            HistogramOpts::new(
                "sidecar_order_report_latency_seconds",
                "From the watch event that changed what a report concludes to the report stored",
            )
            // Fine below a second: the targets are p50 <= 0.5 s, p99 <= 2 s.
            .buckets(vec![
                0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0,
            ]),
        )
        .expect("valid metric");
        registry
            .register(Box::new(report_latency.clone()))
            .expect("registers once");
        let reports = IntGaugeVec::new(
            Opts::new(
                "sidecar_order_reports",
                "Reports of tracked pods by verdict",
            ),
            &["startup", "shutdown"],
        )
        .expect("valid metric");
        registry
            .register(Box::new(reports.clone()))
            .expect("registers once");
        let gauge = |name: &str, help: &str| {
            let g = IntGauge::new(name, help).expect("valid metric");
            registry
                .register(Box::new(g.clone()))
                .expect("registers once");
            g
        };
        let tracked_pods = gauge(
            "sidecar_order_tracked_pods",
            "Pods with native sidecars being tracked",
        );
        let leader = gauge(
            "sidecar_order_leader",
            "1 when this replica holds the lease and writes",
        );
        let pending_events_dropped = IntCounter::new(
            "sidecar_order_pending_events_dropped_total",
            "Kubelet events dropped while waiting for their pod to be seen (the buffer was full)",
        )
        .expect("valid metric");
        registry
            .register(Box::new(pending_events_dropped.clone()))
            .expect("registers once");
        let report_cells = report_cells(&reports);
        // Known label sets start at zero, so rates and dashboards have data at once.
        for kind in ["pod", "event", "node"] {
            watch_events.with_label_values(&[kind]);
        }
        for result in WRITE_RESULTS {
            report_writes.with_label_values(&[result]);
        }
        Metrics {
            registry,
            violations,
            probe_failures,
            sidecar_restarts,
            startup_seconds,
            shutdown_seconds,
            reports,
            report_cells,
            tracked_pods,
            watch_events,
            pending_events_dropped,
            report_writes,
            report_latency,
            leader,
        }
    }

    /// Counts what an update newly found.
    /// Counts what a stored write added (`inc`, from the ledger).
    pub fn count(&self, u: &Update, inc: &Increments) {
        let ns = u.namespace.as_str();
        // The kubelet's minor version ("1.34"): which kubelets misbehave.
        let kubelet = u
            .status
            .kubelet_version
            .as_deref()
            .and_then(crate::kubelet::KubeletVersion::parse)
            .map_or_else(|| "unknown".to_string(), |k| k.minor_label());
        for v in &inc.violations {
            let sev = match v.severity {
                Severity::Error => "Error",
                Severity::Warning => "Warning",
            };
            self.violations
                .with_label_values(&[
                    ns,
                    v.rule.id(),
                    sev,
                    &u.workload.kind,
                    &u.workload.name,
                    &kubelet,
                ])
                .inc();
        }
        for (container, probe, n) in &inc.probe_failures {
            self.probe_failures
                .with_label_values(&[ns, container, probe.as_str()])
                .inc_by(u64::from(*n));
        }
        for (container, n) in &inc.sidecar_restarts {
            self.sidecar_restarts
                .with_label_values(&[ns, container])
                .inc_by(u64::from(*n));
        }
        if let Some(s) = inc.startup_seconds {
            self.startup_seconds.with_label_values(&[ns]).observe(s);
        }
        if let Some(s) = inc.shutdown_seconds {
            self.shutdown_seconds.with_label_values(&[ns]).observe(s);
        }
    }

    /// Sets the verdict gauge for every (startup, shutdown) pair, zeros included.
    pub fn set_verdicts(&self, counts: &std::collections::HashMap<(Verdict, Verdict), i64>) {
        let pairs = VERDICTS
            .iter()
            .flat_map(|&a| VERDICTS.iter().map(move |&b| (a, b)));
        for (cell, pair) in self.report_cells.iter().zip(pairs) {
            cell.set(counts.get(&pair).copied().unwrap_or(0));
        }
    }

    /// The text exposition of every metric.
    pub fn render(&self) -> String {
        prometheus::TextEncoder::new()
            .encode_to_string(&self.registry.gather())
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::controller::ledger::Increments;
    use crate::controller::store::{Update, Workload};
    use crate::crd::{ReportSpec, ReportStatus};
    use crate::model::ProbeKind;
    use crate::report::{Evidence, Report, Rule, Violation};

    #[test]
    fn labels_are_bounded_and_counts_add_up() {
        let m = Metrics::new();
        let report = Report {
            startup: Verdict::Verified,
            shutdown: Verdict::Violated,
            sidecars: 1,
            evidence: Evidence::Complete,
            gaps: vec![],
            violations: vec![],
            probe_failures: vec![],
            containers: vec![],
            checks: vec![],
        };
        let u = Update {
            namespace: "shop".into(),
            report_name: "web-7d9f8c6b5-x2x7q-1b2c3d4e".into(),
            pod_name: "web-7d9f8c6b5-x2x7q".into(),
            pod_uid: "1b2c3d4e-0000-4000-8000-000000000000".into(),
            workload: Workload {
                kind: "Deployment".into(),
                name: "web".into(),
            },
            spec: ReportSpec {
                pod_name: "web-7d9f8c6b5-x2x7q".into(),
                pod_uid: "1b2c3d4e".into(),
                workload: None,
            },
            status: ReportStatus::new(report, None)
                .with_kubelet(crate::kubelet::KubeletVersion::parse("v1.32.1-eks-4f6e1a2")),
        };
        let inc = Increments {
            violations: vec![Violation {
                rule: Rule::SidecarStopOrder,
                severity: Severity::Error,
                containers: vec!["a".into(), "b".into()],
                message: String::new(),
                evidence: vec![],
            }],
            probe_failures: vec![("proxy".into(), ProbeKind::Liveness, 6)],
            sidecar_restarts: vec![("proxy".into(), 2)],
            startup_seconds: Some(2.0),
            shutdown_seconds: None,
        };
        m.count(&u, &inc);
        m.count(&u, &Increments::default());
        let text = m.render();
        assert!(text.contains(r#"sidecar_order_violations_total{kubelet_version="1.32",namespace="shop",rule="sidecar-stop-order",severity="Error",workload="web",workload_kind="Deployment"} 1"#), "{text}");
        assert!(text.contains(r#"sidecar_order_probe_failures_total{container="proxy",namespace="shop",probe="liveness"} 6"#));
        assert!(text.contains(
            r#"sidecar_order_sidecar_restarts_total{container="proxy",namespace="shop"} 2"#
        ));
        assert!(
            text.contains(r#"sidecar_order_sidecar_startup_seconds_count{namespace="shop"} 1"#)
        );
        assert!(
            text.contains(r#"sidecar_order_reports{shutdown="Verified",startup="Verified"} 0"#)
        );
        for result in WRITE_RESULTS {
            let zero = format!("sidecar_order_report_writes_total{{result=\"{result}\"}} 0");
            assert!(text.contains(&zero), "{zero} missing");
        }
        // No pod name or uid ever becomes a label value.
        assert!(
            !text.contains("x2x7q") && !text.contains("1b2c3d4e"),
            "{text}"
        );
        for line in text.lines().filter(|l| l.starts_with("sidecar_order_")) {
            let name = line.split(['{', ' ']).next().unwrap();
            assert!(
                name.ends_with("_total")
                    || name.contains("_seconds")
                    || name.ends_with("_pods")
                    || name.ends_with("_reports")
                    || name.ends_with("_leader"),
                "unexpected metric name {name}"
            );
        }
    }

    #[test]
    fn verdict_gauges_follow_the_counts_of_each_pair() {
        let m = Metrics::new();
        let gauge = |text: &str, startup: &str, shutdown: &str| {
            let key =
                format!("sidecar_order_reports{{shutdown=\"{shutdown}\",startup=\"{startup}\"}} ");
            let line = text
                .lines()
                .find(|l| l.starts_with(&key))
                .expect("every pair");
            line[key.len()..].parse::<i64>().unwrap()
        };
        let mut counts = std::collections::HashMap::new();
        counts.insert((Verdict::Violated, Verdict::Pending), 3);
        counts.insert((Verdict::Verified, Verdict::Indeterminate), 1);
        m.set_verdicts(&counts);
        let text = m.render();
        assert_eq!(gauge(&text, "Violated", "Pending"), 3);
        assert_eq!(gauge(&text, "Verified", "Indeterminate"), 1);
        assert_eq!(gauge(&text, "Pending", "Violated"), 0);
        // A pair gone from the counts goes back to zero.
        counts.remove(&(Verdict::Violated, Verdict::Pending));
        m.set_verdicts(&counts);
        let text = m.render();
        assert_eq!(gauge(&text, "Violated", "Pending"), 0);
        assert_eq!(gauge(&text, "Verified", "Indeterminate"), 1);
        let pairs = text
            .lines()
            .filter(|l| l.starts_with("sidecar_order_reports{"))
            .count();
        assert_eq!(pairs, 16);
    }
}
