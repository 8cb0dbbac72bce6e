//! Arbitrary bytes -> saved kubectl output -> reports, table and JSON.
//!
//! The input is split at its first NUL byte: the pod text before it, the
//! events text after it (none when there is no NUL). Whatever the bytes,
//! nothing may panic, and the JSON form of a report must read back equal.

#![no_main]

use libfuzzer_sys::fuzz_target;
use sidecar_order::analyze::analyze;
use sidecar_order::input;
use sidecar_order::judge::Config;
use sidecar_order::render;
use sidecar_order::report::{Report, Severity, Verdict};

fuzz_target!(|data: &[u8]| {
    let (pod, events) = match data.iter().position(|&b| b == 0) {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (data, &[][..]),
    };
    let pod = String::from_utf8_lossy(pod);
    let events = String::from_utf8_lossy(events);
    let pods = match input::pods("pod.json", &pod) {
        Ok(p) => p,
        Err(e) => {
            assert!(!e.to_string().contains('\n'), "multi-line error: {e}");
            return;
        }
    };
    // Unreadable events still leave the pod to judge, as with no events.
    let events = input::events("events.json", &events).unwrap_or_else(|e| {
        assert!(!e.to_string().contains('\n'), "multi-line error: {e}");
        Vec::new()
    });
    let analyses = match analyze(&pods, &events, &Config::default()) {
        Ok(a) => a,
        Err(e) => {
            let _ = e.to_string();
            return;
        }
    };
    for a in &analyses {
        let _table = render::table(a);
        let json = serde_json::to_string(&a.report).expect("a report serializes");
        let back: Report = serde_json::from_str(&json).expect("a report reads back");
        assert_eq!(back, a.report, "JSON round trip changed the report");
        let r = &a.report;
        // A phase with an error-severity violation is Violated.
        for (phase_violated, phase) in [
            (
                r.startup == Verdict::Violated,
                sidecar_order::report::Phase::Startup,
            ),
            (
                r.shutdown == Verdict::Violated,
                sidecar_order::report::Phase::Shutdown,
            ),
        ] {
            let has_error = r
                .violations
                .iter()
                .any(|v| v.severity == Severity::Error && v.rule.phase() == phase);
            if has_error {
                assert!(phase_violated, "{phase:?} has an error but is not Violated");
            }
        }
    }
});
