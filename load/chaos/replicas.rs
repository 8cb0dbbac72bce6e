//! The controller replicas: plain processes with `--leader-elect`, each with
//! its own identity, metrics port, log and network (a `Proxy` and a
//! kubeconfig copy that points at it). Every process a replica runs is one
//! incarnation; what an incarnation counted is read from its last scrape,
//! taken after its network was held (see `end`).

use crate::controller::Controller;
use crate::prom;
use crate::proxy::Proxy;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub const VIOLATIONS: &str = "sidecar_order_violations_total";
pub const PROBE_FAILURES: &str = "sidecar_order_probe_failures_total";
pub const LEADER: &str = "sidecar_order_leader";
pub const WRITES: &str = "sidecar_order_report_writes_total";
/// The `result`s of `WRITES` that stored something.
pub const STORED: &[&str] = &["written", "recreated", "closed"];

/// How long requests stay held before the last scrape of a process that
/// is about to be killed: the answers to what the API server got arrive,
/// and are counted, meanwhile.
pub const HOLD_BEFORE_KILL: Duration = Duration::from_secs(2);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum End {
    /// SIGKILLed as the leader.
    KilledLeader,
    /// SIGKILLed as a standby.
    KilledStandby,
    /// Killed at the end of the run, after the checks' last scrape.
    Final,
    /// Exited on its own.
    Exited,
}

/// One process of one replica.
#[derive(Clone, Debug)]
pub struct Incarnation {
    pub replica: usize,
    pub pid: u32,
    pub started: Instant,
    pub ended: Option<(Instant, End)>,
    /// The newest scrape, and whether it was taken with the network held
    /// right before the process ended (else: a measurement gap).
    pub last: Option<prom::Scrape>,
    pub last_at: Option<Instant>,
    pub final_scrape: bool,
    /// It exited before the harness killed it (a crash).
    pub crashed: bool,
    pub peak_rss_kib: u64,
}

/// One scrape of one incarnation, for failover and write-gap times.
#[derive(Clone, Copy, Debug)]
pub struct Sample {
    pub at: Instant,
    pub incarnation: usize,
    pub leader: bool,
    /// Writes that stored something, since the process started.
    pub stored: f64,
}

/// What the sampler and the schedule share.
#[derive(Default)]
pub struct Record {
    pub incarnations: Vec<Incarnation>,
    pub samples: Vec<Sample>,
    /// The current incarnation of each replica (index into incarnations).
    pub current: Vec<Option<usize>>,
}

pub type Shared = Arc<Mutex<Record>>;

pub struct Replica {
    pub idx: usize,
    pub identity: String,
    pub addr: String,
    pub proxy: Proxy,
    pub ctl: Controller,
}

pub fn stored(m: &prom::Scrape) -> f64 {
    m.sum(WRITES, |l| {
        l.get("result")
            .is_some_and(|r| STORED.contains(&r.as_str()))
    })
}

/// A copy of `kubeconfig` whose server is https://127.0.0.1:PORT.
pub fn kubeconfig_via(kubeconfig: &Path, port: u16, out: &Path) -> Result<(), String> {
    let text = std::fs::read_to_string(kubeconfig)
        .map_err(|e| format!("reading {}: {e}", kubeconfig.display()))?;
    let mut n = 0;
    let rewritten: Vec<String> = text
        .lines()
        .map(|l| match l.trim_start().strip_prefix("server:") {
            Some(_) => {
                n += 1;
                let indent = &l[..l.len() - l.trim_start().len()];
                format!("{indent}server: https://127.0.0.1:{port}")
            }
            None => l.to_string(),
        })
        .collect();
    if n != 1 {
        return Err(format!(
            "{}: expected one `server:` line, found {n}",
            kubeconfig.display()
        ));
    }
    std::fs::write(out, rewritten.join("\n") + "\n")
        .map_err(|e| format!("writing {}: {e}", out.display()))
}

impl Replica {
    #[allow(clippy::too_many_arguments)]
    pub async fn new(
        idx: usize,
        bin: &str,
        base_args: &[String],
        port: u16,
        kubeconfig: &Path,
        upstream: &str,
        dir: &Path,
        pid_dir: &Path,
    ) -> Result<Replica, String> {
        let proxy = Proxy::start(upstream.to_string())
            .await
            .map_err(|e| format!("starting the proxy of replica {idx}: {e}"))?;
        let kc = dir.join(format!("replica-{idx}.kubeconfig"));
        kubeconfig_via(kubeconfig, proxy.port, &kc)?;
        let identity = format!("chaos-replica-{idx}");
        let addr = format!("127.0.0.1:{port}");
        let mut args = base_args.to_vec();
        args.extend([
            "--metrics-addr".into(),
            addr.clone(),
            "--identity".into(),
            identity.clone(),
        ]);
        let mut ctl = Controller::new(bin.to_string(), args, addr.clone(), dir.into(), pid_dir)
            .named(&format!("chaos-replica-{idx}"), dir, pid_dir);
        ctl.env = vec![
            ("KUBECONFIG".into(), kc.display().to_string()),
            // Each counted violation, by report: `miscounted.txt`.
            (
                "RUST_LOG".into(),
                "info,kube=warn,sidecar_order::counted=debug".into(),
            ),
            // Plain words in the log, for `miscounted.txt` to read.
            ("NO_COLOR".into(), "1".into()),
        ];
        // One run per log: a new run starts it afresh.
        std::fs::write(&ctl.log, "").map_err(|e| format!("{}: {e}", ctl.log.display()))?;
        Ok(Replica {
            idx,
            identity,
            addr,
            proxy,
            ctl,
        })
    }

    pub fn log(&self) -> PathBuf {
        self.ctl.log.clone()
    }

    /// Starts a new incarnation (the network opened first).
    pub fn start(&mut self, rec: &Shared) -> Result<(), String> {
        self.proxy.open();
        let _ = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.ctl.log)
            .and_then(|mut f| {
                use std::io::Write;
                writeln!(
                    f,
                    "=== chaos: starting replica {} ({})",
                    self.idx, self.identity
                )
            });
        self.ctl.spawn()?;
        let mut r = rec.lock().expect("record");
        r.incarnations.push(Incarnation {
            replica: self.idx,
            pid: self.ctl.pid,
            started: Instant::now(),
            ended: None,
            last: None,
            last_at: None,
            final_scrape: false,
            crashed: false,
            peak_rss_kib: 0,
        });
        let i = r.incarnations.len() - 1;
        r.current[self.idx] = Some(i);
        Ok(())
    }

    /// Ends the current incarnation: requests held (answers still arrive),
    /// `HOLD_BEFORE_KILL`, its last scrape, SIGKILL. The network stays
    /// held until the next start; connections are dropped.
    pub async fn end(&mut self, rec: &Shared, how: End) {
        let Some(i) = rec.lock().expect("record").current[self.idx] else {
            return;
        };
        self.proxy.hold_requests();
        tokio::time::sleep(HOLD_BEFORE_KILL).await;
        let scrape = prom::scrape(&self.addr).await.ok();
        let proc = self.ctl.sample();
        let crashed = self.ctl.kill();
        self.proxy.cut();
        self.proxy.drop_connections();
        let mut r = rec.lock().expect("record");
        r.current[self.idx] = None;
        let inc = &mut r.incarnations[i];
        inc.ended = Some((Instant::now(), how));
        inc.crashed |= crashed;
        inc.peak_rss_kib = inc.peak_rss_kib.max(proc.rss_kib);
        if let Some(m) = scrape {
            inc.last = Some(m);
            inc.last_at = Some(Instant::now());
            inc.final_scrape = !crashed;
        }
    }

    /// Whether the current process exited by itself; then it is recorded
    /// as ended (`Exited`) and reaped.
    pub fn check_exit(&mut self, rec: &Shared) -> bool {
        let Some(status) = self.ctl.exited() else {
            return false;
        };
        eprintln!(
            "chaos: replica {} (pid {}) exited on its own: {status}; see {}",
            self.idx,
            self.ctl.pid,
            self.ctl.log.display()
        );
        self.ctl.kill();
        self.proxy.cut();
        self.proxy.drop_connections();
        let mut r = rec.lock().expect("record");
        if let Some(i) = r.current[self.idx].take() {
            r.incarnations[i].crashed = true;
            r.incarnations[i].ended = Some((Instant::now(), End::Exited));
        }
        true
    }
}

pub type Fleet = Vec<Arc<tokio::sync::Mutex<Replica>>>;

/// What a kubelet does for a container that exits: every second, a replica
/// whose process exited on its own is started again after `delay`.
/// (A replica exits, e.g., when the API server is unreachable at start-up.)
pub async fn supervise(
    fleet: Fleet,
    rec: Shared,
    delay: Duration,
    stop: tokio::sync::watch::Receiver<bool>,
) {
    while !*stop.borrow() {
        for r in &fleet {
            let exited = match r.try_lock() {
                Ok(mut r) => r.check_exit(&rec),
                Err(_) => false,
            };
            if exited {
                tokio::time::sleep(delay).await;
                let mut r = r.lock().await;
                if r.ctl.exited().is_none()
                    && rec.lock().expect("record").current[r.idx].is_none()
                    && let Err(e) = r.start(&rec)
                {
                    eprintln!("chaos: restarting replica {}: {e}", r.idx);
                }
            }
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// Scrapes every current incarnation every `every`, until `stop`.
pub async fn sample(
    replicas: Vec<(usize, String)>,
    rec: Shared,
    every: Duration,
    stop: tokio::sync::watch::Receiver<bool>,
) {
    loop {
        if *stop.borrow() {
            return;
        }
        for (idx, addr) in &replicas {
            let Some(i) = rec.lock().expect("record").current[*idx] else {
                continue;
            };
            let Ok(m) = prom::scrape(addr).await else {
                continue;
            };
            let mut r = rec.lock().expect("record");
            // The incarnation may have ended during the scrape.
            if r.current[*idx] != Some(i) {
                continue;
            }
            let pid = r.incarnations[i].pid;
            let proc = crate::controller::sample_of(pid);
            let s = Sample {
                at: Instant::now(),
                incarnation: i,
                leader: m.sum(LEADER, |_| true) >= 1.0,
                stored: stored(&m),
            };
            let inc = &mut r.incarnations[i];
            inc.peak_rss_kib = inc.peak_rss_kib.max(proc.rss_kib);
            inc.last = Some(m);
            inc.last_at = Some(s.at);
            r.samples.push(s);
        }
        tokio::time::sleep(every).await;
    }
}
