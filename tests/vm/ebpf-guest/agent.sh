# shellcheck shell=dash
# Sourced by scenarios.sh (uses its ok/notok/check/check_fails/stat_of): the real
# toa-node-agent, standalone mode, desired backend EBPF. It attaches the eBPF backend from the
# shipped object (no compiler, no headers in the guest), reports Loaded with backend EBPF,
# serves the BPF counters on /metrics with backend="ebpf", adopts the pins after a restart,
# and detaches on Unloaded. Its self-test (a handshake through a TUN device in a private
# network namespace) passes against the eBPF backend. Backend Auto probes the node (programs
# verified, nothing attached, the probe's pins removed) and picks EBPF. Prints
# `# TOA-EBPF-NODE-READY Nms` (agent start to Loaded, self-test included).

AGENT_DIR=/tmp/agent
mkdir -p "$AGENT_DIR"
DESIRED=$AGENT_DIR/desired.yaml
STATUS=$AGENT_DIR/status.json
METRICS=http://127.0.0.1:9101/metrics

toa-ebpf detach >/dev/null 2>&1
# write_desired STATE [BACKEND [TRUSTED]]: the desired-state file (backend EBPF and the
# trusted network $TRUST unless given).
write_desired() {
	cat >"$DESIRED.tmp" <<EOT
desiredState: $1
backend: ${2:-EBPF}
module:
  trustedSources: ["${3:-$TRUST}"]
EOT
	mv "$DESIRED.tmp" "$DESIRED"
}
start_agent() {
	rm -f "$STATUS"
	toa-node-agent --desired "$DESIRED" --status-file "$STATUS" --poll-interval 1 \
		--ebpf-object "$OBJ" --cache-dir "$AGENT_DIR/cache" --module-src /nonexistent \
		--metrics-addr 127.0.0.1:9101 >>"$AGENT_DIR/agent.log" 2>&1 &
	agent_pid=$!
}
stop_agent() {
	kill "$agent_pid" 2>/dev/null
	wait "$agent_pid" 2>/dev/null
}
# wait_status TEXT POLLS: polls the status file every 50 ms until it contains the fixed string
# TEXT (true) or POLLS polls passed (false).
wait_status() {
	i=0
	while [ "$i" -lt "$2" ]; do
		if grep -qF -- "$1" "$STATUS" 2>/dev/null; then
			return 0
		fi
		sleep 0.05
		i=$((i + 1))
	done
	return 1
}
# wait_phase PHASE POLLS: polls the status file every 50 ms until its phase is PHASE (true) or
# POLLS polls passed (false; 600 polls = 30 s).
wait_phase() {
	i=0
	while [ "$i" -lt "$2" ]; do
		if grep -q "\"phase\": \"$1\"" "$STATUS" 2>/dev/null; then
			return 0
		fi
		sleep 0.05
		i=$((i + 1))
	done
	return 1
}
# scrape: the agent's /metrics, retried while its listener comes up.
scrape() {
	i=0
	while [ "$i" -lt 50 ]; do
		if wget -q -O - "$METRICS" 2>/dev/null; then
			return 0
		fi
		sleep 0.1
		i=$((i + 1))
	done
	return 1
}
metric_value() { awk -v m="$1" '$1 == m { print $2 }' "$AGENT_DIR/metrics.txt"; }

write_desired Loaded
t0=$(cut -d' ' -f1 /proc/uptime)
start_agent
if wait_phase Loaded 600; then
	t1=$(cut -d' ' -f1 /proc/uptime)
	ok "agent_ebpf_reports_Loaded"
	echo "# TOA-EBPF-NODE-READY $(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%d", (b - a) * 1000 }')ms"
else
	notok "agent_ebpf_reports_Loaded" "no phase Loaded in $STATUS after 30 s"
fi
sed 's/^/#   /' "$STATUS" 2>/dev/null
if grep -q '"backend": "EBPF"' "$STATUS" 2>/dev/null && grep -q '"message": "backend EBPF: eBPF backend attached in' "$STATUS"; then
	ok "agent_status_names_backend_EBPF"
else
	notok "agent_status_names_backend_EBPF" "status has no backend EBPF / message"
fi
if [ -e /sys/fs/bpf/toa/link_sockops ]; then
	ok "agent_pinned_the_backend"
else
	notok "agent_pinned_the_backend" "/sys/fs/bpf/toa/link_sockops missing"
fi
# The self-test ran against the eBPF backend: both handshakes (IPv4 accept/getpeername and
# NAT64 getsockopt 4096) saw the client the test's balancer sent.
flat=$(tr -d '\n ' <"$STATUS" 2>/dev/null)
case $flat in
*'"selfTest":{"result":"Passed"'*'"srcversion":"ebpf"'*) ok "agent_ebpf_self_test_passed" ;;
*) notok "agent_ebpf_self_test_passed" "no selfTest Passed for ebpf in the status" ;;
esac
case $flat in
*'[2001:db8::77]:40077'*) ok "agent_ebpf_self_test_checked_nat64" ;;
*) notok "agent_ebpf_self_test_checked_nat64" "the self-test message has no [2001:db8::77]:40077" ;;
esac
check agent_ebpf_rewrites toatest conn --count 2
check agent_ebpf_nat64_getsockopt toatest conn --count 1 --nat64 2001:db8::77
if scrape >"$AGENT_DIR/metrics.txt"; then
	ok "agent_metrics_scraped"
else
	notok "agent_metrics_scraped" "wget $METRICS failed"
fi
grep '^toa_getname_toa_ok_total\|^toa_getsockopt_ok_total\|^toa_module_loads_total' "$AGENT_DIR/metrics.txt" | sed 's/^/#   /'
want=$(stat_of getname_toa_ok)
got=$(metric_value 'toa_getname_toa_ok_total{backend="ebpf"}')
if [ -n "$got" ] && [ "$got" -ge 4 ] && [ "$got" = "$want" ]; then
	ok "agent_metric_getname_toa_ok_backend_ebpf"
else
	notok "agent_metric_getname_toa_ok_backend_ebpf" "toa_getname_toa_ok_total{backend=\"ebpf\"} is '${got}', the map says '${want}'"
fi
got=$(metric_value 'toa_getsockopt_ok_total{backend="ebpf"}')
if [ -n "$got" ] && [ "$got" -ge 1 ]; then
	ok "agent_metric_getsockopt_ok_backend_ebpf"
else
	notok "agent_metric_getsockopt_ok_backend_ebpf" "toa_getsockopt_ok_total{backend=\"ebpf\"} is '${got}'"
fi
if grep -q 'backend="module"' "$AGENT_DIR/metrics.txt"; then
	notok "agent_metrics_no_module_backend" "a backend=\"module\" series without a module"
else
	ok "agent_metrics_no_module_backend"
fi

# ---- only an IPv6 network trusted: the self-test runs over IPv6 transport (balancer
# fd00:10::1, the first address of the network, to the node 2001:db8::1 on an AF_INET6
# listener): the IPv4 client shows as ::ffff:, the NAT64 client is the peer itself.
write_desired Loaded EBPF fd00:10::/64
v6_peer='kind 200 over IPv6 from [fd00:10::1]: accept() and getpeername() returned [::ffff:192.0.2.77]:40077'
v6_nat64='kind 253 (NAT64) over IPv6 from [fd00:10::1]: getsockopt 4096 returned [2001:db8::77]:40077, accept() and getpeername() returned [2001:db8::77]:40077'
# The message and the result are written in one status: the IPv6 line, then Passed.
if wait_status 'trusted_sources=fd00:10::/64 ' 600 && wait_status "$v6_peer" 600 &&
	wait_status '"result": "Passed"' 1; then
	ok "agent_ebpf_self_test_ipv6_only_trust_passed"
else
	notok "agent_ebpf_self_test_ipv6_only_trust_passed" "$(cat "$STATUS" 2>/dev/null)"
fi
if grep -qF -- "$v6_peer" "$STATUS" && grep -qF -- "$v6_nat64" "$STATUS"; then
	ok "agent_ebpf_self_test_both_checks_over_ipv6"
else
	notok "agent_ebpf_self_test_both_checks_over_ipv6" "no '$v6_peer' / '$v6_nat64' in $(grep -F '"message"' "$STATUS" 2>/dev/null)"
fi
write_desired Loaded
if wait_status "trusted_sources=$TRUST " 600 && wait_status 'kind 200 over IPv4 from 10.0.0.1: accept() and getpeername() returned 192.0.2.77:40077' 600; then
	ok "agent_ebpf_self_test_back_over_ipv4"
else
	notok "agent_ebpf_self_test_back_over_ipv4" "$(cat "$STATUS" 2>/dev/null)"
fi
check agent_ebpf_restored_trust_rewrites toatest conn --count 1

# ---- agent restart: the pinned backend is adopted (no detach), connections still rewritten.
stop_agent
if [ -e /sys/fs/bpf/toa/link_sockops ]; then
	ok "agent_exit_leaves_the_backend_attached"
else
	notok "agent_exit_leaves_the_backend_attached" "pins gone after the agent exited"
fi
check agent_down_still_rewrites toatest conn --count 1
start_agent
if wait_phase Loaded 600 && grep -q 'adopted from its pins' "$STATUS"; then
	ok "agent_restart_adopts_the_pins"
else
	notok "agent_restart_adopts_the_pins" "$(cat "$STATUS" 2>/dev/null)"
fi

# ---- Unloaded: the agent detaches.
write_desired Unloaded
if wait_phase Unloaded 600 && grep -q 'eBPF backend detached' "$STATUS"; then
	ok "agent_unloaded_detaches"
else
	notok "agent_unloaded_detaches" "$(cat "$STATUS" 2>/dev/null)"
fi
if [ ! -e /sys/fs/bpf/toa ]; then
	ok "agent_detach_removes_pins"
else
	notok "agent_detach_removes_pins" "$(ls /sys/fs/bpf/toa)"
fi
check_fails agent_detached_no_rewrite "getpeername=10.0.0.2:" toatest conn --count 1

# ---- backend Auto: the agent probes this kernel, picks EBPF and says why.
write_desired Loaded Auto
if wait_phase Loaded 600 && grep -q '"backend": "EBPF"' "$STATUS" && grep -q 'Auto picked EBPF: this node runs it' "$STATUS"; then
	ok "agent_auto_picks_ebpf"
else
	notok "agent_auto_picks_ebpf" "$(cat "$STATUS" 2>/dev/null)"
fi
if [ ! -e /sys/fs/bpf/toa-probe ]; then
	ok "agent_auto_probe_leaves_no_pins"
else
	notok "agent_auto_probe_leaves_no_pins" "$(ls /sys/fs/bpf/toa-probe)"
fi
check agent_auto_rewrites toatest conn --count 1
write_desired Unloaded Auto
if wait_phase Unloaded 600 && [ ! -e /sys/fs/bpf/toa ]; then
	ok "agent_auto_unloaded_detaches"
else
	notok "agent_auto_unloaded_detaches" "$(cat "$STATUS" 2>/dev/null)"
fi
stop_agent
if grep -qi 'panicked\|error' "$AGENT_DIR/agent.log"; then
	echo "# agent log:"
	sed 's/^/#   /' "$AGENT_DIR/agent.log" | tail -n 40
fi
