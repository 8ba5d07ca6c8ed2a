# shellcheck shell=bash
# Host side of the agent guest (tests/vm/agent.sh, tests/vm/demo.sh): a Debian bookworm
# userspace with gcc, make, kmod and the guest kernel's headers, plus the real static
# toa-node-agent, the module sources and the harness's toatest client, booted as an
# initramfs made of three concatenated cpio archives:
#   base    suite_root bookworm + jq curl procps iproute2  (cached, keyed by the root's key)
#   kernel  headers/-common/kbuild debs of KVER + tun.ko  (cached, keyed by the .deb names)
# Cached layers are written under a temporary name, checked with cpio -t and renamed; on read
# a layer that does not list is packed again (with a log line).
#   run     agent binary, kmod sources, scripts           (rebuilt every run, small)
#
#   agent_binary OUT                      -> static musl release build of toa-node-agent
#                                            (honours CARGO_TARGET_DIR)
#   agent_guest_initrd SERIES WORK BINARY -> WORK/initrd (after kernel_prepare SERIES)
#   agent_guest_boot WORK MODE TIMEOUT    -> boots it (toamode=MODE), serial in WORK/serial.log
# With AGENT_RUN=image (agent.sh sets it per kernel) the initramfs also holds the agent image's
# root (images/node-agent-root.sh: the same root images/build.sh ships) and OCI runtime configs
# generated from operator/src/daemonset.rs (example agent-oci-config); the guest suite then runs
# the agent under the node's crun instead of directly (toarun=image). AGENT_RUN=buildroot (a
# kernel whose compiler the image lacks): the same layers, plus the node's apt configuration
# for the local signed mirror of its suite (tests/buildroot/mirror.sh; AGENT_MIRROR_DIR, served
# on the host and reached at http://$AGENT_MIRROR_GUEST_ADDR/ through agent_guest_boot's
# restricted user network), the mirror's key, the guest's NIC driver (e1000) and a runtime
# config whose mirror override is unreachable; the suite checks CompilerMismatch (no build
# root) and MirrorUnreachable, then runs from the image with the build root.

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
# crun: the node's own OCI runtime (from the node's suite), which runs the agent image root.
AGENT_GUEST_PKGS="jq curl procps iproute2 crun"
# The whole Debian userspace lives in RAM (about 450 MB unpacked) and gcc needs room; the agent
# image root (images/node-agent-root.sh, about 600 MB with three compilers) adds to it.
AGENT_GUEST_MEM=${TOA_AGENT_GUEST_MEM:-2048}
AGENT_GUEST_IMAGE_MEM=${TOA_AGENT_GUEST_IMAGE_MEM:-3584}
# Where the guest holds the OCI bundle: the image root at $AGENT_IMAGE_BUNDLE/rootfs and the
# runtime configs generated from the operator's DaemonSet pod spec.
AGENT_IMAGE_BUNDLE=/var/lib/toa-image
# AGENT_RUN=buildroot: where the guest reaches the mirror (QEMU's guestfwd to the host's
# loopback port of mirror_serve), and an address whose connections QEMU's restricted user
# network refuses (the host's 10.0.2.2), for MirrorUnreachable.
AGENT_MIRROR_GUEST_ADDR=10.0.2.100
AGENT_MIRROR_UNREACHABLE=http://10.0.2.2:9/debian

# agent_guest_needs: the static agent (musl-gcc, the Rust musl target, readelf to prove it
# static), the layers (initramfs_needs: cpio ...), the guest userspace (suites_needs:
# debootstrap) and the kernel (kernel_needs).
agent_guest_needs() {
	need_apt musl-tools binutils socat
	need_rust_target x86_64-unknown-linux-musl
	initramfs_needs
	suites_needs
	kernel_needs
	qemu_needs
	toatest_needs
}

# _agent_binary_ok FILE: a whole ELF file, static (no program interpreter), and it runs.
_agent_binary_ok() {
	local headers
	toa_elf_file "$1" || return 1
	headers=$(readelf -lW "$1" 2>/dev/null) || return 1
	! grep -q 'INTERP' <<<"$headers" || return 1
	"$1" --version >/dev/null 2>&1
}

agent_binary() {
	local out=$1 target=x86_64-unknown-linux-musl built
	agent_guest_needs
	built=${CARGO_TARGET_DIR:-$TOA_REPO_DIR/target}/$target/release/toa-node-agent
	# cargo trusts an output whose fingerprint is fresh even when the file itself is damaged
	# (and target/.../release/toa-node-agent is a hard link to its deps/ copy): clean the
	# package's outputs so that cargo builds it again.
	if [ -e "$built" ] && ! _agent_binary_ok "$built"; then
		toa_cache_rebuild "built agent $built" "is not a whole static binary that runs"
		(cd "$TOA_REPO_DIR" && cargo clean -q --release --target "$target" -p toa-node-agent) ||
			toa_die "cargo clean -p toa-node-agent failed"
		rm -f "$built"
	fi
	toa_log "building toa-node-agent (release, static, $target)"
	(cd "$TOA_REPO_DIR" && cargo build -q --release --target "$target" -p toa-node-agent) ||
		toa_die "cargo build of toa-node-agent for $target failed"
	_agent_binary_ok "$built" || toa_die "cargo build left $built, which is not a whole static binary that runs"
	mkdir -p "$(dirname "$out")"
	cp "$built" "$out.tmp.$$" || toa_die "cannot copy $built"
	_agent_binary_ok "$out.tmp.$$" || toa_die "the copy $out.tmp.$$ of $built is damaged"
	mv "$out.tmp.$$" "$out" || toa_die "cannot rename $out.tmp.$$"
}

# _agent_cached_layer OUT: true when the cached layer OUT can be used; a damaged one (it does
# not list with cpio -t: empty, truncated) is removed with a log line, to be packed again.
_agent_cached_layer() {
	[ -e "$1" ] || return 1
	toa_cpio_ok "$1" && return 0
	toa_cache_rebuild "guest layer $1" "does not list with cpio -t (empty or truncated)"
	rm -f "$1"
	return 1
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
	[ -n "$root" ] && [ -f "$root/.toa-root-ok" ] || toa_die "suite_root gave no finished root ('$root')"
	out=$AGENT_GUEST_CACHE/base-${root##*/}.cpio
	if ! _agent_cached_layer "$out"; then
		mkdir -p "$AGENT_GUEST_CACHE"
		toa_log "packing the guest userspace $root"
		toa_cpio_pack "$root" "$out"
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
	cp "$mod"/lib/modules/*.ko "$stage/usr/lib/toa-guest/" || toa_die "cannot stage tun.ko"
	cp "$mod/etc/modules.order" "$stage/usr/lib/toa-guest/modules.order" || toa_die "cannot stage modules.order"
	rm -rf "$mod"
}

# _agent_suite_kernel_layer: headers of a kernel from another suite, taken from the tree
# suite_kernel unpacked (its Makefile points into that tree: point it back to /usr/src).
_agent_suite_kernel_layer() {
	local sk=${KDIR%/usr/src/linux-headers-"$KVER"} real key out stage d
	real=$(cd "$sk" && pwd -P) || toa_die "no kernel tree $sk"
	key=$(find "$sk/usr/src" -maxdepth 1 -mindepth 1 -printf '%f\n' | sort | sha256sum | cut -c1-12) ||
		toa_die "cannot list $sk/usr/src"
	out=$AGENT_GUEST_CACHE/kernel-$KVER-$key.cpio
	if ! _agent_cached_layer "$out"; then
		toa_log "packing headers of $KVER ($KERNEL_SUITE) for the guest"
		stage=$AGENT_GUEST_CACHE/stage-kernel-$KVER
		rm -rf "$stage" && mkdir -p "$stage/usr/src" "$stage/usr/lib/modules/$KVER"
		cp -a "$sk/usr/src/." "$stage/usr/src/" || toa_die "cannot stage $sk/usr/src"
		for d in "$sk"/usr/lib/linux-kbuild-*; do
			[ ! -e "$d" ] || cp -a "$d" "$stage/usr/lib/" || toa_die "cannot stage $d"
		done
		sed -i -e "s#$real/usr/src/#/usr/src/#g" -e "s#$sk/usr/src/#/usr/src/#g" "$stage/usr/src/linux-headers-$KVER/Makefile"
		grep -q "$sk\|$real" "$stage/usr/src/linux-headers-$KVER/Makefile" &&
			toa_die "could not restore the /usr/src paths in the $KVER headers Makefile"
		ln -sfn "/usr/src/linux-headers-$KVER" "$stage/usr/lib/modules/$KVER/build"
		_agent_add_tun "$stage"
		toa_cpio_pack "$stage" "$out"
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
	local hdr_deps
	hdr_deps=$(toa_apt_depends apt-cache "linux-headers-$KVER")
	for d in $hdr_deps; do
		case $d in
		linux-headers-*-common) common=$d ;;
		linux-kbuild-*) kbuild=$d ;;
		esac
	done
	if [ -z "$common" ]; then
		_toa_apt_update_once
		hdr_deps=$(toa_apt_depends apt-cache "linux-headers-$KVER")
		for d in $hdr_deps; do
			case $d in
			linux-headers-*-common) common=$d ;;
			linux-kbuild-*) kbuild=$d ;;
			esac
		done
	fi
	[ -n "$common" ] && [ -n "$kbuild" ] || toa_die "linux-headers-$KVER names no -common / linux-kbuild package"
	debs=$(toa_fetch_debs "$TOA_CACHE_DIR/debs/bookworm" apt-get "linux-headers-$KVER" "$common" "$kbuild") ||
		toa_die "cannot fetch the header packages of $KVER"
	key=$(printf '%s\n' "$debs" | xargs -n1 basename | sha256sum | cut -c1-12) || toa_die "cannot key the $KVER layer"
	out=$AGENT_GUEST_CACHE/kernel-$KVER-$key.cpio
	if ! _agent_cached_layer "$out"; then
		toa_log "packing headers of $KVER for the guest"
		stage=$AGENT_GUEST_CACHE/stage-kernel-$KVER
		rm -rf "$stage" && mkdir -p "$stage"
		for d in $debs; do dpkg -x "$d" "$stage" || toa_die "cannot unpack $d"; done
		# Merged /usr in the guest: /lib is a symlink there, so files go to usr/lib.
		if [ -d "$stage/lib" ]; then
			mkdir -p "$stage/usr/lib"
			cp -a "$stage/lib/." "$stage/usr/lib/" || toa_die "cannot merge $stage/lib into usr/lib"
			rm -rf "${stage:?}/lib"
		fi
		rm -rf "$stage/usr/share/doc"
		_agent_add_tun "$stage"
		toa_cpio_pack "$stage" "$out"
		rm -rf "$stage"
	fi
	printf '%s\n' "$out"
}

_agent_run_layer() { # WORK BINARY [image]
	local work=$1 binary=$2 run=${3:-direct} stage=$1/run-layer bb
	rm -rf "$stage"
	mkdir -p "$stage/agent-test" "$stage/usr/local/bin" "$stage/usr/local/sbin" \
		"$stage/usr/share/toa-node-agent/kmod"
	{
		install -m 0755 "$AGENT_GUEST_HERE/init" "$stage/init" &&
			install -m 0644 "$AGENT_GUEST_HERE/common.sh" "$AGENT_GUEST_HERE/suite.sh" \
				"$AGENT_GUEST_HERE/demo-guest.sh" "$stage/agent-test/" &&
			mv "$stage/agent-test/demo-guest.sh" "$stage/agent-test/demo.sh" &&
			install -m 0755 "$AGENT_GUEST_HERE/make-wrapper" "$stage/usr/local/sbin/make" &&
			install -m 0755 "$binary" "$stage/usr/local/bin/toa-node-agent" &&
			install -m 0755 "$work/toatest" "$stage/usr/local/bin/toatest"
	} || toa_die "cannot stage the run layer in $stage"
	if [ -f "$work/vendor/ipvs_toa.ko" ]; then
		install -D -m 0644 "$work/vendor/ipvs_toa.ko" "$stage/usr/lib/toa-guest/vendor/ipvs_toa.ko" ||
			toa_die "cannot stage ipvs_toa.ko"
	fi
	bb=$(_initramfs_busybox) || toa_die "no busybox"
	install -m 0755 "$bb" "$stage/usr/local/bin/busybox" || toa_die "cannot stage busybox"
	# The module sources as the agent image ships them: sources only, no build outputs.
	(cd "$TOA_REPO_DIR/kmod" && tar --exclude='*.o' --exclude='*.ko' --exclude='.*.cmd' \
		--exclude='*.mod' --exclude='*.mod.c' --exclude=Module.symvers --exclude=modules.order \
		--exclude=fuzz --exclude='.tmp*' -cf - .) | (cd "$stage/usr/share/toa-node-agent/kmod" && tar -xf -) ||
		toa_die "cannot stage the module sources"
	if [ "$run" != direct ]; then
		# The image's own files (agent, module sources) exactly as images/build.sh ships them,
		# and the runtime configs: the default agent config, the self-test knob's (its own
		# host cache path, KCFLAGS for the test build), and agent.buildRoot false (the scenarios
		# that check HeadersMissing and CompilerMismatch, the reasons without a build root).
		"$TOA_REPO_DIR/images/node-agent-root.sh" stage "$stage$AGENT_IMAGE_BUNDLE/rootfs" "$binary" ||
			toa_die "cannot stage the image's files"
		_agent_oci_config "$stage$AGENT_IMAGE_BUNDLE/config-default.json" "" \
			"buildTimeoutSeconds: 900"
		_agent_oci_config "$stage$AGENT_IMAGE_BUNDLE/config-knob.json" KCFLAGS=-DTOA_TEST_NO_GETNAME_REWRITE \
			"buildTimeoutSeconds: 900" "hostCachePath: /var/lib/toa-knob"
		_agent_oci_config "$stage$AGENT_IMAGE_BUNDLE/config-nobuildroot.json" "" \
			"buildTimeoutSeconds: 900" "buildRoot: false"
		if [ "$run" = buildroot ]; then
			_agent_oci_config "$stage$AGENT_IMAGE_BUNDLE/config-badmirror.json" "" \
				"buildTimeoutSeconds: 900" "buildRootMirror: $AGENT_MIRROR_UNREACHABLE"
			_agent_mirror_node_files "$stage"
		fi
		rm -f "$stage$AGENT_IMAGE_BUNDLE"/*.agent.yaml
	fi
	toa_cpio_pack "$stage" "$work/run.cpio.gz" gzip
	rm -rf "$stage"
}

# _agent_mirror_node_files STAGE: the node's apt configuration names only the local mirror of
# its suite (this layer's files replace the userspace layer's sources.list), which the node
# trusts through signed-by; and the NIC driver, for the suite to bring up eth0.
_agent_mirror_node_files() {
	local stage=$1 mods=$1.net
	[ -f "${AGENT_MIRROR_DIR:-}/suite" ] || toa_die "AGENT_RUN=buildroot needs AGENT_MIRROR_DIR (mirror_build)"
	mkdir -p "$stage/etc/apt/sources.list.d" "$stage/usr/share/keyrings" "$stage/usr/lib/toa-guest/net"
	echo "# this node's packages come from its local mirror: sources.list.d/debian.sources" \
		>"$stage/etc/apt/sources.list"
	printf 'Types: deb\nURIs: http://%s/\nSuites: %s\nComponents: main\nSigned-By: /usr/share/keyrings/toa-test-mirror.gpg\n' \
		"$AGENT_MIRROR_GUEST_ADDR" "$(cat "$AGENT_MIRROR_DIR/suite")" >"$stage/etc/apt/sources.list.d/debian.sources"
	mirror_export_key "$AGENT_MIRROR_DIR" "$stage/usr/share/keyrings/toa-test-mirror.gpg" ||
		toa_die "cannot export the mirror's key"
	initramfs_new "$mods"
	initramfs_add_kmod "$mods" e1000
	cp "$mods"/lib/modules/*.ko "$stage/usr/lib/toa-guest/net/" || toa_die "cannot stage e1000.ko"
	cp "$mods/etc/modules.order" "$stage/usr/lib/toa-guest/net/modules.order" || toa_die "cannot stage modules.order"
	rm -rf "$mods"
}

# _agent_image_layer: the agent image's package root (images/node-agent-root.sh base) under
# $AGENT_IMAGE_BUNDLE/rootfs, cached by the root's name (which is keyed by its package list).
_agent_image_layer() {
	local root out stage
	root=$("$TOA_REPO_DIR/images/node-agent-root.sh" base) || toa_die "images/node-agent-root.sh base failed"
	[ -f "$root/.toa-ok" ] || toa_die "images/node-agent-root.sh gave no finished root ('$root')"
	out=$AGENT_GUEST_CACHE/image-${root##*/}.cpio
	if ! _agent_cached_layer "$out"; then
		mkdir -p "$AGENT_GUEST_CACHE"
		toa_log "packing the agent image root $root"
		stage=$AGENT_GUEST_CACHE/stage-image.$$
		rm -rf "$stage" && mkdir -p "$stage$AGENT_IMAGE_BUNDLE"
		cp -al "$root" "$stage$AGENT_IMAGE_BUNDLE/rootfs" 2>/dev/null || cp -a "$root" "$stage$AGENT_IMAGE_BUNDLE/rootfs" ||
			toa_die "cannot stage $root"
		rm -f "$stage$AGENT_IMAGE_BUNDLE/rootfs/.toa-ok"
		toa_cpio_pack "$stage" "$out"
		rm -rf "$stage"
	fi
	printf '%s\n' "$out"
}

# _agent_oci_config OUT ENV [AGENT-CONFIG-YAML-LINES...]: the runtime config of the DaemonSet's
# agent container (operator/src/oci.rs from operator/src/daemonset.rs), for an agent config
# with the given extra lines, with ENV (NAME=VALUE, or empty) added to the environment, plus what standalone mode needs in the test: the desired-state
# and status files, and the make wrapper that records compiler runs.
_agent_oci_config() {
	local out=$1 env=$2 cfg=$1.agent.yaml ep extra=()
	shift 2
	[ -z "$env" ] || extra=(--env "$env")
	{
		echo "image: localhost/toa-node-agent:test"
		printf '%s\n' "$@"
	} >"$cfg"
	ep=$("$TOA_REPO_DIR/images/node-agent-root.sh" entrypoint) || toa_die "no image entrypoint"
	(cd "$TOA_REPO_DIR" && cargo run -q -p toa-operator --example agent-oci-config -- \
		--agent-config "$cfg" --rootfs "$AGENT_IMAGE_BUNDLE/rootfs" --entrypoint "$ep" \
		--node-name toa-guest \
		--arg=--desired=/etc/toa/desired.yaml --arg=--status-file=/run/toa/status.json \
		--arg=--poll-interval=1 --arg=--unload-timeout=30 \
		--bind /etc/toa:/etc/toa:ro --bind /run/toa:/run/toa \
		--bind /usr/local/sbin/make:/usr/local/sbin/make:ro --bind /run/make-calls:/run/make-calls \
		"${extra[@]}") >"$out.tmp" || toa_die "cargo run --example agent-oci-config failed"
	jq -e '.process.args | length > 1' "$out.tmp" >/dev/null || toa_die "$out.tmp is not a runtime config"
	mv "$out.tmp" "$out"
}

# agent_guest_initrd SERIES WORK BINARY: kernel_prepare must have run for SERIES.
agent_guest_initrd() {
	local work=$2 binary=$3 base kl
	agent_guest_needs
	mkdir -p "$work"
	toatest_build "$work/toatest"
	base=$(_agent_base_layer) || toa_die "no guest userspace layer"
	kl=$(_agent_kernel_layer) || toa_die "no guest kernel layer"
	if [ "${AGENT_RUN:-direct}" != direct ]; then
		local il
		il=$(_agent_image_layer) || toa_die "no agent image layer"
		_agent_run_layer "$work" "$binary" "$AGENT_RUN"
		cat "$base" "$kl" "$il" "$work/run.cpio.gz" >"$work/initrd" || toa_die "cannot write $work/initrd"
		return
	fi
	_agent_run_layer "$work" "$binary"
	cat "$base" "$kl" "$work/run.cpio.gz" >"$work/initrd" || toa_die "cannot write $work/initrd"
}

agent_guest_boot() { # WORK MODE TIMEOUT [VAR=VALUE...]: extra words reach /init as variables
	local work=$1 mode=$2 tmo=$3
	shift 3
	local mem=$AGENT_GUEST_MEM net=""
	[ "${AGENT_RUN:-direct}" = direct ] || mem=$AGENT_GUEST_IMAGE_MEM
	if [ "${AGENT_RUN:-direct}" = buildroot ]; then
		# The build root (a minimal root with gcc and the headers, about 400 MB) lives in RAM too.
		mem=$((mem + 1024))
		[ -n "${MIRROR_PORT:-}" ] || toa_die "AGENT_RUN=buildroot: the mirror is not served (mirror_serve)"
		# restrict=on: the guest reaches nothing but the mirror (one socat per connection; a
		# script, as QEMU_EXTRA_ARGS is split on spaces).
		printf '#!/bin/sh\nexec socat - TCP:127.0.0.1:%s\n' "$MIRROR_PORT" >"$work/mirror-fwd" &&
			chmod +x "$work/mirror-fwd" || toa_die "cannot write $work/mirror-fwd"
		case $work in *[[:space:],]*) toa_die "the run directory $work has a space or comma (QEMU options)" ;; esac
		net="-netdev user,id=n0,restrict=on,net=10.0.2.0/24,guestfwd=tcp:$AGENT_MIRROR_GUEST_ADDR:80-cmd:$work/mirror-fwd -device e1000,netdev=n0,romfile="
	fi
	QEMU_EXTRA_ARGS="${QEMU_EXTRA_ARGS:-} $net" \
		qemu_run "$VMLINUX" "$work/initrd" "$mem" "$tmo" "$work/serial.log" "toamode=$mode" "toarun=${AGENT_RUN:-direct}" "$@"
}
