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
	# The read access to the kubelets' node Leases lives in kube-node-lease.
	leftovers+=$(k get roles,rolebindings -n kube-node-lease -l app.kubernetes.io/part-of=toa-operator -o name)
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

# --- CRD upgrade over stored objects (docs/upgrading.md, "The CRDs first") -------------------
# The CRDs of an earlier chart (tests/cluster/fixtures/crds-d1f1601: integer formats, older
# rules) are created as `helm install` creates them (a plain create), objects are stored under
# them as that version's operator and agent wrote them (a policy with its status, a Node's
# ToaNodeState with spec and status), then the CRD commands of docs/upgrading.md run as the
# doc states them (read from the doc, not retyped). The stored objects must stay readable
# (`kubectl get`), valid under the new schema (a server-side dry-run create of a copy, which
# ratcheting cannot excuse), and updatable as they are (a no-op replace of each object and of
# each status). Runs before `helm install`, which then finds the upgraded CRDs in place.
# crd-upgraded-objects-reconciled checks, once the operator runs, that it takes them over.
UPGRADE_OLD_CRDS=tests/cluster/fixtures/crds-d1f1601
UPGRADE_POLICY=upgrade-stored
UPGRADE_NODE=cl-node-upgrade

# _doc_block FILE SECTION N: the Nth ```sh block under the `## SECTION` heading of FILE.
_doc_block() {
	python3 - "$@" <<'PY'
import re, sys
path, section, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
text = open(path).read()
m = re.search(r"^## " + re.escape(section) + r"\n(.*?)(?=^## |\Z)", text, re.S | re.M)
if not m:
    sys.exit(f"{path}: no section '## {section}'")
blocks = re.findall(r"^```sh\n(.*?)^```", m.group(1), re.S | re.M)
if len(blocks) < n:
    sys.exit(f"{path}: section '{section}' has {len(blocks)} sh blocks, wanted block {n}")
sys.stdout.write(blocks[n - 1])
PY
}

# _doc_run COMMAND_LINE: a command from the doc, with kubectl pointing at the suite's cluster.
_doc_run() {
	(
		# shellcheck disable=SC2317 # called by the eval'd command
		kubectl() { cp_kubectl "$@"; }
		eval "$1"
	)
}

# _old_crd FILE: the old CRD as a cluster of this apiserver's minor could have stored it. The
# d1f1601 trustedSources rule (`cidr(c) == cidr(c).masked()`) is refused by apiservers before
# 1.32 ("estimated rule cost exceeds budget"): a 1.31 cluster never held those CRDs, only ones
# with the rule the chart has since shipped (`string(cidr(c).masked()) == c`). Everything else
# (uint8 formats, the old schema) stays as d1f1601 shipped it.
_old_crd() {
	local minor
	minor=$(k version -o json | jq -r '.serverVersion.minor | gsub("[^0-9]"; "")')
	if [ "$minor" -ge 32 ]; then
		cat "$1"
		return
	fi
	grep -q 'cidr(c) == cidr(c).masked()' "$1" || {
		echo "$1: no d1f1601 trustedSources rule to rewrite for apiserver 1.$minor" >&2
		return 1
	}
	sed 's/cidr(c) == cidr(c).masked()/string(cidr(c).masked()) == c/' "$1"
}

check_crd_upgrade_over_stored_objects() {
	local f out step line kind name old
	for f in "$UPGRADE_OLD_CRDS"/toapolicies.yaml "$UPGRADE_OLD_CRDS"/toanodestates.yaml; do
		old=$(_old_crd "$f")
		k create -f - <<<"$old" 2>&1 | sed 's/^/  old crd| /'
	done
	k wait --for condition=Established --timeout 30s crd/toapolicies.toa.dev crd/toanodestates.toa.dev
	k get crd toapolicies.toa.dev -o json | jq -e '[.. | objects | select(.format? == "uint8")] | length > 0' >/dev/null ||
		{ echo "the old CRDs carry no uint8 format: not the previous version" >&2; return 1; }
	# Stored as the previous version wrote them.
	cp_create_node "$UPGRADE_NODE" "$KERNEL_61" "$OS_IMAGE" toa-test/upgrade=true
	k create -f - <<EOX
apiVersion: toa.dev/v1alpha1
kind: ToaPolicy
metadata:
  name: $UPGRADE_POLICY
  finalizers: [toa.dev/unload]
spec:
  priority: 7
  nodeSelector:
    matchLabels: {toa-test/upgrade: "true"}
  module:
    ipv4OptionKinds: [200]
    nat64OptionKinds: [253]
    trustedSources: [10.0.0.0/8]
  lifecycle:
    onDelete: Keep
  rollout:
    maxUnavailable: 1
EOX
	k apply --server-side --field-manager toa-operator --subresource status -f - <<EOX
apiVersion: toa.dev/v1alpha1
kind: ToaPolicy
metadata:
  name: $UPGRADE_POLICY
status:
  observedGeneration: 1
  selectedNodes: 1
  loadedNodes: 1
  failedNodes: 0
  conflictingNodes: 0
  kernels: [{release: "$KERNEL_61", nodes: 1}]
  conditions:
    - {type: Ready, status: "True", reason: AllNodesLoaded, message: module loaded on all 1 node,
       observedGeneration: 1, lastTransitionTime: "2026-11-01T00:00:00Z"}
EOX
	k apply --server-side --field-manager toa-operator -f - <<EOX
apiVersion: toa.dev/v1alpha1
kind: ToaNodeState
metadata:
  name: $UPGRADE_NODE
spec:
  nodeName: $UPGRADE_NODE
  policy: $UPGRADE_POLICY
  desiredState: Loaded
  module:
    ipv4OptionKinds: [200]
    nat64OptionKinds: [253]
    trustedSources: [10.0.0.0/8]
  replaceForeignModule: false
  reloadAllowed: false
EOX
	agent_status_body "$UPGRADE_NODE" Loaded |
		k apply --server-side --field-manager toa-node-agent --subresource status -f -

	# The doc's CRD step, as written there.
	step=$(_doc_block docs/upgrading.md "The CRDs first" 1 | grep '^helm show crds')
	[ -n "$step" ] || { echo "docs/upgrading.md: no 'helm show crds' command in 'The CRDs first'" >&2; return 1; }
	echo "docs/upgrading.md: $step"
	if ! out=$(_doc_run "$step" 2>&1); then
		echo "$out" | sed 's/^/  | /'
		# The doc: "if the CRDs were created by `helm install`, add `--force-conflicts` the
		# first time" (they were: a plain create, as helm does).
		grep -q 'conflict' <<<"$out" || return 1
		# shellcheck disable=SC2016 # backquotes of the Markdown text
		tr -s '\n' ' ' <docs/upgrading.md | grep -q 'add `--force-conflicts` the first time' ||
			{ echo "the apply conflicts and docs/upgrading.md does not say what to do" >&2; return 1; }
		step="$step --force-conflicts"
		echo "docs/upgrading.md (first time over helm-created CRDs): $step"
		out=$(_doc_run "$step" 2>&1)
	fi
	echo "$out" | sed 's/^/  | /'
	if grep -qi warning <<<"$out"; then echo "the CRD upgrade warned" >&2; return 1; fi
	k get crd toapolicies.toa.dev -o json | jq -e '[.. | objects | select(.format? == "uint8")] | length == 0' >/dev/null ||
		{ echo "the CRDs were not upgraded (uint8 formats still there)" >&2; return 1; }
	diff <(k get crd toapolicies.toa.dev -o json | jq -S '.spec.versions[0].schema') \
		<(python3 -c 'import json,sys,yaml; print(json.dumps(yaml.safe_load(open(sys.argv[1]))["spec"]["versions"][0]["schema"]))' charts/toa-operator/crds/toapolicies.yaml | jq -S .) >/dev/null ||
		{ echo "the stored ToaPolicy schema is not the chart's" >&2; return 1; }
	# The doc's checks afterwards.
	while IFS= read -r line; do
		[ -n "$line" ] || continue
		echo "docs/upgrading.md: $line"
		_doc_run "$line" | sed 's/^/  | /'
	done < <(_doc_block docs/upgrading.md "The CRDs first" 2)

	# Stored objects: readable, valid under the new schema, updatable as they are.
	for kind in toapolicy toanodestate; do
		name=$UPGRADE_POLICY
		[ "$kind" = toanodestate ] && name=$UPGRADE_NODE
		k get "$kind" "$name" -o wide | sed 's/^/  | /'
		k get "$kind" "$name" -o json |
			jq '.metadata |= {name: (.name + "-copy"), finalizers} | del(.status)
			  | if .spec.nodeName then .spec.nodeName = .metadata.name else . end' |
			k create --dry-run=server -f - >/dev/null ||
			{ echo "$kind/$name is not valid under the new schema" >&2; return 1; }
		k get "$kind" "$name" -o json | k replace -f - >/dev/null ||
			{ echo "a no-op update of $kind/$name failed" >&2; return 1; }
		k get "$kind" "$name" -o json | k replace --subresource status -f - >/dev/null ||
			{ echo "a no-op status update of $kind/$name failed" >&2; return 1; }
		echo "$kind/$name: readable, valid, no-op update and status update accepted"
	done
}

# After the operator started: it takes the stored objects over (the policy's status is its own
# for the current generation, with this version's fields and conditions; the ToaNodeState is
# owned by its Node and applied by toa-operator), and the policy is Ready once the node's agent
# reports for the current spec. Then the objects go (onDelete Keep: the finalizer goes at once).
check_crd_upgraded_objects_reconciled() {
	wait_until 60 "$UPGRADE_POLICY reconciled by this version" _upgrade_policy_reconciled
	k get toapolicy "$UPGRADE_POLICY" -o json | jq -c '.status | {observedGeneration, selectedNodes, staleNodes, conditions: [.conditions[] | .type + "=" + .status]}'
	wait_until 60 "$UPGRADE_NODE's state owned by its Node" _upgrade_state_adopted
	agent_report "$UPGRADE_NODE" "$UPGRADE_NODE" Loaded >/dev/null
	wait_value 60 "$UPGRADE_POLICY Ready" True policy_condition "$UPGRADE_POLICY" Ready
	k delete toapolicy "$UPGRADE_POLICY" --timeout=60s
	k delete node "$UPGRADE_NODE"
	wait_gone 60 "the ToaNodeState of $UPGRADE_NODE collected" toanodestate "$UPGRADE_NODE"
}
_upgrade_policy_reconciled() {
	k get toapolicy "$UPGRADE_POLICY" -o json | jq -e '
	  .status.observedGeneration == .metadata.generation and .status.selectedNodes == 1
	  and (.status.staleNodes != null)
	  and ([.status.conditions[].type] | index("TrustWarning") != null)' >/dev/null
}
_upgrade_state_adopted() {
	k get toanodestate "$UPGRADE_NODE" -o json --show-managed-fields | jq -e '
	  (.metadata.ownerReferences // [] | any(.kind == "Node"))
	  and ([.metadata.managedFields[] | select(.manager == "toa-operator" and .subresource == null)] | length > 0)' >/dev/null
}
