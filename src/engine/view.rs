//! History -> what the rules look at: each container's runs (from statuses
//! and `Started` events) with the generation (pod sandbox) each belongs to,
//! the probe failures attached to the run they happened in, and the pod's
//! termination (when it started, its deadline).
//!
//! Pure and order-free: the same history gives the same view whatever the
//! order in which its events arrived.
//!
//! Generations. A pod's containers all run in one sandbox; when it is
//! re-created (node reboot, runtime restart) every container is killed and
//! the kubelet starts them again, init containers and sidecars first. The
//! boundaries between generations are known from `SandboxChanged` events and
//! plain init containers that ran again
//! after an app had started. (Restart counts going down are no boundary: a
//! restarted sidecar's count briefly reads 0 inside a running sandbox.) Boundaries
//! can be missing (expired events, older kubelets), so a rule never decides a
//! violation from generation numbers alone: two runs are certainly of one
//! sandbox only when one was still running when the other started.

use crate::engine::history::History;
use crate::model::{EventReason, PodFacts, ProbeKind, RestartPolicy, Role, StateKind};
use crate::time::{Before, Moment, before};
use std::collections::BTreeMap;

/// One probe failure (one occurrence of an `Unhealthy` event).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Failure {
    pub kind: ProbeKind,
    pub at: Moment,
}

/// Failures of one probe kind of one container, over the pod's life (for
/// the report's counts; rules use the failures attached to runs).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ProbeTally {
    pub kind: ProbeKind,
    pub count: u32,
    pub first: Moment,
    pub last: Moment,
}

/// One run of a container.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RunView {
    pub start: Option<Moment>,
    /// When it ended; `None` while running or when not known.
    pub end: Option<Moment>,
    /// The status's current run and it is running now.
    pub running: bool,
    pub exit_code: Option<i32>,
    pub signal: Option<i32>,
    pub reason: Option<String>,
    /// Known only from a `Started` event: its end is unknown.
    pub from_event: bool,
    /// A `Started` event reported this run, so the kubelet's events about it
    /// (probe failures, hooks) were available too.
    pub evented: bool,
    /// Certainly the container's first run in its sandbox.
    pub first_in_sandbox: bool,
    /// Index of its generation (number of known sandbox re-creations before
    /// it); `None` when its start is unknown.
    pub generation: Option<usize>,
    /// Probe failures that certainly happened during this run.
    pub failures: Vec<Failure>,
}

impl RunView {
    pub fn killed(&self) -> bool {
        self.exit_code == Some(137) || self.signal == Some(9)
    }

    /// Was this run going on at `t`? `None` when the input cannot tell.
    pub fn alive_at(&self, t: &Moment) -> Option<bool> {
        let start = self.start?;
        match before(&start, t) {
            Before::Yes(_) => {}
            Before::No(_) => return Some(false),
            Before::Unknown => return None,
        }
        if self.running {
            return Some(true);
        }
        match self.end.map(|e| before(t, &e)) {
            Some(Before::Yes(_)) => Some(true),
            Some(Before::No(_)) => Some(false),
            _ => None,
        }
    }

    /// The latest failure of `kind` during this run.
    pub fn last_failure(&self, kind: ProbeKind) -> Option<Moment> {
        self.failures
            .iter()
            .filter(|f| f.kind == kind)
            .map(|f| f.at)
            .max_by_key(|m| m.sort_key())
    }
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Line {
    /// Every known run, oldest first.
    pub runs: Vec<RunView>,
    pub probes: Vec<ProbeTally>,
    /// Failures that could not be placed in one run: counted, never used as
    /// evidence of order.
    pub loose: Vec<Failure>,
    /// Aggregated failure events with occurrences between their first and
    /// last whose times are unknown: (kind, first, last).
    pub spans: Vec<(ProbeKind, Moment, Moment)>,
    /// Occurrences of each event reason (probe failures are in `probes`).
    pub events: BTreeMap<EventReason, u32>,
    /// Known `Killing` occurrences: the kubelet stopping a running container.
    pub killings: Vec<Moment>,
    /// Earlier runs exist that neither the statuses nor the events show (its
    /// first run in a sandbox may be one of them).
    pub hidden_runs: bool,
}

impl Line {
    pub fn probe(&self, kind: ProbeKind) -> Option<&ProbeTally> {
        self.probes.iter().find(|p| p.kind == kind)
    }

    /// The run the status calls current, when it has ended.
    pub fn final_end(&self) -> Option<&RunView> {
        self.runs
            .iter()
            .rev()
            .find(|r| !r.from_event && r.end.is_some() && !r.running)
    }

    pub fn earliest_start(&self) -> Option<Moment> {
        self.runs
            .iter()
            .filter_map(|r| r.start)
            .min_by_key(|m| m.sort_key())
    }
}

/// How the pod is being stopped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Termination {
    /// When the kubelet began to stop containers (deletion time, or the exit
    /// of the last app container of a Never/OnFailure pod).
    pub start: Moment,
    /// When the grace period ends.
    pub deadline: Moment,
    pub grace_secs: i64,
    /// Started because every app container of a Never/OnFailure pod finished.
    pub job: bool,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct View<'a> {
    pub pod: &'a PodFacts,
    pub lines: Vec<Line>,
    /// Known starts of generations after the first, sorted.
    pub boundaries: Vec<Moment>,
    /// Every generation boundary is known (events complete): runs of one
    /// generation number are of one sandbox.
    pub gens_trusted: bool,
    pub exceeded_grace_period: bool,
    pub events_used: usize,
    /// The latest node time the input mentions (a lower bound of "now").
    pub latest_secs: i64,
    pub termination: Option<Termination>,
    /// What the input could not show, in words.
    pub gaps: Vec<String>,
}

impl View<'_> {
    /// Runs of container `i` that were going on when the termination began:
    /// alive at its start, or the last run of a container the kubelet sent a
    /// `Killing` for at or after it (the kubelet kills only what runs).
    pub fn running_at_termination(&self, i: usize) -> Vec<&RunView> {
        let Some(term) = self.termination else {
            return Vec::new();
        };
        let line = &self.lines[i];
        let last = line.runs.iter().rposition(|r| !r.from_event);
        line.runs
            .iter()
            .enumerate()
            .filter(|(k, r)| {
                !r.from_event
                    && (r.alive_at(&term.start) == Some(true)
                        || (Some(*k) == last
                            && line.killings.iter().any(|m| {
                                !matches!(before(m, &term.start), Before::Yes(_))
                                    && r.alive_at(m) != Some(false)
                            })))
            })
            .map(|(_, r)| r)
            .collect()
    }

    pub fn indices(&self, role: Role) -> Vec<usize> {
        (0..self.pod.containers.len())
            .filter(|&i| self.pod.containers[i].role == role)
            .collect()
    }

    pub fn name(&self, i: usize) -> &str {
        &self.pod.containers[i].name
    }

    /// No container is running any more.
    pub fn all_stopped(&self) -> bool {
        self.pod
            .containers
            .iter()
            .all(|c| c.role == Role::Init || c.state != StateKind::Running)
    }
}

/// Generation of a moment: how many boundaries came at or before it. A start
/// in the same second as a boundary belongs after it (the new sandbox's
/// containers start after it is ready; the old ones started before it died).
fn generation(boundaries: &[Moment], start: &Moment) -> usize {
    boundaries
        .iter()
        .filter(|b| match (b.secs == start.secs, b.nanos(), start.nanos()) {
            (true, Some(x), Some(y)) => x <= y,
            (true, _, _) => true,
            (false, _, _) => b.secs < start.secs,
        })
        .count()
}

/// Attaches an event's nanoseconds to a status moment of the same second.
fn refine(status: Moment, ev: &Moment) -> Moment {
    if ev.nanos().is_some() && (ev.secs - status.secs).abs() <= 1 && status.nanos().is_none() {
        let mut m = status;
        m.set_nanos(ev.nanos());
        m
    } else {
        status
    }
}

/// The event's occurrences whose times are known: the first, and the last
/// when there were more.
fn occurrences(e: &crate::model::EventFact) -> Vec<Moment> {
    if e.count > 1 && e.last != e.first {
        vec![e.first, e.last]
    } else {
        vec![e.first]
    }
}

pub fn build(h: &History) -> View<'_> {
    let pod = &h.pod;
    let n = pod.containers.len();
    let mut lines: Vec<Line> = vec![Line::default(); n];
    let mut gaps = Vec::new();
    let mut latest = pod.latest_secs;
    let mut exceeded = false;
    let mut boundaries: Vec<Moment> = Vec::new();
    let mut gens_trusted = !h.events_dropped;
    let mut started: Vec<Vec<Moment>> = vec![Vec::new(); n];
    let mut started_count = vec![0u64; n];
    let mut failures: Vec<(usize, Failure)> = Vec::new();

    // Events in a fixed order: the view must not depend on arrival order.
    let mut events: Vec<&crate::model::EventFact> = h.events.iter().collect();
    events.sort_by(|a, b| a.key.cmp(&b.key));
    for e in &events {
        latest = latest.max(e.last.secs);
        match (e.container.map(usize::from), e.reason) {
            (None, EventReason::ExceededGracePeriod) => exceeded = true,
            (None, EventReason::SandboxChanged) => {
                boundaries.extend(occurrences(e));
                gens_trusted &= e.count <= 2;
            }
            (None, _) => {}
            (Some(i), EventReason::Unhealthy) => {
                let kind = e.probe.unwrap_or(ProbeKind::Unknown);
                let line = &mut lines[i];
                line.spans
                    .sort_by_key(|(k, f, l)| (*k, f.sort_key(), l.sort_key()));
                match line.probes.iter_mut().find(|p| p.kind == kind) {
                    Some(p) => {
                        p.count = p.count.saturating_add(e.count);
                        if e.first.sort_key() < p.first.sort_key() {
                            p.first = e.first;
                        }
                        if e.last.sort_key() > p.last.sort_key() {
                            p.last = e.last;
                        }
                    }
                    None => line.probes.push(ProbeTally {
                        kind,
                        count: e.count,
                        first: e.first,
                        last: e.last,
                    }),
                }
                for at in occurrences(e) {
                    failures.push((i, Failure { kind, at }));
                }
                if e.count > 2 {
                    line.spans.push((kind, e.first, e.last));
                }
            }
            (Some(i), reason) => {
                let c = lines[i].events.entry(reason).or_default();
                *c = c.saturating_add(e.count);
                if reason == EventReason::Started {
                    started[i].extend(occurrences(e));
                    started_count[i] += u64::from(e.count);
                }
                if reason == EventReason::Killing {
                    lines[i].killings.extend(occurrences(e));
                }
            }
        }
    }
    // The PodReadyToStartContainers condition is no boundary: seen live
    // (e2e t13), the status that briefly shows a restarted sidecar with
    // restart count 0 carries conditions rebuilt as well.

    // Runs: the statuses' runs, refined by Started events of the same
    // second; Started events that match no status run are runs of their own.
    let mut unseen = Vec::new();
    for (i, c) in pod.containers.iter().enumerate() {
        let mut runs: Vec<RunView> = Vec::with_capacity(c.runs.len());
        let mut used = vec![false; started[i].len()];
        for r in &c.runs {
            let mut start = r.started;
            let mut evented = false;
            if let Some(s) = start
                && let Some(k) = (0..started[i].len())
                    .find(|&k| !used[k] && (started[i][k].secs - s.secs).abs() <= 1)
            {
                used[k] = true;
                evented = true;
                start = Some(refine(s, &started[i][k]));
            }
            runs.push(RunView {
                start,
                end: r.finished,
                running: r.current && c.state == StateKind::Running,
                exit_code: r.exit_code,
                signal: r.signal,
                reason: r.reason.as_deref().map(Into::into),
                from_event: false,
                evented,
                first_in_sandbox: false,
                generation: None,
                failures: Vec::new(),
            });
        }
        for (k, m) in started[i].iter().enumerate() {
            if !used[k] {
                runs.push(RunView {
                    start: Some(*m),
                    end: None,
                    running: false,
                    exit_code: None,
                    signal: None,
                    reason: None,
                    from_event: true,
                    evented: true,
                    first_in_sandbox: false,
                    generation: None,
                    failures: Vec::new(),
                });
            }
        }
        runs.sort_by_key(|r| r.start.map_or((i64::MAX, 0), |m| m.sort_key()));
        if started[i].is_empty() && c.runs.iter().any(|r| r.started.is_some()) {
            unseen.push(c.name.as_str());
            gens_trusted = false;
        }
        lines[i].runs = runs;
    }

    // Plain init containers run once per sandbox: one that started after an
    // app container did began a new generation.
    let app_starts: Vec<Moment> = pod
        .containers
        .iter()
        .zip(&lines)
        .filter(|(c, _)| c.role == Role::App)
        .flat_map(|(_, l)| l.runs.iter().filter_map(|r| r.start))
        .collect();
    for (c, line) in pod.containers.iter().zip(&lines) {
        if c.role != Role::Init {
            continue;
        }
        for s in line.runs.iter().filter_map(|r| r.start) {
            if app_starts
                .iter()
                .any(|a| matches!(before(a, &s), Before::Yes(_)))
            {
                boundaries.push(s);
            }
        }
    }
    boundaries.sort_by_key(|m| m.sort_key());
    boundaries.dedup_by(|a, b| a.secs == b.secs);

    for (i, c) in pod.containers.iter().enumerate() {
        // The status shows every run since its restart count began (the
        // pod's start, or a reset at a sandbox re-creation).
        let status_runs = c
            .runs
            .iter()
            .filter(|r| r.in_status && r.started.is_some())
            .count() as u64;
        let complete = status_runs > u64::from(c.restarts);
        let line = &mut lines[i];
        // A run is its sandbox's first when the status covers every run
        // since its restart count began, no earlier run is known in its
        // generation, and a Started event reported it. A restart
        // count can restart at 0 without a new sandbox (seen live: a
        // restarted sidecar briefly reported with restart count 0 and no
        // lastState), so the restart count alone proves nothing, and an
        // earlier run the history or the events know of counts unless a
        // known boundary separates them.
        // `None`: no earlier run; `Some(None)`: one of unknown generation.
        let mut before_gen: Option<Option<usize>> = None;
        for k in 0..line.runs.len() {
            let g = line.runs[k].start.map(|s| generation(&boundaries, &s));
            line.runs[k].generation = g;
            let status_run = !line.runs[k].from_event
                && c.runs.iter().any(|r| {
                    r.in_status && r.started.map(|m| m.secs) == line.runs[k].start.map(|m| m.secs)
                });
            if status_run && line.runs[k].start.is_some() {
                // Positive evidence that nothing ran before it: a Started
                // event reported it and no earlier start is known. (Seeing
                // the container without any run before is none: a quick
                // first run can fall between two statuses the controller
                // sees, and the restarted run then reads restart count 0.)
                line.runs[k].first_in_sandbox = complete
                    && line.runs[k].evented
                    && match (before_gen, g) {
                        (None, _) => true,
                        (Some(Some(p)), Some(g)) => p < g,
                        _ => false,
                    };
            }
            if line.runs[k].start.is_some() {
                before_gen = Some(match (before_gen, g) {
                    (Some(None), _) | (_, None) => None,
                    (Some(Some(p)), Some(g)) => Some(p.max(g)),
                    (None, Some(g)) => Some(g),
                });
            }
        }
    }

    // Each failure goes to the one run it certainly happened in.
    for (i, f) in failures {
        let runs = &lines[i].runs;
        let inside: Vec<usize> = (0..runs.len())
            .filter(|&k| !runs[k].from_event && runs[k].alive_at(&f.at) == Some(true))
            .collect();
        let maybe = (0..runs.len())
            .filter(|&k| runs[k].alive_at(&f.at) != Some(false))
            .count();
        if inside.len() == 1 && maybe == 1 {
            lines[i].runs[inside[0]].failures.push(f);
        } else {
            lines[i].loose.push(f);
        }
    }

    if !unseen.is_empty() {
        // A late start of the controller, or saved output without events: the
        // kubelet's events (probe failures, kills) from before are not known.
        gaps.push(format!(
            "no Started event for {}: events expired (the API server keeps them 1 h by default) or were not given; probe failures and kills before are not counted",
            unseen.join(", ")
        ));
    }
    for (c, line) in pod.containers.iter().zip(lines.iter_mut()) {
        let known = line.runs.iter().filter(|r| !r.from_event).count() as u64;
        line.hidden_runs = u64::from(c.restarts) + 1 > known.max(started_count_of(line))
            && line.runs.iter().any(|r| r.start.is_some());
        if c.role != Role::Init && line.hidden_runs {
            gaps.push(format!(
                "first runs of {} not seen ({} restarts; older events expired)",
                c.name, c.restarts
            ));
        }
    }
    if h.events_dropped {
        gaps.push(format!(
            "more than {} event objects; later ones ignored",
            crate::engine::history::MAX_EVENTS
        ));
    }
    let termination = termination(pod, &lines);
    View {
        pod,
        lines,
        boundaries,
        gens_trusted,
        exceeded_grace_period: exceeded,
        events_used: h.events.len(),
        latest_secs: latest,
        termination,
        gaps,
    }
}

fn started_count_of(line: &Line) -> u64 {
    u64::from(
        line.events
            .get(&EventReason::Started)
            .copied()
            .unwrap_or_default(),
    )
}

/// When the pod's containers began to be stopped, and the grace deadline.
fn termination(pod: &PodFacts, lines: &[Line]) -> Option<Termination> {
    let apps: Vec<usize> = (0..pod.containers.len())
        .filter(|&i| pod.containers[i].role == Role::App)
        .collect();
    if let Some(d) = pod.deletion {
        // Once every container stopped, the kubelet deletes the pod for good
        // with a grace of 0, which rewrites the deletion fields. Offline, the
        // shutdown's start is then the kubelet's first `Killing`, and its
        // grace the spec's (the controller keeps the earlier fields instead).
        let stopped = pod
            .containers
            .iter()
            .all(|c| c.role == Role::Init || c.state != StateKind::Running);
        let first_kill = lines
            .iter()
            .flat_map(|l| l.killings.iter().copied())
            .min_by_key(|m| m.sort_key());
        if d.grace_secs == 0
            && pod.grace_secs > 0
            && stopped
            && let Some(k) = first_kill
        {
            let mut deadline = k;
            deadline.secs = k.secs.saturating_add(pod.grace_secs);
            deadline.set_nanos(
                k.nanos()
                    .map(|n| n.saturating_add(pod.grace_secs.saturating_mul(1_000_000_000))),
            );
            return Some(Termination {
                start: k,
                deadline,
                grace_secs: pod.grace_secs,
                job: false,
            });
        }
        return Some(Termination {
            start: Moment::status(d.deadline_secs.saturating_sub(d.grace_secs)),
            deadline: Moment::status(d.deadline_secs),
            grace_secs: d.grace_secs,
            job: false,
        });
    }
    // Never/OnFailure: the kubelet stops the sidecars once every app
    // container has finished for good (OnFailure retries a failed one).
    let finished = |i: usize| {
        let c = &pod.containers[i];
        c.state == StateKind::Terminated
            && match pod.restart_policy {
                RestartPolicy::Always => false,
                RestartPolicy::Never => true,
                RestartPolicy::OnFailure => c
                    .runs
                    .iter()
                    .rev()
                    .find(|r| r.current)
                    .is_some_and(|r| r.exit_code == Some(0)),
            }
    };
    let job = !apps.is_empty() && apps.iter().all(|&a| finished(a));
    if !job && !pod.finished_phase && !pod.gone {
        return None;
    }
    let last_app = apps
        .iter()
        .filter_map(|&a| lines[a].final_end().and_then(|r| r.end))
        .max_by_key(|m| m.sort_key())?;
    Some(Termination {
        start: last_app,
        deadline: Moment::status(last_app.secs.saturating_add(pod.grace_secs)),
        grace_secs: pod.grace_secs,
        job,
    })
}
