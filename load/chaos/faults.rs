//! The faults that are not about one replica: the API server restarted
//! (e2e/cluster/apiserver.sh restart; kwok restarted after it), and etcd compacted to its current
//! revision so that watches resumed from an older resource version get
//! 410 Gone and list again.

use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Runs `bash SCRIPT restart` (with `env`), its output echoed; an error
/// names the script and what it printed on standard error.
async fn run_restart(script: &str, env: Vec<(&'static str, String)>) -> Result<(), String> {
    let cmd = script.to_string();
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new("bash")
            .args([cmd.as_str(), "restart"])
            .envs(env)
            .stdin(std::process::Stdio::null())
            .output()
    })
    .await
    .map_err(|e| format!("running {script}: {e}"))?
    .map_err(|e| format!("running {script}: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "{script} restart failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    eprintln!("chaos: {}", String::from_utf8_lossy(&out.stdout).trim_end());
    Ok(())
}

/// Restarts the API server (SIGKILL `grace` after SIGTERM, if still
/// running); how long it was away (stop to /readyz).
pub async fn restart_apiserver(script: &str, grace: Duration) -> Result<Duration, String> {
    let t0 = Instant::now();
    let grace = grace.as_secs().max(1).to_string();
    run_restart(script, vec![("APISERVER_STOP_GRACE", grace)]).await?;
    Ok(t0.elapsed())
}

/// Restarts kwok (load/kwok.sh restart) after an API server restart, as
/// kubelets resync their pods once it is back: kwok retries the stages
/// that failed meanwhile on a backoff of up to 32 min. Nothing to do when
/// not run by load/run.sh (no `KWOK_BIN`).
pub async fn restart_kwok() -> Result<(), String> {
    if std::env::var_os("KWOK_BIN").is_none() {
        return Ok(());
    }
    run_restart("load/kwok.sh", Vec::new()).await
}

/// POST http://ADDR/PATH with a JSON body (etcd's v3 JSON gateway).
async fn post(addr: &str, path: &str, body: &str) -> Result<serde_json::Value, String> {
    let io = async {
        let mut s = TcpStream::connect(addr).await?;
        let req = format!(
            "POST {path} HTTP/1.0\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        s.write_all(req.as_bytes()).await?;
        let mut buf = Vec::new();
        s.read_to_end(&mut buf).await?;
        Ok::<_, std::io::Error>(buf)
    };
    let buf = tokio::time::timeout(Duration::from_secs(30), io)
        .await
        .map_err(|_| format!("POST http://{addr}{path}: no answer in 30 s"))?
        .map_err(|e| format!("POST http://{addr}{path}: {e}"))?;
    let text = String::from_utf8_lossy(&buf);
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    if head.split_whitespace().nth(1) != Some("200") {
        return Err(format!(
            "POST http://{addr}{path}: {} {}",
            head.lines().next().unwrap_or(""),
            body.trim()
        ));
    }
    serde_json::from_str(body).map_err(|e| format!("POST http://{addr}{path}: {e}: {body}"))
}

/// etcd's current revision (the header of a count-only range read).
pub async fn etcd_revision(addr: &str) -> Result<i64, String> {
    let v = post(
        addr,
        "/v3/kv/range",
        r#"{"key":"AA==","limit":1,"count_only":true}"#,
    )
    .await?;
    v["header"]["revision"]
        .as_str()
        .and_then(|r| r.parse().ok())
        .or_else(|| v["header"]["revision"].as_i64())
        .ok_or_else(|| format!("no header.revision in etcd's answer: {v}"))
}

/// Compacts etcd's history up to its current revision; the revision.
pub async fn compact_etcd(addr: &str) -> Result<i64, String> {
    let rev = etcd_revision(addr).await?;
    post(
        addr,
        "/v3/kv/compaction",
        &format!(r#"{{"revision":"{rev}","physical":true}}"#),
    )
    .await?;
    Ok(rev)
}
