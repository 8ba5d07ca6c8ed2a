# shellcheck shell=bash
# The operator under real conditions (issue 17), on Node objects made by hand:
#   exclusion  nodes that can never run the agent (no kubernetes.io/os label, virtual kubelets)
#              are not selected and are counted in status.excludedNodes
#   isolation  a ValidatingAdmissionPolicy refuses the agent label on one node of policy B:
#              policy A keeps its status up to date, B shows the refusal (condition + Event)
#   agents     agent pods refused by Pod Security admission (the DaemonSet's FailedCreate) and
#              a node whose agent pod stays Pending past the start timeout reach the policy
#   outages    five kube-apiserver outages of 30 s (and one of 5 minutes with
#              CLUSTER_LONG_OUTAGE=1): after each the operator applies a new change within 60 s,
#              and the audit log shows no write by a replica while it did not hold the lease
# Each group deletes its policies (onDelete: Keep, so nothing waits for an unload) and nodes.

# rw_node NAME [LABEL=VALUE...]: a Linux node as a kubelet registers it (see cp_create_node).
rw_node() {
	local name=$1
	shift
	cp_create_node "$name" "$KERNEL_61" "$OS_IMAGE" "$@"
}

# rw_raw_node NAME YAML_METADATA_LABELS YAML_SPEC: a Node with exactly these labels and spec.
rw_raw_node() {
	k apply --server-side --field-manager kubelet -f - >/dev/null <<EOX
apiVersion: v1
kind: Node
metadata:
  name: $1
  labels:
$2
spec:
$3
EOX
}

# rw_policy NAME LABEL VALUE: a policy selecting LABEL=VALUE that keeps modules on delete.
rw_policy() {
	k apply --server-side -f - <<EOX
apiVersion: toa.dev/v1alpha1
kind: ToaPolicy
metadata:
  name: $1
spec:
  nodeSelector:
    matchLabels:
      $2: "$3"
  module:
    trustedSources: ["10.0.0.0/8"]
  lifecycle:
    onDelete: Keep
EOX
}

# rw_cleanup POLICIES... -- NODES...
rw_cleanup() {
	local p=() n=() seen="" x
	for x in "$@"; do
		if [ "$x" = -- ]; then seen=1; elif [ -z "$seen" ]; then p+=("$x"); else n+=("$x"); fi
	done
	[ ${#p[@]} -eq 0 ] || k delete toapolicy "${p[@]}" --ignore-not-found --wait=false >/dev/null
	for x in "${p[@]}"; do wait_gone 60 "policy $x deleted" "toapolicy/$x"; done
	[ ${#n[@]} -eq 0 ] || k delete node "${n[@]}" --ignore-not-found >/dev/null
}

# policy_event_messages POLICY REASON: messages of the Events with that reason on the policy.
policy_event_messages() {
	k get events -A --field-selector "involvedObject.name=$1,reason=$2" -o json |
		jq -r '.items[] | .type + ": " + .message'
}

# --- exclusion ---------------------------------------------------------------------------------

check_excluded_nodes_are_counted_not_selected() {
	# Also on failure: what later groups count (labelled nodes, policies) must not change.
	trap 'rw_cleanup x-excl -- cl-x-linux cl-x-noos cl-x-vk-label cl-x-vk-taint >/dev/null 2>&1 || true' EXIT
	rw_node cl-x-linux toa-x=1
	# Registered without the OS labels (an old or hand-made Node).
	rw_raw_node cl-x-noos '    kubernetes.io/hostname: cl-x-noos
    toa-x: "1"' '  unschedulable: false'
	rw_node cl-x-vk-label toa-x=1 type=virtual-kubelet
	rw_raw_node cl-x-vk-taint '    kubernetes.io/hostname: cl-x-vk-taint
    kubernetes.io/os: linux
    toa-x: "1"' '  taints:
  - {key: virtual-kubelet.io/provider, value: mock, effect: NoSchedule}'
	rw_policy x-excl toa-x 1
	wait_value 60 "excludedNodes" 3 jp toapolicy/x-excl '{.status.excludedNodes}'
	expect_eq "selectedNodes" "$(jp toapolicy/x-excl '{.status.selectedNodes}')" 1
	wait_until 30 "ToaNodeState cl-x-linux" k get toanodestate cl-x-linux
	wait_value 30 "label on cl-x-linux" true jp node/cl-x-linux '{.metadata.labels.toa\.dev/agent}'
	local n
	for n in cl-x-noos cl-x-vk-label cl-x-vk-taint; do
		if k get toanodestate "$n" >/dev/null 2>&1; then
			echo "$n can never run the agent but has a ToaNodeState" >&2
			return 1
		fi
		expect_eq "agent label on $n" "$(jp "node/$n" '{.metadata.labels.toa\.dev/agent}')" ""
	done
	local msg
	msg=$(policy_condition_field x-excl Ready message)
	echo "Ready: $msg"
	grep -qF "3 nodes matching spec.nodeSelector can never run the agent" <<<"$msg"
	grep -qF "1 without the kubernetes.io/os label" <<<"$msg"
	grep -qF "2 virtual kubelets" <<<"$msg"
	# The agent reports: the policy is Ready with the excluded nodes still counted.
	agent_report cl-x-linux cl-x-linux Loaded >/dev/null
	wait_value 30 "x-excl Ready" True policy_condition x-excl Ready
	expect_eq "excludedNodes when Ready" "$(jp toapolicy/x-excl '{.status.excludedNodes}')" 3
	rw_cleanup x-excl -- cl-x-linux cl-x-noos cl-x-vk-label cl-x-vk-taint
}

# --- isolation ---------------------------------------------------------------------------------

RW_VAP=toa-suite-no-agent-on-cl-i-b1
RW_VAP_MESSAGE="toa cluster suite: no TOA agent on cl-i-b1"

rw_vap_apply() {
	k apply --server-side -f - <<EOX
apiVersion: admissionregistration.k8s.io/v1
kind: ValidatingAdmissionPolicy
metadata:
  name: $RW_VAP
spec:
  failurePolicy: Fail
  matchConstraints:
    resourceRules:
    - apiGroups: [""]
      apiVersions: ["v1"]
      operations: ["UPDATE"]
      resources: ["nodes"]
  validations:
  - expression: >-
      object.metadata.name != 'cl-i-b1' || !has(object.metadata.labels) ||
      !('toa.dev/agent' in object.metadata.labels)
    message: "$RW_VAP_MESSAGE"
---
apiVersion: admissionregistration.k8s.io/v1
kind: ValidatingAdmissionPolicyBinding
metadata:
  name: $RW_VAP
spec:
  policyName: $RW_VAP
  validationActions: [Deny]
EOX
}

check_refused_write_stays_with_its_policy() {
	local n out
	trap 'k delete validatingadmissionpolicybinding,validatingadmissionpolicy "$RW_VAP" --ignore-not-found >/dev/null 2>&1; rw_cleanup iso-a iso-b -- cl-i-a1 cl-i-a2 cl-i-a3 cl-i-b1 cl-i-b2 >/dev/null 2>&1 || true' EXIT
	for n in cl-i-a1 cl-i-a2; do rw_node "$n" toa-iso=a; done
	for n in cl-i-b1 cl-i-b2; do rw_node "$n" toa-iso=b; done
	rw_node cl-i-a3
	rw_vap_apply
	# The policy takes effect within about a second: wait until a label write is refused.
	wait_until 30 "the ValidatingAdmissionPolicy refuses a label on cl-i-b1" bash -c \
		"! '$CP_BIN/kubectl' --kubeconfig '$CP_KUBECONFIG' label node cl-i-b1 toa.dev/agent=probe --dry-run=server"
	out=$(k label node cl-i-b1 toa.dev/agent=probe --dry-run=server 2>&1 || true)
	echo "admin's label write on cl-i-b1: $out"
	rw_policy iso-a toa-iso a
	rw_policy iso-b toa-iso b
	wait_value 60 "iso-a selectedNodes" 2 jp toapolicy/iso-a '{.status.selectedNodes}'
	wait_value 60 "iso-a Synced" True policy_condition iso-a Synced
	wait_value 60 "iso-b Synced" False policy_condition iso-b Synced
	expect_eq "iso-b selectedNodes" "$(jp toapolicy/iso-b '{.status.selectedNodes}')" 2
	expect_eq "iso-b Synced reason" "$(policy_condition_field iso-b Synced reason)" WriteFailed
	local msg
	msg=$(policy_condition_field iso-b Synced message)
	echo "iso-b Synced: $msg"
	grep -qF "label Node cl-i-b1" <<<"$msg"
	grep -qF "$RW_VAP_MESSAGE" <<<"$msg"
	wait_until 30 "WriteFailed Event on iso-b" bash -c \
		"'$CP_BIN/kubectl' --kubeconfig '$CP_KUBECONFIG' get events -A --field-selector involvedObject.name=iso-b,reason=WriteFailed -o json | jq -e '.items[] | select(.type == \"Warning\" and (.message | contains(\"$RW_VAP_MESSAGE\")))'"
	policy_event_messages iso-b WriteFailed
	# The other writes went ahead: b2's label, every ToaNodeState.
	expect_eq "label on cl-i-b2" "$(jp node/cl-i-b2 '{.metadata.labels.toa\.dev/agent}')" true
	expect_eq "label on cl-i-b1" "$(jp node/cl-i-b1 '{.metadata.labels.toa\.dev/agent}')" ""
	k get toanodestate cl-i-a1 cl-i-a2 cl-i-b1 cl-i-b2 -o name
	# A node newly selected by A is counted by A while B's write keeps failing.
	k label node cl-i-a3 toa-iso=a
	wait_value 30 "iso-a counts the new node" 3 jp toapolicy/iso-a '{.status.selectedNodes}'
	expect_eq "iso-a Synced" "$(policy_condition iso-a Synced)" True
	agent_report cl-i-a1 cl-i-a1 Loaded >/dev/null
	wait_value 30 "iso-a loadedNodes" 1 jp toapolicy/iso-a '{.status.loadedNodes}'
	# The refusal goes away: B's node is labelled and B is Synced again.
	k delete validatingadmissionpolicybinding,validatingadmissionpolicy "$RW_VAP" >/dev/null
	wait_value 90 "label on cl-i-b1 after the refusal is lifted" true \
		jp node/cl-i-b1 '{.metadata.labels.toa\.dev/agent}'
	wait_value 60 "iso-b Synced again" True policy_condition iso-b Synced
	rw_cleanup iso-a iso-b -- cl-i-a1 cl-i-a2 cl-i-a3 cl-i-b1 cl-i-b2
}

# --- agents ------------------------------------------------------------------------------------

check_refused_agent_pods_reach_the_policy() {
	local ns_labels
	trap 'k label ns "$CP_NAMESPACE" pod-security.kubernetes.io/enforce- >/dev/null 2>&1; rw_cleanup agents-g -- cl-g-1 >/dev/null 2>&1 || true' EXIT
	ns_labels=$(k get ns "$CP_NAMESPACE" -o jsonpath='{.metadata.labels}')
	echo "namespace labels before: $ns_labels"
	# The controller-manager's event recorder drops Events per object beyond a burst of 25,
	# then lets one through per 5 minutes (client-go's spam filter). By this check the earlier
	# groups' pod creations and deletions have spent the agent DaemonSet's budget (seen on
	# v1.31.14: no FailedCreate Event at all, only the controller's log), and an Event the
	# control plane never records cannot reach the policy. A restarted controller-manager
	# starts with a full budget.
	cp_kill kube-controller-manager TERM
	cp_start_controller_manager
	k label ns "$CP_NAMESPACE" pod-security.kubernetes.io/enforce=restricted --overwrite
	rw_node cl-g-1 toa-g=1
	rw_policy agents-g toa-g 1
	wait_until 30 "ToaNodeState cl-g-1" k get toanodestate cl-g-1
	wait_value 90 "AgentsAvailable refused" AgentPodsRefused policy_condition_field agents-g AgentsAvailable reason
	local msg
	msg=$(policy_condition_field agents-g AgentsAvailable message)
	echo "AgentsAvailable: $msg"
	grep -qF "violates PodSecurity" <<<"$msg"
	expect_eq "AgentsAvailable" "$(policy_condition agents-g AgentsAvailable)" False
	# The DaemonSet controller's own record of it.
	k get events -n "$CP_NAMESPACE" --field-selector "involvedObject.kind=DaemonSet,reason=FailedCreate" \
		-o jsonpath='{.items[-1:].message}'
	echo
	wait_until 30 "AgentPodsRefused Event on agents-g" bash -c \
		"'$CP_BIN/kubectl' --kubeconfig '$CP_KUBECONFIG' get events -A --field-selector involvedObject.name=agents-g,reason=AgentPodsRefused -o json | jq -e '.items[] | select(.type == \"Warning\" and (.message | contains(\"violates PodSecurity\")))'"
	policy_event_messages agents-g AgentPodsRefused
	# Admission lets the pod in: it is created, and stays Pending (no scheduler, no kubelet)
	# past the start timeout: the node is named with its pod.
	k label ns "$CP_NAMESPACE" pod-security.kubernetes.io/enforce-
	# Any node change makes the DaemonSet controller sync at once (its retry may back off).
	k label node cl-g-1 toa-suite/kick=1 --overwrite >/dev/null
	wait_value 120 "AgentsAvailable not running" AgentPodsNotRunning \
		policy_condition_field agents-g AgentsAvailable reason
	msg=$(policy_condition_field agents-g AgentsAvailable message)
	echo "AgentsAvailable: $msg"
	grep -qF "more than ${OP_AGENT_START_TIMEOUT}s" <<<"$msg"
	grep -qE "cl-g-1 \(pod toa-node-agent-[a-z0-9]+ Pending" <<<"$msg"
	policy_event_messages agents-g AgentPodsNotRunning
	# The agent reports: all is well.
	agent_report cl-g-1 cl-g-1 Loaded >/dev/null
	wait_value 30 "AgentsAvailable True" True policy_condition agents-g AgentsAvailable
	rw_cleanup agents-g -- cl-g-1
}

# --- outages -----------------------------------------------------------------------------------

# rw_outage SECONDS I: the apiserver is down for SECONDS; then a new change (trustedSources
# 10.I.0.0/16) must reach the node's ToaNodeState within 60 s of the apiserver being ready.
rw_outage() {
	local secs=$1 i=$2 t0 took want
	cp_stop_apiserver
	t0=$(date +%s)
	echo "outage $i: kube-apiserver stopped for ${secs}s"
	sleep "$secs"
	cp_start_apiserver
	echo "outage $i: kube-apiserver back after $(($(date +%s) - t0))s"
	t0=$(_now)
	want="[\"10.$i.0.0/16\"]"
	k patch toapolicy out-p --type merge -p "{\"spec\":{\"module\":{\"trustedSources\":$want}}}" >/dev/null
	wait_value 60 "change $i applied" "$want" jp toanodestate/cl-o-1 '{.spec.module.trustedSources}'
	took=$(_since "$t0")
	printf 'outage %s (%ss): change applied %.1fs after the apiserver was ready; leader: replica %s\n' \
		"$i" "$secs" "$took" "$(op_leader)"
}

check_apiserver_outages() {
	local r0 r1 i t_start jtis
	trap 'rw_cleanup out-p -- cl-o-1 >/dev/null 2>&1 || true' EXIT
	r0=$(op_restart_count 0)
	r1=$(op_restart_count 1)
	op_ensure_running 0 1
	wait_until 60 "a leader" has_leader
	t_start=$(date -u +%FT%T.%6NZ)
	jtis="$(op_jti 0) $(op_jti 1)"
	rw_node cl-o-1 toa-o=1
	rw_policy out-p toa-o 1
	wait_until 60 "ToaNodeState cl-o-1" k get toanodestate cl-o-1
	for i in 1 2 3 4 5; do
		rw_outage 30 "$i"
	done
	if [ -n "${CLUSTER_LONG_OUTAGE:-}" ]; then
		rw_outage 300 6
	else
		echo "the 5-minute outage runs with CLUSTER_LONG_OUTAGE=1"
	fi
	echo "operator restarts: replica 0 $(($(op_restart_count 0) - r0)), replica 1 $(($(op_restart_count 1) - r1))"
	for i in 0 1; do
		if ! cp_alive "operator-$i"; then
			echo "replica $i exited during the outages" >&2
			tail -n 20 "$CP_RUN_DIR/logs/operator-$i.log" >&2
			return 1
		fi
	done
	# Same processes throughout (same tokens): their writes are all in the audit log.
	[ "$jtis" = "$(op_jti 0) $(op_jti 1)" ]
	rw_audit_fenced "$t_start" "$(op_jti 0)" "$(op_jti 1)"
	rw_cleanup out-p -- cl-o-1
}

# rw_audit_fenced AFTER JTI...: every write by these tokens after AFTER (requestReceived time)
# came from the replica whose lease write was the last one accepted before it (lease writes
# from one lease duration before AFTER on), within the lease duration: no replica wrote while
# another held the lease or while its own had lapsed.
rw_audit_fenced() {
	python3 - "$CP_AUDIT_LOG" "$LEASE_DURATION_S" "$@" <<'EOF'
import json, sys
from datetime import datetime
log, lease_s, after, jtis = sys.argv[1], float(sys.argv[2]), sys.argv[3], sys.argv[4:]
def ts(s):
    return datetime.fromisoformat(s.replace("Z", "+00:00")).timestamp()
def who(e):
    ids = (e.get("user", {}).get("extra", {}) or {}).get("authentication.kubernetes.io/credential-id", [])
    for j in jtis:
        if "JTI=" + j in ids:
            return j
    return None
after_t = ts(after)
lease_writes, writes = [], []
for line in open(log):
    try:
        e = json.loads(line)
    except ValueError:
        continue
    if e.get("stage") != "ResponseComplete" or e.get("verb") not in ("create", "update", "patch", "delete", "deletecollection"):
        continue
    j = who(e)
    if j is None or "requestReceivedTimestamp" not in e:
        continue
    t = ts(e["requestReceivedTimestamp"])
    ref = e.get("objectRef", {})
    # Lease writes from one lease duration before AFTER count too: the leader's renewal that
    # covers the first writes after AFTER may have come just before it.
    if t < after_t - (lease_s if ref.get("resource") == "leases" else 0):
        continue
    if ref.get("resource") == "leases":
        if e.get("responseStatus", {}).get("code", 500) < 300:
            holder = ((e.get("requestObject") or {}).get("spec") or {}).get("holderIdentity")
            lease_writes.append((t, j, bool(holder)))
    else:
        writes.append((t, j, "%s %s/%s %s" % (e["verb"], ref.get("resource"), ref.get("name"), ref.get("subresource") or "")))
lease_writes.sort()
bad = []
for t, j, what in writes:
    before = [w for w in lease_writes if w[0] <= t]
    if not before:
        bad.append((t, j, what, "no lease write before it"))
        continue
    lt, lj, held = before[-1]
    if lj != j or not held:
        bad.append((t, j, what, "the lease was last written by the other replica"))
    elif t - lt > lease_s:
        bad.append((t, j, what, "%.1fs after its last renewal" % (t - lt)))
print("audit: %d writes by the replicas, %d accepted lease writes since %s" % (len(writes), len(lease_writes), after))
for b in bad[:20]:
    print("UNFENCED WRITE at %s by JTI %s: %s (%s)" % (datetime.fromtimestamp(b[0]).isoformat(), b[1], b[2], b[3]))
sys.exit(1 if bad else 0)
EOF
}
