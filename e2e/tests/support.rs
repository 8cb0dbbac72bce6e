//! Helpers of the live-cluster suite: one namespace per test, polling with
//! timeouts, the controller's /metrics, kubectl, and what a person needs to
//! see when a test fails (reports, container statuses, events, controller log).

#![allow(dead_code)]

use k8s_openapi::api::core::v1::{Event, Namespace, Pod};
use k8s_openapi::jiff::Timestamp;
use kube::Client;
use kube::api::{Api, DeleteParams, ListParams, ObjectMeta, Patch, PatchParams, PostParams};
use sidecar_order::crd::{ReportStatus, SidecarOrderReport};
use sidecar_order::report::{ContainerReport, Severity, Verdict};
use std::collections::BTreeMap;
use std::fmt::{Display, Write as _};
use std::future::Future;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

pub type R<T> = Result<T, String>;

/// `Result::ctx("what was being done")`: any error as a readable string.
pub trait Context<T> {
    fn ctx(self, what: impl Display) -> R<T>;
}

impl<T, E: Display> Context<T> for Result<T, E> {
    fn ctx(self, what: impl Display) -> R<T> {
        self.map_err(|e| format!("{what}: {e}"))
    }
}

/// Returns `Err(format!(...))` from the test body unless the condition holds.
#[macro_export]
macro_rules! ensure {
    ($cond:expr, $($arg:tt)+) => {
        if !$cond {
            return Err(format!($($arg)+));
        }
    };
}

pub const CONTROLLER_NS: &str = "sidecar-order-system";
pub const CONTROLLER_SELECTOR: &str =
    "app.kubernetes.io/name=sidecar-order,app.kubernetes.io/component=controller";
pub const IMAGE: &str = "localhost/busybox:1";
/// Whole-test limit: every wait inside has its own, shorter one.
pub const TEST_LIMIT: Duration = Duration::from_secs(420);

pub fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

// ---------------------------------------------------------------- kubectl

pub fn kubectl_path() -> String {
    if let Ok(k) = std::env::var("KUBECTL")
        && !k.is_empty()
    {
        return k;
    }
    let version = std::env::var("K8S_VERSION").unwrap_or_else(|_| "v1.34.4".into());
    let home = std::env::var("HOME").unwrap_or_default();
    let cached = format!("{home}/.cache/sidecar-order/k8s-{version}/bin/kubectl");
    if std::path::Path::new(&cached).exists() {
        cached
    } else {
        "kubectl".into()
    }
}

/// Runs the real kubectl; stdout on success, stderr in the error otherwise.
pub fn kubectl(args: &[&str]) -> R<String> {
    let out = std::process::Command::new(kubectl_path())
        .args(args)
        .output()
        .ctx(format!("running kubectl {}", args.join(" ")))?;
    if !out.status.success() {
        return Err(format!(
            "kubectl {} failed ({}): {}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn kubectl_or_error(args: &[&str]) -> String {
    kubectl(args).unwrap_or_else(|e| format!("({e})\n"))
}

// ---------------------------------------------------------------- polling

/// Calls `f` every half second until it gives `Some`, or fails after `limit`
/// with the last error `f` returned.
pub async fn poll<T, F, Fut>(what: &str, limit: Duration, mut f: F) -> R<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = R<Option<T>>>,
{
    let start = Instant::now();
    let mut last_err = None;
    loop {
        match f().await {
            Ok(Some(v)) => return Ok(v),
            Ok(None) => {}
            Err(e) => last_err = Some(e),
        }
        if start.elapsed() >= limit {
            let last = last_err
                .map(|e| format!(" (last error: {e})"))
                .unwrap_or_default();
            return Err(format!(
                "timed out after {limit:?} waiting for {what}{last}"
            ));
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

// ---------------------------------------------------------------- time

pub fn ts(s: &str) -> R<i64> {
    s.parse::<Timestamp>()
        .map(|t| t.as_second())
        .ctx(format!("parsing timestamp {s:?}"))
}

// ---------------------------------------------------------------- pods

pub fn uid(meta: &ObjectMeta) -> String {
    meta.uid.clone().unwrap_or_default()
}

pub fn is_ready(p: &Pod) -> bool {
    condition(p, "Ready") == Some(true)
}

pub fn condition(p: &Pod, kind: &str) -> Option<bool> {
    p.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == kind)
        .map(|c| c.status == "True")
}

pub fn phase(p: &Pod) -> &str {
    p.status
        .as_ref()
        .and_then(|s| s.phase.as_deref())
        .unwrap_or("")
}

/// The status of a container (init or app) by name.
pub fn container_status<'a>(
    p: &'a Pod,
    name: &str,
) -> Option<&'a k8s_openapi::api::core::v1::ContainerStatus> {
    let s = p.status.as_ref()?;
    s.init_container_statuses
        .iter()
        .flatten()
        .chain(s.container_statuses.iter().flatten())
        .find(|c| c.name == name)
}

/// When the container's current run started, from the pod's status.
pub fn running_since(p: &Pod, name: &str) -> Option<i64> {
    let st = container_status(p, name)?.state.as_ref()?;
    st.running
        .as_ref()
        .and_then(|r| r.started_at.as_ref())
        .or_else(|| st.terminated.as_ref().and_then(|t| t.started_at.as_ref()))
        .map(|t| t.0.as_second())
}

/// One line per container: state, times, restarts.
pub fn describe_containers(p: &Pod) -> String {
    let mut out = String::new();
    let meta = &p.metadata;
    let _ = writeln!(
        out,
        "pod {} uid={} phase={} ready={:?} deletionTimestamp={:?}",
        meta.name.as_deref().unwrap_or("?"),
        uid(meta),
        phase(p),
        condition(p, "Ready"),
        meta.deletion_timestamp.as_ref().map(|t| t.0.to_string()),
    );
    let Some(s) = p.status.as_ref() else {
        return out;
    };
    let all = s
        .init_container_statuses
        .iter()
        .flatten()
        .map(|c| ("init", c))
        .chain(s.container_statuses.iter().flatten().map(|c| ("app", c)));
    for (kind, c) in all {
        let state = |st: Option<&k8s_openapi::api::core::v1::ContainerState>| -> String {
            let Some(st) = st else { return "-".into() };
            if let Some(r) = &st.running {
                format!(
                    "Running(startedAt={:?})",
                    r.started_at.as_ref().map(|t| t.0.to_string())
                )
            } else if let Some(t) = &st.terminated {
                format!(
                    "Terminated(startedAt={:?} finishedAt={:?} exitCode={} reason={:?})",
                    t.started_at.as_ref().map(|t| t.0.to_string()),
                    t.finished_at.as_ref().map(|t| t.0.to_string()),
                    t.exit_code,
                    t.reason
                )
            } else if let Some(w) = &st.waiting {
                format!("Waiting(reason={:?})", w.reason)
            } else {
                "-".into()
            }
        };
        let _ = writeln!(
            out,
            "  {kind:4} {:16} ready={} started={:?} restarts={} state={} lastState={}",
            c.name,
            c.ready,
            c.started,
            c.restart_count,
            state(c.state.as_ref()),
            state(c.last_state.as_ref()),
        );
    }
    out
}

// ---------------------------------------------------------------- the test context

#[derive(Clone)]
pub struct Ctx {
    pub client: Client,
    pub ns: String,
    pub test: String,
}

impl Ctx {
    pub fn pods(&self) -> Api<Pod> {
        Api::namespaced(self.client.clone(), &self.ns)
    }

    pub fn reports(&self) -> Api<SidecarOrderReport> {
        Api::namespaced(self.client.clone(), &self.ns)
    }

    pub fn api<K>(&self) -> Api<K>
    where
        K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope>,
        <K as kube::Resource>::DynamicType: Default,
    {
        Api::namespaced(self.client.clone(), &self.ns)
    }

    /// Creates a pod from YAML (its namespace set to the test's).
    pub async fn create_pod(&self, yaml: &str) -> R<Pod> {
        let mut pod: Pod = serde_saphyr::from_str(yaml).ctx("parsing the pod YAML")?;
        pod.metadata.namespace = Some(self.ns.clone());
        let name = pod.metadata.name.clone().unwrap_or_default();
        self.pods()
            .create(&PostParams::default(), &pod)
            .await
            .ctx(format!("creating pod {name}"))
    }

    pub async fn wait_pod(
        &self,
        name: &str,
        limit: Duration,
        what: &str,
        pred: impl Fn(&Pod) -> bool,
    ) -> R<Pod> {
        let api = self.pods();
        let (api, pred) = (&api, &pred);
        poll(&format!("pod {name}: {what}"), limit, || async move {
            let p = api.get_opt(name).await.ctx(format!("getting pod {name}"))?;
            match p {
                Some(p) if pred(&p) => Ok(Some(p)),
                Some(p) => Err(format!("not yet; now:\n{}", describe_containers(&p))),
                None => Err(format!("pod {name} does not exist")),
            }
        })
        .await
    }

    pub async fn wait_ready(&self, name: &str) -> R<Pod> {
        self.wait_pod(name, secs(120), "Running and Ready", |p| {
            phase(p) == "Running" && is_ready(p)
        })
        .await
    }

    pub async fn wait_pod_gone(&self, name: &str, limit: Duration) -> R<()> {
        let api = self.pods();
        let api = &api;
        poll(&format!("pod {name} to be gone"), limit, || async move {
            match api.get_opt(name).await.ctx("getting pod")? {
                None => Ok(Some(())),
                Some(p) => Err(format!("still there:\n{}", describe_containers(&p))),
            }
        })
        .await
    }

    /// Deletes a pod (its own grace period) without waiting.
    pub async fn delete_pod(&self, name: &str) -> R<()> {
        self.pods()
            .delete(name, &DeleteParams::default())
            .await
            .ctx(format!("deleting pod {name}"))?;
        Ok(())
    }

    /// The report whose spec.podUid is `pod_uid`, if any.
    pub async fn report_of(&self, pod_uid: &str) -> R<Option<SidecarOrderReport>> {
        let list = self
            .reports()
            .list(&ListParams::default())
            .await
            .ctx("listing SidecarOrderReports")?;
        Ok(list.items.into_iter().find(|r| r.spec.pod_uid == pod_uid))
    }

    /// Waits until the pod's report has a status for which `pred` holds.
    pub async fn wait_report(
        &self,
        pod_uid: &str,
        limit: Duration,
        what: &str,
        pred: impl Fn(&ReportStatus) -> bool,
    ) -> R<(SidecarOrderReport, ReportStatus)> {
        let pred = &pred;
        poll(
            &format!("the report of pod uid {pod_uid}: {what}"),
            limit,
            || async move {
                match self.report_of(pod_uid).await? {
                    Some(r) => match r.status.clone() {
                        Some(s) if pred(&s) => Ok(Some((r, s))),
                        Some(s) => Err(format!("not yet; now:\n{}", status_summary(&s))),
                        None => Err("the report has no status yet".into()),
                    },
                    None => Err("no report yet".into()),
                }
            },
        )
        .await
    }

    /// Creates the pod, waits until it is Ready and its startup is judged,
    /// which must be Verified; returns its name, uid and that status.
    pub async fn start_verified(&self, yaml: &str) -> R<(String, String, ReportStatus)> {
        let pod = self.create_pod(yaml).await?;
        let name = pod.metadata.name.clone().unwrap_or_default();
        let pod_uid = uid(&pod.metadata);
        self.wait_ready(&name).await?;
        let s = self.wait_startup_judged(&pod_uid).await?;
        ensure!(
            s.report.startup == Verdict::Verified,
            "startup is {:?}, want Verified:\n{}",
            s.report.startup,
            status_summary(&s)
        );
        Ok((name, pod_uid, s))
    }

    /// Waits for the first verdict of each phase to be decided (not Pending).
    pub async fn wait_startup_judged(&self, pod_uid: &str) -> R<ReportStatus> {
        Ok(self
            .wait_report(pod_uid, secs(90), "startup judged", |s| {
                s.report.startup != Verdict::Pending
            })
            .await?
            .1)
    }

    pub async fn wait_shutdown_judged(&self, pod_uid: &str) -> R<ReportStatus> {
        Ok(self
            .wait_report(pod_uid, secs(120), "shutdown judged", |s| {
                s.report.shutdown != Verdict::Pending
            })
            .await?
            .1)
    }

    /// Core Events on the pod with this uid.
    pub async fn events_of(&self, pod_uid: &str) -> R<Vec<Event>> {
        let api: Api<Event> = self.api();
        let lp = ListParams::default().fields(&format!("involvedObject.uid={pod_uid}"));
        Ok(api.list(&lp).await.ctx("listing events")?.items)
    }
}

/// A compact view of a report status (for progress and failure messages).
pub fn status_summary(s: &ReportStatus) -> String {
    let r = &s.report;
    let mut out = format!(
        "startup={:?} shutdown={:?} sidecars={} evidence={:?} violations={} probeFailures={} restarts={} podEndedAt={:?}\n",
        r.startup,
        r.shutdown,
        r.sidecars,
        r.evidence,
        s.violation_count,
        s.probe_failure_count,
        s.sidecar_restarts,
        s.pod_ended_at
    );
    for v in &r.violations {
        let _ = writeln!(
            out,
            "  violation {:?} {:?} {:?}: {}",
            v.rule.id(),
            v.severity,
            v.containers,
            v.message
        );
    }
    for c in &r.containers {
        let _ = writeln!(
            out,
            "  {:?} {} state={} restarts={} started={:?} finished={:?} exit={:?}",
            c.role, c.name, c.state, c.restarts, c.first_started_at, c.finished_at, c.exit_code
        );
    }
    out
}

pub fn yaml<T: serde::Serialize>(v: &T) -> String {
    serde_saphyr::to_string(v).unwrap_or_else(|e| format!("(cannot render: {e})"))
}

pub fn error_violations(s: &ReportStatus) -> Vec<String> {
    s.report
        .violations
        .iter()
        .filter(|v| v.severity == Severity::Error)
        .map(|v| format!("{}: {}", v.rule.id(), v.message))
        .collect()
}

/// One of a report's time fields of a container, as unix seconds.
fn container_time(
    s: &ReportStatus,
    container: &str,
    field: &str,
    get: impl Fn(&ContainerReport) -> Option<&str>,
) -> R<i64> {
    let c = s
        .report
        .containers
        .iter()
        .find(|c| c.name == container)
        .ok_or_else(|| format!("container {container} is not in the report"))?;
    ts(get(c).ok_or_else(|| format!("container {container} has no {field} in the report"))?)
}

pub fn finished_at(s: &ReportStatus, container: &str) -> R<i64> {
    container_time(s, container, "finishedAt", |c| c.finished_at.as_deref())
}

pub fn started_at(s: &ReportStatus, container: &str) -> R<i64> {
    container_time(s, container, "firstStartedAt", |c| {
        c.first_started_at.as_deref()
    })
}

// ---------------------------------------------------------------- running a test

fn unique_suffix() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos() ^ (d.as_secs() as u32).rotate_left(7))
        .unwrap_or(0);
    format!(
        "{:06x}",
        (nanos ^ std::process::id().rotate_left(13)) & 0xff_ffff
    )
}

pub async fn client() -> Client {
    Client::try_default()
        .await
        .expect("a Kubernetes client from $KUBECONFIG (is the cluster up? export KUBECONFIG=/tmp/sidecar-order-cluster/kubeconfig)")
}

/// Creates a namespace for the test (labelled, so leftovers can be found).
pub async fn create_namespace(client: &Client, prefix: &str) -> String {
    let ns = format!("e2e-{prefix}-{}", unique_suffix());
    let api: Api<Namespace> = Api::all(client.clone());
    let obj = Namespace {
        metadata: ObjectMeta {
            name: Some(ns.clone()),
            labels: Some(BTreeMap::from([(
                "sidecar-order.dev/e2e".to_string(),
                "true".to_string(),
            )])),
            ..Default::default()
        },
        ..Default::default()
    };
    api.create(&PostParams::default(), &obj)
        .await
        .unwrap_or_else(|e| panic!("creating namespace {ns}: {e}"));
    ns
}

/// Drops finalizers the tests set and deletes the namespace (not waiting).
pub async fn delete_namespace(client: &Client, ns: &str) {
    if std::env::var("E2E_KEEP_NAMESPACES").is_ok_and(|v| v == "1") {
        eprintln!("keeping namespace {ns} (E2E_KEEP_NAMESPACES=1)");
        return;
    }
    let pods: Api<Pod> = Api::namespaced(client.clone(), ns);
    if let Ok(list) = pods.list(&ListParams::default()).await {
        for p in list.items {
            if p.metadata
                .finalizers
                .as_ref()
                .is_some_and(|f| !f.is_empty())
            {
                let name = p.metadata.name.unwrap_or_default();
                let patch = serde_json::json!({"metadata": {"finalizers": null}});
                let _ = pods
                    .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
                    .await;
            }
        }
    }
    let api: Api<Namespace> = Api::all(client.clone());
    let _ = api.delete(ns, &DeleteParams::background()).await;
}

/// What a person needs when a test fails: the reports, the pods' container
/// statuses, the events, and the controller's log.
pub async fn diagnostics(client: &Client, namespaces: &[String]) -> String {
    let mut out = String::new();
    for ns in namespaces {
        let _ = writeln!(out, "\n----- kubectl -n {ns} get sor");
        out.push_str(&kubectl_or_error(&["-n", ns, "get", "sor"]));
        let _ = writeln!(out, "\n----- reports in {ns} (YAML)");
        out.push_str(&kubectl_or_error(&["-n", ns, "get", "sor", "-o", "yaml"]));
        let _ = writeln!(out, "\n----- pods in {ns}: container statuses");
        let pods: Api<Pod> = Api::namespaced(client.clone(), ns);
        match pods.list(&ListParams::default()).await {
            Ok(l) if l.items.is_empty() => out.push_str("(no pods left)\n"),
            Ok(l) => l
                .items
                .iter()
                .for_each(|p| out.push_str(&describe_containers(p))),
            Err(e) => {
                let _ = writeln!(out, "(listing pods: {e})");
            }
        }
        let _ = writeln!(out, "\n----- events in {ns}");
        out.push_str(&kubectl_or_error(&[
            "-n",
            ns,
            "get",
            "events",
            "--sort-by=.lastTimestamp",
            "-o",
            "custom-columns=LAST:.lastTimestamp,TYPE:.type,REASON:.reason,OBJECT:.involvedObject.name,UID:.involvedObject.uid,FIELD:.involvedObject.fieldPath,COUNT:.count,MESSAGE:.message",
        ]));
    }
    let _ = writeln!(out, "\n----- controller pods");
    out.push_str(&kubectl_or_error(&[
        "-n",
        CONTROLLER_NS,
        "get",
        "pods",
        "-o",
        "wide",
    ]));
    let _ = writeln!(
        out,
        "\n----- kubectl -n {CONTROLLER_NS} logs deploy/sidecar-order-controller --tail=50"
    );
    out.push_str(&kubectl_or_error(&[
        "-n",
        CONTROLLER_NS,
        "logs",
        "deploy/sidecar-order-controller",
        "--tail=50",
    ]));
    out
}

/// Runs one test in a namespace of its own: creates it, runs `body` (panics
/// included) within `TEST_LIMIT`, prints the diagnostics on failure, deletes
/// the namespace, and fails the test with the error.
pub async fn run<F, Fut>(prefix: &str, body: F)
where
    F: FnOnce(Ctx) -> Fut + Send + 'static,
    Fut: Future<Output = R<()>> + Send + 'static,
{
    let client = client().await;
    let ns = create_namespace(&client, prefix).await;
    let ctx = Ctx {
        client: client.clone(),
        ns: ns.clone(),
        test: prefix.to_string(),
    };
    let started = Instant::now();
    eprintln!("[{prefix}] namespace {ns}");
    let task = tokio::spawn(async move {
        match tokio::time::timeout(TEST_LIMIT, body(ctx)).await {
            Ok(r) => r,
            Err(_) => Err(format!("the test did not finish within {TEST_LIMIT:?}")),
        }
    });
    let result = match task.await {
        Ok(r) => r,
        Err(e) if e.is_panic() => {
            let p = e.into_panic();
            let msg = p
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_else(|| "(non-string panic)".into());
            Err(format!("panicked: {msg}"))
        }
        Err(e) => Err(format!("the test task failed: {e}")),
    };
    let extra: Vec<String> = std::mem::take(&mut *EXTRA_NAMESPACES.lock().unwrap())
        .into_iter()
        .filter(|(owner, _)| owner == &ns)
        .map(|(_, n)| n)
        .collect();
    match result {
        Ok(()) => {
            eprintln!(
                "[{prefix}] passed in {:.1}s",
                started.elapsed().as_secs_f64()
            );
            delete_namespace(&client, &ns).await;
            for n in &extra {
                delete_namespace(&client, n).await;
            }
        }
        Err(e) => {
            let mut all = vec![ns.clone()];
            all.extend(extra.iter().cloned());
            let diag = diagnostics(&client, &all).await;
            eprintln!(
                "\n===== [{prefix}] FAILED after {:.1}s: {e}\n{diag}\n===== end of [{prefix}]\n",
                started.elapsed().as_secs_f64()
            );
            delete_namespace(&client, &ns).await;
            for n in &extra {
                delete_namespace(&client, n).await;
            }
            panic!("[{prefix}] {e}");
        }
    }
}

/// Namespaces a test created besides its own: (owner namespace, extra).
static EXTRA_NAMESPACES: std::sync::Mutex<Vec<(String, String)>> =
    std::sync::Mutex::new(Vec::new());

impl Ctx {
    /// Another namespace for this test, deleted (and diagnosed) with its own.
    pub async fn extra_namespace(&self, prefix: &str) -> String {
        let ns = create_namespace(&self.client, prefix).await;
        EXTRA_NAMESPACES
            .lock()
            .unwrap()
            .push((self.ns.clone(), ns.clone()));
        ns
    }

    pub fn in_ns(&self, ns: &str) -> Ctx {
        Ctx {
            client: self.client.clone(),
            ns: ns.to_string(),
            test: self.test.clone(),
        }
    }
}

// ---------------------------------------------------------------- the controller and its metrics

/// The controller pod that serves now: Ready, not being deleted (the newest
/// if there are several).
pub async fn controller_pod(client: &Client) -> R<Pod> {
    let api: Api<Pod> = Api::namespaced(client.clone(), CONTROLLER_NS);
    let list = api
        .list(&ListParams::default().labels(CONTROLLER_SELECTOR))
        .await
        .ctx("listing controller pods")?;
    let mut ready: Vec<Pod> = list
        .items
        .into_iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none() && is_ready(p))
        .collect();
    ready.sort_by_key(|p| p.metadata.creation_timestamp.as_ref().map(|t| t.0));
    ready
        .pop()
        .ok_or_else(|| "no Ready controller pod in sidecar-order-system".to_string())
}

pub fn pod_ip(p: &Pod) -> R<String> {
    p.status
        .as_ref()
        .and_then(|s| s.pod_ip.clone())
        .ok_or_else(|| "the pod has no IP".to_string())
}

/// A plain HTTP/1.0 GET (no TLS): the body of a 200 response.
pub async fn http_get(host_port: &str, path: &str) -> R<String> {
    let fut = async {
        let mut s = tokio::net::TcpStream::connect(host_port)
            .await
            .ctx(format!("connecting to {host_port}"))?;
        let req = format!("GET {path} HTTP/1.0\r\nHost: {host_port}\r\nConnection: close\r\n\r\n");
        s.write_all(req.as_bytes())
            .await
            .ctx("writing the request")?;
        let mut buf = Vec::new();
        s.read_to_end(&mut buf).await.ctx("reading the response")?;
        let text = String::from_utf8_lossy(&buf).into_owned();
        let (head, body) = text
            .split_once("\r\n\r\n")
            .ok_or_else(|| format!("malformed HTTP response from {host_port}{path}"))?;
        let status = head.lines().next().unwrap_or("");
        if !status.contains(" 200") {
            return Err(format!("GET http://{host_port}{path}: {status}: {body}"));
        }
        if head
            .to_ascii_lowercase()
            .contains("transfer-encoding: chunked")
        {
            return Err(format!(
                "GET http://{host_port}{path}: unexpected chunked response"
            ));
        }
        Ok(body.to_string())
    };
    tokio::time::timeout(secs(10), fut)
        .await
        .map_err(|_| format!("GET http://{host_port}{path} timed out"))?
}

#[derive(Clone, Debug)]
pub struct Sample {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub value: f64,
}

/// Parses the Prometheus text exposition format (what /metrics serves).
pub fn parse_metrics(text: &str) -> Vec<Sample> {
    let mut out = Vec::new();
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (name, rest) = match line.find(['{', ' ']) {
            Some(i) => (&line[..i], &line[i..]),
            None => continue,
        };
        let mut labels = BTreeMap::new();
        let mut rest = rest;
        if let Some(r) = rest.strip_prefix('{') {
            let mut chars = r.char_indices().peekable();
            let mut key = String::new();
            let mut end = r.len();
            while let Some((i, c)) = chars.next() {
                match c {
                    '}' => {
                        end = i + 1;
                        break;
                    }
                    ',' | ' ' => {}
                    '=' => {
                        // A quoted value with \" \\ \n escapes.
                        let _ = chars.next(); // the opening quote
                        let mut val = String::new();
                        while let Some((_, c)) = chars.next() {
                            match c {
                                '\\' => match chars.next().map(|x| x.1) {
                                    Some('n') => val.push('\n'),
                                    Some(x) => val.push(x),
                                    None => {}
                                },
                                '"' => break,
                                c => val.push(c),
                            }
                        }
                        labels.insert(std::mem::take(&mut key), val);
                    }
                    c => key.push(c),
                }
            }
            rest = &r[end..];
        }
        let value = rest.split_whitespace().next().unwrap_or("");
        let value = match value {
            "+Inf" => f64::INFINITY,
            "-Inf" => f64::NEG_INFINITY,
            v => v.parse().unwrap_or(f64::NAN),
        };
        out.push(Sample {
            name: name.to_string(),
            labels,
            value,
        });
    }
    out
}

/// The sum of the samples of `name` whose labels include all of `want`.
pub fn metric_sum(samples: &[Sample], name: &str, want: &[(&str, &str)]) -> f64 {
    samples
        .iter()
        .filter(|s| s.name == name)
        .filter(|s| {
            want.iter()
                .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
        })
        .map(|s| s.value)
        .sum::<f64>()
        + 0.0 // an empty sum is -0.0
}

/// The samples of `name` whose labels include all of `want`, as text.
pub fn metric_lines(samples: &[Sample], name: &str, want: &[(&str, &str)]) -> String {
    samples
        .iter()
        .filter(|s| s.name == name)
        .filter(|s| {
            want.iter()
                .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
        })
        .map(|s| format!("{}{:?} {}\n", s.name, s.labels, s.value))
        .collect()
}

/// Scrapes the serving controller pod's /metrics from the host (pod IP:8080).
pub async fn scrape(client: &Client) -> R<(String, Vec<Sample>)> {
    let pod = controller_pod(client).await?;
    let name = pod.metadata.name.clone().unwrap_or_default();
    let ip = pod_ip(&pod)?;
    let text = http_get(&format!("{ip}:8080"), "/metrics").await?;
    Ok((name, parse_metrics(&text)))
}

/// Scrapes a given controller pod (by IP), e.g. one about to be deleted.
pub async fn scrape_pod(pod: &Pod) -> R<Vec<Sample>> {
    let ip = pod_ip(pod)?;
    Ok(parse_metrics(
        &http_get(&format!("{ip}:8080"), "/metrics").await?,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_exposition_lines() {
        let s = parse_metrics(
            "# HELP x y\nsidecar_order_probe_failures_total{container=\"sidecar\",namespace=\"a\",probe=\"liveness\"} 3\nsidecar_order_leader 1\n",
        );
        assert_eq!(s.len(), 2);
        assert_eq!(
            metric_sum(
                &s,
                "sidecar_order_probe_failures_total",
                &[("probe", "liveness")]
            ),
            3.0
        );
        assert_eq!(s[1].value, 1.0);
    }
}
