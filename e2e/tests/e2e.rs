//! The live-cluster end-to-end suite of sidecar-order: real pods on the local
//! cluster, the deployed controller (config/), its SidecarOrderReports, Events
//! and Prometheus metrics. Run by `make e2e` (e2e/run.sh), or against a running
//! cluster with the controller deployed:
//!
//! ```sh
//! export KUBECONFIG=/tmp/sidecar-order-cluster/kubeconfig
//! cargo test --features e2e --test e2e -- --test-threads=4 --skip t10 --skip t11
//! cargo test --features e2e --test e2e -- --exact t10_controller_restart_counts_once
//! ```
//!
//! Every test works in a namespace of its own (`e2e-<test>-<suffix>`), deleted
//! at the end; a failing test prints its reports, the pods' container
//! statuses, the events and the controller's log.

#[macro_use]
mod support;
mod prom;

use k8s_openapi::api::batch::v1::{CronJob, Job};
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, PostParams};
use sidecar_order::crd::ReportStatus;
use sidecar_order::model::ProbeKind;
use sidecar_order::report::{Outcome, Rule, Severity, Verdict};
use std::time::{Duration, Instant};
use support::*;

// The pods of the promises `sidecar-order conformance` checks come from its
// catalogue (src/conformance/catalogue.rs), so the two never drift; these
// tests add what the controller makes of them (reports, metrics, Events).
use sidecar_order::conformance::catalogue;

const FILE3: &str = include_str!("../examples/03-exit.yaml");

/// A catalogue entry's pod (YAML), with the local cluster's image.
fn probe(entry: &catalogue::Entry, name: &str) -> String {
    entry.yaml(name, IMAGE)
}

fn name_of(yaml: &str) -> String {
    let pod: k8s_openapi::api::core::v1::Pod =
        serde_saphyr::from_str(yaml).expect("valid pod YAML");
    pod.metadata.name.expect("a named pod")
}

fn probe_count(s: &ReportStatus, kind: ProbeKind) -> u32 {
    s.report
        .probe_failures
        .iter()
        .filter(|p| p.probe == kind)
        .map(|p| p.count)
        .sum()
}

/// The sidecar's preStop hook kills its own process (the `sleep` its shell
/// waits for), so it exits at once while the app takes 3 s on SIGTERM.
pub const PRESTOP_KILL: &str = r#"
apiVersion: v1
kind: Pod
metadata:
  name: prestop-kills-sidecar
spec:
  terminationGracePeriodSeconds: 20
  containers:
  - name: app
    image: localhost/busybox:1
    imagePullPolicy: IfNotPresent
    command: ["sh", "-c", "trap 'sleep 3; exit 0' TERM; sleep infinity & wait"]
  initContainers:
  - name: sidecar
    image: localhost/busybox:1
    imagePullPolicy: IfNotPresent
    restartPolicy: Always
    command: ["sh", "-c", "sleep infinity & wait"]
    lifecycle:
      preStop:
        exec:
          command: ["killall", "sleep"]
"#;

/// File 4's liveness-failing sidecar with a short grace period.
pub const LIVENESS_FAIL: &str = r#"
apiVersion: v1
kind: Pod
metadata:
  name: liveness-fail
spec:
  terminationGracePeriodSeconds: 2
  containers:
  - name: app
    image: localhost/busybox:1
    imagePullPolicy: IfNotPresent
    command: ["sleep", "infinity"]
  initContainers:
  - name: sidecar
    image: localhost/busybox:1
    imagePullPolicy: IfNotPresent
    command: ["sleep", "infinity"]
    restartPolicy: Always
    livenessProbe:
      exec:
        command: ["sh", "-c", "exit 1"]
      periodSeconds: 2
      failureThreshold: 2
"#;

// ------------------------------------------------------------------ 1

/// Catalogue `apps-after-sidecars` (the article's File 1 with two sidecars):
/// startup Verified, pod Running and Ready, and `kubectl get sor` prints the
/// report with the CRD's columns.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t01_apps_after_sidecars_startup_verified_and_kubectl_columns() {
    run("t01-apps-after", |ctx| async move {
        let yaml = probe(&catalogue::APPS_AFTER_SIDECARS, "sidecar-container-example");
        let (name, pod_uid, s) = ctx.start_verified(&yaml).await?;
        ensure!(
            s.report.shutdown == Verdict::Pending,
            "shutdown of a running pod is {:?}, want Pending",
            s.report.shutdown
        );
        ensure!(
            s.report.sidecars == 2,
            "sidecars = {}, want 2",
            s.report.sidecars
        );
        ensure!(
            s.report.violations.is_empty(),
            "violations on a good pod:\n{}",
            status_summary(&s)
        );
        let report_name = ctx
            .report_of(&pod_uid)
            .await?
            .and_then(|r| r.metadata.name)
            .ok_or("the report vanished")?;

        // The real kubectl, short name and printer columns.
        let ns = ctx.ns.clone();
        let (header, row) = poll("`kubectl get sor` to show the report", secs(30), || {
            let ns = ns.clone();
            let report_name = report_name.clone();
            async move {
                let out = kubectl(&["-n", &ns, "get", "sor"])?;
                let mut lines = out.lines();
                let header: Vec<String> = lines
                    .next()
                    .unwrap_or("")
                    .split_whitespace()
                    .map(String::from)
                    .collect();
                let row = lines
                    .map(|l| l.split_whitespace().map(String::from).collect::<Vec<_>>())
                    .find(|r| r.first() == Some(&report_name));
                match row {
                    Some(r) if r.get(3).map(String::as_str) == Some("Verified") => {
                        Ok(Some((header, r)))
                    }
                    _ => Err(format!("kubectl get sor printed:\n{out}")),
                }
            }
        })
        .await?;
        let want = [
            "NAME",
            "POD",
            "SIDECARS",
            "STARTUP",
            "SHUTDOWN",
            "KUBELET",
            "VIOLATIONS",
            "PROBE-FAILURES",
            "RESTARTS",
            "AGE",
        ];
        ensure!(
            header == want,
            "kubectl get sor columns are {header:?}, want {want:?}"
        );
        ensure!(
            row.len() == want.len(),
            "row {row:?} does not have {} columns",
            want.len()
        );
        let expect = [
            report_name.as_str(),
            name.as_str(),
            "2",
            "Verified",
            "Pending",
            // The node's kubelet, e.g. v1.34.4: checked below.
            "",
            "0",
            "0",
            "0",
        ];
        ensure!(
            row[5].starts_with("v1."),
            "column KUBELET is {:?}, want the node's kubelet version (row {row:?})",
            row[5]
        );
        for (i, e) in expect.iter().enumerate().filter(|(i, _)| *i != 5) {
            ensure!(
                row[i] == *e,
                "column {} is {:?}, want {:?} (row {row:?})",
                want[i],
                row[i],
                e
            );
        }
        let age = &row[want.len() - 1];
        ensure!(
            age.chars().next().is_some_and(|c| c.is_ascii_digit())
                && age.ends_with(['s', 'm', 'h', 'd']),
            "AGE column {age:?} is not an age"
        );
        // The long name works too.
        let long = kubectl(&[
            "-n",
            &ctx.ns,
            "get",
            "sidecarorderreports.sidecar-order.dev",
            "-o",
            "name",
        ])?;
        ensure!(
            long.contains(&report_name),
            "kubectl get sidecarorderreports printed {long:?}"
        );
        Ok(())
    })
    .await;
}

// ------------------------------------------------------------------ 2

/// Catalogue `stop-order` (the article's File 2): two sidecars trapping
/// SIGTERM for 3 s. After deletion the report
/// survives the pod with shutdown Verified, and the containers finished app,
/// then second-sidecar, then first-sidecar, about 3 s apart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t02_file2_stop_order_survives_the_pod() {
    run("t02-file2", |ctx| async move {
        let yaml = probe(&catalogue::STOP_ORDER, "sidecar-container-order-example");
        let (name, pod_uid, s) = ctx.start_verified(&yaml).await?;
        ensure!(s.report.sidecars == 2, "sidecars = {}, want 2", s.report.sidecars);
        let first = started_at(&s, "first-sidecar")?;
        let second = started_at(&s, "second-sidecar")?;
        let app = started_at(&s, "app")?;
        ensure!(first <= second && second <= app, "start order first={first} second={second} app={app}");

        ctx.delete_pod(&name).await?;
        ctx.wait_pod_gone(&name, secs(90)).await?;
        let (_, s) = ctx
            .wait_report(&pod_uid, secs(60), "podEndedAt set and shutdown judged", |s| {
                s.pod_ended_at.is_some() && s.report.shutdown != Verdict::Pending
            })
            .await?;
        ensure!(s.report.shutdown == Verdict::Verified, "shutdown is {:?}, want Verified:\n{}", s.report.shutdown, status_summary(&s));
        ensure!(s.report.startup == Verdict::Verified, "startup changed to {:?}", s.report.startup);
        ensure!(s.report.violations.is_empty(), "violations:\n{}", status_summary(&s));
        let app = finished_at(&s, "app")?;
        let second = finished_at(&s, "second-sidecar")?;
        let first = finished_at(&s, "first-sidecar")?;
        for (a, b, what) in [(app, second, "app -> second-sidecar"), (second, first, "second-sidecar -> first-sidecar")] {
            ensure!(
                (2..=5).contains(&(b - a)),
                "{what}: {}s between finishedAt, want about 3 s (app={app} second={second} first={first})\n{}",
                b - a,
                status_summary(&s)
            );
        }
        for rule in [Rule::SidecarStoppedBeforeApp, Rule::SidecarStopOrder] {
            let checks: Vec<_> = s.report.checks.iter().filter(|c| c.rule == rule).collect();
            ensure!(!checks.is_empty(), "no {} check in the report", rule.id());
            ensure!(checks.iter().all(|c| c.outcome == Outcome::Verified), "{} checks: {checks:?}", rule.id());
        }
        Ok(())
    })
    .await;
}

// ------------------------------------------------------------------ 3

/// File 3 (restartPolicy Never): the app exits, the sidecars follow, the pod
/// completes and shutdown is Verified.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t03_file3_pod_completes_shutdown_verified() {
    run("t03-file3", |ctx| async move {
        let name = name_of(FILE3);
        let pod = ctx.create_pod(FILE3).await?;
        let pod_uid = uid(&pod.metadata);
        ctx.wait_pod(&name, secs(120), "phase Succeeded", |p| {
            phase(p) == "Succeeded"
        })
        .await?;
        let s = ctx.wait_shutdown_judged(&pod_uid).await?;
        ensure!(
            s.report.shutdown == Verdict::Verified,
            "shutdown is {:?}, want Verified:\n{}",
            s.report.shutdown,
            status_summary(&s)
        );
        ensure!(
            s.report.startup == Verdict::Verified,
            "startup is {:?}, want Verified",
            s.report.startup
        );
        ensure!(
            s.report.violations.is_empty(),
            "violations:\n{}",
            status_summary(&s)
        );
        let app = finished_at(&s, "app")?;
        let second = finished_at(&s, "second-sidecar")?;
        let first = finished_at(&s, "first-sidecar")?;
        ensure!(
            app < second && second < first,
            "finish order app={app} second={second} first={first}, want app < second < first"
        );
        Ok(())
    })
    .await;
}

// ------------------------------------------------------------------ 4

/// Catalogue `liveness-restarts-sidecar` (the article's File 4: failing
/// liveness, period 3 s, threshold 2; grace 2 s): liveness failures and
/// sidecar restarts in the report and in the controller's /metrics; no Error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t04_file4_liveness_failures_restart_the_sidecar() {
    run("t04-file4", |ctx| async move {
        let yaml = probe(
            &catalogue::LIVENESS_RESTARTS_SIDECAR,
            "sidecar-container-liveness-fail-example",
        );
        let pod = ctx.create_pod(&yaml).await?;
        let pod_uid = uid(&pod.metadata);
        let (_, s) = ctx
            .wait_report(
                &pod_uid,
                secs(120),
                "liveness failures and a sidecar restart",
                |s| probe_count(s, ProbeKind::Liveness) > 0 && s.sidecar_restarts >= 1,
            )
            .await?;
        let errors = error_violations(&s);
        ensure!(
            errors.is_empty(),
            "Error violations: {errors:?}\n{}",
            status_summary(&s)
        );
        ensure!(
            s.report.startup != Verdict::Violated,
            "startup Violated:\n{}",
            status_summary(&s)
        );
        let pf = s
            .report
            .probe_failures
            .iter()
            .find(|p| p.probe == ProbeKind::Liveness)
            .expect("checked above");
        ensure!(
            pf.container == "sidecar",
            "liveness failures of {:?}, want sidecar",
            pf.container
        );
        ensure!(
            ts(&pf.first_time)? <= ts(&pf.last_time)?,
            "firstTime {} after lastTime {}",
            pf.first_time,
            pf.last_time
        );

        let ns = ctx.ns.clone();
        let client = ctx.client.clone();
        let (ns, client) = (&ns, &client);
        poll(
            "sidecar_order_probe_failures_total{probe=\"liveness\"} > 0 in /metrics",
            secs(30),
            || async move {
                let (pod, m) = scrape(client).await?;
                let n = metric_sum(
                    &m,
                    "sidecar_order_probe_failures_total",
                    &[("namespace", ns), ("probe", "liveness")],
                );
                let r = metric_sum(
                    &m,
                    "sidecar_order_sidecar_restarts_total",
                    &[("namespace", ns)],
                );
                let e = metric_sum(
                    &m,
                    "sidecar_order_violations_total",
                    &[("namespace", ns), ("severity", "Error")],
                );
                if e > 0.0 {
                    return Ok(Some(Err(format!(
                        "{pod}: sidecar_order_violations_total{{severity=\"Error\"}} = {e} for {ns}"
                    ))));
                }
                if n > 0.0 && r >= 1.0 {
                    Ok(Some(Ok(())))
                } else {
                    Err(format!(
                        "{pod}: probe_failures_total(liveness)={n} sidecar_restarts_total={r}"
                    ))
                }
            },
        )
        .await??;
        Ok(())
    })
    .await;
}

// ------------------------------------------------------------------ 5

/// Catalogue `readiness-keeps-pod-not-ready` (the article's File 5: failing
/// readiness): readiness failures recorded, the pod is never Ready, startup
/// Verified and no Error violation.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t05_file5_readiness_failures_pod_not_ready() {
    run("t05-file5", |ctx| async move {
        let yaml = probe(
            &catalogue::READINESS_KEEPS_POD_NOT_READY,
            "sidecar-container-readiness-fail-example",
        );
        let name = name_of(&yaml);
        let pod = ctx.create_pod(&yaml).await?;
        let pod_uid = uid(&pod.metadata);
        let (_, s) = ctx
            .wait_report(
                &pod_uid,
                secs(90),
                "readiness failures and startup judged",
                |s| {
                    probe_count(s, ProbeKind::Readiness) >= 2
                        && s.report.startup != Verdict::Pending
                },
            )
            .await?;
        ensure!(
            s.report.startup == Verdict::Verified,
            "startup is {:?}, want Verified:\n{}",
            s.report.startup,
            status_summary(&s)
        );
        let errors = error_violations(&s);
        ensure!(errors.is_empty(), "Error violations: {errors:?}");
        let p = ctx.pods().get(&name).await.ctx("getting the pod")?;
        ensure!(phase(&p) == "Running", "phase {}", phase(&p));
        ensure!(
            !is_ready(&p),
            "the pod is Ready although its sidecar's readiness probe fails:\n{}",
            describe_containers(&p)
        );
        let app = container_status(&p, "app").ok_or("no app status")?;
        ensure!(
            app.ready,
            "the app container itself should be ready (no probe):\n{}",
            describe_containers(&p)
        );
        let sc = container_status(&p, "sidecar").ok_or("no sidecar status")?;
        ensure!(
            !sc.ready,
            "the sidecar is ready:\n{}",
            describe_containers(&p)
        );
        Ok(())
    })
    .await;
}

// ------------------------------------------------------------------ 6

/// Catalogue `startup-probe-gate`: a sidecar whose startupProbe passes after
/// ~4 s: the app starts only after it, and the app-started-before-sidecar
/// checks say Verified.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t06_startup_probe_gates_the_app() {
    run("t06-startup-probe", |ctx| async move {
        let yaml = probe(&catalogue::STARTUP_PROBE_GATE, "startup-probe-sidecar");
        let pod = ctx.create_pod(&yaml).await?;
        let pod_uid = uid(&pod.metadata);
        let p = ctx.wait_ready("startup-probe-sidecar").await?;
        let sidecar_start = running_since(&p, "sidecar").ok_or("no sidecar start time")?;
        let app_start = running_since(&p, "app").ok_or("no app start time")?;
        ensure!(
            app_start >= sidecar_start + 3,
            "app started at {app_start}, only {}s after the sidecar ({sidecar_start}) whose startup probe needs ~4 s:\n{}",
            app_start - sidecar_start,
            describe_containers(&p)
        );
        let (_, s) = ctx
            .wait_report(&pod_uid, secs(90), "startup judged with the startup probe's failures", |s| {
                s.report.startup != Verdict::Pending && probe_count(s, ProbeKind::Startup) > 0
            })
            .await?;
        ensure!(s.report.startup == Verdict::Verified, "startup is {:?}, want Verified:\n{}", s.report.startup, status_summary(&s));
        let checks: Vec<_> = s.report.checks.iter().filter(|c| c.rule == Rule::AppStartedBeforeSidecar).collect();
        ensure!(!checks.is_empty(), "no app-started-before-sidecar check: {:?}", s.report.checks);
        ensure!(
            checks.iter().all(|c| c.outcome == Outcome::Verified && c.containers == ["sidecar", "app"]),
            "app-started-before-sidecar checks: {checks:?}"
        );
        ensure!(s.report.violations.is_empty(), "violations:\n{}", status_summary(&s));
        let rs = started_at(&s, "sidecar")?;
        let ra = started_at(&s, "app")?;
        ensure!(ra >= rs + 3, "report: app firstStartedAt {ra} vs sidecar {rs}");
        Ok(())
    })
    .await;
}

// ------------------------------------------------------------------ 7

/// Catalogue `job-sidecars-stopped`: a Job with a native sidecar completes,
/// shutdown is Verified, and the report outlives the pod when the Job is
/// deleted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t07_job_with_sidecar_completes_and_report_outlives_it() {
    run("t07-job", |ctx| async move {
        let jobs = ctx.api::<Job>();
        let job: Job = catalogue::JOB_SIDECARS_STOPPED.job("job-with-sidecar", IMAGE);
        jobs.create(&PostParams::default(), &job)
            .await
            .ctx("creating the Job")?;
        let jobs_ref = &jobs;
        poll("the Job to be Complete", secs(120), || async move {
            let j = jobs_ref
                .get("job-with-sidecar")
                .await
                .ctx("getting the Job")?;
            let st = j.status.unwrap_or_default();
            if st
                .conditions
                .iter()
                .flatten()
                .any(|c| c.type_ == "Failed" && c.status == "True")
            {
                return Ok(Some(Err(format!("the Job failed: {:?}", st.conditions))));
            }
            let done = st
                .conditions
                .iter()
                .flatten()
                .any(|c| c.type_ == "Complete" && c.status == "True");
            Ok(done.then_some(Ok(())))
        })
        .await??;
        let pods = ctx
            .pods()
            .list(
                &kube::api::ListParams::default()
                    .labels("batch.kubernetes.io/job-name=job-with-sidecar"),
            )
            .await
            .ctx("listing the Job's pods")?;
        ensure!(
            pods.items.len() == 1,
            "the Job has {} pods, want 1",
            pods.items.len()
        );
        let pod = &pods.items[0];
        let pod_name = pod.metadata.name.clone().unwrap_or_default();
        let pod_uid = uid(&pod.metadata);
        ensure!(phase(pod) == "Succeeded", "the Job's pod is {}", phase(pod));
        let s = ctx.wait_shutdown_judged(&pod_uid).await?;
        ensure!(
            s.report.shutdown == Verdict::Verified,
            "shutdown is {:?}, want Verified:\n{}",
            s.report.shutdown,
            status_summary(&s)
        );
        ensure!(
            s.report.startup == Verdict::Verified,
            "startup is {:?}",
            s.report.startup
        );
        ensure!(
            finished_at(&s, "app")? <= finished_at(&s, "sidecar")?,
            "sidecar finished before the app:\n{}",
            status_summary(&s)
        );
        let report = ctx
            .report_of(&pod_uid)
            .await?
            .ok_or("the report vanished")?;
        ensure!(
            report.spec.workload.as_deref() == Some("Job/job-with-sidecar"),
            "spec.workload is {:?}, want Job/job-with-sidecar",
            report.spec.workload
        );
        ensure!(
            report
                .metadata
                .owner_references
                .as_ref()
                .is_none_or(|o| o.is_empty()),
            "the report has ownerReferences (it would be collected with the pod): {:?}",
            report.metadata.owner_references
        );

        jobs.delete("job-with-sidecar", &DeleteParams::background())
            .await
            .ctx("deleting the Job")?;
        ctx.wait_pod_gone(&pod_name, secs(60)).await?;
        let (_, s) = ctx
            .wait_report(
                &pod_uid,
                secs(60),
                "podEndedAt set after the Job and its pod are gone",
                |s| s.pod_ended_at.is_some(),
            )
            .await?;
        ensure!(
            s.report.shutdown == Verdict::Verified,
            "after deletion shutdown is {:?}:\n{}",
            s.report.shutdown,
            status_summary(&s)
        );
        ensure!(
            jobs.get_opt("job-with-sidecar")
                .await
                .ctx("getting the Job")?
                .is_none(),
            "the Job is still there"
        );
        Ok(())
    })
    .await;
}

// ------------------------------------------------------------------ 8

/// (a) The sidecar's preStop hook kills it while the app takes 3 s: rule
/// sidecar-stopped-before-app, shutdown Violated, and a Warning Event
/// SidecarOrderViolation on the pod.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t08a_prestop_killing_the_sidecar_is_a_violation() {
    run("t08a-prestop", |ctx| async move {
        let (name, pod_uid, _) = ctx.start_verified(PRESTOP_KILL).await?;
        ctx.delete_pod(&name).await?;
        ctx.wait_pod_gone(&name, secs(60)).await?;
        let (_, s) = ctx
            .wait_report(
                &pod_uid,
                secs(60),
                "podEndedAt set and shutdown judged",
                |s| s.pod_ended_at.is_some() && s.report.shutdown != Verdict::Pending,
            )
            .await?;
        ensure!(
            s.report.shutdown == Verdict::Violated,
            "shutdown is {:?}, want Violated:\n{}",
            s.report.shutdown,
            status_summary(&s)
        );
        let v = s
            .report
            .violations
            .iter()
            .find(|v| v.rule == Rule::SidecarStoppedBeforeApp)
            .ok_or_else(|| {
                format!(
                    "no sidecar-stopped-before-app violation:\n{}",
                    status_summary(&s)
                )
            })?;
        ensure!(v.severity == Severity::Error, "severity {:?}", v.severity);
        ensure!(
            v.containers.contains(&"sidecar".to_string())
                && v.containers.contains(&"app".to_string()),
            "containers {:?}",
            v.containers
        );
        ensure!(!v.evidence.is_empty(), "the violation has no evidence");
        ensure!(
            s.violation_count as usize == s.report.violations.len(),
            "violationCount {} != {}",
            s.violation_count,
            s.report.violations.len()
        );
        let sidecar = finished_at(&s, "sidecar")?;
        let app = finished_at(&s, "app")?;
        ensure!(
            sidecar < app,
            "sidecar finished at {sidecar}, app at {app}: the preStop kill should be ~3 s earlier"
        );

        // The Warning Event on the pod (Events outlive the pod).
        let ev = poll(
            "a Warning Event SidecarOrderViolation on the pod",
            secs(30),
            || async {
                let evs = ctx.events_of(&pod_uid).await?;
                let found: Vec<_> = evs
                    .into_iter()
                    .filter(|e| e.reason.as_deref() == Some("SidecarOrderViolation"))
                    .collect();
                Ok((!found.is_empty()).then_some(found))
            },
        )
        .await?;
        ensure!(
            ev.iter().all(|e| e.type_.as_deref() == Some("Warning")),
            "event types {:?}",
            ev.iter().map(|e| e.type_.clone()).collect::<Vec<_>>()
        );
        ensure!(
            ev.iter().any(|e| e
                .message
                .as_deref()
                .unwrap_or("")
                .contains("sidecar-stopped-before-app")),
            "event messages {:?}",
            ev.iter().map(|e| e.message.clone()).collect::<Vec<_>>()
        );
        ensure!(
            ev.iter()
                .all(|e| e.involved_object.kind.as_deref() == Some("Pod")
                    && e.involved_object.name.as_deref() == Some(name.as_str())),
            "events not on the pod: {:?}",
            ev.iter()
                .map(|e| e.involved_object.clone())
                .collect::<Vec<_>>()
        );
        Ok(())
    })
    .await;
}

/// (b) Catalogue `grace-period-shared`: the app ignores SIGTERM and uses the
/// whole 6 s grace period; the sidecar, also slow, is killed at the end: rule
/// sidecar-force-killed (Warning). quick-sidecar, which needs 1 s after
/// SIGTERM, gets the kubelet's 2 s minimum and exits 0.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t08b_app_ignoring_sigterm_gets_the_sidecar_force_killed() {
    run("t08b-forcekill", |ctx| async move {
        let yaml = probe(&catalogue::GRACE_PERIOD_SHARED, "app-ignores-sigterm");
        let (name, pod_uid, _) = ctx.start_verified(&yaml).await?;
        ctx.delete_pod(&name).await?;
        ctx.wait_pod_gone(&name, secs(60)).await?;
        let (_, s) = ctx
            .wait_report(
                &pod_uid,
                secs(60),
                "podEndedAt set and shutdown judged",
                |s| s.pod_ended_at.is_some() && s.report.shutdown != Verdict::Pending,
            )
            .await?;
        let v = s
            .report
            .violations
            .iter()
            .find(|v| v.rule == Rule::SidecarForceKilled)
            .ok_or_else(|| format!("no sidecar-force-killed violation:\n{}", status_summary(&s)))?;
        ensure!(
            v.severity == Severity::Warning,
            "severity {:?}, want Warning",
            v.severity
        );
        // The warning names the container that spent the grace period: the
        // app, which ignores SIGTERM (the sidecar is then killed with it).
        ensure!(v.containers == ["app"], "containers {:?}", v.containers);
        // The grace period is the pod's 6 s, not the 0 s of the kubelet's
        // final delete (which rewrites deletionTimestamp/deletionGracePeriodSeconds).
        ensure!(
            v.message.contains("6s grace period"),
            "the violation names the wrong grace period: {}",
            v.message
        );
        let sc = s
            .report
            .containers
            .iter()
            .find(|c| c.name == "sidecar")
            .ok_or("no sidecar")?;
        ensure!(
            sc.exit_code == Some(137),
            "sidecar exit code {:?}, want 137 (SIGKILL)",
            sc.exit_code
        );
        let quick = s
            .report
            .containers
            .iter()
            .find(|c| c.name == "quick-sidecar")
            .ok_or("no quick-sidecar")?;
        ensure!(
            quick.exit_code == Some(0),
            "quick-sidecar exit code {:?}, want 0 (SIGTERM with the 2 s minimum left)",
            quick.exit_code
        );
        let errors = error_violations(&s);
        ensure!(errors.is_empty(), "Error violations: {errors:?}");
        ensure!(
            s.report.shutdown != Verdict::Violated,
            "a Warning alone made shutdown Violated:\n{}",
            status_summary(&s)
        );
        Ok(())
    })
    .await;
}

// ------------------------------------------------------------------ 9

fn instant_pod(name: &str, sidecars: usize, never: bool) -> String {
    let mut y = format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\nspec:\n  restartPolicy: {}\n  terminationGracePeriodSeconds: 5\n  containers:\n  - name: app\n    image: {IMAGE}\n    imagePullPolicy: IfNotPresent\n    command: {}\n  initContainers:\n",
        if never { "Never" } else { "Always" },
        if never {
            r#"["true"]"#
        } else {
            r#"["sh", "-c", "trap 'exit 0' TERM; sleep infinity & wait"]"#
        }
    );
    for i in 0..sidecars {
        y.push_str(&format!(
            "  - name: sidecar-{i}\n    image: {IMAGE}\n    imagePullPolicy: IfNotPresent\n    restartPolicy: Always\n    command: [\"sh\", \"-c\", \"trap 'exit 0' TERM; sleep infinity & wait\"]\n"
        ));
    }
    y
}

/// Containers that start and stop within the same second: whole-second
/// timestamps cannot order them, which must never be called a violation.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t09_same_second_events_are_never_violations() {
    run("t09-same-second", |ctx| async move {
        let mut uids = Vec::new();
        for (name, n, never) in [
            ("instant-1", 1, true),
            ("instant-3", 3, true),
            ("instant-delete", 2, false),
        ] {
            let p = ctx.create_pod(&instant_pod(name, n, never)).await?;
            uids.push((name, uid(&p.metadata), never));
        }
        for (name, _, never) in &uids {
            if *never {
                ctx.wait_pod(name, secs(120), "phase Succeeded", |p| {
                    phase(p) == "Succeeded"
                })
                .await?;
            } else {
                ctx.wait_ready(name).await?;
                ctx.delete_pod(name).await?;
            }
        }
        let mut seen = Vec::new();
        for (name, pod_uid, _) in &uids {
            let (_, s) = ctx
                .wait_report(pod_uid, secs(90), "both phases judged", |s| {
                    s.report.startup != Verdict::Pending && s.report.shutdown != Verdict::Pending
                })
                .await?;
            ensure!(
                s.report.startup != Verdict::Violated && s.report.shutdown != Verdict::Violated,
                "{name}: same-second transitions judged Violated:\n{}",
                status_summary(&s)
            );
            let errors = error_violations(&s);
            ensure!(errors.is_empty(), "{name}: Error violations {errors:?}");
            seen.push(format!(
                "{name}: startup={:?} shutdown={:?}",
                s.report.startup, s.report.shutdown
            ));
        }
        eprintln!("[t09] verdicts: {}", seen.join("; "));
        Ok(())
    })
    .await;
}

// ------------------------------------------------------------------ 15

/// A CronJob run every minute whose pod has a native sidecar that ignores
/// SIGTERM: once the app exits the kubelet stops the sidecar with the pod's
/// 2 s grace period and SIGKILLs it (the Warning sidecar-force-killed), so
/// the pod has a violation series on /metrics.
const CRONJOB: &str = r#"
apiVersion: batch/v1
kind: CronJob
metadata:
  name: nightly
spec:
  schedule: "* * * * *"
  concurrencyPolicy: Forbid
  successfulJobsHistoryLimit: 1
  failedJobsHistoryLimit: 1
  jobTemplate:
    spec:
      backoffLimit: 0
      template:
        spec:
          restartPolicy: Never
          terminationGracePeriodSeconds: 2
          containers:
          - name: app
            image: localhost/busybox:1
            imagePullPolicy: IfNotPresent
            command: ["sh", "-c", "sleep 2"]
          initContainers:
          - name: sidecar
            image: localhost/busybox:1
            imagePullPolicy: IfNotPresent
            restartPolicy: Always
            command: ["sh", "-c", "trap '' TERM; sleep infinity & wait; sleep infinity & wait"]
"#;

/// Pods of a CronJob's Jobs (`nightly-<scheduled minute>`) are labelled with
/// the CronJob: the report's spec.workload is `CronJob/nightly`, and the
/// controller's metrics carry `workload_kind="CronJob", workload="nightly"`,
/// never the Job's per-run name.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t15_cronjob_pods_are_labelled_with_the_cronjob() {
    run("t15-cronjob", |ctx| async move {
        let cronjobs = ctx.api::<CronJob>();
        let cj: CronJob = serde_saphyr::from_str(CRONJOB).ctx("parsing the CronJob")?;
        cronjobs
            .create(&PostParams::default(), &cj)
            .await
            .ctx("creating the CronJob")?;
        // The first run starts at the next minute.
        let pods = ctx.pods();
        let pods_ref = &pods;
        let pod = poll(
            "a pod of the CronJob's first Job",
            secs(100),
            || async move {
                let list = pods_ref
                    .list(&ListParams::default())
                    .await
                    .ctx("listing pods")?;
                Ok(list.items.into_iter().next())
            },
        )
        .await?;
        // No second run: one pod is all the test needs.
        cronjobs
            .patch(
                "nightly",
                &PatchParams::default(),
                &Patch::Merge(serde_json::json!({"spec": {"suspend": true}})),
            )
            .await
            .ctx("suspending the CronJob")?;
        let pod_name = pod.metadata.name.clone().unwrap_or_default();
        let job = pod
            .metadata
            .owner_references
            .iter()
            .flatten()
            .find(|o| o.kind == "Job" && o.controller == Some(true))
            .map(|o| o.name.clone())
            .ok_or_else(|| format!("pod {pod_name} has no controlling Job"))?;
        let digits = job.strip_prefix("nightly-").unwrap_or_default();
        ensure!(
            digits.len() >= 8 && digits.bytes().all(|b| b.is_ascii_digit()),
            "the Job is named {job}, want nightly-<minutes since the epoch>"
        );
        let pod_uid = uid(&pod.metadata);
        let s = ctx.wait_shutdown_judged(&pod_uid).await?;
        ensure!(
            s.report.startup == Verdict::Verified,
            "startup is {:?}:\n{}",
            s.report.startup,
            status_summary(&s)
        );
        let errors = error_violations(&s);
        ensure!(errors.is_empty(), "Error violations: {errors:?}");
        ensure!(
            s.report
                .violations
                .iter()
                .any(|v| v.rule == Rule::SidecarForceKilled),
            "no sidecar-force-killed violation:\n{}",
            status_summary(&s)
        );
        let report = ctx
            .report_of(&pod_uid)
            .await?
            .ok_or("the report vanished")?;
        ensure!(
            report.spec.workload.as_deref() == Some("CronJob/nightly"),
            "spec.workload is {:?}, want CronJob/nightly (the Job is {job})",
            report.spec.workload
        );
        let ns = ctx.ns.clone();
        let client = ctx.client.clone();
        let (ns, client) = (&ns, &client);
        let samples = poll(
            "the violation counted under workload=\"nightly\" on /metrics",
            secs(30),
            || async move {
                let (_, m) = scrape(client).await?;
                let n = metric_sum(
                    &m,
                    "sidecar_order_violations_total",
                    &[
                        ("namespace", ns.as_str()),
                        ("workload_kind", "CronJob"),
                        ("workload", "nightly"),
                    ],
                );
                Ok((n >= 1.0).then_some(m))
            },
        )
        .await?;
        let per_run: Vec<String> = samples
            .iter()
            .filter(|s| s.labels.get("namespace") == Some(ns))
            .filter(|s| {
                s.labels.get("workload").is_some_and(|w| {
                    w.strip_prefix("nightly-")
                        .is_some_and(|d| !d.is_empty() && d.bytes().all(|b| b.is_ascii_digit()))
                })
            })
            .map(|s| format!("{}{:?} {}", s.name, s.labels, s.value))
            .collect();
        ensure!(
            per_run.is_empty(),
            "series labelled with the Job's per-run name: {per_run:?}"
        );
        let job_kind = metric_lines(
            &samples,
            "sidecar_order_violations_total",
            &[("namespace", ns.as_str()), ("workload_kind", "Job")],
        );
        ensure!(
            job_kind.is_empty(),
            "series with workload_kind=\"Job\":\n{job_kind}"
        );
        Ok(())
    })
    .await;
}

// ------------------------------------------------------------------ 10

const LIVENESS_SWITCH: &str = r#"
apiVersion: v1
kind: Pod
metadata:
  name: liveness-switch
spec:
  terminationGracePeriodSeconds: 2
  volumes:
  - name: switch
    emptyDir: {}
  containers:
  - name: app
    image: localhost/busybox:1
    imagePullPolicy: IfNotPresent
    command: ["sh", "-c", "touch /switch/fail; sleep infinity"]
    volumeMounts:
    - name: switch
      mountPath: /switch
  initContainers:
  - name: sidecar
    image: localhost/busybox:1
    imagePullPolicy: IfNotPresent
    restartPolicy: Always
    command: ["sleep", "infinity"]
    volumeMounts:
    - name: switch
      mountPath: /switch
    livenessProbe:
      exec:
        command: ["sh", "-c", "test ! -e /switch/fail"]
      periodSeconds: 2
      failureThreshold: 2
"#;

/// The counters of one namespace in one scrape.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Counts {
    violations: f64,
    probes: f64,
    restarts: f64,
}

fn counts(m: &[Sample], ns: &str) -> Counts {
    Counts {
        violations: metric_sum(m, "sidecar_order_violations_total", &[("namespace", ns)]),
        probes: metric_sum(
            m,
            "sidecar_order_probe_failures_total",
            &[("namespace", ns)],
        ),
        restarts: metric_sum(
            m,
            "sidecar_order_sidecar_restarts_total",
            &[("namespace", ns)],
        ),
    }
}

async fn switch(ctx: &Ctx, on: bool) -> R<()> {
    let cmd = if on {
        "touch /switch/fail"
    } else {
        "rm -f /switch/fail"
    };
    kubectl(&[
        "-n",
        &ctx.ns,
        "exec",
        "liveness-switch",
        "-c",
        "app",
        "--",
        "sh",
        "-c",
        cmd,
    ])?;
    Ok(())
}

/// Waits until the switch pod's report stops changing (8 s) and the serving
/// controller's counters for the namespace equal the report minus `base`.
async fn wait_quiet(
    ctx: &Ctx,
    pod_uid: &str,
    base: (u32, u32),
    want_violations: f64,
) -> R<(u32, u32, Counts)> {
    let start = Instant::now();
    let mut last: Option<((u32, u32), Instant)> = None;
    let mut why = String::new();
    while start.elapsed() < secs(90) {
        let s = ctx
            .report_of(pod_uid)
            .await?
            .and_then(|r| r.status)
            .ok_or("no report")?;
        let now = (s.probe_failure_count, s.sidecar_restarts);
        let (pod, m) = scrape(&ctx.client).await?;
        let c = counts(&m, &ctx.ns);
        let want = Counts {
            violations: want_violations,
            probes: f64::from(now.0 - base.0),
            restarts: f64::from(now.1 - base.1),
        };
        match last {
            Some((prev, since)) if prev == now => {
                if c == want && since.elapsed() >= secs(8) {
                    return Ok((now.0, now.1, c));
                }
            }
            _ => last = Some((now, Instant::now())),
        }
        why = format!(
            "report (probeFailures, restarts) = {now:?}, base {base:?}; {pod} counts {c:?}, want {want:?}"
        );
        tokio::time::sleep(Duration::from_millis(1000)).await;
    }
    Err(format!(
        "the counters never settled on the report's numbers: {why}"
    ))
}

/// The controller pod is deleted while a liveness-failing pod runs and while
/// a violating pod exists. Afterwards the reports complete, and the new
/// process counts only what happened after it started: nothing twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t10_controller_restart_counts_once() {
    run("t10-restart", |ctx| async move {
        // Namespace A (ctx.ns): a violation recorded before the restart and a
        // liveness pod whose failures can be switched off (exact accounting).
        // Namespace B: a liveness pod failing all along and a violating pod
        // deleted after the restart.
        let ns_b = ctx.extra_namespace("t10-after").await;
        let b = ctx.in_ns(&ns_b);
        let v1 = ctx.create_pod(PRESTOP_KILL).await?;
        let lp = ctx.create_pod(LIVENESS_SWITCH).await?;
        let lc = b.create_pod(LIVENESS_FAIL).await?;
        let v2 = b.create_pod(PRESTOP_KILL).await?;
        let (v1_uid, lp_uid, lc_uid, v2_uid) = (uid(&v1.metadata), uid(&lp.metadata), uid(&lc.metadata), uid(&v2.metadata));
        ctx.wait_ready("prestop-kills-sidecar").await?;
        b.wait_ready("prestop-kills-sidecar").await?;
        ctx.wait_pod("liveness-switch", secs(120), "Running", |p| phase(p) == "Running").await?;

        // Before: the violation of V1 recorded, the switch pod restarted once.
        ctx.wait_startup_judged(&v1_uid).await?;
        b.wait_startup_judged(&v2_uid).await?;
        ctx.delete_pod("prestop-kills-sidecar").await?;
        ctx.wait_report(&lp_uid, secs(90), "liveness failures and a restart", |s| s.probe_failure_count >= 2 && s.sidecar_restarts >= 1)
            .await?;
        switch(&ctx, false).await?;
        let (_, v1s) = ctx
            .wait_report(&v1_uid, secs(90), "V1's violation recorded and the pod ended", |s| {
                s.pod_ended_at.is_some() && s.violation_count >= 1
            })
            .await?;
        ensure!(v1s.report.violations.iter().any(|v| v.rule == Rule::SidecarStoppedBeforeApp), "V1:\n{}", status_summary(&v1s));
        let a_violations = f64::from(v1s.violation_count);
        // The old process counted exactly what the reports say.
        let (p0, r0, old) = wait_quiet(&ctx, &lp_uid, (0, 0), a_violations).await?;
        eprintln!("[t10] before the restart: switch pod probeFailures={p0} restarts={r0}; old counters {old:?}");
        let lc_before = b.report_of(&lc_uid).await?.and_then(|r| r.status).ok_or("no report for the liveness pod")?;
        let old_pod = controller_pod(&ctx.client).await?;
        let old_name = old_pod.metadata.name.clone().unwrap_or_default();
        let old_b = counts(&scrape_pod(&old_pod).await?, &ns_b);

        // The restart.
        let ctrl: kube::Api<k8s_openapi::api::core::v1::Pod> = kube::Api::namespaced(ctx.client.clone(), CONTROLLER_NS);
        ctrl.delete(&old_name, &DeleteParams::default()).await.ctx("deleting the controller pod")?;
        let client = &ctx.client;
        let old_name_ref = &old_name;
        let new_pod = poll("a new Ready controller pod", secs(120), || async move {
            let p = controller_pod(client).await?;
            Ok((p.metadata.name.as_deref() != Some(old_name_ref.as_str())).then_some(p))
        })
        .await?;
        let new_name = new_pod.metadata.name.clone().unwrap_or_default();
        poll("the old controller pod to be gone", secs(60), || async {
            Ok(ctrl.get_opt(&old_name).await.ctx("getting the old pod")?.is_none().then_some(()))
        })
        .await?;
        poll("the new controller to hold the lease (sidecar_order_leader 1)", secs(60), || async {
            let (name, m) = scrape(client).await?;
            Ok((name == new_name && metric_sum(&m, "sidecar_order_leader", &[]) == 1.0).then_some(()))
        })
        .await?;
        eprintln!("[t10] controller {old_name} replaced by {new_name}");

        // Nothing the reports recorded is counted again by the new process.
        let (_, m) = scrape(client).await?;
        let fresh = counts(&m, &ctx.ns);
        ensure!(
            fresh == Counts { violations: 0.0, probes: 0.0, restarts: 0.0 },
            "the new controller re-counted what the reports already recorded in {}: {fresh:?}\n{}",
            ctx.ns,
            metric_lines(&m, "sidecar_order_violations_total", &[("namespace", &ctx.ns)])
        );
        // V1's report is unchanged: one violation, one Event.
        let v1_after = ctx.report_of(&v1_uid).await?.and_then(|r| r.status).ok_or("V1's report is gone")?;
        ensure!(v1_after.violation_count == v1s.violation_count && v1_after.pod_ended_at == v1s.pod_ended_at, "V1's report changed:\n{}", status_summary(&v1_after));

        // After: V2 deleted now, counted by the new process exactly once.
        b.delete_pod("prestop-kills-sidecar").await?;
        let (_, v2s) = b
            .wait_report(&v2_uid, secs(90), "V2's violation recorded and the pod ended", |s| s.pod_ended_at.is_some() && s.violation_count >= 1)
            .await?;
        ensure!(v2s.report.shutdown == Verdict::Violated, "V2 shutdown {:?}", v2s.report.shutdown);
        // The switch pod fails again, restarts, and is switched off.
        switch(&ctx, true).await?;
        ctx.wait_report(&lp_uid, secs(90), "new liveness failures after the restart", |s| s.probe_failure_count >= p0 + 2)
            .await?;
        switch(&ctx, false).await?;
        ctx.wait_report(&lp_uid, secs(90), "a restart after the controller's restart", |s| s.sidecar_restarts > r0)
            .await?;
        let (p1, r1, new_a) = wait_quiet(&ctx, &lp_uid, (p0, r0), 0.0).await?;
        eprintln!("[t10] after: switch pod probeFailures={p1} restarts={r1}; new counters {new_a:?}");
        ensure!(new_a.probes > 0.0 && new_a.restarts > 0.0, "the new controller counted nothing new: {new_a:?}");

        // B: the violation counted once, equal to the reports' violations.
        let b_reports = b.reports().list(&Default::default()).await.ctx("listing B's reports")?;
        let b_violations: u32 = b_reports.items.iter().filter_map(|r| r.status.as_ref()).map(|s| s.violation_count).sum();
        let b_ns = &ns_b;
        let new_b = poll("B's violations counted", secs(30), || async move {
            let (_, m) = scrape(client).await?;
            let c = counts(&m, b_ns);
            Ok((c.violations >= 1.0).then_some(c))
        })
        .await?;
        ensure!(
            new_b.violations == f64::from(b_violations) && b_violations == 1,
            "B: sidecar_order_violations_total = {} but the reports hold {b_violations} violation(s)",
            new_b.violations
        );
        // The always-failing pod: its report went on, and what the old and the
        // new process counted together never exceeds the report (no double count).
        let (_, lc_after) = b
            .wait_report(&lc_uid, secs(90), "the liveness pod's report updated after the restart", |s| {
                s.sidecar_restarts > lc_before.sidecar_restarts
            })
            .await?;
        let (_, m) = scrape(client).await?;
        let new_b = counts(&m, &ns_b);
        let lc_now = b.report_of(&lc_uid).await?.and_then(|r| r.status).ok_or("no report")?;
        ensure!(
            old_b.probes + new_b.probes <= f64::from(lc_now.probe_failure_count.max(lc_after.probe_failure_count))
                && new_b.probes <= f64::from(lc_now.probe_failure_count - lc_before.probe_failure_count),
            "B probe failures counted twice? old {} + new {} vs report {} (was {} before the restart)",
            old_b.probes,
            new_b.probes,
            lc_now.probe_failure_count,
            lc_before.probe_failure_count
        );
        ensure!(
            old_b.restarts + new_b.restarts <= f64::from(lc_now.sidecar_restarts)
                && new_b.restarts <= f64::from(lc_now.sidecar_restarts - lc_before.sidecar_restarts)
                && new_b.restarts >= 1.0,
            "B sidecar restarts: old {} + new {} vs report {} (was {} before the restart)",
            old_b.restarts,
            new_b.restarts,
            lc_now.sidecar_restarts,
            lc_before.sidecar_restarts
        );
        // One Event per violation, none repeated by the new process.
        for (c, u, what) in [(&ctx, &v1_uid, "V1"), (&b, &v2_uid, "V2")] {
            let evs: Vec<_> = c
                .events_of(u)
                .await?
                .into_iter()
                .filter(|e| e.reason.as_deref() == Some("SidecarOrderViolation"))
                .collect();
            let n: i32 = evs.iter().map(|e| e.count.unwrap_or(1).max(e.series.as_ref().and_then(|s| s.count).unwrap_or(1))).sum();
            ensure!(n == 1, "{what}: {n} SidecarOrderViolation events, want 1: {:?}", evs.iter().map(|e| (&e.message, e.count)).collect::<Vec<_>>());
        }
        Ok(())
    })
    .await;
}

// ------------------------------------------------------------------ 11

/// A real Prometheus scrapes the controller: every dashboard query returns
/// data and the alerting rules pass promtool.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t11_prometheus_scrapes_and_dashboard_queries_return_data() {
    run(
        "t11-prometheus",
        |ctx| async move { prom::scenario(&ctx).await },
    )
    .await;
}
