//! The controller's in-memory index: watch events in, report updates out.
//!
//! Sans-IO like the engine: it takes decoded watch events and the caller's
//! clock, keeps a compact projection per pod that has native sidecars, judges
//! it, and returns the reports that changed. What they add to the metrics
//! is the writer's to count, against the stored reports (`ledger`), once
//! the write succeeded. Every cost here is per pod touched:
//! the verdict gauges are kept incrementally and garbage collection reads
//! the index of reports whose pod is gone (`gc::Gone`), never a list.

use super::pending::Pending;
use crate::controller::gc::{Gone, ReportRef};
use crate::controller::ledger::{secs_of, status_hash};
use crate::crd::{ReportSpec, ReportStatus, report_name};
use crate::engine::history::{History, MAX_EVENTS};
use crate::judge::{Config, Decided, judge_history};
use crate::kubelet::KubeletVersion;
use crate::observe::{EventFit, RawEvent, has_native_sidecar, kubelet_version_of, pod_facts};
use crate::report::{ProbeFailure, Report, Verdict};
use crate::time::rfc3339;
use k8s_openapi::api::core::v1::{Event, Node, Pod};
use std::collections::{HashMap, HashSet, VecDeque};

/// How long the final report of a pod that ended is kept: a replica that
/// takes the lease over writes it if the old leader did not.
pub const RECENT_FINAL_SECS: i64 = 60;
/// At most this many such final reports are kept.
pub const MAX_RECENT_FINAL: usize = 4096;

/// Distinct event objects kept per pod; more are dropped and reported as a gap.
pub const MAX_EVENTS_PER_POD: usize = MAX_EVENTS;

pub use super::workload::Workload;

/// A report to write.
#[derive(Clone, Debug, PartialEq)]
pub struct Update {
    pub namespace: String,
    pub report_name: String,
    pub pod_name: String,
    pub pod_uid: String,
    pub workload: Workload,
    pub spec: ReportSpec,
    pub status: ReportStatus,
}

struct Tracked {
    /// Every observation of the pod and its events, merged by the engine.
    history: History,
    /// The decided checks and the violations of the last report (or of the
    /// stored one after a restart): what later judgements keep.
    decided: Option<Decided>,
    workload: Workload,
    /// The hash of the last status returned: an unchanged one is not.
    last_hash: u64,
    ended_at: Option<i64>,
    verdicts: (Verdict, Verdict),
    /// The pod's node, an index into `Nodes` (None: not scheduled yet).
    node: Option<u32>,
    /// The probe failures a stored report recorded before a restart (see
    /// `ProbeFloor`); None for a pod first seen by this process.
    probe_floor: Option<Box<ProbeFloor>>,
}

/// Probe failure counts come from the kubelet's Unhealthy events, which the
/// API server forgets (one hour after their last occurrence): a restarted
/// controller can rebuild fewer failures than its stored report recorded.
/// The stored counts are a floor, and failures rebuilt later are added on
/// top: count = stored + (rebuilt now - rebuilt once the events were
/// listed), never less than what is rebuilt. So a restart neither lowers a
/// stored count nor hides new failures until the rebuilt count passes it.
struct ProbeFloor {
    /// Each stored failure line, with the count rebuilt for it once the
    /// event list was complete (None until then).
    lines: Vec<(ProbeFailure, Option<u32>)>,
}

impl ProbeFloor {
    fn of(stored: &[ProbeFailure]) -> Option<Box<ProbeFloor>> {
        (!stored.is_empty()).then(|| {
            Box::new(ProbeFloor {
                lines: stored.iter().map(|p| (p.clone(), None)).collect(),
            })
        })
    }

    /// Raises `report`'s probe failures to the floor; `complete`: every
    /// event the API server held at the restart has been read.
    fn apply(&mut self, report: &mut Report, complete: bool) {
        for (stored, base) in &mut self.lines {
            let same =
                |p: &&mut ProbeFailure| p.container == stored.container && p.probe == stored.probe;
            let rebuilt = report.probe_failures.iter_mut().find(same);
            let r = rebuilt.as_ref().map_or(0, |p| p.count);
            if complete && base.is_none() {
                *base = Some(r);
            }
            let count = match *base {
                Some(b) => r.max(stored.count + r.saturating_sub(b)),
                None => r.max(stored.count),
            };
            match rebuilt {
                Some(p) => {
                    p.count = count;
                    if stored.first_time < p.first_time {
                        p.first_time.clone_from(&stored.first_time);
                    }
                    if stored.last_time > p.last_time {
                        p.last_time.clone_from(&stored.last_time);
                    }
                }
                None => report.probe_failures.push(ProbeFailure {
                    count,
                    ..stored.clone()
                }),
            }
        }
    }
}

/// The nodes pods run on, each with its kubelet's version when known.
#[derive(Default)]
struct Nodes {
    ids: HashMap<String, u32>,
    versions: Vec<Option<KubeletVersion>>,
}

impl Nodes {
    fn id(&mut self, name: &str) -> u32 {
        if let Some(&id) = self.ids.get(name) {
            return id;
        }
        let id = self.versions.len() as u32;
        self.ids.insert(name.into(), id);
        self.versions.push(None);
        id
    }

    fn version(&self, id: Option<u32>) -> Option<KubeletVersion> {
        id.and_then(|i| self.versions.get(i as usize).copied().flatten())
    }
}

/// What the index keeps of a stored report: read at start-up (kept until
/// its pod is seen, or its namespace's list ends without it) and at every
/// takeover (taken into its pod's judgement, `Store::took_over`).
pub struct StoredReport {
    namespace: String,
    name: String,
    pod_name: String,
    uid: String,
    status_hash: u64,
    decided: Decided,
    ended_at: Option<i64>,
    probe_floor: Option<Box<ProbeFloor>>,
}

impl StoredReport {
    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn of(namespace: &str, name: &str, spec: &ReportSpec, status: &ReportStatus) -> Self {
        StoredReport {
            namespace: namespace.into(),
            name: name.into(),
            pod_name: spec.pod_name.clone(),
            uid: spec.pod_uid.clone(),
            status_hash: status_hash(spec, status),
            decided: Decided::of(&status.report),
            ended_at: secs_of(&status.pod_ended_at),
            probe_floor: ProbeFloor::of(&status.report.probe_failures),
        }
    }
}

/// What a (re)list's end produced: reports of pods that are gone, and
/// stored reports whose pod never showed up and that still read as live
/// (the writer closes them: the pod was deleted while nobody watched).
#[derive(Debug, Default)]
pub struct Resynced {
    pub updates: Vec<Update>,
    pub closed: Vec<ReportRef>,
}

impl Resynced {
    pub fn is_empty(&self) -> bool {
        self.updates.is_empty() && self.closed.is_empty()
    }
}

type Key = (String, String);

/// What judging a pod needs besides the pod.
#[derive(Clone, Copy)]
struct Cx {
    cfg: Config,
    /// Every watched event has been listed once (see `ProbeFloor`).
    events_listed: bool,
}

pub struct Store {
    cfg: Config,
    events_listed: bool,
    /// Set by `hold_judgements`: until the watches sync (`events_listed`),
    /// objects are taken in unjudged (`holding`).
    hold: bool,
    // Boxed: the map's spare slots then cost a pointer, not a whole entry.
    pods: HashMap<Key, Box<Tracked>>,
    /// Events of pods not seen yet.
    pending: Pending,
    /// Stored reports read at start-up whose pod is not seen yet, by pod uid.
    preloaded: HashMap<String, StoredReport>,
    /// Pods listed so far by each (re)list in progress, by its watch's
    /// namespace (None: all namespaces).
    resync: HashMap<Option<String>, HashSet<Key>>,
    /// The (re)lists in progress that hold every pod already (`pods_listed`).
    resync_whole: HashSet<Option<String>>,
    /// Tracked pods by (startup, shutdown) verdict, kept as they change.
    verdicts: HashMap<(Verdict, Verdict), i64>,
    /// Reports whose pod is gone, by when it ended: what GC may delete.
    gone: Gone,
    nodes: Nodes,
    /// Final reports of pods that ended in the last `RECENT_FINAL_SECS`.
    recent: VecDeque<(i64, Update)>,
}

impl Store {
    pub fn new(cfg: Config) -> Store {
        Store {
            cfg,
            events_listed: false,
            hold: false,
            pods: HashMap::new(),
            pending: Pending::default(),
            preloaded: HashMap::new(),
            resync: HashMap::new(),
            resync_whole: HashSet::new(),
            verdicts: HashMap::new(),
            gone: Gone::default(),
            nodes: Nodes::default(),
            recent: VecDeque::new(),
        }
    }

    fn cx(&self) -> Cx {
        Cx {
            cfg: self.cfg,
            events_listed: self.events_listed,
        }
    }

    /// Until `watches_synced`, pods, events and nodes are taken in without
    /// being judged: a controller starting up judges each pod once, with
    /// all its listed events, instead of once per listed pod and event (at
    /// start-up the lists arrive in name order, not in the order things
    /// happened, and nothing judged before the lists are in is written).
    pub fn hold_judgements(&mut self) {
        self.hold = true;
    }

    fn holding(&self) -> bool {
        self.hold && !self.events_listed
    }

    /// Every watch has listed once: the events the API server held at the
    /// start are all in (see `ProbeFloor`). After `hold_judgements`, every
    /// tracked pod is judged now: `current`'s reports; otherwise none.
    pub fn watches_synced(&mut self, now: i64) -> Vec<Update> {
        let held = self.holding();
        self.events_listed = true;
        if held { self.current(now) } else { Vec::new() }
    }

    /// Every tracked pod's report as judged now, and the final reports of
    /// the pods that ended lately: what a replica that just took the lease
    /// over compares with the stored reports.
    pub fn current(&mut self, now: i64) -> Vec<Update> {
        self.current_where(now, |_, _| true)
    }

    /// `current`, of the reports `pick(namespace, report name)` selects
    /// (a takeover's pass writes a page's reports as it reads them).
    pub fn current_where(&mut self, now: i64, pick: impl Fn(&str, &str) -> bool) -> Vec<Update> {
        self.prune_recent(now);
        let cx = self.cx();
        let verdicts = &mut self.verdicts;
        let mut out: Vec<Update> = self
            .pods
            .values_mut()
            .filter(|t| {
                let pod = &t.history.pod;
                pick(&pod.namespace, &report_name(&pod.name, &pod.uid))
            })
            .map(|t| {
                let u = report_of(cx, verdicts, t);
                t.last_hash = status_hash(&u.spec, &u.status);
                u
            })
            .collect();
        out.extend(
            self.recent
                .iter()
                .filter(|(_, u)| pick(&u.namespace, &u.report_name))
                .map(|(_, u)| u.clone()),
        );
        out
    }

    /// `current` of the one report `name` in `namespace` (none or one):
    /// the tracked pod is found by the pod name the report's name starts
    /// with (`report_name`), else among the lately ended pods, else (rare)
    /// by looking at every pod.
    pub fn current_of(&mut self, now: i64, namespace: &str, name: &str) -> Vec<Update> {
        let pod = name.rsplit_once('-').map(|(pod, _)| pod.to_string());
        let key = (namespace.to_string(), pod.unwrap_or_default());
        let cx = self.cx();
        if let Some(t) = self.pods.get_mut(&key)
            && report_name(&t.history.pod.name, &t.history.pod.uid) == name
        {
            let u = report_of(cx, &mut self.verdicts, t);
            t.last_hash = status_hash(&u.spec, &u.status);
            return vec![u];
        }
        self.prune_recent(now);
        let ended: Vec<Update> = self
            .recent
            .iter()
            .filter(|(_, u)| u.namespace == namespace && u.report_name == name)
            .map(|(_, u)| u.clone())
            .collect();
        if !ended.is_empty() {
            return ended;
        }
        // Not where its name says (a long pod name is cut to make room for
        // the uid's part; a uid too short to name): every pod is looked at.
        self.current_where(now, |ns, n| ns == namespace && n == name)
    }

    /// The reports of the index: tracked pods' and lately ended pods' final ones.
    pub fn report_keys(&self) -> HashSet<Key> {
        self.pods
            .values()
            .map(|t| {
                let pod = &t.history.pod;
                (pod.namespace.clone(), report_name(&pod.name, &pod.uid))
            })
            .chain(
                self.recent
                    .iter()
                    .map(|(_, u)| (u.namespace.clone(), u.report_name.clone())),
            )
            .collect()
    }

    fn prune_recent(&mut self, now: i64) {
        while self
            .recent
            .front()
            .is_some_and(|(at, _)| now - at > RECENT_FINAL_SECS)
            || self.recent.len() > MAX_RECENT_FINAL
        {
            self.recent.pop_front();
        }
    }

    /// A node was added or changed: its kubelet's version is what the
    /// rules of its pods' reports go by. When it changed (or became known),
    /// the node's tracked pods are judged again.
    pub fn node_applied(&mut self, node: &Node) -> Vec<Update> {
        let Some(name) = node.metadata.name.as_deref() else {
            return Vec::new();
        };
        let id = self.nodes.id(name);
        let version = kubelet_version_of(node);
        if self.nodes.versions[id as usize] == version {
            return Vec::new();
        }
        self.nodes.versions[id as usize] = version;
        let cx = self.cx();
        let holding = self.holding();
        let verdicts = &mut self.verdicts;
        self.pods
            .values_mut()
            .filter(|t| t.node == Some(id))
            .filter_map(|t| {
                t.history.kubelet = version;
                if holding {
                    return None;
                }
                judge_tracked(cx, verdicts, t)
            })
            .collect()
    }

    pub fn tracked_pods(&self) -> usize {
        self.pods.len()
    }

    /// How many tracked pods have each (startup, shutdown) verdict pair.
    pub fn verdict_counts(&self) -> &HashMap<(Verdict, Verdict), i64> {
        &self.verdicts
    }

    /// Reports known to exist: tracked pods', gone pods' and loaded ones.
    pub fn known_reports(&self) -> usize {
        self.pods.len() + self.gone.len() + self.preloaded.len()
    }

    /// Remembers a report that exists already, read at start-up: its
    /// decided checks, probe floor and status hash, so a verdict never goes
    /// back and an unchanged status is not rewritten (what it counted is the
    /// writer's ledger). Only this digest is kept, not the report. The
    /// reports are read while the pods are listed (`run` does both at
    /// once), so the pod may be tracked already: unjudged while the store
    /// holds its judgements, it takes the digest as if it had come first.
    pub fn preload(&mut self, stored: StoredReport) {
        let key = (stored.namespace.clone(), stored.pod_name.clone());
        match self.pods.get_mut(&key) {
            Some(t) if t.history.pod.uid == stored.uid => {
                t.last_hash = stored.status_hash;
                if stored.ended_at.is_some() {
                    t.ended_at = stored.ended_at;
                }
                t.absorb(stored.decided, stored.probe_floor);
            }
            _ => {
                self.preloaded.insert(stored.uid.clone(), stored);
            }
        }
    }

    /// This replica took the lease over and read the stored reports: what
    /// another replica recorded since this process started is kept, so no
    /// counted violation leaves a report. A tracked pod's judgement gains
    /// the stored decided checks, violations and Verified phases, and its
    /// probe counts take the stored ones as their floor. A final report kept
    /// for a pod that ended lately (`current`) that lacks what its stored
    /// report decided is dropped: the stored one stays (closed by the writer
    /// if it still reads as live).
    pub fn took_over(&mut self, stored: Vec<StoredReport>) {
        let mut untracked: HashMap<(String, String), Decided> = HashMap::new();
        for s in stored {
            match self
                .pods
                .get_mut(&(s.namespace.clone(), s.pod_name.clone()))
            {
                Some(t) if t.history.pod.uid == s.uid => t.absorb(s.decided, s.probe_floor),
                _ => {
                    untracked.insert((s.namespace, s.name), s.decided);
                }
            }
        }
        self.recent.retain(|(_, u)| {
            untracked
                .get(&(u.namespace.clone(), u.report_name.clone()))
                .is_none_or(|d| Decided::of(&u.status.report).holds(d))
        });
    }

    /// Stored reports without a status (their first status write failed):
    /// nothing to count; GC may take one once its age passes the TTL, unless
    /// its pod is tracked (listed before the reports were read).
    pub fn preload_empty(&mut self, reports: Vec<(ReportRef, i64)>) {
        if reports.is_empty() {
            return;
        }
        let tracked = self.report_keys();
        for (report, created) in reports {
            if !tracked.contains(&(report.namespace.clone(), report.name.clone())) {
                self.gone.insert(report, created);
            }
        }
    }

    /// A (re)list of pods starts, by the watch of one namespace (`scope`) or
    /// of all of them (None).
    pub fn pods_resync_start(&mut self, scope: Option<&str>) {
        let scope = scope.map(String::from);
        self.resync_whole.remove(&scope);
        self.resync.insert(scope, HashSet::new());
    }

    /// Every pod of the (re)list of `scope` is in, though its end waits
    /// (for the stored reports, at start-up). Once every list in progress
    /// is whole, an event about a pod none of them held is about a pod gone
    /// before them, as after `pods_resync_done`: the events listed in the
    /// meantime are not kept waiting for pods that will never come (at the
    /// 10,000-pod load's restart, 3,000 deleted pods with a Started and a
    /// Killing Event per container: more than `pending::MAX_PENDING_EVENTS`
    /// by that count, not a measured one).
    pub fn pods_listed(&mut self, scope: Option<&str>, now: i64) {
        let scope = scope.map(String::from);
        if self.resync.contains_key(&scope) {
            self.resync_whole.insert(scope);
        }
        if self.resync.keys().all(|s| self.resync_whole.contains(s)) {
            self.pending.listed(now);
        }
    }

    /// A (re)list of pods ended: pods of its scope not listed are gone, and
    /// stored reports of its scope whose pod never showed up are closed as
    /// seen from outside. Other namespaces' pods and reports are untouched.
    pub fn pods_resync_done(&mut self, scope: Option<&str>, now: i64) -> Resynced {
        let mut out = Resynced::default();
        let scope_key = scope.map(String::from);
        self.resync_whole.remove(&scope_key);
        let Some(listed) = self.resync.remove(&scope_key) else {
            return out;
        };
        let in_scope = |ns: &str| scope.is_none_or(|s| s == ns);
        let gone: Vec<Key> = self
            .pods
            .keys()
            .filter(|k| in_scope(&k.0) && !listed.contains(*k))
            .cloned()
            .collect();
        for key in gone {
            if let Some(t) = self.pods.remove(&key) {
                self.pending.gone(&key, &t.history.pod.uid, now);
                out.updates.extend(self.finish(t, now));
            }
        }
        if self.resync.is_empty() {
            self.pending.listed(now);
        }
        let unseen: Vec<String> = self
            .preloaded
            .iter()
            .filter(|(_, p)| in_scope(&p.namespace))
            .map(|(uid, _)| uid.clone())
            .collect();
        for p in unseen
            .into_iter()
            .filter_map(|uid| self.preloaded.remove(&uid))
        {
            let r = ReportRef {
                namespace: p.namespace,
                name: p.name,
            };
            if p.ended_at.is_none() {
                out.closed.push(r.clone());
            }
            self.gone.insert(r, p.ended_at.unwrap_or(now));
        }
        crate::controller::memory::trim_map(&mut self.preloaded);
        out
    }

    /// Takes in a pod's new version without judging it; the key when tracked.
    fn upsert(&mut self, pod: &Pod, now: i64) -> Option<(Key, Vec<Update>)> {
        let key = pod_key(pod);
        for (scope, listed) in self.resync.iter_mut() {
            if scope.as_ref().is_none_or(|ns| *ns == key.0) {
                listed.insert(key.clone());
            }
        }
        // Most pods of a cluster have no native sidecar: decided on the raw
        // object, before any projection.
        if !has_native_sidecar(pod) {
            let uid = pod.metadata.uid.as_deref().unwrap_or_default();
            self.pending.untracked(&key, uid);
            return None;
        }
        let facts = pod_facts(pod).ok()?;
        let mut out = Vec::new();
        if let Some(old) = self.pods.get(&key)
            && old.history.pod.uid != facts.uid
        {
            // A new pod under the same name: close the old one's report first.
            let old = self.pods.remove(&key).expect("present");
            out.extend(self.finish(old, now));
        }
        let node = pod
            .spec
            .as_ref()
            .and_then(|s| s.node_name.as_deref())
            .map(|n| self.nodes.id(n));
        match self.pods.get_mut(&key) {
            Some(t) => {
                t.history.observe(facts);
                t.workload = Workload::of(pod);
                if node.is_some() {
                    t.node = node;
                }
            }
            None => {
                let (last_hash, ended_at, decided, probe_floor) =
                    match self.preloaded.remove(&facts.uid) {
                        Some(p) => (p.status_hash, p.ended_at, Some(p.decided), p.probe_floor),
                        None => (0, None, None, None),
                    };
                // Tracked again (a relist missed it): its report is no longer GC's.
                self.gone.remove(&ReportRef {
                    namespace: facts.namespace.clone(),
                    name: report_name(&facts.name, &facts.uid),
                });
                let mut t = Tracked {
                    history: History::new(facts),
                    decided,
                    workload: Workload::of(pod),
                    last_hash,
                    ended_at,
                    verdicts: (Verdict::Pending, Verdict::Pending),
                    node,
                    probe_floor,
                };
                for ev in self.pending.take(&key) {
                    add_event(&mut t, &ev);
                }
                t.history.events.shrink_to_fit();
                *self.verdicts.entry(t.verdicts).or_default() += 1;
                self.pods.insert(key.clone(), Box::new(t));
            }
        }
        let t = self.pods.get_mut(&key).expect("inserted");
        t.history.kubelet = self.nodes.version(t.node);
        if t.history.pod.finished_phase && t.ended_at.is_none() {
            t.ended_at = Some(now);
        }
        Some((key, out))
    }

    /// A pod was added or changed (`now`: the caller's clock, unix seconds).
    pub fn pod_applied(&mut self, pod: &Pod, now: i64) -> Vec<Update> {
        let Some((key, mut out)) = self.upsert(pod, now) else {
            return Vec::new();
        };
        if self.holding() {
            return out;
        }
        let cx = self.cx();
        let t = self.pods.get_mut(&key).expect("tracked");
        out.extend(judge_tracked(cx, &mut self.verdicts, t));
        out
    }

    /// Whether `key` is tracked as the pod `uid` (an empty uid: any).
    fn tracks(&self, key: &Key, uid: &str) -> bool {
        self.pods
            .get(key)
            .is_some_and(|t| uid.is_empty() || t.history.pod.uid == uid)
    }

    /// A pod was deleted: its final status is judged and it is forgotten.
    pub fn pod_deleted(&mut self, pod: &Pod, now: i64) -> Vec<Update> {
        let uid = pod.metadata.uid.as_deref().unwrap_or_default();
        let key = pod_key(pod);
        self.pending.gone(&key, uid, now);
        if !self.tracks(&key, uid) {
            return Vec::new();
        }
        // The deleted object carries the last status: take it in first.
        let Some((key, mut out)) = self.upsert(pod, now) else {
            return Vec::new();
        };
        if let Some(t) = self.pods.remove(&key) {
            out.extend(self.finish(t, now));
        }
        out
    }

    /// A pod left the label selector: forgotten without a last judgement.
    /// Its report is left as it is (not closed, never GC's to delete).
    pub fn pod_unwatched(&mut self, pod: &Pod) {
        let key = pod_key(pod);
        let uid = pod.metadata.uid.as_deref().unwrap_or_default();
        if !self.tracks(&key, uid) {
            return;
        }
        if let Some(t) = self.pods.remove(&key)
            && let Some(n) = self.verdicts.get_mut(&t.verdicts)
        {
            *n -= 1;
        }
        // Its events are not needed any more. If its labels match again it
        // is tracked anew, from its status and the events that follow.
        self.pending.untracked(&key, uid);
    }

    /// An Event was added or changed.
    pub fn event_applied(&mut self, ev: &Event, now: i64) -> Vec<Update> {
        match RawEvent::read(ev) {
            Some((key, raw)) => self.raw_event_applied(key, raw, now),
            None => Vec::new(),
        }
    }

    /// An Event already read (`RawEvent::read`, done by the Event watch).
    pub fn raw_event_applied(
        &mut self,
        key: (String, String),
        raw: RawEvent,
        now: i64,
    ) -> Vec<Update> {
        let cx = self.cx();
        let holding = self.holding();
        match self.pods.get_mut(&key) {
            Some(t) => {
                if add_event(t, &raw) && !holding {
                    judge_tracked(cx, &mut self.verdicts, t)
                        .into_iter()
                        .collect()
                } else {
                    Vec::new()
                }
            }
            None => {
                self.pending.push(key, raw, now);
                Vec::new()
            }
        }
    }

    /// Reports to delete now: those whose pod ended `ttl_secs` ago or more,
    /// then, while more than `max_reports` are known, the oldest ended ones.
    /// Never the report of a pod still tracked: it is not in the index.
    pub fn expired(&mut self, now: i64, ttl_secs: i64, max_reports: usize) -> Vec<ReportRef> {
        let tracked = self.pods.len() + self.preloaded.len();
        self.gone
            .expire(now, ttl_secs, max_reports.saturating_sub(tracked))
    }

    /// Kubelet events dropped, in all, because too many waited for pods
    /// not seen yet (`pending::MAX_PENDING_EVENTS`): evidence those pods'
    /// reports may lack (`sidecar_order_pending_events_dropped_total`).
    pub fn pending_events_dropped(&self) -> u64 {
        self.pending.dropped()
    }

    /// The last judgement of a pod that is gone; its report goes to GC's index.
    fn finish(&mut self, mut t: Box<Tracked>, now: i64) -> Option<Update> {
        t.history.pod.gone = true;
        let ended = *t.ended_at.get_or_insert(now);
        let last = report_of(self.cx(), &mut self.verdicts, &mut t);
        let hash = status_hash(&last.spec, &last.status);
        let out = (hash != t.last_hash).then(|| last.clone());
        self.recent.push_back((now, last));
        self.prune_recent(now);
        if let Some(n) = self.verdicts.get_mut(&t.verdicts) {
            *n -= 1;
        }
        self.gone.insert(
            ReportRef {
                namespace: t.history.pod.namespace.clone(),
                name: report_name(&t.history.pod.name, &t.history.pod.uid),
            },
            ended,
        );
        out
    }
}

/// The gap of a report closed by `close_unseen`.
pub const UNWATCHED_GAP: &str = "the pod was deleted while the controller was not watching";

/// A stored report, still read as live, of a pod found gone at `at` (unix
/// seconds) by a controller that did not watch it end: closed as seen from
/// outside, its shutdown undecided.
pub fn close_unseen(status: &mut ReportStatus, at: i64) {
    status.pod_ended_at = Some(rfc3339(at));
    status.report.evidence = crate::report::Evidence::Partial;
    status.report.gaps.push(UNWATCHED_GAP.into());
    if status.report.shutdown == Verdict::Pending {
        status.report.shutdown = Verdict::Indeterminate;
    }
}

/// A pod's key in the index: (namespace, name).
fn pod_key(pod: &Pod) -> Key {
    (
        pod.metadata.namespace.clone().unwrap_or_default(),
        pod.metadata.name.clone().unwrap_or_default(),
    )
}

/// Adds an event to a tracked pod; false when it changed nothing.
fn add_event(t: &mut Tracked, ev: &RawEvent) -> bool {
    let EventFit::Used(fact) = ev.fit(&t.history.pod) else {
        return false;
    };
    t.history.add_event(fact)
}

impl Tracked {
    /// What a stored report of this pod decided, and its probe counts as
    /// their floor, taken into its judgement.
    fn absorb(&mut self, decided: Decided, probe_floor: Option<Box<ProbeFloor>>) {
        match &mut self.decided {
            Some(d) => d.absorb(&decided),
            None => self.decided = Some(decided),
        }
        if probe_floor.is_some() {
            self.probe_floor = probe_floor;
        }
    }
}

/// Judges a tracked pod; an update when the report changed.
fn judge_tracked(
    cx: Cx,
    verdicts: &mut HashMap<(Verdict, Verdict), i64>,
    t: &mut Tracked,
) -> Option<Update> {
    let u = report_of(cx, verdicts, t);
    let hash = status_hash(&u.spec, &u.status);
    if hash == t.last_hash {
        return None;
    }
    t.last_hash = hash;
    Some(u)
}

/// Judges a tracked pod: its report as of now.
fn report_of(cx: Cx, verdicts: &mut HashMap<(Verdict, Verdict), i64>, t: &mut Tracked) -> Update {
    let mut report = judge_history(&t.history, &cx.cfg, t.decided.as_ref());
    if let Some(floor) = &mut t.probe_floor {
        floor.apply(&mut report, cx.events_listed);
    }
    t.decided = Some(Decided::of(&report));
    let now = (report.startup, report.shutdown);
    if now != t.verdicts {
        if let Some(n) = verdicts.get_mut(&t.verdicts) {
            *n -= 1;
        }
        *verdicts.entry(now).or_default() += 1;
        t.verdicts = now;
    }
    let spec = ReportSpec {
        pod_name: t.history.pod.name.clone(),
        pod_uid: t.history.pod.uid.clone(),
        workload: t.workload.display(),
    };
    let status = ReportStatus::new(report, t.ended_at.map(rfc3339)).with_kubelet(t.history.kubelet);
    Update {
        namespace: t.history.pod.namespace.clone(),
        report_name: report_name(&t.history.pod.name, &t.history.pod.uid),
        pod_name: t.history.pod.name.clone(),
        pod_uid: t.history.pod.uid.clone(),
        workload: t.workload.clone(),
        spec,
        status,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(v: serde_json::Value) -> Pod {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn workload_resolves_replicasets_to_deployments() {
        let p = pod(
            serde_json::json!({"metadata": {"name": "web-7d9f8c6b5-x2x7q",
            "labels": {"pod-template-hash": "7d9f8c6b5"},
            "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "web-7d9f8c6b5", "uid": "u", "controller": true}]}}),
        );
        assert_eq!(
            Workload::of(&p),
            Workload {
                kind: "Deployment".into(),
                name: "web".into()
            }
        );
        let job = pod(serde_json::json!({"metadata": {"name": "j-abcde",
            "ownerReferences": [{"apiVersion": "batch/v1", "kind": "Job", "name": "j", "uid": "u", "controller": true}]}}));
        assert_eq!(
            Workload::of(&job),
            Workload {
                kind: "Job".into(),
                name: "j".into()
            }
        );
        // A bare pod never lends its own name to a label.
        let bare = pod(serde_json::json!({"metadata": {"name": "debug-x"}}));
        assert_eq!(
            Workload::of(&bare),
            Workload {
                kind: "Pod".into(),
                name: String::new()
            }
        );
    }

    /// The kubelet's Started event of sidecar `s` of pod ns/p (uid u1).
    fn started_s_of_p() -> Event {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": "p.18eba42b1ca5d72d", "namespace": "ns"},
            "involvedObject": {"kind": "Pod", "name": "p", "namespace": "ns", "uid": "u1",
                "fieldPath": "spec.initContainers{s}"},
            "reason": "Started", "message": "Started container s", "type": "Normal",
            "firstTimestamp": "2025-07-14T00:00:01Z", "lastTimestamp": "2025-07-14T00:00:01Z",
            "count": 1
        }))
        .unwrap()
    }

    #[test]
    fn events_listed_before_a_whole_pod_list_ends_wait_for_no_pod_it_lacked() {
        let started = started_s_of_p();
        let pod = sidecar_pod(
            "ns",
            "p",
            "u1",
            serde_json::json!({"running": {"startedAt": "2025-07-14T00:00:02Z"}}),
        );
        // Ten minutes after the event: a pod the list lacked was gone by then.
        let now = 1_752_451_200 + 600;
        let first_judgement = |whole: bool| {
            let mut s = Store::new(Config::default());
            s.pods_resync_start(None);
            if whole {
                s.pods_listed(None, now);
            }
            assert!(s.event_applied(&started, now).is_empty());
            s.pods_resync_done(None, now);
            s.pod_applied(&pod, now)
        };
        let without = Store::new(Config::default()).pod_applied(&pod, now);
        // Told the list is whole, the event of a pod it lacks is not kept.
        assert_eq!(first_judgement(true)[0].status, without[0].status);
        // Not told, it waited (the list could still bring its pod).
        assert_ne!(first_judgement(false)[0].status, without[0].status);
    }

    #[test]
    fn an_event_that_arrives_before_its_pod_is_applied_when_the_pod_shows_up() {
        let mut s = Store::new(Config::default());
        let started = started_s_of_p();
        assert!(s.event_applied(&started, 100).is_empty());
        let pod = sidecar_pod(
            "ns",
            "p",
            "u1",
            serde_json::json!({"running": {"startedAt": "2025-07-14T00:00:02Z"}}),
        );
        let with_event = s.pod_applied(&pod, 101);
        let mut alone = Store::new(Config::default());
        let without = alone.pod_applied(&pod, 101);
        assert_eq!(with_event.len(), 1);
        assert_ne!(
            with_event[0].status, without[0].status,
            "the waiting Started event is part of the first judgement"
        );
        assert_eq!(s.pending_events_dropped(), 0);
    }

    #[test]
    fn pods_without_sidecars_are_not_tracked() {
        let mut s = Store::new(Config::default());
        let p = pod(
            serde_json::json!({"metadata": {"name": "plain", "namespace": "ns", "uid": "u1"},
            "spec": {"containers": [{"name": "app"}]}, "status": {}}),
        );
        assert!(s.pod_applied(&p, 0).is_empty());
        assert_eq!(s.tracked_pods(), 0);
    }

    fn sidecar_pod(ns: &str, name: &str, uid: &str, app: serde_json::Value) -> Pod {
        pod(serde_json::json!({
        "metadata": {"name": name, "namespace": ns, "uid": uid},
        "spec": {"initContainers": [{"name": "s", "restartPolicy": "Always"}], "containers": [{"name": "app"}]},
        "status": {"initContainerStatuses": [{"name": "s", "image": "i", "imageID": "", "ready": true, "restartCount": 0,
                    "state": {"running": {"startedAt": "2025-07-14T00:00:01Z"}}}],
          "containerStatuses": [{"name": "app", "image": "i", "imageID": "", "ready": true, "restartCount": 0,
                    "state": app}]}}))
    }

    /// A takeover's read-ahead asks for one report by name: found as the
    /// whole index's scan finds it, a long pod name (cut in its report's
    /// name) and a short uid too, and an ended pod's final report.
    #[test]
    fn one_report_is_found_by_its_name_as_a_scan_finds_it() {
        let running = serde_json::json!({"running": {"startedAt": "2025-07-14T00:00:02Z"}});
        let mut s = Store::new(Config::default());
        let long = "p".repeat(250);
        let pods = [
            sidecar_pod("shop", "web-7", "1b2c3d4e-0000", running.clone()),
            sidecar_pod("shop", "web", "9f8e7d6c-0000", running.clone()),
            sidecar_pod("shop", &long, "5a5a5a5a-0000", running.clone()),
            sidecar_pod("shop", "tiny", "ab", running.clone()),
            sidecar_pod("other", "web-7", "1b2c3d4e-0000", running.clone()),
        ];
        for p in &pods {
            s.pod_applied(p, 10);
        }
        let gone = sidecar_pod("shop", "gone", "77777777-0000", running);
        s.pod_applied(&gone, 10);
        s.pod_deleted(&gone, 11);
        let all = s.current(12);
        assert_eq!(all.len(), pods.len() + 1);
        for u in &all {
            let one = s.current_of(12, &u.namespace, &u.report_name);
            assert_eq!(one.len(), 1, "{}/{}", u.namespace, u.report_name);
            assert_eq!(one[0].pod_uid, u.pod_uid);
            assert_eq!(one[0].namespace, u.namespace);
            assert_eq!(one[0].status, u.status);
        }
        assert!(s.current_of(12, "shop", "web-00000000").is_empty());
        assert!(s.current_of(12, "nowhere", "web-7-1b2c3d4e").is_empty());
    }

    #[test]
    fn verdict_gauges_are_kept_as_pods_change_and_go() {
        let waiting = serde_json::json!({"waiting": {"reason": "PodInitializing"}});
        let running = serde_json::json!({"running": {"startedAt": "2025-07-14T00:00:03Z"}});
        let mut s = Store::new(Config::default());
        let recount = |s: &Store| {
            let mut m: HashMap<(Verdict, Verdict), i64> = HashMap::new();
            for t in s.pods.values() {
                *m.entry(t.verdicts).or_default() += 1;
            }
            m
        };
        let kept = |s: &Store| {
            let mut m = s.verdict_counts().clone();
            m.retain(|_, n| *n != 0);
            m
        };
        for i in 0..4 {
            s.pod_applied(
                &sidecar_pod("ns", &format!("p{i}"), &format!("u{i}"), waiting.clone()),
                1,
            );
            assert_eq!(kept(&s), recount(&s));
        }
        for i in 0..3 {
            s.pod_applied(
                &sidecar_pod("ns", &format!("p{i}"), &format!("u{i}"), running.clone()),
                2,
            );
            assert_eq!(kept(&s), recount(&s));
        }
        assert_eq!(
            s.verdict_counts()[&(Verdict::Verified, Verdict::Pending)],
            3,
            "{:?}",
            s.verdict_counts()
        );
        s.pod_deleted(&sidecar_pod("ns", "p0", "u0", running.clone()), 3);
        // A new pod under an old name replaces it.
        s.pod_applied(&sidecar_pod("ns", "p1", "u1-new", waiting.clone()), 3);
        assert_eq!(kept(&s), recount(&s));
        assert_eq!(s.verdict_counts().values().sum::<i64>(), 3);
    }

    #[test]
    fn reports_carry_the_kubelet_version_of_the_pods_node() {
        let running = serde_json::json!({"running": {"startedAt": "2025-07-14T00:00:03Z"}});
        let node = |v: &str| -> Node {
            serde_json::from_value(serde_json::json!({"metadata": {"name": "n1"},
                "status": {"nodeInfo": {"kubeletVersion": v, "architecture": "", "bootID": "", "containerRuntimeVersion": "",
                  "kernelVersion": "", "kubeProxyVersion": "", "machineID": "", "operatingSystem": "", "osImage": "", "systemUUID": ""}}}))
            .unwrap()
        };
        let mut on_n1 = sidecar_pod("ns", "p", "u", running.clone());
        on_n1.spec.as_mut().unwrap().node_name = Some("n1".into());
        let mut s = Store::new(Config::default());
        // The pod is judged before its node is known: no version.
        let first = s.pod_applied(&on_n1, 1);
        assert_eq!(first[0].status.kubelet_version, None);
        // The node shows up: its pods are judged again, with the version.
        let again = s.node_applied(&node("v1.32.1"));
        assert_eq!(again.len(), 1);
        assert_eq!(again[0].status.kubelet_version.as_deref(), Some("v1.32.1"));
        // A node update that does not change the version rewrites nothing.
        assert!(s.node_applied(&node("v1.32.1")).is_empty());
        // A pod on another node is not touched by n1's upgrade.
        s.pod_applied(&sidecar_pod("ns", "q", "uq", running.clone()), 2);
        let upgraded = s.node_applied(&node("v1.33.0"));
        assert_eq!(upgraded.len(), 1);
        assert_eq!(upgraded[0].pod_name, "p");
    }

    #[test]
    fn gc_never_deletes_the_report_of_a_tracked_pod() {
        let running = serde_json::json!({"running": {"startedAt": "2025-07-14T00:00:03Z"}});
        let mut s = Store::new(Config::default());
        for i in 0..3 {
            s.pod_applied(
                &sidecar_pod("ns", &format!("p{i}"), &format!("u{i}"), running.clone()),
                10,
            );
        }
        // Over the cap, but every report is a tracked pod's.
        assert!(s.expired(10_000, 60, 1).is_empty());
        s.pod_deleted(&sidecar_pod("ns", "p1", "u1", running.clone()), 20);
        assert_eq!(s.known_reports(), 3);
        // Within the TTL and under the cap: kept.
        assert!(s.expired(30, 60, 10).is_empty());
        // Past the TTL: the gone pod's report, and only it.
        let doomed = s.expired(80, 60, 10);
        assert_eq!(doomed.len(), 1);
        assert_eq!(doomed[0].name, crate::crd::report_name("p1", "u1"));
        assert_eq!(s.known_reports(), 2);
        // A relist that misses a pod ends it; seen again, it is GC's no more.
        s.pods_resync_start(None);
        s.pod_applied(&sidecar_pod("ns", "p0", "u0", running.clone()), 90);
        assert_eq!(s.pods_resync_done(None, 90).updates.len(), 1);
        s.pod_applied(&sidecar_pod("ns", "p2", "u2", running.clone()), 91);
        assert!(s.expired(10_000, 60, 0).is_empty());
    }

    fn unhealthy(name: &str, count: u32) -> Event {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": name, "namespace": "ns"},
            "involvedObject": {"kind": "Pod", "name": "p", "namespace": "ns", "uid": "u1",
                "fieldPath": "spec.initContainers{s}"},
            "reason": "Unhealthy", "message": "Liveness probe failed: connection refused",
            "type": "Warning", "count": count,
            "firstTimestamp": "2025-07-14T00:00:05Z", "lastTimestamp": "2025-07-14T00:00:09Z"
        }))
        .unwrap()
    }

    fn liveness_count(u: &[Update]) -> u32 {
        u.last().expect("a report").status.report.probe_failures[0].count
    }

    /// At start-up the stored reports are read while the pods are listed:
    /// a report that comes in after its pod gives the same judgement as one
    /// read first (the stored probe count kept), and an
    /// empty report of a listed pod is not handed to GC.
    #[test]
    fn a_stored_report_read_after_its_pod_was_listed_counts_as_if_read_first() {
        let running = serde_json::json!({"running": {"startedAt": "2025-07-14T00:00:03Z"}});
        let p = sidecar_pod("ns", "p", "u1", running);
        let mut first = Store::new(Config::default());
        first.pod_applied(&p, 10);
        let stored = first.event_applied(&unhealthy("p.old", 5), 11);
        let stored = stored.last().unwrap().clone();
        let digest = || StoredReport::of("ns", &stored.report_name, &stored.spec, &stored.status);

        let mut before = Store::new(Config::default());
        before.hold_judgements();
        before.preload(digest());
        before.pod_applied(&p, 20);
        let mut after = Store::new(Config::default());
        after.hold_judgements();
        after.pod_applied(&p, 20);
        after.preload(digest());
        let judged = before.watches_synced(20);
        assert_eq!(liveness_count(&judged), 5, "the stored count kept");
        assert_eq!(after.watches_synced(20), judged);
        assert_eq!(after.current(21), before.current(21));

        let empty = ReportRef {
            namespace: "ns".into(),
            name: stored.report_name.clone(),
        };
        let mut s = Store::new(Config::default());
        s.hold_judgements();
        s.pod_applied(&p, 20);
        s.preload_empty(vec![(empty.clone(), 0)]);
        assert!(
            s.expired(10_000_000, 1, 0).is_empty(),
            "a tracked pod's report"
        );
        let mut s = Store::new(Config::default());
        s.preload_empty(vec![(empty.clone(), 0)]);
        assert_eq!(s.expired(10_000_000, 1, 0), vec![empty], "no pod: GC's");
    }

    /// A restart whose event list lacks the expired events behind a stored
    /// count of 5 neither lowers it nor hides later failures.
    #[test]
    fn a_restart_keeps_stored_probe_failures_and_counts_new_ones_on_top() {
        let running = serde_json::json!({"running": {"startedAt": "2025-07-14T00:00:03Z"}});
        let p = sidecar_pod("ns", "p", "u1", running);
        let mut first = Store::new(Config::default());
        first.pod_applied(&p, 10);
        let stored = first.event_applied(&unhealthy("p.old", 5), 11);
        assert_eq!(liveness_count(&stored), 5);
        let stored = stored.last().unwrap().clone();

        // Restarted: the old event expired meanwhile.
        let mut s = Store::new(Config::default());
        s.preload(StoredReport::of(
            "ns",
            &stored.report_name,
            &stored.spec,
            &stored.status,
        ));
        assert!(
            s.pod_applied(&p, 20).is_empty(),
            "as stored: nothing to write"
        );
        assert_eq!(liveness_count(&s.current(20)), 5, "not lowered");
        assert!(
            s.watches_synced(20).is_empty(),
            "not holding: judged as it went"
        );
        assert_eq!(liveness_count(&s.current(21)), 5);
        // New failures after the restart add to the stored count.
        assert_eq!(
            liveness_count(&s.event_applied(&unhealthy("p.new", 2), 22)),
            7
        );
        assert_eq!(
            liveness_count(&s.event_applied(&unhealthy("p.new", 3), 23)),
            8
        );

        // Restarted while the old event still exists: it is not counted twice.
        let mut s = Store::new(Config::default());
        s.preload(StoredReport::of(
            "ns",
            &stored.report_name,
            &stored.spec,
            &stored.status,
        ));
        s.pod_applied(&p, 20);
        s.event_applied(&unhealthy("p.old", 5), 20);
        assert!(
            s.watches_synced(20).is_empty(),
            "not holding: judged as it went"
        );
        assert_eq!(liveness_count(&s.current(21)), 5);
        assert_eq!(
            liveness_count(&s.event_applied(&unhealthy("p.old", 6), 22)),
            6
        );
    }

    #[test]
    fn a_pod_that_left_the_label_selector_is_forgotten_not_ended() {
        let running = serde_json::json!({"running": {"startedAt": "2025-07-14T00:00:03Z"}});
        let mut s = Store::new(Config::default());
        let p = sidecar_pod("ns", "p", "u1", running);
        assert_eq!(s.pod_applied(&p, 10).len(), 1);
        assert_eq!(s.verdict_counts().values().sum::<i64>(), 1);
        s.pod_unwatched(&p);
        assert_eq!(s.tracked_pods(), 0);
        assert_eq!(
            s.verdict_counts().values().sum::<i64>(),
            0,
            "no longer counted in the verdict gauges"
        );
        assert_eq!(
            s.known_reports(),
            0,
            "its report is not GC's: left alone, never deleted"
        );
        assert!(s.expired(1_000_000, 60, 0).is_empty());
        assert!(s.current(20).is_empty(), "no final report of it");
    }

    #[test]
    fn a_relist_of_one_namespace_leaves_the_others_alone() {
        let mk = |ns: &str, uid: &str| {
            pod(serde_json::json!({
            "metadata": {"name": "p", "namespace": ns, "uid": uid},
            "spec": {"initContainers": [{"name": "s", "restartPolicy": "Always"}], "containers": [{"name": "app"}]},
            "status": {"initContainerStatuses": [{"name": "s", "image": "i", "imageID": "", "ready": true, "restartCount": 0,
                        "state": {"running": {"startedAt": "2025-07-14T00:00:01Z"}}}],
              "containerStatuses": [{"name": "app", "image": "i", "imageID": "", "ready": true, "restartCount": 0,
                        "state": {"running": {"startedAt": "2025-07-14T00:00:02Z"}}}]}}))
        };
        let (a, b) = (mk("a", "ua"), mk("b", "ub"));
        let mut s = Store::new(Config::default());
        // Reports an earlier run wrote for both pods.
        let mut earlier = Store::new(Config::default());
        for u in [earlier.pod_applied(&a, 5), earlier.pod_applied(&b, 5)].concat() {
            s.preload(StoredReport::of(
                &u.namespace,
                &u.report_name,
                &u.spec,
                &u.status,
            ));
        }
        // Both watches list at once (as at start-up): a's list ends first.
        s.pods_resync_start(Some("a"));
        s.pods_resync_start(Some("b"));
        s.pod_applied(&a, 10);
        let out = s.pods_resync_done(Some("a"), 10);
        assert!(out.is_empty(), "a's list closed something: {out:#?}");
        s.pod_applied(&b, 10);
        assert!(s.pods_resync_done(Some("b"), 10).is_empty());
        assert_eq!(s.tracked_pods(), 2);
        // A relist of a alone (410 Gone) neither drops nor rewrites b's pod.
        s.pods_resync_start(Some("a"));
        s.pod_applied(&a, 20);
        assert!(s.pods_resync_done(Some("a"), 20).is_empty());
        assert_eq!(s.tracked_pods(), 2);
        // When a's pod is missing from a's relist, only it ends.
        s.pods_resync_start(Some("a"));
        let out = s.pods_resync_done(Some("a"), 30);
        assert_eq!(s.tracked_pods(), 1);
        assert!(out.updates.iter().all(|u| u.namespace == "a"), "{out:#?}");
    }

    #[test]
    fn the_kubelets_final_delete_does_not_replace_the_grace_period() {
        // As recorded in e2e t08b: deleted with a 4 s grace period, the app
        // ignores SIGTERM, both are SIGKILLed; then the kubelet's final
        // delete rewrites deletionTimestamp/deletionGracePeriodSeconds to 0.
        let mk = |deleted: &str, grace: i64, sidecar: serde_json::Value, app: serde_json::Value| {
            pod(serde_json::json!({
            "metadata": {"name": "p", "namespace": "ns", "uid": "u", "deletionTimestamp": deleted, "deletionGracePeriodSeconds": grace},
            "spec": {"terminationGracePeriodSeconds": 4, "initContainers": [{"name": "sidecar", "restartPolicy": "Always"}],
                     "containers": [{"name": "app"}]},
            "status": {"initContainerStatuses": [
                {"name": "sidecar", "image": "i", "imageID": "", "ready": false, "restartCount": 0, "state": sidecar}],
              "containerStatuses": [{"name": "app", "image": "i", "imageID": "", "ready": false, "restartCount": 0, "state": app}]}}))
        };
        let running = |t: &str| serde_json::json!({"running": {"startedAt": t}});
        let killed = |t: &str, f: &str| serde_json::json!({"terminated": {"exitCode": 137, "reason": "Error", "startedAt": t, "finishedAt": f}});
        let (ts, ta) = ("2026-11-25T20:38:21Z", "2026-11-25T20:38:22Z");
        let mut s = Store::new(Config::default());
        s.pod_applied(&mk("2026-11-25T20:38:28Z", 4, running(ts), running(ta)), 24);
        s.pod_applied(
            &mk(
                "2026-11-25T20:38:28Z",
                4,
                running(ts),
                killed(ta, "2026-11-25T20:38:28Z"),
            ),
            28,
        );
        let done = mk(
            "2026-11-25T20:38:31Z",
            0,
            killed(ts, "2026-11-25T20:38:30Z"),
            killed(ta, "2026-11-25T20:38:28Z"),
        );
        let mut out = s.pod_applied(&done, 31);
        out.extend(s.pod_deleted(&done, 31));
        let r = &out.last().expect("an update").status.report;
        let v = r
            .violations
            .iter()
            .find(|v| v.rule == crate::report::Rule::SidecarForceKilled)
            .unwrap_or_else(|| panic!("no force-kill warning: {r:#?}"));
        assert!(v.message.contains("4s grace period"), "{}", v.message);
        assert!(
            v.evidence
                .iter()
                .any(|e| e.contains("2026-11-25T20:38:28Z")),
            "{:?}",
            v.evidence
        );
    }

    /// A pod being deleted, with sidecars s1, s2 and an app in these states.
    fn mk(first: serde_json::Value, second: serde_json::Value, app: serde_json::Value) -> Pod {
        pod(serde_json::json!({
        "metadata": {"name": "p", "namespace": "ns", "uid": "u", "deletionTimestamp": "2025-07-14T00:01:00Z", "deletionGracePeriodSeconds": 30},
        "spec": {"initContainers": [{"name": "s1", "restartPolicy": "Always"}, {"name": "s2", "restartPolicy": "Always"}],
                 "containers": [{"name": "app"}]},
        "status": {"initContainerStatuses": [
            {"name": "s1", "image": "i", "imageID": "", "ready": false, "restartCount": 0, "state": first},
            {"name": "s2", "image": "i", "imageID": "", "ready": false, "restartCount": 0, "state": second}],
          "containerStatuses": [{"name": "app", "image": "i", "imageID": "", "ready": false, "restartCount": 0, "state": app}]}}))
    }

    fn running(t: &str) -> serde_json::Value {
        serde_json::json!({"running": {"startedAt": t}})
    }

    fn done(t: &str, f: &str) -> serde_json::Value {
        serde_json::json!({"terminated": {"exitCode": 0, "startedAt": t, "finishedAt": f}})
    }

    #[test]
    fn the_watch_order_breaks_same_second_ties() {
        // Both sidecars stop within the same second; the controller saw the
        // second one stop in an earlier update than the first one.
        let (t0, t1, t2) = (
            "2025-07-14T00:00:01Z",
            "2025-07-14T00:00:02Z",
            "2025-07-14T00:00:03Z",
        );
        let fin = "2025-07-14T00:00:40Z";
        let mut s = Store::new(Config::default());
        s.pod_applied(&mk(running(t0), running(t1), running(t2)), 40);
        s.pod_applied(
            &mk(running(t0), running(t1), done(t2, "2025-07-14T00:00:38Z")),
            40,
        );
        s.pod_applied(
            &mk(running(t0), done(t1, fin), done(t2, "2025-07-14T00:00:38Z")),
            40,
        );
        let out = s.pod_applied(
            &mk(
                done(t0, fin),
                done(t1, fin),
                done(t2, "2025-07-14T00:00:38Z"),
            ),
            41,
        );
        let r = &out.last().unwrap().status.report;
        assert_eq!(r.shutdown, Verdict::Verified, "{r:#?}");
        let check = r
            .checks
            .iter()
            .find(|c| c.rule == crate::report::Rule::SidecarStopOrder)
            .unwrap();
        assert_eq!(check.decided_by, Some(crate::time::Source::WatchOrder));
        // Offline, from the last status alone, the same tie is Indeterminate.
        let offline = crate::judge::judge(
            &pod_facts(&mk(
                done(t0, fin),
                done(t1, fin),
                done(t2, "2025-07-14T00:00:38Z"),
            ))
            .unwrap(),
            &[],
            &Config::default(),
        );
        assert_eq!(offline.shutdown, Verdict::Indeterminate);
    }

    /// Found by the chaos run (2 violations counted that no stored report
    /// held): a replica that took the lease over judged a pod from fewer
    /// watch updates than the old leader, and its report would have
    /// replaced the stored one without the violation. The first sidecar
    /// stops in an earlier update than the second, within one second: only
    /// the watch order shows the broken reverse order.
    #[test]
    fn a_takeover_keeps_what_the_stored_reports_decided() {
        let (t0, t1, t2) = (
            "2025-07-14T00:00:01Z",
            "2025-07-14T00:00:02Z",
            "2025-07-14T00:00:03Z",
        );
        let (app_end, fin) = ("2025-07-14T00:00:38Z", "2025-07-14T00:00:40Z");
        let all_running = mk(running(t0), running(t1), running(t2));
        let last = mk(done(t0, fin), done(t1, fin), done(t2, app_end));
        let mut leader = Store::new(Config::default());
        leader.pod_applied(&all_running, 40);
        leader.pod_applied(&mk(running(t0), running(t1), done(t2, app_end)), 40);
        leader.pod_applied(&mk(done(t0, fin), running(t1), done(t2, app_end)), 40);
        let stored = leader.pod_applied(&last, 41).pop().expect("an update");
        let held = |u: &Update| {
            u.status
                .report
                .violations
                .iter()
                .any(|v| v.rule == crate::report::Rule::SidecarStopOrder)
        };
        assert!(held(&stored), "{:#?}", stored.status.report);
        let stored_report =
            || StoredReport::of("ns", &stored.report_name, &stored.spec, &stored.status);

        // The standby saw the pod running, then everything stopped.
        let mut standby = Store::new(Config::default());
        standby.pod_applied(&all_running, 40);
        let own = standby.pod_applied(&last, 41).pop().expect("an update");
        assert!(!held(&own), "{:#?}", own.status.report);
        assert_eq!(own.status.report.shutdown, Verdict::Indeterminate);
        standby.watches_synced(41);
        standby.took_over(vec![stored_report()]);
        let now = standby.current(42);
        assert_eq!(now.len(), 1);
        assert!(held(&now[0]), "{:#?}", now[0].status.report);
        assert_eq!(now[0].status.report.shutdown, Verdict::Violated);

        // The pod ended before the takeover: the standby's final report
        // lacks the stored violation and is not written.
        let mut standby = Store::new(Config::default());
        standby.pod_applied(&all_running, 40);
        standby.pod_applied(&last, 41);
        standby.pod_deleted(&last, 41);
        assert_eq!(standby.current(42).len(), 1, "the final report is kept");
        standby.took_over(vec![stored_report()]);
        assert!(standby.current(42).is_empty());

        // A final report that holds what the stored one decided is kept.
        leader.pod_deleted(&last, 41);
        leader.took_over(vec![stored_report()]);
        assert_eq!(leader.current(42).len(), 1);
    }
}
