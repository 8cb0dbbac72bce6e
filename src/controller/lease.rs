//! Who may write: the Lease (kube-lease-manager) fenced by the Lease object
//! itself. The lease manager keeps saying "leader" while it cannot renew
//! (API server unreachable or restarting); the chaos run saw two replicas
//! claim the lease at once and count and announce twice. So a replica
//! counts as leader only while the manager says so AND a read of the Lease,
//! at most `FENCE_EVERY` old, shows it as holder with time left: when the
//! reads fail, its leadership runs out before the Lease expires and another
//! replica can take it.

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::jiff::Timestamp;
use kube::{Api, Client};
use std::time::Duration;
use tokio::sync::{oneshot, watch};
use tokio::time::Instant;

type LeaseTask =
    tokio::task::JoinHandle<kube_lease_manager::Result<kube_lease_manager::LeaseManager>>;

/// The Lease's duration; the manager renews it `LEASE_GRACE` before its end
/// (every 3 s). A leader that dies unannounced (SIGKILL, node lost) is
/// replaced once its Lease expires: at most this long, plus the new
/// leader's read of the stored reports (the chaos run measured failover p99
/// above 15 s at 5,000 pods with a 15 s Lease).
pub const LEASE_DURATION: Duration = Duration::from_secs(8);
/// The renewal must be seen by the fence before leadership runs out
/// (`FENCE_MARGIN` before the end): grace > margin + `FENCE_EVERY` + the
/// renewal's own latency, else the leader drops its lead for a moment
/// after every renewal (seen with 8 s / 3 s / 2 s reads: each drop a new
/// takeover, pending writes dropped).
const LEASE_GRACE: Duration = Duration::from_secs(5);
/// How often the leader reads the Lease.
pub const FENCE_EVERY: Duration = Duration::from_secs(1);
/// Leadership ends this long before the Lease would expire.
const FENCE_MARGIN: Duration = Duration::from_secs(2);

/// Who may write: the fenced lease state, or a constant "yes" without
/// election.
pub struct Leadership {
    pub rx: watch::Receiver<bool>,
    /// The lease manager's task, once it runs (to release the Lease at
    /// shutdown).
    pub task: Option<oneshot::Receiver<LeaseTask>>,
    /// Keeps the constant "yes" open without election.
    pub _fixed: Option<watch::Sender<bool>>,
}

/// Where the Lease is and whose it should be.
pub struct LeaseSettings<'a> {
    pub elect: bool,
    pub name: &'a str,
    pub namespace: &'a str,
    pub identity: &'a str,
}

/// Joins the election once `synced` turns true: a process whose index is
/// not complete yet cannot write, and must not hold the Lease meanwhile.
/// (A restarted container keeps its pod's name, so its identity: joining
/// at once, it renewed the Lease its killed predecessor held and kept the
/// warm standby out while it listed every pod; the chaos run measured
/// 15-18 s failovers at 5,000 pods that way.)
pub async fn lease(
    client: &Client,
    s: &LeaseSettings<'_>,
    mut synced: watch::Receiver<bool>,
) -> Result<Leadership, String> {
    if !s.elect {
        let (tx, rx) = watch::channel(true);
        return Ok(Leadership {
            rx,
            task: None,
            _fixed: Some(tx),
        });
    }
    let manager = kube_lease_manager::LeaseManagerBuilder::new(client.clone(), s.name)
        .with_namespace(s.namespace)
        .with_identity(s.identity)
        .with_duration(LEASE_DURATION.as_secs())
        .with_grace(LEASE_GRACE.as_secs())
        .build()
        .await
        .map_err(|e| e.to_string())?;
    let (tx, rx) = watch::channel(false);
    let (task_tx, task_rx) = oneshot::channel();
    let api: Api<Lease> = Api::namespaced(client.clone(), s.namespace);
    let (name, identity) = (s.name.to_string(), s.identity.to_string());
    tokio::spawn(async move {
        // Err: the controller is shutting down before it synced.
        if synced.wait_for(|synced| *synced).await.is_err() {
            return;
        }
        let (manager_rx, task) = manager.watch().await;
        let _ = task_tx.send(task);
        fence(api, name, identity, manager_rx, tx).await;
    });
    Ok(Leadership {
        rx,
        task: Some(task_rx),
        _fixed: None,
    })
}

/// How long `identity` still holds `lease` at `now`, less the margin.
pub fn held_for(lease: &Lease, identity: &str, now: Timestamp) -> Option<Duration> {
    let spec = lease.spec.as_ref()?;
    if spec.holder_identity.as_deref() != Some(identity) {
        return None;
    }
    let renewed = spec.renew_time.as_ref()?.0;
    let duration = i64::from(spec.lease_duration_seconds?);
    let end_ms = renewed.as_millisecond() + duration * 1000;
    let left_ms = end_ms - now.as_millisecond() - FENCE_MARGIN.as_millis() as i64;
    (left_ms > 0).then(|| Duration::from_millis(left_ms as u64))
}

/// Publishes "leader" while the manager says so and the Lease, read at
/// most `FENCE_EVERY` ago, still names this replica with time left. Ends
/// (closing `tx`) when the manager's task ends.
async fn fence(
    api: Api<Lease>,
    name: String,
    identity: String,
    mut manager: watch::Receiver<bool>,
    tx: watch::Sender<bool>,
) {
    let mut confirmed_until: Option<Instant> = None;
    let mut tick = tokio::time::interval(Duration::from_millis(500));
    let mut last_read: Option<Instant> = None;
    loop {
        tokio::select! {
            changed = manager.changed() => if changed.is_err() { return },
            _ = tick.tick() => {}
        }
        let manager_says = *manager.borrow_and_update();
        if !manager_says {
            confirmed_until = None;
        } else if last_read.is_none_or(|t| t.elapsed() >= FENCE_EVERY) || confirmed_until.is_none()
        {
            let asked = Instant::now();
            last_read = Some(asked);
            let read = tokio::time::timeout(FENCE_EVERY, api.get_opt(&name)).await;
            match read {
                Ok(Ok(Some(lease))) => {
                    confirmed_until =
                        held_for(&lease, &identity, Timestamp::now()).map(|left| asked + left);
                }
                Ok(Ok(None)) => confirmed_until = None,
                // Unreadable: the last confirmation runs out on its own.
                Ok(Err(e)) => tracing::debug!(error = %e, "reading the Lease failed"),
                Err(_) => tracing::debug!("reading the Lease timed out"),
            }
        }
        let leading = manager_says && confirmed_until.is_some_and(|t| Instant::now() < t);
        tx.send_if_modified(|v| {
            let changed = *v != leading;
            *v = leading;
            changed
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::coordination::v1::LeaseSpec;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;

    /// A renewal is seen by the fence, with a second to spare for the
    /// renewal's own round trip, before leadership would run out.
    #[test]
    fn the_lease_is_renewed_early_enough_for_the_fence() {
        assert!(LEASE_GRACE < LEASE_DURATION);
        assert!(
            LEASE_GRACE >= FENCE_MARGIN + FENCE_EVERY + Duration::from_secs(1),
            "renewed {LEASE_GRACE:?} before the end, leadership ends {FENCE_MARGIN:?} before it, read every {FENCE_EVERY:?}"
        );
    }

    fn lease(holder: &str, renewed: Timestamp) -> Lease {
        Lease {
            spec: Some(LeaseSpec {
                holder_identity: Some(holder.into()),
                renew_time: Some(MicroTime(renewed)),
                lease_duration_seconds: Some(15),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn a_lease_is_held_until_its_end_less_the_margin() {
        let t0: Timestamp = "2026-11-26T12:00:00Z".parse().unwrap();
        let at = |s: i64| Timestamp::from_second(t0.as_second() + s).unwrap();
        let l = lease("a", t0);
        assert_eq!(held_for(&l, "a", at(0)), Some(Duration::from_secs(13)));
        assert_eq!(held_for(&l, "a", at(12)), Some(Duration::from_secs(1)));
        // The last 2 s are nobody's: the other replica takes it only after the end.
        assert_eq!(held_for(&l, "a", at(13)), None);
        assert_eq!(held_for(&l, "b", at(0)), None);
        assert_eq!(held_for(&Lease::default(), "a", at(0)), None);
    }
}
