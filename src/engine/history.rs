//! One pod's history: every observation of the pod and of its kubelet events,
//! merged into one value that the rules judge.
//!
//! `analyze` builds it from what it is given (one pod version, or several in
//! watch order, and the events); the controller's index feeds it each watch
//! event. Both then judge the same thing, so they reach the same verdict.
//! Merging a newer observation keeps what the newest status no longer shows:
//! older runs, the order in which transitions appeared (the watch-order time
//! source) and the grace period of a shutdown. (A restart count going down
//! is not taken for a re-created sandbox: seen live, a restarted sidecar's
//! count briefly reads 0 inside a running sandbox.) A running container
//! whose start time moves without a new container ID is one run, not a
//! restart (`moved_start`).

use crate::model::{EventFact, PodFacts, Run, StateKind};
use crate::time::Moment;

/// Distinct event objects kept per pod; more are dropped and reported as a gap.
pub const MAX_EVENTS: usize = 128;
/// Runs kept per container (the newest); older ones are dropped.
pub const MAX_RUNS: usize = 6;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct History {
    /// The newest observation of the pod; each container's `runs` also hold
    /// the runs earlier observations showed (`in_status: false`).
    pub pod: PodFacts,
    /// The newest version of each event object about the pod.
    pub events: Vec<EventFact>,
    /// More than `MAX_EVENTS` event objects were offered.
    pub events_dropped: bool,
    /// The kubelet of the pod's node (`status.nodeInfo.kubeletVersion`),
    /// when known: the rules then apply the promises of that version and
    /// name the known kubelet bugs it carries. Set by whoever knows the
    /// node; unknown judges by the latest promises.
    pub kubelet: Option<crate::kubelet::KubeletVersion>,
    seq: u32,
}

impl History {
    pub fn new(pod: PodFacts) -> History {
        History {
            pod,
            events: Vec::new(),
            events_dropped: false,
            kubelet: None,
            seq: 0,
        }
    }

    /// A history from one observation of the pod and a set of events.
    pub fn of(pod: PodFacts, events: &[EventFact]) -> History {
        let mut h = History::new(pod);
        for e in events {
            h.add_event(e.clone());
        }
        h
    }

    /// Merges a newer observation of the same pod.
    pub fn observe(&mut self, mut new: PodFacts) {
        self.seq = self.seq.saturating_add(1);
        let seq = self.seq;
        keep_shutdown_deadline(&self.pod, &mut new);
        for c in new.containers.iter_mut() {
            let Some(prev) = self
                .pod
                .containers
                .iter()
                .find(|o| o.name == c.name && o.role == c.role)
            else {
                continue;
            };
            // The running run whose start time the new status rewrote, if any.
            let moved = prev.runs.iter().position(|p| {
                c.runs.iter().any(|r| moved_start(p, r)) && !c.runs.iter().any(|r| same_run(p, r))
            });
            for run in c.runs.iter_mut() {
                let same = prev
                    .runs
                    .iter()
                    .find(|p| same_run(p, run))
                    .or_else(|| moved.map(|i| &prev.runs[i]).filter(|p| moved_start(p, run)));
                match same {
                    Some(p) => {
                        if let (Some(m), Some(s)) = (run.started.as_mut(), p.started) {
                            m.set_seen(s.seen());
                            if m.secs == s.secs {
                                m.set_nanos(m.nanos().or(s.nanos()));
                            }
                        }
                        if let Some(m) = run.finished.as_mut() {
                            m.set_seen(p.finished.map_or(Some(seq), |f| f.seen()));
                        }
                    }
                    // A run new to the history is dated by the watch only when
                    // it is the current, running one: it started since the
                    // previous observation. One that shows up already ended
                    // (in lastState, after a status that hid it: seen live)
                    // may be older than anything seen: no watch-order date.
                    None => {
                        let fresh = run.current && run.finished.is_none();
                        if let Some(m) = run.started.as_mut() {
                            m.set_seen(fresh.then_some(seq));
                        }
                    }
                }
            }
            // Runs the newest status no longer shows stay known.
            let mut older: Vec<Run> = prev
                .runs
                .iter()
                .enumerate()
                .filter(|(i, p)| Some(*i) != moved && !c.runs.iter().any(|r| same_run(p, r)))
                .map(|(_, p)| p)
                .cloned()
                .map(|mut r| {
                    r.in_status = false;
                    r.current = false;
                    r
                })
                .collect();
            if !older.is_empty() {
                older.append(&mut c.runs);
                older.sort_by_key(|r| r.started.map(|m| m.sort_key()));
                let excess = older.len().saturating_sub(MAX_RUNS);
                older.drain(..excess);
                c.runs = older;
            }
        }
        self.pod = new;
    }

    /// Adds (or updates) an event object; false when it changed nothing.
    pub fn add_event(&mut self, fact: EventFact) -> bool {
        match self.events.iter().position(|e| e.key == fact.key) {
            Some(i) if self.events[i] == fact => false,
            Some(i) => {
                if newer(&fact, &self.events[i]) {
                    self.events[i] = fact;
                    true
                } else {
                    false
                }
            }
            None if self.events.len() >= MAX_EVENTS => {
                let changed = !self.events_dropped;
                self.events_dropped = true;
                changed
            }
            None => {
                // Exact capacity: the controller holds one history per pod.
                self.events.reserve_exact(1);
                self.events.push(fact);
                true
            }
        }
    }

    /// Whether the container's current state is running.
    pub fn running(&self, i: usize) -> bool {
        self.pod.containers[i].state == StateKind::Running
    }
}

/// The same run in an older (`a`) and a newer (`b`) observation: the same
/// start second, and the older one still running or ended as the newer one
/// says (two runs can start within one second: a quick crash and restart).
fn same_run(a: &Run, b: &Run) -> bool {
    let secs = |m: Option<crate::time::Moment>| m.map(|m| m.secs);
    a.started.is_some()
        && secs(a.started) == secs(b.started)
        && (a.finished.is_none()
            || (secs(a.finished) == secs(b.finished) && a.exit_code == b.exit_code))
}

/// The same running container in an older (`a`) and a newer (`b`)
/// observation with another start time: one run whose `startedAt` was
/// rewritten, since the kubelet makes a new container (a new
/// `containerID`) for every run. A real kubelet never rewrites it; kwok
/// does when it plays a start stage twice from a stale copy of the pod.
/// Taken for one run, a restarted controller (which sees only the newest
/// start) and one that watched both reach the same verdict.
fn moved_start(a: &Run, b: &Run) -> bool {
    a.current
        && b.current
        && a.finished.is_none()
        && b.finished.is_none()
        && a.started.is_some()
        && b.started.is_some()
        && a.container.is_some()
        && a.container == b.container
}

/// Orders two versions of the same event object: the later update wins.
fn newer(a: &EventFact, b: &EventFact) -> bool {
    // A total order over every field, so a tie never depends on arrival order.
    let m = |m: &Moment| (m.secs, m.nanos(), m.seen(), m.secs_from);
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

/// Once every container has stopped, the kubelet deletes the pod for good
/// with a grace period of 0, which rewrites `deletionTimestamp` and
/// `deletionGracePeriodSeconds`: the deadline that governed the shutdown is
/// the one seen before. (A forced delete of running containers is not this:
/// its grace of 0 is the real one.)
fn keep_shutdown_deadline(old: &PodFacts, new: &mut PodFacts) {
    if let (Some(before), Some(now)) = (old.deletion, new.deletion)
        && now.grace_secs == 0
        && before.grace_secs > 0
        && new.containers.iter().all(|c| c.state != StateKind::Running)
    {
        new.deletion = Some(before);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Role;
    use crate::rules::test_support::{container, pod, run};
    use std::num::NonZeroU64;

    /// A pod whose one sidecar runs since `start`, in container `id`.
    fn running_since(start: i64, id: u64) -> PodFacts {
        let mut r = run(start, None);
        r.container = NonZeroU64::new(id);
        pod(vec![container("s", Role::Sidecar, 0, 0, vec![r])])
    }

    #[test]
    fn a_start_moved_in_the_same_container_is_one_run_and_a_new_container_another() {
        let mut h = History::new(running_since(1, 7));
        h.observe(running_since(2, 7));
        let runs = &h.pod.containers[0].runs;
        assert_eq!(runs.len(), 1, "{runs:?}");
        assert_eq!(
            runs[0].started.map(|m| m.secs),
            Some(crate::rules::test_support::T + 2)
        );

        // Another container ID: a run the status no longer shows, kept.
        let mut h = History::new(running_since(1, 7));
        h.observe(running_since(2, 8));
        assert_eq!(h.pod.containers[0].runs.len(), 2);

        // No container ID: nothing proves it is the same run.
        let mut h = History::new(running_since(1, 0));
        h.observe(running_since(2, 0));
        assert_eq!(h.pod.containers[0].runs.len(), 2);
    }
}
