//! The `sidecar-order` binary as a user runs it: exit codes, output formats,
//! and one-line errors for bad input.

use std::process::{Command, Output, Stdio};

fn run(args: &[&str], stdin: Option<&str>) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_sidecar-order"));
    cmd.args(args).current_dir(env!("CARGO_MANIFEST_DIR"));
    cmd.stdin(if stdin.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    });
    cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("binary runs");
    if let Some(text) = stdin {
        use std::io::Write;
        child
            .stdin
            .take()
            .unwrap()
            .write_all(text.as_bytes())
            .unwrap();
    }
    child.wait_with_output().unwrap()
}

fn fixture(name: &str, file: &str) -> String {
    format!("tests/fixtures/{name}/{file}")
}

#[test]
fn verified_pod_exits_0_with_a_timeline() {
    let out = run(
        &[
            "analyze",
            "--pod",
            &fixture("real-smoke-delete", "pod.json"),
            "--events",
            &fixture("real-smoke-delete", "events.json"),
        ],
        None,
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{text}");
    assert!(text.contains("STARTUP   Verified"), "{text}");
    assert!(text.contains("SHUTDOWN  Verified"), "{text}");
    assert!(text.contains("TIMELINE"), "{text}");
    // The rows follow the manifest order, not the names' order.
    let first = text.find("first-sidecar").unwrap();
    let second = text.find("second-sidecar").unwrap();
    let app = text.rfind("  app ").unwrap();
    assert!(first < second && second < app, "{text}");
}

#[test]
fn violation_exits_1_and_json_names_the_rule() {
    let f = "rule-sidecar-stop-order";
    let out = run(
        &[
            "analyze",
            "-o",
            "json",
            "--pod",
            &fixture(f, "pod.json"),
            "--events",
            &fixture(f, "events.json"),
        ],
        None,
    );
    assert_eq!(out.status.code(), Some(1));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON output");
    assert_eq!(v["shutdown"], "Violated");
    assert_eq!(v["violations"][0]["rule"], "sidecar-stop-order");
    assert_eq!(v["violations"][0]["severity"], "Error");
    assert!(v["violations"][0]["evidence"].as_array().unwrap().len() >= 2);
}

#[test]
fn yaml_in_and_out_from_stdin() {
    let pod: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(fixture("article-app-exit", "pod.json")).unwrap(),
    )
    .unwrap();
    let yaml = serde_saphyr::to_string(&pod).unwrap();
    let out = run(&["analyze", "-o", "yaml", "--pod", "-"], Some(&yaml));
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{text}");
    assert!(text.contains("startup: Verified"), "{text}");
    assert!(text.contains("shutdown: Verified"), "{text}");
}

#[test]
fn pod_without_sidecars_says_so_and_exits_0() {
    let out = run(
        &["analyze", "--pod", &fixture("no-sidecars", "pod.json")],
        None,
    );
    assert_eq!(out.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&out.stdout).contains("no native sidecars"));
}

#[test]
fn bad_input_is_one_line_and_exit_2() {
    let dir = std::env::temp_dir().join(format!("so-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let cases = [
        (
            "broken.json",
            "{\"kind\": \"Pod\",",
            "broken.json: invalid JSON",
        ),
        (
            "svc.yaml",
            "kind: Service\nmetadata: {name: x}\n",
            "svc.yaml: expected Pod, found kind Service",
        ),
        (
            "nospec.json",
            "{\"kind\":\"Pod\",\"metadata\":{\"name\":\"p\"}}",
            "nospec.json: pod p has no spec",
        ),
        (
            "empty.json",
            "{\"kind\":\"List\",\"apiVersion\":\"v1\",\"items\":[]}",
            "empty.json: holds no pods",
        ),
        (
            "manifest.yaml",
            include_str!("../e2e/examples/02-order.yaml"),
            "manifest.yaml: pod sidecar-container-order-example has no status: this is a manifest",
        ),
    ];
    for (name, text, want) in cases {
        let path = dir.join(name);
        std::fs::write(&path, text).unwrap();
        let out = run(&["analyze", "--pod", path.to_str().unwrap()], None);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{name}: {err}");
        assert_eq!(err.lines().count(), 1, "{name}: {err}");
        assert!(err.contains(want), "{name}: {err}");
        assert!(!err.contains("panicked"), "{err}");
    }
    let out = run(&["analyze", "--pod", "/nonexistent/pod.json"], None);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent/pod.json: cannot read"));
    let pod = std::fs::read_to_string(fixture("real-smoke-delete", "pod.json")).unwrap();
    let out = run(&["analyze", "--pod", "-", "--events", "-"], Some(&pod));
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot both read standard input"));
    // Usage errors are exit 2 too.
    assert_eq!(run(&["analyze"], None).status.code(), Some(2));
}

#[test]
fn a_bad_label_selector_is_refused_before_anything_starts() {
    let out = run(
        &[
            "run",
            "--label-selector",
            "team in (a,b",
            "--metrics-addr",
            "127.0.0.1:0",
        ],
        None,
    );
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("a `(` without its `)`"), "{err}");
    assert!(
        out.stdout.is_empty(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
}

#[test]
fn a_write_concurrency_out_of_range_is_refused_before_anything_starts() {
    for bad in ["0", "65", "many"] {
        let out = run(
            &[
                "run",
                "--write-concurrency",
                bad,
                "--metrics-addr",
                "127.0.0.1:0",
            ],
            None,
        );
        assert_eq!(out.status.code(), Some(2), "{bad}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("--write-concurrency"), "{bad}: {err}");
    }
}
