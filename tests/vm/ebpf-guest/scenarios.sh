#!/bin/busybox sh
# shellcheck shell=dash
# Guest side of tests/vm/ebpf.sh: the TOA eBPF backend against real handshakes, driven by the
# module suite's own client (`toatest conn`, which plays the balancer through a TUN device and
# checks what accept/getpeername/getsockopt return) and the loader (`toa-ebpf`).
# Prints `ok - NAME` / `not ok - NAME: WHY`, `# ...` notes and `N passed, M failed`.
# No `set -e`: every step's status is judged and reported.

OBJ=/toa.bpf.o
PASS=0
FAIL=0
TRUST=10.0.0.0/24	# the balancer of toatest is 10.0.0.2; 10.0.5.2 is outside

ok() {
	echo "ok - $1"
	PASS=$((PASS + 1))
}
notok() {
	echo "not ok - $1: $2"
	FAIL=$((FAIL + 1))
}
# check NAME CMD...: ok when CMD exits 0; its output is shown as # lines either way.
check() {
	name=$1
	shift
	if out=$("$@" 2>&1); then
		ok "$name"
	else
		notok "$name" "\`$*\` failed"
	fi
	echo "$out" | sed 's/^/#   /'
}
# check_fails NAME WANT CMD...: ok when CMD exits non-zero (the address is NOT rewritten) and
# its output has WANT (what the application saw instead: the balancer's address), so that a
# handshake that failed for another reason does not pass.
check_fails() {
	name=$1
	want=$2
	shift 2
	if out=$("$@" 2>&1); then
		notok "$name" "\`$*\` succeeded, expected the balancer's address"
	else
		case $out in
		*"$want"*) ok "$name" ;;
		*) notok "$name" "\`$*\` failed without showing $want" ;;
		esac
	fi
	echo "$out" | sed 's/^/#   /'
}
stat_of() { toa-ebpf stats | awk -v n="$1" '$1 == n { print $2 }'; }
# expect_delta NAME COUNTER BEFORE WANT
expect_delta() {
	now=$(stat_of "$2")
	d=$((now - $3))
	if [ "$d" -eq "$4" ]; then
		ok "$1"
	else
		notok "$1" "$2 changed by $d, expected $4"
	fi
}
attach() { toa-ebpf attach --object "$OBJ" "$@"; }
# expect_so_error ERRNO TEXT BASE NEED OUT: `toatest conn` output OUT (which must contain
# NEED) shows getsockopt(4096) failing with ERRNO, whose strerror() is TEXT (check BASE +
# ERRNO); before 5.18 a program may only clear the error, so ENOPROTOOPT passes there (BASE +
# ENOPROTOOPT_before_5.18).
expect_so_error() {
	case $5 in
	*"$4"*"getsockopt=$2"*) ok "${3}$1" ;;
	*"$4"*"getsockopt=Protocol not available"*)
		if [ "$(uname -r | cut -d. -f1)" -lt 6 ] && [ "$(uname -r | cut -d. -f2)" -lt 18 ]; then
			ok "${3}ENOPROTOOPT_before_5.18"
		else
			notok "${3}$1" "$5"
		fi
		;;
	*) notok "${3}$1" "$5" ;;
	esac
}
expect_enoent() { expect_so_error ENOENT "No such file or directory" "$@"; }
# reattach ARGS...: new parameters for the scenarios that follow (they rely on them): a
# refusal is a failure of its own, with the loader's output, not a puzzle further down.
reattach() {
	if ! out=$(attach "$@" 2>&1); then
		notok "reattach" "toa-ebpf attach $*: $out"
	fi
}

mkdir -p /sys/fs/cgroup /sys/fs/bpf
mount -t cgroup2 none /sys/fs/cgroup || notok mount_cgroup2 "mount -t cgroup2 failed"
mount -t bpf bpf /sys/fs/bpf || notok mount_bpffs "mount -t bpf failed"

# ---- load: time from loader start to attached (busybox date has no sub-seconds: the
# loader measures itself, and the wall time around it is printed too).
t0=$(cut -d' ' -f1 /proc/uptime)
if out=$(RUST_LOG=toa_ebpf=debug attach --trusted-sources "$TRUST" 2>&1); then
	ok "load_and_attach"
else
	notok "load_and_attach" "$out"
	echo "$out" | sed 's/^/#   /'
	echo "$PASS passed, $FAIL failed"
	exit 1
fi
t1=$(cut -d' ' -f1 /proc/uptime)
echo "$out" | sed "s/^/# /"
echo "# TOA-EBPF-ATTACH-TIME loader=$(echo "$out" | sed -n 's/.* in \([0-9]*\) ms/\1/p')ms wall=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%d", (b - a) * 1000 }')ms"
case $out in *"Loaded in"*) ok "first_attach_reports_Loaded" ;; *) notok "first_attach_reports_Loaded" "$out" ;; esac
for p in toa_config toa_stats toa_sk link_sockops link_getpeername4 link_getpeername6 link_getsockopt; do
	[ -e "/sys/fs/bpf/toa/$p" ] || notok "pinned_$p" "/sys/fs/bpf/toa/$p missing"
done
ok "pins_checked"

# ---- IPv4 TOA, kind 200, on the SYN / on the final ACK; dual-stack listener.
b_ok=$(stat_of getname_toa_ok)
b_alloc=$(stat_of ip4_address_alloc)
b_toa=$(stat_of syn_recv_sock_toa)
b_syn=$(stat_of syn_pending_stored)
check ipv4_kind200_on_syn toatest conn --count 3 --where syn
expect_delta counters_syn_recv_sock_toa syn_recv_sock_toa "$b_toa" 3
expect_delta counters_ip4_address_alloc ip4_address_alloc "$b_alloc" 3
expect_delta counters_syn_pending_stored syn_pending_stored "$b_syn" 3
# accept() and getpeername() each rewrite: 2 per connection.
expect_delta counters_getname_toa_ok getname_toa_ok "$b_ok" 6
b_ack=$(stat_of ack_pending_stored)
check ipv4_kind200_on_ack toatest conn --count 2 --where ack
expect_delta counters_ack_pending_stored ack_pending_stored "$b_ack" 2
check dual_stack_v4_mapped toatest conn --count 2 --dual
check dual_stack_on_ack toatest conn --count 1 --dual --where ack

# ---- NAT64: getsockopt(IPPROTO_IP, 4096) returns the IPv6 client.
b_so=$(stat_of getsockopt_ok)
b_mis=$(stat_of getname_toa_mismatch)
check nat64_getsockopt toatest conn --count 2 --nat64 2001:db8::7
expect_delta counters_getsockopt_ok getsockopt_ok "$b_so" 2
expect_delta counters_getname_toa_mismatch getname_toa_mismatch "$b_mis" 4
check nat64_getsockopt_dual toatest conn --count 1 --nat64 2001:db8::9 --dual --where ack
# A connection without NAT64 entry: ENOENT on kernels >= 5.18 (ENOPROTOOPT before).
out=$(toatest conn --count 1 --addr 203.0.113.9 2>&1)
expect_enoent getsockopt_without_nat64_entry_is_ "" "$out"
# A length below struct toa_nat64_peer's 20 bytes: EINVAL, as from the module, and not counted
# (getsockopt_ok counts only the full-length call every accepted connection gets first).
b_so=$(stat_of getsockopt_ok)
b_soe=$(stat_of getsockopt_empty)
out=$(toatest conn --count 1 --nat64 2001:db8::7 --so-len 19 2>&1 || true)
echo "$out" | sed 's/^/#   /'
expect_so_error EINVAL "Invalid argument" nat64_getsockopt_short_length_is_ \
	"accept=10.0.0.2:" "$out"
expect_delta nat64_getsockopt_short_length_not_counted_ok getsockopt_ok "$b_so" 1
expect_delta nat64_getsockopt_short_length_not_counted_empty getsockopt_empty "$b_soe" 0

# ---- trust: a balancer outside trusted_sources is ignored and counted.
b_un=$(stat_of toa_untrusted)
check_fails untrusted_balancer_ignored "getpeername=10.0.5.2:" toatest conn --count 1 --balancer 10.0.5.2
expect_delta counters_toa_untrusted toa_untrusted "$b_un" 1

# ---- address sanity: loopback and multicast clients are refused.
b_ref=$(stat_of toa_refused_address)
check_fails refused_loopback "getpeername=10.0.0.2:" toatest conn --count 1 --addr 127.0.0.5
check_fails refused_multicast "getpeername=10.0.0.2:" toatest conn --count 1 --addr 224.1.2.3
expect_delta counters_toa_refused_address toa_refused_address "$b_ref" 2

# ---- malformed: a configured kind with the other type's length is counted, not used.
b_mal=$(stat_of toa_malformed)
check_fails malformed_ipv4_kind_with_length_20 "getpeername=10.0.0.2:" toatest conn --count 1 --kind 200 --nat64 2001:db8::5
check_fails malformed_nat64_kind_with_length_8 "getpeername=10.0.0.2:" toatest conn --count 1 --kind 253 --where ack
expect_delta counters_toa_malformed toa_malformed "$b_mal" 2

# ---- several options per segment (toatest conn --syn-opts/--ack-opts HEX), the module's
# rules (kmod/README.md "Which option wins"): A and B are valid kind-200 options, port 4242.
A=c8081092cb007107	# 203.0.113.7:4242
B=c8081092c6336409	# 198.51.100.9:4242
FILL=6320000000000000000000000000000000000000000000000000000000000000	# kind 99, 32 bytes
b_amb=$(stat_of toa_ambiguous)
check_fails duplicates_on_syn_rejected "getpeername=10.0.0.2:" toatest conn --count 1 --syn-opts "$A$B"
expect_delta counters_toa_ambiguous toa_ambiguous "$b_amb" 1
reattach --trusted-sources "$TRUST" --dup-rule first
check duplicates_dup_rule_first toatest conn --count 1 --syn-opts "$A$B" --addr 203.0.113.7
reattach --trusted-sources "$TRUST" --dup-rule last
check duplicates_dup_rule_last toatest conn --count 1 --syn-opts "$A$B" --addr 198.51.100.9
reattach --trusted-sources "$TRUST"
expect_delta counters_toa_ambiguous_only_for_reject toa_ambiguous "$b_amb" 1
b_ack=$(stat_of ack_pending_stored)
check syn_and_ack_the_ack_wins toatest conn --count 1 --syn-opts "$B" --ack-opts "$A" --addr 203.0.113.7
expect_delta counters_ack_wins_ack_pending_stored ack_pending_stored "$b_ack" 1
check syn_dup_ack_single_the_ack_wins toatest conn --count 1 --syn-opts "$A$B" --ack-opts "$B" --addr 198.51.100.9
check position_after_nops_and_unknown_kind toatest conn --count 1 --syn-opts "010101016304aabb$A" --addr 203.0.113.7
check position_last_bytes_of_the_syn toatest conn --count 1 --syn-opts "$FILL$A" --addr 203.0.113.7
check position_last_bytes_of_the_ack toatest conn --count 1 --ack-opts "$FILL$A" --addr 203.0.113.7
# A bad length with 5 or more option bytes from there on: 6.7+ kernels with TCP-AO drop the
# SYN in TCP (kmod/README.md "Kernel differences"), and the connection never exists.
dropped=0
malformed_before_toa() {
	name=$1
	shift
	out=$(toatest conn --count 1 "$@" 2>&1)
	case $out in
	*"getpeername=10.0.0.2:"*) ok "$name" ;;
	*"no SYN-ACK"*)
		if [ "$(uname -r | cut -d. -f1)" -ge 7 ] ||
			{ [ "$(uname -r | cut -d. -f1)" -eq 6 ] && [ "$(uname -r | cut -d. -f2)" -ge 7 ]; }; then
			ok "${name}_syn_dropped_by_tcp_on_6.7+"
			dropped=$((dropped + 1))
		else
			notok "$name" "the SYN was dropped on $(uname -r)"
		fi
		;;
	*) notok "$name" "\`toatest conn $*\` did not show the balancer's address" ;;
	esac
	echo "$out" | sed 's/^/#   /'
}
b_mal=$(stat_of toa_malformed)
malformed_before_toa malformed_length_past_the_end_before_the_toa --syn-opts "6330$A"
malformed_before_toa malformed_length_1_before_the_toa --syn-opts "6301$A"
check toa_before_malformed_structure_still_counts toatest conn --count 1 --syn-opts "${A}6301" --addr 203.0.113.7
expect_delta counters_toa_malformed_structure toa_malformed "$b_mal" $((3 - dropped))

# ---- IPv6 transport (the module suite's v6_* scenarios): the balancer fd00::2 talks IPv6 to
# the guest's fd00::1, AF_INET6 listeners (dual-stack 8081, IPV6_V6ONLY 8083). An IPv4 option
# shows as [::ffff:a.b.c.d], a NAT64 option (kind 253) as the IPv6 client itself, also from
# getsockopt(IPPROTO_IP, 4096). IPv6 balancers are matched against IPv6 trusted_sources only.
TRUST46="$TRUST,fd00::/120"
out=$(attach --trusted-sources "$TRUST46" 2>&1)
case $out in *"Adopted in"*) ok "v6_param_trusted_sources_ipv4_and_ipv6_balancers" ;; *) notok "v6_param_trusted_sources_ipv4_and_ipv6_balancers" "$out" ;; esac
b_ok=$(stat_of getname_toa_ok)
b_alloc4=$(stat_of ip4_address_alloc)
b_toa=$(stat_of syn_recv_sock_toa)
b_syn=$(stat_of syn_pending_stored)
b_ack=$(stat_of ack_pending_stored)
check v6_ipv4_kind200_syn_only_v4mapped toatest conn --count 2 --v6 --where syn
expect_delta v6_counters_syn_pending_stored syn_pending_stored "$b_syn" 2
check v6_ipv4_kind200_ack_only_v4mapped toatest conn --count 1 --v6 --where ack
expect_delta v6_counters_ack_pending_stored ack_pending_stored "$b_ack" 1
check v6_v6only_listener_ipv4_ack_v4mapped toatest conn --count 1 --v6only --where ack
expect_delta v6_counters_syn_recv_sock_toa syn_recv_sock_toa "$b_toa" 4
expect_delta v6_counters_ip4_address_alloc ip4_address_alloc "$b_alloc4" 4
expect_delta v6_counters_getname_toa_ok_v4mapped getname_toa_ok "$b_ok" 8
# An IPv4 entry over IPv6 transport: getsockopt has no NAT64 entry (ENOENT from 5.18).
out=$(toatest conn --count 1 --v6 2>&1)
expect_enoent v6_ipv4_entry_getsockopt_ "getpeername=[::ffff:203.0.113.7]:4242" "$out"
echo "$out" | sed 's/^/#   /'

b_ok=$(stat_of getname_toa_ok)
b_mis=$(stat_of getname_toa_mismatch)
b_alloc6=$(stat_of ip6_address_alloc)
b_so=$(stat_of getsockopt_ok)
check v6_nat64_kind253_syn_only_peer_is_ipv6_client toatest conn --count 2 --v6 --nat64 2001:db8::7
check v6_nat64_kind253_ack_only toatest conn --count 1 --v6 --nat64 2001:db8::8 --where ack
check v6_v6only_listener_nat64_syn toatest conn --count 1 --v6only --nat64 2001:db8::9
expect_delta v6_counters_ip6_address_alloc ip6_address_alloc "$b_alloc6" 4
expect_delta v6_counters_getsockopt_ok getsockopt_ok "$b_so" 4
expect_delta v6_counters_getname_toa_ok_nat64 getname_toa_ok "$b_ok" 8
expect_delta v6_counters_no_getname_toa_mismatch getname_toa_mismatch "$b_mis" 0
# Over IPv4 the same NAT64 entry still leaves getpeername alone (mismatch), as before.
b_mis=$(stat_of getname_toa_mismatch)
check nat64_over_ipv4_dual_stack_still_mismatch toatest conn --count 1 --nat64 2001:db8::a --dual
expect_delta counters_nat64_over_ipv4_mismatch getname_toa_mismatch "$b_mis" 2

b_empty=$(stat_of getname_toa_empty)
check_fails v6_no_option_dualstack_listener_balancer_address "getpeername=[fd00::2]:" toatest conn --count 1 --v6 --syn-opts ""
check_fails v6_no_option_v6only_listener_balancer_address "getpeername=[fd00::2]:" toatest conn --count 1 --v6only --syn-opts ""
expect_delta v6_counters_getname_toa_empty getname_toa_empty "$b_empty" 4

# several options over IPv6 (N: a kind-253 option, [2001:db8::77]:4242)
N=fd14109220010db8000000000000000000000077
b_amb=$(stat_of toa_ambiguous)
check_fails v6_duplicate_toa_default_reject_ambiguous_counted "getpeername=[fd00::2]:" toatest conn --count 1 --v6 --syn-opts "$A$B"
check_fails v6_duplicate_nat64_and_ipv4_default_reject "getpeername=[fd00::2]:" toatest conn --count 1 --v6 --ack-opts "$N$A"
expect_delta v6_counters_toa_ambiguous toa_ambiguous "$b_amb" 2
check v6_nat64_syn_and_ipv4_ack_ack_wins toatest conn --count 1 --v6 --syn-opts "$N" --ack-opts "$A" --addr 203.0.113.7
check v6_ipv4_syn_and_nat64_ack_ack_wins toatest conn --count 1 --v6 --syn-opts "$A" --ack-opts "$N" --addr 2001:db8::77
check v6_toa_last_bytes_of_the_syn toatest conn --count 1 --v6 --syn-opts "$FILL$A" --addr 203.0.113.7
check v6_nat64_after_nops_and_unknown_kind toatest conn --count 1 --v6only --syn-opts "010101016304aabb$N" --addr 2001:db8::77

b_mal=$(stat_of toa_malformed)
check_fails v6_malformed_wrong_length_kind253_len8 "getpeername=[fd00::2]:" toatest conn --count 1 --v6 --kind 253 --where ack
check_fails v6_malformed_wrong_length_kind200_len20 "getpeername=[fd00::2]:" toatest conn --count 1 --v6 --kind 200 --nat64 2001:db8::5
check_fails v6_malformed_len1_on_ack "getpeername=[fd00::2]:" toatest conn --count 1 --v6 --ack-opts "6301"
expect_delta v6_counters_toa_malformed toa_malformed "$b_mal" 3

b_ref=$(stat_of toa_refused_address)
check_fails v6_refused_ipv4_loopback "getpeername=[fd00::2]:" toatest conn --count 1 --v6 --addr 127.0.0.1
check_fails v6_refused_nat64_unspecified "getpeername=[fd00::2]:" toatest conn --count 1 --v6 --nat64 ::
check_fails v6_refused_nat64_loopback "getpeername=[fd00::2]:" toatest conn --count 1 --v6 --nat64 ::1
check_fails v6_refused_nat64_multicast "getpeername=[fd00::2]:" toatest conn --count 1 --v6 --nat64 ff02::1
check_fails v6_refused_nat64_v4mapped "getpeername=[fd00::2]:" toatest conn --count 1 --v6 --nat64 ::ffff:203.0.113.125
expect_delta v6_counters_toa_refused_address toa_refused_address "$b_ref" 5

# trust: IPv6 balancers against the IPv6 entries only, IPv4 ones against the IPv4 entries only.
b_un=$(stat_of toa_untrusted)
check_fails v6_untrusted_source_outside_ipv6_cidr_rejected "getpeername=[fd00::5:2]:" toatest conn --count 1 --v6 --balancer fd00::5:2 --nat64 2001:db8::7
check_fails v6_untrusted_source_ipv4_option_on_ack_rejected "getpeername=[fd00::5:2]:" toatest conn --count 1 --v6 --balancer fd00::5:2 --where ack
reattach --trusted-sources "$TRUST"
check_fails v6_ipv4_only_trusted_list_rejects_ipv6_balancer "getpeername=[fd00::2]:" toatest conn --count 1 --v6 --nat64 2001:db8::7
reattach --trusted-sources "fd00::/120"
check_fails ipv6_only_trusted_list_rejects_ipv4_balancer "getpeername=10.0.0.2:" toatest conn --count 1
check v6_ipv6_only_trusted_list_accepts_ipv6_balancer toatest conn --count 1 --v6 --nat64 2001:db8::7
expect_delta v6_counters_toa_untrusted toa_untrusted "$b_un" 4
reattach --trusted-sources "$TRUST,fd00::5:0/112"
check v6_trusted_ipv6_cidr_accepts_second_balancer toatest conn --count 1 --v6 --balancer fd00::5:2 --nat64 2001:db8::7
check_fails v6_first_balancer_outside_the_new_cidr_rejected "getpeername=[fd00::2]:" toatest conn --count 1 --v6 --nat64 2001:db8::7
reattach --accept-any-source
check v6_accept_any_source_accepts_any_ipv6_source toatest conn --count 1 --v6 --balancer fd00::9:2 --nat64 2001:db8::7

# ports scope over IPv6.
reattach --trusted-sources "$TRUST46" --ports 8083
check_fails v6_ports_listener_8081_out_of_scope_not_parsed "getpeername=[fd00::2]:" toatest conn --count 1 --v6 --nat64 2001:db8::7
check v6_ports_listener_8083_in_scope toatest conn --count 1 --v6only --nat64 2001:db8::7
reattach --trusted-sources "$TRUST46"

# ---- TCP_DEFER_ACCEPT (nginx `listen ... deferred`): the kernel drops the bare final ACK and
# makes the child from the first data segment. The SYN's option (saved SYN) is used; a bare
# ACK's option never reaches a BPF program (difference from the module, which keeps it), so
# the first data segment's options are walked in its place.
b_syn=$(stat_of syn_pending_stored)
check defer_accept_syn_toa_kept_until_data toatest conn --count 1 --defer --where syn
check v6_defer_accept_syn_toa_kept_until_data toatest conn --count 1 --defer --v6 --nat64 2001:db8:6::71 --where syn
expect_delta counters_defer_accept_syn_pending_stored syn_pending_stored "$b_syn" 2
check defer_accept_toa_on_the_first_data_segment toatest conn --count 1 --defer --syn-opts "" --data-opts "$A" --addr 203.0.113.7
check v6_defer_accept_toa_on_the_first_data_segment toatest conn --count 1 --defer --v6 --syn-opts "" --data-opts "$N" --addr 2001:db8::77
check_fails defer_accept_bare_ack_toa_not_seen_by_ebpf "getpeername=10.0.0.2:" toatest conn --count 1 --defer --where ack

# ---- TCP Fast Open: the child is made from the SYN (with data); its option is the SYN's
# (counted syn_pending_stored), the later ACK is a later segment (ignored), as in the module.
b_syn=$(stat_of syn_pending_stored)
b_ack=$(stat_of ack_pending_stored)
check tfo_syn_toa toatest conn --count 2 --tfo --where syn
check v6_tfo_nat64_syn_toa toatest conn --count 1 --tfo --v6 --nat64 2001:db8::7f
expect_delta counters_tfo_syn_pending_stored syn_pending_stored "$b_syn" 3
check_fails tfo_ack_only_toa_ignored "getpeername=10.0.0.2:" toatest conn --count 1 --tfo --where ack
expect_delta counters_tfo_no_ack_pending_stored ack_pending_stored "$b_ack" 0
# The SYN is walked once: a malformed option on it is counted once, not also from the saved SYN.
b_mal=$(stat_of toa_malformed)
check_fails tfo_malformed_syn "getpeername=10.0.0.2:" toatest conn --count 1 --tfo --kind 253
expect_delta counters_tfo_malformed_counted_once toa_malformed "$b_mal" 1
# ---- stress: 5 rounds of 200 handshakes in flight at once (TOA on the SYN, on the final ACK
# for every odd one), each round held open together, while a thread loops getpeername() on a
# TOA connection: every connection exact, the counters exact.
b_toa=$(stat_of syn_recv_sock_toa)
b_syn=$(stat_of syn_pending_stored)
b_ack=$(stat_of ack_pending_stored)
b_no=$(stat_of syn_recv_sock_no_toa)
check stress_1000_connections_200_in_flight_with_a_getpeername_loop toatest burst --count 200 --rounds 5
expect_delta stress_counters_syn_recv_sock_toa syn_recv_sock_toa "$b_toa" 1001
expect_delta stress_counters_syn_pending_stored syn_pending_stored "$b_syn" 501
expect_delta stress_counters_ack_pending_stored ack_pending_stored "$b_ack" 500
expect_delta stress_counters_no_syn_recv_sock_no_toa syn_recv_sock_no_toa "$b_no" 0
# Every entry of these sections was freed with its connection.
for t in ip4 ip6; do
	a=$(stat_of ${t}_address_alloc)
	f=$(stat_of ${t}_address_free)
	if [ "$a" -eq "$f" ]; then ok "${t}_alloc_equals_free_after_ipv6_defer_tfo_stress"; else notok "${t}_alloc_equals_free_after_ipv6_defer_tfo_stress" "alloc $a free $f"; fi
done
reattach --trusted-sources "$TRUST"

# ---- configurable kinds: adopt the pinned backend with new parameters.
out=$(attach --trusted-sources "$TRUST" --ipv4-kinds 254 --nat64-kinds 254 2>&1)
case $out in *"Adopted in"*) ok "second_attach_adopts_the_pins" ;; *) notok "second_attach_adopts_the_pins" "$out" ;; esac
check kind254_ipv4 toatest conn --count 1 --kind 254
check kind254_nat64 toatest conn --count 1 --kind 254 --nat64 2001:db8::254
check_fails kind200_no_longer_a_toa_kind "getpeername=10.0.0.2:" toatest conn --count 1 --kind 200

# ---- the SYN every Linux client sends (MSS, SACK permitted, timestamps, NOP, window scale)
# is not walked (toa.bpf.c) unless one of its kinds is a TOA kind: then, as in the module,
# that option is a TOA option with the wrong length, counted malformed.
STD_SYN=020405b40402080a000000010000000001030307
reattach --trusted-sources "$TRUST"
b_mal=$(stat_of toa_malformed)
check_fails standard_syn_no_toa "getpeername=10.0.0.2:" toatest conn --count 1 --syn-opts "$STD_SYN"
expect_delta standard_syn_nothing_malformed toa_malformed "$b_mal" 0
for k in 2 3 4 8; do
	for fam in ipv4 nat64; do
		if [ $fam = ipv4 ]; then
			reattach --trusted-sources "$TRUST" --ipv4-kinds "200,$k"
		else
			reattach --trusted-sources "$TRUST" --nat64-kinds "253,$k"
		fi
		b_mal=$(stat_of toa_malformed)
		check_fails "standard_syn_${fam}_kind${k}_configured_no_toa" "getpeername=10.0.0.2:" toatest conn --count 1 --syn-opts "$STD_SYN"
		expect_delta "standard_syn_${fam}_kind${k}_configured_malformed" toa_malformed "$b_mal" 1
	done
done
reattach --trusted-sources "$TRUST"

# ---- ports scope: only the listed local ports are parsed (toatest listens on 8080/8081).
reattach --trusted-sources "$TRUST" --ports 8081
check_fails port_out_of_scope "getpeername=10.0.0.2:" toatest conn --count 1
check port_in_scope toatest conn --count 1 --dual
reattach --trusted-sources "$TRUST"

# ---- agent restart / upgrade: open connections keep their address across an adoption and
# across a new load that reuses the maps pinned by name (one link pin lost: Repaired).
rm -f /tmp/go /tmp/held.log
toatest conn --count 3 --hold-until /tmp/go >/tmp/held.log 2>&1 &
held_pid=$!
i=0
while ! grep -q '^conn: ' /tmp/held.log 2>/dev/null && [ $i -lt 100 ]; do
	sleep 0.2
	i=$((i + 1))
done
out=$(attach --trusted-sources "$TRUST" 2>&1)
case $out in *"Adopted in"*) ok "adopt_with_open_connections" ;; *) notok "adopt_with_open_connections" "$out" ;; esac
rm -f /sys/fs/bpf/toa/link_getpeername6
out=$(attach --trusted-sources "$TRUST" 2>&1)
case $out in *"Repaired in"*) ok "lost_link_pin_is_repaired" ;; *) notok "lost_link_pin_is_repaired" "$out" ;; esac
touch /tmp/go
if wait "$held_pid"; then
	ok "open_connections_keep_their_address_across_adopt_and_reload"
else
	notok "open_connections_keep_their_address_across_adopt_and_reload" "$(tail -n 2 /tmp/held.log)"
fi
sed 's/^/#   /' /tmp/held.log

# ---- upgrade from a version whose toa_config had another layout (before the IPv6 entries:
# 8776-byte values): not adopted (its programs could not take these parameters) but loaded
# again (Repaired) with a new toa_config; toa_stats (and toa_sk) are kept.
b_toa=$(stat_of syn_recv_sock_toa)
rm -f /sys/fs/bpf/toa/toa_config
if out=$(toatest bpf-pin-array /sys/fs/bpf/toa/toa_config 8776 2>&1); then
	out=$(attach --trusted-sources "$TRUST46" 2>&1)
	case $out in
	*"Repaired in"*) ok "older_toa_config_layout_is_reloaded_not_adopted" ;;
	*) notok "older_toa_config_layout_is_reloaded_not_adopted" "$out" ;;
	esac
else
	notok "older_toa_config_layout_is_reloaded_not_adopted" "$out"
fi
check after_layout_reload_ipv6_rewrites toatest conn --count 1 --v6 --nat64 2001:db8::7
expect_delta counters_kept_across_layout_reload syn_recv_sock_toa "$b_toa" 1
reattach --trusted-sources "$TRUST"

# ---- bad parameters are refused with the parameter named.
if out=$(attach --trusted-sources 10.0.0.1/8 2>&1); then
	notok "bad_trusted_sources_refused" "accepted 10.0.0.1/8"
else
	case $out in *"trusted_sources"*"network address"*) ok "bad_trusted_sources_refused" ;; *) notok "bad_trusted_sources_refused" "$out" ;; esac
fi

# ---- detach: pins gone, addresses no longer rewritten; attach again loads afresh.
# The loader falls back to removing the pins when BPF_LINK_DETACH fails, which on 5.10 left
# the programs running for a while: the detach itself must succeed (no fallback warning).
out=$(RUST_LOG=toa_ebpf=warn toa-ebpf detach 2>&1)
case $out in
*"detach: detached"*)
	case $out in
	*"BPF_LINK_DETACH failed"*) notok "detach" "BPF_LINK_DETACH failed, only the pins were removed" ;;
	*) ok "detach" ;;
	esac
	;;
*) notok "detach" "\`toa-ebpf detach\` did not detach" ;;
esac
echo "$out" | sed 's/^/#   /'
if [ ! -e /sys/fs/bpf/toa ]; then
	ok "detach_removes_pins"
else
	notok "detach_removes_pins" "$(ls /sys/fs/bpf/toa)"
fi
check_fails after_detach_no_rewrite "getpeername=10.0.0.2:" toatest conn --count 1
out=$(attach --trusted-sources "$TRUST" 2>&1)
case $out in *"Loaded in"*) ok "attach_after_detach_loads" ;; *) notok "attach_after_detach_loads" "$out" ;; esac
check after_reattach_rewrites toatest conn --count 1

echo "# counters:"
toa-ebpf stats | sed 's/^/#   /'

# ---- the node agent with backend EBPF (agent.sh).
# shellcheck source=agent.sh
. /agent.sh
echo "$PASS passed, $FAIL failed"
[ "$FAIL" -eq 0 ]
