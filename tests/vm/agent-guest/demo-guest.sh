# The demo, inside the guest: the real agent builds and loads the module, a simulated
# balancer (toatest over TUN, balancer 10.0.0.2) connects to a small server in the guest
# with the client's real address in a TOA option, and we print what the server saw.
. /agent-test/common.sh

say() { printf '\n== %s\n' "$*"; }
show_conns() { # show_conns TOATEST-OUTPUT
	# `conn I accept=A getpeername=P getsockname=L getsockopt=S` (S may contain spaces).
	awk '/^conn [0-9]+ / {
		for (i = 3; i <= NF; i++) { split($i, kv, "="); v[kv[1]] = substr($i, length(kv[1]) + 2) }
		so = substr($0, index($0, "getsockopt=") + 11)
		printf "   connection %s: accept() -> %-22s getpeername() -> %-22s getsockopt(TOA_SO_GET_LOOKUP) -> %s\n", $2, v["accept"], v["getpeername"], so
	}' <<<"$1"
}

say "kernel $(uname -r), $(. /etc/os-release && echo "$PRETTY_NAME"); balancer 10.0.0.2, real client 203.0.113.7:4242 and [2001:db8::7]:4242"

say "before: no TOA module; the server sees the balancer"
show_conns "$(toatest conn --count 2 2>&1 || true)"

say "starting toa-node-agent (standalone, desired state Loaded): it builds the module for this kernel and loads it"
write_desired Loaded "module:" "  ipv4OptionKinds: [200]" "  nat64OptionKinds: [253]" "  trustedSources: [10.0.0.0/16]"
start_agent
if t=$(wait_phase Loaded 900); then
	echo "   Loaded after ${t}s"
else
	echo "   agent did not reach Loaded: phase $(status_field .phase) $(status_field .reason): $(status_field .message)"
	tail -n 20 "$AGENT_LOG" | sed 's/^/   agent: /'
	echo "DEMO-FAILED"
	exit 1
fi

say "after: IPv4 clients behind the balancer (TOA kind 200): the server sees the real address"
v4=$(toatest conn --count 3 2>&1)
show_conns "$v4"
say "NAT64: an IPv6 client (TOA kind 253), read with getsockopt(TOA_SO_GET_LOOKUP)"
n6=$(toatest conn --count 1 --nat64 2001:db8::7 2>&1)
show_conns "$n6"
for _ in $(seq 1 50); do
	[ "$(stat_sum ip6_address_free)" = "$(stat_sum ip6_address_alloc)" ] && break
	sleep 0.1
done

say "node state (the agent's status file $STATUS)"
jq -M . "$STATUS"

say "metrics (curl $METRICS/metrics | grep ^toa_)"
scrape | grep '^toa_' | grep -v '_bucket{'

say "agent log (last lines)"
tail -n 6 "$AGENT_LOG" | sed 's/^/   /'
stop_agent || true
if grep -q "3 of 3 connections showed the real address" <<<"$v4" &&
	grep -q "1 of 1 connections showed the real address" <<<"$n6"; then
	echo "DEMO-OK"
else
	echo "DEMO-FAILED"
	exit 1
fi
