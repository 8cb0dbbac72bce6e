//! Two controller replicas on the real kubelet (issue 9): the leader is
//! SIGKILLed in the middle of a violating pod's shutdown; the standby takes
//! the lease over, reconciles its index with the stored reports, and the
//! violation is reported once, with one Warning Event, counted once.
//!
//! Run by `make e2e` (e2e/run.sh) alone (it scales the deployed controller
//! to two replicas and kills one), or against the local cluster with the
//! controller deployed:
//!
//! ```sh
//! export KUBECONFIG=/tmp/sidecar-order-cluster/kubeconfig
//! cargo test --features e2e --test e2e_ha
//! ```
//!
//! The kill is a real SIGKILL of the controller process on the node (found
//! by its POD_NAME in /proc/PID/environ): it needs root on the node, i.e.
//! the local cluster.

#[macro_use]
mod support;

use k8s_openapi::api::core::v1::Pod;
use kube::api::ListParams;
use sidecar_order::report::{Rule, Verdict};
use support::*;

const HA_PRESTOP: &str = r#"
apiVersion: v1
kind: Pod
metadata:
  name: ha-prestop-kills-sidecar
spec:
  terminationGracePeriodSeconds: 30
  containers:
  - name: app
    image: localhost/busybox:1
    imagePullPolicy: IfNotPresent
    command: ["sh", "-c", "trap 'sleep 8; exit 0' TERM; sleep infinity & wait"]
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

/// Every Ready controller pod, not being deleted.
async fn controller_pods(client: &kube::Client) -> R<Vec<Pod>> {
    let api: kube::Api<Pod> = kube::Api::namespaced(client.clone(), CONTROLLER_NS);
    let list = api
        .list(&ListParams::default().labels(CONTROLLER_SELECTOR))
        .await
        .ctx("listing controller pods")?;
    Ok(list
        .items
        .into_iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none() && is_ready(p))
        .collect())
}

/// The replica holding the lease (`sidecar_order_leader 1`) and the others.
async fn leader_and_standbys(client: &kube::Client) -> R<Option<(Pod, Vec<Pod>)>> {
    let mut leader = None;
    let mut standbys = Vec::new();
    for p in controller_pods(client).await? {
        let m = scrape_pod(&p).await?;
        if metric_sum(&m, "sidecar_order_leader", &[]) == 1.0 {
            leader = Some(p);
        } else {
            standbys.push(p);
        }
    }
    Ok(leader.map(|l| (l, standbys)))
}

fn scale(replicas: u32) -> R<String> {
    kubectl(&[
        "-n",
        CONTROLLER_NS,
        "scale",
        "deployment/sidecar-order-controller",
        &format!("--replicas={replicas}"),
    ])
}

/// SIGKILLs the controller process of pod `name` on this node.
fn sigkill_controller(name: &str) -> R<i32> {
    let want = format!("POD_NAME={name}");
    for entry in std::fs::read_dir("/proc").ctx("reading /proc")? {
        let Ok(entry) = entry else { continue };
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<i32>().ok())
        else {
            continue;
        };
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        if !String::from_utf8_lossy(&cmdline).contains("sidecar-order") {
            continue;
        }
        let environ = std::fs::read(format!("/proc/{pid}/environ")).unwrap_or_default();
        if environ.split(|b| *b == 0).any(|v| v == want.as_bytes()) {
            let out = std::process::Command::new("kill")
                .args(["-KILL", &pid.to_string()])
                .output()
                .ctx("running kill")?;
            ensure!(out.status.success(), "kill -KILL {pid} failed: {out:?}");
            return Ok(pid);
        }
    }
    Err(format!(
        "no sidecar-order process of pod {name} on this node"
    ))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t16_leader_killed_mid_violation_reports_once() {
    run("t16-ha", |ctx| async move {
        scale(2)?;
        let result = leader_killed(&ctx).await;
        // Back to one replica whatever happened: the other scenarios scrape
        // "the" controller.
        scale(1)?;
        let client = &ctx.client;
        poll("one controller replica again", secs(120), || async move {
            Ok((controller_pods(client).await?.len() == 1).then_some(()))
        })
        .await?;
        result
    })
    .await;
}

async fn leader_killed(ctx: &Ctx) -> R<()> {
    {
        let client = &ctx.client;
        let (leader, standbys) = poll(
            "two Ready replicas, one of them leading",
            secs(180),
            || async move {
                let pods = controller_pods(client).await?;
                if pods.len() < 2 {
                    return Ok(None);
                }
                leader_and_standbys(client).await
            },
        )
        .await?;
        ensure!(!standbys.is_empty(), "no standby replica");
        let leader_name = leader.metadata.name.clone().unwrap_or_default();
        eprintln!(
            "[t16] leader {leader_name}, standby {:?}",
            standbys
                .iter()
                .map(|p| p.metadata.name.clone())
                .collect::<Vec<_>>()
        );

        let (name, pod_uid, _) = ctx.start_verified(HA_PRESTOP).await?;
        // The deletion starts the shutdown: the preStop hook kills the
        // sidecar at once, the app takes 8 s: a violation the leader would
        // see in a few seconds. It is killed first.
        ctx.delete_pod(&name).await?;
        let pid = sigkill_controller(&leader_name)?;
        eprintln!("[t16] SIGKILLed the leader's process {pid}");

        let (_, s) = ctx
            .wait_report(
                &pod_uid,
                secs(120),
                "the pod's end and its shutdown judged by the new leader",
                |s| s.pod_ended_at.is_some() && s.report.shutdown != Verdict::Pending,
            )
            .await?;
        ensure!(
            s.report.shutdown == Verdict::Violated,
            "shutdown {:?}:\n{}",
            s.report.shutdown,
            status_summary(&s)
        );
        let found: Vec<_> = s
            .report
            .violations
            .iter()
            .filter(|v| v.rule == Rule::SidecarStoppedBeforeApp)
            .collect();
        ensure!(
            found.len() == 1,
            "{} sidecar-stopped-before-app violations:\n{}",
            found.len(),
            status_summary(&s)
        );

        // One Warning Event, and still one a while later (no replica
        // announces it again).
        poll("the Warning Event", secs(30), || async {
            let n = ctx
                .events_of(&pod_uid)
                .await?
                .iter()
                .filter(|e| e.reason.as_deref() == Some("SidecarOrderViolation"))
                .count();
            Ok((n >= 1).then_some(()))
        })
        .await?;
        tokio::time::sleep(secs(20)).await;
        let events: Vec<_> = ctx
            .events_of(&pod_uid)
            .await?
            .into_iter()
            .filter(|e| e.reason.as_deref() == Some("SidecarOrderViolation"))
            .collect();
        let count: i32 = events.iter().map(|e| e.count.unwrap_or(1).max(1)).sum();
        ensure!(
            count == 1,
            "{count} SidecarOrderViolation Events: {:?}",
            events.iter().map(|e| &e.message).collect::<Vec<_>>()
        );

        // Counted once over every replica that serves now (the killed one's
        // counts died with it, and it had not counted this violation: it
        // was killed before the app ended).
        let ns = ctx.ns.clone();
        let mut total = 0.0;
        for p in controller_pods(client).await? {
            let m = scrape_pod(&p).await?;
            total += metric_sum(
                &m,
                "sidecar_order_violations_total",
                &[("namespace", &ns), ("rule", "sidecar-stopped-before-app")],
            );
        }
        ensure!(
            total == 1.0,
            "sidecar_order_violations_total over the replicas = {total}, want 1"
        );
        Ok(())
    }
}
