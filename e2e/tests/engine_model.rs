//! Live-cluster scenarios of the engine's model of the kubelet: situations in
//! which a real kubelet behaves correctly and a judge that models it too
//! simply raises false Errors (tests/fixtures/real-* hold the same situations
//! captured by e2e/cluster/capture.sh). Run by `make e2e` (e2e/run.sh), or
//! against the local cluster with the controller deployed:
//!
//! ```sh
//! export KUBECONFIG=/tmp/sidecar-order-cluster/kubeconfig
//! cargo test --features e2e --test e2e_engine_model -- --skip t12_
//! cargo test --features e2e --test e2e_engine_model -- --exact t12_node_reboot_keeps_the_report_without_errors
//! ```
//!
//! t12 stops the local cluster's kubelet (e2e/cluster/kubelet.sh): it must
//! run alone, and only against the local cluster (it needs root on the node).

#[macro_use]
mod support;

use sidecar_order::crd::ReportStatus;
use sidecar_order::report::{Severity, Verdict};
use std::fmt::Write as _;
use support::*;

/// The local cluster's state directory (kubelet pid file, containerd socket).
fn cluster_state() -> String {
    std::env::var("SIDECAR_ORDER_STATE").unwrap_or_else(|_| "/tmp/sidecar-order-cluster".into())
}

/// `bash e2e/cluster/kubelet.sh ARGS...`, off the async workers.
async fn kubelet_sh(args: &[&str]) -> R<String> {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/e2e/cluster/kubelet.sh");
    let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    let shown = format!("bash {script} {}", args.join(" "));
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new("bash")
            .arg(script)
            .args(&args)
            .output()
    })
    .await
    .ctx(format!("running {shown}"))?
    .ctx(format!("running {shown}"))?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    if !out.status.success() {
        return Err(format!("{shown} failed ({}):\n{text}", out.status));
    }
    eprint!("{text}");
    Ok(text)
}

/// The violations of a report, one line each, for failure messages.
fn violations(s: &ReportStatus) -> String {
    let mut out = String::new();
    for v in &s.report.violations {
        let _ = writeln!(
            out,
            "  {} {:?} {:?}: {} | evidence: {}",
            v.rule.id(),
            v.severity,
            v.containers,
            v.message,
            v.evidence.join("; ")
        );
    }
    if out.is_empty() {
        out.push_str("  (none)\n");
    }
    out
}

/// Every failed assertion of a scenario, reported together.
#[derive(Default)]
struct Failures(Vec<String>);

impl Failures {
    /// The kubelet behaved correctly: no Error violation, startup not Violated.
    fn no_false_error(&mut self, s: &ReportStatus, when: &str) {
        let errors = error_violations(s);
        self.check(errors.is_empty(), || {
            format!("Error violations {when}: {errors:?}")
        });
        self.check(s.report.startup != Verdict::Violated, || {
            format!("startup is {:?} {when}", s.report.startup)
        });
    }

    fn check(&mut self, ok: bool, what: impl FnOnce() -> String) {
        if !ok {
            self.0.push(what());
        }
    }

    fn result(self, s: &ReportStatus) -> R<()> {
        if self.0.is_empty() {
            return Ok(());
        }
        Err(format!(
            "{} assertion(s) failed:\n- {}\nthe report:\n{}violations:\n{}checks: {:?}\ngaps: {:?}",
            self.0.len(),
            self.0.join("\n- "),
            status_summary(s),
            violations(s),
            s.report.checks,
            s.report.gaps
        ))
    }
}

/// The report's restart count of one container.
fn restarts(s: &ReportStatus, container: &str) -> u32 {
    s.report
        .containers
        .iter()
        .find(|c| c.name == container)
        .map_or(0, |c| c.restarts)
}

/// Waits until the report stays the same for `quiet` seconds (the controller
/// has judged everything it saw), within 60 s.
async fn settled(ctx: &Ctx, pod_uid: &str, quiet: u64) -> R<ReportStatus> {
    let start = std::time::Instant::now();
    let mut last: Option<(ReportStatus, std::time::Instant)> = None;
    loop {
        let s = ctx
            .report_of(pod_uid)
            .await?
            .and_then(|r| r.status)
            .ok_or_else(|| format!("the report of pod uid {pod_uid} is gone"))?;
        match &last {
            Some((prev, since)) if prev == &s => {
                if since.elapsed() >= secs(quiet) {
                    return Ok(s);
                }
            }
            _ => last = Some((s, std::time::Instant::now())),
        }
        if start.elapsed() > secs(60) {
            return Ok(last.expect("set above").0);
        }
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    }
}

// ------------------------------------------------------------------ 12

/// The pod of tests/fixtures/real-node-reboot: a plain init container, two
/// sidecars whose postStart hooks hold the next container back 2 s, an app.
const NODE_REBOOT: &str = r#"
apiVersion: v1
kind: Pod
metadata:
  name: node-reboot
spec:
  restartPolicy: Always
  terminationGracePeriodSeconds: 5
  initContainers:
  - name: init
    image: localhost/busybox:1
    imagePullPolicy: IfNotPresent
    command: ["sh", "-c", "echo init done"]
  - name: first-sidecar
    image: localhost/busybox:1
    imagePullPolicy: IfNotPresent
    restartPolicy: Always
    command: ["sh", "-c", "trap 'exit 0' TERM; echo started; sleep infinity & wait"]
    lifecycle:
      postStart:
        exec:
          command: ["sleep", "2"]
  - name: second-sidecar
    image: localhost/busybox:1
    imagePullPolicy: IfNotPresent
    restartPolicy: Always
    command: ["sh", "-c", "trap 'exit 0' TERM; echo started; sleep infinity & wait"]
    lifecycle:
      postStart:
        exec:
          command: ["sleep", "2"]
  containers:
  - name: app
    image: localhost/busybox:1
    imagePullPolicy: IfNotPresent
    command: ["sh", "-c", "trap 'exit 0' TERM; echo started; sleep infinity & wait"]
"#;

/// A node reboot, as the kubelet sees it: the kubelet stops, every task of
/// the pod (its sandbox included) dies, the kubelet comes back, finds the
/// sandbox gone (SandboxChanged) and starts the pod again in order: init
/// (restartCount 1), the sidecars (whose first runs vanish from their
/// statuses: restartCount 0, no lastState), then the app (restartCount 1).
/// The report must survive and hold no Error: startup not Violated.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t12_node_reboot_keeps_the_report_without_errors() {
    let pidfile = format!("{}/pids/kubelet.pid", cluster_state());
    if !std::path::Path::new(&pidfile).exists() {
        eprintln!(
            "[t12] skipped: no local-cluster kubelet ({pidfile} missing); this scenario stops the kubelet of e2e/cluster"
        );
        return;
    }
    run("t12-node-reboot", |ctx| async move {
        let pod = ctx.create_pod(NODE_REBOOT).await?;
        let name = pod.metadata.name.clone().unwrap_or_default();
        let pod_uid = uid(&pod.metadata);
        ctx.wait_ready(&name).await?;
        let before = ctx.wait_startup_judged(&pod_uid).await?;
        let report_name = ctx
            .report_of(&pod_uid)
            .await?
            .and_then(|r| r.metadata.name)
            .ok_or("no report before the reboot")?;
        eprintln!(
            "[t12] before the reboot: report {report_name}\n{}",
            status_summary(&before)
        );
        tokio::time::sleep(secs(2)).await;

        // The reboot. The kubelet is started again whatever happened.
        let reboot_at = k8s_openapi::jiff::Timestamp::now().as_second();
        kubelet_sh(&["stop"]).await?;
        let killed = kubelet_sh(&["kill-pod", &pod_uid]).await;
        tokio::time::sleep(secs(1)).await;
        kubelet_sh(&["start"]).await?;
        killed?;

        let p = ctx
            .wait_pod(
                &name,
                secs(180),
                "Ready again, every container rerun",
                |p| {
                    let new_run = |c: &str| running_since(p, c).is_some_and(|t| t >= reboot_at);
                    phase(p) == "Running"
                        && is_ready(p)
                        && ["first-sidecar", "second-sidecar", "app"]
                            .iter()
                            .all(|c| new_run(c))
                        && container_status(p, "app").is_some_and(|c| c.restart_count >= 1)
                },
            )
            .await?;
        eprintln!("[t12] after the reboot:\n{}", describe_containers(&p));
        let (report, _) = ctx
            .wait_report(
                &pod_uid,
                secs(90),
                "the app's restart after the reboot seen",
                |s| restarts(s, "app") >= 1 && s.report.startup != Verdict::Pending,
            )
            .await?;
        let s = settled(&ctx, &pod_uid, 5).await?;
        let mut f = Failures::default();
        f.check(
            report.metadata.name.as_deref() == Some(report_name.as_str()),
            || {
                format!(
                    "the report changed name: {:?}, was {report_name}",
                    report.metadata.name
                )
            },
        );
        f.no_false_error(&s, "after a node reboot");
        eprintln!("[t12] report after the reboot:\n{}", status_summary(&s));
        f.result(&s)
    })
    .await;
}

// ------------------------------------------------------------------ 13

/// The pod of tests/fixtures/real-sidecar-restart-startup-probe.
const SIDECAR_RESTART_STARTUP_PROBE: &str = r#"
apiVersion: v1
kind: Pod
metadata:
  name: sidecar-restart-startup-probe
spec:
  restartPolicy: Always
  terminationGracePeriodSeconds: 5
  initContainers:
  - name: sidecar
    image: localhost/busybox:1
    imagePullPolicy: IfNotPresent
    restartPolicy: Always
    command: ["sh", "-c", "echo started; sleep 3; touch /tmp/ready; echo ready; sleep 20; echo exiting 1; exit 1"]
    startupProbe:
      exec:
        command: ["cat", "/tmp/ready"]
      periodSeconds: 1
      failureThreshold: 30
  containers:
  - name: app
    image: localhost/busybox:1
    imagePullPolicy: IfNotPresent
    command: ["sh", "-c", "trap 'exit 0' TERM; echo started; sleep infinity & wait"]
"#;

/// A sidecar with a startupProbe exits 1 ~23 s after it started, long after
/// the app did; the kubelet restarts it (fresh filesystem: its startup probe
/// fails again a few times) and leaves the app alone. That the restarted
/// sidecar's probe fails after the app started is no startup violation.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t13_sidecar_with_startup_probe_restarts_after_the_app_started() {
    run("t13-sidecar-restart", |ctx| async move {
        let pod = ctx.create_pod(SIDECAR_RESTART_STARTUP_PROBE).await?;
        let name = pod.metadata.name.clone().unwrap_or_default();
        let pod_uid = uid(&pod.metadata);
        ctx.wait_ready(&name).await?;
        let p = ctx
            .wait_pod(
                &name,
                secs(150),
                "the sidecar restarted and passed its startup probe again",
                |p| {
                    container_status(p, "sidecar").is_some_and(|c| {
                        c.restart_count >= 1
                            && c.started == Some(true)
                            && c.state.as_ref().is_some_and(|s| s.running.is_some())
                    })
                },
            )
            .await?;
        eprintln!("[t13] after the restart:\n{}", describe_containers(&p));
        let app = container_status(&p, "app").ok_or("no app status")?;
        ensure!(
            app.restart_count == 0,
            "the app restarted with the sidecar:\n{}",
            describe_containers(&p)
        );
        ctx.wait_report(
            &pod_uid,
            secs(60),
            "the sidecar's restart seen and startup judged",
            |s| restarts(s, "sidecar") >= 1 && s.report.startup != Verdict::Pending,
        )
        .await?;
        let s = settled(&ctx, &pod_uid, 4).await?;
        let mut f = Failures::default();
        f.no_false_error(&s, "for a sidecar restart after the app started");
        eprintln!("[t13] report:\n{}", status_summary(&s));
        f.result(&s)
    })
    .await;
}

// ------------------------------------------------------------------ 14

/// The pod of tests/fixtures/real-grace-spent-two-sidecars.
const GRACE_SPENT: &str = r#"
apiVersion: v1
kind: Pod
metadata:
  name: grace-spent-two-sidecars
spec:
  restartPolicy: Always
  terminationGracePeriodSeconds: 5
  initContainers:
  - name: first-sidecar
    image: localhost/busybox:1
    imagePullPolicy: IfNotPresent
    restartPolicy: Always
    command: ["sh", "-c", "trap 'echo bye; exit 0' TERM; echo started; sleep infinity & wait"]
  - name: second-sidecar
    image: localhost/busybox:1
    imagePullPolicy: IfNotPresent
    restartPolicy: Always
    command: ["sh", "-c", "trap 'echo bye; exit 0' TERM; echo started; sleep infinity & wait"]
  containers:
  - name: slow-app
    image: localhost/busybox:1
    imagePullPolicy: IfNotPresent
    command: ["sh", "-c", "trap '' TERM; echo started; while true; do sleep 1; done"]
"#;

/// The app ignores SIGTERM and spends the whole 5 s grace period; the
/// kubelet then stops both sidecars together (each exits at once on
/// SIGTERM). Not a stop-order violation: the Warning sidecar-force-killed,
/// naming slow-app as the container that spent the grace period.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t14_grace_spent_by_the_app_stops_two_sidecars_together() {
    run("t14-grace-spent", |ctx| async move {
        let pod = ctx.create_pod(GRACE_SPENT).await?;
        let name = pod.metadata.name.clone().unwrap_or_default();
        let pod_uid = uid(&pod.metadata);
        ctx.wait_ready(&name).await?;
        ctx.wait_startup_judged(&pod_uid).await?;
        tokio::time::sleep(secs(1)).await;
        ctx.delete_pod(&name).await?;
        ctx.wait_pod_gone(&name, secs(90)).await?;
        ctx.wait_report(
            &pod_uid,
            secs(60),
            "podEndedAt set and shutdown judged",
            |s| s.pod_ended_at.is_some() && s.report.shutdown != Verdict::Pending,
        )
        .await?;
        let s = settled(&ctx, &pod_uid, 3).await?;
        let mut f = Failures::default();
        for rule in ["sidecar-stop-order", "sidecar-stopped-before-app"] {
            let bad: Vec<_> = s
                .report
                .violations
                .iter()
                .filter(|v| v.rule.id() == rule && v.severity == Severity::Error)
                .map(|v| format!("{:?}: {}", v.containers, v.message))
                .collect();
            f.check(bad.is_empty(), || {
                format!("{rule} Error after the app spent the grace period: {bad:?}")
            });
        }
        let warnings: Vec<_> = s
            .report
            .violations
            .iter()
            .filter(|v| v.rule.id() == "sidecar-force-killed")
            .collect();
        f.check(!warnings.is_empty(), || {
            "no sidecar-force-killed Warning although slow-app spent the whole grace period".into()
        });
        f.check(
            warnings.iter().all(|v| v.severity == Severity::Warning),
            || format!("sidecar-force-killed with severity {:?}", warnings.iter().map(|v| v.severity).collect::<Vec<_>>()),
        );
        let names_app = |v: &&sidecar_order::report::Violation| {
            v.containers.iter().any(|c| c == "slow-app")
                || v.message.contains("slow-app")
                || v.evidence.iter().any(|e| e.contains("slow-app"))
        };
        f.check(warnings.is_empty() || warnings.iter().any(names_app), || {
            format!(
                "the sidecar-force-killed Warning does not name slow-app as the container that spent the grace period: {:?}",
                warnings.iter().map(|v| (&v.containers, &v.message)).collect::<Vec<_>>()
            )
        });
        eprintln!("[t14] report:\n{}", status_summary(&s));
        f.result(&s)
    })
    .await;
}
