//! What a controller restart rewrote: the stored reports' statuses just
//! before the restart against the same reports once the new process
//! settled, as the JSON paths that changed and how many reports each
//! changed in (a restart where nothing happened should rewrite nothing).

use kube::api::{ApiResource, DynamicObject, ListParams};
use kube::{Api, Client};
use serde_json::Value;
use sidecar_order::crd::SidecarOrderReport;
use std::collections::{BTreeMap, HashMap};

/// Each report's status, by name.
pub async fn statuses(client: &Client, ns: &str) -> Result<HashMap<String, Value>, kube::Error> {
    let ar = ApiResource::erase::<SidecarOrderReport>(&());
    let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), ns, &ar);
    Ok(crate::verify::list_all(&api, ListParams::default())
        .await?
        .into_iter()
        .filter_map(|r| Some((r.metadata.name?, r.data["status"].clone())))
        .collect())
}

/// The leaf paths where `a` and `b` differ (array indices as `[]`).
fn diff(a: &Value, b: &Value, path: &mut String, out: &mut Vec<String>) {
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => {
            let mut keys: Vec<&String> = x.keys().chain(y.keys()).collect();
            keys.sort();
            keys.dedup();
            for k in keys {
                let len = path.len();
                path.push('.');
                path.push_str(k);
                diff(
                    x.get(k).unwrap_or(&Value::Null),
                    y.get(k).unwrap_or(&Value::Null),
                    path,
                    out,
                );
                path.truncate(len);
            }
        }
        (Value::Array(x), Value::Array(y)) if x.len() == y.len() => {
            let len = path.len();
            path.push_str("[]");
            for (p, q) in x.iter().zip(y) {
                diff(p, q, path, out);
            }
            path.truncate(len);
        }
        _ if a != b => out.push(path.clone()),
        _ => {}
    }
}

/// How many reports changed, and per changed path how many reports, most
/// first, with one example (before -> after) each.
pub fn summary(before: &HashMap<String, Value>, after: &HashMap<String, Value>) -> String {
    let mut changed = 0;
    let mut by_path: BTreeMap<String, (usize, String)> = BTreeMap::new();
    for (name, b) in before {
        let Some(a) = after.get(name) else { continue };
        if a == b {
            continue;
        }
        let mut paths = Vec::new();
        diff(b, a, &mut String::from("status"), &mut paths);
        paths.dedup();
        // Every write names itself and the writes it replaced: a changed
        // `writeId` or `earlierWriteIds` says nothing more.
        paths.retain(|p| p != "status.writeId" && !p.starts_with("status.earlierWriteIds"));
        if paths.is_empty() {
            continue;
        }
        changed += 1;
        for p in paths {
            let e = by_path.entry(p).or_insert((0, String::new()));
            e.0 += 1;
            if e.1.is_empty() {
                e.1 = name.clone();
            }
        }
    }
    if changed == 0 {
        return "0 reports changed".into();
    }
    save_examples(before, after, by_path.values().map(|(_, ex)| ex));
    let mut v: Vec<_> = by_path.into_iter().collect();
    v.sort_by_key(|(_, (n, _))| std::cmp::Reverse(*n));
    let top: Vec<String> = v
        .iter()
        .take(6)
        .map(|(p, (n, ex))| format!("{p} in {n} (e.g. {ex})"))
        .collect();
    format!("{changed} reports changed: {}", top.join("; "))
}

/// Writes each example's status before and after the restart into
/// `$LOAD_DIR/restart-diff/` (NAME-before.json, NAME-after.json), for a
/// person to see what changed.
fn save_examples<'a>(
    before: &HashMap<String, Value>,
    after: &HashMap<String, Value>,
    names: impl Iterator<Item = &'a String>,
) {
    let Ok(dir) = std::env::var("LOAD_DIR") else {
        return;
    };
    let dir = std::path::Path::new(&dir).join("restart-diff");
    if std::fs::create_dir_all(&dir).is_err() {
        return;
    }
    for name in names {
        for (when, statuses) in [("before", before), ("after", after)] {
            if let Some(s) = statuses.get(name) {
                let _ = std::fs::write(
                    dir.join(format!("{name}-{when}.json")),
                    serde_json::to_string_pretty(s).unwrap_or_default(),
                );
            }
        }
    }
}
