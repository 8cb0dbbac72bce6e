//! A takeover's reconcile pass. A replica that takes the lease over reads
//! the stored reports a page at a time (once it holds the lease, so the old
//! leader's last writes are in). Each page goes into the index (what its
//! reports decided, `Store::took_over`) and into the writer's ledger (what
//! they counted) before anything it covers is written. A paginated list
//! goes in key order, so a page also tells which reports are not stored:
//! those of the index whose key sorts before the page's last one and that
//! no page held. Writing resumes after the first page, not after the whole
//! read (11,000-17,000 stored reports took 10-22 s in a chaos run). When
//! the last page is in, the rest of the index is written, and every stored
//! report still read as live whose pod the index does not know is closed.
//!
//! The pages come in key order, and the reports of a churning workload are
//! rarely on the first ones (ended pods' reports sort before them): a
//! report an update waits for is read on its own, ahead of its page
//! (`want`), so the first writes of a new leader wait for one GET, not for
//! the pages before it (a long chaos run measured failovers growing from
//! 8-10 s to 21-26 s as 13,000-17,000 stored reports piled up).

use crate::controller::ledger::Ledger;
use crate::controller::stored::{self, Pages, Stored, Through};
use crate::controller::wire::WireReport;
use crate::crd::SidecarOrderReport;
use kube::{Api, Client};
use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};
use tokio::task::JoinSet;

type Key = (String, String);

/// How long a failed read waits before it starts again.
const RETRY_AFTER: Duration = Duration::from_millis(500);
/// Reports read on their own at once, ahead of their page.
const MAX_READS_AHEAD: usize = 32;

type ReadAhead = (Key, Result<Option<SidecarOrderReport>, kube::Error>);

/// What a pass read next.
pub enum Read {
    /// A page of the list.
    Page(Stored),
    /// One report read ahead of its page (empty: it is not stored).
    One(Key, Stored),
}

pub struct Pass {
    pages: Pages,
    client: Client,
    namespaces: Vec<String>,
    /// Stored reports read.
    read: Keys,
    /// Reports the pass has handed to the writer (their stored version,
    /// or the lack of one, known).
    sent: Keys,
    /// Stored reports that still read as live (no pod end).
    live: HashSet<Key>,
    /// How far the list of all namespaces has come: `namespace/name`.
    upto: Option<String>,
    /// How far the list of each namespace has come (None: all of it).
    upto_in: HashMap<String, Option<String>>,
    /// Reads ahead of the pages in flight, and every report asked for
    /// (each is read ahead once at most; a failed one waits for its page).
    ahead: JoinSet<ReadAhead>,
    asked: Keys,
    pub started: Instant,
}

/// A set of report keys asked about by namespace and name without building
/// a key: the pass is asked about every tracked pod on every page.
#[derive(Default)]
struct Keys(HashMap<String, HashSet<String>>);

impl Keys {
    fn contains(&self, namespace: &str, name: &str) -> bool {
        self.0.get(namespace).is_some_and(|n| n.contains(name))
    }

    /// Whether it was not there yet.
    fn insert(&mut self, namespace: &str, name: &str) -> bool {
        if let Some(n) = self.0.get_mut(namespace) {
            return !n.contains(name) && n.insert(name.to_string());
        }
        self.0
            .insert(namespace.to_string(), HashSet::from([name.to_string()]));
        true
    }

    fn len(&self) -> usize {
        self.0.values().map(HashSet::len).sum()
    }
}

/// Whether `namespace/name` sorts at or before `upto` (byte by byte, as the
/// API server orders its keys), without building it.
fn joined_at_or_before(namespace: &str, name: &str, upto: &str) -> bool {
    namespace
        .bytes()
        .chain(std::iter::once(b'/'))
        .chain(name.bytes())
        .le(upto.bytes())
}

impl Pass {
    pub fn start(client: Client, namespaces: Vec<String>) -> Pass {
        Pass {
            pages: stored::pages(client.clone(), namespaces.clone(), Duration::ZERO),
            client,
            namespaces,
            read: Keys::default(),
            sent: Keys::default(),
            live: HashSet::new(),
            upto: None,
            upto_in: HashMap::new(),
            ahead: JoinSet::new(),
            asked: Keys::default(),
            started: Instant::now(),
        }
    }

    /// The next page, or report read ahead; None once every page has been
    /// read. A read ahead that failed is left to its page.
    pub async fn next(&mut self) -> Option<Result<Read, kube::Error>> {
        loop {
            tokio::select! {
                page = self.pages.rx.recv() => return page.map(|p| p.map(Read::Page)),
                Some(done) = self.ahead.join_next(), if !self.ahead.is_empty() => {
                    let Ok((key, got)) = done else { continue };
                    match got {
                        Ok(Some(r)) => return Some(Ok(Read::One(key, Stored::one(r)))),
                        Ok(None) => {
                            // Not stored: known now.
                            self.read.insert(&key.0, &key.1);
                            return Some(Ok(Read::One(key, Stored::default())));
                        }
                        Err(e) => {
                            tracing::debug!(error = %e, report = %key.1, "reading a report ahead of its page failed; its page will tell");
                        }
                    }
                }
            }
        }
    }

    /// An update waits for report `name` in `namespace`, whose stored
    /// version is not known yet: it is read on its own, ahead of its page
    /// (unless it was asked for before, or `MAX_READS_AHEAD` are in flight).
    pub fn want(&mut self, namespace: &str, name: &str) {
        if self.ahead.len() >= MAX_READS_AHEAD {
            return;
        }
        if !self.asked.insert(namespace, name) {
            return;
        }
        let key = (namespace.to_string(), name.to_string());
        let api: Api<WireReport> = Api::namespaced(self.client.clone(), namespace);
        self.ahead.spawn(async move {
            let got = api.get_opt(&key.1).await.map(|r| r.map(Into::into));
            (key, got)
        });
    }

    /// A page (or a report read ahead) arrived: what it tells is taken in.
    /// Its ledger comes back, and its reports stay, without the reports
    /// already handed to the writer (a page read after a report was read
    /// ahead, or again after a failed read, may be older than what the
    /// writer wrote since).
    pub fn took(&mut self, page: &mut Stored) -> Ledger {
        let mut ledger = std::mem::take(&mut page.ledger);
        ledger.retain(|(ns, name)| !self.sent.contains(ns, name));
        page.reports
            .retain(|r| !self.sent.contains(r.namespace(), r.name()));
        for (ns, name) in ledger.keys() {
            self.read.insert(ns, name);
        }
        for (r, _) in &page.empty {
            self.read.insert(&r.namespace, &r.name);
        }
        self.live.extend(ledger.live().cloned());
        match page.through.take() {
            Some(Through::All(key)) if self.upto.as_ref().is_none_or(|u| key > *u) => {
                self.upto = Some(key);
            }
            Some(Through::Namespace(ns, name)) => {
                let at = self.upto_in.entry(ns).or_insert(Some(String::new()));
                match (&*at, name) {
                    (None, _) => {}
                    (_, None) => *at = None,
                    (Some(old), Some(new)) if new > *old => *at = Some(new),
                    _ => {}
                }
            }
            _ => {}
        }
        ledger
    }

    /// Whether the stored version of report `name` in `namespace` is known:
    /// read, or known not to exist (the list passed its key).
    pub fn is_read(&self, namespace: &str, name: &str) -> bool {
        let passed = match self.upto_in.get(namespace) {
            Some(None) => true,
            Some(Some(upto)) => name <= upto.as_str(),
            None => self
                .upto
                .as_ref()
                .is_some_and(|u| joined_at_or_before(namespace, name, u)),
        };
        passed || self.read.contains(namespace, name)
    }

    /// Whether the report is known (`is_read`) and not handed over yet.
    pub fn due(&self, namespace: &str, name: &str) -> bool {
        self.is_read(namespace, name) && !self.sent.contains(namespace, name)
    }

    /// These reports were handed to the writer.
    pub fn sent<'a>(&mut self, keys: impl IntoIterator<Item = (&'a str, &'a str)>) {
        for (ns, name) in keys {
            self.sent.insert(ns, name);
        }
    }

    /// Whether the report was handed to the writer.
    pub fn was_sent(&self, namespace: &str, name: &str) -> bool {
        self.sent.contains(namespace, name)
    }

    /// The read failed: it starts again from the first page after a pause
    /// (what was read stays read).
    pub fn retry(&mut self) {
        self.pages = stored::pages(self.client.clone(), self.namespaces.clone(), RETRY_AFTER);
    }

    pub fn reports_read(&self) -> usize {
        self.read.len()
    }

    /// How many reports were asked for ahead of their page.
    pub fn read_ahead(&self) -> usize {
        self.asked.len()
    }

    /// The pass is over: the stored reports still read as live whose pod
    /// `known` (the index's reports) does not hold.
    pub fn orphans(&self, known: &HashSet<Key>) -> Vec<Key> {
        self.live.difference(known).cloned().collect()
    }
}
