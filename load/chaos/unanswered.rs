//! Violations stored by a status write that its process left unanswered
//! and was SIGKILLed before it could learn that the write landed.
//!
//! The controller counts a violation when the write that stores it is
//! answered, or read back after the lease is lost or at shutdown. A
//! process SIGKILLed with a write unanswered (its connection broke, and
//! the 2 s the run holds its requests before the kill left no room to
//! retry or read it back) can do neither: a write of it that landed is
//! stored and never counted. Nothing later can tell whether such a write
//! was counted, so the next leader counts nothing twice and this one
//! nowhere: the known limit of counting on the answer (README, "Chaos
//! run").
//!
//! Each one is named here, only where the evidence says so: the process
//! logged the write unanswered with the rule it adds
//! (`sidecar_order::counted` "status write unanswered" how="unanswered"),
//! logged no later line that it did not land and none counting it, ended
//! SIGKILLed, and the stored report is that write or names it among the
//! writes it was written over (`earlierWriteIds`). Anything else stored
//! and not counted stays a failure.

use crate::replicas::{End, Incarnation};
use crate::tally::Stored;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::PathBuf;

/// One violation stored and not counted, with the write that stored it.
pub struct LostAtKill {
    /// `namespace/name` of the report.
    pub report: String,
    pub rule: String,
    pub write_id: String,
    pub replica: usize,
    pub pid: u32,
}

/// A `key=value` of a log line (the value unquoted).
fn field(line: &str, key: &str) -> Option<String> {
    line.split_whitespace()
        .find_map(|w| w.strip_prefix(key)?.strip_prefix('='))
        .map(|v| v.trim_matches('"').to_string())
}

/// What one incarnation's log says of its unanswered writes.
#[derive(Default)]
struct Segment {
    /// write id -> (report, rules it adds)
    unanswered: HashMap<String, (String, Vec<String>)>,
    /// Writes found not to have landed.
    resolved: HashSet<String>,
}

fn read_segments(text: &str) -> Vec<Segment> {
    let mut out = Vec::new();
    for line in text.lines() {
        if line.starts_with("=== chaos: starting replica") {
            out.push(Segment::default());
            continue;
        }
        let Some(seg) = out.last_mut() else { continue };
        if !line.contains("status write unanswered") {
            continue;
        }
        let (Some(id), Some(how)) = (field(line, "write_id"), field(line, "how")) else {
            continue;
        };
        if how == "unanswered" {
            let report = field(line, "report").unwrap_or_default();
            let adds = field(line, "adds")
                .unwrap_or_default()
                .split(',')
                .filter(|r| !r.is_empty())
                .map(str::to_string)
                .collect();
            seg.unanswered.insert(id, (report, adds));
        } else {
            seg.resolved.insert(id);
        }
    }
    out
}

/// The violations the stored reports of `ns` hold that no log line counts
/// and that a SIGKILLed process's unanswered write stored (see the module
/// doc), at most as many per report and rule as are stored uncounted.
/// `logs` are the replicas' logs, by replica index.
pub fn lost_at_kill(
    stored: &Stored,
    ns: &str,
    logs: &[PathBuf],
    incarnations: &[Incarnation],
) -> Vec<LostAtKill> {
    let texts: Vec<String> = logs
        .iter()
        .map(|l| std::fs::read_to_string(l).unwrap_or_default())
        .collect();
    // Every write that some line counts a violation of.
    let mut counted: BTreeMap<(String, String), usize> = BTreeMap::new();
    let mut counting: HashSet<String> = HashSet::new();
    for t in &texts {
        for line in t.lines().filter(|l| l.contains("violation counted")) {
            if let (Some(report), Some(rule)) = (field(line, "report"), field(line, "rule")) {
                *counted.entry((report, rule)).or_default() += 1;
            }
            counting.extend(field(line, "write_id"));
        }
    }
    // Stored and not counted, per report and rule.
    let mut uncounted: BTreeMap<(String, String), usize> = BTreeMap::new();
    for (uid, rules) in &stored.rules {
        let Some(name) = stored.report_of.get(uid) else {
            continue;
        };
        let report = format!("{ns}/{name}");
        let mut per_rule: BTreeMap<&str, usize> = BTreeMap::new();
        for r in rules {
            *per_rule.entry(r).or_default() += 1;
        }
        for (rule, n) in per_rule {
            let key = (report.clone(), rule.to_string());
            let c = counted.get(&key).copied().unwrap_or(0);
            if n > c {
                uncounted.insert(key, n - c);
            }
        }
    }
    let chain_of: HashMap<String, &Vec<String>> = stored
        .chains
        .iter()
        .map(|(name, ids)| (format!("{ns}/{name}"), ids))
        .collect();
    let mut out = Vec::new();
    for (replica, t) in texts.iter().enumerate() {
        let segments = read_segments(t);
        let mine: Vec<&Incarnation> = incarnations
            .iter()
            .filter(|i| i.replica == replica)
            .collect();
        // A log that does not match its incarnations names nothing.
        if segments.len() != mine.len() {
            continue;
        }
        for (seg, inc) in segments.iter().zip(mine) {
            let killed = matches!(
                inc.ended,
                Some((_, End::KilledLeader | End::KilledStandby | End::Final))
            );
            if !killed {
                continue;
            }
            let mut ids: Vec<&String> = seg.unanswered.keys().collect();
            ids.sort();
            for id in ids {
                if seg.resolved.contains(id) || counting.contains(id) {
                    continue;
                }
                let (report, adds) = &seg.unanswered[id];
                if !chain_of.get(report).is_some_and(|c| c.contains(id)) {
                    continue;
                }
                for rule in adds {
                    let Some(left) = uncounted.get_mut(&(report.clone(), rule.clone())) else {
                        continue;
                    };
                    if *left == 0 {
                        continue;
                    }
                    *left -= 1;
                    out.push(LostAtKill {
                        report: report.clone(),
                        rule: rule.clone(),
                        write_id: id.clone(),
                        replica,
                        pid: inc.pid,
                    });
                }
            }
        }
    }
    out
}
