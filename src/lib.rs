//! sidecar-order: verifies that Kubernetes native sidecars start and stop in
//! the order the kubelet promises.
//!
//! Data flows one way: `input` (saved kubectl output) or the controller's
//! watches -> `observe` (compact facts) -> `engine::history` (merged
//! observations) -> `engine::view` (generations, runs) -> `rules` (one
//! module per rule) -> `judge` -> `report`.
//! Everything up to `report` is sans-IO: plain data in, plain data out, no
//! client and no clock.

pub mod analyze;
pub mod cli;
pub mod conformance;
pub mod controller;
pub mod crd;
pub mod engine;
pub mod input;
pub mod judge;
pub mod kubelet;
pub mod model;
pub mod observe;
pub mod render;
pub mod report;
pub mod rules;
pub mod time;
