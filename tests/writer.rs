//! The report writer against a mocked API server (tower-test): each request
//! is checked in order (method, path, field manager, body).

use http::{Request, Response};
use kube::Client;
use kube::client::Body;
use serde_json::{Value, json};
use sidecar_order::controller::ledger::{Ledger, status_hash};
use sidecar_order::controller::metrics::{Metrics, WRITE_RESULTS};
use sidecar_order::controller::store::{Update, Workload};
use sidecar_order::controller::writer::{
    self, Call, Msg, Outgoing, ReportWriter, Work, WriteError, WriterConfig,
};
use sidecar_order::crd::{ReportSpec, ReportStatus};
use sidecar_order::report::{Evidence, Report, Rule, Severity, Verdict, Violation};
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, watch};

type Handle = tower_test::mock::Handle<Request<Body>, Response<Body>>;
type Reply = tower_test::mock::SendResponse<Response<Body>>;

fn update(shutdown: Verdict, violations: Vec<Violation>) -> Update {
    named("web-1b2c3d4e", shutdown, violations)
}

fn named(report_name: &str, shutdown: Verdict, violations: Vec<Violation>) -> Update {
    let report = Report {
        startup: Verdict::Verified,
        shutdown,
        sidecars: 1,
        evidence: Evidence::Complete,
        gaps: vec![],
        violations,
        probe_failures: vec![],
        containers: vec![],
        checks: vec![],
    };
    Update {
        namespace: "shop".into(),
        report_name: report_name.into(),
        pod_name: "web".into(),
        pod_uid: "1b2c3d4e-0000".into(),
        workload: Workload {
            kind: "Deployment".into(),
            name: "web".into(),
        },
        spec: ReportSpec {
            pod_name: "web".into(),
            pod_uid: "1b2c3d4e-0000".into(),
            workload: Some("Deployment/web".into()),
        },
        status: ReportStatus::new(report, None),
    }
}

/// The last write of a report: its pod ended.
fn ended(shutdown: Verdict) -> Update {
    let mut u = update(shutdown, vec![]);
    u.status.pod_ended_at = Some("2025-01-01T00:00:00Z".into());
    u
}

fn violation() -> Violation {
    Violation {
        rule: Rule::SidecarStoppedBeforeApp,
        severity: Severity::Error,
        containers: vec!["app".into(), "proxy".into()],
        message: "sidecar proxy terminated before app container app".into(),
        evidence: vec!["decided by whole seconds".into()],
    }
}

fn apply(u: Update) -> Work {
    Work::Apply(Outgoing {
        update: u,
        seen_at: Instant::now(),
        urgent: true,
    })
}

/// Takes the next request after checking its method and path; returns its
/// JSON body and the means to answer it.
async fn next(handle: &mut Handle, method: &str, path: &str) -> (Value, Reply) {
    let (body, send, _) = next_with_uri(handle, method, path).await;
    (body, send)
}

/// The next request, checked: its JSON body, the reply to send, its URI.
async fn next_with_uri(handle: &mut Handle, method: &str, path: &str) -> (Value, Reply, String) {
    let (req, send) = tokio::time::timeout(Duration::from_secs(5), handle.next_request())
        .await
        .unwrap_or_else(|_| panic!("no request; expected {method} {path}"))
        .expect("service not called");
    let uri = req.uri().to_string();
    assert_eq!(req.method().as_str(), method, "{uri}");
    assert!(uri.starts_with(path), "{uri} is not {path}");
    let content_type = req
        .headers()
        .get(http::header::CONTENT_TYPE)
        .map(|v| v.to_str().unwrap().to_string());
    let report_write = uri.contains("/sidecarorderreports");
    if report_write && matches!(method, "PATCH" | "POST") {
        assert!(uri.contains("fieldManager=sidecar-order"), "{uri}");
    }
    let bytes = req.into_body().collect_bytes().await.unwrap();
    let mut body: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    if report_write && method == "PATCH" {
        assert_eq!(
            content_type.as_deref(),
            Some("application/json-patch+json"),
            "{uri}"
        );
        body = patched(&body);
    }
    (body, send, uri)
}

/// A report write's JSON patch, read as the object it makes: the spec and
/// the status it adds (replacing them whole), and the resourceVersion it
/// must go over under `metadata`. Any other operation fails the test.
fn patched(ops: &Value) -> Value {
    let mut obj = json!({"metadata": {}});
    for op in ops.as_array().expect("a JSON patch") {
        match (op["op"].as_str(), op["path"].as_str()) {
            (Some("replace"), Some("/metadata/resourceVersion")) => {
                obj["metadata"]["resourceVersion"] = op["value"].clone();
            }
            (Some("add"), Some("/spec")) => obj["spec"] = op["value"].clone(),
            (Some("add"), Some("/status")) => obj["status"] = op["value"].clone(),
            other => panic!("unexpected operation {other:?} in {ops}"),
        }
    }
    assert!(
        obj.get("spec").is_some() && obj.get("status").is_some(),
        "{ops}"
    );
    obj
}

/// The object echoed back, as the API server does.
fn echo(body: &Value) -> Response<Body> {
    let mut reply = body.clone();
    if reply.get("metadata").is_none() {
        reply["metadata"] = json!({"name": "x", "namespace": "shop"});
    }
    if reply.get("status").is_some() && reply.get("spec").is_none() {
        reply["spec"] = json!({"podName": "web", "podUid": "1b2c3d4e-0000"});
    }
    Response::builder()
        .body(Body::from(serde_json::to_vec(&reply).unwrap()))
        .unwrap()
}

/// Answers the next request after checking it; returns its JSON body.
async fn expect(handle: &mut Handle, method: &str, path: &str) -> Value {
    let (body, send) = next(handle, method, path).await;
    send.send_response(echo(&body));
    body
}

/// Answers the next request with an error status.
async fn refuse(handle: &mut Handle, method: &str, path: &str, code: u16) {
    let (_, send) = next(handle, method, path).await;
    send.send_response(status_reply(code, "Refused"));
}

/// A `Status` error reply, as the API server sends it.
fn status_reply(code: u16, reason: &str) -> Response<Body> {
    let body = json!({"kind": "Status", "apiVersion": "v1", "status": "Failure",
        "message": reason, "reason": reason, "code": code});
    Response::builder()
        .status(code)
        .body(Body::from(serde_json::to_vec(&body).unwrap()))
        .unwrap()
}

/// Asserts that no request comes within `wait`.
async fn quiet(handle: &mut Handle, wait: Duration) {
    if let Ok(Some((req, _))) = tokio::time::timeout(wait, handle.next_request()).await {
        panic!("unexpected {} {}", req.method(), req.uri());
    }
}

const REPORT: &str =
    "/apis/sidecar-order.dev/v1alpha1/namespaces/shop/sidecarorderreports/web-1b2c3d4e";
const EVENTS: &str = "/apis/events.k8s.io/v1/namespaces/shop/events";

const REPORTS: &str = "/apis/sidecar-order.dev/v1alpha1/namespaces/shop/sidecarorderreports";

/// Where a new report is created (POST, with its status).
fn create_path() -> String {
    format!("{REPORTS}?")
}

/// Where a stored report is written (a JSON patch).
fn write_path() -> String {
    format!("{REPORT}?")
}

#[tokio::test]
async fn creates_a_report_with_its_status_then_patches_it_and_records_pod_events() {
    let (svc, mut handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    let client = Client::new(svc, "default");
    let w = ReportWriter::new(client, Metrics::new(), Some("test".into()));
    let server = tokio::spawn(async move {
        // One call: the report and its status.
        let st = expect(&mut handle, "POST", &create_path()).await;
        assert_eq!(st["kind"], "SidecarOrderReport");
        assert_eq!(st["metadata"]["name"], "web-1b2c3d4e");
        assert_eq!(
            st["metadata"]["labels"]["app.kubernetes.io/managed-by"],
            "sidecar-order"
        );
        assert_eq!(st["spec"]["podName"], "web");
        assert_eq!(st["status"]["shutdown"], "Violated");
        assert_eq!(st["status"]["violationCount"], 1);
        let ev = expect(&mut handle, "POST", EVENTS).await;
        assert_eq!(ev["reason"], "SidecarOrderViolation");
        assert_eq!(ev["type"], "Warning");
        assert_eq!(ev["regarding"]["name"], "web");
        assert!(
            ev["note"]
                .as_str()
                .unwrap()
                .starts_with("sidecar-stopped-before-app: ")
        );
        // The second write of the same report: a patch of it.
        let st = expect(&mut handle, "PATCH", &write_path()).await;
        assert_eq!(st["status"]["shutdown"], "Verified");
        assert_eq!(st["spec"]["podName"], "web");
        handle
    });
    let u = update(Verdict::Violated, vec![violation()]);
    let inc = w
        .apply_report(&u, status_hash(&u.spec, &u.status), false)
        .await
        .unwrap()
        .expect("written");
    w.record_violations(&u, &inc.violations).await.unwrap();
    // The same violation again: stored already, so not announced again.
    let u2 = update(Verdict::Verified, vec![violation()]);
    let inc = w
        .apply_report(&u2, status_hash(&u2.spec, &u2.status), false)
        .await
        .unwrap()
        .expect("written");
    assert!(inc.violations.is_empty(), "{inc:?}");
    w.record_violations(&u2, &inc.violations).await.unwrap();
    let mut handle = server.await.unwrap();
    // Nothing else was sent.
    quiet(&mut handle, Duration::from_millis(100)).await;
}

/// The writer task on a mocked API server: its input channel, the lease
/// flag, its metrics and the task, plus the mock's handle.
struct Running {
    tx: mpsc::Sender<Msg>,
    lead_tx: watch::Sender<bool>,
    metrics: Metrics,
    task: tokio::task::JoinHandle<()>,
    handle: Handle,
}

impl Running {
    async fn send(&self, work: Work) {
        self.tx.send(Msg::Work(work)).await.unwrap();
    }

    /// `sidecar_order_violations_total` of `violation()` on `update()`'s pod.
    fn violations_counted(&self) -> u64 {
        self.metrics
            .violations
            .with_label_values(&[
                "shop",
                "sidecar-stopped-before-app",
                "Error",
                "Deployment",
                "web",
                "unknown",
            ])
            .get()
    }

    fn count(&self, result: &str) -> u64 {
        self.metrics
            .report_writes
            .with_label_values(&[result])
            .get()
    }

    /// Waits (at most 5 s) for the counts of the results to reach `want`:
    /// the writer counts once it has read the last answer.
    async fn counted(&self, want: &[(&str, u64)]) {
        let got = || {
            want.iter()
                .map(|(r, _)| (*r, self.count(r)))
                .collect::<Vec<_>>()
        };
        for _ in 0..500 {
            if got() == want {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(got(), want);
    }
}

fn start_writer(leader: bool) -> Running {
    start_with(leader, WriterConfig::default(), 8)
}

fn start_with(leader: bool, cfg: WriterConfig, capacity: usize) -> Running {
    let (svc, handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    let client = Client::new(svc, "default");
    let metrics = Metrics::new();
    let w = ReportWriter::new(client, metrics.clone(), None);
    let (tx, rx) = mpsc::channel(capacity);
    let (lead_tx, lead_rx) = watch::channel(leader);
    let task = tokio::spawn(writer::run(w, rx, lead_rx, cfg));
    Running {
        tx,
        lead_tx,
        metrics,
        task,
        handle,
    }
}

/// Closes the writer's channel and waits for the task to end.
async fn stop(r: Running) {
    drop(r.tx);
    tokio::time::timeout(Duration::from_secs(10), r.task)
        .await
        .expect("the writer did not stop")
        .unwrap();
}

#[tokio::test]
async fn only_the_leader_writes_and_pending_writes_are_flushed() {
    let Running {
        tx,
        lead_tx,
        metrics,
        task,
        mut handle,
    } = start_writer(false);
    // Two updates of one report while not leader: nothing is written, and
    // nothing kept (a standby keeps no queue)...
    for v in [Verdict::Pending, Verdict::Verified] {
        let o = Outgoing {
            update: update(v, vec![]),
            seen_at: Instant::now(),
            urgent: true,
        };
        tx.send(Msg::Work(Work::Apply(o))).await.unwrap();
    }
    quiet(&mut handle, Duration::from_millis(300)).await;
    lead_tx.send(true).unwrap();
    quiet(&mut handle, Duration::from_millis(300)).await;
    // ...the takeover brings the index's reports: the stored ones are read
    // (none here), then what differs is written.
    takeover(&tx, vec![update(Verdict::Verified, vec![])], &[]).await;
    let st = expect(&mut handle, "POST", &create_path()).await;
    assert_eq!(st["status"]["shutdown"], "Verified");
    // Closing the channel (SIGTERM) flushes what is pending, then the task ends.
    tx.send(Msg::Work(apply(update(Verdict::Violated, vec![]))))
        .await
        .unwrap();
    drop(tx);
    let st = expect(&mut handle, "PATCH", &write_path()).await;
    assert_eq!(st["status"]["shutdown"], "Violated");
    tokio::time::timeout(Duration::from_secs(5), task)
        .await
        .unwrap()
        .unwrap();
    let text = metrics.render();
    assert!(text.contains("sidecar_order_report_writes_total{result=\"written\"} 2"));
    assert!(text.contains("sidecar_order_report_latency_seconds_count 2"));
}

/// On SIGTERM the pending writes get until the flush timeout; an API server
/// that refuses them all must not keep the controller (and its lease)
/// alive. A create refused with a 5xx may have landed all the same: it is
/// read back, for at most the flush timeout again, then left uncounted.
#[tokio::test(start_paused = true)]
async fn a_failing_flush_gives_up_at_the_flush_timeout() {
    let cfg = WriterConfig {
        flush_timeout: Duration::from_secs(2),
        ..WriterConfig::default()
    };
    let Running {
        tx,
        lead_tx: _lead_tx,
        metrics,
        task,
        mut handle,
    } = start_with(true, cfg, 8);
    tx.send(Msg::Work(apply(update(Verdict::Verified, vec![]))))
        .await
        .unwrap();
    drop(tx);
    // Refuses every request until the writer (and its client) is gone.
    let answerer = tokio::spawn(async move {
        let (mut creates, mut reads) = (0, 0);
        while let Some((req, send)) = handle.next_request().await {
            match req.method().as_str() {
                "POST" => creates += 1,
                "GET" => reads += 1,
                other => panic!("unexpected {other} {}", req.uri()),
            }
            send.send_response(status_reply(500, "InternalError"));
        }
        (creates, reads)
    });
    let start = tokio::time::Instant::now();
    tokio::time::timeout(Duration::from_secs(20), task)
        .await
        .expect("the writer kept retrying")
        .unwrap();
    assert!(start.elapsed() <= Duration::from_millis(4100));
    let (creates, reads) = answerer.await.unwrap();
    // 200 ms, 400 ms, 800 ms of backoff fit in 2 s: four tries.
    assert!(creates >= 3, "only {creates} tries");
    assert!(reads >= 1, "the creates were not read back");
    let failed = metrics
        .report_writes
        .with_label_values(&["server_error"])
        .get();
    assert_eq!(failed, creates);
    let unknown = metrics
        .report_writes
        .with_label_values(&["unanswered_unknown"])
        .get();
    assert_eq!(unknown, 1, "one report's creates, none known landed");
}

/// Two more updates of a report while its write is in flight: one more
/// write, with the newest status, after the first one ends.
#[tokio::test]
async fn updates_during_a_write_are_coalesced_into_one_more_write() {
    let mut r = start_writer(true);
    r.send(apply(update(Verdict::Pending, vec![]))).await;
    let (first, reply) = next(&mut r.handle, "POST", &create_path()).await;
    assert_eq!(first["status"]["shutdown"], "Pending");
    r.send(apply(update(Verdict::Verified, vec![]))).await;
    r.send(apply(update(Verdict::Violated, vec![]))).await;
    // Not written concurrently.
    quiet(&mut r.handle, Duration::from_millis(100)).await;
    reply.send_response(echo(&first));
    let st = expect(&mut r.handle, "PATCH", &write_path()).await;
    assert_eq!(st["status"]["shutdown"], "Violated");
    quiet(&mut r.handle, Duration::from_millis(300)).await;
    r.counted(&[("written", 2)]).await;
    stop(r).await;
}

/// A report deleted behind the writer's back is created again.
#[tokio::test]
async fn a_report_deleted_behind_our_back_is_created_again() {
    let mut r = start_writer(true);
    r.send(apply(update(Verdict::Pending, vec![]))).await;
    expect(&mut r.handle, "POST", &create_path()).await;
    r.send(apply(update(Verdict::Verified, vec![]))).await;
    refuse(&mut r.handle, "PATCH", &write_path(), 404).await;
    let st = expect(&mut r.handle, "POST", &create_path()).await;
    assert_eq!(st["spec"]["podName"], "web");
    assert_eq!(st["status"]["shutdown"], "Verified");
    quiet(&mut r.handle, Duration::from_millis(300)).await;
    r.counted(&[("written", 1), ("recreated", 1)]).await;
    stop(r).await;
}

/// ...but not when the update is the last one (the pod ended): it is dropped.
#[tokio::test(start_paused = true)]
async fn a_deleted_report_of_an_ended_pod_is_dropped() {
    let mut r = start_writer(true);
    r.send(apply(update(Verdict::Pending, vec![]))).await;
    expect(&mut r.handle, "POST", &create_path()).await;
    r.send(apply(ended(Verdict::Verified))).await;
    refuse(&mut r.handle, "PATCH", &write_path(), 404).await;
    quiet(&mut r.handle, Duration::from_secs(120)).await;
    r.counted(&[("not_found_dropped", 1)]).await;
    stop(r).await;
}

/// A write the API server rejects is given up, not retried; newer work for
/// the same report is still written.
#[tokio::test(start_paused = true)]
async fn a_rejected_write_is_given_up() {
    let mut r = start_writer(true);
    r.send(apply(update(Verdict::Pending, vec![]))).await;
    refuse(&mut r.handle, "POST", &create_path(), 422).await;
    quiet(&mut r.handle, Duration::from_secs(120)).await;
    r.counted(&[("rejected", 1)]).await;
    r.send(apply(update(Verdict::Verified, vec![]))).await;
    expect(&mut r.handle, "POST", &create_path()).await;
    r.counted(&[("written", 1)]).await;
    stop(r).await;
}

/// A server error is retried after the backoff.
#[tokio::test(start_paused = true)]
async fn a_server_error_is_retried_after_a_backoff() {
    let mut r = start_writer(true);
    r.send(apply(update(Verdict::Pending, vec![]))).await;
    refuse(&mut r.handle, "POST", &create_path(), 500).await;
    let failed_at = tokio::time::Instant::now();
    let (st, send) = next(&mut r.handle, "POST", &create_path()).await;
    let waited = failed_at.elapsed();
    send.send_response(echo(&st));
    assert_eq!(st["status"]["shutdown"], "Pending");
    assert!(
        waited >= Duration::from_millis(180) && waited <= Duration::from_millis(250),
        "{waited:?}"
    );
    r.counted(&[("server_error", 1), ("written", 1)]).await;
    stop(r).await;
}

/// A call that never answers times out and is retried.
#[tokio::test(start_paused = true)]
async fn a_call_that_never_answers_times_out_and_is_retried() {
    let cfg = WriterConfig {
        call_timeout: Duration::from_secs(2),
        ..WriterConfig::default()
    };
    let mut r = start_with(true, cfg, 8);
    r.send(apply(update(Verdict::Pending, vec![]))).await;
    let sent_at = tokio::time::Instant::now();
    // Held, never answered.
    let (first, _held) = next(&mut r.handle, "POST", &create_path()).await;
    // Retried as a create, never written over a report unread.
    let (_, send) = next(&mut r.handle, "POST", &create_path()).await;
    assert!(sent_at.elapsed() >= Duration::from_secs(2));
    send.send_response(status_reply(409, "AlreadyExists"));
    // The first one had landed: read, it counts once, and what it stored
    // is what there is to write.
    let (_, send) = next(&mut r.handle, "GET", REPORT).await;
    let mut landed = update(Verdict::Pending, vec![]);
    landed.status.write_id = first["status"]["writeId"].as_str().map(Into::into);
    send.send_response(echo(&stored_at(&landed, "3")));
    quiet(&mut r.handle, Duration::from_secs(5)).await;
    r.counted(&[
        ("timeout", 1),
        ("conflict", 1),
        ("unanswered_landed", 1),
        ("written", 0),
    ])
    .await;
    stop(r).await;
}

/// Up to `concurrency` reports are written at once.
#[tokio::test]
async fn several_reports_are_written_at_once() {
    let cfg = WriterConfig {
        concurrency: 2,
        ..WriterConfig::default()
    };
    let mut r = start_with(true, cfg, 8);
    for name in ["a", "b", "c"] {
        r.send(apply(named(name, Verdict::Pending, vec![]))).await;
    }
    let mut first = Vec::new();
    for _ in 0..2 {
        let (body, reply) = next(&mut r.handle, "POST", &create_path()).await;
        let name = body["metadata"]["name"].as_str().unwrap().to_string();
        first.push((name, body, reply));
    }
    let mut names: Vec<&str> = first.iter().map(|(n, _, _)| n.as_str()).collect();
    names.sort();
    assert_eq!(names, ["a", "b"]);
    // Both slots are taken: "c" waits.
    quiet(&mut r.handle, Duration::from_millis(200)).await;
    let (_, body, reply) = first.pop().unwrap();
    reply.send_response(echo(&body));
    // One is done: "c" gets its slot while the other still waits.
    let c = expect(&mut r.handle, "POST", &create_path()).await;
    assert_eq!(c["metadata"]["name"], "c");
    let (_, body, reply) = first.pop().unwrap();
    reply.send_response(echo(&body));
    r.counted(&[("written", 3)]).await;
    stop(r).await;
}

/// The watch loop never waits on the writer, even with the API server
/// stalled: 10,000 reports go into a channel of 1,024 at once.
#[tokio::test]
async fn a_stalled_api_server_never_blocks_the_sender() {
    let mut r = start_with(true, WriterConfig::default(), 1024);
    let start = Instant::now();
    let sender = r.tx.clone();
    let send_all = async move {
        for i in 0..10_000 {
            let u = named(&format!("r{i}"), Verdict::Pending, vec![violation()]);
            sender.send(Msg::Work(apply(u))).await.unwrap();
        }
    };
    tokio::time::timeout(Duration::from_secs(10), send_all)
        .await
        .expect("the sender waited on the writer");
    assert!(
        start.elapsed() < Duration::from_secs(5),
        "{:?}",
        start.elapsed()
    );
    // As many writes in flight as the concurrency allows, none answered.
    let mut held = Vec::new();
    for _ in 0..WriterConfig::default().concurrency {
        let (req, reply) = r.handle.next_request().await.unwrap();
        held.push((req, reply));
    }
    quiet(&mut r.handle, Duration::from_millis(100)).await;
    r.task.abort();
}

/// A delete of a report drops its pending write.
#[tokio::test]
async fn a_delete_drops_the_pending_write() {
    let cfg = WriterConfig {
        concurrency: 1,
        ..WriterConfig::default()
    };
    let mut r = start_with(true, cfg, 8);
    // Another report's write holds the only slot...
    r.send(apply(named("other-9a8b7c6d", Verdict::Verified, vec![])))
        .await;
    let (body, held) = next(&mut r.handle, "POST", &create_path()).await;
    assert_eq!(body["metadata"]["name"], "other-9a8b7c6d");
    // ...while an apply and a delete of this one wait: the delete wins.
    r.send(apply(update(Verdict::Verified, vec![violation()])))
        .await;
    r.send(Work::Delete {
        namespace: "shop".into(),
        name: "web-1b2c3d4e".into(),
    })
    .await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    held.send_response(echo(&body));
    let (_, reply) = next(&mut r.handle, "DELETE", REPORT).await;
    let ok = json!({"kind": "Status", "apiVersion": "v1", "status": "Success", "code": 200});
    reply.send_response(
        Response::builder()
            .body(Body::from(serde_json::to_vec(&ok).unwrap()))
            .unwrap(),
    );
    quiet(&mut r.handle, Duration::from_millis(300)).await;
    r.counted(&[("deleted", 1), ("written", 1)]).await;
    // The writer forgot the report: were it wanted again, it is created.
    r.send(apply(update(Verdict::Verified, vec![]))).await;
    expect(&mut r.handle, "POST", &create_path()).await;
    stop(r).await;
}

/// Every error maps to one of the exported results.
#[test]
fn every_error_counts_as_a_known_result() {
    let api = |code: u16| WriteError::Api {
        call: Call::Write,
        namespace: "shop".into(),
        name: "r".into(),
        source: kube::Error::Api(
            kube::core::Status::failure("no", "No")
                .with_code(code)
                .boxed(),
        ),
    };
    let cases = [
        (404, "not_found_dropped"),
        (400, "rejected"),
        (403, "rejected"),
        (422, "rejected"),
        (409, "conflict"),
        (429, "throttled"),
        (500, "server_error"),
        (503, "server_error"),
        (401, "other_error"),
    ];
    for (code, want) in cases {
        assert_eq!(api(code).category(), want, "{code}");
        assert!(WRITE_RESULTS.contains(&want));
    }
    let timeout = WriteError::Timeout {
        call: Call::Get,
        namespace: "shop".into(),
        name: "r".into(),
        after: Duration::from_secs(10),
    };
    assert_eq!(timeout.category(), "timeout");
}

/// Answers one page of the paginated LIST of stored reports: `items`, and
/// `next` as the continue token.
async fn report_page(handle: &mut Handle, items: &[Update], next_token: &str) -> String {
    let all = "/apis/sidecar-order.dev/v1alpha1/sidecarorderreports?";
    report_page_at(handle, all, items, next_token).await
}

/// `report_page`, for the list whose path starts with `path`.
async fn report_page_at(
    handle: &mut Handle,
    path: &str,
    items: &[Update],
    next_token: &str,
) -> String {
    let (_, send, uri) = next_with_uri(handle, "GET", path).await;
    let items: Vec<Value> = items
        .iter()
        .map(|u| {
            json!({"apiVersion": "sidecar-order.dev/v1alpha1", "kind": "SidecarOrderReport",
                "metadata": {"name": u.report_name, "namespace": u.namespace},
                "spec": u.spec, "status": u.status})
        })
        .collect();
    let body = json!({"apiVersion": "sidecar-order.dev/v1alpha1", "kind": "SidecarOrderReportList",
        "metadata": {"resourceVersion": "1", "continue": next_token}, "items": items});
    send.send_response(
        Response::builder()
            .body(Body::from(serde_json::to_vec(&body).unwrap()))
            .unwrap(),
    );
    uri
}

/// The page a pass read next (not a report read ahead).
fn page(
    read: Option<Result<sidecar_order::controller::takeover::Read, kube::Error>>,
) -> sidecar_order::controller::stored::Stored {
    use sidecar_order::controller::takeover::Read;
    match read.expect("a page").expect("read") {
        Read::Page(stored) => stored,
        Read::One(key, _) => panic!("a page, not {key:?} read ahead"),
    }
}

/// What a pass read next, within 5 s.
async fn ahead(
    pass: &mut sidecar_order::controller::takeover::Pass,
) -> sidecar_order::controller::takeover::Read {
    tokio::time::timeout(Duration::from_secs(5), pass.next())
        .await
        .expect("nothing read within 5 s")
        .expect("a read")
        .expect("read")
}

/// A report an update waits for is read on its own, ahead of its page (a
/// churning workload's reports sort after those of its ended pods): found,
/// its stored version is in the ledger; not found, it is known not stored.
/// Each report is read ahead once at most.
#[tokio::test]
async fn a_report_an_update_waits_for_is_read_ahead_of_its_page() {
    use sidecar_order::controller::takeover::{Pass, Read};
    let (mock, mut handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    let client = Client::new(mock, "default");
    let mut pass = Pass::start(client, vec![]);
    // The list's first page: asked for, not answered yet.
    let (_, _held, _) = next_with_uri(
        &mut handle,
        "GET",
        "/apis/sidecar-order.dev/v1alpha1/sidecarorderreports?",
    )
    .await;
    let stored = update(Verdict::Violated, vec![violation()]);
    let key = (stored.namespace.clone(), stored.report_name.clone());
    assert!(!pass.is_read(&key.0, &key.1));
    pass.want(&key.0, &key.1);
    pass.want(&key.0, &key.1);
    let (_, send) = next(&mut handle, "GET", REPORT).await;
    send.send_response(echo(&json!({
        "apiVersion": "sidecar-order.dev/v1alpha1", "kind": "SidecarOrderReport",
        "metadata": {"name": stored.report_name, "namespace": stored.namespace},
        "spec": stored.spec, "status": stored.status,
    })));
    let Read::One(got, mut one) = ahead(&mut pass).await else {
        panic!("a report read ahead, not a page");
    };
    assert_eq!(got, key);
    let ledger = pass.took(&mut one);
    assert!(ledger.holds(&key, status_hash(&stored.spec, &stored.status)));
    assert_eq!(one.reports.len(), 1, "its decided checks go to the index");
    assert!(pass.due(&key.0, &key.1));
    pass.sent([(key.0.as_str(), key.1.as_str())]);

    // Not stored: known so, nothing to take in.
    pass.want("shop", "gone-1");
    let (_, send) = next(
        &mut handle,
        "GET",
        "/apis/sidecar-order.dev/v1alpha1/namespaces/shop/sidecarorderreports/gone-1",
    )
    .await;
    send.send_response(status_reply(404, "NotFound"));
    let Read::One(got, mut none) = ahead(&mut pass).await else {
        panic!("a report read ahead, not a page");
    };
    assert_eq!(got.1, "gone-1");
    assert!(pass.took(&mut none).is_empty());
    assert!(pass.due("shop", "gone-1"));
    // Asked once: no second read of either.
    pass.want(&key.0, &key.1);
    pass.want("shop", "gone-1");
    quiet(&mut handle, Duration::from_millis(200)).await;
}

/// A takeover's pass hands over each page of stored reports as it
/// arrives (writing resumes after the first page); a list goes in key
/// order, so a report before the last key listed that no page held is known
/// not to be stored; a failed read starts again without handing the writer
/// an older ledger of what it already wrote; at the end, the stored live
/// reports the index does not know are the ones to close.
#[tokio::test]
async fn a_takeover_pass_reads_the_stored_reports_a_page_at_a_time() {
    use sidecar_order::controller::takeover::Pass;
    let (mock, mut handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    let client = Client::new(mock, "default");
    let mut pass = Pass::start(client, vec![]);
    let live = named("live-1", Verdict::Verified, vec![]);
    let mut ended = named("ended-1", Verdict::Verified, vec![]);
    ended.status.pod_ended_at = Some("2026-11-26T20:00:00Z".into());
    let orphan = named("orphan-1", Verdict::Verified, vec![]);

    let uri = report_page(&mut handle, &[ended.clone(), live.clone()], "t1").await;
    assert!(uri.contains("limit=500"), "{uri}");
    let mut first = page(pass.next().await);
    assert_eq!(pass.took(&mut first).len(), 2);
    assert!(pass.is_read("shop", "live-1") && pass.is_read("shop", "ended-1"));
    assert!(
        pass.is_read("shop", "fresh-1"),
        "before the last key listed, not listed: not stored"
    );
    assert!(!pass.is_read("shop", "orphan-1"), "not listed yet");
    assert!(!pass.is_read("shop", "zzz"), "not listed yet");
    assert!(
        !pass.is_read("tools", "live-1"),
        "another namespace, after shop"
    );
    assert!(
        pass.is_read("apps", "web-1"),
        "another namespace, before shop"
    );
    pass.sent([("shop", "live-1")]);
    assert!(!pass.due("shop", "live-1") && pass.due("shop", "ended-1"));

    // The second page fails: the read starts again from the first page.
    let (_, send, uri) = next_with_uri(
        &mut handle,
        "GET",
        "/apis/sidecar-order.dev/v1alpha1/sidecarorderreports?",
    )
    .await;
    assert!(uri.contains("continue=t1"), "{uri}");
    send.send_response(status_reply(500, "InternalError"));
    assert!(pass.next().await.expect("the error").is_err());
    assert!(pass.next().await.is_none(), "that read is over");
    pass.retry();
    report_page(&mut handle, &[ended.clone(), live.clone()], "t1").await;
    let mut again = page(pass.next().await);
    let ledger = pass.took(&mut again);
    assert_eq!(
        ledger.len(),
        1,
        "what the writer already has is not read over it"
    );
    report_page(&mut handle, std::slice::from_ref(&orphan), "").await;
    let mut last = page(pass.next().await);
    pass.took(&mut last);
    assert!(pass.next().await.is_none(), "every page read");
    assert_eq!(pass.reports_read(), 3);
    let known = [("shop".to_string(), "live-1".to_string())].into();
    assert_eq!(
        pass.orphans(&known),
        vec![("shop".to_string(), "orphan-1".to_string())],
        "the ended report is not closed again, the known one is the index's"
    );
}

/// Each namespace of several is listed alone, in the order given: a
/// namespace's last page tells that all of it is read.
#[tokio::test]
async fn a_takeover_pass_over_several_namespaces_knows_each_one_read() {
    use sidecar_order::controller::takeover::Pass;
    let (mock, mut handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    let client = Client::new(mock, "default");
    let mut pass = Pass::start(client, vec!["shop".into(), "apps".into()]);
    let live = named("live-1", Verdict::Verified, vec![]);
    let shop = "/apis/sidecar-order.dev/v1alpha1/namespaces/shop/sidecarorderreports?";
    let uri = report_page_at(&mut handle, shop, std::slice::from_ref(&live), "").await;
    assert!(uri.contains("limit=500"), "{uri}");
    let mut page = page(pass.next().await);
    pass.took(&mut page);
    assert!(pass.is_read("shop", "zzz"), "all of shop is read");
    assert!(!pass.is_read("apps", "aaa"), "apps is listed next");
}

/// A takeover, as the watch loop sends it: the start, the stored reports'
/// ledger (here one page), then the index's `reports`.
async fn takeover(tx: &mpsc::Sender<Msg>, reports: Vec<Update>, stored: &[Update]) {
    let mut ledger = Ledger::default();
    for u in stored {
        ledger.seed(&u.namespace, &u.report_name, &u.spec, &u.status, None);
    }
    tx.send(Msg::TakeoverStart).await.unwrap();
    tx.send(Msg::Stored(ledger)).await.unwrap();
    for u in reports {
        tx.send(Msg::Work(apply(u))).await.unwrap();
    }
}

/// A standby wins the lease; its index has a report with a violation; the
/// stored reports are `stored`.
async fn handover(stored: Vec<Update>) -> Running {
    let r = start_writer(false);
    r.lead_tx.send(true).unwrap();
    takeover(
        &r.tx,
        vec![update(Verdict::Violated, vec![violation()])],
        &stored,
    )
    .await;
    r
}

/// The stored reports are read a page at a time into the ledger (what each
/// counted), what the index keeps of each, and the reports without a status.
#[tokio::test]
async fn the_stored_reports_are_read_into_ledger_and_index() {
    let (mock, mut handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    let client = Client::new(mock, "default");
    let read = tokio::spawn(sidecar_order::controller::stored::read(client, vec![]));
    let (_, send) = next(
        &mut handle,
        "GET",
        "/apis/sidecar-order.dev/v1alpha1/sidecarorderreports?",
    )
    .await;
    let held = update(Verdict::Violated, vec![violation()]);
    let body = json!({"apiVersion": "sidecar-order.dev/v1alpha1", "kind": "SidecarOrderReportList",
    "metadata": {"resourceVersion": "1"}, "items": [
        {"apiVersion": "sidecar-order.dev/v1alpha1", "kind": "SidecarOrderReport",
         "metadata": {"name": held.report_name, "namespace": held.namespace},
         "spec": held.spec, "status": held.status},
        {"apiVersion": "sidecar-order.dev/v1alpha1", "kind": "SidecarOrderReport",
         "metadata": {"name": "empty-1", "namespace": "shop", "creationTimestamp": "2026-01-01T00:00:00Z"},
         "spec": held.spec},
    ]});
    send.send_response(
        Response::builder()
            .body(Body::from(serde_json::to_vec(&body).unwrap()))
            .unwrap(),
    );
    let stored = read.await.unwrap().unwrap();
    assert_eq!(stored.ledger.len(), 1);
    let key = (held.namespace.clone(), held.report_name.clone());
    assert!(
        stored
            .ledger
            .holds(&key, status_hash(&held.spec, &held.status))
    );
    assert_eq!(stored.reports.len(), 1);
    assert_eq!(stored.empty.len(), 1);
    assert_eq!(stored.empty[0].0.name, "empty-1");
    assert_eq!(stored.empty[0].1, 1_767_225_600);
}

/// The old leader stored exactly what the new one's index says: nothing is
/// written, nothing announced again, nothing counted.
#[tokio::test]
async fn a_new_leader_writes_nothing_the_stored_reports_hold() {
    let mut r = handover(vec![update(Verdict::Violated, vec![violation()])]).await;
    quiet(&mut r.handle, Duration::from_millis(300)).await;
    assert_eq!(r.count("written"), 0);
    let violations = r.violations_counted();
    assert_eq!(violations, 0);
    stop(r).await;
}

/// The stored report lacks the violation (the old leader died before it
/// wrote it): written, announced and counted once, patched (the report
/// exists).
#[tokio::test]
async fn a_new_leader_announces_and_counts_what_the_report_lacks() {
    let mut r = handover(vec![update(Verdict::Pending, vec![])]).await;
    let ev = expect(&mut r.handle, "POST", EVENTS).await;
    assert_eq!(ev["reason"], "SidecarOrderViolation");
    let st = expect(&mut r.handle, "PATCH", &write_path()).await;
    assert_eq!(st["status"]["violationCount"], 1);
    r.counted(&[("written", 1)]).await;
    let violations = r.violations_counted();
    assert_eq!(violations, 1);
    quiet(&mut r.handle, Duration::from_millis(300)).await;
    stop(r).await;
}

/// No stored report at all: created with its status, announced.
#[tokio::test]
async fn a_new_leader_creates_a_report_nobody_stored() {
    let mut r = handover(vec![]).await;
    let ev = expect(&mut r.handle, "POST", EVENTS).await;
    assert_eq!(ev["reason"], "SidecarOrderViolation");
    expect(&mut r.handle, "POST", &create_path()).await;
    stop(r).await;
}

/// A new leader whose index lacks `orphan`'s pod reads the stored report
/// (still live) and then the pod; `pod` is the pod the API server holds.
async fn takeover_with_orphan(orphan: &Update, pod: Option<Value>) -> Running {
    let mut r = handover(vec![
        update(Verdict::Violated, vec![violation()]),
        orphan.clone(),
    ])
    .await;
    // The pass found it stored, live, and not in the index.
    let close = Work::Close {
        namespace: "shop".into(),
        name: "gone-5e6f7a8b".into(),
        at: 1_767_225_600,
    };
    r.tx.send(Msg::Work(close)).await.unwrap();
    let path = "/apis/sidecar-order.dev/v1alpha1/namespaces/shop/sidecarorderreports/gone-5e6f7a8b";
    let (_, send) = next(&mut r.handle, "GET", path).await;
    let body = json!({"apiVersion": "sidecar-order.dev/v1alpha1", "kind": "SidecarOrderReport",
        "metadata": {"name": "gone-5e6f7a8b", "namespace": "shop"},
        "spec": orphan.spec, "status": orphan.status});
    send.send_response(
        Response::builder()
            .body(Body::from(serde_json::to_vec(&body).unwrap()))
            .unwrap(),
    );
    let pod_path = format!("/api/v1/namespaces/shop/pods/{}", orphan.spec.pod_name);
    match pod {
        None => {
            let (_, send) = next(&mut r.handle, "GET", &pod_path).await;
            send.send_response(status_reply(404, "NotFound"));
        }
        Some(pod) => {
            let (_, send) = next(&mut r.handle, "GET", &pod_path).await;
            send.send_response(
                Response::builder()
                    .body(Body::from(serde_json::to_vec(&pod).unwrap()))
                    .unwrap(),
            );
        }
    }
    r
}

/// A stored report that still reads as live, of a pod the new leader's
/// index does not know (deleted while nobody led): closed.
#[tokio::test]
async fn a_new_leader_closes_live_reports_of_pods_it_does_not_know() {
    let orphan = named("gone-5e6f7a8b", Verdict::Verified, vec![]);
    let mut r = takeover_with_orphan(&orphan, None).await;
    let path = "/apis/sidecar-order.dev/v1alpha1/namespaces/shop/sidecarorderreports/gone-5e6f7a8b";
    let st = expect(&mut r.handle, "PATCH", &format!("{path}?")).await;
    assert!(st["status"]["podEndedAt"].is_string(), "{st}");
    assert_eq!(st["status"]["evidence"], "Partial");
    r.counted(&[("closed", 1), ("written", 0)]).await;
    stop(r).await;
}

/// The same, but the pod still exists (it left the label selector, so the
/// index does not hold it): its report is left alone. A pod of the same
/// name with another uid is a new pod: the old report is closed.
#[tokio::test]
async fn a_report_whose_pod_still_exists_is_not_closed() {
    let orphan = named("gone-5e6f7a8b", Verdict::Verified, vec![]);
    let pod = |uid: &str| {
        json!({"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": orphan.spec.pod_name, "namespace": "shop", "uid": uid,
                "labels": {"team": "elsewhere"}}})
    };
    let mut r = takeover_with_orphan(&orphan, Some(pod(&orphan.spec.pod_uid))).await;
    quiet(&mut r.handle, Duration::from_millis(300)).await;
    r.counted(&[("closed", 0), ("written", 0)]).await;
    stop(r).await;

    let mut r = takeover_with_orphan(&orphan, Some(pod("another-uid"))).await;
    let path = "/apis/sidecar-order.dev/v1alpha1/namespaces/shop/sidecarorderreports/gone-5e6f7a8b";
    expect(&mut r.handle, "PATCH", &format!("{path}?")).await;
    r.counted(&[("closed", 1)]).await;
    stop(r).await;
}

/// A pod Event that fails is counted, not retried: the report lists it.
#[tokio::test(start_paused = true)]
async fn a_failed_pod_event_is_counted_not_retried() {
    let mut r = start_writer(true);
    r.send(apply(update(Verdict::Violated, vec![violation()])))
        .await;
    refuse(&mut r.handle, "POST", EVENTS, 500).await;
    expect(&mut r.handle, "POST", &create_path()).await;
    quiet(&mut r.handle, Duration::from_secs(120)).await;
    r.counted(&[("written", 1), ("event_error", 1)]).await;
    stop(r).await;
}

/// The violation's Event exists already (an earlier leader announced it,
/// then died before its status write stored it): `AlreadyExists` is no
/// error, the report is written and the violation counted once; the name
/// is the one every replica gives that violation.
#[tokio::test(start_paused = true)]
async fn an_event_announced_before_a_crash_is_not_announced_twice() {
    let mut r = start_writer(true);
    let u = update(Verdict::Violated, vec![violation()]);
    r.send(apply(u.clone())).await;
    let (ev, send) = next(&mut r.handle, "POST", EVENTS).await;
    let want = sidecar_order::controller::events::event_name(&u.pod_name, &u.pod_uid, &violation());
    assert_eq!(ev["metadata"]["name"], want.as_str());
    send.send_response(status_reply(409, "AlreadyExists"));
    expect(&mut r.handle, "POST", &create_path()).await;
    quiet(&mut r.handle, Duration::from_secs(120)).await;
    r.counted(&[("written", 1), ("event_error", 0)]).await;
    assert_eq!(r.violations_counted(), 1);
    stop(r).await;
}

/// Two violations of one pod are two Events, each with its own note (the
/// chaos run found a second violation folded into the first one's Event
/// by an event recorder keyed on the reason).
#[tokio::test(start_paused = true)]
async fn two_violations_of_one_pod_are_two_events() {
    let mut r = start_writer(true);
    let mut other = violation();
    other.containers = vec!["app".into(), "log".into()];
    other.message = "the other sidecar".into();
    r.send(apply(update(Verdict::Violated, vec![violation(), other])))
        .await;
    let a = expect(&mut r.handle, "POST", EVENTS).await;
    let b = expect(&mut r.handle, "POST", EVENTS).await;
    assert_ne!(a["metadata"]["name"], b["metadata"]["name"]);
    assert!(
        b["note"].as_str().unwrap().ends_with("the other sidecar"),
        "{b}"
    );
    expect(&mut r.handle, "POST", &create_path()).await;
    quiet(&mut r.handle, Duration::from_secs(120)).await;
    stop(r).await;
}

/// With leader election, leading from the start is a takeover too: nothing
/// is written until the index comes and the stored reports are read (the
/// chaos run found a leader, restarted with the lease still its own, that
/// never wrote).
#[tokio::test]
async fn with_leader_election_the_first_lease_is_a_takeover() {
    let cfg = WriterConfig {
        trust_initial_ledger: false,
        ..WriterConfig::default()
    };
    let mut r = start_with(true, cfg, 8);
    r.send(apply(update(Verdict::Pending, vec![]))).await;
    quiet(&mut r.handle, Duration::from_millis(300)).await;
    takeover(&r.tx, vec![update(Verdict::Verified, vec![])], &[]).await;
    let st = expect(&mut r.handle, "POST", &create_path()).await;
    assert_eq!(st["status"]["shutdown"], "Verified");
    stop(r).await;
}

/// A leader whose status write of a violation got no answer when it lost
/// the lease (the API server restarting, the 23:41 chaos finding): the
/// stored report reads back as `stored_id` names it.
async fn lease_lost_mid_write(stored_id: impl Fn(&str) -> String) -> Running {
    lease_lost_mid_write_over(|sent| (stored_id(sent), vec![])).await
}

/// As `lease_lost_mid_write`, the stored status naming a write and the
/// ones it was written over.
async fn lease_lost_mid_write_over(stored_ids: impl Fn(&str) -> (String, Vec<String>)) -> Running {
    let mut r = start_writer(true);
    r.send(apply(update(Verdict::Violated, vec![violation()])))
        .await;
    expect(&mut r.handle, "POST", EVENTS).await;
    let (st, held) = next(&mut r.handle, "POST", &create_path()).await;
    let sent_id = st["status"]["writeId"]
        .as_str()
        .expect("every status write names itself")
        .to_string();
    r.lead_tx.send(false).unwrap();
    // Read back, after the lease is gone.
    let (_, send) = next(&mut r.handle, "GET", REPORT).await;
    let mut stored = update(Verdict::Violated, vec![violation()]);
    let (id, earlier) = stored_ids(&sent_id);
    stored.status.write_id = Some(id);
    stored.status.earlier_write_ids = earlier;
    send.send_response(echo(&json!({
        "apiVersion": "sidecar-order.dev/v1alpha1", "kind": "SidecarOrderReport",
        "metadata": {"name": stored.report_name, "namespace": stored.namespace},
        "spec": stored.spec, "status": stored.status,
    })));
    drop(held);
    r
}

/// The write landed (the stored status carries its id): it counts, once,
/// though no answer ever came; the new leader, which read it stored,
/// counts nothing of it (`a_new_leader_writes_nothing_the_stored_reports_hold`).
#[tokio::test]
async fn an_unanswered_write_that_landed_counts_once_after_the_lease_is_lost() {
    let r = lease_lost_mid_write(|sent| sent.to_string()).await;
    r.counted(&[("unanswered_landed", 1), ("written", 0)]).await;
    assert_eq!(r.violations_counted(), 1);
    stop(r).await;
}

/// The stored status is another write's (this one never landed, or the new
/// leader wrote the report since, counting what it added): not counted.
#[tokio::test]
async fn an_unanswered_write_that_did_not_land_is_not_counted() {
    let r = lease_lost_mid_write(|_| "another-write-7".into()).await;
    r.counted(&[("unanswered_lost", 1)]).await;
    assert_eq!(r.violations_counted(), 0);
    stop(r).await;
}

/// A report created at resourceVersion 5, then a violating update sent:
/// its write (checked to go over version 5), not answered yet.
async fn violation_written_over_5(r: &mut Running) -> (Value, Reply) {
    r.send(apply(update(Verdict::Pending, vec![]))).await;
    created_at(&mut r.handle, "5").await;
    r.send(apply(update(Verdict::Violated, vec![violation()])))
        .await;
    expect(&mut r.handle, "POST", EVENTS).await;
    let (st, reply) = next(&mut r.handle, "PATCH", &write_path()).await;
    assert_eq!(st["metadata"]["resourceVersion"], "5", "{st}");
    (st, reply)
}

/// A write read back while the report is still at the version it was
/// sent over may yet land (the API server had not answered it): it is
/// neither counted nor given up, but read back again, and counted once it
/// shows. (Read as lost, a write landing after its read-back would count
/// for nobody: the next leader reads it stored, as counted.)
#[tokio::test]
async fn an_unanswered_write_read_back_before_it_landed_is_read_again() {
    let mut r = start_writer(true);
    let (st, held) = violation_written_over_5(&mut r).await;
    let sent_id = st["status"]["writeId"].as_str().unwrap().to_string();
    r.lead_tx.send(false).unwrap();
    let u = update(Verdict::Violated, vec![violation()]);
    // Still the version the write went over, without it.
    let (_, send) = next(&mut r.handle, "GET", REPORT).await;
    send.send_response(echo(&json!({
        "apiVersion": "sidecar-order.dev/v1alpha1", "kind": "SidecarOrderReport",
        "metadata": {"name": u.report_name, "namespace": u.namespace, "resourceVersion": "5"},
        "spec": u.spec,
    })));
    assert_eq!(r.count("unanswered_lost"), 0);
    // Then it landed.
    let (_, send) = next(&mut r.handle, "GET", REPORT).await;
    let mut stored = u.clone();
    stored.status.write_id = Some(sent_id);
    send.send_response(echo(&stored_at(&stored, "6")));
    drop(held);
    r.counted(&[
        ("unanswered_landed", 1),
        ("unanswered_lost", 0),
        ("written", 1),
    ])
    .await;
    assert_eq!(r.violations_counted(), 1);
    stop(r).await;
}

/// A create whose report exists already (written by another replica, not
/// in the ledger) answers 409: the report is read, and the write goes
/// over the version read, naming the write it replaces, counting nothing
/// the stored report holds. A create never writes over a report unread.
#[tokio::test]
async fn a_create_that_meets_a_stored_report_reads_it_and_writes_over_it() {
    let mut r = start_writer(true);
    r.send(apply(update(Verdict::Violated, vec![violation()])))
        .await;
    expect(&mut r.handle, "POST", EVENTS).await;
    refuse(&mut r.handle, "POST", &create_path(), 409).await;
    let (_, send) = next(&mut r.handle, "GET", REPORT).await;
    let mut theirs = update(Verdict::Pending, vec![violation()]);
    theirs.status.write_id = Some("other-1".into());
    send.send_response(echo(&stored_at(&theirs, "7")));
    let st = expect(&mut r.handle, "PATCH", &write_path()).await;
    assert_eq!(st["metadata"]["resourceVersion"], "7", "{st}");
    assert_eq!(st["status"]["earlierWriteIds"], json!(["other-1"]));
    assert_eq!(st["status"]["shutdown"], "Violated");
    r.counted(&[("conflict", 1), ("written", 1)]).await;
    assert_eq!(r.violations_counted(), 0);
    quiet(&mut r.handle, Duration::from_millis(300)).await;
    stop(r).await;
}

/// A create that got no answer, read back while no report is stored, may
/// yet land (the API server had not answered it): it is neither counted
/// nor given up, but read back again, and counted once it shows. (Read as
/// lost, a create landing after its read-back would count for nobody.)
#[tokio::test]
async fn an_unanswered_create_is_read_again_while_no_report_is_stored() {
    let mut r = start_writer(true);
    let u = update(Verdict::Violated, vec![violation()]);
    r.send(apply(u.clone())).await;
    expect(&mut r.handle, "POST", EVENTS).await;
    let (sent, held) = next(&mut r.handle, "POST", &create_path()).await;
    r.lead_tx.send(false).unwrap();
    // Not stored yet.
    let (_, send) = next(&mut r.handle, "GET", REPORT).await;
    send.send_response(status_reply(404, "NotFound"));
    // Then it landed.
    let (_, send) = next(&mut r.handle, "GET", REPORT).await;
    assert_eq!(r.count("unanswered_lost"), 0);
    let mut stored = u.clone();
    stored.status.write_id = sent["status"]["writeId"].as_str().map(Into::into);
    send.send_response(echo(&stored_at(&stored, "2")));
    drop(held);
    r.counted(&[
        ("unanswered_landed", 1),
        ("unanswered_lost", 0),
        ("written", 0),
    ])
    .await;
    assert_eq!(r.violations_counted(), 1);
    stop(r).await;
}

/// A write that failed with an error saying nothing about whether it
/// landed (a 5xx) and then succeeded on retry counts once, however many
/// times the first attempt may have landed.
#[tokio::test(start_paused = true)]
async fn a_retried_write_counts_its_violation_once() {
    let mut r = start_writer(true);
    r.send(apply(update(Verdict::Violated, vec![violation()])))
        .await;
    expect(&mut r.handle, "POST", EVENTS).await;
    refuse(&mut r.handle, "POST", &create_path(), 504).await;
    // Announced again under the same name (409: it exists), then created.
    refuse(&mut r.handle, "POST", EVENTS, 409).await;
    expect(&mut r.handle, "POST", &create_path()).await;
    r.counted(&[("server_error", 1), ("written", 1)]).await;
    assert_eq!(r.violations_counted(), 1);
    // Nothing left unanswered: losing the lease reads nothing back.
    r.lead_tx.send(false).unwrap();
    quiet(&mut r.handle, Duration::from_millis(300)).await;
    stop(r).await;
}

/// `obj` as the API server stores it, at `rv`.
fn stored_at(u: &Update, rv: &str) -> Value {
    json!({
        "apiVersion": "sidecar-order.dev/v1alpha1", "kind": "SidecarOrderReport",
        "metadata": {"name": u.report_name, "namespace": u.namespace, "resourceVersion": rv},
        "spec": u.spec, "status": u.status,
    })
}

/// A report created (with its status), answered as stored at `rv`.
async fn created_at(handle: &mut Handle, rv: &str) {
    let (created, send) = next(handle, "POST", &create_path()).await;
    let mut obj = created.clone();
    obj["metadata"]["namespace"] = json!("shop");
    obj["metadata"]["resourceVersion"] = json!(rv);
    send.send_response(echo(&obj));
}

/// A status write goes only over the version the writer read: the report
/// written since by another replica (a 409) is read again, and the write
/// goes over it, naming the write it replaces and counting nothing that
/// write stored already.
#[tokio::test]
async fn a_status_write_over_a_report_changed_since_it_was_read_reads_it_again() {
    let mut r = start_writer(true);
    let (_, send) = violation_written_over_5(&mut r).await;
    send.send_response(status_reply(409, "Conflict"));
    // Another replica's write, holding the violation and more.
    let (_, send) = next(&mut r.handle, "GET", REPORT).await;
    let mut theirs = update(Verdict::Pending, vec![violation()]);
    theirs.status.write_id = Some("other-1".into());
    theirs.status.earlier_write_ids = vec!["other-0".into()];
    send.send_response(echo(&stored_at(&theirs, "7")));
    let (st, send) = next(&mut r.handle, "PATCH", &write_path()).await;
    assert_eq!(st["metadata"]["resourceVersion"], "7", "{st}");
    assert_eq!(
        st["status"]["earlierWriteIds"],
        json!(["other-1", "other-0"])
    );
    assert_eq!(st["status"]["shutdown"], "Violated");
    send.send_response(echo(&st));
    r.counted(&[("conflict", 1), ("written", 2)]).await;
    // The other replica stored the violation: it counted it, not us.
    assert_eq!(r.violations_counted(), 0);
    stop(r).await;
}

/// A status write that got no answer but landed makes the next one meet a
/// 409; the report read again carries its id: it counts then, once, and
/// the status it stored is not written again.
#[tokio::test(start_paused = true)]
async fn an_unanswered_write_that_landed_is_found_by_the_conflict_it_causes() {
    let mut r = start_writer(true);
    r.send(apply(update(Verdict::Pending, vec![]))).await;
    created_at(&mut r.handle, "5").await;
    let u = update(Verdict::Violated, vec![violation()]);
    r.send(apply(u.clone())).await;
    expect(&mut r.handle, "POST", EVENTS).await;
    let (first, send) = next(&mut r.handle, "PATCH", &write_path()).await;
    send.send_response(status_reply(504, "Timeout"));
    refuse(&mut r.handle, "POST", EVENTS, 409).await;
    let (again, send) = next(&mut r.handle, "PATCH", &write_path()).await;
    assert_eq!(again["metadata"]["resourceVersion"], "5");
    assert_ne!(again["status"]["writeId"], first["status"]["writeId"]);
    send.send_response(status_reply(409, "Conflict"));
    let (_, send) = next(&mut r.handle, "GET", REPORT).await;
    let mut landed = u.clone();
    landed.status.write_id = first["status"]["writeId"].as_str().map(Into::into);
    send.send_response(echo(&stored_at(&landed, "6")));
    r.counted(&[
        ("server_error", 1),
        ("conflict", 1),
        ("unanswered_landed", 1),
    ])
    .await;
    assert_eq!(r.violations_counted(), 1);
    // What it stored is what there is to write: nothing more is sent
    // (the one write counted is the create).
    quiet(&mut r.handle, Duration::from_secs(5)).await;
    assert_eq!(r.count("written"), 1);
    stop(r).await;
}

/// The write landed and another replica has written the report since, over
/// it (naming it in `earlierWriteIds`): it counts, once; the other replica
/// counted only what it added.
#[tokio::test]
async fn an_unanswered_write_overwritten_by_the_next_leader_counts_once() {
    let r = lease_lost_mid_write_over(|sent| ("another-write-7".into(), vec![sent.into()])).await;
    r.counted(&[("unanswered_landed", 1), ("written", 0)]).await;
    assert_eq!(r.violations_counted(), 1);
    stop(r).await;
}

/// A change that leaves what a report concludes as it was (a container's
/// state) waits for the refresh, even when it comes while the write of a
/// new verdict is in flight: it is compared with the work queued for the
/// report, not with the stored report, which does not hold that verdict
/// yet. A change that concludes anew is written at once.
#[tokio::test]
async fn a_change_that_concludes_nothing_new_waits_for_the_refresh() {
    use sidecar_order::model::Role;
    use sidecar_order::report::ContainerReport;
    let refresh = Duration::from_millis(1500);
    let cfg = WriterConfig {
        refresh,
        ..WriterConfig::default()
    };
    // The same containers throughout, the app's state changing.
    let with_app = |shutdown: Verdict, state: &str, ready: bool| {
        let mut u = update(shutdown, vec![]);
        u.status.report.containers.push(ContainerReport {
            name: "app".into(),
            role: Role::App,
            index: 0,
            restarts: 0,
            state: state.into(),
            ready,
            first_started_at: Some("2025-01-01T00:00:00Z".into()),
            finished_at: None,
            exit_code: None,
            reason: None,
        });
        u
    };
    let mut r = start_with(true, cfg, 8);
    r.send(apply(with_app(Verdict::Pending, "Waiting", false)))
        .await;
    expect(&mut r.handle, "POST", &create_path()).await;
    // The verdict: written at once; held in flight.
    r.send(apply(with_app(Verdict::Verified, "Running", false)))
        .await;
    let (st, reply) = next(&mut r.handle, "PATCH", &write_path()).await;
    assert_eq!(st["status"]["shutdown"], "Verified");
    // Meanwhile the app is seen ready: nothing new concluded.
    let later = with_app(Verdict::Verified, "Running", true);
    r.send(apply(later)).await;
    let sent = Instant::now();
    reply.send_response(echo(&st));
    quiet(&mut r.handle, Duration::from_millis(800)).await;
    let st = expect(&mut r.handle, "PATCH", &write_path()).await;
    assert!(sent.elapsed() >= refresh - Duration::from_millis(100));
    assert_eq!(st["status"]["containers"][0]["ready"], true);
    // The pod's end concludes anew: at once.
    let mut end = with_app(Verdict::Verified, "Terminated", false);
    end.status.pod_ended_at = Some("2025-01-01T00:01:00Z".into());
    r.send(apply(end)).await;
    let t = Instant::now();
    let st = expect(&mut r.handle, "PATCH", &write_path()).await;
    assert!(t.elapsed() < Duration::from_millis(800));
    assert!(st["status"]["podEndedAt"].is_string());
    r.counted(&[("written", 4)]).await;
    // Latency is observed for the three urgent writes only.
    assert!(
        r.metrics
            .render()
            .contains("sidecar_order_report_latency_seconds_count 3")
    );
    stop(r).await;
}

/// A pod seen before any of its containers did anything concludes nothing
/// yet (`ledger::urgent`): its report is not created until it concludes
/// something, and then created with that first conclusion, one status
/// write where there were two; a pod that concludes nothing gets its report
/// within the refresh all the same.
#[tokio::test]
async fn a_new_report_waits_for_its_first_conclusion_or_the_refresh() {
    let refresh = Duration::from_millis(1500);
    let cfg = WriterConfig {
        refresh,
        ..WriterConfig::default()
    };
    let seen = |name: &str| {
        let mut u = named(name, Verdict::Pending, vec![]);
        u.status.report.startup = Verdict::Pending;
        u
    };
    let mut r = start_with(true, cfg, 8);
    r.send(apply(seen("web-1b2c3d4e"))).await;
    quiet(&mut r.handle, Duration::from_millis(800)).await;
    // Its startup judged: created at once, with that status.
    r.send(apply(named("web-1b2c3d4e", Verdict::Pending, vec![])))
        .await;
    let t = Instant::now();
    let st = expect(&mut r.handle, "POST", &create_path()).await;
    assert!(t.elapsed() < Duration::from_millis(800));
    assert_eq!(st["status"]["startup"], "Verified");
    quiet(&mut r.handle, refresh).await;
    // Another pod that concludes nothing: its report within the refresh.
    r.send(apply(seen("web-0000"))).await;
    let t = Instant::now();
    let st = expect(&mut r.handle, "POST", &create_path()).await;
    assert_eq!(st["metadata"]["name"], "web-0000");
    assert!(t.elapsed() >= refresh - Duration::from_millis(100));
    assert_eq!(st["status"]["startup"], "Pending");
    r.counted(&[("written", 2)]).await;
    // Latency is observed for the urgent write only.
    assert!(
        r.metrics
            .render()
            .contains("sidecar_order_report_latency_seconds_count 1")
    );
    stop(r).await;
}
