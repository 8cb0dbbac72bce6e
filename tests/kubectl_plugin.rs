//! The binary installed as `kubectl-sidecar_order`, run as kubectl runs a
//! plugin: its help, kubectl's flags, and the API requests they lead to
//! (against a stand-in API server on a loopback port that answers 404).

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::mpsc;

/// A fresh directory holding the binary under the plugin's name.
fn plugin(test: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("kubectl-plugin-{test}"));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let exe = dir.join("kubectl-sidecar_order");
    // A hard link, not a copy: a file just written can still be open in a
    // child another test thread is forking, and exec then fails with
    // ETXTBSY ("text file busy"). A copy only where linking is refused.
    let _ = std::fs::remove_file(&exe);
    if std::fs::hard_link(env!("CARGO_BIN_EXE_sidecar-order"), &exe).is_err() {
        std::fs::copy(env!("CARGO_BIN_EXE_sidecar-order"), &exe).unwrap();
    }
    exe
}

fn run(exe: &Path, args: &[&str]) -> Output {
    Command::new(exe)
        .args(args)
        // Neither the caller's kubeconfig nor a service account may answer.
        .env("KUBECONFIG", "/nonexistent/kubeconfig")
        .env("HOME", "/nonexistent")
        .env_remove("KUBERNETES_SERVICE_HOST")
        .output()
        .expect("the plugin runs")
}

fn text(out: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&out.stdout).into(),
        String::from_utf8_lossy(&out.stderr).into(),
    )
}

/// Serves 404 to every request on a loopback port; sends each request line.
fn api_server() -> (u16, mpsc::Receiver<String>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { return };
            let mut reader = BufReader::new(conn.try_clone().unwrap());
            let mut first = String::new();
            if reader.read_line(&mut first).is_err() {
                continue;
            }
            let mut header = String::new();
            while reader.read_line(&mut header).is_ok_and(|n| n > 2) {
                header.clear();
            }
            let _ = tx.send(first.trim_end().to_string());
            let body = r#"{"kind":"Status","apiVersion":"v1","status":"Failure","message":"not found","reason":"NotFound","code":404}"#;
            let _ = write!(
                conn,
                "HTTP/1.1 404 Not Found\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
    (port, rx)
}

/// A kubeconfig whose current context points at a closed port; context
/// `stand-in` (default namespace `ctx-ns`) at the stand-in server.
fn kubeconfig(dir: &Path, port: u16) -> PathBuf {
    let path = dir.join("kubeconfig");
    std::fs::write(
        &path,
        format!(
            "apiVersion: v1
kind: Config
current-context: closed
clusters:
  - name: closed
    cluster: {{server: 'http://127.0.0.1:1'}}
  - name: stand-in
    cluster: {{server: 'http://127.0.0.1:{port}'}}
users:
  - name: nobody
    user: {{token: t}}
contexts:
  - name: closed
    context: {{cluster: closed, user: nobody}}
  - name: stand-in
    context: {{cluster: stand-in, user: nobody, namespace: ctx-ns}}
"
        ),
    )
    .unwrap();
    path
}

fn requests(rx: &mpsc::Receiver<String>) -> Vec<String> {
    rx.try_iter().collect()
}

#[test]
fn help_names_the_kubectl_command() {
    let exe = plugin("help");
    let (stdout, _) = text(&run(&exe, &["--help"]));
    assert!(
        stdout.contains("Usage: kubectl sidecar-order <COMMAND>"),
        "{stdout}"
    );
    for command in ["analyze", "show", "crd", "run"] {
        assert!(stdout.contains(command), "{command}: {stdout}");
    }
    let (stdout, _) = text(&run(&exe, &["show", "--help"]));
    assert!(
        stdout.contains("Usage: kubectl sidecar-order show"),
        "{stdout}"
    );
    for flag in ["--namespace", "--context", "--kubeconfig"] {
        assert!(stdout.contains(flag), "{flag}: {stdout}");
    }
    // A symbolic link works as well as a copy (what `make install-plugin` can't know).
    #[cfg(unix)]
    {
        let link = exe.with_file_name("link").join("kubectl-sidecar_order");
        std::fs::create_dir_all(link.parent().unwrap()).unwrap();
        std::os::unix::fs::symlink(env!("CARGO_BIN_EXE_sidecar-order"), &link).unwrap();
        let (stdout, _) = text(&run(&link, &["--help"]));
        assert!(stdout.contains("Usage: kubectl sidecar-order"), "{stdout}");
    }
}

#[test]
fn unknown_flags_and_a_missing_kubeconfig_are_errors() {
    let exe = plugin("errors");
    let out = run(&exe, &["show", "--cluster", "x", "web"]);
    let (_, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("--cluster"), "{stderr}");
    let out = run(&exe, &["--kubeconfig", "/nonexistent/k", "show", "web"]);
    let (_, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("cannot read kubeconfig /nonexistent/k"),
        "{stderr}"
    );
}

#[test]
fn show_reads_from_the_given_context_and_namespace() {
    let exe = plugin("show");
    let (port, rx) = api_server();
    let config = kubeconfig(exe.parent().unwrap(), port);
    let config = config.to_str().unwrap();
    // kubectl's flags before the command, as `kubectl sidecar-order -n shop show web` passes them.
    let out = run(
        &exe,
        &[
            "-n",
            "shop",
            "--context",
            "stand-in",
            "--kubeconfig",
            config,
            "show",
            "web",
        ],
    );
    let (_, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    let seen = requests(&rx);
    assert_eq!(
        seen.first().map(String::as_str),
        Some(
            "GET /apis/sidecar-order.dev/v1alpha1/namespaces/shop/sidecarorderreports/web HTTP/1.1"
        ),
        "{seen:?} {stderr}"
    );
    // Without -n: the context's namespace.
    let out = run(
        &exe,
        &["show", "--context=stand-in", "--kubeconfig", config, "web"],
    );
    let seen = requests(&rx);
    assert!(
        seen.first()
            .is_some_and(|r| r.contains("/namespaces/ctx-ns/sidecarorderreports/web")),
        "{seen:?} {:?}",
        text(&out)
    );
    // Without --context: the current one, whose server is closed.
    let out = run(&exe, &["show", "--kubeconfig", config, "web"]);
    let (_, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(requests(&rx).is_empty());
    // A context the file lacks.
    let out = run(
        &exe,
        &["show", "--context", "nope", "--kubeconfig", config, "web"],
    );
    let (_, stderr) = text(&out);
    assert!(stderr.contains("nope"), "{stderr}");
}

#[test]
fn live_analyze_reads_the_pod_through_the_given_context() {
    let exe = plugin("analyze");
    let (port, rx) = api_server();
    let config = kubeconfig(exe.parent().unwrap(), port);
    let out = run(
        &exe,
        &[
            "analyze",
            "--kubeconfig",
            config.to_str().unwrap(),
            "--context",
            "stand-in",
            "-n",
            "shop",
            "web",
        ],
    );
    let (_, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("cannot read pod shop/web"), "{stderr}");
    assert_eq!(
        requests(&rx).first().map(String::as_str),
        Some("GET /api/v1/namespaces/shop/pods/web HTTP/1.1")
    );
}
