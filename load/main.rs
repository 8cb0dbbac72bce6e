//! The load harness' driver (issue 12). `make load` runs it through
//! load/run.sh, which brings up kwok, the fake nodes and the namespace; run
//! alone (no LOAD_CONTROLLER_BIN) it does nothing and exits 0, so that
//! `cargo test --features e2e` without a target filter is not affected.
//!
//! It starts the controller as a plain process, creates LOAD_PODS pods at
//! LOAD_RATE pods/s, churns at LOAD_CHURN pods/s (half deletions of the
//! oldest pods, half creations) for LOAD_SECONDS, stays idle for
//! LOAD_IDLE_SECONDS, restarts the controller (SIGTERM, start, /readyz),
//! lets it settle, checks every pod's report against its labels, and
//! prints one table. Exits 1 when a verdict differs from its labels or a
//! report is missing.
//!
//! Built as a harness=false test target with the e2e feature, so that it
//! shares every compiled dependency (and the library) with
//! `cargo test --locked --features e2e`.

#[allow(dead_code)] // shared with the chaos target: not every item is used here
mod controller;
mod pods;
mod prom;
mod restart_diff;
mod verify;

use controller::{Controller, ProcSample};
use k8s_openapi::api::core::v1::Pod;
use kube::{Api, Client};
use std::collections::BTreeMap;
use std::process::ExitCode;
use std::time::{Duration, Instant};

const LATENCY: &str = "sidecar_order_report_latency_seconds";
const WRITES: &str = "sidecar_order_report_writes_total";
const WATCH: &str = "sidecar_order_watch_events_total";

fn env<T: std::str::FromStr>(key: &str, default: T) -> T {
    match std::env::var(key) {
        Ok(v) if !v.trim().is_empty() => v.trim().parse().unwrap_or_else(|_| {
            eprintln!("load: {key}={v} is not a valid value");
            std::process::exit(2)
        }),
        _ => default,
    }
}

struct Config {
    ns: String,
    pods: u64,
    rate: f64,
    churn: f64,
    churn_seconds: u64,
    idle_seconds: u64,
    quiet: Duration,
    settle_timeout: Duration,
    nodes: u64,
}

/// The controller and its metrics at one moment.
struct Snap {
    at: Instant,
    proc: ProcSample,
    m: prom::Scrape,
}

impl Snap {
    fn writes(&self) -> f64 {
        self.m.sum(WRITES, |l| {
            l.get("result")
                .is_some_and(|r| prom::WRITTEN.contains(&r.as_str()))
        })
    }
    fn pod_events(&self) -> f64 {
        self.m
            .sum(WATCH, |l| l.get("kind").is_some_and(|k| k == "pod"))
    }
    fn all_events(&self) -> f64 {
        self.m.sum(WATCH, |_| true)
    }
    /// Reports of tracked pods whose startup verdict is still Pending, when
    /// the controller has a verdict gauge with a `startup` label.
    fn startup_pending(&self) -> Option<f64> {
        let g = "sidecar_order_reports";
        self.m.has(g).then(|| {
            self.m
                .sum(g, |l| l.get("startup").is_some_and(|s| s == "Pending"))
        })
    }
}

async fn snap(c: &Controller) -> Result<Snap, String> {
    let m = c.scrape().await?;
    Ok(Snap {
        at: Instant::now(),
        proc: c.sample(),
        m,
    })
}

/// Waits until nothing moves: no pod watch event and no report write for
/// `quiet`, no startup verdict Pending (when the gauge exists), and at
/// least `min` since the call. Gives up after the settle timeout (the
/// figures are still printed, marked).
async fn settle(c: &Controller, cfg: &Config, min: Duration) -> Result<(Snap, bool), String> {
    let t0 = Instant::now();
    let mut last = snap(c).await?;
    let mut still_since = Instant::now();
    loop {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let s = snap(c).await?;
        // Pod watch events and report writes: Events alone (a node's
        // NodeNotReady, the controller's own Warnings) change no verdict.
        let moved = s.pod_events() != last.pod_events() || s.writes() != last.writes();
        if moved {
            still_since = Instant::now();
        }
        let pending_ok = s.startup_pending().is_none_or(|p| p == 0.0);
        if t0.elapsed() >= min && still_since.elapsed() >= cfg.quiet && pending_ok {
            eprintln!("load: settled in {:.0}s", t0.elapsed().as_secs_f64());
            return Ok((s, true));
        }
        // What it waits for, every 15 s.
        if t0.elapsed().as_secs().is_multiple_of(15) {
            eprintln!(
                "load: settling for {:.0}s: startup Pending {}, in the last second {:.0} writes, {:.0} pod and {:.0} other watch events",
                t0.elapsed().as_secs_f64(),
                s.startup_pending()
                    .map_or("-".into(), |p| format!("{p:.0}")),
                s.writes() - last.writes(),
                s.pod_events() - last.pod_events(),
                (s.all_events() - s.pod_events()) - (last.all_events() - last.pod_events()),
            );
        }
        last = s;
        if t0.elapsed() > cfg.settle_timeout {
            eprintln!(
                "load: the controller did not settle within {}s (writes or watch events still moving, or startup verdicts Pending)",
                cfg.settle_timeout.as_secs()
            );
            return Ok((last, false));
        }
    }
}

fn mib(kib: u64) -> String {
    format!("{:.1} MiB", kib as f64 / 1024.0)
}

fn latency(later: &Snap, earlier: Option<&Snap>) -> String {
    let b = prom::bucket_delta(
        &later.m.buckets(LATENCY),
        earlier.map(|e| e.m.buckets(LATENCY)).as_deref(),
    );
    let n = b.last().map_or(0.0, |x| x.1);
    let q = |q| match prom::quantile(&b, q) {
        None => "-".to_string(),
        Some((v, true)) => format!(">{v}s"),
        Some((v, false)) => format!("{v:.3}s"),
    };
    if !later.m.has(&format!("{LATENCY}_bucket")) {
        return format!("(no {LATENCY} on /metrics)");
    }
    format!("p50 {} p99 {} ({n:.0} reports)", q(0.5), q(0.99))
}

fn classes(later: &Snap, earlier: Option<&Snap>) -> BTreeMap<String, f64> {
    let mut out = later.m.by(WRITES, "result");
    if let Some(e) = earlier {
        for (k, v) in e.m.by(WRITES, "result") {
            *out.entry(k).or_insert(0.0) -= v;
        }
    }
    out
}

fn class_list(c: &BTreeMap<String, f64>) -> String {
    let parts: Vec<String> = c.iter().map(|(k, v)| format!("{k}={v:.0}")).collect();
    parts.join(" ")
}

fn per_change(later: &Snap, earlier: Option<&Snap>) -> String {
    let w = later.writes() - earlier.map_or(0.0, Snap::writes);
    let e = later.pod_events() - earlier.map_or(0.0, Snap::pod_events);
    let ratio = if e > 0.0 {
        format!("{:.3}", w / e)
    } else {
        "-".into()
    };
    format!(
        "{ratio} ({w:.0} writes / {e:.0} pod watch events; by result: {})",
        class_list(&classes(later, earlier))
    )
}

fn error_classes(c: &BTreeMap<String, f64>) -> (f64, String) {
    let errs: BTreeMap<String, f64> = c
        .iter()
        .filter(|(k, v)| {
            !prom::WRITTEN.contains(&k.as_str())
                && !prom::DELETED.contains(&k.as_str())
                && **v > 0.0
        })
        .map(|(k, v)| (k.clone(), *v))
        .collect();
    let n = errs.values().sum::<f64>() + 0.0;
    let list = if errs.is_empty() {
        "none".to_string()
    } else {
        class_list(&errs)
    };
    (n, list)
}

#[tokio::main]
async fn main() -> ExitCode {
    let Ok(bin) = std::env::var("LOAD_CONTROLLER_BIN") else {
        println!(
            "load: LOAD_CONTROLLER_BIN is not set; the load harness runs through `make load` (load/run.sh). Nothing to do."
        );
        return ExitCode::SUCCESS;
    };
    match run(bin).await {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("load: FAILED: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn run(bin: String) -> Result<bool, String> {
    let cfg = Config {
        ns: env("LOAD_NAMESPACE", "sidecar-order-load".to_string()),
        pods: env("LOAD_PODS", 1000),
        rate: env("LOAD_RATE", 50.0),
        churn: env("LOAD_CHURN", 20.0),
        churn_seconds: env("LOAD_SECONDS", 60),
        idle_seconds: env("LOAD_IDLE_SECONDS", 60),
        // Longer than a report's containers may wait to be written
        // (`writer::REFRESH_WITHIN`): settled means nothing left to write.
        quiet: Duration::from_secs(env(
            "LOAD_QUIET_SECONDS",
            sidecar_order::controller::writer::REFRESH_WITHIN.as_secs() + 2,
        )),
        settle_timeout: Duration::from_secs(env("LOAD_SETTLE_TIMEOUT", 600)),
        nodes: env("LOAD_NODES", 10),
    };
    let port: u16 = env("LOAD_METRICS_PORT", 18080);
    let dir = std::path::PathBuf::from(env("LOAD_DIR", "/tmp/sidecar-order-load".to_string()));
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let addr = format!("127.0.0.1:{port}");
    let churn_total = (cfg.churn * cfg.churn_seconds as f64) as u64;
    let max_reports: u64 = env("LOAD_MAX_REPORTS", (cfg.pods + churn_total) * 2 + 1000);
    let mut args = vec![
        "run".to_string(),
        "--metrics-addr".into(),
        addr.clone(),
        "--namespace".into(),
        cfg.ns.clone(),
        "--max-reports".into(),
        max_reports.to_string(),
    ];
    args.extend(
        env("LOAD_CONTROLLER_ARGS", String::new())
            .split_whitespace()
            .map(str::to_string),
    );
    let client = Client::try_default()
        .await
        .map_err(|e| format!("no Kubernetes client (KUBECONFIG): {e}"))?;
    let api: Api<Pod> = Api::namespaced(client.clone(), &cfg.ns);
    let book = pods::Shared::default();

    let pid_dir = std::path::PathBuf::from(env("LOAD_PID_DIR", dir.display().to_string()));
    let mut ctl = Controller::new(bin, args, addr, dir, &pid_dir);
    eprintln!("load: starting {} {}", ctl.bin, ctl.args.join(" "));
    let first_ready = ctl.start(Duration::from_secs(180)).await?;
    eprintln!(
        "load: controller pid {} ready in {:.2}s (log {})",
        ctl.pid,
        first_ready.as_secs_f64(),
        ctl.log.display()
    );

    // Take-in: LOAD_PODS new pods at LOAD_RATE.
    let s0 = snap(&ctl).await?;
    eprintln!(
        "load: creating {} pods at {}/s in {}",
        cfg.pods, cfg.rate, cfg.ns
    );
    let mut pacer = pods::Pacer::new(cfg.rate);
    for _ in 0..cfg.pods {
        pacer.create(&api, &book).await;
    }
    pacer.drain().await;
    let created_in = s0.at.elapsed();
    eprintln!(
        "load: {} pods created in {:.1}s; waiting for the controller to settle",
        book.lock().expect("book").created.len(),
        created_in.as_secs_f64()
    );
    let (s1, settled1) = settle(&ctl, &cfg, Duration::from_secs(8)).await?;

    // Churn: LOAD_CHURN pods/s, deletions of the oldest and creations alternating.
    eprintln!("load: churn at {}/s for {}s", cfg.churn, cfg.churn_seconds);
    let mut pacer = pods::Pacer::new(cfg.churn);
    let churn_ops = churn_total;
    let mut peak_rss = s1.proc.rss_kib;
    let mut last_sample = Instant::now();
    for k in 0..churn_ops {
        if k % 2 == 0 {
            pacer.delete(&api, &book).await;
        } else {
            pacer.create(&api, &book).await;
        }
        if last_sample.elapsed() >= Duration::from_secs(1) {
            peak_rss = peak_rss.max(ctl.sample().rss_kib);
            last_sample = Instant::now();
        }
    }
    pacer.drain().await;
    let sc = snap(&ctl).await?;
    eprintln!("load: churn done; waiting for the controller to settle");
    let (s2, settled2) = settle(&ctl, &cfg, Duration::from_secs(10)).await?;

    // Idle.
    eprintln!("load: idle for {}s", cfg.idle_seconds);
    tokio::time::sleep(Duration::from_secs(cfg.idle_seconds)).await;
    let s3 = snap(&ctl).await?;
    let hwm = s3.proc.hwm_kib.max(peak_rss);

    // Restart.
    let before_restart = restart_diff::statuses(&client, &cfg.ns)
        .await
        .map_err(|e| format!("listing reports: {e}"))?;
    eprintln!("load: restarting the controller (SIGTERM, start, /readyz)");
    let stop_took = ctl.stop(Duration::from_secs(30)).await;
    let ready_in = ctl.start(Duration::from_secs(600)).await?;
    eprintln!(
        "load: controller pid {} ready in {:.2}s after the restart; waiting for it to settle",
        ctl.pid,
        ready_in.as_secs_f64()
    );
    let (s4, settled4) = settle(&ctl, &cfg, Duration::from_secs(10)).await?;
    let rewritten = restart_diff::statuses(&client, &cfg.ns)
        .await
        .map(|after| restart_diff::summary(&before_restart, &after))
        .map_err(|e| format!("listing reports: {e}"))?;

    eprintln!("load: checking every pod's report against its labels");
    // A copy of the book: verification awaits, and the lock must not be held.
    let copy = book.lock().expect("book").clone();
    let outcome = verify::verify(&client, &cfg.ns, &copy, |_| false)
        .await
        .map_err(|e| format!("listing reports and pods: {e}"))?;
    ctl.stop(Duration::from_secs(30)).await;

    // The table.
    let b = book.lock().expect("book");
    let cpu = |a: &Snap, z: &Snap| z.proc.cpu_seconds - a.proc.cpu_seconds;
    let mark = |ok: bool| if ok { "" } else { " (did not settle)" };
    let rows: Vec<(String, String)> = vec![
        (
            "pods".into(),
            format!(
                "{} created ({} at {}/s, then churn), {} deleted, {} live at the end; {} kwok nodes; create/delete errors {}/{}",
                b.created.len(),
                cfg.pods,
                cfg.rate,
                b.deleted.len(),
                outcome.live_pods,
                cfg.nodes,
                b.create_errors,
                b.delete_errors
            ),
        ),
        (
            "controller RSS after creation".into(),
            format!("{}{}", mib(s1.proc.rss_kib), mark(settled1)),
        ),
        ("controller RSS peak (VmHWM)".into(), mib(hwm)),
        (
            "controller RSS after churn".into(),
            format!("{}{}", mib(s2.proc.rss_kib), mark(settled2)),
        ),
        (
            "CPU take-in of the new pods".into(),
            format!(
                "{:.2} core-s ({} pods created in {:.0}s, settled {:.0}s later)",
                cpu(&s0, &s1),
                cfg.pods,
                created_in.as_secs_f64(),
                (s1.at - s0.at).as_secs_f64() - created_in.as_secs_f64()
            ),
        ),
        (
            "CPU churn".into(),
            format!(
                "{:.2} core-s in {:.0}s ({:.1}% of one core) + {:.2} core-s settling",
                cpu(&s1, &sc),
                (sc.at - s1.at).as_secs_f64(),
                100.0 * cpu(&s1, &sc) / (sc.at - s1.at).as_secs_f64().max(0.001),
                cpu(&sc, &s2)
            ),
        ),
        (
            "CPU idle".into(),
            format!(
                "{:.2} core-s in {:.0}s",
                cpu(&s2, &s3),
                (s3.at - s2.at).as_secs_f64()
            ),
        ),
        ("report latency take-in".into(), latency(&s1, Some(&s0))),
        ("report latency churn".into(), latency(&s2, Some(&s1))),
        ("report latency after restart".into(), latency(&s4, None)),
        (
            "writes per pod state change, take-in".into(),
            per_change(&s1, Some(&s0)),
        ),
        (
            "writes per pod state change, churn".into(),
            per_change(&s2, Some(&s1)),
        ),
        (
            "writes while idle".into(),
            format!(
                "{:.0} (by result: {})",
                s3.writes() - s2.writes(),
                class_list(&classes(&s3, Some(&s2)))
            ),
        ),
        ("write errors (first process)".into(), {
            let (n, l) = error_classes(&classes(&s3, Some(&s0)));
            format!("{n:.0} ({l})")
        }),
        ("write errors (after restart)".into(), {
            let (n, l) = error_classes(&classes(&s4, None));
            format!("{n:.0} ({l})")
        }),
        (
            "restart: SIGTERM to exit".into(),
            format!("{:.2}s", stop_took.as_secs_f64()),
        ),
        (
            "restart to /readyz 200".into(),
            format!(
                "{:.2}s (first start {:.2}s); {:.2} core-s until settled, RSS {}{}",
                ready_in.as_secs_f64(),
                first_ready.as_secs_f64(),
                s4.proc.cpu_seconds,
                mib(s4.proc.rss_kib),
                mark(settled4)
            ),
        ),
        (
            "writes after the restart".into(),
            format!(
                "{:.0} (by result: {}; {:.0} pod watch events)",
                s4.writes(),
                class_list(&classes(&s4, None)),
                s4.pod_events()
            ),
        ),
        ("what the restart rewrote".into(), rewritten),
        (
            "verdicts that differ from the labels".into(),
            format!(
                "{} of {} pods checked; {} reports missing; {} not checked, kwok having stopped a container at or after the grace deadline; {} deleted by someone else; {} reports in {}",
                outcome.differ.len(),
                outcome.checked,
                outcome.missing.len(),
                outcome.late.len(),
                outcome.vanished.len(),
                outcome.reports,
                cfg.ns
            ),
        ),
    ];
    println!();
    println!(
        "sidecar-order load: {} + churn {}/s for {}s, idle {}s, one restart ({} pods of 2 sidecars + 1 app, kwok)",
        cfg.pods, cfg.churn, cfg.churn_seconds, cfg.idle_seconds, cfg.pods
    );
    let w = rows.iter().map(|r| r.0.len()).max().unwrap_or(0);
    for (k, v) in &rows {
        println!("  {k:<w$}  {v}");
    }
    println!("  verdicts by variant (pod state: startup/shutdown = pods):");
    for ((variant, deleted), cells) in &outcome.matrix {
        let cells: Vec<String> = cells
            .iter()
            .map(|((a, z), n)| format!("{a}/{z} = {n}"))
            .collect();
        println!(
            "    {variant:<22} {:<8} {}",
            if *deleted { "deleted" } else { "live" },
            cells.join(", ")
        );
    }
    for d in outcome.differ.iter().take(10) {
        println!("  DIFFERS  {d}");
    }
    for m in outcome.missing.iter().take(10) {
        println!("  MISSING  {m}");
    }
    for l in outcome.late.iter().take(10) {
        println!("  LATE     {l}");
    }
    for v in outcome.vanished.iter().take(10) {
        println!("  VANISHED {v}");
    }
    let ok = outcome.differ.is_empty() && outcome.missing.is_empty() && outcome.checked > 0;
    if !outcome.vanished.is_empty() {
        println!(
            "load: FAILED (environment): {} of {} pods were deleted by someone else ({} TaintManagerEviction events in {}: fake nodes gone NotReady, kwok starved?); the figures measured a broken cluster; start from a fresh one (make cluster-down)",
            outcome.vanished.len(),
            b.created.len(),
            outcome.evictions,
            cfg.ns
        );
        return Ok(false);
    }
    if ok {
        println!(
            "load: ok: all {} verdicts match their labels",
            outcome.checked
        );
    } else {
        println!(
            "load: FAILED: {} verdicts differ from their labels, {} reports missing (of {} pods)",
            outcome.differ.len(),
            outcome.missing.len(),
            b.created.len()
        );
    }
    Ok(ok)
}
