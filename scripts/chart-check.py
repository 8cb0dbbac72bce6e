#!/usr/bin/env python3
"""chart-check.py VALUES RENDERED.yaml: checks the manifests `helm template`
rendered from charts/sidecar-order with VALUES (default or full).

Every document must be a Kubernetes object (apiVersion, kind, metadata.name,
a namespace when namespaced); the kinds must be exactly those the values ask
for; the Deployment must meet Pod Security "restricted" and carry the flags
the values map to; the CRD, the alert rules and the dashboard must be the
project's own files. Prints the controller's args (one per line) on stdout
for the caller to hand to `sidecar-order run`.
"""
import json
import os
import sys

import yaml

ROOT = os.path.normpath(os.path.join(os.path.dirname(__file__), ".."))
CLUSTER_SCOPED = {"ClusterRole", "ClusterRoleBinding", "CustomResourceDefinition", "Namespace"}
# Kinds, by values file: default values leave out what needs the Prometheus
# Operator or Grafana's sidecar.
EXPECTED = {
    "default": ["ClusterRole", "ClusterRole", "ClusterRoleBinding", "CustomResourceDefinition",
                "Deployment", "Role", "RoleBinding", "Service", "ServiceAccount"],
    "full": ["ClusterRole", "ClusterRole", "ClusterRoleBinding", "ConfigMap",
             "CustomResourceDefinition", "Deployment", "PrometheusRule", "Role", "RoleBinding",
             "Service", "ServiceAccount", "ServiceMonitor"],
}
ARGS = {
    "default": ["run", "--metrics-addr=0.0.0.0:8080", "--report-ttl=24h", "--max-reports=10000",
                "--outlive-seconds=30", "--write-concurrency=32", "--leader-elect", "--lease-name=so-sidecar-order",
                "--log-format=json"],
    "full": ["run", "--namespace=shop", "--namespace=payments",
             "--label-selector=team=checkout,tier!=batch", "--metrics-addr=0.0.0.0:9090",
             "--report-ttl=12h", "--max-reports=5000", "--outlive-seconds=45", "--write-concurrency=16",
             "--leader-elect",
             "--lease-name=sidecar-order-shop", "--log-format=plain"],
}


def fail(msg):
    sys.exit(f"chart-check: {msg}")


def load(path):
    with open(os.path.join(ROOT, path)) as f:
        return f.read()


def main():
    which, rendered = sys.argv[1], sys.argv[2]
    with open(rendered) as f:
        docs = [d for d in yaml.safe_load_all(f) if d is not None]
    kinds = sorted(d.get("kind", "?") for d in docs)
    if kinds != EXPECTED[which]:
        fail(f"{which} values: rendered kinds {kinds}, expected {EXPECTED[which]}")
    by_kind = {}
    for d in docs:
        meta = d.get("metadata") or {}
        where = f"{which} values: {d.get('kind')} {meta.get('name')}"
        if not d.get("apiVersion") or not meta.get("name"):
            fail(f"{where}: no apiVersion or metadata.name")
        if d["kind"] not in CLUSTER_SCOPED and not meta.get("namespace"):
            fail(f"{where}: namespaced object without a namespace")
        by_kind.setdefault(d["kind"], []).append(d)

    crd = by_kind["CustomResourceDefinition"][0]
    if crd != yaml.safe_load(load("crds/sidecarorderreports.yaml")):
        fail("the chart's CRD differs from crds/sidecarorderreports.yaml (make crds)")

    pod = by_kind["Deployment"][0]["spec"]["template"]["spec"]
    (c,) = pod["containers"]
    psc, sc = pod.get("securityContext", {}), c.get("securityContext", {})
    restricted = (
        psc.get("runAsNonRoot") is True and sc.get("runAsNonRoot") is True
        and sc.get("allowPrivilegeEscalation") is False
        and sc.get("capabilities", {}).get("drop") == ["ALL"]
        and sc.get("readOnlyRootFilesystem") is True
        and (sc.get("seccompProfile") or psc.get("seccompProfile", {})).get("type") == "RuntimeDefault"
    )
    if not restricted:
        fail(f"{which} values: the controller's securityContext is not PSS restricted: {psc} {sc}")
    pod_labels = by_kind["Deployment"][0]["spec"]["template"]["metadata"]["labels"]
    svc = by_kind["Service"][0]
    if not svc["spec"]["selector"].items() <= pod_labels.items():
        fail(f"{which} values: the Service selects {svc['spec']['selector']}, not the pods {pod_labels}")
    if c["args"] != ARGS[which]:
        fail(f"{which} values: controller args {c['args']}, expected {ARGS[which]}")

    if which == "full":
        rule = by_kind["PrometheusRule"][0]
        if rule["spec"] != yaml.safe_load(load("config/prometheus/rules.yaml")):
            fail("the PrometheusRule's groups differ from config/prometheus/rules.yaml")
        cm = by_kind["ConfigMap"][0]
        if cm["metadata"]["labels"].get("grafana_dashboard") != "1":
            fail("the dashboard ConfigMap has no grafana_dashboard label")
        (text,) = cm["data"].values()
        if json.loads(text) != json.loads(load("config/grafana/sidecar-order-dashboard.json")):
            fail("the dashboard ConfigMap differs from config/grafana/sidecar-order-dashboard.json")
        sm = by_kind["ServiceMonitor"][0]
        if not sm["spec"]["selector"]["matchLabels"].items() <= svc["metadata"]["labels"].items():
            fail("the ServiceMonitor does not select the metrics Service")
        if not all(e.get("honorLabels") is True for e in sm["spec"]["endpoints"]):
            fail("the ServiceMonitor must keep honorLabels: true")
    print("\n".join(c["args"]))


if __name__ == "__main__":
    main()
