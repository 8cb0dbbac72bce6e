#!/bin/sh
# Regenerate prometheus_rule.yaml (PrometheusRule for the Prometheus Operator)
# from rules.yaml (plain Prometheus rule file), keeping them identical.
set -eu
cd "$(dirname "$0")"
{
  cat <<'HDR'
# GENERATED from rules.yaml by sync-rules.sh: edit rules.yaml instead.
apiVersion: monitoring.coreos.com/v1
kind: PrometheusRule
metadata:
  name: sidecar-order
  namespace: sidecar-order-system
  labels:
    app.kubernetes.io/name: sidecar-order
    app.kubernetes.io/component: metrics
spec:
HDR
  sed -e '/^#/d' -e '/^$/d' -e 's/^/  /' rules.yaml
} > prometheus_rule.yaml
