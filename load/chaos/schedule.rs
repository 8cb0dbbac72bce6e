//! The fault schedule: how many faults of each kind, spread evenly over
//! the run, leader kills between the others; and each fault done.

use crate::Config;
use crate::faults;
use crate::replicas::{End, Fleet, Shared};
use crate::timeline::{first_write_after, leader_now};
use std::time::{Duration, Instant};

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Fault {
    /// SIGKILL of the replica holding the lease; it starts again after
    /// the restart delay (as a kubelet restarts a container).
    KillLeader,
    /// SIGKILL of a replica that does not hold the lease.
    KillStandby,
    /// kube-apiserver stopped and started again.
    RestartApiServer,
    /// etcd compacted to its current revision, then every replica's
    /// connections dropped: the watches resume from compacted resource
    /// versions and list again.
    Relist,
    /// The leader's network to the API server cut for a while.
    CutLeader,
}

impl Fault {
    pub fn name(self) -> &'static str {
        match self {
            Fault::KillLeader => "leader SIGKILLed",
            Fault::KillStandby => "standby SIGKILLed",
            Fault::RestartApiServer => "API server restarted",
            Fault::Relist => "etcd compacted + connections dropped (relist)",
            Fault::CutLeader => "leader's network cut",
        }
    }
}

#[derive(Clone, Copy, Debug)]
pub struct Counts {
    pub kill_leader: usize,
    pub kill_standby: usize,
    pub restart_apiserver: usize,
    pub relist: usize,
    pub cut_leader: usize,
}

/// The leader kills in order, each other kind of fault spread evenly
/// between them (never two of the other kinds back to back when avoidable).
/// An API server restart ends its stretch (with one, it is the last fault):
/// kwok delays or replays the stages of the pods alive around it, which
/// are left out of the verdict check, and the pods that lived and ended
/// before it are the ones checked.
pub fn plan(c: Counts) -> Vec<Fault> {
    let others = [
        (Fault::RestartApiServer, c.restart_apiserver),
        (Fault::Relist, c.relist),
        (Fault::CutLeader, c.cut_leader),
        (Fault::KillStandby, c.kill_standby),
    ];
    // Position in [0, 1) of every fault; kills at (k + 0.5) / n.
    let mut at: Vec<(f64, Fault)> = (0..c.kill_leader)
        .map(|k| ((k as f64 + 0.5) / c.kill_leader as f64, Fault::KillLeader))
        .collect();
    for (j, (fault, n)) in others.iter().enumerate() {
        // Offsets per kind, so kinds do not land on the same spot.
        let shift = if *fault == Fault::RestartApiServer {
            0.95
        } else {
            (j as f64 + 1.0) / (others.len() as f64 + 1.0)
        };
        for k in 0..*n {
            at.push(((k as f64 + shift) / *n as f64, *fault));
        }
    }
    at.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
    at.into_iter().map(|(_, f)| f).collect()
}

/// One fault as it happened.
pub struct Done {
    pub fault: Fault,
    /// When the writing replica lost its network (a kill holds it first).
    pub at: Instant,
    /// The incarnation that held the lease, for leader faults.
    pub leader: Option<usize>,
    pub detail: String,
    /// When the fault was over (the process killed, the API server ready,
    /// the network back).
    pub end: Instant,
    /// A leader wrote again within the failover timeout.
    pub recovered: bool,
}

/// Waits until a lease holder other than `not` stores a write after `t`;
/// replicas that exit on their own are noted meanwhile.
pub async fn wait_writing(rec: &Shared, t: Instant, not: Option<usize>, timeout: Duration) -> bool {
    let t0 = Instant::now();
    loop {
        if first_write_after(&rec.lock().expect("record").samples, t, not).is_some() {
            return true;
        }
        if t0.elapsed() > timeout {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Waits until every replica runs a process that answers /readyz 200
/// (its watches synced).
pub async fn wait_all_ready(fleet: &Fleet, rec: &Shared, timeout: Duration) -> bool {
    let t0 = Instant::now();
    loop {
        let mut all = rec
            .lock()
            .expect("record")
            .current
            .iter()
            .all(Option::is_some);
        for r in fleet {
            let addr = r.lock().await.addr.clone();
            all &= matches!(crate::prom::get(&addr, "/readyz").await, Ok((200, _)));
        }
        if all {
            return true;
        }
        if t0.elapsed() > timeout {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Kills replica `r` (ending it as `how`) and starts it again after `delay`.
pub async fn kill_and_restart(
    fleet: &Fleet,
    rec: &Shared,
    r: usize,
    how: End,
    delay: Duration,
    restarts: &mut Vec<tokio::task::JoinHandle<()>>,
) {
    fleet[r].lock().await.end(rec, how).await;
    let (replica, rec) = (fleet[r].clone(), rec.clone());
    restarts.push(tokio::spawn(async move {
        tokio::time::sleep(delay).await;
        let mut rep = replica.lock().await;
        if let Err(e) = rep.start(&rec) {
            eprintln!("chaos: restarting replica {}: {e}", rep.idx);
        }
    }));
}

pub async fn run_fault(
    cfg: &Config,
    fleet: &Fleet,
    rec: &Shared,
    fault: Fault,
    restarts: &mut Vec<tokio::task::JoinHandle<()>>,
) -> Result<Done, String> {
    let now = leader_now(&rec.lock().expect("record"));
    let mut done = Done {
        fault,
        at: Instant::now(),
        leader: now.map(|x| x.1),
        detail: String::new(),
        end: Instant::now(),
        recovered: false,
    };
    match fault {
        Fault::KillLeader => {
            let Some((r, _)) = now else {
                done.detail = "no leader to kill".into();
                return Ok(done);
            };
            done.at = Instant::now();
            kill_and_restart(
                fleet,
                rec,
                r,
                End::KilledLeader,
                cfg.restart_delay,
                restarts,
            )
            .await;
            done.detail = format!("replica {r}");
        }
        Fault::KillStandby => {
            let standby = {
                let rc = rec.lock().expect("record");
                (0..fleet.len()).find(|r| rc.current[*r].is_some() && Some(*r) != now.map(|x| x.0))
            };
            let Some(r) = standby else {
                done.detail = "no standby running".into();
                return Ok(done);
            };
            kill_and_restart(
                fleet,
                rec,
                r,
                End::KilledStandby,
                cfg.restart_delay,
                restarts,
            )
            .await;
            done.detail = format!("replica {r}");
        }
        Fault::RestartApiServer => {
            let took = faults::restart_apiserver(&cfg.apiserver, cfg.apiserver_grace).await?;
            faults::restart_kwok().await?;
            done.detail = format!("away {:.1}s", took.as_secs_f64());
        }
        Fault::Relist => {
            let rev = faults::compact_etcd(&cfg.etcd).await?;
            for r in fleet {
                r.lock().await.proxy.drop_connections();
            }
            done.detail = format!("compacted at revision {rev}");
        }
        Fault::CutLeader => {
            let Some((r, _)) = now else {
                done.detail = "no leader to cut".into();
                return Ok(done);
            };
            done.at = Instant::now();
            let proxy = fleet[r].lock().await.proxy.clone();
            proxy.cut();
            tokio::time::sleep(cfg.cut).await;
            proxy.heal();
            done.detail = format!("replica {r} for {:.0}s", cfg.cut.as_secs_f64());
        }
    }
    done.end = Instant::now();
    Ok(done)
}

impl Done {
    /// Since when, and from whom other than, a write shows the fault is
    /// over: a leader killed or cut off is replaced by another process,
    /// from the moment it lost its network; after the other faults, any
    /// lease holder writes again after the fault's end.
    pub fn recovery(&self) -> (Instant, Option<usize>) {
        match self.fault {
            Fault::KillLeader | Fault::CutLeader => (self.at, self.leader),
            _ => (self.end, None),
        }
    }
}
