//! `sidecar-stop-order`: on shutdown the kubelet stops sidecars one by one in
//! reverse manifest order, each after the one below it exited, while grace
//! remains. Once the grace deadline has passed, the remaining sidecars are
//! stopped together and their order is no promise. (The kubelet's
//! `terminationOrdering`: each sidecar waits, before its SIGTERM, until the
//! sidecar below it exited or its grace ran out; an upper sidecar cannot
//! end before the deadline by the kubelet's hand while the lower one runs.)

use super::sidecar_stopped_before_app::deadline_edge;
use super::{Ctx, Decision, RuleDef};
use crate::model::Role;
use crate::report::{Phase, Rule, Severity};
use crate::time::{Before, before};

pub const DEF: RuleDef = RuleDef {
    rule: Rule::SidecarStopOrder,
    severity: Severity::Error,
    phase: Phase::Shutdown,
    doc: "Sidecars that were running when the termination started end in reverse manifest order while grace remains. Pairs that both ended only at the grace deadline, or any of whose apps did, are NotApplicable: the kubelet then stops what is left together. An upper sidecar that ended before the deadline while the lower one still ran broke the order, however late the lower one ended.",
    since: crate::kubelet::promises::ORDERED_SHUTDOWN,
    check,
};

fn check(cx: &mut Ctx) {
    let v = cx.v;
    let Some(term) = v.termination else { return };
    let edge = deadline_edge(&term.deadline);
    // Sidecars running when the termination began (true), or maybe (false):
    // one that ended within that second may have ended on its own before.
    let running_at_start: Vec<(usize, bool)> = v
        .indices(Role::Sidecar)
        .into_iter()
        .filter_map(|s| {
            if !v.running_at_termination(s).is_empty() {
                return Some((s, true));
            }
            let last = v.lines[s].runs.iter().rev().find(|r| !r.from_event)?;
            (last.alive_at(&term.start) != Some(false)).then_some((s, false))
        })
        .collect();
    let grace_spent_by_app = v.indices(Role::App).into_iter().find(|&a| {
        v.lines[a]
            .final_end()
            .and_then(|r| r.end)
            .is_some_and(|e| !matches!(before(&e, &edge), Before::Yes(_)))
    });
    for pair in running_at_start.windows(2) {
        let ((up, up_sure), (lo, lo_sure)) = (pair[0], pair[1]);
        if v.pod.containers[up].state == crate::model::StateKind::Running
            || v.pod.containers[lo].state == crate::model::StateKind::Running
        {
            continue;
        }
        let (Some(eu), Some(el)) = (
            v.lines[up].final_end().and_then(|r| r.end),
            v.lines[lo].final_end().and_then(|r| r.end),
        ) else {
            continue;
        };
        let d = if let Some(a) = grace_spent_by_app {
            Decision::not_applicable(format!(
                "app container {} spent the grace period; the sidecars were then stopped together",
                cx.name(a)
            ))
        } else if !matches!(before(&el, &edge), Before::Yes(_))
            && !matches!(before(&eu, &edge), Before::Yes(_))
        {
            Decision::not_applicable(format!(
                "{} stopped only at the end of the grace period",
                cx.name(lo)
            ))
        } else {
            match before(&eu, &el) {
                Before::Yes(_) if !(up_sure && lo_sure) => Decision::indeterminate(format!(
                    "not known whether {} was still running when the termination began",
                    cx.name(if up_sure { lo } else { up })
                )),
                _ => super::ends_in_order(cx, DEF.rule, (lo, el), (up, eu), |lo, up| {
                    format!(
                        "sidecar {up} terminated before {lo}, which is below it in the manifest"
                    )
                }),
            }
        };
        cx.record(DEF.rule, &[lo, up], Some(&eu), &d);
    }
}

#[cfg(test)]
mod tests {
    use crate::model::{Deletion, Role};
    use crate::report::{Rule, Verdict};
    use crate::rules::test_support::*;

    fn deleted(s1_end: i64, s2_end: i64, app_end: i64) -> crate::report::Report {
        let mut p = pod(vec![
            container("s1", Role::Sidecar, 0, 0, vec![run(1, Some(s1_end))]),
            container("s2", Role::Sidecar, 1, 0, vec![run(2, Some(s2_end))]),
            container("app", Role::App, 0, 0, vec![run(3, Some(app_end))]),
        ]);
        p.deletion = Some(Deletion {
            deadline_secs: T + 105,
            grace_secs: 5,
        });
        if app_end >= 105 {
            p.containers[2].runs[0].exit_code = Some(137);
        }
        judged(p, &[])
    }

    #[test]
    fn reverse_order_within_grace() {
        assert_eq!(deleted(103, 102, 101).shutdown, Verdict::Verified);
        let r = deleted(102, 103, 101);
        assert_eq!(r.shutdown, Verdict::Violated);
        assert_eq!(r.violations[0].rule, Rule::SidecarStopOrder);
    }

    #[test]
    fn an_app_that_spent_the_grace_period_leaves_no_order_to_judge() {
        // Captured shape: the app ignored SIGTERM and was killed at the
        // deadline; both sidecars then exited on SIGTERM in the same second.
        let r = deleted(106, 106, 105);
        assert!(r.errors().next().is_none(), "{r:#?}");
        assert!(
            r.violations
                .iter()
                .any(|v| v.rule == Rule::SidecarForceKilled),
            "{r:#?}"
        );
    }

    /// The lower sidecar ran to the deadline (killed there), the upper one
    /// ended while grace remained: the kubelet makes the upper wait for the
    /// lower until its grace runs out (`terminationOrdering.waitForTurn`),
    /// so it ended out of turn. A 10,000-pod load run showed this shape.
    #[test]
    fn an_upper_sidecar_ending_before_the_deadline_breaks_the_order_of_a_lower_one_killed_there() {
        let r = deleted(103, 106, 101);
        assert_eq!(r.shutdown, Verdict::Violated, "{r:#?}");
        assert!(
            r.violations
                .iter()
                .any(|v| v.rule == Rule::SidecarStopOrder),
            "{r:#?}"
        );
    }

    /// Both ended at the deadline or after it: stopped together, no order.
    #[test]
    fn sidecars_both_ending_at_the_deadline_have_no_order_to_judge() {
        let r = deleted(106, 107, 101);
        assert!(
            !r.violations
                .iter()
                .any(|v| v.rule == Rule::SidecarStopOrder),
            "{r:#?}"
        );
        assert!(
            r.checks.iter().any(|c| c.rule == Rule::SidecarStopOrder
                && c.outcome == crate::report::Outcome::NotApplicable),
            "{r:#?}"
        );
    }

    #[test]
    fn not_applicable_before_ordered_shutdown() {
        let mut p = pod(vec![
            container("s1", Role::Sidecar, 0, 0, vec![run(1, Some(102))]),
            container("s2", Role::Sidecar, 1, 0, vec![run(2, Some(103))]),
            container("app", Role::App, 0, 0, vec![run(3, Some(101))]),
        ]);
        p.deletion = Some(Deletion {
            deadline_secs: T + 105,
            grace_secs: 5,
        });
        assert_eq!(
            judged_on(p.clone(), &[], "v1.29.0").shutdown,
            Verdict::Violated
        );
        let r = judged_on(p, &[], "v1.28.15");
        not_applicable_before_its_version(&r, Rule::SidecarStopOrder);
        assert_eq!(r.shutdown, Verdict::NotApplicable, "{r:#?}");
    }
}
