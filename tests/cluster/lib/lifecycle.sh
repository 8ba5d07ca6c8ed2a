# shellcheck shell=bash
# Leadership, faults, helm upgrade and helm uninstall scenarios (run after checks.sh's).
# Timing contract of the operator's election (operator/src/lease.rs LeaseTiming::default()).
LEASE_DURATION_S=15
RETRY_PERIOD_S=2

_now() { date +%s.%N; }
_since() { echo "$(_now) - $1" | bc; }
_le() { [ "$(echo "$1 <= $2" | bc)" = 1 ]; }

# _audit_writes_by JTI AFTER_RFC3339: write requests made with that token after the time.
_audit_writes_by() {
	jq -c --arg jti "JTI=$1" --arg after "$2" 'select(
		(.user.extra["authentication.kubernetes.io/credential-id"] // []) | index($jti)) |
		select(.verb | IN("create", "update", "patch", "delete", "deletecollection")) |
		select(.stageTimestamp > $after) |
		{verb, resource: .objectRef.resource, name: .objectRef.name, sub: .objectRef.subresource, at: .stageTimestamp}' \
		"$CP_AUDIT_LOG"
}

# _takeover_time JTI: stageTimestamp of the first lease write by that token that made it holder.
_first_lease_write_by() {
	jq -r --arg jti "JTI=$1" --arg after "$2" 'select(
		(.user.extra["authentication.kubernetes.io/credential-id"] // []) | index($jti)) |
		select(.objectRef.resource == "leases" and (.verb | IN("create", "update")) and .responseStatus.code < 300) |
		select(.stageTimestamp > $after) | .stageTimestamp' "$CP_AUDIT_LOG" | head -n 1
}

check_leader_sigkill() {
	local leader standby t0 took bound
	op_ensure_running 0 1
	leader=$(op_leader)
	standby=$((1 - leader))
	t0=$(_now)
	op_stop "$leader" KILL
	wait_value 40 "replica $standby leads" "$standby" op_leader
	took=$(_since "$t0")
	bound=$((LEASE_DURATION_S + 2 * RETRY_PERIOD_S))
	printf 'SIGKILL of replica %s: replica %s led after %.1fs (bound: lease %ss + 2 x retry %ss = %ss)\n' \
		"$leader" "$standby" "$took" "$LEASE_DURATION_S" "$RETRY_PERIOD_S" "$bound"
	op_start "$leader"
	# Polling adds up to 0.5 s to the measurement.
	_le "$took" "$bound.5"
}

check_leader_sigterm() {
	local leader standby t0 took
	op_ensure_running 0 1
	wait_until 30 "a leader" has_leader
	leader=$(op_leader)
	standby=$((1 - leader))
	t0=$(_now)
	op_stop "$leader" TERM
	grep -F "released the leader lease" "$CP_RUN_DIR/logs/operator-$leader.log" | tail -n 1
	wait_value 20 "replica $standby leads" "$standby" op_leader
	took=$(_since "$t0")
	printf 'SIGTERM of replica %s: replica %s led after %.1fs (the lease was released; next retry within %ss)\n' \
		"$leader" "$standby" "$took" "$RETRY_PERIOD_S"
	op_start "$leader"
	_le "$took" "$((RETRY_PERIOD_S + 2))"
}

check_leader_sigstop() {
	local leader standby stopped_at takeover writes
	op_ensure_running 0 1
	wait_until 30 "a leader" has_leader
	leader=$(op_leader)
	standby=$((1 - leader))
	stopped_at=$(date -u +%FT%T.%6NZ)
	op_stop "$leader" STOP
	echo "replica $leader stopped (SIGSTOP) at $stopped_at"
	wait_value 40 "replica $standby leads" "$standby" op_leader
	takeover=$(_first_lease_write_by "$(op_jti "$standby")" "$stopped_at")
	echo "replica $standby took the lease at $takeover"
	# Give the new leader work while the old one is frozen: a node joins.
	cp_create_node cl-node-d "$KERNEL_61" "$OS_IMAGE" node-role.kubernetes.io/ingress=
	sleep 3
	op_stop "$leader" CONT
	echo "replica $leader continued (SIGCONT)"
	sleep 10
	grep -E "lease taken|lost leadership|stepping down" "$CP_RUN_DIR/logs/operator-$leader.log" | tail -n 3 || true
	writes=$(_audit_writes_by "$(op_jti "$leader")" "$takeover")
	op_ensure_running 0 1
	k delete node cl-node-d --wait=false >/dev/null
	if [ -n "$writes" ]; then
		echo "the old leader wrote after the takeover at $takeover:" >&2
		echo "$writes" >&2
		return 1
	fi
	echo "audit log: no write by replica $leader (JTI $(op_jti "$leader")) after $takeover"
}

# A rollout in progress (a new policy's ToaNodeStates being written) when the apiserver
# restarts: the operator reconnects without a crash loop and the policy converges.
check_fault_apiserver_restart() {
	local r0 r1
	r0=$(op_restart_count 0)
	r1=$(op_restart_count 1)
	k apply --server-side -f - <<EOF
apiVersion: toa.dev/v1alpha1
kind: ToaPolicy
metadata:
  name: fault-rollout
spec:
  nodeSelector:
    matchLabels:
      node-role.kubernetes.io/ingress: ""
  rollout:
    maxUnavailable: 1
EOF
	cp_restart_apiserver
	op_ensure_running 0 1
	wait_value 60 "fault-rollout states" "fault-rollout fault-rollout" \
		k get toanodestate "$K_A" "$K_B" -o 'jsonpath={.items[*].spec.policy}'
	agent_report "$K_A" "$K_A" Loaded >/dev/null
	agent_report "$K_B" "$K_B" Loaded >/dev/null
	wait_value 60 "fault-rollout Ready" True policy_condition fault-rollout Ready
	echo "operator restarts during the fault: replica 0 $(($(op_restart_count 0) - r0)), replica 1 $(($(op_restart_count 1) - r1))"
	[ $(($(op_restart_count 0) - r0 + $(op_restart_count 1) - r1)) -le 2 ]
}

check_fault_etcd_stopped() {
	local r0 r1 t0
	r0=$(op_restart_count 0)
	r1=$(op_restart_count 1)
	cp_stop_etcd
	t0=$(date +%s)
	echo "etcd stopped"
	sleep 30
	cp_start_etcd
	echo "etcd back after $(($(date +%s) - t0))s"
	wait_until 60 "kube-apiserver ready" cp_kubectl get --raw /readyz
	# Processes that exited (a leader that could not renew steps down and exits) are restarted
	# as the kubelet would; a crash loop would show as more than one restart per replica.
	sleep 5
	op_ensure_running 0 1
	wait_until 60 "a leader" has_leader
	k patch toapolicy fault-rollout --type merge -p '{"spec":{"module":{"trustedSources":["10.0.0.0/8"]}}}'
	wait_value 60 "new settings on $K_A" '["10.0.0.0/8"]' jp "toanodestate/$K_A" '{.spec.module.trustedSources}'
	agent_report "$K_A" "$K_A" Loaded >/dev/null
	agent_report "$K_B" "$K_B" Loaded >/dev/null
	wait_value 60 "fault-rollout Ready" True policy_condition fault-rollout Ready
	sleep 10
	op_ensure_running 0 1
	echo "operator restarts: replica 0 $(($(op_restart_count 0) - r0)), replica 1 $(($(op_restart_count 1) - r1))"
	[ $(($(op_restart_count 0) - r0)) -le 1 ] && [ $(($(op_restart_count 1) - r1)) -le 1 ]
}

# helm upgrade with a changed agent setting: the Deployment's pod template changes (config
# checksum), so the harness rolls the replicas as the Deployment would (one at a time, the new
# one started first); the new leader re-renders the DaemonSet; ToaNodeStates keep their
# generation, so no agent reloads anything.
check_helm_upgrade() {
	local before_gen after_gen before_sum after_sum r
	before_gen=$(k get toanodestates -o jsonpath='{range .items[*]}{.metadata.name}={.metadata.generation} {end}')
	before_sum=$(k -n "$CP_NAMESPACE" get deployment "$OP_DEPLOYMENT" -o jsonpath='{.spec.template.metadata.annotations.checksum/agent-config}')
	helm upgrade "$CP_RELEASE" charts/toa-operator --namespace "$CP_NAMESPACE" --reuse-values \
		--set agent.logFormat=text --kubeconfig "$CP_KUBECONFIG"
	after_sum=$(k -n "$CP_NAMESPACE" get deployment "$OP_DEPLOYMENT" -o jsonpath='{.spec.template.metadata.annotations.checksum/agent-config}')
	[ "$before_sum" != "$after_sum" ] || {
		echo "the Deployment's pod template did not change: no rollout would happen" >&2
		return 1
	}
	op_prepare "$OPERATOR_BIN"
	grep -q 'logFormat: text' "$CP_RUN_DIR/operator/agent-config.yaml"
	for r in 0 1; do
		op_stop "$r" TERM
		op_start "$r"
	done
	wait_until 30 "a leader" has_leader
	wait_value 60 "DaemonSet re-rendered" 1 count_lines bash -c \
		"'$CP_BIN/kubectl' --kubeconfig '$CP_KUBECONFIG' -n '$CP_NAMESPACE' get daemonset '$OP_DAEMONSET' -o jsonpath='{.spec.template.spec.containers[0].args}' | grep -o 'log-format=text'"
	sleep 5
	after_gen=$(k get toanodestates -o jsonpath='{range .items[*]}{.metadata.name}={.metadata.generation} {end}')
	expect_eq "ToaNodeState generations (no reload)" "$after_gen" "$before_gen"
	expect_eq "fault-rollout still Ready" "$(policy_condition fault-rollout Ready)" True
}

# helm uninstall as docs/upgrading.md writes it (without deleting the policies first): the
# pre-delete hook Job runs `toa-operator uninstall` (its command as a host process with the
# Job's ServiceAccount token), then the release is deleted and the operator processes get
# SIGTERM as their pods would.
check_helm_uninstall() {
	local dir=$CP_RUN_DIR/uninstall cmd hook rc out leftovers
	mkdir -p "$dir"
	chmod 755 "$dir"
	# A second policy that users leave behind, and the first one still in place.
	k apply --server-side -f "$EXAMPLES/nat64.yaml"
	helm get hooks "$CP_RELEASE" --namespace "$CP_NAMESPACE" --kubeconfig "$CP_KUBECONFIG" >"$dir/hooks.yaml"
	python3 -c 'import json,sys,yaml
docs = [d for d in yaml.safe_load_all(open(sys.argv[1])) if d and d.get("kind") == "Job"]
jobs = [d for d in docs if "pre-delete" in d["metadata"].get("annotations", {}).get("helm.sh/hook", "")]
assert len(jobs) == 1, "expected one pre-delete hook Job, found %d" % len(jobs)
json.dump(jobs[0], open(sys.argv[2], "w"))' "$dir/hooks.yaml" "$dir/job.json"
	jq -e '.spec.template.spec.serviceAccountName' "$dir/job.json"
	# The command docs/upgrading.md gives, taken from the doc; the hook Job's pod runs as a host
	# process with the Job's ServiceAccount token and the Job is marked complete (lib/docs.sh).
	cmd=$(docs_command docs/upgrading.md 'helm uninstall ')
	echo "\$ $cmd   (docs/upgrading.md)"
	_docs_uninstall_hook >"$dir/hook.log" 2>&1 &
	hook=$!
	rc=0
	bash -o pipefail -c "$cmd" || rc=$?
	wait "$hook" || rc=$?
	cat "$dir/hook.log"
	[ "$rc" -eq 0 ]
	# The pods go: SIGTERM as the kubelet would send it.
	op_stop 0 TERM
	op_stop 1 TERM
	wait_gone 60 "agent DaemonSet" "daemonset/$OP_DAEMONSET" -n "$CP_NAMESPACE"
	wait_value 60 "leader Lease garbage-collected" "" k -n "$CP_NAMESPACE" get lease "$OP_LEASE" -o name --ignore-not-found
	expect_eq "nodes labelled toa.dev/agent" "$(k get nodes -l toa.dev/agent -o name)" ""
	expect_eq "finalizers left" "$(k get toapolicies -o jsonpath='{.items[*].metadata.finalizers}')" ""
	# Helm keeps the CRDs and the custom resources by design.
	k get crd toapolicies.toa.dev toanodestates.toa.dev -o name
	k get toapolicies,toanodestates
	# Nothing else of ours: every object labelled part-of toa-operator is gone.
	leftovers=$(k get all,configmaps,serviceaccounts,roles,rolebindings,leases -n "$CP_NAMESPACE" -o name |
		grep -v -e '^configmap/kube-root-ca.crt$' -e '^serviceaccount/default$' || true)
	leftovers+=$(k get clusterroles,clusterrolebindings,validatingadmissionpolicies,validatingadmissionpolicybindings \
		-l app.kubernetes.io/part-of=toa-operator -o name)
	expect_eq "leftovers" "$leftovers" ""
	# A policy can be deleted with no operator left (no finalizer to hang on).
	out=$(timeout 20 "$CP_BIN/kubectl" --kubeconfig "$CP_KUBECONFIG" delete toapolicy nat64-gateway 2>&1)
	echo "$out"
}

# helm install of the same version over what uninstall left (CRDs, a policy, its node states):
# the operator takes the policy back, labels the nodes and recreates the DaemonSet.
check_reinstall() {
	check_helm_install
	# The agent ServiceAccount is new: its pods get new tokens.
	rm -f "$CP_RUN_DIR"/agent-*.kubeconfig
	op_prepare "$OPERATOR_BIN"
	op_start 0
	op_start 1
	wait_until 60 "a leader" has_leader
	wait_value 60 "finalizer back" '["toa.dev/unload"]' jp toapolicy/fault-rollout '{.metadata.finalizers}'
	wait_value 60 "agent labels back" 2 count_lines k get nodes -l toa.dev/agent=true -o name
	wait_until 60 "DaemonSet back" k -n "$CP_NAMESPACE" get daemonset "$OP_DAEMONSET"
	agent_report "$K_A" "$K_A" Loaded >/dev/null
	agent_report "$K_B" "$K_B" Loaded >/dev/null
	wait_value 60 "fault-rollout Ready" True policy_condition fault-rollout Ready
}
