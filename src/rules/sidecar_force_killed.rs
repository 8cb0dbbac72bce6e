//! `sidecar-force-killed` (warning): the grace period ran out. The kubelet
//! then kills what still runs and stops the remaining sidecars together, so
//! their order is no longer promised. Names the container that spent the
//! grace period: the first, in stop order (apps, then sidecars bottom-up),
//! still running at the deadline.

use super::sidecar_stopped_before_app::deadline_edge;
use super::{Ctx, Decision, RuleDef, at};
use crate::model::Role;
use crate::report::{Outcome, Phase, Rule, Severity};
use crate::time::{Before, Source, before, rfc3339};

pub const DEF: RuleDef = RuleDef {
    rule: Rule::SidecarForceKilled,
    severity: Severity::Warning,
    phase: Phase::Shutdown,
    doc: "Warning: the termination grace period ran out (a container was SIGKILLed at the deadline, ended after it, or the kubelet reported ExceededGracePeriod). Names the container that spent it; the sidecars still running then were stopped together, SIGTERM then SIGKILL 2 s later.",
    since: crate::kubelet::promises::GRACE_PERIOD,
    check,
};

fn check(cx: &mut Ctx) {
    let v = cx.v;
    let Some(term) = v.termination else { return };
    if !v.all_stopped() && !v.pod.gone {
        return;
    }
    let edge = deadline_edge(&term.deadline);
    let mut order = v.indices(Role::App);
    order.extend(v.indices(Role::Sidecar).into_iter().rev());
    let spender = order.into_iter().find_map(|i| {
        let r = v.lines[i].final_end()?;
        let end = r.end?;
        let at_deadline = !matches!(before(&end, &edge), Before::Yes(_));
        let spent = r.killed()
            || matches!(before(&term.deadline, &end), Before::Yes(_))
            || v.exceeded_grace_period;
        (at_deadline && spent).then_some((i, r))
    });
    match spender {
        Some((i, r)) => {
            let end = r.end.expect("ended");
            cx.record(
                DEF.rule,
                &[i],
                Some(&end),
                &Decision::new(Outcome::Violated, Some(Source::StatusSeconds)),
            );
            let msg = format!(
                "{} was still running at the end of the {}s grace period and was killed; the sidecars still running then were stopped together",
                cx.name(i),
                term.grace_secs
            );
            let ev = vec![
                format!(
                    "{} terminated at {} with exit code {}",
                    cx.name(i),
                    at(&end),
                    r.exit_code.map_or("?".into(), |c| c.to_string())
                ),
                format!("grace period ended at {}", rfc3339(term.deadline.secs)),
            ];
            cx.violate(DEF.rule, &[i], msg, ev);
        }
        None => {
            for s in v.indices(Role::Sidecar) {
                if let Some(end) = v.lines[s].final_end().and_then(|r| r.end) {
                    cx.record(
                        DEF.rule,
                        &[s],
                        Some(&end),
                        &Decision::new(Outcome::Verified, Some(Source::StatusSeconds)),
                    );
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::model::{Deletion, Role};
    use crate::report::Rule;
    use crate::rules::test_support::*;

    #[test]
    fn names_the_app_that_spent_the_grace_period_even_when_sidecars_exit_on_sigterm() {
        let mut p = pod(vec![
            container("s1", Role::Sidecar, 0, 0, vec![run(1, Some(106))]),
            container("app", Role::App, 0, 0, vec![run(3, Some(105))]),
        ]);
        p.containers[1].runs[0].exit_code = Some(137);
        p.deletion = Some(Deletion {
            deadline_secs: T + 105,
            grace_secs: 5,
        });
        let r = judged(p, &[]);
        let v = r
            .violations
            .iter()
            .find(|v| v.rule == Rule::SidecarForceKilled)
            .expect("warning");
        assert_eq!(v.containers, vec!["app".to_string()]);
        assert!(v.message.contains("5s grace period"), "{}", v.message);
    }

    #[test]
    fn not_applicable_on_a_kubelet_without_native_sidecars() {
        let mut p = pod(vec![
            container("s1", Role::Sidecar, 0, 0, vec![run(1, Some(106))]),
            container("app", Role::App, 0, 0, vec![run(3, Some(105))]),
        ]);
        p.containers[1].runs[0].exit_code = Some(137);
        p.deletion = Some(Deletion {
            deadline_secs: T + 105,
            grace_secs: 5,
        });
        let warned = |r: &crate::report::Report| {
            r.violations
                .iter()
                .any(|v| v.rule == Rule::SidecarForceKilled)
        };
        assert!(warned(&judged_on(p.clone(), &[], "v1.28.0")));
        let r = judged_on(p, &[], "v1.27.16");
        not_applicable_before_its_version(&r, Rule::SidecarForceKilled);
    }
}
