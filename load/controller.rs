//! The controller under test as a plain process on this machine: started,
//! stopped with SIGTERM, timed to /readyz, and measured from /proc.

use crate::prom;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The kernel's USER_HZ on Linux: /proc/PID/stat counts CPU time in 1/100 s.
const TICKS_PER_SECOND: f64 = 100.0;

pub struct Controller {
    pub bin: String,
    pub args: Vec<String>,
    pub addr: String,
    pub log: PathBuf,
    /// `NAME.pid` and `NAME.start` (the start time, as e2e/cluster/lib.sh
    /// records it) so load/run.sh can stop it by PID if this process dies.
    pub pid_file: PathBuf,
    /// Extra environment of the process (e.g. a replica's KUBECONFIG).
    pub env: Vec<(String, String)>,
    child: Option<Child>,
    pub pid: u32,
}

/// A failing run must not leave the controller behind (load/run.sh also
/// stops it by its pid file).
impl Drop for Controller {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
            let _ = std::fs::remove_file(&self.pid_file);
            let _ = std::fs::remove_file(self.pid_file.with_extension("start"));
        }
    }
}

/// What /proc says of one process at one moment.
#[derive(Clone, Copy, Debug, Default)]
pub struct ProcSample {
    pub cpu_seconds: f64,
    pub rss_kib: u64,
    pub hwm_kib: u64,
}

impl Controller {
    pub fn new(
        bin: String,
        args: Vec<String>,
        addr: String,
        dir: PathBuf,
        pid_dir: &std::path::Path,
    ) -> Controller {
        Controller {
            bin,
            args,
            addr,
            log: dir.join("controller.log"),
            pid_file: pid_dir.join("load-controller.pid"),
            env: Vec::new(),
            child: None,
            pid: 0,
        }
    }

    /// Another log and pid file (`NAME.log`, `NAME.pid`): one controller of several.
    pub fn named(
        mut self,
        name: &str,
        dir: &std::path::Path,
        pid_dir: &std::path::Path,
    ) -> Controller {
        self.log = dir.join(format!("{name}.log"));
        self.pid_file = pid_dir.join(format!("{name}.pid"));
        self
    }

    /// Starts the process; returns how long it took to answer /readyz 200.
    pub async fn start(&mut self, timeout: Duration) -> Result<Duration, String> {
        let t0 = Instant::now();
        self.spawn()?;
        self.wait_ready(t0, timeout).await
    }

    /// Starts the process without waiting for it.
    pub fn spawn(&mut self) -> Result<(), String> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .map_err(|e| format!("{}: {e}", self.log.display()))?;
        let err = log
            .try_clone()
            .map_err(|e| format!("{}: {e}", self.log.display()))?;
        let child = Command::new(&self.bin)
            .args(&self.args)
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(err)
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", self.bin))?;
        self.pid = child.id();
        self.child = Some(child);
        let start = proc_start_time(self.pid).unwrap_or_default();
        let _ = std::fs::write(&self.pid_file, format!("{}\n", self.pid));
        let _ = std::fs::write(self.pid_file.with_extension("start"), format!("{start}\n"));
        Ok(())
    }

    /// Waits for /readyz 200; how long since `t0`.
    pub async fn wait_ready(&mut self, t0: Instant, timeout: Duration) -> Result<Duration, String> {
        loop {
            if let Ok((200, _)) = prom::get(&self.addr, "/readyz").await {
                return Ok(t0.elapsed());
            }
            if let Some(c) = self.child.as_mut()
                && let Ok(Some(status)) = c.try_wait()
            {
                return Err(format!(
                    "the controller exited ({status}) before /readyz answered 200; see {}",
                    self.log.display()
                ));
            }
            if t0.elapsed() > timeout {
                return Err(format!(
                    "/readyz of the controller did not answer 200 within {}s; see {}",
                    timeout.as_secs(),
                    self.log.display()
                ));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// SIGTERM, then SIGKILL after `grace`; returns how long it took to exit.
    pub async fn stop(&mut self, grace: Duration) -> Duration {
        let t0 = Instant::now();
        let Some(mut child) = self.child.take() else {
            return Duration::ZERO;
        };
        if let Ok(None) = child.try_wait() {
            let _ = Command::new("kill")
                .arg("-TERM")
                .arg(self.pid.to_string())
                .status();
            loop {
                if !matches!(child.try_wait(), Ok(None)) {
                    break;
                }
                if t0.elapsed() > grace {
                    eprintln!(
                        "load: the controller ignored SIGTERM for {}s; SIGKILL",
                        grace.as_secs()
                    );
                    let _ = child.kill();
                    let _ = child.wait();
                    break;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
        let _ = std::fs::remove_file(&self.pid_file);
        let _ = std::fs::remove_file(self.pid_file.with_extension("start"));
        t0.elapsed()
    }

    /// SIGKILL, and reaps it. Says whether it had exited on its own before.
    pub fn kill(&mut self) -> bool {
        let Some(mut child) = self.child.take() else {
            return false;
        };
        let exited = matches!(child.try_wait(), Ok(Some(_)));
        let _ = child.kill();
        let _ = child.wait();
        let _ = std::fs::remove_file(&self.pid_file);
        let _ = std::fs::remove_file(self.pid_file.with_extension("start"));
        exited
    }

    /// The process ended on its own (not stopped or killed by us).
    pub fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child
            .as_mut()
            .and_then(|c| c.try_wait().ok().flatten())
    }

    pub fn sample(&self) -> ProcSample {
        proc_sample(self.pid).unwrap_or_default()
    }

    pub async fn scrape(&self) -> Result<prom::Scrape, String> {
        prom::scrape(&self.addr)
            .await
            .map_err(|e| format!("scraping http://{}/metrics: {e}", self.addr))
    }
}

/// What /proc says of `pid` now (zeros when it is gone).
pub fn sample_of(pid: u32) -> ProcSample {
    proc_sample(pid).unwrap_or_default()
}

/// The fields of /proc/PID/stat after "(comm) ", which may hold spaces.
fn stat_fields(pid: u32) -> Option<Vec<String>> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &stat[stat.rfind(')')? + 1..];
    Some(rest.split_whitespace().map(str::to_string).collect())
}

/// Field 22, the start time in clock ticks since boot (what lib.sh records).
fn proc_start_time(pid: u32) -> Option<String> {
    stat_fields(pid)?.get(19).cloned()
}

fn proc_sample(pid: u32) -> Option<ProcSample> {
    let f = stat_fields(pid)?;
    // Fields 14 and 15: utime and stime.
    let ticks: f64 = f.get(11)?.parse::<f64>().ok()? + f.get(12)?.parse::<f64>().ok()?;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let kib = |key: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(key))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    Some(ProcSample {
        cpu_seconds: ticks / TICKS_PER_SECOND,
        rss_kib: kib("VmRSS:"),
        hwm_kib: kib("VmHWM:"),
    })
}
