//! Writes reports (server-side apply, one field manager), records a Warning
//! Event on the pod for each new violation, and deletes expired reports.
//! Only the holder of the lease writes; the others keep the latest wanted
//! state per report and write it if they become the leader.

use crate::controller::gc;
use crate::controller::metrics::Metrics;
use crate::controller::store::Update;
use crate::crd::{FIELD_MANAGER, SidecarOrderReport};
use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams};
use kube::runtime::events::{Event as KEvent, EventType, Recorder, Reporter};
use kube::{Client, Resource};
use serde_json::json;
use std::collections::{BTreeMap, HashSet};
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, watch};

/// The reason of the Events recorded on pods.
pub const EVENT_REASON: &str = "SidecarOrderViolation";

#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    #[error("applying report {namespace}/{name}: {source}")]
    Apply {
        namespace: String,
        name: String,
        #[source]
        source: kube::Error,
    },
    #[error("recording an event on pod {namespace}/{pod}: {source}")]
    Event {
        namespace: String,
        pod: String,
        #[source]
        source: kube::Error,
    },
    #[error("collecting expired reports: {0}")]
    Gc(#[source] kube::Error),
}

impl WriteError {
    /// A short, bounded label for metrics and logs.
    pub fn category(&self) -> &'static str {
        match self {
            WriteError::Apply { .. } => "apply",
            WriteError::Event { .. } => "event",
            WriteError::Gc(_) => "gc",
        }
    }
}

/// An update on its way to the API, with when its watch event arrived.
pub struct Outgoing {
    pub update: Update,
    pub seen_at: Instant,
    /// Made while another replica held the lease: that one may have
    /// announced its violations already.
    pub from_standby: bool,
}

pub struct ReportWriter {
    client: Client,
    recorder: Recorder,
    metrics: Metrics,
    spec_written: HashSet<(String, String)>,
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
            spec_written: HashSet::new(),
        }
    }

    /// Server-side applies the report's spec (once) and status.
    pub async fn apply_report(&mut self, u: &Update) -> Result<(), WriteError> {
        let api: Api<SidecarOrderReport> = Api::namespaced(self.client.clone(), &u.namespace);
        let pp = PatchParams::apply(FIELD_MANAGER).force();
        let err = |source| WriteError::Apply {
            namespace: u.namespace.clone(),
            name: u.report_name.clone(),
            source,
        };
        let key = (u.namespace.clone(), u.report_name.clone());
        let api_version = SidecarOrderReport::api_version(&());
        let kind = SidecarOrderReport::kind(&());
        if !self.spec_written.contains(&key) {
            let obj = json!({
                "apiVersion": api_version,
                "kind": kind,
                "metadata": {
                    "name": u.report_name,
                    "labels": {"app.kubernetes.io/managed-by": "sidecar-order"},
                },
                "spec": u.spec,
            });
            api.patch(&u.report_name, &pp, &Patch::Apply(&obj))
                .await
                .map_err(err)?;
            self.spec_written.insert(key);
        }
        let status = json!({"apiVersion": api_version, "kind": kind, "status": u.status});
        api.patch_status(&u.report_name, &pp, &Patch::Apply(&status))
            .await
            .map_err(err)?;
        Ok(())
    }

    /// Drops the violations the stored report already lists: whoever wrote
    /// it (the leader, while this replica was standby) announced them.
    pub async fn drop_announced(&self, u: &mut Update) -> Result<(), WriteError> {
        if u.increments.violations.is_empty() {
            return Ok(());
        }
        let api: Api<SidecarOrderReport> = Api::namespaced(self.client.clone(), &u.namespace);
        let stored = api
            .get_opt(&u.report_name)
            .await
            .map_err(|source| WriteError::Apply {
                namespace: u.namespace.clone(),
                name: u.report_name.clone(),
                source,
            })?;
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
            self.recorder
                .publish(&ev, &pod)
                .await
                .map_err(|source| WriteError::Event {
                    namespace: u.namespace.clone(),
                    pod: u.pod_name.clone(),
                    source,
                })?;
        }
        Ok(())
    }

    /// Deletes reports past their TTL, and the oldest over the cap.
    pub async fn collect(&self, ttl: Duration, max_reports: usize) -> Result<usize, WriteError> {
        let api: Api<SidecarOrderReport> = Api::all(self.client.clone());
        let list = api
            .list(&ListParams::default())
            .await
            .map_err(WriteError::Gc)?;
        let secs = |s: Option<&str>| {
            s.and_then(|s| s.parse::<Timestamp>().ok())
                .map(|t| t.as_second())
        };
        let entries: Vec<gc::Entry> = list
            .items
            .iter()
            .map(|r| gc::Entry {
                namespace: r.metadata.namespace.clone().unwrap_or_default(),
                name: r.metadata.name.clone().unwrap_or_default(),
                created: r
                    .metadata
                    .creation_timestamp
                    .as_ref()
                    .map_or(0, |t| t.0.as_second()),
                ended: secs(r.status.as_ref().and_then(|s| s.pod_ended_at.as_deref())),
            })
            .collect();
        let now = Timestamp::now().as_second();
        let doomed = gc::select(&entries, now, ttl.as_secs() as i64, max_reports);
        for &i in &doomed {
            let e = &entries[i];
            let api: Api<SidecarOrderReport> = Api::namespaced(self.client.clone(), &e.namespace);
            match api.delete(&e.name, &DeleteParams::default()).await {
                Ok(_) => self
                    .metrics
                    .report_writes
                    .with_label_values(&["deleted"])
                    .inc(),
                Err(kube::Error::Api(s)) if s.code == 404 => {}
                Err(err) => return Err(WriteError::Gc(err)),
            }
        }
        Ok(doomed.len())
    }

    /// Writes one update: report, then the pod Events.
    async fn write(&mut self, o: &Outgoing) -> Result<(), WriteError> {
        self.apply_report(&o.update).await?;
        self.metrics
            .report_writes
            .with_label_values(&["written"])
            .inc();
        self.metrics
            .report_latency
            .observe(o.seen_at.elapsed().as_secs_f64());
        self.record_violations(&o.update).await
    }
}

/// Write rounds (a second apart) for what is pending once the channel closed.
const FLUSH_ROUNDS: u32 = 3;

/// The writer task: coalesces updates per report (the newest status wins,
/// new violations accumulate), writes them while `leader` is true, and
/// flushes what is pending when the channel closes.
pub async fn run(
    mut writer: ReportWriter,
    mut rx: mpsc::Receiver<Outgoing>,
    mut leader: watch::Receiver<bool>,
    gc_every: Duration,
    ttl: Duration,
    max_reports: usize,
) {
    let mut pending: BTreeMap<(String, String), Outgoing> = BTreeMap::new();
    let mut gc_tick = tokio::time::interval_at(tokio::time::Instant::now() + gc_every, gc_every);
    let mut open = true;
    let mut flush_rounds = 0;
    loop {
        let is_leader = *leader.borrow();
        if is_leader && !pending.is_empty() {
            let keys: Vec<_> = pending.keys().cloned().collect();
            for k in keys {
                let mut o = pending.remove(&k).expect("present");
                let mut result = Ok(());
                if o.from_standby {
                    result = writer.drop_announced(&mut o.update).await;
                    o.from_standby = result.is_err();
                }
                if result.is_ok() {
                    result = writer.write(&o).await;
                }
                if let Err(e) = result {
                    writer
                        .metrics
                        .report_writes
                        .with_label_values(&["error"])
                        .inc();
                    tracing::warn!(error = %e, category = e.category(), "write failed; will retry");
                    // A failed apply is retried; a failed pod Event is not.
                    if matches!(e, WriteError::Apply { .. }) {
                        pending.entry(k).or_insert(o);
                    }
                }
            }
            if !pending.is_empty() {
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
        if !open {
            if pending.is_empty() || !is_leader {
                return;
            }
            // Shutting down: a few more tries, then give up, so the lease is
            // released well within the pod's grace period.
            flush_rounds += 1;
            if flush_rounds >= FLUSH_ROUNDS {
                tracing::error!(
                    unwritten = pending.len(),
                    "shutting down with reports the API server would not take"
                );
                return;
            }
            continue;
        }
        tokio::select! {
            msg = rx.recv() => match msg {
                Some(o) => enqueue(&mut pending, o),
                None => open = false,
            },
            changed = leader.changed() => {
                if changed.is_err() {
                    // The lease task ended: nobody may write any more.
                    open = false;
                    pending.clear();
                }
            }
            _ = gc_tick.tick(), if is_leader => {
                match writer.collect(ttl, max_reports).await {
                    Ok(n) if n > 0 => tracing::info!(deleted = n, "expired reports deleted"),
                    Ok(_) => {}
                    Err(e) => tracing::warn!(error = %e, "report collection failed"),
                }
            }
        }
        while let Ok(o) = rx.try_recv() {
            enqueue(&mut pending, o);
        }
    }
}

fn enqueue(pending: &mut BTreeMap<(String, String), Outgoing>, mut o: Outgoing) {
    let key = (o.update.namespace.clone(), o.update.report_name.clone());
    if let Some(old) = pending.remove(&key) {
        let mut v = old.update.increments.violations;
        v.extend(o.update.increments.violations);
        o.update.increments.violations = v;
        // Violations queued as standby keep needing the check.
        o.from_standby |= old.from_standby;
    }
    pending.insert(key, o);
}
