{{/* The chart's name, or nameOverride. */}}
{{- define "sidecar-order.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* The release's full name: the release name when it already holds the chart's name. */}}
{{- define "sidecar-order.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "sidecar-order.selectorLabels" -}}
app.kubernetes.io/name: {{ include "sidecar-order.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "sidecar-order.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ include "sidecar-order.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: sidecar-order
{{- end }}

{{- define "sidecar-order.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "sidecar-order.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "sidecar-order.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion (toString .Values.image.tag)) }}
{{- end }}
{{- end }}

{{/* The controller's flags, from the values (see `sidecar-order run --help`). */}}
{{- define "sidecar-order.args" -}}
- run
{{- range .Values.namespaces }}
- --namespace={{ . }}
{{- end }}
{{- with .Values.labelSelector }}
- --label-selector={{ . }}
{{- end }}
- --metrics-addr=0.0.0.0:{{ .Values.metrics.port }}
- --report-ttl={{ .Values.reportTTL }}
- --max-reports={{ int64 .Values.maxReports }}
- --outlive-seconds={{ int64 .Values.outliveSeconds }}
- --write-concurrency={{ int64 .Values.writeConcurrency }}
{{- if .Values.leaderElection.enabled }}
- --leader-elect
- --lease-name={{ default (include "sidecar-order.fullname" .) .Values.leaderElection.leaseName }}
{{- end }}
- --log-format={{ .Values.logFormat }}
{{- end }}
