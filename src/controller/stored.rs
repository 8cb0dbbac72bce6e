//! What the stored reports hold, read a page at a time: once at start-up
//! and again at every takeover. The store keeps each one's decided checks,
//! so a verdict never goes back and no violation a report holds is dropped
//! (`Store::preload`, `Store::took_over`); the writer's ledger keeps what
//! each one counted, so nothing is counted or written twice.

use crate::controller::gc::ReportRef;
use crate::controller::ledger::Ledger;
use crate::controller::store::StoredReport;
use crate::controller::writer::list_reports;
use kube::Client;

/// The stored reports of the watched namespaces.
#[derive(Default)]
pub struct Stored {
    /// What each report counted and announced.
    pub ledger: Ledger,
    /// What the index keeps of each report that has a status.
    pub reports: Vec<StoredReport>,
    /// Reports without a status (their first status write failed), with
    /// their creation time: nothing to count, GC's once past the TTL.
    pub empty: Vec<(ReportRef, i64)>,
}

/// Reads every stored report of `namespaces` (empty: all namespaces).
pub async fn read(client: Client, namespaces: Vec<String>) -> Result<Stored, kube::Error> {
    let mut out = Stored::default();
    list_reports(&client, &namespaces, |r| {
        let (Some(ns), Some(name)) = (r.metadata.namespace.as_deref(), r.metadata.name.as_deref())
        else {
            return;
        };
        match &r.status {
            Some(status) => {
                out.ledger.seed(ns, name, &r.spec, status);
                out.reports
                    .push(StoredReport::of(ns, name, &r.spec, status));
            }
            None => {
                let created = r
                    .metadata
                    .creation_timestamp
                    .as_ref()
                    .map_or(0, |t| t.0.as_second());
                let report = ReportRef {
                    namespace: ns.into(),
                    name: name.into(),
                };
                out.empty.push((report, created));
            }
        }
    })
    .await?;
    Ok(out)
}
