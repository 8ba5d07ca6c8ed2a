# shellcheck shell=bash source-path=SCRIPTDIR disable=SC2016 # guest scripts are single-quoted on purpose
# Guest scenarios of the cluster suite: QEMU guests booting real Debian kernels are the
# cluster's nodes and run the real agent as the operator's DaemonSet pod would
# (tests/cluster/lib/nodes.sh). tests/cluster/run.sh calls `nodes_checks` once the chart is
# installed and the operator replicas run. Every check is asserted from the API (kubectl),
# inside the guests (node_exec) and from the agents' metrics.
#
# Policy: crds/examples/trusted-balancers.yaml (kinds [200], nat64 [253], trusted 10.0.0.0/8
# 100.64.0.0/10 fd00:ab::/32, maxUnavailable 2) renamed `guests` and selecting the label
# toa-test/guest=true only, so that Node objects other checks leave behind are not selected.
# Guests: guest-6-1 (6.1) and guest-6-12 (6.12) labelled toa-test/guest=true; guest-late (the
# first kernel again) joins later with the same label.
#
# Environment: TOA_CLUSTER_KERNELS (default "6.1 6.12"), TOA_NODES_GUEST_MEM (MB, 2048).

NODES_KERNELS=${TOA_CLUSTER_KERNELS:-"6.1 6.12"}
NODES_POLICY_EXAMPLE=$TOA_REPO_DIR/crds/examples/trusted-balancers.yaml
NODES_POLICY=guests
NODES_LABEL=toa-test/guest=true
NODES_NAMES=()
# Seconds to wait for a phase that needs no compiler (the modules were built beforehand).
NODES_WAIT=${TOA_NODES_WAIT:-240}

_nc_name() { echo "guest-${1//./-}"; }

# ToaNodeState helpers ------------------------------------------------------------------
_nc_state() { cp_kubectl get toanodestate "$1" -o json; }
_nc_phase_is() { # NAME PHASE [SOURCE]
	local js
	js=$(_nc_state "$1") || return 1
	jq -e --arg p "$2" --arg s "${3:-}" '
	  .status.phase == $p and .status.observedGeneration == .metadata.generation
	  and ($s == "" or .status.module.source == $s)' >/dev/null <<<"$js"
}
_nc_gone() { ! cp_kubectl get toanodestate "$1" >/dev/null 2>&1; }
_nc_guest() { node_exec "$1" "${2:-60}"; }
_nc_loads_logged() { _nc_guest "$1" <<<"dmesg | grep -c 'toa load success' || true"; }

_nc_show() {
	cp_kubectl get toapolicies,toanodestates -o wide 2>&1 | sed 's/^/  | /'
}

# _nc_policy_yaml: the example policy, renamed and selecting the guests' label only.
_nc_policy_yaml() {
	python3 -c '
import sys, yaml
doc = yaml.safe_load(open(sys.argv[1]))
key, value = sys.argv[3].split("=", 1)
doc["metadata"]["name"] = sys.argv[2]
doc["spec"]["nodeSelector"] = {"matchLabels": {key: value}}
yaml.safe_dump(doc, sys.stdout, sort_keys=False)
' "$NODES_POLICY_EXAMPLE" "$NODES_POLICY" "$NODES_LABEL"
}

# Checks ---------------------------------------------------------------------------------
_nc_boot_guests() {
	local s name
	for s in $NODES_KERNELS; do
		name=$(_nc_name "$s")
		node_boot "$name" "$s" "$NODES_LABEL"
		echo "$name: $(node_kver "$name") booted in $(cat "$NODES_DIR/$name/boot.seconds")s"
		cp_kubectl get node "$name" -o json | jq -e --arg k "$(node_kver "$name")" \
			'.status.nodeInfo.kernelVersion == $k and .metadata.labels["kubernetes.io/os"] == "linux"' >/dev/null
	done
}

_nc_prewarm() {
	local n
	# One at a time: never two compilers under TCG at once (the control plane would starve).
	for n in "${NODES_NAMES[@]}"; do
		node_prewarm "$n"
		echo "$n: module build $(cat "$NODES_DIR/$n/build.seconds")s (0 = cached from an earlier run)"
	done
}

_nc_pods_start() {
	local n
	for n in "${NODES_NAMES[@]}"; do
		node_pod_start "$n"
	done
	# With no ToaPolicy selecting them yet, each agent reports that it waits for a ToaNodeState.
	for n in "${NODES_NAMES[@]}"; do
		wait_until 60 "$n's agent runs and serves /metrics" \
			curl -sf "http://127.0.0.1:$(node_metrics_port "$n")/metrics"
		_nc_guest "$n" <<<'grep -c "" /run/toa/agent.args; kill -0 "$(cat /run/toa/agent.pid)"'
	done
}

_nc_policy_loaded() {
	local n t0 js want_kernels got_kernels
	t0=$(date +%s)
	_nc_policy_yaml | cp_kubectl apply -f -
	for n in "${NODES_NAMES[@]}"; do
		wait_until "$NODES_WAIT" "ToaNodeState $n Loaded" _nc_phase_is "$n" Loaded
		echo "$n Loaded $(($(date +%s) - t0))s after the apply"
	done
	wait_until 60 "policy $NODES_POLICY Ready=True" _nc_policy_ready "${#NODES_NAMES[@]}"
	echo "all ${#NODES_NAMES[@]} guests Loaded and the policy Ready in $(($(date +%s) - t0))s"
	_nc_show
	js=$(cp_kubectl get toapolicy "$NODES_POLICY" -o json)
	want_kernels=$(for n in "${NODES_NAMES[@]}"; do node_kver "$n"; done | sort | uniq -c | awk '{ printf "%s=%s\n", $2, $1 }')
	got_kernels=$(jq -r '.status.kernels[] | "\(.release)=\(.nodes)"' <<<"$js" | sort)
	[ "$got_kernels" = "$(sort <<<"$want_kernels")" ] || {
		echo "policy kernels: got $(tr '\n' ' ' <<<"$got_kernels"), expected $(tr '\n' ' ' <<<"$want_kernels")"
		return 1
	}
	for n in "${NODES_NAMES[@]}"; do
		js=$(cp_kubectl get toanodestate "$n" -o json --show-managed-fields)
		# The status was written by the agent in the guest (server-side apply, its own manager).
		jq -e '[.metadata.managedFields[] | select(.subresource == "status") | .manager] | index("toa-node-agent") != null' >/dev/null <<<"$js" ||
			{ echo "$n: no status field manager toa-node-agent: $(jq -c '[.metadata.managedFields[] | {manager, subresource}]' <<<"$js")"; return 1; }
		jq -e --arg k "$(node_kver "$n")" '.status.kernel.release == $k and .status.module.parameters.ipv4_kinds == "200"' >/dev/null <<<"$js" ||
			{ echo "$n: status $(jq -c .status <<<"$js")"; return 1; }
		# ...and the module really is loaded in the guest, with the policy's parameters.
		_nc_guest "$n" <<<'set -e; test -d /sys/module/toa; echo "$(uname -r): ipv4_kinds=$(cat /sys/module/toa/parameters/ipv4_kinds) trusted=$(cat /sys/module/toa/parameters/trusted_sources)"'
	done
	# `kubectl get` columns: NAME SELECTED LOADED FAILED CONFLICTING READY REASON for the policy,
	# NAME POLICY PHASE REASON KERNEL for each node (a Loaded node's REASON cell is blank).
	local row
	row=$(cp_kubectl get toapolicy "$NODES_POLICY" --no-headers)
	awk -v n="${#NODES_NAMES[@]}" '{ exit !($2 == n && $3 == n && $4 == 0 && $5 == 0 && $6 == "True") }' <<<"$row" ||
		{ echo "kubectl get toapolicy: '$row'"; return 1; }
	for n in "${NODES_NAMES[@]}"; do
		row=$(cp_kubectl get toanodestate "$n" --no-headers)
		awk -v p="$NODES_POLICY" -v k="$(node_kver "$n")" '{ exit !($2 == p && $3 == "Loaded" && $4 == k) }' <<<"$row" ||
			{ echo "kubectl get toanodestate $n: '$row'"; return 1; }
	done
}

# From inside a guest, with the pod's own token (bound to its Node): the agent of one node
# cannot write another node's ToaNodeState status (the chart's ValidatingAdmissionPolicy), and
# can write its own. Dry runs: admission runs, nothing is stored.
_nc_token_confined() {
	local a=${NODES_NAMES[0]} b=${NODES_NAMES[1]} out
	out=$(_nc_guest "$a" <<EOS
sa=/var/run/secrets/kubernetes.io/serviceaccount
for target in $b $a; do
	code=\$(curl -s -o /run/patch-\$target.json -w '%{http_code}' --cacert \$sa/ca.crt \
		-H "Authorization: Bearer \$(cat \$sa/token)" -H 'Content-Type: application/merge-patch+json' \
		-X PATCH -d '{"status":{"message":"written by the harness with the agent token of $a"}}' \
		"https://$CP_GUEST_APISERVER_IP:$CP_GUEST_APISERVER_PORT/apis/toa.dev/v1alpha1/toanodestates/\$target/status?dryRun=All")
	echo "\$target \$code \$(jq -r '.message // empty' /run/patch-\$target.json)"
done
EOS
	)
	echo "$out"
	grep -q "^$b 403 .*may only write ToaNodeState $a, not $b" <<<"$out" ||
		{ echo "the agent token of $a was not refused on $b"; return 1; }
	grep -q "^$a 200 " <<<"$out" || { echo "the agent token of $a cannot write its own status"; return 1; }
}

_nc_policy_ready() { # N: Ready=True with N selected and N loaded, for the current generation
	cp_kubectl get toapolicy "$NODES_POLICY" -o json | jq -e --argjson n "$1" '
	  .status.observedGeneration == .metadata.generation
	  and .status.selectedNodes == $n and .status.loadedNodes == $n and .status.failedNodes == 0
	  and ([.status.conditions[] | select(.type == "Ready")][0].status == "True")' >/dev/null
}

_nc_traffic() {
	local n out
	for n in "${NODES_NAMES[@]}"; do
		# toatest's balancer (a TUN in the guest, source 10.0.0.2: inside the policy's trusted
		# 10.0.0.0/8) sends kind 200 options carrying 203.0.113.7.
		out=$(_nc_guest "$n" <<<'toatest conn --count 3 --kind 200 2>&1')
		grep -q "3 of 3 connections showed the real address" <<<"$out" ||
			{ echo "$n: $out"; return 1; }
		echo "$n ($(node_kver "$n")): $(tail -n1 <<<"$out")"
	done
}

# Kinds and trusted sources change at run time: written to /sys/module/toa/parameters, no
# reload (the load count in the kernel log stays), connections accepted before the change and
# still open keep showing the real address (getpeername on the same accepted sockets after the
# change), and traffic with the new kind works.
_nc_params_no_reload() {
	local n before=() i=0 gen out
	for n in "${NODES_NAMES[@]}"; do before+=("$(_nc_loads_logged "$n")"); done
	# Whatever happens, no holder keeps the guest's TUN (toa0) from the later checks.
	trap _nc_release_holders EXIT
	for n in "${NODES_NAMES[@]}"; do
		out=$(_nc_guest "$n" <<'EOS'
set -e
rm -f /run/hold.go /run/hold.out
setsid toatest conn --count 3 --kind 200 --hold-until /run/hold.go </dev/null >/run/hold.out 2>&1 &
echo $! >/run/hold.pid
for i in $(seq 1 150); do grep -q "connections showed" /run/hold.out && break; sleep 0.2; done
cat /run/hold.out
grep -q "3 of 3 connections showed the real address" /run/hold.out
kill -0 "$(cat /run/hold.pid)"
EOS
		) || { echo "$n: $out"; return 1; }
		echo "$n: 3 TOA connections accepted and held open: $(grep -c '^conn [0-9]' <<<"$out") sockets"
	done
	cp_kubectl patch toapolicy "$NODES_POLICY" --type=merge \
		-p '{"spec":{"module":{"ipv4OptionKinds":[200,254],"trustedSources":["10.0.0.0/8","192.0.2.0/24"]}}}'
	for n in "${NODES_NAMES[@]}"; do
		wait_until "$NODES_WAIT" "$n applies the new parameters" _nc_params_are "$n" "200,254"
		out=$(_nc_guest "$n" <<<'cat /sys/module/toa/parameters/ipv4_kinds /sys/module/toa/parameters/trusted_sources | tr "\n" " "')
		echo "$n: $out"
		grep -q '192.0.2.0/24' <<<"$out" || { echo "$n: trusted sources not applied"; return 1; }
		[ "$(_nc_loads_logged "$n")" = "${before[$i]}" ] ||
			{ echo "$n: the module was reloaded ($(_nc_loads_logged "$n") loads, ${before[$i]} before)"; return 1; }
		# The connections accepted before the change, still open: same sockets, same address.
		out=$(_nc_guest "$n" <<'EOS'
touch /run/hold.go
p=$(cat /run/hold.pid)
for i in $(seq 1 100); do kill -0 "$p" 2>/dev/null || break; sleep 0.2; done
grep '^held' /run/hold.out
EOS
		)
		echo "$out" | sed "s/^/$n: /"
		grep -q "^held: 3 of 3 open connections still showed the real address" <<<"$out" ||
			{ echo "$n: the open connections lost their address across the parameter change"; return 1; }
		out=$(_nc_guest "$n" <<<'toatest conn --count 2 --kind 254 2>&1')
		grep -q "2 of 2 connections showed the real address" <<<"$out" || { echo "$n: $out"; return 1; }
		i=$((i + 1))
	done
	gen=$(cp_kubectl get toapolicy "$NODES_POLICY" -o jsonpath='{.metadata.generation}')
	wait_until 60 "policy Ready for generation $gen" _nc_policy_ready "${#NODES_NAMES[@]}"
}

_nc_release_holders() {
	local n
	for n in "${NODES_NAMES[@]}"; do _nc_guest "$n" 20 <<<'touch /run/hold.go' >/dev/null 2>&1 || true; done
}

_nc_params_are() { # NAME KINDS: the agent reports them for the current generation
	_nc_state "$1" | jq -e --arg k "$2" '
	  .status.phase == "Loaded" and .status.observedGeneration == .metadata.generation
	  and .status.module.parameters.ipv4_kinds == $k' >/dev/null
}

# A node moving between policies with different kinds ends with the new parameters: a second
# policy (priority 200 over the first one's 100, kinds [201]) selects one guest by an extra label; the guest moves to
# it (the first policy shows Conflict), its agent applies kind 201 (reported, in sysfs, and
# traffic with kind 201 shows the real address) without a reload. Deleting the second policy
# hands the node back: the first policy's kinds again, still no reload.
_nc_move_between_policies() {
	local n=${NODES_NAMES[0]} loads out
	loads=$(_nc_loads_logged "$n")
	# On any exit: the second policy and the label go, so the later checks see one policy.
	# shellcheck disable=SC2064 # $n expanded now
	trap "cp_kubectl delete toapolicy guests-edge --ignore-not-found --timeout=120s >/dev/null 2>&1; cp_kubectl label node $n toa-test/edge- >/dev/null 2>&1" EXIT
	cp_kubectl label node "$n" toa-test/edge=true
	_nc_policy_yaml | python3 -c '
import sys, yaml
doc = yaml.safe_load(sys.stdin)
doc["metadata"]["name"] = "guests-edge"
doc["spec"]["priority"] = 200
doc["spec"]["nodeSelector"] = {"matchLabels": {"toa-test/edge": "true"}}
doc["spec"]["module"]["ipv4OptionKinds"] = [201]
yaml.safe_dump(doc, sys.stdout, sort_keys=False)' | cp_kubectl apply -f -
	wait_until "$NODES_WAIT" "$n moves to guests-edge and reports kind 201" _nc_on_policy "$n" guests-edge 201
	wait_until 30 "Conflict on $NODES_POLICY" _nc_conflict_is True
	out=$(_nc_guest "$n" <<<'cat /sys/module/toa/parameters/ipv4_kinds; toatest conn --count 2 --kind 201 2>&1 | tail -n1')
	echo "$n on guests-edge: $(tr '\n' ' ' <<<"$out")"
	[ "$(head -n1 <<<"$out")" = 201 ] || { echo "$n: ipv4_kinds is not 201"; return 1; }
	grep -q "2 of 2 connections showed the real address" <<<"$out" || return 1
	cp_kubectl delete toapolicy guests-edge --timeout=120s
	wait_until "$NODES_WAIT" "$n back on $NODES_POLICY with kinds 200,254" _nc_on_policy "$n" "$NODES_POLICY" 200,254
	_nc_guest "$n" <<<'test "$(cat /sys/module/toa/parameters/ipv4_kinds)" = 200,254'
	[ "$(_nc_loads_logged "$n")" = "$loads" ] || { echo "$n: reloaded while moving"; return 1; }
	wait_until 30 "Conflict cleared on $NODES_POLICY" _nc_conflict_is False
	cp_kubectl label node "$n" toa-test/edge-
	wait_until 60 "policy Ready" _nc_policy_ready "${#NODES_NAMES[@]}"
	echo "$n moved to guests-edge (kind 201) and back (200,254) with no reload"
}
_nc_on_policy() { # NODE POLICY KINDS
	_nc_state "$1" | jq -e --arg p "$2" --arg k "$3" '
	  .spec.policy == $p and .status.phase == "Loaded"
	  and .status.observedGeneration == .metadata.generation
	  and .status.module.parameters.ipv4_kinds == $k' >/dev/null
}
_nc_conflict_is() {
	cp_kubectl get toapolicy "$NODES_POLICY" -o json | jq -e --arg s "$1" '
	  [.status.conditions[] | select(.type == "Conflict")][0].status == $s' >/dev/null
}

# The agent pod restarts (SIGTERM, new process): the loaded module is adopted, no compiler run,
# no reload.
_nc_agent_restart_adopts() {
	local n loads
	for n in "${NODES_NAMES[@]}"; do
		loads=$(_nc_loads_logged "$n")
		_nc_guest "$n" <<<': >/run/make-calls'
		node_pod_stop "$n"
		_nc_guest "$n" <<<'test -d /sys/module/toa' || { echo "$n: SIGTERM unloaded the module"; return 1; }
		node_pod_start "$n"
		wait_until "$NODES_WAIT" "$n Loaded with source Adopted" _nc_adopted "$n"
		[ "$(_nc_loads_logged "$n")" = "$loads" ] || { echo "$n: reloaded"; return 1; }
		_nc_guest "$n" <<<'if [ -s /run/make-calls ]; then echo "make ran:"; cat /run/make-calls; exit 1; fi'
		echo "$n: Adopted, no build, no reload"
	done
}
_nc_adopted() {
	_nc_state "$1" | jq -e '.status.phase == "Loaded" and .status.module.source == "Adopted"' >/dev/null
}

# Prometheus scrapes every agent (hostfwd) and the operator replicas, with the labels the
# chart's ServiceMonitor relabelling adds; the chart's alert rules are loaded.
_nc_prometheus_scrapes() {
	local n targets=$NODES_DIR/prom-targets want_op=0 a
	: >"$targets"
	for n in "${NODES_NAMES[@]}"; do
		echo "toa-node-agent 127.0.0.1:$(node_metrics_port "$n") $n" >>"$targets"
	done
	# The operator replicas' metrics (host processes, tests/cluster/lib/operator.sh op_port).
	for a in "$CP_RUN_DIR"/operator/replica-*.port; do
		[ -e "$a" ] || continue
		echo "toa-operator 127.0.0.1:$(cat "$a") -" >>"$targets"
		want_op=$((want_op + 1))
	done
	prom_start "$targets"
	echo "prometheus at $(_prom_url), targets: $(awk '{ print $1 "=" $2 }' "$targets" | tr '\n' ' ')"
	wait_until 60 "every agent target up" _nc_prom_count 'up{job="toa-node-agent"} == 1' "${#NODES_NAMES[@]}"
	for n in "${NODES_NAMES[@]}"; do
		wait_until 30 "toa_module_loaded 1 on $n" _nc_prom_count "toa_module_loaded{job=\"toa-node-agent\",node=\"$n\"} == 1" 1
		_nc_prom_count "toa_node_info{node=\"$n\",kernel_release=\"$(node_kver "$n")\"}" 1 ||
			{ echo "$n: toa_node_info: $(prom_query "toa_node_info{node=\"$n\"}")"; return 1; }
	done
	if [ "$want_op" -eq 0 ]; then
		echo "no operator replica port under $CP_RUN_DIR/operator/replica-*.port"
		return 1
	fi
	wait_until 60 "every operator replica scraped" _nc_prom_count 'up{job="toa-operator"} == 1' "$want_op"
	[ "$(prom_query 'ALERTS{alertstate="firing"}' | jq length)" = 0 ] ||
		{ echo "alerts firing with every node Loaded: $(prom_query 'ALERTS{alertstate="firing"}')"; return 1; }
}
_nc_prom_count() { # EXPR N: the instant query returns exactly N series
	[ "$(prom_query "$1" | jq length)" = "$2" ]
}
_nc_alert_is() { [ "$(prom_alert_state "$1" "$2")" = "$3" ]; }

# A module removed by hand fires ToaModuleNotLoaded (the agent reports toa_module_loaded 0 until
# its next pass repairs it); the repair resolves it. The first rmmod is repaired at a pass that
# can come any time within 30 s; the second one, right after that repair, leaves a whole pass
# interval for the alert (4 s `for:`) to fire.
_nc_alert_module_not_loaded() {
	local n=${NODES_NAMES[0]} loads t0
	loads=$(_nc_loads_logged "$n")
	_nc_guest "$n" <<<'rmmod toa'
	wait_until 45 "the agent on $n repairs the first rmmod" _nc_loads_above "$n" "$loads"
	# Prometheus must have seen the repair before the second rmmod; otherwise the alert state
	# of the first removal (still firing, then resolving) is mistaken for the second's.
	wait_until 30 "Prometheus scraped the repaired module on $n" \
		_nc_prom_count "toa_module_loaded{node=\"$n\"} == 1" 1
	wait_until 30 "ToaModuleNotLoaded inactive after the first repair" \
		_nc_alert_is ToaModuleNotLoaded "$n" inactive
	t0=$(date +%s)
	_nc_guest "$n" <<<'rmmod toa'
	wait_until 25 "ToaModuleNotLoaded firing for $n" _nc_alert_is ToaModuleNotLoaded "$n" firing
	echo "ToaModuleNotLoaded firing $(($(date +%s) - t0))s after the rmmod"
	wait_until 60 "the agent repairs and the alert resolves" _nc_alert_is ToaModuleNotLoaded "$n" inactive
	echo "resolved $(($(date +%s) - t0))s after the rmmod"
	wait_until 30 "the module is back on $n" _nc_module_present "$n"
	wait_until 30 "$n Loaded from the cache" _nc_phase_is "$n" Loaded Cache
}
_nc_module_present() { _nc_guest "$1" <<<'test -d /sys/module/toa'; }
_nc_loads_above() { [ "$(_nc_loads_logged "$1")" -gt "$2" ]; }

# The agent stopped: ToaAgentDown fires; the module removed meanwhile by hand is repaired when
# the agent starts again, and the alert resolves.
_nc_alert_agent_down() {
	local n=${NODES_NAMES[0]} t0
	node_pod_stop "$n"
	t0=$(date +%s)
	wait_until 30 "ToaAgentDown firing for $n" _nc_alert_is ToaAgentDown "$n" firing
	echo "ToaAgentDown firing $(($(date +%s) - t0))s after the agent stopped"
	_nc_guest "$n" <<<'rmmod toa; test ! -d /sys/module/toa'
	node_pod_start "$n"
	wait_until "$NODES_WAIT" "$n repaired (Loaded from the cache)" _nc_phase_is "$n" Loaded Cache
	wait_until 30 "ToaAgentDown resolved" _nc_alert_is ToaAgentDown "$n" inactive
	wait_until 30 "toa_module_loaded 1 again" _nc_prom_count "toa_module_loaded{node=\"$n\"} == 1" 1
	# The restarted agent reports toa_module_loaded 0 until its first pass has loaded from the
	# cache; on a busy machine that pass can outlast the suite's 4 s `for:`, so the alert may
	# fire for a moment. What must hold is that the repair resolves it.
	wait_until 30 "ToaModuleNotLoaded inactive after the repair" _nc_alert_is ToaModuleNotLoaded "$n" inactive
}

# rollout.maxUnavailable bounds how many nodes reload at once. Every guest gets a "foreign"
# toa (the agent's own cached build with its srcversion altered: a module no build of this
# agent produced) while its agent is stopped; the policy allows replacing foreign modules with
# maxUnavailable 1. When the agents start, every node asks for a reload (reloadPending) and the
# operator grants them one at a time: replayed from the audit log (every write to toanodestates
# is logged with its request body), at no moment do two nodes hold a grant with a reload
# pending, and at some moment a node waited while another held the grant.
_nc_max_unavailable() {
	local n t_start out
	cp_kubectl patch toapolicy "$NODES_POLICY" --type=merge \
		-p '{"spec":{"rollout":{"maxUnavailable":1},"lifecycle":{"replaceForeignModule":true}}}'
	wait_until 60 "policy Ready for the new generation" _nc_policy_ready "${#NODES_NAMES[@]}"
	for n in "${NODES_NAMES[@]}"; do
		node_pod_stop "$n"
		_nc_guest "$n" <<'EOS'
set -euo pipefail
ko=$(ls /var/lib/toa-operator/cache/modules/*/toa.ko | head -n1)
cp "$ko" /run/toa-foreign.ko
# Same length, another first character: the kernel reports a srcversion no cache entry has.
perl -pi -e 's/(srcversion=)([0-9A-F])/$1 . ($2 eq "F" ? "E" : "F")/e' /run/toa-foreign.ko
rmmod toa
insmod /run/toa-foreign.ko
echo "foreign srcversion $(cat /sys/module/toa/srcversion), ours $(modinfo -F srcversion "$ko")"
test "$(cat /sys/module/toa/srcversion)" != "$(modinfo -F srcversion "$ko")"
EOS
	done
	t_start=$(date -u +%Y-%m-%dT%H:%M:%S.%6NZ)
	# The operator replicas pause (SIGSTOP, well below the lease duration) while the agents
	# start, so that every node asks for its reload before the operator sees any request: the
	# operator must then grant one and hold the others back, whatever the agents' timing.
	local pids
	pids=$(cat "$CP_RUN_DIR"/pids/operator-*.pid)
	# shellcheck disable=SC2064,SC2086 # pids expanded now; a word list
	trap "kill -CONT $pids 2>/dev/null || true" EXIT
	# shellcheck disable=SC2086
	kill -STOP $pids
	for n in "${NODES_NAMES[@]}"; do node_pod_start "$n" >/dev/null; done
	for n in "${NODES_NAMES[@]}"; do
		wait_until 12 "$n asks for a reload (ForeignModule, reloadPending)" _nc_reload_pending "$n"
	done
	# shellcheck disable=SC2086
	kill -CONT $pids
	trap - EXIT
	for n in "${NODES_NAMES[@]}"; do
		wait_until "$NODES_WAIT" "$n replaced the foreign module (Loaded from the cache)" _nc_replaced "$n"
		_nc_guest "$n" <<<'test "$(cat /sys/module/toa/srcversion)" = "$(modinfo -F srcversion "$(ls /var/lib/toa-operator/cache/modules/*/toa.ko | head -n1)")"'
	done
	out=$(python3 - "$CP_AUDIT_LOG" "$t_start" "${NODES_NAMES[@]}" <<'PY'
import json, sys
log, start, nodes = sys.argv[1], sys.argv[2], sys.argv[3:]
granted = {n: False for n in nodes}
pending = {n: False for n in nodes}
most = grants = 0
waited = False
for line in open(log):
    e = json.loads(line)
    ref = e.get("objectRef") or {}
    if e.get("stage") != "ResponseComplete" or ref.get("resource") != "toanodestates":
        continue
    name = ref.get("name")
    if name not in granted or e.get("stageTimestamp", "") < start:
        continue
    if (e.get("responseStatus") or {}).get("code", 0) >= 300 or e.get("verb") not in ("create", "update", "patch"):
        continue
    body = e.get("requestObject") or {}
    if ref.get("subresource") == "status":
        if "status" in body:
            pending[name] = bool(body["status"].get("reloadPending", False))
    elif "spec" in body:
        new = bool(body["spec"].get("reloadAllowed", False))
        if new and not granted[name]:
            grants += 1
        granted[name] = new
    busy = [n for n in nodes if granted[n] and pending[n]]
    most = max(most, len(busy))
    if busy and any(pending[n] and not granted[n] for n in nodes):
        waited = True
print(f"grants={grants} most_at_once={most} a_node_waited={waited}")
sys.exit(0 if most == 1 and grants >= len(nodes) and waited else 1)
PY
	) || { echo "audit replay: $out"; return 1; }
	echo "audit replay: $out (maxUnavailable 1, ${#NODES_NAMES[@]} nodes)"
}
_nc_reload_pending() {
	_nc_state "$1" | jq -e '.status.reloadPending == true and .spec.reloadAllowed == false' >/dev/null
}
_nc_replaced() {
	_nc_state "$1" | jq -e '.status.phase == "Loaded" and .status.module.source == "Cache" and (.status.reloadPending // false) == false' >/dev/null
}

# A cordoned, then drained node keeps its module. The harness plays the scheduler's part
# (no kube-scheduler here): it binds the agent DaemonSet's pod for the node (created by the
# real DaemonSet controller) and a workload pod to the node; then real `kubectl cordon` and
# `kubectl drain --ignore-daemonsets` (evictions through the Eviction API). The workload pod
# goes, the DaemonSet pod stays, and nothing of ours moves: the module stays loaded (no
# unload, no reload in the guest's kernel log), the ToaNodeState keeps its generation and
# phase Loaded, the node keeps toa.dev/agent and its policy.
_nc_cordon_drain() {
	local n=${NODES_NAMES[0]} loads gen ds_pod out
	loads=$(_nc_loads_logged "$n")
	gen=$(_nc_state "$n" | jq -r .metadata.generation)
	# The DaemonSet controller's pod for this node (node affinity on metadata.name).
	wait_until 60 "the DaemonSet controller created a pod for $n" _nc_ds_pod_for "$n"
	ds_pod=$(_nc_ds_pod_for "$n")
	# On any exit: uncordoned, and the pods bound here go at once (there is no kubelet to
	# confirm their termination: a bound pod deleted later, e.g. by the garbage collector with
	# the DaemonSet at uninstall, would stay Terminating). The DaemonSet controller makes a
	# new, unbound pod for the node.
	# shellcheck disable=SC2064 # expanded now
	trap "cp_kubectl uncordon $n >/dev/null 2>&1; cp_kubectl -n default delete pod workload-on-$n --ignore-not-found --grace-period=0 --force >/dev/null 2>&1; cp_kubectl -n $CP_NAMESPACE delete pod $ds_pod --ignore-not-found --grace-period=0 --force >/dev/null 2>&1" EXIT
	if [ -z "$(cp_kubectl -n "$CP_NAMESPACE" get pod "$ds_pod" -o jsonpath='{.spec.nodeName}')" ]; then
		bind_pod "$CP_NAMESPACE" "$ds_pod" "$n"
	fi
	cp_kubectl -n default apply -f - <<EOX
apiVersion: v1
kind: Pod
metadata:
  name: workload-on-$n
  labels: {app: workload}
spec:
  nodeName: $n
  containers:
    - name: app
      image: registry.k8s.io/pause:3.10
EOX
	cp_kubectl get pods -A --field-selector "spec.nodeName=$n" -o wide | sed 's/^/  | /'
	cp_kubectl cordon "$n"
	[ "$(cp_kubectl get node "$n" -o jsonpath='{.spec.unschedulable}')" = true ]
	out=$(cp_kubectl drain "$n" --ignore-daemonsets --force --grace-period=0 --timeout=90s 2>&1) ||
		{ echo "$out"; return 1; }
	echo "$out" | sed 's/^/  drain| /'
	grep -q "evicting pod default/workload-on-$n" <<<"$out" || { echo "drain evicted no workload"; return 1; }
	wait_until 60 "the workload pod is gone" _nc_pod_gone default "workload-on-$n"
	cp_kubectl -n "$CP_NAMESPACE" get pod "$ds_pod" -o jsonpath='{.spec.nodeName}' | grep -qx "$n" ||
		{ echo "the DaemonSet pod $ds_pod left $n"; return 1; }
	# Give the operator and the agent time to act if they (wrongly) were to.
	sleep 15
	_nc_phase_is "$n" Loaded || { echo "$n: $(_nc_state "$n" | jq -c .status)"; return 1; }
	[ "$(_nc_state "$n" | jq -r .metadata.generation)" = "$gen" ] ||
		{ echo "$n: the ToaNodeState spec changed: $(_nc_state "$n" | jq -c .spec)"; return 1; }
	_nc_state "$n" | jq -e '.spec.desiredState == "Loaded"' >/dev/null
	cp_kubectl get node "$n" -o json | jq -e '.metadata.labels["toa.dev/agent"] == "true"' >/dev/null ||
		{ echo "$n lost toa.dev/agent"; return 1; }
	_nc_guest "$n" <<<'test -d /sys/module/toa' || { echo "$n: module unloaded"; return 1; }
	[ "$(_nc_loads_logged "$n")" = "$loads" ] || { echo "$n: the module was reloaded"; return 1; }
	wait_until 30 "policy Ready, every node counted" _nc_policy_ready "${#NODES_NAMES[@]}"
	echo "$n cordoned and drained: module loaded, phase Loaded, generation $gen, $loads load(s) logged"
	cp_kubectl uncordon "$n"
}
_nc_ds_pod_for() { # NODE: name of the agent DaemonSet's pod for NODE
	cp_kubectl -n "$CP_NAMESPACE" get pods -o json | jq -er --arg n "$1" '
	  [.items[] | select(.metadata.ownerReferences[]?.kind == "DaemonSet")
	   | select(.spec.nodeName == $n or
	       ([.spec.affinity.nodeAffinity.requiredDuringSchedulingIgnoredDuringExecution.nodeSelectorTerms[]?.matchFields[]?.values[]?] | index($n) != null))
	   | .metadata.name][0] // empty | select(. != "")'
}
_nc_pod_gone() { ! cp_kubectl -n "$1" get pod "$2" >/dev/null 2>&1; }

# A guest powered off (QEMU killed) without deleting its Node: its node Lease is no longer
# renewed, and after the operator's grace period (CP_NODE_LEASE_GRACE) the policy reports it
# stale (status.staleNodes, condition NodesStale naming it; `kubectl get toapolicies -o wide`
# column STALE). Nothing is deleted meanwhile. Booted again (same Node, its agent started), it
# renews its Lease, the stale report clears and the node is Loaded again.
_nc_stale_node() {
	local n=${NODES_NAMES[${#NODES_NAMES[@]} - 1]} series t0 js row
	series=${NODES_KERNELS%% *}
	[ "$n" = guest-late ] || series=$(_nc_series_of "$n")
	node_kill "$n"
	t0=$(date +%s)
	wait_until $((CP_NODE_LEASE_GRACE + 30)) "policy reports $n stale" _nc_stale_is 1 "$n" || {
		echo "lease: $(cp_kubectl -n kube-node-lease get lease "$n" -o jsonpath='{.spec.renewTime}' 2>&1), now $(date -u +%T)"
		tail -n 3 "$NODES_DIR/$n/lease.log"
		cp_kubectl get toapolicy "$NODES_POLICY" -o json | jq -c '.status | {staleNodes, c: [.conditions[] | select(.type == "NodesStale")]}'
		grep -h -i 'stale\|lease watch' "$CP_RUN_DIR"/logs/operator-*.log 2>/dev/null | tail -n 5
		return 1
	}
	echo "$n stale in the policy status $(($(date +%s) - t0))s after the power-off (grace ${CP_NODE_LEASE_GRACE}s)"
	js=$(cp_kubectl get toapolicy "$NODES_POLICY" -o json)
	jq -c '.status.conditions[] | select(.type == "NodesStale")' <<<"$js"
	jq -e '.status.observedGeneration == .metadata.generation
	  and ([.status.conditions[] | select(.type == "NodesStale")][0].observedGeneration == .metadata.generation)' >/dev/null <<<"$js" ||
		{ echo "NodesStale without the current observedGeneration"; return 1; }
	row=$(cp_kubectl get toapolicy "$NODES_POLICY" -o wide)
	echo "$row" | sed 's/^/  | /'
	awk 'NR == 1 { for (i = 1; i <= NF; i++) if ($i == "STALE") c = i } NR == 2 { exit !(c && $c == 1) }' <<<"$row" ||
		{ echo "no STALE column showing 1"; return 1; }
	cp_kubectl get node "$n" >/dev/null && cp_kubectl get toanodestate "$n" >/dev/null ||
		{ echo "the Node or the ToaNodeState of the stale node went away"; return 1; }
	t0=$(date +%s)
	node_boot "$n" "$series" "$NODES_LABEL"
	node_pod_start "$n"
	wait_until 60 "stale cleared" _nc_stale_is 0 ""
	echo "stale cleared $(($(date +%s) - t0))s after the power-on (boot $(cat "$NODES_DIR/$n/boot.seconds")s)"
	wait_until "$NODES_WAIT" "$n Loaded again" _nc_phase_is "$n" Loaded
	wait_until 60 "policy Ready" _nc_policy_ready "${#NODES_NAMES[@]}"
}
_nc_stale_is() { # COUNT NAME: staleNodes == COUNT, NodesStale names NAME (when COUNT > 0)
	cp_kubectl get toapolicy "$NODES_POLICY" -o json | jq -e --argjson c "$1" --arg n "$2" '
	  .status.staleNodes == $c
	  and ([.status.conditions[] | select(.type == "NodesStale")][0] as $s
	       | if $c > 0 then $s.status == "True" and $s.reason == "NodeLeasesExpired" and ($s.message | contains(": " + $n))
	         else $s.status == "False" end)' >/dev/null
}
_nc_series_of() { # NAME: the kernel series a guest was booted with (guest-6-12 -> 6.12)
	local s
	for s in $NODES_KERNELS; do [ "$(_nc_name "$s")" = "$1" ] && echo "$s"; done
}

# A node that joins later (a new guest, the first kernel again) is picked up.
_nc_late_node() {
	local s name t0
	s=${NODES_KERNELS%% *}
	name=guest-late
	node_boot "$name" "$s" "$NODES_LABEL"
	node_prewarm "$name"
	NODES_NAMES+=("$name")
	t0=$(date +%s)
	node_pod_start "$name"
	wait_until "$NODES_WAIT" "ToaNodeState $name Loaded" _nc_phase_is "$name" Loaded
	wait_until 60 "policy counts the new node" _nc_policy_ready "${#NODES_NAMES[@]}"
	echo "$name ($(node_kver "$name")) Loaded $(($(date +%s) - t0))s after its agent started"
	_nc_state "$name" | jq -e '.status.module.parameters.ipv4_kinds == "200,254"' >/dev/null ||
		{ echo "$name: not the policy's current parameters: $(_nc_state "$name" | jq -c .status.module)"; return 1; }
}

# Deleting the policy: every guest's module unloaded, the ToaNodeStates gone, the finalizer
# released (the delete returns).
_nc_policy_delete() {
	local n
	cp_kubectl delete toapolicy "$NODES_POLICY" --timeout="${NODES_WAIT}s"
	for n in "${NODES_NAMES[@]}"; do
		wait_until 60 "ToaNodeState $n deleted" _nc_gone "$n"
		_nc_guest "$n" <<<'if test -d /sys/module/toa; then echo "toa still loaded"; exit 1; fi'
		echo "$n: module unloaded, ToaNodeState gone, label removed"
		cp_kubectl get node "$n" -o json | jq -e '.metadata.labels["toa.dev/agent"] == null' >/dev/null ||
			{ echo "$n keeps the toa.dev/agent label"; return 1; }
	done
}

# The agents' own logs (JSON lines) hold no ERROR; their warnings are shown.
_nc_agent_logs() {
	local n out l bad=0
	for n in "${NODES_NAMES[@]}"; do
		out=$(_nc_guest "$n" <<<'grep -E "\"level\":\"(WARN|ERROR)\"" /run/toa/agent.log | cut -c1-300 || true')
		[ -z "$out" ] || while IFS= read -r l; do echo "$n: $l"; done <<<"$out"
		grep -q '"level":"ERROR"' <<<"$out" && bad=1
	done
	[ "$bad" = 0 ]
}

# nodes_checks: the hook tests/cluster/run.sh calls.
nodes_checks() {
	local s prev
	# Stop the guests on every exit path, before the control plane's own EXIT trap.
	prev=$(trap -p EXIT | sed -E "s/^trap -- '(.*)' EXIT$/\1/")
	# shellcheck disable=SC2064 # the previous trap's text is expanded now, on purpose
	trap "nodes_stop_all; $prev" EXIT
	local t0=$SECONDS
	[ -n "$NODES_DIR" ] || NODES_DIR=$(mktemp -d "${CP_RUN_DIR:-/tmp}/nodes.XXXXXX")
	export NODES_DIR
	# A subshell: a failure here (toa_die) must end this step, not the suite.
	# shellcheck disable=SC2086 # word list of series
	(nodes_prepare $NODES_KERNELS) || {
		fail_check nodes-prepare "kernels, guest layers or the agent build failed (see above)"
		return 0
	}
	echo "# nodes: prepared kernels $NODES_KERNELS in $((SECONDS - t0))s"
	for s in $NODES_KERNELS; do NODES_NAMES+=("$(_nc_name "$s")"); done
	check nodes-guests-boot-as-nodes _nc_boot_guests
	check nodes-module-prebuilt-one-guest-at-a-time _nc_prewarm
	check nodes-agent-pods-start-from-the-daemonset _nc_pods_start
	check nodes-policy-loads-every-guest _nc_policy_loaded
	check nodes-agent-token-cannot-write-another-nodes-state _nc_token_confined
	check nodes-traffic-shows-real-address _nc_traffic
	check nodes-prometheus-scrapes-agents-and-operator _nc_prometheus_scrapes
	check nodes-alert-module-removed-by-hand-fires-and-resolves _nc_alert_module_not_loaded
	check nodes-alert-agent-down-then-repair _nc_alert_agent_down
	check nodes-kinds-and-trusted-sources-change-without-reload _nc_params_no_reload
	check nodes-node-moving-between-policies-gets-new-kinds _nc_move_between_policies
	check nodes-agent-restart-adopts-without-build _nc_agent_restart_adopts
	check nodes-max-unavailable-bounds-concurrent-reloads _nc_max_unavailable
	check nodes-late-node-is-picked-up _nc_late_node
	# The late node joined inside a check's subshell: record it here too.
	[ -d "$NODES_DIR/guest-late" ] && NODES_NAMES+=(guest-late)
	check nodes-cordoned-and-drained-node-keeps-its-module _nc_cordon_drain
	check nodes-powered-off-guest-shows-stale-then-recovers _nc_stale_node
	check nodes-agent-logs-have-no-errors _nc_agent_logs
	check nodes-policy-delete-unloads-guests _nc_policy_delete
	prom_stop
	nodes_stop_all
}
