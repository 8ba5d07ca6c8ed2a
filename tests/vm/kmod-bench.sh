#!/usr/bin/env bash
# Cost of the two TOA backends on the hot paths, measured in one guest boot (TCG): no TOA at
# all, the module (kmod/), the eBPF backend (ebpf/, attached by the toa-ebpf loader as
# tests/vm/ebpf.sh does), and the eBPF backend's floor: programs at the same hooks that return
# at once (tests/vm/guest/hook_floor.bpf.c), what the kernel charges for any program there --
#   accepts/s      loopback TCP connect+accept loop (same binary, a few seconds each), over
#                  IPv4 (127.0.0.1) and over IPv6 transport ([::1], AF_INET6 listener)
#   getpeername/s  getpeername() loop on one connection that carried a TOA option, and on a
#                  plain loopback connection without one
# each without TOA, with the module, with the eBPF backend and with its floor (a warm-up, then
# the four alternating, best of three), as ratios backend / no TOA beside the goals (0.97 accepts,
# 0.90 getpeername). Prints, does not assert: TCG timing is noisy; the suites that assert
# behaviour are tests/vm/kmod.sh and tests/vm/ebpf.sh.
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
MUSL=x86_64-unknown-linux-musl
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
	need_apt clang llvm libbpf-dev linux-libc-dev binutils
	need_rust_target "$MUSL"
}
toa_deps_step kmod_bench_needs

RUN_DIR=${TOA_RUN_DIR:-$TOA_CACHE_DIR/vm-run}
work="$RUN_DIR/bench-$series"
rm -rf "$work" && mkdir -p "$work"
qemu_prepare
kernel_prepare "$series"
kernel_build_kmod "$KMOD_SRC" "$work/kmod" || toa_die "module build failed: $work/kmod/build.log"
toatest_build "$RUN_DIR/toatest"
"$TOA_REPO_DIR/ebpf/bpf/build.sh" "$work/toa.bpf.o"
"$TOA_REPO_DIR/ebpf/bpf/build.sh" "$work/hook_floor.bpf.o" "$HERE/guest/hook_floor.bpf.c"
toa_log "building toa-ebpf (release, static, $MUSL)"
(cd "$TOA_REPO_DIR" && cargo build -q --release --target "$MUSL" -p toa-ebpf) ||
	toa_die "cargo build of toa-ebpf for $MUSL failed"
LOADER=${CARGO_TARGET_DIR:-$TOA_REPO_DIR/target}/$MUSL/release/toa-ebpf
toa_elf_file "$LOADER" || toa_die "cargo left $LOADER, which is not a whole ELF file"
ird="$work/initramfs"
initramfs_new "$ird"
initramfs_add_kmod "$ird" tun
initramfs_add_file "$ird" "$work/kmod/toa.ko" toa.ko 0644
initramfs_add_file "$ird" "$RUN_DIR/toatest" bin/toatest 0755
initramfs_add_file "$ird" "$work/toa.bpf.o" toa.bpf.o 0644
initramfs_add_file "$ird" "$work/hook_floor.bpf.o" hook_floor.bpf.o 0644
initramfs_add_file "$ird" "$LOADER" bin/toa-ebpf 0755
# The eBPF backend attaches to the root cgroup v2 and pins under bpffs, as in tests/vm/ebpf.sh;
# the loader logs the verifier's work on toa_sockops (kernels >= 5.16) at debug level.
cat >"$work/bench.sh" <<EOS
#!/bin/busybox sh
mkdir -p /sys/fs/cgroup /sys/fs/bpf
mount -t cgroup2 none /sys/fs/cgroup || echo "TOA-GUEST-ERROR mount -t cgroup2 failed"
mount -t bpf bpf /sys/fs/bpf || echo "TOA-GUEST-ERROR mount -t bpf failed"
exec /bin/toatest bench --module /toa.ko --secs $secs \\
	--ebpf-attach "RUST_LOG=toa_ebpf=debug toa-ebpf attach --object /toa.bpf.o --trusted-sources 10.0.0.0/16 2>&1" \\
	--ebpf-detach "RUST_LOG=toa_ebpf=debug toa-ebpf detach" \\
	--floor-attach "toa-ebpf attach --object /hook_floor.bpf.o --trusted-sources 10.0.0.0/16 2>&1" \\
	--floor-detach "toa-ebpf detach"
EOS
initramfs_add_file "$ird" "$work/bench.sh" bench.sh 0755
guest_write_init "$ird" /bin/sh /bench.sh
initramfs_pack "$ird" "$work/initramfs.cpio.gz"
rc=0
# 13 rounds (a warm-up, then 3 x none/module/ebpf/ebpf-floor) of four measurements each
qemu_run "$VMLINUX" "$work/initramfs.cpio.gz" 1024 $((90 + 64 * secs)) "$work/serial.log" || rc=$?

release=$(sed -n 's/.*TOA-GUEST-KERNEL \([^[:space:]]*\).*/\1/p' "$work/serial.log" | head -n1)
grep -E '^# bench round|^attach: |^detach: |WARN|verified_insns|verified and attached' "$work/serial.log" | tr -d '\r' || true
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
