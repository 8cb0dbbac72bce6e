//! What the samples say about who led and who wrote when: the current
//! leader, the first write after a fault, the longest stretch without any
//! write, and two processes claiming the lease at once. A write shows as a
//! rise of an incarnation's stored-write counter between two of its
//! samples, so each time is known to within the sampling interval.

use crate::replicas::{Incarnation, Record, Sample};
use crate::schedule::{Done, Fault};
use std::collections::HashMap;
use std::time::{Duration, Instant};

/// The current incarnation holding the lease by its latest sample (the one
/// written most lately when several claim it).
pub fn leader_now(rec: &Record) -> Option<(usize, usize)> {
    let mut best: Option<(Instant, usize, usize)> = None;
    for (replica, cur) in rec.current.iter().enumerate() {
        let Some(i) = cur else { continue };
        let Some(s) = rec.samples.iter().rev().find(|s| s.incarnation == *i) else {
            continue;
        };
        if s.leader && s.at.elapsed() < Duration::from_secs(3) && best.is_none_or(|b| s.at > b.0) {
            best = Some((s.at, replica, *i));
        }
    }
    best.map(|(_, r, i)| (r, i))
}

/// The first sample after `t` showing a write stored by a lease holder
/// other than incarnation `not`.
pub fn first_write_after(samples: &[Sample], t: Instant, not: Option<usize>) -> Option<Instant> {
    let mut prev: HashMap<usize, f64> = HashMap::new();
    for s in samples {
        let before = prev.insert(s.incarnation, s.stored).unwrap_or(0.0);
        if s.at > t && s.leader && Some(s.incarnation) != not && s.stored > before {
            return Some(s.at);
        }
    }
    None
}

/// The q-quantile (nearest rank) of sorted durations.
pub fn quantile(sorted: &[f64], q: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    Some(sorted[rank - 1])
}

/// The longest stretch in [from, to] without a stored write by any
/// process, and when it began.
pub fn longest_gap(samples: &[Sample], from: Instant, to: Instant) -> (Duration, Instant) {
    let mut prev: HashMap<usize, f64> = HashMap::new();
    let mut last = from;
    let mut best = (Duration::ZERO, from);
    for s in samples {
        let before = prev.insert(s.incarnation, s.stored).unwrap_or(0.0);
        if s.at < from || s.at > to || s.stored <= before {
            continue;
        }
        if s.at - last > best.0 {
            best = (s.at - last, last);
        }
        last = s.at;
    }
    if to > last && to - last > best.0 {
        best = (to - last, last);
    }
    best
}

/// Sampler rounds in which two running processes both claimed the lease.
pub fn two_leaders(samples: &[Sample], incs: &[Incarnation], every: Duration) -> usize {
    let mut claims: HashMap<usize, Instant> = HashMap::new();
    let mut rounds = 0;
    let mut last_round: Option<Instant> = None;
    for s in samples {
        if s.leader {
            claims.insert(s.incarnation, s.at);
        } else {
            claims.remove(&s.incarnation);
        }
        let live = claims
            .iter()
            .filter(|(i, at)| {
                s.at - **at <= every * 3 && incs[**i].ended.is_none_or(|(e, _)| e > s.at)
            })
            .count();
        if live >= 2 && last_round.is_none_or(|l| s.at - l >= every) {
            rounds += 1;
            last_round = Some(s.at);
        }
    }
    rounds
}

/// Failover of every leader kill, in seconds, sorted (the leader's network
/// held -> the first write by another process holding the lease); and the
/// kills after which no leader wrote within the failover timeout.
pub fn failovers(done: &[Done], samples: &[Sample]) -> (Vec<f64>, Vec<String>) {
    let mut out: Vec<f64> = Vec::new();
    let mut stuck = Vec::new();
    for d in done
        .iter()
        .filter(|d| d.fault == Fault::KillLeader && d.leader.is_some())
    {
        match first_write_after(samples, d.at, d.leader) {
            Some(w) if d.recovered => out.push((w - d.at).as_secs_f64()),
            _ => stuck.push(format!(
                "no other process wrote after the kill of the leader {}",
                d.detail
            )),
        }
    }
    out.sort_by(f64::total_cmp);
    (out, stuck)
}
