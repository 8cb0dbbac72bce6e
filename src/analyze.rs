//! Pods and their Events, as the API serves them -> one report per pod.

use crate::judge::{Config, judge};
use crate::model::EventFact;
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
}

/// Judges every pod against the events that concern it.
pub fn analyze(pods: &[Pod], events: &[Event], cfg: &Config) -> Result<Vec<Analysis>, PodError> {
    pods.iter()
        .map(|pod| {
            let facts = pod_facts(pod)?;
            let mut used: Vec<EventFact> = Vec::new();
            let mut other = 0;
            for ev in events {
                match event_fact(&facts, ev) {
                    EventFit::Used(f) => used.push(f),
                    EventFit::Unused => {}
                    EventFit::OtherObject => other += 1,
                }
            }
            let report = judge(&facts, &used, cfg);
            Ok(Analysis {
                namespace: facts.namespace,
                name: facts.name,
                events: Some((used.len(), other)),
                report,
            })
        })
        .collect()
}
