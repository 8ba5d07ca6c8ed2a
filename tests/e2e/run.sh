#!/usr/bin/env bash
# End-to-end suite against a real Kubernetes cluster (kind or k3d). See tests/e2e/README.md.
#
# Without a reachable cluster it prints exactly one SKIPPED line and exits 0. With one, it
# installs the chart (CRDs included), applies a ToaPolicy, and checks what the operator did:
# the agent DaemonSet, one ToaNodeState per Linux node (owned by its Node), node labels, the
# policy status and conditions, operator metrics, and the finalizer on deletion.
# Ends with `N passed, M failed`; exits non-zero on any failure.
# No `set -e`: every check below records its own result (ok/FAIL) and the suite goes on.
set -uo pipefail
shopt -s inherit_errexit
cd "$(dirname "$0")/../.." || exit 1

SKIP_LINE='SKIPPED: no cluster (set KUBECONFIG to a kind or k3d cluster to run the end-to-end suite)'
NS=${TOA_E2E_NAMESPACE:-toa-e2e}
RELEASE=${TOA_E2E_RELEASE:-toa-operator}
POLICY=toa-e2e
TIMEOUT=${TOA_E2E_TIMEOUT:-300}

# shellcheck source=tests/lib/deps.sh
source tests/lib/deps.sh
# What this suite installs before first use (only when there is a cluster to test).
e2e_needs() { need_k8s_tools; }
[ "${TOA_DEPS_ONLY:-0}" != 1 ] || toa_deps_step e2e_needs

# --- is there a cluster? -----------------------------------------------------------------
# No kubeconfig file at all (KUBECONFIG may list several, colon-separated): nothing to reach,
# and no reason to install kubectl.
have_kubeconfig=
IFS=: read -r -a kubeconfigs <<<"${KUBECONFIG:-$HOME/.kube/config}"
for f in "${kubeconfigs[@]}"; do
	[ -n "$f" ] && [ -f "$f" ] && have_kubeconfig=1
done
if [ -z "$have_kubeconfig" ]; then
	echo "$SKIP_LINE"
	exit 0
fi
e2e_needs
if ! command -v kubectl >/dev/null 2>&1 ||
	! timeout 15 kubectl cluster-info --request-timeout=10s >/dev/null 2>&1; then
	echo "$SKIP_LINE"
	exit 0
fi

# --- helpers ---------------------------------------------------------------------------------
passed=0
failed=0
ok() {
	passed=$((passed + 1))
	echo "ok - $*"
}
fail() {
	failed=$((failed + 1))
	echo "FAIL - $*"
}
# check DESCRIPTION COMMAND...: one test.
check() {
	local what=$1
	shift
	if "$@"; then ok "$what"; else fail "$what"; fi
}
# eventually SECONDS COMMAND...: retries COMMAND every 2 s until it succeeds or time runs out.
eventually() {
	local deadline=$(($(date +%s) + $1))
	shift
	until "$@" >/dev/null 2>&1; do
		[ "$(date +%s)" -ge "$deadline" ] && return 1
		sleep 2
	done
}
k() { kubectl "$@"; }
jp() { kubectl get "$@" 2>/dev/null; }

split_image() { # IMAGE -> "REPOSITORY TAG" (tag after the last colon that follows the last slash)
	local img=$1 repo tag
	if [[ ${img##*/} == *:* ]]; then
		repo=${img%:*}
		tag=${img##*:}
	else
		repo=$img
		tag=""
	fi
	echo "$repo $tag"
}

port_forward_pid=
cleanup() {
	[ -n "$port_forward_pid" ] && kill "$port_forward_pid" 2>/dev/null
	if [ "${TOA_E2E_KEEP:-0}" != 1 ]; then
		kubectl delete toapolicy "$POLICY" --ignore-not-found --wait=false >/dev/null 2>&1
		helm uninstall "$RELEASE" -n "$NS" --wait >/dev/null 2>&1
		kubectl delete namespace "$NS" --ignore-not-found --wait=false >/dev/null 2>&1
	fi
}
trap cleanup EXIT

echo "cluster: $(kubectl config current-context 2>/dev/null || echo in-cluster)"

# --- install ---------------------------------------------------------------------------------
# `--wait` works: a standby replica is Ready too (/readyz), only a syncing leader is not.
helm_args=(upgrade --install "$RELEASE" charts/toa-operator -n "$NS" --create-namespace --wait
	--timeout "${TIMEOUT}s" --set operator.replicas=2 --set operator.logFormat=text)
if [ -n "${TOA_OPERATOR_IMAGE:-}" ]; then
	read -r repo tag <<<"$(split_image "$TOA_OPERATOR_IMAGE")"
	helm_args+=(--set "operator.image.repository=$repo" --set "operator.image.tag=$tag")
fi
if [ -n "${TOA_AGENT_IMAGE:-}" ]; then
	read -r repo tag <<<"$(split_image "$TOA_AGENT_IMAGE")"
	helm_args+=(--set "agent.image.repository=$repo" --set "agent.image.tag=$tag")
fi
check "helm install of charts/toa-operator (CRDs included)" helm "${helm_args[@]}"
check "CRDs established" kubectl wait --for=condition=Established --timeout=60s \
	crd/toapolicies.toa.dev crd/toanodestates.toa.dev

deploy=$(kubectl -n "$NS" get deploy -o name 2>/dev/null | head -n 1)
rolled_out() {
	local want updated
	want=$(jp -n "$NS" "$deploy" -o jsonpath='{.spec.replicas}')
	updated=$(jp -n "$NS" "$deploy" -o jsonpath='{.status.updatedReplicas}')
	[ -n "$want" ] && [ "$want" = "$updated" ]
}
check "operator Deployment rolled out (all replicas updated)" eventually "$TIMEOUT" rolled_out
# Both replicas Ready (leader and standby), and the Lease held by one of them.
ready_replicas() { [ "$(jp -n "$NS" "$deploy" -o jsonpath='{.status.readyReplicas}')" = "2" ]; }
check "both operator replicas Ready (leader and standby)" eventually "$TIMEOUT" ready_replicas
lease_held() {
	local holder
	holder=$(jp -n "$NS" lease toa-operator-leader -o jsonpath='{.spec.holderIdentity}')
	[ -n "$holder" ] && kubectl -n "$NS" get pods -o name | grep -q "/${holder%%_*}"
}
check "leader Lease toa-operator-leader is held by an operator pod" eventually 60 lease_held
ds_exists() { jp -n "$NS" daemonset toa-node-agent -o name; }
check "operator created the agent DaemonSet" eventually 60 ds_exists
ds_selector=$(jp -n "$NS" daemonset toa-node-agent -o jsonpath='{.spec.template.spec.nodeSelector}')
check "agent DaemonSet selects toa.dev/agent=true nodes" grep -q '"toa.dev/agent":"true"' <<<"$ds_selector"

# --- a policy over every Linux node ------------------------------------------------------------
kubectl apply -f - >/dev/null <<EOF
apiVersion: toa.dev/v1alpha1
kind: ToaPolicy
metadata:
  name: $POLICY
spec:
  nodeSelector: {}
  module:
    ipv4OptionKinds: [200]
    nat64OptionKinds: [253]
  lifecycle:
    onDelete: Unload
    unloadTimeoutSeconds: 60
EOF
# Linux nodes: kubernetes.io/os=linux, or no OS label at all (the operator counts those too).
linux_nodes=$(kubectl get nodes -o jsonpath='{range .items[*]}{.metadata.name}{" "}{.metadata.labels.kubernetes\.io/os}{"\n"}{end}' |
	awk '$2 == "" || $2 == "linux" { print $1 }' | sort)
n_linux=$(grep -c . <<<"$linux_nodes")
echo "linux nodes: $n_linux"

has_finalizer() { jp toapolicy "$POLICY" -o jsonpath='{.metadata.finalizers}' | grep -q 'toa.dev/unload'; }
check "finalizer toa.dev/unload added to the policy" eventually 60 has_finalizer
status_observed() {
	local gen obs
	gen=$(jp toapolicy "$POLICY" -o jsonpath='{.metadata.generation}')
	obs=$(jp toapolicy "$POLICY" -o jsonpath='{.status.observedGeneration}')
	[ -n "$gen" ] && [ "$gen" = "$obs" ]
}
check "status.observedGeneration reaches metadata.generation" eventually 120 status_observed
selected_ok() { [ "$(jp toapolicy "$POLICY" -o jsonpath='{.status.selectedNodes}')" = "$n_linux" ]; }
check "status.selectedNodes = $n_linux Linux node(s)" eventually 120 selected_ok
conds=$(jp toapolicy "$POLICY" -o jsonpath='{range .status.conditions[*]}{.type}{"\n"}{end}')
for c in Ready Progressing Degraded; do
	check "condition $c is reported" grep -qx "$c" <<<"$conds"
done

for n in $linux_nodes; do
	state_ok() {
		[ "$(jp toanodestate "$n" -o jsonpath='{.spec.policy}/{.spec.desiredState}/{.spec.nodeName}')" = "$POLICY/Loaded/$n" ]
	}
	check "ToaNodeState $n: policy $POLICY, desired Loaded" eventually 60 state_ok
	owner=$(jp toanodestate "$n" -o jsonpath='{.metadata.ownerReferences[0].kind}/{.metadata.ownerReferences[0].name}')
	check "ToaNodeState $n is owned by Node $n" test "$owner" = "Node/$n"
	managers=$(jp toanodestate "$n" -o jsonpath='{range .metadata.managedFields[*]}{.manager}{" "}{.operation}{"\n"}{end}')
	check "ToaNodeState $n spec written by server-side apply as toa-operator" grep -q '^toa-operator Apply' <<<"$managers"
	labelled() { [ "$(jp node "$n" -o jsonpath='{.metadata.labels.toa\.dev/agent}')" = "true" ]; }
	check "Node $n labelled toa.dev/agent=true" eventually 60 labelled
done
n_states=$(jp toanodestates -o name | wc -l)
check "exactly one ToaNodeState per Linux node ($n_states)" test "$n_states" -eq "$n_linux"

counts_consistent() {
	local sel loaded failed
	sel=$(jp toapolicy "$POLICY" -o jsonpath='{.status.selectedNodes}')
	loaded=$(jp toapolicy "$POLICY" -o jsonpath='{.status.loadedNodes}')
	failed=$(jp toapolicy "$POLICY" -o jsonpath='{.status.failedNodes}')
	[ $((${loaded:-0} + ${failed:-0})) -le "${sel:-0}" ]
}
check "status counts consistent (loaded + failed <= selected)" counts_consistent

if [ "${TOA_E2E_EXPECT_LOADED:-0}" = 1 ]; then
	all_loaded() { [ "$(jp toapolicy "$POLICY" -o jsonpath='{.status.loadedNodes}')" = "$n_linux" ]; }
	check "every node reports the module Loaded" eventually "$TIMEOUT" all_loaded
	ready_true() {
		[ "$(jp toapolicy "$POLICY" -o jsonpath='{.status.conditions[?(@.type=="Ready")].status}')" = "True" ]
	}
	check "policy Ready=True" eventually 60 ready_true
fi

events=$(kubectl get events -n default --field-selector "involvedObject.name=$POLICY" -o name 2>/dev/null | wc -l)
check "Events published for the policy" test "$events" -ge 1

# --- operator metrics --------------------------------------------------------------------------
port=$((20000 + RANDOM % 20000))
kubectl -n "$NS" port-forward "$deploy" "$port:8080" >/dev/null 2>&1 &
port_forward_pid=$!
metrics_ok() {
	local text
	text=$(curl -fsS "http://127.0.0.1:$port/metrics") || return 1
	grep -q '^toa_operator_reconciles_total{' <<<"$text" && grep -q '^toa_operator_nodes{' <<<"$text"
}
# The port-forward may land on the standby replica (no reconciles yet there): metrics exist
# on both, reconciles only on the leader, so accept either replica's families being present.
metrics_any() { curl -fsS "http://127.0.0.1:$port/metrics" | grep -q 'toa_operator_reconcile_duration_seconds'; }
if eventually 30 metrics_ok; then ok "operator /metrics exposes reconciles and nodes"; else check "operator /metrics is served" metrics_any; fi
check "operator /healthz" eventually 10 curl -fsS "http://127.0.0.1:$port/healthz"
kill "$port_forward_pid" 2>/dev/null
port_forward_pid=

# --- drift repair ----------------------------------------------------------------------------
kubectl -n "$NS" delete daemonset toa-node-agent --wait=true >/dev/null 2>&1
check "deleted agent DaemonSet is re-created" eventually 90 ds_exists

# --- deletion: finalizer holds until unloaded or the 60 s timeout -----------------------------
kubectl delete toapolicy "$POLICY" --wait=false >/dev/null
unloading() {
	local n=${linux_nodes%%[$'\n']*}
	[ "$(jp toanodestate "$n" -o jsonpath='{.spec.desiredState}')" = "Unloaded" ] || ! jp toanodestate "$n" -o name
}
check "deleting the policy asks its nodes to unload" eventually 60 unloading
policy_gone() { ! jp toapolicy "$POLICY" -o name; }
check "finalizer released (nodes unloaded or unload timeout reported)" eventually 150 policy_gone
states_gone() { [ "$(jp toanodestates -o name | wc -l)" -eq 0 ]; }
check "ToaNodeStates removed after the policy is gone" eventually 90 states_gone
unlabelled() { ! kubectl get nodes -l toa.dev/agent=true -o name 2>/dev/null | grep -q .; }
check "toa.dev/agent labels removed" eventually 90 unlabelled

echo "${passed} passed, ${failed} failed"
[ "$failed" -eq 0 ]
