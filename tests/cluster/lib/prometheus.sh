# shellcheck shell=bash source-path=SCRIPTDIR
# A real Prometheus server (Debian's prometheus 2.42) for the cluster suite, on 127.0.0.1 only.
# It scrapes every node guest's agent through its hostfwd port and the operator replicas, with a
# static configuration that adds the labels the chart's ServiceMonitor relabelling adds (`node`
# = the pod's node, a fixed `job`), and loads the chart's own alert rules rendered by helm with
# short `for:` durations.
#
#   prom_start TARGETS_FILE     TARGETS_FILE: lines "JOB HOST:PORT NODE" (NODE "-" for none)
#   prom_stop
#   prom_query EXPR             prints the JSON result vector of an instant query
#   prom_alert_state ALERT NODE prints inactive|pending|firing

# State lives in files under $NODES_DIR/prometheus: checks run in subshells.
_prom_dir() { echo "$NODES_DIR/prometheus"; }
_prom_url() { cat "$(_prom_dir)/url"; }
# Short enough that a check sees an alert fire within seconds; the chart's defaults are minutes.
PROM_NOT_LOADED_FOR=${PROM_NOT_LOADED_FOR:-4s}
PROM_AGENT_DOWN_FOR=${PROM_AGENT_DOWN_FOR:-4s}

# _prom_rules OUT: the chart's PrometheusRule groups (templates/prometheusrule.yaml), rendered by
# helm with the short durations, as a Prometheus rule file.
_prom_rules() {
	local out=$1 rendered
	rendered=$(helm template toa "$TOA_REPO_DIR/charts/toa-operator" --namespace "${CP_NAMESPACE:-toa-system}" \
		--api-versions monitoring.coreos.com/v1 --set prometheusRule.enabled=true \
		--set "prometheusRule.moduleNotLoadedFor=$PROM_NOT_LOADED_FOR" \
		--set "prometheusRule.agentDownFor=$PROM_AGENT_DOWN_FOR" \
		--show-only templates/prometheusrule.yaml) || toa_die "helm template of the chart's PrometheusRule failed"
	python3 -c '
import sys, yaml
doc = yaml.safe_load(sys.stdin)
assert doc["kind"] == "PrometheusRule", doc["kind"]
yaml.safe_dump({"groups": doc["spec"]["groups"]}, sys.stdout, sort_keys=False)
' <<<"$rendered" >"$out" || toa_die "could not turn the rendered PrometheusRule into a rule file"
	promtool check rules "$out" >/dev/null || toa_die "promtool rejects the rendered rules $out"
}

# prom_needs: the Prometheus server (Debian's) and promtool's rule input (helm renders it,
# PyYAML turns the PrometheusRule into a rule file).
prom_needs() {
	need_apt prometheus
	need_k8s_tools
	need_pip pyyaml
}

prom_start() {
	local targets=$1 port i pid PROM_DIR
	prom_needs
	PROM_DIR=$(_prom_dir)
	prom_stop
	rm -rf "$PROM_DIR" && mkdir -p "$PROM_DIR"
	_prom_rules "$PROM_DIR/rules.yaml"
	port=$(_nodes_free_port)
	python3 -c '
import sys, yaml
jobs = {}
for line in open(sys.argv[1]):
    f = line.split()
    if not f:
        continue
    job, addr, node = f
    labels = {} if node == "-" else {"node": node}
    jobs.setdefault(job, []).append({"targets": [addr], "labels": labels})
cfg = {
    "global": {"scrape_interval": "1s", "scrape_timeout": "900ms", "evaluation_interval": "1s"},
    "rule_files": [sys.argv[2]],
    "scrape_configs": [{"job_name": j, "metrics_path": "/metrics", "static_configs": s} for j, s in jobs.items()],
}
yaml.safe_dump(cfg, open(sys.argv[3], "w"), sort_keys=False)
' "$targets" "$PROM_DIR/rules.yaml" "$PROM_DIR/prometheus.yml"
	promtool check config "$PROM_DIR/prometheus.yml" >/dev/null || toa_die "promtool rejects $PROM_DIR/prometheus.yml"
	prometheus --config.file="$PROM_DIR/prometheus.yml" --storage.tsdb.path="$PROM_DIR/data" \
		--web.listen-address="127.0.0.1:$port" >"$PROM_DIR/prometheus.log" 2>&1 </dev/null &
	pid=$!
	echo "$pid" >"$PROM_DIR/pid"
	echo "http://127.0.0.1:$port" >"$PROM_DIR/url"
	for i in $(seq 1 60); do
		curl -sf "http://127.0.0.1:$port/-/ready" >/dev/null 2>&1 && break
		kill -0 "$pid" 2>/dev/null || toa_die "prometheus exited: $(tail -n 5 "$PROM_DIR/prometheus.log")"
		sleep 0.5
	done
	[ "$i" -lt 60 ] || toa_die "prometheus not ready in 30 s"
}

prom_stop() {
	local pid
	pid=$(cat "$(_prom_dir)/pid" 2>/dev/null) || return 0
	kill "$pid" 2>/dev/null || true
	for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
	rm -f "$(_prom_dir)/pid"
}

prom_query() {
	curl -sf --get "$(_prom_url)/api/v1/query" --data-urlencode "query=$1" | jq -c '.data.result'
}

# prom_alert_state ALERT NODE
prom_alert_state() {
	curl -sf "$(_prom_url)/api/v1/alerts" | jq -r --arg a "$1" --arg n "$2" '
	  [.data.alerts[] | select(.labels.alertname == $a and .labels.node == $n) | .state]
	  | if index("firing") != null then "firing" elif length > 0 then .[0] else "inactive" end'
}
