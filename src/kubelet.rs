//! Kubelet versions: what a node's kubelet promises, and which known
//! upstream bugs it carries.
//!
//! Two tables live here and nowhere else:
//! - `promises`: from which kubelet version each promise the rules check
//!   holds (each rule's `RuleDef::since` names one of them). On an older
//!   kubelet the rule's checks are `NotApplicable`, never violations.
//! - `KNOWN_BUGS`: upstream kubelet bugs whose shape one of our violations
//!   can have, with the versions they affect. A violation on an affected
//!   kubelet whose shape matches says so in its message and evidence.
//!
//! The version comes from `status.nodeInfo.kubeletVersion` of the pod's Node
//! (or `analyze --kubelet-version`); unknown means the latest promises and no
//! bug named. Sans-IO: plain strings in, plain data out.

use crate::report::Rule;
use std::fmt;

/// A kubelet's version: `v1.34.4`, `v1.32.1-eks-abc` (vendor build),
/// `v1.29.6+k3s1`. What follows `-` or `+` is dropped: vendor builds are
/// builds of that release, and a pre-release (`-rc.1`) carries the code of
/// the release it leads to (fixes and features merge before its candidates).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct KubeletVersion {
    pub major: u16,
    pub minor: u16,
    pub patch: u16,
}

impl KubeletVersion {
    pub const fn new(major: u16, minor: u16, patch: u16) -> Self {
        KubeletVersion {
            major,
            minor,
            patch,
        }
    }

    /// Parses `status.nodeInfo.kubeletVersion`; `None` for anything that is
    /// not `[v]MAJOR.MINOR.PATCH[-...|+...]` with decimal numbers.
    pub fn parse(s: &str) -> Option<Self> {
        let s = s.trim();
        let s = s.strip_prefix('v').unwrap_or(s);
        let core = s.split(['-', '+']).next()?;
        let mut parts = core.split('.');
        let mut num = || -> Option<u16> {
            let p = parts.next()?;
            if p.is_empty() || !p.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            p.parse().ok()
        };
        let v = KubeletVersion::new(num()?, num()?, num()?);
        parts.next().is_none().then_some(v)
    }

    /// `1.34`: a bounded label (one value per minor release), for metrics.
    pub fn minor_label(&self) -> String {
        format!("{}.{}", self.major, self.minor)
    }
}

impl fmt::Display for KubeletVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "v{}.{}.{}", self.major, self.minor, self.patch)
    }
}

impl std::str::FromStr for KubeletVersion {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        KubeletVersion::parse(s).ok_or_else(|| {
            format!("`{s}` is not a kubelet version like v1.34.4 (status.nodeInfo.kubeletVersion)")
        })
    }
}

/// A promise and the first kubelet version that keeps it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Since {
    pub version: KubeletVersion,
    /// What is promised, as a reason reads it: "reverse-order shutdown".
    pub promise: &'static str,
    /// Where that version comes from (README).
    pub source: &'static str,
}

impl Since {
    /// Whether a kubelet of version `v` keeps this promise (unknown: yes).
    pub fn holds_on(&self, v: Option<KubeletVersion>) -> bool {
        v.is_none_or(|v| v >= self.version)
    }

    /// The NotApplicable reason on an older kubelet.
    pub fn why_not(&self, v: KubeletVersion) -> String {
        format!(
            "{} is promised from kubelet {}.{}; this node runs {v}",
            self.promise, self.version.major, self.version.minor
        )
    }
}

pub mod promises {
    //! The table of promises by version. Evidence:
    //! - 1.28: native sidecars (`initContainers[].restartPolicy: Always`),
    //!   alpha behind the `SidecarContainers` feature gate:
    //!   kubernetes#116429 "Add SidecarContainers feature" (the field's
    //!   documentation: started in order with the other init containers,
    //!   the next one waits for its startup completion; restarted until all
    //!   regular containers terminate, "at which point this container will be
    //!   terminated"). Ordered start, startupProbe gating and Job sidecar
    //!   termination date from here. Beta and on by default in 1.29, GA in
    //!   1.33 (KEP-753).
    //! - 1.29: ordered shutdown. CHANGELOG-1.29 (v1.29.0): "Sidecar
    //!   termination is now serialized and each sidecar container will
    //!   receive a SIGTERM after all main containers and later starting
    //!   sidecar containers have terminated. (#120620)". Before it a 1.28
    //!   kubelet killed sidecars together with the app containers.
    use super::{KubeletVersion, Since};

    pub const ORDERED_START: Since = Since {
        version: KubeletVersion::new(1, 28, 0),
        promise: "ordered sidecar start",
        source: "1.28 alpha (gate `SidecarContainers`), beta and on by default in 1.29: kubernetes#116429",
    };
    pub const JOB_SIDECARS_STOPPED: Since = Since {
        version: KubeletVersion::new(1, 28, 0),
        promise: "stopping a Job's sidecars once its app containers finished",
        source: "1.28 alpha (gate `SidecarContainers`), beta and on by default in 1.29: kubernetes#116429",
    };
    pub const GRACE_PERIOD: Since = Since {
        version: KubeletVersion::new(1, 28, 0),
        promise: "the native sidecar lifecycle",
        source: "the termination grace period itself is older; native sidecars exist from 1.28 (kubernetes#116429)",
    };
    pub const ORDERED_SHUTDOWN: Since = Since {
        version: KubeletVersion::new(1, 29, 0),
        promise: "reverse-order shutdown",
        source: "v1.29.0: \"Sidecar termination is now serialized\" (kubernetes#120620); 1.28 stopped sidecars together with the apps",
    };
}

/// Facts about one violation that the bug shapes look at, computed by the
/// judge from the pod's history.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Shape {
    /// The app container judged ran in a re-created pod sandbox (after a
    /// `SandboxChanged`: node reboot, runtime restart).
    pub app_in_recreated_sandbox: bool,
    /// The pod is being deleted and no app container ever started.
    pub deleted_during_init: bool,
    /// Some sidecar never started.
    pub sidecar_never_started: bool,
    /// The container the violation names first is a sidecar.
    pub names_sidecar: bool,
}

/// A release line a bug affects: every patch of `minor` below `fixed_patch`
/// (all of them when no fix reached that line).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Affected {
    pub minor: u16,
    pub fixed_patch: Option<u16>,
}

/// A known upstream kubelet bug whose shape a violation can have.
pub struct KnownBug {
    /// The kubernetes/kubernetes issue.
    pub issue: u32,
    pub title: &'static str,
    /// The rule whose violation it produces.
    pub rule: Rule,
    /// The situation, as the evidence states it.
    pub shape_doc: &'static str,
    pub shape: fn(&Shape) -> bool,
    /// Release lines (major 1) it affects.
    pub affected: &'static [Affected],
    /// The first minor release that has the fix.
    pub fixed_in: KubeletVersion,
    /// The fix: pull requests and release notes (README).
    pub fix: &'static str,
}

const fn line(minor: u16, fixed_patch: Option<u16>) -> Affected {
    Affected { minor, fixed_patch }
}

/// Known kubelet bugs, checked against upstream (see each `fix`). Only bugs
/// whose shape is one of our violations are here; the README lists the
/// ones checked and left out, and why.
pub const KNOWN_BUGS: &[KnownBug] = &[
    // kubernetes#120247: after the sandbox was re-created the 1.28 kubelet
    // took the pod for initialised and started app containers without
    // re-running init containers and sidecars first. Fix: PR #120269
    // (milestone v1.29; CHANGELOG-1.29 v1.29.0: "Fixed a bug around
    // restarting init containers in the right order relative to normal
    // containers with SidecarContainers feature enabled. (#120269)") and
    // PR #120281 (same changelog: "Fixed a v1.28 regression around
    // restarting init containers in the right order relative to normal
    // containers"). No 1.28 backport found in the release notes: every
    // 1.28 patch is listed as affected.
    KnownBug {
        issue: 120247,
        title: "after a node reboot app containers started before the init containers and sidecars were re-run",
        rule: Rule::AppStartedBeforeSidecar,
        shape_doc: "an app container started before a sidecar in a re-created pod sandbox (node reboot, SandboxChanged)",
        shape: |s| s.app_in_recreated_sandbox,
        affected: &[line(28, None)],
        fixed_in: KubeletVersion::new(1, 29, 0),
        fix: "PR #120269 and #120281, v1.29.0 (CHANGELOG-1.29); no 1.28 backport found",
    },
    // kubernetes#127793 "[SidecarContainers] Failed to get proper phase
    // after the node reboot": "it may lose the pending phase after the node
    // reboot and start the regular containers before initializing the init
    // containers". Fix: PR #128516 ("Fixes #127793"), release notes of
    // v1.33.0: "Fixed an issue where pods did not correctly have a pending
    // phase after the node reboot. (#128516)". No backport to 1.29-1.32
    // found in their release notes (the note appears once, under 1.33.0).
    // The lower bound 1.29 is ours: 1.28 is #120247's line; the issue names
    // no first affected version.
    KnownBug {
        issue: 127793,
        title: "after a node reboot a pod with sidecars lost its Pending phase and started app containers before re-initialising",
        rule: Rule::AppStartedBeforeSidecar,
        shape_doc: "an app container started before a sidecar in a re-created pod sandbox (node reboot, SandboxChanged)",
        shape: |s| s.app_in_recreated_sandbox,
        affected: &[
            line(29, None),
            line(30, None),
            line(31, None),
            line(32, None),
        ],
        fixed_in: KubeletVersion::new(1, 33, 0),
        fix: "PR #128516, v1.33.0 (release notes: \"pods did not correctly have a pending phase after the node reboot\"); no backport found",
    },
    // kubernetes#125880 "Termination signals not sent to Native Sidecars
    // when multiple Native Sidecars": a pod deleted while a sidecar's
    // startupProbe kept failing (a later sidecar never started) left its
    // running sidecars without SIGTERM until the grace period ran out. Fix:
    // PR #125935 ("Fixes #125880": "the restartable init container may not
    // receive SIGTERM if the last restartable init container hasn't run"),
    // release note "Fixed a bug that init containers with `Always`
    // restartPolicy may not terminate gracefully if the pod hasn't
    // initialized yet": v1.31.0 (#125935), v1.30.4 (#126331), v1.29.8
    // (#126332). 1.28 had no termination ordering (#120620 is 1.29), so it
    // is not affected.
    KnownBug {
        issue: 125880,
        title: "sidecars of a pod deleted during initialisation got no SIGTERM until the grace period ended",
        rule: Rule::SidecarForceKilled,
        shape_doc: "a pod deleted before any app container started, a sidecar never started, and a running sidecar was stopped only at the end of the grace period",
        shape: |s| s.deleted_during_init && s.sidecar_never_started && s.names_sidecar,
        affected: &[line(29, Some(8)), line(30, Some(4))],
        fixed_in: KubeletVersion::new(1, 31, 0),
        fix: "PR #125935 v1.31.0, #126331 v1.30.4, #126332 v1.29.8 (release notes)",
    },
];

impl KnownBug {
    pub fn id(&self) -> String {
        format!("kubernetes#{}", self.issue)
    }

    /// Whether a kubelet of version `v` carries the bug.
    pub fn affects(&self, v: KubeletVersion) -> bool {
        v.major == 1
            && self
                .affected
                .iter()
                .any(|a| a.minor == v.minor && a.fixed_patch.is_none_or(|p| v.patch < p))
    }

    /// The first release with the fix that `v` can upgrade to: a patch of
    /// its own line when the fix reached it, else the first fixed minor.
    pub fn fixed_for(&self, v: KubeletVersion) -> KubeletVersion {
        self.affected
            .iter()
            .find(|a| v.major == 1 && a.minor == v.minor)
            .and_then(|a| a.fixed_patch)
            .map_or(self.fixed_in, |p| KubeletVersion::new(1, v.minor, p))
    }

    /// The affected releases, as the README states them.
    pub fn affected_doc(&self) -> String {
        self.affected
            .iter()
            .map(|a| match a.fixed_patch {
                Some(0) => String::new(),
                Some(p) => format!("1.{}.0-1.{}.{}", a.minor, a.minor, p - 1),
                None => format!("1.{}.x", a.minor),
            })
            .filter(|s| !s.is_empty())
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// The note a matching violation's message gets.
    pub fn note(&self, v: KubeletVersion) -> String {
        format!(
            "kubelet {v}: matches {}, fixed in {}",
            self.id(),
            self.fixed_for(v)
        )
    }

    /// The evidence line a matching violation gets.
    pub fn evidence(&self, v: KubeletVersion) -> String {
        format!(
            "known kubelet bug {} ({}): {}; affects {}; this node runs {v}: upgrade the kubelet to {} or later",
            self.id(),
            self.title,
            self.shape_doc,
            self.affected_doc(),
            self.fixed_for(v)
        )
    }
}

/// The known bugs a violation of `rule` with `shape` matches on kubelet `v`.
pub fn known_bugs(
    v: KubeletVersion,
    rule: Rule,
    shape: &Shape,
) -> impl Iterator<Item = &'static KnownBug> + '_ {
    KNOWN_BUGS
        .iter()
        .filter(move |b| b.rule == rule && b.affects(v) && (b.shape)(shape))
}

/// The README's table of known bugs, generated from `KNOWN_BUGS`.
pub fn bug_table() -> String {
    let mut s = String::from(
        "| upstream issue | rule | shape | affected kubelets | fixed in | evidence |\n| --- | --- | --- | --- | --- | --- |\n",
    );
    for b in KNOWN_BUGS {
        s.push_str(&format!(
            "| [{}](https://github.com/kubernetes/kubernetes/issues/{}) {} | `{}` | {} | {} | {} | {} |\n",
            b.id(),
            b.issue,
            b.title,
            b.rule.id(),
            b.shape_doc,
            b.affected_doc(),
            b.fixed_in,
            b.fix
        ));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(s: &str) -> KubeletVersion {
        KubeletVersion::parse(s).unwrap_or_else(|| panic!("{s}"))
    }

    #[test]
    fn parses_what_nodes_report_and_nothing_else() {
        for (text, want) in [
            ("v1.34.4", Some((1, 34, 4))),
            ("1.34.4", Some((1, 34, 4))),
            ("v1.32.1-eks-abc1234", Some((1, 32, 1))),
            ("v1.29.6+k3s1", Some((1, 29, 6))),
            ("v1.30.14-gke.1234000", Some((1, 30, 14))),
            ("v1.33.0-rc.1", Some((1, 33, 0))),
            (" v1.28.3 ", Some((1, 28, 3))),
            ("", None),
            ("v", None),
            ("v1", None),
            ("v1.29", None),
            ("v1.29.", None),
            ("v1.29.6.1", None),
            ("v1..6", None),
            ("vv1.29.6", None),
            ("v1.29.x", None),
            ("v-1.29.6", None),
            ("v1.29.+6", None),
            ("v1.99999.0", None),
            ("unknown", None),
            ("v1.2९.0", None),
        ] {
            assert_eq!(
                KubeletVersion::parse(text).map(|k| (k.major, k.minor, k.patch)),
                want,
                "{text:?}"
            );
        }
        assert_eq!(v("v1.32.1-eks-abc").to_string(), "v1.32.1");
        assert_eq!(v("v1.32.1").minor_label(), "1.32");
        assert!(v("v1.29.10") > v("v1.29.9"));
        assert!("x".parse::<KubeletVersion>().is_err());
    }

    #[test]
    fn promises_hold_from_their_version_and_when_unknown() {
        let p = promises::ORDERED_SHUTDOWN;
        assert!(p.holds_on(None));
        assert!(p.holds_on(Some(v("v1.29.0"))));
        assert!(p.holds_on(Some(v("v1.37.2"))));
        assert!(!p.holds_on(Some(v("v1.28.15"))));
        assert_eq!(
            p.why_not(v("v1.28.3")),
            "reverse-order shutdown is promised from kubelet 1.29; this node runs v1.28.3"
        );
        assert!(!promises::ORDERED_START.holds_on(Some(v("v1.27.16"))));
        assert!(promises::ORDERED_START.holds_on(Some(v("v1.28.0"))));
    }

    fn bug(issue: u32) -> &'static KnownBug {
        KNOWN_BUGS.iter().find(|b| b.issue == issue).unwrap()
    }

    #[test]
    fn affected_ranges_end_at_the_fixed_patch_of_each_line() {
        let b = bug(125880);
        for (ver, affected, fixed) in [
            ("v1.28.15", false, "v1.31.0"),
            ("v1.29.0", true, "v1.29.8"),
            ("v1.29.7", true, "v1.29.8"),
            ("v1.29.8", false, "v1.29.8"),
            ("v1.30.3", true, "v1.30.4"),
            ("v1.30.4", false, "v1.30.4"),
            ("v1.31.0", false, "v1.31.0"),
            ("v2.30.0", false, "v1.31.0"),
        ] {
            assert_eq!(b.affects(v(ver)), affected, "{ver}");
            assert_eq!(b.fixed_for(v(ver)).to_string(), fixed, "{ver}");
        }
        assert_eq!(b.affected_doc(), "1.29.0-1.29.7, 1.30.0-1.30.3");
        let b = bug(127793);
        for (ver, affected) in [
            ("v1.28.3", false),
            ("v1.29.0", true),
            ("v1.32.13", true),
            ("v1.33.0", false),
            ("v1.34.4", false),
        ] {
            assert_eq!(b.affects(v(ver)), affected, "{ver}");
        }
        assert_eq!(
            b.note(v("v1.32.1")),
            "kubelet v1.32.1: matches kubernetes#127793, fixed in v1.33.0"
        );
        assert!(bug(120247).affects(v("v1.28.15")));
        assert!(!bug(120247).affects(v("v1.29.0")));
    }

    #[test]
    fn a_bug_needs_its_rule_its_shape_and_an_affected_kubelet() {
        let reboot = Shape {
            app_in_recreated_sandbox: true,
            ..Shape::default()
        };
        let ids = |ver: &str, rule: Rule, s: &Shape| -> Vec<u32> {
            known_bugs(v(ver), rule, s).map(|b| b.issue).collect()
        };
        assert_eq!(
            ids("v1.32.1", Rule::AppStartedBeforeSidecar, &reboot),
            [127793]
        );
        assert_eq!(
            ids("v1.28.3", Rule::AppStartedBeforeSidecar, &reboot),
            [120247]
        );
        assert!(ids("v1.33.0", Rule::AppStartedBeforeSidecar, &reboot).is_empty());
        assert!(ids("v1.32.1", Rule::SidecarStartOrder, &reboot).is_empty());
        assert!(ids("v1.32.1", Rule::AppStartedBeforeSidecar, &Shape::default()).is_empty());
        let init = Shape {
            deleted_during_init: true,
            sidecar_never_started: true,
            names_sidecar: true,
            ..Shape::default()
        };
        assert_eq!(ids("v1.30.3", Rule::SidecarForceKilled, &init), [125880]);
        assert!(
            ids(
                "v1.30.3",
                Rule::SidecarForceKilled,
                &Shape {
                    sidecar_never_started: false,
                    ..init
                }
            )
            .is_empty()
        );
    }

    #[test]
    fn every_bug_entry_is_complete() {
        for b in KNOWN_BUGS {
            assert!(!b.affected.is_empty(), "{}", b.id());
            for a in b.affected {
                assert!(a.minor < b.fixed_in.minor, "{}: line 1.{}", b.id(), a.minor);
            }
            assert!(!b.fix.is_empty() && !b.shape_doc.is_empty());
        }
    }
}
