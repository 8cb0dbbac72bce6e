//! The controller's store fed with a watch stream recorded on the local
//! cluster (`kubectl get pods,events -w -o json --output-watch-events` while
//! tests/watch/rec-pods.yaml ran: a two-sidecar pod deleted after 25 s, and a
//! sidecar whose liveness probe always fails). Pods and events are merged in
//! resourceVersion order, which is the order etcd committed them.

use k8s_openapi::api::core::v1::{Event, Pod};
use serde_json::Value;
use sidecar_order::controller::ledger::{Ledger, status_hash};
use sidecar_order::controller::store::{Store, StoredReport, Update};
use sidecar_order::judge::Config;
use sidecar_order::model::ProbeKind;
use sidecar_order::report::Verdict;
use std::collections::HashMap;

#[allow(clippy::large_enum_variant)] // test data, built once
enum Item {
    Pod(&'static str, Pod),
    Event(Event),
}

fn objects(text: &str) -> Vec<Value> {
    serde_json::Deserializer::from_str(text)
        .into_iter::<Value>()
        .map(|v| v.expect("recorded JSON"))
        .collect()
}

fn rv(v: &Value) -> u64 {
    v["object"]["metadata"]["resourceVersion"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap()
}

/// The recorded stream, and for each item a clock: the newest time it mentions.
fn stream() -> Vec<(i64, Item)> {
    stream_edited(u64::MAX, |_| {})
}

/// The recorded stream up to `until` (a resourceVersion), each pod
/// version passed through `edit` first.
fn stream_edited(until: u64, mut edit: impl FnMut(&mut Value)) -> Vec<(i64, Item)> {
    let mut pods = objects(include_str!("watch/rec-pods.jsonl"));
    pods.iter_mut().for_each(&mut edit);
    let events = objects(include_str!("watch/rec-events.jsonl"));
    let mut all: Vec<(u64, Value, bool)> = pods
        .into_iter()
        .map(|v| (rv(&v), v, true))
        .chain(events.into_iter().map(|v| (rv(&v), v, false)))
        .filter(|(rv, _, _)| *rv <= until)
        .collect();
    all.sort_by_key(|(rv, _, _)| *rv);
    let mut clock = 0i64;
    let time_re = |v: &Value, clock: &mut i64| {
        // Any RFC 3339 value in the object moves the clock forward.
        fn walk(v: &Value, best: &mut i64) {
            match v {
                Value::String(s) => {
                    if let Ok(t) = s.parse::<k8s_openapi::jiff::Timestamp>() {
                        *best = (*best).max(t.as_second());
                    }
                }
                Value::Array(a) => a.iter().for_each(|x| walk(x, best)),
                Value::Object(o) => o.values().for_each(|x| walk(x, best)),
                _ => {}
            }
        }
        walk(v, clock);
    };
    all.into_iter()
        .map(|(_, v, is_pod)| {
            time_re(&v["object"], &mut clock);
            let kind = if v["type"] == "DELETED" {
                "DELETED"
            } else {
                "APPLIED"
            };
            let item = if is_pod {
                Item::Pod(kind, serde_json::from_value(v["object"].clone()).unwrap())
            } else {
                Item::Event(serde_json::from_value(v["object"].clone()).unwrap())
            };
            (clock, item)
        })
        .collect()
}

fn replay(store: &mut Store, items: &[(i64, Item)]) -> Vec<Update> {
    let mut out = Vec::new();
    for (now, item) in items {
        out.extend(match item {
            Item::Pod("DELETED", p) => store.pod_deleted(p, *now),
            Item::Pod(_, p) => store.pod_applied(p, *now),
            Item::Event(e) => store.event_applied(e, *now),
        });
    }
    out
}

fn last_for<'a>(updates: &'a [Update], pod: &str) -> &'a Update {
    updates
        .iter()
        .rev()
        .find(|u| u.pod_name == pod)
        .expect("an update for the pod")
}

/// Writes every update (each write succeeding) against `ledger` and sums
/// what the writes counted, per (pod, what).
fn totals(ledger: &mut Ledger, updates: &[Update]) -> HashMap<String, u64> {
    let mut t = HashMap::new();
    for u in updates {
        let key = (u.namespace.clone(), u.report_name.clone());
        let hash = status_hash(&u.spec, &u.status);
        if ledger.holds(&key, hash) {
            continue;
        }
        let inc = ledger.record(&key, hash, &u.status, None);
        for v in &inc.violations {
            *t.entry(format!("{}/violation/{}", u.pod_name, v.rule.id()))
                .or_default() += 1;
        }
        for (c, k, n) in &inc.probe_failures {
            *t.entry(format!("{}/probe/{c}/{}", u.pod_name, k.as_str()))
                .or_default() += u64::from(*n);
        }
        for (c, n) in &inc.sidecar_restarts {
            *t.entry(format!("{}/restarts/{c}", u.pod_name)).or_default() += u64::from(*n);
        }
    }
    t
}

#[test]
fn recorded_stream_gives_the_kubelets_verdicts() {
    let items = stream();
    let mut store = Store::new(Config::default());
    let updates = replay(&mut store, &items);

    let order = last_for(&updates, "order-example");
    assert_eq!(order.status.report.startup, Verdict::Verified);
    assert_eq!(
        order.status.report.shutdown,
        Verdict::Verified,
        "{:#?}",
        order.status.report
    );
    assert!(
        order.status.pod_ended_at.is_some(),
        "a deleted pod's report records its end"
    );
    assert!(order.status.report.violations.is_empty());
    assert!(order.report_name.starts_with("order-example-"));

    let live = last_for(&updates, "liveness-fail");
    assert_eq!(live.status.report.startup, Verdict::Verified);
    assert_eq!(live.status.report.shutdown, Verdict::Pending);
    let liveness = live
        .status
        .report
        .probe_failures
        .iter()
        .find(|p| p.container == "sidecar" && p.probe == ProbeKind::Liveness)
        .expect("liveness failures recorded");
    assert!(liveness.count >= 2, "{liveness:?}");
    assert!(live.status.sidecar_restarts >= 1);

    // Increments add up to exactly what the last reports hold: nothing twice.
    let t = totals(&mut Ledger::default(), &updates);
    assert_eq!(
        t["liveness-fail/probe/sidecar/liveness"],
        u64::from(liveness.count)
    );
    assert_eq!(
        t["liveness-fail/restarts/sidecar"],
        u64::from(live.status.sidecar_restarts)
    );
    // Only the deleted pod is gone from the index.
    assert_eq!(store.tracked_pods(), 1);
}

#[test]
fn a_relist_changes_nothing() {
    let items = stream();
    let mut store = Store::new(Config::default());
    replay(&mut store, &items);
    // The watch restarts: the API lists the current objects again.
    let mut current: HashMap<String, &Pod> = HashMap::new();
    for (_, item) in items.iter() {
        if let Item::Pod(kind, p) = item {
            let name = p.metadata.name.clone().unwrap();
            if *kind == "DELETED" {
                current.remove(&name);
            } else {
                current.insert(name, p);
            }
        }
    }
    let now = items.last().unwrap().0;
    store.pods_resync_start(None);
    let mut again = Vec::new();
    for p in current.values() {
        again.extend(store.pod_applied(p, now));
    }
    let r = store.pods_resync_done(None, now);
    assert!(r.closed.is_empty(), "{:?}", r.closed);
    again.extend(r.updates);
    for (_, item) in items.iter() {
        if let Item::Event(e) = item {
            again.extend(store.event_applied(e, now));
        }
    }
    assert!(
        again.is_empty(),
        "a relist rewrote or recounted: {again:#?}"
    );
}

/// The last report the first process wrote of each pod, and a second
/// process (store and writer's ledger) started from those stored reports.
fn restarted(updates: &[Update]) -> (HashMap<String, &Update>, Store, Ledger) {
    let mut written: HashMap<String, &Update> = HashMap::new();
    for u in updates {
        written.insert(u.report_name.clone(), u);
    }
    let mut second = Store::new(Config::default());
    let mut ledger = Ledger::default();
    for u in written.values() {
        second.preload(StoredReport::of(
            &u.namespace,
            &u.report_name,
            &u.spec,
            &u.status,
        ));
        ledger.seed(&u.namespace, &u.report_name, &u.spec, &u.status, None);
    }
    (written, second, ledger)
}

#[test]
fn a_restarted_controller_counts_nothing_twice() {
    let items = stream();
    let updates = replay(&mut Store::new(Config::default()), &items);
    // The new process loads the reports the first one wrote.
    let (written, mut second, mut ledger) = restarted(&updates);
    // It lists the pods that exist now, then sees every event again.
    let now = items.last().unwrap().0;
    second.pods_resync_start(None);
    let mut after = Vec::new();
    for (_, item) in items.iter() {
        match item {
            Item::Pod("DELETED", _) => {}
            Item::Pod(_, p) if p.metadata.name.as_deref() == Some("liveness-fail") => {
                after.extend(second.pod_applied(p, now))
            }
            _ => {}
        }
    }
    let r = second.pods_resync_done(None, now);
    // Stored reports still live whose pod this list lacks are closed by the
    // writer; those already ended are left as they are.
    let mut closed: Vec<&str> = r.closed.iter().map(|c| c.name.as_str()).collect();
    closed.sort_unstable();
    let mut live: Vec<&str> = written
        .values()
        .filter(|u| u.status.pod_ended_at.is_none() && u.pod_name != "liveness-fail")
        .map(|u| u.report_name.as_str())
        .collect();
    live.sort_unstable();
    assert_eq!(closed, live);
    after.extend(r.updates);
    for (_, item) in items.iter() {
        if let Item::Event(e) = item {
            after.extend(second.event_applied(e, now));
        }
    }
    let t = totals(&mut ledger, &after);
    assert!(t.is_empty(), "counted again after a restart: {t:?}");
    // And a takeover (a standby's index against the stored reports) writes
    // nothing and counts nothing either.
    let current = second.current(now);
    assert!(
        current.iter().all(|u| ledger.holds(
            &(u.namespace.clone(), u.report_name.clone()),
            status_hash(&u.spec, &u.status)
        )),
        "a takeover would rewrite a stored report"
    );
}

/// A restart where nothing changed while the controller was down: the new
/// process lists each pod once (its last version) and every event again,
/// and sends nothing until both lists are in (run.rs: the judgements in
/// between lack the events, and writing them cost the load harness 590
/// rewrites of 1,000 reports); then every status is the stored one, so
/// nothing is written.
#[test]
fn a_restart_where_nothing_changed_rewrites_nothing() {
    restart_rewrites_nothing(false);
}

/// The same restart as the controller runs it: judgements held until both
/// lists are in (`Store::hold_judgements`), then each pod judged once.
#[test]
fn a_restart_holding_judgements_until_the_lists_are_in_rewrites_nothing() {
    restart_rewrites_nothing(true);
}

/// kwok, behind its stages, plays a container's start twice from a stale
/// copy of the pod: the running sidecar's `startedAt` moves one second
/// later, with the same `containerID` and no restart (load-012032 of the
/// 10,000-pod runs). The first process saw both start times, the restarted
/// one only the last: they must judge alike, and neither counts a restart.
#[test]
fn a_start_time_rewritten_without_a_restart_is_one_run() {
    let mut running_seen = 0;
    // Up to the pod's last version before its deletion, so that it is
    // listed again after the restart.
    let items = stream_edited(470, |v| {
        if v["object"]["metadata"]["name"] != "order-example" {
            return;
        }
        let Some(statuses) = v["object"]["status"]["initContainerStatuses"].as_array_mut() else {
            return;
        };
        for s in statuses
            .iter_mut()
            .filter(|s| s["name"] == "second-sidecar")
        {
            let at = &mut s["state"]["running"]["startedAt"];
            if at.is_string() {
                running_seen += 1;
                if running_seen > 1 {
                    assert_eq!(at, "2026-11-25T18:02:45Z");
                    *at = "2026-11-25T18:02:46Z".into();
                }
            }
        }
    });
    assert!(running_seen > 2, "the recording has the sidecar running");
    let updates = replay(&mut Store::new(Config::default()), &items);
    let last = last_for(&updates, "order-example");
    assert_eq!(last.status.sidecar_restarts, 0, "{:#?}", last.status);
    // One run: no check of the sidecar is set aside as a restart's.
    assert!(
        last.status.report.checks.iter().all(|c| {
            c.outcome != sidecar_order::report::Outcome::NotApplicable
                || !c.containers.iter().any(|n| n == "second-sidecar")
        }),
        "{:#?}",
        last.status.report.checks
    );
    restart_rewrites_nothing_of(&items, true);
}

fn restart_rewrites_nothing(hold: bool) {
    restart_rewrites_nothing_of(&stream(), hold);
}

fn restart_rewrites_nothing_of(items: &[(i64, Item)], hold: bool) {
    let updates = replay(&mut Store::new(Config::default()), items);
    // The new process loads the reports the first one wrote.
    let (written, mut second, ledger) = restarted(&updates);
    if hold {
        second.hold_judgements();
    }
    // The last version of every pod that still exists.
    let mut last: HashMap<String, &Pod> = HashMap::new();
    for (_, item) in items.iter() {
        if let Item::Pod(kind, p) = item {
            let name = p.metadata.name.clone().unwrap_or_default();
            if *kind == "DELETED" {
                last.remove(&name);
            } else {
                last.insert(name, p);
            }
        }
    }
    let now = items.last().unwrap().0;
    second.pods_resync_start(None);
    let mut while_listing = Vec::new();
    for p in last.values() {
        while_listing.extend(second.pod_applied(p, now));
    }
    while_listing.extend(second.pods_resync_done(None, now).updates);
    for (_, item) in items.iter() {
        if let Item::Event(e) = item {
            while_listing.extend(second.event_applied(e, now));
        }
    }
    let at_sync = second.watches_synced(now);
    let after = if hold {
        // Nothing judged while the lists came in; every pod once at the end.
        assert!(
            while_listing.is_empty(),
            "judged while holding: {while_listing:#?}"
        );
        assert_eq!(
            at_sync,
            second.current(now),
            "judged at sync as `current` judges"
        );
        at_sync
    } else {
        assert!(
            !while_listing.is_empty(),
            "a store not holding judges as it goes"
        );
        assert!(at_sync.is_empty());
        second.current(now)
    };
    assert!(!after.is_empty());
    let rewrites: Vec<(&str, String)> = after
        .iter()
        .filter(|u| {
            !ledger.holds(
                &(u.namespace.clone(), u.report_name.clone()),
                status_hash(&u.spec, &u.status),
            )
        })
        .map(|u| {
            let was = written[&u.report_name];
            (
                u.report_name.as_str(),
                json_diff(
                    &serde_json::to_value(&was.status).unwrap(),
                    &serde_json::to_value(&u.status).unwrap(),
                ),
            )
        })
        .collect();
    assert!(
        rewrites.is_empty(),
        "rewritten after a restart: {rewrites:#?}"
    );
}

#[test]
fn a_new_pod_with_the_same_name_keeps_the_old_report() {
    let items = stream();
    let mut store = Store::new(Config::default());
    replay(&mut store, &items);
    let (now, pod) = items
        .iter()
        .rev()
        .find_map(|(t, i)| match i {
            Item::Pod(k, p)
                if *k != "DELETED" && p.metadata.name.as_deref() == Some("liveness-fail") =>
            {
                Some((*t, p.clone()))
            }
            _ => None,
        })
        .unwrap();
    let mut reborn = pod.clone();
    reborn.metadata.uid = Some("00000000-1111-2222-3333-444444444444".into());
    let out = store.pod_applied(&reborn, now + 5);
    let names: Vec<&str> = out.iter().map(|u| u.report_name.as_str()).collect();
    assert_eq!(names.len(), 2, "{names:?}");
    assert_ne!(names[0], names[1]);
    // The old pod's report is closed (ended), the new one starts afresh.
    let old = out
        .iter()
        .find(|u| u.pod_uid == pod.metadata.uid.clone().unwrap())
        .unwrap();
    assert!(old.status.pod_ended_at.is_some());
    assert_ne!(old.status.report.shutdown, Verdict::Pending);
}

/// Where two JSON values differ: "path: before -> after", one per leaf.
fn json_diff(a: &Value, b: &Value) -> String {
    fn walk(a: &Value, b: &Value, path: String, out: &mut Vec<String>) {
        match (a, b) {
            (Value::Object(x), Value::Object(y)) => {
                for k in x.keys().chain(y.keys().filter(|k| !x.contains_key(*k))) {
                    walk(
                        x.get(k).unwrap_or(&Value::Null),
                        y.get(k).unwrap_or(&Value::Null),
                        format!("{path}.{k}"),
                        out,
                    );
                }
            }
            (Value::Array(x), Value::Array(y)) if x.len() == y.len() => {
                for (i, (p, q)) in x.iter().zip(y).enumerate() {
                    walk(p, q, format!("{path}[{i}]"), out);
                }
            }
            _ if a != b => out.push(format!("{path}: {a} -> {b}")),
            _ => {}
        }
    }
    let mut out = Vec::new();
    walk(a, b, String::new(), &mut out);
    out.join("\n")
}

/// A change of what a report concludes is written at once; the rest waits
/// for the next such change (`ledger::conclusion_hash`, `Outgoing::urgent`):
/// the recorded two-sidecar pod went through 11 versions (scheduled, each
/// container started, ready, each container stopped in reverse order,
/// gone) and its judgement changed 9 times, but its report concludes
/// something only when its startup is judged (the app started after both
/// sidecars) and when its shutdown is judged with the pod gone; seen before
/// that, it concluded nothing yet (`ledger::urgent`). The write that judges
/// the startup carries the containers as they are then: all three started.
#[test]
fn only_a_change_of_what_a_report_concludes_is_urgent() {
    use sidecar_order::controller::ledger::{concludes_nothing, conclusion_hash, urgent};
    let items = stream();
    let versions = items
        .iter()
        .filter(|(_, i)| matches!(i, Item::Pod(_, p) if p.metadata.name.as_deref() == Some("order-example")))
        .count();
    let mut store = Store::new(Config::default());
    let updates: Vec<Update> = replay(&mut store, &items)
        .into_iter()
        .filter(|u| u.pod_name == "order-example")
        .collect();
    // Each urgent update written at once, as the writer does.
    let mut ledger = Ledger::default();
    let mut at_once = Vec::new();
    for u in &updates {
        let key = (u.namespace.clone(), u.report_name.clone());
        let c = conclusion_hash(&u.status);
        if urgent(ledger.conclusion(&key), c, &u.status) {
            ledger.record(&key, status_hash(&u.spec, &u.status), &u.status, None);
            at_once.push(u);
        }
    }
    let said = |u: &Update| {
        (
            u.status.report.startup,
            u.status.report.shutdown,
            u.status.pod_ended_at.is_some(),
            u.status.report.violations.len(),
        )
    };
    assert_eq!(versions, 11);
    assert!(updates.len() >= 6, "{} judgements changed", updates.len());
    assert_eq!(
        at_once.iter().map(|u| said(u)).collect::<Vec<_>>(),
        [
            (Verdict::Verified, Verdict::Pending, false, 0),
            (Verdict::Verified, Verdict::Verified, true, 0),
        ]
    );
    // Before it, only statuses that conclude nothing yet: not urgent.
    let first = updates
        .iter()
        .position(|u| u.status == at_once[0].status)
        .expect("an update");
    assert!(first >= 2, "{first} judgements before the startup's");
    assert!(
        updates[..first]
            .iter()
            .all(|u| concludes_nothing(&u.status))
    );
    let started: Vec<&str> = at_once[0]
        .status
        .report
        .containers
        .iter()
        .filter(|c| c.first_started_at.is_some())
        .map(|c| c.name.as_str())
        .collect();
    assert_eq!(
        started.len(),
        3,
        "{:#?}",
        at_once[0].status.report.containers
    );
    // The last urgent write is the pod's last judgement: nothing left over.
    assert_eq!(
        conclusion_hash(&at_once[1].status),
        conclusion_hash(&updates[updates.len() - 1].status)
    );
    assert_eq!(at_once[1].status, updates[updates.len() - 1].status);
}
