# shellcheck shell=bash
# Guest-side helpers shared by suite.sh, upgrade.sh and demo.sh (sourced, bash).
AGENT=/usr/local/bin/toa-node-agent
DESIRED=/etc/toa/desired.yaml
STATUS=/run/toa/status.json
CACHE=/var/lib/toa-operator/cache
MODSRC=/usr/share/toa-node-agent/kmod
METRICS=http://127.0.0.1:9101
AGENT_LOG=/run/toa/agent.log
AGENT_PID=
mkdir -p /etc/toa /run/toa

# TAP lines of the guest suites (suite.sh, upgrade.sh), counted for their `N passed, M failed`.
PASS=0
FAIL=0
ok() { echo "ok - $1"; PASS=$((PASS + 1)); }
nok() { echo "not ok - $1: $2"; FAIL=$((FAIL + 1)); }
check() { # check NAME WHY COMMAND...
	local name=$1 why=$2
	shift 2
	if "$@"; then ok "$name"; else nok "$name" "$why"; fi
}
figure() { echo "# figure $1 $2"; }
dump_log() { tail -n 25 "$AGENT_LOG" | sed 's/^/#   agent: /'; }

now() { date +%s.%N; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.2f", b - a }'; }

write_desired() { # write_desired STATE [extra YAML lines...]
	local state=$1
	shift
	{
		echo "desiredState: $state"
		printf '%s\n' "$@"
	} >"$DESIRED.tmp"
	mv "$DESIRED.tmp" "$DESIRED"
}

# toarun=image (kernel command line): the agent runs from the agent image's root under the
# node's crun, with the runtime config generated from the operator's DaemonSet pod spec
# (host.sh); its args, mounts and cache directory are the pod's. Otherwise it runs directly.
BUNDLE=/var/lib/toa-image
start_agent() {
	rm -f "$STATUS"
	echo "--- agent start $(date -u +%T) (${toarun:-direct})" >>"$AGENT_LOG"
	if [ "${toarun:-direct}" = image ]; then
		start_agent_image
		return
	fi
	local no_root=()
	[ "${AGENT_OCI_CONFIG:-}" != nobuildroot ] || no_root=(--build-root=false)
	"$AGENT" --desired "$DESIRED" --status-file "$STATUS" --module-src "$MODSRC" \
		--cache-dir "$CACHE" --metrics-addr 127.0.0.1:9101 --poll-interval 1 \
		--build-timeout 900 --unload-timeout 30 "${no_root[@]}" "$@" >>"$AGENT_LOG" 2>&1 &
	AGENT_PID=$!
	AGENT_T0=$(now)
}

# The knob's build (KCFLAGS set) uses the config with its own host cache path and KCFLAGS;
# AGENT_OCI_CONFIG=NAME picks $BUNDLE/config-NAME.json (the upgrade scenario's cache ages;
# nobuildroot: agent.buildRoot false, which the direct path gets as --build-root=false).
start_agent_image() {
	local cfg=$BUNDLE/config-${AGENT_OCI_CONFIG:-default}.json d
	[ -z "${KCFLAGS:-}" ] || cfg=$BUNDLE/config-knob.json
	cp "$cfg" "$BUNDLE/config.json"
	# hostPath type DirectoryOrCreate: the kubelet creates these before the container starts.
	local dirs
	dirs=$(jq -r '.annotations["toa.dev/directory-or-create"] // ""' "$BUNDLE/config.json")
	while IFS= read -r d; do
		[ -z "$d" ] || mkdir -p "$d"
	done <<<"$dirs"
	touch /run/make-calls
	# --no-pivot: the guest's root is the initramfs (rootfs), which pivot_root cannot leave;
	# a node's runtime pivots. crun forwards SIGTERM to the agent and exits with its status.
	crun --root /run/crun run --no-pivot --bundle "$BUNDLE" toa-agent >>"$AGENT_LOG" 2>&1 &
	AGENT_PID=$!
	AGENT_T0=$(now)
}

# The agent's own pid (under crun: the container's process, not crun).
agent_pid() {
	if [ "${toarun:-direct}" = image ]; then pgrep -xo toa-node-agent; else echo "$AGENT_PID"; fi
}

stop_agent() { # returns the agent's exit status
	local rc=0
	[ -n "$AGENT_PID" ] || return 0
	kill -TERM "$AGENT_PID" 2>/dev/null
	wait "$AGENT_PID" || rc=$?
	AGENT_PID=
	return "$rc"
}

status_field() { jq -r "$1 // empty" "$STATUS" 2>/dev/null; }

# wait_phase PHASE TIMEOUT_S [GENERATION]: waits until the status file shows PHASE (and
# observedGeneration >= GENERATION); prints the seconds since the agent started.
wait_phase() {
	local want=$1 tmo=$2 gen=${3:-0} end p g next
	end=$(($(date +%s) + tmo))
	next=$(($(date +%s) + 30))
	while [ "$(date +%s)" -lt "$end" ]; do
		p=$(status_field .phase)
		g=$(status_field .observedGeneration)
		if [ "$p" = "$want" ] && [ "${g:-0}" -ge "$gen" ]; then
			since "$AGENT_T0"
			return 0
		fi
		# An agent (or its runtime) that exited will not get there.
		if [ -n "$AGENT_PID" ] && ! kill -0 "$AGENT_PID" 2>/dev/null; then
			echo "# the agent (pid $AGENT_PID) exited while waiting for $want" >&2
			return 1
		fi
		# A failure is final for the caller (a retry would come minutes later).
		if [ "$p" = Failed ] && [ "$want" != Failed ] && [ "${g:-0}" -ge "$gen" ]; then
			return 1
		fi
		if [ "$(date +%s)" -ge "$next" ]; then
			# Progress on the console (stderr: stdout is the caller's result).
			echo "# ... waiting for $want: phase ${p:-none} after $(since "$AGENT_T0")s" >&2
			next=$((next + 30))
		fi
		sleep 0.1
	done
	return 1
}

# expect_phase PHASE TIMEOUT_S NAME: a TAP line NAME for reaching PHASE; on failure it says
# where the agent stands and shows its log.
expect_phase() {
	if wait_phase "$1" "$2" >/dev/null; then ok "$3"; else
		nok "$3" "phase $(status_field .phase) $(status_field .reason): $(status_field .message)"
		dump_log
	fi
}

scrape() { curl -sf "$METRICS/metrics"; }

# metric NAME_WITH_LABELS FILE: value of one sample line
metric() { awk -v n="$1" '$1 == n { print $2 }' "$2"; }

# stat_sum NAME: sum over CPUs of one /proc/net/toa_stats row (independent of the agent)
stat_sum() {
	awk -v n="$1" '{ k = $1; sub(/:$/, "", k) } k == n { s = 0; for (i = 2; i <= NF; i++) if ($i != ":") s += $i; print s }' /proc/net/toa_stats
}

loads_logged() { dmesg | grep -c 'toa load success'; }
unloads_logged() { dmesg | grep -c 'TOA unloaded'; }
