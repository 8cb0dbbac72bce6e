//! The end of the churn: waits until every replica runs, one leads, kwok
//! has finished every pod being deleted, and nothing moves any more.

use crate::Config;
use crate::replicas::{self, Record, Shared};
use crate::timeline::leader_now;
use k8s_openapi::api::core::v1::Pod;
use kube::Api;
use kube::api::ListParams;
use std::time::{Duration, Instant};

/// Pods being deleted (kwok still playing their stop).
async fn deleting(api: &Api<Pod>) -> Result<usize, kube::Error> {
    let mut n = 0;
    let mut lp = ListParams::default().limit(500);
    loop {
        let page = api.list_metadata(&lp).await?;
        n += page
            .items
            .iter()
            .filter(|p| p.metadata.deletion_timestamp.is_some())
            .count();
        match page.metadata.continue_ {
            Some(c) if !c.is_empty() => lp = lp.continue_token(&c),
            _ => return Ok(n),
        }
    }
}

/// Movement of every current incarnation: stored writes and watch events.
fn movement(rec: &Record) -> (f64, bool) {
    let mut total = 0.0;
    let mut pending = false;
    for i in rec.current.iter().flatten() {
        if let Some(m) = &rec.incarnations[*i].last {
            total += replicas::stored(m)
                + m.sum("sidecar_order_watch_events_total", |l| {
                    // Nodes' heartbeats never stop.
                    l.get("kind").is_none_or(|k| k != "node")
                });
            if m.sum(replicas::LEADER, |_| true) >= 1.0 {
                pending |= m.sum("sidecar_order_reports", |l| {
                    l.get("startup").is_some_and(|s| s == "Pending")
                }) > 0.0;
            }
        }
    }
    (total, pending)
}

/// Waits until every replica runs, one leads, no pod is being deleted,
/// and nothing moved for `quiet`; false after the settle timeout.
pub async fn settle(cfg: &Config, api: &Api<Pod>, rec: &Shared) -> bool {
    let t0 = Instant::now();
    let mut last = -1.0;
    let mut still = Instant::now();
    loop {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let (moved, pending, all, leader) = {
            let r = rec.lock().expect("record");
            let (m, p) = movement(&r);
            (
                m,
                p,
                r.current.iter().all(Option::is_some),
                leader_now(&r).is_some(),
            )
        };
        if moved != last {
            last = moved;
            still = Instant::now();
        }
        let gone = matches!(deleting(api).await, Ok(0));
        if all && leader && gone && !pending && still.elapsed() >= cfg.quiet {
            return true;
        }
        if t0.elapsed() > cfg.settle_timeout {
            eprintln!(
                "chaos: did not settle within {}s (replicas all running {all}, a leader {leader}, no pod being deleted {gone}, startup verdicts Pending {pending})",
                cfg.settle_timeout.as_secs()
            );
            return false;
        }
    }
}
