#!/usr/bin/env bash
# Cost of the TOA module on the hot paths, measured in one guest boot (TCG):
#   accepts/s      loopback TCP connect+accept loop (same binary, a few seconds each), over
#                  IPv4 (127.0.0.1) and over IPv6 transport ([::1], AF_INET6 listener)
#   getpeername/s  getpeername() loop on one connection that carried a TOA option, and on a
#                  plain loopback connection without one
# each with the module loaded and not loaded (a warm-up, then alternating, best of three), as
# ratios module / no module beside the goals (0.97 accepts, 0.90 getpeername). Prints, does
# not assert: TCG timing is noisy; the suite that asserts behaviour is tests/vm/kmod.sh.
#
#   tests/vm/kmod-bench.sh [--kernel SERIES] [--secs N]
set -euo pipefail
shopt -s inherit_errexit

HERE=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=lib/qemu.sh
. "$HERE/lib/qemu.sh"
# shellcheck source=lib/kernels.sh
. "$HERE/lib/kernels.sh"
# shellcheck source=lib/initramfs.sh
. "$HERE/lib/initramfs.sh"
# shellcheck source=lib/guest.sh
. "$HERE/lib/guest.sh"

# Deterministic clock: with -icount the guest's time advances with the instructions it
# executes, so the host's load (other builds on a 2-core machine) does not move the figures
# (without it round-to-round noise was +-40%; with it rounds agree to 0.1%). Rates are per
# virtual second: compare ratios, not absolute numbers. One vCPU: 6.1 hangs bringing up the
# second CPU under -icount. QEMU_EXTRA_ARGS= (empty) measures in wall-clock time instead.
QEMU_EXTRA_ARGS=${QEMU_EXTRA_ARGS--icount shift=3,sleep=off -smp 1}
export QEMU_EXTRA_ARGS
series=${TOA_DEFAULT_KERNELS##* }
secs=3
KMOD_SRC=${TOA_KMOD_SRC:-$TOA_REPO_DIR/kmod}
while [ $# -gt 0 ]; do
	case $1 in
	--kernel) series=${2:?--kernel needs a series}; shift 2 ;;
	--secs) secs=${2:?--secs needs a number}; shift 2 ;;
	*) echo "usage: $0 [--kernel SERIES] [--secs N]  (series: $(kernel_series | tr '\n' ' '))" >&2; exit 2 ;;
	esac
done
case $secs in '' | *[!0-9]*) toa_die "--secs wants a whole number of seconds, got '$secs'" ;; esac
kmod_bench_needs() {
	qemu_needs
	kernel_needs
	initramfs_needs
	toatest_needs
}
toa_deps_step kmod_bench_needs

RUN_DIR=${TOA_RUN_DIR:-$TOA_CACHE_DIR/vm-run}
work="$RUN_DIR/bench-$series"
rm -rf "$work" && mkdir -p "$work"
qemu_prepare
kernel_prepare "$series"
kernel_build_kmod "$KMOD_SRC" "$work/kmod" || toa_die "module build failed: $work/kmod/build.log"
toatest_build "$RUN_DIR/toatest"
ird="$work/initramfs"
initramfs_new "$ird"
initramfs_add_kmod "$ird" tun
initramfs_add_file "$ird" "$work/kmod/toa.ko" toa.ko 0644
initramfs_add_file "$ird" "$RUN_DIR/toatest" bin/toatest 0755
guest_write_init "$ird" /bin/toatest bench --module /toa.ko --secs "$secs"
initramfs_pack "$ird" "$work/initramfs.cpio.gz"
rc=0
qemu_run "$VMLINUX" "$work/initramfs.cpio.gz" 1024 $((60 + 32 * secs)) "$work/serial.log" || rc=$?

release=$(sed -n 's/.*TOA-GUEST-KERNEL \([^[:space:]]*\).*/\1/p' "$work/serial.log" | head -n1)
grep -E '^# bench round' "$work/serial.log" | tr -d '\r' || true
acc=$(grep -E '^bench accepts/s: ' "$work/serial.log" | tr -d '\r' || true)
acc6=$(grep -E '^bench accepts/s IPv6: ' "$work/serial.log" | tr -d '\r' || true)
gpn=$(grep -E '^bench getpeername/s' "$work/serial.log" | tr -d '\r' || true)
if [ "$rc" -ne 0 ] || [ -z "$acc" ] || [ -z "$acc6" ] || [ -z "$gpn" ]; then
	tail -n 20 "$work/serial.log" >&2
	toa_die "benchmark guest did not finish (QEMU status $rc, serial log $work/serial.log)"
fi
echo "kernel: ${release:-$KVER} (TCG ${QEMU_EXTRA_ARGS:-wall clock, 2 vCPUs}, ${secs}s per measurement)"
echo "$acc"
echo "$acc6"
echo "$gpn"
