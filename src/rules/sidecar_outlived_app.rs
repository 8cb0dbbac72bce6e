//! `sidecar-outlived-app`: in a Never/OnFailure pod the kubelet stops the
//! sidecars once every app container has finished. A sidecar still running
//! longer than the grace period plus `--outlive-seconds` after the last app
//! exited was not stopped. Measured on node timestamps only (container
//! statuses and kubelet events), never against the controller's clock.

use super::{Ctx, Decision, RuleDef, at};
use crate::model::{Role, StateKind};
use crate::report::{Outcome, Phase, Rule, Severity};
use crate::time::{Source, rfc3339};

pub const DEF: RuleDef = RuleDef {
    rule: Rule::SidecarOutlivedApp,
    severity: Severity::Error,
    phase: Phase::Shutdown,
    doc: "Never/OnFailure pods: every sidecar ends within the grace period plus `--outlive-seconds` (default 30) after the last app container finished. A sidecar still running is measured against the latest node time the pod's status and events show.",
    since: crate::kubelet::promises::JOB_SIDECARS_STOPPED,
    check,
};

fn check(cx: &mut Ctx) {
    let v = cx.v;
    let Some(term) = v.termination.filter(|t| t.job) else {
        return;
    };
    let last = term.start;
    let allowed = term.grace_secs.saturating_add(cx.cfg.outlive_secs);
    let limit = last.secs.saturating_add(allowed);
    for s in v.indices(Role::Sidecar) {
        let running = v.pod.containers[s].state == StateKind::Running;
        let (end, ended) = match v.lines[s].final_end().and_then(|r| r.end) {
            Some(e) if !running => (e.secs, true),
            _ if running => (v.latest_secs, false),
            _ => continue,
        };
        if !ended && end <= limit {
            continue; // still within the limit as far as node times tell
        }
        let late = end - last.secs;
        let ok = late <= allowed;
        let outcome = if ok {
            Outcome::Verified
        } else {
            Outcome::Violated
        };
        cx.record(
            DEF.rule,
            &[s],
            Some(&last),
            &Decision::new(outcome, Some(Source::StatusSeconds)),
        );
        if !ok {
            let (msg, seen) = if ended {
                (
                    format!(
                        "sidecar {} terminated {late}s after every app container had exited (limit {allowed}s: grace {}s + {}s)",
                        cx.name(s),
                        term.grace_secs,
                        cx.cfg.outlive_secs
                    ),
                    format!("{} terminated at {}", cx.name(s), rfc3339(end)),
                )
            } else {
                // Described at the limit, not at the latest time: the report
                // must not change while nothing does.
                (
                    format!(
                        "sidecar {} was still running more than {allowed}s after every app container had exited",
                        cx.name(s)
                    ),
                    format!("{} still running at {}", cx.name(s), rfc3339(limit)),
                )
            };
            let ev = vec![format!("last app container exited at {}", at(&last)), seen];
            cx.violate(DEF.rule, &[s], msg, ev);
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::model::{RestartPolicy, Role};
    use crate::report::{Rule, Verdict};
    use crate::rules::test_support::*;

    #[test]
    fn a_sidecar_killed_at_the_end_of_the_grace_period_did_not_outlive() {
        let mut p = pod(vec![
            container("proxy", Role::Sidecar, 0, 0, vec![run(1, Some(41))]),
            container("job", Role::App, 0, 0, vec![run(2, Some(10))]),
        ]);
        p.restart_policy = RestartPolicy::Never;
        p.containers[0].runs[0].exit_code = Some(137);
        let r = judged(p, &[]);
        assert!(
            r.violations
                .iter()
                .all(|v| v.rule != Rule::SidecarOutlivedApp),
            "{r:#?}"
        );
    }

    #[test]
    fn a_sidecar_running_long_after_the_job_is_reported_on_node_time() {
        let mut p = pod(vec![
            container("proxy", Role::Sidecar, 0, 0, vec![run(1, None)]),
            container("job", Role::App, 0, 0, vec![run(2, Some(10))]),
        ]);
        p.restart_policy = RestartPolicy::Never;
        p.latest_secs = T + 30;
        assert_eq!(judged(p.clone(), &[]).shutdown, Verdict::Pending);
        p.latest_secs = T + 100;
        assert_eq!(judged(p, &[]).shutdown, Verdict::Violated);
    }

    #[test]
    fn not_applicable_on_a_kubelet_without_native_sidecars() {
        let mut p = pod(vec![
            container("proxy", Role::Sidecar, 0, 0, vec![run(1, None)]),
            container("job", Role::App, 0, 0, vec![run(2, Some(10))]),
        ]);
        p.restart_policy = RestartPolicy::Never;
        p.latest_secs = T + 100;
        assert_eq!(
            judged_on(p.clone(), &[], "v1.28.0").shutdown,
            Verdict::Violated
        );
        let r = judged_on(p, &[], "v1.27.16");
        not_applicable_before_its_version(&r, Rule::SidecarOutlivedApp);
        assert_ne!(r.shutdown, Verdict::Violated, "{r:#?}");
    }
}
