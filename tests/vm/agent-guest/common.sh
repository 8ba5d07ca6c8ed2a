# Guest-side helpers shared by suite.sh and demo.sh (sourced, bash).
AGENT=/usr/local/bin/toa-node-agent
DESIRED=/etc/toa/desired.yaml
STATUS=/run/toa/status.json
CACHE=/var/lib/toa-operator/cache
MODSRC=/usr/share/toa-node-agent/kmod
METRICS=http://127.0.0.1:9101
AGENT_LOG=/run/toa/agent.log
AGENT_PID=
mkdir -p /etc/toa /run/toa

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

start_agent() {
	rm -f "$STATUS"
	echo "--- agent start $(date -u +%T)" >>"$AGENT_LOG"
	"$AGENT" --desired "$DESIRED" --status-file "$STATUS" --module-src "$MODSRC" \
		--cache-dir "$CACHE" --metrics-addr 127.0.0.1:9101 --poll-interval 1 \
		--build-timeout 900 --unload-timeout 30 "$@" >>"$AGENT_LOG" 2>&1 &
	AGENT_PID=$!
	AGENT_T0=$(now)
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

scrape() { curl -sf "$METRICS/metrics"; }

# metric NAME_WITH_LABELS FILE: value of one sample line
metric() { awk -v n="$1" '$1 == n { print $2 }' "$2"; }

# stat_sum NAME: sum over CPUs of one /proc/net/toa_stats row (independent of the agent)
stat_sum() {
	awk -v n="$1" '{ k = $1; sub(/:$/, "", k) } k == n { s = 0; for (i = 2; i <= NF; i++) if ($i != ":") s += $i; print s }' /proc/net/toa_stats
}

loads_logged() { dmesg | grep -c 'toa load success'; }
unloads_logged() { dmesg | grep -c 'TOA unloaded'; }
