//! `app-started-before-sidecar-ready` (warning): the kubelet does not wait
//! for a sidecar's readiness before starting the apps, so an app may start
//! while its sidecar is not ready yet. Reported when the sidecar's readiness
//! probe failed, in the sidecar run that was going on when the app started,
//! both before and at or after the app's start.

use super::{Ctx, Decision, RuleDef, at, source_name};
use crate::engine::view::RunView;
use crate::model::{ProbeKind, Role};
use crate::report::{Outcome, Phase, Rule, Severity};
use crate::time::{Before, before};

pub const DEF: RuleDef = RuleDef {
    rule: Rule::AppStartedBeforeSidecarReady,
    severity: Severity::Warning,
    phase: Phase::Startup,
    doc: "Warning: an app container started while a sidecar's readiness probe was failing, in the sidecar run going on at the app's start (failures before and at/after the start). The kubelet does not promise readiness before apps start; this tells you your app may see its sidecar unready.",
    since: crate::kubelet::promises::ORDERED_START,
    check,
};

fn check(cx: &mut Ctx) {
    let v = cx.v;
    for s in v.indices(Role::Sidecar) {
        if !v.pod.containers[s].declares.readiness
            || v.lines[s].probe(ProbeKind::Readiness).is_none()
        {
            continue;
        }
        for a in v.indices(Role::App) {
            for r in super::started_runs(v, a).filter(|r| !r.from_event) {
                let t = r.start.expect("started");
                let sidecar_run: Option<&RunView> = v.lines[s]
                    .runs
                    .iter()
                    .find(|w| w.alive_at(&t) == Some(true));
                let Some(w) = sidecar_run else {
                    cx.record(
                        DEF.rule,
                        &[s, a],
                        Some(&t),
                        &Decision::indeterminate(format!(
                            "no run of {} known to be going on at the start",
                            cx.name(s)
                        )),
                    );
                    continue;
                };
                let fails: Vec<_> = w
                    .failures
                    .iter()
                    .filter(|f| f.kind == ProbeKind::Readiness)
                    .map(|f| f.at)
                    .collect();
                let failed_before = fails.iter().find_map(|f| match before(f, &t) {
                    Before::Yes(by) => Some((*f, by)),
                    _ => None,
                });
                let failed_after = fails.iter().find_map(|f| match before(f, &t) {
                    Before::No(by) => Some((*f, by)),
                    _ => None,
                });
                match (failed_before, failed_after) {
                    (Some((f1, b1)), Some((f2, b2))) => {
                        cx.record(
                            DEF.rule,
                            &[s, a],
                            Some(&t),
                            &Decision::new(Outcome::Violated, Some(b1.max(b2))),
                        );
                        let msg = format!(
                            "app container {} started while sidecar {} was not ready (its readiness probe was failing)",
                            cx.name(a),
                            cx.name(s)
                        );
                        let ev = vec![
                            format!(
                                "{} readiness probe failed at {} and again at {}, in its run that started at {}",
                                cx.name(s),
                                at(&f1),
                                at(&f2),
                                at(&w.start.expect("started"))
                            ),
                            format!("{} started at {}", cx.name(a), at(&t)),
                            format!(
                                "failure before the start decided by {}; failure at or after it decided by {}",
                                source_name(b1),
                                source_name(b2)
                            ),
                        ];
                        cx.violate(DEF.rule, &[s, a], msg, ev);
                    }
                    (None, _)
                        if fails
                            .iter()
                            .all(|f| matches!(before(&t, f), Before::Yes(_))) =>
                    {
                        cx.record(
                            DEF.rule,
                            &[s, a],
                            Some(&t),
                            &Decision::new(Outcome::Verified, None),
                        );
                    }
                    _ => cx.record(
                        DEF.rule,
                        &[s, a],
                        Some(&t),
                        &Decision::indeterminate(
                            "readiness failures too close to the app's start to order",
                        ),
                    ),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::model::{EventReason, ProbeKind, Role};
    use crate::report::{Rule, Severity};
    use crate::rules::test_support::*;

    fn with_readiness(mut p: crate::model::PodFacts) -> crate::model::PodFacts {
        p.containers[0].declares.readiness = true;
        p
    }

    #[test]
    fn failing_before_and_after_the_app_start_in_one_run_warns() {
        let p = with_readiness(pod(vec![
            container("proxy", Role::Sidecar, 0, 0, vec![run(1, None)]),
            container("app", Role::App, 0, 0, vec![run(10, None)]),
        ]));
        let ev = [event(
            "p.1",
            Some(0),
            EventReason::Unhealthy,
            Some(ProbeKind::Readiness),
            5,
            20,
            4,
        )];
        let r = judged(p, &ev);
        let v = r
            .violations
            .iter()
            .find(|v| v.rule == Rule::AppStartedBeforeSidecarReady)
            .expect("warning");
        assert_eq!(v.severity, Severity::Warning);
    }

    #[test]
    fn failures_of_a_later_run_do_not_count() {
        // The proxy ran 1..30 without failing; its second run failed at 40 and 50.
        let p = with_readiness(pod(vec![
            container(
                "proxy",
                Role::Sidecar,
                0,
                1,
                vec![run(1, Some(30)), run(35, None)],
            ),
            container("app", Role::App, 0, 0, vec![run(10, None)]),
        ]));
        let ev = [event(
            "p.1",
            Some(0),
            EventReason::Unhealthy,
            Some(ProbeKind::Readiness),
            40,
            50,
            2,
        )];
        let r = judged(p, &ev);
        assert!(r.violations.is_empty(), "{r:#?}");
    }

    #[test]
    fn not_applicable_on_a_kubelet_without_native_sidecars() {
        let p = with_readiness(pod(vec![
            container("proxy", Role::Sidecar, 0, 0, vec![run(1, None)]),
            container("app", Role::App, 0, 0, vec![run(10, None)]),
        ]));
        let ev = [event(
            "p.1",
            Some(0),
            EventReason::Unhealthy,
            Some(ProbeKind::Readiness),
            5,
            20,
            4,
        )];
        let warned = |r: &crate::report::Report| {
            r.violations
                .iter()
                .any(|v| v.rule == Rule::AppStartedBeforeSidecarReady)
        };
        assert!(warned(&judged_on(p.clone(), &ev, "v1.28.0")));
        let r = judged_on(p, &ev, "v1.27.16");
        not_applicable_before_its_version(&r, Rule::AppStartedBeforeSidecarReady);
    }
}
