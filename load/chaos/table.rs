//! The one table a chaos run prints, and whether the run passed: every
//! verdict right, every increment counted once (no measurement gap), no
//! duplicate Event, every failover completed. The targets (failover p99, standby RSS) are printed as met
//! or MISSED, not enforced.

use crate::Config;
use crate::pods::Book;
use crate::replicas::{self, Record};
use crate::schedule::{Done, Fault};
use crate::tally::{Counted, Events, Stored};
use crate::timeline::quantile;
use crate::unanswered::LostAtKill;
use crate::verify::Outcome;
use std::time::Duration;

/// Everything the table shows.
pub struct Summary<'a> {
    pub cfg: &'a Config,
    pub book: &'a Book,
    pub outcome: &'a Outcome,
    pub stored: &'a Stored,
    pub counted: &'a Counted,
    /// Violations stored by a write its SIGKILLed process left unanswered.
    pub lost_at_kill: &'a [LostAtKill],
    pub events: &'a Events,
    pub done: &'a [Done],
    pub rec: &'a Record,
    pub churn: Duration,
    pub settled: bool,
    /// Sorted, in seconds.
    pub failovers: Vec<f64>,
    pub stuck: Vec<String>,
    /// The longest stretch without a stored write, and the fault before it.
    pub gap: Duration,
    pub gap_fault: String,
    pub two_leaders: usize,
    /// Per replica: log lines of watches listing again after 410 Gone.
    pub relists: Vec<usize>,
    /// Pods left out of the verdict check (see `outside_outages`).
    pub excluded: usize,
    /// Per running replica once settled: (index, leads, RSS KiB, peak KiB).
    pub rss: Vec<(usize, bool, u64, u64)>,
}

fn mib(kib: u64) -> String {
    format!("{:.1} MiB", kib as f64 / 1024.0)
}

/// The table's text, and whether the run passed.
pub fn render(s: &Summary) -> (String, bool) {
    let Summary {
        cfg,
        book,
        outcome,
        stored,
        counted,
        lost_at_kill,
        events,
        done,
        rec,
        churn,
        settled,
        failovers,
        stuck,
        gap,
        gap_fault,
        two_leaders,
        relists,
        excluded,
        rss,
    } = s;
    let (settled, two_leaders) = (*settled, *two_leaders);
    let b = book;
    let count_of = |f: Fault| {
        done.iter()
            .filter(|d| d.fault == f && !d.detail.starts_with("no "))
            .count()
    };
    let crashed = rec.incarnations.iter().filter(|i| i.crashed).count();
    // Per rule: counted, plus stored by a write its SIGKILLed process left
    // unanswered (`unanswered::lost_at_kill`), is what the reports hold.
    let lost_of = |rule: &str| lost_at_kill.iter().filter(|l| l.rule == rule).count() as f64;
    let violations_ok = counted.gaps.is_empty()
        && counted.violations + lost_at_kill.len() as f64 == stored.violations as f64
        && stored
            .by_rule
            .iter()
            .all(|(r, n)| counted.by_rule.get(r).copied().unwrap_or(0.0) + lost_of(r) == *n as f64);
    let metric_ok = violations_ok && counted.probe_failures == stored.probe_failures as f64;
    let verdicts_ok = outcome.differ.is_empty()
        && outcome.missing.is_empty()
        && outcome.vanished.is_empty()
        && outcome.checked > 0;
    let q = |x: f64| quantile(failovers, x).map_or("-".into(), |v| format!("{v:.1}s"));
    let p99 = quantile(failovers, 0.99);
    #[allow(clippy::type_complexity)]
    let (lead_rss, standby_rss): (Vec<&(usize, bool, u64, u64)>, Vec<_>) =
        rss.iter().partition(|x| x.1);
    let rss_line = rss
        .iter()
        .map(|(i, l, now, hwm)| {
            format!(
                "replica {i} {} {} (peak {})",
                if *l { "leader" } else { "standby" },
                mib(*now),
                mib(*hwm)
            )
        })
        .collect::<Vec<_>>()
        .join("; ");
    let rss_ratio = match (lead_rss.first(), standby_rss.first()) {
        (Some(l), Some(s)) if l.2 > 0 => {
            let d: f64 = 100.0 * (s.2 as f64 - l.2 as f64) / l.2 as f64;
            format!(
                "standby {d:+.1}% against the leader (target within 10%: {}; the issue's worry is a standby that grows: at most 10% above: {})",
                if d.abs() <= 10.0 { "met" } else { "MISSED" },
                if d <= 10.0 { "met" } else { "MISSED" }
            )
        }
        _ => "no leader/standby pair running at the end".into(),
    };
    let mark = |ok: bool| if ok { "ok" } else { "FAILED" };
    let rows: Vec<(String, String)> = vec![
        (
            "pods".into(),
            format!(
                "{} created ({} at {}/s, then churn {}/s for {:.0}s), {} deleted, {} live at the end; {} kwok nodes; create/delete errors {}/{}",
                b.created.len(),
                cfg.pods,
                cfg.rate,
                cfg.churn,
                churn.as_secs_f64(),
                b.deleted.len(),
                outcome.live_pods,
                cfg.nodes,
                b.create_errors,
                b.delete_errors
            ),
        ),
        (
            "faults".into(),
            format!(
                "{} leader SIGKILLs, {} standby SIGKILLs (restarted after {:.0}s), {} API server restarts, {} relists (etcd compaction + connections dropped), {} leader network cuts of {:.0}s",
                count_of(Fault::KillLeader),
                count_of(Fault::KillStandby),
                cfg.restart_delay.as_secs_f64(),
                count_of(Fault::RestartApiServer),
                count_of(Fault::Relist),
                count_of(Fault::CutLeader),
                cfg.cut.as_secs_f64()
            ),
        ),
        (
            "processes".into(),
            format!(
                "{} replicas, {} processes in all; {} exited on their own (started again after the restart delay, as a kubelet would); watch relists after 410 Gone in the logs: {}",
                cfg.replicas,
                rec.incarnations.len(),
                crashed,
                relists
                    .iter()
                    .enumerate()
                    .map(|(i, n)| format!("replica {i} {n}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        ),
        (
            "reports: verdicts vs labels".into(),
            format!(
                "{}: {} wrong, {} missing, {} undecided (ended while no watch was up, Indeterminate with the gap named), {} late (kwok stopped a container at or after the grace deadline), {} deleted by someone else (the environment: {} TaintManagerEviction events) of {} pods checked ({} created or deleted around an API server restart not checked: kwok replays or delays their stages); {} reports in {}{}",
                mark(verdicts_ok),
                outcome.differ.len(),
                outcome.missing.len(),
                outcome.undecided.len(),
                outcome.late.len(),
                outcome.vanished.len(),
                outcome.evictions,
                outcome.checked,
                excluded,
                outcome.reports,
                cfg.ns,
                if settled { "" } else { " (did not settle)" }
            ),
        ),
        (
            "violations: counted vs stored".into(),
            format!(
                "{}: {} counted over all processes{}, {} in the reports ({}); status writes left unanswered and read back: {}",
                mark(violations_ok),
                counted.violations,
                if lost_at_kill.is_empty() {
                    String::new()
                } else {
                    format!(
                        " + {} stored by a status write its process left unanswered and was SIGKILLed before it could learn it landed ({})",
                        lost_at_kill.len(),
                        lost_at_kill
                            .iter()
                            .map(|l| format!(
                                "{} {} by {} of replica {} pid {}",
                                l.report, l.rule, l.write_id, l.replica, l.pid
                            ))
                            .collect::<Vec<_>>()
                            .join("; ")
                    )
                },
                stored.violations,
                stored
                    .by_rule
                    .iter()
                    .map(|(r, n)| {
                        let c = counted.by_rule.get(r).copied().unwrap_or(0.0);
                        match lost_of(r) {
                            0.0 => format!("{r}: {c} / {n}"),
                            l => format!("{r}: {c} + {l} / {n}"),
                        }
                    })
                    .collect::<Vec<_>>()
                    .join(", "),
                if counted.unanswered.is_empty() {
                    "none".to_string()
                } else {
                    counted
                        .unanswered
                        .iter()
                        .map(|(r, n)| format!("{} {n}", r.trim_start_matches("unanswered_")))
                        .collect::<Vec<_>>()
                        .join(", ")
                }
            ),
        ),
        (
            "probe failures: counted vs stored".into(),
            format!(
                "{}: {} / {}",
                mark(
                    counted.probe_failures == stored.probe_failures as f64
                        && counted.gaps.is_empty()
                ),
                counted.probe_failures,
                stored.probe_failures
            ),
        ),
        (
            "measurement gaps".into(),
            if counted.gaps.is_empty() {
                format!(
                    "none: each of the {} processes scraped with its requests held for {}s right before its SIGKILL",
                    counted.incarnations,
                    replicas::HOLD_BEFORE_KILL.as_secs()
                )
            } else {
                counted.gaps.join("; ")
            },
        ),
        (
            "Warning Events (SidecarOrderViolation)".into(),
            format!(
                "{}: {} duplicated on a pod; {} events ({} occurrences) for {} stored violations; by pod and rule: {} violations without an event, {} events beyond the stored violations",
                mark(events.duplicates.is_empty()),
                events.duplicates.len(),
                events.objects,
                events.occurrences,
                stored.violations,
                events.missing,
                events.extra
            ),
        ),
        (
            "failover (leader's network held -> first write by another process)".into(),
            format!(
                "p50 {} p99 {} max {} over {} leader kills (target p99 <= 15s: {}); {} without a new leader writing within {}s",
                q(0.5),
                q(0.99),
                failovers.last().map_or("-".into(), |v| format!("{v:.1}s")),
                failovers.len(),
                match p99 {
                    Some(v) if v <= 15.0 => "met",
                    Some(_) => "MISSED",
                    None => "-",
                },
                stuck.len(),
                cfg.failover_timeout.as_secs()
            ),
        ),
        (
            "longest time without a stored write".into(),
            format!(
                "{:.1}s during the churn (after: {gap_fault}); {} sampler rounds with two processes claiming the lease",
                gap.as_secs_f64(),
                two_leaders
            ),
        ),
        (
            "RSS once settled".into(),
            format!("{rss_line}; {rss_ratio}"),
        ),
    ];
    let mut table = String::new();
    table.push_str(&format!(
        "\nsidecar-order chaos: {} pods + churn {}/s, {} replicas with --leader-elect, kwok\n",
        cfg.pods, cfg.churn, cfg.replicas
    ));
    let w = rows.iter().map(|r| r.0.len()).max().unwrap_or(0);
    for (k, v) in &rows {
        table.push_str(&format!("  {k:<w$}  {v}\n"));
    }
    for d in outcome.differ.iter().take(10) {
        table.push_str(&format!("  WRONG      {d}\n"));
    }
    for u in outcome.undecided.iter().take(10) {
        table.push_str(&format!("  UNDECIDED  {u}\n"));
    }
    for l in outcome.late.iter().take(10) {
        table.push_str(&format!("  LATE       {l}\n"));
    }
    for m in outcome.missing.iter().take(10) {
        table.push_str(&format!("  MISSING    {m}\n"));
    }
    for v in outcome.vanished.iter().take(10) {
        table.push_str(&format!("  VANISHED   {v}\n"));
    }
    for d in events.duplicates.iter().take(10) {
        table.push_str(&format!("  DUPLICATE  {d}\n"));
    }
    for s in stuck.iter().take(10) {
        table.push_str(&format!("  STUCK      {s}\n"));
    }
    let ok = verdicts_ok && metric_ok && events.duplicates.is_empty() && stuck.is_empty();
    table.push_str(&if ok {
        "chaos: ok: every report present with its labels' verdicts, every increment counted once, no duplicate event, every failover completed\n".to_string()
    } else {
        "chaos: FAILED: see the rows marked FAILED above\n".to_string()
    });
    (table, ok)
}
