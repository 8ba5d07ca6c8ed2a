# shellcheck shell=bash
# Host side of the agent guest (tests/vm/agent.sh, tests/vm/demo.sh): a Debian bookworm
# userspace with gcc, make, kmod and the guest kernel's headers, plus the real static
# toa-node-agent, the module sources and the harness's toatest client, booted as an
# initramfs made of three concatenated cpio archives:
#   base    suite_root bookworm + jq curl procps iproute2  (cached, keyed by the root's key)
#   kernel  headers/-common/kbuild debs of KVER + tun.ko  (cached, keyed by the .deb names)
#   run     agent binary, kmod sources, scripts           (rebuilt every run, small)
#
#   agent_binary OUT                      -> static musl release build of toa-node-agent
#                                            (honours CARGO_TARGET_DIR)
#   agent_guest_initrd SERIES WORK BINARY -> WORK/initrd (after kernel_prepare SERIES)
#   agent_guest_boot WORK MODE TIMEOUT    -> boots it (toamode=MODE), serial in WORK/serial.log

AGENT_GUEST_HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=../lib/qemu.sh
. "$AGENT_GUEST_HERE/../lib/qemu.sh"
# shellcheck source=../lib/kernels.sh
. "$AGENT_GUEST_HERE/../lib/kernels.sh"
# shellcheck source=../lib/initramfs.sh
. "$AGENT_GUEST_HERE/../lib/initramfs.sh"
# shellcheck source=../lib/guest.sh
. "$AGENT_GUEST_HERE/../lib/guest.sh"
# shellcheck source=../lib/suites.sh
. "$AGENT_GUEST_HERE/../lib/suites.sh"

AGENT_GUEST_CACHE=${AGENT_GUEST_CACHE:-$TOA_CACHE_DIR/agent-guest}
AGENT_GUEST_PKGS="jq curl procps iproute2"
# The whole Debian userspace lives in RAM (about 450 MB unpacked) and gcc needs room.
AGENT_GUEST_MEM=${TOA_AGENT_GUEST_MEM:-2048}

agent_binary() {
	local out=$1 target=x86_64-unknown-linux-musl
	need_apt musl-tools
	rustup target list --installed 2>/dev/null | grep -qx "$target" || rustup target add "$target" >/dev/null ||
		toa_die "rustup target add $target failed"
	toa_log "building toa-node-agent (release, static, $target)"
	(cd "$TOA_REPO_DIR" && cargo build -q --release --target "$target" -p toa-node-agent) ||
		toa_die "cargo build of toa-node-agent for $target failed"
	mkdir -p "$(dirname "$out")"
	cp "${CARGO_TARGET_DIR:-$TOA_REPO_DIR/target}/$target/release/toa-node-agent" "$out"
	file -b "$out" 2>/dev/null | grep -q 'statically linked\|static-pie' ||
		ldd "$out" 2>&1 | grep -q 'not a dynamic executable\|statically linked' ||
		toa_die "$out is not statically linked"
}

# _agent_cpio DIR OUT [gzip]: newc archive of DIR (owner root). The big layers stay
# uncompressed: the guest kernel copies them in a blink, where gunzip under TCG takes seconds.
_agent_cpio() {
	local dir=$1 out=$2 z=${3:-}
	if [ -n "$z" ]; then
		(cd "$dir" && find . -print0 | LC_ALL=C sort -z | cpio --null -o -H newc --owner=0:0 --quiet) | gzip -1 >"$out.tmp"
	else
		(cd "$dir" && find . -print0 | LC_ALL=C sort -z | cpio --null -o -H newc --owner=0:0 --quiet) >"$out.tmp"
	fi
	mv "$out.tmp" "$out"
}

_agent_base_layer() {
	local root out
	if [ "$KERNEL_WHERE" = host ]; then
		# shellcheck disable=SC2086
		root=$(suite_root bookworm $AGENT_GUEST_PKGS) || toa_die "suite_root bookworm $AGENT_GUEST_PKGS failed"
	else
		# Other suites: that suite's userspace with the kernel's own gcc-N.
		# shellcheck disable=SC2086
		root=$(suite_kernel_root "$KERNEL_SUITE" "$KDIR" $AGENT_GUEST_PKGS) ||
			toa_die "suite_kernel_root $KERNEL_SUITE failed"
	fi
	out=$AGENT_GUEST_CACHE/base-${root##*/}.cpio
	if [ ! -f "$out" ]; then
		mkdir -p "$AGENT_GUEST_CACHE"
		toa_log "packing the guest userspace $root"
		_agent_cpio "$root" "$out"
	fi
	printf '%s\n' "$out"
}

# _agent_add_tun STAGE: tun.ko (toatest's simulated balancer) and its dependencies,
# decompressed, listed in usr/lib/toa-guest/modules.order for the guest's /init.
_agent_add_tun() {
	local stage=$1 mod=$AGENT_GUEST_CACHE/stage-mods-$KVER
	initramfs_new "$mod"
	initramfs_add_kmod "$mod" tun
	mkdir -p "$stage/usr/lib/toa-guest"
	cp "$mod"/lib/modules/*.ko "$stage/usr/lib/toa-guest/"
	cp "$mod/etc/modules.order" "$stage/usr/lib/toa-guest/modules.order"
	rm -rf "$mod"
}

# _agent_suite_kernel_layer: headers of a kernel from another suite, taken from the tree
# suite_kernel unpacked (its Makefile points into that tree: point it back to /usr/src).
_agent_suite_kernel_layer() {
	local sk=${KDIR%/usr/src/linux-headers-"$KVER"} real key out stage d
	real=$(cd "$sk" && pwd -P)
	key=$(find "$sk/usr/src" -maxdepth 1 -mindepth 1 -printf '%f\n' | sort | sha256sum | cut -c1-12)
	out=$AGENT_GUEST_CACHE/kernel-$KVER-$key.cpio
	if [ ! -f "$out" ]; then
		need_apt cpio kmod xz-utils zstd
		toa_log "packing headers of $KVER ($KERNEL_SUITE) for the guest"
		stage=$AGENT_GUEST_CACHE/stage-kernel-$KVER
		rm -rf "$stage" && mkdir -p "$stage/usr/src" "$stage/usr/lib/modules/$KVER"
		cp -a "$sk/usr/src/." "$stage/usr/src/"
		for d in "$sk"/usr/lib/linux-kbuild-*; do
			[ -e "$d" ] && cp -a "$d" "$stage/usr/lib/"
		done
		sed -i -e "s#$real/usr/src/#/usr/src/#g" -e "s#$sk/usr/src/#/usr/src/#g" "$stage/usr/src/linux-headers-$KVER/Makefile"
		grep -q "$sk\|$real" "$stage/usr/src/linux-headers-$KVER/Makefile" &&
			toa_die "could not restore the /usr/src paths in the $KVER headers Makefile"
		ln -sfn "/usr/src/linux-headers-$KVER" "$stage/usr/lib/modules/$KVER/build"
		_agent_add_tun "$stage"
		_agent_cpio "$stage" "$out"
		rm -rf "$stage"
	fi
	printf '%s\n' "$out"
}

_agent_kernel_layer() {
	local common="" kbuild="" d debs key out stage
	if [ "$KERNEL_WHERE" != host ]; then
		_agent_suite_kernel_layer
		return
	fi
	need_apt cpio kmod xz-utils zstd
	for d in $(toa_apt_depends apt-cache "linux-headers-$KVER"); do
		case $d in
		linux-headers-*-common) common=$d ;;
		linux-kbuild-*) kbuild=$d ;;
		esac
	done
	if [ -z "$common" ]; then
		_toa_apt_update_once
		for d in $(toa_apt_depends apt-cache "linux-headers-$KVER"); do
			case $d in
			linux-headers-*-common) common=$d ;;
			linux-kbuild-*) kbuild=$d ;;
			esac
		done
	fi
	[ -n "$common" ] && [ -n "$kbuild" ] || toa_die "linux-headers-$KVER names no -common / linux-kbuild package"
	debs=$(toa_fetch_debs "$TOA_CACHE_DIR/debs/bookworm" apt-get "linux-headers-$KVER" "$common" "$kbuild")
	key=$(printf '%s\n' "$debs" | xargs -n1 basename | sha256sum | cut -c1-12)
	out=$AGENT_GUEST_CACHE/kernel-$KVER-$key.cpio
	if [ ! -f "$out" ]; then
		toa_log "packing headers of $KVER for the guest"
		stage=$AGENT_GUEST_CACHE/stage-kernel-$KVER
		rm -rf "$stage" && mkdir -p "$stage"
		for d in $debs; do dpkg -x "$d" "$stage"; done
		# Merged /usr in the guest: /lib is a symlink there, so files go to usr/lib.
		if [ -d "$stage/lib" ]; then
			mkdir -p "$stage/usr/lib"
			cp -a "$stage/lib/." "$stage/usr/lib/"
			rm -rf "${stage:?}/lib"
		fi
		rm -rf "$stage/usr/share/doc"
		_agent_add_tun "$stage"
		_agent_cpio "$stage" "$out"
		rm -rf "$stage"
	fi
	printf '%s\n' "$out"
}

_agent_run_layer() {
	local work=$1 binary=$2 stage=$1/run-layer
	rm -rf "$stage"
	mkdir -p "$stage/agent-test" "$stage/usr/local/bin" "$stage/usr/local/sbin" \
		"$stage/usr/share/toa-node-agent/kmod"
	install -m 0755 "$AGENT_GUEST_HERE/init" "$stage/init"
	install -m 0644 "$AGENT_GUEST_HERE/common.sh" "$AGENT_GUEST_HERE/suite.sh" \
		"$AGENT_GUEST_HERE/demo-guest.sh" "$stage/agent-test/"
	mv "$stage/agent-test/demo-guest.sh" "$stage/agent-test/demo.sh"
	install -m 0755 "$AGENT_GUEST_HERE/make-wrapper" "$stage/usr/local/sbin/make"
	install -m 0755 "$binary" "$stage/usr/local/bin/toa-node-agent"
	install -m 0755 "$work/toatest" "$stage/usr/local/bin/toatest"
	install -m 0755 "$(_initramfs_busybox)" "$stage/usr/local/bin/busybox"
	# The module sources as the agent image ships them: sources only, no build outputs.
	(cd "$TOA_REPO_DIR/kmod" && tar --exclude='*.o' --exclude='*.ko' --exclude='.*.cmd' \
		--exclude='*.mod' --exclude='*.mod.c' --exclude=Module.symvers --exclude=modules.order \
		--exclude=fuzz --exclude='.tmp*' -cf - .) | (cd "$stage/usr/share/toa-node-agent/kmod" && tar -xf -)
	_agent_cpio "$stage" "$work/run.cpio.gz" gzip
	rm -rf "$stage"
}

# agent_guest_initrd SERIES WORK BINARY: kernel_prepare must have run for SERIES.
agent_guest_initrd() {
	local work=$2 binary=$3 base kl
	mkdir -p "$work"
	toatest_build "$work/toatest"
	base=$(_agent_base_layer)
	kl=$(_agent_kernel_layer)
	_agent_run_layer "$work" "$binary"
	cat "$base" "$kl" "$work/run.cpio.gz" >"$work/initrd"
}

agent_guest_boot() {
	local work=$1 mode=$2 tmo=$3
	qemu_run "$VMLINUX" "$work/initrd" "$AGENT_GUEST_MEM" "$tmo" "$work/serial.log" "toamode=$mode"
}
