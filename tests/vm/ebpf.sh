#!/usr/bin/env bash
# Proves the TOA eBPF backend (ebpf/) on real Debian kernels inside QEMU (TCG) guests.
#
#   tests/vm/ebpf.sh                  every kernel in TOA_EBPF_KERNELS (default 5.10 6.1 6.12 7.2)
#   tests/vm/ebpf.sh --kernel 6.1     one kernel (repeatable)
#
# Per kernel: fetch the kernel (cached in $TOA_CACHE_DIR), build the BPF object
# (ebpf/bpf/build.sh, Debian's clang), the static loader (toa-ebpf, musl) and the module
# suite's static client (toatest), pack an initramfs, boot, and read the scenario results of
# tests/vm/ebpf-guest/scenarios.sh from the serial console. No compiler and no kernel headers
# reach the guest. Each kernel ends with `N passed, M failed` and a
# `# kernel ... attach ...ms` line (loader start to attached, measured by the loader) with
# `node ready (agent start to Loaded) ...ms` (the real toa-node-agent, standalone, backend EBPF:
# tests/vm/ebpf-guest/agent.sh).
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

GUEST_TIMEOUT=${TOA_GUEST_TIMEOUT:-300}
GUEST_MEM=${TOA_GUEST_MEM:-1024}
MUSL=x86_64-unknown-linux-musl
# shellcheck disable=SC2034 # filled by kernel_parse_args, read by kernel_run_each
kernels=()

ebpf_suite_needs() {
	qemu_needs
	kernel_needs
	initramfs_needs
	toatest_needs
	need_apt clang llvm libbpf-dev linux-libc-dev binutils
	need_rust_target "$MUSL"
}

usage() {
	cat >&2 <<EOT
usage: $0 [--kernel SERIES]...
  SERIES: $(kernel_series | tr '\n' ' ')(default: ${TOA_EBPF_KERNELS:-5.10 6.1 6.12 7.2})
  env: TOA_CACHE_DIR (downloads, builds, logs), TOA_GUEST_TIMEOUT (s, default 300)
EOT
	exit 2
}

kernel_parse_args "${TOA_EBPF_KERNELS:-5.10 6.1 6.12 7.2}" "$@"
toa_deps_step ebpf_suite_needs

RUN_DIR=${TOA_RUN_DIR:-$TOA_CACHE_DIR/vm-run}
mkdir -p "$RUN_DIR"

qemu_prepare
toatest_build "$RUN_DIR/toatest"
"$TOA_REPO_DIR/ebpf/bpf/build.sh" "$RUN_DIR/ebpf/toa.bpf.o"
toa_log "building toa-ebpf (release, static, $MUSL)"
(cd "$TOA_REPO_DIR" && cargo build -q --release --target "$MUSL" -p toa-ebpf) ||
	toa_die "cargo build of toa-ebpf for $MUSL failed"
LOADER=${CARGO_TARGET_DIR:-$TOA_REPO_DIR/target}/$MUSL/release/toa-ebpf
toa_elf_file "$LOADER" || toa_die "cargo left $LOADER, which is not a whole ELF file"
if readelf -lW "$LOADER" | grep -q INTERP; then
	toa_die "$LOADER is not static (it has a program interpreter)"
fi
# The node agent itself, run in standalone mode with backend EBPF (ebpf-guest/agent.sh).
toa_log "building toa-node-agent (release, static, $MUSL)"
(cd "$TOA_REPO_DIR" && cargo build -q --release --target "$MUSL" -p toa-node-agent) ||
	toa_die "cargo build of toa-node-agent for $MUSL failed"
AGENT=${CARGO_TARGET_DIR:-$TOA_REPO_DIR/target}/$MUSL/release/toa-node-agent
toa_elf_file "$AGENT" || toa_die "cargo left $AGENT, which is not a whole ELF file"
if readelf -lW "$AGENT" | grep -q INTERP; then
	toa_die "$AGENT is not static (it has a program interpreter)"
fi

# run_kernel SERIES: prints the scenario lines and sets K_PASS / K_FAIL.
run_kernel() {
	local series=$1 t0=$SECONDS t_guest work rc=0 line release="" exit_seen="" summary=""
	local fails=0 passes=0 attach_time="" node_ready=""
	K_PASS=0 K_FAIL=0
	work="$RUN_DIR/ebpf-$series"
	rm -rf "$work" && mkdir -p "$work"

	echo "# kernel $series: preparing"
	if ! (kernel_prepare "$series" && declare -p KVER KDIR VMLINUX KMODDIR KERNEL_SUITE >"$work/kernel.env") >"$work/prepare.log" 2>&1; then
		sed 's/^/#   /' "$work/prepare.log" | tail -n 20
		echo "not ok - [$series] kernel_prepare: see $work/prepare.log"
		K_FAIL=1
		return
	fi
	# shellcheck source=/dev/null
	. "$work/kernel.env"

	local ird="$work/initramfs"
	initramfs_new "$ird"
	initramfs_add_kmod "$ird" tun
	initramfs_add_file "$ird" "$RUN_DIR/ebpf/toa.bpf.o" toa.bpf.o 0644
	initramfs_add_file "$ird" "$LOADER" bin/toa-ebpf 0755
	initramfs_add_file "$ird" "$RUN_DIR/toatest" bin/toatest 0755
	initramfs_add_file "$ird" "$AGENT" bin/toa-node-agent 0755
	initramfs_add_file "$ird" "$HERE/ebpf-guest/scenarios.sh" scenarios.sh 0755
	initramfs_add_file "$ird" "$HERE/ebpf-guest/agent.sh" agent.sh 0644
	guest_write_init "$ird" /bin/sh /scenarios.sh
	initramfs_pack "$ird" "$work/initramfs.cpio.gz"
	t0=$SECONDS
	qemu_run "$VMLINUX" "$work/initramfs.cpio.gz" "$GUEST_MEM" "$GUEST_TIMEOUT" "$work/serial.log" || rc=$?
	t_guest=$((SECONDS - t0))

	while IFS= read -r line; do
		line=${line%$'\r'}
		case $line in
		*"TOA-GUEST-KERNEL "*) release=${line##*TOA-GUEST-KERNEL } ;;
		"ok - "*)
			echo "ok - [${release:-$KVER}] ${line#ok - }"
			passes=$((passes + 1))
			;;
		"not ok - "*)
			echo "not ok - [${release:-$KVER}] ${line#not ok - }"
			fails=$((fails + 1))
			;;
		"# TOA-EBPF-ATTACH-TIME "*) attach_time=${line#\# TOA-EBPF-ATTACH-TIME } ;;
		"# TOA-EBPF-NODE-READY "*) node_ready=${line#\# TOA-EBPF-NODE-READY } ;;
		"# "*) echo "$line" ;;
		"TOA-GUEST-ERROR "*)
			echo "not ok - [${release:-$KVER}] ${line#TOA-GUEST-ERROR }"
			fails=$((fails + 1))
			;;
		"TOA-GUEST-KLOG "*)
			echo "not ok - [${release:-$KVER}] kernel log: ${line#TOA-GUEST-KLOG }"
			fails=$((fails + 1))
			;;
		"TOA-GUEST-EXIT "*) exit_seen=${line#TOA-GUEST-EXIT } ;;
		*" passed, "*" failed") summary=$line ;;
		*"Kernel panic"* | *"Oops"* | *"BUG: "* | *"Call Trace"*)
			echo "not ok - [${release:-$KVER}] console: $line"
			fails=$((fails + 1))
			;;
		esac
	done <"$work/serial.log"

	guest_judge_boot "$rc" "$release" "$KVER" "$summary" "$exit_seen" "$work/serial.log"
	fails=$((fails + GUEST_BOOT_FAILS))
	# shellcheck disable=SC2034 # K_PASS, K_FAIL: read by kernel_run_each (lib/kernels.sh)
	K_PASS=$passes K_FAIL=$fails
	echo "# kernel $series = ${release:-$KVER} ($KERNEL_SUITE): attach ${attach_time:-not reached}, node ready (agent start to Loaded) ${node_ready:-not reached}, guest ${t_guest}s"
}

kernel_run_each run_kernel
