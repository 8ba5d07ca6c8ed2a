#!/usr/bin/env bash
# Checks the Helm chart charts/toa-operator with real tools, offline:
#   helm lint --strict; helm template (default values, every optional feature on, PodMonitor
#   variant) for Kubernetes 1.31 (the chart's minimum) and the newest version kubernetes-validate knows; every manifest
#   validated (kubernetes-validate --strict; ours against the generated CRDs; prometheus-operator's
#   against tests/chart/schemas); values.schema.json rejects bad values; CRDs in the chart equal
#   the generated ones; CRD examples valid (and the invalid ones rejected); promtool check/test
#   rules with a firing and a non-firing case per alert; dashboard and alert PromQL parsed and
#   their metric names checked against the agent's real exposition
#   (tests/fixtures/agent-metrics.prom) and the operator's source; the agent-confining
#   ValidatingAdmissionPolicy's CEL evaluated; RBAC least privilege; docs' code examples compile;
#   the shared table of valid/invalid values (tests/chart/values-cases.yaml, the operator's tests
#   read it too); `helm upgrade --reuse-values` from releases lacking a value; the support matrix
#   against the suites and build files; every command and snippet of the docs run or checked
#   (tests/chart/docs_commands.py; those that need a cluster run as written against a real
#   control plane in `CLUSTER_CHECKS=docs tests/cluster/run.sh`); licenses.
#
#   tests/chart/check.sh                     (installs helm/kubectl, Python packages and promtool if missing)
#   tests/chart/check.sh --update-fixtures   also rewrites tests/fixtures/chart-agent-config.yaml
#
# Ends with `N passed, M failed`; exits non-zero when anything failed.
# No `set -e`: every check records its own PASS/FAIL and the script goes on to the next; the
# dependency step below stops the script when an install fails.
set -uo pipefail
shopt -s inherit_errexit
cd "$(dirname "$0")/../.." || exit 2
ROOT=$PWD
CHART=$ROOT/charts/toa-operator
HERE=$ROOT/tests/chart
FIXTURE=$ROOT/tests/fixtures/agent-metrics.prom
# The agent config as the chart renders it; the operator's tests parse it (AgentConfig::load).
AGENT_CONFIG_FIXTURE=$ROOT/tests/fixtures/chart-agent-config.yaml
UPDATE_FIXTURES=
case "${1:-}" in
--update-fixtures) UPDATE_FIXTURES=1 ;;
"") ;;
*)
	echo "usage: tests/chart/check.sh [--update-fixtures]" >&2
	exit 2
	;;
esac
# shellcheck source=/dev/null
source "$ROOT/tests/lib/deps.sh"

PASSED=0
FAILED=0
pass() {
	PASSED=$((PASSED + 1))
	echo "PASS $*"
}
fail() {
	FAILED=$((FAILED + 1))
	echo "FAIL $*"
}
# expect NAME CMD...: the command must succeed; its output is shown on failure.
expect() {
	local name=$1 out
	shift
	if out=$("$@" 2>&1); then pass "$name"; else
		fail "$name"
		printf '%s\n' "$out" | tail -n 30 | sed 's/^/    /'
	fi
}
# expect_fail NAME PATTERN CMD...: the command must fail, saying PATTERN (a grep -E regex).
expect_fail() {
	local name=$1 pattern=$2 out
	shift 2
	if out=$("$@" 2>&1); then
		fail "$name: succeeded but must fail"
	elif grep -qE "$pattern" <<<"$out"; then pass "$name"; else
		fail "$name: failed without saying /$pattern/"
		printf '%s\n' "$out" | tail -n 10 | sed 's/^/    /'
	fi
}
# py SUBCOMMAND ARGS...: runs chartcheck.py and counts its PASS/FAIL lines.
# tally OUT: prints OUT and counts its `PASS ` / `FAIL ` lines into PASSED / FAILED.
tally() {
	local line
	while IFS= read -r line; do
		case "$line" in
		"PASS "*) PASSED=$((PASSED + 1)) ;;
		"FAIL "*) FAILED=$((FAILED + 1)) ;;
		esac
		echo "$line"
	done <<<"$1"
}
py() {
	local out
	out=$(python3 "$HERE/chartcheck.py" "$@" 2>&1)
	tally "$out"
	grep -qE '^(PASS|FAIL) ' <<<"$out" || fail "chartcheck $1 printed no result: $out"
}

# What this suite installs before first use (rustc and cargo come with the machine's rustup).
chart_needs() {
	need_k8s_tools
	need_pip kubernetes-validate jsonschema promql-parser cel-python pyyaml
	need_apt prometheus shellcheck gcc libc6-dev tcpdump
}
echo "== dependencies"
toa_deps_step chart_needs
for tool in helm kubernetes-validate promtool shellcheck gcc tcpdump; do
	command -v "$tool" >/dev/null || fail "tool $tool is not installed (deps.sh could not install it)"
done

WORK=$(mktemp -d /tmp/toa-chart-check.XXXXXX)
trap 'rm -rf "$WORK"' EXIT
# The chart's kubeVersion minimum (docs/support.md; chartcheck.py support keeps them equal).
KVER_OLD=1.31.0
KVER_NEW=$(python3 -c 'import kubernetes_validate.utils as u; print(u.major_minor(u.latest_version()) + ".0")')
echo "== Kubernetes versions: $KVER_OLD and $KVER_NEW (newest that kubernetes-validate knows)"

echo "== helm lint"
expect "helm lint --strict (default values)" helm lint --strict "$CHART"
for kv in $KVER_OLD $KVER_NEW; do
	# The monitoring kinds need --api-versions, which lint lacks: lint the rest of values-all.
	expect "helm lint --strict (every optional feature but the monitoring CRDs, k8s $kv)" \
		helm lint --strict "$CHART" --kube-version "$kv" -f "$HERE/values-all.yaml" \
		--set metrics.monitor.enabled=false --set prometheusRule.enabled=false
done

expect "helm package" helm package "$CHART" -d "$WORK/pkg"
pkg_render=$(helm template toa "$WORK"/pkg/toa-operator-*.tgz 2>&1)
if grep -q '"uid": "toa-operator"' <<<"$pkg_render"; then
	pass "the packaged chart carries the dashboard (dashboards/ is not helmignored)"
else fail "the packaged chart renders no dashboard"; fi

echo "== helm template"
render() { # NAME KVER ARGS...
	local name=$1 kv=$2
	shift 2
	helm template toa "$CHART" --namespace toa-system --include-crds --kube-version "$kv" "$@" >"$WORK/$name.yaml"
}
declare -a RENDERS=()
for kv in $KVER_OLD $KVER_NEW; do
	expect "helm template default values (k8s $kv)" render "default-$kv" "$kv" && RENDERS+=("default-$kv")
	expect "helm template every optional feature, ServiceMonitor (k8s $kv)" render "all-$kv" "$kv" \
		-f "$HERE/values-all.yaml" --api-versions monitoring.coreos.com/v1 && RENDERS+=("all-$kv")
	expect "helm template every optional feature, PodMonitor (k8s $kv)" render "podmonitor-$kv" "$kv" \
		-f "$HERE/values-all.yaml" --set metrics.monitor.kind=PodMonitor --api-versions monitoring.coreos.com/v1 &&
		RENDERS+=("podmonitor-$kv")
done
expect "helm template with validatingAdmissionPolicy.enabled=true" \
	render vap-forced "$KVER_NEW" --set validatingAdmissionPolicy.enabled=true

count_kind() { grep -c "^kind: $2\$" "$WORK/$1.yaml"; }
expect "helm template with validatingAdmissionPolicy.enabled=false" \
	render vap-off "$KVER_NEW" --set validatingAdmissionPolicy.enabled=false
if [ "$(count_kind "default-$KVER_NEW" ValidatingAdmissionPolicy)" = 1 ] &&
	[ "$(count_kind "default-$KVER_OLD" ValidatingAdmissionPolicy)" = 1 ] &&
	[ "$(count_kind vap-off ValidatingAdmissionPolicy)" = 0 ]; then
	pass "ValidatingAdmissionPolicy rendered on $KVER_OLD and $KVER_NEW (auto), not with enabled=false"
else
	fail "ValidatingAdmissionPolicy switch: $(count_kind "default-$KVER_NEW" ValidatingAdmissionPolicy) on $KVER_NEW, $(count_kind "default-$KVER_OLD" ValidatingAdmissionPolicy) on $KVER_OLD, $(count_kind vap-off ValidatingAdmissionPolicy) with enabled=false"
fi
expect_fail "the chart refuses Kubernetes older than its minimum" "kubeVersion|incompatible" \
	helm template toa "$CHART" --kube-version 1.30.0
for k in ServiceMonitor PrometheusRule; do
	if [ "$(count_kind "default-$KVER_NEW" "$k")" = 0 ] && [ "$(count_kind "all-$KVER_NEW" "$k")" -ge 1 ]; then
		pass "$k only when asked for"
	else fail "$k rendering does not follow its switch"; fi
done
if [ "$(count_kind "podmonitor-$KVER_NEW" PodMonitor)" = 2 ] && [ "$(count_kind "podmonitor-$KVER_NEW" ServiceMonitor)" = 0 ]; then
	pass "metrics.monitor.kind=PodMonitor renders two PodMonitors and no ServiceMonitor"
else fail "PodMonitor variant renders the wrong scrape objects"; fi
if grep -q 'namespace: monitoring' <(sed -n '/name: toa-toa-operator-dashboard/,/^data:/p' "$WORK/all-$KVER_NEW.yaml"); then
	pass "dashboard.namespace places the dashboard ConfigMap"
else fail "dashboard.namespace ignored"; fi

echo "== values.schema.json and guard rails reject bad values"
expect_fail "schema rejects operator.logFormat=xml" "logFormat" helm template toa "$CHART" --set operator.logFormat=xml
expect_fail "schema rejects an unknown key" "additional properties" helm template toa "$CHART" --set agent.hostcachepath=/x
expect_fail "schema rejects a relative hostCachePath" "hostCachePath" helm template toa "$CHART" --set agent.hostCachePath=var/lib
expect_fail "schema rejects a bad scrape interval" "interval" helm template toa "$CHART" --set metrics.monitor.interval=30sec
expect_fail "schema rejects validatingAdmissionPolicy.enabled=maybe" "enabled" helm template toa "$CHART" --set validatingAdmissionPolicy.enabled=maybe
expect_fail "schema rejects a ratio above 1" "getnameEmptyRatio" helm template toa "$CHART" --set prometheusRule.getnameEmptyRatio=5
expect_fail "monitoring objects without the prometheus-operator API fail with the fix" "monitoring.coreos.com/v1" \
	helm template toa "$CHART" --set prometheusRule.enabled=true
expect_fail "ServiceMonitor without the agent Service fails with the fix" "agentService.enabled" \
	helm template toa "$CHART" --api-versions monitoring.coreos.com/v1 --set metrics.monitor.enabled=true --set metrics.agentService.enabled=false
expect_fail "serviceAccount.create=false without a name fails with the fix" "serviceAccount.agent.name" \
	helm template toa "$CHART" --set serviceAccount.agent.create=false

echo "== one table of valid and invalid values for chart and operator (tests/chart/values-cases.yaml)"
mkdir -p "$WORK/cases"
py values-cases "$CHART" "$HERE/values-cases.yaml" "$KVER_NEW" "$WORK/cases"

echo "== helm upgrade --reuse-values from a release that lacks a newer value"
if cmp -s "$CHART/values.yaml" "$CHART/files/default-values.yaml"; then
	pass "charts/toa-operator/files/default-values.yaml equals values.yaml (the defaults --reuse-values lacks)"
else
	fail "charts/toa-operator/files/default-values.yaml differs from values.yaml: cp charts/toa-operator/values.yaml charts/toa-operator/files/default-values.yaml"
fi
mkdir -p "$WORK/reuse"
py reuse-values "$CHART" "$KVER_NEW" "$WORK/reuse"

echo "== CRDs: the chart's crds/ equal the generated ones"
shopt -s nullglob
generated=("$ROOT"/crds/*.yaml)
if [ ${#generated[@]} -eq 0 ]; then
	fail "generated CRDs present in crds/*.yaml (the API crate's crdgen writes them)"
fi
for f in "${generated[@]}"; do
	b=$(basename "$f")
	if cmp -s "$f" "$CHART/crds/$b"; then pass "charts/toa-operator/crds/$b equals crds/$b"; else
		fail "charts/toa-operator/crds/$b differs from crds/$b or is missing: run cp crds/*.yaml charts/toa-operator/crds/"
	fi
done
for f in "$CHART"/crds/*; do
	[ -f "$ROOT/crds/$(basename "$f")" ] || fail "charts/toa-operator/crds/$(basename "$f") has no generated counterpart in crds/"
done
for name in toapolicies.toa.dev toanodestates.toa.dev; do
	if grep -q "name: $name\$" "$WORK/default-$KVER_NEW.yaml"; then pass "helm template --include-crds carries $name"; else
		fail "CRD $name missing from the chart"
	fi
done

echo "== manifests against Kubernetes schemas (kubernetes-validate --strict), CRDs and prometheus-operator schemas"
for r in "${RENDERS[@]}"; do
	kv=${r##*-}
	py k8s "$WORK/$r.yaml" "$kv" "$ROOT/crds" "$HERE/schemas"
done
# The schemas of the prometheus-operator kinds must be able to fail.
sed -e 's/sourceLabels:/sourceLabel:/' "$WORK/all-$KVER_NEW.yaml" >"$WORK/broken-monitor.yaml"
out=$(python3 "$HERE/chartcheck.py" k8s "$WORK/broken-monitor.yaml" "$KVER_NEW" "$ROOT/crds" "$HERE/schemas")
if grep -q '^FAIL .*ServiceMonitor.*sourceLabel' <<<"$out"; then
	pass "a ServiceMonitor with a misspelt field is rejected by its schema"
else fail "a ServiceMonitor with a misspelt field passed its schema"; fi
printf 'apiVersion: example.invalid/v1\nkind: Gadget\nmetadata:\n  name: x\n' >"$WORK/unknown-kind.yaml"
out=$(python3 "$HERE/chartcheck.py" k8s "$WORK/unknown-kind.yaml" "$KVER_NEW" "$ROOT/crds" "$HERE/schemas")
if grep -q '^FAIL .*Gadget' <<<"$out"; then
	pass "an unknown kind fails validation"
else fail "an unknown kind passed validation"; fi

echo "== CRD examples"
examples=("$ROOT"/crds/examples/*.yaml)
invalid=("$ROOT"/crds/examples/invalid/*.yaml "$HERE"/invalid-crs/*.yaml)
if [ ${#examples[@]} -eq 0 ]; then fail "examples present in crds/examples/"; else py crs "$ROOT/crds" "${examples[@]}"; fi
py crs "$ROOT/crds" --invalid "${invalid[@]}"
docs_md=("$ROOT"/docs/*.md)
if grep -l 'apiVersion: toa.dev/' "${docs_md[@]}" >/dev/null 2>&1; then
	# shellcheck disable=SC2046
	py crs "$ROOT/crds" $(grep -l 'apiVersion: toa.dev/' "${docs_md[@]}")
else fail "the docs show no ToaPolicy example"; fi

echo "== alerts (promtool)"
render rules "$KVER_NEW" --api-versions monitoring.coreos.com/v1 --set prometheusRule.enabled=true &&
	py rules "$WORK/rules.yaml" "$WORK/rules-out.yaml"
mkdir -p "$WORK/promtool"
cp "$WORK/rules-out.yaml" "$WORK/promtool/rules.yaml" 2>/dev/null
cp "$HERE/alerts.test.yaml" "$WORK/promtool/"
expect "promtool check rules" promtool check rules "$WORK/promtool/rules.yaml"
expect "promtool test rules (tests/chart/alerts.test.yaml)" promtool test rules "$WORK/promtool/alerts.test.yaml"
py alert-coverage "$WORK/promtool/rules.yaml" "$HERE/alerts.test.yaml"
# The unit tests must be able to fail: with a looser threshold the empty-ratio alert must not fire.
mkdir -p "$WORK/mutant"
render mutant "$KVER_NEW" --api-versions monitoring.coreos.com/v1 --set prometheusRule.enabled=true \
	--set prometheusRule.getnameEmptyRatio=0.9 && python3 "$HERE/chartcheck.py" rules "$WORK/mutant.yaml" "$WORK/mutant/rules.yaml" >/dev/null
cp "$HERE/alerts.test.yaml" "$WORK/mutant/"
expect_fail "promtool test rules catches a changed threshold" "FAILED" promtool test rules "$WORK/mutant/alerts.test.yaml"
# The alerts in the chart with every feature on (labels added) still load.
python3 "$HERE/chartcheck.py" rules "$WORK/all-$KVER_NEW.yaml" "$WORK/rules-all.yaml" >/dev/null
expect "promtool check rules (values-all: alertLabels, labels)" promtool check rules "$WORK/rules-all.yaml"

echo "== dashboard and alert queries against the agent's exposition and the operator's metrics"
if [ -f "$FIXTURE" ]; then
	out=$(promtool check metrics <"$FIXTURE" 2>&1)
	rc=$?
	# promtool exits 3 on lint findings (style notes) and 1 with "error while linting" on
	# unparsable input: only the latter fails here.
	if { [ $rc -ne 0 ] && [ $rc -ne 3 ]; } || grep -qi 'error while linting' <<<"$out"; then fail "promtool parses the agent exposition: $out"; else
		pass "promtool parses the agent exposition"
		if [ -n "$out" ]; then
			echo "    promtool lint notes (not failures):"
			while IFS= read -r line; do echo "      $line"; done <<<"$out"
		fi
	fi
fi
py queries "$WORK/all-$KVER_NEW.yaml" "$CHART/dashboards/toa-operator.json" "$FIXTURE" "$ROOT/operator/src"
mkdir -p "$WORK/dashboard"
py dashboard-tests "$CHART/dashboards/toa-operator.json" "$HERE/dashboard.test.yaml" "$WORK/dashboard/dashboard.test.yaml"
expect "promtool evaluates the dashboard's queries (tests/chart/dashboard.test.yaml)" \
	promtool test rules "$WORK/dashboard/dashboard.test.yaml"

echo "== ValidatingAdmissionPolicy CEL, RBAC, wiring"
py vap "$WORK/default-$KVER_NEW.yaml"
py vap "$WORK/all-$KVER_NEW.yaml"
py rbac "$WORK/default-$KVER_NEW.yaml"
py wiring "$WORK/default-$KVER_NEW.yaml"
py wiring "$WORK/all-$KVER_NEW.yaml"
py wiring "$WORK/podmonitor-$KVER_NEW.yaml"

echo "== the agent config the operator parses (tests/fixtures/chart-agent-config.yaml)"
agent_config_fixture() {
	echo "# The agent config file the chart renders with tests/chart/values-all.yaml (every field set)."
	echo "# Written by: tests/chart/check.sh --update-fixtures; check.sh fails when it is stale."
	echo "# The operator's tests parse it with AgentConfig::load, so chart and operator cannot drift."
	helm template toa "$CHART" --namespace toa-system -f "$HERE/values-all.yaml" --api-versions monitoring.coreos.com/v1 \
		--show-only templates/agent-config.yaml |
		python3 -c 'import sys, yaml; sys.stdout.write(yaml.safe_load(sys.stdin)["data"]["agent-config.yaml"])'
}
if [ -n "$UPDATE_FIXTURES" ]; then
	agent_config_fixture >"$AGENT_CONFIG_FIXTURE" && echo "updated $AGENT_CONFIG_FIXTURE"
fi
if cmp -s <(agent_config_fixture) "$AGENT_CONFIG_FIXTURE"; then
	pass "tests/fixtures/chart-agent-config.yaml is what the chart renders"
else
	fail "tests/fixtures/chart-agent-config.yaml is stale or missing: run tests/chart/check.sh --update-fixtures"
fi
if grep -rqs 'chart-agent-config.yaml' "$ROOT/operator/src" "$ROOT/operator/tests"; then
	pass "the operator's tests parse tests/fixtures/chart-agent-config.yaml"
else
	fail "no operator test reads tests/fixtures/chart-agent-config.yaml (AgentConfig::load must accept what the chart renders)"
fi

echo "== the operator binary accepts the Deployment's arguments and the agent config"
if cargo build -q -p toa-operator 2>"$WORK/cargo.log"; then
	python3 - "$WORK/default-$KVER_NEW.yaml" "$WORK" >"$WORK/operator-args" <<'PY'
import sys, yaml
docs = [d for d in yaml.safe_load_all(open(sys.argv[1])) if d]
dep = next(d for d in docs if d["kind"] == "Deployment")
cm = next(d for d in docs if d["kind"] == "ConfigMap" and "agent-config.yaml" in d.get("data", {}))
open(sys.argv[2] + "/agent-config.yaml", "w").write(cm["data"]["agent-config.yaml"])
for a in dep["spec"]["template"]["spec"]["containers"][0]["args"]:
    a = a.replace("$(POD_NAMESPACE)", "toa-system").replace("0.0.0.0:", "127.0.0.1:").replace("[::]:", "[::1]:")
    print(a.replace("/etc/toa-operator/agent-config.yaml", sys.argv[2] + "/agent-config.yaml"))
PY
	mapfile -t op_args <"$WORK/operator-args"
	# No cluster here: it must get past argument parsing and the config file, then fail to
	# connect (and say so), within seconds.
	out=$(RUST_BACKTRACE=0 KUBECONFIG=/nonexistent timeout 30 "$ROOT/target/debug/toa-operator" "${op_args[@]}" 2>&1)
	if grep -q 'connecting to the Kubernetes API' <<<"$out"; then
		pass "toa-operator starts with the chart's arguments and agent config (stops at: no cluster)"
	else
		fail "toa-operator rejects the chart's arguments or agent config: $(head -c 600 <<<"$out")"
	fi
else
	fail "cargo build -p toa-operator failed: $(tail -n 5 "$WORK/cargo.log")"
fi

echo "== NOTES.txt"
if notes=$(helm install toa "$CHART" --namespace toa-system --dry-run=client 2>&1); then
	for want in "pod-security.kubernetes.io/enforce=privileged" "kubectl get toapolicies" "kubectl get toanodestates" \
		"Before every upgrade apply" "helm show crds CHART | kubectl apply --server-side -f -"; do
		if grep -qF "$want" <<<"$notes"; then pass "NOTES.txt tells: $want"; else fail "NOTES.txt lacks: $want"; fi
	done
	# The ToaPolicy NOTES.txt tells users to apply must be valid.
	sed -n "/<<'POLICY'/,/^ *POLICY\$/p" <<<"$notes" | sed '1d;$d' | sed 's/^     //' >"$WORK/notes-policy.yaml"
	if [ -s "$WORK/notes-policy.yaml" ]; then py crs "$ROOT/crds" "$WORK/notes-policy.yaml"; else
		fail "NOTES.txt shows no ToaPolicy"
	fi
else fail "helm install --dry-run=client: $notes"; fi

echo "== the packaged chart's README and NOTES, alert runbooks, the support matrix"
mkdir -p "$WORK/pkg/x"
if tar -xzf "$WORK"/pkg/toa-operator-*.tgz -C "$WORK/pkg/x" &&
	helm install toa "$WORK"/pkg/toa-operator-*.tgz --namespace toa-system --dry-run=client >"$WORK/pkg-notes.txt" 2>&1; then
	py package-refs "$WORK/pkg/x/toa-operator" "$WORK/pkg-notes.txt"
else fail "unpack and dry-run the packaged chart: $(tail -n 3 "$WORK/pkg-notes.txt")"; fi
py runbooks "$WORK/rules.yaml" "$ROOT/docs/troubleshooting.md" "$ROOT/crds/toanodestates.yaml"
py support "$ROOT" "$KVER_OLD"

echo "== docs: every command and snippet (tests/chart/docs_commands.py)"
if helm install toa "$CHART" --namespace toa-system --dry-run=client >"$WORK/notes.txt" 2>&1; then
	mkdir -p "$WORK/docs"
	out=$(python3 "$HERE/docs_commands.py" run "$ROOT" "$WORK/docs" "$WORK/notes.txt" 2>&1)
	tally "$out"
	grep -q '^docs: ' <<<"$out" || fail "docs_commands.py printed no closing count"
else fail "helm install --dry-run=client for NOTES.txt: $(tail -n 3 "$WORK/notes.txt")"; fi

echo "== docs: code examples compile"
expect "docs/examples/toa_peer.c compiles (gcc -Wall -Wextra -Werror)" \
	gcc -std=c11 -Wall -Wextra -Werror -o "$WORK/toa_peer" "$ROOT/docs/examples/toa_peer.c"
if command -v rustc >/dev/null; then
	expect "docs/examples/toa_nat64_peer.rs compiles (rustc --edition 2021 -D warnings)" \
		rustc --edition 2021 -D warnings -o "$WORK/toa_nat64_peer_2021" "$ROOT/docs/examples/toa_nat64_peer.rs"
	expect "docs/examples/toa_nat64_peer.rs compiles (rustc --edition 2024 -D warnings, a default cargo new crate)" \
		rustc --edition 2024 -D warnings -o "$WORK/toa_nat64_peer" "$ROOT/docs/examples/toa_nat64_peer.rs"
else fail "rustc missing: cannot compile docs/examples/toa_nat64_peer.rs"; fi
if [ -x "$WORK/toa_peer" ]; then
	# Without the module the lookups must report "no TOA" rather than crash: run against loopback.
	expect "toa_peer runs on a plain loopback connection (self test)" "$WORK/toa_peer" --self-test
fi
if [ -x "$WORK/toa_nat64_peer" ]; then
	expect "toa_nat64_peer runs on a plain loopback connection (self test)" "$WORK/toa_nat64_peer" --self-test
fi
for f in "$ROOT"/docs/*.md "$ROOT/README.md"; do
	# Every relative link in the docs points to a file that exists.
	dead=$(grep -oE '\]\((\.\./|\./)?[A-Za-z0-9_./-]+(#[a-z0-9-]+)?\)' "$f" | sed -E 's/^\]\(//; s/\)$//; s/#.*//' |
		grep -vE '^(https?:|mailto:)' | while read -r l; do [ -e "$(dirname "$f")/$l" ] || echo "$l"; done)
	if [ -z "$dead" ]; then pass "links in docs/$(basename "$f") resolve"; else fail "docs/$(basename "$f") links to missing files: $dead"; fi
done

echo "== licenses (Apache-2.0 outside kmod/, GPL-2.0 in kmod/)"
if grep -q '^ *Apache License$' "$ROOT/LICENSE" && grep -q 'Version 2.0, January 2004' "$ROOT/LICENSE" &&
	grep -q 'outside kmod/' "$ROOT/LICENSE"; then
	pass "LICENSE: the Apache License 2.0 text, saying it covers everything outside kmod/"
else fail "LICENSE lacks the Apache License 2.0 text or the note on kmod/"; fi
if grep -q 'GNU GENERAL PUBLIC LICENSE' "$ROOT/kmod/LICENSE" && grep -q 'Version 2, June 1991' "$ROOT/kmod/LICENSE"; then
	pass "kmod/LICENSE: the GPL version 2 text"
else fail "kmod/LICENSE lacks the GPL version 2 text"; fi
mapfile -t kmod_src < <(git -C "$ROOT" ls-files 'kmod/*.c' 'kmod/*.h')
no_spdx=$(cd "$ROOT" && { grep -L 'SPDX-License-Identifier: GPL-2.0' "${kmod_src[@]}" || true; })
if [ ${#kmod_src[@]} -gt 0 ] && [ -z "$no_spdx" ] && grep -q 'MODULE_LICENSE("GPL")' "$ROOT"/kmod/*.c; then
	pass "every kmod/ source (${#kmod_src[@]}) says SPDX GPL-2.0; the module declares MODULE_LICENSE(\"GPL\")"
else fail "kmod/ sources without SPDX-License-Identifier: GPL-2.0 (or no MODULE_LICENSE): ${no_spdx:-none found}"; fi
if grep -qx 'license = "Apache-2.0"' "$ROOT/Cargo.toml" &&
	[ "$(grep -l 'license.workspace = true' "$ROOT"/{crds,operator,node-agent}/Cargo.toml | wc -l)" = 3 ]; then
	pass "the Rust crates declare Apache-2.0 (workspace license)"
else fail "Cargo.toml: the crates must declare license = \"Apache-2.0\" (workspace)"; fi

echo "== scripts"
expect "shellcheck tests/chart/check.sh images/build.sh" shellcheck -x "$HERE/check.sh" "$ROOT/images/build.sh"

echo "${PASSED} passed, ${FAILED} failed"
[ "$FAILED" -eq 0 ]
