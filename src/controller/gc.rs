//! Which reports garbage collection deletes, from the index of reports
//! whose pod is gone: those whose pod ended longer than the TTL ago, then,
//! over the cap, the oldest ended ones. A tracked pod's report is never in
//! the index (the store removes it when the pod is tracked again), so a live
//! pod's report is never deleted. No LIST of the reports is needed.

use std::collections::{BTreeSet, HashMap};

/// One report object.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ReportRef {
    pub namespace: String,
    pub name: String,
}

/// Reports whose pod is gone, ordered by when the pod ended (unix seconds).
#[derive(Debug, Default)]
pub struct Gone {
    by_end: BTreeSet<(i64, ReportRef)>,
    ends: HashMap<ReportRef, i64>,
}

impl Gone {
    pub fn insert(&mut self, r: ReportRef, ended: i64) {
        if let Some(old) = self.ends.insert(r.clone(), ended) {
            self.by_end.remove(&(old, r.clone()));
        }
        self.by_end.insert((ended, r));
    }

    pub fn remove(&mut self, r: &ReportRef) {
        if let Some(e) = self.ends.remove(r) {
            self.by_end.remove(&(e, r.clone()));
        }
    }

    pub fn len(&self) -> usize {
        self.ends.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ends.is_empty()
    }

    /// Takes out the reports to delete: ended `ttl_secs` ago or more, then
    /// the oldest while more than `room` are left.
    pub fn expire(&mut self, now: i64, ttl_secs: i64, room: usize) -> Vec<ReportRef> {
        let mut out = Vec::new();
        while let Some((ended, _)) = self.by_end.first() {
            if now - *ended < ttl_secs && self.by_end.len() <= room {
                break;
            }
            let (_, r) = self.by_end.pop_first().expect("present");
            self.ends.remove(&r);
            out.push(r);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(name: &str) -> ReportRef {
        ReportRef {
            namespace: "ns".into(),
            name: name.into(),
        }
    }

    #[test]
    fn ttl_then_cap_oldest_first() {
        let mut g = Gone::default();
        g.insert(r("old"), 10);
        g.insert(r("recent"), 95);
        g.insert(r("middle"), 50);
        assert!(g.expire(20, 60, 10).is_empty());
        assert_eq!(g.expire(100, 60, 10), vec![r("old")]);
        // Room for one: the older of the two left goes.
        assert_eq!(g.expire(100, 60, 1), vec![r("middle")]);
        assert_eq!(g.len(), 1);
        // No room at all (tracked pods fill the cap): every gone one goes,
        // and nothing else is ever returned.
        assert_eq!(g.expire(100, 60, 0), vec![r("recent")]);
        assert!(g.expire(1000, 60, 0).is_empty());
    }

    #[test]
    fn a_report_tracked_again_leaves_the_index() {
        let mut g = Gone::default();
        g.insert(r("a"), 10);
        g.insert(r("a"), 30);
        assert_eq!(g.len(), 1);
        assert!(
            g.expire(50, 60, 10).is_empty(),
            "re-inserted with its new end"
        );
        g.remove(&r("a"));
        assert!(g.is_empty());
        assert!(g.expire(1000, 60, 0).is_empty());
    }
}
