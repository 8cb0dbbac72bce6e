//! The report writer's work queue, sans IO: the newest work per report,
//! one write in flight per report, bounded concurrency and per-report
//! exponential backoff. No client, no tokio: the caller passes the time.

use crate::controller::memory;
use crate::controller::store::Update;
use std::collections::hash_map::RandomState;
use std::collections::{BTreeSet, HashMap, HashSet, VecDeque};
use std::hash::BuildHasher;
use std::time::{Duration, Instant};

/// A report: (namespace, name).
pub type Key = (String, String);

/// An update on its way to the API, with when its watch event arrived.
#[derive(Clone, Debug)]
pub struct Outgoing {
    pub update: Update,
    /// When the watch event that caused it arrived; of several merged, the
    /// earliest urgent one's (else the earliest): the report latency.
    pub seen_at: Instant,
    /// It changes what the stored report concludes
    /// (`ledger::conclusion_hash`): written after `Queue::gathering`'s
    /// wait. Else (only the containers' states, or a passed check) after
    /// `Queue::refreshing`'s, unless something urgent comes meanwhile.
    pub urgent: bool,
}

/// What the writer is asked to do with one report.
// Unboxed: the queue holds at most one per report and nearly all are applies.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Debug)]
pub enum Work {
    /// Write this report (created with its status, or patched), then its pod Events.
    Apply(Outgoing),
    /// Delete this report (garbage collection decided by the store, which
    /// never asks for the report of a pod it still tracks).
    Delete { namespace: String, name: String },
    /// Close this stored report, still read as live, whose pod was deleted
    /// while no controller watched (`at`: unix seconds it was found gone).
    Close {
        namespace: String,
        name: String,
        at: i64,
    },
}

impl Work {
    pub fn key(&self) -> Key {
        match self {
            Work::Apply(o) => (o.update.namespace.clone(), o.update.report_name.clone()),
            Work::Delete { namespace, name }
            | Work::Close {
                namespace, name, ..
            } => (namespace.clone(), name.clone()),
        }
    }
}

/// Merges newer work for a report into older work not written yet: the
/// newest status (or a delete) wins (what it adds to the counts is found
/// against the ledger when it is written); the earliest `seen_at` stays, so
/// latency measures the oldest change the write carries.
pub fn coalesce(older: Work, newer: Work) -> Work {
    match (older, newer) {
        (Work::Apply(old), Work::Apply(mut new)) => {
            new.seen_at = match (old.urgent, new.urgent) {
                (true, false) => old.seen_at,
                (false, true) => new.seen_at,
                _ => new.seen_at.min(old.seen_at),
            };
            new.urgent |= old.urgent;
            Work::Apply(new)
        }
        (_, newer) => newer,
    }
}

/// What became of a write.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
pub enum Outcome {
    /// Written (or deliberately dropped): the key's backoff resets.
    Done,
    /// Failed for now: written again after a backoff, unless newer work
    /// for the key came meanwhile (then that, merged with this).
    Retry(Work),
}

struct Backoff {
    failures: u32,
    /// Set while the key waits; cleared when the wait is over.
    until: Option<Instant>,
}

pub struct Queue {
    concurrency: usize,
    backoff_min: Duration,
    backoff_max: Duration,
    pending: HashMap<Key, Work>,
    /// Pending keys neither in flight nor backing off, oldest first.
    ready: VecDeque<Key>,
    in_flight: HashSet<Key>,
    backoff: HashMap<Key, Backoff>,
    /// The ends of the waits (backoffs, and new work gathering), soonest first.
    timers: BTreeSet<(Instant, Key)>,
    /// Keys whose new work waits (gathering or refreshing): when.
    due: HashMap<Key, Instant>,
    /// How long new work for a report waits for more of the same change
    /// before it is written (`gathering`).
    gather: Duration,
    /// How long work that is not urgent waits (`refreshing`).
    refresh: Duration,
}

impl Queue {
    pub fn new(concurrency: usize, backoff_min: Duration, backoff_max: Duration) -> Self {
        Queue {
            concurrency: concurrency.max(1),
            backoff_min,
            backoff_max: backoff_max.max(backoff_min),
            pending: HashMap::new(),
            ready: VecDeque::new(),
            in_flight: HashSet::new(),
            backoff: HashMap::new(),
            timers: BTreeSet::new(),
            due: HashMap::new(),
            gather: Duration::ZERO,
            refresh: Duration::ZERO,
        }
    }

    /// New work for a report that has none pending is written `gather`
    /// after its watch event arrived, not at once: what else the same
    /// change brings meanwhile (the kubelet's Event beside a container's
    /// new status, the next container's start) goes in the same write.
    /// Work queued behind a write in flight or a backoff has waited
    /// already and does not wait again; deletes and closes do not wait.
    pub fn gathering(self, gather: Duration) -> Self {
        Queue { gather, ..self }
    }

    /// Work that is not urgent (`Outgoing::urgent`) waits `refresh` (at
    /// least the gather) after its watch event, in case something urgent
    /// comes for the same report meanwhile and carries it; urgent work
    /// arriving pulls the wait in to its own gather.
    pub fn refreshing(self, refresh: Duration) -> Self {
        Queue { refresh, ..self }
    }

    /// When new work would be written, were its key idle.
    fn wait_until(&self, work: &Work) -> Option<Instant> {
        match work {
            Work::Apply(o) if o.urgent && !self.gather.is_zero() => Some(o.seen_at + self.gather),
            Work::Apply(o) if !o.urgent && !self.refresh.max(self.gather).is_zero() => {
                Some(o.seen_at + self.refresh.max(self.gather))
            }
            _ => None,
        }
    }

    /// Queues work; merges it into what is pending for its key.
    pub fn push(&mut self, work: Work) {
        let key = work.key();
        let want = self.wait_until(&work);
        match self.pending.remove(&key) {
            Some(older) => {
                self.pending.insert(key.clone(), coalesce(older, work));
                // Waiting longer than this work would: written sooner.
                if let Some(&due) = self.due.get(&key)
                    && want.is_none_or(|w| w < due)
                {
                    self.timers.remove(&(due, key.clone()));
                    match want {
                        Some(w) => {
                            self.timers.insert((w, key.clone()));
                            self.due.insert(key, w);
                        }
                        None => {
                            self.due.remove(&key);
                            self.ready.push_back(key);
                        }
                    }
                }
            }
            None => {
                if self.idle(&key) {
                    match want {
                        Some(w) => {
                            self.timers.insert((w, key.clone()));
                            self.due.insert(key.clone(), w);
                        }
                        None => self.ready.push_back(key.clone()),
                    }
                }
                self.pending.insert(key, work);
            }
        }
    }

    /// Every wait of new work ends now (shutting down: nothing waits for
    /// more changes that will not come).
    pub fn hurry(&mut self) {
        for (key, due) in self.due.drain() {
            self.timers.remove(&(due, key.clone()));
            if self.pending.contains_key(&key) {
                self.ready.push_back(key);
            }
        }
    }

    /// The next work to write now, if a slot is free and a key is ready.
    /// The key counts as in flight until `done`.
    pub fn next_ready(&mut self, now: Instant) -> Option<Work> {
        while let Some((at, _)) = self.timers.first()
            && *at <= now
        {
            let (at, key) = self.timers.pop_first().expect("present");
            if self.due.get(&key) == Some(&at) {
                self.due.remove(&key);
            }
            if let Some(b) = self.backoff.get_mut(&key) {
                b.until = None;
            }
            if self.pending.contains_key(&key) {
                self.ready.push_back(key);
            }
        }
        if self.in_flight.len() >= self.concurrency {
            return None;
        }
        let key = self.ready.pop_front()?;
        let work = self.pending.remove(&key).expect("a ready key is pending");
        self.in_flight.insert(key);
        self.trim();
        Some(work)
    }

    /// Ends the write in flight for `key`.
    pub fn done(&mut self, key: &Key, outcome: Outcome, now: Instant) {
        self.in_flight.remove(key);
        match outcome {
            Outcome::Done => {
                self.backoff.remove(key);
                self.trim();
                // Work that came meanwhile has waited, unless it is not
                // urgent: that still waits for its refresh.
                match self.pending.get(key) {
                    Some(Work::Apply(o)) if !o.urgent && !self.refresh.is_zero() => {
                        let at = (o.seen_at + self.refresh.max(self.gather)).max(now);
                        self.timers.insert((at, key.clone()));
                        self.due.insert(key.clone(), at);
                    }
                    Some(_) => self.ready.push_back(key.clone()),
                    None => {}
                }
            }
            Outcome::Retry(work) => {
                let work = match self.pending.remove(key) {
                    Some(newer) => coalesce(work, newer),
                    None => work,
                };
                self.pending.insert(key.clone(), work);
                let b = self.backoff.entry(key.clone()).or_insert(Backoff {
                    failures: 0,
                    until: None,
                });
                b.failures += 1;
                let until = now + delay(self.backoff_min, self.backoff_max, b.failures, key);
                b.until = Some(until);
                self.timers.insert((until, key.clone()));
            }
        }
    }

    /// When the soonest backoff ends.
    pub fn next_wake(&self) -> Option<Instant> {
        self.timers.first().map(|(at, _)| *at)
    }

    /// Reports waiting to be written (not counting those in flight).
    pub fn pending(&self) -> usize {
        self.pending.len()
    }

    /// Work for `key` is pending or in flight.
    pub fn holds(&self, key: &Key) -> bool {
        self.pending.contains_key(key) || self.in_flight.contains(key)
    }

    pub fn in_flight(&self) -> usize {
        self.in_flight.len()
    }

    pub fn is_empty(&self) -> bool {
        self.pending.is_empty() && self.in_flight.is_empty()
    }

    /// Drops every pending write and backoff (leadership lost: they are
    /// the new leader's); writes in flight still end with `done`.
    pub fn clear_pending(&mut self) {
        self.pending.clear();
        self.ready.clear();
        self.backoff.clear();
        self.timers.clear();
        self.due.clear();
        self.trim();
    }

    /// Forgets everything, the writes in flight too (their futures are
    /// dropped by the caller): leadership lost.
    pub fn clear(&mut self) {
        self.clear_pending();
        self.in_flight.clear();
        self.trim();
    }

    /// Gives back the room a burst of work left in the tables
    /// (`memory::trim_map`); cleared ones too (`clear` keeps room).
    fn trim(&mut self) {
        memory::trim_map(&mut self.pending);
        memory::trim_deque(&mut self.ready);
        memory::trim_set(&mut self.in_flight);
        memory::trim_map(&mut self.backoff);
        memory::trim_map(&mut self.due);
    }

    /// Neither in flight nor backing off.
    fn idle(&self, key: &Key) -> bool {
        !self.in_flight.contains(key) && self.backoff.get(key).is_none_or(|b| b.until.is_none())
    }
}

/// `min` doubled per failure after the first, at most `max`, less up to a
/// tenth so that reports which failed together do not retry together.
fn delay(min: Duration, max: Duration, failures: u32, key: &Key) -> Duration {
    let base = min
        .saturating_mul(1 << failures.saturating_sub(1).min(20))
        .min(max);
    let tenths = RandomState::new().hash_one((key, failures)) % 1000;
    base - base.mul_f64(tenths as f64 / 10_000.0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::controller::store::Workload;
    use crate::crd::{ReportSpec, ReportStatus};
    use crate::report::{Evidence, Report, Verdict};

    const MS: Duration = Duration::from_millis(1);

    fn apply(name: &str, shutdown: Verdict, _violations: usize, seen_at: Instant) -> Work {
        let report = Report {
            startup: Verdict::Verified,
            shutdown,
            sidecars: 1,
            evidence: Evidence::Complete,
            gaps: vec![],
            violations: vec![],
            probe_failures: vec![],
            containers: vec![],
            checks: vec![],
        };
        Work::Apply(Outgoing {
            update: Update {
                namespace: "ns".into(),
                report_name: name.into(),
                pod_name: name.into(),
                pod_uid: "uid".into(),
                workload: Workload::default(),
                spec: ReportSpec {
                    pod_name: name.into(),
                    pod_uid: "uid".into(),
                    workload: None,
                },
                status: ReportStatus::new(report, None),
            },
            seen_at,
            urgent: true,
        })
    }

    /// The 10,000 writes a restart queues at 10,000 pods, written: the
    /// queue's tables do not keep their room (8.5 MB before).
    #[test]
    fn a_written_burst_leaves_no_room_behind() {
        let mut q = Queue::new(32, MS, MS);
        let t = Instant::now();
        for i in 0..10_000 {
            q.push(apply(&format!("r{i}"), Verdict::Pending, 0, t));
        }
        let full = q.pending.capacity();
        while let Some(w) = q.next_ready(t) {
            q.done(&w.key(), Outcome::Done, t);
        }
        assert!(q.is_empty());
        assert!(
            q.pending.capacity() * 8 < full,
            "{} of {full}",
            q.pending.capacity()
        );
        assert!(q.ready.capacity() <= 128, "{}", q.ready.capacity());
        // A burst dropped with the lease gives its room back too.
        for i in 0..10_000 {
            q.push(apply(&format!("r{i}"), Verdict::Pending, 0, t));
        }
        q.clear();
        assert!(q.pending.capacity() * 8 < full, "{}", q.pending.capacity());
        assert!(q.ready.capacity() <= 128, "{}", q.ready.capacity());
    }

    fn delete(name: &str) -> Work {
        Work::Delete {
            namespace: "ns".into(),
            name: name.into(),
        }
    }

    fn key(name: &str) -> Key {
        ("ns".into(), name.into())
    }

    fn outgoing(w: Work) -> Outgoing {
        match w {
            Work::Apply(o) => o,
            other => panic!("not an apply: {other:?}"),
        }
    }

    #[test]
    fn the_newest_status_wins_the_earliest_seen_stays() {
        let t0 = Instant::now();
        let mut q = Queue::new(8, MS, MS);
        q.push(apply("a", Verdict::Pending, 1, t0));
        q.push(apply("a", Verdict::Violated, 2, t0 + MS));
        assert_eq!(q.pending(), 1);
        let o = outgoing(q.next_ready(t0).unwrap());
        assert_eq!(o.update.status.report.shutdown, Verdict::Violated);
        assert_eq!(o.seen_at, t0);
        assert!(q.next_ready(t0).is_none());
    }

    #[test]
    fn a_key_in_flight_waits_and_is_written_once_more_with_the_newest() {
        let t0 = Instant::now();
        let mut q = Queue::new(8, MS, MS);
        q.push(apply("a", Verdict::Pending, 0, t0));
        q.next_ready(t0).unwrap();
        q.push(apply("a", Verdict::Verified, 0, t0));
        q.push(apply("a", Verdict::Violated, 0, t0));
        assert!(q.next_ready(t0).is_none(), "written concurrently");
        q.done(&key("a"), Outcome::Done, t0);
        let o = outgoing(q.next_ready(t0).unwrap());
        assert_eq!(o.update.status.report.shutdown, Verdict::Violated);
        q.done(&key("a"), Outcome::Done, t0);
        assert!(q.next_ready(t0).is_none());
        assert!(q.is_empty());
    }

    fn lagging(name: &str, shutdown: Verdict, seen_at: Instant) -> Work {
        let mut w = apply(name, shutdown, 0, seen_at);
        if let Work::Apply(o) = &mut w {
            o.urgent = false;
        }
        w
    }

    #[test]
    fn work_that_is_not_urgent_waits_for_urgent_work_to_carry_it() {
        let t0 = Instant::now();
        let (gather, refresh) = (Duration::from_millis(250), Duration::from_secs(10));
        let mut q = Queue::new(8, MS, MS).gathering(gather).refreshing(refresh);
        // A container started: written within `refresh`, not at the gather.
        q.push(lagging("a", Verdict::Pending, t0));
        assert!(q.next_ready(t0 + gather).is_none(), "written at the gather");
        assert_eq!(q.next_wake(), Some(t0 + refresh));
        // The verdict 2 s later: written at its own gather, with its latency.
        let t1 = t0 + Duration::from_secs(2);
        q.push(apply("a", Verdict::Verified, 0, t1));
        assert_eq!(q.next_wake(), Some(t1 + gather));
        assert!(q.next_ready(t1 + gather - MS).is_none(), "written early");
        let o = outgoing(q.next_ready(t1 + gather).unwrap());
        assert_eq!(o.update.status.report.shutdown, Verdict::Verified);
        assert!(o.urgent);
        assert_eq!(o.seen_at, t1, "the latency counts from the urgent change");
        q.done(&key("a"), Outcome::Done, t1 + gather);
        // The refresh's old timer is gone: nothing more is written.
        assert!(q.next_ready(t0 + refresh * 2).is_none());
        assert!(q.is_empty());
        // Alone, it is written at `refresh`, urgent no more.
        q.push(lagging("b", Verdict::Pending, t0));
        assert!(q.next_ready(t0 + refresh - MS).is_none());
        let o = outgoing(q.next_ready(t0 + refresh).unwrap());
        assert!(!o.urgent);
        // Lagging work that came while a write was in flight still waits.
        q.done(&key("b"), Outcome::Done, t0 + refresh);
        q.push(apply("d", Verdict::Pending, 0, t0));
        let t2 = t0 + gather;
        assert!(q.next_ready(t2).is_some());
        q.push(lagging("d", Verdict::Verified, t2));
        q.done(&key("d"), Outcome::Done, t2 + MS);
        assert!(
            q.next_ready(t2 + MS).is_none(),
            "lagging work written at once"
        );
        assert_eq!(q.next_wake(), Some(t2 + refresh));
        let o = outgoing(q.next_ready(t2 + refresh).unwrap());
        assert_eq!(o.update.status.report.shutdown, Verdict::Verified);
        q.done(&key("d"), Outcome::Done, t2 + refresh);
        // Urgent work merged with later lagging work stays urgent.
        q.push(apply("c", Verdict::Verified, 0, t0));
        q.push(lagging("c", Verdict::Violated, t0 + MS));
        let o = outgoing(q.next_ready(t0 + gather).unwrap());
        assert!(o.urgent);
        assert_eq!(o.update.status.report.shutdown, Verdict::Violated);
    }

    #[test]
    fn shutting_down_writes_what_waits_at_once() {
        let t0 = Instant::now();
        let mut q = Queue::new(8, MS, MS)
            .gathering(Duration::from_millis(250))
            .refreshing(Duration::from_secs(10));
        q.push(lagging("a", Verdict::Pending, t0));
        q.push(apply("b", Verdict::Pending, 0, t0));
        assert!(q.next_ready(t0).is_none());
        q.hurry();
        let mut names: Vec<String> = std::iter::from_fn(|| q.next_ready(t0))
            .map(|w| outgoing(w).update.report_name)
            .collect();
        names.sort();
        assert_eq!(names, ["a", "b"]);
        assert_eq!(q.next_wake(), None);
    }

    #[test]
    fn new_work_gathers_the_rest_of_its_change_before_it_is_written() {
        let t0 = Instant::now();
        let gather = Duration::from_millis(250);
        let mut q = Queue::new(8, MS, MS).gathering(gather);
        q.push(apply("a", Verdict::Pending, 0, t0));
        // The kubelet's Event of the same start, 20 ms later: one write.
        q.push(apply("a", Verdict::Verified, 0, t0 + MS * 20));
        assert!(q.next_ready(t0 + gather - MS).is_none(), "written early");
        assert_eq!(q.next_wake(), Some(t0 + gather));
        let o = outgoing(q.next_ready(t0 + gather).unwrap());
        assert_eq!(o.update.status.report.shutdown, Verdict::Verified);
        assert_eq!(o.seen_at, t0);
        // Work that came while its write was in flight has waited: it is
        // written as soon as that write is done.
        q.push(apply("a", Verdict::Violated, 0, t0 + gather + MS));
        q.done(&key("a"), Outcome::Done, t0 + gather + MS * 2);
        let o = outgoing(q.next_ready(t0 + gather + MS * 2).unwrap());
        assert_eq!(o.update.status.report.shutdown, Verdict::Violated);
        // A delete does not wait.
        q.push(delete("b"));
        assert!(matches!(
            q.next_ready(t0 + gather + MS * 2),
            Some(Work::Delete { .. })
        ));
    }

    #[test]
    fn a_delete_drops_the_pending_apply() {
        let t0 = Instant::now();
        let mut q = Queue::new(8, MS, MS);
        q.push(apply("a", Verdict::Pending, 1, t0));
        q.push(delete("a"));
        assert!(matches!(q.next_ready(t0), Some(Work::Delete { .. })));
        assert!(q.next_ready(t0).is_none());
    }

    #[test]
    fn at_most_concurrency_in_flight_oldest_first() {
        let t0 = Instant::now();
        let mut q = Queue::new(2, MS, MS);
        for name in ["a", "b", "c"] {
            q.push(apply(name, Verdict::Pending, 0, t0));
        }
        let first = q.next_ready(t0).unwrap().key();
        let second = q.next_ready(t0).unwrap().key();
        assert_eq!((first, second), (key("a"), key("b")));
        assert!(q.next_ready(t0).is_none());
        assert_eq!(q.in_flight(), 2);
        q.done(&key("b"), Outcome::Done, t0);
        assert_eq!(q.next_ready(t0).unwrap().key(), key("c"));
    }

    #[test]
    fn a_failure_backs_off_doubling_to_the_cap_and_success_resets() {
        let t0 = Instant::now();
        let (min, max) = (Duration::from_millis(200), Duration::from_millis(1000));
        let mut q = Queue::new(8, min, max);
        q.push(apply("a", Verdict::Pending, 0, t0));
        let mut now = t0;
        for want in [200, 400, 800, 1000, 1000] {
            let w = q.next_ready(now).expect("ready after its backoff");
            q.done(&key("a"), Outcome::Retry(w), now);
            let wait = q.next_wake().unwrap() - now;
            let want = Duration::from_millis(want);
            assert!(wait <= want && wait >= want.mul_f64(0.9), "{wait:?}");
            assert!(q.next_ready(now + wait - MS).is_none(), "retried early");
            now += wait;
        }
        let w = q.next_ready(now).unwrap();
        q.done(&key("a"), Outcome::Done, now);
        // The next failure starts again from the minimum.
        q.push(w);
        let w = q.next_ready(now).unwrap();
        q.done(&key("a"), Outcome::Retry(w), now);
        assert!(q.next_wake().unwrap() - now <= min);
    }

    #[test]
    fn newer_work_for_a_key_backing_off_replaces_it_and_waits() {
        let t0 = Instant::now();
        let mut q = Queue::new(8, Duration::from_secs(1), Duration::from_secs(1));
        q.push(apply("a", Verdict::Pending, 1, t0));
        let w = q.next_ready(t0).unwrap();
        q.done(&key("a"), Outcome::Retry(w), t0);
        q.push(apply("a", Verdict::Verified, 1, t0 + MS));
        q.push(apply("b", Verdict::Pending, 0, t0));
        // "b" is not held up by "a".
        assert_eq!(q.next_ready(t0).unwrap().key(), key("b"));
        assert!(q.next_ready(t0 + MS * 500).is_none());
        let o = outgoing(q.next_ready(t0 + Duration::from_secs(1)).unwrap());
        assert_eq!(o.update.status.report.shutdown, Verdict::Verified);
        assert_eq!(o.seen_at, t0);
    }

    #[test]
    fn a_failed_write_merges_under_newer_work_that_came_meanwhile() {
        let t0 = Instant::now();
        let mut q = Queue::new(8, MS, MS);
        q.push(apply("a", Verdict::Pending, 1, t0));
        let w = q.next_ready(t0).unwrap();
        q.push(apply("a", Verdict::Violated, 1, t0 + MS));
        q.done(&key("a"), Outcome::Retry(w), t0);
        let o = outgoing(q.next_ready(t0 + MS).unwrap());
        assert_eq!(o.update.status.report.shutdown, Verdict::Violated);
        // A delete that came meanwhile wins over the failed apply.
        q.push(delete("a"));
        q.done(&key("a"), Outcome::Retry(Work::Apply(o)), t0);
        assert!(matches!(q.next_ready(t0 + MS), Some(Work::Delete { .. })));
    }
}
