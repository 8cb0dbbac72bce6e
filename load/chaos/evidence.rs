//! What a person needs when the chaos run finds something: the replicas'
//! logs, the table, and for each pod named in a finding its report and
//! (if it still exists) the pod, as JSON, under one directory.

use crate::replicas;
use crate::table::Summary;
use kube::api::{ApiResource, DynamicObject};
use kube::{Api, Client};
use sidecar_order::crd::SidecarOrderReport;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

pub struct Evidence {
    pub dir: PathBuf,
}

impl Evidence {
    pub fn create(root: &Path) -> Result<Evidence, String> {
        let stamp = std::process::Command::new("date")
            .arg("-u")
            .arg("+%Y%m%dT%H%M%SZ")
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
            .unwrap_or_else(|_| "run".into());
        let dir = root.join(format!("chaos-{stamp}"));
        std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        Ok(Evidence { dir })
    }

    pub fn write(&self, name: &str, text: &str) {
        let p = self.dir.join(name);
        if let Err(e) = std::fs::write(&p, text) {
            eprintln!("chaos: writing {}: {e}", p.display());
        }
    }

    pub fn copy(&self, from: &Path) {
        if let Some(name) = from.file_name() {
            let _ = std::fs::copy(from, self.dir.join(name));
        }
    }

    /// The report, the events and (when it still exists) the pod, by name.
    pub async fn pod(&self, client: &Client, ns: &str, pod: &str, report: Option<&str>) {
        let pods: Api<DynamicObject> = Api::namespaced_with(
            client.clone(),
            ns,
            &ApiResource::erase::<k8s_openapi::api::core::v1::Pod>(&()),
        );
        if let Ok(Some(p)) = pods.get_opt(pod).await {
            self.write(
                &format!("pod-{pod}.json"),
                &serde_json::to_string_pretty(&p).unwrap_or_default(),
            );
        }
        // Every event of the pod: kwok's (Started, Killing) and the
        // controller's, with the replica that recorded each
        // (reportingInstance).
        let events: Api<k8s_openapi::api::core::v1::Event> = Api::namespaced(client.clone(), ns);
        let lp = kube::api::ListParams::default().fields(&format!("involvedObject.name={pod}"));
        if let Ok(list) = events.list(&lp).await {
            self.write(
                &format!("events-{pod}.json"),
                &serde_json::to_string_pretty(&list.items).unwrap_or_default(),
            );
        }
        if let Some(r) = report {
            let reports: Api<DynamicObject> = Api::namespaced_with(
                client.clone(),
                ns,
                &ApiResource::erase::<SidecarOrderReport>(&()),
            );
            if let Ok(Some(o)) = reports.get_opt(r).await {
                self.write(
                    &format!("report-{r}.json"),
                    &serde_json::to_string_pretty(&o).unwrap_or_default(),
                );
            }
        }
    }
}

/// Saves the table, the processes and faults, every replica's log, and the
/// report and pod of each pod a finding names.
pub async fn save(s: &Summary<'_>, table: &str, t0: Instant, logs: &[PathBuf], client: &Client) {
    let Summary {
        cfg,
        book: copy,
        outcome,
        stored,
        events,
        done,
        rec,
        ..
    } = s;
    let t_lead = t0;
    match Evidence::create(&cfg.findings) {
        Ok(ev) => {
            ev.write("table.txt", table);
            ev.write(
                "incarnations.txt",
                &rec.incarnations
                    .iter()
                    .enumerate()
                    .map(|(i, x)| {
                        format!(
                            "{i}: replica {} pid {} started +{:.1}s ended {:?} final_scrape {} crashed {} violations {}",
                            x.replica,
                            x.pid,
                            (x.started - t_lead).as_secs_f64(),
                            x.ended.map(|(e, how)| (format!("+{:.1}s", (e - t_lead).as_secs_f64()), how)),
                            x.final_scrape,
                            x.crashed,
                            x.last.as_ref().map_or(0.0, |m| m.sum(replicas::VIOLATIONS, |_| true))
                        )
                    })
                    .collect::<Vec<_>>()
                    .join("\n"),
            );
            ev.write(
                "faults.txt",
                &done
                    .iter()
                    .map(|d| {
                        format!(
                            "+{:.1}s {} ({}) leader incarnation {:?}",
                            (d.at - t_lead).as_secs_f64(),
                            d.fault.name(),
                            d.detail,
                            d.leader
                        )
                    })
                    .collect::<Vec<_>>()
                    .join("\n"),
            );
            for l in logs {
                ev.copy(l);
            }
            let miscounted = miscounted(stored, &cfg.ns, logs);
            if !miscounted.is_empty() {
                ev.write("miscounted.txt", &miscounted.join("\n"));
            }
            let by_name: HashMap<&str, &String> = copy
                .created
                .iter()
                .map(|(uid, (n, _))| (n.as_str(), uid))
                .collect();
            let mut named: Vec<String> = outcome
                .differ
                .iter()
                .chain(outcome.missing.iter())
                .filter_map(|l| l.split_whitespace().next().map(str::to_string))
                .take(20)
                .collect();
            for d in events.duplicates.iter().take(20) {
                if let Some(uid) = d
                    .strip_prefix("pod uid ")
                    .and_then(|r| r.split_whitespace().next())
                    && let Some((n, _)) = copy.created.get(uid)
                {
                    named.push(n.clone());
                }
            }
            // The pods of the reports counted other than stored.
            let pod_of: HashMap<&str, &str> = stored
                .report_of
                .iter()
                .filter_map(|(uid, r)| Some((r.as_str(), copy.created.get(uid)?.0.as_str())))
                .collect();
            named.extend(
                miscounted
                    .iter()
                    .filter_map(|l| l.split_whitespace().next())
                    .filter_map(|r| r.rsplit('/').next())
                    .filter_map(|r| pod_of.get(r).map(|p| p.to_string()))
                    .take(20),
            );
            for n in named {
                let report = by_name
                    .get(n.as_str())
                    .and_then(|uid| stored.report_of.get(*uid))
                    .map(String::as_str);
                ev.pod(client, &cfg.ns, &n, report).await;
            }
            eprintln!("chaos: evidence saved in {}", ev.dir.display());
        }
        Err(e) => eprintln!("chaos: cannot save evidence: {e}"),
    }
}

/// The reports whose violations of a rule were counted (the replicas'
/// `violation counted` log lines) other than they are stored: "ns/name
/// rule: stored N, counted M by [write ids]".
fn miscounted(stored: &crate::tally::Stored, ns: &str, logs: &[PathBuf]) -> Vec<String> {
    let mut by: std::collections::BTreeMap<(String, String), (usize, Vec<String>)> =
        Default::default();
    for (uid, rules) in &stored.rules {
        let Some(name) = stored.report_of.get(uid) else {
            continue;
        };
        for r in rules {
            by.entry((format!("{ns}/{name}"), r.clone())).or_default().0 += 1;
        }
    }
    for l in logs {
        let text = std::fs::read_to_string(l).unwrap_or_default();
        for line in text.lines().filter(|l| l.contains("violation counted")) {
            let field = |k: &str| {
                line.split_whitespace()
                    .find_map(|w| w.strip_prefix(k).map(|v| v.trim_matches('"').to_string()))
            };
            if let (Some(report), Some(rule)) = (field("report="), field("rule=")) {
                let id = field("write_id=").unwrap_or_default();
                by.entry((report, rule)).or_default().1.push(id);
            }
        }
    }
    by.into_iter()
        .filter(|(_, (n, ids))| *n != ids.len())
        .map(|((report, rule), (n, ids))| {
            format!(
                "{report} {rule}: stored {n}, counted {} by {ids:?}",
                ids.len()
            )
        })
        .collect()
}
