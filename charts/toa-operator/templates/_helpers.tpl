{{/* Chart name, overridable. */}}
{{- define "toa.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Prefix of every resource name: <release>-<chart>, or the release when it contains the chart. */}}
{{- define "toa.fullname" -}}
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

{{- define "toa.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Labels on every resource. */}}
{{- define "toa.labels" -}}
helm.sh/chart: {{ include "toa.chart" . }}
app.kubernetes.io/part-of: toa-operator
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/* Selector labels of the operator pods. */}}
{{- define "toa.operator.selectorLabels" -}}
app.kubernetes.io/name: {{ include "toa.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: operator
{{- end }}

{{/* Labels the operator puts on the agent pods (through podLabels in the agent config); the
agent Service and PodMonitor select on them. */}}
{{- define "toa.agent.selectorLabels" -}}
app.kubernetes.io/name: toa-node-agent
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: node-agent
{{- end }}

{{- define "toa.operator.serviceAccountName" -}}
{{- if .Values.serviceAccount.operator.create }}
{{- default (printf "%s-operator" (include "toa.fullname" .)) .Values.serviceAccount.operator.name }}
{{- else }}
{{- required "serviceAccount.operator.name is required when serviceAccount.operator.create is false" .Values.serviceAccount.operator.name }}
{{- end }}
{{- end }}

{{- define "toa.agent.serviceAccountName" -}}
{{- if .Values.serviceAccount.agent.create }}
{{- default (printf "%s-node-agent" (include "toa.fullname" .)) .Values.serviceAccount.agent.name }}
{{- else }}
{{- required "serviceAccount.agent.name is required when serviceAccount.agent.create is false" .Values.serviceAccount.agent.name }}
{{- end }}
{{- end }}

{{/* image reference: repository@digest, or repository:tag (tag defaults to appVersion). */}}
{{- define "toa.image" -}}
{{- $img := index . 0 }}
{{- $root := index . 1 }}
{{- if $img.digest }}
{{- printf "%s@%s" $img.repository $img.digest }}
{{- else }}
{{- printf "%s:%s" $img.repository (default $root.Chart.AppVersion $img.tag) }}
{{- end }}
{{- end }}

{{/* Whether to render the ValidatingAdmissionPolicy: "auto" asks the cluster (and Helm's
--kube-version when templating), true/false force it. The v1 API exists from Kubernetes 1.30. */}}
{{- define "toa.vap.enabled" -}}
{{- $v := .Values.validatingAdmissionPolicy.enabled }}
{{- if eq (toString $v) "auto" }}
{{- /* helm template (no cluster) knows only group/versions, not kinds: the server version
decides there, as v1 is served by default from 1.30 on. */}}
{{- if or (.Capabilities.APIVersions.Has "admissionregistration.k8s.io/v1/ValidatingAdmissionPolicy") (semverCompare ">=1.30.0-0" .Capabilities.KubeVersion.Version) }}true{{ end }}
{{- else if eq (toString $v) "true" }}true
{{- end }}
{{- end }}

{{/* monitoring.coreos.com/v1 must be served when a monitor or rule is asked for: fail early
with the fix instead of an install error from the API server. */}}
{{- define "toa.requireMonitoringApi" -}}
{{- if not (.Capabilities.APIVersions.Has "monitoring.coreos.com/v1") }}
{{- fail "metrics.monitor.enabled / prometheusRule.enabled need the prometheus-operator CRDs (monitoring.coreos.com/v1): install them first, or pass --api-versions monitoring.coreos.com/v1 to helm template" }}
{{- end }}
{{- end }}

{{/* The agent configuration file (see the operator's --agent-config), camelCase keys. */}}
{{- define "toa.agentConfig" -}}
{{- $a := .Values.agent -}}
{{- $cfg := dict
  "image" (include "toa.image" (list $a.image .))
  "imagePullPolicy" $a.image.pullPolicy
  "imagePullSecrets" (.Values.imagePullSecrets | default list)
  "serviceAccountName" (include "toa.agent.serviceAccountName" .)
  "tolerations" ($a.tolerations | default list)
  "resources" ($a.resources | default dict)
  "nodeSelector" ($a.nodeSelector | default dict)
  "hostCachePath" $a.hostCachePath
  "extraHostPaths" ($a.extraHostPaths | default list)
  "metricsPort" $a.metricsPort
  "logFormat" $a.logFormat
  "podLabels" (merge (dict) (include "toa.agent.selectorLabels" . | fromYaml) ($a.podLabels | default dict))
  "podAnnotations" ($a.podAnnotations | default dict) -}}
{{- /* The operator validates priorityClassName as a name: leave it out when empty. */}}
{{- with $a.priorityClassName }}{{ $_ := set $cfg "priorityClassName" . }}{{ end }}
{{- toYaml $cfg }}
{{- end }}
