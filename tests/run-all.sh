#!/usr/bin/env bash
# Runs every test suite of toa-operator, installing what each needs, and prints one summary.
#
#   tests/run-all.sh            every suite (see default_suites below)
#   tests/run-all.sh rust chart only the named suites (rust fuzz kmod ebpf agent buildroot upgrade chart cluster scale e2e fresh)
#   TOA_DEPS_ONLY=1 tests/run-all.sh   only each suite's dependency step (what it installs)
#
# Each suite runs even when an earlier one failed, so one run shows every problem: that is why
# this file has no `set -e`. Every step here checks its own status instead (the suites
# themselves run with set -euo pipefail). The last line is the total over every suite:
# `N passed, M failed`.
set -uo pipefail
shopt -s inherit_errexit
cd "$(dirname "$0")/.." || exit 2
# shellcheck source=tests/lib/deps.sh
source tests/lib/deps.sh

all_suites=(rust fuzz kmod ebpf agent buildroot upgrade chart cluster scale e2e fresh)
# Without arguments: every suite. `fresh` runs last: the README's demo with empty caches in a
# new Debian root, the fuzz suite there and every suite's dependency step there (steps
# `demo fuzz deps`; `tests/fresh/run.sh` alone also runs the kmod suite on 6.1 there). It is
# the longest suite on a warm machine (a cold release build of the agent), so the others
# report first. `scale` is the 1,000-node smoke of the scale benchmark
# (tests/cluster/scale.sh N measures). `upgrade` is the agent's kernel-upgrade scenario (one
# node disk booted with 6.1, then 6.12: two cold builds, so its own entry).
default_suites=(rust fuzz kmod ebpf agent buildroot upgrade chart cluster scale e2e fresh)
suites=("$@")
[ ${#suites[@]} -eq 0 ] && suites=("${default_suites[@]}")

log_dir=${TOA_TEST_LOG_DIR:-}
if [ -z "$log_dir" ]; then
	log_dir=$(mktemp -d /tmp/toa-tests.XXXXXX) || exit 2
fi
mkdir -p "$log_dir" || exit 2
total_pass=0
total_fail=0
summary=()

# count_cargo LOG: sums the `test result:` lines of cargo test.
count_cargo() {
	awk '/^test result:/ { for (i = 1; i <= NF; i++) { if ($(i+1) ~ /^passed/) p += $i; if ($(i+1) ~ /^failed/) f += $i } }
	     END { printf "%d %d\n", p, f }' "$1"
}

# count_plain LOG: the last `N passed, M failed` line a suite printed.
count_plain() {
	grep -E '^([A-Za-z-]+: )?[0-9]+ passed, [0-9]+ failed' "$1" | tail -n 1 |
		sed -E 's/^([A-Za-z-]+: )?([0-9]+) passed, ([0-9]+) failed.*/\2 \3/'
}

run_suite() {
	local name=$1
	shift
	local log="$log_dir/$name.log" start rc pass fail counts
	echo "=== suite $name: $*"
	start=$(date +%s)
	"$@" 2>&1 | tee "$log"
	local statuses=("${PIPESTATUS[@]}")
	rc=${statuses[0]}
	# A log that could not be written cannot be counted: that is a failure of its own.
	if [ "${statuses[1]}" -ne 0 ] && [ "$rc" -eq 0 ]; then rc=1; fi
	if [ "$name" = rust ] && [ "${TOA_DEPS_ONLY:-0}" != 1 ]; then counts=$(count_cargo "$log"); else counts=$(count_plain "$log"); fi
	read -r pass fail <<<"${counts:-0 0}"
	pass=${pass:-0}
	fail=${fail:-0}
	# A suite that exits non-zero without reporting a failed test still counts as one failure.
	if [ "$rc" -ne 0 ] && [ "$fail" -eq 0 ]; then fail=1; fi
	total_pass=$((total_pass + pass))
	total_fail=$((total_fail + fail))
	summary+=("$(printf '%-6s %4s passed %3s failed  exit %-3s %5ss' "$name" "$pass" "$fail" "$rc" $(($(date +%s) - start)))")
}

# What the Rust suite installs before first use.
rust_needs() {
	need_apt build-essential pkg-config
	need_rust_components clippy rustfmt
}

rust_suite() {
	# toa_deps_step exits its shell under TOA_DEPS_ONLY=1: run it in this suite's subshell.
	(toa_deps_step rust_needs) || return 1
	[ "${TOA_DEPS_ONLY:-0}" = 1 ] && return 0
	cargo fmt --all --check &&
		cargo clippy --workspace --all-targets --locked -- -D warnings &&
		cargo test --workspace --locked --no-fail-fast
}

for s in "${suites[@]}"; do
	case "$s" in
	rust) run_suite rust rust_suite ;;
	fuzz) run_suite fuzz bash kmod/fuzz/run.sh 30 ;;
	kmod) run_suite kmod bash tests/vm/kmod.sh ;;
	ebpf) run_suite ebpf bash tests/vm/ebpf.sh ;;
	agent) run_suite agent bash tests/vm/agent.sh ;;
	buildroot) run_suite buildroot bash tests/buildroot/local.sh ;;
	upgrade) run_suite upgrade bash tests/vm/agent.sh --upgrade ;;
	chart) run_suite chart bash tests/chart/check.sh ;;
	cluster) run_suite cluster bash tests/cluster/run.sh ;;
	scale) run_suite scale bash tests/cluster/scale.sh --smoke ;;
	e2e) run_suite e2e bash tests/e2e/run.sh ;;
	fresh) run_suite fresh bash tests/fresh/run.sh demo fuzz deps ;;
	*)
		echo "unknown suite '$s': choose from ${all_suites[*]}" >&2
		exit 2
		;;
	esac
done

echo "=== summary (logs in $log_dir)"
printf '%s\n' "${summary[@]}"
echo "${total_pass} passed, ${total_fail} failed"
[ "$total_fail" -eq 0 ]
