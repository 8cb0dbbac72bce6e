//! The end of a chaos run: what the stored reports hold against what the
//! replicas counted, and the controller's Warning Events per pod.
//!
//! What the replicas counted: each incarnation exports only what it
//! counted after its own successful writes, from zero. Its last scrape was
//! taken with its requests held for a while before it was killed (every
//! request the API server got was answered, and counted, by then; none
//! could complete after), so the sum of the incarnations' last scrapes is
//! everything all of them counted. An incarnation without such a scrape
//! (it crashed, or did not answer) is a measurement gap, shown as such.
//! A write whose connection broke before its answer came is the one
//! exception: see `unanswered`.

use crate::replicas::{Incarnation, PROBE_FAILURES, VIOLATIONS};
use k8s_openapi::api::core::v1::Event;
use kube::api::{ApiResource, DynamicObject, ListParams};
use kube::{Api, Client};
use serde_json::Value;
use sidecar_order::controller::writer::EVENT_REASON;
use sidecar_order::crd::SidecarOrderReport;
use std::collections::{BTreeMap, HashMap};

/// What the stored reports of the namespace hold.
#[derive(Default)]
pub struct Stored {
    pub reports: usize,
    pub violations: u64,
    pub by_rule: BTreeMap<String, u64>,
    pub probe_failures: u64,
    /// Pod uid -> the rules of its stored violations, one entry each.
    pub rules: HashMap<String, Vec<String>>,
    /// Pod uid -> report name.
    pub report_of: HashMap<String, String>,
    /// Report name -> the write that stored its status and the ones it
    /// names as written over (`writeId`, then `earlierWriteIds`).
    pub chains: HashMap<String, Vec<String>>,
}

/// What the incarnations counted (their last scrapes summed).
#[derive(Default)]
pub struct Counted {
    pub violations: f64,
    pub by_rule: BTreeMap<String, f64>,
    pub probe_failures: f64,
    pub incarnations: usize,
    /// Status writes left unanswered and read back, by result
    /// (`unanswered_landed`, `_lost`, `_unknown`), over all processes.
    pub unanswered: BTreeMap<String, f64>,
    /// Incarnations whose last scrape was not taken right before their end.
    pub gaps: Vec<String>,
}

pub struct Events {
    /// Event objects with the controller's reason.
    pub objects: usize,
    /// Occurrences (an object repeated in a series counts each time).
    pub occurrences: u64,
    /// "pod: note xN" for every note seen more than once on a pod.
    pub duplicates: Vec<String>,
    /// Stored violations without an Event of their rule on the pod (the
    /// message may have changed since the Event: matched by rule).
    pub missing: usize,
    /// Events beyond the stored violations of their rule on the pod.
    pub extra: usize,
}

async fn list_all<K>(api: &Api<K>, lp: ListParams) -> Result<Vec<K>, kube::Error>
where
    K: Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    let mut out = Vec::new();
    let mut lp = lp.limit(500);
    loop {
        let page = api.list(&lp).await?;
        out.extend(page.items);
        match page.metadata.continue_ {
            Some(c) if !c.is_empty() => lp = lp.continue_token(&c),
            _ => return Ok(out),
        }
    }
}

fn s(v: &Value) -> &str {
    v.as_str().unwrap_or("")
}

pub async fn stored(client: &Client, ns: &str) -> Result<Stored, kube::Error> {
    let ar = ApiResource::erase::<SidecarOrderReport>(&());
    let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), ns, &ar);
    let mut out = Stored::default();
    for r in list_all(&api, ListParams::default()).await? {
        out.reports += 1;
        let uid = s(&r.data["spec"]["podUid"]).to_string();
        let st = &r.data["status"];
        let vs = st["violations"].as_array().cloned().unwrap_or_default();
        out.violations += vs.len() as u64;
        for v in &vs {
            *out.by_rule.entry(s(&v["rule"]).to_string()).or_insert(0) += 1;
        }
        out.probe_failures += st["probeFailureCount"].as_u64().unwrap_or(0);
        out.rules
            .entry(uid.clone())
            .or_default()
            .extend(vs.iter().map(|v| s(&v["rule"]).to_string()));
        let name = r.metadata.name.clone().unwrap_or_default();
        let chain = st["writeId"]
            .as_str()
            .into_iter()
            .chain(
                st["earlierWriteIds"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(Value::as_str),
            )
            .map(str::to_string)
            .collect();
        out.chains.insert(name.clone(), chain);
        out.report_of.insert(uid, name);
    }
    Ok(out)
}

pub fn counted(incarnations: &[Incarnation], ns: &str) -> Counted {
    let mut out = Counted {
        incarnations: incarnations.len(),
        ..Counted::default()
    };
    let here = |l: &crate::prom::Labels| l.get("namespace").is_some_and(|n| n == ns);
    for (i, inc) in incarnations.iter().enumerate() {
        // A process that exited on its own before it stored anything
        // (e.g. at start-up, the API server unreachable) counted nothing.
        let idle_exit = inc.crashed
            && inc
                .last
                .as_ref()
                .is_none_or(|m| crate::replicas::stored(m) == 0.0);
        if !inc.final_scrape && !idle_exit {
            out.gaps.push(format!(
                "incarnation {i} (replica {}, pid {}): {}",
                inc.replica,
                inc.pid,
                if inc.crashed {
                    "exited on its own after storing writes"
                } else if inc.last.is_some() {
                    "no scrape right before its end (the last periodic one is used)"
                } else {
                    "never scraped"
                }
            ));
        }
        let Some(m) = &inc.last else { continue };
        out.violations += m.sum(VIOLATIONS, here);
        out.probe_failures += m.sum(PROBE_FAILURES, here);
        for (n, l, v) in &m.samples {
            if n == VIOLATIONS && here(l) {
                let rule = l.get("rule").cloned().unwrap_or_default();
                *out.by_rule.entry(rule).or_insert(0.0) += v;
            }
            if n == crate::replicas::WRITES
                && let Some(r) = l.get("result").filter(|r| r.starts_with("unanswered_"))
            {
                *out.unanswered.entry(r.clone()).or_insert(0.0) += v;
            }
        }
    }
    out
}

pub async fn events(client: &Client, ns: &str, stored: &Stored) -> Result<Events, kube::Error> {
    let api: Api<Event> = Api::namespaced(client.clone(), ns);
    let lp = ListParams::default().fields(&format!("reason={EVENT_REASON}"));
    let mut seen: HashMap<(String, String), u64> = HashMap::new();
    let mut objects = 0;
    let mut occurrences = 0;
    for e in list_all(&api, lp).await? {
        objects += 1;
        let n = [
            e.count.unwrap_or(1),
            e.series.as_ref().and_then(|s| s.count).unwrap_or(1),
            1,
        ]
        .into_iter()
        .max()
        .unwrap_or(1) as u64;
        occurrences += n;
        let uid = e.involved_object.uid.clone().unwrap_or_default();
        *seen
            .entry((uid, e.message.clone().unwrap_or_default()))
            .or_insert(0) += n;
    }
    let mut duplicates: Vec<String> = seen
        .iter()
        .filter(|(_, n)| **n > 1)
        .map(|((uid, note), n)| {
            let report = stored.report_of.get(uid).map_or("?", |r| r.as_str());
            format!("pod uid {uid} (report {report}): {note:?} x{n}")
        })
        .collect();
    duplicates.sort();
    // Per (pod, rule): stored violations against event occurrences.
    let mut by_rule: HashMap<(String, String), (u64, u64)> = HashMap::new();
    for (uid, rules) in &stored.rules {
        for r in rules {
            by_rule.entry((uid.clone(), r.clone())).or_default().0 += 1;
        }
    }
    // Distinct notes: a repeated note (an Event series) stands for one
    // violation, whatever its count.
    for (uid, note) in seen.keys() {
        let rule = note.split(": ").next().unwrap_or("").to_string();
        by_rule.entry((uid.clone(), rule)).or_default().1 += 1;
    }
    let missing = by_rule
        .values()
        .map(|(s, e)| s.saturating_sub(*e))
        .sum::<u64>() as usize;
    let extra = by_rule
        .values()
        .map(|(s, e)| e.saturating_sub(*s))
        .sum::<u64>() as usize;
    Ok(Events {
        objects,
        occurrences,
        duplicates,
        missing,
        extra,
    })
}
