//! The compact facts the engine works on: what matters of a Pod and of the
//! kubelet's Events, without any Kubernetes API type. The controller keeps
//! exactly this per tracked pod, so keep it small.

use crate::time::Moment;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// What a container is in the pod's manifest.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, JsonSchema,
)]
pub enum Role {
    /// An `initContainers` entry with `restartPolicy: Always`.
    Sidecar,
    /// Any other `initContainers` entry.
    Init,
    /// A `containers` entry.
    App,
}

#[derive(
    Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, JsonSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum ProbeKind {
    Liveness,
    Readiness,
    Startup,
    /// A probe failure whose kind the event did not tell.
    Unknown,
}

impl ProbeKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ProbeKind::Liveness => "liveness",
            ProbeKind::Readiness => "readiness",
            ProbeKind::Startup => "startup",
            ProbeKind::Unknown => "unknown",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum RestartPolicy {
    #[default]
    Always,
    OnFailure,
    Never,
}

/// Which probes and hooks a container declares.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Declares {
    pub liveness: bool,
    pub readiness: bool,
    pub startup: bool,
    pub post_start: bool,
    pub pre_stop: bool,
}

/// One run of a container, as container statuses report it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Run {
    pub started: Option<Moment>,
    pub finished: Option<Moment>,
    pub exit_code: Option<i32>,
    pub signal: Option<i32>,
    pub reason: Option<Box<str>>,
    /// The run the status calls current (`state`), not `lastState`.
    pub current: bool,
    /// In the newest status (`state` or `lastState`); false for a run only an
    /// earlier observation showed (the controller keeps those).
    pub in_status: bool,
    /// A digest of the run's `containerID`, when the status names one: the
    /// kubelet creates a new container for every run, so two observations
    /// of one running container with different start times are one run
    /// whose `startedAt` was rewritten (a fake kubelet behind its work does
    /// that), not a restart.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container: Option<std::num::NonZeroU64>,
}

impl Run {
    /// Ended by SIGKILL (exit 137 or signal 9).
    pub fn killed(&self) -> bool {
        self.exit_code == Some(137) || self.signal == Some(9)
    }
}

/// A container's current state, as much as the engine needs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum StateKind {
    /// No status for this container yet.
    #[default]
    Unknown,
    Waiting,
    Running,
    Terminated,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContainerFacts {
    pub name: String,
    pub role: Role,
    /// Position in its manifest list (`initContainers` or `containers`).
    pub index: u16,
    pub declares: Declares,
    pub state: StateKind,
    pub restarts: u32,
    pub started: Option<bool>,
    pub ready: bool,
    /// Known runs, oldest first: `lastState` and `state` of the status, and
    /// (in the controller's history) older runs earlier statuses showed.
    pub runs: Vec<Run>,
}

/// When and how the pod is being deleted.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Deletion {
    /// `metadata.deletionTimestamp`: the deadline by which the pod must be gone.
    pub deadline_secs: i64,
    pub grace_secs: i64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PodFacts {
    pub namespace: String,
    pub name: String,
    pub uid: String,
    pub restart_policy: RestartPolicy,
    pub grace_secs: i64,
    pub deletion: Option<Deletion>,
    /// `status.phase` when it is Succeeded or Failed.
    pub finished_phase: bool,
    /// The pod was seen gone from the API (only the controller knows this).
    pub gone: bool,
    /// Has a `status` at all.
    pub has_status: bool,
    /// When the current pod sandbox became ready: `lastTransitionTime` of the
    /// `PodReadyToStartContainers` condition while it is True (kubelet 1.29+),
    /// unix seconds of the status clock.
    pub sandbox_ready: Option<i64>,
    pub containers: Vec<ContainerFacts>,
    /// The latest time any field of the pod mentions: a lower bound of "now"
    /// for saved output.
    pub latest_secs: i64,
}

impl PodFacts {
    pub fn sidecar_count(&self) -> usize {
        self.containers
            .iter()
            .filter(|c| c.role == Role::Sidecar)
            .count()
    }

    pub fn container_index(&self, role_is_init: bool, name: &str) -> Option<usize> {
        self.containers
            .iter()
            .position(|c| c.name == name && (c.role == Role::App) != role_is_init)
    }
}

/// The kubelet event reasons the engine uses.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, JsonSchema,
)]
pub enum EventReason {
    Started,
    Killing,
    Unhealthy,
    BackOff,
    FailedPostStartHook,
    FailedPreStopHook,
    ExceededGracePeriod,
    /// The pod's sandbox was re-created (node reboot, runtime restart): a new
    /// generation of the pod's containers begins.
    SandboxChanged,
}

impl EventReason {
    /// Reasons about the pod as a whole (no container field path).
    pub fn pod_level(self) -> bool {
        matches!(
            self,
            EventReason::ExceededGracePeriod | EventReason::SandboxChanged
        )
    }

    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "Started" => EventReason::Started,
            "Killing" => EventReason::Killing,
            "Unhealthy" => EventReason::Unhealthy,
            "BackOff" => EventReason::BackOff,
            "FailedPostStartHook" => EventReason::FailedPostStartHook,
            "FailedPreStopHook" => EventReason::FailedPreStopHook,
            "ExceededGracePeriod" => EventReason::ExceededGracePeriod,
            "SandboxChanged" => EventReason::SandboxChanged,
            _ => return None,
        })
    }
}

/// One kubelet event about one container of the pod (aggregated: `count`
/// occurrences between `first` and `last`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventFact {
    /// The event object's name: identifies it across updates.
    pub key: Box<str>,
    /// Index into `PodFacts::containers`; `None` for pod-level events.
    /// (Boxed key and a 16-bit index: 80 bytes instead of 96, and the
    /// controller holds several per tracked pod.)
    pub container: Option<u16>,
    pub reason: EventReason,
    pub probe: Option<ProbeKind>,
    pub count: u32,
    pub first: Moment,
    pub last: Moment,
}
