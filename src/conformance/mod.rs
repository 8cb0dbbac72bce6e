//! `sidecar-order conformance`: does this cluster's kubelet keep the
//! native-sidecar promises? Runs the catalogue's probe workloads in a
//! temporary namespace, judges each with the engine and prints one row per
//! promise and node.
//!
//! - `catalogue`: the promises, their probe manifests, when to delete and
//!   how to judge (sans-IO; the e2e suite builds its pods from it too);
//! - `runner`: the cluster side (permissions, nodes, namespace, probes,
//!   watch, cleanup on Ctrl-C);
//! - `output`: the table, JSON and JUnit XML.

pub mod catalogue;
pub mod output;
pub mod runner;

use serde::Serialize;

/// What a promise came to on one node.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub enum Status {
    Kept,
    /// Positive evidence that the kubelet broke it.
    Broken,
    /// The probe could not decide (the evidence says why).
    Indeterminate,
    /// This kubelet version does not make the promise.
    NotPromised,
}

impl Status {
    pub fn label(self) -> &'static str {
        match self {
            Status::Kept => "Kept",
            Status::Broken => "Broken",
            Status::Indeterminate => "Indeterminate",
            Status::NotPromised => "Not promised",
        }
    }
}

/// A verdict and the facts behind it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Finding {
    pub status: Status,
    pub evidence: Vec<String>,
}

impl Finding {
    pub fn kept(evidence: Vec<String>) -> Finding {
        Finding {
            status: Status::Kept,
            evidence,
        }
    }
    pub fn broken(evidence: Vec<String>) -> Finding {
        Finding {
            status: Status::Broken,
            evidence,
        }
    }
    pub fn indeterminate(evidence: Vec<String>) -> Finding {
        Finding {
            status: Status::Indeterminate,
            evidence,
        }
    }

    /// Two judgements of one promise: Broken wins, then Indeterminate; Kept
    /// only when both are. The evidence of the deciding side comes first.
    pub fn and(self, other: Finding) -> Finding {
        let rank = |s: Status| match s {
            Status::Broken => 0,
            Status::Indeterminate => 1,
            Status::NotPromised => 2,
            Status::Kept => 3,
        };
        let (first, second) = if rank(other.status) < rank(self.status) {
            (other, self)
        } else {
            (self, other)
        };
        let mut evidence = first.evidence;
        if first.status == second.status || first.status == Status::Kept {
            evidence.extend(second.evidence);
        }
        Finding {
            status: first.status,
            evidence,
        }
    }
}

/// One row of the result: a promise on a node.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Row {
    pub promise: &'static str,
    pub description: &'static str,
    /// Where it ran: the node, or `label=value (node)` with `--per-node=LABEL`.
    pub node: String,
    pub kubelet_version: Option<String>,
    pub promised_from: String,
    pub catches: &'static str,
    pub result: Status,
    pub evidence: Vec<String>,
    /// Known upstream kubelet bugs a Broken result matches on this version.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub known_bugs: Vec<String>,
    pub seconds: u64,
}

/// The whole run.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Run {
    pub namespace: String,
    pub image: String,
    pub seconds: u64,
    pub rows: Vec<Row>,
}

/// 0: every promise held (or is not made on that version); 1: one was
/// broken; 3: none broken, but one could not be decided.
pub fn exit_code(rows: &[Row]) -> u8 {
    if rows.iter().any(|r| r.result == Status::Broken) {
        1
    } else if rows.iter().any(|r| r.result == Status::Indeterminate) {
        3
    } else {
        0
    }
}

/// The finding of an entry on a kubelet: Not promised when the version does
/// not make the promise; a Broken one names the known bugs it matches.
pub fn finalize(
    entry: &catalogue::Entry,
    kubelet: Option<crate::kubelet::KubeletVersion>,
    found: Finding,
) -> (Finding, Vec<String>) {
    if let Some(k) = kubelet
        && !entry.since.holds_on(Some(k))
    {
        return (
            Finding {
                status: Status::NotPromised,
                evidence: vec![entry.since.why_not(k)],
            },
            Vec::new(),
        );
    }
    let mut bugs = Vec::new();
    if found.status == Status::Broken
        && let (Some(k), Some((rule, shape))) = (kubelet, entry.bug)
    {
        for b in crate::kubelet::known_bugs(k, rule, &shape) {
            bugs.push(format!(
                "{} ({}): fixed in {}",
                b.id(),
                b.title,
                b.fixed_for(k)
            ));
        }
    }
    (found, bugs)
}
