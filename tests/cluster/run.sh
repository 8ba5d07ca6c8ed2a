#!/usr/bin/env bash
# The whole product against a real Kubernetes control plane: kube-apiserver,
# kube-controller-manager and etcd built from Go modules (cached by version), started on
# 127.0.0.1 with TLS, Node+RBAC authorization, ValidatingAdmissionPolicy, the ServiceAccount
# token issuer and an audit log; the chart installed with real helm; the operator as host
# processes with the chart ServiceAccount's tokens (two replicas). Nodes are Node objects made
# by hand, and QEMU guests running the real agent when tests/cluster/lib/nodes.sh provides them.
#
#   tests/cluster/run.sh                 every check
#   CLUSTER_CHECKS='crds invalid' ...    only the named groups (see `groups` below)
#   CLUSTER_CHECKS=docs ...              the docs' commands on the fresh cluster (lib/docs.sh)
#   CLUSTER_KEEP=1                       leave the run dir (logs, audit log) in place
#   CLUSTER_LONG_OUTAGE=1                the outages group adds a 5-minute apiserver outage
#
# Ends with `N passed, M failed`.
set -euo pipefail
shopt -s inherit_errexit
cd "$(dirname "$0")/../.."

suite_t0=$(date +%s)
# shellcheck source=tests/lib/deps.sh
source tests/lib/deps.sh
# shellcheck source=tests/cluster/lib/harness.sh
source tests/cluster/lib/harness.sh
# shellcheck source=tests/cluster/lib/controlplane.sh
source tests/cluster/lib/controlplane.sh
# shellcheck source=tests/cluster/lib/operator.sh
source tests/cluster/lib/operator.sh
# shellcheck source=tests/cluster/lib/checks.sh
source tests/cluster/lib/checks.sh
# shellcheck source=tests/cluster/lib/lifecycle.sh
source tests/cluster/lib/lifecycle.sh
# shellcheck source=tests/cluster/lib/docs.sh
source tests/cluster/lib/docs.sh
# shellcheck source=tests/cluster/lib/realworld.sh
source tests/cluster/lib/realworld.sh
# QEMU-guest nodes and Prometheus (the nodes part of the suite): they define `nodes_checks`.
TOA_REPO_DIR=$PWD
export TOA_REPO_DIR
for f in tests/cluster/lib/nodes.sh tests/cluster/lib/prometheus.sh tests/cluster/scenarios-nodes.sh; do
	# shellcheck source=/dev/null
	if [ -f "$f" ]; then source "$f"; fi
done

# What this suite installs before first use: its libraries' lists (control plane, guest nodes,
# Prometheus) and the checks' own tools. The control plane itself is built (and cached) by
# cp_build below, not here. TOA_DEPS_ONLY=1 runs only this step.
cluster_needs() {
	need_apt jq openssl curl python3
	# The docs group's plan (tests/chart/docs_commands.py) reads the docs' YAML snippets.
	need_pip pyyaml
	need_k8s_tools
	cp_needs
	nodes_needs
	prom_needs
}
toa_deps_step cluster_needs

groups=${CLUSTER_CHECKS:-docs crds invalid install policy exclusion isolation agents leadership faults outages upgrade nodes uninstall}
want() { [[ " $groups " == *" $1 "* ]]; }
# The groups that work on the suite's own install (all but docs, which installs and removes
# the chart with the docs' own commands first, on the fresh cluster).
release_groups=false
for g in crds invalid install policy exclusion isolation agents leadership faults outages upgrade nodes uninstall; do
	if want "$g"; then release_groups=true; fi
done

t0=$(date +%s)
cp_build
echo "timing: control-plane build ($CP_BUILD_KIND) $(($(date +%s) - t0))s"
if [ "$CP_BUILD_KIND" = warm ] && [ -f "$CP_BIN/BUILD-TIME" ]; then
	echo "timing: control-plane build (cold, recorded when it was built) $(cat "$CP_BIN/BUILD-TIME")"
fi

t0=$(date +%s)
cargo build --locked -p toa-operator --bin toa-operator
echo "timing: operator build $(($(date +%s) - t0))s"
OPERATOR_BIN=$PWD/target/debug/toa-operator

t0=$(date +%s)
cp_start
echo "timing: control-plane start $(($(date +%s) - t0))s"
if [ -n "${CLUSTER_KEEP:-}" ]; then
	echo "run dir kept: $CP_RUN_DIR"
else
	trap 'cp_stop; rm -rf "$CP_RUN_DIR"' EXIT
fi

if want docs; then
	t0=$(date +%s)
	docs_checks
	echo "timing: docs group $(($(date +%s) - t0))s"
fi
if ! $release_groups; then
	echo "timing: suite $(($(date +%s) - suite_t0))s"
	harness_summary
	[ "$H_FAIL" -eq 0 ]
	exit
fi
if want crds; then
	check crds-apply-without-warnings check_crds_apply_without_warnings
fi
# Before helm install: the CRDs of an earlier version with objects stored under them, then the
# CRD step of docs/upgrading.md (helm install then finds the upgraded CRDs in place).
if want upgrade; then
	check crd-upgrade-over-stored-objects check_crd_upgrade_over_stored_objects
fi
check helm-install check_helm_install
# Before the operator runs (the ToaNodeState examples would be orphans it deletes).
if want invalid; then
	for f in crds/examples/invalid/*.yaml; do
		check "invalid-refused/$(basename "$f" .yaml)" check_invalid_example "$f"
	done
fi
op_prepare "$OPERATOR_BIN"
check operators-elect-a-leader check_operators_elect_a_leader
if want upgrade; then
	check crd-upgraded-objects-reconciled check_crd_upgraded_objects_reconciled
fi

if want policy; then
	check policy-selects-nodes check_policy_selects_nodes
	check agents-report-loaded check_agents_report_loaded
	check agent-token-confined-to-its-node check_agent_token_confined_to_its_node
	check get-columns check_get_columns
	check node-joining-later-is-picked-up check_node_joining_later_is_picked_up
	check priority-and-conflict check_priority_and_conflict
	check selector-change-unloads-deselected-node check_selector_change_unloads_deselected_node
	check node-deletion-gcs-its-state check_node_deletion_gcs_its_state
	check policy-deletion-unloads-and-releases check_policy_deletion_unloads_and_releases
	check on-delete-keep check_on_delete_keep
	check unload-timeout-warns-naming-nodes check_unload_timeout_warns_naming_nodes
fi
if want exclusion; then
	check excluded-nodes-are-counted-not-selected check_excluded_nodes_are_counted_not_selected
fi
if want isolation; then
	check refused-write-stays-with-its-policy check_refused_write_stays_with_its_policy
fi
if want agents; then
	check refused-agent-pods-reach-the-policy check_refused_agent_pods_reach_the_policy
fi
if want leadership; then
	check leader-sigkill-standby-takes-over check_leader_sigkill
	check leader-sigterm-hands-over-at-once check_leader_sigterm
	check leader-sigstop-no-write-after-takeover check_leader_sigstop
fi
if want faults; then
	check fault-apiserver-restart-mid-rollout check_fault_apiserver_restart
	check fault-etcd-stopped-30s check_fault_etcd_stopped
fi
if want outages; then
	check apiserver-outages-reconcile-and-fenced-writes check_apiserver_outages
fi
if want upgrade; then
	check helm-upgrade-in-place check_helm_upgrade
fi
if want nodes && declare -F nodes_checks >/dev/null; then
	nodes_checks
fi
if want uninstall; then
	check helm-uninstall-leaves-only-crds-and-crs check_helm_uninstall
	check reinstall-over-leftovers-converges check_reinstall
fi

echo "timing: suite $(($(date +%s) - suite_t0))s (control-plane build $CP_BUILD_KIND)"
harness_summary
[ "$H_FAIL" -eq 0 ]
