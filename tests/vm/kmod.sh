#!/usr/bin/env bash
# Proves the TOA kernel module on real Debian kernels inside QEMU (TCG) guests.
#
#   tests/vm/kmod.sh                  every kernel in TOA_DEFAULT_KERNELS (lib/kernels.sh)
#   tests/vm/kmod.sh --kernel 6.12    one kernel (repeatable)
#
# Per kernel: fetch kernel + headers + QEMU (cached in $TOA_CACHE_DIR), build kmod/ with W=1
# (warnings from our sources fail), build the static guest driver, pack an initramfs, boot,
# and read the scenario results from the serial console. Each kernel ends with its own
# `N passed, M failed` line; with several kernels the last line is the total.
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
# Sources to test (default: this checkout's kmod/); another copy is handy for mutation checks.
KMOD_SRC=${TOA_KMOD_SRC:-$TOA_REPO_DIR/kmod}
# shellcheck disable=SC2034 # filled by kernel_parse_args, read by kernel_run_each
kernels=()

# What this suite installs before first use (each library's own list).
kmod_suite_needs() {
	qemu_needs
	kernel_needs
	initramfs_needs
	toatest_needs
}

usage() {
	cat >&2 <<EOT
usage: $0 [--kernel SERIES]...
  SERIES: $(kernel_series | tr '\n' ' ')(default: $TOA_DEFAULT_KERNELS)
  env: TOA_CACHE_DIR (downloads, builds, logs), TOA_RUN_DIR (work dirs, default
       \$TOA_CACHE_DIR/vm-run), TOA_GUEST_TIMEOUT (s, default 300),
       TOA_KMOD_SRC (module sources, default kmod/)
EOT
	exit 2
}

kernel_parse_args "$TOA_DEFAULT_KERNELS" "$@"
toa_deps_step kmod_suite_needs

# Work directories (builds, initramfs, serial logs). TOA_RUN_DIR gives a checkout its own, so
# worktrees sharing one TOA_CACHE_DIR never overwrite each other's guest runs.
RUN_DIR=${TOA_RUN_DIR:-$TOA_CACHE_DIR/vm-run}
mkdir -p "$RUN_DIR"

qemu_prepare
toatest_build "$RUN_DIR/toatest"

# run_kernel SERIES: prints the scenario lines and sets K_PASS / K_FAIL.
run_kernel() {
	local series=$1 t0=$SECONDS t_prep t_build t_guest work rc=0 line release="" exit_seen=""
	local fails=0 passes=0 summary="" klog_lines=0
	K_PASS=0 K_FAIL=0
	work="$RUN_DIR/kmod-$series"
	rm -rf "$work" && mkdir -p "$work"

	echo "# kernel $series: preparing"
	if ! (kernel_prepare "$series" && declare -p KVER KDIR VMLINUX KMODDIR KERNEL_SUITE KERNEL_SERIES KERNEL_WHERE >"$work/kernel.env") >"$work/prepare.log" 2>&1; then
		sed 's/^/#   /' "$work/prepare.log" | tail -n 20
		echo "not ok - [$series] kernel_prepare: see $work/prepare.log"
		K_FAIL=1
		return
	fi
	# shellcheck source=/dev/null
	. "$work/kernel.env"
	t_prep=$((SECONDS - t0))

	t0=$SECONDS
	if ! kernel_build_kmod "$KMOD_SRC" "$work/kmod" >"$work/build.out" 2>&1; then
		sed 's/^/#   /' "$work/build.out" | tail -n 30
		echo "not ok - [$KVER] kmod builds with W=1 and no warnings: see $work/kmod/build.log"
		K_FAIL=1
		return
	fi
	echo "ok - [$KVER] kmod builds with W=1 and no warnings"
	passes=1
	# The same sources under another module name: a second module claiming sockopt 4096.
	if ! kernel_kmod_renamed "$KMOD_SRC" toa_dup "$work/src-dup" >"$work/build-dup.out" 2>&1 ||
		! kernel_build_kmod "$work/src-dup" "$work/kmod-dup" >"$work/build-dup.out" 2>&1 ||
		[ ! -f "$work/kmod-dup/toa_dup.ko" ]; then
		sed 's/^/#   /' "$work/build-dup.out" | tail -n 10
		echo "not ok - [$KVER] build of toa_dup.ko (kmod/Kbuild renamed to toa_dup: obj-m/toa-y lines): see $work/build-dup.out"
		fails=$((fails + 1))
	fi
	# Test-only second kprobe user for the stress scenario (issue 11 item 2).
	if ! kernel_build_kmod "$TOA_REPO_DIR/tests/vm/kprobe-user" "$work/kprobe-user" >"$work/build-kprobe-user.out" 2>&1 ||
		[ ! -f "$work/kprobe-user/toa_kprobe_user.ko" ]; then
		sed 's/^/#   /' "$work/build-kprobe-user.out" | tail -n 10
		echo "not ok - [$KVER] build of the test module tests/vm/kprobe-user with W=1: see $work/build-kprobe-user.out"
		fails=$((fails + 1))
	fi
	t_build=$((SECONDS - t0))

	t0=$SECONDS
	local ird="$work/initramfs"
	initramfs_new "$ird"
	initramfs_add_kmod "$ird" tun
	# nf_conntrack owns SO_ORIGINAL_DST: the unload scenario checks that other netfilter
	# sockopts keep working. Its libcrc32c needs a crc32c algorithm (a softdep, which
	# initramfs_add_kmod does not follow): the generic one, where it is a module.
	if [ -n "$(find "$KMODDIR/kernel" -name 'crc32c_generic.ko*' -print -quit)" ]; then
		initramfs_add_kmod "$ird" crc32c_generic
	fi
	initramfs_add_kmod "$ird" nf_conntrack
	initramfs_add_file "$ird" "$work/kmod/toa.ko" toa.ko 0644
	initramfs_add_file "$ird" "$RUN_DIR/toatest" bin/toatest 0755
	local dup=()
	if [ -f "$work/kmod-dup/toa_dup.ko" ]; then
		initramfs_add_file "$ird" "$work/kmod-dup/toa_dup.ko" toa_dup.ko 0644
		dup=(--dup /toa_dup.ko)
	fi
	local kpu=()
	if [ -f "$work/kprobe-user/toa_kprobe_user.ko" ]; then
		initramfs_add_file "$ird" "$work/kprobe-user/toa_kprobe_user.ko" toa_kprobe_user.ko 0644
		kpu=(--kprobe-user /toa_kprobe_user.ko)
	fi
	guest_write_init "$ird" /bin/toatest suite --module /toa.ko "${dup[@]}" "${kpu[@]}"
	initramfs_pack "$ird" "$work/initramfs.cpio.gz"
	qemu_run "$VMLINUX" "$work/initramfs.cpio.gz" "$GUEST_MEM" "$GUEST_TIMEOUT" "$work/serial.log" || rc=$?
	t_guest=$((SECONDS - t0))

	while IFS= read -r line; do
		line=${line%$'\r'}
		case $line in
		# the firmware's last output may share the line with the guest's first
		*"TOA-GUEST-KERNEL "*) release=${line##*TOA-GUEST-KERNEL } ;;
		"ok - "*)
			echo "ok - [${release:-$KVER}] ${line#ok - }"
			passes=$((passes + 1))
			;;
		"not ok - "*)
			echo "not ok - [${release:-$KVER}] ${line#not ok - }"
			fails=$((fails + 1))
			;;
		"# "*) echo "$line" ;;
		"toatest: fatal: "*)
			echo "not ok - [${release:-$KVER}] guest driver aborted: ${line#toatest: fatal: }"
			fails=$((fails + 1))
			;;
		"TOA-GUEST-ERROR "*)
			echo "not ok - [${release:-$KVER}] ${line#TOA-GUEST-ERROR }"
			fails=$((fails + 1))
			;;
		"TOA-GUEST-KLOG "*)
			# The driver's own kernel-log scenario judges these; they count on their own
			# only when the driver never got that far.
			echo "# kernel log: ${line#TOA-GUEST-KLOG }"
			klog_lines=$((klog_lines + 1))
			;;
		"TOA-GUEST-EXIT "*) exit_seen=${line#TOA-GUEST-EXIT } ;;
		*" passed, "*" failed") summary=$line ;;
		*"Kernel panic"* | *"Oops"* | *"BUG: "* | *"Call Trace"*)
			echo "not ok - [${release:-$KVER}] console: $line"
			fails=$((fails + 1))
			;;
		esac
	done <"$work/serial.log"
	if [ "$klog_lines" -gt 0 ] && ! grep -q 'ok - kernel_log_has_no_BUG_WARNING_Oops_CallTrace' "$work/serial.log"; then
		echo "not ok - [${release:-$KVER}] kernel log has $klog_lines BUG/WARNING/Oops/Call Trace lines (see above)"
		fails=$((fails + 1))
	fi

	guest_judge_boot "$rc" "$release" "$KVER" "$summary" "$exit_seen" "$work/serial.log"
	fails=$((fails + GUEST_BOOT_FAILS))
	# shellcheck disable=SC2034 # K_PASS, K_FAIL: read by kernel_run_each (lib/kernels.sh)
	K_PASS=$passes K_FAIL=$fails
	echo "# kernel $series = ${release:-$KVER} ($KERNEL_SUITE): prepare ${t_prep}s, build ${t_build}s, guest ${t_guest}s, total $((t_prep + t_build + t_guest))s"
}

kernel_run_each run_kernel
