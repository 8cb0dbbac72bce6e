//! Writes reports (server-side apply, one field manager), records a Warning
//! Event on the pod for each new violation, and deletes the reports the
//! store lets go. Only the holder of the lease writes; the others keep the
//! newest work per report and write it if they become the leader.
//!
//! The task never makes its input wait: it always takes what arrives into
//! the `queue` (newest work per report), and writes from there, several
//! reports at once, each call under a timeout, each report retried on its
//! own backoff.

use crate::controller::metrics::Metrics;
use crate::controller::queue::{Key, Outcome, Queue};
use crate::controller::store::Update;
use crate::crd::{FIELD_MANAGER, SidecarOrderReport};
use futures::StreamExt;
use futures::stream::FuturesUnordered;
use k8s_openapi::api::core::v1::ObjectReference;
use kube::api::{Api, DeleteParams, Patch, PatchParams};
use kube::runtime::events::{Event as KEvent, EventType, Recorder, Reporter};
use kube::{Client, Resource};
use serde_json::json;
use std::collections::HashSet;
use std::fmt;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

pub use crate::controller::queue::{Outgoing, Work};
use crate::controller::store::close_unseen;

/// The reason of the Events recorded on pods.
pub const EVENT_REASON: &str = "SidecarOrderViolation";

/// The API calls the writer makes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Call {
    ApplySpec,
    ApplyStatus,
    Get,
    Delete,
    Event,
}

impl fmt::Display for Call {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Call::ApplySpec => "applying the spec of report",
            Call::ApplyStatus => "applying the status of report",
            Call::Get => "reading report",
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
}

impl Default for WriterConfig {
    fn default() -> Self {
        WriterConfig {
            concurrency: 8,
            call_timeout: Duration::from_secs(10),
            backoff_min: Duration::from_millis(200),
            backoff_max: Duration::from_secs(60),
            flush_timeout: Duration::from_secs(5),
        }
    }
}

pub struct ReportWriter {
    client: Client,
    recorder: Recorder,
    metrics: Metrics,
    call_timeout: Duration,
    /// Reports whose spec this process applied.
    spec_written: Mutex<HashSet<Key>>,
}

impl ReportWriter {
    pub fn new(client: Client, metrics: Metrics, instance: Option<String>) -> Self {
        let reporter = Reporter {
            controller: "sidecar-order".into(),
            instance,
        };
        ReportWriter {
            recorder: Recorder::new(client.clone(), reporter),
            client,
            metrics,
            call_timeout: WriterConfig::default().call_timeout,
            spec_written: Mutex::new(HashSet::new()),
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

    fn spec_written(&self) -> std::sync::MutexGuard<'_, HashSet<Key>> {
        self.spec_written.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Server-side applies the report's spec (once) and status.
    pub async fn apply_report(&self, u: &Update) -> Result<(), WriteError> {
        let (ns, name) = (u.namespace.as_str(), u.report_name.as_str());
        let api: Api<SidecarOrderReport> = Api::namespaced(self.client.clone(), ns);
        let pp = PatchParams::apply(FIELD_MANAGER).force();
        let key = (u.namespace.clone(), u.report_name.clone());
        let api_version = SidecarOrderReport::api_version(&());
        let kind = SidecarOrderReport::kind(&());
        if !self.spec_written().contains(&key) {
            let obj = json!({
                "apiVersion": api_version,
                "kind": kind,
                "metadata": {
                    "name": name,
                    "labels": {"app.kubernetes.io/managed-by": "sidecar-order"},
                },
                "spec": u.spec,
            });
            let patch = Patch::Apply(&obj);
            self.call(Call::ApplySpec, ns, name, api.patch(name, &pp, &patch))
                .await?;
            self.spec_written().insert(key);
        }
        let status = json!({"apiVersion": api_version, "kind": kind, "status": u.status});
        let patch = Patch::Apply(&status);
        self.call(
            Call::ApplyStatus,
            ns,
            name,
            api.patch_status(name, &pp, &patch),
        )
        .await?;
        Ok(())
    }

    /// Drops the violations the stored report already lists: whoever wrote
    /// it (the leader, while this replica was standby) announced them.
    pub async fn drop_announced(&self, u: &mut Update) -> Result<(), WriteError> {
        if u.increments.violations.is_empty() {
            return Ok(());
        }
        let (ns, name) = (u.namespace.as_str(), u.report_name.as_str());
        let api: Api<SidecarOrderReport> = Api::namespaced(self.client.clone(), ns);
        let stored = self.call(Call::Get, ns, name, api.get_opt(name)).await?;
        if let Some(status) = stored.and_then(|r| r.status) {
            let known = &status.report.violations;
            u.increments.violations.retain(|v| {
                !known
                    .iter()
                    .any(|k| k.rule == v.rule && k.containers == v.containers)
            });
        }
        Ok(())
    }

    /// A Warning Event on the pod for each violation found for the first time.
    pub async fn record_violations(&self, u: &Update) -> Result<(), WriteError> {
        if u.status.pod_ended_at.is_some() && u.increments.violations.is_empty() {
            return Ok(());
        }
        let pod = ObjectReference {
            api_version: Some("v1".into()),
            kind: Some("Pod".into()),
            name: Some(u.pod_name.clone()),
            namespace: Some(u.namespace.clone()),
            uid: Some(u.pod_uid.clone()),
            ..Default::default()
        };
        for v in &u.increments.violations {
            let ev = KEvent {
                type_: EventType::Warning,
                reason: EVENT_REASON.into(),
                note: Some(
                    format!("{}: {}", v.rule.id(), v.message)
                        .chars()
                        .take(1000)
                        .collect(),
                ),
                action: "JudgeOrdering".into(),
                secondary: None,
            };
            let publish = self.recorder.publish(&ev, &pod);
            self.call(Call::Event, &u.namespace, &u.pod_name, publish)
                .await?;
        }
        Ok(())
    }

    /// Closes a stored report whose pod is gone: read it, and unless it is
    /// gone or closed already, apply it closed.
    async fn close_report(&self, ns: &str, name: &str, at: i64) -> Result<bool, WriteError> {
        let api: Api<SidecarOrderReport> = Api::namespaced(self.client.clone(), ns);
        let stored = self.call(Call::Get, ns, name, api.get_opt(name)).await?;
        let Some(mut status) = stored.and_then(|r| r.status) else {
            return Ok(false);
        };
        if status.pod_ended_at.is_some() {
            return Ok(false);
        }
        close_unseen(&mut status, at);
        let pp = PatchParams::apply(FIELD_MANAGER).force();
        let body = json!({
            "apiVersion": SidecarOrderReport::api_version(&()),
            "kind": SidecarOrderReport::kind(&()),
            "status": status,
        });
        self.call(
            Call::ApplyStatus,
            ns,
            name,
            api.patch_status(name, &pp, &Patch::Apply(&body)),
        )
        .await?;
        Ok(true)
    }

    async fn delete_report(&self, ns: &str, name: &str) -> Result<(), WriteError> {
        let api: Api<SidecarOrderReport> = Api::namespaced(self.client.clone(), ns);
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
        let mut o = match work {
            Work::Delete { namespace, name } => {
                return match self.delete_report(&namespace, &name).await {
                    Ok(()) => {
                        self.spec_written().remove(&key);
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
                    Err(e) if e.not_found(Call::Get) || e.not_found(Call::ApplyStatus) => {
                        Outcome::Done
                    }
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
        if o.from_standby {
            if let Err(e) = self.drop_announced(&mut o.update).await {
                return self.failed(e, Work::Apply(o));
            }
            o.from_standby = false;
        }
        let ended = o.update.status.pod_ended_at.is_some();
        let result = match self.apply_report(&o.update).await {
            Ok(()) => "written",
            // Deleted behind our back: create it again, unless nothing
            // more will ever be written to it.
            Err(e) if e.not_found(Call::ApplyStatus) && !ended => {
                self.spec_written().remove(&key);
                if let Err(e) = self.apply_report(&o.update).await {
                    return self.failed(e, Work::Apply(o));
                }
                "recreated"
            }
            Err(e) => return self.failed(e, Work::Apply(o)),
        };
        self.count(result);
        self.metrics
            .report_latency
            .observe(o.seen_at.elapsed().as_secs_f64());
        if ended {
            self.spec_written().remove(&key);
        }
        // A failed pod Event is counted, not retried: the report lists it.
        if let Err(e) = self.record_violations(&o.update).await {
            self.count("event_error");
            tracing::warn!(error = %e, "recording a violation Event failed");
        }
        Outcome::Done
    }

    /// Counts a failure; retries what may succeed later.
    fn failed(&self, e: WriteError, work: Work) -> Outcome {
        let result = e.category();
        self.count(result);
        match result {
            "not_found_dropped" | "rejected" => {
                self.spec_written().remove(&work.key());
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

/// The writer task: takes work from `rx` at once, keeps the newest per
/// report, and writes it while `leader` is true. When `rx` closes, it
/// flushes what is pending for at most `cfg.flush_timeout`; when the
/// leader's sender is dropped, it stops at once.
pub async fn run(
    mut writer: ReportWriter,
    mut rx: mpsc::Receiver<Work>,
    mut leader: watch::Receiver<bool>,
    cfg: WriterConfig,
) {
    writer.call_timeout = cfg.call_timeout;
    let writer = Arc::new(writer);
    let mut queue = Queue::new(cfg.concurrency, cfg.backoff_min, cfg.backoff_max);
    let mut in_flight = FuturesUnordered::new();
    let mut flush_until: Option<Instant> = None;
    loop {
        let is_leader = *leader.borrow();
        if is_leader {
            while let Some(work) = queue.next_ready(Instant::now().into_std()) {
                let w = writer.clone();
                in_flight.push(async move {
                    let key = work.key();
                    (key, w.execute(work).await)
                });
            }
        }
        if let Some(until) = flush_until
            && (queue.is_empty() || !is_leader || Instant::now() >= until)
        {
            // A standby's pending work is the new leader's to write.
            if is_leader && !queue.is_empty() {
                tracing::warn!(
                    unwritten = queue.pending() + queue.in_flight(),
                    "shutting down with reports not written"
                );
            }
            return;
        }
        let wake = queue.next_wake().map(Instant::from_std);
        let far = Instant::now() + Duration::from_secs(3600);
        tokio::select! {
            work = rx.recv(), if flush_until.is_none() => match work {
                Some(work) => queue.push(work),
                None => flush_until = Some(Instant::now() + cfg.flush_timeout),
            },
            Some((key, outcome)) = in_flight.next(), if !in_flight.is_empty() => {
                queue.done(&key, outcome, Instant::now().into_std());
            }
            _ = tokio::time::sleep_until(wake.unwrap_or(far)), if is_leader && wake.is_some() => {}
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
                    return;
                }
            }
        }
    }
}
