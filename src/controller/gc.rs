//! Which reports to delete: those whose pod ended longer than the TTL ago,
//! then, over the cap, the oldest ended ones. A live pod's report is never
//! deleted: the controller would not write it again until the pod changes.

/// What the collector needs to know of one stored report.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    pub namespace: String,
    pub name: String,
    /// Unix seconds the report was created.
    pub created: i64,
    /// Unix seconds the pod ended, when it has.
    pub ended: Option<i64>,
}

/// Indices into `entries` of the reports to delete.
pub fn select(entries: &[Entry], now: i64, ttl_secs: i64, max_reports: usize) -> Vec<usize> {
    let mut doomed: Vec<usize> = (0..entries.len())
        .filter(|&i| entries[i].ended.is_some_and(|e| now - e >= ttl_secs))
        .collect();
    let left = entries.len() - doomed.len();
    if left > max_reports {
        let mut rest: Vec<usize> = (0..entries.len())
            .filter(|i| entries[*i].ended.is_some() && !doomed.contains(i))
            .collect();
        // The oldest end first.
        rest.sort_by_key(|&i| (entries[i].ended, entries[i].created));
        doomed.extend(rest.into_iter().take(left - max_reports));
    }
    doomed.sort_unstable();
    doomed
}

#[cfg(test)]
mod tests {
    use super::*;

    fn e(name: &str, created: i64, ended: Option<i64>) -> Entry {
        Entry {
            namespace: "ns".into(),
            name: name.into(),
            created,
            ended,
        }
    }

    #[test]
    fn ttl_then_cap() {
        let all = [
            e("live", 0, None),
            e("old", 1, Some(10)),
            e("recent", 2, Some(95)),
            e("live2", 3, None),
        ];
        assert_eq!(select(&all, 100, 60, 10), vec![1]);
        // Cap 2: after the TTL, the ended one goes before any live one.
        assert_eq!(select(&all, 100, 60, 2), vec![1, 2]);
        // Cap 1: live reports stay, even over the cap.
        assert_eq!(select(&all, 100, 60, 1), vec![1, 2]);
        assert!(select(&all, 20, 60, 10).is_empty());
    }
}
