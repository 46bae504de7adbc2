{{/* Names, labels and shared values of the zeta-router chart. */}}

{{- define "zeta-router.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* <release>-<chart>, or just <release> when it already contains the chart name. */}}
{{- define "zeta-router.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "zeta-router.operatorName" -}}
{{- printf "%s-operator" (include "zeta-router.fullname" .) | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "zeta-router.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Selector of the operator pods (immutable once installed). */}}
{{- define "zeta-router.selectorLabels" -}}
app.kubernetes.io/name: {{ include "zeta-router.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: operator
{{- end -}}

{{- define "zeta-router.labels" -}}
{{ include "zeta-router.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/part-of: zeta-router
helm.sh/chart: {{ include "zeta-router.chart" . }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end -}}

{{- define "zeta-router.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "zeta-router.operatorName" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "zeta-router.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}

{{/* true when the operator serves every namespace (no --namespace). */}}
{{- define "zeta-router.clusterwide" -}}
{{- if and (eq .Values.rbac.scope "cluster") (empty .Values.operator.watchNamespaces) -}}true{{- end -}}
{{- end -}}

{{/* The served namespaces as a JSON list ([] when cluster-wide). */}}
{{- define "zeta-router.watchNamespaces" -}}
{{- if .Values.operator.watchNamespaces -}}
{{- toJson (uniq .Values.operator.watchNamespaces) -}}
{{- else if eq .Values.rbac.scope "namespace" -}}
{{- toJson (list .Release.Namespace) -}}
{{- else -}}
[]
{{- end -}}
{{- end -}}

{{/* Checks across values that the schema cannot express, with a message naming the values. */}}
{{- define "zeta-router.validate" -}}
{{- if and (gt (int .Values.replicaCount) 1) (not .Values.operator.peering.enabled) -}}
{{- fail (printf "replicaCount %d needs operator.peering.enabled=true: without peering every replica would reconcile at once" (int .Values.replicaCount)) -}}
{{- end -}}
{{- if and .Values.monitoring.podMonitor.enabled .Values.monitoring.serviceMonitor.enabled .Values.monitoring.serviceMonitor.zetaRouters -}}
{{- fail "monitoring.podMonitor.enabled and monitoring.serviceMonitor.zetaRouters both scrape the ZetaRouter pods (every series twice): set monitoring.serviceMonitor.zetaRouters=false or disable the PodMonitor" -}}
{{- end -}}
{{- if and .Values.monitoring.serviceMonitor.enabled .Values.monitoring.serviceMonitor.operator (not .Values.metrics.service.enabled) -}}
{{- fail "monitoring.serviceMonitor.operator scrapes the operator through its metrics Service: set metrics.service.enabled=true" -}}
{{- end -}}
{{- if and .Values.prometheusAuth.allowedSecrets (ne .Values.prometheusAuth.policy "allowList") -}}
{{- fail "prometheusAuth.allowedSecrets is set but prometheusAuth.policy is not allowList: set policy=allowList (or empty the list)" -}}
{{- end -}}
{{- $served := include "zeta-router.watchNamespaces" . | fromJsonArray -}}
{{- if and $served (eq .Values.prometheusAuth.policy "allowList") -}}
{{- range .Values.prometheusAuth.allowedSecrets -}}
{{- if not (has .namespace $served) -}}
{{- fail (printf "prometheusAuth.allowedSecrets: Secret %s/%s is in a namespace the operator does not serve (%s)" .namespace .name (join ", " $served)) -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{- if eq .Values.rbac.scope "namespace" -}}
{{- range .Values.operator.watchNamespaces -}}
{{- if regexMatch "[*?\\[!]" . -}}
{{- fail (printf "operator.watchNamespaces: %q is a pattern; with rbac.scope=namespace every watched namespace needs its own Role, so list exact names (or use rbac.scope=cluster)" .) -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{- end -}}
