//! Timeline -> verdict. Every rule is a set of ordering checks between two
//! moments; a check is decided by the first time source that separates them,
//! and is `Indeterminate` when none does. Only error-severity rules make a
//! phase `Violated` or `Indeterminate`; warnings are reported beside it.

use crate::model::EventFact;
use crate::model::{PodFacts, ProbeKind, RestartPolicy, Role, StateKind};
use crate::report::{
    Check, ContainerReport, Evidence, MAX_ITEMS, Outcome, Phase, ProbeFailure, Report, Rule,
    Verdict, Violation,
};
use crate::time::{Before, Moment, Source, before, rfc3339};
use crate::timeline::{Timeline, build};

/// Knobs of the judgement. `now_secs` is the caller's clock (the engine has none).
#[derive(Clone, Copy, Debug)]
pub struct Config {
    /// How long a sidecar may run after every app container exited (Never/OnFailure pods).
    pub outlive_secs: i64,
    /// "Now" in unix seconds; `None` uses the latest time the input mentions.
    pub now_secs: Option<i64>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            outlive_secs: 30,
            now_secs: None,
        }
    }
}

fn source_name(s: Source) -> &'static str {
    match s {
        Source::StatusSeconds => "whole seconds",
        Source::EventClock => "kubelet event clock",
        Source::WatchOrder => "order seen by the controller",
    }
}

fn at(m: &Moment) -> String {
    match m.nanos {
        Some(n) => {
            format!(
                "{}.{:03}",
                rfc3339(m.secs).trim_end_matches('Z'),
                n.rem_euclid(1_000_000_000) / 1_000_000
            ) + "Z"
        }
        None => rfc3339(m.secs),
    }
}

struct Judge<'a> {
    pod: &'a PodFacts,
    tl: &'a Timeline,
    checks: Vec<Check>,
    violations: Vec<Violation>,
    /// Error-severity checks per phase that could not be decided.
    undecided: [usize; 2],
    decided: [usize; 2],
}

impl<'a> Judge<'a> {
    fn name(&self, i: usize) -> &'a str {
        &self.pod.containers[i].name
    }

    fn violate(
        &mut self,
        rule: Rule,
        containers: &[usize],
        message: String,
        evidence: Vec<String>,
    ) {
        let v = Violation {
            rule,
            severity: rule.severity(),
            containers: containers
                .iter()
                .map(|&i| self.name(i).to_string())
                .collect(),
            message,
            evidence,
        };
        if !self.violations.contains(&v) {
            self.violations.push(v);
        }
    }

    fn record(
        &mut self,
        rule: Rule,
        first: usize,
        second: usize,
        outcome: Outcome,
        by: Option<Source>,
    ) {
        let counts = rule.severity() == crate::report::Severity::Error;
        let slot = (rule.phase() == Phase::Shutdown) as usize;
        if counts {
            match outcome {
                Outcome::Indeterminate => self.undecided[slot] += 1,
                _ => self.decided[slot] += 1,
            }
        }
        self.checks.push(Check {
            rule,
            containers: vec![self.name(first).to_string(), self.name(second).to_string()],
            outcome,
            decided_by: by,
        });
    }

    /// Checks that `early` (of container `e`) came before `late` (of `l`).
    /// `early_sure`/`late_sure` say whether each moment is certainly the one
    /// meant (a hidden earlier start can only move a moment earlier).
    #[allow(clippy::too_many_arguments)]
    fn ordered(
        &mut self,
        rule: Rule,
        (e, early, early_sure, early_what): (usize, Moment, bool, &str),
        (l, late, late_sure, late_what): (usize, Moment, bool, &str),
        message: impl FnOnce(&str, &str) -> String,
    ) -> Outcome {
        let (outcome, by) = match before(&late, &early) {
            Before::Yes(s) if early_sure => (Outcome::Violated, Some(s)),
            Before::No(s) if late_sure => (Outcome::Verified, Some(s)),
            _ => (Outcome::Indeterminate, None),
        };
        self.record(rule, e, l, outcome, by);
        if outcome == Outcome::Violated {
            let evidence = vec![
                format!("{} {} at {}", self.name(l), late_what, at(&late)),
                format!("{} {} at {}", self.name(e), early_what, at(&early)),
                format!("decided by {}", by.map_or("?", source_name)),
            ];
            let text = message(self.name(e), self.name(l));
            self.violate(rule, &[e, l], text, evidence);
        }
        outcome
    }

    fn indices(&self, role: Role) -> Vec<usize> {
        (0..self.pod.containers.len())
            .filter(|&i| self.pod.containers[i].role == role)
            .collect()
    }

    fn startup(&mut self) -> Verdict {
        let sidecars = self.indices(Role::Sidecar);
        let apps = self.indices(Role::App);
        let lines = &self.tl.lines;
        let start = |i: usize| lines[i].first_start.map(|m| (m, lines[i].first_start_sure));

        // Sidecars in manifest order, each after the one above it.
        let mut prev: Option<usize> = None;
        for &s in &sidecars {
            if let (Some(p), Some((ms, ss))) = (prev, start(s)) {
                let (mp, sp) = start(p).expect("prev has a start");
                self.ordered(
                    Rule::SidecarStartOrder,
                    (p, mp, sp, "started"),
                    (s, ms, ss, "started"),
                    |p, s| format!("sidecar {s} started before the sidecar above it, {p}"),
                );
            }
            if start(s).is_some() {
                prev = Some(s);
            }
        }

        // Every app container after every sidecar has started.
        for &a in &apps {
            let Some((ma, sa)) = start(a) else { continue };
            for &s in &sidecars {
                let Some((ms, ss)) = start(s) else {
                    self.record(Rule::AppStartedBeforeSidecar, s, a, Outcome::Violated, None);
                    let msg = format!(
                        "app container {} started but sidecar {} never did",
                        self.name(a),
                        self.name(s)
                    );
                    self.violate(
                        Rule::AppStartedBeforeSidecar,
                        &[s, a],
                        msg,
                        vec![format!("{} started at {}", self.name(a), at(&ma))],
                    );
                    continue;
                };
                let outcome = self.ordered(
                    Rule::AppStartedBeforeSidecar,
                    (s, ms, ss, "started"),
                    (a, ma, sa, "started"),
                    |s, a| format!("app container {a} started before sidecar {s}"),
                );
                if outcome != Outcome::Violated {
                    self.startup_probe_gate(s, a, ma, sa);
                }
                self.readiness_gate(s, a, ma);
            }
        }
        let any_app_started = apps.iter().any(|&a| lines[a].first_start.is_some());
        self.verdict(Phase::Startup, any_app_started)
    }

    /// With a startupProbe, the sidecar counts as started only once the probe
    /// stopped failing: the app must start after the last startup failure of
    /// the sidecar's first run.
    fn startup_probe_gate(&mut self, s: usize, a: usize, ma: Moment, sa: bool) {
        let c = &self.pod.containers[s];
        if !c.declares.startup {
            return;
        }
        let Some(tally) = self.tl.lines[s].probe(ProbeKind::Startup).copied() else {
            return;
        };
        let msg = |s: &str, a: &str| {
            format!(
                "app container {a} started while the startup probe of sidecar {s} was still failing"
            )
        };
        if c.restarts == 0 {
            // Every failure belongs to the first run: the last one bounds "started".
            self.ordered(
                Rule::AppStartedBeforeSidecar,
                (s, tally.last, true, "startup probe last failed"),
                (a, ma, sa, "started"),
                msg,
            );
        } else if matches!(before(&ma, &tally.first), Before::Yes(_)) {
            // The first failure is of the first run; later ones may be of restarts.
            self.ordered(
                Rule::AppStartedBeforeSidecar,
                (s, tally.first, true, "startup probe first failed"),
                (a, ma, sa, "started"),
                msg,
            );
        } else if !matches!(before(&tally.last, &ma), Before::Yes(_)) {
            self.record(
                Rule::AppStartedBeforeSidecar,
                s,
                a,
                Outcome::Indeterminate,
                None,
            );
        }
    }

    /// Warning: the sidecar's readiness probe was already failing when the app started.
    fn readiness_gate(&mut self, s: usize, a: usize, ma: Moment) {
        if !self.pod.containers[s].declares.readiness {
            return;
        }
        let Some(tally) = self.tl.lines[s].probe(ProbeKind::Readiness).copied() else {
            return;
        };
        let rule = Rule::AppStartedBeforeSidecarReady;
        // Failing before the app started is not enough: the sidecar may have
        // become ready in between. It was not ready if the probe also still
        // failed at or after the app's start.
        match before(&ma, &tally.first) {
            Before::Yes(by) => self.record(rule, s, a, Outcome::Verified, Some(by)),
            Before::Unknown => self.record(rule, s, a, Outcome::Indeterminate, None),
            Before::No(by_first) => match before(&tally.last, &ma) {
                Before::Yes(_) | Before::Unknown => {
                    self.record(rule, s, a, Outcome::Indeterminate, None)
                }
                Before::No(by_last) => {
                    // The finer of the two sources is the one the verdict needed.
                    self.record(rule, s, a, Outcome::Violated, Some(by_first.max(by_last)));
                    let msg = format!(
                        "app container {} started while sidecar {} was not ready (its readiness probe was failing)",
                        self.name(a),
                        self.name(s)
                    );
                    let ev = vec![
                        format!(
                            "{} readiness probe failed {} times from {} to {}",
                            self.name(s),
                            tally.count,
                            at(&tally.first),
                            at(&tally.last)
                        ),
                        format!("{} started at {}", self.name(a), at(&ma)),
                        format!(
                            "first failure before the start decided by {}; failing until after it decided by {}",
                            source_name(by_first),
                            source_name(by_last)
                        ),
                    ];
                    self.violate(rule, &[s, a], msg, ev);
                }
            },
        }
    }

    fn shutdown(&mut self, cfg: &Config) -> Verdict {
        let pod = self.pod;
        let lines = &self.tl.lines;
        let sidecars = self.indices(Role::Sidecar);
        let apps = self.indices(Role::App);
        let app_done = |a: usize| pod.containers[a].state == StateKind::Terminated;
        let job_done = pod.restart_policy != RestartPolicy::Always
            && !apps.is_empty()
            && apps.iter().all(|&a| app_done(a));
        let shutting = pod.deletion.is_some() || pod.gone || pod.finished_phase || job_done;
        if !shutting {
            return Verdict::Pending;
        }
        let finish = |i: usize| lines[i].finish.as_ref().map(|f| f.at);

        // Sidecars stop after every app container.
        for &s in &sidecars {
            let Some(fs) = finish(s) else { continue };
            for &a in &apps {
                match finish(a) {
                    Some(fa) => {
                        self.ordered(
                            Rule::SidecarStoppedBeforeApp,
                            (a, fa, true, "terminated"),
                            (s, fs, true, "terminated"),
                            |a, s| format!("sidecar {s} terminated before app container {a}"),
                        );
                    }
                    None if pod.containers[a].state == StateKind::Running => {
                        self.record(Rule::SidecarStoppedBeforeApp, a, s, Outcome::Violated, None);
                        let msg = format!(
                            "sidecar {} terminated while app container {} was still running",
                            self.name(s),
                            self.name(a)
                        );
                        self.violate(
                            Rule::SidecarStoppedBeforeApp,
                            &[a, s],
                            msg,
                            vec![format!("{} terminated at {}", self.name(s), at(&fs))],
                        );
                    }
                    None => {}
                }
            }
        }
        // Sidecars stop in reverse manifest order.
        let mut below: Option<usize> = None;
        for &s in sidecars.iter().rev() {
            if let (Some(b), Some(fs)) = (below, finish(s)) {
                let fb = finish(b).expect("below has a finish");
                self.ordered(
                    Rule::SidecarStopOrder,
                    (b, fb, true, "terminated"),
                    (s, fs, true, "terminated"),
                    |b, s| {
                        format!(
                            "sidecar {s} terminated before {b}, which is below it in the manifest"
                        )
                    },
                );
            }
            if finish(s).is_some() {
                below = Some(s);
            }
        }

        // When did shutdown start, and by when must it be over?
        let last_app = apps
            .iter()
            .filter_map(|&a| finish(a))
            .max_by_key(|m| m.sort_key());
        let (deadline, grace) = match pod.deletion {
            Some(d) => (Some(d.deadline_secs), d.grace_secs),
            None => (
                last_app.map(|m| m.secs.saturating_add(pod.grace_secs)),
                pod.grace_secs,
            ),
        };
        for &s in &sidecars {
            let (Some(f), Some(deadline)) = (lines[s].finish.as_ref(), deadline) else {
                continue;
            };
            let force_killed = f.killed() && f.at.secs >= deadline.saturating_sub(1);
            self.record(
                Rule::SidecarForceKilled,
                s,
                s,
                if force_killed {
                    Outcome::Violated
                } else {
                    Outcome::Verified
                },
                Some(Source::StatusSeconds),
            );
            if force_killed {
                let msg = format!(
                    "sidecar {} was killed at the end of the {grace}s grace period; the remaining sidecars were stopped together",
                    self.name(s)
                );
                let ev = vec![
                    format!(
                        "{} terminated at {} with exit code {}",
                        self.name(s),
                        at(&f.at),
                        f.exit_code.unwrap_or(137)
                    ),
                    format!("grace period ended at {}", rfc3339(deadline)),
                ];
                self.violate(Rule::SidecarForceKilled, &[s], msg, ev);
            }
        }

        // Never/OnFailure: sidecars must not outlive the app containers for long.
        if job_done && let Some(last) = last_app {
            let now = cfg.now_secs.unwrap_or(self.tl.latest_secs);
            for &s in &sidecars {
                let end = match finish(s) {
                    Some(f) => f.secs,
                    None if pod.containers[s].state == StateKind::Running => now,
                    None => continue,
                };
                let late = end - last.secs;
                let ok = late <= cfg.outlive_secs;
                self.record(
                    Rule::SidecarOutlivedApp,
                    s,
                    s,
                    if ok {
                        Outcome::Verified
                    } else {
                        Outcome::Violated
                    },
                    Some(Source::StatusSeconds),
                );
                if !ok {
                    // A running sidecar is described at the limit, not at
                    // "now": the report must not change while nothing does.
                    let limit = last.secs.saturating_add(cfg.outlive_secs);
                    let (msg, seen) = if finish(s).is_some() {
                        (
                            format!(
                                "sidecar {} terminated {late}s after every app container had exited (limit {}s)",
                                self.name(s),
                                cfg.outlive_secs
                            ),
                            format!("{} terminated at {}", self.name(s), rfc3339(end)),
                        )
                    } else {
                        (
                            format!(
                                "sidecar {} was still running more than {}s after every app container had exited",
                                self.name(s),
                                cfg.outlive_secs
                            ),
                            format!("{} still running at {}", self.name(s), rfc3339(limit)),
                        )
                    };
                    let ev = vec![format!("last app container exited at {}", at(&last)), seen];
                    self.violate(Rule::SidecarOutlivedApp, &[s], msg, ev);
                }
            }
        }
        let all_stopped = pod
            .containers
            .iter()
            .enumerate()
            .all(|(i, c)| c.role == Role::Init || lines[i].finish.is_some());
        if !all_stopped && !pod.gone {
            return if self.has_error(Phase::Shutdown) {
                Verdict::Violated
            } else {
                Verdict::Pending
            };
        }
        if !all_stopped {
            self.undecided[1] += 1;
        }
        self.verdict(Phase::Shutdown, true)
    }

    fn has_error(&self, phase: Phase) -> bool {
        self.violations
            .iter()
            .any(|v| v.severity == crate::report::Severity::Error && v.rule.phase() == phase)
    }

    fn verdict(&self, phase: Phase, judged: bool) -> Verdict {
        let slot = (phase == Phase::Shutdown) as usize;
        if self.has_error(phase) {
            Verdict::Violated
        } else if !judged {
            Verdict::Pending
        } else if self.undecided[slot] > 0 {
            Verdict::Indeterminate
        } else {
            Verdict::Verified
        }
    }
}

/// Judges a pod from its facts and the facts of its events.
pub fn judge(pod: &PodFacts, events: &[EventFact], cfg: &Config) -> Report {
    let tl = build(pod, events);
    judge_timeline(pod, &tl, cfg)
}

pub fn judge_timeline(pod: &PodFacts, tl: &Timeline, cfg: &Config) -> Report {
    let mut j = Judge {
        pod,
        tl,
        checks: Vec::new(),
        violations: Vec::new(),
        undecided: [0; 2],
        decided: [0; 2],
    };
    let sidecars = pod.sidecar_count() as u32;
    let (startup, shutdown) = if sidecars == 0 || !pod.has_status {
        (Verdict::Pending, Verdict::Pending)
    } else {
        let s = j.startup();
        (s, j.shutdown(cfg))
    };
    let mut gaps = tl.gaps.clone();
    if sidecars == 0 {
        gaps.push("the pod has no native sidecars (initContainers with restartPolicy: Always): nothing to judge".into());
    } else if !pod.has_status {
        gaps.push("the pod has no status yet".into());
    }
    let mut probe_failures = Vec::new();
    for (i, line) in tl.lines.iter().enumerate() {
        for p in &line.probes {
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
        .zip(&tl.lines)
        .map(|(c, line)| {
            let current = c.runs.iter().rev().find(|r| r.current);
            ContainerReport {
                name: c.name.clone(),
                role: c.role,
                index: c.index,
                restarts: c.restarts,
                state: format!("{:?}", c.state),
                ready: c.ready,
                first_started_at: line.first_start.map(|m| at(&m)),
                finished_at: line.finish.as_ref().map(|f| at(&f.at)),
                exit_code: current.and_then(|r| r.exit_code),
                reason: current.and_then(|r| r.reason.clone()),
            }
        })
        .collect();
    let mut violations = j.violations;
    let mut checks = j.checks;
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
    checks.truncate(MAX_ITEMS);
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
