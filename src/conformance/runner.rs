//! The cluster side of `conformance`: checks its permissions up front,
//! picks the nodes, creates the namespace and the probe workloads, watches
//! the probe pods, drives each probe as its catalogue entry says, judges
//! it, and deletes what it created (also on Ctrl-C, SIGTERM and failure).
//!
//! Nodes: fake nodes (annotation `kwok.x-k8s.io/node=fake`: no kubelet) and
//! NotReady nodes are never used; nodes that are unschedulable or tainted
//! NoSchedule/NoExecute are skipped unless `--node-selector` selects them,
//! in which case the probes tolerate their taints.

use super::catalogue::{CATALOGUE, Entry, Kind, Next, Observed, Workload};
use super::{Finding, Row, Run, finalize};
use crate::kubelet::KubeletVersion;
use futures::StreamExt;
use k8s_openapi::api::authorization::v1::{
    ResourceAttributes, SelfSubjectAccessReview, SelfSubjectAccessReviewSpec,
};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{Event, Namespace, Node, Pod, PodSpec, Toleration};
use kube::Client;
use kube::api::{Api, DeleteParams, ListParams, ObjectMeta, PostParams};
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Labels: the namespace (to find leftovers), and every probe.
pub const NAMESPACE_LABEL: &str = "sidecar-order.dev/conformance";
pub const RUN_LABEL: &str = "sidecar-order.dev/conformance-run";
pub const PROBE_LABEL: &str = "sidecar-order.dev/probe";
const FAKE_NODE_ANNOTATION: &str = "kwok.x-k8s.io/node";

/// How probes are spread over nodes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PerNode {
    /// One run, on the first eligible node (by name).
    Off,
    /// One run per eligible node.
    Node,
    /// One run per value of this node label (a node pool).
    Label(String),
}

#[derive(Clone, Debug)]
pub struct Options {
    pub namespace: Option<String>,
    pub image: String,
    pub node_selector: BTreeMap<String, String>,
    pub per_node: PerNode,
    /// Per probe.
    pub timeout: Duration,
    pub keep: bool,
    /// Only these entries (all when empty).
    pub promises: Vec<String>,
    pub context: Option<String>,
    pub kubeconfig: Option<std::path::PathBuf>,
}

/// Why a run did not produce a result.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// A cluster it cannot run on, or bad usage (exit 2): one line.
    #[error("{0}")]
    Cannot(String),
    /// Ctrl-C or SIGTERM; what was created is deleted (exit 130).
    #[error("interrupted: {0}")]
    Interrupted(String),
}

/// `key=value[,key=value]`, as a pod's nodeSelector.
pub fn parse_node_selector(s: &str) -> Result<BTreeMap<String, String>, String> {
    let mut out = BTreeMap::new();
    for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (k, v) = part
            .split_once('=')
            .filter(|(k, _)| !k.is_empty() && !k.contains('!'))
            .ok_or_else(|| format!("`{part}` is not key=value (a pod nodeSelector)"))?;
        out.insert(k.to_string(), v.to_string());
    }
    if out.is_empty() {
        return Err("an empty node selector".into());
    }
    Ok(out)
}

/// One line of any error (API errors can carry newlines).
fn line(s: impl std::fmt::Display) -> String {
    s.to_string()
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
}

/// What an API error means for the run: unreachable, forbidden, or other.
fn api_error(what: &str, e: &kube::Error, server: &str) -> RunError {
    match e {
        kube::Error::Api(s) if s.code == 403 => {
            RunError::Cannot(line(format!("forbidden to {what}: {}", s.message)))
        }
        kube::Error::Api(s) if s.code == 401 => RunError::Cannot(line(format!(
            "the cluster at {server} refused the credentials (401 Unauthorized) while trying to {what}"
        ))),
        kube::Error::Api(s) => RunError::Cannot(line(format!("cannot {what}: {}", s.message))),
        other => {
            // The innermost cause says what went wrong (connection refused, ...).
            let mut cause: &dyn std::error::Error = other;
            while let Some(next) = cause.source() {
                cause = next;
            }
            RunError::Cannot(line(format!(
                "cannot reach the cluster at {server}: {other}: {cause}"
            )))
        }
    }
}

// ---------------------------------------------------------------- permissions

/// One permission the run needs.
struct Need {
    verb: &'static str,
    group: &'static str,
    resource: &'static str,
    namespaced: bool,
}

const fn need(
    verb: &'static str,
    group: &'static str,
    resource: &'static str,
    namespaced: bool,
) -> Need {
    Need {
        verb,
        group,
        resource,
        namespaced,
    }
}

/// Every permission a run needs in its namespace (config/conformance/).
const NEEDS: &[Need] = &[
    need("list", "", "nodes", false),
    need("create", "", "pods", true),
    need("delete", "", "pods", true),
    need("get", "", "pods", true),
    need("list", "", "pods", true),
    need("watch", "", "pods", true),
    need("create", "batch", "jobs", true),
    need("delete", "batch", "jobs", true),
    need("get", "batch", "jobs", true),
    need("list", "", "events", true),
];

async fn allowed(client: &Client, n: &Need, ns: &str, server: &str) -> Result<bool, RunError> {
    let review = SelfSubjectAccessReview {
        spec: SelfSubjectAccessReviewSpec {
            resource_attributes: Some(ResourceAttributes {
                verb: Some(n.verb.into()),
                group: Some(n.group.into()),
                resource: Some(n.resource.into()),
                namespace: n.namespaced.then(|| ns.to_string()),
                ..Default::default()
            }),
            ..Default::default()
        },
        ..Default::default()
    };
    let api: Api<SelfSubjectAccessReview> = Api::all(client.clone());
    let r = api
        .create(&PostParams::default(), &review)
        .await
        .map_err(|e| {
            api_error(
                "create selfsubjectaccessreviews (to check permissions)",
                &e,
                server,
            )
        })?;
    Ok(r.status.is_some_and(|s| s.allowed))
}

fn shown(n: &Need, ns: &str) -> String {
    let res = if n.group.is_empty() {
        n.resource.to_string()
    } else {
        format!("{}.{}", n.resource, n.group)
    };
    if n.namespaced {
        format!("{} {res} in namespace {ns}", n.verb)
    } else {
        format!("{} {res} (cluster-wide)", n.verb)
    }
}

/// Checks every permission up front; `Cannot` names the missing ones (verb
/// and resource). Returns whether the namespace may be created.
async fn check_access(
    client: &Client,
    ns: &str,
    given: bool,
    server: &str,
) -> Result<bool, RunError> {
    let mut missing = Vec::new();
    let create_ns = need("create", "", "namespaces", false);
    let delete_ns = need("delete", "", "namespaces", false);
    let may_create = allowed(client, &create_ns, ns, server).await?;
    if !given && !may_create {
        missing.push(shown(&create_ns, ns));
    }
    if may_create && !allowed(client, &delete_ns, ns, server).await? {
        missing.push(shown(&delete_ns, ns));
    }
    for n in NEEDS {
        if !allowed(client, n, ns, server).await? {
            missing.push(shown(n, ns));
        }
    }
    if missing.is_empty() {
        Ok(may_create)
    } else {
        Err(RunError::Cannot(format!(
            "missing permissions: {} (config/conformance/ has the Role and ClusterRole it needs)",
            missing.join(", ")
        )))
    }
}

// ---------------------------------------------------------------- nodes

/// Where one run's probes go.
#[derive(Clone, Debug)]
pub struct Target {
    /// What the table's node column shows before a pod landed.
    pub label: String,
    pub selector: BTreeMap<String, String>,
    pub tolerations: Vec<Toleration>,
    /// Pinned to this node (no hostname label): spec.nodeName.
    pub node_name: Option<String>,
    /// A pool: the node column shows `label (node)`.
    pub pool: bool,
}

fn is_fake(n: &Node) -> bool {
    n.metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(FAKE_NODE_ANNOTATION))
        .is_some_and(|v| v == "fake")
}

fn is_ready(n: &Node) -> bool {
    n.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

fn blocking_taints(n: &Node) -> Vec<Toleration> {
    n.spec
        .as_ref()
        .and_then(|s| s.taints.as_ref())
        .into_iter()
        .flatten()
        .filter(|t| t.effect == "NoSchedule" || t.effect == "NoExecute")
        .map(|t| Toleration {
            key: Some(t.key.clone()),
            operator: Some(if t.value.is_some() { "Equal" } else { "Exists" }.into()),
            value: t.value.clone(),
            effect: Some(t.effect.clone()),
            ..Default::default()
        })
        .collect()
}

fn unschedulable(n: &Node) -> bool {
    n.spec
        .as_ref()
        .and_then(|s| s.unschedulable)
        .unwrap_or(false)
}

fn name(n: &Node) -> String {
    n.metadata.name.clone().unwrap_or_default()
}

/// The targets of a run, from every node (sans-IO); `Err` says why there is
/// none, counting what was skipped.
pub fn targets(
    nodes: &[Node],
    selector: &BTreeMap<String, String>,
    per_node: &PerNode,
) -> Result<Vec<Target>, String> {
    let selected = |n: &Node| {
        let labels = n.metadata.labels.clone().unwrap_or_default();
        selector.iter().all(|(k, v)| labels.get(k) == Some(v))
    };
    let mut eligible: Vec<&Node> = Vec::new();
    let (mut fake, mut not_ready, mut tainted, mut other) = (0, 0, 0, 0);
    for n in nodes {
        if !selected(n) {
            other += 1;
        } else if is_fake(n) {
            fake += 1;
        } else if !is_ready(n) {
            not_ready += 1;
        } else if selector.is_empty() && (unschedulable(n) || !blocking_taints(n).is_empty()) {
            tainted += 1;
        } else {
            eligible.push(n);
        }
    }
    if eligible.is_empty() {
        return Err(format!(
            "no node to run on: of {} nodes, {other} not selected, {fake} fake (annotation {FAKE_NODE_ANNOTATION}=fake), {not_ready} not Ready, {tainted} tainted NoSchedule/NoExecute or unschedulable (select them with --node-selector)",
            nodes.len()
        ));
    }
    eligible.sort_by_key(|n| name(n));
    let pin = |n: &Node| {
        let host = n
            .metadata
            .labels
            .as_ref()
            .and_then(|l| l.get("kubernetes.io/hostname"))
            .cloned();
        let mut sel = selector.clone();
        let node_name = match host {
            Some(h) => {
                sel.insert("kubernetes.io/hostname".into(), h);
                None
            }
            None => Some(name(n)),
        };
        Target {
            label: name(n),
            selector: sel,
            tolerations: blocking_taints(n),
            node_name,
            pool: false,
        }
    };
    match per_node {
        PerNode::Off => Ok(vec![pin(eligible[0])]),
        PerNode::Node => Ok(eligible.into_iter().map(pin).collect()),
        PerNode::Label(key) => {
            let mut pools: BTreeMap<String, Vec<&Node>> = BTreeMap::new();
            for n in eligible {
                if let Some(v) = n.metadata.labels.as_ref().and_then(|l| l.get(key)) {
                    pools.entry(v.clone()).or_default().push(n);
                }
            }
            if pools.is_empty() {
                return Err(format!("no eligible node has the label {key}"));
            }
            Ok(pools
                .into_iter()
                .map(|(v, ns)| {
                    let mut sel = selector.clone();
                    sel.insert(key.clone(), v.clone());
                    let mut tolerations: Vec<Toleration> = Vec::new();
                    for t in ns.iter().flat_map(|n| blocking_taints(n)) {
                        if !tolerations.contains(&t) {
                            tolerations.push(t);
                        }
                    }
                    Target {
                        label: format!("{key}={v}"),
                        selector: sel,
                        tolerations,
                        node_name: None,
                        pool: true,
                    }
                })
                .collect())
        }
    }
}

// ---------------------------------------------------------------- probes

/// A probe: one entry on one target.
struct Probe {
    entry: &'static Entry,
    target: usize,
    /// The probe label's value, and the workload's name.
    key: String,
}

/// Every version of every probe pod the watch saw, by probe key.
#[derive(Default)]
struct Seen {
    pods: HashMap<String, ProbePods>,
}

#[derive(Default, Clone)]
struct ProbePods {
    uid: Option<String>,
    versions: Vec<Pod>,
    gone: bool,
}

impl Seen {
    fn record(&mut self, pod: Pod, gone: bool) {
        let Some(key) = pod
            .metadata
            .labels
            .as_ref()
            .and_then(|l| l.get(PROBE_LABEL))
            .cloned()
        else {
            return;
        };
        let p = self.pods.entry(key).or_default();
        let uid = pod.metadata.uid.clone();
        if p.uid.is_none() {
            p.uid = uid.clone();
        }
        if p.uid != uid {
            return; // a Job's retry: the first pod is the probe
        }
        if p.versions.last().map(|l| &l.metadata.resource_version)
            != Some(&pod.metadata.resource_version)
        {
            p.versions.push(pod);
        }
        p.gone |= gone;
    }
}

fn label(workload: &mut ObjectMeta, run_id: &str, key: &str) {
    let labels = workload.labels.get_or_insert_with(BTreeMap::new);
    labels.insert(RUN_LABEL.into(), run_id.into());
    labels.insert(PROBE_LABEL.into(), key.into());
    labels.insert(
        "app.kubernetes.io/managed-by".into(),
        "sidecar-order".into(),
    );
}

fn place(spec: &mut PodSpec, t: &Target) {
    if !t.selector.is_empty() {
        spec.node_selector
            .get_or_insert_with(BTreeMap::new)
            .extend(t.selector.clone());
    }
    if !t.tolerations.is_empty() {
        spec.tolerations
            .get_or_insert_with(Vec::new)
            .extend(t.tolerations.clone());
    }
    if let Some(n) = &t.node_name {
        spec.node_name = Some(n.clone());
    }
}

/// The probe's workload, labelled and placed on its target.
fn build(p: &Probe, image: &str, run_id: &str, t: &Target) -> Workload {
    let mut w = p.entry.workload(&p.key, image);
    match &mut w {
        Workload::Pod(pod) => {
            label(&mut pod.metadata, run_id, &p.key);
            place(pod.spec.get_or_insert_with(Default::default), t);
        }
        Workload::Job(job) => {
            label(&mut job.metadata, run_id, &p.key);
            let tpl = &mut job.spec.get_or_insert_with(Default::default).template;
            label(
                tpl.metadata.get_or_insert_with(Default::default),
                run_id,
                &p.key,
            );
            place(tpl.spec.get_or_insert_with(Default::default), t);
        }
    }
    w
}

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// How long a judgement that is Indeterminate is retried with fresh
/// observations: the kubelet's events can arrive late on a busy node.
const SETTLE: Duration = Duration::from_secs(15);

/// The node a probe pod ran on.
fn node_of(o: &Observed) -> Option<String> {
    o.pods
        .iter()
        .rev()
        .find_map(|p| p.spec.as_ref().and_then(|s| s.node_name.clone()))
}

/// Drives one probe until its entry says judge (or it times out) and judges
/// it, events included; an Indeterminate judgement is retried for up to
/// `SETTLE` with fresh observations. `Err`: the API failed it, as a finding.
async fn drive(
    client: Client,
    ns: String,
    probe: &Probe,
    seen: Arc<Mutex<Seen>>,
    timeout: Duration,
    judge: &(dyn Fn(&Observed) -> Finding + Sync),
) -> Result<(Finding, Observed), Finding> {
    let mut settling: Option<Instant> = None;
    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns);
    let jobs: Api<Job> = Api::namespaced(client.clone(), &ns);
    let started = Instant::now();
    let mut deleted = false;
    let mut gone_by_get = false;
    loop {
        let snap = seen
            .lock()
            .expect("not poisoned")
            .pods
            .get(&probe.key)
            .cloned()
            .unwrap_or_default();
        let job = match probe.entry.kind {
            Kind::Job => jobs.get_opt(&probe.key).await.ok().flatten(),
            Kind::Pod => None,
        };
        let timed_out = started.elapsed() >= timeout;
        let mut obs = Observed {
            pods: snap.versions,
            events: Vec::new(),
            job,
            gone: snap.gone || gone_by_get,
            deleted,
            now: now(),
            timed_out,
        };
        let next = if timed_out {
            Next::Judge
        } else {
            (probe.entry.next)(&obs)
        };
        match next {
            Next::Wait => {}
            Next::Delete if !deleted => {
                let name = obs
                    .pods
                    .last()
                    .and_then(|p| p.metadata.name.clone())
                    .unwrap_or_else(|| probe.key.clone());
                if let Err(e) = pods.delete(&name, &DeleteParams::default()).await {
                    return Err(Finding::indeterminate(vec![format!(
                        "deleting the probe pod failed: {}",
                        line(e)
                    )]));
                }
                deleted = true;
            }
            Next::Delete => {}
            Next::Judge => {
                // Late events (Killing, Unhealthy) get a moment to arrive.
                tokio::time::sleep(Duration::from_secs(1)).await;
                let settle_start = *settling.get_or_insert_with(Instant::now);
                if let Some(uid) = obs.pods.last().and_then(|p| p.metadata.uid.clone()) {
                    let lp = ListParams::default().fields(&format!("involvedObject.uid={uid}"));
                    obs.events = Api::<Event>::namespaced(client.clone(), &ns)
                        .list(&lp)
                        .await
                        .map_err(|e| {
                            Finding::indeterminate(vec![format!(
                                "listing the pod's events failed: {}",
                                line(e)
                            )])
                        })?
                        .items;
                }
                let found = judge(&obs);
                if found.status != super::Status::Indeterminate
                    || timed_out
                    || settle_start.elapsed() >= SETTLE
                {
                    return Ok((found, obs));
                }
            }
        }
        // A deletion the watch missed (it restarted): ask.
        if deleted
            && !obs.gone
            && let Some(name) = obs.pods.last().and_then(|p| p.metadata.name.clone())
        {
            gone_by_get = matches!(pods.get_opt(&name).await, Ok(None));
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

// ---------------------------------------------------------------- the run

/// What the run created, to delete it.
struct Created {
    namespace: String,
    /// The run's id (its probes' RUN_LABEL value).
    run_id: String,
    /// The namespace is ours: deleting it deletes the rest.
    own_namespace: bool,
    pods: Vec<String>,
    jobs: Vec<String>,
}

async fn cleanup(client: &Client, c: &Created) {
    let pods: Api<Pod> = Api::namespaced(client.clone(), &c.namespace);
    let jobs: Api<Job> = Api::namespaced(client.clone(), &c.namespace);
    let now = DeleteParams {
        grace_period_seconds: Some(0),
        ..DeleteParams::background()
    };
    for j in &c.jobs {
        let _ = jobs.delete(j, &now).await;
    }
    for p in &c.pods {
        let _ = pods.delete(p, &now).await;
    }
    // A Job's pods: by label (the Job's deletion cascades too).
    let this_run = format!("{RUN_LABEL}={}", c.run_id);
    if let Ok(list) = pods.list(&ListParams::default().labels(&this_run)).await {
        for p in list.items {
            if let Some(n) = p.metadata.name {
                let _ = pods.delete(&n, &now).await;
            }
        }
    }
    if c.own_namespace {
        let _ = Api::<Namespace>::all(client.clone())
            .delete(&c.namespace, &DeleteParams::background())
            .await;
    }
}

fn run_id() -> String {
    let n = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    format!(
        "{:06x}",
        (n ^ u64::from(std::process::id()).rotate_left(20)) & 0xff_ffff
    )
}

async fn interrupted() -> &'static str {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => tokio::select! {
                _ = tokio::signal::ctrl_c() => "SIGINT",
                _ = term.recv() => "SIGTERM",
            },
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
                "SIGINT"
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
        "SIGINT"
    }
}

/// Runs the catalogue; `progress` gets one line per step (standard error).
pub async fn run(opts: &Options, progress: &(dyn Fn(&str) + Sync)) -> Result<Run, RunError> {
    let started = Instant::now();
    let entries: Vec<&'static Entry> = if opts.promises.is_empty() {
        CATALOGUE.to_vec()
    } else {
        opts.promises
            .iter()
            .map(|id| {
                super::catalogue::by_id(id).ok_or_else(|| {
                    RunError::Cannot(format!(
                        "unknown promise `{id}` (one of: {})",
                        CATALOGUE
                            .iter()
                            .map(|e| e.id)
                            .collect::<Vec<_>>()
                            .join(", ")
                    ))
                })
            })
            .collect::<Result<_, _>>()?
    };
    let config = crate::cli::kube_config(opts.context.as_deref(), opts.kubeconfig.as_deref())
        .await
        .map_err(|e| RunError::Cannot(line(e)))?;
    let server = config.cluster_url.to_string();
    let client = Client::try_from(config)
        .map_err(|e| RunError::Cannot(line(format!("cannot build a client for {server}: {e}"))))?;
    let id = run_id();
    let ns = opts
        .namespace
        .clone()
        .unwrap_or_else(|| format!("sidecar-order-conformance-{id}"));
    let may_create = check_access(&client, &ns, opts.namespace.is_some(), &server).await?;

    let nodes = Api::<Node>::all(client.clone())
        .list(&ListParams::default())
        .await
        .map_err(|e| api_error("list nodes", &e, &server))?
        .items;
    let targets = targets(&nodes, &opts.node_selector, &opts.per_node).map_err(RunError::Cannot)?;
    let versions: HashMap<String, Option<KubeletVersion>> = nodes
        .iter()
        .map(|n| (name(n), crate::observe::kubelet_version_of(n)))
        .collect();
    progress(&format!(
        "{} promise(s) on {}: {}",
        entries.len(),
        if targets.len() == 1 {
            "1 target".to_string()
        } else {
            format!("{} targets", targets.len())
        },
        targets
            .iter()
            .map(|t| t.label.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    ));

    // The namespace: ours when we create it.
    let mut own_namespace = false;
    if may_create {
        let obj = Namespace {
            metadata: ObjectMeta {
                name: Some(ns.clone()),
                labels: Some(BTreeMap::from([
                    (NAMESPACE_LABEL.to_string(), "true".to_string()),
                    (RUN_LABEL.to_string(), id.clone()),
                ])),
                ..Default::default()
            },
            ..Default::default()
        };
        match Api::<Namespace>::all(client.clone())
            .create(&PostParams::default(), &obj)
            .await
        {
            Ok(_) => own_namespace = true,
            Err(kube::Error::Api(s)) if s.code == 409 && opts.namespace.is_some() => {}
            Err(e) => return Err(api_error(&format!("create namespace {ns}"), &e, &server)),
        }
    }
    progress(&format!(
        "namespace {ns}{}",
        if own_namespace {
            " (created; deleted at the end)"
        } else {
            " (existing; only the probes are deleted)"
        }
    ));
    let mut created = Created {
        namespace: ns.clone(),
        run_id: id.clone(),
        own_namespace,
        pods: Vec::new(),
        jobs: Vec::new(),
    };

    let work = probes(
        &client,
        opts,
        &ns,
        &id,
        &entries,
        &targets,
        &versions,
        &mut created,
        progress,
    );
    let outcome = tokio::select! {
        r = work => r,
        sig = interrupted() => Err(RunError::Interrupted(sig.to_string())),
    };
    if opts.keep {
        progress(&format!(
            "--keep: namespace {ns} and its probes are left for inspection"
        ));
    } else {
        progress(&format!("deleting what the run created in {ns}"));
        cleanup(&client, &created).await;
    }
    let rows = match outcome {
        Ok(rows) => rows,
        Err(RunError::Interrupted(sig)) => {
            return Err(RunError::Interrupted(if opts.keep {
                format!("{sig}; namespace {ns} kept (--keep)")
            } else {
                format!("{sig}; deleted namespace {ns} and its probes")
            }));
        }
        Err(e) => return Err(e),
    };
    Ok(Run {
        namespace: ns,
        image: opts.image.clone(),
        seconds: started.elapsed().as_secs(),
        rows,
    })
}

#[allow(clippy::too_many_arguments)]
async fn probes(
    client: &Client,
    opts: &Options,
    ns: &str,
    id: &str,
    entries: &[&'static Entry],
    targets: &[Target],
    versions: &HashMap<String, Option<KubeletVersion>>,
    created: &mut Created,
    progress: &(dyn Fn(&str) + Sync),
) -> Result<Vec<Row>, RunError> {
    // The watch first, so no pod version is missed.
    let seen = Arc::new(Mutex::new(Seen::default()));
    let api: Api<Pod> = Api::namespaced(client.clone(), ns);
    let cfg = kube::runtime::watcher::Config::default().labels(&format!("{RUN_LABEL}={id}"));
    let watch_seen = seen.clone();
    let watch = tokio::spawn(async move {
        use kube::runtime::watcher::Event as W;
        let mut stream = kube::runtime::watcher(api, cfg).boxed();
        while let Some(ev) = stream.next().await {
            let mut s = watch_seen.lock().expect("not poisoned");
            match ev {
                Ok(W::Apply(p) | W::InitApply(p)) => s.record(p, false),
                Ok(W::Delete(p)) => s.record(p, true),
                Ok(W::Init | W::InitDone) | Err(_) => {}
            }
        }
    });
    let _abort = AbortOnDrop(watch);

    let mut all = Vec::new();
    for ti in 0..targets.len() {
        for e in entries {
            let key = if targets.len() == 1 {
                e.id.to_string()
            } else {
                format!("{}-{ti}", e.id)
            };
            all.push(Probe {
                entry: e,
                target: ti,
                key,
            });
        }
    }
    for p in &all {
        let w = build(p, &opts.image, id, &targets[p.target]);
        let res = match w {
            Workload::Pod(pod) => {
                created.pods.push(p.key.clone());
                Api::<Pod>::namespaced(client.clone(), ns)
                    .create(&PostParams::default(), &pod)
                    .await
                    .map(|_| ())
            }
            Workload::Job(job) => {
                created.jobs.push(p.key.clone());
                Api::<Job>::namespaced(client.clone(), ns)
                    .create(&PostParams::default(), &job)
                    .await
                    .map(|_| ())
            }
        };
        res.map_err(|e| api_error(&format!("create the probe {} in {ns}", p.key), &e, ""))?;
    }
    progress(&format!(
        "{} probe(s) created; waiting for the kubelet(s)",
        all.len()
    ));

    let started = Instant::now();
    let runs = all.iter().map(|p| {
        let (client, ns, seen) = (client.clone(), ns.to_string(), seen.clone());
        async move {
            let kubelet_of =
                |o: &Observed| node_of(o).and_then(|n| versions.get(&n).copied().flatten());
            let judge = |o: &Observed| (p.entry.judge)(o, kubelet_of(o));
            let driven = drive(client, ns, p, seen, opts.timeout, &judge).await;
            let secs = started.elapsed().as_secs();
            let (found, node, kubelet) = match driven {
                Ok((f, obs)) => (f, node_of(&obs), kubelet_of(&obs)),
                Err(f) => (f, None, None),
            };
            let (found, bugs) = finalize(p.entry, kubelet, found);
            let t = &targets[p.target];
            let node_shown = match (&node, t.pool) {
                (Some(n), true) => format!("{} ({n})", t.label),
                (Some(n), false) => n.clone(),
                (None, _) => format!("{} (not scheduled)", t.label),
            };
            progress(&format!(
                "{} on {node_shown}: {}",
                p.entry.id,
                found.status.label()
            ));
            Row {
                promise: p.entry.id,
                description: p.entry.promise,
                node: node_shown,
                kubelet_version: kubelet
                    .map(|k| k.to_string())
                    .or_else(|| node.as_ref().map(|_| "unknown".to_string())),
                promised_from: format!(
                    "{}.{}",
                    p.entry.since.version.major, p.entry.since.version.minor
                ),
                catches: p.entry.catches,
                result: found.status,
                evidence: found.evidence,
                known_bugs: bugs,
                seconds: secs,
            }
        }
    });
    let rows = futures::future::join_all(runs).await;
    Ok(rows)
}

struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(name: &str, labels: &[(&str, &str)], fake: bool, taint: bool) -> Node {
        serde_json::from_value(serde_json::json!({
            "metadata": {
                "name": name,
                "labels": labels.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect::<BTreeMap<_, _>>(),
                "annotations": if fake { serde_json::json!({"kwok.x-k8s.io/node": "fake"}) } else { serde_json::json!({}) },
            },
            "spec": if taint { serde_json::json!({"taints": [{"key": "kwok.x-k8s.io/node", "value": "fake", "effect": "NoSchedule"}]}) } else { serde_json::json!({}) },
            "status": {"conditions": [{"type": "Ready", "status": "True"}], "nodeInfo": {"kubeletVersion": "v1.34.4"}}
        }))
        .unwrap()
    }

    #[test]
    fn fake_and_tainted_nodes_are_skipped_unless_selected() {
        let nodes = vec![
            node(
                "kwok-0",
                &[("kubernetes.io/hostname", "kwok-0"), ("type", "kwok")],
                true,
                true,
            ),
            node(
                "b",
                &[("kubernetes.io/hostname", "b"), ("pool", "x")],
                false,
                true,
            ),
            node(
                "vm",
                &[("kubernetes.io/hostname", "vm"), ("pool", "x")],
                false,
                false,
            ),
        ];
        let none = BTreeMap::new();
        let t = targets(&nodes, &none, &PerNode::Node).unwrap();
        assert_eq!(
            t.iter().map(|t| t.label.as_str()).collect::<Vec<_>>(),
            ["vm"]
        );
        assert_eq!(
            t[0].selector
                .get("kubernetes.io/hostname")
                .map(String::as_str),
            Some("vm")
        );
        // Selected: tainted nodes are used with a toleration; fake never.
        let sel = parse_node_selector("pool=x").unwrap();
        let t = targets(&nodes, &sel, &PerNode::Node).unwrap();
        assert_eq!(
            t.iter().map(|t| t.label.as_str()).collect::<Vec<_>>(),
            ["b", "vm"]
        );
        assert_eq!(t[0].tolerations.len(), 1);
        let kwok = parse_node_selector("type=kwok").unwrap();
        let err = targets(&nodes, &kwok, &PerNode::Off).unwrap_err();
        assert!(err.contains("1 fake"), "{err}");
        let pools = targets(&nodes, &sel, &PerNode::Label("pool".into())).unwrap();
        assert_eq!(pools.len(), 1);
        assert_eq!(pools[0].label, "pool=x");
        assert!(pools[0].pool);
    }

    #[test]
    fn node_selectors_are_key_value_pairs() {
        assert_eq!(
            parse_node_selector("a=b, c=d").unwrap(),
            BTreeMap::from([("a".into(), "b".into()), ("c".into(), "d".into())])
        );
        for bad in ["a", "=b", "", "a!=b"] {
            assert!(parse_node_selector(bad).is_err(), "{bad}");
        }
    }
}
