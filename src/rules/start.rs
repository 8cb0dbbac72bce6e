//! What both start-order rules ask: did container `up` pass its gate
//! (running, postStart finished, startupProbe passed) in the sandbox of a run
//! of container `lo`, before that run started?
//!
//! - Only a run that may be `lo`'s first in its sandbox is judged: a restart
//!   inside a running generation is not startup (`NotApplicable`).
//! - Verified: a run of `up` was going on when `lo`'s run started, and had
//!   started (and its last startup-probe failure happened) before it. The
//!   kubelet does not report a probe's success, so its last failure is the
//!   latest bound of the gate any input can show.
//! - Violated needs positive evidence that both runs were in one sandbox:
//!   `lo`'s run was still going on when `up`'s first run in that sandbox
//!   started, or when its startup probe failed; or `up` never ran at all
//!   while `lo` runs now.
//! - Anything else is `Indeterminate`.

use super::{Ctx, Decision, at, source_name, started_runs};
use crate::engine::view::{RunView, View};
use crate::model::{ProbeKind, StateKind};
use crate::report::Outcome;
use crate::report::Rule;
use crate::time::{Before, Moment, before};

/// The judgement of one run of `lo` against `up`, with its evidence.
pub struct StartJudgement {
    pub decision: Decision,
    /// For a violation: the facts, each with its time.
    pub evidence: Vec<String>,
    /// For a violation: the gate (a startup probe still failing) rather than the start.
    pub probe_gate: bool,
    pub never_started: bool,
}

/// Probe failures and container starts are recorded by different kubelet
/// goroutines, each a few milliseconds after the fact: their event clocks
/// order them only when they are this far apart.
const PROBE_EVENT_LAG_NS: i64 = 100_000_000;

/// `before`, but an order decided by the event clock alone needs the two
/// moments `PROBE_EVENT_LAG_NS` apart (used where one side is a probe failure).
fn before_probe(a: &Moment, b: &Moment) -> Before {
    match before(a, b) {
        Before::Yes(crate::time::Source::EventClock)
        | Before::No(crate::time::Source::EventClock)
            if a.nanos()
                .zip(b.nanos())
                .is_some_and(|(x, y)| (x - y).abs() < PROBE_EVENT_LAG_NS) =>
        {
            Before::Unknown
        }
        other => other,
    }
}

/// The earliest moment `up`'s run `r` can have passed its gate; `None`
/// when a startupProbe gates it and the events about the run (its probe
/// failures) are not known. (A postStart hook's end is never reported: its
/// gate is bounded by the start alone, with or without events.)
fn gate_bound(v: &View, up: usize, r: &RunView) -> Option<Moment> {
    let start = r.start?;
    let mut bound = start;
    let declares = v.pod.containers[up].declares;
    if declares.startup && !r.evented {
        return None;
    }
    if declares.startup {
        let loose = v.lines[up]
            .loose
            .iter()
            .filter(|f| f.kind == ProbeKind::Startup && r.alive_at(&f.at) != Some(false))
            .map(|f| f.at);
        // Occurrences of an aggregated event between its first and last are
        // unknown: any of them may fall in this run, up to its end.
        let hidden = v.lines[up]
            .spans
            .iter()
            .filter(|(k, _, last)| {
                *k == ProbeKind::Startup && !matches!(before(last, &start), Before::Yes(_))
            })
            .map(|(_, _, last)| match r.end {
                Some(end) if end.sort_key() < last.sort_key() => end,
                _ => *last,
            });
        for f in r
            .failures
            .iter()
            .filter(|f| f.kind == ProbeKind::Startup)
            .map(|f| f.at)
            .chain(loose)
            .chain(hidden)
        {
            // A moment known to the second only may be late in it.
            let latest = |m: &Moment| {
                (
                    m.secs,
                    m.nanos()
                        .map_or(999_999_999, |n| n.rem_euclid(1_000_000_000)),
                )
            };
            if latest(&f) > latest(&bound) {
                bound = f;
            }
        }
    }
    Some(bound)
}

/// `r` is certainly a restart of `lo` inside a running generation: an
/// earlier run of `lo` is of the same sandbox (a run of another container
/// spans both, or the generations are known).
fn is_restart(v: &View, lo: usize, r: &RunView) -> bool {
    if r.first_in_sandbox {
        return false;
    }
    let Some(start) = r.start else { return false };
    let earlier: Vec<&RunView> = started_runs(v, lo)
        .filter(|q| {
            !q.from_event
                && q.start
                    .is_some_and(|s| matches!(before(&s, &start), Before::Yes(_)))
        })
        .collect();
    earlier.iter().any(|q| {
        (v.gens_trusted && q.generation.is_some() && q.generation == r.generation)
            || (0..v.lines.len()).any(|c| {
                c != lo
                    && v.lines[c].runs.iter().any(|w| {
                        q.start.is_some_and(|s| w.alive_at(&s) == Some(true))
                            && w.alive_at(&start) == Some(true)
                    })
            })
    })
}

pub fn judge(v: &View, up: usize, lo: usize, r: &RunView) -> StartJudgement {
    let name = |i: usize| v.pod.containers[i].name.as_str();
    let t = r.start.expect("judged runs have a start");
    let plain = |decision| StartJudgement {
        decision,
        evidence: Vec::new(),
        probe_gate: false,
        never_started: false,
    };
    if is_restart(v, lo, r) {
        return plain(Decision::not_applicable(format!(
            "{} restarted inside a running generation (startup order applies to a sandbox's first runs)",
            name(lo)
        )));
    }
    // Verified: `up` was up, past its gate, when `lo`'s run started.
    let mut gate_unknown = false;
    for w in started_runs(v, up) {
        let Some(gate) = gate_bound(v, up, w) else {
            gate_unknown |= w.alive_at(&t) == Some(true);
            continue;
        };
        // Starts are recorded in order by one loop; a failure by another.
        let order = if Some(gate) == w.start {
            before(&gate, &t)
        } else {
            before_probe(&gate, &t)
        };
        if let Before::Yes(by) = order
            && (w.alive_at(&t) == Some(true)
                || (v.gens_trusted && w.generation.is_some() && w.generation == r.generation))
        {
            return plain(Decision::new(Outcome::Verified, Some(by)));
        }
    }
    // Violated: `up`'s first run in the sandbox started, or was still
    // failing its startup probe, after `lo`'s run had started.
    for w in started_runs(v, up).filter(|w| w.first_in_sandbox) {
        let ws = w.start.expect("started");
        if let Before::Yes(by) = before(&t, &ws)
            && r.alive_at(&ws) == Some(true)
        {
            return StartJudgement {
                decision: Decision::new(Outcome::Violated, Some(by)),
                evidence: vec![
                    format!("{} started at {}", name(lo), at(&t)),
                    format!(
                        "{} started at {} (its first run in this sandbox)",
                        name(up),
                        at(&ws)
                    ),
                    format!("{} was still running when {} started", name(lo), name(up)),
                ],
                probe_gate: false,
                never_started: false,
            };
        }
        if let Some(f) = w.last_failure(ProbeKind::Startup)
            && let Before::Yes(by) = before_probe(&t, &f)
            && matches!(before(&ws, &t), Before::Yes(_))
            && r.alive_at(&f) == Some(true)
        {
            return StartJudgement {
                decision: Decision::new(Outcome::Violated, Some(by)),
                evidence: vec![
                    format!("{} started at {}", name(lo), at(&t)),
                    format!(
                        "{} (first run in this sandbox, started at {}) failed its startup probe at {}",
                        name(up),
                        at(&ws),
                        at(&f)
                    ),
                ],
                probe_gate: true,
                never_started: false,
            };
        }
    }
    // Violated: `up` never ran, and `lo` runs now.
    let c = &v.pod.containers[up];
    if r.running && c.state == StateKind::Waiting && c.restarts == 0 && v.lines[up].runs.is_empty()
    {
        return StartJudgement {
            decision: Decision::new(Outcome::Violated, None),
            evidence: vec![
                format!("{} started at {} and is running", name(lo), at(&t)),
                format!(
                    "{} is waiting, has never run (restart count 0, no earlier state, no Started event)",
                    name(up)
                ),
            ],
            probe_gate: false,
            never_started: true,
        };
    }
    if gate_unknown {
        return plain(Decision::indeterminate(format!(
            "{} was running when {} started at {}, but when its startupProbe passed is not known (no Started event reported its run, so its probe failures are unknown)",
            name(up),
            name(lo),
            at(&t)
        )));
    }
    plain(Decision::indeterminate(format!(
        "no run of {} is known to have been going on in the sandbox of {}'s run that started at {}",
        name(up),
        name(lo),
        at(&t)
    )))
}

/// How a start-order rule names a broken promise: (never started, probe
/// still failing, started before), given the names of `up` and `lo`.
pub struct Wording {
    pub never: fn(&str, &str) -> String,
    pub probe: fn(&str, &str) -> String,
    pub before: fn(&str, &str) -> String,
}

/// Judges every run of `lo` against `up`: one check each, and a violation
/// with its evidence for a broken promise.
pub fn check_pair(cx: &mut Ctx, rule: Rule, up: usize, lo: usize, words: &Wording) {
    let v = cx.v;
    for r in started_runs(v, lo) {
        let j = judge(v, up, lo, r);
        cx.record(rule, &[up, lo], r.start.as_ref(), &j.decision);
        if j.decision.outcome != Outcome::Violated {
            continue;
        }
        let say = if j.never_started {
            words.never
        } else if j.probe_gate {
            words.probe
        } else {
            words.before
        };
        let msg = say(cx.name(up), cx.name(lo));
        let mut ev = j.evidence;
        ev.push(format!(
            "decided by {}",
            j.decision.by.map_or("status", source_name)
        ));
        cx.violate(rule, &[up, lo], msg, ev);
    }
}
