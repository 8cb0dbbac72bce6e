//! Moments and how two of them are compared.
//!
//! A moment can be known through several sources of different precision. Each
//! comparison tries the sources from most to least trustworthy and records
//! which one decided; where none separates the two moments the answer is
//! `None` (indeterminate), never a guess.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use std::cmp::Ordering;

/// Where a moment's whole-second value came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum SecsFrom {
    /// `startedAt` / `finishedAt` of a container status (the runtime's time, floored).
    Status,
    /// An event's timestamps (the kubelet's clock when it recorded the event,
    /// a few milliseconds after the fact it reports).
    Event,
}

/// One point in time, as precisely as the sources knew it.
///
/// 24 bytes (40 with `Option` fields): the controller holds about 17 per
/// tracked pod (two per container run, two per event), so the optional
/// parts are kept as plain numbers with a value that means "unknown", read
/// and set only through `nanos()`, `seen()` and their setters. The JSON
/// form is the plain one (`MomentRepr`).
#[derive(Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(from = "MomentRepr", into = "MomentRepr")]
pub struct Moment {
    /// Unix seconds (always known).
    pub secs: i64,
    pub secs_from: SecsFrom,
    /// Unix nanoseconds of the kubelet clock, from a kubelet event's name;
    /// `NO_NANOS` when unknown.
    nanos: i64,
    /// Position in the order in which the controller saw status transitions
    /// (a monotonic counter of its own), plus one; 0 when it did not see
    /// the transition happen.
    seen: u32,
}

/// `Moment::nanos` unknown (no kubelet clock is at the lowest `i64`).
const NO_NANOS: i64 = i64::MIN;

/// `Moment` as JSON (and as `Debug` prints it).
#[derive(Debug, Serialize, Deserialize)]
struct MomentRepr {
    secs: i64,
    secs_from: SecsFrom,
    nanos: Option<i64>,
    seen: Option<u32>,
}

impl From<MomentRepr> for Moment {
    fn from(r: MomentRepr) -> Moment {
        Moment::new(r.secs, r.secs_from, r.nanos, r.seen)
    }
}

impl From<Moment> for MomentRepr {
    fn from(m: Moment) -> MomentRepr {
        MomentRepr {
            secs: m.secs,
            secs_from: m.secs_from,
            nanos: m.nanos(),
            seen: m.seen(),
        }
    }
}

impl std::fmt::Debug for Moment {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        MomentRepr::from(*self).fmt(f)
    }
}

/// The source that decided a comparison.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, JsonSchema,
)]
#[serde(rename_all = "kebab-case")]
pub enum Source {
    /// Whole seconds from container statuses or event timestamps.
    StatusSeconds,
    /// Nanosecond kubelet clock recovered from event names.
    EventClock,
    /// The order in which the controller saw the transitions.
    WatchOrder,
}

impl Moment {
    pub fn new(secs: i64, secs_from: SecsFrom, nanos: Option<i64>, seen: Option<u32>) -> Self {
        let mut m = Moment {
            secs,
            secs_from,
            nanos: NO_NANOS,
            seen: 0,
        };
        m.set_nanos(nanos);
        m.set_seen(seen);
        m
    }

    pub fn status(secs: i64) -> Self {
        Moment::new(secs, SecsFrom::Status, None, None)
    }

    pub fn event(secs: i64, nanos: Option<i64>) -> Self {
        Moment::new(secs, SecsFrom::Event, nanos, None)
    }

    /// Unix nanoseconds of the kubelet clock, from a kubelet event's name.
    pub fn nanos(&self) -> Option<i64> {
        (self.nanos != NO_NANOS).then_some(self.nanos)
    }

    pub fn set_nanos(&mut self, nanos: Option<i64>) {
        // The lowest i64 (year 1677) reads as unknown: no kubelet clock is there.
        self.nanos = nanos.unwrap_or(NO_NANOS);
    }

    /// Position in the order in which the controller saw status transitions
    /// (a monotonic counter of its own); only set for transitions it saw happen.
    pub fn seen(&self) -> Option<u32> {
        self.seen.checked_sub(1)
    }

    pub fn set_seen(&mut self, seen: Option<u32>) {
        // Saturates at the 4-billionth transition seen: never reached.
        self.seen = seen.map_or(0, |s| s.saturating_add(1));
    }

    /// The sort key used to order moments for display; not a judgement.
    pub fn sort_key(&self) -> (i64, i64) {
        (
            self.secs,
            self.nanos().map_or(0, |n| n.rem_euclid(1_000_000_000)),
        )
    }
}

/// Compares `a` with `b`. `Some((ordering, source))` when a source separates
/// them, `None` when nothing does.
pub fn compare(a: &Moment, b: &Moment) -> Option<(Ordering, Source)> {
    // Whole seconds are exact when both come from the same kind of clock
    // reading. An event is recorded slightly after what it reports: what an
    // event of second E reports happened before E+1, so it surely precedes a
    // status time of a later second (a status time S means at or after S).
    // The other way round the event may lag into the next second, so a status
    // time precedes an event only two seconds or more before it.
    let gap = a.secs.saturating_sub(b.secs);
    let (earlier, later) = if gap < 0 { (a, b) } else { (b, a) };
    let needed = if a.secs_from == b.secs_from
        || (earlier.secs_from == SecsFrom::Event && later.secs_from == SecsFrom::Status)
    {
        1
    } else {
        2
    };
    if gap.saturating_abs() >= needed {
        return Some((gap.cmp(&0), Source::StatusSeconds));
    }
    if let (Some(x), Some(y)) = (a.nanos(), b.nanos())
        && x != y
    {
        return Some((x.cmp(&y), Source::EventClock));
    }
    if let (Some(x), Some(y)) = (a.seen(), b.seen())
        && x != y
    {
        return Some((x.cmp(&y), Source::WatchOrder));
    }
    None
}

/// Outcome of asking "did `a` happen strictly before `b`?".
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Before {
    Yes(Source),
    No(Source),
    Unknown,
}

pub fn before(a: &Moment, b: &Moment) -> Before {
    match compare(a, b) {
        Some((Ordering::Less, s)) => Before::Yes(s),
        Some((_, s)) => Before::No(s),
        None => Before::Unknown,
    }
}

/// Formats unix seconds as RFC 3339 (UTC), as the Kubernetes API prints times.
pub fn rfc3339(secs: i64) -> String {
    match k8s_openapi::jiff::Timestamp::from_second(secs) {
        Ok(t) => t.to_string(),
        Err(_) => format!("@{secs}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seconds_decide_when_they_differ() {
        let a = Moment::status(10);
        let b = Moment::status(11);
        assert_eq!(
            compare(&a, &b),
            Some((Ordering::Less, Source::StatusSeconds))
        );
    }

    #[test]
    fn same_second_without_finer_source_is_unknown() {
        assert_eq!(compare(&Moment::status(10), &Moment::status(10)), None);
    }

    #[test]
    fn mixed_kinds_need_two_seconds() {
        let a = Moment::status(10);
        let b = Moment::event(11, None);
        assert_eq!(compare(&a, &b), None);
        assert_eq!(compare(&b, &a), None);
        let c = Moment::event(12, None);
        assert_eq!(before(&a, &c), Before::Yes(Source::StatusSeconds));
    }

    #[test]
    fn an_event_of_an_earlier_second_precedes_a_status_time() {
        // e2e t06: the startup probe last failed at 20:51:55 (event), the app
        // started at 20:51:56 (status): the failure came first.
        let failed = Moment::event(55, None);
        let started = Moment::status(56);
        assert_eq!(
            before(&failed, &started),
            Before::Yes(Source::StatusSeconds)
        );
        assert_eq!(before(&started, &failed), Before::No(Source::StatusSeconds));
        // Same second: still unknown.
        assert_eq!(compare(&Moment::event(56, None), &started), None);
    }

    #[test]
    fn nanos_then_watch_order_break_ties() {
        let a = Moment::event(10, Some(10_100_000_000));
        let b = Moment::event(10, Some(10_200_000_000));
        assert_eq!(before(&a, &b), Before::Yes(Source::EventClock));
        let mut c = Moment::status(10);
        let mut d = Moment::status(10);
        c.set_seen(Some(5));
        d.set_seen(Some(4));
        assert_eq!(before(&c, &d), Before::No(Source::WatchOrder));
    }
}
