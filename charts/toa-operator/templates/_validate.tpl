{{/* Install-time checks of what values.schema.json cannot express. Whatever the operator (its
AgentConfig::validate) or the apiserver would refuse later, the chart refuses here, naming the
value and the fix: a helm install must not produce a crash-looping operator. The lists below
mirror operator/src/config.rs and operator/src/daemonset.rs; the operator's tests read them
from this file (config::tests::chart_lists_match_the_operator), so they cannot drift. */}}

{{/* "host:port" for a listen address, with IPv6 addresses in brackets. */}}
{{- define "toa.hostPort" -}}
{{- $addr := index . 0 }}{{ $port := index . 1 }}
{{- if contains ":" $addr }}[{{ $addr }}]:{{ $port }}{{ else }}{{ $addr }}:{{ $port }}{{ end }}
{{- end }}

{{/* Seconds of a Prometheus duration such as 1m30s (the schema checked its shape). */}}
{{- define "toa.seconds" -}}
{{- $mult := dict "y" 31536000 "w" 604800 "d" 86400 "h" 3600 "m" 60 "s" 1 }}
{{- $ms := 0 }}
{{- range regexFindAll "[0-9]+(ms|y|w|d|h|m|s)" . -1 }}
{{- $n := regexFind "^[0-9]+" . | int64 }}
{{- $unit := regexReplaceAll "^[0-9]+" . "" }}
{{- if eq $unit "ms" }}{{ $ms = add $ms $n }}{{ else }}{{ $ms = add $ms (mul $n (index $mult $unit) 1000) }}{{ end }}
{{- end }}
{{- $ms }}
{{- end }}

{{/* True when path A is path B or one of its parents. */}}
{{- define "toa.pathContains" -}}
{{- $a := trimSuffix "/" (index . 0) }}{{ $b := trimSuffix "/" (index . 1) }}
{{- if or (eq $a "") (eq $a $b) (hasPrefix (printf "%s/" $a) $b) }}true{{ end }}
{{- end }}

{{/* An image repository: no tag in it, lower-case path, and no registry host of its own when a
registry is set. FIELD is the value's name in messages. */}}
{{- define "toa.validateRepository" -}}
{{- $field := index . 0 }}{{ $repo := index . 1 }}{{ $reg := index . 2 }}
{{- $parts := splitList "/" $repo }}
{{- $last := last $parts }}
{{- if contains ":" $last }}
{{- fail (printf "%s %q contains a tag (%s): put the tag in %s, the repository without it (the image would be %q)" $field $repo (regexFind ":.*$" $last) (print (trimSuffix ".repository" $field) ".tag") (printf "%s:%s" $repo "TAG")) }}
{{- end }}
{{- $host := first $parts }}
{{- if and (gt (len $parts) 1) (or (contains "." $host) (contains ":" $host) (eq $host "localhost")) (ne $reg "") }}
{{- fail (printf "%s %q already names a registry (%s) and imageRegistry is %q: the image would be %q. Set imageRegistry: %q and %s: %q, or imageRegistry: \"\"" $field $repo $host $reg (printf "%s/%s" $reg $repo) $host $field (join "/" (rest $parts))) }}
{{- end }}
{{- $path := ternary (rest $parts) $parts (and (gt (len $parts) 1) (or (contains "." $host) (contains ":" $host) (eq $host "localhost"))) }}
{{- range $path }}
{{- if not (regexMatch "^[a-z0-9]+([._-]+[a-z0-9]+)*$" .) }}
{{- fail (printf "%s %q: path component %q is not lower-case letters and digits separated by . _ - (image names are lower case)" $field $repo .) }}
{{- end }}
{{- end }}
{{- end }}

{{- define "toa.validate" -}}
{{- $v := .Values }}
{{- /* Mirrors of the operator's lists (see the comment at the top). */}}
{{- $builtinMounts := list "/host/proc" "/sys" "/sys/fs/bpf" "/sys/fs/cgroup" "/host/lib/modules" "/host/usr/src" "/usr/src" "/host/usr/lib/modules" "/host/usr/lib" "/host/etc/os-release" "/host/etc/apt" "/host/usr/share/keyrings" }}
{{- $builtinVolumes := list "host-proc" "host-sys" "host-bpffs" "host-cgroup" "host-lib-modules" "host-usr-src" "host-usr-lib-modules" "host-usr-lib" "host-os-release" "host-etc-apt" "host-usr-share-keyrings" "host-cache" }}
{{- $imageSystemPaths := list "/bin" "/sbin" "/lib" "/lib64" "/usr/bin" "/usr/sbin" "/usr/lib" "/usr/libexec" "/etc" "/dev" "/proc" "/tmp" }}
{{- $owned := splitList " " (include "toa.ownedLabelKeys" .) }}
{{- $selectorKeys := list "app.kubernetes.io/name" "app.kubernetes.io/instance" "app.kubernetes.io/component" }}

{{- /* Resource names: Services are DNS-1035 labels (a letter first, at most 63 characters). */}}
{{- $full := include "toa.fullname" . }}
{{- range $suffix := list "-operator-metrics" "-node-agent-metrics" }}
{{- $svc := printf "%s%s" $full $suffix }}
{{- if or (gt (len $svc) 63) (not (regexMatch "^[a-z]([-a-z0-9]*[a-z0-9])?$" $svc)) }}
{{- fail (printf "the Service name %q (from release name %q%s) is not a valid Service name: at most 63 characters, lower-case letters, digits and '-', starting with a letter. Use a shorter release name that starts with a letter and has no dots, or set fullnameOverride (at most %d characters, e.g. fullnameOverride: toa-operator)" $svc $.Release.Name (ternary (printf ", fullnameOverride %q" $.Values.fullnameOverride) "" (ne $.Values.fullnameOverride "")) (sub 63 (len "-node-agent-metrics"))) }}
{{- end }}
{{- end }}

{{- /* Labels: one owner per key. */}}
{{- range $k, $_ := $v.commonLabels }}
{{- if has $k $owned }}
{{- fail (printf "commonLabels.%s is set by the chart itself (and selectors rely on it): remove it from commonLabels" $k) }}
{{- end }}
{{- end }}
{{- range $field, $m := dict "metrics.monitor.labels" $v.metrics.monitor.labels "prometheusRule.labels" $v.prometheusRule.labels "dashboard.labels" $v.dashboard.labels }}
{{- range $k, $_ := $m }}
{{- if has $k $owned }}
{{- fail (printf "%s.%s is set by the chart itself: remove it from %s" $field $k $field) }}
{{- end }}
{{- end }}
{{- end }}
{{- range $field, $m := dict "operator.podLabels" $v.operator.podLabels "agent.podLabels" $v.agent.podLabels }}
{{- range $k, $_ := $m }}
{{- if has $k $selectorKeys }}
{{- fail (printf "%s.%s would change the pods' selector labels (the Deployment, DaemonSet, Service and PodDisruptionBudget select on it): remove it from %s" $field $k $field) }}
{{- end }}
{{- end }}
{{- end }}

{{- /* Images. */}}
{{- $reg := include "toa.imageRegistry" . }}
{{- include "toa.validateRepository" (list "operator.image.repository" $v.operator.image.repository $reg) }}
{{- include "toa.validateRepository" (list "agent.image.repository" $v.agent.image.repository $reg) }}

{{- /* Operator arguments the chart sets itself: a second copy makes the operator exit. */}}
{{- range $v.operator.extraArgs }}
{{- $flag := regexReplaceAll "=.*$" . "" }}
{{- $hint := dict "--metrics-addr" "operator.metricsBindAddress / operator.metricsPort" "--log-format" "operator.logFormat" "--lease-name" "operator.leaseName" "--daemonset-name" "agent.daemonSetName" "--namespace" "the release namespace" "--agent-config" "the agent.* values" "--owner-configmap" "nothing (the chart's agent ConfigMap owns what the operator creates)" }}
{{- if hasKey $hint $flag }}
{{- fail (printf "operator.extraArgs sets %s, which the chart already passes (the operator refuses a flag given twice): set %s instead" $flag (index $hint $flag)) }}
{{- end }}
{{- end }}

{{- /* Agent node selector: the operator owns these keys. */}}
{{- range $k := list "toa.dev/agent" "kubernetes.io/os" }}
{{- if hasKey ($v.agent.nodeSelector | default dict) $k }}
{{- fail (printf "agent.nodeSelector.%s is set by the operator itself (it always selects toa.dev/agent=true and kubernetes.io/os=linux): remove it from agent.nodeSelector" $k) }}
{{- end }}
{{- end }}

{{- /* Host paths. */}}
{{- $cache := $v.agent.hostCachePath }}
{{- if has ".." (splitList "/" $cache) }}
{{- fail (printf "agent.hostCachePath %q contains '..': spell the path without parent-directory components" $cache) }}
{{- end }}
{{- range $imageSystemPaths }}
{{- if include "toa.pathContains" (list $cache .) }}
{{- fail (printf "agent.hostCachePath %q would be mounted over the agent image's %s: use a dedicated directory such as /var/lib/toa-operator" $cache .) }}
{{- end }}
{{- end }}
{{- $mounts := append $builtinMounts $cache }}
{{- $names := $builtinVolumes }}
{{- range $i, $e := $v.agent.extraHostPaths }}
{{- $f := printf "agent.extraHostPaths[%d]" $i }}
{{- if has $e.name $names }}
{{- fail (printf "%s.name %q is already used by another volume of the agent: pick a unique name" $f $e.name) }}
{{- end }}
{{- $names = append $names $e.name }}
{{- range $k := list "hostPath" "mountPath" }}
{{- if has ".." (splitList "/" (index $e $k)) }}
{{- fail (printf "%s.%s %q contains '..': spell the path without parent-directory components" $f $k (index $e $k)) }}
{{- end }}
{{- end }}
{{- range $mounts }}
{{- if or (include "toa.pathContains" (list . $e.mountPath)) (include "toa.pathContains" (list $e.mountPath .)) }}
{{- fail (printf "%s.mountPath %q overlaps %q, already a mount point of the agent: mount it somewhere else, e.g. under /host/extra/" $f $e.mountPath .) }}
{{- end }}
{{- end }}
{{- range $imageSystemPaths }}
{{- if include "toa.pathContains" (list $e.mountPath .) }}
{{- fail (printf "%s.mountPath %q would be mounted over the agent image's %s: mount it somewhere else, e.g. under /host/extra/" $f $e.mountPath .) }}
{{- end }}
{{- end }}
{{- $mounts = append $mounts $e.mountPath }}
{{- end }}

{{- /* Monitoring. */}}
{{- $m := $v.metrics.monitor }}
{{- if gt (include "toa.seconds" $m.scrapeTimeout | int64) (include "toa.seconds" $m.interval | int64) }}
{{- fail (printf "metrics.monitor.scrapeTimeout %s is longer than metrics.monitor.interval %s (Prometheus refuses such a scrape config): make it at most the interval" $m.scrapeTimeout $m.interval) }}
{{- end }}
{{- if and $m.enabled (hasPrefix "127." $v.agent.metricsBindAddress) }}
{{- fail (printf "metrics.monitor.enabled scrapes the agents over the network, but agent.metricsBindAddress %q keeps their metrics node-local: use \"::\" or turn metrics.monitor off" $v.agent.metricsBindAddress) }}
{{- end }}
{{- if and $m.enabled (eq $v.agent.metricsBindAddress "::1") }}
{{- fail "metrics.monitor.enabled scrapes the agents over the network, but agent.metricsBindAddress \"::1\" keeps their metrics node-local: use \"::\" or turn metrics.monitor off" }}
{{- end }}

{{- /* One toa-operator per cluster: two would fight over the same nodes' ToaNodeStates and the
agent DaemonSet's node label. Only a real install can see the cluster (lookup is empty in helm
template and --dry-run=client). */}}
{{- $deps := lookup "apps/v1" "Deployment" "" "" }}
{{- range ($deps.items | default list) }}
{{- $l := .metadata.labels | default dict }}
{{- if and (eq (index $l "app.kubernetes.io/part-of" | default "") "toa-operator") (eq (index $l "app.kubernetes.io/component" | default "") "operator") (or (ne .metadata.namespace $.Release.Namespace) (ne (index $l "app.kubernetes.io/instance" | default "") $.Release.Name)) }}
{{- fail (printf "toa-operator is already installed in this cluster (Deployment %s/%s, release %q): one release per cluster manages every node. Upgrade that release instead (helm upgrade %s --namespace %s ...)" .metadata.namespace .metadata.name (index $l "app.kubernetes.io/instance") (index $l "app.kubernetes.io/instance") .metadata.namespace) }}
{{- end }}
{{- end }}
{{- end }}
