//! Live-cluster tests of `sidecar-order conformance` (the binary, as a user
//! runs it): a clean run with every promise Kept, a `--per-node` run with
//! only the minimal RBAC of config/conformance/, an interrupted run that must
//! leave nothing behind, and bad usage (no cluster, no permission): one line,
//! exit 2. No controller needed. Run by `make e2e` (e2e/run.sh), or:
//!
//! ```sh
//! export KUBECONFIG=/tmp/sidecar-order-cluster/kubeconfig
//! cargo test --features e2e --test e2e_conformance -- --test-threads=4
//! ```

#[macro_use]
mod support;

use k8s_openapi::api::core::v1::{Namespace, Pod};
use kube::api::{Api, ListParams};
use std::process::{Command, Output, Stdio};
use support::*;

const BIN: &str = env!("CARGO_BIN_EXE_sidecar-order");
const RBAC: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/config/conformance/clusterrole.yaml"
);

/// The local cluster's kubelet: `KUBELET_VERSION` (e2e/cluster's kubelet
/// of another release than the control plane), else `K8S_VERSION`, else
/// e2e/cluster's default v1.34.4.
fn want_kubelet() -> String {
    ["KUBELET_VERSION", "K8S_VERSION"]
        .iter()
        .find_map(|k| std::env::var(k).ok().filter(|v| !v.is_empty()))
        .unwrap_or_else(|| "v1.34.4".into())
}

/// What a promise must show on that kubelet: "Not promised" before the
/// release that makes it; "Broken", naming the upstream issue, when a known
/// kubelet bug of the entry's shape affects that release (src/kubelet.rs's
/// table, from upstream's release notes: the live kubelet must show it);
/// "Kept" otherwise.
fn expected(
    entry: &sidecar_order::conformance::catalogue::Entry,
) -> (&'static str, Option<String>) {
    use sidecar_order::kubelet::{KubeletVersion, known_bugs};
    let k =
        KubeletVersion::parse(&want_kubelet()).expect("KUBELET_VERSION/K8S_VERSION is a version");
    if !entry.since.holds_on(Some(k)) {
        return ("Not promised", None);
    }
    match entry
        .bug
        .and_then(|(rule, shape)| known_bugs(k, rule, &shape).next())
    {
        Some(b) => ("Broken", Some(b.id())),
        None => ("Kept", None),
    }
}

/// The expected results of the whole catalogue: (promise, result, bug).
fn expected_rows() -> Vec<(&'static str, &'static str, Option<String>)> {
    sidecar_order::conformance::catalogue::CATALOGUE
        .iter()
        .map(|e| {
            let (r, b) = expected(e);
            (e.id, r, b)
        })
        .collect()
}

async fn conformance(args: &[&str], env: &[(&str, &str)]) -> R<Output> {
    let mut c = Command::new(BIN);
    c.arg("conformance")
        .args(args)
        .env_remove("KUBERNETES_SERVICE_HOST");
    for (k, v) in env {
        c.env(k, v);
    }
    let shown = args.join(" ");
    let out = tokio::task::spawn_blocking(move || c.output())
        .await
        .ctx("joining")?
        .ctx("running sidecar-order conformance")?;
    eprintln!(
        "[sidecar-order conformance {shown}] exit {:?}\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(out)
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// The namespace a run announced on standard error.
fn announced_namespace(stderr: &str) -> Option<String> {
    stderr
        .lines()
        .find_map(|l| l.strip_prefix("conformance: namespace "))
        .and_then(|l| l.split_whitespace().next())
        .map(String::from)
}

async fn wait_namespace_gone(ns: &str) -> R<()> {
    let client = client().await;
    let api: Api<Namespace> = Api::all(client.clone());
    let api = &api;
    poll(
        &format!("namespace {ns} to be gone"),
        secs(120),
        || async move {
            match api.get_opt(ns).await.ctx("getting the namespace")? {
                None => Ok(Some(())),
                Some(n) => Err(format!("still there: {:?}", n.status.and_then(|s| s.phase))),
            }
        },
    )
    .await
}

async fn wait_namespace_gone_if_terminating(ns: &str) -> R<()> {
    let client = client().await;
    let api: Api<Namespace> = Api::all(client);
    let terminating = api
        .get_opt(ns)
        .await
        .ctx("getting the namespace")?
        .and_then(|n| n.status)
        .and_then(|s| s.phase)
        .is_some_and(|p| p == "Terminating");
    if terminating {
        wait_namespace_gone(ns).await?;
    }
    Ok(())
}

/// A kubeconfig for the local cluster's API server with `token` as the user.
fn token_kubeconfig(token: &str, file: &str) -> R<String> {
    let server = kubectl(&[
        "config",
        "view",
        "--raw",
        "--minify",
        "-o",
        "jsonpath={.clusters[0].cluster.server}",
    ])?;
    let ca = kubectl(&[
        "config",
        "view",
        "--raw",
        "--minify",
        "-o",
        "jsonpath={.clusters[0].cluster.certificate-authority-data}",
    ])?;
    ensure!(
        !server.is_empty() && !ca.is_empty(),
        "the kubeconfig has no server or CA data"
    );
    let path = std::env::temp_dir().join(file);
    let kc = format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster:\n    server: {server}\n    certificate-authority-data: {ca}\nusers:\n- name: u\n  user:\n    token: {}\ncontexts:\n- name: c\n  context: {{cluster: c, user: u}}\ncurrent-context: c\n",
        token.trim()
    );
    std::fs::write(&path, kc).ctx("writing the token kubeconfig")?;
    Ok(path.display().to_string())
}

/// Runs a test body with the run's diagnostics printed on failure.
async fn check<F: std::future::Future<Output = R<()>>>(what: &str, body: F) {
    let started = std::time::Instant::now();
    match tokio::time::timeout(TEST_LIMIT, body).await {
        Ok(Ok(())) => eprintln!("[{what}] passed in {:.1}s", started.elapsed().as_secs_f64()),
        Ok(Err(e)) => panic!("[{what}] {e}"),
        Err(_) => panic!("[{what}] did not finish within {TEST_LIMIT:?}"),
    }
}

// ------------------------------------------------------------------ c1

/// The whole catalogue on the local cluster's kubelet: every promise Kept
/// (exit 0), or, on a kubelet with a known bug, that promise Broken with the
/// upstream issue named (exit 1); a JUnit file with one testcase per
/// promise, and the namespace deleted afterwards.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn c1_clean_run_every_promise_kept() {
    check("c1-clean-run", async {
        let out = conformance(&["--image", IMAGE, "-o", "junit"], &[]).await?;
        let (xml, err) = (text(&out.stdout), text(&out.stderr));
        let want = expected_rows();
        let broken = want.iter().filter(|(_, r, _)| *r == "Broken").count();
        let skipped = want.iter().filter(|(_, r, _)| *r == "Not promised").count();
        let code = if broken > 0 { 1 } else { 0 };
        ensure!(
            out.status.code() == Some(code),
            "exit {:?}, want {code} (expected: {want:?}):\n{xml}",
            out.status.code()
        );
        let n = sidecar_order::conformance::catalogue::CATALOGUE.len();
        ensure!(
            xml.matches("<testcase ").count() == n,
            "want {n} testcases:\n{xml}"
        );
        ensure!(
            xml.contains(&format!(
                "tests=\"{n}\" failures=\"{broken}\" errors=\"0\" skipped=\"{skipped}\""
            )),
            "not as expected on kubelet {} ({want:?}):\n{xml}",
            want_kubelet()
        );
        for (id, _, bug) in &want {
            if let Some(bug) = bug {
                ensure!(
                    xml.contains(bug.as_str()),
                    "{id}: the known bug {bug} is not named:\n{xml}"
                );
            }
        }
        ensure!(
            xml.contains(&format!("kubelet {}", want_kubelet())),
            "the node's kubelet version is not in the suite name:\n{xml}"
        );
        ensure!(!xml.contains("kwok"), "a probe ran on a fake node:\n{xml}");
        let ns = announced_namespace(&err).ok_or("no namespace announced")?;
        ensure!(
            ns.starts_with("sidecar-order-conformance-"),
            "namespace {ns}"
        );
        wait_namespace_gone(&ns).await
    })
    .await;
}

// ------------------------------------------------------------------ c2

/// `--per-node` with only the permissions of config/conformance/
/// (clusterrole.yaml, through a ServiceAccount token): one row per promise on
/// every real node, each as expected on its kubelet (`expected`); the kwok
/// nodes (fake, tainted) are skipped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn c2_per_node_with_the_minimal_rbac() {
    check("c2-per-node", async {
        // A namespace left Terminating by an earlier run must be gone first.
        wait_namespace_gone_if_terminating("sidecar-order-conformance").await?;
        kubectl(&["apply", "-f", RBAC])?;
        let result = async {
            let token = kubectl(&[
                "-n",
                "sidecar-order-conformance",
                "create",
                "token",
                "sidecar-order-conformance",
            ])?;
            let kc = token_kubeconfig(&token, "sidecar-order-conformance-e2e-rbac.kubeconfig")?;
            let out = conformance(
                &[
                    "--per-node",
                    "--image",
                    IMAGE,
                    "-o",
                    "json",
                    "--kubeconfig",
                    &kc,
                ],
                &[],
            )
            .await?;
            let json = text(&out.stdout);
            let want = expected_rows();
            let code = if want.iter().any(|(_, r, _)| *r == "Broken") {
                1
            } else {
                0
            };
            ensure!(
                out.status.code() == Some(code),
                "exit {:?}, want {code}:\n{json}",
                out.status.code()
            );
            let run: serde_json::Value = serde_json::from_str(&json).ctx("parsing the JSON")?;
            let rows = run["rows"].as_array().ok_or("no rows")?;
            // Every node a probe may use: Ready, not fake, not tainted.
            let client = client().await;
            let nodes = Api::<k8s_openapi::api::core::v1::Node>::all(client.clone())
                .list(&ListParams::default())
                .await
                .ctx("listing nodes")?
                .items;
            let eligible = sidecar_order::conformance::runner::targets(
                &nodes,
                &Default::default(),
                &sidecar_order::conformance::runner::PerNode::Node,
            )?;
            let n = sidecar_order::conformance::catalogue::CATALOGUE.len();
            ensure!(
                rows.len() == n * eligible.len(),
                "{} rows, want {n} x {} nodes",
                rows.len(),
                eligible.len()
            );
            for t in &eligible {
                let on: Vec<_> = rows
                    .iter()
                    .filter(|r| r["node"] == t.label.as_str())
                    .collect();
                ensure!(on.len() == n, "node {}: {} rows", t.label, on.len());
            }
            for r in rows {
                let (_, result, bug) = want
                    .iter()
                    .find(|(id, _, _)| r["promise"] == *id)
                    .ok_or_else(|| format!("an unknown promise: {r}"))?;
                ensure!(r["result"] == *result, "want {result}: {r}");
                if let Some(bug) = bug {
                    ensure!(
                        r["knownBugs"].to_string().contains(bug.as_str()),
                        "{bug} not named: {r}"
                    );
                }
                ensure!(
                    r["kubeletVersion"] == want_kubelet().as_str(),
                    "kubelet: {r}"
                );
                ensure!(
                    !r["node"].as_str().unwrap_or("").starts_with("kwok"),
                    "a fake node: {r}"
                );
            }
            let ns = run["namespace"].as_str().ok_or("no namespace")?.to_string();
            wait_namespace_gone(&ns).await
        }
        .await;
        let _ = kubectl(&["delete", "--ignore-not-found", "--timeout=60s", "-f", RBAC]);
        result
    })
    .await;
}

// ------------------------------------------------------------------ c3

/// SIGINT in the middle of a run: the process deletes its namespace and
/// probes, exits 130, and nothing of the run is left.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn c3_interrupted_run_leaves_nothing() {
    check("c3-interrupted", async {
        let mut child = Command::new(BIN)
            .args(["conformance", "--image", IMAGE])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .ctx("starting sidecar-order conformance")?;
        let pid = child.id().to_string();
        let stderr = child.stderr.take().ok_or("no stderr")?;
        // Read standard error on a thread: the namespace, then "created".
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<String>();
        std::thread::spawn(move || {
            use std::io::BufRead;
            for l in std::io::BufReader::new(stderr)
                .lines()
                .map_while(Result::ok)
            {
                let _ = tx.send(l);
            }
        });
        let mut log = Vec::new();
        let mut ns = None;
        let wait = async {
            while let Some(l) = rx.recv().await {
                eprintln!("[c3] {l}");
                if ns.is_none() {
                    ns = announced_namespace(&l);
                }
                let created = l.contains("probe(s) created");
                log.push(l);
                if created {
                    return true;
                }
            }
            false
        };
        let created = tokio::time::timeout(secs(60), wait).await.unwrap_or(false);
        let ns = ns.ok_or_else(|| format!("no namespace announced: {log:?}"))?;
        ensure!(created, "the probes were never created: {log:?}");
        // The probes exist and run when the signal comes.
        let client = client().await;
        let pods: Api<Pod> = Api::namespaced(client.clone(), &ns);
        let pods = &pods;
        poll("a probe pod running", secs(60), || async move {
            let l = pods
                .list(&ListParams::default())
                .await
                .ctx("listing probes")?;
            Ok(l.items
                .iter()
                .any(|p| p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running"))
                .then_some(()))
        })
        .await?;
        let k = Command::new("kill")
            .args(["-INT", &pid])
            .status()
            .ctx("kill -INT")?;
        ensure!(k.success(), "kill -INT {pid} failed");
        let out = tokio::task::spawn_blocking(move || child.wait_with_output())
            .await
            .ctx("joining")?
            .ctx("waiting for the process")?;
        // Every line to the end: the reader thread closes the channel at
        // EOF, which may come after the exit (CI once read the channel
        // before the last line, the one this test looks for, was in it).
        while let Ok(Some(l)) = tokio::time::timeout(secs(10), rx.recv()).await {
            eprintln!("[c3] {l}");
            log.push(l);
        }
        ensure!(
            out.status.code() == Some(130),
            "exit {:?}, want 130: {log:?}",
            out.status.code()
        );
        ensure!(
            log.iter()
                .any(|l| l.contains("interrupted") && l.contains(&ns)),
            "no line says the run was interrupted and cleaned up: {log:?}"
        );
        wait_namespace_gone(&ns).await?;
        // No probe of that run anywhere.
        let left = Api::<Pod>::all(client)
            .list(&ListParams::default().labels(sidecar_order::conformance::runner::RUN_LABEL))
            .await
            .ctx("listing probe pods")?
            .items
            .into_iter()
            .filter(|p| p.metadata.namespace.as_deref() == Some(ns.as_str()))
            .count();
        ensure!(left == 0, "{left} probe pods of {ns} are left");
        Ok(())
    })
    .await;
}

// ------------------------------------------------------------------ c4

/// Bad usage: no cluster (KUBECONFIG pointing nowhere), and a
/// ServiceAccount without any rights: one line on standard error, exit 2;
/// the second names the verbs and resources it lacks.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn c4_no_cluster_and_no_permission_exit_2_with_one_line() {
    run("c4-bad-usage", |ctx| async move {
        let out = conformance(
            &["--image", IMAGE],
            &[
                ("KUBECONFIG", "/nonexistent/kubeconfig"),
                ("HOME", "/nonexistent"),
            ],
        )
        .await?;
        let err = text(&out.stderr);
        ensure!(
            out.status.code() == Some(2),
            "no cluster: exit {:?}, want 2: {err}",
            out.status.code()
        );
        ensure!(
            err.trim().lines().count() == 1 && err.starts_with("error: "),
            "no cluster: not one line: {err:?}"
        );

        kubectl(&["-n", &ctx.ns, "create", "serviceaccount", "nobody"])?;
        let token = kubectl(&["-n", &ctx.ns, "create", "token", "nobody"])?;
        let kc = token_kubeconfig(&token, &format!("{}.kubeconfig", ctx.ns))?;
        let out = conformance(&["--image", IMAGE, "--kubeconfig", &kc], &[]).await?;
        let err = text(&out.stderr);
        let _ = std::fs::remove_file(&kc);
        ensure!(
            out.status.code() == Some(2),
            "no permission: exit {:?}, want 2: {err}",
            out.status.code()
        );
        ensure!(
            err.trim().lines().count() == 1,
            "no permission: not one line: {err:?}"
        );
        for want in [
            "missing permissions",
            "create namespaces (cluster-wide)",
            "list nodes (cluster-wide)",
            "create pods in namespace",
        ] {
            ensure!(err.contains(want), "no permission: {want:?} not in {err:?}");
        }
        Ok(())
    })
    .await;
}
