//! Kubelet events that arrived before their pod: kept, compactly, until the
//! pod shows up, and dropped when they can be about no pod the controller
//! will track.
//!
//! The pod and event watches are separate streams: when the controller
//! lags, a pod's first events can arrive before the pod itself. Those are
//! kept as `RawEvent`s (what the rules read, a few hundred bytes), never as
//! whole Events, and handed over when the pod is seen. Events of pods known
//! not to need them are not kept at all: pods without a native sidecar, pods
//! that ended, and pods gone before the last full pod list (an event older
//! than that list for a pod the list did not hold). What is kept is bounded
//! in count (`MAX_PENDING_EVENTS`: past it the pod waiting longest loses its
//! events, counted in `dropped`) and in age (`MAX_PENDING_SECS`: an event
//! whose pod did not show up in that time is about a pod this controller
//! does not watch, e.g. one outside its label selector; not counted).

use crate::observe::RawEvent;
use std::collections::hash_map::RandomState;
use std::collections::{HashMap, VecDeque};
use std::hash::BuildHasher;

/// Events waiting for their pod, in all.
pub const MAX_PENDING_EVENTS: usize = 16_384;
/// How long an event waits for its pod.
pub const MAX_PENDING_SECS: i64 = 300;
/// How long the uid of a pod that ended is remembered, to ignore its late
/// events (the kubelet's last Killing can follow the pod's deletion).
pub const GONE_SECS: i64 = 300;
/// An event older than the last full pod list by more than this, about a pod
/// that list did not hold, is about a pod gone before it (the margin covers
/// clock skew between the kubelet and the controller).
pub const LISTED_MARGIN_SECS: i64 = 60;

type Key = (String, String);

struct Waiting {
    key: Key,
    /// When its first waiting event arrived (the controller's clock).
    since: i64,
    events: Vec<RawEvent>,
}

#[derive(Default)]
pub struct Pending {
    hasher: RandomState,
    /// By the hash of the pod's key (`Waiting::key` tells a collision).
    by_pod: HashMap<u64, Waiting>,
    /// (since, hash of the key) in arrival order: the oldest waiting pod first.
    order: VecDeque<(i64, u64)>,
    len: usize,
    dropped: u64,
    /// Hashed uids of pods whose events are not needed: None for a live pod
    /// without a native sidecar, Some(t) for a pod that ended at t.
    quiet: HashMap<u64, Option<i64>>,
    gone_order: VecDeque<(i64, u64)>,
    /// When the pods were last listed in full (the controller's clock).
    listed_at: Option<i64>,
}

impl Pending {
    /// Keeps `ev`, about the untracked pod `key`, for when that pod shows up;
    /// or drops it when no tracked pod can need it.
    pub fn push(&mut self, key: Key, ev: RawEvent, now: i64) {
        self.age_out(now);
        let Some(body) = &ev.body else {
            return;
        };
        if let Some(uid) = &ev.uid
            && self.quiet.contains_key(&self.hasher.hash_one(&**uid))
        {
            return;
        }
        if self
            .listed_at
            .is_some_and(|t| body.last_secs() < t - LISTED_MARGIN_SECS)
        {
            return;
        }
        if self.len >= MAX_PENDING_EVENTS {
            self.evict_oldest();
        }
        let h = self.hasher.hash_one(&key);
        if self.by_pod.get(&h).is_some_and(|w| w.key != key) {
            // Two keys, one hash: the one waiting gives way.
            self.dropped += self.remove(h) as u64;
        }
        let w = self.by_pod.entry(h).or_insert_with(|| {
            self.order.push_back((now, h));
            Waiting {
                key,
                since: now,
                events: Vec::new(),
            }
        });
        w.events.push(ev);
        self.len += 1;
    }

    /// The events waiting for `key`, now that it is tracked.
    pub fn take(&mut self, key: &Key) -> Vec<RawEvent> {
        let h = self.hasher.hash_one(key);
        match self.by_pod.get(&h) {
            Some(w) if w.key == *key => {
                let w = self.by_pod.remove(&h).expect("present");
                self.len -= w.events.len();
                w.events
            }
            _ => Vec::new(),
        }
    }

    /// Forgets the pod hashed `h`; how many events it held.
    fn remove(&mut self, h: u64) -> usize {
        let n = self.by_pod.remove(&h).map_or(0, |w| w.events.len());
        self.len -= n;
        n
    }

    /// `key` is a live pod without a native sidecar (uid `uid`): its events
    /// are not kept.
    pub fn untracked(&mut self, key: &Key, uid: &str) {
        self.take(key);
        if !uid.is_empty() {
            self.quiet.entry(self.hasher.hash_one(uid)).or_insert(None);
        }
    }

    /// The pod `key` (uid `uid`) ended at `now`: its later events are not kept.
    pub fn gone(&mut self, key: &Key, uid: &str, now: i64) {
        self.take(key);
        self.age_out(now);
        if !uid.is_empty() {
            let h = self.hasher.hash_one(uid);
            self.quiet.insert(h, Some(now));
            self.gone_order.push_back((now, h));
        }
    }

    /// Every watched pod was just listed (at `now`).
    pub fn listed(&mut self, now: i64) {
        self.listed_at = Some(now);
    }

    /// Events dropped, in all, because too many waited.
    pub fn dropped(&self) -> u64 {
        self.dropped
    }

    /// Events waiting now.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    fn evict_oldest(&mut self) {
        while let Some((since, h)) = self.order.pop_front() {
            if let Some(n) = self.remove_if(h, since) {
                self.dropped += n as u64;
                return;
            }
        }
    }

    /// Removes the pod hashed `h` if it has waited since `since` (an entry
    /// of `order` is stale once its pod was taken); how many events it held.
    fn remove_if(&mut self, h: u64, since: i64) -> Option<usize> {
        (self.by_pod.get(&h)?.since == since).then(|| self.remove(h))
    }

    fn age_out(&mut self, now: i64) {
        while let Some(&(since, h)) = self.order.front() {
            if since >= now - MAX_PENDING_SECS {
                break;
            }
            self.order.pop_front();
            self.remove_if(h, since);
        }
        while let Some(&(at, h)) = self.gone_order.front() {
            if at >= now - GONE_SECS {
                break;
            }
            self.gone_order.pop_front();
            if self.quiet.get(&h) == Some(&Some(at)) {
                self.quiet.remove(&h);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::Event;

    fn raw(pod: &str, uid: &str, at: &str) -> RawEvent {
        let ev: Event = serde_json::from_value(serde_json::json!({
            "metadata": {"name": format!("{pod}.18eba42b1ca5d72d"), "namespace": "shop"},
            "involvedObject": {"kind": "Pod", "name": pod, "namespace": "shop", "uid": uid,
                "fieldPath": "spec.initContainers{proxy}"},
            "reason": "Started", "message": "Started container proxy", "type": "Normal",
            "firstTimestamp": at, "lastTimestamp": at, "count": 1
        }))
        .unwrap();
        RawEvent::read(&ev).unwrap().1
    }

    fn key(pod: &str) -> Key {
        ("shop".into(), pod.into())
    }

    const AT: &str = "2026-11-26T16:09:41Z";
    const AT_SECS: i64 = 1_795_709_381;

    #[test]
    fn the_time_constant_is_right() {
        assert_eq!(
            k8s_openapi::jiff::Timestamp::from_second(AT_SECS)
                .unwrap()
                .to_string(),
            AT
        );
    }

    #[test]
    fn past_the_cap_the_pod_waiting_longest_loses_its_events_and_they_are_counted() {
        let mut p = Pending::default();
        p.push(key("first"), raw("first", "u-first", AT), AT_SECS);
        p.push(key("first"), raw("first", "u-first", AT), AT_SECS);
        for i in 2..MAX_PENDING_EVENTS {
            p.push(
                key(&format!("p{i}")),
                raw(&format!("p{i}"), "", AT),
                AT_SECS + 1,
            );
        }
        assert_eq!((p.len(), p.dropped()), (MAX_PENDING_EVENTS, 0));
        p.push(key("one-more"), raw("one-more", "", AT), AT_SECS + 2);
        assert_eq!(p.dropped(), 2, "both events of the oldest waiting pod");
        assert_eq!(p.len(), MAX_PENDING_EVENTS - 1);
        assert!(p.take(&key("first")).is_empty());
        assert_eq!(p.take(&key("p2")).len(), 1, "the others still wait");
        assert_eq!(p.take(&key("one-more")).len(), 1);
    }

    #[test]
    fn a_pod_taken_and_waiting_again_is_not_evicted_by_its_stale_place() {
        let mut p = Pending::default();
        p.push(key("a"), raw("a", "ua", AT), AT_SECS);
        assert_eq!(p.take(&key("a")).len(), 1);
        p.push(key("b"), raw("b", "ub", AT), AT_SECS + 1);
        p.push(key("a"), raw("a", "ua", AT), AT_SECS + 2);
        for i in 2..=MAX_PENDING_EVENTS {
            p.push(
                key(&format!("p{i}")),
                raw(&format!("p{i}"), "", AT),
                AT_SECS + 3,
            );
        }
        assert_eq!(p.dropped(), 1);
        assert!(p.take(&key("b")).is_empty(), "b waited longest");
        assert_eq!(p.take(&key("a")).len(), 1);
    }

    #[test]
    fn events_of_pods_without_sidecars_or_that_ended_are_not_kept() {
        let mut p = Pending::default();
        p.untracked(&key("plain"), "u-plain");
        p.push(key("plain"), raw("plain", "u-plain", AT), AT_SECS);
        p.gone(&key("ended"), "u-ended", AT_SECS);
        p.push(key("ended"), raw("ended", "u-ended", AT), AT_SECS + 1);
        assert!(p.is_empty());
        // A new pod under an ended pod's name has another uid: kept.
        p.push(key("ended"), raw("ended", "u-new", AT), AT_SECS + 1);
        assert_eq!(p.len(), 1);
        // The ended uid is forgotten after GONE_SECS.
        p.push(
            key("ended"),
            raw("ended", "u-ended", AT),
            AT_SECS + GONE_SECS + 2,
        );
        assert_eq!(
            p.take(&key("ended")).len(),
            1,
            "the new pod's event aged out"
        );
        assert_eq!(p.dropped(), 0);
    }

    #[test]
    fn events_age_out_uncounted() {
        let mut p = Pending::default();
        p.push(key("a"), raw("a", "ua", AT), AT_SECS);
        p.push(key("b"), raw("b", "ub", AT), AT_SECS + MAX_PENDING_SECS + 1);
        assert!(p.take(&key("a")).is_empty());
        assert_eq!(p.take(&key("b")).len(), 1);
        assert_eq!(p.dropped(), 0);
    }

    #[test]
    fn after_a_full_list_old_events_of_unknown_pods_are_not_kept() {
        let mut p = Pending::default();
        p.listed(AT_SECS + LISTED_MARGIN_SECS + 1);
        p.push(key("old"), raw("old", "u-old", AT), AT_SECS + 70);
        assert!(p.is_empty(), "its pod was gone before the list");
        p.listed(AT_SECS + LISTED_MARGIN_SECS);
        p.push(key("recent"), raw("recent", "u-r", AT), AT_SECS + 70);
        assert_eq!(p.len(), 1, "within the margin it may be a pod not seen yet");
    }

    #[test]
    fn events_no_rule_reads_are_not_kept() {
        let mut p = Pending::default();
        let ev: Event = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "x.1", "namespace": "shop"},
            "involvedObject": {"kind": "Pod", "name": "x", "namespace": "shop"},
            "reason": "FailedMount", "firstTimestamp": AT
        }))
        .unwrap();
        p.push(key("x"), RawEvent::read(&ev).unwrap().1, AT_SECS);
        assert!(p.is_empty());
    }
}
