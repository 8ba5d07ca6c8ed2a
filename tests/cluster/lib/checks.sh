# shellcheck shell=bash
# API-level scenarios of the cluster suite. Each function is one named check (run through
# `check NAME FUNCTION` from harness.sh); they run in order and build on each other's state.
#
# Nodes made by hand (labels as a kubelet sets them, plus):
#   cl-node-a  kernel 6.1.0-41-amd64            node-role.kubernetes.io/ingress=""
#   cl-node-b  kernel 6.12.57+deb12-amd64       node-role.kubernetes.io/ingress=""
#   cl-node-c  kernel 6.1.0-41-amd64            (joins the policy later: gets the ingress label)
# Policies: crds/examples/tencent-hybrid-cloud.yaml (selects ingress nodes, kind 200),
# crds/examples/mixed-vendors.yaml (priority 200, selects example.com/edge=true, kinds 200/254),
# crds/examples/keep-on-delete.yaml (onDelete Keep), and an inline policy with
# unloadTimeoutSeconds: 5.

# The operator's --node-lease-grace-seconds here (the chart's default is 40).
CP_NODE_LEASE_GRACE=${CP_NODE_LEASE_GRACE:-30}

K_A=cl-node-a
K_B=cl-node-b
K_C=cl-node-c
KERNEL_61=6.1.0-41-amd64
KERNEL_612=6.12.57+deb12-amd64
OS_IMAGE="Debian GNU/Linux 12 (bookworm)"
EXAMPLES=crds/examples

k() { cp_kubectl "$@"; }

# jsonpath OBJECT PATH: one field of one object ('' when absent).
jp() { k get "$1" -o "jsonpath=$2" 2>/dev/null || true; }

# expect_eq WHAT ACTUAL EXPECTED
expect_eq() {
	if [ "$2" != "$3" ]; then
		echo "$1: expected '$3', got '$2'" >&2
		return 1
	fi
	echo "$1 = '$2'"
}

# policy_condition POLICY TYPE: status of that condition.
# policy_condition_field POLICY TYPE FIELD: one field of a policy's condition of that type.
policy_condition_field() { jp "toapolicy/$1" "{.status.conditions[?(@.type==\"$2\")].$3}"; }
policy_condition() { policy_condition_field "$1" "$2" status; }

# bind_pod NAMESPACE POD NODE: what the scheduler does (pods/binding); there is no scheduler.
bind_pod() {
	k create --raw "/api/v1/namespaces/$1/pods/$2/binding" -f - >/dev/null <<EOX
{"apiVersion": "v1", "kind": "Binding", "metadata": {"name": "$2"}, "target": {"apiVersion": "v1", "kind": "Node", "name": "$3"}}
EOX
}

# --- the simulated agent -----------------------------------------------------------------
# The real agent (tests/cluster/guest) writes its status with SSA on the status subresource as
# field manager toa-node-agent, with a token bound to its Node. Here the same request is made
# with kubectl and such a token.

agent_kubeconfig() {
	local node=$1 f=$CP_RUN_DIR/agent-$1.kubeconfig
	if [ ! -f "$f" ]; then
		cp_kubeconfig_for_token "$(cp_node_token "$node")" "$f"
	fi
	echo "$f"
}

# agent_status_body NODE PHASE: what an agent reports for its ToaNodeState's current generation.
agent_status_body() {
	local node=$1 phase=$2 gen kernel params srcversion=""
	gen=$(jp "toanodestate/$node" '{.metadata.generation}')
	kernel=$(jp "node/$node" '{.status.nodeInfo.kernelVersion}')
	params=$(k get toanodestate "$node" -o json | jq -c '.spec.module // {} | {
		ipv4_kinds: ((.ipv4OptionKinds // [200]) | map(tostring) | join(",")),
		nat64_kinds: ((.nat64OptionKinds // [253]) | map(tostring) | join(",")),
		trusted_sources: ((.trustedSources // []) | join(","))}')
	[ "$phase" = Loaded ] && srcversion=4E1B2F0C9D8A7B6C5D4E3F2
	jq -n --arg node "$node" --arg phase "$phase" --argjson gen "${gen:-1}" --arg kernel "$kernel" \
		--argjson params "$params" --arg src "$srcversion" --arg now "$(date -u +%FT%TZ)" '{
		apiVersion: "toa.dev/v1alpha1", kind: "ToaNodeState", metadata: {name: $node},
		status: ({observedGeneration: $gen, phase: $phase,
			kernel: {release: $kernel, version: "#1 SMP PREEMPT_DYNAMIC Debian",
				bootId: "00000000-0000-4000-8000-000000000000", osImage: "Debian GNU/Linux 12 (bookworm)"},
			reloadPending: false, agentVersion: "0.1.0-simulated", lastHeartbeatTime: $now}
			+ (if $phase == "Loaded" then {module: {srcversion: $src, parameters: $params, source: "Built"}} else {} end))}'
}

# agent_report AS_NODE TARGET_NODE PHASE: node AS_NODE's agent writes TARGET_NODE's status.
agent_report() {
	local as=$1 target=$2 phase=$3
	agent_status_body "$target" "$phase" |
		"${CP_KUBECTL:-$CP_BIN/kubectl}" --kubeconfig "$(agent_kubeconfig "$as")" apply --server-side \
			--field-manager toa-node-agent --subresource status -f -
}

# wait_value TIMEOUT WHAT EXPECTED CMD...: polls until CMD prints EXPECTED.
wait_value() {
	local timeout=$1 what=$2 want=$3 deadline got
	shift 3
	deadline=$(($(date +%s) + timeout))
	while :; do
		got=$("$@" 2>/dev/null || true)
		[ "$got" = "$want" ] && return 0
		if [ "$(date +%s)" -ge "$deadline" ]; then
			echo "timed out after ${timeout}s waiting for $what: want '$want', have '$got'" >&2
			return 1
		fi
		sleep 0.5
	done
}

# wait_gone TIMEOUT WHAT KIND/NAME [KUBECTL ARGS...]
wait_gone() {
	local timeout=$1 what=$2 deadline
	shift 2
	deadline=$(($(date +%s) + timeout))
	while k get "$@" >/dev/null 2>&1; do
		if [ "$(date +%s)" -ge "$deadline" ]; then
			echo "timed out after ${timeout}s waiting for: $what" >&2
			return 1
		fi
		sleep 0.5
	done
}

has_leader() { [ -n "$(op_leader)" ]; }
count_lines() { "$@" | grep -c . || true; }

# --- scenarios -----------------------------------------------------------------------------

check_crds_apply_without_warnings() {
	local f out
	for f in crds/toapolicies.yaml crds/toanodestates.yaml; do
		# Server-side dry run of a create: the apiserver computes the same warnings.
		out=$(k apply --server-side --dry-run=server -f "$f" 2>&1)
		echo "$out"
		if grep -qi warning <<<"$out"; then
			echo "$f: the apiserver warned" >&2
			return 1
		fi
	done
	# The chart ships the same files.
	cmp crds/toapolicies.yaml charts/toa-operator/crds/toapolicies.yaml
	cmp crds/toanodestates.yaml charts/toa-operator/crds/toanodestates.yaml
}

# check_invalid_example FILE: refused with the `# expect:` text. A `# subresource: status` line
# means the invalid part is the status, which the apiserver drops on create: the object is
# created first, then the file is applied to its status subresource.
check_invalid_example() {
	local f=$1 expect sub out rc
	expect=$(sed -n '1s/^# expect: //p' "$f")
	sub=$(sed -n 's/^# subresource: //p' "$f")
	[ -n "$expect" ] || {
		echo "$f: first line must be '# expect: MESSAGE'" >&2
		return 1
	}
	if [ -n "$sub" ]; then
		k apply --server-side --validate=strict -f "$f"
		set +e
		out=$(k apply --server-side --validate=strict --subresource "$sub" -f "$f" 2>&1)
		rc=$?
		set -e
		k delete -f "$f" --ignore-not-found --wait=false >/dev/null
	else
		set +e
		out=$(k apply --server-side --validate=strict -f "$f" 2>&1)
		rc=$?
		set -e
		[ "$rc" -eq 0 ] && k delete -f "$f" --ignore-not-found --wait=false >/dev/null
	fi
	echo "$out"
	if [ "$rc" -eq 0 ]; then
		echo "$f was accepted by the apiserver" >&2
		return 1
	fi
	grep -qF -- "$expect" <<<"$out" || {
		echo "$f: refused, but without the expected text: $expect" >&2
		return 1
	}
}

check_helm_install() {
	local out
	# A short node Lease grace period: the stale-node check powers a guest off and waits for it.
	out=$(helm install "$CP_RELEASE" charts/toa-operator --namespace "$CP_NAMESPACE" \
		--set "operator.nodeLeaseGraceSeconds=$CP_NODE_LEASE_GRACE" \
		--create-namespace --kubeconfig "$CP_KUBECONFIG" 2>&1) || { echo "$out"; return 1; }
	echo "$out" | head -20
	if grep -qi 'warning' <<<"$out"; then
		echo "helm install printed a warning" >&2
		return 1
	fi
	k wait --for condition=Established --timeout 30s crd/toapolicies.toa.dev crd/toanodestates.toa.dev
	k get validatingadmissionpolicy "$CP_RELEASE-node-agent-own-node"
	k get validatingadmissionpolicybinding "$CP_RELEASE-node-agent-own-node"
	k -n "$CP_NAMESPACE" get deployment,configmap,serviceaccount,role,rolebinding -o name
	k get clusterrole "$CP_RELEASE-operator" "$CP_RELEASE-node-agent" -o name
	# Read access to the kubelets' node Leases, nothing more.
	k -n kube-node-lease get "role/$CP_RELEASE-operator-node-leases" "rolebinding/$CP_RELEASE-operator-node-leases" -o name
}

check_operators_elect_a_leader() {
	op_start 0
	op_start 1
	wait_until 60 "a replica holds the lease" has_leader
	local leader standby
	leader=$(op_leader)
	standby=$((1 - leader))
	echo "leader: replica $leader ($(op_holder))"
	wait_until 60 "leader ready" curl -fsS "http://127.0.0.1:$(op_port "$leader")/readyz"
	curl -fsS "http://127.0.0.1:$(op_port "$standby")/readyz"
	echo
	# Every call went through the chart's RBAC with the replica's own token.
	wait_until 30 "the leader's lease writes in the audit log" \
		grep -q "JTI=$(op_jti "$leader")" "$CP_AUDIT_LOG"
}

check_policy_selects_nodes() {
	cp_create_node "$K_A" "$KERNEL_61" "$OS_IMAGE" node-role.kubernetes.io/ingress=
	cp_create_node "$K_B" "$KERNEL_612" "$OS_IMAGE" node-role.kubernetes.io/ingress=
	cp_create_node "$K_C" "$KERNEL_61" "$OS_IMAGE"
	k apply --server-side -f "$EXAMPLES/tencent-hybrid-cloud.yaml"
	wait_until 60 "ToaNodeStates for $K_A and $K_B" k get toanodestate "$K_A" "$K_B"
	wait_value 30 "agent labels" true jp "node/$K_B" '{.metadata.labels.toa\.dev/agent}'
	expect_eq "label on $K_A" "$(jp "node/$K_A" '{.metadata.labels.toa\.dev/agent}')" true
	expect_eq "label on $K_C" "$(jp "node/$K_C" '{.metadata.labels.toa\.dev/agent}')" ""
	if k get toanodestate "$K_C" >/dev/null 2>&1; then
		echo "$K_C is not selected but has a ToaNodeState" >&2
		return 1
	fi
	expect_eq "finalizer" "$(jp toapolicy/tencent-hybrid-cloud '{.metadata.finalizers}')" '["toa.dev/unload"]'
	expect_eq "state owner" "$(jp "toanodestate/$K_A" '{.metadata.ownerReferences[0].kind}/{.metadata.ownerReferences[0].name}')" "Node/$K_A"
	k -n "$CP_NAMESPACE" get daemonset "$OP_DAEMONSET" -o wide
	expect_eq "DaemonSet nodeSelector" \
		"$(k -n "$CP_NAMESPACE" get daemonset "$OP_DAEMONSET" -o jsonpath='{.spec.template.spec.nodeSelector.toa\.dev/agent}')" true
	wait_value 30 "status counts" 2 jp toapolicy/tencent-hybrid-cloud '{.status.selectedNodes}'
	expect_eq "Ready before any agent reports" "$(policy_condition tencent-hybrid-cloud Ready)" False
}

check_agents_report_loaded() {
	agent_report "$K_A" "$K_A" Loaded
	agent_report "$K_B" "$K_B" Loaded
	wait_value 30 "policy Ready" True policy_condition tencent-hybrid-cloud Ready
	expect_eq "loadedNodes" "$(jp toapolicy/tencent-hybrid-cloud '{.status.loadedNodes}')" 2
	expect_eq "observedGeneration" "$(jp toapolicy/tencent-hybrid-cloud '{.status.observedGeneration}')" \
		"$(jp toapolicy/tencent-hybrid-cloud '{.metadata.generation}')"
	k get toapolicy tencent-hybrid-cloud -o json | jq -c '.status.kernels'
	k get toapolicy tencent-hybrid-cloud -o json | jq -e --arg a "$KERNEL_61" --arg b "$KERNEL_612" \
		'[.status.kernels[] | .release] | (index($a) != null) and (index($b) != null)' >/dev/null
	# Who wrote the status: the audit log names the node-bound agent token's user and node.
	local writers
	writers=$(jq -r 'select(.objectRef.resource == "toanodestates" and .objectRef.subresource == "status"
		and .verb == "patch" and .responseStatus.code == 200)
		| "\(.objectRef.name) by \(.user.username) (node \(.user.extra["authentication.kubernetes.io/node-name"][0]))"' \
		"$CP_AUDIT_LOG" | sort -u)
	echo "$writers"
	grep -qF "$K_A by system:serviceaccount:$CP_NAMESPACE:$CP_AGENT_SA (node $K_A)" <<<"$writers"
}

check_agent_token_confined_to_its_node() {
	local out rc
	agent_report "$K_A" "$K_A" Loaded >/dev/null
	set +e
	out=$(agent_report "$K_A" "$K_B" Loaded 2>&1)
	rc=$?
	set -e
	echo "node $K_A's agent writing $K_B's status: $out"
	[ "$rc" -ne 0 ]
	grep -qF "is forbidden" <<<"$out"
	grep -qF "may only write ToaNodeState $K_A, not $K_B" <<<"$out"
	# Nor can it touch the spec (RBAC: status only).
	set +e
	out=$("${CP_KUBECTL:-$CP_BIN/kubectl}" --kubeconfig "$(agent_kubeconfig "$K_A")" patch toanodestate "$K_A" \
		--type merge -p '{"spec":{"desiredState":"Unloaded"}}' 2>&1)
	rc=$?
	set -e
	echo "spec write: $out"
	[ "$rc" -ne 0 ] && grep -qF "forbidden" <<<"$out"
}

check_get_columns() {
	local out
	out=$(k get toapolicies,toanodestates)
	echo "$out"
	grep -qE '^NAME +SELECTED +LOADED +FAILED +CONFLICTING +READY +REASON +AGE' <<<"$out"
	grep -qE '^toapolicy.toa.dev/tencent-hybrid-cloud +2 +2 +0 +0 +True +AllNodesLoaded ' <<<"$out"
	# A Loaded node has no reason: the REASON cell is blank.
	grep -qE '^NAME +POLICY +PHASE +REASON +KERNEL +BACKEND +MODULE +AGE' <<<"$out"
	grep -qE "^toanodestate.toa.dev/$K_B +tencent-hybrid-cloud +Loaded +${KERNEL_612//+/\\+} +4E1B2F0C9D8A7B6C5D4E3F2 " <<<"$out"
}

check_node_joining_later_is_picked_up() {
	k label node "$K_C" node-role.kubernetes.io/ingress=
	wait_until 30 "ToaNodeState $K_C" k get toanodestate "$K_C"
	wait_value 30 "selectedNodes 3" 3 jp toapolicy/tencent-hybrid-cloud '{.status.selectedNodes}'
	agent_report "$K_C" "$K_C" Loaded >/dev/null
	wait_value 30 "loadedNodes 3" 3 jp toapolicy/tencent-hybrid-cloud '{.status.loadedNodes}'
}

check_priority_and_conflict() {
	k label node "$K_B" example.com/edge=true
	k apply --server-side -f "$EXAMPLES/mixed-vendors.yaml"
	wait_value 30 "$K_B moves to mixed-vendors" mixed-vendors \
		jp "toanodestate/$K_B" '{.spec.policy}'
	expect_eq "new kinds on $K_B" "$(jp "toanodestate/$K_B" '{.spec.module.ipv4OptionKinds}')" '[200,254]'
	# Within 10 s, a third of the operator's 30 s housekeeping interval: creating the winning
	# policy re-plans the losing one at once (a policy watch wakes every policy); the loser's
	# status must not wait for an unrelated trigger or its 5-minute resync.
	wait_value 10 "Conflict on the losing policy" True \
		policy_condition tencent-hybrid-cloud Conflict
	k get toapolicy tencent-hybrid-cloud -o json | jq -c '.status.conditions[] | select(.type=="Conflict")'
	expect_eq "conflictingNodes" "$(jp toapolicy/tencent-hybrid-cloud '{.status.conflictingNodes}')" 1
	agent_report "$K_B" "$K_B" Loaded >/dev/null
	wait_value 30 "mixed-vendors Ready" True policy_condition mixed-vendors Ready
	expect_eq "selected by tencent" "$(jp toapolicy/tencent-hybrid-cloud '{.status.selectedNodes}')" 2
}

check_selector_change_unloads_deselected_node() {
	k patch toapolicy tencent-hybrid-cloud --type merge -p \
		"{\"spec\":{\"nodeSelector\":{\"matchLabels\":{\"node-role.kubernetes.io/ingress\":\"\"},\"matchExpressions\":[{\"key\":\"kubernetes.io/hostname\",\"operator\":\"NotIn\",\"values\":[\"$K_A\"]}]}}}"
	wait_value 30 "$K_A told to unload" Unloaded jp "toanodestate/$K_A" '{.spec.desiredState}'
	# Until the agent reports Unloaded, the state and label stay (the agent must run to unload).
	sleep 2
	expect_eq "label while unloading" "$(jp "node/$K_A" '{.metadata.labels.toa\.dev/agent}')" true
	agent_report "$K_A" "$K_A" Unloaded >/dev/null
	wait_gone 30 "ToaNodeState $K_A deleted" toanodestate/$K_A
	wait_value 30 "label removed from $K_A" "" jp "node/$K_A" '{.metadata.labels.toa\.dev/agent}'
}

check_node_deletion_gcs_its_state() {
	local uid
	uid=$(jp "node/$K_C" '{.metadata.uid}')
	expect_eq "owner uid" "$(jp "toanodestate/$K_C" '{.metadata.ownerReferences[0].uid}')" "$uid"
	# With no operator running, so that the garbage collector (not the operator's orphan
	# cleanup) must do it through the ownerReference.
	op_stop 0 TERM
	op_stop 1 TERM
	k delete node "$K_C"
	wait_gone 60 "ToaNodeState $K_C garbage-collected" toanodestate/$K_C
	# The audit log names who deleted it.
	grep -F '"verb":"delete"' "$CP_AUDIT_LOG" | grep -F "\"name\":\"$K_C\"" | grep -F toanodestates |
		jq -r '"deleted by " + .user.username' | sort -u | tee "$CP_RUN_DIR/gc-deleter"
	grep -qF "deleted by system:serviceaccount:kube-system:generic-garbage-collector" "$CP_RUN_DIR/gc-deleter"
	op_start 0
	op_start 1
	wait_until 60 "a leader" has_leader
	# tencent-hybrid-cloud now selects none: $K_A is deselected, $K_B is mixed-vendors'.
	wait_value 30 "selectedNodes 0" 0 jp toapolicy/tencent-hybrid-cloud '{.status.selectedNodes}'
}

check_policy_deletion_unloads_and_releases() {
	# $K_B is also selected by tencent-hybrid-cloud: when mixed-vendors goes, it moves there
	# with that policy's parameters (no unload in between), and mixed-vendors is released.
	k delete toapolicy mixed-vendors --wait=false
	wait_value 30 "$K_B moves to tencent-hybrid-cloud" tencent-hybrid-cloud/Loaded/[200] \
		jp "toanodestate/$K_B" '{.spec.policy}/{.spec.desiredState}/{.spec.module.ipv4OptionKinds}'
	wait_gone 30 "mixed-vendors gone" toapolicy/mixed-vendors
	k get events -A --field-selector involvedObject.name=mixed-vendors -o json |
		jq -e '.items[] | select(.reason=="FinalizerReleased" and .type=="Normal")' >/dev/null
	agent_report "$K_B" "$K_B" Loaded >/dev/null
	wait_value 30 "tencent-hybrid-cloud Ready" True policy_condition tencent-hybrid-cloud Ready
	# Deleting the last policy of $K_B unloads it; the finalizer holds the policy until then.
	k delete toapolicy tencent-hybrid-cloud --wait=false
	wait_value 30 "$K_B told to unload" Unloaded jp "toanodestate/$K_B" '{.spec.desiredState}'
	sleep 2
	expect_eq "finalizer while unloading" "$(jp toapolicy/tencent-hybrid-cloud '{.metadata.finalizers}')" '["toa.dev/unload"]'
	expect_eq "label while unloading" "$(jp "node/$K_B" '{.metadata.labels.toa\.dev/agent}')" true
	agent_report "$K_B" "$K_B" Unloaded >/dev/null
	wait_gone 30 "tencent-hybrid-cloud gone" toapolicy/tencent-hybrid-cloud
	k get events -A --field-selector involvedObject.name=tencent-hybrid-cloud -o json |
		jq -r '.items[] | select(.reason=="FinalizerReleased") | .type + ": " + .message'
	wait_value 30 "no ToaNodeState left" "" k get toanodestates -o name
	wait_value 30 "no agent label left" "" k get nodes -l toa.dev/agent -o name
}

check_on_delete_keep() {
	k apply --server-side -f "$EXAMPLES/keep-on-delete.yaml"
	wait_value 30 "states for keep-on-delete" 2 count_lines k get toanodestates -o name
	agent_report "$K_A" "$K_A" Loaded >/dev/null
	agent_report "$K_B" "$K_B" Loaded >/dev/null
	wait_value 30 "keep-on-delete Ready" True policy_condition keep-on-delete Ready
	local deleted_at
	deleted_at=$(date -u +%FT%T.%6NZ)
	k delete toapolicy keep-on-delete --wait=false
	wait_gone 30 "keep-on-delete gone" toapolicy/keep-on-delete
	k get events -A --field-selector involvedObject.name=keep-on-delete -o json |
		jq -r '.items[] | select(.reason=="FinalizerReleased") | .type + ": " + .message'
	k get events -A --field-selector involvedObject.name=keep-on-delete -o json |
		jq -e '.items[] | select(.reason=="FinalizerReleased" and (.message | contains("Keep")))' >/dev/null
	# The states go at once and no unload was ever asked of a node (the module stays loaded,
	# unmanaged).
	wait_value 30 "no ToaNodeState left" "" k get toanodestates -o name
	local unloads
	unloads=$(jq -c --arg t "$deleted_at" 'select(.objectRef.resource == "toanodestates" and
		.objectRef.subresource == null and .verb == "patch" and .stageTimestamp > $t and
		.requestObject.spec.desiredState == "Unloaded") | .objectRef.name' "$CP_AUDIT_LOG")
	if [ -n "$unloads" ]; then
		echo "an unload was requested for a Keep policy: $unloads" >&2
		return 1
	fi
}

check_unload_timeout_warns_naming_nodes() {
	k apply --server-side -f - <<EOF
apiVersion: toa.dev/v1alpha1
kind: ToaPolicy
metadata:
  name: short-unload-timeout
spec:
  nodeSelector:
    matchLabels:
      node-role.kubernetes.io/ingress: ""
  lifecycle:
    unloadTimeoutSeconds: 5
EOF
	wait_value 30 "states for short-unload-timeout" short-unload-timeout \
		jp "toanodestate/$K_B" '{.spec.policy}'
	agent_report "$K_A" "$K_A" Loaded >/dev/null
	agent_report "$K_B" "$K_B" Loaded >/dev/null
	# The agents are "stopped": nobody reports Unloaded.
	k delete toapolicy short-unload-timeout --wait=false
	wait_gone 60 "short-unload-timeout released" toapolicy/short-unload-timeout
	# The Event follows the finalizer release (posted after it, and listed by the apiserver a
	# moment later): wait for it instead of reading once.
	wait_until 30 "FinalizerReleased Warning naming $K_A and $K_B" _unload_warning_names "$K_A" "$K_B"
}

# _unload_warning_names NODE...: the FinalizerReleased Warning of short-unload-timeout names
# every NODE.
_unload_warning_names() {
	local msg n
	msg=$(k get events -A --field-selector involvedObject.name=short-unload-timeout -o json |
		jq -r '.items[] | select(.reason=="FinalizerReleased" and .type=="Warning") | .message')
	echo "Warning event: $msg"
	for n in "$@"; do grep -qF "$n" <<<"$msg" || return 1; done
}
