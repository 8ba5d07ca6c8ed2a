# shellcheck shell=bash
# Named checks for the cluster suite. `check NAME FUNCTION [ARGS...]` runs FUNCTION in a
# subshell with errexit on, prints `ok NAME` or `FAIL NAME` (with the function's output
# indented), and counts it. `harness_summary` prints the closing `N passed, M failed`.

H_PASS=0
H_FAIL=0
H_FAILED=()

check() {
	local name=$1 t0 rc
	shift
	t0=$(date +%s)
	echo "--- check $name"
	# A subshell keeps a failing check's state (set -e exits, cd, variables) out of the others.
	set +e
	(
		set -e
		"$@"
	) 2>&1 | sed -u 's/^/    /'
	rc=${PIPESTATUS[0]}
	set -e
	if [ "$rc" -eq 0 ]; then
		H_PASS=$((H_PASS + 1))
		echo "ok   $name ($(($(date +%s) - t0))s)"
	else
		H_FAIL=$((H_FAIL + 1))
		H_FAILED+=("$name")
		echo "FAIL $name (exit $rc, $(($(date +%s) - t0))s)"
	fi
	return 0
}

# skip_check NAME REASON: a check that cannot run here counts as failed, with its reason.
fail_check() {
	H_FAIL=$((H_FAIL + 1))
	H_FAILED+=("$1")
	echo "FAIL $1: $2"
}

# wait_until TIMEOUT_S DESCRIPTION COMMAND...: polls COMMAND every 0.5 s until it succeeds.
wait_until() {
	local timeout=$1 what=$2 deadline
	shift 2
	deadline=$(($(date +%s) + timeout))
	until "$@" >/dev/null 2>&1; do
		if [ "$(date +%s)" -ge "$deadline" ]; then
			echo "timed out after ${timeout}s waiting for: $what" >&2
			return 1
		fi
		sleep 0.5
	done
}

harness_summary() {
	if [ ${#H_FAILED[@]} -gt 0 ]; then
		echo "failed checks: ${H_FAILED[*]}"
	fi
	echo "${H_PASS} passed, ${H_FAIL} failed"
}
