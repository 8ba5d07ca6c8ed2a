#!/usr/bin/env bash
# The main job, on one command: boots a Debian 12 guest (kernel 6.1) with a compiler and the
# kernel headers, runs the real toa-node-agent in standalone mode, which builds the TOA module
# for that kernel and loads it; a simulated balancer (TUN) then connects to a small server in
# the guest with the client's real address in a TCP option, and the demo prints what the
# application saw (balancer address before, real addresses after), the node state (the
# agent's status JSON) and the scraped metrics.
#
#   tests/vm/demo.sh [--kernel 6.1|6.12]
#
# Installs what it needs (QEMU unpacked into $TOA_CACHE_DIR, Debian kernel + headers, a
# bookworm userspace, the Rust musl target); first run about 5-10 minutes, then about 2-3.
set -euo pipefail
shopt -s inherit_errexit

HERE=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=agent-guest/host.sh
. "$HERE/agent-guest/host.sh"

# Everything the demo installs before first use: see agent_guest_needs (host.sh).
demo_needs() { agent_guest_needs; }

series=6.1
case ${1:-} in
--kernel) series=${2:?--kernel needs a series (6.1 or 6.12)} ;;
--kernel=*) series=${1#--kernel=} ;;
"") ;;
*)
	echo "usage: $0 [--kernel 6.1|6.12]" >&2
	exit 2
	;;
esac
toa_deps_step demo_needs

work="$TOA_CACHE_DIR/vm-run/demo-$series"
rm -rf "$work" && mkdir -p "$work"
echo "preparing QEMU, the Debian $series kernel, the guest userspace and the agent (cached after the first run)..."
qemu_prepare
kernel_prepare "$series"
[ "$KERNEL_WHERE" = host ] || toa_die "the demo guest is Debian bookworm; kernel $series comes from $KERNEL_SUITE"
agent_binary "$work/toa-node-agent"
# Not in an `||` chain, so errexit stays in force inside; a failure shows the log's end.
initrd_done=
trap '[ -n "$initrd_done" ] || echo "building the guest failed: $(tail -n 5 "$work/initrd.log")" >&2' EXIT
agent_guest_initrd "$series" "$work" "$work/toa-node-agent" >"$work/initrd.log" 2>&1
initrd_done=1
echo "booting $KVER under QEMU (TCG; the module build inside takes a minute or two)..."
rc=0
agent_guest_boot "$work" demo 1200 || rc=$?
# Print the guest's story without the console noise (the firmware's last output may share
# the line with the guest's first).
tr -d '\r' <"$work/serial.log" >"$work/serial.txt"
sed -n '/TOA-GUEST-KERNEL/,/^TOA-GUEST-EXIT/p' "$work/serial.txt" | grep -v 'TOA-GUEST-\|^DEMO-' || true
if grep -q '^DEMO-OK' "$work/serial.txt" && [ "$rc" -eq 0 ]; then
	echo
	echo "demo finished: the application saw the real client addresses (serial log: $work/serial.log)"
else
	echo
	echo "demo FAILED (QEMU status $rc); serial log: $work/serial.log" >&2
	exit 1
fi
