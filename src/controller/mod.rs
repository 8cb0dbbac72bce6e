//! The in-cluster operator: watches -> `store` (sans-IO index and judge) ->
//! `metrics` and `writer` (reports, pod Events). `run` wires them together.

pub mod event_watch;
pub mod events;
pub mod gc;
pub mod hold;
pub mod lease;
pub mod ledger;
pub mod memory;
pub mod metrics;
pub mod pb;
pub mod pending;
pub mod queue;
pub mod run;
pub mod selector;
pub mod store;
pub mod stored;
pub mod takeover;
pub mod wire;
pub mod workload;
pub mod writer;
