//! A kubelet model: a generator of pod histories that a correct kubelet
//! (KEP-753, 1.29+) can produce, fed to the engine observation by
//! observation the way the controller feeds it (merged history, previous
//! report kept) and as `analyze` sees it (one final snapshot).
//!
//! What it simulates, on a millisecond node clock: plain init containers,
//! then sidecars one by one (each after its gate: startup-probe failures at
//! one-second ticks, then success), then apps; sidecar and app crashes with
//! restarts; node reboots (all tasks killed, a new sandbox: `SandboxChanged`,
//! init containers re-run, sidecar statuses reset to restart count 0 without
//! lastState, apps keep their old run in lastState); deletion at any moment
//! (during initialisation too) with apps stopped first, then sidecars in
//! reverse order, each with the grace that remains, and once the deadline
//! passed the rest together (SIGTERM, SIGKILL 2 s later); Never/OnFailure
//! pods whose apps finish (OnFailure retries a failed app). Statuses floor
//! times to seconds; events carry the kubelet's nanosecond clock in their
//! name, are aggregated per container and reason until the kubelet restarts,
//! arrive late or twice, or expired; the controller may start late.
//!
//! Properties:
//! - soundness: no generated history is ever `Violated` (error severity), at
//!   any prefix of its observations, nor offline from any snapshot;
//! - completeness: the same history with one injected misordering (an app
//!   started before a sidecar started or while its startup probe still
//!   failed; within grace a sidecar stopped before an app; within grace the
//!   upper sidecar stopped before the lower) is `Violated` or
//!   `Indeterminate` in that phase, never `Verified`. (A startup probe's
//!   success is not reported by the kubelet, so a gate can only be bounded
//!   by the sidecar's start and its last failure; the injection stays there.)
//!
//! `KUBELET_MODEL_CASES=N` runs N histories (default 10,000 per property).

use sidecar_order::engine::history::History;
use sidecar_order::judge::{Config, Decided, judge_history};
use sidecar_order::model::*;
use sidecar_order::report::{Phase, Report, Severity, Verdict};
use sidecar_order::time::Moment;

const BASE_MS: i64 = 1_752_451_200_000;
/// How long after a container's start the kubelet records `Started`.
const STARTED_LAG_MS: i64 = 3;

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        // xorshift64*
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn range(&mut self, lo: i64, hi: i64) -> i64 {
        lo + (self.next() % ((hi - lo).max(1) as u64)) as i64
    }
    fn chance(&mut self, percent: u64) -> bool {
        self.next() % 100 < percent
    }
}

#[derive(Clone, Debug)]
struct SimRun {
    start: i64,
    end: Option<i64>,
    exit: i32,
}

#[derive(Clone, Debug)]
struct SimContainer {
    name: String,
    role: Role,
    index: u16,
    startup_failures: u32,
    runs: Vec<SimRun>,
}

#[derive(Clone, Debug, Default)]
struct SimEvent {
    /// Kubelet process lifetime (a reboot restarts the kubelet: new event objects).
    life: usize,
    container: Option<usize>,
    reason: Option<EventReason>,
    probe: Option<ProbeKind>,
    /// Node times of each occurrence.
    at: Vec<i64>,
}

#[derive(Clone, Debug)]
struct Sim {
    containers: Vec<SimContainer>,
    policy: RestartPolicy,
    grace: i64,
    /// Deletion time (node clock, ms).
    deleted: Option<i64>,
    events: Vec<SimEvent>,
    /// Sandbox ready times, one per generation.
    sandboxes: Vec<i64>,
    life: usize,
    /// Status resets: container index -> time of the reset.
    resets: Vec<(usize, i64)>,
    /// The kubelet version publishes PodReadyToStartContainers.
    condition: bool,
    end: i64,
    /// A Never/OnFailure pod's apps finished and its sidecars were stopped.
    completed: bool,
}

impl Sim {
    fn event(
        &mut self,
        container: Option<usize>,
        reason: EventReason,
        probe: Option<ProbeKind>,
        at: i64,
    ) {
        let life = self.life;
        match self.events.iter_mut().find(|e| {
            e.life == life
                && e.container == container
                && e.reason == Some(reason)
                && e.probe == probe
        }) {
            Some(e) => e.at.push(at),
            None => self.events.push(SimEvent {
                life,
                container,
                reason: Some(reason),
                probe,
                at: vec![at],
            }),
        }
    }

    fn start(&mut self, rng: &mut Rng, i: usize, at: i64) -> i64 {
        self.containers[i].runs.push(SimRun {
            start: at,
            end: None,
            exit: 0,
        });
        // The pod worker starts containers one at a time and records each
        // Started right after: those events keep the order of the starts.
        self.event(Some(i), EventReason::Started, None, at + STARTED_LAG_MS);
        // The gate: startup probe failures one second apart, then success.
        let mut gate = at + rng.range(5, 200);
        for k in 1..=self.containers[i].startup_failures {
            let f = at + 1000 * i64::from(k);
            self.event(
                Some(i),
                EventReason::Unhealthy,
                Some(ProbeKind::Startup),
                f + rng.range(1, 30),
            );
            gate = f + 1000;
        }
        gate
    }

    fn stop(&mut self, i: usize, at: i64, exit: i32) {
        if let Some(r) = self.containers[i].runs.last_mut()
            && r.end.is_none()
        {
            r.end = Some(at);
            r.exit = exit;
        }
    }

    fn running(&self, i: usize) -> bool {
        self.containers[i]
            .runs
            .last()
            .is_some_and(|r| r.end.is_none())
    }

    fn of(&self, role: Role) -> Vec<usize> {
        (0..self.containers.len())
            .filter(|&i| self.containers[i].role == role)
            .collect()
    }

    /// Initialises a sandbox from `t`: init containers, sidecars one by one
    /// (each after the previous gate), apps; stops early at `until`.
    /// Returns when the apps started (None when cut short).
    fn initialise(&mut self, rng: &mut Rng, mut t: i64, until: i64) -> Option<i64> {
        self.sandboxes.push(t);
        t += rng.range(50, 600);
        for i in self.of(Role::Init) {
            if t >= until {
                return None;
            }
            self.start(rng, i, t);
            let end = t + rng.range(100, 2500);
            if end >= until {
                return None;
            }
            self.stop(i, end, 0);
            t = end + rng.range(20, 400);
        }
        for i in self.of(Role::Sidecar) {
            if t >= until {
                return None;
            }
            let gate = self.start(rng, i, t);
            t = gate + rng.range(20, 400);
        }
        if t >= until {
            return None;
        }
        for i in self.of(Role::App) {
            let at = t + rng.range(0, 50);
            self.start(rng, i, at);
        }
        Some(t)
    }

    /// Stops containers in the kubelet's order from `t0`: apps first, then
    /// sidecars in reverse order with the grace that remains; after the
    /// deadline, the rest together.
    fn terminate(&mut self, rng: &mut Rng, t0: i64, apps_first: bool) {
        let deadline = t0 + self.grace * 1000;
        let mut t = t0;
        if apps_first {
            let mut last = t0;
            for a in self.of(Role::App) {
                if self.running(a) {
                    self.event(Some(a), EventReason::Killing, None, t0 + rng.range(1, 20));
                    let took = if rng.chance(20) {
                        self.grace * 1000 + 5000
                    } else {
                        rng.range(50, 3000)
                    };
                    let (end, exit) = if t0 + took >= deadline {
                        (deadline + rng.range(0, 200), 137)
                    } else {
                        (t0 + took, 0)
                    };
                    self.stop(a, end, exit);
                    last = last.max(end);
                }
            }
            t = last;
        }
        for s in self.of(Role::Sidecar).into_iter().rev() {
            if !self.running(s) {
                continue;
            }
            if t < deadline {
                let term = t + rng.range(5, 100);
                self.event(Some(s), EventReason::Killing, None, term);
                let took = if rng.chance(15) {
                    self.grace * 1000 + 5000
                } else {
                    rng.range(50, 3000)
                };
                let (end, exit) = if term + took >= deadline {
                    (deadline + rng.range(0, 200), 137)
                } else {
                    (term + took, 143)
                };
                self.stop(s, end, exit);
                t = end;
            } else {
                // Deadline passed: SIGTERM now, SIGKILL 2 s later, all together.
                let term = t.max(deadline) + rng.range(5, 100);
                let took = rng.range(50, 4000);
                let (end, exit) = if took >= 2000 {
                    (term + 2000, 137)
                } else {
                    (term + took, 143)
                };
                self.stop(s, end, exit);
            }
        }
    }
}

/// One generated history. `inject`: 0 none, 1 app before a sidecar's gate,
/// 2 a sidecar stopped before an app within grace, 3 upper sidecar stopped
/// before the lower within grace.
fn simulate(seed: u64, inject: u8) -> Option<Sim> {
    let mut rng = Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
    let sidecars = rng.range(1, 4) as usize;
    let inits = rng.range(0, 2) as usize;
    let apps = rng.range(1, 3) as usize;
    let mut containers = Vec::new();
    for k in 0..inits {
        containers.push(SimContainer {
            name: format!("init{k}"),
            role: Role::Init,
            index: k as u16,
            startup_failures: 0,
            runs: vec![],
        });
    }
    for k in 0..sidecars {
        let failures = if rng.chance(40) {
            rng.range(1, 4) as u32
        } else {
            0
        };
        containers.push(SimContainer {
            name: format!("sidecar{k}"),
            role: Role::Sidecar,
            index: (inits + k) as u16,
            startup_failures: failures,
            runs: vec![],
        });
    }
    for k in 0..apps {
        containers.push(SimContainer {
            name: format!("app{k}"),
            role: Role::App,
            index: k as u16,
            startup_failures: 0,
            runs: vec![],
        });
    }
    let policy = match rng.range(0, 4) {
        0 => RestartPolicy::Never,
        1 => RestartPolicy::OnFailure,
        _ => RestartPolicy::Always,
    };
    let mut sim = Sim {
        containers,
        policy,
        grace: rng.range(2, 12),
        deleted: None,
        events: Vec::new(),
        sandboxes: Vec::new(),
        life: 0,
        resets: Vec::new(),
        condition: rng.chance(70),
        end: 0,
        completed: false,
    };
    let mut t = BASE_MS + rng.range(0, 1000);
    let delete_at = if rng.chance(70) || inject >= 2 {
        Some(t + rng.range(500, 40_000))
    } else {
        None
    };
    let horizon = delete_at.unwrap_or(t + 60_000);
    let mut apps_at = sim.initialise(&mut rng, t, horizon);
    if inject == 1 {
        // An app that started before a sidecar started, or while its startup
        // probe was still failing.
        let apps_at = apps_at?;
        let s = *sim.of(Role::Sidecar).last()?;
        let first = sim.containers[s].runs.first()?.clone();
        let failures = sim.containers[s].startup_failures;
        let latest = if failures > 0 {
            first.start + 1000 * i64::from(failures)
        } else {
            first.start
        };
        let a = sim.of(Role::App)[0];
        let run = sim.containers[a].runs.first_mut()?;
        run.start = rng.range(first.start - 3000, latest - 1);
        let _ = apps_at;
        let ev = sim
            .events
            .iter_mut()
            .find(|e| e.container == Some(a) && e.reason == Some(EventReason::Started))?;
        ev.at[0] = run.start + STARTED_LAG_MS;
    }
    // Life: crashes, restarts, reboots, app exits, until the deletion or horizon.
    // Nothing happens before the last scheduled (re)start: a run cannot end
    // before it began.
    let mut settled = t;
    while let Some(at) = apps_at {
        settled = settled.max(
            sim.containers
                .iter()
                .filter_map(|c| c.runs.last().map(|r| r.start))
                .max()
                .unwrap_or(settled),
        );
        t = (at + rng.range(1000, 15_000)).max(settled + 50);
        if t >= horizon {
            break;
        }
        match rng.range(0, 10) {
            0..=2 => {
                // A sidecar crashes (or fails liveness) and is restarted.
                let sc = sim.of(Role::Sidecar);
                let s = sc[rng.range(0, sc.len() as i64) as usize];
                if sim.running(s) {
                    sim.stop(s, t, 1);
                    let back = t + rng.range(10, 3000);
                    if back < horizon {
                        sim.start(&mut rng, s, back);
                    }
                }
                apps_at = Some(t);
            }
            3..=4 => {
                // An app exits.
                let ap = sim.of(Role::App);
                let a = ap[rng.range(0, ap.len() as i64) as usize];
                if sim.running(a) {
                    let exit = if rng.chance(50) { 0 } else { 1 };
                    sim.stop(a, t, exit);
                    let restart = match sim.policy {
                        RestartPolicy::Always => true,
                        RestartPolicy::OnFailure => exit != 0,
                        RestartPolicy::Never => false,
                    };
                    let back = t + rng.range(10, 3000);
                    if restart && back < horizon {
                        sim.start(&mut rng, a, back);
                    }
                }
                apps_at = Some(t);
            }
            // Node reboot: every task killed, kubelet restarts later. (A
            // Never pod whose containers ran gets no new sandbox: it fails.)
            5 if sim.policy != RestartPolicy::Never => {
                for i in 0..sim.containers.len() {
                    sim.stop(i, t, 137);
                }
                let back = t + rng.range(2000, 20_000);
                if back >= horizon {
                    break;
                }
                sim.life += 1;
                sim.event(None, EventReason::SandboxChanged, None, back);
                for s in sim.of(Role::Sidecar) {
                    sim.resets.push((s, back));
                }
                apps_at = sim.initialise(&mut rng, back + 100, horizon);
            }
            _ => apps_at = Some(t),
        }
        // Never/OnFailure: every app finished for good -> the kubelet stops the sidecars.
        if sim.policy != RestartPolicy::Always {
            let ap = sim.of(Role::App);
            let done = ap.iter().all(|&a| !sim.running(a))
                && (sim.policy == RestartPolicy::Never
                    || ap
                        .iter()
                        .all(|&a| sim.containers[a].runs.last().is_some_and(|r| r.exit == 0)));
            if done && ap.iter().all(|&a| !sim.containers[a].runs.is_empty()) {
                let last = ap
                    .iter()
                    .filter_map(|&a| sim.containers[a].runs.last()?.end)
                    .max()?;
                let t0 = last + rng.range(10, 500);
                sim.terminate(&mut rng, t0, false);
                sim.end = last + (sim.grace + 5) * 1000;
                sim.completed = true;
                return finish(sim, &mut rng, inject, None);
            }
        }
    }
    match delete_at {
        Some(d) if d < horizon + 1 => {
            sim.deleted = Some(d);
            sim.terminate(&mut rng, d, true);
            sim.end = d + (sim.grace + 5) * 1000;
            finish(sim, &mut rng, inject, Some(d))
        }
        _ => {
            sim.end = horizon;
            (inject < 2).then_some(sim)
        }
    }
}

/// Applies a shutdown injection (within the grace period).
fn finish(mut sim: Sim, rng: &mut Rng, inject: u8, deleted: Option<i64>) -> Option<Sim> {
    if inject < 2 {
        return Some(sim);
    }
    let d = deleted?;
    let deadline = d + sim.grace * 1000;
    let apps = sim.of(Role::App);
    let sidecars = sim.of(Role::Sidecar);
    // Only where everything stopped well within grace.
    let ends = |sim: &Sim, i: usize| sim.containers[i].runs.last().and_then(|r| r.end);
    let running_at = |sim: &Sim, i: usize| {
        sim.containers[i]
            .runs
            .last()
            .is_some_and(|r| r.start < d && r.end.is_some_and(|e| e > d))
    };
    match inject {
        2 => {
            let a = *apps.iter().find(|&&a| {
                running_at(&sim, a) && ends(&sim, a).is_some_and(|e| e + 3000 < deadline)
            })?;
            let app_end = ends(&sim, a)?;
            let s = *sidecars.iter().find(|&&s| running_at(&sim, s))?;
            let new_end = rng.range(d + 1, app_end - 1);
            if new_end <= d {
                return None;
            }
            sim.containers[s].runs.last_mut()?.end = Some(new_end);
            sim.containers[s].runs.last_mut()?.exit = 143;
            Some(sim)
        }
        _ => {
            let run: Vec<usize> = sidecars
                .iter()
                .copied()
                .filter(|&s| running_at(&sim, s))
                .collect();
            if run.len() < 2
                || apps
                    .iter()
                    .any(|&a| ends(&sim, a).is_some_and(|e| e + 3000 >= deadline))
            {
                return None;
            }
            let (up, lo) = (run[0], run[1]);
            let lo_end = ends(&sim, lo)?;
            if lo_end + 3000 >= deadline {
                return None;
            }
            let app_end = apps
                .iter()
                .filter_map(|&a| ends(&sim, a))
                .max()
                .unwrap_or(d)
                .max(d);
            if app_end + 2 >= lo_end {
                return None;
            }
            let new_end = rng.range(app_end + 1, lo_end - 1);
            sim.containers[up].runs.last_mut()?.end = Some(new_end);
            Some(sim)
        }
    }
}

fn moment_ms(ms: i64) -> Moment {
    Moment::status(ms.div_euclid(1000))
}

/// The pod's status as the kubelet reports it at node time `now`.
fn snapshot(sim: &Sim, now: i64) -> PodFacts {
    let containers = sim
        .containers
        .iter()
        .enumerate()
        .map(|(i, c)| {
            let reset = sim
                .resets
                .iter()
                .filter(|(k, at)| *k == i && *at <= now)
                .map(|(_, at)| *at)
                .max();
            let seen: Vec<&SimRun> = c
                .runs
                .iter()
                .filter(|r| r.start <= now && reset.is_none_or(|z| r.start >= z))
                .collect();
            let mut runs = Vec::new();
            let to_run = |r: &SimRun, current: bool| {
                let ended = r.end.filter(|&e| e <= now);
                Run {
                    started: Some(moment_ms(r.start)),
                    finished: ended.map(moment_ms),
                    exit_code: ended.map(|_| r.exit),
                    signal: None,
                    reason: None,
                    current,
                    in_status: true,
                    container: None,
                }
            };
            let mut n = seen.len();
            // Seen live (e2e t13): right after a sidecar restarted, its status
            // can show restart count 0 and no lastState for a moment.
            let transient_reset = c.role == Role::Sidecar
                && n >= 2
                && seen.last().is_some_and(|r| now - r.start < 1500)
                && (now / 7 + i as i64) % 2 == 0;
            if transient_reset {
                n = 1;
            } else if n >= 2 {
                runs.push(to_run(seen[n - 2], false));
            }
            let mut state = StateKind::Waiting;
            if let Some(last) = seen.last() {
                let r = to_run(last, true);
                state = if r.finished.is_some() {
                    StateKind::Terminated
                } else {
                    StateKind::Running
                };
                // A restarted container is waiting (backoff) until its next run.
                runs.push(r);
            }
            ContainerFacts {
                name: c.name.clone(),
                role: c.role,
                index: c.index,
                declares: Declares {
                    startup: c.startup_failures > 0,
                    ..Declares::default()
                },
                state,
                restarts: n.saturating_sub(1) as u32,
                started: None,
                ready: false,
                runs,
            }
        })
        .collect();
    let phase_done = sim.completed && now >= sim.end;
    PodFacts {
        namespace: "ns".into(),
        name: "p".into(),
        uid: "u".into(),
        restart_policy: sim.policy,
        grace_secs: sim.grace,
        deletion: sim.deleted.filter(|&d| d <= now).map(|d| Deletion {
            deadline_secs: (d + sim.grace * 1000).div_euclid(1000),
            grace_secs: sim.grace,
        }),
        finished_phase: phase_done,
        gone: false,
        has_status: true,
        sandbox_ready: sim
            .condition
            .then(|| {
                sim.sandboxes
                    .iter()
                    .filter(|&&s| s <= now)
                    .max()
                    .map(|&s| s.div_euclid(1000))
            })
            .flatten(),
        containers,
        latest_secs: now.div_euclid(1000),
    }
}

/// The kubelet's events as the API holds them at `now` (occurrences up to
/// `now - delay`), as the engine's facts.
fn events_at(sim: &Sim, now: i64, delay: i64, expired_before: i64) -> Vec<EventFact> {
    sim.events
        .iter()
        .enumerate()
        .filter_map(|(k, e)| {
            let occ: Vec<i64> = e.at.iter().copied().filter(|&t| t + delay <= now).collect();
            let first = *occ.first()?;
            let last = *occ.last()?;
            if last < expired_before {
                return None;
            }
            Some(EventFact {
                // As the kubelet names them: `<pod>.<hex UnixNano>` (made unique).
                key: format!("p-{k}.{:x}", first * 1_000_000).into(),
                container: e.container.map(|i| i as u16),
                reason: e.reason?,
                probe: e.probe,
                count: occ.len() as u32,
                first: Moment::event(first.div_euclid(1000), Some(first * 1_000_000)),
                last: Moment::event(last.div_euclid(1000), None),
            })
        })
        .collect()
}

fn errors(r: &Report) -> Vec<String> {
    r.violations
        .iter()
        .filter(|v| v.severity == Severity::Error)
        .map(|v| format!("{}: {} {:?}", v.rule.id(), v.message, v.evidence))
        .collect()
}

fn cases() -> u64 {
    std::env::var("KUBELET_MODEL_CASES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(10_000)
}

/// Feeds the history as the controller sees it: snapshots at random
/// moments, events late, twice or expired, maybe starting late; checks every
/// prefix and the final offline judgement.
fn check_sound(seed: u64, sim: &Sim) -> Result<usize, String> {
    let mut rng = Rng(seed ^ 0xD1B5_4A32_D192_ED03 | 1);
    let cfg = Config::default();
    let start = sim.sandboxes[0];
    let late_start = if rng.chance(20) {
        rng.range(0, (sim.end - start).max(1))
    } else {
        0
    };
    let delay = if rng.chance(30) {
        rng.range(0, 5000)
    } else {
        0
    };
    let expired_before = if rng.chance(20) {
        start + rng.range(0, (sim.end - start).max(1))
    } else {
        i64::MIN
    };
    let mut h: Option<History> = None;
    let mut prev: Option<Decided> = None;
    let mut now = start + late_start;
    let mut judged = 0;
    while now <= sim.end + 1000 {
        let snap = snapshot(sim, now);
        match h.as_mut() {
            Some(h) => h.observe(snap),
            None => h = Some(History::new(snap)),
        }
        let hist = h.as_mut().expect("set");
        for e in events_at(sim, now, delay, expired_before) {
            hist.add_event(e.clone());
            if rng.chance(5) {
                hist.add_event(e);
            }
        }
        let r = judge_history(hist, &cfg, prev.as_ref());
        judged += 1;
        let errs = errors(&r);
        if !errs.is_empty() {
            return Err(format!(
                "controller view at +{} ms: {errs:#?}\nruns {:?}\nStarted events {:?}\n{sim:#?}",
                now - start,
                hist.pod
                    .containers
                    .iter()
                    .map(|c| (
                        c.restarts,
                        c.runs
                            .iter()
                            .map(|r| (
                                r.started.map(|m| m.secs - 1752451200),
                                r.finished.map(|m| m.secs - 1752451200),
                                r.in_status
                            ))
                            .collect::<Vec<_>>()
                    ))
                    .collect::<Vec<_>>(),
                hist.events
                    .iter()
                    .filter(|e| e.reason == EventReason::Started)
                    .map(|e| (
                        e.container,
                        e.count,
                        e.first.secs - 1752451200,
                        e.last.secs - 1752451200
                    ))
                    .collect::<Vec<_>>()
            ));
        }
        // Offline, from this snapshot alone.
        let offline = judge_history(
            &History::of(
                snapshot(sim, now),
                &events_at(sim, now, delay, expired_before),
            ),
            &cfg,
            None,
        );
        let errs = errors(&offline);
        if !errs.is_empty() {
            return Err(format!(
                "offline view at +{} ms: {errs:#?}\n{sim:#?}",
                now - start
            ));
        }
        prev = Some(Decided::of(&r));
        now += rng.range(200, 6000);
    }
    Ok(judged)
}

#[test]
fn soundness_no_correct_kubelet_history_is_ever_violated() {
    let mut histories = 0;
    let mut judgements = 0;
    for seed in 0..cases() {
        let Some(sim) = simulate(seed, 0) else {
            continue;
        };
        histories += 1;
        match check_sound(seed, &sim) {
            Ok(n) => judgements += n,
            Err(e) => panic!("seed {seed}: a correct kubelet's history was judged Violated\n{e}"),
        }
    }
    assert!(
        histories as u64 >= cases() * 9 / 10,
        "only {histories} histories generated"
    );
    eprintln!("soundness: {histories} histories, {judgements} judgements");
}

#[test]
fn completeness_an_injected_misordering_is_never_verified() {
    let mut judged = [0u64; 4];
    let mut caught = [0u64; 4];
    for seed in 0..cases() {
        let inject = 1 + (seed % 3) as u8;
        let Some(sim) = simulate(seed, inject) else {
            continue;
        };
        let now = sim.end + 1000;
        let phase = if inject == 1 {
            Phase::Startup
        } else {
            Phase::Shutdown
        };
        for (label, r) in [
            (
                "offline",
                judge_history(
                    &History::of(snapshot(&sim, now), &events_at(&sim, now, 0, i64::MIN)),
                    &Config::default(),
                    None,
                ),
            ),
            (
                "offline without events",
                judge_history(
                    &History::of(snapshot(&sim, now), &[]),
                    &Config::default(),
                    None,
                ),
            ),
        ] {
            let verdict = if phase == Phase::Startup {
                r.startup
            } else {
                r.shutdown
            };
            assert!(
                verdict == Verdict::Violated || verdict == Verdict::Indeterminate,
                "seed {seed}, injection {inject}, {label}: {phase:?} is {verdict:?}\n{}\n{sim:#?}",
                serde_json::to_string_pretty(&r).unwrap()
            );
            judged[inject as usize] += 1;
            caught[inject as usize] += u64::from(verdict == Verdict::Violated);
        }
    }
    for (k, n) in judged.iter().enumerate().skip(1) {
        assert!(*n > 100, "injection {k}: only {n} judged");
    }
    eprintln!("completeness: judged {judged:?}, Violated {caught:?} (the rest Indeterminate)");
}

// ---------------------------------------------------------------------------
// The same histories through the controller's store: Pod and Event objects
// as the watch delivers them.

use k8s_openapi::api::core::v1::{Event, Pod};
use serde_json::{Value, json};
use sidecar_order::controller::store::Store;
use sidecar_order::time::rfc3339;

fn status_json(c: &ContainerFacts) -> Value {
    let term = |r: &Run| {
        json!({"terminated": {
            "exitCode": r.exit_code.unwrap_or(0),
            "startedAt": r.started.map(|m| rfc3339(m.secs)),
            "finishedAt": r.finished.map(|m| rfc3339(m.secs)),
        }})
    };
    let current = c.runs.iter().rev().find(|r| r.current);
    let last = c.runs.iter().rev().find(|r| !r.current && r.in_status);
    let state = match (c.state, current) {
        (StateKind::Running, Some(r)) => {
            json!({"running": {"startedAt": r.started.map(|m| rfc3339(m.secs))}})
        }
        (StateKind::Terminated, Some(r)) => term(r),
        _ => json!({"waiting": {"reason": "PodInitializing"}}),
    };
    json!({
        "name": c.name, "image": "i", "imageID": "", "ready": false,
        "restartCount": c.restarts, "state": state,
        "lastState": last.map_or(json!({}), term),
    })
}

fn pod_json(p: &PodFacts) -> Pod {
    let spec_of = |c: &ContainerFacts| {
        let mut v = json!({"name": c.name, "image": "i"});
        if c.role == Role::Sidecar {
            v["restartPolicy"] = json!("Always");
        }
        if c.declares.startup {
            v["startupProbe"] = json!({"exec": {"command": ["true"]}});
        }
        v
    };
    let of = |app: bool| {
        p.containers
            .iter()
            .filter(move |c| (c.role == Role::App) == app)
    };
    let mut meta = json!({"name": p.name, "namespace": p.namespace, "uid": p.uid});
    if let Some(d) = p.deletion {
        meta["deletionTimestamp"] = json!(rfc3339(d.deadline_secs));
        meta["deletionGracePeriodSeconds"] = json!(d.grace_secs);
    }
    let mut status = json!({
        "phase": if p.finished_phase { "Succeeded" } else { "Running" },
        "initContainerStatuses": of(false).map(status_json).collect::<Vec<_>>(),
        "containerStatuses": of(true).map(status_json).collect::<Vec<_>>(),
    });
    if let Some(secs) = p.sandbox_ready {
        status["conditions"] = json!([{"type": "PodReadyToStartContainers", "status": "True", "lastTransitionTime": rfc3339(secs)}]);
    }
    serde_json::from_value(json!({
        "metadata": meta,
        "spec": {
            "restartPolicy": match p.restart_policy { RestartPolicy::Always => "Always", RestartPolicy::Never => "Never", RestartPolicy::OnFailure => "OnFailure" },
            "terminationGracePeriodSeconds": p.grace_secs,
            "initContainers": of(false).map(spec_of).collect::<Vec<_>>(),
            "containers": of(true).map(spec_of).collect::<Vec<_>>(),
        },
        "status": status,
    }))
    .expect("a valid Pod")
}

fn event_json(p: &PodFacts, e: &EventFact) -> Event {
    let mut obj = json!({"kind": "Pod", "name": p.name, "namespace": p.namespace, "uid": p.uid});
    if let Some(i) = e.container {
        let c = &p.containers[usize::from(i)];
        let list = if c.role == Role::App {
            "spec.containers"
        } else {
            "spec.initContainers"
        };
        obj["fieldPath"] = json!(format!("{list}{{{}}}", c.name));
    }
    let message = match e.probe {
        Some(ProbeKind::Startup) => "Startup probe failed: no",
        _ => "",
    };
    serde_json::from_value(json!({
        "metadata": {"name": e.key, "namespace": p.namespace},
        "involvedObject": obj,
        "reason": format!("{:?}", e.reason),
        "message": message,
        "count": e.count,
        "firstTimestamp": rfc3339(e.first.secs),
        "lastTimestamp": rfc3339(e.last.secs),
    }))
    .expect("a valid Event")
}

#[test]
fn soundness_through_the_controllers_store() {
    let mut histories = 0;
    let mut updates = 0;
    for seed in 0..cases() / 5 {
        let Some(sim) = simulate(seed, 0) else {
            continue;
        };
        histories += 1;
        let mut rng = Rng(seed ^ 0x5151_7A7A | 1);
        let mut store = Store::new(Config::default());
        let mut now = sim.sandboxes[0];
        let mut sent: Vec<EventFact> = Vec::new();
        while now <= sim.end + 1000 {
            let snap = snapshot(&sim, now);
            let mut out = store.pod_applied(&pod_json(&snap), now.div_euclid(1000));
            let evs = events_at(&sim, now, rng.range(0, 3000), i64::MIN);
            for e in &evs {
                if !sent.contains(e) {
                    out.extend(store.event_applied(&event_json(&snap, e), now.div_euclid(1000)));
                    sent.push(e.clone());
                }
            }
            for u in &out {
                updates += 1;
                let errs = errors(&u.status.report);
                assert!(
                    errs.is_empty(),
                    "seed {seed}: the store reported {errs:#?}\n{sim:#?}"
                );
            }
            now += rng.range(200, 6000);
        }
    }
    assert!(histories > 0);
    eprintln!("store: {histories} histories, {updates} report updates");
}
