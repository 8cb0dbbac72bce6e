//! `sidecar-start-order`: sidecars start one by one in manifest order, each
//! after the one above it passed its gate (startupProbe passed, else
//! postStart finished, else running).

use super::{Ctx, RuleDef, start};
use crate::model::Role;
use crate::report::{Phase, Rule, Severity};

pub const DEF: RuleDef = RuleDef {
    rule: Rule::SidecarStartOrder,
    severity: Severity::Error,
    phase: Phase::Startup,
    doc: "Each sidecar's first run in a sandbox starts after the sidecar above it passed its gate (startupProbe passed, else postStart finished). Judged per generation (pod sandbox); restarts inside a running generation are not startup (NotApplicable).",
    since: crate::kubelet::promises::ORDERED_START,
    check,
};

const WORDS: start::Wording = start::Wording {
    never: |up, lo| format!("sidecar {lo} started but the sidecar above it, {up}, never did"),
    probe: |up, lo| {
        format!(
            "sidecar {lo} started while the startup probe of the sidecar above it, {up}, was still failing"
        )
    },
    before: |up, lo| format!("sidecar {lo} started before the sidecar above it, {up}"),
};

fn check(cx: &mut Ctx) {
    let sidecars = cx.v.indices(Role::Sidecar);
    for pair in sidecars.windows(2) {
        start::check_pair(cx, DEF.rule, pair[0], pair[1], &WORDS);
    }
}

#[cfg(test)]
mod tests {
    use crate::model::{EventReason, Role};
    use crate::report::{Rule, Verdict};
    use crate::rules::test_support::*;

    #[test]
    fn the_lower_sidecar_starting_first_while_both_run_is_violated() {
        let p = pod(vec![
            container("s1", Role::Sidecar, 0, 0, vec![run(5, None)]),
            container("s2", Role::Sidecar, 1, 0, vec![run(2, None)]),
            container("app", Role::App, 0, 0, vec![run(8, None)]),
        ]);
        let ev = [
            event("p.1", Some(0), EventReason::Started, None, 5, 5, 1),
            event("p.2", Some(1), EventReason::Started, None, 2, 2, 1),
            event("p.3", Some(2), EventReason::Started, None, 8, 8, 1),
        ];
        let r = judged(p, &ev);
        assert_eq!(r.startup, Verdict::Violated, "{r:#?}");
        assert!(
            r.violations
                .iter()
                .any(|v| v.rule == Rule::SidecarStartOrder)
        );
    }

    #[test]
    fn a_restart_of_the_lower_sidecar_is_not_startup() {
        // s2 restarted at 20 while s1 ran since 1: s1 spans both of s2's runs.
        let p = pod(vec![
            container("s1", Role::Sidecar, 0, 0, vec![run(1, None)]),
            container(
                "s2",
                Role::Sidecar,
                1,
                1,
                vec![run(2, Some(19)), run(20, None)],
            ),
            container("app", Role::App, 0, 0, vec![run(3, None)]),
        ]);
        let r = judged(p, &[]);
        assert_eq!(r.startup, Verdict::Verified, "{r:#?}");
    }

    #[test]
    fn not_applicable_on_a_kubelet_without_native_sidecars() {
        let p = pod(vec![
            container("s1", Role::Sidecar, 0, 0, vec![run(5, None)]),
            container("s2", Role::Sidecar, 1, 0, vec![run(2, None)]),
            container("app", Role::App, 0, 0, vec![run(8, None)]),
        ]);
        let ev = [
            event("p.1", Some(0), EventReason::Started, None, 5, 5, 1),
            event("p.2", Some(1), EventReason::Started, None, 2, 2, 1),
            event("p.3", Some(2), EventReason::Started, None, 8, 8, 1),
        ];
        // Promised from 1.28 (alpha): a 1.28 kubelet breaking it is violated.
        assert_eq!(
            judged_on(p.clone(), &ev, "v1.28.0").startup,
            Verdict::Violated
        );
        let r = judged_on(p, &ev, "v1.27.16");
        not_applicable_before_its_version(&r, Rule::SidecarStartOrder);
        assert_eq!(r.startup, Verdict::NotApplicable, "{r:#?}");
    }
}
