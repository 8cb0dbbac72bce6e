//! Every pod the driver created against the report the controller wrote:
//! the startup verdict must be the label's; the shutdown verdict the
//! label's once the pod was deleted (and gone), Pending while it lives.

use crate::pods::{Book, PART_OF, PART_OF_VALUE, VARIANTS};
use k8s_openapi::api::core::v1::{Event, Pod};
use kube::api::{ApiResource, DynamicObject, ListParams};
use kube::{Api, Client};
use serde_json::Value;
use sidecar_order::controller::store::UNWATCHED_GAP;
use sidecar_order::crd::SidecarOrderReport;
use std::collections::{BTreeMap, HashMap, HashSet};

pub struct Outcome {
    pub reports: usize,
    pub checked: usize,
    pub missing: Vec<String>,
    pub differ: Vec<String>,
    /// Mismatches that are an honest "cannot tell", excused by the caller:
    /// a phase Indeterminate, its report Partial with the gap
    /// `UNWATCHED_GAP`, for a pod that ended while no watch could see it.
    pub undecided: Vec<String>,
    /// Mismatches of deleted pods whose stop kwok played at or after the
    /// grace deadline the API server set (a container's `finishedAt` not
    /// before `deletionTimestamp`): the kubelet would have killed what was
    /// left there, so the stop the label designs never happened. Not
    /// checked; a sign kwok lagged far behind its stages.
    pub late: Vec<String>,
    /// Pods the driver never deleted that are gone: someone else deleted
    /// them (the taint-eviction controller, when a starved kwok renewed
    /// its fake nodes' Leases late and they went NotReady). Not checked:
    /// the run measured a broken environment, not the controller.
    pub vanished: Vec<String>,
    /// The namespace's `TaintManagerEviction` Events, when pods vanished.
    pub evictions: usize,
    /// (variant, deleted) -> (startup, shutdown) -> pods
    pub matrix: BTreeMap<(String, bool), BTreeMap<(String, String), u64>>,
    pub live_pods: usize,
}

/// Every object of a list, a page of 500 at a time.
pub async fn list_all<K>(api: &Api<K>, lp: ListParams) -> Result<Vec<K>, kube::Error>
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

fn text(v: &Value, path: &[&str]) -> String {
    let mut v = v;
    for p in path {
        v = &v[*p];
    }
    v.as_str().unwrap_or("-").to_string()
}

/// Checks every pod of `book`. `unwatched_end` says whether a pod (by uid)
/// may have ended while no watch was up (the chaos run's API server
/// restarts): only then is an Indeterminate phase with `UNWATCHED_GAP`
/// an honest answer rather than a wrong one. The load run excuses none.
pub async fn verify(
    client: &Client,
    ns: &str,
    book: &Book,
    unwatched_end: impl Fn(&str) -> bool,
) -> Result<Outcome, kube::Error> {
    let ar = ApiResource::erase::<SidecarOrderReport>(&());
    let reports: Api<DynamicObject> = Api::namespaced_with(client.clone(), ns, &ar);
    let reports = list_all(&reports, ListParams::default()).await?;
    let pods: Api<Pod> = Api::namespaced(client.clone(), ns);
    let mut live = HashSet::new();
    let mut lp = ListParams::default()
        .labels(&format!("{PART_OF}={PART_OF_VALUE}"))
        .limit(500);
    loop {
        let page = pods.list_metadata(&lp).await?;
        live.extend(page.items.into_iter().filter_map(|p| p.metadata.uid));
        match page.metadata.continue_ {
            Some(c) if !c.is_empty() => lp = lp.continue_token(&c),
            _ => break,
        }
    }
    let by_uid: HashMap<String, &DynamicObject> = reports
        .iter()
        .map(|r| (text(&r.data, &["spec", "podUid"]), r))
        .collect();
    let mut out = Outcome {
        reports: reports.len(),
        checked: 0,
        missing: Vec::new(),
        differ: Vec::new(),
        undecided: Vec::new(),
        late: Vec::new(),
        vanished: Vec::new(),
        evictions: 0,
        matrix: BTreeMap::new(),
        live_pods: live.len(),
    };
    // The first mismatches' evidence, for a person to judge.
    let mut dump: Vec<(String, &DynamicObject)> = Vec::new();
    let mut created: Vec<(&String, &(String, usize))> = book.created.iter().collect();
    created.sort_by(|a, b| a.1.0.cmp(&b.1.0));
    for (uid, (name, v)) in created {
        let variant = &VARIANTS[*v];
        // A delete whose every attempt failed may have landed: gone, it did.
        let deleted = book.deleted.contains(uid)
            || (book.delete_unknown.contains(uid) && !live.contains(uid));
        if deleted && live.contains(uid) {
            out.missing
                .push(format!("{name} (uid {uid}) was deleted but still exists"));
            continue;
        }
        if !deleted && !live.contains(uid) {
            out.vanished.push(format!(
                "{name} (uid {uid}, {}): deleted by someone else",
                variant.name
            ));
            continue;
        }
        let Some(r) = by_uid.get(uid) else {
            out.missing.push(format!(
                "{name} (uid {uid}, {}, {}): no report",
                variant.name,
                if deleted { "deleted" } else { "live" }
            ));
            continue;
        };
        out.checked += 1;
        let got = (
            text(&r.data, &["status", "startup"]),
            text(&r.data, &["status", "shutdown"]),
        );
        *out.matrix
            .entry((variant.name.to_string(), deleted))
            .or_default()
            .entry(got.clone())
            .or_insert(0) += 1;
        let want_shutdown = if deleted { variant.shutdown } else { "Pending" };
        let honest = |got: &str, want: &str| {
            got == want
                || (got == "Indeterminate"
                    && r.data["status"]["evidence"] == "Partial"
                    && r.data["status"]["gaps"]
                        .as_array()
                        .is_some_and(|g| g.iter().any(|g| g == UNWATCHED_GAP))
                    && unwatched_end(uid))
        };
        if (got.0 != variant.startup || got.1 != want_shutdown)
            && honest(&got.0, variant.startup)
            && honest(&got.1, want_shutdown)
        {
            out.undecided.push(format!(
                "{name} ({}): startup {} shutdown {}, labels say {} {}: ended while no watch was up",
                variant.name, got.0, got.1, variant.startup, want_shutdown
            ));
        } else if (got.0 != variant.startup || got.1 != want_shutdown)
            && let Some(at) = deleted
                .then(|| book.deadlines.get(uid))
                .flatten()
                .and_then(|d| ended_at_or_after(&r.data, *d))
        {
            out.late.push(format!(
                "{name} ({}): startup {} shutdown {}, labels say {} {}: kwok stopped a container at {at}, at or after the grace deadline",
                variant.name, got.0, got.1, variant.startup, want_shutdown
            ));
        } else if got.0 != variant.startup || got.1 != want_shutdown {
            if dump.len() < DUMP {
                dump.push((name.clone(), r));
            }
            let violations: Vec<String> = r.data["status"]["violations"]
                .as_array()
                .map(|vs| {
                    vs.iter()
                        .map(|v| {
                            format!(
                                "{}: {}",
                                v["rule"].as_str().unwrap_or("?"),
                                v["message"].as_str().unwrap_or("")
                            )
                        })
                        .collect()
                })
                .unwrap_or_default();
            out.differ.push(format!(
                "{name} ({}, {}): startup {} shutdown {}, labels say {} {}; report {}; violations: [{}]",
                variant.name,
                if deleted { "deleted" } else { "live" },
                got.0,
                got.1,
                variant.startup,
                want_shutdown,
                r.metadata.name.as_deref().unwrap_or("?"),
                violations.join("; ")
            ));
        }
    }
    if !out.vanished.is_empty() {
        let events: Api<Event> = Api::namespaced(client.clone(), ns);
        let lp = ListParams::default().fields("reason=TaintManagerEviction");
        out.evictions = list_all(&events, lp).await?.len();
    }
    if !dump.is_empty()
        && let Ok(dir) = std::env::var("LOAD_DIR")
    {
        save(
            client,
            ns,
            &dump,
            &std::path::Path::new(&dir).join("mismatches"),
        )
        .await;
    }
    Ok(out)
}

/// The first `finishedAt` among the report's containers that is not
/// before `deadline` (both whole seconds at best).
fn ended_at_or_after(report: &Value, deadline: k8s_openapi::jiff::Timestamp) -> Option<String> {
    report["status"]["containers"]
        .as_array()?
        .iter()
        .filter_map(|c| c["finishedAt"].as_str())
        .find(|f| {
            f.parse::<k8s_openapi::jiff::Timestamp>()
                .is_ok_and(|t| t.as_second() >= deadline.as_second())
        })
        .map(str::to_string)
}

/// How many mismatching pods `save` keeps.
const DUMP: usize = 20;

/// Writes NAME-report.json, NAME-events.json (the pod's events, a List as
/// `kubectl get events -o json` prints it) and NAME-pod.json (when the pod
/// still exists) for each mismatch: `sidecar-order analyze --pod
/// NAME-pod.json --events NAME-events.json` judges it again offline.
async fn save(client: &Client, ns: &str, dump: &[(String, &DynamicObject)], dir: &std::path::Path) {
    if std::fs::create_dir_all(dir).is_err() {
        return;
    }
    let events: Api<Event> = Api::namespaced(client.clone(), ns);
    let pods: Api<Pod> = Api::namespaced(client.clone(), ns);
    for (name, report) in dump {
        let write = |suffix: &str, v: &Value| {
            let _ = std::fs::write(
                dir.join(format!("{name}-{suffix}.json")),
                serde_json::to_string_pretty(v).unwrap_or_default(),
            );
        };
        write("report", &serde_json::to_value(report).unwrap_or_default());
        let uid = text(&report.data, &["spec", "podUid"]);
        let lp = ListParams::default().fields(&format!("involvedObject.uid={uid}"));
        if let Ok(list) = events.list(&lp).await {
            let items = serde_json::to_value(&list.items).unwrap_or_default();
            write(
                "events",
                &serde_json::json!({"apiVersion": "v1", "kind": "List", "items": items}),
            );
        }
        if let Ok(Some(pod)) = pods.get_opt(name).await {
            write("pod", &serde_json::to_value(&pod).unwrap_or_default());
        }
    }
    eprintln!(
        "load: the first {} mismatches' reports, events and pods: {}",
        dump.len(),
        dir.display()
    );
}
