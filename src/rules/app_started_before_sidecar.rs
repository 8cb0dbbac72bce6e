//! `app-started-before-sidecar`: app containers start only after every
//! sidecar passed its gate (startupProbe passed, else postStart finished).

use super::{Ctx, RuleDef, start};
use crate::model::Role;
use crate::report::{Phase, Rule, Severity};

pub const DEF: RuleDef = RuleDef {
    rule: Rule::AppStartedBeforeSidecar,
    severity: Severity::Error,
    phase: Phase::Startup,
    doc: "App containers' first runs in a sandbox start after every sidecar passed its gate (startupProbe passed, else postStart finished). Judged per generation; an app or sidecar restart inside a running generation is not startup (NotApplicable). \"Never started\" needs positive evidence (waiting, no run, restart count 0, no Started event).",
    since: crate::kubelet::promises::ORDERED_START,
    check,
};

const WORDS: start::Wording = start::Wording {
    never: |s, a| format!("app container {a} started but sidecar {s} never did"),
    probe: |s, a| {
        format!(
            "app container {a} started while the startup probe of sidecar {s} was still failing"
        )
    },
    before: |s, a| format!("app container {a} started before sidecar {s}"),
};

fn check(cx: &mut Ctx) {
    for a in cx.v.indices(Role::App) {
        for s in cx.v.indices(Role::Sidecar) {
            start::check_pair(cx, DEF.rule, s, a, &WORDS);
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::model::{EventReason, Role};
    use crate::report::{Rule, Verdict};
    use crate::rules::test_support::*;

    #[test]
    fn an_app_running_before_its_sidecar_started_is_violated() {
        let p = pod(vec![
            container("proxy", Role::Sidecar, 0, 0, vec![run(5, None)]),
            container("app", Role::App, 0, 0, vec![run(2, None)]),
        ]);
        // From the status alone it is not provable: a restarted sidecar can
        // briefly show restart count 0 and no lastState (seen live).
        assert_eq!(judged(p.clone(), &[]).startup, Verdict::Indeterminate);
        // The Started events show the proxy's start: nothing ran before it.
        let ev = [
            event("p.1", Some(0), EventReason::Started, None, 5, 5, 1),
            event("p.2", Some(1), EventReason::Started, None, 2, 2, 1),
        ];
        let r = judged(p, &ev);
        assert_eq!(r.startup, Verdict::Violated);
        assert_eq!(r.violations[0].rule, Rule::AppStartedBeforeSidecar);
    }

    #[test]
    fn node_reboot_without_events_is_not_a_violation() {
        // Captured shape: after the sandbox was re-created the sidecar shows
        // only its new run (restart count 0), the app its old run in lastState.
        let p = pod(vec![
            container("proxy", Role::Sidecar, 0, 0, vec![run(100, None)]),
            container(
                "app",
                Role::App,
                0,
                1,
                vec![run(2, Some(90)), run(102, None)],
            ),
        ]);
        let r = judged(p, &[]);
        assert_ne!(r.startup, Verdict::Violated, "{r:#?}");
        assert!(r.errors().next().is_none());
    }

    #[test]
    fn node_reboot_with_a_sandbox_changed_event_verifies_the_new_generation() {
        let mut p = pod(vec![
            container("proxy", Role::Sidecar, 0, 0, vec![run(100, None)]),
            container(
                "app",
                Role::App,
                0,
                1,
                vec![run(2, Some(90)), run(102, None)],
            ),
        ]);
        p.sandbox_ready = Some(T + 99);
        let ev = [
            event("p.1", None, EventReason::SandboxChanged, None, 98, 98, 1),
            event("p.2", Some(0), EventReason::Started, None, 1, 1, 1),
            event("p.3", Some(1), EventReason::Started, None, 2, 2, 1),
            event("p.4", Some(0), EventReason::Started, None, 100, 100, 1),
            event("p.5", Some(1), EventReason::Started, None, 102, 102, 1),
        ];
        let r = judged(p, &ev);
        assert_eq!(r.startup, Verdict::Verified, "{r:#?}");
    }

    #[test]
    fn a_sidecar_never_started_while_the_app_runs_is_violated() {
        let p = pod(vec![
            container("proxy", Role::Sidecar, 0, 0, vec![]),
            container("app", Role::App, 0, 0, vec![run(2, None)]),
        ]);
        let r = judged(p, &[]);
        assert_eq!(r.startup, Verdict::Violated);
        // Not when the app's run is an old one (a re-initialising sandbox).
        let p = pod(vec![
            container("proxy", Role::Sidecar, 0, 0, vec![]),
            container("app", Role::App, 0, 1, vec![run(2, Some(50))]),
        ]);
        assert_ne!(judged(p, &[]).startup, Verdict::Violated);
    }
}

#[cfg(test)]
mod live {
    use crate::engine::history::History;
    use crate::judge::{Config, Decided, judge_history};
    use crate::model::Role;
    use crate::rules::test_support::*;

    /// e2e t13 on kubelet v1.34.4: right after the sidecar restarted (long
    /// after the app started), one status showed it with restart count 0 and
    /// no lastState; the next one with restart count 1 and its old run. The
    /// controller had seen the old run: the new one is no first run.
    #[test]
    fn a_restarted_sidecar_briefly_reported_with_restart_count_0_is_no_first_run() {
        let app = || container("app", Role::App, 0, 0, vec![run(4, None)]);
        let steps = [
            container("sidecar", Role::Sidecar, 0, 0, vec![run(0, None)]),
            container("sidecar", Role::Sidecar, 0, 0, vec![run(24, None)]),
            container(
                "sidecar",
                Role::Sidecar,
                0,
                1,
                vec![run(0, Some(23)), run(24, None)],
            ),
        ];
        let mut h: Option<History> = None;
        let mut prev: Option<Decided> = None;
        for (k, sidecar) in steps.into_iter().enumerate() {
            let p = pod(vec![sidecar, app()]);
            match h.as_mut() {
                Some(h) => h.observe(p),
                None => h = Some(History::new(p)),
            }
            let r = judge_history(h.as_ref().unwrap(), &Config::default(), prev.as_ref());
            assert!(r.errors().next().is_none(), "step {k}: {r:#?}");
            prev = Some(Decided::of(&r));
        }
    }

    #[test]
    fn not_applicable_on_a_kubelet_without_native_sidecars() {
        use crate::model::EventReason;
        use crate::report::{Rule, Verdict};
        let p = pod(vec![
            container("proxy", Role::Sidecar, 0, 0, vec![run(5, None)]),
            container("app", Role::App, 0, 0, vec![run(2, None)]),
        ]);
        let ev = [
            event("p.1", Some(0), EventReason::Started, None, 5, 5, 1),
            event("p.2", Some(1), EventReason::Started, None, 2, 2, 1),
        ];
        assert_eq!(
            judged_on(p.clone(), &ev, "v1.28.0").startup,
            Verdict::Violated
        );
        let r = judged_on(p, &ev, "v1.27.16");
        not_applicable_before_its_version(&r, Rule::AppStartedBeforeSidecar);
        assert_eq!(r.startup, Verdict::NotApplicable, "{r:#?}");
    }

    #[test]
    fn a_violation_in_the_first_sandbox_names_no_reboot_bug() {
        use crate::model::EventReason;
        use crate::report::Verdict;
        let p = pod(vec![
            container("proxy", Role::Sidecar, 0, 0, vec![run(5, None)]),
            container("app", Role::App, 0, 0, vec![run(2, None)]),
        ]);
        let ev = [
            event("p.1", Some(0), EventReason::Started, None, 5, 5, 1),
            event("p.2", Some(1), EventReason::Started, None, 2, 2, 1),
        ];
        let r = judged_on(p, &ev, "v1.32.1");
        assert_eq!(r.startup, Verdict::Violated);
        assert!(!r.violations[0].message.contains("kubernetes#"), "{r:#?}");
    }
}
