//! Steady memory per tracked pod: 10,000 synthetic pods (two sidecars and an
//! app, running, with their Started events) go through the controller's store
//! exactly as watch events would, and a counting allocator tells how many
//! bytes stay allocated. Run: `cargo bench --bench store_memory`.

use k8s_openapi::api::core::v1::{Event, Pod};
use sidecar_order::controller::store::Store;
use sidecar_order::judge::Config;
use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicIsize, Ordering};

struct Counting;
static LIVE: AtomicIsize = AtomicIsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        LIVE.fetch_add(l.size() as isize, Ordering::Relaxed);
        unsafe { System.alloc(l) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        LIVE.fetch_sub(l.size() as isize, Ordering::Relaxed);
        unsafe { System.dealloc(p, l) }
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, n: usize) -> *mut u8 {
        LIVE.fetch_add(n as isize - l.size() as isize, Ordering::Relaxed);
        unsafe { System.realloc(p, l, n) }
    }
}

#[global_allocator]
static A: Counting = Counting;

const PODS: usize = 10_000;

fn main() {
    let dir = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/same-second-event-clock"
    );
    let pod: Pod =
        serde_json::from_str(&std::fs::read_to_string(format!("{dir}/pod.json")).unwrap()).unwrap();
    let list: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(format!("{dir}/events.json")).unwrap())
            .unwrap();
    let events: Vec<Event> = serde_json::from_value(list["items"].clone()).unwrap();

    let mut store = Store::new(Config::default());
    let before = LIVE.load(Ordering::Relaxed);
    let now = 1_752_450_000;
    for i in 0..PODS {
        let mut p = pod.clone();
        let name = format!("web-7d9f8c6b5-{i:05x}");
        p.metadata.name = Some(name.clone());
        p.metadata.uid = Some(format!("5f0c1b7e-2a41-4c8e-9d3a-{i:012x}"));
        // Each pod's updates are decoded, projected and dropped, like a watch event.
        store.pod_applied(&p, now);
        for e in &events {
            let mut e = e.clone();
            e.involved_object.name = Some(name.clone());
            e.involved_object.uid = p.metadata.uid.clone();
            e.metadata.name = e
                .metadata
                .name
                .map(|n| n.replacen("same-second-event-clock", &name, 1));
            store.event_applied(&e, now);
        }
    }
    let after = LIVE.load(Ordering::Relaxed);
    let per_pod = (after - before) as f64 / PODS as f64;
    println!("tracked pods:        {}", store.tracked_pods());
    println!(
        "steady heap in store: {:.1} MiB",
        (after - before) as f64 / (1024.0 * 1024.0)
    );
    println!("per tracked pod:      {per_pod:.0} bytes (budget 2048)");
    assert_eq!(store.tracked_pods(), PODS);
    assert!(
        per_pod <= 2048.0,
        "over the 2 KiB budget: {per_pod:.0} bytes per pod"
    );
}
