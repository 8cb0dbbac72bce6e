//! Pods and their Events, as the API serves them -> one report per pod.
//!
//! Several versions of one pod (same uid, e.g. `kubectl get pod -w -o json`
//! output) are merged in the order given, as the controller merges what its
//! watch sees: the same history, judged by the same engine.

use crate::engine::history::History;
use crate::judge::{Config, judge_history};
use crate::kubelet::KubeletVersion;
use crate::observe::{EventFit, PodError, event_fact, pod_facts};
use crate::report::Report;
use k8s_openapi::api::core::v1::{Event, Pod};

/// The judgement of one pod, with how its events were used.
#[derive(Debug, Clone)]
pub struct Analysis {
    pub namespace: String,
    pub name: String,
    pub report: Report,
    /// Events about this pod that the rules used, and events about other
    /// objects that were ignored (unknown for a stored report).
    pub events: Option<(usize, usize)>,
    /// The kubelet version judged for (`--kubelet-version`, the node's, or a
    /// stored report's); `None`: unknown, the latest promises.
    pub kubelet: Option<KubeletVersion>,
}

/// Judges every pod against the events that concern it, by the latest
/// promises (kubelet version unknown).
pub fn analyze(pods: &[Pod], events: &[Event], cfg: &Config) -> Result<Vec<Analysis>, PodError> {
    analyze_on(pods, events, cfg, None)
}

/// Judges every pod against the events that concern it, on a node whose
/// kubelet is `kubelet` (`None`: unknown).
pub fn analyze_on(
    pods: &[Pod],
    events: &[Event],
    cfg: &Config,
    kubelet: Option<KubeletVersion>,
) -> Result<Vec<Analysis>, PodError> {
    let mut histories: Vec<History> = Vec::new();
    for pod in pods {
        let facts = pod_facts(pod)?;
        let same = histories.iter_mut().find(|h| {
            h.pod.namespace == facts.namespace && h.pod.name == facts.name && h.pod.uid == facts.uid
        });
        match same {
            Some(h) => h.observe(facts),
            None => histories.push(History::new(facts)),
        }
    }
    Ok(histories
        .into_iter()
        .map(|mut h| {
            let mut used = 0;
            let mut other = 0;
            for ev in events {
                match event_fact(&h.pod, ev) {
                    EventFit::Used(f) => {
                        used += 1;
                        h.add_event(f);
                    }
                    EventFit::Unused => {}
                    EventFit::OtherObject => other += 1,
                }
            }
            h.kubelet = kubelet;
            let report = judge_history(&h, cfg, None);
            Analysis {
                namespace: h.pod.namespace.clone(),
                name: h.pod.name.clone(),
                events: Some((used, other)),
                kubelet,
                report,
            }
        })
        .collect())
}
