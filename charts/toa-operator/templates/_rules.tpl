{{/* The alert rule groups, in Prometheus rule-file shape (tests/chart/check.sh feeds this very
text to promtool). The agent's targets carry `node` (set by the monitors' relabelings). */}}
{{- define "toa.ruleGroups" -}}
{{- $r := .Values.prometheusRule -}}
{{- $a := printf "job=%q" .Values.metrics.agentJobName -}}
{{- $o := printf "job=%q" .Values.metrics.operatorJobName -}}
{{- $w := $r.ratioWindow -}}
{{- $lookups := printf "sum by (node) (rate(toa_getname_toa_ok_total{%s}[%s]) + rate(toa_getname_toa_empty_total{%s}[%s]) + rate(toa_getname_toa_mismatch_total{%s}[%s]))" $a $w $a $w $a $w -}}
{{- $doc := $r.runbookUrl -}}
groups:
  - name: toa-operator.rules
    rules:
      {{- /* A node that the eBPF backend serves has no module; its agent exports the eBPF
      counters (backend="ebpf") only while the backend is attached. */}}
      - alert: ToaModuleNotLoaded
        expr: |-
          max by (node) (toa_module_loaded{ {{- $a -}} }) == 0
          unless on (node)
          max by (node) (toa_agent_phase{ {{- $a -}}, phase=~"Unloading|Unloaded"}) == 1
          unless on (node)
          count by (node) (toa_syn_recv_sock_toa_total{ {{- $a -}}, backend="ebpf"})
        for: {{ $r.moduleNotLoadedFor }}
        labels:
          severity: warning
          {{- with $r.alertLabels }}
          {{- toYaml . | nindent 10 }}
          {{- end }}
        annotations:
          summary: TOA module not loaded on node {{`{{ $labels.node }}`}}
          description: >-
            The node agent on {{`{{ $labels.node }}`}} reports the toa module unloaded for
            {{ $r.moduleNotLoadedFor }} while its node is selected by a ToaPolicy: applications there
            see the balancer's address instead of the client's. See
            `kubectl get toanodestate {{`{{ $labels.node }}`}} -o yaml` (status.reason, status.message).
          runbook: docs/troubleshooting.md#module-not-loaded
          {{- with $doc }}
          runbook_url: {{ . }}#module-not-loaded
          {{- end }}
      - alert: ToaModuleBuildFailed
        expr: |-
          max by (node, reason) (toa_agent_phase{ {{- $a -}}, phase="Failed", reason=~"BuildFailed|BuildTimeout"}) == 1
        for: 5m
        labels:
          severity: warning
          {{- with $r.alertLabels }}
          {{- toYaml . | nindent 10 }}
          {{- end }}
        annotations:
          summary: TOA module build failed on node {{`{{ $labels.node }}`}} ({{`{{ $labels.reason }}`}})
          description: >-
            The toa module could not be compiled for the kernel of {{`{{ $labels.node }}`}}. The
            compiler's log tail is in `kubectl get toanodestate {{`{{ $labels.node }}`}} -o jsonpath='{.status.build.logTail}'`.
          runbook: docs/troubleshooting.md#{{`{{ $labels.reason | toLower }}`}}
          {{- with $doc }}
          runbook_url: {{ . }}#{{`{{ $labels.reason | toLower }}`}}
          {{- end }}
      - alert: ToaKernelHeadersMissing
        expr: |-
          max by (node) (toa_agent_phase{ {{- $a -}}, reason="HeadersMissing"}) == 1
        for: 5m
        labels:
          severity: warning
          {{- with $r.alertLabels }}
          {{- toYaml . | nindent 10 }}
          {{- end }}
        annotations:
          summary: Kernel headers missing on node {{`{{ $labels.node }}`}}
          description: >-
            The toa module cannot be built on {{`{{ $labels.node }}`}}: the headers of its running
            kernel are not installed. status.message names the package that provides them.
          runbook: docs/troubleshooting.md#headersmissing
          {{- with $doc }}
          runbook_url: {{ . }}#headersmissing
          {{- end }}
      - alert: ToaModuleFailed
        expr: |-
          max by (node, reason) (toa_agent_phase{ {{- $a -}}, phase="Failed", reason!~"BuildFailed|BuildTimeout|HeadersMissing"}) == 1
        for: 10m
        labels:
          severity: warning
          {{- with $r.alertLabels }}
          {{- toYaml . | nindent 10 }}
          {{- end }}
        annotations:
          summary: TOA module failed on node {{`{{ $labels.node }}`}} ({{`{{ $labels.reason }}`}})
          description: >-
            The node agent on {{`{{ $labels.node }}`}} is in phase Failed with reason
            {{`{{ $labels.reason }}`}}; the troubleshooting guide lists the remedy for each reason.
          runbook: docs/troubleshooting.md#{{`{{ $labels.reason | toLower }}`}}
          {{- with $doc }}
          runbook_url: {{ . }}#{{`{{ $labels.reason | toLower }}`}}
          {{- end }}
      - alert: ToaGetnameEmptyRatioHigh
        expr: |-
          (
            sum by (node) (rate(toa_getname_toa_empty_total{ {{- $a -}} }[{{ $w }}]))
            /
            {{ $lookups }}
          ) > {{ $r.getnameEmptyRatio }}
          and on (node)
          {{ $lookups }} >= {{ $r.minGetnameRate }}
        for: 15m
        labels:
          severity: warning
          {{- with $r.alertLabels }}
          {{- toYaml . | nindent 10 }}
          {{- end }}
        annotations:
          summary: Most peer-address lookups on {{`{{ $labels.node }}`}} find no TOA address
          description: >-
            {{`{{ $value | humanizePercentage }}`}} of getpeername()/accept() calls on
            {{`{{ $labels.node }}`}} were on connections that carried no TOA option (above
            {{ $r.getnameEmptyRatio }}). Either the balancer does not insert the option (check with
            tcpdump, see the FAQ), uses another option kind than the policy's ipv4OptionKinds, or
            sends from outside trustedSources (see toa_untrusted in /proc/net/toa_stats).
          runbook: docs/troubleshooting.md#toa-empty-ratio
          {{- with $doc }}
          runbook_url: {{ . }}#toa-empty-ratio
          {{- end }}
      - alert: ToaGetnameMismatchRatioHigh
        expr: |-
          (
            sum by (node) (rate(toa_getname_toa_mismatch_total{ {{- $a -}} }[{{ $w }}]))
            /
            {{ $lookups }}
          ) > {{ $r.getnameMismatchRatio }}
          and on (node)
          {{ $lookups }} >= {{ $r.minGetnameRate }}
        for: 15m
        labels:
          severity: info
          {{- with $r.alertLabels }}
          {{- toYaml . | nindent 10 }}
          {{- end }}
        annotations:
          summary: Applications on {{`{{ $labels.node }}`}} call getpeername() on NAT64 connections
          description: >-
            {{`{{ $value | humanizePercentage }}`}} of peer-address lookups on {{`{{ $labels.node }}`}}
            hit connections whose real client is IPv6 (NAT64): getpeername() cannot express that
            address. The application must ask with getsockopt(IPPROTO_IP, 4096).
          runbook: docs/troubleshooting.md#toa-mismatch-ratio
          {{- with $doc }}
          runbook_url: {{ . }}#toa-mismatch-ratio
          {{- end }}
      - alert: ToaProbeCallsMissed
        {{- $missed := printf "sum by (node) (increase(toa_probe_missed_total{%s}[%s]))" $a $w }}
        expr: |-
          {{ $missed }}
          - (sum by (node) (increase(toa_attach_fallback_total{ {{- $a -}} }[{{ $w }}])) or {{ $missed }} * 0)
          - (sum by (node) (increase(toa_entries_reclaimed_total{ {{- $a -}} }[{{ $w }}])) or {{ $missed }} * 0)
          > 0
        labels:
          severity: warning
          {{- with $r.alertLabels }}
          {{- toYaml . | nindent 10 }}
          {{- end }}
        annotations:
          summary: The toa module lost probe calls on {{`{{ $labels.node }}`}}
          description: >-
            {{`{{ $value }}`}} calls of the toa module's kernel probes on
            {{`{{ $labels.node }}`}} were skipped by the kernel in the last {{ $w }} and not
            made up for (kprobe nmissed: another probe handler was running on that CPU, or
            kretprobe instances ran out). Skipped child-creation and destruct calls that the
            module recovered (attach_fallback, entries_reclaimed) do not count; a skipped
            getname call returned the balancer's address once. The missed_* rows of
            /proc/net/toa_stats on the node name the function.
          runbook: docs/troubleshooting.md#probe-calls-missed
          {{- with $doc }}
          runbook_url: {{ . }}#probe-calls-missed
          {{- end }}
      - alert: ToaAgentDown
        expr: |-
          up{ {{- $a -}} } == 0
        for: {{ $r.agentDownFor }}
        labels:
          severity: warning
          {{- with $r.alertLabels }}
          {{- toYaml . | nindent 10 }}
          {{- end }}
        annotations:
          summary: TOA node agent on {{`{{ $labels.node }}`}} is down
          description: >-
            Prometheus cannot scrape the node agent on {{`{{ $labels.node }}`}}
            ({{`{{ $labels.instance }}`}}) for {{ $r.agentDownFor }}. The module stays loaded, but
            nothing reconciles or watches it. `kubectl -n {{ .Release.Namespace }} get pods -o wide
            -l app.kubernetes.io/name=toa-node-agent`.
          runbook: docs/troubleshooting.md#agent-down
          {{- with $doc }}
          runbook_url: {{ . }}#agent-down
          {{- end }}
      - alert: ToaNodeWithoutAgent
        expr: |-
          max by (policy) (toa_operator_nodes{ {{- $o -}}, phase="Unknown"}) > 0
        for: {{ $r.nodeWithoutAgentFor }}
        labels:
          severity: warning
          {{- with $r.alertLabels }}
          {{- toYaml . | nindent 10 }}
          {{- end }}
        annotations:
          summary: Nodes selected by ToaPolicy {{`{{ $labels.policy }}`}} have no node agent
          description: >-
            {{`{{ $value }}`}} node(s) selected by ToaPolicy {{`{{ $labels.policy }}`}} have had no
            status from a node agent for {{ $r.nodeWithoutAgentFor }}: no agent runs there (not
            schedulable, image pull failure, Pod Security), so the module is not loaded.
            `kubectl -n {{ .Release.Namespace }} get daemonset,pods -o wide -l app.kubernetes.io/name=toa-node-agent`.
          runbook: docs/troubleshooting.md#node-without-agent
          {{- with $doc }}
          runbook_url: {{ . }}#node-without-agent
          {{- end }}
      - alert: ToaOperatorDown
        expr: |-
          absent(up{ {{- $o -}} } == 1)
        for: 10m
        labels:
          severity: warning
          {{- with $r.alertLabels }}
          {{- toYaml . | nindent 10 }}
          {{- end }}
        annotations:
          summary: No TOA operator replica is up
          description: >-
            No toa-operator target has been up for 10 minutes: ToaPolicy changes and new nodes are
            not acted on. `kubectl -n {{ .Release.Namespace }} get pods -l app.kubernetes.io/component=operator`.
          runbook: docs/troubleshooting.md#operator-down
          {{- with $doc }}
          runbook_url: {{ . }}#operator-down
          {{- end }}
{{- end }}
