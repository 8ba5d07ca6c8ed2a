# shellcheck shell=bash
# Group `docs`: every command and snippet of the docs that talks to a cluster, run as written
# against the suite's real control plane (issue 12, item 9), in the order a user follows them:
# the quick start installs the chart and applies a policy, the other install paths, the NOTES,
# the day-two docs, then docs/upgrading.md upgrades the release and removes toa-operator with its
# documented steps, after which nothing of toa-operator may be left in the cluster (item 5).
#
# tests/chart/docs_commands.py plan picks the commands, fills the docs' placeholders (NODE ->
# worker-1, NAME -> ingress-nodes, CHART -> charts/toa-operator) and says what cannot run here
# and why. Each command that runs is a named check `docs FILE:LINE+N: COMMAND`; identical
# state-changing commands of later docs are reported as covered by the first; skipped ones are
# listed with their reason and counted apart (never as passed).
#
# What plays the parts of the missing components (there is no kubelet, scheduler or agent):
#   - operator: the chart's Deployment as host processes (lib/operator.sh), started after the
#     documented `helm install`, restarted after `helm upgrade`, stopped by `helm uninstall`;
#   - agent: a ToaNodeState whose spec changed gets the status an agent reports (Loaded or
#     Unloaded per spec.desiredState) with the node's own bound token (checks.sh agent_report);
#   - scheduler: an unbound DaemonSet pod is bound to the node its affinity names;
#   - kubelet: a bound pod being deleted is confirmed deleted (grace 0), as a kubelet does once
#     its containers stopped (these never started);
#   - the uninstall hook's Job: its container command runs as a host process with the Job's
#     ServiceAccount token, then the Job gets the status the job controller writes on success.
# Commands that read from a running container (kubectl logs/exec/debug) need a kubelet and are
# skipped with that reason; so are kind, k3d, skopeo, ctr, oc and shell commands on a node.

DOCS_NODES=(worker-1 worker-2)

_docs_dir() { echo "$CP_RUN_DIR/docs"; }

# The monitoring.coreos.com/v1 API a kube-prometheus-stack install brings (the docs' monitoring
# install needs it): CRDs whose schemas are tests/chart/schemas (the same field schemas the chart
# test validates the rendered objects with), $refs inlined, integer-or-string as Kubernetes
# spells it.
_docs_monitoring_crds() {
	python3 - tests/chart/schemas <<'PY'
import json, os, sys
d = sys.argv[1]
def inline(node, defs):
    if isinstance(node, dict):
        if "$ref" in node:
            return inline(defs[node["$ref"].split("/")[-1]], defs)
        if node.get("anyOf") == [{"type": "integer"}, {"type": "string"}]:
            return {"x-kubernetes-int-or-string": True}
        out = {}
        for k, v in node.items():
            if k in ("$schema", "title", "$comment", "definitions", "additionalProperties") and not isinstance(v, dict):
                continue
            if k in ("$schema", "title", "$comment", "definitions"):
                continue
            out[k] = inline(v, defs)
        return out
    if isinstance(node, list):
        return [inline(v, defs) for v in node]
    return node
docs = []
for f, kind, plural in (("servicemonitor", "ServiceMonitor", "servicemonitors"),
                        ("podmonitor", "PodMonitor", "podmonitors"),
                        ("prometheusrule", "PrometheusRule", "prometheusrules")):
    s = json.load(open(os.path.join(d, f + ".json")))
    schema = inline(s, s.get("definitions", {}))
    schema["properties"].pop("metadata", None)
    schema["properties"].pop("apiVersion", None)
    schema["properties"].pop("kind", None)
    schema["required"] = [r for r in schema.get("required", []) if r not in ("apiVersion", "kind", "metadata")]
    docs.append({"apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
                 "metadata": {"name": f"{plural}.monitoring.coreos.com"},
                 "spec": {"group": "monitoring.coreos.com", "scope": "Namespaced",
                          "names": {"kind": kind, "plural": plural, "singular": kind.lower(),
                                    "listKind": kind + "List"},
                          "versions": [{"name": "v1", "served": True, "storage": True,
                                        "schema": {"openAPIV3Schema": schema}}]}})
print(json.dumps({"apiVersion": "v1", "kind": "List", "items": docs}))
PY
}

# --- stand-ins for the components the control plane lacks --------------------------------------

# _docs_standin_pass: one pass of the agent, scheduler and kubelet stand-ins.
_docs_standin_pass() {
	local node gen obs desired phase ns pod target
	# Agent: a ToaNodeState whose generation has no status yet gets what its agent reports.
	# "|"-separated: with a whitespace IFS, empty fields (no status yet) would collapse.
	while IFS='|' read -r node gen obs desired phase; do
		[ -n "$node" ] || continue
		if [ "$gen" != "$obs" ] || [ "$desired" != "$phase" ]; then
			if agent_report "$node" "$node" "$desired" >/dev/null 2>&1; then
				echo "$(date -u +%T) agent stand-in: $node reports $desired (generation $gen)"
			fi
		fi
	done < <(k get toanodestates -o json 2>/dev/null | jq -r '.items[] | [.metadata.name,
		(.metadata.generation | tostring), (.status.observedGeneration // "" | tostring),
		.spec.desiredState, (.status.phase // "")] | join("|")' || true)
	# Scheduler: DaemonSet pods name their node in a matchFields affinity.
	while IFS=$'\t' read -r ns pod target; do
		[ -n "$target" ] || continue
		if bind_pod "$ns" "$pod" "$target" 2>/dev/null; then
			echo "$(date -u +%T) scheduler stand-in: bound $ns/$pod to $target"
		fi
	done < <(k get pods -A -o json 2>/dev/null | jq -r '.items[] | select((.spec.nodeName // "") == "")
		| select(.metadata.deletionTimestamp == null)
		| [.metadata.namespace, .metadata.name,
		   (.spec.affinity.nodeAffinity.requiredDuringSchedulingIgnoredDuringExecution.nodeSelectorTerms[0].matchFields[0].values[0] // "")]
		| @tsv' || true)
	# Kubelet: a bound pod being deleted is gone once its (never started) containers are.
	while IFS=$'\t' read -r ns pod; do
		[ -n "$pod" ] || continue
		if k -n "$ns" delete pod "$pod" --grace-period=0 --force >/dev/null 2>&1; then
			echo "$(date -u +%T) kubelet stand-in: confirmed deletion of $ns/$pod"
		fi
	done < <(k get pods -A -o json 2>/dev/null | jq -r '.items[] | select((.spec.nodeName // "") != "")
		| select(.metadata.deletionTimestamp != null) | [.metadata.namespace, .metadata.name] | @tsv' || true)
	return 0
}

_docs_standins_start() {
	(
		set +e
		while :; do
			_docs_standin_pass
			sleep 1
		done
	) >>"$CP_RUN_DIR/logs/docs-standins.log" 2>&1 &
	echo "$!" >"$CP_RUN_DIR/pids/docs-standins.pid"
}

# _docs_uninstall_hook: the pre-delete hook Job that `helm uninstall` creates and waits for:
# its command runs as a host process with the Job's ServiceAccount token (as its pod would),
# then the Job gets the status the job controller writes when its pod succeeded.
_docs_uninstall_hook() {
	local dir job=$CP_RELEASE-uninstall token args=() now deadline
	dir=$(_docs_dir)/hook
	mkdir -p "$dir"
	chmod 755 "$dir"
	deadline=$(($(date +%s) + 60))
	until k -n "$CP_NAMESPACE" get job "$job" -o json >"$dir/job.json" 2>/dev/null; do
		[ "$(date +%s)" -lt "$deadline" ] || {
			echo "hook stand-in: no Job $job appeared within 60s" >&2
			return 1
		}
		sleep 0.5
	done
	jq -r '.spec.template.spec.containers[0].args[]' "$dir/job.json" >"$dir/args"
	token=$(cp_sa_token "$(jq -r '.spec.template.spec.serviceAccountName' "$dir/job.json")" "$CP_NAMESPACE" 10m)
	cp_kubeconfig_for_token "$token" "$dir/kubeconfig"
	chown 65532:65532 "$dir/kubeconfig"
	chmod 600 "$dir/kubeconfig"
	mapfile -t args < <(sed "s/\$(POD_NAMESPACE)/$CP_NAMESPACE/g" "$dir/args")
	echo "hook stand-in: the Job's pod runs: toa-operator ${args[*]}"
	setpriv --reuid 65532 --regid 65532 --clear-groups --inh-caps=-all --bounding-set=-all --no-new-privs \
		env -i PATH=/usr/bin:/bin KUBECONFIG="$dir/kubeconfig" POD_NAMESPACE="$CP_NAMESPACE" RUST_LOG=info \
		"$CP_RUN_DIR/operator/toa-operator" "${args[@]}"
	now=$(date -u +%FT%TZ)
	k -n "$CP_NAMESPACE" patch job "$job" --subresource=status --type=merge -p "$(jq -cn --arg now "$now" '{status: {
		startTime: $now, completionTime: $now, succeeded: 1,
		conditions: [{type: "SuccessCriteriaMet", status: "True", lastProbeTime: $now, lastTransitionTime: $now},
			{type: "Complete", status: "True", lastProbeTime: $now, lastTransitionTime: $now}]}}')" >/dev/null
	echo "hook stand-in: Job $job complete"
}

# --- running the docs' commands ------------------------------------------------------------------

# docs_command FILE PREFIX: the first command of FILE (docs_commands.py plan, placeholders
# filled) that starts with PREFIX; fails when the doc has none.
docs_command() {
	local dir
	dir=$(_docs_dir)
	mkdir -p "$dir"
	if [ ! -s "$dir/plan.jsonl" ]; then
		helm install "$CP_RELEASE" charts/toa-operator --namespace "$CP_NAMESPACE" --dry-run=client >"$dir/notes.txt"
		python3 tests/chart/docs_commands.py plan "$PWD" "$dir/notes.txt" >"$dir/plan.jsonl"
	fi
	jq -rn --arg f "$1:" --arg p "$2" \
		'first(inputs | select((.where | startswith($f)) and (.command | startswith($p)))) | .command' \
		"$dir/plan.jsonl" | grep .
}

# _docs_run ITEM_JSON: runs one planned command as written (bash, in a directory holding the
# repo's charts/ and crds/ and the files the docs tell users to write), with its heredoc as stdin.
_docs_run() {
	local item=$1 dir cmd verb stdin_file rc=0 hook_pid=""
	dir=$(_docs_dir)
	cmd=$(jq -r .command <<<"$item")
	echo "\$ $cmd"
	if [ "$(jq -r '.file // empty | .path' <<<"$item")" != "" ]; then
		jq -r .file.content <<<"$item" >"$dir/work/$(jq -r .file.path <<<"$item")"
		echo "(the doc's YAML block above it saved as $(jq -r .file.path <<<"$item"))"
	fi
	if [ "$(jq -r '.apply_first // empty' <<<"$item")" != "" ]; then
		echo "(the doc's policy applied first, as it says)"
		jq -r .apply_first <<<"$item" | k apply -f -
	fi
	stdin_file=$dir/stdin
	jq -r '.stdin // ""' <<<"$item" >"$stdin_file"
	verb=$(awk '{print $1" "$2}' <<<"$cmd")
	if [ "$verb" = "helm uninstall" ]; then
		_docs_uninstall_hook >"$dir/hook.log" 2>&1 &
		hook_pid=$!
	fi
	(cd "$dir/work" && timeout 180 bash -o pipefail -c "$cmd" <"$stdin_file") >"$dir/out" 2>&1 || rc=$?
	head -n 40 "$dir/out"
	if [ "$(wc -l <"$dir/out")" -gt 40 ]; then echo "... ($(($(wc -l <"$dir/out") - 40)) more lines)"; fi
	if [ -n "$hook_pid" ]; then
		wait "$hook_pid" || {
			echo "the uninstall hook stand-in failed:"
			cat "$dir/hook.log"
			return 1
		}
		cat "$dir/hook.log"
	fi
	if [ "$rc" -eq 124 ]; then
		echo "$(jq -r .where <<<"$item"): still running after 180s" >&2
		return 1
	elif [ "$rc" -ne 0 ]; then
		echo "$(jq -r .where <<<"$item"): exit $rc" >&2
		return "$rc"
	fi
	case "$cmd" in
	"helm install "*"--dry-run"*) ;;
	"helm install "*)
		# The Deployment's pods: the operator as host processes.
		op_prepare "$OPERATOR_BIN"
		op_start 0
		op_start 1
		wait_until 60 "a replica holds the lease" has_leader
		echo "(operator replicas started from the installed Deployment; leader: replica $(op_leader))"
		;;
	"helm upgrade "*)
		op_prepare "$OPERATOR_BIN"
		op_stop 0 TERM
		op_start 0
		op_stop 1 TERM
		op_start 1
		wait_until 60 "a replica holds the lease" has_leader
		echo "(operator replicas rolled to the upgraded Deployment)"
		;;
	"helm uninstall "*)
		op_stop 0 TERM
		op_stop 1 TERM
		echo "(operator replicas stopped: the Deployment is gone)"
		;;
	"kubectl apply "* | "kubectl patch toapolicy "* | "kubectl label node "*)
		# What the docs show next (kubectl get ...) is the converged state.
		sleep 2
		wait_until 60 "every ToaNodeState reported for its generation" _docs_settled
		;;
	esac
}

# _docs_settled: every ToaNodeState has its agent's report for its current generation.
_docs_settled() {
	k get toanodestates -o json | jq -e '[.items[] | select(.status.observedGeneration != .metadata.generation
		or .status.phase != .spec.desiredState)] | length == 0' >/dev/null
}

# _docs_expect WHERE COMMAND OUTPUT_FILE: what a command's output must show in the state the
# docs describe at that point, beyond its exit status.
_docs_expect() {
	local where=$1 cmd=$2 out=$3 want="" unwanted=""
	case "$cmd" in
	"kubectl get toapolicies"*) want='^NAME +SELECTED +LOADED +FAILED +CONFLICTING +READY +REASON' ;;
	"kubectl get toanodestates"*)
		# With no policy left (after `kubectl delete toapolicies --all`): "wait until none is
		# Loaded"; before that, worker-1 is Loaded.
		if [ -z "$(k get toapolicies -o name)" ]; then unwanted=' Loaded '; else want='^worker-1 +[a-z-]+ +Loaded '; fi
		;;
	"kubectl get toanodestate worker-1 -o yaml") want='^  phase: Loaded$' ;;
	"kubectl get toanodestate worker-1 -o jsonpath='{.status.phase} "*) want='^Loaded [0-9A-F]+ Built$' ;;
	"kubectl get toanodestate worker-1 -o jsonpath='{.status.module.parameters}"*) want='"ipv4_kinds":"200"' ;;
	"kubectl -n toa-system get pods -o name "*"spec.nodeName=worker-1") want='^pod/toa-node-agent-' ;;
	"kubectl -n toa-system get pods -o wide "*) want='toa-node-agent-.* worker-' ;;
	"kubectl -n toa-system get lease toa-operator-leader") want='^toa-operator-leader +toa-operator-replica-' ;;
	"kubectl -n toa-system get daemonset toa-node-agent") want='^toa-node-agent +2 ' ;;
	"kubectl delete toapolicies --all")
		# "unloads the module": the operator told worker-1's agent to unload before the
		# policies went (the agent stand-in logs each report it makes).
		if ! grep -q 'agent stand-in: worker-1 reports Unloaded' "$CP_RUN_DIR/logs/docs-standins.log"; then
			echo "$where: worker-1 was never told to unload (spec.desiredState Unloaded)" >&2
			return 1
		fi
		echo "(worker-1 was told to unload and reported Unloaded before its policy went)"
		;;
	esac
	if [ -n "$want" ] && ! grep -qE -- "$want" "$out"; then
		echo "$where: the output lacks /$want/ (what the doc says it shows at this point)" >&2
		return 1
	fi
	if [ -n "$unwanted" ] && grep -qE -- "$unwanted" "$out"; then
		echo "$where: the output still shows /$unwanted/" >&2
		return 1
	fi
	if [ -n "$want$unwanted" ]; then echo "(output as the doc describes: ${want:+/$want/}${unwanted:+no /$unwanted/})"; fi
}

# _docs_clean_cluster: after docs/upgrading.md's removal steps nothing of toa-operator is left.
check_docs_clean_cluster() {
	local left
	left=$(k get crd -o name | grep -F '.toa.dev' || true)
	left+=$(k get all,configmaps,serviceaccounts,roles,rolebindings,leases,jobs -n "$CP_NAMESPACE" -o name |
		grep -v -e '^configmap/kube-root-ca.crt$' -e '^serviceaccount/default$' || true)
	left+=$(k get clusterroles,clusterrolebindings,validatingadmissionpolicies,validatingadmissionpolicybindings \
		-l app.kubernetes.io/part-of=toa-operator -o name)
	left+=$(k get nodes -l toa.dev/agent -o name)
	expect_eq "objects of toa-operator left after the documented removal" "$left" ""
	echo "the removal as docs/upgrading.md writes it left: CRDs none, release objects none, node labels none"
	echo "(the TOA module and the agent build cache live on the nodes, outside the cluster: docs/upgrading.md says how to remove them)"
}

_docs_setup() {
	local dir
	dir=$(_docs_dir)
	# The NOTES of the release the docs install (release toa-operator in toa-system).
	helm install "$CP_RELEASE" charts/toa-operator --namespace "$CP_NAMESPACE" --dry-run=client >"$dir/notes.txt"
	python3 tests/chart/docs_commands.py plan "$PWD" "$dir/notes.txt" >"$dir/plan.jsonl"
	echo "plan: $(grep -c . "$dir/plan.jsonl") commands and snippets that talk to a cluster"
	# The docs' nodes, as kubelets register them (worker-2 is an ingress node: the README's
	# example policy selects those).
	cp_create_node worker-1 "$KERNEL_61" "$OS_IMAGE"
	cp_create_node worker-2 "$KERNEL_612" "$OS_IMAGE" node-role.kubernetes.io/ingress=
	# kube-prometheus-stack's CRDs, which the docs' monitoring install needs first.
	_docs_monitoring_crds | k apply --server-side -f -
	k wait --for condition=Established --timeout 30s crd/servicemonitors.monitoring.coreos.com \
		crd/podmonitors.monitoring.coreos.com crd/prometheusrules.monitoring.coreos.com
}

docs_checks() {
	local dir item action where cmd reason n_run=0 n_pass=0 n_fail=0 n_skip=0 n_cov=0 n_snip=0
	local -A skip_reasons=()
	dir=$(_docs_dir)
	mkdir -p "$dir/work"
	ln -sfn "$PWD/charts" "$dir/work/charts"
	ln -sfn "$PWD/crds" "$dir/work/crds"
	export OP_BIND_AS_CHART=1
	local before=$H_FAIL
	check "docs: plan, the docs' nodes worker-1 and worker-2, kube-prometheus-stack's CRDs" _docs_setup
	if [ "$H_FAIL" -ne "$before" ]; then
		unset OP_BIND_AS_CHART
		return 0
	fi
	_docs_standins_start
	while IFS= read -r item; do
		action=$(jq -r .action <<<"$item")
		where=$(jq -r .where <<<"$item")
		cmd=$(jq -r .command <<<"$item")
		case $action in
		run)
			n_run=$((n_run + 1))
			local before=$H_FAIL
			check "docs $where: $cmd" _docs_run_and_expect "$item"
			if [ "$H_FAIL" -gt "$before" ]; then n_fail=$((n_fail + 1)); else n_pass=$((n_pass + 1)); fi
			if [ "$cmd" = "helm install $CP_RELEASE charts/toa-operator --namespace $CP_NAMESPACE" ]; then
				check "docs: the installed release's NOTES are the ones whose commands run here" \
					_docs_same_notes "$dir/notes.txt"
				check "docs/README.md: one release per cluster, a second one is refused at install" \
					_docs_second_release_refused
				check "docs/configuration.md: the operator on the chart's default listen address answers on IPv4 and IPv6" \
					_docs_dual_stack
			fi
			;;
		policy)
			n_snip=$((n_snip + 1))
			n_run=$((n_run + 1))
			local before=$H_FAIL
			check "docs $where: ToaPolicy $(jq -r .name <<<"$item") (YAML block) accepted by the apiserver (kubectl apply --dry-run=server)" \
				_docs_policy_dry_run "$item"
			if [ "$H_FAIL" -gt "$before" ]; then n_fail=$((n_fail + 1)); else n_pass=$((n_pass + 1)); fi
			;;
		covered)
			n_cov=$((n_cov + 1))
			echo "covered $where: $cmd (the same command ran at $(jq -r .of <<<"$item"))"
			;;
		skip)
			n_skip=$((n_skip + 1))
			reason=$(jq -r .reason <<<"$item")
			skip_reasons[$reason]=$((${skip_reasons[$reason]:-0} + 1))
			echo "SKIP $where: $cmd: $reason"
			if [ "$(jq -r '.check // empty' <<<"$item")" != "" ]; then
				check "docs $where: what the command names exists: $(jq -r .check <<<"$item")" \
					bash -c "$(jq -r .check <<<"$item")"
			fi
			;;
		*)
			fail_check "docs $where" "unknown plan action $action"
			;;
		esac
	done <"$dir/plan.jsonl"
	check "docs: helm uninstall plus the documented steps (docs/upgrading.md) leave a clean cluster" \
		check_docs_clean_cluster
	# A failed step above can leave the release behind: remove it for the groups that follow.
	if helm status "$CP_RELEASE" --namespace "$CP_NAMESPACE" >/dev/null 2>&1; then
		echo "docs: the release is still installed (a documented step failed): removing it for the next groups"
		helm uninstall "$CP_RELEASE" --namespace "$CP_NAMESPACE" --no-hooks --wait=false >/dev/null || true
	fi
	op_stop 0 TERM
	op_stop 1 TERM
	k delete toapolicies --all --wait=false >/dev/null 2>&1 || true
	for p in $(k get toapolicies -o name 2>/dev/null); do
		k patch "$p" --type=json -p '[{"op":"remove","path":"/metadata/finalizers"}]' >/dev/null 2>&1 || true
	done
	k delete crd toapolicies.toa.dev toanodestates.toa.dev --ignore-not-found >/dev/null
	cp_kill docs-standins TERM
	unset OP_BIND_AS_CHART
	k delete node "${DOCS_NODES[@]}" --wait=false >/dev/null
	k delete crd servicemonitors.monitoring.coreos.com podmonitors.monitoring.coreos.com \
		prometheusrules.monitoring.coreos.com >/dev/null
	echo "docs: $n_run commands and snippets of the docs ran against the real control plane (kube-apiserver $CP_K8S_VERSION):" \
		"$n_pass passed, $n_fail failed ($n_snip of them YAML snippets applied with --dry-run=server);" \
		"$n_cov more were the same state-changing command as one that ran (covered); $n_skip skipped:"
	for reason in "${!skip_reasons[@]}"; do
		echo "  ${skip_reasons[$reason]} x $reason"
	done
}

# _docs_second_release_refused: docs/README.md says a second release is refused at install (the
# chart looks the first one up in the cluster, which only a real install can do).
_docs_second_release_refused() {
	local out rc=0
	grep -n 'a second one is refused at install' docs/README.md
	out=$(helm install toa-second charts/toa-operator --namespace toa-second --create-namespace 2>&1) || rc=$?
	echo "$out" | tail -n 3
	k delete namespace toa-second --ignore-not-found --wait=false >/dev/null
	if [ "$rc" -eq 0 ]; then
		helm uninstall toa-second --namespace toa-second --no-hooks >/dev/null || true
		echo "a second release was installed beside $CP_RELEASE" >&2
		return 1
	fi
	grep -q "toa-operator is already installed in this cluster (Deployment $CP_NAMESPACE/$CP_RELEASE-operator, release \"$CP_RELEASE\")" <<<"$out"
}

# _docs_dual_stack: docs/configuration.md says the operator listens on `::` by default, which
# accepts IPv4 too. The replicas run with the Deployment's own --metrics-addr (OP_BIND_AS_CHART).
_docs_dual_stack() {
	local r pid port addr
	# shellcheck disable=SC2016 # the backquotes are the doc's
	grep -n 'listen on `::` by default' docs/configuration.md
	for r in 0 1; do
		pid=$(cp_pid "operator-$r")
		port=$(op_port "$r")
		addr=$(tr '\0' '\n' <"/proc/$pid/cmdline" | sed -n 's/^--metrics-addr=//p')
		expect_eq "replica $r --metrics-addr (the chart's default host)" "$addr" "[::]:$port"
		curl -fsS "http://127.0.0.1:$port/healthz" >/dev/null
		curl -fsS -g "http://[::1]:$port/healthz" >/dev/null
		echo "replica $r: /healthz answers on 127.0.0.1:$port and [::1]:$port"
	done
}

_docs_run_and_expect() {
	local cols
	_docs_run "$1"
	_docs_expect "$(jq -r .where <<<"$1")" "$(jq -r .command <<<"$1")" "$(_docs_dir)/out"
	# The columns the doc's comment names ("# Policy / Phase / Reason"), in that order.
	cols=$(jq -r '.columns // [] | join(" +")' <<<"$1")
	if [ -n "$cols" ]; then
		if ! head -n 1 "$(_docs_dir)/out" | grep -qE "(^| )$cols( |\$)"; then
			echo "$(jq -r .where <<<"$1"): the doc names the columns /$cols/; kubectl prints: $(head -n 1 "$(_docs_dir)/out")" >&2
			return 1
		fi
		echo "(columns as the doc's comment names them: $cols)"
	fi
}

_docs_same_notes() {
	helm get notes "$CP_RELEASE" --namespace "$CP_NAMESPACE" >"$(_docs_dir)/notes-installed.txt"
	# helm install --dry-run prints the manifests, then NOTES:
	diff -B <(sed -n '/^NOTES:$/,$p' "$1") "$(_docs_dir)/notes-installed.txt"
}

_docs_policy_dry_run() {
	jq -r .stdin <<<"$1" | k apply --dry-run=server -f -
}
