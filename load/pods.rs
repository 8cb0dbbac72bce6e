//! The load pods: two native sidecars and one app, on the kwok nodes, each
//! labelled with its variant and the verdicts a correct engine gives it.
//! The variant's start and stop orders are annotations that the kwok
//! Stages of load/kwok/stages.yaml play.

use k8s_openapi::api::core::v1::Pod;
use kube::Api;
use kube::api::{DeleteParams, PostParams};
use serde_json::json;
use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::Semaphore;

pub const PART_OF: &str = "app.kubernetes.io/part-of";
pub const PART_OF_VALUE: &str = "sidecar-order-load";
pub const VARIANT: &str = "sidecar-order.dev/load-variant";
pub const EXPECT_STARTUP: &str = "sidecar-order.dev/load-startup";
pub const EXPECT_SHUTDOWN: &str = "sidecar-order.dev/load-shutdown";

/// How a pod's "kubelet" (kwok) behaves, and what the engine must say of it
/// by the kubelet's promises (KEP-753): sidecars start one by one in
/// manifest order before the app; on deletion the app stops first, then
/// the sidecars in reverse order.
pub struct Variant {
    pub name: &'static str,
    pub start_order: &'static str,
    pub stop_order: &'static str,
    pub startup: &'static str,
    pub shutdown: &'static str,
}

pub const VARIANTS: [Variant; 4] = [
    Variant {
        name: "ordered",
        start_order: "sidecar-1,sidecar-2,app",
        stop_order: "app,sidecar-2,sidecar-1",
        startup: "Verified",
        shutdown: "Verified",
    },
    // app-started-before-sidecar: the app starts before sidecar-2.
    Variant {
        name: "app-before-sidecar",
        start_order: "sidecar-1,app,sidecar-2",
        stop_order: "app,sidecar-2,sidecar-1",
        startup: "Violated",
        shutdown: "Verified",
    },
    // sidecar-stopped-before-app: sidecar-2 stops while the app runs.
    Variant {
        name: "sidecar-stops-first",
        start_order: "sidecar-1,sidecar-2,app",
        stop_order: "sidecar-2,app,sidecar-1",
        startup: "Verified",
        shutdown: "Violated",
    },
    // sidecar-stop-order: the sidecars stop in manifest order.
    Variant {
        name: "reverse-order-broken",
        start_order: "sidecar-1,sidecar-2,app",
        stop_order: "app,sidecar-1,sidecar-2",
        startup: "Verified",
        shutdown: "Violated",
    },
];

/// 85 % of the pods behave, 5 % each misbehave in one way.
pub fn variant_of(n: u64) -> usize {
    match n % 20 {
        7 => 1,
        13 => 2,
        19 => 3,
        _ => 0,
    }
}

pub fn pod(name: &str, v: &Variant) -> Pod {
    let container = |n: &str, sidecar: bool| {
        let mut c = json!({"name": n, "image": "localhost/busybox:1", "imagePullPolicy": "Never"});
        if sidecar {
            c["restartPolicy"] = json!("Always");
        }
        c
    };
    serde_json::from_value(json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": name,
            "labels": {
                PART_OF: PART_OF_VALUE,
                VARIANT: v.name,
                EXPECT_STARTUP: v.startup,
                EXPECT_SHUTDOWN: v.shutdown,
            },
            "annotations": {
                "sidecar-order.dev/load-start-order": v.start_order,
                "sidecar-order.dev/load-stop-order": v.stop_order,
            },
        },
        "spec": {
            "automountServiceAccountToken": false,
            "enableServiceLinks": false,
            "terminationGracePeriodSeconds": 30,
            "nodeSelector": {"type": "kwok"},
            "tolerations": [{"key": "kwok.x-k8s.io/node", "operator": "Exists", "effect": "NoSchedule"}],
            "initContainers": [container("sidecar-1", true), container("sidecar-2", true)],
            "containers": [container("app", false)],
        },
    }))
    .expect("the load pod is a valid Pod")
}

/// What the driver created and deleted.
#[derive(Clone, Default)]
pub struct Book {
    /// uid -> (name, variant index)
    pub created: HashMap<String, (String, usize)>,
    /// Live pods, oldest first: (name, uid).
    pub live: VecDeque<(String, String)>,
    pub deleted: HashSet<String>,
    /// Pods whose every delete attempt failed: whether one landed (an
    /// answer lost in an API server restart) is not known.
    pub delete_unknown: HashSet<String>,
    /// uid -> when it was created, and when its deletion was accepted.
    pub times: HashMap<String, (Instant, Option<Instant>)>,
    /// uid -> the grace deadline of its deletion, as the API server set it
    /// (`metadata.deletionTimestamp` of the DELETE's answer).
    pub deadlines: HashMap<String, k8s_openapi::jiff::Timestamp>,
    pub create_errors: u64,
    pub delete_errors: u64,
    pub next: u64,
}

pub type Shared = Arc<Mutex<Book>>;

async fn create_one(api: Api<Pod>, book: Shared, n: u64) {
    let v = variant_of(n);
    let name = format!("load-{n:06}");
    let p = pod(&name, &VARIANTS[v]);
    for attempt in 0..5 {
        match api.create(&PostParams::default(), &p).await {
            Ok(made) => {
                let uid = made.metadata.uid.unwrap_or_default();
                let mut b = book.lock().expect("book");
                b.created.insert(uid.clone(), (name.clone(), v));
                b.times.insert(uid.clone(), (Instant::now(), None));
                b.live.push_back((name, uid));
                return;
            }
            Err(kube::Error::Api(e)) if e.code == 409 => return,
            Err(e) => {
                book.lock().expect("book").create_errors += 1;
                if attempt == 4 {
                    eprintln!("load: creating {name} failed: {e}");
                }
                tokio::time::sleep(Duration::from_millis(200 << attempt)).await;
            }
        }
    }
}

fn mark_deleted(book: &Shared, uid: String, deadline: Option<k8s_openapi::jiff::Timestamp>) {
    let mut b = book.lock().expect("book");
    if let Some(t) = b.times.get_mut(&uid) {
        t.1 = Some(Instant::now());
    }
    if let Some(d) = deadline {
        b.deadlines.insert(uid.clone(), d);
    }
    b.deleted.insert(uid);
}

async fn delete_one(api: Api<Pod>, book: Shared) {
    let Some((name, uid)) = book.lock().expect("book").live.pop_front() else {
        return;
    };
    for attempt in 0..5 {
        match api.delete(&name, &DeleteParams::default()).await {
            Ok(answer) => {
                let deadline = answer
                    .left()
                    .and_then(|p| p.metadata.deletion_timestamp)
                    .map(|t| t.0);
                return mark_deleted(&book, uid, deadline);
            }
            Err(kube::Error::Api(e)) if e.code == 404 => return mark_deleted(&book, uid, None),
            Err(e) => {
                book.lock().expect("book").delete_errors += 1;
                if attempt == 4 {
                    eprintln!("load: deleting {name} failed: {e}");
                }
                tokio::time::sleep(Duration::from_millis(200 << attempt)).await;
            }
        }
    }
    book.lock().expect("book").delete_unknown.insert(uid);
}

/// Paces operations at `per_second`, at most 64 API calls in flight.
pub struct Pacer {
    t0: Instant,
    per_second: f64,
    k: u64,
    sem: Arc<Semaphore>,
}

impl Pacer {
    pub fn new(per_second: f64) -> Pacer {
        Pacer {
            t0: Instant::now(),
            per_second: per_second.max(0.001),
            k: 0,
            sem: Arc::new(Semaphore::new(64)),
        }
    }

    async fn slot(&mut self) -> tokio::sync::OwnedSemaphorePermit {
        let at = self.t0 + Duration::from_secs_f64(self.k as f64 / self.per_second);
        self.k += 1;
        tokio::time::sleep_until(at.into()).await;
        self.sem.clone().acquire_owned().await.expect("open")
    }

    pub async fn create(&mut self, api: &Api<Pod>, book: &Shared) {
        let permit = self.slot().await;
        let n = {
            let mut b = book.lock().expect("book");
            b.next += 1;
            b.next - 1
        };
        let (api, book) = (api.clone(), book.clone());
        tokio::spawn(async move {
            create_one(api, book, n).await;
            drop(permit);
        });
    }

    pub async fn delete(&mut self, api: &Api<Pod>, book: &Shared) {
        let permit = self.slot().await;
        let (api, book) = (api.clone(), book.clone());
        tokio::spawn(async move {
            delete_one(api, book).await;
            drop(permit);
        });
    }

    /// Waits for every call in flight.
    pub async fn drain(&self) {
        let _all = self.sem.acquire_many(64).await.expect("open");
    }
}
