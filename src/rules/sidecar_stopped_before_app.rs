//! `sidecar-stopped-before-app`: when a pod is deleted, the kubelet stops
//! the app containers first and the sidecars only after every app container
//! has exited. Every sidecar run that was going on when the termination
//! started is judged, so a sidecar that died (and was restarted) during the
//! shutdown is reported too.

use super::{Ctx, Decision, RuleDef, at};
use crate::model::Role;
use crate::report::{Outcome, Phase, Rule, Severity};
use crate::time::{Before, Moment, before};

pub const DEF: RuleDef = RuleDef {
    rule: Rule::SidecarStoppedBeforeApp,
    severity: Severity::Error,
    phase: Phase::Shutdown,
    doc: "On deletion, every sidecar run that was going on when the termination started ends after every app container ended, while grace remains. After the grace deadline the kubelet stops what is left together (NotApplicable). A Never/OnFailure pod's termination starts only once its apps finished, so it does not apply there.",
    since: crate::kubelet::promises::ORDERED_SHUTDOWN,
    check,
};

/// What ended at or after this moment ended at the grace deadline.
pub fn deadline_edge(deadline: &Moment) -> Moment {
    Moment::status(deadline.secs.saturating_sub(1))
}

fn check(cx: &mut Ctx) {
    let v = cx.v;
    let Some(term) = v.termination else { return };
    if term.job {
        return;
    }
    let edge = deadline_edge(&term.deadline);
    for s in v.indices(Role::Sidecar) {
        // Runs going on when the termination began (sure), and runs that
        // ended within that second (maybe: they may have ended before it).
        let sure = v.running_at_termination(s);
        let runs: Vec<(&crate::engine::view::RunView, bool)> = v.lines[s]
            .runs
            .iter()
            .filter(|r| !r.from_event && r.end.is_some())
            .filter_map(|r| {
                let is_sure = sure.iter().any(|q| std::ptr::eq(*q, r));
                (is_sure || r.alive_at(&term.start).is_none()).then_some((r, is_sure))
            })
            .collect();
        for (r, is_sure) in runs {
            let end = r.end.expect("ended");
            for a in v.indices(Role::App) {
                // The app's run going on when the termination began (sure),
                // or one that ended within that second (maybe).
                let app_sure = v.running_at_termination(a);
                let app_maybe = v.lines[a]
                    .runs
                    .iter()
                    .rev()
                    .find(|q| !q.from_event && q.alive_at(&term.start).is_none());
                let (q, is_sure) = match (app_sure.last(), app_maybe) {
                    (Some(q), _) => (*q, is_sure),
                    (None, Some(q)) => (q, false),
                    (None, None) => {
                        cx.record(
                            DEF.rule,
                            &[a, s],
                            Some(&end),
                            &Decision::not_applicable(format!(
                                "{} was not running when the termination started",
                                cx.name(a)
                            )),
                        );
                        continue;
                    }
                };
                let in_grace = matches!(before(&end, &edge), Before::Yes(_));
                let at_deadline = || {
                    Decision::not_applicable(format!(
                        "{} stopped at the end of the grace period, when the kubelet stops what is left together",
                        cx.name(s)
                    ))
                };
                let unsure = || {
                    Decision::indeterminate(format!(
                        "not known whether {} and {} were still running when the termination began",
                        cx.name(s),
                        cx.name(a)
                    ))
                };
                let d = match q.end {
                    None if !in_grace => at_deadline(),
                    None if q.running && !is_sure => unsure(),
                    None if q.running => {
                        // A fact of state (the app runs now), not an ordering of two moments.
                        let d = Decision::new(Outcome::Violated, None);
                        cx.record(DEF.rule, &[a, s], Some(&end), &d);
                        let msg = format!(
                            "sidecar {} terminated while app container {} was still running",
                            cx.name(s),
                            cx.name(a)
                        );
                        cx.violate(
                            DEF.rule,
                            &[a, s],
                            msg,
                            vec![format!(
                                "{} terminated at {} (exit code {})",
                                cx.name(s),
                                at(&end),
                                r.exit_code.map_or("?".into(), |c| c.to_string())
                            )],
                        );
                        continue;
                    }
                    None => {
                        Decision::indeterminate(format!("the end of {} is not known", cx.name(a)))
                    }
                    Some(ae) => match before(&end, &ae) {
                        Before::Yes(_) | Before::Unknown if !in_grace => at_deadline(),
                        Before::Yes(_) if !is_sure => unsure(),
                        _ => super::ends_in_order(cx, DEF.rule, (a, ae), (s, end), |a, s| {
                            format!("sidecar {s} terminated before app container {a}")
                        }),
                    },
                };
                cx.record(DEF.rule, &[a, s], Some(&end), &d);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::model::{Deletion, Role};
    use crate::report::{Rule, Verdict};
    use crate::rules::test_support::*;

    #[test]
    fn a_sidecar_that_died_and_restarted_during_shutdown_is_reported() {
        // Deleted at 100 (grace 30); the proxy died at 103 and was restarted,
        // its new run ended after the app.
        let mut p = pod(vec![
            container(
                "proxy",
                Role::Sidecar,
                0,
                1,
                vec![run(1, Some(103)), run(104, Some(112))],
            ),
            container("app", Role::App, 0, 0, vec![run(2, Some(110))]),
        ]);
        p.deletion = Some(Deletion {
            deadline_secs: T + 130,
            grace_secs: 30,
        });
        let r = judged(p, &[]);
        assert_eq!(r.shutdown, Verdict::Violated, "{r:#?}");
        assert!(
            r.violations
                .iter()
                .any(|v| v.rule == Rule::SidecarStoppedBeforeApp)
        );
    }

    #[test]
    fn after_the_grace_deadline_it_does_not_apply() {
        let mut p = pod(vec![
            container("proxy", Role::Sidecar, 0, 0, vec![run(1, Some(130))]),
            container("app", Role::App, 0, 0, vec![run(2, Some(131))]),
        ]);
        p.deletion = Some(Deletion {
            deadline_secs: T + 130,
            grace_secs: 30,
        });
        let r = judged(p, &[]);
        assert!(r.errors().next().is_none(), "{r:#?}");
    }

    #[test]
    fn not_applicable_before_ordered_shutdown() {
        // 1.28 stopped sidecars together with the apps: no order promised.
        let mut p = pod(vec![
            container("proxy", Role::Sidecar, 0, 0, vec![run(1, Some(103))]),
            container("app", Role::App, 0, 0, vec![run(2, Some(110))]),
        ]);
        p.deletion = Some(Deletion {
            deadline_secs: T + 130,
            grace_secs: 30,
        });
        assert_eq!(
            judged_on(p.clone(), &[], "v1.29.0").shutdown,
            Verdict::Violated
        );
        let r = judged_on(p, &[], "v1.28.3");
        not_applicable_before_its_version(&r, Rule::SidecarStoppedBeforeApp);
        assert_eq!(r.shutdown, Verdict::NotApplicable, "{r:#?}");
        let why = r
            .checks
            .iter()
            .find(|c| c.rule == Rule::SidecarStoppedBeforeApp)
            .and_then(|c| c.why.clone());
        assert_eq!(
            why.as_deref(),
            Some("reverse-order shutdown is promised from kubelet 1.29; this node runs v1.28.3")
        );
    }
}
