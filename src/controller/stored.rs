//! What the stored reports hold, read a page at a time: once at start-up
//! and again at every takeover. The store keeps each one's decided checks,
//! so a verdict never goes back and no violation a report holds is dropped
//! (`Store::preload`, `Store::took_over`); the writer's ledger keeps what
//! each one counted, so nothing is counted or written twice.

use crate::controller::gc::ReportRef;
use crate::controller::ledger::Ledger;
use crate::controller::store::StoredReport;
use crate::controller::writer::list_report_pages;
use crate::crd::SidecarOrderReport;
use kube::Client;
use std::time::Duration;
use tokio::sync::mpsc;

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
    /// How far the list has come (a page of a takeover's pass).
    pub through: Option<Through>,
}

/// How far a paginated list of the stored reports has come. It goes in key
/// order, so a report whose key sorts before this and that it did not list
/// is not stored (was not, when the list began).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Through {
    /// The list of all namespaces, up to this key: `namespace/name`, the
    /// way the API server stores it (compared byte by byte).
    All(String),
    /// The list of one namespace (several are listed one after another),
    /// up to this name; None: all of it.
    Namespace(String, Option<String>),
}

impl Through {
    fn of_page(page: &[SidecarOrderReport], scope: Option<&str>, last: bool) -> Option<Through> {
        let name = |r: &SidecarOrderReport| r.metadata.name.clone().unwrap_or_default();
        match scope {
            Some(ns) if last => Some(Through::Namespace(ns.into(), None)),
            Some(ns) => page
                .last()
                .map(|r| Through::Namespace(ns.into(), Some(name(r)))),
            None => page.last().map(|r| {
                let ns = r.metadata.namespace.as_deref().unwrap_or_default();
                Through::All(format!("{ns}/{}", name(r)))
            }),
        }
    }
}

impl Stored {
    fn take(&mut self, r: SidecarOrderReport) {
        let (Some(ns), Some(name)) = (r.metadata.namespace.as_deref(), r.metadata.name.as_deref())
        else {
            return;
        };
        match &r.status {
            Some(status) => {
                let rv = r.metadata.resource_version.as_deref();
                self.ledger.seed(ns, name, &r.spec, status, rv);
                self.reports
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
                self.empty.push((report, created));
            }
        }
    }

    fn of_page(page: Vec<SidecarOrderReport>, scope: Option<&str>, last: bool) -> Stored {
        let mut out = Stored {
            through: Through::of_page(&page, scope, last),
            ..Stored::default()
        };
        page.into_iter().for_each(|r| out.take(r));
        out
    }
}

impl Stored {
    /// One report, read on its own.
    pub fn one(r: SidecarOrderReport) -> Stored {
        let mut out = Stored::default();
        out.take(r);
        out
    }
}

/// Reads every stored report of `namespaces` (empty: all namespaces).
pub async fn read(client: Client, namespaces: Vec<String>) -> Result<Stored, kube::Error> {
    let mut out = Stored::default();
    list_report_pages(&client, &namespaces, |page, _, _| {
        page.into_iter().for_each(|r| out.take(r))
    })
    .await?;
    Ok(out)
}

/// The stored reports a page at a time, each as it arrives (a takeover's
/// pass): the channel closes after the last page, or after an error (sent
/// last). Aborting the task stops the read.
pub fn pages(client: Client, namespaces: Vec<String>, delay: Duration) -> Pages {
    let (tx, rx) = mpsc::unbounded_channel();
    let task = tokio::spawn(async move {
        tokio::time::sleep(delay).await;
        let read = list_report_pages(&client, &namespaces, |page, scope, last| {
            let _ = tx.send(Ok(Stored::of_page(page, scope, last)));
        })
        .await;
        if let Err(e) = read {
            let _ = tx.send(Err(e));
        }
    });
    Pages { rx, task }
}

/// A read of the stored reports in progress, page by page.
pub struct Pages {
    pub rx: mpsc::UnboundedReceiver<Result<Stored, kube::Error>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Pages {
    fn drop(&mut self) {
        self.task.abort();
    }
}
