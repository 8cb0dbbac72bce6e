//! `sidecar-order run`: wires the watches, the store, the metrics, the
//! writer, the lease and the HTTP endpoints together.

use crate::controller::event_watch;
use crate::controller::hold;
use crate::controller::lease::{Leadership, LeaseSettings, lease};
use crate::controller::ledger::Ledger;
use crate::controller::memory;
use crate::controller::metrics::Metrics;
use crate::controller::selector::PodSelector;
use crate::controller::store::{Store, Update};
use crate::controller::stored::{self, Stored};
use crate::controller::takeover::{Pass, Read};
use crate::controller::wire::{self, WireNode, WirePod};
use crate::controller::writer::{self, Msg, Outgoing, ReportWriter, Work, WriterConfig};
use crate::crd::SidecarOrderReport;
use crate::judge::Config;
use crate::observe::RawEvent;
use futures::{Stream, StreamExt, future, stream};
use k8s_openapi::api::core::v1::{Node, Pod};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use k8s_openapi::jiff::Timestamp;
use kube::api::Api;
use kube::runtime::watcher::{self, Event as WEvent};
use kube::runtime::{WatchStreamExt, wait};
use kube::{Client, CustomResourceExt};
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("cannot build a Kubernetes client: {0}")]
    Client(#[source] kube::Error),
    #[error(
        "the SidecarOrderReport CRD ({0}) is not installed: run `sidecar-order crd | kubectl apply -f -` or `make deploy`"
    )]
    CrdMissing(String),
    #[error(
        "the installed SidecarOrderReport CRD ({0}) is an older sidecar-order's (it has a status subresource, which would drop every status written): apply this version's, `sidecar-order crd | kubectl apply -f -` (Helm does not upgrade CRDs)"
    )]
    CrdOutdated(String),
    #[error("the SidecarOrderReport CRD is not Established after {0:?}")]
    CrdNotEstablished(Duration),
    #[error("reading the CRD: {0}")]
    Crd(#[source] kube::Error),
    #[error("loading existing reports: {0}")]
    Preload(#[source] kube::Error),
    #[error("loading existing reports: the task reading them failed: {0}")]
    PreloadTask(#[source] tokio::task::JoinError),
    #[error("serving metrics on {addr}: {source}")]
    Listen {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("leader election: {0}")]
    Lease(String),
    #[error("cannot listen for signals: {0}")]
    Signal(#[source] std::io::Error),
}

/// Settings of `run`, already parsed from flags and environment.
#[derive(Clone, Debug)]
pub struct Settings {
    pub namespaces: Vec<String>,
    /// Only the pods it selects are watched; one that leaves it is no
    /// longer watched (its report is left alone), not deleted.
    pub label_selector: Option<PodSelector>,
    pub metrics_addr: SocketAddr,
    pub report_ttl: Duration,
    pub max_reports: usize,
    pub outlive_secs: i64,
    /// Report writes in flight at once.
    pub write_concurrency: usize,
    pub leader_elect: bool,
    pub lease_name: String,
    pub lease_namespace: String,
    pub identity: String,
}

fn now() -> i64 {
    Timestamp::now().as_second()
}

/// Waits for the CRD to exist and be Established; a clear error otherwise.
async fn ensure_crd(client: &Client) -> Result<(), RunError> {
    let name = SidecarOrderReport::crd_name();
    let api: Api<CustomResourceDefinition> = Api::all(client.clone());
    match api.get_opt(name).await.map_err(RunError::Crd)? {
        None => return Err(RunError::CrdMissing(name.into())),
        Some(crd) if crate::crd::has_status_subresource(&crd) => {
            return Err(RunError::CrdOutdated(name.into()));
        }
        Some(_) => {}
    }
    let limit = Duration::from_secs(30);
    let established = wait::await_condition(api, name, wait::conditions::is_crd_established());
    tokio::time::timeout(limit, established)
        .await
        .map_err(|_| RunError::CrdNotEstablished(limit))?
        .map_err(|e| RunError::Lease(e.to_string()))?;
    Ok(())
}

enum Input {
    /// A pod watch event and the namespace its watch covers (None: all).
    Pod(Option<String>, Box<WEvent<Pod>>),
    /// Every pod of a (re)list of that namespace is in (its `InitDone` may
    /// wait for the stored reports): the store is told, then the sender,
    /// which starts the Event watch of that namespace.
    PodsListed(Option<String>, Arc<tokio::sync::watch::Sender<bool>>),
    /// An Event about a pod, read (`RawEvent::read`) as it came in: only
    /// what the rules use is kept while it waits. None: one that names no
    /// pod.
    Event(Option<Box<((String, String), RawEvent)>>),
    /// The Event list of a scope is in.
    EventsListed,
    Node(Box<WEvent<Node>>),
}

type Inputs = Pin<Box<dyn Stream<Item = Result<Input, watcher::Error>> + Send>>;

/// `preloaded` turns true once the stored reports are in the store: a
/// pod list ends (its `InitDone` goes on) only then, since the end of a
/// list closes the stored reports of pods it did not hold.
fn watches(
    client: &Client,
    s: &Settings,
    nodes: bool,
    preloaded: &tokio::sync::watch::Receiver<bool>,
) -> Inputs {
    let mut cfg = watcher::Config::default();
    if let Some(sel) = &s.label_selector {
        cfg = cfg.labels(sel.as_str());
    }
    let scopes: Vec<Option<&String>> = if s.namespaces.is_empty() {
        vec![None]
    } else {
        s.namespaces.iter().map(Some).collect()
    };
    let mut all: Vec<Inputs> = Vec::new();
    for ns in scopes {
        let pods: Api<WirePod> = match ns {
            Some(ns) => Api::namespaced(client.clone(), ns),
            None => Api::all(client.clone()),
        };
        let events = event_watch::Settings {
            namespace: ns.cloned(),
            field_selector: EVENT_SELECTOR.to_string(),
            page: EVENT_PAGE,
        };
        let scope = ns.cloned();
        // The events of a scope are listed once its pods are: listed first,
        // the events of pods the list holds would all wait for their pod
        // (and past `pending::MAX_PENDING_EVENTS`, be lost).
        let (listed_tx, mut listed_rx) = tokio::sync::watch::channel(false);
        let listed_tx = Arc::new(listed_tx);
        let preloaded = preloaded.clone();
        let pod_scope = scope.clone();
        all.push(Box::pin(
            watcher::watcher(pods, cfg.clone())
                .default_backoff()
                .map(move |r| r.map(|e| Input::Pod(pod_scope.clone(), Box::new(wire::into_k8s(e)))))
                // Every pod of the list went to the store before its end came
                // out of the watcher: the events start then (`PodsListed`),
                // while the end itself waits for the stored reports (at
                // 10,000 pods they take longer than the pods).
                .flat_map(move |r| {
                    let listed =
                        matches!(&r, Ok(Input::Pod(_, e)) if matches!(**e, WEvent::InitDone));
                    let marker =
                        listed.then(|| Ok(Input::PodsListed(scope.clone(), listed_tx.clone())));
                    stream::iter(marker.into_iter().chain([r]))
                })
                .then(move |r| {
                    // Only a list's end waits; every other event goes on as it is.
                    if !matches!(&r, Ok(Input::Pod(_, e)) if matches!(**e, WEvent::InitDone)) {
                        return future::Either::Left(future::ready(r));
                    }
                    let mut preloaded = preloaded.clone();
                    future::Either::Right(async move {
                        // Err: the run loop ended.
                        let _ = preloaded.wait_for(|done| *done).await;
                        r
                    })
                }),
        ));
        // Listed at once, beside the pods, but taken in only once they are
        // (`hold`): at 10,000 pods the two lists one after the other took
        // 3.5 s of a restart.
        let gate = async move {
            // Err: the pod watch ended; the events go on regardless.
            let _ = listed_rx.wait_for(|listed| *listed).await;
        };
        let events = event_watch::watch(client.clone(), events)
            .default_backoff()
            .filter_map(|r| {
                future::ready(match r {
                    Ok(WEvent::InitApply(e) | WEvent::Apply(e)) => {
                        Some(Ok(Input::Event(RawEvent::read(&e).map(Box::new))))
                    }
                    Ok(WEvent::InitDone) => Some(Ok(Input::EventsListed)),
                    Ok(WEvent::Init | WEvent::Delete(_)) => None,
                    Err(e) => Some(Err(e)),
                })
            });
        all.push(Box::pin(hold::until(
            Box::pin(events),
            Box::pin(gate),
            HELD_EVENTS,
        )));
    }
    if nodes {
        all.push(Box::pin(
            watcher::watcher(
                Api::<WireNode>::all(client.clone()),
                watcher::Config::default(),
            )
            .default_backoff()
            .map(|r| r.map(|e| Input::Node(Box::new(wire::into_k8s(e))))),
        ));
    }
    Box::pin(stream::select_all(all))
}

/// The kubelet versions of the nodes, read before any pod is judged, so
/// that a restart does not write every report once without the version.
/// Without permission to read nodes the controller judges by the latest
/// promises (one warning) and watches no nodes.
async fn preload_nodes(client: &Client, store: &mut Store) -> Result<bool, kube::Error> {
    let api: Api<WireNode> = Api::all(client.clone());
    match writer::list_paged(&api, |n| {
        store.node_applied(&n.into());
    })
    .await
    {
        Ok(_) => Ok(true),
        Err(e) if transient(&e) => Err(e),
        Err(e) => {
            tracing::warn!(error = %e, "cannot list nodes: reports carry no kubelet version and are judged by the latest kubelet's promises (grant get/list/watch on nodes)");
            Ok(false)
        }
    }
}

/// An API error worth retrying: the API server unreachable, overloaded or
/// restarting.
fn transient(e: &kube::Error) -> bool {
    match e {
        kube::Error::Api(s) => s.code == 429 || s.code >= 500,
        kube::Error::HyperError(_) | kube::Error::Service(_) => true,
        _ => false,
    }
}

impl RunError {
    fn transient(&self) -> bool {
        match self {
            RunError::Crd(e) | RunError::Preload(e) => transient(e),
            _ => false,
        }
    }
}

/// How long start-up retries while the API server is unavailable.
const STARTUP_PATIENCE: Duration = Duration::from_secs(120);

/// Start-up steps wait for an API server that is unavailable (restarting,
/// overloaded): each failure backs off (up to 5 s), for up to
/// `STARTUP_PATIENCE` in all, so a controller started during an API server
/// restart waits for it rather than exiting.
struct Patience {
    start: Instant,
    wait: Duration,
}

impl Patience {
    fn new() -> Patience {
        Patience {
            start: Instant::now(),
            wait: Duration::from_millis(250),
        }
    }

    /// Whether to try again after `e` (having waited).
    async fn again(
        &mut self,
        what: &str,
        transient: bool,
        e: &(dyn std::fmt::Display + Sync),
    ) -> bool {
        if !transient || self.start.elapsed() >= STARTUP_PATIENCE {
            return false;
        }
        tracing::warn!(error = %e, "{what}: the API server is unavailable; retrying in {:?}", self.wait);
        tokio::time::sleep(self.wait).await;
        self.wait = (self.wait * 2).min(Duration::from_secs(5));
        true
    }
}

async fn serve(addr: SocketAddr, metrics: Metrics, ready: Arc<AtomicBool>) -> Result<(), RunError> {
    use axum::{Router, http::StatusCode, routing::get};
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| RunError::Listen { addr, source })?;
    let app = Router::new()
        .route("/metrics", get(move || async move { metrics.render() }))
        .route("/healthz", get(|| async { "ok" }))
        .route(
            "/readyz",
            get(move || async move {
                if ready.load(Ordering::Relaxed) {
                    (StatusCode::OK, "ready")
                } else {
                    (StatusCode::SERVICE_UNAVAILABLE, "watches not synced yet")
                }
            }),
        );
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::error!(error = %e, "metrics server stopped");
        }
    });
    Ok(())
}

/// Reports stored in the watched namespaces: what earlier runs recorded,
/// read with the start-up patience. The store keeps each one's decided
/// checks and the writer's ledger what it counted (see `stored`).
async fn read_stored(client: Client, namespaces: Vec<String>) -> Result<Stored, RunError> {
    let mut patience = Patience::new();
    loop {
        match stored::read(client.clone(), namespaces.clone())
            .await
            .map_err(RunError::Preload)
        {
            Err(e)
                if patience
                    .again("loading the stored reports", e.transient(), &e)
                    .await =>
            {
                continue;
            }
            r => return r,
        }
    }
}

/// The stored reports into the store; their ledger, what they counted.
fn preload(store: &mut Store, stored: Stored) -> Ledger {
    tracing::info!(
        reports = stored.ledger.len() + stored.empty.len(),
        "loaded existing reports"
    );
    for r in stored.reports {
        store.preload(r);
    }
    store.preload_empty(stored.empty);
    stored.ledger
}

/// The Events watched: about pods, without the reasons no rule reads that
/// every container start brings (in the captured real-kubelet fixtures,
/// Scheduled, Pulled and Created are 46 of 107 pod events). Field selectors
/// cannot say "one of", so the unused ones are excluded, filtered by the API
/// server before they are sent.
pub const EVENT_SELECTOR: &str =
    "involvedObject.kind=Pod,reason!=Scheduled,reason!=Pulling,reason!=Pulled,reason!=Created";

/// Events per page of the Event list. Pages of the field-selected list
/// cost the API server about 30 ms each beyond their items: 48,973 Events
/// of the 10,000-pod load listed (as JSON) in 5.3 s in pages of 500, 2.3 s
/// in pages of 5,000 (the pods and the reports list fastest in pages of
/// 500). A page is about 3 MB of protobuf (67,108 Events: 41 MB).
const EVENT_PAGE: u32 = 5_000;

/// Events read ahead, at most, while the pods are listed (`hold`): the
/// 10,000-pod load's restart lists about 50,000. Each waits as a
/// `RawEvent` (a few hundred bytes); past this many the list waits for
/// the pods.
const HELD_EVENTS: usize = 65_536;

/// How often expired reports are deleted.
const GC_EVERY: Duration = Duration::from_secs(60);

pub async fn run(client_result: Result<Client, kube::Error>, s: Settings) -> Result<(), RunError> {
    let client = client_result.map_err(RunError::Client)?;
    tracing::info!(allocator = memory::allocator(), "starting");
    let mut patience = Patience::new();
    loop {
        match ensure_crd(&client).await {
            Err(e) if patience.again("reading the CRD", e.transient(), &e).await => continue,
            r => break r?,
        }
    }
    let metrics = Metrics::new();
    let ready = Arc::new(AtomicBool::new(false));
    serve(s.metrics_addr, metrics.clone(), ready.clone()).await?;

    let mut store = Store::new(Config {
        outlive_secs: s.outlive_secs,
    });
    // Each pod is judged once when the start-up lists are in (at 5,000
    // pods: 5,000 judgements instead of about 25,000, one per listed pod
    // and event).
    store.hold_judgements();
    // The stored reports are read while the pods are listed (at 10,000
    // pods each takes over a second, one after the other before): the
    // pods' list ends once they are in (`preloaded`).
    let mut stored_read = Some(tokio::spawn(read_stored(
        client.clone(),
        s.namespaces.clone(),
    )));
    let (preloaded_tx, preloaded_rx) = tokio::sync::watch::channel(false);

    // Turns true once the watches synced: the election is joined then.
    let (synced_tx, synced_rx) = tokio::sync::watch::channel(false);
    let Leadership {
        rx: mut leader,
        task: lease_task,
        _fixed,
    } = loop {
        // The lease manager's errors are strings: every one is retried
        // within the start-up patience.
        let ls = LeaseSettings {
            elect: s.leader_elect,
            name: &s.lease_name,
            namespace: &s.lease_namespace,
            identity: &s.identity,
        };
        match lease(&client, &ls, synced_rx.clone())
            .await
            .map_err(RunError::Lease)
        {
            Err(e)
                if patience
                    .again("taking part in the leader election", true, &e)
                    .await =>
            {
                continue;
            }
            r => break r?,
        }
    };
    let (tx, rx) = mpsc::channel::<Msg>(1024);
    // The ledger of the stored reports follows once they are read.
    let writer = ReportWriter::new(client.clone(), metrics.clone(), Some(s.identity.clone()));
    // One snapshot of the lease for the whole start: with leader election,
    // leading from the start is a takeover like any other (found by the
    // chaos run: a lease taken between two separate reads was never taken
    // over, and the leader wrote nothing).
    let was_leading = *leader.borrow_and_update();
    let writer_task = tokio::spawn(writer::run(
        writer,
        rx,
        leader.clone(),
        WriterConfig {
            concurrency: s.write_concurrency,
            trust_initial_ledger: !s.leader_elect,
            ..WriterConfig::default()
        },
    ));

    let node_watch = loop {
        match preload_nodes(&client, &mut store).await {
            Err(e) if patience.again("listing the nodes", true, &e).await => continue,
            Err(e) => {
                tracing::warn!(error = %e, "cannot list nodes: reports carry no kubelet version");
                break false;
            }
            Ok(watch) => break watch,
        }
    };
    let mut inputs = watches(&client, &s, node_watch, &preloaded_rx);
    let watches_total = if s.namespaces.is_empty() {
        2
    } else {
        2 * s.namespaces.len()
    };
    let mut synced = 0usize;
    // Registered once: `ctrl_c()` in the loop registered anew on every input.
    let signal = |kind| tokio::signal::unix::signal(kind).map_err(RunError::Signal);
    let mut term = signal(tokio::signal::unix::SignalKind::terminate())?;
    let mut interrupt = signal(tokio::signal::unix::SignalKind::interrupt())?;
    metrics.leader.set(i64::from(*leader.borrow()));
    let mut gc_tick = tokio::time::interval_at(tokio::time::Instant::now() + GC_EVERY, GC_EVERY);
    // A lease taken over while the watches have not synced yet: the
    // takeover waits for the index to be complete.
    let mut was_leader = was_leading;
    let mut lease_lost = false;
    let mut takeover_due = s.leader_elect && was_leading;
    // Without leader election nothing is sent before the pod and event
    // lists are both in: a pod judged before its events arrive reads
    // differently from its stored report (Partial, fewer probe failures)
    // and would be written once for nothing, then again (590 rewrites of
    // 1,000 reports after a restart, measured by the load harness). Once
    // synced, the whole index goes out once; the writer writes only what
    // differs from the stored reports. (With leader election the takeover
    // does the same.)
    let mut initial_sync_due = !s.leader_elect;
    // A takeover's reconcile pass, while it reads the stored reports.
    let mut pass: Option<Pass> = None;
    // Set when the stored reports cannot be read: the run ends with it.
    let mut failed: Option<RunError> = None;
    loop {
        // Work other than report updates: closing and deleting reports.
        let mut other: Vec<Work> = Vec::new();
        let mut arrived = Instant::now();
        let updates: Vec<Update> = tokio::select! {
            item = inputs.next() => {
                arrived = Instant::now();
                let Some(item) = item else { break };
                let item = match item {
                    Ok(i) => i,
                    Err(e) => {
                        tracing::warn!(error = %e, "watch error; the watcher retries with backoff");
                        continue;
                    }
                };
                let seen = now();
                match item {
                    Input::Pod(scope, ev) => {
                        metrics.watch_events.with_label_values(&["pod"]).inc();
                        match *ev {
                            WEvent::Init => { store.pods_resync_start(scope.as_deref()); Vec::new() }
                            WEvent::InitApply(p) | WEvent::Apply(p) => store.pod_applied(&p, seen),
                            // A label-selector watch says "deleted" of a pod
                            // whose labels no longer match: not watched any more.
                            WEvent::Delete(p) if s.label_selector.as_ref().is_some_and(|sel| !sel.selects(p.metadata.labels.as_ref())) => {
                                store.pod_unwatched(&p);
                                Vec::new()
                            }
                            WEvent::Delete(p) => store.pod_deleted(&p, seen),
                            WEvent::InitDone => {
                                synced += 1;
                                tracing::info!(scope = scope.as_deref().unwrap_or("all namespaces"), tracked = store.tracked_pods(), "pods listed");
                                let r = store.pods_resync_done(scope.as_deref(), seen);
                                if !r.closed.is_empty() {
                                    tracing::info!(reports = r.closed.len(), "closing reports of pods deleted while nobody watched");
                                }
                                // A (re)list's pages are free again.
                                memory::release_free();
                                other.extend(r.closed.into_iter().map(|c| Work::Close { namespace: c.namespace, name: c.name, at: seen }));
                                r.updates
                            }
                        }
                    }
                    Input::PodsListed(scope, events_go) => {
                        store.pods_listed(scope.as_deref(), seen);
                        events_go.send_replace(true);
                        Vec::new()
                    }
                    Input::Node(ev) => {
                        metrics.watch_events.with_label_values(&["node"]).inc();
                        match *ev {
                            WEvent::InitApply(n) | WEvent::Apply(n) => store.node_applied(&n),
                            WEvent::Init | WEvent::InitDone | WEvent::Delete(_) => Vec::new(),
                        }
                    }
                    Input::Event(ev) => {
                        metrics.watch_events.with_label_values(&["event"]).inc();
                        match ev {
                            Some(ev) => { let (key, raw) = *ev; store.raw_event_applied(key, raw, seen) }
                            None => Vec::new(),
                        }
                    }
                    Input::EventsListed => {
                        synced += 1;
                        tracing::info!("events listed");
                        // The Events held while the pods were listed are in.
                        memory::release_free();
                        Vec::new()
                    }
                }
            }
            read = async { stored_read.as_mut().expect("guarded").await }, if stored_read.is_some() => {
                stored_read = None;
                let ledger = match read {
                    Ok(Ok(stored)) => preload(&mut store, stored),
                    Ok(Err(e)) => { failed = Some(e); break }
                    Err(e) => { failed = Some(RunError::PreloadTask(e)); break }
                };
                preloaded_tx.send_replace(true);
                // With leader election every lease starts with a takeover
                // pass, which reads the ledger again: this one is not kept.
                if !s.leader_elect && tx.send(Msg::Stored(ledger)).await.is_err() {
                    break;
                }
                Vec::new()
            }
            page = async { pass.as_mut().expect("guarded").next().await }, if pass.is_some() => {
                let p = pass.as_mut().expect("guarded");
                match page {
                    Some(Ok(read)) => {
                        let (one, mut stored) = match read {
                            Read::Page(stored) => (None, stored),
                            Read::One(key, stored) => (Some(key), stored),
                        };
                        let ledger = p.took(&mut stored);
                        store.took_over(stored.reports);
                        if tx.send(Msg::Stored(ledger)).await.is_err() {
                            break;
                        }
                        // What this page read, and what it showed is not
                        // stored (or the one report read ahead).
                        let due = match &one {
                            // One report: found by its name, not by
                            // judging the whole index (a takeover reads
                            // hundreds ahead; each scan of 10,000 pods
                            // made their names again).
                            Some((ns, name)) if p.due(ns, name) => store.current_of(now(), ns, name),
                            Some(_) => Vec::new(),
                            None => store.current_where(now(), |ns, name| p.due(ns, name)),
                        };
                        p.sent(due.iter().map(|u| (u.namespace.as_str(), u.report_name.as_str())));
                        due
                    }
                    Some(Err(e)) => {
                        tracing::warn!(error = %e, "reading the stored reports after a takeover failed; reading again");
                        p.retry();
                        Vec::new()
                    }
                    None => {
                        // Every stored report read: the reports no page
                        // held, and closes for stored live reports whose
                        // pod the index does not know.
                        let p = pass.take().expect("guarded");
                        takeover_due = false;
                        let orphans = p.orphans(&store.report_keys());
                        let rest = store.current_where(now(), |ns, name| !p.was_sent(ns, name));
                        tracing::info!(
                            stored = p.reports_read(),
                            read_ahead = p.read_ahead(),
                            unstored = rest.len(),
                            orphans = orphans.len(),
                            secs = p.started.elapsed().as_secs_f64(),
                            "took over: every stored report read"
                        );
                        let at = now();
                        other.extend(orphans.into_iter().map(|(namespace, name)| Work::Close { namespace, name, at }));
                        // GC now, not at the next tick: a chaos run whose
                        // leaders lived less than a tick piled up twice
                        // --max-reports, and every takeover read them all.
                        other.extend(gc_work(&mut store, &s));
                        // The pages of every stored report are free again.
                        memory::release_free();
                        rest
                    }
                }
            }
            _ = gc_tick.tick() => {
                memory::release_free();
                // Only the leader takes reports out of the index: a standby
                // keeps them, to delete them once it leads (and a takeover
                // in progress sends nothing).
                if *leader.borrow() && !takeover_due {
                    other.extend(gc_work(&mut store, &s));
                }
                Vec::new()
            }
            changed = leader.changed() => {
                if changed.is_err() {
                    // The lease task ended: this replica can no longer
                    // know whether it leads. Exit non-zero (restarted by
                    // the kubelet) rather than write or spin.
                    lease_lost = true;
                    break;
                }
                let l = *leader.borrow();
                metrics.leader.set(i64::from(l));
                tracing::info!(leader = l, "leadership changed");
                // A new lease is a takeover; a repeated "still leader" does
                // not cancel one that waits for the watches to sync.
                if l && !was_leader {
                    takeover_due = true;
                } else if !l {
                    takeover_due = false;
                }
                if !l {
                    // A pass of another term is not this one's.
                    pass = None;
                }
                was_leader = l;
                Vec::new()
            }
            _ = term.recv() => { tracing::info!("SIGTERM: flushing pending writes"); break }
            _ = interrupt.recv() => { tracing::info!("interrupted: flushing pending writes"); break }
        };
        let mut updates = updates;
        if synced >= watches_total && !ready.swap(true, Ordering::Relaxed) {
            // Every pod judged once, now that the lists are in.
            let judged = store.watches_synced(now());
            tracing::info!(tracked = store.tracked_pods(), "watches synced; ready");
            if initial_sync_due {
                initial_sync_due = false;
                updates = judged;
                tracing::info!(
                    reports = updates.len(),
                    "index complete: writing what differs from the stored reports"
                );
            } else {
                // With leader election the takeover pass judges what it
                // writes; these judgements set the verdict gauges.
                drop(judged);
            }
            memory::release_free();
            synced_tx.send_replace(true);
        } else if initial_sync_due {
            updates.clear();
        }
        let is_leader = *leader.borrow();
        if takeover_due && is_leader && pass.is_none() && ready.load(Ordering::Relaxed) {
            tracing::info!("took the lease over: reading the stored reports");
            if tx.send(Msg::TakeoverStart).await.is_err() {
                break;
            }
            pass = Some(Pass::start(client.clone(), s.namespaces.clone()));
        }
        // A standby sends nothing: the leader writes, and a takeover
        // starts from the index, not from a queue.
        if !is_leader || (takeover_due && pass.is_none()) {
            index_metrics(&metrics, &store);
            continue;
        }
        if let Some(p) = &mut pass {
            // While the pass reads, only reports whose stored version is
            // in are written; the others are read ahead of their page, or
            // go out when the pass ends.
            updates.retain(|u| {
                let known = p.is_read(&u.namespace, &u.report_name);
                if !known {
                    p.want(&u.namespace, &u.report_name);
                }
                known
            });
            other.clear();
        }
        for work in other {
            if tx.send(Msg::Work(work)).await.is_err() {
                break;
            }
        }
        for update in updates {
            // Urgent until the writer compares it with the stored report.
            let out = Outgoing {
                update,
                seen_at: arrived,
                urgent: true,
            };
            if tx.send(Msg::Work(Work::Apply(out))).await.is_err() {
                break;
            }
        }
        index_metrics(&metrics, &store);
    }
    // Flush what is pending, then give the lease up.
    drop(tx);
    if let Some(read) = stored_read.take() {
        read.abort();
    }
    let _ = writer_task.await;
    drop(leader);
    if lease_lost {
        let why = match lease_task.map(|mut t| t.try_recv()) {
            Some(Ok(task)) => match task.await {
                Ok(Err(e)) => e.to_string(),
                Ok(Ok(_)) => "it ended".to_string(),
                Err(e) => e.to_string(),
            },
            _ => "it ended".to_string(),
        };
        return Err(RunError::Lease(format!(
            "the leader election stopped: {why}"
        )));
    }
    if let Some(mut task) = lease_task
        && let Ok(task) = task.try_recv()
        && let Ok(Ok(manager)) = task.await
        && let Err(e) = manager.release().await
    {
        tracing::warn!(error = %e, "releasing the lease failed");
    }
    failed.map_or(Ok(()), Err)
}

/// The reports to delete now (the leader's garbage collection): expired,
/// or the oldest ended ones beyond `--max-reports`.
fn gc_work(store: &mut Store, s: &Settings) -> Vec<Work> {
    let doomed = store.expired(now(), s.report_ttl.as_secs() as i64, s.max_reports);
    if !doomed.is_empty() {
        tracing::info!(reports = doomed.len(), "deleting expired reports");
    }
    doomed
        .into_iter()
        .map(|r| Work::Delete {
            namespace: r.namespace,
            name: r.name,
        })
        .collect()
}

/// The gauges and counters that describe the index, after each input.
fn index_metrics(metrics: &Metrics, store: &Store) {
    metrics.tracked_pods.set(store.tracked_pods() as i64);
    metrics.set_verdicts(store.verdict_counts());
    let dropped = store.pending_events_dropped();
    metrics
        .pending_events_dropped
        .inc_by(dropped.saturating_sub(metrics.pending_events_dropped.get()));
}

#[cfg(test)]
mod tests {
    use super::EVENT_SELECTOR;
    use crate::model::EventReason;

    #[test]
    fn the_event_selector_excludes_no_reason_a_rule_reads() {
        let mut parts = EVENT_SELECTOR.split(',');
        assert_eq!(parts.next(), Some("involvedObject.kind=Pod"));
        for p in parts {
            let reason = p.strip_prefix("reason!=").expect("only reason exclusions");
            assert_eq!(
                EventReason::parse(reason),
                None,
                "{reason} is read by the rules"
            );
        }
    }
}
