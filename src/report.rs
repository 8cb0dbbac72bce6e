//! The engine's output: one serde type, printed by `analyze -o json|yaml` and
//! stored as the `SidecarOrderReport` status.

use crate::model::{ProbeKind, Role};
use crate::time::Source;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Most violations and checks one report keeps (reports must stay small).
pub const MAX_ITEMS: usize = 64;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
pub enum Verdict {
    /// Not judged yet (the phase has not happened or not finished).
    Pending,
    /// Every check of the phase passed.
    Verified,
    /// At least one error-severity rule was broken.
    Violated,
    /// No violation, but some check could not be decided from the input.
    Indeterminate,
    /// The phase happened but no rule applied to it (e.g. a pod deleted
    /// before any app container started has no startup order to judge).
    NotApplicable,
}

#[derive(
    Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, JsonSchema,
)]
pub enum Severity {
    Error,
    Warning,
}

/// The rules, with their stable ids.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, JsonSchema,
)]
#[serde(rename_all = "kebab-case")]
pub enum Rule {
    SidecarStartOrder,
    AppStartedBeforeSidecar,
    AppStartedBeforeSidecarReady,
    SidecarStoppedBeforeApp,
    SidecarStopOrder,
    SidecarForceKilled,
    SidecarOutlivedApp,
}

impl Rule {
    pub const ALL: [Rule; 7] = [
        Rule::SidecarStartOrder,
        Rule::AppStartedBeforeSidecar,
        Rule::AppStartedBeforeSidecarReady,
        Rule::SidecarStoppedBeforeApp,
        Rule::SidecarStopOrder,
        Rule::SidecarForceKilled,
        Rule::SidecarOutlivedApp,
    ];

    pub fn id(self) -> &'static str {
        match self {
            Rule::SidecarStartOrder => "sidecar-start-order",
            Rule::AppStartedBeforeSidecar => "app-started-before-sidecar",
            Rule::AppStartedBeforeSidecarReady => "app-started-before-sidecar-ready",
            Rule::SidecarStoppedBeforeApp => "sidecar-stopped-before-app",
            Rule::SidecarStopOrder => "sidecar-stop-order",
            Rule::SidecarForceKilled => "sidecar-force-killed",
            Rule::SidecarOutlivedApp => "sidecar-outlived-app",
        }
    }

    /// The rule's definition (severity, phase, documentation, check).
    pub fn def(self) -> &'static crate::rules::RuleDef {
        crate::rules::def(self)
    }

    pub fn severity(self) -> Severity {
        self.def().severity
    }

    pub fn phase(self) -> Phase {
        self.def().phase
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
pub enum Phase {
    Startup,
    Shutdown,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Violation {
    pub rule: Rule,
    pub severity: Severity,
    pub containers: Vec<String>,
    pub message: String,
    /// The facts that decided it, each naming its time source.
    pub evidence: Vec<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
pub enum Outcome {
    Verified,
    Violated,
    Indeterminate,
    /// The rule's preconditions did not hold (`why` says which).
    NotApplicable,
}

impl Outcome {
    /// Verified or Violated.
    pub fn decided(self) -> bool {
        matches!(self, Outcome::Verified | Outcome::Violated)
    }
}

/// One ordering decision and the source that made it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Check {
    pub rule: Rule,
    /// The two containers compared, the one expected first first.
    pub containers: Vec<String>,
    pub outcome: Outcome,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decided_by: Option<Source>,
    /// The moment judged (the start or end of the later container's run):
    /// with the rule and containers, identifies the check across re-judging.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub at: Option<String>,
    /// Why it is not applicable or could not be decided.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub why: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ProbeFailure {
    pub container: String,
    pub probe: ProbeKind,
    pub count: u32,
    pub first_time: String,
    pub last_time: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ContainerReport {
    pub name: String,
    pub role: Role,
    pub index: u16,
    pub restarts: u32,
    /// `Waiting`, `Running`, `Terminated` or `Unknown`.
    pub state: String,
    pub ready: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first_started_at: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// Whether the input showed everything the judgement needed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema, Default)]
pub enum Evidence {
    #[default]
    Complete,
    Partial,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Report {
    pub startup: Verdict,
    pub shutdown: Verdict,
    pub sidecars: u32,
    pub evidence: Evidence,
    /// What the input did not show (expired events, hidden restarts, ...).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub gaps: Vec<String>,
    pub violations: Vec<Violation>,
    pub probe_failures: Vec<ProbeFailure>,
    /// The containers as they were judged. The controller writes a change
    /// of what a report concludes (verdicts, violations, probe failures,
    /// restarts, a check that did not pass, the pod's end) at once, and a
    /// change of these, or of the evidence and gaps, within 10 s.
    pub containers: Vec<ContainerReport>,
    /// The decided checks: one that passed is written within 10 s, with
    /// the containers.
    pub checks: Vec<Check>,
}

impl Report {
    pub fn errors(&self) -> impl Iterator<Item = &Violation> {
        self.violations
            .iter()
            .filter(|v| v.severity == Severity::Error)
    }
}
