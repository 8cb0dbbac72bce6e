//! A takeover's reconcile pass. A replica that takes the lease over reads
//! the stored reports a page at a time (once it holds the lease, so the old
//! leader's last writes are in). Each page goes into the index (what its
//! reports decided, `Store::took_over`) and into the writer's ledger (what
//! they counted), and that page's reports are written at once where they
//! differ: writing resumes after the first page, not after the whole read
//! (5,000 stored reports took 4.5-8.6 s to read). Reports the index has and
//! no page held are written when the pass ends, and every stored report
//! still read as live whose pod the index does not know is closed.

use crate::controller::stored::{self, Pages, Stored};
use kube::Client;
use std::collections::HashSet;
use std::time::{Duration, Instant};

type Key = (String, String);

/// How long a failed read waits before it starts again.
const RETRY_AFTER: Duration = Duration::from_millis(500);

pub struct Pass {
    pages: Pages,
    client: Client,
    namespaces: Vec<String>,
    /// Reports whose stored version has been read: their updates may be written.
    read: HashSet<Key>,
    /// Stored reports that still read as live (no pod end).
    live: HashSet<Key>,
    pub started: Instant,
}

impl Pass {
    pub fn start(client: Client, namespaces: Vec<String>) -> Pass {
        Pass {
            pages: stored::pages(client.clone(), namespaces.clone(), Duration::ZERO),
            client,
            namespaces,
            read: HashSet::new(),
            live: HashSet::new(),
            started: Instant::now(),
        }
    }

    /// The next page; None once every page has been read.
    pub async fn next(&mut self) -> Option<Result<Stored, kube::Error>> {
        self.pages.rx.recv().await
    }

    /// A page arrived: the keys of its reports, now read.
    pub fn took(&mut self, page: &Stored) -> HashSet<Key> {
        let keys: HashSet<Key> = page
            .ledger
            .keys()
            .cloned()
            .chain(
                page.empty
                    .iter()
                    .map(|(r, _)| (r.namespace.clone(), r.name.clone())),
            )
            .collect();
        self.live.extend(page.ledger.live().cloned());
        self.read.extend(keys.iter().cloned());
        keys
    }

    /// The read failed: it starts again from the first page after a pause
    /// (what was read stays read; pages read again change nothing).
    pub fn retry(&mut self) {
        self.pages = stored::pages(self.client.clone(), self.namespaces.clone(), RETRY_AFTER);
    }

    /// Whether the stored version of report `name` in `namespace` has been read.
    pub fn is_read(&self, namespace: &str, name: &str) -> bool {
        self.read
            .contains(&(namespace.to_string(), name.to_string()))
    }

    pub fn reports_read(&self) -> usize {
        self.read.len()
    }

    /// The pass is over: the stored reports still read as live whose pod
    /// `known` (the index's reports) does not hold.
    pub fn orphans(&self, known: &HashSet<Key>) -> Vec<Key> {
        self.live.difference(known).cloned().collect()
    }
}
