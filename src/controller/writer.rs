//! Writes reports (a new one created with its status in one call, a stored
//! one JSON-patched over the version read; one field manager), records a
//! Warning Event on the pod for each new violation, and deletes the reports the
//! store lets go. Only the holder of the lease writes, and keeps work; a
//! standby keeps nothing. The stored reports are the ledger (`Ledger`): a
//! write counts what its status adds to the stored one, after it succeeded;
//! a replica that takes the lease over reads every stored report again
//! (`Msg::Takeover`) and writes only what differs from its own index.
//!
//! The task never makes its input wait: it always takes what arrives into
//! the `queue` (newest work per report), and writes from there, several
//! reports at once, each call under a timeout, each report retried on its
//! own backoff.

use crate::controller::events;
use crate::controller::ledger::{
    Digest, Increments, Ledger, hashes, increments_over, status_hash, urgent, written_by,
};
use crate::controller::memory;
use crate::controller::metrics::Metrics;
use crate::controller::queue::{Outcome, Queue};
use crate::controller::store::Update;
use crate::controller::wire::{WireReport, WrittenReport};
use crate::crd::{FIELD_MANAGER, ReportSpec, ReportStatus, SidecarOrderReport};
use futures::StreamExt;
use futures::stream::FuturesUnordered;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::api::events::v1::Event as K8sEvent;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, DeleteParams, ListParams, PostParams};
use kube::{Client, Resource};
use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

pub use crate::controller::queue::{Outgoing, Work};
use crate::controller::store::close_unseen;

pub use crate::controller::events::EVENT_REASON;

/// A new report, as created: typed, so the status goes into the request
/// in one pass, not through a `serde_json::Value` tree built and dropped
/// for each write (a few percent of the controller's CPU in a take-in
/// profile).
#[derive(Debug, serde::Serialize)]
#[serde(rename_all = "camelCase")]
struct NewReport<'a> {
    api_version: &'a str,
    kind: &'a str,
    metadata: NewMeta<'a>,
    spec: &'a ReportSpec,
    status: &'a ReportStatus,
}

#[derive(Debug, serde::Serialize)]
struct NewMeta<'a> {
    name: &'a str,
    labels: ManagedBy,
}

#[derive(Debug, serde::Serialize)]
struct ManagedBy {
    #[serde(rename = "app.kubernetes.io/managed-by")]
    managed_by: &'static str,
}

/// A write over a stored report, as a JSON patch: the spec and the status
/// replaced whole (so a field the new status lacks is gone, whoever set
/// it), only over `resource_version` when given (a report written since
/// answers 409), and nothing else of the report touched (its labels,
/// annotations, finalizers). A JSON patch never creates a report: one
/// deleted meanwhile answers 404.
struct WriteOps<'a> {
    resource_version: Option<&'a str>,
    spec: &'a ReportSpec,
    status: &'a ReportStatus,
}

#[derive(serde::Serialize)]
struct Op<'a, T: serde::Serialize + ?Sized> {
    op: &'static str,
    path: &'static str,
    value: &'a T,
}

impl serde::Serialize for WriteOps<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeSeq;
        let mut seq = s.serialize_seq(None)?;
        if let Some(rv) = self.resource_version {
            // Replaced by the version it must be: the API server answers
            // 409 unless the stored report is at that version.
            seq.serialize_element(&Op {
                op: "replace",
                path: "/metadata/resourceVersion",
                value: rv,
            })?;
        }
        // "add" replaces a member that exists, and adds one that does not.
        seq.serialize_element(&Op {
            op: "add",
            path: "/spec",
            value: self.spec,
        })?;
        seq.serialize_element(&Op {
            op: "add",
            path: "/status",
            value: self.status,
        })?;
        seq.end()
    }
}

/// The API calls the writer makes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Call {
    Create,
    Write,
    Get,
    GetPod,
    Delete,
    Event,
}

impl fmt::Display for Call {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Call::Create => "creating report",
            Call::Write => "writing report",
            Call::Get => "reading report",
            Call::GetPod => "reading the pod of report",
            Call::Delete => "deleting report",
            Call::Event => "recording an event on pod",
        })
    }
}

#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    #[error("{call} {namespace}/{name}: {source}")]
    Api {
        call: Call,
        namespace: String,
        name: String,
        #[source]
        source: kube::Error,
    },
    #[error("{call} {namespace}/{name}: no answer within {after:?}")]
    Timeout {
        call: Call,
        namespace: String,
        name: String,
        after: Duration,
    },
}

impl WriteError {
    /// The `sidecar_order_report_writes_total` result this error counts as
    /// (one of `metrics::WRITE_RESULTS`).
    pub fn category(&self) -> &'static str {
        let code = match self {
            WriteError::Timeout { .. } => return "timeout",
            WriteError::Api {
                source: kube::Error::Api(s),
                ..
            } => s.code,
            WriteError::Api { .. } => return "transport",
        };
        match code {
            404 => "not_found_dropped",
            400 | 403 | 422 => "rejected",
            409 => "conflict",
            429 => "throttled",
            500.. => "server_error",
            _ => "other_error",
        }
    }

    /// Whether the API server answered that it did not apply the call (a
    /// 4xx): no other error says whether a write landed.
    fn not_applied(&self) -> bool {
        matches!(self, WriteError::Api { source: kube::Error::Api(s), .. } if s.code < 500)
    }

    /// A 409: the report changed since the version the write applied over.
    fn conflict(&self) -> bool {
        matches!(self, WriteError::Api { source: kube::Error::Api(s), .. } if s.code == 409)
    }

    fn not_found(&self, call: Call) -> bool {
        matches!(self, WriteError::Api { call: c, source: kube::Error::Api(s), .. }
            if *c == call && s.code == 404)
    }
}

#[derive(Clone, Debug)]
pub struct WriterConfig {
    /// Writes in flight at once.
    pub concurrency: usize,
    /// The longest any API call may take.
    pub call_timeout: Duration,
    /// The first wait after a report failed to write; doubled per failure.
    pub backoff_min: Duration,
    pub backoff_max: Duration,
    /// How long the pending writes may take once the input closed.
    pub flush_timeout: Duration,
    /// How long new work for a report gathers more of the same change
    /// before it is written (`Queue::gathering`).
    pub gather: Duration,
    /// How long a change that is not urgent (the containers' states, a
    /// passed check: `ledger::conclusion_hash` unchanged) waits for an
    /// urgent one to carry it (`Queue::refreshing`).
    pub refresh: Duration,
    /// The ledger given at start is what the API server holds, and the
    /// writer may write while it leads without a takeover first: true
    /// without leader election. With it, every lease taken (the first one
    /// too) is a takeover (`Msg::Takeover`): the stored reports are read
    /// again, since another replica may have written since start-up.
    pub trust_initial_ledger: bool,
}

impl Default for WriterConfig {
    fn default() -> Self {
        WriterConfig {
            concurrency: 32,
            call_timeout: Duration::from_secs(10),
            gather: Duration::from_millis(250),
            refresh: REFRESH_WITHIN,
            backoff_min: Duration::from_millis(200),
            backoff_max: Duration::from_secs(60),
            flush_timeout: Duration::from_secs(5),
            trust_initial_ledger: true,
        }
    }
}

pub struct ReportWriter {
    client: Client,
    /// The `reportingInstance` of its Events.
    instance: String,
    metrics: Metrics,
    call_timeout: Duration,
    /// What the stored reports hold.
    ledger: Mutex<Ledger>,
    /// Status writes sent with no answer yet, or none that said whether
    /// they landed (a timeout, a broken connection, a 5xx, or cancelled with
    /// the lease): per report, the oldest first. A later write of the same
    /// report that succeeds counts what they added; one the lease or a
    /// shutdown leaves behind is read back (`settle_unanswered`).
    unanswered: Mutex<HashMap<(String, String), Vec<Unanswered>>>,
    /// This process's part of every `write_id`, and the writes it numbered.
    incarnation: u64,
    writes: AtomicU64,
}

/// A status write sent whose outcome is not known.
#[derive(Debug)]
pub struct Unanswered {
    write_id: String,
    update: Update,
    /// What the stored report had counted when the write was sent.
    before: Option<Digest>,
    /// A create: sent over no report at all.
    created: bool,
}

impl Unanswered {
    /// The `resourceVersion` the write applies over (None: any).
    fn sent_over(&self) -> Option<&str> {
        self.before.as_ref().and_then(|d| d.resource_version())
    }
}

/// A stored report's containers and passed checks are at most this much
/// older than the pod's (its verdicts, violations and counts are written
/// at once).
pub const REFRESH_WITHIN: Duration = Duration::from_secs(10);

/// How long a replica that lost the lease keeps reading back its
/// unanswered writes (the API server may be restarting).
pub const SETTLE_FOR: Duration = Duration::from_secs(60);

/// Reports read back at once when settling unanswered writes.
const SETTLE_READS: usize = 16;

/// Status writes of one report in one piece of work that may meet a 409
/// (written since it was read) before the work is retried later.
const CONFLICT_ATTEMPTS: u32 = 3;

impl ReportWriter {
    pub fn new(client: Client, metrics: Metrics, instance: Option<String>) -> Self {
        ReportWriter {
            instance: instance.unwrap_or_else(|| events::REPORTING_CONTROLLER.into()),
            client,
            metrics,
            call_timeout: WriterConfig::default().call_timeout,
            ledger: Mutex::new(Ledger::default()),
            unanswered: Mutex::new(HashMap::new()),
            // Random per process (a restarted container keeps its name).
            incarnation: std::hash::BuildHasher::hash_one(
                &std::collections::hash_map::RandomState::new(),
                std::process::id(),
            ),
            writes: AtomicU64::new(0),
        }
    }

    /// One API call under the call timeout.
    async fn call<T>(
        &self,
        call: Call,
        namespace: &str,
        name: &str,
        fut: impl Future<Output = Result<T, kube::Error>>,
    ) -> Result<T, WriteError> {
        match tokio::time::timeout(self.call_timeout, fut).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(source)) => Err(WriteError::Api {
                call,
                namespace: namespace.into(),
                name: name.into(),
                source,
            }),
            Err(_) => Err(WriteError::Timeout {
                call,
                namespace: namespace.into(),
                name: name.into(),
                after: self.call_timeout,
            }),
        }
    }

    fn ledger(&self) -> std::sync::MutexGuard<'_, Ledger> {
        self.ledger.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn unanswered(&self) -> std::sync::MutexGuard<'_, HashMap<(String, String), Vec<Unanswered>>> {
        self.unanswered.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A name no other write of any replica has.
    fn next_write_id(&self) -> String {
        let n = self.writes.fetch_add(1, Ordering::Relaxed);
        format!("{:016x}-{n}", self.incarnation)
    }

    /// The unanswered writes, to settle: nothing more will answer them.
    pub fn take_unanswered(&self) -> HashMap<(String, String), Vec<Unanswered>> {
        std::mem::take(&mut *self.unanswered())
    }

    /// Reads back each report an unanswered write went to, for at most
    /// `within`, several at once (`resolve` says what each one shows). Run
    /// after losing the lease, and at shutdown.
    pub async fn settle_unanswered(
        &self,
        writes: HashMap<(String, String), Vec<Unanswered>>,
        within: Duration,
    ) {
        let deadline = Instant::now() + within;
        let read_back = |((ns, name), sent): ((String, String), Vec<Unanswered>)| async move {
            let api: Api<WireReport> = Api::namespaced(self.client.clone(), &ns);
            let mut wait = Duration::from_millis(200);
            let mut sent = sent;
            loop {
                match self.call(Call::Get, &ns, &name, api.get_opt(&name)).await {
                    Ok(r) => {
                        let exists = r.is_some();
                        let rv = r.as_ref().and_then(|r| r.metadata.resource_version.clone());
                        let status = r.and_then(|r| r.status);
                        match self.resolve(sent, exists, status.as_ref(), rv.as_deref()) {
                            Ok(result) => break result,
                            Err(in_flight) if Instant::now() + wait < deadline => {
                                tracing::debug!(
                                    "an unanswered write may still land; reading it back again"
                                );
                                sent = in_flight;
                                tokio::time::sleep(wait).await;
                                wait = (wait * 2).min(Duration::from_secs(5));
                            }
                            Err(_) => {
                                tracing::warn!(
                                    "an unanswered write could still land when settling ended; it is not counted"
                                );
                                self.count("unanswered_unknown");
                                break "unanswered_unknown";
                            }
                        }
                    }
                    Err(e) if Instant::now() + wait < deadline => {
                        tracing::debug!(error = %e, "reading back an unanswered write; will retry");
                        tokio::time::sleep(wait).await;
                        wait = (wait * 2).min(Duration::from_secs(5));
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "could not learn whether an unanswered write landed; it is not counted");
                        self.count("unanswered_unknown");
                        break "unanswered_unknown";
                    }
                }
            }
        };
        let mut results: HashMap<&str, usize> = HashMap::new();
        let mut reads = futures::stream::iter(writes)
            .map(read_back)
            .buffer_unordered(SETTLE_READS);
        while let Some(result) = reads.next().await {
            *results.entry(result).or_default() += 1;
        }
        tracing::info!(?results, "unanswered status writes read back");
    }

    /// What a stored report (`exists`; its status, None: none; at
    /// `stored_rv`) shows of a report's unanswered writes: the one it is
    /// or names as written over (`earlierWriteIds`) landed, and counts now
    /// what it added to the report as it was when sent; the others never
    /// will, each applying only over the version it was sent over, once
    /// that version is gone. While the report is still at the version a
    /// write was sent over, that write may yet land (the API server has
    /// not answered it, and may still apply it): nothing is decided, and
    /// the writes come back as Err to be read back again. So too a create,
    /// while there is no report: it answers 409 once there is one.
    fn resolve(
        &self,
        sent: Vec<Unanswered>,
        exists: bool,
        stored: Option<&ReportStatus>,
        stored_rv: Option<&str>,
    ) -> Result<&'static str, Vec<Unanswered>> {
        let ids: Vec<&str> = stored.map(written_by).into_iter().flatten().collect();
        let (landed, not_seen): (Vec<Unanswered>, Vec<Unanswered>) = sent
            .into_iter()
            .partition(|w| ids.contains(&w.write_id.as_str()));
        let result = match landed.into_iter().next() {
            Some(w) => {
                let inc = increments_over(w.before, &w.update.status);
                log_counted(&w.update, &inc, &w.write_id, "read back");
                self.metrics.count(&w.update, &inc);
                "unanswered_landed"
            }
            None if stored_rv.is_some() && not_seen.iter().any(|w| w.sent_over() == stored_rv) => {
                return Err(not_seen);
            }
            // No report: a create sent may still make it.
            None if !exists && not_seen.iter().any(|w| w.created) => {
                return Err(not_seen);
            }
            None => {
                for w in &not_seen {
                    log_unanswered(w, "lost");
                }
                "unanswered_lost"
            }
        };
        self.count(result);
        Ok(result)
    }

    /// A stored version of a report, read or answered: the ledger holds it
    /// from now on, and the unanswered writes of the report are resolved
    /// by it.
    fn take_stored(&self, key: &(String, String), r: &SidecarOrderReport) {
        let rv = r.metadata.resource_version.as_deref();
        if let Some(sent) = self.unanswered().remove(key)
            && let Err(in_flight) = self.resolve(sent, true, r.status.as_ref(), rv)
        {
            // Still at the version they were sent over: the next write
            // over it, or the read its 409 brings, decides them.
            self.unanswered().insert(key.clone(), in_flight);
        }
        match &r.status {
            Some(status) => self.ledger().seed(&key.0, &key.1, &r.spec, status, rv),
            None => self.ledger().seed_empty(key, rv),
        }
    }

    /// Creates a report: POST, which answers 409 (AlreadyExists) when it
    /// exists, so a report stored by another replica, or by a write of
    /// ours that got no answer, is never written over unread.
    async fn create_report(
        &self,
        ns: &str,
        u: &Update,
        status: &ReportStatus,
    ) -> Result<WrittenReport, kube::Error> {
        let body = NewReport {
            api_version: &SidecarOrderReport::api_version(&()),
            kind: &SidecarOrderReport::kind(&()),
            metadata: NewMeta {
                name: &u.report_name,
                labels: ManagedBy {
                    managed_by: "sidecar-order",
                },
            },
            spec: &u.spec,
            status,
        };
        let pp = PostParams {
            field_manager: Some(FIELD_MANAGER.into()),
            ..PostParams::default()
        };
        let body = serde_json::to_vec(&body).map_err(kube::Error::SerdeError)?;
        let req = kube::core::Request::new(SidecarOrderReport::url_path(&(), Some(ns)))
            .create(&pp, body)
            .map_err(kube::Error::BuildRequest)?;
        self.client.request(req).await
    }

    /// Writes a stored report's spec and status (`WriteOps`), over
    /// `resource_version` when given.
    async fn write_report<T: serde::de::DeserializeOwned>(
        &self,
        ns: &str,
        name: &str,
        ops: &WriteOps<'_>,
    ) -> Result<T, kube::Error> {
        let uri = format!(
            "{}/{name}?fieldManager={FIELD_MANAGER}",
            SidecarOrderReport::url_path(&(), Some(ns))
        );
        let body = serde_json::to_vec(ops).map_err(kube::Error::SerdeError)?;
        let req = http::Request::patch(uri)
            .header(http::header::CONTENT_TYPE, "application/json-patch+json")
            .body(body)
            .map_err(|e| kube::Error::BuildRequest(kube::core::request::Error::BuildRequest(e)))?;
        self.client.request(req).await
    }

    /// Writes a report: created with its status when it is not known to
    /// be stored (or `recreate`), in one call; else written over the
    /// version of it the ledger holds (its `resourceVersion`). Once stored,
    /// what the status adds to the ledger (the increments to count and
    /// announce). None: the report, read again, holds that status already.
    ///
    /// A report created or written since (by another replica, or by a
    /// write of ours that got no answer) answers 409, is read again, and
    /// the write goes over what it holds.
    pub async fn apply_report(
        &self,
        u: &Update,
        hash: u64,
        recreate: bool,
    ) -> Result<Option<Increments>, WriteError> {
        let (ns, name) = (u.namespace.as_str(), u.report_name.as_str());
        let api: Api<WireReport> = Api::namespaced(self.client.clone(), ns);
        let key = (u.namespace.clone(), u.report_name.clone());
        let mut create = recreate || !self.ledger().contains(&key);
        let mut attempts = 0;
        loop {
            attempts += 1;
            // A report created is new: nothing stored before it counts.
            let before = if create {
                None
            } else {
                self.ledger().digest(&key)
            };
            if before.as_ref().is_some_and(|d| d.status_hash() == hash) {
                return Ok(None);
            }
            let write_id = self.next_write_id();
            let mut status = u.status.clone();
            status.write_id = Some(write_id.clone());
            status.earlier_write_ids = before
                .as_ref()
                .map(|d| d.earlier().map(str::to_string).collect())
                .unwrap_or_default();
            // Owned: `before` goes to the unanswered writes below.
            let rv = before
                .as_ref()
                .and_then(|d| d.resource_version().map(str::to_string));
            self.unanswered()
                .entry(key.clone())
                .or_default()
                .push(Unanswered {
                    write_id: write_id.clone(),
                    update: u.clone(),
                    before,
                    created: create,
                });
            let written = if create {
                self.call(Call::Create, ns, name, self.create_report(ns, u, &status))
                    .await
            } else {
                let ops = WriteOps {
                    resource_version: rv.as_deref(),
                    spec: &u.spec,
                    status: &status,
                };
                self.call(
                    Call::Write,
                    ns,
                    name,
                    self.write_report::<WrittenReport>(ns, name, &ops),
                )
                .await
            };
            match written {
                Ok(stored) => {
                    // Applied over the version read (or created): no
                    // earlier unanswered write of this report landed.
                    if let Some(sent) = self.unanswered().remove(&key) {
                        for w in sent.iter().filter(|w| w.write_id != write_id) {
                            // A later write applied over its version.
                            log_unanswered(w, "superseded");
                        }
                    }
                    let rv = stored.metadata.resource_version.as_deref();
                    let mut ledger = self.ledger();
                    if create {
                        // What it counts, it counts from nothing.
                        ledger.seed_empty(&key, rv);
                    }
                    let inc = ledger.record(&key, hash, &u.status, rv);
                    drop(ledger);
                    log_counted(u, &inc, &write_id, "answered");
                    return Ok(Some(inc));
                }
                Err(e) => {
                    if let Some(sent) = self.unanswered().get_mut(&key) {
                        if e.not_applied() {
                            sent.retain(|w| w.write_id != write_id);
                        } else if let Some(w) = sent.iter().find(|w| w.write_id == write_id) {
                            log_unanswered(w, "unanswered");
                        }
                    }
                    if !e.conflict() || attempts >= CONFLICT_ATTEMPTS {
                        return Err(e);
                    }
                    // Created or written since we read it: read it again.
                    self.count("conflict");
                    match self.call(Call::Get, ns, name, api.get(name)).await {
                        Ok(stored) => {
                            self.take_stored(&key, &stored.into());
                            create = false;
                        }
                        Err(g) => {
                            if g.not_found(Call::Get) {
                                if let Some(sent) = self.unanswered().remove(&key)
                                    && let Err(in_flight) = self.resolve(sent, false, None, None)
                                {
                                    // A create that may still land.
                                    self.unanswered().insert(key.clone(), in_flight);
                                }
                                self.ledger().forget(&key);
                            }
                            return Err(g);
                        }
                    }
                }
            }
        }
    }

    /// A Warning Event on the pod for each violation, named after it
    /// (`events::event_name`): one that exists already was announced by an
    /// earlier write, ours or another replica's, and is left as it is.
    pub async fn record_violations(
        &self,
        u: &Update,
        violations: &[crate::report::Violation],
    ) -> Result<(), WriteError> {
        let api: Api<K8sEvent> = Api::namespaced(self.client.clone(), &u.namespace);
        for v in violations {
            let ev = events::violation_event(u, v, &self.instance, Timestamp::now());
            match self
                .call(
                    Call::Event,
                    &u.namespace,
                    &u.pod_name,
                    api.create(&PostParams::default(), &ev),
                )
                .await
            {
                Ok(_) => {}
                Err(WriteError::Api {
                    source: kube::Error::Api(ref s),
                    ..
                }) if s.code == 409 => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Closes a stored report whose pod is gone: read it, and unless it is
    /// gone or closed already, apply it closed.
    async fn close_report(&self, ns: &str, name: &str, at: i64) -> Result<bool, WriteError> {
        let api: Api<WireReport> = Api::namespaced(self.client.clone(), ns);
        let stored = self.call(Call::Get, ns, name, api.get_opt(name)).await?;
        let Some((stored_spec, mut status, rv)) =
            stored.and_then(|r| Some((r.spec, r.status?, r.metadata.resource_version)))
        else {
            return Ok(false);
        };
        if status.pod_ended_at.is_some() {
            return Ok(false);
        }
        // A pod that still exists was not deleted: one outside the label
        // selector (not listed, its report left alone), or one whose list
        // raced with its creation.
        let pods: Api<Pod> = Api::namespaced(self.client.clone(), ns);
        let pod = &stored_spec.pod_name;
        if let Some(p) = self.call(Call::GetPod, ns, name, pods.get_opt(pod)).await?
            && p.metadata.uid.as_deref() == Some(stored_spec.pod_uid.as_str())
        {
            return Ok(false);
        }
        // Keeps the stored `writeId` and `earlierWriteIds`: closing counts
        // nothing, and a replica still reading back one of those writes
        // learns it landed. Applied only over the version read.
        close_unseen(&mut status, at);
        let ops = WriteOps {
            resource_version: rv.as_deref(),
            spec: &stored_spec,
            status: &status,
        };
        let closed: WireReport = self
            .call(Call::Write, ns, name, self.write_report(ns, name, &ops))
            .await?;
        self.take_stored(&(ns.into(), name.into()), &closed.into());
        Ok(true)
    }

    async fn delete_report(&self, ns: &str, name: &str) -> Result<(), WriteError> {
        let api: Api<WireReport> = Api::namespaced(self.client.clone(), ns);
        let dp = DeleteParams::default();
        match self
            .call(Call::Delete, ns, name, api.delete(name, &dp))
            .await
        {
            Err(e) if e.not_found(Call::Delete) => Ok(()),
            r => r.map(|_| ()),
        }
    }

    fn count(&self, result: &str) {
        self.metrics
            .report_writes
            .with_label_values(&[result])
            .inc();
    }

    /// Does one piece of work; says whether to try it again.
    async fn execute(&self, work: Work) -> Outcome {
        let key = work.key();
        let o = match work {
            Work::Delete { namespace, name } => {
                return match self.delete_report(&namespace, &name).await {
                    Ok(()) => {
                        self.ledger().forget(&key);
                        self.unanswered().remove(&key);
                        self.count("deleted");
                        Outcome::Done
                    }
                    Err(e) => self.failed(e, Work::Delete { namespace, name }),
                };
            }
            Work::Close {
                namespace,
                name,
                at,
            } => {
                return match self.close_report(&namespace, &name, at).await {
                    Ok(closed) => {
                        if closed {
                            self.count("closed");
                        }
                        Outcome::Done
                    }
                    Err(e) if e.not_found(Call::Get) || e.not_found(Call::Write) => Outcome::Done,
                    Err(e) => self.failed(
                        e,
                        Work::Close {
                            namespace,
                            name,
                            at,
                        },
                    ),
                };
            }
            Work::Apply(o) => o,
        };
        let u = &o.update;
        let hash = status_hash(&u.spec, &u.status);
        if self.ledger().holds(&key, hash) {
            // The API server holds this status already: nothing to write.
            return Outcome::Done;
        }
        let ended = u.status.pod_ended_at.is_some();
        // Announced before the write that stores them: a crash between the
        // two announces them again under the same names (nothing doubled),
        // where the other order would lose them. A failed Event is counted,
        // not retried: the report lists the violation.
        let new = self.ledger().new_violations(&key, &u.status);
        if let Err(e) = self.record_violations(u, &new).await {
            self.count("event_error");
            tracing::warn!(error = %e, "recording a violation Event failed");
        }
        let (result, inc) = match self.apply_report(u, hash, false).await {
            Ok(inc) => ("written", inc),
            // Deleted behind our back: create it again, unless nothing
            // more will ever be written to it.
            Err(e) if (e.not_found(Call::Write) || e.not_found(Call::Get)) && !ended => {
                match self.apply_report(u, hash, true).await {
                    Ok(inc) => ("recreated", inc),
                    Err(e) => return self.failed(e, Work::Apply(o)),
                }
            }
            Err(e) => return self.failed(e, Work::Apply(o)),
        };
        // Stored: now, and only now, it counts (None: found stored
        // already, by a write read back after a conflict).
        if let Some(inc) = inc {
            self.metrics.count(u, &inc);
            self.count(result);
        }
        // The latency of what the report concludes: a write that only
        // brings the containers up to date waited on purpose.
        if o.urgent {
            self.metrics
                .report_latency
                .observe(o.seen_at.elapsed().as_secs_f64());
        }
        Outcome::Done
    }

    /// Counts a failure; retries what may succeed later.
    fn failed(&self, e: WriteError, work: Work) -> Outcome {
        let result = e.category();
        self.count(result);
        match result {
            "not_found_dropped" | "rejected" => {
                if result == "not_found_dropped" {
                    // The report is gone: nothing of it left to count.
                    self.unanswered().remove(&work.key());
                }
                if result == "rejected" {
                    tracing::warn!(error = %e, "the API server rejected a report; giving up on it");
                } else {
                    tracing::info!(error = %e, "report gone; nothing left to write to it");
                }
                Outcome::Done
            }
            _ => {
                tracing::debug!(error = %e, result, "write failed; will retry");
                Outcome::Retry(work)
            }
        }
    }
}

/// One debug line per violation a write counts (target
/// `sidecar_order::counted`): which write stored it, and how its landing
/// was learnt. The chaos run turns it on, to name the report of a count
/// lost or doubled.
fn log_counted(u: &Update, inc: &Increments, write_id: &str, how: &str) {
    for v in &inc.violations {
        tracing::debug!(
            target: "sidecar_order::counted",
            report = %format_args!("{}/{}", u.namespace, u.report_name),
            rule = v.rule.id(),
            write_id,
            how,
            "violation counted"
        );
    }
}

/// One debug line (target `sidecar_order::counted`) when a status write is
/// left without an answer (`how` "unanswered"), naming the violations it
/// would add, and when it is found not to have landed ("superseded": a
/// later write applied over the version it was sent over; "lost": read
/// back). A process SIGKILLed with such a write
/// unanswered cannot count it if it landed: the chaos run names those.
fn log_unanswered(w: &Unanswered, how: &str) {
    if !tracing::enabled!(target: "sidecar_order::counted", tracing::Level::DEBUG) {
        return;
    }
    let inc = increments_over(w.before.clone(), &w.update.status);
    let rules: Vec<&str> = inc.violations.iter().map(|v| v.rule.id()).collect();
    tracing::debug!(
        target: "sidecar_order::counted",
        report = %format_args!("{}/{}", w.update.namespace, w.update.report_name),
        write_id = w.write_id,
        adds = rules.join(","),
        how,
        "status write unanswered"
    );
}

/// The writes a shutdown leaves unanswered, read back for at most `within`.
async fn settle_at_exit(writer: &ReportWriter, within: Duration) {
    let unanswered = writer.take_unanswered();
    if !unanswered.is_empty() {
        writer.settle_unanswered(unanswered, within).await;
    }
}

/// What the watch loop sends the writer.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
pub enum Msg {
    Work(Work),
    /// This replica took the lease over and starts reading the stored
    /// reports: nothing is pending, nothing is known stored; the watch
    /// loop sends only reports whose stored version came in (`Stored`).
    TakeoverStart,
    /// A page of the stored reports, read by a takeover's pass: what they
    /// counted and announced.
    Stored(Ledger),
}

/// Every stored report of `namespaces` (empty: all, in one list; else one
/// list per namespace, in that order), a page at a time: `each_page` is
/// given each page's reports as it arrives, with the namespace of its list
/// (None: all) and whether it is that list's last page.
pub async fn list_report_pages(
    client: &Client,
    namespaces: &[String],
    mut each_page: impl FnMut(Vec<SidecarOrderReport>, Option<&str>, bool),
) -> Result<usize, kube::Error> {
    if namespaces.is_empty() {
        let api: Api<WireReport> = Api::all(client.clone());
        return list_pages(&api, |page, last| each_page(reports(page), None, last)).await;
    }
    let mut n = 0;
    for ns in namespaces {
        let api: Api<WireReport> = Api::namespaced(client.clone(), ns);
        n += list_pages(&api, |page, last| {
            each_page(reports(page), Some(ns.as_str()), last)
        })
        .await?;
    }
    Ok(n)
}

fn reports(page: Vec<WireReport>) -> Vec<SidecarOrderReport> {
    page.into_iter().map(Into::into).collect()
}

/// Objects per page of a list.
pub const LIST_PAGE: u32 = 500;

/// Every object `api` lists, `LIST_PAGE` at a time; how many.
pub async fn list_paged<K>(api: &Api<K>, mut each: impl FnMut(K)) -> Result<usize, kube::Error>
where
    K: Clone + std::fmt::Debug + serde::de::DeserializeOwned,
{
    list_pages(api, |page, _| page.into_iter().for_each(&mut each)).await
}

/// Every object `api` lists, given to `each_page` a page (`LIST_PAGE`
/// objects) at a time, with whether it is the last page; how many. A
/// paginated list goes in key order (namespace, then name): each page
/// starts after the last key of the one before.
pub async fn list_pages<K>(
    api: &Api<K>,
    mut each_page: impl FnMut(Vec<K>, bool),
) -> Result<usize, kube::Error>
where
    K: Clone + std::fmt::Debug + serde::de::DeserializeOwned,
{
    let mut n = 0;
    let mut lp = ListParams::default().limit(LIST_PAGE);
    loop {
        let page = api.list(&lp).await?;
        n += page.items.len();
        let next = page.metadata.continue_.filter(|c| !c.is_empty());
        each_page(page.items, next.is_none());
        match next {
            Some(token) => lp = lp.continue_token(&token),
            None => return Ok(n),
        }
    }
}

/// The writer task: takes messages from `rx` at once, keeps the newest
/// work per report while it leads (a standby keeps none), and writes it.
/// With leader election it writes nothing until a takeover starts
/// (`Msg::TakeoverStart`), nor after losing the lease.
/// When `rx` closes, it flushes what is pending for at most
/// `cfg.flush_timeout`; when the leader's sender is dropped, it stops.
pub async fn run(
    mut writer: ReportWriter,
    mut rx: mpsc::Receiver<Msg>,
    mut leader: watch::Receiver<bool>,
    cfg: WriterConfig,
) {
    writer.call_timeout = cfg.call_timeout;
    let writer = Arc::new(writer);
    let mut queue = Queue::new(cfg.concurrency, cfg.backoff_min, cfg.backoff_max)
        .gathering(cfg.gather)
        .refreshing(cfg.refresh);
    let mut in_flight = FuturesUnordered::new();
    // What the newest work queued (pending or in flight) for a report
    // concludes (`conclusion_hash`), while some is.
    let mut concluding: HashMap<(String, String), u64> = HashMap::new();
    let mut flush_until: Option<Instant> = None;
    let mut seeded = cfg.trust_initial_ledger;
    let mut was_leader = *leader.borrow();
    loop {
        let is_leader = *leader.borrow();
        if was_leader && !is_leader {
            // Lost the lease: what is pending is the new leader's, and the
            // writes in flight are cancelled (a write landing after the new
            // leader read the stored reports would be counted twice).
            queue.clear();
            concluding.clear();
            in_flight = FuturesUnordered::new();
            seeded = false;
            tracing::info!("lease lost: pending writes dropped");
            let unanswered = writer.take_unanswered();
            if !unanswered.is_empty() {
                let w = writer.clone();
                tokio::spawn(async move { w.settle_unanswered(unanswered, SETTLE_FOR).await });
            }
        }
        was_leader = is_leader;
        if is_leader && seeded {
            while let Some(work) = queue.next_ready(Instant::now().into_std()) {
                let w = writer.clone();
                in_flight.push(async move {
                    let key = work.key();
                    (key, w.execute(work).await)
                });
            }
        }
        if let Some(until) = flush_until
            && (queue.is_empty() || !is_leader || !seeded || Instant::now() >= until)
        {
            if is_leader && !queue.is_empty() {
                tracing::warn!(
                    unwritten = queue.pending() + queue.in_flight(),
                    "shutting down with reports not written"
                );
            }
            drop(in_flight);
            return settle_at_exit(&writer, cfg.flush_timeout).await;
        }
        let wake = queue.next_wake().map(Instant::from_std);
        let far = Instant::now() + Duration::from_secs(3600);
        tokio::select! {
            msg = rx.recv(), if flush_until.is_none() => match msg {
                Some(Msg::Work(mut work)) => {
                    if *leader.borrow() {
                        if let Work::Apply(o) = &mut work {
                            let key = (o.update.namespace.clone(), o.update.report_name.clone());
                            let (hash, c) = hashes(&o.update.spec, &o.update.status);
                            // Stored already, nothing queued over it: nothing
                            // to write (a restart judges every pod again), and
                            // nothing to hold until its refresh.
                            if !queue.holds(&key) && writer.ledger().holds(&key, hash) {
                                continue;
                            }
                            // Urgent if it concludes other than what is
                            // queued for the report, else than what is
                            // stored; a new report once it concludes anything.
                            let before = match concluding.get(&key) {
                                Some(&q) => Some(q),
                                None => writer.ledger().conclusion(&key),
                            };
                            o.urgent = urgent(before, c, &o.update.status);
                            concluding.insert(key, c);
                        }
                        queue.push(work);
                    }
                }
                Some(Msg::TakeoverStart) => {
                    queue.clear_pending();
                    concluding.retain(|k, _| queue.holds(k));
                    *writer.ledger() = Ledger::default();
                    seeded = true;
                }
                Some(Msg::Stored(ledger)) => writer.ledger().extend(ledger),
                None => {
                    flush_until = Some(Instant::now() + cfg.flush_timeout);
                    queue.hurry();
                }
            },
            Some((key, outcome)) = in_flight.next(), if !in_flight.is_empty() => {
                queue.done(&key, outcome, Instant::now().into_std());
                if !queue.holds(&key) {
                    concluding.remove(&key);
                    memory::trim_map(&mut concluding);
                }
            }
            _ = tokio::time::sleep_until(wake.unwrap_or(far)), if is_leader && seeded && wake.is_some() => {}
            _ = tokio::time::sleep_until(flush_until.unwrap_or(far)), if flush_until.is_some() => {}
            changed = leader.changed() => {
                if changed.is_err() {
                    // The lease task ended: nobody may write any more.
                    if !queue.is_empty() {
                        tracing::warn!(
                            unwritten = queue.pending() + queue.in_flight(),
                            "leadership ended with reports not written"
                        );
                    }
                    drop(in_flight);
                    return settle_at_exit(&writer, cfg.flush_timeout).await;
                }
            }
        }
    }
}
