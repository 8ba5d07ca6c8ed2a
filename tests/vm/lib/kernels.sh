# shellcheck shell=bash source-path=SCRIPTDIR
# Debian kernels for the guest harness: image (vmlinux + modules) and headers to build against.
#
#   kernel_series          -> prints every series of the table, one per line
#   kernel_prepare SERIES  -> exports KVER KDIR VMLINUX KMODDIR KERNEL_SUITE KERNEL_SERIES
#                             KERNEL_WHERE (host = this machine builds, suite = suites.sh root)
#   kernel_build_kmod SRC_DIR OUT_DIR
#                          -> copies SRC_DIR, runs `make KDIR=... W=1` with the kernel's own
#                             compiler, copies the *.ko and build.log to OUT_DIR; fails on any
#                             warning from our sources
#   kernel_kmod_renamed SRC_DIR NAME DEST_DIR
#                          -> DEST_DIR: the sources of SRC_DIR whose Kbuild builds NAME.ko
#                             instead of toa.ko (a second module with the same code: a
#                             vendor's TOA module under another name, holding option 4096)
#
# Rows whose suite is not this machine's (bookworm) go through tests/vm/lib/suites.sh
# (suite_kernel SUITE META DIR, suite_kernel_root SUITE KDIR and
# suite_build_module ROOT KDIR SRC OUT), which keep a private apt configuration and a
# debootstrap root of that suite with the kernel's own compiler.

# shellcheck source=common.sh
. "$(dirname "${BASH_SOURCE[0]}")/common.sh"
# Functions only (no side effects): sourced here so that subshells and callers both see them.
if [ -r "$TOA_VM_LIB_DIR/suites.sh" ]; then
	# shellcheck source=suites.sh
	. "$TOA_VM_LIB_DIR/suites.sh"
fi

# SERIES  SUITE     META PACKAGE (resolved with apt-cache depends)  WHERE
#   host  = this machine's apt and compiler (bookworm, gcc-12)
#   suite = suites.sh: private apt lists and a debootstrap root with the kernel's compiler
TOA_KERNEL_TABLE="
5.10 bullseye linux-image-amd64 suite
6.1 bookworm linux-image-amd64 host
6.12 bookworm linux-image-6.12-amd64 host
6.1-rt bookworm linux-image-rt-amd64 host
7.2 sid linux-image-amd64 suite
"
# The kernels tests/vm/kmod.sh runs without --kernel. Add a series here once it works.
TOA_DEFAULT_KERNELS=${TOA_DEFAULT_KERNELS:-"5.10 6.1 6.1-rt 6.12 7.2"}

TOA_KERNEL_CACHE=${TOA_KERNEL_CACHE:-$TOA_CACHE_DIR/kernels}

kernel_series() { awk 'NF == 4 { print $1 }' <<<"$TOA_KERNEL_TABLE"; }

# kernel_needs: unpacking and vmlinux extraction (xz, zstd), and the toolchain that builds
# modules for the kernels this machine builds for (gcc, make, libelf-dev, pahole, bc). Kernels
# of other suites build in a debootstrap root (suites_needs).
kernel_needs() {
	need_apt xz-utils zstd gcc make libelf-dev dwarves bc
	suites_needs
}

_kernel_row() {
	local row
	row=$(awk -v s="$1" 'NF == 4 && $1 == s' <<<"$TOA_KERNEL_TABLE")
	[ -n "$row" ] || toa_die "unknown kernel series '$1' (known: $(kernel_series | tr '\n' ' '))"
	# shellcheck disable=SC2034
	read -r _K_SERIES _K_SUITE _K_META _K_WHERE <<<"$row"
}

_kernel_need_suites() {
	local f="$TOA_VM_LIB_DIR/suites.sh"
	local fn
	if ! declare -F suite_build_module >/dev/null; then
		[ -r "$f" ] || toa_die "kernel $_K_SERIES needs $f (suite $_K_SUITE), which does not exist yet"
		# shellcheck source=/dev/null
		. "$f"
	fi
	for fn in suite_kernel suite_kernel_root suite_build_module; do
		declare -F "$fn" >/dev/null || toa_die "$f does not define $fn (needed for kernel $_K_SERIES / $_K_SUITE)"
	done
}

# _kernel_depends PKG: direct Depends, updating the apt lists once if PKG is unknown.
_kernel_depends() {
	local out
	out=$(toa_apt_depends "$_K_APT_CACHE" "$1")
	if [ -z "$out" ] && [ "$_K_WHERE" = host ]; then
		_toa_apt_update_once
		out=$(toa_apt_depends "$_K_APT_CACHE" "$1")
	fi
	[ -n "$out" ] || toa_die "apt-cache depends $1 ($_K_SUITE) gives nothing: is $_K_SUITE in the apt sources?"
	printf '%s\n' "$out"
}

# _kernel_extract_vmlinux VMLINUZ OUT: finds the compressed payload (xz or zstd) in the bzImage
# and keeps the first candidate that decompresses to an ELF file. QEMU boots that ELF through
# PVH, which skips the slow real-mode decompressor under TCG.
_kernel_extract_vmlinux() {
	local in=$1 out=$2 off offs tool magic
	for tool in xz zstd gzip; do
		case $tool in
		xz) magic='\xFD7zXZ\x00' ;;
		zstd) magic='\x28\xB5\x2F\xFD' ;;
		gzip) magic='\x1F\x8B\x08' ;;
		esac
			offs=$(LC_ALL=C grep -aboP "$magic" "$in" | cut -d: -f1) || offs=
		for off in $offs; do
			# A candidate that is not the payload fails to decompress: the ELF check decides.
			tail -c +$((off + 1)) "$in" | $tool -dc 2>/dev/null >"$out.tmp" || true
			if toa_elf_file "$out.tmp"; then
				mv "$out.tmp" "$out" || toa_die "cannot rename $out.tmp"
				return 0
			fi
		done
	done
	rm -f "$out.tmp"
	toa_die "no xz/zstd/gzip payload in $in decompresses to an ELF vmlinux"
}

kernel_prepare() {
	_kernel_row "$1"
	kernel_needs
	KERNEL_WHERE=$_K_WHERE
	KERNEL_SUITE=$_K_SUITE
	KERNEL_SERIES=$_K_SERIES
	if [ "$_K_WHERE" = suite ]; then
		# Other suites: suites.sh resolves and unpacks image, modules and headers (newer
		# Debian splits the image into linux-binary/modules/base packages and merges /usr) into
		# one normalised tree: boot/vmlinuz-KVER, lib/modules/KVER, usr/src/linux-headers-KVER.
		_kernel_need_suites
		local sk="$TOA_KERNEL_CACHE/$_K_SUITE-$_K_META"
		KVER=$(suite_kernel "$_K_SUITE" "$_K_META" "$sk") || toa_die "cannot prepare $_K_META from $_K_SUITE (suite_kernel failed)"
		case $KVER in
		"$_K_SERIES".*) ;;
		*) toa_die "series $_K_SERIES: $_K_META in $_K_SUITE now resolves to $KVER; update TOA_KERNEL_TABLE in ${BASH_SOURCE[0]}" ;;
		esac
		KDIR=$sk/usr/src/linux-headers-$KVER
		KMODDIR=$sk/lib/modules/$KVER
		VMLINUX=$TOA_KERNEL_CACHE/$KVER/vmlinux
		export KVER KDIR VMLINUX KMODDIR KERNEL_SUITE KERNEL_SERIES KERNEL_WHERE
		[ -d "$KMODDIR/kernel" ] || toa_die "suite_kernel left no $KMODDIR/kernel"
		if [ -e "$VMLINUX" ] && ! toa_elf_file "$VMLINUX"; then
			toa_cache_rebuild "$VMLINUX" "is not a whole ELF file (truncated?)"
			rm -f "$VMLINUX"
		fi
		if [ ! -f "$VMLINUX" ]; then
			mkdir -p "${VMLINUX%/*}"
			_kernel_extract_vmlinux "$sk/boot/vmlinuz-$KVER" "$VMLINUX"
		fi
		return 0
	else
		_K_APT_GET=apt-get
		_K_APT_CACHE=apt-cache
	fi

	local img_pkg hdr_pkg common_pkg kbuild_pkg d meta_deps hdr_deps
	meta_deps=$(_kernel_depends "$_K_META") || toa_die "cannot resolve $_K_META ($_K_SUITE)"
	img_pkg=$(grep -m1 '^linux-image-' <<<"$meta_deps") ||
		toa_die "$_K_META ($_K_SUITE) depends on no linux-image-* package"
	KVER=${img_pkg#linux-image-}
	KVER=${KVER%-unsigned}
	# A -rt series (PREEMPT_RT flavour) has the plain series' version numbers.
	case $KVER in
	"${_K_SERIES%-rt}".*) ;;
	*) toa_die "series $_K_SERIES: $_K_META in $_K_SUITE now resolves to $KVER; update TOA_KERNEL_TABLE in ${BASH_SOURCE[0]}" ;;
	esac
	hdr_pkg=linux-headers-$KVER
	common_pkg='' kbuild_pkg=''
	hdr_deps=$(_kernel_depends "$hdr_pkg") || toa_die "cannot resolve $hdr_pkg ($_K_SUITE)"
	for d in $hdr_deps; do
		case $d in
		linux-headers-*-common | linux-headers-*-common-rt) common_pkg=$d ;;
		linux-kbuild-*) kbuild_pkg=$d ;;
		esac
	done
	[ -n "$common_pkg" ] && [ -n "$kbuild_pkg" ] ||
		toa_die "$hdr_pkg does not name its -common headers and linux-kbuild packages (got: ${hdr_deps//$'\n'/ })"

	local kbase="$TOA_KERNEL_CACHE/$KVER"
	local hdr_root="$kbase/hdr"
	VMLINUX="$kbase/vmlinux"
	KMODDIR="$kbase/img/lib/modules/$KVER"
	KDIR="$hdr_root/usr/src/linux-headers-$KVER"
	export KVER KDIR VMLINUX KMODDIR KERNEL_SUITE KERNEL_SERIES KERNEL_WHERE

	# The packages are checked against the archive's checksums on every run (a damaged one is
	# downloaded again); the unpacked tree is checked before it is trusted.
	local debs deb
	debs=$(toa_fetch_debs "$TOA_CACHE_DIR/debs/$_K_SUITE" "$_K_APT_GET" "$img_pkg" "$hdr_pkg" "$common_pkg" "$kbuild_pkg") ||
		toa_die "cannot fetch the packages of kernel $KVER"
	if [ -e "$kbase" ]; then
		_kernel_tree_ok "$kbase" && return 0
		toa_cache_rebuild "kernel tree $kbase" "is incomplete or damaged"
	fi
	toa_log "preparing kernel $KVER ($_K_SUITE): $img_pkg $hdr_pkg $common_pkg $kbuild_pkg"
	# Unpacked under a temporary name; the Makefile already names the final path.
	local tmp=$kbase.tmp.$$
	rm -rf "$tmp"
	mkdir -p "$tmp/img" "$tmp/hdr"
	dpkg -x "$(sed -n 1p <<<"$debs")" "$tmp/img" || toa_die "cannot unpack $img_pkg"
	for deb in $(sed -n '2,$p' <<<"$debs"); do dpkg -x "$deb" "$tmp/hdr" || toa_die "cannot unpack $deb"; done
	# The arch headers include the -common ones by absolute path (/usr/src/...): point that
	# include at the unpacked copy (suite builds bind-mount it at the same path in the root).
	local tkdir=$tmp/hdr/usr/src/linux-headers-$KVER
	sed -i -E "s#^include /usr/src/#include $hdr_root/usr/src/#" "$tkdir/Makefile" ||
		toa_die "cannot rewrite $tkdir/Makefile"
	grep -q "^include $hdr_root/usr/src/linux-headers-" "$tkdir/Makefile" ||
		toa_die "could not rewrite the include line of $tkdir/Makefile: $(cat "$tkdir/Makefile")"
	[ -d "$tmp/img/lib/modules/$KVER/kernel" ] || toa_die "$img_pkg has no lib/modules/$KVER/kernel"
	_kernel_extract_vmlinux "$tmp/img/boot/vmlinuz-$KVER" "$tmp/vmlinux"
	touch "$tmp/.complete"
	rm -rf "$kbase"
	mv -T "$tmp" "$kbase" || toa_die "cannot rename $tmp to $kbase"
	_kernel_tree_ok "$kbase" || toa_die "the new kernel tree $kbase fails its own check"
}

# _kernel_tree_ok KBASE: marker, a whole ELF vmlinux, the modules, headers whose Makefile
# includes the -common headers inside KBASE.
_kernel_tree_ok() {
	local kbase=$1 kdir=$1/hdr/usr/src/linux-headers-$KVER
	[ -f "$kbase/.complete" ] && toa_elf_file "$kbase/vmlinux" &&
		[ -d "$kbase/img/lib/modules/$KVER/kernel" ] && [ -s "$kdir/.config" ] &&
		grep -q "^include $kbase/hdr/usr/src/linux-headers-" "$kdir/Makefile" 2>/dev/null
}

kernel_kmod_renamed() {
	local src=$1 name=$2 dest=$3
	rm -rf "$dest" && mkdir -p "$dest" || return 1
	(cd "$src" && tar --exclude='*.o' --exclude='*.ko' --exclude='.*.cmd' --exclude='*.mod' \
		--exclude='*.mod.c' --exclude=Module.symvers --exclude=modules.order --exclude=fuzz -cf - .) |
		(cd "$dest" && tar -xf -) || return 1
	sed -i -E "s/^obj-m[[:space:]]*[:+]?=[[:space:]]*toa\.o/obj-m := $name.o/; s/^toa-y([[:space:]]*[:+]?=)/$name-y\1/" "$dest/Kbuild" ||
		return 1
	grep -q "^obj-m := $name.o" "$dest/Kbuild" && grep -q "^$name-y" "$dest/Kbuild" || {
		echo "kernel_kmod_renamed: $src/Kbuild has no 'obj-m := toa.o' / 'toa-y' lines to rename" >&2
		return 1
	}
}

# kernel_build_kmod SRC_DIR OUT_DIR: build toa.ko for the prepared kernel with its own
# compiler; OUT_DIR gets toa.ko and build.log.
kernel_build_kmod() {
	local src out=$2 work rc=0 cc_text cc_word cc_have root
	src=$(cd "$1" && pwd)
	[ -n "${KDIR:-}" ] || toa_die "kernel_build_kmod: run kernel_prepare first"
	mkdir -p "$out"
	out=$(cd "$out" && pwd)
	rm -f "$out"/*.ko "$out/build.log"

	if [ "$KERNEL_WHERE" = suite ]; then
		root=$(suite_kernel_root "$KERNEL_SUITE" "$KDIR") || return 1
		suite_build_module "$root" "$KDIR" "$src" "$out" || return 1
		compgen -G "$out/*.ko" >/dev/null || toa_die "suite_build_module succeeded but left no .ko in $out"
		return 0
	fi

	# Debian builds each kernel with one compiler; the module must use exactly that one.
	cc_text=$(sed -n 's/^CONFIG_CC_VERSION_TEXT="\(.*\)"$/\1/p' "$KDIR/.config")
	cc_word=${cc_text%% *}
	cc_have=$("$cc_word" --version 2>/dev/null | head -n1) || true
	if [ "${cc_have#* }" != "${cc_text#* }" ]; then
		echo "compiler mismatch: $KVER was built with '$cc_text', $cc_word here says '${cc_have:-<not found>}'" | tee "$out/build.log" >&2
		return 1
	fi

	work="$TOA_CACHE_DIR/build/$KVER"
	rm -rf "$work" && mkdir -p "$work"
	# Build a copy: kmod/ stays free of build outputs and concurrent runs do not collide.
	(cd "$src" && tar --exclude='*.o' --exclude='*.ko' --exclude='.*.cmd' --exclude='*.mod' --exclude='*.mod.c' --exclude=Module.symvers --exclude=modules.order --exclude=fuzz -cf - .) | (cd "$work" && tar -xf -) ||
		toa_die "cannot copy $src to $work"
	make -C "$work" KDIR="$KDIR" W=1 >"$out/build.log" 2>&1 || rc=$?
	if [ "$rc" -ne 0 ]; then
		tail -n 30 "$out/build.log" >&2
		echo "build of kmod for $KVER failed (rc $rc), log: $out/build.log" >&2
		return 1
	fi
	# Warnings from our own sources (compiler and modpost) fail the build; the kernel's own
	# headers are not ours to fix.
	local warn
	warn=$(grep -E "^$work/[^ ]*:[0-9]+:([0-9]+:)? warning:|^[^/ ][^ ]*:[0-9]+:([0-9]+:)? warning:|WARNING: modpost" "$out/build.log" |
		grep -v '^\./\?include/\|^\./\?arch/' || true)
	if [ -n "$warn" ]; then
		printf '%s\n' "$warn" >&2
		echo "build of kmod for $KVER produced warnings (W=1), log: $out/build.log" >&2
		return 1
	fi
	compgen -G "$work/*.ko" >/dev/null || toa_die "make succeeded but left no .ko in $work"
	cp "$work"/*.ko "$out/"
}

# kernel_parse_args DEFAULTS ARGS...: the `--kernel SERIES` options every guest suite takes.
# Fills the caller's `kernels` array (DEFAULTS, a space-separated list, when none is given) and
# calls the caller's `usage` on anything else or on an unknown series.
kernel_parse_args() {
	local defaults=$1 k
	shift
	while [ $# -gt 0 ]; do
		case $1 in
		--kernel)
			[ $# -ge 2 ] || usage
			kernels+=("$2")
			shift 2
			;;
		--kernel=*)
			kernels+=("${1#--kernel=}")
			shift
			;;
		-h | --help) usage ;;
		*)
			echo "unknown argument '$1'" >&2
			usage
			;;
		esac
	done
	if [ ${#kernels[@]} -eq 0 ]; then
		read -r -a kernels <<<"$defaults"
	fi
	for k in "${kernels[@]}"; do
		kernel_series | grep -qx "$k" || {
			echo "unknown kernel series '$k'" >&2
			usage
		}
	done
}

# kernel_run_each FUNCTION: runs FUNCTION SERIES for each entry of the caller's `kernels` array
# (kernel_parse_args), which must leave its counts in K_PASS and K_FAIL; prints each kernel's
# "N passed, M failed", and with more than one kernel the wall time and the totals. Returns 1
# when any check failed, so a suite script ends with it.
kernel_run_each() {
	local fn=$1 k t0=$SECONDS pass=0 fail=0
	for k in "${kernels[@]}"; do
		"$fn" "$k"
		echo "$K_PASS passed, $K_FAIL failed"
		pass=$((pass + K_PASS))
		fail=$((fail + K_FAIL))
	done
	if [ ${#kernels[@]} -gt 1 ]; then
		echo "# all kernels (${kernels[*]}): $((SECONDS - t0))s"
		echo "$pass passed, $fail failed"
	fi
	[ "$fail" -eq 0 ]
}
