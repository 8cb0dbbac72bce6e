//! The rule table. Each rule lives in its own module: its id and severity
//! (in `RuleDef`), the phase it judges, when it applies, its check, the
//! paragraph the README shows, and its unit tests. `judge` runs them in
//! table order over a `View` of the pod's history.
//!
//! A rule records one `Check` per thing it judged, with the outcome
//! (`Verified`, `Violated`, `Indeterminate`, or `NotApplicable` and why),
//! and a `Violation` with evidence for each broken promise. No rule decides
//! a violation without positive evidence; what the input cannot show is
//! `Indeterminate`.

use crate::engine::view::{RunView, View};
use crate::judge::Config;
use crate::report::{Check, Outcome, Phase, Rule, Severity, Violation};
use crate::time::{Moment, Source, rfc3339};

pub mod app_started_before_sidecar;
pub mod app_started_before_sidecar_ready;
pub mod sidecar_force_killed;
pub mod sidecar_outlived_app;
pub mod sidecar_start_order;
pub mod sidecar_stop_order;
pub mod sidecar_stopped_before_app;
mod start;

/// What a rule is.
pub struct RuleDef {
    pub rule: Rule,
    pub severity: Severity,
    pub phase: Phase,
    /// The promise it checks and when it applies, as the README states it.
    pub doc: &'static str,
    /// The first kubelet version that keeps the promise (one entry of
    /// `kubelet::promises`): on an older kubelet its checks are NotApplicable.
    pub since: crate::kubelet::Since,
    pub check: fn(&mut Ctx),
}

/// Every rule, in the order the judge runs them.
pub const TABLE: [&RuleDef; 7] = [
    &sidecar_start_order::DEF,
    &app_started_before_sidecar::DEF,
    &app_started_before_sidecar_ready::DEF,
    &sidecar_stopped_before_app::DEF,
    &sidecar_stop_order::DEF,
    &sidecar_force_killed::DEF,
    &sidecar_outlived_app::DEF,
];

pub fn def(rule: Rule) -> &'static RuleDef {
    TABLE
        .iter()
        .find(|d| d.rule == rule)
        .expect("every rule is in the table")
}

/// The README's rule table, generated from the definitions.
pub fn markdown_table() -> String {
    let mut s = String::from(
        "| rule | severity | phase | promise and when it applies |\n| --- | --- | --- | --- |\n",
    );
    for d in TABLE {
        s.push_str(&format!(
            "| `{}` | {:?} | {:?} | {} |\n",
            d.rule.id(),
            d.severity,
            d.phase,
            d.doc
        ));
    }
    s
}

/// The README's table of promises by kubelet version, generated from the
/// definitions.
pub fn versions_table() -> String {
    let mut s = String::from(
        "| rule | promised from kubelet | what | evidence |\n| --- | --- | --- | --- |\n",
    );
    for d in TABLE {
        let v = d.since.version;
        s.push_str(&format!(
            "| `{}` | {}.{} | {} | {} |\n",
            d.rule.id(),
            v.major,
            v.minor,
            d.since.promise,
            d.since.source
        ));
    }
    s
}

/// What the rules share while judging one pod.
pub struct Ctx<'a> {
    pub v: &'a View<'a>,
    pub cfg: &'a Config,
    pub checks: Vec<Check>,
    pub violations: Vec<Violation>,
}

/// A moment as evidence: RFC 3339, with milliseconds when the kubelet's
/// event clock gave them.
pub fn at(m: &Moment) -> String {
    match m.nanos() {
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

pub fn source_name(s: Source) -> &'static str {
    match s {
        Source::StatusSeconds => "whole seconds",
        Source::EventClock => "kubelet event clock",
        Source::WatchOrder => "order seen by the controller",
    }
}

/// One judged thing, before it becomes a `Check`.
pub struct Decision {
    pub outcome: Outcome,
    pub by: Option<Source>,
    pub why: Option<String>,
}

impl Decision {
    pub fn new(outcome: Outcome, by: Option<Source>) -> Decision {
        Decision {
            outcome,
            by,
            why: None,
        }
    }

    pub fn not_applicable(why: impl Into<String>) -> Decision {
        Decision {
            outcome: Outcome::NotApplicable,
            by: None,
            why: Some(why.into()),
        }
    }

    pub fn indeterminate(why: impl Into<String>) -> Decision {
        Decision {
            outcome: Outcome::Indeterminate,
            by: None,
            why: Some(why.into()),
        }
    }
}

impl<'a> Ctx<'a> {
    pub fn name(&self, i: usize) -> &'a str {
        &self.v.pod.containers[i].name
    }

    /// Records a check of `rule` between containers (the one expected first
    /// first), about the moment `when`.
    pub fn record(
        &mut self,
        rule: Rule,
        containers: &[usize],
        when: Option<&Moment>,
        d: &Decision,
    ) {
        self.checks.push(Check {
            rule,
            containers: containers
                .iter()
                .map(|&i| self.name(i).to_string())
                .collect(),
            outcome: d.outcome,
            decided_by: d.by,
            at: when.map(at),
            why: d.why.clone(),
        });
    }

    pub fn violate(
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
        if !self
            .violations
            .iter()
            .any(|o| o.rule == v.rule && o.containers == v.containers)
        {
            self.violations.push(v);
        }
    }
}

/// The shutdown comparison both stop rules make: `late` must end after
/// `early`. A violation (with both ends as evidence) when it ended first;
/// Indeterminate when no source orders the two ends.
pub fn ends_in_order(
    cx: &mut Ctx,
    rule: Rule,
    (early, early_end): (usize, Moment),
    (late, late_end): (usize, Moment),
    message: impl FnOnce(&str, &str) -> String,
) -> Decision {
    match crate::time::before(&late_end, &early_end) {
        crate::time::Before::Yes(by) => {
            let ev = vec![
                format!("{} terminated at {}", cx.name(late), at(&late_end)),
                format!("{} terminated at {}", cx.name(early), at(&early_end)),
                format!("decided by {}", source_name(by)),
            ];
            let msg = message(cx.name(early), cx.name(late));
            cx.violate(rule, &[early, late], msg, ev);
            Decision::new(Outcome::Violated, Some(by))
        }
        crate::time::Before::No(by) => Decision::new(Outcome::Verified, Some(by)),
        crate::time::Before::Unknown => Decision::indeterminate(
            "both ended within the same second and no finer source orders them",
        ),
    }
}

/// The runs of a container that have a start, in order.
pub fn started_runs<'v>(v: &'v View, i: usize) -> impl Iterator<Item = &'v RunView> {
    v.lines[i].runs.iter().filter(|r| r.start.is_some())
}

#[cfg(test)]
pub(crate) mod test_support {
    //! Small pods for the rules' unit tests, built from facts directly.
    use crate::engine::history::History;
    use crate::judge::{Config, judge_history};
    use crate::model::*;
    use crate::report::Report;
    use crate::time::Moment;

    pub const T: i64 = 1_752_451_200;

    pub fn run(start: i64, end: Option<i64>) -> Run {
        Run {
            started: Some(Moment::status(T + start)),
            finished: end.map(|e| Moment::status(T + e)),
            exit_code: end.map(|_| 0),
            signal: None,
            reason: None,
            current: false,
            in_status: true,
            container: None,
        }
    }

    pub fn container(
        name: &str,
        role: Role,
        index: u16,
        restarts: u32,
        mut runs: Vec<Run>,
    ) -> ContainerFacts {
        let state = match runs.last() {
            None => StateKind::Waiting,
            Some(r) if r.finished.is_some() => StateKind::Terminated,
            Some(_) => StateKind::Running,
        };
        if let Some(r) = runs.last_mut() {
            r.current = true;
        }
        ContainerFacts {
            name: name.into(),
            role,
            index,
            declares: Declares::default(),
            state,
            restarts,
            started: None,
            ready: false,
            runs,
        }
    }

    pub fn pod(containers: Vec<ContainerFacts>) -> PodFacts {
        PodFacts {
            namespace: "ns".into(),
            name: "p".into(),
            uid: "u".into(),
            restart_policy: RestartPolicy::Always,
            grace_secs: 30,
            deletion: None,
            finished_phase: false,
            gone: false,
            has_status: true,
            sandbox_ready: None,
            containers,
            latest_secs: T,
        }
    }

    pub fn judged(p: PodFacts, events: &[EventFact]) -> Report {
        judge_history(&History::of(p, events), &Config::default(), None)
    }

    /// Judged on a node whose kubelet reports `version`.
    pub fn judged_on(p: PodFacts, events: &[EventFact], version: &str) -> Report {
        let mut h = History::of(p, events);
        h.kubelet = Some(crate::kubelet::KubeletVersion::parse(version).expect("a version"));
        judge_history(&h, &Config::default(), None)
    }

    /// The rule's checks are one NotApplicable naming the kubelet's
    /// version, and it reports no violation.
    pub fn not_applicable_before_its_version(r: &Report, rule: crate::report::Rule) {
        use crate::report::Outcome;
        assert!(r.violations.iter().all(|v| v.rule != rule), "{r:#?}");
        let checks: Vec<_> = r.checks.iter().filter(|c| c.rule == rule).collect();
        assert_eq!(checks.len(), 1, "{r:#?}");
        assert_eq!(checks[0].outcome, Outcome::NotApplicable);
        let why = checks[0].why.as_deref().unwrap_or_default();
        assert!(
            why.contains("is promised from kubelet") && why.contains("this node runs v"),
            "{why}"
        );
    }

    pub fn event(
        key: &str,
        container: Option<usize>,
        reason: EventReason,
        probe: Option<ProbeKind>,
        first: i64,
        last: i64,
        count: u32,
    ) -> EventFact {
        EventFact {
            key: key.into(),
            container: container.map(|i| i as u16),
            reason,
            probe,
            count,
            first: Moment::event(T + first, None),
            last: Moment::event(T + last, None),
        }
    }
}

#[cfg(test)]
mod readme {
    /// A generated section of the README, between `<!-- NAME:begin -->` and
    /// `<!-- NAME:end -->`: `UPDATE_README=1 cargo test --lib readme`
    /// rewrites it.
    fn generated(name: &str, table: String) {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md");
        let text = std::fs::read_to_string(&path).unwrap();
        let (begin, end) = (
            format!("<!-- {name}:begin -->\n"),
            format!("<!-- {name}:end -->"),
        );
        let a = text
            .find(&begin)
            .unwrap_or_else(|| panic!("README has the {name}:begin marker"))
            + begin.len();
        let b = text
            .find(&end)
            .unwrap_or_else(|| panic!("README has the {name}:end marker"));
        if std::env::var_os("UPDATE_README").is_some() {
            std::fs::write(&path, format!("{}{}{}", &text[..a], table, &text[b..])).unwrap();
        } else {
            assert_eq!(
                &text[a..b],
                table,
                "README {name} table is stale: UPDATE_README=1 cargo test --lib readme"
            );
        }
    }

    /// One test, so that `UPDATE_README=1` rewrites the file once at a time.
    #[test]
    fn readme_tables_are_generated_from_the_code() {
        generated("rules", super::markdown_table());
        generated("kubelet-versions", super::versions_table());
        generated("kubelet-bugs", crate::kubelet::bug_table());
    }
}
