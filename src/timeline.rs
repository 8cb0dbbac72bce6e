//! Facts -> one timeline per container: first start, final stop, probe
//! failures, and the kubelet events that matter. Pure and order-free: the
//! same pod and the same set of events give the same timeline whatever the
//! order in which the events came, and a repeated event changes nothing.

use crate::model::{EventFact, EventReason, PodFacts, ProbeKind, StateKind};
use crate::time::Moment;
use std::collections::BTreeMap;

/// Failures of one probe kind of one container.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ProbeTally {
    pub kind: ProbeKind,
    pub count: u32,
    pub first: Moment,
    pub last: Moment,
}

/// The end of a container's current run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Finish {
    pub at: Moment,
    pub exit_code: Option<i32>,
    pub signal: Option<i32>,
}

impl Finish {
    pub fn killed(&self) -> bool {
        self.exit_code == Some(137) || self.signal == Some(9)
    }
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ContainerLine {
    /// The earliest start known.
    pub first_start: Option<Moment>,
    /// Whether `first_start` is certainly the container's first start (false
    /// when restarts hide it and no event told it).
    pub first_start_sure: bool,
    /// The end of the current run, when the container is terminated now.
    pub finish: Option<Finish>,
    /// Occurrences of each tracked event reason (probe failures are in `probes`).
    pub events: BTreeMap<EventReason, u32>,
    pub probes: Vec<ProbeTally>,
}

impl ContainerLine {
    pub fn probe(&self, kind: ProbeKind) -> Option<&ProbeTally> {
        self.probes.iter().find(|p| p.kind == kind)
    }
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Timeline {
    /// Same order as `PodFacts::containers`.
    pub lines: Vec<ContainerLine>,
    /// Distinct event objects used.
    pub events_used: usize,
    pub exceeded_grace_period: bool,
    /// The latest moment the input mentions (a lower bound of "now").
    pub latest_secs: i64,
    /// What the input could not show, in words.
    pub gaps: Vec<String>,
}

/// Orders two versions of the same event object: the later update wins.
fn newer(a: &EventFact, b: &EventFact) -> bool {
    // A total order over every field, so a tie never depends on arrival order.
    let m = |m: &Moment| (m.secs, m.nanos, m.seen, m.secs_from);
    let key = |e: &EventFact| {
        (
            e.count,
            m(&e.last),
            m(&e.first),
            e.reason,
            e.container,
            e.probe,
        )
    };
    key(a) > key(b)
}

/// Deduplicates events by object name, keeping each object's newest version.
pub fn dedup(events: &[EventFact]) -> Vec<&EventFact> {
    let mut by_key: BTreeMap<&str, &EventFact> = BTreeMap::new();
    for e in events {
        by_key
            .entry(e.key.as_str())
            .and_modify(|cur| {
                if newer(e, cur) {
                    *cur = e;
                }
            })
            .or_insert(e);
    }
    by_key.into_values().collect()
}

/// Attaches an event's nanoseconds to a status moment of the same second.
fn refine(status: Moment, ev: Option<Moment>) -> Moment {
    match ev {
        Some(e)
            if e.nanos.is_some() && (e.secs - status.secs).abs() <= 1 && status.nanos.is_none() =>
        {
            Moment {
                nanos: e.nanos,
                ..status
            }
        }
        _ => status,
    }
}

pub fn build(pod: &PodFacts, events: &[EventFact]) -> Timeline {
    let events = dedup(events);
    let mut tl = Timeline {
        lines: vec![ContainerLine::default(); pod.containers.len()],
        events_used: events.len(),
        latest_secs: pod.latest_secs,
        ..Default::default()
    };
    // First occurrence and count of `Started` per container.
    let mut started_ev: Vec<Option<(Moment, u32)>> = vec![None; pod.containers.len()];
    for e in &events {
        tl.latest_secs = tl.latest_secs.max(e.last.secs);
        let Some(i) = e.container else {
            tl.exceeded_grace_period |= e.reason == EventReason::ExceededGracePeriod;
            continue;
        };
        let line = &mut tl.lines[i];
        match (e.reason, e.probe) {
            (EventReason::Unhealthy, Some(kind)) => {
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
            }
            (reason, _) => {
                let n = line.events.entry(reason).or_default();
                *n = n.saturating_add(e.count);
                if reason == EventReason::Started {
                    let slot = &mut started_ev[i];
                    match slot {
                        Some((m, n)) => {
                            *n = n.saturating_add(e.count);
                            if e.first.sort_key() < m.sort_key() {
                                *m = e.first;
                            }
                        }
                        None => *slot = Some((e.first, e.count)),
                    }
                }
            }
        }
    }
    let mut unseen = Vec::new();
    for (i, c) in pod.containers.iter().enumerate() {
        let line = &mut tl.lines[i];
        line.probes.sort_by_key(|p| p.kind);
        if started_ev[i].is_none() && c.runs.iter().any(|r| r.started.is_some()) {
            unseen.push(c.name.as_str());
        }
        let status_first = c.runs.iter().find_map(|r| r.started);
        let ev = started_ev[i];
        line.first_start = match (status_first, ev) {
            (Some(s), Some((e, _))) if e.secs + 1 < s.secs => Some(e),
            (Some(s), ev) => Some(refine(s, ev.map(|(m, _)| m))),
            (None, Some((e, _))) => Some(e),
            (None, None) => None,
        };
        // Runs the status shows: one per entry; the first start is certain when
        // they cover every restart, or when the Started event counted them all.
        let runs_seen = c.runs.iter().filter(|r| r.started.is_some()).count() as u64;
        let starts_needed = u64::from(c.restarts) + 1;
        line.first_start_sure = line.first_start.is_some()
            && (runs_seen >= starts_needed
                || ev.is_some_and(|(_, n)| u64::from(n) >= starts_needed));
        if line.first_start.is_some() && !line.first_start_sure {
            tl.gaps.push(format!(
                "first start of {} not seen ({} restarts; older events expired)",
                c.name, c.restarts
            ));
        }
        if c.state == StateKind::Terminated {
            line.finish = c.runs.iter().rev().find(|r| r.current).and_then(|r| {
                r.finished.map(|at| Finish {
                    at,
                    exit_code: r.exit_code,
                    signal: r.signal,
                })
            });
        }
    }
    if !unseen.is_empty() {
        // A late start of the controller, or saved output without events: the
        // kubelet's events (probe failures, kills) from before are not known.
        tl.gaps.push(format!(
            "no Started event for {}: events expired (the API server keeps them 1 h by default) or were not given; probe failures and kills before are not counted",
            unseen.join(", ")
        ));
    }
    tl
}
