//! History -> report: builds the view of the pod's history, runs every rule
//! of `rules::TABLE` over it and turns their checks into phase verdicts.
//!
//! A phase is `Violated` when an error-severity rule of it found a broken
//! promise, `Indeterminate` when one could not decide, `Verified` when the
//! applicable checks all passed, `NotApplicable` when the phase happened but
//! no rule applied, `Pending` while it has not happened. Warnings are
//! reported beside the verdicts. Given the previous report of the same pod,
//! decided checks stay decided: history that expired never turns a
//! `Verified` or `Violated` into `Indeterminate`.
//!
//! With the node's kubelet version known (`History::kubelet`), a rule whose
//! promise that kubelet does not make (`RuleDef::since`) is not run: one
//! NotApplicable check says why. A violation whose shape matches a known
//! bug of that kubelet (`kubelet::KNOWN_BUGS`) names it.

use crate::engine::history::History;
use crate::engine::view::{self, View};
use crate::model::{EventFact, PodFacts};
use crate::report::{
    Check, ContainerReport, Evidence, MAX_ITEMS, Outcome, Phase, ProbeFailure, Report, Severity,
    Verdict, Violation,
};
use crate::rules::{Ctx, TABLE, at};
use crate::time::rfc3339;

/// Knobs of the judgement.
#[derive(Clone, Copy, Debug)]
pub struct Config {
    /// How long, beyond the grace period, a sidecar may run after every app
    /// container exited (Never/OnFailure pods).
    pub outlive_secs: i64,
}

impl Default for Config {
    fn default() -> Self {
        Config { outlive_secs: 30 }
    }
}

/// Judges a pod from one observation of it and its events.
pub fn judge(pod: &PodFacts, events: &[EventFact], cfg: &Config) -> Report {
    judge_history(&History::of(pod.clone(), events), cfg, None)
}

/// What later judgements of a pod keep of an earlier one (compact: the
/// controller holds one per tracked pod): each decided check's identity and
/// outcome, the violations, and the phase verdicts.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Decided {
    checks: Box<[(u32, Outcome, Option<crate::time::Source>)]>,
    violations: Box<[Violation]>,
    startup: Option<Verdict>,
    shutdown: Option<Verdict>,
}

/// A check's identity (rule, containers, moment), hashed to 32 bits: a pod
/// has a few dozen checks at most, so a collision is negligible and costs
/// only an outcome carried to the wrong Indeterminate check.
fn check_key(c: &Check) -> u32 {
    use std::hash::{Hash, Hasher};
    let mut h = std::hash::DefaultHasher::new();
    (c.rule, &c.containers, &c.at).hash(&mut h);
    h.finish() as u32
}

impl Decided {
    /// Takes in what another judgement of the same pod decided (a stored
    /// report another replica wrote): its decided checks this one lacks,
    /// its violations, a phase it Verified.
    pub fn absorb(&mut self, other: &Decided) {
        let mut checks = std::mem::take(&mut self.checks).into_vec();
        for c in other.checks.iter() {
            if !checks.iter().any(|(k, ..)| *k == c.0) {
                checks.push(*c);
            }
        }
        self.checks = checks.into_boxed_slice();
        let mut violations = std::mem::take(&mut self.violations).into_vec();
        for v in other.violations.iter() {
            if !violations
                .iter()
                .any(|m| m.rule == v.rule && m.containers == v.containers)
            {
                violations.push(v.clone());
            }
        }
        self.violations = violations.into_boxed_slice();
        if other.startup == Some(Verdict::Verified) {
            self.startup = other.startup;
        }
        if other.shutdown == Some(Verdict::Verified) {
            self.shutdown = other.shutdown;
        }
    }

    /// Whether this judgement holds everything `other` decided: each of
    /// its violations, its decided checks, a phase it Verified.
    pub fn holds(&self, other: &Decided) -> bool {
        let verified = |mine: Option<Verdict>, theirs: Option<Verdict>| {
            theirs != Some(Verdict::Verified) || mine == Some(Verdict::Verified)
        };
        other.violations.iter().all(|v| {
            self.violations
                .iter()
                .any(|m| m.rule == v.rule && m.containers == v.containers)
        }) && other
            .checks
            .iter()
            .all(|c| self.checks.iter().any(|m| m.0 == c.0))
            && verified(self.startup, other.startup)
            && verified(self.shutdown, other.shutdown)
    }

    pub fn of(r: &Report) -> Decided {
        Decided {
            checks: r
                .checks
                .iter()
                .filter(|c| c.outcome.decided())
                .map(|c| (check_key(c), c.outcome, c.decided_by))
                .collect(),
            violations: r.violations.clone().into_boxed_slice(),
            startup: Some(r.startup),
            shutdown: Some(r.shutdown),
        }
    }
}

/// Judges a pod's history; `prev` is what an earlier judgement of the same
/// pod decided.
pub fn judge_history(h: &History, cfg: &Config, prev: Option<&Decided>) -> Report {
    let v = view::build(h);
    let sidecars = h.pod.sidecar_count() as u32;
    let mut cx = Ctx {
        v: &v,
        cfg,
        checks: Vec::new(),
        violations: Vec::new(),
    };
    let mut gaps = v.gaps.clone();
    if sidecars == 0 {
        gaps.push("the pod has no native sidecars (initContainers with restartPolicy: Always): nothing to judge".into());
    } else if !h.pod.has_status {
        gaps.push("the pod has no status yet".into());
    } else {
        for def in TABLE {
            match h.kubelet {
                Some(k) if !def.since.holds_on(Some(k)) => cx.checks.push(Check {
                    rule: def.rule,
                    containers: Vec::new(),
                    outcome: Outcome::NotApplicable,
                    decided_by: None,
                    at: None,
                    why: Some(def.since.why_not(k)),
                }),
                _ => (def.check)(&mut cx),
            }
        }
    }
    let Ctx {
        mut checks,
        mut violations,
        ..
    } = cx;
    if let Some(prev) = prev {
        let kept = keep_decided(&mut checks, &mut violations, prev, h.kubelet);
        if kept > 0 {
            gaps.push(format!(
                "{kept} checks keep the outcome an earlier judgement of this pod decided (their evidence is no longer in the input)"
            ));
        }
    }
    if let Some(k) = h.kubelet {
        name_known_bugs(&v, k, &mut violations);
    }
    let (startup, shutdown) = if sidecars == 0 || !h.pod.has_status {
        (Verdict::Pending, Verdict::Pending)
    } else {
        let promised = |phase, verdict| match verdict {
            Verdict::Pending => verdict,
            _ if !phase_promised(phase, h.kubelet) => Verdict::NotApplicable,
            _ => verdict,
        };
        (
            keep_verified(
                promised(Phase::Startup, startup_verdict(&v, &checks, &violations)),
                prev.and_then(|p| p.startup),
            ),
            keep_verified(
                promised(Phase::Shutdown, shutdown_verdict(&v, &checks, &violations)),
                prev.and_then(|p| p.shutdown),
            ),
        )
    };
    report(&v, sidecars, gaps, checks, violations, startup, shutdown)
}

/// Whether the kubelet makes any error-severity promise of `phase` (a
/// phase none of whose promises it makes is NotApplicable once it happened).
fn phase_promised(phase: Phase, kubelet: Option<crate::kubelet::KubeletVersion>) -> bool {
    TABLE
        .iter()
        .filter(|d| d.phase == phase && d.severity == Severity::Error)
        .any(|d| d.since.holds_on(kubelet))
}

/// Appends the known kubelet bugs each violation's shape matches on kubelet
/// `k` to its message and evidence (once).
fn name_known_bugs(v: &View, k: crate::kubelet::KubeletVersion, violations: &mut [Violation]) {
    use crate::model::Role;
    let index = |name: &str| v.pod.containers.iter().position(|c| c.name == name);
    let apps = v.indices(Role::App);
    let no_app_started = apps.iter().all(|&a| v.lines[a].earliest_start().is_none());
    let base = crate::kubelet::Shape {
        deleted_during_init: v.termination.is_some_and(|t| !t.job) && no_app_started,
        sidecar_never_started: v
            .indices(Role::Sidecar)
            .iter()
            .any(|&s| v.lines[s].earliest_start().is_none()),
        ..Default::default()
    };
    for viol in violations.iter_mut() {
        let named: Vec<usize> = viol.containers.iter().filter_map(|c| index(c)).collect();
        let shape = crate::kubelet::Shape {
            app_in_recreated_sandbox: named.iter().any(|&i| {
                v.pod.containers[i].role == Role::App
                    && v.lines[i]
                        .runs
                        .iter()
                        .any(|r| r.start.is_some() && r.generation.is_some_and(|g| g > 0))
            }),
            names_sidecar: named
                .first()
                .is_some_and(|&i| v.pod.containers[i].role == Role::Sidecar),
            ..base
        };
        for bug in crate::kubelet::known_bugs(k, viol.rule, &shape) {
            if viol.message.contains(&bug.id()) {
                continue;
            }
            viol.message = format!("{} ({})", viol.message, bug.note(k));
            viol.evidence.push(bug.evidence(k));
        }
    }
}

/// Carries an earlier judgement's decided outcomes and violations over
/// (not those of rules whose promise `kubelet` does not make); the number
/// of checks whose evidence is gone.
fn keep_decided(
    checks: &mut [Check],
    violations: &mut Vec<Violation>,
    prev: &Decided,
    kubelet: Option<crate::kubelet::KubeletVersion>,
) -> usize {
    let mut kept = 0;
    for c in checks.iter_mut() {
        if !c.outcome.decided()
            && let Some((_, outcome, by)) = prev.checks.iter().find(|(k, ..)| *k == check_key(c))
        {
            c.outcome = *outcome;
            c.decided_by = *by;
            c.why = None;
            kept += 1;
        }
    }
    for pv in &prev.violations {
        if !pv.rule.def().since.holds_on(kubelet) {
            continue;
        }
        if !violations
            .iter()
            .any(|v| v.rule == pv.rule && v.containers == pv.containers)
        {
            violations.push(pv.clone());
        }
    }
    kept
}

/// A phase once Verified stays Verified when its evidence is gone.
fn keep_verified(new: Verdict, prev: Option<Verdict>) -> Verdict {
    match (prev, new) {
        (Some(Verdict::Verified), Verdict::Indeterminate | Verdict::NotApplicable) => {
            Verdict::Verified
        }
        _ => new,
    }
}

fn counted(checks: &[Check], phase: Phase) -> impl Iterator<Item = &Check> {
    checks
        .iter()
        .filter(move |c| c.rule.phase() == phase && c.rule.severity() == Severity::Error)
}

fn has_error(violations: &[Violation], phase: Phase) -> bool {
    violations
        .iter()
        .any(|v| v.severity == Severity::Error && v.rule.phase() == phase)
}

/// The verdict of a phase that has happened, from its error-severity checks.
fn settled(checks: &[Check], phase: Phase, none: Verdict) -> Verdict {
    let mut any = false;
    for c in counted(checks, phase) {
        match c.outcome {
            Outcome::Indeterminate => return Verdict::Indeterminate,
            Outcome::Verified | Outcome::Violated => any = true,
            Outcome::NotApplicable => {}
        }
    }
    if any { Verdict::Verified } else { none }
}

fn startup_verdict(v: &View, checks: &[Check], violations: &[Violation]) -> Verdict {
    if has_error(violations, Phase::Startup) {
        return Verdict::Violated;
    }
    let app_started = v
        .indices(crate::model::Role::App)
        .iter()
        .any(|&a| v.lines[a].earliest_start().is_some());
    if app_started {
        // Apps ran: a startup happened, even when its first runs are gone.
        // Hidden earlier runs of an app (or of a sidecar below another) may
        // hold a first run that was never judged.
        let sidecars = v.indices(crate::model::Role::Sidecar);
        let hidden = v
            .indices(crate::model::Role::App)
            .into_iter()
            .chain(sidecars.into_iter().skip(1))
            .any(|i| v.lines[i].hidden_runs);
        match settled(checks, Phase::Startup, Verdict::Indeterminate) {
            Verdict::Verified if hidden => Verdict::Indeterminate,
            verdict => verdict,
        }
    } else if v.termination.is_some() || v.pod.gone {
        settled(checks, Phase::Startup, Verdict::NotApplicable)
    } else {
        Verdict::Pending
    }
}

fn shutdown_verdict(v: &View, checks: &[Check], violations: &[Violation]) -> Verdict {
    if has_error(violations, Phase::Shutdown) {
        return Verdict::Violated;
    }
    if v.termination.is_none() && !v.pod.gone {
        return Verdict::Pending;
    }
    if !v.all_stopped() {
        return if v.pod.gone {
            Verdict::Indeterminate
        } else {
            Verdict::Pending
        };
    }
    if v.termination.is_none() {
        // Gone without a deletion or a finished phase we saw.
        return Verdict::Indeterminate;
    }
    settled(checks, Phase::Shutdown, Verdict::NotApplicable)
}

fn report(
    v: &View,
    sidecars: u32,
    gaps: Vec<String>,
    mut checks: Vec<Check>,
    mut violations: Vec<Violation>,
    startup: Verdict,
    shutdown: Verdict,
) -> Report {
    let pod = v.pod;
    let mut probe_failures = Vec::new();
    for (i, line) in v.lines.iter().enumerate() {
        let mut probes = line.probes.clone();
        probes.sort_by_key(|p| p.kind);
        for p in probes {
            probe_failures.push(ProbeFailure {
                container: pod.containers[i].name.clone(),
                probe: p.kind,
                count: p.count,
                first_time: rfc3339(p.first.secs),
                last_time: rfc3339(p.last.secs),
            });
        }
    }
    let containers = pod
        .containers
        .iter()
        .zip(&v.lines)
        .map(|(c, line)| {
            let current = c.runs.iter().rev().find(|r| r.current);
            let finished = (c.state == crate::model::StateKind::Terminated)
                .then(|| current.and_then(|r| r.finished))
                .flatten();
            ContainerReport {
                name: c.name.clone(),
                role: c.role,
                index: c.index,
                restarts: c.restarts,
                state: format!("{:?}", c.state),
                ready: c.ready,
                first_started_at: line.earliest_start().map(|m| at(&m)),
                finished_at: finished.map(|m| at(&m)),
                exit_code: current.and_then(|r| r.exit_code),
                reason: current.and_then(|r| r.reason.as_deref().map(Into::into)),
            }
        })
        .collect();
    let order = |a: &Violation, b: &Violation| {
        (a.severity, a.rule, &a.containers).cmp(&(b.severity, b.rule, &b.containers))
    };
    violations.sort_by(order);
    if violations.len() > MAX_ITEMS {
        // Keep the first of every rule, so a Violated phase always shows why.
        let (mut kept, mut rest): (Vec<Violation>, Vec<Violation>) = (Vec::new(), Vec::new());
        for v in violations {
            if kept.iter().any(|k| k.rule == v.rule) {
                rest.push(v);
            } else {
                kept.push(v);
            }
        }
        let room = MAX_ITEMS.saturating_sub(kept.len());
        kept.extend(rest.into_iter().take(room));
        kept.sort_by(order);
        violations = kept;
    }
    checks.sort_by(|a, b| (a.rule, &a.containers, &a.at).cmp(&(b.rule, &b.containers, &b.at)));
    if checks.len() > MAX_ITEMS {
        // Decided checks first: they are what later judgements keep.
        checks.sort_by_key(|c| !c.outcome.decided());
        checks.truncate(MAX_ITEMS);
        checks.sort_by(|a, b| (a.rule, &a.containers, &a.at).cmp(&(b.rule, &b.containers, &b.at)));
    }
    Report {
        startup,
        shutdown,
        sidecars,
        evidence: if gaps.is_empty() || sidecars == 0 {
            Evidence::Complete
        } else {
            Evidence::Partial
        },
        gaps,
        violations,
        probe_failures,
        containers,
        checks,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Deletion, Role};
    use crate::rules::test_support::*;

    /// A violation judged before the node's version was known is not
    /// carried into a judgement on a kubelet that does not make the promise.
    #[test]
    fn an_earlier_violation_of_a_promise_the_kubelet_does_not_make_is_dropped() {
        let mut p = pod(vec![
            container("s1", Role::Sidecar, 0, 0, vec![run(1, Some(102))]),
            container("s2", Role::Sidecar, 1, 0, vec![run(2, Some(103))]),
            container("app", Role::App, 0, 0, vec![run(3, Some(101))]),
        ]);
        p.deletion = Some(Deletion {
            deadline_secs: T + 105,
            grace_secs: 5,
        });
        let mut h = History::of(p, &[]);
        let before = judge_history(&h, &Config::default(), None);
        assert_eq!(before.shutdown, Verdict::Violated);
        h.kubelet = crate::kubelet::KubeletVersion::parse("v1.28.3");
        let after = judge_history(&h, &Config::default(), Some(&Decided::of(&before)));
        assert!(after.errors().next().is_none(), "{after:#?}");
        assert_eq!(after.shutdown, Verdict::NotApplicable);
        let status = crate::crd::ReportStatus::new(after, None).with_kubelet(h.kubelet);
        assert_eq!(status.kubelet_version.as_deref(), Some("v1.28.3"));
    }
}
