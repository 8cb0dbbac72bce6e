//! Test 11: a real Prometheus (Debian's package) scrapes the controller pod
//! from the host, loads the alerting rules, and every dashboard query in
//! config/grafana/queries.txt returns data.

use crate::support::*;
use crate::{LIVENESS_FAIL, PRESTOP_KILL};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

/// A Prometheus process, stopped by PID (TERM, then KILL) when dropped.
struct Prometheus {
    child: Child,
    dir: String,
    addr: String,
}

impl Prometheus {
    fn stop(&mut self) {
        if let Ok(Some(_)) = self.child.try_wait() {
            return;
        }
        let pid = self.child.id().to_string();
        let _ = Command::new("kill").args(["-TERM", &pid]).status();
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(10) {
            if let Ok(Some(_)) = self.child.try_wait() {
                eprintln!("[t11] Prometheus (pid {pid}) stopped");
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        eprintln!("[t11] Prometheus (pid {pid}) killed");
    }

    fn log_tail(&self) -> String {
        let log =
            std::fs::read_to_string(format!("{}/prometheus.log", self.dir)).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        self.stop();
        if std::env::var("E2E_KEEP_PROMETHEUS_DATA").is_err() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

fn have(cmd: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {cmd}")])
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Debian's `prometheus` package (prometheus and promtool), installed if missing.
fn ensure_prometheus() -> R<()> {
    if have("prometheus") && have("promtool") {
        return Ok(());
    }
    eprintln!("[t11] installing Debian's prometheus package");
    let install = || {
        Command::new("apt-get")
            .args(["install", "-y", "--no-install-recommends", "prometheus"])
            .env("DEBIAN_FRONTEND", "noninteractive")
            .status()
            .is_ok_and(|s| s.success())
    };
    if !install() {
        let _ = Command::new("apt-get").args(["update"]).status();
        ensure!(install(), "apt-get install -y prometheus failed");
    }
    ensure!(
        have("prometheus") && have("promtool"),
        "prometheus/promtool still missing after apt-get install"
    );
    Ok(())
}

fn free_port() -> R<u16> {
    let l = std::net::TcpListener::bind("127.0.0.1:0").ctx("finding a free port")?;
    Ok(l.local_addr().ctx("local address")?.port())
}

fn urlencode(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Runs an instant query; the result vector (empty when no data).
async fn query(addr: &str, q: &str) -> R<Vec<serde_json::Value>> {
    let body = http_get(addr, &format!("/api/v1/query?query={}", urlencode(q))).await?;
    let v: serde_json::Value = serde_json::from_str(&body).ctx("parsing the query response")?;
    ensure!(v["status"] == "success", "query {q:?} failed: {body}");
    Ok(v["data"]["result"].as_array().cloned().unwrap_or_default())
}

fn start(target: &str) -> R<Prometheus> {
    let dir = format!("/tmp/sidecar-order-e2e-prometheus-{}", std::process::id());
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(format!("{dir}/data")).ctx("creating the Prometheus directory")?;
    let template = std::fs::read_to_string(format!("{ROOT}/e2e/prometheus/prometheus.yml"))
        .ctx("reading e2e/prometheus/prometheus.yml")?;
    let config = template
        .replace("__TARGET__", target)
        .replace("__RULES__", &format!("{ROOT}/config/prometheus/rules.yaml"));
    let config_path = format!("{dir}/prometheus.yml");
    std::fs::write(&config_path, config).ctx("writing the Prometheus config")?;
    let addr = format!("127.0.0.1:{}", free_port()?);
    let log = std::fs::File::create(format!("{dir}/prometheus.log")).ctx("creating the log")?;
    let child = Command::new("prometheus")
        .arg(format!("--config.file={config_path}"))
        .arg(format!("--storage.tsdb.path={dir}/data"))
        .arg(format!("--web.listen-address={addr}"))
        .arg("--storage.tsdb.retention.time=1h")
        .stdin(Stdio::null())
        .stdout(log.try_clone().ctx("log")?)
        .stderr(log)
        .spawn()
        .ctx("starting prometheus")?;
    eprintln!(
        "[t11] Prometheus pid {} on {addr} scraping {target} (dir {dir})",
        child.id()
    );
    Ok(Prometheus { child, dir, addr })
}

pub async fn scenario(ctx: &Ctx) -> R<()> {
    ensure_prometheus()?;
    let rules = format!("{ROOT}/config/prometheus/rules.yaml");
    let out = Command::new("promtool")
        .args(["check", "rules", &rules])
        .output()
        .ctx("running promtool")?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    ensure!(
        out.status.success(),
        "promtool check rules {rules} failed:\n{text}"
    );
    eprintln!(
        "[t11] promtool check rules: {}",
        text.trim().replace('\n', " | ")
    );

    let ctrl = controller_pod(&ctx.client).await?;
    let target = format!("{}:8080", pod_ip(&ctrl)?);
    let mut prom = start(&target)?;
    let result = with_prometheus(ctx, &prom.addr.clone()).await;
    if result.is_err() {
        eprintln!("[t11] Prometheus log (tail):\n{}", prom.log_tail());
    }
    prom.stop();
    result
}

async fn with_prometheus(ctx: &Ctx, addr: &str) -> R<()> {
    poll(
        "Prometheus to be ready (/-/ready)",
        secs(60),
        || async move { http_get(addr, "/-/ready").await.map(|_| Some(())) },
    )
    .await?;
    poll("the controller target to be up", secs(60), || async move {
        let r = query(addr, "up{job=\"sidecar-order\"} == 1").await?;
        Ok((!r.is_empty()).then_some(()))
    })
    .await?;

    // Something to count: a pod that starts and stops (the histograms), a
    // violation, liveness failures and sidecar restarts.
    let ok = ctx
        .create_pod(&crate::instant_pod("quick", 1, false))
        .await?;
    ctx.create_pod(PRESTOP_KILL).await?;
    ctx.create_pod(LIVENESS_FAIL).await?;
    ctx.wait_ready("quick").await?;
    ctx.wait_ready("prestop-kills-sidecar").await?;
    ctx.wait_startup_judged(&uid(&ok.metadata)).await?;
    ctx.delete_pod("quick").await?;
    ctx.delete_pod("prestop-kills-sidecar").await?;
    // A histogram series appears with its first observation, so rate() over
    // it is 0 and the quantile NaN until a second one: once Prometheus has
    // the namespace's series, one more pod starts and stops.
    let ns = ctx.ns.clone();
    for metric in [
        "sidecar_order_sidecar_startup_seconds_count",
        "sidecar_order_sidecar_shutdown_seconds_count",
    ] {
        let q = format!("{metric}{{namespace=\"{ns}\"}}");
        let q = &q;
        poll(
            &format!("Prometheus to have {q}"),
            secs(90),
            || async move { Ok((!query(addr, q).await?.is_empty()).then_some(())) },
        )
        .await?;
    }
    let again = ctx
        .create_pod(&crate::instant_pod("quick-again", 1, false))
        .await?;
    ctx.wait_ready("quick-again").await?;
    ctx.wait_startup_judged(&uid(&again.metadata)).await?;
    ctx.delete_pod("quick-again").await?;
    ctx.wait_shutdown_judged(&uid(&again.metadata)).await?;

    let path = format!("{ROOT}/config/grafana/queries.txt");
    let queries: Vec<String> = std::fs::read_to_string(&path)
        .ctx(format!("reading {path}"))?
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|l| l.replace("$namespace", ".*"))
        .collect();
    ensure!(!queries.is_empty(), "{path} has no queries");
    let mut pending: Vec<String> = queries.clone();
    pending.push(format!(
        "sidecar_order_violations_total{{namespace=\"{ns}\",rule=\"sidecar-stopped-before-app\"}}"
    ));
    pending.push(format!(
        "sidecar_order_probe_failures_total{{namespace=\"{ns}\",probe=\"liveness\"}}"
    ));
    let start = Instant::now();
    let mut last = Vec::new();
    while !pending.is_empty() {
        let mut still = Vec::new();
        last.clear();
        for q in pending {
            match query(addr, &q).await {
                // Data: at least one sample with a number (a quantile of
                // buckets that did not move in the window is NaN: not yet).
                Ok(r)
                    if r.iter().any(|s| {
                        s["value"][1]
                            .as_str()
                            .and_then(|v| v.parse::<f64>().ok())
                            .is_some_and(|v| !v.is_nan())
                    }) =>
                {
                    let values: Vec<String> = r
                        .iter()
                        .take(3)
                        .map(|s| s["value"][1].to_string())
                        .collect();
                    eprintln!(
                        "[t11] {:5.1}s data: {q}  -> {}",
                        start.elapsed().as_secs_f64(),
                        values.join(", ")
                    );
                }
                Ok(r) => {
                    let values: Vec<String> = r
                        .iter()
                        .take(3)
                        .map(|s| s["value"][1].to_string())
                        .collect();
                    last.push(format!("{q}: no data ({})", values.join(", ")));
                    still.push(q);
                }
                Err(e) => {
                    last.push(format!("{q}: {e}"));
                    still.push(q);
                }
            }
        }
        pending = still;
        if pending.is_empty() {
            break;
        }
        ensure!(
            start.elapsed() < secs(180),
            "after {:?} these queries still return no data (namespace=~\".*\"):\n{}",
            start.elapsed(),
            last.join("\n")
        );
        tokio::time::sleep(Duration::from_secs(2)).await;
    }

    // The alerting rules are loaded and evaluate without errors.
    let body = http_get(addr, "/api/v1/rules").await?;
    let v: serde_json::Value = serde_json::from_str(&body).ctx("parsing /api/v1/rules")?;
    let groups = v["data"]["groups"].as_array().cloned().unwrap_or_default();
    ensure!(
        groups.iter().any(|g| g["name"] == "sidecar-order"),
        "the rule group sidecar-order is not loaded: {body}"
    );
    let bad: Vec<String> = groups
        .iter()
        .flat_map(|g| g["rules"].as_array().cloned().unwrap_or_default())
        .filter(|r| r["health"] == "err")
        .map(|r| format!("{}: {}", r["name"], r["lastError"]))
        .collect();
    ensure!(bad.is_empty(), "rules failing to evaluate: {bad:?}");
    // The violation alert fires (pending or firing) for the test's namespace.
    let alert = poll(
        "the SidecarOrderViolation alert for the test namespace",
        secs(30),
        || {
            let ns = ns.clone();
            async move {
                let r = query(
                    addr,
                    &format!("ALERTS{{alertname=\"SidecarOrderViolation\",namespace=\"{ns}\"}}"),
                )
                .await?;
                Ok((!r.is_empty()).then_some(r))
            }
        },
    )
    .await?;
    eprintln!("[t11] alert: {}", alert[0]["metric"]);
    Ok(())
}
