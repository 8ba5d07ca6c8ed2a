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

{{/* The labels the chart sets itself, as a dict (commonLabels may not reuse their keys:
toa.validate refuses that, so no key is ever rendered twice). */}}
{{- define "toa.chartLabels" -}}
{{- toYaml (dict
  "helm.sh/chart" (include "toa.chart" .)
  "app.kubernetes.io/part-of" "toa-operator"
  "app.kubernetes.io/managed-by" .Release.Service
  "app.kubernetes.io/version" (toString .Chart.AppVersion)
  "app.kubernetes.io/instance" .Release.Name) }}
{{- end }}

{{/* Label keys the chart owns: commonLabels and podLabels may not set them. */}}
{{- define "toa.ownedLabelKeys" -}}
helm.sh/chart app.kubernetes.io/part-of app.kubernetes.io/managed-by app.kubernetes.io/version app.kubernetes.io/instance app.kubernetes.io/name app.kubernetes.io/component
{{- end }}

{{/* Labels on every resource: the chart's, commonLabels. */}}
{{- define "toa.labels" -}}
{{- toYaml (merge (dict) (include "toa.chartLabels" . | fromYaml) (.Values.commonLabels | default dict)) }}
{{- end }}

{{/* metadata.labels and .annotations of a resource, each key once: dict "root" $ "component"
C "labels" EXTRA "annotations" EXTRA. The chart's labels win over EXTRA and commonLabels; EXTRA
(e.g. metrics.monitor.labels) wins over commonLabels. */}}
{{- define "toa.metadata" -}}
{{- $root := .root }}
{{- $labels := merge (dict) (include "toa.chartLabels" $root | fromYaml) }}
{{- with .component }}{{ $_ := set $labels "app.kubernetes.io/component" . }}{{ end }}
{{- $labels = merge $labels (.labels | default dict) ($root.Values.commonLabels | default dict) }}
{{- $ann := merge (dict) (.annotations | default dict) ($root.Values.commonAnnotations | default dict) }}
labels:
  {{- toYaml $labels | nindent 2 }}
{{- with $ann }}
annotations:
  {{- toYaml . | nindent 2 }}
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

{{/* The registry of both images: global.imageRegistry (umbrella charts), else imageRegistry. */}}
{{- define "toa.imageRegistry" -}}
{{- $g := .Values.global | default dict }}
{{- default .Values.imageRegistry $g.imageRegistry | trimSuffix "/" }}
{{- end }}

{{/* image reference: [registry/]repository@digest, or [registry/]repository:tag (tag defaults
to appVersion). */}}
{{- define "toa.image" -}}
{{- $img := index . 0 }}
{{- $root := index . 1 }}
{{- $reg := include "toa.imageRegistry" $root }}
{{- $repo := ternary (printf "%s/%s" $reg $img.repository) $img.repository (ne $reg "") }}
{{- if $img.digest }}
{{- printf "%s@%s" $repo $img.digest }}
{{- else }}
{{- printf "%s:%s" $repo (default $root.Chart.AppVersion $img.tag) }}
{{- end }}
{{- end }}

{{/* imagePullSecrets plus global.imagePullSecrets, as [{name: ...}], each name once. */}}
{{- define "toa.pullSecrets" -}}
{{- $names := list }}
{{- $g := .Values.global | default dict }}
{{- range concat (.Values.imagePullSecrets | default list) ($g.imagePullSecrets | default list) }}
{{- if kindIs "map" . }}{{ $names = append $names .name }}{{ else }}{{ $names = append $names . }}{{ end }}
{{- end }}
{{- $out := list }}
{{- range uniq $names }}{{ $out = append $out (dict "name" .) }}{{ end }}
{{- toYaml $out }}
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
  "imagePullSecrets" (include "toa.pullSecrets" . | fromYamlArray)
  "serviceAccountName" (include "toa.agent.serviceAccountName" .)
  "tolerations" ($a.tolerations | default list)
  "resources" ($a.resources | default dict)
  "nodeSelector" ($a.nodeSelector | default dict)
  "hostCachePath" $a.hostCachePath
  "extraHostPaths" ($a.extraHostPaths | default list)
  "metricsPort" $a.metricsPort
  "metricsBindAddress" $a.metricsBindAddress
  "perCpuMetrics" $a.perCpuMetrics
  "buildTimeoutSeconds" $a.buildTimeoutSeconds
  "cacheMaxAgeDays" $a.cacheMaxAgeDays
  "buildRoot" $a.buildRoot
  "buildRootMirror" $a.buildRootMirror
  "logFormat" $a.logFormat
  "podLabels" (merge (dict) (include "toa.agent.selectorLabels" . | fromYaml) ($a.podLabels | default dict) (.Values.commonLabels | default dict))
  "podAnnotations" (merge (dict) ($a.podAnnotations | default dict) (.Values.commonAnnotations | default dict))
  "labels" (.Values.commonLabels | default dict)
  "annotations" (.Values.commonAnnotations | default dict) -}}
{{- /* The operator validates priorityClassName as a name: leave it out when empty. */}}
{{- with $a.priorityClassName }}{{ $_ := set $cfg "priorityClassName" . }}{{ end }}
{{- toYaml $cfg }}
{{- end }}

{{/* Fills values missing from .Values with the chart's defaults (files/default-values.yaml is
a link to values.yaml). `helm upgrade --reuse-values` renders a new chart with the previous
release's values only: a value added in the new version would be missing and a nested one
(operator.podDisruptionBudget.enabled) would stop the render with a nil pointer. Every template
includes this first. A value set to null therefore gets its default back: use an empty value
("", [], {}) to switch something off. */}}
{{- define "toa.defaults" -}}
{{- include "toa.fillMissing" (dict "dst" .Values "src" (.Files.Get "files/default-values.yaml" | fromYaml)) }}
{{- end }}

{{/* Adds the keys of src that dst lacks, recursively into maps both have. Unlike sprig's merge it
never replaces a value that is present (false, "", 0, [] and {} stay as the user set them). */}}
{{- define "toa.fillMissing" -}}
{{- $dst := .dst }}
{{- range $k, $v := .src }}
{{- if not (hasKey $dst $k) }}
{{- $_ := set $dst $k (deepCopy $v) }}
{{- else if and (kindIs "map" $v) (kindIs "map" (index $dst $k)) }}
{{- include "toa.fillMissing" (dict "dst" (index $dst $k) "src" $v) }}
{{- end }}
{{- end }}
{{- end }}
