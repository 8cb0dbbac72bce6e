//! The report writer against a mocked API server (tower-test): each request
//! is checked in order (method, path, field manager, body).

use http::{Request, Response};
use kube::Client;
use kube::client::Body;
use serde_json::{Value, json};
use sidecar_order::controller::metrics::Metrics;
use sidecar_order::controller::store::{Increments, Update, Workload};
use sidecar_order::controller::writer::{self, Outgoing, ReportWriter};
use sidecar_order::crd::{ReportSpec, ReportStatus};
use sidecar_order::report::{Evidence, Report, Rule, Severity, Verdict, Violation};
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, watch};

type Handle = tower_test::mock::Handle<Request<Body>, Response<Body>>;

fn update(shutdown: Verdict, violations: Vec<Violation>) -> Update {
    let report = Report {
        startup: Verdict::Verified,
        shutdown,
        sidecars: 1,
        evidence: Evidence::Complete,
        gaps: vec![],
        violations: violations.clone(),
        probe_failures: vec![],
        containers: vec![],
        checks: vec![],
    };
    Update {
        namespace: "shop".into(),
        report_name: "web-1b2c3d4e".into(),
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
        increments: Increments {
            violations,
            ..Default::default()
        },
    }
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

/// Answers the next request after checking it; returns its JSON body.
async fn expect(handle: &mut Handle, method: &str, path: &str) -> Value {
    let (req, send) = tokio::time::timeout(Duration::from_secs(5), handle.next_request())
        .await
        .unwrap_or_else(|_| panic!("no request; expected {method} {path}"))
        .expect("service not called");
    assert_eq!(req.method().as_str(), method);
    let uri = req.uri().to_string();
    assert!(uri.starts_with(path), "{uri} is not {path}");
    if method == "PATCH" {
        assert!(uri.contains("fieldManager=sidecar-order"), "{uri}");
        assert!(uri.contains("force=true"), "{uri}");
    }
    let bytes = req.into_body().collect_bytes().await.unwrap();
    let body: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    // Echo the object back, as the API server does.
    let mut reply = body.clone();
    if reply.get("metadata").is_none() {
        reply["metadata"] = json!({"name": "x", "namespace": "shop"});
    }
    if reply.get("status").is_some() && reply.get("spec").is_none() {
        reply["spec"] = json!({"podName": "web", "podUid": "1b2c3d4e-0000"});
    }
    send.send_response(
        Response::builder()
            .body(Body::from(serde_json::to_vec(&reply).unwrap()))
            .unwrap(),
    );
    body
}

const REPORT: &str =
    "/apis/sidecar-order.dev/v1alpha1/namespaces/shop/sidecarorderreports/web-1b2c3d4e";

#[tokio::test]
async fn applies_spec_once_then_status_and_records_pod_events() {
    let (svc, mut handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    let client = Client::new(svc, "default");
    let mut w = ReportWriter::new(client, Metrics::new(), Some("test".into()));
    let server = tokio::spawn(async move {
        let spec = expect(&mut handle, "PATCH", &format!("{REPORT}?")).await;
        assert_eq!(spec["kind"], "SidecarOrderReport");
        assert_eq!(spec["spec"]["podName"], "web");
        assert!(spec.get("status").is_none());
        let st = expect(&mut handle, "PATCH", &format!("{REPORT}/status?")).await;
        assert_eq!(st["status"]["shutdown"], "Violated");
        assert_eq!(st["status"]["violationCount"], 1);
        let ev = expect(
            &mut handle,
            "POST",
            "/apis/events.k8s.io/v1/namespaces/shop/events",
        )
        .await;
        assert_eq!(ev["reason"], "SidecarOrderViolation");
        assert_eq!(ev["type"], "Warning");
        assert_eq!(ev["regarding"]["name"], "web");
        assert!(
            ev["note"]
                .as_str()
                .unwrap()
                .starts_with("sidecar-stopped-before-app: ")
        );
        // The second write of the same report: status only.
        let st = expect(&mut handle, "PATCH", &format!("{REPORT}/status?")).await;
        assert_eq!(st["status"]["shutdown"], "Verified");
        handle
    });
    let u = update(Verdict::Violated, vec![violation()]);
    w.apply_report(&u).await.unwrap();
    w.record_violations(&u).await.unwrap();
    let u2 = update(Verdict::Verified, vec![]);
    w.apply_report(&u2).await.unwrap();
    w.record_violations(&u2).await.unwrap();
    let mut handle = server.await.unwrap();
    // Nothing else was sent.
    assert!(
        tokio::time::timeout(Duration::from_millis(100), handle.next_request())
            .await
            .is_err()
    );
}

/// The writer task on a mocked API server: its input channel, the lease
/// flag, its metrics and the task, plus the mock's handle.
struct Running {
    tx: mpsc::Sender<Outgoing>,
    lead_tx: watch::Sender<bool>,
    metrics: Metrics,
    task: tokio::task::JoinHandle<()>,
    handle: Handle,
}

fn start_writer(leader: bool) -> Running {
    let (svc, handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    let client = Client::new(svc, "default");
    let metrics = Metrics::new();
    let w = ReportWriter::new(client, metrics.clone(), None);
    let (tx, rx) = mpsc::channel(8);
    let (lead_tx, lead_rx) = watch::channel(leader);
    let task = tokio::spawn(writer::run(
        w,
        rx,
        lead_rx,
        Duration::from_secs(3600),
        Duration::from_secs(86400),
        100,
    ));
    Running {
        tx,
        lead_tx,
        metrics,
        task,
        handle,
    }
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
    // Two updates of one report while not leader: nothing is written...
    for v in [Verdict::Pending, Verdict::Verified] {
        tx.send(Outgoing {
            update: update(v, vec![]),
            seen_at: Instant::now(),
            from_standby: true,
        })
        .await
        .unwrap();
    }
    assert!(
        tokio::time::timeout(Duration::from_millis(300), handle.next_request())
            .await
            .is_err()
    );
    // ...until the lease is won; then only the newest state is written.
    lead_tx.send(true).unwrap();
    expect(&mut handle, "PATCH", &format!("{REPORT}?")).await;
    let st = expect(&mut handle, "PATCH", &format!("{REPORT}/status?")).await;
    assert_eq!(st["status"]["shutdown"], "Verified");
    // Closing the channel (SIGTERM) flushes what is pending, then the task ends.
    tx.send(Outgoing {
        update: update(Verdict::Violated, vec![]),
        seen_at: Instant::now(),
        from_standby: false,
    })
    .await
    .unwrap();
    drop(tx);
    let st = expect(&mut handle, "PATCH", &format!("{REPORT}/status?")).await;
    assert_eq!(st["status"]["shutdown"], "Violated");
    tokio::time::timeout(Duration::from_secs(5), task)
        .await
        .unwrap()
        .unwrap();
    assert!(
        metrics
            .render()
            .contains("sidecar_order_report_writes_total{result=\"written\"} 2")
    );
}

/// On SIGTERM the pending writes get a few more tries; an API server that
/// refuses them all must not keep the controller (and its lease) alive.
#[tokio::test]
async fn a_failing_flush_gives_up_after_a_few_rounds() {
    let Running {
        tx,
        lead_tx: _lead_tx,
        metrics,
        task,
        mut handle,
    } = start_writer(true);
    tx.send(Outgoing {
        update: update(Verdict::Verified, vec![]),
        seen_at: Instant::now(),
        from_standby: false,
    })
    .await
    .unwrap();
    drop(tx);
    // Refuses every request until the writer (and its client) is gone.
    let answerer = tokio::spawn(async move {
        let mut refused = 0;
        while let Some((_, send)) = handle.next_request().await {
            refused += 1;
            send.send_response(status_reply(500, "InternalError"));
        }
        refused
    });
    tokio::time::timeout(Duration::from_secs(20), task)
        .await
        .expect("the writer kept retrying")
        .unwrap();
    let refused = answerer.await.unwrap();
    assert!(refused >= 2, "only {refused} tries");
    assert!(
        metrics
            .render()
            .contains("sidecar_order_report_writes_total{result=\"error\"}")
    );
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

/// A standby queues an update with a new violation, then wins the lease; the
/// mock answers its GET of the report with `stored` (404 when None).
async fn handover(stored: Option<Update>) -> Running {
    let mut r = start_writer(false);
    r.tx.send(Outgoing {
        update: update(Verdict::Violated, vec![violation()]),
        seen_at: Instant::now(),
        from_standby: true,
    })
    .await
    .unwrap();
    r.lead_tx.send(true).unwrap();
    let (req, send) = tokio::time::timeout(Duration::from_secs(5), r.handle.next_request())
        .await
        .expect("a GET of the report")
        .unwrap();
    assert_eq!(req.method().as_str(), "GET");
    assert!(req.uri().to_string().starts_with(REPORT), "{}", req.uri());
    send.send_response(match stored {
        Some(u) => {
            let body = json!({
                "apiVersion": "sidecar-order.dev/v1alpha1", "kind": "SidecarOrderReport",
                "metadata": {"name": "web-1b2c3d4e", "namespace": "shop"},
                "spec": u.spec, "status": u.status,
            });
            Response::builder()
                .body(Body::from(serde_json::to_vec(&body).unwrap()))
                .unwrap()
        }
        None => status_reply(404, "NotFound"),
    });
    r
}

/// Closes the writer's channel and waits for the task to end.
async fn stop(r: Running) {
    drop(r.tx);
    tokio::time::timeout(Duration::from_secs(5), r.task)
        .await
        .unwrap()
        .unwrap();
}

/// A standby that wins the lease writes what it queued, but does not
/// announce again the violations the old leader's report already lists.
#[tokio::test]
async fn a_new_leader_does_not_announce_again_what_the_report_lists() {
    let mut r = handover(Some(update(Verdict::Violated, vec![violation()]))).await;
    expect(&mut r.handle, "PATCH", &format!("{REPORT}?")).await;
    let st = expect(&mut r.handle, "PATCH", &format!("{REPORT}/status?")).await;
    assert_eq!(st["status"]["violationCount"], 1);
    // No Warning Event: the old leader recorded it.
    assert!(
        tokio::time::timeout(Duration::from_millis(300), r.handle.next_request())
            .await
            .is_err(),
        "an Event was recorded again"
    );
    stop(r).await;
}

/// The same, when the old leader had not written the violation yet: the new
/// leader announces it.
#[tokio::test]
async fn a_new_leader_announces_what_the_report_lacks() {
    let mut r = handover(None).await;
    expect(&mut r.handle, "PATCH", &format!("{REPORT}?")).await;
    expect(&mut r.handle, "PATCH", &format!("{REPORT}/status?")).await;
    let ev = expect(
        &mut r.handle,
        "POST",
        "/apis/events.k8s.io/v1/namespaces/shop/events",
    )
    .await;
    assert_eq!(ev["reason"], "SidecarOrderViolation");
    stop(r).await;
}
