#!/usr/bin/env bash
# The real toa-node-agent against real Debian kernels, inside QEMU (TCG) guests that have a
# compiler, make and the kernel's headers (tests/vm/agent-guest/).
#
#   tests/vm/agent.sh                 6.1, 6.12, 5.10 and 7.2 (TOA_AGENT_DEFAULT_KERNELS)
#   tests/vm/agent.sh --kernel 6.12   one kernel (repeatable)
#   tests/vm/agent.sh --upgrade       the kernel-upgrade scenario instead: one node disk, booted
#                                     with 6.1 then 6.12 (or the two --kernel given, in order)
#
# The agent runs as deployed: from the image's root (images/node-agent-root.sh, the root
# images/build.sh ships) under the node's own crun, with the runtime config generated from the
# operator's DaemonSet pod spec (mounts, privileges, env, args). Where the image can build for
# the kernel (its compiler, named by CONFIG_CC_VERSION_TEXT, is among images/node-agent.packages)
# it builds against the node's headers (path image). Otherwise (5.10: gcc-10, 7.2: gcc-16; path
# buildroot) the node's apt sources name only a local signed mirror of its suite
# (tests/buildroot/mirror.sh, served on the host's loopback, reached from the guest through
# QEMU's user network in restricted mode with one guestfwd): the suite checks CompilerMismatch
# (agent.buildRoot false) and MirrorUnreachable (an unreachable agent.buildRootMirror), then
# removes the node's headers, and the image's agent goes to Loaded with a build root fetched
# from that mirror (mmdebstrap, apt's signature checks against the node's keys); every check
# runs from there (the headers come back for the headers-missing section, which removes them
# itself).
# TOA_AGENT_RUN=direct runs the agent directly in the node's userspace everywhere instead.
# In the guest the agent runs standalone (--desired FILE, --status-file FILE) and the suite
# checks: cold start builds + loads (source Built); SIGTERM leaves the module; a restart
# adopts (source Adopted, no make run); after rmmod the next start loads from the cache
# (source Cache, no make run); runtime parameter changes need no reload; desired Unloaded
# removes the module; a vendor's TOA module of another name (ipvs_toa, first kernel only) gives
# ForeignModule before any build or load and is never unloaded; missing headers give HeadersMissing naming the package (agent.buildRoot
# false); /metrics after real TOA traffic shows the exact counter values. On the host,
# `promtool check metrics` lints the scraped exposition and compares its families and labels with
# tests/fixtures/agent-metrics.prom (TOA_UPDATE_FIXTURES=1 rewrites the fixture instead).
# Each kernel ends with `N passed, M failed`; with several kernels the last line is the total.
# --upgrade (agent-guest/upgrade.sh): a persistent node disk (raw image under the run directory,
# QEMU virtio drive) holds the DaemonSet's hostCachePath across two boots of the node. Boot 1
# (old kernel) formats it; the agent builds, loads, restarts and adopts. Boot 2 (new kernel): the
# agent builds and loads for the new kernel directly (source Built, the new vermagic, no load or
# unload of the old build), keeps the old kernel's entry with cacheMaxAgeDays 30 (default) and 0,
# and removes it with cacheMaxAgeDays 1 once the guest clock has moved 2 days on.
set -euo pipefail
shopt -s inherit_errexit

HERE=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=agent-guest/host.sh
. "$HERE/agent-guest/host.sh"
# shellcheck source=../buildroot/mirror.sh
. "$HERE/../buildroot/mirror.sh"

GUEST_TIMEOUT=${TOA_AGENT_GUEST_TIMEOUT:-1500}
FIXTURE=$TOA_REPO_DIR/tests/fixtures/agent-metrics.prom
kernels=()
# Default: every supported kernel. 5.10 and 7.2 run in a userspace of their own suite with
# their own compiler.
AGENT_DEFAULT_KERNELS=${TOA_AGENT_DEFAULT_KERNELS:-"6.1 6.12 5.10 7.2"}

usage() {
	cat >&2 <<EOT
usage: $0 [--kernel SERIES]... | --upgrade [--kernel OLD --kernel NEW]
  SERIES: $(kernel_series | tr '\n' ' ')(default: $AGENT_DEFAULT_KERNELS)
  env: TOA_CACHE_DIR (downloads, roots, logs), TOA_AGENT_GUEST_TIMEOUT (s, default 1500),
       TOA_AGENT_GUEST_MEM (MB, default 2048)
EOT
	exit 2
}

# What this suite installs before first use: the agent guest's list, and promtool (Debian's
# prometheus) for the scraped exposition.
agent_suite_needs() {
	agent_guest_needs
	need_apt prometheus
	mirror_needs
}

# --upgrade: the kernel-upgrade scenario (its own defaults; the rest goes to kernel_parse_args).
UPGRADE=0
args=()
for a in "$@"; do
	if [ "$a" = --upgrade ]; then UPGRADE=1; else args+=("$a"); fi
done
if [ "$UPGRADE" = 1 ]; then
	kernel_parse_args "6.1 6.12" "${args[@]}"
	[ ${#kernels[@]} -eq 2 ] || {
		echo "--upgrade takes no or exactly two --kernel (the old, then the new one)" >&2
		usage
	}
else
	kernel_parse_args "$AGENT_DEFAULT_KERNELS" "${args[@]}"
fi
toa_deps_step agent_suite_needs

RUN_DIR="$TOA_CACHE_DIR/vm-run"
# The local mirror of a build-root kernel's suite (mirror_serve), stopped when the suite ends.
AGENT_MIRROR_DIR=
trap 'mirror_stop "$AGENT_MIRROR_DIR"' EXIT

# agent_serial_tap SERIAL_LOG [METRICS_FILE]: the guest's TAP lines, prefixed with the kernel
# release, plus console failures (panic, Oops, BUG, guest errors and kernel log lines the guest
# flagged). Updates the caller's passes, fails, release, summary and exit_seen (bash dynamic
# scope); with METRICS_FILE, the exposition between TOA-METRICS-BEGIN and -END is appended there
# and the caller's in_metrics ends at 2.
agent_serial_tap() {
	local serial=$1 metrics=${2:-} line
	while IFS= read -r line; do
		line=${line%$'\r'}
		if [ -n "$metrics" ] && [ "$in_metrics" = 1 ]; then
			if [ "$line" = TOA-METRICS-END ]; then in_metrics=2; else printf '%s\n' "$line" >>"$metrics"; fi
			continue
		fi
		case $line in
		*"TOA-GUEST-KERNEL "*) release=${line##*TOA-GUEST-KERNEL } ;;
		TOA-METRICS-BEGIN) if [ -n "$metrics" ]; then in_metrics=1; fi ;;
		"ok - "*)
			echo "ok - [${release:-$KVER}] ${line#ok - }"
			passes=$((passes + 1))
			;;
		"not ok - "*)
			echo "not ok - [${release:-$KVER}] ${line#not ok - }"
			fails=$((fails + 1))
			;;
		"# "*) echo "$line" ;;
		"TOA-GUEST-ERROR "* | "TOA-GUEST-KLOG "*)
			echo "not ok - [${release:-$KVER}] ${line#TOA-GUEST-* }"
			fails=$((fails + 1))
			;;
		"TOA-GUEST-EXIT "*) exit_seen=${line#TOA-GUEST-EXIT } ;;
		*" passed, "*" failed") summary=$line ;;
		*"Kernel panic"* | *"Oops"* | *"BUG: "* | *"Call Trace"*)
			echo "not ok - [${release:-$KVER}] console: $line"
			fails=$((fails + 1))
			;;
		esac
	done <"$serial"
}
mkdir -p "$RUN_DIR"
# exposition_shape FILE: the families, types and label names of an exposition, without values,
# so that a fixture comparison sees a renamed metric or label but not changing numbers.
exposition_shape() {
	grep -v '^# HELP' "$1" | sed -E 's/="([^"\\]|\\.)*"//g; /^#/!s/ [^ ]+$//' | sort -u
}

# check_fixture SCRAPED RELEASE: the chart's dashboard and alert checks read
# tests/fixtures/agent-metrics.prom, so it must keep the shape of what the agent really serves.
# TOA_UPDATE_FIXTURES=1 rewrites it from this run instead.
check_fixture() {
	local scraped=$1 release=$2 diff
	if [ "${TOA_UPDATE_FIXTURES:-}" = 1 ]; then
		mkdir -p "$(dirname "$FIXTURE")"
		cp "$scraped" "$FIXTURE"
		echo "# saved the exposition as ${FIXTURE#"$TOA_REPO_DIR"/}"
		return
	fi
	if diff=$(diff <(exposition_shape "$FIXTURE") <(exposition_shape "$scraped")); then
		echo "ok - [$release] the scraped exposition has the shape of tests/fixtures/agent-metrics.prom"
		passes=$((passes + 1))
	else
		echo "not ok - [$release] the agent's metrics differ from tests/fixtures/agent-metrics.prom (families/labels; < fixture, > agent): $(tr '\n' ' ' <<<"$diff") — if intended, run TOA_UPDATE_FIXTURES=1 tests/vm/agent.sh --kernel 6.1"
		fails=$((fails + 1))
	fi
}

qemu_prepare
agent_binary "$RUN_DIR/toa-node-agent-musl"

run_kernel() {
	local series=$1 work="$RUN_DIR/agent-$1" rc=0 line release="" exit_seen="" summary=""
	local passes=0 fails=0 in_metrics=0 t0=$SECONDS
	K_PASS=0 K_FAIL=0
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
	local cc
	if ! cc=$(_suite_kernel_cc "$KDIR"); then
		echo "not ok - [$KVER] cannot read the kernel's compiler from $KDIR/.config"
		K_FAIL=1
		return
	fi
	AGENT_RUN=image
	if [ "${TOA_AGENT_RUN:-image}" = direct ]; then
		AGENT_RUN=direct
		echo "# kernel $KVER: agent runs directly in the node's userspace (TOA_AGENT_RUN=direct)"
	elif ! grep -qx "$cc" "$TOA_REPO_DIR/images/node-agent.packages"; then
		AGENT_RUN=buildroot
		echo "# kernel $KVER: built with $cc, which the agent image (images/node-agent.packages) does not have: the image's agent must build in a build root from the node's $KERNEL_SUITE mirror (a local signed mirror, the node's only apt source)"
		local tm=$SECONDS
		# Read by host.sh (_agent_mirror_node_files) and the EXIT trap.
		AGENT_MIRROR_DIR=$work/mirror
		if ! mirror_build "$KERNEL_SUITE" "$KVER" "$work/mirror" >"$work/mirror.log" 2>&1 ||
			! mirror_serve "$work/mirror" >>"$work/mirror.log" 2>&1; then
			mirror_stop "$work/mirror"
			sed 's/^/#   /' "$work/mirror.log" | tail -n 20
			echo "not ok - [$KVER] the local $KERNEL_SUITE mirror: see $work/mirror.log"
			K_FAIL=1
			return
		fi
		echo "# kernel $KVER: mirror of $KERNEL_SUITE ($MIRROR_DEBS packages, signed) on 127.0.0.1:$MIRROR_PORT, guest address http://$AGENT_MIRROR_GUEST_ADDR/ ($((SECONDS - tm))s)"
	else
		echo "# kernel $KVER: agent runs from the image root under crun ($cc is in the image)"
	fi
	# A vendor's TOA module under another name (ipvs_toa: our sources with a renamed Kbuild,
	# built on the host with the kernel's compiler) for the guest to load before the agent
	# starts: the first kernel of the run only, like the self-test knob (one more compile).
	rm -rf "$work/vendor"
	if [ "$series" = "${kernels[0]}" ]; then
		if ! (kernel_kmod_renamed "$TOA_REPO_DIR/kmod" ipvs_toa "$work/vendor-src" &&
			kernel_build_kmod "$work/vendor-src" "$work/vendor") >"$work/vendor.log" 2>&1 ||
			[ ! -f "$work/vendor/ipvs_toa.ko" ]; then
			sed 's/^/#   /' "$work/vendor.log" | tail -n 10
			echo "not ok - [$KVER] build of the vendor-named module ipvs_toa.ko: see $work/vendor.log"
			fails=$((fails + 1))
		fi
	fi
	# A subshell: toa_die there ends only it, and the `not ok` line below names the log.
	if ! (agent_guest_initrd "$series" "$work" "$RUN_DIR/toa-node-agent-musl") >"$work/initrd.log" 2>&1; then
		[ "$AGENT_RUN" != buildroot ] || mirror_stop "$work/mirror"
		sed 's/^/#   /' "$work/initrd.log" | tail -n 20
		echo "not ok - [$KVER] guest initramfs: see $work/initrd.log"
		K_FAIL=1
		return
	fi
	echo "# kernel $KVER: guest ready ($(du -m "$work/initrd" | cut -f1) MB initramfs, $((SECONDS - t0))s), booting"
	t0=$SECONDS
	# The self-test failure scenario needs one more compile: the first kernel of the run only.
	local knob=toaknob=0
	[ "$series" = "${kernels[0]}" ] && knob=toaknob=1
	agent_guest_boot "$work" suite "$GUEST_TIMEOUT" "$knob" || rc=$?
	[ "$AGENT_RUN" != buildroot ] || mirror_stop "$work/mirror"
	: >"$work/metrics.prom"
	agent_serial_tap "$work/serial.log" "$work/metrics.prom"

	# Lint the exposition the agent really served, on the host (promtool 2.42 from Debian).
	if [ "$in_metrics" = 2 ] && [ -s "$work/metrics.prom" ]; then
		local lint
		if lint=$(promtool check metrics <"$work/metrics.prom" 2>&1); then
			echo "ok - [${release:-$KVER}] promtool check metrics passes on the scraped exposition"
			passes=$((passes + 1))
			check_fixture "$work/metrics.prom" "${release:-$KVER}"
		else
			echo "not ok - [${release:-$KVER}] promtool check metrics: $(tr '\n' ' ' <<<"$lint")"
			fails=$((fails + 1))
		fi
	else
		echo "not ok - [${release:-$KVER}] no metrics exposition in the serial log"
		fails=$((fails + 1))
	fi
	guest_judge_boot "$rc" "$release" "$KVER" "$summary" "$exit_seen" "$work/serial.log"
	fails=$((fails + GUEST_BOOT_FAILS))
	# shellcheck disable=SC2034 # K_PASS, K_FAIL: read by kernel_run_each (lib/kernels.sh)
	K_PASS=$passes K_FAIL=$fails
	echo "# kernel $series = ${release:-$KVER}: path $AGENT_RUN, guest $((SECONDS - t0))s"
}

# ---------------------------------------------------------------- --upgrade
# _upgrade_layer WORK: the scenario's extra initramfs layer: agent-guest/upgrade.sh, the modules
# the node disk needs (virtio_pci, virtio_blk, ext4 and crc32c for its checksums; from the
# kernel's package, for the guest script to insmod), and, with the image, runtime configs
# generated from agent configs with cacheMaxAgeDays 0 and 1.
_upgrade_layer() {
	local work=$1 stage=$1/upgrade-layer mods=$1/upgrade-mods m
	rm -rf "$stage"
	mkdir -p "$stage/agent-test" "$stage/usr/lib/toa-guest/disk"
	install -m 0644 "$HERE/agent-guest/upgrade.sh" "$stage/agent-test/upgrade.sh" ||
		toa_die "cannot stage upgrade.sh"
	initramfs_new "$mods"
	for m in crc32c_generic virtio_pci virtio_blk ext4; do initramfs_add_kmod "$mods" "$m"; done
	find "$mods/lib/modules" -name '*.ko' -exec cp -t "$stage/usr/lib/toa-guest/disk/" {} + ||
		toa_die "cannot stage the disk modules"
	cp "$mods/etc/modules.order" "$stage/usr/lib/toa-guest/disk/modules.order" || toa_die "cannot stage modules.order"
	rm -rf "$mods"
	if [ "$AGENT_RUN" = image ]; then
		mkdir -p "$stage$AGENT_IMAGE_BUNDLE"
		for m in 0 1; do
			_agent_oci_config "$stage$AGENT_IMAGE_BUNDLE/config-age$m.json" "" \
				"buildTimeoutSeconds: 900" "cacheMaxAgeDays: $m"
		done
		rm -f "$stage$AGENT_IMAGE_BUNDLE"/*.agent.yaml
	fi
	toa_cpio_pack "$stage" "$work/upgrade.cpio.gz" gzip
	rm -rf "$stage"
}

# upgrade_boot N SERIES DISK: boot N of the node on kernel SERIES with the node disk attached;
# adds to `passes` and `fails`.
upgrade_boot() {
	local n=$1 series=$2 disk=$3 work=$RUN_DIR/agent-upgrade/boot$1 rc=0 line release="" exit_seen="" summary=""
	local t0=$SECONDS
	rm -rf "$work" && mkdir -p "$work"
	echo "# boot $n: kernel $series, preparing"
	if ! (kernel_prepare "$series" && declare -p KVER KDIR VMLINUX KMODDIR KERNEL_SUITE KERNEL_SERIES KERNEL_WHERE >"$work/kernel.env") >"$work/prepare.log" 2>&1; then
		sed 's/^/#   /' "$work/prepare.log" | tail -n 20
		echo "not ok - [boot $n $series] kernel_prepare: see $work/prepare.log"
		fails=$((fails + 1))
		return
	fi
	# shellcheck source=/dev/null
	. "$work/kernel.env"
	local cc
	if ! cc=$(_suite_kernel_cc "$KDIR"); then
		echo "not ok - [boot $n $KVER] cannot read the kernel's compiler from $KDIR/.config"
		fails=$((fails + 1))
		return
	fi
	AGENT_RUN=image
	if [ "${TOA_AGENT_RUN:-image}" = direct ] || ! grep -qx "$cc" "$TOA_REPO_DIR/images/node-agent.packages"; then
		AGENT_RUN=direct
		echo "# boot $n: kernel $KVER: agent runs directly in the node's userspace ($cc; TOA_AGENT_RUN=${TOA_AGENT_RUN:-image})"
	else
		echo "# boot $n: kernel $KVER: agent runs from the image root under crun ($cc is in the image)"
	fi
	# A subshell: toa_die there ends only it, and the `not ok` line below names the log.
	if ! (agent_guest_initrd "$series" "$work" "$RUN_DIR/toa-node-agent-musl" && _upgrade_layer "$work" &&
		cat "$work/upgrade.cpio.gz" >>"$work/initrd") >"$work/initrd.log" 2>&1; then
		sed 's/^/#   /' "$work/initrd.log" | tail -n 20
		echo "not ok - [boot $n $KVER] guest initramfs: see $work/initrd.log"
		fails=$((fails + 1))
		return
	fi
	echo "# boot $n: kernel $KVER: guest ready ($(du -m "$work/initrd" | cut -f1) MB initramfs, $((SECONDS - t0))s), booting with the node disk"
	t0=$SECONDS
	QEMU_EXTRA_ARGS="-drive file=$disk,format=raw,if=virtio,cache=writeback" \
		agent_guest_boot "$work" upgrade "$GUEST_TIMEOUT" "toaboot=$n" || rc=$?
	agent_serial_tap "$work/serial.log" ""
	guest_judge_boot "$rc" "$release" "$KVER" "$summary" "$exit_seen" "$work/serial.log"
	fails=$((fails + GUEST_BOOT_FAILS))
	echo "# boot $n = ${release:-$KVER}: path $AGENT_RUN, guest $((SECONDS - t0))s"
}

run_upgrade() {
	local dir=$RUN_DIR/agent-upgrade disk passes=0 fails=0 t0=$SECONDS
	rm -rf "$dir" && mkdir -p "$dir"
	# The node's persistent disk: a sparse raw image, formatted by the first guest.
	disk=$dir/node-disk.raw
	truncate -s 1G "$disk" || toa_die "cannot create $disk"
	upgrade_boot 1 "${kernels[0]}" "$disk"
	upgrade_boot 2 "${kernels[1]}" "$disk"
	echo "# upgrade ${kernels[0]} -> ${kernels[1]}: $((SECONDS - t0))s"
	echo "$passes passed, $fails failed"
	[ "$fails" -eq 0 ]
}

if [ "$UPGRADE" = 1 ]; then
	run_upgrade
	exit
fi
kernel_run_each run_kernel
